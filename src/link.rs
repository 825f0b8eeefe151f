//! Links: outbound connections that speak a protocol of the application's choosing (a
//! message broker, a database, another service) on the same loop as the sessions.
//!
//! The engine keeps a link connected the way it keeps a client connected: it connects to
//! the first server of its list, fails over along the list with jittered, growing delays,
//! asks the protocol for a keepalive whenever nothing was written for the ping interval,
//! and declares the server dead after two ping intervals without a byte from it. The
//! protocol itself is a sans-IO state machine behind [`Protocol`]: it is handed the bytes
//! read, writes the bytes to send into a buffer, and keeps its own events for the
//! application, which reaches it through [`App::link`](crate::engine::App::link).
//!
//! ```text
//!          add_link
//!              │
//!              v        connected: Protocol::handle_connected
//!   ┌──> Connecting ──────────────────────────────────────────> Connected
//!   │          │ connect failed/timeout                              │ silent for two ping
//!   │          v                                                     │ intervals, protocol
//!   └────── Backoff <────────────────────────────────────────────────┘ error, peer closed
//!     (jittered delay, next server of the list)
//!   any state ──close_link, shutdown──> Closed
//! ```

use crate::backoff::Backoff;
use crate::engine::{LinkId, Retry};
use crate::frame::Reason;
use bytes::BytesMut;
use std::any::Any;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A protocol spoken over a link: a sans-IO state machine that the engine feeds and
/// drains. Every method is called on the loop, with the loop's clock.
pub trait Protocol: Any + Send {
    /// A connection is up (the first, or one after a loss): write what opens the session
    /// (a handshake, subscriptions to renew) with [`poll_transmit`](Self::poll_transmit).
    fn handle_connected(&mut self, server: SocketAddr, now: Instant);

    /// Bytes arrived: `inbuf` holds them after what earlier calls left. Take every whole
    /// message from its front and leave a partial one. An error closes the connection with
    /// that reason, and the link backs off and reconnects. Returns whether the application
    /// has something new to take from the protocol (the engine then reports
    /// [`LinkEvent::Readable`]).
    fn handle_read(&mut self, inbuf: &mut BytesMut, now: Instant) -> Result<bool, Reason>;

    /// Nothing was written for the ping interval: queue a keepalive whose answer proves
    /// the server alive (the engine counts any byte read as proof).
    fn handle_write_idle(&mut self, now: Instant);

    /// The connection ended; `reason` says why. Requests in flight on it have no answer
    /// coming. Returns whether the application has something new to take (the engine then
    /// reports [`LinkEvent::Readable`]).
    fn handle_disconnected(&mut self, reason: &Reason, now: Instant) -> bool;

    /// Moves the bytes waiting to be sent into `out`; called while connected, after every
    /// other call and after the application used the protocol.
    fn poll_transmit(&mut self, out: &mut BytesMut);

    /// Whether `poll_transmit` has bytes to move.
    fn wants_write(&self) -> bool;
}

/// How a link connects and detects a dead server.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Servers, tried in order; after a loss the link moves on to the next one.
    pub servers: Vec<SocketAddr>,
    /// Nothing written for this long: the protocol sends a keepalive. Nothing read for
    /// twice this long: the server is taken for dead and the link reconnects.
    pub ping_interval: Duration,
    /// A connect that has not completed after this long has failed.
    pub connect_timeout: Duration,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// The largest number of bytes a partial message of the protocol may hold: the
    /// connection is closed (and reconnected) past it, so a peer cannot grow memory without
    /// bound.
    pub max_buffered: usize,
}

impl LinkConfig {
    /// A link to `servers` with a 1 s ping interval, a 2 s connect timeout, the default
    /// backoff and 64 MiB of buffered input at most.
    pub fn new(servers: Vec<SocketAddr>) -> LinkConfig {
        LinkConfig {
            servers,
            ping_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            max_buffered: 64 << 20,
        }
    }
}

/// Where a link stands, as reported in [`LinkEvent::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected: the protocol's bytes flow.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// Stopped for good.
    Closed,
}

/// Something happened to a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link changed state.
    State {
        /// The link.
        link: LinkId,
        /// Its new state.
        state: LinkState,
        /// The server it concerns: the one connected to or tried, or the one lost.
        server: Option<SocketAddr>,
        /// Why it was lost, for `Backoff` and `Closed`.
        reason: Option<Reason>,
        /// For `Backoff`: when and where the next attempt goes (boxed: every event is as
        /// large as the largest kind).
        retry: Option<Box<Retry>>,
    },
    /// The protocol has something new for the application: take it through
    /// [`App::link`](crate::engine::App::link).
    Readable {
        /// The link.
        link: LinkId,
    },
}
