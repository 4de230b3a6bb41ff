//! What the host does differently on Unix and on Windows, one seam per
//! concern, so that the rest of the runtime is written once and the Windows
//! host is an implementation beside the Unix one rather than `cfg` branches
//! through the crate:
//!
//! - **control channel** ([`control`]): the Unix socket `state/control.sock`
//!   (mode 0600) or a named pipe named after it (an owner-only ACL); the
//!   same protocol over both;
//! - **process supervision**: a child that dies with its parent
//!   (`PR_SET_PDEATHSIG`, or a Job object with
//!   `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` that the process puts itself in
//!   at start, [`contain_children`]), asking a child to stop
//!   ([`request_stop`]: SIGTERM, or the child's stop event), handing it
//!   inherited files ([`inherit`]), waiting for its readiness line
//!   ([`wait_readable`]), how it ended ([`describe_exit`]) and whether a
//!   file can run at all ([`check_executable`]);
//! - **stop**: what makes the host stop ([`StopSignals`]: SIGTERM and
//!   SIGINT, or Ctrl-C, Ctrl-Break, console close and the stop event),
//!   and the launcher passing a stop on to its core ([`forward_stop`]);
//! - **restart in place** ([`exec_self`]): `execv` on Unix; Windows has no
//!   `exec`, so `restart_mode = "exec"` is refused there.
//!
//! File locking needs no seam (std's `File::try_lock` is `flock` or
//! `LockFileEx`); the home's file-system calls (swap renames, free space)
//! have their own in `banalytics_home`.

pub mod control;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
