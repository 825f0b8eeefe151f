//! Application timers ([`Engine::set_timer`](crate::engine::Engine::set_timer)): entries on
//! the engine's own wheel, each with the token to hand back and its period if it repeats.
//! The engine routes wheel firings here and raises what comes back.

use super::event::Event;
use super::handle::TimerId;
use crate::time::Tick;
use crate::wheel::{TimerKey, Wheel};
use slab::Slab;
use std::num::NonZeroU32;
use std::time::Duration;

/// Wheel values with this bit (and not the client bit) name an application timer.
pub(super) const APP_TIMER: u32 = 1 << 30;

struct AppTimer {
    gen: NonZeroU32,
    key: TimerKey,
    token: u64,
    every: Option<Duration>,
}

#[derive(Default)]
pub(super) struct AppTimers {
    timers: Slab<AppTimer>,
}

impl AppTimers {
    /// A timer due at `at`, then every `every` if given.
    pub(super) fn set(
        &mut self,
        wheel: &mut Wheel,
        gen: NonZeroU32,
        at: Tick,
        every: Option<Duration>,
        token: u64,
    ) -> TimerId {
        let index = self.timers.vacant_key();
        let key = wheel.insert(at, index as u32 | APP_TIMER);
        self.timers.insert(AppTimer {
            gen,
            key,
            token,
            every,
        });
        TimerId {
            index: index as u32,
            gen,
        }
    }

    /// Cancels `id`; `false` if it is gone already.
    pub(super) fn cancel(&mut self, wheel: &mut Wheel, id: TimerId) -> bool {
        let i = id.index as usize;
        if self.timers.get(i).is_none_or(|t| t.gen != id.gen) {
            return false;
        }
        let t = self.timers.remove(i);
        wheel.cancel(t.key);
        true
    }

    /// The wheel fired entry `key` of timer `i` (a stale firing is ignored): the event to
    /// raise. A repeating timer is put back at `after(period)`, a one-shot forgotten.
    pub(super) fn fire(
        &mut self,
        wheel: &mut Wheel,
        i: usize,
        key: TimerKey,
        after: impl FnOnce(Duration) -> Tick,
    ) -> Option<Event> {
        let t = self.timers.get_mut(i).filter(|t| t.key == key)?;
        let event = Event::Timer {
            id: TimerId {
                index: i as u32,
                gen: t.gen,
            },
            token: t.token,
        };
        match t.every {
            Some(period) => t.key = wheel.insert(after(period), i as u32 | APP_TIMER),
            None => {
                self.timers.remove(i);
            }
        }
        Some(event)
    }
}
