//! Pass 2 of an extraction: each file is written with `create_new` (never
//! through an existing file or symlink), counting the real bytes as they
//! come out of the decompressor, so that an entry that holds more than it
//! declares, expands past the ratio limit, or pushes the real total over
//! the limit is refused mid-stream; every file and directory written is
//! fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::result::ZipError;
use zip::{ZipArchive, ZipReadOptions};

use super::error::io_err;
use super::validate::{Plan, PlannedFile};
use super::{ratio_over, ArchiveError, Extracted, ExtractedFile, Limits};
use crate::layout::sync_dir;

/// Size of the copy buffer: big enough to keep syscalls cheap, small enough
/// to not matter on a box.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Pass 2: creates the directories of `plan` inside `target`, writes its
/// files with `create_new`, and fsyncs every file and directory.
pub(super) fn write<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    plan: &Plan,
    target: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    // Paths are built from the plan's tree when needed, never kept all at
    // once: together they would cost the square of a deep name.
    for index in 0..plan.dirs.len() {
        let dir = plan.dir_name(index);
        let path = join(target, &dir);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only a real directory may be reused; a symlink would lead out.
                let existing = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                if !existing.is_dir() {
                    return Err(ArchiveError::Occupied { entry: dir, path });
                }
            }
            Err(e) => return Err(ArchiveError::Io { path, source: e }),
        }
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
    for index in (0..plan.dirs.len()).rev() {
        let dir = join(target, &plan.dir_name(index));
        sync_dir(&dir).map_err(io_err(&dir))?;
    }
    sync_dir(target).map_err(io_err(target))?;
    Ok(extracted)
}

/// What [`copy_entry`] wrote.
#[derive(Debug)]
struct Written {
    size: u64,
    sha256: banalytics_home::Sha256,
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
        sha256: banalytics_home::Sha256::from_hasher(sha),
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
    use crate::archive::RATIO_GRACE_BYTES;

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
            written.sha256.to_string(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
