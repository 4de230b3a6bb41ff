//! The component kinds this host can create. Built-in kinds are listed here
//! in code; plugin kinds join them at start, each with the library it comes
//! from. A kind is a value with its factory ([`ComponentKind`]), so the
//! registry is the only place that finds a kind by name, and it is passed
//! to whoever needs it.

use std::path::{Path, PathBuf};

use banalytics_sdk::ComponentKind;

use crate::plugins;

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
    /// The kinds built into this binary.
    pub fn builtin() -> Registry {
        let kinds = [
            banalytics_probe::kind(),
            banalytics_portal_integration::kind(),
            banalytics_upgrade_center::kind(),
        ];
        Registry {
            kinds: kinds
                .into_iter()
                .map(|kind| Registered { kind, origin: None })
                .collect(),
        }
    }

    /// These kinds and those of the plugins in `modules` (the home's
    /// `modules/`); the report says what was loaded, skipped and refused,
    /// to be logged once logging is set up.
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
