//! The Windows side of [`crate::platform`]: a Job object instead of
//! `PR_SET_PDEATHSIG`, a named stop event instead of SIGTERM, inherited
//! handles instead of descriptors, `PeekNamedPipe` instead of `poll`.

use std::{
    ffi::c_void,
    fs, io,
    os::windows::{
        io::{AsRawHandle, FromRawHandle, OwnedHandle},
        process::CommandExt,
    },
    path::Path,
    process::{Child, Command, ExitStatus},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use windows_sys::Win32::{
    Foundation::{SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT},
    System::{
        Console::{
            SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
            CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
        },
        JobObjects::{
            AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
            SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
            JOB_OBJECT_LIMIT_BREAKAWAY_OK, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        },
        Pipes::PeekNamedPipe,
        Threading::{
            CreateEventW, GetCurrentProcess, OpenEventW, SetEvent, WaitForSingleObject,
            CREATE_BREAKAWAY_FROM_JOB, EVENT_MODIFY_STATE, INFINITE,
        },
    },
};

/// Puts this process in a Job object of its own that kills every process
/// in it when its last handle closes (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`):
/// only this process holds it, so when this process ends, however it ends,
/// its children (the launcher's core, isolated plugins) end with it, as
/// `PR_SET_PDEATHSIG` makes them on Linux. Children may leave the job only
/// when started with `CREATE_BREAKAWAY_FROM_JOB` ([`detach`]: the upgrade
/// job, which must outlive the box it restarts). Best effort: a process
/// that cannot be put in a job (an old Windows that does not nest jobs)
/// runs on, with a warning.
pub fn contain_children() {
    // SAFETY: plain Win32 calls on handles this function owns; the job's
    // handle is kept open (leaked) for the life of the process.
    let outcome = unsafe {
        let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
        if job.is_null() {
            Err(io::Error::last_os_error())
        } else {
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            limits.BasicLimitInformation.LimitFlags =
                JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK;
            if SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast::<c_void>(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            ) == 0
                || AssignProcessToJobObject(job, GetCurrentProcess()) == 0
            {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "cannot put the box in a Job object: its child processes may outlive it");
    }
}

/// Makes `command` leave the box's Job object (`CREATE_BREAKAWAY_FROM_JOB`):
/// for the upgrade job, which stops and starts the box.
pub fn detach(command: &mut Command) {
    command.creation_flags(CREATE_BREAKAWAY_FROM_JOB);
}

/// Makes `dir` (and its parents). Windows has no mode bits: the folder
/// inherits the home's ACL, which the installer makes owner-only (README,
/// Windows).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// A pipe for the core's readiness line; neither end is inherited until
/// [`inherit`] says so.
pub fn pipe() -> io::Result<(fs::File, fs::File)> {
    let (read, write) = io::pipe()?;
    Ok((
        fs::File::from(OwnedHandle::from(read)),
        fs::File::from(OwnedHandle::from(write)),
    ))
}

/// The number a child finds `file` under (its handle's value, the same in
/// a child that inherits it), for the handshake.
pub fn raw_number(file: &fs::File) -> i64 {
    file.as_raw_handle() as isize as i64
}

/// Makes `handle` inherited by the children spawned from now on, or not.
pub fn set_inheritable(handle: HANDLE, yes: bool) -> io::Result<()> {
    // SAFETY: a handle this process has open.
    if unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, u32::from(yes)) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file the parent handed over as `number`. It is made non-inheritable
/// again, so that a child of this process (the upgrade job) does not hold
/// the home lock.
///
/// # Safety
/// `number` must be a handle this process inherited and nothing else uses.
pub unsafe fn file_from_number(number: i64) -> fs::File {
    let handle = number as isize as HANDLE;
    if let Err(e) = set_inheritable(handle, false) {
        tracing::warn!(error = %e, "cannot make an inherited handle private");
    }
    // SAFETY: the caller's promise.
    unsafe { fs::File::from_raw_handle(handle) }
}

/// Makes `files` inheritable by the next child spawned (the core: std
/// starts every child with `bInheritHandles`). The child dies with this
/// process through the Job object ([`contain_children`]), which it is
/// started in. The launcher spawns no other child, so they stay so.
pub fn inherit(_command: &mut Command, files: &[&fs::File]) {
    for file in files {
        if let Err(e) = set_inheritable(file.as_raw_handle(), true) {
            tracing::warn!(error = %e, "cannot hand a handle to the core");
        }
    }
}

/// Waits at most `wait` for `file` (a pipe's read end) to have bytes or
/// its end; `true` when a read will not block.
pub fn wait_readable(file: &fs::File, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let mut available = 0u32;
        // SAFETY: an open pipe handle; only the count is asked.
        let ok = unsafe {
            PeekNamedPipe(
                file.as_raw_handle(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                &mut available,
                std::ptr::null_mut(),
            )
        };
        // A broken pipe (the writer closed it) reads as the end at once.
        if ok == 0 || available > 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(wait));
    }
}

/// The name of the stop event of the box process `pid`: setting it stops
/// that process as SIGTERM stops it on Unix.
fn stop_event_name(pid: u32) -> Vec<u16> {
    format!("Local\\banalytics-box-stop-{pid}")
        .encode_utf16()
        .chain(Some(0))
        .collect()
}

/// Sets the stop event of the box process `pid`; `false` when it has none
/// (not a box, or one that has not started its host yet).
pub fn set_stop_event(pid: u32) -> bool {
    let name = stop_event_name(pid);
    // SAFETY: a NUL-terminated name; the handle is closed by OwnedHandle.
    unsafe {
        let event = OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr());
        if event.is_null() {
            return false;
        }
        let event = OwnedHandle::from_raw_handle(event);
        SetEvent(event.as_raw_handle()) != 0
    }
}

/// Asks `child` to stop: its stop event. A child that has none yet is
/// killed by the caller after the grace.
pub fn request_stop(child: &Child) {
    set_stop_event(child.id());
}

/// Stops the box this process is, the way SIGTERM stops it on Linux: the
/// stop event of its core when this process is a launcher with a core
/// running, else its own (the service control manager's stop, see
/// `service.rs`). A process that has not made its stop event yet (a host
/// still starting) gets it once it has: a thread tries every
/// [`STOP_RETRY`] until one was set, for as long as the process lives.
pub fn stop_box() {
    let set = || {
        let core = CHILD.load(Ordering::SeqCst);
        (core != 0 && set_stop_event(core)) || set_stop_event(std::process::id())
    };
    if set() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stop request".to_owned())
        .spawn(move || {
            while !set() {
                std::thread::sleep(STOP_RETRY);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot pass the stop on");
    }
}

/// How often [`stop_box`] tries again: a host makes its stop event early in
/// its start, within tens of milliseconds.
const STOP_RETRY: Duration = Duration::from_millis(100);

/// The core's pid, for the console handler (0: none).
static CHILD: AtomicU32 = AtomicU32::new(0);

unsafe extern "system" fn console_handler(event: u32) -> i32 {
    match event {
        // The core shares the console and gets these itself.
        CTRL_C_EVENT | CTRL_BREAK_EVENT => 1,
        CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
            let pid = CHILD.load(Ordering::SeqCst);
            if pid != 0 {
                set_stop_event(pid);
            }
            1
        }
        _ => 0,
    }
}

/// From now on the console's Ctrl-C and Ctrl-Break are left to the child
/// `pid` (the launcher's core, which gets them too) instead of ending this
/// process, and a close or shutdown of the console sets its stop event;
/// `None`: the child ended.
pub fn forward_stop(pid: Option<u32>) {
    CHILD.store(pid.unwrap_or(0), Ordering::SeqCst);
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: installing a handler that only reads an atomic and sets
        // an event.
        unsafe { SetConsoleCtrlHandler(Some(console_handler), 1) };
    });
}

/// The names of the exception statuses a crashed process usually ends with.
fn status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0xC000_0005 => "access violation",
        0xC000_001D => "illegal instruction",
        0xC000_0094 => "integer division by zero",
        0xC000_00FD => "stack overflow",
        0xC000_0409 => "fail fast (abort)",
        0xC000_013A => "Ctrl-C",
        _ => return None,
    })
}

/// How a child ended, in words: `{what} exited with status N`, or for an
/// exception status (`0xC…`) `{what} crashed with status 0x… (NAME)`.
pub fn describe_exit(what: &str, status: ExitStatus) -> String {
    match status.code() {
        Some(code) if (code as u32) >= 0xC000_0000 => {
            let code = code as u32;
            match status_name(code) {
                Some(name) => format!("{what} crashed with status {code:#010X} ({name})"),
                None => format!("{what} crashed with status {code:#010X}"),
            }
            .replace("0X", "0x")
        }
        Some(code) => format!("{what} exited with status {code}"),
        None => format!("{what} ended: {status}"),
    }
}

/// What stops the host: Ctrl-C, Ctrl-Break, the console's close or a
/// shutdown, and its stop event (set by a launcher that stops its core, by
/// the service control manager's stop, see `service.rs`).
pub struct StopSignals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    ctrl_close: tokio::signal::windows::CtrlClose,
    ctrl_shutdown: tokio::signal::windows::CtrlShutdown,
    event: tokio::sync::oneshot::Receiver<()>,
}

impl StopSignals {
    /// Catches them from now on: makes this process's stop event.
    pub fn catch() -> io::Result<StopSignals> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        let name = stop_event_name(std::process::id());
        // SAFETY: a NUL-terminated name; a manual-reset event, not set.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, name.as_ptr()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the event just made, owned from here on.
        let event = unsafe { OwnedHandle::from_raw_handle(event) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("stop event".to_owned())
            .spawn(move || {
                // SAFETY: waiting on the event this thread owns.
                unsafe { WaitForSingleObject(event.as_raw_handle(), INFINITE) };
                let _ = tx.send(());
            })?;
        Ok(StopSignals {
            ctrl_c: ctrl_c()?,
            ctrl_break: ctrl_break()?,
            ctrl_close: ctrl_close()?,
            ctrl_shutdown: ctrl_shutdown()?,
            event: rx,
        })
    }

    /// The name of the first one that came.
    pub async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.ctrl_c.recv() => "Ctrl-C",
            _ = self.ctrl_break.recv() => "Ctrl-Break",
            _ = self.ctrl_close.recv() => "console close",
            _ = self.ctrl_shutdown.recv() => "shutdown",
            _ = &mut self.event => "stop event",
        }
    }
}

/// Windows has no `exec`: `restart_mode = "exec"` is refused when the
/// configuration is read; this answers the same should it be asked.
pub fn exec_self(_exe: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, EXEC_REFUSED)
}

/// Why `restart_mode = "exec"` is refused on Windows.
pub const EXEC_REFUSED: &str = "restart_mode = \"exec\" is Linux-only (Windows has no exec): use \"command\" with upgrade-job-start.bat (the Windows default) or \"exit\" under a service manager that restarts the box";

/// The PE machine of this build's architecture.
fn this_machine() -> Option<u16> {
    Some(match std::env::consts::ARCH {
        "x86" => 0x014c,
        "x86_64" => 0x8664,
        "aarch64" => 0xaa64,
        _ => return None,
    })
}

/// Checks that `path` can run here before it is started: a PE file (`MZ`,
/// then `PE\0\0` where the header says) for this machine's architecture.
pub fn check_executable(path: &Path) -> io::Result<()> {
    let bytes = {
        use std::io::Read;
        let mut head = Vec::with_capacity(4096);
        fs::File::open(path)
            .and_then(|f| f.take(4096).read_to_end(&mut head))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        head
    };
    let not_pe = || {
        io::Error::other(format!(
            "{} is not a Windows executable (PE file)",
            path.display()
        ))
    };
    if !bytes.starts_with(b"MZ") || bytes.len() < 0x40 {
        return Err(not_pe());
    }
    let at = u32::from_le_bytes([bytes[0x3c], bytes[0x3d], bytes[0x3e], bytes[0x3f]]) as usize;
    let Some(header) = bytes.get(at..at + 6) else {
        return Err(not_pe());
    };
    if &header[..4] != b"PE\0\0" {
        return Err(not_pe());
    }
    let machine = u16::from_le_bytes([header[4], header[5]]);
    if Some(machine) != this_machine() {
        return Err(io::Error::other(format!(
            "{} is built for another architecture (PE machine {machine:#06x}); this box is {}",
            path.display(),
            std::env::consts::ARCH
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_passes_the_pe_check_and_a_text_file_does_not() {
        let exe = std::env::current_exe().unwrap();
        check_executable(&exe).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("banalytics-box.exe");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        let err = check_executable(&text).unwrap_err().to_string();
        assert!(err.contains("is not a Windows executable"), "{err}");
    }

    #[test]
    fn a_stop_event_reaches_the_process_that_caught_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let signals = StopSignals::catch().unwrap();
            assert!(set_stop_event(std::process::id()));
            let how = tokio::time::timeout(Duration::from_secs(10), signals.recv())
                .await
                .expect("the stop event was seen");
            assert_eq!(how, "stop event");
        });
        assert!(!set_stop_event(u32::MAX - 1), "no such process, no event");
    }
}
