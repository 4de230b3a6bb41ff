//! Plugin library files with the real sample plugin (`components/sample`,
//! built as a `cdylib` into this target folder): the identity record read
//! from the file without loading it, the load path that opens only the
//! main artifacts of the set's component modules and refuses a library of
//! another ABI before `dlopen`, and the preflight of a staged set.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use banalytics_runtime::{
    plugins::{self, LoadOutcome},
    preflight,
};
use banalytics_sdk::plugin::{
    FileIdentity, FileIdentityError, ABI_VERSION, RUSTC_VERSION, SDK_VERSION, TARGET,
};

/// The sample built normally and with another ABI version, copied out of
/// the target folder (both builds write the same path).
struct Samples {
    normal: PathBuf,
    abi_mismatch: PathBuf,
}

fn samples() -> &'static Samples {
    static BUILT: OnceLock<Samples> = OnceLock::new();
    BUILT.get_or_init(|| {
        // This test runs from `{target}/{profile}/deps/`.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let target = profile_dir.parent().expect("target dir");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let fixtures = target.join("plugin-fixtures-runtime");
        std::fs::create_dir_all(&fixtures).unwrap();
        let library = format!(
            "{}banalytics_sample.{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_EXTENSION
        );
        let mut built = Vec::new();
        for (features, name) in [(Some("abi-mismatch"), "abi-mismatch"), (None, "normal")] {
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .current_dir(workspace)
                .args(["build", "--quiet", "-p", "banalytics-sample", "--lib"])
                .arg("--target-dir")
                .arg(target);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            if let Some(f) = features {
                cargo.args(["--features", f]);
            }
            assert!(
                cargo.status().expect("cargo").success(),
                "building the sample"
            );
            let copy = fixtures.join(format!("{name}.{}", std::env::consts::DLL_EXTENSION));
            std::fs::copy(profile_dir.join(&library), &copy).unwrap();
            built.push(copy);
        }
        Samples {
            abi_mismatch: built.remove(0),
            normal: built.remove(0),
        }
    })
}

fn so(name: &str) -> String {
    format!("{name}.{}", std::env::consts::DLL_EXTENSION)
}

/// A module folder whose `modules-info.properties` lists `modules`
/// (`groupId:artifactId:version`, all components) and holds `files`.
fn module_set(dir: &Path, modules: &[&str], files: &[(String, &Path)]) {
    std::fs::create_dir_all(dir).unwrap();
    let info: String = modules
        .iter()
        .map(|m| format!("{}=component\\:1700000000\n", m.replace(':', "\\:")))
        .collect();
    std::fs::write(dir.join("modules-info.properties"), info).unwrap();
    for (name, source) in files {
        std::fs::copy(source, dir.join(name)).unwrap();
    }
}

/// Whether this process has `path` mapped: whether it was ever `dlopen`ed
/// (libraries are never unloaded).
fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.contains(&path.display().to_string())
}

#[test]
fn the_sample_plugin_file_carries_its_identity_and_kinds() {
    let normal = &samples().normal;
    let identity = FileIdentity::read(normal).unwrap();
    assert_eq!(
        identity,
        FileIdentity {
            abi_version: ABI_VERSION,
            sdk_version: SDK_VERSION.to_owned(),
            rustc_version: RUSTC_VERSION.to_owned(),
            target: TARGET.to_owned(),
            kinds: vec!["sample-echo".to_owned()],
        }
    );
    assert_eq!(FileIdentity::read_checked(normal), Ok(identity));
    assert!(
        !mapped(normal),
        "reading the identity does not load the library"
    );
}

#[test]
fn a_sample_of_another_abi_is_refused_from_its_file_with_expected_and_found() {
    let other = &samples().abi_mismatch;
    assert_eq!(
        FileIdentity::read_checked(other),
        Err(FileIdentityError::AbiMismatch {
            file: other.clone(),
            expected: ABI_VERSION,
            found: ABI_VERSION + 1,
        })
    );
}

#[test]
fn only_main_artifacts_of_component_modules_are_loaded_and_another_abi_never_is() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    let s = samples();
    module_set(
        &modules,
        &["com.example:sample:1.0", "com.example:old:1.0"],
        &[
            (so("com.example-sample-1.0"), &s.normal),
            (so("com.example-old-1.0"), &s.abi_mismatch),
            // As a dependencies package would extract it: not a main artifact.
            (so("libsneaky"), &s.normal),
        ],
    );
    let (kinds, report) = plugins::load_dir(&modules, &["probe"]);
    let names: Vec<&str> = kinds.iter().map(|(k, _)| k.name()).collect();
    assert_eq!(names, ["sample-echo"]);
    let files: Vec<(String, &LoadOutcome)> = report
        .files
        .iter()
        .map(|(p, o)| (p.file_name().unwrap().to_string_lossy().into_owned(), o))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0].0, so("com.example-old-1.0"));
    assert_eq!(
        files[0].1,
        &LoadOutcome::Refused(format!(
            "plugin {}: ABI version mismatch: expected {ABI_VERSION}, found {}",
            modules.join(so("com.example-old-1.0")).display(),
            ABI_VERSION + 1
        ))
    );
    assert_eq!(files[1].0, so("com.example-sample-1.0"));
    assert!(
        matches!(files[1].1, LoadOutcome::Loaded { .. }),
        "{files:?}"
    );
    assert!(mapped(&modules.join(so("com.example-sample-1.0"))));
    assert!(
        !mapped(&modules.join(so("com.example-old-1.0"))),
        "refused before dlopen"
    );
    assert!(
        !mapped(&modules.join(so("libsneaky"))),
        "a file that is no component's main artifact is never opened"
    );
}

#[test]
fn the_preflight_checks_a_staged_set_of_real_libraries_without_loading_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = samples();
    let builtin = vec!["probe".to_owned(), "software-upgrade-center".to_owned()];
    let configured = vec![("echo".to_owned(), "sample-echo".to_owned())];

    let good = dir.path().join("good");
    module_set(
        &good,
        &["com.example:sample:1.0"],
        &[(so("com.example-sample-1.0"), &s.normal)],
    );
    assert_eq!(preflight::check_set(&good, &builtin, &configured), Ok(()));

    let other_abi = dir.path().join("other-abi");
    module_set(
        &other_abi,
        &["com.example:sample:2.0"],
        &[(so("com.example-sample-2.0"), &s.abi_mismatch)],
    );
    assert_eq!(
        preflight::check_set(&other_abi, &builtin, &configured).map_err(|r| r.to_string()),
        Err(format!(
            "module com.example:sample:2.0: plugin {}: ABI version mismatch: expected {ABI_VERSION}, found {}; component \"echo\" of box.toml has kind \"sample-echo\", which neither a built-in kind nor a plugin of the set provides",
            so("com.example-sample-2.0"),
            ABI_VERSION + 1
        ))
    );

    let twice = dir.path().join("twice");
    module_set(
        &twice,
        &["com.example:sample:1.0", "com.example:copy:1.0"],
        &[
            (so("com.example-sample-1.0"), &s.normal),
            (so("com.example-copy-1.0"), &s.normal),
        ],
    );
    assert_eq!(
        preflight::check_set(&twice, &builtin, &configured).map_err(|r| r.to_string()),
        Err(format!(
            "module com.example:sample:1.0: plugin {}: kind \"sample-echo\" is already exported by {}",
            so("com.example-sample-1.0"),
            so("com.example-copy-1.0")
        ))
    );
    for set in [&good, &other_abi, &twice] {
        for entry in std::fs::read_dir(set).unwrap() {
            assert!(!mapped(&entry.unwrap().path()), "nothing was loaded");
        }
    }
}
