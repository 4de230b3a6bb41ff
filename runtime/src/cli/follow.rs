//! `banalytics-box upgrade --wait`: follows the synchronisation that
//! answers the request until it ends, with its download progress.

use std::time::Duration;

use banalytics_home::Layout;
use banalytics_messages::status::{SyncState, Trigger};

use crate::{
    control::{self, Request},
    Error, Home, EXIT_FAILURE, EXIT_OK,
};

use super::status::{upgrade_centers, UpgradeCenterSeen};

/// How often `upgrade --wait` asks for the status.
const POLL: Duration = Duration::from_millis(100);

/// An `upgrade --wait` request, to find the synchronisation that answers
/// it.
pub(super) struct Asked {
    pub(super) at_ms: u64,
    pub(super) request: Option<u64>,
    pub(super) retry: bool,
}

/// Whether the synchronisation `seen` answers `asked`, and whether it was
/// already running when asked.
fn answers(seen: &UpgradeCenterSeen, asked: &Asked) -> Option<bool> {
    let sync = &seen.details.sync;
    match (seen.knows_requests, asked.request) {
        (true, Some(request)) => {
            sync.requests.contains(&request).then_some(())?;
            Some(sync.started_by != Some(request))
        }
        // A host that does not know request numbers: the first
        // synchronisation that started about when asked (a second of
        // slack for the clocks of two processes).
        _ => {
            let started = sync.started_ms.unwrap_or(0);
            (started >= asked.at_ms.saturating_sub(1000)).then_some(false)
        }
    }
}

/// Polls `status` until the synchronisation that answers `asked` ends,
/// drawing its progress.
pub(super) fn follow_sync(home: &Home, asked: &Asked) -> Result<u8, Error> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = (SyncState::Idle, u64::MAX);
    let mut told_joined = false;
    loop {
        let socket = home.control_socket();
        let data = control::request(&socket, &Request::Status)
            .map_err(|source| Error::Io {
                path: socket.clone(),
                source,
            })?
            .and_then(|r| r.data);
        let Some(data) = data else {
            bar.finish_and_clear();
            if Layout::new(home.root()).has_staged_set() {
                println!("synchronisation staged: the host stopped to restart and apply it");
                return Ok(EXIT_OK);
            }
            eprintln!("banalytics-box: the host stopped before the synchronisation ended");
            return Ok(EXIT_FAILURE);
        };
        let seen = upgrade_centers(&data).into_iter().next();
        let Some(joined) = seen.as_ref().and_then(|seen| answers(seen, asked)) else {
            std::thread::sleep(POLL);
            continue;
        };
        let sync = &seen.expect("answers found it").details.sync;
        if joined && !told_joined {
            told_joined = true;
            println!(
                "a synchronisation was running (trigger: {}): following it",
                sync.trigger.map_or("?", Trigger::as_str)
            );
            if asked.retry {
                println!("  --retry does not apply to it; ask again once it ended");
            }
        }
        let (state, done, total) = (sync.state, sync.done_bytes, sync.total_bytes);
        if terminal {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(state.to_string());
        } else {
            let decile = (done * 10).checked_div(total).unwrap_or(0);
            if (state, decile) != last_line {
                println!("{state}: {done}/{total} bytes");
                last_line = (state, decile);
            }
        }
        if sync.finished_ms.is_some() {
            bar.finish_and_clear();
            println!(
                "synchronisation {state}: {}",
                sync.result.as_deref().unwrap_or("")
            );
            return Ok(if state.ended_well() {
                EXIT_OK
            } else {
                EXIT_FAILURE
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banalytics_messages::status::{StagedSummary, SyncReport, UpgradeCenterDetails};
    use banalytics_sdk::StatusBoard;
    use serde_json::json;

    fn asked(request: Option<u64>) -> Asked {
        Asked {
            at_ms: 10_000,
            request,
            retry: false,
        }
    }

    /// A `status` answer's `data` with one upgrade center whose details
    /// are `sync`, as the control socket carries it.
    fn seen(sync: serde_json::Value) -> UpgradeCenterSeen {
        let data = json!({"components": [{
            "name": "upgrade-center",
            "kind": banalytics_upgrade_center::KIND_NAME,
            "details": {"registered": true, "first_run": false, "sync": sync},
        }]});
        upgrade_centers(&data).pop().expect("an upgrade center")
    }

    #[test]
    fn a_request_follows_the_synchronisation_that_lists_it_started_or_joined() {
        let started = seen(json!({"requests": [7], "started_by": 7, "started_ms": 10_000}));
        assert_eq!(answers(&started, &asked(Some(7))), Some(false));
        // Running since long before the ask, joined by it.
        let joined = seen(json!({"requests": [3, 7], "started_by": 3, "started_ms": 1}));
        assert_eq!(answers(&joined, &asked(Some(7))), Some(true));
        let by_portal = seen(json!({"requests": [7], "started_ms": 1}));
        assert_eq!(answers(&by_portal, &asked(Some(7))), Some(true));
        // One that started just before the ask and does not list it: the
        // request came after it ended and starts the next.
        let before = seen(json!({"requests": [], "started_ms": 9_999, "finished_ms": 10_001}));
        assert_eq!(answers(&before, &asked(Some(7))), None);
    }

    #[test]
    fn with_a_host_that_knows_no_request_numbers_the_start_time_decides() {
        let old = seen(json!({"started_ms": 9_500}));
        assert_eq!(answers(&old, &asked(Some(7))), Some(false));
        let older = seen(json!({"started_ms": 8_000}));
        assert_eq!(answers(&older, &asked(Some(7))), None);
    }

    /// The upgrade center's report, written on a status board the way it
    /// writes it, carried as the control socket's JSON line and read back
    /// by the CLI's decoder: every field arrives with its value, so a field
    /// renamed on one side only fails here (it would arrive as its default).
    #[test]
    fn the_sync_report_reaches_the_cli_as_the_upgrade_center_wrote_it() {
        let report = SyncReport {
            state: SyncState::Staged,
            trigger: Some(Trigger::Retry),
            started_ms: Some(1),
            finished_ms: Some(2),
            result: Some("staged".into()),
            done_bytes: 3,
            total_bytes: 4,
            skipped_triggers: 5,
            requests: vec![6, 7],
            started_by: Some(6),
            staged: Some(StagedSummary {
                modules: vec!["g:a:1".parse().expect("coords")],
                files: 8,
                bytes: 9,
                reused_files: 10,
            }),
            waits_for: Some("a window".into()),
            ..SyncReport::default()
        };
        let mut with_home = report.clone();
        with_home.home.registered = true;
        with_home.home.first_run = true;
        let board = StatusBoard::new();
        board.register("upgrade-center", banalytics_upgrade_center::KIND_NAME, "id");
        board.set_details("upgrade-center", UpgradeCenterDetails::value_of(&with_home));
        let answer = control::Response {
            ok: true,
            message: None,
            data: Some(json!({ "components": board.snapshot() })),
        };
        let line = serde_json::to_string(&answer).unwrap();
        let data = serde_json::from_str::<control::Response>(&line)
            .unwrap()
            .data
            .unwrap();
        let seen = upgrade_centers(&data).pop().expect("the upgrade center");
        assert_eq!(seen.details.sync, report);
        assert!(seen.details.registered && seen.details.first_run && seen.knows_requests);
        assert_eq!(answers(&seen, &asked(Some(7))), Some(true));
        assert!(seen.details.sync.state.ended_well());
    }
}
