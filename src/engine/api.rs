//! The application's side of the engine: [`App`], the view a handler gets (commands, not
//! the driver's `handle_*`/`poll_*`), and typed handles for commands: [`Session`] for a
//! server session, [`Client`] for a client, each borrowed for as long as the commands take
//! (`app.session(conn)?.send_message(..)`, `app.client(id)?.info()`), with the one
//! [`SendError`] vocabulary. A handle exists only for what is there: a session that is
//! active, a client that is not closed.

use super::event::{ClientConfig, ClientInfo, SendError};
use super::handle::{ClientId, ConnId, LinkId, TimerId};
use super::Engine;
use crate::config::{Config, ConfigError};
use crate::frame::{Reason, Text};
use crate::link::{LinkConfig, LinkState, Protocol};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What an application handler may do, at the instant of the event it handles: the
/// engine's commands, with the time filled in. Drivers hand it to handlers
/// ([`Reactor::run`](crate::reactor::Reactor::run), [`Handle::run`](crate::reactor::Handle::run)).
pub struct App<'a> {
    engine: &'a mut Engine,
    now: Instant,
}

impl<'a> App<'a> {
    /// The view of `engine` at `now` (a driver's clock reading).
    pub fn new(engine: &'a mut Engine, now: Instant) -> App<'a> {
        engine.advance_clock(now);
        App { engine, now }
    }

    /// The driver's clock at this event.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The engine's settings.
    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    // -------------------------------------------------------------- server side

    /// The active session on `conn`, for commands; see [`Engine::session`].
    pub fn session(&mut self, conn: ConnId) -> Option<Session<'_>> {
        self.engine.session(conn)
    }

    /// The active session of `identity`, for commands.
    pub fn session_by_identity(&mut self, identity: &str) -> Option<Session<'_>> {
        self.engine.session_by_identity(identity)
    }

    /// The connection of `identity`'s live session; see [`Engine::session_of`].
    pub fn session_of(&self, identity: &str) -> Option<ConnId> {
        self.engine.session_of(identity)
    }

    /// The identities with a live session, and their connections.
    pub fn sessions(&self) -> impl Iterator<Item = (&Text, ConnId)> + '_ {
        self.engine.sessions()
    }

    /// Hands back what `identity`'s latest session record still has to send; see
    /// [`Engine::hand_back`].
    pub fn hand_back(&mut self, identity: &str) -> usize {
        self.engine.hand_back(identity)
    }

    /// Queues a message of an in-process bus for this loop's handler; see
    /// [`Engine::post_bus`].
    pub fn post_bus(&mut self, channel: Bytes, payload: Bytes) {
        self.engine.post_bus(channel, payload)
    }

    /// Moves up to `n` live sessions elsewhere (GOAWAY); see [`Engine::move_sessions`].
    pub fn move_sessions(&mut self, n: usize) -> usize {
        self.engine.move_sessions(n, self.now)
    }

    /// Confirms a received message so that its ACK goes out; see [`Engine::ack_message`].
    pub fn ack_message(&mut self, identity: &str, instance: u64, id: u64) -> Result<(), SendError> {
        self.engine.ack_message(identity, instance, id)
    }

    /// Sends a reliable message to `identity`'s live session; see [`Engine::send_to`].
    pub fn send_to(&mut self, identity: &str, payload: Bytes) -> Result<u64, SendError> {
        self.engine.send_to(identity, payload)
    }

    /// Sends a reliable message on a session; see [`Engine::send_message`].
    pub fn send_message(&mut self, conn: ConnId, payload: Bytes) -> Result<u64, SendError> {
        self.engine.send_message(conn, payload)
    }

    /// Sends DATA on a session; see [`Engine::send_data`].
    pub fn send_data(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        self.engine.send_data(conn, payload)
    }

    /// Raw mode: sends bytes as they are; see [`Engine::send_raw`].
    pub fn send_raw(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        self.engine.send_raw(conn, bytes)
    }

    /// How a connection's TLS handshake went; see [`Engine::tls_handshake_kind`].
    pub fn tls_handshake_kind(&self, conn: ConnId) -> Option<rustls::HandshakeKind> {
        self.engine.tls_handshake_kind(conn)
    }

    /// Ends a session; see [`Engine::close`].
    pub fn close(&mut self, conn: ConnId, reason: Reason) {
        self.engine.close(conn, reason, self.now);
    }

    /// Accepts a login that waits for a verdict; see [`Engine::accept_login`].
    pub fn accept_login(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.engine.accept_login(conn, self.now)
    }

    /// Refuses a login that waits for a verdict; see [`Engine::reject_login`].
    pub fn reject_login(&mut self, conn: ConnId, reason: Reason) -> Result<(), SendError> {
        self.engine.reject_login(conn, reason, self.now)
    }

    // -------------------------------------------------------------- client side

    /// Starts a client; see [`Engine::add_client`].
    pub fn add_client(&mut self, cfg: ClientConfig) -> Result<ClientId, ConfigError> {
        self.engine.add_client(cfg, self.now)
    }

    /// A client that is not closed, for commands; see [`Engine::client`].
    pub fn client(&mut self, id: ClientId) -> Option<Client<'_>> {
        self.engine.client(id)
    }

    /// A client's status; see [`Engine::client_info`].
    pub fn client_info(&self, id: ClientId) -> Option<ClientInfo> {
        self.engine.client_info(id)
    }

    /// Sends a reliable message from a client; see [`Engine::client_send_message`].
    pub fn client_send_message(&mut self, id: ClientId, payload: Bytes) -> Result<u64, SendError> {
        self.engine.client_send_message(id, payload)
    }

    /// Sends DATA from a client; see [`Engine::client_send_data`].
    pub fn client_send_data(&mut self, id: ClientId, payload: &[u8]) -> Result<(), SendError> {
        self.engine.client_send_data(id, payload)
    }

    /// Stops a client for good; see [`Engine::close_client`].
    pub fn close_client(&mut self, id: ClientId) {
        self.engine.close_client(id, self.now);
    }

    /// Closes a client once everything it sent is acknowledged; see
    /// [`Engine::close_client_when_acked`].
    pub fn close_client_when_acked(
        &mut self,
        id: ClientId,
        within: Duration,
    ) -> Result<(), SendError> {
        self.engine.close_client_when_acked(id, within, self.now)
    }

    /// Reconnects a backing-off client now; see [`Engine::retry_now`].
    pub fn retry_now(&mut self, id: ClientId) -> Result<bool, SendError> {
        self.engine.retry_now(id, self.now)
    }

    // -------------------------------------------------------------- links

    /// Starts a link of the application's own protocol; see [`Engine::add_link`].
    pub fn add_link(
        &mut self,
        cfg: LinkConfig,
        protocol: Box<dyn Protocol>,
    ) -> Result<LinkId, ConfigError> {
        self.engine.add_link(cfg, protocol, self.now)
    }

    /// Runs `f` on the protocol of `link`, then sends what it queued; see
    /// [`Engine::with_link`].
    pub fn link<P: Protocol, R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut P) -> R,
    ) -> Result<R, SendError> {
        self.engine.with_link(link, f)
    }

    /// Where `link` stands; `None` once it is closed.
    pub fn link_state(&self, link: LinkId) -> Option<LinkState> {
        self.engine.link_state(link)
    }

    /// Stops `link` for good; see [`Engine::close_link`].
    pub fn close_link(&mut self, link: LinkId) {
        self.engine.close_link(link, self.now)
    }

    // -------------------------------------------------------------- both

    /// Sets an application timer; see [`Engine::set_timer`].
    pub fn set_timer(&mut self, after: Duration, every: Option<Duration>, token: u64) -> TimerId {
        self.engine.set_timer(after, every, token)
    }

    /// Cancels an application timer; see [`Engine::cancel_timer`].
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.engine.cancel_timer(id)
    }

    /// Connections of all kinds.
    pub fn connections(&self) -> usize {
        self.engine.connections()
    }

    /// Graceful shutdown of the whole engine; the driver stops once it is done. See
    /// [`Engine::shutdown`].
    pub fn shutdown(&mut self) {
        self.engine.shutdown(self.now);
    }
}

/// An active server session, borrowed from its engine ([`Engine::session`],
/// [`Engine::session_by_identity`]).
pub struct Session<'a> {
    pub(super) engine: &'a mut Engine,
    pub(super) conn: ConnId,
    pub(super) record: u32,
}

impl Session<'_> {
    /// Its connection.
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// The client's identity.
    pub fn identity(&self) -> &Text {
        &self.engine.store.get(self.record).identity
    }

    /// The client's HELLO instance.
    pub fn instance(&self) -> u64 {
        self.engine.store.get(self.record).instance
    }

    /// Reliable messages sent to it and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.engine.store.get(self.record).send.len()
    }

    /// Sends a reliable message; see [`Engine::send_message`].
    pub fn send_message(&mut self, payload: Bytes) -> Result<u64, SendError> {
        self.engine.send_message(self.conn, payload)
    }

    /// Sends DATA (not acknowledged, not resent); see [`Engine::send_data`].
    pub fn send_data(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.engine.send_data(self.conn, payload)
    }

    /// Ends the session: GOAWAY with `reason` for `NO_ERROR`, `REPLACED` and
    /// `SHUTTING_DOWN`, ERROR otherwise; see [`Engine::close`].
    pub fn close(self, reason: Reason) {
        let now = self.engine.now;
        self.engine.close(self.conn, reason, now);
    }
}

/// A client that is not closed, borrowed from its engine ([`Engine::client`]).
pub struct Client<'a> {
    pub(super) engine: &'a mut Engine,
    pub(super) id: ClientId,
}

impl Client<'_> {
    /// Its id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// A status snapshot; see [`Engine::client_info`].
    pub fn info(&self) -> ClientInfo {
        self.engine
            .client_info(self.id)
            .expect("a handle exists only for a client that is not closed")
    }

    /// Sends a reliable message now or as soon as a session is up; see
    /// [`Engine::client_send_message`].
    pub fn send_message(&mut self, payload: Bytes) -> Result<u64, SendError> {
        self.engine.client_send_message(self.id, payload)
    }

    /// Sends DATA if a session is up; see [`Engine::client_send_data`].
    pub fn send_data(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.engine.client_send_data(self.id, payload)
    }

    /// Reconnects now if waiting to; see [`Engine::retry_now`].
    pub fn retry_now(&mut self) -> bool {
        let now = self.engine.now;
        self.engine.retry_now(self.id, now).unwrap_or(false)
    }

    /// Stops it for good; see [`Engine::close_client`].
    pub fn close(self) {
        let now = self.engine.now;
        self.engine.close_client(self.id, now);
    }
}

impl Engine {
    /// The active server session on `conn`, for commands; `None` if there is none (not a
    /// server session, not logged in yet, closing, or gone).
    pub fn session(&mut self, conn: ConnId) -> Option<Session<'_>> {
        let record = self.active_record(conn)?;
        Some(Session {
            engine: self,
            conn,
            record,
        })
    }

    /// The active session of `identity`, for commands.
    pub fn session_by_identity(&mut self, identity: &str) -> Option<Session<'_>> {
        let conn = self.session_of(identity)?;
        self.session(conn)
    }

    /// The client `id`, for commands; `None` once it is closed.
    pub fn client(&mut self, id: ClientId) -> Option<Client<'_>> {
        self.client_index(id)?;
        Some(Client { engine: self, id })
    }
}
