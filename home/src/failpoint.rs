//! Crash points for the crash-safety tests.
//!
//! `failpoint("stage.rename-upgrade")` kills the process with SIGKILL when
//! the environment variable `BANALYTICS_FAILPOINT` names that point, so a
//! test can stop a real process exactly there and check what recovery
//! finds. With `BANALYTICS_FAILPOINT_TRACE` set, every point reached is
//! printed to stderr, so a test can list the points of a procedure and then
//! stop a process at each one.
//!
//! All of that exists only with the cargo feature `failpoints`, which the
//! whole-system tests enable for the box they build and a release build
//! (`cargo build --release -p banalytics-runtime`) never does. Without it
//! [`failpoint`] is an empty inline function, [`ENABLED`] is `false` (so
//! callers that format a point's name skip the formatting), and neither
//! variable is ever read: setting them on a release binary does nothing.

/// Whether this build has the test switches (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// The environment variable naming the point to die at.
pub const FAILPOINT_ENV: &str = "BANALYTICS_FAILPOINT";

/// The environment variable that makes every point reached print its name.
pub const FAILPOINT_TRACE_ENV: &str = "BANALYTICS_FAILPOINT_TRACE";

/// The environment variable that makes the swap use its rename fallback as
/// if `renameat2(RENAME_EXCHANGE)` were unsupported (`swap`).
pub const NO_EXCHANGE_ENV: &str = "BANALYTICS_NO_EXCHANGE";

/// Dies here if `BANALYTICS_FAILPOINT` is `name`.
#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) {
    use std::sync::OnceLock;
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
        crate::platform::kill_self();
    }
}

/// Nothing: this build has no failpoints (no `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

/// Whether the swap must act as if `RENAME_EXCHANGE` were unsupported:
/// `BANALYTICS_NO_EXCHANGE` is set, in a build with the test switches.
#[inline(always)]
pub fn no_exchange() -> bool {
    #[cfg(feature = "failpoints")]
    {
        std::env::var_os(NO_EXCHANGE_ENV).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_switch_exists_only_with_the_feature() {
        // Read nowhere else in a build without the feature; with it, the
        // other swap tests would only take the rename fallback.
        std::env::set_var(NO_EXCHANGE_ENV, "1");
        assert_eq!(no_exchange(), cfg!(feature = "failpoints"));
        assert_eq!(ENABLED, cfg!(feature = "failpoints"));
    }
}
