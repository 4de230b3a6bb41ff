//! The local control endpoint: a Unix socket under the home (mode 0600, in
//! the 0700 `state/` folder) that the CLI uses to ask the running host.
//!
//! One request per connection: a JSON line in, a JSON line out.

use std::{io, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, warn};

use crate::host::Host;

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

/// Binds the socket, replacing a stale one (the caller holds the home lock,
/// so no other host uses it).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until `shutdown` changes.
pub async fn serve(listener: UnixListener, host: Arc<Host>, mut shutdown: watch::Receiver<bool>) {
    let layout = banalytics_home::Layout::new(host.home());
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
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
    let receivers = host
        .bus()
        .publish(UpgradeRequested {
            retry,
            request: Some(request),
        })
        .await;
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
    stream: UnixStream,
    host: &Host,
    layout: &banalytics_home::Layout,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
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
        Ok(Request::Status) => Response {
            ok: true,
            message: None,
            data: Some(serde_json::json!({
                "host": {
                    "running": true,
                    "pid": std::process::id(),
                    // What an isolated component's process gets: the
                    // kernel's Landlock (`none`: no file-system sandbox).
                    "sandbox": crate::isolation::sandbox::Support::probe(),
                },
                "components": host.board().snapshot(),
                "busy": host.busy().state(),
            })),
        },
        Ok(Request::Upgrade { retry, request }) => {
            host.wait_started().await;
            upgrade(host, retry, request).await
        }
        Ok(Request::Approve) => {
            host.wait_started().await;
            approve(host, layout).await
        }
        Ok(Request::Exchange(x)) => crate::exchange::answer(host.bus(), x).await,
        Ok(Request::Restart { component }) => match host.restart(&component).await {
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
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends one request to the host at `socket`; `Ok(None)` when no host is
/// listening there, or when it closed the connection without an answer (a
/// host that is stopping, for example to restart and apply a staged set).
pub fn request(socket: &Path, request: &Request) -> io::Result<Option<Response>> {
    use std::io::{BufRead, Write};
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(io::Error::new(e.kind(), not_yours(socket, &e)))
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
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

/// The error for a socket this user may not open: it is its owner's only
/// (mode 0600 in a 0700 home), so it names the command to run as that owner
/// (the packaged box's `sudo -u banalytics banalytics-box status`). `--home`
/// is added when `$BANALYTICS_HOME` does not name this home.
fn not_yours(socket: &Path, cause: &io::Error) -> String {
    let home = socket.parent().and_then(Path::parent).unwrap_or(socket);
    let owner = std::fs::metadata(home)
        .ok()
        .and_then(|m| user_name(std::os::unix::fs::MetadataExt::uid(&m)))
        .unwrap_or_else(|| "OWNER".into());
    let from_env = std::env::var_os("BANALYTICS_HOME").is_some_and(|h| Path::new(&h) == home);
    let home_arg = if from_env {
        String::new()
    } else {
        format!(" --home {}", home.display())
    };
    format!(
        "{cause}: the control socket is open to the home's owner only; \
         run `sudo -u {owner} banalytics-box{home_arg} status`"
    )
}

/// The login name of `uid`, from the password database.
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); it is
    // only read after getpwuid_r filled it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    // SAFETY: `pwd`, `buf` and `found` outlive the call, and `buf.len()` is
    // the buffer's size; the strings it sets point into `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_socket_of_another_user_names_the_command_to_run_as_its_owner() {
        let home = tempfile::tempdir().unwrap();
        let socket = home.path().join("state/control.sock");
        let cause = io::Error::from(io::ErrorKind::PermissionDenied);
        // SAFETY: getuid cannot fail.
        let me = user_name(unsafe { libc::getuid() }).expect("this user has a name");
        assert_eq!(
            not_yours(&socket, &cause),
            format!(
                "{cause}: the control socket is open to the home's owner only; \
                 run `sudo -u {me} banalytics-box --home {} status`",
                home.path().display()
            )
        );
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
