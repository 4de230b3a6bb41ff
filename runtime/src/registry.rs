//! The component kinds this host can create. Built-in kinds are listed here
//! in code; plugin kinds join them at start, each with the library it comes
//! from. A kind is a value with its factory ([`ComponentKind`]), so the
//! registry is the only place that finds a kind by name, and it is passed
//! to whoever needs it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use banalytics_sdk::ComponentKind;
use banalytics_upgrade_center::Preflight;

use crate::{config::BoxConfig, plugins, preflight};

/// Known component kinds.
#[derive(Clone, Debug)]
pub struct Registry {
    kinds: Vec<Registered>,
}

/// A kind, and the plugin library it comes from (`None` when built in).
#[derive(Clone, Debug)]
struct Registered {
    kind: ComponentKind,
    origin: Option<PathBuf>,
}

impl Registry {
    /// The kinds built into this binary; the upgrade center stages every
    /// complete set (no preflight).
    pub fn builtin() -> Registry {
        Registry::with_upgrade_center(banalytics_upgrade_center::kind())
    }

    /// The kinds built into this binary, the upgrade center's with this
    /// host's preflight ([`preflight::check_set`]): a staged set must
    /// provide every kind `config` names and hold only plugin libraries
    /// this host would load.
    pub(crate) fn for_config(config: &BoxConfig) -> Registry {
        let builtin: Vec<String> = Registry::builtin()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let configured: Vec<(String, String)> = config
            .components
            .iter()
            .map(|c| (c.name.clone(), c.kind.clone()))
            .collect();
        // The upgrade center's hook speaks in words: the refusal as its
        // message.
        let check: Preflight = Arc::new(move |dir: &Path| {
            preflight::check_set(dir, &builtin, &configured).map_err(Into::into)
        });
        Registry::with_upgrade_center(banalytics_upgrade_center::kind_with(check))
    }

    fn with_upgrade_center(upgrade_center: ComponentKind) -> Registry {
        let kinds = [
            banalytics_probe::kind(),
            banalytics_portal_integration::kind(),
            upgrade_center,
        ];
        Registry {
            kinds: kinds
                .into_iter()
                .map(|kind| Registered { kind, origin: None })
                .collect(),
        }
    }

    /// These kinds and those of the plugins of the set in `modules` (the
    /// home's `modules/`, [`plugins::load_dir`]); the report says what was
    /// loaded and refused, to be logged once logging is set up.
    pub fn with_plugins(mut self, modules: &Path) -> (Registry, plugins::LoadReport) {
        let (kinds, report) = plugins::load_dir(modules, &self.names());
        self.kinds
            .extend(kinds.into_iter().map(|(kind, library)| Registered {
                kind,
                origin: Some(library),
            }));
        (self, report)
    }

    /// The `kind` names, for validation and error messages.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.iter().map(|k| k.kind.name()).collect()
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&ComponentKind> {
        self.find(name).map(|k| &k.kind)
    }

    /// The library the kind called `name` comes from; `None` for a built-in
    /// (or unknown) kind.
    pub fn origin(&self, name: &str) -> Option<&Path> {
        self.find(name).and_then(|k| k.origin.as_deref())
    }

    fn find(&self, name: &str) -> Option<&Registered> {
        self.kinds.iter().find(|k| k.kind.name() == name)
    }
}
