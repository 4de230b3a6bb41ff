//! Restart-on-failure for actix actors.
//!
//! actix's own `Supervisor` restarts an actor that stops itself, but a panic
//! in a handler unwinds out of the actor's task and takes its mailbox with
//! it. So the supervisor here keeps the mailbox itself: a
//! [`SupervisedAddr`] feeds a bounded queue that the supervisor task owns,
//! and the supervisor hands one message at a time to the current actor
//! instance. The instance runs in its own task, wrapped in `catch_unwind`;
//! when it ends with a panic (or [`Supervision::fail`]), the supervisor
//! answers the message in flight with [`SendError::ActorFailed`], records
//! `ERROR` on the [`StatusBoard`], and builds a fresh instance with the
//! factory after the policy's delay. Queued messages are untouched by all of
//! this and go to the new instance. The crate docs describe the lifecycle.

use std::{
    any::Any,
    cell::RefCell,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use actix::{
    dev::ToEnvelope, fut, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context,
    Handler, Message,
};
use futures_util::FutureExt as _;
use tokio::{
    sync::{mpsc, oneshot},
    task::{AbortHandle, JoinHandle},
};
use tracing::{error, info, warn};

use crate::{policy::RestartPolicy, status::State, SendError, StatusBoard};

/// Messages that may wait for one actor. Large enough to ride out a restart
/// delay under normal load, small enough that a stuck actor pushes back on
/// its senders instead of growing without bound.
pub const MAILBOX_CAPACITY: usize = 256;

/// How long a stopping actor may take to handle its queued messages and run
/// its `stopping`/`stopped` hooks before it is aborted. Long enough for a
/// handler finishing a disk write, short enough that SIGTERM is answered
/// before a service manager's own stop timeout (systemd's default is 90 s).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

type Orphan = Box<dyn FnOnce(SendError)>;
type Delivery = Pin<Box<dyn Future<Output = Option<Orphan>>>>;

/// One queued message with its reply slot, type-erased for the mailbox.
trait Letter<A: Actor>: Send {
    /// Hands the message to the instance. Resolves `None` once the handler
    /// replied, or to the reply slot when the instance ended first.
    fn deliver(self: Box<Self>, addr: &Addr<A>) -> Delivery;
    /// Answers without handing the message over.
    fn refuse(self: Box<Self>, err: SendError);
}

struct Envelope<M: Message> {
    msg: M,
    reply: Option<oneshot::Sender<Result<M::Result, SendError>>>,
}

impl<A, M> Letter<A> for Envelope<M>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    Context<A>: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    fn deliver(self: Box<Self>, addr: &Addr<A>) -> Delivery {
        let Envelope { msg, reply } = *self;
        let request = addr.send(msg);
        Box::pin(async move {
            match request.await {
                Ok(result) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(result));
                    }
                    None
                }
                Err(_) => Some(Box::new(move |err: SendError| {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(err));
                    }
                }) as Orphan),
            }
        })
    }

    fn refuse(self: Box<Self>, err: SendError) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(err));
        }
    }
}

/// The address of a supervised actor. It stays valid across restarts; see
/// the crate docs for what happens to messages while the actor is down.
pub struct SupervisedAddr<A: Actor> {
    tx: mpsc::Sender<Box<dyn Letter<A>>>,
    actor: Arc<str>,
}

impl<A: Actor> Clone for SupervisedAddr<A> {
    fn clone(&self) -> Self {
        SupervisedAddr {
            tx: self.tx.clone(),
            actor: self.actor.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> SupervisedAddr<A> {
    /// Sends `msg` and waits for the handler's reply. Waits for room when the
    /// mailbox is full.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, SendError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let (reply, answer) = oneshot::channel();
        let letter = Box::new(Envelope {
            msg,
            reply: Some(reply),
        });
        if self.tx.send(letter).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Queues `msg` without a reply, waiting for room when the mailbox is
    /// full.
    pub async fn tell<M>(&self, msg: M) -> Result<(), SendError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let letter = Box::new(Envelope { msg, reply: None });
        self.tx.send(letter).await.map_err(|_| self.stopped())
    }

    /// Queues `msg` without waiting and without a reply; refuses when the
    /// mailbox is full or the actor is stopped.
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let letter = Box::new(Envelope { msg, reply: None });
        self.tx.try_send(letter).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::MailboxFull {
                actor: self.actor.to_string(),
                capacity: MAILBOX_CAPACITY,
            },
            mpsc::error::TrySendError::Closed(_) => self.stopped(),
        })
    }

    /// The actor's name within its component.
    pub fn name(&self) -> &str {
        &self.actor
    }

    fn stopped(&self) -> SendError {
        SendError::ActorStopped {
            actor: self.actor.to_string(),
        }
    }
}

/// Handed to an actor's factory: lets the actor stop itself with an error,
/// which counts as a failure and is restarted like a panic.
#[derive(Clone)]
pub struct Supervision {
    failure: Rc<RefCell<Option<String>>>,
}

impl Supervision {
    /// Records `reason` and stops the actor; the supervisor then treats it as
    /// failed.
    pub fn fail<A>(&self, ctx: &mut Context<A>, reason: impl Into<String>)
    where
        A: Actor<Context = Context<A>>,
    {
        *self.failure.borrow_mut() = Some(reason.into());
        ctx.stop();
    }
}

enum Control {
    Restart,
    Stop(oneshot::Sender<()>),
}

/// The supervisor's side of one actor, kept by its component: manual
/// restart and stop.
pub struct ActorControl {
    name: Arc<str>,
    ctl: mpsc::UnboundedSender<Control>,
    supervisor: AbortHandle,
    instance: Rc<RefCell<Option<AbortHandle>>>,
}

impl ActorControl {
    /// The actor's name within its component.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Restarts the actor now if it is failed (in `ERROR` under `stop`, or
    /// waiting for its restart delay); does nothing to a running actor.
    pub fn restart(&self) {
        let _ = self.ctl.send(Control::Restart);
    }

    /// Stops the actor as the crate docs describe and waits for it, at most
    /// [`STOP_GRACE`]; then aborts it.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.ctl.send(Control::Stop(done)).is_ok()
            && tokio::time::timeout(STOP_GRACE, stopped).await.is_ok()
        {
            return;
        }
        warn!(actor = %self.name, grace_ms = STOP_GRACE.as_millis() as u64, "actor did not stop in time, aborting it");
        self.abort();
    }

    fn abort(&self) {
        self.supervisor.abort();
        if let Some(instance) = self.instance.borrow_mut().take() {
            instance.abort();
        }
    }
}

/// The name of a supervised actor and the component whose policy it follows.
#[derive(Clone)]
pub struct SupervisorSpec {
    /// Component instance name.
    pub component: Arc<str>,
    /// Actor name within the component.
    pub actor: Arc<str>,
    /// The component's restart policy.
    pub policy: RestartPolicy,
    /// Where states are published.
    pub board: StatusBoard,
}

/// Starts `factory`'s actor under supervision on the current actix arbiter.
/// The factory runs again, on the same thread, for every restart.
pub fn supervise<A, F>(spec: SupervisorSpec, factory: F) -> (SupervisedAddr<A>, ActorControl)
where
    A: Actor<Context = Context<A>>,
    F: FnMut(&mut Context<A>, &Supervision) -> A + 'static,
{
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let instance = Rc::new(RefCell::new(None));
    let runner = Runner {
        spec: spec.clone(),
        factory: Box::new(factory),
        rx,
        ctl: ctl_rx,
        instance_abort: instance.clone(),
        log_limit: LogLimit::default(),
    };
    let supervisor = actix_rt::spawn(runner.run()).abort_handle();
    let addr = SupervisedAddr {
        tx,
        actor: spec.actor.clone(),
    };
    let control = ActorControl {
        name: spec.actor,
        ctl: ctl_tx,
        supervisor,
        instance,
    };
    (addr, control)
}

type Factory<A> = Box<dyn FnMut(&mut Context<A>, &Supervision) -> A>;

struct Instance<A: Actor> {
    addr: Addr<A>,
    task: JoinHandle<std::thread::Result<()>>,
    started: Option<oneshot::Receiver<()>>,
    stop: Option<oneshot::Sender<()>>,
    failure: Rc<RefCell<Option<String>>>,
}

/// How an instance ended.
enum Ended {
    Failed(String),
    Finished,
    StopRequested(Option<oneshot::Sender<()>>),
}

/// What to do after a failure.
enum Next {
    Restart,
    Stop(Option<oneshot::Sender<()>>),
}

struct Runner<A: Actor<Context = Context<A>>> {
    spec: SupervisorSpec,
    factory: Factory<A>,
    rx: mpsc::Receiver<Box<dyn Letter<A>>>,
    ctl: mpsc::UnboundedReceiver<Control>,
    instance_abort: Rc<RefCell<Option<AbortHandle>>>,
    log_limit: LogLimit,
}

/// Failures logged per second before a crash loop is summarised: an actor
/// failing thousands of times a second under `immediate` must not bury the
/// log (the status board keeps the count and the last reason regardless).
pub const FAILURE_LOGS_PER_SECOND: u32 = 5;

#[derive(Default)]
struct LogLimit {
    window: Option<tokio::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// Whether to log this failure; returns how many were suppressed since
    /// the last logged one.
    fn admit(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.logged = 0;
            }
        }
        if self.logged < FAILURE_LOGS_PER_SECOND {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// An actor's factory panicked: no instance was made.
#[derive(Debug, thiserror::Error)]
#[error("factory panicked: {0}")]
struct FactoryPanicked(String);

impl<A: Actor<Context = Context<A>>> Runner<A> {
    async fn run(mut self) {
        loop {
            self.report(State::Starting, None);
            let ended = match self.spawn_instance() {
                Ok(mut instance) => {
                    let ended = self.run_instance(&mut instance).await;
                    if let Ended::StopRequested(done) = ended {
                        self.stop_instance(instance).await;
                        return self.finish(done);
                    }
                    ended
                }
                Err(panicked) => Ended::Failed(panicked.to_string()),
            };
            match ended {
                Ended::Failed(reason) => match self.after_failure(reason).await {
                    Next::Restart => continue,
                    Next::Stop(done) => return self.finish(done),
                },
                Ended::Finished => {
                    info!(component = %self.spec.component, actor = %self.spec.actor, "actor finished");
                    return self.finish(None);
                }
                Ended::StopRequested(done) => return self.finish(done),
            }
        }
    }

    fn spawn_instance(&mut self) -> Result<Instance<A>, FactoryPanicked> {
        let mut ctx = Context::<A>::new();
        let failure = Rc::new(RefCell::new(None));
        let supervision = Supervision {
            failure: failure.clone(),
        };
        let (started_tx, started_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // Spawned items are first polled after `started` returned, so this
        // both signals "running" and waits for the supervisor's stop.
        ctx.spawn(
            fut::wrap_future::<_, A>(async move {
                let _ = started_tx.send(());
                let _ = stop_rx.await;
            })
            .map(|(), _actor, ctx| ctx.stop()),
        );
        let factory = &mut self.factory;
        let actor = catch_unwind(AssertUnwindSafe(|| factory(&mut ctx, &supervision)))
            .map_err(|p| FactoryPanicked(panic_message(&*p)))?;
        let addr = ctx.address();
        let task = actix_rt::spawn(AssertUnwindSafe(ctx.into_future(actor)).catch_unwind());
        *self.instance_abort.borrow_mut() = Some(task.abort_handle());
        Ok(Instance {
            addr,
            task,
            started: Some(started_rx),
            stop: Some(stop_tx),
            failure,
        })
    }

    /// Runs one instance until it ends or a stop is requested.
    async fn run_instance(&mut self, inst: &mut Instance<A>) -> Ended {
        if let Some(started) = inst.started.take() {
            if started.await.is_err() {
                return Self::ended(inst).await;
            }
        }
        self.report(State::Run, None);
        let mut rx_open = true;
        loop {
            tokio::select! {
                biased;
                ctl = self.ctl.recv() => match ctl {
                    Some(Control::Stop(done)) => return Ended::StopRequested(Some(done)),
                    Some(Control::Restart) => {}
                    None => return Ended::StopRequested(None),
                },
                result = &mut inst.task => return classify(result, &inst.failure),
                letter = self.rx.recv(), if rx_open => match letter {
                    // Every address is gone; the actor may still run on timers.
                    None => rx_open = false,
                    Some(letter) => {
                        if let Some(orphan) = letter.deliver(&inst.addr).await {
                            let ended = Self::ended(inst).await;
                            orphan(self.error_for(&ended));
                            return ended;
                        }
                    }
                },
            }
        }
    }

    /// Waits for an instance's task to end and classifies how it ended.
    async fn ended(inst: &mut Instance<A>) -> Ended {
        let result = (&mut inst.task).await;
        classify(result, &inst.failure)
    }

    fn error_for(&self, ended: &Ended) -> SendError {
        match ended {
            Ended::Failed(reason) => SendError::ActorFailed {
                actor: self.spec.actor.to_string(),
                reason: reason.clone(),
            },
            _ => SendError::ActorStopped {
                actor: self.spec.actor.to_string(),
            },
        }
    }

    async fn after_failure(&mut self, reason: String) -> Next {
        if let Some(suppressed) = self.log_limit.admit() {
            error!(component = %self.spec.component, actor = %self.spec.actor, %reason, policy = %self.spec.policy, suppressed, "actor failed");
        }
        self.report(State::Error, Some(reason));
        match self.spec.policy.delay() {
            None => match self.ctl.recv().await {
                Some(Control::Restart) => Next::Restart,
                Some(Control::Stop(done)) => Next::Stop(Some(done)),
                None => Next::Stop(None),
            },
            Some(delay) if delay.is_zero() => {
                // No timer, but let the other tasks of this thread run first:
                // an actor failing in a loop must not starve them.
                tokio::task::yield_now().await;
                match self.ctl.try_recv() {
                    Ok(Control::Stop(done)) => Next::Stop(Some(done)),
                    Err(mpsc::error::TryRecvError::Disconnected) => Next::Stop(None),
                    _ => Next::Restart,
                }
            }
            Some(delay) => {
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                tokio::select! {
                    biased;
                    ctl = self.ctl.recv() => match ctl {
                        Some(Control::Restart) => Next::Restart,
                        Some(Control::Stop(done)) => Next::Stop(Some(done)),
                        None => Next::Stop(None),
                    },
                    _ = &mut sleep => Next::Restart,
                }
            }
        }
    }

    /// Stop, step by step: close the mailbox, hand over what is queued, then
    /// stop the instance through actix and wait for it.
    async fn stop_instance(&mut self, mut inst: Instance<A>) {
        self.report(State::Stopping, None);
        self.rx.close();
        while let Some(letter) = self.rx.recv().await {
            if let Some(orphan) = letter.deliver(&inst.addr).await {
                orphan(SendError::ActorStopped {
                    actor: self.spec.actor.to_string(),
                });
                break;
            }
        }
        if let Some(stop) = inst.stop.take() {
            let _ = stop.send(());
        }
        if let Ended::Failed(reason) = Self::ended(&mut inst).await {
            warn!(component = %self.spec.component, actor = %self.spec.actor, %reason, "actor failed while stopping");
        }
    }

    /// Refuses whatever is still queued and records `STOPPED`.
    fn finish(&mut self, done: Option<oneshot::Sender<()>>) {
        self.rx.close();
        while let Ok(letter) = self.rx.try_recv() {
            letter.refuse(SendError::ActorStopped {
                actor: self.spec.actor.to_string(),
            });
        }
        self.instance_abort.borrow_mut().take();
        self.report(State::Stopped, None);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn report(&self, state: State, reason: Option<String>) {
        self.spec
            .board
            .set_actor(&self.spec.component, &self.spec.actor, state, reason);
    }
}

fn classify(
    result: Result<std::thread::Result<()>, tokio::task::JoinError>,
    failure: &RefCell<Option<String>>,
) -> Ended {
    match result {
        Ok(Ok(())) => match failure.borrow_mut().take() {
            Some(reason) => Ended::Failed(reason),
            None => Ended::Finished,
        },
        Ok(Err(payload)) => Ended::Failed(format!("panicked: {}", panic_message(&*payload))),
        Err(e) => Ended::Failed(format!("task ended: {e}")),
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_crash_loop_is_logged_a_few_times_a_second_with_the_count_suppressed() {
        let mut limit = LogLimit::default();
        for _ in 0..FAILURE_LOGS_PER_SECOND {
            assert_eq!(limit.admit(), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(limit.admit(), None);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.admit(), Some(100));
    }
}
