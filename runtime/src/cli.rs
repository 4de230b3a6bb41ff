//! The command line: `run`, `status`, `restart`.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Instant};

use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info, warn};

use banalytics_home::{
    failpoint::failpoint,
    running::RunningCore,
    swap::{self, SwapError},
    Layout,
};
use banalytics_messages::upgrade::RestartRequested;

use crate::{
    config::BoxConfig,
    control::{self, Request},
    host::Host,
    ids, launcher, logging, notify,
    registry::Registry,
    upgrade, Error, Home, EXIT_FAILURE, EXIT_OK,
};

/// The Banalytics box host.
#[derive(Debug, Parser)]
#[command(name = "banalytics-box", version = launcher::BUILD_VERSION)]
pub struct Cli {
    /// The box home [default: $BANALYTICS_HOME, else the current directory]
    #[arg(long, global = true, env = "BANALYTICS_HOME")]
    pub home: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the components and run until SIGTERM or SIGINT.
    Run,
    /// Show component states (from the running host when there is one).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running host to synchronise software now.
    Upgrade {
        /// Follow the synchronisation until it ends, with download progress
        /// (a bar on a terminal, plain lines otherwise).
        #[arg(long)]
        wait: bool,
        /// Install the target set even if an automatic rollback quarantined
        /// it: lifts the quarantine for this synchronisation (the set goes
        /// on probation again).
        #[arg(long)]
        retry: bool,
    },
    /// Approve the staged set: the running host restarts to apply it now,
    /// whatever maintenance window or approval it waits for.
    Approve,
    /// Drop the staged module set and tell the portal nothing was
    /// installed (with the host running or stopped).
    Discard,
    /// Apply the staged module set (with the host stopped).
    Apply,
    /// Make the backup module set the active one again (with the host
    /// stopped).
    Rollback,
    /// Check every active file against its recorded SHA-256 and size.
    Verify,
    /// Print a one-time login link to the box's web console (`[console]`
    /// in box.toml).
    ConsoleUrl,
    /// Restart a component that is stopped or in ERROR.
    Restart {
        /// Component instance name, as in box.toml.
        component: String,
    },
    /// The child process of an isolated component (started by the host).
    #[cfg(unix)]
    #[command(hide = true)]
    PluginChild(crate::isolation::child::ChildArgs),
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(unix)]
    if let Command::PluginChild(args) = &cli.command {
        return ExitCode::from(crate::isolation::child::main(args));
    }
    let home = Home::new(&cli.home.clone().unwrap_or_else(|| PathBuf::from(".")));
    let result = match cli.command {
        Command::Run => run(&home),
        Command::Status { json } => status(&home, json),
        Command::Upgrade { wait, retry } => upgrade(&home, wait, retry),
        Command::Approve => ask(&home, &Request::Approve),
        Command::Apply => apply(&home),
        Command::Discard => crate::discard::command(&home, hold_lock),
        Command::ConsoleUrl => crate::console::url_command(&home),
        Command::Rollback => rollback(&home),
        Command::Verify => verify(&home),
        Command::Restart { component } => ask(
            &home,
            &Request::Restart {
                component: component.clone(),
            },
        ),
        #[cfg(unix)]
        Command::PluginChild(_) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("banalytics-box: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(home: &Home) -> Result<u8, Error> {
    // Windows: a Job object, so that no child outlives this process.
    crate::platform::contain_children();
    // Order matters: the module set must be final (an interrupted swap
    // finished, a staged set applied, a failed set rolled back) before any
    // plugin library is loaded from it, because libraries are never
    // unloaded. What that needs of the configuration is read first,
    // accepting any component kind; the full check follows once the plugin
    // kinds are known.
    let early = BoxConfig::load_any_kind(home.root())?;
    // Started by a launcher: it took the lock, prepared the module set and
    // counted this start (`launcher`'s module docs).
    let handshake = launcher::Handshake::from_env()?;
    let lock = match &handshake {
        Some(h) => {
            let lock = h.take_lock();
            failpoint("core.handshake-taken");
            lock
        }
        None => hold_lock(home)?,
    };
    let ring = early
        .console
        .as_ref()
        .map(|_| crate::console::LogRing::new());
    logging::init(&early.log, ring.clone());
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let layout = Layout::new(home.root());
    let settings = upgrade::Settings::from_config(&early)?;
    let (boot, core) = match &handshake {
        Some(h) => {
            let boot = upgrade::Boot {
                probation: swap::probation(&layout).ok().flatten(),
                rolled_back: h.rolled_back.clone(),
                rolled_back_seq: h.rolled_back_seq,
            };
            let core = RunningCore {
                pid: std::process::id(),
                ..h.core.clone()
            };
            (boot, core)
        }
        None => {
            notify::status(if layout.has_staged_set() {
                "applying a staged set"
            } else {
                "preparing the module set"
            });
            let boot = upgrade::prepare(&layout, &settings, &home.state_dir()).unwrap_or_else(|e| {
                error!(error = %e, "the module folders could not be prepared; starting with them as they are, so that the box stays reachable");
                upgrade::Boot {
                    probation: None,
                    rolled_back: Some(format!("the module set could not be applied or put back: {e}")),
                    rolled_back_seq: None,
                }
            });
            failpoint("launcher.prepared");
            let mut own = launcher::own_identity(&home.state_dir())
                .map_err(io(PathBuf::from("/proc/self/exe")))?;
            failpoint("launcher.identified");
            // Nothing of the set has run yet: a core of the set runs as
            // this launcher's child, and this process only watches it.
            match launcher::core_to_run(&layout, &own) {
                launcher::CoreToRun::Other(core) => {
                    match launcher::launch(&layout, &settings, core, &lock, &boot)? {
                        launcher::Launched::Exit(code) => return Ok(code),
                        launcher::Launched::OwnBuild { reason } => own.fallback = Some(reason),
                    }
                }
                launcher::CoreToRun::OwnNamedBySet { version } => own.version = version,
                launcher::CoreToRun::Own => {}
            }
            (boot, own)
        }
    };
    if let Err(e) = banalytics_home::running::write(&layout, &core) {
        warn!(error = %e, "cannot record which core runs");
    }
    info!(version = %core.version, sha256 = %core.sha256, origin = ?core.origin, "core");
    let (registry, plugins) = Registry::for_config(&early).with_plugins(&layout.modules());
    plugins.log();
    let config = match BoxConfig::load(home.root(), &registry.names()) {
        Ok(config) => config,
        Err(refusal) => {
            let refusal = Error::from(refusal);
            let Some(probation) = boot.probation else {
                return Err(refusal);
            };
            let how = upgrade::fail_start_on_config(&layout, &settings, probation, &refusal)?;
            drop(lock);
            return upgrade::restart(under_launcher(how, handshake.is_some()), home.root());
        }
    };
    let system = actix_rt::System::new();
    let ending = system.block_on(async {
        // Handlers first: a SIGTERM right after the components started (or
        // after the readiness line a launcher waits for) stops the host
        // instead of killing it with the default action.
        let stop_signals = stop_signals().map_err(io(PathBuf::from("signal")))?;
        let host = Arc::new(Host::build(home, &config, &registry)?);
        let socket = home.control_socket();
        let listener = control::bind(&socket).map_err(io(socket.clone()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let server = actix_rt::spawn(control::serve(listener, host.clone(), shutdown_rx));
        let _console = match (&config.console, ring) {
            (Some(c), Some(ring)) => {
                let kinds = registry.names().iter().map(|k| k.to_string()).collect();
                let options = crate::console::Options { ring, kinds, restart_mode: settings.restart_mode };
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
        let started = Instant::now();
        let probation_limit = boot
            .probation
            .is_some()
            .then(|| upgrade::probation_limit(settings.health_grace));
        let on_probation = move || {
            probation_limit.map(|limit| {
                format!(
                    "on probation: {} s of {} s",
                    started.elapsed().as_secs(),
                    limit.as_secs()
                )
            })
        };
        notify::ready(&on_probation().unwrap_or_else(|| "running".to_owned()));
        if let Some(h) = &handshake {
            h.ready();
            failpoint("core.ready-sent");
        }
        let _heartbeat = notify::watchdog_interval().map(|interval| {
            let (host, layout) = (host.clone(), layout.clone());
            let heartbeat = notify::heartbeat(interval, move |within| {
                let (host, layout) = (host.clone(), layout.clone());
                async move {
                    host.ping(&notify::ESSENTIAL_KINDS, within).await?;
                    let probation = matches!(swap::probation(&layout), Ok(Some(_)));
                    Ok(probation
                        .then(on_probation)
                        .flatten()
                        .unwrap_or_else(|| "running".to_owned()))
                }
            });
            AbortOnDrop(actix_rt::spawn(heartbeat))
        });
        let mut watcher = {
            let (host, layout, settings) = (host.clone(), layout.clone(), settings.clone());
            actix_rt::spawn(async move { upgrade::after_start(&host, layout, boot, settings).await })
        };
        let mut watching = true;
        // A restart asked for while the active set is on probation waits for
        // the verdict: the backup must stay the last committed set, so a
        // staged set is applied only after the commit (a failed start
        // restarts anyway).
        let mut deferred: Option<RestartRequested> = None;
        let stop = wait_for_stop_signal(stop_signals);
        tokio::pin!(stop);
        let ending = loop {
            tokio::select! {
                signal = &mut stop => {
                    info!(%signal, "stopping");
                    break None;
                }
                Some(request) = restarts.recv() => {
                    if watching && swap::probation(&layout).ok().flatten().is_some() {
                        info!(reason = %request.reason, "restart deferred until the active set on probation is committed or fails");
                        deferred = Some((*request).clone());
                        continue;
                    }
                    info!(mode = ?request.mode, reason = %request.reason, "stopping to restart");
                    break Some(settings.restart_for(&request));
                }
                verdict = &mut watcher, if watching => {
                    watching = false;
                    if matches!(verdict, Ok(upgrade::Verdict::Committed)) {
                        notify::status("running: the new module set committed");
                    }
                    let request = match verdict {
                        Ok(upgrade::Verdict::Failed(request)) => request,
                        Ok(upgrade::Verdict::Committed) => match deferred.take() {
                            Some(request) => request,
                            None if layout.has_staged_set()
                                && banalytics_home::hold::of_staged(&layout).is_none() =>
                            {
                                settings.restart_request(
                                    "a set staged while the active set was on probation waits".to_owned(),
                                )
                            }
                            None => continue,
                        },
                        _ => continue,
                    };
                    info!(mode = ?request.mode, reason = %request.reason, "stopping to restart");
                    break Some(settings.restart_for(&request));
                }
            }
        };
        // Busy leases defer every restart, at most `max_defer`; a stop
        // signal meanwhile stops without restarting.
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
            upgrade::record_failing(host.board(), &home.state_dir(), settings.health_grace);
        }
        let _ = shutdown_tx.send(true);
        let _ = server.await;
        let _ = std::fs::remove_file(&socket);
        match Arc::try_unwrap(host) {
            Ok(host) => host.stop_all().await,
            Err(_) => tracing::warn!("control connections still open; stopping without them"),
        }
        info!("host stopped");
        Ok::<_, Error>(ending)
    })?;
    drop(lock);
    match ending {
        None => Ok(EXIT_OK),
        Some(how) => upgrade::restart(under_launcher(how, handshake.is_some()), home.root()),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(actix_rt::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A core started by a launcher restarts by exiting: re-executing itself
/// would skip the launcher, which re-executes itself instead.
fn under_launcher(how: upgrade::Restart, launched: bool) -> upgrade::Restart {
    match how {
        upgrade::Restart::Exec if launched => upgrade::Restart::Exit,
        how => how,
    }
}

/// Takes the home's lock, refusing when another host holds it.
fn hold_lock(home: &Home) -> Result<std::fs::File, Error> {
    let lock_path = home.state_dir().join("host.lock");
    home.lock()
        .map_err(|source| Error::Io {
            path: lock_path.clone(),
            source,
        })?
        .ok_or_else(|| Error::AlreadyRunning {
            home: home.root().to_owned(),
            lock: lock_path,
        })
}

fn apply(home: &Home) -> Result<u8, Error> {
    let _lock = hold_lock(home)?;
    let layout = Layout::new(home.root());
    if let Some(j) = swap::recover(&layout)? {
        println!("finished an interrupted {:?}", j.procedure);
    }
    // The operator's own apply goes before the upgrade center's policy.
    if let Some(held) = banalytics_home::hold::of_staged(&layout) {
        banalytics_home::hold::release(&layout).map_err(|source| Error::Io {
            path: layout.state().join(banalytics_home::hold::HOLD_FILE),
            source,
        })?;
        println!(
            "the staged set was held ({}): hold lifted by this apply",
            held.waits_for
        );
    }
    match swap::apply(&layout)? {
        swap::Applied::Applied => {
            println!("staged set applied; it is on probation until the next `run` commits it");
            Ok(EXIT_OK)
        }
        swap::Applied::NothingStaged => {
            println!("no staged set to apply");
            Ok(EXIT_OK)
        }
        swap::Applied::WaitsForCommit | swap::Applied::Held => {
            let why = swap::staged_waits_for(&layout)?.unwrap_or_default();
            eprintln!("banalytics-box: nothing was changed: {why}");
            Ok(EXIT_FAILURE)
        }
    }
}

fn rollback(home: &Home) -> Result<u8, Error> {
    let _lock = hold_lock(home)?;
    let layout = Layout::new(home.root());
    match swap::rollback(&layout) {
        Ok(()) => {
            println!("the backup set is active again; the replaced set is now the backup");
            Ok(EXIT_OK)
        }
        Err(SwapError::NoBackup(dir)) => {
            eprintln!("banalytics-box: nothing to roll back to: {} holds no module set; nothing was changed", dir.display());
            Ok(EXIT_FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn verify(home: &Home) -> Result<u8, Error> {
    let layout = Layout::new(home.root());
    let bad = swap::verify(&layout)?;
    if bad.is_empty() {
        println!("every active file matches its recorded SHA-256 and size");
        return Ok(EXIT_OK);
    }
    for b in &bad {
        println!("{}: {}", b.path.display(), b.problem);
    }
    eprintln!(
        "banalytics-box: {} file(s) differ from the installed set's record",
        bad.len()
    );
    Ok(EXIT_FAILURE)
}

/// What stops the host (SIGTERM and SIGINT; on Windows Ctrl-C, Ctrl-Break,
/// the console's close and the stop event), caught from now on.
fn stop_signals() -> std::io::Result<crate::platform::StopSignals> {
    crate::platform::StopSignals::catch()
}

async fn wait_for_stop_signal(signals: crate::platform::StopSignals) -> &'static str {
    signals.recv().await
}

fn status(home: &Home, json: bool) -> Result<u8, Error> {
    let socket = home.control_socket();
    let answer = control::request(&socket, &Request::Status).map_err(|source| Error::Io {
        path: socket.clone(),
        source,
    })?;
    let mut data = match answer {
        Some(r) => r.data.unwrap_or_default(),
        None => offline_status(home)?,
    };
    crate::report::add_home(&mut data, &Layout::new(home.root()));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).expect("json value")
        );
    } else {
        print_status(&data);
    }
    Ok(EXIT_OK)
}

/// What `status` shows when no host runs: the configured components with
/// their IDs, all stopped.
fn offline_status(home: &Home) -> Result<serde_json::Value, Error> {
    // Listing the configured components needs no plugin loaded (that would
    // run library initialisers in a CLI process): any kind is listed.
    let config = BoxConfig::load_any_kind(home.root())?;
    let ids = ids::load(&home.ids_file()).map_err(|source| Error::Io {
        path: home.ids_file(),
        source,
    })?;
    let components: Vec<_> = config
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "kind": c.kind,
                "id": ids.get(&c.name).map(|u| u.to_string()),
                "state": "STOPPED",
                "restart_count": 0,
                "reason": null,
                "last_error": null,
            })
        })
        .collect();
    Ok(serde_json::json!({ "host": { "running": false }, "components": components }))
}

fn print_status(data: &serde_json::Value) {
    let running = data["host"]["running"].as_bool().unwrap_or(false);
    println!("host: {}", if running { "running" } else { "not running" });
    let sandbox = &data["host"]["sandbox"];
    match sandbox["level"].as_str() {
        Some("none") => println!(
            "sandbox: none (the kernel has no Landlock): isolated components run unsandboxed"
        ),
        Some(level) => println!(
            "sandbox: Landlock ABI {} for isolated components ({level})",
            sandbox["landlock_abi"]
        ),
        None => {}
    }
    let core = &data["core"];
    if let Some(version) = core["version"].as_str() {
        println!(
            "core: {version} ({}, sha256 {})",
            core["origin"].as_str().unwrap_or("?"),
            core["sha256"].as_str().unwrap_or("?")
        );
        if let Some(why) = core["fallback"].as_str() {
            println!("core: not the set's: {why}");
        }
    }
    println!("{}", crate::report::registration_line(data));
    println!(
        "{:<20} {:<26} {:<9} {:>8}  {:<36}  LAST ERROR",
        "COMPONENT", "KIND", "STATE", "RESTARTS", "ID"
    );
    for c in data["components"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<26} {:<9} {:>8}  {:<36}  {}",
            c["name"].as_str().unwrap_or("?"),
            match c["origin"].as_str() {
                Some(o) if o != "built-in" =>
                    format!("{} ({o})", c["kind"].as_str().unwrap_or("?")),
                _ => c["kind"].as_str().unwrap_or("?").to_owned(),
            },
            c["state"].as_str().unwrap_or("?"),
            c["restart_count"].as_u64().unwrap_or(0),
            c["id"].as_str().unwrap_or("-"),
            c["last_error"].as_str().unwrap_or("-"),
        );
    }
    print_refused_publications(data);
    for f in data["unreadable_files"].as_array().into_iter().flatten() {
        println!(
            "left as it is: {} is of format {}, newer than format {} this core knows",
            f["path"].as_str().unwrap_or("?"),
            f["format"],
            f["known"]
        );
    }
    print_sets(&data["upgrade"]);
    print_sync(data);
    print_waits(data);
}

/// The messages the host refused from each plugin component (bus
/// authority, `crate::authority`), per topic.
fn print_refused_publications(data: &serde_json::Value) {
    for c in data["components"].as_array().into_iter().flatten() {
        let Some(refused) = c["refused_publications"].as_object() else {
            continue;
        };
        if refused.is_empty() {
            continue;
        }
        let topics: Vec<String> = refused
            .iter()
            .map(|(topic, n)| format!("{topic} ({n})"))
            .collect();
        println!(
            "  {}: messages refused (topics it may not publish): {}",
            c["name"].as_str().unwrap_or("?"),
            topics.join(", ")
        );
    }
}

/// The upgrade center's last synchronisation (or refused request): its
/// state, trigger and result (`crate::report::sync_lines`).
fn print_sync(data: &serde_json::Value) {
    for line in crate::report::sync_lines(data) {
        println!("{line}");
    }
}

/// What a staged set waits for: the upgrade center's window or approval,
/// and the busy leases that defer the restart.
fn print_waits(data: &serde_json::Value) {
    for c in data["components"].as_array().into_iter().flatten() {
        if let Some(why) = c["details"]["sync"]["waits_for"].as_str() {
            println!("  {}: {why}", c["name"].as_str().unwrap_or("?"));
        }
    }
    for l in data["busy"]["leases"].as_array().into_iter().flatten() {
        println!(
            "busy: {} holds {:?} ({})",
            l["holder"].as_str().unwrap_or("?"),
            l["lease"].as_str().unwrap_or("?"),
            l["reason"].as_str().unwrap_or("")
        );
    }
    if let Some(until) = data["busy"]["restart_deferred_until_ms"].as_u64() {
        println!("  the restart waits for the busy leases, at most until {until} ms");
    }
}

/// The module sets part of `status` ([`swap::SetsReport`]).
fn print_sets(u: &serde_json::Value) {
    let list = |v: &serde_json::Value| {
        let names: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        if names.is_empty() {
            "(empty set)".to_owned()
        } else {
            names.join(", ")
        }
    };
    println!("modules: {}", list(&u["installed"]));
    if let Some(p) = u["probation"].as_object() {
        println!(
            "  on probation: start {}, last error: {}{}",
            p["boot_attempts"],
            p["last_error"].as_str().unwrap_or("none"),
            match p.get("excused").map(list) {
                Some(e) if e != "(empty set)" =>
                    format!(", excused (failing before the upgrade): {e}"),
                _ => String::new(),
            }
        );
    }
    if !u["staged"].is_null() {
        println!("staged: {}", list(&u["staged"]));
        if let Some(why) = u["staged_waits_for"].as_str() {
            println!("  waits: {why}");
        }
    }
    match u["backup"].is_null() {
        true => println!("backup: none (nothing to roll back to)"),
        false => println!("backup: {}", list(&u["backup"])),
    }
    if let Some(q) = u["quarantined"].as_object() {
        println!(
            "quarantined: {} (rolled back at {} ms: {})",
            list(&q["modules"]),
            q["rolled_back_ms"],
            q["reason"].as_str().unwrap_or("?")
        );
    }
}

fn upgrade(home: &Home, wait: bool, retry: bool) -> Result<u8, Error> {
    let asked = Asked {
        at_ms: banalytics_sdk::status::now_ms(),
        // A number of this request's own: the synchronisation that
        // answers it (started by it or already running) lists it.
        request: wait.then(|| uuid::Uuid::new_v4().as_u64_pair().0),
        retry,
    };
    let code = ask(
        home,
        &Request::Upgrade {
            retry,
            request: asked.request,
        },
    )?;
    if code != EXIT_OK || !wait {
        return Ok(code);
    }
    follow_sync(home, &asked)
}

/// An `upgrade --wait` request, to find the synchronisation that answers
/// it.
struct Asked {
    at_ms: u64,
    request: Option<u64>,
    retry: bool,
}

/// Whether `sync` (the upgrade center's `status`) answers `asked`, and
/// whether it was already running when asked.
fn answers(sync: &serde_json::Value, asked: &Asked) -> Option<bool> {
    match (sync["requests"].as_array(), asked.request) {
        (Some(requests), Some(request)) => {
            requests.iter().find(|r| r.as_u64() == Some(request))?;
            Some(sync["started_by"].as_u64() != Some(request))
        }
        // A host that does not know request numbers: the first
        // synchronisation that started about when asked (a second of
        // slack for the clocks of two processes).
        _ => {
            let started = sync["started_ms"].as_u64().unwrap_or(0);
            (started >= asked.at_ms.saturating_sub(1000)).then_some(false)
        }
    }
}

/// Polls `status` until the synchronisation that answers `asked` ends,
/// drawing its progress.
fn follow_sync(home: &Home, asked: &Asked) -> Result<u8, Error> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = (String::new(), 0u64);
    let mut told_joined = false;
    loop {
        let socket = home.control_socket();
        let data = control::request(&socket, &Request::Status)
            .map_err(|source| Error::Io {
                path: socket.clone(),
                source,
            })?
            .and_then(|r| r.data);
        let Some(data) = data else {
            bar.finish_and_clear();
            if Layout::new(home.root()).has_staged_set() {
                println!("synchronisation staged: the host stopped to restart and apply it");
                return Ok(EXIT_OK);
            }
            eprintln!("banalytics-box: the host stopped before the synchronisation ended");
            return Ok(EXIT_FAILURE);
        };
        let sync = data["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["kind"] == banalytics_upgrade_center::KIND_NAME)
            .map(|c| c["details"]["sync"].clone())
            .unwrap_or_default();
        let state = sync["state"].as_str().unwrap_or("?").to_owned();
        let (done, total) = (
            sync["done_bytes"].as_u64().unwrap_or(0),
            sync["total_bytes"].as_u64().unwrap_or(0),
        );
        if let Some(joined) = answers(&sync, asked) {
            if joined && !told_joined {
                told_joined = true;
                println!(
                    "a synchronisation was running (trigger: {}): following it",
                    sync["trigger"].as_str().unwrap_or("?")
                );
                if asked.retry {
                    println!("  --retry does not apply to it; ask again once it ended");
                }
            }
            if terminal {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(state.clone());
            } else {
                let decile = (done * 10).checked_div(total).unwrap_or(0);
                if (state.clone(), decile) != last_line {
                    println!("{state}: {done}/{total} bytes");
                    last_line = (state.clone(), decile);
                }
            }
            if sync["finished_ms"].as_u64().is_some() {
                bar.finish_and_clear();
                let result = sync["result"].as_str().unwrap_or("");
                println!("synchronisation {state}: {result}");
                return Ok(match state.as_str() {
                    "staged" | "up-to-date" => EXIT_OK,
                    _ => EXIT_FAILURE,
                });
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Sends a request that answers with a message; prints it.
fn ask(home: &Home, request: &Request) -> Result<u8, Error> {
    let socket = home.control_socket();
    match control::request(&socket, request).map_err(|source| Error::Io {
        path: socket.clone(),
        source,
    })? {
        None => {
            eprintln!(
                "banalytics-box: no host is running on {}; `run` starts every component",
                home.root().display()
            );
            Ok(EXIT_FAILURE)
        }
        Some(r) => {
            let message = r.message.unwrap_or_default();
            if r.ok {
                println!("{message}");
                Ok(EXIT_OK)
            } else {
                eprintln!("banalytics-box: {message}");
                Ok(EXIT_FAILURE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asked(request: Option<u64>) -> Asked {
        Asked {
            at_ms: 10_000,
            request,
            retry: false,
        }
    }

    #[test]
    fn a_request_follows_the_synchronisation_that_lists_it_started_or_joined() {
        let started = json!({"requests": [7], "started_by": 7, "started_ms": 10_000});
        assert_eq!(answers(&started, &asked(Some(7))), Some(false));
        // Running since long before the ask, joined by it.
        let joined = json!({"requests": [3, 7], "started_by": 3, "started_ms": 1});
        assert_eq!(answers(&joined, &asked(Some(7))), Some(true));
        let by_portal = json!({"requests": [7], "started_ms": 1});
        assert_eq!(answers(&by_portal, &asked(Some(7))), Some(true));
        // One that started just before the ask and does not list it: the
        // request came after it ended and starts the next.
        let before = json!({"requests": [], "started_ms": 9_999, "finished_ms": 10_001});
        assert_eq!(answers(&before, &asked(Some(7))), None);
    }

    #[test]
    fn with_a_host_that_knows_no_request_numbers_the_start_time_decides() {
        let old = json!({"started_ms": 9_500});
        assert_eq!(answers(&old, &asked(Some(7))), Some(false));
        let older = json!({"started_ms": 8_000});
        assert_eq!(answers(&older, &asked(Some(7))), None);
    }
}
