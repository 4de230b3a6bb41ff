//! `Restarter`: once a staged set is complete, asks the host to restart the
//! box so that `run` applies it.
//!
//! The statuses of the synchronisation were appended to the portal outbox
//! on disk and announced to Portal Integration before this runs (a bus
//! publish returns once the subscriber has the message). Before asking for
//! the restart, the Restarter asks Portal Integration how many frames the
//! portal does not have yet, in memory and on disk ([`PortalOutboxQuery`]),
//! until none, for at most `status_flush_timeout_ms`: the host stops the
//! link when it restarts. A durable status not confirmed by then is sent
//! after the restart; waiting here only makes the portal see it sooner.

use std::time::Duration;

use actix::prelude::*;
use banalytics_messages::{
    portal::{PortalOutboxQuery, PortalOutboxState},
    upgrade::{RestartMode, RestartRequested},
};
use banalytics_sdk::Bus;
use tracing::{info, info_span, Instrument};

/// Restart the box to apply the staged set.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestartToApply {
    /// Why, for the log.
    pub reason: String,
}

/// The Restarter actor.
pub struct Restarter {
    bus: Bus,
    mode: RestartMode,
    command: Option<String>,
    flush_timeout: Duration,
}

/// How often the outbox is asked while statuses are still queued.
pub const FLUSH_POLL: Duration = Duration::from_millis(50);

impl Restarter {
    /// A restarter that restarts with `mode`, waiting at most
    /// `flush_timeout` for the queued statuses to leave.
    pub fn new(
        bus: Bus,
        mode: RestartMode,
        command: Option<String>,
        flush_timeout: Duration,
    ) -> Self {
        Restarter {
            bus,
            mode,
            command,
            flush_timeout,
        }
    }
}

impl Actor for Restarter {
    type Context = Context<Self>;
}

impl Handler<RestartToApply> for Restarter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RestartToApply, _: &mut Context<Self>) -> Self::Result {
        let (bus, mode, command, timeout) = (
            self.bus.clone(),
            self.mode,
            self.command.clone(),
            self.flush_timeout,
        );
        let span = info_span!("restarter.restart_to_apply", ?mode, reason = %msg.reason);
        Box::pin(
            async move {
                let flushed = tokio::time::timeout(timeout, flush(&bus)).await.is_ok();
                info!(?mode, flushed, reason = %msg.reason, "restarting to apply the staged set");
                bus.publish(RestartRequested {
                    mode,
                    command,
                    reason: msg.reason,
                })
                .await;
            }
            .instrument(span),
        )
    }
}

/// Returns once Portal Integration reports an empty outbox (at once when
/// there is no Portal Integration on the bus).
async fn flush(bus: &Bus) {
    let mut states = bus.subscribe::<PortalOutboxState>();
    loop {
        if bus.publish(PortalOutboxQuery {}).await == 0 {
            return;
        }
        match tokio::time::timeout(FLUSH_POLL, states.recv()).await {
            Ok(Some(state)) if state.queued == 0 => return,
            Ok(None) => return,
            _ => tokio::time::sleep(FLUSH_POLL).await,
        }
    }
}
