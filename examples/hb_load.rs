//! Heartbeat load generator: N liveline client sessions on one loop, each logging in to the
//! server and then only keeping its session alive with PINGs. Prints progress and, at the
//! end, how many sessions stayed up and how many reconnects there were.
//!
//! ```text
//! cargo run --release --example hb_load -- ADDR CLIENTS PING_MS SECONDS [FROM,FROM...]
//! ```
//!
//! With `HB_TLS_CA` (a PEM file) in the environment, sessions use TLS, checking the
//! server's certificate for `localhost`. `FROM`: local addresses to connect from, in turn (127.0.0.2,127.0.0.3,...), for more
//! sessions to one server address than one source address has ephemeral ports. Every
//! second it prints `t=<s> active=<n> connects=<n> losses=<n>`; at the end, the p99 round
//! trip of the heartbeats.

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
        // The first retry within 5 s, not 200 ms: thousands of sessions of a server that
        // died come back spread over the window instead of at once.
        backoff: liveline::backoff::Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(10),
        },
        ..Config::default()
    };
    let mut reactor = Reactor::new(cfg)?;
    let from: Vec<std::net::IpAddr> = std::env::args()
        .nth(5)
        .map(|list| list.split(',').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    reactor.connect_from(from);
    let start = Instant::now();
    let tls = match std::env::var("HB_TLS_CA") {
        Ok(ca) => Some(liveline::engine::ClientTls {
            config: liveline::tls::client_config(&std::fs::read(ca)?)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            server_name: rustls_pki_types::ServerName::try_from("localhost")
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        }),
        Err(_) => None,
    };
    let ids: Vec<_> = (0..clients)
        .map(|i| {
            let cfg = ClientConfig {
                // Unique across load processes: a second login of a name replaces the first.
                identity: Text::from(format!("hb{}-{i}", std::process::id())),
                token: Bytes::new(),
                servers: vec![addr],
                instance: None,
            };
            match tls.clone() {
                Some(tls) => reactor.engine().add_client_tls(cfg, tls, start),
                None => reactor.engine().add_client(cfg, start),
            }
        })
        .collect::<Result<_, _>>()?;
    let (mut active, mut lost, mut failed_connects, mut pongs) = (0usize, 0usize, 0usize, 0u64);
    let mut all_up_at = None;
    // The storm: from the first loss, when sessions came back (per 100 ms) and how long
    // heartbeats took meanwhile.
    let mut first_loss: Option<Instant> = None;
    let mut reasons = std::collections::BTreeMap::new();
    let mut back_slices: Vec<u32> = Vec::new();
    let mut rtts_us: Vec<u32> = Vec::new();
    let mut storm_rtts_us: Vec<u32> = Vec::new();
    let mut back_at: Option<Duration> = None;
    let mut next_report = start + Duration::from_secs(1);
    let mut next_recount = start;
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        let now = Instant::now();
        let mut handler = |_: &mut App, e: Event| match e {
            Event::Client(ClientEvent::State {
                state: ClientState::Active,
                ..
            }) => {
                active += 1;
                if let Some(t) = first_loss {
                    let slice = (now.duration_since(t).as_millis() / 100) as usize;
                    if back_slices.len() <= slice {
                        back_slices.resize(slice + 1, 0);
                    }
                    back_slices[slice] += 1;
                }
            }
            Event::Client(ClientEvent::State {
                state: ClientState::Backoff,
                reason,
                ..
            }) => {
                if let Some(r) = reason.as_ref() {
                    let text = r.text.as_str();
                    let key = text.split(':').next().unwrap_or(text).to_string();
                    *reasons.entry(key).or_insert(0usize) += 1;
                }
                // No session was lost: the attempt itself failed.
                let connect = reason.as_ref().is_some_and(|r| {
                    let t = r.text.as_str();
                    t.starts_with("connect failed") || t.starts_with("connect timed out")
                });
                if connect {
                    failed_connects += 1;
                } else {
                    lost += 1;
                    active = active.saturating_sub(1);
                    first_loss.get_or_insert(now);
                }
            }
            Event::Client(ClientEvent::Rtt { rtt, .. }) => {
                pongs += 1;
                let us = rtt.as_micros().min(u128::from(u32::MAX)) as u32;
                if first_loss.is_some() && back_at.is_none() {
                    storm_rtts_us.push(us);
                } else {
                    rtts_us.push(us);
                }
            }
            _ => {}
        };
        reactor.turn(&mut handler, Some(Duration::from_millis(50)))?;
        if all_up_at.is_none() && active == clients {
            all_up_at = Some(start.elapsed());
            println!("all {clients} sessions up after {:?}", start.elapsed());
        }
        if first_loss.is_some() && back_at.is_none() && Instant::now() >= next_recount {
            // The engine's own states, every 100 ms while sessions are coming back: the
            // count of events can miss a transition that a later one undid.
            next_recount = Instant::now() + Duration::from_millis(100);
            active = count_active(reactor.engine(), &ids);
        }
        if let (Some(t), None) = (first_loss, back_at) {
            if active == clients {
                back_at = Some(t.elapsed());
                println!(
                    "all {clients} sessions back {:?} after the first loss",
                    t.elapsed()
                );
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            println!(
                "t={} active={active} losses={lost} failed_connects={failed_connects}",
                start.elapsed().as_secs()
            );
        }
    }
    let p99 = |v: &mut Vec<u32>| {
        v.sort_unstable();
        v.get(v.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0)
    };
    if first_loss.is_some() {
        let slices: Vec<String> = back_slices.iter().map(u32::to_string).collect();
        println!(
            "reconnects per 100 ms after the first loss: {}",
            slices.join(" ")
        );
        println!(
            "heartbeat round trip p99 during the storm: {} us ({} samples)",
            p99(&mut storm_rtts_us),
            storm_rtts_us.len()
        );
    }
    println!(
        "heartbeat round trip p99 outside it: {} us ({} samples)",
        p99(&mut rtts_us),
        rtts_us.len()
    );
    let mut states = std::collections::BTreeMap::new();
    for &c in &ids {
        let state = reactor.engine().client_info(c).map(|i| i.state);
        *states.entry(format!("{state:?}")).or_insert(0usize) += 1;
    }
    println!("states at the end: {states:?}");
    println!("why connections ended or attempts failed: {reasons:?}");
    let up = count_active(reactor.engine(), &ids);
    println!("clients={clients} up={up} losses={lost} failed_connects={failed_connects} pongs={pongs} ping_ms={ping_ms} secs={secs}");
    Ok(())
}

/// Clients of `ids` whose session is active, by the engine's own states.
fn count_active(engine: &liveline::engine::Engine, ids: &[liveline::engine::ClientId]) -> usize {
    ids.iter()
        .filter(|&&c| {
            engine
                .client_info(c)
                .is_some_and(|i| i.state == ClientState::Active)
        })
        .count()
}
