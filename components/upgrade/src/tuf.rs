//! Artifact authenticity with The Update Framework, verified by `tough`.
//!
//! With `trust_root` set, every artifact the Downloader fetches must be a
//! TUF target of the repository: its length and SHA-256 come from targets
//! metadata that `tough` verified from the root pinned at provisioning
//! (signatures, thresholds, versions, expiry, root rotation). The portal's
//! digests and the `.sha256` files are ignored then. No part of TUF is
//! written here; this module only gives `tough` what it needs from the box:
//!
//! - a [`Transport`] on the box's own HTTP client (its connect and read
//!   timeouts, its redirect rules) for the metadata, which is small;
//! - a store in the home (`state/tuf/`) that survives a kill: `tough`
//!   writes its datastore in place without rename or fsync, so it works on
//!   a scratch copy and the files it accepted are promoted one by one with
//!   write-rename-fsync, the timestamp last;
//! - a root chain that is trusted only through verification: every
//!   refresh starts `tough` from the pinned root; each root accepted since
//!   (the pinned one and every rotation) is kept as `N.root.json` and
//!   given to `tough` as the answer to its `N.root.json` request, so it is
//!   verified against its predecessor exactly as the repository's would
//!   be (a stored root that does not verify is removed with its successors
//!   and the chain fetched again); `root.json` is a copy of the newest,
//!   never read as trusted; a pinned root that differs from the chain's
//!   root of its version (re-provisioned) starts a new store, the old one
//!   moved aside;
//! - a no-change synchronisation that moves `timestamp.json` only: when it
//!   is byte-identical to the trusted one, the next root is not looked for
//!   and snapshot and targets metadata come from the store (tough still
//!   verifies all of them, expiry included).
//!
//! The targets themselves (the large artifacts) do not go through
//! `tough::Repository::read_target`, which hands out bytes before its final
//! hash check and has no resume: the fetch engine downloads them to a
//! `.partial` with the verified length as the bound and the verified
//! SHA-256 as the expected digest, and the Downloader promotes the file only
//! after the whole stream verified.
//!
//! Any conforming repository works, also with `consistent_snapshot = true`
//! in its root (python-tuf's default): `tough` then fetches the versioned
//! `N.snapshot.json` and `N.targets.json`, which the store keeps under the
//! role names, and the box fetches each target at
//! `dir/{sha256}.basename` ([`download_path`], TUF 5.7.3), computed from
//! the verified root and the verified hash.
//!
//! Delegated targets roles (TUF 5.6.7) are loaded by `tough`; their
//! metadata is kept in the store's `delegated/` folder like the top-level
//! roles', so a no-change synchronisation moves the timestamp only. Each
//! target is resolved by TUF's delegation search
//! (`tough::schema::Targets::find_target`: the top-level targets first,
//! then only roles whose paths match the name, in order, stopping at a
//! terminating one). `tough`'s `all_targets` chains every role's targets
//! in an order where a later role wins, so it is used for the names only:
//! taken as is, a role lower in the delegation order, or one past a
//! terminating delegation, whose paths also cover a name would replace the
//! hash the search gives it (even the top-level role's). (`tough` refuses
//! a repository in which a role lists a name outside its own paths.)
//!
//! Known difference: in `tough` a path pattern's `*` also matches `/`
//! (globset), in the specification it does not. A delegation written for
//! the specification's meaning (`com/example/*` for the files directly in
//! that folder) therefore gives the role more names in `tough`; patterns
//! with one `*` per folder level (`com/example/*/*/*`) mean the same to
//! both.
//!
//! Clock: `tough` refuses to run when the clock is earlier than the last
//! time it saw (`latest_known_time.json`), and this module refuses a clock
//! earlier than [`CLOCK_FLOOR`] (a box without a real-time clock boots in
//! 1970). Either way the synchronisation ends with a trust error and the
//! installed set keeps running; the next synchronisation after the clock is
//! set (NTP) proceeds. Expired metadata is therefore never accepted because
//! the clock is behind, and the box is not bricked.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use banalytics_home::Sha256;
use futures_util::StreamExt;
use tough::{
    async_trait, Bytes, ExpirationEnforcement, RepositoryLoader, Transport, TransportError,
    TransportErrorKind, TransportStream,
};
use tracing::{info, warn};
use url::Url;

use crate::{
    error::{error_chain, io_at, UpgradeError},
    fetch::FetchConfig,
    format,
    layout::{sync_dir, write_atomic, Layout},
};

/// The folder of the repository's trusted TUF metadata, under `state/`.
pub const STORE_DIR: &str = "tuf";

/// The metadata folder relative to `repository_url` when
/// `trust_metadata_url` is not set. A Maven group never starts with a dot,
/// so no artifact path can collide with it.
pub const DEFAULT_METADATA_DIR: &str = ".tuf";

/// The earliest clock accepted for verifying metadata: the day this rule
/// was written. A box whose clock is before it (no real-time clock, 1970)
/// does not verify metadata at all rather than call expired metadata fresh.
pub const CLOCK_FLOOR: &str = "2026-11-01T00:00:00Z";

/// Largest metadata file fetched when no length is known (root, timestamp):
/// the portal's files are a few kilobytes; `tough` bounds snapshot and
/// targets by the lengths signed in timestamp and snapshot.
pub const MAX_METADATA_BYTES: u64 = 4 * 1024 * 1024;

/// The trusted metadata files, in the order they are promoted to the store:
/// the timestamp last, so a kill mid-way leaves a store whose timestamp
/// still describes the snapshot and targets beside it, or an older one.
const PROMOTION_ORDER: [&str; 5] = [
    "latest_known_time.json",
    "root.json",
    "targets.json",
    "snapshot.json",
    "timestamp.json",
];

/// Where the repository's TUF metadata is and which root it must chain to.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The pinned root (`trust_root`, resolved against the home).
    pub root: PathBuf,
    /// The metadata folder URL, ending in `/`.
    pub metadata_url: Url,
    /// The targets base URL (`repository_url`), ending in `/`.
    pub targets_url: Url,
}

impl Trust {
    /// The trust settings for `repository_url`: metadata at
    /// `metadata_url`, or `{repository_url}/.tuf/`.
    pub fn new(
        root: PathBuf,
        repository_url: &str,
        metadata_url: Option<&str>,
    ) -> Result<Trust, TrustUrlError> {
        let base = format!("{}/", repository_url.trim_end_matches('/'));
        let targets_url = Url::parse(&base).map_err(|source| TrustUrlError {
            key: "repository_url",
            url: base.clone(),
            source,
        })?;
        let metadata = match metadata_url {
            Some(m) => format!("{}/", m.trim_end_matches('/')),
            None => format!("{base}{DEFAULT_METADATA_DIR}/"),
        };
        let metadata_url = Url::parse(&metadata).map_err(|source| TrustUrlError {
            key: "trust_metadata_url",
            url: metadata.clone(),
            source,
        })?;
        Ok(Trust {
            root,
            metadata_url,
            targets_url,
        })
    }
}

/// A repository or metadata URL that is not one ([`Trust::new`]).
#[derive(Debug, thiserror::Error)]
#[error("{key} = {url:?}: {source}")]
pub struct TrustUrlError {
    /// The config key.
    pub key: &'static str,
    /// The URL, ending in `/`.
    pub url: String,
    /// The URL parser's reason.
    pub source: url::ParseError,
}

/// One target's verified facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTarget {
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Length in bytes.
    pub length: u64,
    /// Where the repository stores it, relative to the targets URL
    /// ([`download_path`]): the target name, or with consistent snapshots
    /// the name with the SHA-256 before its basename.
    pub path: String,
}

/// Where a target named `name` with SHA-256 `sha256` is fetched from,
/// relative to the targets URL (TUF 5.7.3). Without consistent snapshots
/// it is the name; with them, the hash prefixes the file name and not the
/// whole path: `com/a/1.0/a-1.0.jar` is at `com/a/1.0/{sha256}.a-1.0.jar`,
/// where python-tuf stores it and its client fetches it. (`tough`'s own
/// `read_target` puts the hash before the whole name, `{sha256}.com/a/...`,
/// which is not where other implementations put it; the box does not use
/// it.) Of the hashes the
/// targets metadata may list, SHA-256 is the one `tough` verifies and the
/// one used here.
pub fn download_path(name: &str, sha256: &Sha256, consistent_snapshot: bool) -> String {
    if !consistent_snapshot {
        return name.to_owned();
    }
    match name.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/{sha256}.{file}"),
        None => format!("{sha256}.{name}"),
    }
}

/// The targets of verified, unexpired targets metadata, by target name
/// (the Maven path relative to `repository_url`).
#[derive(Debug, Clone, Default)]
pub struct TrustedTargets {
    targets: HashMap<String, TrustedTarget>,
    /// The targets metadata version they come from.
    pub version: u64,
}

impl TrustedTargets {
    /// The target named `path`, if the signed metadata lists it.
    pub fn get(&self, path: &str) -> Option<&TrustedTarget> {
        self.targets.get(path)
    }

    /// How many targets are listed.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// The clock against which metadata expiry is checked; a parameter so that
/// tests can set the box's clock to 1970 without changing the machine's.
pub type Clock = fn() -> jiff::Timestamp;

/// Updates the trusted metadata from the repository and returns its
/// targets: TUF's client workflow by `tough`, on the box's client, with the
/// store in `layout`'s `state/tuf/`.
#[tracing::instrument(skip_all, fields(metadata = %trust.metadata_url))]
pub async fn refresh(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    layout: &Layout,
    trust: &Trust,
) -> Result<TrustedTargets, UpgradeError> {
    refresh_at(client, cfg, layout, trust, jiff::Timestamp::now).await
}

/// [`refresh`] against `clock` for the floor check (tough reads the system
/// clock itself).
pub async fn refresh_at(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    layout: &Layout,
    trust: &Trust,
    clock: Clock,
) -> Result<TrustedTargets, UpgradeError> {
    let now = clock();
    let floor: jiff::Timestamp = CLOCK_FLOOR.parse().expect("CLOCK_FLOOR is RFC 3339");
    if now < floor {
        return Err(UpgradeError::Trust {
            reason: format!(
                "the clock says {now}, before {floor}: metadata expiry cannot be checked; the installed set keeps running until the clock is set"
            ),
        });
    }
    let store = layout.state().join(STORE_DIR);
    // `tough` shapes the files; the store's format is its marker
    // (`banalytics_home::format`). One of a newer format stays as it is,
    // and nothing is fetched without it.
    if let Some(newer) = format::newer_store(&store, format::TUF_STORE) {
        return Err(UpgradeError::Trust {
            reason: format!("{newer}; nothing is fetched until a core that knows it runs"),
        });
    }
    let pinned = std::fs::read(&trust.root).map_err(|source| UpgradeError::Trust {
        reason: format!("trust_root {}: {source}", trust.root.display()),
    })?;
    start_again_if_reprovisioned(&store, &pinned)?;
    std::fs::create_dir_all(&store).map_err(io_at(&store))?;
    format::mark_store(&store, format::TUF_STORE)
        .map_err(|e| io_at(&store)(std::io::Error::other(e)))?;
    // The chain always starts at the pinned root: the store's roots are
    // only answers to tough's `N.root.json` requests, verified as the
    // repository's would be (`HomeTransport::fetch`).
    match load(client, cfg, &store, trust, &pinned, true).await {
        Ok(t) => Ok(t),
        Err(LoadError::Verify {
            reason,
            used_store: true,
            bad_root,
        }) => {
            if let Some(version) = bad_root {
                // A stored root that does not verify (a disk fault, or a
                // file someone put there): it and the roots after it go,
                // and the chain is fetched again from the repository.
                let removed = discard_roots_from(&store, version);
                warn!(%reason, version, ?removed, "a stored root does not verify against its predecessor: discarded");
            }
            // The store's own metadata was used and did not verify (a
            // store cut short by a power loss): once more, all from the
            // repository.
            warn!(%reason, "metadata from the store did not verify; fetching all from the repository");
            load(client, cfg, &store, trust, &pinned, false)
                .await
                .map_err(LoadError::into_upgrade)
        }
        Err(e) => Err(e.into_upgrade()),
    }
}

/// The store's file of root version `version` (the rotation chain).
fn chain_file(store: &Path, version: u64) -> PathBuf {
    store.join(format!("{version}.root.json"))
}

/// A pinned root (`trust_root`) whose version the store's chain holds with
/// other content was re-provisioned (new keys at an equal or lower
/// version): the store, verified from the old root, is moved aside to
/// `tuf.replaced-{unix seconds}` and a new one starts.
fn start_again_if_reprovisioned(store: &Path, pinned: &[u8]) -> Result<(), UpgradeError> {
    let version = version_of(pinned);
    let Ok(stored) = std::fs::read(chain_file(store, version)) else {
        return Ok(());
    };
    let same = |a: &[u8], b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(a).ok()
            == serde_json::from_slice::<serde_json::Value>(b).ok()
    };
    if same(&stored, pinned) {
        return Ok(());
    }
    let now = jiff::Timestamp::now().as_second();
    let aside = store.with_file_name(format!("{STORE_DIR}.replaced-{now}"));
    std::fs::rename(store, &aside).map_err(io_at(store))?;
    if let Some(parent) = store.parent() {
        sync_dir(parent).map_err(io_at(parent))?;
    }
    warn!(
        version,
        aside = %aside.display(),
        "trust_root differs from the root of the same version the store was verified from (re-provisioned): a new store; the old one is moved aside"
    );
    Ok(())
}

/// Removes the store's chain files of version `from` and later; their
/// versions.
fn discard_roots_from(store: &Path, from: u64) -> Vec<u64> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(store) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".root.json"))
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        if version >= from && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(version);
        }
    }
    removed.sort_unstable();
    let _ = sync_dir(store);
    removed
}

/// Whether tough refused a root it was given while walking the chain
/// (parse, signatures of the old or the new root's threshold, version).
fn root_refused(e: &tough::error::Error) -> bool {
    use tough::{error::Error as E, schema::RoleType};
    matches!(
        e,
        E::VerifyMetadata {
            role: RoleType::Root,
            ..
        } | E::OlderMetadata {
            role: RoleType::Root,
            ..
        } | E::ParseMetadata {
            role: RoleType::Root,
            ..
        }
    )
}

enum LoadError {
    Verify {
        reason: String,
        /// Whether metadata from the store stood in for the repository's.
        used_store: bool,
        /// The version of a stored root tough refused.
        bad_root: Option<u64>,
    },
    Io(UpgradeError),
}

impl LoadError {
    fn verify(reason: String) -> LoadError {
        LoadError::Verify {
            reason,
            used_store: false,
            bad_root: None,
        }
    }

    fn into_upgrade(self) -> UpgradeError {
        match self {
            LoadError::Verify { reason, .. } => UpgradeError::Trust { reason },
            LoadError::Io(e) => e,
        }
    }
}

async fn load(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    store: &Path,
    trust: &Trust,
    pinned: &[u8],
    use_store: bool,
) -> Result<TrustedTargets, LoadError> {
    let scratch = scratch_store(store).map_err(LoadError::Io)?;
    let transport = HomeTransport::new(
        client.clone(),
        cfg,
        store.to_path_buf(),
        use_store,
        pinned.to_vec(),
    );
    // The timestamp first: whether it changed decides what else moves.
    let timestamp_url = trust
        .metadata_url
        .join("timestamp.json")
        .map_err(|e| LoadError::verify(e.to_string()))?;
    transport
        .prefetch(timestamp_url)
        .await
        .map_err(|e| LoadError::verify(format!("timestamp.json: {e}")))?;
    let loaded = RepositoryLoader::new(
        &pinned,
        trust.metadata_url.clone(),
        trust.targets_url.clone(),
    )
    .transport(transport.clone())
    .datastore(&scratch)
    .expiration_enforcement(ExpirationEnforcement::Safe)
    .load()
    .await;
    let used_store = transport.used_store();
    let repo = match loaded {
        Ok(repo) => repo,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(LoadError::Verify {
                reason: error_chain(&e),
                used_store,
                bad_root: transport.stored_root_asked().filter(|_| root_refused(&e)),
            });
        }
    };
    promote(store, pinned, &transport, &scratch).map_err(LoadError::Io)?;
    let _ = std::fs::remove_dir_all(&scratch);
    let targets = trusted_targets(&repo);
    let version = repo.targets().signed.version.get();
    info!(
        targets_version = version,
        targets = targets.len(),
        consistent_snapshot = repo.root().signed.consistent_snapshot,
        from_store = used_store,
        "repository metadata verified"
    );
    Ok(TrustedTargets { targets, version })
}

/// A fresh scratch datastore for `tough` beside `store`, with copies of
/// the stored metadata but the root (tough never reads a root from its
/// datastore: it is given one).
fn scratch_store(store: &Path) -> Result<PathBuf, UpgradeError> {
    let scratch = store.with_file_name(format!("{STORE_DIR}.scratch"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(io_at(&scratch))?;
    for name in PROMOTION_ORDER.into_iter().filter(|n| *n != "root.json") {
        match std::fs::copy(store.join(name), scratch.join(name)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(store.join(name))(e)),
        }
    }
    Ok(scratch)
}

/// Promotes what tough accepted into `store`: the bytes as the repository
/// signed them (tough's datastore holds re-serialised copies whose hashes
/// differ).
fn promote(
    store: &Path,
    pinned: &[u8],
    transport: &HomeTransport,
    scratch: &Path,
) -> Result<(), UpgradeError> {
    let fetched = transport.accepted();
    let trusted_root = promote_chain(store, pinned, &fetched)?;
    promote_delegated(store, &fetched)?;
    for name in PROMOTION_ORDER {
        let bytes = match fetched.get(name) {
            Some(b) => b.clone(),
            None if name == "root.json" => trusted_root.clone(),
            None => match std::fs::read(scratch.join(name)) {
                Ok(b) => b,
                Err(_) => continue,
            },
        };
        write_atomic(&store.join(name), &bytes)
            .map_err(|e| io_at(store.join(name))(std::io::Error::other(e)))?;
    }
    sync_dir(store).map_err(io_at(store))
}

/// Every target of the verified repository with its facts, as the
/// delegation search finds them (see the module's doc).
fn trusted_targets(repo: &tough::Repository) -> HashMap<String, TrustedTarget> {
    // A fact of the verified root, like the targets' hashes.
    let consistent_snapshot = repo.root().signed.consistent_snapshot;
    let top = &repo.targets().signed;
    let mut targets = HashMap::new();
    for (name, _) in repo.all_targets() {
        let Ok(t) = top.find_target(name, false) else {
            warn!(
                target = name.raw(),
                "listed by a delegated role that TUF's delegation search does not reach for it (a terminating delegation ends it first): not a target"
            );
            continue;
        };
        let Ok(bytes) = <[u8; 32]>::try_from(&t.hashes.sha256[..]) else {
            warn!(
                target = name.raw(),
                "its sha256 in the targets metadata is not 32 bytes: not a target"
            );
            continue;
        };
        let sha256 = Sha256::from_bytes(bytes);
        let path = download_path(name.raw(), &sha256, consistent_snapshot);
        targets.insert(
            name.raw().to_owned(),
            TrustedTarget {
                sha256,
                length: t.length,
                path,
            },
        );
    }
    targets
}

fn version_of(metadata: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(metadata)
        .ok()
        .and_then(|v| v["signed"]["version"].as_u64())
        .unwrap_or(0)
}

/// Writes the chain of roots tough accepted to the store, each as
/// `N.root.json` with write-rename-fsync, the pinned root included (so
/// that a re-provisioned one is recognised); returns the newest root, the
/// one this run trusted, which the store also keeps as `root.json` (never
/// read as trusted: it only tells the next run that its chain is whole).
fn promote_chain(
    store: &Path,
    pinned: &[u8],
    accepted: &HashMap<String, Vec<u8>>,
) -> Result<Vec<u8>, UpgradeError> {
    let mut newest = (version_of(pinned), pinned);
    let roots = accepted
        .iter()
        .filter(|(k, _)| k.ends_with(".root.json"))
        .map(|(_, b)| (version_of(b), &b[..]));
    for (version, bytes) in std::iter::once(newest).chain(roots) {
        let path = chain_file(store, version);
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            write_atomic(&path, bytes).map_err(|e| io_at(&path)(std::io::Error::other(e)))?;
        }
        if version > newest.0 {
            newest = (version, bytes);
        }
    }
    let stored = std::fs::read(store.join("root.json")).ok();
    let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    if let Some(stored) = stored.filter(|s| value(s) != value(newest.1)) {
        warn!(
            stored_version = version_of(&stored),
            trusted_version = newest.0,
            "state/tuf/root.json was not the root verified from trust_root: replaced (a stored root is never trusted by itself)"
        );
    }
    Ok(newest.1.to_vec())
}

/// The store's folder of delegated targets roles' metadata.
const DELEGATED_DIR: &str = "delegated";

/// The store's name, relative to the store, of the metadata file `file`
/// of the repository; `None` for a name the store does not keep (it is
/// fetched every time). With consistent snapshots `tough` asks for
/// `{version}.snapshot.json`, `{version}.targets.json` and
/// `{version}.{role}.json`, which the store keeps (like `tough`'s own
/// datastore) without the version. Versioned roots (`{version}.root.json`,
/// the rotation chain) keep their names. A delegated role's file goes to
/// `delegated/`, so that no role name can stand for a top-level file.
fn store_key(file: &str) -> Option<String> {
    let unversioned = match file.split_once('.') {
        Some((version, rest))
            if !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit())
                && rest != "root.json" =>
        {
            rest
        }
        _ => file,
    };
    let safe = !unversioned.starts_with('.')
        && unversioned
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b));
    match unversioned {
        _ if !safe || !unversioned.ends_with(".json") => None,
        "timestamp.json" | "snapshot.json" | "targets.json" => Some(unversioned.to_owned()),
        _ if unversioned.ends_with(".root.json") => Some(unversioned.to_owned()),
        role => Some(format!("{DELEGATED_DIR}/{role}")),
    }
}

/// Writes the delegated roles' metadata `tough` accepted to the store's
/// `delegated/` folder, each with write-rename-fsync, and removes the
/// files of roles no longer loaded. Before the snapshot and the timestamp:
/// the store's snapshot never names a delegated file the store lacks.
fn promote_delegated(
    store: &Path,
    accepted: &HashMap<String, Vec<u8>>,
) -> Result<(), UpgradeError> {
    let dir = store.join(DELEGATED_DIR);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let prefix = format!("{DELEGATED_DIR}/");
    for (key, bytes) in accepted {
        if key.starts_with(&prefix) {
            let path = store.join(key);
            write_atomic(&path, bytes).map_err(|e| io_at(&path)(std::io::Error::other(e)))?;
        }
    }
    for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
        let entry = entry.map_err(io_at(&dir))?;
        let key = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if !accepted.contains_key(&key) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    sync_dir(&dir).map_err(io_at(&dir))
}

/// `tough`'s transport on the box's HTTP client, with a memory of what it
/// fetched this run and the store to answer from when nothing changed.
#[derive(Debug, Clone)]
struct HomeTransport {
    client: reqwest::Client,
    wait: Duration,
    store: PathBuf,
    use_store: bool,
    /// The store's timestamp and snapshot, read once: what this run's
    /// metadata is compared with.
    trusted: Arc<TrustedFiles>,
    state: Arc<Mutex<Fetched>>,
}

/// The store's timestamp (its bytes) and the `signed.meta` of its
/// timestamp and snapshot, by file name; empty without the store.
#[derive(Debug, Default)]
struct TrustedFiles {
    timestamp: Option<Vec<u8>>,
    meta: HashMap<&'static str, serde_json::Value>,
    /// The store's `root.json`: the newest root of the last refresh that
    /// succeeded (compared, never trusted).
    root: Option<Vec<u8>>,
}

/// `signed.meta` of a metadata file's bytes.
fn meta_of(bytes: &[u8]) -> Option<serde_json::Value> {
    let v = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
    Some(v["signed"]["meta"].clone())
}

impl TrustedFiles {
    fn read(store: &Path) -> TrustedFiles {
        let mut trusted = TrustedFiles {
            root: std::fs::read(store.join("root.json")).ok(),
            ..TrustedFiles::default()
        };
        for name in ["timestamp.json", "snapshot.json"] {
            let Ok(bytes) = std::fs::read(store.join(name)) else {
                continue;
            };
            if let Some(meta) = meta_of(&bytes) {
                trusted.meta.insert(name, meta);
            }
            if name == "timestamp.json" {
                trusted.timestamp = Some(bytes);
            }
        }
        trusted
    }
}

#[derive(Debug, Default)]
struct Fetched {
    /// Metadata bytes of this run, by file name.
    files: HashMap<String, Vec<u8>>,
    /// The repository's timestamp equals the trusted one.
    timestamp_unchanged: bool,
    /// Whether a file came from the store.
    used_store: bool,
    /// The root tough holds now: the pinned one, then each it was given.
    last_root: Vec<u8>,
    /// The version of the last root asked for, when the store answered it.
    stored_root_asked: Option<u64>,
}

impl HomeTransport {
    fn new(
        client: reqwest::Client,
        cfg: &FetchConfig,
        store: PathBuf,
        use_store: bool,
        pinned: Vec<u8>,
    ) -> Self {
        HomeTransport {
            client,
            // Metadata is small: the connect and read bounds of the fetch
            // engine bound a whole file.
            wait: cfg.connect_timeout + cfg.read_timeout,
            trusted: Arc::new(if use_store {
                TrustedFiles::read(&store)
            } else {
                TrustedFiles::default()
            }),
            store,
            use_store,
            state: Arc::new(Mutex::new(Fetched {
                last_root: pinned,
                ..Fetched::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.state.lock().expect("transport state lock")
    }

    async fn prefetch(&self, url: Url) -> Result<(), TransportError> {
        let bytes = self.get(&url).await?;
        let mut state = self.lock();
        state.timestamp_unchanged = self.trusted.timestamp.as_deref() == Some(&bytes[..]);
        state.files.insert("timestamp.json".into(), bytes);
        Ok(())
    }

    fn used_store(&self) -> bool {
        self.lock().used_store
    }

    fn stored_root_asked(&self) -> Option<u64> {
        self.lock().stored_root_asked
    }

    fn accepted(&self) -> HashMap<String, Vec<u8>> {
        self.lock().files.clone()
    }

    /// The store's `key` ([`store_key`]) if the metadata that describes it
    /// this run says the same of it as the trusted metadata does.
    fn stored_if_unchanged(&self, key: &str) -> Option<Vec<u8>> {
        if !self.use_store {
            return None;
        }
        // The snapshot lists the targets roles, top-level and delegated,
        // under their role names.
        let (parent, name) = match key {
            "snapshot.json" => ("timestamp.json", key),
            "targets.json" => ("snapshot.json", key),
            _ => (
                "snapshot.json",
                key.strip_prefix(&format!("{DELEGATED_DIR}/"))?,
            ),
        };
        let trusted = self.trusted.meta.get(parent)?.get(name)?;
        if trusted.is_null() {
            return None;
        }
        let now = meta_of(self.lock().files.get(parent)?)?;
        if now.get(name) != Some(trusted) {
            return None;
        }
        std::fs::read(self.store.join(key)).ok()
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, TransportError> {
        let u = url.as_str();
        let other = |e: String| TransportError::new_with_cause(TransportErrorKind::Other, u, e);
        // Metadata is small and signed, but its URL is the repository's:
        // redirects stay on its host, like those of a `.sha256` file.
        let chain = crate::fetch::send(u, crate::fetch::DigestSource::None, |hop| {
            self.client.get(hop)
        });
        let response = tokio::time::timeout(self.wait, chain)
            .await
            .map_err(|_| other(format!("no response within {:?}", self.wait)))?
            // A `FetchError`'s message names the cause already (a refused
            // certificate, a refused redirect); its sources would repeat it.
            .map_err(|e| other(e.to_string()))?;
        match response.status().as_u16() {
            200 => {}
            404 | 403 | 410 => {
                return Err(TransportError::new(TransportErrorKind::FileNotFound, u));
            }
            s => return Err(other(format!("HTTP {s}"))),
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        loop {
            match tokio::time::timeout(self.wait, stream.next()).await {
                Err(_) => return Err(other(format!("stalled for {:?}", self.wait))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(other(error_chain(&e))),
                Ok(Some(Ok(chunk))) => {
                    if (body.len() + chunk.len()) as u64 > MAX_METADATA_BYTES {
                        return Err(other(format!(
                            "larger than {MAX_METADATA_BYTES} bytes, not metadata"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(body)
    }
}

#[async_trait]
impl Transport for HomeTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let file = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default();
        let key = store_key(file);
        let stream = |bytes: Vec<u8>| -> TransportStream {
            Box::pin(futures_util::stream::once(async move {
                Ok::<_, TransportError>(Bytes::from(bytes))
            }))
        };
        let Some(key) = key else {
            return Ok(stream(self.get(&url).await?));
        };
        if key == "timestamp.json" {
            if let Some(bytes) = self.lock().files.get(&key).cloned() {
                return Ok(stream(bytes));
            }
        }
        if key.ends_with(".root.json") {
            return self.root(&key, &url).await.map(stream);
        }
        if let Some(bytes) = self.stored_if_unchanged(&key) {
            let mut state = self.lock();
            state.used_store = true;
            state.files.insert(key, bytes.clone());
            return Ok(stream(bytes));
        }
        let bytes = self.get(&url).await?;
        self.lock().files.insert(key, bytes.clone());
        Ok(stream(bytes))
    }
}

impl HomeTransport {
    /// The answer to tough's `N.root.json` (TUF 5.3.3): the store's copy
    /// when it has one (a root accepted in an earlier rotation, which tough
    /// verifies against its predecessor as it would the repository's);
    /// else "not found" when nothing can have changed (the timestamp is the
    /// trusted one and tough holds the root the last refresh ended with);
    /// else the repository's.
    async fn root(&self, key: &str, url: &Url) -> Result<Vec<u8>, TransportError> {
        let version = key
            .strip_suffix(".root.json")
            .and_then(|v| v.parse::<u64>().ok());
        if self.use_store {
            if let (Some(version), Ok(bytes)) = (version, std::fs::read(self.store.join(key))) {
                let mut state = self.lock();
                state.used_store = true;
                state.stored_root_asked = Some(version);
                state.last_root = bytes.clone();
                state.files.insert(key.to_owned(), bytes.clone());
                return Ok(bytes);
            }
        }
        {
            let mut state = self.lock();
            state.stored_root_asked = None;
            // The repository publishes a new timestamp with every change,
            // a rotated root included: nothing newer to look for.
            if state.timestamp_unchanged && self.trusted.root.as_ref() == Some(&state.last_root) {
                return Err(TransportError::new(
                    TransportErrorKind::FileNotFound,
                    url.as_str(),
                ));
            }
        }
        let bytes = self.get(url).await?;
        let mut state = self.lock();
        state.last_root = bytes.clone();
        state.files.insert(key.to_owned(), bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_snapshot_prefixes_the_file_name_not_the_folders() {
        let h = &Sha256::of(b"abc");
        assert_eq!(
            download_path("com/a/1.0/a-1.0.jar", h, true),
            format!("com/a/1.0/{h}.a-1.0.jar")
        );
        assert_eq!(
            download_path("a-1.0.jar", h, true),
            format!("{h}.a-1.0.jar")
        );
        assert_eq!(
            download_path("com/a/1.0/a-1.0.jar", h, false),
            "com/a/1.0/a-1.0.jar"
        );
    }

    #[test]
    fn versioned_metadata_is_stored_under_its_role_names_and_delegated_roles_apart() {
        let key = |f| store_key(f);
        assert_eq!(key("12.snapshot.json").as_deref(), Some("snapshot.json"));
        assert_eq!(key("3.targets.json").as_deref(), Some("targets.json"));
        assert_eq!(key("targets.json").as_deref(), Some("targets.json"));
        assert_eq!(key("2.root.json").as_deref(), Some("2.root.json"));
        assert_eq!(key("timestamp.json").as_deref(), Some("timestamp.json"));
        assert_eq!(
            key("tuf-team.json").as_deref(),
            Some("delegated/tuf-team.json")
        );
        assert_eq!(
            key("4.tuf-team.json").as_deref(),
            Some("delegated/tuf-team.json")
        );
        assert_eq!(
            key("x.targets.json").as_deref(),
            Some("delegated/x.targets.json")
        );
        assert_eq!(key("..%2Fa.json").as_deref(), None, "not a plain file name");
        assert_eq!(key("a b.json").as_deref(), None);
        assert_eq!(key("README"), None);
    }
}
