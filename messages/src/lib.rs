//! The bus messages that more than one crate of the box speaks.
//!
//! A message between two components (or between a component and the host)
//! belongs to neither side: Portal Integration and the upgrade center both
//! use the portal's messages, the upgrade center and the host both use the
//! restart and probation messages. So they live here, in a crate both sides
//! depend on, and the SDK, which only carries messages, knows no portals or
//! upgrades.
//!
//! Every message is plain data ([`BusMessage`](banalytics_sdk::BusMessage)
//! with serde), so it crosses the plugin boundary as JSON like any other.
//! This crate knows the messages only: no component, no actor, no I/O.

#![warn(missing_docs)]
#![cfg_attr(test, allow(unused_crate_dependencies))] // dev-dependencies serve the integration tests

pub mod portal;
pub mod status;
pub mod upgrade;
