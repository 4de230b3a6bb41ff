//! The walls between crates that ARCHITECTURE.md states, checked on the
//! source: the runtime uses nothing of the upgrade center but its
//! component kind (`kind`, `KIND_NAME`, and `kind_with` with the type of
//! its preflight hook, `Preflight`) and the typed settings it owns
//! (`HostSettings`); its files are `banalytics-home`'s.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{fs, path::Path};

#[test]
fn the_runtime_uses_only_the_upgrade_centers_component_kind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut uses = Vec::new();
    let mut files = Vec::new();
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let mut rest = line;
            while let Some(at) = rest.find("banalytics_upgrade_center::") {
                rest = &rest[at + "banalytics_upgrade_center::".len()..];
                let item: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if ![
                    "kind",
                    "kind_with",
                    "KIND_NAME",
                    "Preflight",
                    "HostSettings",
                    "UpgradeConfig",
                ]
                .contains(&item.as_str())
                {
                    uses.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        uses.is_empty(),
        "the runtime reaches into the upgrade center:\n{}",
        uses.join("\n")
    );
}
