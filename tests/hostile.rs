//! Hostile peers against a running echo-im server process over real loopback sockets.
//! Each case checks that (a) the offender is closed with a clear reason (an ERROR frame
//! where the protocol allows, and a log line), (b) a well-behaved client on the same server
//! keeps working, and (c) the server's memory stays bounded.

mod common;

use common::process::{cpu_ticks, example, free_addr, rss_kib, Proc, LIMIT};
use common::{error_code, frames_in, hello_bytes};
use liveline::frame::{Code, Frame};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A server and one well-behaved client logged in to it.
struct Bench {
    addr: SocketAddr,
    server: Proc,
    good: Proc,
    rounds: u32,
    /// Server RSS once the good client was logged in, KiB.
    baseline_kib: u64,
}

impl Bench {
    fn new(extra: &[&str]) -> Bench {
        let addr = free_addr();
        let server = Proc::server(addr, extra);
        let mut good = Proc::client("good", &[addr]);
        good.expect(|l| l.starts_with("connected to"));
        let baseline_kib = rss_kib(server.child.id());
        Bench {
            addr,
            server,
            good,
            rounds: 0,
            baseline_kib,
        }
    }

    /// The well-behaved client still gets an answer.
    fn good_still_served(&mut self) {
        self.rounds += 1;
        let text = format!("still here {}", self.rounds);
        self.good.send(&format!(":echo {text}"));
        let want = format!("[echo] {text}");
        self.good.expect(|l| l == want);
        assert_eq!(self.good.count(|l| l.contains(" lost (")), 0);
        // Whatever the offenders did, the server's memory stays within a few buffers' worth.
        let grown = self.rss().saturating_sub(self.baseline_kib);
        assert!(grown < 64 * 1024, "server grew by {grown} KiB");
    }

    fn rss(&self) -> u64 {
        rss_kib(self.server.child.id())
    }
}

/// Sends `bytes`, then reads until the server closes; returns what it sent back. Prints
/// how long the server took to hang up.
fn offend(addr: SocketAddr, bytes: &[u8]) -> Vec<Frame> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let start = Instant::now();
    s.write_all(bytes).unwrap();
    let got = read_until_closed(&mut s);
    let last = got
        .last()
        .map_or("nothing".to_string(), |f| format!("{f:?}"));
    eprintln!(
        "offender sent {} bytes: closed after {:?}, last frame {last}",
        bytes.len(),
        start.elapsed()
    );
    got
}

fn read_until_closed(s: &mut TcpStream) -> Vec<Frame> {
    let mut got = Vec::new();
    // A reset after the ERROR frame is as good as a FIN here.
    let _ = s.read_to_end(&mut got);
    frames_in(&got)
}

/// A HELLO for `name`, from a client instance of its own.
fn hello(name: &str) -> Vec<u8> {
    hello_bytes(name, 9, 0)
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let mut b = Bench::new(&[]);
    let before = b.rss();
    for _ in 0..50 {
        let got = offend(b.addr, &[0xFF, 0xFF, 0xFF, 0xF0, 0x06, 1, 2, 3]);
        assert_eq!(error_code(&got), Some(Code::FRAME_TOO_LARGE));
    }
    b.server
        .expect(|l| l.contains("FRAME_TOO_LARGE") && l.contains("exceeds the maximum"));
    // Fifty times 4 GiB was claimed; a few MiB of growth at most is allowed.
    let grown = b.rss().saturating_sub(before);
    assert!(grown < 8 * 1024, "server grew by {grown} KiB");
    b.good_still_served();
}

#[test]
fn unknown_kinds_malformed_bodies_and_garbage_get_errors() {
    let mut b = Bench::new(&[]);
    let mut first = hello("x1");
    first.extend_from_slice(&[0, 0, 0, 2, 0x7E, 0]); // unknown kind after login
    assert_eq!(
        error_code(&offend(b.addr, &first)),
        Some(Code::UNKNOWN_FRAME_KIND)
    );
    let mut short_ping = hello("x2");
    short_ping.extend_from_slice(&[0, 0, 0, 3, 0x04, 1, 2]);
    assert_eq!(
        error_code(&offend(b.addr, &short_ping)),
        Some(Code::MALFORMED_FRAME)
    );
    let mut bad_text = hello("x3");
    bad_text.extend_from_slice(&[0, 0, 0, 5, 0x0A, 0, 1, 0xC3, 0x28]); // ERROR with invalid UTF-8
    assert_eq!(
        error_code(&offend(b.addr, &bad_text)),
        Some(Code::MALFORMED_FRAME)
    );
    // Random garbage, seeded: whatever it decodes to, it ends in an ERROR and a close.
    let mut rng = liveline::rng::Rng::new(99);
    for _ in 0..20 {
        let junk: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
        let got = offend(b.addr, &junk);
        assert!(error_code(&got).is_some(), "{got:?}");
    }
    b.good_still_served();
}

#[test]
fn anything_but_hello_first_is_a_protocol_violation() {
    let mut b = Bench::new(&[]);
    let ping = [0, 0, 0, 9, 0x04, 0, 0, 0, 0, 0, 0, 0, 7];
    let message = [0, 0, 0, 10, 0x07, 0, 0, 0, 0, 0, 0, 0, 1, b'!'];
    for bytes in [&ping[..], &message[..]] {
        assert_eq!(
            error_code(&offend(b.addr, bytes)),
            Some(Code::PROTOCOL_VIOLATION)
        );
    }
    b.server
        .expect(|l| l.contains("PROTOCOL_VIOLATION") && l.contains("expected HELLO"));
    b.good_still_served();
}

#[test]
fn slowloris_is_cut_off_by_the_handshake_deadline() {
    let mut b = Bench::new(&["--handshake-ms", "800"]);
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let mut closed_after = None;
    // One byte of a HELLO every 50 ms, for longer than the deadline.
    for &byte in hello("snail").iter().cycle().take(200) {
        if s.write_all(&[byte]).is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(n) => {
                assert_eq!(
                    error_code(&frames_in(&buf[..n])),
                    Some(Code::HANDSHAKE_TIMEOUT)
                );
            }
            Err(_) => {} // nothing yet (read timeout)
        }
        assert!(start.elapsed() < LIMIT);
    }
    let took = closed_after.expect("cut off");
    eprintln!("slowloris (a HELLO byte every 50 ms, deadline 800 ms) cut off after {took:?}");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    b.server
        .expect(|l| l.contains("closed before login") && l.contains("HANDSHAKE_TIMEOUT"));
    b.good_still_served();
}

#[test]
fn thousands_of_silent_connections_are_dropped_at_the_deadline() {
    let mut b = Bench::new(&["--handshake-ms", "1000"]);
    let before = b.rss();
    let mut silent: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(b.addr).unwrap())
        .collect();
    b.good_still_served();
    let start = Instant::now();
    for s in silent.iter_mut() {
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let got = read_until_closed(s);
        assert_eq!(error_code(&got), Some(Code::HANDSHAKE_TIMEOUT));
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    eprintln!(
        "2000 silent connections all dropped with HANDSHAKE_TIMEOUT; the last {:?} after the good client's check",
        start.elapsed()
    );
    drop(silent);
    b.good_still_served();
    let grown = b.rss().saturating_sub(before);
    assert!(grown < 16 * 1024, "server grew by {grown} KiB");
}

#[test]
fn a_peer_that_never_reads_is_dropped_as_a_slow_consumer() {
    // The bench's short timings (idle timeout 1.5 s) bound how long a stall may last.
    let mut b = Bench::new(&[]);
    let mut sink = TcpStream::connect(b.addr).unwrap();
    sink.write_all(&hello("sink")).unwrap();
    b.server.expect(|l| l.contains("online: sink"));
    // It keeps its session alive with PINGs but never reads a byte. The good client
    // broadcasts 60 KB lines: they fill the sink's socket buffers, then wait in the server
    // (at most the unacknowledged window; the rest is held by echo-im, bounded), until the
    // server sees that nothing has left for the sink for its idle timeout.
    let ping = [0, 0, 0, 9, 0x04, 0, 0, 0, 0, 0, 0, 0, 1];
    let line = "x".repeat(60_000);
    let start = Instant::now();
    let before = b.rss();
    let mut peak = before;
    let mut batch = 0;
    while b.server.count(|l| l.contains("SLOW_CONSUMER")) == 0 {
        batch += 1;
        for _ in 0..20 {
            b.good.send(&line);
        }
        // Paced by the server: the good client's next echo comes back after the batch.
        let mark = format!("mark {batch}");
        b.good.send(&format!(":echo {mark}"));
        let want = format!("[echo] {mark}");
        b.good.expect(|l| l == want);
        let _ = sink.write_all(&ping);
        peak = peak.max(b.rss());
        assert!(
            start.elapsed() < LIMIT,
            "never dropped after {batch} batches"
        );
    }
    let took = start.elapsed();
    b.server
        .expect(|l| l.contains("offline: sink") && l.contains("SLOW_CONSUMER"));
    eprintln!("never-reading peer dropped after {took:?} ({batch} batches of 20 x 60 KB)");
    // The unacknowledged window (4 MiB) plus kernel buffers plus the held copies: bounded.
    let grown = peak.saturating_sub(before);
    assert!(grown < 64 * 1024, "server grew by {grown} KiB");
    assert_eq!(b.good.count(|l| l.starts_with("! not sent")), 0);
    b.good_still_served();
}

#[test]
fn half_close_and_reset_in_the_middle_of_a_frame() {
    let mut b = Bench::new(&[]);
    // Half of a MESSAGE frame, then FIN.
    let mut s = TcpStream::connect(b.addr).unwrap();
    let mut bytes = hello("half");
    bytes.extend_from_slice(&[0, 0, 0, 40, 0x07, 0, 0, 0]);
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    b.server.expect(|l| l.contains("offline: half"));
    drop(s);
    // Half a frame, then a reset (SO_LINGER 0 makes close send RST).
    let s = TcpStream::connect(b.addr).unwrap();
    let sock = socket2::SockRef::from(&s);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    let mut bytes = hello("reset");
    bytes.extend_from_slice(&[0, 0, 0, 40, 0x07, 0, 0]);
    (&s).write_all(&bytes).unwrap();
    b.server.expect(|l| l.contains("online: reset"));
    drop(s);
    b.server.expect(|l| l.contains("offline: reset"));
    b.good_still_served();
}

#[test]
fn per_ip_limit_and_token_are_enforced() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &["--max-per-ip", "3", "--token", "sesame"]);
    // Without the token: refused with a reason, and the client stops (no retry loop).
    let mut stranger = Proc::client("stranger", &[addr]);
    stranger.expect(|l| l.starts_with("stopped") && l.contains("AUTH_FAILED"));
    server.expect(|l| l.contains("AUTH_FAILED"));
    let mut ok = {
        let mut cmd = std::process::Command::new(common::process::example());
        cmd.args(["client", "--user", "ok", "--token", "sesame", "--servers"])
            .arg(addr.to_string());
        Proc::spawn_cmd(cmd)
    };
    ok.expect(|l| l.starts_with("connected to"));
    // 127.0.0.1 holds one connection (ok's); two more fit, the rest are closed at once.
    let extra: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut closed = 0;
    for mut s in extra {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 16];
        if let Ok(0) = s.read(&mut buf) {
            closed += 1;
        }
    }
    assert_eq!(closed, 3, "two fit under the limit of three");
    ok.send(":echo fine");
    ok.expect(|l| l == "[echo] fine");
}

#[test]
fn reconnect_storm_of_thousands_all_get_in() {
    use bytes::Bytes;
    use liveline::config::Config;
    use liveline::engine::{App, ClientConfig, ClientEvent, ClientState, Event};
    use liveline::frame::Text;
    use liveline::reactor::Reactor;

    const CLIENTS: usize = 3000;
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let mut a = Proc::server(a_addr, &[]);
    let mut b = Proc::server(b_addr, &["--log", "warn"]);
    // Every client of one liveline loop, in this process, starts on server A.
    let mut reactor = Reactor::new(Config::default()).unwrap();
    let now = Instant::now();
    let ids: Vec<_> = (0..CLIENTS)
        .map(|i| {
            reactor
                .engine()
                .add_client(
                    ClientConfig {
                        identity: Text::from(format!("storm{i}")),
                        token: Bytes::new(),
                        servers: vec![a_addr, b_addr],
                        instance: None,
                    },
                    now,
                )
                .expect("valid client")
        })
        .collect();
    let mut connects: Vec<Instant> = Vec::new();
    let mut delays: Vec<Duration> = Vec::new();
    let turn_until = |reactor: &mut Reactor,
                      connects: &mut Vec<Instant>,
                      delays: &mut Vec<Duration>,
                      on: SocketAddr| {
        let deadline = Instant::now() + LIMIT;
        loop {
            let all = ids.iter().all(|&c| {
                reactor
                    .engine()
                    .client_info(c)
                    .is_some_and(|i| i.state == ClientState::Active && i.server == Some(on))
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not everyone got in within {LIMIT:?}"
            );
            let mut handler = |_: &mut App, e: Event| match e {
                Event::Client(ClientEvent::State {
                    state: ClientState::Active,
                    ..
                }) => connects.push(Instant::now()),
                Event::Client(ClientEvent::State {
                    state: ClientState::Backoff,
                    retry: Some(r),
                    ..
                }) => delays.push(r.after),
                _ => {}
            };
            reactor
                .turn(&mut handler, Some(Duration::from_millis(20)))
                .unwrap();
        }
    };
    turn_until(&mut reactor, &mut connects, &mut delays, a_addr);
    connects.clear();
    delays.clear();
    let killed = Instant::now();
    a.kill9();
    turn_until(&mut reactor, &mut connects, &mut delays, b_addr);
    let took = killed.elapsed();
    // Full jitter: the reconnect delays drawn after the reset cover the first backoff
    // window (200 ms) evenly; no 20 ms tenth of it gets twice its share.
    assert_eq!(delays.len(), CLIENTS);
    let mut tenths = [0usize; 10];
    for d in &delays {
        assert!(*d <= Duration::from_millis(200), "{d:?}");
        tenths[((d.as_millis() / 20) as usize).min(9)] += 1;
    }
    let worst = tenths.iter().copied().max().unwrap_or(0);
    eprintln!(
        "reconnect storm: {CLIENTS} clients on the survivor {took:?} after the kill; delays per 20 ms: {tenths:?}"
    );
    assert!(worst < 2 * CLIENTS / 10, "{tenths:?}");
    assert_eq!(connects.len(), CLIENTS);
    // And the logins really were spread out in time, not just scheduled so.
    let span = connects
        .iter()
        .max()
        .unwrap()
        .duration_since(*connects.iter().min().unwrap());
    assert!(
        span >= Duration::from_millis(100),
        "all logins within {span:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(b.count(|l| l.contains("ERROR") || l.contains("WARN")), 0);
}

#[test]
fn out_of_file_descriptors_pauses_accepting_serves_existing_clients_and_recovers() {
    let addr = free_addr();
    // A server process allowed 32 file descriptors.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        // One loop: each loop would log the episode once.
        "ulimit -n 32 && exec '{}' server --listen {addr} --log info --threads 1",
        example().display()
    ));
    let mut server = Proc::spawn_cmd(cmd);
    server.expect(|l| l.starts_with("listening on"));
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));

    // More idle connections than the server has descriptors left.
    let hogs: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    server.expect(|l| l.contains("out of file descriptors"));

    // It still serves the client it has.
    alice.send(":echo still served");
    alice.expect(|l| l == "[echo] still served");

    // And does not spin while the backlog waits: measure its CPU time over one second.
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 20,
        "{used} ticks of CPU in one second while out of descriptors"
    );
    assert_eq!(
        server.count(|l| l.contains("out of file descriptors")),
        1,
        "logged once per episode"
    );

    // Descriptors come back: a new client gets in.
    drop(hogs);
    let mut bob = Proc::client("bob", &[addr]);
    bob.expect(|l| l.starts_with("connected to"));
    server.expect(|l| l.contains("accepting again"));
    bob.send(":echo in");
    bob.expect(|l| l == "[echo] in");
}
