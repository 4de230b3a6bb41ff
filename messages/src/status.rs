//! What `status` shows of the upgrade center: its synchronisation as data
//! ([`SyncReport`], with its [`Trigger`] and phase [`SyncState`]) inside
//! the component's details ([`UpgradeCenterDetails`]). The upgrade center
//! writes them on the status board; the CLI (`status`, `upgrade --wait`)
//! reads the same types back from the control socket's JSON, so a field
//! has one name on both sides.

use std::fmt;

use banalytics_home::coords::Coords;
use serde::{Deserialize, Serialize};

/// What started a synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `banalytics-box upgrade --retry`: like [`Trigger::Local`], and the
    /// quarantined set is let through for this synchronisation.
    Retry,
}

impl Trigger {
    /// The trigger of the local `upgrade`, with or without `--retry`.
    pub fn local(retry: bool) -> Trigger {
        if retry {
            Trigger::Retry
        } else {
            Trigger::Local
        }
    }

    /// Whether a synchronisation with this trigger may install the
    /// quarantined set: only an operator's explicit retry; no mode does it
    /// by itself.
    pub fn lifts_quarantine(self) -> bool {
        self == Trigger::Retry
    }

    /// The word `status` shows: `portal`, `local`, `first-run`, `on-boot`
    /// or `retry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Portal => "portal",
            Trigger::Local => "local",
            Trigger::FirstRun => "first-run",
            Trigger::OnBoot => "on-boot",
            Trigger::Retry => "retry",
        }
    }
}

/// The phase of a synchronisation. `status` shows it as the kebab-case
/// word of [`SyncState::as_str`], which is also its serde form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// None has run since the component started.
    #[default]
    Idle,
    /// A first-run or on-boot synchronisation waits for the portal link
    /// to come up before it asks for the target set.
    WaitingForLink,
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
    /// An operator's request was refused before the portal was asked (its
    /// link is down); the portal got nothing.
    Refused,
}

impl SyncState {
    /// The word `status` shows: `idle`, `waiting-for-link`, `requesting`,
    /// `resolving`, `downloading`, `staging`, `staged`, `up-to-date`,
    /// `failed`, `cancelled` or `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Idle => "idle",
            SyncState::WaitingForLink => "waiting-for-link",
            SyncState::Requesting => "requesting",
            SyncState::Resolving => "resolving",
            SyncState::Downloading => "downloading",
            SyncState::Staging => "staging",
            SyncState::Staged => "staged",
            SyncState::UpToDate => "up-to-date",
            SyncState::Failed => "failed",
            SyncState::Cancelled => "cancelled",
            SyncState::Refused => "refused",
        }
    }
}

impl SyncState {
    /// Whether a synchronisation that ended in this phase did what was
    /// asked: its set is staged, or nothing was to be done.
    pub fn ended_well(self) -> bool {
        matches!(self, SyncState::Staged | SyncState::UpToDate)
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many local request numbers a [`SyncReport`] keeps.
pub const MAX_REQUESTS: usize = 16;

/// Where a synchronisation stands, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
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
    /// The numbers of the local requests (`upgrade --wait`) this
    /// synchronisation answers: the one that started it, then those that
    /// came while it ran (at most [`MAX_REQUESTS`], the newest kept).
    /// Always shown, also empty: its presence tells an asker that the host
    /// knows request numbers.
    #[serde(default)]
    pub requests: Vec<u64>,
    /// The number of the local request that started it, if it had one;
    /// the others in `requests` came while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<u64>,
    /// Each module the download started, in the order it started, with
    /// where it is: `downloading`, `downloaded` (with the bytes that came
    /// over the network) or `failed` (at most [`MAX_MODULES_SHOWN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<ModuleProgress>,
    /// The patches offered for this synchronisation's native artifacts:
    /// which made their file, and why the others were not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaReport>,
    /// The staged set, once staged.
    pub staged: Option<StagedSummary>,
    /// What the staged set waits for before the restart that applies it
    /// (a maintenance window, an approval), and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
    /// The home as it was when the report (re)started: read once, not at
    /// every progress update. The upgrade center's bookkeeping, shown
    /// beside the report ([`UpgradeCenterDetails`]), not in it.
    #[serde(skip)]
    pub home: HomeFacts,
    /// The host's last deferral of the restart that applies the staged
    /// set for busy leases: what for, in words, and until when (ms since
    /// the epoch). Kept from one synchronisation to the next: a trigger
    /// for the staged set while it lasts is answered that the set waits.
    #[serde(skip)]
    pub busy: Option<(String, u64)>,
}

/// What became of an offer, for the log, `status` and the bench.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaReport {
    /// The target module (by module key on the wire).
    #[serde(with = "banalytics_home::coords::key")]
    pub module: Coords,
    /// The installed version the patch starts from.
    pub from: String,
    /// Whether the file was made from the patch.
    pub patched: bool,
    /// The patch's size, when it was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_bytes: Option<u64>,
    /// Milliseconds applying it took (reading, decoding, hashing, fsync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_ms: Option<u64>,
    /// Why the whole file was fetched instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Modules a [`SyncReport`] follows one by one; a set has far fewer.
pub const MAX_MODULES_SHOWN: usize = 256;

/// One module of a download, as `status` and the console show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleProgress {
    /// The module (by module key on the wire).
    #[serde(with = "banalytics_home::coords::key")]
    pub module: Coords,
    /// `downloading`, `downloaded` or `failed`.
    pub state: String,
    /// Bytes that came over the network for it, once downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred: Option<u64>,
}

impl SyncReport {
    /// Records that `module` is now in `state`.
    pub fn module_state(&mut self, module: &Coords, state: &str, transferred: Option<u64>) {
        if let Some(m) = self.modules.iter_mut().find(|m| &m.module == module) {
            m.state = state.to_owned();
            m.transferred = transferred;
        } else if self.modules.len() < MAX_MODULES_SHOWN {
            self.modules.push(ModuleProgress {
                module: module.clone(),
                state: state.to_owned(),
                transferred,
            });
        }
    }
}

/// What the report says of the home besides the synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeFacts {
    /// An environment UUID is configured.
    pub registered: bool,
    /// No installed set yet.
    pub first_run: bool,
}

/// What was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSummary {
    /// Every staged module, sorted.
    #[serde(with = "banalytics_home::coords::keys")]
    pub modules: Vec<banalytics_home::coords::Coords>,
    /// Files in the staged set (modules and models).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files hard-linked (or copied) from the active set.
    pub reused_files: usize,
}

/// The upgrade center's `details` on the status board: the home's facts
/// and the last synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpgradeCenterDetails {
    /// An environment UUID is configured.
    pub registered: bool,
    /// No installed set yet.
    pub first_run: bool,
    /// The last synchronisation, or the one running.
    pub sync: SyncReport,
}

impl UpgradeCenterDetails {
    /// The details of `report`, with the facts it read of the home, as the
    /// upgrade center writes them on the status board.
    pub fn value_of(report: &SyncReport) -> serde_json::Value {
        serde_json::to_value(UpgradeCenterDetails {
            registered: report.home.registered,
            first_run: report.home.first_run,
            sync: report.clone(),
        })
        .expect("plain data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_its_key_in_the_json_of_status() {
        let p = ModuleProgress {
            module: "g:a:1".parse().unwrap(),
            state: "downloaded".into(),
            transferred: None,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"module":"g:a:1","state":"downloaded"}"#);
        assert_eq!(serde_json::from_str::<ModuleProgress>(&json).unwrap(), p);
    }

    #[test]
    fn a_report_follows_each_module_of_the_download_once() {
        let mut r = SyncReport::default();
        let (a, b) = ("g:a:1".parse().unwrap(), "g:b:1".parse().unwrap());
        r.module_state(&a, "downloading", None);
        r.module_state(&b, "downloading", None);
        r.module_state(&a, "downloaded", Some(42));
        let shown: Vec<_> = r
            .modules
            .iter()
            .map(|m| (m.module.to_string(), m.state.as_str(), m.transferred))
            .collect();
        assert_eq!(
            shown,
            [
                ("g:a:1".to_owned(), "downloaded", Some(42)),
                ("g:b:1".to_owned(), "downloading", None)
            ]
        );
    }

    #[test]
    fn the_words_of_states_and_triggers_are_their_serde_forms() {
        use SyncState::*;
        for state in [
            Idle,
            WaitingForLink,
            Requesting,
            Resolving,
            Downloading,
            Staging,
            Staged,
            UpToDate,
            Failed,
            Cancelled,
            Refused,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
            assert_eq!(serde_json::from_str::<SyncState>(&json).unwrap(), state);
        }
        assert_eq!(UpToDate.to_string(), "up-to-date");
        assert_eq!(WaitingForLink.to_string(), "waiting-for-link");
        assert_eq!(SyncReport::default().state, Idle);
        for trigger in [Trigger::Portal, Trigger::FirstRun, Trigger::Retry] {
            let json = serde_json::to_string(&trigger).unwrap();
            assert_eq!(json, format!("\"{}\"", trigger.as_str()));
        }
    }
}
