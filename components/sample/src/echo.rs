//! `Echo`, the sample's one actor.

use actix::prelude::*;
use banalytics_sdk::Bus;

use crate::{SampleReply, SampleRequest};

/// Answers requests, or panics when asked to.
pub struct Echo {
    from: String,
    bus: Bus,
    generation: u64,
}

impl Echo {
    /// A fresh instance; `generation` counts instances built so far.
    pub fn new(from: String, bus: Bus, generation: u64) -> Self {
        Echo {
            from,
            bus,
            generation,
        }
    }

    pub(crate) fn answer(&self, req: &SampleRequest) -> ResponseFuture<()> {
        if req.panic {
            panic!("sample drill: request {} asked echo to panic", req.seq);
        }
        let bus = self.bus.clone();
        let reply = SampleReply {
            seq: req.seq,
            from: self.from.clone(),
            generation: self.generation,
        };
        Box::pin(async move {
            bus.publish(reply).await;
        })
    }
}

impl Actor for Echo {
    type Context = Context<Self>;
}
