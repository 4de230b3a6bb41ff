//! Safe extraction of a module's dependencies or model package (a zip) into
//! a staging folder.
//!
//! A package comes from the artifact repository, so its entry names and
//! headers are untrusted input (contracts §4: "archive entries are names,
//! never paths out of the target"). The zip crate's own `extract` is not
//! enough: it recreates symlinks as given and trusts more of the headers
//! than we want to, so this module runs its own loop in two passes:
//!
//! 1. Validate the whole central directory before anything is written:
//!    names (no absolute names, drive letters, `..`, backslashes, empty
//!    components, control characters), entry types (no symlinks, devices or
//!    fifos), duplicates and case-insensitive collisions, overlapping
//!    entries, and the [`Limits`] on count, declared sizes and ratio.
//! 2. Write each file with `create_new` (never through an existing file or
//!    symlink), counting the real bytes as they come out of the decompressor:
//!    an entry that holds more than it declares, expands past the ratio
//!    limit, or pushes the real total over the limit is refused mid-stream,
//!    so a zip bomb with lying headers is caught. Every file and directory
//!    written is fsynced.
//!
//! On error the target may hold partial files (the caller extracts into a
//! staging folder and throws it away), but nothing is ever written outside
//! the target. That guarantee assumes no other process swaps directories
//! for symlinks inside the target while we write (it is our own staging
//! folder): directories are checked with `symlink_metadata` before use, but
//! files are not opened relative to a directory handle.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive, ZipReadOptions};

use crate::layout::sync_dir;

/// Default for [`Limits::max_entries`]. A dependencies package holds
/// libraries and a model package a handful of files, both in the hundreds
/// at most; 10 000 leaves headroom while bounding the inodes and the
/// validation work one package can cost.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Default for [`Limits::max_total_bytes`]. The largest model packages we
/// ship are a few hundred MiB; 4 GiB leaves room for growth and still fits
/// the smallest box's storage with a staged and an installed module set.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Default for [`Limits::max_entry_bytes`]. Half the total: one model file
/// may dominate a package, but a single 2 GiB+ file is not something we
/// ship.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Default for [`Limits::max_ratio`]. Libraries and model weights deflate
/// to well under 10:1 and even plain text stays under ~100:1, while deflate
/// tops out near 1032:1, which is what bombs use; 200:1 sits between.
pub const DEFAULT_MAX_RATIO: u64 = 200;

/// Below this many bytes an entry is never refused for its ratio: a small
/// file of zeros or repeated text legitimately deflates past 200:1, and
/// expanding to 1 MiB harms nothing.
const RATIO_GRACE_BYTES: u64 = 1024 * 1024;

/// Size of the copy buffer: big enough to keep syscalls cheap, small enough
/// to not matter on a box.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Bounds that an archive must stay within to be extracted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (files and directories, counting duplicates) the
    /// central directory may hold.
    pub max_entries: u64,
    /// Most bytes all files together may expand to, declared or real.
    pub max_total_bytes: u64,
    /// Most bytes a single file may expand to, declared or real.
    pub max_entry_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes an entry may have
    /// (`200` means 200:1), once it has expanded past 1 MiB.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }
}

/// What [`extract`] wrote into the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// The files written, in archive order.
    pub files: Vec<ExtractedFile>,
    /// Sum of the sizes of [`Extracted::files`].
    pub total_bytes: u64,
}

/// One file written by [`extract`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Path relative to the target, built from the entry name's components.
    pub path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of the bytes written, lower-case hex, computed while writing.
    pub sha256: String,
}

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
        /// [`Limits::max_entries`].
        limit: u64,
    },
    /// One entry is larger than allowed.
    #[error("archive entry {entry:?} is {size} bytes, over the per-entry limit of {limit}")]
    TooLarge {
        /// The entry name.
        entry: String,
        /// Its declared size, or the real bytes counted so far.
        size: u64,
        /// [`Limits::max_entry_bytes`].
        limit: u64,
    },
    /// All entries together are larger than allowed.
    #[error("archive reaches {total} bytes at entry {entry:?}, over the total limit of {limit}")]
    TotalTooLarge {
        /// The entry that went over.
        entry: String,
        /// Total bytes, declared or real, up to and including that entry.
        total: u64,
        /// [`Limits::max_total_bytes`].
        limit: u64,
    },
    /// An entry expands more than the allowed ratio: a zip bomb.
    #[error("archive entry {entry:?} expands {ratio}:1, over the limit of {limit}:1")]
    RatioExceeded {
        /// The entry name.
        entry: String,
        /// Uncompressed bytes per compressed byte (rounded down).
        ratio: u64,
        /// [`Limits::max_ratio`].
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

/// Extracts the zip `archive` into the existing directory `target`.
///
/// The whole central directory is validated first; nothing is written
/// unless every entry passes. Then files are created with `create_new`
/// (an existing file or symlink is never followed or overwritten),
/// directories are created as needed inside `target` only, no permissions
/// are taken from the archive except the owner's executable bit, and every
/// file and directory written is fsynced.
///
/// On error `target` may hold partial files; nothing is written outside it.
#[tracing::instrument(skip_all, fields(archive = %archive.display(), target = %target.display()))]
pub fn extract(archive: &Path, target: &Path, limits: &Limits) -> Result<Extracted, ArchiveError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    let meta = fs::metadata(target).map_err(io_err(target))?;
    if !meta.is_dir() {
        return Err(ArchiveError::Io {
            path: target.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "target is not a directory"),
        });
    }
    let file = File::open(archive).map_err(io_err(archive))?;
    let zip_err = |source| ArchiveError::Zip {
        archive: archive.to_path_buf(),
        source,
    };
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;

    // Pass 1: validate everything, write nothing.
    let plan = validate(&mut zip, archive, limits)?;

    // Pass 2: directories, then files, then fsync the directories.
    let mut to_sync: Vec<PathBuf> = vec![target.to_path_buf()];
    for dir in &plan.dirs {
        let path = join(target, dir);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only a real directory may be reused; a symlink would lead out.
                let existing = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                if !existing.is_dir() {
                    return Err(ArchiveError::Occupied {
                        entry: dir.clone(),
                        path,
                    });
                }
            }
            Err(e) => return Err(ArchiveError::Io { path, source: e }),
        }
        to_sync.push(path);
    }

    let mut extracted = Extracted::default();
    for entry in &plan.files {
        let path = join(target, &entry.name);
        let options = ZipReadOptions::new()
            .enforce_header_consistency(true)
            // We check the CRC ourselves, so that a read error at the declared
            // size can only mean the data runs past it.
            .ignore_crc32(true);
        let mut reader = zip
            .by_index_with_options(entry.index, options)
            .map_err(|source| ArchiveError::Entry {
                entry: entry.name.clone(),
                source: zip_to_io(source),
            })?;
        let mut out = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ArchiveError::Occupied {
                    entry: entry.name.clone(),
                    path,
                })
            }
            Err(e) => return Err(ArchiveError::Io { path, source: e }),
        };
        let budget = limits.max_total_bytes.saturating_sub(extracted.total_bytes);
        let written = copy_entry(&mut reader, &mut out, &path, entry, limits, budget).map_err(
            |e| match e {
                ArchiveError::TotalTooLarge {
                    entry,
                    total,
                    limit,
                } => ArchiveError::TotalTooLarge {
                    entry,
                    total: total + extracted.total_bytes,
                    limit,
                },
                other => other,
            },
        )?;
        if entry.executable {
            set_user_executable(&out).map_err(io_err(&path))?;
        }
        out.sync_all().map_err(io_err(&path))?;
        extracted.total_bytes += written.size;
        extracted.files.push(ExtractedFile {
            path: entry.name.split('/').collect(),
            size: written.size,
            sha256: written.sha256,
        });
    }

    // Children first, so each directory's entry in its parent is synced
    // after the directory's own contents.
    for dir in to_sync.iter().rev() {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    tracing::info!(
        files = extracted.files.len(),
        bytes = extracted.total_bytes,
        "extracted"
    );
    Ok(extracted)
}

/// A file entry that passed validation.
#[derive(Debug)]
struct PlannedFile {
    index: usize,
    /// Validated name, `/`-separated, no trailing slash.
    name: String,
    declared: u64,
    compressed: u64,
    crc32: u32,
    executable: bool,
}

/// Everything pass 2 needs, decided by pass 1.
#[derive(Debug, Default)]
struct Plan {
    /// Every directory to exist, explicit or implied, parents before children.
    dirs: BTreeSet<String>,
    files: Vec<PlannedFile>,
}

/// What one name in the archive stands for, for collision checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Pass 1: checks the whole central directory and returns what to write.
fn validate<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    archive: &Path,
    limits: &Limits,
) -> Result<Plan, ArchiveError> {
    let zip_err = |source| ArchiveError::Zip {
        archive: archive.to_path_buf(),
        source,
    };
    // The zip reader keeps one entry per raw name, so duplicates have to be
    // found (and counted) in the raw central directory.
    let raw_duplicate = if zip.has_duplicate_names() {
        let (count, duplicate) =
            scan_raw_names(archive, zip.central_directory_start(), limits.max_entries).map_err(
                |source| ArchiveError::Io {
                    path: archive.to_path_buf(),
                    source,
                },
            )?;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                count,
                limit: limits.max_entries,
            });
        }
        duplicate
    } else {
        None
    };
    let count = zip.len() as u64;
    if count > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count,
            limit: limits.max_entries,
        });
    }
    if let Some(entry) = raw_duplicate {
        return Err(ArchiveError::Duplicate { entry });
    }
    if zip.has_overlapping_entries().map_err(zip_err)? {
        return Err(ArchiveError::OverlappingEntries {
            archive: archive.to_path_buf(),
        });
    }

    let mut plan = Plan::default();
    // Case-folded name -> (name as written, kind, explicit entry?).
    let mut seen: HashMap<String, (String, Kind, bool)> = HashMap::new();
    let mut declared_total: u64 = 0;
    for index in 0..zip.len() {
        let data = zip.by_index_data(index).map_err(zip_err)?;
        let raw_name = data.name().map_err(zip_err)?.into_owned();
        // The zip reader derives a mode from DOS attributes for DOS-made
        // entries and ignores the high bits there, so the raw unix bits are
        // checked as well: a symlink is refused whatever system claims it.
        let raw_mode = data.external_attributes() >> 16;
        let mode = data.unix_mode().unwrap_or(raw_mode);
        let mut kind = if raw_name.ends_with('/') {
            Kind::Dir
        } else {
            Kind::File
        };
        for mode in [raw_mode, mode] {
            match mode & S_IFMT {
                0 | S_IFREG => {}
                S_IFDIR => kind = Kind::Dir,
                S_IFLNK => return Err(ArchiveError::Symlink { entry: raw_name }),
                _ => {
                    return Err(ArchiveError::NotRegular {
                        entry: raw_name,
                        mode,
                    })
                }
            }
        }
        let name = check_name(&raw_name, kind).map_err(|reason| ArchiveError::UnsafeName {
            entry: raw_name.clone(),
            reason,
        })?;
        record_name(&mut seen, &raw_name, &name, kind)?;

        // Every parent of the entry, and the entry itself if a directory.
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        let dir_parts = if kind == Kind::Dir {
            parts.len()
        } else {
            parts.len() - 1
        };
        for part in &parts[..dir_parts] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            plan.dirs.insert(prefix.clone());
        }
        if kind == Kind::Dir {
            continue;
        }

        if data.encrypted() {
            return Err(ArchiveError::Unsupported {
                entry: raw_name,
                reason: "encrypted".to_owned(),
            });
        }
        let method = data.compression();
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(ArchiveError::Unsupported {
                entry: raw_name,
                reason: format!("compression method {method}"),
            });
        }
        let declared = data.size();
        let compressed = data.compressed_size();
        if declared > limits.max_entry_bytes {
            return Err(ArchiveError::TooLarge {
                entry: raw_name,
                size: declared,
                limit: limits.max_entry_bytes,
            });
        }
        declared_total = declared_total.saturating_add(declared);
        if declared_total > limits.max_total_bytes {
            return Err(ArchiveError::TotalTooLarge {
                entry: raw_name,
                total: declared_total,
                limit: limits.max_total_bytes,
            });
        }
        if let Some(ratio) = ratio_over(declared, compressed, limits.max_ratio) {
            return Err(ArchiveError::RatioExceeded {
                entry: raw_name,
                ratio,
                limit: limits.max_ratio,
            });
        }
        plan.files.push(PlannedFile {
            index,
            name,
            declared,
            compressed,
            crc32: data.crc32(),
            executable: mode & 0o100 != 0,
        });
    }
    Ok(plan)
}

/// Records `name` in `seen` together with every directory it implies, and
/// refuses duplicates, case collisions and file/directory conflicts.
fn record_name(
    seen: &mut HashMap<String, (String, Kind, bool)>,
    raw_name: &str,
    name: &str,
    kind: Kind,
) -> Result<(), ArchiveError> {
    let parts: Vec<&str> = name.split('/').collect();
    for end in 1..=parts.len() {
        let path = parts[..end].join("/");
        let explicit = end == parts.len();
        let this_kind = if explicit { kind } else { Kind::Dir };
        let folded = fold_case(&path);
        match seen.get(&folded) {
            None => {
                seen.insert(folded, (path, this_kind, explicit));
            }
            Some((other, other_kind, other_explicit)) => {
                if *other != path {
                    return Err(ArchiveError::CaseCollision {
                        entry: raw_name.to_owned(),
                        other: other.clone(),
                    });
                }
                if this_kind != *other_kind {
                    let (file, dir) = if this_kind == Kind::File {
                        (raw_name.to_owned(), other.clone())
                    } else {
                        (other.clone(), raw_name.to_owned())
                    };
                    return Err(ArchiveError::FileDirConflict {
                        entry: file,
                        other: dir,
                    });
                }
                if explicit && *other_explicit {
                    return Err(ArchiveError::Duplicate {
                        entry: raw_name.to_owned(),
                    });
                }
                if explicit {
                    seen.insert(folded, (path, this_kind, true));
                }
            }
        }
    }
    Ok(())
}

/// The key under which two names collide on a case-insensitive file
/// system: Unicode lower case of the Unicode upper case, so that for
/// example `ſ`, `s` and `S` all meet.
fn fold_case(name: &str) -> String {
    name.to_uppercase().to_lowercase()
}

/// Checks one entry name and returns it without a directory's trailing
/// slash, or the reason it is refused.
fn check_name(name: &str, kind: Kind) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.contains('\0') {
        return Err("contains a NUL character");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("starts with a drive letter");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("absolute name");
    }
    if name.contains('\\') {
        return Err("contains a backslash");
    }
    if name.contains(':') {
        return Err("contains a colon");
    }
    let body = match name.strip_suffix('/') {
        Some(body) if kind == Kind::Dir => body,
        Some(_) => return Err("file name ends with a slash"),
        None => name,
    };
    for part in body.split('/') {
        match part {
            "" => return Err("empty path component"),
            "." => return Err("`.` path component"),
            ".." => return Err("`..` path component"),
            _ => {}
        }
    }
    Ok(body.to_owned())
}

/// The ratio of `uncompressed` to `compressed`, if it is over `limit` and
/// the entry is past the grace size.
fn ratio_over(uncompressed: u64, compressed: u64, limit: u64) -> Option<u64> {
    if uncompressed <= RATIO_GRACE_BYTES {
        return None;
    }
    let compressed = compressed.max(1);
    (uncompressed > compressed.saturating_mul(limit)).then(|| uncompressed / compressed)
}

/// Walks the raw central directory and returns the number of headers (up to
/// `max_entries + 1`) and the first name that appears twice.
fn scan_raw_names(
    archive: &Path,
    start: u64,
    max_entries: u64,
) -> io::Result<(u64, Option<String>)> {
    const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
    const CENTRAL_HEADER_LEN: usize = 46;
    let mut reader = BufReader::new(File::open(archive)?);
    reader.seek(SeekFrom::Start(start))?;
    let mut names = BTreeSet::new();
    let mut duplicate = None;
    let mut count = 0u64;
    let mut header = [0u8; CENTRAL_HEADER_LEN];
    while count <= max_entries {
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let le16 = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]) as usize;
        let signature = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if signature != CENTRAL_HEADER_SIGNATURE {
            break;
        }
        count += 1;
        let mut name = vec![0u8; le16(28)];
        reader.read_exact(&mut name)?;
        let skip = (le16(30) + le16(32)) as i64;
        reader.seek(SeekFrom::Current(skip))?;
        if duplicate.is_none() && !names.insert(name.clone()) {
            duplicate = Some(String::from_utf8_lossy(&name).into_owned());
        }
    }
    Ok((count, duplicate))
}

/// What [`copy_entry`] wrote.
#[derive(Debug)]
struct Written {
    size: u64,
    sha256: String,
}

/// Copies one entry's data to `out`, counting real bytes: never more than
/// the declared size plus one probe byte is read, and the ratio, per-entry
/// and total limits are checked on every chunk. `budget` is what is left of
/// [`Limits::max_total_bytes`]; a `TotalTooLarge` error reports the bytes of
/// this entry only and the caller adds the earlier ones.
fn copy_entry(
    reader: &mut impl Read,
    out: &mut impl Write,
    path: &Path,
    entry: &PlannedFile,
    limits: &Limits,
    budget: u64,
) -> Result<Written, ArchiveError> {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut sha = Sha256::new();
    // zip's CRC-32 (IEEE), so that the zip reader's own check can be
    // turned off without losing the integrity check.
    let mut crc = crc32fast::Hasher::new();
    let mut written: u64 = 0;
    loop {
        // Read up to the declared size, then probe for one byte more: that is
        // enough to tell there is more, and it is the only read that can trip
        // the zip reader's own size limit.
        let want = (entry.declared - written).clamp(1, buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // With the zip reader's CRC check off, an invalid-data error at the
            // declared size is its own size limit tripping: there is more data.
            Err(e) if written == entry.declared && e.kind() == io::ErrorKind::InvalidData => {
                return Err(ArchiveError::SizeExceeded {
                    entry: entry.name.clone(),
                    declared: entry.declared,
                })
            }
            Err(source) => {
                return Err(ArchiveError::Entry {
                    entry: entry.name.clone(),
                    source,
                })
            }
        };
        if n == 0 {
            break;
        }
        let next = written + n as u64;
        if next > entry.declared {
            return Err(ArchiveError::SizeExceeded {
                entry: entry.name.clone(),
                declared: entry.declared,
            });
        }
        if next > limits.max_entry_bytes {
            return Err(ArchiveError::TooLarge {
                entry: entry.name.clone(),
                size: next,
                limit: limits.max_entry_bytes,
            });
        }
        if next > budget {
            return Err(ArchiveError::TotalTooLarge {
                entry: entry.name.clone(),
                total: next,
                limit: limits.max_total_bytes,
            });
        }
        if let Some(ratio) = ratio_over(next, entry.compressed, limits.max_ratio) {
            return Err(ArchiveError::RatioExceeded {
                entry: entry.name.clone(),
                ratio,
                limit: limits.max_ratio,
            });
        }
        let chunk = &buf[..n];
        sha.update(chunk);
        crc.update(chunk);
        out.write_all(chunk).map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        written = next;
    }
    if written != entry.declared {
        return Err(ArchiveError::Truncated {
            entry: entry.name.clone(),
            declared: entry.declared,
            actual: written,
        });
    }
    let actual = crc.finalize();
    if actual != entry.crc32 {
        return Err(ArchiveError::ChecksumMismatch {
            entry: entry.name.clone(),
            expected: entry.crc32,
            actual,
        });
    }
    Ok(Written {
        size: written,
        sha256: hex::encode(sha.finalize()),
    })
}

/// Turns a zip error into an I/O error for [`ArchiveError::Entry`].
fn zip_to_io(error: ZipError) -> io::Error {
    match error {
        ZipError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// `target` joined with a validated `/`-separated relative name.
fn join(target: &Path, name: &str) -> PathBuf {
    let mut path = target.to_path_buf();
    path.extend(name.split('/'));
    path
}

/// Adds the owner's executable bit, the one permission taken from the
/// archive (native libraries and launchers need it).
#[cfg(unix)]
fn set_user_executable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = file.metadata()?.permissions();
    permissions.set_mode(permissions.mode() | 0o100);
    file.set_permissions(permissions)
}

/// Windows has no executable bit.
#[cfg(not(unix))]
fn set_user_executable(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(declared: u64, compressed: u64, data: &[u8]) -> PlannedFile {
        PlannedFile {
            index: 0,
            name: "entry.bin".to_owned(),
            declared,
            compressed,
            crc32: crc32fast::hash(data),
            executable: false,
        }
    }

    #[test]
    fn accepts_plain_relative_names() {
        assert_eq!(check_name("a", Kind::File), Ok("a".to_owned()));
        assert_eq!(
            check_name("lib/native/libx.so", Kind::File),
            Ok("lib/native/libx.so".to_owned())
        );
        assert_eq!(check_name("models/", Kind::Dir), Ok("models".to_owned()));
        assert_eq!(
            check_name("données/é.txt", Kind::File),
            Ok("données/é.txt".to_owned())
        );
        assert_eq!(
            check_name("a..b/.hidden", Kind::File),
            Ok("a..b/.hidden".to_owned())
        );
    }

    #[test]
    fn refuses_each_unsafe_name_with_its_reason() {
        let cases = [
            ("", "empty name"),
            ("a\0b", "contains a NUL character"),
            ("a\nb", "contains a control character"),
            ("C:\\x", "starts with a drive letter"),
            ("c:x", "starts with a drive letter"),
            ("/abs", "absolute name"),
            ("\\x", "absolute name"),
            ("a\\b", "contains a backslash"),
            ("ab:stream", "contains a colon"),
            ("a/", "file name ends with a slash"),
            ("a//b", "empty path component"),
            ("./a", "`.` path component"),
            ("../x", "`..` path component"),
            ("a/../../x", "`..` path component"),
            ("a/..", "`..` path component"),
        ];
        for (name, reason) in cases {
            assert_eq!(check_name(name, Kind::File), Err(reason), "name {name:?}");
        }
        assert_eq!(check_name("a//", Kind::Dir), Err("empty path component"));
        assert_eq!(check_name("../", Kind::Dir), Err("`..` path component"));
    }

    #[test]
    fn case_folding_joins_unicode_case_variants() {
        assert_eq!(fold_case("README"), fold_case("readme"));
        assert_eq!(fold_case("ÄRGER"), fold_case("ärger"));
        // Long s and the Kelvin sign fold onto ASCII letters.
        assert_eq!(fold_case("ſ"), fold_case("s"));
        assert_eq!(fold_case("\u{212A}"), fold_case("k"));
        assert_ne!(fold_case("a"), fold_case("b"));
    }

    #[test]
    fn ratio_is_only_enforced_past_the_grace_size() {
        assert_eq!(ratio_over(RATIO_GRACE_BYTES, 1, 200), None);
        assert_eq!(
            ratio_over(RATIO_GRACE_BYTES + 1, 1, 200),
            Some(RATIO_GRACE_BYTES + 1)
        );
        assert_eq!(ratio_over(2_000_000, 10_000, 200), None);
        assert_eq!(ratio_over(2_000_001, 10_000, 200), Some(200));
        // A zero compressed size counts as one byte, never a division by zero.
        assert_eq!(ratio_over(2_000_000, 0, 200), Some(2_000_000));
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The IEEE polynomial that zip uses, fed in pieces as copy_entry does.
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.finalize(), 0xCBF4_3926);
    }

    #[test]
    fn copy_stops_at_the_declared_size_when_the_stream_has_more() {
        let data = vec![5u8; 10_000];
        let entry = planned(100, 100, &data[..100]);
        let mut out = Vec::new();
        let err = copy_entry(
            &mut &data[..],
            &mut out,
            Path::new("t"),
            &entry,
            &Limits::default(),
            u64::MAX,
        )
        .expect_err("more than declared");
        assert!(
            matches!(err, ArchiveError::SizeExceeded { ref entry, declared: 100 } if entry == "entry.bin"),
            "{err:?}"
        );
        assert_eq!(out.len(), 100, "nothing past the declared size is written");
    }

    #[test]
    fn copy_refuses_a_ratio_bomb_while_writing() {
        // Headers that claim an honest ratio are not trusted: the real bytes
        // per declared compressed byte are checked on every chunk.
        let data = vec![0u8; 4 * 1024 * 1024];
        let entry = planned(data.len() as u64, 1000, &data);
        let mut out = Vec::new();
        let err = copy_entry(
            &mut &data[..],
            &mut out,
            Path::new("t"),
            &entry,
            &Limits::default(),
            u64::MAX,
        )
        .expect_err("ratio bomb");
        assert!(
            matches!(err, ArchiveError::RatioExceeded { ref entry, limit: 200, ratio } if entry == "entry.bin" && ratio > 200),
            "{err:?}"
        );
        // Refused at the first chunk past the grace size, before writing it.
        assert!(
            out.len() as u64 <= RATIO_GRACE_BYTES,
            "wrote {} bytes",
            out.len()
        );
    }

    #[test]
    fn copy_refuses_real_bytes_past_the_remaining_total() {
        let data = vec![1u8; 5000];
        let entry = planned(5000, 5000, &data);
        let err = copy_entry(
            &mut &data[..],
            &mut Vec::new(),
            Path::new("t"),
            &entry,
            &Limits::default(),
            4000,
        )
        .expect_err("over budget");
        assert!(
            matches!(err, ArchiveError::TotalTooLarge { total: 5000, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn copy_hashes_what_it_writes() {
        let data = b"hello world".to_vec();
        let entry = planned(data.len() as u64, data.len() as u64, &data);
        let mut out = Vec::new();
        let written = copy_entry(
            &mut &data[..],
            &mut out,
            Path::new("t"),
            &entry,
            &Limits::default(),
            u64::MAX,
        )
        .expect("copy");
        assert_eq!(out, data);
        assert_eq!(written.size, 11);
        assert_eq!(
            written.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn default_limits_are_the_documented_constants() {
        let limits = Limits::default();
        assert_eq!(limits.max_entries, 10_000);
        assert_eq!(limits.max_total_bytes, 4 << 30);
        assert_eq!(limits.max_entry_bytes, 2 << 30);
        assert_eq!(limits.max_ratio, 200);
    }
}
