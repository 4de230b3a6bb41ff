//! The download engine of the Downloader: moves one artifact from the
//! repository into a `*.partial` file, resumably, bounded and verified.
//!
//! The original box downloaded with no timeout, no retry, no resume and no
//! checksum. Here every transfer is bounded (connect and per-chunk read
//! timeouts, a minimum throughput, the declared size), transient failures are
//! retried with exponential backoff from what is already on disk, resumption
//! survives a process restart (the validator of the response that started the
//! partial is kept in `{partial}.meta`), and the SHA-256 of the whole file is
//! computed while writing. The caller owns the file name (never a server
//! header) and renames the partial once [`download`] returns.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Default time to establish a TCP (and TLS) connection: a repository that
/// cannot accept a connection in 10 s over a box's uplink is down, not slow.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default longest silence inside a response (headers or body) before the
/// transfer counts as stalled: long enough for a congested mobile uplink,
/// short enough that a dead peer does not hold a download slot for minutes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default minimum average throughput: at 1 KiB/s a 50 MiB module already
/// takes 14 hours; below that a fresh connection is the better bet.
pub const DEFAULT_MIN_THROUGHPUT_BYTES_PER_S: u64 = 1024;

/// Default window over which the throughput is averaged: long enough to
/// ride out TCP slow start and short bursts of loss.
pub const DEFAULT_THROUGHPUT_WINDOW: Duration = Duration::from_secs(30);

/// Default number of attempts (the first one included): five attempts with
/// the default backoff span about a minute and a half of outage.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Default delay before the first retry; later delays double.
pub const DEFAULT_BASE_BACKOFF: Duration = Duration::from_secs(1);

/// Default cap of one retry delay (before jitter, which adds up to as much
/// again): a box should not wait longer than a minute to try again.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Largest artifact accepted when neither the caller nor the server declares
/// a size: module jars and model packages are far smaller, and a runaway body
/// must not fill the box's disk.
pub const MAX_UNDECLARED_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Largest `.sha256` file read: a digest and a file name fit in a few hundred
/// bytes; anything longer is not a digest file.
pub const MAX_DIGEST_FILE_BYTES: usize = 4096;

/// Largest `{partial}.meta` file read: a URL and a validator; anything longer
/// was not written by us and is ignored.
pub const MAX_META_BYTES: usize = 16 * 1024;

/// Most redirects followed (to the same host only): repository managers use
/// one or two; more is a loop.
pub const MAX_REDIRECTS: usize = 5;

/// Whole-request timeout of the small requests ([`probe`],
/// [`fetch_sha256_file`]): they move at most a few kilobytes.
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Buffer used to hash the prefix of a partial file before resuming.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// First line of a `{partial}.meta` file, with the format version.
const META_HEADER: &str = "banalytics-partial-meta 1";

/// Last line of a `{partial}.meta` file: its absence means a torn write.
const META_END: &str = "end";

/// How a download is bounded and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Time allowed to establish a connection (set on the client by [`client`]).
    pub connect_timeout: Duration,
    /// Longest wait for the response headers or for the next body chunk;
    /// no byte for this long is a stall.
    pub read_timeout: Duration,
    /// Minimum average body throughput over [`Self::throughput_window`];
    /// `0` disables the check.
    pub min_throughput_bytes_per_s: u64,
    /// Window over which the throughput is averaged.
    pub throughput_window: Duration,
    /// Attempts in one [`download`] call, the first one included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles per retry, with jitter.
    pub base_backoff: Duration,
    /// Cap of one retry delay before jitter.
    pub max_backoff: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            min_throughput_bytes_per_s: DEFAULT_MIN_THROUGHPUT_BYTES_PER_S,
            throughput_window: DEFAULT_THROUGHPUT_WINDOW,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

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

/// The outcome of a successful [`download`]: the partial file is complete,
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

/// Why a fetch failed. Each variant carries the evidence.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {source}")]
    Client {
        /// The underlying error.
        source: reqwest::Error,
    },
    /// Connecting, sending or receiving failed at the transport level
    /// (connect error, connect timeout, reset, body cut inside a declared
    /// `Content-Length`).
    #[error("request to {url} failed: {source}")]
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
    /// The server answered a status that is neither success nor 404.
    #[error("{url} answered http {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
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
        expected: String,
        /// The digest of what was received.
        actual: String,
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
    /// A `.sha256` file larger than [`MAX_DIGEST_FILE_BYTES`].
    #[error("{url} is larger than {limit} bytes, too large for a digest file")]
    DigestFileTooLarge {
        /// The URL of the digest file.
        url: String,
        /// The limit.
        limit: usize,
    },
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
    fn discards_partial(&self) -> bool {
        matches!(
            self,
            FetchError::TooLarge { .. }
                | FetchError::BadContentRange { .. }
                | FetchError::RangeNotSatisfiable { .. }
                | FetchError::ChecksumMismatch { .. }
        )
    }

    /// Whether another attempt may succeed: connect and transport errors,
    /// timeouts, stalls, slow or truncated bodies, a `416` after which the
    /// download restarts from zero, and `5xx`. Never a `4xx`.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transport { source, .. } => !source.is_builder() && !source.is_redirect(),
            FetchError::NoResponse { .. }
            | FetchError::Stalled { .. }
            | FetchError::TooSlow { .. }
            | FetchError::Truncated { .. }
            | FetchError::RangeNotSatisfiable { .. } => true,
            FetchError::HttpStatus { status, .. } => (500..600).contains(status),
            FetchError::Client { .. }
            | FetchError::NotFound { .. }
            | FetchError::TooLarge { .. }
            | FetchError::BadContentRange { .. }
            | FetchError::ChecksumMismatch { .. }
            | FetchError::NoChecksum { .. }
            | FetchError::BadDigest { .. }
            | FetchError::DigestFileTooLarge { .. }
            | FetchError::Io { .. } => false,
        }
    }
}

/// The HTTP client for the repository: rustls, the connect timeout of `cfg`,
/// a `banalytics-box/<version>` User-Agent, and at most [`MAX_REDIRECTS`]
/// redirects, all to the same host.
pub fn client(cfg: &FetchConfig) -> Result<reqwest::Client, FetchError> {
    let same_host = reqwest::redirect::Policy::custom(|attempt| {
        let first_host = attempt
            .previous()
            .first()
            .and_then(|u| u.host_str().map(str::to_owned));
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().host_str().map(str::to_owned) != first_host {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(cfg.connect_timeout)
        .user_agent(concat!("banalytics-box/", env!("CARGO_PKG_VERSION")))
        .redirect(same_host)
        .build()
        .map_err(|source| FetchError::Client { source })
}

/// Fetches `{url}.sha256`: a hex SHA-256 digest, optionally followed by white
/// space and a file name. `Ok(None)` when the repository answers 404.
/// Returns the digest in lower case.
#[tracing::instrument(skip(client))]
pub async fn fetch_sha256_file(
    client: &reqwest::Client,
    url: &str,
) -> Result<Option<String>, FetchError> {
    let digest_url = format!("{url}.sha256");
    let transport = |source| FetchError::Transport {
        url: digest_url.clone(),
        source,
    };
    let mut response = client
        .get(&digest_url)
        .timeout(SMALL_REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(transport)?;
    match response.status() {
        StatusCode::NOT_FOUND => {
            debug!(url = %digest_url, "no digest file");
            return Ok(None);
        }
        StatusCode::OK => {}
        other => {
            return Err(FetchError::HttpStatus {
                url: digest_url,
                status: other.as_u16(),
            })
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_DIGEST_FILE_BYTES {
            return Err(FetchError::DigestFileTooLarge {
                url: digest_url,
                limit: MAX_DIGEST_FILE_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    match parse_digest_file(&body) {
        Some(digest) => Ok(Some(digest)),
        None => Err(FetchError::BadDigest {
            content: String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned(),
            url: digest_url,
        }),
    }
}

/// Whether `url` exists: `HEAD`, `true` on success, `false` on 404, an error
/// otherwise (contracts section 4: any other failure is an error).
#[tracing::instrument(skip(client))]
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<bool, FetchError> {
    let response = client
        .head(url)
        .timeout(SMALL_REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|source| FetchError::Transport {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        Ok(false)
    } else if status.is_success() {
        Ok(true)
    } else {
        Err(FetchError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}

/// Downloads `url` into the file `partial`, resuming what is there.
///
/// Streams the body into `partial` while hashing it (a kept prefix is hashed
/// first), never writes more than the declared size, resumes with `Range`
/// and `If-Range` (validator kept in [`meta_path`]`(partial)`), restarts from
/// zero when the server answers `200`, retries transient failures
/// ([`FetchError::is_transient`]) with exponential backoff and jitter, checks
/// the SHA-256 when expected, and fsyncs the file. A partial that already
/// holds the declared size is only verified (and downloaded afresh if it
/// does not match). `progress` receives the bytes on disk and the total when
/// known. On success the meta file is removed; the caller renames `partial`.
///
/// One download per partial at a time: the caller holds the download
/// folder's lock. Without an expected digest a partial that already holds
/// the declared size is trusted as is; the caller's checksum policy decides
/// whether that is acceptable ([`Checksum::required`]).
#[tracing::instrument(skip(client, expected, cfg, progress), fields(partial = %partial.display()))]
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    partial: &Path,
    expected: &Expected,
    cfg: &FetchConfig,
    progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
) -> Result<Downloaded, FetchError> {
    let transferred = AtomicU64::new(0);
    let job = Attempt {
        client,
        url,
        partial,
        expected,
        cfg,
        progress,
        transferred: &transferred,
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(cfg.base_backoff)
        .with_max_delay(cfg.max_backoff)
        .with_max_times(cfg.max_attempts.max(1) as usize - 1)
        .with_jitter();
    let outcome = (|| job.run())
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(FetchError::is_transient)
        .notify(|error, delay| warn!(url, %error, ?delay, "download attempt failed, retrying"))
        .await;
    match &outcome {
        Ok(done) => info!(
            url,
            size = done.size,
            bytes_transferred = done.bytes_transferred,
            resumed_from = done.resumed_from,
            sha256 = %done.sha256,
            "downloaded"
        ),
        Err(error) => warn!(url, %error, "download failed"),
    }
    outcome
}

/// The file beside `partial` that keeps the URL and validator (ETag or
/// Last-Modified) of the response that started it, so that a later process
/// can resume with `If-Range`. [`download`] removes it on success.
pub fn meta_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

/// One attempt of a [`download`], everything it needs by reference.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    partial: &'a Path,
    expected: &'a Expected,
    cfg: &'a FetchConfig,
    progress: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    transferred: &'a AtomicU64,
}

impl Attempt<'_> {
    fn io(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FetchError {
        let path = path.to_owned();
        move |source| FetchError::Io { op, path, source }
    }

    /// Removes the partial and its meta file; missing files are fine.
    async fn discard(&self) -> Result<(), FetchError> {
        for path in [self.partial.to_owned(), meta_path(self.partial)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// Empties the partial and removes the meta file.
    async fn restart(&self, file: &mut File) -> Result<(), FetchError> {
        file.set_len(0)
            .await
            .map_err(self.io("truncate", self.partial))?;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(self.io("seek", self.partial))?;
        remove_if_exists(&meta_path(self.partial))
            .await
            .map_err(self.io("remove", &meta_path(self.partial)))
    }

    fn done(&self, sha256: String, size: u64, resumed_from: u64) -> Downloaded {
        Downloaded {
            sha256,
            size,
            bytes_transferred: self.transferred.load(Ordering::Relaxed),
            resumed_from,
        }
    }

    fn matches_expected(&self, actual: &str) -> bool {
        self.expected
            .sha256
            .as_deref()
            .is_none_or(|want| want.eq_ignore_ascii_case(actual))
    }

    async fn finish(&self, file: &mut File) -> Result<(), FetchError> {
        file.flush().await.map_err(self.io("write", self.partial))?;
        file.sync_all()
            .await
            .map_err(self.io("fsync", self.partial))?;
        remove_if_exists(&meta_path(self.partial))
            .await
            .map_err(self.io("remove", &meta_path(self.partial)))
    }

    async fn run(self) -> Result<Downloaded, FetchError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.partial)
            .await
            .map_err(self.io("open", self.partial))?;
        let outcome = self.transfer(&mut file).await;
        // A tokio `File` completes writes in the background: wait for them
        // on every path, so that the next attempt (which sizes the partial
        // to resume) and the caller see every byte written.
        let flushed = file.flush().await.map_err(self.io("write", self.partial));
        let error = match outcome {
            Ok(done) => return flushed.map(|()| done),
            Err(error) => error,
        };
        if let Err(flush_error) = flushed {
            warn!(url = self.url, error = %flush_error, "cannot flush the partial after a failure");
        }
        let empty = file.metadata().await.is_ok_and(|m| m.len() == 0);
        drop(file);
        if error.discards_partial() || empty {
            // Nothing worth resuming: leave no partial (or empty file) behind.
            self.discard().await?;
        }
        Err(error)
    }

    async fn transfer(self, file: &mut File) -> Result<Downloaded, FetchError> {
        let url = self.url;
        let mut offset = file
            .metadata()
            .await
            .map_err(self.io("stat", self.partial))?
            .len();

        // 1. Decide what of the partial can be kept.
        if let Some(size) = self.expected.size {
            if offset > size {
                warn!(
                    url,
                    offset, size, "partial larger than the declared size, starting over"
                );
                self.restart(file).await?;
                offset = 0;
            } else if offset == size {
                let actual = hex::encode(hash_prefix(file, size, self.partial).await?.finalize());
                if self.matches_expected(&actual) {
                    info!(url, size, "partial already complete, verified");
                    self.finish(file).await?;
                    return Ok(self.done(actual, size, size));
                }
                warn!(url, size, %actual, "complete partial does not match, starting over");
                self.restart(file).await?;
                offset = 0;
            }
        }
        let validator = if offset > 0 {
            read_meta(&meta_path(self.partial), url).await
        } else {
            None
        };
        if offset > 0 && validator.is_none() {
            info!(
                url,
                offset, "partial without a usable validator, starting over"
            );
            self.restart(file).await?;
            offset = 0;
        }
        let mut hasher = hash_prefix(file, offset, self.partial).await?;

        // 2. Ask for the rest.
        let mut request = self.client.get(url);
        if let Some(validator) = &validator {
            request = request
                .header(RANGE, format!("bytes={offset}-"))
                .header(IF_RANGE, validator);
        }
        let wait = self.cfg.connect_timeout + self.cfg.read_timeout;
        let response = tokio::time::timeout(wait, request.send())
            .await
            .map_err(|_| FetchError::NoResponse {
                url: url.to_owned(),
                timeout: wait,
            })?
            .map_err(|source| FetchError::Transport {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        debug!(url, status = status.as_u16(), offset, "response");

        // 3. Check the answer against what was asked.
        let server_total = match status {
            StatusCode::PARTIAL_CONTENT => {
                let header = header_str(response.headers(), CONTENT_RANGE).unwrap_or_default();
                match parse_content_range(&header) {
                    Some((start, total)) if start == offset => total,
                    _ => {
                        warn!(url, offset, content_range = %header, "content-range does not match the request");
                        return Err(FetchError::BadContentRange {
                            url: url.to_owned(),
                            requested_start: offset,
                            content_range: header,
                        });
                    }
                }
            }
            StatusCode::OK => {
                if offset > 0 {
                    info!(url, offset, "server sent the whole file, starting over");
                    self.restart(file).await?;
                    offset = 0;
                    hasher = Sha256::new();
                }
                write_meta(&meta_path(self.partial), url, response.headers())
                    .await
                    .map_err(self.io("write", &meta_path(self.partial)))?;
                response.content_length()
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                return Err(FetchError::RangeNotSatisfiable {
                    url: url.to_owned(),
                    start: offset,
                });
            }
            other => {
                return Err(if other == StatusCode::NOT_FOUND {
                    FetchError::NotFound {
                        url: url.to_owned(),
                    }
                } else {
                    FetchError::HttpStatus {
                        url: url.to_owned(),
                        status: other.as_u16(),
                    }
                });
            }
        };

        // 4. Bound the transfer: the declared size wins over the server's.
        let limit = self.expected.size.unwrap_or(
            server_total
                .unwrap_or(MAX_UNDECLARED_BYTES)
                .min(MAX_UNDECLARED_BYTES),
        );
        let total = self.expected.size.or(server_total);
        if let Some(announced) = server_total.filter(|&t| t > limit) {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                declared: limit,
                received_more: announced - limit,
            });
        }

        // 5. Stream, hash, write.
        let resumed_from = offset;
        let mut on_disk = offset;
        let mut meter = ThroughputMeter::new(
            self.cfg.min_throughput_bytes_per_s,
            self.cfg.throughput_window,
            Instant::now(),
        );
        (self.progress)(on_disk, total);
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.cfg.read_timeout, body.next())
                .await
                .map_err(|_| FetchError::Stalled {
                    url: url.to_owned(),
                    timeout: self.cfg.read_timeout,
                    received: on_disk - resumed_from,
                })?;
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(source)) => {
                    return Err(FetchError::Transport {
                        url: url.to_owned(),
                        source,
                    })
                }
            };
            let len = chunk.len() as u64;
            self.transferred.fetch_add(len, Ordering::Relaxed);
            if on_disk + len > limit {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    declared: limit,
                    received_more: on_disk + len - limit,
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(self.io("write", self.partial))?;
            hasher.update(&chunk);
            on_disk += len;
            (self.progress)(on_disk, total);
            if let Err(bytes_per_s) = meter.record(len, Instant::now()) {
                return Err(FetchError::TooSlow {
                    url: url.to_owned(),
                    bytes_per_s,
                    min_bytes_per_s: self.cfg.min_throughput_bytes_per_s,
                    window: self.cfg.throughput_window,
                });
            }
        }
        if let Some(expected) = total.filter(|&t| on_disk < t) {
            file.flush().await.map_err(self.io("write", self.partial))?;
            return Err(FetchError::Truncated {
                url: url.to_owned(),
                expected,
                received: on_disk,
            });
        }

        // 6. Verify and make durable.
        let actual = hex::encode(hasher.finalize());
        if !self.matches_expected(&actual) {
            return Err(FetchError::ChecksumMismatch {
                url: url.to_owned(),
                expected: self.expected.sha256.clone().unwrap_or_default(),
                actual,
            });
        }
        self.finish(file).await?;
        Ok(self.done(actual, on_disk, resumed_from))
    }
}

/// Averages throughput over consecutive windows.
#[derive(Debug)]
struct ThroughputMeter {
    min_bytes_per_s: u64,
    window: Duration,
    window_start: Instant,
    bytes_in_window: u64,
}

impl ThroughputMeter {
    fn new(min_bytes_per_s: u64, window: Duration, now: Instant) -> Self {
        Self {
            min_bytes_per_s,
            window,
            window_start: now,
            bytes_in_window: 0,
        }
    }

    /// Counts `bytes` received at `now`; when a window has elapsed, returns
    /// the average as the error if it is under the minimum, and starts a new
    /// window otherwise.
    fn record(&mut self, bytes: u64, now: Instant) -> Result<(), u64> {
        self.bytes_in_window += bytes;
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.min_bytes_per_s == 0 || elapsed < self.window || elapsed.is_zero() {
            return Ok(());
        }
        let bytes_per_s = (self.bytes_in_window as f64 / elapsed.as_secs_f64()) as u64;
        if bytes_per_s < self.min_bytes_per_s {
            return Err(bytes_per_s);
        }
        self.window_start = now;
        self.bytes_in_window = 0;
        Ok(())
    }
}

async fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Hashes the first `len` bytes of `file` and leaves it positioned at `len`.
async fn hash_prefix(file: &mut File, len: u64, path: &Path) -> Result<Sha256, FetchError> {
    let io = |op| {
        move |source| FetchError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let mut hasher = Sha256::new();
    file.seek(SeekFrom::Start(0)).await.map_err(io("seek"))?;
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut left = len;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = file.read(&mut buffer[..want]).await.map_err(io("read"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        left -= read as u64;
    }
    file.seek(SeekFrom::Start(len)).await.map_err(io("seek"))?;
    Ok(hasher)
}

fn header_str(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `If-Range` validator of a response: a strong ETag, else Last-Modified.
fn validator(headers: &HeaderMap) -> Option<String> {
    header_str(headers, ETAG)
        .filter(|etag| !etag.starts_with("W/") && !etag.is_empty())
        .or_else(|| header_str(headers, LAST_MODIFIED).filter(|lm| !lm.is_empty()))
}

/// Writes the meta file for a response that starts a partial, or removes it
/// when the response has no validator (such a partial cannot be resumed).
async fn write_meta(path: &Path, url: &str, headers: &HeaderMap) -> std::io::Result<()> {
    match validator(headers) {
        Some(validator) if !url.contains('\n') && !validator.contains('\n') => {
            let text = format!("{META_HEADER}\nurl={url}\nvalidator={validator}\n{META_END}\n");
            tokio::fs::write(path, text).await
        }
        _ => remove_if_exists(path).await,
    }
}

/// The validator kept for `url`, if the meta file is ours, whole, and for
/// this URL.
async fn read_meta(path: &Path, url: &str) -> Option<String> {
    let file = File::open(path).await.ok()?;
    let mut text = String::new();
    file.take(MAX_META_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .await
        .ok()?;
    if text.len() > MAX_META_BYTES {
        return None;
    }
    parse_meta(&text, url)
}

fn parse_meta(text: &str, url: &str) -> Option<String> {
    let mut lines = text.lines();
    if lines.next()? != META_HEADER {
        return None;
    }
    let kept_url = lines.next()?.strip_prefix("url=")?;
    let validator = lines.next()?.strip_prefix("validator=")?;
    if lines.next()? != META_END || kept_url != url || validator.is_empty() {
        return None;
    }
    Some(validator.to_owned())
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`): `(START, TOTAL)`.
fn parse_content_range(header: &str) -> Option<(u64, Option<u64>)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok().filter(|&t| t > end)?),
    };
    Some((start, total))
}

/// The digest at the start of a `.sha256` file, lower case.
fn parse_digest_file(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let digest = text.split_whitespace().next()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digest_file_accepts_bare_digest_and_digest_with_file_name() {
        assert_eq!(
            parse_digest_file(DIGEST.as_bytes()).as_deref(),
            Some(DIGEST)
        );
        let with_name = format!("{}  core-1.0.jar\n", DIGEST.to_uppercase());
        assert_eq!(
            parse_digest_file(with_name.as_bytes()).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(
            parse_digest_file(format!("\n\t{DIGEST}\n").as_bytes()).as_deref(),
            Some(DIGEST)
        );
    }

    #[test]
    fn digest_file_refuses_non_digests() {
        assert_eq!(parse_digest_file(b""), None);
        assert_eq!(parse_digest_file(b"<html>not found</html>"), None);
        assert_eq!(parse_digest_file(&DIGEST.as_bytes()[..63]), None);
        assert_eq!(parse_digest_file(format!("{DIGEST}0").as_bytes()), None);
        assert_eq!(parse_digest_file(DIGEST.replace('f', "g").as_bytes()), None);
    }

    #[test]
    fn content_range_parses_start_and_total() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-9/5"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn meta_is_used_only_whole_and_for_the_same_url() {
        let text = format!("{META_HEADER}\nurl=http://r/a.jar\nvalidator=\"v1\"\n{META_END}\n");
        assert_eq!(
            parse_meta(&text, "http://r/a.jar").as_deref(),
            Some("\"v1\"")
        );
        assert_eq!(parse_meta(&text, "http://r/b.jar"), None);
        let torn = format!("{META_HEADER}\nurl=http://r/a.jar\nvalidator=\"v1\"\n");
        assert_eq!(parse_meta(&torn, "http://r/a.jar"), None);
        assert_eq!(parse_meta("garbage", "http://r/a.jar"), None);
    }

    #[test]
    fn validator_prefers_strong_etag_then_last_modified() {
        let mut headers = HeaderMap::new();
        assert_eq!(validator(&headers), None);
        headers.insert(
            LAST_MODIFIED,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            validator(&headers).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        headers.insert(ETAG, "W/\"weak\"".parse().unwrap());
        assert_eq!(
            validator(&headers).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        headers.insert(ETAG, "\"strong\"".parse().unwrap());
        assert_eq!(validator(&headers).as_deref(), Some("\"strong\""));
    }

    #[test]
    fn meta_path_appends_to_the_partial_name() {
        assert_eq!(
            meta_path(Path::new("/d/x.jar.partial")),
            PathBuf::from("/d/x.jar.partial.meta")
        );
    }

    #[test]
    fn throughput_meter_fails_only_after_a_full_slow_window() {
        let start = Instant::now();
        let window = Duration::from_secs(30);
        let mut meter = ThroughputMeter::new(1000, window, start);
        assert_eq!(meter.record(10, start + Duration::from_secs(29)), Ok(()));
        assert_eq!(meter.record(10, start + Duration::from_secs(40)), Err(0));

        let mut meter = ThroughputMeter::new(1000, window, start);
        assert_eq!(
            meter.record(40_000, start + Duration::from_secs(30)),
            Ok(())
        );
        // A new window started at 30 s: 1 KiB in the next 30 s is too slow.
        assert_eq!(
            meter.record(1_000, start + Duration::from_secs(60)),
            Err(33)
        );
    }

    #[test]
    fn throughput_meter_with_zero_minimum_never_fails() {
        let start = Instant::now();
        let mut meter = ThroughputMeter::new(0, Duration::from_secs(1), start);
        assert_eq!(meter.record(0, start + Duration::from_secs(3600)), Ok(()));
    }

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
            expected: "a".into(),
            actual: "b".into()
        }
        .is_transient());
        assert!(!FetchError::TooLarge {
            url: url(),
            declared: 1,
            received_more: 1
        }
        .is_transient());
    }

    #[test]
    fn download_future_is_send_so_an_actor_can_spawn_it_anywhere() {
        fn assert_send<T: Send>(_: &T) {}
        let client = reqwest::Client::new();
        let expected = Expected::default();
        let cfg = FetchConfig::default();
        let progress = |_: u64, _: Option<u64>| {};
        let future = download(
            &client,
            "http://r/a.jar",
            Path::new("a.partial"),
            &expected,
            &cfg,
            &progress,
        );
        assert_send(&future);
    }

    #[test]
    fn default_config_matches_the_named_bounds() {
        let cfg = FetchConfig::default();
        assert_eq!(cfg.read_timeout, DEFAULT_READ_TIMEOUT);
        assert_eq!(cfg.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert!(cfg.base_backoff <= cfg.max_backoff);
        assert!(client(&cfg).is_ok());
    }
}
