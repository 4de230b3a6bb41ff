//! `Inventory`: reads the installed set and plans each module of a target
//! set against it (keep, add, change, remove). The reading runs off the
//! actor's thread.

use std::path::Path;

use actix::prelude::*;
use tracing::{info, info_span, warn};

use crate::{
    blocking::off_thread,
    error::{io_at, UpgradeError},
    installed,
    layout::Layout,
    plan::{self, ResolvedModule, SyncPlan},
    record::SetRecord,
};

/// Plan a resolved target set against what is installed now.
#[derive(Message)]
#[rtype(result = "Result<SyncPlan, UpgradeError>")]
pub struct PlanSync {
    /// The resolved target set.
    pub target: Vec<ResolvedModule>,
}

/// The Inventory actor.
pub struct Inventory {
    layout: Layout,
}

impl Inventory {
    /// An inventory of the home `layout`.
    pub fn new(layout: Layout) -> Self {
        Inventory { layout }
    }
}

impl Actor for Inventory {
    type Context = Context<Self>;
}

impl Handler<PlanSync> for Inventory {
    type Result = ResponseFuture<Result<SyncPlan, UpgradeError>>;

    fn handle(&mut self, msg: PlanSync, _: &mut Context<Self>) -> Self::Result {
        let layout = self.layout.clone();
        let span = info_span!("inventory.plan_sync", modules = msg.target.len());
        Box::pin(off_thread(move || {
            span.in_scope(|| plan_sync(&layout, msg.target))
        }))
    }
}

/// Plans `target` against the installed and backup sets of `layout`:
/// reads `modules-info.properties` and the hash records, and `stat`s every
/// recorded file.
pub fn plan_sync(layout: &Layout, target: Vec<ResolvedModule>) -> Result<SyncPlan, UpgradeError> {
    let installed: Vec<String> = installed::read_modules_info(&layout.modules())?
        .unwrap_or_default()
        .iter()
        .map(|m| m.coords.to_string())
        .collect();
    let record = trusted_record(&layout.modules(), &layout.models())?;
    let backup = trusted_record(&layout.backup(), &layout.models_backup())?;
    let plan = plan::plan(target, &installed, record.as_ref(), backup.as_ref());
    for m in &plan.modules {
        info!(module = %m.key(), action = ?m.action, fetches = m.fetches().count(), "planned");
    }
    for r in &plan.removed {
        info!(module = %r, "planned removal");
    }
    Ok(plan)
}

/// The record of the set in `modules` (with its models in `models`),
/// without the modules whose files are missing or of the wrong size (those
/// are fetched again rather than trusted). A full digest check is
/// `verify`'s job; this one is a `stat` per file.
pub fn trusted_record(modules: &Path, models: &Path) -> Result<Option<SetRecord>, UpgradeError> {
    let Some(mut record) = SetRecord::load(modules).map_err(io_at(modules))? else {
        return Ok(None);
    };
    record.modules.retain(|key, m| {
        let single = crate::record::SetRecord {
            format: SetRecord::FORMAT,
            modules: [(key.clone(), m.clone())].into(),
        };
        let intact = single
            .files(modules, models)
            .all(|(path, f)| std::fs::metadata(&path).is_ok_and(|meta| meta.len() == f.size));
        if !intact {
            warn!(module = %key, "installed files missing or changed; they will be fetched again");
        }
        intact
    });
    Ok(Some(record))
}
