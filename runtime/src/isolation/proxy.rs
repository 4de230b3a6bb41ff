//! The host's side of an isolated component: the proxy component, the
//! `process` actor (one instance per child) and the link to one child.

use std::{
    cell::RefCell,
    io::{self, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use banalytics_sdk::{
    actix::{self, prelude::*},
    component::{Component, ComponentContext, ComponentInit},
    plugin::{InitMessage, StartMessage, StateMessage},
    status::now_ms,
    Bus, ComponentError, State, StatusBoard, SubscriberId, Supervision,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{
    frame::{Answer, Frame},
    spawn::{self, Guard, Reader, SpawnError, Spawned, Writer},
    Limits, DATA_DIR, EXIT_GRACE, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT,
    STOP_GRACE, TMP_PREFIX,
};
use crate::{
    authority::Publisher,
    plugins::{block_on, log_plugin_event, KindEntry},
    process::{describe_exit, wait_for},
};

/// The name of the actor that is the child process, on the board.
const PROCESS_ACTOR: &str = "process";

/// Frames that may wait for a child's socket: the writer thread writes
/// what waits in one go, so a burst costs few system calls; a full queue
/// makes the `process` actor wait, and its mailbox fill.
const WRITE_QUEUE: usize = 256;

/// Why a child could not be started, or did not answer as it should.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The folders of the child (its `data/`, its temporary folder).
    #[error("cannot make {what} for the plugin process: {source}")]
    Folder {
        what: String,
        #[source]
        source: io::Error,
    },
    /// This executable cannot be found to start the child.
    #[error("{0}")]
    Exe(#[source] io::Error),
    /// The plugin refused (its message).
    #[error("{0}")]
    Refused(String),
    /// The child answered a request with another frame.
    #[error("the plugin process answered {what} with {frame}")]
    Unexpected { what: &'static str, frame: String },
    /// The child did not answer; how it ended.
    #[error("no answer to {what}: {ended}")]
    NoAnswer { what: &'static str, ended: String },
}

/// What every child of one component needs.
struct ChildSpec {
    entry: Arc<KindEntry>,
    component: String,
    init_json: Vec<u8>,
    limits: Limits,
    /// The box home (its `data/` is the child's to write in).
    home: std::path::PathBuf,
}

/// Creates an isolated instance of `entry`'s kind: the first child is
/// spawned and its instance created now, so that a configuration the
/// plugin refuses is refused before anything starts, as in process.
pub(crate) fn create(
    entry: &Arc<KindEntry>,
    init: &ComponentInit,
    limits: Limits,
) -> Result<Box<dyn Component>, ComponentError> {
    let spec = Arc::new(ChildSpec {
        entry: entry.clone(),
        component: init.name.clone(),
        init_json: serde_json::to_vec(&InitMessage::new(init)).expect("init serializes"),
        limits,
        home: init.home.clone(),
    });
    let first = Link::open(&spec).map_err(|e| ComponentError::Start(e.to_string()))?;
    Ok(Box::new(IsolatedComponent {
        spec,
        first: Arc::new(Mutex::new(Some(first))),
        forwarders: None,
    }))
}

/// The proxy of an isolated component.
struct IsolatedComponent {
    spec: Arc<ChildSpec>,
    /// The child spawned at `create`, for the first start.
    first: Arc<Mutex<Option<Link>>>,
    forwarders: Option<Forwarders>,
}

struct Forwarders {
    bus: Bus,
    subscriptions: Vec<(String, SubscriberId)>,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// What the reader thread of a child reaches while the component runs.
struct Bridge {
    bus: Bus,
    board: StatusBoard,
    /// The proxy's own raw subscriptions: a message from the child is not
    /// forwarded back to it.
    except: Vec<SubscriberId>,
}

impl Component for IsolatedComponent {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let bus = ctx.bus().clone();
        let subs: Vec<_> = self
            .spec
            .entry
            .info
            .subscribes
            .iter()
            .map(|t| (t.clone(), bus.subscribe_raw(t)))
            .collect();
        let bridge = Arc::new(Bridge {
            bus: bus.clone(),
            board: ctx.board().clone(),
            except: subs.iter().map(|(_, s)| s.id()).collect(),
        });
        let args = serde_json::to_vec(&StartMessage {
            policy: ctx.policy().to_string(),
        })
        .expect("start args serialize");
        // The current child's writer, for `restart NAME`.
        let current: Rc<RefCell<Option<mpsc::Sender<Vec<u8>>>>> = Rc::default();
        let (spec, first, slot) = (self.spec.clone(), self.first.clone(), current.clone());
        let addr = ctx.supervise(PROCESS_ACTOR, move |_, supervision: &Supervision| {
            let taken = first.lock().expect("first child poisoned").take();
            let link = match taken {
                Some(link) => Ok(link),
                None => Link::open(&spec),
            };
            match link.and_then(|link| link.start(&args, bridge.clone())) {
                Ok(link) => {
                    *slot.borrow_mut() = Some(link.tx.clone());
                    ChildActor::new(Some(link), None, supervision.clone())
                }
                Err(reason) => {
                    *slot.borrow_mut() = None;
                    ChildActor::new(None, Some(reason.to_string()), supervision.clone())
                }
            }
        });
        ctx.on_restart_failed(move || {
            if let Some(tx) = current.borrow().as_ref() {
                let _ = tx.try_send(Frame::RestartFailed.to_bytes());
            }
        });
        // Messages for the child go through the actor's mailbox, which
        // keeps them while the child is down.
        let mut subscriptions = Vec::new();
        let mut tasks = Vec::new();
        for (topic, mut sub) in subs {
            subscriptions.push((topic.clone(), sub.id()));
            let addr = addr.clone();
            let task = actix_rt::spawn(async move {
                while let Some(json) = sub.recv().await {
                    let message = Deliver {
                        topic: topic.clone(),
                        json: Arc::unwrap_or_clone(json),
                    };
                    if addr.tell(message).await.is_err() {
                        break;
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        self.forwarders = Some(Forwarders {
            bus,
            subscriptions,
            tasks,
        });
        Ok(())
    }

    fn stopped(&mut self) {
        if let Some(f) = self.forwarders.take() {
            for task in f.tasks {
                task.abort();
            }
            for (topic, id) in f.subscriptions {
                f.bus.unsubscribe(&topic, id);
            }
        }
    }
}

/// A bus message for the instance in the child.
struct Deliver {
    topic: String,
    json: Vec<u8>,
}

impl Message for Deliver {
    type Result = ();
}

/// One child process, as a supervised actor: it fails when the child dies
/// or stops answering, and stops the child when it is stopped.
struct ChildActor {
    link: Option<Link>,
    failure: Option<String>,
    supervision: Supervision,
    next_ping: u64,
}

impl ChildActor {
    fn new(link: Option<Link>, failure: Option<String>, supervision: Supervision) -> Self {
        ChildActor {
            link,
            failure,
            supervision,
            next_ping: 0,
        }
    }

    /// The child ended (`hung`: it answered no heartbeat and is killed
    /// now): the actor fails with how it ended.
    fn ended(&mut self, ctx: &mut Context<Self>, hung: bool) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        let reason = link.reap(hung);
        link.detach_dead();
        self.supervision.fail(ctx, reason);
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else { return };
        if link.since_pong() > HEARTBEAT_TIMEOUT {
            self.ended(ctx, true);
            return;
        }
        self.next_ping += 1;
        // A full queue means the child reads nothing: the missing pong
        // says so in time.
        let _ = link.tx.try_send(Frame::Ping(self.next_ping).to_bytes());
    }
}

impl Actor for ChildActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(reason) = self.failure.take() {
            self.supervision.fail(ctx, reason);
            return;
        }
        if let Some(gone) = self.link.as_mut().and_then(|l| l.gone.take()) {
            ctx.spawn(
                actix::fut::wrap_future(gone).map(|_, act: &mut Self, ctx| act.ended(ctx, false)),
            );
        }
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| act.heartbeat(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(mut link) = self.link.take() {
            link.shutdown();
        }
    }
}

impl Handler<Deliver> for ChildActor {
    type Result = actix::Response<()>;

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) -> Self::Result {
        let Some(tx) = self.link.as_ref().map(|l| l.tx.clone()) else {
            return actix::Response::reply(());
        };
        let frame = Frame::Deliver {
            topic: msg.topic,
            message: msg.json,
        }
        .to_bytes();
        // At once while the writer keeps up; else the handler waits for
        // room, and with it the mailbox.
        match tx.try_send(frame) {
            Err(mpsc::error::TrySendError::Full(frame)) => actix::Response::fut(async move {
                let _ = tx.send(frame).await;
            }),
            _ => actix::Response::reply(()),
        }
    }
}

/// What the reader thread of one child shares with its link.
struct Side {
    component: String,
    plugin: String,
    /// What the child may publish (`crate::authority`).
    authority: Publisher,
    bridge: Mutex<Option<Arc<Bridge>>>,
    /// Milliseconds from `epoch` to the last pong (or the start).
    last_pong_ms: AtomicU64,
    epoch: Instant,
}

/// One child process and its socket: frames go out through a writer
/// thread, come in through a reader thread.
struct Link {
    child: Child,
    /// What ties the child to the host (its Job object on Windows).
    _guard: Guard,
    /// The child's own temporary folder, removed when the link is dropped
    /// (after the child was reaped: fields drop after `Drop::drop`).
    _tmp: tempfile::TempDir,
    reaped: bool,
    tx: mpsc::Sender<Vec<u8>>,
    replies: std_mpsc::Receiver<Frame>,
    gone: Option<oneshot::Receiver<()>>,
    side: Arc<Side>,
}

impl Link {
    /// Spawns a child for `spec` and creates the instance in it.
    fn open(spec: &ChildSpec) -> Result<Link, LinkError> {
        let tmp = sandbox_folders(spec)?;
        let command = child_command(spec, &tmp.path().to_owned())?;
        let Spawned {
            child,
            reader,
            writer,
            guard,
        } = spawn::spawn(&spec.entry.spawner, command, spec.limits)?;
        info!(component = %spec.component, pid = child.id(), library = %spec.entry.plugin.path.display(), "plugin process started");
        let side = Arc::new(Side {
            component: spec.component.clone(),
            plugin: spec.entry.plugin.label.clone(),
            authority: Publisher::new(
                &spec.component,
                &spec.entry.plugin.label,
                &spec.entry.info.publishes,
            ),
            bridge: Mutex::new(None),
            last_pong_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (reply_tx, replies) = std_mpsc::channel();
        let (gone_tx, gone) = oneshot::channel();
        let thread = |e| LinkError::Spawn(SpawnError::Start(e));
        let reader_side = side.clone();
        std::thread::Builder::new()
            .name(format!("from process {}", spec.component))
            .spawn(move || {
                read_frames(reader, &reader_side, &reply_tx);
                let _ = gone_tx.send(());
            })
            .map_err(thread)?;
        std::thread::Builder::new()
            .name(format!("to process {}", spec.component))
            .spawn(move || write_frames(writer, rx))
            .map_err(thread)?;
        let mut link = Link {
            child,
            _guard: guard,
            _tmp: tmp,
            reaped: false,
            tx,
            replies,
            gone: Some(gone),
            side,
        };
        let create = Frame::Create {
            kind: spec.entry.info.kind.clone(),
            init: spec.init_json.clone(),
        };
        match link.call(create, "create")? {
            Frame::Created(Answer::Done) => Ok(link),
            Frame::Created(Answer::Refused(e)) => Err(LinkError::Refused(e)),
            other => Err(LinkError::Unexpected {
                what: "create",
                frame: format!("{other:?}"),
            }),
        }
    }

    /// Sends `frame` and waits for the answer, at most [`HANDSHAKE_TIMEOUT`];
    /// a child that does not answer is killed, and the error says how it
    /// ended.
    fn call(&mut self, frame: Frame, what: &'static str) -> Result<Frame, LinkError> {
        if self.tx.try_send(frame.to_bytes()).is_ok() {
            if let Ok(answer) = self.replies.recv_timeout(HANDSHAKE_TIMEOUT) {
                return Ok(answer);
            }
        }
        let hung = matches!(self.child.try_wait(), Ok(None));
        Err(LinkError::NoAnswer {
            what,
            ended: self.reap(hung),
        })
    }

    /// Starts the instance with `args`; the bridge carries its messages and
    /// states from now on.
    fn start(mut self, args: &[u8], bridge: Arc<Bridge>) -> Result<Link, LinkError> {
        *self.side.bridge.lock().expect("bridge poisoned") = Some(bridge);
        let answer = self.call(
            Frame::Start {
                args: args.to_vec(),
            },
            "start",
        );
        self.side.last_pong_ms.store(
            self.side.epoch.elapsed().as_millis() as u64,
            Ordering::SeqCst,
        );
        match answer? {
            Frame::Started(Answer::Done) => Ok(self),
            Frame::Started(Answer::Refused(e)) => Err(LinkError::Refused(e)),
            other => Err(LinkError::Unexpected {
                what: "start",
                frame: format!("{other:?}"),
            }),
        }
    }

    fn since_pong(&self) -> Duration {
        let now = self.side.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.side.last_pong_ms.load(Ordering::SeqCst)))
    }

    /// Waits for the child to end, killing it first when `kill`; how it
    /// ended, in words.
    fn reap(&mut self, kill: bool) -> String {
        if kill {
            let _ = self.child.kill();
        }
        // The socket closes a moment before the process is gone.
        let status = match wait_for(&mut self.child, EXIT_GRACE) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                match self.child.wait() {
                    Ok(status) => status,
                    Err(e) => return format!("the plugin process cannot be waited for: {e}"),
                }
            }
        };
        self.reaped = true;
        let ended = describe_exit("the plugin process", status);
        if kill {
            format!(
                "{ended}: it answered no heartbeat for {} s",
                HEARTBEAT_TIMEOUT.as_secs()
            )
        } else {
            ended
        }
    }

    /// From now on the child's frames reach nobody.
    fn detach(&self) {
        *self.side.bridge.lock().expect("bridge poisoned") = None;
    }

    /// The child died: the plugin's actors it ran, mirrored on the board,
    /// are gone with it (`STOPPED`, their counts and errors kept) until the
    /// next child reports its own.
    fn detach_dead(&self) {
        let Some(bridge) = self.side.bridge.lock().expect("bridge poisoned").take() else {
            return;
        };
        let Some(component) = bridge.board.component(&self.side.component) else {
            return;
        };
        for (actor, mut status) in component.actors {
            if actor == PROCESS_ACTOR || status.state == State::Stopped {
                continue;
            }
            status.state = State::Stopped;
            status.since_ms = now_ms();
            bridge
                .board
                .mirror_actor(&self.side.component, &actor, status);
        }
    }

    /// Stops the child: `stop`, then its socket closed, then SIGTERM, then
    /// SIGKILL (module docs).
    fn shutdown(&mut self) {
        let (component, pid) = (self.side.component.clone(), self.child.id());
        if self.tx.try_send(Frame::Stop.to_bytes()).is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                match self
                    .replies
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(Frame::Stopped) => break,
                    Ok(_) => continue,
                    Err(_) => {
                        warn!(%component, pid, grace_ms = STOP_GRACE.as_millis() as u64, "the plugin process did not stop in time");
                        break;
                    }
                }
            }
        }
        self.detach();
        // Closing the writer closes the socket for writing: the child
        // destroys its instance and exits.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        let mut status = wait_for(&mut self.child, EXIT_GRACE);
        if status.is_none() && cfg!(unix) {
            warn!(%component, pid, "the plugin process did not exit; sending SIGTERM");
            spawn::ask_to_exit(&self.child);
            status = wait_for(&mut self.child, EXIT_GRACE);
        }
        if status.is_none() {
            warn!(%component, pid, "{}", KILLING);
            let _ = self.child.kill();
            status = self.child.wait().ok();
        }
        self.reaped = true;
        if let Some(status) = status {
            info!(%component, pid, ended = %describe_exit("the plugin process", status), "plugin process stopped");
        }
    }
}

/// What the last step of a stop says: SIGKILL on Unix, `TerminateProcess`
/// on Windows (which has no SIGTERM step before it).
const KILLING: &str = if cfg!(unix) {
    "the plugin process did not exit on SIGTERM; sending SIGKILL"
} else {
    "the plugin process did not exit; terminating it"
};

impl Drop for Link {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The folders the child's sandbox lets it write in: the home's `data/`,
/// made when missing, and a fresh temporary folder of its own (mode 0700,
/// in the host's temporary folder), which is returned.
fn sandbox_folders(spec: &ChildSpec) -> Result<tempfile::TempDir, LinkError> {
    let data = spec.home.join(DATA_DIR);
    std::fs::create_dir_all(&data).map_err(|source| LinkError::Folder {
        what: data.display().to_string(),
        source,
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            "{TMP_PREFIX}{}-{}-",
            std::process::id(),
            spec.component
        ))
        .tempdir()
        .map_err(|source| LinkError::Folder {
            what: "a temporary folder".to_owned(),
            source,
        })?;
    Ok(tmp)
}

/// The command of a child of `spec` with its temporary folder `tmp`
/// (`TMPDIR`, and on Windows `TMP` and `TEMP`).
fn child_command(spec: &ChildSpec, tmp: &PathBuf) -> Result<Command, LinkError> {
    let mut command = Command::new(std::env::current_exe().map_err(LinkError::Exe)?);
    command
        .arg("plugin-child")
        .arg("--library")
        .arg(&spec.entry.plugin.path)
        .arg("--log-level")
        .arg(log_level().to_string())
        .arg("--box-home")
        .arg(&spec.home)
        .arg("--tmp")
        .arg(tmp)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    #[cfg(windows)]
    command.env("TMP", tmp).env("TEMP", tmp);
    crate::notify::forget_for_child(&mut command);
    Ok(command)
}

/// The host's log level as a `LEVEL_*` number, for the child's `enabled`.
fn log_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// The writer thread: frames from the queue to the socket, what waits in
/// one write; at the end of the queue the link is closed for writing.
fn write_frames(mut stream: Writer, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(mut batch) = rx.blocking_recv() {
        while batch.len() < 64 << 10 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if stream.write_all(&batch).is_err() {
            break;
        }
    }
    spawn::close_write(stream);
}

/// The reader thread: the child's frames, until its socket closes.
fn read_frames(stream: Reader, side: &Side, replies: &std_mpsc::Sender<Frame>) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    loop {
        let frame = match Frame::read(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                warn!(component = %side.component, plugin = %side.plugin, error = %e, "unreadable frame from the plugin process");
                return;
            }
        };
        match frame {
            Frame::Publish { topic, message } => {
                let bridge = side.bridge.lock().expect("bridge poisoned").clone();
                if let Some(bridge) = bridge.filter(|b| side.authority.admit(&topic, &b.board)) {
                    let published = block_on(bridge.bus.publish_raw_except(
                        &topic,
                        message,
                        &bridge.except,
                    ));
                    if let Err(e) = published {
                        warn!(plugin = %side.plugin, component = %side.component, error = %e, "message from plugin refused");
                    }
                }
            }
            Frame::State(json) => {
                let Ok(state) = serde_json::from_slice::<StateMessage>(&json) else {
                    warn!(plugin = %side.plugin, component = %side.component, "unreadable state from plugin");
                    continue;
                };
                let bridge = side.bridge.lock().expect("bridge poisoned").clone();
                if let Some(bridge) = bridge {
                    for (actor, status) in state.actors {
                        bridge.board.mirror_actor(&side.component, &actor, status);
                    }
                    if !state.details.is_null() {
                        bridge.board.set_details(&side.component, state.details);
                    }
                }
            }
            Frame::Log {
                level,
                target,
                message,
            } => log_plugin_event(&side.plugin, level, &target, &message),
            Frame::Pong(_) => side
                .last_pong_ms
                .store(side.epoch.elapsed().as_millis() as u64, Ordering::SeqCst),
            answer @ (Frame::Created(_) | Frame::Started(_) | Frame::Stopped) => {
                let _ = replies.send(answer);
            }
            other => {
                warn!(component = %side.component, frame = ?other, "unexpected frame from the plugin process");
            }
        }
    }
}
