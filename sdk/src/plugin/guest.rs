//! The plugin's side of the ABI, called by the functions
//! [`export_plugin!`](crate::export_plugin) generates. Not for direct use.

use std::{
    ffi::c_void,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, OnceLock},
};

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{
    bus::{Bus, SubscriberId},
    component::ComponentContext,
    driver::{Bridge, Command, Driver, COMMAND_QUEUE},
    policy::RestartPolicy,
    status::StatusBoard,
    supervisor::panic_message,
};

/// Runs `f`, turning a panic into [`RC_PANICKED`] with its message in
/// `err` (when not null).
fn guard(err: *mut Buf, f: impl FnOnce() -> Result<(), (i32, String)>) -> i32 {
    let (code, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return RC_OK,
        Ok(Err(e)) => e,
        Err(p) => (
            RC_PANICKED,
            format!("plugin panicked: {}", panic_message(&*p)),
        ),
    };
    if !err.is_null() {
        // SAFETY: the host passes a writable `Buf` (or null).
        unsafe { err.write(Buf::from_vec(message.into_bytes())) };
    }
    code
}

fn error(e: impl fmt::Display) -> (i32, String) {
    (RC_ERROR, e.to_string())
}

/// Panics unless `kinds` are named as `declared`, in order: the names in the
/// identity record (written at compile time) must be the kinds the library
/// makes. Called where the kinds are first made, inside an exported call,
/// so the panic is answered like any other.
pub fn check_declared(declared: &[&str], kinds: &[PluginKind]) {
    let made: Vec<&str> = kinds.iter().map(|k| k.kind.name()).collect();
    assert!(
        made == declared,
        "export_plugin! declares the kinds {declared:?} but makes {made:?}"
    );
}

/// `banalytics_plugin_identity`.
///
/// # Safety
/// `out` is writable.
pub unsafe fn identity(kinds: fn() -> &'static [PluginKind], out: *mut Buf) -> i32 {
    guard(std::ptr::null_mut(), || {
        let identity = Identity {
            kinds: kinds()
                .iter()
                .map(|k| KindInfo {
                    kind: k.kind.name().to_owned(),
                    subscribes: k.subscribes.iter().map(|t| (*t).to_owned()).collect(),
                    publishes: k.publishes.iter().map(|t| (*t).to_owned()).collect(),
                })
                .collect(),
            ..Identity::host()
        };
        let json = serde_json::to_vec(&identity).map_err(error)?;
        // SAFETY: the host passes a writable `Buf`.
        unsafe { out.write(Buf::from_vec(json)) };
        Ok(())
    })
}

struct LogTarget {
    ctx: *mut c_void,
    enabled: extern "C" fn(*mut c_void, u32) -> bool,
    log: extern "C" fn(*mut c_void, u32, Bytes, Bytes),
}
// SAFETY: `HostLog` promises its functions may be called from any thread.
unsafe impl Send for LogTarget {}
// SAFETY: as above.
unsafe impl Sync for LogTarget {}

static HOST_LOG: OnceLock<LogTarget> = OnceLock::new();

/// `banalytics_plugin_init`.
///
/// # Safety
/// `log` points at a valid `HostLog`.
pub unsafe fn init(log: *const HostLog) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the host passes a valid `HostLog`.
        let log = unsafe { &*log };
        let first = HOST_LOG
            .set(LogTarget {
                ctx: log.ctx,
                enabled: log.enabled,
                log: log.log,
            })
            .is_ok();
        if first {
            let _ = tracing::subscriber::set_global_default(HostLogger);
            std::panic::set_hook(Box::new(|info| {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = panic_message(info.payload());
                let thread = std::thread::current();
                tracing::error!(thread = thread.name().unwrap_or("?"), %location, panic = %message, "panic");
            }));
        }
        Ok(())
    })
}

/// This copy of `tracing`'s global subscriber: every event goes to the
/// host's log. Spans are not carried across.
struct HostLogger;

fn level_code(level: &tracing::Level) -> u32 {
    match *level {
        tracing::Level::ERROR => LEVEL_ERROR,
        tracing::Level::WARN => LEVEL_WARN,
        tracing::Level::INFO => LEVEL_INFO,
        tracing::Level::DEBUG => LEVEL_DEBUG,
        tracing::Level::TRACE => LEVEL_TRACE,
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use fmt::Write;
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl tracing::Subscriber for HostLogger {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The host's level may change after this library was loaded.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        HOST_LOG
            .get()
            .is_some_and(|h| (h.enabled)(h.ctx, level_code(meta.level())))
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let Some(host) = HOST_LOG.get() else { return };
        let mut text = Text::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let meta = event.metadata();
        (host.log)(
            host.ctx,
            level_code(meta.level()),
            Bytes::of(meta.target().as_bytes()),
            Bytes::of(text.message.as_bytes()),
        );
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// The host's callbacks of one instance.
struct Host {
    ctx: *mut c_void,
    publish: extern "C" fn(*mut c_void, Bytes, Bytes) -> i32,
    state: extern "C" fn(*mut c_void, Bytes),
    /// The forging topic of `export_plugin!(forge_topic = ..)`, a drill.
    forge: Option<&'static str>,
}

/// A message on the forging topic: what the host is handed instead.
#[derive(serde::Deserialize)]
struct Forged {
    topic: String,
    message: serde_json::Value,
}
// SAFETY: `HostCallbacks` are called from the instance's thread, which is
// what they are made for; the host keeps them valid until `destroy`.
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

impl Host {
    fn publish(&self, topic: &str, json: &[u8]) -> i32 {
        if self.forge == Some(topic) {
            // The drill: hand the host any topic, as a library built
            // without this SDK could.
            let Ok(Forged { topic, message }) = serde_json::from_slice(json) else {
                return RC_ERROR;
            };
            let json = message.to_string();
            return (self.publish)(
                self.ctx,
                Bytes::of(topic.as_bytes()),
                Bytes::of(json.as_bytes()),
            );
        }
        (self.publish)(self.ctx, Bytes::of(topic.as_bytes()), Bytes::of(json))
    }

    fn state(&self, board: &StatusBoard, name: &str) {
        let state = board
            .component(name)
            .map(|c| StateMessage {
                actors: c.actors,
                details: c.details,
            })
            .unwrap_or_default();
        if let Ok(json) = serde_json::to_vec(&state) {
            (self.state)(self.ctx, Bytes::of(&json));
        }
    }
}

/// One component instance: its thread and the channel to it.
struct Instance {
    kind: &'static PluginKind,
    tx: mpsc::Sender<Command>,
    thread: std::thread::JoinHandle<()>,
}

/// `banalytics_plugin_create`. `forge` is the forging topic of
/// `export_plugin!(forge_topic = ..)` (a drill), `None` otherwise.
///
/// # Safety
/// As the `plugin` module docs say; `out` and `err` are writable.
pub unsafe fn create(
    kinds: fn() -> &'static [PluginKind],
    forge: Option<&'static str>,
    kind: Bytes,
    init: Bytes,
    host: *const HostCallbacks,
    out: *mut *mut c_void,
    err: *mut Buf,
) -> i32 {
    guard(err, || {
        // SAFETY: borrowed for this call, copied before it returns.
        let (kind, init) = unsafe { (kind.as_slice(), init.as_slice()) };
        let kind = std::str::from_utf8(kind).map_err(error)?;
        let plugin_kind = kinds()
            .iter()
            .find(|k| k.kind.name() == kind)
            .ok_or_else(|| error(format!("this plugin has no kind {kind:?}")))?;
        let init: InitMessage = serde_json::from_slice(init).map_err(error)?;
        let init = init.into_init();
        let component = plugin_kind.kind.create(&init).map_err(error)?;
        // SAFETY: the host passes valid callbacks, valid until `destroy`.
        let host = unsafe { &*host };
        let host = Arc::new(Host {
            ctx: host.ctx,
            publish: host.publish,
            state: host.state,
            forge,
        });
        let board = StatusBoard::new();
        board.register(&init.name, kind, &init.id.to_string());
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("plugin {}", init.name))
            .spawn(move || {
                // The driver holds the running actors, which stay on
                // this thread: it is built here, from parts that may
                // cross threads.
                let bridge = HostBridge {
                    kind: plugin_kind,
                    host,
                    attached: None,
                };
                let driver = Driver::bridged(init, Bus::new(), board, component, Box::new(bridge));
                let system = actix_rt::System::new();
                system.block_on(driver.run(rx));
            })
            .map_err(error)?;
        let instance = Box::new(Instance {
            kind: plugin_kind,
            tx,
            thread,
        });
        // SAFETY: the host passes a writable pointer slot.
        unsafe { out.write(Box::into_raw(instance).cast()) };
        Ok(())
    })
}

/// # Safety
/// `instance` came from `create` and was not destroyed.
unsafe fn instance<'a>(instance: *mut c_void) -> &'a Instance {
    // SAFETY: the caller promises a live instance.
    unsafe { &*instance.cast::<Instance>() }
}

/// `banalytics_plugin_start`.
///
/// # Safety
/// As the `plugin` module docs say.
pub unsafe fn start(instance: *mut c_void, args: Bytes, err: *mut Buf) -> i32 {
    guard(err, || {
        // SAFETY: the host passes a live instance and borrowed args.
        let (inst, args) = unsafe { (self::instance(instance), args.as_slice()) };
        let args: StartMessage = serde_json::from_slice(args).map_err(error)?;
        let policy: RestartPolicy = args.policy.parse().map_err(error)?;
        let (reply, answer) = oneshot::channel();
        let closed = || (RC_CLOSED, "plugin instance is gone".to_owned());
        inst.tx
            .blocking_send(Command::SetPolicy(policy))
            .map_err(|_| closed())?;
        inst.tx
            .blocking_send(Command::Start(reply))
            .map_err(|_| closed())?;
        answer.blocking_recv().map_err(|_| closed())?.map_err(error)
    })
}

/// `banalytics_plugin_stop`.
///
/// # Safety
/// As the `plugin` module docs say.
pub unsafe fn stop(instance: *mut c_void) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the host passes a live instance.
        let inst = unsafe { self::instance(instance) };
        let (reply, answer) = oneshot::channel();
        let closed = || (RC_CLOSED, String::new());
        inst.tx
            .blocking_send(Command::Stop(reply))
            .map_err(|_| closed())?;
        answer.blocking_recv().map(drop).map_err(|_| closed())
    })
}

/// `banalytics_plugin_restart_failed`.
///
/// # Safety
/// As the `plugin` module docs say.
pub unsafe fn restart_failed(instance: *mut c_void) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the host passes a live instance.
        let inst = unsafe { self::instance(instance) };
        let (reply, answer) = oneshot::channel();
        let closed = || (RC_CLOSED, String::new());
        inst.tx
            .blocking_send(Command::RestartFailed(reply))
            .map_err(|_| closed())?;
        answer.blocking_recv().map(drop).map_err(|_| closed())
    })
}

/// `banalytics_plugin_deliver`.
///
/// # Safety
/// As the `plugin` module docs say.
pub unsafe fn deliver(instance: *mut c_void, topic: Bytes, message: Bytes) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the host passes a live instance and borrowed bytes.
        let (inst, topic, message) = unsafe {
            (
                self::instance(instance),
                topic.as_slice(),
                message.as_slice(),
            )
        };
        // Only the topics the kind declared; `&'static` spares a copy.
        let topic = inst
            .kind
            .subscribes
            .iter()
            .find(|t| t.as_bytes() == topic)
            .ok_or_else(|| {
                error(format!(
                    "topic {:?} is not one the kind subscribes to",
                    String::from_utf8_lossy(topic)
                ))
            })?;
        inst.tx
            .blocking_send(Command::Deliver(topic, message.to_vec()))
            .map_err(|_| (RC_CLOSED, String::new()))
    })
}

/// `banalytics_plugin_destroy`.
///
/// # Safety
/// As the `plugin` module docs say; `instance` is not used after.
pub unsafe fn destroy(instance: *mut c_void) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the host hands the instance back, once.
        let inst = unsafe { Box::from_raw(instance.cast::<Instance>()) };
        let Instance { tx, thread, .. } = *inst;
        drop(tx);
        thread.join().map_err(|p| (RC_PANICKED, panic_message(&*p)))
    })
}

/// `banalytics_plugin_free_buf`.
///
/// # Safety
/// `buf` came from this library and is freed once.
pub unsafe fn free_buf(buf: Buf) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host returns a buffer of ours, once.
        drop(unsafe { buf.into_vec() });
    }));
}

/// Bridges an instance to the host around each start: forwards the
/// messages its component publishes on the kind's `publishes` topics, and
/// its actor states after every change and once more at the end.
struct HostBridge {
    kind: &'static PluginKind,
    host: Arc<Host>,
    attached: Option<Attached>,
}

/// What [`HostBridge::attach`] set up for one start.
struct Attached {
    bus: Bus,
    board: StatusBoard,
    name: String,
    tasks: Vec<tokio::task::AbortHandle>,
    outbound: Vec<(&'static str, SubscriberId)>,
    except: Vec<SubscriberId>,
}

impl Bridge for HostBridge {
    fn attach(&mut self, ctx: &ComponentContext) {
        let (bus, board, name) = (
            ctx.bus().clone(),
            ctx.board().clone(),
            ctx.name().to_owned(),
        );
        let mut tasks = Vec::new();
        let mut outbound = Vec::new();
        for topic in self.kind.publishes {
            let mut sub = bus.subscribe_raw(topic);
            outbound.push((*topic, sub.id()));
            let host = self.host.clone();
            let task = actix_rt::spawn(async move {
                while let Some(json) = sub.recv().await {
                    host.publish(topic, &json);
                }
            });
            tasks.push(task.abort_handle());
        }
        let (host, watched, watched_name) = (self.host.clone(), board.clone(), name.clone());
        let mut changes = board.changes();
        let watcher = actix_rt::spawn(async move {
            while changes.changed().await.is_ok() {
                host.state(&watched, &watched_name);
            }
        });
        tasks.push(watcher.abort_handle());
        let except = outbound.iter().map(|(_, id)| *id).collect();
        self.attached = Some(Attached {
            bus,
            board,
            name,
            tasks,
            outbound,
            except,
        });
    }

    fn detach(&mut self) {
        let Some(attached) = self.attached.take() else {
            return;
        };
        for task in attached.tasks {
            task.abort();
        }
        for (topic, id) in attached.outbound {
            attached.bus.unsubscribe(topic, id);
        }
        self.host.state(&attached.board, &attached.name);
    }

    fn own_subscribers(&self) -> &[SubscriberId] {
        self.attached.as_ref().map_or(&[], |a| &a.except)
    }
}
