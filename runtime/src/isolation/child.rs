//! The child process of an isolated component (`banalytics-box
//! plugin-child`, hidden): opens the plugin library as the host does and
//! serves the host's frames on its link with the plugin's C ABI: the
//! socket on descriptor 3 on Unix, the two inherited pipes named by
//! `--pipes IN,OUT` on Windows (`super::spawn`).
//!
//! Two threads: this one reads the frames and delivers bus messages to the
//! instance (blocking while its queue is full: backpressure to the host);
//! the control thread carries out `create`, `start`, `stop`,
//! `restart_failed` and pings, in order. A ping is answered after a `start`
//! of the running instance went through its lifecycle loop (the driver
//! answers it without doing anything), so a wedged instance answers none.
//! When the host closes the socket, the instance is destroyed and the
//! process exits.
//!
//! Before anything else (no thread runs yet, the library is not opened)
//! the child enters its file-system sandbox ([`super::sandbox`]) and tells
//! the host the level it reached in a log event. A sandbox that cannot be
//! built on a kernel that has Landlock ends the child: it never runs the
//! plugin with less than it was meant to have. (Windows has no sandbox:
//! the log event says so.) The library is opened once the host's `create`
//! came, so that on Windows the host has put the child in its Job object,
//! with its limits, before the library's code runs.

use std::{
    ffi::c_void,
    io::{self, BufReader, Read, Write},
    panic::catch_unwind,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
};

use banalytics_sdk::plugin::{
    Buf, Bytes, HostCallbacks, HostLog, LEVEL_INFO, RC_CLOSED, RC_ERROR, RC_OK,
};

use super::frame::{Answer, Frame};
use crate::plugins::{self, Plugin, PluginError};

/// Why the instance could not be created; its words go back to the host
/// in the `created` frame.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The library could not be opened (identity, ABI, build checks).
    #[error(transparent)]
    Open(#[from] PluginError),
    /// The library's `init` failed.
    #[error("plugin {}: init failed with code {code}", library.display())]
    Init { library: PathBuf, code: i32 },
    /// The plugin refused the instance (its message).
    #[error("{0}")]
    Create(String),
}

/// The hidden subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The plugin library.
    #[arg(long)]
    pub library: PathBuf,
    /// The host's log level (`LEVEL_*`: 1 error .. 5 trace; 0 off).
    #[arg(long, default_value_t = 3)]
    pub log_level: u32,
    /// The box home, whose `data/` the sandbox lets the child write in
    /// (`--home` is the host's own, global option).
    #[arg(long)]
    pub box_home: PathBuf,
    /// The child's own temporary folder, made by the host (also `TMPDIR`).
    #[arg(long)]
    pub tmp: PathBuf,
    /// The inherited pipe handles of the link, `IN,OUT` (Windows).
    #[cfg(windows)]
    #[arg(long)]
    pub pipes: String,
}

/// The child's writing end of the link.
#[cfg(unix)]
type LinkWriter = std::os::unix::net::UnixStream;
/// The child's writing end of the link.
#[cfg(windows)]
type LinkWriter = std::fs::File;

/// The link the host handed over: descriptor 3, a socket, both ways.
#[cfg(unix)]
fn link(_args: &ChildArgs) -> io::Result<(impl Read, LinkWriter)> {
    use std::os::{fd::FromRawFd, unix::net::UnixStream};
    // SAFETY: the host passes the child's end of the socket pair as this
    // descriptor, for this process to own.
    let stream = unsafe { UnixStream::from_raw_fd(super::CHILD_SOCKET_FD) };
    Ok((stream.try_clone()?, stream))
}

/// The link the host handed over: the pipes named by `--pipes IN,OUT`.
#[cfg(windows)]
fn link(args: &ChildArgs) -> io::Result<(impl Read, LinkWriter)> {
    let bad = || io::Error::other(format!("--pipes {}: not two handles", args.pipes));
    let (read, write) = args.pipes.split_once(',').ok_or_else(bad)?;
    let read: i64 = read.trim().parse().map_err(|_| bad())?;
    let write: i64 = write.trim().parse().map_err(|_| bad())?;
    // SAFETY: the host made these two handles inheritable for this process
    // to own, and named them here.
    unsafe {
        Ok((
            crate::platform::file_from_number(read),
            crate::platform::file_from_number(write),
        ))
    }
}

/// Frames to the host, from any thread of the child.
struct Writer {
    stream: Mutex<LinkWriter>,
    level: u32,
}

impl Writer {
    fn send(&self, frame: &Frame) -> bool {
        let bytes = frame.to_bytes();
        self.stream
            .lock()
            .map(|mut s| s.write_all(&bytes).is_ok())
            .unwrap_or(false)
    }
}

fn writer<'a>(ctx: *mut c_void) -> &'a Writer {
    // SAFETY: `ctx` is the writer leaked in `main`, alive for the process.
    unsafe { &*ctx.cast::<Writer>() }
}

extern "C" fn log_enabled(ctx: *mut c_void, level: u32) -> bool {
    level <= writer(ctx).level
}

extern "C" fn log(ctx: *mut c_void, level: u32, target: Bytes, message: Bytes) {
    let _ = catch_unwind(|| {
        // SAFETY: borrowed for this call.
        let (target, message) = unsafe { (target.as_slice(), message.as_slice()) };
        writer(ctx).send(&Frame::Log {
            level,
            target: String::from_utf8_lossy(target).into_owned(),
            message: String::from_utf8_lossy(message).into_owned(),
        });
    });
}

extern "C" fn publish(ctx: *mut c_void, topic: Bytes, message: Bytes) -> i32 {
    catch_unwind(|| {
        // SAFETY: borrowed for this call.
        let (topic, message) = unsafe { (topic.as_slice(), message.as_slice()) };
        let frame = Frame::Publish {
            topic: String::from_utf8_lossy(topic).into_owned(),
            message: message.to_vec(),
        };
        if writer(ctx).send(&frame) {
            RC_OK
        } else {
            RC_CLOSED
        }
    })
    .unwrap_or(RC_ERROR)
}

extern "C" fn state(ctx: *mut c_void, state: Bytes) {
    let _ = catch_unwind(|| {
        // SAFETY: borrowed for this call.
        let state = unsafe { state.as_slice() };
        writer(ctx).send(&Frame::State(state.to_vec()));
    });
}

/// The instance pointer; the ABI allows calls on it from any thread.
#[derive(Clone, Copy)]
struct Instance(*mut c_void);
// SAFETY: the ABI allows calls on an instance from any host thread.
unsafe impl Send for Instance {}

/// What the control thread carries out.
enum Control {
    Start(Vec<u8>),
    Stop,
    RestartFailed,
    Ping(u64),
}

/// Pings that may wait for the control thread; beyond, a ping is dropped
/// (the host counts the missing pongs).
const CONTROL_QUEUE: usize = 16;

/// The child's whole life; its exit status.
pub fn main(args: &ChildArgs) -> u8 {
    match link(args).and_then(|(reader, writer)| serve(args, reader, writer)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banalytics-box plugin-child: {e}");
            1
        }
    }
}

fn serve(args: &ChildArgs, reader: impl Read, stream: LinkWriter) -> io::Result<()> {
    let writer: &'static Writer = Box::leak(Box::new(Writer {
        stream: Mutex::new(stream),
        level: args.log_level,
    }));
    let ctx: *mut c_void = (writer as *const Writer).cast_mut().cast();
    enter_sandbox(args, writer)?;
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    // The first frame is `create`.
    let Some(Frame::Create { kind, init }) = Frame::read(&mut reader)? else {
        return Err(io::Error::other("the host did not begin with create"));
    };
    let created = open(args, ctx).and_then(|plugin| create(plugin, &kind, &init, ctx));
    let (plugin, instance) = match created {
        Ok(created) => {
            writer.send(&Frame::Created(Answer::Done));
            created
        }
        Err(e) => {
            writer.send(&Frame::Created(Answer::Refused(e.to_string())));
            return Ok(());
        }
    };
    let (control, orders) = mpsc::sync_channel(CONTROL_QUEUE);
    let controller = {
        let plugin = plugin.clone();
        std::thread::Builder::new()
            .name("plugin control".to_owned())
            .spawn(move || control_loop(&plugin, instance, orders, writer))?
    };
    read_loop(&mut reader, &plugin, instance, &control);
    drop(control);
    let _ = controller.join();
    // SAFETY: the instance, handed back once; nothing uses it after.
    unsafe { (plugin.api.destroy)(instance.0) };
    Ok(())
}

/// Enters the file-system sandbox and tells the host the level reached.
#[cfg(unix)]
fn enter_sandbox(args: &ChildArgs, writer: &Writer) -> io::Result<()> {
    use super::sandbox;
    let entered = sandbox::enter(&args.box_home, &args.tmp)
        .map_err(|e| io::Error::other(format!("cannot enter the file-system sandbox: {e}")))?;
    writer.send(&Frame::Log {
        level: LEVEL_INFO,
        target: "banalytics_runtime::isolation::sandbox".to_owned(),
        message: format!(
            "plugin process sandboxed: landlock={} no_new_privs={} (writes only in {} and {})",
            entered.level,
            entered.no_new_privs,
            args.box_home.join(sandbox::DATA_DIR).display(),
            args.tmp.display()
        ),
    });
    Ok(())
}

/// Windows has no sandbox for the child: tells the host so.
#[cfg(windows)]
fn enter_sandbox(_args: &ChildArgs, writer: &Writer) -> io::Result<()> {
    writer.send(&Frame::Log {
        level: LEVEL_INFO,
        target: "banalytics_runtime::isolation::sandbox".to_owned(),
        message: "plugin process not sandboxed: landlock=none (Linux-only); in a Job object with its limits".to_owned(),
    });
    Ok(())
}

/// Opens the library as the host does and initialises it with the log
/// callbacks that send `log` frames.
fn open(args: &ChildArgs, ctx: *mut c_void) -> Result<Arc<Plugin>, Refusal> {
    let opened = plugins::open(&args.library, |_| Ok(()))?;
    let log = Box::leak(Box::new(HostLog {
        ctx,
        enabled: log_enabled,
        log,
    }));
    // SAFETY: `log` lives for the process.
    match unsafe { (opened.init)(log) } {
        RC_OK => Ok(Arc::new(opened.plugin)),
        code => Err(Refusal::Init {
            library: args.library.clone(),
            code,
        }),
    }
}

/// Creates the instance of `kind` with `init`; the plugin's refusal in
/// words.
fn create(
    plugin: Arc<Plugin>,
    kind: &str,
    init: &[u8],
    ctx: *mut c_void,
) -> Result<(Arc<Plugin>, Instance), Refusal> {
    let callbacks: &'static HostCallbacks = Box::leak(Box::new(HostCallbacks {
        ctx,
        publish,
        state,
    }));
    let (mut instance, mut err) = (std::ptr::null_mut(), Buf::EMPTY);
    // SAFETY: arguments borrowed for the call; `callbacks` live for the
    // process.
    let code = unsafe {
        (plugin.api.create)(
            Bytes::of(kind.as_bytes()),
            Bytes::of(init),
            callbacks,
            &mut instance,
            &mut err,
        )
    };
    match code {
        RC_OK => Ok((plugin, Instance(instance))),
        code => Err(Refusal::Create(plugin.message(code, err))),
    }
}

/// Reads the host's frames until the link closes: bus messages go to the
/// instance from here, lifecycle orders and pings to the control thread.
fn read_loop(
    reader: &mut impl Read,
    plugin: &Plugin,
    instance: Instance,
    control: &mpsc::SyncSender<Control>,
) {
    loop {
        let frame = match Frame::read(reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                eprintln!("banalytics-box plugin-child: unreadable frame from the host: {e}");
                break;
            }
        };
        let order = match frame {
            Frame::Deliver { topic, message } => {
                // SAFETY: a live instance (destroyed only after this
                // loop); bytes borrowed for the call.
                let code = unsafe {
                    (plugin.api.deliver)(
                        instance.0,
                        Bytes::of(topic.as_bytes()),
                        Bytes::of(&message),
                    )
                };
                if code == RC_CLOSED {
                    break;
                }
                continue;
            }
            Frame::Start { args } => Control::Start(args),
            Frame::Stop => Control::Stop,
            Frame::RestartFailed => Control::RestartFailed,
            Frame::Ping(n) => {
                let _ = control.try_send(Control::Ping(n));
                continue;
            }
            _ => continue,
        };
        if control.send(order).is_err() {
            break;
        }
    }
}

/// Carries out the lifecycle orders and answers pings.
fn control_loop(
    plugin: &Plugin,
    instance: Instance,
    orders: mpsc::Receiver<Control>,
    writer: &Writer,
) {
    let mut running: Option<Vec<u8>> = None;
    while let Ok(order) = orders.recv() {
        match order {
            Control::Start(args) => {
                let mut err = Buf::EMPTY;
                // SAFETY: a live instance; `args` borrowed for the call.
                let code = unsafe { (plugin.api.start)(instance.0, Bytes::of(&args), &mut err) };
                let answer = match code {
                    RC_OK => {
                        running = Some(args);
                        Answer::Done
                    }
                    code => Answer::Refused(plugin.message(code, err)),
                };
                writer.send(&Frame::Started(answer));
            }
            Control::Stop => {
                running = None;
                // SAFETY: a live instance.
                unsafe { (plugin.api.stop)(instance.0) };
                writer.send(&Frame::Stopped);
            }
            Control::RestartFailed => {
                // SAFETY: a live instance.
                unsafe { (plugin.api.restart_failed)(instance.0) };
            }
            Control::Ping(n) => {
                if let Some(args) = &running {
                    // A start of the running instance: its driver answers
                    // without doing anything, once it is free to.
                    let mut err = Buf::EMPTY;
                    // SAFETY: a live instance; `args` borrowed.
                    let code = unsafe { (plugin.api.start)(instance.0, Bytes::of(args), &mut err) };
                    if code != RC_OK {
                        let _ = plugin.message(code, err);
                        continue;
                    }
                }
                writer.send(&Frame::Pong(n));
            }
        }
    }
}
