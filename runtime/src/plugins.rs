//! Component plugins: loading the plugin libraries of the active module set
//! in `{home}/modules`, and the host-side proxy that runs a plugin's
//! component through the C ABI of `banalytics_sdk::plugin` (whose docs
//! describe the ABI, who frees what and the threads).
//!
//! Which files are plugins ([`set_libraries`]): the main artifact of each
//! module of type `component` that the set's `modules-info.properties`
//! lists, when it has the platform's library extension (its name from the
//! set's hash record, else `{groupId}-{artifactId}-{version}.{ext}`). No
//! other file is ever opened: not a library a dependencies package
//! (`-bin.zip`) extracted into the folder, not a stray file.
//!
//! Loading, per library, in name order:
//! 1. Its identity record, read from the file without loading it
//!    (`FileIdentity::read_checked`): a library without one, of another ABI
//!    version or of another build (SDK version, rustc version, target) is
//!    refused with the expected and the found values before `dlopen`, so
//!    none of its code runs.
//! 2. The kinds the record declares: one that is built in or exported by a
//!    library loaded before is refused, naming both; the library is refused
//!    as a whole, still before `dlopen`.
//! 3. Open it with `libloading` (`RTLD_NOW | RTLD_LOCAL`), then
//!    `banalytics_plugin_abi_version`, which must be the host's before any
//!    other function is called.
//! 4. The other symbols, then the identity the code answers, which must be
//!    the host's build and declare the kinds of the record. Each accepted
//!    kind becomes a `ComponentKind` whose factory holds the loaded plugin:
//!    nothing process-wide maps kind names to plugins.
//! 5. `init` with the host's log: the plugin's `tracing` events become the
//!    host's, with a `plugin` field naming the file.
//!
//! A refused library never stops the host: its kinds are unknown, so a
//! `box.toml` that names them is refused like any unknown kind. The upgrade
//! center's preflight (`crate::preflight`) runs steps 1 and 2 on a staged
//! set, so a set the host would refuse is not staged.
//!
//! **Libraries are never unloaded** (the `Library` is leaked): a plugin's threads,
//! thread-locals and statics (its tracing subscriber, its panic hook) live as
//! long as the process. A new version takes effect at the next start.
//!
//! The flags are Unix ones; on Windows `LoadLibraryExW` does the same by
//! default (imports resolved at load, symbols per DLL).

use std::{
    ffi::c_void,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    task::{Context, Poll, Wake},
    time::{Duration, Instant},
};

use banalytics_home::{
    coords::{self, Coords, Module, ModuleType},
    installed::{self, MODULES_INFO_FILE},
    record::{SetRecord, RECORD_FILE},
};
use banalytics_sdk::{
    component::{Component, ComponentContext, ComponentInit, ComponentKind},
    plugin::{
        Buf, Bytes, FileIdentity, HostCallbacks, HostLog, Identity, InitMessage, KindInfo,
        StartMessage, StateMessage, ABI_VERSION, LEVEL_DEBUG, LEVEL_ERROR, LEVEL_INFO, LEVEL_TRACE,
        LEVEL_WARN, RC_CLOSED, RC_ERROR, RC_OK,
    },
    Bus, ComponentError, StatusBoard, SubscriberId,
};
use tracing::{info, warn};

use crate::{
    authority::{self, Publisher},
    isolation::{Isolation, Spawner},
};

/// The symbol every plugin exports first; its signature never changes.
pub(crate) const ABI_SYMBOL: &str = "banalytics_plugin_abi_version";

type AbiVersionFn = extern "C" fn() -> u32;
type IdentityFn = unsafe extern "C" fn(*mut Buf) -> i32;
pub(crate) type InitFn = unsafe extern "C" fn(*const HostLog) -> i32;
type CreateFn =
    unsafe extern "C" fn(Bytes, Bytes, *const HostCallbacks, *mut *mut c_void, *mut Buf) -> i32;
type StartFn = unsafe extern "C" fn(*mut c_void, Bytes, *mut Buf) -> i32;
type InstanceFn = unsafe extern "C" fn(*mut c_void) -> i32;
type DeliverFn = unsafe extern "C" fn(*mut c_void, Bytes, Bytes) -> i32;
type FreeBufFn = unsafe extern "C" fn(Buf);

/// The functions of one loaded plugin.
pub(crate) struct Api {
    pub(crate) create: CreateFn,
    pub(crate) start: StartFn,
    pub(crate) stop: InstanceFn,
    pub(crate) deliver: DeliverFn,
    pub(crate) restart_failed: InstanceFn,
    pub(crate) destroy: InstanceFn,
    free_buf: FreeBufFn,
}

/// A loaded, accepted plugin library, shared by its kinds' factories and
/// their instances (and held for the process by its log, see `load`).
pub(crate) struct Plugin {
    pub(crate) path: PathBuf,
    pub(crate) label: String,
    pub(crate) api: Api,
}

impl Plugin {
    /// Takes a buffer the plugin returned: copies it, frees it there.
    pub(crate) fn take(&self, buf: Buf) -> Vec<u8> {
        // SAFETY: a live buffer from this plugin, freed right after.
        let bytes = unsafe { buf.as_slice() }.to_vec();
        // SAFETY: the plugin's own buffer, returned once.
        unsafe { (self.api.free_buf)(buf) };
        bytes
    }

    pub(crate) fn message(&self, code: i32, err: Buf) -> String {
        let text = String::from_utf8_lossy(&self.take(err)).into_owned();
        match code {
            RC_CLOSED => format!("plugin {}: instance is gone", self.path.display()),
            _ => text,
        }
    }
}

/// What the factory of one plugin kind holds: the plugin, the kind's
/// declaration (its topics), and the spawner of isolated instances' child
/// processes (one per host, shared by every kind).
pub(crate) struct KindEntry {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) info: KindInfo,
    #[cfg_attr(windows, allow(dead_code))] // isolation is Unix-only for now
    pub(crate) spawner: Arc<Spawner>,
}

/// A plugin library of a module set: the main artifact of one of its
/// component modules (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetLibrary {
    /// The module.
    pub module: Coords,
    /// The library file in the set's folder.
    pub path: PathBuf,
}

/// Why a plugin library, or a set's list of them, was refused; each
/// names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    /// The identity record in the file: missing, unreadable, of another
    /// ABI version or build (found before the library is opened).
    #[error("plugin {0}")]
    Identity(#[from] banalytics_sdk::plugin::FileIdentityError),
    /// The library was opened and refused, or refused before that for a
    /// kind it declares.
    #[error("plugin {}: {problem}", path.display())]
    Refused {
        /// The library.
        path: PathBuf,
        /// What is wrong, with the expected and found values.
        problem: String,
    },
    /// The set's list of modules or its hash record cannot be read.
    #[error("{problem}")]
    Set {
        /// The file and the cause.
        problem: String,
    },
}

impl PluginError {
    fn refused(path: &Path, problem: impl Into<String>) -> PluginError {
        PluginError::Refused {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The plugin libraries of the module set in `dir`, in name order: the main
/// artifact of each `component` module its `modules-info.properties` lists,
/// when it has the platform's library extension. A set without the file
/// (a first run) has none; an unreadable one is an error naming the file.
pub(crate) fn set_libraries(dir: &Path) -> Result<Vec<SetLibrary>, PluginError> {
    let Some(modules) = installed::read_modules_info(dir).map_err(|e| PluginError::Set {
        problem: e.to_string(),
    })?
    else {
        return Ok(Vec::new());
    };
    let record = SetRecord::load_or_none_if_newer(dir).map_err(|e| PluginError::Set {
        problem: format!("{}: {e}", dir.join(RECORD_FILE).display()),
    })?;
    let extension = format!(".{}", std::env::consts::DLL_EXTENSION);
    let mut libraries = Vec::new();
    for m in modules
        .iter()
        .filter(|m| m.module_type == ModuleType::Component && !m.coords.is_core())
    {
        let name = match record.as_ref().and_then(|r| r.modules.get(&m.coords)) {
            Some(recorded) => recorded.main.name.clone(),
            // A set without a hash record (installed by the Java box, or by
            // hand): a plugin's main artifact has its contract name.
            None => {
                let name = coords::file_name(&Module {
                    coords: m.coords.clone(),
                    module_type: m.module_type,
                    upload_time: m.upload_epoch,
                    packaging: Some(std::env::consts::DLL_EXTENSION.to_owned()),
                    sha256: None,
                    size: None,
                    dependencies: None,
                    model: None,
                    platforms: None,
                    launcher_handshakes: None,
                });
                if !dir.join(&name).is_file() {
                    continue;
                }
                name
            }
        };
        if name.ends_with(&extension) {
            libraries.push(SetLibrary {
                module: m.coords.clone(),
                path: dir.join(name),
            });
        }
    }
    libraries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(libraries)
}

/// Why a plugin's `kind` cannot be registered beside the `builtin` kinds
/// and those `loaded` before (each with its library), if it cannot.
pub(crate) fn kind_conflict<S: AsRef<str>>(
    kind: &str,
    builtin: &[S],
    loaded: &[(String, PathBuf)],
) -> Option<String> {
    if builtin.iter().any(|b| b.as_ref() == kind) {
        return Some(format!("kind {kind:?} is already built into the host"));
    }
    loaded
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, other)| format!("kind {kind:?} is already exported by {}", other.display()))
}

/// What happened to one plugin library of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Loaded; its kinds are registered.
    Loaded {
        /// The kinds.
        kinds: Vec<String>,
        /// How long loading and checking took.
        took: Duration,
    },
    /// A library the host cannot run; refused with an error, its kinds
    /// unknown.
    Refused(String),
}

/// What loading the set's plugins did, file by file; logged once logging is
/// set up.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Each file with its outcome, in load order.
    pub files: Vec<(PathBuf, LoadOutcome)>,
}

impl LoadReport {
    /// Logs each outcome: loaded at info, refused at error.
    pub fn log(&self) {
        for (path, outcome) in &self.files {
            let file = path.display();
            match outcome {
                LoadOutcome::Loaded { kinds, took } => {
                    info!(%file, kinds = %kinds.join(","), took_ms = took.as_secs_f64() * 1e3, "plugin loaded")
                }
                LoadOutcome::Refused(why) => tracing::error!(%file, "{why}"),
            }
        }
    }
}

/// Loads the plugin libraries of the module set in `dir` (the home's
/// `modules/`; see [`set_libraries`]) and returns their component kinds,
/// each with the library it comes from. `builtin` are the kinds built into
/// the host.
pub fn load_dir(dir: &Path, builtin: &[&str]) -> (Vec<(ComponentKind, PathBuf)>, LoadReport) {
    let mut report = LoadReport::default();
    let libraries = match set_libraries(dir) {
        Ok(libraries) => libraries,
        Err(e) => {
            report.files.push((
                dir.join(MODULES_INFO_FILE),
                LoadOutcome::Refused(format!("no plugin is loaded: {e}")),
            ));
            return (Vec::new(), report);
        }
    };
    let mut loaded: Vec<(String, PathBuf)> = Vec::new();
    let mut result = Vec::new();
    let spawner = Arc::new(Spawner::default());
    for SetLibrary { path, .. } in libraries {
        let started = Instant::now();
        let outcome = match load(&path, builtin, &loaded) {
            Ok((plugin, identity)) => {
                let mut names = Vec::new();
                for info in identity.kinds {
                    let name = info.kind.clone();
                    let host_only = authority::host_only_among(&info.publishes);
                    if !host_only.is_empty() {
                        warn!(file = %path.display(), kind = %name, topics = %host_only.join(","), "plugin kind declares topics no plugin may publish; the host refuses its messages on them");
                    }
                    names.push(name.clone());
                    loaded.push((name.clone(), path.clone()));
                    let entry = Arc::new(KindEntry {
                        plugin: plugin.clone(),
                        info,
                        spawner: spawner.clone(),
                    });
                    // `isolation` is read from the component's table: in
                    // process, or a proxy of a child process.
                    let kind = ComponentKind::new(name, move |init| {
                        match crate::config::isolation_of(&init.config)? {
                            Isolation::None => create_component(&entry, init),
                            Isolation::Process(limits) => {
                                crate::isolation::create(&entry, init, limits)
                            }
                        }
                    });
                    result.push((kind, path.clone()));
                }
                LoadOutcome::Loaded {
                    kinds: names,
                    took: started.elapsed(),
                }
            }
            Err(why) => LoadOutcome::Refused(why.to_string()),
        };
        report.files.push((path, outcome));
    }
    (result, report)
}

fn load(
    path: &Path,
    builtin: &[&str],
    loaded: &[(String, PathBuf)],
) -> Result<(Arc<Plugin>, Identity), PluginError> {
    let Opened {
        plugin,
        identity,
        init,
    } = open(path, |record| {
        // 2., before the library is opened.
        match record
            .kinds
            .iter()
            .find_map(|k| kind_conflict(k, builtin, loaded))
        {
            Some(conflict) => Err(PluginError::refused(path, conflict)),
            None => Ok(()),
        }
    })?;
    let plugin = Arc::new(plugin);
    // Never freed: the plugin may log for the life of the process, so its
    // log and the reference to the plugin it holds are never given back.
    let log = Box::leak(Box::new(HostLog {
        ctx: Arc::into_raw(plugin.clone()).cast_mut().cast(),
        enabled: host_log_enabled,
        log: host_log,
    }));
    // SAFETY: `log` lives for the process.
    let code = unsafe { init(log) };
    if code != RC_OK {
        return Err(PluginError::refused(
            path,
            format!("init failed with code {code}"),
        ));
    }
    Ok((plugin, identity))
}

/// A library opened and checked, not yet initialised.
pub(crate) struct Opened {
    pub(crate) plugin: Plugin,
    pub(crate) identity: Identity,
    /// `banalytics_plugin_init`, to be called once with the log.
    pub(crate) init: InitFn,
}

/// Steps 1, 3 and 4 of loading (module docs), with `check` on the identity
/// record between 1 and 3: the host's load and an isolated component's
/// child process open a library the same way.
pub(crate) fn open(
    path: &Path,
    check: impl FnOnce(&FileIdentity) -> Result<(), PluginError>,
) -> Result<Opened, PluginError> {
    let shown = path.display();
    let refused = |problem: String| PluginError::refused(path, problem);
    // 1., before the library is opened: none of its code runs
    // (initialisers included) unless it is for this host.
    let record = FileIdentity::read_checked(path)?;
    check(&record)?;
    // 3.
    let handle = dl::open(path).map_err(|e| refused(format!("cannot be loaded: {e}")))?;
    let abi_version = dl::symbol(handle, ABI_SYMBOL)
        .ok_or_else(|| refused(format!("missing symbol {ABI_SYMBOL}")))?;
    // SAFETY: the symbol of this name has this signature in every plugin
    // ever built; it is the one function that never changes.
    let abi_version: AbiVersionFn = unsafe { std::mem::transmute(abi_version) };
    let found =
        catch_unwind(|| abi_version()).map_err(|_| refused(format!("{ABI_SYMBOL} panicked")))?;
    if found != ABI_VERSION {
        return Err(refused(format!(
            "ABI version mismatch: expected {ABI_VERSION}, found {found}"
        )));
    }
    // 4.
    let sym = |name: &str| {
        dl::symbol(handle, name).ok_or_else(|| refused(format!("missing symbol {name}")))
    };
    // SAFETY: the ABI version matches, so each symbol has the signature of
    // this version (banalytics_sdk::plugin).
    let (identity, init, api) = unsafe {
        let identity: IdentityFn = std::mem::transmute(sym("banalytics_plugin_identity")?);
        let init: InitFn = std::mem::transmute(sym("banalytics_plugin_init")?);
        let api = Api {
            create: std::mem::transmute::<*mut c_void, CreateFn>(sym("banalytics_plugin_create")?),
            start: std::mem::transmute::<*mut c_void, StartFn>(sym("banalytics_plugin_start")?),
            stop: std::mem::transmute::<*mut c_void, InstanceFn>(sym("banalytics_plugin_stop")?),
            deliver: std::mem::transmute::<*mut c_void, DeliverFn>(sym(
                "banalytics_plugin_deliver",
            )?),
            restart_failed: std::mem::transmute::<*mut c_void, InstanceFn>(sym(
                "banalytics_plugin_restart_failed",
            )?),
            destroy: std::mem::transmute::<*mut c_void, InstanceFn>(sym(
                "banalytics_plugin_destroy",
            )?),
            free_buf: std::mem::transmute::<*mut c_void, FreeBufFn>(sym(
                "banalytics_plugin_free_buf",
            )?),
        };
        (identity, init, api)
    };
    let label = path
        .file_name()
        .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned());
    let plugin = Plugin {
        path: path.to_owned(),
        label,
        api,
    };
    let mut out = Buf::EMPTY;
    // SAFETY: `out` is writable; the plugin fills it with its buffer.
    let code = unsafe { identity(&mut out) };
    let json = plugin.take(out);
    if code != RC_OK {
        return Err(refused(format!("identity failed with code {code}")));
    }
    let identity: Identity =
        serde_json::from_slice(&json).map_err(|e| refused(format!("unreadable identity: {e}")))?;
    if let Some(diff) = identity.mismatch(&Identity::host()) {
        return Err(refused(format!("build identity mismatch: {diff}")));
    }
    let kinds: Vec<&str> = identity.kinds.iter().map(|k| k.kind.as_str()).collect();
    if kinds != record.kinds {
        return Err(refused(format!(
            "exports the kinds {kinds:?}, but its identity record declares {:?}",
            record.kinds
        )));
    }
    Ok(Opened {
        plugin,
        identity,
        init,
    })
}

extern "C" fn host_log_enabled(_: *mut c_void, level: u32) -> bool {
    let level = match level {
        LEVEL_ERROR => tracing::Level::ERROR,
        LEVEL_WARN => tracing::Level::WARN,
        LEVEL_INFO => tracing::Level::INFO,
        LEVEL_DEBUG => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing::level_filters::LevelFilter::current() >= level
}

extern "C" fn host_log(ctx: *mut c_void, level: u32, target: Bytes, message: Bytes) {
    let _ = catch_unwind(|| {
        // SAFETY: `ctx` is the plugin the log holds forever (see `load`);
        // the bytes are borrowed for this call.
        let (plugin, target, message) = unsafe {
            (
                &(*ctx.cast::<Plugin>()).label,
                String::from_utf8_lossy(target.as_slice()),
                String::from_utf8_lossy(message.as_slice()),
            )
        };
        log_plugin_event(plugin, level, &target, &message);
    });
}

/// One event of a plugin's log as a host event, with the `plugin` field:
/// from the library in this process, or from an isolated child.
pub(crate) fn log_plugin_event(plugin: &str, level: u32, target: &str, message: &str) {
    {
        match level {
            LEVEL_ERROR => tracing::error!(%plugin, plugin_target = %target, "{message}"),
            LEVEL_WARN => tracing::warn!(%plugin, plugin_target = %target, "{message}"),
            LEVEL_INFO => tracing::info!(%plugin, plugin_target = %target, "{message}"),
            LEVEL_DEBUG => tracing::debug!(%plugin, plugin_target = %target, "{message}"),
            LEVEL_TRACE => tracing::trace!(%plugin, plugin_target = %target, "{message}"),
            _ => {}
        }
    }
}

/// Creates an instance of `entry`'s kind in its plugin, and its proxy.
fn create_component(
    entry: &Arc<KindEntry>,
    init: &ComponentInit,
) -> Result<Box<dyn Component>, ComponentError> {
    let kind = &entry.info.kind;
    let side = Box::new(HostSide {
        component: init.name.clone(),
        plugin: entry.plugin.label.clone(),
        bridge: Mutex::new(None),
        authority: Publisher::new(&init.name, &entry.plugin.label, &entry.info.publishes),
    });
    let callbacks = Box::new(HostCallbacks {
        ctx: (&*side as *const HostSide).cast_mut().cast(),
        publish: host_publish,
        state: host_state,
    });
    let init_json = serde_json::to_vec(&InitMessage::new(init)).expect("init serializes");
    let api = &entry.plugin.api;
    let (mut instance, mut err) = (std::ptr::null_mut(), Buf::EMPTY);
    // SAFETY: arguments borrowed for the call; `callbacks` and `side` live
    // in the proxy until after `destroy`.
    let code = unsafe {
        (api.create)(
            Bytes::of(kind.as_bytes()),
            Bytes::of(&init_json),
            &*callbacks,
            &mut instance,
            &mut err,
        )
    };
    if code != RC_OK {
        return Err(ComponentError::Start(entry.plugin.message(code, err)));
    }
    Ok(Box::new(PluginComponent {
        entry: entry.clone(),
        instance: Instance(instance),
        running: None,
        _callbacks: Callbacks(callbacks),
        side,
    }))
}

/// A plugin instance pointer; the plugin's functions may be called from any
/// thread (see `banalytics_sdk::plugin`).
#[derive(Clone, Copy)]
struct Instance(*mut c_void);
// SAFETY: the ABI allows calls on an instance from any host thread.
unsafe impl Send for Instance {}

/// What the plugin's callbacks reach while its instance runs.
struct Bridge {
    bus: Bus,
    board: StatusBoard,
    /// Our own raw subscriptions: a message from the plugin is not forwarded
    /// back to it.
    except: Vec<SubscriberId>,
}

/// The context of one instance's [`HostCallbacks`].
struct HostSide {
    component: String,
    plugin: String,
    bridge: Mutex<Option<Arc<Bridge>>>,
    /// What it may publish (`crate::authority`).
    authority: Publisher,
}

/// The host-side proxy of a plugin component: starting it starts the plugin
/// instance and bridges the bus; stopping it stops the instance.
struct PluginComponent {
    entry: Arc<KindEntry>,
    instance: Instance,
    running: Option<Forwarders>,
    _callbacks: Callbacks,
    side: Box<HostSide>,
}

/// The instance's callbacks, kept at a stable address until `destroy`.
struct Callbacks(#[allow(dead_code)] Box<HostCallbacks>);
// SAFETY: only the plugin reads them; the proxy just keeps them alive.
unsafe impl Send for Callbacks {}

/// One thread per subscribed topic: takes the host bus's messages for the
/// instance and delivers them, blocking while the instance's queue is full
/// (a thread, so that this backpressure never blocks an arbiter).
struct Forwarders {
    bus: Bus,
    threads: Vec<(String, SubscriberId, std::thread::JoinHandle<()>)>,
}

impl Component for PluginComponent {
    fn start(&mut self, ctx: &mut ComponentContext) -> Result<(), ComponentError> {
        let bus = ctx.bus().clone();
        let subs: Vec<_> = self
            .entry
            .info
            .subscribes
            .iter()
            .map(|t| (t.clone(), bus.subscribe_raw(t)))
            .collect();
        *self.side.bridge.lock().expect("bridge poisoned") = Some(Arc::new(Bridge {
            bus: bus.clone(),
            board: ctx.board().clone(),
            except: subs.iter().map(|(_, s)| s.id()).collect(),
        }));
        let args = serde_json::to_vec(&StartMessage {
            policy: ctx.policy().to_string(),
        })
        .expect("start args serialize");
        let plugin = &self.entry.plugin;
        let mut err = Buf::EMPTY;
        // SAFETY: a live instance; `args` borrowed for the call.
        let code = unsafe { (plugin.api.start)(self.instance.0, Bytes::of(&args), &mut err) };
        if code != RC_OK {
            *self.side.bridge.lock().expect("bridge poisoned") = None;
            return Err(ComponentError::Start(plugin.message(code, err)));
        }
        let (instance, restart_failed) = (self.instance, plugin.api.restart_failed);
        ctx.on_restart_failed(move || {
            // SAFETY: a live instance: the hook is called only by the
            // host's `restart` of this component, while the proxy, which
            // destroys the instance when dropped, exists.
            unsafe { restart_failed(instance.0) };
        });
        // Forward only now: a message that came meanwhile waits in its
        // subscription and reaches the started instance.
        let threads = subs
            .into_iter()
            .map(|(topic, mut sub)| {
                let id = sub.id();
                let (instance, plugin) = (self.instance, plugin.clone());
                let name = topic.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("to plugin {}", self.side.component))
                    .spawn(move || {
                        let instance = instance;
                        while let Some(json) = sub.blocking_recv() {
                            // SAFETY: the instance outlives this thread (joined
                            // before `stop` and `destroy`); bytes borrowed.
                            let code = unsafe {
                                (plugin.api.deliver)(
                                    instance.0,
                                    Bytes::of(name.as_bytes()),
                                    Bytes::of(&json),
                                )
                            };
                            match code {
                                RC_OK => {}
                                RC_CLOSED => break,
                                code => {
                                    warn!(plugin = %plugin.label, topic = %name, code, "plugin refused a message");
                                }
                            }
                        }
                    })
                    .expect("spawning a forwarder thread");
                (topic, id, thread)
            })
            .collect();
        self.running = Some(Forwarders { bus, threads });
        Ok(())
    }

    fn stopped(&mut self) {
        let Some(forwarders) = self.running.take() else {
            return;
        };
        // Forwarders first: what they took is delivered before the stop,
        // which the instance handles after it, in order.
        for (topic, id, thread) in forwarders.threads {
            forwarders.bus.unsubscribe(&topic, id);
            let _ = thread.join();
        }
        // SAFETY: a live instance.
        let code = unsafe { (self.entry.plugin.api.stop)(self.instance.0) };
        if code != RC_OK {
            warn!(plugin = %self.side.plugin, component = %self.side.component, code, "plugin stop failed");
        }
        *self.side.bridge.lock().expect("bridge poisoned") = None;
    }
}

impl Drop for PluginComponent {
    fn drop(&mut self) {
        self.stopped();
        // SAFETY: a live instance, handed back once; the callbacks and
        // `side` are dropped only after this returns.
        let code = unsafe { (self.entry.plugin.api.destroy)(self.instance.0) };
        if code != RC_OK {
            warn!(plugin = %self.side.plugin, component = %self.side.component, code, "plugin destroy failed");
        }
    }
}

fn side<'a>(ctx: *mut c_void) -> &'a HostSide {
    // SAFETY: `ctx` is the `HostSide` of a live instance (see create).
    unsafe { &*ctx.cast::<HostSide>() }
}

extern "C" fn host_publish(ctx: *mut c_void, topic: Bytes, message: Bytes) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        let side = side(ctx);
        let Some(bridge) = side.bridge.lock().expect("bridge poisoned").clone() else {
            return RC_CLOSED;
        };
        // SAFETY: borrowed for this call.
        let (topic, message) = unsafe { (topic.as_slice(), message.as_slice()) };
        let topic = String::from_utf8_lossy(topic);
        if !side.authority.admit(&topic, &bridge.board) {
            return RC_ERROR;
        }
        let published = block_on(bridge.bus.publish_raw_except(
            &topic,
            message.to_vec(),
            &bridge.except,
        ));
        match published {
            Ok(_) => RC_OK,
            Err(e) => {
                warn!(plugin = %side.plugin, component = %side.component, error = %e, "message from plugin refused");
                RC_ERROR
            }
        }
    }))
    .unwrap_or(RC_ERROR)
}

extern "C" fn host_state(ctx: *mut c_void, state: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let side = side(ctx);
        // SAFETY: borrowed for this call.
        let state = unsafe { state.as_slice() };
        let Ok(state) = serde_json::from_slice::<StateMessage>(state) else {
            warn!(plugin = %side.plugin, component = %side.component, "unreadable state from plugin");
            return;
        };
        let Some(bridge) = side.bridge.lock().expect("bridge poisoned").clone() else {
            return;
        };
        for (actor, status) in state.actors {
            bridge.board.mirror_actor(&side.component, &actor, status);
        }
        if !state.details.is_null() {
            bridge.board.set_details(&side.component, state.details);
        }
    }));
}

/// Runs `fut` to completion on this thread, parking while it waits. For the
/// plugin's threads, which belong to no runtime of the host; the host bus
/// needs none (tokio's channels work without a runtime).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Opening libraries and finding symbols, with `libloading`.
mod dl {
    use super::*;

    /// An open library; never closed: the `Library` is leaked on purpose
    /// (see the module docs), which is what makes the handle `'static`.
    #[derive(Clone, Copy)]
    pub struct Handle(&'static libloading::Library);

    pub fn open(path: &Path) -> Result<Handle, libloading::Error> {
        // RTLD_NOW: a library with unresolved symbols is refused here, not
        // when a plugin function first runs. RTLD_LOCAL keeps the plugin's
        // symbols out of the global namespace, so plugins cannot clash.
        // SAFETY: loading runs the library's initialisers; only files in the
        // host's own module folder are loaded.
        #[cfg(unix)]
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }?;
        // Windows: `LoadLibraryExW` resolves every import at load and keeps
        // each DLL's symbols its own, as the flags above do on Unix.
        // SAFETY: as above.
        #[cfg(windows)]
        let lib = unsafe { libloading::os::windows::Library::new(path) }?;
        Ok(Handle(Box::leak(Box::new(lib.into()))))
    }

    pub fn symbol(h: Handle, name: &str) -> Option<*mut c_void> {
        // SAFETY: the symbol is only read as an address here; its type is
        // fixed by the ABI where it is cast and called.
        let s = unsafe { h.0.get::<*mut c_void>(name.as_bytes()) }.ok()?;
        let p = *s;
        (!p.is_null()).then_some(p)
    }
}
