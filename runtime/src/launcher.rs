//! The launcher: the executable the service manager starts never changes,
//! and it runs the core (the host executable) of the active module set.
//!
//! `run` in the installed executable finishes or applies a swap and counts
//! the start of a set on probation ([`crate::host::prepare::prepare`]) before
//! anything of the new set runs. Then, when the active set holds a core
//! (`modules/banalytics-box`) that is not this executable, the launcher
//! starts it as its child with the same arguments and a handshake
//! ([`Handshake`], in the environment variable [`HANDSHAKE_ENV`]) saying
//! what was already done, and waits for it:
//!
//! 1. until the core reports that its components started (a line on the
//!    `ready_fd` pipe), at most the probation limit while the set is on
//!    probation: a core that hangs before that is killed;
//! 2. while the set is on probation, until the core committed it (its
//!    probation record gone), at most the probation limit and
//!    [`COMMIT_SLACK`] after `ready`: a core that hangs after its
//!    components started is stopped (SIGTERM, SIGKILL after
//!    [`KILL_GRACE`]) and the start fails;
//! 3. until it exits, forwarding SIGTERM, SIGINT and SIGHUP to it.
//!
//! A core that cannot be started (not executable, another architecture),
//! exits or is killed by a signal while its set is on probation fails that
//! start: the launcher records the exit status or signal as the probation's
//! last error and exits for a restart, so the next start counts again and
//! the one after the last attempt rolls the set back, with that reason.
//! The code that counts is the launcher's, which the new set did not
//! change.
//!
//! A set whose core is this executable's own bytes runs no child: the
//! launcher is that core, and reports itself with the set's version of it
//! ([`CoreToRun::OwnNamedBySet`]).
//!
//! The child, not an `exec`: only a parent sees how its child ended. The
//! child dies with the launcher (`PR_SET_PDEATHSIG`; on Windows the Job
//! object the launcher put itself in), so a killed launcher leaves no core
//! behind. What differs between Unix and Windows (the pipe, inheriting the
//! lock and the pipe, the stop forwarding, the executable check) is in
//! `crate::platform`.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use banalytics_home::{
    coords::CORE_EXECUTABLE_NAME,
    failpoint::failpoint,
    installed::read_modules_info,
    record::{sha256_file, SetRecord},
    running::{CoreOrigin, RunningCore},
    swap, Layout,
};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{
    host::{self, Settings},
    Error, EXIT_FAILURE, EXIT_OK, EXIT_RESTART,
};

mod identity;

/// The environment variable that carries the handshake to the core.
pub const HANDSHAKE_ENV: &str = "BANALYTICS_LAUNCHER";

/// The handshake's version; a core refuses one it does not know.
pub const HANDSHAKE_VERSION: u32 = 1;

/// The version of this build: `BANALYTICS_CORE_VERSION` at build time, else
/// the crate's.
pub const BUILD_VERSION: &str = match option_env!("BANALYTICS_CORE_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// What the launcher tells the core it starts (version 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handshake {
    /// [`HANDSHAKE_VERSION`].
    pub version: u32,
    /// The home lock, held by the launcher and inherited: the core holds it
    /// through this descriptor (on Windows: handle) instead of taking it
    /// again.
    pub lock_fd: i64,
    /// The write end of the readiness pipe (a descriptor or handle): the
    /// core writes `ready\n` once its components started.
    pub ready_fd: i64,
    /// The swap, apply and probation count are done; the core must not do
    /// them again.
    pub prepared: bool,
    /// What the launcher's preparation rolled back, for the core to report.
    pub rolled_back: Option<String>,
    /// The outbox entry of that report, when it was kept there
    /// (`host::Boot::rolled_back_seq`). Absent in a handshake from a
    /// launcher that predates it.
    #[serde(default)]
    pub rolled_back_seq: Option<u64>,
    /// The core being started, as the core should report itself.
    pub core: RunningCore,
}

impl Handshake {
    /// The handshake in the environment, if this process was started by a
    /// launcher; the variable is removed so that no grandchild sees it.
    pub fn from_env() -> Result<Option<Handshake>, Error> {
        let Some(text) = std::env::var_os(HANDSHAKE_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(HANDSHAKE_ENV);
        let refused = Error::Handshake;
        let h: Handshake = serde_json::from_str(&text.to_string_lossy())
            .map_err(|e| refused(format!("the launcher's handshake is unreadable: {e}")))?;
        if h.version != HANDSHAKE_VERSION {
            return Err(refused(format!(
                "the launcher speaks handshake version {}, this core {HANDSHAKE_VERSION}",
                h.version
            )));
        }
        Ok(Some(h))
    }

    /// The inherited home lock.
    pub fn take_lock(&self) -> fs::File {
        // SAFETY: the launcher passed this descriptor, open, for the child
        // to own; nothing else in this process uses it.
        unsafe { crate::platform::file_from_number(self.lock_fd) }
    }

    /// Tells the launcher that the components started.
    pub fn ready(&self) {
        // SAFETY: the launcher passed the write end for the child to own.
        let mut pipe = unsafe { crate::platform::file_from_number(self.ready_fd) };
        if let Err(e) = io::Write::write_all(&mut pipe, b"ready\n") {
            warn!(error = %e, "cannot tell the launcher that the components started");
        }
    }
}

/// A core of the active set to run instead of this executable.
#[derive(Debug, Clone)]
pub struct CoreFile {
    /// `modules/banalytics-box`.
    pub path: PathBuf,
    /// The core module's version.
    pub version: String,
    /// Its SHA-256.
    pub sha256: banalytics_home::Sha256,
}

/// This executable, as a [`RunningCore`]; its SHA-256 is hashed once per
/// executable file and cached, in `state/launcher-identity.json` and beside
/// the executable for every home started from it ([`identity`]).
pub fn own_identity(state_dir: &Path) -> io::Result<RunningCore> {
    let exe = std::env::current_exe()?;
    let (sha256, _) = identity::digest(&exe, state_dir)?;
    Ok(RunningCore {
        version: BUILD_VERSION.to_owned(),
        sha256,
        origin: CoreOrigin::Launcher,
        path: exe.display().to_string(),
        pid: std::process::id(),
        launcher_handshake: HANDSHAKE_VERSION,
        fallback: None,
    })
}

/// The core module of the active set: its file, version and SHA-256 (the
/// set's record, else hashed).
fn set_core(layout: &Layout) -> Option<CoreFile> {
    let modules = layout.modules();
    let path = modules.join(CORE_EXECUTABLE_NAME);
    if !path.is_file() {
        return None;
    }
    let core = read_modules_info(&modules)
        .ok()
        .flatten()?
        .into_iter()
        .find(|m| m.coords.is_core())?;
    let key = core.coords.clone();
    let recorded = SetRecord::load(&modules)
        .ok()
        .flatten()
        .and_then(|r| r.modules.get(&key).map(|m| m.main.sha256));
    let sha256 = match recorded {
        Some(sha) => sha,
        None => sha256_file(&path).ok()?,
    };
    Some(CoreFile {
        path,
        version: core.coords.version().to_owned(),
        sha256,
    })
}

/// What runs when the launcher asked the active set for its core.
#[derive(Debug, Clone)]
pub enum CoreToRun {
    /// The set holds no core: this executable is the core, with its build's
    /// version.
    Own,
    /// The set's core is this executable's bytes: this executable is the
    /// core, and the set names its version (`version`).
    OwnNamedBySet {
        /// The set's version of the core module.
        version: String,
    },
    /// The set holds another core: it runs as this launcher's child.
    Other(CoreFile),
}

/// The core of the active set, compared with `own` by SHA-256.
pub fn core_to_run(layout: &Layout, own: &RunningCore) -> CoreToRun {
    match set_core(layout) {
        None => CoreToRun::Own,
        Some(core) if core.sha256 == own.sha256 => CoreToRun::OwnNamedBySet {
            version: core.version,
        },
        Some(core) => CoreToRun::Other(core),
    }
}

/// Checks that `path` can run here before it is started
/// (`platform::check_executable`: on Unix executable and an ELF file of
/// this machine or a script; on Windows a PE file of this machine).
pub fn check_executable(path: &Path) -> io::Result<()> {
    crate::platform::check_executable(path)
}

/// How a started core ended, in words for the probation record.
fn describe(status: ExitStatus) -> String {
    if status.code() == Some(i32::from(crate::EXIT_HANDSHAKE)) {
        return format!(
            "the core refused this launcher's handshake version {HANDSHAKE_VERSION} (it exited with status {})",
            crate::EXIT_HANDSHAKE
        );
    }
    crate::process::describe_exit("the core", status)
}

/// What `run` does once [`launch`] returned.
#[derive(Debug)]
pub enum Launched {
    /// Exit with this status.
    Exit(u8),
    /// The committed set's core refused this launcher's handshake (a
    /// package older than the set was installed): this launcher runs its
    /// own build instead, keeps the set, and reports why. Restarting would
    /// only loop.
    OwnBuild {
        /// Why, for `status` and the portal.
        reason: String,
    },
}

/// Records `failure` as the last error of the set on probation, if one is.
fn record_failure(layout: &Layout, failure: &str) -> bool {
    match swap::probation(layout) {
        Ok(Some(mut p)) => {
            error!(%failure, attempt = p.boot_attempts, "failed start of the core on probation");
            p.last_error = Some(failure.to_owned());
            if let Err(e) = swap::set_probation(layout, &p) {
                error!(error = %e, "cannot record the failed start");
            }
            failpoint("launcher.failure-recorded");
            true
        }
        _ => {
            error!(%failure, "the core failed");
            false
        }
    }
}

/// What the launcher does when its core ended with `status`: a committed
/// set's core that refused the handshake is replaced by this launcher's
/// own build ([`Launched::OwnBuild`]).
fn after_exit(
    layout: &Layout,
    settings: &Settings,
    status: ExitStatus,
    core: &CoreFile,
) -> Result<Launched, Error> {
    failpoint("launcher.core-exited");
    let committed = matches!(swap::probation(layout), Ok(None));
    if committed && status.code() == Some(i32::from(crate::EXIT_HANDSHAKE)) {
        let reason = format!(
            "the set's core {} refused this launcher's handshake version {HANDSHAKE_VERSION}: install a banalytics-box package whose launcher it speaks; until then the launcher runs its own build {BUILD_VERSION} and keeps the set",
            core.version
        );
        error!(%reason, "running the launcher's own build");
        return Ok(Launched::OwnBuild { reason });
    }
    exit_after(layout, settings, status).map(Launched::Exit)
}

fn exit_after(layout: &Layout, settings: &Settings, status: ExitStatus) -> Result<u8, Error> {
    match status.code() {
        Some(0) => Ok(EXIT_OK),
        Some(75) => restart_after_core(layout, settings),
        Some(code) if code == i32::from(crate::EXIT_CONFIG) => Ok(crate::EXIT_CONFIG),
        _ => {
            if record_failure(layout, &describe(status)) {
                restart(layout, settings)
            } else {
                Ok(EXIT_FAILURE)
            }
        }
    }
}

/// Restarts after a failed start of the core, the way the settings say, as
/// the host does after a failed start of its own: under `exec` the launcher
/// re-executes itself (not the core); under `command` it starts the
/// upgrade job (on Windows `upgrade-job-start.bat`, which starts the box
/// again where no service manager does); otherwise the service manager
/// starts it again.
fn restart(layout: &Layout, settings: &Settings) -> Result<u8, Error> {
    match host::Restart::for_request(&settings.restart_request(String::new()), settings) {
        host::Restart::Exit => Ok(EXIT_RESTART),
        how => how.carry_out(layout.home()),
    }
}

/// Restarts after the core exited for a restart: it carried out `command`
/// itself (started the job); under `exec` the launcher re-executes itself.
fn restart_after_core(layout: &Layout, settings: &Settings) -> Result<u8, Error> {
    match host::Restart::for_request(&settings.restart_request(String::new()), settings) {
        how @ host::Restart::Exec => how.carry_out(layout.home()),
        _ => Ok(EXIT_RESTART),
    }
}

/// How long beyond the probation limit the launcher waits for a set on
/// probation to commit after its core reported ready: the core's own watch
/// decides at the limit, and then commits (renames and fsyncs) or exits.
pub const COMMIT_SLACK: Duration = Duration::from_secs(5);

/// How long a core that is stopped for not committing gets between
/// SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How often the launcher looks at the probation record while it waits for
/// a verdict: one small file read.
const COMMIT_POLL: Duration = Duration::from_millis(200);

/// What became of a start on probation while the launcher waited.
enum Probation {
    /// The probation record is gone: the core committed the set.
    Committed,
    /// The core ended first.
    Ended(ExitStatus),
    /// Neither within the bound.
    Undecided,
}

/// Waits at most `bound` for the set on probation to commit (its probation
/// record gone) or for `child` to end. A record that cannot be read counts
/// as still on probation: the core commits by removing it.
fn wait_for_commit(
    layout: &Layout,
    child: &mut std::process::Child,
    bound: Duration,
    feeder: &mut crate::notify::Feeder,
) -> Probation {
    let deadline = Instant::now() + bound;
    loop {
        feeder.tick();
        if let Ok(Some(status)) = child.try_wait() {
            return Probation::Ended(status);
        }
        if matches!(swap::probation(layout), Ok(None)) {
            return Probation::Committed;
        }
        if Instant::now() >= deadline {
            return Probation::Undecided;
        }
        std::thread::sleep(COMMIT_POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The command that starts `core` with the handshake: the home `lock` and
/// the readiness pipe's write end `ready` are inherited, and the core dies
/// with the launcher.
fn core_command(core: &CoreFile, lock: &fs::File, ready: &fs::File, boot: &host::Boot) -> Command {
    let handshake = Handshake {
        version: HANDSHAKE_VERSION,
        lock_fd: crate::platform::raw_number(lock),
        ready_fd: crate::platform::raw_number(ready),
        prepared: true,
        rolled_back: boot.rolled_back.clone(),
        rolled_back_seq: boot.rolled_back_seq,
        core: RunningCore {
            version: core.version.clone(),
            sha256: core.sha256,
            origin: CoreOrigin::ModuleSet,
            path: core.path.display().to_string(),
            pid: 0,
            launcher_handshake: HANDSHAKE_VERSION,
            fallback: None,
        },
    };
    let mut command = Command::new(&core.path);
    // As the Windows service, the launcher's `service run` is the core's
    // `run`: the core is the service's child, not a service.
    #[cfg(windows)]
    command.args(crate::service::core_arguments(std::env::args_os().skip(1)));
    #[cfg(unix)]
    command.args(std::env::args_os().skip(1));
    command.env(
        HANDSHAKE_ENV,
        serde_json::to_string(&handshake).expect("plain data"),
    );
    // The core dies with the launcher, and inherits the lock and the
    // pipe's write end; this thread (the launcher's main thread) lives as
    // long as the launcher.
    crate::platform::inherit(&mut command, &[lock, ready]);
    command
}

/// What came first while the launcher waited for the core's readiness.
enum Readiness {
    /// The pipe had a line (`ready\n`), or closed.
    Line(Vec<u8>),
    /// The core ended.
    Ended(ExitStatus),
    /// The probation limit passed first.
    TimedOut,
}

/// Waits for the core's readiness line on `ready`, at most `limit` (while
/// the set is on probation; without a bound otherwise).
fn wait_ready(
    child: &mut std::process::Child,
    mut ready: fs::File,
    limit: Option<Duration>,
    feeder: &mut crate::notify::Feeder,
) -> Readiness {
    let mut line = Vec::new();
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        if limit.is_some() {
            feeder.tick();
        }
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        if crate::platform::wait_readable(&ready, wait) {
            let mut buf = [0u8; 64];
            match ready.read(&mut buf) {
                Ok(0) | Err(_) => return Readiness::Line(line), // the core closed it: ended, or exec'd away
                Ok(k) => {
                    line.extend_from_slice(&buf[..k]);
                    if line.ends_with(b"\n") {
                        return Readiness::Line(line);
                    }
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Readiness::Ended(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Readiness::TimedOut;
        }
    }
}

/// Runs `core` as this launcher's child and waits for it (module docs).
/// `lock` is the home lock the child inherits; `boot` what the preparation
/// rolled back, for the core to report.
pub fn launch(
    layout: &Layout,
    settings: &Settings,
    core: CoreFile,
    lock: &fs::File,
    boot: &host::Boot,
) -> Result<Launched, Error> {
    let on_probation = matches!(swap::probation(layout), Ok(Some(_)));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let (ready_read, ready_write) = crate::platform::pipe().map_err(io_err(Path::new("pipe")))?;
    let mut command = core_command(&core, lock, &ready_write, boot);
    let failed_start = |failure: String| {
        if record_failure(layout, &failure) {
            restart(layout, settings).map(Launched::Exit)
        } else {
            Ok(Launched::Exit(EXIT_FAILURE))
        }
    };
    if let Err(problem) = check_executable(&core.path) {
        return failed_start(format!("the core could not be started: {problem}"));
    }
    // The core's notifications go through this launcher, which feeds the
    // service manager's watchdog itself while the set is on probation.
    let relay = crate::notify::Relay::start(&layout.state());
    if let Some(relay) = &relay {
        relay.hand_to(&mut command);
        relay.feed_watchdog_myself(on_probation);
    } else {
        command.env_remove("WATCHDOG_PID");
    }
    let mut feeder = crate::notify::Feeder::new();
    crate::notify::status(&format!(
        "starting core {}{}",
        core.version,
        if on_probation { " (on probation)" } else { "" }
    ));
    crate::platform::forward_stop(None);
    failpoint("launcher.core-spawning");
    let started = Instant::now();
    info!(core = %core.path.display(), version = %core.version, on_probation, "starting the core of the active set");
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return failed_start(format!(
                "the core could not be started: {}: {e}",
                core.path.display()
            ))
        }
    };
    crate::platform::forward_stop(Some(child.id()));
    drop(ready_write);
    failpoint("launcher.core-spawned");
    info!(
        pid = child.id(),
        hop_us = started.elapsed().as_micros() as u64,
        "core started"
    );
    let limit = on_probation.then(|| host::probation_limit(settings.health_grace));
    let watch = Watch {
        layout,
        settings,
        core: &core,
        relay: relay.as_ref(),
    };
    watch.core(child, ready_read, limit, started, &mut feeder)
}

/// What the launcher needs while its core runs.
struct Watch<'a> {
    layout: &'a Layout,
    settings: &'a Settings,
    core: &'a CoreFile,
    relay: Option<&'a crate::notify::Relay>,
}

impl Watch<'_> {
    /// Steps 1 to 3 of the module docs, from the core's spawn on.
    fn core(
        &self,
        mut child: std::process::Child,
        ready: fs::File,
        limit: Option<Duration>,
        started: Instant,
        feeder: &mut crate::notify::Feeder,
    ) -> Result<Launched, Error> {
        let (layout, settings, core) = (self.layout, self.settings, self.core);
        // 1. Until the core's components started.
        match wait_ready(&mut child, ready, limit, feeder) {
            Readiness::Line(line) => {
                if line == b"ready\n" {
                    info!(
                        ready_ms = started.elapsed().as_millis() as u64,
                        "the core's components started"
                    );
                    failpoint("launcher.core-ready");
                }
            }
            Readiness::Ended(status) => {
                crate::platform::forward_stop(None);
                return after_exit(layout, settings, status, core);
            }
            Readiness::TimedOut => {
                let _ = child.kill();
                let _ = child.wait();
                crate::platform::forward_stop(None);
                let failure = format!(
                    "the core did not start its components within {:.1} s",
                    limit.unwrap_or_default().as_secs_f64()
                );
                record_failure(layout, &failure);
                return restart(layout, settings).map(Launched::Exit);
            }
        }
        // 2. While its set is on probation, until the set committed: the
        // verdict is decided inside the core, so a core that hangs after its
        // components started would otherwise keep the box on probation forever.
        if let Some(limit) = limit {
            if let Some(decided) = self.verdict(&mut child, limit, feeder) {
                return decided;
            }
        }
        // 3. Until it exits.
        let status = child.wait().map_err(|source| Error::Io {
            path: core.path.clone(),
            source,
        })?;
        crate::platform::forward_stop(None);
        info!(%status, "the core ended");
        after_exit(layout, settings, status, core)
    }

    /// Step 2: waits for the set on probation to commit; `None` once it
    /// did, else what the launcher does.
    fn verdict(
        &self,
        child: &mut std::process::Child,
        limit: Duration,
        feeder: &mut crate::notify::Feeder,
    ) -> Option<Result<Launched, Error>> {
        let (layout, settings) = (self.layout, self.settings);
        let bound = limit + COMMIT_SLACK;
        match wait_for_commit(layout, child, bound, feeder) {
            Probation::Committed => {
                info!("the core's set committed");
                if let Some(relay) = self.relay {
                    relay.feed_watchdog_myself(false);
                }
                None
            }
            Probation::Ended(status) => {
                crate::platform::forward_stop(None);
                Some(after_exit(layout, settings, status, self.core))
            }
            Probation::Undecided => {
                warn!(
                    bound_s = bound.as_secs_f64(),
                    "the core did not commit its set in time; stopping it"
                );
                let ended = crate::process::terminate(child, KILL_GRACE);
                crate::platform::forward_stop(None);
                let failure = format!(
                    "the core did not commit within {:.1} s after it reported ready{}",
                    bound.as_secs_f64(),
                    ended.map_or(String::new(), |s| format!(" ({})", describe(s)))
                );
                record_failure(layout, &failure);
                Some(restart(layout, settings).map(Launched::Exit))
            }
        }
    }
}
