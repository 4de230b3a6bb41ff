//! Counters that let tests assert what crossed the wire: body bytes served
//! and requests per repository path ("each byte served once" after a resume)
//! and WebSocket connection attempts over time (reconnect backoff); and the
//! files hashed to answer a request (none when every file was published);
//! and the durable statuses dropped as duplicates; and the upgrades refused
//! for want of a registration, per peer address.
//!
//! Every map here has a cap and forgets its oldest key past it
//! ([`MAX_STAT_PATHS`], [`MAX_ATTEMPT_SECONDS`], [`MAX_REFUSING_ADDRESSES`]),
//! so a client that asks for ever new paths, or a scanner from ever new
//! addresses, cannot grow the portal's memory.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Connection attempt times kept for `connectionAttemptMs`; a box in a
/// reconnect loop must not grow the portal's memory without bound, and a
/// test never needs more than a few hundred.
pub const MAX_RECORDED_ATTEMPTS: usize = 10_000;

/// Repository paths counted at once; the path counted first is forgotten
/// past it. A repository holds far fewer files than this; someone asking
/// for made-up paths does not.
pub const MAX_STAT_PATHS: usize = 10_000;

/// Whole seconds kept in `connectionAttemptsPerSecond` (an hour); the
/// oldest second is forgotten past it.
pub const MAX_ATTEMPT_SECONDS: usize = 3_600;

/// Peer addresses whose refused upgrades are counted one by one; the
/// address counted first is forgotten past it (the total counts on).
pub const MAX_REFUSING_ADDRESSES: usize = 1_024;

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
    /// WebSocket upgrades refused with 401: an unknown environment, a
    /// wrong or missing secret, a revoked environment.
    #[serde(default)]
    pub refused_connections: u64,
    /// Those refusals per peer address (the last
    /// [`MAX_REFUSING_ADDRESSES`] addresses).
    #[serde(default)]
    pub refused_by_address: BTreeMap<IpAddr, u64>,
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
    inner: Mutex<(Instant, StatsReport, Order)>,
}

/// The order in which the capped maps' keys were first counted.
#[derive(Default)]
struct Order {
    paths: VecDeque<String>,
    addresses: VecDeque<IpAddr>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            inner: Mutex::new((Instant::now(), StatsReport::default(), Order::default())),
        }
    }

    fn path(&self, path: &str, f: impl FnOnce(&mut PathStats)) {
        let mut g = self.inner.lock().expect("stats lock");
        let (_, report, order) = &mut *g;
        if !report.paths.contains_key(path) {
            if order.paths.len() >= MAX_STAT_PATHS {
                if let Some(oldest) = order.paths.pop_front() {
                    report.paths.remove(&oldest);
                }
            }
            order.paths.push_back(path.to_string());
        }
        f(report.paths.entry(path.to_string()).or_default());
    }

    pub(crate) fn request(&self, path: &str) {
        self.path(path, |p| p.requests += 1);
    }

    pub(crate) fn bytes(&self, path: &str, n: u64) {
        self.path(path, |p| p.bytes += n);
    }

    /// Body bytes served for the paths that start with `prefix` (a
    /// module's folder in the repository), to every client together.
    pub(crate) fn bytes_under(&self, prefix: &str) -> u64 {
        let g = self.inner.lock().expect("stats lock");
        g.1.paths
            .range(prefix.to_string()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .map(|(_, p)| p.bytes)
            .sum()
    }

    /// An upgrade from `peer` refused with 401.
    pub(crate) fn refused(&self, peer: IpAddr) {
        let mut g = self.inner.lock().expect("stats lock");
        let (_, report, order) = &mut *g;
        report.refused_connections += 1;
        if !report.refused_by_address.contains_key(&peer) {
            if order.addresses.len() >= MAX_REFUSING_ADDRESSES {
                if let Some(oldest) = order.addresses.pop_front() {
                    report.refused_by_address.remove(&oldest);
                }
            }
            order.addresses.push_back(peer);
        }
        *report.refused_by_address.entry(peer).or_default() += 1;
    }

    pub(crate) fn connection_attempt(&self) {
        let mut g = self.inner.lock().expect("stats lock");
        let since = g.0.elapsed();
        let r = &mut g.1;
        r.connection_attempts += 1;
        *r.connection_attempts_per_second
            .entry(since.as_secs())
            .or_default() += 1;
        if r.connection_attempts_per_second.len() > MAX_ATTEMPT_SECONDS {
            r.connection_attempts_per_second.pop_first();
        }
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
        *self.inner.lock().expect("stats lock") =
            (Instant::now(), StatsReport::default(), Order::default());
    }
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_refusing_addresses_are_capped_and_the_oldest_go_first() {
        let stats = Stats::new();
        for i in 0..MAX_STAT_PATHS + 5 {
            stats.request(&format!("/repo/{i}"));
        }
        stats.bytes("/repo/7", 3);
        let r = stats.report();
        assert_eq!(r.paths.len(), MAX_STAT_PATHS);
        assert_eq!(r.requests("/repo/0"), 0, "the oldest path was forgotten");
        assert_eq!(r.requests(&format!("/repo/{}", MAX_STAT_PATHS + 4)), 1);
        assert_eq!(r.bytes("/repo/7"), 3);
        for i in 0..MAX_REFUSING_ADDRESSES as u32 + 3 {
            stats.refused(IpAddr::from(i.to_be_bytes()));
        }
        stats.refused(IpAddr::from(5u32.to_be_bytes()));
        let r = stats.report();
        assert_eq!(r.refused_connections, MAX_REFUSING_ADDRESSES as u64 + 4);
        assert_eq!(r.refused_by_address.len(), MAX_REFUSING_ADDRESSES);
        assert!(!r
            .refused_by_address
            .contains_key(&IpAddr::from(0u32.to_be_bytes())));
        assert_eq!(r.refused_by_address[&IpAddr::from(5u32.to_be_bytes())], 2);
    }
}
