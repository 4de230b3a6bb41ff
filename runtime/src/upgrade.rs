//! The host's side of an upgrade: apply a staged set before anything
//! starts, count the starts of a set on probation and roll it back when it
//! never commits, commit it once every component stayed in RUN for the
//! grace period, and restart the process when the upgrade center asks.
//!
//! The file work is `banalytics_upgrade_center::swap`; what is here is the
//! part that needs the process and the status board.

use std::{path::PathBuf, time::Duration};

use banalytics_messages::upgrade::{
    RestartMode, RestartRequested, UpgradeCommitted, UpgradeRolledBack,
};
use banalytics_sdk::{State, StatusBoard};
use banalytics_upgrade_center::{
    layout::Layout,
    swap::{self, Probation, SwapError},
    UpgradeConfig,
};
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

impl Settings {
    /// From `config`.
    pub fn from_config(config: &BoxConfig) -> Result<Settings, Error> {
        let section = config
            .components
            .iter()
            .find(|c| c.kind == banalytics_upgrade_center::KIND_NAME);
        Ok(match section {
            Some(c) => {
                let u: UpgradeConfig = c.section.parse()?;
                Settings {
                    health_grace: u.health_grace(),
                    max_boot_attempts: u.max_boot_attempts.max(1),
                    restart_mode: u.restart_mode,
                    restart_command: u.restart_command,
                }
            }
            None => Settings {
                health_grace: Duration::from_secs(30),
                max_boot_attempts: 3,
                restart_mode: RestartMode::Exit,
                restart_command: None,
            },
        })
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

fn swap_err(home: &std::path::Path) -> impl Fn(SwapError) -> Error + '_ {
    move |e| Error::Io {
        path: home.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Before the components start: finish an interrupted swap, apply a staged
/// set, count this start if on probation, and roll back a set that used up
/// its starts.
pub fn prepare(layout: &Layout, settings: &Settings) -> Result<Boot, Error> {
    let err = swap_err(layout.home());
    if let Some(j) = swap::recover(layout).map_err(&err)? {
        info!(procedure = ?j.procedure, "interrupted module swap finished");
    }
    if swap::apply(layout).map_err(&err)? {
        info!("staged module set applied");
    }
    let Some(p) = swap::count_boot(layout).map_err(&err)? else {
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
    swap::rollback(layout).map_err(&err)?;
    Ok(Boot {
        probation: None,
        rolled_back: Some(reason),
    })
}

/// After the components started: report a rollback, or watch a set on
/// probation and commit it once every component stayed in RUN for the
/// grace period. A failure meanwhile is recorded as the probation's last
/// error (the reason a later rollback gives); a component still failing
/// after a whole grace period makes this start a failed one, and the host
/// restarts (the next start counts again, and the one after the last
/// attempt rolls back).
pub async fn after_start(host: &Host, layout: Layout, boot: Boot, settings: Settings) {
    if let Some(reason) = boot.rolled_back {
        host.bus().publish(UpgradeRolledBack { reason }).await;
        return;
    }
    let Some(mut probation) = boot.probation else {
        return;
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
                    host.bus()
                        .publish(RestartRequested {
                            mode: settings.restart_mode,
                            command: settings.restart_command.clone(),
                            reason,
                        })
                        .await;
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    changed = changes.changed() => if changed.is_err() { return },
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
        }
        Err(e) => error!(error = %e, "cannot commit the new module set"),
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
