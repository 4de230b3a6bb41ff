//! A synchronisation as data: what started it, the phase it is in, and the
//! report `status` shows.
//!
//! PortalLink runs synchronisations and writes the report; these types are
//! plain data so that whatever reads or reports on a synchronisation does
//! not reach into the actor. So is the one decision a synchronisation takes
//! on the quarantine ([`quarantine_verdict`]): whether the portal's target
//! set may go on at all.

use banalytics_home::{
    quarantine::{self, Quarantine},
    TargetSetId,
};
pub(crate) use banalytics_messages::status::{
    HomeFacts, SyncReport, SyncState, Trigger, MAX_REQUESTS,
};

use tracing::{info, warn};

use crate::{
    coords::{Coords, Module},
    error::{io_at, UpgradeError},
    layout::Layout,
};

/// What a synchronisation does when the portal link is down as it starts
/// ([`Offline::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offline {
    /// Asks anyway (the portal's own trigger: the link was up a moment ago).
    Ask,
    /// Refuses at once, and reports nothing to the portal: an operator's
    /// request, answered now rather than after the portal's time limit.
    Refuse,
    /// Waits for the link, then asks: the box's own synchronisations
    /// (first run, on-boot), which nobody waits for.
    Wait,
}

impl Offline {
    /// What a synchronisation started by `trigger` does when the portal
    /// link is down as it starts.
    pub(crate) fn of(trigger: Trigger) -> Offline {
        match trigger {
            // It came over the link.
            Trigger::Portal => Offline::Ask,
            Trigger::Local | Trigger::Retry => Offline::Refuse,
            Trigger::FirstRun | Trigger::OnBoot => Offline::Wait,
        }
    }
}

/// What the report says of the home, read from it.
pub(crate) fn home_facts(layout: &Layout) -> HomeFacts {
    HomeFacts {
        registered: layout.environment_uuid().ok().flatten().is_some(),
        first_run: layout.is_first_run(),
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
pub(crate) enum QuarantineVerdict {
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
pub(crate) fn quarantine_verdict(
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
/// every set, naming the file, unless `retry`, which lifts it; one of a
/// newer format ([`banalytics_home::format`]) refuses every set and stays,
/// and so does a swap journal or probation record of a newer format.
/// Blocking file work: run it off the actor's thread.
pub(crate) fn pass_quarantine(
    layout: &Layout,
    target: &[Module],
    retry: bool,
) -> Result<QuarantineVerdict, UpgradeError> {
    // The swap's records first: a set staged while one of them is of a
    // newer format would never be applied, and its restart asked again.
    if let Some(newer) = banalytics_home::swap::newer_record(layout) {
        return Err(UpgradeError::Io {
            path: newer.path.clone(),
            source: newer.into_io(),
        });
    }
    let file = layout.state().join(quarantine::QUARANTINE_FILE);
    let record = match quarantine::read(layout) {
        Ok(record) => record,
        Err(e) if banalytics_home::format::in_io(&e).is_some() => {
            return Err(UpgradeError::Io { path: file, source: e })
        }
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
        assert_eq!(Offline::of(Trigger::Portal), Offline::Ask);
        for operator in [Trigger::Local, Trigger::Retry] {
            assert_eq!(Offline::of(operator), Offline::Refuse);
        }
        for own in [Trigger::FirstRun, Trigger::OnBoot] {
            assert_eq!(Offline::of(own), Offline::Wait);
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
}
