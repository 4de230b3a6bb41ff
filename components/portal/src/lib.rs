//! `portal-integration`: the box's one WebSocket to the Banalytics portal,
//! bridged to the host bus (contracts section 3).
//!
//! The link goes to
//! `{portal_url}/portal-integration?environmentUuid=…&environmentHash=…`
//! over rustls, trusting the webpki roots and, when configured, the CAs of
//! `ca_file`; certificates are always checked. Frames from the portal are
//! decoded by `type` and published on the bus as the
//! [`banalytics_messages::portal`] types; those types published on the bus for
//! the portal are sent as frames. Unknown types, unknown fields, malformed
//! JSON and frames over 4 MiB are logged and skipped; none of them closes
//! the link or fails an actor.
//!
//! Two actors, each under the component's restart policy:
//!
//! * [`link::Link`] (actor `link`): connect, keep alive (ping every
//!   `ping_timeout_s - 5` s, dead after `ping_timeout_s` without a pong or
//!   frame), reconnect with exponential backoff and jitter, decode and
//!   publish inbound frames, publish `PortalLinkChanged`.
//! * [`outbox::Outbox`] (actor `outbox`): sends while the link is up: the
//!   durable statuses from the home's portal outbox on disk
//!   (`state/portal-outbox/`, [`banalytics_home::outbox`]) in `seq` order,
//!   each removed only once the portal confirmed it (a ping's pong), then
//!   the bounded FIFO of other frames in memory.
//!
//! The environment UUID comes from `config/device-registration.properties`
//! ([`banalytics_home::registration`]); a box that is not registered connects with an empty
//! one, as the original does, and says so in its log. The environment's
//! secret from the same file goes as `Authorization: Bearer` on the upgrade
//! (never in the URL, never logged), and a secret the portal rotates over
//! the link is stored there and acknowledged ([`link`]).
//!
//! # Lifecycle
//!
//! * **Start** reads `ca_file` (a bad one puts the component in `ERROR`
//!   naming the file), then starts `link` and `outbox` and routes
//!   `GetEnvModulesRequest` and `ModuleStatusUpdate` to the outbox. It
//!   answers `PortalOutboxQuery` (how much the portal does not have yet)
//!   and `PortalLinkQuery` (whether the link is up now, as
//!   `PortalLinkState`).
//! * **Expected faults are not failures.** An unreachable portal, a refused
//!   certificate, a dead or closed link, a bad frame: each is logged, shown
//!   on the status board (`details`: `portal`, `connected`, `connects`,
//!   `last_error`) and answered by reconnecting or skipping. Only a panic
//!   fails an actor, and the supervisor restarts it with the component's
//!   `restart_on_failure`.
//! * **A restart of `link`** drops the connection and connects afresh,
//!   backoff reset. **A restart of `outbox`** loses nothing: the queue
//!   belongs to the component, and the frame in flight stays at its front
//!   until the link confirms it was written (so it may be sent twice, never
//!   lost); durable statuses stay on disk until the portal confirmed them.
//!   Bus messages published during a restart delay wait in the actor's
//!   mailbox.
//! * **Stop** stops `outbox` (frames still queued in memory are dropped and
//!   counted in a warning; durable statuses stay on disk and are sent after
//!   the next start, also after a SIGKILL), then `link`, which sends a
//!   WebSocket close and publishes `PortalLinkChanged { connected: false }`.
//! * **Bounds:** frames from the portal up to 4 MiB
//!   ([`frame::MAX_FRAME_BYTES`]; larger ones are read and skipped up to
//!   [`link::HARD_FRAME_LIMIT`], beyond which the link reconnects); frames
//!   to the portal up to `outbox_capacity` queued, then the publisher waits;
//!   durable statuses up to [`banalytics_home::outbox::MAX_ENTRIES`] on
//!   disk, read [`outbox::CONFIRM_EVERY`] at a time.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

use std::{path::PathBuf, sync::Arc};

use banalytics_messages::portal::{
    GetEnvModulesRequest, ModuleStatusUpdate, PortalLinkQuery, PortalLinkState, PortalOutboxQuery,
    PortalOutboxState,
};
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    BusMessage, ComponentError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

pub(crate) mod config;
pub(crate) mod frame;
pub(crate) mod link;
pub(crate) mod outbox;
pub(crate) mod tls;

pub use config::{PortalConfig, PortalUrl, Timing};

/// The component kind's name, the `kind` value in `box.toml`.
pub const KIND_NAME: &str = "portal-integration";

/// The component kind, for the host's registry.
pub fn kind() -> ComponentKind {
    ComponentKind::new(KIND_NAME, create)
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// `ca_file` cannot be read.
    #[error("cannot read ca_file {path}: {reason}")]
    CaFileRead {
        /// The file, resolved against the home.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// `ca_file` holds no PEM certificate.
    #[error("ca_file {path} holds no PEM certificate")]
    CaFileEmpty {
        /// The file, resolved against the home.
        path: PathBuf,
    },
    /// A certificate of `ca_file` is refused.
    #[error("ca_file {path}: certificate #{index} refused: {reason}")]
    CaCertificate {
        /// The file, resolved against the home.
        path: PathBuf,
        /// 0-based position in the file.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The TLS configuration cannot be built.
    #[error("TLS setup failed: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
    /// A connection attempt failed (TCP, TLS or WebSocket handshake).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// A connection attempt took too long.
    #[error("no WebSocket handshake with {url} within {millis} ms")]
    ConnectTimeout {
        /// The URL tried.
        url: String,
        /// The time allowed.
        millis: u64,
    },
}

fn create(init: &ComponentInit) -> Result<Box<dyn Component>, ComponentError> {
    let config: PortalConfig = init.config.parse()?;
    let timing = Timing::from_config(&config);
    Ok(Box::new(PortalIntegration::new(init, config, timing)))
}

/// Creates the component as [`kind`] does, but with `timing` instead of the
/// one derived from the configuration: for tests and embedders that need a
/// shorter ping timeout or backoff than the configuration accepts.
pub fn create_with_timing(
    init: &ComponentInit,
    timing: Timing,
) -> Result<Box<dyn Component>, ComponentError> {
    let config: PortalConfig = init.config.parse()?;
    Ok(Box::new(PortalIntegration::new(init, config, timing)))
}

struct PortalIntegration {
    name: String,
    home: PathBuf,
    config: PortalConfig,
    timing: Timing,
    queue: Option<Arc<outbox::OutboxQueue>>,
    durable: Option<Arc<outbox::DurableOutbox>>,
    answers: Vec<tokio::task::AbortHandle>,
}

impl PortalIntegration {
    fn new(init: &ComponentInit, config: PortalConfig, timing: Timing) -> Self {
        PortalIntegration {
            name: init.name.clone(),
            home: init.home.clone(),
            config,
            timing,
            queue: None,
            durable: None,
            answers: Vec::new(),
        }
    }
}

/// A test switch that exists only in a box built with the `failpoints`
/// feature (ARCHITECTURE.md, "Test switches"): blocks Portal Integration's
/// arbiter thread for `ms` milliseconds, as a deadlock would, so that the
/// tests see the host's watchdog heartbeat stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalBlockDrill {
    /// How long to block.
    pub ms: u64,
}

impl BusMessage for PortalBlockDrill {
    const TOPIC: &'static str = "portal-integration.block-drill";
}

impl Component for PortalIntegration {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let ca_file = self.config.ca_file.as_ref().map(|f| self.home.join(f));
        let tls = tls::client_config(ca_file.as_deref())
            .map_err(|e| ComponentError::Start(e.to_string()))?;
        self.config
            .check_transport()
            .map_err(|e| ComponentError::Start(e.to_string()))?;
        if !self.config.portal_url.is_tls() {
            warn!(component = %self.name, portal = %self.config.portal_url.base(), allow_insecure_http = self.config.allow_insecure_http, "portal link is not encrypted (ws://)");
        }
        let settings = Arc::new(link::LinkSettings {
            portal_url: self.config.portal_url.clone(),
            environment_hash: self.config.environment_hash.clone(),
            home: self.home.clone(),
            tls,
            timing: self.timing,
            board: ctx.board().clone(),
            component: self.name.clone(),
        });
        let up = Arc::new(watch::channel(false).0);
        let up_rx = up.subscribe();
        let link_up = up.subscribe();
        let bus = ctx.bus().clone();
        let link = ctx.supervise("link", move |_, _| {
            link::Link::new(settings.clone(), bus.clone(), up.clone())
        });
        let queue = Arc::new(outbox::OutboxQueue::new(self.config.outbox_capacity));
        self.queue = Some(queue.clone());
        let durable = Arc::new(outbox::DurableOutbox::new(&self.home));
        self.durable = Some(durable.clone());
        let (q, d) = (queue.clone(), durable.clone());
        let outbox = ctx.supervise("outbox", move |_, _| {
            outbox::Outbox::new(q.clone(), d.clone(), link.clone(), up_rx.clone())
        });
        ctx.route::<GetEnvModulesRequest, _>(&outbox);
        ctx.route::<ModuleStatusUpdate, _>(&outbox);
        // Answers "how much does the portal not have yet?" (the upgrade
        // center asks before it restarts the box, so that its statuses
        // leave first): the queue and the durable statuses not confirmed.
        let mut queries = ctx.bus().subscribe::<PortalOutboxQuery>();
        let (bus, q) = (ctx.bus().clone(), queue.clone());
        let answers = actix::spawn(async move {
            while queries.recv().await.is_some() {
                let durable = durable.count().await;
                bus.publish(PortalOutboxState {
                    queued: q.len() + durable,
                    durable,
                })
                .await;
            }
        });
        // Answers "is the link up?" (the upgrade center asks before an
        // operator's synchronisation, which is refused while it is down).
        let mut link_queries = ctx.bus().subscribe::<PortalLinkQuery>();
        let bus = ctx.bus().clone();
        let link_answers = actix::spawn(async move {
            while link_queries.recv().await.is_some() {
                let connected = *link_up.borrow();
                bus.publish(PortalLinkState { connected }).await;
            }
        });
        self.answers = vec![answers.abort_handle(), link_answers.abort_handle()];
        if banalytics_home::failpoint::ENABLED {
            // Test builds only: the watchdog's tests block this
            // component's arbiter thread, as a deadlock would.
            let mut drills = ctx.bus().subscribe::<PortalBlockDrill>();
            let drill = actix::spawn(async move {
                while let Some(drill) = drills.recv().await {
                    warn!(
                        ms = drill.ms,
                        "block drill: blocking this component's thread"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(drill.ms));
                }
            });
            self.answers.push(drill.abort_handle());
        }
        Ok(())
    }

    fn stopped(&mut self) {
        for answers in self.answers.drain(..) {
            answers.abort();
        }
        if let Some(queue) = self.queue.take() {
            let unsent = queue.len();
            if unsent > 0 {
                warn!(component = %self.name, unsent, "stopped with frames for the portal not sent");
            }
        }
        if self.durable.take().is_some() {
            // A listing of one folder: cheap enough for the stopping thread.
            let layout = banalytics_home::Layout::new(&self.home);
            match banalytics_home::outbox::count(&layout) {
                Ok(0) => {}
                Ok(waiting) => {
                    info!(component = %self.name, waiting, "stopped with durable statuses for the portal: they stay on disk for the next start")
                }
                Err(e) => {
                    warn!(component = %self.name, error = %e, "cannot count the durable statuses for the portal")
                }
            }
        }
    }
}
