//! `Stager`: builds the new module set in a scratch folder and publishes it
//! as `modules-upgrade/` (with the staged models in `models-upgrade/`) only
//! when it is complete.
//!
//! Steps, each durable before the next:
//! 1. Clear a previous staged set: its marker first, then the folders.
//! 2. Into `modules-upgrade.tmp/` and `models-upgrade.tmp/`: hard-link the
//!    unchanged files from `modules/` and `models/` (copy where a link
//!    fails), move the new main artifacts from the cache, extract the new
//!    packages (each into its own scratch folder first, so that two
//!    packages can share a file only if it is byte-identical).
//! 3. fsync every copied file and every folder.
//! 4. Write the hash record, then `modules-info.properties` (the marker).
//!    Then the host's preflight ([`crate::preflight`]) checks the complete
//!    set; a refusal removes it and cancels the synchronisation.
//! 5. Rename `models-upgrade.tmp` to `models-upgrade`, fsync the home.
//! 6. Rename `modules-upgrade.tmp` to `modules-upgrade`, fsync the home:
//!    from here the staged set exists.
//!
//! A failure at any step leaves `modules/`, `models/` and everything else
//! untouched, and no `modules-upgrade/` with a marker; the scratch folders
//! are removed then, or at the next staging after a crash.

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    path::{Path, PathBuf},
};

use actix::prelude::*;
use banalytics_home::{digests::DigestCache, Sha256};
use tracing::{info, info_span, instrument, warn};

use crate::{
    archive::{self, Limits},
    blocking::off_thread,
    cache::CachedFile,
    coords::Coords,
    error::{io_at, UpgradeError},
    failpoint::failpoint,
    installed,
    layout::{self, sync_dir, Layout},
    plan::{MainPlan, ModulePlan, Origin, PackagePlan, SyncPlan},
    preflight::Preflight,
    record::{FileRecord, ModuleRecord, PackageRecord, SetRecord},
};

/// Build and publish the staged set for `plan`.
#[derive(Message)]
#[rtype(result = "Result<StagedSummary, UpgradeError>")]
pub(crate) struct StageSet {
    /// The plan.
    pub plan: SyncPlan,
    /// Every fetched artifact by cache name.
    pub fetched: HashMap<String, CachedFile>,
}

pub(crate) use banalytics_messages::status::StagedSummary;

/// The Stager actor: one staging at a time, on a blocking thread.
pub(crate) struct Stager {
    layout: Layout,
    limits: Limits,
    preflight: Preflight,
}

impl Stager {
    /// A stager for the home `layout`; `preflight` checks each complete set
    /// before it is published.
    pub(crate) fn new(layout: Layout, limits: Limits, preflight: Preflight) -> Self {
        Stager {
            layout,
            limits,
            preflight,
        }
    }
}

impl Actor for Stager {
    type Context = Context<Self>;
}

impl Handler<StageSet> for Stager {
    type Result = ResponseFuture<Result<StagedSummary, UpgradeError>>;

    fn handle(&mut self, msg: StageSet, _: &mut Context<Self>) -> Self::Result {
        let layout = self.layout.clone();
        let limits = self.limits.clone();
        let span = info_span!(
            "stager.stage_set",
            modules = msg.plan.modules.len(),
            fetched = msg.fetched.len()
        );
        let preflight = self.preflight.clone();
        Box::pin(off_thread(move || {
            span.in_scope(|| stage(&layout, &msg.plan, &msg.fetched, &limits, &preflight))
        }))
    }
}

/// Removes a staged set and the scratch folders: the marker first, so that
/// a crash in the middle never leaves a marker beside a partial set.
pub(crate) fn clear_staged(layout: &Layout) -> Result<(), UpgradeError> {
    let marker = layout.upgrade_dir().join(installed::MODULES_INFO_FILE);
    match fs::remove_file(&marker) {
        Ok(()) => {
            sync_dir(&layout.upgrade_dir()).map_err(io_at(layout.upgrade_dir()))?;
            failpoint("stage.clear.marker-removed");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(marker)(e)),
    }
    for dir in [
        layout.upgrade_tmp(),
        layout.models_upgrade_tmp(),
        layout.upgrade_dir(),
        layout.models_upgrade(),
    ] {
        remove_dir_if_exists(&dir)?;
    }
    sync_dir(layout.home()).map_err(io_at(layout.home()))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), UpgradeError> {
    layout::remove_dir_if_exists(dir).map_err(io_at(dir))
}

/// One side of the staged set (modules or models) and who put what there.
struct Side {
    root: PathBuf,
    owners: HashMap<String, (Coords, Sha256)>,
    files: usize,
    bytes: u64,
    reused: usize,
}

impl Side {
    fn new(root: PathBuf) -> Result<Side, UpgradeError> {
        fs::create_dir_all(&root).map_err(io_at(&root))?;
        Ok(Side {
            root,
            owners: HashMap::new(),
            files: 0,
            bytes: 0,
            reused: 0,
        })
    }

    /// Registers `name` for `module`; `false` if an identical file is
    /// already there (nothing to do), an error if a different one is.
    fn claim(&mut self, name: &str, sha256: Sha256, module: &Coords) -> Result<bool, UpgradeError> {
        let folded = name.to_lowercase();
        match self.owners.get(&folded) {
            Some((_, sha)) if *sha == sha256 => Ok(false),
            Some((owner, _)) => Err(UpgradeError::Collision {
                name: name.to_owned(),
                first: owner.clone(),
                second: module.clone(),
            }),
            None => {
                self.owners.insert(folded, (module.clone(), sha256));
                Ok(true)
            }
        }
    }

    /// Places an installed file by hard link (copy when linking fails).
    fn reuse(
        &mut self,
        from_root: &Path,
        rec: &FileRecord,
        module: &Coords,
    ) -> Result<(), UpgradeError> {
        if !self.claim(&rec.name, rec.sha256, module)? {
            return Ok(());
        }
        let from = from_root.join(&rec.name);
        let to = self.root.join(&rec.name);
        create_parent(&to)?;
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(io_at(&to))?;
            fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(io_at(&to))?;
        }
        self.files += 1;
        self.bytes += rec.size;
        self.reused += 1;
        Ok(())
    }

    /// Moves a new file into place.
    fn adopt(
        &mut self,
        from: &Path,
        rec: &FileRecord,
        module: &Coords,
    ) -> Result<(), UpgradeError> {
        if !self.claim(&rec.name, rec.sha256, module)? {
            return Ok(());
        }
        let to = self.root.join(&rec.name);
        create_parent(&to)?;
        move_file(from, &to)?;
        self.files += 1;
        self.bytes += rec.size;
        Ok(())
    }

    /// Extracts `archive` into a scratch folder, then adopts each file.
    fn extract(
        &mut self,
        archive_path: &Path,
        scratch: &Path,
        limits: &Limits,
        module: &Coords,
    ) -> Result<Vec<FileRecord>, UpgradeError> {
        remove_dir_if_exists(scratch)?;
        fs::create_dir_all(scratch).map_err(io_at(scratch))?;
        let outcome = self.extract_into(archive_path, scratch, limits, module);
        // The scratch folder goes, whether the package was taken or not.
        let removed = remove_dir_if_exists(scratch);
        let files = outcome?;
        removed?;
        Ok(files)
    }

    fn extract_into(
        &mut self,
        archive_path: &Path,
        scratch: &Path,
        limits: &Limits,
        module: &Coords,
    ) -> Result<Vec<FileRecord>, UpgradeError> {
        let refused = |source| UpgradeError::Archive {
            module: module.clone(),
            package: archive_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
        };
        let extracted = archive::extract(archive_path, scratch, limits).map_err(refused)?;
        let mut files = Vec::new();
        for f in extracted.files {
            let name = f
                .path
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if is_reserved(&name) {
                return Err(refused(archive::ArchiveError::UnsafeName {
                    entry: name,
                    reason: "the box keeps its own file under this name in the module folder",
                }));
            }
            let rec = FileRecord {
                name,
                sha256: f.sha256,
                size: f.size,
            };
            self.adopt(&scratch.join(&f.path), &rec, module)?;
            files.push(rec);
        }
        Ok(files)
    }
}

/// Whether a package may not place `name` (relative to the folder it is
/// extracted into): the set's own records, `modules-info.properties` and
/// `modules-hashes.json`, and their temporary names, ignoring case.
pub(crate) fn is_reserved(name: &str) -> bool {
    let lower = name.to_lowercase();
    [installed::MODULES_INFO_FILE, crate::record::RECORD_FILE]
        .iter()
        .any(|r| lower == *r || lower.starts_with(&format!("{r}.")))
}

fn create_parent(path: &Path) -> Result<(), UpgradeError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    Ok(())
}

/// Renames, or copies and fsyncs across file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), UpgradeError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            fs::copy(from, to).map_err(io_at(to))?;
            fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(io_at(to))?;
            fs::remove_file(from).map_err(io_at(from))
        }
        Err(e) => Err(io_at(from)(e)),
    }
}

/// fsyncs every folder under `root`, deepest first, and `root` itself.
fn sync_tree(root: &Path) -> Result<(), UpgradeError> {
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            if entry.file_type().map_err(io_at(entry.path()))?.is_dir() {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        sync_dir(dir).map_err(io_at(dir))?;
    }
    Ok(())
}

/// The module and model folders of the set a reused file comes from.
fn roots(layout: &Layout, origin: Origin) -> (PathBuf, PathBuf) {
    match origin {
        Origin::Active => (layout.modules(), layout.models()),
        Origin::Backup => (layout.backup(), layout.models_backup()),
    }
}

/// Puts the digests of the staged set's files, computed while they were
/// downloaded, extracted or checked by the plan, into the home's digest
/// cache: the swap renames the folders and keeps inodes and modification
/// times, so the next plan knows the installed files without reading them
/// (a whole set, after every upgrade, on a box's slow storage). Only that
/// speed depends on it: a failure is a warning.
fn remember_digests(layout: &Layout, record: &SetRecord) {
    let mut cache = DigestCache::open(&layout.digest_cache());
    let (modules, models) = (layout.upgrade_dir(), layout.models_upgrade());
    for (path, file) in record.files(&modules, &models) {
        if let Err(e) = cache.remember(&path, file.sha256) {
            warn!(path = %path.display(), error = %e, "cannot note a staged file's digest");
        }
    }
    if let Err(e) = cache.save() {
        warn!(error = %e, "cannot write the digest cache");
    }
}

/// Builds and publishes the staged set; see the module docs for the steps.
/// A failure removes what it left (the scratch folders, a partial set).
#[instrument(skip_all, fields(modules = plan.modules.len()))]
pub(crate) fn stage(
    layout: &Layout,
    plan: &SyncPlan,
    fetched: &HashMap<String, CachedFile>,
    limits: &Limits,
    preflight: &Preflight,
) -> Result<StagedSummary, UpgradeError> {
    let staged = build_and_publish(layout, plan, fetched, limits, preflight);
    if staged.is_err() {
        if let Err(e) = clear_staged(layout) {
            warn!(error = %e, "cannot remove the scratch folders of a refused staging; the next staging removes them");
        }
    }
    staged
}

fn build_and_publish(
    layout: &Layout,
    plan: &SyncPlan,
    fetched: &HashMap<String, CachedFile>,
    limits: &Limits,
    preflight: &Preflight,
) -> Result<StagedSummary, UpgradeError> {
    // 1.
    clear_staged(layout)?;
    let mut sides = Sides {
        modules: Side::new(layout.upgrade_tmp())?,
        models: Side::new(layout.models_upgrade_tmp())?,
    };
    failpoint("stage.scratch-created");
    // 2.
    let mut record = SetRecord {
        format: SetRecord::FORMAT,
        modules: BTreeMap::new(),
    };
    let cache = Cache { layout, fetched };
    for (n, m) in plan.modules.iter().enumerate() {
        let module = place_module(layout, &cache, &mut sides, m, n, limits)?;
        failpoint("stage.module-placed");
        record.modules.insert(m.key(), module);
    }
    let Sides { modules, models } = sides;
    // 3.
    sync_tree(&modules.root)?;
    sync_tree(&models.root)?;
    failpoint("stage.synced");
    // 4.
    write_marked_set(layout, plan, &record, &modules.root, preflight)?;
    // 5. and 6.
    publish(layout, &models.root, &modules.root)?;
    for m in &plan.modules {
        for f in m.fetches() {
            let _ = fs::remove_file(layout.download().join(&f.cache_name));
        }
    }
    remember_digests(layout, &record);
    let summary = StagedSummary {
        modules: staged_modules(plan),
        files: modules.files + models.files,
        bytes: modules.bytes + models.bytes,
        reused_files: modules.reused + models.reused,
    };
    info!(
        modules = summary.modules.len(),
        files = summary.files,
        bytes = summary.bytes,
        reused = summary.reused_files,
        "staged set complete"
    );
    Ok(summary)
}

/// The modules of `plan`, sorted.
fn staged_modules(plan: &SyncPlan) -> Vec<Coords> {
    let mut modules: Vec<Coords> = plan
        .modules
        .iter()
        .map(|m| m.resolved.module.coords.clone())
        .collect();
    modules.sort();
    modules
}

/// The two scratch folders of step 2.
struct Sides {
    modules: Side,
    models: Side,
}

/// The verified files of the download cache, by cache name.
struct Cache<'a> {
    layout: &'a Layout,
    fetched: &'a HashMap<String, CachedFile>,
}

impl Cache<'_> {
    fn get(&self, name: &str) -> Result<&CachedFile, UpgradeError> {
        self.fetched.get(name).ok_or_else(|| UpgradeError::Io {
            path: self.layout.download().join(name),
            source: io::Error::new(io::ErrorKind::NotFound, "not downloaded"),
        })
    }
}

/// Step 2 for the `n`th module: its main artifact and its packages into
/// the scratch folders, reused from an installed set or taken from the
/// cache.
fn place_module(
    layout: &Layout,
    cache: &Cache,
    sides: &mut Sides,
    m: &ModulePlan,
    n: usize,
    limits: &Limits,
) -> Result<ModuleRecord, UpgradeError> {
    let key = &m.resolved.module.coords;
    let main = match &m.main {
        MainPlan::Installed(origin, rec) => {
            sides.modules.reuse(&roots(layout, *origin).0, rec, key)?;
            rec.clone()
        }
        MainPlan::Fetch(f) => {
            let c = cache.get(&f.cache_name)?;
            let rec = FileRecord {
                name: m.file_name.clone(),
                sha256: c.sha256,
                size: c.size,
            };
            let from = layout.download().join(&f.cache_name);
            sides.modules.adopt(&from, &rec, key)?;
            rec
        }
    };
    if main.name == crate::coords::CORE_EXECUTABLE_NAME {
        // The host executable of a native core: the launcher runs it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = sides.modules.root.join(&main.name);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_at(&path))?;
        }
    }
    let scratch = layout
        .home()
        .join(format!("modules-upgrade.tmp.extract-{n}"));
    let place = Package {
        layout,
        cache,
        limits,
        key,
    };
    let dependencies = place.place(
        &m.dependencies,
        &mut sides.modules,
        |o, l| roots(l, o).0,
        scratch.clone(),
    )?;
    let model = place.place(&m.model, &mut sides.models, |o, l| roots(l, o).1, scratch)?;
    Ok(ModuleRecord {
        main,
        dependencies,
        model,
    })
}

/// What placing a module's package needs.
struct Package<'a> {
    layout: &'a Layout,
    cache: &'a Cache<'a>,
    limits: &'a Limits,
    key: &'a Coords,
}

impl Package<'_> {
    /// Places the package `plan` in `side`: its files reused from the
    /// installed folder `active` gives, or extracted through `scratch`.
    fn place(
        &self,
        plan: &Option<PackagePlan>,
        side: &mut Side,
        active: fn(Origin, &Layout) -> PathBuf,
        scratch: PathBuf,
    ) -> Result<Option<PackageRecord>, UpgradeError> {
        Ok(match plan {
            None => None,
            Some(PackagePlan::Installed(origin, p)) => {
                let from = active(*origin, self.layout);
                for f in &p.files {
                    side.reuse(&from, f, self.key)?;
                }
                Some(p.clone())
            }
            Some(PackagePlan::Fetch(f)) => {
                let c = self.cache.get(&f.cache_name)?;
                let archive = self.layout.download().join(&f.cache_name);
                let files = side.extract(&archive, &scratch, self.limits, self.key)?;
                Some(PackageRecord {
                    sha256: c.sha256,
                    size: c.size,
                    files,
                })
            }
        })
    }
}

/// Step 4: the hash record, then the marker, then the host's preflight on
/// the complete set (a refusal removes it).
fn write_marked_set(
    layout: &Layout,
    plan: &SyncPlan,
    record: &SetRecord,
    root: &Path,
    preflight: &Preflight,
) -> Result<(), UpgradeError> {
    record.write(root)?;
    failpoint("stage.record-written");
    let info: Vec<installed::InstalledModule> = plan
        .modules
        .iter()
        .map(|m| installed::InstalledModule::from(&m.resolved.module))
        .collect();
    installed::write_modules_info(root, &info)?;
    failpoint("stage.marker-written");
    if let Err(reason) = preflight(root) {
        clear_staged(layout)?;
        let set: Vec<String> = record.modules.keys().map(ToString::to_string).collect();
        return Err(UpgradeError::Preflight {
            set: set.join(", "),
            reason: reason.to_string(),
        });
    }
    Ok(())
}

/// Steps 5 and 6: the models, then the modules, renamed into place, each
/// followed by an fsync of the home; after the second the staged set
/// exists.
fn publish(layout: &Layout, models: &Path, modules: &Path) -> Result<(), UpgradeError> {
    fs::rename(models, layout.models_upgrade()).map_err(io_at(layout.models_upgrade()))?;
    sync_dir(layout.home()).map_err(io_at(layout.home()))?;
    failpoint("stage.models-renamed");
    fs::rename(modules, layout.upgrade_dir()).map_err(io_at(layout.upgrade_dir()))?;
    sync_dir(layout.home()).map_err(io_at(layout.home()))?;
    failpoint("stage.upgrade-renamed");
    Ok(())
}
