//! Several `banalytics-portal serve` processes on one PostgreSQL database
//! (the test's own server, `banalytics_tests::postgres`) and one data
//! folder: a box reaches its fleet through any of them. Skipped, with the
//! reason printed, where Debian's `postgresql` package is not installed,
//! unless `CI` is set.

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{status_lines, ModuleSpec, PortalApi, PortalProcess},
    poll_until,
    portal::rollout::{RolloutSpec, RolloutState, WaveSize},
    postgres,
    simbox::SimBox,
    DEADLINE,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};

/// `serve --data DATA --database URL`.
fn portal(data: &Path, url: &str) -> Result<PortalProcess> {
    PortalProcess::start(data, None, &["--database", url])
}

/// Registers `env` through `portal`: its secret.
fn register(portal: &PortalProcess, env: &str) -> Result<String> {
    Ok(portal
        .block_on(portal.admin().add_environment("", Some(env)))?
        .environment_secret)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A box's connection to `portal` as `env`.
async fn connect(portal: &PortalProcess, env: &str, secret: &str) -> Result<Ws> {
    let url = format!(
        "{}/portal-integration?environmentUuid={env}&environmentHash=h",
        portal.portal_url()
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {secret}").parse()?);
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// The next text frame of `ws`, as JSON, within [`DEADLINE`].
async fn next_json(ws: &mut Ws) -> Result<Value> {
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .context("no frame in time")?
            .context("connection closed")??;
        if let Message::Text(t) = frame {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

#[test]
fn a_sync_asked_through_the_second_portal_reaches_a_box_on_the_first() -> Result<()> {
    let _machine = crate::machine::shared();
    let Some(url) = postgres::database() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let first = portal(dir.path(), &url)?;
    let second = portal(dir.path(), &url)?;
    let env = "6b0c1f8e-0000-4000-8000-00000000a001";
    // Registered through the second, let in by the first: one registry.
    let secret = register(&second, env)?;
    let box_side = tokio::runtime::Runtime::new()?;
    let mut ws = box_side.block_on(connect(&first, env, &secret))?;
    poll_until(DEADLINE, "the box connected to the first portal", || {
        first
            .environment_report(env)
            .ok()
            .flatten()
            .filter(|e| e.connected)
    })?;
    let delivered = second.block_on(second.admin().sync(env))?;
    ensure!(delivered == 0, "the second portal has no connection of it");
    let frame = box_side.block_on(next_json(&mut ws))?;
    ensure!(frame["type"] == "EVT_SYNC_SOFT", "{frame}");
    Ok(())
}

/// A box away when its wave was assigned (the rollout's sync reached no
/// connection) that then connects to a portal which does not drive the
/// rollout is told to synchronise: the driver owes it the sync and learns
/// of the connection from the other process. The box here is a bare
/// protocol client that, like a box, asks for its set only when told.
#[test]
fn a_box_away_at_its_assignment_is_told_to_synchronise_by_whichever_portal_it_connects_to(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let Some(url) = postgres::database() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    let first = portal(&data, &url)?;
    let spec = ModuleSpec::new("com.example.portals:cam:3.0", 4096);
    first.publish_module(&spec.write(&dir.path().join("files"))?)?;
    let env = "6b0c1f8e-0000-4000-8000-00000000c001";
    let secret = register(&first, env)?;
    first.block_on(first.admin().start_rollout(&RolloutSpec {
        name: "a box away".into(),
        target: vec![spec.coordinates.clone()],
        environments: vec![env.to_owned()],
        waves: vec![WaveSize::Rest],
        failure_threshold_percent: 0,
        report_timeout_ms: 120_000,
    }))?;
    // The first portal takes the rollout's lease at its next tick (each
    // second); the second starts after it, and never drives the rollout.
    std::thread::sleep(Duration::from_millis(2500));
    let second = portal(&data, &url)?;
    let box_side = tokio::runtime::Runtime::new()?;
    let mut ws = box_side.block_on(connect(&second, env, &secret))?;
    let frame = box_side.block_on(next_json(&mut ws))?;
    ensure!(frame["type"] == "EVT_SYNC_SOFT", "{frame}");
    Ok(())
}

#[test]
fn the_second_portal_shows_a_status_that_reached_the_first() -> Result<()> {
    let _machine = crate::machine::shared();
    let Some(url) = postgres::database() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let first = portal(dir.path(), &url)?;
    let second = portal(dir.path(), &url)?;
    let env = "6b0c1f8e-0000-4000-8000-00000000a002";
    let secret = register(&first, env)?;
    let box_side = tokio::runtime::Runtime::new()?;
    let mut ws = box_side.block_on(connect(&first, env, &secret))?;
    // The second portal's console, live: its Environments stream.
    let mut live = box_side.block_on(console_stream(&second))?;
    box_side
        .block_on(live.chunk())?
        .context("the first render")?;
    let status = json!({
        "type": "EVT_ENV_MOD_UPD_STS",
        "environmentUuid": env,
        "module": {"groupId": "com.example", "artifactId": "cam", "version": "2.0"},
        "status": "downloading",
        "statusMessage": "seen by every portal",
    });
    box_side.block_on(ws.send(Message::Text(status.to_string().into())))?;
    let lines = poll_until(DEADLINE, "the status on the second portal", || {
        let report = second.environment_report(env).ok().flatten()?;
        let lines = status_lines(&report);
        (!lines.is_empty()).then_some(lines)
    })?;
    ensure!(lines[0].status == "downloading", "{lines:?}");
    // The live page showed it without a reload.
    box_side.block_on(async {
        let mut seen = String::new();
        tokio::time::timeout(DEADLINE, async {
            while !seen.contains("downloading") {
                let chunk = live.chunk().await?.context("stream ended")?;
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
            anyhow::Ok(())
        })
        .await
        .context("the second portal's live page never showed the status")?
    })?;
    Ok(())
}

/// Logs in to `portal`'s console and opens its Environments page's event
/// stream.
async fn console_stream(portal: &PortalProcess) -> Result<reqwest::Response> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let console = format!("http://{}/console", portal.addr());
    let login = http
        .post(format!("{console}/login"))
        .form(&[("token", banalytics_tests::e2e::HARNESS_ADMIN_TOKEN)])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .context("a session cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let stream = http
        .get(format!("{console}/events?view=envs"))
        .header("cookie", cookie)
        .send()
        .await?
        .error_for_status()?;
    Ok(stream)
}

#[test]
fn a_rollout_started_on_one_portal_is_finished_by_the_other_after_a_sigkill() -> Result<()> {
    let _machine = crate::machine::shared();
    let Some(url) = postgres::database() else {
        return Ok(());
    };
    const BOXES: usize = 6;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("portal");
    let mut first = portal(&data, &url)?;
    let spec = ModuleSpec::new("com.example.portals:cam:2.0", 4096);
    first.publish_module(&spec.write(&dir.path().join("files"))?)?;
    let envs: Vec<String> = (0..BOXES)
        .map(|i| format!("6b0c1f8e-0000-4000-8000-0000000b{i:04}"))
        .collect();
    let secrets: Vec<String> = envs
        .iter()
        .map(|e| register(&first, e))
        .collect::<Result<_>>()?;
    let rollout = first.block_on(first.admin().start_rollout(&RolloutSpec {
        name: "across portals".into(),
        target: vec![spec.coordinates.clone()],
        environments: envs.clone(),
        waves: vec![WaveSize::Boxes(1), WaveSize::Boxes(2), WaveSize::Rest],
        failure_threshold_percent: 0,
        report_timeout_ms: 120_000,
    }))?;
    // The first portal takes the rollout's lease at its next tick (each
    // second); the second starts after it.
    std::thread::sleep(Duration::from_millis(2500));
    let second = portal(&data, &url)?;

    // Every box is connected to the second portal: the first drives the
    // rollout on statuses that reached the second, and its assignments
    // reach the boxes through the second.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Runtime::new()?;
    let sims: Vec<_> = envs
        .iter()
        .zip(&secrets)
        .map(|(env, secret)| {
            runtime.spawn(
                SimBox {
                    ws_url: format!(
                        "{}/portal-integration?environmentUuid={env}&environmentHash=sim",
                        second.portal_url()
                    ),
                    env: env.clone(),
                    secret: Some(secret.clone()),
                    install_time: Duration::from_millis(1500),
                    fail: false,
                }
                .run(stop_rx.clone()),
            )
        })
        .collect();
    let current = |p: &PortalProcess| {
        p.block_on(p.admin().rollouts())
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.id == rollout.id))
    };
    poll_until(DEADLINE, "the first wave done, by the first portal", || {
        current(&first).filter(|r| r.current_wave >= 1)
    })?;
    first.kill()?;

    let done = poll_until(
        Duration::from_secs(60),
        "the rollout finished by the second portal",
        || current(&second).filter(|r| r.state == RolloutState::Finished),
    )?;
    let _ = stop_tx.send(true);
    for s in sims {
        let _ = runtime.block_on(s);
    }
    ensure!(
        done.installed() == BOXES && done.failed() == 0,
        "every box installed once, none failed: {done:?}"
    );
    Ok(())
}
