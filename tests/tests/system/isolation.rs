//! Process isolation (`isolation = "process"`) in the real host: the
//! sample plugin's drills (a segfault, an abort, a hang) take down only
//! the isolated component's child process, which the component's policy
//! restarts after its delay, while the probe and Portal Integration go on
//! answering; the same drill in process kills the host; a host killed with
//! SIGKILL leaves no child behind; a child deaf to `stop` and SIGTERM is
//! ended with SIGKILL when the host stops.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{now_ms, poll_until, TempHome, DEADLINE};
use serde_json::{json, Value};

use crate::plugins::{home_with_modules, sample_plugin};

/// The probe, Portal Integration (its link down: nothing listens on the
/// discard port) and the sample plugin in a child process, restarted 10 s
/// after a failure.
const ISOLATED: &str = r#"
[components.heartbeat]
kind = "probe"
restart_on_failure = "immediate"

[components.portal]
kind = "portal-integration"
portal_url = "ws://127.0.0.1:9"

[components.echo]
kind = "sample-echo"
restart_on_failure = "10s"
isolation = "process"
label = "echo-isolated"
"#;

const POLICY_DELAY_MS: u64 = 10_000;

fn home(config: &str) -> Result<TempHome> {
    home_with_modules(config, &[("com.example:sample:1.0", sample_plugin())])
}

/// The `plugin-child` processes whose parent is `parent`.
fn plugin_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the comm may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("plugin-child")
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no code).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn the_child(host: u32) -> Result<u32> {
    poll_until(DEADLINE, "the plugin process", || {
        match plugin_children(host).as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
}

fn request(home: &TempHome, seq: u64, timeout: Duration) -> Result<Value> {
    match home.exchange(
        "sample.request",
        json!({ "seq": seq }),
        "sample.reply",
        timeout,
    )? {
        Ok(reply) => Ok(reply),
        Err(why) => bail!("no reply to request {seq}: {why}"),
    }
}

/// The probe and Portal Integration both answer, within 5 s each.
fn others_answer(home: &TempHome, seq: u64) -> Result<()> {
    let pong = home
        .exchange(
            "probe.ping",
            json!({ "to": "heartbeat", "seq": seq }),
            "probe.pong",
            Duration::from_secs(5),
        )?
        .map_err(anyhow::Error::msg)
        .context("the probe answers")?;
    ensure!(pong["seq"] == seq, "{pong}");
    let outbox = home
        .exchange(
            "portal-link.outbox-query",
            json!({}),
            "portal-link.outbox-state",
            Duration::from_secs(5),
        )?
        .map_err(anyhow::Error::msg)
        .context("Portal Integration answers")?;
    ensure!(outbox["queued"].is_u64(), "{outbox}");
    Ok(())
}

/// Sends `drill` to the isolated echo and follows it: the component is in
/// ERROR with `expected` (the signal) as its error, the probe and Portal
/// Integration answer all along, a request sent meanwhile waits and is
/// answered by the next child, started after the policy's 10 s. Returns
/// the milliseconds from the drill to the ERROR.
fn drill_in_isolated_component(drill: &str, expected: &str) -> Result<u64> {
    let home = home(ISOLATED)?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let first = the_child(host.pid())?;
    assert_eq!(
        request(&home, 1, DEADLINE)?,
        json!({ "seq": 1, "from": "echo-isolated", "generation": 1 })
    );
    others_answer(&home, 1)?;

    let sent_ms = now_ms();
    let answer = home.exchange(
        "sample.request",
        json!({ "seq": 2, "drill": drill }),
        "sample.reply",
        Duration::from_millis(300),
    )?;
    assert!(answer.is_err(), "the drill answers nothing: {answer:?}");

    let mut seq = 10;
    let failed = poll_until(Duration::from_secs(30), "echo in ERROR", || {
        seq += 1;
        others_answer(&home, seq).expect("the others answer while the child dies");
        home.component("echo")
            .ok()
            .filter(|c| c["state"] == "ERROR")
    })?;
    assert_eq!(
        failed["actors"]["echo"]["state"], "STOPPED",
        "the plugin's actors went with their process: {failed}"
    );
    let error_ms = failed["actors"]["process"]["since_ms"]
        .as_u64()
        .context("the process actor's ERROR time")?;
    let last_error = failed["last_error"].as_str().unwrap_or("");
    assert!(
        last_error.contains(&format!("the plugin process was killed by {expected}")),
        "status shows the signal: {failed}"
    );
    assert_eq!(failed["actors"]["process"]["state"], "ERROR", "{failed}");
    assert!(host_status_running(&home)?);
    assert!(gone(first), "the dead child is reaped");

    // A request during the delay waits in the mailbox for the next child.
    let reply = std::thread::scope(|scope| -> Result<Value> {
        let waiting = scope.spawn(|| request(&home, 3, Duration::from_secs(19)));
        while !waiting.is_finished() {
            seq += 1;
            others_answer(&home, seq)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        waiting.join().expect("the waiting request")
    })?;
    assert_eq!(
        reply,
        json!({ "seq": 3, "from": "echo-isolated", "generation": 1 }),
        "answered by the next child's fresh actor"
    );
    let echo = poll_until(DEADLINE, "echo in RUN again", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let run_ms = echo["actors"]["process"]["since_ms"]
        .as_u64()
        .context("the process actor's RUN time")?;
    assert!(
        run_ms - error_ms >= POLICY_DELAY_MS,
        "restarted after the policy's 10 s, not before: {} ms",
        run_ms - error_ms
    );
    assert!(
        run_ms - error_ms < POLICY_DELAY_MS + 8_000,
        "restarted once the delay was over: {} ms",
        run_ms - error_ms
    );
    assert_eq!(echo["actors"]["process"]["restarts"], 1, "{echo}");
    assert_eq!(echo["actors"]["echo"]["state"], "RUN", "{echo}");
    let second = the_child(host.pid())?;
    assert_ne!(first, second, "a new child");

    let heartbeat = home.component("heartbeat")?;
    assert_eq!(heartbeat["restart_count"], 0, "{heartbeat}");
    let status = host.signal_and_wait(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0));
    poll_until(
        Duration::from_secs(5),
        "the child gone after SIGTERM",
        || gone(second).then_some(()),
    )?;
    let log = std::fs::read_to_string(home.log_path(1))?;
    assert!(log.contains("plugin process stopped"), "{log}");
    let drill_line = log
        .lines()
        .find(|l| l.contains(&format!("sample drill: {drill}")))
        .with_context(|| format!("the child's log in the host's:\n{log}"))?;
    assert!(
        drill_line.contains("plugin=com.example-sample-1.0.so"),
        "{drill_line}"
    );
    Ok(error_ms.saturating_sub(sent_ms))
}

fn host_status_running(home: &TempHome) -> Result<bool> {
    Ok(home.status()?["host"]["running"] == true)
}

#[test]
fn a_segfault_in_an_isolated_component_restarts_its_process_after_the_policy_delay() -> Result<()> {
    let _machine = crate::machine::shared();
    drill_in_isolated_component("segfault", "signal 11 (SIGSEGV)")?;
    Ok(())
}

#[test]
fn an_abort_in_an_isolated_component_restarts_its_process_after_the_policy_delay() -> Result<()> {
    let _machine = crate::machine::shared();
    drill_in_isolated_component("abort", "signal 6 (SIGABRT)")?;
    Ok(())
}

#[test]
fn a_hang_in_an_isolated_component_is_killed_at_the_heartbeat_and_restarted() -> Result<()> {
    let _machine = crate::machine::shared();
    let took = drill_in_isolated_component("hang", "signal 9 (SIGKILL)")?;
    // The last pong came at most one interval (1 s) before the drill.
    assert!(
        took >= 4_000,
        "killed once no heartbeat came for 5 s, not before: {took} ms after the drill"
    );
    Ok(())
}

#[test]
fn the_same_drill_in_a_component_that_is_not_isolated_kills_the_host() -> Result<()> {
    let _machine = crate::machine::shared();
    for (drill, signal) in [("segfault", libc::SIGSEGV), ("abort", libc::SIGABRT)] {
        let config = ISOLATED.replace("isolation = \"process\"\n", "");
        let home = home(&config)?;
        let host = home.start(1)?;
        poll_until(DEADLINE, "echo in RUN", || {
            home.component("echo").ok().filter(|c| c["state"] == "RUN")
        })?;
        ensure!(
            plugin_children(host.pid()).is_empty(),
            "no child in process"
        );
        assert_eq!(request(&home, 1, DEADLINE)?["seq"], 1);
        let _ = home.exchange(
            "sample.request",
            json!({ "seq": 2, "drill": drill }),
            "sample.reply",
            Duration::from_millis(300),
        );
        let status = host.wait(DEADLINE)?;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "{drill}: {status}");
        assert!(
            home.exchange(
                "probe.ping",
                json!({ "to": "heartbeat", "seq": 3 }),
                "probe.pong",
                Duration::from_secs(1)
            )
            .is_err(),
            "{drill}: the probe died with the host"
        );
    }
    Ok(())
}

#[test]
fn a_host_killed_with_sigkill_leaves_no_plugin_process_and_a_child_holds_only_its_socket(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let config = ISOLATED.replace(
        "isolation = \"process\"\n",
        "isolation = \"process\"\nmemory_limit = \"8GiB\"\ncpu_limit = \"1h\"\n",
    );
    let home = home(&config)?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let child = the_child(host.pid())?;
    assert_eq!(request(&home, 1, DEADLINE)?["seq"], 1);

    // Only stdio and the socket pair: the home lock, the control socket and
    // the other components' descriptors stay with the host. The child opens
    // descriptors of its own after the exec (its runtime's epoll, eventfd,
    // a second handle on its socket), so what it holds above 3 must be
    // nothing the host holds.
    let targets = |pid: u32| -> Result<Vec<(u32, String)>> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let entry = entry?;
            let Some(fd) = entry.file_name().to_str().and_then(|f| f.parse().ok()) else {
                continue;
            };
            if let Ok(target) = std::fs::read_link(entry.path()) {
                all.push((fd, target.to_string_lossy().into_owned()));
            }
        }
        Ok(all)
    };
    let host_targets: BTreeSet<String> = targets(host.pid())?
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| !t.starts_with("anon_inode:"))
        .collect();
    let child_targets = targets(child)?;
    let socket = child_targets
        .iter()
        .find(|(fd, _)| *fd == 3)
        .map(|(_, t)| t.clone())
        .context("descriptor 3")?;
    assert!(socket.starts_with("socket:"), "{socket}");
    assert!(
        host_targets.iter().any(|t| t.contains("host.lock")),
        "the host holds its lock: {host_targets:?}"
    );
    let inherited: Vec<&(u32, String)> = child_targets
        .iter()
        .filter(|(fd, t)| *fd > 3 && *t != socket && host_targets.contains(t))
        .collect();
    assert!(
        inherited.is_empty(),
        "the child holds the host's {inherited:?}"
    );
    assert!(
        child_targets
            .iter()
            .all(|(_, t)| !t.contains(&home.path().display().to_string())),
        "nothing of the home: {child_targets:?}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{child}/limits"))?;
    let limit = |name: &str| -> Vec<String> {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        limit("Max address space"),
        ["8589934592", "8589934592"],
        "{limits}"
    );
    assert_eq!(limit("Max cpu time"), ["3600", "3605"], "{limits}");

    let started = Instant::now();
    let status = host.signal_and_wait(libc::SIGKILL)?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    poll_until(Duration::from_secs(10), "the plugin process gone", || {
        gone(child).then_some(())
    })?;
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[test]
fn an_isolated_component_under_stop_waits_for_a_manual_restart_of_its_process() -> Result<()> {
    let _machine = crate::machine::shared();
    let config = ISOLATED.replace(
        "restart_on_failure = \"10s\"",
        "restart_on_failure = \"stop\"",
    );
    let home = home(&config)?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let first = the_child(host.pid())?;
    let _ = home.exchange(
        "sample.request",
        json!({ "seq": 1, "drill": "abort" }),
        "sample.reply",
        Duration::from_millis(300),
    )?;
    poll_until(DEADLINE, "echo in ERROR", || {
        home.component("echo")
            .ok()
            .filter(|c| c["state"] == "ERROR")
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    let echo = home.component("echo")?;
    assert_eq!(echo["state"], "ERROR", "stays down under stop: {echo}");
    assert!(plugin_children(host.pid()).is_empty(), "no child meanwhile");
    others_answer(&home, 2)?;

    let out = home.cli(&["restart", "echo"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = request(&home, 3, DEADLINE)?;
    assert_eq!(reply["seq"], 3, "{reply}");
    let echo = poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    assert_eq!(echo["actors"]["process"]["restarts"], 1, "{echo}");
    assert!(
        echo["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("signal 6 (SIGABRT)"),
        "{echo}"
    );
    assert_ne!(the_child(host.pid())?, first);
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}

#[test]
fn isolation_of_a_built_in_kind_and_a_configuration_the_isolated_plugin_refuses_stop_the_start(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let built_in = home("[components.heartbeat]\nkind = \"probe\"\nisolation = \"process\"\n")?;
    let out = built_in.cli(&["run"])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "isolation = \"process\" applies to plugin kinds; probe is built into the host"
        ),
        "{stderr}"
    );

    // The plugin's own check of its table runs in the first child, before
    // anything starts, as it does in process.
    let refused = home(&ISOLATED.replace(
        "label = \"echo-isolated\"",
        "label = \"echo-isolated\"\ncolour = \"red\"",
    ))?;
    let out = refused.cli(&["run"])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("component echo") && stderr.contains("colour"),
        "{stderr}"
    );
    Ok(())
}

/// A started host process, killed when dropped.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_descriptor_the_host_inherited_open_across_exec_does_not_reach_the_plugin_process() -> Result<()>
{
    let _machine = crate::machine::shared();
    use std::os::{fd::AsRawFd, unix::process::CommandExt};
    // A host started by the launcher inherits the home lock this way: a
    // descriptor without close-on-exec, which every child of the host
    // would inherit unless it is closed for it.
    let home = home(ISOLATED)?;
    let canary_path = home.path().join("canary");
    let canary = std::fs::File::create(&canary_path)?;
    let fd = canary.as_raw_fd();
    let log = std::fs::File::create(home.log_path(1))?;
    let mut command = std::process::Command::new(banalytics_tests::box_bin());
    command
        .arg("--home")
        .arg(home.path())
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: dup2 between fork and exec, async-signal-safe. Descriptor
    // 200: above the plugin process's socket (3), as the lock would be;
    // dup2 leaves close-on-exec off.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 200) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let host = Started(command.spawn()?);
    drop(canary);
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let holds_canary = |pid: u32| -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|t| t == canary_path)
    };
    assert!(holds_canary(host.0.id()), "the host inherited the canary");
    let child = the_child(host.0.id())?;
    assert!(
        !holds_canary(child),
        "the plugin process holds the host's inherited descriptor"
    );
    assert_eq!(request(&home, 1, DEADLINE)?["seq"], 1);
    Ok(())
}

/// A plugin process deaf to everything but SIGKILL (it answers no `stop`,
/// stays when its socket closes, ignores SIGTERM): the host's own stop
/// goes through every step (the `stop` frame's grace, the socket closed,
/// SIGTERM, SIGKILL), ends it, and exits; no process is left behind.
#[test]
fn a_plugin_process_deaf_to_stop_and_sigterm_is_killed_when_the_host_stops() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home(ISOLATED)?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let child = the_child(host.pid())?;
    let answer = home.exchange(
        "sample.request",
        json!({ "seq": 1, "drill": "deaf" }),
        "sample.reply",
        Duration::from_millis(300),
    )?;
    assert!(answer.is_err(), "the drill answers nothing: {answer:?}");
    // SIGTERM ignored (bit 15 of the mask, counted from 1), before the
    // heartbeat (5 s) would kill the child on its own.
    poll_until(Duration::from_secs(3), "the child ignoring SIGTERM", || {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).ok()?;
        let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
        let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
        (mask & (1 << (libc::SIGTERM - 1)) != 0).then_some(())
    })?;

    let stopping = Instant::now();
    let status = host.signal_and_wait(libc::SIGTERM)?;
    let took = stopping.elapsed();
    assert_eq!(status.code(), Some(0), "the host stops cleanly");
    assert!(gone(child), "the deaf child is gone");
    let log = std::fs::read_to_string(home.log_path(1))?;
    for step in [
        "the plugin process did not stop in time",
        "the plugin process did not exit; sending SIGTERM",
        "the plugin process did not exit on SIGTERM; sending SIGKILL",
    ] {
        assert!(log.contains(step), "{step}:\n{log}");
    }
    // STOP_GRACE (6 s) + EXIT_GRACE (2 s) twice, and the host's own stop.
    assert!(
        took < Duration::from_secs(16),
        "the host's stop ended in {took:?}"
    );
    Ok(())
}

/// The files of the home a component must not change, with their bytes.
/// The sample's files drill: its answer, with each outcome in `files`.
fn files_drill(home: &TempHome) -> Result<Value> {
    match home.exchange(
        "sample.request",
        json!({ "seq": 7, "drill": "files" }),
        "sample.reply",
        DEADLINE,
    )? {
        Ok(reply) => Ok(reply),
        Err(why) => bail!("no answer to the files drill: {why}"),
    }
}

fn protected_files(home: &TempHome) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for dir in ["state/tuf", "config", "modules"] {
        let mut names: Vec<_> = std::fs::read_dir(home.path().join(dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = format!("{dir}/{name}");
            files.push((path.clone(), std::fs::read(home.path().join(&path))?));
        }
    }
    Ok(files)
}

/// The sample's files drill in an isolated component: every attempt on
/// the updater's trust (`state/tuf/root.json`: write, truncate, rename
/// over, unlink, read), on `config/box.toml` (read) and on `modules/`
/// (write, remove) is refused by the kernel, the files are unchanged, and
/// `data/` and the child's temporary folder are writable. `status` shows
/// the sandbox the kernel gives.
#[test]
fn an_isolated_component_cannot_touch_the_box_state_config_or_modules_and_writes_in_data(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home(ISOLATED)?;
    let tuf = home.path().join("state/tuf");
    std::fs::create_dir_all(&tuf)?;
    std::fs::write(
        tuf.join("root.json"),
        br#"{"signed": {"_type": "root", "version": 1}, "signatures": []}"#,
    )?;
    let before = protected_files(&home)?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let sandbox = home.status()?["host"]["sandbox"].clone();
    ensure!(
        sandbox["level"] == "full",
        "this machine's kernel has Landlock ABI 3 or later: {sandbox}"
    );

    let reply = files_drill(&home)?;
    let files = reply["files"].as_object().context("the drill's outcomes")?;
    for refused in [
        "write state/tuf/root.json",
        "truncate state/tuf/root.json",
        "rename over state/tuf/root.json",
        "unlink state/tuf/root.json",
        "read state/tuf/root.json",
        "read config/box.toml",
        "write modules/sample-drill.txt",
        "remove modules/modules-info.properties",
    ] {
        let outcome = files[refused].as_str().unwrap_or("");
        ensure!(
            outcome.contains("Permission denied") || outcome.contains("cross-device"),
            "{refused}: {outcome} (all: {reply})"
        );
    }
    for allowed in [
        "write data/sample-drill.txt",
        "write TMPDIR/sample-drill.txt",
        "create /dev/null",
    ] {
        ensure!(files[allowed] == "ok", "{allowed}: {reply}");
    }
    ensure!(
        std::fs::read(home.path().join("data/sample-drill.txt"))? == b"drill",
        "data/ is the component's to write in"
    );
    let after = protected_files(&home)?;
    ensure!(
        after == before,
        "state/tuf, config and modules unchanged: {:?}",
        after.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    // The component goes on as before.
    assert_eq!(request(&home, 8, DEADLINE)?["seq"], 8);
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    let log = std::fs::read_to_string(home.log_path(1))?;
    ensure!(
        log.contains("plugin process sandboxed: landlock=full no_new_privs=true"),
        "the child logs the level it reached:\n{log}"
    );
    Ok(())
}

/// The same drill in process: nothing stands between the component and
/// the box's files (what README says of in-process plugins).
#[test]
fn the_files_drill_in_a_component_that_is_not_isolated_rewrites_the_box_trust() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home(&ISOLATED.replace("isolation = \"process\"\n", ""))?;
    let tuf = home.path().join("state/tuf");
    std::fs::create_dir_all(&tuf)?;
    std::fs::write(tuf.join("root.json"), b"{}")?;
    std::fs::create_dir_all(home.path().join("data"))?;
    let host = home.start(1)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    let reply = files_drill(&home)?;
    for done in [
        "write state/tuf/root.json",
        "rename over state/tuf/root.json",
        "unlink state/tuf/root.json",
        "read config/box.toml",
    ] {
        ensure!(reply["files"][done] == "ok", "{done}: {reply}");
    }
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}
