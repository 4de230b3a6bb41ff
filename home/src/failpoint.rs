//! Crash points for the crash-safety tests.
//!
//! `failpoint("stage.rename-upgrade")` kills the process with SIGKILL when
//! the environment variable `BANALYTICS_FAILPOINT` names that point, so a
//! test can stop a real process exactly there and check what recovery
//! finds. With `BANALYTICS_FAILPOINT_TRACE` set, every point reached is
//! printed to stderr, so a test can list the points of a procedure and then
//! stop a process at each one. Unset (always, outside tests), it is one
//! comparison.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const FAILPOINT_ENV: &str = "BANALYTICS_FAILPOINT";

/// The environment variable that makes every point reached print its name.
pub const FAILPOINT_TRACE_ENV: &str = "BANALYTICS_FAILPOINT_TRACE";

/// Dies here if `BANALYTICS_FAILPOINT` is `name`.
pub fn failpoint(name: &str) {
    static ARMED: OnceLock<(Option<String>, bool)> = OnceLock::new();
    let (armed, trace) = ARMED.get_or_init(|| {
        (
            std::env::var(FAILPOINT_ENV).ok(),
            std::env::var_os(FAILPOINT_TRACE_ENV).is_some(),
        )
    });
    if *trace {
        eprintln!("failpoint {name}");
    }
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached");
        // SAFETY: raising a signal on our own process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
