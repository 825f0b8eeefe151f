//! The sans-IO engine: every connection of one loop, server side and client side, with
//! their sessions, timers and buffers. No sockets and no clock calls in here.
//!
//! # Call-order contract
//!
//! A driver (the mio reactor, or the simulator of the `sim` feature) owns the sockets and
//! the clock:
//!
//! 1. Feed inputs as they happen, each with the current time: [`Engine::handle_accept`],
//!    [`Engine::handle_connected`], [`Engine::handle_connect_failed`],
//!    [`Engine::handle_read`], [`Engine::handle_sent`], [`Engine::handle_closed`], and
//!    [`Engine::handle_timeout`] when the time from [`Engine::poll_timeout`] has come.
//!    Application commands (`send_*`, `add_client`, `close*`, `shutdown`) may come in between.
//! 2. Then drain the outputs until each returns `None`: [`Engine::poll_io`] (open or close
//!    sockets), [`Engine::poll_transmit`] (connections with bytes to write: write
//!    [`Engine::outbound`] and report with [`Engine::handle_sent`]), [`Engine::poll_event`]
//!    (application events).
//! 3. Sleep until the next input or [`Engine::poll_timeout`].
//!
//! Ids carry a generation: an input naming a connection or client that is gone is ignored.
//! No input or command frees the connection it works on: one that passes the outbound cap
//! is dropped at the start of the next `poll_*` call. Applications see [`App`], the
//! commands without the driver's calls, in their handlers.
//!
//! # Sessions
//!
//! Server side:
//!
//! ```text
//!  accept ──> AwaitHello ──valid HELLO / WELCOME──> Active ──GOAWAY or ERROR queued──> Closing
//!                 │  │ └─(decide_logins)─> AwaitVerdict ─accept─┘                          │
//!                 │  └─(deadline, bad frame: ERROR; refused or rejected: REJECT)──────┘   │
//!                 │                                                  (flushed or linger)     v
//!                 └────────────────────(peer closed)──────────────────────────────────> Closed
//!  any state ──past the outbound cap──> Doomed ──(next poll)──> Closed
//! ```
//!
//! Client side (the client record outlives its connections):
//!
//! ```text
//!          add_client
//!              │
//!              v         connected, HELLO sent          WELCOME
//!   ┌──> Connecting ───────────────────────> Handshaking ───────> Active
//!   │          │ connect failed/timeout          │ REJECT, ERROR,     │ read idle twice, GOAWAY,
//!   │          v                                 │ deadline           │ ERROR, peer closed
//!   └────── Backoff <────────────────────────────┴────────────────────┘
//!     (jittered delay; next server not cooling down; GOAWAY: no delay)
//!   any state ──close_client, GOAWAY REPLACED, fatal REJECT──> Closed
//! ```

use crate::codec::{DecodeError, Decoder, EncodeError, Encoder};
use crate::config::{Config, ConfigError};
use crate::frame::{Code, Frame, Hello, Reason, Text, Welcome, PROTOCOL_VERSION};
use crate::idle::{IdleConfig, IdleKind, IdleTracker};
use crate::reliable::Window;
mod api;
mod client;
mod conn;
mod event;
mod handle;
mod login;
mod store;
mod timers;

pub use api::{App, Client, Session};
pub use event::{
    ClientConfig, ClientEvent, ClientInfo, ClientState, Event, FailCause, HelloHook, Retry,
    SendError, ServerEvent,
};
pub use handle::{ClientId, ConnId, Io, TimerId};

use crate::rng::Rng;
use crate::time::{Clock, Tick};
use crate::wheel::{TimerKey, Wheel};
use bytes::{Buf, Bytes, BytesMut};
use client::{ClientRecord, Drains, ServerLists};
use conn::{Conn, ConnState, Pool, Role, RX_CHUNK};
use log::{debug, warn};
use login::{Check, Logins};
use slab::Slab;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use store::{Admit, SessionStore};
use timers::{AppTimers, APP_TIMER};

/// Wheel values with this bit name a client record's backoff timer, not a connection.
const CLIENT_TIMER: u32 = 1 << 31;
/// Expirations handled per `handle_timeout` call, so one call stays short.
const MAX_FIRED: usize = 4096;

/// The engine. See the [module docs](self) for the call-order contract.
pub struct Engine {
    cfg: Config,
    clock: Clock,
    now: Instant,
    tick: Tick,
    /// `now` in nanoseconds since the clock's origin: read once per new instant, it gives
    /// the tick, PING stamps and poll timeouts without touching `Instant` again.
    now_ns: u64,
    encoder: Encoder,
    wheel: Wheel,
    server_idle: IdleConfig,
    client_idle: IdleConfig,
    conns: Slab<Conn>,
    clients: Slab<ClientRecord>,
    /// The server side's session records.
    store: SessionStore,
    /// Application timers.
    timers: AppTimers,
    /// Connections past the outbound cap, dropped by `settle` (see `ConnState::Doomed`).
    doomed: Vec<ConnId>,
    /// Clients closing once everything they sent is acknowledged, by index: (generation,
    /// the tick by which they close regardless).
    draining: Drains,
    next_gen: NonZeroU32,
    /// Reconnect jitter.
    rng: Rng,
    /// Session ids and client instances: unique across processes, so never from a seed a
    /// caller may repeat (see [`Engine::with_seed`]).
    ids: Rng,
    /// How HELLOs are decided (checks, hook, verdicts of the application).
    logins: Logins,
    shutting_down: bool,
    io: VecDeque<Io>,
    transmit: VecDeque<ConnId>,
    events: VecDeque<Event>,
    fired: Vec<(TimerKey, u32)>,
    /// Memory for received payloads (and raw chunks), shared by all connections: each is
    /// copied in and split off, so it is empty between calls.
    rx: BytesMut,
    /// Decodes frames straight from the bytes a read brought (`Decoder::decode_slice`);
    /// between calls it waits for a length prefix.
    rx_decoder: Decoder,
    pool: Pool,
    server_lists: ServerLists,
}

impl Engine {
    /// An engine whose clock starts at `now`. Its session ids, client instances and
    /// reconnect jitter come from the operating system's entropy source, so that engines in
    /// different processes never hand out the same ids. Fails if `cfg` cannot work
    /// ([`Config::validate`]).
    pub fn new(cfg: Config, now: Instant) -> Result<Engine, ConfigError> {
        Engine::build(cfg, now, Rng::from_entropy(), Rng::from_entropy())
    }

    /// A deterministic engine, for simulations and tests: jitter, session ids and client
    /// instances all follow from `seed`. Two engines given the same seed hand out the same
    /// session ids, and a client failing over between them would take the second one's
    /// messages for duplicates: never use one seed for two engines that clients share.
    pub fn with_seed(cfg: Config, now: Instant, seed: u64) -> Result<Engine, ConfigError> {
        let mut ids = Rng::new(seed);
        // A stream apart from the jitter's, so that a draw of one does not shift the other.
        let ids = Rng::new(ids.next_u64() ^ 0x1d5_1d5_1d5);
        Engine::build(cfg, now, Rng::new(seed), ids)
    }

    fn build(cfg: Config, now: Instant, rng: Rng, ids: Rng) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let clock = Clock::new(now, cfg.tick);
        // Read idle: the client is gone. Write idle with bytes waiting: it no longer reads
        // (a write counts when bytes leave, or when they are queued into an empty buffer).
        let idle = Some(cfg.idle_timeout);
        let server_idle = IdleConfig::from_durations(&clock, idle, idle, None);
        let ping = Some(cfg.ping_interval);
        let client_idle = IdleConfig::from_durations(&clock, ping, ping, None);
        Ok(Engine {
            encoder: Encoder::new(cfg.max_frame_len),
            tick: clock.tick_of(now),
            now_ns: 0,
            wheel: Wheel::with_slots_at(crate::wheel::DEFAULT_SLOTS, clock.tick_of(now)),
            clock,
            now,
            server_idle,
            client_idle,
            conns: Slab::new(),
            clients: Slab::new(),
            timers: AppTimers::default(),
            doomed: Vec::new(),
            draining: Drains::default(),
            store: SessionStore::new(clock.ticks_for(cfg.record_linger), cfg.max_connections),
            next_gen: NonZeroU32::MIN,
            rng,
            ids,
            logins: Logins::default(),
            shutting_down: false,
            io: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            fired: Vec::new(),
            rx: BytesMut::new(),
            rx_decoder: Decoder::new(cfg.max_frame_len),
            pool: Pool::new(MAX_FIRED),
            server_lists: ServerLists::default(),
            cfg,
        })
    }

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
    /// application as [`ServerEvent::Login`] and waits for
    /// [`accept_login`](Self::accept_login) or [`reject_login`](Self::reject_login), so that
    /// credentials can be checked asynchronously. Default `false`: logins are accepted.
    pub fn decide_logins(&mut self, on: bool) {
        self.logins.decide(on);
    }

    /// Server side: accepts the login of `conn` (see [`ServerEvent::Login`]): WELCOME goes out and
    /// [`ServerEvent::Opened`] follows (or REJECT, if in the meantime a newer session of
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

    fn take_verdict(&mut self, conn: ConnId) -> Result<Box<Hello>, SendError> {
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

    fn set_now(&mut self, now: Instant) {
        // Time never runs backwards inside the engine, whatever the driver passes.
        if now > self.now {
            self.now = now;
            self.now_ns = self.clock.nanos_of(now);
            self.tick = self.clock.tick_at(self.now_ns);
        }
    }

    /// Microseconds since the clock's origin: PING stamps, echoed in PONGs.
    fn now_us(&self) -> u64 {
        self.now_ns / 1_000
    }

    fn next_gen(&mut self) -> NonZeroU32 {
        let g = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(NonZeroU32::MIN);
        g
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)
            .filter(|c| c.gen == id.gen)
    }

    fn live(&self, id: ConnId) -> bool {
        self.conn(id).is_some()
    }

    fn id_of(&self, index: usize) -> ConnId {
        ConnId {
            index: index as u32,
            gen: self.conns[index].gen,
        }
    }

    fn client_id(&self, index: usize) -> ClientId {
        ClientId {
            index: index as u32,
            gen: self.clients[index].gen,
        }
    }

    fn client_index(&self, id: ClientId) -> Option<usize> {
        let i = id.index as usize;
        self.clients.get(i).filter(|c| c.gen == id.gen).map(|_| i)
    }

    fn new_conn(&mut self, state: ConnState, role: Role, deadline: Option<Tick>) -> usize {
        let gen = self.next_gen();
        crate::growth::room_in_slab(&mut self.conns);
        let index = self.conns.insert(Conn {
            gen,
            state,
            role,
            idle: IdleTracker::new(self.tick),
            bufs: None,
            deadline,
            congested: false,
            pending_transmit: false,
            unframed: false,
        });
        self.rearm(index);
        index
    }

    /// (Re)places the connection's one wheel entry for its state: idle periods while
    /// active, plus its deadline.
    fn rearm(&mut self, index: usize) {
        let idle = self.idle_cfg(index);
        let c = &mut self.conns[index];
        c.idle
            .arm(&idle, &mut self.wheel, self.tick, index as u32, c.deadline);
    }

    fn idle_cfg(&self, index: usize) -> IdleConfig {
        let c = &self.conns[index];
        match (c.state, c.role) {
            (ConnState::Active, Role::Server { .. }) => self.server_idle,
            (ConnState::Active, Role::Client { ping_ticks, .. }) => match ping_ticks {
                // The server asked for a shorter interval than ours: its idle timeout is
                // built on it (PROTOCOL.md 3.2).
                Some(t) => IdleConfig::from_ticks(Some(t.get()), Some(t.get()), None),
                None => self.client_idle,
            },
            _ => IdleConfig::DISABLED,
        }
    }

    // ---------------------------------------------------------------- inputs

    /// A listener accepted a socket. Returns its id, or the reason it must be closed at
    /// once (at the connection limit, or shutting down).
    pub fn handle_accept(&mut self, now: Instant) -> Result<ConnId, Reason> {
        self.admit(now)?;
        let deadline = self.after(self.cfg.handshake_timeout);
        let index = self.new_conn(
            ConnState::AwaitHello,
            Role::Server { record: None },
            Some(deadline),
        );
        Ok(self.id_of(index))
    }

    /// Whether an accepted socket may become a connection now.
    fn admit(&mut self, now: Instant) -> Result<(), Reason> {
        self.set_now(now);
        if self.shutting_down {
            return Err(Reason::new(Code::SHUTTING_DOWN, "server shutting down"));
        }
        if self.conns.len() >= self.cfg.max_connections {
            warn!("accept refused: {} connections", self.conns.len());
            return Err(Reason::new(Code::SERVER_FULL, "connection limit reached"));
        }
        Ok(())
    }

    /// A listener in raw mode accepted a socket: its bytes are handed to the application
    /// as [`Event::Raw`] and written with [`send_raw`](Self::send_raw), with no framing,
    /// session or idle tracking (the outbound bounds still apply).
    pub fn handle_accept_raw(&mut self, now: Instant) -> Result<ConnId, Reason> {
        self.admit(now)?;
        let index = self.new_conn(ConnState::Active, Role::Raw, None);
        Ok(self.id_of(index))
    }

    /// The outbound connection `conn` is established: the client sends HELLO.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        self.set_now(now);
        if !self.live(conn) {
            return;
        }
        let index = conn.index as usize;
        let Role::Client { client, .. } = self.conns[index].role else {
            return;
        };
        if self.conns[index].state != ConnState::Connecting {
            return;
        }
        let ci = client as usize;
        let k = &mut self.clients[ci];
        k.state = ClientState::Handshaking;
        let hello = k.hello();
        self.client_event(ci, ClientState::Handshaking, None);
        let deadline = self.after(self.cfg.handshake_timeout);
        let c = &mut self.conns[index];
        c.state = ConnState::AwaitWelcome;
        c.deadline = Some(deadline);
        c.idle.record_read(self.tick);
        self.rearm(index);
        self.queue_frame(index, &Frame::Hello(Box::new(hello)));
    }

    /// The outbound connection `conn` could not be established; `why` says what the
    /// operating system said (it becomes the text of the Backoff event's reason).
    pub fn handle_connect_failed(&mut self, conn: ConnId, why: &str, now: Instant) {
        self.set_now(now);
        if self.live(conn) {
            let reason = Reason {
                code: Code::NO_ERROR,
                text: Text::from(format!("connect failed: {why}")),
            };
            self.finish(conn.index as usize, reason, Lost::Failed);
        }
    }

    /// The peer closed `conn`, or it failed (EOF, reset, I/O error).
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        self.set_now(now);
        if self.live(conn) {
            let reason = Reason::new(Code::NO_ERROR, "connection closed by peer");
            self.finish(conn.index as usize, reason, Lost::Failed);
        }
    }

    /// Bytes read from `conn`'s socket.
    pub fn handle_read(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        self.set_now(now);
        if !self.live(conn) || bytes.is_empty() {
            return;
        }
        let index = conn.index as usize;
        let c = &mut self.conns[index];
        if matches!(c.state, ConnState::Closing | ConnState::Doomed) {
            // A closing connection only flushes; what it still receives is discarded.
            return;
        }
        c.idle.record_read(self.tick);
        if c.role == Role::Raw {
            // Raw bytes are handed over from the shared receive buffer as they are.
            self.fill_rx(bytes);
            let data = self.rx.split().freeze();
            self.events.push_back(Event::Raw { conn, data });
            return;
        }
        // Between frames, frames are decoded straight from `bytes`; only a partial frame
        // is copied into the connection's own buffer, to wait for the rest, with the
        // decoder state that goes with it (so an idle connection carries neither).
        let partial = c
            .bufs
            .as_ref()
            .is_some_and(|b| !b.inbuf.is_empty() || !b.decoder.is_idle());
        if partial {
            if let Some(b) = c.bufs.as_mut() {
                b.inbuf.extend_from_slice(bytes);
            }
            if !self.decode_buffered(index, conn) {
                return;
            }
        } else {
            let Some(used) = self.decode_slice(index, conn, bytes) else {
                return;
            };
            if used < bytes.len() {
                let pool = &mut self.pool;
                let b = self.conns[index].bufs.get_or_insert_with(|| pool.take());
                b.decoder = Decoder::new(self.cfg.max_frame_len);
                b.inbuf.extend_from_slice(&bytes[used..]);
            }
        }
        self.recycle(index);
    }

    /// Appends to the shared receive buffer. When its room runs out while payloads still
    /// point into it, a new one of at least `RX_CHUNK` is started: one allocation per
    /// chunk's worth of traffic instead of one per read.
    fn fill_rx(&mut self, bytes: &[u8]) {
        if self.rx.capacity() - self.rx.len() < bytes.len() {
            self.rx.reserve(bytes.len().max(RX_CHUNK));
        }
        self.rx.extend_from_slice(bytes);
    }

    /// Decodes and handles the whole frames at the front of `bytes`. Returns how many
    /// bytes they took, or `None` if the connection is no longer open for reading.
    fn decode_slice(&mut self, index: usize, conn: ConnId, bytes: &[u8]) -> Option<usize> {
        let mut used = 0;
        loop {
            match self.rx_decoder.decode_slice(&bytes[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    let frame = frame.into_frame(|p| self.payload(p));
                    if !self.handle_frame(index, conn, frame) {
                        return None;
                    }
                }
                Ok(None) => return Some(used),
                Err(e) => {
                    self.rx_decoder = Decoder::new(self.cfg.max_frame_len);
                    self.decode_failed(index, e);
                    return None;
                }
            }
        }
    }

    /// Decodes and handles the frames waiting in the connection's own buffer. Returns
    /// whether the connection is still open for reading.
    fn decode_buffered(&mut self, index: usize, conn: ConnId) -> bool {
        loop {
            let Some(b) = self.conns[index].bufs.as_mut() else {
                return true;
            };
            match b.decoder.decode(&mut b.inbuf) {
                Ok(Some(frame)) => {
                    if !self.handle_frame(index, conn, frame) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.decode_failed(index, e);
                    return false;
                }
            }
        }
    }

    /// Handles one frame; whether the connection is still open for reading after it.
    fn handle_frame(&mut self, index: usize, conn: ConnId, frame: Frame) -> bool {
        self.on_frame(index, frame);
        self.conn(conn)
            .is_some_and(|c| !matches!(c.state, ConnState::Closing | ConnState::Doomed))
    }

    fn decode_failed(&mut self, index: usize, e: DecodeError) {
        let reason = Reason {
            code: e.code(),
            text: Text::from(e.to_string()),
        };
        self.fail_with_error(index, reason);
    }

    /// A payload as owned bytes: copied into the shared receive buffer and split off it,
    /// so that it points into memory used again once the application drops it, and steady
    /// traffic allocates (almost) nothing.
    fn payload(&mut self, p: &[u8]) -> Bytes {
        self.fill_rx(p);
        self.rx.split().freeze()
    }

    /// Gives the connection's buffers back to the pool if nothing waits in them.
    fn recycle(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let idle = c
            .bufs
            .as_ref()
            .is_some_and(|b| b.inbuf.is_empty() && b.out.is_empty() && b.decoder.is_idle());
        if !idle {
            return;
        }
        if let Some(b) = c.bufs.take() {
            self.pool.give(b);
        }
    }

    /// `n` bytes of [`outbound`](Self::outbound) reached the kernel.
    pub fn handle_sent(&mut self, conn: ConnId, n: usize, now: Instant) {
        self.set_now(now);
        if !self.live(conn) {
            return;
        }
        let index = conn.index as usize;
        let c = &mut self.conns[index];
        let Some(b) = c.bufs.as_mut() else { return };
        let n = n.min(b.out.len());
        if n > 0 {
            // Progress on a pending write counts as write activity (observeOutput).
            c.idle.record_write(self.tick);
            if n == b.out.len() {
                // Not `advance`: that would leave the buffer's start behind, and the next
                // frame would pay for moving it back.
                b.out.clear();
            } else {
                b.out.advance(n);
            }
        }
        // Room in the send buffer: waiting reliable messages flow in.
        self.pump(index);
        if self.conns[index].congested {
            self.check_water(index);
        }
        let c = &self.conns[index];
        if c.bufs.as_ref().is_none_or(|b| b.out.is_empty()) {
            if c.state == ConnState::Closing {
                self.release(index);
            } else {
                self.recycle(index);
            }
        }
    }

    /// Runs the timers due at `now`, at most a batch of them per call (see
    /// [`poll_timeout`](Self::poll_timeout): it is `now` or earlier while more are due).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.set_now(now);
        // Here and nowhere else, so that no other call can free a record under its caller.
        self.store.expire(self.tick, &mut self.events);
        if !self.draining.is_empty() {
            self.close_drained();
        }
        // At most MAX_FIRED timers per call, so that a mass expiry (100k heartbeats due in
        // the same tick) cannot hold up I/O: if more are due, `poll_timeout` says "now" and
        // the driver comes back after one more round of I/O.
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.poll(self.tick, &mut fired, MAX_FIRED);
        for &(key, value) in &fired {
            if value & CLIENT_TIMER != 0 {
                self.on_client_timer((value & !CLIENT_TIMER) as usize, key);
            } else if value & APP_TIMER != 0 {
                self.on_app_timer((value & !APP_TIMER) as usize, key);
            } else {
                self.on_conn_timer(value as usize, key);
            }
        }
        self.fired = fired;
    }

    // ---------------------------------------------------------------- outputs

    /// Drops the connections found past the outbound cap since the last call. Runs where
    /// no caller holds on to a connection: at the start of every `poll_*` output.
    #[inline]
    fn settle(&mut self) {
        while let Some(id) = self.doomed.pop() {
            if self.conn(id).is_some_and(|c| c.state == ConnState::Doomed) {
                let reason = Reason::new(Code::SLOW_CONSUMER, "outbound cap exceeded");
                self.finish(id.index as usize, reason, Lost::Failed);
            }
        }
    }

    /// The next socket operation for the driver.
    pub fn poll_io(&mut self) -> Option<Io> {
        self.settle();
        let io = self.io.pop_front();
        if io.is_none() {
            shrink_idle_queue(&mut self.io);
        }
        io
    }

    /// The next connection with bytes to write.
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        self.settle();
        while let Some(id) = self.transmit.pop_front() {
            if let Some(c) = self
                .conns
                .get_mut(id.index as usize)
                .filter(|c| c.gen == id.gen)
            {
                c.pending_transmit = false;
                if c.bufs.as_ref().is_some_and(|b| !b.out.is_empty()) {
                    return Some(id);
                }
            }
        }
        shrink_idle_queue(&mut self.transmit);
        None
    }

    /// The bytes waiting to be written to `conn` (empty if none or gone).
    pub fn outbound(&self, conn: ConnId) -> &[u8] {
        self.conn(conn)
            .and_then(|c| c.bufs.as_ref())
            .map_or(&[], |b| &b.out[..])
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.settle();
        let event = self.events.pop_front();
        if event.is_none() {
            shrink_idle_queue(&mut self.events);
        }
        event
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next (it may be
    /// called earlier; it may find nothing due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wheel = self.wheel.next_deadline();
        // Session records left behind are forgotten by `handle_timeout` too, and clients
        // draining past their deadline are closed there.
        let records = self.store.next_expiry(self.tick);
        let drains = self.draining.next_deadline();
        let next = [wheel, records, drains]
            .into_iter()
            .flatten()
            .reduce(Tick::earliest);
        next.map(|t| self.now + self.clock.until_at(self.now_ns, t))
    }

    // ---------------------------------------------------------------- commands

    /// The connection, unless it is gone or being dropped (a doomed connection is gone to
    /// the application already).
    fn sendable(&self, conn: ConnId) -> Result<&Conn, SendError> {
        self.conn(conn)
            .filter(|c| c.state != ConnState::Doomed)
            .ok_or(SendError::Gone)
    }

    /// The record of the active server session on `conn`.
    fn active_record(&self, conn: ConnId) -> Option<u32> {
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
    /// ([`ServerEvent::Acked`]), resent if the same client instance reconnects to this
    /// engine, and handed back in [`ServerEvent::Failed`] if it can no longer be delivered.
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

    /// Graceful shutdown: refuses new connections, sends GOAWAY to every server-side
    /// session and closes each once flushed (or after the linger time), and stops every
    /// client. Unacknowledged messages are reported failed: [`ClientEvent::Failed`] for clients',
    /// [`ServerEvent::Failed`] for the server's. A driver stops once no connection is left
    /// ([`is_shutting_down`](Self::is_shutting_down)).
    pub fn shutdown(&mut self, now: Instant) {
        self.set_now(now);
        self.shutting_down = true;
        let clients: Vec<usize> = self.clients.iter().map(|(i, _)| i).collect();
        for ci in clients {
            self.stop_client(ci, Reason::new(Code::SHUTTING_DOWN, "engine shutting down"));
        }
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
        self.set_now(now);
        ClientRecord::check(&cfg, self.cfg.max_frame_len)?;
        let instance = cfg.instance.unwrap_or_else(|| self.ids.next_u64());
        let gen = self.next_gen();
        let servers = self.server_lists.share(&cfg.servers);
        crate::growth::room_in_slab(&mut self.clients);
        let client = ClientRecord::new(&cfg, gen, instance, servers, self.cfg.max_frame_len);
        let index = self.clients.insert(client);
        let id = self.client_id(index);
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
    /// resent on every new session until acknowledged ([`ClientEvent::Acked`]) or the client
    /// stops ([`ClientEvent::Failed`]).
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
    /// [`ClientEvent::Failed`], then [`ClientState::Closed`], and the id is no longer valid (its
    /// memory is freed).
    pub fn close_client(&mut self, client: ClientId, now: Instant) {
        self.set_now(now);
        if let Some(ci) = self.client_index(client) {
            self.stop_client(ci, Reason::new(Code::NO_ERROR, "client closed"));
        }
    }

    /// Client side: closes the client once everything it sent is acknowledged, or after
    /// `within` at the latest (what is still unacknowledged then is reported as
    /// [`ClientEvent::Failed`]). Meanwhile it stays connected (and reconnects if need be) to
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
    fn close_drained(&mut self) {
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

    // ---------------------------------------------------------------- internals

    fn window(&self) -> Window {
        Window {
            messages: self.cfg.max_unacked,
            bytes: self.cfg.max_unacked_bytes,
        }
    }

    /// The deadline tick for `d` from now: never before `now + d`.
    fn after(&self, d: Duration) -> Tick {
        self.clock.deadline_after(self.now, d)
    }

    /// Whether a DATA (`id: false`) or MESSAGE (`id: true`) frame with this payload fits
    /// in frames of at most `limit`.
    fn fits(limit: u32, payload: usize, id: bool) -> Result<(), SendError> {
        if crate::frame::payload_fits(limit, payload, id) {
            Ok(())
        } else {
            Err(SendError::TooLarge)
        }
    }

    /// Appends what `write` puts in the connection's send buffer (taking a buffer pair from
    /// the pool if it has none), then schedules the write and enforces the outbound bounds.
    /// `Gone` if the connection was dropped, possibly by an earlier frame of the same read.
    fn queue(
        &mut self,
        index: usize,
        write: impl FnOnce(&Encoder, &mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), NotQueued> {
        let pool = &mut self.pool;
        let c = self
            .conns
            .get_mut(index)
            .filter(|c| c.state != ConnState::Doomed)
            .ok_or(NotQueued::Gone)?;
        let out = &mut c.bufs.get_or_insert_with(|| pool.take()).out;
        if out.is_empty() {
            // The start of a write: a stall is measured from here (see `on_conn_timer`).
            c.idle.record_write(self.tick);
        }
        write(&self.encoder, out).map_err(NotQueued::Encode)?;
        self.after_queue(index);
        Ok(())
    }

    fn queue_frame(&mut self, index: usize, frame: &Frame) {
        if let Err(NotQueued::Encode(e)) = self.queue(index, |enc, out| enc.encode(frame, out)) {
            warn!("c{index}: frame not sent: {e}");
        }
    }

    fn queue_data(&mut self, index: usize, payload: &[u8]) -> Result<(), SendError> {
        self.queue(index, |enc, out| enc.encode_data(payload, out))
            .map_err(NotQueued::into_send_error)
    }

    /// Frames the reliable messages waiting for an active connection's session into its
    /// send buffer while that holds less than `outbound_low_water` (at least one when it is
    /// empty): a backlog of any size flows out as the socket drains, and the payloads are
    /// kept once, in the send queue, until then.
    fn pump(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let budget = self.cfg.outbound_low_water.max(1);
        if !c.unframed || c.state != ConnState::Active || c.queued() >= budget {
            return;
        }
        let send = match c.role {
            Role::Server { record: Some(r) } => &mut self.store.get_mut(r).send,
            Role::Client { client, .. } => &mut self.clients[client as usize].send,
            _ => return,
        };
        if c.frame_messages(send, &self.encoder, &mut self.pool, budget, self.tick) {
            // The budget is far below the cap (`Config::validate`): this never drops the
            // peer.
            self.after_queue(index);
        }
    }

    /// Bytes waiting for the connection: framed ones plus messages not framed yet.
    fn backlog(&self, c: &Conn) -> usize {
        let framed = c.queued();
        if !c.unframed {
            return framed;
        }
        let unframed = match (c.state, c.role) {
            (ConnState::Active, Role::Server { record: Some(r) }) => {
                self.store.get(r).send.unframed_bytes()
            }
            (ConnState::Active, Role::Client { client, .. }) => {
                self.clients[client as usize].send.unframed_bytes()
            }
            _ => 0,
        };
        framed + unframed
    }

    /// Tells the application when the connection's backlog crosses the water marks.
    fn check_water(&mut self, index: usize) {
        let Some(c) = self.conns.get(index) else {
            return;
        };
        let backlog = self.backlog(c);
        let congested = if !c.congested && backlog > self.cfg.outbound_high_water {
            true
        } else if c.congested && backlog <= self.cfg.outbound_low_water {
            false
        } else {
            return;
        };
        let conn = self.id_of(index);
        self.conns[index].congested = congested;
        let event = match self.conns[index].role {
            Role::Server { .. } => Event::Server(ServerEvent::Backpressure { conn, congested }),
            Role::Raw => Event::RawBackpressure { conn, congested },
            Role::Client { client, .. } => match self.clients.get(client as usize) {
                Some(k) => {
                    let client = ClientId {
                        index: client,
                        gen: k.gen,
                    };
                    Event::Client(ClientEvent::Backpressure { client, congested })
                }
                // A connection left lingering by a client that is closed: nobody to tell.
                None => return,
            },
        };
        self.events.push_back(event);
    }

    /// Schedules the write and enforces the outbound bounds.
    fn after_queue(&mut self, index: usize) {
        let id = self.id_of(index);
        let cap = self.cfg.outbound_cap;
        let c = &mut self.conns[index];
        if !c.pending_transmit {
            c.pending_transmit = true;
            self.transmit.push_back(id);
        }
        let queued = c.queued();
        if queued > cap {
            // Decided here, done at the next settling point: the caller may still be
            // working on this connection.
            debug!("{id}: dropped: {queued} bytes queued for a peer that does not read");
            c.state = ConnState::Doomed;
            self.doomed.push(id);
        } else if !c.congested && (queued > self.cfg.outbound_high_water || c.unframed) {
            // Queueing only adds: it can make a connection congested, never relieve one.
            self.check_water(index);
        }
    }

    fn on_frame(&mut self, index: usize, frame: Frame) {
        let c = &self.conns[index];
        match (c.role, c.state) {
            (Role::Server { .. }, ConnState::AwaitHello) => match frame {
                Frame::Hello(h) => self.on_hello(index, *h),
                other => self.violation(index, &other, "expected HELLO"),
            },
            (Role::Server { .. }, ConnState::AwaitVerdict) => {
                self.violation(index, &frame, "sent before WELCOME");
            }
            (Role::Server { record }, ConnState::Active) => match frame {
                Frame::Ping(v) => self.queue_frame(index, &Frame::Pong(v)),
                Frame::Pong(_) => {}
                Frame::Data(payload) => {
                    let conn = self.id_of(index);
                    self.events
                        .push_back(Event::Server(ServerEvent::Data { conn, payload }));
                }
                Frame::Message { id: 0, .. } => {
                    self.fail_with_error(index, zero_id());
                }
                Frame::Message { id, payload } => {
                    let r = record.expect("an active server connection has a record");
                    let conn = self.id_of(index);
                    let rec = self.store.get_mut(r);
                    if rec.recv.accept(id) {
                        let (identity, instance) = (rec.identity.clone(), rec.instance);
                        self.events.push_back(Event::Server(ServerEvent::Message {
                            conn,
                            identity,
                            instance,
                            id,
                            payload,
                        }));
                    } else {
                        debug!("{conn}: duplicate message {id} suppressed");
                    }
                    self.queue_frame(index, &Frame::Ack(id));
                }
                Frame::Ack(id) => {
                    let r = record.expect("an active server connection has a record");
                    let rec = self.store.get_mut(r);
                    if rec.send.ack(id) {
                        let identity = rec.identity.clone();
                        let conn = self.id_of(index);
                        self.events.push_back(Event::Server(ServerEvent::Acked {
                            conn,
                            identity,
                            id,
                        }));
                    }
                }
                Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                other => self.violation(index, &other, "not allowed from a client"),
            },
            (Role::Client { client, .. }, ConnState::AwaitWelcome) => match frame {
                Frame::Welcome(w) => self.on_welcome(index, client as usize, w),
                Frame::Reject(reason) => self.on_reject(index, client as usize, reason),
                Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                Frame::GoAway(reason) => self.on_go_away(index, client as usize, reason),
                other => self.violation(index, &other, "expected WELCOME"),
            },
            (Role::Client { client, .. }, ConnState::Active) => {
                let ci = client as usize;
                let id = self.client_id(ci);
                match frame {
                    Frame::Ping(v) => self.queue_frame(index, &Frame::Pong(v)),
                    Frame::Pong(v) => {
                        // Our own stamp from the PING (see `on_conn_timer`), echoed back.
                        if let Some(us) = self.now_us().checked_sub(v) {
                            self.clients[ci].record_rtt(us);
                            let rtt = Duration::from_micros(us);
                            self.events
                                .push_back(Event::Client(ClientEvent::Rtt { client: id, rtt }));
                        }
                    }
                    Frame::Data(payload) => {
                        self.events.push_back(Event::Client(ClientEvent::Data {
                            client: id,
                            payload,
                        }))
                    }
                    Frame::Message { id: 0, .. } => {
                        self.fail_with_error(index, zero_id());
                    }
                    Frame::Message { id: mid, payload } => {
                        if self.clients[ci].recv.accept(mid) {
                            self.events.push_back(Event::Client(ClientEvent::Message {
                                client: id,
                                id: mid,
                                payload,
                            }));
                        }
                        self.queue_frame(index, &Frame::Ack(mid));
                    }
                    Frame::Ack(mid) => {
                        if self.clients[ci].send.ack(mid) {
                            self.events.push_back(Event::Client(ClientEvent::Acked {
                                client: id,
                                id: mid,
                            }));
                            if self.clients[ci].send.is_empty()
                                && self.draining.contains(ci, self.clients[ci].gen)
                            {
                                self.close_drained();
                            }
                        }
                    }
                    Frame::GoAway(reason) => self.on_go_away(index, ci, reason),
                    Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                    other => self.violation(index, &other, "not allowed from a server"),
                }
            }
            // Connecting: no bytes can arrive; Closing: filtered out in handle_read.
            _ => {}
        }
    }

    fn violation(&mut self, index: usize, frame: &Frame, why: &str) {
        let reason = Reason {
            code: Code::PROTOCOL_VIOLATION,
            text: Text::from(format!("{} {why}", frame.kind())),
        };
        self.fail_with_error(index, reason);
    }

    fn on_hello(&mut self, index: usize, hello: Hello) {
        let conn = self.id_of(index);
        match self.logins.check(conn, hello) {
            Check::Reject(reason) => self.reject(index, reason),
            Check::Ask(hello) => {
                // The handshake deadline keeps running while the application decides.
                self.conns[index].state = ConnState::AwaitVerdict;
                self.events
                    .push_back(Event::Server(ServerEvent::Login { conn, hello }));
            }
            Check::Accept(hello) => self.log_in(index, hello),
        }
    }

    /// Logs a checked HELLO in: admission by the session store, WELCOME, the session.
    fn log_in(&mut self, index: usize, hello: Hello) {
        let conn = self.id_of(index);
        let live = |c: ConnId| self.live(c);
        match self.store.admit(&hello, live, self.cfg.duplicate_login) {
            Admit::Refuse(reason) => return self.reject(index, reason),
            Admit::Accept(Some((old, reason))) => {
                debug!("{old}: session of {} replaced by {conn}", hello.identity);
                self.go_away(old.index as usize, reason);
            }
            Admit::Accept(None) => {}
        }
        let record = self
            .store
            .accept(&hello, conn, &mut self.ids, &mut self.events);
        let rec = self.store.get(record);
        let (session, unframed) = (rec.session, !rec.send.is_empty());
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            session,
            ping_interval_ms: duration_ms(self.cfg.ping_interval),
            idle_timeout_ms: duration_ms(self.cfg.idle_timeout),
            max_frame_len: self.cfg.max_frame_len,
        };
        let c = &mut self.conns[index];
        c.state = ConnState::Active;
        c.unframed = unframed;
        c.role = Role::Server {
            record: Some(record),
        };
        c.deadline = None;
        self.rearm(index);
        self.queue_frame(index, &Frame::Welcome(welcome));
        debug!("{conn}: session {session} open for {}", hello.identity);
        let identity = self.store.get(record).identity.clone();
        self.events.push_back(Event::Server(ServerEvent::Opened {
            conn,
            identity,
            instance: hello.instance,
            session,
            peer: None,
        }));
        self.pump(index);
    }

    fn reject(&mut self, index: usize, reason: Reason) {
        debug!("{}: handshake refused: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::Reject(reason.clone()));
        self.linger(index, reason);
    }

    fn on_welcome(&mut self, index: usize, ci: usize, w: Welcome) {
        let tick = self.tick;
        let announced = Duration::from_millis(u64::from(w.ping_interval_ms));
        let ping_ticks = (!announced.is_zero() && announced < self.cfg.ping_interval)
            .then(|| self.clock.interval_ticks(announced))
            .and_then(NonZeroU32::new);
        let too_large = self.clients[ci].welcomed(&w, tick, self.cfg.max_frame_len);
        let client = self.client_id(ci);
        for (id, payload) in too_large {
            debug!("{client}: message {id} is larger than the server accepts; failed");
            self.events.push_back(Event::Client(ClientEvent::Failed {
                client,
                id,
                payload,
            }));
        }
        let unframed = !self.clients[ci].send.is_empty();
        let c = &mut self.conns[index];
        c.state = ConnState::Active;
        c.unframed = unframed;
        c.deadline = None;
        c.role = Role::Client {
            client: ci as u32,
            ping_ticks,
        };
        self.rearm(index);
        self.client_event(ci, ClientState::Active, None);
        // A first round trip right away, so that the application has an RTT (and a check
        // of the path) without waiting a ping interval.
        self.queue_frame(index, &Frame::Ping(self.now_us()));
        self.pump(index);
    }

    fn on_reject(&mut self, index: usize, ci: usize, reason: Reason) {
        match reason.code {
            // Retrying cannot help: stop (which ends this connection) and tell the
            // application.
            Code::AUTH_FAILED | Code::INVALID_IDENTITY | Code::UNSUPPORTED_VERSION => {
                self.stop_client(ci, reason)
            }
            _ => self.finish(index, reason, Lost::Failed),
        }
    }

    fn on_go_away(&mut self, index: usize, ci: usize, reason: Reason) {
        if reason.code == Code::REPLACED {
            self.stop_client(ci, reason);
        } else {
            self.finish(index, reason, Lost::Moved);
        }
    }

    /// Sends ERROR and closes after flushing (bounded by the linger time).
    fn fail_with_error(&mut self, index: usize, reason: Reason) {
        // The application hears of it (ServerEvent::Closed, or the client's Backoff) and logs it.
        debug!("{}: closing: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::Error(reason.clone()));
        self.linger(index, reason);
    }

    fn go_away(&mut self, index: usize, reason: Reason) {
        debug!("{}: going away: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::GoAway(reason.clone()));
        self.linger(index, reason);
    }

    /// Ends the session now and lets the connection live only to flush its last frames.
    fn linger(&mut self, index: usize, reason: Reason) {
        if !self.conns.contains(index) {
            return; // dropped while queueing (outbound cap)
        }
        self.end_session(index, reason, Lost::Failed);
        let deadline = self.after(self.cfg.close_linger);
        let c = &mut self.conns[index];
        c.state = ConnState::Closing;
        c.deadline = Some(deadline);
        if let Some(b) = c.bufs.as_mut() {
            b.inbuf.clear();
        }
        if c.bufs.as_ref().is_none_or(|b| b.out.is_empty()) {
            self.release(index);
        } else {
            self.rearm(index);
        }
    }

    /// Ends the session (if not yet) and forgets the connection at once.
    fn finish(&mut self, index: usize, reason: Reason, lost: Lost) {
        if self.conns[index].state != ConnState::Closing {
            self.end_session(index, reason, lost);
        }
        self.release(index);
    }

    /// The session side of a close: events, the server's record, the client's next move.
    fn end_session(&mut self, index: usize, reason: Reason, lost: Lost) {
        let conn = self.id_of(index);
        match self.conns[index].role {
            Role::Server { record } => {
                let identity = record.map(|r| {
                    self.store.leave(r, conn, self.tick);
                    self.store.get(r).identity.clone()
                });
                if identity.is_some() {
                    debug!(
                        "{conn}: session of {} closed: {reason}",
                        identity.as_ref().map_or("", |t| t.as_str())
                    );
                }
                self.events.push_back(Event::Server(ServerEvent::Closed {
                    conn,
                    identity,
                    reason,
                }));
            }
            Role::Raw => self.events.push_back(Event::Server(ServerEvent::Closed {
                conn,
                identity: None,
                reason,
            })),
            Role::Client { client, .. } => {
                let ci = client as usize;
                if self.clients[ci].conn == Some(conn) {
                    self.clients[ci].conn = None;
                    self.clients[ci].active_since = None;
                    if lost != Lost::Quiet {
                        let server = self.clients[ci].server();
                        self.reconnect_later(ci, reason, lost == Lost::Moved, server);
                    }
                }
            }
        }
    }

    /// Frees the connection's slot and timer and tells the driver to close the socket.
    fn release(&mut self, index: usize) {
        let conn = self.id_of(index);
        let mut c = self.conns.remove(index);
        // A login still waiting for a verdict (the connection hung up, or timed out).
        if self.logins.is_waiting() {
            self.logins.forget(index as u32, c.gen);
        }
        c.idle.disarm(&mut self.wheel);
        if let Some(b) = c.bufs.take() {
            self.pool.give(b);
        }
        self.io.push_back(Io::Close { conn });
    }

    fn on_conn_timer(&mut self, index: usize, key: TimerKey) {
        let Some(c) = self.conns.get(index) else {
            return;
        };
        if c.idle.key() != Some(key) {
            return;
        }
        let idle = self.idle_cfg(index);
        let tick = self.tick;
        let c = &mut self.conns[index];
        let due = c.deadline.filter(|d| d.is_at_or_before(tick));
        let extra = if due.is_some() { None } else { c.deadline };
        let events = c
            .idle
            .on_timer(&idle, &mut self.wheel, key, tick, index as u32, extra);
        let (state, role) = (c.state, c.role);
        if state == ConnState::Doomed {
            return; // dropped at the next settling point
        }
        if due.is_some() {
            c.deadline = None;
            match state {
                ConnState::Connecting => {
                    let reason = Reason::new(Code::NO_ERROR, "connect timed out");
                    return self.finish(index, reason, Lost::Failed);
                }
                ConnState::AwaitHello | ConnState::AwaitVerdict => {
                    return self.fail_with_error(
                        index,
                        Reason::new(Code::HANDSHAKE_TIMEOUT, "handshake not completed in time"),
                    );
                }
                ConnState::AwaitWelcome => {
                    let reason = Reason::new(Code::HANDSHAKE_TIMEOUT, "no WELCOME in time");
                    return self.finish(index, reason, Lost::Failed);
                }
                ConnState::Closing => {
                    debug!("{}: linger over, closing unflushed", self.id_of(index));
                    return self.release(index);
                }
                ConnState::Active | ConnState::Doomed => {}
            }
        }
        if events.is_empty() {
            return;
        }
        match role {
            // Raw connections are not idle-tracked (their idle config is disabled).
            Role::Raw => {}
            Role::Server { .. } => {
                if events.get(IdleKind::Read).is_some() {
                    self.fail_with_error(
                        index,
                        Reason::new(Code::IDLE_TIMEOUT, "nothing read for the idle timeout"),
                    );
                } else if events.get(IdleKind::Write).is_some()
                    && self.conns[index]
                        .bufs
                        .as_ref()
                        .is_some_and(|b| !b.out.is_empty())
                {
                    // Bytes have waited, without one leaving, since the last write: the
                    // peer does not read (it may still ping). No ERROR could reach it.
                    let id = self.id_of(index);
                    debug!("{id}: dropped: nothing could be written for the idle timeout");
                    let reason = Reason::new(
                        Code::SLOW_CONSUMER,
                        "peer read nothing for the idle timeout",
                    );
                    self.finish(index, reason, Lost::Failed);
                }
            }
            Role::Client { .. } => {
                let read = events.get(IdleKind::Read);
                if read.is_some_and(|e| !e.first) {
                    // Second read-idle period in a row: the server is gone, whatever our
                    // writes say (they only prove the bytes reached our kernel).
                    let reason =
                        Reason::new(Code::IDLE_TIMEOUT, "server silent for two ping intervals");
                    debug!("{}: {reason}", self.id_of(index));
                    self.finish(index, reason, Lost::Failed);
                } else {
                    // Microseconds since this engine's origin: the PONG's echo of it gives
                    // the round trip.
                    self.queue_frame(index, &Frame::Ping(self.now_us()));
                }
            }
        }
    }

    /// Sets an application timer: [`Event::Timer`] with `token` after `after` (rounded up
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

    fn on_app_timer(&mut self, i: usize, key: TimerKey) {
        let (clock, now) = (self.clock, self.now);
        let after = |d: Duration| clock.deadline_after(now, d);
        if let Some(event) = self.timers.fire(&mut self.wheel, i, key, after) {
            self.events.push_back(event);
        }
    }

    fn on_client_timer(&mut self, ci: usize, key: TimerKey) {
        let Some(k) = self.clients.get_mut(ci) else {
            return;
        };
        if k.timer != Some(key) {
            return;
        }
        k.timer = None;
        self.start_connect(ci);
    }

    fn start_connect(&mut self, ci: usize) {
        let k = &self.clients[ci];
        let Some(addr) = k.server() else {
            return self.stop_client(ci, Reason::new(Code::INTERNAL_ERROR, "no servers"));
        };
        if self.conns.len() >= self.cfg.max_connections {
            let reason = Reason::new(Code::SERVER_FULL, "local connection limit");
            return self.reconnect_later(ci, reason, false, None);
        }
        let deadline = self.after(self.cfg.connect_timeout);
        let index = self.new_conn(
            ConnState::Connecting,
            Role::Client {
                client: ci as u32,
                ping_ticks: None,
            },
            Some(deadline),
        );
        let conn = self.id_of(index);
        let k = &mut self.clients[ci];
        k.conn = Some(conn);
        k.state = ClientState::Connecting;
        self.io.push_back(Io::Connect { conn, addr });
        self.client_event(ci, ClientState::Connecting, None);
    }

    /// Cools the lost server down, picks the next server and schedules the attempt: at
    /// once after a GOAWAY, otherwise after a jittered, growing delay. `lost` is the server
    /// of the connection that ended (`None` if no connection was made).
    fn reconnect_later(
        &mut self,
        ci: usize,
        reason: Reason,
        at_once: bool,
        lost: Option<SocketAddr>,
    ) {
        let cooldown = self.clock.ticks_for(self.cfg.server_cooldown);
        let k = &mut self.clients[ci];
        k.move_on(self.tick, cooldown);
        let delay = k.backoff(at_once, &self.cfg.backoff, &mut self.rng);
        k.state = ClientState::Backoff;
        if let Some(old) = k.timer.take() {
            self.wheel.cancel(old);
        }
        let retry = k.server().map(|server| {
            Box::new(Retry {
                after: delay,
                server,
            })
        });
        self.events.push_back(Event::Client(ClientEvent::State {
            client: self.client_id(ci),
            state: ClientState::Backoff,
            server: lost,
            reason: Some(reason),
            retry,
        }));
        if at_once {
            // Moved by GOAWAY: not even a tick of delay.
            self.start_connect(ci);
        } else {
            // Even a jittered delay of zero waits for the wheel, so that this call never
            // opens a connection under a caller that is closing one.
            let at = self.after(delay);
            self.clients[ci].timer = Some(self.wheel.insert(at, ci as u32 | CLIENT_TIMER));
        }
    }

    /// Stops the client for good: its connection is closed, its unacknowledged messages
    /// are handed back, and its slot is freed (the id goes stale).
    fn stop_client(&mut self, ci: usize, reason: Reason) {
        if !self.clients.contains(ci) {
            return; // stopped already: no second Closed event
        }
        let id = self.client_id(ci);
        if let Some(conn) = self.clients[ci].conn.take() {
            let index = conn.index as usize;
            match self.conn(conn).map(|c| c.state) {
                // Tell the server it is a close, not a crash: ERROR with the reason (code
                // NO_ERROR when the application closed), flushed within the linger time.
                Some(ConnState::Active) => {
                    self.queue_frame(index, &Frame::Error(reason.clone()));
                    self.linger(index, reason.clone());
                }
                Some(_) => self.finish(index, reason.clone(), Lost::Quiet),
                None => {}
            }
        }
        let k = &mut self.clients[ci];
        if let Some(t) = k.timer.take() {
            self.wheel.cancel(t);
        }
        k.state = ClientState::Closed;
        let failed: Vec<(u64, Bytes)> = k.send.drain().collect();
        for (mid, payload) in failed {
            self.events.push_back(Event::Client(ClientEvent::Failed {
                client: id,
                id: mid,
                payload,
            }));
        }
        self.client_event(ci, ClientState::Closed, Some(reason));
        self.clients.remove(ci);
        self.draining.remove(ci);
    }

    /// Reports a state of the client with the server it concerns (the current one).
    fn client_event(&mut self, ci: usize, state: ClientState, reason: Option<Reason>) {
        let k = &self.clients[ci];
        let server = k.server();
        self.events.push_back(Event::Client(ClientEvent::State {
            client: self.client_id(ci),
            state,
            server,
            reason,
            retry: None,
        }));
    }
}

/// Why `Engine::queue` put nothing in a send buffer.
enum NotQueued {
    Gone,
    Encode(EncodeError),
}

impl NotQueued {
    fn into_send_error(self) -> SendError {
        match self {
            NotQueued::Gone => SendError::Gone,
            NotQueued::Encode(_) => SendError::TooLarge,
        }
    }
}

/// How a connection loss bears on its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// The server failed or refused: cool it down and back off.
    Failed,
    /// The server asked us to move (GOAWAY): go to the next one at once.
    Moved,
    /// The client is stopping: no reconnect.
    Quiet,
}

/// MESSAGE ids start at 1: a receiver's duplicate filter starts at 0, so an id 0 could
/// only be acknowledged and never handed over.
fn zero_id() -> Reason {
    Reason::new(Code::PROTOCOL_VIOLATION, "MESSAGE id 0 (ids start at 1)")
}

/// After a burst (a reconnect storm queues an event per client), an output queue keeps
/// the capacity it grew to; give most of it back once the queue is drained.
fn shrink_idle_queue<T>(q: &mut VecDeque<T>) {
    const KEEP: usize = 1024;
    if q.capacity() > 4 * KEEP {
        q.shrink_to(KEEP);
    }
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `session` fuzz target: a shutdown followed by `close_client` reported
    /// the client closed twice.
    #[test]
    fn a_client_is_closed_once() {
        let now = Instant::now();
        let mut e = Engine::with_seed(Config::default(), now, 1).unwrap();
        let c = e
            .add_client(
                ClientConfig {
                    identity: Text::from("once"),
                    token: Bytes::new(),
                    servers: vec!["127.0.0.1:1".parse().unwrap()],
                    instance: None,
                },
                now,
            )
            .unwrap();
        e.shutdown(now);
        e.close_client(c, now);
        let closed = std::iter::from_fn(|| e.poll_event())
            .filter(|ev| {
                matches!(
                    ev,
                    Event::Client(ClientEvent::State {
                        state: ClientState::Closed,
                        ..
                    })
                )
            })
            .count();
        assert_eq!(closed, 1);
    }

    /// The bytes of a HELLO from instance 1 of `identity`.
    fn hello(identity: &str) -> BytesMut {
        let mut wire = BytesMut::new();
        let h = Hello {
            version: PROTOCOL_VERSION,
            instance: 1,
            attempt: 0,
            identity: Text::from(identity.to_string()),
            token: Bytes::new(),
        };
        Encoder::default()
            .encode(&Frame::Hello(Box::new(h)), &mut wire)
            .unwrap();
        wire
    }

    fn client_config(identity: &str) -> ClientConfig {
        ClientConfig {
            identity: Text::from(identity.to_string()),
            token: Bytes::new(),
            servers: vec!["127.0.0.1:1".parse().unwrap()],
            instance: None,
        }
    }

    /// A client whose HELLO could never be sent is refused at once, with the setting named,
    /// instead of retrying forever.
    #[test]
    fn a_client_that_could_never_say_hello_is_refused() {
        let now = Instant::now();
        let mut e = Engine::with_seed(Config::default(), now, 1).unwrap();
        let long = "x".repeat(256);
        assert_eq!(
            e.add_client(client_config(&long), now).unwrap_err().field,
            "identity"
        );
        assert_eq!(
            e.add_client(client_config(""), now).unwrap_err().field,
            "identity"
        );
        let mut no_servers = client_config("ok");
        no_servers.servers.clear();
        assert_eq!(e.add_client(no_servers, now).unwrap_err().field, "servers");
        let mut big_token = client_config("ok");
        big_token.token = Bytes::from(vec![0; 70_000]);
        assert_eq!(e.add_client(big_token, now).unwrap_err().field, "token");
        assert_eq!(e.clients(), 0);
        assert!(e.poll_io().is_none(), "nothing was started");
        assert!(e.add_client(client_config(&"x".repeat(255)), now).is_ok());
    }

    /// A send that crosses the outbound cap does not free the connection under its caller:
    /// the connection is dropped at the next output poll, with SLOW_CONSUMER.
    #[test]
    fn the_outbound_cap_drops_a_connection_at_a_settling_point() {
        let now = Instant::now();
        let mut e = Engine::with_seed(Config::default(), now, 1).unwrap();
        let conn = e.handle_accept(now).unwrap();
        e.handle_read(conn, &hello("sink"), now);
        let chunk = vec![0; 60_000];
        let mut sent = 0;
        while e.send_data(conn, &chunk).is_ok() {
            sent += chunk.len();
            assert!(sent < 2 * e.config().outbound_cap, "never refused");
        }
        assert_eq!(e.send_data(conn, &chunk), Err(SendError::Gone));
        assert_eq!(e.connections(), 1, "still there under its caller");
        let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
        assert!(events.iter().any(|ev| matches!(ev,
            Event::Server(ServerEvent::Closed { reason, .. }) if reason.code == Code::SLOW_CONSUMER)));
        assert_eq!(e.connections(), 0);
        assert!(matches!(e.poll_io(), Some(Io::Close { conn: c }) if c == conn));
    }

    /// Closed clients give their memory back: add/close cycles do not grow the engine.
    #[test]
    fn closed_clients_are_freed() {
        let now = Instant::now();
        let mut e = Engine::with_seed(Config::default(), now, 1).unwrap();
        for i in 0..1000 {
            let c = e.add_client(client_config(&format!("c{i}")), now).unwrap();
            e.close_client(c, now);
            assert!(e.client_info(c).is_none());
            assert_eq!(
                e.client_send_message(c, Bytes::from_static(b"late")),
                Err(SendError::Gone)
            );
        }
        assert_eq!(e.clients(), 0);
        assert_eq!(e.connections(), 0);
    }

    /// Unworkable settings are refused when the engine is built.
    #[test]
    fn an_engine_refuses_unworkable_settings() {
        let now = Instant::now();
        let cfg = Config {
            idle_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(10),
            ..Config::default()
        };
        let e = Engine::new(cfg, now).err().expect("refused");
        assert_eq!(e.field, "idle_timeout");
        assert!(
            e.to_string().contains("longer than the ping interval"),
            "{e}"
        );
    }

    /// Two engines built alike draw different session ids and client instances.
    #[test]
    fn engines_built_alike_draw_different_ids() {
        let now = Instant::now();
        let welcome_session = |e: &mut Engine| {
            let conn = e.handle_accept(now).unwrap();
            e.handle_read(conn, &hello("same"), now);
            match std::iter::from_fn(|| e.poll_event()).next() {
                Some(Event::Server(ServerEvent::Opened { session, .. })) => session,
                other => panic!("{other:?}"),
            }
        };
        let mut a = Engine::new(Config::default(), now).unwrap();
        let mut b = Engine::new(Config::default(), now).unwrap();
        assert_ne!(welcome_session(&mut a), welcome_session(&mut b));
        let hello_instance = |e: &mut Engine| {
            e.add_client(client_config("same"), now).unwrap();
            let Some(Io::Connect { conn, .. }) = e.poll_io() else {
                panic!("no connect")
            };
            e.handle_connected(conn, now);
            let mut out = BytesMut::from(e.outbound(conn));
            match Decoder::default().decode(&mut out) {
                Ok(Some(Frame::Hello(h))) => h.instance,
                other => panic!("{other:?}"),
            }
        };
        assert_ne!(hello_instance(&mut a), hello_instance(&mut b));
    }

    /// Frames split anywhere across reads: complete ones are decoded straight from the
    /// read, the partial rest waits in the connection's own buffer.
    #[test]
    fn frames_split_at_any_point_across_reads() {
        let enc = Encoder::default();
        let mut wire = BytesMut::new();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            instance: 5,
            attempt: 0,
            identity: Text::from("splitter"),
            token: Bytes::new(),
        };
        enc.encode(&Frame::Hello(Box::new(hello)), &mut wire)
            .unwrap();
        enc.encode(&Frame::Ping(77), &mut wire).unwrap();
        enc.encode_message(1, b"payload", &mut wire).unwrap();
        for cut in 0..=wire.len() {
            for cut2 in cut..=wire.len() {
                let now = Instant::now();
                let mut e = Engine::with_seed(Config::default(), now, 1).unwrap();
                let conn = e.handle_accept(now).unwrap();
                e.handle_read(conn, &wire[..cut], now);
                e.handle_read(conn, &wire[cut..cut2], now);
                e.handle_read(conn, &wire[cut2..], now);
                let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
                assert!(
                    matches!(&events[..], [Event::Server(ServerEvent::Opened { .. }), Event::Server(ServerEvent::Message { id: 1, payload, .. })] if payload == &b"payload"[..]),
                    "cuts {cut}/{cut2}: {events:?}"
                );
                let mut out = BytesMut::from(e.outbound(conn));
                let mut dec = Decoder::default();
                let frames: Vec<Frame> =
                    std::iter::from_fn(|| dec.decode(&mut out).ok().flatten()).collect();
                assert!(
                    matches!(
                        frames[..],
                        [Frame::Welcome(_), Frame::Pong(77), Frame::Ack(1)]
                    ),
                    "{frames:?}"
                );
            }
        }
    }

    /// 10,000 handshake deadlines expire in the same tick: they are handled in batches,
    /// and `poll_timeout` asks for another call right away while any are left.
    #[test]
    fn a_mass_expiry_is_handled_in_batches() {
        let start = Instant::now();
        let cfg = Config {
            max_connections: 20_000,
            ..Config::default()
        };
        let deadline = cfg.handshake_timeout;
        let mut e = Engine::with_seed(cfg, start, 1).unwrap();
        for _ in 0..10_000 {
            e.handle_accept(start).unwrap();
        }
        let later = start + deadline + Duration::from_secs(1);
        let (mut calls, mut timed_out) = (0, 0);
        while timed_out < 10_000 {
            e.handle_timeout(later);
            calls += 1;
            let now_closed = std::iter::from_fn(|| e.poll_event())
                .filter(|ev| {
                    matches!(ev, Event::Server(ServerEvent::Closed { reason, .. }) if reason.code == Code::HANDSHAKE_TIMEOUT)
                })
                .count();
            assert!(
                now_closed <= MAX_FIRED,
                "one call did too much: {now_closed}"
            );
            timed_out += now_closed;
            if timed_out < 10_000 {
                assert!(
                    e.poll_timeout().is_some_and(|t| t <= later),
                    "must come back now"
                );
            }
            assert!(calls <= 10, "no progress");
        }
        assert!(
            calls >= 3,
            "10,000 in batches of {MAX_FIRED}: {calls} calls"
        );
    }

    #[test]
    fn idle_connection_state_is_small() {
        // Slab slots add a discriminant to these; the wheel entry is 16 bytes more.
        let conn = std::mem::size_of::<Conn>();
        let record = std::mem::size_of::<store::Record>();
        let client = std::mem::size_of::<ClientRecord>();
        let event = std::mem::size_of::<Event>();
        eprintln!("conn {conn} B, record {record} B, client {client} B, event {event} B");
        // What keeps an idle connection under 256 bytes on either side (benches/memory.rs).
        assert!(conn <= 64, "{conn}");
        assert!(record <= 96, "{record}");
        assert!(client <= 136, "{client}");
        // Every queued event is as large as the largest kind (a server's Message: connection,
        // identity, instance, id, payload; plus the two tags of the split by side): rare,
        // large ones are boxed, since each heartbeat queues one (an RTT).
        assert!(event <= 104, "{event}");
    }
}
