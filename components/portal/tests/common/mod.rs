//! A stand-in portal (a WebSocket server on 127.0.0.1:0, plain or TLS) and
//! a running portal-integration component on a bus, for the tests.

#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use banalytics_portal_integration::{create_with_timing, kind, Timing, KIND_NAME};
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit},
    Bus, BusMessage, ConfigSection, RestartPolicy, StatusBoard, Subscription,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::mpsc,
};
use tokio_tungstenite::{
    tungstenite::{
        handshake::server::{Request, Response},
        Message,
    },
    WebSocketStream,
};

/// How long a test waits for anything that should happen.
pub const WITHIN: Duration = Duration::from_secs(10);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One WebSocket connection the portal accepted.
pub struct Conn {
    /// The request path.
    pub path: String,
    /// The decoded query pairs.
    pub query: HashMap<String, String>,
    /// The upgrade request's `Authorization` header.
    pub authorization: Option<String>,
    pub ws: WebSocketStream<Box<dyn Io>>,
    /// When the portal's side of the handshake completed (before the box's).
    pub accepted_at: std::time::Instant,
}

/// What the portal saw of one incoming connection.
pub enum Accepted {
    Ws(Box<Conn>),
    /// The TLS or WebSocket handshake failed.
    Refused(String),
}

/// The stand-in portal.
pub struct Portal {
    pub addr: SocketAddr,
    tls: bool,
    accepted: mpsc::UnboundedReceiver<Accepted>,
}

impl Portal {
    /// A plain `ws://` portal.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A portal behind `tls` (`wss://`) when given.
    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(e) => {
                                let _ = tx.send(Accepted::Refused(format!("tls: {e}")));
                                return;
                            }
                        },
                    };
                    let _ = tx.send(accept_ws(io).await);
                });
            }
        });
        Portal {
            addr,
            tls: is_tls,
            accepted,
        }
    }

    /// The `portal_url` for this portal.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// The next incoming connection, accepted or refused.
    pub async fn next(&mut self, within: Duration) -> Option<Accepted> {
        tokio::time::timeout(within, self.accepted.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next accepted WebSocket connection; panics if none comes or one
    /// is refused.
    pub async fn next_conn(&mut self) -> Conn {
        match self.next(WITHIN).await {
            Some(Accepted::Ws(conn)) => *conn,
            Some(Accepted::Refused(e)) => panic!("connection refused by the portal: {e}"),
            None => panic!("no connection within {WITHIN:?}"),
        }
    }
}

async fn accept_ws(io: Box<dyn Io>) -> Accepted {
    let mut target = String::new();
    let mut authorization = None;
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        target = req.uri().to_string();
        authorization = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        Ok(resp)
    };
    match tokio_tungstenite::accept_hdr_async(io, callback).await {
        Ok(ws) => {
            let url = url::Url::parse(&format!("ws://portal{target}")).unwrap();
            Accepted::Ws(Box::new(Conn {
                path: url.path().to_owned(),
                query: url.query_pairs().into_owned().collect(),
                authorization,
                ws,
                accepted_at: std::time::Instant::now(),
            }))
        }
        Err(e) => Accepted::Refused(format!("websocket: {e}")),
    }
}

impl Conn {
    /// Sends a text frame.
    pub async fn send(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .unwrap();
    }

    /// The next text frame as JSON, answering pings meanwhile.
    pub async fn recv_json(&mut self) -> Value {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        };
        tokio::time::timeout(WITHIN, next)
            .await
            .expect("no frame within the time allowed")
    }

    /// Waits until the box closes the connection; true if it did within
    /// `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let closed = async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(within, closed).await.is_ok()
    }
}

/// A started component with its bus and board.
pub struct Running {
    pub bus: Bus,
    pub board: StatusBoard,
    ctx: ComponentContext,
    component: Box<dyn Component>,
    pub home: tempfile::TempDir,
}

pub const NAME: &str = "portal";

/// A home registered as `uuid` with the environment's `secret`.
pub fn home_with_secret(uuid: &str, secret: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/device-registration.properties"),
        format!("environmentUuid={uuid}\nenvironmentSecret={secret}\n"),
    )
    .unwrap();
    home
}

/// A home with `config/` and, when given, the registration's UUID.
pub fn home(environment_uuid: Option<&str>) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("config")).unwrap();
    if let Some(uuid) = environment_uuid {
        std::fs::write(
            home.path().join("config/device-registration.properties"),
            format!("#registration\nenvironmentUuid={uuid}\n"),
        )
        .unwrap();
    }
    home
}

/// Creates the component from `snippet` (through `kind().create`, or with
/// `timing` when given) and starts it on the current arbiter. Call
/// `subscribe` on the returned bus only for messages published later; use
/// `start_with_bus` to subscribe first.
pub fn start(home: tempfile::TempDir, snippet: &str, timing: Option<Timing>, bus: Bus) -> Running {
    let init = ComponentInit {
        name: NAME.into(),
        id: uuid_of(1),
        home: home.path().to_owned(),
        config: ConfigSection::from_snippet(
            NAME,
            &format!("kind = \"portal-integration\"\n{snippet}"),
        ),
    };
    let mut component = match timing {
        None => kind().create(&init),
        Some(t) => create_with_timing(&init, t),
    }
    .unwrap_or_else(|e| panic!("create: {e}"));
    let board = StatusBoard::new();
    board.register(NAME, KIND_NAME, &init.id.to_string());
    let mut ctx = ComponentContext::new(
        NAME,
        init.id,
        home.path(),
        RestartPolicy::Immediate,
        bus.clone(),
        board.clone(),
    );
    component
        .start(&mut ctx)
        .unwrap_or_else(|e| panic!("start: {e}"));
    Running {
        bus,
        board,
        ctx,
        component,
        home,
    }
}

fn uuid_of(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

impl Running {
    /// Stops the actors and the component, as the host does.
    pub async fn stop(mut self) {
        self.ctx.stop_actors().await;
        self.component.stopped();
    }

    /// What the component shows on the board.
    pub fn details(&self) -> Value {
        self.board
            .component(NAME)
            .map_or(Value::Null, |c| c.details)
    }

    /// Actor restarts recorded on the board.
    pub fn restarts(&self) -> u32 {
        self.board
            .component(NAME)
            .map_or(0, |c| c.actors.values().map(|a| a.restarts).sum())
    }
}

/// Polls `check` every 20 ms until it holds; false if it never does
/// within [`WITHIN`].
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + WITHIN;
    while std::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The next `M` on `sub`; panics when none comes in time.
pub async fn next<M: BusMessage + Clone>(sub: &mut Subscription<M>) -> M {
    let m = tokio::time::timeout(WITHIN, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no {} within {WITHIN:?}", M::TOPIC))
        .expect("bus gone");
    (*m).clone()
}

/// Whether an `M` arrives on `sub` within `within`.
pub async fn arrives<M: BusMessage>(sub: &mut Subscription<M>, within: Duration) -> bool {
    tokio::time::timeout(within, sub.recv()).await.is_ok()
}

/// Writes `text` under the home.
pub fn write(home: &Path, rel: &str, text: &str) {
    std::fs::write(home.join(rel), text).unwrap();
}

/// A TLS acceptor for 127.0.0.1 with a certificate issued by a fresh CA;
/// returns the CA's PEM too.
pub fn tls_portal_identity() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "test portal CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "portal");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}
