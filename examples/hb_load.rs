//! Heartbeat load generator: N liveline client sessions on one loop, each logging in to the
//! server and then only keeping its session alive with PINGs. Prints progress and, at the
//! end, how many sessions stayed up and how many reconnects there were.
//!
//! ```text
//! cargo run --release --example hb_load -- ADDR CLIENTS PING_MS SECONDS
//! ```

use bytes::Bytes;
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientState, Event};
use liveline::frame::Text;
use liveline::reactor::Reactor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = arg(1, "127.0.0.1:9000".parse().expect("literal"));
    let clients: usize = arg(2, 1000);
    let ping_ms: u64 = arg(3, 1000);
    let secs: u64 = arg(4, 10);
    let cfg = Config {
        ping_interval: Duration::from_millis(ping_ms),
        max_connections: clients + 16,
        connect_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut reactor = Reactor::new(cfg)?;
    let start = Instant::now();
    let ids: Vec<_> = (0..clients)
        .map(|i| {
            reactor.engine().add_client(
                ClientConfig {
                    identity: Text::from(format!("hb{i}")),
                    token: Bytes::new(),
                    servers: vec![addr],
                    instance: None,
                },
                start,
            )
        })
        .collect::<Result<_, _>>()?;
    let (mut active, mut lost, mut pongs) = (0usize, 0usize, 0u64);
    let mut all_up_at = None;
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        let mut handler = |_: &mut App, e: Event| match e {
            Event::Client(ClientEvent::State {
                state: ClientState::Active,
                ..
            }) => active += 1,
            Event::Client(ClientEvent::State {
                state: ClientState::Backoff,
                ..
            }) => {
                lost += 1;
                active = active.saturating_sub(1);
            }
            Event::Client(ClientEvent::Rtt { .. }) => pongs += 1,
            _ => {}
        };
        reactor.turn(&mut handler, Some(Duration::from_millis(100)))?;
        if all_up_at.is_none() && active == clients {
            all_up_at = Some(start.elapsed());
            println!("all {clients} sessions up after {:?}", start.elapsed());
        }
    }
    let up = ids
        .iter()
        .filter(|&&c| {
            reactor
                .engine()
                .client_info(c)
                .is_some_and(|i| i.state == ClientState::Active)
        })
        .count();
    println!("clients={clients} up={up} losses={lost} pongs={pongs} ping_ms={ping_ms} secs={secs}");
    Ok(())
}
