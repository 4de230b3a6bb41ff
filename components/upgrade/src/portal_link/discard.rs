//! The operator's `discard` (CLI or console): the staged set dropped,
//! the portal told `installation_cancelled`, the host answered.

use std::{cell::RefCell, rc::Rc};

use actix::prelude::*;
use banalytics_messages::{
    portal::ModuleStatus,
    upgrade::{DiscardStagedSet, StagedSetDiscarded},
};
use banalytics_sdk::FromBus;
use tracing::{info_span, Instrument};

use super::{
    endings::discard_staged_set,
    report::{publish_report, status},
    Peers, PortalLink,
};
use crate::sync::{SyncReport, SyncState};

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
