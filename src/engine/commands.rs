//! The application's commands: checked here, then routed to the connection, the session
//! store or the client supervisor. Nothing in the engine calls back up into this file.

use super::client::ClientRecord;
use super::closing::Lost;
use super::conn::{Conn, ConnState, Role};
use super::event::{
    ClientConfig, ClientInfo, ClientState, ClientTls, FailCause, HelloHook, SendError,
};
use super::handle::{ClientId, ConnId, TimerId};
use super::outbound::NotQueued;
use super::Engine;
use crate::config::{Config, ConfigError};
use crate::frame::{Code, Frame, Hello, Reason, Text};
use crate::reliable::Window;
use crate::time::Tick;
use bytes::Bytes;
use std::time::{Duration, Instant};

impl Engine {
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Installs the application's check of every HELLO (authentication, identity rules); a
    /// refusal is sent as REJECT with its reason.
    pub fn set_hello_hook(&mut self, hook: HelloHook) {
        self.logins.set_hook(hook);
    }

    /// Server side: with `true`, every valid HELLO (after the hook, if any) is handed to the
    /// application as [`ServerEvent::Login`](super::ServerEvent::Login) and waits for
    /// [`accept_login`](Self::accept_login) or [`reject_login`](Self::reject_login), so that
    /// credentials can be checked asynchronously. Default `false`: logins are accepted.
    pub fn decide_logins(&mut self, on: bool) {
        self.logins.decide(on);
    }

    /// Server side: accepts the login of `conn` (see [`ServerEvent::Login`](super::ServerEvent::Login)): WELCOME goes out and
    /// [`ServerEvent::Opened`](super::ServerEvent::Opened) follows (or REJECT, if in the meantime a newer session of
    /// the same client instance went live). [`SendError::Gone`] if the connection is gone
    /// (it hung up, or the handshake deadline passed); [`SendError::NotActive`] if it is not
    /// waiting for a verdict.
    pub fn accept_login(&mut self, conn: ConnId, now: Instant) -> Result<(), SendError> {
        self.set_now(now);
        let hello = self.take_verdict(conn)?;
        self.log_in(conn.index as usize, *hello);
        Ok(())
    }

    /// Server side: refuses the login of `conn` with REJECT `reason` (say
    /// [`Code::AUTH_FAILED`]); errors as for [`accept_login`](Self::accept_login).
    pub fn reject_login(
        &mut self,
        conn: ConnId,
        reason: Reason,
        now: Instant,
    ) -> Result<(), SendError> {
        self.set_now(now);
        self.take_verdict(conn)?;
        self.reject(conn.index as usize, reason);
        Ok(())
    }

    /// Server side: hands back, as [`ServerEvent::Failed`](super::ServerEvent::Failed) with
    /// [`FailCause::Replaced`], what `identity`'s latest session record still has to send
    /// (acknowledged or not by a device that is gone), and returns how many. For an
    /// application that learned that the identity logged in elsewhere (another loop or
    /// node) and closed its session here: the messages can follow it there.
    pub fn hand_back(&mut self, identity: &str) -> usize {
        self.store
            .hand_back_identity(identity, FailCause::Replaced, &mut self.events)
    }

    /// Queues [`Event::Bus`](super::Event::Bus) for the application: how an in-process bus
    /// ([`crate::bus::LocalBus`]) hands a message to this loop.
    pub fn post_bus(&mut self, channel: Bytes, payload: Bytes) {
        self.events
            .push_back(super::Event::Bus { channel, payload });
    }

    /// Server side: with `true`, a MESSAGE from a client is acknowledged only once the
    /// application confirms it with [`ack_message`](Self::ack_message), so that it can be
    /// stored durably first (an acknowledged message must survive this process). Until
    /// then the client keeps it and resends it on its next session; a resend is not handed
    /// over again. Default `false`: messages are acknowledged as they are handed over.
    pub fn confirm_messages(&mut self, on: bool) {
        self.confirm = on;
    }

    /// Server side, with [`confirm_messages`](Self::confirm_messages) on: confirms message
    /// `id` of `identity`'s `instance` (as [`ServerEvent::Message`](super::ServerEvent::Message)
    /// named them); its ACK goes out on the instance's live session, if it has one (if not,
    /// the client's resend is acknowledged at once). [`SendError::Gone`] if the record of
    /// that instance is forgotten; [`SendError::NotActive`] if the message was not waiting
    /// for a confirmation (confirmed already, or confirmations are off).
    pub fn ack_message(&mut self, identity: &str, instance: u64, id: u64) -> Result<(), SendError> {
        let r = self.store.find(identity, instance).ok_or(SendError::Gone)?;
        if !self.store.confirm(r, id) {
            return Err(SendError::NotActive);
        }
        if let Some(conn) = self.store.get(r).conn {
            if self
                .conn(conn)
                .is_some_and(|c| c.state == ConnState::Active)
            {
                self.queue_frame(conn.index as usize, &Frame::Ack(id));
            }
        }
        Ok(())
    }

    pub(super) fn take_verdict(&mut self, conn: ConnId) -> Result<Box<Hello>, SendError> {
        let c = self.conn(conn).ok_or(SendError::Gone)?;
        if c.state != ConnState::AwaitVerdict {
            return Err(SendError::NotActive);
        }
        self.logins.take(conn).ok_or(SendError::Gone)
    }

    /// Server side: session records kept (live sessions plus recently left ones).
    pub fn session_records(&self) -> usize {
        self.store.len()
    }

    /// Number of live connections (both roles).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Number of clients not yet closed.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Tells the engine the time without running timers, so that what commands report
    /// (such as [`client_info`](Self::client_info)) is current. Drivers call it when they
    /// wake, before running application commands; `handle_*` calls do it too.
    pub fn advance_clock(&mut self, now: Instant) {
        self.set_now(now);
    }

    /// Whether [`shutdown`](Self::shutdown) was called: drivers stop once no connection is
    /// left.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The connection, unless it is gone or being dropped (a doomed connection is gone to
    /// the application already).
    pub(super) fn sendable(&self, conn: ConnId) -> Result<&Conn, SendError> {
        self.conn(conn)
            .filter(|c| c.state != ConnState::Doomed)
            .ok_or(SendError::Gone)
    }

    /// The record of the active server session on `conn`.
    pub(super) fn active_record(&self, conn: ConnId) -> Option<u32> {
        match self.conn(conn)? {
            c if c.state != ConnState::Active => None,
            c => match c.role {
                Role::Server { record } => record,
                _ => None,
            },
        }
    }

    /// Server side: the live session of `identity`, if it has one on this engine.
    pub fn session_of(&self, identity: &str) -> Option<ConnId> {
        self.store.session_of(identity).filter(|&conn| {
            self.conn(conn)
                .is_some_and(|c| c.state == ConnState::Active)
        })
    }

    /// Server side: the identities with a live session on this engine, and their
    /// connections, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = (&Text, ConnId)> + '_ {
        self.store.live().filter(|&(_, conn)| {
            self.conn(conn)
                .is_some_and(|c| c.state == ConnState::Active)
        })
    }

    /// Server side: sends a reliable message to the live session of `identity`, as
    /// [`send_message`](Self::send_message) does; [`SendError::Gone`] if it has none.
    pub fn send_to(&mut self, identity: &str, payload: Bytes) -> Result<u64, SendError> {
        let conn = self.session_of(identity).ok_or(SendError::Gone)?;
        self.send_message(conn, payload)
    }

    /// Server side: sends DATA on an active session.
    pub fn send_data(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        let c = self.sendable(conn)?;
        if c.state != ConnState::Active {
            return Err(SendError::NotActive);
        }
        self.queue_data(conn.index as usize, payload)
    }

    /// Raw mode: queues bytes for `conn` as they are.
    pub fn send_raw(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        let c = self.sendable(conn)?;
        if c.role != Role::Raw {
            return Err(SendError::NotActive);
        }
        self.queue(conn.index as usize, |_, out| {
            out.extend_from_slice(bytes);
            Ok(())
        })
        .map_err(NotQueued::into_send_error)
    }

    /// Server side: sends a reliable message to the session's client and returns its id. It
    /// is kept by the session record until the client acknowledges it
    /// ([`ServerEvent::Acked`](super::ServerEvent::Acked)), resent if the same client instance reconnects to this
    /// engine, and handed back in [`ServerEvent::Failed`](super::ServerEvent::Failed) if it can no longer be delivered.
    /// It waits in the record, not in the send buffer, while the connection has more than
    /// `outbound_low_water` bytes to write, so a backlog never trips the outbound cap.
    pub fn send_message(&mut self, conn: ConnId, payload: Bytes) -> Result<u64, SendError> {
        let c = self.sendable(conn)?;
        let (ConnState::Active, Role::Server { record: Some(r) }) = (c.state, c.role) else {
            return Err(SendError::NotActive);
        };
        Self::fits(self.cfg.max_frame_len, payload.len(), true)?;
        let window = self.window();
        let id = self
            .store
            .get_mut(r)
            .send
            .push(payload, window)
            .map_err(|_| SendError::WindowFull)?;
        let index = conn.index as usize;
        self.conns[index].unframed = true;
        self.pump(index);
        self.check_water(index);
        Ok(id)
    }

    /// Closes `conn` with an ERROR frame carrying `reason` (or, for [`Code::REPLACED`] and
    /// [`Code::SHUTTING_DOWN`], a GOAWAY).
    pub fn close(&mut self, conn: ConnId, reason: Reason, now: Instant) {
        self.set_now(now);
        if self.live(conn) {
            let index = conn.index as usize;
            match reason.code {
                Code::REPLACED | Code::SHUTTING_DOWN | Code::NO_ERROR => {
                    self.go_away(index, reason)
                }
                _ => self.fail_with_error(index, reason),
            }
        }
    }

    /// Server side: moves up to `n` live sessions elsewhere, with GOAWAY `SHUTTING_DOWN`
    /// ("rebalancing"): their clients reconnect at once, to the next server on their list,
    /// or to the same address, where the kernel may hand them to another process sharing
    /// the port. Call it from a timer for a bounded rate (say 100 every 100 ms after a node
    /// joined). Sessions are taken in turn across calls; returns how many were moved.
    pub fn move_sessions(&mut self, n: usize, now: Instant) -> usize {
        self.set_now(now);
        let slots = self.conns.capacity();
        let mut moved = 0;
        let mut looked = 0;
        while moved < n && looked < slots && !self.conns.is_empty() {
            let index = self.move_cursor % slots.max(1);
            self.move_cursor = self.move_cursor.wrapping_add(1);
            looked += 1;
            let live_session = self.conns.get(index).is_some_and(|c| {
                c.state == ConnState::Active && matches!(c.role, Role::Server { .. })
            });
            if live_session {
                let reason = Reason::new(Code::SHUTTING_DOWN, "rebalancing");
                self.go_away(index, reason);
                moved += 1;
            }
        }
        moved
    }

    /// Graceful shutdown: refuses new connections, sends GOAWAY to every server-side
    /// session and closes each once flushed (or after the linger time), and stops every
    /// client. Unacknowledged messages are reported failed: [`ClientEvent::Failed`](super::ClientEvent::Failed) for clients',
    /// [`ServerEvent::Failed`](super::ServerEvent::Failed) for the server's. A driver stops once no connection is left
    /// ([`is_shutting_down`](Self::is_shutting_down)).
    pub fn shutdown(&mut self, now: Instant) {
        self.set_now(now);
        self.shutting_down = true;
        let clients: Vec<usize> = self.clients.iter().map(|(i, _)| i).collect();
        for ci in clients {
            self.stop_client(ci, Reason::new(Code::SHUTTING_DOWN, "engine shutting down"));
        }
        self.stop_links(&Reason::new(Code::SHUTTING_DOWN, "engine shutting down"));
        let servers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Server { .. }))
            .map(|(i, _)| i)
            .collect();
        for index in servers {
            let reason = Reason::new(Code::SHUTTING_DOWN, "server shutting down");
            if self.conns[index].state == ConnState::Active {
                self.go_away(index, reason);
            } else {
                self.finish(index, reason, Lost::Failed);
            }
        }
        // No session of this engine will carry what its records still hold.
        self.store
            .hand_back_all(FailCause::ShuttingDown, &mut self.events);
    }

    /// Starts a client: it connects to the first server and keeps itself connected until
    /// [`close_client`](Self::close_client), a final refusal by a server, or
    /// [`shutdown`](Self::shutdown). Fails, and starts nothing, if its HELLO could never be
    /// sent: an empty identity or one over 255 bytes, no server, or a HELLO larger than the
    /// frame limit.
    pub fn add_client(&mut self, cfg: ClientConfig, now: Instant) -> Result<ClientId, ConfigError> {
        self.start_client(cfg, None, now)
    }

    /// Starts a client whose connections carry TLS under the protocol: as
    /// [`add_client`](Self::add_client), with every server's certificate checked against
    /// `tls` (a failed check is a connect failure, with its reason, and the client moves on
    /// along its server list).
    pub fn add_client_tls(
        &mut self,
        cfg: ClientConfig,
        tls: ClientTls,
        now: Instant,
    ) -> Result<ClientId, ConfigError> {
        self.start_client(cfg, Some(tls), now)
    }

    fn start_client(
        &mut self,
        cfg: ClientConfig,
        tls: Option<ClientTls>,
        now: Instant,
    ) -> Result<ClientId, ConfigError> {
        self.set_now(now);
        ClientRecord::check(&cfg, self.cfg.max_frame_len)?;
        let instance = cfg.instance.unwrap_or_else(|| self.ids.next_u64());
        let gen = self.next_gen();
        let servers = self.server_lists.share(&cfg.servers);
        crate::growth::room_in_slab(&mut self.clients);
        let client = ClientRecord::new(&cfg, gen, instance, servers, self.cfg.max_frame_len);
        let index = self.clients.insert(client);
        let id = self.client_id(index);
        if let Some(tls) = tls {
            self.client_tls.insert(index as u32, tls);
        }
        self.start_connect(index);
        Ok(id)
    }

    /// Client side: sends DATA if the client is active (DATA is never queued).
    pub fn client_send_data(&mut self, client: ClientId, payload: &[u8]) -> Result<(), SendError> {
        let ci = self.client_index(client).ok_or(SendError::Gone)?;
        let k = &self.clients[ci];
        Self::fits(k.max_frame_len, payload.len(), false)?;
        match (k.state, k.conn) {
            (ClientState::Active, Some(conn)) => self.queue_data(conn.index as usize, payload),
            _ => Err(SendError::NotActive),
        }
    }

    /// Client side: sends a reliable message now, or as soon as a session is active. It is
    /// resent on every new session until acknowledged ([`ClientEvent::Acked`](super::ClientEvent::Acked)) or the client
    /// stops ([`ClientEvent::Failed`](super::ClientEvent::Failed)).
    pub fn client_send_message(
        &mut self,
        client: ClientId,
        payload: Bytes,
    ) -> Result<u64, SendError> {
        let ci = self.client_index(client).ok_or(SendError::Gone)?;
        let window = self.window();
        if self.draining.contains(ci, client.gen) {
            return Err(SendError::Closing);
        }
        let k = &mut self.clients[ci];
        Self::fits(k.max_frame_len, payload.len(), true)?;
        let id = k
            .send
            .push(payload, window)
            .map_err(|_| SendError::WindowFull)?;
        if let (ClientState::Active, Some(conn)) = (k.state, k.conn) {
            let index = conn.index as usize;
            self.conns[index].unframed = true;
            self.pump(index);
            self.check_water(index);
        }
        Ok(id)
    }

    /// Client side: stops the client for good; unacknowledged messages are reported as
    /// [`ClientEvent::Failed`](super::ClientEvent::Failed), then [`ClientState::Closed`], and the id is no longer valid (its
    /// memory is freed).
    pub fn close_client(&mut self, client: ClientId, now: Instant) {
        self.set_now(now);
        if let Some(ci) = self.client_index(client) {
            self.stop_client(ci, Reason::new(Code::NO_ERROR, "client closed"));
        }
    }

    /// Client side: closes the client once everything it sent is acknowledged, or after
    /// `within` at the latest (what is still unacknowledged then is reported as
    /// [`ClientEvent::Failed`](super::ClientEvent::Failed)). Meanwhile it stays connected (and reconnects if need be) to
    /// deliver, and refuses new messages with [`SendError::Closing`]. With nothing
    /// unacknowledged it closes at once. `Err(SendError::Gone)` if it is closed already.
    pub fn close_client_when_acked(
        &mut self,
        client: ClientId,
        within: Duration,
        now: Instant,
    ) -> Result<(), SendError> {
        self.set_now(now);
        let ci = self.client_index(client).ok_or(SendError::Gone)?;
        let at = self.after(within);
        self.draining.insert(ci, client.gen, at);
        self.close_drained();
        Ok(())
    }

    /// Closes the draining clients that have nothing left unacknowledged or whose time is
    /// up.
    pub(super) fn close_drained(&mut self) {
        for ci in self.draining.due(&self.clients, self.tick) {
            self.stop_client(ci, Reason::new(Code::NO_ERROR, "client closed"));
        }
    }

    /// Client side: in [`ClientState::Backoff`], makes the next attempt now instead of at the
    /// end of the delay. `Ok(false)` if the client is not backing off (it is connecting or
    /// connected already); `Err(SendError::Gone)` if it is closed.
    pub fn retry_now(&mut self, client: ClientId, now: Instant) -> Result<bool, SendError> {
        self.set_now(now);
        let ci = self.client_index(client).ok_or(SendError::Gone)?;
        let k = &mut self.clients[ci];
        if k.state != ClientState::Backoff {
            return Ok(false);
        }
        if let Some(t) = k.timer.take() {
            self.wheel.cancel(t);
        }
        self.start_connect(ci);
        Ok(true)
    }

    /// Client side: a status snapshot as of the engine's clock (the last `handle_*` or
    /// [`advance_clock`](Self::advance_clock) call); `None` once the client is closed.
    pub fn client_info(&self, client: ClientId) -> Option<ClientInfo> {
        let k = &self.clients[self.client_index(client)?];
        let conn = k.conn.and_then(|id| self.conn(id));
        let ago = |t: Tick| self.clock.duration_of(self.tick.since(t).max(0) as u32);
        Some(ClientInfo {
            state: k.state,
            server: k.server(),
            uptime: k.active_since.map(ago),
            rtt_last: k.rtt().0,
            rtt_mean: k.rtt().1,
            since_read: conn.map(|c| ago(c.idle.last_read())),
            since_write: conn.map(|c| ago(c.idle.last_write())),
            reconnects: k.sessions.saturating_sub(1),
            unacked: k.send.len(),
        })
    }

    pub(super) fn window(&self) -> Window {
        Window {
            messages: self.cfg.max_unacked,
            bytes: self.cfg.max_unacked_bytes,
        }
    }

    /// Whether a DATA (`id: false`) or MESSAGE (`id: true`) frame with this payload fits
    /// in frames of at most `limit`.
    pub(super) fn fits(limit: u32, payload: usize, id: bool) -> Result<(), SendError> {
        if crate::frame::payload_fits(limit, payload, id) {
            Ok(())
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// Sets an application timer: [`Event::Timer`](super::Event::Timer) with `token` after `after` (rounded up
    /// to the engine's tick), and then every `every` if given, until cancelled. It runs on
    /// the same wheel as the heartbeats, so it costs no thread and no system call.
    pub fn set_timer(&mut self, after: Duration, every: Option<Duration>, token: u64) -> TimerId {
        let gen = self.next_gen();
        let at = self.after(after);
        // A period under one tick would fire every tick: at least one.
        let every = every.map(|d| d.max(self.cfg.tick));
        self.timers.set(&mut self.wheel, gen, at, every, token)
    }

    /// Cancels an application timer; `false` if it is gone already (fired once, or
    /// cancelled).
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(&mut self.wheel, id)
    }
}
