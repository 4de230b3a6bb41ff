//! Format numbers of the files the box writes under its home, so that a
//! rollback to an older core never breaks on a file a newer core wrote.
//!
//! Every such file carries a number: a JSON record its top-level `format`
//! field (absent means 1: what cores before the numbers wrote), a store
//! whose files are not ours to shape (the TUF store, the portal outbox) a
//! marker file `format` in its folder holding the number (absent means 1),
//! a text file a first line `format N` (absent means 1: the console token,
//! which an operator reads and pastes, is the token alone in format 1).
//! The download cache's `*.partial.meta` files carry theirs in their
//! header line (`banalytics-partial-meta 1`, the upgrade center's
//! `fetch::resume`).
//! Files whose format the original Java box fixes
//! (`modules-info.properties`, `device-registration.properties`) carry none
//! and never change. [`FILES`] lists them all with the number this core
//! writes; ARCHITECTURE.md has the table.
//!
//! A reader gets [`Versioned::Newer`] (or an error holding a
//! [`NewerFormat`]) for a file of a format above the one it knows, and its
//! caller turns the feature off, uses an older sibling or refuses the
//! action; nothing rewrites, moves into place of, or deletes a newer file
//! ([`newer_json`] is the check a writer makes first). [`newer_files`] lists
//! them for the log and `status`.
//!
//! The rule for later work: a change that an older core would misread
//! raises the file's number here; a change it would read right (a new
//! optional field) keeps it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use crate::layout::{write_atomic, FileError};

/// The field of a JSON record that holds its format.
pub const FIELD: &str = "format";

/// The marker file of a store (a folder) that holds its format.
pub const MARKER: &str = "format";

/// The format of a file whose record carries none (written before format
/// numbers existed).
pub const FIRST: u32 = 1;

/// `state/apply-hold.json`.
pub const APPLY_HOLD: u32 = 1;
/// `state/running-core.json`.
pub const RUNNING_CORE: u32 = 1;
/// `state/quarantined-set.json`.
pub const QUARANTINED_SET: u32 = 1;
/// `state/digest-cache.json`.
pub const DIGEST_CACHE: u32 = 1;
/// `state/component-ids.json` (a map of names: format 1 carries no field).
pub const COMPONENT_IDS: u32 = 1;
/// `state/launcher-identity.json`.
pub const LAUNCHER_IDENTITY: u32 = 1;
/// `state/failing-before-upgrade.json` (a list: format 1 carries no
/// field).
pub const FAILING_BEFORE_UPGRADE: u32 = 1;
/// `modules-swap.journal`.
pub const SWAP_JOURNAL: u32 = 1;
/// `modules-probation.json`.
pub const PROBATION: u32 = 1;
/// `modules-hashes.json` of a set (in `modules/`, `modules-upgrade/`,
/// `modules-backup/`).
pub const SET_RECORD: u32 = 1;
/// The marker of `state/portal-outbox/` (its entries are opaque reports,
/// `next-seq` and `id` one line each).
pub const PORTAL_OUTBOX: u32 = 1;
/// The marker of `state/tuf/` (the TUF client's files, shaped by `tough`).
pub const TUF_STORE: u32 = 1;
/// `state/console-token` (format 1: the token alone, no `format` line).
pub const CONSOLE_TOKEN: u32 = 1;
/// A download's `modules-download/*.partial.meta` (its header line
/// `banalytics-partial-meta N`). Not in [`FILES`]: the names vary; the
/// downloader leaves a newer one, and its partial, as they are.
pub const PARTIAL_META: u32 = 1;

/// The first line of a text file of a format above 1 starts with this,
/// followed by the number.
pub const LINE_PREFIX: &str = "format ";

/// How a file carries its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A JSON document's top-level `format` field.
    Json,
    /// The file [`MARKER`] in the folder.
    Marker,
    /// A text file's first line `format N` ([`LINE_PREFIX`]).
    Line,
}

/// A file or store of the home and the format this core writes.
#[derive(Debug, Clone, Copy)]
pub struct HomeFile {
    /// Its path relative to the home (a folder for [`Carrier::Marker`]).
    pub path: &'static str,
    /// How it carries its format.
    pub carrier: Carrier,
    /// The format this core reads and writes.
    pub format: u32,
}

const fn json(path: &'static str, format: u32) -> HomeFile {
    HomeFile {
        path,
        carrier: Carrier::Json,
        format,
    }
}

/// Every versioned file the box writes under its home.
pub const FILES: &[HomeFile] = &[
    json("state/apply-hold.json", APPLY_HOLD),
    json("state/running-core.json", RUNNING_CORE),
    json("state/quarantined-set.json", QUARANTINED_SET),
    json("state/digest-cache.json", DIGEST_CACHE),
    json("state/component-ids.json", COMPONENT_IDS),
    json("state/launcher-identity.json", LAUNCHER_IDENTITY),
    json("state/failing-before-upgrade.json", FAILING_BEFORE_UPGRADE),
    json("modules-swap.journal", SWAP_JOURNAL),
    json("modules-probation.json", PROBATION),
    json("modules/modules-hashes.json", SET_RECORD),
    json("modules-upgrade/modules-hashes.json", SET_RECORD),
    json("modules-backup/modules-hashes.json", SET_RECORD),
    HomeFile {
        path: "state/portal-outbox",
        carrier: Carrier::Marker,
        format: PORTAL_OUTBOX,
    },
    HomeFile {
        path: "state/tuf",
        carrier: Carrier::Marker,
        format: TUF_STORE,
    },
    HomeFile {
        path: "state/console-token",
        carrier: Carrier::Line,
        format: CONSOLE_TOKEN,
    },
];

/// A file of a format newer than this core knows: left as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} is of format {format}, newer than format {known} this core knows; it is left as it is", path.display())]
pub struct NewerFormat {
    /// The file (for a store, its folder).
    pub path: PathBuf,
    /// Its format.
    pub format: u32,
    /// The newest format this core knows.
    pub known: u32,
}

impl NewerFormat {
    /// As an I/O error (`InvalidData`), for readers that return one; see
    /// [`in_io`].
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// The [`NewerFormat`] an I/O error holds, if it is one.
pub fn in_io(e: &io::Error) -> Option<&NewerFormat> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

/// What a reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioned<T> {
    /// A format this core knows, read.
    Known(T),
    /// A newer format: not read.
    Newer(NewerFormat),
}

/// The format of a JSON document: its top-level `format` number, else
/// [`FIRST`] (a record written before the numbers, or a format-1 map or
/// list that carries none).
pub fn of_json(doc: &serde_json::Value) -> u32 {
    doc.get(FIELD)
        .and_then(serde_json::Value::as_u64)
        .map_or(FIRST, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads the JSON file `path` of a format up to `known`; `None` when it is
/// missing. Malformed JSON, or a known format that does not parse as `T`,
/// is an `InvalidData` error naming the file.
pub fn read_json<T: DeserializeOwned>(path: &Path, known: u32) -> io::Result<Option<Versioned<T>>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |e: serde_json::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let format = of_json(&doc);
    if format > known {
        return Ok(Some(Versioned::Newer(NewerFormat {
            path: path.to_owned(),
            format,
            known,
        })));
    }
    T::deserialize(doc)
        .map(|t| Some(Versioned::Known(t)))
        .map_err(invalid)
}

/// [`read_json`] for readers that return an I/O error: a newer format is
/// an `InvalidData` error holding the [`NewerFormat`] ([`in_io`]).
pub fn read_json_or_err<T: DeserializeOwned>(path: &Path, known: u32) -> io::Result<Option<T>> {
    match read_json(path, known)? {
        None => Ok(None),
        Some(Versioned::Known(t)) => Ok(Some(t)),
        Some(Versioned::Newer(n)) => Err(n.into_io()),
    }
}

/// `value` as a JSON record of format `format`, pretty-printed, with
/// [`FIELD`] first. `value` must serialise as an object without a field of
/// that name.
pub fn to_json<T: Serialize>(value: &T, format: u32) -> Vec<u8> {
    #[derive(Serialize)]
    struct Record<'a, T> {
        format: u32,
        #[serde(flatten)]
        value: &'a T,
    }
    serde_json::to_vec_pretty(&Record { format, value }).expect("plain data")
}

/// The check a writer makes before it replaces or removes the JSON file
/// `path`: `Some` when the file there is of a format above `known` (and so
/// must stay). A missing, unreadable or malformed file is `None`: the
/// writer may replace it as before.
pub fn newer_json(path: &Path, known: u32) -> Option<NewerFormat> {
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let format = of_json(&doc);
    (format > known).then(|| NewerFormat {
        path: path.to_owned(),
        format,
        known,
    })
}

/// The format in the marker of the store `dir`; [`FIRST`] when it has
/// none. A marker that holds no number is an `InvalidData` error.
pub fn of_marker(dir: &Path) -> io::Result<u32> {
    let path = dir.join(MARKER);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {:?} is not a format number",
                    path.display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FIRST),
        Err(e) => Err(e),
    }
}

/// `Some` when the store `dir` is of a format above `known` (a marker that
/// cannot be read counts as one: it was not written by this core).
pub fn newer_store(dir: &Path, known: u32) -> Option<NewerFormat> {
    let format = of_marker(dir).unwrap_or(u32::MAX);
    (format > known).then(|| NewerFormat {
        path: dir.to_owned(),
        format,
        known,
    })
}

/// The format of a text file's content and the rest after its format
/// line: a first line `format N` gives N (a number that is not one reads
/// as `u32::MAX`, a format no core wrote); without one it is [`FIRST`] and
/// the whole text.
pub fn of_line(text: &str) -> (u32, &str) {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    match first.trim_end().strip_prefix(LINE_PREFIX) {
        Some(n) => (n.trim().parse().unwrap_or(u32::MAX), rest),
        None => (FIRST, text),
    }
}

/// `Some` when the text file `path` is of a format above `known`. A
/// missing or unreadable file is `None`.
pub fn newer_line(path: &Path, known: u32) -> Option<NewerFormat> {
    let text = fs::read_to_string(path).ok()?;
    let (format, _) = of_line(&text);
    (format > known).then(|| NewerFormat {
        path: path.to_owned(),
        format,
        known,
    })
}

/// Writes the marker of the store `dir` (which exists) when it has none.
pub fn mark_store(dir: &Path, format: u32) -> Result<(), FileError> {
    let path = dir.join(MARKER);
    if path.exists() {
        return Ok(());
    }
    write_atomic(&path, format!("{format}\n").as_bytes())
}

/// The files and stores of `home` of a format newer than this core knows,
/// in [`FILES`] order.
pub fn newer_files(home: &Path) -> Vec<NewerFormat> {
    FILES
        .iter()
        .filter_map(|f| {
            let path = home.join(f.path);
            match f.carrier {
                Carrier::Json => newer_json(&path, f.format),
                Carrier::Marker => newer_store(&path, f.format),
                Carrier::Line => newer_line(&path, f.format),
            }
        })
        .collect()
}

/// [`newer_files`], each named in the log once (for the start of a host).
pub fn log_newer_files(home: &Path) -> Vec<NewerFormat> {
    let newer = newer_files(home);
    for n in &newer {
        tracing::warn!(
            path = %n.path.display(),
            format = n.format,
            known = n.known,
            "file of a newer format left as it is: what needs it is off until a core that knows it runs"
        );
    }
    newer
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        a: u32,
    }

    #[test]
    fn a_record_is_written_with_its_format_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let bytes = to_json(&Rec { a: 7 }, 3);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc, serde_json::json!({"format": 3, "a": 7}));
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_json::<Rec>(&path, 3).unwrap(),
            Some(Versioned::Known(Rec { a: 7 }))
        );
        assert_eq!(read_json::<Rec>(&dir.path().join("none"), 3).unwrap(), None);
    }

    #[test]
    fn a_text_file_without_a_format_line_is_format_one_and_one_with_a_higher_is_newer() {
        assert_eq!(of_line("abc\n"), (1, "abc\n"));
        assert_eq!(of_line("format 1\nabc\n"), (1, "abc\n"));
        assert_eq!(of_line("format 2\nabc\n"), (2, "abc\n"));
        assert_eq!(of_line("format x\n"), (u32::MAX, ""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        assert_eq!(newer_line(&path, 1), None);
        fs::write(&path, "abc\n").unwrap();
        assert_eq!(newer_line(&path, 1), None);
        fs::write(&path, "format 2\nabc\n").unwrap();
        assert_eq!(
            newer_line(&path, 1).map(|n| (n.format, n.known)),
            Some((2, 1))
        );
    }

    #[test]
    fn a_record_without_a_format_is_format_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, br#"{"a": 1}"#).unwrap();
        assert_eq!(
            read_json::<Rec>(&path, 1).unwrap(),
            Some(Versioned::Known(Rec { a: 1 }))
        );
        // A map of names or a list carries no field at format 1.
        for doc in [&br#"{"format": "a name's uuid"}"#[..], b"[\"x\"]"] {
            fs::write(&path, doc).unwrap();
            assert_eq!(newer_json(&path, 1), None);
        }
    }

    #[test]
    fn a_newer_record_is_reported_not_read_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let bytes = br#"{"format": 2, "b": "a shape this core does not know"}"#;
        fs::write(&path, bytes).unwrap();
        let newer = NewerFormat {
            path: path.clone(),
            format: 2,
            known: 1,
        };
        assert_eq!(
            read_json::<Rec>(&path, 1).unwrap(),
            Some(Versioned::Newer(newer.clone()))
        );
        let err = read_json_or_err::<Rec>(&path, 1).unwrap_err();
        assert_eq!(in_io(&err), Some(&newer));
        assert_eq!(newer_json(&path, 1), Some(newer));
        assert_eq!(newer_json(&path, 2), None);
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_malformed_record_is_an_error_and_no_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, b"{\"a\":").unwrap();
        let err = read_json::<Rec>(&path, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(in_io(&err), None);
        assert_eq!(newer_json(&path, 1), None);
    }

    #[test]
    fn a_store_is_marked_once_and_a_newer_or_unreadable_marker_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path();
        assert_eq!(of_marker(store).unwrap(), FIRST);
        assert_eq!(newer_store(store, 1), None);
        mark_store(store, 1).unwrap();
        assert_eq!(fs::read_to_string(store.join(MARKER)).unwrap(), "1\n");
        fs::write(store.join(MARKER), "2\n").unwrap();
        mark_store(store, 1).unwrap();
        assert_eq!(fs::read_to_string(store.join(MARKER)).unwrap(), "2\n");
        assert_eq!(newer_store(store, 1).map(|n| n.format), Some(2));
        fs::write(store.join(MARKER), "two").unwrap();
        assert!(newer_store(store, 1).is_some());
    }

    #[test]
    fn newer_files_names_each_file_of_a_raised_format_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        assert!(newer_files(home).is_empty());
        for f in FILES {
            let path = home.join(f.path);
            match f.carrier {
                Carrier::Json => {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, to_json(&Rec { a: 1 }, f.format)).unwrap();
                }
                Carrier::Marker => {
                    fs::create_dir_all(&path).unwrap();
                    mark_store(&path, f.format).unwrap();
                }
                Carrier::Line => {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, "token\n").unwrap();
                }
            }
        }
        assert!(newer_files(home).is_empty(), "{:?}", newer_files(home));
        let raised = &FILES[3];
        fs::write(
            home.join(raised.path),
            to_json(&Rec { a: 1 }, raised.format + 1),
        )
        .unwrap();
        assert_eq!(
            newer_files(home),
            vec![NewerFormat {
                path: home.join(raised.path),
                format: raised.format + 1,
                known: raised.format,
            }]
        );
    }
}
