//! `banalytics-box run`, top to bottom: the home lock, the launcher's
//! handshake or the preparation of the module set (and the launch of a
//! core of the set), the plugins and the full configuration, then the
//! running host ([`super::serve`]) and the restart it ends with.

use std::{fs::File, ops::ControlFlow, path::PathBuf};

use banalytics_home::{failpoint::failpoint, running::RunningCore, swap, Layout};
use tracing::{info, warn};

use crate::{
    config::BoxConfig,
    launcher::{self, Handshake},
    logging, notify,
    registry::Registry,
    Error, Home, EXIT_OK,
};

use super::{
    prepare::{fail_start_on_config, prepare_or_start_as_is, Boot},
    serve::{serve, Start},
    settings, Settings,
};

/// Runs the host in `home` until a stop signal or a restart; the exit
/// status.
pub fn run(home: &Home) -> Result<u8, Error> {
    // Windows: a Job object, so that no child outlives this process.
    crate::platform::contain_children();
    // Order matters: the module set must be final (an interrupted swap
    // finished, a staged set applied, a failed set rolled back) before any
    // plugin library is loaded from it, because libraries are never
    // unloaded. What that needs of the configuration is read first,
    // accepting any component kind; the full check follows once the plugin
    // kinds are known.
    let early = BoxConfig::load_any_kind(home.root())?;
    // Started by a launcher: it took the lock, prepared the module set and
    // counted this start (`launcher`'s module docs).
    let handshake = Handshake::from_env()?;
    let lock = match &handshake {
        Some(h) => {
            let lock = h.take_lock();
            failpoint("core.handshake-taken");
            lock
        }
        None => home_lock(home)?,
    };
    // The console's Log page reads the host's last lines from this ring.
    let ring = early
        .console
        .as_ref()
        .map(|_| crate::console::LogRing::new());
    logging::init(&early.log, ring.clone());
    let layout = Layout::new(home.root());
    let settings = settings::of_config(&early)?;
    let (boot, core) = match &handshake {
        Some(h) => launched(h, &layout),
        None => match prepare_and_launch(home, &layout, &settings, &lock)? {
            ControlFlow::Continue(prepared) => prepared,
            ControlFlow::Break(code) => return Ok(code),
        },
    };
    if let Err(e) = banalytics_home::running::write(&layout, &core) {
        warn!(error = %e, "cannot record which core runs");
    }
    info!(version = %core.version, sha256 = %core.sha256, origin = ?core.origin, "core");
    let (registry, plugins) = Registry::for_config(&early).with_plugins(&layout.modules());
    plugins.log();
    let launched = handshake.is_some();
    let config = match BoxConfig::load(home.root(), &registry.names()) {
        Ok(config) => config,
        Err(refusal) => {
            let refusal = Error::from(refusal);
            let Some(probation) = boot.probation else {
                return Err(refusal);
            };
            let how = fail_start_on_config(&layout, &settings, probation, &refusal)?;
            drop(lock);
            return how.under_launcher(launched).carry_out(home.root());
        }
    };
    let ending = serve(Start {
        home,
        config: &config,
        registry: &registry,
        layout,
        settings,
        boot,
        handshake: handshake.as_ref(),
        ring,
    })?;
    drop(lock);
    match ending {
        None => Ok(EXIT_OK),
        Some(how) => how.under_launcher(launched).carry_out(home.root()),
    }
}

/// Takes the home's lock, refusing when another host holds it.
pub(crate) fn home_lock(home: &Home) -> Result<File, Error> {
    let lock_path = home.state_dir().join("host.lock");
    home.lock()
        .map_err(|source| Error::Io {
            path: lock_path.clone(),
            source,
        })?
        .ok_or_else(|| Error::AlreadyRunning {
            home: home.root().to_owned(),
            lock: lock_path,
        })
}

/// A core started by a launcher: what the launcher prepared, and the core
/// it says this is.
fn launched(h: &Handshake, layout: &Layout) -> (Boot, RunningCore) {
    let boot = Boot {
        probation: swap::probation(layout).ok().flatten(),
        rolled_back: h.rolled_back.clone(),
        rolled_back_seq: h.rolled_back_seq,
    };
    let core = RunningCore {
        pid: std::process::id(),
        ..h.core.clone()
    };
    (boot, core)
}

/// The installed executable's start: prepare the module set, then run the
/// set's core as a child when the set holds another one (`launcher`).
/// Goes on as the core, this executable, with what was prepared; or breaks
/// with the exit status once a core of the set ran as the child and ended.
fn prepare_and_launch(
    home: &Home,
    layout: &Layout,
    settings: &Settings,
    lock: &File,
) -> Result<ControlFlow<u8, (Boot, RunningCore)>, Error> {
    notify::status(if layout.has_staged_set() {
        "applying a staged set"
    } else {
        "preparing the module set"
    });
    let boot = prepare_or_start_as_is(layout, settings, &home.state_dir());
    failpoint("launcher.prepared");
    let mut own = launcher::own_identity(&home.state_dir()).map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    failpoint("launcher.identified");
    // Nothing of the set has run yet: a core of the set runs as this
    // launcher's child, and this process only watches it.
    match launcher::core_to_run(layout, &own) {
        launcher::CoreToRun::Other(core) => {
            match launcher::launch(layout, settings, core, lock, &boot)? {
                launcher::Launched::Exit(code) => return Ok(ControlFlow::Break(code)),
                launcher::Launched::OwnBuild { reason } => own.fallback = Some(reason),
            }
        }
        launcher::CoreToRun::OwnNamedBySet { version } => own.version = version,
        launcher::CoreToRun::Own => {}
    }
    Ok(ControlFlow::Continue((boot, own)))
}
