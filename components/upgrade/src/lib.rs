//! Software Upgrade Center: takes the portal's target module set to an
//! installed, verified, crash-safe module set.

#![warn(missing_docs)]

pub mod archive;
pub mod coords;
pub mod fetch;
pub mod installed;
pub mod properties;
