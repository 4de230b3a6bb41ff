//! The component kinds this host can create. Built-in kinds are listed here
//! in code; plugin kinds join them at start.

use std::path::Path;

use banalytics_sdk::ComponentKind;

use crate::plugins;

/// Known component kinds.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<ComponentKind>,
}

impl Registry {
    /// The kinds built into this binary.
    pub fn builtin() -> Registry {
        Registry {
            kinds: vec![
                banalytics_probe::KIND,
                banalytics_portal_integration::KIND,
                banalytics_upgrade_center::KIND,
            ],
        }
    }

    /// These kinds and those of the plugins in `modules` (the home's
    /// `modules/`); the report says what was loaded, skipped and refused,
    /// to be logged once logging is set up.
    pub fn with_plugins(mut self, modules: &Path) -> (Registry, plugins::LoadReport) {
        let (kinds, report) = plugins::load_dir(modules, &self.names());
        self.kinds.extend(kinds);
        (self, report)
    }

    /// The `kind` names, for validation and error messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.kind).collect()
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&ComponentKind> {
        self.kinds.iter().find(|k| k.kind == name)
    }
}
