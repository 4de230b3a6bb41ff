//! Component IDs: a UUID per component instance, assigned at its first start
//! and the same ever after.
//!
//! They are kept in `state/component-ids.json` (instance name to UUID), not
//! in `box.toml`, so that configuration cannot set or change them. An entry
//! whose component left the configuration is kept: putting the component
//! back gives it its old ID. Format 1 of the file is that map alone (no
//! `format` field); a file of a newer format is left as it is, and the
//! components get IDs for the run only.

use std::{collections::BTreeMap, io, path::Path};

use uuid::Uuid;

use banalytics_home::{format, layout::write_atomic};
use tracing::warn;

use crate::home::Home;

/// Loads the IDs, assigns new ones to `names` that have none, and persists
/// them before returning.
pub fn assign(home: &Home, names: &[&str]) -> io::Result<BTreeMap<String, Uuid>> {
    home.ensure_state_dir()?;
    let file = home.ids_file();
    if let Some(newer) = format::newer_json(&file, format::COMPONENT_IDS) {
        warn!(error = %newer, "component IDs are new for this run and not kept");
        return Ok(names
            .iter()
            .map(|name| ((*name).to_owned(), Uuid::new_v4()))
            .collect());
    }
    let mut ids = load(&file)?;
    let before = ids.len();
    for name in names {
        ids.entry((*name).to_owned()).or_insert_with(Uuid::new_v4);
    }
    if ids.len() != before {
        let json = serde_json::to_vec_pretty(&ids).map_err(io::Error::other)?;
        write_atomic(&file, &json)?;
    }
    Ok(ids)
}

/// The IDs assigned so far; empty when none were, or when the file is of a
/// newer format ([`format`]; [`assign`] then leaves it).
pub fn load(file: &Path) -> io::Result<BTreeMap<String, Uuid>> {
    if format::newer_json(file, format::COMPONENT_IDS).is_some() {
        return Ok(BTreeMap::new());
    }
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_assigned_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = assign(&home, &["a", "b"]).unwrap();
        let again = assign(&home, &["b", "a", "c"]).unwrap();
        assert_eq!(first["a"], again["a"]);
        assert_eq!(first["b"], again["b"]);
        assert_ne!(again["c"], again["a"]);
        assert_eq!(load(&home.ids_file()).unwrap(), again);
    }
}
