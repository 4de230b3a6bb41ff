//! Restart-on-failure semantics, with paused tokio time.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use banalytics_sdk::{
    status::State,
    supervisor::{supervise, ActorControl, SupervisorSpec},
    RestartPolicy, SendError, StatusBoard, SupervisedAddr,
};
use tokio::time::Instant;

/// Counts how many instances were built and how many messages were handled.
#[derive(Default)]
struct Counters {
    instances: AtomicU32,
    handled: AtomicU32,
}

struct Worker {
    generation: u32,
    counters: Arc<Counters>,
    seen: u32,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

/// Answers the instance generation and how many messages this instance saw.
#[derive(Message)]
#[rtype(result = "(u32, u32)")]
struct Work;

impl Handler<Work> for Worker {
    type Result = MessageResult<Work>;
    fn handle(&mut self, _: Work, _: &mut Context<Self>) -> MessageResult<Work> {
        self.seen += 1;
        self.counters.handled.fetch_add(1, Ordering::SeqCst);
        MessageResult((self.generation, self.seen))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Explode;

impl Handler<Explode> for Worker {
    type Result = ();
    fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
        panic!("exploded on purpose");
    }
}

fn board() -> StatusBoard {
    let board = StatusBoard::new();
    board.register("c", "test", "00000000-0000-0000-0000-000000000001");
    board.set_component("c", State::Run, None);
    board
}

fn start_worker(
    board: &StatusBoard,
    policy: RestartPolicy,
) -> (SupervisedAddr<Worker>, ActorControl, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let spec = SupervisorSpec {
        component: "c".into(),
        actor: "worker".into(),
        policy,
        board: board.clone(),
    };
    let c = counters.clone();
    let (addr, control) = supervise(spec, move |_, _| Worker {
        generation: c.instances.fetch_add(1, Ordering::SeqCst) + 1,
        counters: c.clone(),
        seen: 0,
    });
    (addr, control, counters)
}

fn state(board: &StatusBoard) -> State {
    board.component("c").unwrap().state
}

/// The shared check for the timed policies: the panicking message gets an
/// error, messages sent during the delay are handled by a fresh instance,
/// and the instance comes back after exactly `delay`.
async fn panics_then_restarts_after(policy: RestartPolicy, delay: Duration) {
    tokio::time::pause();
    let board = board();
    let (addr, _control, counters) = start_worker(&board, policy);
    assert_eq!(addr.send(Work).await, Ok((1, 1)));
    assert_eq!(addr.send(Work).await, Ok((1, 2)));

    let failed_at = Instant::now();
    let err = addr.send(Explode).await.unwrap_err();
    assert!(
        matches!(&err, SendError::ActorFailed { actor, reason } if actor == "worker" && reason.contains("exploded on purpose")),
        "{err:?}"
    );
    assert_eq!(state(&board), State::Error);
    assert!(board
        .component("c")
        .unwrap()
        .reason
        .unwrap()
        .contains("exploded on purpose"));

    let during: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            actix_rt::spawn(async move { addr.send(Work).await })
        })
        .collect();
    if !delay.is_zero() {
        tokio::time::sleep(delay - Duration::from_millis(1)).await;
        assert_eq!(state(&board), State::Error, "restarted early");
        assert_eq!(
            counters.handled.load(Ordering::SeqCst),
            2,
            "handled during the delay"
        );
        assert_eq!(counters.instances.load(Ordering::SeqCst), 1);
    }
    let mut replies = Vec::new();
    for h in during {
        replies.push(h.await.unwrap());
    }
    let back_after = failed_at.elapsed();
    assert_eq!(
        replies,
        vec![Ok((2, 1)), Ok((2, 2)), Ok((2, 3))],
        "fresh state, in order"
    );
    assert!(
        back_after >= delay,
        "back after {back_after:?}, policy {delay:?}"
    );
    assert!(
        back_after <= delay + Duration::from_millis(1),
        "back after {back_after:?}, policy {delay:?}"
    );
    let status = board.component("c").unwrap();
    assert_eq!(status.state, State::Run);
    assert_eq!(status.restart_count, 1);
}

#[actix_rt::test]
async fn restarts_immediately_after_panic_without_a_timer() {
    panics_then_restarts_after(RestartPolicy::Immediate, Duration::ZERO).await;
}

#[actix_rt::test]
async fn restarts_after_exactly_10s_under_10s_policy() {
    panics_then_restarts_after(RestartPolicy::After10s, Duration::from_secs(10)).await;
}

#[actix_rt::test]
async fn restarts_after_exactly_30s_under_30s_policy() {
    panics_then_restarts_after(RestartPolicy::After30s, Duration::from_secs(30)).await;
}

#[actix_rt::test]
async fn restarts_after_exactly_1min_under_1min_policy() {
    panics_then_restarts_after(RestartPolicy::After1min, Duration::from_secs(60)).await;
}

#[actix_rt::test]
async fn stays_in_error_under_stop_until_a_manual_restart() {
    tokio::time::pause();
    let board = board();
    let (addr, control, counters) = start_worker(&board, RestartPolicy::Stop);
    assert_eq!(addr.send(Work).await, Ok((1, 1)));
    assert!(matches!(
        addr.send(Explode).await,
        Err(SendError::ActorFailed { .. })
    ));
    let queued = {
        let addr = addr.clone();
        actix_rt::spawn(async move { addr.send(Work).await })
    };
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(state(&board), State::Error);
    assert_eq!(
        counters.instances.load(Ordering::SeqCst),
        1,
        "restarted without a request"
    );
    assert!(!queued.is_finished());

    let restarted_at = Instant::now();
    control.restart();
    assert_eq!(
        queued.await.unwrap(),
        Ok((2, 1)),
        "queued message handled after the restart"
    );
    assert_eq!(restarted_at.elapsed(), Duration::ZERO);
    assert_eq!(state(&board), State::Run);
    assert_eq!(board.component("c").unwrap().restart_count, 1);
}

struct Quitter {
    supervision: banalytics_sdk::Supervision,
}

impl Actor for Quitter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct GiveUp;

impl Handler<GiveUp> for Quitter {
    type Result = ();
    fn handle(&mut self, _: GiveUp, ctx: &mut Context<Self>) {
        self.supervision.fail(ctx, "disk gone");
    }
}

#[actix_rt::test]
async fn an_actor_stopping_itself_with_an_error_is_a_failure_and_is_restarted() {
    tokio::time::pause();
    let board = board();
    let spec = SupervisorSpec {
        component: "c".into(),
        actor: "quitter".into(),
        policy: RestartPolicy::After10s,
        board: board.clone(),
    };
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let (addr, _control) = supervise(spec, move |_, supervision| {
        b.fetch_add(1, Ordering::SeqCst);
        Quitter {
            supervision: supervision.clone(),
        }
    });
    // The handler itself returned, so its message is answered; the failure
    // follows.
    assert_eq!(addr.send(GiveUp).await, Ok(()));
    tokio::task::yield_now().await;
    let status = board.component("c").unwrap();
    assert_eq!(status.reason.as_deref(), Some("actor quitter: disk gone"));
    assert_eq!(state(&board), State::Error);
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::yield_now().await;
    assert_eq!(built.load(Ordering::SeqCst), 2);
    assert_eq!(state(&board), State::Run);
}

/// Panics in `started`, every time: a crash loop.
struct CrashLoop {
    attempts: Arc<AtomicU32>,
}

impl Actor for CrashLoop {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        panic!("cannot start");
    }
}

#[actix_rt::test]
async fn a_crash_loop_under_immediate_does_not_starve_another_component() {
    let board = board();
    board.register("other", "test", "00000000-0000-0000-0000-000000000002");
    board.set_component("other", State::Run, None);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let (_looping, _c1) = supervise(
        SupervisorSpec {
            component: "c".into(),
            actor: "crash-loop".into(),
            policy: RestartPolicy::Immediate,
            board: board.clone(),
        },
        move |_, _| CrashLoop {
            attempts: a.clone(),
        },
    );
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let (healthy, _c2) = supervise(
        SupervisorSpec {
            component: "other".into(),
            actor: "worker".into(),
            policy: RestartPolicy::Immediate,
            board: board.clone(),
        },
        move |_, _| Worker {
            generation: 1,
            counters: c.clone(),
            seen: 0,
        },
    );
    // Both supervisors share this one thread: the worst case.
    let before = attempts.load(Ordering::SeqCst);
    for i in 1..=2000 {
        let reply = tokio::time::timeout(Duration::from_secs(1), healthy.send(Work))
            .await
            .expect("healthy component starved");
        assert_eq!(reply, Ok((1, i)));
    }
    let during = attempts.load(Ordering::SeqCst) - before;
    assert!(
        during >= 100,
        "the crash loop only ran {during} times meanwhile"
    );
    assert_eq!(board.component("other").unwrap().state, State::Run);
    assert_eq!(board.component("c").unwrap().state, State::Error);
}

#[actix_rt::test]
async fn stop_handles_queued_messages_then_refuses_new_ones() {
    let board = board();
    let (addr, control, counters) = start_worker(&board, RestartPolicy::After10s);
    for _ in 0..10 {
        addr.try_send(Work).unwrap();
    }
    control.stop().await;
    assert_eq!(counters.handled.load(Ordering::SeqCst), 10);
    assert_eq!(
        addr.send(Work).await,
        Err(SendError::ActorStopped {
            actor: "worker".into()
        })
    );
    assert_eq!(
        board.component("c").unwrap().actors["worker"].state,
        State::Stopped
    );
}

#[actix_rt::test]
async fn stop_during_a_restart_delay_refuses_the_queued_messages() {
    tokio::time::pause();
    let board = board();
    let (addr, control, counters) = start_worker(&board, RestartPolicy::After1min);
    assert!(addr.send(Explode).await.is_err());
    let queued = {
        let addr = addr.clone();
        actix_rt::spawn(async move { addr.send(Work).await })
    };
    tokio::task::yield_now().await;
    control.stop().await;
    assert!(matches!(
        queued.await.unwrap(),
        Err(SendError::ActorStopped { .. })
    ));
    assert_eq!(counters.instances.load(Ordering::SeqCst), 1);
}
