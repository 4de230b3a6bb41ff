//! The published modules and each environment's assigned target set, in
//! the database ([`super::db`]), and the repository files `publish` writes,
//! in the repository folder, with their digests in the database.
//!
//! `publish` hashes each file as it copies it and records the digest with
//! the file's size and modification time; the repository answers with that
//! digest as the `ETag`, so no request (and no restart) hashes a published
//! file again.
//!
//! A kill-and-restart test of the box's reconnect depends on a restarted
//! portal answering `GET_ENV_MOD_REQ` exactly as before, so every change is
//! committed (one transaction: a publish's records, an assignment's rows)
//! before it is acknowledged.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::any::AnyRow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use super::{
    db::{self, stmt, Db, Stmt},
    PortalError,
};

/// `type` of a module object (contracts section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleType {
    /// The box core.
    Core,
    /// A component plugin.
    Component,
}

impl std::str::FromStr for ModuleType {
    type Err = PortalError;

    fn from_str(s: &str) -> Result<Self, PortalError> {
        match s {
            "core" => Ok(ModuleType::Core),
            "component" => Ok(ModuleType::Component),
            other => Err(PortalError::InvalidCoordinate {
                field: "type",
                value: other.to_string(),
            }),
        }
    }
}

/// SHA-256 and size of an optional package (`-bin.zip`, `-model.zip`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A published module, exactly as it travels in `GET_ENV_MOD_RES`: the
/// section 2 fields plus the optional extension fields of section 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleObject {
    /// Maven groupId.
    pub group_id: String,
    /// Maven artifactId.
    pub artifact_id: String,
    /// Version.
    pub version: String,
    /// `core` or `component`.
    #[serde(rename = "type")]
    pub module_type: ModuleType,
    /// When it was published, ISO-8601 local date-time read as UTC.
    pub upload_time: String,
    /// Hex SHA-256 of the main artifact; empty for a native module, whose
    /// digests are per platform.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Size of the main artifact in bytes; 0 for a native module.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Extension of the main artifact (`jar`, `so`, ...).
    pub packaging: String,
    /// The `-bin.zip` dependencies package, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<PartInfo>,
    /// The `-model.zip` model package, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PartInfo>,
    /// A native module's builds by target triple, each fetched with the
    /// triple as the Maven classifier (`{artifactId}-{version}-{triple}.{packaging}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<BTreeMap<String, PartInfo>>,
    /// For a core: the launcher handshake versions its executable speaks
    /// (extension; a box whose launcher speaks none of them refuses the
    /// set before downloading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_handshakes: Option<Vec<u32>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Packagings of native artifacts, published per platform.
pub const NATIVE_PACKAGINGS: &[&str] = &["so", "dylib", "dll", "bin", "exe"];

impl ModuleObject {
    /// The size of the main artifact a box of this machine's platform
    /// fetches: its build's for a native module.
    pub fn main_size(&self) -> u64 {
        self.platforms
            .as_ref()
            .and_then(|p| p.get(crate::PLATFORM))
            .map_or(self.size, |build| build.size)
    }

    /// `groupId:artifactId:version`.
    pub fn coordinates(&self) -> String {
        format!("{}:{}:{}", self.group_id, self.artifact_id, self.version)
    }
}

/// What `publish` puts into the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    /// Maven groupId.
    pub group_id: String,
    /// Maven artifactId.
    pub artifact_id: String,
    /// Version.
    pub version: String,
    /// `core` or `component`.
    #[serde(rename = "type")]
    pub module_type: ModuleType,
    /// The main artifact, a file the portal process can read (empty for a
    /// native module published per platform).
    #[serde(default)]
    pub file: PathBuf,
    /// Extension of the main artifact; `jar` when absent.
    #[serde(default)]
    pub packaging: Option<String>,
    /// The optional dependencies package.
    #[serde(default)]
    pub bin: Option<PathBuf>,
    /// The optional model package.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// For a native module: one build per target triple, instead of
    /// `file` (which is then ignored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, PathBuf>,
    /// For a native module: the debug information split off a platform's
    /// build (`packaging/dist.sh`), published beside it with the `debug`
    /// classifier (`{artifactId}-{version}-{triple}-debug.debug`) for
    /// symbolising crashes; a box never fetches it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub debug: BTreeMap<String, PathBuf>,
    /// For a core: the launcher handshake versions it speaks, published
    /// as the module object's `launcherHandshakes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_handshakes: Option<Vec<u32>>,
}

impl PublishRequest {
    /// A request for `group:artifact:version` of `module_type` from `file`,
    /// packaged as `jar`, without optional packages.
    pub fn new(coordinates: &str, module_type: ModuleType, file: impl Into<PathBuf>) -> Self {
        let mut parts = coordinates.splitn(3, ':');
        let mut next = || parts.next().unwrap_or_default().to_string();
        PublishRequest {
            group_id: next(),
            artifact_id: next(),
            version: next(),
            module_type,
            file: file.into(),
            packaging: None,
            bin: None,
            model: None,
            platforms: BTreeMap::new(),
            debug: BTreeMap::new(),
            launcher_handshakes: None,
        }
    }

    /// A component plugin library built for this machine's platform
    /// ([`crate::PLATFORM`]), packaged with the platform's library
    /// extension.
    pub fn plugin(coordinates: &str, file: impl Into<PathBuf>) -> Self {
        PublishRequest::native(
            coordinates,
            ModuleType::Component,
            std::env::consts::DLL_EXTENSION,
            [(crate::PLATFORM.to_owned(), file.into())],
        )
    }

    /// A request for a native module built for each `(triple, file)` of
    /// `builds`, packaged as `packaging` (`so`, `bin`, ...).
    pub fn native(
        coordinates: &str,
        module_type: ModuleType,
        packaging: &str,
        builds: impl IntoIterator<Item = (String, PathBuf)>,
    ) -> Self {
        PublishRequest {
            packaging: Some(packaging.to_owned()),
            platforms: builds.into_iter().collect(),
            ..PublishRequest::new(coordinates, module_type, PathBuf::new())
        }
    }
}

/// The state file of a portal before the database ([`super::import`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StoreFile {
    /// Published modules by `groupId:artifactId:version`.
    #[serde(default)]
    pub(crate) modules: BTreeMap<String, ModuleObject>,
    /// Each environment's target set, as coordinates in assigned order.
    #[serde(default)]
    pub(crate) assignments: BTreeMap<String, Vec<String>>,
    /// Environments answered with module objects as given, unchecked.
    #[serde(default)]
    pub(crate) raw_assignments: BTreeMap<String, Vec<serde_json::Value>>,
    /// Digests of the repository files `publish` wrote, by path relative to
    /// the repository root (`com/x/a/1/a-1.jar`).
    #[serde(default)]
    pub(crate) files: BTreeMap<String, FileDigest>,
    /// Coordinates in the order they were published.
    #[serde(default)]
    pub(crate) published: Vec<String>,
}

/// A published file's SHA-256, valid while the file keeps the size and the
/// modification time it had when it was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileDigest {
    /// Hex SHA-256 of the content.
    pub(crate) sha256: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) modified_ns: u64,
}

impl FileDigest {
    /// Records the digest of the repository file `rel`.
    pub(crate) fn upsert(&self, rel: &str) -> Stmt {
        stmt!(
            "INSERT INTO repo_files (path, sha256, size, modified_ns) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, \
             modified_ns = excluded.modified_ns",
            rel,
            &self.sha256,
            self.size,
            self.modified_ns,
        )
    }
}

/// What a publish did to the repository: files written with their digests,
/// files removed.
#[derive(Default)]
struct RepoChanges {
    written: Vec<(PathBuf, FileDigest)>,
    removed: Vec<PathBuf>,
}

/// Published modules and assignments, in the database ([`super::db`]);
/// the repository's files in the repository folder.
pub(crate) struct Store {
    db: Arc<Db>,
    repo: PathBuf,
    /// How many earlier builds get a patch to a new one ([`super::patch`]).
    patch_versions: usize,
}

/// The repository's write lock in the data folder ([`Store::lock`]).
pub const LOCK_FILE: &str = "repository.lock";

/// Makes `module` the record of its coordinates, published last.
pub(crate) fn upsert_module(module: &ModuleObject) -> Stmt {
    let object = serde_json::to_string(module).expect("module object to JSON");
    stmt!(
        "INSERT INTO modules (coordinates, group_id, artifact_id, version, packaging, object, published_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(published_seq), 0) + 1 FROM modules)) \
         ON CONFLICT (coordinates) DO UPDATE SET packaging = excluded.packaging, \
         object = excluded.object, published_seq = excluded.published_seq",
        module.coordinates(),
        &module.group_id,
        &module.artifact_id,
        &module.version,
        &module.packaging,
        object,
    )
}

/// Makes `set` (checked coordinates) the whole target set of `env`.
pub(crate) fn assignment_stmts(env: &str, set: &[String]) -> Vec<Stmt> {
    let mut stmts = vec![
        stmt!("DELETE FROM assignments WHERE env = $1", env),
        stmt!("DELETE FROM raw_assignments WHERE env = $1", env),
    ];
    stmts.extend(set.iter().enumerate().map(|(i, c)| {
        stmt!(
            "INSERT INTO assignments (env, position, coordinates) VALUES ($1, $2, $3)",
            env,
            i,
            c,
        )
    }));
    stmts
}

/// Makes `modules` the unchecked answer to `env`.
pub(crate) fn raw_assignment_stmt(env: &str, modules: &[serde_json::Value]) -> Stmt {
    let json = serde_json::to_string(modules).expect("JSON values");
    stmt!(
        "INSERT INTO raw_assignments (env, modules) VALUES ($1, $2) \
         ON CONFLICT (env) DO UPDATE SET modules = excluded.modules",
        env,
        json,
    )
}

fn parse_module(json: &str) -> Option<ModuleObject> {
    match serde_json::from_str(json) {
        Ok(m) => Some(m),
        Err(error) => {
            tracing::error!(%error, "a module record is not a module object: skipped");
            None
        }
    }
}

/// `g:a:v (raw)` labels of a raw set's module objects.
fn raw_labels(modules: &[serde_json::Value]) -> Vec<String> {
    modules
        .iter()
        .map(|m| {
            let f = |k: &str| m.get(k).and_then(serde_json::Value::as_str).unwrap_or("?");
            format!(
                "{}:{}:{} (raw)",
                f("groupId"),
                f("artifactId"),
                f("version")
            )
        })
        .collect()
}

impl Store {
    /// The store of `db`, with the repository folder `repo` (made when
    /// missing).
    pub(crate) fn open(db: Arc<Db>, repo: PathBuf) -> Result<Store, PortalError> {
        fs::create_dir_all(&repo).map_err(|source| PortalError::Io {
            path: repo.clone(),
            source,
        })?;
        Ok(Store {
            db,
            repo,
            patch_versions: 0,
        })
    }

    /// Makes patches from the last `n` builds of a platform to each new
    /// one at publish; 0 (the default of [`Store::open`]) makes none.
    pub(crate) fn with_patch_versions(mut self, n: usize) -> Self {
        self.patch_versions = n;
        self
    }

    /// Every published module, by coordinates.
    pub(crate) fn modules(&self) -> Vec<ModuleObject> {
        self.read(stmt!("SELECT object FROM modules ORDER BY coordinates"))
            .iter()
            .filter_map(|r| parse_module(&db::text(r, 0)))
            .collect()
    }

    /// The rows of `stmt`; none (logged) when the database fails.
    fn read(&self, stmt: Stmt) -> Vec<AnyRow> {
        self.db.rows(stmt).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the store");
            Vec::new()
        })
    }

    /// Coordinates assigned to each environment; a raw set shows as
    /// `g:a:v (raw)` labels.
    pub(crate) fn assignments(&self) -> BTreeMap<String, Vec<String>> {
        let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.read(stmt!(
            "SELECT env, coordinates FROM assignments ORDER BY env, position"
        )) {
            all.entry(db::text(&r, 0))
                .or_default()
                .push(db::text(&r, 1));
        }
        for r in self.read(stmt!("SELECT env, modules FROM raw_assignments")) {
            let modules: Vec<serde_json::Value> =
                serde_json::from_str(&db::text(&r, 1)).unwrap_or_default();
            all.insert(db::text(&r, 0), raw_labels(&modules));
        }
        all
    }

    /// [`Store::assignments`] of the environments whose last verdict is a
    /// failure ([`super::history::FAILURES`]) only.
    pub(crate) fn failed_assignments(&self) -> BTreeMap<String, Vec<String>> {
        let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.read(stmt!(format!(
            "SELECT a.env, a.coordinates FROM assignments a JOIN env_status e ON e.env = a.env \
             WHERE e.{} ORDER BY a.env, a.position",
            super::history::FAILED
        ))) {
            all.entry(db::text(&r, 0))
                .or_default()
                .push(db::text(&r, 1));
        }
        all
    }

    /// The coordinates assigned to `env` (raw labels for a raw set).
    pub(crate) fn assigned(&self, env: &str) -> Vec<String> {
        if let Some(r) = self
            .read(stmt!(
                "SELECT modules FROM raw_assignments WHERE env = $1",
                env
            ))
            .first()
        {
            let modules: Vec<serde_json::Value> =
                serde_json::from_str(&db::text(r, 0)).unwrap_or_default();
            return raw_labels(&modules);
        }
        self.read(stmt!(
            "SELECT coordinates FROM assignments WHERE env = $1 ORDER BY position",
            env
        ))
        .iter()
        .map(|r| db::text(r, 0))
        .collect()
    }

    /// The module objects of `env`'s target set, in assigned order; empty
    /// when nothing is assigned.
    pub(crate) fn target_set(&self, env: &str) -> Vec<serde_json::Value> {
        if let Some(r) = self
            .read(stmt!(
                "SELECT modules FROM raw_assignments WHERE env = $1",
                env
            ))
            .first()
        {
            return serde_json::from_str(&db::text(r, 0)).unwrap_or_default();
        }
        self.read(stmt!(
            "SELECT m.object FROM assignments a JOIN modules m ON m.coordinates = a.coordinates \
             WHERE a.env = $1 ORDER BY a.position",
            env
        ))
        .iter()
        .filter_map(|r| serde_json::from_str(&db::text(r, 0)).ok())
        .collect()
    }

    /// Makes `modules`, unchecked, the answer to `env`'s `GET_ENV_MOD_REQ`.
    pub(crate) fn assign_raw(
        &self,
        env: &str,
        modules: Vec<serde_json::Value>,
    ) -> Result<(), PortalError> {
        if env.is_empty() {
            return Err(PortalError::BadRequest(
                "environment UUID is empty".to_string(),
            ));
        }
        self.db.write(vec![raw_assignment_stmt(env, &modules)])?;
        info!(env, modules = modules.len(), "assigned raw target set");
        Ok(())
    }

    /// The record of `coordinates`, if published.
    fn module(&self, coordinates: &str) -> Option<ModuleObject> {
        self.read(stmt!(
            "SELECT object FROM modules WHERE coordinates = $1",
            coordinates
        ))
        .first()
        .and_then(|r| parse_module(&db::text(r, 0)))
    }

    /// Refuses a set with unknown or malformed coordinates; the set's
    /// module records, in order, each once.
    pub(crate) fn check_set(
        &self,
        coordinates: &[String],
    ) -> Result<Vec<ModuleObject>, PortalError> {
        let mut set: Vec<ModuleObject> = Vec::new();
        for c in coordinates {
            let (g, a, v) = parse_coordinates(c)?;
            let key = format!("{g}:{a}:{v}");
            let Some(module) = self.module(&key) else {
                return Err(PortalError::UnknownModule { coordinates: key });
            };
            if !set.contains(&module) {
                set.push(module);
            }
        }
        Ok(set)
    }

    /// Makes `coordinates` the whole target set of `env`, in one
    /// transaction. Unknown or malformed coordinates refuse the whole set
    /// and change nothing.
    pub(crate) fn assign(
        &self,
        env: &str,
        coordinates: &[String],
    ) -> Result<Vec<ModuleObject>, PortalError> {
        if env.is_empty() {
            return Err(PortalError::BadRequest(
                "environment UUID is empty".to_string(),
            ));
        }
        let modules = self.check_set(coordinates)?;
        let set: Vec<String> = modules.iter().map(ModuleObject::coordinates).collect();
        self.db.write(assignment_stmts(env, &set))?;
        info!(env, modules = coordinates.len(), "assigned target set");
        Ok(modules)
    }

    /// The strong `ETag` of the repository file `rel` (relative to the
    /// root) of `size` bytes modified at `modified`: its digest recorded at
    /// publish, or `None` when publish did not write it or it has changed
    /// since.
    pub(crate) fn etag(&self, rel: &str, size: u64, modified: SystemTime) -> Option<String> {
        let rows = self.read(stmt!(
            "SELECT sha256, size, modified_ns FROM repo_files WHERE path = $1",
            rel
        ));
        let r = rows.first()?;
        (db::uint(r, 1) == size && Some(db::uint(r, 2)) == unix_ns(modified))
            .then(|| format!("\"{}\"", db::text(r, 0)))
    }

    /// Copies a module's files into the repository layout with `.sha256`
    /// files beside them and records it and their digests, upload time now.
    pub(crate) fn publish(&self, req: &PublishRequest) -> Result<ModuleObject, PortalError> {
        self.publish_files(req, true)
    }

    /// [`Store::publish`]; `sign` re-signs the TUF metadata (when the
    /// repository has keys, [`super::tuf`]).
    pub(crate) fn publish_files(
        &self,
        req: &PublishRequest,
        sign: bool,
    ) -> Result<ModuleObject, PortalError> {
        validate_group(&req.group_id)?;
        validate_name("artifactId", &req.artifact_id)?;
        validate_name("version", &req.version)?;
        let packaging = req.packaging.clone().unwrap_or_else(|| "jar".to_string());
        validate_name("packaging", &packaging)?;

        let _lock = self.lock()?;
        let dir = self
            .repo
            .join(module_dir(&req.group_id, &req.artifact_id, &req.version));
        fs::create_dir_all(&dir).map_err(|source| PortalError::Io {
            path: dir.clone(),
            source,
        })?;
        let base = format!("{}-{}", req.artifact_id, req.version);

        let mut changes = RepoChanges::default();
        let (main, platforms) = if req.platforms.is_empty() {
            let main = copy_with_digest(
                &req.file,
                &dir.join(format!("{base}.{packaging}")),
                &mut changes,
            )?;
            (main, None)
        } else {
            if !NATIVE_PACKAGINGS.contains(&packaging.as_str()) {
                return Err(PortalError::BadRequest(format!(
                    "packaging {packaging:?} is not native ({}): builds per platform need one",
                    NATIVE_PACKAGINGS.join(", ")
                )));
            }
            let mut builds = BTreeMap::new();
            for (triple, file) in &req.platforms {
                validate_name("platform", triple)?;
                let dest = dir.join(format!("{base}-{triple}.{packaging}"));
                builds.insert(triple.clone(), copy_with_digest(file, &dest, &mut changes)?);
                self.publish_patches(req, triple, &packaging, &dest, &mut changes)?;
            }
            for (triple, file) in &req.debug {
                if !req.platforms.contains_key(triple) {
                    return Err(PortalError::BadRequest(format!(
                        "debug information for {triple}, which has no build"
                    )));
                }
                copy_with_digest(
                    file,
                    &dir.join(format!("{base}-{triple}-debug.debug")),
                    &mut changes,
                )?;
            }
            let none = PartInfo {
                sha256: String::new(),
                size: 0,
            };
            (none, Some(builds))
        };
        let dependencies = publish_optional(
            req.bin.as_deref(),
            &dir.join(format!("{base}-bin.zip")),
            &mut changes,
        )?;
        let model = publish_optional(
            req.model.as_deref(),
            &dir.join(format!("{base}-model.zip")),
            &mut changes,
        )?;

        let module = ModuleObject {
            group_id: req.group_id.clone(),
            artifact_id: req.artifact_id.clone(),
            version: req.version.clone(),
            module_type: req.module_type,
            upload_time: iso_local_date_time(SystemTime::now()),
            sha256: main.sha256,
            size: main.size,
            packaging,
            dependencies,
            model,
            platforms,
            launcher_handshakes: req.launcher_handshakes.clone(),
        };
        let mut stmts: Vec<Stmt> = changes
            .written
            .iter()
            .map(|(path, digest)| digest.upsert(&self.relative(path)))
            .collect();
        stmts.extend(changes.removed.iter().map(|path| {
            stmt!(
                "DELETE FROM repo_files WHERE path = $1",
                self.relative(path)
            )
        }));
        let replaced = self.module(&module.coordinates()).is_some();
        stmts.push(upsert_module(&module));
        self.db.write(stmts)?;
        if sign {
            self.sign_locked(None)?;
        }
        info!(
            module = %module.coordinates(),
            size = module.size,
            sha256 = %module.sha256,
            replaced,
            "published"
        );
        Ok(module)
    }

    /// Replaces the patches to `dest`, the new build of `req` for `triple`:
    /// removes those of an earlier publish of the same version, then makes
    /// one from each of the last [`Store::patch_versions`] other versions
    /// published for that platform and packaging, beside `dest`, with its
    /// `.sha256` (and so a TUF target when the repository is signed). A
    /// patch no smaller than the build is not published.
    fn publish_patches(
        &self,
        req: &PublishRequest,
        triple: &str,
        packaging: &str,
        dest: &Path,
        changes: &mut RepoChanges,
    ) -> Result<(), PortalError> {
        let dir = dest.parent().unwrap_or(&self.repo).to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PortalError::Io { path, source }
        };
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if super::patch::is_patch_of(&file, &name) || {
                file.strip_suffix(".sha256")
                    .is_some_and(|f| super::patch::is_patch_of(f, &name))
            } {
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                changes.removed.push(entry.path());
            }
        }
        let sources: Vec<(String, String, PathBuf)> = self
            .read(stmt!(
                "SELECT object FROM modules WHERE group_id = $1 AND artifact_id = $2 \
                 AND version <> $3 AND packaging = $4 ORDER BY published_seq DESC",
                &req.group_id,
                &req.artifact_id,
                &req.version,
                packaging,
            ))
            .iter()
            .filter_map(|r| parse_module(&db::text(r, 0)))
            .filter_map(|m| {
                let build = m.platforms.as_ref()?.get(triple)?;
                let path = self.repo.join(artifact_path(
                    &m.group_id,
                    &m.artifact_id,
                    &m.version,
                    &format!("-{triple}.{packaging}"),
                ));
                Some((m.version.clone(), build.sha256.clone(), path))
            })
            .take(self.patch_versions)
            .collect();
        for (version, sha256, source) in sources {
            let Some(bytes) = super::patch::make_files(&source, dest)? else {
                info!(from = %version, to = %req.version, triple, "patch not smaller than the build: not published");
                continue;
            };
            let patch = dir.join(super::patch::patch_name(&name, &version, &sha256));
            let sidecar = sha256_path(&patch);
            changes.removed.retain(|p| *p != patch && *p != sidecar);
            write_atomically(&patch, &bytes)?;
            let digest = hex::encode(Sha256::digest(&bytes));
            changes
                .written
                .push((patch.clone(), file_digest(&patch, digest.clone())?));
            let line = format!("{digest}\n");
            write_atomically(&sidecar, line.as_bytes())?;
            let line_digest = hex::encode(Sha256::digest(line.as_bytes()));
            changes
                .written
                .push((sidecar.clone(), file_digest(&sidecar, line_digest)?));
            info!(from = %version, to = %req.version, triple, bytes = bytes.len(), "published a patch");
        }
        Ok(())
    }

    /// Re-signs the repository's TUF metadata over every published
    /// artifact ([`super::tuf::sign`]).
    pub(crate) fn sign_tuf(&self) -> Result<(), PortalError> {
        self.sign_tuf_with(None)
    }

    /// [`Store::sign_tuf`] with the timestamp valid for `timestamp_s`
    /// seconds ([`super::tuf::sign_with`]).
    pub(crate) fn sign_tuf_with(&self, timestamp_s: Option<i64>) -> Result<(), PortalError> {
        let _lock = self.lock()?;
        self.sign_locked(timestamp_s)
    }

    /// [`Store::sign_tuf_with`] under the lock the caller holds: the
    /// targets are read under it, so that no publish lands between them
    /// and the metadata that lists them.
    fn sign_locked(&self, timestamp_s: Option<i64>) -> Result<(), PortalError> {
        super::tuf::sign_with(self.data_dir(), &self.tuf_targets(), timestamp_s)
    }

    /// Rotates the TUF root ([`super::tuf::rotate_root`]).
    pub(crate) fn rotate_tuf_root(&self) -> Result<u64, PortalError> {
        let _lock = self.lock()?;
        super::tuf::rotate_root(self.data_dir(), &self.tuf_targets())
    }

    /// Renews the TUF root ([`super::tuf::renew_root`]).
    pub(crate) fn renew_tuf_root(&self) -> Result<u64, PortalError> {
        let _lock = self.lock()?;
        super::tuf::renew_root(self.data_dir(), &self.tuf_targets())
    }

    /// Waits for and takes the repository's write lock, [`LOCK_FILE`] in
    /// the data folder (an exclusive `flock`, `LockFileEx` on Windows),
    /// released when the file returned is dropped. A publish holds it from
    /// its first file to its signature, and every TUF signing (the
    /// timestamp's refresh, a root's rotation or renewal) holds it from
    /// reading the targets to publishing the timestamp. Whoever shares the
    /// data folder takes turns on it: the portals of one database, a
    /// `keys` command beside `serve`, two stores of one process. Without it
    /// two signings each read the targets, then write the same versions,
    /// the later one without the other's new target, in one staging
    /// folder.
    fn lock(&self) -> Result<fs::File, PortalError> {
        let path = self.data_dir().join(LOCK_FILE);
        let io = |source| PortalError::Io {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    /// The data folder (the repository's parent).
    pub(crate) fn data_dir(&self) -> &Path {
        self.repo.parent().unwrap_or(&self.repo)
    }

    /// Every published artifact as a TUF target: Maven path, SHA-256, size.
    pub(crate) fn tuf_targets(&self) -> Vec<(String, String, u64)> {
        self.read(stmt!(
            "SELECT path, sha256, size FROM repo_files ORDER BY path"
        ))
        .iter()
        .map(|r| (db::text(r, 0), db::text(r, 1), db::uint(r, 2)))
        .filter(|(rel, _, _)| super::tuf::is_target(rel))
        .collect()
    }
    /// `path` under the repository root as a `/`-separated relative path,
    /// the form of a request path after `/repo/`.
    fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.repo).unwrap_or(path);
        rel.iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Nanoseconds since the epoch, when `t` is after it and before 2554.
fn unix_ns(t: SystemTime) -> Option<u64> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// The digest record of the file at `path`, whose content hashes to
/// `sha256`.
fn file_digest(path: &Path, sha256: String) -> Result<FileDigest, PortalError> {
    let meta = fs::metadata(path).map_err(|source| PortalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(FileDigest {
        sha256,
        size: meta.len(),
        // A time that does not fit records 0, which no file matches: its
        // ETag is then computed on request.
        modified_ns: meta.modified().ok().and_then(unix_ns).unwrap_or(0),
    })
}

/// `{groupId with . as /}/{artifactId}/{version}`, the Maven folder of a
/// module relative to the repository root.
pub fn module_dir(group_id: &str, artifact_id: &str, version: &str) -> String {
    format!("{}/{artifact_id}/{version}", group_id.replace('.', "/"))
}

/// The repository path (relative to the root) of a module's file with
/// `suffix` after `{artifactId}-{version}`: `.jar`, `-bin.zip`,
/// `-model.zip`, `.jar.sha256`.
pub fn artifact_path(group_id: &str, artifact_id: &str, version: &str, suffix: &str) -> String {
    format!(
        "{}/{artifact_id}-{version}{suffix}",
        module_dir(group_id, artifact_id, version)
    )
}

/// Splits `groupId:artifactId:version` and validates each part.
pub(crate) fn parse_coordinates(s: &str) -> Result<(String, String, String), PortalError> {
    let parts: Vec<&str> = s.split(':').collect();
    let [g, a, v] = parts[..] else {
        return Err(PortalError::InvalidCoordinate {
            field: "coordinates",
            value: s.to_string(),
        });
    };
    validate_group(g)?;
    validate_name("artifactId", a)?;
    validate_name("version", v)?;
    Ok((g.to_string(), a.to_string(), v.to_string()))
}

/// `[A-Za-z0-9_.-]+` with no empty, `.` or `..` segment (contracts §2).
fn validate_group(g: &str) -> Result<(), PortalError> {
    let ok = !g.is_empty()
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && g.split('.').all(|seg| !seg.is_empty());
    if ok {
        Ok(())
    } else {
        Err(PortalError::InvalidCoordinate {
            field: "groupId",
            value: g.to_string(),
        })
    }
}

/// `[A-Za-z0-9_.+-]+`, not `.` or `..` (contracts §2).
fn validate_name(field: &'static str, v: &str) -> Result<(), PortalError> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PortalError::InvalidCoordinate {
            field,
            value: v.to_string(),
        })
    }
}

/// Publishes an optional package, or removes a stale one left by an earlier
/// publish of the same coordinates (a `404` means "none").
fn publish_optional(
    src: Option<&Path>,
    dest: &Path,
    changes: &mut RepoChanges,
) -> Result<Option<PartInfo>, PortalError> {
    match src {
        Some(src) => copy_with_digest(src, dest, changes).map(Some),
        None => {
            for p in [dest.to_path_buf(), sha256_path(dest)] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(PortalError::Io { path: p, source }),
                }
                changes.removed.push(p);
            }
            Ok(None)
        }
    }
}

fn sha256_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Copies `src` to `dest` (via `dest.partial`, fsync, rename) while hashing,
/// then writes `dest.sha256` with the hex digest; records both files'
/// digests in `changes`.
fn copy_with_digest(
    src: &Path,
    dest: &Path,
    changes: &mut RepoChanges,
) -> Result<PartInfo, PortalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PortalError::Io { path, source }
    };
    let mut input = fs::File::open(src).map_err(io(src))?;
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut out = fs::File::create(&partial).map_err(io(&partial))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(io(src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(&partial))?;
        size += n as u64;
    }
    out.sync_all().map_err(io(&partial))?;
    drop(out);
    fs::rename(&partial, dest).map_err(io(dest))?;
    let sha256 = hex::encode(hasher.finalize());
    changes
        .written
        .push((dest.to_path_buf(), file_digest(dest, sha256.clone())?));
    let sidecar = sha256_path(dest);
    let line = format!("{sha256}\n");
    write_atomically(&sidecar, line.as_bytes())?;
    let line_digest = hex::encode(Sha256::digest(line.as_bytes()));
    changes
        .written
        .push((sidecar.clone(), file_digest(&sidecar, line_digest)?));
    Ok(PartInfo { sha256, size })
}

/// Writes `bytes` to `path` via a temporary file, fsync and rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PortalError> {
    write_with(path, bytes, None)
}

/// [`write_atomically`] for a key or a secret's hash: the file is created
/// owner-only (0600) by `open` itself, so it is never readable by others,
/// not even between its creation and a `chmod`.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PortalError> {
    write_with(path, bytes, Some(0o600))
}

fn write_with(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), PortalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PortalError::Io { path: p, source }
    };
    let mut options = fs::OpenOptions::new();
    options.write(true);
    match mode {
        None => {
            options.create(true).truncate(true);
        }
        Some(mode) => {
            // A leftover temporary file may have other permissions: the
            // mode applies only to a file `open` creates.
            match fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&tmp)(e)),
            }
            options.create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            #[cfg(not(unix))]
            let _ = mode;
        }
    }
    let mut f = options.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, the module object's `uploadTime` format;
/// a time jiff cannot represent reads as the epoch.
pub fn iso_local_date_time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn test_db(dir: &Path) -> Arc<Db> {
        Arc::new(Db::open(&db::sqlite_url(&dir.join("portal.db"))).unwrap())
    }

    /// Two stores of one data folder (as two portals of one database, or a
    /// `keys` command beside `serve`) publish at once: every signing reads
    /// the targets and writes its versions alone, so the metadata lists
    /// every module and has one version per publish.
    #[test]
    fn publishes_through_two_stores_of_one_data_folder_at_once_lose_no_target() {
        const EACH: usize = 6;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        super::super::tuf::keys_init(data, &super::super::tuf::KeysInit::default()).unwrap();
        let stores: Vec<Store> = (0..2)
            .map(|_| Store::open(test_db(data), data.join("repo")).unwrap())
            .collect();
        std::thread::scope(|s| {
            for (i, store) in stores.iter().enumerate() {
                s.spawn(move || {
                    for n in 0..EACH {
                        let file = data.join(format!("m{i}-{n}.jar"));
                        fs::write(&file, format!("module {i}, build {n}")).unwrap();
                        let coordinates = format!("com.example:m{i}:1.{n}");
                        let req = PublishRequest::new(&coordinates, ModuleType::Component, file);
                        store.publish(&req).unwrap();
                    }
                });
            }
        });
        let repository = super::super::tuf::load(data);
        let targets = &repository.targets().signed;
        for i in 0..2 {
            for n in 0..EACH {
                let jar = format!("com/example/m{i}/1.{n}/m{i}-1.{n}.jar");
                let name = tough::TargetName::new(&jar).unwrap();
                assert!(targets.targets.contains_key(&name), "{jar} is no target");
            }
        }
        assert_eq!(
            targets.version.get(),
            2 * EACH as u64,
            "one version per publish"
        );
        assert_eq!(repository.timestamp().signed.version.get(), 2 * EACH as u64);
    }

    #[test]
    fn formats_upload_time_as_iso_local_date_time_in_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_772_360_130);
        assert_eq!(iso_local_date_time(t), "2026-03-01T10:15:30");
        assert_eq!(iso_local_date_time(UNIX_EPOCH), "1970-01-01T00:00:00");
        // Seconds are truncated, never rounded up, and no fraction shows.
        let t = UNIX_EPOCH + Duration::from_millis(1_772_360_130_999);
        assert_eq!(iso_local_date_time(t), "2026-03-01T10:15:30");
    }

    #[test]
    fn refuses_coordinates_that_are_paths() {
        for bad in [
            "../x:a:1", "g..h:a:1", "g:..:1", "g:a:.", "g:a", "g:a/b:1", ".g:a:1",
        ] {
            assert!(parse_coordinates(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_coordinates("com.banalytics.box:core:1.2.3+build-4").is_ok());
    }

    #[test]
    fn publishes_a_native_module_per_platform_with_classified_names_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let store = Store::open(test_db(dir.path()), repo.clone()).unwrap();
        let x86 = dir.path().join("x86.so");
        let arm = dir.path().join("arm.so");
        fs::write(&x86, b"x86 build").unwrap();
        fs::write(&arm, b"arm build, longer").unwrap();
        let mut req = PublishRequest::native(
            "com.example:cam:1.0",
            ModuleType::Component,
            "so",
            [
                ("x86_64-unknown-linux-gnu".to_owned(), x86),
                ("aarch64-unknown-linux-gnu".to_owned(), arm),
            ],
        );
        let debug = dir.path().join("x86.debug");
        fs::write(&debug, b"debug sections").unwrap();
        req.debug
            .insert("x86_64-unknown-linux-gnu".to_owned(), debug);
        let m = store.publish(&req).unwrap();
        let builds = m.platforms.as_ref().unwrap();
        assert_eq!(builds["aarch64-unknown-linux-gnu"].size, 17);
        let base = repo.join("com/example/cam/1.0");
        assert_eq!(
            fs::read(base.join("cam-1.0-x86_64-unknown-linux-gnu.so")).unwrap(),
            b"x86 build"
        );
        let sha =
            fs::read_to_string(base.join("cam-1.0-aarch64-unknown-linux-gnu.so.sha256")).unwrap();
        assert!(sha.starts_with(&builds["aarch64-unknown-linux-gnu"].sha256));
        assert!(
            !base.join("cam-1.0.so").exists(),
            "no unclassified artifact"
        );
        assert_eq!(
            fs::read(base.join("cam-1.0-x86_64-unknown-linux-gnu-debug.debug")).unwrap(),
            b"debug sections",
            "the debug information beside the build, with the debug classifier"
        );
        let json = serde_json::to_value(&m).unwrap();
        assert!(
            json.get("sha256").is_none() && json.get("size").is_none(),
            "{json}"
        );
        assert_eq!(json["platforms"]["x86_64-unknown-linux-gnu"]["size"], 9);

        let mut jar = req.clone();
        jar.packaging = Some("jar".into());
        assert!(
            store.publish(&jar).is_err(),
            "per-platform builds need a native packaging"
        );
    }

    /// A build: pseudo-random bytes (as code is to a compressor) with the
    /// version written at a few places.
    fn build(version: u8) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for at in [1_000, 150_000, 299_000] {
            bytes[at] = version;
        }
        bytes
    }

    #[test]
    fn publishes_patches_from_the_last_n_builds_of_the_platform_and_none_from_another() {
        const X86: &str = "x86_64-unknown-linux-gnu";
        const ARM: &str = "aarch64-unknown-linux-gnu";
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let store = Store::open(test_db(dir.path()), repo.clone())
            .unwrap()
            .with_patch_versions(2);
        let publish = |version: u8, triples: &[&str]| {
            let builds = triples.iter().map(|t| {
                let file = dir.path().join(format!("{t}-{version}"));
                fs::write(&file, build(version)).unwrap();
                (t.to_string(), file)
            });
            let req = PublishRequest::native(
                &format!("com.example:cam:{version}.0"),
                ModuleType::Component,
                "so",
                builds,
            );
            store.publish(&req).unwrap()
        };
        publish(1, &[X86, ARM]);
        publish(2, &[ARM]);
        publish(3, &[X86]);
        let v4 = publish(4, &[X86]);
        let v5 = publish(5, &[X86]);

        let dir5 = repo.join("com/example/cam/5.0");
        let mut patches: Vec<String> = fs::read_dir(&dir5)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".zstpatch"))
            .collect();
        patches.sort();
        let name = |from: &ModuleObject| {
            format!(
                "cam-5.0-{X86}.so.from-{}-{}.zstpatch",
                from.version,
                from.platforms.as_ref().unwrap()[X86].sha256
            )
        };
        let v3 = store
            .modules()
            .into_iter()
            .find(|m| m.version == "3.0")
            .unwrap();
        let mut want = vec![name(&v3), name(&v4)];
        want.sort();
        assert_eq!(
            patches, want,
            "the last two x86 builds, not 1.0, not arm's 2.0"
        );

        // Each is smaller than the build, has its digest beside it and is
        // listed for TUF; applied to its source it makes the build.
        let target = build(5);
        let patch = fs::read(dir5.join(name(&v4))).unwrap();
        assert!(patch.len() * 20 < target.len(), "{} bytes", patch.len());
        let sha = hex::encode(Sha256::digest(&patch));
        let sidecar = fs::read_to_string(dir5.join(format!("{}.sha256", name(&v4)))).unwrap();
        assert_eq!(sidecar.trim(), sha);
        let rel = format!("com/example/cam/5.0/{}", name(&v4));
        assert!(store
            .tuf_targets()
            .iter()
            .any(|(path, digest, size)| *path == rel
                && *digest == sha
                && *size == patch.len() as u64));
        assert_eq!(apply(&build(4), &patch), target);
        assert_eq!(v5.platforms.unwrap()[X86].size, target.len() as u64);

        // Published again, 5.0 keeps one patch per source, not two.
        publish(5, &[X86]);
        let count = fs::read_dir(&dir5)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".zstpatch")
            })
            .count();
        assert_eq!(count, 2);
    }

    /// The box's side of the format, as the contract says it: skip the
    /// header frame, decode each segment against its prefix.
    fn apply(source: &[u8], patch: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let len = u32::from_le_bytes(patch[4..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&patch[8..8 + len]).unwrap();
        let (segment, margin) = (
            header["segment"].as_u64().unwrap(),
            header["margin"].as_u64().unwrap(),
        );
        let size = header["size"].as_u64().unwrap();
        let mut input = std::io::BufReader::new(&patch[8 + len..]);
        let mut out = Vec::new();
        let mut start = 0;
        while start < size {
            let n = segment.min(size - start);
            let from = start.saturating_sub(margin).min(source.len() as u64) as usize;
            let to = (start + n + margin).min(source.len() as u64) as usize;
            let mut d = zstd::stream::read::Decoder::with_ref_prefix(&mut input, &source[from..to])
                .unwrap()
                .single_frame();
            d.read_to_end(&mut out).unwrap();
            start += n;
        }
        out
    }
}
