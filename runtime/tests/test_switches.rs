//! The test switches (`BANALYTICS_FAILPOINT`, `BANALYTICS_FAILPOINT_TRACE`,
//! `BANALYTICS_NO_EXCHANGE`) exist only with the `failpoints` feature. This
//! package's own test build of `banalytics-box` has the features of a
//! release build (`cargo build --release -p banalytics-runtime`): none.
//! Started with a failpoint that every start passes, it must not die there
//! nor trace anything; with `--features failpoints` it must die there.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Reached on every start of `run` without a launcher (`cli::run`).
const EVERY_START: &str = "launcher.prepared";

/// How long the host may take to come up on a loaded machine: a deadline
/// for waiting, not a measured bound.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn test_switches_do_nothing_without_the_failpoints_feature() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(
        home.join("config/box.toml"),
        "[log]\nlevel = \"info\"\n\n[components.alpha]\nkind = \"probe\"\n",
    )
    .unwrap();
    let log = dir.path().join("box.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_banalytics-box"))
        .arg("--home")
        .arg(&home)
        .arg("run")
        .env("BANALYTICS_FAILPOINT", EVERY_START)
        .env("BANALYTICS_FAILPOINT_TRACE", "1")
        .env("BANALYTICS_NO_EXCHANGE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = home.join("state/control.sock");
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if socket.exists() {
            break None;
        }
        assert!(start.elapsed() < DEADLINE, "the host did not come up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    if cfg!(feature = "failpoints") {
        // A test build: the switch works, so the check above means something.
        let status = match exited {
            Some(status) => status,
            None => {
                child.kill().unwrap();
                panic!("a box with failpoints passed {EVERY_START}: {}", text());
            }
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", text());
        assert!(text().contains(&format!("failpoint {EVERY_START} reached")));
        return;
    }
    assert!(
        exited.is_none(),
        "a box without failpoints stopped at start ({exited:?}): {}",
        text()
    );
    // SAFETY: a signal to our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), None, "{status:?}: {}", text());
    assert!(
        !text().contains("failpoint"),
        "a point was traced: {}",
        text()
    );
}
