//! A raw byte echo server on the liveline reactor: whatever bytes arrive go straight back,
//! like tokio's echo example. For comparing event loops, not for chatting.
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:7000
//! ```

use liveline::config::Config;
use liveline::engine::{App, Event};
use liveline::reactor::{ListenConfig, Reactor};
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string())
        .parse()
        .map_err(|e| std::io::Error::other(format!("address: {e}")))?;
    let mut reactor = Reactor::new(Config {
        max_connections: 1_000_000,
        ..Config::default()
    })?;
    let addr = reactor.listen(
        addr,
        ListenConfig {
            raw: true,
            ..ListenConfig::default()
        },
    )?;
    println!("listening on {addr}");
    let mut echo = |app: &mut App, event: Event| {
        if let Event::Raw { conn, data } = event {
            let _ = app.send_raw(conn, &data);
        }
    };
    reactor.run(&mut echo)
}
