//! The upgrade center's errors. Each is an expected outcome of a
//! synchronisation (reported to the portal and shown by `status`), not an
//! actor failure; [`UpgradeError::failure`] is the one place that decides
//! how each is reported.

use std::path::PathBuf;

use crate::{archive::ArchiveError, coords::Coords, fetch::FetchError, sync::SyncState};

/// Why a synchronisation did not reach a staged set.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No environment UUID: the box is not registered with the portal.
    #[error("environment is not registered: {file} has no environmentUuid")]
    NotRegistered {
        /// The registration file.
        file: PathBuf,
    },
    /// The portal's target set was refused as a whole.
    #[error("target set refused: {reason}")]
    InvalidTarget {
        /// The fault, naming the field and value.
        reason: String,
    },
    /// The target set is the one an automatic rollback took off the box;
    /// the message is the quarantine's refusal, naming that rollback.
    #[error("{refusal}")]
    Quarantined {
        /// [`banalytics_home::quarantine::Quarantine::refusal`].
        refusal: String,
    },
    /// An operator's synchronisation was refused before anything was
    /// asked: Portal Integration is not connected, or none runs. Nothing
    /// is reported to the portal: the request was the operator's.
    #[error("refused: {reason}; nothing was started and nothing is reported to the portal")]
    PortalOffline {
        /// Why the portal cannot be asked, in words.
        reason: String,
    },
    /// The portal did not answer `GET_ENV_MOD_REQ` in time.
    #[error("the portal did not answer GET_ENV_MOD_REQ within {waited_s} s")]
    PortalTimeout {
        /// Seconds waited.
        waited_s: u64,
    },
    /// The HTTP client could not be built (TLS set-up, a CA file).
    #[error("cannot build the HTTP client: {source}")]
    Client {
        /// The cause.
        source: FetchError,
    },
    /// An artifact could not be fetched.
    #[error("module {module}: {source}")]
    Fetch {
        /// The module.
        module: Coords,
        /// The cause.
        source: FetchError,
    },
    /// No SHA-256 in the module object nor a `.sha256` file, under
    /// `checksum_policy = "require"`.
    #[error("module {module}: no SHA-256 for {url} (none in the module object, no .sha256 file); set checksum_policy = \"warn\" to accept it")]
    NoChecksum {
        /// The module.
        module: Coords,
        /// The artifact.
        url: String,
    },
    /// A native module has no build for this box's platform: the whole set
    /// is refused before anything is downloaded.
    #[error("module {module} has no build for this box's platform {platform}; the set is refused before anything is downloaded")]
    NoBuildForPlatform {
        /// The module.
        module: Coords,
        /// This box's target triple.
        platform: String,
    },
    /// The target set's core does not speak the handshake of this box's
    /// launcher (the installed package): it could never start, so the set
    /// is refused before anything is downloaded.
    #[error("module {module} speaks launcher handshake versions {speaks:?}, this box's launcher speaks version {launcher}: install a banalytics-box package whose launcher speaks one of them first; the set is refused before anything is downloaded")]
    LauncherTooOld {
        /// The core module.
        module: Coords,
        /// Its `launcherHandshakes`.
        speaks: Vec<u32>,
        /// The launcher's handshake version.
        launcher: u32,
    },
    /// The repository's TUF metadata could not be verified (signatures,
    /// expiry, rollback, the clock): nothing of the set is fetched.
    #[error("repository metadata refused: {reason}")]
    Trust {
        /// `tough`'s reason, or the clock's.
        reason: String,
    },
    /// With `trust_root` set, an artifact the set needs is not a target of
    /// the signed targets metadata.
    #[error("module {module}: {path} is not a target of the repository's signed metadata")]
    NotATarget {
        /// The module.
        module: Coords,
        /// The artifact's Maven path.
        path: String,
    },
    /// Not enough free space for the downloads and the staging.
    #[error("not enough free space on {path}: {needed} bytes needed, {free} free, {keep} to keep free (min_free_space)")]
    InsufficientSpace {
        /// A folder on the file system checked.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Bytes that must stay free (`min_free_space`).
        keep: u64,
    },
    /// A package was refused or could not be extracted.
    #[error("module {module}: {package}: {source}")]
    Archive {
        /// The module.
        module: Coords,
        /// The package file.
        package: String,
        /// The cause, naming the entry.
        source: ArchiveError,
    },
    /// Two packages put different files under one name.
    #[error("{name} is in both {first} and {second} with different content")]
    Collision {
        /// The file name.
        name: String,
        /// One module.
        first: Coords,
        /// The other module.
        second: Coords,
    },
    /// The host's preflight refused the complete staged set: it would not
    /// start (a kind `box.toml` names that nothing in the set provides, a
    /// plugin library of another ABI or build). Nothing was staged.
    #[error("target set {set} refused before staging: {reason}; nothing was staged, the active set is unchanged")]
    Preflight {
        /// The set's modules, comma-separated.
        set: String,
        /// The host's reason, naming the kind, component or file.
        reason: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The installed (or staged) set's files could not be read or written.
    #[error(transparent)]
    Installed(#[from] crate::installed::InstalledError),
    /// A helper actor failed while working for the synchronisation.
    #[error("{0}")]
    Actor(#[from] banalytics_sdk::SendError),
}

/// How a synchronisation that ended in an error is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// An artifact of `module` could not be fetched, or has no SHA-256
    /// anywhere: the portal gets `download_error` for that module (no
    /// `installation_cancelled` for the set) and the synchronisation ends
    /// `failed`.
    Download {
        /// The module.
        module: &'a Coords,
    },
    /// The operator's request was refused before the portal was asked
    /// (its link is down): the portal gets nothing (a late
    /// `installation_cancelled` would fail the box in a rollout) and the
    /// synchronisation ends `refused`.
    Refused,
    /// Anything else: the portal gets `installation_cancelled` for the set
    /// and the synchronisation ends `cancelled`.
    Cancelled,
}

impl Failure<'_> {
    /// The phase a synchronisation ends in after this failure.
    pub fn state(self) -> SyncState {
        match self {
            Failure::Download { .. } => SyncState::Failed,
            Failure::Refused => SyncState::Refused,
            Failure::Cancelled => SyncState::Cancelled,
        }
    }
}

impl UpgradeError {
    /// How a synchronisation that ended in this error is reported.
    pub fn failure(&self) -> Failure<'_> {
        match self {
            UpgradeError::Fetch { module, .. } | UpgradeError::NoChecksum { module, .. } => {
                Failure::Download { module }
            }
            UpgradeError::PortalOffline { .. } => Failure::Refused,
            _ => Failure::Cancelled,
        }
    }
}

/// `e` and each of its sources, `: `-separated, for a message that must
/// name the cause: an HTTP client's error names the request, its sources
/// say what failed (`invalid peer certificate: UnknownIssuer`, a refused
/// redirect).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Wraps an I/O error with its path.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> UpgradeError {
    let path = path.into();
    move |source| UpgradeError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_download_errors_fail_a_module_the_rest_cancel_the_set() {
        let (a, b) = ("g:a:1".parse().unwrap(), "g:b:2".parse().unwrap());
        let no_checksum = UpgradeError::NoChecksum {
            module: a,
            url: "http://r/a.jar".into(),
        };
        assert_eq!(
            no_checksum.failure(),
            Failure::Download {
                module: &"g:a:1".parse().unwrap()
            }
        );
        assert_eq!(no_checksum.failure().state(), SyncState::Failed);
        let fetch = UpgradeError::Fetch {
            module: b,
            source: FetchError::NotFound {
                url: "http://r/b.jar".into(),
            },
        };
        assert_eq!(
            fetch.failure(),
            Failure::Download {
                module: &"g:b:2".parse().unwrap()
            }
        );
        let offline = UpgradeError::PortalOffline {
            reason: "the portal link is down".into(),
        };
        assert_eq!(offline.failure(), Failure::Refused);
        assert_eq!(offline.failure().state(), SyncState::Refused);
        for cancelled in [
            UpgradeError::PortalTimeout { waited_s: 60 },
            UpgradeError::InvalidTarget {
                reason: "empty".into(),
            },
            UpgradeError::Quarantined {
                refusal: "rolled back".into(),
            },
            io_at("/x")(std::io::Error::other("disk")),
        ] {
            assert_eq!(cancelled.failure(), Failure::Cancelled);
            assert_eq!(cancelled.failure().state(), SyncState::Cancelled);
        }
    }
}
