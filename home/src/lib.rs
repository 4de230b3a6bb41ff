//! The box home: the folders and files that the host and the upgrade center
//! both read and write (contracts section 1), so that neither reaches into
//! the other.
//!
//! - [`layout`]: the paths of one home, and the small file-system helpers
//!   (fsync of a folder, free space) every writer of the home uses.
//! - [`coords`]: module identity ([`coords::Coords`], its text the module
//!   key; type, packages) and the names of its files.
//! - `sets`: the target set's identity ([`TargetSetId`]), and how it
//!   differs from the content id of the swap.
//! - `sha256`: the SHA-256 digest type ([`Sha256`]), hex outside, bytes inside.
//! - [`running`]: which core (host executable) runs, its version and digest.
//! - [`properties`]: the `java.util.Properties` codec the original box's
//!   files use.
//! - [`installed`]: `modules-info.properties`, the installed set.
//! - [`record`]: `modules-hashes.json`, the SHA-256 and size of every file
//!   a set installed.
//! - [`digests`]: `state/digest-cache.json`, the SHA-256 of installed
//!   files by inode, size and modification time, so that unchanged files
//!   are not read again.
//! - [`swap`]: apply, rollback, commit and recovery of module sets.
//! - [`quarantine`]: the set an automatic rollback took off the box.
//! - [`outbox`]: reports for the portal, on disk until the portal has
//!   them.
//! - [`registration`]: the environment UUID of
//!   `config/device-registration.properties`.
//! - [`format`]: the format numbers of the files the box writes under
//!   its home, and what a reader does with a newer one.
//! - [`failpoint`]: crash points for the crash-safety tests.
//!
//! What this crate does not know: processes, the configuration file, the
//! portal protocol, the network. It is plain blocking file I/O; async
//! callers use `spawn_blocking`.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

pub mod coords;
pub mod digests;
pub mod failpoint;
pub mod format;
pub mod hold;
pub mod installed;
pub mod layout;
pub mod outbox;
mod platform;
pub mod properties;
pub mod quarantine;
pub mod record;
pub mod registration;
pub mod running;
mod sets;
mod sha256;
pub mod swap;

pub use layout::Layout;
pub use sets::{ContentId, TargetSetId, TargetSetIdError};
pub use sha256::{Sha256, Sha256Error};
pub use swap::SwapError;
