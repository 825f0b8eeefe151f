//! Reconnect pacing: exponential backoff with full jitter, from an injected generator.
//!
//! Full jitter (a uniform delay in `[0, min(cap, initial * 2^n)]`) spreads a crowd of
//! clients whose server died at the same moment over the whole window, instead of letting
//! them retry in lock step. The generator is injected and seeded, so a simulation replays
//! the same delays.

use crate::rng::Rng;
use std::time::Duration;

/// Backoff policy: the first retry window, and its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first retry's delay.
    pub initial: Duration,
    /// Upper bound of any retry's delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms first window, doubling up to 10 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The window for retry number `failures` (0 for the first): `min(max, initial * 2^n)`.
    pub fn window(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A delay drawn uniformly from the window for retry number `failures` (the engine's
    /// own draw; applications set the policy, not the generator).
    pub(crate) fn delay(&self, failures: u32, rng: &mut Rng) -> Duration {
        let window = self.window(failures);
        // Microsecond granularity; windows above ~584,000 years saturate harmlessly.
        let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.up_to(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_then_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let w: Vec<_> = (0..6).map(|n| b.window(n).as_millis()).collect();
        assert_eq!(w, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.window(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_in_window_and_spread() {
        let b = Backoff::default();
        let mut rng = Rng::new(7);
        let delays: Vec<_> = (0..1000).map(|_| b.delay(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= b.initial));
        // Full jitter: both halves of the window are used.
        let low = delays.iter().filter(|d| **d < b.initial / 2).count();
        assert!((300..700).contains(&low), "low half got {low} of 1000");
    }
}
