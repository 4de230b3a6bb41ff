//! The upgrade center against TUF repositories signed by another
//! implementation: python-tuf's Metadata API made the committed fixtures in
//! `fixtures/python-tuf/` (`make.py` beside them says how and with which
//! versions; running the tests needs no Python). One repository has
//! `consistent_snapshot` off, one on: there snapshot and targets metadata
//! are versioned (`2.snapshot.json`) and each target is stored at
//! `dir/{sha256}.basename` (TUF 5.7.3), which is where the box must fetch
//! it. Both pin `1.root.json` and must follow the rotation to
//! `2.root.json`, whose new timestamp key signs the published timestamp.
//!
//! Two more, `delegated` (consistent snapshots) and `delegated-plain`,
//! sign the same targets through delegated targets roles: `targets` →
//! `tuf-team` (terminating) → `a-owner`, which lists the jar and the
//! `-bin.zip`; after `tuf-team`, a `rogue` role delegated broader paths
//! lists the jar with other bytes and `com/example/tuf/b/1.0/b-1.0.jar`.
//! python-tuf's own client resolves the jar to `a-owner`'s bytes and
//! `b-1.0.jar` to no target (the terminating delegation ends its search);
//! so must the box.
//!
//! The artifacts go through the Downloader actor, as in a synchronisation:
//! `ResolveSet` refreshes the metadata with `tough` and resolves the module
//! from the verified targets, `DownloadSet` fetches them with the box's
//! fetch engine.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod repo;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use actix::Actor;
use banalytics_home::Layout;
use banalytics_upgrade_center::{
    fetch::{self, FetchConfig},
    plan,
    tuf::{self, Trust},
    CachedFile, ChecksumPolicy, DownloadSet, Downloader, ResolveSet, ResolvedModule, UpgradeError,
    DOWNLOAD_EVENT_QUEUE,
};
use repo::{sha256_hex, sha256_of, Repo};

const JAR: &str = "com/example/tuf/a/1.0/a-1.0.jar";
const BIN: &str = "com/example/tuf/a/1.0/a-1.0-bin.zip";

/// A fixture repository served on loopback: `{name}/metadata/` and
/// `{name}/targets/` under the repository root.
struct Fixture {
    name: &'static str,
    dir: PathBuf,
    repo: Repo,
    /// The target bytes, by target name.
    targets: HashMap<&'static str, Vec<u8>>,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

impl Fixture {
    async fn serve(name: &'static str) -> Fixture {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/python-tuf")
            .join(name);
        let repo = Repo::start().await;
        let mut files = Vec::new();
        files_under(&dir, &mut files);
        for path in files {
            let rel = path.strip_prefix(&dir).unwrap().to_str().unwrap();
            repo.put(
                &format!("{name}/{rel}"),
                std::fs::read(&path).unwrap(),
                false,
            );
        }
        // The plain repository keeps each target under its name; the
        // targets of both repositories are the same bytes.
        let plain = dir.with_file_name("plain").join("targets");
        let targets = [JAR, BIN]
            .into_iter()
            .map(|t| (t, std::fs::read(plain.join(t)).unwrap()))
            .collect();
        Fixture {
            name,
            dir,
            repo,
            targets,
        }
    }

    fn consistent(&self) -> bool {
        matches!(self.name, "consistent" | "delegated")
    }

    /// The pinned root (version 1) and the repository's two folders.
    fn trust(&self) -> Trust {
        Trust::new(
            self.dir.join("metadata/1.root.json"),
            &self.repo.url_of(&format!("{}/targets", self.name)),
            Some(&self.repo.url_of(&format!("{}/metadata", self.name))),
        )
        .unwrap()
    }

    /// Where the repository stores target `name`.
    fn stored_at(&self, name: &str) -> String {
        let (dir, file) = name.rsplit_once('/').unwrap();
        let file = if self.consistent() {
            format!("{}.{file}", sha256_hex(&self.targets[name]))
        } else {
            file.to_owned()
        };
        format!("{}/targets/{dir}/{file}", self.name)
    }

    /// The request paths under `{name}/metadata/`, relative to it.
    fn metadata_gets(&self) -> Vec<String> {
        let prefix = format!("{}/metadata/", self.name);
        self.repo
            .requests()
            .into_iter()
            .filter_map(|r| r.path.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// The portal frame of `com.example.tuf:a:1.0`, without digests: with a
/// trusted root they would be hints at most.
fn module() -> banalytics_home::coords::Module {
    serde_json::from_value(serde_json::json!({
        "groupId": "com.example.tuf", "artifactId": "a", "version": "1.0",
        "type": "component", "uploadTime": "2026-03-01T10:15:30",
    }))
    .unwrap()
}

fn downloader(f: &Fixture, layout: &Layout) -> actix::Addr<Downloader> {
    let trust = f.trust();
    Downloader::new(
        layout.clone(),
        trust.targets_url.to_string(),
        FetchConfig::default(),
        2,
        ChecksumPolicy::Require,
    )
    .unwrap()
    .with_trust(Some(trust))
    .start()
}

/// A synchronisation's download part: resolve the module against verified
/// metadata, then fetch what the plan says.
async fn sync(
    f: &Fixture,
    layout: &Layout,
) -> Result<(ResolvedModule, HashMap<String, CachedFile>), UpgradeError> {
    let addr = downloader(f, layout);
    let mut resolved = addr
        .send(ResolveSet {
            modules: vec![module()],
        })
        .await
        .unwrap()?;
    let (events, _rx) = tokio::sync::mpsc::channel(DOWNLOAD_EVENT_QUEUE);
    let cached = addr
        .send(DownloadSet {
            plan: plan(resolved.clone(), &[], None, None),
            events,
        })
        .await
        .unwrap()?;
    Ok((resolved.remove(0), cached))
}

async fn verifies_and_downloads_at_the_stored_paths(name: &'static str) {
    let f = Fixture::serve(name).await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let (resolved, cached) = sync(&f, &layout).await.unwrap();

    // The signed facts, not the frame's (which has none).
    assert_eq!(
        resolved.main.expected.sha256,
        Some(sha256_of(&f.targets[JAR]))
    );
    assert_eq!(
        resolved.main.expected.size,
        Some(f.targets[JAR].len() as u64)
    );
    let deps = resolved.dependencies.expect("the -bin.zip is a target");
    assert_eq!(deps.url, f.repo.url_of(&f.stored_at(BIN)));
    assert!(resolved.model.is_none());

    // The right bytes in the cache, fetched where the repository keeps them.
    assert_eq!(cached.len(), 2, "{cached:?}");
    for (target, cache_name) in [
        (JAR, "com.example.tuf-a-1.0.jar"),
        (BIN, "com.example.tuf-a-1.0-bin.zip"),
    ] {
        let body = std::fs::read(layout.download().join(cache_name)).unwrap();
        assert_eq!(body, f.targets[target], "{cache_name}");
        assert_eq!(cached[cache_name].sha256, sha256_of(&body));
        assert!(
            f.repo
                .requests()
                .iter()
                .any(|r| r.method == "GET" && r.path == f.stored_at(target) && r.status == 200),
            "{target} fetched at {}",
            f.stored_at(target)
        );
    }
    let not_found: Vec<_> = f
        .repo
        .requests()
        .into_iter()
        .filter(|r| r.status == 404 && !r.path.ends_with("3.root.json"))
        .map(|r| r.path)
        .collect();
    assert!(not_found.is_empty(), "no guessed paths: {not_found:?}");

    // The rotation was followed, and the metadata files have the names
    // this repository gives them.
    let got = f.metadata_gets();
    for file in ["timestamp.json", "2.root.json", "3.root.json"] {
        assert!(got.contains(&file.to_owned()), "{file}: {got:?}");
    }
    let (snapshot, targets) = if f.consistent() {
        ("2.snapshot.json", "2.targets.json")
    } else {
        ("snapshot.json", "targets.json")
    };
    assert!(got.contains(&snapshot.to_owned()), "{got:?}");
    assert!(got.contains(&targets.to_owned()), "{got:?}");
    let stored_root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join("state/tuf/root.json")).unwrap())
            .unwrap();
    assert_eq!(
        stored_root["signed"]["version"], 2,
        "the rotated root is the store's"
    );
    assert_eq!(stored_root["signed"]["consistent_snapshot"], f.consistent());
}

#[actix_rt::test]
async fn a_python_tuf_repository_without_consistent_snapshots_verifies_and_its_targets_download() {
    verifies_and_downloads_at_the_stored_paths("plain").await;
}

#[actix_rt::test]
async fn a_python_tuf_repository_with_consistent_snapshots_is_fetched_at_hash_prefixed_paths() {
    verifies_and_downloads_at_the_stored_paths("consistent").await;
}

async fn a_tampered_target_is_refused(name: &'static str) {
    let f = Fixture::serve(name).await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    // Same length, one bit flipped: only the signed hash tells.
    f.repo.set(&f.stored_at(JAR), |b| b.body[10] ^= 1);
    let e = sync(&f, &layout).await.unwrap_err();
    assert!(
        matches!(&e, UpgradeError::Fetch { source, .. } if matches!(source, fetch::FetchError::ChecksumMismatch { .. })),
        "{e}"
    );
    assert!(
        !layout.download().join("com.example.tuf-a-1.0.jar").exists(),
        "nothing promoted to the cache"
    );
}

#[actix_rt::test]
async fn a_tampered_target_of_a_python_tuf_repository_is_refused() {
    a_tampered_target_is_refused("plain").await;
}

#[actix_rt::test]
async fn a_tampered_target_of_a_consistent_python_tuf_repository_is_refused() {
    a_tampered_target_is_refused("consistent").await;
}

async fn a_no_change_refresh_fetches_the_timestamp_only(name: &'static str, version: u64) {
    let f = Fixture::serve(name).await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let cfg = FetchConfig::default();
    let client = fetch::client(&cfg).unwrap();
    let first = tuf::refresh(&client, &cfg, &layout, &f.trust())
        .await
        .unwrap();
    assert_eq!(first.version, version);
    // A rotation (1 -> 2) is kept as the chain; the no-change refresh walks
    // it from the pinned root 1 without fetching (python-tuf's root 2
    // replaced the timestamp key: without it the timestamp would not
    // verify).
    let chain = (1..)
        .take_while(|n| f.dir.join(format!("metadata/{n}.root.json")).is_file())
        .collect::<Vec<u64>>();
    for n in chain {
        assert!(
            home.path()
                .join(format!("state/tuf/{n}.root.json"))
                .is_file(),
            "{n}.root.json"
        );
    }
    f.repo.reset_counters();
    let again = tuf::refresh(&client, &cfg, &layout, &f.trust())
        .await
        .unwrap();
    assert_eq!(f.metadata_gets(), ["timestamp.json"]);
    assert_eq!(again.get(JAR), first.get(JAR));
    assert_eq!(again.len(), 2);
}

#[tokio::test]
async fn a_no_change_refresh_of_a_python_tuf_repository_fetches_the_timestamp_only() {
    a_no_change_refresh_fetches_the_timestamp_only("plain", 2).await;
}

#[tokio::test]
async fn a_no_change_refresh_of_a_consistent_python_tuf_repository_fetches_the_timestamp_only() {
    a_no_change_refresh_fetches_the_timestamp_only("consistent", 2).await;
}

/// `tough`'s own target reader gives a whole download 30 s and cannot
/// resume; the box fetches TUF targets with its fetch engine instead, so a
/// body cut in the middle is resumed with `Range` from what is on disk,
/// and the verified length and SHA-256 still decide.
#[actix_rt::test]
async fn a_target_cut_in_the_middle_is_resumed_by_the_boxs_fetch_engine() {
    let f = Fixture::serve("consistent").await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let half = f.targets[JAR].len() / 2;
    f.repo.set(&f.stored_at(JAR), |b| {
        b.truncate_next = 1;
        b.truncate_at = half;
    });
    let (_, cached) = sync(&f, &layout).await.unwrap();

    let body = std::fs::read(layout.download().join("com.example.tuf-a-1.0.jar")).unwrap();
    assert_eq!(body, f.targets[JAR]);
    assert_eq!(cached["com.example.tuf-a-1.0.jar"].sha256, sha256_of(&body));
    let gets: Vec<_> = f
        .repo
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == f.stored_at(JAR))
        .map(|r| (r.status, r.range))
        .collect();
    assert_eq!(
        gets,
        [(200, None), (206, Some(format!("bytes={half}-")))],
        "the second request asks only for the rest"
    );
}

const OTHER: &str = "com/example/tuf/b/1.0/b-1.0.jar";

/// The delegated roles' metadata, fetched under the names the repository
/// gives them, and kept in the home; the targets resolved by TUF's
/// delegation search, not by whichever role listed a name last.
async fn delegated_targets_resolve_by_the_delegation_search(name: &'static str) {
    let f = Fixture::serve(name).await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let (resolved, cached) = sync(&f, &layout).await.unwrap();

    // a-owner's jar, not rogue's (whose bytes the consistent repository
    // also serves, at their own hash-prefixed path).
    let genuine = sha256_of(&f.targets[JAR]);
    assert_eq!(resolved.main.expected.sha256, Some(genuine));
    assert_eq!(resolved.main.url, f.repo.url_of(&f.stored_at(JAR)));
    let jar = std::fs::read(layout.download().join("com.example.tuf-a-1.0.jar")).unwrap();
    assert_eq!(jar, f.targets[JAR]);
    assert_eq!(cached.len(), 2, "the jar and the -bin.zip: {cached:?}");

    let prefix = if f.consistent() { "1." } else { "" };
    let got = f.metadata_gets();
    for role in ["tuf-team", "a-owner", "rogue"] {
        let file = format!("{prefix}{role}.json");
        assert!(got.contains(&file), "{file}: {got:?}");
        assert!(
            home.path()
                .join(format!("state/tuf/delegated/{role}.json"))
                .is_file(),
            "{role} kept in the home"
        );
    }

    let cfg = FetchConfig::default();
    let client = fetch::client(&cfg).unwrap();
    let trusted = tuf::refresh(&client, &cfg, &layout, &f.trust())
        .await
        .unwrap();
    assert_eq!(trusted.get(JAR).unwrap().sha256, genuine);
    assert!(
        trusted.get(OTHER).is_none(),
        "the terminating tuf-team ends the search for b-1.0.jar"
    );
    assert_eq!(trusted.len(), 2);
}

#[actix_rt::test]
async fn a_delegated_role_signs_only_the_paths_delegated_to_it() {
    delegated_targets_resolve_by_the_delegation_search("delegated").await;
}

#[actix_rt::test]
async fn a_delegated_role_signs_only_the_paths_delegated_to_it_without_consistent_snapshots() {
    delegated_targets_resolve_by_the_delegation_search("delegated-plain").await;
}

#[tokio::test]
async fn a_no_change_refresh_of_a_delegated_repository_fetches_the_timestamp_only() {
    a_no_change_refresh_fetches_the_timestamp_only("delegated", 1).await;
    a_no_change_refresh_fetches_the_timestamp_only("delegated-plain", 1).await;
}

/// A delegated role's file in the home cut short (a power loss on a file
/// system that lost the rename's data): the refresh that used it fails to
/// verify, fetches all from the repository once more, and mends the store.
#[tokio::test]
async fn a_damaged_delegated_role_in_the_home_is_fetched_again_and_mended() {
    let f = Fixture::serve("delegated").await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let cfg = FetchConfig::default();
    let client = fetch::client(&cfg).unwrap();
    tuf::refresh(&client, &cfg, &layout, &f.trust())
        .await
        .unwrap();
    let kept = home.path().join("state/tuf/delegated/a-owner.json");
    let good = std::fs::read(&kept).unwrap();
    std::fs::write(&kept, &good[..good.len() / 2]).unwrap();
    f.repo.reset_counters();

    let again = tuf::refresh(&client, &cfg, &layout, &f.trust())
        .await
        .unwrap();
    assert_eq!(again.get(JAR).unwrap().sha256, sha256_of(&f.targets[JAR]));
    assert!(
        f.metadata_gets().contains(&"1.a-owner.json".to_owned()),
        "{:?}",
        f.metadata_gets()
    );
    assert_eq!(std::fs::read(&kept).unwrap(), good, "the store mended");
}
