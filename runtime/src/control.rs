//! The local control endpoint: a Unix socket under the home (mode 0600, in
//! the 0700 `state/` folder), or on Windows a named pipe named after it
//! (owner-only ACL), that the CLI uses to ask the running host; the
//! transport is `crate::platform::control`.
//!
//! One request per connection: a JSON line in, a JSON line out.

use std::{io, path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::watch,
};
use tracing::{debug, info, warn};

use crate::{host::Host, platform::control as transport};

/// The longest request line accepted; a request is a few words.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// How long the CLI waits for the host's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `approve` waits for the upgrade center's answer.
pub const APPROVAL_WAIT: Duration = Duration::from_secs(10);

/// How long `upgrade` waits for the upgrade center to say what came of the
/// request: at once when refused or joined, once the portal named the
/// target set when it started a synchronisation (the portal has 60 s; past
/// this, the answer says the synchronisation was requested, and `status`
/// shows the rest).
pub const UPGRADE_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What the CLI can ask.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Component states.
    Status,
    /// Synchronise software now (the local "start upgrade").
    Upgrade {
        /// Install the target set even if it is quarantined (`upgrade
        /// --retry`). Absent in older requests, which means `false`.
        #[serde(default)]
        retry: bool,
        /// The asker's number for this request, which `status` shows in
        /// the synchronisation it started or joined (`upgrade --wait`
        /// follows that one). Absent in older requests.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Apply the staged set now, whatever it waits for (`approve`).
    Approve,
    /// Drop the staged set and tell the portal nothing was installed
    /// (`discard`, `crate::discard`).
    Discard {
        /// Who asked, for the log and the portal's status message (`cli`,
        /// `console`).
        by: String,
    },
    /// Restart the box (the console's Restart now): stops the host so
    /// that it starts again, as for a staged set.
    RestartBox {
        /// How (the upgrade center's `restart_mode`; the program of
        /// `command` is `box.toml`'s, never the request's).
        mode: banalytics_messages::upgrade::RestartMode,
        /// Who asked, for the log.
        by: String,
    },
    /// Restart a stopped or failed component.
    Restart {
        /// Instance name.
        component: String,
    },
    /// Publish a message and answer the first one on another topic
    /// (diagnostics and whole-system tests; see `exchange.rs`).
    Exchange(crate::exchange::Exchange),
}

/// The host's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request's data (for `status`: the host and its components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Binds the control channel at `path` (a stale socket is replaced; the
/// caller holds the home lock, so no other host uses it).
pub fn bind(path: &Path) -> io::Result<transport::Listener> {
    transport::bind(path)
}

/// Answers requests until `shutdown` changes.
pub async fn serve(
    mut listener: transport::Listener,
    host: Arc<Host>,
    mut shutdown: watch::Receiver<bool>,
) {
    let layout = banalytics_home::Layout::new(host.home());
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let (host, layout) = (host.clone(), layout.clone());
                    actix_rt::spawn(async move {
                        if let Err(e) = answer(stream, &host, &layout).await {
                            debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "control socket accept failed"),
            }
        }
    }
}

/// `approve`: refused when nothing is staged; otherwise the upgrade
/// center hears it on the bus.
async fn approve(host: &Host, layout: &banalytics_home::Layout) -> Response {
    let refuse = |message: String| Response {
        ok: false,
        message: Some(message),
        data: None,
    };
    if !layout.has_staged_set() {
        return refuse("nothing to approve: no staged set (status shows the sets)".to_owned());
    }
    use banalytics_messages::upgrade::{ApprovalHandled, ApproveStagedSet};
    let mut answers = host.bus().subscribe::<ApprovalHandled>();
    let receivers = host
        .bus()
        .publish(ApproveStagedSet { by: "cli".into() })
        .await;
    if receivers == 0 {
        return refuse("no component handles upgrades on this host".to_owned());
    }
    match tokio::time::timeout(APPROVAL_WAIT, answers.recv()).await {
        Ok(Some(a)) if a.restarting => Response {
            ok: true,
            message: Some(
                "staged set approved: the host restarts to apply it (after the busy leases, if any)"
                    .to_owned(),
            ),
            data: None,
        },
        Ok(Some(_)) => refuse(
            "the staged set waits for no approval (it restarts by itself, or the host holds its restart; status says why): nothing was changed"
                .to_owned(),
        ),
        _ => refuse(format!(
            "the upgrade center did not answer within {} s; nothing is known to have changed",
            APPROVAL_WAIT.as_secs()
        )),
    }
}

/// `upgrade`: publishes the request under a number (the asker's, else a
/// new one) and answers with what the upgrade center says came of it
/// (`UpgradeAnswered`): refused, joined a running synchronisation, started
/// one, or found the target set staged already and waiting. `data` holds
/// the request's number and the outcome.
async fn upgrade(host: &Host, retry: bool, request: Option<u64>) -> Response {
    use banalytics_messages::portal::{UpgradeAnswered, UpgradeOutcome, UpgradeRequested};
    let request = request.unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let mut answers = host.bus().subscribe::<UpgradeAnswered>();
    let request_message = UpgradeRequested {
        retry,
        request: Some(request),
    };
    let receivers = host.bus().publish(request_message).await;
    if receivers == 0 {
        return Response {
            ok: false,
            message: Some("no component handles upgrades on this host".to_owned()),
            data: None,
        };
    }
    let answered = tokio::time::timeout(UPGRADE_ANSWER_WAIT, async {
        while let Some(a) = answers.recv().await {
            if a.request == request {
                return Some(a);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(a) = answered else {
        return Response {
            ok: true,
            message: Some(format!(
                "synchronisation requested{}; the upgrade center did not say within {} s what came of it (the portal has not named the target set yet); `status` shows its progress",
                if retry { " with the quarantine lifted for it" } else { "" },
                UPGRADE_ANSWER_WAIT.as_secs()
            )),
            data: Some(serde_json::json!({ "request": request })),
        };
    };
    Response {
        ok: !matches!(a.outcome, UpgradeOutcome::Refused | UpgradeOutcome::Failed),
        message: Some(a.message.clone()),
        data: Some(serde_json::json!({ "request": request, "outcome": a.outcome })),
    }
}

async fn answer(
    stream: transport::Stream,
    host: &Host,
    layout: &banalytics_home::Layout,
) -> io::Result<()> {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(read)
        .take(MAX_REQUEST_BYTES)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response {
            ok: false,
            message: Some(format!("bad request: {e}")),
            data: None,
        },
        Ok(request) => respond(host, layout, request).await,
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Carries out one request: the one dispatcher of the control socket and
/// of the console (`crate::console::answer`).
pub async fn respond(host: &Host, layout: &banalytics_home::Layout, request: Request) -> Response {
    match request {
        Request::Status => Response {
            ok: true,
            message: None,
            data: Some(serde_json::json!({
                "host": {
                    "running": true,
                    "pid": std::process::id(),
                    // What an isolated component's process gets: the
                    // kernel's Landlock (`none`: no file-system sandbox).
                    "sandbox": crate::isolation::sandbox_status(),
                },
                "components": host.board().snapshot(),
                "busy": host.busy().state(),
            })),
        },
        Request::Upgrade { retry, request } => {
            host.wait_started().await;
            upgrade(host, retry, request).await
        }
        Request::Approve => {
            host.wait_started().await;
            approve(host, layout).await
        }
        Request::Discard { by } => {
            host.wait_started().await;
            crate::discard::discard(host, &by).await
        }
        Request::Exchange(x) => crate::exchange::answer(host.bus(), x).await,
        Request::Restart { component } => match host.restart(&component).await {
            Ok(message) => Response {
                ok: true,
                message: Some(message),
                data: None,
            },
            Err(refused) => Response {
                ok: false,
                message: Some(refused.to_string()),
                data: None,
            },
        },
        Request::RestartBox { mode, by } => {
            let reason = format!("restart asked by the operator ({by})");
            info!(?mode, %reason, "restart asked for");
            host.bus()
                .publish(banalytics_messages::upgrade::RestartRequested { mode, reason })
                .await;
            Response {
                ok: true,
                message: Some(
                    "the box restarts (after the busy leases, if any; a set on probation first gets its verdict)"
                        .to_owned(),
                ),
                data: None,
            }
        }
    }
}

/// Sends one request to the host at `socket`; `Ok(None)` when no host is
/// listening there, or when it closed the connection without an answer (a
/// host that is stopping, for example to restart and apply a staged set).
pub fn request(socket: &Path, request: &Request) -> io::Result<Option<Response>> {
    use std::io::{BufRead, Write};
    let Some(mut stream) = transport::connect(socket, CLIENT_TIMEOUT)? else {
        return Ok(None);
    };
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    let went_away = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    };
    let mut answer = String::new();
    let sent = stream
        .write_all(&line)
        .and_then(|()| io::BufReader::new(stream).read_line(&mut answer));
    match sent {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) if went_away(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    serde_json::from_str(&answer).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer from host: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)] // the client of a pipe: tests/system/windows.rs
    #[test]
    fn a_host_that_closes_without_answering_is_a_host_that_went_away() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let host = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                drop(stream); // stopping: no answer
            }
        });
        for _ in 0..2 {
            assert!(request(&socket, &Request::Status).unwrap().is_none());
        }
        host.join().unwrap();
        let gone = dir.path().join("gone.sock");
        assert!(request(&gone, &Request::Status).unwrap().is_none());
    }

    #[test]
    fn an_upgrade_request_of_an_older_cli_decodes_as_no_retry() {
        let old: Request = serde_json::from_str(r#"{"cmd":"upgrade"}"#).unwrap();
        assert!(matches!(
            old,
            Request::Upgrade {
                retry: false,
                request: None
            }
        ));
        let line = serde_json::to_string(&Request::Upgrade {
            retry: true,
            request: None,
        })
        .unwrap();
        assert_eq!(line, r#"{"cmd":"upgrade","retry":true}"#);
        assert!(matches!(
            serde_json::from_str::<Request>(&line).unwrap(),
            Request::Upgrade {
                retry: true,
                request: None
            }
        ));
        let line = serde_json::to_string(&Request::Upgrade {
            retry: false,
            request: Some(7),
        })
        .unwrap();
        assert_eq!(line, r#"{"cmd":"upgrade","retry":false,"request":7}"#);
    }
}
