//! Loops per core and admission control, over real loopback sockets: two loops share one
//! port (`SO_REUSEPORT`) and the kernel spreads connections over both; loops hand each
//! other messages through the in-process bus; an accept rate paces a storm of connects
//! without refusing any; a cap on handshakes in flight holds new connections in the
//! backlog until one completes. Every wait is bounded.

use bytes::Bytes;
use liveline::bus::{Bus, Hub};
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientState, Event, ServerEvent};
use liveline::frame::Text;
use liveline::reactor::{ListenConfig, Loops, Reactor};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `n` clients named `{prefix}{i}` to `addr`, on a loop of their own; reports each state
/// change and the time it happened.
fn clients(
    addr: SocketAddr,
    n: usize,
    prefix: &'static str,
) -> (
    liveline::reactor::Handle,
    mpsc::Receiver<(ClientState, Instant)>,
    thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let (htx, hrx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let now = reactor.now();
        for i in 0..n {
            let cfg = ClientConfig {
                identity: Text::from(format!("{prefix}{i}")),
                token: Bytes::new(),
                servers: vec![addr],
                instance: None,
            };
            reactor.engine().add_client(cfg, now).unwrap();
        }
        htx.send(reactor.handle()).unwrap();
        let mut handler = |_: &mut App, e: Event| {
            if let Event::Client(ClientEvent::State { state, .. }) = e {
                let _ = tx.send((state, Instant::now()));
            }
        };
        reactor.run(&mut handler).unwrap();
    });
    (hrx.recv().unwrap(), rx, t)
}

/// Waits (bounded) until `n` clients are active; the Backoff states seen meanwhile.
fn wait_active(rx: &mpsc::Receiver<(ClientState, Instant)>, n: usize) -> (usize, Instant) {
    let deadline = Instant::now() + LIMIT;
    let (mut active, mut backoffs) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((ClientState::Active, at)) => {
                active += 1;
                if active == n {
                    return (backoffs, at);
                }
            }
            Ok((ClientState::Backoff, _)) => backoffs += 1,
            Ok(_) => {}
            Err(_) => panic!("{active} of {n} active within {LIMIT:?}"),
        }
    }
}

#[test]
fn two_loops_share_a_port_and_hand_each_other_messages() {
    let addr = free_addr();
    let hub = Hub::new(2);
    let opened: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let heard: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let (o, h, setup_hub) = (Arc::clone(&opened), Arc::clone(&heard), hub.clone());
    let loops = Loops::spawn(2, move |i| {
        let mut reactor = Reactor::new(Config::default())?;
        let listen = ListenConfig {
            reuse_port: true,
            ..ListenConfig::default()
        };
        reactor.listen(addr, listen)?;
        let mut bus = setup_hub.member(i);
        bus.attach(reactor.handle());
        bus.subscribe(format!("loop-{i}").as_bytes());
        let (o, h) = (Arc::clone(&o), Arc::clone(&h));
        let handler = move |_: &mut App, e: Event| match e {
            Event::Server(ServerEvent::Opened { .. }) => {
                o[i].fetch_add(1, Ordering::Relaxed);
            }
            Event::Bus { channel, payload } => {
                let _ = &bus;
                let text = format!(
                    "{} {}",
                    String::from_utf8_lossy(&channel),
                    String::from_utf8_lossy(&payload)
                );
                h.lock().unwrap().push((i, text));
            }
            _ => {}
        };
        Ok((reactor, handler))
    })
    .unwrap();

    let (handle, states, t) = clients(addr, 200, "u");
    wait_active(&states, 200);
    let counts = [
        opened[0].load(Ordering::Relaxed),
        opened[1].load(Ordering::Relaxed),
    ];
    assert_eq!(counts[0] + counts[1], 200, "{counts:?}");
    // The kernel hashes connections over both listeners (all 200 on one: odds 2^-199).
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");

    // Loop 1's bus end (made here: publishing needs no loop of its own) reaches loop 0.
    let mut from_one = hub.member(1);
    from_one.publish(b"loop-0", b"hello from 1", 0).unwrap();
    from_one
        .publish(b"nobody", b"lost in silence is fine: no subscriber", 0)
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while heard.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "loop 0 never heard");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        heard.lock().unwrap().clone(),
        vec![(0, "loop-0 hello from 1".to_string())]
    );
    assert_eq!(from_one.subscribers(b"loop-1"), vec![1]);

    handle.shutdown().unwrap();
    t.join().unwrap();
    loops.shutdown();
    loops.join().unwrap();
}

fn server(listen: ListenConfig) -> (SocketAddr, Loops) {
    let addr = free_addr();
    let loops = Loops::spawn(1, move |_| {
        let mut reactor = Reactor::new(Config::default())?;
        reactor.listen(addr, listen.clone())?;
        Ok((reactor, |_: &mut App, _: Event| {}))
    })
    .unwrap();
    (addr, loops)
}

#[test]
fn an_accept_rate_paces_a_storm_without_refusing_anyone() {
    let (addr, loops) = server(ListenConfig {
        accept_rate: Some(200),
        ..ListenConfig::default()
    });
    let start = Instant::now();
    let (handle, states, t) = clients(addr, 300, "s");
    let (backoffs, last) = wait_active(&states, 300);
    let took = last - start;
    assert_eq!(backoffs, 0, "a connect failed or was refused");
    // 300 at 200 a second, 10 saved up: at least 1.45 s.
    assert!(took >= Duration::from_millis(1_400), "took {took:?}");
    handle.shutdown().unwrap();
    t.join().unwrap();
    loops.shutdown();
    loops.join().unwrap();
}

#[test]
fn a_cap_on_handshakes_holds_new_connections_until_one_completes() {
    let (addr, loops) = server(ListenConfig {
        max_handshakes: Some(5),
        ..ListenConfig::default()
    });
    // Five connections that never say HELLO fill the cap.
    let mut silent: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Until the server holds all five.
    let server_loop = loops.handles()[0].clone();
    let deadline = Instant::now() + LIMIT;
    while server_loop.call(|app| app.connections()).unwrap() < 5 {
        assert!(Instant::now() < deadline, "the five were not accepted");
        thread::sleep(Duration::from_millis(5));
    }
    let (handle, states, t) = clients(addr, 1, "late");
    // Connected in the kernel's backlog, but not accepted: no WELCOME while the cap holds.
    let waited = states
        .iter()
        .take_while(|_| true)
        .find(|(s, _)| *s == ClientState::Active || *s == ClientState::Handshaking);
    assert!(matches!(waited, Some((ClientState::Handshaking, _))));
    assert!(
        states.recv_timeout(Duration::from_millis(500)).is_err(),
        "a session opened past the cap"
    );
    // One handshake slot frees up: the waiting connection is accepted and logs in.
    drop(silent.pop());
    let (backoffs, _) = wait_active(&states, 1);
    assert_eq!(backoffs, 0);
    drop(silent);
    handle.shutdown().unwrap();
    t.join().unwrap();
    loops.shutdown();
    loops.join().unwrap();
}
