//! TUF metadata for the portal's Maven repository, made with `tough`'s
//! editor: `keys init` creates the keys and the first root, every
//! `publish` re-signs targets, snapshot and timestamp, and a task of the
//! running portal re-signs before the timestamp expires.
//!
//! Files in the data folder:
//! - `tuf/root.json`: the current signed root (give it to boxes as their
//!   `trust_root`);
//! - `tuf/offline/root-N.key`: the root keys, wherever `--root-key-dir`
//!   put them; they are needed only for `keys init` and `keys rotate-root`,
//!   so that folder can live on a disk kept offline;
//! - `tuf/keys/ROLE-N.key`: the online keys of targets, snapshot and
//!   timestamp (Ed25519, PKCS#8);
//! - `tuf/settings.json`: metadata lifetimes;
//! - `repo/.tuf/`: the published metadata, served at
//!   `/repo/.tuf/{root,N.root,targets,snapshot,timestamp}.json`.
//!
//! Target names are the Maven paths under `repo/`. `consistent_snapshot` is
//! off (tough names consistent targets with folders differently from other
//! implementations), so a publication is made atomic by order instead:
//! each file is written to a staging folder, then renamed into
//! `repo/.tuf/` one by one, targets, snapshot and the timestamp last. A
//! client that reads the new timestamp finds the snapshot and targets it
//! names already in place.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU64,
    path::{Path, PathBuf},
};

use aws_lc_rs::{rand::SystemRandom, signature::Ed25519KeyPair};
use serde::{Deserialize, Serialize};
use tough::{
    editor::{signed::SignedRole, RepositoryEditor},
    key_source::{KeySource, LocalKeySource},
    schema::{
        decoded::{Decoded, Hex},
        Hashes, KeyHolder, RoleKeys, RoleType, Root, Target,
    },
    sign::{parse_keypair, Sign},
};
use tracing::info;

use super::{
    store::{write_atomically, write_private},
    PortalError,
};

/// The published metadata folder under the repository root.
pub const METADATA_DIR: &str = ".tuf";

/// The online roles, which sign on every publish.
const ONLINE: [RoleType; 3] = [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp];

/// How long each role's metadata is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetimes {
    /// Root, in seconds (default a year: it changes only on rotation).
    pub root_s: i64,
    /// Targets and snapshot, in seconds (default 30 days).
    pub targets_s: i64,
    /// Timestamp, in seconds (default a day; re-signed at half-life).
    pub timestamp_s: i64,
    /// Whether the running portal re-signs before the timestamp expires.
    pub refresh: bool,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            root_s: 365 * 86_400,
            targets_s: 30 * 86_400,
            timestamp_s: 86_400,
            refresh: true,
        }
    }
}

/// What `keys init` creates.
#[derive(Debug, Clone)]
pub struct KeysInit {
    /// Root keys to create.
    pub root_keys: usize,
    /// Root signatures required.
    pub root_threshold: u64,
    /// Keys per online role (targets, snapshot, timestamp).
    pub online_keys: usize,
    /// Signatures required per online role.
    pub online_threshold: u64,
    /// Where the root keys go (default `DATA/tuf/offline`).
    pub root_key_dir: Option<PathBuf>,
    /// Metadata lifetimes.
    pub lifetimes: Lifetimes,
}

impl Default for KeysInit {
    fn default() -> Self {
        KeysInit {
            root_keys: 1,
            root_threshold: 1,
            online_keys: 1,
            online_threshold: 1,
            root_key_dir: None,
            lifetimes: Lifetimes::default(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    lifetimes: Lifetimes,
    root_key_dir: PathBuf,
}

fn tuf_dir(data: &Path) -> PathBuf {
    data.join("tuf")
}

/// `DATA/tuf/root.json`, the root a box pins.
pub fn root_path(data: &Path) -> PathBuf {
    tuf_dir(data).join("root.json")
}

/// `DATA/repo/.tuf`, the published metadata.
pub fn metadata_dir(data: &Path) -> PathBuf {
    data.join("repo").join(METADATA_DIR)
}

/// Whether the repository under `data` is signed.
pub fn enabled(data: &Path) -> bool {
    root_path(data).is_file()
}

fn err(context: &str, e: impl std::fmt::Display) -> PortalError {
    PortalError::BadRequest(format!("tuf: {context}: {e}"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PortalError {
    let path = path.to_path_buf();
    move |source| PortalError::Io { path, source }
}

/// Runs a `tough` future to completion from any context (a plain thread, a
/// runtime worker of the portal): on a thread of its own.
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(f)
        })
        .join()
        .expect("the signing thread")
    })
}

/// Creates Ed25519 keys `NAME-1.key`..`NAME-n.key` in `dir`.
fn new_keys(dir: &Path, name: &str, n: usize) -> Result<Vec<PathBuf>, PortalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let rng = SystemRandom::new();
    let mut out = Vec::new();
    let first = (1..)
        .find(|i| !dir.join(format!("{name}-{i}.key")).exists())
        .expect("a free name");
    for i in first..first + n {
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| err("key generation", e))?;
        let path = dir.join(format!("{name}-{i}.key"));
        write_private(&path, doc.as_ref())?;
        out.push(path);
    }
    Ok(out)
}

fn key_sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

fn keys_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".key"))
        })
        .collect();
    v.sort();
    v
}

fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Targets => "targets",
        RoleType::Snapshot => "snapshot",
        RoleType::Timestamp => "timestamp",
        _ => "other",
    }
}

fn settings(data: &Path) -> Result<Settings, PortalError> {
    let path = tuf_dir(data).join("settings.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| err("settings.json", e))
}

fn in_secs(s: i64) -> Result<jiff::Timestamp, PortalError> {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(s))
        .map_err(|e| err("expiry", e))
}

/// A root of `version` over the keys in `keys` (role → files).
fn build_root(
    version: u64,
    expires: jiff::Timestamp,
    keys: &BTreeMap<&'static str, (Vec<PathBuf>, u64)>,
) -> Result<Root, PortalError> {
    let mut root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: false,
        version: NonZeroU64::new(version).expect("a version from 1"),
        expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for role in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ] {
        let (files, threshold) = &keys[role_name(role)];
        let mut keyids = Vec::new();
        for file in files {
            let bytes = std::fs::read(file).map_err(io(file))?;
            let pair = parse_keypair(&bytes).map_err(|e| err("key", e))?;
            let key = pair.tuf_key();
            let id = key.key_id().map_err(|e| err("key id", e))?;
            root.keys.insert(id.clone(), key);
            keyids.push(id);
        }
        root.roles.insert(
            role,
            RoleKeys {
                keyids,
                threshold: NonZeroU64::new(*threshold).ok_or_else(|| err("threshold", "0"))?,
                _extra: HashMap::new(),
            },
        );
    }
    Ok(root)
}

/// Signs `root` with `signers`, plus the signatures of `cross` under the
/// previous root `previous` (a rotation), and writes it as the current
/// root and as `N.root.json`.
fn write_root(
    data: &Path,
    root: Root,
    signers: &[PathBuf],
    previous: Option<(&Root, &[PathBuf])>,
) -> Result<(), PortalError> {
    let version = root.version.get();
    let rng = SystemRandom::new();
    let signed = block_on(async {
        let own = SignedRole::new(
            root.clone(),
            &KeyHolder::Root(root.clone()),
            &key_sources(signers),
            &rng,
        )
        .await
        .map_err(|e| err("sign root", e))?;
        match previous {
            None => Ok(own),
            Some((old, old_keys)) => {
                let by_old = SignedRole::new(
                    root.clone(),
                    &KeyHolder::Root(old.clone()),
                    &key_sources(old_keys),
                    &rng,
                )
                .await
                .map_err(|e| err("cross-sign root", e))?;
                own.add_old_signatures(by_old.signed().signatures.clone())
                    .map_err(|e| err("cross-sign root", e))
            }
        }
    })?;
    let dir = metadata_dir(data);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_atomically(&dir.join(format!("{version}.root.json")), signed.buffer())?;
    write_atomically(&dir.join("root.json"), signed.buffer())?;
    write_atomically(&root_path(data), signed.buffer())?;
    Ok(())
}

/// `keys init`: keys for every role and the first root, in `data`.
/// Refuses to replace existing keys. Returns the root's path.
pub fn keys_init(data: &Path, opts: &KeysInit) -> Result<PathBuf, PortalError> {
    if enabled(data) {
        return Err(err(
            "keys init",
            format!("{} exists: the keys are made", root_path(data).display()),
        ));
    }
    let dir = tuf_dir(data);
    let root_key_dir = opts
        .root_key_dir
        .clone()
        .unwrap_or_else(|| dir.join("offline"));
    if opts.root_threshold as usize > opts.root_keys
        || opts.online_threshold as usize > opts.online_keys
    {
        return Err(err("keys init", "a threshold is above its number of keys"));
    }
    let mut keys = BTreeMap::new();
    keys.insert(
        "root",
        (
            new_keys(&root_key_dir, "root", opts.root_keys)?,
            opts.root_threshold,
        ),
    );
    for role in ONLINE {
        let name = role_name(role);
        keys.insert(
            name,
            (
                new_keys(&dir.join("keys"), name, opts.online_keys)?,
                opts.online_threshold,
            ),
        );
    }
    let settings = Settings {
        lifetimes: opts.lifetimes,
        root_key_dir: root_key_dir.clone(),
    };
    write_atomically(
        &dir.join("settings.json"),
        &serde_json::to_vec_pretty(&settings).expect("settings serialise"),
    )?;
    let root = build_root(1, in_secs(opts.lifetimes.root_s)?, &keys)?;
    write_root(data, root, &keys["root"].0, None)?;
    info!(root = %root_path(data).display(), root_keys = %root_key_dir.display(), "TUF keys created");
    Ok(root_path(data))
}

/// `keys rotate-root`: new keys for every role, a root of the next version
/// signed by the old and the new root keys, and the repository re-signed
/// with the new online keys. The old keys are moved to `retired/`.
pub fn rotate_root(data: &Path, files: &[(String, String, u64)]) -> Result<u64, PortalError> {
    let s = settings(data)?;
    let dir = tuf_dir(data);
    let old_bytes = std::fs::read(root_path(data)).map_err(io(&root_path(data)))?;
    let old: tough::schema::Signed<Root> =
        serde_json::from_slice(&old_bytes).map_err(|e| err("root.json", e))?;
    let old_root_keys = keys_in(&s.root_key_dir, "root-");
    let threshold = |role| {
        old.signed
            .roles
            .get(&role)
            .map(|r: &RoleKeys| (r.keyids.len(), r.threshold.get()))
            .unwrap_or((1, 1))
    };
    let retired = dir.join("retired");
    std::fs::create_dir_all(&retired).map_err(io(&retired))?;
    let mut keys = BTreeMap::new();
    let (n, t) = threshold(RoleType::Root);
    let new_root_dir = s.root_key_dir.join("new");
    let new_root_keys = new_keys(&new_root_dir, "root", n)?;
    keys.insert("root", (new_root_keys.clone(), t));
    for role in ONLINE {
        let name = role_name(role);
        for k in keys_in(&dir.join("keys"), &format!("{name}-")) {
            let to = retired.join(format!(
                "v{}-{}",
                old.signed.version,
                k.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::rename(&k, &to).map_err(io(&k))?;
        }
        let (n, t) = threshold(role);
        keys.insert(name, (new_keys(&dir.join("keys"), name, n)?, t));
    }
    let version = old.signed.version.get() + 1;
    let root = build_root(version, in_secs(s.lifetimes.root_s)?, &keys)?;
    write_root(
        data,
        root,
        &new_root_keys,
        Some((&old.signed, &old_root_keys)),
    )?;
    // The new root keys replace the old ones in the root key folder; the
    // old ones stay in that (offline) folder, never on the portal's disk.
    let retired_root = s.root_key_dir.join("retired");
    std::fs::create_dir_all(&retired_root).map_err(io(&retired_root))?;
    for k in &old_root_keys {
        let to = retired_root.join(format!(
            "v{}-{}",
            old.signed.version,
            k.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::rename(k, &to).map_err(io(k))?;
    }
    for k in &new_root_keys {
        let to = s.root_key_dir.join(k.file_name().unwrap_or_default());
        std::fs::rename(k, &to).map_err(io(k))?;
    }
    let _ = std::fs::remove_dir(&new_root_dir);
    sign(data, files)?;
    info!(version, "root rotated");
    Ok(version)
}

fn published_version(data: &Path, file: &str) -> u64 {
    std::fs::read(metadata_dir(data).join(file))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["signed"]["version"].as_u64())
        .unwrap_or(0)
}

/// Signs the repository's `files` (Maven path, SHA-256 hex, size) as the
/// targets, with new versions of targets, snapshot and timestamp, and
/// publishes them in that order. Nothing happens when the repository has
/// no keys (`keys init` was not run).
pub fn sign(data: &Path, files: &[(String, String, u64)]) -> Result<(), PortalError> {
    sign_with(data, files, None)
}

/// [`sign`] with the timestamp valid for `timestamp_s` seconds instead of
/// the configured lifetime (negative: already expired), for tests of
/// expiry.
pub fn sign_with(
    data: &Path,
    files: &[(String, String, u64)],
    timestamp_s: Option<i64>,
) -> Result<(), PortalError> {
    if !enabled(data) {
        return Ok(());
    }
    let s = settings(data)?;
    let dir = tuf_dir(data);
    let keys = key_sources(&keys_in(&dir.join("keys"), ""));
    let staging = dir.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let next = |file| NonZeroU64::new(published_version(data, file) + 1).expect("from 1");
    let (targets_v, snapshot_v, timestamp_v) = (
        next("targets.json"),
        next("snapshot.json"),
        next("timestamp.json"),
    );
    let long = in_secs(s.lifetimes.targets_s)?;
    let short = in_secs(timestamp_s.unwrap_or(s.lifetimes.timestamp_s))?;
    let root = root_path(data);
    block_on(async {
        let mut editor = RepositoryEditor::new(&root)
            .await
            .map_err(|e| err("editor", e))?;
        for (name, sha256, size) in files {
            let digest = hex::decode(sha256).map_err(|e| err("digest", e))?;
            let target = Target {
                length: *size,
                hashes: Hashes {
                    sha256: Decoded::<Hex>::from(digest),
                    _extra: HashMap::new(),
                },
                custom: HashMap::new(),
                _extra: HashMap::new(),
            };
            editor
                .add_target(name.as_str(), target)
                .map_err(|e| err(name, e))?;
        }
        editor
            .targets_version(targets_v)
            .map_err(|e| err("targets version", e))?
            .targets_expires(long)
            .map_err(|e| err("targets expiry", e))?
            .snapshot_version(snapshot_v)
            .snapshot_expires(long)
            .timestamp_version(timestamp_v)
            .timestamp_expires(short);
        let signed = editor.sign(&keys).await.map_err(|e| err("sign", e))?;
        signed.write(&staging).await.map_err(|e| err("write", e))
    })?;
    let out = metadata_dir(data);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    for file in ["targets.json", "snapshot.json", "timestamp.json"] {
        let from = staging.join(file);
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        write_atomically(&out.join(file), &bytes)?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    info!(
        targets = files.len(),
        version = targets_v.get(),
        "repository metadata signed"
    );
    Ok(())
}

/// Whether the published timestamp has less than half its lifetime left
/// (or is missing) and the settings ask for a refresh.
pub fn timestamp_due(data: &Path) -> bool {
    let Ok(s) = settings(data) else {
        return false;
    };
    if !s.lifetimes.refresh {
        return false;
    }
    let expires = std::fs::read(metadata_dir(data).join("timestamp.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["signed"]["expires"].as_str().map(str::to_owned))
        .and_then(|e| e.parse::<jiff::Timestamp>().ok());
    match expires {
        None => true,
        Some(e) => {
            let left = e.as_second() - jiff::Timestamp::now().as_second();
            left < s.lifetimes.timestamp_s / 2
        }
    }
}

/// When the root is due for renewal: in the last quarter of its lifetime.
/// A box refuses the whole repository once the root it trusts expired, so
/// it is renewed (or rotated) long before.
pub const ROOT_RENEW_FRACTION: i64 = 4;

/// The published root's expiry, if the repository is signed.
pub fn root_expires(data: &Path) -> Option<jiff::Timestamp> {
    let bytes = std::fs::read(root_path(data)).ok()?;
    let root: tough::schema::Signed<Root> = serde_json::from_slice(&bytes).ok()?;
    Some(root.signed.expires)
}

/// Whether the root has less than a [`ROOT_RENEW_FRACTION`] of its
/// lifetime left at `now` (or is past its expiry).
pub fn root_due_at(data: &Path, now: jiff::Timestamp) -> bool {
    let (Ok(s), Some(expires)) = (settings(data), root_expires(data)) else {
        return false;
    };
    expires.as_second() - now.as_second() < s.lifetimes.root_s / ROOT_RENEW_FRACTION
}

/// Whether the root keys are at hand (their folder is mounted): enough of
/// them for the root's threshold.
pub fn root_keys_present(data: &Path) -> bool {
    let (Ok(s), Ok(bytes)) = (settings(data), std::fs::read(root_path(data))) else {
        return false;
    };
    let Ok(root) = serde_json::from_slice::<tough::schema::Signed<Root>>(&bytes) else {
        return false;
    };
    let threshold = root
        .signed
        .roles
        .get(&RoleType::Root)
        .map_or(1, |r| r.threshold.get());
    keys_in(&s.root_key_dir, "root-").len() as u64 >= threshold
}

/// `keys renew-root`, and what the running portal does in the root's last
/// quarter when the root keys are at hand: the next version of the same
/// root (same keys and thresholds) with a new lifetime, signed by the root
/// keys, and the repository re-signed so that a box looks for it (a box
/// looks for a newer root whenever the timestamp changed). Returns the new
/// version.
pub fn renew_root(data: &Path, files: &[(String, String, u64)]) -> Result<u64, PortalError> {
    let s = settings(data)?;
    let bytes = std::fs::read(root_path(data)).map_err(io(&root_path(data)))?;
    let old: tough::schema::Signed<Root> =
        serde_json::from_slice(&bytes).map_err(|e| err("root.json", e))?;
    let root_keys = keys_in(&s.root_key_dir, "root-");
    if root_keys.is_empty() {
        return Err(PortalError::BadRequest(format!(
            "tuf: no root keys in {}: mount the root key folder to renew the root",
            s.root_key_dir.display()
        )));
    }
    let mut root = old.signed.clone();
    let version = old.signed.version.get() + 1;
    root.version = NonZeroU64::new(version).expect("from 2");
    root.expires = in_secs(s.lifetimes.root_s)?;
    let expires = root.expires;
    // The same keys sign it under the old root and the new: one set of
    // signatures meets both thresholds.
    write_root(data, root, &root_keys, None)?;
    sign(data, files)?;
    info!(version, %expires, "root renewed");
    Ok(version)
}

/// How often the running portal checks [`timestamp_due`]: a tenth of the
/// timestamp lifetime, between a second and a minute.
pub fn refresh_interval(data: &Path) -> std::time::Duration {
    let secs = settings(data)
        .map(|s| s.lifetimes.timestamp_s / 10)
        .unwrap_or(60)
        .clamp(1, 60);
    std::time::Duration::from_secs(secs as u64)
}

/// Whether `rel` (a repository path) is a target: artifacts, not the
/// `.sha256` sidecars nor the metadata itself.
pub fn is_target(rel: &str) -> bool {
    !rel.ends_with(".sha256") && !rel.starts_with(&format!("{METADATA_DIR}/"))
}

/// The repository of the data folder `data` as a client that trusts its
/// current root loads it (every signature, version and hash checked).
#[cfg(test)]
pub(crate) fn load(data: &Path) -> tough::Repository {
    tests::load_trusting(data, &std::fs::read(root_path(data)).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository as a client that pinned `root` sees it.
    pub(super) fn load_trusting(data: &Path, root: &[u8]) -> tough::Repository {
        let meta = url::Url::from_directory_path(metadata_dir(data)).unwrap();
        let targets = url::Url::from_directory_path(data.join("repo")).unwrap();
        block_on(async {
            tough::RepositoryLoader::new(&root, meta, targets)
                .transport(tough::FilesystemTransport)
                .load()
                .await
                .unwrap()
        })
    }

    /// The published `N.root.json`.
    fn published_root(data: &Path, version: u64) -> tough::schema::Signed<Root> {
        let file = metadata_dir(data).join(format!("{version}.root.json"));
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
    }

    #[test]
    fn keys_init_makes_a_root_with_the_thresholds_and_no_consistent_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let offline = dir.path().join("usb-stick");
        let opts = KeysInit {
            root_keys: 3,
            root_threshold: 2,
            online_keys: 2,
            online_threshold: 2,
            root_key_dir: Some(offline.clone()),
            ..KeysInit::default()
        };
        keys_init(dir.path(), &opts).unwrap();
        assert_eq!(keys_in(&offline, "root-").len(), 3, "root keys offline");
        assert!(keys_in(&dir.path().join("tuf/keys"), "root-").is_empty());
        let root: tough::schema::Signed<Root> =
            serde_json::from_slice(&std::fs::read(root_path(dir.path())).unwrap()).unwrap();
        assert!(!root.signed.consistent_snapshot);
        let roles = &root.signed.roles;
        assert_eq!(roles[&RoleType::Root].threshold.get(), 2);
        assert_eq!(roles[&RoleType::Root].keyids.len(), 3);
        assert_eq!(roles[&RoleType::Targets].threshold.get(), 2);
        assert_eq!(roles[&RoleType::Timestamp].keyids.len(), 2);
        assert!(keys_init(dir.path(), &opts).is_err(), "never replaces keys");
    }

    #[test]
    fn every_key_file_is_owner_only_from_its_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        // A leftover temporary file readable by all is not written into.
        let stale = keys.join("targets-1.key.tmp");
        std::fs::write(&stale, "stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let made = new_keys(&keys, "targets", 2).unwrap();
        assert_eq!(made.len(), 2);
        for key in made {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        keys_init(dir.path(), &KeysInit::default()).unwrap();
        for sub in ["tuf/keys", "tuf/offline"] {
            for key in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let key = key.unwrap().path();
                let mode = std::fs::metadata(&key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn every_sign_is_a_complete_publication_that_tough_loads_with_maven_paths_as_targets() {
        let dir = tempfile::tempdir().unwrap();
        keys_init(dir.path(), &KeysInit::default()).unwrap();
        let jar = "com/example/a/1.0/a-1.0.jar";
        let files = vec![(jar.to_owned(), hex::encode([7u8; 32]), 1234u64)];
        sign(dir.path(), &files).unwrap();
        sign(dir.path(), &files).unwrap();
        let repo = load(dir.path());
        let name = tough::TargetName::new(jar).unwrap();
        let t = repo.targets().signed.targets.get(&name).expect("a target");
        assert_eq!(t.length, 1234);
        assert_eq!(repo.timestamp().signed.version.get(), 2);
        // No versioned metadata: consistent_snapshot is off; nothing is
        // left in the staging folder.
        let names: Vec<String> = std::fs::read_dir(metadata_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains(".snapshot.") || n.contains(".targets.")),
            "{names:?}"
        );
        assert!(!dir.path().join("tuf/staging").exists());
        assert!(!is_target(".tuf/timestamp.json"));
        assert!(!is_target("com/example/a/1.0/a-1.0.jar.sha256"));
    }

    #[test]
    fn a_rotated_root_is_signed_by_the_old_and_the_new_root_keys() {
        let dir = tempfile::tempdir().unwrap();
        keys_init(dir.path(), &KeysInit::default()).unwrap();
        sign(dir.path(), &[]).unwrap();
        let v1 = std::fs::read(metadata_dir(dir.path()).join("1.root.json")).unwrap();
        assert_eq!(rotate_root(dir.path(), &[]).unwrap(), 2);
        let v2 = published_root(dir.path(), 2);
        assert_eq!(v2.signatures.len(), 2, "old and new root key");
        // A client that trusts root 1 reaches root 2 and the new keys.
        let repo = load_trusting(dir.path(), &v1);
        assert_eq!(repo.root().signed.version.get(), 2);
    }

    #[test]
    fn the_timestamp_is_due_for_a_refresh_at_half_its_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        keys_init(dir.path(), &KeysInit::default()).unwrap();
        sign(dir.path(), &[]).unwrap();
        assert!(!timestamp_due(dir.path()));
        sign_with(dir.path(), &[], Some(100)).unwrap();
        assert!(timestamp_due(dir.path()), "a day's lifetime, 100 s left");
    }

    #[test]
    fn a_renewed_root_keeps_its_keys_and_a_box_that_trusts_the_old_one_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let offline = dir.path().join("usb-stick");
        let opts = KeysInit {
            root_key_dir: Some(offline.clone()),
            ..KeysInit::default()
        };
        keys_init(dir.path(), &opts).unwrap();
        sign(dir.path(), &[]).unwrap();
        let v1 = std::fs::read(metadata_dir(dir.path()).join("1.root.json")).unwrap();
        let expires = root_expires(dir.path()).unwrap();
        let now = jiff::Timestamp::now();
        assert!(!root_due_at(dir.path(), now), "a year left");
        let late = now
            .checked_add(jiff::SignedDuration::from_hours(300 * 24))
            .unwrap();
        assert!(root_due_at(dir.path(), late), "65 days left of 365");
        assert!(root_keys_present(dir.path()));

        assert_eq!(renew_root(dir.path(), &[]).unwrap(), 2);
        assert!(root_expires(dir.path()).unwrap() >= expires);
        assert_eq!(
            published_root(dir.path(), 2).signed.keys,
            published_root(dir.path(), 1).signed.keys,
            "the same keys"
        );
        let repo = load_trusting(dir.path(), &v1);
        assert_eq!(repo.root().signed.version.get(), 2);
        assert_eq!(repo.timestamp().signed.version.get(), 2, "re-signed");

        // The root keys' folder unmounted: nothing to renew with.
        std::fs::rename(&offline, dir.path().join("elsewhere")).unwrap();
        assert!(!root_keys_present(dir.path()));
        let e = renew_root(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("usb-stick"), "{e}");
    }
}
