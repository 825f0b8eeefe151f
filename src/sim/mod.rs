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
mod faults;
mod net;
mod raw;

pub use fake_redis::FakeRedis;

use crate::config::{Config, ConfigError};
use crate::engine::{ConnId, Engine, Event};
use crate::rng::Rng;
use bytes::BytesMut;
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
}

/// `d` in whole microseconds, rounded up (saturating after 584,000 years).
fn micros_ceil(d: Duration) -> Micros {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000)))
}
