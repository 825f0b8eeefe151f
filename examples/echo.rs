//! A raw byte echo server on the liveline reactor: whatever bytes arrive go straight back,
//! like tokio's echo example. For comparing event loops, not for chatting.
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:7000 [THREADS]
//! ```

use liveline::config::Config;
use liveline::engine::{App, Event};
use liveline::reactor::{ListenConfig, Loops, Reactor};
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string())
        .parse()
        .map_err(|e| std::io::Error::other(format!("address: {e}")))?;
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    if threads > 1 {
        // One loop per thread, each with its own listener on the address.
        let loops = Loops::spawn(threads, move |_| {
            let (reactor, _) = echo_loop(addr, true)?;
            Ok((reactor, echo))
        })?;
        println!("listening on {addr} with {threads} loops");
        return loops.join();
    }
    let (mut reactor, addr) = echo_loop(addr, false)?;
    println!("listening on {addr}");
    reactor.run(&mut echo)
}

/// A reactor that echoes raw bytes on `addr`.
fn echo_loop(addr: SocketAddr, reuse_port: bool) -> std::io::Result<(Reactor, SocketAddr)> {
    let mut reactor = Reactor::new(Config {
        max_connections: 1_000_000,
        ..Config::default()
    })?;
    let addr = reactor.listen(
        addr,
        ListenConfig {
            raw: true,
            reuse_port,
            ..ListenConfig::default()
        },
    )?;
    Ok((reactor, addr))
}

fn echo(app: &mut App, event: Event) {
    if let Event::Raw { conn, data } = event {
        let _ = app.send_raw(conn, &data);
    }
}
