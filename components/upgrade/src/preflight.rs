//! The preflight hook: a check the host hands the upgrade center, run on a
//! staged set once it is complete and before it is published (the marker
//! renamed into place), so that a set the host would not start is never
//! staged and no restart is asked for.
//!
//! The upgrade center knows neither the configuration file nor plugins, so
//! it cannot tell whether a set would start; the host can. The hook is a
//! closure from the host (`banalytics-runtime` builds it with the kinds
//! `box.toml` names and its built-in kinds), given to [`kind_with`](crate::kind_with);
//! [`kind`](crate::kind) gives a hook that accepts every set.

use std::{path::Path, sync::Arc};

/// Checks the module folder of a complete staged set (it holds the set's
/// files, `modules-info.properties` and the hash record); `Err` says why
/// the set would not start. It runs on a blocking thread and may read the
/// folder; it must not change it.
pub type Preflight = Arc<dyn Fn(&Path) -> Result<(), Refused> + Send + Sync>;

/// Why the host would not start a set: the host's own error (its
/// `Display` is the reason the cancellation gives), which this crate
/// does not know the type of.
pub(crate) type Refused = Box<dyn std::error::Error + Send + Sync>;

/// The hook that accepts every set.
pub fn accept_all() -> Preflight {
    Arc::new(|_| Ok(()))
}
