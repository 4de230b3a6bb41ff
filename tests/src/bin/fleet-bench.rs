//! Fleet benchmark: N real `banalytics-box` processes (50 by default), each
//! with its own home, against one `banalytics-portal` process on loopback.
//! Prints the time to converge on a first set and on a new one, the bytes
//! the repository served against the minimum (each file once per box that
//! needed it), and, after the portal process is killed and started again on
//! the same port under the whole fleet, the time until every box is back
//! and the most connection attempts the portal saw in any one second.
//!
//! `cargo run --release -p banalytics-tests --bin fleet-bench -- [BOXES] [DOWN_SECONDS]`

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{
    e2e::{ensure_binaries, rss_kib, served_files, ModuleSpec, PortalApi, PortalProcess},
    fleet::Fleet,
    portal::ModuleObject,
};

const KIB: u64 = 1024;

const CONVERGE: Duration = Duration::from_secs(600);

fn v1() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.fleet:core-cam:1.0", 512 * KIB).with_packages(),
        ModuleSpec::new("com.example.fleet:motion:1.0", 256 * KIB).with_packages(),
        ModuleSpec::new("com.example.fleet:recorder:1.0", 128 * KIB),
    ]
}

/// core-cam unchanged, motion changed, recorder removed, faces added.
fn v2() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.fleet:core-cam:1.0", 512 * KIB).with_packages(),
        ModuleSpec::new("com.example.fleet:motion:1.1", 300 * KIB).with_packages(),
        ModuleSpec::new("com.example.fleet:faces:1.0", 1024 * KIB).with_packages(),
    ]
}

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

/// Repository bytes served, and the minimum: each file of `needed` once per
/// box.
fn bytes(portal: &PortalProcess, needed: &[&ModuleObject], boxes: usize) -> Result<(u64, u64)> {
    let stats = portal.stats_report()?;
    let served = stats
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/repo/"))
        .map(|(_, s)| s.bytes)
        .sum();
    let minimum = needed
        .iter()
        .flat_map(|m| served_files(m))
        .map(|(_, size)| size)
        .sum::<u64>()
        * boxes as u64;
    Ok((served, minimum))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let boxes: usize = args.next().map_or(Ok(50), |a| a.parse()).context("BOXES")?;
    let down_s: u64 = args
        .next()
        .map_or(Ok(5), |a| a.parse())
        .context("DOWN_SECONDS")?;
    ensure_binaries()?;
    let dir = tempfile::Builder::new().prefix("fleet-bench-").tempdir()?;
    let data = dir.path().join("portal");
    let mut portal = PortalProcess::start(&data, None, &[])?;
    let files = dir.path().join("files");
    let published: BTreeMap<String, ModuleObject> = {
        let mut all = v1();
        all.extend(v2().into_iter().skip(1));
        portal
            .publish_all(&files, &all)?
            .into_iter()
            .map(|m| (m.coordinates(), m))
            .collect()
    };
    let pick = |specs: &[ModuleSpec]| -> Vec<&ModuleObject> {
        specs.iter().map(|s| &published[&s.coordinates]).collect()
    };
    let new_in_v2: Vec<ModuleSpec> = v2().into_iter().skip(1).collect();

    let mut rows: Vec<(String, String)> = Vec::new();
    let mut fleet = Fleet::new(&portal, boxes, |_| {})?;
    fleet.assign_all(&portal, &coords(&v1()))?;

    eprintln!("starting {boxes} boxes (first run: v1)");
    let t = Instant::now();
    fleet.spawn_all()?;
    fleet.converge(&portal, &vec![0; boxes], CONVERGE, |done, n| {
        eprintln!(
            "  {done}/{n} installed after {:.1} s",
            t.elapsed().as_secs_f64()
        )
    })?;
    let took = t.elapsed();
    let (served, minimum) = bytes(&portal, &pick(&v1()), boxes)?;
    rows.push((
        "first run: all installed v1".into(),
        format!("{:.2} s", took.as_secs_f64()),
    ));
    rows.push((
        "  repository bytes served / minimum".into(),
        format!(
            "{served} / {minimum} ({:.3}x)",
            served as f64 / minimum as f64
        ),
    ));

    fleet.wait_all_connected(&portal, Duration::from_secs(60))?;
    portal.reset_counters()?;
    let after = fleet.status_counts(&portal)?;
    fleet.assign_all(&portal, &coords(&v2()))?;
    eprintln!("assigning v2 and sending EVT_SYNC_SOFT to {boxes} boxes");
    let t = Instant::now();
    for env in fleet.envs() {
        if portal.sync_env(env)? != 1 {
            bail!("{env} is not connected");
        }
    }
    fleet.converge(&portal, &after, CONVERGE, |done, n| {
        eprintln!(
            "  {done}/{n} installed after {:.1} s",
            t.elapsed().as_secs_f64()
        )
    })?;
    let took = t.elapsed();
    let (served, minimum) = bytes(&portal, &pick(&new_in_v2), boxes)?;
    rows.push((
        "upgrade: all installed v2".into(),
        format!("{:.2} s", took.as_secs_f64()),
    ));
    rows.push((
        "  repository bytes served / minimum".into(),
        format!(
            "{served} / {minimum} ({:.3}x)",
            served as f64 / minimum as f64
        ),
    ));
    let rss: Vec<u64> = fleet
        .boxes()
        .iter()
        .filter_map(|b| b.pid().and_then(rss_kib))
        .collect();
    if !rss.is_empty() {
        rows.push((
            "  box RSS, mean / max".into(),
            format!(
                "{} KiB / {} KiB",
                rss.iter().sum::<u64>() / rss.len() as u64,
                rss.iter().max().copied().unwrap_or(0)
            ),
        ));
    }

    fleet.wait_all_connected(&portal, Duration::from_secs(60))?;
    let addr = portal.addr();
    eprintln!("killing the portal (SIGKILL) for {down_s} s under {boxes} connected boxes");
    portal.kill()?;
    std::thread::sleep(Duration::from_secs(down_s));
    let t = Instant::now();
    let portal = PortalProcess::start(&data, Some(addr), &[])?;
    let back = fleet.wait_all_connected(&portal, Duration::from_secs(180))?;
    let stats = portal.stats_report()?;
    let peak = stats
        .connection_attempts_per_second
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, n)| (*s, *n))
        .unwrap_or((0, 0));
    rows.push((
        format!("portal killed for {down_s} s and restarted on the same port"),
        String::new(),
    ));
    rows.push((
        "  all boxes connected again after".into(),
        format!("{:.2} s", back.max(t.elapsed()).as_secs_f64()),
    ));
    rows.push((
        "  connection attempts seen".into(),
        format!("{}", stats.connection_attempts),
    ));
    rows.push((
        "  most attempts in one second".into(),
        format!("{} (second {} after the restart)", peak.1, peak.0),
    ));
    rows.push((
        "  attempts per second".into(),
        stats
            .connection_attempts_per_second
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let bad = fleet.stop_all();
    drop(portal);
    if !bad.is_empty() {
        bail!("boxes that did not stop cleanly: {bad:?}");
    }

    println!("\nfleet-bench: {boxes} banalytics-box processes, one banalytics-portal, loopback");
    for (k, v) in rows {
        println!("{k:<58} {v}");
    }
    Ok(())
}
