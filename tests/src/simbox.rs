//! A simulated box: an in-process client of the portal protocol, for fleets
//! larger than the machine can run as `banalytics-box` processes (a
//! 200-box rollout). It connects as its environment, asks for its target
//! set at connection and on every `EVT_SYNC_SOFT`, and for a set that
//! differs from the one it has reports `downloading` and `downloaded` per
//! module, then `installed` after its install time, as a real box does (or,
//! told to fail, `downloading` and then `download_error`). It
//! downloads nothing from the repository and runs nothing: it measures the
//! portal's side of a rollout (connections, statuses, waves), not the
//! box's. Like a box, it connects again after a failed attempt or a
//! dropped connection, with backoff and jitter.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest as _, Message},
};

/// How a simulated box behaves.
#[derive(Debug, Clone)]
pub struct SimBox {
    /// `ws://ADDR/portal-integration?...` of its environment.
    pub ws_url: String,
    /// Its environment UUID.
    pub env: String,
    /// Its environment's secret, sent as `Authorization: Bearer` (the
    /// portal refuses a registered environment without it).
    pub secret: Option<String>,
    /// From `downloaded` to `installed`: a real box's restart and grace.
    pub install_time: Duration,
    /// Fails every set: `download_error` after the first `downloading`.
    pub fail: bool,
}

fn coordinates(m: &Value) -> String {
    let f = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    format!("{}:{}:{}", f("groupId"), f("artifactId"), f("version"))
}

/// The first delay before a simulated box connects again after a failed
/// connection attempt or a dropped connection.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest such delay: it doubles after each failed attempt up to
/// this, as a box's link does.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a connection attempt (TCP, the upgrade's request and its
/// answer) may take before it counts as failed and is tried again: a box's
/// link gives its handshake the dead-link deadline, 30 s by default. An
/// attempt the portal never answers (its accept queue overflowed while
/// thousands connected at once) would otherwise leave the box out of the
/// fleet for good.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// `backoff` with jitter: a delay drawn from its upper half, so that a
/// fleet refused at once does not come back at once.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(fastrand::f64())
}

/// How a conversation with the portal ended.
enum Ended {
    /// `stop` turned true.
    Stopped,
    /// The connection closed or failed: connect again.
    Dropped,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl SimBox {
    /// Runs until `stop` turns true; returns how many sets it installed.
    /// A failed connection attempt or a dropped connection is retried
    /// after a delay ([`FIRST_BACKOFF`], doubled up to [`MAX_BACKOFF`],
    /// with jitter), as a box's link does; a box connected again asks for
    /// its set again.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<usize> {
        let mut installed: Vec<String> = Vec::new();
        let mut installs = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let stopped = *stop.borrow();
            if stopped {
                break;
            }
            match self.connect().await {
                Ok(ws) => {
                    backoff = FIRST_BACKOFF;
                    match self
                        .converse(ws, &mut stop, &mut installed, &mut installs)
                        .await
                    {
                        Ok(Ended::Stopped) => break,
                        Ok(Ended::Dropped) | Err(_) => {}
                    }
                }
                Err(_) => backoff = (backoff * 2).min(MAX_BACKOFF),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(jittered(backoff)) => {}
            }
        }
        Ok(installs)
    }

    /// One connection attempt, with the environment's secret.
    async fn connect(&self) -> Result<Socket> {
        let mut upgrade = self.ws_url.as_str().into_client_request()?;
        if let Some(secret) = &self.secret {
            upgrade
                .headers_mut()
                .insert("Authorization", format!("Bearer {secret}").parse()?);
        }
        let (ws, _) = tokio::time::timeout(CONNECT_WITHIN, connect_async(upgrade))
            .await
            .with_context(|| format!("connecting {}: no answer in time", self.ws_url))?
            .with_context(|| format!("connecting {}", self.ws_url))?;
        Ok(ws)
    }

    /// One connection's conversation: asks for the set, then follows the
    /// portal's frames until `stop` or the connection ends.
    async fn converse(
        &self,
        mut ws: Socket,
        stop: &mut watch::Receiver<bool>,
        installed: &mut Vec<String>,
        installs: &mut usize,
    ) -> Result<Ended> {
        let request = json!({
            "type": "GET_ENV_MOD_REQ",
            "environmentUUID": self.env,
            "banalyticsBoxCoreModule": {"groupId": "com.banalytics.box", "artifactId": "core", "version": "1.0"},
        })
        .to_string();
        ws.send(Message::Text(request.clone().into())).await?;
        loop {
            let frame = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                frame = ws.next() => Some(frame),
            };
            let Some(frame) = frame else {
                let _ = ws.close(None).await;
                return Ok(Ended::Stopped);
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | None => return Ok(Ended::Dropped),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("the portal link failed"),
            };
            let msg: Value = serde_json::from_str(&text).context("a frame from the portal")?;
            match msg["type"].as_str() {
                Some("EVT_SYNC_SOFT") => {
                    ws.send(Message::Text(request.clone().into())).await?;
                }
                Some("GET_ENV_MOD_RES") => {
                    let modules = msg["modules"].as_array().cloned().unwrap_or_default();
                    let mut set: Vec<String> = modules.iter().map(coordinates).collect();
                    set.sort();
                    if set.is_empty() || set == *installed {
                        continue;
                    }
                    if self.fail {
                        for status in ["downloading", "download_error"] {
                            let s = json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": self.env, "module": modules[0], "status": status, "statusMessage": (status == "download_error").then_some("simulated failure")});
                            ws.send(Message::Text(s.to_string().into())).await?;
                        }
                        *installed = set;
                        continue;
                    }
                    for m in &modules {
                        for status in ["downloading", "downloaded"] {
                            let s = json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": self.env, "module": m, "status": status, "statusMessage": null});
                            ws.send(Message::Text(s.to_string().into())).await?;
                        }
                    }
                    tokio::time::sleep(self.install_time).await;
                    let s = json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": self.env, "module": null, "status": "installed", "statusMessage": null});
                    ws.send(Message::Text(s.to_string().into())).await?;
                    *installed = set;
                    *installs += 1;
                }
                _ => {}
            }
        }
    }
}
