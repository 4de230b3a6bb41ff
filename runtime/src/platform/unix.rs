//! The Unix side of [`crate::platform`] (Linux first: `PR_SET_PDEATHSIG`,
//! `pipe2`, `poll`).

use std::{
    fs,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{fs::PermissionsExt, process::CommandExt, process::ExitStatusExt},
    },
    path::Path,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
    time::Duration,
};

/// Nothing to do at start: a child is tied to its parent when it is
/// spawned ([`die_with_parent`] in [`inherit`]'s `pre_exec`).
pub fn contain_children() {}

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

/// Nothing to do: the upgrade job is no child that dies with the box (it
/// is not started with [`inherit`]).
pub fn detach(_command: &mut Command) {}

/// Makes `dir` (and its parents) with mode 0700, and sets that mode on an
/// existing one.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A pipe for the core's readiness line: both ends close-on-exec until
/// [`inherit`] hands the write end to the child.
pub fn pipe() -> io::Result<(fs::File, fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: a two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two open descriptors that we now own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((fs::File::from(read), fs::File::from(write)))
}

/// The number a child finds `file` under (its descriptor), for the
/// handshake.
pub fn raw_number(file: &fs::File) -> i64 {
    i64::from(file.as_raw_fd())
}

/// The file the parent handed over as `number`.
///
/// # Safety
/// `number` must be an open descriptor this process owns and nothing else
/// uses.
pub unsafe fn file_from_number(number: i64) -> fs::File {
    // SAFETY: the caller's promise.
    unsafe { fs::File::from_raw_fd(number as i32) }
}

/// Makes `command` a child that dies with this process and inherits
/// `files` (their descriptors stay open across `exec`). Spawn it from a
/// thread that lives as long as the process (`PR_SET_PDEATHSIG` follows
/// the forking thread).
pub fn inherit(command: &mut Command, files: &[&fs::File]) {
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            die_with_parent(parent)
        });
    }
}

/// Waits at most `wait` for `file` (a pipe's read end) to have bytes or
/// its end; `true` when a read will not block.
pub fn wait_readable(file: &fs::File, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(i32::MAX as u128) as i32) > 0 }
}

/// Asks `child` to stop (SIGTERM).
pub fn request_stop(child: &Child) {
    // SAFETY: kill(2) on our own child's pid, which it keeps until reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// The core's pid, for the signal forwarder (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our child's.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// From now on SIGTERM, SIGINT and SIGHUP go to the child `pid` (the
/// launcher's core) instead of ending this process; `None`: the child
/// ended, and they are dropped until the next one.
pub fn forward_stop(pid: Option<u32>) {
    CHILD.store(pid.map_or(0, |p| p as i32), Ordering::SeqCst);
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls kill(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
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

/// SIGTERM and SIGINT, caught from the moment they are made.
pub struct StopSignals([tokio::signal::unix::Signal; 2]);

impl StopSignals {
    /// Catches them from now on.
    pub fn catch() -> io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals([
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ]))
    }

    /// The name of the first one that came.
    pub async fn recv(self) -> &'static str {
        let [mut term, mut int] = self.0;
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// Re-executes this program with its arguments; returns only on failure.
pub fn exec_self(exe: &Path) -> io::Error {
    Command::new(exe).args(std::env::args_os().skip(1)).exec()
}

/// The ELF `e_machine` of this build's architecture.
fn this_machine() -> Option<u16> {
    Some(match std::env::consts::ARCH {
        "x86" => 3,
        "arm" => 40,
        "x86_64" => 62,
        "aarch64" => 183,
        "riscv64" => 243,
        _ => return None,
    })
}

/// Checks that `path` can run here before it is started: executable, and
/// either a script (`#!`) or an ELF file for this machine's architecture.
/// `execvp` would otherwise hand a file it cannot execute to `/bin/sh`,
/// and the start would fail with a shell's exit status instead of the
/// reason.
pub fn check_executable(path: &Path) -> io::Result<()> {
    let about = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = fs::metadata(path).map_err(about)?;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(io::Error::other(format!(
            "{} is not executable (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let mut head = [0u8; 20];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(about)?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(());
    }
    if n < 20 || !head.starts_with(b"\x7fELF") {
        return Err(io::Error::other(format!(
            "{} is neither an ELF executable nor a script",
            path.display()
        )));
    }
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let data = if cfg!(target_endian = "little") { 1 } else { 2 };
    let machine = if head[5] == 1 {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    if head[4] != class || head[5] != data || Some(machine) != this_machine() {
        return Err(io::Error::other(format!(
            "{} is built for another architecture (ELF class {}, data {}, machine {machine}); this box is {}",
            path.display(),
            head[4],
            head[5],
            std::env::consts::ARCH
        )));
    }
    Ok(())
}
