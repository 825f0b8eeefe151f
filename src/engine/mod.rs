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
//! # Layout
//!
//! The engine is one type whose methods live in files by concept; the types it owns live
//! in rooms of their own, which never reach back into the engine: they return what
//! happened (`Expiry`, `Check`, `Admit`, a timer's event) and the engine decides.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the tables, the clock, the inputs (`handle_*`) and outputs (`poll_*`) |
//! | `commands.rs` | the application's commands, checked, then routed |
//! | `rx.rs` | the receive path: frames from a read, partial frames, payload memory |
//! | `frames.rs` | what each frame means in each phase, server and client |
//! | `outbound.rs` | send buffers, pumping reliable messages, water marks, the cap |
//! | `closing.rs` | ERROR/GOAWAY and linger, a session's end, a connection's timers |
//! | `supervisor.rs` | the client's connect, backoff and failover; application timers |
//! | `conn.rs` | one connection: phase, role, buffers, and what its timer means |
//! | `store.rs` | the server's session records, keyed by (identity, instance) |
//! | `client.rs` | one client record: servers, backoff, RTT; draining clients |
//! | `login.rs` | how a HELLO is decided: checks, hook, the application's verdict |
//! | `timers.rs` | application timers on the wheel |
//! | `event.rs`, `handle.rs`, `api.rs` | what applications see: events, ids, the [`App`] view |
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

use crate::codec::{Decoder, Encoder};
use crate::config::{Config, ConfigError};
use crate::frame::{Code, Frame, Reason, Text};
use crate::idle::{IdleConfig, IdleTracker};
mod api;
mod client;
mod closing;
mod commands;
mod conn;
mod event;
mod frames;
mod handle;
mod links;
mod login;
mod outbound;
mod rx;
mod secure;
mod store;
mod supervisor;
mod timers;

pub use api::{App, Client, Session};
pub use event::{
    ClientConfig, ClientEvent, ClientInfo, ClientState, ClientTls, Event, FailCause, HelloHook,
    Retry, SendError, ServerEvent,
};
pub use handle::{ClientId, ConnId, Io, LinkId, TimerId};

use crate::rng::Rng;
use crate::time::{Clock, Tick};
use crate::wheel::{TimerKey, Wheel};
use bytes::{Buf, BytesMut};
use client::{ClientRecord, Drains, ServerLists};
use closing::Lost;
use conn::{Conn, ConnState, Pool, Role};
use links::LinkRecord;
use log::warn;
use login::Logins;
use secure::{Opened, SecureTable};
use slab::Slab;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use store::SessionStore;
use timers::{AppTimers, APP_TIMER};

/// Wheel values with this bit name a client record's backoff timer, not a connection.
const CLIENT_TIMER: u32 = 1 << 31;
/// Wheel values with this bit name a link's backoff timer.
const LINK_TIMER: u32 = 1 << 29;
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
    /// Links of the application's own protocols.
    links: Slab<LinkRecord>,
    /// TLS state of the connections that carry it.
    secure: SecureTable,
    /// TLS settings of the clients that use it, by client index.
    client_tls: hashbrown::HashMap<u32, ClientTls>,
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
    /// Where [`Engine::move_sessions`] goes on looking.
    move_cursor: usize,
    /// Whether the application confirms received messages before they are acknowledged
    /// ([`Engine::confirm_messages`]).
    confirm: bool,
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
            links: Slab::new(),
            secure: SecureTable::default(),
            client_tls: hashbrown::HashMap::new(),
            timers: AppTimers::default(),
            doomed: Vec::new(),
            draining: Drains::default(),
            store: SessionStore::new(clock.ticks_for(cfg.record_linger), cfg.max_connections),
            next_gen: NonZeroU32::MIN,
            rng,
            ids,
            logins: Logins::default(),
            shutting_down: false,
            confirm: false,
            move_cursor: 0,
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
            (ConnState::Active, Role::Link { link }) => {
                let t = self.links[link as usize].ping_ticks;
                IdleConfig::from_ticks(Some(t), Some(t), None)
            }
            _ => IdleConfig::DISABLED,
        }
    }

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

    /// A TLS listener accepted a socket: as [`handle_accept`](Self::handle_accept), with a
    /// TLS handshake under the protocol's (the handshake deadline covers both).
    pub fn handle_accept_tls(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
        now: Instant,
    ) -> Result<ConnId, Reason> {
        let tls = crate::tls::Tls::server(config).map_err(|e| {
            warn!("TLS settings refused: {e}");
            Reason::new(Code::INTERNAL_ERROR, "TLS settings refused")
        })?;
        let conn = self.handle_accept(now)?;
        self.secure.insert(conn.index as usize, conn.gen, tls);
        Ok(conn)
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
        if self.conns[index].state != ConnState::Connecting {
            return;
        }
        let client = match self.conns[index].role {
            Role::Client { client, .. } => client,
            Role::Link { link } => return self.link_connected(index, link as usize),
            _ => return,
        };
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
        if let Some(s) = self.secure.get_mut(index, conn.gen) {
            // The ClientHello first; HELLO is sealed once the handshake allows.
            if let Err(e) = s.tls.start(&mut s.wire) {
                return self.tls_failed(index, e);
            }
        }
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
        if !self.secure.is_empty() {
            let closed = match self.secure.open(index, conn.gen, bytes) {
                Opened::Plain => false,
                Opened::Closed => true,
                Opened::Failed(e) => return self.tls_failed(index, e),
            };
            if self.secure.get(index, conn.gen).is_some() {
                self.schedule_transmit(index);
                // What came before close_notify (a GOAWAY, say) is read first.
                let plain = std::mem::take(&mut self.secure.plain);
                if !plain.is_empty() {
                    self.read_plain(index, conn, &plain);
                }
                self.secure.plain = plain;
                if closed && self.live(conn) {
                    let reason = Reason::new(Code::NO_ERROR, "peer closed TLS (close_notify)");
                    self.finish(index, reason, Lost::Failed);
                }
                return;
            }
        }
        self.read_plain(index, conn, bytes);
    }

    /// Bytes of the connection's own protocol (decrypted, if it carries TLS).
    fn read_plain(&mut self, index: usize, conn: ConnId, bytes: &[u8]) {
        let c = &mut self.conns[index];
        if let Role::Link { link } = c.role {
            return self.link_read(index, link as usize, bytes);
        }
        if c.role == Role::Raw {
            // Raw bytes are handed over from the shared receive buffer as they are.
            self.fill_rx(bytes);
            let data = self.rx.split().freeze();
            self.events.push_back(Event::Raw { conn, data });
            return;
        }
        // Between frames, frames are decoded straight from `bytes`; only a partial frame
        // is copied into the connection's own buffer, to wait for the rest (so an idle
        // connection carries no receive buffer).
        let partial = c.bufs.as_ref().is_some_and(|b| !b.inbuf.is_empty());
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
                b.inbuf.extend_from_slice(&bytes[used..]);
            }
        }
        self.recycle(index);
    }

    /// `n` bytes of [`outbound`](Self::outbound) reached the kernel.
    pub fn handle_sent(&mut self, conn: ConnId, n: usize, now: Instant) {
        self.set_now(now);
        if !self.live(conn) {
            return;
        }
        let index = conn.index as usize;
        if let Some(s) = self.secure.get_mut(index, conn.gen) {
            let n = n.min(s.wire.len());
            if n > 0 {
                self.conns[index].idle.record_write(self.tick);
                if n == s.wire.len() {
                    // The handshake's flights leave kilobytes of capacity behind: an idle
                    // TLS connection keeps at most a heartbeat's worth.
                    if s.wire.capacity() > 128 {
                        s.wire = BytesMut::new();
                    } else {
                        s.wire.clear();
                    }
                } else {
                    s.wire.advance(n);
                }
            }
            let flushed = s.wire.is_empty();
            self.pump(index);
            if self.conns[index].congested {
                self.check_water(index);
            }
            let c = &self.conns[index];
            if flushed && c.bufs.as_ref().is_none_or(|b| b.out.is_empty()) {
                if c.state == ConnState::Closing {
                    self.release(index);
                } else {
                    self.recycle(index);
                }
            }
            return;
        }
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
            } else if value & LINK_TIMER != 0 {
                self.on_link_timer((value & !LINK_TIMER) as usize, key);
            } else {
                self.on_conn_timer(value as usize, key);
            }
        }
        self.fired = fired;
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
                if !self.secure.is_empty() {
                    if let Some(s) = self.secure.get_mut(id.index as usize, id.gen) {
                        // Frames queued in plaintext are sealed now, in as few records as
                        // the TLS layer makes of them.
                        if let Some(b) = c.bufs.as_mut() {
                            if let Err(e) = secure::seal(s, &mut b.out) {
                                warn!("{id}: not sealed: {e}");
                            }
                        }
                        if !s.wire.is_empty() {
                            return Some(id);
                        }
                        continue;
                    }
                }
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
        if let Some(s) = self.secure.get(conn.index as usize, conn.gen) {
            return &s.wire[..];
        }
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

    /// The deadline tick for `d` from now: never before `now + d`.
    fn after(&self, d: Duration) -> Tick {
        self.clock.deadline_after(self.now, d)
    }
}

/// After a burst (a reconnect storm queues an event per client), an output queue keeps
/// the capacity it grew to; give most of it back once the queue is drained.
fn shrink_idle_queue<T>(q: &mut VecDeque<T>) {
    const KEEP: usize = 1024;
    if q.capacity() > 4 * KEEP {
        q.shrink_to(KEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Hello, PROTOCOL_VERSION};
    use bytes::Bytes;

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
