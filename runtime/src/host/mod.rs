//! The host: `banalytics-box run` from the lock to the exit.
//!
//! Read in this order:
//!
//! - [`start`]: [`run`] takes the home lock (or the launcher's), prepares
//!   the module set or takes the launcher's word that it did, loads the
//!   plugins and reads the whole configuration;
//! - [`prepare`]: before anything of the set runs, a swap finished, a
//!   staged set applied, a start on probation counted, a failed set
//!   rolled back ([`Boot`] says what was done);
//! - [`serve`]: the components started ([`components`], one arbiter and
//!   driver each), the control socket, the loop that waits for a stop
//!   signal or a restart, the busy leases a restart waits for
//!   ([`busy`]), the stop;
//! - [`probation`]: the watch that decides a set's verdict, and the
//!   commit; [`verdict`]: its report, pending in the outbox across the
//!   commit or rollback;
//! - [`restart`]: how the host ends for a restart (exit, exec, upgrade
//!   job); [`settings`]: the upgrade settings all of this acts on.

pub(crate) mod busy;
mod components;
pub(crate) mod prepare;
pub(crate) mod probation;
mod restart;
mod serve;
mod settings;
mod start;
mod verdict;

pub use components::{Host, RestartError};
pub(crate) use prepare::Boot;
pub(crate) use probation::probation_limit;
pub(crate) use restart::Restart;
pub(crate) use settings::Settings;
pub(crate) use start::run;

pub(crate) use start::home_lock;
