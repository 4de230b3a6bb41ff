//! The demo: a generated box home and the real `banalytics-box run`
//! process, driven through its CLI. Prints what happens and a summary; exits
//! 0 and leaves nothing running.
//!
//! `cargo run --release -p banalytics-tests --bin banalytics-demo`

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{poll_until, TempHome, DEADLINE};

const CONFIG: &str = r#"[log]
level = "info"

[components.heartbeat]
kind = "probe"
restart_on_failure = "immediate"

[components.drill]
kind = "probe"
restart_on_failure = "stop"
fail_while_file = "data/fail-drill"

[components.echo]
kind = "sample-echo"
restart_on_failure = "immediate"
"#;

/// Builds the sample plugin (`components/sample`) with the same profile and
/// returns its library, which the demo puts in the home's `modules/`.
fn ensure_sample_plugin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
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

/// Builds `banalytics-box` beside this binary when it is missing or older,
/// with the same profile, so that one `cargo run` is enough.
fn ensure_box_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let bin = dir.join("banalytics-box");
    let release = dir.ends_with("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-p",
        "banalytics-runtime",
        "--bin",
        "banalytics-box",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build.status().context("building banalytics-box")?;
    if !status.success() || !bin.exists() {
        bail!("could not build {}", bin.display());
    }
    std::env::set_var("BANALYTICS_BOX_BIN", &bin);
    Ok(bin)
}

fn show(home: &TempHome) -> Result<()> {
    let out = home.cli(&["status"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn state(home: &TempHome, name: &str) -> Option<String> {
    home.component(name)
        .ok()
        .and_then(|c| c["state"].as_str().map(str::to_owned))
}

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn main() -> Result<()> {
    let bin = ensure_box_binary()?;
    let plugin = ensure_sample_plugin()?;
    let home = TempHome::new(CONFIG)?;
    let data = home.path().join("data");
    std::fs::create_dir_all(&data)?;
    let modules = home.path().join("modules");
    std::fs::create_dir_all(&modules)?;
    std::fs::copy(&plugin, modules.join("com.example-sample-1.0.so"))?;
    println!(
        "banalytics-box: {}\nhome: {}",
        bin.display(),
        home.path().display()
    );
    let mut phases = Vec::new();

    step(
        1,
        "start the host with the drill component set to fail (restart_on_failure = \"stop\")",
    );
    std::fs::write(data.join("fail-drill"), b"")?;
    let t = Instant::now();
    let host = home.start(1)?;
    poll_until(DEADLINE, "drill in ERROR", || {
        (state(&home, "drill").as_deref() == Some("ERROR")).then_some(())
    })?;
    phases.push(("start, components up", t.elapsed()));
    show(&home)?;

    step(2, "clear the fault and `banalytics-box restart drill`");
    std::fs::remove_file(data.join("fail-drill"))?;
    let t = Instant::now();
    let out = home.cli(&["restart", "drill"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    poll_until(DEADLINE, "drill in RUN", || {
        (state(&home, "drill").as_deref() == Some("RUN")).then_some(())
    })?;
    phases.push(("manual restart to RUN", t.elapsed()));
    show(&home)?;

    step(
        3,
        "the plugin component echo (modules/com.example-sample-1.0.so): a request over the bus, then a panic in its actor",
    );
    let t = Instant::now();
    let ask = |seq: u64, panic: bool| {
        home.exchange(
            "sample.request",
            serde_json::json!({ "seq": seq, "panic": panic }),
            "sample.reply",
            Duration::from_millis(if panic { 300 } else { 5_000 }),
        )
    };
    let reply = ask(1, false)?.map_err(anyhow::Error::msg)?;
    println!("request 1 -> {reply}");
    phases.push(("plugin round trip", t.elapsed()));
    let answer = ask(2, true)?;
    println!("request 2 (panic) -> {answer:?}");
    let reply = ask(3, false)?.map_err(anyhow::Error::msg)?;
    println!("request 3 -> {reply} (a fresh actor: generation 2)");
    if reply["generation"] != 2 {
        bail!("the plugin actor was not restarted: {reply}");
    }
    show(&home)?;

    step(
        4,
        "SIGTERM: components stop in reverse order, exit status 0",
    );
    let t = Instant::now();
    let status = host.signal_and_wait(libc::SIGTERM)?;
    phases.push(("stop", t.elapsed()));
    if !status.success() {
        bail!("host exited with {status}");
    }
    println!("exit status: {}", status.code().unwrap_or(-1));

    step(5, "start again: the same component IDs");
    let before = home.status()?;
    let again = home.start(2)?;
    let after = home.status()?;
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["components"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["id"].to_string())
            .collect()
    };
    if ids(&before) != ids(&after) {
        bail!("IDs changed: {before} vs {after}");
    }
    println!("IDs unchanged: {}", ids(&after).join(", "));
    again.signal_and_wait(libc::SIGTERM)?;

    println!("\n== summary");
    for (phase, took) in phases {
        println!("{phase:<24} {:>8.1} ms", took.as_secs_f64() * 1e3);
    }
    print_log_tail(&home.log_path(1))?;
    Ok(())
}

fn print_log_tail(log: &Path) -> Result<()> {
    let text = std::fs::read_to_string(log)?;
    println!("\nhost log ({}), last lines:", log.display());
    for line in text
        .lines()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!("  {line}");
    }
    Ok(())
}
