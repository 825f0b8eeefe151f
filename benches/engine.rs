//! The real engine at 100k connections, driven by the simulation driver (in-memory links,
//! virtual clock): both ends of every connection live in this process, so each figure
//! counts the server's and the client's work, plus the simulated network's.
//!
//! Run: `cargo bench --bench engine`. `LIVELINE_BENCH_CONNS` overrides the 100,000.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liveline::config::Config;
use liveline::engine::{ClientConfig, ClientId, ClientState};
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

/// `n` clients on one node, all connected to the first of `servers` servers.
fn world(n: usize, servers: usize) -> World {
    let mut sim = Sim::new(1, Instant::now(), NetConfig::default());
    let server_nodes: Vec<NodeId> = (0..servers)
        .map(|i| sim.add_node(config(), Some(addr(i))))
        .collect();
    let clients = sim.add_node(config(), None);
    let now = sim.now();
    let list: Vec<SocketAddr> = (0..servers).map(addr).collect();
    let ids = (0..n)
        .map(|i| {
            sim.engine(clients).add_client(
                ClientConfig {
                    identity: Text::from(format!("u{i}")),
                    token: bytes::Bytes::new(),
                    servers: list.clone(),
                    instance: Some(i as u64 + 1),
                },
                now,
            )
        })
        .collect();
    World {
        sim,
        servers: server_nodes,
        clients,
        ids,
    }
}

impl World {
    fn all_active(&mut self) -> bool {
        let engine = self.sim.engine(self.clients);
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
            let e = s.engine(clients);
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
    // -> idle bookkeeping on both ends.
    g.bench_function("heartbeat_round", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                w.sim.run_for(ping);
            }
            let took = start.elapsed();
            w.sim.clear_events(w.clients);
            took
        })
    });

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
