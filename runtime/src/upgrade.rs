//! The host's side of an upgrade: apply a staged set before anything
//! starts, count the starts of a set on probation and roll it back when it
//! never commits, commit it once every component stayed in RUN for the
//! grace period, and restart the process when the upgrade center asks.
//!
//! The file work is `banalytics_home::swap`; what is here is the part that
//! needs the process and the status board.

use std::{path::PathBuf, time::Duration};

use banalytics_home::{
    swap::{self, Probation},
    Layout,
};
use banalytics_sdk::{
    upgrade::{RestartMode, RestartRequested, UpgradeCommitted, UpgradeRolledBack},
    State, StatusBoard,
};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::{config::BoxConfig, host::Host, Error};

/// The upgrade settings the host needs, from the upgrade center's section
/// (defaults when the box has no upgrade center).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long every component must stay in RUN before a new set commits.
    pub health_grace: Duration,
    /// Starts a new set gets before the previous set is put back.
    pub max_boot_attempts: u32,
    /// How to restart when a start on probation failed.
    pub restart_mode: RestartMode,
    /// The program of `RestartMode::Command`.
    pub restart_command: Option<String>,
}

/// The keys of the upgrade center's section that the host acts on. The
/// upgrade center validates its whole section when it is created; here
/// the other keys are ignored.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HostKeys {
    health_grace_s: f64,
    max_boot_attempts: u32,
    restart_mode: RestartMode,
    restart_command: Option<String>,
}

impl Default for HostKeys {
    fn default() -> Self {
        HostKeys {
            health_grace_s: swap::DEFAULT_HEALTH_GRACE_S,
            max_boot_attempts: swap::DEFAULT_MAX_BOOT_ATTEMPTS,
            restart_mode: RestartMode::platform_default(),
            restart_command: RestartMode::default_command(),
        }
    }
}

impl Settings {
    /// From `config`: the section of the upgrade center, or the defaults
    /// when the box has none.
    pub fn from_config(config: &BoxConfig) -> Result<Settings, Error> {
        let section = config
            .components
            .iter()
            .find(|c| c.kind == banalytics_upgrade_center::KIND.kind);
        let keys: HostKeys = match section {
            Some(c) => c.section.parse()?,
            None => HostKeys::default(),
        };
        Ok(Settings {
            health_grace: Duration::from_secs_f64(keys.health_grace_s.clamp(0.0, 86_400.0)),
            max_boot_attempts: keys.max_boot_attempts.max(1),
            restart_mode: keys.restart_mode,
            restart_command: keys.restart_command,
        })
    }
}

impl Settings {
    /// A restart request with these settings' mode.
    pub fn restart_request(&self, reason: String) -> RestartRequested {
        RestartRequested {
            mode: self.restart_mode,
            command: self.restart_command.clone(),
            reason,
        }
    }
}

/// What the start found and did.
#[derive(Debug, Default)]
pub struct Boot {
    /// The probation record when the active set is on probation.
    pub probation: Option<Probation>,
    /// Why the previous set was put back, when it was.
    pub rolled_back: Option<String>,
}

/// Before the components start: finish an interrupted swap, apply a staged
/// set, count this start if on probation, and roll back a set that used up
/// its starts.
pub fn prepare(layout: &Layout, settings: &Settings) -> Result<Boot, Error> {
    if let Some(j) = swap::recover(layout)? {
        info!(procedure = ?j.procedure, "interrupted module swap finished");
    }
    match swap::apply(layout)? {
        swap::Applied::Applied => info!("staged module set applied"),
        swap::Applied::WaitsForCommit => {
            info!(
                waits_for = %swap::staged_waits_for(layout)?.unwrap_or_default(),
                "staged module set not applied yet"
            )
        }
        swap::Applied::NothingStaged => {}
    }
    let Some(p) = swap::count_boot(layout)? else {
        return Ok(Boot::default());
    };
    if p.boot_attempts <= settings.max_boot_attempts {
        info!(
            attempt = p.boot_attempts,
            of = settings.max_boot_attempts,
            "new module set on probation"
        );
        return Ok(Boot {
            probation: Some(p),
            rolled_back: None,
        });
    }
    let reason = format!(
        "the new module set did not stay in RUN for {:.1} s in {} starts; last error: {}; the previous set is active again",
        settings.health_grace.as_secs_f64(),
        settings.max_boot_attempts,
        p.last_error.as_deref().unwrap_or("none recorded (the host stopped before the grace period ended)")
    );
    error!(%reason, "rolling back");
    swap::rollback(layout)?;
    Ok(Boot {
        probation: None,
        rolled_back: Some(reason),
    })
}

/// How the watch of a start ended.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing was on probation.
    NoProbation,
    /// The set on probation is committed.
    Committed,
    /// This start of the set on probation failed: restart so that the next
    /// start counts (or rolls back).
    Failed(RestartRequested),
}

/// After the components started: report a rollback, or watch a set on
/// probation and commit it once every component stayed in RUN for the
/// grace period. A failure meanwhile is recorded as the probation's last
/// error (the reason a later rollback gives); a component still failing
/// after a whole grace period makes this start a failed one, and the host
/// restarts (the next start counts again, and the one after the last
/// attempt rolls back).
pub async fn after_start(host: &Host, layout: Layout, boot: Boot, settings: Settings) -> Verdict {
    if let Some(reason) = boot.rolled_back {
        host.bus().publish(UpgradeRolledBack { reason }).await;
        return Verdict::NoProbation;
    }
    let Some(mut probation) = boot.probation else {
        return Verdict::NoProbation;
    };
    let board = host.board().clone();
    let mut changes = board.changes();
    let mut healthy_since: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        match all_running(&board) {
            Ok(()) => {
                failing_since = None;
                let since = *healthy_since.get_or_insert_with(Instant::now);
                let left = settings.health_grace.saturating_sub(since.elapsed());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    _ = changes.changed() => {}
                }
            }
            Err(failure) => {
                healthy_since = None;
                let failing_since = *failing_since.get_or_insert_with(Instant::now);
                if probation.last_error.as_deref() != Some(failure.as_str()) {
                    warn!(%failure, "failure while on probation");
                    probation.last_error = Some(failure.clone());
                    if let Err(e) = swap::set_probation(&layout, &probation) {
                        error!(error = %e, "cannot record the probation failure");
                    }
                }
                let left = settings
                    .health_grace
                    .saturating_sub(failing_since.elapsed());
                if left.is_zero() {
                    let reason = format!(
                        "start {} of the new module set failed: {failure}",
                        probation.boot_attempts
                    );
                    error!(%reason, "restarting");
                    return Verdict::Failed(settings.restart_request(reason));
                }
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    changed = changes.changed() => if changed.is_err() { return Verdict::NoProbation },
                }
                continue;
            }
        }
    }
    match swap::commit(&layout) {
        Ok(()) => {
            info!(
                grace_s = settings.health_grace.as_secs_f64(),
                "new module set committed"
            );
            host.bus().publish(UpgradeCommitted {}).await;
            Verdict::Committed
        }
        Err(e) => {
            error!(error = %e, "cannot commit the new module set");
            Verdict::NoProbation
        }
    }
}

fn all_running(board: &StatusBoard) -> Result<(), String> {
    for c in board.snapshot() {
        if c.state != State::Run {
            return Err(format!(
                "component {} is {:?}{}",
                c.name,
                c.state,
                c.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// What `run` does when it ends because of a restart request.
#[derive(Debug)]
pub enum Restart {
    /// Exit with [`crate::EXIT_RESTART`].
    Exit,
    /// Re-execute this program with the same arguments.
    Exec,
    /// Start this program, then exit with [`crate::EXIT_RESTART`].
    Command(String),
}

impl From<&RestartRequested> for Restart {
    fn from(r: &RestartRequested) -> Self {
        match (r.mode, &r.command) {
            (RestartMode::Exit, _) => Restart::Exit,
            (RestartMode::Exec, _) => Restart::Exec,
            (RestartMode::Command, Some(c)) => Restart::Command(c.clone()),
            (RestartMode::Command, None) => Restart::Exit,
        }
    }
}

/// Carries out a restart after the host stopped; returns the exit status
/// when the process should exit.
pub fn restart(how: Restart, home: &std::path::Path) -> Result<u8, Error> {
    match how {
        Restart::Exit => Ok(crate::EXIT_RESTART),
        Restart::Command(cmd) => {
            info!(command = %cmd, "starting the upgrade job");
            std::process::Command::new(&cmd)
                .current_dir(home)
                .spawn()
                .map_err(|source| Error::Io {
                    path: PathBuf::from(&cmd),
                    source,
                })?;
            Ok(crate::EXIT_RESTART)
        }
        Restart::Exec => {
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                path: PathBuf::from("/proc/self/exe"),
                source,
            })?;
            info!(exe = %exe.display(), "re-executing the host");
            let err = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .exec();
            Err(Error::Io {
                path: exe,
                source: err,
            })
        }
    }
}
