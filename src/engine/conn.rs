//! One connection as the engine holds it: its phase and role, its idle tracker and
//! deadline, and its buffers, which it holds only while bytes wait (from a pool shared by
//! the engine's connections). It frames reliable messages into its send buffer as it
//! drains; what to do about the connection is decided by the engine.

use crate::codec::{Decoder, Encoder};
use crate::frame::{Code, Frame, Hello, Reason, Text, Welcome};
use crate::idle::IdleTracker;
use crate::reliable::SendQueue;
use crate::time::Tick;
use bytes::{Bytes, BytesMut};
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
}

/// A connection's receive buffer and decoder state (a partial frame) and its send buffer.
/// Idle connections hold none; a connection takes a pair from the engine's pool when a
/// partial frame arrives or bytes are queued, and gives it back when both are empty again,
/// so that steady traffic allocates nothing and an idle connection carries no decoder.
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) inbuf: BytesMut,
    /// Meaningful only while `inbuf` holds a partial frame; see `Engine::handle_read`.
    pub(super) decoder: Decoder,
    pub(super) out: BytesMut,
}

/// Size of the shared receive buffer's chunks.
pub(super) const RX_CHUNK: usize = 64 * 1024;

/// Buffer pairs kept for reuse: enough for a full batch of timers (each may queue a PING),
/// within a byte budget so that a burst of large writes does not stay pinned.
const POOL_BYTES_MAX: usize = 4 * 1024 * 1024;

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
        if self.free.len() < self.max && self.bytes + cap <= POOL_BYTES_MAX {
            // A closed connection's pair may still hold a partial frame or unsent bytes.
            b.inbuf.clear();
            b.out.clear();
            b.decoder = Decoder::default();
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

/// What an inbound frame asks of a connection, decided from its side and phase alone: the
/// table of PROTOCOL.md 4.1 (which frames each state accepts) in one place. The engine
/// acts on it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Inbound {
    /// Server, waiting for HELLO.
    Hello(Box<Hello>),
    /// Client, waiting for WELCOME.
    Welcome(Welcome),
    /// Client, waiting for WELCOME: refused.
    Reject(Reason),
    /// Client: the server is leaving.
    GoAway(Reason),
    /// The peer's fatal error (or a client's orderly quit, code NO_ERROR).
    Error(Reason),
    /// Active, either side.
    Ping(u64),
    /// Active, either side.
    Pong(u64),
    /// Active, either side.
    Data(Bytes),
    /// Active, either side (id 1 or more).
    Message { id: u64, payload: Bytes },
    /// Active, either side.
    Ack(u64),
    /// Not allowed here: close with ERROR `PROTOCOL_VIOLATION` and this reason.
    Violation(Reason),
    /// Nothing can arrive here (connecting, raw mode), or it is discarded (closing).
    Ignore,
}

impl Conn {
    /// What `frame` asks of this connection; see [`Inbound`].
    pub(super) fn classify(&self, frame: Frame) -> Inbound {
        let violation = |frame: &Frame, why: &str| {
            Inbound::Violation(Reason {
                code: Code::PROTOCOL_VIOLATION,
                text: Text::from(format!("{} {why}", frame.kind())),
            })
        };
        let server = match self.role {
            Role::Server { .. } => true,
            Role::Client { .. } => false,
            Role::Raw => return Inbound::Ignore,
        };
        match (server, self.state, frame) {
            (true, ConnState::AwaitHello, Frame::Hello(h)) => Inbound::Hello(h),
            (true, ConnState::AwaitHello, f) => violation(&f, "expected HELLO"),
            (true, ConnState::AwaitVerdict, f) => violation(&f, "sent before WELCOME"),
            (false, ConnState::AwaitWelcome, Frame::Welcome(w)) => Inbound::Welcome(w),
            (false, ConnState::AwaitWelcome, Frame::Reject(r)) => Inbound::Reject(r),
            (false, ConnState::AwaitWelcome | ConnState::Active, Frame::GoAway(r)) => {
                Inbound::GoAway(r)
            }
            (false, ConnState::AwaitWelcome, Frame::Error(r)) => Inbound::Error(r),
            (false, ConnState::AwaitWelcome, f) => violation(&f, "expected WELCOME"),
            (_, ConnState::Active, frame) => match frame {
                Frame::Ping(v) => Inbound::Ping(v),
                Frame::Pong(v) => Inbound::Pong(v),
                Frame::Data(payload) => Inbound::Data(payload),
                // The duplicate filter starts at 0: an id 0 could only be acknowledged,
                // never handed over.
                Frame::Message { id: 0, .. } => Inbound::Violation(Reason::new(
                    Code::PROTOCOL_VIOLATION,
                    "MESSAGE id 0 (ids start at 1)",
                )),
                Frame::Message { id, payload } => Inbound::Message { id, payload },
                Frame::Ack(id) => Inbound::Ack(id),
                Frame::Error(r) => Inbound::Error(r),
                f if server => violation(&f, "not allowed from a client"),
                f => violation(&f, "not allowed from a server"),
            },
            // Connecting: no bytes can arrive; Closing and Doomed: discarded.
            _ => Inbound::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Tick;

    fn conn(role: Role, state: ConnState) -> Conn {
        Conn {
            gen: NonZeroU32::MIN,
            state,
            role,
            idle: IdleTracker::new(Tick(0)),
            bufs: None,
            deadline: None,
            congested: false,
            pending_transmit: false,
            unframed: false,
        }
    }

    /// One frame of every kind.
    fn every_kind() -> Vec<Frame> {
        let reason = || Reason::new(Code::NO_ERROR, "");
        vec![
            Frame::Hello(Box::new(Hello {
                version: 1,
                instance: 1,
                attempt: 0,
                identity: Text::from("x"),
                token: Bytes::new(),
            })),
            Frame::Welcome(Welcome {
                version: 1,
                session: 1,
                ping_interval_ms: 1,
                idle_timeout_ms: 2,
                max_frame_len: 64,
            }),
            Frame::Reject(reason()),
            Frame::Ping(1),
            Frame::Pong(1),
            Frame::Data(Bytes::new()),
            Frame::Message {
                id: 1,
                payload: Bytes::new(),
            },
            Frame::Ack(1),
            Frame::GoAway(reason()),
            Frame::Error(reason()),
        ]
    }

    /// The table of PROTOCOL.md 4.1: what each side accepts in each state; anything else
    /// is a PROTOCOL_VIOLATION.
    #[test]
    fn frames_are_accepted_as_protocol_section_4_1_says() {
        let server = Role::Server { record: Some(0) };
        let client = Role::Client {
            client: 0,
            ping_ticks: None,
        };
        let table: [(Role, ConnState, &[&str]); 5] = [
            (server, ConnState::AwaitHello, &["HELLO"]),
            (server, ConnState::AwaitVerdict, &[]),
            (
                server,
                ConnState::Active,
                &["PING", "PONG", "DATA", "MESSAGE", "ACK", "ERROR"],
            ),
            (
                client,
                ConnState::AwaitWelcome,
                &["WELCOME", "REJECT", "ERROR", "GOAWAY"],
            ),
            (
                client,
                ConnState::Active,
                &["PING", "PONG", "DATA", "MESSAGE", "ACK", "GOAWAY", "ERROR"],
            ),
        ];
        for (role, state, accepted) in table {
            let c = conn(role, state);
            for frame in every_kind() {
                let kind = frame.kind().name();
                let verdict = c.classify(frame);
                let violation =
                    matches!(&verdict, Inbound::Violation(r) if r.code == Code::PROTOCOL_VIOLATION);
                assert_eq!(
                    !violation,
                    accepted.contains(&kind),
                    "{kind} in {state:?} ({role:?}): {verdict:?}"
                );
            }
        }
        // A MESSAGE with id 0 is refused on either side.
        for role in [server, client] {
            let zero = Frame::Message {
                id: 0,
                payload: Bytes::new(),
            };
            assert!(matches!(
                conn(role, ConnState::Active).classify(zero),
                Inbound::Violation(_)
            ));
        }
        // Closing, doomed and connecting connections take nothing.
        for state in [ConnState::Closing, ConnState::Doomed, ConnState::Connecting] {
            assert_eq!(
                conn(server, state).classify(Frame::Ping(1)),
                Inbound::Ignore
            );
        }
    }
}
