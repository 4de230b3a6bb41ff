//! The fleet console in a real browser: headless Chromium driven over
//! WebDriver (`chromedriver`, Debian's `chromium-driver`) with
//! `fantoccini`, against the real portal and three real boxes. A person's
//! steps: log in with the admin token, see the three environments, assign
//! v2 to the group as a rollout, watch the progress change without a
//! reload, and see the rollout halt when the third box's set is rolled
//! back, with that box's reason. Then it visits every page of the console
//! (login, Environments, an environment, Modules, Assign, Rollouts, a
//! rollout, a refused form, a registered box) at 1280 px and 390 px wide:
//! a screenshot of each in `target/screenshots/` and an axe-core check of
//! each, and it fails on any violation of impact "serious" or "critical"
//! (`banalytics_tests::browser`; axe-core is fetched by
//! `tests/fetch-axe.sh` when `target/axe-core/` lacks it).
//!
//! It needs a browser, so it is not one of the package's default test
//! targets (`test = false` in its `Cargo.toml`): `cargo test --workspace`
//! neither builds nor runs it. `.ci/run` installs `chromium
//! chromium-driver` and runs it by name:
//!
//! ```text
//! cargo test -p banalytics-tests --test console
//! ```
//!
//! On failure it saves a screenshot and the page's HTML under
//! `target/console-test/`.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    browser::{self, Driver, Violation},
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi},
    portal::{Portal, PortalConfig, PortalHandle},
    DEADLINE,
};
use fantoccini::{Client, Locator};

const ALPHA_1: &str = "com.example:alpha:1.0";
const ALPHA_2: &str = "com.example:alpha:2.0";
/// Harmless on two boxes; on the third its file makes the `drill`
/// component fail at start, so the set is rolled back.
const BROKEN: &str = "com.example:broken:1.0";

/// A download, a restart, probation and a rollback of debug builds on a
/// loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(120);

/// Where failure evidence goes: `target/console-test/`.
fn evidence_dir() -> PathBuf {
    browser::target_dir().join("console-test")
}

/// Polls `f` (which may read the page) until it returns `Some`.
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

/// The browser's part: what a person does and sees; the serious and
/// critical accessibility violations of every page go to `violations`.
async fn operate(
    c: &Client,
    portal: &PortalHandle,
    token: &str,
    envs: &[String],
    violations: &mut Vec<Violation>,
) -> Result<()> {
    let axe = browser::axe_source()?;
    // Logs in.
    c.goto(&portal.console_url()).await?;
    let url = c.current_url().await?;
    ensure!(
        url.path() == "/console/login",
        "not logged in, so the login page: {url}"
    );
    violations.extend(browser::inspect(c, &axe, "login").await?);
    c.find(Locator::Id("token")).await?.send_keys(token).await?;
    c.find(Locator::Id("login")).await?.click().await?;

    // Sees the three environments, connected.
    eventually(DEADLINE, "three connected environments", || async {
        let rows = c
            .find_all(Locator::Css("#environments tr[data-env]"))
            .await
            .ok()?;
        let text = text_of(c, "#environments").await?;
        (rows.len() == 3 && text.matches("connected").count() == 3 && !text.contains("offline"))
            .then_some(())
    })
    .await?;
    let table = text_of(c, "#environments").await.unwrap_or_default();
    for env in envs {
        ensure!(table.contains(env.as_str()), "{env} listed: {table}");
    }

    // Assigns v2 to the group as a rollout.
    c.goto(&format!("{}/assign", portal.console_url())).await?;
    for env in envs {
        c.find(Locator::Css(&format!(
            "#assign input[name=env][value='{env}']"
        )))
        .await?
        .click()
        .await?;
    }
    c.find(Locator::Css("select[name='module:com.example:alpha']"))
        .await?
        .select_by_value("2.0")
        .await?;
    c.find(Locator::Css("select[name='module:com.example:broken']"))
        .await?
        .select_by_value("1.0")
        .await?;
    c.find(Locator::Id("start-rollout")).await?.click().await?;
    // The form's answer is a redirect: the click returns before it loaded.
    let rollout_url = eventually(DEADLINE, "the rollout's page", || async {
        let url = c.current_url().await.ok()?;
        let loaded = c.find(Locator::Css("#rollout-state")).await.is_ok();
        (url.path().starts_with("/console/rollouts/") && loaded).then_some(url)
    })
    .await?;

    // Watches the progress change without a reload: a mark set on this
    // document now is still there when the page shows the later states.
    c.execute("window.consoleTestMark = 'same document';", vec![])
        .await?;
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        let state = text_of(c, "#rollout-state").await.unwrap_or_default();
        if seen.last() != Some(&state) {
            eprintln!("console: {state}");
            seen.push(state.clone());
        }
        if state.starts_with("halted") {
            break;
        }
        ensure!(
            start.elapsed() < CONVERGE * 3,
            "the rollout did not halt: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mark = c
        .execute("return window.consoleTestMark || null;", vec![])
        .await?;
    ensure!(mark == "same document", "the page was reloaded: {mark}");
    ensure!(
        seen.iter().any(|s| s.contains("1 of 3 installed"))
            && seen.iter().any(|s| s.contains("2 of 3 installed")),
        "the page showed the waves' progress as it happened: {seen:?}"
    );

    // Sees why: the third box's set was rolled back, with its reason.
    let reason = text_of(c, "#halt-reason").await.context("a halt reason")?;
    let cancelled = portal
        .statuses(&envs[2])?
        .into_iter()
        .rev()
        .find(|l| l.status == "installation_cancelled")
        .context("the third box reported installation_cancelled")?;
    ensure!(!cancelled.message.is_empty(), "the box gave a reason");
    ensure!(
        reason.contains(envs[2].as_str()) && reason.contains(cancelled.message.as_str()),
        "the halt names the box and its reason {:?}: {reason}",
        cancelled.message
    );
    let row = text_of(c, &format!("#rollout-boxes tr[data-env='{}']", envs[2]))
        .await
        .unwrap_or_default();
    ensure!(
        row.contains("failed"),
        "the box's row shows the failure: {row}"
    );

    tour(c, portal, envs, rollout_url.as_str(), &axe, violations).await
}

/// Every page of the console, each looked at with [`browser::inspect`].
async fn tour(
    c: &Client,
    portal: &PortalHandle,
    envs: &[String],
    rollout_url: &str,
    axe: &str,
    violations: &mut Vec<Violation>,
) -> Result<()> {
    let console = portal.console_url();
    let pages = [
        ("environments", console.clone(), "#environments"),
        (
            "environment",
            format!("{console}/env/{}", envs[2]),
            "#history",
        ),
        ("modules", format!("{console}/modules"), "#modules"),
        ("assign", format!("{console}/assign"), "#assign"),
        ("rollouts", format!("{console}/rollouts"), "#rollouts"),
        ("rollout", rollout_url.to_string(), "#rollout-boxes"),
    ];
    for (name, url, mark) in pages {
        c.goto(&url).await?;
        c.find(Locator::Css(mark))
            .await
            .with_context(|| format!("{name} page ({url}) shows {mark}"))?;
        violations.extend(browser::inspect(c, axe, name).await?);
    }
    // The page's script words a relative time as the server does
    // (`banalytics_ui::relative_time`), for when it keeps it true.
    for (ms, words) in [
        (180_000, "3 min ago"),
        (-180_000, "in 3 min"),
        (2_000, "just now"),
    ] {
        let got = c
            .execute(&format!("return banalyticsAgo({ms});"), vec![])
            .await?;
        ensure!(got == words, "banalyticsAgo({ms}) is {got}, not {words:?}");
    }
    // A form the portal refuses: Assign with no environment chosen.
    c.goto(&format!("{console}/assign")).await?;
    c.find(Locator::Css("button[value=assign]"))
        .await?
        .click()
        .await?;
    eventually(DEADLINE, "the refusal", || async {
        text_of(c, "main")
            .await?
            .contains("choose at least one environment")
            .then_some(())
    })
    .await?;
    violations.extend(browser::inspect(c, axe, "refused").await?);
    // A box registered: its UUID and secret, shown once.
    c.goto(&console).await?;
    c.find(Locator::Id("register-name"))
        .await?
        .send_keys("spare")
        .await?;
    c.find(Locator::Css("#register button"))
        .await?
        .click()
        .await?;
    eventually(DEADLINE, "the registration", || async {
        c.find(Locator::Id("registration")).await.ok().map(|_| ())
    })
    .await?;
    violations.extend(browser::inspect(c, axe, "registered").await?);
    Ok(())
}

#[test]
fn an_operator_rolls_out_v2_in_waves_and_sees_it_halt_on_a_rollback() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let token = portal
        .new_admin_token()
        .context("a fresh portal makes an admin token")?
        .to_string();
    portal.publish_all(
        &dir.path().join("files"),
        &[
            ModuleSpec::new(ALPHA_1, 20_000).with_packages(),
            ModuleSpec::new(ALPHA_2, 21_000).with_packages(),
            ModuleSpec::new(BROKEN, 5_000),
        ],
    )?;
    let envs: Vec<String> = (301..304).map(env_uuid).collect();
    let drill = format!(
        "[components.drill]\nkind = \"probe\"\nrestart_on_failure = \"stop\"\nfail_while_file = \"modules/{}\"\n",
        ModuleSpec::new(BROKEN, 0).file_name()
    );
    let mut boxes = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        portal.assign_set(env, &[ALPHA_1.to_string()])?;
        let mut s = BoxSettings::new(&portal, Some(env));
        s.max_boot_attempts = 2;
        if i == 2 {
            s.components = drill.clone();
        }
        let mut b = ManagedBox::new(&s)?;
        b.spawn()?;
        boxes.push(b);
    }
    // A service manager for the three boxes while the browser works.
    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<Vec<ManagedBox>> {
            while !stop.load(Ordering::Relaxed) {
                for b in &mut boxes {
                    b.supervise()?;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(boxes)
        })
    };
    for env in &envs {
        portal.wait_for_status(env, "installed", 0, CONVERGE)?;
        portal.wait_connected(env, DEADLINE)?;
    }

    let driver = Driver::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut violations = Vec::new();
    let outcome = runtime.block_on(async {
        let client = driver.session().await?;
        let result = operate(&client, &portal, &token, &envs, &mut violations).await;
        if result.is_err() {
            let dir = evidence_dir();
            let _ = std::fs::create_dir_all(&dir);
            if let Ok(png) = client.screenshot().await {
                let _ = std::fs::write(dir.join("failure.png"), png);
            }
            if let Ok(html) = client.source().await {
                let _ = std::fs::write(dir.join("failure.html"), html);
            }
            eprintln!("screenshot and page saved in {}", dir.display());
        }
        let _ = client.close().await;
        result
    });
    stop.store(true, Ordering::Relaxed);
    let boxes = supervisor.join().expect("supervisor thread");
    if outcome.is_err() {
        if let Ok(boxes) = &boxes {
            for b in boxes {
                eprintln!("--- box {}:\n{}", b.path().display(), b.log_tail(15));
            }
        }
    }
    outcome?;
    boxes?;
    ensure!(
        violations.is_empty(),
        "{} serious or critical accessibility violation(s):\n{}",
        violations.len(),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
