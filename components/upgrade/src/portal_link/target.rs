//! The target set as the portal names it, and the core this box tells
//! the portal it runs.

use std::collections::HashSet;

use banalytics_messages::portal::{CoreBuild, ModuleRef};

use crate::{
    coords::{Module, BIN_SUFFIX, CORE_ARTIFACT_ID, CORE_GROUP_ID, MODEL_SUFFIX},
    error::UpgradeError,
    layout::Layout,
};

/// Refuses an empty set, a module object that does not parse or has bad
/// coordinates, two modules with the same groupId and artifactId, and two
/// whose file or cache names collide, compared case-insensitively
/// (`a-b:c:1` and `a:b-c:1` are both `a-b-c-1.jar`).
pub(super) fn validate_target(modules: &[serde_json::Value]) -> Result<Vec<Module>, UpgradeError> {
    if modules.is_empty() {
        return Err(UpgradeError::InvalidTarget {
            reason:
                "the target set is empty (a portal fault, not a request to uninstall everything)"
                    .into(),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(modules.len());
    for (i, v) in modules.iter().enumerate() {
        let m: Module =
            serde_json::from_value(v.clone()).map_err(|e| UpgradeError::InvalidTarget {
                reason: format!("module #{}: {e}", i + 1),
            })?;
        let ga = m.coords.module_name();
        if !seen.insert(ga.clone()) {
            return Err(UpgradeError::InvalidTarget {
                reason: format!("module {ga} appears more than once"),
            });
        }
        out.push(m);
    }
    let mut names = std::collections::HashMap::<String, String>::new();
    for m in &out {
        let c = &m.coords;
        let stem = format!("{}-{}-{}", c.group_id(), c.artifact_id(), c.version());
        for name in [
            crate::coords::file_name(m),
            format!("{stem}{BIN_SUFFIX}"),
            format!("{stem}{MODEL_SUFFIX}"),
        ] {
            if let Some(other) = names.insert(name.to_lowercase(), c.to_string()) {
                if other != c.to_string() {
                    return Err(UpgradeError::InvalidTarget {
                        reason: format!(
                            "modules {other} and {c} both need the file name {name} (names are compared ignoring case)"
                        ),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The core's coordinates and build: those of the core that runs, as the
/// host recorded them at start ([`banalytics_home::running`]); this
/// crate's own version when nothing was recorded.
pub(crate) fn core_module(layout: &Layout) -> (ModuleRef, Option<CoreBuild>) {
    let running = banalytics_home::running::read(layout).ok().flatten();
    let version = running
        .as_ref()
        .map_or(env!("CARGO_PKG_VERSION"), |c| c.version.as_str());
    let module = ModuleRef {
        group_id: CORE_GROUP_ID.into(),
        artifact_id: CORE_ARTIFACT_ID.into(),
        version: version.into(),
    };
    let build = running.map(|c| CoreBuild {
        sha256: c.sha256,
        origin: c.origin.as_str().to_owned(),
        launcher_handshake: Some(c.launcher_handshake),
        fallback: c.fallback,
    });
    (module, build)
}
