//! A staged set held for its apply policy (`state/apply-hold.json`).
//!
//! With `apply = "window"` or `"approval"` the upgrade center stages a set
//! and then waits for the window or the approval before it asks for the
//! restart that applies it. That wait lives in its Restarter's memory; the
//! hold makes it survive a restart for another reason (a power cut at
//! 14:00, a crash, `systemctl restart`): the host does not apply a staged
//! set that a hold names when it starts, and the Restarter, when it
//! starts, finds the held set and waits for its turn again.
//!
//! The upgrade center writes the hold (or removes an old one) before it
//! stages a set, so no complete staged set is ever without the hold its
//! policy asks for, and removes it right before it asks for the restart
//! that applies the set. A hold names its set by its modules: one that
//! names another set than the staged one (left by a synchronisation that
//! failed after writing it) holds nothing. An operator's `banalytics-box
//! apply` applies a held set anyway and removes the hold.

use std::io;

use serde::{Deserialize, Serialize};

use crate::{
    coords::Coords,
    installed::set_modules,
    layout::{read_state, remove_state, write_state},
    Layout, TargetSetId,
};

/// The file, in the home's `state/`.
pub const HOLD_FILE: &str = "apply-hold.json";

/// What holds a staged set back from being applied at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The held set's modules, sorted (on disk as module keys,
    /// [`crate::coords::keys`]).
    #[serde(with = "crate::coords::keys")]
    pub modules: Vec<Coords>,
    /// The set's id, which a portal approval names. Text that is not an
    /// id (a record written by hand) reads as none: the record stays
    /// readable, and no approval names that set.
    #[serde(default, deserialize_with = "lenient_set_id")]
    pub set_id: Option<TargetSetId>,
    /// What it waits for, in words (`status` shows it).
    pub waits_for: String,
}

impl Hold {
    /// A hold of the set of `modules` (in any order).
    pub fn new(mut modules: Vec<Coords>, set_id: Option<TargetSetId>, waits_for: String) -> Hold {
        modules.sort();
        modules.dedup();
        Hold {
            modules,
            set_id,
            waits_for,
        }
    }

    /// The held set's identity, from its modules.
    pub fn target(&self) -> TargetSetId {
        TargetSetId::of(&self.modules)
    }
}

fn lenient_set_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TargetSetId>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|id| id.parse().ok()))
}

/// The hold, if there is one. An unreadable one is an error, not "none".
pub fn read(layout: &Layout) -> io::Result<Option<Hold>> {
    read_state(layout, HOLD_FILE, crate::format::APPLY_HOLD)
}

/// Records `hold`, durably.
pub fn write(layout: &Layout, hold: &Hold) -> io::Result<()> {
    write_state(layout, HOLD_FILE, crate::format::APPLY_HOLD, hold)
}

/// Removes the hold, durably; `Ok` when there was none.
pub fn lift(layout: &Layout) -> io::Result<()> {
    remove_state(layout, HOLD_FILE, crate::format::APPLY_HOLD)
}

/// The hold of the complete staged set, if one holds it. A hold that
/// cannot be read holds it too (a set is never applied against its
/// policy because a file was damaged; `apply` or a new synchronisation
/// replaces it).
pub fn of_staged(layout: &Layout) -> Option<Hold> {
    let staged = set_modules(&layout.upgrade_dir()).ok().flatten()?;
    match read(layout) {
        Ok(Some(hold)) => (TargetSetId::of(&staged) == hold.target()).then_some(hold),
        Ok(None) => None,
        Err(e) => Some(Hold::new(
            staged,
            None,
            format!(
                "the apply hold {} cannot be read ({e}); `banalytics-box apply` applies the set",
                HOLD_FILE
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{
        coords::{Coords, ModuleType},
        installed::{write_modules_info, InstalledModule},
    };

    fn staged(layout: &Layout, keys: &[&str]) {
        fs::create_dir_all(layout.upgrade_dir()).unwrap();
        let modules: Vec<InstalledModule> = keys
            .iter()
            .map(|k| {
                let (g, rest) = k.split_once(':').unwrap();
                let (a, v) = rest.split_once(':').unwrap();
                InstalledModule {
                    coords: Coords::new(g, a, v).unwrap(),
                    module_type: ModuleType::Component,
                    upload_epoch: 0,
                }
            })
            .collect();
        write_modules_info(&layout.upgrade_dir(), &modules).unwrap();
    }

    #[test]
    fn a_hold_holds_the_staged_set_it_names_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(of_staged(&layout), None, "nothing staged");
        let hold = Hold::new(
            vec!["g:b:1".parse().unwrap(), "g:a:1".parse().unwrap()],
            Some(TargetSetId::of(&[])),
            "the maintenance window".into(),
        );
        write(&layout, &hold).unwrap();
        assert_eq!(of_staged(&layout), None, "nothing staged, nothing held");
        staged(&layout, &["g:a:1", "g:b:1"]);
        assert_eq!(of_staged(&layout), Some(hold.clone()));
        staged(&layout, &["g:a:2", "g:b:1"]);
        assert_eq!(of_staged(&layout), None, "a hold of another set");
        staged(&layout, &["g:a:1", "g:b:1"]);
        lift(&layout).unwrap();
        assert_eq!(of_staged(&layout), None);
        lift(&layout).unwrap();
    }

    #[test]
    fn a_damaged_hold_holds_the_staged_set_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        staged(&layout, &["g:a:1"]);
        fs::create_dir_all(layout.state()).unwrap();
        fs::write(layout.state().join(HOLD_FILE), b"{\"modu").unwrap();
        let hold = of_staged(&layout).unwrap();
        assert!(hold.waits_for.contains("cannot be read"), "{hold:?}");
    }
}
