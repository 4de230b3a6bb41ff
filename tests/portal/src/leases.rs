//! Leases: which portal process does a job that exactly one may do at a
//! time — drive a given rollout, re-sign the TUF timestamp.
//!
//! With PostgreSQL a lease is a session-level advisory lock
//! (`pg_try_advisory_lock`) taken on a connection of its own and held as
//! long as that connection lives. A process that dies (even by SIGKILL)
//! loses its connections, the server ends their sessions, and the locks
//! are free for the next process that asks: no expiry to tune, no clock to
//! trust. With SQLite there is one process, and it always holds every
//! lease ([`Leases::local`]).
//!
//! A holder asks again before each use ([`Leases::acquire`] pings the
//! held connection): a lease whose connection broke is gone, since
//! another process may have taken it meanwhile.

use std::collections::HashMap;

use sqlx::{Connection as _, PgConnection};
use tokio::sync::Mutex;

/// The advisory-lock key space of the portal: the high 16 bits of each
/// key, so that another application's locks on the same database do not
/// collide with ours (it would have to pick these bits too).
const KEY_SPACE: i64 = 0x6261 << 48; // "ba"

/// A job that one process at a time does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lease {
    /// Re-signing the TUF timestamp (and renewing the root) of the shared
    /// repository.
    TufSigner,
    /// Driving rollout `id`: its clock and its assignments.
    Rollout(u64),
}

impl Lease {
    /// The advisory-lock key: [`KEY_SPACE`], a kind, and the rollout's id
    /// (below 2^40, far more than a portal makes).
    fn key(self) -> i64 {
        let (kind, id) = match self {
            Lease::TufSigner => (1, 0),
            Lease::Rollout(id) => (2, id & ((1 << 40) - 1)),
        };
        KEY_SPACE | (kind << 40) | id as i64
    }
}

/// The leases of one portal process.
pub struct Leases {
    /// The PostgreSQL database; `None`: the only process, holding all.
    url: Option<String>,
    /// The connection of each lease held.
    held: Mutex<HashMap<Lease, PgConnection>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("postgres", &self.url.is_some())
            .finish()
    }
}

impl Leases {
    /// The only process: every lease is always held.
    pub fn local() -> Leases {
        Leases {
            url: None,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Leases among the processes of the PostgreSQL database at `url`.
    pub fn postgres(url: &str) -> Leases {
        Leases {
            url: Some(url.to_owned()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Whether other processes share the leases (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.url.is_some()
    }

    /// Whether this process holds `lease` now, taking it when it is free.
    /// `false` while another process holds it.
    pub async fn acquire(&self, lease: Lease) -> Result<bool, sqlx::Error> {
        let Some(url) = &self.url else {
            return Ok(true);
        };
        let mut held = self.held.lock().await;
        if let Some(conn) = held.get_mut(&lease) {
            if conn.ping().await.is_ok() {
                return Ok(true);
            }
            tracing::warn!(?lease, "lease lost: its database connection broke");
            held.remove(&lease);
        }
        let mut conn = PgConnection::connect(url).await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(lease.key())
            .fetch_one(&mut conn)
            .await?;
        if got {
            tracing::info!(?lease, "lease taken");
            held.insert(lease, conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }

    /// Gives `lease` up (a rollout that is over); another process may take
    /// it at once.
    pub async fn release(&self, lease: Lease) {
        if let Some(conn) = self.held.lock().await.remove(&lease) {
            // Ending the session frees its locks.
            let _ = conn.close().await;
            tracing::info!(?lease, "lease released");
        }
    }

    /// Gives every lease up (a shutdown).
    pub async fn release_all(&self) {
        let held: Vec<_> = self.held.lock().await.drain().collect();
        for (_, conn) in held {
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_kind_and_id_and_stay_in_our_space() {
        let keys = [
            Lease::TufSigner.key(),
            Lease::Rollout(0).key(),
            Lease::Rollout(1).key(),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert!(keys.iter().all(|k| k >> 48 == 0x6261));
    }

    #[tokio::test]
    async fn the_only_process_holds_every_lease() {
        let leases = Leases::local();
        assert!(leases.acquire(Lease::TufSigner).await.unwrap());
        assert!(leases.acquire(Lease::Rollout(3)).await.unwrap());
    }
}
