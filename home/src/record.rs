//! The per-file record of an installed or staged set: the SHA-256 and size
//! of every file it installed, by module.
//!
//! It lives in `modules-hashes.json` beside `modules-info.properties`, not in
//! it: the Java box reads `modules-info.properties` with
//! `Properties.load` and must keep doing so. The record is what makes three
//! things possible: a delta synchronisation (a package whose digest did not
//! change keeps its extracted files), `verify`, and staging by hard link.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::installed::{check_record_name, write_atomic, InstalledError};
use crate::{coords::Coords, Sha256};

/// The record file's name, beside `modules-info.properties`.
pub const RECORD_FILE: &str = "modules-hashes.json";

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to its folder (`modules/` or `models/`), `/`-separated.
    pub name: String,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
}

/// An extracted package (`-bin.zip` into the module folder, `-model.zip`
/// into the models folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// SHA-256 of the archive it came from.
    pub sha256: Sha256,
    /// Size of the archive.
    pub size: u64,
    /// The files it put in place.
    pub files: Vec<FileRecord>,
}

/// One module of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// The main artifact, in the module folder.
    pub main: FileRecord,
    /// The dependencies package, extracted into the module folder.
    #[serde(default)]
    pub dependencies: Option<PackageRecord>,
    /// The model package, extracted into the models folder.
    #[serde(default)]
    pub model: Option<PackageRecord>,
}

/// The whole set, by module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecord {
    /// Format version of this file.
    pub format: u32,
    /// Modules by their coordinates (on disk by module key).
    #[serde(with = "crate::coords::keyed")]
    pub modules: BTreeMap<Coords, ModuleRecord>,
}

/// A file that does not match its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadFile {
    /// The file.
    pub path: PathBuf,
    /// What is wrong: missing, size or digest.
    pub problem: String,
}

impl SetRecord {
    /// The current format.
    pub const FORMAT: u32 = crate::format::SET_RECORD;

    /// Reads the record of the set in `dir`; `None` when it has none. A
    /// record naming a file outside its folder is refused; one of a newer
    /// format is an error holding a [`crate::format::NewerFormat`].
    pub fn load(dir: &Path) -> io::Result<Option<SetRecord>> {
        let path = dir.join(RECORD_FILE);
        let invalid = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {msg}", path.display()),
            )
        };
        let Some(record) = crate::format::read_json_or_err::<SetRecord>(&path, Self::FORMAT)?
        else {
            return Ok(None);
        };
        let empty = Path::new("");
        for (_, f) in record.files(empty, empty) {
            check_record_name(&f.name)
                .map_err(|reason| invalid(format!("{:?}: {reason}", f.name)))?;
        }
        Ok(Some(record))
    }

    /// [`load`](Self::load), with a record of a newer format taken for
    /// none (as a set without one, the Java box's), with a warning: its
    /// set's `modules-info.properties` still names the modules.
    pub fn load_or_none_if_newer(dir: &Path) -> io::Result<Option<SetRecord>> {
        match Self::load(dir) {
            Err(e) if crate::format::in_io(&e).is_some() => {
                tracing::warn!(error = %e, "the set's hash record is taken for none");
                Ok(None)
            }
            other => other,
        }
    }

    /// Writes the record into `dir`: temporary file, fsync, rename, fsync of
    /// `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), InstalledError> {
        let bytes = serde_json::to_vec_pretty(self).expect("strings and numbers");
        write_atomic(&dir.join(RECORD_FILE), &bytes)
    }

    /// Every file of the set, with the folder it lives in (`modules` side
    /// first, then `models`).
    pub fn files<'a>(
        &'a self,
        modules: &'a Path,
        models: &'a Path,
    ) -> impl Iterator<Item = (PathBuf, &'a FileRecord)> + 'a {
        self.modules.values().flat_map(move |m| {
            let main = std::iter::once((modules.join(&m.main.name), &m.main));
            let deps = m
                .dependencies
                .iter()
                .flat_map(move |p| p.files.iter().map(move |f| (modules.join(&f.name), f)));
            let model = m
                .model
                .iter()
                .flat_map(move |p| p.files.iter().map(move |f| (models.join(&f.name), f)));
            main.chain(deps).chain(model)
        })
    }

    /// Checks every recorded file against its size and SHA-256.
    pub fn verify(&self, modules: &Path, models: &Path) -> Vec<BadFile> {
        self.files(modules, models)
            .filter_map(|(path, record)| {
                let problem = check_file(&path, record, sha256_file)?;
                Some(BadFile { path, problem })
            })
            .collect()
    }
}

/// What is wrong with the file at `path` against its `record`, if
/// anything: missing, another size (found by `stat`, without reading it),
/// or another SHA-256, which `sha256` gives (read, or known from a cache).
pub fn check_file(
    path: &Path,
    record: &FileRecord,
    sha256: impl FnOnce(&Path) -> io::Result<Sha256>,
) -> Option<String> {
    match fs::metadata(path) {
        Err(e) => Some(format!("cannot read: {e}")),
        Ok(m) if m.len() != record.size => {
            Some(format!("size {} bytes, recorded {}", m.len(), record.size))
        }
        Ok(_) => match sha256(path) {
            Err(e) => Some(format!("cannot read: {e}")),
            Ok(actual) if actual != record.sha256 => {
                Some(format!("sha-256 {actual}, recorded {}", record.sha256))
            }
            Ok(_) => None,
        },
    }
}

/// SHA-256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<Sha256> {
    Sha256::of_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_modules_by_their_key_on_disk_and_refuses_a_bad_one() {
        let text = r#"{"format":1,"modules":{"g:a:1":{"main":{"name":"a.jar","sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":3},"dependencies":null,"model":null}}}"#;
        let record: SetRecord = serde_json::from_str(text).unwrap();
        let coords: Coords = "g:a:1".parse().unwrap();
        assert_eq!(record.modules[&coords].main.name, "a.jar");
        assert_eq!(serde_json::to_string(&record).unwrap(), text);
        let bad = text.replace("g:a:1", "g:a");
        let e = serde_json::from_str::<SetRecord>(&bad).unwrap_err();
        assert!(
            e.to_string().contains("is not groupId:artifactId:version"),
            "{e}"
        );
    }

    #[test]
    fn verify_names_a_tampered_and_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        let models = dir.path().join("models");
        fs::create_dir_all(&modules).unwrap();
        fs::create_dir_all(&models).unwrap();
        fs::write(modules.join("a.jar"), b"aaaa").unwrap();
        fs::write(models.join("m.bin"), b"mm").unwrap();
        let rec = |name: &str, path: &Path| FileRecord {
            name: name.into(),
            sha256: sha256_file(path).unwrap(),
            size: fs::metadata(path).unwrap().len(),
        };
        let mut set = SetRecord {
            format: SetRecord::FORMAT,
            modules: BTreeMap::new(),
        };
        set.modules.insert(
            "g:a:1".parse().unwrap(),
            ModuleRecord {
                main: rec("a.jar", &modules.join("a.jar")),
                dependencies: None,
                model: Some(PackageRecord {
                    sha256: Sha256::of(b"00"),
                    size: 1,
                    files: vec![rec("m.bin", &models.join("m.bin"))],
                }),
            },
        );
        assert!(set.verify(&modules, &models).is_empty());
        set.write(&modules).unwrap();
        assert_eq!(SetRecord::load(&modules).unwrap().unwrap(), set);

        fs::write(modules.join("a.jar"), b"aaab").unwrap();
        fs::remove_file(models.join("m.bin")).unwrap();
        let bad = set.verify(&modules, &models);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].path.ends_with("a.jar") && bad[0].problem.contains("sha-256"));
        assert!(bad[1].path.ends_with("m.bin") && bad[1].problem.contains("cannot read"));
    }
}
