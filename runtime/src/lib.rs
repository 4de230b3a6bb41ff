//! The Banalytics box host (`banalytics-box`): reads `config/box.toml`,
//! starts the configured components under supervision, routes messages
//! between them over the bus, and answers the local CLI on a control socket.
//!
//! This is the only crate that knows processes, the configuration file and
//! the control socket; components see the host only through the SDK.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

pub(crate) mod authority;
pub mod cli;
pub mod config;
pub mod console;
pub(crate) mod control;
pub(crate) mod discard;
pub(crate) mod exchange;
mod home;
pub mod host;
pub(crate) mod ids;
pub(crate) mod isolation;
pub(crate) mod launcher;
pub(crate) mod logging;
pub(crate) mod notify;
pub(crate) mod platform;
pub mod plugins;
pub mod preflight;
pub(crate) mod process;
pub mod registry;
pub(crate) mod report;
pub(crate) mod service;

use std::path::PathBuf;

pub use home::Home;

/// `run` stopped as requested (SIGTERM, SIGINT).
pub const EXIT_OK: u8 = 0;
/// An error stopped the command (I/O, a host already running, ...).
pub const EXIT_FAILURE: u8 = 1;
/// The configuration or the command line was refused.
pub const EXIT_CONFIG: u8 = 2;
/// A core refused the handshake of the launcher that started it (another
/// version): the launcher then runs its own build instead of that core.
pub const EXIT_HANDSHAKE: u8 = 3;
/// `run` stopped so that the service manager starts it again and the new
/// start applies a staged module set (`EX_TEMPFAIL`).
pub const EXIT_RESTART: u8 = 75;

/// Why the host could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `box.toml` was refused.
    #[error(transparent)]
    Config(#[from] banalytics_sdk::ConfigError),
    /// A component refused its configuration.
    #[error("component {name}: {message}")]
    Component {
        /// Instance name.
        name: String,
        /// The component's message.
        message: String,
    },
    /// Another host holds the home.
    #[error("another banalytics-box is running on {home} (it holds {lock})")]
    AlreadyRunning {
        /// The home.
        home: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Applying, rolling back, committing or verifying a module set failed.
    #[error(transparent)]
    Swap(#[from] banalytics_home::SwapError),
    /// The launcher's handshake is unreadable or of another version.
    #[error("{0}")]
    Handshake(String),
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Component { .. } => EXIT_CONFIG,
            Error::Handshake(_) => EXIT_HANDSHAKE,
            _ => EXIT_FAILURE,
        }
    }
}
