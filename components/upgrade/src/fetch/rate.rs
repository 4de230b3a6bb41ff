//! The download gate: one bandwidth cap for all parallel downloads
//! together (`max_download_rate`, a `governor` limiter whose cells are
//! bytes) and the download window (`download_window`) outside which no
//! body byte is read.
//!
//! The body of a transfer asks the gate for each chunk it received before
//! reading the next, so the cap holds by TCP back-pressure: the sender
//! waits for the box. When the window closes, the transfer pauses between
//! two chunks with its connection kept, so the bytes in flight are not
//! lost, and reads on when the next window opens; a connection the server
//! dropped meanwhile fails that read, and the retry resumes the partial
//! with a `Range` request.

use std::{
    fmt,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;

use crate::schedule::{SharedClock, Window, WindowState};

/// The smallest burst the limiter allows, in bytes: a chunk of the HTTP
/// body is rarely bigger, so a chunk is rarely split into several waits.
pub const MIN_BURST_BYTES: u32 = 16 * 1024;

/// The burst as a fraction of a second of the rate: a tenth of a second
/// of data may pass at once after an idle spell, which over a transfer of
/// ten seconds or more is within 1 % of the cap.
pub const BURST_DIVISOR: u32 = 10;

/// Parses a rate such as `"2 MiB/s"`, `"500 KiB/s"`, `"1.5MB/s"` or
/// `"800000 B/s"` into bytes per second (1 B/s to 4 GiB/s).
pub fn parse_rate(text: &str) -> Result<NonZeroU32, String> {
    let refuse = || {
        format!("{text:?} is not a rate; accepted: a number and B/s, KB/s, KiB/s, MB/s, MiB/s, GB/s or GiB/s, from 1 B/s to 4 GiB/s")
    };
    let body = text.trim().strip_suffix("/s").ok_or_else(refuse)?;
    let bytes = bytes_of(body).ok_or_else(refuse)?;
    if !(1.0..=f64::from(u32::MAX)).contains(&bytes) {
        return Err(refuse());
    }
    NonZeroU32::new(bytes as u32).ok_or_else(refuse)
}

/// Parses a size such as `"512 MiB"`, `"1.5 GB"` or `"0 B"` into bytes
/// (the units of [`parse_rate`], up to 16 EiB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let refuse = || {
        format!("{text:?} is not a size; accepted: a number and B, KB, KiB, MB, MiB, GB or GiB, such as \"512 MiB\"")
    };
    let bytes = bytes_of(text).ok_or_else(refuse)?;
    if !(0.0..u64::MAX as f64).contains(&bytes) {
        return Err(refuse());
    }
    Ok(bytes as u64)
}

/// A number and a byte unit, rounded to whole bytes.
fn bytes_of(text: &str) -> Option<f64> {
    let body = text.trim();
    let split = body.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = body.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = match unit.trim() {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * unit).round())
}

/// The cap and the window every download of an upgrade center passes;
/// clones share one limiter. The default lets everything through.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    rate: Option<(NonZeroU32, DefaultDirectRateLimiter, NonZeroU32)>,
    window: Option<(Window, SharedClock)>,
    /// The window is open until then: asked per chunk, the schedule is
    /// computed again only once that instant passed.
    open_until: Mutex<Option<Timestamp>>,
}

impl Gate {
    /// A gate capping at `rate` bytes per second and reading the body only
    /// while `window` is open on `clock`.
    pub fn new(rate: Option<NonZeroU32>, window: Option<Window>, clock: SharedClock) -> Gate {
        if rate.is_none() && window.is_none() {
            return Gate::default();
        }
        let rate = rate.map(|r| {
            let burst = (r.get() / BURST_DIVISOR).max(MIN_BURST_BYTES).min(r.get());
            let burst = NonZeroU32::new(burst).expect("at least 1");
            let limiter = RateLimiter::direct(Quota::per_second(r).allow_burst(burst));
            (r, limiter, burst)
        });
        Gate {
            inner: Some(Arc::new(Inner {
                rate,
                window: window.map(|w| (w, clock)),
                open_until: Mutex::new(None),
            })),
        }
    }

    /// The cap in bytes per second, if any.
    pub fn rate(&self) -> Option<NonZeroU32> {
        self.inner.as_ref()?.rate.as_ref().map(|(r, _, _)| *r)
    }

    /// Waits until `bytes` more may pass under the cap (at once without
    /// one).
    pub async fn take(&self, bytes: usize) {
        let Some((_, limiter, burst)) = self.inner.as_ref().and_then(|i| i.rate.as_ref()) else {
            return;
        };
        let mut left = bytes;
        while left > 0 {
            let n = left.min(burst.get() as usize);
            let cells = NonZeroU32::new(n as u32).expect("n > 0");
            // `n` is at most the burst, so the limiter can always grant it.
            let _ = limiter.until_n_ready(cells).await;
            left -= n;
        }
    }

    /// Whether body bytes may be read now (always, without a window).
    pub fn is_open(&self) -> bool {
        let Some(inner) = self.inner.as_ref() else {
            return true;
        };
        let Some((w, clock)) = inner.window.as_ref() else {
            return true;
        };
        let now = clock.now();
        let mut open_until = inner.open_until.lock().expect("gate lock poisoned");
        if open_until.is_some_and(|t| now < t) {
            return true;
        }
        match w.state_at(now) {
            Ok(WindowState::Open { closes }) => {
                *open_until = Some(closes.timestamp());
                true
            }
            _ => {
                *open_until = None;
                false
            }
        }
    }

    /// Returns once body bytes may be read (at once without a window).
    pub async fn wait_open(&self) {
        if let Some((w, clock)) = self.inner.as_ref().and_then(|i| i.window.as_ref()) {
            if let Err(e) = w.wait_open(&**clock).await {
                tracing::warn!(window = %w, error = %e, "the download window never opens; downloading anyway");
            }
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = self
            .inner
            .as_ref()
            .and_then(|i| i.window.as_ref().map(|(w, _)| w.to_string()));
        f.debug_struct("Gate")
            .field("rate", &self.rate())
            .field("window", &window)
            .finish()
    }
}

/// Two gates are equal when they are the same gate (clones of one).
impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        match (&self.inner, &other.inner) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Gate {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_the_units_of_rates() {
        assert_eq!(parse_size("512 MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("0 B"), Ok(0));
        assert!(parse_size("512").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 MiB/s").is_err());
    }

    #[test]
    fn rates_parse_in_bytes_per_second() {
        assert_eq!(parse_rate("2 MiB/s").unwrap().get(), 2 * 1024 * 1024);
        assert_eq!(parse_rate("500KiB/s").unwrap().get(), 500 * 1024);
        assert_eq!(parse_rate("1.5 MB/s").unwrap().get(), 1_500_000);
        assert_eq!(parse_rate("800000 B/s").unwrap().get(), 800_000);
        for bad in ["2 MiB", "fast/s", "0 B/s", "5 GiB/s", "2 mib/s", "-1 B/s"] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn an_open_gate_lets_everything_through_at_once() {
        let gate = Gate::default();
        assert!(gate.is_open());
        gate.take(usize::MAX / 2).await;
        gate.wait_open().await;
        assert_eq!(gate.rate(), None);
    }
}
