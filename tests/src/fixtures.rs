//! Test data shared by the whole-system tests: folder trees by content,
//! zip packages, and modules published on a reference portal.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::portal::{ModuleType, PortalHandle, PublishRequest};

/// SHA-256, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every file under `dir`: relative path → SHA-256. A missing folder is
/// empty.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, sha256_hex(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// A zip archive holding `entries` (name, content).
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Publishes `com.example:{artifact}:{version}` on `portal`: a main
/// artifact, a dependency package (`lib/{artifact}.jar` and, when
/// `shared` is given, `lib/shared.jar`) and a model package
/// (`{artifact}/model.bin`). Files are written under `dir` first.
pub fn publish(
    portal: &PortalHandle,
    dir: &Path,
    artifact: &str,
    version: &str,
    shared: Option<&[u8]>,
) -> Result<()> {
    let main = dir.join(format!("{artifact}-{version}.jar"));
    std::fs::write(&main, format!("{artifact} {version} main").repeat(200))?;
    let dep = format!("{artifact} {version} dep");
    let mut deps: Vec<(String, &[u8])> = vec![(format!("lib/{artifact}.jar"), dep.as_bytes())];
    if let Some(shared) = shared {
        deps.push(("lib/shared.jar".to_owned(), shared));
    }
    let deps: Vec<(&str, &[u8])> = deps.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let bin = dir.join(format!("{artifact}-{version}-bin.zip"));
    std::fs::write(&bin, zip_of(&deps))?;
    let model = dir.join(format!("{artifact}-{version}-model.zip"));
    let model_body = format!("{artifact} {version} model");
    std::fs::write(
        &model,
        zip_of(&[(&format!("{artifact}/model.bin"), model_body.as_bytes())]),
    )?;
    let mut req = PublishRequest::new(
        &format!("com.example:{artifact}:{version}"),
        ModuleType::Component,
        &main,
    );
    req.bin = Some(bin);
    req.model = Some(model);
    portal.publish(&req)?;
    Ok(())
}
