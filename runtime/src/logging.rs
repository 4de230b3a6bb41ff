//! `tracing` output, text or JSON per `[log]`, and panics routed into it.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

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

/// Installs the global subscriber (stderr), and `ring` beside it when the
/// console keeps the last lines (`crate::console::ring`). `RUST_LOG`, when
/// set, overrides the configured level.
pub fn init(config: &LogConfig, ring: Option<crate::console::LogRing>) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.level.as_str()));
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
