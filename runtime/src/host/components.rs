//! The running components: creates the configured components, runs each on its own actix
//! arbiter (thread), starts them in configuration order, restarts them on
//! request and stops them in reverse order.
//!
//! Each component has a driver task on its arbiter (the SDK's
//! [`Driver`], the lifecycle loop a plugin instance runs too) that owns the
//! component and its context and takes [`Command`]s from the host, so the
//! component's actors, its supervisors and its driver all live on one
//! thread, and a component in trouble cannot block another.

use actix_rt::Arbiter;
use banalytics_sdk::{
    component::ComponentInit,
    driver::{Command, Driver, RestartRefused, COMMAND_QUEUE},
    Bus, StatusBoard,
};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::{config::BoxConfig, ids, isolation::Isolation, registry::Registry, Error, Home};

use super::busy::BusyLeases;

/// Why `restart NAME` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// No component has this name.
    #[error("no component {name:?}; components: {}", known.join(", "))]
    NoSuchComponent {
        /// The name asked for.
        name: String,
        /// The components there are.
        known: Vec<String>,
    },
    /// The component's driver is gone (the host is stopping).
    #[error("component {name} is gone")]
    Gone {
        /// The component.
        name: String,
    },
    /// The component's driver refused.
    #[error(transparent)]
    Refused(#[from] RestartRefused),
}

struct Handle {
    name: String,
    kind: String,
    arbiter: Arbiter,
    tx: mpsc::Sender<Command>,
}

/// The running set of components.
pub struct Host {
    board: StatusBoard,
    bus: Bus,
    busy: BusyLeases,
    home: std::path::PathBuf,
    components: Vec<Handle>,
    /// `true` once [`Host::start_all`] ended.
    started: watch::Sender<bool>,
}

impl Host {
    /// Creates every configured component (refusing bad configuration before
    /// anything starts), assigns IDs, and gives each its arbiter. Must be
    /// called inside an actix `System`.
    pub fn build(home: &Home, config: &BoxConfig, registry: &Registry) -> Result<Host, Error> {
        let names: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
        let ids = ids::assign(home, &names).map_err(|e| Error::Io {
            path: home.ids_file(),
            source: e,
        })?;
        let mut created = Vec::new();
        for c in &config.components {
            let kind = registry
                .get(&c.kind)
                .expect("kinds were checked when the configuration was parsed");
            if c.isolation != Isolation::None && registry.origin(&c.kind).is_none() {
                return Err(Error::Component {
                    name: c.name.clone(),
                    message: format!(
                        "isolation = \"process\" applies to plugin kinds; {} is built into the host",
                        c.kind
                    ),
                });
            }
            let init = ComponentInit {
                name: c.name.clone(),
                id: ids[&c.name],
                home: home.root().to_owned(),
                config: c.section.clone(),
            };
            let component = kind.create(&init).map_err(|e| Error::Component {
                name: c.name.clone(),
                message: e.to_string(),
            })?;
            created.push((c, init, component));
        }
        let board = StatusBoard::new();
        // In its start phase until `start_all` ends: a message published
        // by an early component (a synchronisation request on a fast
        // portal link) also reaches the components started after it.
        let bus = Bus::starting();
        // Before any component starts, so that no lease is missed.
        let busy = BusyLeases::follow(&bus);
        let mut components = Vec::new();
        for (c, init, component) in created {
            board.register(&c.name, &c.kind, &init.id.to_string());
            if let Some(file) = registry.origin(&c.kind) {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                board.set_origin(&c.name, &name);
            }
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let (policy, bus, board) = (c.policy, bus.clone(), board.clone());
            let arbiter = Arbiter::new();
            // The driver holds the component's actors, which stay on this
            // arbiter: it is built there, from parts that may cross threads.
            arbiter.spawn_fn(move || {
                let driver = Driver::new(init, policy, bus, board, component);
                actix_rt::spawn(driver.run(rx));
            });
            components.push(Handle {
                name: c.name.clone(),
                kind: c.kind.clone(),
                arbiter,
                tx,
            });
        }
        Ok(Host {
            board,
            bus,
            busy,
            home: home.root().to_owned(),
            components,
            started: watch::Sender::new(false),
        })
    }

    /// The status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The home the host runs in.
    pub fn home(&self) -> &std::path::Path {
        &self.home
    }

    /// The busy leases the components hold.
    pub fn busy(&self) -> &BusyLeases {
        &self.busy
    }

    /// The bus the components share.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Starts every component in configuration order, each once the previous
    /// one's `start` returned, then ends the bus's start phase: whatever
    /// was published meanwhile has reached every subscription made in it.
    pub async fn start_all(&self) {
        for c in &self.components {
            let (done, wait) = oneshot::channel();
            if c.tx.send(Command::Start(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        self.bus.started();
        self.started.send_replace(true);
    }

    /// Waits until [`Host::start_all`] ended: a request that asks whether
    /// a component handles it (the control socket's `upgrade`, `approve`)
    /// is answered only once every component had its start, so that one
    /// that starts later is not taken for missing.
    pub async fn wait_started(&self) {
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|s| *s).await;
    }

    /// Restarts the component `name` if it is stopped or in `ERROR`; the
    /// text for the operator.
    pub async fn restart(&self, name: &str) -> Result<String, RestartError> {
        let c = self
            .components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| RestartError::NoSuchComponent {
                name: name.to_owned(),
                known: self.components.iter().map(|c| c.name.clone()).collect(),
            })?;
        let gone = || RestartError::Gone {
            name: name.to_owned(),
        };
        let (done, wait) = oneshot::channel();
        c.tx.send(Command::Restart(done))
            .await
            .map_err(|_| gone())?;
        Ok(wait.await.map_err(|_| gone())??)
    }

    /// Asks the driver of each component of one of `kinds` to answer, all
    /// at once, each within `within`; the names of those that did not (a
    /// blocked arbiter thread, a full command queue).
    pub async fn ping(&self, kinds: &[&str], within: Duration) -> Result<(), Vec<String>> {
        let asks = self
            .components
            .iter()
            .filter(|c| kinds.contains(&c.kind.as_str()))
            .map(|c| async move {
                let asked = async {
                    let (done, wait) = oneshot::channel();
                    c.tx.send(Command::Ping(done)).await.ok()?;
                    wait.await.ok()
                };
                match tokio::time::timeout(within, asked).await {
                    Ok(Some(())) => None,
                    _ => Some(c.name.clone()),
                }
            });
        let silent: Vec<String> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if silent.is_empty() {
            Ok(())
        } else {
            Err(silent)
        }
    }

    /// Stops every component in reverse start order, then their arbiters.
    pub async fn stop_all(self) {
        for c in self.components.iter().rev() {
            let (done, wait) = oneshot::channel();
            if c.tx.send(Command::Stop(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        for c in self.components {
            c.arbiter.stop();
        }
    }
}
