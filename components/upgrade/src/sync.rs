//! A synchronisation as data: what started it, the phase it is in, and the
//! report `status` shows.
//!
//! PortalLink runs synchronisations and writes the report; these types are
//! plain data so that whatever reads or reports on a synchronisation does
//! not reach into the actor. So is the one decision a synchronisation takes
//! on the quarantine ([`quarantine_verdict`]): whether the portal's target
//! set may go on at all.

use std::fmt;

use banalytics_home::{
    quarantine::{self, Quarantine},
    TargetSetId,
};
use serde::Serialize;

use tracing::{info, warn};

use crate::{
    coords::{Coords, Module},
    error::{io_at, UpgradeError},
    layout::Layout,
    stager::StagedSummary,
};

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

    /// What a synchronisation with this trigger does when the portal link
    /// is down as it starts.
    pub fn when_offline(self) -> Offline {
        match self {
            // It came over the link.
            Trigger::Portal => Offline::Ask,
            Trigger::Local | Trigger::Retry => Offline::Refuse,
            Trigger::FirstRun | Trigger::OnBoot => Offline::Wait,
        }
    }
}

/// What a synchronisation does when the portal link is down as it starts
/// ([`Trigger::when_offline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offline {
    /// Asks anyway (the portal's own trigger: the link was up a moment ago).
    Ask,
    /// Refuses at once, and reports nothing to the portal: an operator's
    /// request, answered now rather than after the portal's time limit.
    Refuse,
    /// Waits for the link, then asks: the box's own synchronisations
    /// (first run, on-boot), which nobody waits for.
    Wait,
}

/// The phase of a synchronisation. `status` shows it as the kebab-case
/// word of [`SyncState::as_str`], which is also its serde form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many local request numbers a [`SyncReport`] keeps.
pub const MAX_REQUESTS: usize = 16;

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
    /// The staged set, once staged.
    pub staged: Option<StagedSummary>,
    /// What the staged set waits for before the restart that applies it
    /// (a maintenance window, an approval), and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
    /// The home as it was when the report (re)started: read once, not at
    /// every progress update.
    #[serde(skip)]
    pub home: HomeFacts,
    /// The host's last deferral of the restart that applies the staged
    /// set for busy leases: what for, in words, and until when (ms since
    /// the epoch). Kept from one synchronisation to the next: a trigger
    /// for the staged set while it lasts is answered that the set waits.
    #[serde(skip)]
    pub busy: Option<(String, u64)>,
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

/// The target set's identity ([`TargetSetId`]), as the portal names it:
/// in logs, spans, the hold, the Restarter and `status`.
pub fn target_set_id(modules: &[Module]) -> TargetSetId {
    TargetSetId::of(modules.iter().map(|m| &m.coords))
}

/// What the quarantine (`state/quarantined-set.json`) means for a target
/// set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineVerdict {
    /// No set is quarantined: go on.
    Free,
    /// The portal assigned a set other than the quarantined one: lift the
    /// quarantine and go on.
    Lift,
    /// The target set is the quarantined one and an operator asked for a
    /// retry: go on. The record stays until the set is active again (the
    /// host lifts it then), so a retry that ends before its set is staged
    /// leaves the set quarantined.
    Retry,
    /// The target set is the quarantined one: cancel the synchronisation
    /// with this message before anything is planned or downloaded.
    Refuse(String),
}

/// The quarantine decision for a synchronisation of `target`, with
/// `quarantine` the record (if any) and `retry` whether its trigger
/// [lifts the quarantine](Trigger::lifts_quarantine). Pure: the caller
/// reads the record and carries the verdict out ([`pass_quarantine`]).
pub fn quarantine_verdict(
    quarantine: Option<&Quarantine>,
    target: &[Module],
    retry: bool,
) -> QuarantineVerdict {
    let Some(q) = quarantine else {
        return QuarantineVerdict::Free;
    };
    let modules: Vec<Coords> = target.iter().map(|m| m.coords.clone()).collect();
    match (q.is_set(&modules), retry) {
        (false, _) => QuarantineVerdict::Lift,
        (true, true) => QuarantineVerdict::Retry,
        (true, false) => QuarantineVerdict::Refuse(q.refusal()),
    }
}

/// Reads the quarantine record of `layout` and carries out
/// [`quarantine_verdict`] for `target`: lifts the record for a different
/// set, and refuses the quarantined set unless `retry`
/// ([`UpgradeError::Quarantined`]). A record that cannot be read refuses
/// every set, naming the file, unless `retry`, which lifts it. Blocking
/// file work: run it off the actor's thread.
pub fn pass_quarantine(
    layout: &Layout,
    target: &[Module],
    retry: bool,
) -> Result<QuarantineVerdict, UpgradeError> {
    let file = layout.state().join(quarantine::QUARANTINE_FILE);
    let record = match quarantine::read(layout) {
        Ok(record) => record,
        Err(e) if retry => {
            warn!(path = %file.display(), error = %e, "unreadable quarantine record lifted by the retry");
            quarantine::clear(layout).map_err(io_at(&file))?;
            return Ok(QuarantineVerdict::Lift);
        }
        Err(e) => {
            return Err(UpgradeError::Io {
                path: file,
                source: std::io::Error::new(
                    e.kind(),
                    format!("the quarantine record cannot be read ({e}); `banalytics-box upgrade --retry` lifts it"),
                ),
            })
        }
    };
    let verdict = quarantine_verdict(record.as_ref(), target, retry);
    let quarantined = record
        .as_ref()
        .and_then(|q| q.set)
        .map(|id| id.to_string())
        .unwrap_or_default();
    match &verdict {
        QuarantineVerdict::Free => {}
        QuarantineVerdict::Lift => {
            quarantine::clear(layout).map_err(io_at(&file))?;
            info!(
                %quarantined,
                "the portal assigned a different set: quarantine lifted"
            );
        }
        QuarantineVerdict::Retry => {
            info!(%quarantined, "retry: the quarantined set is installed again")
        }
        QuarantineVerdict::Refuse(refusal) => {
            warn!(%quarantined, "the target set is quarantined: refused");
            return Err(UpgradeError::Quarantined {
                refusal: refusal.clone(),
            });
        }
    }
    Ok(verdict)
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
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(target_set_id(&[b, a.clone()]), id);
        assert_ne!(target_set_id(&[a.clone(), module("b", "2")]), id);
        assert_ne!(target_set_id(&[a]), id);
    }

    fn quarantined(modules: &[&Module]) -> Quarantine {
        let mut keys: Vec<Coords> = modules.iter().map(|m| m.coords.clone()).collect();
        keys.sort();
        Quarantine {
            set: None,
            modules: keys,
            reason: "component drill is ERROR: failure drill".into(),
            rolled_back_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn the_quarantined_set_is_refused_unless_retried_and_any_other_set_lifts_it() {
        let (a, b) = (module("a", "1"), module("b", "1"));
        let q = quarantined(&[&a, &b]);
        assert_eq!(
            quarantine_verdict(None, std::slice::from_ref(&a), false),
            QuarantineVerdict::Free
        );
        // The same set, in any order: refused, naming the rollback.
        let refused = quarantine_verdict(Some(&q), &[b.clone(), a.clone()], false);
        assert_eq!(refused, QuarantineVerdict::Refuse(q.refusal()));
        let QuarantineVerdict::Refuse(message) = refused else {
            unreachable!()
        };
        assert!(
            message.contains("rolled back") && message.contains("failure drill"),
            "{message}"
        );
        // Only an explicit retry lets it through.
        assert_eq!(
            quarantine_verdict(Some(&q), &[a.clone(), b.clone()], true),
            QuarantineVerdict::Retry
        );
        // A subset, a superset or another version is a different set.
        for other in [
            vec![a.clone()],
            vec![a.clone(), b.clone(), module("c", "1")],
            vec![a.clone(), module("b", "2")],
        ] {
            for retry in [false, true] {
                assert_eq!(
                    quarantine_verdict(Some(&q), &other, retry),
                    QuarantineVerdict::Lift
                );
            }
        }
    }

    #[test]
    fn passing_the_quarantine_refuses_keeps_lifts_and_reports_an_unreadable_record() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path());
        let file = layout.state().join(quarantine::QUARANTINE_FILE);
        let (a, b) = (module("a", "1"), module("b", "1"));
        let set = [a.clone(), b.clone()];
        assert_eq!(
            pass_quarantine(&layout, &set, false).unwrap(),
            QuarantineVerdict::Free
        );
        let q = quarantined(&[&a, &b]);
        quarantine::write(&layout, &q).unwrap();

        let refused = pass_quarantine(&layout, &set, false).unwrap_err();
        assert!(matches!(refused, UpgradeError::Quarantined { .. }));
        assert_eq!(refused.to_string(), q.refusal(), "the statusMessage");
        assert_eq!(refused.failure().state(), SyncState::Cancelled);
        assert_eq!(quarantine::read(&layout).unwrap(), Some(q.clone()));

        assert_eq!(
            pass_quarantine(&layout, &set, true).unwrap(),
            QuarantineVerdict::Retry
        );
        assert_eq!(
            quarantine::read(&layout).unwrap(),
            Some(q.clone()),
            "a retry keeps the record until its set is active"
        );

        assert_eq!(
            pass_quarantine(&layout, std::slice::from_ref(&a), false).unwrap(),
            QuarantineVerdict::Lift
        );
        assert!(!file.exists(), "a different set lifts the quarantine");

        std::fs::write(&file, b"{not json").unwrap();
        let unreadable = pass_quarantine(&layout, std::slice::from_ref(&a), false).unwrap_err();
        assert_eq!(unreadable.failure().state(), SyncState::Cancelled);
        let message = unreadable.to_string();
        assert!(
            message.contains("quarantined-set.json") && message.contains("--retry"),
            "{message}"
        );
        assert!(file.exists(), "an unreadable record is not taken for none");
        assert_eq!(
            pass_quarantine(&layout, &set, true).unwrap(),
            QuarantineVerdict::Lift
        );
        assert!(!file.exists());
    }

    #[test]
    fn only_the_retry_trigger_lifts_the_quarantine() {
        assert_eq!(Trigger::local(false), Trigger::Local);
        assert_eq!(Trigger::local(true), Trigger::Retry);
        for t in [
            Trigger::Portal,
            Trigger::Local,
            Trigger::FirstRun,
            Trigger::OnBoot,
        ] {
            assert!(!t.lifts_quarantine(), "{t:?}");
        }
        assert!(Trigger::Retry.lifts_quarantine());
        assert_eq!(Trigger::Portal.when_offline(), Offline::Ask);
        for operator in [Trigger::Local, Trigger::Retry] {
            assert_eq!(operator.when_offline(), Offline::Refuse);
        }
        for own in [Trigger::FirstRun, Trigger::OnBoot] {
            assert_eq!(own.when_offline(), Offline::Wait);
        }
        for t in [
            Trigger::Portal,
            Trigger::Local,
            Trigger::FirstRun,
            Trigger::OnBoot,
            Trigger::Retry,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }

    #[test]
    fn every_state_serializes_as_the_word_status_shows() {
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
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.to_string())
            );
        }
        assert_eq!(UpToDate.to_string(), "up-to-date");
        assert_eq!(WaitingForLink.to_string(), "waiting-for-link");
        assert_eq!(SyncReport::default().state, Idle);
    }
}
