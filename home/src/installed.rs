//! The installed module set as it lives on disk, in the active folder
//! (`modules/`) or a staged one (`modules-upgrade/`).
//!
//! Two files describe a set:
//!
//! - `modules-info.properties` lists the modules (key: the module key of
//!   [`crate::coords`]; value `type:uploadEpochSecondsUTC`). It is
//!   the original Java box's format and its "this set is complete" marker,
//!   so it is kept exactly as Java reads and writes it (contracts section 2).
//! - `modules-hashes.json` records the SHA-256 and size of every file the
//!   set installed ([`crate::record`]). It is a separate file, not extra
//!   keys in the properties file, because the Java box loads every key of
//!   `modules-info.properties` as a module; a box rolled back to, or still
//!   read by, the Java implementation must keep working. A set installed by
//!   the Java box simply has no hash record.
//!
//! Both are written through a temporary file, fsync, rename and a fsync of
//! the folder ([`write_atomic`]), so a crash leaves the old file or the new
//! one, never half of one; the hash record is written first and
//! `modules-info.properties` last, because the latter marks the set
//! complete. The I/O is blocking: the files are a few kilobytes; async
//! callers use `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::coords::{Coords, CoordsError, Module, ModuleType};
use crate::layout::FileError;
use crate::properties::{self, PropertiesError};

/// File name of the module list, in every module folder; in
/// `modules-upgrade/` also the staged set's marker ([`crate::layout`]).
pub const MODULES_INFO_FILE: &str = "modules-info.properties";
/// Comment line written at the top of `modules-info.properties`.
const MODULES_INFO_COMMENT: &str = "Banalytics box installed modules";

/// Why the installed set could not be read or written.
#[derive(Debug, Error)]
pub enum InstalledError {
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `sync`, `rename`).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// `modules-info.properties` is not a readable properties file.
    #[error("{path} is not a valid properties file: {source}")]
    Properties {
        /// The file.
        path: PathBuf,
        /// What the properties reader refused.
        source: PropertiesError,
    },
    /// An entry of `modules-info.properties` is not a module.
    #[error("{path}: entry {key:?}={value:?} is not groupId:artifactId:version=type:uploadEpochSeconds: {reason}")]
    InvalidEntry {
        /// The file.
        path: PathBuf,
        /// The entry's key.
        key: String,
        /// The entry's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One line of `modules-info.properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModule {
    /// The module's coordinates.
    pub coords: Coords,
    /// Core or component.
    pub module_type: ModuleType,
    /// Upload time as seconds since the Unix epoch, UTC.
    pub upload_epoch: i64,
}

impl From<&Module> for InstalledModule {
    fn from(module: &Module) -> Self {
        InstalledModule {
            coords: module.coords.clone(),
            module_type: module.module_type,
            upload_epoch: module.upload_time,
        }
    }
}

/// Renders the module list as `Properties.store` would write it (without
/// the date line).
pub fn render_modules_info(modules: &[InstalledModule]) -> Vec<u8> {
    let entries: Vec<(String, String)> = modules
        .iter()
        .map(|m| {
            (
                m.coords.to_string(),
                format!("{}:{}", m.module_type, m.upload_epoch),
            )
        })
        .collect();
    properties::write(&entries, Some(MODULES_INFO_COMMENT))
}

/// Parses the module list; `path` only names the file in errors.
///
/// A plain, unescaped key line (`g:a:1=core:5`) loads in Java as key `g`
/// and value `a:1=core:5`; such an entry is put back together and read as
/// the module it spells. Other keys without `:` are not modules and are
/// skipped (a hand-edited or future file may carry them); every other
/// entry must be a valid module.
fn parse_modules_info(path: &Path, bytes: &[u8]) -> Result<Vec<InstalledModule>, InstalledError> {
    let entries = properties::read(bytes).map_err(|source| InstalledError::Properties {
        path: path.to_owned(),
        source,
    })?;
    let mut modules = Vec::with_capacity(entries.len());
    for (mut key, mut value) in entries {
        if !key.contains(':') {
            let plain = format!("{key}:{value}");
            match plain.split_once('=') {
                Some((k, v)) if k.trim_end().parse::<Coords>().is_ok() => {
                    (key, value) = (k.trim_end().to_owned(), v.trim_start().to_owned());
                }
                _ => {
                    tracing::debug!(path = %path.display(), key, "skipping non-module entry");
                    continue;
                }
            }
        }
        let invalid = |reason: String| InstalledError::InvalidEntry {
            path: path.to_owned(),
            key: key.clone(),
            value: value.clone(),
            reason,
        };
        let coords: Coords = key
            .parse()
            .map_err(|e: CoordsError| invalid(e.to_string()))?;
        let (module_type, epoch) = value
            .split_once(':')
            .ok_or_else(|| invalid("the value has no ':'".to_owned()))?;
        let module_type = module_type
            .parse()
            .map_err(|e: CoordsError| invalid(e.to_string()))?;
        let upload_epoch = epoch
            .parse()
            .map_err(|e| invalid(format!("upload time {epoch:?}: {e}")))?;
        modules.push(InstalledModule {
            coords,
            module_type,
            upload_epoch,
        });
    }
    Ok(modules)
}

/// Checks a hash record name: a relative path of plain names joined by
/// `/`, so that `verify` and staging never look outside the module folder.
pub fn check_record_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.contains(['\\', '\0']) || name.contains(':') {
        return Err("the name contains '\\', ':' or NUL");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("the name is not a relative path of plain names");
    }
    Ok(())
}

/// Reads a whole file, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InstalledError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstalledError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The modules of the set in `dir` as `status` lists them (in file
/// order); `None` when it has no `modules-info.properties`.
pub fn modules_in_order(dir: &Path) -> Result<Option<Vec<Coords>>, InstalledError> {
    Ok(read_modules_info(dir)?.map(|ms| ms.into_iter().map(|m| m.coords).collect()))
}

/// The modules of the set in `dir`, sorted, each once; `None` when it has
/// no `modules-info.properties`.
pub fn set_modules(dir: &Path) -> Result<Option<Vec<Coords>>, InstalledError> {
    Ok(read_modules_info(dir)?.map(|ms| {
        let mut modules: Vec<Coords> = ms.into_iter().map(|m| m.coords).collect();
        modules.sort();
        modules.dedup();
        modules
    }))
}

/// Reads `modules-info.properties` from a module folder; `None` when it is
/// missing (first run, or a staged set that is not complete).
pub fn read_modules_info(dir: &Path) -> Result<Option<Vec<InstalledModule>>, InstalledError> {
    let path = dir.join(MODULES_INFO_FILE);
    read_optional(&path)?
        .map(|bytes| parse_modules_info(&path, &bytes))
        .transpose()
}

/// Writes `modules-info.properties` into a module folder, atomically.
pub fn write_modules_info(dir: &Path, modules: &[InstalledModule]) -> Result<(), InstalledError> {
    write_atomic(&dir.join(MODULES_INFO_FILE), &render_modules_info(modules))
}

/// Replaces `path` with `bytes` atomically ([`crate::layout::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InstalledError> {
    crate::layout::write_atomic(path, bytes).map_err(InstalledError::from)
}

impl From<FileError> for InstalledError {
    fn from(e: FileError) -> Self {
        InstalledError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(g: &str, a: &str, v: &str, t: ModuleType, epoch: i64) -> InstalledModule {
        InstalledModule {
            coords: Coords::new(g, a, v).unwrap(),
            module_type: t,
            upload_epoch: epoch,
        }
    }

    fn sample() -> Vec<InstalledModule> {
        vec![
            module(
                "com.banalytics.box",
                "core",
                "1.0.0",
                ModuleType::Core,
                1_772_360_130,
            ),
            module(
                "com.banalytics.box",
                "video",
                "2.1",
                ModuleType::Component,
                -5,
            ),
        ]
    }

    #[test]
    fn renders_escaped_keys_and_type_epoch_values() {
        let text = String::from_utf8(render_modules_info(&sample())).unwrap();
        assert_eq!(
            text,
            "#Banalytics box installed modules\n\
             com.banalytics.box\\:core\\:1.0.0=core\\:1772360130\n\
             com.banalytics.box\\:video\\:2.1=component\\:-5\n"
        );
    }

    #[test]
    fn modules_info_round_trips_through_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_modules_info(dir.path()).unwrap().is_none(),
            "missing means first run"
        );
        write_modules_info(dir.path(), &sample()).unwrap();
        assert_eq!(read_modules_info(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join("modules-info.properties.tmp").exists());
    }

    #[test]
    fn reads_java_written_module_list_skipping_non_module_keys() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/modules-info.java.properties");
        let bytes = fs::read(&fixture).unwrap();
        let mut modules = parse_modules_info(&fixture, &bytes).unwrap();
        modules.sort_by(|a, b| a.coords.cmp(&b.coords));
        assert_eq!(
            modules,
            vec![
                module(
                    "com.banalytics.box",
                    "core",
                    "1.0.0",
                    ModuleType::Core,
                    1_772_360_130
                ),
                module(
                    "com.banalytics.box",
                    "onvif+cam",
                    "2.0.0-rc.1",
                    ModuleType::Component,
                    1_700_000_000
                ),
                module(
                    "com.banalytics.box",
                    "video-module",
                    "1.2.3",
                    ModuleType::Component,
                    1_772_360_100
                ),
            ]
        );
    }

    #[test]
    fn accepts_plain_unescaped_keys_and_upper_case_type() {
        let bytes = b"g\\:a\\:1=CORE:7\ncom.banalytics.box:x:2.0 = component:9\nnote=hello\n";
        let modules = parse_modules_info(Path::new("m"), bytes).unwrap();
        assert_eq!(
            modules,
            vec![
                module("g", "a", "1", ModuleType::Core, 7),
                module("com.banalytics.box", "x", "2.0", ModuleType::Component, 9),
            ]
        );
    }

    #[test]
    fn refuses_entries_that_are_not_modules_naming_them() {
        for (bytes, needle) in [
            (&b"..\\:a\\:1=core\\:1"[..], "groupId \"..\""),
            (b"g\\:a\\:1=core", "the value has no ':'"),
            (b"g\\:a\\:1=plugin\\:1", "module type \"plugin\""),
            (b"g\\:a\\:1=core\\:soon", "upload time \"soon\""),
            (b"g\\:a=core\\:1", "module key \"g:a\""),
        ] {
            let err = parse_modules_info(Path::new("dir/modules-info.properties"), bytes)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("dir/modules-info.properties: entry "),
                "{err}"
            );
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
        let err = parse_modules_info(Path::new("m"), b"k=\\uZZZZ").unwrap_err();
        assert!(matches!(err, InstalledError::Properties { .. }), "{err}");
    }

    #[test]
    fn atomic_write_replaces_content_and_reports_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");

        let missing = dir.path().join("no-such-dir/f");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(
            matches!(
                &err,
                InstalledError::Io {
                    action: "write",
                    ..
                }
            ),
            "{err}"
        );
        let named = Path::new("no-such-dir").join("f.tmp");
        assert!(err.to_string().contains(&*named.to_string_lossy()), "{err}");
    }
}
