//! Reliable messages: what a sender keeps until acknowledged, and how a receiver tells a
//! resent message from a new one.
//!
//! Ids grow strictly within a sender scope (a client instance, or a server session), a
//! resent message keeps its id, and resends go out in id order before anything new. Since
//! TCP delivers in order, a receiver never sees a new id below one it has already handed
//! over, so "the highest id handed over" is all the duplicate-suppression state it needs:
//! eight bytes per sender, whatever the traffic.

use bytes::Bytes;
use std::collections::VecDeque;

/// Messages sent and not yet acknowledged, oldest first, bounded by a window.
#[derive(Debug, Default)]
pub struct SendQueue {
    next_id: u64,
    /// Boxed on first use: most records never send a reliable message, and an empty
    /// `VecDeque` would still cost them 32 bytes. Once there, it stays, so steady traffic
    /// does not allocate.
    #[allow(clippy::box_collection)]
    unacked: Option<Box<VecDeque<(u64, Bytes)>>>,
}

/// The send window is full: the peer has not acknowledged enough yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowFull;

impl SendQueue {
    /// An empty queue whose first id will be 1.
    pub fn new() -> SendQueue {
        SendQueue {
            next_id: 1,
            unacked: None,
        }
    }

    /// Takes `payload` for sending and returns its id, unless `window` messages are
    /// already unacknowledged.
    pub fn push(&mut self, payload: Bytes, window: usize) -> Result<u64, WindowFull> {
        if self.len() >= window {
            return Err(WindowFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.unacked
            .get_or_insert_with(Box::default)
            .push_back((id, payload));
        Ok(id)
    }

    /// Forgets the message `id`; `false` if it was not pending (a duplicate or bogus ACK).
    pub fn ack(&mut self, id: u64) -> bool {
        let Some(unacked) = self.unacked.as_mut() else {
            return false;
        };
        // Acks nearly always come in order, so the front is checked first.
        match unacked.front() {
            Some((front, _)) if *front == id => {
                unacked.pop_front();
                true
            }
            _ => match unacked.binary_search_by_key(&id, |(i, _)| *i) {
                Ok(at) => unacked.remove(at).is_some(),
                Err(_) => false,
            },
        }
    }

    /// Pending messages in id order (what to resend after a reconnect).
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Bytes)> {
        self.unacked.iter().flat_map(|q| q.iter())
    }

    /// Removes and returns every pending message (when the sender gives up).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        self.unacked.iter_mut().flat_map(|q| q.drain(..))
    }

    /// Number of pending messages.
    pub fn len(&self) -> usize {
        self.unacked.as_ref().map_or(0, |q| q.len())
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Duplicate suppression for one sender scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvState {
    highest: u64,
}

impl RecvState {
    /// Whether message `id` is new; if so it counts as handed over from now on.
    pub fn accept(&mut self, id: u64) -> bool {
        if id > self.highest {
            self.highest = id;
            true
        } else {
            false
        }
    }

    /// The highest id handed over (0 before the first).
    pub fn highest(&self) -> u64 {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_pending_messages() {
        let mut q = SendQueue::new();
        assert_eq!(q.push(Bytes::from_static(b"a"), 2), Ok(1));
        assert_eq!(q.push(Bytes::from_static(b"b"), 2), Ok(2));
        assert_eq!(q.push(Bytes::from_static(b"c"), 2), Err(WindowFull));
        assert!(q.ack(1));
        assert_eq!(q.push(Bytes::from_static(b"c"), 2), Ok(3));
    }

    #[test]
    fn acks_in_any_order_and_duplicates() {
        let mut q = SendQueue::new();
        for _ in 0..5 {
            q.push(Bytes::new(), 10).unwrap();
        }
        assert!(q.ack(3));
        assert!(!q.ack(3), "second ack of the same id");
        assert!(!q.ack(99), "never sent");
        assert!(q.ack(1));
        let left: Vec<u64> = q.iter().map(|(id, _)| *id).collect();
        assert_eq!(left, [2, 4, 5]);
        let failed: Vec<u64> = q.drain().map(|(id, _)| id).collect();
        assert_eq!(failed, [2, 4, 5]);
        assert!(q.is_empty());
    }

    #[test]
    fn receiver_suppresses_resends() {
        let mut r = RecvState::default();
        assert!(r.accept(1));
        assert!(r.accept(2));
        assert!(!r.accept(2));
        assert!(!r.accept(1));
        assert!(r.accept(5), "a sender may skip ids it gave up on");
        assert!(!r.accept(4));
        assert_eq!(r.highest(), 5);
    }
}
