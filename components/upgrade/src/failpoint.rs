//! Crash points for the crash-safety tests.
//!
//! `failpoint("stage.rename-upgrade")` kills the process with SIGKILL when
//! the environment variable `BANALYTICS_FAILPOINT` names that point, so a
//! test can stop a real process exactly there and check what recovery
//! finds. Unset (always, outside tests), it is one comparison.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const FAILPOINT_ENV: &str = "BANALYTICS_FAILPOINT";

/// Dies here if `BANALYTICS_FAILPOINT` is `name`.
pub fn failpoint(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(FAILPOINT_ENV).ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached");
        // SAFETY: raising a signal on our own process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
