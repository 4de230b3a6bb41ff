//! Busy leases: a component that must not be interrupted (recording an
//! alarm clip, a door opening) holds a lease over the bus
//! ([`BusyLeaseTaken`], [`BusyLeaseReleased`]), and the host defers every
//! restart it was asked for, to apply a set or because of probation, until
//! no lease is held, but never longer than the upgrade center's
//! `max_defer`. Then it restarts anyway and logs who held a lease.
//!
//! The leases are the host's, in memory: a restart ends them all, and a
//! component restarted by its policy takes its lease again if it still
//! needs it. A stop signal is never deferred.

use std::{collections::BTreeMap, time::Duration};

use banalytics_messages::upgrade::{BusyLeaseReleased, BusyLeaseTaken, RestartDeferred};
use banalytics_sdk::{status::now_ms, Bus};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

/// A lease held now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The component that holds it.
    pub holder: String,
    /// Its name.
    pub lease: String,
    /// Why.
    pub reason: String,
    /// Since when, ms since the epoch.
    pub since_ms: u64,
}

/// What the host knows of busy leases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BusyState {
    /// The leases held now.
    pub leases: Vec<Lease>,
    /// While a restart waits for them: until when at most, ms since the
    /// epoch.
    pub restart_deferred_until_ms: Option<u64>,
}

/// The leases held on a host's bus.
#[derive(Clone)]
pub struct BusyLeases {
    bus: Bus,
    held: watch::Sender<BTreeMap<(String, String), Lease>>,
    deferred_until: watch::Sender<Option<u64>>,
}

impl BusyLeases {
    /// Follows the leases taken and released on `bus` from now on. Must be
    /// called inside a tokio runtime.
    pub fn follow(bus: &Bus) -> BusyLeases {
        let leases = BusyLeases {
            bus: bus.clone(),
            held: watch::channel(BTreeMap::new()).0,
            deferred_until: watch::channel(None).0,
        };
        let (mut taken, mut released) = (
            bus.subscribe::<BusyLeaseTaken>(),
            bus.subscribe::<BusyLeaseReleased>(),
        );
        let held = leases.held.clone();
        actix_rt::spawn(async move {
            loop {
                tokio::select! {
                    Some(t) = taken.recv() => {
                        info!(holder = %t.holder, lease = %t.lease, reason = %t.reason, "busy lease taken");
                        held.send_modify(|m| {
                            m.insert((t.holder.clone(), t.lease.clone()), Lease {
                                holder: t.holder.clone(),
                                lease: t.lease.clone(),
                                reason: t.reason.clone(),
                                since_ms: now_ms(),
                            });
                        });
                    }
                    Some(r) = released.recv() => {
                        info!(holder = %r.holder, lease = %r.lease, "busy lease released");
                        held.send_modify(|m| {
                            m.remove(&(r.holder.clone(), r.lease.clone()));
                        });
                    }
                    else => return,
                }
            }
        });
        leases
    }

    /// The leases held now, and a restart waiting for them.
    pub fn state(&self) -> BusyState {
        BusyState {
            leases: self.held.borrow().values().cloned().collect(),
            restart_deferred_until_ms: *self.deferred_until.borrow(),
        }
    }

    /// Returns once no lease is held, or after `max_defer`; logs who held
    /// a lease when it gives up waiting.
    pub async fn wait_released(&self, max_defer: Duration) {
        let mut held = self.held.subscribe();
        let holders = |m: &BTreeMap<(String, String), Lease>| {
            m.values()
                .map(|l| format!("{}/{} ({})", l.holder, l.lease, l.reason))
                .collect::<Vec<_>>()
        };
        let now = holders(&held.borrow());
        if now.is_empty() {
            return;
        }
        let until_ms = now_ms() + max_defer.as_millis() as u64;
        info!(holders = %now.join(", "), ?max_defer, "restart deferred until the busy leases are released");
        self.deferred_until.send_replace(Some(until_ms));
        self.bus
            .publish(RestartDeferred {
                holders: now,
                until_ms,
            })
            .await;
        let released = tokio::time::timeout(max_defer, held.wait_for(BTreeMap::is_empty)).await;
        self.deferred_until.send_replace(None);
        match released {
            Ok(_) => info!("busy leases released; restarting"),
            Err(_) => {
                let still = holders(&self.held.borrow()).join(", ");
                warn!(holders = %still, ?max_defer, "busy leases still held after max_defer; restarting anyway")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(holder: &str) -> BusyLeaseTaken {
        BusyLeaseTaken {
            holder: holder.into(),
            lease: "clip".into(),
            reason: "recording".into(),
        }
    }

    #[actix_rt::test]
    async fn a_restart_waits_until_the_lease_is_released() {
        tokio::time::pause();
        let bus = Bus::new();
        let busy = BusyLeases::follow(&bus);
        bus.publish(take("camera")).await;
        tokio::task::yield_now().await;
        assert_eq!(busy.state().leases.len(), 1);
        let waiting = {
            let busy = busy.clone();
            actix_rt::spawn(async move {
                let t = tokio::time::Instant::now();
                busy.wait_released(Duration::from_secs(600)).await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(42)).await;
        assert!(busy.state().restart_deferred_until_ms.is_some());
        bus.publish(BusyLeaseReleased {
            holder: "camera".into(),
            lease: "clip".into(),
        })
        .await;
        let waited = waiting.await.unwrap();
        assert!(
            waited >= Duration::from_secs(42) && waited < Duration::from_secs(43),
            "{waited:?}"
        );
        assert!(busy.state().leases.is_empty());
        assert_eq!(busy.state().restart_deferred_until_ms, None);
    }

    #[actix_rt::test]
    async fn a_lease_never_defers_beyond_max_defer() {
        tokio::time::pause();
        let bus = Bus::new();
        let busy = BusyLeases::follow(&bus);
        bus.publish(take("camera")).await;
        tokio::task::yield_now().await;
        let t = tokio::time::Instant::now();
        busy.wait_released(Duration::from_secs(300)).await;
        // Tokio's timer wheel rounds up to the next millisecond.
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_secs(300) && waited < Duration::from_secs(301),
            "{waited:?}"
        );
        assert_eq!(busy.state().leases.len(), 1, "the lease is still held");
    }

    #[actix_rt::test]
    async fn without_leases_a_restart_is_not_deferred() {
        tokio::time::pause();
        let bus = Bus::new();
        let busy = BusyLeases::follow(&bus);
        let t = tokio::time::Instant::now();
        busy.wait_released(Duration::from_secs(300)).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
