//! Links: outbound connections of an application's own protocol, kept up by the engine.
//! Driven here by hand, as a driver would, on a virtual clock: the connect, the
//! protocol's bytes both ways, keepalives on write idle, a silent server declared dead
//! after two ping intervals, failover along the server list with the protocol told of
//! every new connection, and a peer that would grow memory without bound cut off.

use bytes::{Buf, BytesMut};
use liveline::config::Config;
use liveline::engine::{ConnId, Engine, Event, Io, SendError};
use liveline::frame::Reason;
use liveline::link::{LinkConfig, LinkEvent, LinkState, Protocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

/// A line protocol: requests and replies end in '\n'; "PING" is the keepalive.
#[derive(Default)]
struct Lines {
    out: BytesMut,
    received: Vec<String>,
    connects: Vec<SocketAddr>,
    disconnects: Vec<String>,
    /// Sent again on every new connection, as subscriptions would be.
    hello: String,
}

impl Lines {
    fn send(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\n");
    }
}

impl Protocol for Lines {
    fn handle_connected(&mut self, server: SocketAddr, _now: Instant) {
        self.connects.push(server);
        let hello = self.hello.clone();
        self.send(&hello);
    }
    fn handle_read(&mut self, inbuf: &mut BytesMut, _now: Instant) -> Result<bool, Reason> {
        let mut news = false;
        while let Some(n) = inbuf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&inbuf[..n]).into_owned();
            inbuf.advance(n + 1);
            if line == "BAD" {
                return Err(Reason::new(
                    liveline::frame::Code::PROTOCOL_VIOLATION,
                    "bad line",
                ));
            }
            self.received.push(line);
            news = true;
        }
        Ok(news)
    }
    fn handle_write_idle(&mut self, _now: Instant) {
        self.send("PING");
    }
    fn handle_disconnected(&mut self, reason: &Reason, _now: Instant) -> bool {
        self.disconnects.push(reason.text.to_string());
        false
    }
    fn poll_transmit(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.out);
        self.out.clear();
    }
    fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }
}

struct Driver {
    engine: Engine,
    now: Instant,
    /// What was written, per connection, as text.
    written: Vec<(ConnId, String)>,
    connects: Vec<(ConnId, SocketAddr)>,
    closed: Vec<ConnId>,
    events: Vec<Event>,
}

impl Driver {
    fn new() -> Driver {
        let now = Instant::now();
        let engine = Engine::with_seed(Config::default(), now, 5).unwrap();
        Driver {
            engine,
            now,
            written: Vec::new(),
            connects: Vec::new(),
            closed: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(io) = self.engine.poll_io() {
            match io {
                Io::Connect { conn, addr } => self.connects.push((conn, addr)),
                Io::Close { conn } => self.closed.push(conn),
            }
        }
        while let Some(conn) = self.engine.poll_transmit() {
            let bytes = self.engine.outbound(conn).to_vec();
            self.written
                .push((conn, String::from_utf8_lossy(&bytes).into_owned()));
            self.engine.handle_sent(conn, bytes.len(), self.now);
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs the virtual clock forward by `d`, a millisecond at a time.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += MS;
            if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
                self.engine.handle_timeout(self.now);
            }
            self.drain();
        }
    }

    fn written_to(&self, conn: ConnId) -> String {
        self.written
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, s)| s.as_str())
            .collect()
    }

    fn states(&self) -> Vec<LinkState> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Link(LinkEvent::State { state, .. }) => Some(*state),
                _ => None,
            })
            .collect()
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(servers: &[u16]) -> LinkConfig {
    let mut cfg = LinkConfig::new(servers.iter().map(|&p| addr(p)).collect());
    cfg.ping_interval = 100 * MS;
    cfg
}

#[test]
fn a_link_connects_exchanges_bytes_and_pings_when_idle() {
    let mut d = Driver::new();
    let proto = Lines {
        hello: "HELLO".into(),
        ..Lines::default()
    };
    let link = d
        .engine
        .add_link(config(&[7001]), Box::new(proto), d.now)
        .unwrap();
    d.drain();
    assert_eq!(d.connects.len(), 1);
    let (conn, to) = d.connects[0];
    assert_eq!(to, addr(7001));
    d.engine.handle_connected(conn, d.now);
    d.drain();
    assert_eq!(d.written_to(conn), "HELLO\n");
    assert_eq!(d.states(), [LinkState::Connecting, LinkState::Connected]);

    // A request from the application goes out at once.
    d.engine
        .with_link(link, |p: &mut Lines| p.send("GET a"))
        .unwrap();
    d.drain();
    assert_eq!(d.written_to(conn), "HELLO\nGET a\n");

    // A reply split across reads is handed over whole, with one Readable per read that
    // completed something.
    d.engine.handle_read(conn, b"val", d.now);
    d.engine.handle_read(conn, b"ue-a\n", d.now);
    d.drain();
    let got = d.engine.with_link(link, |p: &mut Lines| p.received.clone());
    assert_eq!(got, Ok(vec!["value-a".to_string()]));
    let readable = d
        .events
        .iter()
        .filter(|e| matches!(e, Event::Link(LinkEvent::Readable { .. })))
        .count();
    assert_eq!(readable, 1);

    // Nothing written for the ping interval: the protocol's keepalive, once per interval
    // while the server answers.
    for _ in 0..3 {
        d.run_for(100 * MS);
        d.engine.handle_read(conn, b"PONG\n", d.now);
        d.drain();
    }
    let pings = d.written_to(conn).matches("PING\n").count();
    assert!((2..=3).contains(&pings), "{pings} pings");
    assert_eq!(d.engine.link_state(link), Some(LinkState::Connected));

    // Asking for another protocol is refused, loudly.
    #[derive(Default)]
    struct Other;
    impl Protocol for Other {
        fn handle_connected(&mut self, _: SocketAddr, _: Instant) {}
        fn handle_read(&mut self, _: &mut BytesMut, _: Instant) -> Result<bool, Reason> {
            Ok(false)
        }
        fn handle_write_idle(&mut self, _: Instant) {}
        fn handle_disconnected(&mut self, _: &Reason, _: Instant) -> bool {
            false
        }
        fn poll_transmit(&mut self, _: &mut BytesMut) {}
        fn wants_write(&self) -> bool {
            false
        }
    }
    assert_eq!(
        d.engine.with_link(link, |_: &mut Other| ()),
        Err(SendError::NotActive)
    );

    d.engine.close_link(link, d.now);
    d.drain();
    assert!(d.closed.contains(&conn));
    assert_eq!(d.engine.link_state(link), None);
    assert_eq!(d.states().last(), Some(&LinkState::Closed));
    assert_eq!(
        d.engine.with_link(link, |_: &mut Lines| ()),
        Err(SendError::Gone)
    );
}

#[test]
fn a_silent_server_is_dead_after_two_ping_intervals_and_the_link_fails_over() {
    let mut d = Driver::new();
    let proto = Lines {
        hello: "SUBSCRIBE x".into(),
        ..Lines::default()
    };
    let link = d
        .engine
        .add_link(config(&[7001, 7002]), Box::new(proto), d.now)
        .unwrap();
    d.drain();
    let (first, _) = d.connects[0];
    d.engine.handle_connected(first, d.now);
    d.drain();
    // The server takes the bytes but never answers.
    d.run_for(350 * MS);
    assert!(d.closed.contains(&first), "a silent server is given up");
    let lost_after = d.events.iter().position(|e| {
        matches!(
            e,
            Event::Link(LinkEvent::State {
                state: LinkState::Backoff,
                ..
            })
        )
    });
    assert!(lost_after.is_some());
    let Some(Event::Link(LinkEvent::State {
        server,
        reason,
        retry,
        ..
    })) = lost_after.map(|i| d.events[i].clone())
    else {
        unreachable!()
    };
    assert_eq!(server, Some(addr(7001)), "the lost server is named");
    assert!(reason.unwrap().text.as_str().contains("silent"));
    assert_eq!(
        retry.map(|r| r.server),
        Some(addr(7002)),
        "the next server is named"
    );

    // The next attempt goes to the second server, and the protocol renews its session
    // there.
    d.run_for(Duration::from_millis(300));
    let (second, to) = *d.connects.last().unwrap();
    assert_eq!(to, addr(7002));
    d.engine.handle_connected(second, d.now);
    d.drain();
    assert_eq!(d.written_to(second), "SUBSCRIBE x\n");
    let (connects, disconnects) = d
        .engine
        .with_link(link, |p: &mut Lines| {
            (p.connects.clone(), p.disconnects.clone())
        })
        .unwrap();
    assert_eq!(connects, [addr(7001), addr(7002)]);
    assert_eq!(disconnects.len(), 1);
}

#[test]
fn refused_connects_back_off_with_growing_delays_along_the_list() {
    let mut d = Driver::new();
    d.engine
        .add_link(config(&[7001, 7002]), Box::new(Lines::default()), d.now)
        .unwrap();
    d.drain();
    for _ in 0..6 {
        let (conn, _) = *d.connects.last().unwrap();
        let before = d.connects.len();
        d.engine
            .handle_connect_failed(conn, "connection refused", d.now);
        d.drain();
        // Run until the next attempt (bounded by the backoff cap).
        let mut waited = 0;
        while d.connects.len() == before && waited < 11_000 {
            d.run_for(MS);
            waited += 1;
        }
        assert!(
            d.connects.len() > before,
            "no new attempt after {waited} ms"
        );
    }
    let targets: Vec<u16> = d.connects.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(targets, [7001, 7002, 7001, 7002, 7001, 7002, 7001]);
    let delays: Vec<Duration> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Link(LinkEvent::State { retry: Some(r), .. }) => Some(r.after),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 6);
    // Full jitter within a doubling window: the first delay is within 200 ms.
    assert!(delays[0] <= Duration::from_millis(200), "{delays:?}");
    assert!(delays.iter().all(|t| *t <= Duration::from_secs(10)));
}

#[test]
fn a_protocol_error_or_an_endless_message_closes_the_connection_not_the_link() {
    let mut d = Driver::new();
    let mut cfg = config(&[7001]);
    cfg.max_buffered = 1024;
    let link = d
        .engine
        .add_link(cfg, Box::new(Lines::default()), d.now)
        .unwrap();
    d.drain();
    let (conn, _) = d.connects[0];
    d.engine.handle_connected(conn, d.now);
    d.engine.handle_read(conn, b"ok\nBAD\n", d.now);
    d.drain();
    assert!(d.closed.contains(&conn));
    assert_eq!(d.engine.link_state(link), Some(LinkState::Backoff));

    d.run_for(Duration::from_millis(250));
    let (conn, _) = *d.connects.last().unwrap();
    d.engine.handle_connected(conn, d.now);
    // A line that never ends: cut off past max_buffered, whatever the reads' sizes.
    for _ in 0..5 {
        d.engine.handle_read(conn, &[b'x'; 300], d.now);
    }
    d.drain();
    assert!(d.closed.contains(&conn));
    let reasons = d
        .engine
        .with_link(link, |p: &mut Lines| p.disconnects.clone())
        .unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("bad line"), "{reasons:?}");
    assert!(reasons[1].contains("max_buffered"), "{reasons:?}");
}
