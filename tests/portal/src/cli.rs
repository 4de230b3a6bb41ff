//! The `banalytics-portal` command line: `serve` runs a portal; the other
//! commands are clients of a running portal's admin API.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use super::{
    protocol::module_label,
    rollout::{Rollout, RolloutSpec, RolloutState, WaveSize, DEFAULT_REPORT_TIMEOUT_MS},
    AdminClient, Faults, ModuleType, Portal, PortalConfig, PublishRequest, TlsFiles,
};

/// The reference Banalytics portal: the portal protocol on
/// `/portal-integration` and a Maven-layout repository on `/repo/`.
#[derive(Debug, Parser)]
#[command(name = "banalytics-portal", version)]
pub struct Cli {
    /// The data folder: `repo/`, `portal.db`, `portal.addr`.
    #[arg(
        long,
        global = true,
        env = "BANALYTICS_PORTAL_DATA",
        default_value = "."
    )]
    pub data: PathBuf,
    /// A running portal's URL; default: read from `DATA/portal.addr`.
    #[arg(long, global = true)]
    pub portal: Option<String>,
    /// The database of `serve` and `keys`: `sqlite:PATH` or
    /// `postgres://USER:PASSWORD@HOST/DB`; default: the SQLite file
    /// `DATA/portal.db`.
    #[arg(
        long,
        global = true,
        env = "BANALYTICS_PORTAL_DATABASE",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// The admin token. Clients send it; `serve` stores its hash as the
    /// admin token (otherwise `serve` makes one at the first start and
    /// prints it once).
    #[arg(
        long,
        global = true,
        env = "BANALYTICS_PORTAL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM certificates the commands trust for an https portal, besides
    /// the webpki roots (a portal whose certificate comes from a private
    /// CA).
    #[arg(long, global = true, env = "BANALYTICS_PORTAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Fault switches of the repository, for tests.
#[derive(Debug, Clone, Default, Args)]
pub struct FaultArgs {
    /// Delay before answering each repository request, in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Cap on each response's body rate, in bytes per second.
    #[arg(long)]
    pub bandwidth: Option<u64>,
    /// Abort a response after this many body bytes.
    #[arg(long)]
    pub cut_after_bytes: Option<u64>,
    /// Cut only the next matching response.
    #[arg(long)]
    pub cut_once: bool,
    /// Cut only paths ending with this.
    #[arg(long)]
    pub cut_path_suffix: Option<String>,
    /// Ignore `Range`: always answer 200 with the whole file.
    #[arg(long)]
    pub ignore_range: bool,
    /// Redirect artifact requests to this base URL (`302`, path kept).
    #[arg(long)]
    pub redirect_to: Option<String>,
}

impl From<FaultArgs> for Faults {
    fn from(a: FaultArgs) -> Faults {
        Faults {
            latency_ms: a.latency_ms,
            bandwidth_bytes_per_s: a.bandwidth,
            cut_after_bytes: a.cut_after_bytes,
            cut_once: a.cut_once,
            cut_path_suffix: a.cut_path_suffix,
            ignore_range: a.ignore_range,
            redirect_to: a.redirect_to,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the portal until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The state file of a portal before the database, imported at
        /// the first start on an empty database; default
        /// `DATA/portal-state.json`.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// How long the status history keeps a status: `30d`, `12h`,
        /// `90m`, `3600s`.
        #[arg(long, default_value = "30d")]
        status_retention: super::history::Retention,
        /// Serve https and wss with this PEM certificate chain (leaf
        /// first); with `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key; with `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Let boxes of any environment UUID connect without a secret, as
        /// the original portal does: for a lab only (a warning at start).
        /// Registered environments still need their secret.
        #[arg(long)]
        open_registration: bool,
        /// How many earlier builds of a native module's platform get a
        /// patch to each new build at publish; 0 publishes none.
        #[arg(long, default_value_t = super::patch::DEFAULT_PATCH_VERSIONS)]
        patch_versions: usize,
        /// Fault switches at start.
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Put a module into the repository (with `.sha256` files) and record it.
    Publish {
        /// groupId.
        #[arg(long)]
        group: String,
        /// artifactId.
        #[arg(long)]
        artifact: String,
        /// version.
        #[arg(long)]
        version: String,
        /// `core` or `component`.
        #[arg(long = "type")]
        module_type: ModuleType,
        /// The main artifact (not with `--platform`).
        #[arg(
            long,
            required_unless_present = "platform",
            conflicts_with = "platform"
        )]
        file: Option<PathBuf>,
        /// A native module's build for one platform, `TRIPLE=FILE`
        /// (repeat per platform); the packaging must be native (`so`,
        /// `bin`, ...).
        #[arg(long, value_parser = parse_platform)]
        platform: Vec<(String, PathBuf)>,
        /// The debug information split off a platform's build,
        /// `TRIPLE=FILE` (`packaging/dist.sh` makes it): published with the
        /// `debug` classifier, never fetched by a box.
        #[arg(long, value_parser = parse_platform)]
        debug: Vec<(String, PathBuf)>,
        /// Its extension (default `jar`).
        #[arg(long)]
        packaging: Option<String>,
        /// The dependencies package (`-bin.zip`).
        #[arg(long)]
        bin: Option<PathBuf>,
        /// The model package (`-model.zip`).
        #[arg(long)]
        model: Option<PathBuf>,
        /// For a core: a launcher handshake version its executable speaks
        /// (repeat per version; the module object's `launcherHandshakes`).
        #[arg(long = "launcher-handshake")]
        launcher_handshake: Vec<u32>,
    },
    /// List published modules.
    Modules {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an environment's whole target set.
    Assign {
        /// The environment UUID.
        #[arg(long)]
        env: String,
        /// `groupId:artifactId:version`, each published; none clears the set.
        coordinates: Vec<String>,
    },
    /// Answer an environment with module objects as given, unchecked (to
    /// test the box's refusal of a bad set); `assign` undoes it.
    AssignRaw {
        /// The environment UUID.
        #[arg(long)]
        env: String,
        /// A JSON array of module objects.
        #[arg(
            long,
            conflicts_with = "json_file",
            required_unless_present = "json_file"
        )]
        json: Option<String>,
        /// A file holding that array.
        #[arg(long)]
        json_file: Option<PathBuf>,
    },
    /// Send `EVT_SYNC_SOFT` to an environment's live connections; a box
    /// connected nowhere is sent it when it connects.
    Sync {
        /// The environment UUID.
        #[arg(long)]
        env: String,
    },
    /// Connected and registered boxes and every status they reported;
    /// `add`, `revoke`, `rotate-secret` manage the registrations.
    Environments {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// What to do; none lists.
        #[command(subcommand)]
        action: Option<EnvironmentsCommand>,
    },
    /// Start a rollout: a target set to a group, in waves.
    RolloutStart {
        /// A name for people.
        #[arg(long, default_value = "rollout")]
        name: String,
        /// An environment of the group (repeat, in wave order).
        #[arg(long = "env", required = true)]
        envs: Vec<String>,
        /// A wave size: `N` boxes, `P%` of the group, or `rest` (repeat).
        #[arg(long = "wave", value_parser = parse_wave, default_values = ["1", "10%", "rest"])]
        waves: Vec<WaveSize>,
        /// Halt when more than this percentage of a wave failed.
        #[arg(long, default_value_t = 0)]
        threshold: u8,
        /// Seconds a box has to report a verdict after it was assigned.
        #[arg(long, default_value_t = DEFAULT_REPORT_TIMEOUT_MS / 1000)]
        timeout_s: u64,
        /// `groupId:artifactId:version`, each published: the target set.
        #[arg(required = true)]
        coordinates: Vec<String>,
    },
    /// List rollouts, newest first.
    Rollouts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a halted rollout (its failures so far are accepted).
    RolloutResume {
        /// The rollout's number.
        id: u64,
    },
    /// Cancel a rollout: no further box is assigned.
    RolloutCancel {
        /// The rollout's number.
        id: u64,
    },
    /// Send an arbitrary text frame to an environment (tests).
    SendRaw {
        /// The environment UUID.
        #[arg(long)]
        env: String,
        /// The frame.
        #[arg(
            long,
            conflicts_with = "text_file",
            required_unless_present = "text_file"
        )]
        text: Option<String>,
        /// A file holding the frame (for frames too big for an argument).
        #[arg(long)]
        text_file: Option<PathBuf>,
    },
    /// Bytes and requests per repository path; connection attempts.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Zero the counters after printing them.
        #[arg(long)]
        reset: bool,
    },
    /// The repository's TUF keys and metadata.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Show the fault switches, or replace them all (`--clear` for none).
    Faults {
        /// Switch every fault off.
        #[arg(long)]
        clear: bool,
        /// The new switches (unset ones are off).
        #[command(flatten)]
        faults: FaultArgs,
    },
}

/// `environments` subcommands: the registrations ([`super::registry`]).
#[derive(Debug, Subcommand)]
pub enum EnvironmentsCommand {
    /// Register an environment: prints its UUID and its secret, once (the
    /// box's `environmentUuid` and `environmentSecret` in
    /// `config/device-registration.properties`).
    Add {
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
        /// The UUID of a box that has one already (default: a new one).
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Revoke an environment: its live connection is closed and every
    /// later one refused.
    Revoke {
        /// The environment UUID.
        env: String,
    },
    /// Give an environment a new secret, sent to its box over the link
    /// (now, or at its next connection); the old one works until the box
    /// confirms it stored the new one.
    RotateSecret {
        /// The environment UUID.
        env: String,
    },
}

/// `keys` subcommands: the repository's TUF keys ([`super::tuf`]).
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the keys of every role and the first root (`DATA/tuf/root.json`,
    /// the file boxes pin as `trust_root`). Works on the data folder; no
    /// portal needs to run.
    Init {
        /// Root keys to create.
        #[arg(long, default_value_t = 1)]
        root_keys: usize,
        /// Root signatures required.
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        /// Keys per online role (targets, snapshot, timestamp).
        #[arg(long, default_value_t = 1)]
        online_keys: usize,
        /// Signatures required per online role.
        #[arg(long, default_value_t = 1)]
        online_threshold: u64,
        /// Where the root keys go (default `DATA/tuf/offline`): a folder
        /// that can be kept offline.
        #[arg(long)]
        root_key_dir: Option<PathBuf>,
        /// Targets and snapshot lifetime in seconds.
        #[arg(long, default_value_t = 30 * 86_400)]
        targets_lifetime_s: i64,
        /// Timestamp lifetime in seconds (re-signed at half-life while the
        /// portal runs).
        #[arg(long, default_value_t = 86_400)]
        timestamp_lifetime_s: i64,
        /// Do not refresh the timestamp (tests of expiry).
        #[arg(long)]
        no_refresh: bool,
    },
    /// Sign the repository's published artifacts now (after `init` on a
    /// repository that already has modules). The portal must not run.
    Sign,
    /// New keys for every role and a root of the next version, signed by
    /// the old and the new root keys. The portal must not run.
    RotateRoot,
    /// The next version of the same root (same keys) with a new lifetime,
    /// signed by the root keys (their folder must be mounted). A running
    /// portal does this by itself in the root's last quarter when the root
    /// keys are at hand, and warns when they are not. The portal must not
    /// run.
    RenewRoot,
}

/// Parses the arguments and runs the command.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let client = || -> Result<AdminClient> {
        let mut c = match &cli.portal {
            Some(url) => AdminClient::new(url),
            None => AdminClient::from_data_dir(&cli.data)?,
        };
        if let Some(path) = &cli.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --ca-file {}", path.display()))?;
            c = c.with_ca_pem(&pem)?;
        }
        Ok(c.with_token(cli.token.as_deref()))
    };
    match cli.command {
        Command::Serve {
            listen,
            ref state_file,
            status_retention,
            ref tls_cert,
            ref tls_key,
            open_registration,
            patch_versions,
            ref faults,
        } => {
            let tls = tls_cert
                .clone()
                .zip(tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key });
            serve(PortalConfig {
                data_dir: cli.data.clone(),
                listen,
                state_file: state_file.clone(),
                database: cli.database.clone(),
                status_retention,
                faults: faults.clone().into(),
                admin_token: cli.token.clone(),
                tls,
                open_registration,
                patch_versions,
            })
            .await
        }
        Command::Publish {
            ref group,
            ref artifact,
            ref version,
            module_type,
            ref file,
            ref platform,
            ref debug,
            ref packaging,
            ref bin,
            ref model,
            ref launcher_handshake,
        } => {
            let abs = |p: &PathBuf| {
                std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
            };
            let req = PublishRequest {
                group_id: group.clone(),
                artifact_id: artifact.clone(),
                version: version.clone(),
                module_type,
                file: file.as_ref().map(abs).transpose()?.unwrap_or_default(),
                packaging: packaging.clone(),
                bin: bin.as_ref().map(abs).transpose()?,
                model: model.as_ref().map(abs).transpose()?,
                platforms: platform
                    .iter()
                    .map(|(triple, file)| Ok((triple.clone(), abs(file)?)))
                    .collect::<Result<_>>()?,
                debug: debug
                    .iter()
                    .map(|(triple, file)| Ok((triple.clone(), abs(file)?)))
                    .collect::<Result<_>>()?,
                launcher_handshakes: (!launcher_handshake.is_empty())
                    .then(|| launcher_handshake.clone()),
            };
            let module = client()?.publish(&req).await?;
            println!("{}", serde_json::to_string_pretty(&module)?);
            Ok(())
        }
        Command::Keys { ref action } => keys(&cli.data, cli.database.as_deref(), action),
        Command::Modules { json } => {
            let modules = client()?.modules().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&modules)?);
            } else {
                for m in modules {
                    println!(
                        "{} {:?} {} {} bytes sha256 {}",
                        m.coordinates(),
                        m.module_type,
                        m.upload_time,
                        m.size,
                        m.sha256
                    );
                }
            }
            Ok(())
        }
        Command::Assign {
            ref env,
            ref coordinates,
        } => {
            let modules = client()?.assign(env, coordinates).await?;
            println!("assigned {} module(s) to {env}", modules.len());
            Ok(())
        }
        Command::AssignRaw {
            ref env,
            ref json,
            ref json_file,
        } => {
            let text = match (json, json_file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, None) => bail!("give --json or --json-file"),
            };
            let modules: Vec<Value> =
                serde_json::from_str(&text).context("--json must be an array of objects")?;
            let n = modules.len();
            client()?.assign_raw(env, modules).await?;
            println!("assigned {n} raw module object(s) to {env}");
            Ok(())
        }
        Command::Sync { ref env } => {
            let n = client()?.sync(env).await?;
            if n == 0 {
                println!("environment {env} has no live connection to this portal: EVT_SYNC_SOFT goes out when it connects (or through the portal it is connected to)");
            } else {
                println!("sent EVT_SYNC_SOFT to {n} connection(s) of {env}");
            }
            Ok(())
        }
        Command::Environments {
            action: Some(ref action),
            ..
        } => environments(&client()?, action).await,
        Command::Environments { json, action: None } => {
            let envs = client()?.environments().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&envs)?);
                return Ok(());
            }
            for e in envs {
                let registration = match (e.registered, e.revoked) {
                    (false, _) => "unregistered".to_string(),
                    (true, true) => "revoked".to_string(),
                    (true, false) if e.rotation_pending => "registered (rotation pending)".into(),
                    (true, false) => "registered".to_string(),
                };
                println!(
                    "{}{} {registration} connected={} live={} connections={} requests={} assigned=[{}]",
                    if e.environment_uuid.is_empty() {
                        "(no uuid)"
                    } else {
                        &e.environment_uuid
                    },
                    if e.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", e.name)
                    },
                    e.connected,
                    e.live_connections,
                    e.connections,
                    e.module_requests,
                    e.assigned.join(", ")
                );
                for (i, s) in e.statuses.iter().enumerate() {
                    println!(
                        "  {:>3}. {} {}{}",
                        i + 1,
                        s.status.as_str().unwrap_or("?"),
                        module_label(&s.module),
                        s.status_message
                            .as_str()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::RolloutStart {
            ref name,
            ref envs,
            ref waves,
            threshold,
            timeout_s,
            ref coordinates,
        } => {
            let r = client()?
                .start_rollout(&RolloutSpec {
                    name: name.clone(),
                    target: coordinates.clone(),
                    environments: envs.clone(),
                    waves: waves.clone(),
                    failure_threshold_percent: threshold.min(100),
                    report_timeout_ms: timeout_s.saturating_mul(1000),
                })
                .await?;
            print_rollout(&r);
            Ok(())
        }
        Command::Rollouts { json } => {
            let rollouts = client()?.rollouts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rollouts)?);
            } else {
                rollouts.iter().for_each(print_rollout);
            }
            Ok(())
        }
        Command::RolloutResume { id } => {
            print_rollout(&client()?.resume_rollout(id).await?);
            Ok(())
        }
        Command::RolloutCancel { id } => {
            print_rollout(&client()?.cancel_rollout(id).await?);
            Ok(())
        }
        Command::SendRaw {
            ref env,
            ref text,
            ref text_file,
        } => {
            let text = match (text, text_file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, None) => bail!("give --text or --text-file"),
            };
            let n = client()?.send_raw(env, &text).await?;
            println!("sent {} bytes to {n} connection(s) of {env}", text.len());
            Ok(())
        }
        Command::Stats { json, reset } => {
            let c = client()?;
            let stats = c.stats().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "uptime {} ms, {} connection attempt(s)",
                    stats.uptime_ms, stats.connection_attempts
                );
                for (path, p) in &stats.paths {
                    println!("{path} requests={} bytes={}", p.requests, p.bytes);
                }
                println!(
                    "{} connection(s) refused (unknown environment, wrong secret, revoked)",
                    stats.refused_connections
                );
                for (address, n) in &stats.refused_by_address {
                    println!("refused from {address}: {n}");
                }
            }
            if reset {
                c.reset_stats().await?;
            }
            Ok(())
        }
        Command::Faults { clear, ref faults } => {
            let c = client()?;
            let given: Faults = faults.clone().into();
            let current = if clear || given != Faults::default() {
                c.set_faults(&given).await?
            } else {
                c.faults().await?
            };
            println!("{}", serde_json::to_string_pretty(&current)?);
            Ok(())
        }
    }
}

async fn environments(client: &AdminClient, action: &EnvironmentsCommand) -> Result<()> {
    match action {
        EnvironmentsCommand::Add { name, uuid } => {
            let r = client.add_environment(name, uuid.as_deref()).await?;
            println!("environmentUuid={}", r.environment_uuid);
            println!("environmentSecret={}", r.environment_secret);
            eprintln!(
                "the secret is shown once (the portal keeps only its SHA-256): put both lines in the box's config/device-registration.properties"
            );
        }
        EnvironmentsCommand::Revoke { env } => {
            let n = client.revoke_environment(env).await?;
            println!("revoked {env}; closed {n} connection(s)");
        }
        EnvironmentsCommand::RotateSecret { env } => {
            let n = client.rotate_secret(env).await?;
            if n == 0 {
                println!("new secret for {env}: the box gets it at its next connection (the old one works until it confirms)");
            } else {
                println!("new secret for {env} sent to {n} connection(s); the old one works until the box confirms");
            }
        }
    }
    Ok(())
}

fn print_rollout(r: &Rollout) {
    let halted = match &r.state {
        RolloutState::Halted { reason } => format!(" ({reason})"),
        _ => String::new(),
    };
    println!(
        "rollout {} {:?} {}{halted}: wave {} of {}, {} of {} installed, {} failed; target {}",
        r.id,
        r.spec.name,
        r.state.as_str(),
        (r.current_wave + 1).min(r.waves.len()),
        r.waves.len(),
        r.installed(),
        r.boxes.len(),
        r.failed(),
        r.spec.target.join(", ")
    );
}

fn parse_wave(value: &str) -> std::result::Result<WaveSize, String> {
    WaveSize::parse(value).ok_or_else(|| format!("{value:?} is not N, P% or rest"))
}

fn keys(data: &std::path::Path, database: Option<&str>, action: &KeysCommand) -> Result<()> {
    let store = || {
        let db = super::db::open_for(data, database).context("opening the portal's database")?;
        super::import::import_once(&db, data, &data.join("portal-state.json"))
            .context("importing the state of an older portal")?;
        super::store::Store::open(std::sync::Arc::new(db), data.join("repo"))
            .context("opening the portal state")
    };
    match action {
        KeysCommand::Init {
            root_keys,
            root_threshold,
            online_keys,
            online_threshold,
            root_key_dir,
            targets_lifetime_s,
            timestamp_lifetime_s,
            no_refresh,
        } => {
            let opts = super::tuf::KeysInit {
                root_keys: *root_keys,
                root_threshold: *root_threshold,
                online_keys: *online_keys,
                online_threshold: *online_threshold,
                root_key_dir: root_key_dir.clone(),
                lifetimes: super::tuf::Lifetimes {
                    targets_s: *targets_lifetime_s,
                    timestamp_s: *timestamp_lifetime_s,
                    refresh: !no_refresh,
                    ..Default::default()
                },
            };
            let root = super::tuf::keys_init(data, &opts)?;
            store()?.sign_tuf()?;
            println!("{}", root.display());
        }
        KeysCommand::Sign => store()?.sign_tuf()?,
        KeysCommand::RotateRoot => {
            let version = store()?.rotate_tuf_root()?;
            println!("root version {version}");
        }
        KeysCommand::RenewRoot => {
            let version = store()?.renew_tuf_root()?;
            println!("root version {version}");
        }
    }
    Ok(())
}

async fn serve(config: PortalConfig) -> Result<()> {
    let handle = Portal::start(config).await?;
    // Before the `listening` line: a parent may signal as soon as it reads it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    // One write: a parent that reads only the `listening` line and closes
    // the pipe must not make a later line fail with EPIPE.
    let mut lines = format!(
        "listening {}\nconsole {}\n",
        handle.url(),
        handle.console_url()
    );
    if let Some(token) = handle.new_admin_token() {
        lines.push_str(&format!(
            "admin token {token} (shown once: only its SHA-256 is kept, in {})\n",
            handle.data_dir().join("admin-token.sha256").display()
        ));
    }
    {
        let mut out = std::io::stdout().lock();
        out.write_all(lines.as_bytes())?;
        out.flush()?;
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    handle.shutdown().await;
    Ok(())
}

/// `TRIPLE=FILE` of `publish --platform`.
fn parse_platform(value: &str) -> std::result::Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((triple, file)) if !triple.is_empty() && !file.is_empty() => {
            Ok((triple.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{value:?} is not TRIPLE=FILE")),
    }
}
