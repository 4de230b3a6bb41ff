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

#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(test, allow(unused_crate_dependencies))]
// dev-dependencies serve the integration tests
// `UpgradeError` carries the failing module's `Coords` and the cause whole;
// it ends a synchronisation, once, so its size costs nothing measurable.
#![allow(clippy::result_large_err)]

pub mod archive;
mod blocking;
mod cache;
mod delta;
mod downloader;
mod error;
pub mod fetch;
mod inventory;
mod plan;
mod portal_link;
mod preflight;
mod restarter;
mod schedule;
mod settings;
mod stager;
mod sync;
pub mod tuf;

// The home's files are the `banalytics-home` crate's; these names keep the
// crate's own paths (`crate::layout::Layout`) short.
use banalytics_home::{coords, failpoint, format, installed, layout, record};

use std::{sync::Arc, time::Duration};

use banalytics_messages::{
    portal::{GetEnvModulesResponse, SyncSoftware, UpgradeRequested},
    upgrade::{
        ApproveStagedSet, DiscardStagedSet, RestartDeferred, UpgradeCommitted, UpgradeRolledBack,
    },
};
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    ComponentError,
};
use tracing::{info, warn};

use crate::{
    archive::Limits,
    fetch::FetchConfig,
    inventory::Inventory,
    layout::Layout,
    portal_link::{core_module, Peers, PortalLink, Synchronise},
    stager::Stager,
    sync::Trigger,
};

pub use cache::CachedFile;
pub use downloader::{
    resolve, ChecksumPolicy, DownloadSet, Downloader, ResolveSet, DOWNLOAD_EVENT_QUEUE, PLATFORM,
};
pub use error::UpgradeError;
pub use plan::{plan, ResolvedModule};
pub use portal_link::NOTHING_CHANGED;
pub use preflight::{accept_all, Preflight};
pub use restarter::{Approve, RestartToApply, Restarter, WaitingSet};
pub use schedule::{
    ApplyMode, ApplyPolicy, Clock, ManualClock, SystemClock, TokioClock, Window, WindowConfig,
};
pub use settings::{parse_rate, HostSettings, UpdateType, UpgradeConfig, MAX_PARALLEL_DOWNLOADS};
pub use sync::target_set_id;

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

impl UpgradeConfig {
    fn fetch_config(&self) -> FetchConfig {
        FetchConfig {
            connect_timeout: self.connect_timeout.max(Duration::from_secs(1)),
            read_timeout: self.read_timeout.max(Duration::from_millis(1)),
            max_attempts: self.download_attempts.max(1),
            base_backoff: self.retry_backoff,
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
    let config = UpgradeConfig::parse(&init.config)?;
    let apply = ApplyPolicy {
        mode: config.apply,
        window: config.maintenance_window.clone(),
        approval_from_portal: config.approval_from_portal,
        clock: Arc::new(SystemClock),
    };
    let gate = fetch::rate::Gate::new(
        config.max_download_rate,
        config.download_window.clone(),
        Arc::new(SystemClock),
    );
    let space = fetch::space::Space::new(config.min_free_space.as_u64(), probe);
    Ok(Box::new(UpgradeCenter {
        name: init.name.clone(),
        config,
        layout: Layout::new(&init.home),
        preflight,
        apply,
        gate,
        space,
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
                .map_err(|e| ComponentError::Start(e.to_string()))?,
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
            self.config.status_flush_timeout,
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
        ctx.route::<DiscardStagedSet, _>(&link);
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
