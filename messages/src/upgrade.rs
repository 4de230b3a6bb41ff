//! Messages between the upgrade center and the host about restarts and the
//! probation of a new module set. The host acts on them because it is the
//! only part that knows the process.

use serde::{Deserialize, Serialize};

use banalytics_sdk::BusMessage;

/// How the box restarts to apply a staged set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// `run` exits with the documented restart status; the service manager
    /// starts it again (the Linux default).
    Exit,
    /// The host re-executes itself, for boxes without a service manager.
    Exec,
    /// The host runs a configured program (e.g. `upgrade-job-start.bat`,
    /// the Windows default), then exits with the restart status.
    Command,
}

impl RestartMode {
    /// `command` on Windows (with [`RestartMode::default_command`]),
    /// `exit` elsewhere.
    pub fn platform_default() -> RestartMode {
        if cfg!(windows) {
            RestartMode::Command
        } else {
            RestartMode::Exit
        }
    }

    /// The program of the Windows default: `upgrade-job-start.bat`.
    pub fn default_command() -> Option<String> {
        cfg!(windows).then(|| "upgrade-job-start.bat".to_owned())
    }
}

/// A complete staged set waits: restart the box to apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequested {
    /// How.
    pub mode: RestartMode,
    /// The program for [`RestartMode::Command`].
    pub command: Option<String>,
    /// Why, for the log.
    pub reason: String,
}

impl BusMessage for RestartRequested {
    const TOPIC: &'static str = "host.restart-requested";
}

/// The set on probation ran healthy for the grace period and is now the
/// installed set (the upgrade center reports `installed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeCommitted {
    /// The portal outbox entry of `installed`, when the host kept it there
    /// with the commit (`banalytics_home::outbox::release_verdict`); the
    /// upgrade center then only announces it. `None`: nothing was kept (no
    /// registration, or the outbox refused), so the upgrade center reports
    /// it itself.
    #[serde(default)]
    pub status_seq: Option<u64>,
}

impl BusMessage for UpgradeCommitted {
    const TOPIC: &'static str = "host.upgrade-committed";
}

/// The new set failed its probation and the previous set is active again
/// (the upgrade center reports `installation_cancelled` with the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRolledBack {
    /// Why, naming the failure.
    pub reason: String,
    /// The portal outbox entry of `installation_cancelled`, as
    /// [`UpgradeCommitted::status_seq`].
    #[serde(default)]
    pub status_seq: Option<u64>,
}

impl BusMessage for UpgradeRolledBack {
    const TOPIC: &'static str = "host.upgrade-rolled-back";
}
