//! What a synchronisation tells: the statuses for the portal (durably,
//! through the outbox), the `status` details on the board, and the answer
//! to an operator's numbered request.

use std::{cell::RefCell, rc::Rc};

use banalytics_home::outbox;
use banalytics_messages::portal::{
    ModuleRef, ModuleStatus, ModuleStatusUpdate, UpgradeAnswered, UpgradeOutcome,
};
use tracing::{info, warn};

use crate::downloader::DownloadEvent;

use super::Peers;
use crate::{
    blocking::off_thread,
    coords::Coords,
    sync::{SyncReport, SyncState},
};

/// The operator's request a synchronisation answers ([`UpgradeAnswered`]),
/// until it has answered it.
pub(super) struct Asker {
    pub(super) request: Option<u64>,
}

impl Asker {
    /// Answers the request, once; nothing without a request number.
    pub(super) async fn answer(&mut self, peers: &Peers, outcome: UpgradeOutcome, message: String) {
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

/// Shows `report` in `status` (the component's details).
pub(super) fn publish_report(peers: &Peers, report: &SyncReport) {
    peers.board.set_details(
        &peers.component,
        banalytics_messages::status::UpgradeCenterDetails::value_of(report),
    );
}

/// Sends a status to the portal, durably (see [`Report::send`]).
pub(super) async fn status(
    peers: &Peers,
    env: &str,
    module: Option<&Coords>,
    status: ModuleStatus,
    message: Option<String>,
) {
    Report::new(env, module, status, message).send(peers).await;
}

/// A status for the portal.
pub(super) struct Report {
    pub(super) update: ModuleStatusUpdate,
}

impl Report {
    pub(super) fn new(
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
    pub(super) async fn send(mut self, peers: &Peers) {
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
    pub(super) async fn announce(self, peers: &Peers) {
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

/// Sets the synchronisation's phase and shows it.
pub(super) fn set_state(peers: &Peers, report: &Rc<RefCell<SyncReport>>, state: SyncState) {
    report.borrow_mut().state = state;
    publish_report(peers, &report.borrow());
}

/// Passes a download event on: a status for the portal, or the progress
/// in `status`.
pub(super) async fn forward(
    peers: &Peers,
    report: &Rc<RefCell<SyncReport>>,
    env: &str,
    event: DownloadEvent,
) {
    match event {
        DownloadEvent::Started { module } => {
            follow(peers, report, &module, "downloading", None);
            status(peers, env, Some(&module), ModuleStatus::Downloading, None).await
        }
        DownloadEvent::Finished {
            module,
            transferred,
        } => {
            follow(peers, report, &module, "downloaded", Some(transferred));
            status(
                peers,
                env,
                Some(&module),
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
                Some(&module),
                ModuleStatus::DownloadError,
                Some(reason),
            )
            .await
        }
        DownloadEvent::Delta(delta) => {
            let mut r = report.borrow_mut();
            r.deltas.push(delta);
            publish_report(peers, &r);
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
    module: &Coords,
    state: &str,
    transferred: Option<u64>,
) {
    let mut r = report.borrow_mut();
    r.module_state(module, state, transferred);
    publish_report(peers, &r);
}
