//! Admission control for listeners: a token bucket that paces accepts (what waits stays in
//! the kernel's backlog, never refused).

use std::time::{Duration, Instant};

/// A token bucket: `per_sec` tokens a second, at most a twentieth of a second's worth
/// (and at least one) saved up, so that a burst after a quiet spell stays short.
pub(super) struct Bucket {
    per_sec: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(per_sec: u32, now: Instant) -> Bucket {
        let per_sec = f64::from(per_sec.max(1));
        let burst = (per_sec / 20.0).max(1.0);
        Bucket {
            per_sec,
            tokens: burst,
            burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}
