//! `tracing` output, text or JSON per `[log]`, and panics routed into it.

use std::io::IsTerminal;

use tracing_subscriber::{filter::Targets, fmt};

use crate::config::{LogConfig, LogFormat, LogLevel};

/// Panics logged per second; a crash loop under `immediate` would
/// otherwise write thousands of identical events (the supervisor logs each
/// failure, rate-limited too, and the status board counts them all).
pub const PANIC_LOGS_PER_SECOND: u64 = 20;

struct PanicLimit {
    second: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl PanicLimit {
    fn admit(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.second.swap(now, Relaxed) != now {
            self.count.store(0, Relaxed);
        }
        self.count.fetch_add(1, Relaxed) < PANIC_LOGS_PER_SECOND
    }
}

static PANIC_LOGS: PanicLimit = PanicLimit {
    second: std::sync::atomic::AtomicU64::new(0),
    count: std::sync::atomic::AtomicU64::new(0),
};

/// What is logged: `rust_log` (the variable `RUST_LOG`) when it is a list
/// of levels and `target=level` pairs (`warn,banalytics_runtime=debug`),
/// else the configured level. Level and target only: a filter by span or
/// field (`tracing-subscriber`'s `env-filter`) would link a regex engine
/// into the shipped build for what no box is configured with.
fn filter(rust_log: Option<&str>, config: &LogConfig) -> Targets {
    rust_log
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(level(config.level)))
}

fn level(level: LogLevel) -> tracing::Level {
    match level {
        LogLevel::Trace => tracing::Level::TRACE,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    }
}

/// Installs the global subscriber (stderr), and `ring` beside it when the
/// console keeps the last lines (`crate::console::ring`). `RUST_LOG`, when
/// set, overrides the configured level ([`filter`]).
pub fn init(config: &LogConfig, ring: Option<crate::console::LogRing>) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), config);
    let ansi = std::io::stderr().is_terminal();
    let text = (config.format == LogFormat::Text)
        .then(|| fmt::layer().with_ansi(ansi).with_writer(std::io::stderr));
    let json = (config.format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(ring)
        .try_init();
    std::panic::set_hook(Box::new(|info| {
        if !PANIC_LOGS.admit() {
            return;
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = banalytics_sdk::supervisor::panic_message(info.payload());
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("?"), %location, panic = %message, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(level: LogLevel) -> LogConfig {
        LogConfig {
            level,
            format: LogFormat::Text,
        }
    }

    #[test]
    fn rust_log_overrides_the_configured_level_by_target() {
        let f = filter(
            Some("warn,banalytics_runtime=debug"),
            &config(LogLevel::Info),
        );
        assert!(f.would_enable("banalytics_runtime::host", &tracing::Level::DEBUG));
        assert!(!f.would_enable("banalytics_runtime::host", &tracing::Level::TRACE));
        assert!(!f.would_enable("banalytics_sdk::bus", &tracing::Level::INFO));
        assert!(f.would_enable("banalytics_sdk::bus", &tracing::Level::WARN));
    }

    #[test]
    fn without_a_readable_rust_log_the_configured_level_holds() {
        for rust_log in [None, Some("[span{field=x}]=debug")] {
            let f = filter(rust_log, &config(LogLevel::Warn));
            assert!(f.would_enable("banalytics_runtime", &tracing::Level::WARN));
            assert!(!f.would_enable("banalytics_runtime", &tracing::Level::INFO));
        }
        let f = filter(None, &config(LogLevel::Trace));
        assert!(f.would_enable("anything", &tracing::Level::TRACE));
    }
}
