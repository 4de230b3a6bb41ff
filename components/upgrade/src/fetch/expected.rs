//! What the caller knows about an artifact before a download (its digest,
//! where that digest came from, and its size) and what a download
//! delivered.

use banalytics_home::Sha256;
use serde::Serialize;

use super::FetchError;

/// Where an artifact's expected digest came from. It decides whether a
/// redirect to another host may be followed ([`super::redirect()`]): only
/// a digest the repository cannot forge makes the host that serves the
/// bytes irrelevant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestSource {
    /// Targets metadata that `tough` verified against the pinned TUF root.
    Tuf,
    /// The module object in the portal's frame (the portal link, not the
    /// repository, said it).
    Portal,
    /// The repository's own `{url}.sha256` file: it proves only that the
    /// bytes are what the repository meant to send.
    Repository,
    /// No digest at all.
    #[default]
    None,
}

impl DigestSource {
    /// Whether the digest is independent of the repository and of whoever
    /// serves the bytes: from TUF or from the portal.
    pub fn is_authoritative(self) -> bool {
        matches!(self, DigestSource::Tuf | DigestSource::Portal)
    }
}

impl std::fmt::Display for DigestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestSource::Tuf => "digest from TUF",
            DigestSource::Portal => "digest from the portal",
            DigestSource::Repository => "digest from the repository's .sha256 file",
            DigestSource::None => "no digest",
        })
    }
}

/// Where the integrity of an artifact comes from, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// A SHA-256 digest.
    Sha256 {
        /// The digest.
        digest: Sha256,
        /// Who gave it.
        source: DigestSource,
    },
    /// Neither the module object nor the repository gives a digest.
    None,
}

impl Checksum {
    /// The module object's digest if it has one, otherwise the repository's
    /// `.sha256` file (the module object wins, contracts section 4).
    pub fn resolve(from_module: Option<Sha256>, from_repository: Option<Sha256>) -> Self {
        match from_module {
            Some(digest) => Checksum::Sha256 {
                digest,
                source: DigestSource::Portal,
            },
            None => match from_repository {
                Some(digest) => Checksum::Sha256 {
                    digest,
                    source: DigestSource::Repository,
                },
                None => Checksum::None,
            },
        }
    }

    /// The digest, if any.
    pub fn sha256(&self) -> Option<Sha256> {
        match self {
            Checksum::Sha256 { digest, .. } => Some(*digest),
            Checksum::None => None,
        }
    }

    /// Where the digest came from ([`DigestSource::None`] without one).
    pub fn source(&self) -> DigestSource {
        match self {
            Checksum::Sha256 { source, .. } => *source,
            Checksum::None => DigestSource::None,
        }
    }

    /// The digest, or [`FetchError::NoChecksum`] for `url` when there is
    /// none: for callers whose checksum policy refuses unverified artifacts.
    pub fn required(&self, url: &str) -> Result<Sha256, FetchError> {
        self.sha256().ok_or_else(|| FetchError::NoChecksum {
            url: url.to_owned(),
        })
    }
}

/// What the caller knows about an artifact before downloading it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// SHA-256 of the whole file; checked at the end.
    pub sha256: Option<Sha256>,
    /// Size in bytes; never more than this is written.
    pub size: Option<u64>,
    /// Where [`Self::sha256`] came from: a redirect to another host is
    /// followed only when it is TUF or the portal.
    pub digest_source: DigestSource,
}

impl Expected {
    /// Expectations from a resolved checksum and an optional declared size.
    pub fn new(checksum: Checksum, size: Option<u64>) -> Self {
        let digest_source = checksum.source();
        let sha256 = match checksum {
            Checksum::Sha256 { digest, .. } => Some(digest),
            Checksum::None => None,
        };
        Self {
            sha256,
            size,
            digest_source,
        }
    }
}

/// The outcome of a successful [`download`](super::download): the partial file is complete,
/// verified when a digest was expected, and fsynced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// SHA-256 of the whole file.
    pub sha256: Sha256,
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
        let digest = Sha256::parse(DIGEST).unwrap();
        let resolved = Checksum::resolve(Some(digest), Some(Sha256::of(b"other")));
        assert_eq!(
            resolved,
            Checksum::Sha256 {
                digest,
                source: DigestSource::Portal
            }
        );
        let repository = Checksum::resolve(None, Some(digest));
        assert_eq!(repository.sha256(), Some(digest));
        assert_eq!(repository.source(), DigestSource::Repository);
        assert_eq!(
            Expected::new(resolved, None).digest_source,
            DigestSource::Portal
        );
        assert_eq!(Checksum::resolve(None, None), Checksum::None);
        assert!(matches!(
            Checksum::None.required("http://r/a.jar"),
            Err(FetchError::NoChecksum { url }) if url == "http://r/a.jar"
        ));
        assert_eq!(repository.required("u").unwrap(), digest);
        assert_eq!(
            Expected::new(Checksum::None, Some(3)),
            Expected {
                sha256: None,
                size: Some(3),
                digest_source: DigestSource::None,
            }
        );
        assert!(DigestSource::Tuf.is_authoritative());
        assert!(DigestSource::Portal.is_authoritative());
        assert!(!DigestSource::Repository.is_authoritative());
        assert!(!DigestSource::None.is_authoritative());
    }
}
