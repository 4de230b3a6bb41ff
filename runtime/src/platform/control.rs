//! The control channel's transport (`crate::control` speaks the protocol
//! over it): a listener the host accepts connections on, and the CLI's
//! blocking client connection.

#[cfg(unix)]
#[path = "unix_control.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows_control.rs"]
mod imp;

pub use imp::*;
