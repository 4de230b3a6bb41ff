//! Rollouts through the real portal: boxes are in-process clients of the
//! protocol (WebSocket), the rollout is driven by what they report, and
//! a portal stopped and started again in the middle of a rollout goes on
//! from where it was. The admin API refuses calls without the token.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    path::Path,
    time::{Duration, Instant},
};

use banalytics_portal::{
    rollout::{BoxState, RolloutSpec, RolloutState, DEFAULT_WAVES},
    AdminClient, ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const DEADLINE: Duration = Duration::from_secs(20);
const TOKEN: &str = "rollout-test-token";

async fn start(data: &Path) -> PortalHandle {
    let mut config = PortalConfig::new(data);
    // Its boxes are bare protocol clients without secrets: a lab.
    config.open_registration = true;
    config.admin_token = Some(TOKEN.to_string());
    Portal::start(config).await.unwrap()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A box: connects as `env`.
async fn connect(portal: &PortalHandle, env: &str) -> Ws {
    connect_async(portal.ws_url(env, "h")).await.unwrap().0
}

/// Waits for `EVT_SYNC_SOFT` on `ws`.
async fn synced(ws: &mut Ws) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("EVT_SYNC_SOFT") => return,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("EVT_SYNC_SOFT before the deadline");
}

async fn report(ws: &mut Ws, env: &str, status: &str, message: Option<&str>) {
    let frame = json!({
        "type": "EVT_ENV_MOD_UPD_STS",
        "environmentUuid": env,
        "module": Value::Null,
        "status": status,
        "statusMessage": message,
    });
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// Asserts that `ws` hears nothing for `wait`.
async fn assert_quiet(ws: &mut Ws, wait: Duration, what: &str) {
    let heard = tokio::time::timeout(wait, ws.next()).await;
    assert!(heard.is_err(), "{what}: {heard:?}");
}

/// Waits for the rollout to finish, with `installed` and `failed` boxes.
async fn assert_finished_with(portal: &PortalHandle, installed_failed: (usize, usize)) {
    let r = eventually("the rollout to finish", || {
        portal
            .rollouts()
            .into_iter()
            .find(|r| r.state == RolloutState::Finished)
    })
    .await;
    assert_eq!((r.installed(), r.failed()), installed_failed);
}

fn spec(envs: &[String]) -> RolloutSpec {
    RolloutSpec {
        name: "v2".into(),
        target: vec!["com.example:cam:2.0".into()],
        environments: envs.to_vec(),
        waves: DEFAULT_WAVES.to_vec(),
        failure_threshold_percent: 0,
        report_timeout_ms: 600_000,
    }
}

fn publish(portal: &PortalHandle, dir: &Path) {
    let file = dir.join("cam.jar");
    std::fs::write(&file, b"cam 2.0").unwrap();
    portal
        .publish(&PublishRequest::new(
            "com.example:cam:2.0",
            ModuleType::Component,
            file,
        ))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_follow_the_reports_and_survive_a_portal_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("portal");
    let portal = start(&data).await;
    publish(&portal, dir.path());
    let envs: Vec<String> = (0..3).map(|i| format!("env-{i}")).collect();
    let mut boxes = Vec::new();
    for e in &envs {
        boxes.push(connect(&portal, e).await);
    }
    eventually("three connected", || {
        (portal.environments().iter().filter(|e| e.connected).count() == 3).then_some(())
    })
    .await;

    let r = portal.start_rollout(spec(&envs)).unwrap();
    assert_eq!(r.waves.len(), 3, "1 box, 10 % (1 box), the rest");
    synced(&mut boxes[0]).await;
    assert_eq!(
        portal.environment("env-0").unwrap().assigned,
        ["com.example:cam:2.0"]
    );
    assert!(portal.environment("env-1").unwrap().assigned.is_empty());
    report(&mut boxes[0], "env-0", "downloading", None).await;
    report(&mut boxes[0], "env-0", "installed", None).await;
    synced(&mut boxes[1]).await;

    // Stop the portal with wave 2 assigned; the box installs meanwhile and
    // reports once the portal is back (its statuses are durable).
    drop(boxes);
    let addr = portal.addr();
    portal.shutdown().await;
    let mut config = PortalConfig::new(&data);
    config.listen = addr;
    config.open_registration = true;
    let portal = Portal::start(config).await.unwrap();
    let r = portal.rollouts().remove(0);
    assert_eq!(r.state, RolloutState::Running);
    assert_eq!(r.current_wave, 1);
    assert_eq!(r.box_state("env-0"), Some(&BoxState::Installed));
    let mut b1 = connect(&portal, "env-1").await;
    let mut b2 = connect(&portal, "env-2").await;
    report(&mut b1, "env-1", "installed", None).await;
    synced(&mut b2).await;
    report(
        &mut b2,
        "env-2",
        "installation_cancelled",
        Some("rolled back: component drill failed"),
    )
    .await;
    let r = eventually("the rollout to halt", || {
        portal
            .rollouts()
            .into_iter()
            .find(|r| matches!(r.state, RolloutState::Halted { .. }))
    })
    .await;
    let RolloutState::Halted { reason } = &r.state else {
        unreachable!()
    };
    assert!(
        reason.contains("env-2: installation_cancelled: rolled back: component drill failed"),
        "{reason}"
    );

    // The operator resumes from the admin API: the last wave's failure is
    // accepted and the rollout ends.
    let client = AdminClient::new(&portal.url()).with_token(Some(TOKEN));
    let r = client.resume_rollout(r.id).await.unwrap();
    assert_eq!(r.state, RolloutState::Finished);
    assert_eq!((r.installed(), r.failed()), (2, 1));
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_cancel_stops_the_waves() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(&dir.path().join("portal")).await;
    publish(&portal, dir.path());
    let without = AdminClient::new(&portal.url());
    let err = without.environments().await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let wrong = AdminClient::new(&portal.url()).with_token(Some("guess"));
    assert!(wrong.rollouts().await.is_err());
    let client = AdminClient::new(&portal.url()).with_token(Some(TOKEN));
    let envs: Vec<String> = (0..5).map(|i| format!("env-{i}")).collect();
    let r = client.start_rollout(&spec(&envs)).await.unwrap();
    assert!(matches!(
        r.box_state("env-0"),
        Some(BoxState::Assigned { .. })
    ));
    let r = client.cancel_rollout(r.id).await.unwrap();
    assert_eq!(r.state, RolloutState::Cancelled);
    let mut b0 = connect(&portal, "env-0").await;
    report(&mut b0, "env-0", "installed", None).await;
    // The status is handled (and fed to the rollouts) before it is listed.
    eventually("the status recorded", || {
        (portal.environment("env-0")?.statuses.len() == 1).then_some(())
    })
    .await;
    assert!(
        portal
            .environment("env-1")
            .is_none_or(|e| e.assigned.is_empty()),
        "a cancelled rollout assigns no further box"
    );
    let unknown = client
        .start_rollout(&RolloutSpec {
            target: vec!["com.example:nope:1".into()],
            ..spec(&envs)
        })
        .await;
    assert!(unknown.is_err(), "an unknown module refuses the rollout");
    portal.shutdown().await;
}

/// An environment is in one live rollout at a time: a second rollout that
/// names it is refused (naming the first) until the first is over; a
/// halted rollout is not over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_over_an_environment_of_a_live_rollout_is_refused_until_it_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(&dir.path().join("portal")).await;
    publish(&portal, dir.path());
    let client = AdminClient::new(&portal.url()).with_token(Some(TOKEN));
    let envs: Vec<String> = (0..4).map(|i| format!("env-{i}")).collect();
    let first = client.start_rollout(&spec(&envs[..2])).await.unwrap();

    let overlapping = client
        .start_rollout(&spec(&envs[1..]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        overlapping.contains("400")
            && overlapping.contains("env-1")
            && overlapping.contains(&format!("rollout {}", first.id)),
        "{overlapping}"
    );
    assert_eq!(portal.rollouts().len(), 1, "nothing started");
    assert!(
        portal
            .environment("env-2")
            .is_none_or(|e| e.assigned.is_empty()),
        "nothing assigned"
    );
    // Other environments are free.
    client.start_rollout(&spec(&envs[2..])).await.unwrap();
    // Once the first is over, its environments are free again.
    client.cancel_rollout(first.id).await.unwrap();
    client.start_rollout(&spec(&envs[..2])).await.unwrap();
    assert_eq!(portal.rollouts().len(), 3);
    portal.shutdown().await;
}

/// A box away when its wave was assigned (the `EVT_SYNC_SOFT` of the
/// assignment reached no connection) is told to synchronise when it
/// connects again, so the rollout does not wait for it until its report
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_away_when_its_wave_was_assigned_is_told_to_synchronise_when_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(&dir.path().join("portal")).await;
    publish(&portal, dir.path());
    let envs: Vec<String> = (0..2).map(|i| format!("env-{i}")).collect();
    let mut b0 = connect(&portal, "env-0").await;
    let mut r = spec(&envs);
    r.waves = vec![
        banalytics_portal::rollout::WaveSize::Boxes(1),
        banalytics_portal::rollout::WaveSize::Rest,
    ];
    portal.start_rollout(r).unwrap();
    synced(&mut b0).await;
    // A box told already is not told again when it connects anew (as it
    // does after the restart that applies the set).
    drop(b0);
    let mut b0 = connect(&portal, "env-0").await;
    assert_quiet(
        &mut b0,
        Duration::from_millis(500),
        "a box told already is not told again",
    )
    .await;
    // env-1 is away: the second wave's sync reaches nobody.
    report(&mut b0, "env-0", "installed", None).await;
    eventually("the second wave assigned", || {
        (portal.environment("env-1")?.assigned == ["com.example:cam:2.0"]).then_some(())
    })
    .await;
    let mut b1 = connect(&portal, "env-1").await;
    synced(&mut b1).await;
    report(&mut b1, "env-1", "installed", None).await;
    assert_finished_with(&portal, (2, 0)).await;
    // Once its verdict is in, a box that connects is not told anything.
    let mut again = connect(&portal, "env-1").await;
    assert_quiet(
        &mut again,
        Duration::from_millis(500),
        "a box whose verdict is in is not told",
    )
    .await;
    portal.shutdown().await;
}

/// A portal that takes a rollout over (here: started again on its data;
/// with PostgreSQL, another process after the driver died) tells each box
/// of the current wave that reported nothing since its assignment to
/// synchronise: the sync of the process before may never have reached it
/// (that process died between the assignment's commit and the sync, or
/// the box was away and the process's mark of it was in its memory). A
/// box that reported since its assignment is not told again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_taking_a_rollout_over_tells_the_boxes_assigned_that_reported_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("portal");
    let portal = start(&data).await;
    publish(&portal, dir.path());
    let envs: Vec<String> = (0..2).map(|i| format!("env-{i}")).collect();
    let mut b0 = connect(&portal, "env-0").await;
    let mut r = spec(&envs);
    r.waves = vec![banalytics_portal::rollout::WaveSize::Rest];
    portal.start_rollout(r).unwrap();
    // env-0 is told and starts; env-1 is away: its sync reaches nobody.
    synced(&mut b0).await;
    report(&mut b0, "env-0", "downloading", None).await;
    eventually("env-0's status recorded", || {
        portal
            .environment("env-0")?
            .statuses
            .iter()
            .any(|s| s.status == "downloading")
            .then_some(())
    })
    .await;
    drop(b0);
    portal.shutdown().await;

    let portal = start(&data).await;
    let mut b1 = connect(&portal, "env-1").await;
    synced(&mut b1).await;
    let mut b0 = connect(&portal, "env-0").await;
    assert_quiet(
        &mut b0,
        Duration::from_millis(1500),
        "a box that reported since its assignment is not told again",
    )
    .await;
    report(&mut b0, "env-0", "installed", None).await;
    report(&mut b1, "env-1", "installed", None).await;
    assert_finished_with(&portal, (2, 0)).await;
    portal.shutdown().await;
}

/// Asks for the box's set (`GET_ENV_MOD_REQ`): the modules answered.
async fn ask_set(ws: &mut Ws, env: &str) -> Vec<Value> {
    let frame = json!({"type": "GET_ENV_MOD_REQ", "environmentUUID": env});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("GET_ENV_MOD_RES") => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    return v["modules"].as_array().cloned().unwrap_or_default();
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("GET_ENV_MOD_RES before the deadline")
}

/// A box answered its old set just before its wave assigned it the new one
/// ends that synchronisation on the old set: its refusal (here of an empty
/// set, as a box with nothing assigned reports at its first run) does not
/// fail it in the rollout. Its `installed` after it asked again does count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_on_the_set_a_box_had_before_its_wave_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(&dir.path().join("portal")).await;
    publish(&portal, dir.path());
    let env = "env-0".to_owned();
    let mut ws = connect(&portal, &env).await;
    assert!(
        ask_set(&mut ws, &env).await.is_empty(),
        "nothing assigned yet"
    );

    let r = portal
        .start_rollout(spec(std::slice::from_ref(&env)))
        .unwrap();
    synced(&mut ws).await;
    report(
        &mut ws,
        &env,
        "installation_cancelled",
        Some("target set refused: the target set is empty"),
    )
    .await;
    // The status is recorded before the next frame is read.
    let set = ask_set(&mut ws, &env).await;
    assert_eq!(set.len(), 1, "{set:?}");
    let now = portal
        .rollouts()
        .into_iter()
        .find(|x| x.id == r.id)
        .unwrap();
    assert_eq!(now.state, RolloutState::Running, "{now:?}");
    assert!(
        matches!(now.box_state(&env), Some(BoxState::Assigned { .. })),
        "{now:?}"
    );
    report(&mut ws, &env, "installed", None).await;
    assert_finished_with(&portal, (1, 0)).await;
    portal.shutdown().await;
}

/// A sync an operator asks while the box is away reaches it when it
/// connects, once: a box does not synchronise on a connection by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_asked_while_the_box_is_away_reaches_it_when_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(&dir.path().join("portal")).await;
    assert_eq!(portal.sync("env-0"), 0, "no connection took it");
    let mut ws = connect(&portal, "env-0").await;
    synced(&mut ws).await;
    drop(ws);
    let mut again = connect(&portal, "env-0").await;
    assert_quiet(
        &mut again,
        Duration::from_millis(500),
        "an owed sync is sent once",
    )
    .await;
    portal.shutdown().await;
}
