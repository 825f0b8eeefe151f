//! Stateful target: an arbitrary list of operations (bytes in arbitrary chunks on server and
//! client connections, time passing, closes, connect outcomes, application commands) applied
//! to one engine. It must never panic, its buffers must stay bounded, and every client must
//! only move along the documented state diagram.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use liveline::config::Config;
use liveline::engine::{
    ClientConfig, ClientEvent, ClientState, ConnId, Engine, Event, Io, ServerEvent,
};
use liveline::frame::Text;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Accept,
    /// Bytes read on accepted connection number `conn % accepted`.
    ServerRead {
        conn: u8,
        data: Vec<u8>,
    },
    /// Bytes read on the client's current connection.
    ClientRead {
        data: Vec<u8>,
    },
    Connected,
    ConnectFailed,
    PeerClosed {
        conn: u8,
    },
    ClientClosed,
    /// Time passes, in milliseconds (times 16).
    Advance {
        ms: u16,
    },
    /// The transport writes `n` bytes of someone's output.
    Sent {
        conn: u8,
        n: u16,
    },
    ServerSend {
        conn: u8,
        payload: Vec<u8>,
        reliable: bool,
    },
    ClientSend {
        payload: Vec<u8>,
        reliable: bool,
    },
    Shutdown,
    CloseClient,
    /// From now on, logins wait for a verdict.
    DecideLogins,
    /// A verdict on accepted connection number `conn % accepted`.
    Verdict {
        conn: u8,
        accept: bool,
    },
    /// An application timer, in milliseconds (times 16), maybe repeating.
    Timer {
        ms: u16,
        every: Option<u16>,
    },
    RetryNow,
}

fn legal(from: ClientState, to: ClientState) -> bool {
    use ClientState::*;
    matches!(
        (from, to),
        (Backoff, Connecting)
            | (Connecting, Handshaking)
            | (Handshaking, Active)
            | (Connecting | Handshaking | Active | Backoff, Backoff)
            | (Connecting | Handshaking | Active | Backoff, Closed)
    )
}

fuzz_target!(|ops: Vec<Op>| {
    let cfg = Config {
        max_connections: 64,
        outbound_cap: 64 * 1024,
        outbound_high_water: 16 * 1024,
        outbound_low_water: 4 * 1024,
        max_frame_len: 4096,
        ..Config::default()
    };
    let cap = cfg.outbound_cap + cfg.max_frame_len as usize + 4;
    let start = Instant::now();
    let mut now = start;
    let mut engine = Engine::with_seed(cfg, now, 7).expect("valid config");
    let client = engine
        .add_client(
            ClientConfig {
                identity: Text::from("fuzz"),
                token: Bytes::new(),
                servers: vec![
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:2".parse().unwrap(),
                ],
                instance: Some(1),
            },
            now,
        )
        .expect("valid client");
    let mut accepted: Vec<ConnId> = Vec::new();
    let mut client_conn: Option<ConnId> = None;
    // The one client's state; it is created in Backoff and connects at once.
    let mut state = ClientState::Backoff;
    // Server connections whose session has ended: none may open (or speak) again.
    let mut ended: Vec<ConnId> = Vec::new();
    for op in ops {
        match op {
            Op::Accept => {
                if let Ok(c) = engine.handle_accept(now) {
                    accepted.push(c);
                }
            }
            Op::ServerRead { conn, data } => {
                if let Some(&c) = accepted.get(conn as usize % accepted.len().max(1)) {
                    engine.handle_read(c, &data, now);
                }
            }
            Op::ClientRead { data } => {
                if let Some(c) = client_conn {
                    engine.handle_read(c, &data, now);
                }
            }
            Op::Connected => {
                if let Some(c) = client_conn {
                    engine.handle_connected(c, now);
                }
            }
            Op::ConnectFailed => {
                if let Some(c) = client_conn {
                    engine.handle_connect_failed(c, "refused", now);
                }
            }
            Op::PeerClosed { conn } => {
                if let Some(&c) = accepted.get(conn as usize % accepted.len().max(1)) {
                    engine.handle_closed(c, now);
                }
            }
            Op::ClientClosed => {
                if let Some(c) = client_conn {
                    engine.handle_closed(c, now);
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms) * 16);
                engine.handle_timeout(now);
            }
            Op::Sent { conn, n } => {
                let target = if conn == 255 {
                    client_conn
                } else {
                    accepted.get(conn as usize % accepted.len().max(1)).copied()
                };
                if let Some(c) = target {
                    engine.handle_sent(c, usize::from(n), now);
                }
            }
            Op::ServerSend {
                conn,
                payload,
                reliable,
            } => {
                if let Some(&c) = accepted.get(conn as usize % accepted.len().max(1)) {
                    if reliable {
                        let _ = engine.send_message(c, Bytes::from(payload));
                    } else {
                        let _ = engine.send_data(c, &payload);
                    }
                }
            }
            Op::ClientSend { payload, reliable } => {
                if reliable {
                    let _ = engine.client_send_message(client, Bytes::from(payload));
                } else {
                    let _ = engine.client_send_data(client, &payload);
                }
            }
            Op::Shutdown => engine.shutdown(now),
            Op::CloseClient => engine.close_client(client, now),
            Op::DecideLogins => engine.decide_logins(true),
            Op::Verdict { conn, accept } => {
                if let Some(&c) = accepted.get(conn as usize % accepted.len().max(1)) {
                    let _ = if accept {
                        engine.accept_login(c, now)
                    } else {
                        let reason =
                            liveline::frame::Reason::new(liveline::frame::Code::AUTH_FAILED, "no");
                        engine.reject_login(c, reason, now)
                    };
                }
            }
            Op::Timer {
                ms: ms_value,
                every,
            } => {
                let ms = |m: u16| Duration::from_millis(u64::from(m) * 16);
                engine.set_timer(ms(ms_value), every.map(ms), 0);
            }
            Op::RetryNow => {
                let _ = engine.retry_now(client, now);
            }
        }
        while let Some(io) = engine.poll_io() {
            match io {
                Io::Connect { conn, .. } => client_conn = Some(conn),
                Io::Close { conn } => {
                    accepted.retain(|&c| c != conn);
                    if client_conn == Some(conn) {
                        client_conn = None;
                    }
                }
            }
        }
        while engine.poll_transmit().is_some() {}
        while let Some(e) = engine.poll_event() {
            match e {
                Event::Client(ClientEvent::State { state: to, .. }) => {
                    assert!(
                        legal(state, to),
                        "illegal client transition {state:?} -> {to:?}"
                    );
                    state = to;
                    if to == ClientState::Closed {
                        assert!(
                            engine.client_info(client).is_none(),
                            "a closed client is freed"
                        );
                    }
                }
                Event::Server(ServerEvent::Closed { conn, .. }) => ended.push(conn),
                Event::Server(ServerEvent::Opened { conn, .. })
                | Event::Server(ServerEvent::Message { conn, .. })
                | Event::Server(ServerEvent::Acked { conn, .. }) => {
                    assert!(
                        !ended.contains(&conn),
                        "{conn} spoke after its session closed"
                    );
                }
                _ => {}
            }
        }
        assert!(engine.connections() <= 64 + 1);
        for &c in accepted.iter().chain(client_conn.iter()) {
            assert!(engine.outbound(c).len() <= cap, "outbound past the cap");
        }
    }
});
