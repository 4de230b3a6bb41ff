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
//! ([`Offline::of`]). An operator's request with a number is
//! answered on the bus (`UpgradeAnswered`) once its outcome is known:
//! refused or joined at once, otherwise once the portal named the target
//! set (started, or the set staged already and what it waits for).

use std::{cell::RefCell, collections::HashSet, rc::Rc, time::Duration};

use actix::prelude::*;
use banalytics_home::{
    hold::{self, Hold},
    outbox,
};
use banalytics_messages::{
    portal::{
        CoreBuild, GetEnvModulesRequest, GetEnvModulesResponse, ModuleRef, ModuleStatus,
        ModuleStatusUpdate, PortalLinkChanged, PortalLinkQuery, PortalLinkState, SyncSoftware,
        UpgradeAnswered, UpgradeOutcome, UpgradeRequested,
    },
    status::UpgradeCenterDetails,
    upgrade::{
        DiscardStagedSet, RestartDeferred, StagedSetDiscarded, UpgradeCommitted, UpgradeRolledBack,
    },
};
use banalytics_sdk::{status::now_ms, Bus, FromBus, StatusBoard, SupervisedAddr};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, instrument, warn, Instrument, Span};

use crate::{
    blocking::off_thread,
    coords::{Coords, Module, BIN_SUFFIX, CORE_ARTIFACT_ID, CORE_GROUP_ID, MODEL_SUFFIX},
    downloader::{DownloadEvent, DownloadSet, Downloader, ResolveSet, DOWNLOAD_EVENT_QUEUE},
    error::{io_at, Failure, UpgradeError},
    inventory::{Inventory, PlanSync},
    layout::Layout,
    restarter::{Approve, ForgetWaitingSet, RestartToApply, Restarter, WaitingSet},
    schedule::ApplyPolicy,
    stager::{StageSet, Stager},
    sync::{home_facts, target_set_id, Offline, SyncReport, SyncState, Trigger, MAX_REQUESTS},
};

/// How long the portal has to answer `GET_ENV_MOD_REQ`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long Portal Integration has to say whether its link is up: it
/// answers from memory, so a longer silence means it is stuck, and an
/// operator's request is refused within a second.
pub const LINK_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a synchronisation that waits for the link asks again besides
/// hearing `PortalLinkChanged` (a Portal Integration started or restarted
/// later announces no change this one heard).
pub const LINK_RECHECK: Duration = Duration::from_secs(10);

/// The status message of `installed` for a synchronisation that found the
/// committed set already the target set.
pub const NOTHING_CHANGED: &str = "nothing changed: the installed set is the target set";

/// Start a synchronisation (unless one runs).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Synchronise(pub Trigger);

/// Everything a synchronisation uses.
#[derive(Clone)]
pub struct Peers {
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
pub struct PortalLink {
    peers: Peers,
    running: bool,
    awaiting: Option<oneshot::Sender<GetEnvModulesResponse>>,
    report: Rc<RefCell<SyncReport>>,
}

impl PortalLink {
    /// A fresh PortalLink: idle, nothing awaited.
    pub fn new(peers: Peers) -> Self {
        let home = home_facts(&peers.layout);
        let link = PortalLink {
            peers,
            running: false,
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
    fn skip(&mut self, trigger: Trigger) {
        self.report.borrow_mut().skipped_triggers += 1;
        info!(?trigger, "synchronisation already running; trigger skipped");
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
        // The span of the whole synchronisation; `run` records the target
        // set's id once the portal has named it.
        let span = info_span!(
            "synchronisation",
            ?trigger,
            target_set = tracing::field::Empty
        );
        span.in_scope(|| info!(?trigger, "synchronisation started"));
        let asker = Asker { request };
        let run = synchronise(self.peers.clone(), self.report.clone(), rx, asker)
            .instrument(span.clone());
        ctx.spawn(run.into_actor(self).map(move |outcome, act, _| {
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

impl Handler<FromBus<RestartDeferred>> for PortalLink {
    type Result = ResponseFuture<()>;

    /// The host waits for busy components before the restart that applies
    /// the set staged here: `status` and the portal (the staged modules'
    /// `downloaded` status) hear what for and until when.
    fn handle(
        &mut self,
        FromBus(deferred): FromBus<RestartDeferred>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let Some(staged) = self.report.borrow().staged.clone() else {
            return Box::pin(async {});
        };
        let until = jiff::Timestamp::from_millisecond(deferred.until_ms as i64)
            .map_or_else(|_| format!("{} ms", deferred.until_ms), |t| t.to_string());
        let message = format!(
            "the restart waits for busy components ({}), at most until {until}",
            deferred.holders.join(", ")
        );
        {
            let mut r = self.report.borrow_mut();
            r.waits_for = Some(message.clone());
            r.busy = Some((message.clone(), deferred.until_ms));
        }
        publish_report(&self.peers, &self.report.borrow());
        let peers = self.peers.clone();
        let span = info_span!("portal_link.restart_deferred");
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    for module in &staged.modules {
                        let coords = module.parse::<Coords>().ok();
                        let message = Some(message.clone());
                        status(
                            &peers,
                            &env,
                            coords.as_ref(),
                            ModuleStatus::Downloaded,
                            message,
                        )
                        .await;
                    }
                }
            }
            .instrument(span),
        )
    }
}

impl Handler<FromBus<UpgradeCommitted>> for PortalLink {
    type Result = ResponseFuture<()>;
    fn handle(
        &mut self,
        FromBus(committed): FromBus<UpgradeCommitted>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let peers = self.peers.clone();
        let span = info_span!("portal_link.upgrade_committed");
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    // The core may have changed with the set: the portal hears
                    // which core runs now. The host released `installed` to
                    // the outbox already, so the two may arrive in either
                    // order. The answer is not awaited (and ignored).
                    let (core_module, core_build) = core_module(&peers.layout);
                    peers
                        .bus
                        .publish(GetEnvModulesRequest {
                            environment_uuid: env.clone(),
                            core_module,
                            core_build,
                        })
                        .await;
                    let report = Report::new(&env, None, ModuleStatus::Installed, None);
                    verdict(&peers, report, committed.status_seq).await;
                }
            }
            .instrument(span),
        )
    }
}

impl Handler<FromBus<UpgradeRolledBack>> for PortalLink {
    type Result = ResponseFuture<()>;
    fn handle(
        &mut self,
        FromBus(rb): FromBus<UpgradeRolledBack>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let peers = self.peers.clone();
        let span = info_span!("portal_link.upgrade_rolled_back", reason = %rb.reason);
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    let report = Report::new(
                        &env,
                        None,
                        ModuleStatus::InstallationCancelled,
                        Some(rb.reason.clone()),
                    );
                    verdict(&peers, report, rb.status_seq).await;
                }
            }
            .instrument(span),
        )
    }
}

/// Reports a verdict of the host: the host kept it in the outbox already
/// under `seq` (it holds it across the commit or rollback, so a kill
/// cannot lose it), and it is only announced; without a `seq` it is
/// reported like any status.
async fn verdict(peers: &Peers, mut report: Report, seq: Option<u64>) {
    match seq {
        Some(seq) => {
            report.update.seq = Some(seq);
            report.announce(peers).await;
        }
        None => report.send(peers).await,
    }
}

/// The operator's request a synchronisation answers ([`UpgradeAnswered`]),
/// until it has answered it.
struct Asker {
    request: Option<u64>,
}

impl Asker {
    /// Answers the request, once; nothing without a request number.
    async fn answer(&mut self, peers: &Peers, outcome: UpgradeOutcome, message: String) {
        if let Some(request) = self.request.take() {
            info!(request, ?outcome, answer = %message, "upgrade request answered");
            peers
                .bus
                .publish(UpgradeAnswered {
                    request,
                    outcome,
                    message,
                })
                .await;
        }
    }
}

/// The portal link as Portal Integration reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    Down,
    /// Portal Integration did not answer in [`LINK_QUERY_TIMEOUT`].
    Silent,
    /// Nobody took the question: no Portal Integration runs.
    Absent,
}

impl LinkState {
    /// Why the portal cannot be asked, for the operator.
    fn reason(self) -> String {
        match self {
            LinkState::Up => "the portal link is up".to_owned(),
            LinkState::Down => {
                "Portal Integration is not connected to the portal (`status` shows its last error)"
                    .to_owned()
            }
            LinkState::Silent => format!(
                "Portal Integration did not say within {} ms whether it is connected to the portal",
                LINK_QUERY_TIMEOUT.as_millis()
            ),
            LinkState::Absent => {
                "no Portal Integration runs on this host (none is configured, or it is stopped), so the portal cannot be asked for the target set"
                    .to_owned()
            }
        }
    }
}

/// Asks Portal Integration whether the portal link is up.
async fn ask_link(bus: &Bus) -> LinkState {
    let mut states = bus.subscribe::<PortalLinkState>();
    if bus.publish(PortalLinkQuery {}).await == 0 {
        return LinkState::Absent;
    }
    match tokio::time::timeout(LINK_QUERY_TIMEOUT, states.recv()).await {
        Ok(Some(s)) if s.connected => LinkState::Up,
        Ok(Some(_)) => LinkState::Down,
        _ => LinkState::Silent,
    }
}

/// Returns once the portal link is up, showing `waiting-for-link` in
/// `status` meanwhile: Portal Integration is asked again when it says the
/// link changed, and every [`LINK_RECHECK`].
async fn wait_for_link(peers: &Peers, report: &Rc<RefCell<SyncReport>>) {
    let mut changes = peers.bus.subscribe::<PortalLinkChanged>();
    let mut waited = false;
    loop {
        let state = ask_link(&peers.bus).await;
        if state == LinkState::Up {
            if waited {
                info!("portal link up: the synchronisation asks for the target set");
                set_state(peers, report, SyncState::Requesting);
            }
            return;
        }
        if !waited {
            info!(
                reason = %state.reason(),
                "waiting for the portal link before asking for the target set"
            );
            set_state(peers, report, SyncState::WaitingForLink);
            waited = true;
        }
        let up = async {
            loop {
                match changes.recv().await {
                    Some(c) if c.connected => return,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout(LINK_RECHECK, up).await;
    }
}

fn publish_report(peers: &Peers, report: &SyncReport) {
    peers
        .board
        .set_details(&peers.component, UpgradeCenterDetails::value_of(report));
}

/// Sends a status to the portal, durably (see [`Report::send`]).
async fn status(
    peers: &Peers,
    env: &str,
    module: Option<&Coords>,
    status: ModuleStatus,
    message: Option<String>,
) {
    Report::new(env, module, status, message).send(peers).await;
}

/// A status for the portal.
struct Report {
    update: ModuleStatusUpdate,
}

impl Report {
    fn new(
        env: &str,
        module: Option<&Coords>,
        status: ModuleStatus,
        message: Option<String>,
    ) -> Self {
        let module = module.map(|c| ModuleRef {
            group_id: c.group_id().to_owned(),
            artifact_id: c.artifact_id().to_owned(),
            version: c.version().to_owned(),
        });
        Report {
            update: ModuleStatusUpdate {
                environment_uuid: env.to_owned(),
                module,
                status,
                status_message: message,
                seq: None,
                outbox_id: None,
            },
        }
    }

    /// Appends the status to the portal outbox on disk
    /// ([`banalytics_home::outbox`]) and announces it with its `seq`, so
    /// Portal Integration sends it from there, also after a restart or a
    /// kill. When the outbox refuses it (full, or the disk fails), it goes
    /// in memory only, and the log says so.
    async fn send(mut self, peers: &Peers) {
        let entry = serde_json::to_vec(&self.update).expect("plain data");
        let layout = peers.layout.clone();
        match off_thread(move || outbox::append(&layout, &entry)).await {
            Ok(seq) => self.update.seq = Some(seq),
            Err(e) => {
                warn!(error = %e, status = ?self.update.status, "status not kept on disk: it is sent from memory and lost if the box stops first")
            }
        }
        self.announce(peers).await;
    }

    /// Logs the status and publishes it for Portal Integration.
    async fn announce(self, peers: &Peers) {
        let u = &self.update;
        let coords = u
            .module
            .as_ref()
            .map(|m| format!("{}:{}:{}", m.group_id, m.artifact_id, m.version));
        // Logged once kept, with its number; the field is not `message`,
        // which would stand for the event's own message in the JSON log.
        info!(module = ?coords, status = ?u.status, status_message = u.status_message.as_deref().unwrap_or(""), seq = u.seq, "status to portal");
        peers.bus.publish(self.update).await;
    }
}

fn set_state(peers: &Peers, report: &Rc<RefCell<SyncReport>>, state: SyncState) {
    report.borrow_mut().state = state;
    publish_report(peers, &report.borrow());
}

/// Refuses an empty set, a module object that does not parse or has bad
/// coordinates, two modules with the same groupId and artifactId, and two
/// whose file or cache names collide, compared case-insensitively
/// (`a-b:c:1` and `a:b-c:1` are both `a-b-c-1.jar`).
pub fn validate_target(modules: &[serde_json::Value]) -> Result<Vec<Module>, UpgradeError> {
    if modules.is_empty() {
        return Err(UpgradeError::InvalidTarget {
            reason:
                "the target set is empty (a portal fault, not a request to uninstall everything)"
                    .into(),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(modules.len());
    for (i, v) in modules.iter().enumerate() {
        let m: Module =
            serde_json::from_value(v.clone()).map_err(|e| UpgradeError::InvalidTarget {
                reason: format!("module #{}: {e}", i + 1),
            })?;
        let ga = m.coords.module_key();
        if !seen.insert(ga.clone()) {
            return Err(UpgradeError::InvalidTarget {
                reason: format!("module {ga} appears more than once"),
            });
        }
        out.push(m);
    }
    let mut names = std::collections::HashMap::<String, String>::new();
    for m in &out {
        let c = &m.coords;
        let stem = format!("{}-{}-{}", c.group_id(), c.artifact_id(), c.version());
        for name in [
            crate::coords::file_name(m),
            format!("{stem}{BIN_SUFFIX}"),
            format!("{stem}{MODEL_SUFFIX}"),
        ] {
            if let Some(other) = names.insert(name.to_lowercase(), c.to_string()) {
                if other != c.to_string() {
                    return Err(UpgradeError::InvalidTarget {
                        reason: format!(
                            "modules {other} and {c} both need the file name {name} (names are compared ignoring case)"
                        ),
                    });
                }
            }
        }
    }
    Ok(out)
}

async fn synchronise(
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

async fn run(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    response: oneshot::Receiver<GetEnvModulesResponse>,
    asker: &mut Asker,
) -> Result<(), UpgradeError> {
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
    let target = validate_target(&response.modules)?;
    let set_id = target_set_id(&target);
    Span::current().record("target_set", set_id.as_str());
    info!(target_set = %set_id, modules = target.len(), "target set received");
    // The quarantine, before anything is resolved, planned or downloaded:
    // the set an automatic rollback took off is refused unless retried.
    let retry = report
        .borrow()
        .trigger
        .is_some_and(Trigger::lifts_quarantine);
    let (layout, set, span) = (peers.layout.clone(), target.clone(), Span::current());
    crate::blocking::off_thread(move || {
        span.in_scope(|| crate::sync::pass_quarantine(&layout, &set, retry))
    })
    .await?;
    // The set staged already and waiting for its restart is not staged
    // again; a portal synchronisation approves it when so configured.
    if peers.restarter.send(WaitingSet).await?.as_deref() == Some(set_id.as_str()) {
        let approved = report.borrow().trigger == Some(Trigger::Portal)
            && peers.apply.approval_from_portal
            && peers
                .restarter
                .send(Approve {
                    by: "portal".into(),
                    set_id: Some(set_id.clone()),
                })
                .await?;
        info!(
            approved,
            "target set is the staged set waiting for its restart"
        );
        let (result, waits_for) = if approved {
            (
                "the staged set was approved by the portal; restarting to apply it",
                None,
            )
        } else {
            (STAGED_ALREADY, peers.apply.waits_for())
        };
        staged_already(peers, report, asker, result, waits_for).await;
        return Ok(());
    }
    // The staged set whose restart the host defers for busy leases: the
    // restart comes once they are released (at most until then); staging
    // it again would change nothing.
    if let Some(why) = deferred_staged_set(peers, report, &target).await {
        info!("target set is the staged set whose restart waits for busy leases");
        staged_already(peers, report, asker, STAGED_ALREADY, Some(why)).await;
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
    let resolved = match peers
        .downloader
        .send(ResolveSet { modules: target })
        .await?
    {
        Ok(resolved) => resolved,
        Err(e) => {
            if let Failure::Download { module } = e.failure() {
                let coords = module.parse::<Coords>().ok();
                status(
                    peers,
                    env,
                    coords.as_ref(),
                    ModuleStatus::DownloadError,
                    Some(e.to_string()),
                )
                .await;
            }
            return Err(e);
        }
    };
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
    if plan.is_noop() {
        discard_staged_set(peers, "the portal's target set is the installed set").await?;
        set_state(peers, report, SyncState::UpToDate);
        report.borrow_mut().result = Some("the installed set is the target set".into());
        report_nothing_changed(peers, env).await;
        return Ok(());
    }
    set_state(peers, report, SyncState::Downloading);
    let (events_tx, mut events) = mpsc::channel(DOWNLOAD_EVENT_QUEUE);
    let coords_of = |key: &str| {
        plan.modules
            .iter()
            .find(|m| m.key() == key)
            .map(|m| m.resolved.module.coords.clone())
    };
    let download = peers.downloader.send(DownloadSet {
        plan: plan.clone(),
        events: events_tx,
    });
    tokio::pin!(download);
    let fetched = loop {
        tokio::select! {
            result = &mut download => break result,
            Some(event) = events.recv() => forward(peers, report, env, &coords_of, event).await,
        }
    };
    while let Ok(event) = events.try_recv() {
        forward(peers, report, env, &coords_of, event).await;
    }
    let fetched = fetched??;
    set_state(peers, report, SyncState::Staging);
    // The hold its policy asks for goes before the set is complete (or an
    // old one is removed): no restart for another reason applies it early.
    let keys = plan
        .modules
        .iter()
        .map(|m| m.resolved.module.coords.to_string())
        .collect();
    let held = match peers.apply.holds() {
        Some(why) => hold::write(&peers.layout, &Hold::new(keys, Some(set_id.clone()), why)),
        None => hold::release(&peers.layout),
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
    peers
        .restarter
        .tell(RestartToApply {
            reason,
            set_id: Some(set_id),
        })
        .await?;
    Ok(())
}

/// The result of a synchronisation whose target set is the staged set.
const STAGED_ALREADY: &str = "the target set is staged already";

/// Ends a synchronisation whose target set is staged already: `result`
/// and what the set `waits_for` in `status`, and the operator's answer.
async fn staged_already(
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
async fn deferred_staged_set(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    target: &[Module],
) -> Option<String> {
    let (why, until_ms) = report.borrow().busy.clone()?;
    if until_ms <= now_ms() {
        return None;
    }
    let staged = peers.layout.upgrade();
    let keys = off_thread(move || banalytics_home::installed::module_keys(&staged))
        .await
        .ok()
        .flatten()?;
    let target = target.iter().map(|m| m.coords.to_string()).collect();
    let same =
        banalytics_home::installed::key_set(keys) == banalytics_home::installed::key_set(target);
    same.then_some(why)
}

/// Drops a staged set (and its hold) when the portal's target set turned
/// out to be the installed set (the portal took the staged set back: a
/// rollback assigned while it waited for its window or an approval), or
/// the operator discarded it: it must never be applied. The Restarter
/// stops waiting first; the marker goes before the hold, so a kill in
/// between leaves a held set that the next start does not apply and the
/// next synchronisation drops. `Ok(false)`: nothing was staged.
async fn discard_staged_set(peers: &Peers, why: &str) -> Result<bool, UpgradeError> {
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
        hold::release(&layout).map_err(io_at(layout.state().join(hold::HOLD_FILE)))
    })
    .await?;
    warn!(why, "the staged set was discarded");
    Ok(true)
}

impl Handler<FromBus<DiscardStagedSet>> for PortalLink {
    type Result = ResponseFuture<()>;

    /// The operator's `discard`: refused while a synchronisation runs (it
    /// may be staging); otherwise the staged set goes, the portal hears
    /// `installation_cancelled` naming the discard, and the host hears
    /// [`StagedSetDiscarded`].
    fn handle(
        &mut self,
        FromBus(msg): FromBus<DiscardStagedSet>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let (peers, report, running) = (self.peers.clone(), self.report.clone(), self.running);
        let span = info_span!("portal_link.discard_staged_set", by = %msg.by);
        Box::pin(
            async move {
                let answer = if running {
                    let state = report.borrow().state;
                    StagedSetDiscarded {
                        discarded: false,
                        message: format!("a synchronisation is running (now {state}); nothing was discarded: discard once it ended"),
                    }
                } else {
                    discard_for_operator(&peers, &report, &msg).await
                };
                peers.bus.publish(answer).await;
            }
            .instrument(span),
        )
    }
}

/// [`discard_staged_set`] for the operator: the status for the portal
/// and the report `status` shows.
async fn discard_for_operator(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    msg: &DiscardStagedSet,
) -> StagedSetDiscarded {
    match discard_staged_set(peers, &msg.status_message()).await {
        Ok(false) => StagedSetDiscarded {
            discarded: false,
            message: "nothing to discard: no staged set".to_owned(),
        },
        Err(e) => StagedSetDiscarded {
            discarded: false,
            message: format!("the staged set could not be discarded: {e}"),
        },
        Ok(true) => {
            if let Ok(Some(env)) = peers.layout.environment_uuid() {
                let message = Some(msg.status_message());
                status(
                    peers,
                    &env,
                    None,
                    ModuleStatus::InstallationCancelled,
                    message,
                )
                .await;
            }
            {
                let mut r = report.borrow_mut();
                r.state = SyncState::Cancelled;
                r.result = Some(msg.status_message());
                r.staged = None;
                r.waits_for = None;
            }
            publish_report(peers, &report.borrow());
            StagedSetDiscarded {
                discarded: true,
                message: format!(
                    "{}; the portal was told (installation_cancelled)",
                    msg.status_message()
                ),
            }
        }
    }
}

/// The final status of a synchronisation that found the installed set
/// already the target set: `installed`, so that the portal knows the
/// assignment is done. Not while that set is on probation: its verdict
/// (`installed` or `installation_cancelled`) is still to come.
async fn report_nothing_changed(peers: &Peers, env: &str) {
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

async fn forward(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    coords_of: &impl Fn(&str) -> Option<Coords>,
    event: DownloadEvent,
) {
    match event {
        DownloadEvent::Started { module } => {
            follow(peers, report, &module, "downloading", None);
            status(
                peers,
                env,
                coords_of(&module).as_ref(),
                ModuleStatus::Downloading,
                None,
            )
            .await
        }
        DownloadEvent::Finished {
            module,
            transferred,
        } => {
            follow(peers, report, &module, "downloaded", Some(transferred));
            status(
                peers,
                env,
                coords_of(&module).as_ref(),
                ModuleStatus::Downloaded,
                peers.apply.waits_for(),
            )
            .await
        }
        DownloadEvent::Failed { module, reason } => {
            follow(peers, report, &module, "failed", None);
            status(
                peers,
                env,
                coords_of(&module).as_ref(),
                ModuleStatus::DownloadError,
                Some(reason),
            )
            .await
        }
        DownloadEvent::Progress { done, total } => {
            let mut r = report.borrow_mut();
            r.done_bytes = done;
            r.total_bytes = total;
            publish_report(peers, &r);
        }
    }
}

/// Shows where `module` is in the download (`status`, the console).
fn follow(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    module: &str,
    state: &str,
    transferred: Option<u64>,
) {
    let mut r = report.borrow_mut();
    r.module_state(module, state, transferred);
    publish_report(peers, &r);
}

/// The core's coordinates and build: those of the core that runs, as the
/// host recorded them at start ([`banalytics_home::running`]); this
/// crate's own version when nothing was recorded.
pub fn core_module(layout: &Layout) -> (ModuleRef, Option<CoreBuild>) {
    let running = banalytics_home::running::read(layout).ok().flatten();
    let version = running
        .as_ref()
        .map_or(env!("CARGO_PKG_VERSION"), |c| c.version.as_str());
    let module = ModuleRef {
        group_id: CORE_GROUP_ID.into(),
        artifact_id: CORE_ARTIFACT_ID.into(),
        version: version.into(),
    };
    let build = running.map(|c| CoreBuild {
        sha256: c.sha256,
        origin: c.origin.as_str().to_owned(),
        launcher_handshake: Some(c.launcher_handshake),
        fallback: c.fallback,
    });
    (module, build)
}
