//! End-to-end scaffolding shared by the whole-system tests, the demo and the
//! benchmarks: module files to publish, box homes wired to a portal, a box
//! process run the way a service manager runs it (started again when it
//! exits [`EXIT_RESTART`] to apply a staged set), the reference portal as a
//! separate process (for tests that kill it), and one blocking API over
//! both kinds of portal.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{
    box_bin,
    fixtures::zip_of,
    poll_until,
    portal::{
        AdminClient, EnvironmentReport, Faults, ModuleObject, ModuleType, PortalHandle,
        PublishRequest, StatsReport, TlsFiles,
    },
    TempHome, DEADLINE,
};

/// The exit status of `banalytics-box run` that asks the service manager to
/// start it again, to apply a staged set.
pub const EXIT_RESTART: i32 = 75;

/// The environment UUID of box number `n` of a test.
pub fn env_uuid(n: usize) -> String {
    format!("e2e0e2e0-0000-4000-8000-{n:012}")
}

// ------------------------------------------------------------ module files

/// Deterministic content: a byte pattern that differs per `seed`.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        // xorshift64: cheap, and not compressible, so no layer can cheat.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `len` bytes of [`pattern`] content to `path` in 1 MiB blocks, so
/// that large artifacts never sit in memory whole.
pub fn write_pattern_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    const BLOCK: u64 = 1024 * 1024;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut left = len;
    let mut block = 0u64;
    while left > 0 {
        let n = left.min(BLOCK);
        f.write_all(&pattern(n as usize, seed.wrapping_mul(1_000_003) + block))?;
        left -= n;
        block += 1;
    }
    f.flush()?;
    Ok(())
}

/// A module to publish.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// `groupId:artifactId:version`.
    pub coordinates: String,
    /// Size of the main artifact.
    pub size: u64,
    /// With a `-bin.zip` holding `lib/{artifact}-dep.jar`.
    pub dependencies: bool,
    /// With a `-model.zip` holding `{artifact}/model.bin`.
    pub model: bool,
}

impl ModuleSpec {
    /// A main artifact of `size` bytes, no packages.
    pub fn new(coordinates: &str, size: u64) -> ModuleSpec {
        ModuleSpec {
            coordinates: coordinates.to_owned(),
            size,
            dependencies: false,
            model: false,
        }
    }

    /// With both optional packages.
    pub fn with_packages(mut self) -> ModuleSpec {
        self.dependencies = true;
        self.model = true;
        self
    }

    fn part(&self, i: usize) -> &str {
        self.coordinates.split(':').nth(i).unwrap_or_default()
    }

    /// The artifactId.
    pub fn artifact(&self) -> &str {
        self.part(1)
    }

    /// The version.
    pub fn version(&self) -> &str {
        self.part(2)
    }

    /// The main artifact's file name in `modules/` (contracts section 2).
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.jar",
            self.part(0),
            self.artifact(),
            self.version()
        )
    }

    /// The main artifact's path on the portal (`/repo/...`).
    pub fn repo_path(&self) -> String {
        format!(
            "/repo/{}/{}/{}/{}-{}.jar",
            self.part(0).replace('.', "/"),
            self.artifact(),
            self.version(),
            self.artifact(),
            self.version()
        )
    }

    fn seed(&self) -> u64 {
        self.coordinates
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(1099511628211)
            })
    }

    /// Writes the files into `dir` and returns the publish request.
    pub fn write(&self, dir: &Path) -> Result<PublishRequest> {
        std::fs::create_dir_all(dir)?;
        let stem = self.coordinates.replace(':', "_");
        let main = dir.join(format!("{stem}.jar"));
        write_pattern_file(&main, self.size, self.seed())?;
        let mut req = PublishRequest::new(&self.coordinates, ModuleType::Component, &main);
        let (artifact, version) = (self.artifact(), self.version());
        if self.dependencies {
            let bin = dir.join(format!("{stem}-bin.zip"));
            let body = format!("{artifact} {version} dependency").repeat(50);
            std::fs::write(
                &bin,
                zip_of(&[(&format!("lib/{artifact}-dep.jar"), body.as_bytes())]),
            )?;
            req.bin = Some(bin);
        }
        if self.model {
            let model = dir.join(format!("{stem}-model.zip"));
            let body = format!("{artifact} {version} model weights").repeat(50);
            std::fs::write(
                &model,
                zip_of(&[(&format!("{artifact}/model.bin"), body.as_bytes())]),
            )?;
            req.model = Some(model);
        }
        Ok(req)
    }
}

// ------------------------------------------------------------ portal API

/// One status the portal received, flattened for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// `artifactId:version`, empty for a whole-set status.
    pub module: String,
    /// `downloading`, `downloaded`, `installed`, ...
    pub status: String,
    /// The status message, empty when null.
    pub message: String,
}

impl std::fmt::Display for StatusLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.module)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

/// The statuses of an environment report, in the order received.
pub fn status_lines(report: &EnvironmentReport) -> Vec<StatusLine> {
    report
        .statuses
        .iter()
        .map(|s| StatusLine {
            module: match (
                s.module["artifactId"].as_str(),
                s.module["version"].as_str(),
            ) {
                (Some(a), Some(v)) => format!("{a}:{v}"),
                _ => String::new(),
            },
            status: s.status.as_str().unwrap_or_default().to_owned(),
            message: s.status_message.as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// What a test, the demo and the benchmarks do with a portal, blocking, the
/// same for an in-process [`PortalHandle`] and a [`PortalProcess`].
pub trait PortalApi {
    /// `ws://ADDR` (`wss://` with TLS), the box's `portal_url`.
    fn portal_url(&self) -> String;
    /// `http://ADDR/repo` (`https://` with TLS), the box's `repository_url`.
    fn repo_url(&self) -> String;
    /// Publishes a module.
    fn publish_module(&self, req: &PublishRequest) -> Result<ModuleObject>;
    /// Sets `env`'s whole target set.
    fn assign_set(&self, env: &str, coordinates: &[String]) -> Result<()>;
    /// Sends `EVT_SYNC_SOFT`; how many connections took it.
    fn sync_env(&self, env: &str) -> Result<usize>;
    /// Sends a text frame as is; how many connections took it.
    fn send_raw_text(&self, env: &str, text: &str) -> Result<usize>;
    /// Every environment seen or assigned.
    fn environment_reports(&self) -> Result<Vec<EnvironmentReport>>;
    /// The repository and connection counters.
    fn stats_report(&self) -> Result<StatsReport>;
    /// Zeroes the counters.
    fn reset_counters(&self) -> Result<()>;
    /// Replaces the fault switches.
    fn set_fault_switches(&self, faults: &Faults) -> Result<()>;
    /// Registers `env` (its UUID chosen by the test): the secret, shown
    /// once. [`register_box`] remembers it for the test.
    fn register_environment(&self, env: &str) -> Result<String>;
    /// The portal's data folder: what its registrations belong to.
    fn data_folder(&self) -> PathBuf;

    /// One environment's report.
    fn environment_report(&self, env: &str) -> Result<Option<EnvironmentReport>> {
        Ok(self
            .environment_reports()?
            .into_iter()
            .find(|e| e.environment_uuid == env))
    }

    /// One environment's statuses, in order.
    fn statuses(&self, env: &str) -> Result<Vec<StatusLine>> {
        Ok(self
            .environment_report(env)?
            .map(|e| status_lines(&e))
            .unwrap_or_default())
    }

    /// Publishes every spec (files written under `dir`).
    fn publish_all(&self, dir: &Path, specs: &[ModuleSpec]) -> Result<Vec<ModuleObject>> {
        specs
            .iter()
            .map(|s| {
                let req = s.write(dir)?;
                self.publish_module(&req)
                    .with_context(|| format!("publishing {}", s.coordinates))
            })
            .collect()
    }

    /// Waits until `env` reported `status` as its status number `after` or
    /// later; returns every status so far.
    fn wait_for_status(
        &self,
        env: &str,
        status: &str,
        after: usize,
        timeout: Duration,
    ) -> Result<Vec<StatusLine>> {
        poll_until(timeout, &format!("{env} to report {status}"), || {
            let lines = self.statuses(env).ok()?;
            lines
                .iter()
                .skip(after)
                .any(|l| l.status == status)
                .then_some(lines)
        })
    }

    /// Waits until `env` has a live connection.
    fn wait_connected(&self, env: &str, timeout: Duration) -> Result<EnvironmentReport> {
        poll_until(timeout, &format!("{env} to connect"), || {
            self.environment_report(env)
                .ok()
                .flatten()
                .filter(|e| e.live_connections > 0)
        })
    }
}

impl PortalApi for PortalHandle {
    fn portal_url(&self) -> String {
        PortalHandle::portal_url(self)
    }
    fn repo_url(&self) -> String {
        PortalHandle::repo_url(self)
    }
    fn publish_module(&self, req: &PublishRequest) -> Result<ModuleObject> {
        Ok(self.publish(req)?)
    }
    fn assign_set(&self, env: &str, coordinates: &[String]) -> Result<()> {
        let c: Vec<&str> = coordinates.iter().map(String::as_str).collect();
        self.assign(env, &c)?;
        Ok(())
    }
    fn sync_env(&self, env: &str) -> Result<usize> {
        Ok(self.sync(env))
    }
    fn send_raw_text(&self, env: &str, text: &str) -> Result<usize> {
        Ok(self.send_raw(env, text))
    }
    fn environment_reports(&self) -> Result<Vec<EnvironmentReport>> {
        Ok(self.environments())
    }
    fn stats_report(&self) -> Result<StatsReport> {
        Ok(self.stats())
    }
    fn reset_counters(&self) -> Result<()> {
        self.reset_stats();
        Ok(())
    }
    fn set_fault_switches(&self, faults: &Faults) -> Result<()> {
        self.set_faults(faults.clone());
        Ok(())
    }
    fn register_environment(&self, env: &str) -> Result<String> {
        Ok(self.register("", Some(env))?.environment_secret)
    }
    fn data_folder(&self) -> PathBuf {
        self.data_dir().to_path_buf()
    }
}

/// The secrets of the environments the harness registered, by portal data
/// folder and environment: a test that makes a second home (or settings)
/// for an environment gets the same secret, and a portal restarted on its
/// data folder knows them still.
fn secrets() -> &'static std::sync::Mutex<std::collections::HashMap<(PathBuf, String), String>> {
    static SECRETS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(PathBuf, String), String>>,
    > = std::sync::OnceLock::new();
    SECRETS.get_or_init(Default::default)
}

/// Registers `env` with `portal`, once per portal data folder, as an
/// operator does for each box (`environments add`); its secret.
pub fn register_box(portal: &dyn PortalApi, env: &str) -> Result<String> {
    let key = (portal.data_folder(), env.to_owned());
    let mut known = secrets().lock().expect("secrets lock");
    if let Some(secret) = known.get(&key) {
        return Ok(secret.clone());
    }
    let secret = portal
        .register_environment(env)
        .with_context(|| format!("registering {env} with the portal"))?;
    known.insert(key, secret.clone());
    Ok(secret)
}

/// Writes the home's `config/device-registration.properties`: the
/// environment UUID and, when given, its secret.
pub fn write_registration(home: &Path, env: &str, secret: Option<&str>) -> Result<()> {
    let mut text = format!("environmentUuid={env}\n");
    if let Some(secret) = secret {
        text.push_str(&format!("environmentSecret={secret}\n"));
    }
    let file = home.join("config/device-registration.properties");
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
}

/// Registers `env` with `portal` ([`register_box`]) and writes both keys
/// into the home at `home`.
pub fn register_home(portal: &dyn PortalApi, home: &Path, env: &str) -> Result<()> {
    let secret = register_box(portal, env)?;
    write_registration(home, env, Some(&secret))
}

/// The `banalytics-portal` binary: `$BANALYTICS_PORTAL_BIN`, else beside the
/// running executable (a binary of this package) or one folder up (a test).
pub fn portal_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BANALYTICS_PORTAL_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.parent();
    for dir in [beside, beside.and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        let bin = dir.join("banalytics-portal");
        if bin.is_file() {
            return Ok(bin);
        }
    }
    // A package of its own since the console: `cargo test --workspace`
    // builds it, `cargo test -p banalytics-tests` alone does not.
    let beside = beside.context("no folder of the running executable")?;
    let dir = match beside.parent() {
        Some(up) if beside.ends_with("deps") => up,
        _ => beside,
    };
    build_portal(dir).with_context(|| {
        format!(
            "banalytics-portal not found near {}: build it (`cargo build -p banalytics-portal`) or set BANALYTICS_PORTAL_BIN",
            exe.display()
        )
    })
}

/// Builds `banalytics-portal` into `dir`, a profile's folder of the target
/// directory (`--release` when it is `release`); the binary's path.
pub fn build_portal(dir: &Path) -> Result<PathBuf> {
    let mut build = cargo_command();
    build.args([
        "build",
        "-p",
        "banalytics-portal",
        "--bin",
        "banalytics-portal",
    ]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().context("building banalytics-portal")?;
    let bin = dir.join("banalytics-portal");
    if !status.success() || !bin.is_file() {
        bail!("cargo built no banalytics-portal in {}", dir.display());
    }
    Ok(bin)
}

/// The admin token the harness gives every portal process it starts (the
/// portal stores only its hash); a person's portal makes its own.
pub const HARNESS_ADMIN_TOKEN: &str = "banalytics-tests-admin-token";

/// The real `banalytics-portal serve`, a process of its own so that a test
/// can SIGKILL it; SIGKILLed on drop.
pub struct PortalProcess {
    child: Option<Child>,
    addr: SocketAddr,
    /// `http://ADDR` or `https://ADDR`, as it printed.
    url: String,
    data: PathBuf,
    log: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: AdminClient,
}

impl PortalProcess {
    /// Starts `serve --data DATA [--listen ADDR] EXTRA..` and waits for its
    /// `listening` line. Its stderr goes to `DATA/../portal-N.log`.
    pub fn start(data: &Path, listen: Option<SocketAddr>, extra: &[&str]) -> Result<Self> {
        Self::start_with(data, listen, None, extra)
    }

    /// [`PortalProcess::start`] serving https and wss with `tls`
    /// (`--tls-cert`, `--tls-key`); its admin client trusts `ca_pem`.
    pub fn start_tls(data: &Path, tls: &TlsFiles, ca_pem: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with(data, None, Some((tls, ca_pem)), extra)
    }

    fn start_with(
        data: &Path,
        listen: Option<SocketAddr>,
        tls: Option<(&TlsFiles, &str)>,
        extra: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(data)?;
        let log = unique_log(data, "portal")?;
        let mut cmd = Command::new(portal_bin()?);
        cmd.arg("serve").arg("--data").arg(data);
        if let Some(addr) = listen {
            cmd.arg("--listen").arg(addr.to_string());
        }
        if let Some((files, _)) = tls {
            cmd.arg("--tls-cert").arg(&files.cert);
            cmd.arg("--tls-key").arg(&files.key);
        }
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("BANALYTICS_PORTAL_TOKEN", HARNESS_ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting banalytics-portal serve")?;
        let stdout = child.stdout.take().context("portal stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("portal printed no `listening` line within {DEADLINE:?}");
            }
        };
        let Some(url) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "portal did not start ({line:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .parse()
            .with_context(|| format!("portal address in {url:?}"))?;
        ensure!(
            url.starts_with("https://") == tls.is_some(),
            "the portal serves {url}"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut client = AdminClient::new(url).with_token(Some(HARNESS_ADMIN_TOKEN));
        if let Some((_, ca_pem)) = tls {
            client = client.with_ca_pem(ca_pem.as_bytes())?;
        }
        Ok(PortalProcess {
            child: Some(child),
            addr,
            url: url.to_owned(),
            data: data.to_path_buf(),
            log,
            runtime,
            client,
        })
    }

    /// The address it listens on (to start it again on the same port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of its admin API, with the harness's token.
    pub fn admin(&self) -> AdminClient {
        self.client.clone()
    }

    /// Runs `f` (a call of [`PortalProcess::admin`]) to completion.
    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) -> Result<()> {
        kill(&mut self.child)
    }

    /// SIGTERM, and wait for the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        terminate(&mut self.child, "the portal")
    }

    fn block<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.runtime.block_on(f)
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

impl PortalApi for PortalProcess {
    fn portal_url(&self) -> String {
        // `http://` becomes `ws://`, `https://` `wss://`.
        format!("ws{}", self.url.trim_start_matches("http"))
    }
    fn repo_url(&self) -> String {
        format!("{}/repo", self.url)
    }
    fn publish_module(&self, req: &PublishRequest) -> Result<ModuleObject> {
        self.block(self.client.publish(req))
    }
    fn assign_set(&self, env: &str, coordinates: &[String]) -> Result<()> {
        self.block(self.client.assign(env, coordinates))?;
        Ok(())
    }
    fn sync_env(&self, env: &str) -> Result<usize> {
        self.block(self.client.sync(env))
    }
    fn send_raw_text(&self, env: &str, text: &str) -> Result<usize> {
        self.block(self.client.send_raw(env, text))
    }
    fn environment_reports(&self) -> Result<Vec<EnvironmentReport>> {
        self.block(self.client.environments())
    }
    fn stats_report(&self) -> Result<StatsReport> {
        self.block(self.client.stats())
    }
    fn reset_counters(&self) -> Result<()> {
        self.block(self.client.reset_stats())?;
        Ok(())
    }
    fn set_fault_switches(&self, faults: &Faults) -> Result<()> {
        self.block(self.client.set_faults(faults))?;
        Ok(())
    }
    fn register_environment(&self, env: &str) -> Result<String> {
        Ok(self
            .block(self.client.add_environment("", Some(env)))?
            .environment_secret)
    }
    fn data_folder(&self) -> PathBuf {
        self.data.clone()
    }
}

fn unique_log(data: &Path, stem: &str) -> Result<PathBuf> {
    let dir = data.parent().unwrap_or(data);
    for n in 1.. {
        let p = dir.join(format!("{stem}-{n}.log"));
        if !p.exists() {
            return Ok(p);
        }
    }
    unreachable!("an unused log name")
}

/// SIGTERM to `child` and its exit status; SIGKILL when it has not exited
/// within [`DEADLINE`].
fn terminate(child: &mut Option<Child>, what: &str) -> Result<ExitStatus> {
    let Some(mut child) = child.take() else {
        bail!("{what} is not running");
    };
    signal(child.id(), libc::SIGTERM);
    let status = poll_until(DEADLINE, &format!("{what} to exit"), || {
        child.try_wait().ok().flatten()
    });
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// SIGKILL to `child`, and reap it.
fn kill(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

pub(crate) fn signal(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) on a child process of ours that was not reaped yet.
        unsafe { libc::kill(pid as i32, signal) };
    }
}

// ------------------------------------------------------------ the box

/// How a box home is wired to its portal.
#[derive(Debug, Clone)]
pub struct BoxSettings {
    /// The portal's `ws://` URL.
    pub portal_url: String,
    /// The repository URL.
    pub repository_url: String,
    /// The environment UUID; `None` leaves the box unregistered.
    pub environment: Option<String>,
    /// The environment's secret, as the portal issued it at
    /// [`BoxSettings::new`].
    pub environment_secret: Option<String>,
    /// Extra lines for `[components.portal]`.
    pub portal_extra: String,
    /// Extra lines for `[components.upgrade-center]`.
    pub upgrade_extra: String,
    /// `[log] level`.
    pub log_level: String,
    /// `health_grace_s`: how long a new set runs before it commits.
    pub health_grace_s: f64,
    /// `max_boot_attempts`: the starts a new set gets before the previous
    /// set is put back.
    pub max_boot_attempts: u32,
    /// More `[components.NAME]` tables, appended to `box.toml`.
    pub components: String,
}

impl BoxSettings {
    /// A box of `env` talking to `portal`, with a short grace period (0.5 s)
    /// so that tests do not wait. `env` is registered with the portal
    /// ([`register_box`]); a portal that cannot register it is a broken
    /// test set-up, and panics here.
    pub fn new(portal: &dyn PortalApi, env: Option<&str>) -> BoxSettings {
        let environment_secret = env.map(|env| {
            register_box(portal, env)
                .unwrap_or_else(|e| panic!("registering the box's environment: {e:#}"))
        });
        BoxSettings {
            portal_url: portal.portal_url(),
            repository_url: portal.repo_url(),
            environment: env.map(str::to_owned),
            environment_secret,
            portal_extra: String::new(),
            upgrade_extra: String::new(),
            log_level: "info".into(),
            health_grace_s: 0.5,
            max_boot_attempts: 3,
            components: String::new(),
        }
    }

    /// `config/box.toml`.
    pub fn box_toml(&self) -> String {
        format!(
            r#"[log]
level = "{level}"
format = "json"

[components.portal]
kind = "portal-integration"
portal_url = "{portal}"
ping_timeout_s = 10
{portal_extra}

[components.upgrade-center]
kind = "software-upgrade-center"
repository_url = "{repo}"
restart_mode = "exit"
health_grace_s = {health_grace_s:?}
max_boot_attempts = {max_boot_attempts}
{upgrade_extra}
{components}
"#,
            level = self.log_level,
            portal = self.portal_url,
            portal_extra = self.portal_extra,
            repo = self.repository_url,
            upgrade_extra = self.upgrade_extra,
            health_grace_s = self.health_grace_s,
            max_boot_attempts = self.max_boot_attempts,
            components = self.components,
        )
    }
}

/// A box home and its `banalytics-box run` process, run the way a service
/// manager runs it: [`ManagedBox::supervise`] starts it again when it exits
/// [`EXIT_RESTART`]; any other exit is an error. SIGKILLed on drop.
pub struct ManagedBox {
    home: TempHome,
    /// Environment variables of every start ([`ManagedBox::set_env`]).
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
    exits: Vec<i32>,
}

impl ManagedBox {
    /// A fresh home with `settings`; nothing runs yet.
    pub fn new(settings: &BoxSettings) -> Result<ManagedBox> {
        let home = TempHome::new(&settings.box_toml())?;
        if let Some(env) = &settings.environment {
            write_registration(&home.path(), env, settings.environment_secret.as_deref())?;
        }
        Ok(ManagedBox {
            home,
            env: Vec::new(),
            child: None,
            starts: 0,
            exits: Vec::new(),
        })
    }

    /// The home.
    pub fn home(&self) -> &TempHome {
        &self.home
    }

    /// The home folder.
    pub fn path(&self) -> PathBuf {
        self.home.path()
    }

    /// Sets `key` = `value` in the environment of this and every later
    /// start (what a service manager gives each start, such as
    /// `NOTIFY_SOCKET`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts `run` without waiting for it to come up.
    pub fn spawn(&mut self) -> Result<()> {
        self.spawn_with_env(&[])
    }

    /// Starts `run` with these environment variables added (a failpoint),
    /// without waiting for it to come up. Later starts do not inherit them.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        ensure!(self.child.is_none(), "the box already runs");
        self.starts += 1;
        let log = std::fs::File::create(self.home.log_path(self.starts))?;
        let child = Command::new(box_bin())
            .arg("--home")
            .arg(self.home.path())
            .arg("run")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting banalytics-box run")?;
        self.child = Some(child);
        Ok(())
    }

    /// What a service manager does, once: when the process exited with
    /// [`EXIT_RESTART`], start it again and return `true`. Another exit is
    /// an error with the log.
    pub fn supervise(&mut self) -> Result<bool> {
        let Some(child) = self.child.as_mut() else {
            return Ok(false);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(false);
        };
        self.child = None;
        let code = status.code().unwrap_or(-1);
        self.exits.push(code);
        if code != EXIT_RESTART {
            bail!(
                "box exited with {status} (start {}): {}",
                self.starts,
                self.log_tail(20)
            );
        }
        self.spawn()?;
        Ok(true)
    }

    /// Waits at most `timeout` for the process to exit on its own and
    /// returns how it ended, without starting it again (unlike
    /// [`ManagedBox::supervise`]).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("the box does not run")?;
        let status = poll_until(timeout, "the box to exit", || {
            child.try_wait().ok().flatten()
        })
        .with_context(|| format!("box log: {}", self.log_tail(20)))?;
        self.child = None;
        self.exits.push(status.code().unwrap_or(-1));
        Ok(status)
    }

    /// Supervises until `done` returns `Some`, for at most `timeout`.
    pub fn run_until<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            self.supervise()?;
            if let Some(v) = done(self) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; box log: {}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit statuses seen so far.
    pub fn exits(&self) -> &[i32] {
        &self.exits
    }

    /// How many times `run` was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// The running process's ID, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) -> Result<()> {
        kill(&mut self.child)
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        terminate(&mut self.child, "the box")
    }

    /// `status --json` of the home.
    pub fn status(&self) -> Result<Value> {
        self.home.status()
    }

    /// The upgrade center's `details.sync`, from the running host.
    pub fn sync_report(&self) -> Option<Value> {
        let status = self.home.status().ok()?;
        if status["host"]["running"] != true {
            return None;
        }
        status["components"]
            .as_array()?
            .iter()
            .find(|c| c["kind"] == "software-upgrade-center")
            .map(|c| c["details"]["sync"].clone())
            .filter(|s| !s.is_null())
    }

    /// The installed set, as `status` shows it (`g:a:v`, sorted).
    pub fn installed(&self) -> Result<Vec<String>> {
        let status = self.home.status()?;
        let mut set: Vec<String> = status["upgrade"]["installed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        set.sort();
        Ok(set)
    }

    /// Every log of this home, oldest start first.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.home.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Names of the module files directly in `modules/` (not the
    /// upgrade center's own `modules-*` records), sorted.
    pub fn module_files(&self) -> Result<Vec<String>> {
        let dir = self.path().join("modules");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && !name.starts_with("modules-") {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

impl Drop for ManagedBox {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Reads `VmHWM` (peak resident set) of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Reads `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `cargo`, for a build started from a binary that `cargo run` started,
/// without the package variables `cargo run` set for that binary
/// (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, ...): build scripts such as ring's
/// watch them (`rerun-if-env-changed`), so inheriting them would make every
/// nested build and the next `cargo run` recompile the TLS stack in turn.
pub fn cargo_command() -> Command {
    const SET_BY_CARGO_RUN: [&str; 6] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "OUT_DIR",
    ];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if SET_BY_CARGO_RUN.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Builds `banalytics-box` and `banalytics-portal` beside the running
/// binary, with its profile, so that one `cargo run` of the demo or a
/// benchmark is enough; sets `BANALYTICS_BOX_BIN` and
/// `BANALYTICS_PORTAL_BIN`. Cargo does nothing when they are up to date.
///
/// One cargo invocation per package, on purpose: building both packages in
/// one invocation unifies their dependencies' features differently from the
/// `cargo run -p banalytics-tests` that started us, and the two builds would
/// then recompile the shared TLS crates in turn on every run.
///
/// Both variables already set name the binaries to run (a benchmark of
/// another build, such as the shipped one): nothing is built.
pub fn ensure_binaries() -> Result<PathBuf> {
    if let (Some(bin), Some(_)) = (
        std::env::var_os("BANALYTICS_BOX_BIN"),
        std::env::var_os("BANALYTICS_PORTAL_BIN"),
    ) {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?.to_path_buf();
    // The profile this program was built with: `release`, `dist` (the
    // shipped build, Cargo.toml) or the debug build.
    let profile = ["release", "dist"].into_iter().find(|p| dir.ends_with(p));
    for (package, bin) in [
        ("banalytics-runtime", "banalytics-box"),
        ("banalytics-portal", "banalytics-portal"),
    ] {
        let mut build = cargo_command();
        build.args(["build", "-p", package, "--bin", bin]);
        if let Some(profile) = profile {
            build.args(["--profile", profile]);
        }
        let status = build.status().with_context(|| format!("building {bin}"))?;
        if !status.success() || !dir.join(bin).exists() {
            bail!("could not build {}", dir.join(bin).display());
        }
    }
    let bin = dir.join("banalytics-box");
    std::env::set_var("BANALYTICS_BOX_BIN", &bin);
    std::env::set_var("BANALYTICS_PORTAL_BIN", dir.join("banalytics-portal"));
    Ok(bin)
}

/// The JSON events of a box log (`format = "json"`), skipping other lines.
pub fn log_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The repository paths a box fetches for `m` and their sizes: the main
/// artifact and the optional packages.
pub fn served_files(m: &ModuleObject) -> Vec<(String, u64)> {
    let dir = format!(
        "/repo/{}/{}/{}",
        m.group_id.replace('.', "/"),
        m.artifact_id,
        m.version
    );
    let stem = format!("{}-{}", m.artifact_id, m.version);
    let main = match m.platforms.as_ref().and_then(|p| p.get(crate::PLATFORM)) {
        Some(build) => (
            format!("{dir}/{stem}-{}.{}", crate::PLATFORM, m.packaging),
            build.size,
        ),
        None => (format!("{dir}/{stem}.{}", m.packaging), m.size),
    };
    let mut files = vec![main];
    if let Some(d) = &m.dependencies {
        files.push((format!("{dir}/{stem}-bin.zip"), d.size));
    }
    if let Some(p) = &m.model {
        files.push((format!("{dir}/{stem}-model.zip"), p.size));
    }
    files
}
