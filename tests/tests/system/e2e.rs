//! The whole upgrade path with real `banalytics-box` processes and the
//! reference portal: a first run installs the assigned set, an upgrade adds,
//! changes and removes modules, the portal rolls it back, an unregistered box
//! refuses, and bad frames leave the link up.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, log_events, BoxSettings, ManagedBox, ModuleSpec, PortalApi, StatusLine},
    poll_until,
    portal::{Portal, PortalConfig, PortalHandle},
    DEADLINE,
};

/// How long a whole synchronisation, restart and commit may take on a
/// loaded two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(60);

fn v1() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.cam:alpha:1.0", 40_000).with_packages(),
        ModuleSpec::new("com.example.cam:beta:1.0", 30_000).with_packages(),
        ModuleSpec::new("com.example.cam:gamma:1.0", 20_000),
    ]
}

/// `alpha` unchanged, `beta` changed, `gamma` removed, `delta` added.
fn v2() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.cam:alpha:1.0", 40_000).with_packages(),
        ModuleSpec::new("com.example.cam:beta:2.0", 35_000).with_packages(),
        ModuleSpec::new("com.example.cam:delta:1.0", 25_000).with_packages(),
    ]
}

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

fn sorted(specs: &[ModuleSpec]) -> Vec<String> {
    let mut c = coords(specs);
    c.sort();
    c
}

fn file_names(specs: &[ModuleSpec]) -> Vec<String> {
    let mut names: Vec<String> = specs.iter().map(ModuleSpec::file_name).collect();
    names.sort();
    names
}

struct World {
    dir: tempfile::TempDir,
    portal: PortalHandle,
}

fn world() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    Ok(World { dir, portal })
}

impl World {
    fn files(&self) -> std::path::PathBuf {
        self.dir.path().join("files")
    }
}

/// Asserts the statuses of one synchronisation of `set`: per module
/// `downloading` before `downloaded`, every `downloaded` before the one
/// `installed` (module null), which comes last, and nothing else.
fn assert_statuses_of_an_install(lines: &[StatusLine], set: &[ModuleSpec]) -> Result<()> {
    let text = lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let last = lines.last().context("no status")?;
    ensure!(
        last.status == "installed" && last.module.is_empty(),
        "the last status is not installed: {text}"
    );
    ensure!(
        lines.iter().filter(|l| l.status == "installed").count() == 1,
        "one installed: {text}"
    );
    for l in lines {
        ensure!(
            ["downloading", "downloaded", "installed"].contains(&l.status.as_str()),
            "unexpected status {l}: {text}"
        );
    }
    for s in set {
        let module = format!("{}:{}", s.artifact(), s.version());
        let pos = |status: &str| {
            lines
                .iter()
                .position(|l| l.module == module && l.status == status)
        };
        let downloaded = pos("downloaded").with_context(|| format!("{module}: {text}"))?;
        if let Some(downloading) = pos("downloading") {
            ensure!(downloading < downloaded, "{module} out of order: {text}");
        }
    }
    Ok(())
}

/// Supervises `b` until `env` has reported `installed` as status `after` or
/// later, and until the box has committed (no probation, staged nothing).
fn converge(portal: &dyn PortalApi, b: &mut ManagedBox, env: &str, after: usize) -> Result<()> {
    b.run_until(CONVERGE, "installed", |_| {
        portal
            .statuses(env)
            .ok()
            .filter(|l| l.iter().skip(after).any(|l| l.status == "installed"))
    })?;
    b.run_until(DEADLINE, "the committed set in status", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true && s["upgrade"]["probation"].is_null()).then_some(())
    })
}

#[test]
fn first_run_installs_the_assigned_set_and_the_portal_sees_statuses_in_order_ending_with_installed(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(1);
    w.portal.publish_all(&w.files(), &v1())?;
    w.portal.assign_set(&env, &coords(&v1()))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&w.portal, Some(&env)))?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    ensure!(
        b.exits() == [75],
        "one restart to apply the staged set: {:?}",
        b.exits()
    );
    let lines = w.portal.statuses(&env)?;
    assert_statuses_of_an_install(&lines, &v1())?;
    ensure!(b.installed()? == sorted(&v1()), "{:?}", b.installed()?);
    let files = b.module_files()?;
    for name in file_names(&v1()) {
        ensure!(files.contains(&name), "{name} not in modules/: {files:?}");
    }
    ensure!(b.path().join("modules/lib/alpha-dep.jar").is_file());
    ensure!(b.path().join("models/beta/model.bin").is_file());
    ensure!(
        !b.path().join("models/gamma").exists(),
        "gamma has no model"
    );
    let verify = b.home().cli(&["verify"])?;
    ensure!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Each artifact was served once.
    let stats = w.portal.stats_report()?;
    for s in v1() {
        ensure!(
            stats.bytes(&s.repo_path()) == s.size,
            "{}: {} bytes served for {}",
            s.repo_path(),
            stats.bytes(&s.repo_path()),
            s.size
        );
    }
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn upgrade_adds_changes_and_removes_modules_and_the_portal_rolls_it_back() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(2);
    w.portal.publish_all(&w.files(), &v1())?;
    w.portal.publish_all(&w.files(), &v2()[1..])?;
    w.portal.assign_set(&env, &coords(&v1()))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&w.portal, Some(&env)))?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;
    ensure!(b.installed()? == sorted(&v1()));

    // Upgrade: alpha unchanged, beta 1.0 -> 2.0, gamma removed, delta added.
    w.portal.reset_counters()?;
    let seen = w.portal.statuses(&env)?.len();
    w.portal.assign_set(&env, &coords(&v2()))?;
    w.portal.wait_connected(&env, DEADLINE)?;
    ensure!(w.portal.sync_env(&env)? == 1, "the box is not connected");
    converge(&w.portal, &mut b, &env, seen)?;
    let lines = w.portal.statuses(&env)?;
    assert_statuses_of_an_install(&lines[seen..], &v2()[1..])?;
    ensure!(
        !lines[seen..]
            .iter()
            .any(|l| l.module == "alpha:1.0" && l.status == "downloading"),
        "the unchanged module is not downloaded again: {lines:?}"
    );
    ensure!(b.installed()? == sorted(&v2()), "{:?}", b.installed()?);
    ensure!(
        b.module_files()? == file_names(&v2()),
        "{:?}",
        b.module_files()?
    );
    ensure!(b.path().join("models/delta/model.bin").is_file());
    let model = std::fs::read_to_string(b.path().join("models/beta/model.bin"))?;
    ensure!(
        model.starts_with("beta 2.0"),
        "beta's model is 2.0: {model}"
    );
    let stats = w.portal.stats_report()?;
    ensure!(
        stats.bytes(&v2()[0].repo_path()) == 0,
        "alpha was fetched again: {stats:?}"
    );
    for s in &v2()[1..] {
        ensure!(stats.bytes(&s.repo_path()) == s.size, "{}", s.repo_path());
    }
    let status = b.status()?;
    let backup: BTreeSet<String> = status["upgrade"]["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    ensure!(
        backup == sorted(&v1()).into_iter().collect(),
        "the previous set is the backup: {status}"
    );

    // Rollback through the portal: the old set assigned again.
    let seen = w.portal.statuses(&env)?.len();
    w.portal.assign_set(&env, &coords(&v1()))?;
    w.portal.wait_connected(&env, DEADLINE)?;
    ensure!(w.portal.sync_env(&env)? == 1, "the box is not connected");
    converge(&w.portal, &mut b, &env, seen)?;
    let lines = w.portal.statuses(&env)?;
    ensure!(
        lines.last().is_some_and(|l| l.status == "installed"),
        "{lines:?}"
    );
    ensure!(b.installed()? == sorted(&v1()), "{:?}", b.installed()?);
    ensure!(
        b.module_files()? == file_names(&v1()),
        "{:?}",
        b.module_files()?
    );
    let model = std::fs::read_to_string(b.path().join("models/beta/model.bin"))?;
    ensure!(
        model.starts_with("beta 1.0"),
        "beta's model is 1.0: {model}"
    );
    ensure!(!b.path().join("models/delta").exists());
    ensure!(b.home().cli(&["verify"])?.status.success());
    ensure!(b.exits() == [75, 75, 75], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_box_without_an_environment_uuid_refuses_to_synchronise_and_downloads_nothing() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    w.portal.publish_all(&w.files(), &v1())?;
    w.portal.assign_set(&env_uuid(3), &coords(&v1()))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&w.portal, None))?;
    b.spawn()?;
    let sync = b.run_until(DEADLINE, "the first-run synchronisation to end", |b| {
        b.sync_report().filter(|s| s["state"] == "cancelled")
    })?;
    let result = sync["result"].as_str().unwrap_or_default();
    ensure!(result.contains("not registered"), "{sync}");
    ensure!(sync["trigger"] == "first-run", "{sync}");
    let refusal = log_events(&b.log()).into_iter().find(|e| {
        e["message"] == "synchronisation failed"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("not registered"))
    });
    ensure!(
        refusal.is_some_and(|e| e["level"] == "WARN"),
        "the refusal is logged as a warning naming the reason: {}",
        b.log_tail(20)
    );
    let status = b.status()?;
    let center = status["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["kind"] == "software-upgrade-center"))
        .context("the upgrade center in status")?;
    ensure!(center["details"]["registered"] == false, "{center}");
    ensure!(b.is_running(), "an unregistered box keeps running");
    ensure!(b.exits().is_empty());
    let stats = w.portal.stats_report()?;
    let repo_bytes: u64 = stats
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/repo/"))
        .map(|(_, p)| p.bytes)
        .sum();
    ensure!(repo_bytes == 0, "downloaded {repo_bytes} bytes: {stats:?}");
    let mut staged = std::fs::read_dir(b.path().join("modules-upgrade"))
        .map(|d| d.count())
        .unwrap_or(0);
    staged += std::fs::read_dir(b.path().join("modules-download"))
        .map(|d| d.count())
        .unwrap_or(0);
    ensure!(staged == 0, "nothing staged or cached");
    ensure!(!b.path().join("modules/modules-info.properties").exists());
    let registered = w.portal.environment_report(&env_uuid(3))?;
    ensure!(
        registered.is_none_or(|e| e.module_requests == 0 && e.statuses.is_empty()),
        "the assigned environment heard nothing"
    );
    // A local `upgrade` is refused the same way, and says so.
    let out = b.home().cli(&["upgrade"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("not registered"),
        "upgrade says the synchronisation stopped and why: {err}"
    );
    poll_until(DEADLINE, "the second refusal", || {
        b.sync_report()
            .filter(|s| s["state"] == "cancelled" && s["trigger"] == "local")
    })?;
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn unknown_malformed_and_oversized_frames_keep_the_link_up_and_the_next_sync_works() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(4);
    let small = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 10_000)];
    w.portal.publish_all(&w.files(), &small)?;
    w.portal.assign_set(&env, &coords(&small))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&w.portal, Some(&env)))?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;
    // The commit asks for the set once more (the core may have changed),
    // and that request may reach the portal after `installed`: the count
    // starts once it has, the first run's and the commit's.
    poll_until(DEADLINE, "the commit's GET_ENV_MOD_REQ", || {
        w.portal
            .environment(&env)
            .filter(|e| e.module_requests >= 2)
    })?;
    let before = w.portal.wait_connected(&env, DEADLINE)?;

    let oversized = format!(
        r#"{{"type":"EVT_SYNC_SOFT","pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    for frame in [
        r#"{"type":"EVT_FROM_THE_FUTURE","x":1}"#,
        r#"{"type":"EVT_SYNC_SOFT""#,
        oversized.as_str(),
    ] {
        ensure!(
            w.portal.send_raw_text(&env, frame)? == 1,
            "not delivered: {}",
            &frame[..frame.len().min(40)]
        );
    }
    // Then a real one: answered on the same connection.
    ensure!(w.portal.sync_env(&env)? == 1);
    let sync = b.run_until(DEADLINE, "the synchronisation after the bad frames", |b| {
        b.sync_report()
            .filter(|s| s["trigger"] == "portal" && s["state"] == "up-to-date")
    })?;
    let after = w.portal.wait_connected(&env, DEADLINE)?;
    ensure!(
        after.connections == before.connections,
        "the link was dropped: {} connections before, {} after",
        before.connections,
        after.connections
    );
    ensure!(
        after.module_requests == before.module_requests + 1,
        "one GET_ENV_MOD_REQ for the one good EVT_SYNC_SOFT: {} then {}; {sync}",
        before.module_requests,
        after.module_requests
    );
    ensure!(b.is_running() && b.exits() == [75]);
    ensure!(b.stop()?.success());
    Ok(())
}
