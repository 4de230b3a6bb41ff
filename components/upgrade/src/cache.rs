//! The download cache (`modules-download/`) as data: what a verified file
//! in it is, and when a file found there can be trusted.
//!
//! The Downloader fills the cache and the Stager empties it; both speak of
//! its files through this module, not through each other.

use std::path::Path;

use banalytics_home::Sha256;
use serde::Serialize;

use crate::{plan::Target, record::sha256_file};

/// A fetched artifact in the cache, as the downloader verified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedFile {
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
}

/// The file at `path` if it has the target's size and digest: a cached
/// file is trusted by its digest, never by its length alone (a target
/// without a digest is always fetched again).
pub(crate) async fn cache_hit(path: &Path, target: &Target) -> Option<CachedFile> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if target.expected.size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let expected = target.expected.sha256?;
    let path = path.to_owned();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .ok()?
        .ok()?;
    let matches = actual == expected;
    matches.then_some(CachedFile {
        sha256: actual,
        size: meta.len(),
    })
}
