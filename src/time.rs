//! Ticks: the engine's unit of time.
//!
//! The timing wheel and the idle trackers count time in integer [`Tick`]s, never in
//! [`Instant`]s: a tick is a `u32`, so an activity timestamp costs four bytes and a store.
//! [`Clock`] is the one place where a wall-clock [`Instant`] becomes a tick and a tick count
//! becomes a [`Duration`] again. Nothing in this crate's core reads the clock itself: the
//! driver reads it once per poll return and passes the result in.
//!
//! # The wrap rule
//!
//! A tick counter wraps (at 1 ms per tick, after about 49.7 days). Two ticks are therefore
//! compared through their wrapping difference read as a signed number ([`Tick::since`]),
//! which gives the right answer as long as the two ticks are less than 2^31 ticks apart.
//! `Tick` deliberately does not implement `Ord`: a total order on wrapping values would be
//! wrong exactly when it matters. Everything that stores ticks keeps them within
//! [`MAX_DELAY`] (2^30 - 1) of the present, which leaves a margin of another 2^30 ticks for a
//! driver that polls late.

use std::time::{Duration, Instant};

/// The longest delay, in ticks, that anything in this crate schedules.
///
/// Longer delays are clamped to it (see [`Clock::ticks_for`] and
/// [`Wheel::insert`](crate::wheel::Wheel::insert)). It is half of the range over which
/// wrapping comparisons are valid, so that a deadline computed from a slightly stale "now"
/// still compares correctly. At 1 ms per tick it is about 12.4 days.
pub const MAX_DELAY: u32 = (1 << 30) - 1;

/// A point in time, counted in ticks since the [`Clock`]'s origin, modulo 2^32.
///
/// Compare ticks only through [`since`](Tick::since) and the `is_*` helpers, which follow the
/// wrap rule described in the [module documentation](self): correct for ticks less than 2^31
/// apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Tick(pub u32);

impl Tick {
    /// The tick `ticks` after this one (wrapping).
    #[inline]
    #[must_use]
    pub const fn wrapping_add(self, ticks: u32) -> Tick {
        Tick(self.0.wrapping_add(ticks))
    }

    /// The tick `ticks` before this one (wrapping).
    #[inline]
    #[must_use]
    pub const fn wrapping_sub(self, ticks: u32) -> Tick {
        Tick(self.0.wrapping_sub(ticks))
    }

    /// How many ticks `self` is after `earlier`; negative if it is before.
    ///
    /// Exact while the two ticks are less than 2^31 ticks apart.
    #[inline]
    #[must_use]
    pub const fn since(self, earlier: Tick) -> i32 {
        // The cast reinterprets the wrapped difference as signed: that is the wrap rule.
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Whether `self` is strictly later than `other`.
    #[inline]
    #[must_use]
    pub const fn is_after(self, other: Tick) -> bool {
        self.since(other) > 0
    }

    /// Whether `self` is strictly earlier than `other`.
    #[inline]
    #[must_use]
    pub const fn is_before(self, other: Tick) -> bool {
        self.since(other) < 0
    }

    /// Whether `self` is `other` or earlier.
    #[inline]
    #[must_use]
    pub const fn is_at_or_before(self, other: Tick) -> bool {
        self.since(other) <= 0
    }

    /// Whether `self` is `other` or later.
    #[inline]
    #[must_use]
    pub const fn is_at_or_after(self, other: Tick) -> bool {
        self.since(other) >= 0
    }

    /// The earlier of two ticks (under the wrap rule).
    #[inline]
    #[must_use]
    pub const fn earliest(self, other: Tick) -> Tick {
        if self.is_before(other) {
            self
        } else {
            other
        }
    }

    /// The later of two ticks (under the wrap rule).
    #[inline]
    #[must_use]
    pub const fn latest(self, other: Tick) -> Tick {
        if self.is_after(other) {
            self
        } else {
            other
        }
    }
}

/// Converts between wall-clock time and ticks.
///
/// A clock is an origin plus a tick length. It never reads the system clock: every
/// [`Instant`] comes from the caller.
///
/// Rounding is chosen so that timers never fire early in wall time:
/// - an instant becomes the tick it falls in ([`tick_of`](Clock::tick_of), floor);
/// - a one-shot deadline `d` after an instant becomes the first tick that starts at or after
///   that instant plus `d` ([`deadline_after`](Clock::deadline_after), ceiling);
/// - an interval that is measured between two floored ticks, such as an idle period from
///   the tick of the last read to the tick of "now", needs one tick more than the ceiling
///   of its length ([`interval_ticks`](Clock::interval_ticks)), because flooring the start
///   can make it look up to one tick longer than it is.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    tick: Duration,
    /// `tick` in nanoseconds: `tick_of` runs on every input and divides in 64 bits.
    tick_ns: u64,
}

impl Clock {
    /// A clock whose tick 0 starts at `origin` and whose ticks last `tick`.
    ///
    /// # Panics
    ///
    /// If `tick` is zero: a tick length is configuration, and zero is meaningless.
    #[must_use]
    pub fn new(origin: Instant, tick: Duration) -> Clock {
        assert!(
            !tick.is_zero(),
            "Clock::new: the tick length must not be zero"
        );
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);
        Clock {
            origin,
            tick,
            tick_ns,
        }
    }

    /// The length of one tick.
    #[must_use]
    pub fn tick_len(&self) -> Duration {
        self.tick
    }

    /// The instant at which tick 0 starts.
    #[must_use]
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The tick that `at` falls in (floor), wrapping modulo 2^32.
    ///
    /// An instant before the origin maps to tick 0.
    #[must_use]
    pub fn tick_of(&self, at: Instant) -> Tick {
        self.tick_at(self.nanos_of(at))
    }

    /// Nanoseconds from the origin to `at` (zero before it; saturates 584 years after).
    /// An engine reads each new "now" once this way and derives the rest with
    /// [`tick_at`](Self::tick_at) and [`until_at`](Self::until_at).
    #[must_use]
    pub fn nanos_of(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.origin);
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    /// The tick that the instant `ns` nanoseconds after the origin falls in.
    #[must_use]
    pub fn tick_at(&self, ns: u64) -> Tick {
        // Truncating to 32 bits is the wrap: tick numbers are taken modulo 2^32.
        Tick((ns / self.tick_ns) as u32)
    }

    /// The number of ticks that covers `d` (ceiling, so a timer never fires early),
    /// saturating at [`MAX_DELAY`].
    #[must_use]
    pub fn ticks_for(&self, d: Duration) -> u32 {
        let tick = self.tick.as_nanos();
        let ticks = d.as_nanos().div_ceil(tick);
        ticks.min(u128::from(MAX_DELAY)) as u32
    }

    /// The number of ticks to use for an interval of length `d` that is measured from one
    /// floored tick to another (an idle period): [`ticks_for`](Clock::ticks_for)` + 1`,
    /// saturating at [`MAX_DELAY`].
    ///
    /// Two instants whose ticks differ by this count are at least `d` apart, and, when the
    /// wheel is polled every tick, less than `d` plus two ticks apart.
    #[must_use]
    pub fn interval_ticks(&self, d: Duration) -> u32 {
        self.ticks_for(d).saturating_add(1).min(MAX_DELAY)
    }

    /// The tick at which a one-shot timer of length `d` started at `now` should fire.
    ///
    /// It is the first tick that starts at or after `now + d`: a wheel polled with
    /// [`tick_of`](Clock::tick_of) of the current instant returns it no earlier than
    /// `now + d`, and at most one tick later if it is polled every tick. The result is at
    /// most [`MAX_DELAY`] ticks after `now`'s tick.
    #[must_use]
    pub fn deadline_after(&self, now: Instant, d: Duration) -> Tick {
        let tick = self.tick.as_nanos();
        let start = now.saturating_duration_since(self.origin).as_nanos();
        // One tick below the cap, because rounding the sum up can add one.
        let ticks = d.as_nanos().min(u128::from(MAX_DELAY - 1) * tick);
        // Ceiling of the absolute position, then wrap like tick_of.
        Tick((start + ticks).div_ceil(tick) as u32)
    }

    /// The wall-clock length of `ticks` ticks, saturating at [`Duration::MAX`].
    #[must_use]
    pub fn duration_of(&self, ticks: u32) -> Duration {
        self.tick.checked_mul(ticks).unwrap_or(Duration::MAX)
    }

    /// How long to wait from `now` until tick `t` starts; zero if it has already started.
    ///
    /// This is the poll timeout a driver needs for
    /// [`Wheel::next_deadline`](crate::wheel::Wheel::next_deadline). `t` must be within the
    /// wrap rule's range of `now`'s tick.
    #[must_use]
    pub fn until(&self, now: Instant, t: Tick) -> Duration {
        self.until_at(self.nanos_of(now), t)
    }

    /// [`until`](Self::until) from the instant `ns` nanoseconds after the origin.
    #[must_use]
    pub fn until_at(&self, ns: u64, t: Tick) -> Duration {
        let ahead = t.since(self.tick_at(ns));
        if ahead <= 0 {
            return Duration::ZERO;
        }
        let into_tick = ns % self.tick_ns;
        duration_from_nanos(
            u128::from(ahead.unsigned_abs()) * u128::from(self.tick_ns) - u128::from(into_tick),
        )
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Instant has no constructor; any instant serves as an origin, and every other instant
    // in these tests is derived from it, so the tests never depend on the real clock.
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn comparisons_follow_the_wrap_rule() {
        let a = Tick(u32::MAX - 2);
        let b = a.wrapping_add(5);
        assert_eq!(b, Tick(2));
        assert_eq!(b.since(a), 5);
        assert_eq!(a.since(b), -5);
        assert!(b.is_after(a) && a.is_before(b));
        assert!(a.is_at_or_before(a) && a.is_at_or_after(a));
        assert!(!a.is_after(a) && !a.is_before(a));
        assert_eq!(a.earliest(b), a);
        assert_eq!(b.earliest(a), a);
        assert_eq!(a.latest(b), b);
        assert_eq!(b.wrapping_sub(5), a);
        // The edge of the valid range: 2^31 - 1 apart still compares right.
        let far = a.wrapping_add(i32::MAX as u32);
        assert!(far.is_after(a));
    }

    #[test]
    fn tick_of_floors_and_saturates_before_origin() {
        let o = origin();
        let c = Clock::new(o, Duration::from_millis(10));
        assert_eq!(c.tick_of(o), Tick(0));
        assert_eq!(c.tick_of(o + Duration::from_micros(9_999)), Tick(0));
        assert_eq!(c.tick_of(o + Duration::from_millis(10)), Tick(1));
        assert_eq!(c.tick_of(o + Duration::from_millis(1_234)), Tick(123));
        if let Some(before) = o.checked_sub(Duration::from_secs(1)) {
            assert_eq!(c.tick_of(before), Tick(0));
        }
    }

    #[test]
    fn tick_of_wraps() {
        let o = origin();
        let c = Clock::new(o, Duration::from_nanos(1));
        let at = o + Duration::from_nanos((1 << 32) + 7);
        assert_eq!(c.tick_of(at), Tick(7));
    }

    #[test]
    fn ticks_for_rounds_up_and_saturates() {
        let c = Clock::new(origin(), Duration::from_millis(10));
        assert_eq!(c.ticks_for(Duration::ZERO), 0);
        assert_eq!(c.ticks_for(Duration::from_nanos(1)), 1);
        assert_eq!(c.ticks_for(Duration::from_millis(10)), 1);
        assert_eq!(c.ticks_for(Duration::from_millis(11)), 2);
        assert_eq!(c.ticks_for(Duration::from_secs(30)), 3_000);
        assert_eq!(c.ticks_for(Duration::MAX), MAX_DELAY);
        assert_eq!(c.interval_ticks(Duration::from_secs(30)), 3_001);
        assert_eq!(c.interval_ticks(Duration::MAX), MAX_DELAY);
        assert_eq!(c.duration_of(3_000), Duration::from_secs(30));
        assert_eq!(c.tick_len(), Duration::from_millis(10));
    }

    #[test]
    fn deadline_after_is_never_early_and_at_most_one_tick_late() {
        let o = origin();
        let tick = Duration::from_millis(10);
        let c = Clock::new(o, tick);
        for start_us in [0u64, 1, 4_999, 9_999, 10_000, 123_456] {
            for d_us in [0u64, 1, 9_999, 10_000, 10_001, 30_000_000] {
                let now = o + Duration::from_micros(start_us);
                let d = Duration::from_micros(d_us);
                let t = c.deadline_after(now, d);
                // The tick starts at origin + t * tick: not before now + d ...
                let fires_at = o + tick * t.0;
                assert!(fires_at >= now + d, "early: start {start_us} d {d_us}");
                // ... and less than one tick after it.
                assert!(fires_at < now + d + tick, "late: start {start_us} d {d_us}");
            }
        }
    }

    #[test]
    fn interval_ticks_is_never_early_in_wall_time() {
        let o = origin();
        let tick = Duration::from_millis(10);
        let c = Clock::new(o, tick);
        let d = Duration::from_millis(95);
        let n = c.interval_ticks(d);
        for a_us in (0u64..20_000).step_by(1_250) {
            let a = o + Duration::from_micros(a_us);
            // The first instant whose tick is n ticks after a's tick.
            let b = o + tick * c.tick_of(a).wrapping_add(n).0;
            assert!(b - a >= d);
            assert!(b - a < d + tick * 2);
        }
    }

    #[test]
    fn until_reaches_the_start_of_the_tick() {
        let o = origin();
        let c = Clock::new(o, Duration::from_millis(10));
        let now = o + Duration::from_millis(1_234);
        assert_eq!(c.until(now, Tick(123)), Duration::ZERO);
        assert_eq!(c.until(now, Tick(100)), Duration::ZERO);
        assert_eq!(c.until(now, Tick(124)), Duration::from_millis(6));
        assert_eq!(c.until(now, Tick(130)), Duration::from_millis(66));
        assert_eq!(c.tick_of(now + c.until(now, Tick(130))), Tick(130));
    }

    #[test]
    #[should_panic(expected = "tick length")]
    fn zero_tick_is_rejected() {
        let _ = Clock::new(origin(), Duration::ZERO);
    }
}
