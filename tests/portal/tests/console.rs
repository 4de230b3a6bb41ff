//! The console's pages over HTTP, without a browser: login with the admin
//! token (and its rate limit), pages refused without a session, the
//! Modules and Assign pages, a live region's event stream carrying a
//! change, a rollout resumed and cancelled with the page's buttons, and an
//! environment's page with its statuses' times, its download's progress
//! and its sets' difference (sizes with units, a native module's real one). The browser test (`banalytics-tests --test console`) shows the
//! rest with real boxes.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::time::Duration;

use banalytics_portal::{
    auth::LOGIN_QUOTA_PER_MINUTE,
    rollout::{RolloutSpec, RolloutState, DEFAULT_WAVES},
    ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::{redirect::Policy, Client, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "console-test-token";

async fn start(dir: &std::path::Path) -> PortalHandle {
    let mut config = PortalConfig::new(dir.join("portal"));
    // Its boxes are bare protocol clients without secrets: a lab.
    config.open_registration = true;
    config.admin_token = Some(TOKEN.to_string());
    let portal = Portal::start(config).await.unwrap();
    for (v, len) in [("1.0", 10), ("2.0", 20)] {
        let file = dir.join(format!("cam-{v}.jar"));
        std::fs::write(&file, vec![7u8; len]).unwrap();
        portal
            .publish(&PublishRequest::new(
                &format!("com.example:cam:{v}"),
                ModuleType::Component,
                file,
            ))
            .unwrap();
    }
    portal
}

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Logs in; the session cookie (`name=value`).
async fn login(http: &Client, portal: &PortalHandle, token: &str) -> reqwest::Response {
    http.post(format!("{}/login", portal.console_url()))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

fn cookie(resp: &reqwest::Response) -> String {
    let set = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_that_the_admin_token_opens() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = client();

    let resp = http.get(portal.console_url()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/console/login");
    let resp = http
        .get(format!("{}/events?view=envs", portal.console_url()))
        .send()
        .await
        .unwrap();
    assert_ne!(
        resp.status(),
        StatusCode::OK,
        "no event stream without a session"
    );

    assert_eq!(
        login(&http, &portal, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = login(&http, &portal, TOKEN).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let session = cookie(&ok);

    let page = |path: &'static str| {
        let http = http.clone();
        let session = session.clone();
        let url = format!("{}{path}", portal.console_url());
        async move {
            let resp = http
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            resp.text().await.unwrap()
        }
    };
    let modules = page("/modules").await;
    assert!(
        modules.contains("com.example:cam") && modules.contains("2.0"),
        "{modules}"
    );
    let assign = page("/assign").await;
    assert!(
        assign.contains("not installed") && assign.contains("Start rollout"),
        "{assign}"
    );
    let home = page("").await;
    let sse = home
        .split_once("data-sse=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .expect("a live region")
        .replace("&amp;", "&");
    assert!(sse.starts_with("/console/events?view=envs&seen="), "{sse}");

    // The live region's stream: nothing while the page shows what it
    // would send (several renders' time), then a new table, with its
    // version as the event's id, when a box connects.
    let resp = http
        .get(format!("{}{sse}", portal.url()))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    // Five renders (one each `RENDER_EVERY`, 200 ms).
    let quiet = Duration::from_secs(1);
    if let Ok(early) = tokio::time::timeout(quiet, body.next()).await {
        panic!("the page's own table sent again: {early:?}");
    }
    let (_ws, _) = tokio_tungstenite::connect_async(portal.ws_url("env-a", "h"))
        .await
        .unwrap();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("env-a") {
            let chunk = body.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream carries the new environment");
    assert!(seen.starts_with("id: "), "{seen}");

    // Logging out ends the session.
    let resp = http
        .post(format!("{}/logout", portal.console_url()))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = http
        .get(portal.console_url())
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    drop(body);
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = client();
    for _ in 0..LOGIN_QUOTA_PER_MINUTE {
        assert_eq!(
            login(&http, &portal, "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Past the quota even the right token waits.
    assert_eq!(
        login(&http, &portal, TOKEN).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_page_resumes_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = client();
    let session = cookie(&login(&http, &portal, TOKEN).await);
    // No box answers and the time limit is 0 s: the first tick fails the
    // first wave's box and the rollout halts.
    let r = portal
        .start_rollout(RolloutSpec {
            name: "ui".into(),
            target: vec!["com.example:cam:2.0".into()],
            environments: (0..3).map(|i| format!("env-{i}")).collect(),
            waves: DEFAULT_WAVES.to_vec(),
            failure_threshold_percent: 0,
            report_timeout_ms: 0,
        })
        .unwrap();
    let page = format!("{}/rollouts/{}", portal.console_url(), r.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let html = loop {
        let html = http
            .get(&page)
            .header("cookie", session.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if html.contains("id=\"halt-reason\"") {
            break html;
        }
        assert!(std::time::Instant::now() < deadline, "no halt: {html}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(html.contains("env-0: no report within 0 s"), "{html}");

    let post = |action: &'static str| {
        let http = http.clone();
        let session = session.clone();
        let url = format!("{page}/{action}");
        async move {
            let resp = http
                .post(url)
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{action}");
        }
    };
    post("resume").await;
    let r2 = portal.rollouts().remove(0);
    assert!(
        r2.current_wave >= 1
            && portal.environment("env-1").unwrap().assigned == ["com.example:cam:2.0"],
        "resumed: the next wave is assigned: {r2:?}"
    );
    post("cancel").await;
    assert_eq!(portal.rollouts().remove(0).state, RolloutState::Cancelled);
    // Without a session the buttons do nothing.
    let resp = http.post(format!("{page}/resume")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    portal.shutdown().await;
}

/// A bare protocol client's status frame.
fn status_frame(env: &str, module: Value, status: &str, message: Option<&str>) -> Message {
    let frame = json!({
        "type": "EVT_ENV_MOD_UPD_STS",
        "environmentUuid": env,
        "module": module,
        "status": status,
        "statusMessage": message,
    });
    Message::Text(frame.to_string().into())
}

/// Polls `path` until its page contains every one of `wanted`.
async fn page_with(
    http: &Client,
    portal: &PortalHandle,
    session: &str,
    path: &str,
    wanted: &[&str],
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let html = http
            .get(format!("{}{path}", portal.console_url()))
            .header("cookie", session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| html.contains(w)) {
            return html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never showed {wanted:?}: {html}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_shows_when_each_status_came_its_download_and_its_sets_difference() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    // A native module (its `size` field is 0: each build has its own) and
    // a 100 000-byte jar to download.
    let lib = dir.path().join("drv.so");
    std::fs::write(&lib, vec![1u8; 20_000]).unwrap();
    portal
        .publish(&PublishRequest::plugin("com.example:drv:1.0", lib))
        .unwrap();
    let big = dir.path().join("big.jar");
    std::fs::write(&big, vec![2u8; 100_000]).unwrap();
    portal
        .publish(&PublishRequest::new(
            "com.example:big:1.0",
            ModuleType::Component,
            big,
        ))
        .unwrap();
    let http = client();
    let session = cookie(&login(&http, &portal, TOKEN).await);

    let modules = page_with(&http, &portal, &session, "/modules", &["com.example:drv"]).await;
    let drv = modules
        .split("<tr data-module=\"com.example:drv:1.0\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the native module's row");
    assert!(
        drv.contains("19.5 KiB") && !drv.contains("0 B"),
        "the native module's size is its build's: {drv}"
    );
    assert!(modules.contains("97.7 KiB"), "sizes have units: {modules}");

    // The box installed cam 1.0; then cam 2.0 and big are assigned.
    portal.assign("env-a", &["com.example:cam:1.0"]).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(portal.ws_url("env-a", "h"))
        .await
        .unwrap();
    ws.send(status_frame("env-a", Value::Null, "installed", None))
        .await
        .unwrap();
    page_with(
        &http,
        &portal,
        &session,
        "/env/env-a",
        &[r#"data-module="com.example:cam" data-change="unchanged""#],
    )
    .await;
    portal
        .assign("env-a", &["com.example:cam:2.0", "com.example:big:1.0"])
        .unwrap();
    let big_module = json!({"groupId": "com.example", "artifactId": "big", "version": "1.0"});
    ws.send(status_frame(
        "env-a",
        big_module.clone(),
        "downloading",
        None,
    ))
    .await
    .unwrap();
    page_with(&http, &portal, &session, "/env/env-a", &["downloading"]).await;
    // The box has fetched 30 000 bytes of it so far.
    let part = http
        .get(format!(
            "{}/com/example/big/1.0/big-1.0.jar",
            portal.repo_url()
        ))
        .header("range", "bytes=0-29999")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(part.len(), 30_000);

    let html = page_with(
        &http,
        &portal,
        &session,
        "/env/env-a",
        &[r#"<progress value="30000" max="100000" aria-label="Download of com.example:big:1.0">"#],
    )
    .await;
    assert!(html.contains("29.3 KiB of 97.7 KiB (30 %)"), "{html}");
    // Installed against assigned, module by module.
    for (module, change) in [("com.example:cam", "changed"), ("com.example:big", "added")] {
        assert!(
            html.contains(&format!(r#"data-module="{module}" data-change="{change}""#)),
            "{module} {change}: {html}"
        );
    }
    assert!(
        html.contains("1 added, 1 changed, 0 removed, 0 unchanged"),
        "{html}"
    );
    // Each status with the time it came, absolute and relative.
    let history = html
        .split("id=\"history\"")
        .nth(1)
        .expect("a history table");
    assert_eq!(history.matches("<time datetime=\"").count(), 2, "{history}");
    assert!(
        history.contains(" UTC</time>") && history.contains("(just now)"),
        "{history}"
    );
    assert!(
        history.contains("badge-running") && history.contains("badge-good"),
        "{history}"
    );

    // Downloaded: the bar goes; a failure is red.
    ws.send(status_frame("env-a", big_module, "downloaded", None))
        .await
        .unwrap();
    ws.send(status_frame(
        "env-a",
        Value::Null,
        "installation_cancelled",
        Some("the drill failed"),
    ))
    .await
    .unwrap();
    let html = page_with(
        &http,
        &portal,
        &session,
        "/env/env-a",
        &["the drill failed"],
    )
    .await;
    assert!(
        !html.contains("<progress"),
        "no download in progress: {html}"
    );
    assert!(
        html.contains(r#"data-outcome="bad""#) && html.contains("installation cancelled"),
        "{html}"
    );
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_view_lists_the_environments_whose_last_verdict_failed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path()).await;
    let http = client();
    let session = cookie(&login(&http, &portal, TOKEN).await);
    // env-ok installed; env-old failed, then env-new; env-back failed and
    // then installed, so its last verdict is no failure.
    let verdicts = [
        ("env-ok", "installed"),
        ("env-old", "download_error"),
        ("env-back", "installation_cancelled"),
        ("env-new", "installation_cancelled"),
        ("env-back", "installed"),
    ];
    let mut links = Vec::new();
    for (env, status) in verdicts {
        let (mut ws, _) = tokio_tungstenite::connect_async(portal.ws_url(env, "h"))
            .await
            .unwrap();
        let n = portal.environment(env).map_or(0, |e| e.statuses.len());
        ws.send(status_frame(env, Value::Null, status, Some("why")))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while portal.environment(env).map_or(0, |e| e.statuses.len()) == n {
            assert!(std::time::Instant::now() < deadline, "{env}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Statuses a millisecond apart at least, so the order is theirs.
        tokio::time::sleep(Duration::from_millis(5)).await;
        links.push(ws);
    }
    let failed = page_with(&http, &portal, &session, "?status=failed", &["env-new"]).await;
    let rows: Vec<&str> = failed
        .split("<tr data-env=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .collect();
    assert_eq!(rows, ["env-new", "env-old"], "{failed}");
    assert!(
        failed.contains("view=envs-failed"),
        "its live region is the failed view"
    );
    let all = page_with(&http, &portal, &session, "", &["env-ok"]).await;
    assert_eq!(all.matches("<tr data-env=\"").count(), 4);
    portal.shutdown().await;
}
