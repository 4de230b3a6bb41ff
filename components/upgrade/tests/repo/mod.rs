//! A loopback Maven repository for the upgrade center's tests: serves files
//! by path with `HEAD`, `Range`/`If-Range` and `ETag`, counts the body
//! bytes it sends per path, and misbehaves per path on request.

#![allow(dead_code)]

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How one path misbehaves.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Statuses to answer before serving normally (e.g. 500).
    pub statuses: VecDeque<u16>,
    /// Close the connection after this many body bytes, for the next N
    /// responses (`cut_times`).
    pub cut_after: Option<usize>,
    /// How many responses are cut.
    pub cut_times: usize,
    /// Send the header, then stall for this long mid-body, once.
    pub stall: Option<Duration>,
    /// Answer a Range request with 200 and the whole body.
    pub ignore_range: bool,
    /// Answer a Range request with a 206 starting at 0.
    pub wrong_content_range: bool,
    /// Send this many extra bytes beyond Content-Length... as a longer body.
    pub extra_bytes: usize,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<String, Fault>,
    sent: HashMap<String, u64>,
    gets: HashMap<String, u32>,
    in_flight: u32,
    max_in_flight: u32,
}

/// The running repository.
#[derive(Clone)]
pub struct Repo {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Repo {
    /// Starts on 127.0.0.1:0 on the current tokio runtime.
    pub async fn start() -> Repo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s).await;
                });
            }
        });
        Repo { addr, state }
    }

    /// The repository root URL.
    pub fn url(&self) -> String {
        format!("http://{}/repo", self.addr)
    }

    /// Puts a file at `path` (relative to the root), with a `.sha256`
    /// beside it unless `with_digest` is false.
    pub fn put(&self, path: &str, body: Vec<u8>, with_digest: bool) {
        let mut st = self.state.lock().unwrap();
        if with_digest {
            st.files.insert(
                format!("{path}.sha256"),
                format!("{}  x\n", sha256_hex(&body)).into_bytes(),
            );
        } else {
            st.files.remove(&format!("{path}.sha256"));
        }
        st.files.insert(path.to_owned(), body);
    }

    /// Sets how `path` misbehaves.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_owned(), fault);
    }

    /// Body bytes sent for paths that are not `.sha256` files.
    pub fn artifact_bytes(&self) -> u64 {
        let st = self.state.lock().unwrap();
        st.sent
            .iter()
            .filter(|(p, _)| !p.ends_with(".sha256"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Body bytes sent for `path`.
    pub fn bytes_for(&self, path: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .sent
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// GET requests for artifacts (not `.sha256`).
    pub fn artifact_gets(&self) -> u32 {
        let st = self.state.lock().unwrap();
        st.gets
            .iter()
            .filter(|(p, _)| !p.ends_with(".sha256"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The most artifact bodies sent at the same time.
    pub fn max_parallel(&self) -> u32 {
        self.state.lock().unwrap().max_in_flight
    }

    /// Forgets the counters.
    pub fn reset_counters(&self) {
        let mut st = self.state.lock().unwrap();
        st.sent.clear();
        st.gets.clear();
    }
}

/// SHA-256, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_owned();
        let path = first
            .next()
            .unwrap_or("")
            .trim_start_matches("/repo/")
            .to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let (body, fault, status) = {
            let mut st = state.lock().unwrap();
            let body = st.files.get(&path).cloned();
            let fault = st.faults.get_mut(&path).map(|f| {
                let status = f.statuses.pop_front();
                let snapshot = f.clone();
                if f.cut_times > 0 {
                    f.cut_times -= 1;
                }
                f.stall = None;
                (snapshot, status)
            });
            if method == "GET" {
                *st.gets.entry(path.clone()).or_default() += 1;
            }
            let (fault, status) = fault.unzip();
            (body, fault.unwrap_or_default(), status.flatten())
        };
        let Some(body) = body else {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        };
        if let Some(code) = status {
            stream
                .write_all(format!("HTTP/1.1 {code} Fault\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await?;
            continue;
        }
        let etag = format!("\"{}\"", &sha256_hex(&body)[..16]);
        let mut start = 0usize;
        let mut code = 200;
        if let Some(range) = headers.get("range") {
            let if_range_ok = headers.get("if-range").is_none_or(|v| *v == etag);
            if !fault.ignore_range && if_range_ok {
                start = range
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap_or(0);
                code = 206;
            }
        }
        let mut content = body[start.min(body.len())..].to_vec();
        let mut header = format!(
            "HTTP/1.1 {code} OK\r\netag: {etag}\r\naccept-ranges: bytes\r\ncontent-length: {}\r\n",
            content.len() + fault.extra_bytes
        );
        if code == 206 {
            let shown = if fault.wrong_content_range { 0 } else { start };
            header += &format!(
                "content-range: bytes {shown}-{}/{}\r\n",
                body.len().saturating_sub(1),
                body.len()
            );
        }
        header += "\r\n";
        stream.write_all(header.as_bytes()).await?;
        if method == "HEAD" {
            continue;
        }
        content.extend(std::iter::repeat_n(b'x', fault.extra_bytes));
        let cut = if fault.cut_times > 0 {
            fault.cut_after
        } else {
            None
        };
        let limit = cut.unwrap_or(content.len()).min(content.len());
        let (first, rest) = content[..limit].split_at(limit / 2);
        let artifact = !path.ends_with(".sha256");
        if artifact {
            let mut st = state.lock().unwrap();
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
        }
        let _done = InFlight(artifact.then(|| state.clone()));
        stream.write_all(first).await?;
        record(&state, &path, first.len());
        if let Some(stall) = fault.stall {
            tokio::time::sleep(stall).await;
        }
        stream.write_all(rest).await?;
        record(&state, &path, rest.len());
        if cut.is_some() {
            return Ok(());
        }
    }
}

/// Counts a body out of flight when dropped.
struct InFlight(Option<Arc<Mutex<State>>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.lock().unwrap().in_flight -= 1;
        }
    }
}

fn record(state: &Mutex<State>, path: &str, n: usize) {
    *state
        .lock()
        .unwrap()
        .sent
        .entry(path.to_owned())
        .or_default() += n as u64;
}
