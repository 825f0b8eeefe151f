//! Typed handles for application commands: [`Session`] for a server session, [`Client`]
//! for a client, each borrowed from the engine for as long as the commands take
//! (`engine.session(conn)?.send_message(..)`, `engine.client(id)?.info()`), with the one
//! [`SendError`] vocabulary. A handle exists only for what is there: a session that is
//! active, a client that is not closed.

use super::event::{ClientInfo, SendError};
use super::handle::{ClientId, ConnId};
use super::Engine;
use crate::frame::{Reason, Text};
use bytes::Bytes;

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
