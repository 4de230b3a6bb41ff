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
//! `fleet-bench rollout [BOXES..]` (200 by default; `rollout 1000 10000`
//! side by side) runs a staged rollout instead: BOXES simulated boxes
//! ([`banalytics_tests::simbox`], in-process protocol clients, since 200
//! box processes do not fit the machine; one in 50 fails its download)
//! against one `banalytics-portal` process on its SQLite database, a set
//! rolled out in three waves (1 box, 10 %, the rest). Prints the time of
//! each wave and of the whole rollout, the statuses per second the portal
//! recorded, its peak RSS, and the console's environments page filtered to
//! the failed ones. The open-file limit is raised to its hard limit first.
//!
//! `fleet-bench rollout [BOXES] --portals N [--database postgres://…]`
//! runs it with N portal processes on one PostgreSQL database (without
//! `--database`, a server of its own from Debian's `postgresql` package),
//! the boxes spread over them and the rollout started through the first;
//! it prints the time of each wave, the statuses recorded per second and
//! each portal's peak RSS.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{
    box_bin,
    e2e::{
        build_portal, ensure_binaries, env_uuid, peak_rss_kib, register_box, rss_kib, served_files,
        ModuleSpec, PortalApi, PortalProcess, HARNESS_ADMIN_TOKEN,
    },
    fleet::Fleet,
    portal::{
        db::{self, sqlite_url, stmt, Db},
        rollout::{RolloutSpec, RolloutState, DEFAULT_REPORT_TIMEOUT_MS, DEFAULT_WAVES},
        ModuleObject,
    },
    simbox::SimBox,
};

const KIB: u64 = 1024;

const CONVERGE: Duration = Duration::from_secs(600);

/// How long the simulated boxes of `fleet-bench rollout` have to connect
/// (they retry with backoff, as boxes do); the bench fails past it.
const CONNECT_WITHIN: Duration = Duration::from_secs(180);

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

/// `state/launcher-identity.json` as the launcher writes it for `exe`
/// (`banalytics_runtime::launcher::own_identity`): its digest keyed by the
/// file's device, inode, size and modification time.
fn identity_cache(exe: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(exe)?;
    let mtime_ns = m
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec());
    let key = format!("{}:{}:{}:{mtime_ns}", m.dev(), m.ino(), m.size());
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(exe)?));
    Ok(serde_json::json!({ "format": 1, "key": key, "sha256": sha256 }).to_string())
}

/// The launcher's hashing times (`took_ms`) in a box's log.
fn hash_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("hashed this executable"))
        .filter_map(|l| {
            let at = l.find("took_ms")? + "took_ms".len();
            let digits: String = l[at..]
                .trim_start_matches(['=', '"', ':'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// A simulated box's install time: a real box's restart and grace period
/// are seconds; this keeps the waves visible without making the run long.
const SIM_INSTALL: Duration = Duration::from_millis(300);

/// One box in this many fails its download (never the first wave's), so
/// that the environments page's failed view has rows; the rollout's
/// threshold lets them pass.
const FAIL_ONE_IN: usize = 50;

/// What one `fleet-bench rollout` run measured.
struct RolloutNumbers {
    boxes: usize,
    registered: Duration,
    connected: Duration,
    waves: Vec<(usize, Duration)>,
    took: Duration,
    statuses: u64,
    installs: usize,
    failed: usize,
    peak_rss_kib: Option<u64>,
    failed_view: Duration,
    failed_rows: usize,
    all_view: Duration,
}

/// Raises this process's open-file limit to its hard limit (the portal it
/// starts inherits it): each simulated box is a socket on both sides.
fn raise_open_files() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Statuses in the portal's history, read from its SQLite file.
fn statuses_recorded(db: &Db) -> Result<u64> {
    let rows = db.rows(stmt!("SELECT COUNT(*) FROM statuses"))?;
    Ok(rows.first().map_or(0, |r| db::uint(r, 0)))
}

/// One HTTP/1.1 request on a new connection; the status code, the
/// headers and the body.
fn http(addr: std::net::SocketAddr, request: &str) -> Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head.to_owned(), body.to_owned()))
}

/// A console session cookie (`name=value`) for the harness's admin token.
fn console_session(addr: std::net::SocketAddr) -> Result<String> {
    let body = format!("token={HARNESS_ADMIN_TOKEN}");
    let (_, head, _) = http(
        addr,
        &format!(
            "POST /console/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )?;
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| {
                    l["set-cookie:".len()..]
                        .trim()
                        .split(';')
                        .next()
                        .map(str::to_owned)
                })
                .flatten()
        })
        .context("the console's session cookie")
}

/// The best of five loads of a console page, and its environment rows.
fn time_page(addr: std::net::SocketAddr, session: &str, path: &str) -> Result<(Duration, usize)> {
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (code, _, body) = http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {session}\r\nConnection: close\r\n\r\n"),
        )?;
        best = best.min(t.elapsed());
        if code != 200 {
            bail!("{path}: HTTP {code}");
        }
        rows = body.matches("<tr data-env=").count();
    }
    Ok((best, rows))
}

/// Builds `banalytics-portal` beside this binary, with its profile (the
/// rollout needs no box binary), and points the harness at it; a
/// `BANALYTICS_PORTAL_BIN` given is used as it is.
fn ensure_portal() -> Result<()> {
    if std::env::var_os("BANALYTICS_PORTAL_BIN").is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let bin = build_portal(exe.parent().context("exe dir")?)?;
    std::env::set_var("BANALYTICS_PORTAL_BIN", bin);
    Ok(())
}

/// Waits until `boxes` environments are connected; the time since `t`.
fn wait_connected(portal: &PortalProcess, boxes: usize, t: Instant) -> Result<Duration> {
    loop {
        let n = portal
            .environment_reports()?
            .iter()
            .filter(|e| e.connected)
            .count();
        if n == boxes {
            return Ok(t.elapsed());
        }
        if t.elapsed() > CONNECT_WITHIN {
            bail!(
                "FAILED: only {n} of {boxes} simulated boxes connected within {CONNECT_WITHIN:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Watches rollout `id`, started at `t`, until it finished: the rollout
/// and when each wave ended.
fn watch_rollout(
    portal: &PortalProcess,
    id: u64,
    t: Instant,
) -> Result<(banalytics_tests::portal::rollout::Rollout, Vec<Duration>)> {
    let mut wave_done: Vec<Duration> = Vec::new();
    loop {
        let r = portal
            .block_on(portal.admin().rollouts())?
            .into_iter()
            .find(|r| r.id == id)
            .context("the rollout")?;
        while wave_done.len() < r.current_wave.min(r.waves.len()) {
            wave_done.push(t.elapsed());
        }
        match r.state {
            RolloutState::Finished => return Ok((r, wave_done)),
            RolloutState::Running => {}
            other => bail!("the rollout stopped: {other:?}"),
        }
        if t.elapsed() > CONVERGE {
            bail!("the rollout did not finish within {CONVERGE:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn rollout_bench(boxes: usize) -> Result<RolloutNumbers> {
    ensure_portal()?;
    let dir = tempfile::Builder::new()
        .prefix("rollout-bench-")
        .tempdir()?;
    let data = dir.path().join("portal");
    let portal = PortalProcess::start(&data, None, &[])?;
    let set = v2();
    portal.publish_all(&dir.path().join("files"), &set)?;
    let envs: Vec<String> = (0..boxes).map(env_uuid).collect();
    let t = Instant::now();
    let secrets = envs
        .iter()
        .map(|env| register_box(&portal, env))
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
                    portal.addr()
                ),
                env: env.clone(),
                secret: Some(secret),
                install_time: SIM_INSTALL,
                fail: i % FAIL_ONE_IN == FAIL_ONE_IN - 1,
            };
            sims.spawn(sim.run(stop_rx.clone()))
        })
        .collect();
    let connected = wait_connected(&portal, boxes, t)?;
    let db = Db::open(&sqlite_url(&data.join("portal.db")))?;
    let statuses_before = statuses_recorded(&db)?;
    let admin = portal.admin();
    let spec = RolloutSpec {
        name: "fleet-bench".into(),
        target: coords(&set),
        environments: envs.clone(),
        waves: DEFAULT_WAVES.to_vec(),
        failure_threshold_percent: 5,
        report_timeout_ms: DEFAULT_REPORT_TIMEOUT_MS,
    };
    let t = Instant::now();
    let started = portal.block_on(admin.start_rollout(&spec))?;
    let (finished, wave_done) = watch_rollout(&portal, started.id, t)?;
    let took = t.elapsed();
    let statuses = statuses_recorded(&db)? - statuses_before;
    let peak_rss_kib = peak_rss_kib(portal.pid());
    let session = console_session(portal.addr())?;
    let (failed_view, failed_rows) = time_page(portal.addr(), &session, "/console?status=failed")?;
    let (all_view, _) = time_page(portal.addr(), &session, "/console")?;
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
    let mut before = Duration::ZERO;
    let waves = finished
        .waves
        .iter()
        .zip(&wave_done)
        .map(|(w, done)| {
            let took = *done - before;
            before = *done;
            (w.len(), took)
        })
        .collect();
    Ok(RolloutNumbers {
        boxes,
        registered,
        connected,
        waves,
        took,
        statuses,
        installs,
        failed: finished.failed(),
        peak_rss_kib,
        failed_view,
        failed_rows,
        all_view,
    })
}

fn print_rollouts(runs: &[RolloutNumbers]) {
    println!("\nfleet-bench rollout: simulated boxes (in-process protocol clients), one banalytics-portal process on SQLite, loopback");
    let row = |label: &str, f: &dyn Fn(&RolloutNumbers) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| format!("{:>22}", f(r))).collect();
        println!("{label:<44}{}", cells.join(""));
    };
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    row("boxes", &|r| r.boxes.to_string());
    row("registered (admin API, one by one) in", &|r| {
        secs(r.registered)
    });
    row("all boxes connected after", &|r| secs(r.connected));
    for i in 0..runs.iter().map(|r| r.waves.len()).max().unwrap_or(0) {
        row(&format!("  wave {} (boxes): took", i + 1), &|r| {
            r.waves
                .get(i)
                .map_or_else(String::new, |(n, d)| format!("({n}) {}", secs(*d)))
        });
    }
    row("3-wave rollout: every verdict after", &|r| secs(r.took));
    row("  statuses recorded", &|r| r.statuses.to_string());
    row("  statuses per second at the portal", &|r| {
        format!("{:.0}", r.statuses as f64 / r.took.as_secs_f64())
    });
    row("  installed / failed (1 in 50 fails)", &|r| {
        format!("{} / {}", r.installs, r.failed)
    });
    row("portal peak RSS (VmHWM)", &|r| {
        r.peak_rss_kib
            .map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    });
    row("/console?status=failed (best of 5)", &|r| {
        format!("{} ({} rows)", ms(r.failed_view), r.failed_rows)
    });
    row("/console, every environment (best of 5)", &|r| {
        ms(r.all_view)
    });
    println!("  simulated install time per box: {SIM_INSTALL:?}");
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("rollout") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        if let Some(at) = args.iter().position(|a| a == "--portals") {
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1).cloned())
            };
            let boxes: usize = args[..at]
                .first()
                .map_or(Ok(200), |a| a.parse())
                .context("BOXES")?;
            let portals: usize = flag("--portals")
                .context("--portals N")?
                .parse()
                .context("--portals")?;
            let limit = raise_open_files()?;
            eprintln!("open files: up to {limit}");
            return rollout_bench_portals(boxes, portals.max(1), flag("--database"));
        }
        let mut sizes: Vec<usize> = std::env::args()
            .skip(2)
            .map(|a| a.parse().context("BOXES"))
            .collect::<Result<_>>()?;
        if sizes.is_empty() {
            sizes.push(200);
        }
        let limit = raise_open_files()?;
        eprintln!("open files: up to {limit}");
        let mut runs = Vec::new();
        for boxes in sizes {
            eprintln!("rollout to {boxes} simulated boxes");
            runs.push(rollout_bench(boxes)?);
        }
        print_rollouts(&runs);
        for r in &runs {
            if r.installs + r.failed != r.boxes {
                bail!(
                    "FAILED: of {} simulated boxes, {} installed and {} failed: the others never reported",
                    r.boxes,
                    r.installs,
                    r.failed
                );
            }
        }
        return Ok(());
    }
    // `--identity-cached`: every home starts with the launcher's digest of
    // the box executable in its cache, as a home that ran once has it, so
    // the first run pays no hashing (against a run without, the cost).
    let identity_cached = std::env::args().any(|a| a == "--identity-cached");
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| a != "--identity-cached");
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
    if identity_cached {
        let cache = identity_cache(&box_bin())?;
        for b in fleet.boxes() {
            let state = b.path().join("state");
            std::fs::create_dir_all(&state)?;
            std::fs::write(state.join("launcher-identity.json"), &cache)?;
        }
    }

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
        format!(
            "first run: all installed v1{}",
            if identity_cached {
                " (launcher digest cached)"
            } else {
                ""
            }
        ),
        format!("{:.2} s", took.as_secs_f64()),
    ));
    let hashed: Vec<u64> = fleet
        .boxes()
        .iter()
        .flat_map(|b| hash_ms(&b.log()))
        .collect();
    rows.push((
        "  launchers that hashed their executable, ms total / max".into(),
        format!(
            "{} boxes, {} ms / {} ms ({:.1} MB executable)",
            hashed.len(),
            hashed.iter().sum::<u64>(),
            hashed.iter().max().copied().unwrap_or(0),
            std::fs::metadata(box_bin())?.len() as f64 / 1e6
        ),
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

/// `fleet-bench rollout BOXES --portals N [--database URL]`: the rollout
/// of [`rollout_bench`] with N portal processes on one PostgreSQL database
/// (URL, else a server of its own from Debian's package,
/// `banalytics_tests::postgres`) and one data folder, the boxes spread
/// over them in turn, the rollout started through the first. Prints the
/// time of each wave, the statuses recorded per second, and each portal's
/// peak RSS.
fn rollout_bench_portals(boxes: usize, portals: usize, database: Option<String>) -> Result<()> {
    ensure_portal()?;
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
                fail: false,
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
        if t.elapsed() > CONNECT_WITHIN {
            bail!(
                "FAILED: only {n} of {boxes} simulated boxes connected within {CONNECT_WITHIN:?}"
            );
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
    if installs != boxes {
        bail!("FAILED: {installs} of {boxes} simulated boxes installed the set");
    }
    Ok(())
}
