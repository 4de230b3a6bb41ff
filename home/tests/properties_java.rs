//! Evidence that `properties` is compatible both ways with Java's
//! `java.util.Properties`, which the original box uses for
//! `modules-info.properties`.
//!
//! The committed fixture was written by `Properties.store` (see
//! `fixtures/java/PropsFixture.java`), so reading it needs no Java. When
//! `javac` and `java` are on the PATH, the same program also loads files we
//! wrote, and files of tricky and pseudo-random bytes, and its view of them
//! is compared with ours.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::path::{Path, PathBuf};
use std::process::Command;

use banalytics_home::coords::{Coords, ModuleType};
use banalytics_home::installed::{self, InstalledModule};
use banalytics_home::properties::{self, PropertiesError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The dump format of `PropsFixture dump`: one escaped, sorted line per entry.
fn dump(entries: &[(String, String)]) -> Vec<String> {
    fn escape(s: &str) -> String {
        let mut out = String::new();
        for unit in s.encode_utf16() {
            match unit {
                0x5C | 0x3D => {
                    out.push('\\');
                    out.push(char::from(unit as u8));
                }
                0x20..=0x7E => out.push(char::from(unit as u8)),
                _ => out.push_str(&format!("\\u{unit:04X}")),
            }
        }
        out
    }
    let mut lines: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    lines.sort();
    lines
}

/// A compiled `PropsFixture`, or `None` (with a note) when Java is absent.
struct Java {
    classes: tempfile::TempDir,
}

impl Java {
    fn compile() -> Option<Java> {
        let present = |tool: &str| {
            Command::new(tool)
                .arg("-version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !(present("javac") && present("java")) {
            eprintln!("note: javac/java not on PATH; the Java round trip was not run");
            return None;
        }
        let classes = tempfile::tempdir().expect("temp dir for classes");
        let status = Command::new("javac")
            .arg("-d")
            .arg(classes.path())
            .arg(fixtures().join("java/PropsFixture.java"))
            .status()
            .expect("run javac");
        assert!(status.success(), "javac failed on PropsFixture.java");
        Some(Java { classes })
    }

    /// Java's view of each file: `None` when `load` threw, else the dump.
    fn dump(&self, paths: &[PathBuf]) -> Vec<Option<Vec<String>>> {
        let output = Command::new("java")
            .arg("-cp")
            .arg(self.classes.path())
            .arg("PropsFixture")
            .arg("dump")
            .args(paths)
            .output()
            .expect("run java");
        assert!(
            output.status.success(),
            "PropsFixture dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("dump is ASCII");
        let mut files: Vec<Option<Vec<String>>> = Vec::new();
        for line in text.lines() {
            if line.starts_with("# file ") {
                files.push(Some(Vec::new()));
            } else if line == "error" {
                *files.last_mut().expect("header first") = None;
            } else {
                files
                    .last_mut()
                    .expect("header first")
                    .as_mut()
                    .expect("no lines after error")
                    .push(line.to_owned());
            }
        }
        assert_eq!(files.len(), paths.len(), "one dump per file");
        files
    }
}

#[test]
fn reads_java_stored_fixture_exactly() {
    let bytes = std::fs::read(fixtures().join("modules-info.java.properties")).unwrap();
    let text = String::from_utf8(bytes.clone()).expect("store writes ASCII here");
    assert!(text.contains("com.banalytics.box\\:core\\:1.0.0=core\\:1772360130"));
    assert!(text.contains("\\uD83D\\uDE00") && text.starts_with('#'));

    let mut entries = properties::read(&bytes).unwrap();
    entries.sort();
    assert_eq!(
        entries,
        owned(&[
            (" key with=#!", " lead\ttab\\"),
            ("box.note", "Gr\u{fc}\u{df}e \u{2603} \u{1F600} = : # !"),
            ("com.banalytics.box:core:1.0.0", "core:1772360130"),
            (
                "com.banalytics.box:onvif+cam:2.0.0-rc.1",
                "component:1700000000"
            ),
            (
                "com.banalytics.box:video-module:1.2.3",
                "component:1772360100"
            ),
        ])
    );
}

#[test]
fn java_loads_our_written_file_back_identically() {
    let entries = owned(&[
        ("com.banalytics.box:core:1.0.0", "core:1772360130"),
        (
            "com.banalytics.box:video-module:1.2.3",
            "component:1772360100",
        ),
        (" lead and trail ", " lead and trail "),
        ("=:#!\\", "=:#!\\"),
        ("", "empty key"),
        ("empty value", ""),
        ("controls\t\n\r\x0c\x01\x7f", "controls\t\n\r\x0c\x01\x7f"),
        ("caf\u{e9} \u{2603}", "Gr\u{fc}\u{df}e \u{1F600}"),
        ("trailing backslash\\", "trailing backslash\\"),
    ]);
    let bytes = properties::write(
        &entries,
        Some("Banalytics box \u{2013} modules\ncaf\u{e9} line two\r\n!bang"),
    );
    assert!(
        bytes.is_ascii() || bytes.contains(&0xE9),
        "ISO-8859-1 output"
    );
    assert_eq!(properties::read(&bytes).unwrap(), entries);

    let Some(java) = Java::compile() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.properties");
    std::fs::write(&path, &bytes).unwrap();
    let java_view = java.dump(&[path]).remove(0);
    assert_eq!(java_view, Some(dump(&entries)));
}

#[test]
fn java_reads_our_modules_info_as_module_keys() {
    let modules = vec![
        InstalledModule {
            coords: Coords::new("com.banalytics.box", "core", "1.0.0").unwrap(),
            module_type: ModuleType::Core,
            upload_epoch: 1_772_360_130,
        },
        InstalledModule {
            coords: Coords::new("com.banalytics.box", "onvif+cam", "2.0.0-rc.1").unwrap(),
            module_type: ModuleType::Component,
            upload_epoch: 1_700_000_000,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    installed::write_modules_info(dir.path(), &modules).unwrap();
    assert_eq!(
        installed::read_modules_info(dir.path()).unwrap(),
        Some(modules)
    );

    let Some(java) = Java::compile() else { return };
    let java_view = java
        .dump(&[dir.path().join(installed::MODULES_INFO_FILE)])
        .remove(0);
    assert_eq!(
        java_view,
        Some(vec![
            "com.banalytics.box:core:1.0.0=core:1772360130".to_owned(),
            "com.banalytics.box:onvif+cam:2.0.0-rc.1=component:1700000000".to_owned(),
        ])
    );
}

/// Hand-written corner cases of `Properties.load`.
const EDGE_CASES: &[&[u8]] = &[
    b"a=b",
    b"g:a:1=core:5",
    b"  key   value with  spaces  ",
    b"key\\ with\\ space = v",
    b"k = = v",
    b"k := v",
    b"k\t\x0c: v",
    b"k=one \\\n   two \\\r\n\t three",
    b"k=\\\n",
    b"\\\n",
    b"\\",
    b"\\\n#not a key?\nb=1",
    b"k=v\\\n\n  next=line",
    b"k=v\\\\\nx=y",
    b"k=v\\\\\\\nx=y",
    b"#c\n!c\n  #c\n\n\r\n\r\rk=v\r",
    b"#comment \\\nk=v",
    b"k=a\\\n  #b\\\n  !c",
    b"\\u0041\\u00e9=\\uD83D\\uDE00",
    b"k=\\u12G4",
    b"k=\\u12",
    b"k=\\uD800",
    b"k=\\uDE00\\uD83D",
    b"k=\\q\\t\\n\\r\\f\\\\\\ \\=",
    b"k=caf\xe9\xff\x80",
    b"dup=1\ndup=2\nother=3\ndup=4",
    b":value only",
    b"=",
    b"   ",
];

/// A small deterministic generator: properties-like bytes from an alphabet
/// where separators, escapes and line ends are frequent.
fn pseudo_random_inputs(count: usize) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"\\\\\\u0aD8dEe \t\x0c\r\n\n==::#!kv\xe9";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = (next() % 40) as usize;
            (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect()
        })
        .collect()
}

#[test]
fn our_reader_agrees_with_java_load() {
    let Some(java) = Java::compile() else {
        // Without Java, the edge cases still must not panic the reader.
        for input in EDGE_CASES.iter().copied().map(<[u8]>::to_vec) {
            let _ = properties::read(&input);
        }
        return;
    };
    let inputs: Vec<Vec<u8>> = EDGE_CASES
        .iter()
        .map(|b| b.to_vec())
        .chain(pseudo_random_inputs(400))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.path().join(format!("{i}.properties"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let java_views = java.dump(&paths);

    let mut compared = 0;
    for (input, java_view) in inputs.iter().zip(java_views) {
        let shown = String::from_utf8_lossy(input);
        match (properties::read(input), java_view) {
            (Ok(ours), Some(theirs)) => {
                assert_eq!(dump(&ours), theirs, "input {shown:?}");
                compared += 1;
            }
            (Err(PropertiesError::MalformedUnicodeEscape { .. }), None) => {}
            // Java keeps a lone surrogate in a String; we refuse it.
            (Err(PropertiesError::UnpairedSurrogate { .. }), Some(theirs)) => {
                assert!(
                    theirs
                        .iter()
                        .any(|l| ["8", "9", "A", "B", "C", "D", "E", "F"]
                            .iter()
                            .any(|d| l.contains(&format!("\\uD{d}")))),
                    "input {shown:?}: java shows no surrogate in {theirs:?}"
                );
            }
            (ours, theirs) => {
                panic!("input {shown:?}: ours {ours:?}, java {theirs:?}")
            }
        }
    }
    assert!(
        compared > 100,
        "only {compared} inputs compared entry by entry"
    );
}
