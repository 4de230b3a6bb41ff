//! One synchronisation, top to bottom: ask the portal for the target set
//! and check it (`ask_for_target`, the quarantine, `staged_target`), then
//! resolve, plan, download and stage, each step a function below `run` in
//! that order, each done by its actor; the restart that applies the set is
//! the Restarter's, which waits for the apply policy.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use banalytics_home::{
    hold::{self, Hold},
    TargetSetId,
};
use banalytics_messages::portal::{
    GetEnvModulesRequest, GetEnvModulesResponse, ModuleStatus, UpgradeOutcome,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Span};

use super::{
    endings::{
        deferred_staged_set, discard_staged_set, report_nothing_changed, staged_already,
        STAGED_ALREADY,
    },
    link::{ask_link, wait_for_link, LinkState},
    report::{forward, publish_report, set_state, status, Asker},
    target::validate_target,
    Peers, RESPONSE_TIMEOUT,
};
use crate::{
    blocking::off_thread,
    cache::CachedFile,
    coords::Module,
    downloader::{DownloadSet, ResolveSet, DOWNLOAD_EVENT_QUEUE},
    error::{io_at, Failure, UpgradeError},
    inventory::PlanSync,
    plan::{ResolvedModule, SyncPlan},
    restarter::{Approve, RestartToApply, WaitingSet},
    stager::StageSet,
    sync::{target_set_id, Offline, SyncReport, SyncState, Trigger},
};

/// Runs one synchronisation for an operator, the portal or a start, and
/// reports how it ended: `installation_cancelled` for the portal when it
/// cancelled the set, the answer for the operator.
pub(super) async fn synchronise(
    peers: Peers,
    report: Rc<RefCell<SyncReport>>,
    response: oneshot::Receiver<GetEnvModulesResponse>,
    mut asker: Asker,
) -> Result<(), UpgradeError> {
    let env = match peers.layout.environment_uuid() {
        Ok(Some(env)) => Ok(env),
        Ok(None) => Err(UpgradeError::NotRegistered {
            file: peers
                .layout
                .home()
                .join("config/device-registration.properties"),
        }),
        Err(e) => Err(crate::error::io_at(peers.layout.home())(e)),
    };
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            let message = format!("the synchronisation stopped: {e}");
            asker.answer(&peers, UpgradeOutcome::Failed, message).await;
            return Err(e);
        }
    };
    let result = run(&peers, &report, &env, response, &mut asker).await;
    if let Err(e) = &result {
        match e.failure() {
            // Reported for its module as download_error already.
            Failure::Download { .. } => {}
            Failure::Refused => {
                warn!(error = %e, "the operator's synchronisation was refused");
            }
            Failure::Cancelled => {
                status(
                    &peers,
                    &env,
                    None,
                    ModuleStatus::InstallationCancelled,
                    Some(e.to_string()),
                )
                .await
            }
        }
        let (outcome, message) = match e.failure() {
            Failure::Refused => (UpgradeOutcome::Refused, e.to_string()),
            _ => (
                UpgradeOutcome::Failed,
                format!("the synchronisation stopped: {e}"),
            ),
        };
        asker.answer(&peers, outcome, message).await;
    }
    result
}

/// The steps of a synchronisation, in order.
async fn run(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    response: oneshot::Receiver<GetEnvModulesResponse>,
    asker: &mut Asker,
) -> Result<(), UpgradeError> {
    let target = ask_for_target(peers, report, env, response).await?;
    let set_id = target_set_id(&target);
    Span::current().record("target_set", tracing::field::display(set_id));
    info!(target_set = %set_id, modules = target.len(), "target set received");
    pass_quarantine(peers, report, &target).await?;
    if let Some((result, waits_for)) = staged_target(peers, report, &target, set_id).await? {
        staged_already(peers, report, asker, result, waits_for).await;
        return Ok(());
    }
    set_state(peers, report, SyncState::Resolving);
    asker
        .answer(
            peers,
            UpgradeOutcome::Started,
            format!(
                "synchronisation started: the portal named target set {set_id} ({} modules); `status` shows its progress",
                target.len()
            ),
        )
        .await;
    let resolved = resolve(peers, env, target).await?;
    let plan = plan(peers, env, resolved).await?;
    if plan.is_noop() {
        return up_to_date(peers, report, env).await;
    }
    set_state(peers, report, SyncState::Downloading);
    let fetched = download(peers, report, env, &plan).await?;
    set_state(peers, report, SyncState::Staging);
    let reason = stage(peers, report, plan, fetched, set_id).await?;
    // The wait for the apply policy (window, approval) is the Restarter's.
    peers
        .restarter
        .tell(RestartToApply {
            reason,
            set_id: Some(set_id),
        })
        .await?;
    Ok(())
}

/// Asks the portal for the target set once the trigger's rule for a link
/// that is down allows it (refuse, or wait), and validates the answer.
async fn ask_for_target(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    response: oneshot::Receiver<GetEnvModulesResponse>,
) -> Result<Vec<Module>, UpgradeError> {
    let trigger = report.borrow().trigger.unwrap_or(Trigger::Portal);
    match Offline::of(trigger) {
        Offline::Ask => {}
        Offline::Refuse => match ask_link(&peers.bus).await {
            LinkState::Up => {}
            down => {
                return Err(UpgradeError::PortalOffline {
                    reason: down.reason(),
                })
            }
        },
        Offline::Wait => wait_for_link(peers, report).await,
    }
    peers
        .bus
        .publish(GetEnvModulesRequest {
            environment_uuid: env.to_owned(),
            core_module: peers.core.0.clone(),
            core_build: peers.core.1.clone(),
        })
        .await;
    let response = tokio::time::timeout(RESPONSE_TIMEOUT, response)
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(UpgradeError::PortalTimeout {
            waited_s: RESPONSE_TIMEOUT.as_secs(),
        })?;
    validate_target(&response.modules)
}

/// The quarantine, before anything is resolved, planned or downloaded:
/// the set an automatic rollback took off is refused unless retried.
async fn pass_quarantine(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    target: &[Module],
) -> Result<(), UpgradeError> {
    let retry = report
        .borrow()
        .trigger
        .is_some_and(Trigger::lifts_quarantine);
    let (layout, set, span) = (peers.layout.clone(), target.to_vec(), Span::current());
    off_thread(move || span.in_scope(|| crate::sync::pass_quarantine(&layout, &set, retry)))
        .await?;
    Ok(())
}

/// Whether the target set is staged already, and then how the
/// synchronisation ends (its result, and what the set waits for): the set
/// waiting for its restart is not staged again (a portal synchronisation
/// approves it when so configured), nor the one whose restart the host
/// defers for busy leases (the restart comes once they are released).
async fn staged_target(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    target: &[Module],
    set_id: TargetSetId,
) -> Result<Option<(&'static str, Option<String>)>, UpgradeError> {
    if peers.restarter.send(WaitingSet).await? == Some(set_id) {
        let from_portal = report.borrow().trigger == Some(Trigger::Portal);
        let approved = from_portal
            && peers.apply.approval_from_portal
            && peers
                .restarter
                .send(Approve {
                    by: "portal".into(),
                    set_id: Some(set_id),
                })
                .await?;
        info!(
            approved,
            "target set is the staged set waiting for its restart"
        );
        return Ok(Some(if approved {
            (
                "the staged set was approved by the portal; restarting to apply it",
                None,
            )
        } else {
            (STAGED_ALREADY, peers.apply.waits_for())
        }));
    }
    if let Some(why) = deferred_staged_set(peers, report, target).await {
        info!("target set is the staged set whose restart waits for busy leases");
        return Ok(Some((STAGED_ALREADY, Some(why))));
    }
    Ok(None)
}

/// Resolves every module's artifacts (the Downloader); the module that
/// cannot be resolved is reported `download_error`.
async fn resolve(
    peers: &Peers,
    env: &str,
    target: Vec<Module>,
) -> Result<Vec<ResolvedModule>, UpgradeError> {
    let resolved = peers
        .downloader
        .send(ResolveSet { modules: target })
        .await?;
    if let Err(e) = &resolved {
        if let Failure::Download { module } = e.failure() {
            status(
                peers,
                env,
                Some(module),
                ModuleStatus::DownloadError,
                Some(e.to_string()),
            )
            .await;
        }
    }
    resolved
}

/// Plans the set against the installed ones (the Inventory); a module with
/// nothing to fetch is reported `downloaded` at once.
async fn plan(
    peers: &Peers,
    env: &str,
    resolved: Vec<ResolvedModule>,
) -> Result<SyncPlan, UpgradeError> {
    let plan = peers
        .inventory
        .send(PlanSync { target: resolved })
        .await??;
    for m in plan.modules.iter().filter(|m| m.fetches().next().is_none()) {
        status(
            peers,
            env,
            Some(&m.resolved.module.coords),
            ModuleStatus::Downloaded,
            peers.apply.waits_for(),
        )
        .await;
    }
    Ok(plan)
}

/// Ends a synchronisation whose target set is the installed set: a staged
/// set is discarded, and the portal hears `installed`.
async fn up_to_date(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
) -> Result<(), UpgradeError> {
    discard_staged_set(peers, "the portal's target set is the installed set").await?;
    set_state(peers, report, SyncState::UpToDate);
    report.borrow_mut().result = Some("the installed set is the target set".into());
    report_nothing_changed(peers, env).await;
    Ok(())
}

/// Downloads what the plan fetches (the Downloader), passing its events on
/// to the portal and `status` as they come.
async fn download(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    plan: &SyncPlan,
) -> Result<HashMap<String, CachedFile>, UpgradeError> {
    let (events_tx, mut events) = mpsc::channel(DOWNLOAD_EVENT_QUEUE);
    let download = peers.downloader.send(DownloadSet {
        plan: plan.clone(),
        events: events_tx,
    });
    tokio::pin!(download);
    let fetched = loop {
        tokio::select! {
            result = &mut download => break result,
            Some(event) = events.recv() => forward(peers, report, env, event).await,
        }
    };
    while let Ok(event) = events.try_recv() {
        forward(peers, report, env, event).await;
    }
    fetched?
}

/// Stages the set (the Stager), after the hold its apply policy asks for
/// (or the removal of an old one): no restart for another reason applies
/// it early. Returns the reason of the restart that applies it.
async fn stage(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    plan: SyncPlan,
    fetched: HashMap<String, CachedFile>,
    set_id: TargetSetId,
) -> Result<String, UpgradeError> {
    let modules = plan
        .modules
        .iter()
        .map(|m| m.resolved.module.coords.clone())
        .collect();
    let held = match peers.apply.holds() {
        Some(why) => hold::write(&peers.layout, &Hold::new(modules, Some(set_id), why)),
        None => hold::lift(&peers.layout),
    };
    held.map_err(io_at(peers.layout.state().join(hold::HOLD_FILE)))?;
    let summary = peers.stager.send(StageSet { plan, fetched }).await??;
    let reason = format!("staged {} modules", summary.modules.len());
    {
        let mut r = report.borrow_mut();
        r.state = SyncState::Staged;
        r.result = Some(format!(
            "{} modules staged ({} files, {} bytes, {} reused)",
            summary.modules.len(),
            summary.files,
            summary.bytes,
            summary.reused_files
        ));
        r.staged = Some(summary);
        r.waits_for = peers.apply.waits_for();
    }
    publish_report(peers, &report.borrow());
    Ok(reason)
}
