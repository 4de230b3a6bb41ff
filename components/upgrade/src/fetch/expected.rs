//! What the caller knows about an artifact before a download (its digest
//! and size) and what a download delivered.

use super::FetchError;

/// Where the integrity of an artifact comes from, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// A SHA-256 digest, lower-case hex.
    Sha256(String),
    /// Neither the module object nor the repository gives a digest.
    None,
}

impl Checksum {
    /// The module object's digest if it has one, otherwise the repository's
    /// `.sha256` file (the module object wins, contracts section 4).
    pub fn resolve(from_module: Option<&str>, from_repository: Option<String>) -> Self {
        match from_module {
            Some(digest) => Checksum::Sha256(digest.trim().to_ascii_lowercase()),
            None => match from_repository {
                Some(digest) => Checksum::Sha256(digest),
                None => Checksum::None,
            },
        }
    }

    /// The digest, if any.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Checksum::Sha256(digest) => Some(digest),
            Checksum::None => None,
        }
    }

    /// The digest, or [`FetchError::NoChecksum`] for `url` when there is
    /// none: for callers whose checksum policy refuses unverified artifacts.
    pub fn required(&self, url: &str) -> Result<&str, FetchError> {
        self.sha256().ok_or_else(|| FetchError::NoChecksum {
            url: url.to_owned(),
        })
    }
}

/// What the caller knows about an artifact before downloading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// SHA-256 of the whole file, hex (case-insensitive); checked at the end.
    pub sha256: Option<String>,
    /// Size in bytes; never more than this is written.
    pub size: Option<u64>,
}

impl Expected {
    /// Expectations from a resolved checksum and an optional declared size.
    pub fn new(checksum: Checksum, size: Option<u64>) -> Self {
        let sha256 = match checksum {
            Checksum::Sha256(digest) => Some(digest),
            Checksum::None => None,
        };
        Self { sha256, size }
    }
}

/// The outcome of a successful [`download`](super::download): the partial file is complete,
/// verified when a digest was expected, and fsynced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Body bytes received over the network by this call, all attempts summed.
    pub bytes_transferred: u64,
    /// Bytes already on disk that the completing attempt kept (0 when it
    /// started from scratch; the whole size when the partial was complete).
    pub resumed_from: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn checksum_from_module_wins_over_repository() {
        let module = DIGEST.to_uppercase();
        let resolved = Checksum::resolve(Some(&module), Some("0".repeat(64)));
        assert_eq!(resolved, Checksum::Sha256(DIGEST.to_owned()));
        assert_eq!(
            Checksum::resolve(None, Some(DIGEST.to_owned())).sha256(),
            Some(DIGEST)
        );
        assert_eq!(Checksum::resolve(None, None), Checksum::None);
        assert!(matches!(
            Checksum::None.required("http://r/a.jar"),
            Err(FetchError::NoChecksum { url }) if url == "http://r/a.jar"
        ));
        assert_eq!(
            Checksum::Sha256(DIGEST.into()).required("u").unwrap(),
            DIGEST
        );
        assert_eq!(
            Expected::new(Checksum::None, Some(3)),
            Expected {
                sha256: None,
                size: Some(3)
            }
        );
    }
}
