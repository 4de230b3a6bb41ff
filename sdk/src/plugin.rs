//! Component plugins: the C ABI between the host and a plugin library, and
//! the plugin's side of it.
//!
//! A component crate becomes a plugin library (`crate-type = ["cdylib"]`)
//! with one line, [`export_plugin!`](crate::export_plugin), naming its
//! [`PluginKind`]s. The host (`banalytics-runtime`, `plugins.rs`) loads every
//! library in the home's `modules/` at start.
//!
//! # Why a C ABI
//!
//! The Rust ABI is not stable, and each plugin library carries its own copy
//! of std, tokio, actix, tracing and this SDK, with their own statics (the
//! global tracing subscriber, the panic hook, thread-locals that say "inside
//! a runtime"). So nothing Rust crosses the boundary: only `#[repr(C)]`
//! structs, integers and byte buffers. Messages cross as the JSON of their
//! bus topic ([`BusMessage::TOPIC`](crate::BusMessage::TOPIC)); the
//! component's configuration and lifecycle cross as small JSON documents.
//!
//! # The exported functions
//!
//! `export_plugin!` generates these `extern "C"` functions (`code` is one of
//! [`RC_OK`], [`RC_ERROR`], [`RC_PANICKED`], [`RC_CLOSED`]):
//!
//! | function | meaning |
//! | --- | --- |
//! | `banalytics_plugin_abi_version() -> u32` | [`ABI_VERSION`]; its signature never changes, so any host can read it first |
//! | `banalytics_plugin_identity(out: *mut Buf) -> code` | the JSON [`Identity`]: SDK version, rustc version, target, kinds |
//! | `banalytics_plugin_init(log: *const HostLog) -> code` | once per library, before anything else: the plugin's logs go to `log` |
//! | `banalytics_plugin_create(kind: Bytes, init: Bytes, host: *const HostCallbacks, out: *mut *mut c_void, err: *mut Buf) -> code` | an instance of `kind` from an [`InitMessage`]; `host` must stay valid until `destroy` returns |
//! | `banalytics_plugin_start(instance, args: Bytes, err: *mut Buf) -> code` | starts it with a [`StartMessage`]; waits for the component's `start` |
//! | `banalytics_plugin_stop(instance) -> code` | stops its actors (as the crate docs say) and calls `stopped`; waits |
//! | `banalytics_plugin_deliver(instance, topic: Bytes, message: Bytes) -> code` | a bus message for the instance; waits while its queue is full |
//! | `banalytics_plugin_restart_failed(instance) -> code` | restarts the instance's failed actors now (`banalytics-box restart`) |
//! | `banalytics_plugin_destroy(instance) -> code` | stops if running, ends the instance's thread; the pointer is dangling after |
//! | `banalytics_plugin_free_buf(buf: Buf)` | frees a buffer the plugin returned |
//!
//! The host checks `abi_version` first and refuses a library whose version is
//! not its own before it calls anything else; then it compares the identity
//! with its own build ([`Identity::host`]). Every other function catches
//! panics: a panic never unwinds across the boundary, it is answered with
//! [`RC_PANICKED`] and its message in `err`.
//!
//! # Who frees what
//!
//! Whoever allocates frees. Arguments are borrowed ([`Bytes`]), valid only
//! during the call; the callee copies what it keeps. A [`Buf`] the plugin
//! returns (identity, error messages) was allocated by the plugin and goes
//! back to `banalytics_plugin_free_buf`; the host never frees it itself.
//!
//! # Threads
//!
//! Each instance runs its own actix `System` on its own thread, with its own
//! [`Bus`], [`StatusBoard`] and [`ComponentContext`]: the component runs
//! exactly as a built-in one, against the plugin's copy of the SDK. Host
//! calls post work to that thread through a bounded channel
//! ([`SUBSCRIBER_QUEUE`](crate::bus::SUBSCRIBER_QUEUE)); `start` and `stop`
//! wait for the answer. The plugin calls back into the host
//! ([`HostCallbacks`]) from its thread: `publish` for each message on a
//! topic the kind declared in `publishes` (it may block while the host's
//! subscribers are full: backpressure), `state` after its actors change
//! state. So the host's status board shows the plugin's actors with their
//! states, restart counts and errors, and restarts follow the policy inside
//! the plugin, by the same supervisor as built-in components.
//!
//! # Deliberately absent
//!
//! Unloading. A library stays loaded for the life of the process: its
//! threads, thread-locals and statics (tracing, the panic hook) cannot be
//! torn down reliably, so a new version takes effect at the next start.
//! Also absent: sharing any Rust type, handle or allocation; calling a
//! plugin's Rust functions directly.

use std::{
    collections::BTreeMap,
    ffi::c_void,
    fmt,
    mem::ManuallyDrop,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    bus::{Bus, SubscriberId, SUBSCRIBER_QUEUE},
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    config::ConfigSection,
    policy::RestartPolicy,
    status::{ActorStatus, State, StatusBoard},
    supervisor::panic_message,
};

/// The version of this ABI: the functions, their signatures, the structs and
/// the JSON documents. Changed whenever any of them changes.
pub const ABI_VERSION: u32 = 1;
/// The SDK's version, part of the build identity.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// `rustc --version` of the compiler this SDK was built with.
pub const RUSTC_VERSION: &str = env!("BANALYTICS_RUSTC_VERSION");
/// The target triple this SDK was built for.
pub const TARGET: &str = env!("BANALYTICS_TARGET");

/// Done.
pub const RC_OK: i32 = 0;
/// Refused or failed; the message is in the call's `err` buffer.
pub const RC_ERROR: i32 = 1;
/// The plugin panicked; the panic message is in `err` where there is one.
pub const RC_PANICKED: i32 = 2;
/// The instance is gone (its thread ended).
pub const RC_CLOSED: i32 = 3;

/// `tracing` levels as numbers across the boundary.
pub const LEVEL_ERROR: u32 = 1;
/// See [`LEVEL_ERROR`].
pub const LEVEL_WARN: u32 = 2;
/// See [`LEVEL_ERROR`].
pub const LEVEL_INFO: u32 = 3;
/// See [`LEVEL_ERROR`].
pub const LEVEL_DEBUG: u32 = 4;
/// See [`LEVEL_ERROR`].
pub const LEVEL_TRACE: u32 = 5;

/// An owned byte buffer handed across the boundary. Freed only by the side
/// that allocated it (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    /// Start of the bytes; null for an empty buffer.
    pub ptr: *mut u8,
    /// Bytes in use.
    pub len: usize,
    /// Bytes allocated.
    pub cap: usize,
}

impl Buf {
    /// No buffer.
    pub const EMPTY: Buf = Buf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    /// Hands over `v`'s allocation.
    pub fn from_vec(v: Vec<u8>) -> Buf {
        let mut v = ManuallyDrop::new(v);
        Buf {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Takes the allocation back.
    ///
    /// # Safety
    /// `self` came from [`Buf::from_vec`] of this same copy of the SDK (the
    /// same library), and is taken back once.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller promises the parts are a Vec's of this allocator.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }

    /// The bytes, borrowed.
    ///
    /// # Safety
    /// `self` is a live buffer from the other side (not yet freed).
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller promises a live buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Borrowed bytes, valid only during the call they are passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    /// Start; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length.
    pub len: usize,
}

impl Bytes {
    /// Borrows `s` for a call.
    pub fn of(s: &[u8]) -> Bytes {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// Only during the call they were passed to.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller passed `len` readable bytes for this call.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Where a plugin's `tracing` events go: the host's log, tagged with the
/// plugin by the host. `ctx` is the host's and opaque to the plugin; both
/// functions may be called from any plugin thread, at any time, for the life
/// of the process.
#[repr(C)]
pub struct HostLog {
    /// The host's context for both functions.
    pub ctx: *mut c_void,
    /// Whether the host records events of `level` ([`LEVEL_ERROR`]..).
    pub enabled: extern "C" fn(ctx: *mut c_void, level: u32) -> bool,
    /// Records one event: its level, its target and its text (the message
    /// followed by its fields as `name=value`).
    pub log: extern "C" fn(ctx: *mut c_void, level: u32, target: Bytes, message: Bytes),
}

/// The host's functions for one instance, handed over at `create`. Called
/// from the instance's thread; valid until `destroy` returns.
#[repr(C)]
pub struct HostCallbacks {
    /// The host's context for both functions.
    pub ctx: *mut c_void,
    /// A message the instance published on a topic its kind declared in
    /// `publishes`: the topic name and the message's JSON. May block while
    /// the host's subscribers are full. Answers an `RC_*` code.
    pub publish: extern "C" fn(ctx: *mut c_void, topic: Bytes, message: Bytes) -> i32,
    /// The instance's actors changed state: a [`StateMessage`] as JSON.
    pub state: extern "C" fn(ctx: *mut c_void, state: Bytes),
}

/// A component kind a plugin exports, with the bus topics its instances
/// exchange with the host.
#[derive(Clone, Copy)]
pub struct PluginKind {
    /// The kind, as a built-in component would register it.
    pub kind: ComponentKind,
    /// Topics whose messages the host forwards to the instance.
    pub subscribes: &'static [&'static str],
    /// Topics whose messages the instance publishes to the host.
    pub publishes: &'static [&'static str],
}

/// What a plugin declares about its build and its kinds; the JSON of
/// `banalytics_plugin_identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// [`SDK_VERSION`] the plugin was built with.
    pub sdk_version: String,
    /// [`RUSTC_VERSION`] the plugin was built with.
    pub rustc_version: String,
    /// [`TARGET`] the plugin was built for.
    pub target: String,
    /// The component kinds it exports.
    pub kinds: Vec<KindInfo>,
}

/// One exported kind, in the [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindInfo {
    /// The `kind` value in `box.toml`.
    pub kind: String,
    /// See [`PluginKind::subscribes`].
    pub subscribes: Vec<String>,
    /// See [`PluginKind::publishes`].
    pub publishes: Vec<String>,
}

impl Identity {
    /// The identity of this build (no kinds): what a host expects.
    pub fn host() -> Identity {
        Identity {
            sdk_version: SDK_VERSION.to_owned(),
            rustc_version: RUSTC_VERSION.to_owned(),
            target: TARGET.to_owned(),
            kinds: Vec::new(),
        }
    }

    /// Why a plugin with this identity cannot run in a host that expects
    /// `expected`: each differing value with the expected and the found one.
    pub fn mismatch(&self, expected: &Identity) -> Option<String> {
        let mut diffs = Vec::new();
        let mut check = |what: &str, expected: &str, found: &str| {
            if expected != found {
                diffs.push(format!("{what}: expected {expected:?}, found {found:?}"));
            }
        };
        check("SDK version", &expected.sdk_version, &self.sdk_version);
        check(
            "rustc version",
            &expected.rustc_version,
            &self.rustc_version,
        );
        check("target", &expected.target, &self.target);
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }
}

/// The `init` JSON of `create`: a [`ComponentInit`] in plain data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitMessage {
    /// Instance name.
    pub name: String,
    /// Persistent instance ID.
    pub id: Uuid,
    /// The box home.
    pub home: PathBuf,
    /// The configuration file.
    pub config_file: PathBuf,
    /// The whole configuration text (errors point at its lines).
    pub config_text: String,
}

impl InitMessage {
    /// The message for `init`.
    pub fn new(init: &ComponentInit) -> InitMessage {
        InitMessage {
            name: init.name.clone(),
            id: init.id,
            home: init.home.clone(),
            config_file: init.config.file().to_owned(),
            config_text: init.config.text().to_owned(),
        }
    }

    /// The [`ComponentInit`] again, on the plugin's side.
    pub fn into_init(self) -> ComponentInit {
        let config = ConfigSection::new(&self.config_file, self.config_text.into(), &self.name);
        ComponentInit {
            name: self.name,
            id: self.id,
            home: self.home,
            config,
        }
    }
}

/// The `args` JSON of `start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartMessage {
    /// The component's `restart_on_failure`, as spelled in `box.toml`.
    pub policy: String,
}

/// The JSON of the `state` callback: the instance's actors and details.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMessage {
    /// Every supervised actor by name, as the plugin's board has it.
    pub actors: BTreeMap<String, ActorStatus>,
    /// What the component reports about itself.
    pub details: serde_json::Value,
}

/// Exports `kinds` (constant [`PluginKind`]s) as a plugin library: generates
/// the `extern "C"` functions the module docs list. Use once per library:
///
/// ```text
/// banalytics_sdk::export_plugin!(MY_KIND);
/// ```
///
/// `export_plugin!(abi_version = N; KINDS..)` exports another ABI version;
/// it exists only to test the host's refusal.
#[macro_export]
macro_rules! export_plugin {
    ($($kind:expr),+ $(,)?) => {
        $crate::export_plugin!(abi_version = $crate::plugin::ABI_VERSION; $($kind),+);
    };
    (abi_version = $abi:expr; $($kind:expr),+ $(,)?) => {
        const _: () = {
            use $crate::plugin::{guest, Buf, Bytes, HostCallbacks, HostLog};
            use ::std::ffi::c_void;

            static KINDS: &[$crate::plugin::PluginKind] = &[$($kind),+];

            /// The ABI version; this signature never changes.
            #[unsafe(no_mangle)]
            pub extern "C" fn banalytics_plugin_abi_version() -> u32 {
                $abi
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_identity(out: *mut Buf) -> i32 {
                unsafe { guest::identity(KINDS, out) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_init(log: *const HostLog) -> i32 {
                unsafe { guest::init(log) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_create(
                kind: Bytes,
                init: Bytes,
                host: *const HostCallbacks,
                out: *mut *mut c_void,
                err: *mut Buf,
            ) -> i32 {
                unsafe { guest::create(KINDS, kind, init, host, out, err) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_start(
                instance: *mut c_void,
                args: Bytes,
                err: *mut Buf,
            ) -> i32 {
                unsafe { guest::start(instance, args, err) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_stop(instance: *mut c_void) -> i32 {
                unsafe { guest::stop(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_deliver(
                instance: *mut c_void,
                topic: Bytes,
                message: Bytes,
            ) -> i32 {
                unsafe { guest::deliver(instance, topic, message) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_restart_failed(instance: *mut c_void) -> i32 {
                unsafe { guest::restart_failed(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_destroy(instance: *mut c_void) -> i32 {
                unsafe { guest::destroy(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_free_buf(buf: Buf) {
                unsafe { guest::free_buf(buf) }
            }
        };
    };
}

/// The plugin's side of the ABI, called by the functions
/// [`export_plugin!`](crate::export_plugin) generates. Not for direct use.
#[doc(hidden)]
pub mod guest {
    use super::*;

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

    /// `banalytics_plugin_identity`.
    ///
    /// # Safety
    /// `out` is writable.
    pub unsafe fn identity(kinds: &[PluginKind], out: *mut Buf) -> i32 {
        guard(std::ptr::null_mut(), || {
            let identity = Identity {
                kinds: kinds
                    .iter()
                    .map(|k| KindInfo {
                        kind: k.kind.kind.to_owned(),
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
    }
    // SAFETY: `HostCallbacks` are called from the instance's thread, which is
    // what they are made for; the host keeps them valid until `destroy`.
    unsafe impl Send for Host {}
    // SAFETY: as above.
    unsafe impl Sync for Host {}

    impl Host {
        fn publish(&self, topic: &str, json: &[u8]) -> i32 {
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

    enum Command {
        Start(
            RestartPolicy,
            std::sync::mpsc::SyncSender<Result<(), String>>,
        ),
        Stop(std::sync::mpsc::SyncSender<()>),
        RestartFailed(std::sync::mpsc::SyncSender<()>),
        Deliver(&'static str, Vec<u8>),
    }

    /// One component instance: its thread and the channel to it.
    struct Instance {
        kind: &'static PluginKind,
        tx: mpsc::Sender<Command>,
        thread: std::thread::JoinHandle<()>,
    }

    /// `banalytics_plugin_create`.
    ///
    /// # Safety
    /// As the module docs say; `out` and `err` are writable.
    pub unsafe fn create(
        kinds: &'static [PluginKind],
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
            let plugin_kind = kinds
                .iter()
                .find(|k| k.kind.kind == kind)
                .ok_or_else(|| error(format!("this plugin has no kind {kind:?}")))?;
            let init: InitMessage = serde_json::from_slice(init).map_err(error)?;
            let init = init.into_init();
            let component = (plugin_kind.kind.create)(&init).map_err(error)?;
            // SAFETY: the host passes valid callbacks, valid until `destroy`.
            let host = unsafe { &*host };
            let host = Arc::new(Host {
                ctx: host.ctx,
                publish: host.publish,
                state: host.state,
            });
            let board = StatusBoard::new();
            board.register(&init.name, kind, &init.id.to_string());
            let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("plugin {}", init.name))
                .spawn(move || {
                    // The driver holds the running actors, which stay on
                    // this thread: it is built here, from parts that may
                    // cross threads.
                    let driver = Driver {
                        kind: plugin_kind,
                        init,
                        component,
                        host,
                        bus: Bus::new(),
                        board,
                        running: None,
                    };
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
    /// As the module docs say.
    pub unsafe fn start(instance: *mut c_void, args: Bytes, err: *mut Buf) -> i32 {
        guard(err, || {
            // SAFETY: the host passes a live instance and borrowed args.
            let (inst, args) = unsafe { (self::instance(instance), args.as_slice()) };
            let args: StartMessage = serde_json::from_slice(args).map_err(error)?;
            let policy: RestartPolicy = args.policy.parse().map_err(error)?;
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            let closed = || (RC_CLOSED, "plugin instance is gone".to_owned());
            inst.tx
                .blocking_send(Command::Start(policy, reply))
                .map_err(|_| closed())?;
            answer.recv().map_err(|_| closed())?.map_err(error)
        })
    }

    /// `banalytics_plugin_stop`.
    ///
    /// # Safety
    /// As the module docs say.
    pub unsafe fn stop(instance: *mut c_void) -> i32 {
        guard(std::ptr::null_mut(), || {
            // SAFETY: the host passes a live instance.
            let inst = unsafe { self::instance(instance) };
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            let closed = || (RC_CLOSED, String::new());
            inst.tx
                .blocking_send(Command::Stop(reply))
                .map_err(|_| closed())?;
            answer.recv().map_err(|_| closed())
        })
    }

    /// `banalytics_plugin_restart_failed`.
    ///
    /// # Safety
    /// As the module docs say.
    pub unsafe fn restart_failed(instance: *mut c_void) -> i32 {
        guard(std::ptr::null_mut(), || {
            // SAFETY: the host passes a live instance.
            let inst = unsafe { self::instance(instance) };
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            let closed = || (RC_CLOSED, String::new());
            inst.tx
                .blocking_send(Command::RestartFailed(reply))
                .map_err(|_| closed())?;
            answer.recv().map_err(|_| closed())
        })
    }

    /// `banalytics_plugin_deliver`.
    ///
    /// # Safety
    /// As the module docs say.
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
    /// As the module docs say; `instance` is not used after.
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

    /// Owns the component on the instance's thread, as the host's driver
    /// owns a built-in one.
    struct Driver {
        kind: &'static PluginKind,
        init: ComponentInit,
        component: Box<dyn Component>,
        host: Arc<Host>,
        bus: Bus,
        board: StatusBoard,
        running: Option<Running>,
    }

    struct Running {
        ctx: ComponentContext,
        tasks: Vec<tokio::task::AbortHandle>,
        outbound: Vec<(&'static str, SubscriberId)>,
        except: Vec<SubscriberId>,
    }

    impl Driver {
        async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Start(policy, reply) => {
                        let result = self.start(policy).await;
                        let _ = reply.send(result);
                    }
                    Command::Stop(reply) => {
                        self.stop().await;
                        let _ = reply.send(());
                    }
                    Command::RestartFailed(reply) => {
                        if let Some(running) = &self.running {
                            running.ctx.restart_failed();
                        }
                        let _ = reply.send(());
                    }
                    Command::Deliver(topic, json) => {
                        let except = self.running.as_ref().map_or(&[][..], |r| &r.except);
                        if let Err(e) = self.bus.publish_raw_except(topic, json, except).await {
                            tracing::warn!(component = %self.init.name, error = %e, "message from the host refused");
                        }
                    }
                }
            }
            self.stop().await;
        }

        async fn start(&mut self, policy: RestartPolicy) -> Result<(), String> {
            if self.running.is_some() {
                return Ok(());
            }
            let name = self.init.name.clone();
            self.board.set_component(&name, State::Starting, None);
            let ctx = ComponentContext::new(
                &name,
                self.init.id,
                &self.init.home,
                policy,
                self.bus.clone(),
                self.board.clone(),
            );
            let mut tasks = Vec::new();
            let mut outbound = Vec::new();
            for topic in self.kind.publishes {
                let mut sub = self.bus.subscribe_raw(topic);
                outbound.push((*topic, sub.id()));
                let host = self.host.clone();
                let task = actix_rt::spawn(async move {
                    while let Some(json) = sub.recv().await {
                        host.publish(topic, &json);
                    }
                });
                tasks.push(task.abort_handle());
            }
            let (host, board, watched) = (self.host.clone(), self.board.clone(), name.clone());
            let mut changes = self.board.changes();
            let watcher = actix_rt::spawn(async move {
                while changes.changed().await.is_ok() {
                    host.state(&board, &watched);
                }
            });
            tasks.push(watcher.abort_handle());
            let except = outbound.iter().map(|(_, id)| *id).collect();
            let mut running = Running {
                ctx,
                tasks,
                outbound,
                except,
            };
            let started = catch_unwind(AssertUnwindSafe(|| self.component.start(&mut running.ctx)));
            let reason = match started {
                Ok(Ok(())) => {
                    self.board.set_component(&name, State::Run, None);
                    self.running = Some(running);
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(p) => format!("start panicked: {}", panic_message(&*p)),
            };
            self.finish(running).await;
            Err(reason)
        }

        async fn stop(&mut self) {
            if let Some(mut running) = self.running.take() {
                let name = self.init.name.clone();
                self.board.set_component(&name, State::Stopping, None);
                running.ctx.stop_actors().await;
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.component.stopped())) {
                    tracing::error!(component = %name, panic = %panic_message(&*p), "stopped panicked");
                }
                self.finish(running).await;
            }
        }

        /// Stops what `start` set up and sends the last state.
        async fn finish(&mut self, mut running: Running) {
            running.ctx.stop_actors().await;
            for task in running.tasks {
                task.abort();
            }
            for (topic, id) in running.outbound {
                self.bus.unsubscribe(topic, id);
            }
            self.host.state(&self.board, &self.init.name);
            self.board
                .set_component(&self.init.name, State::Stopped, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_mismatch_names_each_expected_and_found_value() {
        let host = Identity::host();
        assert_eq!(host.mismatch(&Identity::host()), None);
        let other = Identity {
            sdk_version: "0.0.9".into(),
            target: "aarch64-unknown-linux-gnu".into(),
            ..Identity::host()
        };
        assert_eq!(
            other.mismatch(&host).unwrap(),
            format!(
                "SDK version: expected {:?}, found \"0.0.9\"; target: expected {:?}, found \"aarch64-unknown-linux-gnu\"",
                SDK_VERSION, TARGET
            )
        );
        assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
    }

    #[test]
    fn a_buf_gives_back_the_allocation_it_took() {
        let buf = Buf::from_vec(b"hello".to_vec());
        // SAFETY: a live buffer of this library, taken back once.
        unsafe {
            assert_eq!(buf.as_slice(), b"hello");
            assert_eq!(buf.into_vec(), b"hello".to_vec());
            assert!(Buf::EMPTY.into_vec().is_empty());
            assert!(Bytes::of(&[]).as_slice().is_empty());
        }
    }
}
