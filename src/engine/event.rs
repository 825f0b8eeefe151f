//! What an application hears from the engine (events) and what it hands in (client
//! settings), with the vocabulary of refusals.

use super::handle::{ClientId, ConnId, TimerId};
use crate::frame::{Hello, Reason, Text};
use crate::link::LinkEvent;
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The state of a client record, as reported in [`ClientEvent::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected; HELLO sent, waiting for WELCOME.
    Handshaking,
    /// WELCOME received: messages flow.
    Active,
    /// Waiting before the next attempt.
    Backoff,
    /// Stopped for good.
    Closed,
}

/// Application events, drained with [`Engine::poll_event`](crate::engine::Engine::poll_event):
/// what happened on the server side, on the client side, or to the application's own
/// timers. An application that only serves (or only connects) matches one side, and
/// that side's enum exhaustively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Something happened to a server-side session.
    Server(ServerEvent),
    /// Something happened to a client.
    Client(ClientEvent),
    /// Something happened to a link ([`Engine::add_link`](crate::engine::Engine::add_link)).
    Link(LinkEvent),
    /// A message from an in-process bus ([`crate::bus::LocalBus`]) for a channel this loop
    /// subscribed to.
    Bus {
        /// The channel.
        channel: Bytes,
        /// The message.
        payload: Bytes,
    },
    /// An application timer ([`Engine::set_timer`](crate::engine::Engine::set_timer)) is due.
    Timer {
        /// The timer (still valid if it repeats).
        id: TimerId,
        /// The token it was set with.
        token: u64,
    },
    /// Raw mode: bytes read from `conn`, as they came (no framing).
    Raw {
        /// The connection.
        conn: ConnId,
        /// The bytes. Dropping them promptly lets the engine reuse their memory.
        data: Bytes,
    },
    /// Raw mode: outbound bytes for `conn` crossed the high water mark (`congested:
    /// true`) or fell back to the low water mark (`false`).
    RawBackpressure {
        /// The connection.
        conn: ConnId,
        /// Whether the application should hold back.
        congested: bool,
    },
}

/// Server side: the sessions of clients that connected to this engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// a client completed the handshake.
    Opened {
        /// The connection.
        conn: ConnId,
        /// The HELLO identity.
        identity: Text,
        /// The HELLO instance.
        instance: u64,
        /// The session id sent in WELCOME.
        session: u64,
        /// The client's address, as the driver saw it: the mio reactor fills it in; the
        /// engine itself, which never sees a socket, and the simulator leave it `None`.
        peer: Option<SocketAddr>,
    },
    /// When logins are decided by the application
    /// ([`Engine::decide_logins`](crate::engine::Engine::decide_logins)): a client sent a
    /// valid HELLO. Answer with
    /// [`Engine::accept_login`](crate::engine::Engine::accept_login) or
    /// [`Engine::reject_login`](crate::engine::Engine::reject_login), now or later (after
    /// asking a database, say), before the handshake deadline, which keeps running; a
    /// connection not answered by then is closed with `HANDSHAKE_TIMEOUT`.
    Login {
        /// The connection.
        conn: ConnId,
        /// What the client presented (identity, instance, token).
        hello: Box<Hello>,
    },
    /// a connection ended (handshake or not), with why.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The identity, if the handshake had completed.
        identity: Option<Text>,
        /// Why it ended.
        reason: Reason,
    },
    /// a reliable message from a client, handed over exactly once per
    /// session record and acknowledged.
    Message {
        /// The connection it came on.
        conn: ConnId,
        /// The sending client's identity.
        identity: Text,
        /// The sending client's HELLO instance. With `id` it names the message across
        /// servers: a client that fails over resends what was not acknowledged, so an
        /// application merging several servers' streams deduplicates by `(instance, id)`.
        instance: u64,
        /// The client's message id.
        id: u64,
        /// The payload.
        payload: Bytes,
    },
    /// the client acknowledged message `id` sent with
    /// [`Engine::send_message`](crate::engine::Engine::send_message); it was handed to the client's application.
    Acked {
        /// The connection the acknowledgement came on.
        conn: ConnId,
        /// The client's identity.
        identity: Text,
        /// The message id `send_message` returned.
        id: u64,
    },
    /// message `id` sent with [`Engine::send_message`](crate::engine::Engine::send_message) will never be
    /// acknowledged by the client instance it was sent to, and this engine will not send it
    /// again: another instance of the identity logged in, the session record expired, or
    /// the server shut down. The payload is handed back so that the application can send
    /// it again (to the identity's new session, say) or report it. It may have reached the
    /// client without its ACK coming back.
    Failed {
        /// The identity it was addressed to.
        identity: Text,
        /// The client instance it was addressed to.
        instance: u64,
        /// The message id `send_message` returned.
        id: u64,
        /// The payload, handed back.
        payload: Bytes,
        /// Why it will not be delivered by this engine.
        cause: FailCause,
    },
    /// DATA from a client.
    Data {
        /// The connection.
        conn: ConnId,
        /// The payload.
        payload: Bytes,
    },
    /// Bytes waiting for the session (framed, and reliable messages not framed yet)
    /// crossed the high water mark (`congested: true`), or fell back to the low water
    /// mark (`false`).
    Backpressure {
        /// The connection.
        conn: ConnId,
        /// Whether the application should hold back.
        congested: bool,
    },
}

/// Client side: the clients this engine runs ([`Engine::add_client`](crate::engine::Engine::add_client)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// the client changed state.
    State {
        /// The client.
        client: ClientId,
        /// Its new state.
        state: ClientState,
        /// The server concerned: connecting to, connected to, or, for
        /// [`ClientState::Backoff`] and [`ClientState::Closed`], the one just lost (`None` if
        /// there was no connection to lose, as when the local connection limit is reached).
        server: Option<SocketAddr>,

        /// Why it changed, when it was not the normal course.
        reason: Option<Reason>,
        /// For [`ClientState::Backoff`]: when and where the next attempt goes. (Boxed: it
        /// is rare, and every event is as large as the largest.)
        retry: Option<Box<Retry>>,
    },
    /// a reliable message from the server, handed over once.
    Message {
        /// The client.
        client: ClientId,
        /// The server's message id.
        id: u64,
        /// The payload.
        payload: Bytes,
    },
    /// DATA from the server.
    Data {
        /// The client.
        client: ClientId,
        /// The payload.
        payload: Bytes,
    },
    /// the server acknowledged message `id`; it will never be lost.
    Acked {
        /// The client.
        client: ClientId,
        /// The message id.
        id: u64,
    },
    /// message `id` was never acknowledged and the client stopped (or the
    /// server's frame limit is too small for it).
    Failed {
        /// The client.
        client: ClientId,
        /// The message id.
        id: u64,
        /// The payload, handed back.
        payload: Bytes,
    },
    /// a PONG measured this round trip.
    Rtt {
        /// The client.
        client: ClientId,
        /// The round-trip time.
        rtt: Duration,
    },
    /// Bytes waiting for the client's current connection crossed the high water mark
    /// (`congested: true`), or fell back to the low water mark (`false`).
    Backpressure {
        /// The client.
        client: ClientId,
        /// Whether the application should hold back.
        congested: bool,
    },
}

/// The next attempt of a client in [`ClientState::Backoff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The delay before it (jittered; zero after a GOAWAY).
    pub after: Duration,
    /// The server it goes to.
    pub server: SocketAddr,
}

/// Why a server-sent message was handed back in [`ServerEvent::Failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailCause {
    /// Another instance of the identity logged in: the one the message went to is not
    /// coming back (it was replaced, or its process restarted).
    Replaced,
    /// The session record expired (`Config::record_linger` after its client left, or
    /// sooner when records outnumber `max_connections`).
    Expired,
    /// The engine is shutting down.
    ShuttingDown,
}

impl fmt::Display for FailCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailCause::Replaced => "another instance of the identity logged in",
            FailCause::Expired => "the session record expired",
            FailCause::ShuttingDown => "the server is shutting down",
        })
    }
}

/// Why a send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection or client is gone.
    Gone,
    /// The session is not active (DATA is never queued).
    NotActive,
    /// Too many reliable messages (`Config::max_unacked`), or too many of their bytes
    /// (`Config::max_unacked_bytes`), are unacknowledged: try again after an
    /// acknowledgement.
    WindowFull,
    /// The payload does not fit in one frame.
    TooLarge,
    /// The client is closing once what it sent is acknowledged
    /// ([`Engine::close_client_when_acked`](crate::engine::Engine::close_client_when_acked)).
    Closing,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Gone => "no such connection or client",
            SendError::NotActive => "session not active",
            SendError::WindowFull => "too many unacknowledged messages (or bytes)",
            SendError::TooLarge => "payload exceeds the frame limit",
            SendError::Closing => "the client is closing",
        })
    }
}

impl std::error::Error for SendError {}

/// TLS for a client's connections ([`Engine::add_client_tls`](crate::engine::Engine::add_client_tls)):
/// the settings ([`crate::tls::client_config`] makes them from a CA's PEM) and the name the
/// servers' certificates must carry.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// rustls client settings, shared by every connection (and their session tickets).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The server name to verify (and to send in SNI).
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// What a client needs to know to start.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Identity sent in HELLO.
    pub identity: Text,
    /// Token sent in HELLO.
    pub token: Bytes,
    /// Servers in order of preference; the client fails over along this list.
    pub servers: Vec<SocketAddr>,
    /// The HELLO instance, which must differ between client processes (and between the
    /// clients of one process that share an identity). `None` (the usual choice): the engine
    /// draws one from the operating system's entropy source. Set it only to resume a
    /// previous instance, e.g. one a process saved before it restarted.
    pub instance: Option<u64>,
}

/// A snapshot of a client, for status displays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Current state.
    pub state: ClientState,
    /// The server connected to (or being tried).
    pub server: Option<SocketAddr>,
    /// Time since the current session became active.
    pub uptime: Option<Duration>,
    /// Last measured round trip.
    pub rtt_last: Option<Duration>,
    /// Mean of all measured round trips.
    pub rtt_mean: Option<Duration>,
    /// Time since the last read on the current connection.
    pub since_read: Option<Duration>,
    /// Time since the last write on the current connection.
    pub since_write: Option<Duration>,
    /// Sessions established after the first one.
    pub reconnects: u32,
    /// Reliable messages not yet acknowledged.
    pub unacked: usize,
}

/// The application's verdict on a HELLO (authentication, identity rules).
pub type HelloHook = Box<dyn FnMut(&Hello) -> Result<(), Reason>>;
