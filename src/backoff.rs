//! Reconnect pacing: exponential backoff with full jitter, from a seeded generator.
//!
//! Full jitter (a uniform delay in `[0, min(cap, initial * 2^n)]`) spreads a crowd of
//! clients whose server died at the same moment over the whole window, instead of letting
//! them retry in lock step. The generator is injected and seeded, so a simulation replays
//! the same delays.

use std::time::Duration;

/// A small, fast, seeded pseudo-random generator (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..=max` (max < 2^64 - 1; the bias is below 2^-32 for the
    /// millisecond ranges used here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

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

    /// A delay drawn uniformly from the window for retry number `failures`.
    pub fn delay(&self, failures: u32, rng: &mut Rng) -> Duration {
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

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
