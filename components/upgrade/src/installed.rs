//! (temporary shim until the helper's installed.rs lands)
use std::{io, path::Path};

use crate::{
    coords::{Coords, Module, ModuleType},
    layout::MODULES_INFO,
};

/// An installed module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModule {
    /// Coordinates.
    pub coords: Coords,
    /// Type.
    pub module_type: ModuleType,
    /// Upload time.
    pub upload_epoch: i64,
}

impl InstalledModule {
    /// From a target module.
    pub fn from_module(m: &Module) -> Self {
        InstalledModule {
            coords: m.coords.clone(),
            module_type: m.module_type,
            upload_epoch: m.upload_time,
        }
    }
    /// Key.
    pub fn key(&self) -> String {
        self.coords.to_string()
    }
}

/// Reads.
pub fn read_modules_info(dir: &Path) -> io::Result<Option<Vec<InstalledModule>>> {
    let bytes = match std::fs::read(dir.join(MODULES_INFO)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let entries = crate::properties::read(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut out = Vec::new();
    for (k, v) in entries {
        let coords: Coords = k.parse().map_err(|e: crate::coords::CoordsError| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })?;
        let (t, epoch) = v.split_once(':').unwrap_or((v.as_str(), "0"));
        out.push(InstalledModule {
            coords,
            module_type: t
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad type {t}")))?,
            upload_epoch: epoch.parse().unwrap_or(0),
        });
    }
    Ok(Some(out))
}

/// Writes.
pub fn write_modules_info(dir: &Path, modules: &[InstalledModule]) -> io::Result<()> {
    let entries: Vec<(String, String)> = modules
        .iter()
        .map(|m| (m.key(), format!("{}:{}", m.module_type, m.upload_epoch)))
        .collect();
    crate::record::write_durably(
        &dir.join(MODULES_INFO),
        &crate::properties::write(&entries, None),
    )
}
