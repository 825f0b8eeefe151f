//! The engine's side of links (see [`crate::link`]): each link's record, which outlives
//! its connections, and the supervisor that keeps it connected. The protocol is only fed
//! and drained here; what it says is its own business and the application's.

use super::closing::Lost;
use super::conn::{ConnState, Role};
use super::event::{Event, Retry, SendError};
use super::handle::{ConnId, Io, LinkId};
use super::{Engine, LINK_TIMER};
use crate::config::ConfigError;
use crate::frame::{Code, Reason};
use crate::link::{LinkConfig, LinkEvent, LinkState, Protocol};
use crate::wheel::TimerKey;
use std::any::Any;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Instant;

pub(super) struct LinkRecord {
    pub(super) gen: NonZeroU32,
    protocol: Box<dyn Protocol>,
    cfg: LinkConfig,
    /// The ping interval in ticks (at least one).
    pub(super) ping_ticks: u32,
    /// Index into `cfg.servers` of the server connected to, tried, or next.
    current: usize,
    /// Attempts since bytes last came from a server: the backoff grows with them.
    failures: u32,
    state: LinkState,
    conn: Option<ConnId>,
    timer: Option<TimerKey>,
}

impl LinkRecord {
    fn server(&self) -> Option<SocketAddr> {
        self.cfg.servers.get(self.current).copied()
    }
}

impl Engine {
    /// Starts a link: an outbound connection speaking `protocol`, kept up over the
    /// servers of `cfg` until [`close_link`](Self::close_link) or
    /// [`shutdown`](Self::shutdown). Fails, and starts nothing, if `cfg` names no server or
    /// has a ping interval or connect timeout shorter than a tick.
    pub fn add_link(
        &mut self,
        cfg: LinkConfig,
        protocol: Box<dyn Protocol>,
        now: Instant,
    ) -> Result<LinkId, ConfigError> {
        self.set_now(now);
        let problem = |field, problem: &str| ConfigError {
            field,
            problem: problem.to_string(),
        };
        if cfg.servers.is_empty() {
            return Err(problem("servers", "no server to connect to"));
        }
        if cfg.ping_interval < self.cfg.tick {
            return Err(problem("ping_interval", "shorter than the engine's tick"));
        }
        if cfg.connect_timeout < self.cfg.tick {
            return Err(problem("connect_timeout", "shorter than the engine's tick"));
        }
        let ping_ticks = self.clock.interval_ticks(cfg.ping_interval).max(1);
        let gen = self.next_gen();
        let index = self.links.insert(LinkRecord {
            gen,
            protocol,
            cfg,
            ping_ticks,
            current: 0,
            failures: 0,
            state: LinkState::Backoff,
            conn: None,
            timer: None,
        });
        self.start_link(index);
        Ok(self.link_id(index))
    }

    /// Runs `f` on the protocol of `link` (to send requests, or take what it received),
    /// then sends what `f` queued. [`SendError::Gone`] if the link is closed;
    /// [`SendError::NotActive`] if it does not speak `P`.
    pub fn with_link<P: Protocol, R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut P) -> R,
    ) -> Result<R, SendError> {
        let li = self.link_index(link).ok_or(SendError::Gone)?;
        let any: &mut dyn Any = self.links[li].protocol.as_mut();
        let p = any.downcast_mut::<P>().ok_or(SendError::NotActive)?;
        let r = f(p);
        self.flush_link(li);
        Ok(r)
    }

    /// Whether `conn` is a link's connection. Drivers read links' sockets first: a broker
    /// disconnects a client whose replies and pushes pile up.
    pub fn is_link(&self, conn: ConnId) -> bool {
        self.conn(conn)
            .is_some_and(|c| matches!(c.role, Role::Link { .. }))
    }

    /// Where `link` stands; `None` once it is closed.
    pub fn link_state(&self, link: LinkId) -> Option<LinkState> {
        self.link_index(link).map(|li| self.links[li].state)
    }

    /// Stops `link` for good: its connection is closed, the protocol hears of it, and
    /// [`LinkState::Closed`] is reported.
    pub fn close_link(&mut self, link: LinkId, now: Instant) {
        self.set_now(now);
        if let Some(li) = self.link_index(link) {
            self.stop_link(li, Reason::new(Code::NO_ERROR, "link closed"));
        }
    }

    fn link_id(&self, li: usize) -> LinkId {
        LinkId {
            index: li as u32,
            gen: self.links[li].gen,
        }
    }

    fn link_index(&self, id: LinkId) -> Option<usize> {
        let li = id.index as usize;
        self.links.get(li).filter(|l| l.gen == id.gen).map(|_| li)
    }

    fn link_event(&mut self, li: usize, state: LinkState, reason: Option<Reason>) {
        let l = &mut self.links[li];
        l.state = state;
        let server = l.server();
        let link = self.link_id(li);
        self.events.push_back(Event::Link(LinkEvent::State {
            link,
            state,
            server,
            reason,
            retry: None,
        }));
    }

    fn start_link(&mut self, li: usize) {
        let Some(addr) = self.links[li].server() else {
            return self.stop_link(li, Reason::new(Code::INTERNAL_ERROR, "no servers"));
        };
        let deadline = self.after(self.links[li].cfg.connect_timeout);
        let index = self.new_conn(
            ConnState::Connecting,
            Role::Link { link: li as u32 },
            Some(deadline),
        );
        let conn = self.id_of(index);
        self.links[li].conn = Some(conn);
        self.io.push_back(Io::Connect { conn, addr });
        self.link_event(li, LinkState::Connecting, None);
    }

    /// The link's connection `index` is established.
    pub(super) fn link_connected(&mut self, index: usize, li: usize) {
        let c = &mut self.conns[index];
        c.state = ConnState::Active;
        c.deadline = None;
        c.idle.record_read(self.tick);
        self.rearm(index);
        let (now, l) = (self.now, &mut self.links[li]);
        if let Some(server) = l.server() {
            l.protocol.handle_connected(server, now);
        }
        self.link_event(li, LinkState::Connected, None);
        self.flush_link(li);
    }

    /// Bytes read on the link's connection `index`: the protocol takes what is whole.
    pub(super) fn link_read(&mut self, index: usize, li: usize, bytes: &[u8]) {
        let pool = &mut self.pool;
        let b = self.conns[index].bufs.get_or_insert_with(|| pool.take());
        b.inbuf.extend_from_slice(bytes);
        let l = &mut self.links[li];
        l.failures = 0;
        let result = l.protocol.handle_read(&mut b.inbuf, self.now);
        let over = b.inbuf.len() > l.cfg.max_buffered;
        match result {
            Ok(news) => {
                if news {
                    let link = self.link_id(li);
                    self.events
                        .push_back(Event::Link(LinkEvent::Readable { link }));
                }
                if over {
                    let reason = Reason::new(Code::FRAME_TOO_LARGE, "message over max_buffered");
                    return self.finish(index, reason, Lost::Failed);
                }
                self.flush_link(li);
                self.recycle(index);
            }
            Err(reason) => self.finish(index, reason, Lost::Failed),
        }
    }

    /// Nothing written on the link's connection for the ping interval.
    pub(super) fn link_write_idle(&mut self, li: usize) {
        let now = self.now;
        self.links[li].protocol.handle_write_idle(now);
        self.flush_link(li);
    }

    /// Moves what the protocol has to send into its connection's send buffer.
    fn flush_link(&mut self, li: usize) {
        let l = &mut self.links[li];
        let Some(conn) = l.conn else { return };
        if !l.protocol.wants_write() {
            return;
        }
        let index = conn.index as usize;
        let pool = &mut self.pool;
        let Some(c) = self
            .conns
            .get_mut(index)
            .filter(|c| c.gen == conn.gen && c.state == ConnState::Active)
        else {
            return;
        };
        let out = &mut c.bufs.get_or_insert_with(|| pool.take()).out;
        if out.is_empty() {
            c.idle.record_write(self.tick);
        }
        l.protocol.poll_transmit(out);
        self.after_queue(index);
    }

    /// The link's connection `conn` ended: unless the link is stopping, the protocol hears
    /// of it and the link backs off and moves to the next server.
    pub(super) fn link_lost(&mut self, li: usize, conn: ConnId, reason: Reason, lost: Lost) {
        let l = &mut self.links[li];
        if l.conn != Some(conn) {
            return;
        }
        l.conn = None;
        if lost == Lost::Quiet {
            return;
        }
        let server = l.server();
        if l.protocol.handle_disconnected(&reason, self.now) {
            let link = self.link_id(li);
            self.events
                .push_back(Event::Link(LinkEvent::Readable { link }));
        }
        let l = &mut self.links[li];
        let delay = l.cfg.backoff.delay(l.failures, &mut self.rng);
        l.failures = l.failures.saturating_add(1);
        l.current = (l.current + 1) % l.cfg.servers.len().max(1);
        l.state = LinkState::Backoff;
        if let Some(t) = l.timer.take() {
            self.wheel.cancel(t);
        }
        let at = self.after(delay);
        self.links[li].timer = Some(self.wheel.insert(at, li as u32 | LINK_TIMER));
        let link = self.link_id(li);
        let retry = self.links[li].server().map(|server| {
            Box::new(Retry {
                after: delay,
                server,
            })
        });
        self.events.push_back(Event::Link(LinkEvent::State {
            link,
            state: LinkState::Backoff,
            server,
            reason: Some(reason),
            retry,
        }));
    }

    pub(super) fn on_link_timer(&mut self, li: usize, key: TimerKey) {
        let Some(l) = self.links.get_mut(li) else {
            return;
        };
        if l.timer != Some(key) {
            return;
        }
        l.timer = None;
        self.start_link(li);
    }

    /// Stops the link for good and frees its slot.
    pub(super) fn stop_link(&mut self, li: usize, reason: Reason) {
        if !self.links.contains(li) {
            return;
        }
        if let Some(conn) = self.links[li].conn.take() {
            if self.live(conn) {
                self.finish(conn.index as usize, reason.clone(), Lost::Quiet);
            }
        }
        let now = self.now;
        let l = &mut self.links[li];
        if let Some(t) = l.timer.take() {
            self.wheel.cancel(t);
        }
        l.protocol.handle_disconnected(&reason, now);
        self.link_event(li, LinkState::Closed, Some(reason));
        self.links.remove(li);
    }

    /// Stops every link (shutdown).
    pub(super) fn stop_links(&mut self, reason: &Reason) {
        let all: Vec<usize> = self.links.iter().map(|(i, _)| i).collect();
        for li in all {
            self.stop_link(li, reason.clone());
        }
    }
}
