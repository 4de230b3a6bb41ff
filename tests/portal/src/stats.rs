//! Counters that let tests assert what crossed the wire: body bytes served
//! and requests per repository path ("each byte served once" after a resume)
//! and WebSocket connection attempts over time (reconnect backoff); and the
//! files hashed to answer a request (none when every file was published);
//! and the durable statuses dropped as duplicates.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Connection attempt times kept for `connectionAttemptMs`; a box in a
/// reconnect loop must not grow the portal's memory without bound, and a
/// test never needs more than a few hundred.
pub const MAX_RECORDED_ATTEMPTS: usize = 10_000;

/// Requests and body bytes of one repository path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStats {
    /// `GET` and `HEAD` requests, whatever the answer.
    pub requests: u64,
    /// Body bytes handed to the connection.
    pub bytes: u64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// Milliseconds since the portal started (or the counters were reset).
    pub uptime_ms: u64,
    /// By request path, e.g. `/repo/com/x/a/1/a-1.jar`.
    pub paths: BTreeMap<String, PathStats>,
    /// WebSocket connection attempts on `/portal-integration`.
    pub connection_attempts: u64,
    /// Attempts per whole second since start: second → count.
    pub connection_attempts_per_second: BTreeMap<u64, u64>,
    /// Milliseconds since start of each attempt (the first
    /// [`MAX_RECORDED_ATTEMPTS`]).
    pub connection_attempt_ms: Vec<u64>,
    /// Files hashed at request time for their `ETag`: ones `publish` did
    /// not write, or that changed since.
    #[serde(default)]
    pub etag_hashes: u64,
    /// Durable statuses dropped because their environment and `seq` were
    /// recorded already (a box sends one again when it could not know
    /// whether the portal read it).
    #[serde(default)]
    pub duplicate_statuses: u64,
}

impl StatsReport {
    /// Body bytes served for `path` (0 when never requested).
    pub fn bytes(&self, path: &str) -> u64 {
        self.paths.get(path).map_or(0, |p| p.bytes)
    }

    /// Requests for `path` (0 when never requested).
    pub fn requests(&self, path: &str) -> u64 {
        self.paths.get(path).map_or(0, |p| p.requests)
    }
}

pub(crate) struct Stats {
    inner: Mutex<(Instant, StatsReport)>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            inner: Mutex::new((Instant::now(), StatsReport::default())),
        }
    }

    pub(crate) fn request(&self, path: &str) {
        let mut g = self.inner.lock().expect("stats lock");
        g.1.paths.entry(path.to_string()).or_default().requests += 1;
    }

    pub(crate) fn bytes(&self, path: &str, n: u64) {
        let mut g = self.inner.lock().expect("stats lock");
        g.1.paths.entry(path.to_string()).or_default().bytes += n;
    }

    pub(crate) fn connection_attempt(&self) {
        let mut g = self.inner.lock().expect("stats lock");
        let since = g.0.elapsed();
        let r = &mut g.1;
        r.connection_attempts += 1;
        *r.connection_attempts_per_second
            .entry(since.as_secs())
            .or_default() += 1;
        if r.connection_attempt_ms.len() < MAX_RECORDED_ATTEMPTS {
            r.connection_attempt_ms.push(as_ms(since));
        }
    }

    pub(crate) fn etag_hashed(&self) {
        self.inner.lock().expect("stats lock").1.etag_hashes += 1;
    }

    pub(crate) fn report(&self) -> StatsReport {
        let g = self.inner.lock().expect("stats lock");
        let mut r = g.1.clone();
        r.uptime_ms = as_ms(g.0.elapsed());
        r
    }

    pub(crate) fn duplicate_status(&self) {
        self.inner.lock().expect("stats lock").1.duplicate_statuses += 1;
    }

    pub(crate) fn reset(&self) {
        *self.inner.lock().expect("stats lock") = (Instant::now(), StatsReport::default());
    }
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
