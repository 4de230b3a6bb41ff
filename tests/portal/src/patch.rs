//! Binary patches between native builds, made at publish (contracts,
//! "Patches"): from each of the last N published builds of the same
//! module and platform to the new one, so that a box running one of them
//! fetches a patch instead of the whole file.
//!
//! The format, which the box reads (`components/upgrade/src/delta.rs`;
//! this crate shares no code with the box, on purpose): a zstd skippable
//! frame holding a JSON header (source and target SHA-256 and sizes, the
//! segment and margin), then one zstd frame per [`SEGMENT`] of the target,
//! each compressed against the source's bytes from [`MARGIN`] before to
//! [`MARGIN`] after the segment's offset as its reference prefix (zstd's
//! `--patch-from`, one segment at a time), with the window that spans
//! that prefix and the segment (at most 2^25: the box's bound).

use std::{fs, io::Write, path::Path};

use sha2::{Digest, Sha256};

use super::PortalError;

/// Bytes of the target per frame: the box's decoder buffers one.
pub const SEGMENT: u64 = 8 * 1024 * 1024;

/// Source bytes on each side of a segment's offset in its prefix: code
/// that moved by less than this between two builds is still found.
pub const MARGIN: u64 = 8 * 1024 * 1024;

/// How many earlier builds of a module and platform get a patch to a new
/// one, unless the portal is told otherwise (`serve --patch-versions`).
pub const DEFAULT_PATCH_VERSIONS: usize = 3;

/// Files up to this size are compressed at [`SMALL_LEVEL`], larger ones at
/// [`LARGE_LEVEL`]: a shipped build (about 12 MB) is worth the time, a
/// 150 MB debug build would take minutes.
pub const SMALL_FILE: u64 = 32 * 1024 * 1024;

/// zstd level for files up to [`SMALL_FILE`].
pub const SMALL_LEVEL: i32 = 19;

/// zstd level for larger files.
pub const LARGE_LEVEL: i32 = 3;

/// The skippable frame's magic (zstd reserves 0x184D2A50 to 0x184D2A5F).
const HEADER_MAGIC: u32 = 0x184D_2A5B;

/// The largest window the box's decoder accepts.
const WINDOW_LOG_MAX: u32 = 25;

/// The name of the patch from the build `from_version` with SHA-256
/// `from_sha256` to the file named `target_name`:
/// `{target_name}.from-{from_version}-{from_sha256}.zstpatch`.
pub fn patch_name(target_name: &str, from_version: &str, from_sha256: &str) -> String {
    format!("{target_name}.from-{from_version}-{from_sha256}.zstpatch")
}

/// Whether `name` is a patch to the file named `target_name`.
pub fn is_patch_of(name: &str, target_name: &str) -> bool {
    name.strip_prefix(target_name)
        .is_some_and(|rest| rest.starts_with(".from-") && rest.ends_with(".zstpatch"))
}

/// The patch of `target` from `source`, or `None` when it would not be
/// smaller than `target`.
pub fn make(source: &[u8], target: &[u8]) -> Result<Option<Vec<u8>>, PortalError> {
    let io = |e: std::io::Error| PortalError::BadRequest(format!("making a patch: {e}"));
    let header = serde_json::json!({
        "format": 1,
        "from_sha256": hex::encode(Sha256::digest(source)),
        "from_size": source.len(),
        "sha256": hex::encode(Sha256::digest(target)),
        "size": target.len(),
        "segment": SEGMENT,
        "margin": MARGIN,
    });
    let json = serde_json::to_vec(&header).expect("a JSON value");
    let mut out = Vec::new();
    out.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let level = if target.len() as u64 <= SMALL_FILE {
        SMALL_LEVEL
    } else {
        LARGE_LEVEL
    };
    for (i, chunk) in target.chunks(SEGMENT as usize).enumerate() {
        let start = i as u64 * SEGMENT;
        let from = start.saturating_sub(MARGIN).min(source.len() as u64) as usize;
        let to = (start + chunk.len() as u64 + MARGIN).min(source.len() as u64) as usize;
        let prefix = &source[from..to];
        let mut enc =
            zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, prefix).map_err(io)?;
        enc.include_checksum(true).map_err(io)?;
        enc.set_pledged_src_size(Some(chunk.len() as u64))
            .map_err(io)?;
        let window = (prefix.len() + chunk.len())
            .next_power_of_two()
            .trailing_zeros()
            .clamp(10, WINDOW_LOG_MAX);
        enc.window_log(window).map_err(io)?;
        enc.long_distance_matching(true).map_err(io)?;
        enc.write_all(chunk).map_err(io)?;
        out.extend_from_slice(&enc.finish().map_err(io)?);
        if out.len() >= target.len() {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// Reads both files and makes the patch ([`make`]).
pub fn make_files(source: &Path, target: &Path) -> Result<Option<Vec<u8>>, PortalError> {
    let read = |p: &Path| {
        fs::read(p).map_err(|source| PortalError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    make(&read(source)?, &read(target)?)
}
