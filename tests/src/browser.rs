//! A real browser for the consoles' tests: headless Chromium driven over
//! WebDriver (`chromedriver`, Debian's `chromium-driver`) with
//! `fantoccini`, an accessibility check of each page with axe-core, and
//! screenshots of each page at a screen's and a phone's width.
//!
//! axe-core comes from the npm registry, pinned by version and SHA-512
//! (`tests/fetch-axe.sh`, which [`axe_source`] runs when
//! `target/axe-core/axe.min.js` is missing); its text is run in the page
//! with WebDriver's executeScript, so no node is needed.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

use crate::DEADLINE;

/// Clicks the element `locator` finds. A live region the server sends
/// again replaces its elements, so the one found may be gone before the
/// click lands: then it is found and clicked again, as a person would.
pub async fn click(c: &Client, locator: Locator<'_>) -> Result<()> {
    let mut attempts = 0;
    loop {
        let found = c
            .find(locator)
            .await
            .with_context(|| format!("{locator:?}"))?;
        match found.click().await {
            Err(e) if e.is_stale_element_reference() && attempts < 5 => attempts += 1,
            r => return Ok(r?),
        }
    }
}

/// The widths every page is looked at: a laptop's screen and a phone's.
pub const WIDTHS: [u32; 2] = [1280, 390];

/// The tallest screenshot: a page longer than this is cut (a history of
/// thousands of statuses need not be a 100 MB image).
const MAX_SHOT_HEIGHT: u32 = 4_000;

/// The impacts that fail a test; "minor" and "moderate" are reported only.
pub const FAILING_IMPACTS: [&str; 2] = ["serious", "critical"];

/// `chromedriver` on a free loopback port; killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts `chromedriver` and waits until it listens.
    pub fn start() -> Result<Driver> {
        // chromedriver takes no port 0: take a free port and hand it over.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                start.elapsed() < DEADLINE,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Driver { child, url })
    }

    /// A session of headless Chromium (`/usr/bin/chromium`), 1400×1000.
    pub async fn session(&self) -> Result<Client> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000", "--hide-scrollbars"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cargo target folder of the running test (`target/`), from its
/// executable's path (`target/debug/deps/NAME-HASH`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("screenshots")
}

/// The text of `target/axe-core/axe.min.js`, fetched first with
/// `tests/fetch-axe.sh` when missing.
pub fn axe_source() -> Result<String> {
    let dir = target_dir().join("axe-core");
    let file = dir.join("axe.min.js");
    if !file.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fetch-axe.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(
            status.success() && file.exists(),
            "{} could not fetch axe-core into {}",
            script.display(),
            dir.display()
        );
    }
    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))
}

/// One axe-core violation: a rule, its impact and the elements that
/// break it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The page's name, as the test gave it.
    pub page: String,
    /// The rule's id (`color-contrast`, `label`, ...).
    pub rule: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// What the rule asks.
    pub help: String,
    /// Each failing element's selector and axe's summary.
    pub nodes: Vec<String>,
}

impl Violation {
    /// Whether it fails a test ([`FAILING_IMPACTS`]).
    pub fn fails(&self) -> bool {
        FAILING_IMPACTS.contains(&self.impact.as_str())
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}): {}",
            self.page, self.rule, self.impact, self.help
        )?;
        for n in &self.nodes {
            write!(f, "\n    {n}")?;
        }
        Ok(())
    }
}

/// Runs axe-core in the page `c` shows (injecting it first when the page
/// has none) and returns its violations of every impact.
pub async fn axe(c: &Client, axe_js: &str, page: &str) -> Result<Vec<Violation>> {
    let present = c
        .execute("return typeof window.axe === 'object';", vec![])
        .await?;
    if present != Value::Bool(true) {
        let inject = format!("{axe_js}\n;return typeof window.axe;");
        let kind = c.execute(&inject, vec![]).await?;
        ensure!(kind == "object", "axe-core did not load in {page}: {kind}");
    }
    let result = c
        .execute_async(
            r#"var done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ["violations"] }).then(function (r) {
  done(r.violations.map(function (v) {
    return { id: v.id, impact: v.impact || "", help: v.help,
      nodes: v.nodes.map(function (n) { return n.target.join(" ") + ": " + (n.failureSummary || ""); }) };
  }));
}).catch(function (e) { done("axe failed: " + e); });"#,
            vec![],
        )
        .await?;
    let Value::Array(list) = result else {
        bail!("axe-core in {page}: {result}");
    };
    Ok(list
        .iter()
        .map(|v| Violation {
            page: page.to_string(),
            rule: v["id"].as_str().unwrap_or_default().to_string(),
            impact: v["impact"].as_str().unwrap_or_default().to_string(),
            help: v["help"].as_str().unwrap_or_default().to_string(),
            nodes: v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
        })
        .collect())
}

/// Saves the page `c` shows as `DIR/NAME-WIDTH.png` at `width` CSS pixels,
/// as tall as the page (at most [`MAX_SHOT_HEIGHT`]); the file's path.
pub async fn screenshot(c: &Client, dir: &Path, name: &str, width: u32) -> Result<PathBuf> {
    c.set_window_size(width, 900).await?;
    let height = c
        .execute(
            "return Math.ceil(document.documentElement.scrollHeight);",
            vec![],
        )
        .await?
        .as_u64()
        .unwrap_or(900)
        .clamp(300, u64::from(MAX_SHOT_HEIGHT)) as u32;
    c.set_window_size(width, height).await?;
    let inner = c.execute("return window.innerWidth;", vec![]).await?;
    ensure!(
        inner.as_u64() == Some(u64::from(width)),
        "the browser would not make {name} {width} px wide: its viewport is {inner}"
    );
    let png = c.screenshot().await?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}-{width}.png"));
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Looks at the page `c` shows at each of [`WIDTHS`]: a screenshot
/// (`screenshot_dir()/NAME-WIDTH.png`) and axe-core's violations, every
/// one of them printed; returns those that fail ([`Violation::fails`]).
/// The window is 1400×1000 again afterwards.
pub async fn inspect(c: &Client, axe_js: &str, name: &str) -> Result<Vec<Violation>> {
    let mut failing = Vec::new();
    for width in WIDTHS {
        let path = screenshot(c, &screenshot_dir(), name, width).await?;
        eprintln!("screenshot: {}", path.display());
        for v in axe(c, axe_js, &format!("{name} at {width} px")).await? {
            eprintln!("axe: {v}");
            if v.fails() {
                failing.push(v);
            }
        }
    }
    c.set_window_size(1400, 1000).await?;
    Ok(failing)
}
