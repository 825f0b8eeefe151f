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
///
/// Each payload is kept once, here: it is framed into a connection's send buffer only when
/// that buffer has room ([`next_to_frame`](SendQueue::next_to_frame)), so a backlog flows
/// into the socket as it drains instead of being copied out all at once. After a reconnect,
/// [`rewind`](SendQueue::rewind) makes every pending message due for framing again.
#[derive(Debug, Default)]
pub struct SendQueue {
    next_id: u64,
    /// Boxed on first use: most records never send a reliable message, and an empty queue
    /// would still cost them 48 bytes. Once there, it stays, so steady traffic does not
    /// allocate.
    pending: Option<Box<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Unacknowledged messages in id order.
    queue: VecDeque<(u64, Bytes)>,
    /// How many at the front have been framed on the current connection.
    framed: usize,
    /// Payload bytes of the messages not framed yet.
    unframed_bytes: usize,
    /// Payload bytes of all of them.
    bytes: usize,
}

/// How much a [`SendQueue`] may hold unacknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Messages.
    pub messages: usize,
    /// Payload bytes.
    pub bytes: usize,
}

/// The send window is full: the peer has not acknowledged enough yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowFull;

impl SendQueue {
    /// An empty queue whose first id will be 1.
    pub fn new() -> SendQueue {
        SendQueue {
            next_id: 1,
            pending: None,
        }
    }

    /// Takes `payload` for sending and returns its id, unless that would put more than the
    /// window unacknowledged. It waits unframed until [`next_to_frame`](Self::next_to_frame).
    pub fn push(&mut self, payload: Bytes, window: Window) -> Result<u64, WindowFull> {
        let bytes = self.pending.as_ref().map_or(0, |p| p.bytes);
        if self.len() >= window.messages || bytes + payload.len() > window.bytes {
            return Err(WindowFull);
        }
        // A queue built by `Default` starts at 0; ids start at 1 (0 is never valid).
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        let p = self.pending.get_or_insert_with(Box::default);
        p.unframed_bytes += payload.len();
        p.bytes += payload.len();
        p.queue.push_back((id, payload));
        Ok(id)
    }

    /// The next message to frame on the current connection, in id order; from then on it
    /// counts as framed (until [`rewind`](Self::rewind)).
    pub fn next_to_frame(&mut self) -> Option<(u64, &Bytes)> {
        let p = self.pending.as_mut()?;
        let (id, payload) = p.queue.get(p.framed)?;
        p.framed += 1;
        p.unframed_bytes -= payload.len();
        Some((*id, payload))
    }

    /// Whether a message waits to be framed.
    pub fn has_unframed(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.framed < p.queue.len())
    }

    /// Payload bytes waiting to be framed.
    pub fn unframed_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.unframed_bytes)
    }

    /// A new connection: every pending message is due again, in id order.
    pub fn rewind(&mut self) {
        if let Some(p) = self.pending.as_mut() {
            p.framed = 0;
            p.unframed_bytes = p.queue.iter().map(|(_, b)| b.len()).sum();
        }
    }

    /// Forgets the message `id` on its acknowledgement; `false` if it was not pending or
    /// not yet framed on this connection (a duplicate or bogus ACK: a peer cannot
    /// acknowledge what it was never sent).
    pub fn ack(&mut self, id: u64) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return false;
        };
        // Acks nearly always come in order, so the front is checked first.
        let at = match p.queue.front() {
            Some((front, _)) if *front == id => Some(0),
            _ => p.queue.binary_search_by_key(&id, |(i, _)| *i).ok(),
        };
        let at = at.filter(|&at| at < p.framed);
        match at.and_then(|at| p.queue.remove(at)) {
            Some((_, payload)) => {
                p.framed -= 1;
                p.bytes -= payload.len();
                true
            }
            None => false,
        }
    }

    /// Removes message `id` whether framed or not, handing its payload back (a message
    /// that can no longer be sent).
    pub fn take(&mut self, id: u64) -> Option<Bytes> {
        let p = self.pending.as_mut()?;
        let at = p.queue.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        let (_, payload) = p.queue.remove(at)?;
        p.bytes -= payload.len();
        if at < p.framed {
            p.framed -= 1;
        } else {
            p.unframed_bytes -= payload.len();
        }
        Some(payload)
    }

    /// Pending messages in id order.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Bytes)> {
        self.pending.iter().flat_map(|p| p.queue.iter())
    }

    /// Removes and returns every pending message (when the sender gives up). Ids go on
    /// growing: a later message never reuses one.
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        self.pending.iter_mut().flat_map(|p| {
            p.framed = 0;
            p.unframed_bytes = 0;
            p.bytes = 0;
            p.queue.drain(..)
        })
    }

    /// Number of pending messages.
    pub fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.queue.len())
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

    const W: Window = Window {
        messages: 10,
        bytes: 1 << 20,
    };

    #[test]
    fn window_bounds_pending_messages() {
        let mut q = SendQueue::new();
        let w = Window {
            messages: 2,
            bytes: 100,
        };
        assert_eq!(q.push(Bytes::from_static(b"a"), w), Ok(1));
        assert_eq!(q.push(Bytes::from_static(b"b"), w), Ok(2));
        assert_eq!(q.push(Bytes::from_static(b"c"), w), Err(WindowFull));
        assert_eq!(q.next_to_frame().map(|(id, _)| id), Some(1));
        assert!(q.ack(1));
        assert_eq!(q.push(Bytes::from_static(b"c"), w), Ok(3));
    }

    #[test]
    fn window_bounds_pending_bytes() {
        let mut q = SendQueue::new();
        let w = Window {
            messages: 100,
            bytes: 10,
        };
        assert_eq!(q.push(Bytes::from_static(b"123456"), w), Ok(1));
        assert_eq!(q.push(Bytes::from_static(b"12345"), w), Err(WindowFull));
        assert_eq!(q.push(Bytes::from_static(b"1234"), w), Ok(2));
        q.next_to_frame();
        assert!(q.ack(1));
        assert_eq!(q.push(Bytes::from_static(b"123456"), w), Ok(3));
        assert_eq!(q.take(2).as_deref(), Some(&b"1234"[..]));
        assert_eq!(q.push(Bytes::from_static(b"1234"), w), Ok(4));
    }

    fn frame_all(q: &mut SendQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.next_to_frame().map(|(id, _)| id)).collect()
    }

    #[test]
    fn acks_in_any_order_and_duplicates() {
        let mut q = SendQueue::new();
        for _ in 0..5 {
            q.push(Bytes::new(), W).unwrap();
        }
        assert_eq!(frame_all(&mut q), [1, 2, 3, 4, 5]);
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
    fn messages_are_framed_once_per_connection_and_acks_need_a_framing() {
        let mut q = SendQueue::new();
        for p in [&b"aa"[..], b"bbb", b"c"] {
            q.push(Bytes::copy_from_slice(p), W).unwrap();
        }
        assert_eq!(q.unframed_bytes(), 6);
        assert!(!q.ack(1), "not framed yet: a peer cannot have it");
        assert_eq!(q.next_to_frame().map(|(id, _)| id), Some(1));
        assert_eq!(q.unframed_bytes(), 4);
        assert!(q.ack(1));
        assert!(!q.ack(2), "not framed yet");
        assert_eq!(frame_all(&mut q), [2, 3]);
        assert!(!q.has_unframed());
        // A reconnect: what is pending goes out again, in order.
        q.rewind();
        assert_eq!(q.unframed_bytes(), 4);
        assert!(!q.ack(3), "framed on the old connection only");
        assert_eq!(q.take(3).as_deref(), Some(&b"c"[..]));
        assert_eq!(q.unframed_bytes(), 3);
        assert_eq!(frame_all(&mut q), [2]);
        assert!(q.ack(2));
        assert!(q.is_empty());
        assert_eq!(q.push(Bytes::new(), W), Ok(4), "ids are never reused");
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
