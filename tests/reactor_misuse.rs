//! Over real loopback sockets: two servers built the same way hand out different session
//! ids (a failover between them loses nothing), and misuse of the loop is loud: a shutdown
//! from a handler ends `run`, a `Handle` fails once the loop has stopped, and commands see
//! the current time. Every wait is bounded.

use bytes::Bytes;
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientId, ClientState, Event, ServerEvent};
use liveline::frame::Text;
use liveline::reactor::{Handle, ListenConfig, Reactor};
use std::net::SocketAddr;
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

fn add_client(reactor: &mut Reactor, name: &str, servers: Vec<SocketAddr>) -> ClientId {
    let now = Instant::now();
    reactor
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
        .unwrap()
}

/// Turns the loop until `done` holds; panics after the limit.
fn until(reactor: &mut Reactor, events: &mut Vec<Event>, mut done: impl FnMut(&[Event]) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(events) {
        assert!(Instant::now() < deadline, "not within {LIMIT:?}");
        let mut handler = |_: &mut App, e: Event| events.push(e);
        reactor
            .turn(&mut handler, Some(Duration::from_millis(50)))
            .unwrap();
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
    let mut clients = Reactor::new(fast_config()).unwrap();
    let mut events = Vec::new();
    add_client(&mut clients, "ivy", vec![a.addr, b.addr]);
    until(&mut clients, &mut events, |ev| received(ev).len() == 3);
    // A shuts down gracefully: the client moves to B, whose messages must all arrive
    // (with one session id for both servers, the client would take them for duplicates of
    // A's and acknowledge them unseen).
    a.handle.shutdown().unwrap();
    assert!(a.stopped());
    until(&mut clients, &mut events, |ev| received(ev).len() == 6);
    assert_eq!(
        received(&events),
        ["a 1", "a 2", "a 3", "b 1", "b 2", "b 3"]
    );
    b.handle.shutdown().unwrap();
    assert!(b.stopped());
}

#[test]
fn a_shutdown_called_from_a_handler_ends_run_and_handles_then_fail() {
    let server = Pusher::start("s", 1, true);
    let mut clients = Reactor::new(fast_config()).unwrap();
    let mut events = Vec::new();
    add_client(&mut clients, "jay", vec![server.addr]);
    // The handler shuts the server down on the first login: the client is told to go
    // away, and `run` must return.
    until(&mut clients, &mut events, |ev| {
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
    assert_eq!(received(&events), ["s 1"]);
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
        let mut reactor = Reactor::new(cfg).unwrap();
        let id = add_client(&mut reactor, "kim", vec![addr]);
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
