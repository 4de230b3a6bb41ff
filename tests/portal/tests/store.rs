//! The portal's store: the conformance checks on SQLite (the PostgreSQL
//! harness runs the same ones), and the import of a data folder written by
//! the portal before the database.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::path::{Path, PathBuf};

use banalytics_portal::{
    db::{conformance, sqlite_url},
    rollout::{BoxState, RolloutState},
    Portal, PortalConfig,
};

#[test]
fn the_store_conforms_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(|name| sqlite_url(&dir.path().join(format!("{name}.db"))));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/main-portal-data")
}

const KITCHEN_SECRET: &str = "1e4e8e91617108a3b2567b384a80312c5e5eb86b28099f4c018578db8859b251";

#[test]
fn a_data_folder_of_the_portal_before_the_database_is_imported_once_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture(), &data);
    // A checkout gives the files new times: give them back the ones the
    // old portal recorded with their digests.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("portal-state.json")).unwrap()).unwrap();
    for (rel, digest) in state["files"].as_object().unwrap() {
        let ns = digest["modifiedNs"].as_u64().unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(data.join("repo").join(rel))
            .unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
            .unwrap();
    }
    let mut config = PortalConfig::new(&data);
    config.admin_token = Some("fixture-token-0123456789abcdef".into());
    let portal = Portal::spawn(config.clone()).unwrap();

    let modules: Vec<String> = portal.modules().iter().map(|m| m.coordinates()).collect();
    assert_eq!(modules, ["com.example:cam:1.0", "com.example:cam:1.1"]);
    let kitchen = portal.environment("env-kitchen").unwrap();
    assert_eq!(kitchen.assigned, ["com.example:cam:1.0"]);
    assert!(kitchen.registered && kitchen.name == "kitchen" && !kitchen.revoked);
    let hall = portal.environment("env-hall").unwrap();
    assert_eq!(
        hall.assigned,
        ["com.example:cam:1.1"],
        "the rollout's first wave"
    );
    assert!(portal.environment("env-attic").unwrap().revoked);
    let rollouts = portal.rollouts();
    assert_eq!(rollouts.len(), 1);
    let r = &rollouts[0];
    assert_eq!((r.id, r.spec.name.as_str()), (1, "fixture"));
    assert_eq!(r.state, RolloutState::Running);
    assert_eq!(
        r.waves,
        [vec!["env-hall".to_owned()], vec!["env-kitchen".to_owned()]]
    );
    assert!(matches!(
        r.box_state("env-hall"),
        Some(BoxState::Assigned { .. })
    ));
    assert_eq!(r.box_state("env-kitchen"), Some(&BoxState::Waiting));
    // The files' digests came along: the ETag is the published one.
    let sha =
        std::fs::read_to_string(data.join("repo/com/example/cam/1.0/cam-1.0.jar.sha256")).unwrap();
    let response = http::etag(&format!(
        "{}/com/example/cam/1.0/cam-1.0.jar",
        portal.repo_url()
    ));
    assert_eq!(response, format!("\"{}\"", sha.trim()));
    assert_eq!(
        portal.stats().etag_hashes,
        0,
        "the digest recorded at publish answered: no file hashed at request time"
    );
    for f in ["portal-state.json", "rollouts.json", "environments.json"] {
        assert!(!data.join(f).exists(), "{f} left in place");
        assert!(
            data.join(format!("{f}.imported")).exists(),
            "{f} not renamed"
        );
    }
    portal.shutdown_blocking();

    // A second start imports nothing, even with a state file back.
    std::fs::copy(
        fixture().join("portal-state.json"),
        data.join("portal-state.json"),
    )
    .unwrap();
    let portal = Portal::spawn(config).unwrap();
    assert_eq!(portal.modules().len(), 2);
    assert!(data.join("portal-state.json").exists(), "left alone");
    // The registration came along with its secret's hash.
    assert!(portal
        .registered()
        .iter()
        .any(|e| e.environment_uuid == "env-kitchen"));
    assert!(http::upgrades(
        &portal.ws_url("env-kitchen", "h"),
        KITCHEN_SECRET
    ));
    assert!(!http::upgrades(&portal.ws_url("env-kitchen", "h"), "guess"));
    portal.shutdown_blocking();
}

mod http {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The `ETag` of `url`.
    pub fn etag(url: &str) -> String {
        block_on(async {
            let r = reqwest::get(url).await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.headers()["etag"].to_str().unwrap().to_owned()
        })
    }

    /// Whether the WebSocket upgrade of `url` with `secret` succeeds.
    pub fn upgrades(url: &str, secret: &str) -> bool {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {secret}").parse().unwrap());
        block_on(tokio_tungstenite::connect_async(req)).is_ok()
    }
}
