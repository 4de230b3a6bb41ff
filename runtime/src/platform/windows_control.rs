//! The Windows control channel: a named pipe, `\\.\pipe\banalytics-box-`
//! and 16 hex digits of the SHA-256 of the control socket's path (so one
//! per home, found from the same `--home` as on Unix), with an ACL that
//! lets only the pipe's owner, SYSTEM and the Administrators in
//! (`OWNER_ONLY_SDDL`), and remote clients refused.

use std::{
    ffi::c_void,
    io::{self, Read, Write},
    os::windows::io::AsRawHandle,
    path::Path,
    time::{Duration, Instant},
};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::{
    Foundation::{LocalFree, ERROR_PIPE_BUSY},
    Security::{
        Authorization::{ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1},
        PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
    },
    System::Pipes::PeekNamedPipe,
};

/// The pipe's ACL: full access for SYSTEM, the Administrators and the
/// owner (the account the host runs as), nobody else; protected from
/// inherited entries.
pub const OWNER_ONLY_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)";

/// The pipe that stands for the control socket `path`.
pub fn pipe_name(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_owned());
    let key = dir
        .join(path.file_name().unwrap_or_default())
        .to_string_lossy()
        .to_lowercase();
    let digest = banalytics_home::Sha256::of(key.as_bytes()).to_string();
    format!(r"\\.\pipe\banalytics-box-{}", &digest[..16])
}

/// The host's end: one pipe instance waits for a client at a time; the next
/// one is made as soon as a client connected.
pub struct Listener {
    name: String,
    next: NamedPipeServer,
}

/// One accepted connection.
pub type Stream = NamedPipeServer;

fn server(name: &str, first: bool) -> io::Result<NamedPipeServer> {
    let sddl: Vec<u16> = OWNER_ONLY_SDDL.encode_utf16().chain(Some(0)).collect();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated SDDL string and an out-pointer; the
    // descriptor is freed below with LocalFree.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor,
        bInheritHandle: 0,
    };
    // SAFETY: the attributes and their descriptor outlive the call.
    let server = unsafe {
        ServerOptions::new()
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .create_with_security_attributes_raw(
                name,
                (&mut attributes as *mut SECURITY_ATTRIBUTES).cast::<c_void>(),
            )
    };
    // SAFETY: allocated by the conversion above, no longer used.
    unsafe { LocalFree(descriptor) };
    server
}

/// Makes the control pipe of the socket path `path`. The first instance
/// is made exclusively: another process serving the same pipe is an error.
pub fn bind(path: &Path) -> io::Result<Listener> {
    let name = pipe_name(path);
    let next = server(&name, true)?;
    Ok(Listener { name, next })
}

impl Listener {
    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        self.next.connect().await?;
        let fresh = server(&self.name, false)?;
        Ok(std::mem::replace(&mut self.next, fresh))
    }
}

/// The CLI's end of one connection: the pipe opened as a file, with a read
/// timeout (`PeekNamedPipe` until bytes or the end arrive).
pub struct Client {
    pipe: std::fs::File,
    timeout: Duration,
}

/// How often a waiting read looks at the pipe.
const READ_POLL: Duration = Duration::from_millis(10);

/// Connects to the host whose control socket would be `path`; `Ok(None)`
/// when no host serves its pipe.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Option<Client>> {
    let name = pipe_name(path);
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
        {
            Ok(pipe) => return Ok(Some(Client { pipe, timeout })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Every instance is taken for a moment: the host makes the
            // next one as soon as a client connected.
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(READ_POLL);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: the control pipe is open to the home's owner only; \
                         run banalytics-box as the account the box runs as, or as an administrator"
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut available = 0u32;
            // SAFETY: the pipe's handle is open; only the count is asked.
            let ok = unsafe {
                PeekNamedPipe(
                    self.pipe.as_raw_handle(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    &mut available,
                    std::ptr::null_mut(),
                )
            };
            // A broken pipe (the host closed it) reads as the end.
            if ok == 0 || available > 0 {
                return self.pipe.read(buf);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            std::thread::sleep(READ_POLL);
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pipe.flush()
    }
}
