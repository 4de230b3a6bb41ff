//! Quarantine: the module set that an automatic rollback took off the box,
//! why, and when (`state/quarantined-set.json`).
//!
//! The host writes it when it puts the previous set back; the upgrade
//! center reads it and refuses to stage the same target set again (with
//! `installation_cancelled` naming the rollback) until the portal assigns a
//! different set (the center lifts it) or an operator asks for a retry
//! (`upgrade --retry` lets the set through; the host lifts the record once
//! the set is active again, [`lift_if_active`]). So no mode of the upgrade
//! center re-stages a failed set by itself, and a box cannot loop on one.

use std::{io, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    coords::Coords,
    installed::set_modules,
    layout::{read_state, remove_state, write_state},
    ContentId, Layout, TargetSetId,
};

/// The file, in the home's `state/`.
pub const QUARANTINE_FILE: &str = "quarantined-set.json";

/// A set that failed its probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Its content id ([`crate::swap::set_identity`]); `""` on disk when
    /// its folder had none.
    #[serde(with = "crate::sets::optional_content")]
    pub set: Option<ContentId>,
    /// Its modules, sorted (on disk as module keys,
    /// [`crate::coords::keys`]): what a target set is compared with, by
    /// [`TargetSetId`].
    #[serde(with = "crate::coords::keys")]
    pub modules: Vec<Coords>,
    /// Why it was rolled back.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub rolled_back_ms: u64,
}

impl Quarantine {
    /// Whether a target set of `modules` (in any order) is this set.
    pub fn is_set(&self, modules: &[Coords]) -> bool {
        TargetSetId::of(modules) == TargetSetId::of(&self.modules)
    }

    /// The sentence a refusal gives.
    pub fn refusal(&self) -> String {
        format!(
            "this target set was rolled back at {} ms since the epoch: {}; it is not installed again until the portal assigns a different set or an operator runs `banalytics-box upgrade --retry`",
            self.rolled_back_ms, self.reason
        )
    }
}

/// The quarantine record of the set in `dir`, rolled back for `reason`
/// now.
pub fn of_set(dir: &Path, reason: &str) -> Quarantine {
    let modules = set_modules(dir).ok().flatten().unwrap_or_default();
    let rolled_back_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    Quarantine {
        set: crate::swap::set_identity(dir),
        modules,
        reason: reason.to_owned(),
        rolled_back_ms,
    }
}

/// The quarantined set, if there is one. An unreadable record is reported
/// as an error, not taken for "none".
pub fn read(layout: &Layout) -> io::Result<Option<Quarantine>> {
    read_state(layout, QUARANTINE_FILE, crate::format::QUARANTINED_SET)
}

/// Records `q`, durably.
pub fn write(layout: &Layout, q: &Quarantine) -> io::Result<()> {
    write_state(layout, QUARANTINE_FILE, crate::format::QUARANTINED_SET, q)
}

/// Lifts the quarantine when its set is the active set again (an operator
/// retried it, or put it back by hand): a record of a set that runs would
/// refuse the set the box runs. Whether it was lifted; a missing record is
/// `false`, an unreadable one an error.
pub fn lift_if_active(layout: &Layout) -> io::Result<bool> {
    let Some(q) = read(layout)? else {
        return Ok(false);
    };
    let active = set_modules(&layout.modules())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if !active.is_some_and(|keys| q.is_set(&keys)) {
        return Ok(false);
    }
    clear(layout)?;
    Ok(true)
}

/// Lifts the quarantine (a different target set, or its set active again).
pub fn clear(layout: &Layout) -> io::Result<()> {
    remove_state(layout, QUARANTINE_FILE, crate::format::QUARANTINED_SET)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_target_set_matches_in_any_order_and_a_different_one_does_not() {
        let q = Quarantine {
            set: None,
            modules: vec!["g:a:1".parse().unwrap(), "g:b:2".parse().unwrap()],
            reason: "r".into(),
            rolled_back_ms: 1,
        };
        assert!(q.is_set(&["g:b:2".parse().unwrap(), "g:a:1".parse().unwrap()]));
        assert!(!q.is_set(&["g:a:1".parse().unwrap()]));
        assert!(!q.is_set(&["g:a:1".parse().unwrap(), "g:b:3".parse().unwrap()]));
    }

    #[test]
    fn written_read_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(read(&layout).unwrap(), None);
        let q = of_set(&layout.modules(), "start 3 failed");
        write(&layout, &q).unwrap();
        assert_eq!(read(&layout).unwrap(), Some(q));
        clear(&layout).unwrap();
        clear(&layout).unwrap();
        assert_eq!(read(&layout).unwrap(), None);
    }

    #[test]
    fn the_quarantine_ends_when_its_set_is_active_again_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let install = |lines: &str| {
            fs::create_dir_all(layout.modules()).unwrap();
            fs::write(layout.modules().join("modules-info.properties"), lines).unwrap();
        };
        assert!(
            !lift_if_active(&layout).unwrap(),
            "no record, nothing lifted"
        );
        let q = Quarantine {
            set: None,
            modules: vec!["g:a:1".parse().unwrap(), "g:b:2".parse().unwrap()],
            reason: "start 3 failed".into(),
            rolled_back_ms: 1,
        };
        write(&layout, &q).unwrap();
        assert!(!lift_if_active(&layout).unwrap(), "nothing installed");
        install("g\\:a\\:1=component\\:0\n");
        assert!(!lift_if_active(&layout).unwrap());
        assert_eq!(read(&layout).unwrap(), Some(q.clone()), "another set runs");
        install("g\\:b\\:2=component\\:0\ng\\:a\\:1=component\\:0\n");
        assert!(lift_if_active(&layout).unwrap());
        assert_eq!(read(&layout).unwrap(), None, "its set runs again");
    }
}
