//! Quarantine with real processes and the reference portal: a box with
//! `software_update_type = "on-boot"` whose new set fails probation rolls
//! it back once and then refuses it at every further synchronisation (the
//! portal gets `installation_cancelled` naming the rollback) instead of
//! staging it again from the backup at every start; `upgrade --retry`
//! installs it again; a different set from the portal lifts the quarantine.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, log_events, BoxSettings, ManagedBox, ModuleSpec, PortalApi, StatusLine},
    portal::{Portal, PortalConfig, PortalHandle},
    DEADLINE,
};
use serde_json::Value;

/// How long a synchronisation with its restarts (three for a rollback) may
/// take on a loaded two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(90);

/// The module whose presence makes the `drill` component fail at start.
const BROKEN: &str = "com.example.q:broken:1.0";

fn alpha() -> ModuleSpec {
    ModuleSpec::new("com.example.q:alpha:1.0", 10_000)
}

/// The committed set.
fn good() -> Vec<ModuleSpec> {
    vec![alpha()]
}

/// A set that fails probation: the drill fails while `broken` is installed.
fn bad() -> Vec<ModuleSpec> {
    vec![alpha(), ModuleSpec::new(BROKEN, 5_000)]
}

/// A healthy set other than the quarantined one.
fn other() -> Vec<ModuleSpec> {
    vec![alpha(), ModuleSpec::new("com.example.q:gamma:1.0", 5_000)]
}

fn coords(specs: &[ModuleSpec]) -> Vec<String> {
    specs.iter().map(|s| s.coordinates.clone()).collect()
}

fn sorted(specs: &[ModuleSpec]) -> Vec<String> {
    let mut c = coords(specs);
    c.sort();
    c
}

/// The statusMessage of a refusal (`Quarantine::refusal`).
fn is_refusal(l: &StatusLine) -> bool {
    l.status == "installation_cancelled"
        && l.message.starts_with("this target set was rolled back at")
        && l.message.contains("upgrade --retry")
}

/// The host's report of an automatic rollback.
fn is_rollback_report(l: &StatusLine) -> bool {
    l.status == "installation_cancelled"
        && !is_refusal(l)
        && l.message.contains("the previous set is active again")
}

struct World {
    _dir: tempfile::TempDir,
    portal: PortalHandle,
    env: String,
    b: ManagedBox,
}

/// A portal with all three sets published, and an on-boot box that
/// installed and committed [`good`].
fn world(n: usize) -> Result<World> {
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let files = dir.path().join("files");
    let mut specs = bad();
    specs.extend(other().into_iter().skip(1));
    portal.publish_all(&files, &specs)?;
    let env = env_uuid(n);
    portal.assign_set(&env, &coords(&good()))?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.health_grace_s = 1.0;
    settings.max_boot_attempts = 2;
    settings.upgrade_extra = "software_update_type = \"on-boot\"".into();
    settings.components = format!(
        "[components.drill]\nkind = \"probe\"\nrestart_on_failure = \"stop\"\nfail_while_file = \"modules/{}\"\n",
        ModuleSpec::new(BROKEN, 0).file_name()
    );
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    let mut w = World {
        _dir: dir,
        portal,
        env,
        b,
    };
    w.converge(0)?;
    ensure!(
        w.b.installed()? == sorted(&good()),
        "{:?}",
        w.b.installed()?
    );
    Ok(w)
}

impl World {
    fn statuses(&self) -> Vec<StatusLine> {
        self.portal.statuses(&self.env).unwrap_or_default()
    }

    /// How many log events of every start so far have this message.
    fn events(&self, message: &str) -> usize {
        log_events(&self.b.log())
            .iter()
            .filter(|e| e["message"] == message)
            .count()
    }

    /// Supervises the box until the portal got `installed` as status
    /// `after` or later and the set is committed.
    fn converge(&mut self, after: usize) -> Result<()> {
        let (portal, env) = (&self.portal, self.env.clone());
        self.b.run_until(CONVERGE, "installed", |_| {
            portal
                .statuses(&env)
                .ok()
                .filter(|l| l.iter().skip(after).any(|l| l.status == "installed"))
        })?;
        self.committed()
    }

    /// Supervises the box until it runs with nothing on probation.
    fn committed(&mut self) -> Result<()> {
        self.b
            .run_until(DEADLINE, "the committed set in status", |b| {
                let s = b.status().ok()?;
                (s["host"]["running"] == true && s["upgrade"]["probation"].is_null()).then_some(())
            })
    }

    /// Assigns [`bad`], asks the box to synchronise, and supervises it
    /// through the two failed starts on probation and the rollback, until
    /// the on-boot synchronisation of the start after the rollback was
    /// refused. Fails at once if the set is rolled back a second time (it
    /// was staged again: the loop this quarantine exists to end).
    fn roll_back_bad_set(&mut self) -> Result<()> {
        let rollbacks_before = self.events("rolling back");
        self.portal.assign_set(&self.env, &coords(&bad()))?;
        let out = self.b.home().cli(&["upgrade"])?;
        ensure!(out.status.success(), "upgrade: {out:?}");
        let (portal, env) = (&self.portal, self.env.clone());
        let outcome = self.b.run_until(
            CONVERGE,
            "the rollback and the refusal of the next synchronisation",
            |b| {
                let rollbacks = log_events(&b.log())
                    .iter()
                    .filter(|e| e["message"] == "rolling back")
                    .count()
                    - rollbacks_before;
                if rollbacks > 1 {
                    return Some(Err(anyhow!(
                        "the rolled-back set was staged and rolled back again (exits {:?})",
                        b.exits()
                    )));
                }
                let refused = portal
                    .statuses(&env)
                    .ok()?
                    .iter()
                    .filter(|l| is_refusal(l))
                    .count();
                (rollbacks == 1 && refused > 0).then_some(Ok(()))
            },
        )?;
        outcome?;
        self.sync_ended().map(drop)
    }

    /// Waits until the running host's last synchronisation has ended, so
    /// that the next trigger is not skipped as "already running".
    fn sync_ended(&mut self) -> Result<Value> {
        self.b
            .run_until(DEADLINE, "the synchronisation to end", |b| {
                b.sync_report().filter(|s| !s["finished_ms"].is_null())
            })
    }

    /// Supervises the box until the portal has `n` refusals.
    fn wait_refusals(&mut self, n: usize) -> Result<()> {
        let (portal, env) = (&self.portal, self.env.clone());
        self.b
            .run_until(CONVERGE, &format!("{n} refusals at the portal"), |_| {
                let lines = portal.statuses(&env).ok()?;
                (lines.iter().filter(|l| is_refusal(l)).count() >= n).then_some(())
            })?;
        self.sync_ended().map(drop)
    }

    fn quarantined(&self) -> Result<Value> {
        Ok(self.b.status()?["upgrade"]["quarantined"].clone())
    }
}

#[test]
fn on_boot_rolls_a_failing_set_back_once_and_refuses_it_at_every_later_start_and_sync() -> Result<()>
{
    let _machine = crate::machine::shared();
    let mut w = world(101)?;
    let seen = w.statuses().len();
    w.roll_back_bad_set()?;

    // Two local upgrades and a restart (another on-boot synchronisation):
    // each is refused, none stages anything.
    for n in 2..=3 {
        let out = w.b.home().cli(&["upgrade"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("rolled back"),
            "upgrade says the quarantined set was refused: {out:?}"
        );
        w.wait_refusals(n)?;
    }
    ensure!(w.b.stop()?.success(), "a requested stop");
    w.b.spawn()?;
    w.wait_refusals(4)?;
    let sync = w.sync_ended()?;

    let lines = w.statuses();
    let text = lines[seen..]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let rollbacks: Vec<&StatusLine> = lines[seen..]
        .iter()
        .filter(|l| is_rollback_report(l))
        .collect();
    ensure!(rollbacks.len() == 1, "one rollback reported: {text}");
    let refusals: Vec<&StatusLine> = lines[seen..].iter().filter(|l| is_refusal(l)).collect();
    ensure!(refusals.len() == 4, "four refusals: {text}");
    for r in &refusals {
        ensure!(
            r.message.contains(&rollbacks[0].message),
            "a refusal names the earlier rollback and its reason: {r}; rollback: {}",
            rollbacks[0]
        );
    }
    let first_cancel = lines[seen..]
        .iter()
        .position(|l| l.status == "installation_cancelled")
        .context("no installation_cancelled")?;
    ensure!(
        lines[seen + first_cancel..]
            .iter()
            .all(|l| l.status == "installation_cancelled"),
        "after the rollback nothing was downloaded or installed: {text}"
    );
    ensure!(
        w.events("rolling back") == 1,
        "one rollback in the logs of {} starts",
        w.b.starts()
    );
    ensure!(
        w.events("staged module set applied") == 2,
        "the first set and the bad set were applied, nothing after"
    );
    ensure!(
        w.b.exits() == [75, 75, 75, 75],
        "first run, the bad set staged, its two failed starts; no restart after the rollback: {:?}",
        w.b.exits()
    );

    // The box stays on the committed set, with its portal link up.
    ensure!(sync["state"] == "cancelled", "{sync}");
    ensure!(sync["trigger"] == "on-boot", "{sync}");
    ensure!(
        sync["skipped_triggers"] == 0,
        "no trigger was skipped: {sync}"
    );
    ensure!(
        w.b.installed()? == sorted(&good()),
        "{:?}",
        w.b.installed()?
    );
    let status = w.b.status()?;
    ensure!(status["upgrade"]["probation"].is_null(), "{status}");
    ensure!(
        w.quarantined()?["modules"] == serde_json::json!(sorted(&bad())),
        "{status}"
    );
    ensure!(!w
        .b
        .path()
        .join("modules-upgrade/modules-info.properties")
        .exists());
    ensure!(w.b.home().component("drill")?["state"] == "RUN");
    w.portal.wait_connected(&w.env, DEADLINE)?;
    let broken = ModuleSpec::new(BROKEN, 5_000);
    let stats = w.portal.stats_report()?;
    ensure!(
        stats.bytes(&broken.repo_path()) == broken.size,
        "the bad set was downloaded once: {stats:?}"
    );
    ensure!(w.b.stop()?.success());
    Ok(())
}

#[test]
fn upgrade_retry_installs_the_quarantined_set_again_on_probation() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut w = world(102)?;
    w.roll_back_bad_set()?;
    let first = w.quarantined()?["rolled_back_ms"]
        .as_u64()
        .context("quarantined")?;
    ensure!(w.events("staged module set applied") == 2);

    let out = w.b.home().cli(&["upgrade", "--retry"])?;
    ensure!(out.status.success(), "upgrade --retry: {out:?}");
    // Staged, applied, on probation again: it fails as before, and is
    // rolled back and quarantined again.
    w.b.run_until(CONVERGE, "the second rollback", |b| {
        let rollbacks = log_events(&b.log())
            .iter()
            .filter(|e| e["message"] == "rolling back")
            .count();
        let again = b.status().ok()?["upgrade"]["quarantined"]["rolled_back_ms"]
            .as_u64()
            .is_some_and(|t| t > first);
        (rollbacks == 2 && again && b.is_running()).then_some(())
    })?;
    // And refused again at the next synchronisation.
    w.wait_refusals(2)?;
    let log = log_events(&w.b.log());
    ensure!(
        log.iter()
            .any(|e| e["message"] == "synchronisation started" && e["trigger"] == "Retry"),
        "the retry's synchronisation"
    );
    ensure!(
        w.events("staged module set applied") == 3,
        "the retried set was applied"
    );
    ensure!(
        w.events("the quarantined module set is active again: quarantine lifted") == 1,
        "the host lifted the quarantine when the set was active"
    );
    let probation: Vec<&Value> = log
        .iter()
        .filter(|e| e["message"] == "new module set on probation")
        .collect();
    ensure!(
        probation.len() == 5,
        "the first set once, the bad set twice and twice again after the retry: {probation:?}"
    );
    ensure!(
        w.b.exits() == [75, 75, 75, 75, 75, 75, 75],
        "{:?}",
        w.b.exits()
    );
    ensure!(w.quarantined()?["modules"] == serde_json::json!(sorted(&bad())));
    ensure!(
        w.b.installed()? == sorted(&good()),
        "{:?}",
        w.b.installed()?
    );
    ensure!(w.b.stop()?.success());
    Ok(())
}

#[test]
fn a_different_set_from_the_portal_lifts_the_quarantine_and_is_installed() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut w = world(103)?;
    w.roll_back_bad_set()?;
    let file = w.b.path().join("state/quarantined-set.json");
    ensure!(file.exists());

    let seen = w.statuses().len();
    w.portal.assign_set(&w.env, &coords(&other()))?;
    w.portal.wait_connected(&w.env, DEADLINE)?;
    ensure!(w.portal.sync_env(&w.env)? == 1, "the box is not connected");
    w.converge(seen)?;
    ensure!(!file.exists(), "the quarantine was lifted");
    ensure!(w.quarantined()?.is_null());
    ensure!(
        w.b.installed()? == sorted(&other()),
        "{:?}",
        w.b.installed()?
    );
    let lines = w.statuses();
    ensure!(
        !lines[seen..].iter().any(is_refusal),
        "the different set was not refused: {lines:?}"
    );
    ensure!(w.events("rolling back") == 1);
    ensure!(w.b.stop()?.success());
    Ok(())
}
