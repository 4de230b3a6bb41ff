//! A synchronisation as data: what started it, the phase it is in, and the
//! report `status` shows.
//!
//! PortalLink runs synchronisations and writes the report; these types are
//! plain data so that whatever reads or reports on a synchronisation does
//! not reach into the actor.

use std::fmt;

use serde::Serialize;

use sha2::{Digest, Sha256};

use crate::{coords::Module, layout::Layout, stager::StagedSummary};

/// What started a synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `EVT_SYNC_SOFT` from the portal.
    Portal,
    /// `banalytics-box upgrade`.
    Local,
    /// No installed set yet.
    FirstRun,
    /// `software_update_type = "on-boot"`.
    OnBoot,
}

/// The phase of a synchronisation. `status` shows it as the kebab-case
/// word of [`SyncState::as_str`], which is also its serde form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// None has run since the component started.
    #[default]
    Idle,
    /// `GET_ENV_MOD_REQ` sent, waiting for the portal's target set.
    Requesting,
    /// Finding the target set's artifacts in the repository.
    Resolving,
    /// Fetching what is missing into the cache.
    Downloading,
    /// Building `modules-upgrade/`.
    Staging,
    /// A complete staged set waits for the restart that applies it.
    Staged,
    /// The installed set is the target set: nothing to do.
    UpToDate,
    /// A module could not be downloaded (the portal got `download_error`).
    Failed,
    /// The synchronisation stopped for another reason (the portal got
    /// `installation_cancelled`).
    Cancelled,
}

impl SyncState {
    /// The word `status` shows: `idle`, `requesting`, `resolving`,
    /// `downloading`, `staging`, `staged`, `up-to-date`, `failed` or
    /// `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Idle => "idle",
            SyncState::Requesting => "requesting",
            SyncState::Resolving => "resolving",
            SyncState::Downloading => "downloading",
            SyncState::Staging => "staging",
            SyncState::Staged => "staged",
            SyncState::UpToDate => "up-to-date",
            SyncState::Failed => "failed",
            SyncState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a synchronisation stands, as `status` shows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    /// The phase.
    pub state: SyncState,
    /// What started the last synchronisation.
    pub trigger: Option<Trigger>,
    /// When it started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// When it ended, ms since the epoch.
    pub finished_ms: Option<u64>,
    /// Its result or error, in words.
    pub result: Option<String>,
    /// Bytes present of the bytes to fetch.
    pub done_bytes: u64,
    /// Bytes to fetch, as far as declared.
    pub total_bytes: u64,
    /// Triggers skipped because a synchronisation was running.
    pub skipped_triggers: u64,
    /// The staged set, once staged.
    pub staged: Option<StagedSummary>,
    /// The home as it was when the report (re)started: read once, not at
    /// every progress update.
    #[serde(skip)]
    pub home: HomeFacts,
}

/// What the report says of the home besides the synchronisation.
#[derive(Debug, Clone, Default)]
pub struct HomeFacts {
    /// An environment UUID is configured.
    pub registered: bool,
    /// No installed set yet.
    pub first_run: bool,
}

impl HomeFacts {
    /// Reads both facts from the home.
    pub fn read(layout: &Layout) -> Self {
        HomeFacts {
            registered: layout.environment_uuid().ok().flatten().is_some(),
            first_run: layout.is_first_run(),
        }
    }
}

/// The id of a target set in logs and spans: the first 16 hex digits of
/// the SHA-256 of its `groupId:artifactId:version` keys, sorted, one per
/// line. The same set gets the same id in every synchronisation, whatever
/// order the portal lists it in.
pub fn target_set_id(modules: &[Module]) -> String {
    let mut keys: Vec<String> = modules.iter().map(|m| m.coords.to_string()).collect();
    keys.sort();
    let mut hasher = Sha256::new();
    for key in &keys {
        hasher.update(key.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(artifact: &str, version: &str) -> Module {
        serde_json::from_value(serde_json::json!({
            "groupId": "g", "artifactId": artifact, "version": version,
            "type": "component", "uploadTime": "2026-03-01T10:15:30",
        }))
        .unwrap()
    }

    #[test]
    fn a_target_set_id_names_the_set_not_its_order() {
        let (a, b) = (module("a", "1"), module("b", "1"));
        let id = target_set_id(&[a.clone(), b.clone()]);
        assert_eq!(id.len(), 16);
        assert_eq!(target_set_id(&[b, a.clone()]), id);
        assert_ne!(target_set_id(&[a.clone(), module("b", "2")]), id);
        assert_ne!(target_set_id(&[a]), id);
    }

    #[test]
    fn every_state_serializes_as_the_word_status_shows() {
        use SyncState::*;
        for state in [
            Idle,
            Requesting,
            Resolving,
            Downloading,
            Staging,
            Staged,
            UpToDate,
            Failed,
            Cancelled,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.to_string())
            );
        }
        assert_eq!(UpToDate.to_string(), "up-to-date");
        assert_eq!(SyncReport::default().state, Idle);
    }
}
