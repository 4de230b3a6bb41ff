//! The box home: where the host keeps its own state, and the lock that lets
//! one host at a time run on a home.
//!
//! The host's own files live in `state/` (mode 0700): the component IDs and
//! the control socket. Nothing outside `state/` and the upgrade center's
//! `modules*` and `models*` folders is ever written by the host.

use std::{
    fs::{self, File, OpenOptions},
    io,
    path::{Path, PathBuf},
};

/// Paths under one home.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: &Path) -> Self {
        Home {
            root: root.to_owned(),
        }
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `state/`, the host's own folder.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }

    /// The persisted component IDs.
    pub fn ids_file(&self) -> PathBuf {
        self.state_dir().join("component-ids.json")
    }

    /// Creates `state/` with mode 0700 if missing (Windows: the home's
    /// ACL, `platform::private_dir`).
    pub fn ensure_state_dir(&self) -> io::Result<PathBuf> {
        let dir = self.state_dir();
        crate::platform::private_dir(&dir)?;
        Ok(dir)
    }

    /// Takes the home's exclusive lock, held until the returned file is
    /// dropped; `None` when another process holds it.
    pub fn lock(&self) -> io::Result<Option<File>> {
        let dir = self.ensure_state_dir()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("host.lock"))?;
        // std's file lock: `flock(2)` on Unix, `LockFileEx` on Windows, so
        // it is held by the open file (a launcher's core inherits it) and
        // goes with the process.
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
