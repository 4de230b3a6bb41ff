//! The file-system sandbox of an isolated component's child process:
//! Landlock, entered by the child itself right after `exec`, before it
//! opens the plugin library or starts a thread.
//!
//! What the child may do with the file system (everything else that
//! Landlock handles is refused by the kernel):
//!
//! * write, truncate, remove, rename or link in or out, make any kind of
//!   file: only under the home's `data/` and the child's own temporary
//!   folder (`TMPDIR`, made and removed by the host);
//! * read and execute: the system's folders ([`SYSTEM_READ`]: libraries,
//!   `ld.so`'s configuration, `/proc`, `/sys`, `/dev`), the home's
//!   `modules*/` and `models*/` (read-only), `data/` and the temporary
//!   folder. The home's `state/` and `config/` are neither readable nor
//!   writable: the child's configuration arrives over its socket;
//! * write to (and open with `O_TRUNC`) existing device nodes under
//!   `/dev` (`/dev/null`, a camera): they are no part of the home, and
//!   `Stdio::null()` opens `/dev/null` for writing.
//!
//! Landlock is an allow-list: a right is granted on a folder and everything
//! beneath it, and nothing can be taken out of a grant. So reads are
//! granted on the folders a plugin needs, not on `/`; when the home lies
//! beneath one of them (`/opt/banalytics`), that folder is granted entry by
//! entry beside the path to the home ([`beside`]), so the grant never
//! covers `state/` or `config/`.
//!
//! The rights handled are those of Landlock ABI 3 ([`TARGET_ABI`]: read,
//! execute, write, truncate, remove, make, refer), best effort: a kernel
//! with an older ABI enforces what it knows (ABI 1: no `truncate(2)` rule,
//! and no rename across folders at all; ABI 2: no `truncate(2)` rule), a
//! kernel without Landlock none. Device `ioctl`s (ABI 5) and connecting
//! to Unix sockets (ABI 9) are not file-system writes and are not handled.
//! `no_new_privs` is set in every case. The child logs the level it
//! reached; the host warns once when the kernel has no Landlock, and
//! `status` shows [`Support`].

use std::{
    io,
    path::{Path, PathBuf},
};

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use serde::Serialize;

/// The Landlock ABI whose file-system rights are handled: ABI 3 (Linux
/// 6.2) is the last that added a file-system *write* right (`truncate`).
pub const TARGET_ABI: ABI = ABI::V3;

/// The ABI number of [`TARGET_ABI`], for [`Support`].
const TARGET_ABI_NUMBER: i64 = 3;

/// Folders a plugin reads (and may execute from): libraries, `ld.so`'s
/// configuration and `/etc`'s name service files, what `std` and libc
/// read about the machine (`/proc`, `/sys`), device nodes, `/run` (where
/// `/etc/resolv.conf` often points). Those missing on a machine are
/// skipped.
pub const SYSTEM_READ: &[&str] = &[
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/opt", "/nix",
    "/proc", "/sys", "/dev", "/run",
];

pub use super::DATA_DIR;

/// How much of the sandbox a kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every right this host handles is enforced.
    Full,
    /// An older Landlock ABI: some rights are not (see the module docs).
    Partial,
    /// No Landlock: children run without a file-system sandbox.
    None,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Full => "full",
            Level::Partial => "partial",
            Level::None => "none",
        })
    }
}

pub use super::TMP_PREFIX;

/// Removes the temporary folders of children whose host is gone (a host
/// killed with SIGKILL removes none): those named after a process that no
/// longer exists. Another user's are left (they cannot be removed anyway).
pub fn sweep_stale_tmp(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// What the kernel offers isolated components, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Support {
    /// The kernel's Landlock ABI version; `None` without Landlock (not
    /// built in, or not enabled at boot).
    pub landlock_abi: Option<i64>,
    /// What of the sandbox that gives.
    pub level: Level,
}

impl Support {
    /// Asks the running kernel (`landlock_create_ruleset` with
    /// `LANDLOCK_CREATE_RULESET_VERSION`).
    pub fn probe() -> Support {
        // SAFETY: a null attribute and size 0 with the version flag is
        // the documented query; it creates nothing.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        Support::of_abi((abi > 0).then_some(abi))
    }

    fn of_abi(landlock_abi: Option<i64>) -> Support {
        let level = match landlock_abi {
            None => Level::None,
            Some(abi) if abi >= TARGET_ABI_NUMBER => Level::Full,
            Some(_) => Level::Partial,
        };
        Support {
            landlock_abi,
            level,
        }
    }
}

/// The rights granted beneath one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A folder or file.
    pub path: PathBuf,
    /// What is allowed beneath it.
    pub access: Rights,
}

/// The rights of a grant, named so that a plan reads without bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    /// Read files, list folders, execute.
    Read,
    /// Read, and write or truncate existing files (device nodes).
    ReadWriteFiles,
    /// Everything handled.
    All,
}

impl Rights {
    fn bits(self) -> BitFlags<AccessFs> {
        match self {
            Rights::Read => AccessFs::from_read(TARGET_ABI),
            // `Truncate` too: `File::create("/dev/null")` opens with
            // `O_TRUNC`, which Landlock checks (a no-op on a device).
            Rights::ReadWriteFiles => {
                AccessFs::from_read(TARGET_ABI) | AccessFs::WriteFile | AccessFs::Truncate
            }
            Rights::All => AccessFs::from_all(TARGET_ABI),
        }
    }
}

/// The grants of a child for the home `home` and the temporary folder
/// `tmp` (both canonical): the module docs' list.
pub fn plan(home: &Path, tmp: &Path) -> io::Result<Vec<Grant>> {
    let mut grants = Vec::new();
    let grant =
        |grants: &mut Vec<Grant>, path: PathBuf, access| grants.push(Grant { path, access });
    for root in SYSTEM_READ {
        let root = Path::new(root);
        let Ok(real) = root.canonicalize() else {
            continue;
        };
        let access = if real == Path::new("/dev") {
            Rights::ReadWriteFiles
        } else {
            Rights::Read
        };
        if home.starts_with(&real) {
            for path in beside(&real, home)? {
                grant(&mut grants, path, access);
            }
        } else {
            grant(&mut grants, real, access);
        }
    }
    for entry in std::fs::read_dir(home)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("modules") || name.starts_with("models") {
            grant(&mut grants, entry.path(), Rights::Read);
        } else if name == DATA_DIR {
            grant(&mut grants, entry.path(), Rights::All);
        }
    }
    grant(&mut grants, tmp.to_path_buf(), Rights::All);
    Ok(grants)
}

/// The entries beneath `root` that together cover everything beneath it
/// except `inner` (a path beneath `root`): at each folder on the way down,
/// every entry but the one leading to `inner`.
pub fn beside(root: &Path, inner: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let Ok(rest) = inner.strip_prefix(root) else {
        return Ok(vec![root.to_path_buf()]);
    };
    let mut dir = root.to_path_buf();
    for step in rest.components() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name() != step.as_os_str() {
                paths.push(entry.path());
            }
        }
        dir.push(step);
    }
    Ok(paths)
}

/// What [`enter`] reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// Landlock's `RulesetStatus`.
    pub level: Level,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
}

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A folder of the sandbox cannot be resolved.
    #[error("{}: {source}", path.display())]
    Path {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The home cannot be read to plan the grants.
    #[error("home {}: {source}", home.display())]
    Plan {
        /// The home.
        home: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The kernel refused the ruleset.
    #[error("landlock: {0}")]
    Landlock(#[source] landlock::RulesetError),
    /// The kernel refused a rule.
    #[error("landlock rule for {}: {source}", path.display())]
    Rule {
        /// The folder of the rule.
        path: PathBuf,
        /// The cause.
        source: landlock::RulesetError,
    },
}

/// Restricts the calling thread and every thread and process it starts
/// from now on to the grants of [`plan`], and sets `no_new_privs`. Call
/// before starting any thread: threads already running are not restricted.
pub fn enter(home: &Path, tmp: &Path) -> Result<Entered, SandboxError> {
    let canonical = |p: &Path| {
        p.canonicalize().map_err(|source| SandboxError::Path {
            path: p.to_owned(),
            source,
        })
    };
    let (home, tmp) = (canonical(home)?, canonical(tmp)?);
    let grants = plan(&home, &tmp).map_err(|source| SandboxError::Plan {
        home: home.clone(),
        source,
    })?;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.create())
        .map_err(SandboxError::Landlock)?;
    for g in &grants {
        ruleset = ruleset
            .add_rules(path_beneath_rules([&g.path], g.access.bits()))
            .map_err(|source| SandboxError::Rule {
                path: g.path.clone(),
                source,
            })?;
    }
    let status = ruleset.restrict_self().map_err(SandboxError::Landlock)?;
    Ok(Entered {
        level: match status.ruleset {
            RulesetStatus::FullyEnforced => Level::Full,
            RulesetStatus::PartiallyEnforced => Level::Partial,
            RulesetStatus::NotEnforced => Level::None,
        },
        no_new_privs: status.no_new_privs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_covers_every_sibling_on_the_way_to_the_inner_path_and_not_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        for d in ["opt/box/state", "opt/box/modules", "opt/other", "usr/lib"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("opt/readme"), b"").unwrap();
        let mut got = beside(&root, &root.join("opt/box")).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                root.join("opt/other"),
                root.join("opt/readme"),
                root.join("usr")
            ]
        );
    }

    #[test]
    fn the_plan_reads_modules_and_models_writes_data_and_tmp_and_omits_state_and_config() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().canonicalize().unwrap().join("home");
        for d in [
            "state/tuf",
            "config",
            "modules",
            "modules-backup",
            "models",
            "data",
            "logs",
        ] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        let tmp = t.path().canonicalize().unwrap().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let plan = plan(&home, &tmp).unwrap();
        let access = |p: &Path| plan.iter().find(|g| g.path == p).map(|g| g.access);
        assert_eq!(access(&home.join("modules")), Some(Rights::Read));
        assert_eq!(access(&home.join("modules-backup")), Some(Rights::Read));
        assert_eq!(access(&home.join("models")), Some(Rights::Read));
        assert_eq!(access(&home.join("data")), Some(Rights::All));
        assert_eq!(access(&tmp), Some(Rights::All));
        for p in ["state", "config", "logs"] {
            assert_eq!(access(&home.join(p)), None, "{p}");
        }
        assert!(
            plan.iter()
                .all(|g| !home.starts_with(&g.path) && !g.path.starts_with(home.join("state"))),
            "no grant covers the home as a whole or its state: {plan:?}"
        );
    }

    #[test]
    fn the_temporary_folders_of_a_host_that_is_gone_are_swept_and_a_live_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let live = t
            .path()
            .join(format!("{TMP_PREFIX}{}-echo-aaaa", std::process::id()));
        // Beyond the kernel's pid_max (at most 2^22): never a process.
        let gone = t.path().join(format!("{TMP_PREFIX}{}-echo-bbbb", 1 << 23));
        let other = t.path().join("banalytics-other-1");
        for d in [&live, &gone, &other] {
            std::fs::create_dir_all(d.join("inner")).unwrap();
        }
        assert_eq!(sweep_stale_tmp(t.path()), std::slice::from_ref(&gone));
        assert!(live.is_dir() && other.is_dir() && !gone.exists());
    }

    #[test]
    fn support_is_full_from_abi_3_partial_below_and_none_without_landlock() {
        assert_eq!(Support::of_abi(Some(7)).level, Level::Full);
        assert_eq!(Support::of_abi(Some(3)).level, Level::Full);
        assert_eq!(Support::of_abi(Some(2)).level, Level::Partial);
        assert_eq!(Support::of_abi(None).level, Level::None);
    }
}
