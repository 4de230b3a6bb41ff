//! `Downloader`: resolves the target set's artifacts in the repository and
//! fetches what is not already here, at most `max_parallel_downloads`
//! modules at a time.
//!
//! An artifact already in the cache (`modules-download/`) with the right
//! size and SHA-256 is not fetched again; everything else streams to a
//! `.partial` file through [`fetch::download`] (resume, bounds, retries,
//! verification) and is renamed to its cache name once verified. Before
//! the first byte, the free space for the downloads and the extraction is
//! checked; the swap itself moves folders and needs no space.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use crate::{
    cache::{cache_hit, CachedFile},
    coords::{self, Coords, Module, BIN_SUFFIX, MODEL_SUFFIX},
    delta,
    error::{io_at, UpgradeError},
    fetch::{self, Checksum, DigestSource, Expected, FetchConfig},
    layout::Layout,
    plan::{Fetch, MainPlan, ModulePlan, PackagePlan, ResolvedModule, SyncPlan, Target},
    tuf::{Trust, TrustedTargets},
};

/// Extra free space kept beyond the computed need: room for the hash
/// record, file-system metadata and whatever else the box writes meanwhile.
pub(crate) const FREE_SPACE_MARGIN: u64 = 16 * 1024 * 1024;

/// How often download progress is reported while bytes flow.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Capacity of the queue of [`DownloadEvent`]s from the Downloader to
/// PortalLink. A module makes about five events (started, progress after
/// each of its up to three artifacts, finished), so 128 holds a whole wave
/// of [`crate::MAX_PARALLEL_DOWNLOADS`] modules: downloads wait only when
/// PortalLink falls a wave behind. A full queue makes the Downloader wait;
/// no event is dropped.
pub const DOWNLOAD_EVENT_QUEUE: usize = 128;

/// What to do when an artifact has no SHA-256 anywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumPolicy {
    /// Refuse the download (default).
    #[default]
    Require,
    /// Accept it with a warning.
    Warn,
}

/// Find every artifact of the target set in the repository.
#[derive(Message)]
#[rtype(result = "Result<Vec<ResolvedModule>, UpgradeError>")]
pub struct ResolveSet {
    /// The validated target set.
    pub modules: Vec<Module>,
}

/// Fetch everything `plan` needs from the repository into the cache.
#[derive(Message)]
#[rtype(result = "Result<HashMap<String, CachedFile>, UpgradeError>")]
pub struct DownloadSet {
    /// The plan; its `Fetch` parts are downloaded.
    pub plan: SyncPlan,
    /// Per-module events, for the portal and `status`; a bounded queue of
    /// [`DOWNLOAD_EVENT_QUEUE`] events.
    pub events: mpsc::Sender<DownloadEvent>,
}

/// What happens to one module's downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// Its first artifact started.
    Started {
        /// The module.
        module: Coords,
    },
    /// Bytes of the whole set so far.
    Progress {
        /// Bytes present (downloaded or cached) so far.
        done: u64,
        /// Bytes of the whole set, as far as declared.
        total: u64,
    },
    /// All its artifacts are in the cache, verified.
    Finished {
        /// The module.
        module: Coords,
        /// Bytes that came over the network for it.
        transferred: u64,
    },
    /// A patch was offered for its main artifact: whether it made the
    /// file, or why the whole file is fetched.
    Delta(delta::DeltaReport),
    /// One of its artifacts failed; the set is abandoned.
    Failed {
        /// The module.
        module: Coords,
        /// Why.
        reason: String,
    },
}

/// The Downloader actor.
pub struct Downloader {
    layout: Layout,
    repository_url: String,
    config: FetchConfig,
    client: reqwest::Client,
    max_parallel: usize,
    policy: ChecksumPolicy,
    trust: Option<Trust>,
}

impl Downloader {
    /// A downloader for `repository_url`, caching under the home `layout`.
    pub fn new(
        layout: Layout,
        repository_url: String,
        config: FetchConfig,
        max_parallel: usize,
        policy: ChecksumPolicy,
    ) -> Result<Self, UpgradeError> {
        let client = fetch::client(&config).map_err(|source| UpgradeError::Client { source })?;
        Ok(Downloader {
            layout,
            repository_url: repository_url.trim_end_matches('/').to_owned(),
            config,
            client,
            max_parallel: max_parallel.max(1),
            policy,
            trust: None,
        })
    }

    /// Artifacts must be TUF targets of `trust`'s repository ([`crate::tuf`]).
    pub fn with_trust(mut self, trust: Option<Trust>) -> Self {
        self.trust = trust;
        self
    }
}

impl Actor for Downloader {
    type Context = Context<Self>;
}

impl Handler<ResolveSet> for Downloader {
    type Result = ResponseFuture<Result<Vec<ResolvedModule>, UpgradeError>>;

    fn handle(&mut self, msg: ResolveSet, _: &mut Context<Self>) -> Self::Result {
        let client = self.client.clone();
        let repo = self.repository_url.clone();
        let policy = self.policy;
        let parallel = self.max_parallel;
        let (layout, config, trust) =
            (self.layout.clone(), self.config.clone(), self.trust.clone());
        let span = info_span!("downloader.resolve_set", modules = msg.modules.len());
        Box::pin(
            async move {
                launcher_speaks_the_core(&layout, &msg.modules).await?;
                let trusted = match &trust {
                    Some(trust) => {
                        Some(crate::tuf::refresh(&client, &config, &layout, trust).await?)
                    }
                    None => None,
                };
                let trusted = trusted.as_ref();
                let resolved = stream::iter(msg.modules)
                    .map(|m| resolve(&client, &repo, PLATFORM, m, policy, trusted))
                    .buffered(parallel)
                    .try_collect()
                    .await?;
                Ok(delta::with_offers(&layout, &repo, PLATFORM, trusted, resolved).await)
            }
            .instrument(span),
        )
    }
}

/// Refuses a set whose core does not speak the handshake of this box's
/// launcher, read from the running-core record (the launcher that started
/// the core that runs, or the launcher itself); a box without the record
/// has the first version's launcher.
async fn launcher_speaks_the_core(layout: &Layout, modules: &[Module]) -> Result<(), UpgradeError> {
    use banalytics_home::running::{self, FIRST_HANDSHAKE};
    let layout = layout.clone();
    let launcher = crate::blocking::off_thread(move || running::read(&layout))
        .await
        .ok()
        .flatten()
        .map_or(FIRST_HANDSHAKE, |r| r.launcher_handshake);
    match modules.iter().find(|m| {
        m.coords.is_core() && !running::speaks(launcher, m.launcher_handshakes.as_deref())
    }) {
        Some(core) => Err(UpgradeError::LauncherTooOld {
            module: core.coords.clone(),
            speaks: core
                .launcher_handshakes
                .clone()
                .unwrap_or_else(|| vec![FIRST_HANDSHAKE]),
            launcher,
        }),
        None => Ok(()),
    }
}

/// This box's platform: the target triple the host is built for, the
/// classifier of native artifacts.
pub const PLATFORM: &str = banalytics_sdk::plugin::TARGET;

/// Where `module`'s artifacts are and which digests they must have, on
/// `platform`. With `trusted` targets metadata, only what it lists exists
/// and its lengths and digests are the only ones used.
pub async fn resolve(
    client: &reqwest::Client,
    repository_url: &str,
    platform: &str,
    module: Module,
    policy: ChecksumPolicy,
    trusted: Option<&TrustedTargets>,
) -> Result<ResolvedModule, UpgradeError> {
    if let Some(trusted) = trusted {
        return resolve_trusted(repository_url, platform, module, trusted);
    }
    let key = module.coords.clone();
    let url = |suffix: &str| {
        format!(
            "{repository_url}/{}",
            coords::maven_path(&module.coords, suffix)
        )
    };
    let main_url = url(&module.main_suffix(platform));
    let (main_checksum, main_size) = main_checksum(client, &module, platform, &main_url).await?;
    let main = target(&key, main_url, main_checksum, main_size, policy)?;
    // A portal that sends digests (the extension fields) also says which
    // packages exist; for the original portal, ask the repository.
    let declares_packages = module.sha256.is_some() || module.platforms.is_some();
    let mut packages = Vec::new();
    for (info, suffix) in [
        (&module.dependencies, BIN_SUFFIX),
        (&module.model, MODEL_SUFFIX),
    ] {
        let url = url(suffix);
        let package = match info {
            Some(info) => Some(target(
                &key,
                url,
                Checksum::resolve(Some(info.sha256), None),
                info.size,
                policy,
            )?),
            None if declares_packages => None,
            None => {
                let err = |source| UpgradeError::Fetch {
                    module: key.clone(),
                    source,
                };
                if fetch::probe(client, &url).await.map_err(err)? {
                    let sha = fetch::fetch_sha256_file(client, &url).await.map_err(err)?;
                    Some(target(
                        &key,
                        url,
                        Checksum::resolve(None, sha),
                        None,
                        policy,
                    )?)
                } else {
                    None
                }
            }
        };
        packages.push(package);
    }
    let model = packages.pop().flatten();
    let dependencies = packages.pop().flatten();
    Ok(ResolvedModule {
        module,
        main,
        dependencies,
        model,
        patch: None,
    })
}

/// Which build of the main artifact at `main_url`, and which digest: a
/// native artifact is this platform's build; a module with none refuses the
/// whole set here, before any artifact is downloaded. The checksum keeps
/// who gave the digest: one read from the repository's `.sha256` is not the
/// portal's, and the redirect rule depends on it.
async fn main_checksum(
    client: &reqwest::Client,
    module: &Module,
    platform: &str,
    main_url: &str,
) -> Result<(Checksum, Option<u64>), UpgradeError> {
    let err = |source| UpgradeError::Fetch {
        module: module.coords.clone(),
        source,
    };
    let no_build = || UpgradeError::NoBuildForPlatform {
        module: module.coords.clone(),
        platform: platform.to_owned(),
    };
    if let (Some(builds), true) = (&module.platforms, module.is_native()) {
        let build = builds.get(platform).ok_or_else(no_build)?;
        return Ok((Checksum::resolve(Some(build.sha256), None), build.size));
    }
    let checksum = match module.sha256 {
        Some(s) if !module.is_native() => Checksum::resolve(Some(s), None),
        _ => Checksum::resolve(
            None,
            fetch::fetch_sha256_file(client, main_url)
                .await
                .map_err(err)?,
        ),
    };
    if checksum == Checksum::None
        && module.is_native()
        && !fetch::probe(client, main_url).await.map_err(err)?
    {
        return Err(no_build());
    }
    let size = if module.is_native() {
        None
    } else {
        module.size
    };
    Ok((checksum, size))
}

/// [`resolve`] from verified TUF targets metadata: the portal frame's
/// digests, sizes and package declarations are hints at most. A package the
/// frame declares that the metadata does not list refuses the module. Each
/// artifact is fetched where the repository stores it
/// ([`crate::tuf::TrustedTarget::path`]: hash-prefixed with consistent
/// snapshots).
fn resolve_trusted(
    repository_url: &str,
    platform: &str,
    module: Module,
    trusted: &TrustedTargets,
) -> Result<ResolvedModule, UpgradeError> {
    let key = module.coords.clone();
    let lookup = |suffix: &str| {
        let path = coords::maven_path(&module.coords, suffix);
        trusted.get(&path).map(|t| Target {
            url: format!("{repository_url}/{}", t.path),
            expected: Expected {
                sha256: Some(t.sha256),
                size: Some(t.length),
                digest_source: DigestSource::Tuf,
            },
        })
    };
    let not_a_target = |suffix: &str| UpgradeError::NotATarget {
        module: key.clone(),
        path: coords::maven_path(&module.coords, suffix),
    };
    let main_suffix = module.main_suffix(platform);
    let main = match lookup(&main_suffix) {
        Some(t) => t,
        None if module.is_native() => {
            return Err(UpgradeError::NoBuildForPlatform {
                module: key,
                platform: platform.to_owned(),
            })
        }
        None => return Err(not_a_target(&main_suffix)),
    };
    let mut packages = Vec::new();
    for (declared, suffix) in [
        (module.dependencies.is_some(), BIN_SUFFIX),
        (module.model.is_some(), MODEL_SUFFIX),
    ] {
        match lookup(suffix) {
            Some(t) => packages.push(Some(t)),
            None if declared => return Err(not_a_target(suffix)),
            None => packages.push(None),
        }
    }
    let model = packages.pop().flatten();
    let dependencies = packages.pop().flatten();
    Ok(ResolvedModule {
        module,
        main,
        dependencies,
        model,
        patch: None,
    })
}

fn target(
    module: &Coords,
    url: String,
    checksum: Checksum,
    size: Option<u64>,
    policy: ChecksumPolicy,
) -> Result<Target, UpgradeError> {
    if checksum.sha256().is_none() {
        match policy {
            ChecksumPolicy::Require => {
                return Err(UpgradeError::NoChecksum {
                    module: module.clone(),
                    url,
                })
            }
            ChecksumPolicy::Warn => {
                warn!(%module, %url, "no sha-256 for artifact; accepted because checksum_policy = \"warn\"")
            }
        }
    }
    Ok(Target {
        url,
        expected: Expected::new(checksum, size),
    })
}

impl Handler<DownloadSet> for Downloader {
    type Result = ResponseFuture<Result<HashMap<String, CachedFile>, UpgradeError>>;

    fn handle(&mut self, msg: DownloadSet, _: &mut Context<Self>) -> Self::Result {
        let job = Arc::new(Job {
            layout: self.layout.clone(),
            client: self.client.clone(),
            config: self.config.clone(),
            events: msg.events,
            done: AtomicU64::new(0),
            total: total_bytes(&msg.plan),
            last_report: std::sync::Mutex::new((Instant::now(), 0)),
        });
        let parallel = self.max_parallel;
        let span = info_span!(
            "downloader.download_set",
            modules = msg.plan.modules.len(),
            bytes = job.total
        );
        Box::pin(
            async move {
                check_free_space(&job.layout, &job.client, &job.config, &msg.plan).await?;
                let work: Vec<(Coords, Vec<Fetch>, Option<MainPatch>)> = msg
                    .plan
                    .modules
                    .iter()
                    .map(|m| {
                        (
                            m.resolved.module.coords.clone(),
                            m.fetches().cloned().collect::<Vec<_>>(),
                            main_patch(m),
                        )
                    })
                    .filter(|(_, f, _)| !f.is_empty())
                    .collect();
                let results: Vec<Vec<(String, CachedFile)>> = stream::iter(work)
                    .map(|(module, fetches, patch)| {
                        let job = job.clone();
                        async move { job.module(module, fetches, patch).await }
                    })
                    .buffer_unordered(parallel)
                    .try_collect()
                    .await?;
                Ok(results.into_iter().flatten().collect())
            }
            .instrument(span),
        )
    }
}

/// A patch offered for a module's main artifact, with the main
/// artifact's cache name.
type MainPatch = (String, delta::Offer);

fn main_patch(m: &ModulePlan) -> Option<MainPatch> {
    match (&m.main, &m.resolved.patch) {
        (MainPlan::Fetch(f), Some(offer)) => Some((f.cache_name.clone(), offer.clone())),
        _ => None,
    }
}

fn total_bytes(plan: &SyncPlan) -> u64 {
    plan.modules
        .iter()
        .flat_map(|m| m.fetches())
        .map(|f| f.target.expected.size.unwrap_or(0))
        .sum()
}

/// Refuses before the first byte when the downloads and their extraction
/// would not fit and leave `min_free_space` free. Package sizes stand in
/// for their extracted size (the stager checks the archives' declared
/// uncompressed sizes before extracting); an artifact whose size nobody
/// declared is sized by `HEAD` (`Content-Length`).
async fn check_free_space(
    layout: &Layout,
    client: &reqwest::Client,
    config: &FetchConfig,
    plan: &SyncPlan,
) -> Result<(), UpgradeError> {
    let mut downloads = 0;
    let mut extraction = 0;
    for m in &plan.modules {
        let packages: Vec<&Fetch> = [&m.dependencies, &m.model]
            .into_iter()
            .filter_map(|p| match p {
                Some(PackagePlan::Fetch(f)) => Some(f),
                _ => None,
            })
            .collect();
        for f in m.fetches() {
            let size = match f.target.expected.size {
                Some(size) => size,
                None => {
                    fetch::content_length(client, &f.target.url, f.target.expected.digest_source)
                        .await
                        .map_err(|source| UpgradeError::Fetch {
                            module: m.resolved.module.coords.clone(),
                            source,
                        })?
                        .unwrap_or(0)
                }
            };
            downloads += size;
            if packages.iter().any(|p| p.cache_name == f.cache_name) {
                extraction += size;
            }
        }
    }
    let needed = downloads + extraction + FREE_SPACE_MARGIN;
    let dir = layout.download();
    let free = config.space.free(&dir).map_err(io_at(&dir))?;
    let keep = config.space.min_free;
    if downloads > 0 && needed.saturating_add(keep) > free {
        return Err(UpgradeError::InsufficientSpace {
            path: dir,
            needed,
            free,
            keep,
        });
    }
    Ok(())
}

struct Job {
    layout: Layout,
    client: reqwest::Client,
    config: FetchConfig,
    events: mpsc::Sender<DownloadEvent>,
    done: AtomicU64,
    total: u64,
    /// When progress was last reported while bytes flowed, and the bytes
    /// it reported.
    last_report: std::sync::Mutex<(Instant, u64)>,
}

impl Job {
    async fn module(
        &self,
        module: Coords,
        fetches: Vec<Fetch>,
        patch: Option<MainPatch>,
    ) -> Result<Vec<(String, CachedFile)>, UpgradeError> {
        self.emit(DownloadEvent::Started {
            module: module.clone(),
        })
        .await;
        let mut out = Vec::new();
        let mut transferred = 0;
        for f in fetches {
            let offer = patch
                .as_ref()
                .filter(|(name, _)| *name == f.cache_name)
                .map(|(_, offer)| offer);
            match self.artifact(&module, &f, offer).await {
                Ok((cached, bytes)) => {
                    transferred += bytes;
                    out.push((f.cache_name.clone(), cached));
                }
                Err(e) => {
                    self.emit(DownloadEvent::Failed {
                        module: module.clone(),
                        reason: e.to_string(),
                    })
                    .await;
                    return Err(e);
                }
            }
        }
        self.emit(DownloadEvent::Finished {
            module,
            transferred,
        })
        .await;
        Ok(out)
    }

    /// One artifact into the cache, made from `offer`'s patch when that
    /// works; returns it and the bytes transferred.
    async fn artifact(
        &self,
        module: &Coords,
        f: &Fetch,
        offer: Option<&delta::Offer>,
    ) -> Result<(CachedFile, u64), UpgradeError> {
        let cache = self.layout.download();
        tokio::fs::create_dir_all(&cache)
            .await
            .map_err(io_at(&cache))?;
        let path = cache.join(&f.cache_name);
        if let Some(hit) = cache_hit(&path, &f.target).await {
            info!(module = %module, file = %f.cache_name, bytes = hit.size, "already in the cache");
            self.add_progress(hit.size).await;
            return Ok((hit, 0));
        }
        if let Some(offer) = offer {
            if let Some(patched) = self.made_from_patch(module, f, offer).await {
                return Ok(patched);
            }
        }
        let partial = cache.join(format!("{}.partial", f.cache_name));
        let expected = f.target.expected.clone();
        let seen = AtomicU64::new(0);
        // The fetch engine's callback is synchronous: it only counts, and
        // `reporting` sends the events, where a full queue may make it wait.
        let progress = |bytes: u64, _total: Option<u64>| {
            let before = seen.swap(bytes, Ordering::Relaxed);
            let delta = bytes.saturating_sub(before);
            self.done.fetch_add(delta, Ordering::Relaxed);
        };
        info!(module = %module, url = %f.target.url, size = ?f.target.expected.size, "downloading");
        let got = self
            .reporting(fetch::download(
                &self.client,
                &f.target.url,
                &partial,
                &expected,
                &self.config,
                &progress,
            ))
            .await
            .map_err(|source| UpgradeError::Fetch {
                module: module.clone(),
                source,
            })?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io_at(&path))?;
        crate::layout::sync_dir(&cache).map_err(io_at(&cache))?;
        self.add_progress(got.size.saturating_sub(seen.load(Ordering::Relaxed)))
            .await;
        info!(module = %module, file = %f.cache_name, bytes = got.size, transferred = got.bytes_transferred, resumed_from = got.resumed_from, "downloaded");
        Ok((
            CachedFile {
                sha256: got.sha256,
                size: got.size,
            },
            got.bytes_transferred,
        ))
    }

    /// `f`'s file made from `offer`'s patch, or `None` (the reason logged
    /// and reported) when the whole file is to be fetched.
    async fn made_from_patch(
        &self,
        module: &Coords,
        f: &Fetch,
        offer: &delta::Offer,
    ) -> Option<(CachedFile, u64)> {
        let cache = self.layout.download();
        let seen = AtomicU64::new(0);
        let progress = |bytes: u64, _total: Option<u64>| {
            let before = seen.swap(bytes, Ordering::Relaxed);
            self.done
                .fetch_add(bytes.saturating_sub(before), Ordering::Relaxed);
        };
        let from = &offer.source.version;
        info!(%module, from = %from, "fetching a patch from the installed build");
        let outcome = self
            .reporting(delta::fetch_and_apply(
                &self.client,
                &self.config,
                &cache,
                f,
                offer,
                &progress,
            ))
            .await;
        // The patch's bytes stood for the file's: what the file has more
        // is present now too, or the full download counts it again.
        let fetched = seen.load(Ordering::Relaxed);
        let mut report = delta::DeltaReport {
            module: module.clone(),
            from: from.clone(),
            patched: false,
            patch_bytes: None,
            apply_ms: None,
            reason: None,
        };
        let result = match outcome {
            Ok(p) => {
                let apply_ms = p.apply.as_millis() as u64;
                info!(%module, from = %from, patch_bytes = p.patch_bytes, bytes = p.cached.size, apply_ms, "made from a patch and verified");
                report.apply_ms = Some(apply_ms);
                self.add_progress(p.cached.size.saturating_sub(fetched))
                    .await;
                report.patched = true;
                report.patch_bytes = Some(p.patch_bytes);
                Some((p.cached, p.transferred))
            }
            Err(reason) => {
                warn!(%module, from = %from, %reason, "no patch used; fetching the whole file");
                self.done.fetch_sub(fetched, Ordering::Relaxed);
                report.reason = Some(reason.to_string());
                None
            }
        };
        self.emit(DownloadEvent::Delta(report)).await;
        result
    }

    /// Sends an event, waiting while the queue is full. A closed queue
    /// means PortalLink is gone and nobody listens: nothing to do.
    async fn emit(&self, event: DownloadEvent) {
        let _ = self.events.send(event).await;
    }

    async fn add_progress(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.emit(DownloadEvent::Progress {
            done,
            total: self.total,
        })
        .await;
    }

    /// Runs `work`, and meanwhile reports the bytes so far every
    /// [`PROGRESS_INTERVAL`] (over all parallel downloads) when they moved.
    async fn reporting<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    if let Some(done) = self.progress_due() {
                        self.emit(DownloadEvent::Progress { done, total: self.total }).await;
                    }
                }
            }
        }
    }

    /// The bytes so far, if they moved and the last report is
    /// [`PROGRESS_INTERVAL`] old.
    fn progress_due(&self) -> Option<u64> {
        let done = self.done.load(Ordering::Relaxed);
        let mut last = self.last_report.lock().expect("progress lock");
        let due = last.0.elapsed() >= PROGRESS_INTERVAL && done != last.1;
        if due {
            *last = (Instant::now(), done);
        }
        due.then_some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job over `layout` whose events go to a queue of `capacity`.
    fn job(layout: Layout, capacity: usize) -> (Arc<Job>, mpsc::Receiver<DownloadEvent>) {
        let (events, rx) = mpsc::channel(capacity);
        let config = FetchConfig::default();
        let job = Job {
            layout,
            client: fetch::client(&config).unwrap(),
            config,
            events,
            done: AtomicU64::new(0),
            total: 0,
            last_report: std::sync::Mutex::new((Instant::now(), 0)),
        };
        (Arc::new(job), rx)
    }

    #[tokio::test]
    async fn a_full_event_queue_makes_the_downloader_wait_and_drops_nothing() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path());
        std::fs::create_dir_all(layout.download()).unwrap();
        let fetches: Vec<Fetch> = (0..5)
            .map(|i| {
                let name = format!("a-{i}.jar");
                let body = format!("artifact {i}");
                std::fs::write(layout.download().join(&name), &body).unwrap();
                Fetch {
                    target: Target {
                        url: format!("http://127.0.0.1:9/{name}"),
                        expected: Expected {
                            sha256: Some(banalytics_home::Sha256::of(body.as_bytes())),
                            size: Some(body.len() as u64),
                            digest_source: DigestSource::Portal,
                        },
                    },
                    cache_name: name,
                }
            })
            .collect();
        let (job, mut rx) = job(layout, 1);
        let work = {
            let job = job.clone();
            tokio::spawn(async move { job.module("g:a:1".parse().unwrap(), fetches, None).await })
        };
        // Nobody reads yet: the job stops at the second event.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!work.is_finished(), "the job did not wait for room");
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
            if matches!(events.last(), Some(DownloadEvent::Finished { .. })) {
                break;
            }
        }
        let cached = work.await.unwrap().unwrap();
        assert_eq!(cached.len(), 5);
        assert_eq!(events.len(), 7, "{events:?}");
        assert!(
            matches!(&events[0], DownloadEvent::Started { module } if module.to_string() == "g:a:1")
        );
        let progress: Vec<u64> = events[1..6]
            .iter()
            .map(|e| match e {
                DownloadEvent::Progress { done, .. } => *done,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(progress, vec![10, 20, 30, 40, 50], "every step, in order");
        assert!(matches!(
            &events[6],
            DownloadEvent::Finished { transferred: 0, .. }
        ));
    }
}
