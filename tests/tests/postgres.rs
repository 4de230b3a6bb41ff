//! The portal on the test PostgreSQL (`banalytics_tests::postgres`): its
//! fleet events between processes (`LISTEN`/`NOTIFY`) and its leases
//! (advisory locks). Skipped, with the reason printed, where Debian's
//! `postgresql` package is not installed, unless `CI` is set.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::time::Duration;

use banalytics_portal::{
    events::{Events, FleetEvent},
    leases::{Lease, Leases},
};
use banalytics_tests::postgres;

/// How long an event or a lease's hand-over may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn each_test_gets_a_fresh_database() {
    let (Some(a), Some(b)) = (postgres::database(), postgres::database()) else {
        return;
    };
    assert_ne!(a, b);
    assert!(a.starts_with("postgres://postgres@127.0.0.1:"), "{a}");
}

#[tokio::test]
async fn an_event_reaches_the_other_process_and_not_its_sender() {
    let Some(url) = postgres::database() else {
        return;
    };
    // Two members with their own connections: two portal processes.
    let first = Events::postgres(&url).await.unwrap();
    let second = Events::postgres(&url).await.unwrap();
    assert!(first.is_shared());
    let mut heard_by_first = first.subscribe();
    let mut heard_by_second = second.subscribe();

    first.publish(FleetEvent::SyncRequested {
        env: "env-1".into(),
    });
    let got = tokio::time::timeout(WAIT, heard_by_second.recv()).await;
    assert_eq!(
        got.unwrap(),
        Some(FleetEvent::SyncRequested {
            env: "env-1".into()
        })
    );

    second.publish(FleetEvent::StatusArrived {
        env: "env-2".into(),
    });
    // The first member's first event is the second's: its own `NOTIFY`
    // came back from the server and was skipped.
    let got = tokio::time::timeout(WAIT, heard_by_first.recv()).await;
    assert_eq!(
        got.unwrap(),
        Some(FleetEvent::StatusArrived {
            env: "env-2".into()
        })
    );
}

#[tokio::test]
async fn events_of_another_database_are_not_heard() {
    let (Some(one), Some(other)) = (postgres::database(), postgres::database()) else {
        return;
    };
    let here = Events::postgres(&one).await.unwrap();
    let there = Events::postgres(&other).await.unwrap();
    let also_here = Events::postgres(&one).await.unwrap();
    let mut heard = here.subscribe();
    there.publish(FleetEvent::Revoked {
        env: "elsewhere".into(),
    });
    also_here.publish(FleetEvent::Revoked { env: "here".into() });
    let got = tokio::time::timeout(WAIT, heard.recv()).await;
    assert_eq!(
        got.unwrap(),
        Some(FleetEvent::Revoked { env: "here".into() })
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_and_passes_on_when_it_dies() {
    let Some(url) = postgres::database() else {
        return;
    };
    let first = Leases::postgres(&url);
    let second = Leases::postgres(&url);
    assert!(first.acquire(Lease::Rollout(7)).await.unwrap());
    // Asking again keeps it.
    assert!(first.acquire(Lease::Rollout(7)).await.unwrap());
    assert!(!second.acquire(Lease::Rollout(7)).await.unwrap());
    // Another job is another lease.
    assert!(second.acquire(Lease::TufSigner).await.unwrap());
    assert!(!first.acquire(Lease::TufSigner).await.unwrap());

    // The holder dies: its connections close without a word, as a
    // process's do at SIGKILL.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !second.acquire(Lease::Rollout(7)).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead holder's lease was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_released_lease_is_free_at_once() {
    let Some(url) = postgres::database() else {
        return;
    };
    let first = Leases::postgres(&url);
    let second = Leases::postgres(&url);
    assert!(first.acquire(Lease::Rollout(1)).await.unwrap());
    first.release(Lease::Rollout(1)).await;
    assert!(second.acquire(Lease::Rollout(1)).await.unwrap());
    assert!(!first.acquire(Lease::Rollout(1)).await.unwrap());
}

#[tokio::test]
async fn a_lease_whose_session_was_ended_is_lost_to_its_holder() {
    let Some(url) = postgres::database() else {
        return;
    };
    let first = Leases::postgres(&url);
    let second = Leases::postgres(&url);
    assert!(first.acquire(Lease::TufSigner).await.unwrap());
    // The server ends every other session (a failover, an operator).
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()")
        .execute(&mut admin)
        .await
        .unwrap();
    // `pg_terminate_backend` only signals: the session ends, and frees
    // its locks, soon after.
    let t = std::time::Instant::now();
    while !second.acquire(Lease::TufSigner).await.unwrap() {
        assert!(t.elapsed() < WAIT, "the ended session's lease is not free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first asks again before using it, and learns it lost it.
    assert!(!first.acquire(Lease::TufSigner).await.unwrap());
}

#[test]
fn the_store_conforms_on_postgresql() {
    if postgres::database().is_none() {
        return;
    }
    banalytics_portal::db::conformance::run_all(|check| {
        eprintln!("store check {check} on PostgreSQL");
        postgres::database().expect("the server started above")
    });
}

/// Polls `f` until it answers, or fails after `within`.
fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_resume_asked_through_a_portal_that_does_not_drive_the_rollout_takes_effect() {
    use banalytics_portal::{
        rollout::{RolloutSpec, RolloutState, WaveSize},
        Portal, PortalConfig,
    };
    use banalytics_tests::{
        e2e::{register_box, ModuleSpec, PortalApi as _},
        simbox::SimBox,
    };

    let Some(url) = postgres::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("portal");
    let start = || {
        let mut config = PortalConfig::new(&data);
        config.database = Some(url.clone());
        config.admin_token = Some("postgres-test-admin-token".into());
        Portal::spawn(config).unwrap()
    };
    let first = start();
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 2_000)];
    first.publish_all(&dir.path().join("files"), &set).unwrap();
    let envs: Vec<String> = (0..3)
        .map(|i| format!("6b0c1f8e-0000-4000-8000-0000000c{i:04}"))
        .collect();
    let secrets: Vec<String> = envs
        .iter()
        .map(|e| register_box(&first, e).unwrap())
        .collect();
    let id = first
        .start_rollout(RolloutSpec {
            name: "resumed elsewhere".into(),
            target: vec![set[0].coordinates.clone()],
            environments: envs.clone(),
            waves: vec![WaveSize::Boxes(1), WaveSize::Rest],
            failure_threshold_percent: 0,
            report_timeout_ms: 120_000,
        })
        .unwrap()
        .id;
    // The first portal takes the rollout's lease at its next tick (each
    // second); the second starts after it, and never drives it.
    std::thread::sleep(Duration::from_millis(2500));
    let second = start();

    // The first wave's box fails (on the first portal): the rollout halts.
    // The others are connected to the second.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sims: Vec<_> = envs
        .iter()
        .zip(&secrets)
        .enumerate()
        .map(|(i, (env, secret))| {
            let portal = if i == 0 { &first } else { &second };
            runtime.spawn(
                SimBox {
                    ws_url: portal.ws_url(env, "sim"),
                    env: env.clone(),
                    secret: Some(secret.clone()),
                    install_time: Duration::from_millis(200),
                    fail: i == 0,
                }
                .run(stop_rx.clone()),
            )
        })
        .collect();
    let rollout_of =
        |p: &banalytics_portal::PortalHandle| p.rollouts().into_iter().find(|r| r.id == id);
    poll(WAIT * 3, "the rollout halted", || {
        rollout_of(&first).filter(|r| matches!(r.state, RolloutState::Halted { .. }))
    });

    // Resumed through the second portal, which does not drive it: the
    // first carries it out, and the rollout goes on to its end.
    second.resume_rollout(id).unwrap();
    let done = poll(WAIT * 6, "the rollout finished after its resume", || {
        rollout_of(&second).filter(|r| r.state == RolloutState::Finished)
    });
    assert_eq!((done.installed(), done.failed()), (2, 1), "{done:?}");
    let _ = stop_tx.send(true);
    for s in sims {
        let _ = runtime.block_on(s);
    }
    second.shutdown_blocking();
    first.shutdown_blocking();
}
