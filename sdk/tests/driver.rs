//! The component lifecycle loop (`driver`), with paused tokio time: start,
//! retry under the policy, stop, restart, and what a bridged driver does
//! differently.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit},
    driver::{Bridge, Command, Driver, COMMAND_QUEUE},
    Bus, ComponentError, ConfigSection, RawSubscription, RestartPolicy, State, StatusBoard,
    SubscriberId,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

const NAME: &str = "c";

/// What the test component saw.
#[derive(Default)]
struct Seen {
    starts: AtomicU32,
    stops: AtomicU32,
}

/// Fails its first `failures` starts; panics in `stopped` when asked.
struct Flaky {
    failures: u32,
    panic_when_stopped: bool,
    seen: Arc<Seen>,
}

impl Component for Flaky {
    fn start(&mut self, _: &mut ComponentContext) -> Result<(), ComponentError> {
        self.seen.starts.fetch_add(1, Ordering::SeqCst);
        if self.failures > 0 {
            self.failures -= 1;
            return Err(ComponentError::Start("not yet".into()));
        }
        Ok(())
    }

    fn stopped(&mut self) {
        self.seen.stops.fetch_add(1, Ordering::SeqCst);
        if self.panic_when_stopped {
            panic!("stopped on purpose");
        }
    }
}

fn init() -> ComponentInit {
    ComponentInit {
        name: NAME.into(),
        id: Uuid::nil(),
        home: std::env::temp_dir(),
        config: ConfigSection::from_snippet(NAME, ""),
    }
}

struct Running {
    tx: mpsc::Sender<Command>,
    board: StatusBoard,
    bus: Bus,
    seen: Arc<Seen>,
}

impl Running {
    async fn start(&self) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Command::Start(done)).await.unwrap();
        answer.await.unwrap().map_err(|e| e.to_string())
    }

    async fn stop(&self) {
        let (done, answer) = oneshot::channel();
        self.tx.send(Command::Stop(done)).await.unwrap();
        answer.await.unwrap()
    }

    async fn restart(&self) -> Result<String, String> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Command::Restart(done)).await.unwrap();
        answer.await.unwrap().map_err(|e| e.to_string())
    }

    fn state(&self) -> (State, Option<String>) {
        let c = self.board.component(NAME).unwrap();
        (c.state, c.reason)
    }

    fn starts(&self) -> u32 {
        self.seen.starts.load(Ordering::SeqCst)
    }
}

/// Runs a driver for a `Flaky` on this thread; `bridge` makes it bridged.
fn drive(
    failures: u32,
    panic_when_stopped: bool,
    policy: RestartPolicy,
    bridge: Option<Box<dyn Bridge>>,
) -> Running {
    let seen = Arc::new(Seen::default());
    let component = Box::new(Flaky {
        failures,
        panic_when_stopped,
        seen: seen.clone(),
    });
    let (board, bus) = (StatusBoard::new(), Bus::new());
    board.register(NAME, "flaky", &Uuid::nil().to_string());
    let driver = match bridge {
        None => Driver::new(init(), policy, bus.clone(), board.clone(), component),
        Some(b) => Driver::bridged(init(), bus.clone(), board.clone(), component, b),
    };
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    actix_rt::spawn(driver.run(rx));
    Running {
        tx,
        board,
        bus,
        seen,
    }
}

/// Lets the driver's task run after time moved (with paused time, a
/// `sleep` moves the clock and fires the timers due on the way).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn a_failed_start_is_error_and_is_retried_after_exactly_the_policy_delay() {
    tokio::time::pause();
    let c = drive(1, false, RestartPolicy::After10s, None);
    assert_eq!(c.start().await, Err("not yet".into()));
    assert_eq!(c.state(), (State::Error, Some("not yet".into())));
    tokio::time::sleep(Duration::from_millis(9_999)).await;
    settle().await;
    assert_eq!(c.starts(), 1, "retried early");
    tokio::time::sleep(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(c.starts(), 2);
    assert_eq!(c.state().0, State::Run);
}

#[actix_rt::test]
async fn stop_cancels_a_pending_retry() {
    tokio::time::pause();
    let c = drive(5, false, RestartPolicy::After10s, None);
    assert!(c.start().await.is_err());
    c.stop().await;
    assert_eq!(c.state().0, State::Stopped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(c.starts(), 1);
    assert_eq!(c.state().0, State::Stopped);
}

#[actix_rt::test]
async fn under_stop_a_failed_start_waits_for_a_restart() {
    tokio::time::pause();
    let c = drive(1, false, RestartPolicy::Stop, None);
    assert!(c.start().await.is_err());
    tokio::time::sleep(Duration::from_secs(600)).await;
    settle().await;
    assert_eq!(c.starts(), 1);
    assert_eq!(c.restart().await, Ok("component c started".into()));
    assert_eq!(c.state().0, State::Run);
}

#[actix_rt::test]
async fn restart_refuses_a_running_component_without_failed_actors_and_starts_a_stopped_one() {
    let c = drive(0, false, RestartPolicy::After10s, None);
    c.start().await.unwrap();
    assert_eq!(
        c.start().await,
        Ok(()),
        "a start while running does nothing"
    );
    assert_eq!(c.starts(), 1);
    assert_eq!(
        c.restart().await,
        Err(
            "component c is running; restart applies to a component that is stopped or in ERROR"
                .into()
        )
    );
    c.stop().await;
    assert_eq!(c.seen.stops.load(Ordering::SeqCst), 1);
    assert_eq!(c.restart().await, Ok("component c started".into()));
    assert_eq!(c.starts(), 2);
}

#[actix_rt::test]
async fn a_restart_whose_start_fails_names_the_reason() {
    tokio::time::pause();
    let c = drive(2, false, RestartPolicy::Stop, None);
    assert!(c.start().await.is_err());
    assert_eq!(
        c.restart().await,
        Err("component c failed to start: not yet".into())
    );
}

#[actix_rt::test]
async fn a_panic_in_stopped_is_caught_and_the_component_is_stopped() {
    let c = drive(0, true, RestartPolicy::After10s, None);
    c.start().await.unwrap();
    c.stop().await;
    assert_eq!(c.state().0, State::Stopped);
    c.start().await.unwrap();
    assert_eq!(c.state().0, State::Run);
}

#[actix_rt::test]
async fn the_driver_stops_the_component_when_its_senders_are_gone() {
    let c = drive(0, false, RestartPolicy::After10s, None);
    c.start().await.unwrap();
    let Running {
        tx, board, seen, ..
    } = c;
    drop(tx);
    for _ in 0..100 {
        if board.component(NAME).unwrap().state == State::Stopped {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(board.component(NAME).unwrap().state, State::Stopped);
    assert_eq!(seen.stops.load(Ordering::SeqCst), 1);
}

/// Records what the driver asked of it; attaches one raw subscription.
#[derive(Default)]
struct Recorded {
    attached: u32,
    detached: u32,
    own: Option<RawSubscription>,
}

struct Recording {
    recorded: Rc<RefCell<Recorded>>,
    ids: Vec<SubscriberId>,
}

impl Recording {
    fn boxed(recorded: &Rc<RefCell<Recorded>>) -> Box<dyn Bridge> {
        Box::new(Recording {
            recorded: recorded.clone(),
            ids: Vec::new(),
        })
    }
}

impl Bridge for Recording {
    fn attach(&mut self, ctx: &ComponentContext) {
        let mut r = self.recorded.borrow_mut();
        r.attached += 1;
        let sub = ctx.bus().subscribe_raw("t");
        self.ids = vec![sub.id()];
        r.own = Some(sub);
    }

    fn detach(&mut self) {
        let mut r = self.recorded.borrow_mut();
        r.detached += 1;
        self.ids.clear();
        r.own = None;
    }

    fn own_subscribers(&self) -> &[SubscriberId] {
        &self.ids
    }
}

#[actix_rt::test]
async fn a_bridged_driver_does_not_retry_and_detaches_after_a_failed_start() {
    tokio::time::pause();
    let recorded = Rc::new(RefCell::new(Recorded::default()));
    let c = drive(
        1,
        false,
        RestartPolicy::After10s,
        Some(Recording::boxed(&recorded)),
    );
    c.tx.send(Command::SetPolicy(RestartPolicy::Immediate))
        .await
        .unwrap();
    assert!(c.start().await.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(c.starts(), 1, "the other side retries, not this driver");
    assert_eq!(
        (recorded.borrow().attached, recorded.borrow().detached),
        (1, 1)
    );
    c.start().await.unwrap();
    c.stop().await;
    assert_eq!(
        (recorded.borrow().attached, recorded.borrow().detached),
        (2, 2)
    );
}

#[actix_rt::test]
async fn a_delivered_message_skips_the_bridge_own_subscribers() {
    let recorded = Rc::new(RefCell::new(Recorded::default()));
    let c = drive(
        0,
        false,
        RestartPolicy::After10s,
        Some(Recording::boxed(&recorded)),
    );
    let mut other = c.bus.subscribe_raw("t");
    c.start().await.unwrap();
    c.tx.send(Command::Deliver("t", b"{}".to_vec()))
        .await
        .unwrap();
    // Commands are carried out in order: once this is answered, the
    // delivery happened.
    let (done, answer) = oneshot::channel();
    c.tx.send(Command::RestartFailed(done)).await.unwrap();
    assert_eq!(answer.await.unwrap(), 0);
    assert_eq!(other.try_recv().as_deref(), Some(&b"{}".to_vec()));
    let own = recorded.borrow_mut().own.as_mut().unwrap().try_recv();
    assert_eq!(
        own, None,
        "the bridge's own subscriber got the message back"
    );
}
