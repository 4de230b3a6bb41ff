//! The box's own web console in a real browser (issue 23): headless
//! Chromium over WebDriver (`banalytics_tests::browser`) against a real
//! box (supervised as a service manager would, restarted on exit 75) and
//! the reference portal as a process. A person's steps: log in through the
//! `console-url` link; see the components; with `apply = "approval"` see
//! the staged set's difference and Apply now, then the new set installed;
//! Synchronise now and watch the progress change without a reload; Discard
//! the staged set (modules-upgrade/ gone, the portal told); change the
//! software update type to on-boot and find it in box.toml with its
//! comment kept; a bad value shows the error and changes nothing. Every
//! page is shot at 1280 and 390 px into `target/screenshots/box-*.png`, and
//! an axe-core violation of impact serious or critical fails the test.
//!
//! Like the fleet console's test it needs a browser, so it is no default
//! test target; `.ci/run` runs it by name:
//!
//! ```text
//! cargo test -p banalytics-tests --test box_console
//! ```

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    browser::{self, Driver, Violation},
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess},
};
use fantoccini::{Client, Locator};

const V1: &str = "com.example.cam:alpha:1.0";
const V2: &str = "com.example.cam:alpha:2.0";

/// A download, a restart and a probation of debug builds on a loaded
/// two-core machine.
const CONVERGE: Duration = Duration::from_secs(120);

/// The comment the operator wrote in box.toml, which a save must keep.
const COMMENT: &str = "# the operator's note: keep this line\n";

async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr_of(c: &Client, css: &str, attr: &str) -> Option<String> {
    c.find(Locator::Css(css))
        .await
        .ok()?
        .attr(attr)
        .await
        .ok()
        .flatten()
}

/// Runs `f`, which blocks (the portal process's client runs a runtime of
/// its own), outside this test's runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Clicks the button `id`, accepting the question it asks.
async fn press(c: &Client, id: &str, confirm: bool) -> Result<()> {
    browser::click(c, Locator::Id(id)).await?;
    if confirm {
        eventually(Duration::from_secs(10), "the confirmation", || async {
            c.accept_alert().await.ok()
        })
        .await?;
    }
    Ok(())
}

/// The box, supervised by a thread of its own as a service manager would.
struct Supervised {
    b: Arc<Mutex<ManagedBox>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Supervised {
    fn new(b: ManagedBox) -> Supervised {
        let b = Arc::new(Mutex::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let (bb, s) = (b.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                bb.lock().expect("box").supervise()?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        });
        Supervised {
            b,
            stop,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ManagedBox) -> T) -> T {
        f(&mut self.b.lock().expect("box"))
    }

    fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => bail!("the supervising thread panicked"),
        }
    }
}

#[test]
fn an_operator_runs_the_upgrade_center_from_the_boxs_console() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The portal process's client has a runtime of its own: made, used
    // (through `blocking`) and dropped outside the test's runtime.
    let portal = PortalProcess::start(&dir.path().join("portal"), None, &[])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(scenario(&portal, dir.path()))
}

async fn scenario(portal: &PortalProcess, dir: &std::path::Path) -> Result<()> {
    let axe_js = browser::axe_source()?;
    let env = env_uuid(2301);
    let set = vec![
        ModuleSpec::new(V1, 20_000),
        ModuleSpec::new(V2, 5 * 1024 * 1024),
    ];
    blocking(|| portal.publish_all(&dir.join("files"), &set))?;
    blocking(|| portal.assign_set(&env, &[V1.to_owned()]))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut settings = blocking(|| BoxSettings::new(portal, Some(&env)));
    settings.upgrade_extra = "apply = \"approval\"\nmax_download_rate = \"1 MiB/s\"".into();
    settings.components = format!(
        "[components.probe]\nkind = \"probe\"\n\n[console]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let mut b = ManagedBox::new(&settings)?;
    let box_toml = b.path().join("config/box.toml");
    std::fs::write(
        &box_toml,
        format!("{COMMENT}{}", std::fs::read_to_string(&box_toml)?),
    )?;
    b.spawn()?;
    let home = b.path();
    let b = Supervised::new(b);
    // The first run stages the assigned set, which waits for approval.
    eventually(CONVERGE, "the first set staged", || async {
        blocking(|| b.with(|b| b.sync_report())).filter(|s| s["state"] == "staged")
    })
    .await?;

    let driver = Driver::start()?;
    let c = driver.session().await?;
    let mut failing: Vec<Violation> = Vec::new();
    let base = format!("http://127.0.0.1:{port}");
    let result = steps(&c, &b, portal, &env, &base, &home, &axe_js, &mut failing).await;
    if result.is_err() {
        let _ = browser::screenshot(&c, &browser::screenshot_dir(), "box-failure", 1280).await;
        eprintln!("box log: {}", b.with(|b| b.log_tail(40)));
    }
    let _ = c.close().await;
    result?;
    b.finish()?;
    ensure!(
        failing.is_empty(),
        "axe-core found serious or critical violations:\n{}",
        failing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    c: &Client,
    b: &Supervised,
    portal: &PortalProcess,
    env: &str,
    base: &str,
    home: &std::path::Path,
    axe_js: &str,
    failing: &mut Vec<Violation>,
) -> Result<()> {
    // The login page, then the console-url link.
    c.goto(&format!("{base}/console/login")).await?;
    failing.extend(browser::inspect(c, axe_js, "box-login").await?);
    let out = b.with(|b| b.home().cli(&["console-url"]))?;
    let link = String::from_utf8(out.stdout)?.trim().to_owned();
    c.goto(&link).await?;
    let components = eventually(CONVERGE, "the components", || async {
        text_of(c, "#components").await
    })
    .await?;
    for name in ["portal", "upgrade-center", "probe"] {
        ensure!(components.contains(name), "components: {components}");
    }
    ensure!(components.contains("RUN"), "components: {components}");
    failing.extend(browser::inspect(c, axe_js, "box-components").await?);

    // The staged set as a difference; Apply now; the new set installed.
    c.goto(&format!("{base}/console/upgrade")).await?;
    let added = attr_of(
        c,
        "#staged tr[data-module='com.example.cam:alpha']",
        "data-change",
    )
    .await
    .context("the staged set's difference")?;
    ensure!(added == "added", "alpha is added: {added}");
    let waits = text_of(c, "#waits").await.unwrap_or_default();
    ensure!(waits.contains("approv"), "what it waits for: {waits}");
    failing.extend(browser::inspect(c, axe_js, "box-upgrade-staged").await?);
    press(c, "apply-now", true).await?;
    eventually(CONVERGE, "the new set installed", || async {
        c.goto(&format!("{base}/console/upgrade")).await.ok()?;
        let installed = text_of(c, "#installed").await?;
        (installed.contains("com.example.cam:alpha") && installed.contains("1.0")).then_some(())
    })
    .await?;
    blocking(|| portal.wait_for_status(env, "installed", 0, CONVERGE))?;

    // Synchronise now: the progress changes on the page, without a reload.
    blocking(|| portal.assign_set(env, &[V2.to_owned()]))?;
    c.goto(&format!("{base}/console/upgrade")).await?;
    press(c, "sync-now", false).await?;
    eventually(CONVERGE, "the page after Synchronise now", || async {
        text_of(c, "#notice").await
    })
    .await?;
    // A keyboard user on Synchronise now keeps the focus there while the
    // region is replaced.
    c.execute(
        "window.consoleTestMark = 'same document'; document.getElementById('sync-now').focus();",
        vec![],
    )
    .await?;
    let mut seen: Vec<String> = Vec::new();
    let mut bars = 0;
    let start = Instant::now();
    loop {
        let state = attr_of(c, "#sync-state", "data-state")
            .await
            .unwrap_or_default();
        if let Some(bar) = text_of(c, "#sync-progress").await {
            if seen.last().map(String::as_str) != Some(bar.as_str()) {
                bars += 1;
                seen.push(bar);
            }
        }
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == "staged" {
            break;
        }
        ensure!(start.elapsed() < CONVERGE, "no staged set: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mark = c
        .execute("return window.consoleTestMark || null;", vec![])
        .await?;
    ensure!(mark == "same document", "the page was reloaded: {mark}");
    let focused = c
        .execute(
            "return document.activeElement && document.activeElement.id;",
            vec![],
        )
        .await?;
    ensure!(
        focused == "sync-now",
        "the focus after the region changed: {focused}"
    );
    ensure!(
        seen.iter().any(|s| s == "downloading") && bars >= 2,
        "the page showed the download's progress as it went: {seen:?}"
    );
    let module = attr_of(
        c,
        &format!("#sync-modules li[data-module='{V2}']"),
        "data-state",
    )
    .await;
    ensure!(
        module.as_deref() == Some("downloaded"),
        "the module's own progress: {module:?}"
    );
    let changed = attr_of(
        c,
        "#staged tr[data-module='com.example.cam:alpha']",
        "data-change",
    )
    .await
    .context("the staged set's difference")?;
    ensure!(changed == "changed", "alpha is changed: {changed}");
    failing.extend(browser::inspect(c, axe_js, "box-upgrade").await?);

    // Discard staged set.
    press(c, "discard", true).await?;
    eventually(CONVERGE, "the staged set gone from the page", || async {
        let notice = text_of(c, "#notice").await?;
        (c.find(Locator::Css("#staged")).await.is_err()).then_some(notice)
    })
    .await?;
    ensure!(
        !home.join("modules-upgrade").exists(),
        "modules-upgrade/ is gone"
    );
    let lines = blocking(|| portal.wait_for_status(env, "installation_cancelled", 0, CONVERGE))?;
    ensure!(
        lines.iter().any(|l| l.status == "installation_cancelled"
            && l.message.contains("discarded by the operator (console)")),
        "the portal was told: {:?}",
        lines.iter().map(ToString::to_string).collect::<Vec<_>>()
    );

    // Settings: on-boot saved with the comment kept.
    let box_toml = home.join("config/box.toml");
    c.goto(&format!("{base}/console/settings")).await?;
    c.find(Locator::Css("select[name=software_update_type]"))
        .await?
        .select_by_value("on-boot")
        .await?;
    press(c, "save", false).await?;
    let notice = eventually(CONVERGE, "the save's answer", || async {
        text_of(c, "#notice").await
    })
    .await?;
    ensure!(notice.contains("next start"), "notice: {notice}");
    let text = std::fs::read_to_string(&box_toml)?;
    ensure!(
        text.starts_with(COMMENT) && text.contains("software_update_type = \"on-boot\""),
        "box.toml: {text}"
    );
    ensure!(
        c.find(Locator::Id("restart-now")).await.is_ok(),
        "Restart now is offered"
    );
    failing.extend(browser::inspect(c, axe_js, "box-settings").await?);

    // A bad value: the error names the key, and nothing is written.
    c.goto(&format!("{base}/console/settings")).await?;
    let rate = c
        .find(Locator::Css("input[name=max_download_rate]"))
        .await?;
    rate.clear().await?;
    rate.send_keys("fast").await?;
    press(c, "save", false).await?;
    let notice = eventually(CONVERGE, "the refusal", || async {
        let ok = attr_of(c, "#notice", "data-ok").await?;
        (ok == "false").then_some(())?;
        text_of(c, "#notice").await
    })
    .await?;
    ensure!(
        notice.contains("max_download_rate") && notice.contains("accepted"),
        "the refusal names the key and what is accepted: {notice}"
    );
    ensure!(
        std::fs::read_to_string(&box_toml)? == text,
        "box.toml unchanged"
    );
    failing.extend(browser::inspect(c, axe_js, "box-settings-refused").await?);

    // The log, filtered.
    c.goto(&format!(
        "{base}/console/log?component=upgrade-center&level=info"
    ))
    .await?;
    let log = eventually(CONVERGE, "log lines", || async {
        text_of(c, "#log-lines").await
    })
    .await?;
    ensure!(log.contains("upgrade-center"), "log: {log}");
    failing.extend(browser::inspect(c, axe_js, "box-log").await?);
    Ok(())
}
