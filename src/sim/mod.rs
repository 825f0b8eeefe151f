//! A deterministic simulation driver: engines joined by in-memory pipes on a virtual
//! clock, with seeded faults.
//!
//! It drives the very [`Engine`] code the socket reactor drives, through the same
//! `handle_*` / `poll_*` calls, so tests and benchmarks of 100k connections or of a server
//! dying mid-stream exercise production code. The same seed gives the same run.
//!
//! The network model, per direction of each link: bytes leave the sender's outbound buffer
//! only while the receiver's window (bytes in flight plus bytes it has not read) has room,
//! travel for a delay drawn from the configured range (order is kept), and arrive in one
//! piece per write. Faults:
//!
//! - [`Sim::stall`]: a link silently stops carrying bytes both ways, with no FIN (half-open);
//! - [`Sim::reset`]: both ends see the connection fail;
//! - [`Sim::fin`]: one end closes; the other sees the end after what was in flight;
//! - [`Sim::partition`]: no bytes and no new connections between two nodes;
//! - [`Sim::kill`]: a node dies; its peers see their connections reset, and connecting to
//!   its address is refused;
//! - [`Sim::refuse`]: a live node's listener refuses connections;
//! - a raw peer ([`Sim::raw_connect`]) that writes what the test wants and reads only when
//!   told to (a slow reader, a silent or hostile client).
//!
//! Besides engines, a node can be a [`Service`]: a sans-IO server the simulation feeds the
//! bytes that reach it, such as [`FakeRedis`] ([`Sim::add_fake_redis`]), so that engines'
//! links to a broker cross the same simulated network, faults included. A killed service
//! can be restarted ([`Sim::restart`]) with what it keeps across a crash.

mod fake_redis;

pub use fake_redis::FakeRedis;

use crate::config::{Config, ConfigError};
use crate::engine::{ConnId, Engine, Event, Io};
use crate::rng::Rng;
use bytes::{Buf, BytesMut};
use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Names a node (an engine) of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(usize);

/// Names a raw peer connection of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawId(usize);

/// Names a link (one TCP connection) of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(usize);

/// Names a connection accepted by a [`Service`]: numbered from 0 in the order they were
/// accepted, never reused within the service's life (restarts included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceConn(pub u64);

/// What a [`Service`] asks of the network.
#[derive(Debug)]
pub enum ServiceOutput {
    /// Send `bytes` on `conn`.
    Send {
        /// The connection.
        conn: ServiceConn,
        /// The bytes, in order after what was sent on it before.
        bytes: BytesMut,
    },
    /// Close `conn` (FIN) after what was sent on it; the service forgets it.
    Close {
        /// The connection.
        conn: ServiceConn,
    },
}

/// A sans-IO server placed at an address of the simulation ([`Sim::add_service`]): it is
/// told of connections and the bytes that reach it, and the simulation carries what it
/// sends over the simulated network like an engine's output. It has no clock of its own:
/// it acts only when something arrives, and `now` is the simulation's virtual time.
///
/// A service reads everything that arrives at once, and what it sends is not held back by
/// the network window: that models a server that buffers without bound, which is what a
/// broker does for the engines' links (they read everything), but not a slow reader.
pub trait Service: Any {
    /// A connection was accepted.
    fn handle_accept(&mut self, conn: ServiceConn, now: Instant);

    /// Bytes arrived on `conn`, in order.
    fn handle_read(&mut self, conn: ServiceConn, bytes: &[u8], now: Instant);

    /// The peer closed `conn` or it was reset: the service forgets it.
    fn handle_closed(&mut self, conn: ServiceConn, now: Instant);

    /// The process was killed: every connection is gone without a word. The service keeps
    /// only what a restart would find (what it would have written to disk).
    fn handle_killed(&mut self, now: Instant);

    /// The next thing to send or close, if any; drained after every call above.
    fn poll_output(&mut self) -> Option<ServiceOutput>;
}

/// Settings of the simulated network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// One-way delay range; each write draws from it, order is kept.
    pub delay: (Duration, Duration),
    /// Per-direction window: bytes in flight plus bytes the receiver has not read.
    pub window: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            delay: (Duration::from_micros(50), Duration::from_micros(500)),
            window: 256 * 1024,
        }
    }
}

/// A node's connection ends, indexed by the engine's slot index: no hashing per byte moved.
#[derive(Default)]
struct Ends(Vec<Option<(ConnId, LinkId, usize)>>);

impl Ends {
    fn get(&self, conn: ConnId) -> Option<(LinkId, usize)> {
        match self.0.get(conn.index()) {
            Some(&Some((c, link, side))) if c == conn => Some((link, side)),
            _ => None,
        }
    }

    fn insert(&mut self, conn: ConnId, link: LinkId, side: usize) {
        if self.0.len() <= conn.index() {
            self.0.resize(conn.index() + 1, None);
        }
        self.0[conn.index()] = Some((conn, link, side));
    }

    fn remove(&mut self, conn: ConnId) -> Option<(LinkId, usize)> {
        let found = self.get(conn);
        if found.is_some() {
            self.0[conn.index()] = None;
        }
        found
    }

    fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.0.iter().flatten().map(|&(_, link, _)| link)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// What runs on a node.
enum Role {
    /// Boxed: an engine is large, and the node table is moved as it grows.
    Engine(Box<Engine>),
    Service(ServiceNode),
}

struct ServiceNode {
    service: Box<dyn Service>,
    /// Link ends of the service's connections, by connection number (never reused).
    ends: Vec<Option<(LinkId, usize)>>,
    /// The number of the next connection accepted.
    next_conn: u64,
}

impl ServiceNode {
    fn end(&self, conn: ServiceConn) -> Option<(LinkId, usize)> {
        let i = usize::try_from(conn.0).ok()?;
        self.ends.get(i).copied().flatten()
    }

    fn remove(&mut self, conn: ServiceConn) -> Option<(LinkId, usize)> {
        let i = usize::try_from(conn.0).ok()?;
        self.ends.get_mut(i).and_then(Option::take)
    }
}

struct Node {
    role: Role,
    listen: Option<SocketAddr>,
    alive: bool,
    refusing: bool,
    events: Vec<Event>,
    /// Link ends of this (engine) node's connections, by the connection's slot index.
    ends: Ends,
    /// The engine had an input (or was lent out) since its outputs were last collected.
    dirty: bool,
    /// Its next timer as of then: only an input can change it.
    timer: Option<Instant>,
}

impl Node {
    /// The engine, for an input: its outputs and timer need collecting afterwards.
    #[track_caller]
    fn touched(&mut self) -> &mut Engine {
        self.dirty = true;
        self.engine_mut()
    }

    /// The engine, without marking it for collection.
    #[track_caller]
    fn engine_mut(&mut self) -> &mut Engine {
        match &mut self.role {
            Role::Engine(e) => e,
            Role::Service(_) => panic!("the node is a service, not an engine"),
        }
    }

    #[track_caller]
    fn engine_ref(&self) -> &Engine {
        match &self.role {
            Role::Engine(e) => e,
            Role::Service(_) => panic!("the node is a service, not an engine"),
        }
    }

    /// The service, for an input: its output needs collecting afterwards.
    fn service(&mut self) -> Option<&mut ServiceNode> {
        self.dirty = true;
        match &mut self.role {
            Role::Service(s) => Some(s),
            Role::Engine(_) => None,
        }
    }

    /// Links of the node's connections, in no particular order.
    fn links(&self) -> Vec<LinkId> {
        match &self.role {
            Role::Engine(_) => self.ends.links().collect(),
            Role::Service(s) => s.ends.iter().flatten().map(|&(l, _)| l).collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Engine { node: usize, conn: ConnId },
    Service { node: usize, conn: ServiceConn },
    Raw { raw: usize },
}

struct Link {
    ends: [End; 2],
    /// Per direction (0: from ends[0] to ends[1]): bytes counted against the window.
    used: [usize; 2],
    /// Per direction: when the last write arrives, to keep order.
    last_arrival: [Micros; 2],
    stalled: bool,
}

/// Links by id. Ids count up and are never reused, so a late action for a closed link
/// cannot touch a newer one; a table indexed by id finds a link with one memory access.
/// It keeps a slot (an empty `Option`) per link ever made: simulations are short-lived.
#[derive(Default)]
struct Links(Vec<Option<Link>>);

impl Links {
    fn insert(&mut self, link: Link) -> usize {
        self.0.push(Some(link));
        self.0.len() - 1
    }

    fn get(&self, id: usize) -> Option<&Link> {
        self.0.get(id).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, id: usize) -> Option<&mut Link> {
        self.0.get_mut(id).and_then(Option::as_mut)
    }

    fn remove(&mut self, id: usize) -> Option<Link> {
        self.0.get_mut(id).and_then(Option::take)
    }

    fn contains(&self, id: usize) -> bool {
        self.get(id).is_some()
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Link)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
    }
}

struct Raw {
    link: Option<LinkId>,
    /// Bytes delivered and not yet read.
    unread: BytesMut,
    /// Bytes read so far.
    received: Vec<u8>,
    reading: bool,
    closed: bool,
}

#[derive(Debug)]
enum Action {
    /// Bytes arrive at the receiving end of `dir`.
    Deliver {
        link: usize,
        dir: usize,
        bytes: BytesMut,
    },
    /// The sender of `dir` closed: the receiver sees EOF after all earlier bytes.
    Fin { link: usize, dir: usize },
    /// A connection attempt reaches its listener.
    Connect {
        from: usize,
        conn: ConnId,
        to: usize,
    },
    /// A connection attempt fails.
    Refused { from: usize, conn: ConnId },
}

/// Capacity of the delivery buffers kept for reuse: enough for a burst of 100k heartbeats
/// in flight, bounded however large the writes.
const SPARE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Virtual time inside the simulation: whole microseconds since its start. Cheaper than
/// `Instant` to add, compare and key a map by, on the path of every delivery.
type Micros = u64;

/// The simulation. See the [module docs](self).
pub struct Sim {
    start: Instant,
    now_us: Micros,
    /// `start + now_us`, what the engines are told.
    now: Instant,
    rng: Rng,
    net: NetConfig,
    nodes: Vec<Node>,
    links: Links,
    raws: Vec<Raw>,
    partitions: Vec<(usize, usize)>,
    /// Actions by the instant they happen, each instant's in the order they were scheduled
    /// (so the same seed gives the same run). Delays are whole microseconds, so a burst
    /// shares a few hundred instants: a map of buckets beats a heap of single actions.
    queue: BTreeMap<Micros, Vec<Action>>,
    /// Emptied buckets of `queue`, reused so that scheduling allocates nothing.
    buckets: Vec<Vec<Action>>,
    /// Engine ends with output the window did not let out yet.
    blocked: Vec<(usize, ConnId)>,
    /// Buffers of delivered writes, reused for the next ones, and their capacity in all.
    spare: Vec<BytesMut>,
    spare_bytes: usize,
    /// Connections opened, per node, for tests that check reconnect spreading.
    accepts: Vec<(Instant, usize)>,
}

impl Sim {
    /// An empty simulation whose clock starts at `start`.
    pub fn new(seed: u64, start: Instant, net: NetConfig) -> Sim {
        Sim {
            start,
            now_us: 0,
            now: start,
            rng: Rng::new(seed),
            net,
            nodes: Vec::new(),
            links: Links::default(),
            raws: Vec::new(),
            partitions: Vec::new(),
            queue: BTreeMap::new(),
            buckets: Vec::new(),
            blocked: Vec::new(),
            accepts: Vec::new(),
            spare: Vec::new(),
            spare_bytes: 0,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds an engine, listening on `listen` if given. It is deterministic
    /// ([`Engine::with_seed`]), seeded from the simulation's generator, so every node hands
    /// out its own ids and the same simulation seed replays the same run. Fails if `cfg`
    /// cannot work.
    pub fn add_node(
        &mut self,
        cfg: Config,
        listen: Option<SocketAddr>,
    ) -> Result<NodeId, ConfigError> {
        let seed = self.rng.next_u64();
        self.nodes.push(Node {
            role: Role::Engine(Box::new(Engine::with_seed(cfg, self.now, seed)?)),
            listen,
            alive: true,
            refusing: false,
            events: Vec::new(),
            ends: Ends::default(),
            dirty: true,
            timer: None,
        });
        Ok(NodeId(self.nodes.len() - 1))
    }

    /// Adds a service listening on `listen`: connections to that address reach it over
    /// the simulated network. Its node takes part in partitions, kills and restarts like
    /// an engine's.
    pub fn add_service(&mut self, listen: SocketAddr, service: Box<dyn Service>) -> NodeId {
        self.nodes.push(Node {
            role: Role::Service(ServiceNode {
                service,
                ends: Vec::new(),
                next_conn: 0,
            }),
            listen: Some(listen),
            alive: true,
            refusing: false,
            events: Vec::new(),
            ends: Ends::default(),
            dirty: false,
            timer: None,
        });
        NodeId(self.nodes.len() - 1)
    }

    /// Adds a [`FakeRedis`] listening on `listen`; its stream ids count milliseconds of
    /// virtual time from the simulation's start.
    pub fn add_fake_redis(&mut self, listen: SocketAddr) -> NodeId {
        let fake = FakeRedis::new(self.start);
        self.add_service(listen, Box::new(fake))
    }

    /// The node's service, if it is an `S`. What it queues (if a test makes it send) goes
    /// out at the next step of the simulation.
    pub fn service<S: Service>(&mut self, node: NodeId) -> Option<&mut S> {
        let s = self.nodes[node.0].service()?;
        let any: &mut dyn Any = s.service.as_mut();
        any.downcast_mut::<S>()
    }

    /// The node's fake Redis. Panics if the node is not one.
    #[track_caller]
    pub fn fake_redis(&mut self, node: NodeId) -> &mut FakeRedis {
        self.service::<FakeRedis>(node)
            .expect("the node is not a fake Redis")
    }

    /// Restarts a killed service node at its address, with what it kept across the crash
    /// (see [`Service::handle_killed`]); nothing happens to a live one. Panics for an
    /// engine node: an engine's state dies with it (add a new node instead).
    #[track_caller]
    pub fn restart(&mut self, node: NodeId) {
        let n = &mut self.nodes[node.0];
        assert!(
            matches!(n.role, Role::Service(_)),
            "only a service node can be restarted"
        );
        n.alive = true;
    }

    /// The node's engine, for application commands. Its outputs are collected at the next
    /// step of the simulation. Panics for a service node.
    #[track_caller]
    pub fn engine(&mut self, node: NodeId) -> &mut Engine {
        self.nodes[node.0].touched()
    }

    /// The node's engine, to look at (unlike [`engine`](Self::engine), this does not make
    /// the next step collect its outputs). Panics for a service node.
    #[track_caller]
    pub fn engine_ref(&self, node: NodeId) -> &Engine {
        self.nodes[node.0].engine_ref()
    }

    /// Drops the events the node's engine produced so far, keeping their memory for the
    /// next ones (for runs that do not look at them).
    pub fn clear_events(&mut self, node: NodeId) {
        self.nodes[node.0].events.clear();
    }

    /// Takes the events the node's engine produced so far.
    pub fn take_events(&mut self, node: NodeId) -> Vec<Event> {
        std::mem::take(&mut self.nodes[node.0].events)
    }

    /// Events produced so far, without taking them.
    pub fn events(&self, node: NodeId) -> &[Event] {
        &self.nodes[node.0].events
    }

    /// Accepted connections so far: when, and by which node.
    pub fn accepts(&self) -> &[(Instant, usize)] {
        &self.accepts
    }

    /// Whether the node is alive.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.nodes[node.0].alive
    }

    // ------------------------------------------------------------- faults

    /// The link carrying the node's connection `conn`, if any.
    pub fn link_of(&self, node: NodeId, conn: ConnId) -> Option<LinkId> {
        self.nodes[node.0].ends.get(conn).map(|(l, _)| l)
    }

    /// Links of a node, in creation order.
    pub fn links_of(&self, node: NodeId) -> Vec<LinkId> {
        let mut v = self.nodes[node.0].links();
        v.sort_by_key(|l| l.0);
        v
    }

    /// The link silently stops carrying bytes both ways; neither end is told (half-open).
    pub fn stall(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(link.0) {
            l.stalled = true;
        }
    }

    /// Every link of the node stalls, and so do its future connections' handshakes: a
    /// machine that vanished from the network without closing anything.
    pub fn stall_node(&mut self, node: NodeId) {
        for l in self.links_of(node) {
            self.stall(l);
        }
        for other in 0..self.nodes.len() {
            if other != node.0 {
                self.partition(node, NodeId(other));
            }
        }
    }

    /// Both ends see the connection fail at once.
    pub fn reset(&mut self, link: LinkId) {
        let Some(l) = self.links.remove(link.0) else {
            return;
        };
        for end in l.ends {
            self.end_closed(end);
        }
    }

    /// The node closes its end of `conn` (FIN) without its engine knowing: the peer sees
    /// the end after the bytes already in flight; the node's engine sees its connection
    /// fail.
    pub fn fin(&mut self, node: NodeId, conn: ConnId) {
        if let Some((link, side)) = self.nodes[node.0].ends.remove(conn) {
            if self.links.contains(link.0) {
                self.schedule_fin(link.0, side);
            }
            self.nodes[node.0].touched().handle_closed(conn, self.now);
        }
    }

    /// No bytes and no new connections between `a` and `b` (both ways) until healed.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.partitions.push((a.0, b.0));
        let stalled: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| self.between(l, a.0, b.0))
            .map(|(i, _)| i)
            .collect();
        for i in stalled {
            if let Some(l) = self.links.get_mut(i) {
                l.stalled = true;
            }
        }
    }

    /// Removes every partition (stalled links stay stalled: TCP would have given up).
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// Kills the node like `kill -9`: its kernel resets every connection (peers see them
    /// fail), its listener is gone (connects are refused), and an engine never runs again
    /// (a service can be [restarted](Self::restart)).
    pub fn kill(&mut self, node: NodeId) {
        self.nodes[node.0].alive = false;
        // In link order, so that the same seed gives the same run.
        for l in self.links_of(node) {
            let Some(link) = self.links.remove(l.0) else {
                continue;
            };
            for end in link.ends {
                match end {
                    End::Engine { node: n, .. } | End::Service { node: n, .. } if n == node.0 => {}
                    other => self.end_closed(other),
                }
            }
        }
        self.nodes[node.0].ends.clear();
        let now = self.now;
        if let Role::Service(s) = &mut self.nodes[node.0].role {
            s.ends.clear();
            s.service.handle_killed(now);
        }
    }

    /// Makes a live node's listener refuse (or accept again).
    pub fn refuse(&mut self, node: NodeId, refusing: bool) {
        self.nodes[node.0].refusing = refusing;
    }

    // ------------------------------------------------------------- raw peers

    /// Opens a raw connection to `addr`: the test writes bytes with [`Sim::raw_send`] and
    /// reads what arrived with [`Sim::raw_received`]. It reads only while
    /// [`Sim::raw_set_reading`] says so (default: reading).
    pub fn raw_connect(&mut self, addr: SocketAddr) -> RawId {
        let raw = self.raws.len();
        self.raws.push(Raw {
            link: None,
            unread: BytesMut::new(),
            received: Vec::new(),
            reading: true,
            closed: false,
        });
        let target = self
            .nodes
            .iter()
            .position(|n| n.alive && !n.refusing && n.listen == Some(addr));
        match target.and_then(|t| self.accept(t)) {
            Some(server) => {
                let link = self.links.insert(Link {
                    ends: [End::Raw { raw }, server],
                    used: [0, 0],
                    last_arrival: [self.now_us; 2],
                    stalled: false,
                });
                self.bind(server, LinkId(link), 1);
                self.raws[raw].link = Some(LinkId(link));
            }
            None => self.raws[raw].closed = true,
        }
        self.pump();
        RawId(raw)
    }

    /// Writes bytes from a raw peer (dropped if its connection is closed).
    pub fn raw_send(&mut self, raw: RawId, bytes: &[u8]) {
        if let Some(link) = self.raws[raw.0].link {
            if self.links.contains(link.0) {
                self.send_on(link.0, 0, BytesMut::from(bytes));
            }
        }
    }

    /// Closes a raw peer's connection (FIN).
    pub fn raw_close(&mut self, raw: RawId) {
        if let Some(link) = self.raws[raw.0].link.take() {
            if self.links.contains(link.0) {
                self.schedule_fin(link.0, 0);
            }
        }
        self.raws[raw.0].closed = true;
    }

    /// Whether the raw peer reads what arrives.
    pub fn raw_set_reading(&mut self, raw: RawId, reading: bool) {
        self.raws[raw.0].reading = reading;
        if reading {
            self.raw_read(raw.0);
        }
    }

    /// Bytes the raw peer has read so far.
    pub fn raw_received(&self, raw: RawId) -> &[u8] {
        &self.raws[raw.0].received
    }

    /// Whether the raw peer's connection was closed (by either side).
    pub fn raw_closed(&self, raw: RawId) -> bool {
        self.raws[raw.0].closed
    }

    // ------------------------------------------------------------- running

    /// Runs until the virtual clock reaches `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_us.saturating_add(micros_ceil(d));
        self.run_until_time(end);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time
    /// passes; returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now_us.saturating_add(micros_ceil(limit));
        self.pump();
        loop {
            if done(self) {
                return true;
            }
            // `done` may have given an engine a command.
            self.pump();
            match self.next_time() {
                Some(t) if t <= end => self.step(t),
                _ => {
                    self.set_time(end);
                    return done(self);
                }
            }
        }
    }

    fn run_until_time(&mut self, end: Micros) {
        self.pump();
        while let Some(t) = self.next_time().filter(|&t| t <= end) {
            self.step(t);
        }
        self.set_time(end);
        // Timers due exactly at `end` run now.
        self.step(self.now_us);
    }

    fn set_time(&mut self, t: Micros) {
        if t > self.now_us {
            self.now_us = t;
            self.now = self.start + Duration::from_micros(t);
        }
    }

    fn next_time(&self) -> Option<Micros> {
        let net = self.queue.keys().next().copied();
        // Rounded up, so that the step at that microsecond finds the timer due.
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.timer)
            .min()
            .map(|t| micros_ceil(t.saturating_duration_since(self.start)));
        match (net, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn step(&mut self, t: Micros) {
        self.set_time(t);
        while self
            .queue
            .keys()
            .next()
            .is_some_and(|&at| at <= self.now_us)
        {
            if let Some((_, mut actions)) = self.queue.pop_first() {
                for action in actions.drain(..) {
                    self.apply(action);
                }
                self.buckets.push(actions);
            }
        }
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.alive && n.timer.is_some_and(|t| t <= self.now) {
                n.touched().handle_timeout(self.now);
            }
        }
        self.pump();
    }

    /// Keeps a delivered write's buffer for the next one, within `SPARE_BYTES_MAX`.
    fn recycle(&mut self, mut bytes: BytesMut) {
        if self.spare_bytes + bytes.capacity() <= SPARE_BYTES_MAX {
            self.spare_bytes += bytes.capacity();
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    fn schedule(&mut self, at: Micros, action: Action) {
        let buckets = &mut self.buckets;
        self.queue
            .entry(at)
            .or_insert_with(|| buckets.pop().unwrap_or_default())
            .push(action);
    }

    /// A delay from the configured range, in whole microseconds: deliveries drawn in the
    /// same step then share arrival instants, and one step of the simulation handles them
    /// all (a burst of 100k pings costs hundreds of steps, not 100k).
    fn delay(&mut self) -> Micros {
        let (lo, hi) = self.net.delay;
        let lo = micros_ceil(lo);
        let span = micros_ceil(hi).saturating_sub(lo);
        lo + self.rng.up_to(span)
    }

    fn between(&self, l: &Link, a: usize, b: usize) -> bool {
        let nodes: Vec<usize> = l
            .ends
            .iter()
            .filter_map(|e| match e {
                End::Engine { node, .. } | End::Service { node, .. } => Some(*node),
                End::Raw { .. } => None,
            })
            .collect();
        nodes.contains(&a) && nodes.contains(&b)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partitions
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    }

    /// Moves every engine's outputs into the network until nothing is left to move.
    /// Only engines that had an input since their last collection are visited: a step
    /// costs what happened in it, not a visit of every node. Returns when no engine has
    /// uncollected output (writes the window holds back stay in `blocked`).
    fn pump(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].dirty || !self.nodes[i].alive {
                    continue;
                }
                if let Role::Service(_) = self.nodes[i].role {
                    self.pump_service(i);
                    continue;
                }
                // Writing (`handle_sent`) may queue more output: drain until nothing is left.
                loop {
                    let mut moved = false;
                    while let Some(io) = self.nodes[i].engine_mut().poll_io() {
                        moved = true;
                        self.on_io(i, io);
                    }
                    while let Some(conn) = self.nodes[i].engine_mut().poll_transmit() {
                        moved = true;
                        self.transmit(i, conn);
                    }
                    if !moved {
                        break;
                    }
                }
                let n = &mut self.nodes[i];
                n.dirty = false;
                let Role::Engine(engine) = &mut n.role else {
                    continue;
                };
                while let Some(e) = engine.poll_event() {
                    n.events.push(e);
                }
                n.timer = engine.poll_timeout();
            }
            let blocked = std::mem::take(&mut self.blocked);
            for (node, conn) in blocked {
                if self.nodes[node].alive {
                    self.transmit(node, conn);
                }
            }
            // What a node's output did to another node (an accept, say) or a blocked write
            // that went out (`handle_sent`) leaves that node dirty: go round again.
            if !self.nodes.iter().any(|n| n.dirty && n.alive) {
                break;
            }
        }
    }

    /// Moves a service's output into the network.
    fn pump_service(&mut self, node: usize) {
        self.nodes[node].dirty = false;
        loop {
            let Role::Service(s) = &mut self.nodes[node].role else {
                return;
            };
            let Some(out) = s.service.poll_output() else {
                return;
            };
            match out {
                ServiceOutput::Send { conn, bytes } => {
                    if let Some((link, side)) = s.end(conn) {
                        if !bytes.is_empty() {
                            self.send_on(link.0, side, bytes);
                        }
                    }
                }
                ServiceOutput::Close { conn } => {
                    if let Some((link, side)) = s.remove(conn) {
                        if self.links.contains(link.0) {
                            self.schedule_fin(link.0, side);
                        }
                    }
                }
            }
        }
    }

    /// The node `to` accepts a connection: its end of the new link, or `None` if it cannot
    /// take one now.
    fn accept(&mut self, to: usize) -> Option<End> {
        let now = self.now;
        let n = &mut self.nodes[to];
        if !n.alive || n.refusing {
            return None;
        }
        let end = match n.role {
            Role::Engine(_) => End::Engine {
                node: to,
                conn: n.touched().handle_accept(now).ok()?,
            },
            Role::Service(_) => {
                let s = n.service()?;
                let conn = ServiceConn(s.next_conn);
                s.next_conn += 1;
                s.service.handle_accept(conn, now);
                End::Service { node: to, conn }
            }
        };
        self.accepts.push((now, to));
        Some(end)
    }

    /// Records that a node's (engine or service) end `end` is side `side` of `link`.
    fn bind(&mut self, end: End, link: LinkId, side: usize) {
        match end {
            End::Engine { node, conn } => self.nodes[node].ends.insert(conn, link, side),
            End::Service { node, conn } => {
                if let (Role::Service(s), Ok(i)) =
                    (&mut self.nodes[node].role, usize::try_from(conn.0))
                {
                    if s.ends.len() <= i {
                        s.ends.resize(i + 1, None);
                    }
                    s.ends[i] = Some((link, side));
                }
            }
            End::Raw { .. } => {}
        }
    }

    fn on_io(&mut self, node: usize, io: Io) {
        match io {
            Io::Connect { conn, addr } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.listen == Some(addr) && n.alive);
                let at = self.now_us + self.delay() + self.delay();
                match target {
                    Some(t) if self.partitioned(node, t) => {} // SYN lost: the engine times out
                    Some(t) if !self.nodes[t].refusing => self.schedule(
                        at,
                        Action::Connect {
                            from: node,
                            conn,
                            to: t,
                        },
                    ),
                    _ => self.schedule(at, Action::Refused { from: node, conn }),
                }
            }
            Io::Close { conn } => {
                if let Some((link, side)) = self.nodes[node].ends.remove(conn) {
                    if self.links.contains(link.0) {
                        self.schedule_fin(link.0, side);
                    }
                }
            }
        }
    }

    /// Moves as much of the connection's output into the link as its window allows.
    fn transmit(&mut self, node: usize, conn: ConnId) {
        let Some((link, side)) = self.nodes[node].ends.get(conn) else {
            // Not connected (yet, or any more): the bytes have nowhere to go.
            return;
        };
        let Some(l) = self.links.get(link.0) else {
            return;
        };
        let room = self.net.window.saturating_sub(l.used[side]);
        let out = self.nodes[node].engine_mut().outbound(conn);
        let n = out.len().min(room);
        if n > 0 {
            let mut bytes = match self.spare.pop() {
                Some(b) => {
                    self.spare_bytes -= b.capacity();
                    b
                }
                None => BytesMut::with_capacity(n.max(64)),
            };
            bytes.extend_from_slice(&out[..n]);
            self.nodes[node].touched().handle_sent(conn, n, self.now);
            self.send_on(link.0, side, bytes);
        }
        if !self.nodes[node].engine_mut().outbound(conn).is_empty() {
            self.blocked.push((node, conn));
        }
    }

    fn send_on(&mut self, link: usize, dir: usize, bytes: BytesMut) {
        let delay = self.delay();
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.stalled {
            // The bytes left the sender's kernel and vanish: the sender cannot tell.
            return;
        }
        l.used[dir] += bytes.len();
        let at = (self.now_us + delay).max(l.last_arrival[dir]);
        l.last_arrival[dir] = at;
        self.schedule(at, Action::Deliver { link, dir, bytes });
    }

    fn schedule_fin(&mut self, link: usize, dir: usize) {
        let delay = self.delay();
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.stalled {
            return;
        }
        let at = (self.now_us + delay).max(l.last_arrival[dir]);
        l.last_arrival[dir] = at;
        self.schedule(at, Action::Fin { link, dir });
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Deliver { link, dir, bytes } => {
                let Some(l) = self.links.get_mut(link) else {
                    return;
                };
                if l.stalled {
                    return;
                }
                let to = l.ends[1 - dir];
                match to {
                    End::Engine { node, conn } => {
                        l.used[dir] -= bytes.len();
                        if self.nodes[node].alive {
                            self.nodes[node]
                                .touched()
                                .handle_read(conn, &bytes, self.now);
                        }
                    }
                    End::Service { node, conn } => {
                        l.used[dir] -= bytes.len();
                        let now = self.now;
                        let n = &mut self.nodes[node];
                        if n.alive {
                            if let Some(s) = n.service() {
                                s.service.handle_read(conn, &bytes, now);
                            }
                        }
                    }
                    End::Raw { raw } => {
                        self.raws[raw].unread.extend_from_slice(&bytes);
                        self.raw_read(raw);
                    }
                }
                self.recycle(bytes);
            }
            Action::Fin { link, dir } => {
                let Some(l) = self.links.remove(link) else {
                    return;
                };
                // TCP would deliver the FIN one way; both our ends treat it as the end.
                for (i, end) in l.ends.into_iter().enumerate() {
                    if i != dir {
                        self.end_closed(end);
                    } else if let End::Engine { node, conn } = end {
                        self.nodes[node].ends.remove(conn);
                    } else if let End::Service { node, conn } = end {
                        if let Role::Service(s) = &mut self.nodes[node].role {
                            s.remove(conn);
                        }
                    } else if let End::Raw { raw } = end {
                        self.raws[raw].link = None;
                        self.raws[raw].closed = true;
                    }
                }
            }
            Action::Connect { from, conn, to } => {
                if !self.nodes[from].alive {
                    return;
                }
                let Some(server) = self.accept(to) else {
                    return self.nodes[from].touched().handle_connect_failed(
                        conn,
                        "connection refused (simulated)",
                        self.now,
                    );
                };
                let link = self.links.insert(Link {
                    ends: [End::Engine { node: from, conn }, server],
                    used: [0, 0],
                    last_arrival: [self.now_us; 2],
                    stalled: false,
                });
                self.nodes[from].ends.insert(conn, LinkId(link), 0);
                self.bind(server, LinkId(link), 1);
                self.nodes[from].touched().handle_connected(conn, self.now);
            }
            Action::Refused { from, conn } => {
                if self.nodes[from].alive {
                    self.nodes[from].touched().handle_connect_failed(
                        conn,
                        "connection refused (simulated)",
                        self.now,
                    );
                }
            }
        }
    }

    fn end_closed(&mut self, end: End) {
        match end {
            End::Engine { node, conn } => {
                self.nodes[node].ends.remove(conn);
                if self.nodes[node].alive {
                    self.nodes[node].touched().handle_closed(conn, self.now);
                }
            }
            End::Service { node, conn } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                let alive = n.alive;
                if let Some(s) = n.service() {
                    if s.remove(conn).is_some() && alive {
                        s.service.handle_closed(conn, now);
                    }
                }
            }
            End::Raw { raw } => {
                self.raws[raw].link = None;
                self.raws[raw].closed = true;
            }
        }
    }

    fn raw_read(&mut self, raw: usize) {
        let r = &mut self.raws[raw];
        if !r.reading || r.unread.is_empty() {
            return;
        }
        let n = r.unread.len();
        r.received.extend_from_slice(&r.unread);
        r.unread.advance(n);
        if let Some(link) = r.link {
            if let Some(l) = self.links.get_mut(link.0) {
                l.used[1] = l.used[1].saturating_sub(n);
            }
        }
    }
}

/// `d` in whole microseconds, rounded up (saturating after 584,000 years).
fn micros_ceil(d: Duration) -> Micros {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000)))
}
