//! The fetch engine against a hostile loopback repository: every test checks
//! the outcome, what the server saw, and what reached the disk.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod repo;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use banalytics_upgrade_center::fetch::{
    self, content_length, download, fetch_sha256_file, meta_path, probe, DigestSource, Downloaded,
    Expected, FetchConfig, FetchError, MAX_REDIRECTS,
};
use repo::{body, sha256_hex, sha256_of, Behaviour, RangeMode, Repo};

/// Path of the artifact in the repository.
const ARTIFACT_PATH: &str = "com/example/mod/1.0/mod-1.0.jar";

/// Second path serving the same artifact, as a redirect target.
const MOVED_PATH: &str = "moved/mod-1.0.jar";

/// Size of the artifact in most tests: several write chunks of the server.
const LEN: usize = 64 * 1024;

/// Where cut and stalled bodies stop.
const CUT_AT: usize = 20 * 1024;

fn test_config() -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        min_throughput_bytes_per_s: 0,
        throughput_window: Duration::from_secs(1),
        max_attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        gate: Default::default(),
        ..FetchConfig::default()
    }
}

/// Short read timeout for the stall tests: the server stalls for 30 s.
const STALL_READ_TIMEOUT: Duration = Duration::from_millis(200);

fn stall_config(max_attempts: u32) -> FetchConfig {
    FetchConfig {
        read_timeout: STALL_READ_TIMEOUT,
        max_attempts,
        ..test_config()
    }
}

fn single_attempt() -> FetchConfig {
    FetchConfig {
        max_attempts: 1,
        ..test_config()
    }
}

struct Scene {
    server: Repo,
    dir: tempfile::TempDir,
    data: Vec<u8>,
}

impl Scene {
    async fn new(change: impl FnOnce(&mut Behaviour)) -> Self {
        let data = body(LEN, 7);
        let mut behaviour = Behaviour::serving(data.clone());
        change(&mut behaviour);
        let server = Repo::start().await;
        server.serve(ARTIFACT_PATH, behaviour);
        Self {
            server,
            dir: tempfile::tempdir().unwrap(),
            data,
        }
    }

    fn artifact_url(&self) -> String {
        self.server.url_of(ARTIFACT_PATH)
    }

    fn partial(&self) -> PathBuf {
        self.dir.path().join("mod-1.0.jar.partial")
    }

    /// The digest and size, the digest from the repository's `.sha256`
    /// (not authoritative: redirects stay on the repository's host).
    fn expected(&self) -> Expected {
        self.expected_from(DigestSource::Repository)
    }

    /// The digest and size, the digest from `source`.
    fn expected_from(&self, source: DigestSource) -> Expected {
        Expected {
            sha256: Some(sha256_of(&self.data)),
            size: Some(self.data.len() as u64),
            digest_source: source,
        }
    }

    /// Makes the artifact's path answer `302` to [`MOVED_PATH`] on the same
    /// server named `localhost` (another host for the client), which serves
    /// the same bytes under another ETag; returns the moved URL.
    fn redirect_to_another_host(&self) -> String {
        self.server.serve(
            MOVED_PATH,
            Behaviour {
                etag: Some("\"cdn\"".to_owned()),
                ..Behaviour::serving(self.data.clone())
            },
        );
        let elsewhere = self
            .server
            .url_of(MOVED_PATH)
            .replace("127.0.0.1", "localhost");
        let location = elsewhere.clone();
        self.server
            .set(ARTIFACT_PATH, |b| b.redirect_to = Some(location));
        elsewhere
    }

    /// Runs a download with a fresh client (as a restarted process would),
    /// recording the largest on-disk size the progress callback reported.
    async fn download(
        &self,
        expected: &Expected,
        cfg: &FetchConfig,
    ) -> (Result<Downloaded, FetchError>, u64) {
        self.download_from(&self.artifact_url(), expected, cfg)
            .await
    }

    /// As [`Self::download`], from `url` into the scene's partial.
    async fn download_from(
        &self,
        url: &str,
        expected: &Expected,
        cfg: &FetchConfig,
    ) -> (Result<Downloaded, FetchError>, u64) {
        let client = fetch::client(cfg).unwrap();
        let max_seen = Mutex::new(0u64);
        let progress = |on_disk: u64, _total: Option<u64>| {
            let mut max = max_seen.lock().unwrap();
            *max = (*max).max(on_disk);
        };
        let outcome = download(&client, url, &self.partial(), expected, cfg, &progress).await;
        let max = *max_seen.lock().unwrap();
        (outcome, max)
    }

    fn on_disk(&self) -> Option<Vec<u8>> {
        std::fs::read(self.partial()).ok()
    }

    /// Every file name in the download folder: never one from a header.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn meta_exists(partial: &Path) -> bool {
    meta_path(partial).exists()
}

#[tokio::test]
async fn downloads_whole_file_verifying_sha256_and_size() {
    let scene = Scene::new(|_| {}).await;
    let client = fetch::client(&test_config()).unwrap();
    let reports = Mutex::new(Vec::new());
    let progress =
        |on_disk: u64, total: Option<u64>| reports.lock().unwrap().push((on_disk, total));

    let done = download(
        &client,
        &scene.artifact_url(),
        &scene.partial(),
        &scene.expected(),
        &test_config(),
        &progress,
    )
    .await
    .unwrap();

    assert_eq!(
        done,
        Downloaded {
            sha256: sha256_of(&scene.data),
            size: LEN as u64,
            bytes_transferred: LEN as u64,
            resumed_from: 0,
        }
    );
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    assert_eq!(
        scene.files(),
        vec!["mod-1.0.jar.partial"],
        "no meta left, no header file name"
    );
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].range, None);
    let agent = requests[0].user_agent.clone().unwrap_or_default();
    assert!(agent.starts_with("banalytics-box/"), "user agent {agent:?}");
    let reports = reports.into_inner().unwrap();
    assert_eq!(reports.last(), Some(&(LEN as u64, Some(LEN as u64))));
    assert!(
        reports.windows(2).all(|w| w[0].0 < w[1].0),
        "progress grows"
    );
}

#[tokio::test]
async fn wrong_sha256_fails_without_retry_and_removes_the_partial() {
    let scene = Scene::new(|_| {}).await;
    let expected = Expected {
        sha256: Some(banalytics_home::Sha256::from_bytes([0; 32])),
        size: Some(LEN as u64),
        ..Expected::default()
    };

    let (outcome, _) = scene.download(&expected, &test_config()).await;

    match outcome {
        Err(FetchError::ChecksumMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, banalytics_home::Sha256::from_bytes([0; 32]));
            assert_eq!(actual, sha256_of(&scene.data));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_eq!(scene.server.requests().len(), 1);
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn body_cut_inside_content_length_is_resumed_on_retry() {
    let scene = Scene::new(|b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.resumed_from, CUT_AT as u64);
    assert_eq!(done.bytes_transferred, LEN as u64);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={CUT_AT}-"))
    );
    assert_eq!(requests[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(requests[1].status, 206);
    assert_eq!(requests[1].body_bytes_sent, (LEN - CUT_AT) as u64);
}

#[tokio::test]
async fn body_ending_early_without_content_length_is_truncated_then_resumed() {
    let scene = Scene::new(|b| {
        b.send_content_length = false;
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &single_attempt()).await;
    match outcome {
        Err(FetchError::Truncated {
            expected, received, ..
        }) => assert_eq!((expected, received), (LEN as u64, CUT_AT as u64)),
        other => panic!("expected truncated, got {other:?}"),
    }
    assert_eq!(scene.on_disk().unwrap(), scene.data[..CUT_AT]);

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;
    assert_eq!(outcome.unwrap().resumed_from, CUT_AT as u64);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    assert_eq!(scene.server.requests().len(), 2);
}

#[tokio::test]
async fn truncation_on_every_attempt_fails_after_max_attempts() {
    let scene = Scene::new(|b| {
        b.send_content_length = false;
        b.truncate_next = usize::MAX;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert!(
        matches!(outcome, Err(FetchError::Truncated { .. })),
        "{outcome:?}"
    );
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 3, "max_attempts");
    // Each retry resumes from what is on disk, so the partial grows.
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={CUT_AT}-"))
    );
    assert_eq!(
        requests[2].range.as_deref(),
        Some(&*format!("bytes={}-", 2 * CUT_AT))
    );
    assert_eq!(scene.on_disk().unwrap(), scene.data[..3 * CUT_AT]);
}

#[tokio::test]
async fn more_bytes_than_declared_announced_in_headers_fails_too_large_before_writing() {
    let scene = Scene::new(|b| b.extra_bytes = 100).await;

    let (outcome, max_on_disk) = scene.download(&scene.expected(), &test_config()).await;

    match outcome {
        Err(FetchError::TooLarge {
            declared,
            received_more,
            ..
        }) => assert_eq!((declared, received_more), (LEN as u64, 100)),
        other => panic!("expected too large, got {other:?}"),
    }
    assert_eq!(max_on_disk, 0);
    assert_eq!(scene.server.requests().len(), 1, "not retried");
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn more_bytes_than_declared_in_the_body_stops_at_the_declared_size() {
    let scene = Scene::new(|b| {
        b.extra_bytes = 5000;
        b.send_content_length = false;
    })
    .await;

    let (outcome, max_on_disk) = scene.download(&scene.expected(), &test_config()).await;

    match outcome {
        Err(FetchError::TooLarge {
            declared,
            received_more,
            ..
        }) => {
            assert_eq!(declared, LEN as u64);
            assert!(received_more > 0);
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(max_on_disk <= LEN as u64, "wrote {max_on_disk} bytes");
    assert_eq!(scene.server.requests().len(), 1, "not retried");
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn ignored_range_restarts_from_zero_and_ends_correct() {
    let scene = Scene::new(|b| {
        b.range = RangeMode::Ignore;
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.bytes_transferred, (CUT_AT + LEN) as u64);
    assert_eq!(
        scene.on_disk().unwrap(),
        scene.data,
        "not prefix + whole file"
    );
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].range.is_some());
    assert_eq!(requests[1].status, 200);
}

#[tokio::test]
async fn content_range_with_wrong_start_is_an_error_and_drops_the_partial() {
    let scene = Scene::new(|b| {
        b.range = RangeMode::WrongStart;
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, max_on_disk) = scene.download(&scene.expected(), &test_config()).await;

    match outcome {
        Err(FetchError::BadContentRange {
            requested_start,
            content_range,
            ..
        }) => {
            assert_eq!(requested_start, CUT_AT as u64);
            assert_eq!(content_range, format!("bytes 0-{}/{LEN}", LEN - 1));
        }
        other => panic!("expected bad content range, got {other:?}"),
    }
    assert_eq!(max_on_disk, CUT_AT as u64, "nothing of the 206 written");
    assert_eq!(scene.server.requests().len(), 2, "not retried");
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn not_found_main_artifact_is_not_retried() {
    let scene = Scene::new(|b| b.not_found = true).await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    match outcome {
        Err(FetchError::NotFound { url }) => assert_eq!(url, scene.artifact_url()),
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(scene.server.requests().len(), 1);
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn client_error_status_is_not_retried() {
    let scene = Scene::new(|b| b.fail_next = [403].into()).await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert!(
        matches!(outcome, Err(FetchError::HttpStatus { status: 403, .. })),
        "{outcome:?}"
    );
    assert_eq!(scene.server.requests().len(), 1);
    assert!(scene.files().is_empty(), "left {:?}", scene.files());
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let scene = Scene::new(|b| b.fail_next = [500].into()).await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert_eq!(outcome.unwrap().sha256, sha256_of(&scene.data));
    let statuses: Vec<u16> = scene.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200]);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
}

#[tokio::test]
async fn server_errors_beyond_max_attempts_fail_with_the_last_status() {
    let scene = Scene::new(|b| b.fail_next = [500, 502, 503, 200].into()).await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert!(
        matches!(outcome, Err(FetchError::HttpStatus { status: 503, .. })),
        "{outcome:?}"
    );
    assert_eq!(scene.server.requests().len(), 3);
}

#[tokio::test]
async fn stalled_body_fires_the_read_timeout_and_resumes() {
    let scene = Scene::new(|b| {
        b.stall_next = 1;
        b.stall_at = CUT_AT;
    })
    .await;
    let started = Instant::now();

    let (outcome, _) = scene.download(&scene.expected(), &stall_config(3)).await;

    let done = outcome.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(done.resumed_from, CUT_AT as u64);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={CUT_AT}-"))
    );
}

#[tokio::test]
async fn stall_on_the_last_attempt_is_reported_as_stalled() {
    let scene = Scene::new(|b| {
        b.stall_next = 1;
        b.stall_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &stall_config(1)).await;

    match outcome {
        Err(FetchError::Stalled {
            timeout, received, ..
        }) => {
            assert_eq!(timeout, STALL_READ_TIMEOUT);
            assert_eq!(received, CUT_AT as u64);
        }
        other => panic!("expected stalled, got {other:?}"),
    }
    assert_eq!(scene.on_disk().unwrap(), scene.data[..CUT_AT]);
    assert!(meta_exists(&scene.partial()), "kept for a resume");
}

#[tokio::test]
async fn existing_partial_resumes_with_range_and_only_the_remainder_is_sent() {
    let scene = Scene::new(|b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;
    // A first process gets part of the file, then "dies".
    let (first, _) = scene.download(&scene.expected(), &single_attempt()).await;
    assert!(first.is_err());
    assert_eq!(scene.on_disk().unwrap(), scene.data[..CUT_AT]);
    assert!(meta_exists(&scene.partial()));
    let sent_before = scene.server.body_bytes_sent();

    // A second process, with a new client, resumes.
    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    let done = outcome.unwrap();
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={CUT_AT}-"))
    );
    assert_eq!(requests[1].if_range.as_deref(), Some("\"v1\""));
    let remainder = (LEN - CUT_AT) as u64;
    assert_eq!(scene.server.body_bytes_sent() - sent_before, remainder);
    assert_eq!(done.bytes_transferred, remainder);
    assert_eq!(done.resumed_from, CUT_AT as u64);
    assert_eq!(done.sha256, sha256_of(&scene.data), "prefix hashed too");
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    assert!(!meta_exists(&scene.partial()));
}

#[tokio::test]
async fn a_partial_whose_meta_is_of_a_newer_format_is_left_as_it_is_and_not_downloaded() {
    let scene = Scene::new(|b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;
    let (first, _) = scene.download(&scene.expected(), &single_attempt()).await;
    assert!(first.is_err());
    // A newer core's meta beside the partial.
    let meta = meta_path(&scene.partial());
    let newer = b"banalytics-partial-meta 2\n{\"validator\": \"v1\"}\n".to_vec();
    std::fs::write(&meta, &newer).unwrap();
    let requests_before = scene.server.requests().len();

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    let e = outcome.unwrap_err();
    assert!(
        matches!(&e, FetchError::NewerFormat(n) if n.format == 2 && n.path == meta),
        "{e}"
    );
    assert_eq!(scene.server.requests().len(), requests_before, "no request");
    assert_eq!(std::fs::read(&meta).unwrap(), newer, "the meta as it was");
    assert_eq!(
        scene.on_disk().unwrap(),
        scene.data[..CUT_AT],
        "the partial as it was"
    );
}

#[tokio::test]
async fn resume_works_with_last_modified_when_there_is_no_etag() {
    let scene = Scene::new(|b| {
        b.etag = None;
        b.last_modified = Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned());
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert_eq!(outcome.unwrap().resumed_from, CUT_AT as u64);
    let requests = scene.server.requests();
    assert_eq!(
        requests[1].if_range.as_deref(),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(requests[1].status, 206);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
}

#[tokio::test]
async fn partial_without_validator_is_downloaded_again_from_zero() {
    let scene = Scene::new(|b| {
        b.etag = None;
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert_eq!(outcome.unwrap().resumed_from, 0);
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].range, None, "no blind range without If-Range");
    assert_eq!(scene.on_disk().unwrap(), scene.data);
}

#[tokio::test]
async fn changed_etag_makes_the_server_send_the_whole_file_and_the_download_restarts() {
    let scene = Scene::new(|b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;
    let (first, _) = scene.download(&scene.expected(), &single_attempt()).await;
    assert!(first.is_err());
    assert_eq!(scene.on_disk().unwrap(), scene.data[..CUT_AT]);

    let republished = body(LEN + 123, 99);
    scene.server.set(ARTIFACT_PATH, |b| {
        b.body = republished.clone();
        b.etag = Some("\"v2\"".to_owned());
    });
    let expected = Expected {
        sha256: Some(sha256_of(&republished)),
        size: Some(republished.len() as u64),
        ..Expected::default()
    };
    let (outcome, _) = scene.download(&expected, &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.bytes_transferred, republished.len() as u64);
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(requests[1].status, 200);
    assert_eq!(scene.on_disk().unwrap(), republished);
}

#[tokio::test]
async fn complete_partial_is_only_verified() {
    let scene = Scene::new(|_| {}).await;
    let (first, _) = scene.download(&scene.expected(), &test_config()).await;
    first.unwrap();

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.bytes_transferred, 0);
    assert_eq!(done.resumed_from, LEN as u64);
    assert_eq!(done.sha256, sha256_of(&scene.data));
    assert_eq!(scene.server.requests().len(), 1, "no second request");
}

#[tokio::test]
async fn complete_partial_with_wrong_content_is_downloaded_again() {
    let scene = Scene::new(|_| {}).await;
    std::fs::write(scene.partial(), vec![0u8; LEN]).unwrap();

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert_eq!(outcome.unwrap().resumed_from, 0);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    assert_eq!(scene.server.requests().len(), 1);
}

#[tokio::test]
async fn slow_body_fails_too_slow() {
    let scene = Scene::new(|b| {
        b.trickle = Some(Duration::from_millis(20));
        b.trickle_bytes = 16;
    })
    .await;
    let cfg = FetchConfig {
        min_throughput_bytes_per_s: 10_000,
        throughput_window: Duration::from_millis(300),
        ..single_attempt()
    };

    let (outcome, max_on_disk) = scene.download(&scene.expected(), &cfg).await;

    match outcome {
        Err(FetchError::TooSlow {
            bytes_per_s,
            min_bytes_per_s,
            ..
        }) => {
            assert!(bytes_per_s < 10_000, "{bytes_per_s}");
            assert_eq!(min_bytes_per_s, 10_000);
        }
        other => panic!("expected too slow, got {other:?}"),
    }
    assert!(max_on_disk < LEN as u64);
    assert_eq!(scene.on_disk().unwrap().len() as u64, max_on_disk);
}

#[tokio::test]
async fn sha256_file_gives_the_digest_with_or_without_a_file_name() {
    let scene = Scene::new(|b| {
        b.digest_file = Some(format!(
            "{}  mod-1.0.jar\n",
            sha256_hex(b"x").to_uppercase()
        ));
    })
    .await;
    let client = fetch::client(&test_config()).unwrap();
    let url = scene.artifact_url();

    assert_eq!(
        fetch_sha256_file(&client, &url).await.unwrap(),
        Some(sha256_of(b"x"))
    );
    scene.server.set(ARTIFACT_PATH, |b| b.digest_file = None);
    assert_eq!(fetch_sha256_file(&client, &url).await.unwrap(), None);
    scene.server.set(ARTIFACT_PATH, |b| {
        b.digest_file = Some("<html>oops</html>".to_owned())
    });
    assert!(matches!(
        fetch_sha256_file(&client, &url).await,
        Err(FetchError::BadDigest { .. })
    ));
    scene
        .server
        .set(ARTIFACT_PATH, |b| b.digest_file = Some("a".repeat(10_000)));
    assert!(matches!(
        fetch_sha256_file(&client, &url).await,
        Err(FetchError::DigestFileTooLarge { .. })
    ));
    let paths: Vec<String> = scene
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(paths
        .iter()
        .all(|p| *p == format!("{ARTIFACT_PATH}.sha256")));
}

#[tokio::test]
async fn probe_tells_present_absent_and_failing_apart() {
    let scene = Scene::new(|_| {}).await;
    let client = fetch::client(&test_config()).unwrap();
    let url = scene.artifact_url();

    assert!(probe(&client, &url).await.unwrap());
    assert!(!probe(&client, &scene.server.url_of("missing-bin.zip"))
        .await
        .unwrap());
    scene
        .server
        .set(ARTIFACT_PATH, |b| b.fail_next = [500].into());
    assert!(matches!(
        probe(&client, &url).await,
        Err(FetchError::HttpStatus { status: 500, .. })
    ));
    let requests = scene.server.requests();
    assert!(requests.iter().all(|r| r.method == "HEAD"));
    assert_eq!(requests.iter().map(|r| r.body_bytes_sent).sum::<u64>(), 0);
}

#[tokio::test]
async fn download_without_expectations_reports_sha256_and_size() {
    let scene = Scene::new(|b| b.send_content_length = false).await;

    let (outcome, _) = scene.download(&Expected::default(), &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.sha256, sha256_of(&scene.data));
    assert_eq!(done.size, LEN as u64);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
}

#[tokio::test]
async fn range_past_the_end_of_a_shrunk_file_restarts_from_zero() {
    let scene = Scene::new(|b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    })
    .await;
    let (first, _) = scene
        .download(&Expected::default(), &single_attempt())
        .await;
    assert!(first.is_err());
    // A broken server shrinks the file without changing its ETag.
    let shrunk = body(CUT_AT / 2, 3);
    scene.server.set(ARTIFACT_PATH, |b| b.body = shrunk.clone());

    let (outcome, _) = scene.download(&Expected::default(), &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.sha256, sha256_of(&shrunk));
    let statuses: Vec<u16> = scene.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 416, 200]);
    assert_eq!(scene.on_disk().unwrap(), shrunk);
}

#[tokio::test]
async fn redirect_to_the_same_host_is_followed() {
    let scene = Scene::new(|_| {}).await;
    scene
        .server
        .serve(MOVED_PATH, Behaviour::serving(scene.data.clone()));
    let moved = scene.server.url_of(MOVED_PATH);
    scene
        .server
        .set(ARTIFACT_PATH, |b| b.redirect_to = Some(moved));

    let (outcome, _) = scene.download(&scene.expected(), &test_config()).await;

    assert_eq!(outcome.unwrap().size, LEN as u64);
    let paths: Vec<String> = scene
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, vec![ARTIFACT_PATH.to_owned(), MOVED_PATH.to_owned()]);
    assert_eq!(scene.on_disk().unwrap(), scene.data);
}

#[tokio::test]
async fn redirect_to_another_host_is_followed_for_a_digest_from_tuf_or_the_portal() {
    for source in [DigestSource::Tuf, DigestSource::Portal] {
        let scene = Scene::new(|_| {}).await;
        scene.redirect_to_another_host();

        let (outcome, _) = scene
            .download(&scene.expected_from(source), &test_config())
            .await;

        assert_eq!(outcome.unwrap().size, LEN as u64, "{source}");
        let requests = scene.server.requests();
        let hops: Vec<(&str, u16)> = requests
            .iter()
            .map(|r| (r.path.as_str(), r.status))
            .collect();
        assert_eq!(hops, vec![(ARTIFACT_PATH, 302), (MOVED_PATH, 200)]);
        assert_eq!(scene.on_disk().unwrap(), scene.data);
    }
}

#[tokio::test]
async fn redirect_to_another_host_is_refused_for_a_repository_digest_or_none() {
    for expected in [
        |s: &Scene| s.expected_from(DigestSource::Repository),
        |_: &Scene| Expected::default(),
    ] {
        let scene = Scene::new(|_| {}).await;
        let elsewhere = scene.redirect_to_another_host();

        let (outcome, _) = scene.download(&expected(&scene), &test_config()).await;

        let error = outcome.unwrap_err();
        match &error {
            FetchError::RedirectRefused {
                url,
                location,
                reason,
            } => {
                assert_eq!(url, &scene.artifact_url());
                assert_eq!(location, &elsewhere);
                assert!(
                    reason.contains("another host localhost")
                        && reason.contains("not from TUF or the portal"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!error.is_transient());
        assert!(error.to_string().contains("localhost"), "{error}");
        assert_eq!(
            scene.server.requests().len(),
            1,
            "not retried, not followed"
        );
        assert!(scene.files().is_empty(), "left {:?}", scene.files());
    }
}

/// Serves `hops` redirects, alternating between the host names
/// `127.0.0.1` and `localhost`, before the artifact itself; returns the URL
/// of the first.
fn redirect_chain(scene: &Scene, hops: usize) -> String {
    let path = |i: usize| format!("hop/{i}/mod-1.0.jar");
    let url = |i: usize| {
        let u = scene.server.url_of(&path(i));
        if i % 2 == 1 {
            u.replace("127.0.0.1", "localhost")
        } else {
            u
        }
    };
    for i in 0..hops {
        scene.server.serve(
            &path(i),
            Behaviour {
                redirect_to: Some(url(i + 1)),
                ..Behaviour::serving(Vec::new())
            },
        );
    }
    scene
        .server
        .serve(&path(hops), Behaviour::serving(scene.data.clone()));
    url(0)
}

#[tokio::test]
async fn at_most_max_redirects_hops_are_followed_in_all() {
    let scene = Scene::new(|_| {}).await;
    let expected = scene.expected_from(DigestSource::Tuf);
    let hops = |n: usize| {
        let (url, scene, expected) = (redirect_chain(&scene, n), &scene, &expected);
        async move { scene.download_from(&url, expected, &test_config()).await }
    };

    let (done, _) = hops(MAX_REDIRECTS).await;
    assert_eq!(done.unwrap().size, LEN as u64);
    assert_eq!(scene.server.requests().len(), MAX_REDIRECTS + 1);

    std::fs::remove_file(scene.partial()).unwrap();
    scene.server.reset_counters();
    let (refused, _) = hops(MAX_REDIRECTS + 1).await;
    match refused {
        Err(FetchError::RedirectRefused { reason, .. }) => {
            assert!(reason.contains("too many redirects"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        scene.server.requests().len(),
        MAX_REDIRECTS + 1,
        "the last redirect is not followed, and nothing is retried"
    );
    assert!(!scene.partial().exists());
}

#[tokio::test]
async fn a_download_cut_after_a_redirect_resumes_through_it_with_the_final_servers_validator() {
    let scene = Scene::new(|_| {}).await;
    scene.redirect_to_another_host();
    scene.server.set(MOVED_PATH, |b| {
        b.truncate_next = 1;
        b.truncate_at = CUT_AT;
    });
    let expected = scene.expected_from(DigestSource::Portal);
    let (first, _) = scene.download(&expected, &single_attempt()).await;
    assert!(first.is_err());
    assert_eq!(scene.on_disk().unwrap(), scene.data[..CUT_AT]);
    assert!(meta_exists(&scene.partial()));
    scene.server.reset_counters();

    // A new process (a fresh client) resumes from the meta file.
    let (outcome, _) = scene.download(&expected, &test_config()).await;

    let done = outcome.unwrap();
    assert_eq!(done.resumed_from, CUT_AT as u64);
    assert_eq!(done.bytes_transferred, (LEN - CUT_AT) as u64);
    let requests = scene.server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let range = format!("bytes={CUT_AT}-");
    for (request, path, status) in [
        (&requests[0], ARTIFACT_PATH, 302),
        (&requests[1], MOVED_PATH, 206),
    ] {
        assert_eq!(request.path, path);
        assert_eq!(request.status, status);
        assert_eq!(request.range.as_deref(), Some(range.as_str()), "{path}");
        assert_eq!(request.if_range.as_deref(), Some("\"cdn\""), "{path}");
    }
    assert_eq!(scene.on_disk().unwrap(), scene.data);
    assert!(!meta_exists(&scene.partial()));
}

#[tokio::test]
async fn head_requests_follow_a_redirect_to_another_host_as_the_download_would() {
    let scene = Scene::new(|_| {}).await;
    let elsewhere = scene.redirect_to_another_host();
    let client = fetch::client(&test_config()).unwrap();
    let url = scene.artifact_url();

    for source in [DigestSource::Tuf, DigestSource::Portal] {
        assert_eq!(
            content_length(&client, &url, source).await.unwrap(),
            Some(LEN as u64)
        );
    }
    for source in [DigestSource::Repository, DigestSource::None] {
        assert!(matches!(
            content_length(&client, &url, source).await,
            Err(FetchError::RedirectRefused { location, .. }) if location == elsewhere
        ));
    }
    // `probe` is asked only where no authoritative digest is known.
    assert!(matches!(
        probe(&client, &url).await,
        Err(FetchError::RedirectRefused { location, .. }) if location == elsewhere
    ));
    let requests = scene.server.requests();
    assert!(requests.iter().all(|r| r.method == "HEAD"));
    let moved = requests.iter().filter(|r| r.path == MOVED_PATH).count();
    assert_eq!(
        moved, 2,
        "only the authoritative ones reached the other host"
    );
}

/// An https server on 127.0.0.1 (certificate from a fresh CA, whose PEM is
/// written to `ca_file`) that answers every request with `302` to
/// `location`; returns its URL for `path`.
async fn https_redirecting_to(location: String, ca_file: &Path, path: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    std::fs::write(ca_file, ca_cert.pem()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, location) = (acceptor.clone(), location.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}/repo/{path}")
}

#[tokio::test]
async fn a_redirect_from_https_to_http_is_refused_even_for_a_digest_from_tuf() {
    let scene = Scene::new(|_| {}).await;
    let ca_file = scene.dir.path().join("ca.pem");
    let cfg = FetchConfig {
        ca_file: Some(ca_file.clone()),
        ..single_attempt()
    };
    let progress = |_: u64, _: Option<u64>| {};
    // To the same host name, and to another one.
    for location in [
        scene.artifact_url(),
        scene.artifact_url().replace("127.0.0.1", "localhost"),
    ] {
        let url = https_redirecting_to(location.clone(), &ca_file, ARTIFACT_PATH).await;
        let client = fetch::client(&cfg).unwrap();

        let outcome = download(
            &client,
            &url,
            &scene.partial(),
            &scene.expected_from(DigestSource::Tuf),
            &cfg,
            &progress,
        )
        .await;

        match outcome {
            Err(FetchError::RedirectRefused {
                url: first,
                location: refused,
                reason,
            }) => {
                assert_eq!(first, url);
                assert_eq!(refused, location);
                assert!(reason.contains("from https to http"), "{reason}");
            }
            other => panic!("{location}: {other:?}"),
        }
    }
    assert!(scene.server.requests().is_empty(), "http was never asked");
    assert!(
        scene.files().iter().all(|f| f == "ca.pem"),
        "{:?}",
        scene.files()
    );
}

#[tokio::test]
async fn a_main_artifact_whose_digest_came_from_the_repository_sha256_is_not_followed_to_another_host(
) {
    use banalytics_upgrade_center::{resolve, ChecksumPolicy, PLATFORM};
    let scene = Scene::new(|_| {}).await;
    let digest = sha256_hex(&scene.data);
    scene.server.set(ARTIFACT_PATH, |b| {
        b.digest_file = Some(format!("{digest}  mod-1.0.jar\n"))
    });
    let elsewhere = scene.redirect_to_another_host();
    // The original portal's module object: no digest, so the one in use is
    // the repository's `.sha256`.
    let module: banalytics_home::coords::Module = serde_json::from_value(serde_json::json!({
        "groupId": "com.example", "artifactId": "mod", "version": "1.0",
        "type": "component", "uploadTime": "2026-03-01T10:15:30",
    }))
    .unwrap();
    let client = fetch::client(&test_config()).unwrap();
    let resolved = resolve(
        &client,
        &scene.server.url(),
        PLATFORM,
        module,
        ChecksumPolicy::Require,
        None,
    )
    .await
    .unwrap();
    let main = resolved.main;
    assert_eq!(main.url, scene.artifact_url());
    assert_eq!(main.expected.sha256.map(|d| d.to_string()), Some(digest));
    assert_eq!(main.expected.digest_source, DigestSource::Repository);
    scene.server.reset_counters();

    let (outcome, _) = scene
        .download_from(&main.url, &main.expected, &test_config())
        .await;

    match outcome {
        Err(FetchError::RedirectRefused {
            location, reason, ..
        }) => {
            assert_eq!(location, elsewhere);
            assert!(reason.contains("not from TUF or the portal"), "{reason}");
        }
        other => panic!("the redirect was followed: {other:?}"),
    }
    let paths: Vec<String> = scene
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        [ARTIFACT_PATH],
        "nothing fetched from the other host"
    );
}
