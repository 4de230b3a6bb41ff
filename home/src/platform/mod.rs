//! The file-system calls that differ between Unix and Windows, one seam per
//! concern, so that the rest of the crate is written once:
//!
//! - [`sync_dir`]: make renames and creations in a folder durable;
//! - [`rename_dir`]: the swap's rename of a set folder to a free name;
//! - [`replace_file`]: a file renamed over another (Windows: tried again
//!   while another process holds one of them for a moment);
//! - [`exchange`]: the swap's atomic exchange of two folders (Linux's
//!   `RENAME_EXCHANGE`; elsewhere `Unsupported`, and the swap falls back to
//!   three renames, as it already does on an old kernel);
//! - [`create_private`]: a new file only its owner may read;
//! - [`file_key`]: what identifies a file's content for the digest cache;
//! - [`free_bytes`]: free space for the box's user;
//! - [`kill_self`]: die at once, as a crash would (the failpoints).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
