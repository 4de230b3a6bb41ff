//! The host's side of an upgrade: apply a staged set before anything
//! starts, count the starts of a set on probation and roll it back when it
//! never commits, commit it once every component stayed in RUN for the
//! grace period, and restart the process when the upgrade center asks.
//!
//! The file work is `banalytics_home::swap`; what is here is the part that
//! needs the process and the status board.
//!
//! The verdict's report (`installed`, `installation_cancelled`) is kept
//! with the verdict itself: held in the portal outbox before the commit or
//! rollback and released right after it (`banalytics_home::outbox`'s
//! module docs), and a verdict a kill left held is settled at the next
//! start. So a kill at any point neither loses the report nor sends one
//! for a verdict that never happened.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use banalytics_home::{
    failpoint::failpoint,
    format, outbox, quarantine,
    swap::{self, Probation},
    Layout,
};
use banalytics_messages::{
    portal::{ModuleStatus, ModuleStatusUpdate},
    upgrade::{RestartMode, RestartRequested, UpgradeCommitted, UpgradeRolledBack},
};
use banalytics_sdk::{status::ComponentStatus, State, StatusBoard};
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
    /// Longest a busy lease defers a restart.
    pub max_defer: Duration,
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
    max_defer: String,
}

impl Default for HostKeys {
    fn default() -> Self {
        HostKeys {
            health_grace_s: swap::DEFAULT_HEALTH_GRACE_S,
            max_boot_attempts: swap::DEFAULT_MAX_BOOT_ATTEMPTS,
            restart_mode: RestartMode::platform_default(),
            restart_command: RestartMode::default_command(),
            max_defer: banalytics_messages::upgrade::DEFAULT_MAX_DEFER.to_owned(),
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
            .find(|c| c.kind == banalytics_upgrade_center::KIND_NAME);
        let keys: HostKeys = match section {
            Some(c) => c.section.parse()?,
            None => HostKeys::default(),
        };
        #[cfg(windows)]
        if let (Some(c), RestartMode::Exec) = (section, keys.restart_mode) {
            return Err(Error::Component {
                name: c.name.clone(),
                message: crate::platform::EXEC_REFUSED.to_owned(),
            });
        }
        Ok(Settings {
            health_grace: Duration::from_secs_f64(keys.health_grace_s.clamp(0.0, 86_400.0)),
            max_boot_attempts: keys.max_boot_attempts.max(1),
            restart_mode: keys.restart_mode,
            restart_command: keys.restart_command,
            // The upgrade center refuses a bad value when it is created;
            // the host falls back to the default.
            max_defer: keys
                .max_defer
                .parse::<jiff::SignedDuration>()
                .ok()
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(Duration::from_secs(30 * 60)),
        })
    }
}

impl Settings {
    /// A restart request with these settings' mode.
    pub fn restart_request(&self, reason: String) -> RestartRequested {
        RestartRequested {
            mode: self.restart_mode,
            reason,
        }
    }

    /// How to carry out `request`: its mode, with the program of
    /// [`RestartMode::Command`] from these settings (`box.toml`), never
    /// from a message; without one configured, an exit.
    pub fn restart_for(&self, request: &RestartRequested) -> Restart {
        match (request.mode, &self.restart_command) {
            (RestartMode::Exit, _) => Restart::Exit,
            (RestartMode::Exec, _) => Restart::Exec,
            (RestartMode::Command, Some(c)) => Restart::Command(c.clone()),
            (RestartMode::Command, None) => Restart::Exit,
        }
    }
}

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
    /// when it was kept there ([`UpgradeRolledBack::status_seq`]).
    pub rolled_back_seq: Option<u64>,
}

/// A configuration that is refused only with the new set (a kind the set
/// removed) fails this start on probation: the failure is recorded, the
/// set's starts are used up so that the next start puts the previous set
/// back, and the host restarts. It never ends in the exit status of a
/// refused configuration, which a service manager would not restart.
pub fn fail_start_on_config(
    layout: &Layout,
    settings: &Settings,
    mut probation: Probation,
    refusal: &crate::Error,
) -> Result<Restart, Error> {
    let failure = format!("the configuration is refused with the new module set: {refusal}");
    error!(%failure, "failed start on probation; the previous set is put back at the next start");
    probation.last_error = Some(failure.clone());
    probation.boot_attempts = probation.boot_attempts.max(settings.max_boot_attempts);
    swap::set_probation(layout, &probation)?;
    Ok(settings.restart_for(&settings.restart_request(failure)))
}

/// Before the components start: finish an interrupted swap, apply a staged
/// set, count this start if on probation, and roll back a set that used up
/// its starts.
pub fn prepare(layout: &Layout, settings: &Settings, state_dir: &Path) -> Result<Boot, Error> {
    format::log_newer_files(layout.home());
    if let Some(newer) = swap::newer_record(layout) {
        warn!(error = %newer, "the module folders are left as they are: no swap, no probation, until a core that knows this format runs");
        return Ok(Boot::default());
    }
    if let Some(j) = swap::recover(layout)? {
        info!(procedure = ?j.procedure, "interrupted module swap finished");
    }
    settle_held_verdict(layout)?;
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
    let reason = format!(
        "the new module set did not stay in RUN for {:.1} s in {} starts; last error: {}; the previous set is active again",
        settings.health_grace.as_secs_f64(),
        settings.max_boot_attempts,
        p.last_error.as_deref().unwrap_or("none recorded (the host stopped before the grace period ended)")
    );
    error!(%reason, "rolling back");
    let held = hold_verdict(layout, ModuleStatus::InstallationCancelled, Some(&reason));
    // First the quarantine, so that the upgrade center never stages this
    // set again by itself, even after a crash in the middle of the rollback.
    let rolled = quarantine::of_set(&layout.modules(), &reason);
    quarantine::write(layout, &rolled).map_err(|source| Error::Io {
        path: layout.state().join(quarantine::QUARANTINE_FILE),
        source,
    })?;
    swap::rollback(layout)?;
    // Released before a staged set is applied below: that would put the
    // home on probation again, and a verdict held then is dropped.
    let rolled_back_seq = held.then(|| release_verdict(layout)).flatten();
    // A set staged while the failed one was on probation waited for this
    // verdict: it is applied now, over the committed set, and goes on
    // probation in this start; unless it is the set just taken off.
    if swap::staged_modules(layout).is_some_and(|staged| rolled.is_set(&staged)) {
        warn!("the staged set is the set just rolled back; it is discarded");
        swap::discard_staged(layout)?;
    }
    let probation = match apply_staged(layout, &failing_before)? {
        swap::Applied::Applied => swap::count_boot(layout)?,
        _ => None,
    };
    Ok(Boot {
        probation,
        rolled_back: Some(reason),
        rolled_back_seq,
    })
}

/// Holds the verdict's report for the portal in the outbox (module docs).
/// `false` when nothing is held: the box has no registration (nothing is
/// reported), or the outbox refused (the upgrade center then reports the
/// verdict from memory, as it does when the status seq is `None`).
fn hold_verdict(layout: &Layout, status: ModuleStatus, message: Option<&str>) -> bool {
    let env = match layout.environment_uuid() {
        Ok(Some(env)) => env,
        Ok(None) => return false,
        Err(e) => {
            warn!(error = %e, "cannot read the registration; the verdict is reported from memory");
            return false;
        }
    };
    let report = ModuleStatusUpdate {
        environment_uuid: env,
        module: None,
        status,
        status_message: message.map(str::to_owned),
        seq: None,
        outbox_id: None,
    };
    let entry = serde_json::to_vec(&report).expect("plain data");
    match outbox::hold_verdict(layout, &entry) {
        Ok(()) => {
            failpoint("verdict.held");
            true
        }
        Err(e) => {
            warn!(error = %e, "cannot keep the verdict's report on disk; it is reported from memory");
            false
        }
    }
}

/// Releases the held verdict once the commit or rollback is done: the
/// entry's number. On failure the verdict stays held and the next start
/// releases it; meanwhile the upgrade center reports it from memory.
fn release_verdict(layout: &Layout) -> Option<u64> {
    match outbox::release_verdict(layout) {
        Ok(seq) => seq,
        Err(e) => {
            error!(error = %e, "cannot release the verdict's report; the next start does");
            None
        }
    }
}

/// A verdict a kill left held: released when the probation it ended is
/// gone (the commit or rollback happened), dropped when the probation is
/// still on (it never happened; this start goes on with the probation).
/// Runs after an interrupted swap is finished, before anything is applied.
fn settle_held_verdict(layout: &Layout) -> Result<(), Error> {
    let settled = match swap::probation(layout)? {
        None => outbox::release_verdict(layout).map(|seq| {
            if let Some(seq) = seq {
                info!(
                    seq,
                    "the report of a verdict reached before the host stopped is released"
                );
            }
        }),
        Some(_) => outbox::drop_verdict(layout).map(|dropped| {
            if dropped {
                info!("a verdict held when the host stopped is dropped: its probation is still on");
            }
        }),
    };
    if let Err(e) = settled {
        warn!(error = %e, "cannot settle the verdict held when the host stopped");
    }
    Ok(())
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

/// A start on probation gets a verdict within this many grace periods
/// (and at least [`MIN_PROBATION_SLACK`] more than one): enough for a
/// component that fails once at start to recover and then stay up for a
/// whole grace period, bounded so that a flapping component cannot keep a
/// set on probation forever.
pub const PROBATION_LIMIT_GRACES: u32 = 3;

/// The least time a start on probation gets beyond one grace period.
pub const MIN_PROBATION_SLACK: Duration = Duration::from_secs(10);

/// Restarts of one component in one start on probation that fail the start
/// at once: it keeps restarting.
pub const MAX_PROBATION_RESTARTS: u32 = 3;

/// How long a start on probation may take to reach its verdict.
pub fn probation_limit(grace: Duration) -> Duration {
    (grace * PROBATION_LIMIT_GRACES).max(grace + MIN_PROBATION_SLACK)
}

fn describe(c: &ComponentStatus) -> String {
    let why = c.reason.as_ref().or(c.last_error.as_ref());
    format!(
        "component {} is {:?}{}",
        c.name,
        c.state,
        why.map(|r| format!(": {r}")).unwrap_or_default()
    )
}

/// What the probation watch decided at one look at the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every component that must be healthy stayed in RUN for the grace
    /// period.
    Commit,
    /// This start failed, for this reason.
    Fail(String),
    /// Look again at `until` at the latest (or when the board changes);
    /// `failure` is what is wrong now, if anything.
    Wait {
        /// The next look.
        until: Instant,
        /// The failure seen, for the probation record.
        failure: Option<String>,
    },
}

/// The verdict rules of one start on probation, fed with snapshots of the
/// status board (the rules are documented in the README):
///
/// - the components that must be healthy are all but those excused (they
///   were failing under the previous committed set);
/// - the start commits once all of them have been in RUN, without a
///   restart, for the grace period;
/// - it fails when one of them is out of RUN for a whole grace period,
///   restarts [`MAX_PROBATION_RESTARTS`] times, or when no commit came
///   within [`probation_limit`].
#[derive(Debug)]
pub struct ProbationWatch {
    grace: Duration,
    deadline: Instant,
    excused: Vec<String>,
    restarts_seen: BTreeMap<String, u32>,
    healthy_since: Option<Instant>,
    failing_since: Option<Instant>,
    last_failure: Option<String>,
}

impl ProbationWatch {
    /// A watch of a start that began at `start`.
    pub fn new(grace: Duration, excused: Vec<String>, start: Instant) -> Self {
        ProbationWatch {
            grace,
            deadline: start + probation_limit(grace),
            excused,
            restarts_seen: BTreeMap::new(),
            healthy_since: None,
            failing_since: None,
            last_failure: None,
        }
    }

    /// Looks at the board as of `now`.
    pub fn observe(&mut self, board: &[ComponentStatus], now: Instant) -> Step {
        let required = board.iter().filter(|c| !self.excused.contains(&c.name));
        let mut down = None;
        let mut restarted = None;
        for c in required {
            let total = c.restart_count;
            let seen = self
                .restarts_seen
                .insert(c.name.clone(), total)
                .unwrap_or(0);
            let last_error = c.last_error.as_deref().unwrap_or("none recorded");
            if total >= MAX_PROBATION_RESTARTS {
                return Step::Fail(format!(
                    "component {} keeps restarting: {total} restarts in this start; last error: {last_error}",
                    c.name
                ));
            }
            if total > seen && restarted.is_none() {
                restarted = Some(format!(
                    "component {} restarted ({total} in this start); last error: {last_error}",
                    c.name
                ));
            }
            if c.state != State::Run && down.is_none() {
                down = Some(describe(c));
            }
        }
        let failure = down.clone().or(restarted.clone());
        if failure.is_some() {
            self.last_failure.clone_from(&failure);
        }
        let next = match &down {
            None => {
                self.failing_since = None;
                if restarted.is_some() {
                    // Back in RUN, but the clock starts again.
                    self.healthy_since = Some(now);
                }
                let since = *self.healthy_since.get_or_insert(now);
                if now.duration_since(since) >= self.grace {
                    return Step::Commit;
                }
                since + self.grace
            }
            Some(down) => {
                self.healthy_since = None;
                let since = *self.failing_since.get_or_insert(now);
                if now.duration_since(since) >= self.grace {
                    return Step::Fail(down.clone());
                }
                since + self.grace
            }
        };
        if now >= self.deadline {
            return Step::Fail(format!(
                "no verdict within {:.1} s: the components did not stay in RUN for {:.1} s together; last failure: {}",
                probation_limit(self.grace).as_secs_f64(),
                self.grace.as_secs_f64(),
                self.last_failure.as_deref().unwrap_or("none seen")
            ));
        }
        Step::Wait {
            until: next.min(self.deadline),
            failure,
        }
    }
}

/// After the components started: report a rollback, or watch a set on
/// probation ([`ProbationWatch`]) and commit it. A failure meanwhile is
/// recorded as the probation's last error (the reason a later rollback
/// gives); a failed start makes the host restart (the next start counts
/// again, and the one after the last attempt rolls back).
pub async fn after_start(host: &Host, layout: Layout, boot: Boot, settings: Settings) -> Verdict {
    if let Some(reason) = boot.rolled_back {
        let status_seq = boot.rolled_back_seq;
        host.bus()
            .publish(UpgradeRolledBack { reason, status_seq })
            .await;
    }
    let Some(mut probation) = boot.probation else {
        return Verdict::NoProbation;
    };
    let board = host.board().clone();
    let mut changes = board.changes();
    let mut watch = ProbationWatch::new(
        settings.health_grace,
        probation.excused.clone(),
        Instant::now(),
    );
    let record = |failure: &str, probation: &mut Probation| {
        if probation.last_error.as_deref() != Some(failure) {
            warn!(%failure, "failure while on probation");
            probation.last_error = Some(failure.to_owned());
            if let Err(e) = swap::set_probation(&layout, probation) {
                error!(error = %e, "cannot record the probation failure");
            }
        }
    };
    loop {
        match watch.observe(&board.snapshot(), Instant::now()) {
            Step::Commit => break,
            Step::Fail(failure) => {
                record(&failure, &mut probation);
                let reason = format!(
                    "start {} of the new module set failed: {failure}",
                    probation.boot_attempts
                );
                error!(%reason, "restarting");
                return Verdict::Failed(settings.restart_request(reason));
            }
            Step::Wait { until, failure } => {
                if let Some(failure) = failure {
                    record(&failure, &mut probation);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    changed = changes.changed() => if changed.is_err() { return Verdict::NoProbation },
                }
            }
        }
    }
    let held = hold_verdict(&layout, ModuleStatus::Installed, None);
    match swap::commit(&layout) {
        Ok(()) => {
            let status_seq = held.then(|| release_verdict(&layout)).flatten();
            info!(
                grace_s = settings.health_grace.as_secs_f64(),
                excused = ?probation.excused,
                "new module set committed"
            );
            host.bus().publish(UpgradeCommitted { status_seq }).await;
            Verdict::Committed
        }
        Err(e) => {
            error!(error = %e, "cannot commit the new module set");
            Verdict::NoProbation
        }
    }
}

/// The file in `state/` naming the components that were failing when the
/// box stopped to apply a staged set.
pub const FAILING_BEFORE_FILE: &str = "failing-before-upgrade.json";

/// Records which components are failing now, before the host stops to
/// restart: not in RUN, or restarted within the last grace period. The
/// next start that applies a set excuses them from its probation.
pub fn record_failing(board: &StatusBoard, state_dir: &Path, grace: Duration) {
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

/// Carries out a restart after the host stopped; returns the exit status
/// when the process should exit.
pub fn restart(how: Restart, home: &std::path::Path) -> Result<u8, Error> {
    match how {
        Restart::Exit => Ok(crate::EXIT_RESTART),
        Restart::Command(cmd) => {
            info!(command = %cmd, "starting the upgrade job");
            let mut job = std::process::Command::new(&cmd);
            job.current_dir(home);
            crate::notify::forget_for_child(&mut job);
            crate::platform::detach(&mut job);
            job.spawn().map_err(|source| Error::Io {
                path: PathBuf::from(&cmd),
                source,
            })?;
            Ok(crate::EXIT_RESTART)
        }
        Restart::Exec => {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                path: PathBuf::from("/proc/self/exe"),
                source,
            })?;
            info!(exe = %exe.display(), "re-executing the host");
            let err = crate::platform::exec_self(&exe);
            Err(Error::Io {
                path: exe,
                source: err,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, state: State, restarts: u32) -> ComponentStatus {
        ComponentStatus {
            name: name.to_owned(),
            kind: "probe".to_owned(),
            origin: "built-in".to_owned(),
            id: String::new(),
            state,
            since_ms: 0,
            reason: (state == State::Error).then(|| "drill".to_owned()),
            last_error: (restarts > 0 || state == State::Error).then(|| "drill".to_owned()),
            restart_count: restarts,
            actors: BTreeMap::new(),
            details: serde_json::Value::Null,
            refused_publications: BTreeMap::new(),
        }
    }

    const GRACE: Duration = Duration::from_secs(1);

    #[test]
    fn commits_once_every_component_stayed_in_run_for_the_grace_period() {
        let t0 = Instant::now();
        let mut w = ProbationWatch::new(GRACE, vec![], t0);
        let board = [component("a", State::Run, 0), component("b", State::Run, 0)];
        assert!(
            matches!(w.observe(&board, t0), Step::Wait { until, failure: None } if until == t0 + GRACE)
        );
        assert_eq!(w.observe(&board, t0 + GRACE), Step::Commit);
    }

    #[test]
    fn a_component_that_keeps_restarting_fails_the_start_even_when_always_seen_in_run() {
        // Under `immediate` the board may never be seen out of RUN: the
        // restart count is what shows the flapping.
        let t0 = Instant::now();
        let mut w = ProbationWatch::new(GRACE, vec![], t0);
        let ms = Duration::from_millis(300);
        for n in 0..MAX_PROBATION_RESTARTS {
            let step = w.observe(&[component("a", State::Run, n)], t0 + ms * n);
            assert!(matches!(step, Step::Wait { .. }), "{step:?}");
        }
        let step = w.observe(
            &[component("a", State::Run, MAX_PROBATION_RESTARTS)],
            t0 + ms * MAX_PROBATION_RESTARTS,
        );
        assert!(
            matches!(&step, Step::Fail(r) if r.contains("component a keeps restarting")),
            "{step:?}"
        );
    }

    #[test]
    fn a_start_that_never_settles_fails_within_the_probation_limit() {
        // Out of RUN for less than a grace period at a time, restarting
        // less often than the restart limit: the deadline decides.
        let t0 = Instant::now();
        let mut w = ProbationWatch::new(GRACE, vec![], t0);
        let limit = probation_limit(GRACE);
        let mut now = t0;
        let mut verdict = None;
        let mut state = State::Run;
        while now <= t0 + limit + GRACE {
            state = if state == State::Run {
                State::Error
            } else {
                State::Run
            };
            match w.observe(&[component("a", state, 1)], now) {
                Step::Wait { until, .. } => assert!(until <= t0 + limit),
                step => {
                    verdict = Some((step, now));
                    break;
                }
            }
            now += GRACE * 9 / 10;
        }
        let (step, at) = verdict.expect("a verdict");
        assert!(
            matches!(&step, Step::Fail(r) if r.contains("no verdict within")),
            "{step:?}"
        );
        assert!(at >= t0 + limit && at < t0 + limit + GRACE, "{:?}", at - t0);
    }

    #[test]
    fn a_component_out_of_run_for_a_grace_period_fails_the_start() {
        let t0 = Instant::now();
        let mut w = ProbationWatch::new(GRACE, vec![], t0);
        let board = [
            component("a", State::Run, 0),
            component("cam", State::Error, 0),
        ];
        assert!(matches!(
            w.observe(&board, t0),
            Step::Wait {
                failure: Some(_),
                ..
            }
        ));
        let step = w.observe(&board, t0 + GRACE);
        assert!(
            matches!(&step, Step::Fail(r) if r.contains("component cam is Error: drill")),
            "{step:?}"
        );
    }

    #[test]
    fn a_component_failing_before_the_upgrade_does_not_decide_the_verdict() {
        let t0 = Instant::now();
        let mut w = ProbationWatch::new(GRACE, vec!["cam".to_owned()], t0);
        let board = [
            component("a", State::Run, 0),
            component("cam", State::Error, 5),
        ];
        assert!(matches!(
            w.observe(&board, t0),
            Step::Wait { failure: None, .. }
        ));
        assert_eq!(w.observe(&board, t0 + GRACE), Step::Commit);
    }

    #[test]
    fn the_probation_limit_is_three_graces_and_at_least_ten_seconds_more_than_one() {
        assert_eq!(
            probation_limit(Duration::from_secs(1)),
            Duration::from_secs(11)
        );
        assert_eq!(
            probation_limit(Duration::from_secs(30)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn a_restart_runs_only_the_program_box_toml_configures() {
        let mut settings = Settings {
            health_grace: GRACE,
            max_boot_attempts: 3,
            restart_mode: RestartMode::Exit,
            restart_command: None,
            max_defer: GRACE,
        };
        let asked = |mode| RestartRequested {
            mode,
            reason: "staged".into(),
        };
        // A request for a program where none is configured exits.
        assert!(matches!(
            settings.restart_for(&asked(RestartMode::Command)),
            Restart::Exit
        ));
        settings.restart_command = Some("/opt/box/upgrade-job".into());
        assert!(matches!(
            settings.restart_for(&asked(RestartMode::Command)),
            Restart::Command(c) if c == "/opt/box/upgrade-job"
        ));
        // An older request's own `command` changes nothing.
        let old: RestartRequested =
            serde_json::from_str(r#"{"mode":"command","command":"/tmp/evil","reason":"x"}"#)
                .unwrap();
        assert!(matches!(
            settings.restart_for(&old),
            Restart::Command(c) if c == "/opt/box/upgrade-job"
        ));
    }
}
