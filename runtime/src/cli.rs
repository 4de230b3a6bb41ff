//! The command line: parses the arguments and calls the library. The
//! commands:
//!
//! - `run`: the host ([`crate::host::run`]), until SIGTERM or SIGINT or a
//!   restart;
//! - `status [--json]`: component states, module sets, the core, the last
//!   synchronisation ([`status`]);
//! - `upgrade [--wait] [--retry]`: ask the running host to synchronise
//!   now; `--wait` follows it to its end ([`follow`]);
//! - `approve`: apply the staged set now, whatever it waits for;
//! - `discard`: drop the staged set, its hold with it, and tell the portal
//!   (with the host running or stopped; [`crate::discard`]);
//! - `apply`, `rollback`: the staged set applied, or the backup set made
//!   active again, with the host stopped;
//! - `verify`: every active file against its recorded SHA-256 and size;
//! - `console-url`: a one-time login link to the box's web console;
//! - `restart NAME`: restart a stopped or failed component;
//! - `service install|uninstall|run` (Windows): the box as the service
//!   BanalyticsBox ([`crate::service`]);
//! - `plugin-child` (hidden): an isolated component's process.
//!
//! A command is a variant of [`Command`] and an arm of [`main`]'s match
//! that calls one function.

mod follow;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use banalytics_home::{
    swap::{self, SwapError},
    Layout,
};

use crate::{
    control::{self, Request},
    host::{self, home_lock},
    launcher, Error, Home, EXIT_FAILURE, EXIT_OK,
};

/// The Banalytics box host.
#[derive(Debug, Parser)]
#[command(name = "banalytics-box", version = launcher::BUILD_VERSION)]
pub(crate) struct Cli {
    /// The box home [default: $BANALYTICS_HOME, else the current directory]
    #[arg(long, global = true, env = "BANALYTICS_HOME")]
    pub home: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// The Windows service BanalyticsBox: install, uninstall, or run as it.
    #[cfg(windows)]
    Service {
        /// What to do.
        #[command(subcommand)]
        command: crate::service::ServiceCommand,
    },
    /// The child process of an isolated component (started by the host).
    #[command(hide = true)]
    PluginChild(crate::isolation::child::ChildArgs),
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginChild(args) = &cli.command {
        return ExitCode::from(crate::isolation::child::main(args));
    }
    let home = Home::new(&cli.home.clone().unwrap_or_else(|| PathBuf::from(".")));
    let result = match cli.command {
        Command::Run => host::run(&home),
        Command::Status { json } => status::status(&home, json),
        Command::Upgrade { wait, retry } => upgrade(&home, wait, retry),
        Command::Approve => ask(&home, &Request::Approve),
        Command::Apply => apply(&home),
        Command::Discard => crate::discard::command(&home, home_lock),
        Command::ConsoleUrl => crate::console::url_command(&home),
        Command::Rollback => rollback(&home),
        Command::Verify => verify(&home),
        Command::Restart { component } => ask(
            &home,
            &Request::Restart {
                component: component.clone(),
            },
        ),
        #[cfg(windows)]
        Command::Service { command } => service(&home, command),
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

#[cfg(windows)]
fn service(home: &Home, command: crate::service::ServiceCommand) -> Result<u8, Error> {
    use crate::service::{self, ServiceCommand};
    match command {
        ServiceCommand::Install { account, password } => {
            service::install(home, account.as_deref(), password.as_deref())
        }
        ServiceCommand::Uninstall => service::uninstall(),
        ServiceCommand::Run => service::run(home),
    }
}

fn apply(home: &Home) -> Result<u8, Error> {
    let _lock = home_lock(home)?;
    let layout = Layout::new(home.root());
    if let Some(j) = swap::recover(&layout)? {
        println!("finished an interrupted {:?}", j.procedure);
    }
    // The operator's own apply goes before the upgrade center's policy.
    if let Some(held) = banalytics_home::hold::of_staged(&layout) {
        banalytics_home::hold::lift(&layout).map_err(|source| Error::Io {
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
    let _lock = home_lock(home)?;
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

fn upgrade(home: &Home, wait: bool, retry: bool) -> Result<u8, Error> {
    let asked = follow::Asked {
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
    follow::follow_sync(home, &asked)
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
