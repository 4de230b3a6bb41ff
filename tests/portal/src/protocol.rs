//! The portal side of Portal Integration (contracts section 3) on
//! `/portal-integration`: answers `GET_ENV_MOD_REQ` with the environment's
//! assigned set, records every `EVT_ENV_MOD_UPD_STS` in order (in the
//! history, [`super::history`], with the rollouts' rows), and pushes
//! `EVT_SYNC_SOFT` (or any raw frame a test asks for) to live connections.
//!
//! A status with the extension field `seq` (a durable one: the box sends it
//! again when it cannot know whether the portal read it) is recorded once
//! per environment, outbox and `seq` (a unique index of the database); a
//! repeat is dropped and counted
//! (`duplicateStatuses`, in the environment's report and in the stats). A
//! status without `seq` is recorded as it comes.
//!
//! Only a registered environment is let in ([`super::registry`]): the
//! upgrade must carry `Authorization: Bearer SECRET`, the environment's
//! secret; an unknown UUID, a wrong or missing secret or a revoked
//! environment is answered 401 before the upgrade, and counted per peer
//! address. Under `serve --open-registration` (a lab) an unknown UUID is
//! let in as before, up to [`MAX_OPEN_ENVIRONMENTS`]; a registered one
//! still needs its secret. The extension frames of a secret's rotation
//! ([`super::registry::ROTATE_FRAME`], [`super::registry::ROTATED_FRAME`])
//! travel on the same connection.
//!
//! The messages are plain JSON here on purpose: the portal is the box's
//! test oracle, so it shares no wire types with the box's own code.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        ConnectInfo, Query, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use super::{
    history::{EnvHistory, Recorded},
    registry::{Admission, RegisteredEnvironment, ROTATED_FRAME},
    App,
};

/// Largest frame accepted from a box: the protocol's limit (contracts §3).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Frames waiting to be written to one connection. A box that stops
/// reading must not grow the portal's memory; a full queue makes `sync` and
/// `send-raw` report the connection as not reached.
pub const OUTBOUND_QUEUE: usize = 64;

/// Statuses of one environment a report carries (the newest); the history
/// in the database keeps every one for the retention
/// ([`super::history`]).
pub const MAX_STATUSES_PER_ENV: usize = 10_000;

/// Bytes read from a box's socket at a time, and the read buffer each
/// connection keeps (filled whole on every read). The WebSocket layer's
/// default (128 KiB to read, 128 KiB to gather writes) costs a 10 000-box
/// fleet over a GiB, and 4 KiB still 40 MiB; a box's frames are a few
/// hundred bytes (a status, a request, a ping), a larger one still arrives
/// whole (the buffer grows to gather it), and each frame is written at
/// once.
pub const CONNECTION_BUFFER: usize = 512;

/// Environments that have state at once under open registration, where any
/// UUID is let in; a new UUID past it is refused (503). With registration
/// only registered environments have state, so the registry bounds it.
pub const MAX_OPEN_ENVIRONMENTS: usize = 10_000;

/// One `EVT_ENV_MOD_UPD_STS` as the box sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRecord {
    /// The `environmentUuid` field of the message.
    pub environment_uuid: Value,
    /// The module object, or null for the whole set.
    pub module: Value,
    /// The status value.
    pub status: Value,
    /// Why, or null.
    pub status_message: Value,
    /// The durable status's number in the box's outbox, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The id of the box's outbox that numbered it: a home provisioned
    /// again numbers from 1 again under another id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<String>,
    /// When the portal received it, in milliseconds since the Unix epoch
    /// (the portal's clock: the protocol's status carries no time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<u64>,
    /// The name of the set this connection last answered the box's
    /// `GET_ENV_MOD_REQ` with (`rollout::set_name`): what a rollout takes
    /// the status to be about. `None` when no request came on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_set: Option<String>,
}

/// `groupId:artifactId:version` of a status's module object, `?` for a
/// field it lacks; `whole set` for anything else (`null`: a status of the
/// whole set).
pub(crate) fn module_label(m: &Value) -> String {
    match m {
        Value::Object(o) => {
            let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("?");
            format!(
                "{}:{}:{}",
                field("groupId"),
                field("artifactId"),
                field("version")
            )
        }
        _ => "whole set".to_string(),
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the portal knows of one environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentReport {
    /// The environment UUID (empty for boxes that connect unregistered).
    pub environment_uuid: String,
    /// Whether at least one connection is open now.
    pub connected: bool,
    /// Connections open now.
    pub live_connections: usize,
    /// Connections accepted since start.
    pub connections: u64,
    /// The `environmentHash` of the latest connection.
    pub environment_hash: Option<String>,
    /// `GET_ENV_MOD_REQ` messages received.
    pub module_requests: u64,
    /// `banalyticsBoxCoreModule` of the latest `GET_ENV_MOD_REQ`.
    pub last_core_module: Option<Value>,
    /// Its extension `banalyticsBoxCoreBuild` (digest, origin, the
    /// launcher's handshake, why the launcher runs its own build).
    #[serde(default)]
    pub last_core_build: Option<Value>,
    /// The assigned target set, as coordinates.
    pub assigned: Vec<String>,
    /// The newest [`MAX_STATUSES_PER_ENV`] `EVT_ENV_MOD_UPD_STS`s of the
    /// history, in the order received.
    pub statuses: Vec<StatusRecord>,
    /// Statuses recorded and not in `statuses`: past
    /// [`MAX_STATUSES_PER_ENV`], or deleted by the retention.
    pub statuses_dropped: u64,
    /// Statuses dropped because one with the same `seq` was recorded.
    #[serde(default)]
    pub duplicate_statuses: u64,
    /// Registered with the portal ([`super::registry`]).
    #[serde(default)]
    pub registered: bool,
    /// The name given at registration.
    #[serde(default)]
    pub name: String,
    /// Revoked: every connection is refused.
    #[serde(default)]
    pub revoked: bool,
    /// A new secret waits for the box's confirmation.
    #[serde(default)]
    pub rotation_pending: bool,
}

/// One live connection: its outbound queue, and the signal that closes it.
struct Live {
    tx: mpsc::Sender<String>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct EnvState {
    live: HashMap<u64, Live>,
    connections: u64,
    environment_hash: Option<String>,
    module_requests: u64,
    /// The last `banalyticsBoxCoreModule` and `banalyticsBoxCoreBuild`
    /// the box sent, as compact JSON: a parsed object costs ten times its
    /// text, for every box of the fleet.
    last_core_module: Option<Box<str>>,
    last_core_build: Option<Box<str>>,
    /// A sync asked of this process reached no connection of it: the box
    /// is told when it connects, here or to another process of the
    /// database (which says so, [`super::fleet`]), unless it reports a
    /// status elsewhere first (it was connected there and told there).
    owed_sync: bool,
}

/// `text`, a JSON value this portal wrote, parsed again.
fn parsed(text: &Option<Box<str>>) -> Option<Value> {
    serde_json::from_str(text.as_deref()?).ok()
}

/// `EVT_SYNC_SOFT`: synchronise now.
pub(crate) fn sync_frame() -> String {
    json!({"type": "EVT_SYNC_SOFT"}).to_string()
}

/// Live connections and what each environment reported.
#[derive(Default)]
pub(crate) struct Environments {
    envs: Mutex<BTreeMap<String, EnvState>>,
    next_id: AtomicU64,
}

impl Environments {
    /// Whether `env` may have state: it has some already, or there is
    /// room for one more under open registration.
    fn has_room_for(&self, env: &str) -> bool {
        let envs = self.envs.lock().expect("envs lock");
        envs.contains_key(env) || envs.len() < MAX_OPEN_ENVIRONMENTS
    }

    fn connect(
        &self,
        env: &str,
        hash: Option<String>,
        tx: mpsc::Sender<String>,
        close: Arc<Notify>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut envs = self.envs.lock().expect("envs lock");
        let e = envs.entry(env.to_string()).or_default();
        e.live.insert(id, Live { tx, close });
        e.connections += 1;
        e.environment_hash = hash;
        id
    }

    /// Closes every live connection of `env`; how many.
    pub(crate) fn close(&self, env: &str) -> usize {
        let envs = self.envs.lock().expect("envs lock");
        let Some(e) = envs.get(env) else { return 0 };
        for live in e.live.values() {
            live.close.notify_one();
        }
        e.live.len()
    }

    fn disconnect(&self, env: &str, id: u64) {
        if let Some(e) = self.envs.lock().expect("envs lock").get_mut(env) {
            e.live.remove(&id);
        }
    }

    /// Runs `f` on `env`'s state; `None`, and no state made, when `env`
    /// has none and the open-registration cap is reached.
    fn with<T>(&self, env: &str, f: impl FnOnce(&mut EnvState) -> T) -> Option<T> {
        let mut envs = self.envs.lock().expect("envs lock");
        if !envs.contains_key(env) && envs.len() >= MAX_OPEN_ENVIRONMENTS {
            return None;
        }
        Some(f(envs.entry(env.to_string()).or_default()))
    }

    /// Marks `env` owed a sync ([`EnvState::owed_sync`]): a `registered`
    /// environment always (the registry bounds them), another as long as
    /// there is room ([`MAX_OPEN_ENVIRONMENTS`]).
    pub(crate) fn owe_sync(&self, env: &str, registered: bool) {
        let mut envs = self.envs.lock().expect("envs lock");
        if registered || envs.contains_key(env) || envs.len() < MAX_OPEN_ENVIRONMENTS {
            envs.entry(env.to_string()).or_default().owed_sync = true;
        }
    }

    /// Whether `env` was owed a sync; it is not any more.
    pub(crate) fn take_owed_sync(&self, env: &str) -> bool {
        let mut envs = self.envs.lock().expect("envs lock");
        envs.get_mut(env)
            .is_some_and(|e| std::mem::take(&mut e.owed_sync))
    }

    /// Queues `text` on every live connection of `env`; how many took it.
    pub(crate) fn send(&self, env: &str, text: &str) -> usize {
        let envs = self.envs.lock().expect("envs lock");
        let Some(e) = envs.get(env) else { return 0 };
        e.live
            .values()
            .filter(|live| live.tx.try_send(text.to_string()).is_ok())
            .count()
    }

    /// Reports for every environment seen, assigned or registered.
    pub(crate) fn reports(
        &self,
        assignments: &BTreeMap<String, Vec<String>>,
        registered: &[RegisteredEnvironment],
        history: &mut BTreeMap<String, EnvHistory>,
        only: Option<&[String]>,
    ) -> Vec<EnvironmentReport> {
        let envs = self.envs.lock().expect("envs lock");
        let by_uuid: BTreeMap<&str, &RegisteredEnvironment> = registered
            .iter()
            .map(|r| (r.environment_uuid.as_str(), r))
            .collect();
        let mut names: Vec<&String> = envs
            .keys()
            .chain(assignments.keys())
            .chain(registered.iter().map(|r| &r.environment_uuid))
            .chain(history.keys())
            .collect();
        names.sort();
        names.dedup();
        let names: Vec<String> = match only {
            Some(only) => only.to_vec(),
            None => names.into_iter().cloned().collect(),
        };
        names
            .into_iter()
            .map(|name| {
                let reg = by_uuid.get(name.as_str());
                let mut r = EnvironmentReport {
                    environment_uuid: name.clone(),
                    assigned: assignments.get(&name).cloned().unwrap_or_default(),
                    registered: reg.is_some(),
                    name: reg.map(|r| r.name.clone()).unwrap_or_default(),
                    revoked: reg.is_some_and(|r| r.revoked),
                    rotation_pending: reg.is_some_and(|r| r.rotation_pending),
                    ..EnvironmentReport::default()
                };
                if let Some(h) = history.remove(&name) {
                    r.statuses = h.statuses;
                    r.statuses_dropped = h.dropped;
                    r.duplicate_statuses = h.duplicates;
                }
                if let Some(e) = envs.get(&name) {
                    r.connected = !e.live.is_empty();
                    r.live_connections = e.live.len();
                    r.connections = e.connections;
                    r.environment_hash = e.environment_hash.clone();
                    r.module_requests = e.module_requests;
                    r.last_core_module = parsed(&e.last_core_module);
                    r.last_core_build = parsed(&e.last_core_build);
                }
                r
            })
            .collect()
    }
}

/// The secret of `Authorization: Bearer SECRET`, if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The refusal, when `env` may not connect with the request's secret;
/// counts and logs it. The secret is never logged.
fn refusal(app: &App, env: &str, headers: &HeaderMap, peer: SocketAddr) -> Option<Response> {
    let secret = bearer(headers);
    let admission = if app.open_registration && !app.registry.contains(env) {
        if app.envs.has_room_for(env) {
            Admission::Admitted
        } else {
            warn!(env, %peer, "open registration: too many environments, upgrade refused");
            return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
        }
    } else {
        app.registry.admit(env, secret)
    };
    if admission == Admission::Admitted {
        return None;
    }
    app.stats.refused(peer.ip());
    app.changed();
    warn!(env, %peer, reason = admission.reason(), "box refused before the upgrade");
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "register the environment with the portal and give the box its environmentSecret",
        )
            .into_response(),
    )
}

/// `GET /portal-integration?environmentUuid=..&environmentHash=..`
pub(crate) async fn upgrade(
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(app): State<Arc<App>>,
) -> Response {
    app.stats.connection_attempt();
    if *app.shutdown.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let env = query.get("environmentUuid").cloned().unwrap_or_default();
    let hash = query.get("environmentHash").cloned();
    if let Some(refused) = refusal(&app, &env, &headers, peer) {
        return refused;
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            debug!(%rejection, "not a websocket upgrade");
            return rejection.into_response();
        }
    };
    let guard = app.task_guard();
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(CONNECTION_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            // A task of its own, so that the upgrade's task (the WebSocket
            // layer's, 4 KiB) ends here instead of living as long as the
            // connection: 40 MiB of a 10 000-box fleet.
            let connection = connection(socket, env, hash, app);
            tokio::spawn(async move {
                connection.await;
                drop(guard);
            });
        })
}

#[tracing::instrument(skip_all, fields(env = %env))]
async fn connection(mut socket: WebSocket, env: String, hash: Option<String>, app: Arc<App>) {
    let (tx, mut rx) = mpsc::channel::<String>(OUTBOUND_QUEUE);
    let close = Arc::new(Notify::new());
    let id = app.envs.connect(&env, hash, tx.clone(), close.clone());
    info!(connection = id, "box connected");
    app.box_connected(&env);
    if let Some(frame) = app.registry.rotation_frame(&env) {
        // A rotation the box has not confirmed yet: its new secret.
        let _ = tx.try_send(frame);
    }
    if app.envs.take_owed_sync(&env) {
        // A sync asked while the box was away (by an operator, or by a
        // rollout that assigned it a set) reached no connection, and a box
        // does not synchronise on a reconnection by itself.
        info!(
            connection = id,
            "a sync was asked while the box was away: EVT_SYNC_SOFT"
        );
        let _ = tx.try_send(sync_frame());
    }
    drop(tx);
    let mut shutdown = app.shutdown.clone();
    // The set this connection last answered the box's request with: the
    // statuses after it are about that set (`StatusRecord::served_set`).
    let mut served: Option<Box<str>> = None;
    loop {
        tokio::select! {
            _ = super::stopped(&mut shutdown) => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = close.notified() => {
                info!(connection = id, "closing the connection of a revoked environment");
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            Some(text) = rx.recv() => {
                if let Err(error) = socket.send(Message::Text(text.into())).await {
                    warn!(%error, "send failed");
                    break;
                }
            }
            frame = socket.recv() => match frame {
                None => break,
                Some(Err(error)) => {
                    warn!(%error, "connection failed");
                    break;
                }
                Some(Ok(Message::Text(text))) => match handle(&app, &env, text.as_str()) {
                    Handled::Done => {}
                    Handled::Served { reply, set } => {
                        served = Some(set);
                        if let Err(error) = socket.send(Message::Text(reply.into())).await {
                            warn!(%error, "send failed");
                            break;
                        }
                    }
                    Handled::Status { env, mut record } => {
                        record.served_set = served.as_deref().map(str::to_owned);
                        // The next frame (a ping whose pong confirms this
                        // status) is read only once the status committed.
                        // Boxed: the wait is the largest state of a
                        // connection, which it is in only while its status
                        // waits for its batch.
                        if !Box::pin(record_status(&app, env, record)).await {
                            warn!(connection = id, "closing the connection: its status was not recorded, the box sends it again");
                            break;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Binary(b))) => debug!(bytes = b.len(), "binary frame ignored"),
                Some(Ok(_)) => {} // ping/pong: answered by the WebSocket layer
            }
        }
    }
    app.envs.disconnect(&env, id);
    info!(connection = id, "box disconnected");
    app.changed();
}

/// Whether a connection of `conn_env` may speak for `env`: its own, or
/// (a box connected without a UUID under open registration) one that is
/// not registered; a registered environment is spoken for only by a
/// connection that proved its secret.
fn speaks_for(app: &App, conn_env: &str, env: &str) -> bool {
    let ok = env == conn_env || !app.registry.contains(env);
    if !ok {
        warn!(
            env,
            "a frame naming a registered environment from a connection without its secret ignored"
        );
    }
    ok
}

/// What a text frame asks of its connection.
enum Handled {
    /// Nothing more.
    Done,
    /// This answer to the box's request for its set, named `set`.
    Served {
        /// The `GET_ENV_MOD_RES` frame.
        reply: String,
        /// Its set's name (`rollout::set_name`).
        set: Box<str>,
    },
    /// Recording this status ([`record_status`]).
    Status {
        /// The environment it is recorded for.
        env: String,
        /// The status.
        record: StatusRecord,
    },
}

/// Records a status through the portal's [`super::recorder`], waiting for
/// its batch to commit; `false` when it was not recorded (the connection
/// closes, so that the box cannot take it for read and sends it again).
async fn record_status(app: &App, env: String, record: StatusRecord) -> bool {
    // What the log says of it, without a copy of the module object: a
    // fleet's wave has thousands of statuses waiting for their batch.
    let (status, module, seq) = (
        record.status.clone(),
        module_label(&record.module),
        record.seq,
    );
    match app.recorder.record(env.clone(), record).await {
        Ok(Recorded::New) => {
            info!(env, %status, module, seq = ?seq, "status reported");
            true
        }
        Ok(Recorded::Duplicate) => {
            app.stats.duplicate_status();
            info!(env, %status, seq = ?seq, "status already recorded: duplicate dropped");
            true
        }
        Err(error) => {
            tracing::error!(env, %error, %status, seq = ?seq, "status not recorded");
            false
        }
    }
}

/// Handles one text frame: what its connection does next.
fn handle(app: &App, conn_env: &str, text: &str) -> Handled {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(error) => {
            warn!(%error, bytes = text.len(), "malformed frame skipped");
            return Handled::Done;
        }
    };
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "GET_ENV_MOD_REQ" => {
            let env = if conn_env.is_empty() {
                msg.get("environmentUUID")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            } else {
                conn_env
            };
            if !speaks_for(app, conn_env, env) {
                return Handled::Done;
            }
            app.envs.with(env, |e| {
                e.module_requests += 1;
                let compact = |k: &str| msg.get(k).map(|v| v.to_string().into_boxed_str());
                e.last_core_module = compact("banalyticsBoxCoreModule");
                e.last_core_build = compact("banalyticsBoxCoreBuild");
            });
            let modules = app.store.target_set(env);
            info!(env, modules = modules.len(), "answering GET_ENV_MOD_REQ");
            let coordinates: Vec<String> = modules.iter().map(module_label).collect();
            Handled::Served {
                reply: json!({"type": "GET_ENV_MOD_RES", "modules": modules}).to_string(),
                set: crate::rollout::set_name(&coordinates).into_boxed_str(),
            }
        }
        "EVT_ENV_MOD_UPD_STS" => {
            let field = |k: &str| msg.get(k).cloned().unwrap_or(Value::Null);
            let record = StatusRecord {
                environment_uuid: field("environmentUuid"),
                module: field("module"),
                status: field("status"),
                status_message: field("statusMessage"),
                seq: msg.get("seq").and_then(Value::as_u64),
                outbox_id: msg
                    .get("outboxId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                received_ms: Some(now_ms()),
                served_set: None,
            };
            let env = if conn_env.is_empty() {
                record
                    .environment_uuid
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                conn_env.to_string()
            };
            if !speaks_for(app, conn_env, &env) {
                return Handled::Done;
            }
            if app.envs.with(&env, |_| ()).is_none() {
                warn!(
                    env,
                    "open registration: too many environments, status dropped"
                );
                return Handled::Done;
            }
            Handled::Status { env, record }
        }
        ROTATED_FRAME => {
            let sha256 = msg
                .get("secretSha256")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if app.registry.confirm(conn_env, sha256) {
                app.changed();
            } else {
                warn!(
                    env = conn_env,
                    "a rotation confirmation for no pending secret ignored"
                );
            }
            Handled::Done
        }
        other => {
            debug!(r#type = other, "unknown message type ignored");
            Handled::Done
        }
    }
}
