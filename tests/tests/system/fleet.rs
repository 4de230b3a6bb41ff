//! A fleet: 50 real `banalytics-box` processes, each with its own home,
//! against one reference portal. Every box converges on the first set and
//! then on a new one, and the repository serves each artifact byte once per
//! box that needed it; then the portal restarts under the whole fleet and
//! the boxes come back spread out by their jittered backoff.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{ensure, Result};
use banalytics_tests::{
    e2e::{served_files, ModuleSpec, PortalApi},
    fleet::Fleet,
    portal::{Portal, PortalConfig},
};

const BOXES: usize = 50;

const CONVERGE: Duration = Duration::from_secs(240);

/// `max_backoff_s` of the fleet: every box is back within this much after
/// the portal is.
const MAX_BACKOFF_S: u64 = 8;

/// How long the portal stays down: long enough for each box's first
/// jittered attempt to fail.
const PORTAL_DOWN: Duration = Duration::from_secs(3);

#[test]
fn fifty_boxes_converge_on_a_new_set_and_each_byte_is_served_once_per_box() -> Result<()> {
    // 50 boxes, and upper bounds on how fast they come back: no other
    // test runs meanwhile, as when this was the only test of its binary.
    let _machine = crate::machine::alone();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let files = dir.path().join("files");
    let v1 = vec![
        ModuleSpec::new("com.example.fleet:core-cam:1.0", 64 * 1024).with_packages(),
        ModuleSpec::new("com.example.fleet:motion:1.0", 16 * 1024),
    ];
    let v2 = [
        ModuleSpec::new("com.example.fleet:core-cam:1.0", 64 * 1024).with_packages(),
        ModuleSpec::new("com.example.fleet:motion:1.1", 20 * 1024),
        ModuleSpec::new("com.example.fleet:faces:1.0", 32 * 1024).with_packages(),
    ];
    let published_v1 = portal.publish_all(&files, &v1)?;
    let published_v2 = portal.publish_all(&files, &v2[1..])?;
    let c1: Vec<String> = v1.iter().map(|s| s.coordinates.clone()).collect();
    let c2: Vec<String> = v2.iter().map(|s| s.coordinates.clone()).collect();

    let mut fleet = Fleet::new(&portal, BOXES, |s| {
        s.portal_extra = format!("max_backoff_s = {MAX_BACKOFF_S}");
    })?;
    fleet.assign_all(&portal, &c1)?;
    fleet.spawn_all()?;
    let first = fleet.converge(&portal, &vec![0; BOXES], CONVERGE, |_, _| {})?;

    fleet.wait_all_connected(&portal, Duration::from_secs(30))?;
    let after = fleet.status_counts(&portal)?;
    fleet.assign_all(&portal, &c2)?;
    for env in fleet.envs() {
        ensure!(portal.sync_env(env)? == 1, "{env} is not connected");
    }
    let second = fleet.converge(&portal, &after, CONVERGE, |_, _| {})?;
    eprintln!("{BOXES} boxes: first set in {first:?}, the new set in {second:?}");

    // Every box went through two restarts (exit 75) and nothing else.
    for b in fleet.boxes() {
        ensure!(b.exits() == [75, 75], "{:?}: {}", b.exits(), b.log_tail(10));
    }
    // Each file served exactly size × boxes: once per box, never again.
    let stats = portal.stats_report()?;
    let mut expected = BTreeMap::new();
    for m in published_v1.iter().chain(&published_v2) {
        for (path, size) in served_files(m) {
            expected.insert(path, size * BOXES as u64);
        }
    }
    for (path, want) in &expected {
        ensure!(
            stats.bytes(path) == *want,
            "{path}: {} bytes served, {want} expected",
            stats.bytes(path)
        );
    }
    let extra: Vec<_> = stats
        .paths
        .iter()
        .filter(|(p, s)| s.bytes > 0 && !p.ends_with(".sha256") && !expected.contains_key(*p))
        .collect();
    ensure!(extra.is_empty(), "unexpected downloads: {extra:?}");

    // The portal goes away under the whole fleet and comes back on the same
    // port: every box returns, and the jitter spreads the attempts.
    let (addr, data) = (portal.addr(), portal.data_dir().to_path_buf());
    portal.shutdown_blocking();
    std::thread::sleep(PORTAL_DOWN);
    let mut config = PortalConfig::new(data);
    config.listen = addr;
    let portal = Portal::spawn(config)?;
    let back = fleet.wait_all_connected(&portal, Duration::from_secs(MAX_BACKOFF_S * 3))?;
    let stats = portal.stats_report()?;
    let busiest = stats
        .connection_attempts_per_second
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    eprintln!(
        "back after {back:?}; attempts per second: {:?}",
        stats.connection_attempts_per_second
    );
    ensure!(stats.connection_attempts >= BOXES as u64);
    ensure!(
        busiest <= (BOXES * 4 / 5) as u64,
        "{busiest} of {BOXES} boxes came back in the same second: {:?}",
        stats.connection_attempts_per_second
    );
    let bad = fleet.stop_all();
    ensure!(bad.is_empty(), "boxes that did not stop cleanly: {bad:?}");
    Ok(())
}
