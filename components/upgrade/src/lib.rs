//! Software Upgrade Center: takes the portal's target module set to an
//! installed, verified, crash-safe module set.
//!
//! Actors, one per module: [`portal_link::PortalLink`] (triggers, the portal
//! conversation, the synchronisation), [`inventory::Inventory`] (installed
//! set and plan), [`downloader::Downloader`] (repository to cache),
//! [`stager::Stager`] (cache to a complete `modules-upgrade/`),
//! [`restarter::Restarter`]. All are supervised under the component's
//! `restart_on_failure`. They are siblings: what they share is plain data
//! in [`sync`], [`cache`], [`error`] and [`blocking`], never another
//! actor's internals.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))]
// dev-dependencies serve the integration tests
// `UpgradeError` carries the failing module's `Coords` and the cause whole;
// it ends a synchronisation, once, so its size costs nothing measurable.
#![allow(clippy::result_large_err)]

pub mod archive;
pub mod blocking;
pub mod cache;
pub mod downloader;
pub mod error;
pub mod fetch;
pub mod inventory;
pub mod plan;
pub mod portal_link;
pub mod preflight;
pub mod restarter;
pub mod schedule;
pub mod stager;
pub mod sync;
pub mod tuf;

// The home's files are the `banalytics-home` crate's; these names keep the
// crate's own paths (`crate::layout::Layout`) short.
use banalytics_home::{coords, failpoint, installed, layout, record};

use std::{str::FromStr, sync::Arc, time::Duration};

use banalytics_messages::{
    portal::{GetEnvModulesResponse, SyncSoftware, UpgradeRequested},
    upgrade::{
        ApproveStagedSet, RestartDeferred, RestartMode, UpgradeCommitted, UpgradeRolledBack,
    },
};
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    ComponentError,
};
use serde::Deserialize;
use tracing::{info, warn};

use crate::{
    archive::Limits,
    downloader::{ChecksumPolicy, Downloader},
    fetch::FetchConfig,
    inventory::Inventory,
    layout::Layout,
    portal_link::{core_module, Peers, PortalLink, Synchronise},
    restarter::Restarter,
    schedule::{ApplyMode, ApplyPolicy, SystemClock, Window, WindowConfig},
    stager::Stager,
    sync::Trigger,
};

/// The component kind's name, the `kind` value in `box.toml`.
pub const KIND_NAME: &str = "software-upgrade-center";

/// The component kind, for the host's registry; it stages every complete
/// set ([`preflight::accept_all`]).
pub fn kind() -> ComponentKind {
    kind_with(preflight::accept_all())
}

/// The component kind whose instances run `preflight` on each complete
/// staged set before it is published; a refusal cancels the
/// synchronisation ([`preflight`]).
pub fn kind_with(preflight: preflight::Preflight) -> ComponentKind {
    kind_with_space(preflight, fetch::space::Space::system_probe())
}

/// [`kind_with`], measuring free space with `probe` instead of `statvfs`:
/// tests stand in for a full file system with it.
pub fn kind_with_space(
    preflight: preflight::Preflight,
    probe: fetch::space::SpaceProbe,
) -> ComponentKind {
    ComponentKind::new(KIND_NAME, move |init| {
        create(init, preflight.clone(), probe.clone())
    })
}

/// The most downloads allowed at once: more only splits the same link.
pub const MAX_PARALLEL_DOWNLOADS: usize = 16;

/// When the upgrade center synchronises without being asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateType {
    /// Only on `EVT_SYNC_SOFT` or a local `upgrade` (and on a first run).
    #[default]
    Manual,
    /// Also every time the component starts.
    OnBoot,
}

/// The component's keys in `box.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// `manual` or `on-boot`.
    #[serde(default)]
    pub software_update_type: UpdateType,
    /// The Maven repository root.
    pub repository_url: String,
    /// `require` (default) or `warn`: an artifact with no SHA-256 anywhere.
    #[serde(default)]
    pub checksum_policy: ChecksumPolicy,
    /// Modules downloaded at once (1 to 16, default 4).
    #[serde(default = "default_parallel")]
    pub max_parallel_downloads: usize,
    /// Seconds to wait for a connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: u64,
    /// Milliseconds without a body byte before a download counts as stalled
    /// (default 30000).
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Attempts per artifact for transient failures (default 5).
    #[serde(default = "default_attempts")]
    pub download_attempts: u32,
    /// First retry delay in milliseconds, doubled per attempt with jitter
    /// (default 1000).
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// Largest number of entries in one package.
    #[serde(default = "default_entries")]
    pub max_archive_entries: u64,
    /// Largest extracted size of one package, in bytes.
    #[serde(default = "default_archive_bytes")]
    pub max_archive_bytes: u64,
    /// Largest compression ratio of a package entry.
    #[serde(default = "default_ratio")]
    pub max_archive_ratio: u64,
    /// How the box restarts to apply a staged set: `exit` (default on
    /// Linux), `exec`, or `command` (default on Windows).
    #[serde(default = "default_restart_mode")]
    pub restart_mode: RestartMode,
    /// The program `restart_mode = "command"` runs.
    #[serde(default = "default_restart_command")]
    pub restart_command: Option<String>,
    /// At most this many milliseconds between a complete staged set and the
    /// restart, waiting for Portal Integration to send the queued statuses
    /// (default 10000, at most 60000).
    #[serde(default = "default_flush_timeout")]
    pub status_flush_timeout_ms: u64,
    /// Seconds every component must stay in RUN after a new set starts
    /// before it is committed (default 30).
    #[serde(default = "default_health_grace")]
    pub health_grace_s: f64,
    /// Starts a new set gets to commit before the previous set is put back
    /// (default 3).
    #[serde(default = "default_boot_attempts")]
    pub max_boot_attempts: u32,
    /// The repository's TUF root, pinned at provisioning (a path relative
    /// to the home, e.g. `config/repository-root.json`): every artifact
    /// must then be a target of metadata signed from it ([`tuf`]).
    #[serde(default)]
    pub trust_root: Option<String>,
    /// Where the TUF metadata is (default `{repository_url}/.tuf/`).
    #[serde(default)]
    pub trust_metadata_url: Option<String>,
    /// Accept an `http://` repository on a host other than loopback (a
    /// warning at every start).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// PEM certificates to trust for the repository besides the webpki
    /// and system roots (relative to the home), as the portal's `ca_file`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// When a staged set is applied: `immediately` (default), `window` or
    /// `approval`.
    #[serde(default)]
    pub apply: ApplyMode,
    /// The maintenance window of `apply = "window"`.
    #[serde(default)]
    pub maintenance_window: Option<WindowConfig>,
    /// Whether a portal `EVT_SYNC_SOFT` for the staged set approves it
    /// (default false).
    #[serde(default)]
    pub approval_from_portal: bool,
    /// Longest a busy lease defers a restart (default `30m`); the host
    /// reads it.
    #[serde(default = "default_max_defer")]
    pub max_defer: String,
    /// Cap of all downloads together, e.g. `"2 MiB/s"` (default: none).
    #[serde(default)]
    pub max_download_rate: Option<String>,
    /// When downloads may run (default: always); a download still running
    /// when it closes pauses and resumes in the next one.
    #[serde(default)]
    pub download_window: Option<WindowConfig>,
    /// Free space kept for the user's data (recordings) on the home's file
    /// system, e.g. `"512 MiB"` (the default): a set that would not leave
    /// it is refused before any download, and a download that would go
    /// below it stops and discards its partial file.
    #[serde(default)]
    pub min_free_space: Option<String>,
}

fn default_max_defer() -> String {
    banalytics_messages::upgrade::DEFAULT_MAX_DEFER.to_owned()
}

fn default_restart_mode() -> RestartMode {
    RestartMode::platform_default()
}
fn default_restart_command() -> Option<String> {
    RestartMode::default_command()
}
fn default_flush_timeout() -> u64 {
    10_000
}
fn default_health_grace() -> f64 {
    banalytics_home::swap::DEFAULT_HEALTH_GRACE_S
}
fn default_boot_attempts() -> u32 {
    banalytics_home::swap::DEFAULT_MAX_BOOT_ATTEMPTS
}
fn default_parallel() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    fetch::DEFAULT_CONNECT_TIMEOUT.as_secs()
}
fn default_read_timeout() -> u64 {
    fetch::DEFAULT_READ_TIMEOUT.as_millis() as u64
}
fn default_attempts() -> u32 {
    fetch::DEFAULT_MAX_ATTEMPTS
}
fn default_backoff() -> u64 {
    fetch::DEFAULT_BASE_BACKOFF.as_millis() as u64
}
fn default_entries() -> u64 {
    archive::DEFAULT_MAX_ENTRIES
}
fn default_archive_bytes() -> u64 {
    archive::DEFAULT_MAX_TOTAL_BYTES
}
fn default_ratio() -> u64 {
    archive::DEFAULT_MAX_RATIO
}

impl UpgradeConfig {
    fn fetch_config(&self) -> FetchConfig {
        FetchConfig {
            connect_timeout: Duration::from_secs(self.connect_timeout_s.max(1)),
            read_timeout: Duration::from_millis(self.read_timeout_ms.max(1)),
            max_attempts: self.download_attempts.max(1),
            base_backoff: Duration::from_millis(self.retry_backoff_ms),
            ..FetchConfig::default()
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_entries: self.max_archive_entries,
            max_total_bytes: self.max_archive_bytes,
            max_ratio: self.max_archive_ratio,
            ..Limits::default()
        }
    }
}

struct UpgradeCenter {
    name: String,
    config: UpgradeConfig,
    layout: Layout,
    preflight: preflight::Preflight,
    apply: ApplyPolicy,
    gate: fetch::rate::Gate,
    space: fetch::space::Space,
}

fn create(
    init: &ComponentInit,
    preflight: preflight::Preflight,
    probe: fetch::space::SpaceProbe,
) -> Result<Box<dyn Component>, ComponentError> {
    let config: UpgradeConfig = init.config.parse()?;
    if !(1..=MAX_PARALLEL_DOWNLOADS).contains(&config.max_parallel_downloads) {
        return Err(ComponentError::Start(format!(
            "max_parallel_downloads = {} is not accepted; accepted values: 1 to {MAX_PARALLEL_DOWNLOADS}",
            config.max_parallel_downloads
        )));
    }
    // Every URL the box fetches from starts with one of these two.
    let transport_keys = [
        ("repository_url", Some(&config.repository_url)),
        ("trust_metadata_url", config.trust_metadata_url.as_ref()),
    ];
    for (key, url) in transport_keys {
        if let Some(url) = url {
            fetch::check_transport(key, url, config.allow_insecure_http)
                .map_err(|message| init.config.error_at(key, message))?;
        }
    }
    if config.restart_mode == RestartMode::Command && config.restart_command.is_none() {
        return Err(ComponentError::Start(
            "restart_mode = \"command\" needs restart_command, the program to run".into(),
        ));
    }
    let window = |key: &str, cfg: &Option<WindowConfig>| {
        cfg.as_ref()
            .map(Window::parse)
            .transpose()
            .map_err(|e| ComponentError::Start(format!("{key}: {e}")))
    };
    let maintenance_window = window("maintenance_window", &config.maintenance_window)?;
    let download_window = window("download_window", &config.download_window)?;
    if config.apply == ApplyMode::Window && maintenance_window.is_none() {
        return Err(ComponentError::Start(
            "apply = \"window\" needs maintenance_window, e.g. { schedule = \"0 2 * * *\", duration = \"2h\", timezone = \"Europe/Berlin\" }".into(),
        ));
    }
    jiff::SignedDuration::from_str(&config.max_defer)
        .ok()
        .filter(|d| !d.is_negative())
        .ok_or_else(|| {
            ComponentError::Start(format!(
                "max_defer = {:?} is not accepted; accepted: a duration such as \"30m\" or \"2h\"",
                config.max_defer
            ))
        })?;
    let rate = config
        .max_download_rate
        .as_deref()
        .map(fetch::rate::parse_rate)
        .transpose()
        .map_err(|e| ComponentError::Start(format!("max_download_rate: {e}")))?;
    let min_free = config
        .min_free_space
        .as_deref()
        .map(fetch::rate::parse_size)
        .transpose()
        .map_err(|e| ComponentError::Start(format!("min_free_space: {e}")))?
        .unwrap_or(fetch::space::DEFAULT_MIN_FREE_SPACE);
    let apply = ApplyPolicy {
        mode: config.apply,
        window: maintenance_window,
        approval_from_portal: config.approval_from_portal,
        clock: Arc::new(SystemClock),
    };
    if config.status_flush_timeout_ms > 60_000 {
        return Err(ComponentError::Start(format!(
            "status_flush_timeout_ms = {} is not accepted; accepted values: 0 to 60000",
            config.status_flush_timeout_ms
        )));
    }
    Ok(Box::new(UpgradeCenter {
        name: init.name.clone(),
        config,
        layout: Layout::new(&init.home),
        preflight,
        apply,
        gate: fetch::rate::Gate::new(rate, download_window, Arc::new(SystemClock)),
        space: fetch::space::Space::new(min_free, probe),
    }))
}

impl UpgradeCenter {
    /// The TUF trust the settings name, checked: its root file exists.
    fn trust(&self, layout: &Layout) -> Result<Option<tuf::Trust>, ComponentError> {
        let trust = match &self.config.trust_root {
            Some(root) => Some(
                tuf::Trust::new(
                    layout.home().join(root),
                    &self.config.repository_url,
                    self.config.trust_metadata_url.as_deref(),
                )
                .map_err(ComponentError::Start)?,
            ),
            None => None,
        };
        if let Some(trust) = &trust {
            if !trust.root.is_file() {
                return Err(ComponentError::Start(format!(
                    "trust_root = {:?}: no file at {}",
                    self.config.trust_root.as_deref().unwrap_or_default(),
                    trust.root.display()
                )));
            }
            info!(root = %trust.root.display(), metadata = %trust.metadata_url, "artifacts must be TUF targets");
        }
        Ok(trust)
    }

    /// Starts the five actors under the component's supervisor and
    /// returns what PortalLink is given.
    fn supervise_actors(
        &self,
        ctx: &mut ComponentContext,
        layout: &Layout,
        fetch_config: FetchConfig,
        trust: Option<tuf::Trust>,
    ) -> Peers {
        let l = layout.clone();
        let inventory = ctx.supervise("inventory", move |_, _| Inventory::new(l.clone()));
        let (l, repo, parallel, policy) = (
            layout.clone(),
            self.config.repository_url.clone(),
            self.config.max_parallel_downloads,
            self.config.checksum_policy,
        );
        let downloader = ctx.supervise("downloader", move |_, _| {
            Downloader::new(
                l.clone(),
                repo.clone(),
                fetch_config.clone(),
                parallel,
                policy,
            )
            .expect("the client was built once at start")
            .with_trust(trust.clone())
        });
        let limits = Limits {
            space: self.space.clone(),
            ..self.config.limits()
        };
        let (l, check) = (layout.clone(), self.preflight.clone());
        let stager = ctx.supervise("stager", move |_, _| {
            Stager::new(l.clone(), limits.clone(), check.clone())
        });
        let (bus, mode, delay) = (
            ctx.bus().clone(),
            self.config.restart_mode,
            Duration::from_millis(self.config.status_flush_timeout_ms),
        );
        let (apply, home) = (self.apply.clone(), layout.clone());
        let restarter = ctx.supervise("restarter", move |_, _| {
            Restarter::new(bus.clone(), mode, delay)
                .with_policy(apply.clone())
                .with_home(home.clone())
        });
        Peers {
            layout: layout.clone(),
            bus: ctx.bus().clone(),
            board: ctx.board().clone(),
            component: self.name.clone(),
            inventory,
            downloader,
            stager,
            restarter,
            core: core_module(layout),
            apply: self.apply.clone(),
        }
    }
}

impl Component for UpgradeCenter {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let layout = self.layout.clone();
        layout.create_folders().map_err(|e| {
            ComponentError::Start(format!(
                "cannot create the module folders under {}: {e}",
                layout.home().display()
            ))
        })?;
        // Build one client now so that a TLS set-up failure is a start error.
        let mut fetch_config = self.config.fetch_config();
        fetch_config.ca_file = self.config.ca_file.as_ref().map(|f| layout.home().join(f));
        fetch_config.gate = self.gate.clone();
        fetch_config.space = self.space.clone();
        fetch::client(&fetch_config).map_err(|e| ComponentError::Start(e.to_string()))?;

        let trust = self.trust(&layout)?;
        let peers = self.supervise_actors(ctx, &layout, fetch_config, trust);
        let peers_restarter = peers.restarter.clone();
        let link = ctx.supervise("portal-link", move |_, _| PortalLink::new(peers.clone()));
        ctx.route::<SyncSoftware, _>(&link);
        ctx.route::<UpgradeRequested, _>(&link);
        ctx.route::<GetEnvModulesResponse, _>(&link);
        ctx.route::<UpgradeCommitted, _>(&link);
        ctx.route::<UpgradeRolledBack, _>(&link);
        ctx.route::<RestartDeferred, _>(&link);
        ctx.route::<ApproveStagedSet, _>(&peers_restarter);

        match layout.environment_uuid() {
            Ok(Some(env)) => info!(environment = %env, "registered with the portal"),
            Ok(None) => warn!("environment is not registered (no environmentUuid in config/device-registration.properties): every synchronisation will be cancelled"),
            Err(e) => warn!(error = %e, "cannot read the environment registration"),
        }
        let trigger = if layout.is_first_run() {
            Some(Trigger::FirstRun)
        } else if self.config.software_update_type == UpdateType::OnBoot {
            Some(Trigger::OnBoot)
        } else {
            None
        };
        if let Some(trigger) = trigger {
            info!(?trigger, "synchronising at start");
            let _ = link.try_send(Synchronise(trigger));
        }
        Ok(())
    }
}
