//! A liveline server that does nothing but sessions and heartbeats: the subject of
//! `scripts/hb-bench.sh`, next to `tokio_hb_server`.
//!
//! ```text
//! cargo run --release --example hb_server -- 127.0.0.1:9000 [reuse] [ACCEPTS_PER_S]
//! ```
//!
//! `reuse`: share the port with other processes (`SO_REUSEPORT`); `ACCEPTS_PER_S`: pace
//! accepts (a reconnect storm waits in the backlog). With `HB_TLS_CERT` and `HB_TLS_KEY`
//! (PEM files) in the environment, it listens with TLS; `HB_MAX_HANDSHAKES` bounds the
//! handshakes under way at once (`ListenConfig::max_handshakes`).

use liveline::config::Config;
use liveline::engine::{App, Event};
use liveline::reactor::{ListenConfig, Reactor};
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string())
        .parse()
        .map_err(|e| std::io::Error::other(format!("address: {e}")))?;
    let mut reactor = Reactor::new(Config::default())?;
    let reuse_port = std::env::args().nth(2).is_some_and(|a| a == "reuse");
    let accept_rate = std::env::args().nth(3).and_then(|r| r.parse().ok());
    let tls = match (std::env::var("HB_TLS_CERT"), std::env::var("HB_TLS_KEY")) {
        (Ok(cert), Ok(key)) => Some(
            liveline::tls::server_config(&std::fs::read(cert)?, &std::fs::read(key)?)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
        _ => None,
    };
    let max_handshakes = std::env::var("HB_MAX_HANDSHAKES")
        .ok()
        .and_then(|n| n.parse().ok());
    let listen = ListenConfig {
        tls,
        max_handshakes,
        reuse_port,
        accept_rate,
        ..ListenConfig::default()
    };
    let addr = reactor.listen(addr, listen)?;
    println!("listening on {addr}");
    let mut ignore = |_: &mut App, _: Event| {};
    reactor.run(&mut ignore)
}
