//! The recorder: group commit of the statuses the boxes report. Each
//! connection hands its status to one writer task ([`Recorder::record`])
//! and waits; the writer gathers what every connection queued, up to
//! [`STATUS_BATCH`] statuses or for [`STATUS_WINDOW`] after the first,
//! whichever comes first, and records them in one transaction
//! ([`App::record_statuses`](crate::App): the statuses, the
//! environments' summaries and the rollouts' rows). Only when that
//! transaction committed does each waiter hear its status's outcome; a
//! batch that failed is an error for every waiter of it, and nothing of
//! it was written.
//!
//! The durability contract is the connection's: it reads the box's next
//! frame (a ping whose pong confirms what came before) only after its
//! status's batch committed, and it closes itself when the batch failed,
//! so a box never has a status confirmed that is not in the database.
//!
//! Lifecycle: the writer runs until every [`Recorder`] is dropped (with
//! the portal's state); a shutdown does not stop it, so the statuses
//! queued when it began are still written and answered. One batch is
//! written at a time: the statuses that arrive meanwhile make the next.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::{history::Recorded, PortalError, StatusRecord};

/// Statuses written in one transaction at most: enough that a 10 000-box
/// wave's statuses share few commits, few enough that a batch's
/// transaction (two statements per status) stays a few milliseconds.
pub const STATUS_BATCH: usize = 256;

/// How long the writer gathers statuses after the first of a batch: a
/// box waits at most this long more for its status to be written when
/// the fleet is quiet.
pub const STATUS_WINDOW: Duration = Duration::from_millis(2);

/// Statuses queued for the writer at most. Each connection queues one at
/// a time (it waits for the outcome), so this bounds the connections
/// that wait at once without the next one waiting to queue; past it a
/// connection waits for room.
pub const STATUS_QUEUE: usize = 16 * 1024;

/// The outcome of one status: an error is the whole batch's.
pub(crate) type Outcome = Result<Recorded, Arc<PortalError>>;

/// Writes a batch of (environment, status) in one transaction; the
/// outcome of each, in order.
pub(crate) type WriteBatch =
    dyn Fn(&[(String, StatusRecord)]) -> Result<Vec<Recorded>, PortalError> + Send + Sync;

/// One status waiting for its batch.
struct Queued {
    env: String,
    record: StatusRecord,
    outcome: oneshot::Sender<Outcome>,
}

/// The handle that queues statuses for the writer task.
pub(crate) struct Recorder {
    queue: mpsc::Sender<Queued>,
}

impl Recorder {
    /// Starts the writer task on the current runtime; `write` records a
    /// batch (it blocks: it runs on the blocking pool).
    pub(crate) fn start(write: Arc<WriteBatch>) -> Recorder {
        let (queue, rx) = mpsc::channel(STATUS_QUEUE);
        tokio::spawn(writer(rx, write));
        Recorder { queue }
    }

    /// Records `record` of `env` with the statuses other connections
    /// queued meanwhile; returns once its batch committed (or failed).
    pub(crate) async fn record(&self, env: String, record: StatusRecord) -> Outcome {
        let (outcome, rx) = oneshot::channel();
        let queued = Queued {
            env,
            record,
            outcome,
        };
        if self.queue.send(queued).await.is_err() {
            return Err(Arc::new(PortalError::BadRequest(
                "the status writer has stopped".into(),
            )));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(PortalError::BadRequest(
                "the status writer stopped before writing the status".into(),
            )))
        })
    }
}

/// The writer task: one batch at a time until every sender is gone.
async fn writer(mut rx: mpsc::Receiver<Queued>, write: Arc<WriteBatch>) {
    while let Some(batch) = gather(&mut rx).await {
        let (statuses, waiters): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|q| ((q.env, q.record), q.outcome))
            .unzip();
        let w = write.clone();
        let n = statuses.len();
        let written = tokio::task::spawn_blocking(move || w(&statuses))
            .await
            .unwrap_or_else(|panic| {
                Err(PortalError::BadRequest(format!(
                    "the status batch's writer failed: {panic}"
                )))
            });
        match written {
            Ok(outcomes) if outcomes.len() == n => {
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    let _ = waiter.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let error = Arc::new(PortalError::BadRequest(format!(
                    "a batch of {n} statuses answered {} outcomes",
                    outcomes.len()
                )));
                for waiter in waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
            Err(error) => {
                tracing::error!(%error, statuses = n, "a batch of statuses not recorded");
                let error = Arc::new(error);
                for waiter in waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The next batch: the first status queued, then every other one queued
/// until [`STATUS_BATCH`] of them or [`STATUS_WINDOW`] after the first.
/// `None` when every sender is gone.
async fn gather(rx: &mut mpsc::Receiver<Queued>) -> Option<Vec<Queued>> {
    let first = rx.recv().await?;
    let deadline = tokio::time::Instant::now() + STATUS_WINDOW;
    let mut batch = vec![first];
    while batch.len() < STATUS_BATCH {
        match rx.try_recv() {
            Ok(q) => batch.push(q),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(q)) => batch.push(q),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use serde_json::json;

    use super::*;
    use crate::{
        db::{sqlite_url, stmt, Db},
        history,
    };

    fn status(env: &str, status: &str, seq: u64) -> StatusRecord {
        StatusRecord {
            environment_uuid: json!(env),
            module: serde_json::Value::Null,
            status: json!(status),
            status_message: serde_json::Value::Null,
            seq: Some(seq),
            outbox_id: Some("outbox-1".into()),
            received_ms: Some(1_000 + seq),
            served_set: None,
        }
    }

    /// A recorder that writes the statuses' rows on `db` (what the portal
    /// writes for a status beside the rollouts' rows) and counts batches.
    fn recorder_on(db: Arc<Db>, batches: Arc<Mutex<Vec<usize>>>) -> Recorder {
        Recorder::start(Arc::new(move |batch: &[(String, StatusRecord)]| {
            batches.lock().unwrap().push(batch.len());
            history::record(&db, batch, 5_000)
        }))
    }

    /// A recorder on a fresh database ([`recorder_on`]), the database and
    /// the sizes of the batches it wrote.
    fn fixture() -> (tempfile::TempDir, Arc<Db>, Arc<Mutex<Vec<usize>>>, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&sqlite_url(&dir.path().join("portal.db"))).unwrap());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let recorder = recorder_on(db.clone(), batches.clone());
        (dir, db, batches, recorder)
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_of_many_boxes_land_whole_in_few_transactions() {
        let (_dir, db, batches, recorder) = fixture();
        // 600 boxes report at once, and one repeats a durable status in
        // the same batch.
        let mut statuses: Vec<(String, StatusRecord)> = (0..600)
            .map(|i| {
                let env = format!("env-{i:03}");
                let s = status(&env, "downloading", 1);
                (env, s)
            })
            .collect();
        statuses.insert(10, statuses[3].clone());
        let outcomes = futures_util::future::join_all(
            statuses.into_iter().map(|(env, s)| recorder.record(env, s)),
        )
        .await;
        let outcomes: Vec<Recorded> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Recorded::Duplicate)
                .count(),
            1
        );
        assert_eq!(outcomes[10], Recorded::Duplicate, "the repeat");
        assert_eq!(history::count(&db).unwrap(), 600);
        assert_eq!(
            *batches.lock().unwrap(),
            [STATUS_BATCH, STATUS_BATCH, 601 - 2 * STATUS_BATCH],
            "one transaction per batch of queued statuses"
        );
        let summaries = db
            .rows(stmt!(
                "SELECT COUNT(*), SUM(statuses), SUM(duplicates) FROM env_status"
            ))
            .unwrap();
        assert_eq!(
            (
                crate::db::int(&summaries[0], 0),
                crate::db::int(&summaries[0], 1),
                crate::db::int(&summaries[0], 2)
            ),
            (600, 600, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_status_is_written_after_the_window() {
        let (_dir, db, batches, recorder) = fixture();
        let t = tokio::time::Instant::now();
        let outcome = recorder.record("env-1".into(), status("env-1", "installed", 1));
        assert_eq!(outcome.await.unwrap(), Recorded::New);
        assert!(t.elapsed() >= STATUS_WINDOW && t.elapsed() < 2 * STATUS_WINDOW);
        assert_eq!(*batches.lock().unwrap(), [1]);
        assert_eq!(history::count(&db).unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_is_an_error_for_each_waiter_and_writes_nothing() {
        let (_dir, db, batches, recorder) = fixture();
        // The summaries' table is gone: the batch's transaction fails
        // after its statuses' rows were inserted.
        db.write(vec![stmt!("DROP TABLE env_status")]).unwrap();
        let outcomes = futures_util::future::join_all((0..5).map(|i| {
            let env = format!("env-{i}");
            let s = status(&env, "installed", 1);
            recorder.record(env, s)
        }))
        .await;
        assert_eq!(*batches.lock().unwrap(), [5], "one batch");
        for outcome in outcomes {
            let error = outcome.expect_err("every waiter hears the failure");
            assert!(error.to_string().contains("env_status"), "{error}");
        }
        assert_eq!(history::count(&db).unwrap(), 0, "nothing of it written");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_writer_panics_is_an_error_for_each_waiter() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let recorder = Recorder::start(Arc::new(move |_: &[(String, StatusRecord)]| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("drill");
            }
            Ok(vec![Recorded::New])
        }));
        let first = recorder.record("env-1".into(), status("env-1", "installed", 1));
        assert!(first.await.is_err());
        let second = recorder.record("env-1".into(), status("env-1", "installed", 2));
        assert_eq!(second.await.unwrap(), Recorded::New, "the writer goes on");
    }
}
