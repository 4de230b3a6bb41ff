//! Crash at every step of apply, rollback and commit: a real
//! `banalytics-box` process is killed with SIGKILL at each failpoint, a
//! fresh process recovers, and the module folders are exactly the old set
//! or exactly the new set, with the models on the same side; a marker never
//! stands beside incomplete content; a second recovery changes nothing; and
//! nothing outside `modules*` and `models*` changes.

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Output},
};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    box_bin,
    fixtures::{sha256_hex, tree},
};
use serde_json::json;

struct ModSpec {
    artifact: &'static str,
    version: &'static str,
    deps: Vec<(&'static str, Vec<u8>)>,
    model: Vec<(&'static str, Vec<u8>)>,
}

fn m(
    artifact: &'static str,
    version: &'static str,
    deps: &[&'static str],
    model: &[&'static str],
) -> ModSpec {
    let body = |name: &str| {
        format!("{artifact} {version} {name}")
            .repeat(64)
            .into_bytes()
    };
    ModSpec {
        artifact,
        version,
        deps: deps.iter().map(|n| (*n, body(n))).collect(),
        model: model.iter().map(|n| (*n, body(n))).collect(),
    }
}

/// Writes a complete module set as the upgrade center does: files,
/// `modules-hashes.json`, then `modules-info.properties`.
fn write_set(modules: &Path, models: &Path, set: &[ModSpec]) -> Result<()> {
    std::fs::create_dir_all(modules)?;
    std::fs::create_dir_all(models)?;
    let mut info = String::from("#Banalytics box installed modules\n");
    let mut record = serde_json::Map::new();
    let file = |dir: &Path, name: &str, body: &[u8]| -> Result<serde_json::Value> {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, body)?;
        Ok(json!({"name": name, "sha256": sha256_hex(body), "size": body.len()}))
    };
    for s in set {
        let main_name = format!("com.example-{}-{}.jar", s.artifact, s.version);
        let main = file(
            modules,
            &main_name,
            format!("main {} {}", s.artifact, s.version)
                .repeat(100)
                .as_bytes(),
        )?;
        let pkg = |dir: &Path, files: &[(&str, Vec<u8>)]| -> Result<serde_json::Value> {
            if files.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            let recs: Vec<_> = files
                .iter()
                .map(|(n, b)| file(dir, n, b))
                .collect::<Result<_>>()?;
            Ok(
                json!({"sha256": sha256_hex(format!("{files:?}").as_bytes()), "size": 1, "files": recs}),
            )
        };
        record.insert(
            format!("com.example:{}:{}", s.artifact, s.version),
            json!({"main": main, "dependencies": pkg(modules, &s.deps)?, "model": pkg(models, &s.model)?}),
        );
        info.push_str(&format!(
            "com.example\\:{}\\:{}=component\\:1772360130\n",
            s.artifact, s.version
        ));
    }
    std::fs::write(
        modules.join("modules-hashes.json"),
        serde_json::to_vec_pretty(&json!({"format": 1, "modules": record}))?,
    )?;
    std::fs::write(modules.join("modules-info.properties"), info)?;
    Ok(())
}

fn set_a() -> Vec<ModSpec> {
    vec![
        m("alpha", "1.0", &["lib/a.jar"], &["alpha/m.bin"]),
        m("beta", "1.0", &[], &[]),
    ]
}

fn set_b() -> Vec<ModSpec> {
    vec![
        m(
            "alpha",
            "2.0",
            &["lib/a.jar", "lib/b.jar"],
            &["alpha/m.bin"],
        ),
        m("gamma", "1.0", &[], &["gamma/g.bin"]),
    ]
}

fn set_z() -> Vec<ModSpec> {
    vec![m("zeta", "0.9", &[], &["zeta/z.bin"])]
}

const CONFIG: &str = r#"[log]
level = "info"

[components.heartbeat]
kind = "probe"

[components.upgrade-center]
kind = "software-upgrade-center"
repository_url = "http://127.0.0.1:9/repo"
health_grace_s = 0.3
"#;

/// A home with A active, B staged, Z as the backup, and sentinel trees.
fn fixture() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("crash-").tempdir()?;
    let home = dir.path().join("home");
    write_set(&home.join("modules"), &home.join("models"), &set_a())?;
    write_set(
        &home.join("modules-upgrade"),
        &home.join("models-upgrade"),
        &set_b(),
    )?;
    write_set(
        &home.join("modules-backup"),
        &home.join("models-backup"),
        &set_z(),
    )?;
    std::fs::create_dir_all(home.join("config"))?;
    std::fs::write(home.join("config/box.toml"), CONFIG)?;
    std::fs::create_dir_all(home.join("data/recordings/cam1"))?;
    std::fs::write(home.join("data/recordings/cam1/0001.mp4"), vec![7u8; 4096])?;
    std::fs::write(home.join("data/settings.json"), b"{\"keep\":true}")?;
    Ok(dir)
}

/// The expected trees of a set, made once in a scratch folder.
fn expected(set: &[ModSpec]) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let dir = tempfile::tempdir()?;
    write_set(&dir.path().join("m"), &dir.path().join("d"), set)?;
    Ok((tree(&dir.path().join("m")), tree(&dir.path().join("d"))))
}

fn sentinels(home: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (tree(&home.join("data")), tree(&home.join("config")))
}

fn cli(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut c = Command::new(box_bin());
    c.arg("--home").arg(home).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().context("running banalytics-box")
}

/// The failpoints a clean run of `args` passes, in order.
fn trace(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Vec<String>> {
    let mut env = env.to_vec();
    env.push(("BANALYTICS_FAILPOINT_TRACE", "1"));
    let out = cli(home, args, &env)?;
    ensure!(
        out.status.success(),
        "clean run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("failpoint "))
        .map(str::to_owned)
        .filter(|n| !n.ends_with(" reached"))
        .collect())
}

/// A marker (`modules-info.properties`) in any module folder stands beside
/// a complete set: one of the known ones, whole.
fn markers_only_beside_complete_sets(
    home: &Path,
    known: &[&BTreeMap<String, String>],
) -> Result<()> {
    for dir in [
        "modules",
        "modules-upgrade",
        "modules-backup",
        "modules-swap.tmp",
        "modules-trash",
    ] {
        let d = home.join(dir);
        if d.join("modules-info.properties").exists() {
            let t = tree(&d);
            ensure!(
                known.iter().any(|k| **k == t),
                "{dir} has a marker beside incomplete content: {t:?}"
            );
        }
    }
    Ok(())
}

struct Sides {
    a: (BTreeMap<String, String>, BTreeMap<String, String>),
    b: (BTreeMap<String, String>, BTreeMap<String, String>),
    z: (BTreeMap<String, String>, BTreeMap<String, String>),
}

fn sides() -> Result<Sides> {
    Ok(Sides {
        a: expected(&set_a())?,
        b: expected(&set_b())?,
        z: expected(&set_z())?,
    })
}

/// After recovery: the active set is exactly A or exactly B, with models of
/// the same side. Returns which.
fn active_side(home: &Path, s: &Sides) -> Result<char> {
    let (m, d) = (tree(&home.join("modules")), tree(&home.join("models")));
    if m == s.a.0 {
        ensure!(d == s.a.1, "modules are A but models are not: {d:?}");
        Ok('A')
    } else if m == s.b.0 {
        ensure!(d == s.b.1, "modules are B but models are not: {d:?}");
        Ok('B')
    } else {
        anyhow::bail!("modules are neither A nor B: {m:?}")
    }
}

/// Kills a `banalytics-box` command at each of its failpoints and checks
/// what a fresh recovery leaves. `prepare` builds the home for one run.
fn crash_everywhere(
    command: &[&str],
    env: &[(&str, &str)],
    prepare: &dyn Fn(&Path) -> Result<()>,
    expect_after: &[char],
) -> Result<Vec<String>> {
    let s = sides()?;
    let probe = fixture()?;
    let home = probe.path().join("home");
    prepare(&home)?;
    let points = trace(&home, command, env)?;
    ensure!(!points.is_empty(), "no failpoints traced for {command:?}");
    for point in &points {
        let dir = fixture()?;
        let home = dir.path().join("home");
        prepare(&home)?;
        let before = sentinels(&home);
        let mut env = env.to_vec();
        env.push(("BANALYTICS_FAILPOINT", point));
        let out = cli(&home, command, &env)?;
        ensure!(
            out.status.signal() == Some(libc::SIGKILL),
            "{point}: not killed there: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        markers_only_beside_complete_sets(&home, &[&s.a.0, &s.b.0, &s.z.0])
            .with_context(|| format!("at {point}"))?;

        let rec = cli(&home, &["apply"], &[])?;
        ensure!(
            rec.status.success(),
            "{point}: recovery failed: {}",
            String::from_utf8_lossy(&rec.stderr)
        );
        let side = active_side(&home, &s).with_context(|| format!("after a crash at {point}"))?;
        ensure!(
            expect_after.contains(&side),
            "{point}: active set {side}, expected one of {expect_after:?}"
        );
        markers_only_beside_complete_sets(&home, &[&s.a.0, &s.b.0, &s.z.0])
            .with_context(|| format!("after recovery from {point}"))?;
        ensure!(
            !home.join("modules-swap.journal").exists(),
            "{point}: journal left after recovery"
        );
        ensure!(
            sentinels(&home) == before,
            "{point}: data/ or config/ changed"
        );

        let settled = tree(&home);
        let again = cli(&home, &["apply"], &[])?;
        ensure!(again.status.success());
        ensure!(
            tree(&home) == settled,
            "{point}: a second recovery changed something"
        );
    }
    Ok(points)
}

#[test]
fn apply_survives_a_kill_at_every_step_with_the_atomic_exchange() -> Result<()> {
    let _machine = crate::machine::shared();
    let points = crash_everywhere(&["apply"], &[], &|_| Ok(()), &['B'])?;
    assert!(
        points.iter().any(|p| p == "apply.5.modules-in"),
        "{points:?}"
    );
    eprintln!("apply (exchange): {} failpoints: {points:?}", points.len());
    Ok(())
}

#[test]
fn apply_survives_a_kill_at_every_step_with_the_portable_renames() -> Result<()> {
    let _machine = crate::machine::shared();
    let env = [("BANALYTICS_NO_EXCHANGE", "1")];
    let points = crash_everywhere(&["apply"], &env, &|_| Ok(()), &['B'])?;
    assert!(
        points.iter().any(|p| p == "apply.5.old-moved-out"),
        "{points:?}"
    );
    eprintln!("apply (renames): {} failpoints: {points:?}", points.len());
    Ok(())
}

fn applied(home: &Path) -> Result<()> {
    let out = cli(home, &["apply"], &[])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn rollback_survives_a_kill_at_every_step() -> Result<()> {
    let _machine = crate::machine::shared();
    for env in [vec![], vec![("BANALYTICS_NO_EXCHANGE", "1")]] {
        let points = crash_everywhere(&["rollback"], &env, &applied, &['A'])?;
        eprintln!("rollback {env:?}: {} failpoints: {points:?}", points.len());
    }
    Ok(())
}

#[test]
fn commit_survives_a_kill_at_every_step() -> Result<()> {
    let _machine = crate::machine::shared();
    // `run` on probation: counts the start, then commits after the grace
    // period. The test stops it with SIGTERM once committed.
    let s = sides()?;
    let dir = fixture()?;
    let home = dir.path().join("home");
    applied(&home)?;
    let child = Command::new(box_bin())
        .arg("--home")
        .arg(&home)
        .arg("run")
        .env("BANALYTICS_FAILPOINT_TRACE", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    banalytics_tests::poll_until(banalytics_tests::DEADLINE, "the commit", || {
        (!home.join("modules-probation.json").exists()).then_some(())
    })?;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    let points: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("failpoint "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        points,
        [
            "probation.counted",
            "launcher.prepared",
            "launcher.identified",
            "commit.begin",
            "commit.probation-removed"
        ]
    );
    for point in &points {
        let dir = fixture()?;
        let home = dir.path().join("home");
        applied(&home)?;
        let out = cli(&home, &["run"], &[("BANALYTICS_FAILPOINT", point)])?;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{point}");
        let rec = cli(&home, &["apply"], &[])?;
        assert!(rec.status.success());
        assert_eq!(active_side(&home, &s)?, 'B', "{point}");
        let settled = tree(&home);
        assert!(cli(&home, &["apply"], &[])?.status.success());
        assert_eq!(tree(&home), settled, "{point}");
    }
    Ok(())
}

/// A staged set held for the upgrade center's apply policy (a maintenance
/// window, an approval): `status` says what it waits for, and the
/// operator's `apply` lifts the hold and applies it.
#[test]
fn apply_of_a_held_staged_set_lifts_the_hold_and_applies_it() -> Result<()> {
    let _machine = crate::machine::shared();
    let s = sides()?;
    let dir = fixture()?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("state"))?;
    let hold = home.join("state/apply-hold.json");
    std::fs::write(
        &hold,
        serde_json::to_vec(&json!({
            "modules": ["com.example:alpha:2.0", "com.example:gamma:1.0"],
            "set_id": "set-b",
            "waits_for": "the restart waits for approval",
        }))?,
    )?;
    let status = cli(&home, &["status", "--json"], &[])?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    ensure!(
        status["upgrade"]["staged_waits_for"] == "the restart waits for approval",
        "{}",
        status["upgrade"]
    );
    let out = cli(&home, &["apply"], &[])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(text.contains("hold lifted by this apply"), "{text}");
    ensure!(active_side(&home, &s)? == 'B');
    ensure!(!hold.exists(), "the hold is gone");
    Ok(())
}

#[test]
fn verify_names_a_tampered_file_and_rollback_restores_the_backup() -> Result<()> {
    let _machine = crate::machine::shared();
    let s = sides()?;
    let dir = fixture()?;
    let home = dir.path().join("home");
    let ok = cli(&home, &["verify"], &[])?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let tampered = home.join("modules/lib/a.jar");
    let mut bytes = std::fs::read(&tampered)?;
    bytes[0] ^= 1;
    std::fs::write(&tampered, bytes)?;
    std::fs::remove_file(home.join("models/alpha/m.bin"))?;
    let bad = cli(&home, &["verify"], &[])?;
    assert_eq!(bad.status.code(), Some(1));
    let report = String::from_utf8_lossy(&bad.stdout);
    assert!(
        report.contains(&tampered.display().to_string()) && report.contains("sha-256"),
        "{report}"
    );
    assert!(report.contains("alpha/m.bin"), "{report}");
    assert_eq!(report.lines().count(), 2, "{report}");

    // rollback on real folders: the backup (Z) becomes active, A the backup.
    let dir = fixture()?;
    let home = dir.path().join("home");
    let out = cli(&home, &["rollback"], &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&home.join("modules")), s.z.0);
    assert_eq!(tree(&home.join("models")), s.z.1);
    assert_eq!(tree(&home.join("modules-backup")), s.a.0);
    assert_eq!(tree(&home.join("models-backup")), s.a.1);
    assert!(cli(&home, &["verify"], &[])?.status.success());
    Ok(())
}
