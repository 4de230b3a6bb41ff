//! The Windows side of [`crate::platform`].

use std::{fs, io, os::windows::ffi::OsStrExt, path::Path};

use windows_sys::Win32::{
    Foundation::{FALSE, TRUE},
    Storage::FileSystem::{
        GetDiskFreeSpaceExW, MoveFileExW, MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH,
    },
};

use crate::digests::FileKey;

/// 1970-01-01 in `FILETIME` ticks (100 ns since 1601-01-01).
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain(Some(0)).collect()
}

/// Nothing to do: Windows cannot open a folder to flush it. The renames of
/// the swap are written through ([`rename_dir`]) and files are flushed
/// (`FlushFileBuffers`, std's `sync_all`) before they are renamed; NTFS's
/// metadata journal covers folder entries.
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Renames `from` to `to` with `MoveFileExW(MOVEFILE_REPLACE_EXISTING |
/// MOVEFILE_WRITE_THROUGH)`, which returns once the rename is on disk. A
/// folder cannot replace another one, so an empty folder at `to` is
/// removed first (the swap's contract: `to` does not exist or is empty).
pub fn rename_dir(from: &Path, to: &Path) -> io::Result<()> {
    if to.is_dir() {
        match fs::remove_dir(to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let (from, to) = (wide(from), wide(to));
    // SAFETY: two NUL-terminated UTF-16 paths that outlive the call.
    let ok = unsafe {
        MoveFileExW(
            from.as_ptr(),
            to.as_ptr(),
            MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
        )
    };
    if ok == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Windows has no atomic exchange of two folders: the swap renames three
/// times through a scratch name, each step journaled.
pub fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Makes `options` create a new file. Windows has no mode bits: the file
/// inherits the home folder's ACL, which the installer makes owner-only
/// (README, Windows).
pub fn create_private(options: &mut fs::OpenOptions, _mode: u32) {
    options.create_new(true);
}

/// The digest cache's key of the file `meta` describes: its size and last
/// write time (100 ns ticks since 1601, counted from the Unix epoch here). std gives no volume or file index from
/// metadata alone, so `dev` and `ino` are 0: a file replaced by another of
/// the same size and write time keeps its cached digest, which the swap's
/// writers never produce (every installed file is written anew).
pub fn file_key(meta: &fs::Metadata) -> FileKey {
    use std::os::windows::fs::MetadataExt;
    FileKey {
        dev: 0,
        ino: 0,
        size: meta.file_size(),
        mtime_ns: (i64::try_from(meta.last_write_time()).unwrap_or(i64::MAX) - FILETIME_UNIX_EPOCH)
            .saturating_mul(100),
    }
}

/// Free bytes for this user on the volume holding `path`
/// (`GetDiskFreeSpaceExW`, quotas included), a folder or a file.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    // A missing path is an error, as statvfs's is on Unix. The call takes
    // folders only (a file is "Directory name invalid"): a file's folder.
    let path = match fs::metadata(path)?.is_dir() {
        true => path,
        false => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    };
    let path = wide(path);
    let mut available = 0u64;
    // SAFETY: a NUL-terminated path and one out-pointer; the others null.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            path.as_ptr(),
            &mut available,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ok != TRUE {
        return Err(io::Error::last_os_error());
    }
    Ok(available)
}

#[cfg(feature = "failpoints")]
/// Dies at once (`TerminateProcess`, status 137, as a SIGKILL's shell
/// status), as a crash would.
pub fn kill_self() -> ! {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
    // SAFETY: terminating our own process.
    unsafe {
        TerminateProcess(GetCurrentProcess(), 137);
    }
    unreachable!("TerminateProcess returned")
}
