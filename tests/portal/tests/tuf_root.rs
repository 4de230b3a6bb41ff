//! The running portal keeps its TUF root from expiring: in the root's last
//! quarter it renews it by itself when the root keys are at hand (a box
//! that trusts the old root follows, see the `tuf` unit tests), and leaves
//! it alone when they are not, with a warning on the console's first page
//! (and in its log, at start and daily).

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    path::Path,
    time::{Duration, Instant},
};

use banalytics_portal::{
    tuf::{self, KeysInit},
    Portal, PortalConfig,
};

/// A signed repository whose root expires in a minute: its last quarter.
fn root_near_its_end(data: &Path, root_key_dir: &Path) {
    tuf::keys_init(
        data,
        &KeysInit {
            root_key_dir: Some(root_key_dir.to_owned()),
            ..KeysInit::default()
        },
    )
    .unwrap();
    let settings = data.join("tuf/settings.json");
    let year: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let mut minute = year.clone();
    minute["lifetimes"]["root_s"] = 60.into();
    std::fs::write(&settings, minute.to_string()).unwrap();
    assert_eq!(tuf::renew_root(data, &[]).unwrap(), 2);
    std::fs::write(&settings, year.to_string()).unwrap();
    assert!(tuf::root_due_at(data, jiff::Timestamp::now()));
}

fn root_version(data: &Path) -> u64 {
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuf::root_path(data)).unwrap()).unwrap();
    root["signed"]["version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_portal_renews_a_root_in_its_last_quarter_when_its_keys_are_at_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("portal");
    root_near_its_end(&data, &dir.path().join("root-keys"));
    let portal = Portal::start(PortalConfig::new(&data)).await.unwrap();
    let start = Instant::now();
    while root_version(&data) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the root was not renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = tuf::root_expires(&data).unwrap().as_second() - jiff::Timestamp::now().as_second();
    assert!(left > 300 * 86_400, "a year again: {left} s");
    assert!(!tuf::root_due_at(&data, jiff::Timestamp::now()));
    portal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_root_keys_a_running_portal_leaves_the_root_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("portal");
    let keys = dir.path().join("root-keys");
    root_near_its_end(&data, &keys);
    // The root key folder unmounted, as an offline key is kept.
    std::fs::rename(&keys, dir.path().join("drawer")).unwrap();
    assert!(!tuf::root_keys_present(&data));
    let mut config = PortalConfig::new(&data);
    config.admin_token = Some("root-test-token".into());
    let portal = Portal::start(config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(root_version(&data), 2, "nothing to sign a root with");

    // The console's first page says so.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("{}/login", portal.console_url()))
        .form(&[("token", "root-test-token")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(portal.console_url())
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"tuf-root\"") && page.contains("keys renew-root"),
        "{page}"
    );
    portal.shutdown().await;
}
