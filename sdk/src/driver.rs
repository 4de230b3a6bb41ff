//! The component lifecycle loop, written once.
//!
//! A [`Driver`] owns one component instance and the [`ComponentContext`] of
//! its current start, and carries out [`Command`]s one at a time, in the
//! order they were sent. The host runs one per component, on the
//! component's arbiter; a plugin library runs one per instance, on the
//! instance's thread. Both sides drive a component with this same loop, so
//! a plugin component goes through exactly the states of a built-in one.
//!
//! * **Start.** `STARTING`, then the component's `start` with a fresh
//!   context. When it returns `Ok`, `RUN`. When it fails or panics, the
//!   actors it started are stopped and the component is `ERROR` with the
//!   reason; under any policy but `stop` the driver starts it again after
//!   the policy delay (a tokio timer, so paused time in tests is exact),
//!   until it runs or is stopped. A `Start` while it runs does nothing.
//! * **Stop.** A pending retry is cancelled; when running, `STOPPING`, its
//!   actors stop in reverse start order (see the crate docs), then
//!   [`Component::stopped`] (a panic there is logged); then `STOPPED`.
//! * **Restart** (`banalytics-box restart NAME`). A component that is not
//!   running (stopped, or `ERROR` after a failed start) is started at once;
//!   a running one has its failed actors restarted; a running one without
//!   failed actors is refused. The answer says which.
//! * **End.** When every sender is gone, the driver stops the component
//!   and ends.
//!
//! A driver whose component is bridged to a driver elsewhere (a plugin
//! instance, driven by the host's proxy of it: [`Driver::bridged`]) does
//! not log the lifecycle and does not retry a failed start: the driver on
//! the other side does both, so each happens once. Its [`Bridge`] is
//! attached around each start, and it takes the messages the other side
//! delivers ([`Command::Deliver`]).

use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{error, info, warn};

use crate::{
    bus::{Bus, SubscriberId, SUBSCRIBER_QUEUE},
    component::{Component, ComponentContext, ComponentInit},
    policy::RestartPolicy,
    status::{State, StatusBoard},
    supervisor::panic_message,
};

/// Commands that may wait for a driver. Its owner waits for the answer to
/// each lifecycle command, so few of those wait at once; but a bridged
/// driver also takes the messages delivered from the other side, which wait
/// here as they would in a bus subscriber's queue, hence the same bound. A
/// full queue makes the sender wait.
pub const COMMAND_QUEUE: usize = SUBSCRIBER_QUEUE;

/// A component's `start` failed (or panicked): the reason, also shown as
/// its state's reason on the status board.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct StartFailed {
    /// Why, in the component's words.
    pub reason: String,
}

/// Why a [`Command::Restart`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartRefused {
    /// The component did not run, and its start failed.
    #[error("component {name} failed to start: {reason}")]
    StartFailed {
        /// The component.
        name: String,
        /// Why its start failed.
        reason: String,
    },
    /// The component runs and has no failed actor to restart.
    #[error(
        "component {name} is running; restart applies to a component that is stopped or in ERROR"
    )]
    Running {
        /// The component.
        name: String,
    },
}

/// A request to a [`Driver`]. Each is answered once it is carried out;
/// dropping the answer's receiver is allowed.
#[derive(Debug)]
pub enum Command {
    /// Start the component unless it runs; answered when its `start`
    /// returned: `Err` with the reason when it failed.
    Start(oneshot::Sender<Result<(), StartFailed>>),
    /// Stop the component (and any pending retry); answered when it is
    /// `STOPPED`.
    Stop(oneshot::Sender<()>),
    /// Start the component when it does not run, else restart its failed
    /// actors; the answer is the text for the operator, `Err` when nothing
    /// was done or the start failed.
    Restart(oneshot::Sender<Result<String, RestartRefused>>),
    /// Restart the running component's failed actors now; answered with how
    /// many (0 when it does not run).
    RestartFailed(oneshot::Sender<usize>),
    /// Answer at once: a liveness check of the driver's thread (the host's
    /// watchdog heartbeat), which answers only when that thread, shared
    /// with the component's actors, is not blocked.
    Ping(oneshot::Sender<()>),
    /// Use this restart policy from the next start on (a plugin instance
    /// learns its component's policy when it is started).
    SetPolicy(RestartPolicy),
    /// A message from the other side of a bridge, as the JSON of its topic:
    /// published on the component's bus, except to the bridge's own
    /// subscribers, so that it does not go back where it came from.
    Deliver(&'static str, Vec<u8>),
}

/// What a bridged driver attaches around each start of its component: the
/// plugin guest forwards the instance's published messages and actor states
/// to the host through it. Called on the driver's thread.
pub trait Bridge {
    /// Called with the new context before the component's `start`.
    fn attach(&mut self, ctx: &ComponentContext);

    /// Called after the component's actors stopped, at a stop or after a
    /// failed start, before the component is marked `STOPPED` or `ERROR`.
    fn detach(&mut self);

    /// The bus subscribers the bridge attached: [`Command::Deliver`]ed
    /// messages skip them.
    fn own_subscribers(&self) -> &[SubscriberId];
}

/// Owns one component instance and carries out its lifecycle (see the
/// module docs). Holds the running actors, so it stays on the thread it was
/// built on: build it there, from parts that may cross threads.
pub struct Driver {
    init: ComponentInit,
    policy: RestartPolicy,
    bus: Bus,
    board: StatusBoard,
    component: Box<dyn Component>,
    bridge: Option<Box<dyn Bridge>>,
    running: Option<ComponentContext>,
    retry_at: Option<Instant>,
}

impl Driver {
    /// A driver for `component`, created from `init`, under `policy`, on
    /// the host's `bus` and `board`: it logs the lifecycle and retries a
    /// failed start.
    pub fn new(
        init: ComponentInit,
        policy: RestartPolicy,
        bus: Bus,
        board: StatusBoard,
        component: Box<dyn Component>,
    ) -> Driver {
        Driver {
            init,
            policy,
            bus,
            board,
            component,
            bridge: None,
            running: None,
            retry_at: None,
        }
    }

    /// A driver for a component that a driver elsewhere drives through
    /// `bridge` (a plugin instance): that driver logs the lifecycle and
    /// retries a failed start, so this one does neither. The policy is the
    /// default until a [`Command::SetPolicy`].
    pub fn bridged(
        init: ComponentInit,
        bus: Bus,
        board: StatusBoard,
        component: Box<dyn Component>,
        bridge: Box<dyn Bridge>,
    ) -> Driver {
        Driver {
            bridge: Some(bridge),
            ..Driver::new(init, RestartPolicy::default(), bus, board, component)
        }
    }

    /// Carries out `commands` until every sender is gone, then stops the
    /// component.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let command = tokio::select! {
                command = commands.recv() => command,
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => {
                    let _ = self.start().await;
                    continue;
                }
            };
            match command {
                Some(Command::Start(done)) => {
                    let _ = done.send(self.start().await);
                }
                Some(Command::Stop(done)) => {
                    self.stop().await;
                    let _ = done.send(());
                }
                Some(Command::Restart(done)) => {
                    let _ = done.send(self.restart().await);
                }
                Some(Command::RestartFailed(done)) => {
                    let _ = done.send(self.running.as_ref().map_or(0, |c| c.restart_failed()));
                }
                Some(Command::Ping(done)) => {
                    let _ = done.send(());
                }
                Some(Command::SetPolicy(policy)) => self.policy = policy,
                Some(Command::Deliver(topic, json)) => self.deliver(topic, json).await,
                None => {
                    self.stop().await;
                    return;
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.init.name
    }

    /// Starts the component unless it runs; on failure, schedules the retry
    /// (not when bridged) and returns the reason.
    async fn start(&mut self) -> Result<(), StartFailed> {
        if self.running.is_some() {
            return Ok(());
        }
        self.retry_at = None;
        let name = self.init.name.clone();
        self.board.set_component(&name, State::Starting, None);
        let mut ctx = ComponentContext::new(
            &name,
            self.init.id,
            &self.init.home,
            self.policy,
            self.bus.clone(),
            self.board.clone(),
        );
        if let Some(bridge) = &mut self.bridge {
            bridge.attach(&ctx);
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.component.start(&mut ctx)));
        let reason = match result {
            Ok(Ok(())) => {
                if self.bridge.is_none() {
                    info!(component = %name, id = %self.init.id, "component started");
                }
                self.board.set_component(&name, State::Run, None);
                self.running = Some(ctx);
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("start panicked: {}", panic_message(&*panic)),
        };
        ctx.stop_actors().await;
        if let Some(bridge) = &mut self.bridge {
            bridge.detach();
        } else {
            error!(component = %name, %reason, policy = %self.policy, "component failed to start");
            self.retry_at = self.policy.delay().map(|d| Instant::now() + d);
        }
        self.board
            .set_component(&name, State::Error, Some(reason.clone()));
        Err(StartFailed { reason })
    }

    async fn stop(&mut self) {
        self.retry_at = None;
        if let Some(mut ctx) = self.running.take() {
            let name = self.init.name.clone();
            self.board.set_component(&name, State::Stopping, None);
            ctx.stop_actors().await;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.component.stopped())) {
                error!(component = %name, panic = %panic_message(&*p), "stopped panicked");
            }
            if let Some(bridge) = &mut self.bridge {
                bridge.detach();
            } else {
                info!(component = %name, "component stopped");
            }
        }
        self.board.set_component(self.name(), State::Stopped, None);
    }

    async fn restart(&mut self) -> Result<String, RestartRefused> {
        let name = self.name().to_owned();
        match &self.running {
            None => match self.start().await {
                Ok(()) => Ok(format!("component {name} started")),
                Err(StartFailed { reason }) => Err(RestartRefused::StartFailed { name, reason }),
            },
            Some(ctx) => match ctx.restart_failed() {
                0 => Err(RestartRefused::Running { name }),
                n => Ok(format!("component {name}: restarting {n} failed actor(s)")),
            },
        }
    }

    async fn deliver(&mut self, topic: &'static str, json: Vec<u8>) {
        let except = self
            .bridge
            .as_ref()
            .map_or(&[][..], |b| b.own_subscribers());
        if let Err(e) = self.bus.publish_raw_except(topic, json, except).await {
            warn!(component = %self.init.name, error = %e, "message from the host refused");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
