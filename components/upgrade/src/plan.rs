//! What a synchronisation has to do: for each module of the target set,
//! which bytes are already here and which must be fetched.
//!
//! Planning is a pure function of the resolved target set and the records of
//! the installed and backup sets, so that the delta rules are tested without
//! a network or a disk: a part is kept when the installed record holds the
//! same coordinates and the same SHA-256 (or, without a known digest under
//! `checksum_policy = "warn"`, the same coordinates), and taken from the
//! backup set on the same terms, so that going back to the previous set
//! through the portal moves no bytes. The records it is given are the
//! trusted ones ([`crate::inventory::trusted_record`]): a module with a
//! file whose content no longer matches is not in them, so it is fetched.

use serde::Serialize;

use crate::{
    coords::{self, Coords, Module, BIN_SUFFIX, MODEL_SUFFIX},
    fetch::Expected,
    record::{FileRecord, ModuleRecord, PackageRecord, SetRecord},
};

/// Where one artifact of the target set comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Its repository URL.
    pub url: String,
    /// What it must be: its SHA-256 when known (TUF, module object or
    /// `.sha256`), where that came from, and its size when declared; what
    /// the fetch engine is given.
    #[serde(flatten)]
    pub expected: Expected,
}

/// A module of the target set with its artifacts' locations and digests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedModule {
    /// The module object.
    pub module: Module,
    /// The main artifact.
    pub main: Target,
    /// The dependencies package, if the module has one.
    pub dependencies: Option<Target>,
    /// The model package, if the module has one.
    pub model: Option<Target>,
    /// A patch from the installed build that could replace the main
    /// artifact's download ([`crate::delta`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<crate::delta::Offer>,
}

/// An artifact to take from the cache, downloading it first if needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetch {
    /// Where it comes from.
    pub target: Target,
    /// Its file name in `modules-download/`.
    pub cache_name: String,
}

/// Which set on disk a reused file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `modules/` and `models/`.
    Active,
    /// `modules-backup/` and `models-backup/`.
    Backup,
}

/// A main artifact: already on disk, or to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MainPlan {
    /// A file of the active or backup set, to hard-link into the staged set.
    Installed(Origin, FileRecord),
    /// To fetch.
    Fetch(Fetch),
}

/// A package: its extracted files already on disk, or to fetch and extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PackagePlan {
    /// Files of the active or backup set, to hard-link into the staged set.
    Installed(Origin, PackageRecord),
    /// To fetch and extract.
    Fetch(Fetch),
}

/// What happens to a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Installed and unchanged.
    Keep,
    /// Not installed in any version.
    Add,
    /// Installed in another version, or with other bytes.
    Change,
}

/// One module of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModulePlan {
    /// The resolved module.
    pub resolved: ResolvedModule,
    /// Keep, add or change.
    pub action: Action,
    /// The main artifact's file name in the module folder.
    pub file_name: String,
    /// The main artifact.
    pub main: MainPlan,
    /// The dependencies package.
    pub dependencies: Option<PackagePlan>,
    /// The model package.
    pub model: Option<PackagePlan>,
}

impl ModulePlan {
    /// The module's key in the hash record ([`SetRecord`]'s `modules`).
    pub fn key(&self) -> Coords {
        self.resolved.module.coords.clone()
    }

    /// The artifacts to fetch.
    pub fn fetches(&self) -> impl Iterator<Item = &Fetch> {
        let main = match &self.main {
            MainPlan::Fetch(f) => Some(f),
            MainPlan::Installed(..) => None,
        };
        main.into_iter()
            .chain(fetch_of(&self.dependencies))
            .chain(fetch_of(&self.model))
    }
}

fn fetch_of(p: &Option<PackagePlan>) -> Option<&Fetch> {
    match p {
        Some(PackagePlan::Fetch(f)) => Some(f),
        _ => None,
    }
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPlan {
    /// The target set, in the portal's order.
    pub modules: Vec<ModulePlan>,
    /// Installed modules absent from the target set.
    #[serde(with = "crate::coords::keys")]
    pub removed: Vec<Coords>,
}

impl SyncPlan {
    /// Whether the target set is exactly what is installed.
    pub fn is_noop(&self) -> bool {
        self.removed.is_empty() && self.modules.iter().all(|m| m.action == Action::Keep)
    }
}

/// Plans `target` against the installed modules (those of
/// `modules-info.properties`) and the installed set's `record`
/// (`None` on a first run, or for a set the Java box installed, which has no
/// record: then every artifact is fetched once).
pub fn plan(
    target: Vec<ResolvedModule>,
    installed: &[Coords],
    record: Option<&SetRecord>,
    backup: Option<&SetRecord>,
) -> SyncPlan {
    let empty = SetRecord::default();
    let record = record.unwrap_or(&empty);
    let backup = backup.unwrap_or(&empty);
    let modules: Vec<ModulePlan> = target
        .into_iter()
        .map(|r| plan_module(r, installed, record, backup))
        .collect();
    let removed = installed
        .iter()
        .filter(|c| !modules.iter().any(|m| &m.resolved.module.coords == *c))
        .cloned()
        .collect();
    SyncPlan { modules, removed }
}

fn plan_module(
    resolved: ResolvedModule,
    installed_modules: &[Coords],
    record: &SetRecord,
    backup: &SetRecord,
) -> ModulePlan {
    let module = &resolved.module;
    let key = &module.coords;
    let installed: Option<&ModuleRecord> = record
        .modules
        .get(key)
        .filter(|_| installed_modules.contains(&module.coords));
    let file_name = coords::file_name(module);
    let cache = |suffix: &str| {
        format!(
            "{}-{}-{}{suffix}",
            module.coords.group_id(),
            module.coords.artifact_id(),
            module.coords.version()
        )
    };
    let previous = backup.modules.get(key);
    let candidates = [(Origin::Active, installed), (Origin::Backup, previous)];
    let main = candidates
        .iter()
        .find_map(|(origin, m)| {
            m.filter(|m| {
                m.main.name == file_name && same(&resolved.main, m.main.sha256, m.main.size)
            })
            .map(|m| MainPlan::Installed(*origin, m.main.clone()))
        })
        .unwrap_or_else(|| {
            MainPlan::Fetch(Fetch {
                target: resolved.main.clone(),
                cache_name: file_name.clone(),
            })
        });
    let package = |target: &Option<Target>,
                   pick: fn(&ModuleRecord) -> Option<&PackageRecord>,
                   suffix: &str| {
        target.as_ref().map(|t| {
            candidates
                .iter()
                .find_map(|(origin, m)| {
                    m.and_then(pick)
                        .filter(|p| same(t, p.sha256, p.size))
                        .map(|p| PackagePlan::Installed(*origin, p.clone()))
                })
                .unwrap_or_else(|| {
                    PackagePlan::Fetch(Fetch {
                        target: t.clone(),
                        cache_name: cache(suffix),
                    })
                })
        })
    };
    let dependencies = package(
        &resolved.dependencies,
        |m| m.dependencies.as_ref(),
        BIN_SUFFIX,
    );
    let model = package(&resolved.model, |m| m.model.as_ref(), MODEL_SUFFIX);
    let active = |p: &Option<PackagePlan>| {
        p.as_ref()
            .is_none_or(|p| matches!(p, PackagePlan::Installed(Origin::Active, _)))
    };
    let unchanged = matches!(main, MainPlan::Installed(Origin::Active, _))
        && installed.is_some_and(|m| m.dependencies.is_some() == dependencies.is_some())
        && installed.is_some_and(|m| m.model.is_some() == model.is_some())
        && active(&dependencies)
        && active(&model);
    let action = if unchanged {
        Action::Keep
    } else if installed_modules
        .iter()
        .any(|c| c.module_name() == module.coords.module_name())
    {
        Action::Change
    } else {
        Action::Add
    };
    ModulePlan {
        resolved,
        action,
        file_name,
        main,
        dependencies,
        model,
    }
}

/// An installed artifact is the target when the digests agree, or, with no
/// known target digest, when the declared size (if any) agrees: the
/// coordinates already matched.
fn same(target: &Target, sha256: banalytics_home::Sha256, size: u64) -> bool {
    match target.expected.sha256 {
        Some(t) => t == sha256,
        None => target.expected.size.is_none_or(|s| s == size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(key: &str) -> ResolvedModule {
        let coords: Coords = key.parse().unwrap();
        let module: Module = serde_json::from_value(serde_json::json!({
            "groupId": coords.group_id(),
            "artifactId": coords.artifact_id(),
            "version": coords.version(),
            "type": "component",
            "uploadTime": "2024-01-01T00:00:00",
        }))
        .unwrap();
        ResolvedModule {
            module,
            main: Target {
                url: format!("http://127.0.0.1/{key}"),
                expected: Expected::default(),
            },
            dependencies: None,
            model: None,
            patch: None,
        }
    }

    #[test]
    fn another_version_of_an_installed_artifact_is_a_change_and_a_new_artifact_an_add() {
        let installed = [
            "com.x:a:1".parse().unwrap(),
            "com.x:gone:1".parse().unwrap(),
        ];
        let plan = plan(
            vec![
                resolved("com.x:a:2"),
                resolved("com.x:b:1"),
                resolved("com.x:a-b:1"),
            ],
            &installed,
            None,
            None,
        );
        let actions: Vec<_> = plan
            .modules
            .iter()
            .map(|m| (m.key().to_string(), m.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("com.x:a:2".to_owned(), Action::Change),
                ("com.x:b:1".to_owned(), Action::Add),
                ("com.x:a-b:1".to_owned(), Action::Add),
            ]
        );
        assert_eq!(plan.removed, installed);
    }
}
