//! A PostgreSQL server for tests, from Debian's `postgresql` package: one
//! per test binary, started at the first [`database`] call, with a fresh
//! database for each call, stopped (and its folder removed) when the binary
//! exits.
//!
//! The binaries are found under `/usr/lib/postgresql/*/bin` (not on
//! `PATH`; the newest version wins). `initdb` refuses root, so as root the
//! server runs as the package's `postgres` user, in a temporary folder
//! chowned to it. It listens on a free port of 127.0.0.1 only, with its
//! unix socket in that folder, trusting every local connection (a test
//! server on loopback, with nothing worth a password), and with `fsync`
//! off: a crash of the machine loses a test database, nothing else.
//!
//! Where no binaries exist, [`database`] prints why and returns `None` so
//! the test skips, except when `CI` is set: then it panics, so a CI machine
//! that lost its PostgreSQL fails instead of passing on nothing.

use std::{
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Where Debian's `postgresql-NN` packages put their binaries.
const PG_LIB: &str = "/usr/lib/postgresql";

/// How long the server may take to accept connections after its start:
/// about a second on a loaded 2-core machine, so this is ample.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Connections the server accepts: each portal process holds a small pool,
/// a listener and one connection per lease, and a system test starts a few
/// portals.
const MAX_CONNECTIONS: u32 = 200;

/// The running server of this test binary.
struct Server {
    /// The temporary folder: `data/` (the cluster), the unix socket and
    /// `postgres.log`.
    dir: PathBuf,
    child: Child,
}

/// The server, once started; `Err` holds why it could not be (every later
/// call fails the same way instead of trying again).
static SERVER: OnceLock<Result<u16, String>> = OnceLock::new();
/// The process and folder to stop and remove at exit.
static RUNNING: Mutex<Option<Server>> = Mutex::new(None);
/// Numbers the databases of this binary.
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// A fresh, empty database on this binary's PostgreSQL server:
/// `postgres://postgres@127.0.0.1:PORT/NAME`. `None` (with the reason on
/// stderr) where no PostgreSQL binaries are installed; panics instead when
/// `CI` is set, or when the server cannot be started.
pub fn database() -> Option<String> {
    let Some(bin) = bin_dir() else {
        let why = format!("no PostgreSQL binaries under {PG_LIB}/*/bin (Debian's `postgresql` package; .ci/run installs it)");
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}");
        eprintln!("skipping a PostgreSQL test: {why}");
        return None;
    };
    let port = match SERVER.get_or_init(|| start(&bin).map_err(|e| format!("{e:#}"))) {
        Ok(port) => *port,
        Err(why) => panic!("cannot start the test PostgreSQL: {why}"),
    };
    let name = format!("test_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let out = Command::new(bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .arg(&name)
        .output()
        .expect("running createdb");
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(format!("postgres://postgres@127.0.0.1:{port}/{name}"))
}

/// The newest `/usr/lib/postgresql/NN/bin` that has `initdb` and
/// `postgres`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The user the server runs as: the package's `postgres` user when this
/// process is root (`initdb` refuses root), else this process's own.
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: a NUL-terminated name; the returned record is read at once,
    // before any other getpw* call of this thread.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        bail!("running as root and there is no `postgres` user to run initdb as");
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// A command that runs as `user` when given.
fn as_user(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        // As root, std also drops the supplementary groups before setuid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// `initdb`, then the server on a free port; waits until it accepts
/// connections and registers its stop at exit.
fn start(bin: &Path) -> Result<u16> {
    let started = Instant::now();
    let user = server_user()?;
    let dir = tempfile::Builder::new()
        .prefix("banalytics-pg-")
        .tempdir()
        .context("temporary folder")?
        .keep();
    let result = init_and_run(bin, user, &dir);
    if result.is_err() {
        stop_at_exit();
        let _ = std::fs::remove_dir_all(&dir);
    }
    let port = result?;
    eprintln!(
        "test PostgreSQL ({}) on 127.0.0.1:{port}, ready in {} ms",
        bin.display(),
        started.elapsed().as_millis()
    );
    Ok(port)
}

/// `initdb` into `dir/data` and the server on it, as `user`.
fn init_and_run(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> Result<u16> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    let data = dir.join("data");
    let out = as_user(&bin.join("initdb"), user)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .current_dir(dir)
        .output()
        .context("running initdb")?;
    if !out.status.success() {
        bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("postgres.log"))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid))?;
    }
    let child = as_user(&bin.join("postgres"), user)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            &format!("max_connections={MAX_CONNECTIONS}"),
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting postgres")?;
    *RUNNING.lock().expect("postgres lock") = Some(Server {
        dir: dir.to_owned(),
        child,
    });
    // SAFETY: `stop_at_exit` is an `extern "C" fn()` that does not unwind.
    unsafe { libc::atexit(stop_at_exit) };
    wait_ready(bin, port, dir)?;
    Ok(port)
}

/// A port of 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until the server answers `pg_isready`; its log when it died.
fn wait_ready(bin: &Path, port: u16, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
        }
        let exited = RUNNING
            .lock()
            .expect("postgres lock")
            .as_mut()
            .and_then(|s| s.child.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            bail!("postgres did not become ready ({exited:?}): {log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// At exit of the test binary: an immediate shutdown (`SIGQUIT`: nothing
/// of a test database is worth a checkpoint), then the folder goes.
extern "C" fn stop_at_exit() {
    let Ok(mut running) = RUNNING.lock() else {
        return;
    };
    let Some(mut server) = running.take() else {
        return;
    };
    // SAFETY: a signal to the child this process started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGQUIT) };
    let _ = server.child.wait();
    let _ = std::fs::remove_dir_all(&server.dir);
}
