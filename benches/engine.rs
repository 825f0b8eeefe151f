//! The real engine at 100k connections, driven by the simulation driver (in-memory links,
//! virtual clock): both ends of every connection live in this process, so each figure
//! counts the server's and the client's work, plus the simulated network's.
//!
//! Run: `cargo bench --bench engine`. `LIVELINE_BENCH_CONNS` overrides the 100,000.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use liveline::config::Config;
use liveline::engine::{
    ClientConfig, ClientEvent, ClientId, ClientState, ConnId, Engine, Event, Io,
};
use liveline::frame::Text;
use liveline::sim::{NetConfig, NodeId, Sim};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn conns() -> usize {
    std::env::var("LIVELINE_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn config() -> Config {
    Config {
        max_connections: 1_000_000,
        ..Config::default()
    }
}

struct World {
    sim: Sim,
    servers: Vec<NodeId>,
    clients: NodeId,
    ids: Vec<ClientId>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

/// `n` clients on one node, all connected to the first of `servers` servers, all
/// created at the same instant.
fn world(n: usize, servers: usize) -> World {
    world_over(n, servers, Duration::ZERO)
}

/// Like [`world`], but the clients are created in 1,000 equal batches spread over
/// `spread` of virtual time (the simulation runs between batches), as clients that come
/// and go over time: their heartbeats are then spread over the ping interval too.
fn world_over(n: usize, servers: usize, spread: Duration) -> World {
    let mut sim = Sim::new(1, Instant::now(), net());
    let server_nodes: Vec<NodeId> = (0..servers)
        .map(|i| sim.add_node(config(), Some(addr(i))).expect("valid config"))
        .collect();
    let clients = sim.add_node(config(), None).expect("valid config");
    let list: Vec<SocketAddr> = (0..servers).map(addr).collect();
    let batches = if spread.is_zero() { 1 } else { 1000 };
    let mut ids = Vec::with_capacity(n);
    for batch in 0..batches {
        let now = sim.now();
        for i in batch * n / batches..(batch + 1) * n / batches {
            ids.push(
                sim.engine(clients)
                    .add_client(
                        ClientConfig {
                            identity: Text::from(format!("u{i}")),
                            token: bytes::Bytes::new(),
                            servers: list.clone(),
                            instance: Some(i as u64 + 1),
                        },
                        now,
                    )
                    .expect("valid client"),
            );
        }
        if !spread.is_zero() {
            sim.run_for(spread / batches as u32);
            sim.clear_events(clients);
        }
    }
    World {
        sim,
        servers: server_nodes,
        clients,
        ids,
    }
}

impl World {
    fn all_active(&mut self) -> bool {
        let engine = self.sim.engine_ref(self.clients);
        self.ids.iter().all(|&c| {
            engine
                .client_info(c)
                .is_some_and(|i| i.state == ClientState::Active)
        })
    }

    fn settle(&mut self) {
        let clients = self.clients;
        let ids = self.ids.clone();
        let done = self.sim.run_until(Duration::from_secs(60), |s| {
            let e = s.engine_ref(clients);
            ids.iter().all(|&c| {
                e.client_info(c)
                    .is_some_and(|i| i.state == ClientState::Active)
            })
        });
        assert!(done, "not all clients became active");
        // Events are not what is measured; drop them so memory stays flat.
        for &s in &self.servers {
            self.sim.clear_events(s);
        }
        self.sim.clear_events(self.clients);
    }
}

/// A client engine and a server engine joined directly: whatever one queues for a
/// connection is handed to the other end's `handle_read` at once. No simulated network
/// (no delays, windows or queues): what it costs is the engines' own work.
struct Direct {
    client: Engine,
    server: Engine,
    /// The peer of each connection, by slot index: `[client side, server side]`.
    peer: [Vec<Option<ConnId>>; 2],
    now: Instant,
    /// Reused between moves, as a reactor reuses its write buffer.
    scratch: Vec<u8>,
    rtts: usize,
}

impl Direct {
    /// `n` connected pairs. With `shuffled`, the server accepts them in a random order, so
    /// that a client's neighbours in memory are not its server session's neighbours and
    /// every delivery lands on a cold session; otherwise both sides lie in the same order,
    /// as when heartbeats follow connection order.
    fn new(n: usize, shuffled: bool) -> Direct {
        let now = Instant::now();
        let mut d = Direct {
            client: Engine::with_seed(config(), now, 1).expect("valid config"),
            server: Engine::with_seed(config(), now, 2).expect("valid config"),
            peer: [vec![None; n], vec![None; n]],
            now,
            scratch: Vec::new(),
            rtts: 0,
        };
        for i in 0..n {
            d.client
                .add_client(
                    ClientConfig {
                        identity: Text::from(format!("u{i}")),
                        token: bytes::Bytes::new(),
                        servers: vec![addr(0)],
                        instance: Some(i as u64 + 1),
                    },
                    now,
                )
                .expect("valid client");
        }
        let mut connects = Vec::with_capacity(n);
        while let Some(io) = d.client.poll_io() {
            if let Io::Connect { conn, .. } = io {
                connects.push(conn);
            }
        }
        if shuffled {
            // Fisher-Yates from a fixed seed: the same order every run.
            let mut rng = liveline::rng::Rng::new(0x5eed);
            for i in (1..connects.len()).rev() {
                connects.swap(i, rng.up_to(i as u64) as usize);
            }
        }
        for conn in connects {
            let s = d.server.handle_accept(now).expect("under the limit");
            d.client.handle_connected(conn, now);
            d.link(conn, s);
        }
        d.flush();
        d
    }

    fn link(&mut self, c: ConnId, s: ConnId) {
        for (side, (at, to)) in [(c, s), (s, c)].into_iter().enumerate() {
            let table = &mut self.peer[side];
            if table.len() <= at.index() {
                table.resize(at.index() + 1, None);
            }
            table[at.index()] = Some(to);
        }
    }

    /// Moves bytes both ways until neither engine has any to send.
    fn flush(&mut self) {
        loop {
            let moved = self.carry(true) | self.carry(false);
            while let Some(e) = self.client.poll_event() {
                self.rtts += usize::from(matches!(e, Event::Client(ClientEvent::Rtt { .. })));
            }
            while self.server.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }

    /// Moves what one side's connections have queued to the other side.
    fn carry(&mut self, from_client: bool) -> bool {
        let (from, to, side) = if from_client {
            (&mut self.client, &mut self.server, 0)
        } else {
            (&mut self.server, &mut self.client, 1)
        };
        let mut moved = false;
        while let Some(conn) = from.poll_transmit() {
            let Some(peer) = self.peer[side].get(conn.index()).copied().flatten() else {
                continue;
            };
            self.scratch.clear();
            self.scratch.extend_from_slice(from.outbound(conn));
            from.handle_sent(conn, self.scratch.len(), self.now);
            to.handle_read(peer, &self.scratch, self.now);
            moved = true;
        }
        moved
    }

    /// Runs both engines' timers tick by tick for `d`, moving bytes after each tick.
    fn run_for(&mut self, d: Duration) {
        let tick = config().tick;
        let end = self.now + d;
        while self.now < end {
            self.now += tick;
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.flush();
            // A mass expiry is handled in batches: come back while more are due.
            while self.client.poll_timeout().is_some_and(|t| t <= self.now)
                || self.server.poll_timeout().is_some_and(|t| t <= self.now)
            {
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
                self.flush();
            }
        }
    }
}

/// Times rounds of one ping interval, checking that they bring one RTT per client each.
fn heartbeat(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, w: &mut World, n: usize) {
    let ping = config().ping_interval;
    // Rounds then start half an interval away from the heartbeats of clients that all
    // connected at once, so that each round holds exactly one of theirs.
    w.sim.run_for(ping + ping / 2);
    w.sim.clear_events(w.clients);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let (mut took, mut rtts) = (Duration::ZERO, 0);
            for _ in 0..iters {
                let start = Instant::now();
                w.sim.run_for(ping);
                took += start.elapsed();
                // The application's part, untimed: look at the events, drop them.
                rtts += w
                    .sim
                    .events(w.clients)
                    .iter()
                    .filter(|e| matches!(e, Event::Client(ClientEvent::Rtt { .. })))
                    .count();
                w.sim.clear_events(w.clients);
            }
            // Within 1 %: a client's heartbeats come every ping interval plus up to two
            // ticks (the idle period is never cut short), so they drift across round
            // boundaries.
            let expected = n * iters as usize;
            assert!(
                rtts.abs_diff(expected) <= expected / 100,
                "one RTT per client per round: {rtts} for {expected}"
            );
            took
        })
    });
}

fn engine(c: &mut Criterion) {
    let n = conns();
    let ping = config().ping_interval;
    let mut g = c.benchmark_group(format!("engine/{n}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));

    // (a) connect + handshake storm.
    g.bench_function("connect_handshake_storm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = world(n, 1);
                let start = Instant::now();
                w.settle();
                total += start.elapsed();
            }
            total
        })
    });

    let mut w = world(n, 2);
    w.settle();
    assert!(w.all_active());

    // (b) one heartbeat round: every client is write idle -> PING -> PONG -> RTT sample
    // -> idle bookkeeping on both ends. First with every client's heartbeat due in the
    // same tick (all connected in the same millisecond), then with the heartbeats spread
    // over the interval (clients connected over ten seconds: the steady state of a server
    // whose clients come and go).
    heartbeat(&mut g, "heartbeat_round", &mut w, n);
    let mut spread = world_over(n, 2, ping);
    spread.settle();
    heartbeat(&mut g, "heartbeat_round_spread", &mut spread, n);
    drop(spread);

    // (b') the same round with the two engines joined directly: the engines' own share of
    // (b), with both sides in connection order, then with the server's sessions shuffled.
    for (name, shuffled) in [
        ("heartbeat_round_direct", false),
        ("heartbeat_round_direct_shuffled", true),
    ] {
        let mut direct = Direct::new(n, shuffled);
        direct.run_for(ping);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let before = direct.rtts;
                let start = Instant::now();
                for _ in 0..iters {
                    direct.run_for(ping);
                }
                let took = start.elapsed();
                let rtts = direct.rtts - before;
                assert_eq!(rtts, n * iters as usize, "one RTT per client per round");
                took
            })
        });
    }

    // (c) steady messaging: every client sends one reliable message and gets its ack.
    g.bench_function("message_and_ack", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for &c in &w.ids {
                    w.sim
                        .engine(w.clients)
                        .client_send_message(c, bytes::Bytes::from_static(b"0123456789abcdef"))
                        .expect("window has room");
                }
                w.sim.run_for(Duration::from_millis(5));
                total += start.elapsed();
                for &s in &w.servers {
                    w.sim.clear_events(s);
                }
                w.sim.clear_events(w.clients);
            }
            total
        })
    });

    // (d) nothing happens: the cost of a quiet stretch shorter than any timer.
    g.bench_function("quiet_period", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                w.sim.run_for(Duration::from_millis(100));
            }
            start.elapsed()
        })
    });
    drop(w);

    // (e) the server dies: every client notices the reset, backs off and moves over.
    g.bench_function("server_kill_failover", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = world(n, 2);
                w.settle();
                let start = Instant::now();
                w.sim.kill(w.servers[0]);
                w.settle();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    targets = engine
}
criterion_main!(benches);

fn net() -> NetConfig {
    match std::env::var("LIVELINE_BENCH_DELAY_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(us) => NetConfig {
            delay: (Duration::from_micros(us), Duration::from_micros(us)),
            ..NetConfig::default()
        },
        None => NetConfig::default(),
    }
}
