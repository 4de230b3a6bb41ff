//! The swap: a staged set becomes the active one (apply), the backup
//! becomes the active one (rollback), and a new set on probation becomes
//! permanent (commit). Run with the host stopped: at the start of `run`, or
//! by `banalytics-box apply` / `rollback`.
//!
//! Crash safety. Every procedure first writes a journal
//! (`modules-swap.journal`) naming the set it installs and the set it
//! replaces by identity (the SHA-256 of their `modules-info.properties` and
//! hash record). Each step is a rename (or, on Linux, an atomic exchange
//! with `renameat2(RENAME_EXCHANGE)` where the file system has it) followed
//! by an fsync of the home, and each step looks at the folders before it
//! acts, so running a procedure again after a crash at any point finishes
//! it: [`recover`] does exactly that when it finds a journal. Recovery is
//! idempotent: once the journal is gone there is nothing left to do.
//!
//! Folders: `modules`/`models` (active), `modules-upgrade`/`models-upgrade`
//! (staged), `modules-backup`/`models-backup` (previous),
//! `modules-trash`/`models-trash` (a backup being discarded; deleted after
//! the swap, and again at the next start if a crash left it).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    coords::Coords,
    failpoint::failpoint,
    installed::{write_atomic, MODULES_INFO_FILE},
    layout::{sync_dir, Layout},
    record::{BadFile, SetRecord, RECORD_FILE},
    ContentId,
};

/// The journal, in the home (it matches `modules*`).
pub const JOURNAL: &str = "modules-swap.journal";
/// The probation record of a set that was applied and not yet committed.
pub const PROBATION: &str = "modules-probation.json";

/// Seconds every component must stay in RUN before a set on probation
/// commits, unless the upgrade center's `health_grace_s` says otherwise.
pub const DEFAULT_HEALTH_GRACE_S: f64 = 30.0;
/// Starts a set on probation gets before the previous set is put back,
/// unless the upgrade center's `max_boot_attempts` says otherwise.
pub const DEFAULT_MAX_BOOT_ATTEMPTS: u32 = 3;

/// Why a swap could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Nothing to apply.
    #[error("no staged set: {0} has no modules-info.properties")]
    NothingStaged(PathBuf),
    /// Nothing to roll back to.
    #[error("no backup set: {0} has no modules-info.properties")]
    NoBackup(PathBuf),
    /// The journal is unreadable.
    #[error("journal {path} is unreadable: {reason}")]
    BadJournal {
        /// The journal.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The active set could not be restored after an apply, so it must
    /// not become the backup.
    #[error("the active set in {dir} could not be restored if the staged set failed: {problem}; the staged set is not applied")]
    BackupNotRestorable {
        /// The active folder.
        dir: PathBuf,
        /// The first file that is missing or has another size.
        problem: String,
    },
    /// The journal or the probation record is of a newer format
    /// ([`crate::format`]): it is left as it is, and nothing is swapped.
    #[error(transparent)]
    NewerFormat(#[from] crate::format::NewerFormat),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SwapError {
    let path = path.to_owned();
    move |source| SwapError::Io { op, path, source }
}

/// Which procedure a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Procedure {
    /// Staged set to active.
    Apply,
    /// Backup to active.
    Rollback,
}

/// The journal's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The procedure in progress.
    pub procedure: Procedure,
    /// Identity of the set being installed.
    pub incoming: ContentId,
    /// Identity of the set being replaced (`""` when there is none).
    #[serde(with = "crate::sets::optional_content")]
    pub outgoing: Option<ContentId>,
    /// The last step done.
    pub step: u32,
    /// Whether the procedure moves the models too. An apply whose staged
    /// set has no `models-upgrade/` (the Java box stages such sets) keeps
    /// the active models; journals written before this field existed
    /// always moved them.
    #[serde(default = "yes")]
    pub models: bool,
    /// An apply's components excused from the probation it starts
    /// ([`Probation::excused`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excused: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A set applied and not yet committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    /// Identity of the set on probation.
    pub set: ContentId,
    /// Starts of the host since the set was applied.
    pub boot_attempts: u32,
    /// The last failure seen while on probation.
    pub last_error: Option<String>,
    /// Components that were failing under the previous committed set when
    /// the box restarted to apply this one: their health does not decide
    /// the verdict, so that a box with one broken camera can still take
    /// the upgrade that fixes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excused: Vec<String>,
}

/// What `status` shows of the module folders.
#[derive(Debug, Clone, Serialize)]
pub struct SetsReport {
    /// The active set's modules (by module key in `status --json`).
    #[serde(with = "crate::coords::keys")]
    pub installed: Vec<Coords>,
    /// The staged set's modules, if one waits.
    #[serde(with = "crate::coords::optional_keys")]
    pub staged: Option<Vec<Coords>>,
    /// The backup set's modules, if there is one.
    #[serde(with = "crate::coords::optional_keys")]
    pub backup: Option<Vec<Coords>>,
    /// The probation state, if the active set is not committed.
    pub probation: Option<Probation>,
    /// Why the staged set is not applied yet, when it waits.
    pub staged_waits_for: Option<String>,
    /// The set an automatic rollback took off the box, if it is refused.
    pub quarantined: Option<crate::quarantine::Quarantine>,
    /// A swap interrupted by a crash, finished at the next start.
    pub interrupted: Option<Journal>,
}

/// The identity of the set in `dir`: SHA-256 over its
/// `modules-info.properties` and hash record; `None` if it has no marker.
pub fn set_identity(dir: &Path) -> Option<ContentId> {
    use sha2::{Digest, Sha256};
    let info = fs::read(dir.join(MODULES_INFO_FILE)).ok()?;
    let record = fs::read(dir.join(RECORD_FILE)).unwrap_or_default();
    let mut h = Sha256::new();
    h.update((info.len() as u64).to_le_bytes());
    h.update(&info);
    h.update(&record);
    Some(ContentId::from_digest(crate::Sha256::from_hasher(h)))
}

fn journal_path(layout: &Layout) -> PathBuf {
    layout.home().join(JOURNAL)
}

fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    format: u32,
) -> Result<Option<T>, SwapError> {
    use crate::format::Versioned;
    match crate::format::read_json(path, format) {
        Ok(None) => Ok(None),
        Ok(Some(Versioned::Known(t))) => Ok(Some(t)),
        Ok(Some(Versioned::Newer(newer))) => Err(newer.into()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(SwapError::BadJournal {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Writes the record `path` as format `format`; refused, leaving it, when
/// the record there is of a newer one.
fn write_json<T: Serialize>(path: &Path, format: u32, value: &T) -> Result<(), SwapError> {
    if let Some(newer) = crate::format::newer_json(path, format) {
        return Err(newer.into());
    }
    let bytes = crate::format::to_json(value, format);
    write_atomic(path, &bytes).map_err(|e| SwapError::Io {
        op: "write",
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })
}

/// Removes the record `path` durably; refused, leaving it, when it is of
/// a format newer than `format`.
fn remove_record(path: &Path, format: u32) -> Result<(), SwapError> {
    if let Some(newer) = crate::format::newer_json(path, format) {
        return Err(newer.into());
    }
    remove_file_durably(path)
}

fn remove_file_durably(path: &Path) -> Result<(), SwapError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("remove", path)(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(io_err("fsync", dir))
}

/// The probation record, if the active set is on probation.
pub fn probation(layout: &Layout) -> Result<Option<Probation>, SwapError> {
    read_json(&layout.home().join(PROBATION), crate::format::PROBATION)
}

/// The journal or the probation record, when one is of a format newer than
/// this core knows ([`crate::format`]): then no swap, no probation count and
/// no commit may happen, since each would act on a record it cannot read.
pub fn newer_record(layout: &Layout) -> Option<crate::format::NewerFormat> {
    crate::format::newer_json(&journal_path(layout), crate::format::SWAP_JOURNAL).or_else(|| {
        crate::format::newer_json(&layout.home().join(PROBATION), crate::format::PROBATION)
    })
}

/// Records the probation state.
pub fn set_probation(layout: &Layout, p: &Probation) -> Result<(), SwapError> {
    write_json(&layout.home().join(PROBATION), crate::format::PROBATION, p)
}

/// Renames `from` to `to` and fsyncs the home; `to` must not exist (or be an
/// empty folder).
fn rename(layout: &Layout, from: &Path, to: &Path) -> Result<(), SwapError> {
    crate::platform::rename_dir(from, to).map_err(io_err("rename", from))?;
    sync_dir(layout.home()).map_err(io_err("fsync", layout.home()))
}

fn ensure_dir(layout: &Layout, dir: &Path) -> Result<(), SwapError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        sync_dir(layout.home()).map_err(io_err("fsync", layout.home()))?;
    }
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The staged set is the active set now, on probation.
    Applied,
    /// No staged set waits.
    NothingStaged,
    /// A staged set waits, and the active set is on probation: the backup
    /// must stay the last committed set, so the staged set is applied only
    /// after the active set is committed or rolled back.
    WaitsForCommit,
    /// A staged set waits, and a hold ([`crate::hold`]) keeps it for the
    /// upgrade center's apply policy (a maintenance window, an approval).
    Held,
}

/// Why a staged set is not applied now, if it waits; `None` when there is
/// no staged set or nothing stops it.
pub fn staged_waits_for(layout: &Layout) -> Result<Option<String>, SwapError> {
    if set_identity(&layout.upgrade_dir()).is_none() {
        return Ok(None);
    }
    Ok(probation(layout)?
        .map(|p| {
            format!(
                "the active set {} is on probation (start {}); the staged set is applied once it is committed or rolled back",
                short(&p.set),
                p.boot_attempts
            )
        })
        .or_else(|| crate::hold::of_staged(layout).map(|h| h.waits_for)))
}

/// The staged set's modules, if a complete staged set waits.
pub fn staged_modules(layout: &Layout) -> Option<Vec<Coords>> {
    crate::installed::set_modules(&layout.upgrade_dir())
        .ok()
        .flatten()
}

/// Throws the staged set away: first its marker (from then on it is not a
/// staged set, whatever a crash leaves), then its folders.
pub fn discard_staged(layout: &Layout) -> Result<(), SwapError> {
    remove_file_durably(&layout.upgrade_dir().join(MODULES_INFO_FILE))?;
    for dir in [layout.upgrade_dir(), layout.models_upgrade()] {
        remove_dir_if_exists(&dir)?;
    }
    ensure_dir(layout, &layout.upgrade_dir())
}

/// Checks that the active set, which an apply makes the backup, could be
/// put back: every file its hash record lists is there with its recorded
/// size (contents are checked by `verify`, not here: this runs at every
/// apply and reads no file). The empty set, a set without a record (the
/// Java box's) and a first install are restorable.
fn check_restorable(layout: &Layout) -> Result<(), SwapError> {
    let modules = layout.modules();
    let Ok(Some(record)) = SetRecord::load(&modules) else {
        return Ok(());
    };
    let models = layout.models();
    for (path, file) in record.files(&modules, &models) {
        let problem = match fs::metadata(&path) {
            Ok(m) if m.len() == file.size => continue,
            Ok(m) => format!(
                "{} has {} bytes, not {}",
                path.display(),
                m.len(),
                file.size
            ),
            Err(e) => format!("{}: {e}", path.display()),
        };
        return Err(SwapError::BackupNotRestorable {
            dir: modules.clone(),
            problem,
        });
    }
    Ok(())
}

/// Applies the staged set (see the module docs), unless the active set is
/// on probation ([`Applied::WaitsForCommit`]) or could not be restored
/// ([`SwapError::BackupNotRestorable`]).
pub fn apply(layout: &Layout) -> Result<Applied, SwapError> {
    apply_excusing(layout, &[])
}

/// [`apply`], with the probation it starts excusing `excused` (written
/// with the probation record itself, so no reader sees it without them).
pub fn apply_excusing(layout: &Layout, excused: &[String]) -> Result<Applied, SwapError> {
    recover(layout)?;
    let Some(incoming) = set_identity(&layout.upgrade_dir()) else {
        return Ok(Applied::NothingStaged);
    };
    if probation(layout)?.is_some() {
        return Ok(Applied::WaitsForCommit);
    }
    if crate::hold::of_staged(layout).is_some() {
        return Ok(Applied::Held);
    }
    check_restorable(layout)?;
    let outgoing = set_identity(&layout.modules());
    // 1. The journal: from here a crash is finished by `recover`.
    write_json(
        &journal_path(layout),
        crate::format::SWAP_JOURNAL,
        &Journal {
            procedure: Procedure::Apply,
            incoming,
            outgoing,
            step: 0,
            models: layout.models_upgrade().exists(),
            excused: excused.to_vec(),
        },
    )?;
    failpoint("apply.journal-written");
    run_journal(layout)?;
    Ok(Applied::Applied)
}

/// Makes the backup the active set (see the module docs).
pub fn rollback(layout: &Layout) -> Result<(), SwapError> {
    recover(layout)?;
    // Its last step removes the probation record: one of a newer format
    // stops the rollback before its first.
    let probation = layout.home().join(PROBATION);
    if let Some(newer) = crate::format::newer_json(&probation, crate::format::PROBATION) {
        return Err(newer.into());
    }
    let incoming =
        set_identity(&layout.backup()).ok_or_else(|| SwapError::NoBackup(layout.backup()))?;
    let outgoing = set_identity(&layout.modules());
    write_json(
        &journal_path(layout),
        crate::format::SWAP_JOURNAL,
        &Journal {
            procedure: Procedure::Rollback,
            incoming,
            outgoing,
            step: 0,
            models: true,
            excused: Vec::new(),
        },
    )?;
    failpoint("rollback.journal-written");
    run_journal(layout)
}

/// Finishes a procedure a crash interrupted, if the journal says there is
/// one; then clears leftovers. Returns the journal it finished.
pub fn recover(layout: &Layout) -> Result<Option<Journal>, SwapError> {
    let journal: Option<Journal> = read_json(&journal_path(layout), crate::format::SWAP_JOURNAL)?;
    if let Some(j) = &journal {
        warn!(procedure = ?j.procedure, "finishing a module swap interrupted by a crash");
        run_journal(layout)?;
    }
    for trash in [
        layout.home().join("modules-trash"),
        layout.home().join("models-trash"),
    ] {
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))?;
        }
    }
    Ok(journal)
}

fn run_journal(layout: &Layout) -> Result<(), SwapError> {
    let path = journal_path(layout);
    let Some(j) = read_json::<Journal>(&path, crate::format::SWAP_JOURNAL)? else {
        return Ok(());
    };
    match j.procedure {
        Procedure::Apply => apply_steps(layout, &j)?,
        Procedure::Rollback => rollback_steps(layout, &j)?,
    }
    // Last: the journal goes. Until this fsync, recovery redoes the (now
    // no-op) steps.
    remove_record(&path, crate::format::SWAP_JOURNAL)?;
    if crate::failpoint::ENABLED {
        failpoint(&format!("{}.journal-removed", name(j.procedure)));
    }
    for trash in [
        layout.home().join("modules-trash"),
        layout.home().join("models-trash"),
    ] {
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))?;
        }
    }
    Ok(())
}

fn name(p: Procedure) -> &'static str {
    match p {
        Procedure::Apply => "apply",
        Procedure::Rollback => "rollback",
    }
}

/// One step of a procedure: skipped when the journal says it is done or
/// when its effect is already there (a crash after the step and before the
/// journal update); otherwise done, then recorded.
struct Steps<'a> {
    layout: &'a Layout,
    journal: Journal,
    procedure: &'static str,
}

impl Steps<'_> {
    fn step(
        &mut self,
        n: u32,
        what: &str,
        done: impl FnOnce() -> bool,
        act: impl FnOnce() -> Result<(), SwapError>,
    ) -> Result<(), SwapError> {
        if self.journal.step >= n {
            return Ok(());
        }
        if !done() {
            act()?;
            if crate::failpoint::ENABLED {
                failpoint(&format!("{}.{n}.{what}", self.procedure));
            }
        }
        self.journal.step = n;
        write_json(
            &journal_path(self.layout),
            crate::format::SWAP_JOURNAL,
            &self.journal,
        )?;
        if crate::failpoint::ENABLED {
            failpoint(&format!("{}.{n}.recorded", self.procedure));
        }
        Ok(())
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), SwapError> {
    crate::layout::remove_dir_if_exists(dir).map_err(io_err("remove", dir))
}

/// Apply, from wherever a crash left it. Every step is a rename into a
/// name that does not exist (or the modules exchange, checked by set
/// identity), so "its effect is already there" is a question about the
/// folders.
fn apply_steps(layout: &Layout, j: &Journal) -> Result<(), SwapError> {
    let home = layout.home();
    let (m, u, b) = (layout.modules(), layout.upgrade_dir(), layout.backup());
    let (mm, mu, mb) = (
        layout.models(),
        layout.models_upgrade(),
        layout.models_backup(),
    );
    let (t, mt, scratch) = (
        home.join("modules-trash"),
        home.join("models-trash"),
        home.join("modules-swap.tmp"),
    );
    let mut steps = Steps {
        layout,
        journal: j.clone(),
        procedure: "apply",
    };
    // 1-2. Discard the old backups (deleted once the swap is done). Without
    // staged models the models backup goes too and the active models stay:
    // they belong to both sets, and a rollback then leaves them in place.
    steps.step(
        1,
        "backup-discarded",
        || !b.exists(),
        || {
            remove_dir_if_exists(&t)?;
            rename(layout, &b, &t)
        },
    )?;
    steps.step(
        2,
        "models-backup-discarded",
        || !mb.exists(),
        || {
            remove_dir_if_exists(&mt)?;
            rename(layout, &mb, &mt)
        },
    )?;
    // 3-4. Models: active to backup, staged to active.
    if j.models {
        steps.step(
            3,
            "models-out",
            || !mm.exists(),
            || rename(layout, &mm, &mb),
        )?;
        steps.step(4, "models-in", || !mu.exists(), || rename(layout, &mu, &mm))?;
    }
    // 5. The point of no return: the staged set becomes the active set.
    steps.step(
        5,
        "modules-in",
        || set_identity(&m) == Some(j.incoming),
        || modules_in(layout, &u, &scratch),
    )?;
    // 6. The replaced set becomes the backup. A first install replaced
    // no set: the backup is then the empty set, with a marker listing no
    // module, so that a rollback has a set to put back.
    steps.step(
        6,
        "backup-kept",
        || set_identity(&b).is_some(),
        || backup_kept(layout, &scratch),
    )?;
    // 7. An empty staging folder, active models, and the probation record.
    steps.step(
        7,
        "probation",
        || false,
        || {
            ensure_dir(layout, &u)?;
            ensure_dir(layout, &mm)?;
            set_probation(
                layout,
                &Probation {
                    set: j.incoming,
                    boot_attempts: 0,
                    last_error: None,
                    excused: j.excused.clone(),
                },
            )
        },
    )?;
    info!(set = %short(&j.incoming), "staged set applied; on probation until committed");
    Ok(())
}

/// Apply's step 5: the staged set `u` becomes `modules/`, by an exchange
/// where the platform has one, else by moving the old set out to
/// `scratch` first (each rename durable).
fn modules_in(layout: &Layout, u: &Path, scratch: &Path) -> Result<(), SwapError> {
    let (home, m) = (layout.home(), layout.modules());
    if !m.exists() {
        // First install, or the fallback moved the old set out already.
        return rename(layout, u, &m);
    }
    if crate::platform::exchange(&m, u).is_ok() {
        sync_dir(home).map_err(io_err("fsync", home))?;
        return Ok(());
    }
    rename(layout, &m, scratch)?;
    failpoint("apply.5.old-moved-out");
    rename(layout, u, &m)
}

/// Apply's step 6: the replaced set (exchanged into the staging folder,
/// or moved out to `scratch`) becomes the backup; with none, an empty set.
fn backup_kept(layout: &Layout, scratch: &Path) -> Result<(), SwapError> {
    let (home, u, b) = (layout.home(), layout.upgrade_dir(), layout.backup());
    if b.exists() {
        // Moved here before a crash; only the marker is missing.
    } else if scratch.exists() {
        rename(layout, scratch, &b)?;
    } else if u.exists() {
        rename(layout, &u, &b)?;
    } else {
        fs::create_dir_all(&b).map_err(io_err("create", &b))?;
        sync_dir(home).map_err(io_err("fsync", home))?;
    }
    if set_identity(&b).is_none() {
        crate::installed::write_modules_info(&b, &[]).map_err(|e| SwapError::Io {
            op: "write",
            path: b.join(MODULES_INFO_FILE),
            source: io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

fn short(id: &ContentId) -> String {
    id.short()
}

/// Rollback, from wherever a crash left it: models first (three renames
/// through a scratch name), then the modules (an exchange, or three
/// renames), then the probation record.
fn rollback_steps(layout: &Layout, j: &Journal) -> Result<(), SwapError> {
    let home = layout.home();
    let (m, b) = (layout.modules(), layout.backup());
    let (mm, mb) = (layout.models(), layout.models_backup());
    let (ms, scratch) = (home.join("models-swap.tmp"), home.join("modules-swap.tmp"));
    let mut steps = Steps {
        layout,
        journal: j.clone(),
        procedure: "rollback",
    };
    let swap_models = j.step > 0 || mb.exists();
    if swap_models {
        steps.step(
            1,
            "models-out",
            || !mm.exists(),
            || {
                ensure_dir(layout, &mm)?;
                rename(layout, &mm, &ms)
            },
        )?;
        steps.step(2, "models-in", || !mb.exists(), || rename(layout, &mb, &mm))?;
        steps.step(
            3,
            "models-kept",
            || !ms.exists(),
            || rename(layout, &ms, &mb),
        )?;
    }
    steps.step(
        4,
        "modules-in",
        || set_identity(&m) == Some(j.incoming),
        || {
            if !m.exists() {
                return rename(layout, &b, &m);
            }
            if crate::platform::exchange(&m, &b).is_ok() {
                sync_dir(home).map_err(io_err("fsync", home))?;
                return Ok(());
            }
            rename(layout, &m, &scratch)?;
            failpoint("rollback.4.old-moved-out");
            rename(layout, &b, &m)
        },
    )?;
    steps.step(
        5,
        "backup-kept",
        || !scratch.exists(),
        || rename(layout, &scratch, &b),
    )?;
    steps.step(
        6,
        "probation-cleared",
        || false,
        || remove_record(&home.join(PROBATION), crate::format::PROBATION),
    )?;
    info!(set = %short(&j.incoming), "backup set is active again");
    Ok(())
}

/// Commits the set on probation: from now on it is the installed set.
pub fn commit(layout: &Layout) -> Result<(), SwapError> {
    failpoint("commit.begin");
    remove_record(&layout.home().join(PROBATION), crate::format::PROBATION)?;
    failpoint("commit.probation-removed");
    Ok(())
}

/// Counts a start of the host while on probation; returns the record.
pub fn count_boot(layout: &Layout) -> Result<Option<Probation>, SwapError> {
    let Some(mut p) = probation(layout)? else {
        return Ok(None);
    };
    p.boot_attempts += 1;
    set_probation(layout, &p)?;
    failpoint("probation.counted");
    Ok(Some(p))
}

/// The module folders as `status` shows them.
pub fn report(layout: &Layout) -> SetsReport {
    let keys = |dir: &Path| crate::installed::modules_in_order(dir).ok().flatten();
    SetsReport {
        installed: keys(&layout.modules()).unwrap_or_default(),
        staged: keys(&layout.upgrade_dir()),
        backup: keys(&layout.backup()),
        probation: probation(layout).ok().flatten(),
        staged_waits_for: staged_waits_for(layout).ok().flatten(),
        quarantined: crate::quarantine::read(layout).ok().flatten(),
        interrupted: read_json(&journal_path(layout), crate::format::SWAP_JOURNAL)
            .ok()
            .flatten(),
    }
}

/// Checks every active file against its recorded SHA-256 and size. `Ok`
/// with the bad files (empty when all match); an error when the active set
/// has no record.
pub fn verify(layout: &Layout) -> Result<Vec<BadFile>, SwapError> {
    let modules = layout.modules();
    let record = SetRecord::load(&modules)
        .map_err(io_err("read", &modules.join(RECORD_FILE)))?
        .ok_or_else(|| SwapError::Io {
            op: "read",
            path: modules.join(RECORD_FILE),
            source: io::Error::new(io::ErrorKind::NotFound, "the active set has no hash record"),
        })?;
    Ok(record.verify(&modules, &layout.models()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        coords::{Coords, ModuleType},
        installed::{read_modules_info, write_modules_info, InstalledModule},
        record::{FileRecord, ModuleRecord},
    };

    /// Writes a set of one module `a:{version}` with a main file (and a
    /// record of it) into `dir`, and its model file into `models` when
    /// given.
    fn write_set(dir: &Path, models: Option<&Path>, version: &str) {
        fs::create_dir_all(dir).unwrap();
        let main = format!("a-{version}.jar");
        fs::write(dir.join(&main), version).unwrap();
        if let Some(models) = models {
            fs::create_dir_all(models).unwrap();
            fs::write(models.join("model.bin"), version).unwrap();
        }
        let coords = Coords::new("g", "a", version).unwrap();
        let record = SetRecord {
            format: SetRecord::FORMAT,
            modules: [(
                coords.clone(),
                ModuleRecord {
                    main: FileRecord {
                        name: main,
                        sha256: crate::Sha256::from_bytes([0; 32]),
                        size: version.len() as u64,
                    },
                    dependencies: None,
                    model: None,
                },
            )]
            .into(),
        };
        record.write(dir).unwrap();
        write_modules_info(
            dir,
            &[InstalledModule {
                coords,
                module_type: ModuleType::Component,
                upload_epoch: 0,
            }],
        )
        .unwrap();
    }

    fn versions(dir: &Path) -> Vec<String> {
        read_modules_info(dir)
            .unwrap()
            .unwrap_or_default()
            .iter()
            .map(|m| m.coords.version().to_owned())
            .collect()
    }

    fn home() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_folders().unwrap();
        (dir, layout)
    }

    #[test]
    fn a_failed_first_install_rolls_back_to_the_empty_set() {
        let (_dir, layout) = home();
        write_set(&layout.upgrade_dir(), Some(&layout.models_upgrade()), "1");
        assert_eq!(apply(&layout).unwrap(), Applied::Applied);
        assert_eq!(versions(&layout.modules()), ["1"]);
        // The backup is the empty set, not an unmarked folder.
        assert!(set_identity(&layout.backup()).is_some());
        assert!(versions(&layout.backup()).is_empty());

        rollback(&layout).unwrap();
        assert!(versions(&layout.modules()).is_empty());
        assert!(probation(&layout).unwrap().is_none());
        assert!(!layout.models().join("model.bin").exists());
    }

    #[test]
    fn a_held_staged_set_is_not_applied_and_says_what_it_waits_for() {
        let (_dir, layout) = home();
        write_set(&layout.upgrade_dir(), None, "1");
        let modules = crate::installed::set_modules(&layout.upgrade_dir())
            .unwrap()
            .unwrap();
        let hold = crate::hold::Hold::new(modules, None, "the maintenance window".into());
        crate::hold::write(&layout, &hold).unwrap();
        assert_eq!(apply(&layout).unwrap(), Applied::Held);
        assert!(layout.has_staged_set(), "still staged");
        assert_eq!(
            staged_waits_for(&layout).unwrap().as_deref(),
            Some("the maintenance window")
        );
        crate::hold::lift(&layout).unwrap();
        assert_eq!(apply(&layout).unwrap(), Applied::Applied);
        assert_eq!(versions(&layout.modules()), ["1"]);
    }

    #[test]
    fn a_staged_set_waits_while_the_active_set_is_on_probation() {
        let (_dir, layout) = home();
        write_set(&layout.upgrade_dir(), None, "1");
        apply(&layout).unwrap();
        commit(&layout).unwrap();
        write_set(&layout.upgrade_dir(), None, "2");
        apply(&layout).unwrap();
        let committed = set_identity(&layout.backup()).unwrap();

        write_set(&layout.upgrade_dir(), None, "3");
        assert_eq!(apply(&layout).unwrap(), Applied::WaitsForCommit);
        assert_eq!(versions(&layout.modules()), ["2"]);
        assert_eq!(set_identity(&layout.backup()).unwrap(), committed);
        let why = staged_waits_for(&layout).unwrap().unwrap();
        assert!(why.contains("on probation"), "{why}");
        assert_eq!(report(&layout).staged_waits_for.as_deref(), Some(&*why));

        commit(&layout).unwrap();
        assert_eq!(staged_waits_for(&layout).unwrap(), None);
        assert_eq!(apply(&layout).unwrap(), Applied::Applied);
        assert_eq!(versions(&layout.modules()), ["3"]);
        assert_eq!(versions(&layout.backup()), ["2"]);
    }

    #[test]
    fn a_set_staged_without_models_keeps_the_active_models_through_apply_and_rollback() {
        let (_dir, layout) = home();
        write_set(&layout.upgrade_dir(), Some(&layout.models_upgrade()), "1");
        apply(&layout).unwrap();
        commit(&layout).unwrap();
        write_set(&layout.upgrade_dir(), None, "2");
        assert!(!layout.models_upgrade().exists());

        apply(&layout).unwrap();
        assert_eq!(versions(&layout.modules()), ["2"]);
        assert_eq!(fs::read(layout.models().join("model.bin")).unwrap(), b"1");

        rollback(&layout).unwrap();
        assert_eq!(versions(&layout.modules()), ["1"]);
        assert_eq!(fs::read(layout.models().join("model.bin")).unwrap(), b"1");
    }

    #[test]
    fn an_active_set_with_a_missing_file_is_not_replaced() {
        let (_dir, layout) = home();
        write_set(&layout.upgrade_dir(), None, "1");
        apply(&layout).unwrap();
        commit(&layout).unwrap();
        fs::remove_file(layout.modules().join("a-1.jar")).unwrap();
        write_set(&layout.upgrade_dir(), None, "2");

        let err = apply(&layout).unwrap_err();
        assert!(
            matches!(&err, SwapError::BackupNotRestorable { problem, .. } if problem.contains("a-1.jar")),
            "{err}"
        );
        assert_eq!(versions(&layout.modules()), ["1"]);
        assert_eq!(versions(&layout.upgrade_dir()), ["2"]);
    }
}
