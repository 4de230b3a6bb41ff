//! A hostile dependencies package against the real box (issue 20, item 2):
//! names so long and deep that recording every parent of each would cost
//! the host gigabytes are refused by their length, in bounded memory.

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    fixtures::zip_of,
    poll_until,
    portal::{ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
    TempHome, DEADLINE,
};

/// The host's peak resident set must stay under this while it refuses the
/// package (a debug build idles well below it; the package once cost
/// 2.6 GiB).
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The peak resident set (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// The messages `env` reported with `status`, in order.
fn reported(portal: &PortalHandle, env: &str, status: &str) -> Vec<String> {
    portal
        .environment(env)
        .map(|e| {
            e.statuses
                .iter()
                .filter(|s| s.status == status)
                .map(|s| s.status_message.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_package_of_deep_60_000_byte_names_is_refused_in_bounded_memory() -> Result<()> {
    let _machine = crate::machine::shared();
    const ENV: &str = "5f0c7a1e-0000-4000-8000-00000000a020";
    const COORDS: &str = "com.example:deep:1.0";
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;

    // Four entries, each a 60 000-byte name 30 000 folders deep.
    let names: Vec<String> = (0..4)
        .map(|i| format!("{i}{}y", "/x".repeat(29_999)))
        .collect();
    ensure!(names
        .iter()
        .all(|n| n.len() == 60_000 && n.split('/').count() == 30_000));
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let zip = dir.path().join("deep-1.0-bin.zip");
    std::fs::write(&zip, zip_of(&entries))?;
    let main = dir.path().join("deep-1.0.jar");
    std::fs::write(&main, "deep main ".repeat(100))?;
    let mut req = PublishRequest::new(COORDS, ModuleType::Component, &main);
    req.bin = Some(zip);
    portal.publish(&req)?;
    portal.assign(ENV, &[COORDS])?;

    let home = TempHome::new(&format!(
        "[components.portal]\nkind = \"portal-integration\"\nportal_url = \"{}\"\n\n[components.upgrade-center]\nkind = \"software-upgrade-center\"\nrepository_url = \"{}\"\n",
        portal.portal_url(),
        portal.repo_url()
    ))?;
    banalytics_tests::e2e::register_home(&portal, &home.path(), ENV)?;

    // A first run synchronises at start.
    let mut host = home.start(1)?;
    let outcome = poll_until(DEADLINE * 3, "installation_cancelled at the portal", || {
        reported(&portal, ENV, "installation_cancelled")
            .into_iter()
            .next()
    });
    let peak = peak_rss_kib(host.pid())?;
    eprintln!("host peak RSS (VmHWM) while refusing the package: {peak} KiB");
    let message = outcome.with_context(|| format!("the host's peak RSS: {peak} KiB"))?;
    ensure!(
        peak < PEAK_RSS_LIMIT_KIB,
        "the host peaked at {peak} KiB while refusing the package"
    );
    ensure!(
        message.contains(COORDS)
            && message.contains("has a name of 60000 bytes, over the limit of 4096")
            && message.len() < 1000,
        "the refusal names the module, the length and the limit, shortened: {message}"
    );
    ensure!(
        reported(&portal, ENV, "installed").is_empty(),
        "nothing was installed"
    );
    for dir in [
        "modules-upgrade",
        "modules-upgrade.tmp",
        "models-upgrade.tmp",
    ] {
        ensure!(
            !home.path().join(dir).exists(),
            "nothing was staged, and the refused staging left no {dir}"
        );
    }
    assert!(host.is_running(), "the host died:\n{}", host.log());
    assert_eq!(host.signal_and_wait(libc::SIGTERM)?.code(), Some(0));
    Ok(())
}
