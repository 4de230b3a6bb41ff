//! The host: creates the configured components, runs each on its own actix
//! arbiter (thread), starts them in configuration order, restarts them on
//! request and stops them in reverse order.
//!
//! Each component has a driver task on its arbiter that owns the component
//! and its [`ComponentContext`] and takes [`Command`]s from the host, so the
//! component's actors, its supervisors and its driver all live on one
//! thread, and a component in trouble cannot block another.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
};

use actix_rt::Arbiter;
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit},
    supervisor::panic_message,
    Bus, RestartPolicy, State, StatusBoard,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{error, info};

use crate::{config::BoxConfig, ids, registry::Registry, Error, Home};

enum Command {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<Result<String, String>>),
}

struct Handle {
    name: String,
    arbiter: Arbiter,
    tx: mpsc::UnboundedSender<Command>,
}

/// The running set of components.
pub struct Host {
    board: StatusBoard,
    bus: Bus,
    components: Vec<Handle>,
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
        let bus = Bus::new();
        let mut components = Vec::new();
        for (c, init, component) in created {
            board.register(&c.name, &c.kind, &init.id.to_string());
            if let Some(file) = registry.origin(&c.kind) {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                board.set_origin(&c.name, &name);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (name, policy, bus, board) = (c.name.clone(), c.policy, bus.clone(), board.clone());
            let arbiter = Arbiter::new();
            // The driver holds the component's actors, which stay on this
            // arbiter: it is built there, from parts that may cross threads.
            arbiter.spawn_fn(move || {
                let driver = Driver {
                    name,
                    init,
                    policy,
                    bus,
                    board,
                    component,
                    running: None,
                };
                actix_rt::spawn(driver.run(rx));
            });
            components.push(Handle {
                name: c.name.clone(),
                arbiter,
                tx,
            });
        }
        Ok(Host {
            board,
            bus,
            components,
        })
    }

    /// The status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The bus the components share.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Starts every component in configuration order, each once the previous
    /// one's `start` returned.
    pub async fn start_all(&self) {
        for c in &self.components {
            let (done, wait) = oneshot::channel();
            if c.tx.send(Command::Start(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Restarts the component `name` if it is stopped or in `ERROR`.
    pub async fn restart(&self, name: &str) -> Result<String, String> {
        let c = self
            .components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.components.iter().map(|c| c.name.as_str()).collect();
                format!("no component {name:?}; components: {}", known.join(", "))
            })?;
        let (done, wait) = oneshot::channel();
        c.tx.send(Command::Restart(done))
            .map_err(|_| format!("component {name} is gone"))?;
        wait.await
            .unwrap_or_else(|_| Err(format!("component {name} is gone")))
    }

    /// Stops every component in reverse start order, then their arbiters.
    pub async fn stop_all(self) {
        for c in self.components.iter().rev() {
            let (done, wait) = oneshot::channel();
            if c.tx.send(Command::Stop(done)).is_ok() {
                let _ = wait.await;
            }
        }
        for c in self.components {
            c.arbiter.stop();
        }
    }
}

struct Driver {
    name: String,
    init: ComponentInit,
    policy: RestartPolicy,
    bus: Bus,
    board: StatusBoard,
    component: Box<dyn Component>,
    running: Option<ComponentContext>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut retry_at: Option<Instant> = None;
        loop {
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    retry_at = self.start().await;
                    continue;
                }
            };
            match cmd {
                Some(Command::Start(done)) => {
                    retry_at = self.start().await;
                    let _ = done.send(());
                }
                Some(Command::Stop(done)) => {
                    retry_at = None;
                    self.stop().await;
                    let _ = done.send(());
                }
                Some(Command::Restart(done)) => {
                    let answer = match &self.running {
                        None => {
                            retry_at = self.start().await;
                            match &self.running {
                                Some(_) => Ok(format!("component {} started", self.name)),
                                None => Err(format!(
                                    "component {} failed to start: {}",
                                    self.name,
                                    self.board
                                        .component(&self.name)
                                        .and_then(|c| c.reason)
                                        .unwrap_or_default()
                                )),
                            }
                        }
                        Some(ctx) => match ctx.restart_failed() {
                            0 => Err(format!(
                                "component {} is running; restart applies to a component that is stopped or in ERROR",
                                self.name
                            )),
                            n => Ok(format!(
                                "component {}: restarting {n} failed actor(s)",
                                self.name
                            )),
                        },
                    };
                    let _ = done.send(answer);
                }
                None => {
                    self.stop().await;
                    return;
                }
            }
        }
    }

    /// Starts the component; on failure returns when to retry under the
    /// policy (`None` under `stop`).
    async fn start(&mut self) -> Option<Instant> {
        self.board.set_component(&self.name, State::Starting, None);
        let mut ctx = ComponentContext::new(
            &self.name,
            self.init.id,
            Path::new(&self.init.home),
            self.policy,
            self.bus.clone(),
            self.board.clone(),
        );
        let result = catch_unwind(AssertUnwindSafe(|| self.component.start(&mut ctx)));
        let reason = match result {
            Ok(Ok(())) => {
                info!(component = %self.name, id = %self.init.id, "component started");
                self.board.set_component(&self.name, State::Run, None);
                self.running = Some(ctx);
                return None;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("start panicked: {}", panic_message(&*panic)),
        };
        ctx.stop_actors().await;
        error!(component = %self.name, %reason, policy = %self.policy, "component failed to start");
        self.board
            .set_component(&self.name, State::Error, Some(reason));
        self.policy.delay().map(|d| Instant::now() + d)
    }

    async fn stop(&mut self) {
        if let Some(mut ctx) = self.running.take() {
            self.board.set_component(&self.name, State::Stopping, None);
            ctx.stop_actors().await;
            self.component.stopped();
            info!(component = %self.name, "component stopped");
        }
        self.board.set_component(&self.name, State::Stopped, None);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
