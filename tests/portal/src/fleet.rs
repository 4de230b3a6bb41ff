//! This portal among the others of its database: what it tells them
//! ([`App::publish`]) and what it does when they tell it something
//! ([`follow`]). The carriers are in [`events`](crate::events) and
//! [`leases`](crate::leases); this module is the glue to [`App`].
//!
//! A box is connected to one process. Whatever another process decides
//! for it — a `sync`, a revocation, a rollout's assignment followed by a
//! sync — reaches it as an event that each process carries out on its own
//! live connections (the one that has none does nothing). A status a box
//! reports is recorded by the process it is connected to; the event that
//! says so refreshes every other process's console.

use std::sync::Arc;

use tracing::info;

use super::{
    events::{Events, FleetEvent},
    leases::Leases,
    protocol, App,
};

/// The bus and the leases of a portal on the database at `database`:
/// shared among processes for PostgreSQL, this process's own otherwise
/// (SQLite: one process).
pub(crate) async fn connect(database: Option<&str>) -> Result<(Events, Leases), sqlx::Error> {
    match database {
        Some(url) if is_postgres(url) => Ok((Events::postgres(url).await?, Leases::postgres(url))),
        _ => Ok((Events::local(), Leases::local())),
    }
}

/// Whether `url` names a PostgreSQL database.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl App {
    /// Tells the other processes of the database.
    pub(crate) fn publish(&self, event: FleetEvent) {
        self.events.publish(event);
    }

    /// The console's live pages of this process refresh, and no one else
    /// is told (the change came from another process).
    pub(crate) fn changed_here(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Carries out the other processes' events on this one until shutdown.
pub(crate) async fn follow(app: Arc<App>) {
    let mut events = app.events.subscribe();
    let mut stop = app.shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = super::stopped(&mut stop) => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            FleetEvent::SyncRequested { env } => {
                let delivered = app.envs.send(&env, &protocol::sync_frame());
                if delivered > 0 {
                    info!(
                        env,
                        delivered, "sent EVT_SYNC_SOFT asked through another portal"
                    );
                }
            }
            FleetEvent::Connected { env } => {
                app.changed_here();
                if app.envs.take_owed_sync(&env) {
                    // A sync asked here reached no connection; the box
                    // connected to another process, which delivers it.
                    info!(
                        env,
                        "a sync was asked while the box was away, and it connected to another portal: EVT_SYNC_SOFT"
                    );
                    app.publish(FleetEvent::SyncRequested { env });
                }
            }
            FleetEvent::StatusArrived { env } => {
                // Connected elsewhere since before the sync was asked: the
                // process it is connected to told it.
                app.envs.take_owed_sync(&env);
                app.changed_here();
            }
            FleetEvent::Revoked { env } => {
                let closed = app.envs.close(&env);
                if closed > 0 {
                    info!(
                        env,
                        closed, "revoked through another portal: connections closed"
                    );
                }
                app.changed_here();
            }
            FleetEvent::Assigned { .. } | FleetEvent::Changed => app.changed_here(),
        }
    }
}
