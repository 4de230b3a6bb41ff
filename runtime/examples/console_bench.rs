//! What the box's console costs: the idle resident memory of a box with
//! and without `[console]` (the same configuration otherwise, a probe
//! component, no portal), and how long the Software Upgrade Center view
//! takes to render for a set of 20 modules with a staged difference.
//!
//! ```text
//! cargo build -p banalytics-runtime --bin banalytics-box
//! cargo run -p banalytics-runtime --example console_bench
//! ```
//!
//! Goals (issue 23): at most 3 MiB more RSS with the console, and a render
//! under 10 ms.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use banalytics_runtime::console::pages;
use serde_json::json;

/// How long a started box is left alone before its RSS is read.
const SETTLE: Duration = Duration::from_secs(3);

fn box_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/PROFILE/examples/console_bench
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("banalytics-box"))
        .expect("a target folder");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p banalytics-runtime --bin banalytics-box` first",
        bin.display()
    );
    bin
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts a box with `extra` appended to its box.toml and returns its
/// idle RSS in KiB (median of three readings a second apart).
fn idle_rss(extra: &str) -> u64 {
    let dir = tempfile::tempdir().expect("a temporary home");
    let home = dir.path();
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(
        home.join("config/box.toml"),
        format!("[components.probe]\nkind = \"probe\"\n{extra}"),
    )
    .unwrap();
    let mut child = Command::new(box_bin())
        .arg("--home")
        .arg(home)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting banalytics-box");
    let start = Instant::now();
    while !home.join("state/control.sock").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the box did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(SETTLE);
    let mut readings: Vec<u64> = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            rss_kib(child.id())
        })
        .collect();
    readings.sort();
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    readings[1]
}

fn sample_status() -> serde_json::Value {
    let installed: Vec<String> = (0..20)
        .map(|i| format!("com.example.cam:module-{i:02}:1.{i}"))
        .collect();
    let mut staged = installed.clone();
    staged[3] = "com.example.cam:module-03:2.0".into();
    staged.push("com.example.cam:module-new:1.0".into());
    staged.remove(7);
    json!({
        "host": {"running": true},
        "components": [{
            "name": "upgrade-center", "kind": "software-upgrade-center", "state": "RUN",
            "details": {"sync": {"state": "downloading", "trigger": "local", "started_ms": 1_765_000_000_000u64,
                "done_bytes": 12_345_678, "total_bytes": 96_348_848, "requests": []}}
        }],
        "upgrade": {"installed": installed, "staged": staged, "backup": installed,
            "staged_waits_for": "approval: run `banalytics-box approve`"},
        "registration": {"environment_uuid": true, "portal_link": true, "portal": "wss://portal.example/"},
        "core": {"version": "1.4.0", "sha256": "ab".repeat(32), "origin": "module-set"},
        "installed_modules": installed.iter().map(|k| {
            let (m, v) = k.rsplit_once(':').unwrap();
            json!({"module": m, "version": v, "type": "component", "bytes": 4_200_000})
        }).collect::<Vec<_>>(),
        "busy": {"leases": []},
    })
}

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let without = idle_rss("");
    let with = idle_rss(&format!("\n[console]\nlisten = \"127.0.0.1:{port}\"\n"));
    println!("idle RSS without the console: {without} KiB");
    println!("idle RSS with the console:    {with} KiB");
    println!(
        "difference: {:+} KiB (goal: at most 3072 KiB)",
        with as i64 - without as i64
    );

    let data = sample_status();
    let now = SystemTime::now();
    let runs = 1000;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let html = pages::upgrade(&data, now).into_string();
            std::hint::black_box(html);
            start.elapsed()
        })
        .collect();
    times.sort();
    let html = pages::upgrade(&data, now).into_string();
    println!(
        "upgrade page render (20 modules, a staged difference; {} bytes of HTML): median {:.3} ms, p99 {:.3} ms, max {:.3} ms (goal: under 10 ms)",
        html.len(),
        times[runs / 2].as_secs_f64() * 1e3,
        times[runs * 99 / 100].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
    );
}
