//! `Prober`, the probe's one actor.

use std::path::PathBuf;

use actix::prelude::*;
use banalytics_sdk::Bus;

use crate::{ProbePing, ProbePong};

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
        Box::pin(async move {
            bus.publish(pong).await;
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
