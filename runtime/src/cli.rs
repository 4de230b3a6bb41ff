//! The command line: `run`, `status`, `restart`.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::info;

use crate::{
    config::BoxConfig,
    control::{self, Request},
    host::Host,
    ids, logging,
    registry::Registry,
    Error, Home, EXIT_FAILURE, EXIT_OK,
};

/// The Banalytics box host.
#[derive(Debug, Parser)]
#[command(name = "banalytics-box", version)]
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
    Upgrade,
    /// Restart a component that is stopped or in ERROR.
    Restart {
        /// Component instance name, as in box.toml.
        component: String,
    },
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = Home::new(&cli.home.clone().unwrap_or_else(|| PathBuf::from(".")));
    let result = match cli.command {
        Command::Run => run(&home),
        Command::Status { json } => status(&home, json),
        Command::Upgrade => ask(&home, &Request::Upgrade),
        Command::Restart { component } => ask(
            &home,
            &Request::Restart {
                component: component.clone(),
            },
        ),
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
    let (registry, plugins) = Registry::builtin().with_plugins(&home.root().join("modules"));
    let config = BoxConfig::load(home.root(), &registry.names())?;
    let lock_path = home.state_dir().join("host.lock");
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let _lock =
        home.lock()
            .map_err(io(lock_path.clone()))?
            .ok_or_else(|| Error::AlreadyRunning {
                home: home.root().to_owned(),
                lock: lock_path,
            })?;
    logging::init(&config.log);
    plugins.log();
    let system = actix_rt::System::new();
    let code = system.block_on(async {
        let host = Arc::new(Host::build(home, &config, &registry)?);
        let socket = home.control_socket();
        let listener = control::bind(&socket).map_err(io(socket.clone()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let server = actix_rt::spawn(control::serve(listener, host.clone(), shutdown_rx));
        info!(home = %home.root().display(), components = config.components.len(), pid = std::process::id(), "host starting");
        host.start_all().await;
        info!("host running");
        let signal = wait_for_stop_signal().await.map_err(io(PathBuf::from("signal")))?;
        info!(%signal, "stopping");
        let _ = shutdown_tx.send(true);
        let _ = server.await;
        let _ = std::fs::remove_file(&socket);
        match Arc::try_unwrap(host) {
            Ok(host) => host.stop_all().await,
            Err(_) => tracing::warn!("control connections still open; stopping without them"),
        }
        info!("host stopped");
        Ok::<u8, Error>(EXIT_OK)
    })?;
    actix_rt::System::current().stop();
    Ok(code)
}

async fn wait_for_stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn status(home: &Home, json: bool) -> Result<u8, Error> {
    let socket = home.control_socket();
    let answer = control::request(&socket, &Request::Status).map_err(|source| Error::Io {
        path: socket.clone(),
        source,
    })?;
    let data = match answer {
        Some(r) => r.data.unwrap_or_default(),
        None => offline_status(home)?,
    };
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
    let (registry, _) = Registry::builtin().with_plugins(&home.root().join("modules"));
    let config = BoxConfig::load(home.root(), &registry.names())?;
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
    println!(
        "{:<20} {:<26} {:<9} {:>8}  {:<36}  LAST ERROR",
        "COMPONENT", "KIND", "STATE", "RESTARTS", "ID"
    );
    for c in data["components"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<26} {:<9} {:>8}  {:<36}  {}",
            c["name"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["state"].as_str().unwrap_or("?"),
            c["restart_count"].as_u64().unwrap_or(0),
            c["id"].as_str().unwrap_or("-"),
            c["last_error"].as_str().unwrap_or("-"),
        );
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
