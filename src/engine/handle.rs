//! Typed handles: what names a connection or a client of one engine, and the socket
//! operations the engine asks its driver for.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;

/// Names a connection of an engine. Stale ids (the connection is gone, its slot reused) are
/// recognised by the generation and ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnId {
    pub(super) index: u32,
    /// Never zero, so that an `Option<ConnId>` costs no more than a `ConnId`.
    pub(super) gen: NonZeroU32,
}

impl ConnId {
    /// The slot index (dense, reused after the connection is gone). Drivers use it to
    /// index their own per-connection tables.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The generation that tells this connection from others that used the same slot.
    pub fn generation(self) -> u32 {
        self.gen.get()
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.index, self.gen)
    }
}

/// Names a client record of an engine (which outlives its connections).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClientId {
    pub(super) index: u32,
    pub(super) gen: NonZeroU32,
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}.{}", self.index, self.gen)
    }
}

/// Names an application timer of an engine ([`Engine::set_timer`](crate::engine::Engine::set_timer)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerId {
    pub(super) index: u32,
    pub(super) gen: NonZeroU32,
}

/// What the driver must do with sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// Open a non-blocking connection to `addr` for `conn`; report the outcome with
    /// [`Engine::handle_connected`](crate::engine::Engine::handle_connected) or [`Engine::handle_connect_failed`](crate::engine::Engine::handle_connect_failed).
    Connect {
        /// The engine's id for the new connection.
        conn: ConnId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close the socket of `conn`; the engine has forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// Names a link of an engine: an outbound connection of the application's own protocol
/// ([`Engine::add_link`](crate::engine::Engine::add_link)), which outlives its connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LinkId {
    pub(super) index: u32,
    pub(super) gen: NonZeroU32,
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "l{}.{}", self.index, self.gen)
    }
}
