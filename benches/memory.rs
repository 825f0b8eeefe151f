//! Heap bytes per idle connection, counted by a counting global allocator: the engine's
//! own state for 100k idle connections, server side and client side, with the simulated
//! network's bookkeeping excluded (it is measured and subtracted separately).
//!
//! Run: `cargo bench --bench memory`. Prints a table; `LIVELINE_BENCH_CONNS` overrides the
//! 100,000.

use liveline::config::Config;
use liveline::engine::{ClientConfig, ClientEvent, Engine, Event, Io, ServerEvent};
use liveline::frame::Text;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[path = "support/counting.rs"]
mod counting;
use counting::{live, ALLOCS};

fn conns() -> usize {
    std::env::var("LIVELINE_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

type Pair = (liveline::engine::ConnId, liveline::engine::ConnId);

/// Moves `from`'s output for `f` into `to`'s connection `t`; whether anything moved.
fn carry(
    from: &mut Engine,
    f: liveline::engine::ConnId,
    to: &mut Engine,
    t: liveline::engine::ConnId,
    now: Instant,
) -> bool {
    // A reused scratch buffer, as the reactor's read buffer: the harness allocates nothing
    // once warm, so what the allocator counts in steady state is the engines' doing.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut out = scratch.borrow_mut();
        out.clear();
        out.extend_from_slice(from.outbound(f));
        if out.is_empty() {
            return false;
        }
        from.handle_sent(f, out.len(), now);
        to.handle_read(t, &out, now);
        true
    })
}

/// Heap allocations per message in steady state: every client sends a reliable message,
/// the server hands it over, acknowledges it and echoes it back as DATA; the client gets
/// the echo and the ACK. Read -> decode -> session -> encode -> write, both ways.
fn steady_state_allocations(pairs_n: usize, rounds: usize) -> f64 {
    let now = Instant::now();
    let cfg = Config {
        max_connections: 2 * pairs_n + 10,
        ..Config::default()
    };
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let mut server = Engine::with_seed(cfg.clone(), now, 1).expect("valid config");
    let mut client = Engine::with_seed(cfg, now, 2).expect("valid config");
    let ids: Vec<_> = (0..pairs_n)
        .map(|i| {
            client
                .add_client(
                    ClientConfig {
                        identity: Text::from(format!("s{i}")),
                        token: bytes::Bytes::new(),
                        servers: vec![addr],
                        instance: None,
                    },
                    now,
                )
                .expect("valid client")
        })
        .collect();
    let mut pairs = Vec::new();
    while let Some(io) = client.poll_io() {
        if let Io::Connect { conn, .. } = io {
            let s = server.handle_accept(now).expect("under the limit");
            client.handle_connected(conn, now);
            pairs.push((conn, s));
        }
    }
    pump(&mut client, &mut server, &pairs, now);
    let payload = bytes::Bytes::from_static(b"0123456789abcdef0123456789ab");
    let mut counted = 0;
    let mut messages = 0;
    for round in 0..rounds {
        let before = ALLOCS.load(Ordering::Relaxed);
        for &c in &ids {
            client
                .client_send_message(c, payload.clone())
                .expect("room");
        }
        // Move everything until quiet, echoing each message back.
        loop {
            let mut moved = false;
            for &(ca, cb) in &pairs {
                moved |= carry(&mut client, ca, &mut server, cb, now);
            }
            while server.poll_transmit().is_some() {}
            while let Some(e) = server.poll_event() {
                if let Event::Server(ServerEvent::Message { conn, payload, .. }) = e {
                    server.send_data(conn, &payload).expect("active");
                }
            }
            for &(ca, cb) in &pairs {
                moved |= carry(&mut server, cb, &mut client, ca, now);
            }
            while client.poll_transmit().is_some() {}
            while client.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
        // The first rounds warm the pools and queues up.
        if round >= 2 {
            counted += ALLOCS.load(Ordering::Relaxed) - before;
            messages += ids.len();
        }
    }
    counted as f64 / messages as f64
}

/// Moves bytes between two engines directly (no simulated network), so that what stays
/// allocated afterwards is the engines' own state.
fn pump(a: &mut Engine, b: &mut Engine, pairs: &[Pair], now: Instant) {
    loop {
        let mut moved = false;
        for &(ca, cb) in pairs {
            moved |= carry(a, ca, b, cb, now);
            moved |= carry(b, cb, a, ca, now);
        }
        while a.poll_transmit().is_some() {}
        while b.poll_transmit().is_some() {}
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = conns();
    let cfg = Config {
        max_connections: 2 * n + 10,
        ..Config::default()
    };
    let now = Instant::now();
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();

    let base = live();
    let mut server = Engine::with_seed(cfg.clone(), now, 1).expect("valid config");
    let mut client = Engine::with_seed(cfg, now, 2).expect("valid config");
    let empty = live() - base;

    // Client side: n clients, each asking for a connection.
    let mut connects = Vec::with_capacity(n);
    let before = live();
    let mut names: Vec<Text> = (0..n).map(|i| Text::from(format!("user{i:06}"))).collect();
    // The strings' own heap bytes, not the vector holding them.
    let names_bytes = live() - before - (names.capacity() * std::mem::size_of::<Text>()) as isize;
    for name in names.drain(..) {
        client
            .add_client(
                ClientConfig {
                    identity: name,
                    token: bytes::Bytes::new(),
                    servers: vec![addr],
                    instance: None,
                },
                now,
            )
            .expect("valid client");
    }
    while let Some(io) = client.poll_io() {
        if let Io::Connect { conn, .. } = io {
            connects.push(conn);
        }
    }
    while client.poll_event().is_some() {}

    // Both sides connect and complete the handshake.
    let mut pairs = Vec::with_capacity(n);
    for &c in &connects {
        let s = server.handle_accept(now).expect("under the limit");
        client.handle_connected(c, now);
        pairs.push((c, s));
    }
    pump(&mut client, &mut server, &pairs, now);
    // Idle: a little time passes with nothing to do; buffers are released.
    let later = now + Duration::from_millis(100);
    client.handle_timeout(later);
    server.handle_timeout(later);
    while server.poll_event().is_some() {}
    let mut active = 0;
    while let Some(e) = client.poll_event() {
        if matches!(e, Event::Client(ClientEvent::State { .. })) {
            active += 1;
        }
    }
    let _ = active;
    drop(connects);
    let pairs_bytes = (pairs.capacity() * std::mem::size_of_val(&pairs[0])) as isize;

    // Measure each side by dropping it and seeing what is returned.
    let total = live() - base - pairs_bytes - empty;
    let before = live();
    drop(server);
    let server_bytes = before - live();
    let before = live();
    drop(client);
    let client_bytes = before - live();
    let per = |b: isize| b as f64 / n as f64;
    println!("idle connections: {n}");
    println!("| side | heap bytes per idle connection | of which identity text |");
    println!("|---|---:|---:|");
    println!(
        "| server (connection + session record + wheel entry + identity index) | {:.0} | {:.0} |",
        per(server_bytes),
        per(names_bytes)
    );
    println!(
        "| client (connection + client record + wheel entry) | {:.0} | {:.0} |",
        per(client_bytes),
        per(names_bytes)
    );
    println!(
        "(both engines together held {:.0} bytes per connection pair)",
        per(total)
    );
    let allocs = steady_state_allocations(1000, 10);
    println!(
        "heap allocations per message in steady state (1,000 pairs, send -> handed over + ACK -> DATA echo): {allocs:.3}"
    );
    cluster_state(n);
    for n in [10_000, 19_990] {
        tls_idle(n);
    }
}

/// Heap per idle TLS connection, each side, with the TLS settings (shared by every
/// connection) made beforehand: `n` pairs complete the TLS and protocol handshakes between
/// two engines and go idle.
fn tls_idle(n: usize) {
    use liveline::engine::ClientTls;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let server_tls =
        liveline::tls::server_config(leaf.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
    let client_tls = ClientTls {
        config: liveline::tls::client_config(ca_cert.pem().as_bytes()).unwrap(),
        server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    };
    let cfg = Config {
        max_connections: 2 * n + 10,
        ..Config::default()
    };
    let now = Instant::now();
    let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let mut server = Engine::with_seed(cfg.clone(), now, 3).expect("valid config");
    let mut client = Engine::with_seed(cfg, now, 4).expect("valid config");
    for i in 0..n {
        let cfg = ClientConfig {
            identity: Text::from(format!("user{i:06}")),
            token: bytes::Bytes::new(),
            servers: vec![addr],
            instance: None,
        };
        client
            .add_client_tls(cfg, client_tls.clone(), now)
            .expect("valid client");
    }
    let mut pairs = Vec::with_capacity(n);
    while let Some(io) = client.poll_io() {
        if let Io::Connect { conn, .. } = io {
            let s = server
                .handle_accept_tls(server_tls.clone(), now)
                .expect("under the limit");
            client.handle_connected(conn, now);
            pairs.push((conn, s));
        }
    }
    pump(&mut client, &mut server, &pairs, now);
    let later = now + Duration::from_millis(100);
    client.handle_timeout(later);
    server.handle_timeout(later);
    pump(&mut client, &mut server, &pairs, later);
    let mut active = 0;
    while let Some(e) = client.poll_event() {
        if let Event::Client(ClientEvent::State {
            state: liveline::engine::ClientState::Active,
            ..
        }) = e
        {
            active += 1;
        }
    }
    assert_eq!(active, 0, "events were drained by the pump");
    let before = live();
    drop(server);
    let server_bytes = before - live();
    let before = live();
    drop(client);
    let client_bytes = before - live();
    println!(
        "TLS, {n} idle connections: server {:.0} B, client {:.0} B per connection (engine state and TLS state; the settings shared by all excluded)",
        server_bytes as f64 / n as f64,
        client_bytes as f64 / n as f64
    );
}

/// What a cluster node (echo-im with `--redis`) keeps per idle logged-in user: nothing in
/// the chat (it keeps entries only while something is under way for a user), and the
/// user's channel in its Redis link's subscriptions, renewed on every reconnect. Counted
/// here for `n` channels named as echo-im names them.
fn cluster_state(n: usize) {
    use liveline::bus::Bus;
    use liveline::redis::Redis;
    let names: Vec<String> = (0..n).map(|i| format!("{{user{i:06}}}:bell")).collect();
    let before = live();
    let mut redis = Redis::default();
    for name in &names {
        redis.subscribe(name.as_bytes());
    }
    let grown = live() - before;
    println!(
        "cluster state per idle user (a {}-byte channel name in the Redis link's subscriptions, {n} of them): {:.1} B",
        names[0].len(),
        grown as f64 / n as f64
    );
    drop(redis);
}
