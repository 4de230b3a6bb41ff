//! A fleet: 50 real `banalytics-box` processes, each with its own home,
//! against one reference portal. Every box converges on the first set and
//! then on a new one, and the repository serves each artifact byte once per
//! box that needed it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{ensure, Result};
use banalytics_tests::{
    e2e::{served_files, Fleet, ModuleSpec, PortalApi},
    portal::{Portal, PortalConfig},
};

const BOXES: usize = 50;

const CONVERGE: Duration = Duration::from_secs(240);

#[test]
fn fifty_boxes_converge_on_a_new_set_and_each_byte_is_served_once_per_box() -> Result<()> {
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

    let mut fleet = Fleet::new(&portal, BOXES, |_| {})?;
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
    let bad = fleet.stop_all();
    ensure!(bad.is_empty(), "boxes that did not stop cleanly: {bad:?}");
    Ok(())
}
