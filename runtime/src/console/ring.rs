//! The host's last log lines for the console's Log page: a `tracing`
//! layer that keeps the newest [`RING_LINES`] events in memory, each with
//! its time, level, component and text. Installed only when the console is
//! configured (`logging::init`), so a box without a console keeps none.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{layer::Context, Layer};

/// Lines kept: a few minutes of a busy synchronisation at `info`, a
/// bounded ~1 MiB whatever the box logs.
pub const RING_LINES: usize = 4000;

/// Longest text kept of one event; the rest is cut (the stderr log has it
/// whole).
pub const MAX_LINE_BYTES: usize = 2048;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its number: increasing, so the page follows from the last it saw.
    pub seq: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Its level.
    pub level: Level,
    /// The component it names (`component` or `plugin` field), else the
    /// part of the box it came from (`host`, `upgrade-center`, `portal`).
    pub component: String,
    /// The message and the other fields, `key=value`.
    pub text: String,
}

#[derive(Default)]
struct Lines {
    next: u64,
    lines: VecDeque<LogLine>,
}

/// The shared ring; clones see the same lines.
#[derive(Clone, Default)]
pub struct LogRing {
    inner: Arc<Mutex<Lines>>,
}

impl LogRing {
    /// An empty ring.
    pub fn new() -> Self {
        LogRing::default()
    }

    /// Keeps `line` (its `seq` is set here), dropping the oldest beyond
    /// [`RING_LINES`].
    pub fn push(&self, mut line: LogLine) {
        let mut inner = self.inner.lock().expect("log ring");
        line.seq = inner.next;
        inner.next += 1;
        if inner.lines.len() == RING_LINES {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line);
    }

    /// The newest `max` lines that pass `keep`, oldest first.
    pub fn tail(&self, max: usize, keep: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        let inner = self.inner.lock().expect("log ring");
        let mut out: Vec<LogLine> = inner
            .lines
            .iter()
            .rev()
            .filter(|l| keep(l))
            .take(max)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The number the next line gets: a page that saw lines below it has
    /// nothing new.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().expect("log ring").next
    }

    /// The components named in the ring, sorted.
    pub fn components(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("log ring");
        let mut names: Vec<String> = inner.lines.iter().map(|l| l.component.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The part of the box an event without a component field came from.
fn part_of(target: &str) -> &'static str {
    match target.split("::").next().unwrap_or_default() {
        "banalytics_upgrade_center" => "upgrade-center",
        "banalytics_portal_integration" => "portal",
        "banalytics_probe" => "probe",
        _ => "host",
    }
}

#[derive(Default)]
struct Visitor {
    message: String,
    fields: String,
    component: Option<String>,
}

impl tracing::field::Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "component" | "plugin" if self.component.is_none() => {
                self.component = Some(value.to_owned());
                let _ = write!(self.fields, " {}={value}", field.name());
            }
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "component" | "plugin" if self.component.is_none() => {
                let shown = format!("{value:?}");
                self.component = Some(shown.trim_matches('"').to_owned());
                let _ = write!(self.fields, " {}={shown}", field.name());
            }
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogRing {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut v = Visitor::default();
        event.record(&mut v);
        let meta = event.metadata();
        let mut text = v.message;
        text.push_str(&v.fields);
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        self.push(LogLine {
            seq: 0,
            at_ms: banalytics_sdk::status::now_ms(),
            level: *meta.level(),
            component: v
                .component
                .unwrap_or_else(|| part_of(meta.target()).to_owned()),
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_newest_lines_with_their_component_and_level() {
        let ring = LogRing::new();
        let subscriber = tracing_subscriber::registry().with(ring.clone());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..RING_LINES + 5 {
                tracing::info!(n = i, "line");
            }
            tracing::warn!(component = "probe", "failed");
        });
        let all = ring.tail(usize::MAX, |_| true);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].text, "line n=6");
        let last = all.last().unwrap();
        assert_eq!(
            (last.level, last.component.as_str()),
            (Level::WARN, "probe")
        );
        let warnings = ring.tail(10, |l| l.level <= Level::WARN);
        assert_eq!(warnings.len(), 1);
        assert_eq!(ring.components(), ["host", "probe"]);
    }
}
