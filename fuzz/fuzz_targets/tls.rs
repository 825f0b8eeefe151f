//! The TLS-to-frame path: an engine's TLS server connection fed arbitrary bytes during its
//! handshake, or after it as ciphertext no peer made, or after it as plaintext sealed by a
//! real TLS client (frames of any shape, through TLS), or after it as records of any inner
//! content type sealed by that client (the record layer's alert and post-handshake
//! handshake paths). It must never panic, never hold more
//! than its outbound cap for the connection, and close a connection only with a reason.
//! The certificates in `fuzz/tls/` exist for this target only.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveline::config::Config;
use liveline::engine::{Engine, Event, ServerEvent};
use liveline::tls::{client_config, server_config, Progress, Tls};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn configs() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| Configs {
        server: server_config(
            include_bytes!("../tls/leaf.pem"),
            include_bytes!("../tls/leaf.key"),
        )
        .expect("fuzz certificate"),
        client: client_config(include_bytes!("../tls/ca.pem")).expect("fuzz CA"),
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let c = configs();
    let now = Instant::now();
    let cfg = Config::default();
    let cap = cfg.outbound_cap;
    let mut server = Engine::with_seed(cfg, now, 9).expect("config");
    let conn = server
        .handle_accept_tls(Arc::clone(&c.server), now)
        .expect("accept");
    if mode % 3 == 0 {
        // Garbage during the handshake, in pieces.
        for piece in data.chunks(1 + usize::from(mode / 3) % 61) {
            server.handle_read(conn, piece, now);
            drain(&mut server, cap);
        }
        return;
    }
    // A real client completes the handshake with the server engine.
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = Tls::client(Arc::clone(&c.client), name).expect("client");
    let (mut out, mut plain) = (BytesMut::new(), BytesMut::new());
    client.start(&mut out).expect("hello");
    for _ in 0..8 {
        if !out.is_empty() {
            server.handle_read(conn, &out, now);
            out.clear();
        }
        while server.poll_transmit().is_some() {}
        let mut reply = server.outbound(conn).to_vec();
        if !reply.is_empty() {
            server.handle_sent(conn, reply.len(), now);
            let _ = client.handle_read(&mut reply, &mut plain, &mut out);
        }
        if !client.is_handshaking() && out.is_empty() {
            break;
        }
    }
    if mode % 3 == 1 {
        // Ciphertext no peer made.
        server.handle_read(conn, data, now);
    } else if mode & 0x80 != 0 {
        // Records the client seals with inner content types and contents of any kind:
        // alerts, post-handshake handshake messages (KeyUpdate, tickets sent to a server,
        // fragments), unknown types. Each piece is `type, length, content`.
        let mut sealed = BytesMut::new();
        let mut rest = data;
        while let [typ, len, tail @ ..] = rest {
            let (content, next) = tail.split_at(usize::from(*len).min(tail.len()));
            let _ = client.seal_raw(*typ, content, &mut sealed);
            rest = next;
        }
        server.handle_read(conn, &sealed, now);
    } else {
        // Plaintext of any shape, sealed by the client: frames through TLS.
        let mut sealed = BytesMut::new();
        if client.encrypt(data, &mut sealed).is_ok() {
            server.handle_read(conn, &sealed, now);
        }
        let _ = matches!(
            client.handle_read(&mut [], &mut plain, &mut out),
            Ok(Progress::Ready)
        );
    }
    drain(&mut server, cap);
});

fn drain(server: &mut Engine, cap: usize) {
    while server.poll_io().is_some() {}
    while let Some(id) = server.poll_transmit() {
        assert!(
            server.outbound(id).len() <= 2 * cap,
            "outbound grew past the cap"
        );
        let n = server.outbound(id).len();
        server.handle_sent(id, n, Instant::now());
    }
    while let Some(e) = server.poll_event() {
        if let Event::Server(ServerEvent::Closed { reason, .. }) = e {
            assert!(!reason.text.as_str().is_empty(), "closed without a reason");
        }
    }
}
