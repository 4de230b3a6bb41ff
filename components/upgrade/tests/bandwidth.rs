//! The download gate against the loopback repository: one bandwidth cap
//! for parallel downloads together, and a download window that pauses a
//! transfer and resumes it keeping its bytes.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod repo;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use banalytics_upgrade_center::{
    fetch::{self, download, rate::Gate, Expected, FetchConfig},
    ManualClock, SystemClock, Window, WindowConfig,
};
use jiff::Timestamp;
use repo::{body, sha256_of, Repo};

const MIB: usize = 1024 * 1024;

fn config(gate: Gate) -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        min_throughput_bytes_per_s: 0,
        max_attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        gate,
        ..FetchConfig::default()
    }
}

fn expected(data: &[u8]) -> Expected {
    Expected {
        sha256: Some(sha256_of(data)),
        size: Some(data.len() as u64),
        ..Expected::default()
    }
}

/// 20 MiB in two parallel downloads of 10 MiB under one cap of 4 MiB/s:
/// the rate over the whole transfer is at most 10 % over the cap (the
/// limiter's burst is a tenth of a second, so about 2 % is the most it can
/// be over) and, on a loaded machine, not far under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_for_parallel_downloads_together_over_20_mib() {
    let cap = banalytics_upgrade_center::parse_rate("4 MiB/s").unwrap();
    let gate = Gate::new(Some(cap), None, Arc::new(SystemClock));
    let server = Repo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..2u8)
        .map(|i| {
            (
                format!("com/example/m{i}/1.0/m{i}-1.0.jar"),
                body(10 * MIB, i),
            )
        })
        .collect();
    for (path, data) in &files {
        server.put(path, data.clone(), false);
    }
    let cfg = config(gate);
    let client = fetch::client(&cfg).unwrap();
    let start = Instant::now();
    let downloads = files.iter().enumerate().map(|(i, (path, data))| {
        let (client, cfg, url) = (client.clone(), cfg.clone(), server.url_of(path));
        let partial = dir.path().join(format!("m{i}.partial"));
        let expected = expected(data);
        tokio::spawn(
            async move { download(&client, &url, &partial, &expected, &cfg, &|_, _| {}).await },
        )
    });
    let done = futures_util::future::join_all(downloads).await;
    let elapsed = start.elapsed();
    for d in done {
        d.unwrap().expect("download");
    }
    let bytes = (20 * MIB) as f64;
    let rate = bytes / elapsed.as_secs_f64();
    let cap = f64::from(cap.get());
    println!(
        "20 MiB in {elapsed:?}: {:.3} MiB/s under a cap of {:.3} MiB/s ({:+.1} %)",
        rate / MIB as f64,
        cap / MIB as f64,
        (rate / cap - 1.0) * 100.0
    );
    assert!(
        rate <= cap * 1.10,
        "cap exceeded: {rate} B/s > {cap} B/s + 10 %"
    );
    assert!(rate >= cap * 0.5, "far under the cap: {rate} B/s");
    assert_eq!(
        server.max_parallel(),
        2,
        "the downloads did not run in parallel"
    );
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// What a paused and resumed transfer did.
struct Resumed {
    /// Bytes on disk while the window was closed.
    paused_at: u64,
    /// The artifact's GET requests, in order.
    gets: Vec<repo::Recorded>,
    /// Body bytes the client received in all.
    received: u64,
    /// Body bytes the server wrote in all.
    written: u64,
}

const PAUSED_LEN: usize = 4 * MIB;

/// Downloads 4 MiB at 2 MiB/s in a download window that closes once a
/// quarter is on disk and opens again a day later; checks that nothing is
/// read while it is closed and that the file ends complete and verified.
async fn pause_and_resume(change: impl FnOnce(&mut repo::Behaviour)) -> Resumed {
    let clock = ManualClock::new(at("2026-06-10T01:00:00Z"));
    let window = Window::parse(&WindowConfig {
        schedule: "0 1 * * *".into(),
        duration: "4h".into(),
        timezone: "UTC".into(),
    })
    .unwrap();
    let cap = banalytics_upgrade_center::parse_rate("2 MiB/s").unwrap();
    let gate = Gate::new(Some(cap), Some(window), Arc::new(clock.clone()));
    let len = PAUSED_LEN;
    let data = body(len, 9);
    let path = "com/example/big/1.0/big-1.0.jar";
    let server = Repo::start().await;
    server.put(path, data.clone(), false);
    server.set(path, change);
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("big.partial");
    let cfg = config(gate);
    let client = fetch::client(&cfg).unwrap();

    let on_disk = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let task = {
        let (url, expected, partial) = (server.url_of(path), expected(&data), partial.clone());
        let (on_disk, closed, clock) = (on_disk.clone(), closed.clone(), clock.clone());
        tokio::spawn(async move {
            let progress = move |bytes: u64, _: Option<u64>| {
                on_disk.store(bytes, Ordering::SeqCst);
                // The window closes once a quarter is in.
                if bytes >= (len / 4) as u64 && !closed.swap(true, Ordering::SeqCst) {
                    clock.set(at("2026-06-10T05:00:00Z"));
                }
            };
            download(&client, &url, &partial, &expected, &cfg, &progress).await
        })
    };
    // Closed: the transfer stops and stays put, its bytes on disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !closed.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the window never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = on_disk.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        on_disk.load(Ordering::SeqCst),
        paused_at,
        "bytes read while the window was closed"
    );
    assert!(
        paused_at < len as u64,
        "the transfer ended before the window closed"
    );
    assert!(!task.is_finished());
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        paused_at,
        "the partial keeps the bytes"
    );
    // The next window.
    clock.set(at("2026-06-11T01:00:00Z"));
    let done = task.await.unwrap().expect("download");
    assert_eq!(std::fs::read(&partial).unwrap(), data);
    let gets = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(".jar"))
        .collect();
    let resumed = Resumed {
        paused_at,
        gets,
        received: done.bytes_transferred,
        written: server.artifact_bytes(),
    };
    println!(
        "paused at {} of {len} bytes; the client received {} bytes in all, the server wrote {} in {} GETs",
        resumed.paused_at,
        resumed.received,
        resumed.written,
        resumed.gets.len()
    );
    resumed
}

/// A transfer still running when its download window closes pauses (no
/// byte read while closed) and goes on in the next window, its
/// connection kept: the server sends no byte twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_download_window_pauses_the_transfer_and_the_next_one_resumes_it() {
    let r = pause_and_resume(|_| {}).await;
    assert_eq!(r.gets.len(), 1, "{:?}", r.gets);
    let len = PAUSED_LEN as u64;
    assert_eq!(r.received, len, "bytes received again");
    assert_eq!(r.written, len, "bytes sent again");
}

/// The server drops the connection while the window is closed: the
/// transfer resumes with a Range request from the bytes on disk, and at
/// most 1 % of the file comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_connection_died_during_the_pause_resumes_with_a_range() {
    let len = PAUSED_LEN as u64;
    let r = pause_and_resume(|b| {
        b.truncate_next = 1;
        b.truncate_at = PAUSED_LEN / 2;
    })
    .await;
    assert_eq!(r.gets.len(), 2, "{:?}", r.gets);
    assert!(r.paused_at <= len / 2);
    assert_eq!(
        r.gets[1].range.as_deref(),
        Some(format!("bytes={}-", len / 2).as_str())
    );
    assert_eq!(r.gets[1].status, 206);
    let resent = r.written.saturating_sub(len);
    assert!(
        resent * 100 <= len,
        "{resent} bytes sent again, more than 1 % of {len}"
    );
    assert_eq!(r.received, len);
}
