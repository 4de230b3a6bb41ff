//! `probe`: a small diagnostic component built into the host.
//!
//! It answers [`ProbePing`] with [`ProbePong`] over the bus, which lets an
//! operator (and the tests) check that the host routes messages and that a
//! component runs. It also carries a failure drill: while the file named by
//! `fail_while_file` exists, its actor panics as it starts, so restart
//! policies and `banalytics-box restart` can be exercised on a real box; a
//! ping with `panic = true` makes the actor panic in its handler, and one
//! with `block_ms` blocks its thread after answering. The busy
//! drill ([`ProbeBusyDrill`]) takes or releases a busy lease over the bus,
//! as a camera recording an alarm clip would, to defer the host's restarts.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

use std::path::PathBuf;

use actix::prelude::*;
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    Bus, BusMessage, ComponentError, FromBus,
};
use serde::{Deserialize, Serialize};

pub mod prober;

/// The component kind's name, the `kind` value in `box.toml`.
pub const KIND_NAME: &str = "probe";

/// The component kind, for the host's registry.
pub fn kind() -> ComponentKind {
    ComponentKind::new(KIND_NAME, create)
}

/// A ping for the probe named `to` (or every probe, with `"*"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbePing {
    /// The probe instance name, or `"*"`.
    pub to: String,
    /// Echoed in the pong.
    pub seq: u64,
    /// Panic in the handler instead of answering (failure drill).
    #[serde(default)]
    pub panic: bool,
    /// Block the probe's thread (its arbiter, shared with its driver) for
    /// this many milliseconds right after answering, as a deadlock would
    /// (watchdog drill: a wedged component that is not essential to
    /// managing the box).
    #[serde(default)]
    pub block_ms: u64,
}

impl BusMessage for ProbePing {
    const TOPIC: &'static str = "probe.ping";
}

/// The answer to a [`ProbePing`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbePong {
    /// The answering probe's instance name.
    pub from: String,
    /// The ping's `seq`.
    pub seq: u64,
    /// How many actor instances this probe has built (1 before any restart).
    pub generation: u64,
}

impl BusMessage for ProbePong {
    const TOPIC: &'static str = "probe.pong";
}

/// Busy drill for the probe named `to` (or every probe, with `"*"`): take
/// (`hold = true`) or release its busy lease `drill`; answered with a
/// [`ProbePong`] of the same `seq` once the lease message is on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeBusyDrill {
    /// The probe instance name, or `"*"`.
    pub to: String,
    /// Echoed in the pong.
    pub seq: u64,
    /// Take the lease (`true`) or release it (`false`).
    pub hold: bool,
}

impl BusMessage for ProbeBusyDrill {
    const TOPIC: &'static str = "probe.busy-drill";
}

/// The probe's own keys in `box.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// A path, relative to the home, that makes the actor fail at start
    /// while it exists.
    #[serde(default)]
    pub fail_while_file: Option<PathBuf>,
    /// Busy drill: take the busy lease `drill` as the component starts (a
    /// component that is busy from its start), until a
    /// [`ProbeBusyDrill`] releases it.
    #[serde(default)]
    pub busy_lease_at_start: bool,
}

struct Probe {
    name: String,
    config: ProbeConfig,
    home: PathBuf,
}

fn create(init: &ComponentInit) -> Result<Box<dyn Component>, ComponentError> {
    let config: ProbeConfig = init.config.parse()?;
    Ok(Box::new(Probe {
        name: init.name.clone(),
        config,
        home: init.home.clone(),
    }))
}

impl Component for Probe {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let drill = self
            .config
            .fail_while_file
            .as_ref()
            .map(|f| self.home.join(f));
        let name = self.name.clone();
        let bus: Bus = ctx.bus().clone();
        let mut generation = 0;
        let addr = ctx.supervise("prober", move |_, _| {
            generation += 1;
            prober::Prober::new(name.clone(), bus.clone(), generation, drill.clone())
        });
        ctx.route::<ProbePing, _>(&addr);
        ctx.route::<ProbeBusyDrill, _>(&addr);
        if self.config.busy_lease_at_start {
            let _ = addr.try_send(FromBus(std::sync::Arc::new(ProbeBusyDrill {
                to: self.name.clone(),
                seq: 0,
                hold: true,
            })));
        }
        Ok(())
    }
}

impl Handler<FromBus<ProbeBusyDrill>> for prober::Prober {
    type Result = ResponseFuture<()>;

    fn handle(
        &mut self,
        FromBus(drill): FromBus<ProbeBusyDrill>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.busy(&drill)
    }
}

impl Handler<FromBus<ProbePing>> for prober::Prober {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, FromBus(ping): FromBus<ProbePing>, _: &mut Context<Self>) -> Self::Result {
        self.answer(&ping)
    }
}
