//! This executable's SHA-256, hashed once per executable file rather than
//! once per home.
//!
//! The launcher hashes itself to tell whether the active set's core is its
//! own bytes ([`super::CoreToRun::OwnNamedBySet`]: no child, the set's
//! version) or another build (a child), and to report the running core's
//! digest. A wrong digest would run this build in place of the set's core,
//! so a cached one is trusted only where the executable itself could have
//! been replaced by whoever wrote it. Two caches, each keyed by the file's
//! device, inode, size and modification time (a rebuilt or replaced
//! executable misses both), in this order:
//!
//! 1. the home's `state/launcher-identity.json`;
//! 2. on Unix, [`shared_path`]: `.NAME.sha256.json` beside the executable
//!    `NAME`, for every home started from it. It is read only when it is
//!    a regular file (not a link), owned by the executable's owner or by
//!    this process's user, and writable by its owner only; it is written
//!    owner-only (0600) through a temporary file and a rename. A folder
//!    this user cannot write (the package's `/usr/bin`) has none, and each
//!    home hashes as before.
//!
//! Starts of several homes at once take turns on `.NAME.sha256.lock`
//! (`flock`, at most [`SHARED_WAIT`]), so the first one hashes and the
//! others read its result; after the wait a start hashes for itself.

use std::{fs, io, path::Path, time::Instant};
#[cfg(unix)]
use std::{path::PathBuf, time::Duration};

use banalytics_home::{digests::FileKey, format, record::sha256_file, Sha256};
use serde::{Deserialize, Serialize};
#[cfg(unix)]
use tracing::debug;
use tracing::{info, warn};

/// How long a start waits for another start hashing the same executable
/// before it hashes for itself: one hash of a 122 MB release build took
/// under a second alone, and a lock held longer (a hung or hostile holder)
/// must not hold up the box's start.
#[cfg(unix)]
const SHARED_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting start tries the lock again.
#[cfg(unix)]
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Where a digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The home's `state/launcher-identity.json`.
    Home,
    /// The cache beside the executable ([`shared_path`]).
    #[cfg_attr(not(unix), allow(dead_code))]
    Shared,
    /// Read and hashed by this start.
    Hashed,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    sha256: Sha256,
}

/// The digest of `exe`, from a cache (module docs) or hashed; a miss fills
/// the caches it read.
pub fn digest(exe: &Path, state_dir: &Path) -> io::Result<(Sha256, Source)> {
    let meta = fs::metadata(exe)?;
    let file = FileKey::of(&meta);
    let key = format!("{}:{}:{}:{}", file.dev, file.ino, file.size, file.mtime_ns);
    let home = state_dir.join("launcher-identity.json");
    if let Some(sha256) = read(&home, &key) {
        return Ok((sha256, Source::Home));
    }
    let (sha256, source) = shared(exe, &meta, &key)?;
    // A cache of a newer format is neither read nor replaced.
    if format::newer_json(&home, format::LAUNCHER_IDENTITY).is_none() {
        let json = format::to_json(&Cached { key, sha256 }, format::LAUNCHER_IDENTITY);
        if let Err(e) = banalytics_home::layout::write_atomic(&home, &json) {
            warn!(error = %e, "cannot cache the launcher's digest");
        }
    }
    Ok((sha256, source))
}

/// The digest in the cache `path` when its key is `key`.
fn read(path: &Path, key: &str) -> Option<Sha256> {
    let cached: Cached = format::read_json_or_err(path, format::LAUNCHER_IDENTITY)
        .ok()
        .flatten()?;
    (cached.key == key).then_some(cached.sha256)
}

/// The cache beside `exe` that the homes started from it share.
#[cfg(unix)]
pub fn shared_path(exe: &Path) -> PathBuf {
    let name = exe.file_name().unwrap_or_default().to_string_lossy();
    exe.with_file_name(format!(".{name}.sha256.json"))
}

fn hash(exe: &Path, size: u64) -> io::Result<Sha256> {
    let started = Instant::now();
    let sha256 = sha256_file(exe)?;
    // What a start that found no cache pays (fleet-bench reads it).
    info!(
        bytes = size,
        took_ms = started.elapsed().as_millis() as u64,
        "hashed this executable (cached in state/launcher-identity.json and beside it)"
    );
    Ok(sha256)
}

#[cfg(not(unix))]
fn shared(exe: &Path, meta: &fs::Metadata, _key: &str) -> io::Result<(Sha256, Source)> {
    Ok((hash(exe, meta.len())?, Source::Hashed))
}

#[cfg(unix)]
fn shared(exe: &Path, meta: &fs::Metadata, key: &str) -> io::Result<(Sha256, Source)> {
    let cache = shared_path(exe);
    if let Some(sha256) = read_trusted(&cache, meta, key) {
        return Ok((sha256, Source::Shared));
    }
    let lock = cache.with_extension("lock");
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .or_else(|_| fs::File::open(&lock));
    let Ok(lock) = lock else {
        // A folder this user cannot write: no cache beside the executable.
        return Ok((hash(exe, meta.len())?, Source::Hashed));
    };
    let locked = lock_within(&lock, SHARED_WAIT);
    if locked {
        if let Some(sha256) = read_trusted(&cache, meta, key) {
            return Ok((sha256, Source::Shared));
        }
    } else {
        debug!(cache = %cache.display(), "another start holds the digest lock; hashing alone");
    }
    let sha256 = hash(exe, meta.len())?;
    if locked {
        let json = format::to_json(
            &Cached {
                key: key.to_owned(),
                sha256,
            },
            format::LAUNCHER_IDENTITY,
        );
        if let Err(e) = banalytics_home::layout::write_atomic_private(&cache, &json) {
            debug!(error = %e, "cannot cache the launcher's digest beside it");
        }
    }
    Ok((sha256, Source::Hashed))
}

/// Takes `lock` exclusively, trying for at most `wait`.
#[cfg(unix)]
fn lock_within(lock: &fs::File, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match lock.try_lock() {
            Ok(()) => return true,
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL)
            }
            Err(_) => return false,
        }
    }
}

/// The digest in the shared cache `path`, when the file may be trusted
/// (module docs) and its key is `key`.
#[cfg(unix)]
fn read_trusted(path: &Path, exe: &fs::Metadata, key: &str) -> Option<Sha256> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).ok()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let trusted = meta.file_type().is_file()
        && (meta.uid() == exe.uid() || meta.uid() == me)
        && meta.mode() & 0o022 == 0;
    if !trusted {
        debug!(cache = %path.display(), "not reading the digest beside the executable: not its owner's alone");
        return None;
    }
    read(path, key)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::{os::unix::fs::PermissionsExt, path::PathBuf};

    struct Homes {
        _dir: tempfile::TempDir,
        exe: PathBuf,
        root: PathBuf,
    }

    impl Homes {
        fn new() -> Homes {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_owned();
            let exe = root.join("bin").join("banalytics-box");
            fs::create_dir_all(exe.parent().unwrap()).unwrap();
            fs::write(&exe, vec![7u8; 100_000]).unwrap();
            Homes {
                _dir: dir,
                exe,
                root,
            }
        }

        fn state(&self, home: &str) -> PathBuf {
            let state = self.root.join(home).join("state");
            fs::create_dir_all(&state).unwrap();
            state
        }

        fn expected(&self) -> Sha256 {
            sha256_file(&self.exe).unwrap()
        }
    }

    #[test]
    fn homes_started_from_one_executable_hash_it_once() {
        let h = Homes::new();
        let first = digest(&h.exe, &h.state("a")).unwrap();
        assert_eq!(first, (h.expected(), Source::Hashed));
        assert_eq!(
            digest(&h.exe, &h.state("b")).unwrap(),
            (h.expected(), Source::Shared)
        );
        assert_eq!(
            digest(&h.exe, &h.state("a")).unwrap(),
            (h.expected(), Source::Home)
        );
        let mode = fs::metadata(shared_path(&h.exe))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_changed_executable_is_hashed_again() {
        let h = Homes::new();
        digest(&h.exe, &h.state("a")).unwrap();
        fs::write(&h.exe, vec![8u8; 100_001]).unwrap();
        assert_eq!(
            digest(&h.exe, &h.state("b")).unwrap(),
            (h.expected(), Source::Hashed)
        );
        assert_eq!(
            digest(&h.exe, &h.state("a")).unwrap(),
            (h.expected(), Source::Shared)
        );
    }

    #[test]
    fn a_shared_cache_others_could_write_is_not_read() {
        let h = Homes::new();
        digest(&h.exe, &h.state("a")).unwrap();
        let cache = shared_path(&h.exe);
        // A forged digest, in a file the group may write.
        let forged = fs::read_to_string(&cache)
            .unwrap()
            .replace(&h.expected().to_string(), &"ab".repeat(32));
        fs::write(&cache, forged).unwrap();
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o620)).unwrap();
        assert_eq!(
            digest(&h.exe, &h.state("b")).unwrap(),
            (h.expected(), Source::Hashed)
        );
        // And never through a link.
        fs::remove_file(&cache).unwrap();
        let elsewhere = h.root.join("elsewhere.json");
        digest(&h.exe, &h.state("c")).unwrap();
        fs::rename(&cache, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
        assert_eq!(
            digest(&h.exe, &h.state("d")).unwrap(),
            (h.expected(), Source::Hashed)
        );
    }

    #[test]
    fn starts_at_once_take_turns_and_one_hashes() {
        let h = Homes::new();
        let states: Vec<PathBuf> = (0..8).map(|i| h.state(&format!("h{i}"))).collect();
        let sources: Vec<Source> = std::thread::scope(|s| {
            let runs: Vec<_> = states
                .iter()
                .map(|state| s.spawn(|| digest(&h.exe, state).unwrap()))
                .collect();
            runs.into_iter()
                .map(|r| {
                    let (sha256, source) = r.join().unwrap();
                    assert_eq!(sha256, h.expected());
                    source
                })
                .collect()
        });
        let hashed = sources.iter().filter(|s| **s == Source::Hashed).count();
        assert_eq!(hashed, 1, "{sources:?}");
    }
}
