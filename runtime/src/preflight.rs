//! The host's preflight of a staged module set, the closure the upgrade
//! center runs before it publishes a set (`banalytics_upgrade_center::Preflight`).
//!
//! The upgrade center knows neither `box.toml` nor plugins, so it cannot
//! tell whether a set would start; the host can, without loading anything:
//! 1. Every plugin library of the set ([`plugins::set_libraries`]) has a
//!    readable identity record of this host's ABI and build, and declares
//!    no kind that is built in or exported by another library of the set:
//!    the checks the load path makes before `dlopen`.
//! 2. Every kind `box.toml` names is built in or declared by one of those
//!    libraries.
//!
//! A set that fails is refused with every reason, naming the module, the
//! file and the expected and found values, or the component and its kind;
//! it is never staged, so the box never restarts into a start that would
//! be refused. The configured kinds are those of the `box.toml` the host
//! started with: configuration is read at start, and an edit takes effect
//! (and is checked) at the next start.

use std::path::{Path, PathBuf};

use banalytics_sdk::plugin::FileIdentity;

use crate::plugins;

/// Why a staged set would not start: every reason found, shown joined
/// with `; `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", reasons.join("; "))]
pub struct Refusal {
    /// Each reason: a module and its file, or a component and its kind.
    pub reasons: Vec<String>,
}

/// Checks the staged set in `dir` against the `builtin` kinds and the
/// `configured` components (name, kind).
pub fn check_set(
    dir: &Path,
    builtin: &[String],
    configured: &[(String, String)],
) -> Result<(), Refusal> {
    let libraries = plugins::set_libraries(dir).map_err(|e| Refusal {
        reasons: vec![e.to_string()],
    })?;
    let mut problems = Vec::new();
    let mut provided: Vec<(String, PathBuf)> = Vec::new();
    for library in &libraries {
        let file = PathBuf::from(library.path.file_name().unwrap_or_default());
        let identity = match FileIdentity::read_checked(&library.path) {
            Ok(identity) => identity,
            Err(e) => {
                problems.push(format!(
                    "module {}: plugin {}",
                    library.module,
                    e.in_file(file)
                ));
                continue;
            }
        };
        let conflicts: Vec<String> = identity
            .kinds
            .iter()
            .filter_map(|k| plugins::kind_conflict(k, builtin, &provided))
            .collect();
        if !conflicts.is_empty() {
            problems.push(format!(
                "module {}: plugin {}: {}",
                library.module,
                file.display(),
                conflicts.join(", ")
            ));
            continue;
        }
        provided.extend(identity.kinds.into_iter().map(|k| (k, file.clone())));
    }
    for (component, kind) in configured {
        if !builtin.contains(kind) && !provided.iter().any(|(k, _)| k == kind) {
            problems.push(format!(
                "component {component:?} of box.toml has kind {kind:?}, which neither a built-in kind nor a plugin of the set provides"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refusal { reasons: problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path, info: &str, files: &[(&str, &[u8])]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("modules-info.properties"), info).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn builtin() -> Vec<String> {
        vec!["probe".to_owned(), "software-upgrade-center".to_owned()]
    }

    #[test]
    fn a_configured_kind_nothing_provides_is_refused_naming_component_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        set(
            dir.path(),
            "com.example\\:other\\:1.0=component\\:1700000000\n",
            &[("com.example-other-1.0.jar", b"a jar")],
        );
        let configured = vec![
            ("heartbeat".to_owned(), "probe".to_owned()),
            ("echo".to_owned(), "sample-echo".to_owned()),
        ];
        assert_eq!(
            check_set(dir.path(), &builtin(), &configured).map_err(|r| r.to_string()),
            Err("component \"echo\" of box.toml has kind \"sample-echo\", which neither a built-in kind nor a plugin of the set provides".to_owned())
        );
        assert_eq!(check_set(dir.path(), &builtin(), &configured[..1]), Ok(()));
    }

    #[test]
    fn a_component_library_without_an_identity_is_refused_naming_module_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let library = format!("com.example-junk-1.0.{}", std::env::consts::DLL_EXTENSION);
        set(
            dir.path(),
            "com.example\\:junk\\:1.0=component\\:1700000000\n",
            &[(&library, b"not a library")],
        );
        let err = check_set(dir.path(), &builtin(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "module com.example:junk:1.0: plugin {library}: not a library: "
            )),
            "{err}"
        );
    }

    #[test]
    fn a_library_that_is_not_a_component_main_artifact_is_not_checked() {
        let dir = tempfile::tempdir().unwrap();
        let stray = format!("libstray.{}", std::env::consts::DLL_EXTENSION);
        set(
            dir.path(),
            "com.example\\:other\\:1.0=component\\:1700000000\n",
            &[(&stray, b"not a library")],
        );
        assert_eq!(check_set(dir.path(), &builtin(), &[]), Ok(()));
    }
}
