//! The portal's messages as they travel on the host bus (contracts
//! section 3).
//!
//! Portal Integration turns each text frame from the portal into one of the
//! inbound types here, by its `type`, and publishes it; it subscribes to the
//! outbound types and sends each as a frame with its `type`. Components that
//! talk to the portal (the upgrade center) use only these types, so they
//! never see the WebSocket.

use serde::{Deserialize, Serialize};

use banalytics_sdk::BusMessage;

/// A message type of the portal protocol.
pub trait PortalMessage: BusMessage {
    /// The frame's `type` value.
    const WIRE_TYPE: &'static str;
}

macro_rules! portal_message {
    ($ty:ty, $wire:literal) => {
        impl BusMessage for $ty {
            const TOPIC: &'static str = concat!("portal.", $wire);
        }
        impl PortalMessage for $ty {
            const WIRE_TYPE: &'static str = $wire;
        }
    };
}

/// `EVT_SYNC_SOFT`, portal → box: "synchronise software now".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSoftware {}
portal_message!(SyncSoftware, "EVT_SYNC_SOFT");

/// Coordinates of a module, as the portal writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRef {
    /// Maven groupId.
    pub group_id: String,
    /// Maven artifactId.
    pub artifact_id: String,
    /// Version.
    pub version: String,
}

/// `GET_ENV_MOD_REQ`, box → portal: ask for the environment's target set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetEnvModulesRequest {
    /// The environment UUID from `config/device-registration.properties`.
    #[serde(rename = "environmentUUID")]
    pub environment_uuid: String,
    /// The running core's coordinates.
    #[serde(rename = "banalyticsBoxCoreModule")]
    pub core_module: ModuleRef,
    /// Extension (the original portal ignores it): the digest of the core
    /// that runs and where it comes from.
    #[serde(
        rename = "banalyticsBoxCoreBuild",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub core_build: Option<CoreBuild>,
}
portal_message!(GetEnvModulesRequest, "GET_ENV_MOD_REQ");

/// The build of the core that runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreBuild {
    /// SHA-256 of the executable.
    pub sha256: banalytics_home::Sha256,
    /// `module-set` (the active set's core, started by the launcher) or
    /// `launcher` (the installed executable itself).
    pub origin: String,
    /// The handshake version of the box's launcher (the installed
    /// package): a core module whose `launcherHandshakes` lacks it is
    /// refused. Absent from a box that predates it.
    #[serde(
        rename = "launcherHandshake",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub launcher_handshake: Option<u32>,
    /// Why the launcher runs its own build although the set holds a core
    /// (the core refused its handshake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// `GET_ENV_MOD_RES`, portal → box: the whole target set. The module
/// objects are kept as JSON; the upgrade center validates them and refuses
/// a bad set as a whole, naming the fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetEnvModulesResponse {
    /// Module objects (contracts section 2 fields, plus the optional
    /// extension fields of section 3).
    #[serde(default)]
    pub modules: Vec<serde_json::Value>,
}
portal_message!(GetEnvModulesResponse, "GET_ENV_MOD_RES");

/// The `status` values of `EVT_ENV_MOD_UPD_STS`, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleStatus {
    /// A module's download started.
    Downloading,
    /// A module is present and verified (downloaded or kept).
    Downloaded,
    /// A module's download failed.
    DownloadError,
    /// The whole synchronisation was cancelled; `module` is null.
    InstallationCancelled,
    /// The new set runs after the restart; `module` is null.
    Installed,
}

/// `EVT_ENV_MOD_UPD_STS`, box → portal: progress of a synchronisation.
///
/// A status with a `seq` is durable: its producer appended it to the
/// portal outbox on disk (`banalytics_home::outbox`) under that number
/// before publishing it, and Portal Integration sends it from there (the
/// bus message only says "there is more on disk"). One without a `seq`
/// travels in memory only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatusUpdate {
    /// The environment UUID.
    pub environment_uuid: String,
    /// The module, or null for the whole set.
    pub module: Option<ModuleRef>,
    /// What happened.
    pub status: ModuleStatus,
    /// Why, for errors and cancellations.
    pub status_message: Option<String>,
    /// The status's number in the portal outbox, when it is durable. On the
    /// wire it is the extension field `seq`, by which the portal drops a
    /// status it already has (the original portal ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The id of the outbox that numbered it (`banalytics_home::outbox::id`):
    /// numbers start again in a new outbox, so the portal drops a status
    /// by (outbox id, `seq`). The extension field `outboxId`, set by Portal
    /// Integration as it sends an entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<String>,
}
portal_message!(ModuleStatusUpdate, "EVT_ENV_MOD_UPD_STS");

/// The portal link came up or went down (published by Portal Integration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalLinkChanged {
    /// Whether the WebSocket is connected now.
    pub connected: bool,
}

impl BusMessage for PortalLinkChanged {
    const TOPIC: &'static str = "portal-link.changed";
}

/// Asks Portal Integration whether the portal link is up now; it answers
/// with [`PortalLinkState`]. Nobody on the bus to take it: no Portal
/// Integration runs on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalLinkQuery {}

impl BusMessage for PortalLinkQuery {
    const TOPIC: &'static str = "portal-link.query";
}

/// Portal Integration's answer to [`PortalLinkQuery`]: whether the
/// WebSocket is connected now (a [`PortalLinkChanged`] says when it
/// changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalLinkState {
    /// Whether the WebSocket is connected now.
    pub connected: bool,
}

impl BusMessage for PortalLinkState {
    const TOPIC: &'static str = "portal-link.state";
}

/// Asks Portal Integration how many frames wait for the portal, in memory
/// and on disk; it answers with [`PortalOutboxState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalOutboxQuery {}

impl BusMessage for PortalOutboxQuery {
    const TOPIC: &'static str = "portal-link.outbox-query";
}

/// Frames for the portal that it does not have yet: those queued in memory
/// and the durable statuses still on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalOutboxState {
    /// Frames waiting, in memory and on disk.
    pub queued: usize,
    /// Of them, durable statuses in the on-disk outbox.
    #[serde(default)]
    pub durable: usize,
}

impl BusMessage for PortalOutboxState {
    const TOPIC: &'static str = "portal-link.outbox-state";
}

/// The local "start upgrade" (`banalytics-box upgrade`), published by the
/// host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRequested {
    /// `upgrade --retry`: install the target set even if it is the
    /// quarantined one (an automatic rollback took it off), for this
    /// synchronisation. Absent in older JSON, which means `false`.
    #[serde(default)]
    pub retry: bool,
    /// The asker's number for this request (`upgrade --wait` picks one at
    /// random): the synchronisation it started or joined lists it in its
    /// `status` (`sync.requests`), so the asker follows that one. Absent
    /// in older JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

impl BusMessage for UpgradeRequested {
    const TOPIC: &'static str = "host.upgrade-requested";
}

/// What came of an [`UpgradeRequested`] with a `request` number, as the
/// upgrade center answers it in [`UpgradeAnswered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeOutcome {
    /// Refused before anything was asked: the portal link is down, or no
    /// Portal Integration runs. Nothing started, nothing is reported to
    /// the portal.
    Refused,
    /// A synchronisation was running: the request joined it.
    Joined,
    /// The request started a synchronisation and the portal named its
    /// target set, which is being resolved, downloaded and staged.
    Started,
    /// The synchronisation it started found the target set staged already;
    /// the set waits for its restart (the message says for what).
    StagedAlready,
    /// The synchronisation it started stopped before the portal's target
    /// set was taken on (the message says why).
    Failed,
}

/// The upgrade center's answer to an [`UpgradeRequested`] that had a
/// `request` number: what the request did, once that is known (at once
/// when it was refused or joined a running synchronisation, after the
/// portal named the target set when it started one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeAnswered {
    /// The request's number.
    pub request: u64,
    /// What came of it.
    pub outcome: UpgradeOutcome,
    /// The same, in words for the operator.
    pub message: String,
}

impl BusMessage for UpgradeAnswered {
    const TOPIC: &'static str = "host.upgrade-answered";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_update_serializes_with_the_wire_field_names() {
        let m = ModuleStatusUpdate {
            environment_uuid: "e".into(),
            module: None,
            status: ModuleStatus::InstallationCancelled,
            status_message: Some("empty set".into()),
            seq: None,
            outbox_id: None,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"environmentUuid": "e", "module": null, "status": "installation_cancelled", "statusMessage": "empty set"})
        );
        let r = GetEnvModulesRequest {
            environment_uuid: "e".into(),
            core_module: ModuleRef {
                group_id: "com.banalytics.box".into(),
                artifact_id: "core".into(),
                version: "1.0".into(),
            },
            core_build: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["environmentUUID"], "e");
        assert_eq!(
            v["banalyticsBoxCoreModule"]["groupId"],
            "com.banalytics.box"
        );
    }

    #[test]
    fn an_upgrade_request_without_retry_decodes_as_no_retry() {
        let old: UpgradeRequested = serde_json::from_str("{}").unwrap();
        assert!(!old.retry);
        let retry: UpgradeRequested = serde_json::from_str(r#"{"retry":true}"#).unwrap();
        assert!(retry.retry);
        assert_eq!(
            serde_json::to_value(UpgradeRequested {
                retry: true,
                request: None
            })
            .unwrap(),
            serde_json::json!({"retry": true})
        );
    }

    #[test]
    fn seq_is_on_the_wire_only_when_durable_and_optional_when_read() {
        let mut m = ModuleStatusUpdate {
            environment_uuid: "e".into(),
            module: None,
            status: ModuleStatus::Installed,
            status_message: None,
            seq: Some(42),
            outbox_id: Some("0a1b".into()),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!((&v["seq"], &v["outboxId"]), (&42.into(), &"0a1b".into()));
        m.seq = None;
        m.outbox_id = None;
        let v = serde_json::to_value(&m).unwrap();
        assert!(v.get("seq").is_none(), "{v}");
        let read: ModuleStatusUpdate = serde_json::from_value(v).unwrap();
        assert_eq!(read, m);
        let state: PortalOutboxState = serde_json::from_str(r#"{"queued":3}"#).unwrap();
        assert_eq!(
            state,
            PortalOutboxState {
                queued: 3,
                durable: 0
            }
        );
    }
}
