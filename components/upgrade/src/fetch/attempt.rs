//! One attempt of a [`download`](super::download): the numbered steps in
//! order, and what they share (the partial file, the counters, the way to
//! start over).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tracing::warn;

use super::resume::{meta_path, remove_if_exists, Partial};
use super::{Downloaded, Expected, FetchConfig, FetchError};

/// One attempt of a [`download`](super::download), everything it needs by
/// reference.
#[derive(Clone, Copy)]
pub(super) struct Attempt<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) url: &'a str,
    pub(super) partial: &'a Path,
    pub(super) expected: &'a Expected,
    pub(super) cfg: &'a FetchConfig,
    pub(super) progress: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    pub(super) transferred: &'a AtomicU64,
}

/// The bytes of the partial that an attempt keeps, and their hash so far.
pub(super) struct Kept {
    /// Bytes at the start of the partial that are kept; the request asks
    /// for the rest.
    pub(super) offset: u64,
    /// SHA-256 of those bytes, to be continued with the body.
    pub(super) hasher: Sha256,
}

impl Kept {
    /// Nothing kept: the download starts from byte 0.
    pub(super) fn nothing() -> Self {
        Kept {
            offset: 0,
            hasher: Sha256::new(),
        }
    }
}

impl Attempt<'_> {
    pub(super) fn io(
        &self,
        op: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> FetchError {
        let path = path.to_owned();
        let (url, space) = (self.url.to_owned(), self.cfg.space.clone());
        move |source| {
            if super::space::is_no_space(&source) {
                // The file system is full: the partial can never complete.
                return FetchError::NoSpace {
                    free: space.free(&path).unwrap_or(0),
                    written: std::fs::metadata(&path).map_or(0, |m| m.len()),
                    min_free: space.min_free,
                    enospc: true,
                    url,
                };
            }
            FetchError::Io { op, path, source }
        }
    }

    /// Removes the partial and its meta file; missing files are fine.
    async fn discard(&self) -> Result<(), FetchError> {
        for path in [self.partial.to_owned(), meta_path(self.partial)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// Empties the partial and removes the meta file.
    pub(super) async fn restart(&self, file: &mut File) -> Result<(), FetchError> {
        file.set_len(0)
            .await
            .map_err(self.io("truncate", self.partial))?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(self.io("seek", self.partial))?;
        remove_if_exists(&meta_path(self.partial))
            .await
            .map_err(self.io("remove", &meta_path(self.partial)))
    }

    pub(super) fn done(
        &self,
        sha256: banalytics_home::Sha256,
        size: u64,
        resumed_from: u64,
    ) -> Downloaded {
        Downloaded {
            sha256,
            size,
            bytes_transferred: self.transferred.load(Ordering::Relaxed),
            resumed_from,
        }
    }

    pub(super) fn matches_expected(&self, actual: banalytics_home::Sha256) -> bool {
        self.expected.sha256.is_none_or(|want| want == actual)
    }

    pub(super) async fn finish(&self, file: &mut File) -> Result<(), FetchError> {
        file.flush().await.map_err(self.io("write", self.partial))?;
        file.sync_all()
            .await
            .map_err(self.io("fsync", self.partial))?;
        remove_if_exists(&meta_path(self.partial))
            .await
            .map_err(self.io("remove", &meta_path(self.partial)))
    }

    pub(super) async fn run(self) -> Result<Downloaded, FetchError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.partial)
            .await
            .map_err(self.io("open", self.partial))?;
        let outcome = self.transfer(&mut file).await;
        // A tokio `File` completes writes in the background: wait for them
        // on every path, so that the next attempt (which sizes the partial
        // to resume) and the caller see every byte written.
        let flushed = file.flush().await.map_err(self.io("write", self.partial));
        let (error, flush_error) = match (outcome, flushed) {
            (Ok(done), Ok(())) => return Ok(done),
            (Ok(_), Err(e)) => (e, None),
            // A full file system decides, whatever the transfer said.
            (Err(_), Err(e @ FetchError::NoSpace { .. })) => (e, None),
            (Err(error), flushed) => (error, flushed.err()),
        };
        if let Some(flush_error) = flush_error {
            warn!(url = self.url, error = %flush_error, "cannot flush the partial after a failure");
        }
        let empty = file.metadata().await.is_ok_and(|m| m.len() == 0);
        drop(file);
        if error.discards_partial() || empty {
            // Nothing worth resuming: leave no partial (or empty file) behind.
            self.discard().await?;
        }
        Err(error)
    }

    /// The steps of the module docs of `fetch`, in order.
    async fn transfer(self, file: &mut File) -> Result<Downloaded, FetchError> {
        // 1. Decide what of the partial can be kept.
        let (mut kept, validator) = match self.keep_partial(file).await? {
            Partial::Complete(done) => return Ok(done),
            Partial::Resume { kept, validator } => (kept, validator),
        };
        // 2. Ask for the rest.
        let response = self.request(kept.offset, validator.as_deref()).await?;
        // 3. Check the answer against what was asked.
        let server_total = self.check_answer(&response, file, &mut kept).await?;
        // 4. Bound the transfer: the declared size wins over the server's.
        let bounds = self.bound(server_total)?;
        // 5. Stream, hash, write.
        let resumed_from = kept.offset;
        let on_disk = self.stream(response, file, &mut kept, bounds).await?;
        // 6. Verify and make durable.
        self.verify(file, kept.hasher, on_disk, resumed_from).await
    }
}
