//! Pass 1 of an extraction: the whole central directory is checked before
//! anything is written (names, entry types, duplicates and case
//! collisions, overlapping entries, and the [`Limits`] on count, declared
//! sizes and ratio), and what pass 2 writes is decided here.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

use super::{ratio_over, ArchiveError, Limits};

/// A file entry that passed validation.
#[derive(Debug)]
pub(super) struct PlannedFile {
    pub(super) index: usize,
    /// Validated name, `/`-separated, no trailing slash.
    pub(super) name: String,
    pub(super) declared: u64,
    pub(super) compressed: u64,
    pub(super) crc32: u32,
    pub(super) executable: bool,
}

/// Everything pass 2 needs, decided by pass 1.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Every directory to exist, explicit or implied, parents before children.
    pub(super) dirs: BTreeSet<String>,
    pub(super) files: Vec<PlannedFile>,
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
pub(super) fn validate<R: Read + Seek>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
