//! Component plugins in the real `banalytics-box run` process: the sample
//! plugin (`components/sample`) built as a `cdylib`, installed in a box's
//! `modules/` as the main artifact of a component module, loaded at start,
//! and spoken to over the host bus through the control socket's `exchange`
//! request (publish on one topic, answer the first message on another).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{poll_until, TempHome, DEADLINE};
use serde_json::{json, Value};

/// The plugin ABI version of this SDK, and the one the sample's
/// `abi-mismatch` feature declares.
const ABI_VERSION: u32 = 2;
const OTHER_ABI_VERSION: u32 = 3;

/// The sample plugin, built once per test run: the normal library, the
/// one with another ABI version and the misbehaving one (feature `forge`),
/// copied out of the target folder.
pub(crate) struct Samples {
    pub(crate) normal: PathBuf,
    pub(crate) abi_mismatch: PathBuf,
    pub(crate) forge: PathBuf,
}

pub(crate) fn samples() -> &'static Samples {
    static BUILT: OnceLock<Samples> = OnceLock::new();
    BUILT.get_or_init(|| build_samples().expect("building the sample plugin"))
}

/// The sample plugin library, for the tests of other areas that install it
/// as a module.
pub(crate) fn sample_plugin() -> &'static Path {
    &samples().normal
}

fn build_samples() -> Result<Samples> {
    // This test runs from `{target}/{profile}/deps/`; build into the same
    // target folder, so only the sample crate itself is compiled again.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("profile folder")?;
    let target = profile_dir.parent().context("target folder")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?;
    let fixtures = target.join("plugin-fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let library = format!(
        "{}banalytics_sample.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    );
    let mut built = Vec::new();
    // Both builds put the cdylib at the same path, so each is copied away
    // before the next.
    for (features, name) in [
        (Some("abi-mismatch"), "abi-mismatch"),
        (Some("forge"), "forge"),
        (None, "normal"),
    ] {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "banalytics-sample", "--lib"])
            .arg("--target-dir")
            .arg(target);
        if release {
            cargo.arg("--release");
        }
        if let Some(f) = features {
            cargo.args(["--features", f]);
        }
        let status = cargo.status().context("running cargo build")?;
        ensure!(
            status.success(),
            "cargo build of the sample failed: {status}"
        );
        let copy = fixtures.join(format!("{name}.{}", std::env::consts::DLL_EXTENSION));
        std::fs::copy(profile_dir.join(&library), &copy)?;
        built.push(copy);
    }
    Ok(Samples {
        abi_mismatch: built.remove(0),
        forge: built.remove(0),
        normal: built.remove(0),
    })
}

/// The file name of the library of component module `coords`
/// (`groupId:artifactId:version`): `{groupId}-{artifactId}-{version}.so`.
fn library_name(coords: &str) -> String {
    format!(
        "{}.{}",
        coords.replace(':', "-"),
        std::env::consts::DLL_EXTENSION
    )
}

/// A home with `config`, and in `modules/` a set of component modules
/// (coordinates, library), each library its module's main artifact, as an
/// installed set lists them in `modules-info.properties`.
pub(crate) fn home_with_modules(config: &str, modules: &[(&str, &Path)]) -> Result<TempHome> {
    let home = TempHome::new(config)?;
    let dir = home.path().join("modules");
    std::fs::create_dir_all(&dir)?;
    let mut info = String::from("#installed by the test\n");
    for (coords, source) in modules {
        std::fs::copy(source, dir.join(library_name(coords)))?;
        info.push_str(&format!(
            "{}=component\\:1700000000\n",
            coords.replace(':', "\\:")
        ));
    }
    std::fs::write(dir.join("modules-info.properties"), info)?;
    Ok(home)
}

fn exchange(
    home: &TempHome,
    topic: &str,
    message: Value,
    reply_topic: &str,
    timeout: Duration,
) -> Result<std::result::Result<Value, String>> {
    home.exchange(topic, message, reply_topic, timeout)
}

fn request(home: &TempHome, seq: u64, panic: bool, timeout: Duration) -> Result<Value> {
    match exchange(
        home,
        "sample.request",
        json!({ "seq": seq, "panic": panic }),
        "sample.reply",
        timeout,
    )? {
        Ok(reply) => Ok(reply),
        Err(why) => bail!("no reply to request {seq}: {why}"),
    }
}

pub(crate) fn ping(home: &TempHome, to: &str, seq: u64) -> Result<Value> {
    match exchange(
        home,
        "probe.ping",
        json!({ "to": to, "seq": seq }),
        "probe.pong",
        Duration::from_secs(5),
    )? {
        Ok(pong) => Ok(pong),
        Err(why) => bail!("no pong to ping {seq}: {why}"),
    }
}

pub(crate) fn wait_for_state(home: &TempHome, name: &str, state: &str) -> Result<Value> {
    poll_until(DEADLINE, &format!("{name} in {state}"), || {
        home.component(name).ok().filter(|c| c["state"] == state)
    })
}

const ECHO_AND_PROBE: &str = r#"
[components.heartbeat]
kind = "probe"
restart_on_failure = "immediate"

[components.echo]
kind = "sample-echo"
restart_on_failure = "10s"
label = "echo-plugin"
"#;

#[test]
fn a_plugin_component_answers_over_the_host_bus_and_logs_into_the_host() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home_with_modules(
        ECHO_AND_PROBE,
        &[("com.example:sample:1.0", &samples().normal)],
    )?;
    let host = home.start(1)?;
    let echo = wait_for_state(&home, "echo", "RUN")?;
    assert_eq!(echo["kind"], "sample-echo");
    assert_eq!(echo["actors"]["echo"]["state"], "RUN", "{echo}");

    for seq in 1..=20 {
        let reply = request(&home, seq, false, Duration::from_secs(5))?;
        assert_eq!(
            reply,
            json!({ "seq": seq, "from": "echo-plugin", "generation": 1 }),
            "the plugin's configuration crossed too (label)"
        );
    }
    assert_eq!(ping(&home, "heartbeat", 1)?["from"], "heartbeat");

    let status = host.signal_and_wait(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(home.log_path(1))?;
    assert!(log.contains("plugin loaded"), "{log}");
    let started = log
        .lines()
        .find(|l| l.contains("sample echo started"))
        .with_context(|| format!("the plugin's own log line is in the host's log:\n{log}"))?;
    assert!(
        started.contains("plugin=com.example-sample-1.0.so"),
        "tagged with the plugin: {started}"
    );
    Ok(())
}

#[test]
fn a_panic_in_the_plugin_actor_is_restarted_after_the_policy_delay() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home_with_modules(
        ECHO_AND_PROBE,
        &[("com.example:sample:1.0", &samples().normal)],
    )?;
    let host = home.start(1)?;
    wait_for_state(&home, "echo", "RUN")?;
    assert_eq!(request(&home, 1, false, DEADLINE)?["generation"], 1);

    let panicked = Instant::now();
    let answer = exchange(
        &home,
        "sample.request",
        json!({ "seq": 2, "panic": true }),
        "sample.reply",
        Duration::from_millis(300),
    )?;
    assert!(answer.is_err(), "a panicking handler answers nothing");
    let echo = wait_for_state(&home, "echo", "ERROR")?;
    assert_eq!(echo["actors"]["echo"]["state"], "ERROR", "{echo}");
    assert!(
        echo["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("request 2 asked echo to panic"),
        "{echo}"
    );

    // The host and the other component go on while the plugin waits.
    assert_eq!(ping(&home, "heartbeat", 3)?["generation"], 1);
    assert_eq!(home.component("heartbeat")?["state"], "RUN");

    // A request sent during the delay waits in the actor's mailbox and is
    // answered by the restarted actor, after the policy's 10 s.
    let reply = request(&home, 4, false, Duration::from_secs(15))?;
    let waited = panicked.elapsed();
    assert_eq!(
        reply,
        json!({ "seq": 4, "from": "echo-plugin", "generation": 2 })
    );
    assert!(
        waited >= Duration::from_millis(9_500),
        "restarted after the 10 s delay, not before: {waited:?}"
    );
    let echo = wait_for_state(&home, "echo", "RUN")?;
    assert_eq!(echo["restart_count"], 1, "{echo}");
    assert_eq!(echo["actors"]["echo"]["restarts"], 1, "{echo}");
    let heartbeat = home.component("heartbeat")?;
    assert_eq!(
        (&heartbeat["state"], &heartbeat["restart_count"]),
        (&json!("RUN"), &json!(0))
    );
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_failed_plugin_actor_under_stop_waits_for_a_manual_restart() -> Result<()> {
    let _machine = crate::machine::shared();
    let config = ECHO_AND_PROBE.replace(
        "restart_on_failure = \"10s\"",
        "restart_on_failure = \"stop\"",
    );
    let home = home_with_modules(&config, &[("com.example:sample:1.0", &samples().normal)])?;
    let host = home.start(1)?;
    wait_for_state(&home, "echo", "RUN")?;
    let answer = exchange(
        &home,
        "sample.request",
        json!({ "seq": 1, "panic": true }),
        "sample.reply",
        Duration::from_millis(300),
    )?;
    assert!(answer.is_err());
    wait_for_state(&home, "echo", "ERROR")?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        home.component("echo")?["state"],
        "ERROR",
        "stays down under stop"
    );

    let out = home.cli(&["restart", "echo"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = request(&home, 2, false, DEADLINE)?;
    assert_eq!(reply["generation"], 2, "answered by a fresh actor: {reply}");
    let echo = wait_for_state(&home, "echo", "RUN")?;
    assert_eq!(echo["restart_count"], 1, "{echo}");
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_plugin_of_another_abi_and_component_libraries_that_are_not_plugins_are_refused_unopened(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.so");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&junk, bytes)?;
    let mut modules = vec![
        ("com.example:sample:2.0", samples().abi_mismatch.as_path()),
        ("com.example:junk:1.0", junk.as_path()),
    ];
    // A real shared library that is not a plugin, where the system has one.
    let libm = Path::new("/lib/x86_64-linux-gnu/libm.so.6");
    if libm.exists() {
        modules.push(("com.example:libm-copy:1.0", libm));
    }
    let home = home_with_modules("[components.heartbeat]\nkind = \"probe\"\n", &modules)?;
    // A library in the folder that no module has as its main artifact.
    std::fs::copy(&samples().normal, home.path().join("modules/stray.so"))?;
    let host = home.start(1)?;
    wait_for_state(&home, "heartbeat", "RUN")?;
    assert_eq!(ping(&home, "heartbeat", 1)?["from"], "heartbeat");

    let modules = home.path().join("modules");
    let log = host.log();
    let refused = |expected: String| -> Result<()> {
        let line = log
            .lines()
            .find(|l| l.contains(&expected))
            .with_context(|| format!("{expected:?} in\n{log}"))?;
        assert!(line.contains("ERROR"), "{line}");
        Ok(())
    };
    refused(format!(
        "plugin {}: ABI version mismatch: expected {ABI_VERSION}, found {OTHER_ABI_VERSION}",
        modules.join("com.example-sample-2.0.so").display()
    ))?;
    refused(format!(
        "plugin {}: not a library",
        modules.join("com.example-junk-1.0.so").display()
    ))?;
    if libm.exists() {
        refused(format!(
            "plugin {}: no plugin identity (no section .banalytics_plugin)",
            modules.join("com.example-libm-copy-1.0.so").display()
        ))?;
    }
    assert!(!log.contains("plugin loaded"), "{log}");
    assert!(!log.contains("stray.so"), "{log}");
    // Refused before dlopen: the running host has none of them mapped.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host.pid()))?;
    assert!(!maps.contains(&modules.display().to_string()), "{maps}");
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));

    // Its kind is unknown, so a configuration naming it is refused.
    std::fs::write(
        home.path().join("config/box.toml"),
        "[components.echo]\nkind = \"sample-echo\"\n",
    )?;
    let out = home.cli(&["run"])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sample-echo"), "{stderr}");
    Ok(())
}

#[test]
fn a_second_plugin_exporting_the_same_kind_is_refused_naming_both() -> Result<()> {
    let _machine = crate::machine::shared();
    let home = home_with_modules(
        ECHO_AND_PROBE,
        &[
            ("com.example:sample:1.0", &samples().normal),
            ("com.example:sample-copy:1.0", &samples().normal),
        ],
    )?;
    let host = home.start(1)?;
    wait_for_state(&home, "echo", "RUN")?;
    assert_eq!(request(&home, 1, false, DEADLINE)?["seq"], 1);
    let modules = home.path().join("modules");
    let expected = format!(
        "plugin {}: kind \"sample-echo\" is already exported by {}",
        modules.join("com.example-sample-copy-1.0.so").display(),
        modules.join("com.example-sample-1.0.so").display()
    );
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains(&expected) || l.contains(&expected.replace('"', "\\\"")))
        .with_context(|| format!("{expected:?} in\n{log}"))?;
    assert!(line.contains("ERROR"), "{line}");
    Ok(())
}

#[test]
fn the_portal_upgrades_a_plugin_module_and_the_component_runs_from_the_new_file() -> Result<()> {
    let _machine = crate::machine::shared();
    use banalytics_tests::portal::{Portal, PortalConfig, PublishRequest};
    const ENV: &str = "5f0c7a1e-0000-4000-8000-0000000e110e";
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    for version in ["1.0", "2.0"] {
        portal.publish(&PublishRequest::plugin(
            &format!("com.example:sample:{version}"),
            &samples().normal,
        ))?;
    }
    portal.assign(ENV, &["com.example:sample:1.0"])?;
    let base = format!(
        "[components.portal]\nkind = \"portal-integration\"\nportal_url = \"{}\"\n\n[components.upgrade-center]\nkind = \"software-upgrade-center\"\nrepository_url = \"{}\"\nhealth_grace_s = 0.3\n",
        portal.portal_url(),
        portal.repo_url()
    );
    let home = TempHome::new(&base)?;
    banalytics_tests::e2e::register_home(&portal, &home.path(), ENV)?;
    let installed = |n: usize| {
        poll_until(DEADLINE, "installed at the portal", || {
            let e = portal.environment(ENV)?;
            (e.statuses
                .iter()
                .filter(|s| s.status == "installed")
                .count()
                >= n)
                .then_some(())
        })
    };

    // First run: v1 staged, restart (75), applied, committed.
    ensure!(home.start(1)?.wait(DEADLINE)?.code() == Some(75));
    let host = home.start(2)?;
    installed(1)?;
    ensure!(host.signal_and_wait(libc::SIGTERM)?.success());

    // The operator adds the plugin's component now that its module is here.
    std::fs::write(
        home.path().join("config/box.toml"),
        format!("{base}\n[components.echo]\nkind = \"sample-echo\"\nrestart_on_failure = \"immediate\"\n"),
    )?;
    let host = home.start(3)?;
    let echo = wait_for_state(&home, "echo", "RUN")?;
    ensure!(echo["origin"] == "com.example-sample-1.0.so", "{echo}");
    ensure!(request(&home, 1, false, Duration::from_secs(5))?["seq"] == 1);

    // The portal assigns v2: the box stages it and restarts to apply it.
    portal.assign(ENV, &["com.example:sample:2.0"])?;
    ensure!(portal.sync(ENV) == 1);
    ensure!(host.wait(DEADLINE)?.code() == Some(75));
    let host = home.start(4)?;
    installed(2)?;
    let echo = wait_for_state(&home, "echo", "RUN")?;
    ensure!(
        echo["origin"] == "com.example-sample-2.0.so",
        "runs from {echo}"
    );
    ensure!(!home
        .path()
        .join("modules/com.example-sample-1.0.so")
        .exists());
    ensure!(request(&home, 2, false, Duration::from_secs(5))?["seq"] == 2);
    ensure!(host.signal_and_wait(libc::SIGTERM)?.success());
    Ok(())
}
