//! `Inventory`: reads the installed set and plans each module of a target
//! set against it (keep, add, change, remove). The reading runs off the
//! actor's thread.
//!
//! An installed file is trusted for the plan, and so hard-linked into a
//! new set, only when its content has the recorded SHA-256. The digests
//! come from the home's digest cache (`state/digest-cache.json`,
//! [`banalytics_home::digests`]), so a file is read again only after its
//! inode, size or modification time changed.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use actix::prelude::*;
use banalytics_home::digests::{DigestCache, DigestStats};
use tracing::{field, info, info_span, warn, Span};

use crate::{
    blocking::off_thread,
    coords::Coords,
    error::{io_at, UpgradeError},
    installed,
    layout::Layout,
    plan::{self, ResolvedModule, SyncPlan},
    record::{check_file, SetRecord},
};

/// Plan a resolved target set against what is installed now.
#[derive(Message)]
#[rtype(result = "Result<SyncPlan, UpgradeError>")]
pub(crate) struct PlanSync {
    /// The resolved target set.
    pub target: Vec<ResolvedModule>,
}

/// The Inventory actor.
pub(crate) struct Inventory {
    layout: Layout,
    /// Held by a plan while it reads and writes the digest cache: plans
    /// run off the actor's thread and could otherwise overlap.
    digests: Arc<Mutex<()>>,
}

impl Inventory {
    /// An inventory of the home `layout`.
    pub(crate) fn new(layout: Layout) -> Self {
        Inventory {
            layout,
            digests: Arc::default(),
        }
    }
}

impl Actor for Inventory {
    type Context = Context<Self>;
}

impl Handler<PlanSync> for Inventory {
    type Result = ResponseFuture<Result<SyncPlan, UpgradeError>>;

    fn handle(&mut self, msg: PlanSync, _: &mut Context<Self>) -> Self::Result {
        let layout = self.layout.clone();
        let digests = self.digests.clone();
        let span = info_span!(
            "inventory.plan_sync",
            modules = msg.target.len(),
            hashed_files = field::Empty,
            hashed_bytes = field::Empty,
            cached_files = field::Empty,
        );
        Box::pin(off_thread(move || {
            let _one_at_a_time = digests.lock().unwrap_or_else(|e| e.into_inner());
            span.in_scope(|| plan_sync(&layout, msg.target))
        }))
    }
}

/// Plans `target` against the installed and backup sets of `layout`:
/// reads `modules-info.properties` and the hash records, and checks every
/// recorded file's content through the digest cache. What the check cost
/// is recorded in the current span (`hashed_files`, `hashed_bytes`,
/// `cached_files`) and logged.
pub(crate) fn plan_sync(
    layout: &Layout,
    target: Vec<ResolvedModule>,
) -> Result<SyncPlan, UpgradeError> {
    let installed: Vec<Coords> = installed::read_modules_info(&layout.modules())?
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.coords)
        .collect();
    let mut digests = DigestCache::open(&layout.digest_cache());
    let record = trusted_record(&layout.modules(), &layout.models(), &mut digests)?;
    let backup = trusted_record(&layout.backup(), &layout.models_backup(), &mut digests)?;
    if let Err(e) = digests.save() {
        // Only the next plan's speed depends on it.
        warn!(error = %e, "cannot write the digest cache");
    }
    let DigestStats {
        hashed_files,
        hashed_bytes,
        cached_files,
    } = digests.stats();
    let span = Span::current();
    span.record("hashed_files", hashed_files);
    span.record("hashed_bytes", hashed_bytes);
    span.record("cached_files", cached_files);
    info!(
        hashed_files,
        hashed_bytes, cached_files, "installed files checked against their records"
    );
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
/// without the modules of which a file is missing or differs from its
/// record in size or SHA-256: those are fetched again rather than
/// trusted, with a warning naming the first such file. Digests come from
/// `digests`, which reads a file only when it changed since it was last
/// hashed.
pub(crate) fn trusted_record(
    modules: &Path,
    models: &Path,
    digests: &mut DigestCache,
) -> Result<Option<SetRecord>, UpgradeError> {
    let Some(mut record) = SetRecord::load_or_none_if_newer(modules).map_err(io_at(modules))?
    else {
        return Ok(None);
    };
    record.modules.retain(|key, m| {
        let single = crate::record::SetRecord {
            format: SetRecord::FORMAT,
            modules: [(key.clone(), m.clone())].into(),
        };
        let bad = single.files(modules, models).find_map(|(path, f)| {
            check_file(&path, f, |p| digests.sha256(p)).map(|problem| (path, problem))
        });
        if let Some((path, problem)) = &bad {
            warn!(
                module = %key,
                file = %path.display(),
                problem = %problem,
                "installed file missing or changed; its module will be fetched again"
            );
        }
        bad.is_none()
    });
    Ok(Some(record))
}
