//! Probation and rollback that never brick the box and never loop (issue
//! 10), one whole-system test per hole, each with the real `banalytics-box`
//! run as a service manager runs it and the reference portal on loopback:
//!
//! - a first install that fails goes back to the empty set, and the box
//!   stays reachable;
//! - a component that keeps restarting under `immediate` gets a verdict
//!   within the probation limit;
//! - an automatic rollback quarantines the set it took off;
//! - a set staged while the active set is on probation waits for the
//!   commit, and the backup stays the last committed set; when that
//!   probation fails instead, the waiting set is applied right after the
//!   rollback;
//! - a set staged without `models-upgrade/` (as the Java box stages them)
//!   keeps the active models;
//! - a configuration refused only with the new set (a plugin kind the set
//!   removes) never ends in exit 2;
//! - a component that was failing before the upgrade does not block it.
//!
//! `BANALYTICS_BOX_BIN` runs them against another build of the box (an
//! older commit, to see them fail there), and `BANALYTICS_SAMPLE_PLUGIN`
//! names the sample plugin built with that box's SDK.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, log_events, BoxSettings, ManagedBox, ModuleSpec, PortalApi, StatusLine},
    fixtures::tree,
    poll_until,
    portal::{Portal, PortalConfig, PortalHandle, PublishRequest},
    DEADLINE,
};
use serde_json::{json, Value};

/// How long a synchronisation, restarts and a verdict may take on a loaded
/// two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(60);

pub(crate) const ALPHA: &str = "com.example:alpha:1.0";
pub(crate) const BETA: &str = "com.example:beta:1.0";
pub(crate) const GAMMA: &str = "com.example:gamma:1.0";
/// The module whose file makes the `drill` component fail at start.
pub(crate) const BROKEN: &str = "com.example:broken:1.0";

/// A `drill` probe under `policy` that fails as it starts while the
/// `broken` module is installed.
pub(crate) fn drill(policy: &str) -> String {
    format!(
        "[components.drill]\nkind = \"probe\"\nrestart_on_failure = \"{policy}\"\nfail_while_file = \"modules/{}\"\n",
        ModuleSpec::new(BROKEN, 0).file_name()
    )
}

pub(crate) struct World {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) portal: PortalHandle,
}

/// A portal with `alpha`, `beta` and `gamma` (with both packages) and
/// `broken` (without) published.
pub(crate) fn world() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    portal.publish_all(
        &dir.path().join("files"),
        &[
            ModuleSpec::new(ALPHA, 20_000).with_packages(),
            ModuleSpec::new(BETA, 15_000).with_packages(),
            ModuleSpec::new(GAMMA, 10_000).with_packages(),
            ModuleSpec::new(BROKEN, 5_000),
        ],
    )?;
    Ok(World { _dir: dir, portal })
}

impl World {
    /// Box settings for `env`: short grace, two starts per set.
    fn settings(&self, env: &str) -> BoxSettings {
        let mut s = BoxSettings::new(&self.portal, Some(env));
        s.max_boot_attempts = 2;
        s
    }

    fn assign(&self, env: &str, set: &[&str]) -> Result<()> {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        self.portal.assign_set(env, &set)
    }

    /// Assigns `set` and sends `EVT_SYNC_SOFT` to the connected box;
    /// returns how many statuses the portal had before.
    fn assign_and_sync(&self, env: &str, set: &[&str]) -> Result<usize> {
        self.assign(env, set)?;
        let seen = self.portal.statuses(env)?.len();
        self.portal.wait_connected(env, DEADLINE)?;
        ensure!(self.portal.sync_env(env)? == 1, "the box is not connected");
        Ok(seen)
    }
}

fn sorted(set: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn text(lines: &[StatusLine]) -> String {
    lines
        .iter()
        .map(StatusLine::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Supervises `b` until the portal has a verdict on a set from status
/// number `after` on: `installed` or `installation_cancelled`. Returns it
/// and every status since `after`.
fn outcome(
    portal: &dyn PortalApi,
    b: &mut ManagedBox,
    env: &str,
    after: usize,
) -> Result<(StatusLine, Vec<StatusLine>)> {
    b.run_until(CONVERGE, "installed or installation_cancelled", |_| {
        let lines = portal.statuses(env).ok()?;
        let lines = lines.get(after..)?.to_vec();
        lines
            .iter()
            .find(|l| l.status == "installed" || l.status == "installation_cancelled")
            .cloned()
            .map(|l| (l, lines.clone()))
    })
}

/// Supervises `b` until its host runs with no set on probation; returns
/// that `status`.
fn settled(b: &mut ManagedBox) -> Result<Value> {
    b.run_until(DEADLINE, "the host running with no set on probation", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true && s["upgrade"]["probation"].is_null()).then_some(s)
    })
}

/// Supervises `b` until `env` reported `installed` from status `after` on,
/// and the box committed.
fn converge(portal: &dyn PortalApi, b: &mut ManagedBox, env: &str, after: usize) -> Result<()> {
    let (verdict, lines) = outcome(portal, b, env, after)?;
    ensure!(
        verdict.status == "installed",
        "the set was not installed: {}",
        text(&lines)
    );
    settled(b)?;
    Ok(())
}

fn component(status: &Value, name: &str) -> Value {
    status["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn wait_for_state(b: &mut ManagedBox, name: &str, state: &str) -> Result<Value> {
    b.run_until(DEADLINE, &format!("{name} in {state}"), |b| {
        let c = component(&b.status().ok()?, name);
        (c["state"] == state).then_some(c)
    })
}

fn set_of(v: &Value) -> Vec<String> {
    let mut set: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    set.sort();
    set
}

/// Whether the properties file lists no module: only comments and blank
/// lines.
fn lists_no_module(properties: &str) -> bool {
    properties
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l.starts_with('!'))
}

#[test]
fn a_failed_first_install_rolls_back_to_the_empty_set_and_the_box_stays_reachable() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(101);
    w.assign(&env, &[ALPHA, BROKEN])?;
    let mut settings = w.settings(&env);
    settings.components = drill("stop");
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;

    let (verdict, lines) = outcome(&w.portal, &mut b, &env, 0)?;
    ensure!(
        verdict.status == "installation_cancelled"
            && verdict.module.is_empty()
            && verdict.message.contains("failure drill"),
        "the portal hears why the first set was cancelled: {}",
        text(&lines)
    );
    let status = settled(&mut b)?;
    ensure!(
        set_of(&status["upgrade"]["installed"]).is_empty(),
        "the empty set is active: {status}"
    );
    let info = b.path().join("modules/modules-info.properties");
    let info = std::fs::read_to_string(&info)
        .with_context(|| format!("{} marks the empty set", info.display()))?;
    ensure!(lists_no_module(&info), "no module listed: {info}");
    ensure!(b.module_files()?.is_empty(), "{:?}", b.module_files()?);
    ensure!(
        tree(&b.path().join("models")).is_empty(),
        "no model left: {:?}",
        tree(&b.path().join("models"))
    );
    // Staged, then two failed starts; the rollback start keeps running.
    ensure!(b.exits() == [75, 75, 75], "{:?}", b.exits());
    ensure!(b.is_running(), "the box runs on the empty set");
    w.portal.wait_connected(&env, DEADLINE)?;
    wait_for_state(&mut b, "drill", "RUN")?;
    ensure!(b.stop()?.success());
    Ok(())
}

/// The bound the test holds a flapping start to: its probation limit is
/// 11 s (3 × 1 s, at least 1 s + 10 s), plus slack for a loaded machine.
const FLAPPING_VERDICT: Duration = Duration::from_secs(20);

#[test]
fn a_component_that_keeps_restarting_fails_the_start_on_probation_in_bounded_time() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(102);
    w.assign(&env, &[ALPHA])?;
    let mut settings = w.settings(&env);
    settings.health_grace_s = 1.0;
    settings.components = drill("immediate");
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    let seen = w.assign_and_sync(&env, &[ALPHA, BROKEN])?;
    // The synchronisation stages the set and exits 75; the service manager
    // starts the set's first start on probation.
    let started = b.run_until(DEADLINE, "the first start on probation", |b| {
        (b.exits().len() == 2).then(Instant::now)
    })?;
    b.run_until(FLAPPING_VERDICT, "a verdict on the flapping start", |b| {
        (b.exits().len() == 3).then_some(())
    })?;
    let took = started.elapsed();
    ensure!(took < FLAPPING_VERDICT, "the verdict took {took:?}");
    let reason = log_events(&b.log())
        .into_iter()
        .filter(|e| e["message"] == "restarting")
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .find(|r| r.contains("start 1 of the new module set failed"))
        .with_context(|| format!("the failed start is logged: {}", b.log_tail(20)))?;
    ensure!(
        reason.contains("keeps restarting") || reason.contains("no verdict within"),
        "{reason}"
    );

    let (verdict, lines) = outcome(&w.portal, &mut b, &env, seen)?;
    ensure!(
        verdict.status == "installation_cancelled"
            && (verdict.message.contains("keeps restarting")
                || verdict.message.contains("no verdict within")),
        "{}",
        text(&lines)
    );
    let status = settled(&mut b)?;
    ensure!(
        set_of(&status["upgrade"]["installed"]) == sorted(&[ALPHA]),
        "{status}"
    );
    ensure!(b.exits() == [75, 75, 75, 75], "{:?}", b.exits());
    wait_for_state(&mut b, "drill", "RUN")?;
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn an_automatic_rollback_quarantines_the_set_it_took_off_and_status_says_why() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(103);
    w.assign(&env, &[ALPHA])?;
    let mut settings = w.settings(&env);
    settings.components = drill("stop");
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;
    let file = b.path().join("state/quarantined-set.json");
    ensure!(!file.exists(), "nothing quarantined yet");

    let seen = w.assign_and_sync(&env, &[ALPHA, BROKEN])?;
    let (verdict, lines) = outcome(&w.portal, &mut b, &env, seen)?;
    ensure!(
        verdict.status == "installation_cancelled",
        "{}",
        text(&lines)
    );
    let status = settled(&mut b)?;
    ensure!(
        set_of(&status["upgrade"]["installed"]) == sorted(&[ALPHA]),
        "{status}"
    );
    let q = &status["upgrade"]["quarantined"];
    ensure!(
        set_of(&q["modules"]) == sorted(&[ALPHA, BROKEN]),
        "status shows the set taken off: {status}"
    );
    let reason = q["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("failure drill") && reason.contains("broken"),
        "and why: {q}"
    );
    ensure!(q["rolled_back_ms"].as_u64().is_some_and(|t| t > 0), "{q}");
    let record: Value = serde_json::from_slice(
        &std::fs::read(&file).with_context(|| format!("{}", file.display()))?,
    )?;
    ensure!(
        set_of(&record["modules"]) == sorted(&[ALPHA, BROKEN]),
        "{record}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

/// Long enough that the set staged at the start of a probation is staged
/// well before the grace period ends.
const HOLDING_GRACE_S: f64 = 3.0;

#[test]
fn a_set_staged_during_probation_waits_for_the_commit_and_the_backup_stays_the_committed_set(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(104);
    w.assign(&env, &[ALPHA])?;
    let mut settings = w.settings(&env);
    settings.health_grace_s = HOLDING_GRACE_S;
    // Every start synchronises: the start that puts a set on probation
    // stages whatever the portal assigned meanwhile.
    settings.upgrade_extra = "software_update_type = \"on-boot\"".into();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    // B is staged; the box exits 75 to apply it.
    let seen = w.assign_and_sync(&env, &[ALPHA, BETA])?;
    poll_until(DEADLINE, "the box to exit to apply B", || {
        (!b.is_running()).then_some(())
    })?;
    // Before the service manager starts it again, the portal assigns C:
    // the start that puts B on probation stages C.
    w.assign(&env, &[ALPHA, GAMMA])?;
    let waiting = b.run_until(CONVERGE, "C staged while B is on probation", |b| {
        let s = b.status().ok()?;
        let u = &s["upgrade"];
        (!u["probation"].is_null()
            && set_of(&u["installed"]) == sorted(&[ALPHA, BETA])
            && set_of(&u["staged"]) == sorted(&[ALPHA, GAMMA]))
        .then(|| u.clone())
    })?;
    ensure!(
        set_of(&waiting["backup"]) == sorted(&[ALPHA]),
        "the backup is the last committed set: {waiting}"
    );

    // B commits (`installed`); the host restarts by itself, applies C and
    // commits it (`installed` again). Applied over B on probation instead,
    // C would have an uncommitted backup, and B no `installed`.
    let status = b.run_until(CONVERGE, "C committed", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true
            && s["upgrade"]["probation"].is_null()
            && set_of(&s["upgrade"]["installed"]) == sorted(&[ALPHA, GAMMA]))
        .then_some(s)
    })?;
    let lines = poll_until(
        DEADLINE,
        "`installed` for B (committed before C was applied) and for C",
        || {
            let lines = w.portal.statuses(&env).ok()?.get(seen..)?.to_vec();
            (lines.iter().filter(|l| l.status == "installed").count() >= 2).then_some(lines)
        },
    )?;
    ensure!(
        lines.iter().filter(|l| l.status == "installed").count() == 2
            && !lines.iter().any(|l| l.status == "installation_cancelled"),
        "{}",
        text(&lines)
    );
    ensure!(
        set_of(&status["upgrade"]["backup"]) == sorted(&[ALPHA, BETA]),
        "B, committed, is the backup of C: {status}"
    );
    // A staged; B staged; B committed, restart to apply C.
    ensure!(b.exits() == [75, 75, 75], "{:?}", b.exits());
    let why = waiting["staged_waits_for"].as_str().unwrap_or_default();
    ensure!(
        why.contains("on probation"),
        "status said why C waited: {waiting}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_set_staged_during_a_probation_that_fails_is_applied_right_after_the_rollback() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(109);
    w.assign(&env, &[ALPHA])?;
    let mut settings = w.settings(&env);
    settings.components = drill("stop");
    // Every start synchronises: the start that puts B on probation stages
    // what the portal assigned meanwhile.
    settings.upgrade_extra = "software_update_type = \"on-boot\"".into();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    // B (with the module that breaks the drill) is staged; the box exits 75.
    let seen = w.assign_and_sync(&env, &[ALPHA, BROKEN])?;
    poll_until(DEADLINE, "the box to exit to apply B", || {
        (!b.is_running()).then_some(())
    })?;
    // C is assigned before the start that puts B on probation: that start
    // stages C, and C waits for B's verdict.
    w.assign(&env, &[ALPHA, GAMMA])?;
    // B fails its two starts; the start that puts A back applies C at once,
    // over A, and C commits. Left staged instead, C would wait for a restart
    // that nothing asks for.
    let status = b.run_until(CONVERGE, "C committed", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true
            && s["upgrade"]["probation"].is_null()
            && set_of(&s["upgrade"]["installed"]) == sorted(&[ALPHA, GAMMA]))
        .then_some(s)
    })?;
    ensure!(
        set_of(&status["upgrade"]["backup"]) == sorted(&[ALPHA]),
        "A, the last committed set, is C's backup: {status}"
    );
    ensure!(
        status["upgrade"]["staged"].is_null(),
        "nothing left staged: {status}"
    );
    let lines = poll_until(DEADLINE, "B cancelled, then C installed", || {
        let lines = w.portal.statuses(&env).ok()?.get(seen..)?.to_vec();
        let cancelled = lines
            .iter()
            .position(|l| l.status == "installation_cancelled")?;
        let installed = lines.iter().rposition(|l| l.status == "installed")?;
        (cancelled < installed).then_some(lines)
    })?;
    ensure!(
        lines
            .iter()
            .filter(|l| l.status == "installation_cancelled")
            .count()
            == 1,
        "{}",
        text(&lines)
    );
    // A staged; B staged; B's two failed starts; C commits in the start
    // that rolled B back.
    ensure!(b.exits() == [75, 75, 75, 75], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}

/// Copies `from` into `to` (folders recursively), skipping the names in
/// `skip` at any depth.
fn copy_tree(from: &Path, to: &Path, skip: &[String]) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip.contains(&name) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(&name), skip)?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[test]
fn a_set_staged_without_models_keeps_the_active_models_through_apply_and_rollback() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(105);
    w.assign(&env, &[ALPHA, BETA])?;
    let mut b = ManagedBox::new(&w.settings(&env))?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;
    ensure!(b.stop()?.success());
    let models = b.path().join("models");
    let active_models = tree(&models);
    ensure!(
        active_models.contains_key("alpha/model.bin")
            && active_models.contains_key("beta/model.bin"),
        "{active_models:?}"
    );

    // Staged the way the Java box stages a set: the module folder with
    // its files and `modules-info.properties` (here: beta removed), no
    // hash record, no `models-upgrade/`.
    let home = b.path();
    let staged = home.join("modules-upgrade");
    let _ = std::fs::remove_dir_all(&staged);
    let beta = ModuleSpec::new(BETA, 0);
    copy_tree(
        &home.join("modules"),
        &staged,
        &[
            "modules-info.properties".into(),
            "modules-hashes.json".into(),
            beta.file_name(),
            "beta-dep.jar".into(),
        ],
    )?;
    let info = std::fs::read_to_string(home.join("modules/modules-info.properties"))?;
    let without_beta: String = info
        .lines()
        .filter(|l| !l.contains("beta"))
        .map(|l| format!("{l}\n"))
        .collect();
    ensure!(without_beta != info, "beta is listed: {info}");
    std::fs::write(staged.join("modules-info.properties"), without_beta)?;
    ensure!(
        !home.join("models-upgrade").exists(),
        "nothing stages models"
    );

    // `run` applies it and commits it.
    let seen = w.portal.statuses(&env)?.len();
    b.spawn()?;
    converge(&w.portal, &mut b, &env, seen)?;
    ensure!(b.installed()? == sorted(&[ALPHA]), "{:?}", b.installed()?);
    ensure!(
        tree(&models) == active_models,
        "the models stay after the apply: {:?}",
        tree(&models)
    );
    ensure!(b.stop()?.success());

    // `rollback` puts the set with beta back, and the models are still
    // there.
    let out = b.home().cli(&["rollback"])?;
    ensure!(
        out.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        b.installed()? == sorted(&[ALPHA, BETA]),
        "{:?}",
        b.installed()?
    );
    ensure!(
        tree(&models) == active_models,
        "the models stay after the rollback: {:?}",
        tree(&models)
    );
    let verify = b.home().cli(&["verify"])?;
    ensure!(
        verify.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    Ok(())
}

/// The sample plugin library: `$BANALYTICS_SAMPLE_PLUGIN` (one built with
/// the SDK of the box under test), else the one the plugin tests build.
fn sample_plugin() -> PathBuf {
    std::env::var_os("BANALYTICS_SAMPLE_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::plugins::sample_plugin().to_owned())
}

#[test]
fn a_set_without_a_configured_plugin_kind_never_ends_in_exit_2_and_the_plugin_set_stays(
) -> Result<()> {
    let _machine = crate::machine::shared();
    const SAMPLE: &str = "com.example:sample:1.0";
    let w = world()?;
    let env = env_uuid(106);
    w.portal
        .publish_module(&PublishRequest::plugin(SAMPLE, sample_plugin()))?;
    w.assign(&env, &[SAMPLE])?;
    let settings = w.settings(&env);
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    // The operator configures the plugin's kind now that it is installed.
    ensure!(b.stop()?.success());
    std::fs::write(
        b.path().join("config/box.toml"),
        format!(
            "{}\n[components.echo]\nkind = \"sample-echo\"\nrestart_on_failure = \"immediate\"\n",
            settings.box_toml()
        ),
    )?;
    b.spawn()?;
    wait_for_state(&mut b, "echo", "RUN")?;

    // A set without the plugin: refused, before or after the restart, and
    // never by exiting 2 (`supervise` fails on any exit but 75).
    let seen = w.assign_and_sync(&env, &[ALPHA])?;
    let (verdict, lines) = outcome(&w.portal, &mut b, &env, seen)?;
    ensure!(
        verdict.status == "installation_cancelled" && verdict.message.contains("sample-echo"),
        "the refusal names the kind: {}",
        text(&lines)
    );
    let status = settled(&mut b)?;
    ensure!(
        set_of(&status["upgrade"]["installed"]) == sorted(&[SAMPLE]),
        "the set with the plugin is active: {status}"
    );
    ensure!(b.exits().iter().all(|&c| c == 75), "{:?}", b.exits());
    let echo = wait_for_state(&mut b, "echo", "RUN")?;
    ensure!(echo["origin"] == "com.example-sample-1.0.so", "{echo}");
    w.portal.wait_connected(&env, DEADLINE)?;
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_component_failing_before_the_upgrade_is_excused_and_the_new_set_commits() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(108);
    w.assign(&env, &[ALPHA])?;
    let mut settings = w.settings(&env);
    // Long enough for `status` to be seen during the probation.
    settings.health_grace_s = 2.0;
    settings.components = "[components.cam]\nkind = \"probe\"\nrestart_on_failure = \"stop\"\nfail_while_file = \"cam-broken\"\n".into();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&w.portal, &mut b, &env, 0)?;

    // The camera breaks under the committed set.
    std::fs::write(b.path().join("cam-broken"), "")?;
    let answer = b.home().exchange(
        "probe.ping",
        json!({ "to": "cam", "seq": 1, "panic": true }),
        "probe.pong",
        Duration::from_millis(300),
    )?;
    ensure!(answer.is_err(), "a panicking probe answers nothing");
    wait_for_state(&mut b, "cam", "ERROR")?;

    let seen = w.assign_and_sync(&env, &[ALPHA, BETA])?;
    let mut excused = None;
    let (verdict, lines) = b.run_until(CONVERGE, "a verdict on the new set", |b| {
        if let Ok(s) = b.status() {
            let p = &s["upgrade"]["probation"];
            if !p.is_null() && excused.is_none() {
                excused = Some(p["excused"].clone());
            }
        }
        let lines = w.portal.statuses(&env).ok()?;
        let lines = lines.get(seen..)?.to_vec();
        lines
            .iter()
            .find(|l| l.status == "installed" || l.status == "installation_cancelled")
            .cloned()
            .map(|l| (l, lines.clone()))
    })?;
    ensure!(
        verdict.status == "installed",
        "the broken camera does not block the upgrade: {}",
        text(&lines)
    );
    ensure!(
        excused.as_ref().is_some_and(|e| set_of(e) == ["cam"]),
        "status shows cam excused while on probation: {excused:?}"
    );
    let status = settled(&mut b)?;
    ensure!(
        set_of(&status["upgrade"]["installed"]) == sorted(&[ALPHA, BETA]),
        "{status}"
    );
    ensure!(component(&status, "cam")["state"] == "ERROR", "{status}");
    ensure!(b.exits() == [75, 75], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}
