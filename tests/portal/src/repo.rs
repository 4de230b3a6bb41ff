//! The Maven-layout repository (contracts section 4) served from
//! `DATA/repo` under `/repo/...`, with what a resuming downloader needs:
//! `HEAD`, strong `ETag`s (the file's SHA-256), `Last-Modified`,
//! `Range: bytes=N-` / `bytes=N-M` / `bytes=-N`, and `If-Range`.
//!
//! The `ETag` of a published file is the digest `publish` recorded (see
//! [`super::store`]); only a file publish did not write, or one changed
//! since, is hashed on request, once per change, and counted in the stats.
//!
//! Body bytes are counted as they are handed to the connection, per path,
//! so tests can assert that a resumed download moved each byte once. The
//! fault switches ([`super::Faults`]) act here.

use std::{
    collections::HashMap,
    io::SeekFrom,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::watch,
};
use tracing::{debug, info};

use super::{stats::Stats, App};

/// Body chunk size: large enough for throughput, small enough that a cut or
/// a bandwidth cap is exact to the byte.
const CHUNK: usize = 64 * 1024;

/// How long a cut body waits before failing, so the bytes before the cut
/// reach the client (hyper discards its unflushed buffer on a body error).
/// Loopback clients drain far faster than this.
const CUT_FLUSH_GRACE: Duration = Duration::from_millis(100);

/// Digests of files the store has none for (not published through it, or
/// changed since), by file, so such a file is hashed once per change, not
/// per request.
#[derive(Default)]
pub(crate) struct EtagCache {
    entries: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

impl EtagCache {
    async fn etag(
        &self,
        path: &Path,
        len: u64,
        mtime: SystemTime,
        stats: &Stats,
    ) -> std::io::Result<String> {
        if let Some((l, m, tag)) = self.entries.lock().expect("etag lock").get(path) {
            if *l == len && *m == mtime {
                return Ok(tag.clone());
            }
        }
        debug!(path = %path.display(), len, "hashing for an etag");
        stats.etag_hashed();
        let p = path.to_path_buf();
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut f = std::fs::File::open(&p)?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h)?;
            Ok(hex::encode(h.finalize()))
        })
        .await
        .map_err(std::io::Error::other)??;
        let tag = format!("\"{digest}\"");
        self.entries
            .lock()
            .expect("etag lock")
            .insert(path.to_path_buf(), (len, mtime, tag.clone()));
        Ok(tag)
    }
}

/// A name-only relative path under the repository root, or `None`.
fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\') {
            return None;
        }
        p.push(seg);
    }
    Some(p)
}

/// The byte range to send, from a `Range` header.
enum Wanted {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(value: &str, len: u64) -> Wanted {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Wanted::Full;
    };
    if spec.contains(',') {
        // Multipart ranges are not supported: a full answer is allowed.
        return Wanted::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return Wanted::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), len.saturating_sub(1)),
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Wanted::Full;
        };
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                _ => return Wanted::Full,
            }
        };
        (start, end)
    };
    if len == 0 || range.0 >= len {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(range.0, range.1)
    }
}

/// `If-Range` holds for the current representation (strong ETag match or
/// the exact `Last-Modified`).
fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => v == last_modified,
    }
}

/// `GET`/`HEAD /repo/{path}`.
pub(crate) async fn serve(State(app): State<Arc<App>>, req: Request) -> Response {
    let uri_path = req.uri().path().to_string();
    let method = req.method().clone();
    let headers = req.headers().clone();
    app.stats.request(&uri_path);
    let (faults, cut) = {
        let mut f = app.faults.lock().expect("faults lock");
        let cut = if method == Method::GET {
            f.take_cut(&uri_path)
        } else {
            None
        };
        (f.clone(), cut)
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(location) = faults.redirect(&uri_path) {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .expect("a redirect response");
    }
    let rel = uri_path.strip_prefix("/repo/").unwrap_or_default();
    let Some(file) = resolve(&app.repo_dir, rel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() => m,
        _ => {
            debug!(path = %uri_path, "not found");
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let etag = match app.store.etag(rel, len, mtime) {
        Some(t) => t,
        None => match app.etags.etag(&file, len, mtime, &app.stats).await {
            Ok(t) => t,
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let last_modified = httpdate::fmt_http_date(mtime);

    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if !faults.ignore_range {
        builder = builder.header(header::ACCEPT_RANGES, "bytes");
    }

    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("response");
    }

    let wanted = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if !faults.ignore_range && if_range_holds(&headers, &etag, &last_modified) => {
            parse_range(r, len)
        }
        _ => Wanted::Full,
    };
    let (status, start, count) = match wanted {
        Wanted::Full => (StatusCode::OK, 0, len),
        Wanted::Part(s, e) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}"));
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        Wanted::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .expect("response");
        }
    };
    builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD {
        return builder.body(Body::empty()).expect("response");
    }
    let mut f = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    if start > 0 && f.seek(SeekFrom::Start(start)).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    info!(path = %uri_path, status = status.as_u16(), start, count, cut = ?cut, "serving");
    let body = BodyState {
        file: f,
        remaining: count,
        sent: 0,
        cut,
        rate: faults.bandwidth_bytes_per_s.filter(|r| *r > 0),
        started: Instant::now(),
        path: uri_path,
        stats: app.stats.clone(),
        shutdown: app.shutdown.clone(),
        done: false,
    };
    builder
        .body(Body::from_stream(futures_util::stream::unfold(
            body, next_chunk,
        )))
        .expect("response")
}

struct BodyState {
    file: tokio::fs::File,
    remaining: u64,
    sent: u64,
    cut: Option<u64>,
    rate: Option<u64>,
    started: Instant,
    path: String,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
    done: bool,
}

async fn next_chunk(mut s: BodyState) -> Option<(std::io::Result<Bytes>, BodyState)> {
    if s.done || s.remaining == 0 {
        return None;
    }
    if s.cut == Some(s.sent) {
        // hyper drops what it still buffers when a body fails: give it a
        // pending poll and a moment to flush the bytes before the cut.
        tokio::time::sleep(CUT_FLUSH_GRACE).await;
        info!(path = %s.path, bytes = s.sent, "body cut by fault switch");
        s.done = true;
        return Some((Err(std::io::Error::other("cut by fault switch")), s));
    }
    let mut n = (CHUNK as u64).min(s.remaining);
    if let Some(cut) = s.cut {
        n = n.min(cut - s.sent);
    }
    if let Some(rate) = s.rate {
        // Pace so that `sent + n` bytes leave no earlier than
        // `(sent + n) / rate` seconds after the start.
        n = n.min((rate / 20).max(1));
        let due = s.started + Duration::from_secs_f64((s.sent + n) as f64 / rate as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = super::stopped(&mut s.shutdown) => {
                s.done = true;
                return Some((Err(std::io::Error::other("portal shutting down")), s));
            }
        }
    }
    let mut buf = vec![0u8; n as usize];
    if let Err(e) = s.file.read_exact(&mut buf).await {
        s.done = true;
        return Some((Err(e), s));
    }
    s.sent += n;
    s.remaining -= n;
    s.stats.bytes(&s.path, n);
    Some((Ok(Bytes::from(buf)), s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_open_closed_and_suffix_ranges() {
        assert!(matches!(
            parse_range("bytes=10-", 100),
            Wanted::Part(10, 99)
        ));
        assert!(matches!(
            parse_range("bytes=10-19", 100),
            Wanted::Part(10, 19)
        ));
        assert!(matches!(
            parse_range("bytes=90-500", 100),
            Wanted::Part(90, 99)
        ));
        assert!(matches!(parse_range("bytes=-5", 100), Wanted::Part(95, 99)));
        assert!(matches!(
            parse_range("bytes=100-", 100),
            Wanted::Unsatisfiable
        ));
        assert!(matches!(parse_range("bytes=0-1,5-6", 100), Wanted::Full));
        assert!(matches!(parse_range("items=0-1", 100), Wanted::Full));
    }

    #[test]
    fn refuses_paths_that_leave_the_repository() {
        let root = Path::new("/r");
        assert!(resolve(root, "a/../b").is_none());
        assert!(resolve(root, "a//b").is_none());
        assert_eq!(resolve(root, "a/b.jar"), Some(PathBuf::from("/r/a/b.jar")));
    }
}
