//! Before anything of the module set runs: finish an interrupted swap,
//! settle a pending verdict, apply a staged set (unless the active set is
//! on probation), count this start of a set on probation, and roll back a
//! set that used up its starts, quarantining it first. The file work is
//! `banalytics_home::swap`'s; the launcher runs this, never a core of the
//! set it prepares.

use std::path::Path;

use banalytics_home::{
    format, quarantine,
    swap::{self, Probation},
    Layout,
};
use banalytics_messages::portal::ModuleStatus;
use banalytics_sdk::{State, StatusBoard};
use tracing::{error, info, warn};

use crate::Error;

use super::{verdict, Restart, Settings};

/// What the start found and did.
#[derive(Debug, Default)]
pub struct Boot {
    /// The probation record when the active set is on probation.
    pub probation: Option<Probation>,
    /// Why the previous set was put back, when it was; or why the module
    /// folders could not be prepared (the host then starts with them as
    /// they are, so that the box stays reachable).
    pub rolled_back: Option<String>,
    /// The portal outbox entry of the rollback's `installation_cancelled`,
    /// when it was kept there
    /// ([`banalytics_messages::upgrade::UpgradeRolledBack::status_seq`]).
    pub rolled_back_seq: Option<u64>,
}

/// [`prepare`], or when the folders cannot be prepared, the start with
/// them as they are: the box stays reachable, and the reason is reported
/// as a rollback's.
pub(crate) fn prepare_or_start_as_is(
    layout: &Layout,
    settings: &Settings,
    state_dir: &Path,
) -> Boot {
    prepare(layout, settings, state_dir).unwrap_or_else(|e| {
        error!(error = %e, "the module folders could not be prepared; starting with them as they are, so that the box stays reachable");
        Boot {
            probation: None,
            rolled_back: Some(format!(
                "the module set could not be applied or put back: {e}"
            )),
            rolled_back_seq: None,
        }
    })
}

/// Finishes an interrupted swap, applies a staged set, counts this start
/// if on probation, and rolls back a set that used up its starts.
pub fn prepare(layout: &Layout, settings: &Settings, state_dir: &Path) -> Result<Boot, Error> {
    format::log_newer_files(layout.home());
    if let Some(newer) = swap::newer_record(layout) {
        warn!(error = %newer, "the module folders are left as they are: no swap, no probation, until a core that knows this format runs");
        return Ok(Boot::default());
    }
    if let Some(j) = swap::recover(layout)? {
        info!(procedure = ?j.procedure, "interrupted module swap finished");
    }
    verdict::settle_pending(layout)?;
    let failing_before = take_failing(state_dir);
    apply_staged(layout, &failing_before)?;
    // A quarantined set that is active again (an operator's `upgrade
    // --retry`) is on probation like any new set; if it fails again, the
    // rollback below quarantines it again. Checked at every start, not only
    // after an apply, so that a crash right after the apply changes nothing.
    match quarantine::lift_if_active(layout) {
        Ok(true) => info!("the quarantined module set is active again: quarantine lifted"),
        Ok(false) => {}
        Err(e) => warn!(
            path = %layout.state().join(quarantine::QUARANTINE_FILE).display(),
            error = %e,
            "cannot check the quarantine against the active set"
        ),
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
            ..Boot::default()
        });
    }
    roll_back(layout, settings, &p, &failing_before)
}

/// Puts the previous set back after the set on probation `p` used up its
/// starts, then applies a set that was staged meanwhile.
fn roll_back(
    layout: &Layout,
    settings: &Settings,
    p: &Probation,
    failing_before: &[String],
) -> Result<Boot, Error> {
    let reason = format!(
        "the new module set did not stay in RUN for {:.1} s in {} starts; last error: {}; the previous set is active again",
        settings.health_grace.as_secs_f64(),
        settings.max_boot_attempts,
        p.last_error.as_deref().unwrap_or("none recorded (the host stopped before the grace period ended)")
    );
    error!(%reason, "rolling back");
    let pending =
        verdict::write_pending(layout, ModuleStatus::InstallationCancelled, Some(&reason));
    // First the quarantine, so that the upgrade center never stages this
    // set again by itself, even after a crash in the middle of the rollback.
    let rolled = quarantine::of_set(&layout.modules(), &reason);
    quarantine::write(layout, &rolled).map_err(|source| Error::Io {
        path: layout.state().join(quarantine::QUARANTINE_FILE),
        source,
    })?;
    swap::rollback(layout)?;
    // Released before a staged set is applied below: that would put the
    // home on probation again, and a verdict pending then is dropped.
    let rolled_back_seq = pending.then(|| verdict::release_pending(layout)).flatten();
    // A set staged while the failed one was on probation waited for this
    // verdict: it is applied now, over the committed set, and goes on
    // probation in this start; unless it is the set just taken off.
    if swap::staged_modules(layout).is_some_and(|staged| rolled.is_set(&staged)) {
        warn!("the staged set is the set just rolled back; it is discarded");
        swap::discard_staged(layout)?;
    }
    let probation = match apply_staged(layout, failing_before)? {
        swap::Applied::Applied => swap::count_boot(layout)?,
        _ => None,
    };
    Ok(Boot {
        probation,
        rolled_back: Some(reason),
        rolled_back_seq,
    })
}

/// Applies a staged set if one waits and nothing stops it, excusing
/// `failing_before` from its probation.
fn apply_staged(layout: &Layout, failing_before: &[String]) -> Result<swap::Applied, Error> {
    let applied = swap::apply_excusing(layout, failing_before)?;
    match applied {
        swap::Applied::Applied => info!(excused = ?failing_before, "staged module set applied"),
        swap::Applied::WaitsForCommit | swap::Applied::Held => {
            info!(
                waits_for = %swap::staged_waits_for(layout)?.unwrap_or_default(),
                "staged module set not applied yet"
            )
        }
        swap::Applied::NothingStaged => {}
    }
    Ok(applied)
}

/// A configuration that is refused only with the new set (a kind the set
/// removed) fails this start on probation: the failure is recorded, the
/// set's starts are used up so that the next start puts the previous set
/// back, and the host restarts. It never ends in the exit status of a
/// refused configuration, which a service manager would not restart.
pub(crate) fn fail_start_on_config(
    layout: &Layout,
    settings: &Settings,
    mut probation: Probation,
    refusal: &Error,
) -> Result<Restart, Error> {
    let failure = format!("the configuration is refused with the new module set: {refusal}");
    error!(%failure, "failed start on probation; the previous set is put back at the next start");
    probation.last_error = Some(failure.clone());
    probation.boot_attempts = probation.boot_attempts.max(settings.max_boot_attempts);
    swap::set_probation(layout, &probation)?;
    Ok(Restart::for_request(
        &settings.restart_request(failure),
        settings,
    ))
}

/// The file in `state/` naming the components that were failing when the
/// box stopped to apply a staged set.
pub(crate) const FAILING_BEFORE_FILE: &str = "failing-before-upgrade.json";

/// Records which components are failing now, before the host stops to
/// restart: not in RUN, or restarted within the last grace period. The
/// next start that applies a set excuses them from its probation.
pub(crate) fn record_failing(board: &StatusBoard, state_dir: &Path, grace: std::time::Duration) {
    let recent = banalytics_sdk::status::now_ms().saturating_sub(grace.as_millis() as u64);
    let failing: Vec<String> = board
        .snapshot()
        .into_iter()
        .filter(|c| {
            c.state != State::Run
                || (c.restart_count > 0
                    && (c.since_ms >= recent || c.actors.values().any(|a| a.since_ms >= recent)))
        })
        .map(|c| c.name)
        .collect();
    // Format 1 is the list alone; one of a newer format is left as it is.
    let file = state_dir.join(FAILING_BEFORE_FILE);
    if let Some(newer) = format::newer_json(&file, format::FAILING_BEFORE_UPGRADE) {
        warn!(error = %newer, "the failing components are not recorded; a set applied at the next start excuses none");
        return;
    }
    let json = serde_json::to_vec(&failing).expect("plain data");
    if let Err(e) = banalytics_home::layout::write_atomic(&file, &json) {
        warn!(error = %e, "cannot record the failing components; a set applied at the next start excuses none");
    }
}

/// Takes (reads and removes) what [`record_failing`] wrote; empty when
/// nothing was recorded.
fn take_failing(state_dir: &Path) -> Vec<String> {
    let file = state_dir.join(FAILING_BEFORE_FILE);
    if format::newer_json(&file, format::FAILING_BEFORE_UPGRADE).is_some() {
        return Vec::new();
    }
    let failing = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    failing
}
