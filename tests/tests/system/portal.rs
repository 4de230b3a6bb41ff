//! The reference portal: its protocol side against a real WebSocket client,
//! its repository against a real HTTP client, its fault switches, and its
//! admin commands through the real `banalytics-portal` binary.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use banalytics_tests::{
    e2e::HARNESS_ADMIN_TOKEN,
    portal::{
        artifact_path, Faults, ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest,
    },
    DEADLINE,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::{connect_async, tungstenite::Message, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const ENV: &str = "5f0c3f57-3a43-4d8e-9a53-000000000001";

// ---------------------------------------------------------------- helpers

/// Deterministic test bytes.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A portal for bare protocol clients, which carry no secret: open
/// registration, a lab (`registration.rs` tests the registered side).
async fn start(data: &Path) -> PortalHandle {
    let mut config = PortalConfig::new(data);
    config.open_registration = true;
    Portal::start(config).await.unwrap()
}

/// Publishes `g:a:v` with a main artifact of `len` bytes; returns the bytes.
fn publish(portal: &PortalHandle, src: &Path, coords: &str, len: usize) -> Vec<u8> {
    let content = bytes(len, coords.len() as u8);
    let file = write(src, &coords.replace(':', "_"), &content);
    portal
        .publish(&PublishRequest::new(coords, ModuleType::Component, file))
        .unwrap();
    content
}

/// Polls `f` every 20 ms until it returns `Some`, for at most [`DEADLINE`].
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

async fn connect(url: &str) -> Ws {
    connect_async(url).await.expect("websocket connect").0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON, skipping control frames.
async fn recv_json(ws: &mut Ws) -> Value {
    let frame = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame before the deadline");
    serde_json::from_str(&frame).unwrap()
}

fn get_env_mod_req(env: &str) -> Value {
    json!({
        "type": "GET_ENV_MOD_REQ",
        "environmentUUID": env,
        "banalyticsBoxCoreModule": {"groupId": "com.banalytics.box", "artifactId": "core", "version": "0.1.0"}
    })
}

fn status(module: Value, status: &str, message: Value) -> Value {
    json!({
        "type": "EVT_ENV_MOD_UPD_STS",
        "environmentUuid": ENV,
        "module": module,
        "status": status,
        "statusMessage": message
    })
}

fn module_ref(coords: &str) -> Value {
    let p: Vec<&str> = coords.split(':').collect();
    json!({"groupId": p[0], "artifactId": p[1], "version": p[2]})
}

fn repo_url(portal: &PortalHandle, rel: &str) -> String {
    format!("{}/{rel}", portal.repo_url())
}

/// Reads a body chunk by chunk; the bytes received and whether it ended in
/// an error.
async fn read_body(resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut resp = resp;
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

/// The real `banalytics-portal serve` on a data folder; SIGKILLed on drop.
struct PortalProcess {
    child: Child,
    url: String,
    data: PathBuf,
}

impl PortalProcess {
    fn start(data: &Path, extra: &[&str]) -> Result<PortalProcess> {
        let mut child = Command::new(banalytics_tests::e2e::portal_bin()?)
            .arg("serve")
            .arg("--data")
            .arg(data)
            // Its clients are bare protocol clients without secrets.
            .arg("--open-registration")
            .env("BANALYTICS_PORTAL_TOKEN", HARNESS_ADMIN_TOKEN)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting banalytics-portal serve")?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("no `listening` line within {DEADLINE:?}");
            }
        };
        let Some(url) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            bail!("unexpected first line {line:?}");
        };
        Ok(PortalProcess {
            url: url.to_string(),
            child,
            data: data.to_path_buf(),
        })
    }

    /// Runs a client command against this portal (via `DATA/portal.addr`).
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(banalytics_tests::e2e::portal_bin().expect("the portal binary"))
            .env("BANALYTICS_PORTAL_TOKEN", HARNESS_ADMIN_TOKEN)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    /// `publish` of the component `com.x:a:1` from `jar`, through the CLI.
    fn publish_a(&self, jar: &Path) -> String {
        self.cli_ok(&[
            "publish",
            "--group",
            "com.x",
            "--artifact",
            "a",
            "--version",
            "1",
            "--type",
            "component",
            "--file",
            jar.to_str().unwrap(),
        ])
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.cli_ok(args)).unwrap()
    }

    fn ws_url(&self, env: &str) -> String {
        format!(
            "{}/portal-integration?environmentUuid={env}&environmentHash=h",
            self.url.replacen("http://", "ws://", 1)
        )
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ protocol side

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_get_env_mod_req_with_the_assigned_set_and_its_checksums() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let main = bytes(5000, 1);
    let bin = bytes(700, 2);
    let model = bytes(900, 3);
    let mut req = PublishRequest::new(
        "com.example.cam:detector:1.2.0",
        ModuleType::Component,
        write(src.path(), "lib.so", &main),
    );
    req.packaging = Some("so".into());
    req.bin = Some(write(src.path(), "bin.zip", &bin));
    req.model = Some(write(src.path(), "model.zip", &model));
    portal.publish(&req).unwrap();
    let core = publish(&portal, src.path(), "com.banalytics.box:core:2.0.0", 3000);
    portal
        .assign(
            ENV,
            &[
                "com.banalytics.box:core:2.0.0",
                "com.example.cam:detector:1.2.0",
            ],
        )
        .unwrap();

    let mut ws = connect(&portal.ws_url(ENV, "hash")).await;
    send(&mut ws, get_env_mod_req(ENV)).await;
    let res = recv_json(&mut ws).await;

    assert_eq!(res["type"], "GET_ENV_MOD_RES");
    let modules = res["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 2, "{res}");
    let (c, d) = (&modules[0], &modules[1]);
    assert_eq!(c["groupId"], "com.banalytics.box");
    assert_eq!(c["type"], "component");
    assert_eq!(c["sha256"], sha256(&core));
    assert_eq!(c["size"], 3000);
    assert_eq!(c["packaging"], "jar");
    assert!(c.get("dependencies").is_none() && c.get("model").is_none());
    assert_eq!(d["artifactId"], "detector");
    assert_eq!(d["version"], "1.2.0");
    assert_eq!(d["packaging"], "so");
    assert_eq!(d["sha256"], sha256(&main));
    assert_eq!(d["size"], 5000);
    assert_eq!(
        d["dependencies"],
        json!({"sha256": sha256(&bin), "size": 700})
    );
    assert_eq!(d["model"], json!({"sha256": sha256(&model), "size": 900}));
    let t = d["uploadTime"].as_str().unwrap();
    assert_eq!(t.len(), 19, "{t}");
    assert_eq!((&t[4..5], &t[10..11], &t[13..14]), ("-", "T", ":"));

    // The files are where the Maven layout says, with their digests beside.
    let http = reqwest::Client::new();
    for (suffix, content) in [(".so", &main), ("-bin.zip", &bin), ("-model.zip", &model)] {
        let rel = artifact_path("com.example.cam", "detector", "1.2.0", suffix);
        let got = http.get(repo_url(&portal, &rel)).send().await.unwrap();
        assert_eq!(got.status(), 200, "{rel}");
        assert_eq!(&got.bytes().await.unwrap()[..], &content[..]);
        let digest = http
            .get(repo_url(&portal, &format!("{rel}.sha256")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(digest.trim(), sha256(content));
    }
    let e = portal.environment(ENV).unwrap();
    assert_eq!(e.module_requests, 1);
    assert_eq!(e.last_core_module.unwrap()["artifactId"], "core");
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_an_unassigned_environment_with_an_empty_set() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let mut ws = connect(&portal.ws_url("never-assigned", "h")).await;
    send(&mut ws, get_env_mod_req("never-assigned")).await;
    let res = recv_json(&mut ws).await;
    assert_eq!(res, json!({"type": "GET_ENV_MOD_RES", "modules": []}));
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignores_unknown_types_and_malformed_json_without_closing() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let mut ws = connect(&portal.ws_url(ENV, "h")).await;
    send(&mut ws, json!({"type": "SOMETHING_NEW", "x": 1})).await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    send(&mut ws, get_env_mod_req(ENV)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "GET_ENV_MOD_RES");
    assert_eq!(portal.environment(ENV).unwrap().connections, 1);
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_statuses_in_order_and_shows_them_in_environments_json() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = PortalProcess::start(data.path(), &[]).unwrap();
    let mut ws = connect(&portal.ws_url(ENV)).await;
    let m = module_ref("com.x:a:1");
    let sent = [
        status(m.clone(), "downloading", Value::Null),
        status(m.clone(), "downloaded", Value::Null),
        status(
            module_ref("com.x:b:1"),
            "download_error",
            json!("sha256 mismatch"),
        ),
        status(
            Value::Null,
            "installation_cancelled",
            json!("download failed"),
        ),
    ];
    for s in &sent {
        send(&mut ws, s.clone()).await;
    }

    let env = eventually("four statuses in environments --json", || {
        let envs = portal.cli_json(&["environments", "--json"]);
        envs.as_array()?
            .iter()
            .find(|e| {
                e["environmentUuid"] == ENV && e["statuses"].as_array().map_or(0, Vec::len) == 4
            })
            .cloned()
    })
    .await;
    assert_eq!(env["connected"], true);
    assert_eq!(env["connections"], 1);
    let got = env["statuses"].as_array().unwrap();
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g["module"], s["module"]);
        assert_eq!(g["status"], s["status"]);
        assert_eq!(g["statusMessage"], s["statusMessage"]);
    }
    let text = portal.cli_ok(&["environments"]);
    assert!(
        text.contains("download_error com.x:b:1: sha256 mismatch"),
        "{text}"
    );

    drop(ws);
    eventually("the environment to show disconnected", || {
        let envs = portal.cli_json(&["environments", "--json"]);
        (envs[0]["connected"] == false).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_send_raw_reach_a_connected_box_through_the_cli() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = PortalProcess::start(data.path(), &[]).unwrap();

    // A sync asked while the box is away is owed to it: sent when it
    // connects.
    let said = portal.cli_ok(&["sync", "--env", ENV]);
    assert!(said.contains("goes out when it connects"), "{said}");

    let mut ws = connect(&portal.ws_url(ENV)).await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "EVT_SYNC_SOFT"}));
    eventually("the box to show connected", || {
        let envs = portal.cli_json(&["environments", "--json"]);
        (envs[0]["connected"] == true).then_some(())
    })
    .await;
    let said = portal.cli_ok(&["sync", "--env", ENV]);
    assert!(said.contains("to 1 connection"), "{said}");
    assert_eq!(recv_json(&mut ws).await, json!({"type": "EVT_SYNC_SOFT"}));

    portal.cli_ok(&[
        "send-raw",
        "--env",
        ENV,
        "--text",
        r#"{"type":"FUTURE","n":7}"#,
    ]);
    assert_eq!(recv_json(&mut ws).await, json!({"type": "FUTURE", "n": 7}));

    // A frame over the protocol's 4 MiB limit goes out as is, from a file.
    let big = format!(
        r#"{{"type":"EVT_SYNC_SOFT","pad":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    let file = write(data.path(), "big.json", big.as_bytes());
    portal.cli_ok(&[
        "send-raw",
        "--env",
        ENV,
        "--text-file",
        file.to_str().unwrap(),
    ]);
    let got = recv_json(&mut ws).await;
    assert_eq!(got["pad"].as_str().unwrap().len(), 5 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_assign_through_the_cli_refuse_unknown_and_unsafe_coordinates() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = PortalProcess::start(data.path(), &[]).unwrap();
    let jar = write(src.path(), "a.jar", &bytes(1234, 9));
    let jar = jar.to_str().unwrap();
    let published = portal.cli_json(&[
        "publish",
        "--group",
        "com.x",
        "--artifact",
        "a",
        "--version",
        "1.0",
        "--type",
        "core",
        "--file",
        jar,
    ]);
    assert_eq!(published["size"], 1234);
    assert_eq!(published["type"], "core");
    let sha_file = data.path().join("repo/com/x/a/1.0/a-1.0.jar.sha256");
    assert_eq!(
        std::fs::read_to_string(sha_file).unwrap().trim(),
        published["sha256"].as_str().unwrap()
    );

    let out = portal.cli(&["assign", "--env", ENV, "com.x:a:1.0", "com.x:missing:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown module com.x:missing:1"));
    let out = portal.cli(&[
        "publish",
        "--group",
        "com..x",
        "--artifact",
        "a",
        "--version",
        "1",
        "--type",
        "core",
        "--file",
        jar,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid groupId"));
    let out = portal.cli(&[
        "publish",
        "--group",
        "com.x",
        "--artifact",
        "..",
        "--version",
        "1",
        "--type",
        "core",
        "--file",
        jar,
    ]);
    assert!(!out.status.success());

    portal.cli_ok(&["assign", "--env", ENV, "com.x:a:1.0"]);
    let envs = portal.cli_json(&["environments", "--json"]);
    assert_eq!(envs[0]["assigned"], json!(["com.x:a:1.0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_portal_on_the_same_data_and_port_keeps_assignments() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let first = PortalProcess::start(data.path(), &[]).unwrap();
    let jar = write(src.path(), "a.jar", &bytes(4321, 5));
    first.publish_a(&jar);
    first.cli_ok(&["assign", "--env", ENV, "com.x:a:1"]);
    let mut ws = connect(&first.ws_url(ENV)).await;
    send(&mut ws, get_env_mod_req(ENV)).await;
    let before = recv_json(&mut ws).await;
    let listen = first.url.trim_start_matches("http://").to_string();

    first.kill(); // SIGKILL: nothing is flushed on the way out
    let second = PortalProcess::start(data.path(), &["--listen", &listen]).unwrap();
    assert_eq!(second.url, format!("http://{listen}"));
    let mut ws = connect(&second.ws_url(ENV)).await;
    send(&mut ws, get_env_mod_req(ENV)).await;
    let after = recv_json(&mut ws).await;
    assert_eq!(after, before);
    assert_eq!(after["modules"][0]["size"], 4321);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_live_connections_and_completes() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let mut ws = connect(&portal.ws_url(ENV, "h")).await;
    send(&mut ws, get_env_mod_req(ENV)).await;
    recv_json(&mut ws).await;
    tokio::time::timeout(DEADLINE, portal.shutdown())
        .await
        .expect("shutdown completes with a box connected");
    let end = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
    assert!(!data.path().join("portal.addr").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_connection_attempts_per_second() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    for _ in 0..3 {
        let ws = connect(&portal.ws_url(ENV, "h")).await;
        drop(ws);
    }
    let stats = portal.stats();
    assert_eq!(stats.connection_attempts, 3);
    assert_eq!(
        stats.connection_attempts_per_second.values().sum::<u64>(),
        3
    );
    assert_eq!(stats.connection_attempt_ms.len(), 3);
    eventually("three connections recorded", || {
        (portal.environment(ENV)?.connections == 3).then_some(())
    })
    .await;
}

// ---------------------------------------------------------- repository side

const A: &str = "com.x:a:1";

fn a_path() -> String {
    artifact_path("com.x", "a", "1", ".jar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gives_length_etag_and_accept_ranges_without_a_body() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 10_000);
    let url = repo_url(&portal, &a_path());
    let resp = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-length"], "10000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["etag"], format!("\"{}\"", sha256(&content)).as_str());
    assert!(h.contains_key("last-modified"));
    assert_eq!(portal.stats().bytes(&format!("/repo/{}", a_path())), 0);
    assert_eq!(portal.stats().requests(&format!("/repo/{}", a_path())), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_ranges_as_206_with_content_range() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 10_000);
    let url = repo_url(&portal, &a_path());
    let http = reqwest::Client::new();

    let resp = http
        .get(&url)
        .header("range", "bytes=9000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 9000-9999/10000");
    assert_eq!(&resp.bytes().await.unwrap()[..], &content[9000..]);

    let resp = http
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 10-19/10000");
    assert_eq!(&resp.bytes().await.unwrap()[..], &content[10..20]);

    let resp = http
        .get(&url)
        .header("range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */10000");

    let missing = repo_url(&portal, &artifact_path("com.x", "a", "1", "-bin.zip"));
    assert_eq!(http.get(&missing).send().await.unwrap().status(), 404);
    assert_eq!(http.head(&missing).send().await.unwrap().status(), 404);
    let escape = format!("{}/../portal-state.json", portal.repo_url());
    assert_eq!(http.get(&escape).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_with_a_stale_etag_gets_the_whole_file() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 10_000);
    let url = repo_url(&portal, &a_path());
    let http = reqwest::Client::new();
    let etag = format!("\"{}\"", sha256(&content));

    let resp = http
        .get(&url)
        .header("range", "bytes=5000-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().len(), 5000);

    let resp = http
        .get(&url)
        .header("range", "bytes=5000-")
        .header("if-range", "\"an-older-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-range").is_none());
    assert_eq!(&resp.bytes().await.unwrap()[..], &content[..]);

    // Republishing changes the ETag, so a resume against the old one restarts.
    let new = publish(&portal, src.path(), A, 10_001);
    let resp = http
        .get(&url)
        .header("range", "bytes=5000-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["etag"],
        format!("\"{}\"", sha256(&new)).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_are_recorded_at_publish_so_no_request_or_restart_hashes_a_published_file() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 10_000);
    let url = repo_url(&portal, &a_path());
    let http = reqwest::Client::new();
    let etag = |resp: &reqwest::Response| resp.headers()["etag"].to_str().unwrap().to_owned();
    let resp = http.head(&url).send().await.unwrap();
    assert_eq!(etag(&resp), format!("\"{}\"", sha256(&content)));
    let digest = http.get(format!("{url}.sha256")).send().await.unwrap();
    assert_eq!(
        etag(&digest),
        format!(
            "\"{}\"",
            sha256(format!("{}\n", sha256(&content)).as_bytes())
        )
    );
    assert_eq!(portal.stats().etag_hashes, 0, "hashed on request");

    // A restart reads the digests back from the state file.
    portal.shutdown().await;
    let portal = start(data.path()).await;
    let url = repo_url(&portal, &a_path());
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(etag(&resp), format!("\"{}\"", sha256(&content)));
    assert_eq!(&resp.bytes().await.unwrap()[..], &content[..]);
    assert_eq!(portal.stats().etag_hashes, 0, "hashed after a restart");

    // A file that publish did not write, or changed since, is hashed on
    // request, once.
    let repo = data.path().join("repo");
    let extra = bytes(3000, 7);
    std::fs::write(repo.join("com/x/a/1/notes.txt"), &extra).unwrap();
    let changed = bytes(9000, 8);
    std::fs::write(repo.join(a_path()), &changed).unwrap();
    for _ in 0..2 {
        let resp = http
            .head(repo_url(&portal, "com/x/a/1/notes.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(etag(&resp), format!("\"{}\"", sha256(&extra)));
        let resp = http.head(&url).send().await.unwrap();
        assert_eq!(etag(&resp), format!("\"{}\"", sha256(&changed)));
    }
    assert_eq!(portal.stats().etag_hashes, 2);
    portal.shutdown().await;
}

// ------------------------------------------------------------ fault switches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_after_n_bytes_is_seen_by_the_client_and_a_resume_moves_each_byte_once() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 300_000);
    portal.set_faults(Faults {
        cut_after_bytes: Some(100_000),
        cut_once: true,
        cut_path_suffix: Some(".jar".into()),
        ..Faults::default()
    });
    let url = repo_url(&portal, &a_path());
    let http = reqwest::Client::new();

    // The digest is not cut (suffix), the artifact is, once.
    let digest = http.get(format!("{url}.sha256")).send().await.unwrap();
    assert_eq!(digest.text().await.unwrap().trim(), sha256(&content));
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (first, failed) = read_body(resp).await;
    assert!(failed, "the cut body ended without an error");
    assert_eq!(first.len(), 100_000);
    assert_eq!(&first[..], &content[..100_000]);

    let resp = http
        .get(&url)
        .header("range", format!("bytes={}-", first.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let (rest, failed) = read_body(resp).await;
    assert!(!failed);
    assert_eq!([first, rest].concat(), content);

    let stats = portal.stats();
    let path = format!("/repo/{}", a_path());
    assert_eq!(stats.bytes(&path), 300_000, "each byte served exactly once");
    assert_eq!(stats.requests(&path), 2);
    assert_eq!(portal.faults().cut_after_bytes, None, "cut once disarms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_for_every_response_cuts_each_one() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    publish(&portal, src.path(), A, 50_000);
    portal.set_faults(Faults {
        cut_after_bytes: Some(1000),
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let resp = http.get(repo_url(&portal, &a_path())).send().await.unwrap();
        let (got, failed) = read_body(resp).await;
        assert!(failed);
        assert_eq!(got.len(), 1000);
    }
    assert_eq!(portal.stats().bytes(&format!("/repo/{}", a_path())), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_range_answers_200_with_the_whole_file() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 20_000);
    portal.set_faults(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    let resp = reqwest::Client::new()
        .get(repo_url(&portal, &a_path()))
        .header("range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("accept-ranges").is_none());
    assert!(resp.headers().get("content-range").is_none());
    assert_eq!(&resp.bytes().await.unwrap()[..], &content[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_slows_a_one_mib_download_to_at_least_the_expected_time() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let content = publish(&portal, src.path(), A, 1 << 20);
    let rate = 2u64 << 20; // 2 MiB/s: 1 MiB takes at least 500 ms
    portal.set_faults(Faults {
        bandwidth_bytes_per_s: Some(rate),
        ..Faults::default()
    });
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(repo_url(&portal, &a_path()))
        .send()
        .await
        .unwrap();
    let body = resp.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(&body[..], &content[..]);
    assert!(took >= Duration::from_millis(500), "took only {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_repository_request() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    publish(&portal, src.path(), A, 100);
    portal.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    http.head(repo_url(&portal, &a_path()))
        .send()
        .await
        .unwrap();
    http.get(repo_url(&portal, &a_path())).send().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_stats_work_through_serve_flags_and_the_cli() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = PortalProcess::start(data.path(), &["--ignore-range"]).unwrap();
    let jar = write(src.path(), "a.jar", &bytes(5000, 1));
    portal.publish_a(&jar);
    let url = format!("{}/repo/{}", portal.url, a_path());
    let http = reqwest::Client::new();
    let get = |range: &'static str| http.get(&url).header("range", range).send();
    // Read to the end: a response dropped unread may stop the server's
    // writes early, and the count below is of bytes sent.
    let first = get("bytes=100-").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap().len(), 5000);

    let f = portal.cli_json(&["faults", "--cut-after-bytes", "10", "--cut-once"]);
    assert_eq!(f["ignoreRange"], false);
    assert_eq!(f["cutAfterBytes"], 10);
    let (got, failed) = read_body(get("bytes=100-").await.unwrap()).await;
    assert!(failed);
    assert_eq!(got.len(), 10);
    let resp = get("bytes=100-").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().len(), 4900);

    let stats = portal.cli_json(&["stats", "--json"]);
    let p = &stats["paths"][format!("/repo/{}", a_path())];
    assert_eq!(p["requests"], 3);
    assert_eq!(p["bytes"], 5000 + 10 + 4900);
    portal.cli_ok(&["stats", "--reset"]);
    let stats = portal.cli_json(&["stats", "--json"]);
    assert_eq!(stats["paths"], json!({}));
    assert_eq!(
        portal.cli_json(&["faults", "--clear"]),
        serde_json::to_value(Faults::default()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_raw_answers_module_objects_as_given_until_assign_replaces_them() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = PortalProcess::start(data.path(), &[]).unwrap();
    let jar = write(src.path(), "a.jar", &bytes(10, 1));
    portal.publish_a(&jar);
    let evil = json!([{"groupId": "../evil", "artifactId": "a", "version": "1",
        "type": "component", "uploadTime": "2026-03-01T10:15:30"}]);
    portal.cli_ok(&["assign-raw", "--env", ENV, "--json", &evil.to_string()]);
    let mut ws = connect(&portal.ws_url(ENV)).await;
    send(&mut ws, get_env_mod_req(ENV)).await;
    assert_eq!(recv_json(&mut ws).await["modules"], evil);
    let envs = portal.cli_json(&["environments", "--json"]);
    assert_eq!(envs[0]["assigned"], json!(["../evil:a:1 (raw)"]));

    portal.cli_ok(&["assign", "--env", ENV, "com.x:a:1"]);
    send(&mut ws, get_env_mod_req(ENV)).await;
    let res = recv_json(&mut ws).await;
    assert_eq!(res["modules"][0]["groupId"], "com.x");
    assert_eq!(res["modules"][0]["size"], 10);
}

#[test]
fn spawn_serves_synchronous_callers_and_shuts_down() {
    let _machine = crate::machine::shared();
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let portal = Portal::spawn(PortalConfig::new(data.path())).unwrap();
    publish(&portal, src.path(), A, 77);
    assert_eq!(
        std::fs::read_to_string(data.path().join("portal.addr"))
            .unwrap()
            .trim(),
        portal.url()
    );
    let mut conn = std::net::TcpStream::connect(portal.addr()).unwrap();
    write!(conn, "HEAD /repo/{} HTTP/1.0\r\nHost: x\r\n\r\n", a_path()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-length: 77"),
        "{answer}"
    );
    let addr = portal.addr();
    portal.shutdown_blocking();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
    assert!(!data.path().join("portal.addr").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_pings_and_drops_a_box_that_sends_a_frame_over_4_mib() {
    let _machine = crate::machine::shared();
    let data = tempfile::tempdir().unwrap();
    let portal = start(data.path()).await;
    let mut ws = connect(&portal.ws_url(ENV, "h")).await;
    ws.send(Message::Ping(b"keep-alive".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if &p[..] == b"keep-alive"),
        "{pong:?}"
    );

    let big = format!(r#"{{"type":"X","pad":"{}"}}"#, "x".repeat(5 << 20));
    let _ = ws.send(Message::Text(big.into())).await;
    eventually("the oversized sender to be dropped", || {
        (!portal.environment(ENV)?.connected).then_some(())
    })
    .await;
    portal.shutdown().await;
}
