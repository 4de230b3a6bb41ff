//! Upgrade benchmark, one machine, the same files on a loopback
//! `banalytics-portal` process: synchronising a 1 GiB target (8 × 128 MiB)
//! with the real `banalytics-box` against `curl` fetching the same files
//! (4 at a time, like the box's default `max_parallel_downloads`) and
//! against `curl` then `sha256sum`; the box's peak RSS meanwhile (`VmHWM`);
//! a re-synchronisation with nothing changed; and staging a 2 GiB set whose
//! modules are all installed already (plus one small new module).
//!
//! `cargo run --release -p banalytics-tests --bin upgrade-bench -- [MODULE_MIB] [MODULES]`
//!
//! Artifacts are generated in a temporary folder; when the disk holds less
//! than the run needs, the module size is halved until it fits, and the
//! table says so.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::e2e::{
    ensure_binaries, peak_rss_kib, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess,
};

const MIB: u64 = 1024 * 1024;
const ENV: &str = "be4c0000-0000-4000-8000-000000000001";
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

/// Copies of the set's bytes the run holds at once at most: the repository
/// (two sets), the box's cache, its active and staged sets (each up to two
/// sets when hard links are not possible), and curl's copy.
const DISK_FACTOR: u64 = 10;

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

fn repo_bytes(portal: &PortalProcess) -> Result<u64> {
    Ok(portal
        .stats_report()?
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/repo/"))
        .map(|(_, s)| s.bytes)
        .sum())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / d.as_secs_f64())
}

/// What one synchronisation looked like from outside.
struct SyncRun {
    /// From the trigger to `staged` (or `up-to-date`) seen in `status`.
    wall: Duration,
    /// `finished_ms - started_ms` of the box's own report, when the box was
    /// still up to be asked.
    reported: Option<Duration>,
    /// Time in the `staging` state, as far as polling saw it.
    staging: Duration,
    /// `VmHWM` of the box process at the end, KiB.
    peak_rss_kib: u64,
    state: String,
}

/// Polls the box until the synchronisation started at or after `asked_ms`
/// ends; samples `VmHWM` meanwhile.
fn follow(b: &mut ManagedBox, asked_ms: u64, t: Instant) -> Result<SyncRun> {
    let mut peak = 0;
    let mut staging_from: Option<Instant> = None;
    let mut staging = Duration::ZERO;
    let mut last_print = Instant::now();
    loop {
        if let Some(pid) = b.pid() {
            peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        }
        if let Some(sync) = b.sync_report() {
            let state = sync["state"].as_str().unwrap_or_default().to_owned();
            let started = sync["started_ms"].as_u64().unwrap_or(0);
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
            if started + 1000 >= asked_ms {
                if let Some(finished) = sync["finished_ms"].as_u64() {
                    if let Some(from) = staging_from {
                        staging = from.elapsed();
                    }
                    if !["staged", "up-to-date"].contains(&state.as_str()) {
                        bail!("synchronisation ended {state}: {sync}");
                    }
                    return Ok(SyncRun {
                        wall: t.elapsed(),
                        reported: Some(Duration::from_millis(finished.saturating_sub(started))),
                        staging,
                        peak_rss_kib: peak,
                        state,
                    });
                }
            }
        }
        if b.supervise()? {
            // Staged and already restarting to apply it: the end was missed
            // by less than one poll.
            let wall = t.elapsed();
            return Ok(SyncRun {
                wall,
                reported: None,
                staging: staging_from.map_or(Duration::ZERO, |f| f.elapsed()),
                peak_rss_kib: peak,
                state: "staged".into(),
            });
        }
        if t.elapsed() > PHASE_TIMEOUT {
            bail!("no end of the synchronisation: {}", b.log_tail(10));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Supervises the box until the portal hears `installed` after status
/// number `after`; the time from the call.
fn until_installed(portal: &PortalProcess, b: &mut ManagedBox, after: usize) -> Result<Duration> {
    let t = Instant::now();
    b.run_until(PHASE_TIMEOUT, "installed", |_| {
        portal
            .statuses(ENV)
            .ok()
            .filter(|l| l.iter().skip(after).any(|l| l.status == "installed"))
    })?;
    Ok(t.elapsed())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sync_now(portal: &PortalProcess) -> Result<u64> {
    portal.wait_connected(ENV, Duration::from_secs(30))?;
    let asked = now_ms();
    if portal.sync_env(ENV)? != 1 {
        bail!("the box is not connected");
    }
    Ok(asked)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut module_mib: u64 = args
        .next()
        .map_or(Ok(128), |a| a.parse())
        .context("MODULE_MIB")?;
    let modules: usize = args
        .next()
        .map_or(Ok(8), |a| a.parse())
        .context("MODULES")?;
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
    let portal = PortalProcess::start(&dir.path().join("portal"), None, &[])?;
    let a = set("a", modules, size);
    portal.publish_all(&files, &a)?;
    // The repository keeps its own copy: the sources are not needed.
    std::fs::remove_dir_all(&files)?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let label = format!("{} MiB ({modules} × {module_mib} MiB)", set_bytes / MIB);

    // curl, 4 at a time, then sha256sum.
    let curl_dir = dir.path().join("curl");
    std::fs::create_dir_all(&curl_dir)?;
    if Command::new("curl").arg("--version").output().is_ok() {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--fail", "--parallel", "--parallel-max", "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for m in &a {
            cmd.arg("-o").arg(curl_dir.join(m.file_name())).arg(format!(
                "{}{}",
                portal.repo_url(),
                &m.repo_path()[5..]
            ));
        }
        eprintln!("curl: {label}");
        let t = Instant::now();
        let status = cmd.status().context("running curl")?;
        let curl = t.elapsed();
        if !status.success() {
            bail!("curl failed: {status}");
        }
        let t = Instant::now();
        let out = Command::new("sha256sum")
            .args(a.iter().map(|m| curl_dir.join(m.file_name())))
            .output()
            .context("running sha256sum")?;
        let sum = t.elapsed();
        if !out.status.success() {
            bail!("sha256sum failed");
        }
        rows.push((
            format!("curl --parallel-max 4: {label}"),
            secs(curl),
            rate(set_bytes, curl),
        ));
        rows.push((
            "curl, then sha256sum of the files".into(),
            secs(curl + sum),
            rate(set_bytes, curl + sum),
        ));
        std::fs::remove_dir_all(&curl_dir)?;
    } else {
        notes.push("curl is not installed: the curl rows are skipped".into());
    }

    // The box: first run synchronises the set.
    portal.assign_set(ENV, &coords(&a))?;
    let mut settings = BoxSettings::new(&portal, Some(ENV));
    settings.log_level = "warn".into();
    let mut b = ManagedBox::new(&settings)?;
    eprintln!("box: first run, {label}");
    portal.reset_counters()?;
    let t = Instant::now();
    let asked = now_ms();
    b.spawn()?;
    let run = follow(&mut b, asked, t)?;
    let served = repo_bytes(&portal)?;
    rows.push((
        format!("banalytics-box: synchronise {label} to staged"),
        secs(run.wall),
        rate(set_bytes, run.wall),
    ));
    rows.push((
        "  of which the box's own report (request to staged)".into(),
        run.reported
            .map_or_else(|| "n/a (restarted first)".into(), secs),
        format!("staging seen for {}", secs(run.staging)),
    ));
    rows.push((
        "  box peak RSS (VmHWM) during it".into(),
        format!("{:.1} MiB", run.peak_rss_kib as f64 / 1024.0),
        String::new(),
    ));
    rows.push((
        "  repository bytes served".into(),
        format!("{served}"),
        format!("set {set_bytes}"),
    ));
    let apply = until_installed(&portal, &mut b, 0)?;
    rows.push((
        "  then exit 75, apply, grace 0.5 s, commit, installed".into(),
        secs(apply),
        String::new(),
    ));

    // Nothing changed.
    eprintln!("box: re-synchronise with nothing changed");
    portal.reset_counters()?;
    let t = Instant::now();
    let asked = sync_now(&portal)?;
    let run = follow(&mut b, asked, t)?;
    rows.push((
        format!("re-synchronise, nothing changed ({})", run.state),
        secs(run.wall),
        format!("{} bytes fetched", repo_bytes(&portal)?),
    ));

    // A 2 GiB set, then staging it unchanged plus one small module.
    let extra = set("b", modules, size);
    eprintln!("box: grow to {} MiB", 2 * set_bytes / MIB);
    portal.publish_all(&files, &extra)?;
    std::fs::remove_dir_all(&files)?;
    let mut both = a.clone();
    both.extend(extra.iter().cloned());
    portal.assign_set(ENV, &coords(&both))?;
    let seen = portal.statuses(ENV)?.len();
    let t = Instant::now();
    let asked = sync_now(&portal)?;
    let run = follow(&mut b, asked, t)?;
    let apply = until_installed(&portal, &mut b, seen)?;
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
    portal.assign_set(ENV, &coords(&plus))?;
    let seen = portal.statuses(ENV)?.len();
    portal.reset_counters()?;
    eprintln!(
        "box: stage the unchanged {} MiB set plus one small module",
        2 * set_bytes / MIB
    );
    let t = Instant::now();
    let asked = sync_now(&portal)?;
    let run = follow(&mut b, asked, t)?;
    let fetched = repo_bytes(&portal)?;
    let apply = until_installed(&portal, &mut b, seen)?;
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

    println!("\nupgrade-bench: one machine, loopback banalytics-portal, same files");
    for (what, time, more) in rows {
        println!("{what:<58} {time:>10}  {more}");
    }
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}
