//! `PortalLink`: the upgrade center's side of the portal conversation, and
//! the one place a synchronisation is started, run and reported.
//!
//! Triggers (`EVT_SYNC_SOFT`, the local `upgrade`, first run, on-boot)
//! arrive as messages; because an actor handles one message at a time, the
//! "one synchronisation at a time" rule is a field of this actor, not a
//! shared flag: a trigger while one runs is skipped and logged. The
//! synchronisation itself runs as a future of this actor
//! (request → validate → resolve → plan → download → stage), so triggers and
//! the portal's answer keep being handled meanwhile. Every status of
//! contracts section 3 goes to the portal from here.
//!
//! The portal link: before it asks the portal, a synchronisation asks
//! Portal Integration whether its link is up (`PortalLinkQuery`). An
//! operator's request is refused at once when it is not (nothing is
//! reported to the portal: the request was not the portal's); a first-run
//! or on-boot synchronisation waits for the link instead
//! ([`Offline::of`](crate::sync::Offline::of)). An operator's request with a number is
//! answered on the bus (`UpgradeAnswered`) once its outcome is known:
//! refused or joined at once, otherwise once the portal named the target
//! set (started, or the set staged already and what it waits for).

//!
//! The submodules: `flow` runs one synchronisation, top to bottom, and
//! `endings` ends one that has nothing to stage;
//! `link` asks Portal Integration about the portal link; `report` says
//! what happens (portal statuses, `status`, the operator's answer);
//! `target` checks the portal's target set; `verdicts` passes on the
//! host's verdicts after a restart.

mod discard;
mod endings;
mod flow;
mod link;
mod report;
mod target;
mod verdicts;

use std::{cell::RefCell, rc::Rc, time::Duration};

use actix::prelude::*;
use banalytics_home::layout::Layout;
use banalytics_messages::portal::{
    CoreBuild, GetEnvModulesResponse, ModuleRef, SyncSoftware, UpgradeOutcome, UpgradeRequested,
};
use banalytics_sdk::{status::now_ms, Bus, FromBus, StatusBoard, SupervisedAddr};
use tokio::sync::oneshot;
use tracing::{info, info_span, instrument, warn, Instrument};

pub(crate) use target::core_module;

use crate::{
    downloader::Downloader,
    inventory::Inventory,
    restarter::Restarter,
    schedule::ApplyPolicy,
    stager::Stager,
    sync::{home_facts, SyncReport, SyncState, Trigger, MAX_REQUESTS},
};
use report::{publish_report, Asker};

/// How long the portal has to answer `GET_ENV_MOD_REQ`.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long Portal Integration has to say whether its link is up: it
/// answers from memory, so a longer silence means it is stuck, and an
/// operator's request is refused within a second.
pub(crate) const LINK_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a synchronisation that waits for the link asks again besides
/// hearing `PortalLinkChanged` (a Portal Integration started or restarted
/// later announces no change this one heard).
pub(crate) const LINK_RECHECK: Duration = Duration::from_secs(10);

/// The status message of `installed` for a synchronisation that found the
/// committed set already the target set.
pub const NOTHING_CHANGED: &str = "nothing changed: the installed set is the target set";

/// Start a synchronisation (unless one runs).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Synchronise(pub Trigger);

/// Everything a synchronisation uses.
#[derive(Clone)]
pub(crate) struct Peers {
    /// The home.
    pub layout: Layout,
    /// The host bus.
    pub bus: Bus,
    /// Where `status` reads from.
    pub board: StatusBoard,
    /// This component's instance name.
    pub component: String,
    /// The Inventory actor.
    pub inventory: SupervisedAddr<Inventory>,
    /// The Downloader actor.
    pub downloader: SupervisedAddr<Downloader>,
    /// The Stager actor.
    pub stager: SupervisedAddr<Stager>,
    /// The Restarter actor.
    pub restarter: SupervisedAddr<Restarter>,
    /// The running core's coordinates and build, sent with
    /// `GET_ENV_MOD_REQ`.
    pub core: (ModuleRef, Option<CoreBuild>),
    /// When a staged set is applied, for the `downloaded` statuses.
    pub apply: ApplyPolicy,
}

/// The PortalLink actor.
pub(crate) struct PortalLink {
    peers: Peers,
    running: bool,
    /// An `EVT_SYNC_SOFT` came while a synchronisation ran: it runs again
    /// when that one ends (once, however many came), since the portal may
    /// have answered it before what the trigger announces.
    again: bool,
    awaiting: Option<oneshot::Sender<GetEnvModulesResponse>>,
    report: Rc<RefCell<SyncReport>>,
}

impl PortalLink {
    /// A fresh PortalLink: idle, nothing awaited.
    pub(crate) fn new(peers: Peers) -> Self {
        let home = home_facts(&peers.layout);
        let link = PortalLink {
            peers,
            running: false,
            again: false,
            awaiting: None,
            report: Rc::new(RefCell::new(SyncReport {
                state: SyncState::Idle,
                home,
                ..SyncReport::default()
            })),
        };
        publish_report(&link.peers, &link.report.borrow());
        link
    }
}

impl Actor for PortalLink {
    type Context = Context<Self>;
}

impl Handler<Synchronise> for PortalLink {
    type Result = ();

    #[instrument(name = "portal_link.synchronise", skip_all, fields(trigger = ?msg.0))]
    fn handle(&mut self, msg: Synchronise, ctx: &mut Context<Self>) {
        let Synchronise(trigger) = msg;
        if self.running {
            self.skip(trigger);
            return;
        }
        self.start(trigger, None, ctx);
    }
}

impl PortalLink {
    /// Counts and logs a trigger that came while a synchronisation runs.
    /// The portal's makes it run again once it ends: the portal sends
    /// `EVT_SYNC_SOFT` after a change of the box's target set, and the
    /// running synchronisation may have had its answer from before the
    /// change (frames of two kinds reach this actor in either order, so
    /// whether its answer is in does not tell).
    fn skip(&mut self, trigger: Trigger) {
        self.report.borrow_mut().skipped_triggers += 1;
        if trigger == Trigger::Portal && !self.again {
            self.again = true;
            info!(
                ?trigger,
                "synchronisation already running; another runs when it ends"
            );
        } else {
            info!(?trigger, "synchronisation already running; trigger skipped");
        }
        publish_report(&self.peers, &self.report.borrow());
    }

    /// Starts a synchronisation (none runs), answering the operator's
    /// `request`, if any, once its outcome is known.
    fn start(&mut self, trigger: Trigger, request: Option<u64>, ctx: &mut Context<Self>) {
        self.running = true;
        let (tx, rx) = oneshot::channel();
        self.awaiting = Some(tx);
        let (skipped_triggers, busy) = {
            let r = self.report.borrow();
            (r.skipped_triggers, r.busy.clone())
        };
        *self.report.borrow_mut() = SyncReport {
            state: SyncState::Requesting,
            trigger: Some(trigger),
            started_ms: Some(now_ms()),
            skipped_triggers,
            busy,
            requests: request.into_iter().collect(),
            started_by: request,
            home: home_facts(&self.peers.layout),
            ..SyncReport::default()
        };
        // Shown at once: until its first step `status` showed the last
        // synchronisation, finished, while this one already asked the portal.
        publish_report(&self.peers, &self.report.borrow());
        // The span of the whole synchronisation; `run` records the target
        // set's id once the portal has named it.
        let span = info_span!(
            "synchronisation",
            ?trigger,
            target_set = tracing::field::Empty
        );
        span.in_scope(|| info!(?trigger, "synchronisation started"));
        let asker = Asker { request };
        let run = flow::synchronise(self.peers.clone(), self.report.clone(), rx, asker)
            .instrument(span.clone());
        ctx.spawn(run.into_actor(self).map(move |outcome, act, ctx| {
            {
                let _span = span.enter();
                act.running = false;
                act.awaiting = None;
                let mut report = act.report.borrow_mut();
                report.finished_ms = Some(now_ms());
                match outcome {
                    Ok(()) => info!(state = %report.state, "synchronisation finished"),
                    Err(e) => {
                        warn!(error = %e, "synchronisation failed");
                        report.state = e.failure().state();
                        report.result = Some(e.to_string());
                    }
                }
                publish_report(&act.peers, &report);
            }
            if std::mem::take(&mut act.again) {
                act.start(Trigger::Portal, None, ctx);
            }
        }));
    }
}

impl Handler<FromBus<SyncSoftware>> for PortalLink {
    type Result = ();
    #[instrument(name = "portal_link.sync_software", skip_all)]
    fn handle(&mut self, _: FromBus<SyncSoftware>, ctx: &mut Context<Self>) {
        self.handle(Synchronise(Trigger::Portal), ctx);
    }
}

impl Handler<FromBus<UpgradeRequested>> for PortalLink {
    type Result = ();
    #[instrument(name = "portal_link.upgrade_requested", skip_all, fields(request = req.request))]
    fn handle(&mut self, FromBus(req): FromBus<UpgradeRequested>, ctx: &mut Context<Self>) {
        let trigger = Trigger::local(req.retry);
        if !self.running {
            // Refused, started: the synchronisation answers once it knows.
            self.start(trigger, req.request, ctx);
            return;
        }
        self.skip(trigger);
        let (running, state) = {
            let r = self.report.borrow();
            (r.trigger.unwrap_or(Trigger::Portal), r.state)
        };
        let (outcome, message) = if state == SyncState::WaitingForLink {
            warn!(
                waiting = running.as_str(),
                "upgrade refused: the portal link is down"
            );
            (
                UpgradeOutcome::Refused,
                format!(
                    "refused: the portal link is down; the {} synchronisation waits for it and runs once it is up; nothing else was started",
                    running.as_str()
                ),
            )
        } else {
            // Joined: the running synchronisation answers it, and `status`
            // lists the request in it.
            if let Some(request) = req.request {
                let mut report = self.report.borrow_mut();
                if report.requests.len() == MAX_REQUESTS {
                    report.requests.remove(0);
                }
                report.requests.push(request);
                publish_report(&self.peers, &report);
            }
            let mut message = format!(
                "joined the synchronisation that was running (trigger: {}, now {state}); `status` shows its progress",
                running.as_str()
            );
            if req.retry {
                message.push_str("; --retry does not apply to it: ask again once it ended");
            }
            (UpgradeOutcome::Joined, message)
        };
        let (peers, mut asker) = (
            self.peers.clone(),
            Asker {
                request: req.request,
            },
        );
        ctx.spawn(async move { asker.answer(&peers, outcome, message).await }.into_actor(self));
    }
}

impl Handler<FromBus<GetEnvModulesResponse>> for PortalLink {
    type Result = ();
    #[instrument(name = "portal_link.get_env_modules_response", skip_all, fields(modules = msg.0.modules.len()))]
    fn handle(&mut self, msg: FromBus<GetEnvModulesResponse>, _: &mut Context<Self>) {
        let FromBus(res) = msg;
        match self.awaiting.take() {
            Some(tx) => {
                let _ = tx.send((*res).clone());
            }
            None => info!("GET_ENV_MOD_RES arrived while none was awaited; ignored"),
        }
    }
}
