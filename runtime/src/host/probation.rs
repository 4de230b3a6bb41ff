//! The probation watch: after the components started, the verdict on a
//! set on probation, decided from snapshots of the status board
//! ([`ProbationWatch`], the rules README's "Probation" gives), then the
//! commit with its report ([`super::verdict`]). A failure meanwhile is
//! recorded as the probation's last error, the reason a later rollback
//! gives.

use std::{collections::BTreeMap, time::Duration};

use banalytics_home::{
    swap::{self, Probation},
    Layout,
};
use banalytics_messages::{
    portal::ModuleStatus,
    upgrade::{RestartRequested, UpgradeCommitted, UpgradeRolledBack},
};
use banalytics_sdk::{status::ComponentStatus, State};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{verdict, Boot, Host, Settings};

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
/// probation ([`ProbationWatch`]) and commit it. A failed start makes the
/// host restart (the next start counts again, and the one after the last
/// attempt rolls back).
pub(crate) async fn watch(host: &Host, layout: Layout, boot: Boot, settings: Settings) -> Verdict {
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
    loop {
        match watch.observe(&board.snapshot(), Instant::now()) {
            Step::Commit => break,
            Step::Fail(failure) => {
                record(&layout, &failure, &mut probation);
                let reason = format!(
                    "start {} of the new module set failed: {failure}",
                    probation.boot_attempts
                );
                error!(%reason, "restarting");
                return Verdict::Failed(settings.restart_request(reason));
            }
            Step::Wait { until, failure } => {
                if let Some(failure) = failure {
                    record(&layout, &failure, &mut probation);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    changed = changes.changed() => if changed.is_err() { return Verdict::NoProbation },
                }
            }
        }
    }
    commit(host, &layout, &settings, &probation).await
}

/// Records `failure` as the probation's last error, once per failure.
fn record(layout: &Layout, failure: &str, probation: &mut Probation) {
    if probation.last_error.as_deref() != Some(failure) {
        warn!(%failure, "failure while on probation");
        probation.last_error = Some(failure.to_owned());
        if let Err(e) = swap::set_probation(layout, probation) {
            error!(error = %e, "cannot record the probation failure");
        }
    }
}

/// Commits the set on probation, its report pending in the outbox
/// meanwhile, and announces it.
async fn commit(
    host: &Host,
    layout: &Layout,
    settings: &Settings,
    probation: &Probation,
) -> Verdict {
    let pending = verdict::write_pending(layout, ModuleStatus::Installed, None);
    match swap::commit(layout) {
        Ok(()) => {
            let status_seq = pending.then(|| verdict::release_pending(layout)).flatten();
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
}
