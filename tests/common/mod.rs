//! Shared scaffolding for the simulation tests: a few servers, one client node, helpers to
//! read what happened.
#![allow(dead_code)]

pub mod pki;
pub mod process;
pub mod redis;

use bytes::{Bytes, BytesMut};
use liveline::codec::{Decoder, Encoder};
use liveline::config::Config;
use liveline::engine::{ClientConfig, ClientEvent, ClientId, ClientState, Event, ServerEvent};
use liveline::frame::{Code, Frame, Hello, Reason, Text, PROTOCOL_VERSION};
use liveline::sim::{NetConfig, NodeId, Sim};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The fixed seeds every deterministic test runs over.
pub const SEEDS: [u64; 8] = [1, 2, 3, 5, 8, 13, 21, 0xDEAD_BEEF];
pub const SECOND: Duration = Duration::from_secs(1);
/// Longest one-way trip in the default network, twice (a request and its answer).
pub const MAX_NET: Duration = Duration::from_millis(1);

/// A client: the node its engine runs on and its id there.
pub type ClientRef = (NodeId, ClientId);

pub fn default_config() -> Config {
    Config::default()
}

pub struct World {
    pub sim: Sim,
    pub servers: Vec<NodeId>,
    pub addrs: Vec<SocketAddr>,
    pub clients: NodeId,
}

impl World {
    /// `n` servers on 127.0.0.1:9000.. and one node for clients, all with `cfg`.
    pub fn new(seed: u64, n: usize, cfg: Config) -> World {
        World::with_configs(seed, n, cfg.clone(), cfg)
    }

    /// Like [`World::new`], with the servers and the client node configured apart.
    pub fn with_configs(seed: u64, n: usize, server_cfg: Config, client_cfg: Config) -> World {
        let mut sim = Sim::new(seed, Instant::now(), NetConfig::default());
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
            .collect();
        let servers = addrs
            .iter()
            .map(|&a| {
                sim.add_node(server_cfg.clone(), Some(a))
                    .expect("valid config")
            })
            .collect();
        let clients = sim.add_node(client_cfg, None).expect("valid config");
        World {
            sim,
            servers,
            addrs,
            clients,
        }
    }

    /// A client named `name` with the listed servers (indices into `addrs`).
    pub fn client(&mut self, name: &str, servers: &[usize]) -> ClientRef {
        let cfg = ClientConfig {
            identity: Text::from(name.to_string()),
            token: Bytes::new(),
            servers: servers.iter().map(|&i| self.addrs[i]).collect(),
            instance: None,
        };
        let now = self.sim.now();
        (
            self.clients,
            self.sim
                .engine(self.clients)
                .add_client(cfg, now)
                .expect("valid client"),
        )
    }

    pub fn send(&mut self, client: ClientRef, payload: &[u8]) -> u64 {
        self.sim
            .engine(client.0)
            .client_send_message(client.1, Bytes::copy_from_slice(payload))
            .expect("window has room")
    }

    /// Index of the server the client is connected to.
    pub fn server_of(&mut self, client: ClientRef) -> Option<usize> {
        let info = self.sim.engine_ref(client.0).client_info(client.1)?;
        if info.state != ClientState::Active {
            return None;
        }
        let addr = info.server?;
        self.addrs.iter().position(|&a| a == addr)
    }
}

pub fn active(s: &mut Sim, client: ClientRef) -> bool {
    s.engine_ref(client.0)
        .client_info(client.1)
        .is_some_and(|i| i.state == ClientState::Active)
}

pub fn acked(s: &mut Sim, client: ClientRef, id: u64) -> bool {
    s.events(client.0)
        .iter()
        .any(|e| matches!(e, Event::Client(ClientEvent::Acked { client: c, id: i }) if *c == client.1 && *i == id))
}

/// Payloads of reliable messages the node's server sessions handed over, in order.
pub fn messages(s: &Sim, node: NodeId) -> Vec<Vec<u8>> {
    s.events(node)
        .iter()
        .filter_map(|e| match e {
            Event::Server(ServerEvent::Message { payload, .. }) => Some(payload.to_vec()),
            _ => None,
        })
        .collect()
}

/// The reason of the node's first session close.
pub fn closed_reason(s: &Sim, node: NodeId) -> Option<Reason> {
    s.events(node).iter().find_map(|e| match e {
        Event::Server(ServerEvent::Closed { reason, .. }) => Some(reason.clone()),
        _ => None,
    })
}

pub fn hello_bytes(identity: &str, instance: u64, attempt: u32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let hello = Frame::Hello(Box::new(Hello {
        version: PROTOCOL_VERSION,
        instance,
        attempt,
        identity: Text::from(identity.to_string()),
        token: Bytes::new(),
    }));
    Encoder::default().encode(&hello, &mut buf).unwrap();
    buf.to_vec()
}

/// Frames in `bytes`, up to the first undecodable one.
pub fn frames_in(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut dec = Decoder::default();
    let mut out = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut buf) {
        out.push(f);
    }
    out
}

pub fn starts_with_welcome(bytes: &[u8]) -> bool {
    matches!(frames_in(bytes).first(), Some(Frame::Welcome(_)))
}

pub fn error_code_in(bytes: &[u8]) -> Option<Code> {
    error_code(&frames_in(bytes))
}

/// The code of the first ERROR frame among `frames`.
pub fn error_code(frames: &[Frame]) -> Option<Code> {
    frames.iter().find_map(|f| match f {
        Frame::Error(r) => Some(r.code),
        _ => None,
    })
}
