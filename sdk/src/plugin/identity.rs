//! The identity a plugin library carries in its file, readable without
//! loading it: the ABI version, the build identity (SDK version, rustc
//! version, target) and the names of the kinds it exports.
//!
//! [`export_plugin!`](crate::export_plugin) writes it at compile time into a
//! static of its own link section ([`SECTION`]), as a small JSON object
//! ([`FileIdentity`]); [`FileIdentity::read`] finds that section in the
//! library file with the `object` crate. So a host can refuse a library of
//! another ABI or build before `dlopen` runs any of its code (initialisers
//! included), and the upgrade center's preflight can check a whole staged
//! set of libraries without loading any.
//!
//! The record is JSON rather than a `#[repr(C)]` struct so that a field can
//! be added without a new layout: readers ignore what they do not know.
//! `abi_version` is the one field whose name and meaning never change: a
//! reader reads it first, and refuses another version before it reads the
//! rest (as `banalytics_plugin_abi_version` is read first in a loaded
//! library).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Identity, ABI_VERSION, RUSTC_VERSION, SDK_VERSION, TARGET};

/// The link section of the identity in an ELF library (Linux and the other
/// ELF Unixes). `export_plugin!` spells it literally; a test keeps both the
/// same.
pub const SECTION: &str = ".banalytics_plugin";
/// The section of the identity in a Mach-O library (segment `__DATA`);
/// Mach-O section names have at most 16 bytes.
pub const MACHO_SECTION: &str = "__bnlx_plugin";
/// The section of the identity in a PE library (Windows `.dll`): image
/// section names longer than 8 bytes survive only with GNU linkers, so a
/// short one.
pub const PE_SECTION: &str = ".bnlxid";
/// The exported symbol of the identity's static. Exported so that no linker
/// drops the section as unreferenced; readers use the section.
pub const SYMBOL: &str = "banalytics_plugin_identity_record";

/// The identity record of a plugin library file: the JSON object in its
/// [`SECTION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The ABI version the library was built for ([`ABI_VERSION`] of its
    /// SDK, or what `export_plugin!(abi_version = N; ..)` declared).
    pub abi_version: u32,
    /// [`SDK_VERSION`] the library was built with.
    pub sdk_version: String,
    /// [`RUSTC_VERSION`] the library was built with.
    pub rustc_version: String,
    /// [`TARGET`] the library was built for.
    pub target: String,
    /// The names of the component kinds it exports, as `box.toml` names
    /// them.
    pub kinds: Vec<String>,
}

/// Only the field every version of the record has.
#[derive(Deserialize)]
struct AbiOnly {
    abi_version: u32,
}

/// Why a library file's identity cannot be read, or is not this host's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileIdentityError {
    /// The file could not be opened or read.
    #[error("cannot read {file}: {reason}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        reason: String,
    },
    /// The file is not an object file (ELF or Mach-O) that `object` reads.
    #[error("{file}: not a library: {reason}")]
    NotALibrary {
        /// The file.
        file: PathBuf,
        /// What the object file reader refused.
        reason: String,
    },
    /// A library without the identity section: not a plugin, or one built
    /// with an SDK that wrote none.
    #[error("{file}: no plugin identity (no section {SECTION}): not a plugin built with export_plugin! of this SDK's ABI")]
    NoIdentity {
        /// The file.
        file: PathBuf,
    },
    /// The section is there but does not hold a readable identity.
    #[error("{file}: unreadable plugin identity in section {SECTION}: {reason}")]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// What the JSON reader refused.
        reason: String,
    },
    /// Built for another ABI version.
    #[error("{file}: ABI version mismatch: expected {expected}, found {found}")]
    AbiMismatch {
        /// The file.
        file: PathBuf,
        /// This SDK's [`ABI_VERSION`].
        expected: u32,
        /// The library's.
        found: u32,
    },
    /// Built with another SDK, compiler or for another target.
    #[error("{file}: build identity mismatch: {diff}")]
    BuildMismatch {
        /// The file.
        file: PathBuf,
        /// Each differing value with the expected and the found one
        /// ([`Identity::mismatch`]).
        diff: String,
    },
}

impl FileIdentityError {
    /// The same error naming `file` instead: a staged file by the name it
    /// has in the set rather than by its path in a scratch folder.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        let named = match &mut self {
            FileIdentityError::Io { file, .. }
            | FileIdentityError::NotALibrary { file, .. }
            | FileIdentityError::NoIdentity { file }
            | FileIdentityError::Unreadable { file, .. }
            | FileIdentityError::AbiMismatch { file, .. }
            | FileIdentityError::BuildMismatch { file, .. } => file,
        };
        *named = file.into();
        self
    }
}

impl FileIdentity {
    /// Reads the identity of the library at `path` from its file, without
    /// loading it: only the headers and the identity section are read. The
    /// ABI version is checked before the rest of the record is read; the
    /// build identity is not checked here ([`FileIdentity::check`]).
    pub fn read(path: &Path) -> Result<FileIdentity, FileIdentityError> {
        use object::{Object, ObjectSection};

        let file = std::fs::File::open(path).map_err(|e| FileIdentityError::Io {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        let cache = object::ReadCache::new(file);
        let object = object::File::parse(&cache).map_err(|e| FileIdentityError::NotALibrary {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        let section = object
            .section_by_name(SECTION)
            .or_else(|| object.section_by_name(MACHO_SECTION))
            .or_else(|| object.section_by_name(PE_SECTION))
            .ok_or_else(|| FileIdentityError::NoIdentity {
                file: path.to_owned(),
            })?;
        let bytes = section.data().map_err(|e| FileIdentityError::Unreadable {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        FileIdentity::parse(path, bytes)
    }

    /// Parses the section's bytes of the library `file` (named in errors).
    /// Trailing NUL bytes (section padding) are ignored.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<FileIdentity, FileIdentityError> {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = &bytes[..end];
        let unreadable = |e: serde_json::Error| FileIdentityError::Unreadable {
            file: file.to_owned(),
            reason: e.to_string(),
        };
        let AbiOnly { abi_version } = serde_json::from_slice(bytes).map_err(unreadable)?;
        if abi_version != ABI_VERSION {
            return Err(FileIdentityError::AbiMismatch {
                file: file.to_owned(),
                expected: ABI_VERSION,
                found: abi_version,
            });
        }
        serde_json::from_slice(bytes).map_err(unreadable)
    }

    /// Whether a host of this build can load the library `file` with this
    /// identity: the ABI version, then the SDK version, rustc version and
    /// target must be this build's ([`Identity::host`]).
    pub fn check(&self, file: &Path) -> Result<(), FileIdentityError> {
        if self.abi_version != ABI_VERSION {
            return Err(FileIdentityError::AbiMismatch {
                file: file.to_owned(),
                expected: ABI_VERSION,
                found: self.abi_version,
            });
        }
        let found = Identity {
            sdk_version: self.sdk_version.clone(),
            rustc_version: self.rustc_version.clone(),
            target: self.target.clone(),
            kinds: Vec::new(),
        };
        match found.mismatch(&Identity::host()) {
            None => Ok(()),
            Some(diff) => Err(FileIdentityError::BuildMismatch {
                file: file.to_owned(),
                diff,
            }),
        }
    }

    /// Reads the identity of the library at `path` and checks it against
    /// this build: what a host does before it loads a library.
    pub fn read_checked(path: &Path) -> Result<FileIdentity, FileIdentityError> {
        let identity = FileIdentity::read(path)?;
        identity.check(path)?;
        Ok(identity)
    }
}

/// The identity record's bytes, for `export_plugin!`: the JSON of a
/// [`FileIdentity`] of this SDK's build with `abi_version` and `kinds`,
/// made at compile time. `N` must be [`record_len`] of the same arguments
/// (checked at compile time).
pub const fn record<const N: usize>(abi_version: u32, kinds: &[&str]) -> [u8; N] {
    let mut out = Out {
        buf: [0; N],
        len: 0,
    };
    out.record(abi_version, kinds);
    assert!(
        out.len == N,
        "the identity record's length is not record_len of the same arguments"
    );
    out.buf
}

/// The length of [`record`] for these arguments.
pub const fn record_len(abi_version: u32, kinds: &[&str]) -> usize {
    let mut out = Out { buf: [], len: 0 };
    out.record(abi_version, kinds);
    out.len
}

/// A JSON writer that works at compile time: writes into `buf` as far as it
/// reaches and counts every byte, so that a zero-length buffer measures.
struct Out<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Out<N> {
    const fn byte(&mut self, b: u8) {
        if self.len < N {
            self.buf[self.len] = b;
        }
        self.len += 1;
    }

    const fn raw(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            self.byte(bytes[i]);
            i += 1;
        }
    }

    /// A JSON string: quotes, and escapes for `"`, `\` and control bytes;
    /// other bytes (UTF-8 included) as they are.
    const fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = s.as_bytes();
        self.byte(b'"');
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'"' || b == b'\\' {
                self.byte(b'\\');
                self.byte(b);
            } else if b < 0x20 {
                self.raw("\\u00");
                self.byte(HEX[(b >> 4) as usize]);
                self.byte(HEX[(b & 0xf) as usize]);
            } else {
                self.byte(b);
            }
            i += 1;
        }
        self.byte(b'"');
    }

    const fn number(&mut self, n: u32) {
        let mut digits = [0u8; 10];
        let (mut n, mut count) = (n, 0);
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while count > 0 {
            count -= 1;
            self.byte(digits[count]);
        }
    }

    const fn record(&mut self, abi_version: u32, kinds: &[&str]) {
        self.raw("{\"abi_version\":");
        self.number(abi_version);
        self.raw(",\"sdk_version\":");
        self.string(SDK_VERSION);
        self.raw(",\"rustc_version\":");
        self.string(RUSTC_VERSION);
        self.raw(",\"target\":");
        self.string(TARGET);
        self.raw(",\"kinds\":[");
        let mut i = 0;
        while i < kinds.len() {
            if i > 0 {
                self.byte(b',');
            }
            self.string(kinds[i]);
            i += 1;
        }
        self.raw("]}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_build(abi_version: u32, kinds: &[&str]) -> FileIdentity {
        FileIdentity {
            abi_version,
            sdk_version: SDK_VERSION.into(),
            rustc_version: RUSTC_VERSION.into(),
            target: TARGET.into(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn the_compile_time_record_is_the_json_of_this_builds_identity() {
        const KINDS: &[&str] = &["echo", "odd \"kind\" \\ with\ttab", "ünïcode"];
        const LEN: usize = record_len(ABI_VERSION, KINDS);
        const RECORD: [u8; LEN] = record::<LEN>(ABI_VERSION, KINDS);
        let parsed = FileIdentity::parse(Path::new("x.so"), &RECORD).unwrap();
        assert_eq!(parsed, this_build(ABI_VERSION, KINDS));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&RECORD).unwrap(),
            serde_json::to_value(this_build(ABI_VERSION, KINDS)).unwrap()
        );
        for n in [0, 7, 10, 4_294_967_295] {
            let len = record_len(n, &[]);
            let mut out = Out::<256> {
                buf: [0; 256],
                len: 0,
            };
            out.record(n, &[]);
            let value: serde_json::Value = serde_json::from_slice(&out.buf[..len]).unwrap();
            assert_eq!(value["abi_version"], n, "{value}");
        }
    }

    #[test]
    fn padding_is_ignored_and_another_abi_is_refused_before_the_rest_is_read() {
        let file = Path::new("modules/a.so");
        let mut padded = serde_json::to_vec(&this_build(ABI_VERSION, &["a"])).unwrap();
        padded.extend([0, 0, 0]);
        assert_eq!(
            FileIdentity::parse(file, &padded).unwrap().kinds,
            vec!["a".to_owned()]
        );
        // A future record: another ABI, other fields. Only abi_version is read.
        let future = br#"{"abi_version":99,"layout":{"anything":true}}"#;
        let err = FileIdentity::parse(file, future).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("modules/a.so: ABI version mismatch: expected {ABI_VERSION}, found 99")
        );
        let err = FileIdentity::parse(file, b"\0\0").unwrap_err();
        assert!(matches!(err, FileIdentityError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn check_names_the_file_and_each_expected_and_found_value() {
        let file = Path::new("com.example-sample-1.0.so");
        assert_eq!(this_build(ABI_VERSION, &[]).check(file), Ok(()));
        let other = FileIdentity {
            rustc_version: "rustc 1.0.0".into(),
            ..this_build(ABI_VERSION, &[])
        };
        assert_eq!(
            other.check(file).unwrap_err().to_string(),
            format!(
                "com.example-sample-1.0.so: build identity mismatch: rustc version: expected {RUSTC_VERSION:?}, found \"rustc 1.0.0\""
            )
        );
        assert_eq!(
            this_build(ABI_VERSION + 1, &[])
                .check(Path::new("modules-upgrade.tmp/x.so"))
                .unwrap_err()
                .in_file(file)
                .to_string(),
            format!(
                "com.example-sample-1.0.so: ABI version mismatch: expected {ABI_VERSION}, found {}",
                ABI_VERSION + 1
            )
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_or_has_no_identity_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, b"not an object file at all").unwrap();
        assert!(matches!(
            FileIdentity::read(&junk),
            Err(FileIdentityError::NotALibrary { .. })
        ));
        // This test binary is an object file without the section.
        let me = std::env::current_exe().unwrap();
        let err = FileIdentity::read(&me).unwrap_err();
        assert_eq!(err, FileIdentityError::NoIdentity { file: me.clone() });
        assert!(err.to_string().contains(&me.display().to_string()));
        let missing = dir.path().join("missing.so");
        assert!(matches!(
            FileIdentity::read(&missing),
            Err(FileIdentityError::Io { .. })
        ));
    }
}
