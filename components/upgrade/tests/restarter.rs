//! The Restarter asks for the restart only once Portal Integration's outbox
//! is empty, and waits at most its flush timeout.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::Actor;
use banalytics_messages::{
    portal::{PortalOutboxQuery, PortalOutboxState},
    upgrade::{RestartMode, RestartRequested},
};
use banalytics_sdk::Bus;
use banalytics_upgrade_center::restarter::{RestartToApply, Restarter};
use tokio::time::Instant;

/// A fake Portal Integration whose outbox drains by one frame per query.
fn fake_outbox(bus: &Bus, queued: usize) -> Arc<AtomicUsize> {
    let left = Arc::new(AtomicUsize::new(queued));
    let mut queries = bus.subscribe::<PortalOutboxQuery>();
    let (bus, l) = (bus.clone(), left.clone());
    actix_rt::spawn(async move {
        while queries.recv().await.is_some() {
            let queued = l.load(Ordering::SeqCst);
            bus.publish(PortalOutboxState { queued, durable: 0 }).await;
            l.store(queued.saturating_sub(1), Ordering::SeqCst);
        }
    });
    left
}

#[actix_rt::test]
async fn restart_waits_until_the_queued_statuses_left() {
    tokio::time::pause();
    let bus = Bus::new();
    let left = fake_outbox(&bus, 3);
    let mut restarts = bus.subscribe::<RestartRequested>();
    let r = Restarter::new(
        bus.clone(),
        RestartMode::Exit,
        None,
        Duration::from_secs(10),
    )
    .start();
    r.send(RestartToApply {
        reason: "test".into(),
    })
    .await
    .unwrap();
    let req = restarts.try_recv().expect("restart requested");
    assert_eq!(req.mode, RestartMode::Exit);
    assert_eq!(
        left.load(Ordering::SeqCst),
        0,
        "restart asked before the outbox drained"
    );
}

#[actix_rt::test]
async fn restart_is_bounded_by_the_flush_timeout() {
    tokio::time::pause();
    let bus = Bus::new();
    let _stuck = fake_outbox(&bus, usize::MAX);
    let mut restarts = bus.subscribe::<RestartRequested>();
    let r = Restarter::new(bus.clone(), RestartMode::Exec, None, Duration::from_secs(2)).start();
    let t = Instant::now();
    r.send(RestartToApply {
        reason: "test".into(),
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_millis(2200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(restarts.try_recv().unwrap().mode, RestartMode::Exec);
}

#[actix_rt::test]
async fn without_portal_integration_the_restart_is_immediate() {
    tokio::time::pause();
    let bus = Bus::new();
    let mut restarts = bus.subscribe::<RestartRequested>();
    let r = Restarter::new(
        bus.clone(),
        RestartMode::Exit,
        None,
        Duration::from_secs(10),
    )
    .start();
    let t = Instant::now();
    r.send(RestartToApply {
        reason: "test".into(),
    })
    .await
    .unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert!(restarts.try_recv().is_some());
}
