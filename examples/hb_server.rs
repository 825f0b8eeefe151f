//! A liveline server that does nothing but sessions and heartbeats: the subject of
//! `scripts/hb-bench.sh`, next to `tokio_hb_server`.
//!
//! ```text
//! cargo run --release --example hb_server -- 127.0.0.1:9000
//! ```

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
    let addr = reactor.listen(addr, ListenConfig::default())?;
    println!("listening on {addr}");
    let mut ignore = |_: &mut App, _: Event| {};
    reactor.run(&mut ignore)
}
