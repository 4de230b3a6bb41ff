//! The whole-system tests, folded into one test binary as ripgrep folds its
//! integration tests: one module per area instead of one binary per file,
//! so that a change to the support library links one test binary, not
//! nine. Run one area with `cargo test -p banalytics-tests --test system
//! crash::`.
//!
//! The modules' tests now run in parallel threads of one process. Each
//! takes a permit from [`machine`] first: the fleet test takes the whole
//! machine, as it had when it was the only test of its binary.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod machine;

mod answers;
mod archive;
mod authority;
mod box_console;
mod core;
mod crash;
mod crash_staging;
mod delta;
mod discard;
mod e2e;
mod fleet;
mod formats;
mod host_process;
mod isolation;
mod loop_;
mod maintenance;
mod native;
mod outbox;
mod plugins;
mod portal;
mod portal_store;
mod portals;
mod preflight;
mod probation;
mod quarantine;
mod registration;
mod resilience;
mod restart;
mod tls;
mod transport;
mod tuf;
mod watchdog;
