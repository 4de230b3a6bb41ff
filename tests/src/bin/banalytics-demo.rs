//! The demo: the reference portal, a published v1 and v2 of a few modules
//! (with dependency and model packages), a fresh box home and the real
//! `banalytics-box run` process, started again by the demo whenever it
//! exits 75, as a service manager would. The first run installs v1; v2 is
//! assigned and synchronised (download progress, restart, swap, commit,
//! `installed`); then v1 is assigned again, a rollback through the portal.
//! Each set carries the sample plugin (`components/sample`) as a module; the
//! demo adds its component once the first set is installed, and shows the
//! component answering over the bus from the file of the active set.
//! Each set also carries a core (the host executable): v1's core 1.0 is
//! the demo's own `banalytics-box` (the installed executable, the
//! launcher), v2's core 2.0 the same host built again with
//! `BANALYTICS_CORE_VERSION=2.0` (into `target/demo-core-2.0`; the first
//! build takes minutes). After the upgrade `status` reports core 2.0,
//! running as the launcher's child from `modules/`; after the rollback
//! core 1.0, the launcher itself.
//! Ends with what moved, the bytes and the time of each phase; exits 0 and
//! leaves nothing running. It prints the fleet console's URL and the admin
//! token at the start; with `--keep` the portal and the box stay up at the
//! end, so that a person can look at the console, until Ctrl-C.
//!
//! `cargo run --release -p banalytics-tests --bin banalytics-demo [-- --keep]`

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{
    e2e::{
        cargo_command, ensure_binaries, BoxSettings, ManagedBox, ModuleSpec, PortalApi,
        EXIT_RESTART,
    },
    portal::{Faults, ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
    PLATFORM,
};
use serde_json::json;

const ENV: &str = "d3m0d3m0-5eed-4000-8000-00000000cafe";

/// How long one phase may take before the demo gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository's bandwidth during the upgrade, so that the download
/// progress is visible for a couple of seconds.
const DEMO_BANDWIDTH: u64 = 24 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

fn v1() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.banalytics.demo:camera:1.0", 2 * MIB).with_packages(),
        ModuleSpec::new("com.banalytics.demo:motion:1.0", MIB).with_packages(),
        ModuleSpec::new("com.banalytics.demo:recorder:1.0", MIB / 2),
    ]
}

/// camera unchanged, motion changed, recorder removed, faces added.
fn v2() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.banalytics.demo:camera:1.0", 2 * MIB).with_packages(),
        ModuleSpec::new("com.banalytics.demo:motion:2.0", 24 * MIB).with_packages(),
        ModuleSpec::new("com.banalytics.demo:faces:1.0", 16 * MIB).with_packages(),
    ]
}

/// The sample plugin's module in v1 and v2 (the same library, published
/// twice: what matters is which file of `modules/` the component runs from).
const ECHO_V1: &str = "com.banalytics.demo:echo:1.0";
const ECHO_V2: &str = "com.banalytics.demo:echo:2.0";

/// The component the operator adds once the plugin's module is installed
/// (a kind no installed module exports is refused at start).
const ECHO_COMPONENT: &str = r#"
[components.echo]
kind = "sample-echo"
restart_on_failure = "immediate"
"#;

/// The cores of v1 and v2: the installed executable itself, and the same
/// host built with another version string.
const CORE_V1: &str = "com.banalytics.box:core:1.0";
const CORE_V2: &str = "com.banalytics.box:core:2.0";

/// Where core 2.0 is built, under the workspace's `target/`: a target
/// folder of its own, so that its build and the demo's do not invalidate
/// each other (the version string is a build input of the runtime crate).
const CORE_V2_TARGET: &str = "demo-core-2.0";

fn coords(specs: &[ModuleSpec], echo: &str, core: &str) -> Vec<String> {
    let mut c: Vec<String> = specs.iter().map(|s| s.coordinates.clone()).collect();
    c.push(echo.to_owned());
    c.push(core.to_owned());
    c
}

/// Builds core 2.0: `banalytics-runtime` in release with
/// `BANALYTICS_CORE_VERSION=2.0`, into `target/demo-core-2.0`. Cargo does
/// nothing when it is up to date; the first build compiles every
/// dependency again, which takes minutes on a small machine.
fn ensure_core_v2() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("target dir")?
        .join(CORE_V2_TARGET);
    println!(
        "building core 2.0 (banalytics-box with BANALYTICS_CORE_VERSION=2.0) into {}; the first time takes minutes",
        target.display()
    );
    let status = cargo_command()
        .args([
            "build",
            "--release",
            "-p",
            "banalytics-runtime",
            "--bin",
            "banalytics-box",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env("BANALYTICS_CORE_VERSION", "2.0")
        .status()
        .context("building core 2.0")?;
    let bin = target.join("release/banalytics-box");
    if !status.success() || !bin.exists() {
        bail!("could not build {}", bin.display());
    }
    Ok(bin)
}

/// Publishes the executable `bin` as the core `coordinates` for this
/// platform.
fn publish_core(portal: &PortalHandle, files: &Path, coordinates: &str, bin: &Path) -> Result<()> {
    let file = files.join(coordinates.replace(':', "_"));
    std::fs::create_dir_all(files)?;
    std::fs::copy(bin, &file)?;
    let m = portal.publish_module(&PublishRequest::native(
        coordinates,
        ModuleType::Core,
        "bin",
        [(PLATFORM.to_owned(), file.clone())],
    ))?;
    println!(
        "   {:<36} {:>9}  the host executable, `{}`",
        m.coordinates(),
        mib(std::fs::metadata(&file)?.len()),
        build_version(&file)?
    );
    Ok(())
}

/// What an executable says of its build: `banalytics-box --version`.
fn build_version(bin: &Path) -> Result<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("{} --version", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The core `status` reports, the file its process runs and that file's
/// build version.
fn show_core(b: &ManagedBox) -> Result<String> {
    let status = b.status()?;
    let core = &status["core"];
    let version = core["version"].as_str().unwrap_or("?").to_owned();
    let pid = core["pid"].as_u64().context("the core's pid")?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .with_context(|| format!("the core's process {pid}"))?;
    let how = if Some(pid as u32) == b.pid() {
        "the launcher itself"
    } else {
        "the launcher's child"
    };
    println!(
        "   status: core {version} ({}), pid {pid}, {how}, running {} (`{}`)",
        core["origin"].as_str().unwrap_or("?"),
        exe.display(),
        build_version(&exe)?
    );
    Ok(version)
}

/// Builds the sample plugin (`components/sample`) with this binary's
/// profile and returns its library.
fn ensure_sample_plugin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let mut build = cargo_command();
    build.args(["build", "-p", "banalytics-sample", "--lib"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().context("building the sample plugin")?;
    let lib = dir.join(format!(
        "{}banalytics_sample.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ));
    if !status.success() || !lib.exists() {
        bail!("could not build {}", lib.display());
    }
    Ok(lib)
}

/// The echo component's origin and its answer to one request over the bus.
fn show_echo(b: &ManagedBox, seq: u64) -> Result<()> {
    let echo = poll_until_run(b, "echo")?;
    let reply = b
        .home()
        .exchange(
            "sample.request",
            json!({ "seq": seq, "panic": false }),
            "sample.reply",
            Duration::from_secs(5),
        )?
        .map_err(|why| anyhow::anyhow!("echo did not answer: {why}"))?;
    println!(
        "   echo: {} from {}; request {seq} answered {reply}",
        echo["state"].as_str().unwrap_or("?"),
        echo["origin"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn poll_until_run(b: &ManagedBox, name: &str) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        if let Ok(c) = b.home().component(name) {
            if c["state"] == "RUN" {
                return Ok(c);
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("{name} not in RUN: {}", b.log_tail(10));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// One phase's numbers for the summary.
struct Phase {
    name: &'static str,
    moved: String,
    bytes: u64,
    restarts: usize,
    took: Duration,
}

/// What changed between two installed sets (`g:a:v`), by artifact.
fn moved(before: &[String], after: &[String]) -> String {
    let by_artifact = |set: &[String]| -> BTreeMap<String, String> {
        set.iter()
            .filter_map(|c| {
                let mut p = c.splitn(3, ':');
                let (_, a, v) = (p.next()?, p.next()?, p.next()?);
                Some((a.to_owned(), v.to_owned()))
            })
            .collect()
    };
    let (b, a) = (by_artifact(before), by_artifact(after));
    let mut out = Vec::new();
    for (name, v) in &a {
        match b.get(name) {
            None => out.push(format!("+{name} {v}")),
            Some(old) if old != v => out.push(format!("~{name} {old}->{v}")),
            Some(_) => {}
        }
    }
    for (name, v) in &b {
        if !a.contains_key(name) {
            out.push(format!("-{name} {v}"));
        }
    }
    if out.is_empty() {
        "nothing".into()
    } else {
        out.join(", ")
    }
}

fn repo_bytes(portal: &PortalHandle) -> u64 {
    portal
        .stats()
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/repo/"))
        .map(|(_, s)| s.bytes)
        .sum()
}

/// Runs the box like a service manager until the portal hears `installed`
/// after status number `after`, printing the statuses as they arrive, the
/// synchronisation's steps and its download progress.
fn drive(portal: &PortalHandle, b: &mut ManagedBox, after: usize) -> Result<usize> {
    let start = Instant::now();
    let mut printed = after;
    let mut restarts = 0;
    let mut last_state = String::new();
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    loop {
        if b.supervise()? {
            restarts += 1;
            println!(
                "   box exited {EXIT_RESTART} (a staged set is ready): started again, as a service manager would; `run` applies it"
            );
        }
        let lines = portal.statuses(ENV)?;
        for l in lines.iter().skip(printed) {
            println!("   portal <- {l}");
        }
        printed = printed.max(lines.len());
        if let Some(sync) = b.sync_report() {
            let state = sync["state"].as_str().unwrap_or("?").to_owned();
            let (done, total) = (
                sync["done_bytes"].as_u64().unwrap_or(0),
                sync["total_bytes"].as_u64().unwrap_or(0),
            );
            if state != last_state {
                println!("   box sync: {state}");
                last_state = state.clone();
            }
            if state == "downloading"
                && total > 0
                && last_progress.elapsed() >= Duration::from_millis(300)
            {
                let pct = (done * 100).checked_div(total).unwrap_or(0);
                println!("     {} / {} ({pct}%)", mib(done), mib(total));
                last_progress = Instant::now();
            }
        }
        if lines
            .iter()
            .skip(after)
            .any(|l| l.status == "installed" || l.status == "installation_cancelled")
        {
            if let Some(l) = lines
                .iter()
                .skip(after)
                .find(|l| l.status == "installation_cancelled")
            {
                bail!("the box cancelled the installation: {l}");
            }
            return Ok(restarts);
        }
        if start.elapsed() > PHASE_TIMEOUT {
            bail!(
                "no `installed` within {PHASE_TIMEOUT:?}; box log:\n{}",
                b.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn show_installed(b: &ManagedBox) -> Result<Vec<String>> {
    let status = b.status()?;
    let list = |k: &str| -> Vec<String> {
        status["upgrade"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let installed = list("installed");
    println!("   installed: {}", installed.join(", "));
    let backup = list("backup");
    if !backup.is_empty() {
        println!("   backup:    {}", backup.join(", "));
    }
    println!("   modules/:  {}", b.module_files()?.join(", "));
    Ok(installed)
}

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn main() -> Result<()> {
    let keep = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--keep") => true,
        Some(other) => bail!("unknown argument {other:?}: the demo takes only --keep"),
    };
    let bin = ensure_binaries()?;
    let plugin = ensure_sample_plugin()?;
    let core_v2 = ensure_core_v2()?;
    let dir = tempfile::Builder::new()
        .prefix("banalytics-demo-")
        .tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    println!(
        "banalytics-box: {}\nportal: {} (repository {})",
        bin.display(),
        portal.url(),
        portal.repo_url()
    );
    println!(
        "fleet console: {} (admin token {})",
        portal.console_url(),
        portal.new_admin_token().unwrap_or("?")
    );
    let result = demo(&portal, dir.path(), &plugin, [&bin, &core_v2], keep);
    let (phases, kept) = match result {
        Ok(r) => r,
        Err(e) => {
            portal.shutdown_blocking();
            return Err(e);
        }
    };

    println!("\n== summary");
    println!(
        "{:<30} {:<82} {:>10} {:>8} {:>9}",
        "PHASE", "MOVED", "FETCHED", "RESTARTS", "TIME"
    );
    for p in &phases {
        println!(
            "{:<30} {:<82} {:>10} {:>8} {:>7.2} s",
            p.name,
            p.moved,
            mib(p.bytes),
            p.restarts,
            p.took.as_secs_f64()
        );
    }
    if let Some(mut b) = kept {
        println!(
            "\n--keep: the portal and the box stay up; look at {} (admin token {}); Ctrl-C stops both",
            portal.console_url(),
            portal.new_admin_token().unwrap_or("?")
        );
        wait_for_ctrl_c(&mut b)?;
        // Ctrl-C in a terminal reaches the box too (one process group).
        match b.stop() {
            Ok(status) => println!("   box exit status: {}", status.code().unwrap_or(-1)),
            Err(e) => println!("   box: {e:#}"),
        }
    }
    portal.shutdown_blocking();
    println!("\nthe portal and the box are stopped; nothing is left running");
    Ok(())
}

fn demo(
    portal: &PortalHandle,
    dir: &Path,
    plugin: &Path,
    [core_v1, core_v2]: [&Path; 2],
    keep: bool,
) -> Result<(Vec<Phase>, Option<ManagedBox>)> {
    step(1, "publish v1 and v2 on the reference portal");
    let files = dir.join("files");
    let mut all = v1();
    all.extend(v2().into_iter().skip(1));
    for m in portal.publish_all(&files, &all)? {
        println!(
            "   {:<36} {:>9}  dependencies: {:<3} model: {}",
            m.coordinates(),
            mib(m.size),
            if m.dependencies.is_some() {
                "yes"
            } else {
                "no"
            },
            if m.model.is_some() { "yes" } else { "no" }
        );
    }
    for echo in [ECHO_V1, ECHO_V2] {
        let m = portal.publish(&PublishRequest::plugin(echo, plugin))?;
        println!(
            "   {:<36} {:>9}  the sample plugin ({})",
            m.coordinates(),
            mib(m.main_size()),
            m.packaging
        );
    }
    publish_core(portal, &files, CORE_V1, core_v1)?;
    publish_core(portal, &files, CORE_V2, core_v2)?;
    portal.assign_set(ENV, &coords(&v1(), ECHO_V1, CORE_V1))?;
    println!("   assigned v1 to environment {ENV}");

    // Registers ENV with the portal (`environments add`): only registered
    // boxes connect; the home gets the UUID and the secret.
    let mut settings = BoxSettings::new(portal, Some(ENV));
    settings.log_level = "info".into();
    let mut b = ManagedBox::new(&settings)?;
    let config = settings.box_toml();
    println!("   registered environment {ENV} with the portal (its secret is in the box's config/device-registration.properties)");
    println!("   box home: {}", b.path().display());
    let mut phases = Vec::new();

    step(2, "first run: the box installs v1");
    let t = Instant::now();
    portal.reset_stats();
    b.spawn()?;
    let restarts = drive(portal, &mut b, 0)?;
    let installed_v1 = show_installed(&b)?;
    show_core(&b)?;
    println!("   the operator adds the echo component (kind sample-echo, from the plugin module) and restarts the box");
    let stopped = b.stop()?;
    if !stopped.success() {
        bail!("the box exited with {stopped}");
    }
    std::fs::write(
        b.path().join("config/box.toml"),
        format!("{config}{ECHO_COMPONENT}"),
    )?;
    b.spawn()?;
    show_echo(&b, 1)?;
    phases.push(Phase {
        name: "first run installs v1",
        moved: moved(&[], &installed_v1),
        bytes: repo_bytes(portal),
        restarts,
        took: t.elapsed(),
    });

    step(
        3,
        "assign v2 (camera kept, motion, echo and the core changed, recorder removed, faces added) and EVT_SYNC_SOFT",
    );
    portal.set_faults(Faults {
        bandwidth_bytes_per_s: Some(DEMO_BANDWIDTH),
        ..Faults::default()
    });
    println!(
        "   (repository capped at {}/s so that the progress shows)",
        mib(DEMO_BANDWIDTH)
    );
    let t = Instant::now();
    portal.reset_stats();
    let seen = portal.statuses(ENV)?.len();
    portal.assign_set(ENV, &coords(&v2(), ECHO_V2, CORE_V2))?;
    portal
        .wait_connected(ENV, Duration::from_secs(20))
        .context("the box is not connected to the portal")?;
    println!("   EVT_SYNC_SOFT to {} connection(s)", portal.sync(ENV));
    let restarts = drive(portal, &mut b, seen)?;
    let installed_v2 = show_installed(&b)?;
    let core = show_core(&b)?;
    if core != "2.0" {
        bail!("status reports core {core} after the upgrade, not 2.0");
    }
    show_echo(&b, 2)?;
    phases.push(Phase {
        name: "upgrade to v2",
        moved: moved(&installed_v1, &installed_v2),
        bytes: repo_bytes(portal),
        restarts,
        took: t.elapsed(),
    });
    portal.set_faults(Faults::default());

    step(
        4,
        "rollback through the portal: assign v1 again and EVT_SYNC_SOFT",
    );
    let t = Instant::now();
    portal.reset_stats();
    let seen = portal.statuses(ENV)?.len();
    portal.assign_set(ENV, &coords(&v1(), ECHO_V1, CORE_V1))?;
    portal.wait_connected(ENV, Duration::from_secs(20))?;
    println!("   EVT_SYNC_SOFT to {} connection(s)", portal.sync(ENV));
    let restarts = drive(portal, &mut b, seen)?;
    let installed_back = show_installed(&b)?;
    let core = show_core(&b)?;
    if core != "1.0" {
        bail!("status reports core {core} after the rollback, not 1.0");
    }
    show_echo(&b, 3)?;
    phases.push(Phase {
        name: "rollback to v1 via the portal",
        moved: moved(&installed_v2, &installed_back),
        bytes: repo_bytes(portal),
        restarts,
        took: t.elapsed(),
    });
    if installed_back != installed_v1 {
        bail!("the rollback left {installed_back:?}, not {installed_v1:?}");
    }

    step(5, "`banalytics-box verify`, then SIGTERM");
    let out = b.home().cli(&["verify"])?;
    print!("   {}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("verify failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if keep {
        return Ok((phases, Some(b)));
    }
    let status = b.stop()?;
    println!("   box exit status: {}", status.code().unwrap_or(-1));
    if !status.success() {
        bail!("the box exited with {status}");
    }
    Ok((phases, None))
}

/// Supervises `b` (as a service manager would) until Ctrl-C.
fn wait_for_ctrl_c(b: &mut ManagedBox) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            let _ = rt.block_on(tokio::signal::ctrl_c());
        }
        let _ = tx.send(());
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                b.supervise()?;
            }
            _ => return Ok(()),
        }
    }
}
