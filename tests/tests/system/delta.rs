//! Binary deltas (issue 27) with the real `banalytics-box` and the
//! reference portal: a box on core 1.0 upgrades to core 2.0 through the
//! patch the portal made at publish, and falls back to the whole file when
//! the patch is corrupted, was made from another build, or (with
//! `trust_root`) is not a TUF target, which it then never asks for.
//!
//! As in `core.rs`, core 1.0 is the test's own `banalytics-box` and core
//! 2.0 the same with bytes appended: no second build. Each box applies on
//! approval (`apply = "approval"`), so that the staged set's `status`,
//! which says what became of the patch, can be read before the restart.

use std::{path::PathBuf, time::Duration};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    box_bin,
    e2e::{env_uuid, BoxSettings, ManagedBox, PortalApi},
    portal::{patch, tuf, Portal, PortalConfig, PortalHandle},
    DEADLINE, PLATFORM,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    core::publish_core,
    tuf::{sync, verdict},
};

const CORE_1: &str = "com.banalytics.box:core:1.0";
const CORE_2: &str = "com.banalytics.box:core:2.0";

/// Publishing a 150 MB debug core, a synchronisation and a restart on a
/// loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(180);

/// Core 2.0: core 1.0 with bytes appended.
fn core_2(core_1: &[u8]) -> Vec<u8> {
    let mut b = core_1.to_vec();
    b.extend_from_slice(b"\nbanalytics core 2.0, through a patch\n");
    b
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Requests and body bytes the repository served for a path.
type Served = (u64, u64);

/// A staged synchronisation's report, and what the repository served for
/// the full file and for the patch (its `.sha256` included).
type Staged = (Value, Served, Served);

/// A box committed on core 1.0, set to apply the next set on approval.
struct World {
    dir: tempfile::TempDir,
    portal: PortalHandle,
    env: String,
    b: ManagedBox,
    core_1: Vec<u8>,
    core_2: Vec<u8>,
}

/// The repository path of core 2.0's build, and of its patch from core 1.0.
fn core_2_paths(core_1: &[u8]) -> (String, String) {
    let full = format!("com/banalytics/box/core/2.0/core-2.0-{PLATFORM}.bin");
    let patch = format!("{full}.from-1.0-{}.zstpatch", sha256(core_1));
    (full, patch)
}

impl World {
    /// `config` decides whether the repository is signed and how many
    /// patches the portal makes; `trust_root` gives the box the root.
    fn new(
        n: usize,
        config: PortalConfig,
        trust_root: bool,
        dir: tempfile::TempDir,
    ) -> Result<World> {
        let portal = Portal::spawn(config)?;
        let core_1 = std::fs::read(box_bin())?;
        let core_2 = core_2(&core_1);
        publish_core(&portal, dir.path(), CORE_1, &core_1)?;
        let env = env_uuid(n);
        portal.assign_set(&env, &[CORE_1.to_owned()])?;
        let mut settings = BoxSettings::new(&portal, Some(&env));
        settings.health_grace_s = 1.0;
        if trust_root {
            settings.upgrade_extra = "trust_root = \"config/repository-root.json\"\n".into();
        }
        let mut b = ManagedBox::new(&settings)?;
        if trust_root {
            std::fs::copy(
                tuf::root_path(portal.data_dir()),
                b.path().join("config/repository-root.json"),
            )?;
        }
        b.spawn()?;
        let v = verdict(&portal, &mut b, &env, 0)?;
        ensure!(v.status == "installed", "core 1.0: {v}\n{}", b.log_tail(30));
        ensure!(b.stop()?.success());
        settings.upgrade_extra.push_str("apply = \"approval\"\n");
        std::fs::write(b.path().join("config/box.toml"), settings.box_toml())?;
        b.spawn()?;
        portal.wait_connected(&env, DEADLINE)?;
        Ok(World {
            dir,
            portal,
            env,
            b,
            core_1,
            core_2,
        })
    }

    fn repo(&self) -> PathBuf {
        self.portal.data_dir().join("repo")
    }

    /// Publishes core 2.0; the portal makes its patches.
    fn publish_core_2(&self) -> Result<()> {
        publish_core(&self.portal, self.dir.path(), CORE_2, &self.core_2)
    }

    /// Puts `bytes` at the patch's path with a `.sha256` that matches them,
    /// as a repository would serve a patch published so.
    fn replace_patch(&self, bytes: &[u8]) -> Result<()> {
        let (_, patch) = core_2_paths(&self.core_1);
        let path = self.repo().join(&patch);
        std::fs::write(&path, bytes)?;
        std::fs::write(
            self.repo().join(format!("{patch}.sha256")),
            format!("{}\n", sha256(bytes)),
        )?;
        Ok(())
    }

    /// Assigns core 2.0 and synchronises until it is staged; returns the
    /// synchronisation's report and the repository's requests and bytes
    /// for the full file and for the patch (its `.sha256` included).
    fn stage_core_2(&mut self) -> Result<Staged> {
        self.portal.reset_counters()?;
        self.portal.assign_set(&self.env, &[CORE_2.to_owned()])?;
        sync(&self.portal, &self.env)?;
        let report = self.b.run_until(CONVERGE, "core 2.0 staged", |b| {
            let s = b.sync_report()?;
            (s["state"] == "staged").then_some(s)
        })?;
        let stats = self.portal.stats_report()?;
        let (full, patch) = core_2_paths(&self.core_1);
        let count = |prefix: &str, exact: bool| {
            stats
                .paths
                .iter()
                .filter(|(p, _)| {
                    let p = p.strip_prefix("/repo/").unwrap_or(p);
                    if exact {
                        p == prefix
                    } else {
                        p.starts_with(prefix)
                    }
                })
                .fold((0, 0), |(r, b), (_, s)| (r + s.requests, b + s.bytes))
        };
        Ok((report, count(&full, true), count(&patch, false)))
    }

    /// Approves the staged set and checks that core 2.0 is installed with
    /// its exact bytes.
    fn approve_and_check_core_2(&mut self, seen: usize) -> Result<()> {
        let out = self.b.home().cli(&["approve"])?;
        ensure!(
            out.status.success(),
            "approve: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = verdict(&self.portal, &mut self.b, &self.env, seen)?;
        ensure!(
            v.status == "installed",
            "core 2.0: {v}\n{}",
            self.b.log_tail(30)
        );
        let installed = std::fs::read(self.b.path().join("modules/banalytics-box"))?;
        ensure!(
            installed == self.core_2,
            "the installed core has core 2.0's bytes ({} bytes, SHA-256 {})",
            installed.len(),
            sha256(&installed)
        );
        self.b.run_until(DEADLINE, "core 2.0 running", |b| {
            let s = b.status().ok()?;
            (s["core"]["version"] == "2.0").then_some(())
        })?;
        ensure!(self.b.stop()?.success());
        Ok(())
    }
}

/// The one delta entry of a staged synchronisation's report.
fn delta_of(report: &Value) -> Result<&Value> {
    let deltas = report["deltas"]
        .as_array()
        .context("no deltas in the report")?;
    ensure!(deltas.len() == 1, "one patch offered: {report}");
    Ok(&deltas[0])
}

/// Upgrades a box on core 1.0 to core 2.0 after `tamper` changed what the
/// repository serves for the patch; returns the report of the staged
/// synchronisation and the repository's counts for the file and the patch.
fn upgrade(n: usize, tamper: impl FnOnce(&World) -> Result<()>) -> Result<Staged> {
    let dir = tempfile::tempdir()?;
    let config = PortalConfig::new(dir.path().join("portal"));
    let mut w = World::new(n, config, false, dir)?;
    w.publish_core_2()?;
    let (_, patch) = core_2_paths(&w.core_1);
    ensure!(
        w.repo().join(&patch).is_file(),
        "the portal published the patch {patch}"
    );
    tamper(&w)?;
    let seen = w.portal.statuses(&w.env)?.len();
    let (report, full, patch) = w.stage_core_2()?;
    w.approve_and_check_core_2(seen)?;
    Ok((report, full, patch))
}

#[test]
fn a_core_upgrade_fetches_the_patch_not_the_file_and_installs_its_exact_bytes() -> Result<()> {
    let _machine = crate::machine::shared();
    let (report, full, patch) = upgrade(2701, |_| Ok(()))?;
    let delta = delta_of(&report)?;
    ensure!(
        delta["patched"] == true && delta["from"] == "1.0",
        "made from the patch: {delta}"
    );
    ensure!(full.0 == 0, "the full file was not asked for: {full:?}");
    ensure!(
        patch.0 >= 1 && patch.1 > 0,
        "the patch was fetched: {patch:?}"
    );
    let patch_bytes = delta["patch_bytes"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        patch_bytes < 1024 * 1024,
        "a patch for appended bytes is small: {patch_bytes} bytes"
    );
    Ok(())
}

#[test]
fn a_corrupted_patch_falls_back_to_the_full_file_and_still_installs() -> Result<()> {
    let _machine = crate::machine::shared();
    let (report, full, patch) = upgrade(2702, |w| {
        let (_, patch) = core_2_paths(&w.core_1);
        let mut bytes = std::fs::read(w.repo().join(&patch))?;
        let n = bytes.len();
        for b in &mut bytes[n / 2..n / 2 + 16] {
            *b ^= 0x5a;
        }
        w.replace_patch(&bytes)
    })?;
    let delta = delta_of(&report)?;
    let reason = delta["reason"].as_str().unwrap_or_default();
    ensure!(
        delta["patched"] == false && reason.contains("did not apply"),
        "the reason is in status: {delta}"
    );
    ensure!(patch.0 >= 1, "the patch was tried: {patch:?}");
    ensure!(full.0 >= 1 && full.1 > 0, "then the full file: {full:?}");
    Ok(())
}

#[test]
fn a_patch_made_from_another_build_falls_back_to_the_full_file_and_still_installs() -> Result<()> {
    let _machine = crate::machine::shared();
    let (report, full, _) = upgrade(2703, |w| {
        let mut other = w.core_1.clone();
        other.extend_from_slice(b"another build");
        let bytes = patch::make(&other, &w.core_2)?.context("a patch")?;
        w.replace_patch(&bytes)
    })?;
    let delta = delta_of(&report)?;
    let reason = delta["reason"].as_str().unwrap_or_default();
    ensure!(
        delta["patched"] == false && reason.contains("the patch starts from"),
        "the reason is in status: {delta}"
    );
    ensure!(
        full.0 >= 1 && full.1 > 0,
        "the full file was fetched: {full:?}"
    );
    Ok(())
}

#[test]
fn with_trust_root_a_patch_that_is_not_a_target_is_never_fetched() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    std::fs::create_dir_all(&data)?;
    tuf::keys_init(&data, &tuf::KeysInit::default())?;
    // The portal signs what it publishes and makes no patch; a valid patch
    // is then put beside core 2.0 by hand, with its `.sha256`: served, but
    // not a target.
    let config = PortalConfig {
        patch_versions: 0,
        ..PortalConfig::new(&data)
    };
    let mut w = World::new(2704, config, true, dir)?;
    w.publish_core_2()?;
    let bytes = patch::make(&w.core_1, &w.core_2)?.context("a patch")?;
    w.replace_patch(&bytes)?;
    let seen = w.portal.statuses(&w.env)?.len();
    let (report, full, patch) = w.stage_core_2()?;
    let delta = delta_of(&report)?;
    let reason = delta["reason"].as_str().unwrap_or_default();
    ensure!(
        delta["patched"] == false && reason.contains("not a target"),
        "the reason is in status: {delta}"
    );
    ensure!(patch.0 == 0, "the patch was never asked for: {patch:?}");
    ensure!(
        full.0 >= 1 && full.1 > 0,
        "the full file was fetched: {full:?}"
    );
    w.approve_and_check_core_2(seen)
}
