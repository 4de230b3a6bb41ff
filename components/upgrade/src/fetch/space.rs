//! The free space the box keeps for the user's data (`min_free_space`).
//!
//! The disk is shared with recordings: a download stops before a write
//! would leave less than the reserve free, and a write that hits `ENOSPC`
//! stops it too. Both discard the partial, which can never complete. The
//! probe is a function so that tests can stand in for a full file system.

use std::{fmt, io, path::Path, sync::Arc};

/// Bytes free on the file system holding a path.
pub type SpaceProbe = Arc<dyn Fn(&Path) -> io::Result<u64> + Send + Sync>;

/// The reserve and how free space is measured.
#[derive(Clone)]
pub struct Space {
    /// Bytes that must stay free.
    pub min_free: u64,
    probe: SpaceProbe,
}

impl Space {
    /// A reserve of `min_free` bytes measured by `probe`.
    pub fn new(min_free: u64, probe: SpaceProbe) -> Space {
        Space { min_free, probe }
    }

    /// The system's probe (`statvfs`).
    pub fn system_probe() -> SpaceProbe {
        Arc::new(|p: &Path| crate::layout::free_bytes(p))
    }

    /// Bytes free where `path` is (its parent when it does not exist).
    pub fn free(&self, path: &Path) -> io::Result<u64> {
        match (self.probe)(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (self.probe)(path.parent().unwrap_or(path))
            }
            other => other,
        }
    }

    /// `Err(free)` when writing `more` bytes at `path` would leave less than
    /// the reserve. A reserve of 0 asks nothing.
    pub fn room_for(&self, path: &Path, more: u64) -> io::Result<Result<(), u64>> {
        if self.min_free == 0 {
            return Ok(Ok(()));
        }
        let free = self.free(path)?;
        Ok(if free < more.saturating_add(self.min_free) {
            Err(free)
        } else {
            Ok(())
        })
    }
}

impl Default for Space {
    /// No reserve, the system's probe: a bare [`super::download`] only
    /// stops at `ENOSPC`.
    fn default() -> Space {
        Space::new(0, Space::system_probe())
    }
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("min_free", &self.min_free)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Space {
    fn eq(&self, other: &Self) -> bool {
        self.min_free == other.min_free && Arc::ptr_eq(&self.probe, &other.probe)
    }
}

impl Eq for Space {}

/// Whether `e` is the file system being full.
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}
