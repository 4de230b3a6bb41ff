//! The Unix side of [`crate::platform`].

use std::{fs, io, path::Path};

use crate::digests::FileKey;

/// fsyncs a folder, so that renames and creations in it are durable. An
/// empty path is the current folder.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)?.sync_all()
}

/// Renames `from` to `to` (which must not exist, or be an empty folder);
/// the caller fsyncs the parent.
pub fn rename_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Renames the file `from` over `to`; the caller fsyncs the parent.
pub fn replace_file(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Exchanges `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if crate::failpoint::no_exchange() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 via syscall, as
    // older C libraries lack the wrapper.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No atomic exchange on this Unix: the swap renames three times.
#[cfg(not(target_os = "linux"))]
pub fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Makes `options` create a new file with `mode` (e.g. 0600).
pub fn create_private(options: &mut fs::OpenOptions, mode: u32) {
    std::os::unix::fs::OpenOptionsExt::mode(options.create_new(true), mode);
}

/// The digest cache's key of the file `meta` describes: device, inode,
/// size and modification time.
pub fn file_key(meta: &fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    }
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(feature = "failpoints")]
/// Dies at once by SIGKILL, as a crash would.
pub fn kill_self() -> ! {
    // SAFETY: raising a signal on our own process.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    unreachable!("SIGKILL returned")
}
