//! A SHA-256 digest as a value: parsed once from hex (either case) where it
//! enters, then compared as bytes and written as lower-case hex.
//!
//! The wire and on-disk form is the hex string it always was; only the
//! type in memory changed, so a digest is never compared as text again.

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;
use thiserror::Error;

/// A SHA-256 digest: 32 bytes inside, lower-case hex in `Display`, serde
/// and files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{value:?} is not a SHA-256 digest of 64 hex digits")]
pub struct Sha256Error {
    /// The refused text.
    pub value: String,
}

impl Sha256 {
    /// Parses 64 hex digits, either case.
    pub fn parse(text: &str) -> Result<Sha256, Sha256Error> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 || hex::decode_to_slice(text, &mut bytes).is_err() {
            return Err(Sha256Error {
                value: text.to_owned(),
            });
        }
        Ok(Sha256(bytes))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// The digest of everything `reader` yields, read in 1 MiB blocks.
    pub fn of_reader(reader: &mut impl io::Read) -> io::Result<Sha256> {
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Sha256::from_hasher(hasher))
    }

    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> io::Result<Sha256> {
        Sha256::of_reader(&mut std::fs::File::open(path)?)
    }

    /// The digest a streaming hasher computed.
    pub fn from_hasher(hasher: sha2::Sha256) -> Sha256 {
        Sha256(hasher.finalize().into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps 32 bytes (a digest computed elsewhere, e.g. TUF's metadata).
    pub fn from_bytes(bytes: [u8; 32]) -> Sha256 {
        Sha256(bytes)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.0, &mut hex).map_err(|_| fmt::Error)?;
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = Sha256Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256::parse(s)
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Sha256::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_either_case_and_displays_lower_case() {
        let lower = Sha256::parse(ABC).unwrap();
        let upper = Sha256::parse(&ABC.to_uppercase()).unwrap();
        assert_eq!(lower, upper);
        assert_eq!(lower, Sha256::of(b"abc"));
        assert_eq!(upper.to_string(), ABC);
    }

    #[test]
    fn refuses_what_is_not_64_hex_digits() {
        for bad in [
            "",
            "00",
            &ABC[1..],
            &format!("{ABC}0"),
            &ABC.replace('b', "g"),
        ] {
            assert_eq!(
                Sha256::parse(bad),
                Err(Sha256Error {
                    value: bad.to_owned()
                })
            );
        }
    }

    #[test]
    fn serde_form_is_the_hex_string() {
        let d = Sha256::of(b"abc");
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{ABC}\""));
        let back: Sha256 = serde_json::from_str(&format!("\"{}\"", ABC.to_uppercase())).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Sha256>("\"abc\"").is_err());
    }
}
