//! The C ABI between the host and a plugin library: the version, the return
//! codes, the `#[repr(C)]` structs and the JSON documents that cross it (see
//! the [`plugin`](super) docs for the functions, who frees what and the
//! threads). Both sides use this module; nothing here runs a component.

use std::{collections::BTreeMap, ffi::c_void, mem::ManuallyDrop, path::PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{component::ComponentInit, config::ConfigSection, status::ActorStatus};

/// The version of this ABI: the functions, their signatures, the structs,
/// the JSON documents and the identity record in the library file. Changed
/// whenever any of them changes (2: the identity record).
pub const ABI_VERSION: u32 = 2;
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
/// that allocated it (see the [`plugin`](super) docs).
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
    /// the host's subscribers are full. Answers an `RC_*` code: the host
    /// refuses (`RC_ERROR`, the message dropped) a topic the kind did not
    /// declare, and the topics it keeps for its own parts whatever a kind
    /// declares.
    pub publish: extern "C" fn(ctx: *mut c_void, topic: Bytes, message: Bytes) -> i32,
    /// The instance's actors changed state: a [`StateMessage`] as JSON.
    pub state: extern "C" fn(ctx: *mut c_void, state: Bytes),
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
    /// See [`PluginKind::subscribes`](super::PluginKind::subscribes).
    pub subscribes: Vec<String>,
    /// See [`PluginKind::publishes`](super::PluginKind::publishes).
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
