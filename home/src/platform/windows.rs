//! The Windows side of [`crate::platform`].

use std::{
    fs, io,
    os::windows::ffi::OsStrExt,
    path::Path,
    time::{Duration, Instant},
};

use windows_sys::Win32::{
    Foundation::{ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, FALSE, TRUE},
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

/// Renames `from` to `to` ([`replace_file`]). A folder cannot replace
/// another one, so an empty folder at `to` is removed first (the swap's
/// contract: `to` does not exist or is empty).
pub fn rename_dir(from: &Path, to: &Path) -> io::Result<()> {
    if to.is_dir() {
        match fs::remove_dir(to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    replace_file(from, to)
}

/// Renames the file `from` over `to` with `MoveFileExW(MOVEFILE_REPLACE_EXISTING
/// | MOVEFILE_WRITE_THROUGH)`, which returns once the rename is on disk.
///
/// Windows refuses a rename for a moment while another process holds one
/// of the two without sharing its deletion: an indexer, a virus scanner,
/// or a process that was just killed and whose handles are not closed yet
/// (`ERROR_ACCESS_DENIED`, `ERROR_SHARING_VIOLATION`). Such a rename is
/// tried again for up to [`RENAME_PATIENCE`]; a lasting refusal is the
/// error then.
pub fn replace_file(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (wide(from), wide(to));
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        // SAFETY: two NUL-terminated UTF-16 paths that outlive the call.
        let ok = unsafe {
            MoveFileExW(
                from.as_ptr(),
                to.as_ptr(),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        };
        if ok != FALSE {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        let transient = matches!(
            e.raw_os_error().and_then(|c| u32::try_from(c).ok()),
            Some(ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION)
        );
        if !transient || started.elapsed() >= RENAME_PATIENCE {
            return Err(e);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// How long [`replace_file`] tries a rename that Windows refuses for a
/// moment.
pub const RENAME_PATIENCE: Duration = Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file held open without sharing its deletion (as a process killed
    /// a moment ago holds its files until Windows closes its handles)
    /// refuses a rename over it; the rename goes through once it is let go.
    #[test]
    fn a_rename_over_a_file_held_for_a_moment_goes_through_once_it_is_let_go() {
        use std::os::windows::fs::OpenOptionsExt;
        use windows_sys::Win32::Storage::FileSystem::FILE_SHARE_READ;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("journal.tmp"), dir.path().join("journal"));
        fs::write(&from, b"new").unwrap();
        fs::write(&to, b"old").unwrap();
        let held = fs::OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ)
            .open(&to)
            .unwrap();
        let let_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        replace_file(&from, &to).unwrap();
        let_go.join().unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }
}
