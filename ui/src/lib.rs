//! The one look of the Banalytics consoles: the box's own console (in the
//! runtime) and the reference portal's fleet console both render their
//! pages with these pieces, so a person who knows one reads the other.
//!
//! What is here: a stylesheet served inline ([`STYLESHEET`], no build
//! step; readable from a phone's 390 px to a 1280 px screen, a light theme
//! whose colours pass WCAG AA contrast), the page frame with its navigation
//! ([`Page`]), and the components both consoles need: status badges
//! coloured by outcome and always with a word ([`badge`]), humanised sizes
//! and durations ([`human_size`], [`human_duration`]), absolute and
//! relative times ([`time`]), a progress bar per download ([`progress`]),
//! a module-by-module difference of two sets ([`diff`], [`diff_table`]),
//! empty states that say what to do ([`empty`]), tables with headers
//! ([`table`], [`details`]), buttons and labelled form fields ([`Button`],
//! [`field`]), and live regions that follow a Server-Sent Events stream
//! and are sent only when they changed ([`live_region`], [`LiveStream`],
//! [`LIVE_SCRIPT`]).
//!
//! What is not here: any type of the portal protocol or of the box. A set
//! is a list of `(module, version)` strings, a status is the word the
//! caller chose and the [`Outcome`] it maps it to. This keeps the crate the
//! one of ours the reference portal may depend on without ceasing to be an
//! independent oracle of the protocol.

#![warn(missing_docs)]

mod components;
mod diff;
mod format;
mod layout;
mod live;
mod style;

pub use components::{
    badge, details, empty, field, field_with_hint, progress, table, Button, ButtonKind, Outcome,
    CONFIRM_SCRIPT,
};
pub use diff::{diff, diff_summary, diff_table, split_version, Change, DiffRow};
pub use format::{
    absolute_time, human_duration, human_size, iso_time, relative_time, time, unix_ms, TIME_SCRIPT,
};
pub use layout::Page;
pub use live::{live_region, live_version, LiveStream, LIVE_SCRIPT};
pub use style::STYLESHEET;

/// Re-exported so that callers build markup with the same `maud` version.
pub use maud;
