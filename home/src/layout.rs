//! The folders of the box home (contracts section 1) and the helpers
//! that write them durably.
//!
//! `modules-upgrade/` is complete if and only if it holds
//! `modules-info.properties` (the marker); the staged models stand beside it
//! in `models-upgrade/`, written before the marker's folder is renamed into
//! place. Folders named `*.tmp` are scratch space of an unfinished staging
//! and are deleted at the next one.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::installed::MODULES_INFO_FILE;

/// Paths of one home.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// The layout of `home`.
    pub fn new(home: &Path) -> Self {
        Layout {
            home: home.to_owned(),
        }
    }

    /// The home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `state/`: the host's own files, the quarantined set and the portal
    /// outbox.
    pub fn state(&self) -> PathBuf {
        self.home.join("state")
    }

    /// `state/portal-outbox/`: reports for the portal that wait on disk
    /// ([`crate::outbox`]).
    pub fn portal_outbox(&self) -> PathBuf {
        self.state().join(crate::outbox::OUTBOX_DIR)
    }

    /// `state/digest-cache.json`: the SHA-256 of installed files by inode,
    /// size and modification time ([`crate::digests`]).
    pub fn digest_cache(&self) -> PathBuf {
        self.state().join(crate::digests::DIGEST_CACHE_FILE)
    }

    /// The active module set.
    pub fn modules(&self) -> PathBuf {
        self.home.join("modules")
    }

    /// The download cache.
    pub fn download(&self) -> PathBuf {
        self.home.join("modules-download")
    }

    /// `modules-upgrade/`: the staged set.
    pub fn upgrade_dir(&self) -> PathBuf {
        self.home.join("modules-upgrade")
    }

    /// The previous set.
    pub fn backup(&self) -> PathBuf {
        self.home.join("modules-backup")
    }

    /// The active models.
    pub fn models(&self) -> PathBuf {
        self.home.join("models")
    }

    /// The staged models.
    pub fn models_upgrade(&self) -> PathBuf {
        self.home.join("models-upgrade")
    }

    /// The previous models.
    pub fn models_backup(&self) -> PathBuf {
        self.home.join("models-backup")
    }

    /// Scratch folder where the next staged set is built.
    pub fn upgrade_tmp(&self) -> PathBuf {
        self.home.join("modules-upgrade.tmp")
    }

    /// Scratch folder where the next staged models are built.
    pub fn models_upgrade_tmp(&self) -> PathBuf {
        self.home.join("models-upgrade.tmp")
    }

    /// Whether this box is on its first run (no installed set).
    pub fn is_first_run(&self) -> bool {
        !self.modules().join(MODULES_INFO_FILE).exists()
    }

    /// Whether a complete staged set waits.
    pub fn has_staged_set(&self) -> bool {
        self.upgrade_dir().join(MODULES_INFO_FILE).exists()
    }

    /// Creates the folders the upgrade center works in.
    pub fn create_folders(&self) -> io::Result<()> {
        for dir in [
            self.modules(),
            self.download(),
            self.upgrade_dir(),
            self.backup(),
            self.models(),
        ] {
            fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// The environment UUID from `config/device-registration.properties`
    /// ([`crate::registration::environment_uuid`]).
    pub fn environment_uuid(&self) -> io::Result<Option<String>> {
        crate::registration::environment_uuid(&self.home)
    }

    /// `config/device-registration.properties`.
    pub fn registration_file(&self) -> PathBuf {
        crate::registration::registration_file(&self.home)
    }
}

/// A file operation on the home failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct FileError {
    /// What was being done (`write`, `sync`, `rename`).
    pub action: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// A `map_err` argument: the error of `action` on `path`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_owned();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or
/// the new content: 1. write `{path}.tmp`, 2. fsync it, 3. rename it over
/// `path`, 4. fsync the folder so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_mode(path, bytes, None)
}

/// [`write_atomic`] for a file that holds a secret: the temporary file is
/// created owner-only (0600) by `open` itself (a leftover one is removed
/// first), so the secret is never readable by others, not even for a
/// moment.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_mode(path, bytes, Some(0o600))
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), FileError> {
    let err = FileError::at;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);

    let written = (|| {
        // 1. and 2.
        let mut options = fs::OpenOptions::new();
        options.write(true);
        match mode {
            None => {
                options.create(true).truncate(true);
            }
            Some(mode) => {
                match fs::remove_file(&tmp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(err("write", &tmp)(e))
                    }
                    _ => {}
                }
                crate::platform::create_private(&mut options, mode);
            }
        }
        let mut file = options.open(&tmp).map_err(err("write", &tmp))?;
        file.write_all(bytes).map_err(err("write", &tmp))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        // 3.
        crate::platform::replace_file(&tmp, path).map_err(err("rename", &tmp))
    })();
    if written.is_err() {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // 4.
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(err("sync", dir))
}

/// The JSON record `file` of the home's `state/`, of a format up to
/// `format` ([`crate::format`]); `None` when it is missing. An unreadable
/// one is an error (`InvalidData`), not "none"; so is one of a newer format
/// (holding a [`crate::format::NewerFormat`]).
pub fn read_state<T: serde::de::DeserializeOwned>(
    layout: &Layout,
    file: &str,
    format: u32,
) -> io::Result<Option<T>> {
    crate::format::read_json_or_err(&layout.state().join(file), format)
}

/// Writes the JSON record `file` of the home's `state/` as format `format`,
/// durably ([`write_atomic`]); refused, leaving it, when the record there is
/// of a newer format.
pub fn write_state<T: serde::Serialize>(
    layout: &Layout,
    file: &str,
    format: u32,
    value: &T,
) -> io::Result<()> {
    let path = layout.state().join(file);
    if let Some(newer) = crate::format::newer_json(&path, format) {
        return Err(newer.into_io());
    }
    fs::create_dir_all(layout.state())?;
    Ok(write_atomic(&path, &crate::format::to_json(value, format))?)
}

/// Removes the record `file` of the home's `state/`, durably; a missing
/// one is no error. Refused, leaving it, when the record there is of a
/// format newer than `format`.
pub fn remove_state(layout: &Layout, file: &str, format: u32) -> io::Result<()> {
    let path = layout.state().join(file);
    if let Some(newer) = crate::format::newer_json(&path, format) {
        return Err(newer.into_io());
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => sync_dir(&layout.state()),
    }
}

/// fsyncs a folder, so that renames and creations in it are durable. An
/// empty path is the current folder. (Windows: nothing to do, see
/// [`crate::platform`].)
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::platform::sync_dir(dir)
}

/// Removes a folder and everything in it; a missing folder is not an error.
pub fn remove_dir_if_exists(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    crate::platform::free_bytes(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(windows)]
    #[test]
    fn free_bytes_answers_for_a_folder_and_a_file_and_a_missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        // The downloader asks for the file it writes (a `.partial`).
        let file = dir.path().join("a.partial");
        fs::write(&file, b"x").unwrap();
        assert!(free_bytes(&file).unwrap() > 0);
        let err = free_bytes(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn free_bytes_agrees_with_df_and_a_missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let df: u64 = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Other writers on the same file system move it between the two
        // reads; a wrong block size would be off by a factor.
        assert!(free.abs_diff(df) < 256 << 20, "free_bytes {free}, df {df}");
        let err = free_bytes(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
