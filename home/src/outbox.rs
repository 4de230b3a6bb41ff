//! The portal outbox: reports for the portal kept on disk until the portal
//! has them (`state/portal-outbox/`), so that a restart or a SIGKILL before
//! the link is up loses none (contracts section 3: statuses are durable).
//!
//! One file per entry, named by its sequence number
//! (`00000000000000000042.json`) and written with [`write_atomic`], so a
//! crash leaves a whole entry or none. The producer appends an entry before
//! it announces it; the sender reads the oldest entries, sends them in
//! order and removes them once the portal has them. The entries are opaque
//! bytes here: this crate knows no portal protocol; the sequence number is
//! the file's name, so it cannot disagree with the content.
//!
//! **Invariant: a sequence number is never used twice**, even after every
//! entry was sent and removed and the box restarted. The next number is
//! `max(counter, newest entry + 1)`, where the counter is the file
//! `next-seq`; [`remove`] makes the counter durably pass every entry before
//! it deletes one. So at any moment each number ever used is either still
//! an entry or below the counter. Appends do not write the counter, which
//! keeps an append at one file write.
//!
//! Every change takes an exclusive `flock` on `portal-outbox/lock`: the
//! upgrade center appends and Portal Integration removes from other
//! threads, and a component loaded as a plugin has its own copy of this
//! crate, so a lock in memory would not be shared. Reading takes no lock:
//! an entry appears by a rename and goes by an unlink.
//!
//! **The outbox's id.** Numbers start again at 1 in a new outbox (a home
//! provisioned again for the same environment), so the portal tells two
//! outboxes apart by a random id kept beside the entries ([`id`]) and
//! drops a status it already has by (id, number).
//!
//! **A pending verdict.** The host reports the verdict of a probation
//! (`installed` after a commit, `installation_cancelled` after a rollback)
//! without a window in which a kill loses it or sends it for a verdict
//! that never happened: it writes the report as the pending verdict
//! ([`pend_verdict`], the file `verdict.held`, not an entry) *before* the
//! commit or rollback, and turns it into an entry ([`release_verdict`], one
//! rename that also gives it its number) right after. A kill in between
//! leaves the pending verdict; the next start releases it when the probation
//! it ended is gone, and drops it ([`drop_verdict`]) when the probation is
//! still on, because then the verdict never happened. The number is taken
//! at the release, so a dropped verdict leaves no gap in the numbers.
//!
//! **Format.** The folder's marker `format` holds its format
//! ([`crate::format::PORTAL_OUTBOX`]), written at the first change; an
//! outbox of a newer format is refused as a whole
//! ([`OutboxError::NewerFormat`]) and left as it is.
//!
//! Plain blocking file I/O; async callers run it off their thread.

use std::{
    fs,
    io::{self, ErrorKind},
    path::{Path, PathBuf},
};

use crate::{
    layout::{sync_dir, write_atomic, FileError},
    Layout,
};

/// The folder, in the home's `state/`.
pub const OUTBOX_DIR: &str = "portal-outbox";

/// The most entries the outbox holds; [`append`] refuses more. A
/// synchronisation needs the portal's answer, so entries pile up only
/// while the link keeps failing between that answer and the sends: tens of
/// thousands would take thousands of such synchronisations. The bound
/// keeps a runaway producer from filling the disk; at 10 000 small files
/// a listing stays cheap.
pub const MAX_ENTRIES: usize = 10_000;

/// The largest entry [`append`] accepts. A status with its message is a
/// few hundred bytes; the bound caps what a batch of entries costs in
/// memory when it is read back.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The counter file: no entry was ever numbered at or above its value.
const NEXT_SEQ_FILE: &str = "next-seq";

/// The file every change locks.
const LOCK_FILE: &str = "lock";

/// The outbox's random id ([`id`]).
const ID_FILE: &str = "id";

/// The pending verdict ([`pend_verdict`]): not an entry until released.
pub const VERDICT_FILE: &str = "verdict.held";

/// Digits of an entry's name: every `u64` fits.
const SEQ_DIGITS: usize = 20;

/// The outbox refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// [`MAX_ENTRIES`] entries wait already.
    #[error("portal outbox {dir} is full: {entries} entries wait (limit {limit})")]
    Full {
        /// The outbox folder.
        dir: PathBuf,
        /// Entries waiting.
        entries: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry over [`MAX_ENTRY_BYTES`].
    #[error("portal outbox entry of {bytes} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The entry's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The counter file holds something else than a number. Appending
    /// anyway could reuse a sequence number, so nothing is appended.
    #[error("portal outbox counter {path} holds {content:?}, not a sequence number")]
    BadCounter {
        /// The counter file.
        path: PathBuf,
        /// What it holds (the first 40 bytes).
        content: String,
    },
    /// The outbox is of a newer format ([`crate::format`], its marker
    /// `format`): nothing in it is read, written or removed.
    #[error(transparent)]
    NewerFormat(#[from] crate::format::NewerFormat),
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
}

/// The file name of entry `seq`.
pub fn entry_name(seq: u64) -> String {
    format!("{seq:0width$}.json", width = SEQ_DIGITS)
}

/// Appends `entry` and returns its sequence number, durably: when this
/// returns, the entry survives a crash. Refuses an entry over
/// [`MAX_ENTRY_BYTES`] and a full outbox ([`MAX_ENTRIES`]): the caller
/// decides what to do with a report it cannot keep.
pub fn append(layout: &Layout, entry: &[u8]) -> Result<u64, OutboxError> {
    append_bounded(layout, entry, MAX_ENTRIES)
}

fn append_bounded(layout: &Layout, entry: &[u8], limit: usize) -> Result<u64, OutboxError> {
    check_size(entry)?;
    let dir = layout.portal_outbox();
    let _lock = lock(&dir)?;
    remove_stale_temporaries(&dir)?;
    let seq = free_seq(&dir, limit)?;
    write_atomic(&dir.join(entry_name(seq)), entry)?;
    Ok(seq)
}

/// Keeps `entry` as the pending verdict (module docs), durably, replacing a
/// pending verdict that was not released. It is no entry yet: nothing sends
/// it before [`release_verdict`].
pub fn pend_verdict(layout: &Layout, entry: &[u8]) -> Result<(), OutboxError> {
    check_size(entry)?;
    let dir = layout.portal_outbox();
    let _lock = lock(&dir)?;
    remove_stale_temporaries(&dir)?;
    write_atomic(&dir.join(VERDICT_FILE), entry)?;
    Ok(())
}

/// Makes the pending verdict the newest entry, durably, in one rename, and
/// returns its number; `None` when no verdict is pending (never written, or
/// released or dropped already). Refused, and the verdict kept pending, when
/// the outbox is full.
pub fn release_verdict(layout: &Layout) -> Result<Option<u64>, OutboxError> {
    release_verdict_bounded(layout, MAX_ENTRIES)
}

fn release_verdict_bounded(layout: &Layout, limit: usize) -> Result<Option<u64>, OutboxError> {
    let dir = layout.portal_outbox();
    let held = dir.join(VERDICT_FILE);
    if !held.exists() {
        return Ok(None);
    }
    let _lock = lock(&dir)?;
    if !held.exists() {
        return Ok(None);
    }
    let seq = free_seq(&dir, limit)?;
    let entry = dir.join(entry_name(seq));
    fs::rename(&held, &entry).map_err(FileError::at("rename", &held))?;
    sync_dir(&dir).map_err(FileError::at("sync", &dir))?;
    Ok(Some(seq))
}

/// Drops the pending verdict, durably; `false` when none was pending.
pub fn drop_verdict(layout: &Layout) -> Result<bool, OutboxError> {
    let dir = layout.portal_outbox();
    let held = dir.join(VERDICT_FILE);
    if !held.exists() {
        return Ok(false);
    }
    let _lock = lock(&dir)?;
    match fs::remove_file(&held) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(FileError::at("remove", &held)(e).into()),
    }
    sync_dir(&dir).map_err(FileError::at("sync", &dir))?;
    Ok(true)
}

fn check_size(entry: &[u8]) -> Result<(), OutboxError> {
    if entry.len() > MAX_ENTRY_BYTES {
        return Err(OutboxError::TooLarge {
            bytes: entry.len(),
            limit: MAX_ENTRY_BYTES,
        });
    }
    Ok(())
}

/// The number the next entry gets; refused when `limit` entries wait.
/// Only under the lock.
fn free_seq(dir: &Path, limit: usize) -> Result<u64, OutboxError> {
    let seqs = seqs(dir)?;
    if seqs.len() >= limit {
        return Err(OutboxError::Full {
            dir: dir.to_owned(),
            entries: seqs.len(),
            limit,
        });
    }
    Ok(next_seq(counter(dir)?, &seqs))
}

/// This outbox's id (module docs): 32 hex digits, made when first asked
/// for and kept in the folder.
pub fn id(layout: &Layout) -> Result<String, OutboxError> {
    let dir = layout.portal_outbox();
    let path = dir.join(ID_FILE);
    check_format(&dir)?;
    let read = |path: &Path| match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OutboxError::from(FileError::at("read", path)(e))),
    };
    if let Some(id) = read(&path)?.filter(|id| !id.is_empty()) {
        return Ok(id);
    }
    let _lock = lock(&dir)?;
    if let Some(id) = read(&path)?.filter(|id| !id.is_empty()) {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// The oldest entries, at most `max`, in sequence order. An entry removed
/// while this reads is left out.
pub fn pending(layout: &Layout, max: usize) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
    let dir = layout.portal_outbox();
    let mut out = Vec::new();
    for seq in seqs(&dir)? {
        if out.len() >= max {
            break;
        }
        let path = dir.join(entry_name(seq));
        match fs::read(&path) {
            Ok(bytes) => out.push((seq, bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FileError {
                    action: "read",
                    path,
                    source,
                }
                .into())
            }
        }
    }
    Ok(out)
}

/// How many entries wait.
pub fn count(layout: &Layout) -> Result<usize, OutboxError> {
    Ok(seqs(&layout.portal_outbox())?.len())
}

/// Removes entry `seq` durably (see [`remove_all`]).
pub fn remove(layout: &Layout, seq: u64) -> Result<(), OutboxError> {
    remove_all(layout, &[seq])
}

/// Removes the entries `seqs` durably; a missing one is not an error. First
/// the counter is made to pass every entry, so no removed number comes
/// back; then the files go, and the folder is fsynced.
pub fn remove_all(layout: &Layout, seqs_to_remove: &[u64]) -> Result<(), OutboxError> {
    let dir = layout.portal_outbox();
    let _lock = lock(&dir)?;
    let counter = counter(&dir)?;
    let next = next_seq(counter, &seqs(&dir)?);
    if counter < next {
        write_atomic(&dir.join(NEXT_SEQ_FILE), format!("{next}\n").as_bytes())?;
    }
    for seq in seqs_to_remove {
        let path = dir.join(entry_name(*seq));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(FileError {
                    action: "remove",
                    path,
                    source: e,
                }
                .into())
            }
            _ => {}
        }
    }
    sync_dir(&dir).map_err(|source| FileError {
        action: "sync",
        path: dir.clone(),
        source,
    })?;
    Ok(())
}

/// The next free number: above every entry and at or above the counter;
/// numbers start at 1.
fn next_seq(counter: u64, seqs: &[u64]) -> u64 {
    let after_newest = seqs.last().map_or(1, |s| s.saturating_add(1));
    counter.max(after_newest).max(1)
}

/// The entries' sequence numbers, sorted; none when the folder is missing.
/// Other files (the counter, the lock, temporaries) are not entries.
fn seqs(dir: &Path) -> Result<Vec<u64>, OutboxError> {
    check_format(dir)?;
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(list_error(dir, source)),
    };
    let mut seqs = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| list_error(dir, source))?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(seq) = digits.parse() {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn list_error(dir: &Path, source: io::Error) -> OutboxError {
    FileError {
        action: "list",
        path: dir.to_owned(),
        source,
    }
    .into()
}

/// The counter; 0 when there is none yet.
fn counter(dir: &Path) -> Result<u64, OutboxError> {
    let path = dir.join(NEXT_SEQ_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            text.trim().parse().map_err(|_| OutboxError::BadCounter {
                content: text.chars().take(40).collect(),
                path,
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(source) => Err(FileError {
            action: "read",
            path,
            source,
        }
        .into()),
    }
}

/// Deletes the `*.tmp` files an interrupted [`write_atomic`] left. Only
/// called under the lock, when no write is under way.
fn remove_stale_temporaries(dir: &Path) -> Result<(), OutboxError> {
    let read = fs::read_dir(dir).map_err(|source| list_error(dir, source))?;
    for entry in read {
        let entry = entry.map_err(|source| list_error(dir, source))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            // Best effort: a leftover is ignored by every reader anyway.
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Refuses an outbox of a newer format.
fn check_format(dir: &Path) -> Result<(), OutboxError> {
    match crate::format::newer_store(dir, crate::format::PORTAL_OUTBOX) {
        Some(newer) => Err(newer.into()),
        None => Ok(()),
    }
}

/// Creates the folder if needed, refuses it if it is of a newer format,
/// marks it with its format if it has no marker, and locks it; the lock
/// goes with the file.
fn lock(dir: &Path) -> Result<fs::File, OutboxError> {
    let err = FileError::at;
    fs::create_dir_all(dir).map_err(err("create", dir))?;
    check_format(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err("open", &path))?;
    loop {
        // std's file lock: `flock(2)` on Unix, shared with a plugin's copy
        // of this crate in the same process or another.
        match file.lock() {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(err("lock", &path)(e).into()),
        }
    }
    crate::format::mark_store(dir, crate::format::PORTAL_OUTBOX)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    fn all(layout: &Layout) -> Vec<(u64, String)> {
        pending(layout, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(seq, b)| (seq, String::from_utf8(b).unwrap()))
            .collect()
    }

    #[test]
    fn entries_come_back_in_append_order_under_increasing_numbers() {
        let (_dir, layout) = home();
        assert_eq!(all(&layout), []);
        assert_eq!(count(&layout).unwrap(), 0);
        // Past 9 and 99, where names that were not zero-padded would sort
        // wrong.
        let seqs: Vec<u64> = (0..105)
            .map(|i| append(&layout, format!("e{i}").as_bytes()).unwrap())
            .collect();
        assert_eq!(seqs, (1..=105).collect::<Vec<_>>());
        let got = all(&layout);
        assert_eq!(got.len(), 105);
        for (i, (seq, text)) in got.iter().enumerate() {
            assert_eq!(
                (*seq, text.as_str()),
                (i as u64 + 1, format!("e{i}").as_str())
            );
        }
        assert_eq!(
            pending(&layout, 2).unwrap(),
            [(1, b"e0".to_vec()), (2, b"e1".to_vec())],
            "the oldest first"
        );
        assert_eq!(count(&layout).unwrap(), 105);
        assert!(layout
            .portal_outbox()
            .join("00000000000000000042.json")
            .is_file());
    }

    #[test]
    fn a_number_is_never_used_again_after_removal_and_a_reopen() {
        let (dir, layout) = home();
        for text in ["a", "b", "c"] {
            append(&layout, text.as_bytes()).unwrap();
        }
        remove(&layout, 2).unwrap();
        assert_eq!(all(&layout), [(1, "a".into()), (3, "c".into())]);
        remove_all(&layout, &[1, 3, 3, 7]).unwrap();
        assert_eq!(all(&layout), []);
        // A new process: nothing is carried in memory, only the folder.
        let reopened = Layout::new(dir.path());
        assert_eq!(append(&reopened, b"d").unwrap(), 4);
        remove(&reopened, 4).unwrap();
        assert_eq!(append(&reopened, b"e").unwrap(), 5);
        assert_eq!(all(&reopened), [(5, "e".into())]);
    }

    #[test]
    fn entries_appended_after_the_counter_was_written_still_move_it_on() {
        let (_dir, layout) = home();
        append(&layout, b"a").unwrap();
        remove(&layout, 1).unwrap(); // the counter says 2
        for _ in 0..3 {
            append(&layout, b"x").unwrap(); // 2, 3, 4
        }
        // Removing the newest first: the counter must pass 4 before it goes.
        remove(&layout, 4).unwrap();
        remove_all(&layout, &[2, 3]).unwrap();
        assert_eq!(append(&layout, b"y").unwrap(), 5);
    }

    #[test]
    fn a_crash_between_write_and_rename_leaves_no_half_entry() {
        let (_dir, layout) = home();
        append(&layout, b"whole").unwrap();
        // What `write_atomic` leaves when killed before its rename: the
        // temporary file, possibly short.
        let dir = layout.portal_outbox();
        fs::write(dir.join(format!("{}.tmp", entry_name(2))), b"{\"hal").unwrap();
        fs::write(dir.join("next-seq.tmp"), b"9").unwrap();
        assert_eq!(all(&layout), [(1, "whole".into())], "no half entry");
        assert_eq!(count(&layout).unwrap(), 1);
        // The next append takes the number the dead one would have had and
        // clears the leftovers.
        assert_eq!(append(&layout, b"next").unwrap(), 2);
        assert_eq!(all(&layout), [(1, "whole".into()), (2, "next".into())]);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert_eq!(names, Vec::<String>::new());
    }

    #[test]
    fn a_full_outbox_and_an_oversized_entry_are_refused_and_nothing_is_written() {
        let (_dir, layout) = home();
        for _ in 0..3 {
            append_bounded(&layout, b"x", 3).unwrap();
        }
        let e = append_bounded(&layout, b"y", 3).unwrap_err();
        assert!(
            matches!(
                e,
                OutboxError::Full {
                    entries: 3,
                    limit: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("full: 3 entries wait"), "{e}");
        let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
        assert!(matches!(
            append(&layout, &big),
            Err(OutboxError::TooLarge { .. })
        ));
        assert_eq!(count(&layout).unwrap(), 3);
        remove(&layout, 1).unwrap();
        assert_eq!(append_bounded(&layout, b"z", 3).unwrap(), 4);
    }

    #[test]
    fn a_damaged_counter_stops_appends_instead_of_reusing_numbers() {
        let (_dir, layout) = home();
        append(&layout, b"a").unwrap();
        fs::write(layout.portal_outbox().join(NEXT_SEQ_FILE), b"garbage").unwrap();
        let e = append(&layout, b"b").unwrap_err();
        assert!(matches!(e, OutboxError::BadCounter { .. }), "{e}");
        assert!(e.to_string().contains("\"garbage\""), "{e}");
        assert_eq!(count(&layout).unwrap(), 1);
    }

    #[test]
    fn an_outbox_keeps_its_id_and_a_new_outbox_gets_another() {
        let (dir, layout) = home();
        let id = id(&layout).unwrap();
        assert_eq!(id.len(), 32);
        append(&layout, b"a").unwrap();
        assert_eq!(super::id(&Layout::new(dir.path())).unwrap(), id);
        assert_eq!(all(&layout), [(1, "a".into())], "the id is no entry");
        let (_other, provisioned_again) = home();
        assert_ne!(super::id(&provisioned_again).unwrap(), id);
    }

    #[test]
    fn a_pending_verdict_is_no_entry_until_released_and_then_the_newest() {
        let (_dir, layout) = home();
        append(&layout, b"a").unwrap();
        pend_verdict(&layout, b"first").unwrap();
        pend_verdict(&layout, b"verdict").unwrap(); // replaces
        assert_eq!(all(&layout), [(1, "a".into())], "nothing sends it");
        assert_eq!(count(&layout).unwrap(), 1);
        // Appended meanwhile: numbered before the verdict, which takes its
        // number at the release.
        assert_eq!(append(&layout, b"b").unwrap(), 2);
        assert_eq!(release_verdict(&layout).unwrap(), Some(3));
        assert_eq!(
            all(&layout),
            [(1, "a".into()), (2, "b".into()), (3, "verdict".into())]
        );
        assert_eq!(release_verdict(&layout).unwrap(), None, "released once");
        assert!(!drop_verdict(&layout).unwrap(), "nothing held");
        assert!(!layout.portal_outbox().join(VERDICT_FILE).exists());
    }

    #[test]
    fn a_dropped_verdict_leaves_no_gap_in_the_numbers() {
        let (_dir, layout) = home();
        append(&layout, b"a").unwrap();
        pend_verdict(&layout, b"never").unwrap();
        assert!(drop_verdict(&layout).unwrap());
        assert_eq!(release_verdict(&layout).unwrap(), None);
        assert_eq!(append(&layout, b"b").unwrap(), 2);
        assert_eq!(all(&layout), [(1, "a".into()), (2, "b".into())]);
    }

    #[test]
    fn a_verdict_is_kept_pending_while_the_outbox_is_full() {
        let (_dir, layout) = home();
        append(&layout, b"a").unwrap();
        pend_verdict(&layout, b"v").unwrap();
        let e = release_verdict_bounded(&layout, 1).unwrap_err();
        assert!(matches!(e, OutboxError::Full { .. }), "{e}");
        assert!(layout.portal_outbox().join(VERDICT_FILE).is_file());
        remove(&layout, 1).unwrap();
        assert_eq!(release_verdict_bounded(&layout, 1).unwrap(), Some(2));
        let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
        assert!(matches!(
            pend_verdict(&layout, &big),
            Err(OutboxError::TooLarge { .. })
        ));
    }

    #[test]
    fn appends_from_several_threads_get_distinct_numbers() {
        let (_dir, layout) = home();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let layout = layout.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| append(&layout, format!("{t}-{i}").as_bytes()).unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        assert_eq!(count(&layout).unwrap(), 40);
    }
}
