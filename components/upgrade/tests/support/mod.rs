//! A hostile artifact repository on 127.0.0.1:0 for the fetch tests.
//!
//! Plain tokio `TcpListener`, one request per connection (`Connection:
//! close`), so every request and every body byte it sends is recorded. Its
//! [`Behaviour`] decides how it misbehaves: failing statuses, cut or stalled
//! bodies, extra bytes, ignored or wrong ranges, a changing ETag, a trickle.
//! Every response also carries a `Content-Disposition` with a path-escaping
//! file name, which the client must never use.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Path of the artifact the server holds.
pub const ARTIFACT_PATH: &str = "/repo/com/example/mod/1.0/mod-1.0.jar";

/// Second path serving the same artifact, as a redirect target.
pub const MOVED_PATH: &str = "/repo/moved/mod-1.0.jar";

/// Largest request head the server reads; a client sending more is broken.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Body bytes written per socket write (and per trickle step).
const WRITE_CHUNK_BYTES: usize = 1024;

/// How a range request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMode {
    /// `206` from the requested byte when `If-Range` matches, else `200`.
    Honour,
    /// Always `200` with the whole body.
    Ignore,
    /// `206` with the whole body and a `Content-Range` starting at 0.
    WrongStart,
}

/// How the server behaves; change it between requests with [`TestServer::set`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The artifact.
    pub body: Vec<u8>,
    /// Its ETag, sent with every artifact response.
    pub etag: Option<String>,
    /// Its Last-Modified, sent with every artifact response.
    pub last_modified: Option<String>,
    /// Whether responses carry `Content-Length` (else the body ends at close).
    pub send_content_length: bool,
    /// How range requests are answered.
    pub range: RangeMode,
    /// Statuses answered (with an empty body) to the next artifact requests.
    pub fail_next: VecDeque<u16>,
    /// How many of the next bodies are cut by closing the connection.
    pub truncate_next: usize,
    /// Body bytes sent before a cut.
    pub truncate_at: usize,
    /// How many of the next bodies stall (send nothing more, keep the socket).
    pub stall_next: usize,
    /// Body bytes sent before a stall.
    pub stall_at: usize,
    /// Garbage bytes sent after the body (counted in `Content-Length`).
    pub extra_bytes: usize,
    /// Delay between [`WRITE_CHUNK_BYTES`] writes; `None` writes at once.
    pub trickle: Option<Duration>,
    /// Bytes per trickle write (defaults to [`WRITE_CHUNK_BYTES`] when 0).
    pub trickle_bytes: usize,
    /// Whether the artifact answers 404.
    pub not_found: bool,
    /// Content of `{artifact}.sha256`; `None` answers 404.
    pub digest_file: Option<String>,
    /// `Location` of a `302` answered for the artifact path.
    pub redirect_to: Option<String>,
}

impl Behaviour {
    /// A well-behaved server for `body` with an ETag.
    pub fn serving(body: Vec<u8>) -> Self {
        Self {
            body,
            etag: Some("\"v1\"".to_owned()),
            last_modified: None,
            send_content_length: true,
            range: RangeMode::Honour,
            fail_next: VecDeque::new(),
            truncate_next: 0,
            truncate_at: 0,
            stall_next: 0,
            stall_at: 0,
            extra_bytes: 0,
            trickle: None,
            trickle_bytes: 0,
            not_found: false,
            digest_file: None,
            redirect_to: None,
        }
    }
}

/// One request as the server saw it, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `If-Range` header.
    pub if_range: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes actually written to the socket.
    pub body_bytes_sent: u64,
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    requests: Vec<Recorded>,
}

/// The running server; it stops with the test's runtime.
#[derive(Clone)]
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            behaviour,
            requests: Vec::new(),
        }));
        let server = Self { addr, state };
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let connection = accepting.clone();
                tokio::spawn(async move { connection.serve(socket).await });
            }
        });
        server
    }

    /// The URL of the artifact.
    pub fn artifact_url(&self) -> String {
        self.url(ARTIFACT_PATH)
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Changes the behaviour for the next requests.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.lock().unwrap().behaviour);
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Body bytes sent over all requests.
    pub fn body_bytes_sent(&self) -> u64 {
        self.requests().iter().map(|r| r.body_bytes_sent).sum()
    }

    fn add_sent(&self, index: usize, bytes: usize) {
        self.state.lock().unwrap().requests[index].body_bytes_sent += bytes as u64;
    }

    async fn serve(&self, mut socket: TcpStream) {
        let Some(head) = read_head(&mut socket).await else {
            return;
        };
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or_default().split_whitespace();
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let mut range = None;
        let mut if_range = None;
        let mut user_agent = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = Some(value.trim().to_owned());
                match name.trim().to_ascii_lowercase().as_str() {
                    "range" => range = value,
                    "if-range" => if_range = value,
                    "user-agent" => user_agent = value,
                    _ => {}
                }
            }
        }
        let plan = self.plan(&path, range.as_deref(), if_range.as_deref());
        let index = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(Recorded {
                method: method.clone(),
                path,
                range,
                if_range,
                user_agent,
                status: plan.status,
                body_bytes_sent: 0,
            });
            state.requests.len() - 1
        };
        let mut response = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", plan.status);
        response.push_str("Content-Disposition: attachment; filename=\"../../evil.jar\"\r\n");
        for (name, value) in &plan.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(length) = plan.content_length {
            response.push_str(&format!("Content-Length: {length}\r\n"));
        }
        response.push_str("\r\n");
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        if method == "HEAD" {
            return;
        }
        let (send, end) = match plan.end {
            End::Complete => (plan.body.len(), End::Complete),
            End::CutAt(at) | End::StallAt(at) => (at.min(plan.body.len()), plan.end),
        };
        let step = match plan.trickle_bytes {
            0 => WRITE_CHUNK_BYTES,
            n => n,
        };
        for chunk in plan.body[..send].chunks(step) {
            if socket.write_all(chunk).await.is_err() || socket.flush().await.is_err() {
                return;
            }
            self.add_sent(index, chunk.len());
            if let Some(delay) = plan.trickle {
                tokio::time::sleep(delay).await;
            }
        }
        match end {
            End::Complete | End::CutAt(_) => {
                let _ = socket.shutdown().await;
            }
            End::StallAt(_) => {
                // Keep the connection open and silent well past any read timeout.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }

    /// Decides the answer and consumes the one-shot misbehaviours.
    fn plan(&self, path: &str, range: Option<&str>, if_range: Option<&str>) -> Plan {
        let mut state = self.state.lock().unwrap();
        let b = &mut state.behaviour;
        let digest_path = format!("{ARTIFACT_PATH}.sha256");
        if path == digest_path {
            return match &b.digest_file {
                Some(text) => Plan::whole(200, text.clone().into_bytes()),
                None => Plan::whole(404, Vec::new()),
            };
        }
        if (path != ARTIFACT_PATH && path != MOVED_PATH) || b.not_found {
            return Plan::whole(404, Vec::new());
        }
        if let (ARTIFACT_PATH, Some(location)) = (path, &b.redirect_to) {
            let mut plan = Plan::whole(302, Vec::new());
            plan.headers.push(("Location", location.clone()));
            return plan;
        }
        if let Some(status) = b.fail_next.pop_front() {
            return Plan::whole(status, Vec::new());
        }
        let mut full = b.body.clone();
        full.extend(std::iter::repeat_n(0xEE, b.extra_bytes));
        let len = full.len();
        let mut headers = Vec::new();
        if let Some(etag) = &b.etag {
            headers.push(("ETag", etag.clone()));
        }
        if let Some(lm) = &b.last_modified {
            headers.push(("Last-Modified", lm.clone()));
        }
        let validator_matches = match if_range {
            None => true,
            Some(v) => Some(v) == b.etag.as_deref() || Some(v) == b.last_modified.as_deref(),
        };
        let start = range
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        let (status, body) = match (start, b.range) {
            (Some(start), RangeMode::Honour) if validator_matches => {
                if start >= len {
                    headers.push(("Content-Range", format!("bytes */{len}")));
                    (416, Vec::new())
                } else {
                    headers.push(("Content-Range", format!("bytes {start}-{}/{len}", len - 1)));
                    (206, full[start..].to_vec())
                }
            }
            (Some(_), RangeMode::WrongStart) if len > 0 => {
                headers.push(("Content-Range", format!("bytes 0-{}/{len}", len - 1)));
                (206, full)
            }
            _ => (200, full),
        };
        let end = if status >= 300 {
            End::Complete
        } else if b.truncate_next > 0 {
            b.truncate_next -= 1;
            End::CutAt(b.truncate_at)
        } else if b.stall_next > 0 {
            b.stall_next -= 1;
            End::StallAt(b.stall_at)
        } else {
            End::Complete
        };
        Plan {
            status,
            content_length: b.send_content_length.then_some(body.len()),
            headers,
            body,
            end,
            trickle: b.trickle,
            trickle_bytes: b.trickle_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    Complete,
    CutAt(usize),
    StallAt(usize),
}

struct Plan {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_length: Option<usize>,
    body: Vec<u8>,
    end: End,
    trickle: Option<Duration>,
    trickle_bytes: usize,
}

impl Plan {
    fn whole(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_length: Some(body.len()),
            body,
            end: End::Complete,
            trickle: None,
            trickle_bytes: 0,
        }
    }
}

async fn read_head(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            return None;
        }
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8(head).ok()
}

/// A deterministic, non-repeating-looking body of `len` bytes.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
