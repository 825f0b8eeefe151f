//! echo-im's cluster on Redis, measured: one `redis-server` and two gateways (the echo-im
//! server code, in this process, one loop thread each) on loopback, clients on a third
//! loop thread. In one run:
//!
//! - cross-node latency, alice-on-A to bob-on-B, at a paced 10,000 messages/s: p50, p99,
//!   twice: sent in 1 ms slices (bursts of 10, the harsher pattern), then one at a time,
//!   evenly spread (every 100 µs, from a pacing thread through the loop's `Handle`, each
//!   stamped when the pacer hands it over, so the hop into the loop counts);
//! - cross-node messages/s at saturation, as a ratio to what `redis-benchmark` reaches, in
//!   the same run, for the Redis commands each message costs (one EVALSHA of the deliver
//!   script on A, one XDEL on B), pipelined;
//! - heap allocations per cross-node message (the whole process: both gateways and every
//!   client), against a message between two users of one standalone server;
//!
//! The heap a node keeps per idle user for the cluster is counted exactly, without the
//! noise of a whole process, by `cargo bench --bench memory`.
//!
//! Run: `cargo bench --bench cluster` (needs `redis-server` and `redis-benchmark` on PATH:
//! `apt-get install redis-server`). Machines drift between runs; compare the ratios.

#[path = "../examples/echo-im/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "support/counting.rs"]
mod counting;
#[path = "../examples/echo-im/proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../examples/echo-im/server.rs"]
#[allow(dead_code)]
mod server;

use bytes::Bytes;
use counting::ALLOCS;
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientId, ClientState, Event};
use liveline::frame::Text;
use liveline::reactor::{Handle, Reactor};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Sender/receiver pairs.
const PAIRS: usize = 100;
/// Messages per second in the paced phase (`LIVELINE_CLUSTER_RATE` overrides it).
const RATE_DEFAULT: u64 = 10_000;
const PACED_FOR: Duration = Duration::from_secs(3);
const SATURATED_FOR: Duration = Duration::from_secs(3);
/// Messages each sender keeps unacknowledged at saturation.
const WINDOW: usize = 32;

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start_redis() -> Redis {
    let port = free_addr().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Redis { child, port }
}

/// A gateway on its own thread: the echo-im server, with or without Redis.
fn gateway(node: &str, redis: Option<u16>) -> SocketAddr {
    let listen = free_addr();
    let opts = server::ServerOptions {
        listen,
        engine: Config::default(),
        max_held: 1_000,
        held_age: Duration::from_secs(300),
        token: None,
        max_per_ip: None,
        redis: redis
            .map(|p| vec![SocketAddr::from(([127, 0, 0, 1], p))])
            .unwrap_or_default(),
        node: node.to_string(),
        threads: 1,
        reuse_port: false,
        tls: None,
    };
    std::thread::spawn(move || server::run(opts).expect("gateway runs"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    listen
}

/// What the clients' loop reports.
#[derive(Default)]
struct Report {
    /// Latencies of messages received, in microseconds.
    latencies: Vec<u64>,
    received: u64,
}

/// How the clients' loop sends.
#[derive(Clone, Copy)]
enum Load {
    /// `rate()` messages per second, spread over the senders, for `PACED_FOR`, sent in
    /// 1 ms slices.
    Paced,
    /// The same rate, one message at a time, evenly spaced, from a pacing thread.
    Spread,
    /// Each sender keeps `WINDOW` messages unacknowledged, for `SATURATED_FOR`.
    Saturated,
}

struct Clients {
    handle: Handle,
    senders: Vec<ClientId>,
    thread: std::thread::JoinHandle<Report>,
}

/// Hands `rate()` messages a second to the clients' loop, one at a time and evenly spaced,
/// for `PACED_FOR`; each is stamped when handed over. Then stops the loop once the last
/// have had time to arrive.
fn spread(handle: Handle, senders: Vec<ClientId>, base: Instant, tag: &'static str) {
    std::thread::spawn(move || {
        let total = PACED_FOR.as_secs() * rate();
        let period = Duration::from_secs_f64(1.0 / rate() as f64);
        let start = Instant::now();
        for k in 0..total {
            let at = start + period.mul_f64(k as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let i = k as usize % PAIRS;
            let us = base.elapsed().as_micros();
            let client = senders[i];
            let sent = handle.run(move |app| {
                let text = format!("T {tag}r{i} {us:>12} ................................");
                let _ = app
                    .client(client)
                    .map(|mut c| c.send_message(Bytes::from(text)));
            });
            if sent.is_err() {
                return;
            }
        }
        let _ = handle.run(|app| {
            app.set_timer(Duration::from_millis(300), None, 2);
        });
    });
}

/// `PAIRS` senders on `from` (named s0..) and receivers on `to` (named r0..), on one loop.
fn clients(from: SocketAddr, to: SocketAddr, load: Load, tag: &'static str) -> Clients {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        // A 1 ms tick, so that the pacing timer sends 10 messages a millisecond, not 100
        // every 10 ms.
        let cfg = Config {
            tick: Duration::from_millis(1),
            ..Config::default()
        };
        let mut reactor = Reactor::new(cfg).unwrap();
        let now = reactor.now();
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..PAIRS {
            let mut add = |name: String, server: SocketAddr| {
                reactor
                    .engine()
                    .add_client(
                        ClientConfig {
                            identity: Text::from(name),
                            token: Bytes::new(),
                            servers: vec![server],
                            instance: None,
                        },
                        now,
                    )
                    .unwrap()
            };
            senders.push(add(format!("{tag}s{i}"), from));
            receivers.push(add(format!("{tag}r{i}"), to));
        }
        tx.send((reactor.handle(), senders.clone())).unwrap();
        let pacer = reactor.handle();
        let base = Instant::now();
        let mut report = Report::default();
        let mut active = 0;
        let mut started: Option<Instant> = None;
        let mut next = 0usize;
        let mut handler = |app: &mut App, event: Event| {
            let send = |app: &mut App, i: usize| {
                let us = base.elapsed().as_micros();
                let text = format!("T {tag}r{i} {us:>12} ................................");
                let _ = app
                    .client(senders[i])
                    .map(|mut c| c.send_message(Bytes::from(text)));
            };
            match event {
                Event::Client(ClientEvent::State {
                    state: ClientState::Active,
                    ..
                }) => {
                    active += 1;
                    if active == 2 * PAIRS {
                        started = Some(Instant::now());
                        match load {
                            Load::Paced => {
                                app.set_timer(
                                    Duration::from_millis(1),
                                    Some(Duration::from_millis(1)),
                                    1,
                                );
                            }
                            Load::Spread => {
                                spread(pacer.clone(), senders.clone(), base, tag);
                            }
                            Load::Saturated => {
                                for i in 0..PAIRS {
                                    for _ in 0..WINDOW {
                                        send(app, i);
                                    }
                                }
                                app.set_timer(SATURATED_FOR, None, 2);
                            }
                        }
                    }
                }
                Event::Timer { token: 1, .. } => {
                    // rate() a second, in 1 ms slices.
                    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
                    if elapsed > PACED_FOR {
                        app.shutdown();
                        return;
                    }
                    let due = (elapsed.as_micros() as u64 * rate() / 1_000_000) as usize;
                    while next < due {
                        send(app, next % PAIRS);
                        next += 1;
                    }
                }
                Event::Timer { token: 2, .. } => app.shutdown(),
                Event::Client(ClientEvent::Acked { client, .. }) => {
                    if let Load::Saturated = load {
                        if let Some(i) = senders.iter().position(|&s| s == client) {
                            send(app, i);
                        }
                    }
                }
                Event::Client(ClientEvent::Message { payload, .. }) => {
                    let text = std::str::from_utf8(&payload).unwrap_or("");
                    // "M <origin> <from> to <micros> ...."
                    let sent: Option<u64> =
                        text.split_whitespace().nth(4).and_then(|t| t.parse().ok());
                    if let Some(sent) = sent {
                        report.received += 1;
                        let now = base.elapsed().as_micros() as u64;
                        report.latencies.push(now.saturating_sub(sent));
                    }
                }
                _ => {}
            }
        };
        reactor.run(&mut handler).unwrap();
        report
    });
    let (handle, senders) = rx.recv().unwrap();
    Clients {
        handle,
        senders,
        thread,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Operations per second `redis-benchmark` reaches for `command`, pipelined 16 deep.
/// The gateways' Redis work with nothing else around it, pipelined: per message, one
/// deliver call for one of `PAIRS` recipients with a seen member no call repeats (every call
/// stores, as the gateways' do), then one XDEL of the entry it stored; a subscriber to every
/// bell takes the pushes, as gateway B does. `CONNS` connections keep `DEPTH` calls in
/// flight each, for `SATURATED_FOR`. Messages per second.
fn same_work_peer(port: u16, sha: &str) -> f64 {
    use liveline::resp::{encode_command, parse, Limits};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    const CONNS: u64 = 4;
    const DEPTH: u64 = 32;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // The subscriber, drained until the end.
    let mut sub = TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut req = bytes::BytesMut::new();
    let bells: Vec<String> = (0..PAIRS).map(|i| format!("{{pr{i}}}:bell")).collect();
    for bell in &bells {
        encode_command(&mut req, &[b"SSUBSCRIBE", bell.as_bytes()]);
    }
    sub.write_all(&req).expect("subscribe");
    sub.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                let _ = sub.read(&mut buf);
            }
        })
    };
    let payload = "M 1a2b3c4d:17 xs1 to 123456789012 ................................";
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNS)
        .map(|c| {
            let (stop, done, sha) = (Arc::clone(&stop), Arc::clone(&done), sha.to_string());
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("redis");
                let limits = Limits::default();
                let (mut out, mut buf) = (bytes::BytesMut::new(), Vec::<u8>::new());
                let mut next = 0u64;
                // Reads `n` replies; the first item of each array reply (the entry id).
                let mut replies = |conn: &mut TcpStream, n: u64, ids: &mut Vec<Vec<u8>>| {
                    let mut got = 0;
                    let mut chunk = [0u8; 1 << 16];
                    while got < n {
                        let mut at = 0;
                        while let Ok(Some((v, len))) = parse(&buf[at..], &limits) {
                            if let Some(id) = v.items().next().and_then(|i| i.as_bytes()) {
                                ids.push(id.to_vec());
                            }
                            at += len;
                            got += 1;
                        }
                        buf.drain(..at);
                        if got < n {
                            let k = conn.read(&mut chunk).expect("reply");
                            assert!(k > 0, "redis closed the connection");
                            buf.extend_from_slice(&chunk[..k]);
                        }
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..DEPTH {
                        let i = next % PAIRS as u64;
                        let (inbox, set, bell) = (
                            format!("{{pr{i}}}:inbox"),
                            format!("{{pr{i}}}:seen:peer:{c}"),
                            format!("{{pr{i}}}:bell"),
                        );
                        let member = next.to_string();
                        next += 1;
                        encode_command(
                            &mut out,
                            &[
                                b"EVALSHA",
                                sha.as_bytes(),
                                b"2",
                                inbox.as_bytes(),
                                set.as_bytes(),
                                b"1000000000",
                                payload.as_bytes(),
                                b"600000",
                                bell.as_bytes(),
                                b"xs1",
                                b"3600000",
                                member.as_bytes(),
                                member.as_bytes(),
                                b"4096",
                            ],
                        );
                    }
                    conn.write_all(&out).expect("deliver sent");
                    out.clear();
                    let mut ids = Vec::new();
                    replies(&mut conn, DEPTH, &mut ids);
                    for (k, id) in ids.iter().enumerate() {
                        let i = (next - DEPTH + k as u64) % PAIRS as u64;
                        let inbox = format!("{{pr{i}}}:inbox");
                        encode_command(&mut out, &[b"XDEL", inbox.as_bytes(), id]);
                    }
                    conn.write_all(&out).expect("XDEL sent");
                    out.clear();
                    let n = ids.len() as u64;
                    replies(&mut conn, n, &mut Vec::new());
                    done.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(SATURATED_FOR);
    stop.store(true, Ordering::Relaxed);
    let took = start.elapsed();
    for w in workers {
        w.join().expect("peer worker");
    }
    drain.join().expect("peer subscriber");
    done.load(Ordering::Relaxed) as f64 / took.as_secs_f64()
}

/// `SCRIPT LOAD`s `script` into the Redis on `port`; its SHA1.
fn script_load(port: u16, script: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let request = format!(
        "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n${}\r\n{script}\r\n",
        script.len()
    );
    conn.write_all(request.as_bytes())
        .expect("SCRIPT LOAD sent");
    let mut reader = BufReader::new(conn);
    let (mut header, mut sha) = (String::new(), String::new());
    reader.read_line(&mut header).expect("SCRIPT LOAD reply");
    assert!(header.starts_with("$40"), "SCRIPT LOAD: {header}");
    reader.read_line(&mut sha).expect("SCRIPT LOAD reply");
    sha.trim_end().to_string()
}

fn redis_benchmark(port: u16, range: &str, command: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            "200000",
            "-c",
            "8",
            "-P",
            "16",
        ])
        .args(["-r", range, "-q", "--csv"])
        .args(command)
        .output()
        .expect("redis-benchmark on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    // "<name>","<rps>","<avg>","<min>","<p50>","<p95>","<p99>","<max>": the name may hold
    // commas (a script), the numbers do not.
    text.lines()
        .filter_map(|l| l.rsplit(',').nth(6))
        .filter_map(|v| v.trim_matches('"').parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

fn rate() -> u64 {
    std::env::var("LIVELINE_CLUSTER_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RATE_DEFAULT)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and the like
    }
    let redis = start_redis();
    let a = gateway("A", Some(redis.port));
    let b = gateway("B", Some(redis.port));
    let solo = gateway("solo", None);
    std::thread::sleep(Duration::from_millis(200));

    // Paced: latency, in 1 ms slices, then evenly spread.
    for (load, tag, how) in [
        (Load::Paced, "p", "in 1 ms slices"),
        (Load::Spread, "q", "one at a time, evenly spread"),
    ] {
        let c = clients(a, b, load, tag);
        let _ = c.senders.len();
        let report = c.thread.join().unwrap();
        let mut lat = report.latencies;
        lat.sort_unstable();
        let sent = (PACED_FOR.as_secs() * rate()) as usize;
        println!(
            "cross-node latency at {} msg/s for {:?}, {how}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of ~{sent} received)",
            rate(),
            PACED_FOR,
            percentile(&lat, 0.50) as f64 / 1e3,
            percentile(&lat, 0.99) as f64 / 1e3,
            lat.last().copied().unwrap_or(0) as f64 / 1e3,
            lat.len()
        );
    }

    // Saturated: throughput and allocations, cross-node then on one standalone server.
    let mut rates = Vec::new();
    for (name, from, to, tag) in [("cross-node", a, b, "x"), ("one server", solo, solo, "y")] {
        let allocs = ALLOCS.load(Ordering::Relaxed);
        let start = Instant::now();
        let c = clients(from, to, Load::Saturated, tag);
        let report = c.thread.join().unwrap();
        let took = start.elapsed();
        let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
        let rate = report.received as f64 / SATURATED_FOR.as_secs_f64();
        println!(
            "{name}: {:.0} messages/s delivered at saturation ({} in {:?}); {:.1} heap allocations per message, whole process",
            rate,
            report.received,
            took,
            allocs as f64 / report.received.max(1) as f64
        );
        rates.push(rate);
        let _ = c.handle;
    }

    let payload = "M 1a2b3c4d:17 xs1 to 123456789012 ................................";
    // The gateways send EVALSHA once Redis has the script; so does the peer.
    let sha = script_load(redis.port, &deliver_script());
    // Two key ranges bracket the gateways' traffic (100 users, every call storing): over
    // 100 users, most calls find their seen member taken already and take the script's
    // short way out (the peer flattered); over 10,000 users, nearly every call stores, on
    // a keyspace 100 times the gateways' (the peer handicapped by colder caches).
    for range in ["100", "10000"] {
        let eval = redis_benchmark(
            redis.port,
            range,
            &[
                "EVALSHA",
                &sha,
                "2",
                "{u__rand_int__}:inbox",
                "{u__rand_int__}:seen:s",
                "1000000000",
                payload,
                "600000",
                "{u__rand_int__}:bell",
                "xs1",
                "3600000",
                "__rand_int__",
                "__rand_int__",
                "4096",
            ],
        );
        let xdel = redis_benchmark(redis.port, range, &["XDEL", "{u__rand_int__}:inbox", "1-1"]);
        let per_message = 1.0 / (1.0 / eval + 1.0 / xdel);
        println!(
            "redis-benchmark -r {range}, same run: EVALSHA deliver {eval:.0}/s, XDEL {xdel:.0}/s: {per_message:.0} messages/s of Redis work; cross-node ratio {:.2}",
            rates[0] / per_message
        );
    }
    let same = same_work_peer(redis.port, &sha);
    println!(
        "the gateways' own Redis work, pipelined with nothing else (100 recipients, every call storing, XDEL of what it stored, a subscriber on every bell), same run: {same:.0} messages/s; cross-node ratio {:.2}",
        rates[0] / same
    );
    println!(
        "cluster state per idle user: see `cargo bench --bench memory` (counted exactly there)"
    );
}

/// The deliver script, as the gateways send it.
fn deliver_script() -> String {
    cluster::DELIVER.to_string()
}
