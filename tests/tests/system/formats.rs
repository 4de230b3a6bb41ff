//! On-disk formats carry versions: a rollback puts an older core back on a
//! home a newer core wrote. Here a real box installs two sets (so that the
//! TUF store, the records of the active and the backup set, the outbox and
//! the host's records exist), stops, and each file it writes under its home
//! is given a format one above the one this core knows, as a newer core
//! would write it. The box must start, stay reachable, name the file in
//! `status`, and leave it byte for byte as it was.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, ManagedBox, PortalApi},
    DEADLINE,
};
use serde_json::Value;

use crate::tuf::{coords, set_v2, sorted, sync, verdict, CONVERGE};

/// How a file carries its format (docs/contracts.md, section 1).
#[derive(Clone, Copy)]
enum Carrier {
    /// A JSON document's top-level `format` field (absent: 1).
    Json,
    /// The folder's marker file `format` (absent: 1).
    Marker,
    /// A text file's first line `format N` (absent: 1).
    Line,
}

/// Every versioned file the box writes under its home, and the format this
/// core writes (1 for all of them today).
const FILES: &[(&str, Carrier)] = &[
    ("state/apply-hold.json", Carrier::Json),
    ("state/running-core.json", Carrier::Json),
    ("state/quarantined-set.json", Carrier::Json),
    ("state/digest-cache.json", Carrier::Json),
    ("state/component-ids.json", Carrier::Json),
    ("state/launcher-identity.json", Carrier::Json),
    ("state/failing-before-upgrade.json", Carrier::Json),
    ("modules-swap.journal", Carrier::Json),
    ("modules-probation.json", Carrier::Json),
    ("modules/modules-hashes.json", Carrier::Json),
    ("modules-upgrade/modules-hashes.json", Carrier::Json),
    ("modules-backup/modules-hashes.json", Carrier::Json),
    ("state/portal-outbox", Carrier::Marker),
    ("state/tuf", Carrier::Marker),
    ("state/console-token", Carrier::Line),
];

/// The format this core knows of every file in [`FILES`].
const KNOWN: u64 = 1;

/// Files under `state/` and in the home's root that carry no format of
/// their own: locks and sockets (no content), the contract-fixed files of
/// the original box, and the operator's.
const UNVERSIONED: &[&str] = &[
    "state/host.lock",
    "state/control.sock",
    "state/notify-relay.sock",
];

/// How long `status` must keep answering after the first answer.
const STAYS_UP: Duration = Duration::from_secs(3);

/// Files whose newer format turns synchronisations off: an operator's
/// synchronisation ends refused, naming the file, and changes nothing.
const REFUSES_SYNC: &[&str] = &[
    "state/quarantined-set.json",
    "modules-swap.journal",
    "modules-probation.json",
    "state/tuf",
];

/// Files whose newer format leaves synchronisations working (the feature
/// off is a hold, a cache or the outbox): one ends up to date.
const SYNC_RUNS_ON: &[&str] = &[
    "state/apply-hold.json",
    "state/digest-cache.json",
    "state/portal-outbox",
];

/// The file of `rel` that holds the format: the JSON file, or the marker.
fn carrier_file(home: &Path, rel: &str, carrier: Carrier) -> PathBuf {
    match carrier {
        Carrier::Json | Carrier::Line => home.join(rel),
        Carrier::Marker => home.join(rel).join("format"),
    }
}

/// Writes `rel` as a newer core would: the same content with its format
/// raised by one, or, where this box wrote none now, a record of the next
/// format. Returns the bytes written.
fn raise(home: &Path, rel: &str, carrier: Carrier) -> Result<Vec<u8>> {
    let path = carrier_file(home, rel, carrier);
    std::fs::create_dir_all(path.parent().unwrap())?;
    let bytes = match carrier {
        Carrier::Marker => format!("{}\n", KNOWN + 1).into_bytes(),
        Carrier::Line => {
            let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "a newer token\n".into());
            format!("format {}\n{old}", KNOWN + 1).into_bytes()
        }
        Carrier::Json => {
            let mut doc = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                    .with_context(|| format!("{}", path.display()))?,
                Err(_) => serde_json::json!({ "written_by": "a newer core" }),
            };
            match doc.as_object_mut() {
                Some(object) => {
                    object.insert("format".into(), (KNOWN + 1).into());
                }
                // A format-1 list: a newer one is an object.
                None => doc = serde_json::json!({ "format": KNOWN + 1, "entries": doc }),
            }
            serde_json::to_vec_pretty(&doc)?
        }
    };
    std::fs::write(&path, &bytes)?;
    Ok(bytes)
}

/// Every file in `state/` (not in its stores) and in the home's root.
fn written_files(home: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (dir, prefix) in [(home.to_owned(), ""), (home.join("state"), "state/")] {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                names.push(format!("{prefix}{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Starts `b`, and checks that it comes up, names each of `raised` in
/// `status` (JSON and text), still answers [`STAYS_UP`] later without
/// having exited, and stops cleanly.
fn starts_and_names(b: &mut ManagedBox, raised: &[&str]) -> Result<()> {
    let starts = b.starts();
    b.spawn()?;
    let named = |s: &Value| -> Vec<String> {
        s["unreadable_files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["format"] == KNOWN + 1 && f["known"] == KNOWN)
            .filter_map(|f| f["path"].as_str().map(str::to_owned))
            .collect()
    };
    let home = b.path();
    let expected: Vec<String> = raised
        .iter()
        .map(|rel| home.join(rel).display().to_string())
        .collect();
    let status = b.run_until(DEADLINE, "the host to answer", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true).then_some(s)
    })?;
    for path in &expected {
        ensure!(
            named(&status).contains(path),
            "status does not name {path}: {}",
            status["unreadable_files"]
        );
    }
    let text = b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    for path in &expected {
        ensure!(
            text.lines()
                .any(|l| l.contains(path.as_str()) && l.contains("newer")),
            "text status does not name {path}:\n{text}"
        );
    }
    if let [rel] = raised {
        if REFUSES_SYNC.contains(rel) || SYNC_RUNS_ON.contains(rel) {
            synchronises(b, &home.join(rel), REFUSES_SYNC.contains(rel))?;
        }
    }
    std::thread::sleep(STAYS_UP);
    let again = b.status()?;
    ensure!(
        again["host"]["running"] == true,
        "the host stopped answering: {again}\n{}",
        b.log_tail(30)
    );
    ensure!(
        b.is_running() && b.starts() == starts + 1,
        "the box exited or restarted: exits {:?}\n{}",
        b.exits(),
        b.log_tail(30)
    );
    ensure!(b.stop()?.success(), "{}", b.log_tail(30));
    let log = b.log();
    for rel in raised {
        ensure!(
            log.contains(&format!("\"path\":\"{}\"", home.join(rel).display())),
            "the log does not name {rel}"
        );
    }
    Ok(())
}

/// Asks the running box to synchronise (the assigned set is the installed
/// one) and waits for the end: refused naming `file` when `refused`, else
/// up to date.
fn synchronises(b: &mut ManagedBox, file: &Path, refused: bool) -> Result<()> {
    b.run_until(DEADLINE, "the upgrade center running", |b| {
        let s = b.status().ok()?;
        s["components"]
            .as_array()?
            .iter()
            .any(|c| c["kind"] == "software-upgrade-center" && c["state"] == "RUN")
            .then_some(())
    })?;
    let before = b.sync_report().and_then(|s| s["started_ms"].as_u64());
    b.home().cli(&["upgrade"])?;
    let sync = b.run_until(CONVERGE, "the synchronisation to end", |b| {
        let s = b.sync_report()?;
        (s["started_ms"].as_u64() != before && s["finished_ms"].is_u64()).then_some(s)
    })?;
    let result = sync["result"].as_str().unwrap_or_default();
    if refused {
        ensure!(
            ["failed", "cancelled"].contains(&sync["state"].as_str().unwrap_or_default())
                && result.contains(&file.display().to_string()),
            "the synchronisation does not end refused naming {}: {sync}",
            file.display()
        );
    } else {
        ensure!(sync["state"] == "up-to-date", "{sync}\n{}", b.log_tail(30));
    }
    Ok(())
}

#[test]
fn a_box_runs_on_and_leaves_each_home_file_of_a_newer_format_as_it_is() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = crate::tuf::signed_world()?;
    let env = env_uuid(2201);
    // Two installs: the backup set has a record too.
    let mut b = crate::tuf::install_v1(&w, &env)?;
    w.portal.publish_all(&w.files(), &set_v2()[1..])?;
    w.portal.assign_set(&env, &coords(&set_v2()))?;
    let seen = sync(&w.portal, &env)?;
    let v = verdict(&w.portal, &mut b, &env, seen)?;
    ensure!(v.status == "installed", "{v}\n{}", b.log_tail(40));
    ensure!(b.installed()? == sorted(&set_v2()));
    ensure!(b.stop()?.success());
    let home = b.path();

    // Each file of the home the box wrote has a format, or is one of the
    // files that carry none.
    let listed: Vec<&str> = FILES.iter().map(|(rel, _)| *rel).collect();
    for name in written_files(&home)? {
        ensure!(
            listed.contains(&name.as_str()) || UNVERSIONED.contains(&name.as_str()),
            "{name} is written by the box but carries no format"
        );
    }
    for rel in [
        "state/running-core.json",
        "state/digest-cache.json",
        "state/component-ids.json",
        "state/launcher-identity.json",
        "modules/modules-hashes.json",
        "modules-backup/modules-hashes.json",
        "state/portal-outbox/format",
        "state/tuf/format",
    ] {
        ensure!(home.join(rel).is_file(), "{rel} was not written");
    }

    // One at a time, then all at once.
    let mut rounds: Vec<Vec<(&str, Carrier)>> = FILES.iter().map(|f| vec![*f]).collect();
    rounds.push(FILES.to_vec());
    for round in rounds {
        let originals: Vec<(PathBuf, Option<Vec<u8>>)> = round
            .iter()
            .map(|(rel, carrier)| {
                let path = carrier_file(&home, rel, *carrier);
                let bytes = std::fs::read(&path).ok();
                (path, bytes)
            })
            .collect();
        let raised: Vec<Vec<u8>> = round
            .iter()
            .map(|(rel, carrier)| raise(&home, rel, *carrier))
            .collect::<Result<_>>()?;
        let names: Vec<&str> = round.iter().map(|(rel, _)| *rel).collect();
        starts_and_names(&mut b, &names).with_context(|| format!("raised {names:?}"))?;
        for ((path, original), bytes) in originals.iter().zip(&raised) {
            ensure!(
                std::fs::read(path).ok().as_ref() == Some(bytes),
                "{} was changed or removed",
                path.display()
            );
            match original {
                Some(original) => std::fs::write(path, original)?,
                None => std::fs::remove_file(path)?,
            }
        }
    }
    Ok(())
}
