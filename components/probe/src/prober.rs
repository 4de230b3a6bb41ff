//! `Prober`, the probe's one actor.

use std::path::PathBuf;

use actix::prelude::*;
use banalytics_sdk::Bus;

use banalytics_messages::upgrade::{BusyLeaseReleased, BusyLeaseTaken};

use crate::{ProbeBusyDrill, ProbePing, ProbePong};

/// The name of the busy lease the drill takes.
pub const DRILL_LEASE: &str = "drill";

/// Answers pings addressed to its probe.
pub struct Prober {
    name: String,
    bus: Bus,
    generation: u64,
    drill: Option<PathBuf>,
}

impl Prober {
    /// A fresh instance; `generation` counts instances built so far.
    pub fn new(name: String, bus: Bus, generation: u64, drill: Option<PathBuf>) -> Self {
        Prober {
            name,
            bus,
            generation,
            drill,
        }
    }

    pub(crate) fn answer(&self, ping: &ProbePing) -> ResponseFuture<()> {
        if ping.to != self.name && ping.to != "*" {
            return Box::pin(async {});
        }
        if ping.panic {
            panic!(
                "failure drill: ping {} asked {} to panic",
                ping.seq, self.name
            );
        }
        let bus = self.bus.clone();
        let pong = ProbePong {
            from: self.name.clone(),
            seq: ping.seq,
            generation: self.generation,
        };
        let block = std::time::Duration::from_millis(ping.block_ms);
        Box::pin(async move {
            bus.publish(pong).await;
            if !block.is_zero() {
                std::thread::sleep(block);
            }
        })
    }
}

impl Prober {
    pub(crate) fn busy(&self, drill: &ProbeBusyDrill) -> ResponseFuture<()> {
        if drill.to != self.name && drill.to != "*" {
            return Box::pin(async {});
        }
        let (bus, holder, hold, seq, generation) = (
            self.bus.clone(),
            self.name.clone(),
            drill.hold,
            drill.seq,
            self.generation,
        );
        Box::pin(async move {
            tracing::info!(probe = %holder, hold, "busy drill");
            if hold {
                bus.publish(BusyLeaseTaken {
                    holder: holder.clone(),
                    lease: DRILL_LEASE.into(),
                    reason: "busy drill".into(),
                })
                .await;
            } else {
                bus.publish(BusyLeaseReleased {
                    holder: holder.clone(),
                    lease: DRILL_LEASE.into(),
                })
                .await;
            }
            bus.publish(ProbePong {
                from: holder,
                seq,
                generation,
            })
            .await;
        })
    }
}

impl Actor for Prober {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        if let Some(flag) = &self.drill {
            if flag.exists() {
                panic!("failure drill: {} exists", flag.display());
            }
        }
        tracing::debug!(probe = %self.name, generation = self.generation, "prober started");
    }
}
