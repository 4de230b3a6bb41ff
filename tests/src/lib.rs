//! Support for whole-system tests: temporary box homes, the real
//! `banalytics-box` process, and polling with a deadline instead of sleeps.

#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

/// The target triple of the boxes the tests start (they are built together):
/// the classifier of their native modules.
pub const PLATFORM: &str = env!("BANALYTICS_TESTS_TARGET");

pub mod browser;
pub mod e2e;
pub mod fixtures;
pub mod fleet;
pub mod postgres;
pub mod simbox;
pub mod tls;

/// The reference portal, a crate of its own (`tests/portal`).
pub use banalytics_portal as portal;

// The `upgrade-bench` binary parses its arguments with it; a package's
// binaries can only use the dependencies of its library.
use clap as _;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How long a test waits for a host to come up or to answer.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The `banalytics-box` binary: `$BANALYTICS_BOX_BIN`, else the one in this
/// test's target folder, built once per test process with the test switches
/// (`cargo build -p banalytics-runtime --features failpoints`): the crash
/// tests kill it at its failpoints, which a build without the feature does
/// not have. Cargo does nothing when it is up to date.
pub fn box_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BANALYTICS_BOX_BIN") {
        return p.into();
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            let mut build = e2e::cargo_command();
            build.args([
                "build",
                "-p",
                "banalytics-runtime",
                "--bin",
                "banalytics-box",
                "--features",
                "failpoints",
            ]);
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build");
            let bin = dir.join("banalytics-box");
            assert!(
                status.success() && bin.exists(),
                "could not build {} with --features failpoints",
                bin.display()
            );
            bin
        })
        .clone()
}

/// Milliseconds since the Unix epoch, now: the clock of the box's `*_ms`
/// fields (`banalytics_sdk::status::now_ms`, which this crate does not
/// depend on).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary box home, with the host's log beside it.
pub struct TempHome {
    dir: tempfile::TempDir,
}

impl TempHome {
    /// A home with `config/box.toml` = `config`.
    pub fn new(config: &str) -> Result<TempHome> {
        let dir = tempfile::Builder::new().prefix("box-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("home/config"))?;
        std::fs::write(dir.path().join("home/config/box.toml"), config)?;
        Ok(TempHome { dir })
    }

    /// The home folder.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Where a started host's stderr goes, numbered per start.
    pub fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("box-{n}.log"))
    }

    /// Runs a CLI command on this home and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(box_bin())
            .arg("--home")
            .arg(self.path())
            .args(args)
            .output()
            .context("running banalytics-box")
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let out = self.cli(&["status", "--json"])?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The status of component `name` from the running host.
    pub fn component(&self, name: &str) -> Result<Value> {
        let status = self.status()?;
        status["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .with_context(|| format!("no component {name} in {status}"))
    }

    /// The control socket's `exchange` request: publishes `message` (JSON)
    /// on `topic` on the running host's bus and returns the first message on
    /// `reply_topic` within `timeout`, or the host's reason for none.
    pub fn exchange(
        &self,
        topic: &str,
        message: Value,
        reply_topic: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Value, String>> {
        use std::io::{BufRead, Write};
        let socket = self.path().join("state/control.sock");
        let mut stream =
            std::os::unix::net::UnixStream::connect(&socket).context("control socket")?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let request = serde_json::json!({
            "cmd": "exchange",
            "topic": topic,
            "message": message,
            "reply_topic": reply_topic,
            "timeout_ms": timeout.as_millis() as u64,
        });
        writeln!(stream, "{request}")?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line)?;
        let answer: Value = serde_json::from_str(&line).context("control answer")?;
        Ok(match answer["ok"].as_bool() {
            Some(true) => Ok(answer["data"].clone()),
            _ => Err(answer["message"].as_str().unwrap_or("").to_owned()),
        })
    }

    /// Starts `banalytics-box run` on this home; waits until its control
    /// socket answers.
    pub fn start(&self, n: usize) -> Result<BoxProcess> {
        let log = std::fs::File::create(self.log_path(n))?;
        let child = Command::new(box_bin())
            .arg("--home")
            .arg(self.path())
            .arg("run")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting banalytics-box run")?;
        let mut process = BoxProcess {
            child: Some(child),
            log: self.log_path(n),
        };
        poll_until(DEADLINE, "the host's control socket", || {
            if let Some(status) = process.try_wait() {
                return Some(Err(anyhow::anyhow!(
                    "host exited early with {status}: {}",
                    process.log()
                )));
            }
            match self.status() {
                Ok(s) if s["host"]["running"] == true => Some(Ok(())),
                _ => None,
            }
        })??;
        Ok(process)
    }
}

/// A running `banalytics-box run`; killed with SIGKILL if dropped running.
pub struct BoxProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl BoxProcess {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = poll_until(timeout, "the host to exit", || self.try_wait())?;
        self.child = None;
        Ok(status)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `signal` and waits for the exit status.
    pub fn signal_and_wait(mut self, signal: i32) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
        let status = poll_until(DEADLINE, "the host to exit", || self.try_wait())?;
        self.child = None;
        Ok(status)
    }
}

impl Drop for BoxProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
