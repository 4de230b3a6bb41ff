//! The probation verdict's report for the portal (`installed`,
//! `installation_cancelled`), kept with the verdict itself: written to the
//! portal outbox as the pending verdict (`outbox::pend_verdict`, not yet an
//! entry) before the commit or rollback, and released as the newest entry
//! right after it (`banalytics_home::outbox`'s module docs). A verdict a
//! kill left pending is settled at the next start. So a kill at any point
//! neither loses the report nor sends one for a verdict that never
//! happened, and the entries' numbers stay without gaps.

use banalytics_home::{failpoint::failpoint, outbox, swap, Layout};
use banalytics_messages::portal::{ModuleStatus, ModuleStatusUpdate};
use tracing::{error, info, warn};

/// Writes the verdict's report as the pending verdict. `false` when
/// nothing was written: the box has no registration (nothing is
/// reported), or the outbox refused (the upgrade center then reports the
/// verdict from memory, as it does when the status seq is `None`).
pub(crate) fn write_pending(layout: &Layout, status: ModuleStatus, message: Option<&str>) -> bool {
    let env = match layout.environment_uuid() {
        Ok(Some(env)) => env,
        Ok(None) => return false,
        Err(e) => {
            warn!(error = %e, "cannot read the registration; the verdict is reported from memory");
            return false;
        }
    };
    let report = ModuleStatusUpdate {
        environment_uuid: env,
        module: None,
        status,
        status_message: message.map(str::to_owned),
        seq: None,
        outbox_id: None,
    };
    let entry = serde_json::to_vec(&report).expect("plain data");
    match outbox::pend_verdict(layout, &entry) {
        Ok(()) => {
            failpoint("verdict.held");
            true
        }
        Err(e) => {
            warn!(error = %e, "cannot keep the verdict's report on disk; it is reported from memory");
            false
        }
    }
}

/// Releases the pending verdict once the commit or rollback is done: the
/// entry's number. On failure the verdict stays pending and the next
/// start releases it; meanwhile the upgrade center reports it from memory.
pub(crate) fn release_pending(layout: &Layout) -> Option<u64> {
    match outbox::release_verdict(layout) {
        Ok(seq) => seq,
        Err(e) => {
            error!(error = %e, "cannot release the verdict's report; the next start does");
            None
        }
    }
}

/// A verdict a kill left pending: released when the probation it ended is
/// gone (the commit or rollback happened), dropped when the probation is
/// still on (it never happened; this start goes on with the probation).
/// Runs after an interrupted swap is finished, before anything is applied.
pub(crate) fn settle_pending(layout: &Layout) -> Result<(), swap::SwapError> {
    let settled = match swap::probation(layout)? {
        None => outbox::release_verdict(layout).map(|seq| {
            if let Some(seq) = seq {
                info!(
                    seq,
                    "the report of a verdict reached before the host stopped is released"
                );
            }
        }),
        Some(_) => outbox::drop_verdict(layout).map(|dropped| {
            if dropped {
                info!(
                    "a verdict pending when the host stopped is dropped: its probation is still on"
                );
            }
        }),
    };
    if let Err(e) = settled {
        warn!(error = %e, "cannot settle the verdict pending when the host stopped");
    }
    Ok(())
}
