//! Why a fetch failed, with the evidence, and which failures are worth
//! another attempt.

use std::path::PathBuf;
use std::time::Duration;

/// Why a fetch failed. Each variant carries the evidence.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {source}")]
    Client {
        /// The underlying error.
        source: reqwest::Error,
    },
    /// `ca_file` cannot be read or holds no usable PEM certificate.
    #[error("ca_file {path}: {reason}")]
    CaFile {
        /// The file, resolved against the home.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting, sending or receiving failed at the transport level
    /// (connect error, connect timeout, reset, body cut inside a declared
    /// `Content-Length`). The message names the cause, from the client
    /// error's sources (a refused certificate, a refused redirect).
    #[error("request to {url} failed: {}", crate::error::error_chain(.source))]
    Transport {
        /// The URL requested.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// No response headers within the connect and read timeouts.
    #[error("no response from {url} within {timeout:?}")]
    NoResponse {
        /// The URL requested.
        url: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The body stopped: no byte for the read timeout.
    #[error("download of {url} stalled: no byte for {timeout:?} after {received} bytes")]
    Stalled {
        /// The URL requested.
        url: String,
        /// The read timeout that fired.
        timeout: Duration,
        /// Body bytes received in this attempt before the stall.
        received: u64,
    },
    /// The body moved, but slower than the configured minimum.
    #[error(
        "download of {url} too slow: {bytes_per_s} B/s over {window:?}, minimum {min_bytes_per_s} B/s"
    )]
    TooSlow {
        /// The URL requested.
        url: String,
        /// The measured average.
        bytes_per_s: u64,
        /// The configured minimum.
        min_bytes_per_s: u64,
        /// The window it was measured over.
        window: Duration,
    },
    /// The server answered 404: the artifact does not exist (an optional
    /// package is then absent).
    #[error("{url} not found (http 404)")]
    NotFound {
        /// The URL requested.
        url: String,
    },
    /// A redirect that the rule of [`redirect`](super::redirect()) refuses:
    /// to another host for an artifact whose digest is not from TUF or the
    /// portal, from https to http, or one hop too many.
    #[error("{url} redirects to {location}: {reason}")]
    RedirectRefused {
        /// The URL requested first.
        url: String,
        /// Where the refused redirect points.
        location: String,
        /// Why it is refused.
        reason: String,
    },
    /// The server answered a status that is neither success nor 404.
    #[error("{url} answered http {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Writing on would leave less than `min_free_space` free, or the file
    /// system is full (`ENOSPC`). The partial file was removed.
    #[error("download of {url} stopped: {free} bytes free after {written} bytes written, {min_free} must stay free (min_free_space){}", if *enospc { "; the file system is full" } else { "" })]
    NoSpace {
        /// The URL requested.
        url: String,
        /// Bytes free when it stopped.
        free: u64,
        /// Bytes of the file on disk when it stopped.
        written: u64,
        /// The reserve.
        min_free: u64,
        /// Whether a write failed with `ENOSPC`.
        enospc: bool,
    },
    /// The server sent, or announced, more bytes than declared. Nothing past
    /// the declared size was written and the partial file was removed.
    #[error("{url} sent more than the declared {declared} bytes (at least {received_more} more)")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The declared size (or the bound for undeclared sizes).
        declared: u64,
        /// Bytes seen, or announced by the headers, past the declared size.
        received_more: u64,
    },
    /// The body ended before the expected size.
    #[error("{url} ended after {received} of {expected} bytes")]
    Truncated {
        /// The URL requested.
        url: String,
        /// The expected size of the whole file.
        expected: u64,
        /// Bytes of the file on disk when the body ended.
        received: u64,
    },
    /// A `206` whose `Content-Range` does not start where the partial ends.
    /// The partial file was removed, so the next call starts from zero.
    #[error("{url} answered a request for bytes {requested_start}- with content-range {content_range:?}")]
    BadContentRange {
        /// The URL requested.
        url: String,
        /// The first byte requested.
        requested_start: u64,
        /// The `Content-Range` header received (empty when absent).
        content_range: String,
    },
    /// A `416` to a range request: the partial does not fit the file on the
    /// server. The partial was removed, so the next attempt starts from zero.
    #[error("{url} cannot serve bytes from {start} (http 416)")]
    RangeNotSatisfiable {
        /// The URL requested.
        url: String,
        /// The first byte requested.
        start: u64,
    },
    /// The SHA-256 of the downloaded file is not the expected one. The
    /// partial file was removed.
    #[error("sha-256 of {url} is {actual}, expected {expected}")]
    ChecksumMismatch {
        /// The URL requested.
        url: String,
        /// The expected digest.
        expected: banalytics_home::Sha256,
        /// The digest of what was received.
        actual: banalytics_home::Sha256,
    },
    /// Neither the module object nor the repository gives a SHA-256 for
    /// the artifact, and the checksum policy requires one.
    #[error("no sha-256 for {url}: neither the module object nor {url}.sha256 gives one")]
    NoChecksum {
        /// The URL of the artifact.
        url: String,
    },
    /// A `.sha256` file that does not start with a 64-digit hex digest.
    #[error("{url} is not a sha-256 digest file: {content:?}")]
    BadDigest {
        /// The URL of the digest file.
        url: String,
        /// The start of its content.
        content: String,
    },
    /// A `.sha256` file larger than [`MAX_DIGEST_FILE_BYTES`](super::MAX_DIGEST_FILE_BYTES).
    #[error("{url} is larger than {limit} bytes, too large for a digest file")]
    DigestFileTooLarge {
        /// The URL of the digest file.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The partial's meta file is of a newer format: the partial and its
    /// meta are left as they are, and this download is not made.
    #[error("{0}")]
    NewerFormat(banalytics_home::format::NewerFormat),
    /// A local file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl FetchError {
    /// Whether the partial file is worthless after this error and removed
    /// (its bytes are wrong, or the server cannot extend it).
    pub(super) fn discards_partial(&self) -> bool {
        matches!(
            self,
            FetchError::TooLarge { .. }
                | FetchError::NoSpace { .. }
                | FetchError::BadContentRange { .. }
                | FetchError::RangeNotSatisfiable { .. }
                | FetchError::ChecksumMismatch { .. }
        )
    }

    /// Whether another attempt may succeed: connect and transport errors,
    /// timeouts, stalls, slow or truncated bodies, a `416` after which the
    /// download restarts from zero, and `5xx`. Never a `4xx`, nor a refused
    /// redirect.
    pub fn is_transient(&self) -> bool {
        match self {
            // The client follows no redirect itself (`fetch::send` does),
            // so reqwest never fails on one.
            FetchError::Transport { source, .. } => !source.is_builder(),
            FetchError::NoResponse { .. }
            | FetchError::Stalled { .. }
            | FetchError::TooSlow { .. }
            | FetchError::Truncated { .. }
            | FetchError::RangeNotSatisfiable { .. } => true,
            FetchError::HttpStatus { status, .. } => (500..600).contains(status),
            FetchError::Client { .. }
            | FetchError::CaFile { .. }
            | FetchError::NotFound { .. }
            | FetchError::RedirectRefused { .. }
            | FetchError::TooLarge { .. }
            | FetchError::NoSpace { .. }
            | FetchError::BadContentRange { .. }
            | FetchError::ChecksumMismatch { .. }
            | FetchError::NoChecksum { .. }
            | FetchError::BadDigest { .. }
            | FetchError::DigestFileTooLarge { .. }
            | FetchError::NewerFormat(_)
            | FetchError::Io { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        let url = || "http://r/a.jar".to_owned();
        let status = |status| FetchError::HttpStatus { url: url(), status };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(403).is_transient());
        assert!(!status(429).is_transient());
        assert!(!FetchError::NotFound { url: url() }.is_transient());
        assert!(!FetchError::RedirectRefused {
            url: url(),
            location: "http://cdn/a.jar".into(),
            reason: "redirect to another host cdn refused".into()
        }
        .is_transient());
        assert!(FetchError::Truncated {
            url: url(),
            expected: 2,
            received: 1
        }
        .is_transient());
        assert!(FetchError::Stalled {
            url: url(),
            timeout: Duration::ZERO,
            received: 0
        }
        .is_transient());
        assert!(!FetchError::ChecksumMismatch {
            url: url(),
            expected: banalytics_home::Sha256::of(b"a"),
            actual: banalytics_home::Sha256::of(b"b")
        }
        .is_transient());
        assert!(!FetchError::TooLarge {
            url: url(),
            declared: 1,
            received_more: 1
        }
        .is_transient());
    }

    #[tokio::test]
    async fn a_transport_error_names_its_cause_not_only_the_url() {
        // A port nobody listens on: refused at connect.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/a.jar", free.local_addr().unwrap());
        drop(free);
        let client = crate::fetch::client(&Default::default()).unwrap();
        let source = client.get(&url).send().await.unwrap_err();
        let message = FetchError::Transport { url, source }.to_string();
        assert!(message.to_lowercase().contains("connect"), "{message}");
        assert!(message.contains("refused"), "{message}");
    }
}
