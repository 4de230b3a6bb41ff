//! The API a Banalytics box component is written against.
//!
//! A component is created by the host from its section of `config/box.toml`
//! ([`component::ComponentKind`]), started with a [`component::ComponentContext`]
//! and stopped by the host. It does its work in actix actors that it starts
//! under the SDK's supervisor ([`supervisor`]), which restarts a failed actor
//! with the component's [`policy::RestartPolicy`]. Components talk to each
//! other only through the typed message [`bus`], whose messages are plain data
//! so that the same component can run built in or as a plugin.
//!
//! # Lifecycle, once
//!
//! * **Components.** Each component instance is driven by one
//!   [`driver::Driver`], on the host or in a plugin alike: it starts the
//!   component, retries a failed start under the policy, restarts and
//!   stops it (the [`driver`] docs say how).
//! * **States.** A component is `STOPPED`, `STARTING`, `RUN`, `STOPPING` or
//!   `ERROR` ([`status::State`]). It is `ERROR` while any of its actors has
//!   failed and is not running again yet, or when its `start` returned an
//!   error. Every change is recorded on the [`status::StatusBoard`] with the
//!   wall-clock time, the reason and the restart count.
//! * **Failure.** An actor fails when a handler, a spawned actor future or a
//!   lifecycle hook (`started`, `stopping`, `stopped`) panics, or when it stops
//!   itself through [`supervisor::Supervision::fail`]. An actor that stops
//!   itself without `fail` has finished: it is not restarted and its address
//!   answers [`SendError::ActorStopped`].
//! * **Restart.** The failed actor is restarted under the component's policy:
//!   `stop` keeps it down until a manual restart (`banalytics-box restart
//!   NAME`); `immediate` restarts it at once, after yielding to the other
//!   tasks of its thread once, with no timer; `10s`, `30s` and `1min` restart
//!   it after exactly that delay. A restart builds the actor again with its
//!   factory: nothing of the failed instance's state survives, and actix
//!   futures it had spawned are dropped. Other actors of the same component
//!   keep running.
//! * **Messages.** An actor's [`supervisor::SupervisedAddr`] stays valid
//!   across restarts. Messages wait in a bounded mailbox
//!   ([`supervisor::MAILBOX_CAPACITY`]) and are handed to the actor one at a
//!   time, in the order they were sent; an async handler's future completes
//!   before the next message is handed over. The message whose handler
//!   panicked is answered with [`SendError::ActorFailed`], never dropped
//!   silently. Messages sent while the actor is down (during the restart
//!   delay, or in `ERROR` under `stop`) wait in the mailbox and are handled
//!   after the restart, in order; when the mailbox is full, `send` waits for
//!   room and `try_send` answers [`SendError::MailboxFull`].
//! * **Stop.** Stopping a component stops its actors in reverse start order.
//!   An actor's mailbox is closed first (new messages are answered
//!   `ActorStopped`), the messages already in it are handled, then the actor
//!   is stopped through actix (`stopping`, `stopped`). Each actor gets
//!   [`supervisor::STOP_GRACE`] for all of this; an actor still running after
//!   it is aborted and the messages left are answered `ActorStopped`.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

pub mod bus;
pub mod component;
pub mod config;
pub mod driver;
pub mod plugin;
pub mod policy;
pub mod status;
pub mod supervisor;

pub use bus::{Bus, BusError, BusMessage, FromBus, RawSubscription, SubscriberId, Subscription};
pub use component::{Component, ComponentContext, ComponentInit, ComponentKind};
pub use config::{ConfigError, ConfigSection};
pub use policy::RestartPolicy;
pub use status::{State, StatusBoard};
pub use supervisor::{SupervisedAddr, Supervision};

/// Re-exported so that components use the same actix as the SDK.
pub use actix;

/// Why a message to a supervised actor was not answered by its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The actor failed while this message was being handled, or before it
    /// could be handed over.
    #[error("actor {actor} failed: {reason}")]
    ActorFailed {
        /// The actor's name within its component.
        actor: String,
        /// The panic message or the reason given to `Supervision::fail`.
        reason: String,
    },
    /// The actor is stopped (its component stopped, or it finished).
    #[error("actor {actor} is stopped")]
    ActorStopped {
        /// The actor's name within its component.
        actor: String,
    },
    /// `try_send` found the bounded mailbox full.
    #[error("mailbox of actor {actor} is full ({capacity} messages)")]
    MailboxFull {
        /// The actor's name within its component.
        actor: String,
        /// The mailbox capacity.
        capacity: usize,
    },
}

/// Why a component could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The component's configuration section was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Starting failed; the message says what and why.
    #[error("{0}")]
    Start(String),
}
