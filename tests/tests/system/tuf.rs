//! Authentic artifacts: real boxes with `trust_root` against the reference
//! portal, which signs its repository with TUF. In every refusal test the
//! portal sends digests (frame and `.sha256`) that match the bad bytes:
//! only the signed metadata stands between them and the box.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi, StatusLine},
    portal::{tuf, Faults, Portal, PortalConfig, PortalHandle},
    DEADLINE,
};

/// A whole synchronisation, restart and commit on a loaded machine.
pub(crate) const CONVERGE: Duration = Duration::from_secs(60);

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) portal: PortalHandle,
}

/// A portal whose repository has TUF keys (`refresh` off: the tests set
/// the timestamp's expiry themselves).
pub(crate) fn signed_world() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    std::fs::create_dir_all(&data)?;
    let opts = tuf::KeysInit {
        lifetimes: tuf::Lifetimes {
            refresh: false,
            ..Default::default()
        },
        ..Default::default()
    };
    tuf::keys_init(&data, &opts)?;
    let portal = Portal::spawn(PortalConfig::new(&data))?;
    Ok(World { dir, portal })
}

impl World {
    pub(crate) fn files(&self) -> std::path::PathBuf {
        self.dir.path().join("files")
    }

    /// A box of `env` that pins the portal's root.
    pub(crate) fn trusting_box(&self, env: &str) -> Result<ManagedBox> {
        let mut s = BoxSettings::new(&self.portal, Some(env));
        s.upgrade_extra = "trust_root = \"config/repository-root.json\"\n".into();
        let b = ManagedBox::new(&s)?;
        std::fs::copy(
            tuf::root_path(self.portal.data_dir()),
            b.path().join("config/repository-root.json"),
        )?;
        Ok(b)
    }
}

pub(crate) fn set_v1() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.tuf:alpha:1.0", 30_000).with_packages(),
        ModuleSpec::new("com.example.tuf:beta:1.0", 20_000),
    ]
}

pub(crate) fn set_v2() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::new("com.example.tuf:alpha:1.0", 30_000).with_packages(),
        ModuleSpec::new("com.example.tuf:beta:2.0", 25_000),
    ]
}

pub(crate) fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

pub(crate) fn sorted(specs: &[ModuleSpec]) -> Vec<String> {
    let mut c = coords(specs);
    c.sort();
    c
}

/// Supervises `b` until `portal` has a verdict for `env` after status
/// `after`: `installed` (and the box committed) or a refusal.
pub(crate) fn verdict(
    portal: &dyn PortalApi,
    b: &mut ManagedBox,
    env: &str,
    after: usize,
) -> Result<StatusLine> {
    let line = b.run_until(CONVERGE, "a verdict", |_| {
        portal
            .statuses(env)
            .ok()?
            .into_iter()
            .skip(after)
            .find(|l| {
                ["installed", "installation_cancelled", "download_error"]
                    .contains(&l.status.as_str())
            })
    })?;
    if line.status == "installed" {
        b.run_until(DEADLINE, "the committed set", |b| {
            let s = b.status().ok()?;
            (s["host"]["running"] == true && s["upgrade"]["probation"].is_null()).then_some(())
        })?;
    }
    Ok(line)
}

/// Asks the connected box to synchronise; returns the statuses seen before.
pub(crate) fn sync(portal: &dyn PortalApi, env: &str) -> Result<usize> {
    let seen = portal.statuses(env)?.len();
    portal.wait_connected(env, DEADLINE)?;
    ensure!(portal.sync_env(env)? == 1, "the box is not connected");
    Ok(seen)
}

pub(crate) fn install_v1(w: &World, env: &str) -> Result<ManagedBox> {
    w.portal.publish_all(&w.files(), &set_v1())?;
    w.portal.assign_set(env, &coords(&set_v1()))?;
    let mut b = w.trusting_box(env)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, env, 0)?;
    ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    Ok(b)
}

fn metadata_requests(w: &World) -> Result<Vec<String>> {
    Ok(w.portal
        .stats_report()?
        .paths
        .into_iter()
        .filter(|(p, s)| p.starts_with("/repo/.tuf/") && s.requests > 0)
        .map(|(p, _)| p)
        .collect())
}

#[test]
fn a_box_with_trust_root_installs_from_the_signed_portal_and_a_no_change_sync_fetches_only_the_timestamp(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1101);
    let mut b = install_v1(&w, &env)?;
    let store = b.path().join("state/tuf");
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        ensure!(store.join(f).is_file(), "{f} kept in the home");
    }
    // Nothing changed: one request, for timestamp.json.
    w.portal.reset_counters()?;
    let seen = sync(&w.portal, &env)?;
    b.run_until(CONVERGE, "the no-change sync", |_| {
        let n = w.portal.statuses(&env).ok()?.len();
        let asked = metadata_requests(&w).ok()?;
        (n > seen || !asked.is_empty()).then_some(())
    })?;
    // Let the synchronisation finish before reading the counters.
    b.run_until(CONVERGE, "the sync to end", |b| {
        let s = b.sync_report()?;
        (s["state"] == "up-to-date").then_some(())
    })?;
    let asked = metadata_requests(&w)?;
    ensure!(
        asked == ["/repo/.tuf/timestamp.json"],
        "a no-change sync fetched {asked:?}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_tampered_artifact_is_refused_although_the_portal_sends_its_digests() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1102);
    // Signed: alpha 1.0 as published.
    w.portal.publish_all(&w.files(), &set_v1())?;
    // Someone with the repository but not the keys replaces beta 1.0; the
    // portal's module object and the `.sha256` file follow the new bytes.
    let evil = ModuleSpec::new("com.example.tuf:beta:1.0", 20_000);
    let evil_dir = w.dir.path().join("evil");
    let req = evil.write(&evil_dir)?;
    let bytes = std::fs::read(&req.file)?;
    let mut tampered = bytes.clone();
    tampered[100] ^= 0xff;
    std::fs::write(&req.file, &tampered)?;
    let published = w.portal.publish_unsigned(&req)?;
    let digest = hex_sha256(&tampered);
    ensure!(
        published.sha256 == digest,
        "the portal sends the bad bytes' digest"
    );
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    let mut b = w.trusting_box(&env)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(
        v.status == "download_error" && v.module == "beta:1.0",
        "{v}\n{}",
        b.log_tail(40)
    );
    ensure!(
        b.installed()?.is_empty(),
        "nothing installed: {:?}",
        b.installed()?
    );
    let cached = b.path().join("modules-download/beta-1.0.jar");
    ensure!(!cached.exists(), "the bad bytes were promoted to the cache");
    ensure!(b.stop()?.success());
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn an_expired_timestamp_is_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1103);
    w.portal.publish_all(&w.files(), &set_v1())?;
    w.portal.sign_tuf_with(Some(-60))?;
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    let mut b = w.trusting_box(&env)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(
        v.status == "installation_cancelled"
            && v.message.contains("repository metadata refused")
            && v.message.to_lowercase().contains("expired"),
        "{v}"
    );
    ensure!(b.installed()?.is_empty());
    ensure!(
        !b.path().join("modules-download/alpha-1.0.jar").exists(),
        "nothing downloaded"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_replayed_older_snapshot_is_refused() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1104);
    let meta = tuf::metadata_dir(w.portal.data_dir());
    // Metadata version 1 (alpha, beta 1.0), kept by the attacker.
    w.portal.publish_all(&w.files(), &set_v1())?;
    let old: Vec<(String, Vec<u8>)> = ["snapshot.json", "timestamp.json", "targets.json"]
        .iter()
        .map(|f| Ok((f.to_string(), std::fs::read(meta.join(f))?)))
        .collect::<Result<_>>()?;
    // A newer publication; the box sees it while installing.
    w.portal.publish_all(&w.files(), &set_v2()[1..])?;
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    let mut b = w.trusting_box(&env)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(v.status == "installed", "{v}");
    // The attacker serves the older, validly signed, unexpired metadata.
    for (f, bytes) in &old {
        std::fs::write(meta.join(f), bytes)?;
    }
    w.portal.assign_set(&env, &coords(&set_v2()))?;
    let seen = sync(&w.portal, &env)?;
    let v = verdict(&w.portal, &mut b, &env, seen)?;
    ensure!(
        v.status == "installation_cancelled" && v.message.contains("repository metadata refused"),
        "{v}"
    );
    ensure!(
        v.message.contains("when we had previously fetched version"),
        "{v}"
    );
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_rotated_root_is_followed() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1105);
    let mut b = install_v1(&w, &env)?;
    ensure!(w.portal.rotate_tuf_root()? == 2);
    // Signed with the new online keys only.
    w.portal.publish_all(&w.files(), &set_v2()[1..])?;
    w.portal.assign_set(&env, &coords(&set_v2()))?;
    let seen = sync(&w.portal, &env)?;
    let v = verdict(&w.portal, &mut b, &env, seen)?;
    ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
    ensure!(b.installed()? == sorted(&set_v2()), "{:?}", b.installed()?);
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("state/tuf/root.json"))?)?;
    ensure!(
        root["signed"]["version"] == 2,
        "the box trusts root 2: {root}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn an_http_repository_that_is_not_loopback_is_refused_without_the_opt_in() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let env = env_uuid(1106);
    let mut s = BoxSettings::new(&portal, Some(&env));
    // TEST-NET-1 (RFC 5737): never reached, the refusal comes first.
    s.repository_url = "http://192.0.2.1/repo".into();
    let mut b = ManagedBox::new(&s)?;
    b.spawn()?;
    let exit = b.wait_exit(DEADLINE)?;
    ensure!(!exit.success(), "the box refuses to start: {exit}");
    let log = b.log();
    ensure!(
        log.contains("is not accepted: plain http to \"192.0.2.1\", which is not loopback")
            && log.contains("allow_insecure_http"),
        "{log}"
    );

    // With the opt-in it starts, and says so at every start.
    s.upgrade_extra = "allow_insecure_http = true\n".into();
    let mut b = ManagedBox::new(&s)?;
    b.spawn()?;
    b.run_until(DEADLINE, "the warning", |b| {
        b.log()
            .contains("accepted because allow_insecure_http = true")
            .then_some(())
    })
    .context("the opt-in warns")?;
    ensure!(b.stop()?.success());
    Ok(())
}

/// A second reference portal on another host name (`localhost`, where the
/// portal is `127.0.0.1`) serving a copy of `portal`'s repository, as a CDN
/// does; `portal` now answers artifact requests (not `.sha256` files, not
/// TUF metadata) with `302` to it.
fn hand_off_to_a_cdn(portal: &PortalHandle, dir: &std::path::Path) -> Result<PortalHandle> {
    let cdn_data = dir.join("cdn");
    copy_tree(&portal.data_dir().join("repo"), &cdn_data.join("repo"))?;
    let cdn = Portal::spawn(PortalConfig::new(&cdn_data))?;
    portal.set_faults(Faults {
        redirect_to: Some(format!("http://localhost:{}", cdn.addr().port())),
        ..Faults::default()
    });
    Ok(cdn)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The repository paths `portal` answered, with at least one request.
fn requested(portal: &PortalHandle) -> Vec<String> {
    portal
        .stats()
        .paths
        .into_iter()
        .filter(|(p, s)| p.starts_with("/repo/") && s.requests > 0)
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn with_trust_root_a_box_installs_through_the_cdn_its_repository_redirects_to() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1107);
    w.portal.publish_all(&w.files(), &set_v1())?;
    let cdn = hand_off_to_a_cdn(&w.portal, w.dir.path())?;
    w.portal.assign_set(&env, &coords(&set_v1()))?;
    let mut b = w.trusting_box(&env)?;
    b.spawn()?;
    let v = verdict(&w.portal, &mut b, &env, 0)?;
    ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    // The bytes came from the CDN: every artifact, packages included.
    let served: Vec<String> = requested(&cdn)
        .into_iter()
        .filter(|p| cdn.stats().paths[p].bytes > 0)
        .collect();
    for spec in set_v1() {
        ensure!(
            served.contains(&spec.repo_path()),
            "{} not served by the CDN: {served:?}",
            spec.repo_path()
        );
    }
    ensure!(
        served.iter().any(|p| p.ends_with("alpha-1.0-bin.zip"))
            && served.iter().any(|p| p.ends_with("alpha-1.0-model.zip")),
        "{served:?}"
    );
    ensure!(
        !requested(&cdn).iter().any(|p| p.contains("/.tuf/")),
        "the metadata stays with the repository"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn with_only_sha256_files_a_box_refuses_the_redirect_to_a_cdn_and_reports_download_error(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let env = env_uuid(1108);
    let specs = set_v1();
    let published = portal.publish_all(&dir.path().join("files"), &specs)?;
    let cdn = hand_off_to_a_cdn(&portal, dir.path())?;
    // The original portal: module objects without digests, sizes or
    // package declarations; the only digests are the `.sha256` files of
    // the repository, which redirects the artifacts elsewhere.
    let frames = published
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m)?;
            let object = v.as_object_mut().context("a module object")?;
            for extension in ["sha256", "size", "dependencies", "model", "platforms"] {
                object.remove(extension);
            }
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    portal.assign_raw(&env, frames)?;
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    b.spawn()?;
    let line = b.run_until(CONVERGE, "a verdict", |_| {
        portal.statuses(&env).ok()?.into_iter().find(|l| {
            ["installed", "installation_cancelled", "download_error"].contains(&l.status.as_str())
        })
    })?;
    ensure!(
        line.status == "download_error"
            && line
                .message
                .contains("redirect to another host localhost refused")
            && line.message.contains("not from TUF or the portal"),
        "{line}\n{}",
        b.log_tail(40)
    );
    ensure!(b.installed()?.is_empty(), "{:?}", b.installed()?);
    ensure!(
        requested(&cdn).is_empty(),
        "the CDN was asked: {:?}",
        requested(&cdn)
    );
    ensure!(b.stop()?.success());
    Ok(())
}

/// A component (or anyone with the box's rights) writes a root of its own
/// into the store: version 99, other keys. The box never trusts it: the
/// next synchronisation walks from the pinned root, verifies, succeeds,
/// and the stored `root.json` is the verified root again.
#[test]
fn a_forged_root_in_the_store_is_refused_and_the_next_sync_verifies_from_the_pinned_root(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let w = signed_world()?;
    let env = env_uuid(1109);
    let mut b = install_v1(&w, &env)?;
    let store = b.path().join("state/tuf");
    let pinned = std::fs::read(b.path().join("config/repository-root.json"))?;
    // Other keys: another repository's root, raised to version 99.
    let other = w.dir.path().join("other-portal");
    std::fs::create_dir_all(&other)?;
    tuf::keys_init(&other, &tuf::KeysInit::default())?;
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuf::root_path(&other))?)?;
    forged["signed"]["version"] = 99.into();
    std::fs::write(store.join("root.json"), serde_json::to_vec(&forged)?)?;

    w.portal.reset_counters()?;
    let seen = sync(&w.portal, &env)?;
    b.run_until(CONVERGE, "the sync after the forgery", |_| {
        let n = w.portal.statuses(&env).ok()?.len();
        let asked = metadata_requests(&w).ok()?;
        (n > seen || !asked.is_empty()).then_some(())
    })?;
    let report = b.run_until(CONVERGE, "the sync to end", |b| {
        let s = b.sync_report()?;
        let done = ["up-to-date", "failed", "cancelled", "staged"];
        done.contains(&s["state"].as_str()?).then_some(s)
    })?;
    ensure!(
        report["state"] == "up-to-date",
        "verified against the pinned root: {report}\n{}",
        b.log_tail(40)
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("root.json"))?)?;
    let pinned: serde_json::Value = serde_json::from_slice(&pinned)?;
    ensure!(
        stored == pinned,
        "the forged root.json was replaced: {stored}"
    );
    let log = b.log_tail(400);
    ensure!(
        log.contains("was not the root verified from trust_root"),
        "the refusal is logged:\n{log}"
    );
    ensure!(b.installed()? == sorted(&set_v1()), "{:?}", b.installed()?);
    ensure!(b.stop()?.success());
    Ok(())
}
