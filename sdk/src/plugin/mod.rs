//! Component plugins: the C ABI between the host and a plugin library, and
//! the plugin's side of it.
//!
//! A component crate becomes a plugin library (`crate-type = ["cdylib"]`)
//! with one line, [`export_plugin!`](crate::export_plugin), naming its
//! [`PluginKind`]s. The host (`banalytics-runtime`, `plugins.rs`) loads, at
//! start, the main artifact of each component module of the home's active
//! set that is a library.
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
//! Besides the functions, the library carries its identity in its file: the
//! static `banalytics_plugin_identity_record` in the link section
//! `.banalytics_plugin`, a JSON [`FileIdentity`] (ABI version, SDK version,
//! rustc version, target, kind names) written at compile time. The host
//! reads and checks it ([`FileIdentity::read_checked`]) before it opens the
//! library, so a library of another ABI or build never has its initialisers
//! run; the upgrade center's preflight checks a staged set the same way.
//!
//! Once the library is open, the host checks `abi_version` first and refuses
//! a library whose version is not its own before it calls anything else;
//! then it compares the identity with its own build ([`Identity::host`]) and
//! with the record in the file. Every other function catches
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
//! [`Bus`](crate::Bus), [`StatusBoard`](crate::StatusBoard) and
//! [`ComponentContext`](crate::ComponentContext): the component runs
//! exactly as a built-in one, against the plugin's copy of the SDK, driven
//! by the same lifecycle loop ([`Driver`](crate::driver::Driver), bridged:
//! the host's driver of the proxy logs the lifecycle and retries a failed
//! start). Host calls become [`Command`](crate::driver::Command)s for that
//! driver, through a bounded channel
//! ([`COMMAND_QUEUE`](crate::driver::COMMAND_QUEUE)); `start` and `stop`
//! wait for the answer. The plugin calls back into the host
//! ([`HostCallbacks`]) from its thread: `publish` for each message on a
//! topic the kind declared in `publishes` (it may block while the host's
//! subscribers are full: backpressure; the host checks the topic itself
//! and drops what the kind did not declare or the host keeps for its own
//! parts), `state` after its actors change
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
//!
//! # Modules
//!
//! `abi.rs` holds what both sides agree on: the constants, the `#[repr(C)]`
//! structs and the JSON documents. `identity.rs` the identity record in the
//! library file, written at compile time and read without loading the
//! library. `export.rs` holds [`PluginKind`] and the `export_plugin!` macro;
//! `guest.rs` the plugin's side of every exported function, which the macro
//! calls.

mod abi;
mod export;
#[doc(hidden)]
pub mod guest;
pub mod identity;

pub use abi::*;
pub use export::PluginKind;
pub use identity::{FileIdentity, FileIdentityError};
