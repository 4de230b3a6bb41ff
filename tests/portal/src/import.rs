//! The import of a data folder written by a portal before the database:
//! `portal-state.json` (modules, assignments, the published files'
//! digests), `environments.json` (the registrations) and `rollouts.json`.
//! At a start on a database that holds no state, what of them exists is
//! written in ONE transaction, logged, and each file is renamed
//! `NAME.imported`, so it is never imported twice. A database that holds
//! state already is never overwritten: the files are then left alone, with
//! a warning.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use tracing::{info, warn};

use super::{
    db::{self, stmt, Db, Stmt},
    registry::Entry,
    rollout::Rollout,
    rollouts, store, PortalError,
};

/// `rollouts.json`.
#[derive(Debug, Default, Deserialize)]
struct RolloutsFile {
    #[serde(default)]
    rollouts: Vec<Rollout>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, PortalError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| PortalError::State {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PortalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `db` holds any state.
fn has_state(db: &Db) -> Result<bool, PortalError> {
    for table in [
        "modules",
        "repo_files",
        "environments",
        "assignments",
        "raw_assignments",
        "rollouts",
    ] {
        let rows = db.rows(stmt!(format!("SELECT COUNT(*) FROM {table}")))?;
        if rows.first().is_some_and(|r| db::uint(r, 0) > 0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the import wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Imported {
    /// Module records.
    pub(crate) modules: usize,
    /// Environments with a target set.
    pub(crate) assignments: usize,
    /// Registered environments.
    pub(crate) environments: usize,
    /// Rollouts.
    pub(crate) rollouts: usize,
}

/// Imports the files of `data_dir` (the state file at `state_file`) into
/// `db` once; `None` when there was nothing to import.
pub(crate) fn import_once(
    db: &Db,
    data_dir: &Path,
    state_file: &Path,
) -> Result<Option<Imported>, PortalError> {
    let env_file = data_dir.join("environments.json");
    let rollouts_file = data_dir.join("rollouts.json");
    let files: Vec<PathBuf> = [
        state_file.to_path_buf(),
        env_file.clone(),
        rollouts_file.clone(),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    if files.is_empty() {
        return Ok(None);
    }
    if has_state(db)? {
        warn!(files = ?files, "a state file of an older portal beside a database that has state: not imported");
        return Ok(None);
    }
    let state: store::StoreFile = read_json(state_file)?.unwrap_or_default();
    let envs: BTreeMap<String, Entry> = read_json(&env_file)?.unwrap_or_default();
    let mut old_rollouts: RolloutsFile = read_json(&rollouts_file)?.unwrap_or_default();

    let mut stmts: Vec<Stmt> = Vec::new();
    // Publish order: the recorded one, then any module it does not list.
    let mut order: Vec<&String> = state
        .modules
        .keys()
        .filter(|c| !state.published.contains(c))
        .collect();
    order.extend(
        state
            .published
            .iter()
            .filter(|c| state.modules.contains_key(*c)),
    );
    for c in &order {
        stmts.push(store::upsert_module(&state.modules[*c]));
    }
    for (rel, digest) in &state.files {
        stmts.push(digest.upsert(rel));
    }
    for (env, set) in &state.assignments {
        stmts.extend(store::assignment_stmts(env, set));
    }
    for (env, modules) in &state.raw_assignments {
        stmts.push(store::raw_assignment_stmt(env, modules));
    }
    let now = rollouts::now_ms();
    for (uuid, entry) in &envs {
        stmts.push(entry.insert(uuid, now));
    }
    for r in &mut old_rollouts.rollouts {
        stmts.extend(rollouts::new_rollout_stmts(r));
    }
    let imported = Imported {
        modules: order.len(),
        assignments: state.assignments.len() + state.raw_assignments.len(),
        environments: envs.len(),
        rollouts: old_rollouts.rollouts.len(),
    };
    // The registrations' inserts are guarded; a file that names one twice
    // cannot, as it is a map.
    db.write(stmts)?;
    for f in &files {
        let mut to = f.as_os_str().to_owned();
        to.push(".imported");
        std::fs::rename(f, &to).map_err(|source| PortalError::Io {
            path: f.clone(),
            source,
        })?;
    }
    info!(
        modules = imported.modules,
        assignments = imported.assignments,
        environments = imported.environments,
        rollouts = imported.rollouts,
        files = ?files,
        "imported the state of an older portal into the database; the files are renamed *.imported"
    );
    Ok(Some(imported))
}
