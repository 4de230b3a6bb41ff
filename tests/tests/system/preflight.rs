//! Preflight at staging: a set the box would not start is never staged,
//! and only the main artifacts of component modules are ever loaded as
//! plugins. The real box against the reference portal, with the sample
//! plugin (`components/sample`) as a component module.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    fixtures::zip_of,
    poll_until,
    portal::{ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
    TempHome, DEADLINE,
};
use serde_json::{json, Value};

use crate::plugins::samples;

/// The library file name of component module `coords`.
fn library_name(coords: &str) -> String {
    format!(
        "{}.{}",
        coords.replace(':', "-"),
        std::env::consts::DLL_EXTENSION
    )
}

/// Publishes `coords` as a plugin module: `library` as its main artifact.
fn publish_plugin(portal: &PortalHandle, coords: &str, library: &Path) -> Result<()> {
    portal.publish(&PublishRequest::plugin(coords, library))?;
    Ok(())
}

/// Publishes `coords` as a component module with a jar main artifact and,
/// when given, a dependencies package of `bin` entries.
fn publish_jar(
    portal: &PortalHandle,
    dir: &Path,
    coords: &str,
    bin: &[(&str, &[u8])],
) -> Result<()> {
    let main = dir.join(format!("{}.jar", coords.replace(':', "-")));
    std::fs::write(&main, format!("{coords} main ").repeat(100))?;
    let mut req = PublishRequest::new(coords, ModuleType::Component, &main);
    if !bin.is_empty() {
        let zip = dir.join(format!("{}-bin.zip", coords.replace(':', "-")));
        std::fs::write(&zip, zip_of(bin))?;
        req.bin = Some(zip);
    }
    portal.publish(&req)?;
    Ok(())
}

/// `box.toml` with the portal link and the upgrade center.
fn base_config(portal: &PortalHandle) -> String {
    format!(
        "[components.portal]\nkind = \"portal-integration\"\nportal_url = \"{}\"\n\n[components.upgrade-center]\nkind = \"software-upgrade-center\"\nrepository_url = \"{}\"\nhealth_grace_s = 0.3\n",
        portal.portal_url(),
        portal.repo_url()
    )
}

fn registered_home(portal: &PortalHandle, config: &str, env: &str) -> Result<TempHome> {
    let home = TempHome::new(config)?;
    banalytics_tests::e2e::register_home(portal, &home.path(), env)?;
    Ok(home)
}

/// The statuses `env` reported with `status`, in order.
fn statuses(portal: &PortalHandle, env: &str, status: &str) -> Vec<Value> {
    portal
        .environment(env)
        .map(|e| {
            e.statuses
                .iter()
                .filter(|s| s.status == status)
                .map(|s| s.status_message.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `env` reported `status` `n` times; the last message.
fn reported(portal: &PortalHandle, env: &str, status: &str, n: usize) -> Result<Value> {
    poll_until(DEADLINE, &format!("{status} #{n} at the portal"), || {
        let all = statuses(portal, env, status);
        (all.len() >= n).then(|| all[n - 1].clone())
    })
}

/// No staged set and no scratch folder of one.
fn assert_nothing_staged(home: &TempHome) {
    for dir in [
        "modules-upgrade",
        "modules-upgrade.tmp",
        "models-upgrade",
        "models-upgrade.tmp",
    ] {
        assert!(!home.path().join(dir).exists(), "{dir} is left");
    }
}

fn echo_request(home: &TempHome, seq: u64) -> Result<Value> {
    home.exchange(
        "sample.request",
        json!({ "seq": seq, "panic": false }),
        "sample.reply",
        std::time::Duration::from_secs(5),
    )?
    .map_err(|why| anyhow::anyhow!("no reply to request {seq}: {why}"))
}

#[test]
fn a_set_removing_the_plugin_of_a_configured_kind_is_cancelled_and_the_box_runs_on() -> Result<()> {
    let _machine = crate::machine::shared();
    const ENV: &str = "5f0c7a1e-0000-4000-8000-00000000f001";
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    publish_plugin(&portal, "com.example:sample:1.0", &samples().normal)?;
    publish_jar(&portal, dir.path(), "com.example:other:1.0", &[])?;
    portal.assign(ENV, &["com.example:sample:1.0"])?;
    let base = base_config(&portal);
    let home = registered_home(&portal, &base, ENV)?;

    // First run installs the plugin module; then the operator configures
    // a component of its kind.
    ensure!(home.start(1)?.wait(DEADLINE)?.code() == Some(75));
    let host = home.start(2)?;
    reported(&portal, ENV, "installed", 1)?;
    ensure!(host.signal_and_wait(libc::SIGTERM)?.success());
    std::fs::write(
        home.path().join("config/box.toml"),
        format!("{base}\n[components.echo]\nkind = \"sample-echo\"\n"),
    )?;
    let mut host = home.start(3)?;
    poll_until(DEADLINE, "echo in RUN", || {
        home.component("echo").ok().filter(|c| c["state"] == "RUN")
    })?;
    ensure!(echo_request(&home, 1)?["seq"] == 1);
    let active = banalytics_tests::fixtures::tree(&home.path().join("modules"));

    // The portal assigns a set without the plugin module.
    portal.assign(ENV, &["com.example:other:1.0"])?;
    poll_until(DEADLINE, "the box's portal link", || {
        (portal.sync(ENV) == 1).then_some(())
    })?;
    let message = reported(&portal, ENV, "installation_cancelled", 1)?;
    let message = message.as_str().context("a status message")?;
    assert_eq!(
        message,
        "target set com.example:other:1.0 refused before staging: component \"echo\" of box.toml has kind \"sample-echo\", which neither a built-in kind nor a plugin of the set provides; nothing was staged, the active set is unchanged"
    );
    assert_nothing_staged(&home);
    let sync = poll_until(DEADLINE, "the synchronisation to end", || {
        let c = home.component("upgrade-center").ok()?;
        let sync = c["details"]["sync"].clone();
        (sync["state"] == "cancelled").then_some(sync)
    })?;
    assert_eq!(sync["result"], message);

    // No restart was asked for: the box runs on its set.
    assert!(host.is_running(), "the box restarted:\n{}", host.log());
    ensure!(echo_request(&home, 2)?["seq"] == 2);
    assert_eq!(
        banalytics_tests::fixtures::tree(&home.path().join("modules")),
        active
    );
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_set_with_a_plugin_of_another_abi_is_cancelled_naming_the_file_expected_and_found() -> Result<()>
{
    let _machine = crate::machine::shared();
    const ENV: &str = "5f0c7a1e-0000-4000-8000-00000000f002";
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    publish_plugin(&portal, "com.example:sample:3.0", &samples().abi_mismatch)?;
    portal.assign(ENV, &["com.example:sample:3.0"])?;
    let home = registered_home(&portal, &base_config(&portal), ENV)?;

    // A first run synchronises at start.
    let mut host = home.start(1)?;
    let message = reported(&portal, ENV, "installation_cancelled", 1)?;
    let abi: u32 = 2;
    assert_eq!(
        message.as_str(),
        Some(
            format!(
                "target set com.example:sample:3.0 refused before staging: module com.example:sample:3.0: plugin {}: ABI version mismatch: expected {abi}, found {}; nothing was staged, the active set is unchanged",
                library_name("com.example:sample:3.0"),
                abi + 1
            )
            .as_str()
        )
    );
    assert_nothing_staged(&home);
    assert!(host.is_running(), "the box restarted:\n{}", host.log());
    assert!(!home.path().join("modules/modules-info.properties").exists());
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_library_inside_a_dependencies_package_is_never_loaded() -> Result<()> {
    let _machine = crate::machine::shared();
    const ENV: &str = "5f0c7a1e-0000-4000-8000-00000000f003";
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let library = std::fs::read(&samples().normal)?;
    let sneaky = format!("libsneaky.{}", std::env::consts::DLL_EXTENSION);
    publish_plugin(&portal, "com.example:sample:1.0", &samples().normal)?;
    publish_jar(
        &portal,
        dir.path(),
        "com.example:carrier:1.0",
        &[(&sneaky, &library)],
    )?;
    portal.assign(ENV, &["com.example:sample:1.0", "com.example:carrier:1.0"])?;
    let home = registered_home(&portal, &base_config(&portal), ENV)?;

    ensure!(home.start(1)?.wait(DEADLINE)?.code() == Some(75));
    let host = home.start(2)?;
    reported(&portal, ENV, "installed", 1)?;
    let modules = home.path().join("modules");
    assert!(
        modules.join(&sneaky).is_file(),
        "the package was extracted into the set"
    );

    let log = host.log();
    let loaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin loaded"))
        .collect();
    assert_eq!(loaded.len(), 1, "{log}");
    assert!(
        loaded[0].contains(&library_name("com.example:sample:1.0")),
        "{log}"
    );
    assert!(!log.contains(&sneaky), "{log}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host.pid()))?;
    assert!(
        maps.contains(
            &modules
                .join(library_name("com.example:sample:1.0"))
                .display()
                .to_string()
        ),
        "the plugin module's library is loaded"
    );
    assert!(
        !maps.contains(&sneaky),
        "the dependency package's library is not loaded"
    );
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}
