//! Process isolation of a plugin component (`isolation = "process"` in its
//! `[components.NAME]` table): the component runs in a child process, so a
//! segfault, an `abort`, a stack overflow or a wedged thread in it takes
//! down that child only, never the host and its other components.
//!
//! **The child** is this same executable with the hidden subcommand
//! `plugin-child` ([`child`]). It opens the same library file the same way
//! (`plugins::open`: identity record, `dlopen` with `RTLD_NOW |
//! RTLD_LOCAL`, ABI and build checks) and calls the same C ABI functions;
//! what the host would have passed and received in process crosses the
//! socket pair as [`frame`]s carrying the same JSON documents.
//!
//! **The host side** ([`proxy`]) is an ordinary `Component`, like the
//! in-process proxy: its `start` subscribes raw on the kind's `subscribes`
//! topics and supervises one actor, `process`, with the component's
//! policy, through the SDK's supervisor. One instance of that actor is one
//! child: its factory spawns the child, `create`s and `start`s the plugin
//! instance in it; its messages are the bus messages for the instance.
//! So what the supervisor does for any actor holds for the child:
//!
//! * a child that dies (by a signal or an exit) or answers no heartbeat
//!   for [`HEARTBEAT_TIMEOUT`] (then it is killed with SIGKILL) fails the
//!   actor with the exit status or signal as the reason: the component is
//!   in `ERROR`, `status` shows it, and after the policy's delay (stop,
//!   immediate, 10 s, 30 s, 1 min; a tokio timer) a new child is started;
//!   under `stop` it waits for `banalytics-box restart NAME`;
//! * messages that arrive while the child is down wait in the actor's
//!   bounded mailbox (`MAILBOX_CAPACITY`) and go to the next child. Those
//!   already written to the dead child's socket are lost with it, as the
//!   message whose handler panicked is lost for an in-process actor.
//!
//! The plugin's own actors are supervised inside the child, as in process,
//! and mirrored onto the host's board from the `state` frames; their logs
//! come back as `log` frames and become host events with the `plugin`
//! field. `restart NAME` restarts the `process` actor when it failed and
//! sends `restart_failed` to the child for the plugin's failed actors.
//!
//! **The heartbeat.** Every [`HEARTBEAT_INTERVAL`] the host sends a ping;
//! the child answers it only after the instance's lifecycle loop (the
//! SDK's `Driver`, on the instance's thread, where its actors run) has
//! answered a `start` of the running instance, which the driver answers
//! without doing anything. So a handler that spins or blocks forever
//! stops the pongs, not only a dead socket.
//!
//! **The child process** ([`Spawner`], [`proxy`]): spawned from one thread
//! that lives as long as the host, with `PR_SET_PDEATHSIG` = SIGKILL and a
//! check of the parent's pid right after (`crate::process`), so a host
//! killed with SIGKILL leaves no child. The socket pair is its only
//! inherited descriptor besides stdin (null), stdout (null) and stderr
//! (the host's, for what a dying process prints): the child's end becomes
//! descriptor 3 and every other descriptor is closed at `exec`. Its
//! `memory_limit` (address space, `RLIMIT_AS`) and `cpu_limit` (CPU
//! seconds, `RLIMIT_CPU`: SIGXCPU at the limit, SIGKILL 5 s later) are set
//! between fork and exec, before the library is loaded. On Windows the
//! link is two inherited pipes and the child is in a Job object of its own
//! with `KILL_ON_JOB_CLOSE` and the limits ([`spawn`]).
//!
//! **The sandbox** ([`sandbox`]): the child enters Landlock itself, first
//! thing after `exec`: it may write only in the home's `data/` (which the
//! host makes when missing) and in a temporary folder of its own (made by
//! the host for each child, given as `TMPDIR`, removed with the child, or
//! at the next host's first child when a SIGKILL left it);
//! `modules*/` and `models*/` are read-only to it; `state/` and `config/`
//! are out of its reach. `no_new_privs` is set. On a kernel without
//! Landlock the child runs without it: the spawner warns once, at the
//! first child, and `status` says so (`host.sandbox`). Windows has no
//! sandbox for the child (Landlock is Linux's): the same warning and
//! `status` line.
//!
//! **Stopping** (a stop of the component, SIGTERM of the host): the mailbox
//! is drained to the child, then a `stop` frame, whose answer is awaited
//! [`STOP_GRACE`]; then the socket is closed and the child, which destroys
//! the instance and exits, gets [`EXIT_GRACE`]; then SIGTERM, and SIGKILL
//! after [`EXIT_GRACE`] again.
//!
//! Deliberately absent: cgroups (the limits are `setrlimit`'s, per
//! process), isolating built-in kinds (refused in `box.toml`: they are the
//! host's own code), and keeping the host from loading the library itself
//! (it still reads the kinds and topics from it at start, so a library
//! whose initialisers crash takes the host down at load, isolated or not).

pub mod child;
pub mod frame;
mod proxy;
#[cfg(unix)]
pub(crate) mod sandbox;
mod spawn;

#[cfg(unix)]
use std::sync::mpsc;
use std::{
    io,
    process::{Child, Command},
    sync::Mutex,
    time::Duration,
};

pub(crate) use proxy::create;

/// The folder of the home a child may write in (the only one, under the
/// sandbox).
pub const DATA_DIR: &str = "data";

/// The start of a child's temporary folder's name, in the host's temporary
/// folder: `banalytics-plugin-{host pid}-{component}-{random}`.
pub const TMP_PREFIX: &str = "banalytics-plugin-";

/// What the platform offers isolated components, as `status` shows it
/// (`host.sandbox`): the kernel's Landlock.
#[cfg(unix)]
pub fn sandbox_status() -> serde_json::Value {
    serde_json::to_value(sandbox::Support::probe()).expect("plain data")
}

/// What the platform offers isolated components, as `status` shows it
/// (`host.sandbox`): none on Windows (Landlock is Linux's; the child runs
/// in a Job object with its limits, without a file-system sandbox).
#[cfg(windows)]
pub fn sandbox_status() -> serde_json::Value {
    serde_json::json!({ "landlock_abi": null, "level": "none" })
}

/// How a component runs: in the host (the default) or in a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In the host process (`isolation = "none"`, the default).
    #[default]
    None,
    /// In a child process of its own (`isolation = "process"`).
    Process(Limits),
}

/// The limits of an isolated component's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory_limit`: the address space, in bytes (`RLIMIT_AS`).
    pub memory_bytes: Option<u64>,
    /// `cpu_limit`: CPU seconds of one child (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
}

/// How often the host pings a child. Often enough that a wedged child is
/// found within seconds, rarely enough to cost nothing.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A child that answered no ping for this long is wedged and killed. Five
/// intervals: a child busy on a loaded two-core machine still answers in
/// time, a wedged one is restarted within seconds.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a child may take to load its library and answer `create`, or
/// to answer `start` (the component's own `start` returned).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the host waits for a child to answer a `stop` frame, once its
/// mailbox was drained. The plugin's own actors get the SDK's `STOP_GRACE`
/// (5 s) each inside; past this, the child is closed and then signalled.
pub const STOP_GRACE: Duration = Duration::from_secs(6);

/// How long a child may take to exit after its socket was closed, and
/// after SIGTERM, before the next step.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The descriptor the child finds its end of the socket pair on.
#[cfg(unix)]
pub const CHILD_SOCKET_FD: i32 = 3;

#[cfg(unix)]
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns the children of isolated components from one thread that lives
/// as long as the process: `PR_SET_PDEATHSIG` fires when the thread that
/// forked a child exits, not the process, so a child spawned from an
/// arbiter that a stop ended would be killed with it. One per host (the
/// plugin kinds share it); the thread is started at the first spawn.
#[cfg(unix)]
#[derive(Default)]
pub struct Spawner {
    requests: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
    /// The kernel's sandbox, asked at the first spawn (and warned about
    /// then when there is none).
    sandbox: std::sync::OnceLock<sandbox::Support>,
}

/// Spawns the children of isolated components one at a time on Windows:
/// a child's pipe ends are inheritable from just before its spawn until
/// just after it (std starts every child with `bInheritHandles`), and no
/// other child of the spawner may inherit them meanwhile. One per host.
#[cfg(windows)]
#[derive(Default)]
pub struct Spawner {
    one_at_a_time: Mutex<()>,
}

#[cfg(windows)]
impl Spawner {
    /// Spawns `command`, which inherits `handles` (made inheritable for
    /// the spawn only).
    pub fn spawn(
        &self,
        mut command: Command,
        handles: &[&dyn std::os::windows::io::AsRawHandle],
    ) -> io::Result<Child> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!("isolated plugin processes run without a file-system sandbox on Windows (Landlock is Linux-only): they can write anywhere the box can"));
        for handle in handles {
            crate::platform::set_inheritable(handle.as_raw_handle(), true)?;
        }
        let spawned = command.spawn();
        for handle in handles {
            let _ = crate::platform::set_inheritable(handle.as_raw_handle(), false);
        }
        spawned
    }
}

#[cfg(unix)]
impl Spawner {
    /// Spawns `command` on the spawner thread.
    pub fn spawn(&self, command: Command) -> io::Result<Child> {
        self.sandbox.get_or_init(|| {
            let swept = sandbox::sweep_stale_tmp(&std::env::temp_dir());
            if !swept.is_empty() {
                tracing::info!(?swept, "removed the temporary folders of plugin processes of hosts that are gone");
            }
            let support = sandbox::Support::probe();
            match support.level {
                sandbox::Level::None => tracing::warn!(
                    "the kernel has no Landlock: isolated plugin processes run without a file-system sandbox and can write anywhere the box can, its state included"
                ),
                level => tracing::info!(
                    landlock_abi = support.landlock_abi,
                    %level,
                    "isolated plugin processes run in a Landlock sandbox"
                ),
            }
            support
        });
        let requests = {
            let mut slot = self.requests.lock().expect("spawner poisoned");
            match slot.as_ref() {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel::<SpawnRequest>();
                    std::thread::Builder::new()
                        .name("isolation spawner".to_owned())
                        .spawn(move || {
                            while let Ok((mut command, answer)) = rx.recv() {
                                let _ = answer.send(command.spawn());
                            }
                            // Every sender is gone, but children spawned
                            // from here may live on: this thread must not
                            // end before the process.
                            loop {
                                std::thread::park();
                            }
                        })?;
                    slot.insert(tx).clone()
                }
            }
        };
        let (answer, result) = mpsc::channel();
        let gone = || io::Error::other("the spawner thread is gone");
        requests.send((command, answer)).map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}
