//! Per-connection idle detection with one wheel entry and no wheel work per read or write.
//!
//! A connection records activity by storing the current tick ([`IdleTracker::record_read`],
//! [`IdleTracker::record_write`]): one store, no timer touched. The tracker keeps a single
//! [`Wheel`] entry at the earliest tick at which some configured kind of idleness could
//! begin. When that entry fires, [`IdleTracker::on_timer`] recomputes: kinds that really
//! are idle yield an [`IdleEvent`]; if activity moved the deadlines on, the entry is simply
//! re-inserted for the remainder. A busy connection thus costs one wheel insert per period
//! instead of one timer reset per read or write.
//!
//! The kinds and their "first" flag follow Netty's `IdleStateHandler`:
//! - [`IdleKind::Read`]: nothing read for the read period. This is the liveness signal: a
//!   write that "succeeds" only proves the bytes reached the local kernel.
//! - [`IdleKind::Write`]: nothing written for the write period (time to send a ping).
//! - [`IdleKind::All`]: neither read nor written for the all period.
//!
//! While a connection stays idle, the event repeats once per period: events of a kind fall
//! on the whole periods after its last activity, so an event that comes late (the driver
//! was busy) does not push the next one back. An event is *first* if there was activity of
//! its kind since the previous event of that kind, or if it is the kind's first event at
//! all.
//!
//! The periods live in an [`IdleConfig`] shared by all connections of an engine and passed
//! into each call, and a tracker remembers one tick for all its events rather than one per
//! kind, so that it stays at 16 bytes.

use std::time::Duration;

use crate::time::{Clock, Tick, MAX_DELAY};
use crate::wheel::{TimerKey, Wheel};

/// The longest idle period, in ticks (2^28, about 3.1 days at 1 ms per tick). A quarter of
/// the staleness horizon below, so that pulling ancient ticks up to it never changes
/// whether an event was already reported.
pub const MAX_PERIOD: u32 = 1 << 28;

/// Activity older than this is pulled up to it, so that stored ticks never drift out of
/// the wrap rule's range; any period has long expired by then anyway.
const STALE: u32 = MAX_DELAY + 1;

/// A kind of idleness.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum IdleKind {
    /// Nothing was read for the read period.
    Read = 0,
    /// Nothing was written for the write period.
    Write = 1,
    /// Nothing was read or written for the all period.
    All = 2,
}

impl IdleKind {
    /// Every kind, in the order events are reported.
    pub const EVERY: [IdleKind; 3] = [IdleKind::Read, IdleKind::Write, IdleKind::All];

    #[inline]
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One idle event.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct IdleEvent {
    /// What the connection has been idle at.
    pub kind: IdleKind,
    /// Whether this is the first event of its kind since activity of that kind (or ever);
    /// `false` for the repeats, one per period, while the connection stays idle.
    pub first: bool,
}

/// The events produced by one [`IdleTracker::on_timer`] call: at most one per kind.
///
/// A value type with no allocation; iterate it to get the events in the order read, write,
/// all.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct IdleEvents {
    /// Bits 0..3: the kind fired; bits 3..6: it was a first event.
    bits: u8,
}

impl IdleEvents {
    /// No events.
    pub const NONE: IdleEvents = IdleEvents { bits: 0 };

    /// Whether there are no events.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bits & 0b111 == 0
    }

    /// The number of events (0 to 3).
    #[must_use]
    pub fn len(&self) -> usize {
        (self.bits & 0b111).count_ones() as usize
    }

    /// The event of `kind`, if there is one.
    #[must_use]
    pub fn get(&self, kind: IdleKind) -> Option<IdleEvent> {
        (self.bits & kind.bit() != 0).then(|| IdleEvent {
            kind,
            first: self.bits & (kind.bit() << 3) != 0,
        })
    }

    fn push(&mut self, kind: IdleKind, first: bool) {
        self.bits |= kind.bit();
        if first {
            self.bits |= kind.bit() << 3;
        }
    }
}

impl Iterator for IdleEvents {
    type Item = IdleEvent;

    fn next(&mut self) -> Option<IdleEvent> {
        let kind = match self.bits.trailing_zeros() {
            0 => IdleKind::Read,
            1 => IdleKind::Write,
            2 => IdleKind::All,
            _ => return None,
        };
        let event = self.get(kind);
        self.bits &= !(kind.bit() | kind.bit() << 3);
        event
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

impl ExactSizeIterator for IdleEvents {}

/// The idle periods, in ticks, shared by every connection of an engine.
///
/// A kind whose period is `None` (or zero) is disabled and never fires. Periods are capped
/// at [`MAX_PERIOD`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct IdleConfig {
    periods: [Option<u32>; 3],
}

impl IdleConfig {
    /// Every kind disabled.
    pub const DISABLED: IdleConfig = IdleConfig { periods: [None; 3] };

    /// Periods given in ticks: an event fires when `now - last activity >= period`.
    #[must_use]
    pub fn from_ticks(read: Option<u32>, write: Option<u32>, all: Option<u32>) -> IdleConfig {
        let norm = |p: Option<u32>| p.filter(|&p| p > 0).map(|p| p.min(MAX_PERIOD));
        IdleConfig {
            periods: [norm(read), norm(write), norm(all)],
        }
    }

    /// Periods given as durations, converted with [`Clock::interval_ticks`] so that an event
    /// never comes before the period has really passed in wall time (and, with the wheel
    /// polled every tick, less than two ticks after).
    #[must_use]
    pub fn from_durations(
        clock: &Clock,
        read: Option<Duration>,
        write: Option<Duration>,
        all: Option<Duration>,
    ) -> IdleConfig {
        let ticks =
            |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(|d| clock.interval_ticks(d));
        IdleConfig::from_ticks(ticks(read), ticks(write), ticks(all))
    }

    /// The period of `kind` in ticks, or `None` if it is disabled.
    #[must_use]
    pub fn period(&self, kind: IdleKind) -> Option<u32> {
        self.periods[kind as usize]
    }

    /// The read-idle period, if enabled.
    #[must_use]
    pub fn read(&self) -> Option<u32> {
        self.period(IdleKind::Read)
    }

    /// The write-idle period, if enabled.
    #[must_use]
    pub fn write(&self) -> Option<u32> {
        self.period(IdleKind::Write)
    }

    /// The all-idle period, if enabled.
    #[must_use]
    pub fn all(&self) -> Option<u32> {
        self.period(IdleKind::All)
    }

    /// Whether every kind is disabled.
    #[must_use]
    pub fn is_disabled(&self) -> bool {
        self.periods.iter().all(Option::is_none)
    }
}

/// The idle state of one connection: when it last read and wrote, when it last checked for
/// idleness, and its one wheel entry.
///
/// # Call-order contract
///
/// 1. [`new`](IdleTracker::new) when the connection starts (it counts as activity), then
///    [`arm`](IdleTracker::arm) to create the wheel entry.
/// 2. [`record_read`](IdleTracker::record_read) / [`record_write`](IdleTracker::record_write)
///    on activity, as often as it happens; they never touch the wheel.
/// 3. When [`Wheel::poll`] returns this tracker's key, call
///    [`on_timer`](IdleTracker::on_timer) with it before anything else uses the tracker's
///    key; it handles the events and re-inserts the one entry.
/// 4. Call [`arm`](IdleTracker::arm) again whenever the `extra` deadline changes, and
///    [`disarm`](IdleTracker::disarm) before dropping the tracker, so that no entry outlives
///    the connection.
///
/// Every call takes the same `value` (the wheel payload naming the connection, for example
/// a slab index with a generation) and the engine's shared [`IdleConfig`].
///
/// # Extra deadlines
///
/// Other one-shot deadlines of the connection (handshake deadline, connect timeout,
/// reconnect backoff, close linger) ride on the same entry: pass the earliest of them as
/// `extra`, and the entry fires no later than it. The tracker does not remember `extra`; the
/// engine keeps its own deadlines, checks them itself whenever the key fires, and passes the
/// deadlines still pending (or `None`) to `on_timer`.
///
/// Ticks passed in must never go backwards. [`arm`](IdleTracker::arm) or
/// [`on_timer`](IdleTracker::on_timer) must run at least once every 2^28 ticks, which keeps
/// the stored ticks within the wrap rule; an armed tracker with any kind enabled fires at
/// least that often by itself when the wheel is polled on time. A tracker left unarmed for
/// longer should be replaced with a fresh [`new`](IdleTracker::new) one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IdleTracker {
    last_read: Tick,
    last_write: Tick,
    /// The tick of the last check ([`on_timer`](IdleTracker::on_timer)), or of creation
    /// before the first. Every event due at or before it has been reported, which is all a
    /// tracker needs to know of its past events: a kind has had an event since its last
    /// activity exactly when a whole period after that activity is at or before this tick.
    checked: Tick,
    key: Option<TimerKey>,
}

impl IdleTracker {
    /// A tracker for a connection that starts at `now`, which counts as both a read and a
    /// write (as in Netty, a new connection is not idle). Not armed yet.
    #[must_use]
    pub fn new(now: Tick) -> IdleTracker {
        IdleTracker {
            last_read: now,
            last_write: now,
            checked: now,
            key: None,
        }
    }

    /// Records that bytes were read at `now`. One store; the wheel is not touched.
    #[inline]
    pub fn record_read(&mut self, now: Tick) {
        self.last_read = now;
    }

    /// Records that bytes were written at `now`. One store; the wheel is not touched.
    ///
    /// Call it whenever bytes actually reached the kernel, including partial progress of a
    /// pending write (Netty's `observeOutput`): a slow reader whose pending output keeps
    /// draining is not write idle, whereas a write that makes no progress for the write
    /// period is. Do not call it when data is merely queued.
    #[inline]
    pub fn record_write(&mut self, now: Tick) {
        self.last_write = now;
    }

    /// The tick of the last recorded read.
    #[must_use]
    pub fn last_read(&self) -> Tick {
        self.last_read
    }

    /// The tick of the last recorded write.
    #[must_use]
    pub fn last_write(&self) -> Tick {
        self.last_write
    }

    /// The key of the tracker's wheel entry, if it is armed.
    #[must_use]
    pub fn key(&self) -> Option<TimerKey> {
        self.key
    }

    /// Whether the tracker has a wheel entry.
    #[must_use]
    pub fn is_armed(&self) -> bool {
        self.key.is_some()
    }

    /// The earliest tick at which an enabled kind will be idle, given the activity recorded
    /// so far; `None` if every kind is disabled.
    #[must_use]
    #[inline]
    pub fn next_deadline(&self, cfg: &IdleConfig) -> Option<Tick> {
        let mut next = None;
        for kind in IdleKind::EVERY {
            if let Some(period) = cfg.period(kind) {
                let due = next_after(self.last_activity(kind), period, self.checked);
                next = Some(earliest(next, due));
            }
        }
        next
    }

    /// Creates or moves the tracker's one wheel entry to the earliest of
    /// [`next_deadline`](IdleTracker::next_deadline) and `extra`; removes it if there is
    /// neither.
    ///
    /// `value` is stored in a new entry; a moved entry keeps the value it was created with.
    pub fn arm(
        &mut self,
        cfg: &IdleConfig,
        wheel: &mut Wheel,
        now: Tick,
        value: u32,
        extra: Option<Tick>,
    ) {
        self.normalize(now);
        self.schedule(cfg, wheel, value, extra);
    }

    /// Removes the tracker's wheel entry, if any.
    pub fn disarm(&mut self, wheel: &mut Wheel) {
        if let Some(key) = self.key.take() {
            wheel.cancel(key);
        }
    }

    /// Handles the firing of the tracker's wheel entry `fired`, which [`Wheel::poll`] has
    /// just returned (and so removed) at `now`.
    ///
    /// Returns an event for each enabled kind that has been idle for a whole number of its
    /// periods since the last check; the next event of such a kind is due at the next whole
    /// period after its last activity unless activity intervenes. Then inserts the one entry
    /// again at the earliest of the idle deadlines and `extra`. A key that is not this
    /// tracker's current one (a stale firing) is ignored: no events, no change.
    // Always inlined: it runs once per fired timer, and callers as large as the engine's
    // timer handler or a benchmark loop otherwise get it out of line, at about 11 more
    // instructions per timer.
    #[inline(always)]
    pub fn on_timer(
        &mut self,
        cfg: &IdleConfig,
        wheel: &mut Wheel,
        fired: TimerKey,
        now: Tick,
        value: u32,
        extra: Option<Tick>,
    ) -> IdleEvents {
        if self.key != Some(fired) {
            return IdleEvents::NONE;
        }
        self.normalize(now);
        let checked = std::mem::replace(&mut self.checked, now);
        let mut events = IdleEvents::NONE;
        let mut next = extra;
        // One pass decides the events and the next deadline; a disabled kind costs one test.
        for kind in IdleKind::EVERY {
            if let Some(period) = cfg.period(kind) {
                let last = self.last_activity(kind);
                let due = check(kind, period, last, checked, now, &mut events);
                next = Some(earliest(next, due));
            }
        }
        // The wheel already removed the fired entry, so this is a fresh insert, not a move.
        self.key = next.map(|at| wheel.insert(at, value));
        events
    }

    #[inline]
    fn last_activity(&self, kind: IdleKind) -> Tick {
        match kind {
            IdleKind::Read => self.last_read,
            IdleKind::Write => self.last_write,
            IdleKind::All => self.last_read.latest(self.last_write),
        }
    }

    fn schedule(&mut self, cfg: &IdleConfig, wheel: &mut Wheel, value: u32, extra: Option<Tick>) {
        let target = match (self.next_deadline(cfg), extra) {
            (Some(idle), Some(extra)) => Some(idle.earliest(extra)),
            (idle, extra) => idle.or(extra),
        };
        match (target, self.key) {
            (Some(at), Some(key)) => {
                // A key that is no longer live fired without on_timer being called.
                let moved = wheel.reschedule(key, at);
                self.key = Some(moved.unwrap_or_else(|| wheel.insert(at, value)));
            }
            (Some(at), None) => self.key = Some(wheel.insert(at, value)),
            (None, Some(_)) => self.disarm(wheel),
            (None, None) => {}
        }
    }

    /// Pulls ancient ticks up to `now - STALE`, so that comparisons with them stay valid.
    ///
    /// Every period has expired at that distance, so no event is lost. Whether a kind has
    /// had its event since its activity stays the same too: that holds when the last check
    /// came at least a period after the activity, and a tracker that is checked at least
    /// every 2^28 ticks (see the call-order contract) has a last check more than
    /// [`MAX_PERIOD`] after the pulled-up tick. Only the phase of the repeats moves.
    fn normalize(&mut self, now: Tick) {
        let floor = now.wrapping_sub(STALE);
        let pull = |t: &mut Tick| {
            if t.is_before(floor) {
                *t = floor;
            }
        };
        pull(&mut self.last_read);
        pull(&mut self.last_write);
        pull(&mut self.checked);
    }
}

/// The first tick after `after` that lies a whole number (at least one) of `period`s after
/// `last`.
#[inline]
fn next_after(last: Tick, period: u32, after: Tick) -> Tick {
    let since = after.since(last);
    if since < period as i32 {
        // The usual case, and the only one while a kind is not idle: no division.
        last.wrapping_add(period)
    } else {
        last.wrapping_add((since as u32 / period + 1) * period)
    }
}

/// Decides whether `kind`, last active at `last`, with the previous check at `checked`,
/// has an event due at `now`: pushes it to `events`, and returns the kind's next deadline.
#[inline(always)]
fn check(
    kind: IdleKind,
    period: u32,
    last: Tick,
    checked: Tick,
    now: Tick,
    events: &mut IdleEvents,
) -> Tick {
    // The usual firing of a lazy entry: activity within the last period, so nothing is due
    // whatever the previous check saw. Unsigned, so activity stamped after `now` goes the
    // long way below.
    if now.0.wrapping_sub(last.0) < period {
        return last.wrapping_add(period);
    }
    let due = next_after(last, period, checked);
    if due.is_after(now) {
        return due;
    }
    // Whether an event already came between the activity and the previous check.
    let repeat = checked.since(last) >= period as i32;
    events.push(kind, !repeat);
    next_after(last, period, now)
}

#[inline]
fn earliest(a: Option<Tick>, b: Tick) -> Tick {
    a.map_or(b, |a| a.earliest(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const VALUE: u32 = 7;

    /// One connection on a virtual clock: ticks advance by hand and the wheel is polled
    /// every tick, as the driver does.
    struct Sim {
        wheel: Wheel,
        cfg: IdleConfig,
        conn: IdleTracker,
        now: Tick,
        out: Vec<(TimerKey, u32)>,
        events: Vec<(u32, IdleEvent)>,
        extra: Option<Tick>,
    }

    impl Sim {
        fn new(cfg: IdleConfig) -> Sim {
            Sim::starting_at(cfg, Tick(0))
        }

        fn starting_at(cfg: IdleConfig, start: Tick) -> Sim {
            // Few slots, so that periods span several rotations.
            let mut wheel = Wheel::with_slots_at(16, start);
            let mut conn = IdleTracker::new(start);
            conn.arm(&cfg, &mut wheel, start, VALUE, None);
            let mut out = Vec::new();
            wheel.poll(start, &mut out, usize::MAX);
            assert!(out.is_empty());
            Sim {
                wheel,
                cfg,
                conn,
                now: start,
                out,
                events: Vec::new(),
                extra: None,
            }
        }

        fn step(&mut self) {
            self.now = self.now.wrapping_add(1);
            self.out.clear();
            self.wheel.poll(self.now, &mut self.out, usize::MAX);
            for &(key, value) in &self.out {
                assert_eq!(value, VALUE);
                let events = self.conn.on_timer(
                    &self.cfg,
                    &mut self.wheel,
                    key,
                    self.now,
                    value,
                    self.extra,
                );
                for event in events {
                    self.events.push((self.now.0, event));
                }
            }
            assert!(self.wheel.len() <= 1, "more than one entry per tracker");
            assert_eq!(self.wheel.len(), usize::from(self.conn.is_armed()));
        }

        fn run(&mut self, ticks: u32) {
            for _ in 0..ticks {
                self.step();
            }
        }

        fn read(&mut self) {
            self.conn.record_read(self.now);
        }

        fn write(&mut self) {
            self.conn.record_write(self.now);
        }

        fn take(&mut self) -> Vec<(u32, IdleKind, bool)> {
            self.events
                .drain(..)
                .map(|(t, e)| (t, e.kind, e.first))
                .collect()
        }
    }

    fn read_only(period: u32) -> IdleConfig {
        IdleConfig::from_ticks(Some(period), None, None)
    }

    #[test]
    fn tracker_is_small() {
        assert_eq!(std::mem::size_of::<IdleTracker>(), 16);
        assert!(std::mem::size_of::<IdleConfig>() <= 24);
        assert_eq!(std::mem::size_of::<IdleEvents>(), 1);
    }

    #[test]
    fn read_idle_fires_after_exactly_the_period() {
        let mut sim = Sim::new(read_only(100));
        sim.run(99);
        assert!(sim.take().is_empty(), "one tick early");
        sim.step();
        assert_eq!(sim.take(), vec![(100, IdleKind::Read, true)]);
    }

    #[test]
    fn read_idle_counts_from_the_last_read() {
        let mut sim = Sim::new(read_only(100));
        sim.run(37);
        sim.read();
        sim.run(99);
        assert!(sim.take().is_empty());
        sim.step();
        assert_eq!(sim.take(), vec![(137, IdleKind::Read, true)]);
    }

    #[test]
    fn steady_traffic_never_fires() {
        let mut sim = Sim::new(IdleConfig::from_ticks(Some(10), Some(10), Some(10)));
        for _ in 0..2_000 {
            sim.step();
            if sim.now.0 % 9 == 0 {
                sim.read();
                sim.write();
            }
        }
        assert!(sim.take().is_empty());
        assert!(sim.conn.is_armed());
    }

    #[test]
    fn repeated_every_period_and_first_again_after_activity() {
        let mut sim = Sim::new(read_only(10));
        sim.run(35);
        sim.read();
        sim.run(30);
        assert_eq!(
            sim.take(),
            vec![
                (10, IdleKind::Read, true),
                (20, IdleKind::Read, false),
                (30, IdleKind::Read, false),
                (45, IdleKind::Read, true),
                (55, IdleKind::Read, false),
                (65, IdleKind::Read, false),
            ]
        );
    }

    #[test]
    fn activity_on_the_tick_of_an_event_makes_the_next_one_first() {
        let mut sim = Sim::new(read_only(10));
        sim.run(10);
        sim.read();
        sim.run(10);
        assert_eq!(
            sim.take(),
            vec![(10, IdleKind::Read, true), (20, IdleKind::Read, true)]
        );
    }

    #[test]
    fn write_idle() {
        let mut sim = Sim::new(IdleConfig::from_ticks(None, Some(20), None));
        for _ in 0..100 {
            sim.step();
            if sim.now.0 % 7 == 0 {
                sim.write();
            }
        }
        // Reads do not count as writes.
        sim.read();
        sim.run(40);
        // The last write was at tick 98.
        assert_eq!(
            sim.take(),
            vec![(118, IdleKind::Write, true), (138, IdleKind::Write, false)]
        );
    }

    #[test]
    fn all_idle_needs_silence_both_ways() {
        let mut sim = Sim::new(IdleConfig::from_ticks(None, None, Some(20)));
        // Reads stop at 50, writes carry on to 100: not all idle before 120.
        for _ in 0..100 {
            sim.step();
            if sim.now.0 <= 50 && sim.now.0 % 5 == 0 {
                sim.read();
            }
            if sim.now.0 % 10 == 0 {
                sim.write();
            }
        }
        sim.run(40);
        assert_eq!(
            sim.take(),
            vec![(120, IdleKind::All, true), (140, IdleKind::All, false)]
        );
    }

    #[test]
    fn kinds_fire_independently_in_one_call() {
        let mut sim = Sim::new(IdleConfig::from_ticks(Some(10), Some(10), Some(10)));
        sim.run(10);
        assert_eq!(
            sim.take(),
            vec![
                (10, IdleKind::Read, true),
                (10, IdleKind::Write, true),
                (10, IdleKind::All, true),
            ]
        );
        sim.write();
        sim.run(10);
        assert_eq!(
            sim.take(),
            vec![
                (20, IdleKind::Read, false),
                (20, IdleKind::Write, true),
                (20, IdleKind::All, true),
            ]
        );
    }

    #[test]
    fn pending_write_that_progresses_is_not_write_idle() {
        // Netty's observeOutput: a slow reader drains our pending output a little at a time.
        let mut sim = Sim::new(IdleConfig::from_ticks(None, Some(20), None));
        for _ in 0..200 {
            sim.step();
            if sim.now.0 % 15 == 0 {
                // Partial progress of the pending write: bytes reached the kernel.
                sim.write();
            }
        }
        assert!(sim.take().is_empty());
        // Now the peer stops reading: the write is stuck and makes no progress.
        sim.run(40);
        assert_eq!(
            sim.take(),
            vec![(215, IdleKind::Write, true), (235, IdleKind::Write, false)]
        );
    }

    #[test]
    fn disabled_kinds_never_fire() {
        let mut sim = Sim::new(read_only(50));
        for _ in 0..1_000 {
            sim.step();
            sim.read();
        }
        assert!(sim.take().is_empty(), "silence on writes must not matter");

        let mut sim = Sim::new(IdleConfig::DISABLED);
        assert!(!sim.conn.is_armed());
        sim.run(1_000);
        assert!(sim.take().is_empty());
        assert!(sim.wheel.is_empty());
    }

    #[test]
    fn extra_deadline_rides_on_the_same_entry() {
        let mut sim = Sim::new(read_only(100));
        let handshake = Tick(5);
        sim.conn
            .arm(&sim.cfg, &mut sim.wheel, sim.now, VALUE, Some(handshake));
        assert_eq!(sim.wheel.len(), 1);
        assert_eq!(sim.wheel.deadline(sim.conn.key().unwrap()), Some(handshake));
        sim.run(5);
        // The entry fired for the handshake deadline: no idle event, re-armed for reads.
        assert!(sim.take().is_empty());
        assert_eq!(sim.wheel.deadline(sim.conn.key().unwrap()), Some(Tick(100)));
        sim.run(95);
        assert_eq!(sim.take(), vec![(100, IdleKind::Read, true)]);
        // With idle detection off, the extra deadline alone keeps an entry.
        let mut sim = Sim::new(IdleConfig::DISABLED);
        sim.extra = Some(Tick(30));
        sim.conn
            .arm(&sim.cfg, &mut sim.wheel, sim.now, VALUE, sim.extra);
        assert!(sim.conn.is_armed());
        sim.run(29);
        assert!(sim.conn.is_armed());
        // At tick 30 it fires; the engine would handle the deadline and pass None.
        sim.extra = None;
        sim.step();
        assert!(!sim.conn.is_armed());
        assert!(sim.wheel.is_empty());
    }

    #[test]
    fn stale_keys_are_ignored_and_disarm_removes_the_entry() {
        let mut sim = Sim::new(read_only(10));
        let mut other = Wheel::new();
        other.insert(Tick(0), 0);
        let foreign = other.insert(Tick(0), 0);
        assert_ne!(Some(foreign), sim.conn.key());
        let before = sim.conn;
        let events = sim
            .conn
            .on_timer(&sim.cfg, &mut sim.wheel, foreign, Tick(50), VALUE, None);
        assert!(events.is_empty());
        assert_eq!(sim.conn, before);
        sim.conn.disarm(&mut sim.wheel);
        assert!(sim.wheel.is_empty());
        assert!(!sim.conn.is_armed());
    }

    #[test]
    fn works_across_the_tick_wrap() {
        let start = Tick(u32::MAX - 25);
        let mut sim = Sim::starting_at(read_only(10), start);
        sim.run(35);
        let t = |off: u32| start.wrapping_add(off).0;
        assert_eq!(
            sim.take(),
            vec![
                (t(10), IdleKind::Read, true),
                (t(20), IdleKind::Read, false),
                (t(30), IdleKind::Read, false),
            ]
        );
        sim.read();
        sim.run(10);
        assert_eq!(sim.take(), vec![(t(45), IdleKind::Read, true)]);
    }

    #[test]
    fn late_checks_keep_the_repeats_on_the_period_grid() {
        let cfg = read_only(10);
        let mut wheel = Wheel::with_slots(16);
        let mut conn = IdleTracker::new(Tick(0));
        conn.arm(&cfg, &mut wheel, Tick(0), VALUE, None);
        let mut out = Vec::new();
        let mut check_at = |now: u32, conn: &mut IdleTracker| {
            out.clear();
            wheel.poll(Tick(now), &mut out, usize::MAX);
            let mut got = Vec::new();
            for &(key, v) in &out {
                let events = conn.on_timer(&cfg, &mut wheel, key, Tick(now), v, None);
                got.extend(events.map(|e| (e.kind, e.first)));
            }
            got
        };
        // Due at 10, checked 3 ticks late: the event comes then, and the next one is due
        // at 20, not 23.
        assert_eq!(check_at(13, &mut conn), vec![(IdleKind::Read, true)]);
        assert_eq!(conn.next_deadline(&cfg), Some(Tick(20)));
        assert!(check_at(19, &mut conn).is_empty());
        assert_eq!(check_at(20, &mut conn), vec![(IdleKind::Read, false)]);
        // A check that comes several periods late reports the kind once, still a repeat.
        assert_eq!(check_at(57, &mut conn), vec![(IdleKind::Read, false)]);
        assert_eq!(conn.next_deadline(&cfg), Some(Tick(60)));
        // Activity starts a new grid, and its first event is first again, however late.
        conn.record_read(Tick(58));
        assert!(check_at(60, &mut conn).is_empty());
        assert_eq!(check_at(95, &mut conn), vec![(IdleKind::Read, true)]);
        assert_eq!(conn.next_deadline(&cfg), Some(Tick(98)));
    }

    #[test]
    fn long_silence_is_normalized() {
        // Only writes are watched; reads stay silent for longer than the wrap range.
        let cfg = IdleConfig::from_ticks(Some(MAX_PERIOD), None, Some(MAX_PERIOD));
        let mut wheel = Wheel::new();
        let mut conn = IdleTracker::new(Tick(0));
        conn.arm(&cfg, &mut wheel, Tick(0), VALUE, None);
        let mut out = Vec::new();
        let mut now = Tick(0);
        let mut fired = 0;
        // Three jumps of MAX_DELAY ticks: more than 2^31 in total.
        for _ in 0..3 {
            now = now.wrapping_add(MAX_DELAY);
            out.clear();
            wheel.poll(now, &mut out, usize::MAX);
            for &(key, v) in &out {
                let events = conn.on_timer(&cfg, &mut wheel, key, now, v, None);
                assert_eq!(events.len(), 2);
                fired += 1;
            }
        }
        assert_eq!(fired, 3);
        assert!(conn.last_read().is_before(now));
        assert_eq!(conn.next_deadline(&cfg), Some(now.wrapping_add(MAX_PERIOD)));
    }

    #[test]
    fn config_from_durations_rounds_up_plus_one_tick() {
        // Any instant serves as the origin; nothing depends on the real clock.
        let clock = Clock::new(Instant::now(), Duration::from_millis(10));
        let cfg = IdleConfig::from_durations(
            &clock,
            Some(Duration::from_secs(30)),
            Some(Duration::from_millis(10_001)),
            Some(Duration::ZERO),
        );
        assert_eq!(cfg.read(), Some(3_001));
        assert_eq!(cfg.write(), Some(1_002));
        assert_eq!(cfg.all(), None);
        assert!(!cfg.is_disabled());
        assert_eq!(
            IdleConfig::from_ticks(Some(0), Some(u32::MAX), None),
            IdleConfig::from_ticks(None, Some(MAX_PERIOD), None)
        );
    }

    #[test]
    fn events_iterate_in_kind_order() {
        let mut events = IdleEvents::NONE;
        events.push(IdleKind::All, false);
        events.push(IdleKind::Read, true);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events.get(IdleKind::All),
            Some(IdleEvent {
                kind: IdleKind::All,
                first: false
            })
        );
        assert_eq!(events.get(IdleKind::Write), None);
        let all: Vec<IdleEvent> = events.collect();
        assert_eq!(
            all,
            vec![
                IdleEvent {
                    kind: IdleKind::Read,
                    first: true
                },
                IdleEvent {
                    kind: IdleKind::All,
                    first: false
                },
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Polled every tick, the tracker emits exactly what a naive per-tick check of every
        /// kind would, whatever the activity pattern, periods and starting tick.
        #[test]
        fn matches_a_per_tick_model(
            periods in proptest::array::uniform3(proptest::option::of(1u32..24)),
            start in proptest::prop_oneof![
                proptest::strategy::Just(0u32),
                u32::MAX - 100..=u32::MAX,
                proptest::prelude::any::<u32>(),
            ],
            activity in proptest::collection::vec(0u8..8, 1..300),
        ) {
            let cfg = IdleConfig::from_ticks(periods[0], periods[1], periods[2]);
            let start = Tick(start);
            let mut sim = Sim::starting_at(cfg, start);
            // The model: last activity and last event per kind, checked on every tick.
            let mut last = [start; 3];
            let mut event: [Option<Tick>; 3] = [None; 3];
            let mut expected = Vec::new();
            for &act in &activity {
                sim.step();
                let now = sim.now;
                for kind in IdleKind::EVERY {
                    let k = kind as usize;
                    let Some(period) = cfg.period(kind) else { continue };
                    let base = event[k].map_or(last[k], |e| last[k].latest(e));
                    if now.since(base) >= period as i32 {
                        let first = event[k].is_none_or(|e| last[k].is_at_or_after(e));
                        expected.push((now.0, kind, first));
                        event[k] = Some(now);
                    }
                }
                // 1: read, 2: write, 3: both; anything else: silence (most ticks).
                if act & 1 != 0 && act < 4 {
                    sim.read();
                    last[0] = now;
                    last[2] = now;
                }
                if act & 2 != 0 && act < 4 {
                    sim.write();
                    last[1] = now;
                    last[2] = now;
                }
            }
            proptest::prop_assert_eq!(sim.take(), expected);
        }
    }
}
