//! The upgrade center as a component, against a loopback repository and a
//! bus-level fake portal: from the target set to a verified staged set.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod repo;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use banalytics_home::{
    coords::Module,
    quarantine::{self, Quarantine},
    Layout,
};
use banalytics_messages::portal::{
    GetEnvModulesRequest, GetEnvModulesResponse, ModuleStatus, ModuleStatusUpdate,
    PortalLinkChanged, PortalLinkQuery, PortalLinkState, SyncSoftware, UpgradeAnswered,
    UpgradeOutcome, UpgradeRequested,
};
use banalytics_sdk::{
    component::ComponentInit, Bus, ComponentContext, ConfigSection, RestartPolicy, State,
    StatusBoard,
};
use banalytics_upgrade_center::{
    fetch::space::SpaceProbe, kind_with, kind_with_space, target_set_id, Preflight, NOTHING_CHANGED,
};
use repo::{sha256_hex, Behaviour, RangeMode, Repo};
use serde_json::{json, Value};

const ENV: &str = "11111111-2222-3333-4444-555555555555";

/// One box: a home, a bus, the component, and a fake portal on the bus.
struct TestBox {
    home: tempfile::TempDir,
    board: StatusBoard,
    bus: Bus,
    statuses: Arc<Mutex<Vec<ModuleStatusUpdate>>>,
    requests: Arc<Mutex<u32>>,
    target: Arc<Mutex<Vec<Value>>>,
    /// Whether the fake Portal Integration says its link is up.
    link_up: Arc<std::sync::atomic::AtomicBool>,
    _ctx: ComponentContext,
}

struct Options {
    registered: bool,
    installed: bool,
    extra_config: String,
    portal_delay: Duration,
    preflight: Preflight,
    quarantined: Option<Quarantine>,
    /// Stands in for `statvfs` (the free space of a path).
    space_probe: Option<SpaceProbe>,
    /// Runs on the home before the component starts.
    prepare: Option<fn(&Path)>,
    /// What the fake Portal Integration answers `PortalLinkQuery` with
    /// (`None`: there is none, nobody answers).
    link_up: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            registered: true,
            installed: false,
            extra_config: String::new(),
            portal_delay: Duration::ZERO,
            preflight: banalytics_upgrade_center::accept_all(),
            quarantined: None,
            space_probe: None,
            prepare: None,
            link_up: Some(true),
        }
    }
}

async fn start_box(repo: &Repo, target: Vec<Value>, opts: Options) -> TestBox {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    if opts.registered {
        std::fs::write(
            home.path().join("config/device-registration.properties"),
            format!("#registered\nenvironmentUuid={ENV}\n"),
        )
        .unwrap();
    }
    if opts.installed {
        std::fs::create_dir_all(home.path().join("modules")).unwrap();
        std::fs::write(home.path().join("modules/modules-info.properties"), "").unwrap();
    }
    if let Some(q) = &opts.quarantined {
        quarantine::write(&Layout::new(home.path()), q).unwrap();
    }
    if let Some(prepare) = opts.prepare {
        prepare(home.path());
    }
    let bus = Bus::new();
    let board = StatusBoard::new();
    board.register("suc", "software-upgrade-center", "id");
    board.set_component("suc", State::Run, None);
    let target = Arc::new(Mutex::new(target));
    let requests = Arc::new(Mutex::new(0));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let link_up = Arc::new(std::sync::atomic::AtomicBool::new(
        opts.link_up.unwrap_or(false),
    ));
    if opts.link_up.is_some() {
        let mut queries = bus.subscribe::<PortalLinkQuery>();
        let (pbus, up) = (bus.clone(), link_up.clone());
        actix_rt::spawn(async move {
            while queries.recv().await.is_some() {
                let connected = up.load(std::sync::atomic::Ordering::SeqCst);
                pbus.publish(PortalLinkState { connected }).await;
            }
        });
    }
    {
        let mut reqs = bus.subscribe::<GetEnvModulesRequest>();
        let (pbus, target, requests, delay) = (
            bus.clone(),
            target.clone(),
            requests.clone(),
            opts.portal_delay,
        );
        actix_rt::spawn(async move {
            while let Some(req) = reqs.recv().await {
                assert_eq!(req.environment_uuid, ENV);
                assert_eq!(req.core_module.group_id, "com.banalytics.box");
                *requests.lock().unwrap() += 1;
                tokio::time::sleep(delay).await;
                let modules = target.lock().unwrap().clone();
                pbus.publish(GetEnvModulesResponse { modules }).await;
            }
        });
        let mut sts = bus.subscribe::<ModuleStatusUpdate>();
        let statuses = statuses.clone();
        actix_rt::spawn(async move {
            while let Some(s) = sts.recv().await {
                statuses.lock().unwrap().push((*s).clone());
            }
        });
    }
    let config = format!(
        "kind = \"software-upgrade-center\"\nrepository_url = \"{}\"\nretry_backoff_ms = 10\n{}",
        repo.url(),
        opts.extra_config
    );
    let init = ComponentInit {
        name: "suc".into(),
        id: uuid_of(),
        home: home.path().to_owned(),
        config: ConfigSection::from_snippet("suc", &config),
    };
    let kind = match opts.space_probe {
        Some(probe) => kind_with_space(opts.preflight, probe),
        None => kind_with(opts.preflight),
    };
    let mut component = kind.create(&init).unwrap();
    let mut ctx = ComponentContext::new(
        "suc",
        init.id,
        home.path(),
        RestartPolicy::Immediate,
        bus.clone(),
        board.clone(),
    );
    component.start(&mut ctx).unwrap();
    TestBox {
        home,
        board,
        bus,
        statuses,
        requests,
        target,
        link_up,
        _ctx: ctx,
    }
}

fn uuid_of() -> banalytics_sdk_uuid::Uuid {
    banalytics_sdk_uuid::Uuid::nil()
}

mod banalytics_sdk_uuid {
    pub use uuid::Uuid;
}

impl TestBox {
    fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    fn sync(&self) -> Value {
        self.board.component("suc").unwrap().details["sync"].clone()
    }

    /// Waits for the synchronisation that started after `since_ms` to end.
    async fn wait_sync_after(&self, since_ms: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.sync();
            if s["finished_ms"].as_u64().is_some_and(|f| f >= since_ms)
                && s["started_ms"].as_u64().is_some_and(|st| st >= since_ms)
            {
                // Let the fake portal's collector drain the bus.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no synchronisation ended: {s}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the synchronisation's state is `state`.
    async fn wait_state(&self, state: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.sync()["state"] != state {
            assert!(tokio::time::Instant::now() < deadline, "{}", self.sync());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn first_sync(&self) -> Value {
        self.wait_sync_after(0).await
    }

    async fn resync(&self, target: Vec<Value>) -> Value {
        *self.target.lock().unwrap() = target;
        self.statuses.lock().unwrap().clear();
        let since = banalytics_sdk::status::now_ms();
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.bus.publish(SyncSoftware {}).await;
        self.wait_sync_after(since + 1).await
    }

    /// `banalytics-box upgrade` (`--retry` with `retry`), as the host
    /// publishes it.
    async fn local_upgrade(&self, retry: bool) -> Value {
        self.statuses.lock().unwrap().clear();
        let since = banalytics_sdk::status::now_ms();
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.bus
            .publish(UpgradeRequested {
                retry,
                request: None,
            })
            .await;
        self.wait_sync_after(since + 1).await
    }

    /// `banalytics-box upgrade` under the number `request`, as the
    /// control socket asks it: the upgrade center's answer.
    async fn ask_upgrade(&self, request: u64) -> UpgradeAnswered {
        let mut answers = self.bus.subscribe::<UpgradeAnswered>();
        self.bus
            .publish(UpgradeRequested {
                retry: false,
                request: Some(request),
            })
            .await;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let a = answers.recv().await.expect("the bus lives");
                if a.request == request {
                    return (*a).clone();
                }
            }
        })
        .await
        .expect("the upgrade center answers the request")
    }

    /// The fake Portal Integration's link goes up or down, and says so.
    async fn set_link(&self, up: bool) {
        self.link_up.store(up, std::sync::atomic::Ordering::SeqCst);
        self.bus.publish(PortalLinkChanged { connected: up }).await;
    }

    /// The durable statuses in the portal outbox on disk.
    fn outbox(&self) -> Vec<ModuleStatusUpdate> {
        let layout = Layout::new(self.home.path());
        banalytics_home::outbox::pending(&layout, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| serde_json::from_slice(&bytes).unwrap())
            .collect()
    }

    fn statuses(&self) -> Vec<(String, ModuleStatus, Option<String>)> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s.module
                        .as_ref()
                        .map(|m| format!("{}:{}", m.artifact_id, m.version))
                        .unwrap_or_default(),
                    s.status,
                    s.status_message.clone(),
                )
            })
            .collect()
    }

    /// What the host's apply step will do (next issue): the staged set
    /// becomes the active one, the active one the backup.
    fn install_staged(&self) {
        for (staged, active, backup) in [
            ("modules-upgrade", "modules", "modules-backup"),
            ("models-upgrade", "models", "models-backup"),
        ] {
            let _ = std::fs::remove_dir_all(self.path(backup));
            if self.path(active).exists() {
                std::fs::rename(self.path(active), self.path(backup)).unwrap();
            }
            std::fs::rename(self.path(staged), self.path(active)).unwrap();
        }
        std::fs::create_dir_all(self.path("modules-upgrade")).unwrap();
    }
}

/// Every file under `dir` with its SHA-256.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, sha256_hex(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A published module: its module object and the files it installs.
struct Published {
    object: Value,
    main_path: String,
    files: BTreeMap<String, String>,
    models: BTreeMap<String, String>,
}

fn publish(
    repo: &Repo,
    artifact: &str,
    version: &str,
    deps: &[(&str, &[u8])],
    model: &[(&str, &[u8])],
) -> Published {
    let main = format!("main {artifact} {version}")
        .repeat(100)
        .into_bytes();
    let base = format!("com/example/{artifact}/{version}/{artifact}-{version}");
    let main_path = format!("{base}.jar");
    repo.put(&main_path, main.clone(), true);
    let mut object = json!({
        "groupId": "com.example", "artifactId": artifact, "version": version,
        "type": "component", "uploadTime": "2026-03-01T10:15:30",
        "sha256": sha256_hex(&main), "size": main.len(),
    });
    let mut files = BTreeMap::new();
    files.insert(
        format!("com.example-{artifact}-{version}.jar"),
        sha256_hex(&main),
    );
    let mut models = BTreeMap::new();
    for (suffix, entries, field, map) in [
        ("-bin.zip", deps, "dependencies", &mut files),
        ("-model.zip", model, "model", &mut models),
    ] {
        if entries.is_empty() {
            continue;
        }
        let z = zip_of(entries);
        object[field] = json!({"sha256": sha256_hex(&z), "size": z.len()});
        repo.put(&format!("{base}{suffix}"), z, true);
        for (name, body) in entries {
            map.insert((*name).to_owned(), sha256_hex(body));
        }
    }
    Published {
        object,
        main_path,
        files,
        models,
    }
}

fn expected_tree(set: &[&Published]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut files = BTreeMap::new();
    let mut models = BTreeMap::new();
    for p in set {
        files.extend(p.files.clone());
        models.extend(p.models.clone());
    }
    (files, models)
}

fn staged_tree(b: &TestBox) -> BTreeMap<String, String> {
    let mut t = tree(&b.path("modules-upgrade"));
    t.remove("modules-info.properties");
    t.remove("modules-hashes.json");
    t
}

fn objects(set: &[&Published]) -> Vec<Value> {
    set.iter().map(|p| p.object.clone()).collect()
}

/// Per module, the statuses in the order the portal saw them.
fn by_module(
    statuses: &[(String, ModuleStatus, Option<String>)],
) -> BTreeMap<String, Vec<ModuleStatus>> {
    let mut out: BTreeMap<String, Vec<ModuleStatus>> = BTreeMap::new();
    for (m, s, _) in statuses {
        out.entry(m.clone()).or_default().push(*s);
    }
    out
}

use ModuleStatus::{DownloadError, Downloaded, Downloading, InstallationCancelled};

#[actix_rt::test]
async fn first_run_stages_a_then_b_stages_exactly_b_with_statuses_in_order() {
    let repo = Repo::start().await;
    let alpha1 = publish(
        &repo,
        "alpha",
        "1.0",
        &[("lib/a.jar", b"dep a 1")],
        &[("alpha/model.bin", b"model alpha 1")],
    );
    let beta = publish(&repo, "beta", "1.0", &[], &[]);
    let gamma = publish(&repo, "gamma", "1.0", &[("lib/g.jar", b"dep g")], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha1, &beta, &gamma]),
        Options::default(),
    )
    .await;

    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(sync["trigger"], "first-run");
    let (files, models) = expected_tree(&[&alpha1, &beta, &gamma]);
    assert_eq!(staged_tree(&b), files);
    assert_eq!(tree(&b.path("models-upgrade")), models);
    assert!(b.path("modules-upgrade/modules-info.properties").exists());
    assert_eq!(
        by_module(&b.statuses()),
        BTreeMap::from([
            ("alpha:1.0".into(), vec![Downloading, Downloaded]),
            ("beta:1.0".into(), vec![Downloading, Downloaded]),
            ("gamma:1.0".into(), vec![Downloading, Downloaded]),
        ])
    );
    b.install_staged();

    // B: alpha changed (new main, new deps, same model), beta kept, gamma
    // removed, delta added with both packages.
    let alpha2 = publish(
        &repo,
        "alpha",
        "2.0",
        &[("lib/a.jar", b"dep a 2")],
        &[("alpha/model.bin", b"model alpha 1")],
    );
    let delta = publish(
        &repo,
        "delta",
        "1.0",
        &[("lib/d.jar", b"dep d")],
        &[("delta/m.bin", b"model d")],
    );
    repo.reset_counters();
    let sync = b.resync(objects(&[&alpha2, &beta, &delta])).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    let (files, models) = expected_tree(&[&alpha2, &beta, &delta]);
    assert_eq!(staged_tree(&b), files, "exactly B: names and SHA-256");
    assert_eq!(tree(&b.path("models-upgrade")), models);
    let info = std::fs::read_to_string(b.path("modules-upgrade/modules-info.properties")).unwrap();
    assert!(
        info.contains("com.example\\:alpha\\:2.0=component\\:") && !info.contains("gamma"),
        "{info}"
    );
    assert_eq!(
        by_module(&b.statuses()),
        BTreeMap::from([
            ("alpha:2.0".into(), vec![Downloading, Downloaded]),
            ("beta:1.0".into(), vec![Downloaded]),
            ("delta:1.0".into(), vec![Downloading, Downloaded]),
        ]),
        "a kept module reaches downloaded without downloading"
    );
    assert_eq!(
        repo.bytes_for(&beta.main_path),
        0,
        "the kept module was fetched"
    );
    // The active set was not touched by staging.
    assert!(b.path("modules/com.example-gamma-1.0.jar").exists());
}

/// alpha 1.0 (with a dependency `lib/a.jar` and a model) and beta 1.0
/// published in `repo`, and a box that installed the two as its first set.
async fn alpha_and_beta_installed(repo: &Repo) -> (Published, Published, TestBox) {
    let alpha = publish(
        repo,
        "alpha",
        "1.0",
        &[("lib/a.jar", b"dep a")],
        &[("alpha/m.bin", b"model a")],
    );
    let beta = publish(repo, "beta", "1.0", &[], &[]);
    let b = start_box(repo, objects(&[&alpha, &beta]), Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "staged");
    b.install_staged();
    (alpha, beta, b)
}

#[actix_rt::test]
async fn resync_of_the_installed_target_requests_zero_bytes_and_a_change_only_its_own() {
    let repo = Repo::start().await;
    let (alpha, beta, b) = alpha_and_beta_installed(&repo).await;

    repo.reset_counters();
    let sync = b.resync(objects(&[&alpha, &beta])).await;
    assert_eq!(sync["state"], "up-to-date", "{sync}");
    assert_eq!(repo.artifact_bytes(), 0);
    assert_eq!(repo.artifact_gets(), 0);
    assert!(
        !b.path("modules-upgrade/modules-info.properties").exists(),
        "nothing staged for a no-op"
    );

    let beta2 = publish(&repo, "beta", "1.1", &[], &[]);
    repo.reset_counters();
    let sync = b.resync(objects(&[&alpha, &beta2])).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    let size = beta2.object["size"].as_u64().unwrap();
    assert_eq!(repo.artifact_bytes(), size, "only beta 1.1's bytes");
    assert_eq!(repo.bytes_for(&beta2.main_path), size);
}

/// One module, one fault: the outcome and `modules/` untouched.
async fn hostile(
    fault: impl FnOnce(&mut Behaviour),
    tweak: impl FnOnce(&mut Value),
    extra_config: &str,
    with_digest: bool,
) -> (TestBox, Value, Repo, Published) {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    if !with_digest {
        let body = "main alpha 1.0".repeat(100).into_bytes();
        repo.put(&alpha.main_path, body, false);
    }
    repo.set(&alpha.main_path, fault);
    let mut object = alpha.object.clone();
    tweak(&mut object);
    let b = start_box(
        &repo,
        vec![object],
        Options {
            extra_config: format!("read_timeout_ms = 300\n{extra_config}"),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert!(tree(&b.path("modules")).is_empty(), "modules/ changed");
    (b, sync, repo, alpha)
}

fn assert_download_error(b: &TestBox, sync: &Value, needle: &str) {
    assert_eq!(sync["state"], "failed", "{sync}");
    let statuses = b.statuses();
    let last = statuses
        .last()
        .unwrap_or_else(|| panic!("no status; sync {sync}"));
    assert_eq!(last.1, DownloadError, "{statuses:?}");
    let message = last.2.clone().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert!(!b.path("modules-upgrade/modules-info.properties").exists());
}

#[actix_rt::test]
async fn a_wrong_hash_ends_in_download_error() {
    let (b, sync, ..) = hostile(|_| {}, |o| o["sha256"] = json!("0".repeat(64)), "", true).await;
    assert_download_error(&b, &sync, "sha-256");
}

#[actix_rt::test]
async fn a_truncated_body_is_resumed_and_succeeds() {
    let fault = |b: &mut Behaviour| {
        b.truncate_next = 1;
        b.truncate_at = 500;
    };
    let (b, sync, repo, alpha) = hostile(fault, |_| {}, "", true).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(
        repo.bytes_for(&alpha.main_path),
        alpha.object["size"].as_u64().unwrap(),
        "resumed, not restarted"
    );
    assert_eq!(staged_tree(&b), alpha.files);
}

#[actix_rt::test]
async fn more_bytes_than_declared_ends_in_download_error() {
    let fault = |b: &mut Behaviour| b.extra_bytes = 10;
    let (b, sync, ..) = hostile(fault, |_| {}, "", true).await;
    assert_download_error(&b, &sync, "declared");
}

#[actix_rt::test]
async fn an_ignored_range_starts_over_and_succeeds() {
    let fault = |b: &mut Behaviour| {
        b.truncate_next = 1;
        b.truncate_at = 500;
        b.range = RangeMode::Ignore;
    };
    let (b, sync, repo, alpha) = hostile(fault, |_| {}, "", true).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(staged_tree(&b), alpha.files);
    assert!(repo.bytes_for(&alpha.main_path) > alpha.object["size"].as_u64().unwrap());
}

#[actix_rt::test]
async fn a_wrong_content_range_ends_in_download_error() {
    let fault = |b: &mut Behaviour| {
        b.truncate_next = 1;
        b.truncate_at = 500;
        b.range = RangeMode::WrongStart;
    };
    let (b, sync, ..) = hostile(fault, |_| {}, "", true).await;
    assert_download_error(&b, &sync, "content-range");
}

#[actix_rt::test]
async fn a_404_on_a_main_artifact_ends_in_download_error_without_retry() {
    let repo = Repo::start().await;
    let mut object = publish(&repo, "alpha", "1.0", &[], &[]).object;
    object["version"] = json!("9.9");
    let b = start_box(&repo, vec![object], Options::default()).await;
    let sync = b.first_sync().await;
    assert_download_error(&b, &sync, "404");
    assert_eq!(repo.artifact_gets(), 1);
}

#[actix_rt::test]
async fn a_500_then_success_is_retried() {
    let fault = |b: &mut Behaviour| b.fail_next = [500].into();
    let (b, sync, repo, alpha) = hostile(fault, |_| {}, "", true).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(repo.artifact_gets(), 2);
    assert_eq!(staged_tree(&b), alpha.files);
}

#[actix_rt::test]
async fn a_stalled_server_hits_the_read_timeout_and_the_retry_succeeds() {
    let fault = |b: &mut Behaviour| {
        b.stall_next = 1;
        b.stall_at = 500;
        b.stall_for = Duration::from_secs(3);
    };
    let (b, sync, repo, alpha) = hostile(fault, |_| {}, "", true).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(repo.artifact_gets(), 2, "timed out once, then resumed");
    assert_eq!(staged_tree(&b), alpha.files);
}

#[actix_rt::test]
async fn no_checksum_anywhere_ends_in_download_error_unless_policy_is_warn() {
    let strip = |o: &mut Value| {
        o.as_object_mut().unwrap().remove("sha256");
    };
    let (b, sync, ..) = hostile(|_| {}, strip, "", false).await;
    assert_download_error(&b, &sync, "no SHA-256");
    let (b, sync, _, alpha) = hostile(|_| {}, strip, "checksum_policy = \"warn\"", false).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(staged_tree(&b), alpha.files);
}

/// A hostile package cancels the upgrade, naming the entry, and writes
/// nothing outside the staging folder.
async fn hostile_archive(entries: &[(&str, &[u8])], extra_config: &str, needle: &str) {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", entries, &[]);
    let b = start_box(
        &repo,
        vec![alpha.object.clone()],
        Options {
            extra_config: extra_config.into(),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let statuses = b.statuses();
    let last = statuses.last().unwrap();
    assert_eq!(last.1, InstallationCancelled);
    assert!(
        last.2.as_deref().unwrap_or("").contains(needle),
        "{statuses:?}"
    );
    assert!(!b.path("modules-upgrade/modules-info.properties").exists());
    let parent: Vec<_> = std::fs::read_dir(
        b.home
            .path()
            .parent()
            .unwrap()
            .join(b.home.path().file_name().unwrap()),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .collect();
    assert!(!parent.contains(&"x".to_owned()), "{parent:?}");
    assert!(tree(&b.path("modules")).is_empty());
    assert!(!b.home.path().join("x").exists() && !Path::new("/abs-x-banalytics").exists());
}

#[actix_rt::test]
async fn an_entry_climbing_out_cancels_the_upgrade() {
    hostile_archive(&[("../x", b"evil")], "", "../x").await;
}

#[actix_rt::test]
async fn a_package_placing_the_sets_own_records_cancels_the_upgrade_and_leaves_no_scratch() {
    for name in [
        "modules-info.properties",
        "Modules-Hashes.json",
        "modules-info.properties.tmp",
        "modules-hashes.json.tmp",
    ] {
        hostile_archive(&[(name, b"com.evil:x:1=evil")], "", name).await;
    }
    // The scratch folder of a refused package is gone.
    let repo = Repo::start().await;
    let alpha = publish(
        &repo,
        "alpha",
        "1.0",
        &[("modules-info.properties", b"x")],
        &[],
    );
    let b = start_box(&repo, vec![alpha.object.clone()], Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "cancelled");
    let left: Vec<String> = std::fs::read_dir(b.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp.extract"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[actix_rt::test]
async fn a_failed_extraction_leaves_no_scratch_folder() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[("../x", b"evil")], &[]);
    let b = start_box(&repo, vec![alpha.object.clone()], Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "cancelled");
    let left: Vec<String> = std::fs::read_dir(b.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp.extract"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[actix_rt::test]
async fn an_absolute_entry_cancels_the_upgrade() {
    hostile_archive(&[("/abs-x-banalytics", b"evil")], "", "/abs-x-banalytics").await;
}

#[actix_rt::test]
async fn too_many_entries_cancel_the_upgrade() {
    hostile_archive(
        &[("a", b"1"), ("b", b"2"), ("c", b"3")],
        "max_archive_entries = 2",
        "entries",
    )
    .await;
}

/// The portal's triggers that come while a synchronisation runs make one
/// more, after it, however many they are: the portal may have answered the
/// running one before the change it announces.
#[actix_rt::test]
async fn a_hundred_concurrent_triggers_make_one_request_and_one_after_it() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            installed: true,
            portal_delay: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let since = banalytics_sdk::status::now_ms();
    let publishes: Vec<_> = (0..100)
        .map(|_| {
            let bus = b.bus.clone();
            actix_rt::spawn(async move { bus.publish(SyncSoftware {}).await })
        })
        .collect();
    for p in publishes {
        p.await.unwrap();
    }
    // The first runs for the portal's 300 ms; the one after it starts later.
    let first_started = loop {
        let s = b.sync();
        if let Some(started) = s["started_ms"].as_u64().filter(|t| *t >= since) {
            break started;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let sync = b.wait_sync_after(first_started + 1).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(sync["trigger"], "portal", "{sync}");
    assert_eq!(*b.requests.lock().unwrap(), 2);
    assert_eq!(sync["skipped_triggers"], 99);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*b.requests.lock().unwrap(), 2, "no third");
}

/// `status` shows a synchronisation from its start: not the last one,
/// finished, while the new one waits for the portal's answer.
#[actix_rt::test]
async fn a_synchronisation_shows_in_status_as_soon_as_it_starts() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            installed: true,
            portal_delay: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(b.resync(objects(&[&alpha])).await["state"], "staged");
    b.bus.publish(SyncSoftware {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while *b.requests.lock().unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The portal answers in 500 ms: this one is still asking.
    let sync = b.sync();
    assert!(sync["finished_ms"].is_null(), "{sync}");
    assert_eq!(sync["state"], "requesting", "{sync}");
}

/// A change of the target set announced while a synchronisation downloads
/// the old one is not lost: the box asks again once it is done, and stages
/// the new set.
#[actix_rt::test]
async fn a_target_changed_during_a_synchronisation_is_staged_after_it() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let beta = publish(&repo, "beta", "1.0", &[], &[]);
    repo.set(&alpha.main_path, |b| {
        b.trickle = Some(Duration::from_millis(20));
        b.trickle_bytes = 64;
    });
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            installed: true,
            ..Options::default()
        },
    )
    .await;
    b.bus.publish(SyncSoftware {}).await;
    b.wait_state("downloading").await;
    *b.target.lock().unwrap() = objects(&[&alpha, &beta]);
    // The synchronisation that runs started before this; the next one
    // after it.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let changed = banalytics_sdk::status::now_ms();
    b.bus.publish(SyncSoftware {}).await;
    let sync = b.wait_sync_after(changed).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(*b.requests.lock().unwrap(), 2, "{sync}");
    assert_eq!(
        staged_tree(&b),
        expected_tree(&[&alpha, &beta]).0,
        "{sync}; {:?}",
        b.statuses()
    );
}

#[actix_rt::test]
async fn a_target_larger_than_the_free_space_is_refused_before_any_download() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let mut object = alpha.object.clone();
    object["size"] = json!(1u64 << 52);
    let b = start_box(&repo, vec![object], Options::default()).await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let message = sync["result"].as_str().unwrap();
    assert!(
        message.contains("not enough free space") && message.contains("bytes needed"),
        "{message}"
    );
    assert_eq!(repo.artifact_gets(), 0);
    assert_eq!(b.statuses().last().unwrap().1, InstallationCancelled);
}

#[actix_rt::test]
async fn an_unregistered_box_cancels_and_downloads_nothing() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            registered: false,
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    assert!(sync["result"].as_str().unwrap().contains("not registered"));
    assert_eq!(*b.requests.lock().unwrap(), 0);
    assert_eq!(repo.artifact_gets(), 0);
    let details = b.board.component("suc").unwrap().details;
    assert_eq!(details["registered"], false);
}

#[actix_rt::test]
async fn bad_target_sets_are_cancelled_naming_the_fault() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let mut bad = alpha.object.clone();
    bad["groupId"] = json!("../etc");
    for (target, needle) in [
        (vec![], "empty"),
        (vec![bad], "../etc"),
        (
            vec![alpha.object.clone(), alpha.object.clone()],
            "more than once",
        ),
    ] {
        let b = start_box(&repo, target, Options::default()).await;
        let sync = b.first_sync().await;
        assert_eq!(sync["state"], "cancelled", "{sync}");
        let statuses = b.statuses();
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        assert_eq!(statuses[0].1, InstallationCancelled);
        assert!(
            statuses[0].2.as_deref().unwrap().contains(needle),
            "{statuses:?}"
        );
        assert_eq!(repo.artifact_gets(), 0);
    }
}

#[actix_rt::test]
async fn modules_whose_file_names_collide_ignoring_case_are_refused_as_a_set() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let named = |g: &str, a: &str| {
        let mut o = alpha.object.clone();
        o["groupId"] = json!(g);
        o["artifactId"] = json!(a);
        o["version"] = json!("1");
        o
    };
    for (x, y) in [
        (named("a-b", "c"), named("a", "b-c")),
        (named("a-b", "c"), named("A", "B-c")),
    ] {
        let b = start_box(&repo, vec![x, y], Options::default()).await;
        let sync = b.first_sync().await;
        assert_eq!(sync["state"], "cancelled", "{sync}");
        let statuses = b.statuses();
        assert_eq!(statuses[0].1, InstallationCancelled);
        let message = statuses[0].2.as_deref().unwrap().to_owned();
        assert!(
            message.contains("both need the file name")
                && message.to_lowercase().contains("a-b-c-1.jar"),
            "{message}"
        );
        assert_eq!(repo.artifact_gets(), 0);
    }
}

#[actix_rt::test]
async fn at_most_max_parallel_downloads_run_at_once() {
    let repo = Repo::start().await;
    let set: Vec<Published> = ["m1", "m2", "m3", "m4", "m5"]
        .iter()
        .map(|a| publish(&repo, a, "1.0", &[], &[]))
        .collect();
    for p in &set {
        repo.set(&p.main_path, |b| {
            b.stall_next = 1;
            b.stall_at = 500;
            b.stall_for = Duration::from_millis(150);
        });
    }
    let b = start_box(
        &repo,
        set.iter().map(|p| p.object.clone()).collect(),
        Options {
            extra_config: "max_parallel_downloads = 2".into(),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(repo.max_parallel(), 2);
}

#[actix_rt::test]
async fn going_back_to_the_backup_set_moves_no_bytes() {
    let repo = Repo::start().await;
    let alpha1 = publish(
        &repo,
        "alpha",
        "1.0",
        &[("lib/a.jar", b"dep a 1")],
        &[("alpha/m.bin", b"model 1")],
    );
    let alpha2 = publish(
        &repo,
        "alpha",
        "2.0",
        &[("lib/a.jar", b"dep a 2")],
        &[("alpha/m.bin", b"model 2")],
    );
    let b = start_box(&repo, objects(&[&alpha1]), Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "staged");
    b.install_staged();
    assert_eq!(b.resync(objects(&[&alpha2])).await["state"], "staged");
    b.install_staged();

    repo.reset_counters();
    let sync = b.resync(objects(&[&alpha1])).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(repo.artifact_bytes(), 0, "the backup set had every byte");
    let (files, models) = expected_tree(&[&alpha1]);
    assert_eq!(staged_tree(&b), files);
    assert_eq!(tree(&b.path("models-upgrade")), models);
    assert_eq!(
        by_module(&b.statuses()),
        BTreeMap::from([("alpha:1.0".into(), vec![Downloaded])])
    );
}

#[actix_rt::test]
async fn an_installed_file_changed_in_place_with_its_size_is_fetched_again_for_a_set_that_reuses_it(
) {
    let repo = Repo::start().await;
    let (alpha, beta, b) = alpha_and_beta_installed(&repo).await;
    // A check with every file intact first, so that their digests are
    // cached: the cache must not hide the change.
    assert_eq!(
        b.resync(objects(&[&alpha, &beta])).await["state"],
        "up-to-date"
    );

    // Other bytes of the same length, written into the installed file.
    let dep = b.path("modules/lib/a.jar");
    let mut f = std::fs::OpenOptions::new().write(true).open(&dep).unwrap();
    f.write_all(b"dep X").unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&dep).unwrap().len(), 5);

    let beta2 = publish(&repo, "beta", "1.1", &[], &[]);
    repo.reset_counters();
    let sync = b.resync(objects(&[&alpha, &beta2])).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    let (files, models) = expected_tree(&[&alpha, &beta2]);
    assert_eq!(
        staged_tree(&b),
        files,
        "the staged set has the published bytes"
    );
    assert_eq!(tree(&b.path("models-upgrade")), models);
    assert!(
        repo.bytes_for("com/example/alpha/1.0/alpha-1.0-bin.zip") > 0,
        "the changed package was not fetched again"
    );
    assert_eq!(
        by_module(&b.statuses()),
        BTreeMap::from([
            ("alpha:1.0".into(), vec![Downloading, Downloaded]),
            ("beta:1.1".into(), vec![Downloading, Downloaded]),
        ]),
        "alpha is fetched again as a whole"
    );
}

#[actix_rt::test]
async fn a_quarantined_target_is_refused_before_any_download_until_retried_or_replaced() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let beta = publish(&repo, "beta", "1.0", &[], &[]);
    let q = Quarantine {
        set: None,
        modules: vec![
            "com.example:alpha:1.0".parse().unwrap(),
            "com.example:beta:1.0".parse().unwrap(),
        ],
        reason: "component drill is ERROR: failure drill".into(),
        rolled_back_ms: 1_700_000_000_000,
    };
    let record = |b: &TestBox| quarantine::read(&Layout::new(b.home.path())).unwrap();
    let b = start_box(
        &repo,
        objects(&[&beta, &alpha]),
        Options {
            quarantined: Some(q.clone()),
            ..Options::default()
        },
    )
    .await;

    // Even a first run does not stage it by itself; nor does the portal or
    // a plain local upgrade.
    let first = b.first_sync().await;
    let portal = b.resync(objects(&[&alpha, &beta])).await;
    let local = b.local_upgrade(false).await;
    for (sync, trigger) in [(first, "first-run"), (portal, "portal"), (local, "local")] {
        assert_eq!(sync["state"], "cancelled", "{sync}");
        assert_eq!(sync["trigger"], trigger);
        assert_eq!(sync["result"], q.refusal().as_str());
    }
    assert_eq!(
        b.statuses(),
        [(String::new(), InstallationCancelled, Some(q.refusal()))],
        "one installation_cancelled naming the rollback, no module status"
    );
    assert_eq!(
        *b.requests.lock().unwrap(),
        3,
        "the target set was asked for"
    );
    assert_eq!(repo.artifact_gets(), 0, "nothing resolved or downloaded");
    assert!(!b.path("modules-upgrade/modules-info.properties").exists());
    assert_eq!(record(&b), Some(q.clone()));

    // `upgrade --retry` installs it; the record stays until the host
    // finds the set active.
    let retried = b.local_upgrade(true).await;
    assert_eq!(retried["state"], "staged", "{retried}");
    assert_eq!(retried["trigger"], "retry");
    assert!(b.path("modules-upgrade/modules-info.properties").exists());
    assert_eq!(record(&b), Some(q.clone()));

    // A different set from the portal lifts the quarantine.
    let other = b.resync(objects(&[&alpha])).await;
    assert_eq!(other["state"], "staged", "{other}");
    assert_eq!(record(&b), None);
}

/// A span's fields by name, as recorded.
type SpanFields = BTreeMap<String, String>;

/// One span as opened: the thread that opened it, its name, its fields.
type SpanRecord = (std::thread::ThreadId, String, SpanFields);

/// Every span opened in this test binary, in order, and where the open
/// ones are (span ids are reused once a span closes).
#[derive(Default)]
struct Spans {
    opened: Vec<SpanRecord>,
    open: BTreeMap<u64, usize>,
}

/// The spans of this test binary, shared with the subscriber.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Spans>>);

struct Fields<'a>(&'a mut SpanFields);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name().to_owned();
        let mut log = self.0.lock().unwrap();
        let at = log.opened.len();
        log.open.insert(id.into_u64(), at);
        log.opened.push((std::thread::current().id(), name, fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut log = self.0.lock().unwrap();
        if let Some(&at) = log.open.get(&id.into_u64()) {
            values.record(&mut Fields(&mut log.opened[at].2));
        }
    }
}

impl SpanLog {
    /// The log of this test binary, installed as the global subscriber on
    /// first use. Not a thread's default subscriber: with one scoped
    /// subscriber, tracing caches a callsite that another test's thread
    /// meets first as uninteresting, and its spans are never seen.
    fn global() -> SpanLog {
        use tracing_subscriber::layer::SubscriberExt;
        static LOG: std::sync::OnceLock<SpanLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log = SpanLog::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(log.clone()),
            )
            .expect("no other global subscriber in this test binary");
            tracing::callsite::rebuild_interest_cache();
            log
        })
        .clone()
    }

    /// The fields of the spans named `name` that this thread opened (a
    /// test's box runs on the test's thread).
    fn named(&self, name: &str) -> Vec<SpanFields> {
        let here = std::thread::current().id();
        let log = self.0.lock().unwrap();
        log.opened
            .iter()
            .filter(|(thread, n, _)| *thread == here && n == name)
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }
}

#[actix_rt::test]
async fn a_synchronisation_has_a_span_with_its_trigger_and_target_set_and_each_handler_one() {
    let spans = SpanLog::global();
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[("lib/a.jar", b"dep a")], &[]);
    let b = start_box(&repo, objects(&[&alpha]), Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "staged");

    // The restart is asked for as the synchronisation ends: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spans.named("restarter.restart_to_apply").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarter never handled the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let module: Module = serde_json::from_value(alpha.object.clone()).unwrap();
    let syncs = spans.named("synchronisation");
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert_eq!(syncs[0]["trigger"], "FirstRun");
    assert_eq!(syncs[0]["target_set"], target_set_id(&[module]).to_string());
    for handler in [
        "portal_link.synchronise",
        "portal_link.get_env_modules_response",
        "downloader.resolve_set",
        "inventory.plan_sync",
        "downloader.download_set",
        "stager.stage_set",
        "restarter.restart_to_apply",
    ] {
        assert_eq!(spans.named(handler).len(), 1, "{handler}");
    }
    assert_eq!(spans.named("downloader.download_set")[0]["modules"], "1");
}

/// What the last check of the installed files cost, from this thread's
/// latest `inventory.plan_sync` span: (files read and hashed, files whose
/// digest came from the cache).
fn last_check(spans: &SpanLog) -> (String, String) {
    let plans = spans.named("inventory.plan_sync");
    let last = plans.last().expect("no plan");
    (last["hashed_files"].clone(), last["cached_files"].clone())
}

#[actix_rt::test]
async fn unchanged_installed_files_are_read_once_then_known_by_the_digest_cache() {
    use std::os::unix::fs::MetadataExt;
    let spans = SpanLog::global();
    let repo = Repo::start().await;
    let alpha = publish(
        &repo,
        "alpha",
        "1.0",
        &[("lib/a.jar", b"dep a")],
        &[("alpha/m.bin", b"model a")],
    );
    let b = start_box(&repo, objects(&[&alpha]), Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "staged");
    b.install_staged();
    let count = |hashed: &str, cached: &str| (hashed.to_owned(), cached.to_owned());

    // The stager noted the digests it computed: the first check reads
    // nothing, and the cache file records each installed file by inode.
    assert_eq!(b.resync(objects(&[&alpha])).await["state"], "up-to-date");
    assert_eq!(last_check(&spans), count("0", "3"));
    let cache: Value =
        serde_json::from_slice(&std::fs::read(b.path("state/digest-cache.json")).unwrap()).unwrap();
    let mut cached: Vec<(u64, String)> = cache["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ino"].as_u64().unwrap(),
                e["sha256"].as_str().unwrap().into(),
            )
        })
        .collect();
    cached.sort();
    let mut installed: Vec<(u64, String)> = [
        "modules/com.example-alpha-1.0.jar",
        "modules/lib/a.jar",
        "models/alpha/m.bin",
    ]
    .iter()
    .map(|f| {
        let path = b.path(f);
        let ino = std::fs::metadata(&path).unwrap().ino();
        (ino, sha256_hex(&std::fs::read(&path).unwrap()))
    })
    .collect();
    installed.sort();
    assert_eq!(cached, installed);

    // Without the cache (a box upgraded from a version that kept none),
    // each installed file is read once.
    std::fs::remove_file(b.path("state/digest-cache.json")).unwrap();
    assert_eq!(b.resync(objects(&[&alpha])).await["state"], "up-to-date");
    assert_eq!(last_check(&spans), count("3", "0"));

    // Nothing changed: nothing is read.
    assert_eq!(b.resync(objects(&[&alpha])).await["state"], "up-to-date");
    assert_eq!(last_check(&spans), count("0", "3"));

    // A new set that reuses them: they are hard-linked into it unread;
    // after the swap, active and backup share their inodes, and the new
    // module's file is known from the stager too.
    let beta = publish(&repo, "beta", "1.0", &[], &[]);
    assert_eq!(b.resync(objects(&[&alpha, &beta])).await["state"], "staged");
    assert_eq!(last_check(&spans), count("0", "3"));
    b.install_staged();
    assert_eq!(
        b.resync(objects(&[&alpha, &beta])).await["state"],
        "up-to-date"
    );
    assert_eq!(last_check(&spans), count("0", "7"));
}

/// A native plugin module `com.example:{artifact}:1.0` (packaging `so`)
/// published for `platform` only, with its digest in the `platforms` map
/// when `declared`, else in the classified artifact's `.sha256`.
fn publish_native(repo: &Repo, artifact: &str, platform: &str, declared: bool) -> (Value, Vec<u8>) {
    let lib = format!("native {artifact} for {platform}")
        .repeat(50)
        .into_bytes();
    let path = format!("com/example/{artifact}/1.0/{artifact}-1.0-{platform}.so");
    repo.put(&path, lib.clone(), !declared);
    let mut object = json!({
        "groupId": "com.example", "artifactId": artifact, "version": "1.0",
        "type": "component", "uploadTime": "2026-03-01T10:15:30", "packaging": "so",
    });
    if declared {
        object["platforms"] = json!({ platform: {"sha256": sha256_hex(&lib), "size": lib.len()} });
    }
    (object, lib)
}

#[actix_rt::test]
async fn a_native_module_is_fetched_with_this_platforms_classifier() {
    let platform = banalytics_upgrade_center::PLATFORM;
    for declared in [true, false] {
        let repo = Repo::start().await;
        let (object, lib) = publish_native(&repo, "camera", platform, declared);
        let b = start_box(&repo, vec![object], Options::default()).await;
        let sync = b.first_sync().await;
        assert_eq!(sync["state"], "staged", "{sync}");
        assert_eq!(
            std::fs::read(b.path("modules-upgrade/com.example-camera-1.0.so")).unwrap(),
            lib
        );
    }
}

#[actix_rt::test]
async fn a_module_built_only_for_another_platform_refuses_the_set_before_any_download() {
    for declared in [true, false] {
        let repo = Repo::start().await;
        let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
        let (object, _) = publish_native(&repo, "camera", "riscv64gc-unknown-linux-gnu", declared);
        let b = start_box(
            &repo,
            vec![alpha.object.clone(), object],
            Options::default(),
        )
        .await;
        let sync = b.first_sync().await;
        assert_eq!(sync["state"], "cancelled", "{sync}");
        let statuses = b.statuses();
        let last = statuses.last().unwrap();
        assert_eq!(last.1, InstallationCancelled);
        let message = last.2.as_deref().unwrap_or("");
        assert!(
            message.contains("com.example:camera:1.0")
                && message.contains(banalytics_upgrade_center::PLATFORM),
            "{message}"
        );
        assert_eq!(repo.artifact_gets(), 0, "no artifact was downloaded");
        assert!(!b.path("modules-upgrade/modules-info.properties").exists());
    }
}

#[actix_rt::test]
async fn a_native_core_is_staged_as_the_executable_banalytics_box() {
    use std::os::unix::fs::PermissionsExt;
    let platform = banalytics_upgrade_center::PLATFORM;
    let repo = Repo::start().await;
    let exe = b"#!/bin/sh\nexit 0\n".repeat(20);
    repo.put(
        &format!("com/banalytics/box/core/2.0/core-2.0-{platform}.bin"),
        exe.clone(),
        false,
    );
    let core = json!({
        "groupId": "com.banalytics.box", "artifactId": "core", "version": "2.0",
        "type": "core", "uploadTime": "2026-03-01T10:15:30", "packaging": "bin",
        "platforms": { platform: {"sha256": sha256_hex(&exe), "size": exe.len()} },
    });
    let b = start_box(&repo, vec![core], Options::default()).await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "staged", "{sync}");
    let staged = b.path("modules-upgrade/banalytics-box");
    assert_eq!(std::fs::read(&staged).unwrap(), exe);
    let mode = std::fs::metadata(&staged).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "{mode:o}");
}

#[actix_rt::test]
async fn a_set_the_preflight_refuses_is_cancelled_naming_the_set_and_nothing_is_staged() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[("lib/a.jar", b"dep a")], &[]);
    let seen = Arc::new(Mutex::new(None));
    let preflight: Preflight = {
        let seen = seen.clone();
        Arc::new(move |dir: &Path| {
            // The complete set: its files, its marker and its hash record.
            let info = std::fs::read_to_string(dir.join("modules-info.properties"))
                .map_err(|e| e.to_string())?;
            *seen.lock().unwrap() = Some((tree(dir), info));
            Err("component echo names kind \"sample-echo\", which the set does not provide".into())
        })
    };
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            preflight,
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let (files, info) = seen.lock().unwrap().clone().expect("the preflight ran");
    assert!(files.contains_key("lib/a.jar") && files.contains_key("modules-hashes.json"));
    assert!(
        info.contains("com.example\\:alpha\\:1.0=component\\:"),
        "{info}"
    );
    let last = b.statuses().last().cloned().unwrap();
    assert_eq!(last.1, InstallationCancelled);
    assert_eq!(
        last.2.as_deref(),
        Some(
            "target set com.example:alpha:1.0 refused before staging: component echo names kind \"sample-echo\", which the set does not provide; nothing was staged, the active set is unchanged"
        )
    );
    for gone in [
        "modules-upgrade",
        "modules-upgrade.tmp",
        "models-upgrade",
        "models-upgrade.tmp",
    ] {
        assert!(!b.path(gone).exists(), "{gone} is left");
    }
}

#[actix_rt::test]
async fn every_status_is_on_disk_under_its_seq_before_it_is_published() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let beta = publish(&repo, "beta", "1.0", &[], &[]);
    let b = start_box(&repo, objects(&[&alpha, &beta]), Options::default()).await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "staged", "{sync}");

    // No Portal Integration runs here, so nothing was sent and removed: the
    // outbox holds every status published, under the seq it carried.
    let published = b.statuses.lock().unwrap().clone();
    assert_eq!(published.len(), 4, "{published:?}");
    let layout = banalytics_home::Layout::new(b.home.path());
    let on_disk = banalytics_home::outbox::pending(&layout, usize::MAX).unwrap();
    assert_eq!(
        on_disk
            .iter()
            .map(|(seq, _)| Some(*seq))
            .collect::<Vec<_>>(),
        published.iter().map(|s| s.seq).collect::<Vec<_>>(),
        "published in the order appended, each with its number"
    );
    assert_eq!(on_disk[0].0, 1);
    for ((seq, entry), status) in on_disk.iter().zip(&published) {
        let mut stored: ModuleStatusUpdate = serde_json::from_slice(entry).unwrap();
        assert_eq!(stored.seq, None, "the number is the entry's name");
        stored.seq = Some(*seq);
        assert_eq!(&stored, status);
    }

    // A second synchronisation goes on numbering.
    let before = on_disk.last().unwrap().0;
    banalytics_home::outbox::remove_all(
        &layout,
        &on_disk.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
    )
    .unwrap();
    let sync = b.resync(vec![]).await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let cancelled = b.statuses.lock().unwrap().clone();
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0].status, InstallationCancelled);
    assert_eq!(cancelled[0].seq, Some(before + 1));
}

const MIB: u64 = 1024 * 1024;

/// The original portal: no `size`, no `sha256`; the repository has the
/// `.sha256` files. Alpha's main artifact is `len` bytes.
fn undeclared_alpha(repo: &Repo, len: usize) -> (Published, Vec<u8>) {
    let alpha = publish(repo, "alpha", "1.0", &[], &[]);
    let body = repo::body(len, 3);
    repo.put(&alpha.main_path, body.clone(), true);
    let mut published = alpha;
    let o = published.object.as_object_mut().unwrap();
    o.remove("size");
    o.remove("sha256");
    (published, body)
}

/// Files left in `modules-download/` (partials, meta files).
fn download_leftovers(b: &TestBox) -> Vec<String> {
    std::fs::read_dir(b.path("modules-download"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn an_undeclared_size_is_taken_from_head_and_refused_before_any_download() {
    let repo = Repo::start().await;
    let (alpha, _) = undeclared_alpha(&repo, 4 * MIB as usize);
    // Room for the margin and the reserve, not for 4 MiB more: without
    // the HEAD size the check would count 0 bytes and let it through.
    let free = 16 * MIB + MIB + 2 * MIB;
    let b = start_box(
        &repo,
        vec![alpha.object.clone()],
        Options {
            extra_config: "min_free_space = \"1 MiB\"\n".into(),
            space_probe: Some(Arc::new(move |_: &Path| Ok(free))),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let message = sync["result"].as_str().unwrap();
    let needed = 4 * MIB + 16 * MIB;
    assert!(
        message.contains(&format!(
            "{needed} bytes needed, {free} free, {MIB} to keep free"
        )),
        "{message}"
    );
    assert_eq!(repo.artifact_gets(), 0);
    assert!(repo
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.path == alpha.main_path));
    assert_eq!(b.statuses().last().unwrap().1, InstallationCancelled);
    assert!(download_leftovers(&b).is_empty());
}

#[actix_rt::test]
async fn a_download_that_would_go_below_min_free_space_stops_and_discards_its_partial() {
    let repo = Repo::start().await;
    let (alpha, _) = undeclared_alpha(&repo, 4 * MIB as usize);
    // The check before the download sees plenty; then recordings take the
    // disk: 1 MiB above the 8 MiB reserve, less what the partial holds.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let probe: SpaceProbe = Arc::new(move |path: &Path| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Ok(1 << 40);
        }
        let partial = path.with_file_name("com.example-alpha-1.0.jar.partial");
        let written = std::fs::metadata(partial).map_or(0, |m| m.len());
        Ok((9 * MIB).saturating_sub(written))
    });
    let b = start_box(
        &repo,
        vec![alpha.object.clone()],
        Options {
            extra_config: "min_free_space = \"8 MiB\"\n".into(),
            space_probe: Some(probe),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_download_error(
        &b,
        &sync,
        &format!("{} must stay free (min_free_space)", 8 * MIB),
    );
    let message = b.statuses().last().unwrap().2.clone().unwrap();
    assert!(message.contains("bytes free after"), "{message}");
    assert_eq!(repo.artifact_gets(), 1, "stopped, not retried");
    let written: u64 = message
        .split(" bytes written")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(
        written <= MIB && written > 0,
        "stopped within the last free MiB: {message}"
    );
    assert!(
        download_leftovers(&b).is_empty(),
        "{:?}",
        download_leftovers(&b)
    );
}

#[actix_rt::test]
async fn a_download_hitting_enospc_stops_and_discards_its_partial() {
    let repo = Repo::start().await;
    let (alpha, _) = undeclared_alpha(&repo, 2 * MIB as usize);
    // The partial is a link to /dev/full: every write fails with ENOSPC.
    let b = start_box(
        &repo,
        vec![alpha.object.clone()],
        Options {
            prepare: Some(|home: &Path| {
                let dir = home.join("modules-download");
                std::fs::create_dir_all(&dir).unwrap();
                std::os::unix::fs::symlink(
                    "/dev/full",
                    dir.join("com.example-alpha-1.0.jar.partial"),
                )
                .unwrap();
            }),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_download_error(&b, &sync, "the file system is full");
    assert_eq!(repo.artifact_gets(), 1, "stopped, not retried");
    assert!(
        download_leftovers(&b).is_empty(),
        "{:?}",
        download_leftovers(&b)
    );
}

#[actix_rt::test]
async fn an_archive_whose_declared_sizes_would_not_leave_min_free_space_is_not_extracted() {
    let repo = Repo::start().await;
    let big = repo::body(3 * MIB as usize, 5);
    let alpha = publish(&repo, "alpha", "1.0", &[("lib/big.bin", &big)], &[]);
    // Only the extraction scratch folders are short of space.
    let probe: SpaceProbe = Arc::new(|path: &Path| {
        Ok(if path.to_string_lossy().contains(".tmp.extract") {
            2 * MIB
        } else {
            1 << 40
        })
    });
    let b = start_box(
        &repo,
        vec![alpha.object.clone()],
        Options {
            extra_config: "min_free_space = \"1 MiB\"\n".into(),
            space_probe: Some(probe),
            ..Options::default()
        },
    )
    .await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "cancelled", "{sync}");
    let statuses = b.statuses();
    let message = statuses.last().unwrap().2.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "archive expands to {} bytes, {} free, {MIB} must stay free",
            3 * MIB,
            2 * MIB
        )),
        "{statuses:?}"
    );
    let left: Vec<String> = std::fs::read_dir(b.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp.extract"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(tree(&b.path("modules")).is_empty());
}

#[test]
fn min_free_space_is_a_size_and_a_bad_one_refuses_the_start() {
    let init = ComponentInit {
        name: "suc".into(),
        id: uuid_of(),
        home: std::env::temp_dir(),
        config: ConfigSection::from_snippet(
            "suc",
            "kind = \"software-upgrade-center\"\nrepository_url = \"http://127.0.0.1:9\"\nmin_free_space = \"lots\"\n",
        ),
    };
    let err = kind_with(banalytics_upgrade_center::accept_all())
        .create(&init)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("min_free_space"), "{err}");
}

#[test]
fn a_trust_metadata_url_that_only_looks_loopback_refuses_the_start_at_its_line() {
    let init = ComponentInit {
        name: "suc".into(),
        id: uuid_of(),
        home: std::env::temp_dir(),
        config: ConfigSection::from_snippet(
            "suc",
            "kind = \"software-upgrade-center\"\nrepository_url = \"http://127.0.0.1:9\"\ntrust_metadata_url = \"http://evil.example\\\\@127.0.0.1:9/.tuf\"\n",
        ),
    };
    let err = kind_with(banalytics_upgrade_center::accept_all())
        .create(&init)
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "<snippet>:4:22: trust_metadata_url = \"http://evil.example\\\\@127.0.0.1:9/.tuf\" is not accepted: plain http to \"evil.example\", which is not loopback; use https://, or set allow_insecure_http = true to accept the risk"
    );
}

#[actix_rt::test]
async fn a_resync_with_nothing_to_do_ends_with_installed_after_the_downloaded_statuses() {
    let repo = Repo::start().await;
    let (alpha, beta, b) = alpha_and_beta_installed(&repo).await;
    let sync = b.resync(objects(&[&alpha, &beta])).await;
    assert_eq!(sync["state"], "up-to-date", "{sync}");
    let statuses = b.statuses();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    for (module, status, _) in &statuses[..2] {
        assert_eq!(*status, Downloaded, "{module}: {statuses:?}");
    }
    assert_eq!(
        statuses[2],
        (
            String::new(),
            ModuleStatus::Installed,
            Some(NOTHING_CHANGED.to_owned())
        ),
        "the set's final status, module null, after the modules'"
    );
    // Durable, as every other status: in the outbox on disk.
    let kept = b.outbox();
    let last = kept.last().expect("statuses on disk");
    assert_eq!(
        (
            last.status,
            last.module.clone(),
            last.status_message.as_deref()
        ),
        (ModuleStatus::Installed, None, Some(NOTHING_CHANGED))
    );
}

#[actix_rt::test]
async fn on_probation_a_resync_with_nothing_to_do_leaves_the_final_status_to_the_verdict() {
    let repo = Repo::start().await;
    let (alpha, beta, b) = alpha_and_beta_installed(&repo).await;
    banalytics_home::swap::set_probation(
        &Layout::new(b.home.path()),
        &banalytics_home::swap::Probation {
            set: banalytics_home::ContentId::from_digest(banalytics_home::Sha256::of(b"new")),
            boot_attempts: 1,
            last_error: None,
            excused: Vec::new(),
        },
    )
    .unwrap();
    let sync = b.resync(objects(&[&alpha, &beta])).await;
    assert_eq!(sync["state"], "up-to-date", "{sync}");
    let statuses = b.statuses();
    assert_eq!(by_module(&statuses).len(), 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|(_, s, _)| *s == Downloaded),
        "no final status before the verdict: {statuses:?}"
    );
}

#[actix_rt::test]
async fn an_operator_upgrade_with_the_link_down_is_refused_at_once_and_the_portal_hears_nothing() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            installed: true,
            link_up: Some(false),
            ..Options::default()
        },
    )
    .await;
    let asked = std::time::Instant::now();
    let answer = b.ask_upgrade(7).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(answer.outcome, UpgradeOutcome::Refused, "{answer:?}");
    assert!(
        answer.message.contains("not connected to the portal")
            && answer.message.contains("nothing is reported to the portal"),
        "{}",
        answer.message
    );
    let sync = b.wait_sync_after(0).await;
    assert_eq!(sync["state"], "refused", "{sync}");
    assert_eq!(sync["trigger"], "local", "{sync}");
    assert!(
        sync["result"]
            .as_str()
            .is_some_and(|r| r.contains("not connected")),
        "{sync}"
    );
    // Nothing asked of the portal, nothing for it in memory or on disk.
    assert_eq!(*b.requests.lock().unwrap(), 0);
    assert!(b.statuses().is_empty(), "{:?}", b.statuses());
    assert!(b.outbox().is_empty());

    // With the link up, the same request starts a synchronisation.
    b.set_link(true).await;
    let answer = b.ask_upgrade(8).await;
    assert_eq!(answer.outcome, UpgradeOutcome::Started, "{answer:?}");
    assert!(
        answer.message.contains("synchronisation started"),
        "{answer:?}"
    );
}

#[actix_rt::test]
async fn an_operator_upgrade_without_portal_integration_is_refused_naming_it() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            installed: true,
            link_up: None,
            ..Options::default()
        },
    )
    .await;
    let answer = b.ask_upgrade(9).await;
    assert_eq!(answer.outcome, UpgradeOutcome::Refused, "{answer:?}");
    assert!(
        answer.message.contains("no Portal Integration runs"),
        "{}",
        answer.message
    );
    assert_eq!(*b.requests.lock().unwrap(), 0);
    assert!(b.outbox().is_empty());
}

#[actix_rt::test]
async fn a_first_run_waits_for_the_link_and_an_operator_upgrade_meanwhile_is_refused() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(
        &repo,
        objects(&[&alpha]),
        Options {
            link_up: Some(false),
            ..Options::default()
        },
    )
    .await;
    b.wait_state("waiting-for-link").await;
    assert_eq!(b.sync()["trigger"], "first-run");
    let answer = b.ask_upgrade(11).await;
    assert_eq!(answer.outcome, UpgradeOutcome::Refused, "{answer:?}");
    assert!(
        answer
            .message
            .contains("the first-run synchronisation waits for it"),
        "{}",
        answer.message
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*b.requests.lock().unwrap(), 0, "nothing asked while down");
    assert!(b.statuses().is_empty());

    b.set_link(true).await;
    let sync = b.first_sync().await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(*b.requests.lock().unwrap(), 1);
}

#[actix_rt::test]
async fn an_upgrade_answers_started_and_one_while_it_runs_answers_joined() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = std::rc::Rc::new(
        start_box(
            &repo,
            objects(&[&alpha]),
            Options {
                installed: true,
                portal_delay: Duration::from_millis(500),
                ..Options::default()
            },
        )
        .await,
    );
    let first = {
        let b = b.clone();
        actix_rt::spawn(async move { b.ask_upgrade(21).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let joined = b.ask_upgrade(22).await;
    assert_eq!(joined.outcome, UpgradeOutcome::Joined, "{joined:?}");
    assert!(
        joined.message.contains("joined") && joined.message.contains("trigger: local"),
        "{}",
        joined.message
    );
    let started = first.await.unwrap();
    assert_eq!(started.outcome, UpgradeOutcome::Started, "{started:?}");
    let id = target_set_id(&[serde_json::from_value::<Module>(alpha.object.clone()).unwrap()]);
    assert!(
        started.message.contains(&id.to_string()),
        "{}",
        started.message
    );
    let sync = b.wait_sync_after(0).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(sync["requests"], json!([21, 22]), "{sync}");
    assert_eq!(sync["started_by"], 21, "{sync}");
    assert_eq!(*b.requests.lock().unwrap(), 1);
}

/// A box with `apply = "approval"` whose first synchronisation staged
/// `alpha`, which waits for approval.
async fn staged_for_approval(repo: &Repo, alpha: &Published) -> TestBox {
    let b = start_box(
        repo,
        objects(&[alpha]),
        Options {
            extra_config: "apply = \"approval\"".into(),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(b.first_sync().await["state"], "staged");
    b
}

#[actix_rt::test]
async fn an_upgrade_for_the_staged_set_waiting_for_approval_says_it_waits_and_for_what() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = staged_for_approval(&repo, &alpha).await;
    let answer = b.ask_upgrade(31).await;
    assert_eq!(answer.outcome, UpgradeOutcome::StagedAlready, "{answer:?}");
    assert!(
        answer.message.contains("staged already")
            && answer.message.contains("waits for approval")
            && answer.message.contains("banalytics-box approve"),
        "{}",
        answer.message
    );
}

#[actix_rt::test]
async fn an_upgrade_for_the_staged_set_whose_restart_busy_leases_defer_says_so() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = start_box(&repo, objects(&[&alpha]), Options::default()).await;
    assert_eq!(b.first_sync().await["state"], "staged");
    // The host defers the restart for a busy lease, as it says on the bus.
    let until_ms = banalytics_sdk::status::now_ms() + 60_000;
    b.bus
        .publish(banalytics_messages::upgrade::RestartDeferred {
            holders: vec!["probe/alarm-clip (recording)".into()],
            until_ms,
        })
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.sync()["waits_for"].is_null() {
        assert!(std::time::Instant::now() < deadline, "{}", b.sync());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let since = banalytics_sdk::status::now_ms();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let answer = b.ask_upgrade(41).await;
    assert_eq!(answer.outcome, UpgradeOutcome::StagedAlready, "{answer:?}");
    assert!(
        answer.message.contains("busy components") && answer.message.contains("probe/alarm-clip"),
        "{}",
        answer.message
    );
    let sync = b.wait_sync_after(since + 1).await;
    assert_eq!(sync["state"], "staged", "{sync}");
    assert_eq!(
        sync["result"], "the target set is staged already",
        "not staged again: {sync}"
    );
    assert!(
        sync["waits_for"]
            .as_str()
            .is_some_and(|w| w.contains("busy components")),
        "{sync}"
    );
}

#[actix_rt::test]
async fn a_staged_set_that_waits_is_discarded_when_the_portal_assigns_the_installed_set_again() {
    let repo = Repo::start().await;
    let alpha = publish(&repo, "alpha", "1.0", &[], &[]);
    let b = staged_for_approval(&repo, &alpha).await;
    b.install_staged();
    let _ = std::fs::remove_file(b.path("state/apply-hold.json"));
    // alpha 1.1 is staged and waits for approval...
    let alpha2 = publish(&repo, "alpha", "1.1", &[], &[]);
    assert_eq!(b.resync(objects(&[&alpha2])).await["state"], "staged");
    assert!(b.path("modules-upgrade/modules-info.properties").exists());
    assert!(b.path("state/apply-hold.json").exists());
    // ...when the portal takes it back: the installed set is the target.
    let sync = b.resync(objects(&[&alpha])).await;
    assert_eq!(sync["state"], "up-to-date", "{sync}");
    assert!(
        !b.path("modules-upgrade/modules-info.properties").exists(),
        "the staged set is gone"
    );
    assert!(
        !b.path("state/apply-hold.json").exists(),
        "and its hold with it"
    );
    assert_eq!(
        b.statuses().last().map(|s| (s.1, s.2.clone())),
        Some((ModuleStatus::Installed, Some(NOTHING_CHANGED.to_owned())))
    );
    // Nothing waits any more: an approval restarts nothing.
    let mut handled = b
        .bus
        .subscribe::<banalytics_messages::upgrade::ApprovalHandled>();
    b.bus
        .publish(banalytics_messages::upgrade::ApproveStagedSet { by: "cli".into() })
        .await;
    let handled = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("answered")
        .expect("bus");
    assert!(!handled.restarting, "{handled:?}");
}
