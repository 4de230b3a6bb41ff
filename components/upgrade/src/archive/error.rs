//! Why an archive was refused or could not be extracted: one variant per
//! check of the two passes, each naming the entry and the value.

use std::io;
use std::path::{Path, PathBuf};

use zip::result::ZipError;

/// Why an archive was refused or could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The entry name is not a plain relative name inside the target.
    #[error("archive entry {entry:?} has an unsafe name: {reason}")]
    UnsafeName {
        /// The entry name as stored.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entry name is longer than validation keeps.
    #[error("archive entry {entry:?} has a name of {bytes} bytes, over the limit of {limit}")]
    NameTooLong {
        /// The start of the entry name, cut with `…`.
        entry: String,
        /// Its length in bytes.
        bytes: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The entry name nests more folders than validation keeps.
    #[error("archive entry {entry:?} is {depth} levels deep, over the limit of {limit}")]
    NameTooDeep {
        /// The start of the entry name, cut with `…` when long.
        entry: String,
        /// Its path components.
        depth: usize,
        /// The limit in path components.
        limit: usize,
    },
    /// The entry is a symbolic link.
    #[error("archive entry {entry:?} is a symbolic link")]
    Symlink {
        /// The entry name.
        entry: String,
    },
    /// The entry is a device, fifo, socket or other non-regular file.
    #[error("archive entry {entry:?} is not a regular file or directory (mode {mode:o})")]
    NotRegular {
        /// The entry name.
        entry: String,
        /// The unix mode from the entry's external attributes.
        mode: u32,
    },
    /// The entry is encrypted or uses a compression method we do not read.
    #[error("archive entry {entry:?} is not supported: {reason}")]
    Unsupported {
        /// The entry name.
        entry: String,
        /// What is not supported.
        reason: String,
    },
    /// The same name appears more than once.
    #[error("archive entry {entry:?} appears more than once")]
    Duplicate {
        /// The repeated name.
        entry: String,
    },
    /// Two names differ only by case, so they would be one file on a
    /// case-insensitive file system.
    #[error("archive entry {entry:?} collides with {other:?} when case is ignored")]
    CaseCollision {
        /// The later entry.
        entry: String,
        /// The earlier entry, or the directory it implies.
        other: String,
    },
    /// A name is used both as a file and as a directory.
    #[error("archive entry {entry:?} is a file but {other:?} needs it to be a directory")]
    FileDirConflict {
        /// The file entry.
        entry: String,
        /// The entry that needs it as a directory.
        other: String,
    },
    /// The central directory holds more entries than allowed.
    #[error("archive has {count} entries, over the limit of {limit}")]
    TooManyEntries {
        /// Entries counted (at least `limit + 1`).
        count: u64,
        /// [`Limits::max_entries`](super::Limits::max_entries).
        limit: u64,
    },
    /// One entry is larger than allowed.
    #[error("archive entry {entry:?} is {size} bytes, over the per-entry limit of {limit}")]
    TooLarge {
        /// The entry name.
        entry: String,
        /// Its declared size, or the real bytes counted so far.
        size: u64,
        /// [`Limits::max_entry_bytes`](super::Limits::max_entry_bytes).
        limit: u64,
    },
    /// All entries together are larger than allowed.
    #[error("archive reaches {total} bytes at entry {entry:?}, over the total limit of {limit}")]
    TotalTooLarge {
        /// The entry that went over.
        entry: String,
        /// Total bytes, declared or real, up to and including that entry.
        total: u64,
        /// [`Limits::max_total_bytes`](super::Limits::max_total_bytes).
        limit: u64,
    },
    /// The declared uncompressed sizes would not leave `min_free_space`
    /// free. Nothing was written.
    #[error("archive expands to {declared} bytes, {free} free, {min_free} must stay free (min_free_space)")]
    NoSpace {
        /// Sum of the entries' declared uncompressed sizes.
        declared: u64,
        /// Bytes free on the target's file system.
        free: u64,
        /// The reserve.
        min_free: u64,
    },
    /// The file system filled up while the entries were written (`ENOSPC`):
    /// something else (recordings) took the space after the check. The
    /// caller removes the scratch folder, which frees what was written.
    #[error("the file system of {target} filled up during extraction (ENOSPC) with {free} bytes free; {min_free} must stay free (min_free_space)")]
    FileSystemFull {
        /// The folder extracted into.
        target: PathBuf,
        /// Bytes free when it stopped.
        free: u64,
        /// The reserve.
        min_free: u64,
    },
    /// An entry expands more than the allowed ratio: a zip bomb.
    #[error("archive entry {entry:?} expands {ratio}:1, over the limit of {limit}:1")]
    RatioExceeded {
        /// The entry name.
        entry: String,
        /// Uncompressed bytes per compressed byte (rounded down).
        ratio: u64,
        /// [`Limits::max_ratio`](super::Limits::max_ratio).
        limit: u64,
    },
    /// An entry's data holds more bytes than its header declares.
    #[error("archive entry {entry:?} holds more than its declared {declared} bytes")]
    SizeExceeded {
        /// The entry name.
        entry: String,
        /// Declared uncompressed size.
        declared: u64,
    },
    /// An entry's data ends before its declared size.
    #[error("archive entry {entry:?} holds {actual} bytes, fewer than its declared {declared}")]
    Truncated {
        /// The entry name.
        entry: String,
        /// Declared uncompressed size.
        declared: u64,
        /// Bytes actually read.
        actual: u64,
    },
    /// An entry's data does not match its CRC-32.
    #[error("archive entry {entry:?} has crc32 {actual:08x}, not the declared {expected:08x}")]
    ChecksumMismatch {
        /// The entry name.
        entry: String,
        /// CRC-32 from the central directory.
        expected: u32,
        /// CRC-32 of the bytes read.
        actual: u32,
    },
    /// Two entries share bytes of the archive (a trick of
    /// overlapping-file zip bombs).
    #[error("archive {archive} has entries that overlap each other")]
    OverlappingEntries {
        /// The archive.
        archive: PathBuf,
    },
    /// Something that is not a directory we may write into is already at
    /// the place of an entry in the target.
    #[error("archive entry {entry:?} would be written through existing {path}")]
    Occupied {
        /// The entry name.
        entry: String,
        /// What is in the way.
        path: PathBuf,
    },
    /// The archive or its central directory cannot be read.
    #[error("cannot read zip archive {archive}")]
    Zip {
        /// The archive.
        archive: PathBuf,
        /// What the zip reader said.
        #[source]
        source: ZipError,
    },
    /// One entry's header or data cannot be read.
    #[error("cannot read archive entry {entry:?}")]
    Entry {
        /// The entry name.
        entry: String,
        /// What the reader said.
        #[source]
        source: io::Error,
    },
    /// Reading the archive or writing the target failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Wraps an I/O error on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { path, source }
}
