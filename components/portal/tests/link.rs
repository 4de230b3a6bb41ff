//! The component against a stand-in portal on 127.0.0.1: frames both ways,
//! junk skipped, reconnect with the queue kept in order, dead links found.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod common;

use std::time::{Duration, Instant};

use banalytics_messages::portal::{
    GetEnvModulesRequest, GetEnvModulesResponse, ModuleRef, ModuleStatus, ModuleStatusUpdate,
    PortalLinkChanged, PortalOutboxQuery, PortalOutboxState, SyncSoftware,
};
use banalytics_portal_integration::Timing;
use banalytics_sdk::{Bus, State};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn status(n: usize) -> ModuleStatusUpdate {
    ModuleStatusUpdate {
        environment_uuid: "env-42".into(),
        module: Some(ModuleRef {
            group_id: "com.example".into(),
            artifact_id: format!("m{n}"),
            version: "1.0".into(),
        }),
        status: ModuleStatus::Downloaded,
        status_message: Some(format!("#{n}")),
        seq: None,
        outbox_id: None,
    }
}

#[actix_rt::test]
async fn frames_route_both_ways_and_the_query_names_the_environment() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let mut syncs = bus.subscribe::<SyncSoftware>();
    let mut sets = bus.subscribe::<GetEnvModulesResponse>();
    let snippet = format!(
        "portal_url = \"{}\"\nenvironment_hash = \"h/1 2\"\n",
        portal.url()
    );
    let running = start(home(Some("env-42")), &snippet, None, bus.clone());

    let mut conn = portal.next_conn().await;
    assert_eq!(conn.path, "/portal-integration");
    assert_eq!(conn.query["environmentUuid"], "env-42");
    assert_eq!(conn.query["environmentHash"], "h/1 2");
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );

    let details = running.details();
    assert_eq!(details["connected"], true, "{details}");
    assert_eq!(details["connects"], 1, "{details}");

    conn.send(r#"{"type":"EVT_SYNC_SOFT"}"#).await;
    assert_eq!(next(&mut syncs).await, SyncSoftware {});
    conn.send(
        r#"{"type":"GET_ENV_MOD_RES","modules":[{"groupId":"g","artifactId":"a","version":"1"}]}"#,
    )
    .await;
    assert_eq!(
        next(&mut sets).await.modules,
        vec![json!({"groupId": "g", "artifactId": "a", "version": "1"})]
    );

    bus.publish(GetEnvModulesRequest {
        environment_uuid: "env-42".into(),
        core_module: ModuleRef {
            group_id: "com.banalytics.box".into(),
            artifact_id: "core".into(),
            version: "2.1.0".into(),
        },
        core_build: None,
    })
    .await;
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "GET_ENV_MOD_REQ", "environmentUUID": "env-42",
               "banalyticsBoxCoreModule": {"groupId": "com.banalytics.box", "artifactId": "core", "version": "2.1.0"}})
    );
    bus.publish(status(1)).await;
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "EVT_ENV_MOD_UPD_STS", "environmentUuid": "env-42",
               "module": {"groupId": "com.example", "artifactId": "m1", "version": "1.0"},
               "status": "downloaded", "statusMessage": "#1"})
    );

    running.stop().await;
    assert!(
        conn.closed_within(WITHIN).await,
        "a stopping component closes the link"
    );
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: false }
    );
}

#[actix_rt::test]
async fn an_unregistered_box_connects_with_an_empty_environment_uuid() {
    let mut portal = Portal::start().await;
    let running = start(
        home(None),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        Bus::new(),
    );
    let conn = portal.next_conn().await;
    assert_eq!(conn.query["environmentUuid"], "");
    assert_eq!(conn.query["environmentHash"], "");
    running.stop().await;
}

#[actix_rt::test]
async fn junk_frames_are_skipped_and_the_link_stays_up() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let mut syncs = bus.subscribe::<SyncSoftware>();
    let mut sets = bus.subscribe::<GetEnvModulesResponse>();
    let running = start(
        home(Some("e")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );
    let mut conn = portal.next_conn().await;
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );

    conn.send(r#"{"type":"EVT_FROM_THE_FUTURE","x":1}"#).await;
    conn.send(r#"{"type":"EVT_SYNC_SOFT","newField":{"a":[1,2]}}"#)
        .await;
    conn.send(r#"{"type":"GET_ENV_MOD_RES","modules":[{"n":0}]"#)
        .await; // truncated
    conn.send("not json at all").await;
    conn.send(r#"["type","EVT_SYNC_SOFT"]"#).await;
    conn.send(r#"{"modules":[]}"#).await;
    conn.send(r#"{"type":"GET_ENV_MOD_RES","modules":"all"}"#)
        .await;
    conn.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    // Valid in every way but its size: skipped, not published.
    let oversized = format!(
        r#"{{"type":"GET_ENV_MOD_RES","modules":[{{"n":1,"pad":"{}"}}]}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    conn.send(oversized).await;
    conn.send(r#"{"type":"GET_ENV_MOD_RES","modules":[{"n":2}]}"#)
        .await;

    let first = next(&mut sets).await;
    assert_eq!(
        first
            .modules
            .iter()
            .map(|m| m["n"].clone())
            .collect::<Vec<_>>(),
        vec![json!(2)],
        "the frame after the junk arrives, and nothing of the junk"
    );
    assert_eq!(
        next(&mut syncs).await,
        SyncSoftware {},
        "unknown fields are ignored"
    );
    assert!(syncs.try_recv().is_none(), "an array is not a sync");
    assert!(links.try_recv().is_none(), "the link never went down");
    assert!(
        portal.next(Duration::from_millis(300)).await.is_none(),
        "no reconnect"
    );
    // Still the same connection, both ways.
    bus.publish(status(7)).await;
    assert_eq!(conn.recv_json().await["statusMessage"], "#7");
    let board = running.board.component(NAME).unwrap();
    assert!(board.actors.values().all(|a| a.state == State::Run));
    assert_eq!(running.restarts(), 0, "no actor failed");
    running.stop().await;
}

#[actix_rt::test]
async fn after_the_portal_drops_the_link_queued_messages_arrive_in_order() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let running = start(
        home(Some("env-42")),
        // Fewer places than messages: the rest wait upstream, none dropped.
        &format!("portal_url = \"{}\"\noutbox_capacity = 4\n", portal.url()),
        None,
        bus.clone(),
    );
    let mut conn = portal.next_conn().await;
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );
    conn.ws.close(None).await.unwrap();
    let dropped = Instant::now();
    drop(conn);
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: false }
    );

    for n in 0..20 {
        bus.publish(status(n)).await;
    }
    let mut conn = portal.next_conn().await;
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "reconnected after {waited:?}, before the first backoff delay (1 s to 2 s)"
    );
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );
    for n in 0..20 {
        assert_eq!(
            conn.recv_json().await["statusMessage"],
            format!("#{n}"),
            "frames arrive in the order they were published"
        );
    }
    running.stop().await;
}

#[actix_rt::test]
async fn the_secret_goes_in_a_bearer_header_and_never_in_the_url() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let running = start(
        home_with_secret("env-42", "s3cr3t-value"),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );
    let conn = portal.next_conn().await;
    assert_eq!(conn.authorization.as_deref(), Some("Bearer s3cr3t-value"));
    assert_eq!(conn.query["environmentUuid"], "env-42");
    assert!(conn.query.values().all(|v| !v.contains("s3cr3t")));
    assert!(!running.details().to_string().contains("s3cr3t"));
    drop(conn);
    running.stop().await;

    // A box without a secret sends no header.
    let running = start(
        home(Some("env-42")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        Bus::new(),
    );
    assert_eq!(portal.next_conn().await.authorization, None);
    running.stop().await;
}

#[actix_rt::test]
async fn a_rotated_secret_is_stored_acknowledged_and_used_for_the_next_connection() {
    use sha2::Digest as _;
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut sets = bus.subscribe::<GetEnvModulesResponse>();
    let running = start(
        home_with_secret("env-42", "old-secret"),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );
    let mut conn = portal.next_conn().await;
    assert_eq!(conn.authorization.as_deref(), Some("Bearer old-secret"));
    conn.send(r#"{"type":"ENV_SECRET_ROTATE","environmentUuid":"env-42","environmentSecret":"new-secret"}"#)
        .await;
    let ack = conn.recv_json().await;
    assert_eq!(ack["type"], "ENV_SECRET_ROTATED");
    assert_eq!(ack["environmentUuid"], "env-42");
    assert_eq!(
        ack["secretSha256"],
        hex::encode(sha2::Sha256::digest(b"new-secret"))
    );
    let file = running
        .home
        .path()
        .join("config/device-registration.properties");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("environmentSecret=new-secret") && text.contains("environmentUuid=env-42")
    );
    assert!(!text.contains("old-secret"));
    // The link stays up and the rotation frame is no message on the bus.
    conn.send(r#"{"type":"GET_ENV_MOD_RES","modules":[]}"#)
        .await;
    assert!(next(&mut sets).await.modules.is_empty());
    conn.ws.close(None).await.unwrap();
    drop(conn);
    let conn = portal.next_conn().await;
    assert_eq!(conn.authorization.as_deref(), Some("Bearer new-secret"));
    running.stop().await;
}

/// Appends `status(n)` to the home's portal outbox, as the upgrade center
/// does before it publishes; returns its seq.
fn append_durable(home: &std::path::Path, n: usize) -> u64 {
    let entry = serde_json::to_vec(&status(n)).unwrap();
    banalytics_home::outbox::append(&banalytics_home::Layout::new(home), &entry).unwrap()
}

fn durable_left(home: &std::path::Path) -> usize {
    banalytics_home::outbox::count(&banalytics_home::Layout::new(home)).unwrap()
}

/// The next message that is not a text frame: what follows a batch of
/// durable statuses is the ping that asks to confirm them.
async fn next_control(conn: &mut Conn) -> Message {
    tokio::time::timeout(WITHIN, conn.ws.next())
        .await
        .expect("a message in time")
        .expect("the connection open")
        .expect("a good message")
}

#[actix_rt::test]
async fn durable_statuses_go_in_seq_order_and_stay_on_disk_until_the_portal_confirms_them() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut outbox_states = bus.subscribe::<PortalOutboxState>();
    let home = home(Some("env-42"));
    let path = home.path().to_owned();
    // Left by an earlier run of the box, before a kill.
    let seqs: Vec<u64> = (1..=3).map(|n| append_durable(&path, n)).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let running = start(
        home,
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );

    // At link-up, in order, each with its seq.
    let mut conn = portal.next_conn().await;
    for n in 1..=3 {
        let frame = conn.recv_json().await;
        assert_eq!(frame["type"], "EVT_ENV_MOD_UPD_STS");
        assert_eq!(frame["seq"], n, "{frame}");
        assert_eq!(frame["statusMessage"], format!("#{n}"));
    }
    // Then the ping that asks for a confirmation. Its pong goes out only at
    // the portal's next read, so the statuses must still be on disk, and
    // the outbox query counts them.
    assert!(matches!(next_control(&mut conn).await, Message::Ping(_)));
    assert_eq!(
        durable_left(&path),
        3,
        "removed before the portal confirmed"
    );
    bus.publish(PortalOutboxQuery {}).await;
    assert_eq!(
        next(&mut outbox_states).await,
        PortalOutboxState {
            queued: 3,
            durable: 3
        }
    );

    // The portal goes without answering: the box cannot know what it read,
    // and sends all three again on the next link.
    drop(conn);
    let mut conn = portal.next_conn().await;
    for n in 1..=3 {
        assert_eq!(conn.recv_json().await["seq"], n);
    }
    // Reading on answers the ping: confirmed, removed.
    let (texts_tx, mut texts) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = conn.ws.next().await {
            if let Message::Text(t) = msg {
                let text = serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap();
                let _ = texts_tx.send(text);
            }
        }
    });
    assert!(
        eventually(|| durable_left(&path) == 0).await,
        "the confirmed statuses are removed"
    );

    // A new durable status: appended, then announced on the bus with its
    // seq; the box sends it from disk, once. One without a seq goes from
    // memory, as before.
    let seq = append_durable(&path, 4);
    assert_eq!(seq, 4, "numbers go on after removals");
    bus.publish(ModuleStatusUpdate {
        seq: Some(seq),
        outbox_id: None,
        ..status(4)
    })
    .await;
    assert!(eventually(|| durable_left(&path) == 0).await);
    bus.publish(status(5)).await;
    // The portal reads both. (An outbox query right after the publish may
    // be answered before the outbox actor queued the in-memory status:
    // the bus orders messages per topic, not across topics.)
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(WITHIN, texts.recv()).await {
            Ok(Some(text)) => got.push(text),
            _ => panic!("the portal read {got:?} only"),
        }
    }
    // It leaves the queue once its write returned, which may be after the
    // portal read it.
    let until = tokio::time::Instant::now() + WITHIN;
    let mut drained = false;
    while !drained && tokio::time::Instant::now() < until {
        bus.publish(PortalOutboxQuery {}).await;
        drained = next(&mut outbox_states).await.queued == 0;
        if !drained {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(drained, "the in-memory status left the queue");
    running.stop().await;
    reader.await.unwrap();
    while let Ok(text) = texts.try_recv() {
        got.push(text);
    }
    let texts = got;
    let seqs: Vec<&serde_json::Value> = texts.iter().map(|t| &t["seq"]).collect();
    assert_eq!(
        seqs,
        [&json!(4), &serde_json::Value::Null],
        "the durable status once, the other without a seq: {texts:?}"
    );
    assert_eq!(texts[1]["statusMessage"], "#5");
}

fn fast_timing() -> Timing {
    Timing {
        ping_interval: Duration::from_millis(200),
        dead_after: Duration::from_millis(800),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
    }
}

#[actix_rt::test]
async fn a_portal_that_stops_answering_pings_is_left_and_reconnected() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let running = start(
        home(Some("e")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        Some(fast_timing()),
        bus.clone(),
    );
    // Never read from: pings go unanswered, though TCP stays open.
    let silent = portal.next_conn().await;
    let since = silent.accepted_at;
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: false }
    );
    let dead_after = since.elapsed();
    let _again = portal.next_conn().await;
    let reconnected = since.elapsed();
    let details = running.details();
    assert!(
        details["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no pong or frame")),
        "{details}"
    );
    assert!(
        dead_after >= Duration::from_millis(700),
        "declared dead after {dead_after:?}, before its 800 ms"
    );
    assert!(
        reconnected < Duration::from_secs(4),
        "reconnected only after {reconnected:?}"
    );
    drop(silent);
    running.stop().await;
}

#[actix_rt::test]
async fn a_portal_that_answers_pings_keeps_its_link() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let running = start(
        home(Some("e")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        // Slacker than fast_timing: a loaded machine must not fake a dead link.
        Some(Timing {
            ping_interval: Duration::from_millis(300),
            dead_after: Duration::from_millis(1500),
            ..fast_timing()
        }),
        bus.clone(),
    );
    let mut conn = portal.next_conn().await;
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );
    // Reading answers pings; count them over more than two dead-link periods.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, conn.ws.next()).await {
        if matches!(msg, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 5, "only {pings} pings in 4 s at one per 300 ms");
    assert!(links.try_recv().is_none(), "the link stayed up");
    assert!(portal.next(Duration::ZERO).await.is_none(), "no reconnect");
    running.stop().await;
}

/// A second type on the topic of `EVT_SYNC_SOFT`: publishing a
/// `SyncSoftware` then panics inside the link, a real actor failure.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Impostor;

impl banalytics_sdk::BusMessage for Impostor {
    const TOPIC: &'static str = "portal.EVT_SYNC_SOFT";
}

#[actix_rt::test]
async fn a_panicking_link_is_restarted_by_the_supervisor_and_connects_again() {
    let mut portal = Portal::start().await;
    let bus = Bus::new();
    let _impostor = bus.subscribe::<Impostor>();
    let running = start(
        home(Some("e")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );
    let mut conn = portal.next_conn().await;
    conn.send(r#"{"type":"EVT_SYNC_SOFT"}"#).await;
    assert!(
        conn.closed_within(WITHIN).await,
        "the failed link's socket is dropped"
    );
    let mut again = portal.next_conn().await;
    let link = running.board.component(NAME).unwrap().actors["link"].clone();
    assert_eq!(link.restarts, 1, "{link:?}");
    assert_eq!(link.state, State::Run, "{link:?}");
    assert!(
        link.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot also carry")),
        "{link:?}"
    );
    bus.publish(status(3)).await;
    assert_eq!(again.recv_json().await["statusMessage"], "#3");
    running.stop().await;
}
