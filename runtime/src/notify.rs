//! The service manager's notify protocol (systemd's `sd_notify`): readiness,
//! a watchdog heartbeat, stopping, and a line of status.
//!
//! Everything here is off, and costs one environment lookup, when the
//! service manager gave no `NOTIFY_SOCKET` (a box started by hand, by the
//! tests, or under another service manager).
//!
//! * `READY=1` once the host's components started; `STOPPING=1` when it
//!   stops; `STATUS=` lines that say what the box does.
//! * `WATCHDOG=1` from [`heartbeat`] when the service manager asked for a
//!   watchdog (`WATCHDOG_USEC`, the unit's `WatchdogSec=`), at half its
//!   interval, and only after a round trip through the driver of each
//!   component whose loss makes the box unmanageable ([`ESSENTIAL_KINDS`]:
//!   Portal Integration and the upgrade center), each on its own arbiter.
//!   A wedged arbiter there stops the pings, and the service manager
//!   restarts the box. A wedged third-party plugin does not: its restart
//!   policy and isolation deal with it.
//! * A core started by the launcher sends to the launcher's relay
//!   ([`Relay`]), which forwards to the service manager: the launcher, not
//!   the core, feeds the watchdog while the core's set is on probation,
//!   since the launcher's own deadline decides then.
//!
//! Children the host starts for other purposes (isolated plugins, the
//! upgrade job) do not inherit the socket ([`forget_for_child`]).

#[cfg(unix)]
use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};
use std::{path::Path, process::Command, time::Duration};

#[cfg(unix)]
use sd_notify::NotifyState;
#[cfg(unix)]
use tracing::debug;
use tracing::warn;

/// What [`send`] says; on Windows, where nothing listens, nothing.
#[cfg(windows)]
#[allow(dead_code)] // nothing reads them: nothing listens
enum NotifyState<'a> {
    Ready,
    Stopping,
    Watchdog,
    Status(&'a str),
}

/// The environment variable of the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The kinds whose components must answer for the watchdog to be fed:
/// without Portal Integration the box cannot be reached from the portal,
/// without the upgrade center it cannot be repaired.
pub const ESSENTIAL_KINDS: [&str; 2] = [
    banalytics_portal_integration::KIND_NAME,
    banalytics_upgrade_center::KIND_NAME,
];

/// Whether the service manager listens (never on Windows: systemd's
/// protocol is Linux-only; the service control manager is told of the
/// service's state by `service.rs`).
pub fn enabled() -> bool {
    cfg!(unix) && std::env::var_os(NOTIFY_SOCKET).is_some()
}

fn send(states: &[NotifyState]) {
    if !enabled() {
        return;
    }
    #[cfg(unix)]
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
    #[cfg(windows)]
    let _ = states;
}

/// `READY=1`, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A `STATUS=` line.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Feeds the watchdog from a loop that wakes often (the launcher's):
/// [`Feeder::tick`] pings when the interval passed.
pub struct Feeder {
    interval: Option<Duration>,
    last: std::time::Instant,
}

impl Feeder {
    /// A feeder at [`watchdog_interval`]; it does nothing without one.
    pub fn new() -> Feeder {
        Feeder {
            interval: watchdog_interval(),
            last: std::time::Instant::now(),
        }
    }

    /// Pings if an interval passed since the last ping.
    pub fn tick(&mut self) {
        if let Some(interval) = self.interval {
            if self.last.elapsed() >= interval {
                watchdog();
                self.last = std::time::Instant::now();
            }
        }
    }
}

impl Default for Feeder {
    fn default() -> Self {
        Feeder::new()
    }
}

/// How often to feed the watchdog: half the interval the service manager
/// asked for, as `sd_watchdog_enabled(3)` recommends; `None` when it asked
/// for none (or asked another process).
pub fn watchdog_interval() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    #[cfg(unix)]
    return sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2);
    #[cfg(windows)]
    None
}

/// Keeps a child from speaking to the service manager for this process.
pub fn forget_for_child(command: &mut Command) {
    command
        .env_remove(NOTIFY_SOCKET)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
}

/// Feeds the watchdog every `interval` while `alive` answers within that
/// interval, with the status line it answers; when a part does not answer,
/// says which in a status line and skips the ping. Runs until dropped.
pub async fn heartbeat<F, Fut>(interval: Duration, mut alive: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<String, Vec<String>>>,
{
    let mut silent = false;
    loop {
        tokio::time::sleep(interval).await;
        match alive(interval).await {
            Ok(line) => {
                silent = false;
                send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            }
            Err(names) => {
                let text = format!(
                    "not answering: {}; the watchdog is not fed",
                    names.join(", ")
                );
                if !silent {
                    warn!(components = ?names, "a component essential to managing the box does not answer; the service manager's watchdog is not fed");
                }
                status(&text);
                silent = true;
            }
        }
    }
}

/// The launcher's relay of its core's notifications: a datagram socket in
/// the home's `state/` that the core gets as its `NOTIFY_SOCKET`, read by a
/// thread that forwards every message to the service manager, except
/// `WATCHDOG=1` while the launcher feeds the watchdog itself
/// ([`Relay::feed_watchdog_myself`]).
#[cfg(unix)]
pub struct Relay {
    path: PathBuf,
    launcher_feeds: Arc<AtomicBool>,
}

/// The relay socket's file name in `state/` (the relay is Linux-only).
#[cfg_attr(not(unix), allow(dead_code))]
pub const RELAY_FILE: &str = "notify-relay.sock";

/// No relay on Windows: nothing listens ([`enabled`]).
#[cfg(windows)]
pub struct Relay;

#[cfg(windows)]
impl Relay {
    /// `None`: nothing to relay to.
    pub fn start(_state_dir: &Path) -> Option<Relay> {
        None
    }

    /// Nothing to hand over.
    pub fn hand_to(&self, _command: &mut Command) {}

    /// Nothing to feed.
    pub fn feed_watchdog_myself(&self, _yes: bool) {}
}

#[cfg(unix)]
impl Relay {
    /// Binds the relay in `state_dir` and starts its thread; `None` when
    /// the service manager does not listen, or the socket cannot be made
    /// (then the core gets the service manager's socket itself, which a
    /// unit with `NotifyAccess=all` accepts).
    pub fn start(state_dir: &Path) -> Option<Relay> {
        if !enabled() {
            return None;
        }
        let path = state_dir.join(RELAY_FILE);
        let _ = std::fs::remove_file(&path);
        let socket = match UnixDatagram::bind(&path) {
            Ok(s) => s,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot make the notify relay; the core speaks to the service manager directly");
                return None;
            }
        };
        let launcher_feeds = Arc::new(AtomicBool::new(false));
        let feeds = launcher_feeds.clone();
        let spawned = std::thread::Builder::new()
            .name("notify-relay".to_owned())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| !l.is_empty())
                        .filter(|l| !(*l == "WATCHDOG=1" && feeds.load(Ordering::SeqCst)))
                        .collect();
                    if !lines.is_empty() {
                        let states: Vec<NotifyState> =
                            lines.into_iter().map(NotifyState::Custom).collect();
                        send(&states);
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the notify relay");
            return None;
        }
        Some(Relay {
            path,
            launcher_feeds,
        })
    }

    /// Points `command` (the core) at the relay.
    pub fn hand_to(&self, command: &mut Command) {
        command
            .env(NOTIFY_SOCKET, &self.path)
            .env_remove("WATCHDOG_PID");
    }

    /// While `true`, the core's `WATCHDOG=1` is dropped: the launcher feeds
    /// the watchdog itself (the set is on probation and the launcher's
    /// deadline decides).
    pub fn feed_watchdog_myself(&self, yes: bool) {
        self.launcher_feeds.store(yes, Ordering::SeqCst);
    }
}

#[cfg(unix)]
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{atomic::Ordering, Arc};

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_asks_every_interval_and_stops_feeding_while_a_part_is_silent() {
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = asked.clone();
        let beat = tokio::spawn(heartbeat(Duration::from_secs(5), move |within| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!(within, Duration::from_secs(5));
                if n == 1 {
                    Err(vec!["portal".to_owned()])
                } else {
                    Ok("running".to_owned())
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(14_900)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked at 5 s and 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        beat.abort();
    }
}
