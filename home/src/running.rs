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

use crate::{Layout, Sha256};

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
    /// SHA-256 of the executable.
    pub sha256: Sha256,
    /// Where it comes from.
    pub origin: CoreOrigin,
    /// The executable.
    pub path: String,
    /// Its process.
    pub pid: u32,
    /// The handshake version of the launcher that started it (the installed
    /// package's executable); what a set's core must speak. Records written
    /// before it existed read as 1, the only version then.
    #[serde(default = "first_handshake")]
    pub launcher_handshake: u32,
    /// Why the launcher runs its own build although the active set holds a
    /// core (the set's core refused the launcher's handshake); the set is
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The first launcher handshake version, which every launcher speaks:
/// what a record or a module object that names none means.
pub const FIRST_HANDSHAKE: u32 = 1;

fn first_handshake() -> u32 {
    FIRST_HANDSHAKE
}

/// Whether a launcher of handshake version `launcher` can start a core
/// that speaks `versions` (a module object's `launcherHandshakes`; `None`:
/// the first version only).
pub fn speaks(launcher: u32, versions: Option<&[u32]>) -> bool {
    versions.map_or(launcher == FIRST_HANDSHAKE, |v| v.contains(&launcher))
}

/// What the last start recorded, if anything.
pub fn read(layout: &Layout) -> io::Result<Option<RunningCore>> {
    crate::layout::read_state(layout, RUNNING_CORE_FILE, crate::format::RUNNING_CORE)
}

/// Records `core` as the one that runs.
pub fn write(layout: &Layout, core: &RunningCore) -> io::Result<()> {
    crate::layout::write_state(layout, RUNNING_CORE_FILE, crate::format::RUNNING_CORE, core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_the_launchers_handshake_reads_as_the_first_version() {
        let old = r#"{"version":"1.0","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","origin":"launcher","path":"/x","pid":7}"#;
        let core: RunningCore = serde_json::from_str(old).unwrap();
        assert_eq!(core.launcher_handshake, 1);
        assert!(speaks(core.launcher_handshake, None));
        assert!(speaks(core.launcher_handshake, Some(&[1, 2])));
        assert!(!speaks(core.launcher_handshake, Some(&[2])));
        let newer = RunningCore {
            launcher_handshake: 2,
            ..core
        };
        assert!(!speaks(newer.launcher_handshake, None));
        assert!(speaks(newer.launcher_handshake, Some(&[2])));
    }

    #[test]
    fn an_origin_reads_as_its_serde_form() {
        for origin in [CoreOrigin::ModuleSet, CoreOrigin::Launcher] {
            assert_eq!(serde_json::to_value(origin).unwrap(), origin.as_str());
        }
    }
}
