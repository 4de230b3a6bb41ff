//! Fleet benchmark: N real `banalytics-box` processes (50 by default), each
//! with its own home, against one `banalytics-portal` process on loopback.
//! Prints the time to converge on a first set and on a new one, the bytes
//! the repository served against the minimum (each file once per box that
//! needed it), and, after the portal process is killed and started again on
//! the same port under the whole fleet, the time until every box is back
//! and the most connection attempts the portal saw in any one second.
//!
//! `cargo run --release -p banalytics-tests --bin fleet-bench -- [BOXES] [DOWN_SECONDS]`
//!
//! `fleet-bench rollout [BOXES]` (200 by default) runs a staged rollout
//! instead: BOXES simulated boxes ([`banalytics_tests::simbox`], in-process
//! protocol clients, since 200 box processes do not fit the machine)
//! against one `banalytics-portal` process, a set rolled out in three waves
//! (1 box, 10 %, the rest). Prints the time of each wave and of the whole
//! rollout, and the portal process's peak RSS.
//!
//! `fleet-bench rollout [BOXES] --portals N [--database postgres://…]`
//! runs it with N portal processes on one PostgreSQL database (without
//! `--database`, a server of its own from Debian's `postgresql` package),
//! the boxes spread over them; it also prints the statuses recorded per
//! second and each portal's peak RSS.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{
    e2e::{
        ensure_binaries, env_uuid, peak_rss_kib, register_box, rss_kib, served_files, ModuleSpec,
        PortalApi, PortalProcess,
    },
    fleet::Fleet,
    portal::{
        rollout::{RolloutSpec, RolloutState, DEFAULT_REPORT_TIMEOUT_MS, DEFAULT_WAVES},
        ModuleObject,
    },
    simbox::SimBox,
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

/// A simulated box's install time: a real box's restart and grace period
/// are seconds; this keeps the waves visible without making the run long.
const SIM_INSTALL: Duration = Duration::from_millis(300);

fn rollout_bench(boxes: usize) -> Result<()> {
    ensure_binaries()?;
    let dir = tempfile::Builder::new()
        .prefix("rollout-bench-")
        .tempdir()?;
    let portal = PortalProcess::start(&dir.path().join("portal"), None, &[])?;
    let set = v2();
    portal.publish_all(&dir.path().join("files"), &set)?;
    let envs: Vec<String> = (0..boxes).map(env_uuid).collect();
    let secrets = envs
        .iter()
        .map(|env| register_box(&portal, env))
        .collect::<Result<Vec<_>>>()?;
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let tasks: Vec<_> = envs
        .iter()
        .zip(secrets)
        .map(|(env, secret)| {
            let sim = SimBox {
                ws_url: format!(
                    "ws://{}/portal-integration?environmentUuid={env}&environmentHash=sim",
                    portal.addr()
                ),
                env: env.clone(),
                secret: Some(secret),
                install_time: SIM_INSTALL,
            };
            sims.spawn(sim.run(stop_rx.clone()))
        })
        .collect();
    let connected = loop {
        let n = portal
            .environment_reports()?
            .iter()
            .filter(|e| e.connected)
            .count();
        if n == boxes {
            break t.elapsed();
        }
        if t.elapsed() > CONVERGE {
            bail!("only {n} of {boxes} simulated boxes connected");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let admin = portal.admin();
    let spec = RolloutSpec {
        name: "fleet-bench".into(),
        target: coords(&set),
        environments: envs.clone(),
        waves: DEFAULT_WAVES.to_vec(),
        failure_threshold_percent: 0,
        report_timeout_ms: DEFAULT_REPORT_TIMEOUT_MS,
    };
    let t = Instant::now();
    let started = portal.block_on(admin.start_rollout(&spec))?;
    let mut wave_done: Vec<Duration> = Vec::new();
    let finished = loop {
        let r = portal
            .block_on(admin.rollouts())?
            .into_iter()
            .find(|r| r.id == started.id)
            .context("the rollout")?;
        while wave_done.len() < r.current_wave.min(r.waves.len()) {
            wave_done.push(t.elapsed());
        }
        match r.state {
            RolloutState::Finished => break r,
            RolloutState::Running => {}
            other => bail!("the rollout stopped: {other:?}"),
        }
        if t.elapsed() > CONVERGE {
            bail!("the rollout did not finish within {CONVERGE:?}: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    let peak = peak_rss_kib(portal.pid());
    let _ = stop_tx.send(true);
    let installs: usize = sims
        .block_on(async {
            let mut n = 0;
            for t in tasks {
                n += t.await??;
            }
            anyhow::Ok(n)
        })
        .context("the simulated boxes")?;

    println!("\nfleet-bench rollout: {boxes} simulated boxes (in-process protocol clients), one banalytics-portal process, loopback");
    println!(
        "{:<58} {:.2} s",
        "all boxes connected after",
        connected.as_secs_f64()
    );
    let sizes: Vec<String> = finished.waves.iter().map(|w| w.len().to_string()).collect();
    println!("{:<58} {}", "waves (boxes)", sizes.join(" / "));
    let mut before = Duration::ZERO;
    for (i, done) in wave_done.iter().enumerate() {
        println!(
            "{:<58} {:.2} s (ended {:.2} s after the start)",
            format!("  wave {} took", i + 1),
            (*done - before).as_secs_f64(),
            done.as_secs_f64()
        );
        before = *done;
    }
    println!(
        "{:<58} {:.2} s",
        "3-wave rollout: all installed after",
        took.as_secs_f64()
    );
    println!(
        "{:<58} {} of {boxes}",
        "  installed sets reported", installs
    );
    println!("{:<58} {SIM_INSTALL:?}", "  simulated install time per box");
    println!(
        "{:<58} {}",
        "portal peak RSS (VmHWM)",
        peak.map_or_else(|| "?".to_string(), |k| format!("{k} KiB"))
    );
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("rollout") {
        let boxes = std::env::args()
            .nth(2)
            .map_or(Ok(200), |a| a.parse())
            .context("BOXES")?;
        let args: Vec<String> = std::env::args().skip(3).collect();
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
        };
        if let Some(portals) = flag("--portals") {
            let portals: usize = portals.parse().context("--portals")?;
            return rollout_bench_portals(boxes, portals.max(1), flag("--database"));
        }
        return rollout_bench(boxes);
    }
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

/// Raises this process's open-file limit to its hard limit (the portals it
/// starts inherit it): 10 000 simulated boxes are 10 000 sockets here and
/// as many across the portals.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `fleet-bench rollout BOXES --portals N [--database URL]`: the rollout
/// of [`rollout_bench`] with N portal processes on one PostgreSQL database
/// (URL, else a server of its own from Debian's package,
/// `banalytics_tests::postgres`) and one data folder, the boxes spread
/// over them in turn, the rollout started through the first. Prints the
/// time of each wave, the statuses recorded per second, and each portal's
/// peak RSS.
fn rollout_bench_portals(boxes: usize, portals: usize, database: Option<String>) -> Result<()> {
    ensure_binaries()?;
    raise_open_files();
    let url = match database {
        Some(url) => url,
        None => banalytics_tests::postgres::database().context(
            "several portals need PostgreSQL: --database URL, or Debian's postgresql package",
        )?,
    };
    let dir = tempfile::Builder::new()
        .prefix("rollout-bench-")
        .tempdir()?;
    let data = dir.path().join("portal");
    let procs: Vec<PortalProcess> = (0..portals)
        .map(|_| PortalProcess::start(&data, None, &["--database", &url]))
        .collect::<Result<_>>()?;
    let first = &procs[0];
    let set = v2();
    first.publish_all(&dir.path().join("files"), &set)?;
    let envs: Vec<String> = (0..boxes).map(env_uuid).collect();
    let t = Instant::now();
    let secrets = envs
        .iter()
        .map(|env| register_box(first, env))
        .collect::<Result<Vec<_>>>()?;
    let registered = t.elapsed();
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let tasks: Vec<_> = envs
        .iter()
        .zip(secrets)
        .enumerate()
        .map(|(i, (env, secret))| {
            let sim = SimBox {
                ws_url: format!(
                    "ws://{}/portal-integration?environmentUuid={env}&environmentHash=sim",
                    procs[i % portals].addr()
                ),
                env: env.clone(),
                secret: Some(secret),
                install_time: SIM_INSTALL,
            };
            sims.spawn(sim.run(stop_rx.clone()))
        })
        .collect();
    let connected = loop {
        let mut n = 0;
        for p in &procs {
            // A portal busy with thousands of connections may drop an
            // admin call: asked again at the next round.
            match p.environment_reports() {
                Ok(reports) => n += reports.iter().filter(|e| e.connected).count(),
                Err(error) => eprintln!("environments of a portal: {error:#}"),
            }
        }
        if n == boxes {
            break t.elapsed();
        }
        if t.elapsed() > CONVERGE {
            bail!("only {n} of {boxes} simulated boxes connected");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let statuses_before: usize = first
        .environment_reports()?
        .iter()
        .map(|e| e.statuses.len())
        .sum();
    let admin = first.admin();
    let spec = RolloutSpec {
        name: "fleet-bench".into(),
        target: coords(&set),
        environments: envs.clone(),
        waves: DEFAULT_WAVES.to_vec(),
        failure_threshold_percent: 0,
        report_timeout_ms: DEFAULT_REPORT_TIMEOUT_MS,
    };
    let t = Instant::now();
    let started = first.block_on(admin.start_rollout(&spec))?;
    let mut wave_done: Vec<Duration> = Vec::new();
    let finished = loop {
        let r = first
            .block_on(admin.rollouts())?
            .into_iter()
            .find(|r| r.id == started.id)
            .context("the rollout")?;
        while wave_done.len() < r.current_wave.min(r.waves.len()) {
            wave_done.push(t.elapsed());
        }
        match r.state {
            RolloutState::Finished => break r,
            RolloutState::Running => {}
            other => bail!("the rollout stopped: {other:?}"),
        }
        if t.elapsed() > CONVERGE {
            bail!("the rollout did not finish within {CONVERGE:?}: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = t.elapsed();
    let peaks: Vec<Option<u64>> = procs.iter().map(|p| peak_rss_kib(p.pid())).collect();
    let statuses: usize = first
        .environment_reports()?
        .iter()
        .map(|e| e.statuses.len())
        .sum::<usize>()
        - statuses_before;
    let _ = stop_tx.send(true);
    let installs: usize = sims
        .block_on(async {
            let mut n = 0;
            for t in tasks {
                n += t.await??;
            }
            anyhow::Ok(n)
        })
        .context("the simulated boxes")?;

    println!("\nfleet-bench rollout: {boxes} simulated boxes over {portals} banalytics-portal processes on one PostgreSQL database, loopback");
    println!(
        "{:<58} {:.2} s",
        "registered through the first after",
        registered.as_secs_f64()
    );
    println!(
        "{:<58} {:.2} s",
        "all boxes connected after",
        connected.as_secs_f64()
    );
    let sizes: Vec<String> = finished.waves.iter().map(|w| w.len().to_string()).collect();
    println!("{:<58} {}", "waves (boxes)", sizes.join(" / "));
    let mut before = Duration::ZERO;
    for (i, done) in wave_done.iter().enumerate() {
        println!(
            "{:<58} {:.2} s (ended {:.2} s after the start)",
            format!("  wave {} took", i + 1),
            (*done - before).as_secs_f64(),
            done.as_secs_f64()
        );
        before = *done;
    }
    println!(
        "{:<58} {:.2} s",
        "3-wave rollout: all installed after",
        took.as_secs_f64()
    );
    println!(
        "{:<58} {} of {boxes}",
        "  installed sets reported", installs
    );
    println!(
        "{:<58} {statuses} ({:.0} per s)",
        "statuses recorded during the rollout",
        statuses as f64 / took.as_secs_f64()
    );
    println!("{:<58} {SIM_INSTALL:?}", "  simulated install time per box");
    for (i, peak) in peaks.iter().enumerate() {
        println!(
            "{:<58} {}",
            format!("portal {} peak RSS (VmHWM)", i + 1),
            peak.map_or_else(|| "?".to_string(), |k| format!("{k} KiB"))
        );
    }
    Ok(())
}
