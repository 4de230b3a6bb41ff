//! Durable reports (contracts section 3: a status reported before a
//! restart or a kill reaches the portal once, in order, after the link is
//! up again), with real processes: `installed` reported while the portal
//! is down survives a SIGKILL of the box; a box killed after the portal
//! confirmed a status but before it forgot it sends it again, and the
//! portal records it once; a kill on either side of a commit or a rollback
//! neither loses its verdict (`installed`, `installation_cancelled`) nor
//! sends one for a verdict that never happened; and the reference portal's
//! side of "once".

use std::{os::unix::process::ExitStatusExt, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess, EXIT_RESTART},
    portal::{Portal, PortalConfig},
    DEADLINE,
};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// How long a synchronisation, a restart and a commit may take on a loaded
/// two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(60);

/// The failpoint between the portal's confirmation of a batch of durable
/// statuses and their removal from the box's disk.
const CONFIRMED: &str = "portal-outbox.confirmed";

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

/// The entries of the box's portal outbox (`state/portal-outbox/`), in
/// `seq` order, read as the files they are.
fn outbox(home: &Path) -> Vec<(u64, Value)> {
    let dir = home.join("state/portal-outbox");
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(u64, Value)> = read
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let seq = name.strip_suffix(".json")?.parse().ok()?;
            let bytes = std::fs::read(e.path()).ok()?;
            Some((seq, serde_json::from_slice(&bytes).ok()?))
        })
        .collect();
    entries.sort_by_key(|(seq, _)| *seq);
    entries
}

#[test]
fn installed_reported_while_the_portal_is_down_reaches_it_once_after_a_sigkill_and_a_restart(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    let mut portal = PortalProcess::start(&data, None, &[])?;
    let env = env_uuid(30);
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 20_000)];
    portal.publish_all(&dir.path().join("files"), &set)?;
    portal.assign_set(&env, &coords(&set))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;

    // The first run stages the set while the portal is up, then stops to
    // apply it.
    b.spawn()?;
    let first = b.wait_exit(CONVERGE)?;
    ensure!(
        first.code() == Some(EXIT_RESTART),
        "the first run stops to apply the set: {first:?}; {}",
        b.log_tail(20)
    );
    let earlier = portal.statuses(&env)?;
    ensure!(!earlier.is_empty(), "the download statuses arrived");

    // The portal goes down; the box applies the set and commits it, so
    // `installed` has nowhere to go but the disk.
    let addr = portal.addr();
    portal.kill()?;
    b.spawn()?;
    let waiting = b.run_until(CONVERGE, "installed in the box's outbox", |b| {
        let entries = outbox(&b.path());
        entries
            .iter()
            .any(|(_, e)| e["status"] == "installed")
            .then_some(entries)
    })?;
    ensure!(
        waiting.len() == 1,
        "only installed waits (the earlier statuses were confirmed before the restart): {waiting:?}"
    );
    let (seq, entry) = &waiting[0];
    ensure!(
        entry["environmentUuid"] == env.as_str() && entry["module"].is_null(),
        "{entry}"
    );

    // SIGKILL: nothing in memory survives.
    b.kill()?;
    ensure!(outbox(&b.path()) == waiting, "the status is still on disk");

    // The portal comes up with its status history, then the box:
    // `installed` arrives, once.
    let portal = PortalProcess::start(&data, Some(addr), &[])?;
    ensure!(portal.addr() == addr, "the same port");
    b.spawn()?;
    portal.wait_for_status(&env, "installed", 0, CONVERGE)?;
    b.run_until(DEADLINE, "the box's outbox to empty", |b| {
        outbox(&b.path()).is_empty().then_some(())
    })?;
    let report = portal
        .environment_report(&env)?
        .context("the environment in the portal")?;
    let statuses: Vec<(Value, Option<u64>)> = report
        .statuses
        .iter()
        .map(|s| (s.status.clone(), s.seq))
        .collect();
    let kept: Vec<Value> = earlier.iter().map(|s| json!(s.status)).collect();
    ensure!(
        statuses.len() == kept.len() + 1
            && statuses[..kept.len()].iter().map(|s| &s.0).eq(kept.iter())
            && statuses[kept.len()] == (json!("installed"), Some(*seq)),
        "the first portal's statuses kept, then installed once, under its number: {statuses:?}"
    );
    ensure!(report.statuses[kept.len()].module.is_null());
    ensure!(report.duplicate_statuses == 0, "nothing was sent twice");
    ensure!(portal.stats_report()?.duplicate_statuses == 0);
    ensure!(b.is_running() && b.exits() == [EXIT_RESTART]);
    ensure!(b.stop()?.success());
    Ok(())
}

/// The statuses `env`'s portal has, as (status, message, seq).
fn heard(portal: &dyn PortalApi, env: &str) -> Result<Vec<(String, String, Option<u64>)>> {
    let report = portal.environment_report(env)?.context("the environment")?;
    Ok(report
        .statuses
        .iter()
        .map(|s| {
            (
                s.status.as_str().unwrap_or_default().to_owned(),
                s.status_message.as_str().unwrap_or_default().to_owned(),
                s.seq,
            )
        })
        .collect())
}

/// Every status arrived once, numbered 1, 2, 3... with no gap: none was
/// lost and none numbered for a verdict that never happened.
fn numbered_without_gaps(heard: &[(String, String, Option<u64>)]) -> Result<()> {
    let seqs: Vec<Option<u64>> = heard.iter().map(|h| h.2).collect();
    let want: Vec<Option<u64>> = (1..=heard.len() as u64).map(Some).collect();
    ensure!(seqs == want, "statuses numbered 1..n once each: {heard:?}");
    Ok(())
}

#[test]
fn a_kill_on_either_side_of_the_commit_reports_installed_once() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 20_000)];
    portal.publish_all(&dir.path().join("files"), &set)?;
    // After the commit (the pending verdict is released at the next start;
    // before it was held, `installed` was lost there), and before it (the
    // pending verdict is dropped: the next start is on probation again and
    // commits).
    for (n, point) in ["commit.probation-removed", "verdict.held"]
        .into_iter()
        .enumerate()
    {
        let env = env_uuid(35 + n);
        portal.assign_set(&env, &coords(&set))?;
        let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
        b.spawn()?;
        let first = b.wait_exit(CONVERGE)?;
        ensure!(first.code() == Some(EXIT_RESTART), "{first:?}");
        b.spawn_with_env(&[("BANALYTICS_FAILPOINT", point)])?;
        let killed = b.wait_exit(CONVERGE)?;
        ensure!(
            killed.signal() == Some(libc::SIGKILL),
            "{point}: {killed:?}; {}",
            b.log_tail(20)
        );
        ensure!(
            b.path().join("state/portal-outbox/verdict.held").is_file(),
            "{point}: the verdict is held across the commit"
        );
        b.spawn()?;
        portal.wait_for_status(&env, "installed", 0, CONVERGE)?;
        b.run_until(DEADLINE, "the box's outbox to empty", |b| {
            outbox(&b.path()).is_empty().then_some(())
        })?;
        let heard = heard(&portal, &env)?;
        let installed = heard.iter().filter(|h| h.0 == "installed").count();
        ensure!(installed == 1, "{point}: installed once: {heard:?}");
        numbered_without_gaps(&heard).context(point)?;
        ensure!(
            !b.path().join("state/portal-outbox/verdict.held").exists(),
            "{point}: settled"
        );
        ensure!(b.stop()?.success());
    }
    Ok(())
}

#[test]
fn a_kill_right_after_a_rollback_still_reports_its_reason_once() -> Result<()> {
    let _machine = crate::machine::shared();
    use crate::probation::{drill, world, ALPHA, BROKEN};
    let w = world()?;
    let env = env_uuid(37);
    w.portal
        .assign_set(&env, &[ALPHA.to_owned(), BROKEN.to_owned()])?;
    let mut settings = BoxSettings::new(&w.portal, Some(&env));
    settings.max_boot_attempts = 1;
    settings.components = drill("stop");
    let mut b = ManagedBox::new(&settings)?;
    // Staged; then the one start the set gets fails.
    for what in [
        "the first run stages the set",
        "the start on probation fails",
    ] {
        b.spawn()?;
        let exit = b.wait_exit(CONVERGE)?;
        ensure!(exit.code() == Some(EXIT_RESTART), "{what}: {exit:?}");
    }
    // The start that rolls back is killed as the rollback ends, before the
    // report is released.
    b.spawn_with_env(&[("BANALYTICS_FAILPOINT", "rollback.6.probation-cleared")])?;
    let killed = b.wait_exit(CONVERGE)?;
    ensure!(
        killed.signal() == Some(libc::SIGKILL),
        "{killed:?}; {}",
        b.log_tail(20)
    );
    b.spawn()?;
    // Its own report, not the refusal of the quarantined set that a later
    // synchronisation would send ("this target set was rolled back at").
    const REASON: &str = "the new module set did not stay in RUN";
    b.run_until(CONVERGE, "the rollback's reason", |_| {
        let heard = heard(&w.portal, &env).ok()?;
        heard
            .iter()
            .any(|h| h.0 == "installation_cancelled" && h.1.starts_with(REASON))
            .then_some(())
    })?;
    b.run_until(DEADLINE, "the box's outbox to empty", |b| {
        outbox(&b.path()).is_empty().then_some(())
    })?;
    let heard = heard(&w.portal, &env)?;
    let reports: Vec<_> = heard.iter().filter(|h| h.1.starts_with(REASON)).collect();
    ensure!(
        reports.len() == 1 && reports[0].1.contains("failure drill"),
        "the rollback reported once, with its reason: {heard:?}"
    );
    numbered_without_gaps(&heard)?;
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_home_provisioned_again_for_the_same_environment_is_heard_and_not_dropped_as_a_duplicate(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 20_000)];
    portal.publish_all(&dir.path().join("files"), &set)?;
    let env = env_uuid(38);
    portal.assign_set(&env, &coords(&set))?;
    // The same environment twice, each time in a new home: the second
    // outbox numbers its statuses from 1 again.
    let mut seqs = Vec::new();
    for home in ["first", "provisioned again"] {
        let before = portal.statuses(&env)?.len();
        let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
        b.spawn()?;
        b.run_until(CONVERGE, "installed", |_| {
            let lines = portal.statuses(&env).ok()?;
            lines
                .get(before..)?
                .iter()
                .any(|l| l.status == "installed")
                .then_some(())
        })
        .context(home)?;
        ensure!(b.stop()?.success());
        seqs.push(heard(&portal, &env)?[before..].to_vec());
    }
    ensure!(
        seqs[0].iter().map(|h| h.2).eq(seqs[1].iter().map(|h| h.2)),
        "both homes numbered the same statuses alike: {seqs:?}"
    );
    let report = portal.environment_report(&env)?.context("env")?;
    ensure!(report.duplicate_statuses == 0, "{report:?}");
    Ok(())
}

#[test]
fn a_box_killed_after_the_portal_confirmed_a_status_but_before_it_removed_it_sends_it_again_and_the_portal_records_it_once(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let env = env_uuid(31);
    let set = vec![
        ModuleSpec::new("com.example.cam:alpha:1.0", 20_000),
        ModuleSpec::new("com.example.cam:beta:1.0", 10_000),
    ];
    portal.publish_all(&dir.path().join("files"), &set)?;
    portal.assign_set(&env, &coords(&set))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;

    // Killed at the first batch the portal confirmed: the portal has it,
    // the box's disk still has it.
    b.spawn_with_env(&[("BANALYTICS_FAILPOINT", CONFIRMED)])?;
    let killed = b.wait_exit(CONVERGE)?;
    ensure!(
        killed.signal() == Some(libc::SIGKILL),
        "killed at {CONFIRMED}: {killed:?}; {}",
        b.log_tail(20)
    );
    ensure!(b.log().contains(&format!("failpoint {CONFIRMED} reached")));
    let confirmed: Vec<u64> = portal
        .environment_report(&env)?
        .context("the environment in the portal")?
        .statuses
        .iter()
        .map(|s| s.seq.context("a durable status carries its seq"))
        .collect::<Result<_>>()?;
    let on_disk: Vec<u64> = outbox(&b.path()).iter().map(|(seq, _)| *seq).collect();
    eprintln!("killed after the portal confirmed {confirmed:?}; on disk: {on_disk:?}");
    ensure!(
        !confirmed.is_empty() && confirmed.iter().all(|s| on_disk.contains(s)),
        "the confirmed statuses {confirmed:?} are still on disk: {on_disk:?}"
    );

    // Started again without the failpoint: it sends them again first, the
    // portal drops them, and the synchronisation goes on to `installed`.
    b.spawn()?;
    b.run_until(CONVERGE, "installed", |_| {
        portal
            .statuses(&env)
            .ok()
            .filter(|l| l.iter().any(|l| l.status == "installed"))
    })?;
    b.run_until(DEADLINE, "the box's outbox to empty", |b| {
        outbox(&b.path()).is_empty().then_some(())
    })?;
    let report = portal
        .environment_report(&env)?
        .context("the environment in the portal")?;
    ensure!(
        report.duplicate_statuses == confirmed.len() as u64,
        "one duplicate dropped per status sent again: {} for {confirmed:?}",
        report.duplicate_statuses
    );
    ensure!(portal.stats_report()?.duplicate_statuses == confirmed.len() as u64);
    let seqs: Vec<u64> = report.statuses.iter().filter_map(|s| s.seq).collect();
    ensure!(
        seqs.len() == report.statuses.len(),
        "every status is durable: {:?}",
        report.statuses
    );
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each status recorded once, in order: {seqs:?}"
    );
    ensure!(seqs.starts_with(&confirmed), "{seqs:?}");
    let last = report.statuses.last().context("statuses")?;
    ensure!(last.status == "installed", "{:?}", report.statuses);
    ensure!(b.exits() == [-1, EXIT_RESTART], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_portal_records_a_durable_status_once_per_environment_and_seq() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let mut config = PortalConfig::new(data.path());
    // Bare protocol clients without secrets: a lab.
    config.open_registration = true;
    let portal = Portal::start(config).await.unwrap();
    let status = |env: &str, status: &str, seq: Option<u64>| {
        let mut v = json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": env,
                           "module": null, "status": status, "statusMessage": null});
        if let Some(seq) = seq {
            v["seq"] = json!(seq);
        }
        Message::Text(v.to_string().into())
    };
    let (mut a, _) = tokio_tungstenite::connect_async(portal.ws_url("env-a", "h"))
        .await
        .unwrap();
    let (mut other, _) = tokio_tungstenite::connect_async(portal.ws_url("env-b", "h"))
        .await
        .unwrap();
    for m in [
        status("env-a", "downloading", Some(1)),
        status("env-a", "downloaded", Some(2)),
        status("env-a", "downloading", Some(1)), // sent again
        status("env-a", "installation_cancelled", None),
        status("env-a", "installation_cancelled", None), // no seq: as it comes
        status("env-a", "downloaded", Some(2)),          // sent again
        status("env-a", "installed", Some(3)),
    ] {
        a.send(m).await.unwrap();
    }
    // Another environment's numbers are its own.
    other
        .send(status("env-b", "installed", Some(1)))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let seen = |env: &str| {
        portal
            .environment(env)
            .map_or(0, |e| e.statuses.len() as u64 + e.duplicate_statuses)
    };
    while seen("env-a") < 7 || seen("env-b") < 1 {
        assert!(std::time::Instant::now() < deadline, "frames not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = portal.environment("env-a").unwrap();
    let got: Vec<(&str, Option<u64>)> = report
        .statuses
        .iter()
        .map(|s| (s.status.as_str().unwrap(), s.seq))
        .collect();
    assert_eq!(
        got,
        [
            ("downloading", Some(1)),
            ("downloaded", Some(2)),
            ("installation_cancelled", None),
            ("installation_cancelled", None),
            ("installed", Some(3)),
        ]
    );
    assert_eq!(report.duplicate_statuses, 2);
    let b = portal.environment("env-b").unwrap();
    assert_eq!((b.statuses.len(), b.duplicate_statuses), (1, 0));
    assert_eq!(portal.stats().duplicate_statuses, 2);
    let _ = a.close(None).await;
    let _ = other.close(None).await;
    portal.shutdown().await;
}
