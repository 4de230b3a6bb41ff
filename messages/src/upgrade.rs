//! Messages between the upgrade center and the host about restarts and the
//! probation of a new module set, the operator's approval and the busy
//! leases that defer a restart. The host acts on them because it is the
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
///
/// It names no program: the program of [`RestartMode::Command`] is the
/// host's own configuration (`restart_command` in `box.toml`), so no
/// message can make the host run anything else. Older JSON with a
/// `command` field is still read, and the field ignored: refusing it would
/// lose the restart of a set an older publisher staged, and its value has
/// no effect either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequested {
    /// How.
    pub mode: RestartMode,
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

/// Apply the staged set now: the operator approved it (`banalytics-box
/// approve`, published by the host). A staged set that waits for its
/// maintenance window or for approval is applied at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveStagedSet {
    /// Who approved, for the log (`cli`).
    pub by: String,
}

impl BusMessage for ApproveStagedSet {
    const TOPIC: &'static str = "host.approve-staged-set";
}

/// A component took a busy lease: the host defers restarts (to apply a
/// set, or that probation causes) until it is released, at most the
/// upgrade center's `max_defer`. A lease taken again under the same
/// `holder` and `lease` replaces the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyLeaseTaken {
    /// The component instance that holds it.
    pub holder: String,
    /// The lease's name, unique for its holder (`alarm-clip`).
    pub lease: String,
    /// Why, for the log and `status`.
    #[serde(default)]
    pub reason: String,
}

impl BusMessage for BusyLeaseTaken {
    const TOPIC: &'static str = "host.busy-lease-taken";
}

/// A component released the busy lease it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyLeaseReleased {
    /// The component instance that held it.
    pub holder: String,
    /// The lease's name.
    pub lease: String,
}

impl BusMessage for BusyLeaseReleased {
    const TOPIC: &'static str = "host.busy-lease-released";
}

/// The host defers a restart it was asked for while busy leases are held
/// (at most until `until_ms`); the upgrade center tells the portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartDeferred {
    /// `holder/lease (reason)` of each lease held.
    pub holders: Vec<String>,
    /// The restart happens at the latest then, ms since the epoch.
    pub until_ms: u64,
}

impl BusMessage for RestartDeferred {
    const TOPIC: &'static str = "host.restart-deferred";
}

/// The upgrade center's answer to [`ApproveStagedSet`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalHandled {
    /// Whether a staged set waited and now restarts the box.
    pub restarting: bool,
    /// The set that waited, when one did.
    pub set_id: Option<banalytics_home::TargetSetId>,
}

impl BusMessage for ApprovalHandled {
    const TOPIC: &'static str = "host.approval-handled";
}

/// Drop the staged set: the operator discarded it (`banalytics-box
/// discard`, the console's button; published by the host). The upgrade
/// center stops waiting for it, removes it and its hold, tells the portal
/// that nothing was installed (`installation_cancelled`) and answers
/// [`StagedSetDiscarded`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardStagedSet {
    /// Who discarded it, for the log and the portal's status message
    /// (`cli`, `console`).
    pub by: String,
}

impl DiscardStagedSet {
    /// The `installation_cancelled` status message the portal gets, the
    /// same whether the running upgrade center or the stopped box's
    /// `discard` sends it.
    pub fn status_message(&self) -> String {
        format!(
            "the staged set was discarded by the operator ({}): nothing was installed",
            self.by
        )
    }
}

impl BusMessage for DiscardStagedSet {
    const TOPIC: &'static str = "host.discard-staged-set";
}

/// The upgrade center's answer to [`DiscardStagedSet`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSetDiscarded {
    /// Whether a staged set was there and is gone now.
    pub discarded: bool,
    /// What happened, or why nothing did, in words for the operator.
    pub message: String,
}

impl BusMessage for StagedSetDiscarded {
    const TOPIC: &'static str = "host.staged-set-discarded";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_request_names_no_program_and_an_older_ones_command_is_ignored() {
        let old: RestartRequested = serde_json::from_str(
            r#"{"mode":"command","command":"/bin/sh -c evil","reason":"staged"}"#,
        )
        .unwrap();
        assert_eq!(
            old,
            RestartRequested {
                mode: RestartMode::Command,
                reason: "staged".into()
            }
        );
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            serde_json::json!({"mode": "command", "reason": "staged"})
        );
    }
}
