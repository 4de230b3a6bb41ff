//! Pass 1 of an extraction: the whole central directory is checked before
//! anything is written (names, entry types, duplicates and case
//! collisions, overlapping entries, the bounds on a name's length and
//! depth, and the [`Limits`] on count, declared sizes and ratio), and what
//! pass 2 writes is decided here.
//!
//! Its memory is linear in the central directory: a name's length and
//! depth are checked before anything about it is recorded, and the names
//! are recorded as a tree of their components ([`Names`]), so a parent
//! folder costs its own component, never a copy of its whole path.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

use super::{ratio_over, ArchiveError, Limits};

/// Longest entry name accepted, in bytes. Linux refuses paths over 4 096
/// bytes (`PATH_MAX`) anyway, and no library or model package needs more;
/// past it a name is refused before anything about it is recorded.
pub const MAX_NAME_BYTES: usize = 4096;

/// Deepest entry name accepted, in path components (`a/b/c` is 3). Real
/// packages nest a handful of folders; 64 is generous and bounds the
/// folders one entry can add to what validation keeps and pass 2 creates.
pub const MAX_NAME_DEPTH: usize = 64;

/// Characters of an over-long name that its refusal quotes.
const QUOTED_NAME_CHARS: usize = 80;

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

/// A directory to exist, explicit or implied: its last component and its
/// parent's index in [`Plan::dirs`] (none at the top).
#[derive(Debug)]
pub(super) struct PlannedDir {
    pub(super) parent: Option<usize>,
    pub(super) component: String,
}

/// Everything pass 2 needs, decided by pass 1.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Every directory to exist, explicit or implied, parents before
    /// children, each naming its parent by index.
    pub(super) dirs: Vec<PlannedDir>,
    pub(super) files: Vec<PlannedFile>,
}

impl Plan {
    /// The `/`-separated name of `dirs[index]`.
    pub(super) fn dir_name(&self, index: usize) -> String {
        let mut parts = Vec::new();
        let mut at = Some(index);
        while let Some(i) = at {
            parts.push(self.dirs[i].component.as_str());
            at = self.dirs[i].parent;
        }
        parts.reverse();
        parts.join("/")
    }
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
    check_directory(zip, archive, limits)?;
    let mut files = Vec::new();
    let mut names = Names::default();
    let mut declared_total: u64 = 0;
    for index in 0..zip.len() {
        let data = zip.by_index_data(index).map_err(zip_err)?;
        let raw_name = data.name().map_err(zip_err)?.into_owned();
        check_bounds(&raw_name)?;
        // The zip reader derives a mode from DOS attributes for DOS-made
        // entries and ignores the high bits there, so the raw unix bits are
        // checked as well: a symlink is refused whatever system claims it.
        let raw_mode = data.external_attributes() >> 16;
        let mode = data.unix_mode().unwrap_or(raw_mode);
        let kind = entry_kind(&raw_name, raw_mode, mode)?;
        let name = check_name(&raw_name, kind).map_err(|reason| ArchiveError::UnsafeName {
            entry: raw_name.clone(),
            reason,
        })?;
        names.record(&raw_name, &name, kind)?;
        if kind == Kind::Dir {
            continue;
        }
        let (declared, compressed) = check_file(&data, raw_name, limits, &mut declared_total)?;
        files.push(PlannedFile {
            index,
            name,
            declared,
            compressed,
            crc32: data.crc32(),
            executable: mode & 0o100 != 0,
        });
    }
    Ok(Plan {
        dirs: names.into_dirs(),
        files,
    })
}

/// The checks of the directory as a whole: the number of entries (raw
/// duplicates counted), a name twice, overlapping entries.
fn check_directory<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    archive: &Path,
    limits: &Limits,
) -> Result<(), ArchiveError> {
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
    let overlapping = zip
        .has_overlapping_entries()
        .map_err(|source| ArchiveError::Zip {
            archive: archive.to_path_buf(),
            source,
        })?;
    if overlapping {
        return Err(ArchiveError::OverlappingEntries {
            archive: archive.to_path_buf(),
        });
    }
    Ok(())
}

/// A file or a folder, by its name and both modes; a symlink or any other
/// kind of entry is refused.
fn entry_kind(raw_name: &str, raw_mode: u32, mode: u32) -> Result<Kind, ArchiveError> {
    let mut kind = if raw_name.ends_with('/') {
        Kind::Dir
    } else {
        Kind::File
    };
    for mode in [raw_mode, mode] {
        match mode & S_IFMT {
            0 | S_IFREG => {}
            S_IFDIR => kind = Kind::Dir,
            S_IFLNK => {
                return Err(ArchiveError::Symlink {
                    entry: raw_name.to_owned(),
                })
            }
            _ => {
                return Err(ArchiveError::NotRegular {
                    entry: raw_name.to_owned(),
                    mode,
                })
            }
        }
    }
    Ok(kind)
}

/// The checks of a file entry: not encrypted, stored or deflated, within
/// the per-entry, total (`declared_total`, which it adds to) and ratio
/// limits. Returns its declared and compressed sizes.
fn check_file(
    data: &zip::read::ZipFileEntry<'_>,
    raw_name: String,
    limits: &Limits,
    declared_total: &mut u64,
) -> Result<(u64, u64), ArchiveError> {
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
    *declared_total = declared_total.saturating_add(declared);
    if *declared_total > limits.max_total_bytes {
        return Err(ArchiveError::TotalTooLarge {
            entry: raw_name,
            total: *declared_total,
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
    Ok((declared, compressed))
}

/// Refuses a name over [`MAX_NAME_BYTES`] or deeper than
/// [`MAX_NAME_DEPTH`], quoting only its start.
fn check_bounds(raw_name: &str) -> Result<(), ArchiveError> {
    if raw_name.len() > MAX_NAME_BYTES {
        return Err(ArchiveError::NameTooLong {
            entry: shortened(raw_name),
            bytes: raw_name.len(),
            limit: MAX_NAME_BYTES,
        });
    }
    let depth = raw_name.trim_end_matches('/').split('/').count();
    if depth > MAX_NAME_DEPTH {
        return Err(ArchiveError::NameTooDeep {
            entry: shortened(raw_name),
            depth,
            limit: MAX_NAME_DEPTH,
        });
    }
    Ok(())
}

/// The first [`QUOTED_NAME_CHARS`] characters of `name`, and `…` when
/// something was cut.
fn shortened(name: &str) -> String {
    match name.char_indices().nth(QUOTED_NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

/// One name the archive stands for, explicit or implied by a longer one.
#[derive(Debug)]
struct Node {
    /// Index of the parent folder in [`Names::nodes`], none at the top.
    parent: Option<usize>,
    /// The last component, as written.
    component: String,
    kind: Kind,
    /// Whether an entry names it (not only implied as a parent).
    explicit: bool,
}

/// Every name seen so far as a tree of components, for the duplicate,
/// case and file/directory checks: one node per distinct name, keyed by
/// its parent and its case-folded last component, so recording a name
/// costs its own length whatever its depth.
#[derive(Debug, Default)]
struct Names {
    nodes: Vec<Node>,
    /// (parent, case-folded component) -> index in `nodes`.
    index: HashMap<(Option<usize>, String), usize>,
}

impl Names {
    /// Records `name` together with every directory it implies, and refuses
    /// duplicates, case collisions and file/directory conflicts.
    fn record(&mut self, raw_name: &str, name: &str, kind: Kind) -> Result<(), ArchiveError> {
        let mut parent = None;
        let mut parts = name.split('/').peekable();
        while let Some(part) = parts.next() {
            let explicit = parts.peek().is_none();
            let this_kind = if explicit { kind } else { Kind::Dir };
            // Folding each component folds the whole name: `/` is neither
            // cased nor case-ignorable, so no mapping looks across it.
            let key = (parent, fold_case(part));
            let Some(&at) = self.index.get(&key) else {
                let at = self.nodes.len();
                self.index.insert(key, at);
                self.nodes.push(Node {
                    parent,
                    component: part.to_owned(),
                    kind: this_kind,
                    explicit,
                });
                parent = Some(at);
                continue;
            };
            let node = &self.nodes[at];
            // The parents matched as written, so comparing the last
            // components compares the whole names.
            if node.component != part {
                return Err(ArchiveError::CaseCollision {
                    entry: raw_name.to_owned(),
                    other: self.path(at),
                });
            }
            if this_kind != node.kind {
                let (file, dir) = if this_kind == Kind::File {
                    (raw_name.to_owned(), self.path(at))
                } else {
                    (self.path(at), raw_name.to_owned())
                };
                return Err(ArchiveError::FileDirConflict {
                    entry: file,
                    other: dir,
                });
            }
            if explicit && node.explicit {
                return Err(ArchiveError::Duplicate {
                    entry: raw_name.to_owned(),
                });
            }
            if explicit {
                self.nodes[at].explicit = true;
            }
            parent = Some(at);
        }
        Ok(())
    }

    /// The `/`-separated name of `nodes[at]`, as written.
    fn path(&self, at: usize) -> String {
        let mut parts = Vec::new();
        let mut next = Some(at);
        while let Some(i) = next {
            parts.push(self.nodes[i].component.as_str());
            next = self.nodes[i].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// The directories, in the order first seen (parents before children).
    fn into_dirs(self) -> Vec<PlannedDir> {
        let mut dir_index = vec![None; self.nodes.len()];
        let mut dirs = Vec::new();
        for (at, node) in self.nodes.into_iter().enumerate() {
            if node.kind == Kind::Dir {
                dir_index[at] = Some(dirs.len());
                dirs.push(PlannedDir {
                    // A parent is always a directory, seen before its children.
                    parent: node.parent.and_then(|p| dir_index[p]),
                    component: node.component,
                });
            }
        }
        dirs
    }
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
    fn a_long_name_is_quoted_by_its_first_80_characters() {
        assert_eq!(shortened("lib/a.so"), "lib/a.so");
        let exact = "é".repeat(QUOTED_NAME_CHARS);
        assert_eq!(shortened(&exact), exact);
        let long = format!("{exact}é/x");
        assert_eq!(shortened(&long), format!("{exact}…"));
    }

    #[test]
    fn names_share_their_parents_in_the_plan() {
        let mut names = Names::default();
        names.record("a/b/c.so", "a/b/c.so", Kind::File).unwrap();
        names.record("a/b/d.so", "a/b/d.so", Kind::File).unwrap();
        names.record("a/e/", "a/e", Kind::Dir).unwrap();
        assert_eq!(names.nodes.len(), 5, "{:?}", names.nodes);
        let plan = Plan {
            dirs: names.into_dirs(),
            files: Vec::new(),
        };
        let dirs: Vec<String> = (0..plan.dirs.len()).map(|i| plan.dir_name(i)).collect();
        assert_eq!(dirs, ["a", "a/b", "a/e"]);
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
