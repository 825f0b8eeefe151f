//! One connection as the engine holds it: its phase and role, its idle tracker and
//! deadline, and its buffers, which it holds only while bytes wait (from a pool shared by
//! the engine's connections). It frames reliable messages into its send buffer as it
//! drains; what to do about the connection is decided by the engine.

use crate::codec::Encoder;
use crate::idle::{IdleConfig, IdleKind, IdleTracker};
use crate::reliable::SendQueue;
use crate::time::Tick;
use crate::wheel::{TimerKey, Wheel};
use bytes::BytesMut;
use log::warn;
use std::num::NonZeroU32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConnState {
    Connecting,
    AwaitHello,
    /// Server: a valid HELLO waits for the application's verdict (`ServerEvent::Login`).
    AwaitVerdict,
    AwaitWelcome,
    Active,
    Closing,
    /// Over the outbound cap: it reads and queues nothing more, and the engine drops it at
    /// the next settling point (never under a caller that is queueing on it).
    Doomed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Accepted; the index of its session record once the handshake completed.
    Server { record: Option<u32> },
    /// Outbound for the client record at this index. `ping_ticks` is the session's ping
    /// interval when the server's WELCOME asked for a shorter one than the configured
    /// `ping_interval` (PROTOCOL.md 3.2); it lives here, not in the client record, because
    /// every heartbeat reads it.
    Client {
        client: u32,
        ping_ticks: Option<NonZeroU32>,
    },
    /// Accepted in raw mode: bytes in, bytes out, no frames and no session.
    Raw,
    /// Outbound for the link at this index: the bytes are its protocol's.
    Link { link: u32 },
}

/// A connection's receive buffer (a partial frame, from its first byte) and its send
/// buffer. Idle connections hold none; a connection takes a pair from the engine's pool
/// when a partial frame arrives or bytes are queued, and gives it back when both are empty
/// again, so that steady traffic allocates nothing.
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) inbuf: BytesMut,
    pub(super) out: BytesMut,
}

/// Size of the shared receive buffer's chunks.
pub(super) const RX_CHUNK: usize = 64 * 1024;

/// Buffer pairs kept for reuse: enough for a full batch of timers (each may queue a PING),
/// within a byte budget so that a burst of large writes does not stay pinned.
const POOL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Buffer pairs larger than this are not kept.
const POOL_PAIR_MAX: usize = 256 * 1024;

/// Buffer pairs waiting for reuse, boxed because the same boxes move into connections
/// (`Option<Box<Buffers>>`, one word while idle) and back, without copying their contents.
pub(super) struct Pool {
    #[allow(clippy::vec_box)]
    free: Vec<Box<Buffers>>,
    /// Capacity held by `free`, against `POOL_BYTES_MAX`.
    bytes: usize,
    /// Pairs kept at most.
    max: usize,
}

impl Pool {
    /// A pool that keeps at most `max` pairs.
    pub(super) fn new(max: usize) -> Pool {
        Pool {
            free: Vec::new(),
            bytes: 0,
            max,
        }
    }

    pub(super) fn take(&mut self) -> Box<Buffers> {
        match self.free.pop() {
            Some(b) => {
                self.bytes -= b.capacity();
                b
            }
            None => Box::default(),
        }
    }

    /// Keeps `b` (emptied) if the pool has room for it; otherwise frees it.
    pub(super) fn give(&mut self, mut b: Box<Buffers>) {
        let cap = b.capacity();
        // A pair grown by a burst (a link renewing thousands of subscriptions at once) is
        // freed, not pinned for reuse.
        if cap <= POOL_PAIR_MAX && self.free.len() < self.max && self.bytes + cap <= POOL_BYTES_MAX
        {
            // A closed connection's pair may still hold a partial frame or unsent bytes.
            b.inbuf.clear();
            b.out.clear();
            self.bytes += cap;
            self.free.push(b);
        }
    }
}

impl Buffers {
    pub(super) fn capacity(&self) -> usize {
        self.inbuf.capacity() + self.out.capacity()
    }
}

// One cache line per connection: the slab's slots then never straddle two.
#[repr(align(64))]
pub(super) struct Conn {
    pub(super) gen: NonZeroU32,
    pub(super) state: ConnState,
    pub(super) role: Role,
    pub(super) idle: IdleTracker,
    /// Present only while bytes wait in either direction; see [`Buffers`].
    pub(super) bufs: Option<Box<Buffers>>,
    /// Handshake, connect or linger deadline, by state.
    pub(super) deadline: Option<Tick>,
    pub(super) congested: bool,
    /// Listed in `transmit` already.
    pub(super) pending_transmit: bool,
    /// The session's send queue may hold messages not yet framed on this connection: only
    /// then does a write that made room look at the queue (which lives elsewhere in
    /// memory, a cache miss per connection on every heartbeat otherwise).
    pub(super) unframed: bool,
}

impl Conn {
    /// Bytes framed and waiting to be written.
    pub(super) fn queued(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.out.len())
    }

    /// Frames the messages waiting in `send` into the send buffer while it holds less than
    /// `budget` bytes (at least one when it is empty), taking a buffer pair from `pool` if
    /// needed. Returns whether it framed any; `unframed` says whether more wait.
    pub(super) fn frame_messages(
        &mut self,
        send: &mut SendQueue,
        encoder: &Encoder,
        pool: &mut Pool,
        budget: usize,
        tick: Tick,
    ) -> bool {
        if !send.has_unframed() {
            self.unframed = false;
            return false;
        }
        let out = &mut self.bufs.get_or_insert_with(|| pool.take()).out;
        if out.is_empty() {
            // The start of a write: a stall is measured from here.
            self.idle.record_write(tick);
        }
        let mut framed = false;
        while out.len() < budget {
            let Some((id, payload)) = send.next_to_frame() else {
                break;
            };
            // Sizes were checked against the frame limit when the message was taken.
            if let Err(e) = encoder.encode_message(id, payload, out) {
                warn!("message {id} not framed: {e}");
            }
            framed = true;
        }
        self.unframed = send.has_unframed();
        framed
    }
}

/// What a connection's timer means for it, decided from its phase, its deadline and the
/// idle periods that ended; the engine carries it out (a connection never closes itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// Nothing to do: the timer was re-armed, or the connection is doomed already.
    Nothing,
    /// Client: the connect did not complete in time.
    ConnectTimedOut,
    /// Server: no HELLO, or no verdict on it, before the handshake deadline.
    HandshakeTimedOut,
    /// Client: no WELCOME before the handshake deadline.
    NoWelcome,
    /// Closing: the last frames could not be flushed within the linger time.
    LingerOver,
    /// Server: nothing read for the idle timeout.
    ReadIdle,
    /// Server: bytes waited, without one leaving, since the last write: the peer does not
    /// read (it may still ping).
    WriteStall,
    /// Client: a second read-idle period in a row. The server is gone, whatever our writes
    /// say (they only prove the bytes reached our kernel).
    ServerSilent,
    /// Client: a write-idle or first read-idle period: time to PING.
    Ping,
}

impl Conn {
    /// Runs the connection's timer `key` (which must be its own) at `tick` and says what
    /// it means; `index` is the value its wheel entry carries.
    pub(super) fn on_timer(
        &mut self,
        idle: &IdleConfig,
        wheel: &mut Wheel,
        key: TimerKey,
        tick: Tick,
        index: usize,
    ) -> Expiry {
        let due = self.deadline.filter(|d| d.is_at_or_before(tick));
        let extra = if due.is_some() { None } else { self.deadline };
        let events = self
            .idle
            .on_timer(idle, wheel, key, tick, index as u32, extra);
        if self.state == ConnState::Doomed {
            return Expiry::Nothing; // dropped at the next settling point
        }
        if due.is_some() {
            self.deadline = None;
            match self.state {
                ConnState::Connecting => return Expiry::ConnectTimedOut,
                ConnState::AwaitHello | ConnState::AwaitVerdict => {
                    return Expiry::HandshakeTimedOut
                }
                ConnState::AwaitWelcome => return Expiry::NoWelcome,
                ConnState::Closing => return Expiry::LingerOver,
                ConnState::Active | ConnState::Doomed => {}
            }
        }
        if events.is_empty() {
            return Expiry::Nothing;
        }
        match self.role {
            // Raw connections are not idle-tracked (their idle config is disabled).
            Role::Raw => Expiry::Nothing,
            Role::Server { .. } => {
                if events.get(IdleKind::Read).is_some() {
                    Expiry::ReadIdle
                } else if events.get(IdleKind::Write).is_some() && self.queued() > 0 {
                    Expiry::WriteStall
                } else {
                    Expiry::Nothing
                }
            }
            Role::Client { .. } | Role::Link { .. } => match events.get(IdleKind::Read) {
                Some(e) if !e.first => Expiry::ServerSilent,
                _ => Expiry::Ping,
            },
        }
    }
}
