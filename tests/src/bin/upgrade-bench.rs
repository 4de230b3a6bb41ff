//! Upgrade benchmark, one machine, the same files on a loopback
//! `banalytics-portal` process: synchronising a 1 GiB target (8 × 128 MiB)
//! with the real `banalytics-box` against `curl` fetching the same files
//! (4 at a time, like the box's default `max_parallel_downloads`), alone,
//! then `sync` of its files (the box fsyncs what it stages), then
//! `sha256sum`; the box's peak RSS meanwhile (`VmHWM`); two
//! re-synchronisations with nothing changed (the installed files' digests
//! come from the cache the staging filled); and staging a 2 GiB set whose
//! modules are all installed already (plus one small new module).
//!
//! `cargo run --release -p banalytics-tests --bin upgrade-bench -- [MODULE_MIB] [MODULES] [--rounds N]`
//!
//! The box and curl take turns, box first, `--rounds` turns each (a fresh
//! box home each turn); the table shows medians, each turn's time, and the
//! box's time over each curl variant's. The portal hashes every file when
//! it is published, so neither side pays for an `ETag`; the table shows how
//! many files it hashed on request (0 when that holds).
//!
//! Artifacts are generated in a temporary folder; when the disk holds less
//! than the run needs, the module size is halved until it fits, and the
//! table says so.
//!
//! `-- --core-a A --core-b B` measures a core upgrade instead: two builds
//! of the shipped executable (`packaging/dist.sh`, the second with another
//! `BANALYTICS_CORE_VERSION`), published as cores 1.0 and 2.0; a box on
//! 1.0 upgrades to 2.0 once from a portal that publishes no patches and
//! once from one that does, and the table shows the sizes, the patch, the
//! bytes fetched, the times and the core's peak RSS.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    e2e::{
        ensure_binaries, peak_rss_kib, served_files, BoxSettings, ManagedBox, ModuleSpec,
        PortalApi, PortalProcess,
    },
    now_ms,
    portal::{tuf, ModuleObject},
};
use clap::Parser;

const MIB: u64 = 1024 * 1024;
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

/// How often the box's staging marker and peak RSS are read: cheap reads,
/// so the end of a synchronisation is seen within this.
const MARKER_POLL: Duration = Duration::from_millis(10);

/// How often the box is asked for its status during a turn measured
/// against curl: each ask is a `banalytics-box status` process and an
/// answer from the host, CPU taken from the box being measured, so not
/// every poll. The end of a turn is its marker on disk, seen within
/// [`MARKER_POLL`].
const STATUS_POLL: Duration = Duration::from_millis(200);

/// How often the box is asked for its status in the other phases, which
/// may end without a marker (nothing to stage).
const STATUS_POLL_FINE: Duration = Duration::from_millis(20);

/// Copies of the set's bytes the run holds at once at most: the repository
/// (two sets), the box's cache, its active and staged sets (each up to two
/// sets when hard links are not possible), and curl's copy. Each turn's
/// files are removed before the next.
const DISK_FACTOR: u64 = 10;

/// Synchronise a set of `MODULES` × `MODULE_MIB` with the real box against
/// curl, then re-synchronise and grow it.
#[derive(Parser)]
struct Args {
    /// Size of each module, MiB (halved until the disk holds the run).
    #[arg(default_value_t = 128)]
    module_mib: u64,
    /// Modules in the set.
    #[arg(default_value_t = 8)]
    modules: usize,
    /// Turns of the box and of curl each, alternating, box first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Sign the repository with TUF (`keys init`) and give every box the
    /// root as `trust_root`; each round also runs a box without it against
    /// the same repository (the two in alternating order), and the run
    /// prints the ratio.
    #[arg(long)]
    trust_root: bool,
    /// Core 1.0 for the core-upgrade measurement (with `--core-b`).
    #[arg(long, requires = "core_b")]
    core_a: Option<PathBuf>,
    /// Core 2.0 for the core-upgrade measurement (with `--core-a`).
    #[arg(long, requires = "core_a")]
    core_b: Option<PathBuf>,
}

/// The environment UUID of the box of round `n`.
fn env_of_round(n: u32) -> String {
    format!("be4c0000-0000-4000-8000-{n:012}")
}

/// The environment UUID of round `n`'s box without `trust_root`
/// (`--trust-root` runs).
fn env_without_trust(n: u32) -> String {
    format!("be4c0000-0000-4000-9000-{n:012}")
}

fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs(3) fills the zeroed struct we own; the path is a C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        bail!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

fn set(prefix: &str, n: usize, size: u64) -> Vec<ModuleSpec> {
    (1..=n)
        .map(|i| ModuleSpec::new(&format!("com.example.bench:{prefix}{i:02}:1.0"), size))
        .collect()
}

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

/// Repository body bytes served and files hashed for an `ETag` since the
/// counters were last reset.
fn served(portal: &PortalProcess) -> Result<(u64, u64)> {
    let stats = portal.stats_report()?;
    let bytes = stats
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/repo/"))
        .map(|(_, s)| s.bytes)
        .sum();
    Ok((bytes, stats.etag_hashes))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / d.as_secs_f64())
}

/// The median; the mean of the middle two of an even count.
fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let n = v.len();
    if n == 0 {
        Duration::ZERO
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Each turn's time, `1.23 1.25 1.31 s`.
fn turns(values: &[Duration]) -> String {
    if values.is_empty() {
        return "turns: none".into();
    }
    let v: Vec<String> = values
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    format!("turns: {} s", v.join(" "))
}

/// What one synchronisation looked like from outside.
struct SyncRun {
    /// From the trigger to the staged set's marker on disk (or to
    /// `up-to-date` seen in `status`).
    wall: Duration,
    /// Time in the `staging` state, as far as polling saw it.
    staging: Duration,
    /// `VmHWM` of the box process at the end, KiB.
    peak_rss_kib: u64,
    state: String,
}

/// The end state of the synchronisation started at or after `asked_ms`,
/// once the box reports it finished.
fn finished(sync: &serde_json::Value, asked_ms: u64) -> Option<String> {
    let started = sync["started_ms"].as_u64()?;
    sync["finished_ms"].as_u64()?;
    // Same machine, same clock: the synchronisation asked for starts after
    // the ask, and one that ended just before is not it.
    (started >= asked_ms).then(|| sync["state"].as_str().unwrap_or_default().to_owned())
}

/// Follows the box until the synchronisation started at or after
/// `asked_ms` ends: a staged set ends when its marker
/// (`modules-upgrade/modules-info.properties`) is on disk, as the box
/// defines a complete staged set; a synchronisation that stages nothing
/// ends when the box reports it, asked every `status_every`. Samples
/// `VmHWM` meanwhile.
fn follow(
    b: &mut ManagedBox,
    asked_ms: u64,
    t: Instant,
    status_every: Duration,
) -> Result<SyncRun> {
    let marker = b.path().join("modules-upgrade/modules-info.properties");
    ensure!(!marker.exists(), "a staged set is there already");
    let mut peak = 0;
    let mut staging_from: Option<Instant> = None;
    let mut asked_status: Option<Instant> = None;
    let mut last_print = Instant::now();
    let end = |staging_from: Option<Instant>| staging_from.map_or(Duration::ZERO, |f| f.elapsed());
    loop {
        if let Some(pid) = b.pid() {
            peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        }
        if marker.exists() {
            let wall = t.elapsed();
            let staging = end(staging_from);
            return Ok(SyncRun {
                wall,
                staging,
                peak_rss_kib: peak,
                state: "staged".into(),
            });
        }
        if asked_status.is_none_or(|a| a.elapsed() >= status_every) {
            asked_status = Some(Instant::now());
            if let Some(sync) = b.sync_report() {
                let state = sync["state"].as_str().unwrap_or_default();
                if state == "staging" && staging_from.is_none() {
                    staging_from = Some(Instant::now());
                }
                if state == "downloading" && last_print.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "    {} / {} MiB",
                        sync["done_bytes"].as_u64().unwrap_or(0) / MIB,
                        sync["total_bytes"].as_u64().unwrap_or(0) / MIB
                    );
                    last_print = Instant::now();
                }
                if let Some(state) = finished(&sync, asked_ms) {
                    if state == "up-to-date" {
                        return Ok(SyncRun {
                            wall: t.elapsed(),
                            staging: end(staging_from),
                            peak_rss_kib: peak,
                            state,
                        });
                    }
                    if state != "staged" {
                        bail!("synchronisation ended {state}: {sync}");
                    }
                }
            }
        }
        if b.supervise()? {
            // It exited 75, so it had staged, and it is restarting to apply
            // the set: the marker was missed by less than one poll.
            return Ok(SyncRun {
                wall: t.elapsed(),
                staging: end(staging_from),
                peak_rss_kib: peak,
                state: "staged".into(),
            });
        }
        if t.elapsed() > PHASE_TIMEOUT {
            bail!("no end of the synchronisation: {}", b.log_tail(10));
        }
        std::thread::sleep(MARKER_POLL);
    }
}

/// Supervises the box until the portal hears `installed` from `env` after
/// status number `after`; the time from the call.
fn until_installed(
    portal: &PortalProcess,
    b: &mut ManagedBox,
    env: &str,
    after: usize,
) -> Result<Duration> {
    let t = Instant::now();
    b.run_until(PHASE_TIMEOUT, "installed", |_| {
        portal
            .statuses(env)
            .ok()
            .filter(|l| l.iter().skip(after).any(|l| l.status == "installed"))
    })?;
    Ok(t.elapsed())
}

fn sync_now(portal: &PortalProcess, env: &str) -> Result<u64> {
    portal.wait_connected(env, Duration::from_secs(30))?;
    let asked = now_ms();
    if portal.sync_env(env)? != 1 {
        bail!("the box is not connected");
    }
    Ok(asked)
}

/// One box turn: a fresh home synchronises the set to staged; the box is
/// stopped after, so nothing of it runs during curl's turn.
fn box_turn(
    portal: &PortalProcess,
    env: &str,
    trust_root: Option<&Path>,
) -> Result<(ManagedBox, SyncRun)> {
    let mut settings = BoxSettings::new(portal, Some(env));
    settings.log_level = "warn".into();
    if trust_root.is_some() {
        settings.upgrade_extra = "trust_root = \"config/repository-root.json\"\n".into();
    }
    let mut b = ManagedBox::new(&settings)?;
    if let Some(root) = trust_root {
        std::fs::copy(root, b.path().join("config/repository-root.json"))?;
    }
    let t = Instant::now();
    let asked = now_ms();
    b.spawn()?;
    let run = follow(&mut b, asked, t, STATUS_POLL)?;
    b.stop()?;
    Ok((b, run))
}

/// One curl turn's times.
struct CurlRun {
    curl: Duration,
    sync: Duration,
    sha256sum: Duration,
}

/// One curl turn: fetch the set into `dir` (4 at a time), `sync` the files
/// and the folder, then `sha256sum` them and check the digests.
fn curl_turn(portal: &PortalProcess, set: &[ModuleObject], dir: &Path) -> Result<CurlRun> {
    std::fs::create_dir_all(dir)?;
    let files: Vec<PathBuf> = set
        .iter()
        .map(|m| dir.join(format!("{}-{}.{}", m.artifact_id, m.version, m.packaging)))
        .collect();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--fail", "--parallel", "--parallel-max", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (m, file) in set.iter().zip(&files) {
        let path = &served_files(m)[0].0;
        cmd.arg("-o")
            .arg(file)
            .arg(format!("{}{}", portal.repo_url(), &path["/repo".len()..]));
    }
    let t = Instant::now();
    let status = cmd.status().context("running curl")?;
    let curl = t.elapsed();
    ensure!(status.success(), "curl failed: {status}");

    let t = Instant::now();
    let status = Command::new("sync")
        .args(&files)
        .arg(dir)
        .status()
        .context("running sync")?;
    let sync = t.elapsed();
    ensure!(status.success(), "sync of the files failed: {status}");

    let t = Instant::now();
    let out = Command::new("sha256sum")
        .args(&files)
        .output()
        .context("running sha256sum")?;
    let sha256sum = t.elapsed();
    ensure!(out.status.success(), "sha256sum failed");
    let sums: BTreeMap<PathBuf, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, path)| (PathBuf::from(path), sum.to_owned()))
        .collect();
    for (m, file) in set.iter().zip(&files) {
        ensure!(
            sums.get(file) == Some(&m.sha256),
            "{}: curl fetched other bytes",
            file.display()
        );
    }
    std::fs::remove_dir_all(dir)?;
    Ok(CurlRun {
        curl,
        sync,
        sha256sum,
    })
}

/// One core upgrade from 1.0 to 2.0, as the box and the portal saw it.
struct CoreRun {
    publish_2: Duration,
    staged: Duration,
    installed: Duration,
    fetched: u64,
    core_peak_rss_kib: u64,
    delta: Option<serde_json::Value>,
}

/// A box on core `a` (1.0) upgrades to core `b` (2.0); the portal makes
/// `patch_versions` patches at publish.
fn core_upgrade(a: &Path, b: &Path, patch_versions: usize, n: u32) -> Result<CoreRun> {
    let dir = tempfile::Builder::new()
        .prefix("upgrade-bench-core-")
        .tempdir()?;
    let versions = patch_versions.to_string();
    let portal = PortalProcess::start(
        &dir.path().join("portal"),
        None,
        &["--patch-versions", &versions],
    )?;
    let publish = |file: &Path, coordinates: &str| -> Result<Duration> {
        let t = Instant::now();
        portal.publish_module(&banalytics_tests::portal::PublishRequest::native(
            coordinates,
            banalytics_tests::portal::ModuleType::Core,
            "bin",
            [(banalytics_tests::PLATFORM.to_owned(), file.to_owned())],
        ))?;
        Ok(t.elapsed())
    };
    publish(a, "com.banalytics.box:core:1.0")?;
    let env = format!("be4c0000-0000-4000-a000-{n:012}");
    portal.assign_set(&env, &["com.banalytics.box:core:1.0".to_owned()])?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.log_level = "warn".into();
    // On approval, so that the staged set's report (what became of the
    // patch) is read before the restart.
    settings.upgrade_extra = "apply = \"approval\"\n".into();
    let mut bx = ManagedBox::new(&settings)?;
    bx.spawn()?;
    staged_report(&mut bx)?;
    approve(&bx)?;
    until_installed(&portal, &mut bx, &env, 0)?;
    let publish_2 = publish(b, "com.banalytics.box:core:2.0")?;
    portal.assign_set(&env, &["com.banalytics.box:core:2.0".to_owned()])?;
    let seen = portal.statuses(&env)?.len();
    portal.reset_counters()?;
    let t = Instant::now();
    let asked = sync_now(&portal, &env)?;
    // The synchronisation runs in core 1.0, the launcher's child.
    let core_pid = bx.status()?["core"]["pid"].as_u64().unwrap_or(0) as u32;
    let run = follow(&mut bx, asked, t, STATUS_POLL_FINE)?;
    let core_peak_rss_kib = peak_rss_kib(core_pid).unwrap_or(run.peak_rss_kib);
    let delta = staged_report(&mut bx)?["deltas"].get(0).cloned();
    let fetched = served(&portal)?.0;
    approve(&bx)?;
    let installed = until_installed(&portal, &mut bx, &env, seen)?;
    let stopped = bx.stop()?;
    ensure!(stopped.success(), "the box exited with {stopped}");
    Ok(CoreRun {
        publish_2,
        staged: run.wall,
        installed,
        fetched,
        core_peak_rss_kib,
        delta,
    })
}

/// The report of the synchronisation that staged a set, once `status`
/// shows it staged.
fn staged_report(bx: &mut ManagedBox) -> Result<serde_json::Value> {
    bx.run_until(PHASE_TIMEOUT, "a staged set", |b| {
        b.sync_report().filter(|s| s["state"] == "staged")
    })
}

fn approve(bx: &ManagedBox) -> Result<()> {
    let out = bx.home().cli(&["approve"])?;
    ensure!(
        out.status.success(),
        "approve: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The core-upgrade measurement (`--core-a`, `--core-b`).
fn core_bench(a: &Path, b: &Path) -> Result<()> {
    ensure_binaries()?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    let (size_a, size_b) = (size(a)?, size(b)?);
    eprintln!("core upgrade without patches");
    let full = core_upgrade(a, b, 0, 1)?;
    eprintln!("core upgrade with patches");
    let patched = core_upgrade(a, b, 3, 2)?;
    let delta = patched.delta.clone().unwrap_or_default();
    ensure!(
        delta["patched"] == true,
        "the second upgrade did not use the patch: {delta}"
    );
    let patch_bytes = delta["patch_bytes"].as_u64().unwrap_or(0);
    let mib = |n: u64| format!("{:.2} MiB", n as f64 / MIB as f64);
    let rows = [
        (
            "shipped core 1.0 (--core-a)".to_owned(),
            mib(size_a),
            format!("{size_a} bytes"),
        ),
        (
            "shipped core 2.0 (--core-b)".to_owned(),
            mib(size_b),
            format!("{size_b} bytes"),
        ),
        (
            "patch 1.0 → 2.0".to_owned(),
            format!("{patch_bytes} B"),
            format!(
                "{:.2} % of the file",
                patch_bytes as f64 * 100.0 / size_b as f64
            ),
        ),
        (
            "  portal: publish 2.0 with the patch".to_owned(),
            secs(patched.publish_2),
            format!("without: {}", secs(full.publish_2)),
        ),
        (
            "  box: apply the patch (read, decode, hash, fsync)".to_owned(),
            format!("{} ms", delta["apply_ms"].as_u64().unwrap_or(0)),
            String::new(),
        ),
        (
            "without patches: repository bytes fetched".to_owned(),
            full.fetched.to_string(),
            String::new(),
        ),
        (
            "  synchronise to staged".to_owned(),
            secs(full.staged),
            String::new(),
        ),
        (
            "  then apply, commit, installed".to_owned(),
            secs(full.installed),
            String::new(),
        ),
        (
            "  core 1.0 peak RSS (VmHWM)".to_owned(),
            mib(full.core_peak_rss_kib * 1024),
            String::new(),
        ),
        (
            "with patches: repository bytes fetched".to_owned(),
            patched.fetched.to_string(),
            String::new(),
        ),
        (
            "  synchronise to staged".to_owned(),
            secs(patched.staged),
            String::new(),
        ),
        (
            "  then apply, commit, installed".to_owned(),
            secs(patched.installed),
            String::new(),
        ),
        (
            "  core 1.0 peak RSS (VmHWM)".to_owned(),
            mib(patched.core_peak_rss_kib * 1024),
            String::new(),
        ),
    ];
    println!("\nupgrade-bench: a core upgrade, one machine, loopback banalytics-portal");
    for (what, value, more) in rows {
        println!("{what:<58} {value:>12}  {more}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(a), Some(b)) = (&args.core_a, &args.core_b) {
        return core_bench(a, b);
    }
    let (modules, rounds) = (args.modules, args.rounds);
    let mut module_mib = args.module_mib;
    ensure_binaries()?;
    let dir = tempfile::Builder::new()
        .prefix("upgrade-bench-")
        .tempdir()?;
    let free = free_bytes(dir.path())?;
    let mut notes = Vec::new();
    let wanted = module_mib;
    while module_mib > 1 && module_mib * MIB * modules as u64 * DISK_FACTOR > free {
        module_mib /= 2;
    }
    if module_mib != wanted {
        notes.push(format!(
            "scaled down: {} MiB free in {} is less than {} × the set; modules of {module_mib} MiB instead of {wanted} MiB",
            free / MIB,
            dir.path().display(),
            DISK_FACTOR
        ));
    }
    let size = module_mib * MIB;
    let set_bytes = size * modules as u64;
    eprintln!(
        "generating {modules} × {module_mib} MiB in {}",
        dir.path().display()
    );
    let files = dir.path().join("files");
    let portal_data = dir.path().join("portal");
    let trust_root = if args.trust_root {
        std::fs::create_dir_all(&portal_data)?;
        let root = tuf::keys_init(&portal_data, &tuf::KeysInit::default())?;
        notes.push("trust_root set: the repository is TUF-signed and every box verifies it".into());
        Some(root)
    } else {
        None
    };
    let portal = PortalProcess::start(&portal_data, None, &[])?;
    let a = set("a", modules, size);
    let published = portal.publish_all(&files, &a)?;
    // The repository keeps its own copy: the sources are not needed.
    std::fs::remove_dir_all(&files)?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let label = format!("{} MiB ({modules} × {module_mib} MiB)", set_bytes / MIB);

    // The box and curl in turns, box first.
    let has_curl = Command::new("curl").arg("--version").output().is_ok();
    if !has_curl {
        notes.push("curl is not installed: the curl rows are skipped".into());
    }
    let curl_dir = dir.path().join("curl");
    let mut boxes = Vec::new();
    let mut curls = Vec::new();
    let mut box_served = Vec::new();
    let mut curl_served = Vec::new();
    let mut hashed_on_request = 0;
    let mut last = None;
    let mut untrusted = Vec::new();
    for round in 1..=rounds {
        let env = env_of_round(round);
        portal.assign_set(&env, &coords(&a))?;
        // The box without trust_root goes first in odd rounds and second
        // in even ones, so that neither always meets a warmer cache.
        let plain_turn = |untrusted: &mut Vec<SyncRun>| -> Result<()> {
            let env = env_without_trust(round);
            portal.assign_set(&env, &coords(&a))?;
            eprintln!("round {round}/{rounds}, box without trust_root: first run, {label}");
            untrusted.push(box_turn(&portal, &env, None)?.1);
            Ok(())
        };
        if trust_root.is_some() && round % 2 == 1 {
            plain_turn(&mut untrusted)?;
        }
        eprintln!("round {round}/{rounds}, box: first run, {label}");
        portal.reset_counters()?;
        let (b, run) = box_turn(&portal, &env, trust_root.as_deref())?;
        let (bytes, hashed) = served(&portal)?;
        box_served.push(bytes);
        hashed_on_request += hashed;
        boxes.push(run);
        if trust_root.is_some() && round % 2 == 0 {
            plain_turn(&mut untrusted)?;
        }
        if round == rounds {
            last = Some((b, env));
        } else {
            drop(b);
        }
        if has_curl {
            eprintln!("round {round}/{rounds}, curl: {label}");
            portal.reset_counters()?;
            curls.push(curl_turn(&portal, &published, &curl_dir)?);
            let (bytes, hashed) = served(&portal)?;
            curl_served.push(bytes);
            hashed_on_request += hashed;
        }
    }
    let (mut b, env) = last.context("no round")?;

    let wall: Vec<Duration> = boxes.iter().map(|r| r.wall).collect();
    let box_median = median(&wall);
    rows.push((
        format!("banalytics-box: synchronise {label} to staged"),
        secs(box_median),
        format!("{}  {}", rate(set_bytes, box_median), turns(&wall)),
    ));
    if !untrusted.is_empty() {
        let plain: Vec<Duration> = untrusted.iter().map(|r| r.wall).collect();
        let per_round: Vec<String> = wall
            .iter()
            .zip(&plain)
            .map(|(t, p)| format!("{:.3}", t.as_secs_f64() / p.as_secs_f64()))
            .collect();
        rows.push((
            "  the same without trust_root".into(),
            secs(median(&plain)),
            format!("{}  {}", rate(set_bytes, median(&plain)), turns(&plain)),
        ));
        rows.push((
            "  with trust_root / without".into(),
            format!(
                "{:.3}×",
                box_median.as_secs_f64() / median(&plain).as_secs_f64()
            ),
            format!("per round: {}", per_round.join(" ")),
        ));
    }
    let staging: Vec<Duration> = boxes.iter().map(|r| r.staging).collect();
    rows.push((
        "  of which staging, as far as status polls saw it".into(),
        secs(median(&staging)),
        turns(&staging),
    ));
    rows.push((
        "  box peak RSS (VmHWM), highest of the turns".into(),
        format!(
            "{:.1} MiB",
            boxes.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
        ),
        String::new(),
    ));
    rows.push((
        "  repository bytes served per turn".into(),
        format!("{:?}", box_served),
        format!("set {set_bytes}"),
    ));
    if has_curl {
        let variants: [(&str, &str, Vec<Duration>); 4] = [
            (
                "curl --parallel-max 4",
                "curl",
                curls.iter().map(|c| c.curl).collect(),
            ),
            (
                "curl, then sync of the files",
                "curl + sync",
                curls.iter().map(|c| c.curl + c.sync).collect(),
            ),
            (
                "curl, then sha256sum of the files",
                "curl + sha256sum",
                curls.iter().map(|c| c.curl + c.sha256sum).collect(),
            ),
            (
                "curl, then sync, then sha256sum",
                "curl + sync + sha256sum",
                curls
                    .iter()
                    .map(|c| c.curl + c.sync + c.sha256sum)
                    .collect(),
            ),
        ];
        for (what, _, times) in &variants {
            let m = median(times);
            rows.push((
                what.to_string(),
                secs(m),
                format!("{}  {}", rate(set_bytes, m), turns(times)),
            ));
        }
        rows.push((
            "  repository bytes served per curl turn".into(),
            format!("{:?}", curl_served),
            format!("set {set_bytes}"),
        ));
        for (_, what, times) in &variants {
            let per_turn: Vec<String> = wall
                .iter()
                .zip(times)
                .map(|(b, c)| format!("{:.2}", b.as_secs_f64() / c.as_secs_f64()))
                .collect();
            rows.push((
                if what.contains('+') {
                    format!("box / ({what})")
                } else {
                    format!("box / {what}")
                },
                format!(
                    "{:.2}×",
                    box_median.as_secs_f64() / median(times).as_secs_f64()
                ),
                format!("per round: {}", per_turn.join(" ")),
            ));
        }
    }
    rows.push((
        "files the portal hashed to answer a request".into(),
        hashed_on_request.to_string(),
        if hashed_on_request == 0 {
            "every ETag was computed at publish".into()
        } else {
            "some turn paid for hashing: the comparison is skewed".into()
        },
    ));

    // The last box applies its staged set.
    b.spawn()?;
    let apply = until_installed(&portal, &mut b, &env, 0)?;
    rows.push((
        "  then start, apply, grace 0.5 s, commit, installed".into(),
        secs(apply),
        String::new(),
    ));

    // Nothing changed, twice: both find the installed files' digests in
    // the cache (the stager noted them), and fetch the TUF timestamp only
    // when the repository is signed.
    for what in ["", " again"] {
        eprintln!("box: re-synchronise with nothing changed{what}");
        portal.reset_counters()?;
        let t = Instant::now();
        let asked = sync_now(&portal, &env)?;
        let run = follow(&mut b, asked, t, STATUS_POLL_FINE)?;
        rows.push((
            format!("re-synchronise{what}, nothing changed ({})", run.state),
            secs(run.wall),
            format!("{} bytes fetched", served(&portal)?.0),
        ));
    }

    // A 2 GiB set, then staging it unchanged plus one small module.
    let extra = set("b", modules, size);
    eprintln!("box: grow to {} MiB", 2 * set_bytes / MIB);
    portal.publish_all(&files, &extra)?;
    std::fs::remove_dir_all(&files)?;
    let mut both = a.clone();
    both.extend(extra.iter().cloned());
    portal.assign_set(&env, &coords(&both))?;
    let seen = portal.statuses(&env)?.len();
    let t = Instant::now();
    let asked = sync_now(&portal, &env)?;
    let run = follow(&mut b, asked, t, STATUS_POLL_FINE)?;
    let apply = until_installed(&portal, &mut b, &env, seen)?;
    rows.push((
        format!(
            "grow to {} MiB: synchronise the new half",
            2 * set_bytes / MIB
        ),
        secs(run.wall),
        format!("staging {}", secs(run.staging)),
    ));
    rows.push(("  then apply and commit".into(), secs(apply), String::new()));

    let small = ModuleSpec::new("com.example.bench:tiny:1.0", 4096);
    portal.publish_all(&files, std::slice::from_ref(&small))?;
    let mut plus = both.clone();
    plus.push(small);
    portal.assign_set(&env, &coords(&plus))?;
    let seen = portal.statuses(&env)?.len();
    portal.reset_counters()?;
    eprintln!(
        "box: stage the unchanged {} MiB set plus one small module",
        2 * set_bytes / MIB
    );
    let t = Instant::now();
    let asked = sync_now(&portal, &env)?;
    let run = follow(&mut b, asked, t, STATUS_POLL_FINE)?;
    let fetched = served(&portal)?.0;
    let apply = until_installed(&portal, &mut b, &env, seen)?;
    rows.push((
        format!(
            "stage an unchanged {} MiB set (+1 small module)",
            2 * set_bytes / MIB
        ),
        secs(run.wall),
        format!("staging {}, {fetched} bytes fetched", secs(run.staging)),
    ));
    rows.push((
        "  then apply and commit".into(),
        secs(apply),
        format!("peak RSS {:.1} MiB", run.peak_rss_kib as f64 / 1024.0),
    ));
    let stopped = b.stop()?;
    drop(portal);
    if !stopped.success() {
        bail!("the box exited with {stopped}");
    }

    println!(
        "\nupgrade-bench: one machine, loopback banalytics-portal, same files; \
         {rounds} turns each of the box and curl, alternating, box first; medians"
    );
    for (what, time, more) in rows {
        println!("{what:<58} {time:>10}  {more}");
    }
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}
