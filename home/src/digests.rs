//! `state/digest-cache.json`: the SHA-256 of installed files, keyed by what
//! `stat` says of each (device, inode, size, modification time in
//! nanoseconds), so that checking a set's files against its record reads
//! only the files that changed since they were last hashed.
//!
//! Why this key: staging hard-links the files a new set reuses (same inode,
//! same modification time) and a swap renames folders (the same again), so
//! an unchanged file keeps its entry through upgrades and rollbacks, and a
//! file linked into two sets is one entry. The change time (`ctime`) is not
//! part of the key although a writer cannot set it: every hard link changes
//! it, so each staging would drop the entry of every file it reuses.
//!
//! What the key cannot see: bytes changed while the size and the
//! modification time stay, i.e. a writer that restores the old time
//! (`touch -d`, `utimensat`) and storage that corrupts a file underneath
//! the file system. `banalytics-box verify` reads every byte and uses no
//! cache.
//!
//! The cache is never a source of trust by itself: an entry is used only
//! for a file whose key is identical, and a missing, unreadable or
//! malformed cache file is an empty cache. Each pass keeps only the
//! entries it used ([`DigestCache::save`]), so entries of files that are
//! gone are pruned.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    layout::{write_atomic, FileError},
    Sha256,
};

/// The cache file's name, in `state/`.
pub const DIGEST_CACHE_FILE: &str = "digest-cache.json";

/// What `stat` says of a file: a cached digest is used only for a file
/// whose key is identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    /// The device of its file system.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FileKey {
    /// The key of the file `meta` describes.
    pub fn of(meta: &fs::Metadata) -> FileKey {
        crate::platform::file_key(meta)
    }
}

/// One entry of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: FileKey,
    sha256: Sha256,
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: Vec<Entry>,
}

/// The current format of the file; an older one is an empty cache, a
/// newer one is left as it is and no cache is kept ([`crate::format`]).
const FORMAT: u32 = crate::format::DIGEST_CACHE;

/// What one pass cost: files read and hashed, and files known by their key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestStats {
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Their bytes.
    pub hashed_bytes: u64,
    /// Files whose digest came from the cache, unread.
    pub cached_files: u64,
}

/// The cache, for one pass over the installed sets: [`open`](Self::open),
/// [`sha256`](Self::sha256) per file, [`save`](Self::save).
#[derive(Debug)]
pub struct DigestCache {
    path: PathBuf,
    /// The entries as read from the file.
    known: BTreeMap<FileKey, Sha256>,
    /// The entries this pass used or made: what [`save`](Self::save) keeps.
    used: BTreeMap<FileKey, Sha256>,
    /// [`save`](Self::save) keeps the entries read too
    /// ([`remember`](Self::remember) was called).
    keep_known: bool,
    /// The file is of a newer format: [`save`](Self::save) leaves it.
    newer: bool,
    stats: DigestStats,
}

impl DigestCache {
    /// The cache kept in `path` (`Layout::digest_cache`). A missing file is
    /// an empty cache; so is an unreadable or malformed one, with a
    /// warning (it is rewritten at the next [`save`](Self::save)); one of
    /// a newer format is an empty cache that is never saved.
    pub fn open(path: &Path) -> DigestCache {
        let mut newer = false;
        let known = match fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|doc| (crate::format::of_json(&doc), doc))
                .and_then(|(format, doc)| match format > FORMAT {
                    // Its shape is unknown: only its number is read.
                    true => Ok(CacheFile {
                        format,
                        entries: Vec::new(),
                    }),
                    false => CacheFile::deserialize(doc),
                }) {
                Ok(f) if f.format == FORMAT => {
                    f.entries.into_iter().map(|e| (e.key, e.sha256)).collect()
                }
                Ok(f) if f.format > FORMAT => {
                    warn!(path = %path.display(), format = f.format, known = FORMAT, "digest cache of a newer format, left as it is; every file is hashed, nothing is cached");
                    newer = true;
                    BTreeMap::new()
                }
                Ok(f) => {
                    warn!(path = %path.display(), format = f.format, "digest cache of another format; every file is hashed again");
                    BTreeMap::new()
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "malformed digest cache; every file is hashed again");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the digest cache; every file is hashed again");
                BTreeMap::new()
            }
        };
        DigestCache {
            path: path.to_owned(),
            known,
            used: BTreeMap::new(),
            keep_known: false,
            newer,
            stats: DigestStats::default(),
        }
    }

    /// The SHA-256 of the file at `path`: the cached one
    /// when the file's key is known, else read in 1 MiB blocks. A digest
    /// read is cached only when the file's key was the same before and
    /// after the read, so a file written meanwhile is hashed again next
    /// time.
    pub fn sha256(&mut self, path: &Path) -> io::Result<Sha256> {
        let mut file = fs::File::open(path)?;
        let key = FileKey::of(&file.metadata()?);
        if let Some(sha) = self.used.get(&key).or_else(|| self.known.get(&key)) {
            let sha = *sha;
            self.stats.cached_files += 1;
            self.used.insert(key, sha);
            return Ok(sha);
        }
        let sha = Sha256::of_reader(&mut file)?;
        self.stats.hashed_files += 1;
        self.stats.hashed_bytes += key.size;
        if FileKey::of(&file.metadata()?) == key {
            self.used.insert(key, sha);
        }
        Ok(sha)
    }

    /// Records that the file at `path` has SHA-256 `sha256` without reading
    /// it: for a writer that computed the digest while writing the file
    /// (the stager, for the files of a staged set), so that the next plan
    /// need not read what was just verified. Unlike a checking pass, this
    /// one keeps the entries it read: [`save`](Self::save) writes them
    /// together with the new ones.
    pub fn remember(&mut self, path: &Path, sha256: Sha256) -> io::Result<()> {
        let key = FileKey::of(&fs::metadata(path)?);
        self.keep_known = true;
        self.used.insert(key, sha256);
        Ok(())
    }

    /// What this pass cost so far.
    pub fn stats(&self) -> DigestStats {
        self.stats
    }

    /// Writes the entries this pass used or made, and only those (with the
    /// entries read as well after [`remember`](Self::remember))
    /// ([`write_atomic`]; the folder is created when missing); nothing is
    /// written when they are the entries read, nor over a file of a newer
    /// format.
    pub fn save(&self) -> Result<(), FileError> {
        if self.newer {
            return Ok(());
        }
        let mut entries = self.used.clone();
        if self.keep_known {
            for (key, sha256) in &self.known {
                entries.entry(*key).or_insert(*sha256);
            }
        }
        if entries == self.known {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(FileError::at("create", dir))?;
        }
        let file = CacheFile {
            format: FORMAT,
            entries: entries
                .into_iter()
                .map(|(key, sha256)| Entry { key, sha256 })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("numbers and strings");
        write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, time::Duration};

    use super::*;
    use crate::record::sha256_file;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("state").join(DIGEST_CACHE_FILE);
        (dir, cache)
    }

    #[test]
    fn an_unchanged_file_is_read_once_and_then_known_by_its_key() {
        let (dir, cache) = setup();
        let file = dir.path().join("a.jar");
        fs::write(&file, b"alpha").unwrap();

        let mut pass = DigestCache::open(&cache);
        assert_eq!(pass.sha256(&file).unwrap(), sha256_file(&file).unwrap());
        assert_eq!(
            pass.stats(),
            DigestStats {
                hashed_files: 1,
                hashed_bytes: 5,
                cached_files: 0
            }
        );
        pass.save().unwrap();

        let mut next = DigestCache::open(&cache);
        assert_eq!(next.sha256(&file).unwrap(), sha256_file(&file).unwrap());
        assert_eq!(next.stats().hashed_files, 0, "read again");
        assert_eq!(next.stats().cached_files, 1);
    }

    #[test]
    fn a_remembered_digest_is_known_without_a_read_and_the_entries_read_stay() {
        let (dir, cache) = setup();
        let (old, new) = (dir.path().join("old.jar"), dir.path().join("new.jar"));
        fs::write(&old, b"old").unwrap();
        fs::write(&new, b"new").unwrap();
        let mut check = DigestCache::open(&cache);
        check.sha256(&old).unwrap();
        check.save().unwrap();

        let mut stager = DigestCache::open(&cache);
        let digest = sha256_file(&new).unwrap();
        stager.remember(&new, digest).unwrap();
        stager.save().unwrap();

        let mut next = DigestCache::open(&cache);
        assert_eq!(next.sha256(&new).unwrap(), digest);
        assert_eq!(next.sha256(&old).unwrap(), sha256_file(&old).unwrap());
        assert_eq!(next.stats().hashed_files, 0, "neither is read");
        assert_eq!(next.stats().cached_files, 2);
    }

    #[test]
    fn a_hard_link_and_a_renamed_folder_keep_the_entry() {
        let (dir, cache) = setup();
        let set = dir.path().join("modules");
        fs::create_dir_all(&set).unwrap();
        fs::write(set.join("a.jar"), b"alpha").unwrap();
        let mut pass = DigestCache::open(&cache);
        pass.sha256(&set.join("a.jar")).unwrap();
        pass.save().unwrap();

        // Staging links the file into the new set; a swap renames both.
        let staged = dir.path().join("modules-upgrade");
        fs::create_dir_all(&staged).unwrap();
        fs::hard_link(set.join("a.jar"), staged.join("a.jar")).unwrap();
        fs::rename(&set, dir.path().join("modules-backup")).unwrap();
        fs::rename(&staged, &set).unwrap();

        let mut next = DigestCache::open(&cache);
        next.sha256(&set.join("a.jar")).unwrap();
        next.sha256(&dir.path().join("modules-backup/a.jar"))
            .unwrap();
        assert_eq!(next.stats().hashed_files, 0);
        assert_eq!(next.stats().cached_files, 2);
    }

    #[test]
    fn bytes_written_in_place_with_the_same_size_are_hashed_again() {
        let (dir, cache) = setup();
        let file = dir.path().join("a.jar");
        fs::write(&file, b"alpha").unwrap();
        let mut pass = DigestCache::open(&cache);
        let before = pass.sha256(&file).unwrap();
        pass.save().unwrap();

        // A modification time other than the first, whatever the clock's
        // granularity.
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(b"omega").unwrap();
        f.set_modified(mtime + Duration::from_secs(1)).unwrap();
        drop(f);

        let mut next = DigestCache::open(&cache);
        let after = next.sha256(&file).unwrap();
        assert_ne!(after, before);
        assert_eq!(after, sha256_file(&file).unwrap());
        assert_eq!(next.stats().hashed_files, 1);
    }

    /// The inodes in the cache file, in order.
    #[cfg(unix)]
    fn cached_inodes(cache: &Path) -> Vec<u64> {
        let file: serde_json::Value = serde_json::from_slice(&fs::read(cache).unwrap()).unwrap();
        let mut inodes: Vec<u64> = file["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["ino"].as_u64().unwrap())
            .collect();
        inodes.sort();
        inodes
    }

    #[cfg(unix)] // Windows keys have no inode (platform::file_key)
    #[test]
    fn a_pass_keeps_only_the_entries_it_used() {
        let (dir, cache) = setup();
        use std::os::unix::fs::MetadataExt;
        let ino = |name: &str| fs::metadata(dir.path().join(name)).unwrap().ino();
        for name in ["a", "b"] {
            fs::write(dir.path().join(name), name).unwrap();
        }
        let mut pass = DigestCache::open(&cache);
        pass.sha256(&dir.path().join("a")).unwrap();
        pass.sha256(&dir.path().join("b")).unwrap();
        pass.save().unwrap();
        let mut both = vec![ino("a"), ino("b")];
        both.sort();
        assert_eq!(cached_inodes(&cache), both);
        fs::remove_file(dir.path().join("b")).unwrap();

        let mut next = DigestCache::open(&cache);
        next.sha256(&dir.path().join("a")).unwrap();
        next.save().unwrap();
        assert_eq!(
            cached_inodes(&cache),
            [ino("a")],
            "the gone file was pruned"
        );
    }

    #[test]
    fn a_malformed_or_older_cache_is_empty_and_rewritten() {
        let (dir, cache) = setup();
        let file = dir.path().join("a.jar");
        fs::write(&file, b"alpha").unwrap();
        fs::create_dir_all(cache.parent().unwrap()).unwrap();
        for bad in [&b"{ not json"[..], br#"{"format": 0, "entries": []}"#] {
            fs::write(&cache, bad).unwrap();
            let mut pass = DigestCache::open(&cache);
            pass.sha256(&file).unwrap();
            assert_eq!(pass.stats().hashed_files, 1);
            pass.save().unwrap();
            let mut next = DigestCache::open(&cache);
            next.sha256(&file).unwrap();
            assert_eq!(next.stats().cached_files, 1);
        }
    }

    #[test]
    fn a_cache_of_a_newer_format_is_used_for_nothing_and_left_as_it_is() {
        let (dir, cache) = setup();
        let file = dir.path().join("a.jar");
        fs::write(&file, b"alpha").unwrap();
        fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let newer = format!(
            r#"{{"format": {}, "entries": "a shape this core does not know"}}"#,
            FORMAT + 1
        );
        fs::write(&cache, &newer).unwrap();
        for _ in 0..2 {
            let mut pass = DigestCache::open(&cache);
            pass.sha256(&file).unwrap();
            pass.remember(&file, sha256_file(&file).unwrap()).unwrap();
            assert_eq!(pass.stats().hashed_files, 1, "nothing cached");
            pass.save().unwrap();
            assert_eq!(fs::read_to_string(&cache).unwrap(), newer);
        }
    }
}
