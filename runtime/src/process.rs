//! What the host's children share, whoever starts them: the launcher's core
//! (`launcher.rs`) and isolated plugin components (`isolation/`).
//!
//! * [`die_with_parent`], between fork and exec: the child gets SIGKILL when
//!   the thread that forked it exits (`PR_SET_PDEATHSIG`), and checks that
//!   its parent is still the one that forked it, since the parent may have
//!   died before the signal was armed. So whoever spawns must do it from a
//!   thread that lives as long as the process (the launcher's main thread,
//!   the isolation's spawner thread).
//! * [`describe_exit`]: how a child ended, in words, with the signal's name.
//! * [`wait_for`] and [`terminate`]: waiting for a child with a bound, and
//!   stopping one that may not listen (SIGTERM, then SIGKILL).

use std::{
    io,
    os::unix::process::ExitStatusExt,
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

/// Arms the parent-death signal and checks the parent; for `pre_exec`.
/// `parent` is the pid of the process that forks, read before the fork.
///
/// # Safety
/// Only between fork and exec: it calls nothing but async-signal-safe
/// functions (`prctl`, `getppid`, `_exit`).
pub unsafe fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl with an integer argument; async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died between the fork and the prctl: then the
    // signal will never come, and this child must not live on.
    // SAFETY: getppid and _exit are async-signal-safe.
    unsafe {
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// How a child ended, in words: `{what} exited with status N` or `{what}
/// was killed by signal N (NAME)`.
pub fn describe_exit(what: &str, status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("{what} exited with status {code}"),
        (None, Some(signal)) => format!(
            "{what} was killed by signal {signal} ({})",
            signal_name(signal)
        ),
        _ => format!("{what} ended: {status}"),
    }
}

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

/// Stops `child`: SIGTERM, and SIGKILL when it has not ended after
/// `grace`; returns how it ended (`None` if it cannot be waited for).
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid, which it keeps until reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    if let Some(status) = wait_for(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The name of the signals a crashed or stopped child usually dies of.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGALRM => "SIGALRM",
        libc::SIGXCPU => "SIGXCPU",
        _ => "another signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_described_with_its_status_or_its_signal_name() {
        assert_eq!(
            describe_exit("the core", ExitStatus::from_raw(3 << 8)),
            "the core exited with status 3"
        );
        assert_eq!(
            describe_exit("the plugin process", ExitStatus::from_raw(libc::SIGSEGV)),
            "the plugin process was killed by signal 11 (SIGSEGV)"
        );
    }
}
