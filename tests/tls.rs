//! TLS under the protocol, over real loopback sockets: a liveline client and server
//! through TLS; Python's `ssl` module (OpenSSL), an independent stack, speaking the
//! protocol through TLS to a liveline server; a certificate for another name refused with
//! the reason; garbage instead of a ClientHello; a client that trickles its ClientHello
//! dropped at the handshake deadline. Every wait is bounded.

mod common;

use bytes::{Bytes, BytesMut};
use common::pki::{pki, Pki};
use liveline::codec::{Decoder, Encoder};
use liveline::config::Config;
use liveline::engine::{
    App, ClientConfig, ClientEvent, ClientState, ClientTls, Event, ServerEvent,
};
use liveline::frame::{Frame, Hello, Text, PROTOCOL_VERSION};
use liveline::reactor::{Handle, ListenConfig, Reactor};
use liveline::tls::{client_config, server_config};
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    handle: Handle,
    events: mpsc::Receiver<Event>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// A TLS server that sends each reliable message back to its sender.
    fn start(pki: &Pki, cfg: Config) -> Server {
        Server::start_moving(pki, cfg, 0).0
    }

    /// The same, which also reports how each session's TLS handshake went and sends the
    /// first `moves` sessions away (GOAWAY: the client reconnects).
    fn start_moving(
        pki: &Pki,
        cfg: Config,
        mut moves: usize,
    ) -> (Server, mpsc::Receiver<Option<HandshakeKind>>) {
        let tls = server_config(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
        let (tx, events) = mpsc::channel();
        let (ktx, kinds) = mpsc::channel();
        let (atx, arx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut reactor = Reactor::new(cfg).unwrap();
            let listen = ListenConfig {
                tls: Some(tls),
                ..ListenConfig::default()
            };
            let addr = reactor
                .listen("127.0.0.1:0".parse().unwrap(), listen)
                .unwrap();
            atx.send((addr, reactor.handle())).unwrap();
            let mut handler = |app: &mut App, e: Event| {
                if let Event::Server(ServerEvent::Message {
                    identity, payload, ..
                }) = &e
                {
                    let _ = app.send_to(identity.as_str(), payload.clone());
                }
                if let Event::Server(ServerEvent::Opened { conn, .. }) = &e {
                    let _ = ktx.send(app.tls_handshake_kind(*conn));
                    if moves > 0 {
                        moves -= app.move_sessions(1);
                    }
                }
                let _ = tx.send(e);
            };
            reactor.run(&mut handler).unwrap();
        });
        let (addr, handle) = arx.recv().unwrap();
        let server = Server {
            addr,
            handle,
            events,
            thread: Some(thread),
        };
        (server, kinds)
    }

    fn wait_for<T>(&self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Err(_) => panic!("no such server event within {LIMIT:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A liveline TLS client on a loop of its own; its events.
fn client(addr: SocketAddr, ca_pem: &str, name: &str) -> (Handle, mpsc::Receiver<Event>) {
    let tls = ClientTls {
        config: client_config(ca_pem.as_bytes()).unwrap(),
        server_name: ServerName::try_from(name.to_string()).unwrap(),
    };
    let (tx, rx) = mpsc::channel();
    let (htx, hrx) = mpsc::channel();
    thread::spawn(move || {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let now = reactor.now();
        let cfg = ClientConfig {
            identity: Text::from("ada"),
            token: Bytes::new(),
            servers: vec![addr],
            instance: None,
        };
        let id = reactor.engine().add_client_tls(cfg, tls, now).unwrap();
        reactor
            .engine()
            .client_send_message(id, Bytes::from_static(b"over TLS"))
            .unwrap();
        htx.send(reactor.handle()).unwrap();
        let mut handler = |_: &mut App, e: Event| {
            let _ = tx.send(e);
        };
        reactor.run(&mut handler).unwrap();
    });
    (hrx.recv().unwrap(), rx)
}

fn wait<T>(rx: &mpsc::Receiver<Event>, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => {
                if let Some(t) = f(&e) {
                    return t;
                }
            }
            Err(_) => panic!("no such event within {LIMIT:?}"),
        }
    }
}

#[test]
fn a_liveline_client_and_server_talk_through_tls() {
    let pki = pki();
    let server = Server::start(&pki, Config::default());
    let (handle, events) = client(server.addr, &pki.ca_pem, "localhost");
    wait(&events, |e| {
        matches!(
            e,
            Event::Client(ClientEvent::State {
                state: ClientState::Active,
                ..
            })
        )
        .then_some(())
    });
    let echoed = wait(&events, |e| match e {
        Event::Client(ClientEvent::Message { payload, .. }) => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(&echoed[..], b"over TLS");
    server.wait_for(|e| matches!(e, Event::Server(ServerEvent::Opened { .. })).then_some(()));
    handle.shutdown().unwrap();
}

#[test]
fn a_client_sent_away_comes_back_with_a_resumed_handshake() {
    let pki = pki();
    let (server, kinds) = Server::start_moving(&pki, Config::default(), 2);
    let (handle, events) = client(server.addr, &pki.ca_pem, "localhost");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(
            kinds
                .recv_timeout(LIMIT)
                .expect("a session within the limit"),
        );
    }
    // The first session pays a full handshake; the two after each GOAWAY resume from the
    // ticket the one before received (the engine's record layer hands tickets to rustls).
    assert_eq!(
        seen,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Resumed)
        ]
    );
    wait(&events, |e| {
        matches!(
            e,
            Event::Client(ClientEvent::State {
                state: ClientState::Active,
                ..
            })
        )
        .then_some(())
    });
    handle.shutdown().unwrap();
}

#[test]
fn a_certificate_for_another_name_is_refused_with_the_reason() {
    let pki = pki();
    let server = Server::start(&pki, Config::default());
    let (handle, events) = client(server.addr, &pki.ca_pem, "elsewhere.example");
    let why = wait(&events, |e| match e {
        Event::Client(ClientEvent::State {
            state: ClientState::Backoff,
            reason: Some(r),
            ..
        }) => Some(r.text.to_string()),
        _ => None,
    });
    assert!(
        why.contains("TLS") && why.to_lowercase().contains("name"),
        "{why}"
    );
    handle.shutdown().unwrap();
}

#[test]
fn garbage_instead_of_a_client_hello_closes_that_connection_with_a_reason() {
    let pki = pki();
    let server = Server::start(&pki, Config::default());
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // ends: the server closed it
    let why = server.wait_for(|e| match e {
        Event::Server(ServerEvent::Closed {
            identity: None,
            reason,
            ..
        }) => Some(reason.text.to_string()),
        _ => None,
    });
    assert!(why.starts_with("TLS"), "{why}");
}

#[test]
fn a_client_trickling_its_client_hello_is_dropped_at_the_handshake_deadline() {
    let pki = pki();
    let cfg = Config {
        handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let server = Server::start(&pki, cfg);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    // A handshake record header announcing 200 bytes, then a byte every 50 ms.
    let start = Instant::now();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8]).unwrap();
    let mut closed_after = None;
    while start.elapsed() < LIMIT {
        if s.write_all(&[0x01]).is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(0) = s.read(&mut buf) {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let after = closed_after.expect("never closed");
    assert!(
        after >= Duration::from_millis(450),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
}

#[test]
fn python_ssl_speaks_the_protocol_to_a_liveline_server_through_tls() {
    let pki = pki();
    let server = Server::start(&pki, Config::default());
    let dir = std::env::temp_dir().join(format!("liveline-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    // HELLO for "py", then a MESSAGE 1 "from python", as bytes for the script.
    let enc = Encoder::default();
    let mut wire = BytesMut::new();
    enc.encode(
        &Frame::Hello(Box::new(Hello {
            version: PROTOCOL_VERSION,
            instance: 7,
            attempt: 0,
            identity: Text::from("py"),
            token: Bytes::new(),
        })),
        &mut wire,
    )
    .unwrap();
    enc.encode_message(1, b"from python", &mut wire).unwrap();
    let hex: String = wire.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile={ca:?})
with socket.create_connection(("127.0.0.1", {port}), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(bytes.fromhex("{hex}"))
        got = b""
        deadline = time.time() + 10
        while time.time() < deadline and b"from python" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        print(s.version(), got.hex())
"#,
        ca = ca.to_string_lossy(),
        port = server.addr.port(),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (with its ssl module) is needed for this test");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (version, hex) = text.trim().split_once(' ').expect("version and bytes");
    assert_eq!(version, "TLSv1.3");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut buf = BytesMut::from(&bytes[..]);
    let mut dec = Decoder::default();
    let frames: Vec<Frame> = std::iter::from_fn(|| dec.decode(&mut buf).ok().flatten()).collect();
    assert!(
        matches!(frames.first(), Some(Frame::Welcome(_))),
        "{frames:?}"
    );
    // The server acknowledged the message and sent it back.
    assert!(
        frames.iter().any(|f| matches!(f, Frame::Ack(1))),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Message { payload, .. } if &payload[..] == b"from python")),
        "{frames:?}"
    );
}

#[test]
fn a_peer_that_stops_in_the_middle_of_a_record_is_dropped_at_the_deadline() {
    let pki = pki();
    let cfg = Config {
        handshake_timeout: Duration::from_millis(600),
        ..Config::default()
    };
    let server = Server::start(&pki, cfg);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A real TLS client completes the TLS handshake...
    let name = ServerName::try_from("localhost".to_string()).unwrap();
    let mut tls =
        liveline::tls::Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), name).unwrap();
    let (mut out, mut plain) = (BytesMut::new(), BytesMut::new());
    tls.start(&mut out).unwrap();
    let start = Instant::now();
    while tls.is_handshaking() {
        assert!(start.elapsed() < LIMIT, "no TLS handshake");
        if !out.is_empty() {
            s.write_all(&out).unwrap();
            out.clear();
        }
        let mut buf = [0u8; 16384];
        if let Ok(n) = s.read(&mut buf) {
            assert!(n > 0, "closed during the TLS handshake");
            tls.handle_read(&mut buf[..n], &mut plain, &mut out)
                .unwrap();
        }
    }
    if !out.is_empty() {
        s.write_all(&out).unwrap();
        out.clear();
    }
    // ...then sends half of the record that carries its HELLO, and nothing more.
    let mut hello = BytesMut::new();
    Encoder::default()
        .encode(
            &Frame::Hello(Box::new(Hello {
                version: PROTOCOL_VERSION,
                instance: 3,
                attempt: 0,
                identity: Text::from("half"),
                token: Bytes::new(),
            })),
            &mut hello,
        )
        .unwrap();
    tls.encrypt(&hello, &mut out).unwrap();
    s.write_all(&out[..out.len() / 2]).unwrap();
    let why = server.wait_for(|e| match e {
        Event::Server(ServerEvent::Closed {
            identity: None,
            reason,
            ..
        }) => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(why.code, liveline::frame::Code::HANDSHAKE_TIMEOUT, "{why}");
    assert!(start.elapsed() < Duration::from_secs(5));
}
