//! Starting one child of an isolated component, the part that differs
//! between Unix and Windows: how the link reaches the child, how the child
//! dies with the host, and how its limits are set.
//!
//! - **Unix**: a socket pair whose child end becomes descriptor
//!   [`super::CHILD_SOCKET_FD`]; `PR_SET_PDEATHSIG` and `setrlimit`
//!   (`RLIMIT_AS`, `RLIMIT_CPU`) between fork and exec.
//! - **Windows**: two anonymous pipes, the child's ends inherited and
//!   named to it with `--pipes IN,OUT` (their handle values); a Job object
//!   per child, held by the host, with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`
//!   (the child dies when the host does, or when the link is dropped) and
//!   the limits: `memory_limit` as `JOB_OBJECT_LIMIT_PROCESS_MEMORY` (the
//!   committed memory, where Linux limits the address space) and
//!   `cpu_limit` as `JOB_OBJECT_LIMIT_PROCESS_TIME` (user-mode CPU time,
//!   where Linux counts user and system time). The child is in the host's
//!   own job too (`crate::platform::contain_children`), so it dies with the
//!   host even where its own job cannot be made; a child whose limits
//!   cannot be set is killed and its start fails: it never runs with less
//!   than it was meant to have.

use std::{io, process::Child};

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// The link (socket pair, pipes) could not be made.
    #[error("cannot create the plugin process's link: {0}")]
    Link(#[source] io::Error),
    /// The process could not be started.
    #[error("cannot start the plugin process: {0}")]
    Start(#[source] io::Error),
    /// The process started, but its Job object or limits could not be set;
    /// it was killed.
    #[cfg(windows)]
    #[error("cannot set the plugin process's limits (Job object): {0}")]
    Limits(#[source] io::Error),
}

/// A started child with the host's ends of its link.
pub(super) struct Spawned {
    pub child: Child,
    pub reader: Reader,
    pub writer: Writer,
    /// What keeps the child tied to the host while the link lives (its
    /// Job object on Windows).
    pub guard: Guard,
}

#[cfg(unix)]
pub(super) use unix::*;
#[cfg(windows)]
pub(super) use windows::*;

#[cfg(unix)]
mod unix {
    use std::{
        io,
        os::{
            fd::{AsRawFd, OwnedFd},
            unix::{net::UnixStream, process::CommandExt},
        },
        process::{Child, Command},
    };

    use super::{SpawnError, Spawned};
    use crate::{
        isolation::{Limits, Spawner, CHILD_SOCKET_FD},
        process::die_with_parent,
    };

    /// The host's reading end of the link.
    pub type Reader = UnixStream;
    /// The host's writing end of the link.
    pub type Writer = UnixStream;
    /// Nothing: the child is tied to the host by `PR_SET_PDEATHSIG`.
    pub type Guard = ();

    /// Spawns `command` with the socket pair as descriptor 3, dying with
    /// the host, with `limits`.
    pub fn spawn(
        spawner: &Spawner,
        mut command: Command,
        limits: Limits,
    ) -> Result<Spawned, SpawnError> {
        let (host_end, child_end) = UnixStream::pair().map_err(SpawnError::Link)?;
        let child_end = OwnedFd::from(child_end);
        let parent = std::process::id() as libc::pid_t;
        let fd = child_end.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                die_with_parent(parent)?;
                child_descriptors(fd)?;
                set_limits(limits)
            });
        }
        let child = spawner.spawn(command).map_err(SpawnError::Start)?;
        drop(child_end);
        let reader = host_end.try_clone().map_err(SpawnError::Start)?;
        Ok(Spawned {
            child,
            reader,
            writer: host_end,
            guard: (),
        })
    }

    /// The end of the frames to the child: its socket shut for writing.
    pub fn close_write(writer: Writer) {
        let _ = writer.shutdown(std::net::Shutdown::Write);
    }

    /// Asks the child to exit (SIGTERM); `true`: asked.
    pub fn ask_to_exit(child: &Child) -> bool {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        true
    }

    /// In the child, between fork and exec: its end of the socket becomes
    /// descriptor 3, and every descriptor above is closed at exec.
    ///
    /// # Safety
    /// Async-signal-safe calls only (`dup2`, `fcntl`, `close_range`).
    unsafe fn child_descriptors(fd: i32) -> io::Result<()> {
        // SAFETY: plain descriptor calls, async-signal-safe.
        unsafe {
            if fd == CHILD_SOCKET_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHILD_SOCKET_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Close-on-exec rather than closed: std's own pipe that reports an
            // exec failure is among them and must stay open until the exec.
            let first = (CHILD_SOCKET_FD + 1) as libc::c_uint;
            if libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                // Kernels before 5.11: one descriptor at a time.
                let mut limit: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                let last = limit.rlim_cur.min(1 << 16) as i32;
                for fd in CHILD_SOCKET_FD + 1..last {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
        Ok(())
    }

    /// In the child, between fork and exec: `memory_limit` and `cpu_limit`.
    ///
    /// # Safety
    /// Async-signal-safe calls only (`setrlimit`).
    unsafe fn set_limits(limits: Limits) -> io::Result<()> {
        let set = |resource, soft: u64, hard: u64| {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: a valid rlimit; async-signal-safe.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        if let Some(bytes) = limits.memory_bytes {
            set(libc::RLIMIT_AS, bytes, bytes)?;
        }
        if let Some(seconds) = limits.cpu_seconds {
            set(libc::RLIMIT_CPU, seconds, seconds + 5)?;
        }
        Ok(())
    }
}

#[cfg(windows)]
mod windows {
    use std::{
        ffi::c_void,
        io::{self, PipeReader, PipeWriter},
        os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle},
        process::{Child, Command},
    };

    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
        SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, JOB_OBJECT_LIMIT_PROCESS_MEMORY,
        JOB_OBJECT_LIMIT_PROCESS_TIME,
    };

    use super::{SpawnError, Spawned};
    use crate::isolation::{Limits, Spawner};

    /// The host's reading end of the link.
    pub type Reader = PipeReader;
    /// The host's writing end of the link.
    pub type Writer = PipeWriter;
    /// The child's Job object: closing it kills the child.
    pub type Guard = Option<Job>;

    /// A Job object of one child, killed with it when dropped.
    pub struct Job(OwnedHandle);

    /// The limits of a child's Job object: `KILL_ON_JOB_CLOSE` always, and
    /// the component's `memory_limit` and `cpu_limit`.
    pub fn job_limits(limits: Limits) -> JOBOBJECT_EXTENDED_LIMIT_INFORMATION {
        // SAFETY: a plain C struct, all zero is its "no limit".
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        let mut flags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        if let Some(bytes) = limits.memory_bytes {
            flags |= JOB_OBJECT_LIMIT_PROCESS_MEMORY;
            info.ProcessMemoryLimit = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(seconds) = limits.cpu_seconds {
            flags |= JOB_OBJECT_LIMIT_PROCESS_TIME;
            // In 100 ns units.
            info.BasicLimitInformation.PerProcessUserTimeLimit =
                i64::try_from(seconds.saturating_mul(10_000_000)).unwrap_or(i64::MAX);
        }
        info.BasicLimitInformation.LimitFlags = flags;
        info
    }

    impl Job {
        /// Puts `child` in a new Job object with `limits`.
        pub fn of(child: &Child, limits: Limits) -> io::Result<Job> {
            // SAFETY: plain Win32 calls; the job's handle is owned from
            // here on, the child's handle is open while `child` lives.
            unsafe {
                let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
                if job.is_null() {
                    return Err(io::Error::last_os_error());
                }
                let job = Job(OwnedHandle::from_raw_handle(job));
                let info = job_limits(limits);
                if SetInformationJobObject(
                    job.0.as_raw_handle(),
                    JobObjectExtendedLimitInformation,
                    (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast::<c_void>(),
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                ) == 0
                    || AssignProcessToJobObject(job.0.as_raw_handle(), child.as_raw_handle()) == 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(job)
            }
        }
    }

    /// Spawns `command` with two pipes as its link (`--pipes IN,OUT`), in
    /// a Job object of its own with `limits`.
    pub fn spawn(
        spawner: &Spawner,
        mut command: Command,
        limits: Limits,
    ) -> Result<Spawned, SpawnError> {
        let (child_in, writer) = io::pipe().map_err(SpawnError::Link)?;
        let (reader, child_out) = io::pipe().map_err(SpawnError::Link)?;
        command.arg("--pipes").arg(format!(
            "{},{}",
            child_in.as_raw_handle() as isize,
            child_out.as_raw_handle() as isize
        ));
        let mut child = spawner
            .spawn(command, &[&child_in as &dyn AsRawHandle, &child_out])
            .map_err(SpawnError::Start)?;
        drop((child_in, child_out));
        let guard = match Job::of(&child, limits) {
            Ok(job) => Some(job),
            Err(e) if limits == Limits::default() => {
                // It is in the host's job: it dies with the host still.
                tracing::debug!(error = %e, "the plugin process has no Job object of its own");
                None
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpawnError::Limits(e));
            }
        };
        Ok(Spawned {
            child,
            reader,
            writer,
            guard,
        })
    }

    /// The end of the frames to the child: its pipe closed.
    pub fn close_write(writer: Writer) {
        drop(writer);
    }

    /// Windows has no SIGTERM for a child without a console or stop event:
    /// `false`, the caller goes on to kill it.
    pub fn ask_to_exit(_child: &Child) -> bool {
        false
    }

    #[cfg(test)]
    mod tests {
        use std::time::{Duration, Instant};

        use super::*;

        #[test]
        fn the_job_kills_on_close_and_carries_the_limits() {
            let none = job_limits(Limits::default());
            assert_eq!(
                none.BasicLimitInformation.LimitFlags,
                JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
            );
            let both = job_limits(Limits {
                memory_bytes: Some(64 << 20),
                cpu_seconds: Some(3),
            });
            assert_eq!(
                both.BasicLimitInformation.LimitFlags,
                JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
                    | JOB_OBJECT_LIMIT_PROCESS_MEMORY
                    | JOB_OBJECT_LIMIT_PROCESS_TIME
            );
            assert_eq!(both.ProcessMemoryLimit, 64 << 20);
            assert_eq!(
                both.BasicLimitInformation.PerProcessUserTimeLimit,
                30_000_000
            );
        }

        #[test]
        fn a_child_dies_when_its_job_is_closed() {
            // A child that would wait 60 s.
            let mut child = Command::new("cmd")
                .args(["/c", "ping", "-n", "60", "127.0.0.1"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let job = Job::of(&child, Limits::default()).unwrap();
            assert!(matches!(child.try_wait(), Ok(None)), "it runs");
            let closed = Instant::now();
            drop(job);
            let deadline = closed + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let ended = child.try_wait().unwrap();
            if ended.is_none() {
                let _ = child.kill();
            }
            assert!(ended.is_some(), "the child outlived its closed job");
        }
    }
}
