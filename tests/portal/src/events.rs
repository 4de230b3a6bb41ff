//! Fleet events: what one portal process tells the others that share its
//! database, so that a box is reached wherever it is connected and every
//! console stays live.
//!
//! One bus, two carriers. With PostgreSQL each process `LISTEN`s on
//! [`FLEET_CHANNEL`] and publishes with `pg_notify` ([`Events::postgres`]);
//! with SQLite there is one process, and the bus is an in-process
//! broadcast ([`Events::local`]). Either way a member ([`Events::join`])
//! hears the events of every other member and never its own: the sender
//! has already acted on what it publishes (it delivered its own sync and
//! counted it), so the bus only carries it to the others.
//!
//! Delivery is at most once. A `NOTIFY` sent while a listener's connection
//! is down is lost to it (it reconnects and logs that); a subscriber that
//! falls [`BUS_CAPACITY`] events behind skips the oldest (logged). Neither
//! loses state: assignments and statuses are in the database, and a box
//! asks for its set at each connection; what is lost is a nudge (a `sync`
//! the operator may repeat, a console refresh the next change brings).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::{postgres::PgListener, Connection as _, PgConnection};
use tokio::{
    sync::{broadcast, mpsc},
    task::JoinHandle,
};

/// The PostgreSQL channel of the fleet events.
pub const FLEET_CHANNEL: &str = "banalytics_fleet";

/// Events a subscriber may fall behind by before it skips the oldest: a
/// rollout's wave of 1 000 boxes assigns 1 000 environments at once, and
/// a burst of statuses comes with it.
pub const BUS_CAPACITY: usize = 16_384;

/// Events waiting to be sent to PostgreSQL; past it a publish is dropped
/// (logged), as a lost `NOTIFY` would be.
pub const OUTBOX_CAPACITY: usize = 16_384;

/// How long the listener waits before it tries again after an error.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What happened that another portal process must act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    /// Send `EVT_SYNC_SOFT` to the environment's live connections.
    SyncRequested {
        /// The environment's UUID.
        env: String,
    },
    /// The environment's target set changed (an assignment, by hand or by
    /// a rollout); its box learns it at the sync that follows.
    Assigned {
        /// The environment's UUID.
        env: String,
    },
    /// A status of the environment was recorded (the console's pages
    /// refresh; the process that drives its rollout counts it).
    StatusArrived {
        /// The environment's UUID.
        env: String,
    },
    /// A box of the environment connected to the publishing process (the
    /// console's pages refresh; the process that drives its rollout tells
    /// it to synchronise when the rollout's sync reached no connection).
    Connected {
        /// The environment's UUID.
        env: String,
    },
    /// The environment was revoked: close its live connections.
    Revoked {
        /// The environment's UUID.
        env: String,
    },
    /// Something else the console shows changed (a registration, a
    /// rollout's state, a publish).
    Changed,
}

/// An event with the member that published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    origin: u64,
    #[serde(flatten)]
    event: FleetEvent,
}

/// Ends the bus's tasks when the last handle goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A member of the fleet's event bus. Clones are the same member;
/// [`Events::join`] makes another.
#[derive(Clone)]
pub struct Events {
    origin: u64,
    bus: broadcast::Sender<Envelope>,
    /// To the task that sends `NOTIFY`; `None` on the in-process bus.
    outbox: Option<mpsc::Sender<Envelope>>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("origin", &self.origin)
            .field("postgres", &self.outbox.is_some())
            .finish()
    }
}

/// A new member's identity: random, so that members of different
/// processes and hosts do not collide.
fn new_origin() -> u64 {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random");
    u64::from_le_bytes(b)
}

impl Events {
    /// The in-process bus: one portal process (SQLite), or several portals
    /// in one test process that [`Events::join`] it.
    pub fn local() -> Events {
        Events {
            origin: new_origin(),
            bus: broadcast::channel(BUS_CAPACITY).0,
            outbox: None,
            _tasks: Arc::new(Tasks(Vec::new())),
        }
    }

    /// A member of the bus of the PostgreSQL database at `url`: it listens
    /// on [`FLEET_CHANNEL`] before it returns, so it hears every event
    /// published after. Must be called inside a tokio runtime.
    pub async fn postgres(url: &str) -> Result<Events, sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(FLEET_CHANNEL).await?;
        let sender = PgConnection::connect(url).await?;
        let bus = broadcast::channel(BUS_CAPACITY).0;
        let (outbox, queued) = mpsc::channel(OUTBOX_CAPACITY);
        let tasks = vec![
            tokio::spawn(listen(listener, bus.clone())),
            tokio::spawn(notify(url.to_owned(), sender, queued)),
        ];
        Ok(Events {
            origin: new_origin(),
            bus,
            outbox: Some(outbox),
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// Another member of the same bus (and the same connections): a second
    /// portal in this process.
    pub fn join(&self) -> Events {
        Events {
            origin: new_origin(),
            ..self.clone()
        }
    }

    /// Whether the bus reaches other processes (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.outbox.is_some()
    }

    /// Tells every other member; does not wait (the event is queued).
    pub fn publish(&self, event: FleetEvent) {
        let envelope = Envelope {
            origin: self.origin,
            event,
        };
        match &self.outbox {
            None => {
                // No receiver is not an error: no other member listens.
                let _ = self.bus.send(envelope);
            }
            Some(outbox) => {
                if let Err(error) = outbox.try_send(envelope) {
                    tracing::warn!(%error, "fleet event dropped: the outbox is full");
                }
            }
        }
    }

    /// The events of the other members from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            origin: self.origin,
            rx: self.bus.subscribe(),
        }
    }
}

/// A member's view of the bus: the others' events, in order.
pub struct Subscription {
    origin: u64,
    rx: broadcast::Receiver<Envelope>,
}

impl Subscription {
    /// The next event of another member; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<FleetEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) if e.origin == self.origin => continue,
                Ok(e) => return Some(e.event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "fleet events skipped: this subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Carries each `NOTIFY` of the channel onto the bus, reconnecting when
/// the connection is lost.
async fn listen(mut listener: PgListener, bus: broadcast::Sender<Envelope>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match serde_json::from_str::<Envelope>(n.payload()) {
                Ok(e) => {
                    let _ = bus.send(e);
                }
                Err(error) => {
                    tracing::warn!(%error, payload = n.payload(), "unreadable fleet event")
                }
            },
            // `try_recv` reconnects (and listens again) at its next call.
            Ok(None) => tracing::warn!(
                "fleet events: the database connection was lost; reconnecting (events sent meanwhile are lost)"
            ),
            Err(error) => {
                tracing::warn!(%error, "fleet events: cannot listen; trying again");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Sends the queued events with `pg_notify`, in order, on one connection
/// (opened again when it fails).
async fn notify(url: String, mut conn: PgConnection, mut queued: mpsc::Receiver<Envelope>) {
    while let Some(envelope) = queued.recv().await {
        let payload = serde_json::to_string(&envelope).expect("an event serialises");
        loop {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(FLEET_CHANNEL)
                .bind(&payload)
                .execute(&mut conn)
                .await;
            match sent {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "fleet event not sent; reconnecting");
                    tokio::time::sleep(RETRY_AFTER).await;
                    match PgConnection::connect(&url).await {
                        Ok(c) => conn = c,
                        Err(error) => tracing::warn!(%error, "fleet events: cannot reconnect"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_hears_the_others_and_not_itself() {
        let a = Events::local();
        let b = a.join();
        let mut heard_by_a = a.subscribe();
        let mut heard_by_b = b.subscribe();
        a.publish(FleetEvent::SyncRequested { env: "e1".into() });
        b.publish(FleetEvent::StatusArrived { env: "e2".into() });
        assert_eq!(
            heard_by_b.recv().await,
            Some(FleetEvent::SyncRequested { env: "e1".into() })
        );
        // a's first event is b's: its own was skipped.
        assert_eq!(
            heard_by_a.recv().await,
            Some(FleetEvent::StatusArrived { env: "e2".into() })
        );
    }

    #[test]
    fn an_event_is_small_json_with_its_origin() {
        let e = Envelope {
            origin: 7,
            event: FleetEvent::Assigned { env: "e".into() },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"origin":7,"event":"assigned","env":"e"}"#
        );
    }
}
