//! Losses the box must ride out, with real processes: the portal process
//! killed and started again on the same port, and the box itself killed
//! with SIGKILL in the middle of a large download.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, log_events, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess},
    poll_until,
    portal::{Faults, Portal, PortalConfig},
    DEADLINE,
};

const CONVERGE: Duration = Duration::from_secs(60);

/// `max_backoff_s` of these boxes: the longest wait between two attempts.
const MAX_BACKOFF_S: u64 = 4;

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

fn converge(portal: &dyn PortalApi, b: &mut ManagedBox, env: &str, after: usize) -> Result<()> {
    b.run_until(CONVERGE, "installed", |_| {
        portal
            .statuses(env)
            .ok()
            .filter(|l| l.iter().skip(after).any(|l| l.status == "installed"))
    })?;
    Ok(())
}

/// The reconnect delays the box logged after `skip` log events.
fn reconnect_delays_ms(log: &str, skip: usize) -> Vec<u64> {
    log_events(log)
        .iter()
        .skip(skip)
        .filter(|e| e["message"] == "reconnecting to the portal after a delay")
        .filter_map(|e| e["delay_ms"].as_u64())
        .collect()
}

#[test]
fn the_box_reconnects_to_a_killed_and_restarted_portal_and_the_next_sync_completes() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    let mut portal = PortalProcess::start(&data, None, &[])?;
    let env = env_uuid(10);
    let v1 = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 30_000).with_packages()];
    let v2 = vec![
        ModuleSpec::new("com.example.cam:alpha:1.1", 31_000).with_packages(),
        ModuleSpec::new("com.example.cam:beta:1.0", 12_000),
    ];
    portal.publish_all(&dir.path().join("files"), &v1)?;
    portal.assign_set(&env, &coords(&v1))?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.portal_extra = format!("max_backoff_s = {MAX_BACKOFF_S}");
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    converge(&portal, &mut b, &env, 0)?;
    portal.wait_connected(&env, DEADLINE)?;

    // SIGKILL: no close frame, the box sees the TCP connection reset.
    let addr = portal.addr();
    let events_before = log_events(&b.log()).len();
    portal.kill()?;
    b.run_until(DEADLINE, "the box to notice the lost link", |b| {
        (!reconnect_delays_ms(&b.log(), events_before).is_empty()).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    let down_at = Instant::now();
    let portal = PortalProcess::start(&data, Some(addr), &[])?;
    ensure!(portal.addr() == addr, "the same port");
    portal.wait_connected(&env, Duration::from_secs(MAX_BACKOFF_S + 10))?;
    let reconnect = down_at.elapsed();
    ensure!(
        reconnect < Duration::from_secs(MAX_BACKOFF_S + 2),
        "reconnected only after {reconnect:?} with max_backoff_s = {MAX_BACKOFF_S}"
    );
    ensure!(b.is_running(), "the box rode out the loss");
    let delays = reconnect_delays_ms(&b.log(), events_before);
    ensure!(
        delays.iter().all(|d| *d < MAX_BACKOFF_S * 1000),
        "every delay under max_backoff_s: {delays:?}"
    );
    ensure!(
        delays.iter().any(|d| d % 1000 != 0),
        "the delays are jittered, not whole seconds: {delays:?}"
    );
    ensure!(
        delays.iter().all(|d| *d >= 1000),
        "no attempt sooner than the first delay: {delays:?}"
    );

    // The restarted portal kept the repository, the assignments and the
    // status history; the next synchronisation through it completes.
    let seen = portal.statuses(&env)?.len();
    ensure!(seen > 0, "the status history survives a portal restart");
    portal.publish_all(&dir.path().join("files"), &v2)?;
    portal.assign_set(&env, &coords(&v2))?;
    ensure!(portal.sync_env(&env)? == 1);
    converge(&portal, &mut b, &env, seen)?;
    let lines = portal.statuses(&env)?;
    ensure!(
        lines.last().is_some_and(|l| l.status == "installed"),
        "{lines:?}"
    );
    let mut want = coords(&v2);
    want.sort();
    poll_until(DEADLINE, "the committed set", || {
        b.installed().ok().filter(|i| *i == want)
    })?;
    ensure!(b.exits() == [75, 75], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_box_killed_in_the_middle_of_a_large_download_resumes_and_refetches_under_10_percent(
) -> Result<()> {
    let _machine = crate::machine::shared();
    const SIZE: u64 = 24 * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let env = env_uuid(11);
    let big = ModuleSpec::new("com.example.cam:big:1.0", SIZE);
    let set = vec![
        big.clone(),
        ModuleSpec::new("com.example.cam:small:1.0", 5_000),
    ];
    portal.publish_all(&dir.path().join("files"), &set)?;
    portal.assign_set(&env, &coords(&set))?;
    // About four seconds for the whole file.
    portal.set_faults(Faults {
        bandwidth_bytes_per_s: Some(6 * 1024 * 1024),
        ..Faults::default()
    });
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    b.spawn()?;
    let report = b.run_until(DEADLINE, "a third of the download", |b| {
        b.sync_report()
            .filter(|s| s["state"] == "downloading" && s["done_bytes"].as_u64() >= Some(SIZE / 3))
    })?;
    b.kill()?;
    let served_before = portal.stats().bytes(&big.repo_path());
    ensure!(
        served_before < SIZE,
        "killed before the end: {served_before} of {SIZE}; {report}"
    );
    let partials: Vec<String> = walk(&b.path().join("modules-download"))?
        .into_iter()
        .filter(|p| p.ends_with(".partial"))
        .collect();
    ensure!(!partials.is_empty(), "a partial file is kept");

    portal.set_faults(Faults::default());
    b.spawn()?;
    converge(&portal, &mut b, &env, 0)?;
    let stats = portal.stats();
    let served = stats.bytes(&big.repo_path());
    let again = served.saturating_sub(SIZE);
    eprintln!("served {served_before} bytes before the kill, {served} in all, {again} again");
    ensure!(
        served >= SIZE && again < SIZE / 10,
        "{again} bytes sent again ({served} served for a {SIZE}-byte file, {served_before} before the kill)"
    );
    ensure!(
        stats.requests(&big.repo_path()) >= 2,
        "a second request resumed it"
    );
    ensure!(
        b.path().join("modules").join(big.file_name()).is_file(),
        "the big module is installed"
    );
    ensure!(b.home().cli(&["verify"])?.status.success());
    ensure!(b.exits() == [75], "{:?}", b.exits());
    ensure!(b.stop()?.success());
    Ok(())
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir)?.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}
