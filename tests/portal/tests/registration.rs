//! The portal knows its boxes: only a registered environment with its
//! secret gets the WebSocket upgrade; revocation closes and refuses;
//! a rotated secret reaches the box over the link and replaces the old
//! one once the box confirms it. And the console's and admin API's gates:
//! a foreign `Origin`, the limiter before the token comparison.

#![allow(unused_crate_dependencies)]

use std::time::{Duration, Instant};

use banalytics_portal::{
    registry::{ROTATED_FRAME, ROTATE_FRAME},
    AdminClient, Portal, PortalConfig, PortalHandle,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, client::IntoClientRequest, Message},
};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "registration-test-token";

async fn start(data: &std::path::Path) -> PortalHandle {
    let mut config = PortalConfig::new(data);
    config.admin_token = Some(TOKEN.to_string());
    Portal::start(config).await.unwrap()
}

/// Upgrades as `env` with `secret` (none: no `Authorization`); the HTTP
/// status of a refusal.
async fn connect(portal: &PortalHandle, env: &str, secret: Option<&str>) -> Result<Ws, u16> {
    let mut req = portal.ws_url(env, "h").into_client_request().unwrap();
    if let Some(s) = secret {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {s}").parse().unwrap());
    }
    match connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next text frame within 10 s, as JSON; `None` when the portal
/// closed the connection.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn ask_set(ws: &mut Ws, env: &str) -> Value {
    ws.send(Message::Text(
        json!({"type": "GET_ENV_MOD_REQ", "environmentUUID": env, "banalyticsBoxCoreModule": null})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    next_json(ws).await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_registered_environment_with_its_secret_is_upgraded_and_refusals_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let reg = portal.register("kitchen", None).unwrap();
    let env = reg.environment_uuid.as_str();

    assert_eq!(connect(&portal, env, Some("wrong")).await.err(), Some(401));
    assert_eq!(connect(&portal, env, None).await.err(), Some(401));
    assert_eq!(
        connect(&portal, "never-registered", Some(&reg.environment_secret))
            .await
            .err(),
        Some(401)
    );
    let stats = portal.stats();
    assert_eq!(stats.refused_connections, 3);
    assert_eq!(stats.refused_by_address[&"127.0.0.1".parse().unwrap()], 3);
    assert!(
        portal.environment("never-registered").is_none(),
        "an unknown UUID has no state"
    );
    let e = portal.environment(env).unwrap();
    assert!(e.registered && e.name == "kitchen" && e.connections == 0);

    let mut ws = connect(&portal, env, Some(&reg.environment_secret))
        .await
        .expect("upgraded with its secret");
    let answer = ask_set(&mut ws, env).await;
    assert_eq!(answer["type"], "GET_ENV_MOD_RES");
    assert_eq!(portal.environment(env).unwrap().module_requests, 1);

    // The secret is stored as its hash only, in no file of the data
    // folder; the database is the owner's only.
    portal.shutdown().await;
    let mut hash_seen = false;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert!(
                !bytes.contains(&reg.environment_secret),
                "{}",
                path.display()
            );
            hash_seen |= bytes.contains(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                &reg.environment_secret,
            )));
        }
    }
    assert!(hash_seen, "the secret's hash is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("portal.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_lets_any_uuid_in_but_a_registered_one_needs_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PortalConfig::new(dir.path());
    config.open_registration = true;
    let portal = Portal::start(config).await.unwrap();
    let reg = portal.register("", Some("env-registered")).unwrap();
    assert!(connect(&portal, "anything", None).await.is_ok());
    assert_eq!(
        connect(&portal, "env-registered", Some("wrong"))
            .await
            .err(),
        Some(401)
    );
    assert!(
        connect(&portal, "env-registered", Some(&reg.environment_secret))
            .await
            .is_ok()
    );
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_environment_is_disconnected_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let admin = AdminClient::new(&portal.url()).with_token(Some(TOKEN));
    let reg = admin.add_environment("", None).await.unwrap();
    let env = reg.environment_uuid.as_str();
    let mut ws = connect(&portal, env, Some(&reg.environment_secret))
        .await
        .unwrap();
    assert_eq!(admin.revoke_environment(env).await.unwrap(), 1);
    assert_eq!(
        next_json(&mut ws).await,
        None,
        "the live connection is closed"
    );
    assert_eq!(
        connect(&portal, env, Some(&reg.environment_secret))
            .await
            .err(),
        Some(401)
    );
    assert!(portal.environment(env).unwrap().revoked);
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_goes_to_the_box_and_replaces_the_old_one_once_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let reg = portal.register("", None).unwrap();
    let env = reg.environment_uuid.as_str();
    let old = reg.environment_secret.clone();
    let mut ws = connect(&portal, env, Some(&old)).await.unwrap();
    assert_eq!(portal.rotate_secret(env).unwrap(), 1);
    let frame = next_json(&mut ws).await.unwrap();
    assert_eq!(frame["type"], ROTATE_FRAME);
    let new = frame["environmentSecret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(portal.environment(env).unwrap().rotation_pending);
    // Until the box confirms, the old secret works.
    drop(
        connect(&portal, env, Some(&old))
            .await
            .expect("old still works"),
    );
    let sha = hex::encode(Sha256::digest(new.as_bytes()));
    ws.send(Message::Text(
        json!({"type": ROTATED_FRAME, "environmentUuid": env, "secretSha256": sha})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let start = Instant::now();
    while portal.environment(env).unwrap().rotation_pending {
        assert!(start.elapsed() < Duration::from_secs(10), "never confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connect(&portal, env, Some(&old)).await.err(), Some(401));
    assert!(connect(&portal, env, Some(&new)).await.is_ok());
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_offline_at_rotation_gets_the_new_secret_at_its_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let reg = portal.register("", None).unwrap();
    let env = reg.environment_uuid.as_str();
    assert_eq!(portal.rotate_secret(env).unwrap(), 0);
    let mut ws = connect(&portal, env, Some(&reg.environment_secret))
        .await
        .unwrap();
    let frame = next_json(&mut ws).await.unwrap();
    assert_eq!(frame["type"], ROTATE_FRAME);
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_post_from_another_origin_is_refused_and_no_page_may_frame_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |origin: String| {
        http.post(format!("{}/login", portal.console_url()))
            .header("Origin", origin)
            .form(&[("token", TOKEN)])
            .send()
    };
    // Another port of the same host is another origin.
    let foreign = format!("http://127.0.0.1:{}", portal.addr().port() + 1);
    let refused = login(foreign).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let own = login(portal.url()).await.unwrap();
    assert_eq!(own.status(), StatusCode::SEE_OTHER);
    let cookie = own.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let register = |origin: &str| {
        http.post(format!("{}/environments/add", portal.console_url()))
            .header("Cookie", &cookie)
            .header("Origin", origin)
            .form(&[("name", "porch")])
            .send()
    };
    assert_eq!(
        register("http://evil.example").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(portal.registered().is_empty(), "nothing was registered");
    let page = register(&portal.url()).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    let html = page.text().await.unwrap();
    let r = &portal.registered()[0];
    assert_eq!(r.name, "porch");
    assert!(html.contains(&format!("environmentUuid={}", r.environment_uuid)));
    assert!(html.contains("environmentSecret="));
    let login_page = http
        .get(format!("{}/login", portal.console_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login_page.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_wrong_admin_tokens_then_the_right_one_answer_429_for_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = reqwest::Client::new();
    let call = |token: &str| {
        http.get(format!("{}/admin/stats", portal.url()))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(call(TOKEN).await.unwrap().status(), StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(call("wrong").await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&401) && statuses.ends_with(&[429, 429]));
    assert_eq!(
        call(TOKEN).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    portal.shutdown().await;
}
