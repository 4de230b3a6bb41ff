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
use banalytics_upgrade_center::{RestartToApply, Restarter};
use tokio::time::Instant;

/// The id of a set of one module named `name`.
fn id(name: &str) -> banalytics_home::TargetSetId {
    let coords = banalytics_home::coords::Coords::new("g", name, "1").unwrap();
    banalytics_home::TargetSetId::of([&coords])
}

/// A Restarter that exits to restart, waiting at most `flush` for the
/// statuses.
fn exit_restarter(bus: &Bus, flush: Duration) -> Restarter {
    Restarter::new(bus.clone(), RestartMode::Exit, flush)
}

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
    let r = exit_restarter(&bus, Duration::from_secs(10)).start();
    r.send(RestartToApply {
        reason: "test".into(),
        set_id: None,
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
    let r = Restarter::new(bus.clone(), RestartMode::Exec, Duration::from_secs(2)).start();
    let t = Instant::now();
    r.send(RestartToApply {
        reason: "test".into(),
        set_id: None,
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
    let r = exit_restarter(&bus, Duration::from_secs(10)).start();
    let t = Instant::now();
    r.send(RestartToApply {
        reason: "test".into(),
        set_id: None,
    })
    .await
    .unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert!(restarts.try_recv().is_some());
}

mod apply {
    //! When the staged set is applied: in its maintenance window, or once
    //! approved; in paused tokio time, with the window read on a clock
    //! that follows it.

    use std::sync::Arc;

    use banalytics_upgrade_center::{
        ApplyMode, ApplyPolicy, Approve, Clock, TokioClock, WaitingSet, Window, WindowConfig,
    };
    use jiff::Timestamp;

    use super::*;

    fn berlin(civil: &str) -> Timestamp {
        jiff::civil::DateTime::from_str(civil)
            .unwrap()
            .in_tz("Europe/Berlin")
            .unwrap()
            .timestamp()
    }

    use std::str::FromStr;

    fn window_policy(clock: &TokioClock, schedule: &str, duration: &str) -> ApplyPolicy {
        ApplyPolicy {
            mode: ApplyMode::Window,
            window: Some(
                Window::parse(&WindowConfig {
                    schedule: schedule.into(),
                    duration: duration.into(),
                    timezone: "Europe/Berlin".into(),
                })
                .unwrap(),
            ),
            approval_from_portal: false,
            clock: Arc::new(clock.clone()),
        }
    }

    fn staged(set: &str) -> RestartToApply {
        RestartToApply {
            reason: "staged 1 modules".into(),
            set_id: Some(id(set)),
        }
    }

    #[actix_rt::test]
    async fn a_set_staged_at_14_00_with_a_window_from_02_00_restarts_at_02_00_not_before() {
        tokio::time::pause();
        let clock = TokioClock::starting_at(berlin("2026-06-10T14:00:00"));
        let policy = window_policy(&clock, "0 2 * * *", "2h");
        assert!(policy
            .waits_for()
            .unwrap()
            .contains("2026-06-11T02:00:00+02:00[Europe/Berlin]"));
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let r = exit_restarter(&bus, Duration::from_secs(10))
            .with_policy(policy)
            .start();
        r.send(staged("set-a")).await.unwrap();
        assert_eq!(r.send(WaitingSet).await.unwrap(), Some(id("set-a")));
        // One second before the window: nothing.
        tokio::time::sleep_until(Instant::now() + Duration::from_secs(12 * 3600 - 1)).await;
        assert!(restarts.try_recv().is_none(), "restarted before the window");
        let request = restarts.recv().await.expect("restart requested");
        let at = clock.now();
        assert!(
            at >= berlin("2026-06-11T02:00:00") && at < berlin("2026-06-11T02:00:01"),
            "restarted at {at}"
        );
        assert!(
            request.reason.contains("maintenance window"),
            "{}",
            request.reason
        );
    }

    #[actix_rt::test]
    async fn a_window_that_closes_while_statuses_are_flushed_waits_for_the_next_one() {
        tokio::time::pause();
        let clock = TokioClock::starting_at(berlin("2026-06-10T14:00:00"));
        let bus = Bus::new();
        // Portal Integration never empties its outbox: each flush takes
        // the whole flush timeout, longer than the 1-minute window.
        let _stuck = fake_outbox(&bus, usize::MAX);
        let mut restarts = bus.subscribe::<RestartRequested>();
        let r = exit_restarter(&bus, Duration::from_secs(120))
            .with_policy(window_policy(&clock, "0 2 * * *", "1m"))
            .start();
        r.send(staged("set-a")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(13 * 3600)).await;
        assert!(
            restarts.try_recv().is_none(),
            "restarted after the window closed"
        );
        // Next day: still stuck, so never; the wait goes on.
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert!(restarts.try_recv().is_none());
        assert_eq!(r.send(WaitingSet).await.unwrap(), Some(id("set-a")));
    }

    #[actix_rt::test]
    async fn approval_mode_waits_for_the_approval_of_the_waiting_set() {
        tokio::time::pause();
        let clock = TokioClock::starting_at(berlin("2026-06-10T14:00:00"));
        let policy = ApplyPolicy {
            mode: ApplyMode::Approval,
            clock: Arc::new(clock),
            ..ApplyPolicy::default()
        };
        assert!(policy
            .waits_for()
            .unwrap()
            .contains("banalytics-box approve"));
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let r = exit_restarter(&bus, Duration::from_secs(10))
            .with_policy(policy)
            .start();
        r.send(staged("set-a")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(7 * 24 * 3600)).await;
        assert!(restarts.try_recv().is_none(), "restarted without approval");
        let other = Approve {
            by: "portal".into(),
            set_id: Some(id("set-b")),
        };
        assert!(
            !r.send(other).await.unwrap(),
            "another set's approval counted"
        );
        let mine = Approve {
            by: "cli".into(),
            set_id: None,
        };
        assert!(r.send(mine).await.unwrap());
        let request = restarts.recv().await.expect("restart requested");
        assert!(
            request.reason.contains("approved by cli"),
            "{}",
            request.reason
        );
    }

    #[actix_rt::test]
    async fn an_approval_in_window_mode_applies_at_once() {
        tokio::time::pause();
        let clock = TokioClock::starting_at(berlin("2026-06-10T14:00:00"));
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let r = exit_restarter(&bus, Duration::from_secs(10))
            .with_policy(window_policy(&clock, "0 2 * * *", "2h"))
            .start();
        r.send(staged("set-a")).await.unwrap();
        // `ApproveStagedSet` from the bus becomes this message.
        assert!(r
            .send(Approve {
                by: "cli".into(),
                set_id: None
            })
            .await
            .unwrap());
        let request = restarts.recv().await.expect("restart requested");
        assert!(clock.now() < berlin("2026-06-10T14:00:01"));
        assert!(request.reason.contains("approved by cli"));
    }

    /// A home whose complete staged set (`g:a:1`) is held, as a
    /// synchronisation under `apply = "window"` or `"approval"` leaves it.
    fn held_home() -> (tempfile::TempDir, banalytics_home::Layout) {
        use banalytics_home::{
            coords::{Coords, ModuleType},
            hold::{self, Hold},
            installed::{write_modules_info, InstalledModule},
        };
        let dir = tempfile::tempdir().unwrap();
        let layout = banalytics_home::Layout::new(dir.path());
        std::fs::create_dir_all(layout.upgrade_dir()).unwrap();
        let module = InstalledModule {
            coords: Coords::new("g", "a", "1").unwrap(),
            module_type: ModuleType::Component,
            upload_epoch: 0,
        };
        write_modules_info(&layout.upgrade_dir(), &[module]).unwrap();
        let hold = Hold::new(
            vec!["g:a:1".parse().unwrap()],
            Some(id("set-a")),
            "approval".into(),
        );
        hold::write(&layout, &hold).unwrap();
        assert!(hold::of_staged(&layout).is_some());
        (dir, layout)
    }

    #[actix_rt::test]
    async fn a_restarter_that_starts_beside_a_held_set_waits_for_its_turn_again_and_then_lifts_the_hold(
    ) {
        tokio::time::pause();
        let (_dir, layout) = held_home();
        let clock = TokioClock::starting_at(berlin("2026-06-10T14:00:00"));
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let r = exit_restarter(&bus, Duration::from_secs(10))
            .with_policy(ApplyPolicy {
                mode: ApplyMode::Approval,
                clock: Arc::new(clock),
                ..ApplyPolicy::default()
            })
            .with_home(layout.clone())
            .start();
        assert_eq!(
            r.send(WaitingSet).await.unwrap(),
            Some(id("set-a")),
            "the held set waits again, under its id (a portal approval names it)"
        );
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert!(restarts.try_recv().is_none(), "restarted without approval");
        assert!(banalytics_home::hold::of_staged(&layout).is_some());
        assert!(r
            .send(Approve {
                by: "portal".into(),
                set_id: Some(id("set-a")),
            })
            .await
            .unwrap());
        let request = restarts.recv().await.expect("restart requested");
        assert!(
            request.reason.contains("approved by portal"),
            "{}",
            request.reason
        );
        assert_eq!(
            banalytics_home::hold::read(&layout).unwrap(),
            None,
            "the hold went before the restart was asked for"
        );
    }

    #[actix_rt::test]
    async fn a_hold_left_from_an_earlier_policy_is_lifted_and_the_set_applied_at_once() {
        tokio::time::pause();
        let (_dir, layout) = held_home();
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let _r = exit_restarter(&bus, Duration::from_secs(10))
            .with_home(layout.clone())
            .start();
        restarts.recv().await.expect("restart requested");
        assert_eq!(banalytics_home::hold::read(&layout).unwrap(), None);
    }

    /// A hold that cannot be removed would hold the set at the next start
    /// too, and this actor would ask for the restart again at once: a
    /// restart loop. It asks for none.
    #[actix_rt::test]
    async fn a_hold_that_cannot_be_removed_asks_for_no_restart() {
        tokio::time::pause();
        let (_dir, layout) = held_home();
        // A folder in the hold's place: unreadable (so it holds) and not
        // removable as a file.
        let file = layout.state().join(banalytics_home::hold::HOLD_FILE);
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir_all(file.join("x")).unwrap();
        assert!(banalytics_home::hold::of_staged(&layout).is_some());
        let bus = Bus::new();
        let mut restarts = bus.subscribe::<RestartRequested>();
        let _r = exit_restarter(&bus, Duration::from_secs(10))
            .with_home(layout.clone())
            .start();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            restarts.try_recv().is_none(),
            "a restart that cannot apply the set"
        );
    }
}
