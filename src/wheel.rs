//! A hashed timing wheel: O(1) insert, cancel and reschedule over integer [`Tick`]s.
//!
//! The wheel has a single level of `slots` lists (a power of two). An entry with deadline
//! `d` is linked into slot `d & (slots - 1)`; deadlines more than one rotation ahead share a
//! slot with nearer ones and are simply left in place when the slot is visited early ("lazy
//! rounds"). Entries sit in one `Vec` of 16-byte records, each slot's list singly linked
//! through them by `u32` index, so inserting touches the new record and the slot head only,
//! and nothing allocates once the vector has grown to the peak number of records. A bitmap
//! with one bit per slot says which lists are non-empty: advancing over empty ticks costs
//! one word test per 64 slots.
//!
//! # Lazy removal
//!
//! Without back links a record cannot leave the middle of its list in O(1), so removal is
//! lazy, as in the lazy rounds above:
//!
//! - [`cancel`] marks the record dead (one store) and unlinks it at once only when it is
//!   its slot's head, the usual case for a timer cancelled soon after it was set. A dead
//!   record in the middle of a list is unlinked and recycled when [`poll`] visits its slot.
//! - [`reschedule`] to a later deadline stores the new deadline and leaves the record where
//!   it is; when [`poll`] visits the old slot, the record is not due and moves to the slot of
//!   its new deadline. A move to an *earlier* deadline cannot wait for a visit that comes
//!   too late, so it cancels the old record and inserts a new one, whose key may differ.
//!
//! Dead records thus linger for at most one rotation. The vector grows only when no free
//! record is left, and before growing it reclaims every dead record once they make up a
//! quarter of it: the wheel never holds more than about 4/3 of its peak number of live
//! timers in records.
//!
//! # The cursor and the guarantees
//!
//! The wheel keeps a *cursor*: the first tick it has not yet processed. [`poll`] with a
//! `now` processes the ticks from the cursor up to `now` and moves the cursor to `now + 1`.
//! Every live entry's stored deadline is at or after the cursor, which is what keeps
//! wrapping tick comparisons valid, and every live entry is linked into a slot that the
//! cursor reaches no later than its deadline.
//!
//! - **Stored deadline.** [`insert`] and [`reschedule`] store `deadline` unchanged, except
//!   that a deadline before the cursor (in the past, or on a tick already processed) is
//!   stored as the cursor, and a deadline more than [`MAX_DELAY`] ticks after the cursor
//!   is stored as cursor + `MAX_DELAY`. [`deadline`](Wheel::deadline) reports the stored
//!   value.
//! - **Never early.** `poll(now)` returns only entries whose stored deadline is `<= now`.
//! - **On time.** An entry with stored deadline `d` is returned by the first `poll(now)`
//!   with `now >= d`, unless that call reached its `max` first; then the cursor stays at
//!   the unfinished tick and a later poll returns it.
//!
//! So a timer inserted for a tick that is already processed fires on the first poll of a
//! later tick. In wall time: a deadline computed with
//! [`Clock::deadline_after`](crate::time::Clock::deadline_after), polled with
//! [`Clock::tick_of`](crate::time::Clock::tick_of) of the current instant, never fires
//! early, and less than one tick late (plus the driver's wake-up latency) when the driver
//! sleeps until the start of [`next_deadline`](Wheel::next_deadline)'s tick, which
//! [`Clock::until`](crate::time::Clock::until) computes.
//!
//! Entries returned by one poll, or by a sequence of capped polls, come in slot order from
//! the cursor, which is deadline order only among entries less than one rotation ahead.
//!
//! # Caller obligations
//!
//! - Pass a `now` to [`poll`] that never goes backwards (an earlier one is ignored), and
//!   poll at least once every 2^30 ticks, so that every tick comparison stays within the
//!   wrap rule of [`time`](crate::time).
//! - Compute deadlines from a "now" that is close to the cursor (poll before inserting):
//!   the [`MAX_DELAY`] clamp is measured from the cursor.
//! - Forget a [`TimerKey`] once its entry has been returned by [`poll`], removed by
//!   [`cancel`] or replaced by [`reschedule`]: the key is recycled by a later [`insert`],
//!   and cancelling a recycled key would cancel someone else's timer. A key that is not
//!   live and not yet recycled is harmless: [`cancel`] and [`reschedule`] return `None`.
//!
//! [`poll`]: Wheel::poll
//! [`insert`]: Wheel::insert
//! [`cancel`]: Wheel::cancel
//! [`reschedule`]: Wheel::reschedule

use std::num::NonZeroU32;

use crate::time::{Tick, MAX_DELAY};

/// End of a list.
const NIL: u32 = u32::MAX;
/// Indices must stay below the sentinel.
const MAX_ENTRIES: usize = NIL as usize;

/// The default number of slots of [`Wheel::new`].
pub const DEFAULT_SLOTS: usize = 4096;
/// The largest slot count [`Wheel::with_slots`] accepts.
pub const MAX_SLOTS: usize = 1 << 24;

/// Names one timer in a [`Wheel`].
///
/// Valid from [`Wheel::insert`] until the entry is returned by [`Wheel::poll`], removed by
/// [`Wheel::cancel`] or replaced by [`Wheel::reschedule`]; after that the wheel may hand the
/// same key to a new timer. Small (4 bytes) and so is `Option<TimerKey>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct TimerKey(NonZeroU32);

impl TimerKey {
    #[inline]
    fn from_index(index: u32) -> TimerKey {
        // Indices stay below MAX_ENTRIES, so index + 1 neither overflows nor is zero.
        TimerKey(NonZeroU32::MIN.saturating_add(index))
    }

    #[inline]
    fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// What a record holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
enum State {
    /// On the free list, in no slot.
    Vacant,
    /// A timer, linked into a slot.
    Live,
    /// A cancelled or replaced timer, still linked into its slot until the slot is visited.
    Dead,
}

/// One timer, or one free record. Kept at 16 bytes: four of them share a cache line.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The stored deadline. The record is linked into a slot that the cursor reaches at or
    /// before it: its own slot, or, after a reschedule to later, the old deadline's slot.
    deadline: u32,
    /// Next record in the slot list, or next free record; `NIL` ends either list.
    next: u32,
    /// The caller's payload.
    value: u32,
    state: State,
}

/// A single-level hashed timing wheel over wrapping `u32` ticks.
///
/// See the [module documentation](self) for the exact firing guarantees and the caller's
/// obligations.
#[derive(Clone, Debug)]
pub struct Wheel {
    entries: Vec<Entry>,
    heads: Box<[u32]>,
    occupied: Box<[u64]>,
    mask: u32,
    cursor: u32,
    free: u32,
    /// Live timers.
    len: u32,
    /// Dead records still linked into a slot.
    dead: u32,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel::new()
    }
}

impl Wheel {
    /// A wheel with [`DEFAULT_SLOTS`] slots and its cursor at tick 0.
    #[must_use]
    pub fn new() -> Wheel {
        Wheel::with_slots(DEFAULT_SLOTS)
    }

    /// A wheel with `slots` slots and its cursor at tick 0.
    ///
    /// More slots mean fewer entries revisited on a later rotation's visit, at 4 bytes plus
    /// one bit per slot.
    ///
    /// # Panics
    ///
    /// If `slots` is not a power of two or exceeds [`MAX_SLOTS`].
    #[must_use]
    pub fn with_slots(slots: usize) -> Wheel {
        Wheel::with_slots_at(slots, Tick(0))
    }

    /// A wheel with `slots` slots whose first unprocessed tick is `start`.
    ///
    /// Use it when the clock does not start at tick 0, for example to resume a tick count.
    ///
    /// # Panics
    ///
    /// If `slots` is not a power of two or exceeds [`MAX_SLOTS`].
    #[must_use]
    pub fn with_slots_at(slots: usize, start: Tick) -> Wheel {
        assert!(
            slots.is_power_of_two() && slots <= MAX_SLOTS,
            "Wheel: the slot count must be a power of two no larger than {MAX_SLOTS}, got {slots}"
        );
        Wheel {
            entries: Vec::new(),
            heads: vec![NIL; slots].into_boxed_slice(),
            occupied: vec![0; slots.div_ceil(64)].into_boxed_slice(),
            mask: (slots - 1) as u32,
            cursor: start.0,
            free: NIL,
            len: 0,
            dead: 0,
        }
    }

    /// Reserves room for `additional` more live timers than the wheel holds now, so that
    /// inserting them does not reallocate.
    pub fn reserve(&mut self, additional: usize) {
        let unused = self.entries.len() - self.len as usize - self.dead as usize;
        self.entries.reserve(additional.saturating_sub(unused));
    }

    /// The number of live timers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no timer is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many records the entry vector has room for. Records that cancelled timers still
    /// occupy count as free: they are reclaimed before the vector grows.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The number of slots.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.heads.len()
    }

    /// The cursor: the first tick not yet processed by [`poll`](Wheel::poll).
    ///
    /// Every live timer's stored deadline is at or after it.
    #[must_use]
    pub fn cursor(&self) -> Tick {
        Tick(self.cursor)
    }

    /// Schedules `value` to be returned by the first [`poll`](Wheel::poll) with
    /// `now >= deadline`.
    ///
    /// `deadline` is stored clamped to the range [cursor, cursor + [`MAX_DELAY`]]; see the
    /// [module documentation](self). Timers that need to wait longer must re-arm when they
    /// fire. Allocates only when more records are needed than ever before.
    ///
    /// # Panics
    ///
    /// If about 4.29 billion timers are live at once (64 GiB of entries).
    #[inline(always)]
    pub fn insert(&mut self, deadline: Tick, value: u32) -> TimerKey {
        let deadline = self.clamp(deadline);
        let index = self.link(deadline, value);
        self.len += 1;
        TimerKey::from_index(index)
    }

    /// Removes a live timer and returns its value; `None` if `key` is not live.
    ///
    /// `key` must not have been recycled by a later insert (see the
    /// [module documentation](self)); a key that is merely no longer live is harmless.
    #[inline(always)]
    pub fn cancel(&mut self, key: TimerKey) -> Option<u32> {
        let index = key.index();
        let entry = self.entries.get_mut(index)?;
        if entry.state != State::Live {
            return None;
        }
        let Entry {
            deadline,
            next,
            value,
            ..
        } = *entry;
        self.len -= 1;
        let slot = (deadline & self.mask) as usize;
        if self.heads[slot] == index as u32 {
            self.heads[slot] = next;
            if next == NIL {
                clear_bit(&mut self.occupied, slot);
            }
            self.release(index as u32);
        } else {
            entry.state = State::Dead;
            self.dead += 1;
        }
        Some(value)
    }

    /// Moves a live timer to a new deadline (clamped like [`insert`](Wheel::insert)'s) and
    /// returns the key that names it from now on; `None` if `key` is not live.
    ///
    /// A deadline at or after the stored one keeps the key and costs one store. An earlier
    /// one cancels the entry and inserts a new one, whose key may differ: use the returned
    /// key from now on.
    #[inline]
    pub fn reschedule(&mut self, key: TimerKey, deadline: Tick) -> Option<TimerKey> {
        let &Entry {
            deadline: old,
            value,
            ..
        } = self.live(key)?;
        let deadline = self.clamp(deadline);
        if Tick(deadline).is_at_or_after(Tick(old)) {
            // The record's slot comes at or before the old deadline, so before the new one;
            // the visit there moves it on.
            self.entries[key.index()].deadline = deadline;
            return Some(key);
        }
        self.cancel(key);
        Some(self.insert(Tick(deadline), value))
    }

    /// The stored deadline of a live timer; `None` if `key` is not live.
    #[must_use]
    pub fn deadline(&self, key: TimerKey) -> Option<Tick> {
        self.live(key).map(|entry| Tick(entry.deadline))
    }

    /// The value of a live timer; `None` if `key` is not live.
    #[must_use]
    pub fn value(&self, key: TimerKey) -> Option<u32> {
        self.live(key).map(|entry| entry.value)
    }

    /// The record of a live timer.
    #[inline(always)]
    fn live(&self, key: TimerKey) -> Option<&Entry> {
        self.entries
            .get(key.index())
            .filter(|entry| entry.state == State::Live)
    }

    /// Removes up to `max` timers whose deadline is `<= now`, pushes them to `out` as
    /// `(key, value)`, and returns how many it pushed.
    ///
    /// The returned keys are no longer live and will be recycled by later inserts. If fewer
    /// than `max` were returned, no timer due at `now` is left and the cursor moves to
    /// `now + 1`; otherwise the cursor stays at the unfinished tick, and the next poll
    /// carries on from there. A `now` before the cursor returns nothing.
    ///
    /// Work: one word test per 64 empty slots, plus one step per record in each non-empty
    /// slot passed (including entries due on a later rotation, and dead records, which are
    /// recycled), over at most one rotation however far `now` has jumped. Never allocates,
    /// except to grow `out` (reserve `max` in it to avoid that).
    #[inline]
    pub fn poll(&mut self, now: Tick, out: &mut Vec<(TimerKey, u32)>, max: usize) -> usize {
        let ahead = now.since(Tick(self.cursor));
        if ahead < 0 {
            return 0;
        }
        if ahead == 0 {
            // A driver that polls every tick mostly lands here: one bit says the slot is
            // empty, without a call into the general path.
            if !self.is_marked((self.cursor & self.mask) as usize) {
                self.cursor = self.cursor.wrapping_add(1);
                return 0;
            }
        }
        self.poll_slots(now, ahead as u32, out, max)
    }

    /// The general case of [`poll`](Wheel::poll): `ahead` is `now - cursor`, not negative.
    fn poll_slots(
        &mut self,
        now: Tick,
        ahead: u32,
        out: &mut Vec<(TimerKey, u32)>,
        max: usize,
    ) -> usize {
        // Visiting one full rotation reaches every slot: beyond that, jumping ahead is free
        // because entries are compared with `now`, not with the tick being visited.
        let mut remaining = ahead.saturating_add(1).min(self.mask + 1);
        let mut tick = self.cursor;
        let mut fired = 0;
        while let Some(skip) = self.scan(tick & self.mask, remaining) {
            tick = tick.wrapping_add(skip);
            remaining -= skip;
            if !self.visit((tick & self.mask) as usize, now, out, max, &mut fired) {
                self.cursor = tick;
                return fired;
            }
            tick = tick.wrapping_add(1);
            remaining -= 1;
        }
        self.cursor = now.0.wrapping_add(1);
        fired
    }

    /// Walks one slot's list at `now`: fires what is due (while `fired` is below `max`),
    /// recycles dead records and moves rescheduled ones on to their own slot. Returns
    /// `false` if it stopped at the cap with a due timer left in the slot.
    fn visit(
        &mut self,
        slot: usize,
        now: Tick,
        out: &mut Vec<(TimerKey, u32)>,
        max: usize,
        fired: &mut usize,
    ) -> bool {
        // The walk is the fire path: fields in locals, so that stores through one slice need
        // not reload the others, and counts written back once.
        let Wheel {
            entries,
            heads,
            occupied,
            mask,
            free,
            len,
            dead,
            ..
        } = self;
        let entries = &mut entries[..];
        let mask = *mask;
        let (mut free_list, mut live, mut dead_left) = (*free, *len, *dead);
        // Records due on a later rotation stay, relinked in their order behind `kept_tail`;
        // the slot head is written once at the end rather than for every record that leaves.
        let (mut kept_head, mut kept_tail) = (NIL, NIL);
        let mut index = heads[slot];
        let mut finished = true;
        while index != NIL {
            let entry = entries[index as usize];
            match entry.state {
                State::Live if Tick(entry.deadline).is_at_or_before(now) => {
                    if *fired == max {
                        finished = false;
                        break;
                    }
                    out.push((TimerKey::from_index(index), entry.value));
                    *fired += 1;
                    live -= 1;
                }
                State::Live => {
                    let own = (entry.deadline & mask) as usize;
                    if own == slot {
                        match entries.get_mut(kept_tail as usize) {
                            Some(tail) => tail.next = index,
                            None => kept_head = index,
                        }
                        kept_tail = index;
                    } else {
                        entries[index as usize].next = std::mem::replace(&mut heads[own], index);
                        set_bit(occupied, own);
                    }
                    index = entry.next;
                    continue;
                }
                _ => dead_left -= 1,
            }
            // Fired or dead: back to the free list.
            let record = &mut entries[index as usize];
            record.state = State::Vacant;
            record.next = std::mem::replace(&mut free_list, index);
            index = entry.next;
        }
        // `index` is the first record left unprocessed (NIL when the walk finished).
        let first = match entries.get_mut(kept_tail as usize) {
            Some(tail) => {
                tail.next = index;
                kept_head
            }
            None => index,
        };
        heads[slot] = first;
        if first == NIL {
            clear_bit(occupied, slot);
        }
        (*free, *len, *dead) = (free_list, live, dead_left);
        finished
    }

    /// The earliest tick at which [`poll`](Wheel::poll) may return something: the tick of
    /// the first non-empty slot at or after the cursor. `None` if no timer is live.
    ///
    /// It is a lower bound on every live timer's deadline, and equal to the earliest one
    /// when all timers are less than one rotation past the cursor and no cancelled or
    /// postponed timer still waits in an earlier slot. Otherwise polling at the returned
    /// tick may return nothing and advance the cursor; ask again after that poll. A driver
    /// that sleeps until this tick thus wakes early at most once per occupied slot per
    /// rotation. Costs up to one word test per 64 slots.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        self.scan(self.cursor & self.mask, self.mask + 1)
            .map(|skip| Tick(self.cursor.wrapping_add(skip)))
    }

    /// Clamps a deadline into [cursor, cursor + MAX_DELAY], the range that keeps the slot
    /// invariant and the wrap rule.
    #[inline(always)]
    fn clamp(&self, deadline: Tick) -> u32 {
        // One unsigned test covers both sides: a deadline behind the cursor wraps to a
        // distance far above MAX_DELAY.
        if deadline.0.wrapping_sub(self.cursor) <= MAX_DELAY {
            deadline.0
        } else {
            self.clamp_outside(deadline)
        }
    }

    /// [`clamp`](Wheel::clamp) for a deadline outside the range.
    #[cold]
    fn clamp_outside(&self, deadline: Tick) -> u32 {
        if deadline.is_before(Tick(self.cursor)) {
            self.cursor
        } else {
            self.cursor.wrapping_add(MAX_DELAY)
        }
    }

    /// Puts a live record for `value` at the front of `deadline`'s slot and returns its
    /// index. The record is the most recently freed one, which is likely still in cache.
    #[inline(always)]
    fn link(&mut self, deadline: u32, value: u32) -> u32 {
        // Fields taken apart: the record found on the free list is filled through the same
        // borrow, without a second bounds check or reloads of the vectors after each store.
        let Wheel {
            entries,
            heads,
            occupied,
            mask,
            free,
            ..
        } = self;
        let index = *free;
        let Some(record) = entries.get_mut(index as usize) else {
            return self.link_grown(deadline, value);
        };
        *free = record.next;
        let slot = (deadline & *mask) as usize;
        let head = std::mem::replace(&mut heads[slot], index);
        *record = Entry {
            deadline,
            next: head,
            value,
            state: State::Live,
        };
        if head == NIL {
            set_bit(occupied, slot);
        }
        index
    }

    /// [`link`](Wheel::link) when the free list is empty. Out of line and cold, so that the
    /// common path stays small enough to inline and needs no saved registers.
    #[cold]
    #[inline(never)]
    fn link_grown(&mut self, deadline: u32, value: u32) -> u32 {
        self.refill();
        self.link(deadline, value)
    }

    /// Whether the bit of `slot` says its list is not empty.
    #[inline(always)]
    fn is_marked(&self, slot: usize) -> bool {
        self.occupied[slot >> 6] & (1 << (slot & 63)) != 0
    }

    /// Puts a record on the empty free list: reclaims the dead records if they are a
    /// quarter of all records (there is at least one), and adds a record otherwise.
    fn refill(&mut self) {
        if self.dead > 0 && self.dead as usize * 4 >= self.entries.len() {
            self.reclaim();
            return;
        }
        let index = self.entries.len();
        assert!(index < MAX_ENTRIES, "Wheel: too many live timers");
        crate::growth::room_in_vec(&mut self.entries);
        self.entries.push(Entry {
            deadline: 0,
            next: self.free,
            value: 0,
            state: State::Vacant,
        });
        self.free = index as u32;
    }

    /// Frees every dead record by rebuilding all lists in one sequential pass over the
    /// records, rather than by walking the slot lists, whose records lie anywhere in memory.
    /// A live record goes back to the slot of its own deadline, which the cursor reaches at
    /// or before that deadline.
    fn reclaim(&mut self) {
        // The pass is what dead records cost when no poll visits their slots, so it links
        // through locals and fills in the bitmap once at the end.
        let heads = &mut *self.heads;
        heads.fill(NIL);
        let mask = self.mask;
        let mut free = NIL;
        // Backwards, so that the free list hands out low indices first.
        for (index, entry) in self.entries.iter_mut().enumerate().rev() {
            let link = if entry.state == State::Live {
                let head = &mut heads[(entry.deadline & mask) as usize];
                std::mem::replace(head, index as u32)
            } else {
                entry.state = State::Vacant;
                std::mem::replace(&mut free, index as u32)
            };
            entry.next = link;
        }
        for (word, heads) in self.occupied.iter_mut().zip(heads.chunks(64)) {
            *word = heads
                .iter()
                .enumerate()
                .fold(0, |bits, (bit, &head)| bits | u64::from(head != NIL) << bit);
        }
        self.free = free;
        self.dead = 0;
    }

    /// Puts an unlinked record on the free list; the most recently freed is reused first,
    /// while it is still in cache.
    #[inline]
    fn release(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.state = State::Vacant;
        entry.next = self.free;
        self.free = index;
    }

    /// The distance from slot `start` (going forward, wrapping) to the first non-empty slot,
    /// if it is less than `limit`.
    #[inline]
    fn scan(&self, start: u32, limit: u32) -> Option<u32> {
        let slots = self.mask + 1;
        let mut pos = start;
        let mut skipped = 0u32;
        loop {
            let word = self.occupied[(pos >> 6) as usize] >> (pos & 63);
            if word != 0 {
                let skip = skipped + word.trailing_zeros();
                return (skip < limit).then_some(skip);
            }
            // To the end of this word, or of the wheel when it has fewer than 64 slots.
            let step = (64 - (pos & 63)).min(slots - pos);
            skipped += step;
            if skipped >= limit {
                return None;
            }
            pos = (pos + step) & self.mask;
        }
    }
}

/// Sets the bit of `slot` in an occupancy bitmap.
#[inline(always)]
fn set_bit(words: &mut [u64], slot: usize) {
    words[slot >> 6] |= 1 << (slot & 63);
}

/// Clears the bit of `slot` in an occupancy bitmap.
#[inline(always)]
fn clear_bit(words: &mut [u64], slot: usize) {
    words[slot >> 6] &= !(1 << (slot & 63));
}

#[cfg(test)]
impl Wheel {
    /// Checks the structure: the bitmap says which lists are non-empty, the counts match
    /// the records, every record is in exactly one list (a slot's or the free one), and
    /// every live record waits in a slot the cursor reaches at or before its deadline.
    fn check_invariants(&self) {
        let mut seen = vec![false; self.entries.len()];
        let (mut live, mut dead) = (0, 0);
        for slot in 0..self.heads.len() {
            assert_eq!(
                self.is_marked(slot),
                self.heads[slot] != NIL,
                "bitmap of slot {slot}"
            );
            // The first tick at or after the cursor that visits this slot.
            let visit = self
                .cursor
                .wrapping_add((slot as u32).wrapping_sub(self.cursor) & self.mask);
            let mut index = self.heads[slot];
            while index != NIL {
                assert!(
                    !std::mem::replace(&mut seen[index as usize], true),
                    "in two lists"
                );
                let entry = self.entries[index as usize];
                match entry.state {
                    State::Live => {
                        live += 1;
                        assert!(
                            Tick(entry.deadline).is_at_or_after(Tick(visit)),
                            "slot {slot} is visited at {visit}, after the deadline {}",
                            entry.deadline
                        );
                    }
                    State::Dead => dead += 1,
                    State::Vacant => panic!("a free record in slot {slot}"),
                }
                index = entry.next;
            }
        }
        let mut index = self.free;
        while index != NIL {
            assert!(
                !std::mem::replace(&mut seen[index as usize], true),
                "in two lists"
            );
            assert_eq!(self.entries[index as usize].state, State::Vacant);
            index = self.entries[index as usize].next;
        }
        assert!(seen.iter().all(|&s| s), "a record in no list");
        assert_eq!((live, dead), (self.len, self.dead));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn drain(wheel: &mut Wheel, now: Tick) -> Vec<(TimerKey, u32)> {
        let mut out = Vec::new();
        wheel.poll(now, &mut out, usize::MAX);
        out
    }

    fn values(fired: &[(TimerKey, u32)]) -> Vec<u32> {
        let mut v: Vec<u32> = fired.iter().map(|&(_, v)| v).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn entry_is_16_bytes_and_keys_are_4() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<TimerKey>(), 4);
        assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 4);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn slot_count_must_be_a_power_of_two() {
        let _ = Wheel::with_slots(100);
    }

    #[test]
    fn never_early_and_at_most_one_tick_late() {
        let mut wheel = Wheel::with_slots(64);
        for d in 0..300u32 {
            wheel.insert(Tick(d), d);
        }
        for now in 0..300u32 {
            let fired = drain(&mut wheel, Tick(now));
            // Polled every tick, each timer fires exactly at its deadline.
            assert_eq!(values(&fired), vec![now], "tick {now}");
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_the_next_tick() {
        let mut wheel = Wheel::new();
        assert!(drain(&mut wheel, Tick(10)).is_empty());
        assert_eq!(wheel.cursor(), Tick(11));
        let key = wheel.insert(Tick(3), 1);
        assert_eq!(wheel.deadline(key), Some(Tick(11)));
        let same = wheel.insert(Tick(10), 2);
        assert_eq!(wheel.deadline(same), Some(Tick(11)));
        // The same tick again is already processed: nothing.
        assert!(drain(&mut wheel, Tick(10)).is_empty());
        assert_eq!(values(&drain(&mut wheel, Tick(11))), vec![1, 2]);
    }

    #[test]
    fn cancel_returns_the_value_once() {
        let mut wheel = Wheel::with_slots(16);
        let a = wheel.insert(Tick(5), 1);
        let b = wheel.insert(Tick(5), 2);
        let c = wheel.insert(Tick(21), 3);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.cancel(b), Some(2));
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(wheel.reschedule(b, Tick(7)), None);
        assert_eq!(wheel.deadline(b), None);
        assert_eq!(wheel.value(a), Some(1));
        assert_eq!(wheel.len(), 2);
        assert_eq!(values(&drain(&mut wheel, Tick(5))), vec![1]);
        assert_eq!(wheel.cancel(a), None, "a fired, so its key is vacant");
        assert_eq!(wheel.cancel(c), Some(3));
        assert!(wheel.is_empty());
        assert!(drain(&mut wheel, Tick(100)).is_empty());
    }

    #[test]
    fn cancelling_heads_middles_and_tails_keeps_lists_intact() {
        let mut wheel = Wheel::with_slots(8);
        // All in slot 3, several rotations.
        let keys: Vec<TimerKey> = (0..6).map(|i| wheel.insert(Tick(3 + 8 * i), i)).collect();
        // The list is in reverse insertion order: keys[5] is the head, keys[0] the tail.
        assert_eq!(wheel.cancel(keys[5]), Some(5));
        assert_eq!(wheel.cancel(keys[0]), Some(0));
        assert_eq!(wheel.cancel(keys[2]), Some(2));
        let mut fired = Vec::new();
        for now in 0..64 {
            for (_, v) in drain(&mut wheel, Tick(now)) {
                fired.push((now, v));
            }
        }
        assert_eq!(fired, vec![(11, 1), (27, 3), (35, 4)]);
    }

    #[test]
    fn reschedule_earlier_and_later() {
        let mut wheel = Wheel::with_slots(16);
        let a = wheel.insert(Tick(10), 1);
        let b = wheel.insert(Tick(10), 2);
        let c = wheel.insert(Tick(10), 3);
        // Earlier: a new entry, whose key is the one to use from now on.
        let a = wheel.reschedule(a, Tick(4)).unwrap();
        assert_eq!(wheel.deadline(a), Some(Tick(4)));
        // Later: the same key, one store; the record moves on when slot 10 is visited.
        assert_eq!(wheel.reschedule(b, Tick(40)), Some(b));
        // Same slot, next rotation: also later, also the same key.
        assert_eq!(wheel.reschedule(c, Tick(26)), Some(c));
        assert_eq!(wheel.deadline(c), Some(Tick(26)));
        assert_eq!(wheel.len(), 3);
        let mut fired = Vec::new();
        for now in 0..50 {
            for (_, v) in drain(&mut wheel, Tick(now)) {
                fired.push((now, v));
            }
        }
        assert_eq!(fired, vec![(4, 1), (26, 3), (40, 2)]);
    }

    #[test]
    fn reschedule_into_the_past_fires_next_tick() {
        let mut wheel = Wheel::with_slots(16);
        let a = wheel.insert(Tick(50), 1);
        assert!(drain(&mut wheel, Tick(20)).is_empty());
        let a = wheel.reschedule(a, Tick(5)).unwrap();
        assert_eq!(wheel.deadline(a), Some(Tick(21)));
        assert_eq!(values(&drain(&mut wheel, Tick(21))), vec![1]);
    }

    #[test]
    fn expiry_cap_resumes_where_it_stopped() {
        let mut wheel = Wheel::with_slots(16);
        for i in 0..10 {
            wheel.insert(Tick(3), i);
            wheel.insert(Tick(7), 100 + i);
        }
        let mut out = Vec::new();
        assert_eq!(wheel.poll(Tick(8), &mut out, 4), 4);
        assert_eq!(wheel.cursor(), Tick(3));
        assert_eq!(wheel.next_deadline(), Some(Tick(3)));
        assert_eq!(wheel.poll(Tick(8), &mut out, 4), 4);
        assert_eq!(wheel.poll(Tick(8), &mut out, 4), 4);
        // The tick-3 slot is exhausted and the cursor waits at tick 7.
        assert_eq!(wheel.cursor(), Tick(7));
        assert_eq!(wheel.poll(Tick(8), &mut out, 100), 8);
        assert_eq!(wheel.cursor(), Tick(9));
        let mut all = values(&out);
        all.dedup();
        assert_eq!(all.len(), 20);
        // A zero cap returns nothing and loses nothing.
        wheel.insert(Tick(9), 7);
        assert_eq!(wheel.poll(Tick(9), &mut out, 0), 0);
        assert_eq!(wheel.poll(Tick(9), &mut out, 1), 1);
    }

    #[test]
    fn counter_wraps_around() {
        let start = Tick(u32::MAX - 40);
        let mut wheel = Wheel::with_slots_at(16, start);
        for i in 0..100u32 {
            wheel.insert(start.wrapping_add(i), i);
        }
        for step in 0..100u32 {
            let now = start.wrapping_add(step);
            let fired = drain(&mut wheel, now);
            assert_eq!(values(&fired), vec![step], "at {now:?}");
            assert_eq!(wheel.deadline(fired[0].0), None);
        }
        assert_eq!(wheel.cursor(), start.wrapping_add(100));
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_rotation() {
        let mut wheel = Wheel::with_slots(8);
        wheel.insert(Tick(5), 0);
        wheel.insert(Tick(5 + 8), 1);
        wheel.insert(Tick(5 + 80), 2);
        wheel.insert(Tick(1_000), 3);
        let mut fired = Vec::new();
        for now in 0..1_100 {
            for (_, v) in drain(&mut wheel, Tick(now)) {
                fired.push((now, v));
            }
        }
        assert_eq!(fired, vec![(5, 0), (13, 1), (85, 2), (1_000, 3)]);
    }

    #[test]
    fn big_jumps_fire_everything_due_and_nothing_else() {
        let mut wheel = Wheel::with_slots(16);
        for i in 0..200u32 {
            wheel.insert(Tick(i * 7), i);
        }
        let fired = drain(&mut wheel, Tick(700));
        assert_eq!(values(&fired), (0..=100).collect::<Vec<_>>());
        assert_eq!(wheel.cursor(), Tick(701));
        let fired = drain(&mut wheel, Tick(1_000_000));
        assert_eq!(values(&fired), (101..200).collect::<Vec<_>>());
        assert!(wheel.is_empty());
        // A jump of almost 2^31 ticks across the wrap.
        let key = wheel.insert(Tick(1_000_010), 9);
        let far = Tick(1_000_000).wrapping_add((1 << 31) - 10);
        assert_eq!(values(&drain(&mut wheel, far)), vec![9]);
        assert_eq!(wheel.cancel(key), None);
    }

    #[test]
    fn far_deadlines_are_clamped() {
        let mut wheel = Wheel::with_slots(16);
        let key = wheel.insert(Tick(MAX_DELAY + 1_000), 1);
        assert_eq!(wheel.deadline(key), Some(Tick(MAX_DELAY)));
        assert!(drain(&mut wheel, Tick(MAX_DELAY - 1)).is_empty());
        assert_eq!(values(&drain(&mut wheel, Tick(MAX_DELAY))), vec![1]);
    }

    #[test]
    fn next_deadline_is_a_lower_bound() {
        let mut wheel = Wheel::with_slots(64);
        assert_eq!(wheel.next_deadline(), None);
        let a = wheel.insert(Tick(200), 1);
        // Slot 8 is the first occupied one; the timer is three rotations out.
        assert_eq!(wheel.next_deadline(), Some(Tick(8)));
        assert!(drain(&mut wheel, Tick(8)).is_empty());
        assert_eq!(wheel.next_deadline(), Some(Tick(72)));
        wheel.insert(Tick(30), 2);
        assert_eq!(wheel.next_deadline(), Some(Tick(30)));
        assert_eq!(values(&drain(&mut wheel, Tick(30))), vec![2]);
        assert_eq!(wheel.next_deadline(), Some(Tick(72)));
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.next_deadline(), None);
        // Across the word boundary and the end of the wheel.
        let mut wheel = Wheel::with_slots_at(256, Tick(250));
        wheel.insert(Tick(300), 1);
        assert_eq!(wheel.next_deadline(), Some(Tick(300)));
    }

    #[test]
    fn keys_are_recycled_and_capacity_is_reused() {
        let mut wheel = Wheel::with_slots(16);
        let keys: Vec<TimerKey> = (0..100).map(|i| wheel.insert(Tick(i), i)).collect();
        let cap = wheel.capacity();
        for key in &keys {
            wheel.cancel(*key);
        }
        for i in 0..100 {
            wheel.insert(Tick(i), i);
        }
        assert_eq!(wheel.capacity(), cap);
        assert_eq!(wheel.len(), 100);
        wheel.reserve(10);
        assert!(wheel.capacity() >= 110);
    }

    #[test]
    fn churn_without_polling_stays_within_a_third_over_the_peak() {
        // The second wheel's deadlines span several words of the slot bitmap, which the
        // reclaim pass rebuilds.
        for (slots, spread) in [(16, 40), (256, 200)] {
            churn_without_polling(slots, spread);
        }
    }

    fn churn_without_polling(slots: usize, spread: u32) {
        const LIVE: usize = 300;
        let mut wheel = Wheel::with_slots(slots);
        let mut keys: std::collections::VecDeque<(TimerKey, u32)> = (0..LIVE as u32)
            .map(|i| (wheel.insert(Tick(5 + i % spread), i), i))
            .collect();
        // Cancel the oldest timer, which is rarely a slot head, and add a new one: without a
        // poll, dead records can only be reclaimed by the vector's growth check.
        let mut most_dead = 0;
        for i in LIVE as u32..100_000 {
            let (key, value) = keys.pop_front().unwrap();
            assert_eq!(wheel.cancel(key), Some(value));
            keys.push_back((wheel.insert(Tick(5 + i % spread), i), i));
            assert!(
                wheel.entries.len() <= LIVE * 4 / 3 + 1,
                "{}",
                wheel.entries.len()
            );
            most_dead = most_dead.max(wheel.dead);
        }
        wheel.check_invariants();
        assert!(most_dead > 0, "the test did leave dead records behind");
        let mut fired = drain(&mut wheel, Tick(spread + 100));
        fired.sort_unstable_by_key(|&(_, v)| v);
        let mut expected: Vec<(TimerKey, u32)> = keys.into_iter().collect();
        expected.sort_unstable_by_key(|&(_, v)| v);
        assert_eq!(fired, expected);
        assert!(wheel.is_empty());
        assert_eq!(wheel.dead, 0, "the poll recycled every dead record");
    }

    #[test]
    fn a_million_timers_fire_exactly_once_and_never_early() {
        const N: u32 = 1_000_000;
        const SPAN: u32 = 20_000;
        let start = Tick(u32::MAX - 5_000);
        let mut wheel = Wheel::with_slots_at(DEFAULT_SLOTS, start);
        // A cheap deterministic scramble spreads deadlines over several rotations.
        let deadline_of = |i: u32| start.wrapping_add(i.wrapping_mul(2_654_435_761) % SPAN);
        for i in 0..N {
            wheel.insert(deadline_of(i), i);
        }
        assert_eq!(wheel.len(), N as usize);
        let mut seen = vec![false; N as usize];
        let mut out = Vec::with_capacity(4_096);
        let mut total = 0;
        for step in 0..=SPAN / 3 + 1 {
            // Poll every third tick, with a cap, as a busy driver would.
            let now = start.wrapping_add(3 * step);
            while wheel.poll(now, &mut out, 4_096) > 0 {
                for &(_, i) in &out {
                    assert!(deadline_of(i).is_at_or_before(now), "early");
                    assert!(now.since(deadline_of(i)) < 3, "late");
                    assert!(!std::mem::replace(&mut seen[i as usize], true), "twice");
                }
                total += out.len();
                out.clear();
            }
        }
        assert_eq!(total, N as usize);
        assert!(wheel.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert { ahead: i32, value: u32 },
        Cancel { pick: usize },
        CancelTwice { pick: usize },
        Reschedule { pick: usize, ahead: i32 },
        Poll { advance: u32, max: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-20i32..200, any::<u32>()).prop_map(|(ahead, value)| Op::Insert { ahead, value }),
            1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
            1 => any::<usize>().prop_map(|pick| Op::CancelTwice { pick }),
            2 => (any::<usize>(), -20i32..200)
                .prop_map(|(pick, ahead)| Op::Reschedule { pick, ahead }),
            3 => (prop_oneof![6 => 0u32..4, 2 => 0u32..40, 1 => 0u32..2_000], 0usize..6)
                .prop_map(|(advance, max)| Op::Poll { advance, max }),
        ]
    }

    fn start_tick() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), u32::MAX - 300..=u32::MAX, any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_a_reference_model(
            slots_log2 in 0u32..6,
            start in start_tick(),
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let start = Tick(start);
            let mut wheel = Wheel::with_slots_at(1 << slots_log2, start);
            // key -> (stored deadline, value); keys live in a Vec for picking by index.
            let mut live: BTreeMap<u32, (Tick, u32, TimerKey)> = BTreeMap::new();
            let mut now = start.wrapping_sub(1);
            let mut out = Vec::new();
            // Whether cancelled or postponed records may still wait in a slot, which makes
            // next_deadline a lower bound only.
            let mut lazy = false;
            for op in ops {
                match op {
                    Op::Insert { ahead, value } => {
                        let asked = now.wrapping_add(ahead as u32);
                        let cursor = wheel.cursor();
                        let stored = if asked.is_before(cursor) { cursor } else { asked };
                        let key = wheel.insert(asked, value);
                        prop_assert_eq!(wheel.deadline(key), Some(stored));
                        let id = key.0.get();
                        prop_assert!(!live.contains_key(&id), "live key handed out twice");
                        live.insert(id, (stored, value, key));
                    }
                    Op::Cancel { pick } | Op::CancelTwice { pick } => {
                        if live.is_empty() { continue; }
                        let id = *live.keys().nth(pick % live.len()).unwrap();
                        let (_, value, key) = live.remove(&id).unwrap();
                        prop_assert_eq!(wheel.cancel(key), Some(value));
                        lazy = true;
                        if matches!(op, Op::CancelTwice { .. }) {
                            prop_assert_eq!(wheel.cancel(key), None);
                            prop_assert!(wheel.reschedule(key, now).is_none());
                        }
                    }
                    Op::Reschedule { pick, ahead } => {
                        if live.is_empty() { continue; }
                        let id = *live.keys().nth(pick % live.len()).unwrap();
                        let asked = now.wrapping_add(ahead as u32);
                        let cursor = wheel.cursor();
                        let stored = if asked.is_before(cursor) { cursor } else { asked };
                        let (old, value, key) = live.remove(&id).unwrap();
                        let moved = wheel.reschedule(key, asked);
                        prop_assert!(moved.is_some());
                        let moved = moved.unwrap();
                        if stored.is_at_or_after(old) {
                            prop_assert_eq!(moved, key, "a later deadline keeps the key");
                        } else if moved != key {
                            prop_assert_eq!(wheel.deadline(key), None, "the old key lives on");
                        }
                        prop_assert_eq!(wheel.deadline(moved), Some(stored));
                        prop_assert!(!live.contains_key(&moved.0.get()), "live key handed out twice");
                        live.insert(moved.0.get(), (stored, value, moved));
                        lazy = true;
                    }
                    Op::Poll { advance, max } => {
                        let before = wheel.cursor();
                        now = now.wrapping_add(advance);
                        let due = live.values().filter(|e| e.0.is_at_or_before(now)).count();
                        out.clear();
                        let n = wheel.poll(now, &mut out, max);
                        prop_assert_eq!(n, out.len());
                        prop_assert_eq!(n, due.min(max), "due {} max {}", due, max);
                        for &(key, value) in &out {
                            let e = live.remove(&key.0.get());
                            prop_assert!(e.is_some(), "fired a key that is not live");
                            let (deadline, v, _) = e.unwrap();
                            prop_assert_eq!(v, value);
                            prop_assert!(deadline.is_at_or_before(now), "fired early");
                        }
                        if n < max {
                            prop_assert_eq!(wheel.cursor(), now.wrapping_add(1));
                            // A whole rotation visited: every slot was swept.
                            if now.since(before) + 1 >= wheel.slots() as i32 {
                                lazy = false;
                            }
                        }
                    }
                }
                wheel.check_invariants();
                prop_assert_eq!(wheel.len(), live.len());
                let cursor = wheel.cursor();
                for (deadline, _, key) in live.values() {
                    prop_assert!(deadline.is_at_or_after(cursor), "deadline behind the cursor");
                    prop_assert_eq!(wheel.deadline(*key), Some(*deadline));
                }
                match wheel.next_deadline() {
                    None => prop_assert!(live.is_empty()),
                    Some(next) => {
                        prop_assert!(next.is_at_or_after(cursor));
                        for (deadline, _, _) in live.values() {
                            prop_assert!(deadline.is_at_or_after(next), "next_deadline too late");
                        }
                        // Exact when every timer is within one rotation.
                        let rotation = wheel.slots() as i32;
                        if !lazy && live.values().all(|e| e.0.since(cursor) < rotation) {
                            let earliest = live
                                .values()
                                .map(|e| e.0)
                                .reduce(Tick::earliest)
                                .unwrap();
                            prop_assert_eq!(next, earliest);
                        }
                    }
                }
            }
        }
    }
}
