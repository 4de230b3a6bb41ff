//! The status history: every `EVT_ENV_MOD_UPD_STS` a box sent, progress
//! included, one row each in the database's `statuses` table, and one
//! `env_status` row per environment with its last status, its last
//! verdict and its counts (what the environments page sorts and filters
//! on without reading the history).
//!
//! A durable status (one with `seq`) is recorded once per environment,
//! outbox and `seq`: a unique index says so, so a repeat is refused by the
//! database itself, across restarts and across portals. The history is
//! kept for the retention ([`Retention`], `serve --status-retention`);
//! older statuses are deleted by [`purge`] (the `env_status` row stays).

use std::{collections::BTreeMap, time::Duration};

use sqlx::any::AnyRow;

use super::{
    db::{self, stmt, Db, Stmt, Tx},
    PortalError, StatusRecord, MAX_STATUSES_PER_ENV,
};

/// How long statuses are kept when `serve` is not told
/// (`--status-retention`): a month of a fleet's history.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the portal deletes statuses past the retention.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The statuses that end a box's installation, as the rollouts and the
/// environments page count them.
pub const VERDICTS: &[&str] = &["installed", "installation_cancelled", "download_error"];

/// The verdicts that are failures: the environments page's "failed".
pub const FAILURES: &[&str] = &["installation_cancelled", "download_error"];

/// `last_verdict IN ('installation_cancelled', 'download_error')`.
pub(crate) const FAILED: &str = "last_verdict IN ('installation_cancelled', 'download_error')";

/// How long the history keeps a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

impl Default for Retention {
    fn default() -> Self {
        Retention(DEFAULT_RETENTION)
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `30d`, `12h`, `90m`, `3600s`.
    fn from_str(s: &str) -> Result<Retention, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("retention {s:?}: a number and d, h, m or s (30d)"))?;
        let secs = match unit {
            "d" => n.saturating_mul(24 * 3600),
            "h" => n.saturating_mul(3600),
            "m" => n.saturating_mul(60),
            "s" => n,
            _ => return Err(format!("retention {s:?}: a number and d, h, m or s (30d)")),
        };
        if secs == 0 {
            return Err("a retention of zero would keep no status".into());
        }
        Ok(Retention(Duration::from_secs(secs)))
    }
}

/// The statuses of the environment, oldest first, and its counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvHistory {
    /// The newest [`MAX_STATUSES_PER_ENV`] statuses, oldest first.
    pub(crate) statuses: Vec<StatusRecord>,
    /// Statuses recorded and not shown: past the bound, or deleted by the
    /// retention.
    pub(crate) dropped: u64,
    /// Durable statuses refused as duplicates.
    pub(crate) duplicates: u64,
}

/// Whether the durable status `(outbox, seq)` of `env` is recorded.
pub(crate) fn is_recorded(db: &Db, env: &str, outbox: &str, seq: u64) -> Result<bool, PortalError> {
    Ok(!db
        .rows(stmt!(
            "SELECT 1 FROM statuses WHERE env = $1 AND outbox_id = $2 AND seq = $3",
            env,
            outbox,
            seq,
        ))?
        .is_empty())
}

/// The values of `record`'s row for `env`: `env, received_ms, status,
/// outbox_id, seq, record`.
fn status_row(env: &str, record: &StatusRecord) -> Vec<db::Arg> {
    let outbox = record
        .seq
        .map(|_| record.outbox_id.clone().unwrap_or_default());
    let json = serde_json::to_string(record).expect("status record to JSON");
    vec![
        env.into(),
        record.received_ms.unwrap_or_default().into(),
        record.status.as_str().unwrap_or_default().into(),
        outbox.into(),
        record.seq.into(),
        json.into(),
    ]
}

/// The head of a status's insert.
const INSERT_STATUS: &str =
    "INSERT INTO statuses (env, received_ms, status, outbox_id, seq, record)";

/// The insert of `record`'s row for `env`; it changes no row when it is
/// a durable status recorded already.
fn insert_stmt(env: &str, record: &StatusRecord) -> Stmt {
    let mut stmts = db::multi_row(
        INSERT_STATUS,
        vec![status_row(env, record)],
        "ON CONFLICT DO NOTHING",
    );
    stmts.pop().expect("one row, one statement")
}

/// The head and tail of the summaries' upsert.
const SUMMARY_HEAD: &str =
    "INSERT INTO env_status (env, last_status, last_ms, last_verdict, statuses, duplicates)";
const SUMMARY_TAIL: &str = "ON CONFLICT (env) DO UPDATE SET \
     last_status = excluded.last_status, last_ms = excluded.last_ms, \
     last_verdict = COALESCE(excluded.last_verdict, env_status.last_verdict), \
     statuses = env_status.statuses + excluded.statuses";

/// `env`'s summary after `count` new statuses, `last` the newest;
/// `verdict` the newest verdict among them, if any.
fn summary_row(
    env: &str,
    last: &StatusRecord,
    verdict: Option<String>,
    count: u64,
) -> Vec<db::Arg> {
    vec![
        env.into(),
        last.status.as_str().unwrap_or_default().into(),
        last.received_ms.unwrap_or_default().into(),
        verdict.into(),
        count.into(),
        0u64.into(),
    ]
}

/// [`summary_row`] as a statement.
fn summary_stmt(env: &str, last: &StatusRecord, verdict: Option<String>, count: u64) -> Stmt {
    let mut stmts = db::multi_row(
        SUMMARY_HEAD,
        vec![summary_row(env, last, verdict, count)],
        SUMMARY_TAIL,
    );
    stmts.pop().expect("one row, one statement")
}

/// The verdict `record` is, if it is one.
fn verdict_of(record: &StatusRecord) -> Option<String> {
    record
        .status
        .as_str()
        .filter(|s| VERDICTS.contains(s))
        .map(str::to_owned)
}

/// Records `record` for `env`: a [`Stmt::guard`]ed insert (a durable
/// status recorded already changes nothing) and the environment's summary.
pub(crate) fn record_stmts(env: &str, record: &StatusRecord) -> Vec<Stmt> {
    vec![
        insert_stmt(env, record).guard(),
        summary_stmt(env, record, verdict_of(record), 1),
    ]
}

/// The tail of the duplicates' count, after [`SUMMARY_HEAD`].
const DUPLICATES_TAIL: &str = "ON CONFLICT (env) DO UPDATE SET \
     duplicates = env_status.duplicates + excluded.duplicates";

/// `env`'s summary row when `n` of its durable statuses were refused as
/// duplicates (only the count changes when it has a row).
fn duplicates_row(env: &str, now_ms: u64, n: u64) -> Vec<db::Arg> {
    vec![
        env.into(),
        "".into(),
        now_ms.into(),
        Option::<String>::None.into(),
        0u64.into(),
        n.into(),
    ]
}

/// Counts `n` durable statuses of `env` refused as duplicates.
fn duplicates_stmt(env: &str, now_ms: u64, n: u64) -> Stmt {
    let mut stmts = db::multi_row(
        SUMMARY_HEAD,
        vec![duplicates_row(env, now_ms, n)],
        DUPLICATES_TAIL,
    );
    stmts.pop().expect("one row, one statement")
}

/// Counts a durable status of `env` refused as a duplicate.
pub(crate) fn duplicate_stmt(env: &str, now_ms: u64) -> Stmt {
    duplicates_stmt(env, now_ms, 1)
}

/// The outcome of recording one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Recorded (and fed to the rollouts).
    New,
    /// A durable status recorded already: dropped, counted.
    Duplicate,
}

/// [`record_in`] in a transaction of its own, committed: a batch of
/// statuses with no rollout rows beside it.
pub(crate) fn record(
    db: &Db,
    batch: &[(String, StatusRecord)],
    now_ms: u64,
) -> Result<Vec<Recorded>, PortalError> {
    let mut tx = db.begin()?;
    let outcomes = record_in(db, &mut tx, batch, now_ms)?;
    db.commit(tx)?;
    Ok(outcomes)
}

/// Records `batch` (environment, status; in the order received) in the
/// open transaction `tx`: each status's row (a durable one recorded
/// already, before or earlier in the batch, changes nothing and is a
/// [`Recorded::Duplicate`]), then each environment's summary once, with
/// its new statuses and its duplicates counted. What each status was, in
/// the batch's order; nothing is committed here.
pub(crate) fn record_in(
    db: &Db,
    tx: &mut Tx,
    batch: &[(String, StatusRecord)],
    now_ms: u64,
) -> Result<Vec<Recorded>, PortalError> {
    // One multi-row insert per ROWS_PER_STMT statuses; it returns the
    // rows it inserted: a durable status recorded already (before, or
    // earlier in the same insert) is not among them.
    let mut inserted: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for stmt in db::multi_row(
        INSERT_STATUS,
        batch.iter().map(|(env, r)| status_row(env, r)).collect(),
        "ON CONFLICT DO NOTHING RETURNING env, outbox_id, seq",
    ) {
        for row in db.fetch(tx, stmt)? {
            if let Some(seq) = db::opt_int(&row, 2) {
                let key = (
                    db::text(&row, 0),
                    db::opt_text(&row, 1).unwrap_or_default(),
                    seq,
                );
                *inserted.entry(key).or_default() += 1;
            }
        }
    }
    let outcomes: Vec<Recorded> = batch
        .iter()
        .map(|(env, r)| {
            let Some(seq) = r.seq else {
                // Not durable: never refused.
                return Recorded::New;
            };
            let key = (
                env.clone(),
                r.outbox_id.clone().unwrap_or_default(),
                i64::try_from(seq).unwrap_or(i64::MAX),
            );
            match inserted.get_mut(&key) {
                Some(n) if *n > 0 => {
                    // The first of the batch with this key is the one
                    // inserted; a repeat after it is a duplicate.
                    *n -= 1;
                    Recorded::New
                }
                _ => Recorded::Duplicate,
            }
        })
        .collect();
    /// One environment's part of the batch.
    #[derive(Default)]
    struct Summary<'a> {
        last: Option<&'a StatusRecord>,
        verdict: Option<String>,
        new: u64,
        duplicates: u64,
    }
    let mut by_env: BTreeMap<&str, Summary<'_>> = BTreeMap::new();
    for ((env, record), outcome) in batch.iter().zip(&outcomes) {
        let s = by_env.entry(env.as_str()).or_default();
        match outcome {
            Recorded::New => {
                s.new += 1;
                s.last = Some(record);
                if let Some(v) = verdict_of(record) {
                    s.verdict = Some(v);
                }
            }
            Recorded::Duplicate => s.duplicates += 1,
        }
    }
    let mut summaries = Vec::new();
    let mut duplicates = Vec::new();
    for (env, s) in by_env {
        if let Some(last) = s.last {
            summaries.push(summary_row(env, last, s.verdict, s.new));
        }
        if s.duplicates > 0 {
            duplicates.push(duplicates_row(env, now_ms, s.duplicates));
        }
    }
    let mut stmts = db::multi_row(SUMMARY_HEAD, summaries, SUMMARY_TAIL);
    stmts.extend(db::multi_row(SUMMARY_HEAD, duplicates, DUPLICATES_TAIL));
    db.execute(tx, stmts)?;
    Ok(outcomes)
}

fn parse(row: &AnyRow, i: usize) -> Option<StatusRecord> {
    serde_json::from_str(&db::text(row, i)).ok()
}

/// The history of `env`.
pub(crate) fn of(db: &Db, env: &str) -> Result<EnvHistory, PortalError> {
    let mut statuses: Vec<StatusRecord> = db
        .rows(stmt!(
            "SELECT record FROM statuses WHERE env = $1 ORDER BY id DESC LIMIT $2",
            env,
            MAX_STATUSES_PER_ENV,
        ))?
        .iter()
        .filter_map(|r| parse(r, 0))
        .collect();
    statuses.reverse();
    let summary = db.rows(stmt!(
        "SELECT statuses, duplicates FROM env_status WHERE env = $1",
        env
    ))?;
    let (total, duplicates) = summary
        .first()
        .map_or((0, 0), |r| (db::uint(r, 0), db::uint(r, 1)));
    Ok(EnvHistory {
        dropped: total.saturating_sub(statuses.len() as u64),
        statuses,
        duplicates,
    })
}

/// The history of every environment that reported.
pub(crate) fn all(db: &Db) -> Result<BTreeMap<String, EnvHistory>, PortalError> {
    let mut out: BTreeMap<String, EnvHistory> = BTreeMap::new();
    for r in db.rows(stmt!("SELECT env, record FROM statuses ORDER BY id"))? {
        if let Some(s) = parse(&r, 1) {
            out.entry(db::text(&r, 0)).or_default().statuses.push(s);
        }
    }
    for h in out.values_mut() {
        let over = h.statuses.len().saturating_sub(MAX_STATUSES_PER_ENV);
        h.statuses.drain(..over);
    }
    for r in db.rows(stmt!("SELECT env, statuses, duplicates FROM env_status"))? {
        let h = out.entry(db::text(&r, 0)).or_default();
        h.dropped = db::uint(&r, 1).saturating_sub(h.statuses.len() as u64);
        h.duplicates = db::uint(&r, 2);
    }
    Ok(out)
}

/// One row of the environments page: an environment and its last status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastStatus {
    /// The environment UUID.
    pub env: String,
    /// Its last status.
    pub status: String,
    /// When it arrived, ms since the epoch.
    pub received_ms: u64,
    /// Its last verdict, if any.
    pub verdict: Option<String>,
}

impl LastStatus {
    /// `env, last_status, last_ms, last_verdict` of `env_status`.
    fn of_row(r: &AnyRow) -> Self {
        LastStatus {
            env: db::text(r, 0),
            status: db::text(r, 1),
            received_ms: db::uint(r, 2),
            verdict: db::opt_text(r, 3),
        }
    }
}

/// The environments whose last verdict is `verdict` (every one that
/// reported when `None`), newest status first, at most `limit`: one
/// indexed query, whatever the fleet's history.
pub fn last_statuses(
    db: &Db,
    verdict: Option<&str>,
    limit: usize,
) -> Result<Vec<LastStatus>, PortalError> {
    let rows = match verdict {
        Some(v) => db.rows(stmt!(
            "SELECT env, last_status, last_ms, last_verdict FROM env_status \
             WHERE last_verdict = $1 ORDER BY last_ms DESC LIMIT $2",
            v,
            limit,
        ))?,
        None => db.rows(stmt!(
            "SELECT env, last_status, last_ms, last_verdict FROM env_status \
             ORDER BY last_ms DESC LIMIT $1",
            limit,
        ))?,
    };
    Ok(rows.iter().map(LastStatus::of_row).collect())
}

/// The environments whose last verdict is a failure ([`FAILURES`]),
/// newest status first, at most `limit`.
pub fn failed(db: &Db, limit: usize) -> Result<Vec<LastStatus>, PortalError> {
    let rows = db.rows(stmt!(
        format!(
            "SELECT env, last_status, last_ms, last_verdict FROM env_status \
             WHERE {FAILED} ORDER BY last_ms DESC LIMIT $1"
        ),
        limit,
    ))?;
    Ok(rows.iter().map(LastStatus::of_row).collect())
}

/// The history of the environments whose last verdict is a failure.
pub(crate) fn of_failed(db: &Db) -> Result<BTreeMap<String, EnvHistory>, PortalError> {
    let mut out: BTreeMap<String, EnvHistory> = BTreeMap::new();
    for r in db.rows(stmt!(format!(
        "SELECT s.env, s.record FROM statuses s JOIN env_status e ON e.env = s.env \
         WHERE e.{FAILED} ORDER BY s.id"
    )))? {
        if let Some(s) = parse(&r, 1) {
            out.entry(db::text(&r, 0)).or_default().statuses.push(s);
        }
    }
    for h in out.values_mut() {
        let over = h.statuses.len().saturating_sub(MAX_STATUSES_PER_ENV);
        h.statuses.drain(..over);
    }
    for r in db.rows(stmt!(format!(
        "SELECT env, statuses, duplicates FROM env_status WHERE {FAILED}"
    )))? {
        let h = out.entry(db::text(&r, 0)).or_default();
        h.dropped = db::uint(&r, 1).saturating_sub(h.statuses.len() as u64);
        h.duplicates = db::uint(&r, 2);
    }
    Ok(out)
}

/// Deletes the statuses received before `now_ms - retention`; how many.
pub(crate) fn purge(db: &Db, retention: Retention, now_ms: u64) -> Result<u64, PortalError> {
    let cutoff = now_ms.saturating_sub(u64::try_from(retention.0.as_millis()).unwrap_or(u64::MAX));
    let before = count(db)?;
    db.write(vec![stmt!(
        "DELETE FROM statuses WHERE received_ms < $1",
        cutoff
    )])?;
    Ok(before.saturating_sub(count(db)?))
}

/// Statuses in the history.
pub(crate) fn count(db: &Db) -> Result<u64, PortalError> {
    Ok(db
        .rows(stmt!("SELECT COUNT(*) FROM statuses"))?
        .first()
        .map_or(0, |r| db::uint(r, 0)))
}
