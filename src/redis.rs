//! A Redis client as a link protocol ([`crate::link::Protocol`]): RESP3 on one connection
//! (`HELLO 3`), replies and pushes on it, requests pipelined.
//!
//! The engine keeps the connection up (keepalive `PING` on write idle, a silent server
//! given up after two ping intervals, jittered backoff and failover along the list of
//! addresses). This state machine does the rest:
//!
//! ```text
//!   connected ──HELLO 3──> Handshaking ──map reply──> Ready ──connection lost──> Down
//!                              │ error reply: the connection is closed, the link backs off
//!   Ready: every sharded subscription is renewed in one pipelined batch, then the requests
//!          held while down go out, in the order they were made
//!   Down:  requests in flight fail (their outcome is unknown: make them idempotent);
//!          new requests are held, up to `max_held` bytes, then refused
//! ```
//!
//! Replies come back as [`RedisEvent::Reply`] with the token the request was made with;
//! messages published to a subscribed channel as [`RedisEvent::Message`], their channel and
//! payload pointing into the connection's receive buffer (no copy).

use crate::bus::{Bus, BusError};
use crate::frame::{Code, Reason, Text};
use crate::link::Protocol;
use crate::resp::{self, Kind, Limits, Value};
use bytes::{Bytes, BytesMut};
use hashbrown::HashSet;
use log::debug;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Something the application hears from Redis.
#[derive(Clone, Debug, PartialEq)]
pub enum RedisEvent {
    /// `HELLO 3` was answered: requests flow (after every reconnect too).
    Up {
        /// The server.
        server: SocketAddr,
    },
    /// The connection was lost: requests are held until the next [`Up`](Self::Up).
    Down {
        /// Why.
        reason: Reason,
    },
    /// The reply to the request made with `token`.
    Reply {
        /// The request's token.
        token: u64,
        /// The reply (an error reply is [`Reply::Error`]).
        reply: Reply,
    },
    /// The request made with `token` has no reply coming: the connection was lost while
    /// it was in flight (it may or may not have run).
    Failed {
        /// The request's token.
        token: u64,
        /// Why.
        reason: Reason,
    },
    /// A message published to a subscribed (sharded) channel.
    Message {
        /// The channel.
        channel: Bytes,
        /// The message.
        payload: Bytes,
    },
}

/// A reply, owned. Strings point into the receive buffer they came in.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A simple string, such as `OK`.
    Status(Bytes),
    /// An error reply (`-ERR ...`, `!...`).
    Error(Bytes),
    /// An integer.
    Int(i64),
    /// A bulk string, verbatim string or big number.
    Bulk(Bytes),
    /// A null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A double.
    Double(f64),
    /// An array, set or push; a map as key, value, key, value.
    Array(Vec<Reply>),
}

impl Reply {
    /// The string, for a status or bulk reply.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Status(b) | Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, for an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements, for an aggregate.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(a) => Some(a),
            _ => None,
        }
    }

    fn of(v: Value<'_>, frame: &Bytes) -> Reply {
        let bytes = |s: &[u8]| frame.slice_ref(s);
        match v.kind() {
            Kind::Simple => Reply::Status(v.as_bytes().map(bytes).unwrap_or_default()),
            Kind::Error | Kind::BulkError => {
                Reply::Error(v.error_text().map(bytes).unwrap_or_default())
            }
            Kind::Int => Reply::Int(v.as_int().unwrap_or_default()),
            Kind::Bulk | Kind::Verbatim | Kind::BigNumber => {
                Reply::Bulk(v.as_bytes().map(bytes).unwrap_or_default())
            }
            Kind::Null => Reply::Null,
            Kind::Bool => Reply::Bool(v.as_bool().unwrap_or_default()),
            Kind::Double => Reply::Double(v.as_double().unwrap_or_default()),
            Kind::Array | Kind::Map | Kind::Set | Kind::Push => {
                Reply::Array(v.items().map(|item| Reply::of(item, frame)).collect())
            }
        }
    }
}

/// Why a request was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisError {
    /// Redis is down and `max_held` bytes of requests wait already.
    Full,
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Full => write!(f, "Redis is unreachable and the request queue is full"),
        }
    }
}

impl std::error::Error for RedisError {}

/// Buffers above this capacity are given back once empty.
const SHRINK_ABOVE: usize = 64 * 1024;

/// What a reply in flight answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Hello,
    Ping,
    Request(u64),
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Down,
    Handshaking(SocketAddr),
    Ready,
}

/// The Redis protocol state machine. Give it to
/// [`Engine::add_link`](crate::engine::Engine::add_link) in a `Box`; reach it with
/// [`App::link`](crate::engine::App::link).
pub struct Redis {
    phase: Phase,
    /// Bytes for the connection, while it is up.
    out: BytesMut,
    /// Requests made while not ready, encoded, in order, and what each one's reply answers.
    held: BytesMut,
    held_pending: VecDeque<Pending>,
    max_held: usize,
    /// Replies expected, in order.
    inflight: VecDeque<Pending>,
    /// Sharded channels subscribed to, renewed on every reconnect.
    /// Boxed slices, not `Bytes`: half the size per entry, one per logged-in user.
    channels: HashSet<Box<[u8]>>,
    events: VecDeque<RedisEvent>,
    limits: Limits,
    /// Requests issued while ready, for statistics.
    sent: u64,
}

impl Default for Redis {
    fn default() -> Self {
        Redis::new(16 << 20)
    }
}

impl Redis {
    /// A Redis client that holds up to `max_held` bytes of requests while Redis is
    /// unreachable.
    pub fn new(max_held: usize) -> Redis {
        Redis {
            phase: Phase::Down,
            out: BytesMut::new(),
            held: BytesMut::new(),
            held_pending: VecDeque::new(),
            max_held,
            inflight: VecDeque::new(),
            channels: HashSet::new(),
            events: VecDeque::new(),
            limits: Limits::default(),
            sent: 0,
        }
    }

    /// Sends the command `args` (`[b"SET", key, value]`); its reply comes back as
    /// [`RedisEvent::Reply`] with `token`. While Redis is down the command is held and sent
    /// on the next connection, in order, unless `max_held` bytes are held already.
    pub fn request(&mut self, token: u64, args: &[&[u8]]) -> Result<(), RedisError> {
        self.command(Pending::Request(token), args)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<RedisEvent> {
        let event = self.events.pop_front();
        // A burst of replies (a storm of logins) leaves a long queue behind: give it back.
        if event.is_none() && self.events.capacity() > SHRINK_ABOVE / 64 {
            self.events.shrink_to(64);
        }
        event
    }

    /// Whether requests reach Redis now.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Bytes of requests held until Redis is back.
    pub fn held_bytes(&self) -> usize {
        self.held.len()
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The sharded channels subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.channels.len()
    }

    fn command(&mut self, pending: Pending, args: &[&[u8]]) -> Result<(), RedisError> {
        if self.phase == Phase::Ready {
            resp::encode_command(&mut self.out, args);
            self.inflight.push_back(pending);
            self.sent += 1;
            return Ok(());
        }
        if self.held.len() + resp::command_len(args) > self.max_held {
            return Err(RedisError::Full);
        }
        resp::encode_command(&mut self.held, args);
        self.held_pending.push_back(pending);
        Ok(())
    }

    /// Handles one whole value from the connection.
    fn on_value(&mut self, v: Value<'_>, frame: &Bytes) -> Result<(), Reason> {
        if v.kind() == Kind::Push {
            self.on_push(v, frame);
            return Ok(());
        }
        let Some(pending) = self.inflight.pop_front() else {
            return Err(violation("a reply with no request"));
        };
        match pending {
            Pending::Hello => {
                if v.is_error() {
                    let text = v.error_text().unwrap_or_default();
                    return Err(Reason {
                        code: Code::AUTH_FAILED,
                        text: Text::from(format!("HELLO 3: {}", String::from_utf8_lossy(text))),
                    });
                }
                let Phase::Handshaking(server) = self.phase else {
                    return Err(violation("HELLO answered twice"));
                };
                self.phase = Phase::Ready;
                self.renew();
                self.events.push_back(RedisEvent::Up { server });
            }
            Pending::Ping => {}
            Pending::Request(token) => {
                let reply = Reply::of(v, frame);
                self.events.push_back(RedisEvent::Reply { token, reply });
            }
        }
        Ok(())
    }

    fn on_push(&mut self, v: Value<'_>, frame: &Bytes) {
        let mut items = v.items();
        let kind = items.next().and_then(|k| k.as_bytes()).unwrap_or_default();
        if kind.eq_ignore_ascii_case(b"smessage") || kind.eq_ignore_ascii_case(b"message") {
            if let (Some(channel), Some(payload)) = (
                items.next().and_then(|c| c.as_bytes()),
                items.next().and_then(|p| p.as_bytes()),
            ) {
                self.events.push_back(RedisEvent::Message {
                    channel: frame.slice_ref(channel),
                    payload: frame.slice_ref(payload),
                });
            }
        } else if kind.eq_ignore_ascii_case(b"sunsubscribe") {
            // Redis ends a sharded subscription by itself when the channel's slot moves:
            // subscribe again if it is still wanted.
            if let Some(channel) = items.next().and_then(|c| c.as_bytes()) {
                if self.channels.contains(channel) && self.phase == Phase::Ready {
                    resp::encode_command(&mut self.out, &[b"SSUBSCRIBE", channel]);
                }
            }
        }
        // Subscription confirmations and other pushes carry nothing to act on.
    }

    /// On a new connection: every subscription in one batch, then what was held.
    fn renew(&mut self) {
        for channel in &self.channels {
            resp::encode_command(&mut self.out, &[b"SSUBSCRIBE", channel]);
        }
        if !self.held.is_empty() {
            debug!(
                "redis: sending {} requests held while down",
                self.held_pending.len()
            );
            self.out.extend_from_slice(&self.held);
            self.held.clear();
            self.sent += self.held_pending.len() as u64;
            self.inflight.extend(self.held_pending.drain(..));
        }
    }
}

fn violation(why: &str) -> Reason {
    Reason {
        code: Code::PROTOCOL_VIOLATION,
        text: Text::from(format!("redis: {why}")),
    }
}

impl Bus for Redis {
    fn subscribe(&mut self, channel: &[u8]) {
        if self.channels.insert(Box::from(channel)) && self.phase == Phase::Ready {
            // The confirmation is a push, not a reply: nothing to wait for.
            resp::encode_command(&mut self.out, &[b"SSUBSCRIBE", channel]);
        }
    }

    fn unsubscribe(&mut self, channel: &[u8]) {
        if self.channels.remove(channel) && self.phase == Phase::Ready {
            resp::encode_command(&mut self.out, &[b"SUNSUBSCRIBE", channel]);
        }
    }

    fn publish(&mut self, channel: &[u8], payload: &[u8], token: u64) -> Result<(), BusError> {
        self.request(token, &[b"SPUBLISH", channel, payload])
            .map_err(|RedisError::Full| BusError::Full)
    }

    fn is_up(&self) -> bool {
        self.is_ready()
    }
}

impl Protocol for Redis {
    fn handle_connected(&mut self, server: SocketAddr, _now: Instant) {
        self.phase = Phase::Handshaking(server);
        self.out.clear();
        resp::encode_command(&mut self.out, &[b"HELLO", b"3"]);
        self.inflight.push_back(Pending::Hello);
    }

    fn handle_read(&mut self, inbuf: &mut BytesMut, _now: Instant) -> Result<bool, Reason> {
        let before = self.events.len();
        loop {
            let len = match resp::frame_len(inbuf, &self.limits) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return Err(violation(&e.to_string())),
            };
            // The reply's own bytes, frozen: what it carries points into them.
            let frame = inbuf.split_to(len).freeze();
            match resp::parse(&frame, &self.limits) {
                Ok(Some((v, _))) => self.on_value(v, &frame)?,
                Ok(None) => return Err(violation("a checked reply did not parse")),
                Err(e) => return Err(violation(&e.to_string())),
            }
        }
        if self.inflight.is_empty() && self.inflight.capacity() > SHRINK_ABOVE / 64 {
            self.inflight.shrink_to(64);
        }
        Ok(self.events.len() > before)
    }

    fn handle_write_idle(&mut self, _now: Instant) {
        if self.phase == Phase::Ready {
            resp::encode_command(&mut self.out, &[b"PING"]);
            self.inflight.push_back(Pending::Ping);
        }
    }

    fn handle_disconnected(&mut self, reason: &Reason, _now: Instant) -> bool {
        let was_ready = self.phase == Phase::Ready;
        self.phase = Phase::Down;
        self.out.clear();
        for pending in self.inflight.drain(..) {
            if let Pending::Request(token) = pending {
                self.events.push_back(RedisEvent::Failed {
                    token,
                    reason: reason.clone(),
                });
            }
        }
        if was_ready {
            debug!("redis: connection lost: {reason}");
            self.events.push_back(RedisEvent::Down {
                reason: reason.clone(),
            });
        }
        !self.events.is_empty()
    }

    fn poll_transmit(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.out);
        self.out.clear();
        // A burst (every subscription renewed at once) leaves a large buffer behind: an
        // idle link keeps a small one.
        if self.out.capacity() > SHRINK_ABOVE {
            self.out = BytesMut::new();
        }
        if self.inflight.is_empty() && self.inflight.capacity() > SHRINK_ABOVE / 64 {
            self.inflight.shrink_to(64);
        }
    }

    fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }
}
