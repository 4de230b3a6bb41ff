//! How a synchronisation ends when there is nothing to stage: the target
//! set is staged already, or it is the installed set.

use std::{cell::RefCell, rc::Rc};

use banalytics_home::{hold, TargetSetId};
use banalytics_messages::portal::{ModuleStatus, UpgradeOutcome};
use banalytics_sdk::status::now_ms;
use tracing::{info, warn};

use super::{
    report::{status, Asker},
    Peers, NOTHING_CHANGED,
};
use crate::{
    blocking::off_thread,
    coords::Module,
    error::{io_at, UpgradeError},
    restarter::ForgetWaitingSet,
    sync::{SyncReport, SyncState},
};

/// The result of a synchronisation whose target set is the staged set.
pub(super) const STAGED_ALREADY: &str = "the target set is staged already";

/// Ends a synchronisation whose target set is staged already: `result`
/// and what the set `waits_for` in `status`, and the operator's answer.
pub(super) async fn staged_already(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    asker: &mut Asker,
    result: &str,
    waits_for: Option<String>,
) {
    let message = match &waits_for {
        Some(why) => format!("{STAGED_ALREADY} and waits: {why}"),
        None => result.to_owned(),
    };
    {
        let mut r = report.borrow_mut();
        r.state = SyncState::Staged;
        r.result = Some(result.to_owned());
        r.waits_for = waits_for;
    }
    asker
        .answer(peers, UpgradeOutcome::StagedAlready, message)
        .await;
}

/// What the restart of the staged set waits for, when the host defers it
/// for busy leases now and `target` is that set; `None` otherwise.
pub(super) async fn deferred_staged_set(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    target: &[Module],
) -> Option<String> {
    let (why, until_ms) = report.borrow().busy.clone()?;
    if until_ms <= now_ms() {
        return None;
    }
    let staged = peers.layout.upgrade_dir();
    let staged = off_thread(move || banalytics_home::installed::set_modules(&staged))
        .await
        .ok()
        .flatten()?;
    let same = TargetSetId::of(&staged) == crate::sync::target_set_id(target);
    same.then_some(why)
}

/// Drops a staged set (and its hold) when the portal's target set turned
/// out to be the installed set (the portal took the staged set back: a
/// rollback assigned while it waited for its window or an approval), or
/// the operator discarded it: it must never be applied. The Restarter
/// stops waiting first; the marker goes before the hold, so a kill in
/// between leaves a held set that the next start does not apply and the
/// next synchronisation drops. `Ok(false)`: nothing was staged.
pub(super) async fn discard_staged_set(peers: &Peers, why: &str) -> Result<bool, UpgradeError> {
    let layout = peers.layout.clone();
    let staged =
        off_thread(move || layout.has_staged_set() || hold::of_staged(&layout).is_some()).await;
    if !staged {
        return Ok(false);
    }
    peers.restarter.send(ForgetWaitingSet).await?;
    let layout = peers.layout.clone();
    off_thread(move || {
        crate::stager::clear_staged(&layout)?;
        hold::lift(&layout).map_err(io_at(layout.state().join(hold::HOLD_FILE)))
    })
    .await?;
    warn!(why, "the staged set was discarded");
    Ok(true)
}

/// The final status of a synchronisation that found the installed set
/// already the target set: `installed`, so that the portal knows the
/// assignment is done. Not while that set is on probation: its verdict
/// (`installed` or `installation_cancelled`) is still to come.
pub(super) async fn report_nothing_changed(peers: &Peers, env: &str) {
    let layout = peers.layout.clone();
    match off_thread(move || banalytics_home::swap::probation(&layout)).await {
        Ok(None) => {
            status(
                peers,
                env,
                None,
                ModuleStatus::Installed,
                Some(NOTHING_CHANGED.to_owned()),
            )
            .await
        }
        Ok(Some(_)) => {
            info!("the target set is the set on probation: its verdict is the final status")
        }
        Err(e) => {
            warn!(error = %e, "cannot read the probation record: no final status for the portal")
        }
    }
}
