//! A staged rollout as a pure state machine: a target set goes to a group
//! of environments in waves (by default one box, then 10 %, then the rest).
//! A wave starts when the one before has ended: every box of it reported
//! `installed`, or failed. A box fails on `installation_cancelled`, on
//! `download_error`, or when it reports no verdict within the time limit.
//! A box already on the target set has nothing to do: after its modules'
//! `downloaded` it reports `installed` (module null, "nothing changed"),
//! which counts like any `installed`.
//! When a wave's failures pass the threshold the rollout halts by itself;
//! the operator resumes it (the failures so far are accepted, the wave goes
//! on) or cancels it (no further box is assigned; boxes already assigned
//! keep their set).
//!
//! The machine does no I/O and reads no clock: the portal feeds it events
//! with the time (milliseconds since the epoch) and carries out the
//! [`Action`]s it returns. It is serialisable, and it tells which boxes an
//! event changed ([`Rollout::take_changed`]), so the portal writes only
//! those rows after every change and a restarted portal continues where it
//! stopped (a box's report sent while the portal was down arrives after
//! the reconnection, because the box's statuses are durable). A box is
//! found by its environment in constant time (an index beside the boxes),
//! so a status costs the same in a rollout of 10 000 boxes as of 10.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// How many boxes one wave takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WaveSize {
    /// A fixed number of boxes.
    Boxes(usize),
    /// A percentage of the whole group, rounded up, at least one box.
    Percent(u8),
    /// Every box not yet in a wave.
    Rest,
}

impl WaveSize {
    /// Parses `3`, `10%` or `rest`.
    pub fn parse(s: &str) -> Option<WaveSize> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("rest") {
            return Some(WaveSize::Rest);
        }
        if let Some(p) = s.strip_suffix('%') {
            return p
                .trim()
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(WaveSize::Percent);
        }
        s.parse().ok().filter(|n| *n > 0).map(WaveSize::Boxes)
    }

    /// `3`, `10%` or `rest`.
    pub fn label(&self) -> String {
        match self {
            WaveSize::Boxes(n) => n.to_string(),
            WaveSize::Percent(p) => format!("{p}%"),
            WaveSize::Rest => "rest".to_string(),
        }
    }
}

/// The default waves: one box, then 10 %, then the rest.
pub const DEFAULT_WAVES: [WaveSize; 3] =
    [WaveSize::Boxes(1), WaveSize::Percent(10), WaveSize::Rest];

/// The default time a box has to report a verdict after it was assigned:
/// a download, a restart and the probation of a set, with room to spare.
pub const DEFAULT_REPORT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Splits `envs` (in order) into waves of `sizes`; every environment ends
/// in exactly one wave, empty waves are dropped, and environments left
/// after the last size join the last wave.
pub fn plan_waves(envs: &[String], sizes: &[WaveSize]) -> Vec<Vec<String>> {
    let total = envs.len();
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut next = 0;
    for size in sizes {
        let left = total - next;
        if left == 0 {
            break;
        }
        let n = match size {
            WaveSize::Boxes(n) => *n,
            WaveSize::Percent(p) => (total * usize::from(*p)).div_ceil(100).max(1),
            WaveSize::Rest => left,
        }
        .min(left);
        if n > 0 {
            waves.push(envs[next..next + n].to_vec());
            next += n;
        }
    }
    if next < total {
        match waves.last_mut() {
            Some(last) => last.extend_from_slice(&envs[next..]),
            None => waves.push(envs[next..].to_vec()),
        }
    }
    waves
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// A name for people.
    pub name: String,
    /// The target set, `groupId:artifactId:version` each.
    pub target: Vec<String>,
    /// The group: environment UUIDs, in the order the waves take them.
    pub environments: Vec<String>,
    /// The wave sizes.
    pub waves: Vec<WaveSize>,
    /// A wave halts the rollout when more than this percentage of its boxes
    /// failed (0: the first failure halts).
    pub failure_threshold_percent: u8,
    /// How long an assigned box may stay without a verdict, in ms.
    pub report_timeout_ms: u64,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RolloutState {
    /// Waves are being assigned and watched.
    Running,
    /// Stopped by itself: a wave's failures passed the threshold.
    Halted {
        /// Which failures, for the operator.
        reason: String,
    },
    /// Stopped by the operator; no further box is assigned.
    Cancelled,
    /// Every wave ended.
    Finished,
}

impl RolloutState {
    /// `running`, `halted`, `cancelled`, `finished`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Halted { .. } => "halted",
            RolloutState::Cancelled => "cancelled",
            RolloutState::Finished => "finished",
        }
    }
}

/// Where one box of a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum BoxState {
    /// Its wave has not started.
    Waiting,
    /// Assigned the target set at `since_ms`; no verdict yet.
    Assigned {
        /// When it was assigned.
        since_ms: u64,
        /// The last progress it reported (`downloading`, ...), if any.
        progress: Option<String>,
    },
    /// Reported `installed`.
    Installed,
    /// Failed, with the reason.
    Failed {
        /// `installation_cancelled: ...`, `download_error: ...` or the
        /// time limit.
        reason: String,
        /// Whether the operator accepted it by resuming the rollout.
        accepted: bool,
    },
}

/// Something the portal must do for the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Assign the target set to this environment and tell it to
    /// synchronise now.
    AssignTarget(String),
}

/// One rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Its number in this portal.
    pub id: u64,
    /// What was asked.
    pub spec: RolloutSpec,
    /// The environments of each wave.
    pub waves: Vec<Vec<String>>,
    /// The wave being watched (== `waves.len()` when finished).
    pub current_wave: usize,
    /// Each environment's state, in group order.
    pub boxes: Vec<(String, BoxState)>,
    /// Where it is.
    pub state: RolloutState,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
    /// Each environment's place in `boxes`; rebuilt when it does not
    /// match them (after deserialisation).
    #[serde(skip)]
    index: Scratch<HashMap<String, usize>>,
    /// Each wave's places in `boxes`, built with `index`.
    #[serde(skip)]
    wave_places: Scratch<Vec<Vec<usize>>>,
    /// Places in `boxes` changed since [`Rollout::take_changed`].
    #[serde(skip)]
    changed: Scratch<BTreeSet<usize>>,
}

/// Bookkeeping beside the rollout that is no part of its value: equal to
/// any other.
#[derive(Debug, Clone, Default)]
struct Scratch<T>(T);

impl<T> PartialEq for Scratch<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Scratch<T> {}

/// The name of a set of modules by their `groupId:artifactId:version`
/// (in any order): a digest that a status carries of the set its box was
/// answered ([`Rollout::status_of_set`]).
pub fn set_name<S: AsRef<str>>(coordinates: &[S]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&str> = coordinates.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for c in sorted {
        h.update(c.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}

impl Rollout {
    /// A rollout of `spec`, created at `now_ms`; nothing assigned until
    /// [`Rollout::start`].
    pub fn new(id: u64, spec: RolloutSpec, now_ms: u64) -> Rollout {
        let mut envs: Vec<String> = Vec::new();
        for e in &spec.environments {
            if !envs.contains(e) {
                envs.push(e.clone());
            }
        }
        let waves = plan_waves(&envs, &spec.waves);
        let mut r = Rollout {
            id,
            boxes: envs.into_iter().map(|e| (e, BoxState::Waiting)).collect(),
            waves,
            current_wave: 0,
            spec,
            state: RolloutState::Running,
            created_ms: now_ms,
            index: Scratch::default(),
            wave_places: Scratch::default(),
            changed: Scratch::default(),
        };
        r.mark_all_changed();
        r
    }

    /// The places in `boxes` changed since the last call (all of them the
    /// first time after [`Rollout::new`]), and forgets them.
    pub fn take_changed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.changed.0).into_iter().collect()
    }

    /// Whether a box changed since [`Rollout::take_changed`].
    pub fn has_changed_boxes(&self) -> bool {
        !self.changed.0.is_empty()
    }

    /// Marks every box changed (a rollout written whole).
    pub fn mark_all_changed(&mut self) {
        self.changed.0 = (0..self.boxes.len()).collect();
    }

    /// The wave of the box at `place` in `boxes`.
    pub fn wave_of_place(&mut self, place: usize) -> Option<usize> {
        self.reindex();
        self.wave_places
            .0
            .iter()
            .position(|places| places.binary_search(&place).is_ok())
    }

    /// `env`'s place in `boxes`.
    fn place(&self, env: &str) -> Option<usize> {
        if self.index.0.len() == self.boxes.len() {
            return self.index.0.get(env).copied();
        }
        self.boxes.iter().position(|(e, _)| e == env)
    }

    /// Builds the index when it does not match the boxes and the waves.
    fn reindex(&mut self) {
        if self.index.0.len() != self.boxes.len() || self.wave_places.0.len() != self.waves.len() {
            self.index.0 = self
                .boxes
                .iter()
                .enumerate()
                .map(|(i, (e, _))| (e.clone(), i))
                .collect();
            self.wave_places.0 = self
                .waves
                .iter()
                .map(|w| {
                    let mut places: Vec<usize> = w
                        .iter()
                        .filter_map(|e| self.index.0.get(e).copied())
                        .collect();
                    places.sort_unstable();
                    places
                })
                .collect();
        }
    }

    /// Assigns the first wave.
    pub fn start(&mut self, now_ms: u64) -> Vec<Action> {
        self.begin_wave(now_ms)
    }

    /// The state of `env` in this rollout.
    pub fn box_state(&self, env: &str) -> Option<&BoxState> {
        self.place(env).map(|i| &self.boxes[i].1)
    }

    /// `env`'s state, marked changed.
    fn box_mut(&mut self, env: &str) -> Option<&mut BoxState> {
        self.reindex();
        let i = self.place(env)?;
        self.changed.0.insert(i);
        Some(&mut self.boxes[i].1)
    }

    /// Boxes that reported `installed`.
    pub fn installed(&self) -> usize {
        self.boxes
            .iter()
            .filter(|(_, s)| *s == BoxState::Installed)
            .count()
    }

    /// Boxes that failed.
    pub fn failed(&self) -> usize {
        self.boxes
            .iter()
            .filter(|(_, s)| matches!(s, BoxState::Failed { .. }))
            .count()
    }

    /// Whether it will do nothing more.
    pub fn is_over(&self) -> bool {
        matches!(self.state, RolloutState::Cancelled | RolloutState::Finished)
    }

    fn begin_wave(&mut self, now_ms: u64) -> Vec<Action> {
        let Some(wave) = self.waves.get(self.current_wave).cloned() else {
            self.state = RolloutState::Finished;
            return Vec::new();
        };
        for env in &wave {
            if let Some(s) = self.box_mut(env) {
                *s = BoxState::Assigned {
                    since_ms: now_ms,
                    progress: None,
                };
            }
        }
        wave.into_iter().map(Action::AssignTarget).collect()
    }

    /// `env` reported `status` (with `message`) at `now_ms`, from a
    /// synchronisation whose set is not known (see
    /// [`Rollout::status_of_set`]).
    pub fn status_reported(
        &mut self,
        env: &str,
        status: &str,
        message: Option<&str>,
        now_ms: u64,
    ) -> Vec<Action> {
        self.status_of_set(env, status, message, None, now_ms)
    }

    /// `env` reported `status` (with `message`) at `now_ms`, after the
    /// portal answered its request for its set with the set named
    /// `served` ([`set_name`]; `None`: not known). A status of a
    /// synchronisation served another set than the rollout's target is
    /// not about the rollout: it is left out. So a box that was answered
    /// its old set just before its wave assigned it the new one, and then
    /// reports on the old set (`installed`, nothing changed, or a refusal),
    /// is neither counted installed nor failed by it; the portal's
    /// `EVT_SYNC_SOFT` makes it ask again.
    pub fn status_of_set(
        &mut self,
        env: &str,
        status: &str,
        message: Option<&str>,
        served: Option<&str>,
        now_ms: u64,
    ) -> Vec<Action> {
        // Every status of the fleet comes to every live rollout: one of a
        // box outside it costs a lookup, not the target's name.
        if self.is_over() || self.box_state(env).is_none() {
            return Vec::new();
        }
        if served.is_some_and(|served| served != set_name(&self.spec.target)) {
            return Vec::new();
        }
        let Some(s) = self.box_mut(env) else {
            return Vec::new();
        };
        match (status, &*s) {
            // A late verdict still counts: a box that timed out and then
            // installed is installed.
            ("installed", BoxState::Assigned { .. } | BoxState::Failed { .. }) => {
                *s = BoxState::Installed;
            }
            ("installation_cancelled" | "download_error", BoxState::Assigned { .. }) => {
                let reason = match message {
                    Some(m) if !m.is_empty() => format!("{status}: {m}"),
                    _ => status.to_string(),
                };
                *s = BoxState::Failed {
                    reason,
                    accepted: false,
                };
            }
            (progress, BoxState::Assigned { since_ms, .. }) => {
                let since_ms = *since_ms;
                *s = BoxState::Assigned {
                    since_ms,
                    progress: Some(match message {
                        Some(m) if !m.is_empty() => format!("{progress}: {m}"),
                        _ => progress.to_string(),
                    }),
                };
                // Progress ends no wave and fails no box.
                return Vec::new();
            }
            _ => {}
        }
        self.advance(now_ms)
    }

    /// The clock moved to `now_ms`: boxes past the time limit fail.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        if self.is_over() {
            return Vec::new();
        }
        let limit = self.spec.report_timeout_ms;
        for (i, (_, s)) in self.boxes.iter_mut().enumerate() {
            if let BoxState::Assigned { since_ms, .. } = s {
                if now_ms.saturating_sub(*since_ms) > limit {
                    self.changed.0.insert(i);
                    *s = BoxState::Failed {
                        reason: format!("no report within {} s", limit / 1000),
                        accepted: false,
                    };
                }
            }
        }
        self.advance(now_ms)
    }

    /// The operator resumes a halted rollout: the failures so far are
    /// accepted and the wave goes on.
    pub fn resume(&mut self, now_ms: u64) -> Vec<Action> {
        if !matches!(self.state, RolloutState::Halted { .. }) {
            return Vec::new();
        }
        for (i, (_, s)) in self.boxes.iter_mut().enumerate() {
            if let BoxState::Failed { accepted, .. } = s {
                self.changed.0.insert(i);
                *accepted = true;
            }
        }
        self.state = RolloutState::Running;
        self.advance(now_ms)
    }

    /// The operator cancels: no further box is assigned.
    pub fn cancel(&mut self) {
        if !self.is_over() {
            self.state = RolloutState::Cancelled;
        }
    }

    /// Halts when the current wave's new failures pass the threshold;
    /// starts the next wave when the current one has ended.
    fn advance(&mut self, now_ms: u64) -> Vec<Action> {
        self.reindex();
        let mut actions = Vec::new();
        while self.state == RolloutState::Running {
            let (Some(wave), Some(places)) = (
                self.waves.get(self.current_wave),
                self.wave_places.0.get(self.current_wave),
            ) else {
                self.state = RolloutState::Finished;
                break;
            };
            // One pass over the wave's places: a status costs the size of
            // its wave, never a search of the rollout.
            let (mut failures, mut ended) = (0, true);
            for &i in places {
                match &self.boxes[i].1 {
                    BoxState::Failed {
                        accepted: false, ..
                    } => failures += 1,
                    BoxState::Installed | BoxState::Failed { .. } => {}
                    BoxState::Waiting | BoxState::Assigned { .. } => ended = false,
                }
            }
            let threshold = usize::from(self.spec.failure_threshold_percent);
            if failures * 100 > threshold * wave.len() {
                let new_failures: Vec<String> = places
                    .iter()
                    .filter_map(|&i| match &self.boxes[i] {
                        (
                            e,
                            BoxState::Failed {
                                reason,
                                accepted: false,
                            },
                        ) => Some(format!("{e}: {reason}")),
                        _ => None,
                    })
                    .collect();
                self.state = RolloutState::Halted {
                    reason: format!(
                        "wave {} of {}: {} of {} box(es) failed (threshold {}%): {}",
                        self.current_wave + 1,
                        self.waves.len(),
                        new_failures.len(),
                        wave.len(),
                        threshold,
                        new_failures.join("; ")
                    ),
                };
                break;
            }
            if !ended {
                break;
            }
            self.current_wave += 1;
            actions.extend(self.begin_wave(now_ms));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("env-{i:03}")).collect()
    }

    fn spec(n: usize, threshold: u8) -> RolloutSpec {
        RolloutSpec {
            name: "v2".into(),
            target: vec!["com.example:a:2".into()],
            environments: envs(n),
            waves: DEFAULT_WAVES.to_vec(),
            failure_threshold_percent: threshold,
            report_timeout_ms: 60_000,
        }
    }

    fn assigned(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|Action::AssignTarget(e)| e.clone())
            .collect()
    }

    #[test]
    fn plans_one_box_then_ten_percent_then_the_rest() {
        let sizes: Vec<usize> = plan_waves(&envs(200), &DEFAULT_WAVES)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1, 20, 179]);
        let sizes: Vec<usize> = plan_waves(&envs(3), &DEFAULT_WAVES)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1, 1, 1]);
        let sizes: Vec<usize> = plan_waves(&envs(1), &DEFAULT_WAVES)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1]);
        // Without a `rest` wave the leftovers join the last wave.
        let sizes: Vec<usize> = plan_waves(&envs(10), &[WaveSize::Boxes(2), WaveSize::Percent(30)])
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [2, 8]);
        assert!(plan_waves(&[], &DEFAULT_WAVES).is_empty());
    }

    #[test]
    fn parses_wave_sizes() {
        assert_eq!(WaveSize::parse("1"), Some(WaveSize::Boxes(1)));
        assert_eq!(WaveSize::parse("10%"), Some(WaveSize::Percent(10)));
        assert_eq!(WaveSize::parse("rest"), Some(WaveSize::Rest));
        assert_eq!(WaveSize::parse("0"), None);
        assert_eq!(WaveSize::parse("101%"), None);
    }

    #[test]
    fn each_wave_waits_until_its_boxes_report_installed() {
        let mut r = Rollout::new(1, spec(12, 0), 0);
        assert_eq!(assigned(&r.start(0)), ["env-000"]);
        assert!(r
            .status_reported("env-000", "downloading", None, 1)
            .is_empty());
        assert_eq!(
            r.box_state("env-000"),
            Some(&BoxState::Assigned {
                since_ms: 0,
                progress: Some("downloading".into())
            })
        );
        // A box of a later wave reporting does not move anything.
        assert!(r
            .status_reported("env-005", "installed", None, 2)
            .is_empty());
        assert_eq!(r.box_state("env-005"), Some(&BoxState::Waiting));
        // 10 % of 12 rounds up to 2.
        assert_eq!(
            assigned(&r.status_reported("env-000", "installed", None, 3)),
            ["env-001", "env-002"]
        );
        assert!(r
            .status_reported("env-001", "installed", None, 4)
            .is_empty());
        let rest = assigned(&r.status_reported("env-002", "installed", None, 5));
        assert_eq!(rest.len(), 9);
        for e in &rest {
            r.status_reported(e, "installed", None, 6);
        }
        assert_eq!(r.state, RolloutState::Finished);
        assert_eq!(r.installed(), 12);
    }

    #[test]
    fn a_box_already_on_the_set_counts_as_installed_and_its_wave_ends() {
        // Waves of one, one box already on the set first: it reports each
        // module `downloaded`, then `installed` (module null, nothing
        // changed); before that it is assigned, with progress.
        let mut r = Rollout::new(1, spec(3, 0), 0);
        assert_eq!(assigned(&r.start(0)), ["env-000"]);
        assert!(r
            .status_reported("env-000", "downloaded", None, 1)
            .is_empty());
        assert!(matches!(
            r.box_state("env-000"),
            Some(BoxState::Assigned { .. })
        ));
        let next = r.status_reported(
            "env-000",
            "installed",
            Some("nothing changed: the installed set is the target set"),
            2,
        );
        assert_eq!(assigned(&next), ["env-001"]);
        assert_eq!(r.box_state("env-000"), Some(&BoxState::Installed));
        r.status_reported("env-001", "installed", None, 3);
        r.status_reported("env-002", "installed", None, 4);
        assert_eq!(r.state, RolloutState::Finished);
        assert_eq!((r.installed(), r.failed()), (3, 0));
    }

    #[test]
    fn halts_when_failures_pass_the_threshold_and_names_the_reason() {
        // 20 boxes: waves 1, 2, 17; 10 % of the last wave (1.7 boxes) may fail.
        let mut r = Rollout::new(1, spec(20, 10), 0);
        r.start(0);
        r.status_reported("env-000", "installed", None, 1);
        r.status_reported("env-001", "installed", None, 2);
        let rest = assigned(&r.status_reported("env-002", "installed", None, 3));
        assert_eq!(rest.len(), 17);
        r.status_reported(&rest[0], "download_error", Some("hash mismatch"), 4);
        assert_eq!(r.state, RolloutState::Running, "1 of 17 is under 10 %");
        r.status_reported(
            &rest[1],
            "installation_cancelled",
            Some("rolled back: component drill failed"),
            5,
        );
        let RolloutState::Halted { reason } = &r.state else {
            panic!("not halted: {:?}", r.state)
        };
        assert!(reason.contains("2 of 17"), "{reason}");
        assert!(
            reason.contains("rolled back: component drill failed"),
            "{reason}"
        );
        // A halted rollout assigns nothing, even when the wave ends.
        for e in &rest[2..] {
            assert!(r.status_reported(e, "installed", None, 6).is_empty());
        }
        assert!(matches!(r.state, RolloutState::Halted { .. }));
    }

    /// A box answered its old set just before its wave assigned it the
    /// new one reports on the old set: neither its refusal nor its
    /// `installed` counts; what it reports after it was answered the
    /// target does.
    #[test]
    fn a_status_about_another_set_than_the_target_is_left_out() {
        let mut r = Rollout::new(1, spec(3, 0), 0);
        r.start(0);
        let old = set_name(&["com.example:a:1"]);
        let target = set_name(&["com.example:a:2"]);
        for (status, message) in [
            ("installation_cancelled", Some("the target set is empty")),
            ("installed", None),
            ("downloading", None),
        ] {
            assert!(r
                .status_of_set("env-000", status, message, Some(&old), 1)
                .is_empty());
            assert_eq!(
                r.box_state("env-000"),
                Some(&BoxState::Assigned {
                    since_ms: 0,
                    progress: None
                }),
                "{status} of the old set"
            );
        }
        assert_eq!(r.state, RolloutState::Running);
        assert_eq!(
            assigned(&r.status_of_set("env-000", "installed", None, Some(&target), 2)),
            ["env-001"]
        );
        // The name does not depend on the order.
        assert_eq!(
            set_name(&["g:b:1", "g:a:1"]),
            set_name(&["g:a:1".to_owned(), "g:b:1".to_owned()])
        );
        assert_ne!(set_name(&["g:a:1"]), set_name(&["g:a:1", "g:b:1"]));
    }

    #[test]
    fn a_box_without_a_report_in_time_fails() {
        let mut r = Rollout::new(1, spec(3, 0), 0);
        r.start(1_000);
        assert!(r.tick(61_000).is_empty());
        assert_eq!(r.state, RolloutState::Running, "60 s is within the limit");
        r.tick(61_001);
        assert!(matches!(
            r.box_state("env-000"),
            Some(BoxState::Failed { reason, .. }) if reason == "no report within 60 s"
        ));
        assert!(matches!(r.state, RolloutState::Halted { .. }));
    }

    #[test]
    fn resume_accepts_the_failures_and_goes_on() {
        let mut r = Rollout::new(1, spec(3, 0), 0);
        r.start(0);
        assert!(r
            .status_reported("env-000", "installation_cancelled", Some("rolled back"), 1)
            .is_empty());
        assert!(matches!(r.state, RolloutState::Halted { .. }));
        assert_eq!(assigned(&r.resume(2)), ["env-001"]);
        assert_eq!(r.state, RolloutState::Running);
        // A new failure in the next wave halts again.
        r.status_reported("env-001", "download_error", None, 3);
        assert!(matches!(r.state, RolloutState::Halted { .. }));
        assert_eq!(assigned(&r.resume(4)), ["env-002"]);
        r.status_reported("env-002", "installed", None, 5);
        assert_eq!(r.state, RolloutState::Finished);
        assert_eq!((r.installed(), r.failed()), (1, 2));
        // Resume does nothing unless halted.
        assert!(r.resume(6).is_empty());
    }

    #[test]
    fn cancel_assigns_nothing_more() {
        let mut r = Rollout::new(1, spec(12, 0), 0);
        r.start(0);
        r.cancel();
        assert!(r
            .status_reported("env-000", "installed", None, 1)
            .is_empty());
        assert!(r.tick(1_000_000).is_empty());
        assert!(r.resume(2).is_empty());
        assert_eq!(r.state, RolloutState::Cancelled);
        assert!(matches!(
            r.box_state("env-000"),
            Some(BoxState::Assigned { .. })
        ));
        assert_eq!(r.box_state("env-001"), Some(&BoxState::Waiting));
    }

    #[test]
    fn continues_after_a_portal_restart_from_its_saved_form() {
        let mut r = Rollout::new(7, spec(12, 0), 0);
        r.start(0);
        r.status_reported("env-000", "installed", None, 1);
        let saved = serde_json::to_string(&r).unwrap();
        drop(r);
        // The portal was down; the boxes' durable statuses arrive after.
        let mut r: Rollout = serde_json::from_str(&saved).unwrap();
        assert_eq!(r.current_wave, 1);
        r.status_reported("env-001", "installed", None, 50_000);
        let rest = assigned(&r.status_reported("env-002", "installed", None, 50_001));
        assert_eq!(rest.len(), 9);
        // The time limit counts from the assignment before the restart.
        let mut r2: Rollout = serde_json::from_str(&saved).unwrap();
        r2.tick(60_002);
        assert!(matches!(r2.state, RolloutState::Halted { .. }));
    }
}
