//! When the upgrade center may act: maintenance and download windows on a
//! cron schedule in a time zone, and the clock they are read against.
//!
//! A window opens at each start the cron schedule names, read as wall-clock
//! time in the window's time zone (`croner` finds the civil times, `jiff`
//! turns them into instants), and stays open for its duration of elapsed
//! time. A start that a DST jump skips (02:30 on the spring day in
//! `Europe/Berlin`) opens at the instant the skipped wall-clock time stands
//! for, one hour later on the wall clock (jiff's `compatible`, as RFC 5545
//! does); a start that a DST fold repeats opens once, at its first
//! occurrence. So a daily window opens exactly once every day.
//!
//! The clock is a trait object ([`Clock`]): the box reads the system clock,
//! tests a [`ManualClock`] they set by hand or a [`TokioClock`] that follows
//! tokio's (pausable) time.

use std::{fmt, future::Future, pin::Pin, str::FromStr, sync::Arc, time::Duration};

use croner::Cron;
use jiff::{civil::DateTime, tz::TimeZone, SignedDuration, Timestamp, Zoned};
use serde::Deserialize;
use tokio::sync::watch;

/// The longest single sleep of the [`SystemClock`]: the wall clock can be
/// set (NTP at boot, an operator), so a long wait looks at it again at
/// least this often.
pub(crate) const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(60);

/// How many cron occurrences one window computation looks at, at most: a
/// minute-level schedule with a day of duration needs about 3000; more
/// means a schedule that barely ever matches, which is refused.
pub(crate) const MAX_OCCURRENCES: usize = 10_000;

/// A future a clock sleeps in.
pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The time the windows are read against.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// Returns at `at` or earlier (callers look at [`Clock::now`] again).
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// A clock shared by every part that waits.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The system's wall clock, with tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = until(Timestamp::now(), at).min(MAX_SYSTEM_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A wall clock that starts at `origin` and moves with tokio's clock, so
/// that `tokio::time::pause` and `advance` move it too.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Now is `origin`.
    pub fn starting_at(origin: Timestamp) -> Self {
        TokioClock {
            origin,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.origin
            .saturating_add(elapsed)
            .expect("a duration, not a span")
    }
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        Box::pin(tokio::time::sleep(until(self.now(), at)))
    }
}

/// A clock that moves only when told ([`ManualClock::set`]).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// Now is `at`, until set.
    pub fn new(at: Timestamp) -> Self {
        ManualClock {
            now: Arc::new(watch::channel(at).0),
        }
    }
    /// Sets the time; sleepers whose instant came wake up.
    pub fn set(&self, at: Timestamp) {
        self.now.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

/// The time from `now` to `at`, zero when `at` passed.
pub(crate) fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// A window as written in `box.toml`:
/// `{ schedule = "0 2 * * *", duration = "2h", timezone = "Europe/Berlin" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// When it opens: a cron schedule (5 fields, or 6 with seconds).
    pub schedule: String,
    /// How long it stays open: `2h`, `90m`, `1h 30m` or ISO 8601 `PT2H`.
    pub duration: String,
    /// An IANA time zone (`Europe/Berlin`), or `UTC` (the default).
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A parsed window.
#[derive(Clone)]
pub struct Window {
    schedule: Cron,
    pattern: String,
    duration: SignedDuration,
    tz: TimeZone,
    tz_name: String,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Window({self})")
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\" for {:#} in {}",
            self.pattern, self.duration, self.tz_name
        )
    }
}

/// Where `now` is relative to a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// A window is open; it closes at `closes`.
    Open {
        /// When the open window closes.
        closes: Zoned,
    },
    /// No window is open; the next one opens at `opens`.
    Closed {
        /// When the next window opens.
        opens: Zoned,
        /// When that window closes.
        closes: Zoned,
    },
}

impl Window {
    /// Parses and checks a window from its configuration; the error names
    /// the key and the value.
    pub fn parse(cfg: &WindowConfig) -> Result<Window, WindowError> {
        let schedule = Cron::from_str(&cfg.schedule).map_err(|e| WindowError::Schedule {
            value: cfg.schedule.clone(),
            reason: e.to_string(),
        })?;
        let duration =
            SignedDuration::from_str(&cfg.duration).map_err(|e| WindowError::Duration {
                value: cfg.duration.clone(),
                reason: e.to_string(),
            })?;
        if duration <= SignedDuration::ZERO {
            return Err(WindowError::NotPositive {
                value: cfg.duration.clone(),
            });
        }
        let tz = TimeZone::get(&cfg.timezone).map_err(|e| WindowError::TimeZone {
            value: cfg.timezone.clone(),
            reason: e.to_string(),
        })?;
        let window = Window {
            schedule,
            pattern: cfg.schedule.clone(),
            duration,
            tz,
            tz_name: cfg.timezone.clone(),
        };
        window.state_at(Timestamp::now()).map(|_| window)
    }

    /// How long it stays open.
    pub fn duration(&self) -> SignedDuration {
        self.duration
    }

    /// Whether a window is open at `now`, and until when; or when the next
    /// one opens. An error when the schedule matches no time soon enough
    /// ([`MAX_OCCURRENCES`]).
    pub fn state_at(&self, now: Timestamp) -> Result<WindowState, WindowError> {
        // Every start whose window could still be open: from one duration
        // and a day (more than any UTC offset change) before now.
        let back = self.duration + SignedDuration::from_hours(26);
        let from = now
            .checked_sub(back)
            .map_err(|e| WindowError::Time(e.to_string()))?
            .to_zoned(self.tz.clone())
            .datetime();
        let civil_now = now.to_zoned(self.tz.clone()).datetime();
        let mut open: Option<Timestamp> = None;
        let mut next: Option<Timestamp> = None;
        for civil in self
            .schedule
            .iter_from(from, croner::Direction::Forward)
            .take(MAX_OCCURRENCES)
        {
            let start = self.resolve(civil)?;
            let end = start + self.duration;
            if start <= now && end > now {
                open = Some(open.map_or(end, |e| e.max(end)));
            } else if start > now {
                next = Some(next.map_or(start, |n| n.min(start)));
            }
            // Past now by more than any DST shift: later civil times
            // resolve later than what was found.
            if next.is_some() && civil > civil_now + SignedDuration::from_hours(3) {
                break;
            }
        }
        let zoned = |t: Timestamp| t.to_zoned(self.tz.clone());
        match (open, next) {
            (Some(closes), _) => Ok(WindowState::Open {
                closes: zoned(closes),
            }),
            (None, Some(opens)) => Ok(WindowState::Closed {
                opens: zoned(opens),
                closes: zoned(opens + self.duration),
            }),
            (None, None) => Err(WindowError::NeverOpens {
                pattern: self.pattern.clone(),
            }),
        }
    }

    /// The instant a civil start stands for in the window's zone: a time
    /// in a gap is moved forward by the gap, a time in a fold is its first
    /// occurrence.
    fn resolve(&self, civil: DateTime) -> Result<Timestamp, WindowError> {
        self.tz
            .to_ambiguous_timestamp(civil)
            .compatible()
            .map_err(|e| WindowError::Civil {
                civil,
                zone: self.tz_name.clone(),
                reason: e.to_string(),
            })
    }

    /// Returns once a window is open at `clock`'s now, with when it closes.
    pub async fn wait_open(&self, clock: &dyn Clock) -> Result<Zoned, WindowError> {
        loop {
            match self.state_at(clock.now())? {
                WindowState::Open { closes } => return Ok(closes),
                WindowState::Closed { opens, .. } => clock.sleep_until(opens.timestamp()).await,
            }
        }
    }
}

/// A window that is refused, or that cannot say when it opens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `schedule` is not a cron schedule.
    #[error("schedule = {value:?} is not a cron schedule: {reason}")]
    Schedule {
        /// The value as written.
        value: String,
        /// The cron parser's reason.
        reason: String,
    },
    /// `duration` is not a duration.
    #[error("duration = {value:?} is not a duration (e.g. \"2h\", \"90m\"): {reason}")]
    Duration {
        /// The value as written.
        value: String,
        /// The duration parser's reason.
        reason: String,
    },
    /// `duration` is zero or negative.
    #[error("duration = {value:?} is not accepted; accepted: more than zero")]
    NotPositive {
        /// The value as written.
        value: String,
    },
    /// `timezone` names no time zone the box knows.
    #[error(
        "timezone = {value:?} is not a known time zone (e.g. \"Europe/Berlin\", \"UTC\"): {reason}"
    )]
    TimeZone {
        /// The value as written.
        value: String,
        /// The time zone database's reason.
        reason: String,
    },
    /// The schedule matches no time soon enough ([`MAX_OCCURRENCES`]).
    #[error("schedule {pattern:?} opens no window within {MAX_OCCURRENCES} occurrences")]
    NeverOpens {
        /// The schedule.
        pattern: String,
    },
    /// A time the window's arithmetic cannot represent.
    #[error("time out of range: {0}")]
    Time(String),
    /// A civil time of the schedule that is no instant in the zone.
    #[error("{civil} in {zone}: {reason}")]
    Civil {
        /// The civil time.
        civil: DateTime,
        /// The zone's name.
        zone: String,
        /// Why.
        reason: String,
    },
}

/// When a staged set is applied: the upgrade center's `apply` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyMode {
    /// Restart as soon as the set is staged (the default).
    #[default]
    Immediately,
    /// Restart in the next maintenance window (`maintenance_window`).
    Window,
    /// Restart once approved (`banalytics-box approve`, or the portal when
    /// `approval_from_portal = true`).
    Approval,
}

/// What a staged set waits for before the restart that applies it.
#[derive(Clone)]
pub struct ApplyPolicy {
    /// The mode.
    pub mode: ApplyMode,
    /// The maintenance window, with [`ApplyMode::Window`].
    pub window: Option<Window>,
    /// Whether a portal `EVT_SYNC_SOFT` for the staged set approves it.
    pub approval_from_portal: bool,
    /// The clock the window is read against.
    pub clock: SharedClock,
}

impl fmt::Debug for ApplyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplyPolicy")
            .field("mode", &self.mode)
            .field("window", &self.window)
            .field("approval_from_portal", &self.approval_from_portal)
            .finish()
    }
}

impl Default for ApplyPolicy {
    fn default() -> Self {
        ApplyPolicy {
            mode: ApplyMode::Immediately,
            window: None,
            approval_from_portal: false,
            clock: Arc::new(SystemClock),
        }
    }
}

impl ApplyPolicy {
    /// Whether a set staged under this policy is held back from being
    /// applied by a restart for another reason (`banalytics_home::hold`),
    /// and what for, in words; `None` when it is applied at the next start
    /// whatever caused it. A window that is open now holds too: the set
    /// waits for its restart, and a start after the window closed must not
    /// apply it.
    pub fn holds(&self) -> Option<String> {
        match (self.mode, &self.window) {
            (ApplyMode::Immediately, _) | (ApplyMode::Window, None) => None,
            // Without the next opening: the hold's words may be read days
            // later (`status` of a box that restarted meanwhile).
            (ApplyMode::Window, Some(w)) => {
                Some(format!("the restart waits for the maintenance window {w}"))
            }
            (ApplyMode::Approval, _) => self.waits_for(),
        }
    }

    /// What the restart waits for now, in words; `None` when nothing
    /// (immediately, or in an open window).
    pub fn waits_for(&self) -> Option<String> {
        match (self.mode, &self.window) {
            (ApplyMode::Immediately, _) => None,
            (ApplyMode::Window, Some(w)) => match w.state_at(self.clock.now()) {
                Ok(WindowState::Open { .. }) => None,
                Ok(WindowState::Closed { opens, closes }) => Some(format!(
                    "the restart waits for the maintenance window {w}: from {opens} until {closes}"
                )),
                Err(e) => Some(format!(
                    "the restart waits for the maintenance window {w}, which {e}"
                )),
            },
            (ApplyMode::Window, None) => None,
            (ApplyMode::Approval, _) => Some(if self.approval_from_portal {
                "the restart waits for approval: `banalytics-box approve` on the box, or a synchronisation from the portal".to_owned()
            } else {
                "the restart waits for approval: `banalytics-box approve` on the box".to_owned()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(schedule: &str, duration: &str, tz: &str) -> Window {
        Window::parse(&WindowConfig {
            schedule: schedule.into(),
            duration: duration.into(),
            timezone: tz.into(),
        })
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn opens(w: &Window, now: &str) -> Timestamp {
        match w.state_at(at(now)).unwrap() {
            WindowState::Closed { opens, .. } => opens.timestamp(),
            open => panic!("window open at {now}: {open:?}"),
        }
    }

    fn closes(w: &Window, now: &str) -> Option<Timestamp> {
        match w.state_at(at(now)).unwrap() {
            WindowState::Open { closes } => Some(closes.timestamp()),
            WindowState::Closed { .. } => None,
        }
    }

    #[test]
    fn a_daily_window_is_open_from_its_start_for_its_duration() {
        let w = window("0 2 * * *", "2h", "UTC");
        assert_eq!(
            opens(&w, "2026-06-10T14:00:00Z"),
            at("2026-06-11T02:00:00Z")
        );
        assert_eq!(
            opens(&w, "2026-06-11T01:59:59Z"),
            at("2026-06-11T02:00:00Z")
        );
        assert_eq!(
            closes(&w, "2026-06-11T02:00:00Z"),
            Some(at("2026-06-11T04:00:00Z"))
        );
        assert_eq!(
            closes(&w, "2026-06-11T03:59:59.9Z"),
            Some(at("2026-06-11T04:00:00Z"))
        );
        assert_eq!(closes(&w, "2026-06-11T04:00:00Z"), None);
        assert_eq!(
            opens(&w, "2026-06-11T04:00:00Z"),
            at("2026-06-12T02:00:00Z")
        );
    }

    #[test]
    fn a_window_over_midnight_is_open_on_both_days() {
        let w = window("0 23 * * *", "3h", "UTC");
        assert_eq!(
            closes(&w, "2026-06-11T01:00:00Z"),
            Some(at("2026-06-11T02:00:00Z"))
        );
        assert_eq!(
            closes(&w, "2026-06-10T23:30:00Z"),
            Some(at("2026-06-11T02:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_day_a_skipped_start_opens_at_the_instant_it_stands_for() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let w = window("0 2 * * *", "2h", "Europe/Berlin");
        assert_eq!(
            opens(&w, "2026-03-28T12:00:00Z"),
            at("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            closes(&w, "2026-03-29T01:00:00Z"),
            Some(at("2026-03-29T03:00:00Z"))
        );
        assert_eq!(closes(&w, "2026-03-29T00:59:59Z"), None);
        // The day before (CET, +01:00) and the day after (CEST, +02:00).
        assert_eq!(
            opens(&w, "2026-03-27T12:00:00Z"),
            at("2026-03-28T01:00:00Z")
        );
        assert_eq!(
            opens(&w, "2026-03-29T12:00:00Z"),
            at("2026-03-30T00:00:00Z")
        );
        // A start after the jump is unaffected: 04:00 CEST is 02:00 UTC.
        let later = window("0 4 * * *", "1h", "Europe/Berlin");
        assert_eq!(
            opens(&later, "2026-03-28T12:00:00Z"),
            at("2026-03-29T02:00:00Z")
        );
        // A start inside the skipped hour moves forward by the gap.
        let inside = window("30 2 * * *", "1h", "Europe/Berlin");
        assert_eq!(
            opens(&inside, "2026-03-28T12:00:00Z"),
            at("2026-03-29T01:30:00Z")
        );
    }

    #[test]
    fn berlin_autumn_day_a_repeated_start_opens_once_at_its_first_occurrence() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00-03:00 twice.
        let w = window("30 2 * * *", "1h", "Europe/Berlin");
        assert_eq!(
            opens(&w, "2026-10-24T12:00:00Z"),
            at("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            closes(&w, "2026-10-25T00:30:00Z"),
            Some(at("2026-10-25T01:30:00Z"))
        );
        // Once the first 02:30 window closed, the repeated 02:30 (01:30
        // UTC) opens none: the next is tomorrow's 02:30 CET.
        assert_eq!(
            opens(&w, "2026-10-25T01:30:00Z"),
            at("2026-10-26T01:30:00Z")
        );
        // A 2 h window from 02:00 is 2 h of elapsed time, so it closes at
        // 03:00 CET on the wall clock, the second 02:00 passed.
        let two = window("0 2 * * *", "2h", "Europe/Berlin");
        assert_eq!(
            opens(&two, "2026-10-24T12:00:00Z"),
            at("2026-10-25T00:00:00Z")
        );
        assert_eq!(
            closes(&two, "2026-10-25T01:59:00Z"),
            Some(at("2026-10-25T02:00:00Z"))
        );
    }

    #[test]
    fn a_weekly_window_finds_its_next_day() {
        let w = window("0 1 * * SUN", "4h", "UTC");
        // 2026-06-10 is a Wednesday; the next Sunday is the 14th.
        assert_eq!(
            opens(&w, "2026-06-10T12:00:00Z"),
            at("2026-06-14T01:00:00Z")
        );
    }

    #[test]
    fn bad_windows_are_refused_naming_the_key_and_value() {
        let bad = |s: &str, d: &str, tz: &str| {
            Window::parse(&WindowConfig {
                schedule: s.into(),
                duration: d.into(),
                timezone: tz.into(),
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad("0 2 * *", "2h", "UTC").contains("schedule = \"0 2 * *\""));
        assert!(bad("0 2 * * *", "two hours", "UTC").contains("duration = \"two hours\""));
        assert!(bad("0 2 * * *", "0s", "UTC").contains("more than zero"));
        assert!(bad("0 2 * * *", "2h", "Mars/Olympus").contains("timezone = \"Mars/Olympus\""));
    }

    #[tokio::test]
    async fn waiting_for_a_window_follows_the_injected_clock() {
        let clock = ManualClock::new(at("2026-06-10T14:00:00Z"));
        let w = window("0 2 * * *", "2h", "UTC");
        let waiter = {
            let (w, c) = (w.clone(), clock.clone());
            tokio::spawn(async move { w.wait_open(&c).await })
        };
        tokio::task::yield_now().await;
        clock.set(at("2026-06-11T01:59:59Z"));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.set(at("2026-06-11T02:00:00Z"));
        let closes = waiter.await.unwrap().unwrap();
        assert_eq!(closes.timestamp(), at("2026-06-11T04:00:00Z"));
    }
}
