//! The store's behaviour, as functions that run on any database: each
//! takes the URL of a FRESH database (no tables yet), opens it (which
//! applies the migrations), and panics when the store misbehaves. The
//! crate's tests run them on SQLite; the PostgreSQL harness runs the same
//! functions on a server it starts. [`run_all`] runs every one, each on a
//! database the caller's `fresh` makes.
//!
//! This API is stable: a new check is a new function, added to [`ALL`].

use std::sync::Arc;

use serde_json::json;

use crate::{
    db::{self, stmt, Db},
    history, import,
    registry::{Admission, Registry},
    rollout::{BoxState, Rollout, RolloutSpec, RolloutState, WaveSize},
    rollouts::{self, Rollouts},
    store::{self, Store},
    ModuleObject, ModuleType, StatusRecord,
};

/// One check: its name and the function.
pub type Check = (&'static str, fn(&str));

/// Every check.
pub const ALL: &[Check] = &[
    ("modules_and_assignments", modules_and_assignments),
    ("registrations", registrations),
    ("durable_status_recorded_once", durable_status_recorded_once),
    (
        "status_batch_whole_or_nothing",
        status_batch_whole_or_nothing,
    ),
    ("rollout_rows_round_trip", rollout_rows_round_trip),
    ("environments_by_last_verdict", environments_by_last_verdict),
    (
        "retention_deletes_old_statuses",
        retention_deletes_old_statuses,
    ),
    (
        "import_writes_nothing_over_state",
        import_writes_nothing_over_state,
    ),
];

/// Runs every check of [`ALL`], each on the database whose URL `fresh`
/// makes for it.
pub fn run_all(mut fresh: impl FnMut(&str) -> String) {
    for (name, check) in ALL {
        let url = fresh(name);
        check(&url);
    }
}

fn open(url: &str) -> Arc<Db> {
    Arc::new(Db::open(url).unwrap_or_else(|e| panic!("opening {}: {e}", db::redact(url))))
}

fn module(coordinates: &str) -> ModuleObject {
    let mut parts = coordinates.split(':');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    ModuleObject {
        group_id: next(),
        artifact_id: next(),
        version: next(),
        module_type: ModuleType::Component,
        upload_time: "2026-01-01T00:00:00".into(),
        sha256: "ab".repeat(32),
        size: 6,
        packaging: "jar".into(),
        dependencies: None,
        model: None,
        platforms: None,
        launcher_handshakes: None,
    }
}

fn status(env: &str, status: &str, seq: Option<u64>, received_ms: u64) -> StatusRecord {
    StatusRecord {
        environment_uuid: json!(env),
        module: serde_json::Value::Null,
        status: json!(status),
        status_message: serde_json::Value::Null,
        seq,
        outbox_id: seq.map(|_| "outbox-1".to_owned()),
        received_ms: Some(received_ms),
        served_set: None,
    }
}

/// Module records, the publish order, an assignment replacing the whole
/// set, a raw set and its replacement, and a refused set changing nothing.
pub fn modules_and_assignments(url: &str) {
    let db = open(url);
    let dir = tempfile::tempdir().expect("temporary folder");
    db.write(vec![
        store::upsert_module(&module("com.example:a:1")),
        store::upsert_module(&module("com.example:a:2")),
    ])
    .unwrap();
    let store = Store::open(db.clone(), dir.path().join("repo")).unwrap();
    assert_eq!(store.modules().len(), 2);
    let set = store
        .assign(
            "env-1",
            &["com.example:a:2".into(), "com.example:a:1".into()],
        )
        .unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(
        store.assigned("env-1"),
        ["com.example:a:2", "com.example:a:1"]
    );
    let target = store.target_set("env-1");
    assert_eq!(target[0]["version"], "2");
    assert!(store.assign("env-1", &["com.example:a:9".into()]).is_err());
    assert_eq!(
        store.assigned("env-1").len(),
        2,
        "a refused set changes nothing"
    );
    store.assign("env-1", &["com.example:a:1".into()]).unwrap();
    assert_eq!(store.assigned("env-1"), ["com.example:a:1"]);
    store
        .assign_raw(
            "env-2",
            vec![json!({"groupId": "g", "artifactId": "x", "version": "0"})],
        )
        .unwrap();
    assert_eq!(store.assignments()["env-2"], ["g:x:0 (raw)"]);
    assert_eq!(store.target_set("env-2")[0]["artifactId"], "x");
    store.assign("env-2", &["com.example:a:2".into()]).unwrap();
    assert_eq!(store.target_set("env-2")[0]["version"], "2");
    // Published again, 1 moves after 2 in the publish order.
    db.write(vec![store::upsert_module(&module("com.example:a:1"))])
        .unwrap();
    let order: Vec<String> = db
        .rows(stmt!("SELECT version FROM modules ORDER BY published_seq"))
        .unwrap()
        .iter()
        .map(|r| db::text(r, 0))
        .collect();
    assert_eq!(order, ["2", "1"]);
}

/// Registration, a refused second one, the secret's rotation, revocation.
pub fn registrations(url: &str) {
    let db = open(url);
    let r = Registry::open(db.clone());
    let reg = r.add("kitchen", Some("env-1")).unwrap();
    assert!(r.add("again", Some("env-1")).is_err());
    assert_eq!(
        r.admit("env-1", Some(&reg.environment_secret)),
        Admission::Admitted
    );
    assert_eq!(r.admit("env-1", Some("guess")), Admission::WrongSecret);
    let frame: serde_json::Value = serde_json::from_str(&r.rotate("env-1").unwrap()).unwrap();
    let new = frame["environmentSecret"].as_str().unwrap().to_owned();
    assert!(r.list()[0].rotation_pending);
    assert_eq!(r.admit("env-1", Some(&new)), Admission::Admitted);
    assert_eq!(
        r.admit("env-1", Some(&reg.environment_secret)),
        Admission::WrongSecret
    );
    assert!(r.revoke("env-1").unwrap());
    assert!(!r.revoke("env-9").unwrap());
    assert_eq!(r.admit("env-1", Some(&new)), Admission::Revoked);
    let listed = Registry::open(db).list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked && listed[0].name == "kitchen");
}

/// A durable status is recorded once per environment, outbox and `seq`;
/// a status without `seq` each time; the summary counts both.
pub fn durable_status_recorded_once(url: &str) {
    let db = open(url);
    let s = status("env-1", "downloading", Some(7), 1_000);
    assert!(db.write(history::record_stmts("env-1", &s)).unwrap());
    assert!(history::is_recorded(&db, "env-1", "outbox-1", 7).unwrap());
    assert!(
        !db.write(history::record_stmts("env-1", &s)).unwrap(),
        "the second insert changes nothing and the write is undone"
    );
    let mut other_outbox = s.clone();
    other_outbox.outbox_id = Some("outbox-2".into());
    assert!(db
        .write(history::record_stmts("env-1", &other_outbox))
        .unwrap());
    let plain = status("env-1", "installed", None, 2_000);
    assert!(db.write(history::record_stmts("env-1", &plain)).unwrap());
    assert!(db.write(history::record_stmts("env-1", &plain)).unwrap());
    db.write(vec![history::duplicate_stmt("env-1", 3_000)])
        .unwrap();
    let h = history::of(&db, "env-1").unwrap();
    let seen: Vec<&str> = h
        .statuses
        .iter()
        .filter_map(|s| s.status.as_str())
        .collect();
    assert_eq!(
        seen,
        ["downloading", "downloading", "installed", "installed"]
    );
    assert_eq!((h.dropped, h.duplicates), (0, 1));
    assert_eq!(history::count(&db).unwrap(), 4);
}

/// A batch of statuses from many environments lands whole in one
/// transaction: each durable one once (a repeat within the batch or of an
/// earlier batch is a duplicate), each environment's summary counting its
/// part; a batch whose transaction fails writes nothing.
pub fn status_batch_whole_or_nothing(url: &str) {
    let db = open(url);
    let batch: Vec<(String, StatusRecord)> = (0..40)
        .flat_map(|i| {
            let env = format!("env-{i:02}");
            [
                (env.clone(), status(&env, "downloading", Some(1), 1_000)),
                (env.clone(), status(&env, "installed", Some(2), 1_001)),
            ]
        })
        .chain([(
            "env-00".to_owned(),
            status("env-00", "installed", Some(2), 1_002),
        )])
        .collect();
    let outcomes = history::record(&db, &batch, 2_000).unwrap();
    let duplicates: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == history::Recorded::Duplicate)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(duplicates, [80], "the repeat within the batch");
    assert_eq!(history::count(&db).unwrap(), 80);
    let h = history::of(&db, "env-00").unwrap();
    assert_eq!((h.statuses.len(), h.duplicates), (2, 1));
    let last = history::last_statuses(&db, Some("installed"), 100).unwrap();
    assert_eq!(last.len(), 40, "every environment's verdict");
    assert!(last.iter().all(|l| l.status == "installed"));

    // The same statuses again, with a new one: only the new one lands.
    let again: Vec<(String, StatusRecord)> = batch[..4]
        .iter()
        .cloned()
        .chain([(
            "env-41".to_owned(),
            status("env-41", "downloading", Some(1), 3_000),
        )])
        .collect();
    let outcomes = history::record(&db, &again, 3_000).unwrap();
    assert_eq!(
        outcomes,
        [
            history::Recorded::Duplicate,
            history::Recorded::Duplicate,
            history::Recorded::Duplicate,
            history::Recorded::Duplicate,
            history::Recorded::New
        ]
    );
    assert_eq!(history::count(&db).unwrap(), 81);

    // A transaction that fails after the batch's rows were inserted (here:
    // the summaries' table is gone) leaves none of them.
    db.write(vec![stmt!("DROP TABLE env_status")]).unwrap();
    let failing = vec![(
        "env-50".to_owned(),
        status("env-50", "installed", Some(1), 4_000),
    )];
    assert!(history::record(&db, &failing, 4_000).is_err());
    assert_eq!(history::count(&db).unwrap(), 81, "nothing of it written");
}

/// A rollout's rows, written as it moves, read back equal; a restarted
/// store continues it.
pub fn rollout_rows_round_trip(url: &str) {
    let db = open(url);
    let envs: Vec<String> = (0..12).map(|i| format!("env-{i:02}")).collect();
    let mut r = Rollout::new(
        1,
        RolloutSpec {
            name: "v2".into(),
            target: vec!["com.example:a:2".into()],
            environments: envs,
            waves: vec![WaveSize::Boxes(1), WaveSize::Rest],
            failure_threshold_percent: 50,
            report_timeout_ms: 60_000,
        },
        5,
    );
    r.start(5);
    db.write(rollouts::new_rollout_stmts(&mut r)).unwrap();
    let actions = r.status_reported("env-00", "installed", None, 10);
    assert_eq!(actions.len(), 11);
    r.status_reported("env-01", "downloading", Some("50%"), 11);
    r.status_reported("env-02", "download_error", Some("disk full"), 12);
    let rows = rollouts::rollout_stmts(&mut r);
    assert_eq!(
        rows.len(),
        1 + 1,
        "the rollout's row and one statement for its 12 changed boxes"
    );
    db.write(rows).unwrap();
    assert_eq!(
        rollouts::rollout_stmts(&mut r).len(),
        1,
        "nothing changed since"
    );
    let loaded = Rollouts::open(db.clone()).unwrap().get(1).unwrap();
    assert_eq!(loaded, r);
    assert_eq!(loaded.current_wave, 1);
    assert_eq!(loaded.state, RolloutState::Running);
    assert!(matches!(
        loaded.box_state("env-01"),
        Some(BoxState::Assigned { progress: Some(p), .. }) if p == "downloading: 50%"
    ));
    let per_state: Vec<(String, i64)> = db
        .rows(stmt!(
            "SELECT state, COUNT(*) FROM rollout_boxes WHERE rollout_id = $1 GROUP BY state ORDER BY state",
            1u64
        ))
        .unwrap()
        .iter()
        .map(|r| (db::text(r, 0), db::int(r, 1)))
        .collect();
    assert_eq!(
        per_state,
        [
            ("assigned".into(), 10),
            ("failed".into(), 1),
            ("installed".into(), 1)
        ]
    );
}

/// The environments page's query: the environments whose last verdict is
/// a failure, newest first, without reading the history.
pub fn environments_by_last_verdict(url: &str) {
    let db = open(url);
    let mut stmts = Vec::new();
    for (i, verdict) in [
        "installed",
        "download_error",
        "installed",
        "installation_cancelled",
        "download_error",
    ]
    .iter()
    .enumerate()
    {
        let env = format!("env-{i}");
        let t = 1_000 * i as u64;
        stmts.extend(history::record_stmts(&env, &status(&env, verdict, None, t)));
        // A progress status after the verdict keeps the verdict.
        stmts.extend(history::record_stmts(
            &env,
            &status(&env, "downloaded", None, t + 1),
        ));
    }
    db.write(stmts).unwrap();
    let failed = history::last_statuses(&db, Some("download_error"), 10).unwrap();
    let envs: Vec<&str> = failed.iter().map(|l| l.env.as_str()).collect();
    assert_eq!(envs, ["env-4", "env-1"]);
    assert_eq!(failed[0].status, "downloaded");
    assert_eq!(history::last_statuses(&db, None, 3).unwrap().len(), 3);
}

/// Statuses older than the retention are deleted, newer ones kept.
pub fn retention_deletes_old_statuses(url: &str) {
    let db = open(url);
    let day = 24 * 3600 * 1000;
    let mut stmts = Vec::new();
    for (i, t) in [day, 5 * day, 9 * day].into_iter().enumerate() {
        stmts.extend(history::record_stmts(
            "env-1",
            &status("env-1", "downloading", Some(i as u64), t),
        ));
    }
    db.write(stmts).unwrap();
    let retention: history::Retention = "3d".parse().unwrap();
    assert_eq!(history::purge(&db, retention, 10 * day).unwrap(), 2);
    let h = history::of(&db, "env-1").unwrap();
    assert_eq!(h.statuses.len(), 1);
    assert_eq!(h.dropped, 2, "deleted statuses are counted as dropped");
}

/// Files of an older portal beside a database that has state are not
/// imported (and left where they are).
pub fn import_writes_nothing_over_state(url: &str) {
    let db = open(url);
    db.write(vec![store::upsert_module(&module("com.example:a:1"))])
        .unwrap();
    let dir = tempfile::tempdir().expect("temporary folder");
    let state = dir.path().join("portal-state.json");
    std::fs::write(
        &state,
        json!({"modules": {"com.example:b:1": module("com.example:b:1")}}).to_string(),
    )
    .unwrap();
    assert_eq!(import::import_once(&db, dir.path(), &state).unwrap(), None);
    assert!(state.exists());
    let store = Store::open(db, dir.path().join("repo")).unwrap();
    assert_eq!(store.modules().len(), 1);
}
