//! The host in process: components on their own arbiters talk over the bus,
//! and a component whose actor panics is restarted while the other answers.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::time::Duration;

use banalytics_probe::{ProbePing, ProbePong};
use banalytics_runtime::{config::BoxConfig, host::Host, registry::Registry, Home};
use banalytics_sdk::{State, Subscription};

const CONFIG: &str = r#"
[components.alpha]
kind = "probe"
restart_on_failure = "immediate"

[components.beta]
kind = "probe"
restart_on_failure = "10s"
"#;

async fn next(pongs: &mut Subscription<ProbePong>) -> ProbePong {
    let pong = tokio::time::timeout(Duration::from_secs(10), pongs.recv())
        .await
        .expect("no pong within 10 s")
        .expect("bus gone");
    (*pong).clone()
}

fn ping(to: &str, seq: u64, panic: bool) -> ProbePing {
    ProbePing {
        to: to.into(),
        seq,
        panic,
        block_ms: 0,
    }
}

/// A host of the two probes of [`CONFIG`] in `home`, not started.
fn probes(home: &std::path::Path) -> Host {
    let registry = Registry::builtin();
    let config = BoxConfig::parse(&home.join("box.toml"), CONFIG, &registry.names()).unwrap();
    Host::build(&Home::new(home), &config, &registry).unwrap()
}

#[actix_rt::test]
async fn probes_answer_over_the_bus_and_a_panicking_one_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let host = probes(dir.path());
    let mut pongs = host.bus().subscribe::<ProbePong>();
    host.start_all().await;

    host.bus().publish(ping("alpha", 1, false)).await;
    let pong = next(&mut pongs).await;
    assert_eq!(
        (pong.from.as_str(), pong.seq, pong.generation),
        ("alpha", 1, 1)
    );

    host.bus().publish(ping("alpha", 2, true)).await;
    host.bus().publish(ping("beta", 3, false)).await;
    host.bus().publish(ping("alpha", 4, false)).await;
    let mut got = [next(&mut pongs).await, next(&mut pongs).await];
    got.sort_by_key(|p| p.seq);
    assert_eq!(
        (got[0].from.as_str(), got[0].seq, got[0].generation),
        ("beta", 3, 1)
    );
    assert_eq!(
        (got[1].from.as_str(), got[1].seq, got[1].generation),
        ("alpha", 4, 2),
        "the ping sent after the panic reaches the restarted actor"
    );
    let alpha = host.board().component("alpha").unwrap();
    assert_eq!(alpha.state, State::Run);
    assert_eq!(alpha.restart_count, 1);
    assert!(alpha.last_error.unwrap().contains("asked alpha to panic"));
    assert_eq!(host.board().component("beta").unwrap().restart_count, 0);

    let board = host.board().clone();
    host.stop_all().await;
    assert!(board.snapshot().iter().all(|c| c.state == State::Stopped));
}

/// The portal link can come up and deliver a synchronisation request
/// before a component configured after Portal Integration has started and
/// subscribed; the host's bus keeps what is published until every
/// component started, so the request is not lost.
#[actix_rt::test]
async fn a_message_published_before_a_component_subscribed_reaches_it_once_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let host = probes(dir.path());
    let mut pongs = host.bus().subscribe::<ProbePong>();
    assert_eq!(
        host.bus().publish(ping("beta", 1, false)).await,
        0,
        "no component has subscribed yet"
    );
    host.start_all().await;

    let pong = next(&mut pongs).await;
    assert_eq!((pong.from.as_str(), pong.seq), ("beta", 1));
    host.bus().publish(ping("alpha", 2, false)).await;
    let pong = next(&mut pongs).await;
    assert_eq!(
        (pong.from.as_str(), pong.seq),
        ("alpha", 2),
        "the early ping reached beta once, and alpha ignored it"
    );
    host.stop_all().await;
}

/// The control socket's `upgrade` and `approve` ask whether a component
/// handles them; they wait for the start to end, so that a component that
/// starts after the socket is bound is not taken for missing.
#[actix_rt::test]
async fn a_request_for_the_components_waits_until_every_component_started() {
    let dir = tempfile::tempdir().unwrap();
    let host = probes(dir.path());
    let early = tokio::time::timeout(Duration::from_millis(100), host.wait_started()).await;
    assert!(early.is_err(), "answered before the components started");
    host.start_all().await;
    let late = tokio::time::timeout(Duration::from_secs(5), host.wait_started()).await;
    assert!(late.is_ok(), "still waiting after start_all");
    host.stop_all().await;
}
