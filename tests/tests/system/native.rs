//! Native modules per platform (issue 9, part 1) with the real
//! `banalytics-box` and the reference portal: a module built only for
//! another platform refuses the whole set before anything is downloaded.

use std::time::Duration;

use anyhow::{ensure, Result};
use banalytics_tests::{
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi},
    portal::{ModuleType, Portal, PortalConfig, PublishRequest},
    DEADLINE, PLATFORM,
};

/// A synchronisation on a loaded two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn a_plugin_published_only_for_another_platform_refuses_the_set_before_any_download() -> Result<()>
{
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let files = dir.path().join("files");
    let alpha = ModuleSpec::new("com.example:alpha:1.0", 20_000);
    portal.publish_all(&files, std::slice::from_ref(&alpha))?;
    let other = "riscv64gc-unknown-linux-gnu";
    let lib = files.join("libcamera.so");
    std::fs::write(&lib, b"a riscv64 build")?;
    portal.publish_module(&PublishRequest::native(
        "com.example:camera:1.0",
        ModuleType::Component,
        "so",
        [(other.to_owned(), lib)],
    ))?;
    let env = env_uuid(301);
    portal.assign_set(
        &env,
        &[
            "com.example:alpha:1.0".into(),
            "com.example:camera:1.0".into(),
        ],
    )?;
    portal.reset_counters()?;
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    b.spawn()?;

    let verdict = b.run_until(CONVERGE, "installation_cancelled", |_| {
        portal
            .statuses(&env)
            .ok()?
            .into_iter()
            .find(|l| l.status == "installation_cancelled")
    })?;
    ensure!(
        verdict.message.contains("com.example:camera:1.0") && verdict.message.contains(PLATFORM),
        "the refusal names the module and this box's platform: {verdict}"
    );
    let stats = portal.stats_report()?;
    ensure!(
        stats.bytes(&alpha.repo_path()) == 0,
        "nothing was downloaded, not even the module that has a build"
    );
    let status = b.status()?;
    ensure!(
        status["upgrade"]["staged"].is_null(),
        "nothing staged: {status}"
    );
    ensure!(b.exits().is_empty(), "no restart: {:?}", b.exits());
    portal.wait_connected(&env, DEADLINE)?;
    ensure!(b.stop()?.success());
    Ok(())
}
