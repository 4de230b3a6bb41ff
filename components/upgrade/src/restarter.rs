//! `Restarter`: once a staged set is complete, asks the host to restart the
//! box so that `run` applies it.
//!
//! The statuses of the synchronisation were handed to Portal Integration
//! before this runs (a bus publish returns once the subscriber has the
//! message); the restart waits `restart_delay_ms` (bounded) so that the
//! link can put them on the wire before the host stops it.

use std::time::Duration;

use actix::prelude::*;
use banalytics_sdk::{
    upgrade::{RestartMode, RestartRequested},
    Bus,
};
use tracing::info;

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
    delay: Duration,
}

impl Restarter {
    /// A restarter that restarts with `mode` after `delay`.
    pub fn new(bus: Bus, mode: RestartMode, command: Option<String>, delay: Duration) -> Self {
        Restarter {
            bus,
            mode,
            command,
            delay,
        }
    }
}

impl Actor for Restarter {
    type Context = Context<Self>;
}

impl Handler<RestartToApply> for Restarter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RestartToApply, _: &mut Context<Self>) -> Self::Result {
        let (bus, mode, command, delay) = (
            self.bus.clone(),
            self.mode,
            self.command.clone(),
            self.delay,
        );
        Box::pin(async move {
            info!(?mode, delay_ms = delay.as_millis() as u64, reason = %msg.reason, "restarting to apply the staged set");
            tokio::time::sleep(delay).await;
            bus.publish(RestartRequested {
                mode,
                command,
                reason: msg.reason,
            })
            .await;
        })
    }
}
