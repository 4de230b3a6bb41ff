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
//!    components, control characters, at most [`MAX_NAME_BYTES`] long and
//!    [`MAX_NAME_DEPTH`] deep), entry types (no symlinks, devices or
//!    fifos), duplicates and case-insensitive collisions, overlapping
//!    entries, and the [`Limits`] on count, declared sizes and ratio.
//! 2. Write each file with `create_new` (never through an existing file or
//!    symlink), counting the real bytes as they come out of the decompressor:
//!    an entry that holds more than it declares, expands past the ratio
//!    limit, or pushes the real total over the limit is refused mid-stream,
//!    so a zip bomb with lying headers is caught. Every file and directory
//!    written is fsynced.
//!
//! Pass 1 is the `validate` submodule and pass 2 the `write` submodule;
//! [`extract`] runs both. [`ArchiveError`] is in `error`.
//!
//! On error the target may hold partial files (the caller extracts into a
//! staging folder and throws it away), but nothing is ever written outside
//! the target. That guarantee assumes no other process swaps directories
//! for symlinks inside the target while we write (it is our own staging
//! folder): directories are checked with `symlink_metadata` before use, but
//! files are not opened relative to a directory handle.

mod error;
mod validate;
mod write;

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use error::io_err;
pub use error::ArchiveError;
pub use validate::{MAX_NAME_BYTES, MAX_NAME_DEPTH};

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

/// Bounds that an archive must stay within to be extracted at all.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The free space to keep on the target's file system: an archive
    /// whose declared uncompressed sizes would not leave it is refused
    /// before anything is written (default: no reserve).
    pub space: crate::fetch::space::Space,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_ratio: DEFAULT_MAX_RATIO,
            space: crate::fetch::space::Space::default(),
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
    /// SHA-256 of the bytes written, computed while writing.
    pub sha256: banalytics_home::Sha256,
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
    let plan = validate::validate(&mut zip, archive, limits)?;
    let declared: u64 = plan.files.iter().map(|f| f.declared).sum();
    match limits.space.room_for(target, declared) {
        Ok(Ok(())) => {}
        Ok(Err(free)) => {
            return Err(ArchiveError::NoSpace {
                declared,
                free,
                min_free: limits.space.min_free,
            })
        }
        Err(e) => return Err(io_err(target)(e)),
    }

    // Pass 2: directories, then files, then fsync the directories.
    let extracted =
        write::write(&mut zip, &plan, target, limits).map_err(|e| filled_up(e, target, limits))?;
    tracing::info!(
        files = extracted.files.len(),
        bytes = extracted.total_bytes,
        "extracted"
    );
    Ok(extracted)
}

/// An `ENOSPC` while writing says so, with the numbers, instead of a plain
/// I/O error on the file that happened to be written.
fn filled_up(error: ArchiveError, target: &Path, limits: &Limits) -> ArchiveError {
    match error {
        ArchiveError::Io { source, .. } if crate::fetch::space::is_no_space(&source) => {
            ArchiveError::FileSystemFull {
                target: target.to_path_buf(),
                free: limits.space.free(target).unwrap_or(0),
                min_free: limits.space.min_free,
            }
        }
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn default_limits_are_the_documented_constants() {
        let limits = Limits::default();
        assert_eq!(limits.max_entries, 10_000);
        assert_eq!(limits.max_total_bytes, 4 << 30);
        assert_eq!(limits.max_entry_bytes, 2 << 30);
        assert_eq!(limits.max_ratio, 200);
    }

    #[test]
    fn enospc_while_writing_is_reported_as_a_full_file_system_with_the_numbers() {
        let limits = Limits {
            space: crate::fetch::space::Space::new(
                512,
                std::sync::Arc::new(|_: &Path| Ok::<u64, io::Error>(7)),
            ),
            ..Limits::default()
        };
        let target = Path::new("/home/models/.scratch");
        let full = ArchiveError::Io {
            path: target.join("a.bin"),
            source: io::Error::from_raw_os_error(28),
        };
        let error = filled_up(full, target, &limits);
        assert!(
            matches!(
                &error,
                ArchiveError::FileSystemFull {
                    free: 7,
                    min_free: 512,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .contains("filled up during extraction (ENOSPC)"));
        let other = ArchiveError::Io {
            path: target.join("a.bin"),
            source: io::Error::from_raw_os_error(5),
        };
        assert!(matches!(
            filled_up(other, target, &limits),
            ArchiveError::Io { .. }
        ));
    }
}
