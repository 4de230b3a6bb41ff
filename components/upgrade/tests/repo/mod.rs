//! A hostile Maven repository on 127.0.0.1:0 for the upgrade center's tests
//! (the fetch engine's and the whole component's).
//!
//! Plain tokio `TcpListener`, one request per connection (`Connection:
//! close`), so every request and every body byte it sends is recorded. It
//! serves files by path under `/repo/`, each with `HEAD`, `Range` and
//! `If-Range` (ETag or Last-Modified), an optional `.sha256` beside it, and
//! its own [`Behaviour`]: failing statuses, cut or stalled bodies, extra
//! bytes, ignored or wrong ranges, a trickle, a redirect. Every response
//! also carries a `Content-Disposition` with a path-escaping file name,
//! which the client must never use.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The path prefix of the repository root.
const ROOT: &str = "/repo/";

/// Largest request head the server reads; a client sending more is broken.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Body bytes written per socket write (and per trickle step).
const WRITE_CHUNK_BYTES: usize = 1024;

/// How long a stalled body stays silent by default: well past any read
/// timeout of the tests.
const DEFAULT_STALL: Duration = Duration::from_secs(30);

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

/// How one path behaves; change it between requests with [`Repo::set`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The file.
    pub body: Vec<u8>,
    /// Its ETag, sent with every response for it.
    pub etag: Option<String>,
    /// Its Last-Modified, sent with every response for it.
    pub last_modified: Option<String>,
    /// Whether responses carry `Content-Length` (else the body ends at close).
    pub send_content_length: bool,
    /// How range requests are answered.
    pub range: RangeMode,
    /// Statuses answered (with an empty body) to the next requests.
    pub fail_next: VecDeque<u16>,
    /// How many of the next bodies are cut by closing the connection.
    pub truncate_next: usize,
    /// Body bytes sent before a cut.
    pub truncate_at: usize,
    /// How many of the next bodies stall (send nothing for `stall_for`,
    /// keeping the socket, then the rest).
    pub stall_next: usize,
    /// Body bytes sent before a stall.
    pub stall_at: usize,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Garbage bytes sent after the body (counted in `Content-Length`).
    pub extra_bytes: usize,
    /// Delay between writes; `None` writes at once.
    pub trickle: Option<Duration>,
    /// Bytes per trickle write (defaults to [`WRITE_CHUNK_BYTES`] when 0).
    pub trickle_bytes: usize,
    /// Whether the file answers 404.
    pub not_found: bool,
    /// Content of `{path}.sha256`; `None` answers 404.
    pub digest_file: Option<String>,
    /// `Location` of a `302` answered for the path.
    pub redirect_to: Option<String>,
}

impl Behaviour {
    /// A well-behaved file `body` with the ETag `"v1"` and no digest file.
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
            stall_for: DEFAULT_STALL,
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
    /// The request path relative to the repository root (as given when it
    /// is outside the root).
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

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, Behaviour>,
    requests: Vec<Recorded>,
    in_flight: u32,
    max_in_flight: u32,
}

/// The running repository; it stops with the test's runtime.
#[derive(Clone)]
pub struct Repo {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Repo {
    /// Binds 127.0.0.1:0 and serves nothing yet.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let repo = Self {
            addr,
            state: Arc::default(),
        };
        let accepting = repo.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let connection = accepting.clone();
                tokio::spawn(async move { connection.answer(socket).await });
            }
        });
        repo
    }

    /// The repository root URL.
    pub fn url(&self) -> String {
        format!("http://{}/repo", self.addr)
    }

    /// The URL of `path` (relative to the root).
    pub fn url_of(&self, path: &str) -> String {
        format!("http://{}{ROOT}{path}", self.addr)
    }

    /// Serves `path` (relative to the root) as `behaviour`.
    pub fn serve(&self, path: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), behaviour);
    }

    /// Puts a well-behaved file at `path` with an ETag from its content,
    /// and a `.sha256` beside it unless `with_digest` is false.
    pub fn put(&self, path: &str, body: Vec<u8>, with_digest: bool) {
        let digest = sha256_hex(&body);
        self.serve(
            path,
            Behaviour {
                etag: Some(format!("\"{}\"", &digest[..16])),
                digest_file: with_digest.then(|| format!("{digest}  x\n")),
                ..Behaviour::serving(body)
            },
        );
    }

    /// Changes how `path` behaves for the next requests.
    pub fn set(&self, path: &str, change: impl FnOnce(&mut Behaviour)) {
        let mut state = self.state.lock().unwrap();
        let behaviour = state
            .files
            .get_mut(path)
            .unwrap_or_else(|| panic!("nothing is served at {path}"));
        change(behaviour);
    }

    /// Every request seen so far (since [`Repo::reset_counters`]), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Body bytes sent over all requests.
    pub fn body_bytes_sent(&self) -> u64 {
        self.requests().iter().map(|r| r.body_bytes_sent).sum()
    }

    /// Body bytes sent for paths that are not `.sha256` files.
    pub fn artifact_bytes(&self) -> u64 {
        self.requests()
            .iter()
            .filter(|r| !r.path.ends_with(".sha256"))
            .map(|r| r.body_bytes_sent)
            .sum()
    }

    /// Body bytes sent for `path`.
    pub fn bytes_for(&self, path: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body_bytes_sent)
            .sum()
    }

    /// GET requests for artifacts (not `.sha256`), served or not.
    pub fn artifact_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.path.ends_with(".sha256"))
            .count()
    }

    /// The most artifact bodies sent at the same time.
    pub fn max_parallel(&self) -> u32 {
        self.state.lock().unwrap().max_in_flight
    }

    /// Forgets the requests seen so far.
    pub fn reset_counters(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    fn add_sent(&self, index: usize, bytes: usize) {
        if let Some(request) = self.state.lock().unwrap().requests.get_mut(index) {
            request.body_bytes_sent += bytes as u64;
        }
    }

    async fn answer(&self, mut socket: TcpStream) {
        let Some(head) = read_head(&mut socket).await else {
            return;
        };
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or_default().split_whitespace();
        let method = request_line.next().unwrap_or_default().to_owned();
        let raw_path = request_line.next().unwrap_or_default();
        let path = raw_path.strip_prefix(ROOT).unwrap_or(raw_path).to_owned();
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
                path: path.clone(),
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
        let _in_flight = (!path.ends_with(".sha256")).then(|| InFlight::enter(&self.state));
        let len = plan.body.len();
        let (send, stall) = match plan.end {
            End::Complete => (len, None),
            End::CutAt(at) => (at.min(len), None),
            End::StallAt(at, pause) => (len, Some((at.min(len), pause))),
        };
        let until = stall.map_or(send, |(at, _)| at);
        if !self.write_body(&mut socket, index, &plan, 0..until).await {
            return;
        }
        if let Some((at, pause)) = stall {
            // Silent, with the socket open, then the rest.
            tokio::time::sleep(pause).await;
            if !self.write_body(&mut socket, index, &plan, at..send).await {
                return;
            }
        }
        let _ = socket.shutdown().await;
    }

    /// Writes `bytes` of the body in steps (trickling if asked), counting
    /// what reached the socket; `false` when the client has gone.
    async fn write_body(
        &self,
        socket: &mut TcpStream,
        index: usize,
        plan: &Plan,
        bytes: std::ops::Range<usize>,
    ) -> bool {
        let step = match plan.trickle_bytes {
            0 => WRITE_CHUNK_BYTES,
            n => n,
        };
        for chunk in plan.body[bytes].chunks(step) {
            if socket.write_all(chunk).await.is_err() || socket.flush().await.is_err() {
                return false;
            }
            self.add_sent(index, chunk.len());
            if let Some(delay) = plan.trickle {
                tokio::time::sleep(delay).await;
            }
        }
        true
    }

    /// Decides the answer and consumes the one-shot misbehaviours.
    fn plan(&self, path: &str, range: Option<&str>, if_range: Option<&str>) -> Plan {
        let mut state = self.state.lock().unwrap();
        if !state.files.contains_key(path) {
            let digest = path
                .strip_suffix(".sha256")
                .and_then(|file| state.files.get(file))
                .and_then(|b| b.digest_file.clone());
            return match digest {
                Some(text) => Plan::whole(200, text.into_bytes()),
                None => Plan::whole(404, Vec::new()),
            };
        }
        let b = state.files.get_mut(path).expect("checked above");
        if b.not_found {
            return Plan::whole(404, Vec::new());
        }
        if let Some(location) = &b.redirect_to {
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
            End::StallAt(b.stall_at, b.stall_for)
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

/// Counts an artifact body in flight until dropped.
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn enter(state: &Arc<Mutex<State>>) -> Self {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    Complete,
    CutAt(usize),
    StallAt(usize, Duration),
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
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of `bytes` as the box's type.
pub fn sha256_of(bytes: &[u8]) -> banalytics_home::Sha256 {
    banalytics_home::Sha256::of(bytes)
}
