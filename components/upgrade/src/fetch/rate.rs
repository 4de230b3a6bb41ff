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

    #[tokio::test]
    async fn an_open_gate_lets_everything_through_at_once() {
        let gate = Gate::default();
        assert!(gate.is_open());
        gate.take(usize::MAX / 2).await;
        gate.wait_open().await;
        assert_eq!(gate.rate(), None);
    }
}
