//! The component lifecycle the host drives: create, start, stop.
//!
//! The host creates a component from its configuration section with its
//! kind's [`ComponentKind::create`], moves it to the component's own actix
//! arbiter (thread), and calls [`Component::start`] there with a
//! [`ComponentContext`]. `start` starts the component's actors with
//! [`ComponentContext::supervise`] and returns; from then on the actors do
//! the work. To stop, the host stops the actors in reverse start order (see
//! the crate docs) and then calls [`Component::stopped`].

use std::{
    borrow::Cow,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use actix::{Actor, Context, Handler};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::{
    bus::{Bus, BusMessage, FromBus},
    config::ConfigSection,
    policy::RestartPolicy,
    status::{State, StatusBoard},
    supervisor::{supervise, ActorControl, SupervisedAddr, Supervision, SupervisorSpec},
    ComponentError,
};

/// A component instance.
pub trait Component: Send + 'static {
    /// Starts the component's actors. Runs on the component's arbiter; an
    /// error puts the component in `ERROR` with its message.
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError>;

    /// Called after every actor stopped, on the same arbiter.
    fn stopped(&mut self) {}
}

/// What the host knows when it creates a component.
#[derive(Clone, Debug)]
pub struct ComponentInit {
    /// Instance name, the table name in `box.toml`.
    pub name: String,
    /// Persistent instance ID, assigned by the host at first start.
    pub id: Uuid,
    /// The box home.
    pub home: PathBuf,
    /// The component's configuration table.
    pub config: ConfigSection,
}

/// How a kind creates an instance from what the host knows; configuration
/// errors are refused here, before anything starts.
pub type CreateFn =
    dyn Fn(&ComponentInit) -> Result<Box<dyn Component>, ComponentError> + Send + Sync;

/// A kind of component the host can create: the `kind` value in `box.toml`
/// and a factory. Built-in kinds are made in code (each component crate's
/// `kind()`); the host makes one for each kind a plugin exports, whose
/// factory holds the loaded plugin. Cloning shares the factory.
#[derive(Clone)]
pub struct ComponentKind {
    name: Cow<'static, str>,
    create: Arc<CreateFn>,
}

impl ComponentKind {
    /// The kind `name`, whose instances `create` makes.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        create: impl Fn(&ComponentInit) -> Result<Box<dyn Component>, ComponentError>
            + Send
            + Sync
            + 'static,
    ) -> ComponentKind {
        ComponentKind {
            name: name.into(),
            create: Arc::new(create),
        }
    }

    /// The `kind` value in `box.toml`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates an instance; configuration errors are refused here, before
    /// anything starts.
    pub fn create(&self, init: &ComponentInit) -> Result<Box<dyn Component>, ComponentError> {
        (self.create)(init)
    }
}

impl fmt::Debug for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentKind")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The component's view of the host while it starts and runs.
pub struct ComponentContext {
    name: Arc<str>,
    id: Uuid,
    home: PathBuf,
    policy: RestartPolicy,
    bus: Bus,
    board: StatusBoard,
    actors: Vec<ActorControl>,
    routes: Vec<AbortHandle>,
    /// Restarts failed actors that run elsewhere (a plugin's).
    restart_hooks: Vec<Box<dyn Fn()>>,
}

impl ComponentContext {
    /// A context for the component `name`; the host builds one per start.
    pub fn new(
        name: &str,
        id: Uuid,
        home: &Path,
        policy: RestartPolicy,
        bus: Bus,
        board: StatusBoard,
    ) -> Self {
        ComponentContext {
            name: name.into(),
            id,
            home: home.to_owned(),
            policy,
            bus,
            board,
            actors: Vec::new(),
            routes: Vec::new(),
            restart_hooks: Vec::new(),
        }
    }

    /// Starts an actor under the component's restart policy. `factory` builds
    /// a fresh actor for the first start and for every restart. Must be
    /// called on the component's arbiter (as `start` is).
    pub fn supervise<A, F>(&mut self, actor: &str, factory: F) -> SupervisedAddr<A>
    where
        A: Actor<Context = Context<A>>,
        F: FnMut(&mut Context<A>, &Supervision) -> A + 'static,
    {
        let spec = SupervisorSpec {
            component: self.name.clone(),
            actor: actor.into(),
            policy: self.policy,
            board: self.board.clone(),
        };
        let (addr, control) = supervise(spec, factory);
        self.actors.push(control);
        addr
    }

    /// Subscribes to `M` on the bus now and hands every message to `addr`
    /// as [`FromBus`]. The subscription belongs to the component, not to an
    /// actor instance: messages published while the actor restarts wait in
    /// its mailbox instead of being lost.
    pub fn route<M, A>(&mut self, addr: &SupervisedAddr<A>)
    where
        M: BusMessage,
        A: Actor<Context = Context<A>> + Handler<FromBus<M>>,
    {
        let mut subscription = self.bus.subscribe::<M>();
        let addr = addr.clone();
        let task = actix_rt::spawn(async move {
            while let Some(msg) = subscription.recv().await {
                if addr.tell(FromBus(msg)).await.is_err() {
                    break;
                }
            }
        });
        self.routes.push(task.abort_handle());
    }

    /// Instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Persistent instance ID.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The box home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The component's restart policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// The host's message bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The host's status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Restarts every actor of this component that is in `ERROR`; returns
    /// how many.
    pub fn restart_failed(&self) -> usize {
        let failed: Vec<String> = self
            .board
            .component(&self.name)
            .map(|c| {
                c.actors
                    .into_iter()
                    .filter(|(_, a)| a.state == State::Error)
                    .map(|(n, _)| n)
                    .collect()
            })
            .unwrap_or_default();
        for actor in self
            .actors
            .iter()
            .filter(|a| failed.iter().any(|f| f == a.name()))
        {
            actor.restart();
        }
        if !failed.is_empty() {
            for hook in &self.restart_hooks {
                hook();
            }
        }
        failed.len()
    }

    /// Makes [`ComponentContext::restart_failed`] also call `hook`, for
    /// actors that are supervised elsewhere and only mirrored on the board:
    /// the host's proxy of a plugin component restarts the plugin's failed
    /// actors with it.
    pub fn on_restart_failed(&mut self, hook: impl Fn() + 'static) {
        self.restart_hooks.push(Box::new(hook));
    }

    /// Stops every actor, in reverse start order.
    pub async fn stop_actors(&mut self) {
        for route in self.routes.drain(..) {
            route.abort();
        }
        while let Some(actor) = self.actors.pop() {
            actor.stop().await;
        }
    }
}
