//! What the host's children share, whoever starts them: the launcher's core
//! (`launcher.rs`) and isolated plugin components (`isolation/`). The
//! platform's part is in `crate::platform`.
//!
//! * [`die_with_parent`] (Unix), between fork and exec: the child gets
//!   SIGKILL when the thread that forked it exits (`PR_SET_PDEATHSIG`),
//!   and checks that its parent is still the one that forked it, since the
//!   parent may have died before the signal was armed. So whoever spawns
//!   must do it from a thread that lives as long as the process (the
//!   launcher's main thread, the isolation's spawner thread). On Windows
//!   every process of the box is in its Job object
//!   (`platform::contain_children`), which kills them all when the first
//!   one ends.
//! * [`describe_exit`]: how a child ended, in words, with the signal's
//!   name (Unix) or the status's (Windows).
//! * [`wait_for`] and [`terminate`]: waiting for a child with a bound, and
//!   stopping one that may not listen (SIGTERM or its stop event, then a
//!   kill).

use std::{
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

pub use crate::platform::describe_exit;
#[cfg(unix)]
pub use crate::platform::die_with_parent;

/// Waits at most `grace` for `child` to end; `None` when it still runs (or
/// cannot be waited for).
pub fn wait_for(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return None,
        }
    }
}

/// Stops `child`: asks it to stop (`platform::request_stop`), and kills it
/// when it has not ended after `grace`; returns how it ended (`None` if it
/// cannot be waited for).
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    crate::platform::request_stop(child);
    if let Some(status) = wait_for(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_exit_is_described_with_its_status_or_its_signal_name() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit("the core", ExitStatus::from_raw(3 << 8)),
            "the core exited with status 3"
        );
        assert_eq!(
            describe_exit("the plugin process", ExitStatus::from_raw(libc::SIGSEGV)),
            "the plugin process was killed by signal 11 (SIGSEGV)"
        );
    }

    #[cfg(windows)]
    #[test]
    fn an_exit_is_described_with_its_status_or_its_exception_name() {
        use std::os::windows::process::ExitStatusExt;
        assert_eq!(
            describe_exit("the core", ExitStatus::from_raw(3)),
            "the core exited with status 3"
        );
        assert_eq!(
            describe_exit("the plugin process", ExitStatus::from_raw(0xC000_0005)),
            "the plugin process crashed with status 0xC0000005 (access violation)"
        );
    }
}
