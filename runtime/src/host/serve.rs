//! The running host, in the actix system: the components started, the
//! control socket, readiness and the watchdog heartbeat for the service
//! manager, the probation watch, and the loop that waits for a stop signal
//! or a restart; then the busy leases a restart waits for, and the stop.

use std::{path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use banalytics_home::{failpoint::failpoint, swap, Layout};
use banalytics_messages::upgrade::RestartRequested;
use banalytics_sdk::bus::Subscription;
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use crate::{
    config::BoxConfig, control, launcher::Handshake, notify, registry::Registry, Error, Home,
};

use super::{
    prepare::{record_failing, Boot},
    probation::{self, probation_limit, Verdict},
    Host, Restart, Settings,
};

/// What the start prepared for the running host.
pub(crate) struct Start<'a> {
    pub(crate) home: &'a Home,
    pub(crate) config: &'a BoxConfig,
    pub(crate) registry: &'a Registry,
    pub(crate) layout: Layout,
    pub(crate) settings: Settings,
    pub(crate) boot: Boot,
    /// The launcher's handshake, when a launcher started this core.
    pub(crate) handshake: Option<&'a Handshake>,
    /// The log ring of the console, when `box.toml` configures one.
    pub(crate) ring: Option<crate::console::LogRing>,
}

/// Runs the host until a stop signal (`None`) or a restart.
pub(crate) fn serve(start: Start<'_>) -> Result<Option<Restart>, Error> {
    actix_rt::System::new().block_on(run(start))
}

type StopSignal<'a> = Pin<&'a mut (dyn std::future::Future<Output = &'static str> + 'a)>;

async fn run(start: Start<'_>) -> Result<Option<Restart>, Error> {
    let Start {
        home,
        config,
        registry,
        layout,
        settings,
        boot,
        handshake,
        ring,
    } = start;
    // Handlers first: a SIGTERM right after the components started (or
    // after the readiness line a launcher waits for) stops the host
    // instead of killing it with the default action.
    let stop_signals = stop_signals().map_err(|source| Error::Io {
        path: PathBuf::from("signal"),
        source,
    })?;
    let host = Arc::new(Host::build(home, config, registry)?);
    let control = Control::open(home, &host)?;
    // A token of a newer format is left as it is and the console is off
    // (the start's log and `status` name the file).
    let token_newer = banalytics_home::format::newer_line(
        &home.state_dir().join(crate::console::auth::TOKEN_FILE),
        banalytics_home::format::CONSOLE_TOKEN,
    );
    let _console = match (&config.console, ring) {
        (Some(_), _) if token_newer.is_some() => {
            warn!("the console is off: its token file is of a newer format");
            None
        }
        (Some(c), Some(ring)) => {
            let kinds = registry.names().iter().map(|k| k.to_string()).collect();
            let options = crate::console::Options {
                ring,
                kinds,
                restart_mode: settings.restart_mode,
            };
            let (console, requests) = crate::console::start(home, c, options)?;
            actix_rt::spawn(crate::console::answer(requests, host.clone()));
            Some(console)
        }
        _ => None,
    };
    let mut restarts = host.bus().subscribe::<RestartRequested>();
    info!(home = %home.root().display(), components = config.components.len(), pid = std::process::id(), "host starting");
    host.start_all().await;
    info!("host running");
    let clock = ProbationClock {
        started: Instant::now(),
        limit: boot
            .probation
            .is_some()
            .then(|| probation_limit(settings.health_grace)),
    };
    notify::ready(&clock.text().unwrap_or_else(|| "running".to_owned()));
    if let Some(h) = handshake {
        h.ready();
        failpoint("core.ready-sent");
    }
    let _heartbeat = heartbeat(&host, &layout, clock);
    let mut watcher = {
        let (host, layout, settings) = (host.clone(), layout.clone(), settings.clone());
        actix_rt::spawn(async move { probation::watch(&host, layout, boot, settings).await })
    };
    let stop = wait_for_stop_signal(stop_signals);
    tokio::pin!(stop);
    let mut stop: StopSignal<'_> = stop;
    let ending = restart_loop(&layout, &settings, &mut restarts, &mut watcher, &mut stop).await;
    // Busy leases defer every restart, at most `max_defer`; a stop signal
    // meanwhile stops without restarting.
    let ending = match ending {
        Some(how) => tokio::select! {
            signal = &mut stop => {
                info!(%signal, "stopping");
                None
            }
            () = host.busy().wait_released(settings.max_defer) => Some(how),
        },
        None => None,
    };
    notify::stopping();
    watcher.abort();
    if ending.is_some() && matches!(swap::probation(&layout), Ok(None)) {
        // The health of the committed set, for the probation of a set
        // that the next start applies.
        record_failing(host.board(), &home.state_dir(), settings.health_grace);
    }
    control.close().await;
    match Arc::try_unwrap(host) {
        Ok(host) => host.stop_all().await,
        Err(_) => warn!("control connections still open; stopping without them"),
    }
    info!("host stopped");
    Ok(ending)
}

/// Waits for a stop signal (`None`) or a restart to carry out. A restart
/// asked for while the active set is on probation waits for the verdict:
/// the backup must stay the last committed set, so a staged set is
/// applied only after the commit (a failed start restarts anyway).
async fn restart_loop(
    layout: &Layout,
    settings: &Settings,
    restarts: &mut Subscription<RestartRequested>,
    watcher: &mut actix_rt::task::JoinHandle<Verdict>,
    stop: &mut StopSignal<'_>,
) -> Option<Restart> {
    let mut watching = true;
    let mut deferred: Option<RestartRequested> = None;
    let request = loop {
        tokio::select! {
            signal = &mut *stop => {
                info!(%signal, "stopping");
                return None;
            }
            Some(request) = restarts.recv() => {
                if watching && swap::probation(layout).ok().flatten().is_some() {
                    info!(reason = %request.reason, "restart deferred until the active set on probation is committed or fails");
                    deferred = Some((*request).clone());
                    continue;
                }
                break (*request).clone();
            }
            verdict = &mut *watcher, if watching => {
                watching = false;
                if let Some(request) = after_verdict(layout, settings, verdict.ok(), deferred.take()) {
                    break request;
                }
            }
        }
    };
    info!(mode = ?request.mode, reason = %request.reason, "stopping to restart");
    Some(Restart::for_request(&request, settings))
}

/// The restart a verdict calls for, if any: a failed start's; after a
/// commit, the restart deferred meanwhile, or one for a set staged (and
/// not held) while the active set was on probation.
fn after_verdict(
    layout: &Layout,
    settings: &Settings,
    verdict: Option<Verdict>,
    deferred: Option<RestartRequested>,
) -> Option<RestartRequested> {
    match verdict? {
        Verdict::Failed(request) => Some(request),
        Verdict::Committed => {
            notify::status("running: the new module set committed");
            match deferred {
                Some(request) => Some(request),
                None if layout.has_staged_set()
                    && banalytics_home::hold::of_staged(layout).is_none() =>
                {
                    Some(settings.restart_request(
                        "a set staged while the active set was on probation waits".to_owned(),
                    ))
                }
                None => None,
            }
        }
        Verdict::NoProbation => None,
    }
}

/// The control socket and the task that answers it.
struct Control {
    socket: PathBuf,
    shutdown: watch::Sender<bool>,
    server: actix_rt::task::JoinHandle<()>,
}

impl Control {
    fn open(home: &Home, host: &Arc<Host>) -> Result<Control, Error> {
        let socket = home.control_socket();
        let listener = control::bind(&socket).map_err(|source| Error::Io {
            path: socket.clone(),
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = actix_rt::spawn(control::serve(listener, host.clone(), shutdown_rx));
        Ok(Control {
            socket,
            shutdown,
            server,
        })
    }

    /// Stops answering and removes the socket.
    async fn close(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Where a start on probation stands, for the service manager's status
/// line.
#[derive(Debug, Clone, Copy)]
struct ProbationClock {
    started: Instant,
    /// The probation limit, when this start is on probation.
    limit: Option<Duration>,
}

impl ProbationClock {
    fn text(self) -> Option<String> {
        self.limit.map(|limit| {
            format!(
                "on probation: {} s of {} s",
                self.started.elapsed().as_secs(),
                limit.as_secs()
            )
        })
    }
}

/// The watchdog heartbeat, when the service manager asks for one: it pings
/// only while the essential components' drivers answer.
fn heartbeat(host: &Arc<Host>, layout: &Layout, clock: ProbationClock) -> Option<AbortOnDrop> {
    let interval = notify::watchdog_interval()?;
    let (host, layout) = (host.clone(), layout.clone());
    let heartbeat = notify::heartbeat(interval, move |within| {
        let (host, layout) = (host.clone(), layout.clone());
        async move {
            host.ping(&notify::ESSENTIAL_KINDS, within).await?;
            let probation = matches!(swap::probation(&layout), Ok(Some(_)));
            Ok(probation
                .then(|| clock.text())
                .flatten()
                .unwrap_or_else(|| "running".to_owned()))
        }
    });
    Some(AbortOnDrop(actix_rt::spawn(heartbeat)))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(actix_rt::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What stops the host (SIGTERM and SIGINT; on Windows Ctrl-C, Ctrl-Break,
/// the console's close and the stop event), caught from now on.
fn stop_signals() -> std::io::Result<crate::platform::StopSignals> {
    crate::platform::StopSignals::catch()
}

async fn wait_for_stop_signal(signals: crate::platform::StopSignals) -> &'static str {
    signals.recv().await
}
