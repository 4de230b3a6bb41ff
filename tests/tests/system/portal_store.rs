//! The portal's store with real processes: a `banalytics-portal serve`
//! SIGKILLed in the middle of a rollout and started again on the same port
//! (and the same database) continues the rollout, and every status the
//! boxes sent is in its history once: none lost across the kill, none
//! counted twice.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    e2e::{ModuleSpec, PortalApi, PortalProcess},
    fleet::Fleet,
    portal::rollout::{BoxState, Rollout, RolloutSpec, RolloutState, WaveSize},
};

/// Boxes of the rollout: one in the first wave, the rest in the second.
const BOXES: usize = 3;

/// How long a rollout of debug boxes may take on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(240);

/// The boxes' longest reconnect delay, so that they are back soon after
/// the portal.
const MAX_BACKOFF_S: u64 = 4;

fn rollout(portal: &PortalProcess, id: u64) -> Result<Rollout> {
    portal
        .block_on(portal.admin().rollouts())?
        .into_iter()
        .find(|r| r.id == id)
        .context("the rollout")
}

/// The entries waiting in the box's portal outbox.
fn outbox_len(home: &Path) -> usize {
    std::fs::read_dir(home.join("state/portal-outbox"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_portal_killed_during_a_rollout_continues_it_with_every_status_recorded_once() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    let mut portal = PortalProcess::start(&data, None, &[])?;
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 20_000)];
    portal.publish_all(&dir.path().join("files"), &set)?;
    let mut fleet = Fleet::new(&portal, BOXES, |s| {
        s.portal_extra = format!("max_backoff_s = {MAX_BACKOFF_S}");
    })?;
    fleet.spawn_all()?;
    fleet.wait_all_connected(&portal, CONVERGE)?;

    let spec = RolloutSpec {
        name: "killed".into(),
        target: set.iter().map(|s| s.coordinates.clone()).collect(),
        environments: fleet.envs().to_vec(),
        waves: vec![WaveSize::Boxes(1), WaveSize::Rest],
        failure_threshold_percent: 0,
        report_timeout_ms: CONVERGE.as_millis() as u64,
    };
    let id = portal.block_on(portal.admin().start_rollout(&spec))?.id;
    let first = fleet.envs()[0].clone();

    // The first wave's box has the set downloaded: it stops to apply it
    // and reports `installed` after its restart. SIGKILL the portal now,
    // so that `installed` finds it down.
    let t = Instant::now();
    loop {
        fleet.supervise_all()?;
        let heard = portal.statuses(&first)?;
        if heard.iter().any(|l| l.status == "downloaded") {
            break;
        }
        ensure!(
            t.elapsed() < CONVERGE,
            "no download reported: {heard:?}; {}",
            portal.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = rollout(&portal, id)?;
    ensure!(
        before.state == RolloutState::Running && before.current_wave == 0,
        "killed in the middle of the first wave: {before:?}"
    );
    let heard_before = portal.statuses(&first)?.len();
    let addr = portal.addr();
    portal.kill()?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        fleet.supervise_all()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let portal = PortalProcess::start(&data, Some(addr), &[])?;
    ensure!(portal.addr() == addr, "the same port");
    ensure!(
        portal.statuses(&first)?.len() >= heard_before,
        "the history survived the kill"
    );

    let t = Instant::now();
    let finished = loop {
        fleet.supervise_all()?;
        let r = rollout(&portal, id)?;
        match r.state {
            RolloutState::Finished => break r,
            RolloutState::Running => {}
            ref other => bail!("the rollout stopped: {other:?}; {}", portal.log()),
        }
        ensure!(t.elapsed() < CONVERGE, "the rollout did not finish: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        (finished.installed(), finished.failed()) == (BOXES, 0),
        "every box counted installed once: {finished:?}"
    );
    ensure!(finished
        .boxes
        .iter()
        .all(|(_, s)| *s == BoxState::Installed));

    // What each box sent, as its portal has it: every durable status
    // numbered 1..n once, the last one `installed`, and nothing left in
    // the box's outbox.
    for (i, env) in fleet.envs().to_vec().iter().enumerate() {
        let home = fleet.boxes()[i].path();
        let t = Instant::now();
        while outbox_len(&home) > 0 {
            ensure!(t.elapsed() < CONVERGE, "{env}: the outbox did not empty");
            fleet.supervise_all()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = portal.environment_report(env)?.context("the environment")?;
        let seqs: Vec<Option<u64>> = report.statuses.iter().map(|s| s.seq).collect();
        let want: Vec<Option<u64>> = (1..=seqs.len() as u64).map(Some).collect();
        ensure!(
            seqs == want,
            "{env}: statuses numbered 1..n once each: {seqs:?}"
        );
        let installed = report
            .statuses
            .iter()
            .filter(|s| s.status == "installed")
            .count();
        ensure!(
            installed == 1,
            "{env}: installed once: {:?}",
            report.statuses
        );
        ensure!(report.statuses_dropped == 0);
    }
    let bad = fleet.stop_all();
    ensure!(bad.is_empty(), "boxes that did not stop cleanly: {bad:?}");
    Ok(())
}
