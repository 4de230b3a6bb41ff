//! Hostile and well-formed packages through `archive::extract`.
//!
//! Every hostile archive is built here with the zip writer, patched byte by
//! byte where the writer will not produce the case, and must be refused
//! with the variant naming the entry. Each test also checks that nothing
//! appeared next to the target: the folder holding the target holds only
//! the target and the archive.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::collections::BTreeSet;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use banalytics_upgrade_center::archive::{
    extract, ArchiveError, ExtractedFile, Limits, MAX_NAME_BYTES, MAX_NAME_DEPTH,
};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

type Writer = ZipWriter<Cursor<Vec<u8>>>;

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

fn stored() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
}

/// Builds an archive in memory.
fn zip_with(build: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut writer);
    writer.finish().expect("finish zip").into_inner()
}

/// Adds one file entry.
fn file(writer: &mut Writer, name: &str, options: SimpleFileOptions, data: &[u8]) {
    writer.start_file(name, options).expect("start file");
    writer.write_all(data).expect("write file");
}

/// An archive holding one small file per name.
fn zip_of_names(names: &[&str]) -> Vec<u8> {
    zip_with(|w| {
        for name in names {
            file(w, name, deflated(), b"payload");
        }
    })
}

/// A temporary folder holding `pkg.zip` and an empty `target/`.
struct Scene {
    root: tempfile::TempDir,
    archive: PathBuf,
    target: PathBuf,
}

impl Scene {
    fn new(bytes: &[u8]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let archive = root.path().join("pkg.zip");
        let target = root.path().join("target");
        fs::write(&archive, bytes).expect("write archive");
        fs::create_dir(&target).expect("create target");
        Self {
            root,
            archive,
            target,
        }
    }

    fn extract(&self, limits: &Limits) -> Result<Vec<ExtractedFile>, ArchiveError> {
        extract(&self.archive, &self.target, limits).map(|e| e.files)
    }

    /// Nothing was created beside the target.
    fn assert_nothing_outside(&self) {
        let names: BTreeSet<String> = fs::read_dir(self.root.path())
            .expect("read root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = ["pkg.zip", "target"].map(String::from).into();
        assert_eq!(names, expected, "something was written outside the target");
    }

    /// Nothing was written at all: refused before the first write.
    fn assert_target_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.target).expect("read target").collect();
        assert!(left.is_empty(), "target is not empty: {left:?}");
    }
}

/// Extracts `bytes` with `limits`, expects a refusal before any write, and
/// checks that nothing was written anywhere.
fn refused_before_writing(bytes: &[u8], limits: &Limits) -> ArchiveError {
    let scene = Scene::new(bytes);
    let err = scene.extract(limits).expect_err("archive must be refused");
    scene.assert_target_empty();
    scene.assert_nothing_outside();
    err
}

/// Offsets of the central directory headers, by entry name.
fn central_headers(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut found = Vec::new();
    for at in 0..bytes.len().saturating_sub(46) {
        if bytes[at..at + 4] == *b"PK\x01\x02" {
            let len = u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]) as usize;
            found.push((at, bytes[at + 46..at + 46 + len].to_vec()));
        }
    }
    found
}

/// Offset of the local file header of `name`.
fn local_header(bytes: &[u8], name: &str) -> usize {
    (0..bytes.len() - 30)
        .find(|&at| {
            bytes[at..at + 4] == *b"PK\x03\x04" && {
                let len = u16::from_le_bytes([bytes[at + 26], bytes[at + 27]]) as usize;
                bytes[at + 30..at + 30 + len] == *name.as_bytes()
            }
        })
        .expect("local header")
}

fn central_header(bytes: &[u8], name: &str) -> usize {
    central_headers(bytes)
        .into_iter()
        .find(|(_, n)| n == name.as_bytes())
        .map(|(at, _)| at)
        .expect("central header")
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Rewrites the declared uncompressed size of `name` in both headers.
fn patch_declared_size(bytes: &mut [u8], name: &str, size: u32) {
    let local = local_header(bytes, name);
    put_u32(bytes, local + 22, size);
    let central = central_header(bytes, name);
    put_u32(bytes, central + 24, size);
}

/// Rewrites the unix mode of `name` in the central directory and marks it
/// as made on unix.
fn patch_unix_mode(bytes: &mut [u8], name: &str, mode: u32) {
    let central = central_header(bytes, name);
    bytes[central + 5] = 3; // version made by: unix
    put_u32(bytes, central + 38, mode << 16);
}

fn sha256_of(data: &[u8]) -> banalytics_home::Sha256 {
    banalytics_home::Sha256::of(data)
}

/// Every path under `dir`, relative, `/`-separated, directories with a
/// trailing slash.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .expect("under base")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if entry.file_type().expect("file type").is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn extracts_nested_directories_with_exact_files_and_hashes() {
    let library: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let script = b"#!/bin/sh\necho hello\n".to_vec();
    let readme = b"# package\n".to_vec();
    let bytes = zip_with(|w| {
        w.add_directory("lib/", stored()).expect("dir");
        file(w, "lib/native/libx.so", deflated(), &library);
        file(w, "bin/run.sh", deflated().unix_permissions(0o755), &script);
        file(w, "README.md", stored().unix_permissions(0o644), &readme);
        file(w, "empty/keep", stored(), b"");
        w.add_directory("data/models/", stored()).expect("dir");
    });
    let scene = Scene::new(&bytes);

    let extracted = extract(&scene.archive, &scene.target, &Limits::default()).expect("extract");

    let expected = vec![
        ExtractedFile {
            path: ["lib", "native", "libx.so"].iter().collect(),
            size: library.len() as u64,
            sha256: sha256_of(&library),
        },
        ExtractedFile {
            path: ["bin", "run.sh"].iter().collect(),
            size: script.len() as u64,
            sha256: sha256_of(&script),
        },
        ExtractedFile {
            path: "README.md".into(),
            size: readme.len() as u64,
            sha256: sha256_of(&readme),
        },
        ExtractedFile {
            path: ["empty", "keep"].iter().collect(),
            size: 0,
            sha256: sha256_of(b""),
        },
    ];
    assert_eq!(extracted.files, expected);
    assert_eq!(
        extracted.total_bytes,
        (library.len() + script.len() + readme.len()) as u64
    );
    let expected_tree: BTreeSet<String> = [
        "README.md",
        "bin/",
        "bin/run.sh",
        "data/",
        "data/models/",
        "empty/",
        "empty/keep",
        "lib/",
        "lib/native/",
        "lib/native/libx.so",
    ]
    .map(String::from)
    .into();
    assert_eq!(tree(&scene.target), expected_tree);
    assert_eq!(
        fs::read(scene.target.join("lib/native/libx.so")).unwrap(),
        library
    );
    assert_eq!(fs::read(scene.target.join("bin/run.sh")).unwrap(), script);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            fs::metadata(scene.target.join(p))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_ne!(mode("bin/run.sh") & 0o100, 0, "run.sh must be executable");
        assert_eq!(
            mode("README.md") & 0o111,
            0,
            "README.md must not be executable"
        );
    }
    scene.assert_nothing_outside();
}

fn assert_unsafe_name(name: &str) {
    let err = refused_before_writing(&zip_of_names(&[name]), &Limits::default());
    match err {
        ArchiveError::UnsafeName { entry, .. } => assert_eq!(entry, name),
        other => panic!("expected UnsafeName for {name:?}, got {other:?}"),
    }
}

#[test]
fn refuses_name_starting_with_parent_component() {
    assert_unsafe_name("../x");
}

#[test]
fn refuses_absolute_name() {
    assert_unsafe_name("/abs");
}

#[test]
fn refuses_windows_drive_letter_name() {
    assert_unsafe_name("C:\\x");
}

#[test]
fn refuses_name_with_leading_backslash() {
    assert_unsafe_name("\\x");
}

#[test]
fn refuses_name_with_backslash_separator() {
    assert_unsafe_name("a\\..\\..\\x");
}

#[test]
fn refuses_name_climbing_out_through_a_subdirectory() {
    assert_unsafe_name("a/../../x");
}

#[test]
fn refuses_name_with_empty_component() {
    assert_unsafe_name("a//x");
}

#[test]
fn refuses_name_with_nul() {
    assert_unsafe_name("a\0.txt");
}

#[test]
fn unsafe_name_message_names_the_entry_and_the_reason() {
    let err = refused_before_writing(&zip_of_names(&["ok.txt", "../x"]), &Limits::default());
    assert_eq!(
        err.to_string(),
        "archive entry \"../x\" has an unsafe name: `..` path component"
    );
}

#[test]
fn refuses_a_name_over_the_length_limit_quoting_only_its_start() {
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    let err = refused_before_writing(&zip_of_names(&["ok.txt", &long]), &Limits::default());
    let quoted = format!("{}…", "a".repeat(80));
    match &err {
        ArchiveError::NameTooLong {
            entry,
            bytes,
            limit,
        } => {
            assert_eq!(entry, &quoted);
            assert_eq!((*bytes, *limit), (4097, 4096));
        }
        other => panic!("expected NameTooLong, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("archive entry \"{quoted}\" has a name of 4097 bytes, over the limit of 4096")
    );
}

#[test]
fn a_name_at_the_length_limit_is_checked_as_a_name() {
    // 4 096 bytes pass the bound and are refused for what they hold.
    let name = format!("../{}", "a".repeat(MAX_NAME_BYTES - 3));
    assert_eq!(name.len(), MAX_NAME_BYTES);
    assert_unsafe_name(&name);
}

#[test]
fn refuses_a_name_over_the_depth_limit_with_the_depth_and_the_limit() {
    let deep = format!("{}f", "d/".repeat(MAX_NAME_DEPTH));
    let err = refused_before_writing(&zip_of_names(&[&deep]), &Limits::default());
    let quoted = format!("{}…", "d/".repeat(40));
    match &err {
        ArchiveError::NameTooDeep {
            entry,
            depth,
            limit,
        } => {
            assert_eq!(entry, &quoted);
            assert_eq!((*depth, *limit), (65, 64));
        }
        other => panic!("expected NameTooDeep, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("archive entry \"{quoted}\" is 65 levels deep, over the limit of 64")
    );
}

#[test]
fn refuses_a_directory_entry_over_the_depth_limit() {
    let deep = "d/".repeat(MAX_NAME_DEPTH + 1);
    let bytes = zip_with(|w| {
        w.add_directory(deep.as_str(), stored()).expect("directory");
    });
    assert!(matches!(
        refused_before_writing(&bytes, &Limits::default()),
        ArchiveError::NameTooDeep { depth: 65, .. }
    ));
}

#[test]
fn extracts_a_name_at_the_depth_limit() {
    let deep = format!("{}f", "d/".repeat(MAX_NAME_DEPTH - 1));
    let scene = Scene::new(&zip_of_names(&[&deep, "d/g"]));
    let files = scene.extract(&Limits::default()).expect("extract");
    assert_eq!(files.len(), 2);
    assert_eq!(
        fs::read(scene.target.join(&deep)).expect("read"),
        b"payload"
    );
    assert_eq!(
        fs::read(scene.target.join("d/g")).expect("read"),
        b"payload"
    );
}

#[test]
fn refuses_the_issue_20_package_by_its_first_name() {
    // Four names of 60 000 bytes, 30 000 folders deep (a 480 KB zip that
    // took the host to 2.6 GiB when every parent was recorded).
    let names: Vec<String> = (0..4)
        .map(|i| format!("{i}{}y", "/x".repeat(29_999)))
        .collect();
    assert!(names
        .iter()
        .all(|n| n.len() == 60_000 && n.split('/').count() == 30_000));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match refused_before_writing(&zip_of_names(&refs), &Limits::default()) {
        ArchiveError::NameTooLong { entry, bytes, .. } => {
            assert_eq!(bytes, 60_000);
            assert!(
                entry.ends_with('…') && entry.chars().count() == 81,
                "{entry}"
            );
        }
        other => panic!("expected NameTooLong, got {other:?}"),
    }
}

#[test]
fn refuses_symlink_entry() {
    let bytes = zip_with(|w| {
        file(w, "ok.txt", deflated(), b"fine");
        w.add_symlink("lib/link", "/etc/passwd", stored())
            .expect("symlink");
    });
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::Symlink { entry } => assert_eq!(entry, "lib/link"),
        other => panic!("expected Symlink, got {other:?}"),
    }
}

#[test]
fn refuses_fifo_entry() {
    let mut bytes = zip_of_names(&["ok.txt", "pipe"]);
    patch_unix_mode(&mut bytes, "pipe", 0o010_644);
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::NotRegular { entry, mode } => {
            assert_eq!(entry, "pipe");
            assert_eq!(mode & 0o170_000, 0o010_000);
        }
        other => panic!("expected NotRegular, got {other:?}"),
    }
}

#[test]
fn refuses_device_entry() {
    let mut bytes = zip_of_names(&["sda"]);
    patch_unix_mode(&mut bytes, "sda", 0o060_660);
    assert!(matches!(
        refused_before_writing(&bytes, &Limits::default()),
        ArchiveError::NotRegular { entry, .. } if entry == "sda"
    ));
}

#[test]
fn refuses_duplicate_names() {
    // The writer refuses duplicates, so write two names of one length and
    // rename the second in every header.
    let mut bytes = zip_of_names(&["lib/a.so", "lib/b.so"]);
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(8).position(|w| w == b"lib/b.so") {
        bytes[at + found..at + found + 8].copy_from_slice(b"lib/a.so");
        at += found + 8;
    }
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::Duplicate { entry } => assert_eq!(entry, "lib/a.so"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

#[test]
fn refuses_names_colliding_by_ascii_case() {
    match refused_before_writing(&zip_of_names(&["README", "readme"]), &Limits::default()) {
        ArchiveError::CaseCollision { entry, other } => {
            assert_eq!(entry, "readme");
            assert_eq!(other, "README");
        }
        other => panic!("expected CaseCollision, got {other:?}"),
    }
}

#[test]
fn refuses_names_colliding_after_unicode_lowercasing() {
    match refused_before_writing(
        &zip_of_names(&["ÄRGER.txt", "ärger.txt"]),
        &Limits::default(),
    ) {
        ArchiveError::CaseCollision { entry, other } => {
            assert_eq!(entry, "ärger.txt");
            assert_eq!(other, "ÄRGER.txt");
        }
        other => panic!("expected CaseCollision, got {other:?}"),
    }
}

#[test]
fn refuses_directories_colliding_by_case() {
    match refused_before_writing(&zip_of_names(&["Lib/a.so", "lib/b.so"]), &Limits::default()) {
        ArchiveError::CaseCollision { entry, other } => {
            assert_eq!(entry, "lib/b.so");
            assert_eq!(other, "Lib");
        }
        other => panic!("expected CaseCollision, got {other:?}"),
    }
}

#[test]
fn refuses_name_used_as_file_and_directory() {
    match refused_before_writing(&zip_of_names(&["a", "a/b"]), &Limits::default()) {
        ArchiveError::FileDirConflict { entry, other } => {
            assert_eq!(entry, "a");
            assert_eq!(other, "a/b");
        }
        other => panic!("expected FileDirConflict, got {other:?}"),
    }
}

#[test]
fn refuses_zip_bomb_over_the_ratio_limit() {
    let zeros = vec![0u8; 50 * 1024 * 1024];
    let bytes = zip_with(|w| {
        file(w, "ok.txt", deflated(), b"fine");
        file(w, "model.bin", deflated(), &zeros);
    });
    assert!(bytes.len() < 1024 * 1024, "the bomb must be small");
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::RatioExceeded {
            entry,
            ratio,
            limit,
        } => {
            assert_eq!(entry, "model.bin");
            assert!(ratio > 200, "ratio {ratio}");
            assert_eq!(limit, 200);
        }
        other => panic!("expected RatioExceeded, got {other:?}"),
    }
}

#[test]
fn refuses_more_entries_than_the_limit() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    match refused_before_writing(&zip_of_names(&["a", "b", "c", "d", "e"]), &limits) {
        ArchiveError::TooManyEntries { count, limit } => {
            assert_eq!(count, 5);
            assert_eq!(limit, 3);
        }
        other => panic!("expected TooManyEntries, got {other:?}"),
    }
}

#[test]
fn refuses_entry_declared_over_the_per_entry_limit() {
    let limits = Limits {
        max_entry_bytes: 1000,
        ..Limits::default()
    };
    let bytes = zip_with(|w| {
        file(w, "small", deflated(), &[1; 1000]);
        file(w, "big", deflated(), &[1; 1001]);
    });
    match refused_before_writing(&bytes, &limits) {
        ArchiveError::TooLarge { entry, size, limit } => {
            assert_eq!((entry.as_str(), size, limit), ("big", 1001, 1000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn refuses_archive_declared_over_the_total_limit() {
    let limits = Limits {
        max_total_bytes: 2500,
        ..Limits::default()
    };
    let bytes = zip_with(|w| {
        for name in ["a", "b", "c"] {
            file(w, name, deflated(), &[7; 1000]);
        }
    });
    match refused_before_writing(&bytes, &limits) {
        ArchiveError::TotalTooLarge {
            entry,
            total,
            limit,
        } => {
            assert_eq!((entry.as_str(), total, limit), ("c", 3000, 2500));
        }
        other => panic!("expected TotalTooLarge, got {other:?}"),
    }
}

#[test]
fn refuses_deflated_entry_holding_more_than_its_declared_size() {
    // A lying header: 2 MiB of data declared as 100 bytes.
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 7) as u8).collect();
    let mut bytes = zip_with(|w| file(w, "liar.bin", deflated(), &data));
    patch_declared_size(&mut bytes, "liar.bin", 100);
    let scene = Scene::new(&bytes);

    let err = scene
        .extract(&Limits::default())
        .expect_err("must be refused");

    match err {
        ArchiveError::SizeExceeded { entry, declared } => {
            assert_eq!((entry.as_str(), declared), ("liar.bin", 100));
        }
        other => panic!("expected SizeExceeded, got {other:?}"),
    }
    let written = fs::metadata(scene.target.join("liar.bin")).map_or(0, |m| m.len());
    assert!(
        written <= 100,
        "wrote {written} bytes past the declared size"
    );
    scene.assert_nothing_outside();
}

#[test]
fn refuses_stored_entry_holding_more_than_its_declared_size() {
    let mut bytes = zip_with(|w| file(w, "liar.txt", stored(), &[b'x'; 5000]));
    patch_declared_size(&mut bytes, "liar.txt", 10);
    let scene = Scene::new(&bytes);
    match scene.extract(&Limits::default()) {
        Err(ArchiveError::SizeExceeded { entry, declared }) => {
            assert_eq!((entry.as_str(), declared), ("liar.txt", 10));
        }
        other => panic!("expected SizeExceeded, got {other:?}"),
    }
    scene.assert_nothing_outside();
}

#[test]
fn refuses_entry_holding_fewer_bytes_than_declared() {
    let mut bytes = zip_with(|w| file(w, "short.bin", deflated(), &[3; 1000]));
    patch_declared_size(&mut bytes, "short.bin", 2000);
    let scene = Scene::new(&bytes);
    match scene.extract(&Limits::default()) {
        Err(ArchiveError::Truncated {
            entry,
            declared,
            actual,
        }) => {
            assert_eq!(
                (entry.as_str(), declared, actual),
                ("short.bin", 2000, 1000)
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    scene.assert_nothing_outside();
}

#[test]
fn refuses_entry_whose_data_does_not_match_its_crc() {
    let mut bytes = zip_with(|w| file(w, "data.txt", stored(), b"original content"));
    let at = bytes
        .windows(8)
        .position(|w| w == b"original")
        .expect("data");
    bytes[at] = b'O';
    let scene = Scene::new(&bytes);
    match scene.extract(&Limits::default()) {
        Err(ArchiveError::ChecksumMismatch { entry, .. }) => assert_eq!(entry, "data.txt"),
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    scene.assert_nothing_outside();
}

#[cfg(unix)]
#[test]
fn never_writes_through_a_symlink_already_in_the_target() {
    let bytes = zip_of_names(&["lib/x.so"]);
    let scene = Scene::new(&bytes);
    let outside = tempfile::tempdir().expect("outside dir");
    std::os::unix::fs::symlink(outside.path(), scene.target.join("lib")).expect("symlink");

    match scene.extract(&Limits::default()) {
        Err(ArchiveError::Occupied { entry, path }) => {
            assert_eq!(entry, "lib");
            assert_eq!(path, scene.target.join("lib"));
        }
        other => panic!("expected Occupied, got {other:?}"),
    }
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    scene.assert_nothing_outside();
}

#[cfg(unix)]
#[test]
fn never_overwrites_a_file_already_in_the_target() {
    let bytes = zip_of_names(&["config.txt"]);
    let scene = Scene::new(&bytes);
    let outside = scene.root.path().join("target-secret");
    fs::write(&outside, b"secret").expect("write");
    std::os::unix::fs::symlink(&outside, scene.target.join("config.txt")).expect("symlink");

    match scene.extract(&Limits::default()) {
        Err(ArchiveError::Occupied { entry, .. }) => assert_eq!(entry, "config.txt"),
        other => panic!("expected Occupied, got {other:?}"),
    }
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
}

#[test]
fn extracts_streamed_archive_with_data_descriptors() {
    // Written without seeking, as Java's ZipOutputStream and Maven do: sizes
    // and CRC follow the data instead of sitting in the local header.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let mut writer = ZipWriter::new_stream(Vec::new());
    writer.start_file("lib/a.jar", deflated()).expect("start");
    writer.write_all(&data).expect("write");
    writer.start_file("lib/b.txt", deflated()).expect("start");
    writer.write_all(b"second").expect("write");
    let bytes = writer.finish().expect("finish").into_inner();
    let scene = Scene::new(&bytes);

    let files = scene.extract(&Limits::default()).expect("extract");

    let summary: Vec<(PathBuf, u64, banalytics_home::Sha256)> = files
        .into_iter()
        .map(|f| (f.path, f.size, f.sha256))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                ["lib", "a.jar"].iter().collect(),
                data.len() as u64,
                sha256_of(&data)
            ),
            (["lib", "b.txt"].iter().collect(), 6, sha256_of(b"second")),
        ]
    );
    assert_eq!(fs::read(scene.target.join("lib/a.jar")).unwrap(), data);
    scene.assert_nothing_outside();
}

#[test]
fn refuses_symlink_even_when_the_entry_claims_a_dos_origin() {
    let mut bytes = zip_of_names(&["link"]);
    patch_unix_mode(&mut bytes, "link", 0o120_777);
    let central = central_header(&bytes, "link");
    bytes[central + 5] = 0; // version made by: MS-DOS
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::Symlink { entry } => assert_eq!(entry, "link"),
        other => panic!("expected Symlink, got {other:?}"),
    }
}

#[test]
fn refuses_entries_sharing_the_same_compressed_bytes() {
    // Overlapping entries are how non-recursive zip bombs multiply one
    // compressed kernel: every copy stays under the ratio, the sum does not.
    let bytes = zip_with(|w| {
        file(w, "kernel.bin", deflated(), &[9; 4096]);
        for i in 0..3 {
            w.shallow_copy_file("kernel.bin", &format!("copy{i}.bin"))
                .expect("shallow copy");
        }
    });
    match refused_before_writing(&bytes, &Limits::default()) {
        ArchiveError::OverlappingEntries { archive } => {
            assert_eq!(archive.file_name().unwrap(), "pkg.zip");
        }
        other => panic!("expected OverlappingEntries, got {other:?}"),
    }
}
