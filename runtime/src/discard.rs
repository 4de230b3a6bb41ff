//! `discard`: the operator drops a staged set. The set is never applied,
//! its hold goes with it, and the portal hears that nothing was installed
//! (`installation_cancelled`, naming the operator's discard), through the
//! portal outbox, so also when the box is offline.
//!
//! With the host running, the control socket's `discard` and the console's
//! button call [`discard`], which asks the upgrade center over the bus
//! (`DiscardStagedSet`): it also stops waiting for the set's window or
//! approval, and refuses while a synchronisation runs. With the host
//! stopped, the CLI does it on the home under the home lock
//! ([`discard_stopped`]). Both remove the marker first, so a kill leaves
//! either the set staged or no staged set; the status for the portal is
//! appended after the set is gone, so the portal never hears of a discard
//! that did not happen (a kill in between loses that status; the portal's
//! assignment then stays open until the next synchronisation reports).

use std::time::Duration;

use banalytics_home::{hold, outbox, swap, Layout};
use banalytics_messages::{
    portal::{ModuleStatus, ModuleStatusUpdate},
    upgrade::{DiscardStagedSet, StagedSetDiscarded},
};
use tracing::{info, warn};

use crate::{
    control::{self, Request, Response},
    host::Host,
    Error, Home, EXIT_FAILURE, EXIT_OK,
};

/// How long [`discard`] waits for the upgrade center's answer.
pub const DISCARD_WAIT: Duration = Duration::from_secs(10);

/// Discards the staged set of a running host (the control socket's
/// `discard`, the console's button): the upgrade center does it when
/// there is one; a host without one does it on the home itself.
pub async fn discard(host: &Host, by: &str) -> Response {
    let layout = Layout::new(host.home());
    if !layout.has_staged_set() && hold::of_staged(&layout).is_none() {
        return answer(false, "nothing to discard: no staged set".to_owned());
    }
    let request = DiscardStagedSet { by: by.to_owned() };
    let mut answers = host.bus().subscribe::<StagedSetDiscarded>();
    if host.bus().publish(request.clone()).await == 0 {
        return match discard_files(&layout, &request) {
            Ok(message) => answer(true, message),
            Err(e) => answer(false, format!("the staged set could not be discarded: {e}")),
        };
    }
    match tokio::time::timeout(DISCARD_WAIT, answers.recv()).await {
        Ok(Some(a)) => answer(a.discarded, a.message.clone()),
        _ => answer(
            false,
            format!(
                "the upgrade center did not answer within {} s; status shows whether the set is still staged",
                DISCARD_WAIT.as_secs()
            ),
        ),
    }
}

fn answer(ok: bool, message: String) -> Response {
    Response {
        ok,
        message: Some(message),
        data: None,
    }
}

/// Discards the staged set with no upgrade center to ask: the set, then
/// its hold, then the status for the portal in the outbox. The caller
/// holds the home lock or is the running host.
pub fn discard_files(layout: &Layout, request: &DiscardStagedSet) -> Result<String, Error> {
    let modules = swap::staged_modules(layout).unwrap_or_default();
    swap::discard_staged(layout)?;
    // `discard_staged` leaves an empty folder for the next set; the
    // upgrade center makes it again when it starts.
    let empty = layout.upgrade_dir();
    banalytics_home::layout::remove_dir_if_exists(&empty).map_err(|source| Error::Io {
        path: empty,
        source,
    })?;
    hold::lift(layout).map_err(|source| Error::Io {
        path: layout.state().join(hold::HOLD_FILE),
        source,
    })?;
    info!(by = %request.by, modules = modules.len(), "the staged set was discarded");
    let told = match layout.environment_uuid() {
        Ok(Some(env)) => {
            let status = ModuleStatusUpdate {
                environment_uuid: env,
                module: None,
                status: ModuleStatus::InstallationCancelled,
                status_message: Some(request.status_message()),
                seq: None,
                outbox_id: None,
            };
            let entry = serde_json::to_vec(&status).expect("plain data");
            match outbox::append(layout, &entry) {
                Ok(seq) => {
                    format!("; the portal is told (installation_cancelled, outbox entry {seq})")
                }
                Err(e) => {
                    warn!(error = %e, "cannot keep the discard's status for the portal");
                    format!("; the portal could not be told: {e}")
                }
            }
        }
        Ok(None) => "; the box is not registered: no portal to tell".to_owned(),
        Err(e) => format!("; the portal could not be told: {e}"),
    };
    Ok(format!("{}{told}", request.status_message()))
}

/// The stopped box's discard, on the home; `_lock` is the home lock,
/// held for the call.
pub fn discard_stopped(home: &Home, _lock: &std::fs::File) -> Result<u8, Error> {
    let layout = Layout::new(home.root());
    swap::recover(&layout)?;
    if !layout.has_staged_set() && hold::of_staged(&layout).is_none() {
        println!("nothing to discard: no staged set");
        return Ok(EXIT_OK);
    }
    let request = DiscardStagedSet { by: "cli".into() };
    println!("{}", discard_files(&layout, &request)?);
    Ok(EXIT_OK)
}

/// `banalytics-box discard`: through the running host when there is one,
/// else on the stopped box's home.
pub fn command(
    home: &Home,
    take_lock: impl FnOnce(&Home) -> Result<std::fs::File, Error>,
) -> Result<u8, Error> {
    let socket = home.control_socket();
    let request = Request::Discard { by: "cli".into() };
    match control::request(&socket, &request).map_err(|source| Error::Io {
        path: socket.clone(),
        source,
    })? {
        Some(r) if r.ok => {
            println!("{}", r.message.unwrap_or_default());
            Ok(EXIT_OK)
        }
        Some(r) => {
            eprintln!("banalytics-box: {}", r.message.unwrap_or_default());
            Ok(EXIT_FAILURE)
        }
        None => {
            let lock = take_lock(home)?;
            discard_stopped(home, &lock)
        }
    }
}
