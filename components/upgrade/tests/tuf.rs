//! The upgrade center's TUF verification ([`banalytics_upgrade_center::tuf`])
//! against a loopback repository whose metadata `tough`'s editor makes
//! here, differently from the reference portal (ECDSA keys, a 2-of-2
//! targets threshold, custom target fields): the clock rules, the store
//! that survives a kill, mix-and-match and freeze.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod repo;

use std::{
    collections::HashMap,
    num::NonZeroU64,
    path::{Path, PathBuf},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING},
};
use banalytics_home::Layout;
use banalytics_upgrade_center::{
    fetch::{self, FetchConfig},
    tuf::{self, Trust},
    UpgradeError,
};
use repo::{sha256_hex, sha256_of, Repo};
use tough::{
    editor::{signed::SignedRole, RepositoryEditor},
    key_source::{KeySource, LocalKeySource},
    schema::{
        decoded::{Decoded, Hex},
        Hashes, KeyHolder, RoleKeys, RoleType, Root, Target,
    },
    sign::{parse_keypair, Sign},
};

/// A TUF repository made with tough's editor, served by [`Repo`].
struct Signed {
    dir: tempfile::TempDir,
    repo: Repo,
    keys: Vec<PathBuf>,
}

fn key_file(dir: &Path, name: &str, ecdsa: bool) -> PathBuf {
    let rng = SystemRandom::new();
    let doc = if ecdsa {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec()
    } else {
        Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let path = dir.join(name);
    std::fs::write(&path, doc).unwrap();
    path
}

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

fn in_days(days: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
}

impl Signed {
    async fn new() -> Signed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Root: one Ed25519 key; targets: two ECDSA keys, both needed;
        // snapshot and timestamp: one ECDSA key each.
        let keys = vec![
            key_file(d, "root.key", false),
            key_file(d, "targets-a.key", true),
            key_file(d, "targets-b.key", true),
            key_file(d, "snapshot.key", true),
            key_file(d, "timestamp.key", true),
        ];
        let mut root = Root {
            spec_version: "1.0.31".into(),
            consistent_snapshot: false,
            version: NonZeroU64::new(1).unwrap(),
            expires: in_days(365),
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        let roles: [(RoleType, &[usize], u64); 4] = [
            (RoleType::Root, &[0], 1),
            (RoleType::Targets, &[1, 2], 2),
            (RoleType::Snapshot, &[3], 1),
            (RoleType::Timestamp, &[4], 1),
        ];
        for (role, idx, threshold) in roles {
            let mut keyids = Vec::new();
            for &i in idx {
                let pair = parse_keypair(&std::fs::read(&keys[i]).unwrap()).unwrap();
                let key = pair.tuf_key();
                let id = key.key_id().unwrap();
                root.keys.insert(id.clone(), key);
                keyids.push(id);
            }
            root.roles.insert(
                role,
                RoleKeys {
                    keyids,
                    threshold: NonZeroU64::new(threshold).unwrap(),
                    _extra: HashMap::new(),
                },
            );
        }
        let signed = SignedRole::new(
            root.clone(),
            &KeyHolder::Root(root),
            &sources(&keys[..1]),
            &SystemRandom::new(),
        )
        .await
        .unwrap();
        std::fs::write(d.join("root.json"), signed.buffer()).unwrap();
        let repo = Repo::start().await;
        repo.put(".tuf/root.json", signed.buffer().clone(), false);
        repo.put(".tuf/1.root.json", signed.buffer().clone(), false);
        Signed { dir, repo, keys }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    /// Signs `targets` as version `version` of every role (timestamp and
    /// targets expiring in the given days) and returns the metadata bytes
    /// without serving them.
    async fn sign(
        &self,
        targets: &[(&str, &[u8])],
        version: u64,
        targets_days: i64,
        timestamp_days: i64,
    ) -> HashMap<&'static str, Vec<u8>> {
        let mut editor = RepositoryEditor::new(self.root()).await.unwrap();
        for (name, body) in targets {
            let mut custom = HashMap::new();
            custom.insert("made-by".to_owned(), serde_json::json!("tough editor test"));
            editor
                .add_target(
                    *name,
                    Target {
                        length: body.len() as u64,
                        hashes: Hashes {
                            sha256: Decoded::<Hex>::from(hex::decode(sha256_hex(body)).unwrap()),
                            _extra: HashMap::new(),
                        },
                        custom,
                        _extra: HashMap::new(),
                    },
                )
                .unwrap();
        }
        let v = NonZeroU64::new(version).unwrap();
        editor
            .targets_version(v)
            .unwrap()
            .targets_expires(in_days(targets_days))
            .unwrap()
            .snapshot_version(v)
            .snapshot_expires(in_days(targets_days))
            .timestamp_version(v)
            .timestamp_expires(in_days(timestamp_days));
        let out = self.dir.path().join(format!("v{version}"));
        editor
            .sign(&sources(&self.keys))
            .await
            .unwrap()
            .write(&out)
            .await
            .unwrap();
        ["targets.json", "snapshot.json", "timestamp.json"]
            .into_iter()
            .map(|f| (f, std::fs::read(out.join(f)).unwrap()))
            .collect()
    }

    fn serve(&self, metadata: &HashMap<&'static str, Vec<u8>>) {
        for (f, bytes) in metadata {
            self.repo.put(&format!(".tuf/{f}"), bytes.clone(), false);
        }
    }

    fn trust(&self) -> Trust {
        Trust::new(self.root(), &self.repo.url(), None).unwrap()
    }
}

async fn refresh(s: &Signed, layout: &Layout) -> Result<tuf::TrustedTargets, UpgradeError> {
    let cfg = FetchConfig::default();
    let client = fetch::client(&cfg).unwrap();
    tuf::refresh(&client, &cfg, layout, &s.trust()).await
}

const JAR: &str = "com/example/a/1.0/a-1.0.jar";

fn metadata_gets(repo: &Repo) -> Vec<String> {
    repo.requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with(".tuf/"))
        .collect()
}

#[tokio::test]
async fn metadata_made_by_another_signer_verifies_and_lists_the_targets() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    let t = refresh(&s, &layout).await.unwrap();
    let jar = t.get(JAR).expect("the jar is a target");
    assert_eq!(jar.sha256, sha256_of(b"jar one"));
    assert_eq!(jar.length, 7);
    assert_eq!(t.len(), 1);
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(home.path().join("state/tuf").join(f).is_file(), "{f}");
    }
    assert!(
        !home.path().join("state/tuf.scratch").exists(),
        "the scratch copy is removed"
    );
}

#[tokio::test]
async fn a_no_change_refresh_fetches_the_timestamp_only_and_a_change_fetches_the_rest() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    refresh(&s, &layout).await.unwrap();
    s.repo.reset_counters();
    refresh(&s, &layout).await.unwrap();
    assert_eq!(metadata_gets(&s.repo), [".tuf/timestamp.json"]);

    s.repo.reset_counters();
    s.serve(&s.sign(&[(JAR, b"jar two")], 2, 30, 1).await);
    let t = refresh(&s, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar two"));
    let got = metadata_gets(&s.repo);
    for f in [
        "timestamp.json",
        "2.root.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(got.contains(&format!(".tuf/{f}")), "{f}: {got:?}");
    }
}

#[tokio::test]
async fn a_clock_in_1970_refuses_to_verify_and_leaves_the_store_alone() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    // Metadata that expired long ago: a 1970 clock would call it fresh.
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, -3, -3).await);
    let cfg = FetchConfig::default();
    let client = fetch::client(&cfg).unwrap();
    let e = tuf::refresh_at(&client, &cfg, &layout, &s.trust(), || {
        jiff::Timestamp::UNIX_EPOCH
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&e, UpgradeError::Trust { reason } if reason.contains("1970") && reason.contains("keeps running")),
        "{e}"
    );
    assert!(s.repo.requests().is_empty(), "nothing fetched");
    // With the real clock the same metadata is expired, and refused.
    let e = refresh(&s, &layout).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
    // Fresh metadata: the box goes on.
    s.serve(&s.sign(&[(JAR, b"jar one")], 2, 30, 1).await);
    refresh(&s, &layout).await.unwrap();
}

#[tokio::test]
async fn a_clock_stepped_back_behind_the_last_verification_is_refused_until_it_catches_up() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    refresh(&s, &layout).await.unwrap();
    let known = home.path().join("state/tuf/latest_known_time.json");
    assert!(known.is_file(), "the last verification time is kept");
    // The clock now reads a day before the last verification.
    std::fs::write(&known, serde_json::to_vec(&in_days(1)).unwrap()).unwrap();
    let e = refresh(&s, &layout).await.unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("backward"),
        "stepped back: {e}"
    );
    // The store is untouched by the refusal; once the clock is past the
    // last verification again, verification goes on.
    std::fs::write(&known, serde_json::to_vec(&in_days(-1)).unwrap()).unwrap();
    refresh(&s, &layout).await.unwrap();
}

#[tokio::test]
async fn the_store_survives_a_kill_during_an_update() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let v1 = s.sign(&[(JAR, b"jar one")], 1, 30, 1).await;
    s.serve(&v1);
    refresh(&s, &layout).await.unwrap();
    let store = home.path().join("state/tuf");
    // A kill while tough wrote its scratch copy, and one during a
    // write-rename of the store: torn files beside the store's.
    std::fs::create_dir_all(home.path().join("state/tuf.scratch")).unwrap();
    std::fs::write(
        home.path().join("state/tuf.scratch/timestamp.json"),
        b"{\"sig",
    )
    .unwrap();
    std::fs::write(store.join("snapshot.json.tmp"), b"{\"si").unwrap();
    let t = refresh(&s, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar one"));

    // A store whose snapshot does not match its timestamp (a disk that
    // lost a write): the refresh falls back to the repository.
    let v2 = s.sign(&[(JAR, b"jar two")], 2, 30, 1).await;
    s.serve(&v2);
    std::fs::write(store.join("timestamp.json"), &v2["timestamp.json"]).unwrap();
    let t = refresh(&s, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar two"));
    assert_eq!(
        std::fs::read(store.join("snapshot.json")).unwrap(),
        v2["snapshot.json"]
    );
}

#[tokio::test]
async fn mix_and_match_of_targets_from_another_version_is_refused() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let v1 = s.sign(&[(JAR, b"jar one")], 1, 30, 1).await;
    let v2 = s.sign(&[(JAR, b"jar two")], 2, 30, 1).await;
    // The new timestamp and snapshot, the old (validly signed) targets.
    s.serve(&v2);
    s.repo
        .put(".tuf/targets.json", v1["targets.json"].clone(), false);
    let e = refresh(&s, &layout).await.unwrap_err();
    assert!(matches!(e, UpgradeError::Trust { .. }), "{e}");
}

#[tokio::test]
async fn frozen_targets_metadata_is_refused_though_the_timestamp_is_fresh() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, -1, 1).await);
    let e = refresh(&s, &layout).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
}

#[tokio::test]
async fn a_targets_signature_short_of_the_threshold_is_refused() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let mut v1 = s.sign(&[(JAR, b"jar one")], 1, 30, 1).await;
    // Drop one of the two targets signatures: 1 of 2 is not enough. The
    // snapshot signs the targets file's hash, so re-serve it consistently
    // by editing only the signature list and keeping the old hash: tough
    // must refuse either way.
    let mut targets: serde_json::Value = serde_json::from_slice(&v1["targets.json"]).unwrap();
    targets["signatures"].as_array_mut().unwrap().pop();
    v1.insert("targets.json", serde_json::to_vec(&targets).unwrap());
    s.serve(&v1);
    let e = refresh(&s, &layout).await.unwrap_err();
    assert!(matches!(e, UpgradeError::Trust { .. }), "{e}");
}

fn module(frame: serde_json::Value) -> banalytics_home::coords::Module {
    serde_json::from_value(frame).unwrap()
}

#[tokio::test]
async fn only_signed_targets_are_resolved_and_the_frame_is_a_hint() {
    use banalytics_upgrade_center::{resolve, ChecksumPolicy, PLATFORM};
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let bin = "com/example/a/1.0/a-1.0-bin.zip";
    s.serve(&s.sign(&[(JAR, b"jar one"), (bin, b"zip")], 1, 30, 1).await);
    let trusted = refresh(&s, &layout).await.unwrap();
    let client = fetch::client(&FetchConfig::default()).unwrap();
    let frame = serde_json::json!({
        "groupId": "com.example", "artifactId": "a", "version": "1.0",
        "type": "component", "uploadTime": "2026-03-01T10:15:30",
        // A hostile frame: digests and sizes of other bytes.
        "sha256": sha256_hex(b"evil"), "size": 4,
        "dependencies": {"sha256": sha256_hex(b"evil zip"), "size": 8},
    });
    let url = s.repo.url();
    let r = resolve(
        &client,
        &url,
        PLATFORM,
        module(frame.clone()),
        ChecksumPolicy::Require,
        Some(&trusted),
    )
    .await
    .unwrap();
    assert_eq!(r.main.expected.sha256, Some(sha256_of(b"jar one")));
    assert_eq!(r.main.expected.size, Some(7));
    let deps = r.dependencies.expect("the signed package");
    assert_eq!(deps.expected.sha256, Some(sha256_of(b"zip")));
    assert!(r.model.is_none(), "no model is signed");

    // A package the frame declares that nobody signed: refused
    // (extraneous dependencies).
    let mut with_model = frame.clone();
    with_model["model"] = serde_json::json!({"sha256": sha256_hex(b"m"), "size": 1});
    let e = resolve(
        &client,
        &url,
        PLATFORM,
        module(with_model),
        ChecksumPolicy::Require,
        Some(&trusted),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, UpgradeError::NotATarget { path, .. } if path.ends_with("a-1.0-model.zip")),
        "{e}"
    );
    // A module that is not a target at all.
    let mut other = frame;
    other["artifactId"] = serde_json::json!("b");
    let e = resolve(
        &client,
        &url,
        PLATFORM,
        module(other),
        ChecksumPolicy::Require,
        Some(&trusted),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, UpgradeError::NotATarget { .. }), "{e}");
    assert!(
        !s.repo
            .requests()
            .iter()
            .any(|r| r.path.ends_with(".sha256")),
        "no .sha256 is asked for"
    );
}

/// A root of another repository (other keys), version `version`, as the
/// bytes a forger would write into the store.
async fn forged_root(version: u64) -> Vec<u8> {
    let other = Signed::new().await;
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.root()).unwrap()).unwrap();
    root["signed"]["version"] = serde_json::json!(version);
    serde_json::to_vec(&root).unwrap()
}

#[tokio::test]
async fn a_forged_root_json_in_the_store_is_never_trusted_and_is_replaced_by_the_verified_one() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    refresh(&s, &layout).await.unwrap();
    let store = home.path().join("state/tuf");
    assert_eq!(
        std::fs::read(store.join("1.root.json")).unwrap(),
        std::fs::read(s.root()).unwrap(),
        "the pinned root starts the chain"
    );
    // A component writes a root of its own, version 99.
    std::fs::write(store.join("root.json"), forged_root(99).await).unwrap();
    s.repo.reset_counters();
    let t = refresh(&s, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar one"));
    // Verified from the pinned root: the chain looked for root 2 in the
    // repository (the stored root.json is not the one it ended with).
    assert_eq!(
        metadata_gets(&s.repo),
        [".tuf/timestamp.json", ".tuf/2.root.json"]
    );
    assert_eq!(
        std::fs::read(store.join("root.json")).unwrap(),
        std::fs::read(s.root()).unwrap(),
        "the forged root.json is replaced by the root verified"
    );
    // And the next no-change refresh moves the timestamp only again.
    s.repo.reset_counters();
    refresh(&s, &layout).await.unwrap();
    assert_eq!(metadata_gets(&s.repo), [".tuf/timestamp.json"]);
}

#[tokio::test]
async fn a_stored_chain_root_that_does_not_verify_is_discarded_and_the_chain_fetched_again() {
    let s = Signed::new().await;
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    s.serve(&s.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    refresh(&s, &layout).await.unwrap();
    let store = home.path().join("state/tuf");
    // A "rotation" to other keys that the pinned root never signed.
    std::fs::write(store.join("2.root.json"), forged_root(2).await).unwrap();
    std::fs::write(store.join("3.root.json"), forged_root(3).await).unwrap();
    s.repo.reset_counters();
    let t = refresh(&s, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar one"));
    assert!(!store.join("2.root.json").exists(), "discarded");
    assert!(!store.join("3.root.json").exists(), "discarded with it");
    let got = metadata_gets(&s.repo);
    assert!(
        got.contains(&".tuf/2.root.json".to_owned()),
        "the chain asked of the repository: {got:?}"
    );
}

#[tokio::test]
async fn a_reprovisioned_trust_root_with_other_keys_and_the_same_version_starts_a_new_store() {
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let first = Signed::new().await;
    first.serve(&first.sign(&[(JAR, b"jar one")], 1, 30, 1).await);
    refresh(&first, &layout).await.unwrap();
    // The box is provisioned again: another repository, another root of
    // version 1 with other keys.
    let second = Signed::new().await;
    second.serve(&second.sign(&[(JAR, b"jar two")], 1, 30, 1).await);
    let t = refresh(&second, &layout).await.unwrap();
    assert_eq!(t.get(JAR).unwrap().sha256, sha256_of(b"jar two"));
    let store = home.path().join("state/tuf");
    assert_eq!(
        std::fs::read(store.join("1.root.json")).unwrap(),
        std::fs::read(second.root()).unwrap()
    );
    let aside: Vec<_> = std::fs::read_dir(home.path().join("state"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with("tuf.replaced-").then_some(name)
        })
        .collect();
    assert_eq!(aside.len(), 1, "the old store moved aside: {aside:?}");
    assert_eq!(
        std::fs::read(
            home.path()
                .join("state")
                .join(&aside[0])
                .join("1.root.json")
        )
        .unwrap(),
        std::fs::read(first.root()).unwrap(),
        "the old store, whole"
    );
}
