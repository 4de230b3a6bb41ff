//! `sample-echo`: a sample component built as a plugin library.
//!
//! It answers each [`SampleRequest`] on the bus with a [`SampleReply`], and
//! panics in its actor when a request asks it to, so that the tests and the
//! demo can check a plugin component end to end: loading, messages across
//! the plugin boundary and back, restart after failure with the policy
//! delay. Its [`Drill`]s do what no `catch_unwind` contains (a segfault, an
//! abort, a handler that never returns), to show process isolation: in a
//! component with `isolation = "process"` they take down its child
//! process only; in process, a segfault or an abort kills the whole host
//! and a hang wedges the component for good. `export_plugin!` at the bottom makes the `cdylib` a plugin; the
//! feature `abi-mismatch` makes it declare another ABI version, which a host
//! must refuse. The feature `forge` makes a misbehaving library: a
//! request's [`Forge`] reaches the host as a message on any topic, and the
//! kind declares topics no plugin may publish ([`FORGE_DECLARES`]), so the
//! tests see the host's bus authority refuse them.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

use actix::prelude::*;
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    plugin::PluginKind,
    BusMessage, ComponentError, FromBus,
};
use serde::{Deserialize, Serialize};

pub mod echo;
pub mod files;

/// The component kind's name, the `kind` value in `box.toml`.
pub const KIND_NAME: &str = "sample-echo";

/// The component kind.
pub fn kind() -> ComponentKind {
    ComponentKind::new(KIND_NAME, create)
}

/// The kind as the plugin exports it, with the topics it exchanges.
pub fn plugin_kind() -> PluginKind {
    PluginKind {
        kind: kind(),
        subscribes: &[SampleRequest::TOPIC],
        publishes: if cfg!(feature = "forge") {
            FORGE_DECLARES
        } else {
            &[SampleReply::TOPIC]
        },
    }
}

/// What the kind declares it publishes with the feature `forge`: besides
/// its replies and [`Forge`], topics that steer the host (a restart, an
/// approval, the portal's target set), which the host refuses whatever a
/// plugin declares. Spelled out here: this crate knows no host messages.
pub const FORGE_DECLARES: &[&str] = &[
    SampleReply::TOPIC,
    Forge::TOPIC,
    "host.restart-requested",
    "host.approve-staged-set",
    "portal.GET_ENV_MOD_RES",
];

#[cfg(not(any(feature = "abi-mismatch", feature = "forge")))]
banalytics_sdk::export_plugin!(KIND_NAME => plugin_kind());

#[cfg(all(feature = "forge", not(feature = "abi-mismatch")))]
banalytics_sdk::export_plugin!(forge_topic = Forge::TOPIC; KIND_NAME => plugin_kind());

#[cfg(feature = "abi-mismatch")]
banalytics_sdk::export_plugin!(abi_version = banalytics_sdk::plugin::ABI_VERSION + 1; KIND_NAME => plugin_kind());

/// A request to every sample-echo instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleRequest {
    /// Echoed in the reply.
    pub seq: u64,
    /// Panic in the handler instead of answering (failure drill).
    #[serde(default)]
    pub panic: bool,
    /// A failure drill that no panic handler contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
    /// Messages to publish as [`Forge`]s before answering (reaching the
    /// host only in a library built with the feature `forge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forge: Vec<Forge>,
}

/// A message the sample publishes for the host on any topic (bus
/// authority drill): with the feature `forge`, the host is handed
/// `message` on `topic`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Forge {
    /// The topic the host is handed the message on.
    pub topic: String,
    /// The message's JSON.
    pub message: serde_json::Value,
}

impl BusMessage for Forge {
    const TOPIC: &'static str = "sample.forge";
}

/// What a [`SampleRequest`] may ask the handler to do instead of answering.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Drill {
    /// Write to an unmapped address: the process gets SIGSEGV, as with a
    /// bug in a native library.
    Segfault,
    /// `std::process::abort`: the process gets SIGABRT, as with a plugin
    /// built with `panic = "abort"`.
    Abort,
    /// Block forever holding a lock, never returning from the handler: the
    /// actor's thread is wedged.
    Hang,
    /// Ignore SIGTERM, then hang: a process that answers no `stop`, stays
    /// when its socket closes and survives SIGTERM, so only SIGKILL ends
    /// it (as with a library that installs a handler of its own and then
    /// wedges).
    Deaf,
    /// Try what a hostile component would do to the box's files (rewrite
    /// the TUF root in `state/`, read `config/box.toml`, change
    /// `modules/`) and what any component may do (write in `data/` and
    /// its temporary folder), and answer with each outcome
    /// ([`SampleReply::files`], [`files::drill`]).
    Files,
}

impl BusMessage for SampleRequest {
    const TOPIC: &'static str = "sample.request";
}

/// The answer to a [`SampleRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleReply {
    /// The request's `seq`.
    pub seq: u64,
    /// The answering instance: its `label` from `box.toml`, else its name.
    pub from: String,
    /// How many actor instances this component has built (1 before any
    /// restart).
    pub generation: u64,
    /// The outcome of each attempt of [`Drill::Files`]: `ok` or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, String>>,
}

impl BusMessage for SampleReply {
    const TOPIC: &'static str = "sample.reply";
}

/// The component's own keys in `box.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// How the component signs its replies (default: its instance name).
    #[serde(default)]
    pub label: Option<String>,
}

struct Sample {
    from: String,
    home: std::path::PathBuf,
}

fn create(init: &ComponentInit) -> Result<Box<dyn Component>, ComponentError> {
    let config: SampleConfig = init.config.parse()?;
    Ok(Box::new(Sample {
        from: config.label.unwrap_or_else(|| init.name.clone()),
        home: init.home.clone(),
    }))
}

impl Component for Sample {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let (from, home) = (self.from.clone(), self.home.clone());
        let bus = ctx.bus().clone();
        let mut generation = 0;
        let addr = ctx.supervise("echo", move |_, _| {
            generation += 1;
            echo::Echo::new(from.clone(), home.clone(), bus.clone(), generation)
        });
        ctx.route::<SampleRequest, _>(&addr);
        tracing::info!(component = ctx.name(), "sample echo started");
        Ok(())
    }
}

impl Handler<FromBus<SampleRequest>> for echo::Echo {
    type Result = ResponseFuture<()>;

    fn handle(
        &mut self,
        FromBus(req): FromBus<SampleRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.answer(&req)
    }
}
