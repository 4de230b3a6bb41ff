//! The reference portal: a real server that speaks the portal protocol on
//! `/portal-integration` and serves a Maven-layout artifact repository on
//! `/repo/...`, with a loopback JSON admin API on `/admin/...` and the
//! fleet console on `/console` (both need the admin token, [`auth`]):
//! environments, modules, assignment and rollouts in waves ([`rollout`]).
//!
//! It is the counterpart of every end-to-end test of the box, and it is
//! usable by a module developer or a small self-hosted fleet
//! (`banalytics-portal serve --data DIR`), over https and wss with
//! `--tls-cert` and `--tls-key` ([`tls`]). Tests start it in-process with
//! [`Portal::start`] / [`Portal::spawn`] or run the binary; both drive the
//! same code.
//!
//! Lifecycle: [`PortalHandle::shutdown`] signals every task (the HTTP
//! server, each WebSocket connection, each body stream) and returns once
//! all of them have ended (the console's event streams end with it).
//! Published modules, assignments, rollouts, the registered environments
//! and the status history live in the database ([`db`]: SQLite in the
//! data folder by default, PostgreSQL with `--database postgres://…`), the
//! admin token's hash in the data folder; all survive a restart.
//! Connections, counters, console sessions, fault switches and a rotated
//! secret not yet delivered to its box do not.
//!
//! Layout of the data folder: `repo/` (the repository), `portal.db` (the
//! SQLite database, with its `-wal` and `-shm` files; 0600, unless
//! `--database` names another), `admin-token.sha256` (the admin token's
//! hash), `portal.addr` (the URL of the running portal).
//! `portal-state.json`, `rollouts.json` and `environments.json`, the state
//! of a portal before the database, are imported at the first start on an
//! empty database and renamed `*.imported`.
//!
//! Boxes must be registered (`banalytics-portal environments add`, which
//! prints the UUID and the secret once, [`registry`]) unless the portal
//! runs with `serve --open-registration` (a lab: any UUID is let in).
//!
//! A module developer's loop, with a box whose `portal_url` is
//! `ws://127.0.0.1:PORT` and `repository_url` is `http://127.0.0.1:PORT/repo`:
//!
//! ```text
//! banalytics-portal serve --data ./portal --listen 127.0.0.1:8080 &  # prints the admin token once
//! export BANALYTICS_PORTAL_TOKEN=...
//! banalytics-portal --data ./portal environments add --name bench  # the box's environmentUuid and environmentSecret
//! banalytics-portal --data ./portal publish --group com.example --artifact cam \
//!     --version 1.0.1 --type component --packaging so --file target/release/libcam.so
//! banalytics-portal --data ./portal assign --env $ENV com.example:cam:1.0.1
//! banalytics-portal --data ./portal sync --env $ENV
//! banalytics-portal --data ./portal environments
//! ```

#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests
#![warn(missing_docs)]

/// The target triple this portal is built for (the tests' boxes are built
/// together with it): the platform [`ModuleObject::main_size`] reports.
pub const PLATFORM: &str = env!("BANALYTICS_PORTAL_TARGET");

mod admin;
pub mod auth;
pub mod cli;
pub mod client;
mod console;
pub mod db;
pub mod events;
mod faults;
mod fleet;
pub mod history;
mod import;
pub mod leases;
pub mod patch;
mod protocol;
mod recorder;
pub mod registry;
mod repo;
pub mod rollout;
mod rollouts;
mod stats;
mod store;
pub mod tls;
pub mod tuf;

use std::{
    future::IntoFuture as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{routing::get, Router};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

pub use admin::{
    AddEnvironmentRequest, AssignRawRequest, AssignRequest, Connections, Delivered, SendRawRequest,
    SyncRequest, MAX_ADMIN_BODY,
};
pub use client::AdminClient;
pub use faults::Faults;
pub use protocol::{
    EnvironmentReport, StatusRecord, MAX_FRAME_BYTES, MAX_OPEN_ENVIRONMENTS, MAX_STATUSES_PER_ENV,
    OUTBOUND_QUEUE,
};
pub use registry::{RegisteredEnvironment, Registration};
pub use stats::{
    PathStats, StatsReport, MAX_ATTEMPT_SECONDS, MAX_RECORDED_ATTEMPTS, MAX_REFUSING_ADDRESSES,
    MAX_STAT_PATHS,
};
pub use store::{
    artifact_path, iso_local_date_time, module_dir, ModuleObject, ModuleType, PartInfo,
    PublishRequest,
};
pub use tls::TlsFiles;

/// What the portal refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// A coordinate that is not a name (contracts §2).
    #[error("invalid {field} {value:?}")]
    InvalidCoordinate {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `assign` named a module that was never published.
    #[error("unknown module {coordinates}: publish it first")]
    UnknownModule {
        /// `groupId:artifactId:version`.
        coordinates: String,
    },
    /// A request that makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// A file of the data folder or a published file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("tls: {path}: {reason}")]
    Tls {
        /// The certificate or key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database refused or failed a statement.
    #[error("database: {op}: {source}")]
    Database {
        /// What the portal was doing (`connect`, `write`, `read`, ...).
        op: &'static str,
        /// What went wrong.
        #[source]
        source: sqlx::Error,
    },
    /// The database's migrations could not be applied.
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// How to start a portal.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The data folder (repository, state, address file).
    pub data_dir: PathBuf,
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The state file of a portal before the database, imported at the
    /// first start; `DATA/portal-state.json` when `None`.
    pub state_file: Option<PathBuf>,
    /// The database URL (`sqlite://PATH?mode=rwc`, `postgres://…`);
    /// `DATA/portal.db` when `None`.
    pub database: Option<String>,
    /// How long the status history keeps a status.
    pub status_retention: history::Retention,
    /// Fault switches at start.
    pub faults: Faults,
    /// The admin token, when the operator chooses it; otherwise one is
    /// made at the first start ([`PortalHandle::new_admin_token`]). Only
    /// its hash is stored.
    pub admin_token: Option<String>,
    /// Serve https and wss with this certificate; plain http when `None`.
    pub tls: Option<TlsFiles>,
    /// Let boxes of any environment UUID connect, as the original portal
    /// does (a lab); registered environments still need their secret.
    /// Off by default: only registered environments connect.
    pub open_registration: bool,
    /// How many earlier builds of a native module's platform get a patch
    /// to a new build at publish ([`patch`]); 0 publishes none, as the
    /// original portal.
    pub patch_versions: usize,
}

impl PortalConfig {
    /// A portal on `data_dir`, on a free loopback port, well-behaved.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        PortalConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file: None,
            database: None,
            status_retention: history::Retention::default(),
            faults: Faults::default(),
            admin_token: None,
            tls: None,
            open_registration: false,
            patch_versions: patch::DEFAULT_PATCH_VERSIONS,
        }
    }
}

/// Shared state of a running portal.
pub(crate) struct App {
    data_dir: PathBuf,
    repo_dir: PathBuf,
    db: Arc<db::Db>,
    status_retention: history::Retention,
    store: store::Store,
    envs: protocol::Environments,
    registry: registry::Registry,
    open_registration: bool,
    stats: Arc<stats::Stats>,
    faults: Mutex<Faults>,
    etags: repo::EtagCache,
    shutdown: watch::Receiver<bool>,
    auth: auth::Auth,
    rollouts: rollouts::Rollouts,
    /// The statuses' writer: one transaction per batch ([`recorder`]).
    recorder: recorder::Recorder,
    console: console::ConsoleState,
    /// Bumped on every change the console shows; its pages' event streams
    /// wait on it (a watch coalesces a burst into one update).
    changes: watch::Sender<u64>,
    /// Cloned by each WebSocket task; taken at shutdown so that the
    /// receiver sees every task end.
    tasks: Mutex<Option<mpsc::Sender<()>>>,
    /// Served over TLS: the console's session cookie is `Secure`.
    tls: bool,
    /// The other portal processes of the database ([`fleet`]).
    events: events::Events,
    /// The jobs this process may do alone ([`leases`]).
    leases: leases::Leases,
}

impl App {
    fn task_guard(&self) -> Option<mpsc::Sender<()>> {
        self.tasks.lock().expect("tasks lock").clone()
    }

    /// Tells `env` to synchronise, through this process's connections and
    /// the other processes'; how many connections of this process took
    /// it. When none did, the box is owed the sync: told when it connects
    /// ([`protocol::Environments::owe_sync`]).
    fn sync(&self, env: &str) -> usize {
        let n = self.envs.send(env, &protocol::sync_frame());
        info!(env, delivered = n, "sent EVT_SYNC_SOFT");
        if n == 0 {
            self.envs.owe_sync(env, self.registry.contains(env));
        }
        self.publish(events::FleetEvent::SyncRequested {
            env: env.to_owned(),
        });
        n
    }

    /// Tells the console's live pages, of every process, that something
    /// changed.
    fn changed(&self) {
        self.changed_here();
        self.publish(events::FleetEvent::Changed);
    }

    /// A box of `env` connected here: the console's pages refresh, and the
    /// other processes learn it (the one that drives its rollout may owe
    /// it a sync, [`fleet::follow`]).
    fn box_connected(&self, env: &str) {
        self.changed_here();
        self.publish(events::FleetEvent::Connected {
            env: env.to_owned(),
        });
    }

    /// A status was recorded for `env`: the rollouts and the console learn
    /// of it.
    fn status_recorded(&self, env: &str, record: &StatusRecord) {
        console::status_recorded(self, env, record);
        self.changed_here();
        self.publish(events::FleetEvent::StatusArrived {
            env: env.to_owned(),
        });
    }

    fn environments(&self) -> Vec<EnvironmentReport> {
        let mut history = history::all(&self.db).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the status history");
            Default::default()
        });
        self.envs.reports(
            &self.store.assignments(),
            &self.registry.list(),
            &mut history,
            None,
        )
    }

    /// The environments whose last verdict is a failure, the newest first
    /// (at most [`console::MAX_LISTED`]): the history of those only.
    fn failed_environments(&self) -> Vec<EnvironmentReport> {
        let read = || -> Result<_, PortalError> {
            let names: Vec<String> = history::failed(&self.db, console::MAX_LISTED)?
                .into_iter()
                .map(|l| l.env)
                .collect();
            Ok((names, history::of_failed(&self.db)?))
        };
        let (names, mut history) = read().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the status history");
            Default::default()
        });
        // Raw sets are a test's tool: the failed view shows checked ones.
        self.envs.reports(
            &self.store.failed_assignments(),
            &self.registry.list(),
            &mut history,
            Some(&names),
        )
    }

    fn register(&self, name: &str, uuid: Option<&str>) -> Result<Registration, PortalError> {
        let registration = self.registry.add(name, uuid)?;
        self.changed();
        Ok(registration)
    }

    /// Revokes `env` and closes its live connections; how many.
    fn revoke(&self, env: &str) -> Result<usize, PortalError> {
        if !self.registry.revoke(env)? {
            return Err(PortalError::BadRequest(format!(
                "environment {env} is not registered"
            )));
        }
        let closed = self.envs.close(env);
        info!(env, closed, "revoked environment's connections closed");
        self.publish(events::FleetEvent::Revoked {
            env: env.to_owned(),
        });
        self.changed();
        Ok(closed)
    }

    /// Starts a rotation of `env`'s secret; the live connections that
    /// took the new secret (the others get it at their next connection).
    fn rotate_secret(&self, env: &str) -> Result<usize, PortalError> {
        let frame = self.registry.rotate(env)?;
        let delivered = self.envs.send(env, &frame);
        info!(env, delivered, "new secret sent");
        self.changed();
        Ok(delivered)
    }

    fn set_faults(&self, faults: Faults) {
        info!(?faults, "fault switches set");
        *self.faults.lock().expect("faults lock") = faults;
    }
}

/// How often the portal repeats that the root is due while it cannot
/// renew it.
const ROOT_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Re-signs the TUF metadata before the timestamp expires, while the
/// portal runs ([`tuf::timestamp_due`]); renews the root in the last
/// quarter of its lifetime when the root keys are at hand, and otherwise
/// warns, at start and daily, until it is renewed or rotated.
fn tuf_refresher(app: Arc<App>) {
    let mut stop = app.shutdown.clone();
    tokio::spawn(async move {
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            if tuf::enabled(&app.data_dir)
                && tuf::root_due_at(&app.data_dir, jiff::Timestamp::now())
                && signer(&app).await
            {
                if tuf::root_keys_present(&app.data_dir) {
                    let a = app.clone();
                    match tokio::task::spawn_blocking(move || a.store.renew_tuf_root()).await {
                        Ok(Ok(_)) => warned = None,
                        Ok(Err(error)) => tracing::warn!(%error, "cannot renew the TUF root"),
                        Err(error) => tracing::warn!(%error, "cannot renew the TUF root"),
                    }
                } else if warned.is_none_or(|w| w.elapsed() >= ROOT_WARNING_EVERY) {
                    warned = Some(tokio::time::Instant::now());
                    let expires = tuf::root_expires(&app.data_dir)
                        .map_or_else(|| "?".to_owned(), |e| e.to_string());
                    tracing::warn!(%expires, "the TUF root expires soon and its keys are not at hand: run `banalytics-portal keys renew-root` (or `keys rotate-root`) with the root key folder mounted; once it expired, every box refuses the repository");
                }
            }
            let interval = tuf::refresh_interval(&app.data_dir);
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if tuf::enabled(&app.data_dir)
                && tuf::timestamp_due(&app.data_dir)
                && signer(&app).await
            {
                let a = app.clone();
                let signed = tokio::task::spawn_blocking(move || a.store.sign_tuf()).await;
                if let Ok(Err(error)) = signed {
                    tracing::warn!(%error, "cannot refresh the TUF timestamp");
                }
            }
        }
    });
}

/// Whether this process re-signs the shared repository's TUF metadata
/// now: it holds the [`leases::Lease::TufSigner`] lease (several portals on
/// one database share the repository folder; one signs).
async fn signer(app: &App) -> bool {
    match app.leases.acquire(leases::Lease::TufSigner).await {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(%error, "cannot ask for the TUF signer's lease");
            false
        }
    }
}

/// Resolves once shutdown is signalled (or the signal is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Connections the kernel keeps for the portal to accept (capped by the
/// system's `net.core.somaxconn`, 4096 on Linux since 5.4). A fleet's
/// boxes come back at once after the portal restarts; with the 128 of the
/// standard library (and tokio), a 10 000-box storm overflows the queue,
/// the kernel drops most handshakes, and their retransmissions back off to
/// minutes.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted portal binds its port again
    // at once (on Windows it would let another process take the port).
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How often the rollouts' time limits are checked.
const ROLLOUT_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Drives and ticks the rollouts until shutdown; then gives up every
/// lease.
async fn rollout_clock(app: Arc<App>) {
    let mut stop = app.shutdown.clone();
    let mut every = tokio::time::interval(ROLLOUT_TICK);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = every.tick() => {
                app.drive_rollouts().await;
                app.rollout_tick();
            }
        }
    }
    // Another process takes the jobs over at its next tick, without
    // waiting for this one's connections to close.
    app.leases.release_all().await;
}

/// Deletes the statuses past the retention, at start and every
/// [`history::PURGE_EVERY`], until shutdown.
async fn history_purger(app: Arc<App>) {
    let mut stop = app.shutdown.clone();
    let mut every = tokio::time::interval(history::PURGE_EVERY);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = every.tick() => {
                let a = app.clone();
                let purged = tokio::task::spawn_blocking(move || {
                    history::purge(&a.db, a.status_retention, rollouts::now_ms())
                })
                .await;
                match purged {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => info!(statuses = n, "statuses past the retention deleted"),
                    Ok(Err(error)) => tracing::warn!(%error, "cannot delete old statuses"),
                    Err(error) => tracing::warn!(%error, "cannot delete old statuses"),
                }
            }
        }
    }
}

/// `SCHEME://ADDR`, with the secure scheme (`https`, `wss`) when `tls`.
fn base_url(scheme: &str, tls: bool, addr: SocketAddr) -> String {
    let s = if tls { "s" } else { "" };
    format!("{scheme}{s}://{addr}")
}

/// Starts portals.
pub struct Portal;

impl Portal {
    /// Starts a portal on the current tokio runtime.
    pub async fn start(config: PortalConfig) -> Result<PortalHandle, PortalError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| PortalError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let repo_dir = data_dir.join("repo");
        let state_file = config
            .state_file
            .clone()
            .unwrap_or_else(|| data_dir.join("portal-state.json"));
        let db = Arc::new(db::open_for(&data_dir, config.database.as_deref())?);
        import::import_once(&db, &data_dir, &state_file)?;
        let store = store::Store::open(db.clone(), repo_dir.clone())?
            .with_patch_versions(config.patch_versions);
        let (auth, new_admin_token) = auth::Auth::open(
            &data_dir.join("admin-token.sha256"),
            config.admin_token.as_deref(),
        )?;
        let rollouts = rollouts::Rollouts::open(db.clone())?;
        let registry = registry::Registry::open(db.clone());
        if config.open_registration {
            tracing::warn!("open registration: boxes of any environment UUID connect without a secret; use it only in a lab");
        }
        let acceptor = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        let tls = acceptor.is_some();
        let listener = listen(config.listen).map_err(|source| PortalError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| PortalError::Bind {
            addr: config.listen,
            source,
        })?;
        let (events, leases) =
            fleet::connect(config.database.as_deref())
                .await
                .map_err(|source| PortalError::Database {
                    op: "listen for fleet events",
                    source,
                })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (tasks_tx, mut tasks_rx) = mpsc::channel::<()>(1);
        let app = Arc::new_cyclic(|weak: &std::sync::Weak<App>| App {
            recorder: {
                let app = weak.clone();
                recorder::Recorder::start(Arc::new(move |batch: &[_]| match app.upgrade() {
                    Some(app) => app.record_statuses(batch),
                    None => Err(PortalError::BadRequest("the portal has stopped".into())),
                }))
            },
            data_dir: data_dir.clone(),
            repo_dir,
            db,
            status_retention: config.status_retention,
            store,
            envs: protocol::Environments::default(),
            registry,
            open_registration: config.open_registration,
            stats: Arc::new(stats::Stats::new()),
            faults: Mutex::new(config.faults.clone()),
            etags: repo::EtagCache::default(),
            shutdown: shutdown_rx.clone(),
            auth,
            rollouts,
            changes: watch::channel(0).0,
            console: console::ConsoleState::default(),
            tasks: Mutex::new(Some(tasks_tx)),
            tls,
            events,
            leases,
        });
        tokio::spawn(fleet::follow(app.clone()));
        tokio::spawn(rollout_clock(app.clone()));
        tokio::spawn(history_purger(app.clone()));
        let router = Router::new()
            .route("/portal-integration", get(protocol::upgrade))
            .route("/repo/{*path}", get(repo::serve))
            .merge(admin::router(app.clone()))
            .merge(console::router(app.clone()))
            .with_state(app.clone());
        let url = base_url("http", tls, addr);
        let addr_file = data_dir.join("portal.addr");
        store::write_atomically(&addr_file, format!("{url}\n").as_bytes())?;

        let (done_tx, done_rx) = oneshot::channel();
        let mut stop = shutdown_rx.clone();
        let graceful = async move { stopped(&mut stop).await };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = match acceptor {
            None => tokio::spawn(
                axum::serve(listener, service)
                    .with_graceful_shutdown(graceful)
                    .into_future(),
            ),
            Some(acceptor) => {
                use axum::serve::ListenerExt as _;
                let tls = tls::TlsListener::new(listener, acceptor, shutdown_rx)
                    .map_err(|source| PortalError::Bind {
                        addr: config.listen,
                        source,
                    })?
                    // A no-op tap: axum gives `ConnectInfo<SocketAddr>` for a
                    // tapped listener whose address is a `SocketAddr`.
                    .tap_io(|_| {});
                tokio::spawn(
                    axum::serve(tls, service)
                        .with_graceful_shutdown(graceful)
                        .into_future(),
                )
            }
        };
        tuf_refresher(app.clone());
        tokio::spawn(async move {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "server failed"),
                Err(error) => tracing::error!(%error, "server task failed"),
            }
            // Every WebSocket task holds a sender; `shutdown` took the
            // original, so this returns when the last one has ended.
            let _ = tasks_rx.recv().await;
            let _ = std::fs::remove_file(&addr_file);
            info!("portal stopped");
            let _ = done_tx.send(());
        });
        info!(%addr, tls, data = %data_dir.display(), "portal listening");
        Ok(PortalHandle {
            addr,
            tls,
            app,
            shutdown: shutdown_tx,
            done: Some(done_rx),
            runtime: None,
            new_admin_token,
        })
    }

    /// Starts a portal on a runtime of its own (two worker threads), for
    /// synchronous tests. Do not call from inside a tokio runtime.
    pub fn spawn(config: PortalConfig) -> Result<PortalHandle, PortalError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("portal")
            .build()
            .map_err(|source| PortalError::Io {
                path: config.data_dir.clone(),
                source,
            })?;
        let mut handle = runtime.block_on(Portal::start(config))?;
        handle.runtime = Some(runtime);
        Ok(handle)
    }
}

/// A running portal. Dropping it signals shutdown without waiting.
pub struct PortalHandle {
    addr: SocketAddr,
    tls: bool,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    done: Option<oneshot::Receiver<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    new_admin_token: Option<String>,
}

impl PortalHandle {
    /// The admin token made at this first start of the data folder, the
    /// only time it exists in clear; `None` on later starts and when the
    /// operator chose it.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    /// `http://ADDR/console` (`https` with TLS), the fleet console.
    pub fn console_url(&self) -> String {
        format!("{}/console", self.url())
    }

    /// Starts a rollout of `spec`.
    pub fn start_rollout(
        &self,
        spec: rollout::RolloutSpec,
    ) -> Result<rollout::Rollout, PortalError> {
        self.app.start_rollout(spec)
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Vec<rollout::Rollout> {
        self.app.rollouts.list()
    }

    /// Resumes a halted rollout.
    pub fn resume_rollout(&self, id: u64) -> Result<rollout::Rollout, PortalError> {
        self.app.resume_rollout(id)
    }

    /// Cancels a rollout.
    pub fn cancel_rollout(&self, id: u64) -> Result<rollout::Rollout, PortalError> {
        self.app.cancel_rollout(id)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves https and wss.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `http://ADDR` (`https` with TLS).
    pub fn url(&self) -> String {
        base_url("http", self.tls, self.addr)
    }

    /// `http://ADDR/repo` (`https` with TLS), the box's `repository_url`.
    pub fn repo_url(&self) -> String {
        format!("{}/repo", self.url())
    }

    /// `ws://ADDR` (`wss` with TLS), the box's `portal_url` (the box
    /// appends `/portal-integration?...`).
    pub fn portal_url(&self) -> String {
        base_url("ws", self.tls, self.addr)
    }

    /// `ws://ADDR/portal-integration?environmentUuid=ENV&environmentHash=HASH`
    /// (`wss` with TLS).
    pub fn ws_url(&self, env: &str, hash: &str) -> String {
        format!(
            "{}/portal-integration?environmentUuid={env}&environmentHash={hash}",
            self.portal_url()
        )
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.app.data_dir
    }

    /// Puts a module into the repository and records it (blocking I/O).
    pub fn publish(&self, req: &PublishRequest) -> Result<ModuleObject, PortalError> {
        self.app.store.publish(req)
    }

    /// [`PortalHandle::publish`] without re-signing the TUF metadata: what
    /// someone who controls the repository but not the keys can do.
    pub fn publish_unsigned(&self, req: &PublishRequest) -> Result<ModuleObject, PortalError> {
        self.app.store.publish_files(req, false)
    }

    /// Re-signs the TUF metadata over every published artifact, the
    /// timestamp valid for `timestamp_s` seconds (negative: expired).
    pub fn sign_tuf_with(&self, timestamp_s: Option<i64>) -> Result<(), PortalError> {
        self.app.store.sign_tuf_with(timestamp_s)
    }

    /// Rotates the TUF root ([`tuf::rotate_root`]); returns its version.
    pub fn rotate_tuf_root(&self) -> Result<u64, PortalError> {
        self.app.store.rotate_tuf_root()
    }

    /// Every published module.
    pub fn modules(&self) -> Vec<ModuleObject> {
        self.app.store.modules()
    }

    /// Makes `coordinates` (`groupId:artifactId:version`) the whole target
    /// set of `env`; unknown coordinates refuse the set.
    pub fn assign(
        &self,
        env: &str,
        coordinates: &[&str],
    ) -> Result<Vec<ModuleObject>, PortalError> {
        let owned: Vec<String> = coordinates.iter().map(|c| c.to_string()).collect();
        self.app.store.assign(env, &owned)
    }

    /// Makes `modules` the answer to `env`'s `GET_ENV_MOD_REQ` as they are,
    /// unchecked (a bad set, for tests of the box's refusals); a later
    /// [`PortalHandle::assign`] replaces it.
    pub fn assign_raw(
        &self,
        env: &str,
        modules: Vec<serde_json::Value>,
    ) -> Result<(), PortalError> {
        self.app.store.assign_raw(env, modules)
    }

    /// Sends `EVT_SYNC_SOFT` to `env`'s live connections; how many took it
    /// (none: the box is sent it when it connects).
    pub fn sync(&self, env: &str) -> usize {
        self.app.sync(env)
    }

    /// Sends `text` as is to `env`'s live connections; how many took it.
    pub fn send_raw(&self, env: &str, text: &str) -> usize {
        self.app.envs.send(env, text)
    }

    /// Every environment seen, assigned or registered.
    pub fn environments(&self) -> Vec<EnvironmentReport> {
        self.app.environments()
    }

    /// Registers an environment named `name`, with the UUID `uuid` when
    /// given (a box that has one), else a new one: the UUID and the
    /// secret, the only time the secret exists in clear.
    pub fn register(&self, name: &str, uuid: Option<&str>) -> Result<Registration, PortalError> {
        self.app.register(name, uuid)
    }

    /// Revokes `env`: its live connections are closed and every new one
    /// is refused. How many were closed.
    pub fn revoke(&self, env: &str) -> Result<usize, PortalError> {
        self.app.revoke(env)
    }

    /// Gives `env` a new secret, sent to its box over the link; the old
    /// one works until the box confirms it stored the new one. How many
    /// live connections took it.
    pub fn rotate_secret(&self, env: &str) -> Result<usize, PortalError> {
        self.app.rotate_secret(env)
    }

    /// Every registered environment.
    pub fn registered(&self) -> Vec<RegisteredEnvironment> {
        self.app.registry.list()
    }

    /// One environment, if seen or assigned.
    pub fn environment(&self, env: &str) -> Option<EnvironmentReport> {
        self.environments()
            .into_iter()
            .find(|e| e.environment_uuid == env)
    }

    /// The counters.
    pub fn stats(&self) -> StatsReport {
        self.app.stats.report()
    }

    /// Zeroes the counters and restarts their clock.
    pub fn reset_stats(&self) {
        self.app.stats.reset();
    }

    /// The fault switches in force.
    pub fn faults(&self) -> Faults {
        self.app.faults.lock().expect("faults lock").clone()
    }

    /// Replaces the fault switches; requests already running keep theirs.
    pub fn set_faults(&self, faults: Faults) {
        self.app.set_faults(faults);
    }

    fn begin_shutdown(&mut self) -> Option<oneshot::Receiver<()>> {
        let _ = self.shutdown.send(true);
        self.app.tasks.lock().expect("tasks lock").take();
        self.done.take()
    }

    /// Stops accepting, closes every connection, and returns when every
    /// task has ended.
    pub async fn shutdown(mut self) {
        if let Some(done) = self.begin_shutdown() {
            let _ = done.await;
        }
    }

    /// [`PortalHandle::shutdown`] from synchronous code.
    pub fn shutdown_blocking(mut self) {
        if let Some(done) = self.begin_shutdown() {
            let _ = done.blocking_recv();
        }
    }
}

impl Drop for PortalHandle {
    fn drop(&mut self) {
        let _ = self.begin_shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod listen_tests {
    use std::time::Duration;

    use super::{listen, LISTEN_BACKLOG};

    /// The portal's listener queues a fleet's reconnections while it is
    /// busy: 600 connections made while it accepts none are all there to
    /// accept (the standard library's backlog queues 129).
    #[tokio::test]
    async fn the_listener_queues_a_storm_of_connections_it_has_not_accepted_yet() {
        const STORM: usize = 600;
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // What the system allows at most; the portal asks for more.
        assert!(LISTEN_BACKLOG as usize >= STORM);
        let queued = STORM.min(somaxconn + 1);
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..STORM)
            .map(|_| {
                tokio::spawn(async move {
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                })
            })
            .collect();
        let mut held = Vec::new();
        for client in clients {
            held.push(client.await.unwrap());
        }
        let mut accepted = 0;
        while accepted < queued {
            match tokio::time::timeout(Duration::from_secs(5), listener.accept()).await {
                Ok(Ok(_)) => accepted += 1,
                _ => break,
            }
        }
        assert_eq!(
            accepted, queued,
            "connections queued while the portal accepted none"
        );
    }
}
