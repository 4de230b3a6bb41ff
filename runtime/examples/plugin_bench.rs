//! Plugin benchmark: prints numbers, asserts nothing.
//!
//! `cargo run --release -p banalytics-runtime --example plugin_bench [N]`
//!
//! Builds the sample plugin (`components/sample`) with the same profile into
//! the same target folder, installs it in a temporary box's `modules/` as a
//! component module and runs the host in this process:
//! 1. Load time: the identity record read from the file, `dlopen`, ABI and
//!    identity checks, `init`, per library.
//! 2. Round trips through the plugin boundary: the host bus publishes N
//!    `sample.request`s while a subscriber counts the N `sample.reply`s the
//!    plugin's actor sends back. Each round trip crosses the boundary twice
//!    (request in, reply out), each time serialized to JSON and copied.
//! 3. The same through an isolated component (`isolation = "process"`):
//!    each round trip also crosses the socket pair to the child process
//!    twice, as frames. This program is its own child: like the host, it
//!    runs the hidden `plugin-child` subcommand when started with it.
//! 4. The same with the built-in `probe` (no boundary), for comparison.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

#[path = "support/build.rs"]
mod build;

use std::time::{Duration, Instant};

use banalytics_runtime::{
    config::BoxConfig, host::Host, plugins::LoadOutcome, registry::Registry, Home,
};
use banalytics_sdk::BusMessage;
use serde::{Deserialize, Serialize};

/// The host's view of the sample's messages: same topics, same JSON.
#[derive(Serialize, Deserialize)]
struct SampleRequest {
    seq: u64,
    panic: bool,
}
impl BusMessage for SampleRequest {
    const TOPIC: &'static str = "sample.request";
}

#[derive(Serialize, Deserialize)]
struct SampleReply {
    seq: u64,
    from: String,
    generation: u64,
}
impl BusMessage for SampleReply {
    const TOPIC: &'static str = "sample.reply";
}

const CONFIG: &str = r#"
[log]
level = "warn"

[components.echo]
kind = "sample-echo"
restart_on_failure = "immediate"

[components.probe]
kind = "probe"
"#;

const ISOLATED: &str = r#"
[log]
level = "warn"

[components.echo]
kind = "sample-echo"
restart_on_failure = "immediate"
isolation = "process"
"#;

fn build_sample() -> std::path::PathBuf {
    build::cargo_build(&["-p", "banalytics-sample", "--lib"]).join(format!(
        "{}banalytics_sample.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ))
}

fn main() -> std::process::ExitCode {
    // The isolated component's child is this executable (see the docs).
    if std::env::args().nth(1).as_deref() == Some("plugin-child") {
        return banalytics_runtime::cli::main();
    }
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let library = build_sample();
    let dir = tempfile::tempdir().expect("temp dir");
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    // Installed as the main artifact of a component module: the only files
    // the host loads.
    std::fs::copy(
        &library,
        modules.join(format!(
            "com.example-sample-1.0.{}",
            std::env::consts::DLL_EXTENSION
        )),
    )
    .unwrap();
    std::fs::write(
        modules.join("modules-info.properties"),
        "com.example\\:sample\\:1.0=component\\:1700000000\n",
    )
    .unwrap();

    let started = Instant::now();
    let (registry, report) = Registry::builtin().with_plugins(&modules);
    let total = started.elapsed();
    for (path, outcome) in &report.files {
        match outcome {
            LoadOutcome::Loaded { took, .. } => println!(
                "plugin load time: {:.2} ms ({}, {:.1} MiB)",
                took.as_secs_f64() * 1e3,
                path.file_name().unwrap().to_string_lossy(),
                std::fs::metadata(path).unwrap().len() as f64 / (1 << 20) as f64
            ),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    println!("set listing and load: {:.2} ms", total.as_secs_f64() * 1e3);

    let home = Home::new(dir.path());
    let config = BoxConfig::parse(&dir.path().join("box.toml"), CONFIG, &registry.names()).unwrap();
    let isolated =
        BoxConfig::parse(&dir.path().join("box.toml"), ISOLATED, &registry.names()).unwrap();
    actix_rt::System::new().block_on(async move {
        let host = Host::build(&home, &config, &registry).unwrap();
        host.start_all().await;
        // Warm up, then measure.
        round_trips(&host, 1_000).await;
        let took = round_trips(&host, n).await;
        let rate = n as f64 / took.as_secs_f64();
        println!(
            "plugin round trips: {n} in {:.3} s = {:.0}/s ({:.0} boundary crossings/s, {:.2} µs per round trip)",
            took.as_secs_f64(),
            rate,
            2.0 * rate,
            took.as_secs_f64() * 1e6 / n as f64
        );
        let took = probe_round_trips(&host, n).await;
        println!(
            "built-in probe round trips (no boundary): {n} in {:.3} s = {:.0}/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        host.stop_all().await;

        let host = Host::build(&home, &isolated, &registry).unwrap();
        host.start_all().await;
        round_trips(&host, 1_000).await;
        let took = round_trips(&host, n).await;
        let isolated_rate = n as f64 / took.as_secs_f64();
        println!(
            "isolated plugin round trips (isolation = \"process\"): {n} in {:.3} s = {:.0}/s ({:.2} µs per round trip; in process {:.0}/s)",
            took.as_secs_f64(),
            isolated_rate,
            took.as_secs_f64() * 1e6 / n as f64,
            rate
        );
        host.stop_all().await;
    });
    std::process::ExitCode::SUCCESS
}

async fn round_trips(host: &Host, n: u64) -> Duration {
    let mut replies = host.bus().subscribe::<SampleReply>();
    let bus = host.bus().clone();
    let start = Instant::now();
    let publisher = actix_rt::spawn(async move {
        for seq in 0..n {
            bus.publish(SampleRequest { seq, panic: false }).await;
        }
    });
    for expected in 0..n {
        let reply = replies.recv().await.expect("bus");
        assert_eq!(reply.seq, expected, "in order");
        assert_eq!(reply.generation, 1);
        assert!(!reply.from.is_empty());
    }
    publisher.await.unwrap();
    start.elapsed()
}

async fn probe_round_trips(host: &Host, n: u64) -> Duration {
    use banalytics_probe::{ProbePing, ProbePong};
    let mut pongs = host.bus().subscribe::<ProbePong>();
    let bus = host.bus().clone();
    let start = Instant::now();
    let publisher = actix_rt::spawn(async move {
        for seq in 0..n {
            bus.publish(ProbePing {
                to: "probe".into(),
                seq,
                panic: false,
                block_ms: 0,
            })
            .await;
        }
    });
    for _ in 0..n {
        pongs.recv().await.expect("bus");
    }
    publisher.await.unwrap();
    start.elapsed()
}
