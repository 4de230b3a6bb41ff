//! `Link`: the one WebSocket to the portal, from connect to reconnect.
//!
//! The actor owns a connection loop (an actix-spawned future, so a panic in
//! it fails the actor and goes to the supervisor): connect, serve, and after
//! a loss wait a jittered, growing delay ([`Timing::backoff`]) and connect
//! again, forever. While connected it pings every
//! [`Timing::ping_interval`]; a link that brings no pong and no frame for
//! [`Timing::dead_after`] is dead and is dropped. Each text frame is decoded
//! ([`crate::frame`]) and published on the bus as its type; a frame that
//! cannot be decoded is logged and skipped, and the link stays up. The link
//! state goes out on the bus as `PortalLinkChanged` and, for the outbox, on
//! a watch channel.
//!
//! Frames to the portal arrive as [`SendFrame`]; the reply says whether the
//! frame was written ([`LinkDown`] otherwise: the sender keeps it and tries
//! again when the link is back). A written frame is not yet a received one:
//! a link that dies after the write loses what was in flight. So
//! [`ConfirmFrames`] asks the portal to prove it read every frame written
//! so far: the link sends a ping and answers once the pong comes. Every
//! ping carries a number (8 bytes, big-endian) and a pong echoes its
//! ping's; a pong of the confirming ping or of a later one is the proof,
//! since the portal reads the connection in order and may answer only the
//! latest of several pings (RFC 6455 5.5.3). No pong within
//! [`Timing::dead_after`] means the link is dead, as for the keep-alive.
//!
//! Frames over [`MAX_FRAME_BYTES`] and up to [`HARD_FRAME_LIMIT`] are read
//! and skipped. A frame over the hard limit cannot be skipped without
//! reading it, so the WebSocket library refuses it and the link reconnects.
//!
//! The upgrade request carries the environment's secret, when the home
//! has one, as `Authorization: Bearer SECRET` (never in the URL, never
//! logged); a portal that refuses it (401) is a failed attempt like any
//! other, shown in `status`, retried with the backoff. A
//! [`frame::SECRET_ROTATE`] frame is handled here and goes to no
//! component: the new secret is stored in the registration file
//! (write-rename-fsync, [`registration::store_secret`]) and only then
//! acknowledged with [`frame::SECRET_ROTATED`]; the portal keeps the old
//! secret working until that acknowledgement (or a connection with the
//! new one), so a crash in between loses nothing.
//!
//! Lifecycle: a restart drops the connection (the portal sees it close) and
//! connects afresh with a fresh backoff. Stopping sends a WebSocket close
//! and publishes the link as down.

use std::{sync::Arc, time::Duration};

use actix::{fut, prelude::*};
use backon::BackoffBuilder;
use banalytics_messages::portal::PortalLinkChanged;
use banalytics_sdk::{
    status::{now_ms, StatusBoard},
    Bus,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::{timeout, Instant},
};
use tokio_tungstenite::{
    tungstenite::{
        self, client::IntoClientRequest as _, protocol::WebSocketConfig, Message as WsMessage,
    },
    Connector, MaybeTlsStream, WebSocketStream,
};
use tracing::{debug, info, warn};

use crate::{
    config::{PortalUrl, Timing},
    frame::{self, MAX_FRAME_BYTES},
    PortalError,
};
use banalytics_home::registration::{self, EnvironmentSecret};

/// The largest frame the WebSocket library reads at all. Frames between
/// [`MAX_FRAME_BYTES`] and this are read and skipped; a larger one ends the
/// connection, since it cannot be skipped unread. Four times the contract's
/// limit bounds memory per link at 16 MiB.
pub const HARD_FRAME_LIMIT: usize = 4 * MAX_FRAME_BYTES;

/// How long a stopping link waits to send its close frame.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the link needs to connect; shared by every instance of the actor.
pub struct LinkSettings {
    /// The portal's base URL.
    pub portal_url: PortalUrl,
    /// The `environmentHash` query value.
    pub environment_hash: String,
    /// The box home, for the registration file.
    pub home: std::path::PathBuf,
    /// TLS for `wss://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Ping, dead-link and backoff timing.
    pub timing: Timing,
    /// Where the link state is shown (`banalytics-box status`).
    pub board: StatusBoard,
    /// The component instance name on the board.
    pub component: String,
}

impl LinkSettings {
    /// The URL of the next connection attempt, with the environment UUID as
    /// registered now (empty when the box is not registered).
    pub fn endpoint(&self) -> url::Url {
        let uuid = match registration::environment_uuid(&self.home) {
            Ok(Some(uuid)) => uuid,
            Ok(None) => {
                warn!(
                    file = %registration::registration_file(&self.home).display(),
                    "box is not registered: connecting with an empty environmentUuid"
                );
                String::new()
            }
            Err(e) => {
                warn!(
                    file = %registration::registration_file(&self.home).display(),
                    error = %e,
                    "cannot read the registration: connecting with an empty environmentUuid"
                );
                String::new()
            }
        };
        self.portal_url.endpoint(&uuid, &self.environment_hash)
    }

    /// The environment's secret as stored now, for the next attempt's
    /// `Authorization` header; `None` (the portal may refuse) when the
    /// registration has none or cannot be read.
    pub fn secret(&self) -> Option<EnvironmentSecret> {
        match registration::environment_secret(&self.home) {
            Ok(secret) => secret,
            Err(e) => {
                warn!(
                    file = %registration::registration_file(&self.home).display(),
                    error = %e,
                    "cannot read the registration: connecting without the environment's secret"
                );
                None
            }
        }
    }

    /// Stores the secret a rotation brought and returns the frame that
    /// acknowledges it; `None` (no acknowledgement: the portal keeps the
    /// old secret working) when it cannot be stored.
    async fn store_rotated(&self, secret: EnvironmentSecret) -> Option<String> {
        let home = self.home.clone();
        let stored = secret.clone();
        let written =
            tokio::task::spawn_blocking(move || registration::store_secret(&home, &stored)).await;
        match written {
            Ok(Ok(())) => {
                info!("the portal rotated the environment's secret: stored");
                let uuid = registration::environment_uuid(&self.home)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Some(frame::secret_rotated(&uuid, &secret))
            }
            Ok(Err(e)) => {
                warn!(
                    file = %registration::registration_file(&self.home).display(),
                    error = %e,
                    "cannot store the environment's new secret: not acknowledged, the old one stays"
                );
                None
            }
            Err(e) => {
                warn!(error = %e, "storing the environment's new secret failed");
                None
            }
        }
    }

    /// Shows the link state as the component's details on the board.
    fn report(&self, connected: bool, connects: u64, last_error: Option<&str>) {
        self.board.set_details(
            &self.component,
            serde_json::json!({
                "portal": self.portal_url.base().as_str(),
                "connected": connected,
                "since_ms": now_ms(),
                "connects": connects,
                "last_error": last_error,
            }),
        );
    }
}

/// Sends one text frame to the portal.
#[derive(Debug, Clone)]
pub struct SendFrame(pub String);

impl Message for SendFrame {
    type Result = Result<(), LinkDown>;
}

/// Asks the portal to confirm that it read every frame written on this
/// connection so far (see the module docs). `Ok` once it did; [`LinkDown`]
/// when the link is down or goes down first, and then the sender cannot
/// know which of those frames arrived.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmFrames;

impl Message for ConfirmFrames {
    type Result = Result<(), LinkDown>;
}

/// The frame was not written (or not confirmed): the link is down (or went
/// down meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("portal link is down")]
pub struct LinkDown;

/// What the connection is asked to do.
enum Item {
    /// Write a text frame.
    Text(String),
    /// Ping, and answer when the pong comes.
    Confirm,
}

struct Outgoing {
    item: Item,
    ack: oneshot::Sender<Result<(), LinkDown>>,
}

/// The link actor; see the module docs.
pub struct Link {
    settings: Arc<LinkSettings>,
    bus: Bus,
    up: Arc<watch::Sender<bool>>,
    tx: mpsc::Sender<Outgoing>,
    rx: Option<mpsc::Receiver<Outgoing>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Link {
    /// A link instance. `up` is shared with the outbox and outlives
    /// instances.
    pub fn new(settings: Arc<LinkSettings>, bus: Bus, up: Arc<watch::Sender<bool>>) -> Self {
        // One frame in flight: the outbox waits for each acknowledgement
        // before it hands over the next, and keeps the rest.
        let (tx, rx) = mpsc::channel(1);
        Link {
            settings,
            bus,
            up,
            tx,
            rx: Some(rx),
            shutdown: None,
        }
    }
}

impl Actor for Link {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.up.send_replace(false);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        self.shutdown = Some(shutdown_tx);
        let rx = self.rx.take().expect("a link instance starts once");
        let run = run(
            self.settings.clone(),
            self.bus.clone(),
            self.up.clone(),
            rx,
            shutdown_rx,
        );
        ctx.spawn(fut::wrap_future::<_, Self>(run).map(|(), _, ctx| ctx.stop()));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // First ask the connection loop to close the WebSocket; it stops
        // the actor when it is done.
        match self.shutdown.take().map(|shutdown| shutdown.send(())) {
            Some(Ok(())) => Running::Continue,
            _ => Running::Stop,
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.up.send_replace(false);
    }
}

impl Handler<SendFrame> for Link {
    type Result = ResponseFuture<Result<(), LinkDown>>;

    fn handle(&mut self, SendFrame(text): SendFrame, _: &mut Context<Self>) -> Self::Result {
        self.hand_over(Item::Text(text))
    }
}

impl Handler<ConfirmFrames> for Link {
    type Result = ResponseFuture<Result<(), LinkDown>>;

    fn handle(&mut self, _: ConfirmFrames, _: &mut Context<Self>) -> Self::Result {
        self.hand_over(Item::Confirm)
    }
}

impl Link {
    /// Hands `item` to the connection and waits for its answer.
    fn hand_over(&self, item: Item) -> ResponseFuture<Result<(), LinkDown>> {
        if !*self.up.borrow() {
            return Box::pin(std::future::ready(Err(LinkDown)));
        }
        let tx = self.tx.clone();
        Box::pin(async move {
            let (ack, acked) = oneshot::channel();
            tx.send(Outgoing { item, ack })
                .await
                .map_err(|_| LinkDown)?;
            acked.await.unwrap_or(Err(LinkDown))
        })
    }
}

/// A [`ConfirmFrames`] that waits for its pong.
struct Confirming {
    /// The number of its ping.
    ping: u64,
    /// When that ping was written.
    sent: Instant,
    /// Whom to answer.
    ack: oneshot::Sender<Result<(), LinkDown>>,
}

/// How a connection ended.
enum End {
    Shutdown,
    Lost(String),
}

async fn run(
    settings: Arc<LinkSettings>,
    bus: Bus,
    up: Arc<watch::Sender<bool>>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let timing = settings.timing;
    let mut delays = timing.backoff().build();
    let mut connects = 0u64;
    let mut last_error: Option<String> = None;
    settings.report(false, connects, None);
    loop {
        let url = settings.endpoint();
        let secret = settings.secret();
        let attempt = tokio::select! {
            attempt = connect(&url, secret.as_ref(), &settings) => attempt,
            _ = &mut shutdown => return,
        };
        match attempt {
            Ok(socket) => {
                info!(portal = %settings.portal_url.base(), "portal link up");
                connects += 1;
                settings.report(true, connects, last_error.as_deref());
                up.send_replace(true);
                bus.publish(PortalLinkChanged { connected: true }).await;
                let since = Instant::now();
                let end = serve(socket, &settings, &bus, &up, &mut outgoing, &mut shutdown).await;
                up.send_replace(false);
                while let Ok(out) = outgoing.try_recv() {
                    let _ = out.ack.send(Err(LinkDown));
                }
                bus.publish(PortalLinkChanged { connected: false }).await;
                match end {
                    End::Shutdown => {
                        info!(portal = %settings.portal_url.base(), "portal link closed");
                        settings.report(false, connects, last_error.as_deref());
                        return;
                    }
                    End::Lost(reason) => {
                        warn!(portal = %settings.portal_url.base(), %reason, "portal link lost");
                        settings.report(false, connects, Some(&reason));
                        last_error = Some(reason);
                        // A link that stayed up a while starts over from the
                        // shortest delay; one that keeps dropping at once
                        // keeps backing off.
                        if since.elapsed() >= timing.dead_after {
                            delays = timing.backoff().build();
                        }
                    }
                }
            }
            Err(e) => {
                warn!(portal = %settings.portal_url.base(), error = %e, "cannot connect to the portal");
                let reason = e.to_string();
                settings.report(false, connects, Some(&reason));
                last_error = Some(reason);
            }
        }
        let delay = delays.next().unwrap_or(timing.max_backoff);
        info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the portal after a delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// The upgrade request for `url`, with `Authorization: Bearer SECRET`
/// when there is a secret (marked sensitive, so no layer prints it).
fn upgrade_request(
    url: &url::Url,
    secret: Option<&EnvironmentSecret>,
) -> Result<tungstenite::handshake::client::Request, PortalError> {
    let connect_error = |reason: String| PortalError::Connect {
        url: url.to_string(),
        reason,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| connect_error(e.to_string()))?;
    if let Some(secret) = secret {
        let mut value =
            tungstenite::http::HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
                .map_err(|_| {
                    connect_error("the environment's secret is not a header value".into())
                })?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    Ok(request)
}

async fn connect(
    url: &url::Url,
    secret: Option<&EnvironmentSecret>,
    settings: &LinkSettings,
) -> Result<Socket, PortalError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT));
    let connector = Connector::Rustls(settings.tls.clone());
    let within = settings.timing.dead_after;
    let request = upgrade_request(url, secret)?;
    let handshake = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    );
    match timeout(within, handshake).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(PortalError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(PortalError::ConnectTimeout {
            url: url.to_string(),
            millis: within.as_millis() as u64,
        }),
    }
}

/// Serves one connection until it ends; keeps the dead-link deadline.
async fn serve(
    socket: Socket,
    settings: &LinkSettings,
    bus: &Bus,
    up: &watch::Sender<bool>,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    shutdown: &mut oneshot::Receiver<()>,
) -> End {
    let timing = &settings.timing;
    let (sink, mut stream) = socket.split();
    let mut ping =
        tokio::time::interval_at(Instant::now() + timing.ping_interval, timing.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = Connection {
        sink,
        timing,
        up,
        last_heard: Instant::now(),
        pings: 0,
        confirming: None,
    };
    loop {
        let step = tokio::select! {
            _ = &mut *shutdown => {
                let _ = timeout(CLOSE_GRACE, conn.sink.send(WsMessage::Close(None))).await;
                return End::Shutdown;
            }
            _ = tokio::time::sleep_until(conn.deadline()) => Err(conn.silence()),
            _ = ping.tick() => conn.ping().await,
            out = outgoing.recv() => match out {
                Some(out) => conn.send(out).await,
                None => Err(End::Shutdown),
            },
            msg = stream.next() => conn.receive(msg, settings, bus).await,
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// One connection's writing side and what it waits for.
struct Connection<'a> {
    sink: futures_util::stream::SplitSink<Socket, WsMessage>,
    timing: &'a Timing,
    up: &'a watch::Sender<bool>,
    /// When the portal was last heard from.
    last_heard: Instant,
    /// The number of the last ping sent.
    pings: u64,
    /// The confirmation that waits for a pong.
    confirming: Option<Confirming>,
}

impl Connection<'_> {
    /// When the link counts as dead: no frame or pong since `dead_after`,
    /// or no pong for a confirmation since then.
    fn deadline(&self) -> Instant {
        let deadline = self.last_heard + self.timing.dead_after;
        match &self.confirming {
            Some(c) => deadline.min(c.sent + self.timing.dead_after),
            None => deadline,
        }
    }

    /// The end of a link the portal fell silent on.
    fn silence(&self) -> End {
        End::Lost(format!(
            "no {} from the portal for {} ms",
            if self.confirming.is_some() {
                "pong"
            } else {
                "pong or frame"
            },
            self.timing.dead_after.as_millis()
        ))
    }

    /// The keep-alive ping.
    async fn ping(&mut self) -> Result<(), End> {
        self.pings += 1;
        let ping = ping_frame(self.pings);
        match timeout(self.timing.dead_after, self.sink.send(ping)).await {
            Ok(Ok(())) => {
                debug!("ping sent to the portal");
                Ok(())
            }
            Ok(Err(e)) => Err(End::Lost(format!("cannot send a ping: {e}"))),
            Err(_) => Err(End::Lost("ping not written in time".into())),
        }
    }

    /// Writes a frame, or asks the portal to confirm the frames so far.
    async fn send(&mut self, Outgoing { item, ack }: Outgoing) -> Result<(), End> {
        let (message, what) = match item {
            Item::Text(text) => (WsMessage::Text(text.into()), "frame"),
            Item::Confirm => {
                self.pings += 1;
                (ping_frame(self.pings), "ping")
            }
        };
        let bytes = message.len();
        let confirm = what == "ping";
        match timeout(self.timing.dead_after, self.sink.send(message)).await {
            Ok(Ok(())) if confirm => {
                debug!(ping = self.pings, "confirmation asked of the portal");
                self.confirming = Some(Confirming {
                    ping: self.pings,
                    sent: Instant::now(),
                    ack,
                });
                Ok(())
            }
            Ok(Ok(())) => {
                debug!(bytes, "frame sent to the portal");
                let _ = ack.send(Ok(()));
                Ok(())
            }
            failed => {
                self.up.send_replace(false);
                let _ = ack.send(Err(LinkDown));
                Err(End::Lost(match failed {
                    Ok(Err(e)) => format!("cannot send a {what}: {e}"),
                    _ => format!("{what} not written in time"),
                }))
            }
        }
    }

    /// Handles what the portal sent: a frame for the bus, a secret
    /// rotation, a pong, the end of the connection.
    async fn receive(
        &mut self,
        msg: Option<Result<WsMessage, tungstenite::Error>>,
        settings: &LinkSettings,
        bus: &Bus,
    ) -> Result<(), End> {
        self.last_heard = Instant::now();
        match msg {
            None => return Err(End::Lost("connection closed by the portal".into())),
            Some(Err(e)) => return Err(End::Lost(format!("read failed: {e}"))),
            Some(Ok(WsMessage::Text(text))) => {
                if let Some(rotation) = frame::secret_rotation(text.as_str()) {
                    return self.rotate(rotation, settings).await;
                }
                receive(text.as_str(), bus).await;
                // Waiting for a slow subscriber is not the portal's
                // silence.
                self.last_heard = Instant::now();
            }
            Some(Ok(WsMessage::Binary(b))) => {
                debug!(bytes = b.len(), "binary frame from the portal skipped");
            }
            Some(Ok(WsMessage::Close(frame))) => {
                info!(close = ?frame, "portal closes the link");
            }
            Some(Ok(WsMessage::Pong(payload))) => {
                let answered = pong_number(&payload);
                debug!(ping = answered, "pong from the portal");
                if self
                    .confirming
                    .as_ref()
                    .is_some_and(|c| answered >= Some(c.ping))
                {
                    if let Some(c) = self.confirming.take() {
                        let _ = c.ack.send(Ok(()));
                    }
                }
            }
            Some(Ok(_)) => {}
        }
        Ok(())
    }

    /// Stores a rotated secret and acknowledges it to the portal.
    async fn rotate(
        &mut self,
        rotation: Option<EnvironmentSecret>,
        settings: &LinkSettings,
    ) -> Result<(), End> {
        let Some(secret) = rotation else {
            warn!("a secret rotation frame without a usable secret skipped");
            return Ok(());
        };
        let Some(ack) = settings.store_rotated(secret).await else {
            return Ok(());
        };
        let frame = WsMessage::Text(ack.into());
        match timeout(self.timing.dead_after, self.sink.send(frame)).await {
            Ok(Ok(())) => info!("secret rotation acknowledged to the portal"),
            Ok(Err(e)) => return Err(End::Lost(format!("cannot send a frame: {e}"))),
            Err(_) => return Err(End::Lost("frame not written in time".into())),
        }
        self.last_heard = Instant::now();
        Ok(())
    }
}

/// Ping number `n`.
fn ping_frame(n: u64) -> WsMessage {
    WsMessage::Ping(n.to_be_bytes().to_vec().into())
}

/// The number a pong echoes; `None` for a payload that is not one of ours.
fn pong_number(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.try_into().ok()?))
}

/// Decodes one text frame and publishes it; logs and skips what cannot be
/// decoded.
async fn receive(text: &str, bus: &Bus) {
    match frame::decode(text) {
        Ok(decoded) => {
            let wire_type = decoded.message.wire_type();
            if !decoded.unknown_fields.is_empty() {
                debug!(wire_type, unknown_fields = ?decoded.unknown_fields, "unknown fields ignored");
            }
            let subscribers = decoded.message.publish(bus).await;
            debug!(wire_type, subscribers, "frame from the portal published");
        }
        Err(e) if e.is_expected() => debug!(error = %e, "frame from the portal skipped"),
        Err(e) => warn!(error = %e, "frame from the portal skipped"),
    }
}
