//! Heap bytes per idle connection, counted by a counting global allocator: the engine's
//! own state for 100k idle connections, server side and client side, with the simulated
//! network's bookkeeping excluded (it is measured and subtracted separately).
//!
//! Run: `cargo bench --bench memory`. Prints a table; `LIVELINE_BENCH_CONNS` overrides the
//! 100,000.

use liveline::config::Config;
use liveline::engine::{ClientConfig, Engine, Event, Io};
use liveline::frame::Text;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes. This bench binary is the only place with `unsafe`: a global
/// allocator cannot be written without it, and it only forwards to the system allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for alloc and dealloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

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
    let out = from.outbound(f).to_vec();
    if out.is_empty() {
        return false;
    }
    from.handle_sent(f, out.len(), now);
    to.handle_read(t, &out, now);
    true
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
    let mut server = Engine::new(cfg.clone(), now, 1);
    let mut client = Engine::new(cfg, now, 2);
    let empty = live() - base;

    // Client side: n clients, each asking for a connection.
    let mut connects = Vec::with_capacity(n);
    let before = live();
    let mut names: Vec<Text> = (0..n).map(|i| Text::from(format!("user{i:06}"))).collect();
    let names_bytes = live() - before;
    for name in names.drain(..) {
        client.add_client(
            ClientConfig {
                identity: name,
                token: bytes::Bytes::new(),
                servers: vec![addr],
                instance: None,
            },
            now,
        );
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
        if matches!(e, Event::ClientState { .. }) {
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
}
