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
//!
//! One [`download`] runs attempts until one succeeds or a failure is not
//! transient. An attempt (`attempt`) goes through numbered steps, each in
//! the submodule named after the dash:
//!
//! 1. Decide what of the partial can be kept — `resume` (the meta file,
//!    the hash of the kept prefix).
//! 2. Ask for the rest — `request`.
//! 3. Check the answer against what was asked — `request`.
//! 4. Bound the transfer: the declared size wins over the server's — `body`.
//! 5. Stream, hash, write — `body`.
//! 6. Verify and make durable — `body`.
//!
//! Besides: `redirect`, the redirects every request follows by hand
//! ([`send`]; to another host only for an artifact whose digest came from
//! TUF or the portal); `lookup`, the small requests ([`probe`],
//! [`content_length`], [`fetch_sha256_file`]);
//! `expected`, what the caller knows before and learns after a download;
//! `error`, the [`FetchError`].

mod attempt;
mod body;
mod error;
mod expected;
mod lookup;
pub mod rate;
mod redirect;
mod request;
mod resume;
pub mod space;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::{info, warn};
use url::{Host, Url};

use attempt::Attempt;
pub use error::FetchError;
pub use expected::{Checksum, DigestSource, Downloaded, Expected};
pub use lookup::{content_length, fetch_sha256_file, probe};
pub use redirect::{redirect, send, Redirect};
pub use resume::meta_path;

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

/// Most redirects followed for one request, all hops together (`redirect`):
/// repository managers use one or two, a hand-off to a CDN one more; more
/// is a loop.
pub const MAX_REDIRECTS: usize = 5;

/// Whole-request timeout of the small requests ([`probe`],
/// [`content_length`], [`fetch_sha256_file`]), per redirect hop: they move
/// at most a few kilobytes.
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// PEM certificates trusted besides the webpki and system roots (a
    /// repository manager behind an internal CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// The bandwidth cap and download window, shared by every download
    /// of the upgrade center (default: neither).
    pub gate: rate::Gate,
    /// The free space kept for the user's data (`min_free_space`).
    pub space: space::Space,
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
            ca_file: None,
            gate: rate::Gate::default(),
            space: space::Space::default(),
        }
    }
}

/// Whether `url` (the config key `key`) may be used: `https://`, or
/// `http://` to a loopback host, or any `http://` with `allow_insecure_http`
/// (which logs a warning, at every start).
///
/// The URL is read by the `url` crate, with the WHATWG rules the HTTP
/// client connects by, so the host judged here is the host connected to:
/// in `http://evil.example\@127.0.0.1/` the backslash ends the host, which
/// is `evil.example`. Loopback is `localhost`, an IPv4 address in
/// 127.0.0.0/8 (in any form WHATWG reads, such as `0x7f.1`) or `[::1]`
/// (also as an IPv4-mapped `[::ffff:127.0.0.1]`).
pub fn check_transport(
    key: &'static str,
    url: &str,
    allow_insecure_http: bool,
) -> Result<(), TransportError> {
    let refused = |why| TransportError {
        key,
        url: url.to_owned(),
        why,
    };
    let parsed = Url::parse(url).map_err(|e| refused(Untrusted::NotAUrl(e)))?;
    match parsed.scheme() {
        "https" => return Ok(()),
        "http" => {}
        other => return Err(refused(Untrusted::Scheme(other.to_owned()))),
    }
    let host = parsed.host_str().unwrap_or_default();
    if is_loopback(&parsed) {
        Ok(())
    } else if allow_insecure_http {
        warn!(key, url, host, "plain http to a host that is not loopback, accepted because allow_insecure_http = true: anyone on the path can read and change what the box downloads");
        Ok(())
    } else {
        Err(refused(Untrusted::PlainHttp(host.to_owned())))
    }
}

/// A URL the box would not fetch from ([`check_transport`]).
#[derive(Debug, thiserror::Error)]
#[error("{key} = {url:?} is not accepted: {why}")]
pub struct TransportError {
    /// The config key.
    pub key: &'static str,
    /// The URL as written.
    pub url: String,
    /// Why.
    pub why: Untrusted,
}

/// Why a URL is refused ([`TransportError`]).
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    /// The URL parser refused it.
    #[error("not a URL ({0}); {ACCEPTED_TRANSPORT}")]
    NotAUrl(url::ParseError),
    /// Neither `https` nor `http`.
    #[error("scheme {0}; {ACCEPTED_TRANSPORT}")]
    Scheme(String),
    /// `http` to this host, which is not loopback, without
    /// `allow_insecure_http`.
    #[error("plain http to {0:?}, which is not loopback; use https://, or set allow_insecure_http = true to accept the risk")]
    PlainHttp(String),
}

const ACCEPTED_TRANSPORT: &str =
    "accepted: an https:// URL (http:// to a loopback host, or with allow_insecure_http = true)";

/// Whether `url`'s host, as the HTTP client reads it, is this machine:
/// `localhost`, 127.0.0.0/8, `[::1]` or `[::ffff:127.x.y.z]`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        // WHATWG gives an http URL a host always.
        None => false,
    }
}

/// The HTTP client for the repository: rustls trusting the webpki roots,
/// the operating system's store and `cfg.ca_file` (checks cannot be turned
/// off), the connect timeout of `cfg`,
/// a `banalytics-box/<version>` User-Agent, and no redirect followed by
/// the client itself: [`send`] follows them by hand, under the rule of
/// [`redirect()`].
///
/// rustls runs on aws-lc-rs, the crypto library `tough` needs, so the box
/// carries one (reqwest is built without its own, ring): reqwest takes the
/// process's default provider, installed here if none is.
pub fn client(cfg: &FetchConfig) -> Result<reqwest::Client, FetchError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one first: that one serves.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &cfg.ca_file {
        let ca_err = |reason: String| FetchError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("holds no PEM certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .use_rustls_tls()
        .connect_timeout(cfg.connect_timeout)
        .user_agent(concat!("banalytics-box/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| FetchError::Client { source })
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
    // Outside the download window no download starts (one that the
    // window closes on pauses inside its attempt: `body`).
    cfg.gate.wait_open().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_future_is_send_so_an_actor_can_spawn_it_anywhere() {
        fn assert_send<T: Send>(_: &T) {}
        let cfg = FetchConfig::default();
        let client = client(&cfg).unwrap();
        let expected = Expected::default();
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
    fn plain_http_is_accepted_only_to_loopback_or_with_the_opt_in() {
        for ok in [
            "https://repo.example/repo",
            "HTTPS://repo.example/repo",
            "http://127.0.0.1:8080/repo",
            "HTTP://127.0.0.1/repo",
            "http://localhost/repo",
            "http://LOCALHOST:80/repo",
            "http://[::1]:9/repo",
            "http://[0:0:0:0:0:0:0:1]/repo",
            "http://[::ffff:127.0.0.1]/repo",
            "http://user@127.0.0.2/repo",
            "http://user:pw@127.0.0.1/repo",
            // WHATWG reads these as 127.0.0.1, and so does the client.
            "http://0x7f.1/repo",
            "http://2130706433/repo",
        ] {
            assert!(check_transport("repository_url", ok, false).is_ok(), "{ok}");
        }
        for (refused, host) in [
            ("http://repo.example/repo", "repo.example"),
            ("http://192.0.2.1/repo", "192.0.2.1"),
            (
                "http://127.0.0.1.evil.example/repo",
                "127.0.0.1.evil.example",
            ),
            ("http://localhost@evil.example/repo", "evil.example"),
            // The backslash ends the host for the client (WHATWG): the
            // userinfo that follows is part of the path.
            ("http://evil.example\\@127.0.0.1/repo", "evil.example"),
            ("http://evil.example\\@127.0.0.1:8080/repo", "evil.example"),
            ("http://evil.example#@127.0.0.1/repo", "evil.example"),
            ("http://evil.example?@127.0.0.1/repo", "evil.example"),
            ("http://[::2]/repo", "[::2]"),
            ("http://[::ffff:192.0.2.1]/repo", "[::ffff:c000:201]"),
        ] {
            let e = check_transport("repository_url", refused, false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("plain http to {host:?}, which is not loopback")),
                "{refused}: {e}"
            );
            assert!(check_transport("repository_url", refused, true).is_ok());
        }
        for (refused, why) in [
            ("ftp://x/repo", "scheme ftp"),
            ("file:///srv/repo", "scheme file"),
            ("127.0.0.1/repo", "not a URL"),
            ("http://", "not a URL"),
            ("https://[::1/repo", "not a URL"),
        ] {
            let e = check_transport("trust_metadata_url", refused, true)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "trust_metadata_url = {refused:?} is not accepted: {why}"
                )),
                "{refused}: {e}"
            );
        }
    }

    #[test]
    fn ca_file_is_trusted_and_a_bad_one_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["repo.internal".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let with = |p: &Path| FetchConfig {
            ca_file: Some(p.to_owned()),
            ..FetchConfig::default()
        };
        assert!(client(&with(&good)).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for bad in [empty, dir.path().join("missing.pem")] {
            match client(&with(&bad)) {
                Err(FetchError::CaFile { path, .. }) => assert_eq!(path, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
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
