//! Launcher benchmark: the time the exec hop to a core of the module set
//! adds to a start. Prints numbers, asserts nothing.
//!
//! `cargo run --release -p banalytics-runtime --example launcher_bench [N]`
//!
//! Builds `banalytics-box` with the same profile into the same target
//! folder and starts it N times (20 by default) in each of two homes, in
//! alternating turns, until the host logs `host running` (its components
//! started), then stops it with SIGTERM:
//! 1. direct: no core in the active set, so the started executable is the
//!    core;
//! 2. hop: the active set holds a core module, the same executable with
//!    bytes appended (another SHA-256, so another core), which the started
//!    executable, the launcher, runs as its child with the handshake.
//!
//! Both starts do the same preparation (nothing staged, nothing on
//! probation) and start the same components. The difference of the medians
//! is what the hop adds: `core_to_run`, the fork and exec, the child's
//! loading and its early configuration read. The launcher's own `hop_us`
//! (the spawn call) and `ready_ms` (spawn to the readiness line) are
//! printed beside it.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

#[path = "support/build.rs"]
mod build;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use banalytics_home::{coords::CORE_EXECUTABLE_NAME, record::sha256_file};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[log]
level = "info"
format = "json"

[components.probe]
kind = "probe"
"#;

/// The version the hop home's core module has.
const CORE: (&str, &str) = (
    "com.banalytics.box\\:core\\:2.0",
    "com.banalytics.box:core:2.0",
);

fn build_box() -> PathBuf {
    build::cargo_build(&["-p", "banalytics-runtime", "--bin", CORE_EXECUTABLE_NAME])
        .join(CORE_EXECUTABLE_NAME)
}

fn home(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(home.join("config/box.toml"), CONFIG).unwrap();
    home
}

/// Installs `bin` with bytes appended as the core module of `home`'s
/// active set, with its record (so that the launcher does not hash it).
fn install_core(home: &Path, bin: &Path) {
    let modules = home.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let core = modules.join(CORE_EXECUTABLE_NAME);
    let mut bytes = std::fs::read(bin).unwrap();
    bytes.extend_from_slice(b"\nbanalytics core 2.0\n");
    std::fs::write(&core, &bytes).unwrap();
    std::fs::set_permissions(&core, std::fs::Permissions::from_mode(0o755)).unwrap();
    let record = json!({"format": 1, "modules": {CORE.1: {
        "main": {"name": CORE_EXECUTABLE_NAME, "sha256": sha256_file(&core).unwrap(), "size": bytes.len()},
        "dependencies": null,
        "model": null,
    }}});
    std::fs::write(
        modules.join("modules-hashes.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    std::fs::write(
        modules.join("modules-info.properties"),
        format!("{}=core\\:1700000000\n", CORE.0),
    )
    .unwrap();
}

/// One start of `bin run` on `home`: the time from spawning it to the
/// host's `host running` line, and the launcher's `hop_us` and `ready_ms`
/// when it logged them.
struct Start {
    ready: Duration,
    hop_us: Option<f64>,
    ready_ms: Option<f64>,
    origin_module_set: bool,
}

fn start(bin: &Path, home: &Path) -> Start {
    let began = Instant::now();
    let mut child = Command::new(bin)
        .arg("--home")
        .arg(home)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting banalytics-box");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut ready, mut hop_us, mut ready_ms, mut origin_module_set) = (None, None, None, false);
    for line in lines.by_ref() {
        let line = line.expect("stderr");
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        // The JSON log format puts the fields beside the message.
        let fields = &event;
        hop_us = hop_us.or(fields["hop_us"].as_f64());
        if fields["message"] == "core" {
            origin_module_set = fields["origin"].as_str() == Some("ModuleSet");
        }
        if fields["message"] == "host running" {
            ready = Some(began.elapsed());
            break;
        }
    }
    let ready = ready.expect("the host never logged `host running`");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for line in lines.map_while(Result::ok) {
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            ready_ms = ready_ms.or(event["ready_ms"].as_f64());
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "banalytics-box run ended with {status}");
    Start {
        ready,
        hop_us,
        ready_ms,
        origin_module_set,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let bin = build_box();
    let dir = tempfile::tempdir().expect("temp dir");
    let direct = home(dir.path(), "direct");
    let hop = home(dir.path(), "hop");
    install_core(&hop, &bin);
    // One start each first: the launcher caches its digest, the page cache
    // holds both executables.
    start(&bin, &direct);
    let first = start(&bin, &hop);
    assert!(
        first.origin_module_set,
        "the hop home's start did not run the set's core"
    );

    let (mut d, mut h, mut hop_us, mut ready_ms, mut diff) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let a = start(&bin, &direct);
        let b = start(&bin, &hop);
        let (a_ms, b_ms) = (a.ready.as_secs_f64() * 1e3, b.ready.as_secs_f64() * 1e3);
        d.push(a_ms);
        h.push(b_ms);
        diff.push(b_ms - a_ms);
        hop_us.extend(b.hop_us);
        ready_ms.extend(b.ready_ms);
    }
    println!("starts to `host running`, {n} each, alternating (medians):");
    println!(
        "  direct (the started executable is the core): {:.2} ms",
        median(d.clone())
    );
    println!(
        "  hop (the launcher runs the set's core):      {:.2} ms",
        median(h.clone())
    );
    println!(
        "exec hop adds: {:.2} ms (median of the paired differences; difference of the medians {:.2} ms; goal <= 5 ms)",
        median(diff),
        median(h) - median(d)
    );
    println!(
        "launcher's own numbers: spawn (hop_us) {:.0} us, spawn to readiness line (ready_ms) {:.0} ms",
        median(hop_us),
        median(ready_ms)
    );
}
