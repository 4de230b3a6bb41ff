//! The portal's database: one [`sqlx::AnyPool`] for SQLite (the default,
//! `DATA/portal.db` in WAL mode) and PostgreSQL (`--database
//! postgres://…`), with the same SQL for both (`$1` placeholders, `ON
//! CONFLICT … DO UPDATE`, `BIGINT` milliseconds, text JSON), and the
//! migrations of `tests/portal/migrations/{sqlite,postgres}` (they differ
//! only where the DDL must: a status's generated id) applied at open.
//!
//! The portal's state code is synchronous (a status, an assignment, a
//! registration are handled in place, as they were with the JSON files),
//! so the database runs on a runtime of its own, on a thread of its own:
//! [`Db::block`] hands a future to it and waits for the answer. A write is
//! a list of [`Stmt`]s run in ONE transaction ([`Db::write`]); on SQLite
//! the writes of one process are serialised before `BEGIN` (SQLite has one
//! writer at a time, and a deferred transaction that must wait for another
//! would fail instead of waiting), so readers never wait for writers (WAL).
//! A write whose later statements depend on what the earlier ones changed
//! (a batch of statuses: which were new) opens a [`Tx`] ([`Db::begin`]),
//! runs statements in it ([`Db::execute`]) and commits it ([`Db::commit`]);
//! a `Tx` dropped uncommitted is rolled back.

use std::{
    borrow::Cow,
    future::Future,
    path::Path,
    sync::{mpsc as std_mpsc, Arc},
    time::Duration,
};

use futures_util::future::BoxFuture;
use sqlx::{
    any::{AnyArguments, AnyPoolOptions, AnyRow},
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
    Any, AnyPool, Arguments as _, Executor as _, Transaction,
};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tracing::info;

use super::PortalError;

pub mod conformance;

/// Connections to SQLite: writes are serialised anyway, a few readers
/// (the console, `GET_ENV_MOD_REQ`, `ETag`s) read beside the writer.
const SQLITE_CONNECTIONS: u32 = 4;

/// Connections of one portal process to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 8;

/// How long SQLite waits for a lock another process holds (a CLI command
/// beside `serve`) before a statement fails.
const SQLITE_BUSY_MS: u32 = 5_000;

/// Which database a [`Db`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Engine {
    /// The engine of a `sqlite:…` or `postgres://…` URL.
    pub fn of_url(url: &str) -> Result<Engine, PortalError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(PortalError::BadRequest(format!(
                "database URL {:?}: sqlite:PATH or postgres://… only",
                redact(url)
            )))
        }
    }
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The SQLite URL of the file `path` (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The database of a portal on `data_dir`: `database` when given, else
/// the SQLite file `DATA/portal.db`, created owner-only (0600: it holds
/// the environments' secret hashes).
pub fn open_for(data_dir: &Path, database: Option<&str>) -> Result<Db, PortalError> {
    match database {
        Some(url) => Db::open(url),
        None => {
            let path = data_dir.join("portal.db");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&path).map_err(|source| PortalError::Io {
                path: path.clone(),
                source,
            })?;
            Db::open(&sqlite_url(&path))
        }
    }
}

/// One bound value. Integers are `BIGINT` on both engines.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A `BIGINT`.
    Int(i64),
    /// A `TEXT`.
    Text(String),
    /// A `TEXT` or NULL.
    OptText(Option<String>),
    /// A `BIGINT` or NULL.
    OptInt(Option<i64>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Arg {
    fn from(v: usize) -> Arg {
        Arg::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Int(i64::from(v))
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(v.clone())
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::OptText(v)
    }
}

impl From<Option<u64>> for Arg {
    fn from(v: Option<u64>) -> Arg {
        Arg::OptInt(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

/// One SQL statement with its arguments.
#[derive(Debug, Clone)]
pub struct Stmt {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
    /// The transaction is rolled back, and [`Db::write`] answers `false`,
    /// when this statement changes no row (an `INSERT … ON CONFLICT DO
    /// NOTHING` that met its row).
    guard: bool,
    /// Kept prepared by the connection for the next use. A multi-row
    /// statement is not ([`multi_row`]): its text differs with each row
    /// count, and a cache of such statements (each with a placeholder per
    /// value) would hold megabytes per connection for nothing.
    persistent: bool,
}

impl Stmt {
    /// `sql` with `args` for `$1`, `$2`, ….
    pub fn new(sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) -> Stmt {
        Stmt {
            sql: sql.into(),
            args,
            guard: false,
            persistent: true,
        }
    }

    /// This statement must change a row, or the whole write is undone.
    pub fn guard(mut self) -> Stmt {
        self.guard = true;
        self
    }
}

/// Builds a [`Stmt`]: `stmt!("… $1 …", a, b)`.
#[macro_export]
#[doc(hidden)]
macro_rules! stmt {
    ($sql:expr $(, $arg:expr)* $(,)?) => {
        $crate::db::Stmt::new($sql, vec![$($crate::db::Arg::from($arg)),*])
    };
}
pub use stmt;

/// Rows written by one multi-row statement at most ([`multi_row`]): its
/// placeholders stay far below both engines' limits (SQLite 32 766,
/// PostgreSQL 65 535) for a row of a dozen columns.
pub const ROWS_PER_STMT: usize = 256;

/// `head VALUES ($1, …), ($n, …) tail` for `rows` (each a row's values,
/// all of one width), in statements of at most [`ROWS_PER_STMT`] rows: a
/// batch of rows is one round trip to the database, not one per row.
pub fn multi_row(head: &str, rows: Vec<Vec<Arg>>, tail: &str) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = format!("{head} VALUES ");
        let mut args = Vec::new();
        for (i, row) in rows.by_ref().take(ROWS_PER_STMT).enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 0..row.len() {
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", args.len() + j + 1));
            }
            sql.push(')');
            args.extend(row);
        }
        sql.push(' ');
        sql.push_str(tail);
        let mut stmt = Stmt::new(sql, args);
        stmt.persistent = false;
        out.push(stmt);
    }
    out
}

fn bind(args: &[Arg]) -> AnyArguments<'static> {
    let mut out = AnyArguments::default();
    for a in args {
        // Adding a value of a supported type cannot fail.
        let _ = match a.clone() {
            Arg::Int(v) => out.add(v),
            Arg::Text(v) => out.add(v),
            Arg::OptText(v) => out.add(v),
            Arg::OptInt(v) => out.add(v),
        };
    }
    out
}

/// The migrations checked in beside the crate, per engine.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "state",
        include_str!("../migrations/sqlite/0001_state.sql"),
    ),
    (
        2,
        "rollout requests",
        include_str!("../migrations/sqlite/0002_rollout_requests.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "state",
        include_str!("../migrations/postgres/0001_state.sql"),
    ),
    (
        2,
        "rollout requests",
        include_str!("../migrations/postgres/0002_rollout_requests.sql"),
    ),
];

/// The database runtime's thread: futures handed to it run there.
struct Worker {
    handle: tokio::runtime::Handle,
    /// Dropped with the [`Db`]: the thread ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    fn start() -> Result<Worker, std::io::Error> {
        let (handle_tx, handle_rx) = std_mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("portal-db".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the database thread ended at start"))??;
        Ok(Worker {
            handle,
            _stop: stop_tx,
        })
    }
}

/// The portal's database.
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    /// Serialises this process's write transactions on SQLite.
    writes: Option<Arc<AsyncMutex<()>>>,
    worker: Worker,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("engine", &self.engine).finish()
    }
}

fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> PortalError {
    move |source| PortalError::Database { op, source }
}

impl Db {
    /// Connects to `url` (`sqlite://PATH?mode=rwc`, `postgres://…`) and
    /// applies the migrations.
    pub fn open(url: &str) -> Result<Db, PortalError> {
        let engine = Engine::of_url(url)?;
        sqlx::any::install_default_drivers();
        let worker = Worker::start().map_err(|source| PortalError::Io {
            path: "portal-db thread".into(),
            source,
        })?;
        let (tx, rx) = std_mpsc::sync_channel(1);
        let url_owned = url.to_owned();
        worker.handle.spawn(async move {
            let _ = tx.send(connect(&url_owned, engine).await);
        });
        let pool = rx
            .recv()
            .map_err(|_| PortalError::BadRequest("the database thread ended".into()))??;
        info!(database = %redact(url), ?engine, "database open, migrations applied");
        Ok(Db {
            pool,
            engine,
            writes: (engine == Engine::Sqlite).then(|| Arc::new(AsyncMutex::new(()))),
            worker,
        })
    }

    /// Which engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool, for code that runs on [`Db::spawn`] (`LISTEN`, locks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `fut` on the database's runtime, without waiting.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.worker.handle.spawn(fut)
    }

    /// Runs `fut` on the database's runtime and waits for it (blocking
    /// this thread, as the file writes did). Never call it from a future
    /// that runs on the database's runtime.
    pub fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.worker.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the database thread ended")
    }

    /// Runs `stmts` in one transaction. `false`, and nothing changed, when
    /// a [`Stmt::guard`]ed statement changed no row.
    pub fn write(&self, stmts: Vec<Stmt>) -> Result<bool, PortalError> {
        if stmts.is_empty() {
            return Ok(true);
        }
        let pool = self.pool.clone();
        let writes = self.writes.clone();
        self.block(async move {
            let _serial = match &writes {
                Some(m) => Some(m.lock().await),
                None => None,
            };
            let mut tx = pool.begin().await.map_err(db_error("begin"))?;
            for s in &stmts {
                let done = sqlx::query_with(&s.sql, bind(&s.args))
                    .persistent(s.persistent)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("write"))?;
                if s.guard && done.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error("rollback"))?;
                    return Ok(false);
                }
            }
            tx.commit().await.map_err(db_error("commit"))?;
            Ok(true)
        })
    }

    /// Opens a transaction (on SQLite, after this process's other writes).
    pub fn begin(&self) -> Result<Tx, PortalError> {
        let pool = self.pool.clone();
        let writes = self.writes.clone();
        let (tx, serial) = self.block(async move {
            let serial = match writes {
                Some(m) => Some(m.lock_owned().await),
                None => None,
            };
            let tx = pool.begin().await.map_err(db_error("begin"))?;
            Ok::<_, PortalError>((tx, serial))
        })?;
        Ok(Tx {
            inner: Some((tx, serial)),
            handle: self.worker.handle.clone(),
        })
    }

    /// Runs `stmts` in `tx`, in order: the rows each changed. A failed
    /// statement fails the transaction (commit nothing after it).
    pub fn execute(&self, tx: &mut Tx, stmts: Vec<Stmt>) -> Result<Vec<u64>, PortalError> {
        let Some((mut inner, serial)) = tx.inner.take() else {
            return Err(PortalError::BadRequest(
                "a statement in a transaction that failed".into(),
            ));
        };
        let (inner, out) = self.block(async move {
            let mut changed = Vec::with_capacity(stmts.len());
            for s in &stmts {
                match sqlx::query_with(&s.sql, bind(&s.args))
                    .persistent(s.persistent)
                    .execute(&mut *inner)
                    .await
                {
                    Ok(done) => changed.push(done.rows_affected()),
                    Err(e) => return (inner, Err(db_error("write")(e))),
                }
            }
            (inner, Ok(changed))
        });
        tx.inner = Some((inner, serial));
        out
    }

    /// The rows `stmt` returns, run in `tx` (an `INSERT … RETURNING`).
    pub fn fetch(&self, tx: &mut Tx, stmt: Stmt) -> Result<Vec<AnyRow>, PortalError> {
        let Some((mut inner, serial)) = tx.inner.take() else {
            return Err(PortalError::BadRequest(
                "a statement in a transaction that failed".into(),
            ));
        };
        let (inner, out) = self.block(async move {
            let out = sqlx::query_with(&stmt.sql, bind(&stmt.args))
                .persistent(stmt.persistent)
                .fetch_all(&mut *inner)
                .await
                .map_err(db_error("write"));
            (inner, out)
        });
        tx.inner = Some((inner, serial));
        out
    }

    /// Commits `tx`.
    pub fn commit(&self, mut tx: Tx) -> Result<(), PortalError> {
        let Some((inner, serial)) = tx.inner.take() else {
            return Err(PortalError::BadRequest(
                "a commit of a transaction that failed".into(),
            ));
        };
        self.block(async move {
            let done = inner.commit().await.map_err(db_error("commit"));
            drop(serial);
            done
        })
    }

    /// The rows of one query.
    pub fn rows(&self, stmt: Stmt) -> Result<Vec<AnyRow>, PortalError> {
        let pool = self.pool.clone();
        self.block(async move {
            sqlx::query_with(&stmt.sql, bind(&stmt.args))
                .persistent(stmt.persistent)
                .fetch_all(&pool)
                .await
                .map_err(db_error("read"))
        })
    }
}

/// A transaction open on the database ([`Db::begin`]); rolled back when
/// dropped uncommitted.
pub struct Tx {
    /// The transaction and, on SQLite, this process's write turn.
    inner: Option<(Transaction<'static, Any>, Option<OwnedMutexGuard<()>>)>,
    /// The database's runtime, where the transaction ends.
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("open", &self.inner.is_some())
            .finish()
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some((inner, serial)) = self.inner.take() {
            // The connection goes back to the pool on the database's
            // runtime; the write turn is given up after the rollback.
            self.handle.spawn(async move {
                let _ = inner.rollback().await;
                drop(serial);
            });
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Connections close on the database's runtime, before it stops.
        let pool = self.pool.clone();
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.worker.handle.spawn(async move {
            pool.close().await;
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
}

async fn connect(url: &str, engine: Engine) -> Result<AnyPool, PortalError> {
    let options = match engine {
        Engine::Sqlite => AnyPoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: readers beside the writer; NORMAL: a commit is
                    // durable across a crash of the process (what a
                    // SIGKILL is), fsynced at checkpoints.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute(&*format!("PRAGMA busy_timeout = {SQLITE_BUSY_MS}"))
                        .await?;
                    Ok(())
                })
            }),
        Engine::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_CONNECTIONS),
    };
    let pool = options.connect(url).await.map_err(db_error("connect"))?;
    let source = match engine {
        Engine::Sqlite => Embedded(SQLITE_MIGRATIONS),
        Engine::Postgres => Embedded(POSTGRES_MIGRATIONS),
    };
    let migrator = Migrator::new(source).await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// A text column of `row`.
pub fn text(row: &AnyRow, i: usize) -> String {
    use sqlx::Row as _;
    row.try_get::<String, _>(i).unwrap_or_default()
}

/// A nullable text column of `row`.
pub fn opt_text(row: &AnyRow, i: usize) -> Option<String> {
    use sqlx::Row as _;
    row.try_get::<Option<String>, _>(i).ok().flatten()
}

/// A nullable `BIGINT` column of `row`.
pub fn opt_int(row: &AnyRow, i: usize) -> Option<i64> {
    use sqlx::Row as _;
    row.try_get::<Option<i64>, _>(i).ok().flatten()
}

/// A `BIGINT` column of `row`.
pub fn int(row: &AnyRow, i: usize) -> i64 {
    use sqlx::Row as _;
    row.try_get::<i64, _>(i).unwrap_or_default()
}

/// A `BIGINT` column of `row` that holds a count or milliseconds.
pub fn uint(row: &AnyRow, i: usize) -> u64 {
    u64::try_from(int(row, i)).unwrap_or_default()
}
