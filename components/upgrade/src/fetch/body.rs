//! Steps 4 to 6 of an attempt: bound the transfer, stream the body into the
//! partial while hashing it, then verify the whole file and make it
//! durable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Response;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::attempt::{Attempt, Kept};
use super::{Downloaded, FetchError, MAX_UNDECLARED_BYTES};

/// Bytes written between two free-space checks during a download.
const SPACE_CHECK_BYTES: u64 = 256 * 1024;

/// How far a body may go, decided by step 4.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// Most bytes the file may have on disk.
    limit: u64,
    /// The expected size of the whole file, when declared or announced.
    total: Option<u64>,
}

impl Attempt<'_> {
    /// Step 4: the declared size wins over the server's; without either,
    /// [`MAX_UNDECLARED_BYTES`]. A server that announces more is refused
    /// before its body is read.
    pub(super) fn bound(&self, server_total: Option<u64>) -> Result<Bounds, FetchError> {
        let limit = self.expected.size.unwrap_or(
            server_total
                .unwrap_or(MAX_UNDECLARED_BYTES)
                .min(MAX_UNDECLARED_BYTES),
        );
        let total = self.expected.size.or(server_total);
        if let Some(announced) = server_total.filter(|&t| t > limit) {
            return Err(FetchError::TooLarge {
                url: self.url.to_owned(),
                declared: limit,
                received_more: announced - limit,
            });
        }
        Ok(Bounds { limit, total })
    }

    /// Step 5: appends the body to the kept bytes, hashing as it writes,
    /// never past the limit, under the read timeout and the minimum
    /// throughput. Returns the bytes on disk.
    pub(super) async fn stream(
        &self,
        response: Response,
        file: &mut File,
        kept: &mut Kept,
        Bounds { limit, total }: Bounds,
    ) -> Result<u64, FetchError> {
        let url = self.url;
        let resumed_from = kept.offset;
        let mut on_disk = kept.offset;
        let mut meter = ThroughputMeter::new(
            self.cfg.min_throughput_bytes_per_s,
            self.cfg.throughput_window,
            Instant::now(),
        );
        (self.progress)(on_disk, total);
        let mut body = response.bytes_stream();
        // Bytes that may still be written before free space is asked again.
        let mut room = 0u64;
        loop {
            let next = tokio::time::timeout(self.cfg.read_timeout, body.next())
                .await
                .map_err(|_| FetchError::Stalled {
                    url: url.to_owned(),
                    timeout: self.cfg.read_timeout,
                    received: on_disk - resumed_from,
                })?;
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(source)) => {
                    return Err(FetchError::Transport {
                        url: url.to_owned(),
                        source,
                    })
                }
            };
            let len = chunk.len() as u64;
            self.transferred.fetch_add(len, Ordering::Relaxed);
            if on_disk + len > limit {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    declared: limit,
                    received_more: on_disk + len - limit,
                });
            }
            if len > room {
                // Ask once per SPACE_CHECK_BYTES, for the bytes until the
                // next check: a statvfs per chunk would cost a few percent
                // of a fast loopback transfer. The write before is finished
                // first (tokio's file completes a write on a thread of its
                // own after it returned), so that the file system counts
                // every byte written: else a chunk in flight, hundreds of
                // KiB on a loaded box, went past the reserve unmeasured.
                if self.cfg.space.min_free > 0 {
                    file.flush().await.map_err(self.io("write", self.partial))?;
                }
                room = len.max(SPACE_CHECK_BYTES);
                self.keep_free(on_disk, room)?;
            }
            room -= len;
            file.write_all(&chunk)
                .await
                .map_err(self.io("write", self.partial))?;
            kept.hasher.update(&chunk);
            on_disk += len;
            (self.progress)(on_disk, total);
            // The cap, by not reading on before the limiter allows; then
            // the window, checked between chunks. A closed window pauses
            // the transfer with its connection kept, so the bytes already
            // on their way (socket buffers) are not lost; when the server
            // drops the connection meanwhile, the read after the pause
            // fails and the retry resumes from the partial with a Range.
            self.cfg.gate.take(chunk.len()).await;
            if !self.cfg.gate.is_open() {
                file.flush().await.map_err(self.io("write", self.partial))?;
                tracing::info!(url, on_disk, "download window closed: transfer paused");
                self.cfg.gate.wait_open().await;
                tracing::info!(url, on_disk, "download window open: transfer resumed");
                meter = ThroughputMeter::new(
                    self.cfg.min_throughput_bytes_per_s,
                    self.cfg.throughput_window,
                    Instant::now(),
                );
            }
            if let Err(bytes_per_s) = meter.record(len, Instant::now()) {
                return Err(FetchError::TooSlow {
                    url: url.to_owned(),
                    bytes_per_s,
                    min_bytes_per_s: self.cfg.min_throughput_bytes_per_s,
                    window: self.cfg.throughput_window,
                });
            }
        }
        if let Some(expected) = total.filter(|&t| on_disk < t) {
            file.flush().await.map_err(self.io("write", self.partial))?;
            return Err(FetchError::Truncated {
                url: url.to_owned(),
                expected,
                received: on_disk,
            });
        }
        Ok(on_disk)
    }

    /// Stops before writing `len` more bytes would leave less than
    /// `min_free_space` free.
    fn keep_free(&self, on_disk: u64, len: u64) -> Result<(), FetchError> {
        let space = &self.cfg.space;
        match space.room_for(self.partial, len) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(free)) => Err(FetchError::NoSpace {
                url: self.url.to_owned(),
                free,
                written: on_disk,
                min_free: space.min_free,
                enospc: false,
            }),
            Err(e) => Err(self.io("statvfs", self.partial)(e)),
        }
    }

    /// Step 6: checks the SHA-256 of the whole file when one is expected,
    /// then fsyncs it and removes the meta file.
    pub(super) async fn verify(
        &self,
        file: &mut File,
        hasher: Sha256,
        size: u64,
        resumed_from: u64,
    ) -> Result<Downloaded, FetchError> {
        let actual = banalytics_home::Sha256::from_hasher(hasher);
        if let Some(expected) = self.expected.sha256.filter(|want| *want != actual) {
            return Err(FetchError::ChecksumMismatch {
                url: self.url.to_owned(),
                expected,
                actual,
            });
        }
        self.finish(file).await?;
        Ok(self.done(actual, size, resumed_from))
    }
}

/// Averages throughput over consecutive windows.
#[derive(Debug)]
struct ThroughputMeter {
    min_bytes_per_s: u64,
    window: Duration,
    window_start: Instant,
    bytes_in_window: u64,
}

impl ThroughputMeter {
    fn new(min_bytes_per_s: u64, window: Duration, now: Instant) -> Self {
        Self {
            min_bytes_per_s,
            window,
            window_start: now,
            bytes_in_window: 0,
        }
    }

    /// Counts `bytes` received at `now`; when a window has elapsed, returns
    /// the average as the error if it is under the minimum, and starts a new
    /// window otherwise.
    fn record(&mut self, bytes: u64, now: Instant) -> Result<(), u64> {
        self.bytes_in_window += bytes;
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.min_bytes_per_s == 0 || elapsed < self.window || elapsed.is_zero() {
            return Ok(());
        }
        let bytes_per_s = (self.bytes_in_window as f64 / elapsed.as_secs_f64()) as u64;
        if bytes_per_s < self.min_bytes_per_s {
            return Err(bytes_per_s);
        }
        self.window_start = now;
        self.bytes_in_window = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_meter_fails_only_after_a_full_slow_window() {
        let start = Instant::now();
        let window = Duration::from_secs(30);
        let mut meter = ThroughputMeter::new(1000, window, start);
        assert_eq!(meter.record(10, start + Duration::from_secs(29)), Ok(()));
        assert_eq!(meter.record(10, start + Duration::from_secs(40)), Err(0));

        let mut meter = ThroughputMeter::new(1000, window, start);
        assert_eq!(
            meter.record(40_000, start + Duration::from_secs(30)),
            Ok(())
        );
        // A new window started at 30 s: 1 KiB in the next 30 s is too slow.
        assert_eq!(
            meter.record(1_000, start + Duration::from_secs(60)),
            Err(33)
        );
    }

    #[test]
    fn throughput_meter_with_zero_minimum_never_fails() {
        let start = Instant::now();
        let mut meter = ThroughputMeter::new(0, Duration::from_secs(1), start);
        assert_eq!(meter.record(0, start + Duration::from_secs(3600)), Ok(()));
    }
}
