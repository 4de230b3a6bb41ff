//! Each reader of a home file, given a file of a newer format than it
//! knows: it says so (a typed outcome), acts on nothing, and leaves the file
//! byte for byte as it was, whatever the caller asks next (write, remove,
//! apply, rollback, commit).

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{fs, path::Path};

use banalytics_home::{
    format::{self, in_io, NewerFormat},
    hold::{self, Hold},
    outbox, quarantine,
    record::SetRecord,
    running, swap, Layout, SwapError,
};

fn home() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    (dir, layout)
}

/// Writes `path` as a JSON record of format `known + 1`, in a shape no
/// reader of format `known` knows; returns its bytes.
fn raise(path: &Path, known: u32) -> Vec<u8> {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = format!(
        "{{\"format\": {}, \"modules\": \"a shape of the future\"}}\n",
        known + 1
    )
    .into_bytes();
    fs::write(path, &bytes).unwrap();
    bytes
}

fn newer(path: &Path, known: u32) -> NewerFormat {
    NewerFormat {
        path: path.to_owned(),
        format: known + 1,
        known,
    }
}

fn set(dir: &Path, line: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("modules-info.properties"), line).unwrap();
}

#[test]
fn a_newer_apply_hold_holds_the_staged_set_and_stays() {
    let (_dir, layout) = home();
    let path = layout.state().join(hold::HOLD_FILE);
    let bytes = raise(&path, format::APPLY_HOLD);
    let err = hold::read(&layout).unwrap_err();
    assert_eq!(in_io(&err), Some(&newer(&path, format::APPLY_HOLD)));
    set(&layout.upgrade_dir(), "g\\:a\\:1=component\\:0\n");
    assert!(hold::of_staged(&layout).is_some(), "the staged set is held");
    assert_eq!(swap::apply(&layout).unwrap(), swap::Applied::Held);
    let replacement = Hold::new(vec!["g:a:1".parse().unwrap()], None, "a window".into());
    assert!(in_io(&hold::write(&layout, &replacement).unwrap_err()).is_some());
    assert!(in_io(&hold::lift(&layout).unwrap_err()).is_some());
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_newer_quarantine_refuses_to_be_replaced_or_lifted() {
    let (_dir, layout) = home();
    let path = layout.state().join(quarantine::QUARANTINE_FILE);
    let bytes = raise(&path, format::QUARANTINED_SET);
    let err = quarantine::read(&layout).unwrap_err();
    assert_eq!(in_io(&err), Some(&newer(&path, format::QUARANTINED_SET)));
    let q = quarantine::of_set(&layout.modules(), "start 3 failed");
    assert!(in_io(&quarantine::write(&layout, &q).unwrap_err()).is_some());
    assert!(in_io(&quarantine::clear(&layout).unwrap_err()).is_some());
    assert!(in_io(&quarantine::lift_if_active(&layout).unwrap_err()).is_some());
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_newer_running_core_record_is_not_read_nor_replaced() {
    let (_dir, layout) = home();
    let path = layout.state().join(running::RUNNING_CORE_FILE);
    let bytes = raise(&path, format::RUNNING_CORE);
    let err = running::read(&layout).unwrap_err();
    assert_eq!(in_io(&err), Some(&newer(&path, format::RUNNING_CORE)));
    let core = running::RunningCore {
        version: "1".into(),
        sha256: "00".repeat(32).parse().unwrap(),
        origin: running::CoreOrigin::Launcher,
        path: "/bin/true".into(),
        pid: 1,
        launcher_handshake: 1,
        fallback: None,
    };
    assert!(in_io(&running::write(&layout, &core).unwrap_err()).is_some());
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn records_this_core_writes_carry_their_format_and_read_back() {
    let (_dir, layout) = home();
    let hold = {
        let modules: Vec<banalytics_home::coords::Coords> = vec!["g:a:1".parse().unwrap()];
        let id = banalytics_home::TargetSetId::of(&modules);
        Hold::new(modules, Some(id), "a window".into())
    };
    hold::write(&layout, &hold).unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.state().join(hold::HOLD_FILE)).unwrap()).unwrap();
    assert_eq!(doc["format"], format::APPLY_HOLD);
    assert_eq!(hold::read(&layout).unwrap(), Some(hold));
    // A record of a core before the numbers: format 1.
    fs::write(
        layout.state().join(hold::HOLD_FILE),
        br#"{"modules": ["g:a:1"], "set_id": null, "waits_for": "w"}"#,
    )
    .unwrap();
    assert_eq!(hold::read(&layout).unwrap().unwrap().waits_for, "w");
}

fn swap_newer(err: SwapError) -> NewerFormat {
    match err {
        SwapError::NewerFormat(n) => n,
        other => panic!("not a newer format: {other}"),
    }
}

#[test]
fn a_newer_probation_record_stops_every_swap_and_the_commit() {
    let (dir, layout) = home();
    let path = dir.path().join(swap::PROBATION);
    let bytes = raise(&path, format::PROBATION);
    set(&layout.modules(), "g\\:a\\:2=component\\:0\n");
    set(&layout.upgrade_dir(), "g\\:a\\:3=component\\:0\n");
    set(&layout.backup(), "g\\:a\\:1=component\\:0\n");
    let expected = newer(&path, format::PROBATION);
    assert_eq!(swap_newer(swap::probation(&layout).unwrap_err()), expected);
    assert_eq!(swap::newer_record(&layout), Some(expected.clone()));
    assert_eq!(swap_newer(swap::apply(&layout).unwrap_err()), expected);
    assert_eq!(swap_newer(swap::rollback(&layout).unwrap_err()), expected);
    assert_eq!(swap_newer(swap::commit(&layout).unwrap_err()), expected);
    assert_eq!(swap_newer(swap::count_boot(&layout).unwrap_err()), expected);
    assert!(!dir.path().join(swap::JOURNAL).exists(), "no swap began");
    assert_eq!(fs::read(&path).unwrap(), bytes);
    let report = swap::report(&layout);
    assert_eq!(
        report.installed,
        ["g:a:2".parse().unwrap()],
        "the folders are as they were"
    );
    assert_eq!(report.probation, None);
}

#[test]
fn a_newer_swap_journal_is_not_run_and_stays() {
    let (dir, layout) = home();
    let path = dir.path().join(swap::JOURNAL);
    let bytes = raise(&path, format::SWAP_JOURNAL);
    set(&layout.modules(), "g\\:a\\:2=component\\:0\n");
    set(&layout.upgrade_dir(), "g\\:a\\:3=component\\:0\n");
    let expected = newer(&path, format::SWAP_JOURNAL);
    assert_eq!(swap::newer_record(&layout), Some(expected.clone()));
    assert_eq!(swap_newer(swap::recover(&layout).unwrap_err()), expected);
    assert_eq!(swap_newer(swap::apply(&layout).unwrap_err()), expected);
    assert_eq!(fs::read(&path).unwrap(), bytes);
    let report = swap::report(&layout);
    assert_eq!(report.installed, ["g:a:2".parse().unwrap()]);
    assert_eq!(report.staged, Some(vec!["g:a:3".parse().unwrap()]));
    assert_eq!(report.interrupted, None);
}

#[test]
fn a_newer_set_record_is_an_error_or_taken_for_none() {
    let (_dir, layout) = home();
    let path = layout.modules().join(banalytics_home::record::RECORD_FILE);
    let bytes = raise(&path, format::SET_RECORD);
    let err = SetRecord::load(&layout.modules()).unwrap_err();
    assert_eq!(in_io(&err), Some(&newer(&path, format::SET_RECORD)));
    assert_eq!(
        SetRecord::load_or_none_if_newer(&layout.modules()).unwrap(),
        None
    );
    assert!(swap::verify(&layout).is_err());
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_newer_outbox_is_neither_read_written_nor_emptied() {
    let (_dir, layout) = home();
    let seq = outbox::append(&layout, b"{\"a\": 1}").unwrap();
    let dir = layout.portal_outbox();
    assert_eq!(
        fs::read_to_string(dir.join(format::MARKER)).unwrap(),
        "1\n",
        "marked at the first change"
    );
    fs::write(
        dir.join(format::MARKER),
        format!("{}\n", format::PORTAL_OUTBOX + 1),
    )
    .unwrap();
    let listing = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(&dir);
    let is_newer = |e: outbox::OutboxError| matches!(e, outbox::OutboxError::NewerFormat(n) if n == newer(&dir, format::PORTAL_OUTBOX));
    assert!(is_newer(outbox::append(&layout, b"{}").unwrap_err()));
    assert!(is_newer(outbox::pending(&layout, 10).unwrap_err()));
    assert!(is_newer(outbox::count(&layout).unwrap_err()));
    assert!(is_newer(outbox::id(&layout).unwrap_err()));
    assert!(is_newer(outbox::remove(&layout, seq).unwrap_err()));
    assert!(is_newer(outbox::pend_verdict(&layout, b"{}").unwrap_err()));
    assert_eq!(listing(&dir), before);
    assert_eq!(
        format::newer_files(layout.home()),
        vec![newer(&dir, format::PORTAL_OUTBOX)]
    );
}
