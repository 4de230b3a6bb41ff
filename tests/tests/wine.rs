//! Whole-system tests of `banalytics-box.exe` under Wine (issue 26): the
//! Windows build run by Wine against the reference portal, a Linux server
//! on 127.0.0.1 in this process. A first install and an upgrade through
//! `upgrade-job-start.bat` (Wine's `cmd`, `restart_mode = "command"`, the
//! Windows default), asked for with `upgrade` over the control pipe; a
//! `TerminateProcess` at each failpoint of apply and rollback followed by
//! the job's `apply`, which recovers one whole set, and a `run` after a kill
//! in the middle of the swap; a core that exits 1
//! rolled back by the launcher, the job restarting the box each time; the
//! sample plugin `.dll` loaded; `status` over the pipe throughout.
//!
//! `.ci/windows` runs it (`cargo test -p banalytics-tests --test wine`) with
//! `BANALYTICS_WINE_BOX` (the box built for `x86_64-pc-windows-gnu` with the
//! `failpoints` feature), `BANALYTICS_WINE_PLUGIN` (the sample plugin's
//! `.dll`), a Wine prefix with the `ProcessPrng` shim (`WINEPREFIX`) and a
//! persistent wineserver. It is no default test target (`cargo test
//! --workspace` needs no Wine); run by hand without those variables each
//! test says why and passes, unless `CI` is set, where it fails.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, register_home, ModuleSpec, PortalApi},
    fixtures::{sha256_hex, tree},
    poll_until,
    portal::{ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
};
use serde_json::{json, Value};

/// The platform of the box under Wine: the classifier of its native
/// modules.
const WINDOWS: &str = "x86_64-pc-windows-gnu";

/// A synchronisation, downloads and restarts through the job, under Wine,
/// on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(180);

/// How long one box process may take to come up or to answer under Wine.
const WINE_DEADLINE: Duration = Duration::from_secs(60);

/// What the tests run: the Windows box and the sample plugin's library.
struct Wine {
    exe: PathBuf,
    plugin: PathBuf,
}

/// The Windows build to test, or `None` (said on stderr) where it was not
/// given; with `CI` set, not given is a failure.
fn wine() -> Option<&'static Wine> {
    static WINE: OnceLock<Option<Wine>> = OnceLock::new();
    WINE.get_or_init(|| {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        match (var("BANALYTICS_WINE_BOX"), var("BANALYTICS_WINE_PLUGIN")) {
            (Some(exe), Some(plugin)) => Some(Wine { exe, plugin }),
            _ if std::env::var_os("CI").is_some() => panic!(
                "BANALYTICS_WINE_BOX and BANALYTICS_WINE_PLUGIN are not set: these tests run under .ci/windows, which sets them"
            ),
            _ => {
                eprintln!(
                    "skipped: BANALYTICS_WINE_BOX and BANALYTICS_WINE_PLUGIN are not set (`bash .ci/windows` builds the box for Windows and runs these tests under Wine)"
                );
                None
            }
        }
    })
    .as_ref()
}

/// `path` as the Windows program sees it: Wine maps `/` to drive `Z:`.
fn winpath(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// A temporary folder for one test under Wine: the box home `home/` and
/// `bin/` with `banalytics-box.exe` (a hard link: the build is large)
/// and `upgrade-job-start.bat` beside it, as installed on Windows.
struct WineHome {
    dir: tempfile::TempDir,
    /// The box processes this test started itself.
    children: Vec<Child>,
}

impl WineHome {
    fn new(wine: &Wine, config: &str) -> Result<WineHome> {
        // In the target folder: the same file system as the build, for the
        // hard link.
        let dir = tempfile::Builder::new()
            .prefix("wine-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("config"))?;
        std::fs::write(home.join("config/box.toml"), config)?;
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        if std::fs::hard_link(&wine.exe, bin.join("banalytics-box.exe")).is_err() {
            std::fs::copy(&wine.exe, bin.join("banalytics-box.exe"))?;
        }
        let bat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/upgrade-job-start.bat");
        std::fs::copy(&bat, bin.join("upgrade-job-start.bat"))
            .with_context(|| format!("copying {}", bat.display()))?;
        Ok(WineHome {
            dir,
            children: Vec::new(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn box_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("wine");
        c.arg(winpath(&self.dir.path().join("bin/banalytics-box.exe")))
            .arg("--home")
            .arg(winpath(&self.path()))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        c
    }

    /// Runs a CLI command of the box under Wine.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        self.box_command(args, env)
            .output()
            .context("running banalytics-box.exe under wine")
    }

    /// `status --json` over the control pipe, parsed.
    fn status(&self) -> Result<Value> {
        let out = self.cli(&["status", "--json"], &[])?;
        ensure!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `status` of the running host, once it answers with `f` true.
    fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Result<Value> {
        poll_until(WINE_DEADLINE, what, || {
            self.status()
                .ok()
                .filter(|s| s["host"]["running"] == true && f(s))
        })
        .with_context(|| self.logs())
    }

    /// Starts `run` under Wine, its stderr into `box-N.log`; the job's
    /// later starts write there too (they inherit the handle).
    fn spawn(&mut self) -> Result<()> {
        let log = self
            .dir
            .path()
            .join(format!("box-{}.log", self.children.len() + 1));
        let child = self
            .box_command(&["run"], &[("RUST_LOG", "info")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting banalytics-box.exe run under wine")?;
        self.children.push(child);
        Ok(())
    }

    /// Waits for the last process this test started to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.children.last_mut().context("nothing started")?;
        poll_until(timeout, "the box to exit", || {
            child.try_wait().ok().flatten()
        })
        .with_context(|| self.logs())
    }

    /// The box's logs and the upgrade job's, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for n in 1..=self.children.len() {
            let log = self.dir.path().join(format!("box-{n}.log"));
            text += &std::fs::read_to_string(log).unwrap_or_default();
        }
        let job = self.path().join("state/upgrade-job.log");
        if let Ok(job) = std::fs::read_to_string(job) {
            text += "\nupgrade-job.log:\n";
            text += &job;
        }
        text
    }

    /// The Linux pids of the Wine processes of this test (the box, the
    /// job's `cmd`, the boxes the job started): their command lines name
    /// this folder.
    fn processes(&self) -> Vec<i32> {
        let mine = winpath(self.dir.path());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&mine))
            })
            .collect()
    }
}

impl Drop for WineHome {
    fn drop(&mut self) {
        for pid in self.processes() {
            // SAFETY: kill(2) of a Wine process this test's box started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn portal(dir: &Path) -> Result<PortalHandle> {
    Ok(Portal::spawn(PortalConfig::new(dir.join("portal")))?)
}

/// `box.toml` of a box of `portal` with the Windows restart default
/// (`restart_mode` and `restart_command` not set) and `extra` appended.
fn portal_box_toml(portal: &PortalHandle, extra: &str) -> String {
    format!(
        r#"[log]
level = "info"

[components.portal]
kind = "portal-integration"
portal_url = "{}"
ping_timeout_s = 10

[components.upgrade-center]
kind = "software-upgrade-center"
repository_url = "{}"
health_grace_s = 1.0
max_boot_attempts = 2
{extra}
"#,
        portal.portal_url(),
        portal.repo_url()
    )
}

/// The sample plugin's `.dll`, its debug information stripped when mingw's
/// `strip` is at hand (the download is then a few MB, not 50).
fn plugin_file(wine: &Wine, dir: &Path) -> Result<PathBuf> {
    let stripped = dir.join("banalytics_sample.dll");
    let ok = Command::new("x86_64-w64-mingw32-strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&wine.plugin)
        .status()
        .is_ok_and(|s| s.success());
    Ok(if ok { stripped } else { wine.plugin.clone() })
}

/// The installed set as `status` shows it, sorted.
fn installed(status: &Value) -> Vec<String> {
    let mut set: Vec<String> = status["upgrade"]["installed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    set.sort();
    set
}

/// Waits until `env` reported `status` as its status number `after` or
/// later; how many statuses there are then.
fn wait_for(
    portal: &PortalHandle,
    home: &WineHome,
    env: &str,
    status: &str,
    after: usize,
) -> Result<usize> {
    let lines = portal
        .wait_for_status(env, status, after, CONVERGE)
        .with_context(|| {
            format!(
                "statuses: {:?}\n{}",
                portal.statuses(env).unwrap_or_default(),
                home.logs()
            )
        })?;
    Ok(lines.len())
}

#[test]
fn a_first_install_and_an_upgrade_through_the_job_under_wine() -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    let plugin = plugin_file(wine, &files)?;
    for v in ["1.0", "2.0"] {
        portal.publish_all(
            &files,
            &[ModuleSpec::new(&format!("com.example:alpha:{v}"), 20_000).with_packages()],
        )?;
        portal.publish_module(&PublishRequest::native(
            &format!("com.example:sample:{v}"),
            ModuleType::Component,
            "dll",
            [(WINDOWS.to_owned(), plugin.clone())],
        ))?;
    }
    let env = env_uuid(2601);
    let set = |v: &str| {
        vec![
            format!("com.example:alpha:{v}"),
            format!("com.example:sample:{v}"),
        ]
    };
    portal.assign_set(&env, &set("1.0"))?;
    let mut home = WineHome::new(wine, &portal_box_toml(&portal, ""))?;
    register_home(&portal, &home.path(), &env)?;

    // The first install: synchronised, staged; the box starts the job and
    // exits 75; the job applies the set and starts the box, which commits.
    home.spawn()?;
    let first = home.wait_exit(CONVERGE)?;
    ensure!(first.code() == Some(75), "{first}: {}", home.logs());
    let seen = wait_for(&portal, &home, &env, "installed", 0)?;
    let status = home.wait_status("the first set committed", |s| {
        s["upgrade"]["probation"].is_null()
    })?;
    ensure!(installed(&status) == set("1.0"), "{}", status["upgrade"]);
    ensure!(
        home.path()
            .join("modules/com.example-sample-1.0.dll")
            .is_file(),
        "the plugin is in the set as a .dll"
    );
    let job = std::fs::read_to_string(home.path().join("state/upgrade-job.log"))?;
    ensure!(job.contains("applied"), "the job applied the set: {job}");

    // The upgrade: the portal assigns 2.0 without telling the box; the
    // operator's `upgrade` over the control pipe synchronises now.
    portal.assign_set(&env, &set("2.0"))?;
    let asked = home.cli(&["upgrade"], &[])?;
    ensure!(
        asked.status.success(),
        "upgrade over the pipe: {}{}",
        String::from_utf8_lossy(&asked.stdout),
        String::from_utf8_lossy(&asked.stderr)
    );
    wait_for(&portal, &home, &env, "installed", seen)?;
    let status = home.wait_status("the second set committed", |s| {
        s["upgrade"]["probation"].is_null() && installed(s) == set("2.0")
    })?;
    ensure!(
        status["upgrade"]["backup"]
            .to_string()
            .contains("alpha:1.0"),
        "the first set is the backup: {}",
        status["upgrade"]
    );
    ensure!(
        !home
            .path()
            .join("modules/com.example-sample-1.0.dll")
            .exists()
            && home
                .path()
                .join("modules/com.example-sample-2.0.dll")
                .is_file(),
        "the new .dll replaced the old"
    );
    Ok(())
}

const ECHO: &str = r#"
[components.echo]
kind = "sample-echo"
label = "echo-under-wine"
"#;

#[test]
fn the_sample_plugin_dll_is_loaded_and_its_component_runs_under_wine() -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let mut home = WineHome::new(wine, ECHO)?;
    let modules = home.path().join("modules");
    std::fs::create_dir_all(&modules)?;
    std::fs::copy(&wine.plugin, modules.join("com.example-sample-1.0.dll"))?;
    std::fs::write(
        modules.join("modules-info.properties"),
        "com.example\\:sample\\:1.0=component\\:1700000000\n",
    )?;
    home.spawn()?;
    let status = home.wait_status("the plugin's component in RUN", |s| {
        s["components"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["name"] == "echo" && c["state"] == "RUN")
        })
    })?;
    let echo = status["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "echo"))
        .context("echo")?;
    ensure!(
        echo["kind"] == "sample-echo" && echo["origin"] == "com.example-sample-1.0.dll",
        "{echo}"
    );
    ensure!(
        echo["actors"]["echo"]["state"] == "RUN",
        "the plugin's actor runs: {echo}"
    );
    let logs = home.logs();
    ensure!(logs.contains("plugin loaded"), "{logs}");
    ensure!(
        logs.contains("sample echo started"),
        "the plugin logs into the host: {logs}"
    );
    Ok(())
}

#[test]
fn a_core_that_exits_1_is_rolled_back_by_the_launcher_and_the_job_under_wine() -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    // A Windows program that exits 1 at once, built with mingw.
    let source = dir.path().join("exit1.c");
    std::fs::write(&source, "int main(void) { return 1; }\n")?;
    let core = dir.path().join("exit1.exe");
    let built = Command::new("x86_64-w64-mingw32-gcc")
        .arg("-o")
        .arg(&core)
        .arg(&source)
        .status()
        .context("x86_64-w64-mingw32-gcc")?;
    ensure!(built.success(), "mingw could not build exit1.exe");
    let coords = "com.banalytics.box:core:2.0";
    portal.publish_module(&PublishRequest::native(
        coords,
        ModuleType::Core,
        "exe",
        [(WINDOWS.to_owned(), core)],
    ))?;
    let env = env_uuid(2602);
    portal.assign_set(&env, &[coords.to_owned()])?;
    let mut home = WineHome::new(wine, &portal_box_toml(&portal, ""))?;
    register_home(&portal, &home.path(), &env)?;

    // Staged, the job, two failed starts of the core (each: the launcher
    // records it and starts the job), the rollback start.
    home.spawn()?;
    wait_for(&portal, &home, &env, "installation_cancelled", 0)?;
    let verdict = portal
        .statuses(&env)?
        .into_iter()
        .find(|l| l.status == "installation_cancelled")
        .context("the verdict")?;
    ensure!(
        verdict.message.contains("the core exited with status 1"),
        "{verdict}"
    );
    let status = home.wait_status("the launcher's own core, the set quarantined", |s| {
        s["core"]["origin"] == "launcher" && !s["upgrade"]["quarantined"].is_null()
    })?;
    ensure!(
        status["upgrade"]["quarantined"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the core exited with status 1")),
        "{}",
        status["upgrade"]
    );
    Ok(())
}

// ------------------------------------------------ a kill at every failpoint

/// A module set as the upgrade center writes it: files, `modules-hashes.json`,
/// then the marker `modules-info.properties`.
fn write_set(modules: &Path, models: &Path, set: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(modules)?;
    std::fs::create_dir_all(models)?;
    let mut info = String::from("#Banalytics box installed modules\n");
    let mut record = serde_json::Map::new();
    for (artifact, version) in set {
        let file = |dir: &Path, name: &str| -> Result<Value> {
            let body = format!("{artifact} {version} {name}")
                .repeat(64)
                .into_bytes();
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().context("parent")?)?;
            std::fs::write(&p, &body)?;
            Ok(json!({"name": name, "sha256": sha256_hex(&body), "size": body.len()}))
        };
        let main = file(modules, &format!("com.example-{artifact}-{version}.jar"))?;
        let dep = file(modules, &format!("lib/{artifact}.jar"))?;
        let model = file(models, &format!("{artifact}/m.bin"))?;
        let package = |f: Value| json!({"sha256": sha256_hex(f.to_string().as_bytes()), "size": 1, "files": [f]});
        record.insert(
            format!("com.example:{artifact}:{version}"),
            json!({"main": main, "dependencies": package(dep), "model": package(model)}),
        );
        info += &format!("com.example\\:{artifact}\\:{version}=component\\:1772360130\n");
    }
    std::fs::write(
        modules.join("modules-hashes.json"),
        serde_json::to_vec_pretty(&json!({"format": 1, "modules": record}))?,
    )?;
    std::fs::write(modules.join("modules-info.properties"), info)?;
    Ok(())
}

const SET_A: &[(&str, &str)] = &[("alpha", "1.0"), ("beta", "1.0")];
const SET_B: &[(&str, &str)] = &[("alpha", "2.0"), ("gamma", "1.0")];
const SET_Z: &[(&str, &str)] = &[("zeta", "0.9")];

const SWAP_CONFIG: &str = r#"[components.heartbeat]
kind = "probe"

[components.upgrade-center]
kind = "software-upgrade-center"
repository_url = "http://127.0.0.1:9/repo"
"#;

/// A home with A active, B staged and Z the backup, and `prepare` run.
fn swap_home(wine: &Wine, prepare: &[&str]) -> Result<WineHome> {
    let home = WineHome::new(wine, SWAP_CONFIG)?;
    let h = home.path();
    write_set(&h.join("modules"), &h.join("models"), SET_A)?;
    write_set(&h.join("modules-upgrade"), &h.join("models-upgrade"), SET_B)?;
    write_set(&h.join("modules-backup"), &h.join("models-backup"), SET_Z)?;
    if !prepare.is_empty() {
        let out = home.cli(prepare, &[])?;
        ensure!(
            out.status.success(),
            "{prepare:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(home)
}

type Tree = BTreeMap<String, String>;

/// The module and model trees of a set, written once in a scratch folder.
fn expected(set: &[(&str, &str)]) -> Result<(Tree, Tree)> {
    let dir = tempfile::tempdir()?;
    write_set(&dir.path().join("m"), &dir.path().join("d"), set)?;
    Ok((tree(&dir.path().join("m")), tree(&dir.path().join("d"))))
}

/// Kills `command` (after `prepare`) with `TerminateProcess` at each of the
/// failpoints a clean run passes; after each, the job's `apply` (what the
/// next start runs first) recovers, and the active set is exactly `after`,
/// its models with it, every marker beside a whole set, no journal left.
fn kill_everywhere(
    wine: &Wine,
    prepare: &[&str],
    command: &str,
    after: &[(&str, &str)],
) -> Result<Vec<String>> {
    let sides = [expected(SET_A)?, expected(SET_B)?, expected(SET_Z)?];
    let want = expected(after)?;
    let probe = swap_home(wine, prepare)?;
    let traced = probe.cli(&[command], &[("BANALYTICS_FAILPOINT_TRACE", "1")])?;
    ensure!(
        traced.status.success(),
        "a clean {command}: {}",
        String::from_utf8_lossy(&traced.stderr)
    );
    let points: Vec<String> = String::from_utf8_lossy(&traced.stderr)
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("failpoint "))
        .map(str::to_owned)
        .collect();
    ensure!(!points.is_empty(), "no failpoints traced for {command}");
    let check = |point: &str| -> Result<()> {
        let home = swap_home(wine, prepare)?;
        let h = home.path();
        let killed = home.cli(&[command], &[("BANALYTICS_FAILPOINT", point)])?;
        ensure!(
            killed.status.code() == Some(137),
            "{point}: not terminated there: {:?} {}",
            killed.status,
            String::from_utf8_lossy(&killed.stderr)
        );
        for dir in [
            "modules",
            "modules-upgrade",
            "modules-backup",
            "modules-swap.tmp",
        ] {
            let d = h.join(dir);
            ensure!(
                !d.join("modules-info.properties").exists()
                    || sides.iter().any(|(m, _)| *m == tree(&d)),
                "{point}: {dir} has a marker beside an incomplete set"
            );
        }
        let recovered = home.cli(&["apply"], &[])?;
        ensure!(
            recovered.status.success(),
            "{point}: recovery: {}",
            String::from_utf8_lossy(&recovered.stderr)
        );
        ensure!(
            (tree(&h.join("modules")), tree(&h.join("models"))) == want,
            "{point}: the active set is not exactly {after:?}: {:?}\nrecovery: {}",
            tree(&h.join("modules")),
            String::from_utf8_lossy(&recovered.stderr)
        );
        let journal = h.join("modules-swap.journal");
        ensure!(
            !journal.exists(),
            "{point}: a journal is left: {:?}\nrecovery: {}",
            std::fs::read_to_string(&journal),
            String::from_utf8_lossy(&recovered.stderr)
        );
        Ok(())
    };
    // Two at a time: each kill and recovery is two Wine processes.
    for pair in points.chunks(2) {
        std::thread::scope(|s| {
            let runs: Vec<_> = pair.iter().map(|p| s.spawn(|| check(p))).collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or_else(|_| bail!("a check panicked")))
                .collect::<Result<Vec<()>>>()
        })?;
    }
    Ok(points)
}

#[test]
fn apply_killed_at_every_failpoint_recovers_to_the_new_set_under_wine() -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let points = kill_everywhere(wine, &[], "apply", SET_B)?;
    ensure!(
        points.iter().any(|p| p == "apply.5.old-moved-out"),
        "Windows takes the rename path: {points:?}"
    );
    eprintln!("apply: {} failpoints: {points:?}", points.len());
    Ok(())
}

#[test]
fn rollback_killed_at_every_failpoint_recovers_to_the_old_set_under_wine() -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let points = kill_everywhere(wine, &["apply"], "rollback", SET_A)?;
    eprintln!("rollback: {} failpoints: {points:?}", points.len());
    Ok(())
}

#[test]
fn a_start_after_a_kill_in_the_middle_of_the_swap_recovers_and_runs_the_new_set_under_wine(
) -> Result<()> {
    let Some(wine) = wine() else { return Ok(()) };
    let mut home = swap_home(wine, &[])?;
    let point = "apply.5.old-moved-out";
    let killed = home.cli(&["apply"], &[("BANALYTICS_FAILPOINT", point)])?;
    ensure!(killed.status.code() == Some(137), "{:?}", killed.status);
    ensure!(
        !home.path().join("modules").exists(),
        "killed with no active set in place"
    );
    // `run` finishes the journaled swap before anything is loaded.
    home.spawn()?;
    let status = home.wait_status("the host running the recovered set", |_| true)?;
    ensure!(
        installed(&status) == ["com.example:alpha:2.0", "com.example:gamma:1.0"],
        "{}",
        status["upgrade"]
    );
    let (modules, models) = expected(SET_B)?;
    ensure!(tree(&home.path().join("modules")) == modules);
    ensure!(tree(&home.path().join("models")) == models);
    let journal = home.path().join("modules-swap.journal");
    ensure!(
        !journal.exists(),
        "a journal is left: {:?}\n{}",
        std::fs::read_to_string(&journal),
        home.logs()
    );
    Ok(())
}
