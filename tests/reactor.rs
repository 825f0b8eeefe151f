//! The reactor over real loopback sockets: echo through many connections, heartbeats and
//! idle drops with short real timeouts, connect failure and failover, graceful shutdown;
//! two servers built the same way hand out different session ids (a failover between them
//! loses nothing); misuse of the loop is loud: a shutdown from a handler ends `run`, a
//! `Handle` fails once the loop has stopped, and commands see the current time. Every wait
//! is bounded; nothing sleeps and hopes.

use bytes::Bytes;
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientState, Engine, Event, ServerEvent};
use liveline::frame::{Code, Frame, Text};
use liveline::reactor::{Handle, ListenConfig, Reactor};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn fast_config() -> Config {
    Config {
        tick: Duration::from_millis(5),
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

struct Server {
    addr: SocketAddr,
    handle: Handle,
    events: mpsc::Receiver<Event>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// A server on an ephemeral loopback port that echoes each reliable message back as
    /// DATA, reporting every event.
    fn start(cfg: Config) -> Server {
        let (tx, events) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut reactor = Reactor::new(cfg).unwrap();
            let addr = reactor
                .listen("127.0.0.1:0".parse().unwrap(), ListenConfig::default())
                .unwrap();
            addr_tx.send((addr, reactor.handle())).unwrap();
            let mut handler = |app: &mut App, event: Event| {
                if let Event::Server(ServerEvent::Message { conn, payload, .. }) = &event {
                    let _ = app.send_data(*conn, payload);
                }
                let _ = tx.send(event);
            };
            reactor.run(&mut handler).unwrap();
        });
        let (addr, handle) = addr_rx.recv().unwrap();
        Server {
            addr,
            handle,
            events,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for an event matching `f`.
    fn wait_for(&self, mut f: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(_) => panic!("no such event within {LIMIT:?}"),
            }
        }
    }

    fn stop(mut self) {
        self.handle.shutdown().unwrap();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A client-side reactor driven on the test thread.
struct Clients {
    reactor: Reactor,
    events: Vec<Event>,
}

impl Clients {
    fn new(cfg: Config) -> Clients {
        Clients {
            reactor: Reactor::new(cfg).unwrap(),
            events: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, servers: Vec<SocketAddr>) -> liveline::engine::ClientId {
        let now = self.reactor.now().max(Instant::now());
        self.reactor
            .engine()
            .add_client(
                ClientConfig {
                    identity: Text::from(name.to_string()),
                    token: Bytes::new(),
                    servers,
                    instance: None,
                },
                now,
            )
            .expect("valid client")
    }

    /// Turns the loop until `done` holds; panics after the limit.
    fn until(&mut self, mut done: impl FnMut(&mut Engine, &[Event]) -> bool) {
        let deadline = Instant::now() + LIMIT;
        let mut events = std::mem::take(&mut self.events);
        while !done(self.reactor.engine(), &events) {
            assert!(
                Instant::now() < deadline,
                "condition not met within {LIMIT:?}"
            );
            let mut handler = |_: &mut App, e: Event| events.push(e);
            self.reactor
                .turn(&mut handler, Some(Duration::from_millis(50)))
                .unwrap();
        }
        self.events = events;
    }
}

fn is_active(engine: &mut Engine, c: liveline::engine::ClientId) -> bool {
    engine
        .client_info(c)
        .is_some_and(|i| i.state == ClientState::Active)
}

#[test]
fn many_connections_echo_many_frames() {
    let server = Server::start(Config::default());
    let mut clients = Clients::new(Config::default());
    let ids: Vec<_> = (0..200)
        .map(|i| clients.add(&format!("c{i}"), vec![server.addr]))
        .collect();
    clients.until(|e, _| ids.iter().all(|&c| is_active(e, c)));
    const PER_CLIENT: usize = 50;
    for round in 0..PER_CLIENT {
        for &c in &ids {
            let payload = Bytes::from(format!("{c}:{round:04}"));
            clients
                .reactor
                .engine()
                .client_send_message(c, payload)
                .unwrap();
        }
    }
    let total = ids.len() * PER_CLIENT;
    clients.until(|_, ev| {
        ev.iter()
            .filter(|e| matches!(e, Event::Client(ClientEvent::Acked { .. })))
            .count()
            == total
            && ev
                .iter()
                .filter(|e| matches!(e, Event::Client(ClientEvent::Data { .. })))
                .count()
                == total
    });
    // Each client got its own messages back, in order.
    for &c in &ids {
        let echoed: Vec<_> = clients
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Client(ClientEvent::Data { client, payload }) if *client == c => {
                    Some(payload.clone())
                }
                _ => None,
            })
            .collect();
        let want: Vec<_> = (0..PER_CLIENT)
            .map(|r| Bytes::from(format!("{c}:{r:04}")))
            .collect();
        assert_eq!(echoed, want);
    }
    server.stop();
}

#[test]
fn pings_keep_an_idle_client_alive_and_silent_peers_are_dropped() {
    let cfg = fast_config();
    let server = Server::start(cfg.clone());
    let mut clients = Clients::new(cfg.clone());
    let c = clients.add("pinger", vec![server.addr]);
    clients.until(|e, _| is_active(e, c));

    // A raw peer that logs in and then says nothing, on its own thread while the client
    // loop keeps turning.
    let addr = server.addr;
    let mute = thread::spawn(move || {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(LIMIT)).unwrap();
        let mut hello = bytes::BytesMut::new();
        liveline::codec::Encoder::default()
            .encode(
                &Frame::Hello(Box::new(liveline::frame::Hello {
                    version: 1,
                    instance: 1,
                    attempt: 0,
                    identity: Text::from("mute"),
                    token: Bytes::new(),
                })),
                &mut hello,
            )
            .unwrap();
        raw.write_all(&hello).unwrap();
        let logged_in = Instant::now();
        let mut got = Vec::new();
        raw.read_to_end(&mut got).unwrap(); // returns at the server's close
        (logged_in.elapsed(), got)
    });
    clients.until(|_, _| mute.is_finished());
    let (silent_for, got) = mute.join().unwrap();
    assert!(silent_for >= cfg.idle_timeout, "{silent_for:?}");
    let frames = {
        let mut buf = bytes::BytesMut::from(&got[..]);
        let mut dec = liveline::codec::Decoder::default();
        let mut v = Vec::new();
        while let Ok(Some(f)) = dec.decode(&mut buf) {
            v.push(f);
        }
        v
    };
    assert!(matches!(frames.first(), Some(Frame::Welcome(_))));
    assert!(
        matches!(frames.last(), Some(Frame::Error(r)) if r.code == Code::IDLE_TIMEOUT),
        "{frames:?}"
    );
    server.wait_for(|e| {
        matches!(e, Event::Server(ServerEvent::Closed { identity: Some(i), reason, .. })
            if i.as_str() == "mute" && reason.code == Code::IDLE_TIMEOUT)
    });

    // Meanwhile the pinging client, which sent no application data, stayed up: keep it
    // running for several idle timeouts and count its pongs.
    let until = Instant::now() + cfg.idle_timeout * 3;
    clients.until(|_, _| Instant::now() >= until);
    let info = clients.reactor.engine().client_info(c).unwrap();
    assert_eq!(info.state, ClientState::Active);
    assert_eq!(info.reconnects, 0);
    let pongs = clients
        .events
        .iter()
        .filter(|e| matches!(e, Event::Client(ClientEvent::Rtt { .. })))
        .count();
    assert!(pongs >= 5, "{pongs} pongs");
    assert!(info.rtt_last.is_some());
    server.stop();
}

#[test]
fn connect_failure_fails_over_to_the_next_server() {
    // A port nobody listens on: bind, note it, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = Server::start(Config::default());
    let mut clients = Clients::new(Config::default());
    let c = clients.add("roamer", vec![dead, server.addr]);
    clients.until(|e, _| is_active(e, c));
    let info = clients.reactor.engine().client_info(c).unwrap();
    assert_eq!(info.server, Some(server.addr));
    let refused = clients.events.iter().any(|e| {
        matches!(e, Event::Client(ClientEvent::State { state: ClientState::Backoff, reason: Some(r), .. })
            // With the operating system's word for it.
            if r.text.as_str().starts_with("connect failed: ") && r.text.as_str().contains("refused"))
    });
    assert!(refused);
    server.stop();
}

#[test]
fn graceful_shutdown_sends_goaway_and_clients_move_at_once() {
    let a = Server::start(Config::default());
    let b = Server::start(Config::default());
    let mut clients = Clients::new(Config::default());
    let ids: Vec<_> = (0..20)
        .map(|i| clients.add(&format!("m{i}"), vec![a.addr, b.addr]))
        .collect();
    clients.until(|e, _| ids.iter().all(|&c| is_active(e, c)));
    let pending: Vec<u64> = ids
        .iter()
        .map(|&c| {
            clients
                .reactor
                .engine()
                .client_send_message(c, Bytes::from_static(b"around the move"))
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    a.stop();
    clients.until(|e, _| {
        ids.iter().all(|&c| {
            e.client_info(c)
                .is_some_and(|i| i.state == ClientState::Active && i.server == Some(b.addr))
        })
    });
    // GOAWAY means no timeout and no backoff: well under the smallest timer involved.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let goaways = clients
        .events
        .iter()
        .filter(|e| {
            matches!(e, Event::Client(ClientEvent::State { state: ClientState::Backoff, reason: Some(r), retry: Some(next), .. })
                if r.code == Code::SHUTTING_DOWN && next.after.is_zero())
        })
        .count();
    assert_eq!(goaways, ids.len());
    // Every message is acknowledged by one server or the other.
    clients.until(|e, _| ids.iter().all(|&c| e.client_info(c).unwrap().unacked == 0));
    assert_eq!(pending.len(), ids.len());
    b.stop();
}

/// More output than the socket buffers hold, for a peer that reads only later: the raw
/// echo server's writes hit `WouldBlock`, and the rest must go out on the writable edges
/// as the peer catches up, every byte in order.
#[test]
fn output_held_up_by_a_late_reader_goes_out_on_the_writable_edge() {
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        // Room for all of it at the server: the point is the writable edge, not the cap.
        let cfg = Config {
            outbound_cap: 64 << 20,
            ..Config::default()
        };
        let mut reactor = Reactor::new(cfg).unwrap();
        let raw = ListenConfig {
            raw: true,
            ..ListenConfig::default()
        };
        let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), raw).unwrap();
        addr_tx.send((addr, reactor.handle())).unwrap();
        let mut echo = |app: &mut App, event: Event| {
            if let Event::Raw { conn, data } = event {
                app.send_raw(conn, &data).unwrap();
            }
        };
        reactor.run(&mut echo).unwrap();
    });
    let (addr, handle) = addr_rx.recv().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    // A bounded receive buffer; with the kernel's send buffer at most 4 MiB here
    // (tcp_wmem), 8 MiB cannot all be in flight: the server's writes must block.
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    // Nothing is read until everything is written: the echo piles up at the server.
    stream.write_all(&sent).unwrap();
    let mut got = vec![0; sent.len()];
    stream.read_exact(&mut got).unwrap();
    assert!(got == sent, "the echo differs from what was sent");
    drop(stream);
    handle.shutdown().unwrap();
    server.join().unwrap();
}

/// A server thread that sends `pushes` reliable messages, each named after `name`, to every
/// session it opens; it reports its events and whether `run` returned.
struct Pusher {
    addr: SocketAddr,
    handle: Handle,
    done: mpsc::Receiver<()>,
}

impl Pusher {
    fn start(name: &'static str, pushes: usize, shutdown_on_open: bool) -> Pusher {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            // Built exactly alike, as two copies of one program would be.
            let mut reactor = Reactor::new(fast_config()).unwrap();
            let addr = reactor
                .listen("127.0.0.1:0".parse().unwrap(), ListenConfig::default())
                .unwrap();
            addr_tx.send((addr, reactor.handle())).unwrap();
            let mut handler = |app: &mut App, event: Event| {
                if let Event::Server(ServerEvent::Opened { conn, .. }) = event {
                    for i in 1..=pushes {
                        let payload = Bytes::from(format!("{name} {i}"));
                        app.send_message(conn, payload).unwrap();
                    }
                    if shutdown_on_open {
                        app.shutdown();
                    }
                }
            };
            reactor.run(&mut handler).unwrap();
            let _ = done_tx.send(());
        });
        let (addr, handle) = addr_rx.recv().unwrap();
        Pusher { addr, handle, done }
    }

    fn stopped(&self) -> bool {
        self.done.recv_timeout(LIMIT).is_ok()
    }
}

fn received(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Client(ClientEvent::Message { payload, .. }) => {
                Some(String::from_utf8_lossy(payload).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn servers_built_alike_hand_out_different_sessions_and_a_failover_loses_nothing() {
    let a = Pusher::start("a", 3, false);
    let b = Pusher::start("b", 3, false);
    let mut clients = Clients::new(fast_config());
    clients.add("ivy", vec![a.addr, b.addr]);
    clients.until(|_, ev| received(ev).len() == 3);
    // A shuts down gracefully: the client moves to B, whose messages must all arrive
    // (with one session id for both servers, the client would take them for duplicates of
    // A's and acknowledge them unseen).
    a.handle.shutdown().unwrap();
    assert!(a.stopped());
    clients.until(|_, ev| received(ev).len() == 6);
    assert_eq!(
        received(&clients.events),
        ["a 1", "a 2", "a 3", "b 1", "b 2", "b 3"]
    );
    b.handle.shutdown().unwrap();
    assert!(b.stopped());
}

#[test]
fn a_shutdown_called_from_a_handler_ends_run_and_handles_then_fail() {
    let server = Pusher::start("s", 1, true);
    let mut clients = Clients::new(fast_config());
    clients.add("jay", vec![server.addr]);
    // The handler shuts the server down on the first login: the client is told to go
    // away, and `run` must return.
    clients.until(|_, ev| {
        ev.iter().any(|e| {
            matches!(
                e,
                Event::Client(ClientEvent::State {
                    state: ClientState::Backoff,
                    ..
                })
            )
        })
    });
    assert_eq!(received(&clients.events), ["s 1"]);
    assert!(server.stopped(), "run did not return");
    // The loop is gone: a command is refused, not dropped in silence.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let result = server.handle.run(move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(result.is_err(), "Handle::run after the loop stopped");
    assert!(server.handle.shutdown().is_err());
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn commands_through_a_handle_see_the_current_time() {
    let server = Pusher::start("t", 0, false);
    // Long heartbeats: nothing but the command wakes the client loop.
    let cfg = Config {
        ping_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let (tx, rx) = mpsc::channel();
    let addr = server.addr;
    let client_thread = thread::spawn(move || {
        let mut clients = Clients::new(cfg);
        let id = clients.add("kim", vec![addr]);
        let mut reactor = clients.reactor;
        tx.send((reactor.handle(), id)).unwrap();
        let mut handler = |_: &mut App, _: Event| {};
        reactor.run(&mut handler).unwrap();
    });
    let (handle, id) = rx.recv().unwrap();
    let ask = || {
        let (tx, rx) = mpsc::channel();
        handle
            .run(move |app| {
                let _ = tx.send(app.client_info(id));
            })
            .unwrap();
        rx.recv_timeout(LIMIT).unwrap().expect("client exists")
    };
    let deadline = Instant::now() + LIMIT;
    while ask().state != ClientState::Active {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    let active_seen = Instant::now();
    // Real time must pass for uptime to grow; the assertion allows for scheduling.
    thread::sleep(Duration::from_millis(300));
    let info = ask();
    let uptime = info.uptime.expect("active");
    let waited = active_seen.elapsed();
    assert!(
        uptime + Duration::from_millis(20) >= Duration::from_millis(300)
            && uptime <= waited + Duration::from_millis(50),
        "uptime {uptime:?} after {waited:?}"
    );
    handle.shutdown().unwrap();
    client_thread.join().unwrap();
    server.handle.shutdown().unwrap();
    assert!(server.stopped());
}
