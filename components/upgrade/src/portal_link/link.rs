//! The portal link as Portal Integration reports it: whether a
//! synchronisation may ask the portal now, and waiting until it may.

use std::{cell::RefCell, rc::Rc};

use banalytics_messages::portal::{PortalLinkChanged, PortalLinkQuery, PortalLinkState};
use banalytics_sdk::Bus;
use tracing::info;

use super::{report::set_state, Peers, LINK_QUERY_TIMEOUT, LINK_RECHECK};
use crate::sync::{SyncReport, SyncState};

/// The portal link as Portal Integration reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    Up,
    Down,
    /// Portal Integration did not answer in [`LINK_QUERY_TIMEOUT`].
    Silent,
    /// Nobody took the question: no Portal Integration runs.
    Absent,
}

impl LinkState {
    /// Why the portal cannot be asked, for the operator.
    pub(super) fn reason(self) -> String {
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
pub(super) async fn ask_link(bus: &Bus) -> LinkState {
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
pub(super) async fn wait_for_link(peers: &Peers, report: &Rc<RefCell<SyncReport>>) {
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
