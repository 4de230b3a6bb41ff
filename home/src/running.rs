//! The core that runs: which host executable this box runs, its version and
//! SHA-256, and whether it came from the module set or is the launcher's
//! own build (`state/running-core.json`).
//!
//! Written by the process that runs the components at every start, so that
//! `status` and the upgrade center (which tells the portal in
//! `GET_ENV_MOD_REQ`) report the truth, not the version a crate was built
//! with.

use std::io;

use serde::{Deserialize, Serialize};

use crate::Layout;

/// The file, in the home's `state/`.
pub const RUNNING_CORE_FILE: &str = "running-core.json";

/// Where the running core comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoreOrigin {
    /// The core module of the active set (`modules/banalytics-box`), started
    /// by the launcher.
    ModuleSet,
    /// The launcher itself: the executable the package installed.
    Launcher,
}

impl CoreOrigin {
    /// Its serde form: `module-set` or `launcher`.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreOrigin::ModuleSet => "module-set",
            CoreOrigin::Launcher => "launcher",
        }
    }
}

/// The core that runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCore {
    /// Its version: the core module's for a core from the set, the build's
    /// own for the launcher.
    pub version: String,
    /// SHA-256 of the executable, lower-case hex.
    pub sha256: String,
    /// Where it comes from.
    pub origin: CoreOrigin,
    /// The executable.
    pub path: String,
    /// Its process.
    pub pid: u32,
}

/// What the last start recorded, if anything.
pub fn read(layout: &Layout) -> io::Result<Option<RunningCore>> {
    crate::layout::read_state(layout, RUNNING_CORE_FILE)
}

/// Records `core` as the one that runs.
pub fn write(layout: &Layout, core: &RunningCore) -> io::Result<()> {
    crate::layout::write_state(layout, RUNNING_CORE_FILE, core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_reads_as_its_serde_form() {
        for origin in [CoreOrigin::ModuleSet, CoreOrigin::Launcher] {
            assert_eq!(serde_json::to_value(origin).unwrap(), origin.as_str());
        }
    }
}
