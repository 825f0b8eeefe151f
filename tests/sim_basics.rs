//! Handshake, messages and heartbeats over the simulated network.

mod common;

use common::*;
use liveline::engine::{ClientEvent, ClientState, Event, ServerEvent};
use liveline::frame::Code;
use std::time::Duration;

#[test]
fn client_connects_sends_and_gets_acks() {
    for seed in SEEDS {
        let mut w = World::new(seed, 2, default_config());
        let client = w.client("alice", &[0, 1]);
        assert!(
            w.sim.run_until(SECOND, |s| active(s, client)),
            "seed {seed}"
        );
        let id = w.send(client, b"hello");
        assert!(
            w.sim.run_until(SECOND, |s| acked(s, client, id)),
            "seed {seed}"
        );
        let got = messages(&w.sim, w.servers[0]);
        assert_eq!(got, vec![b"hello".to_vec()], "seed {seed}");
    }
}

#[test]
fn idle_client_keeps_session_with_pings() {
    let cfg = default_config();
    let ping = cfg.ping_interval;
    let mut w = World::new(1, 1, cfg);
    let client = w.client("bob", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, client)));
    // Ten minutes of silence from the application: pings keep the session up.
    w.sim.run_for(Duration::from_secs(600));
    let info = w.sim.engine(w.clients).client_info(client.1).unwrap();
    assert_eq!(info.state, ClientState::Active);
    assert_eq!(info.reconnects, 0);
    let rtts = w
        .sim
        .events(w.clients)
        .iter()
        .filter(|e| matches!(e, Event::Client(ClientEvent::Rtt { .. })))
        .count();
    // One ping per interval, give or take the first.
    let expected = (600 / ping.as_secs()) as usize;
    assert!(
        (expected - 2..=expected + 1).contains(&rtts),
        "{rtts} pongs"
    );
    assert!(info.rtt_last.unwrap() < Duration::from_millis(2));
    let closed = w
        .sim
        .events(w.servers[0])
        .iter()
        .any(|e| matches!(e, Event::Server(ServerEvent::Closed { .. })));
    assert!(!closed);
}

#[test]
fn silent_logged_in_client_is_dropped_after_idle_timeout() {
    let cfg = default_config();
    let idle = cfg.idle_timeout;
    let tick = cfg.tick;
    let mut w = World::new(3, 1, cfg);
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &hello_bytes("mallory", 1, 0));
    let server = w.servers[0];
    // Stops at the step that read the HELLO: the server's last read.
    assert!(w.sim.run_until(SECOND, |s| s
        .events(server)
        .iter()
        .any(|e| matches!(e, Event::Server(ServerEvent::Opened { .. })))));
    let logged_in = w.sim.now();
    w.sim.run_for(Duration::from_millis(10));
    assert!(starts_with_welcome(w.sim.raw_received(raw)));
    // It never sends another byte.
    assert!(w.sim.run_until(idle * 2, |s| s.raw_closed(raw)));
    let closed_at = w.sim.now();
    let took = closed_at - logged_in;
    assert!(took >= idle, "dropped early: {took:?}");
    assert!(took <= idle + 2 * tick + MAX_NET, "dropped late: {took:?}");
    let reason = closed_reason(&w.sim, w.servers[0]).expect("a close event");
    assert_eq!(reason.code, Code::IDLE_TIMEOUT);
    assert!(error_code_in(w.sim.raw_received(raw)) == Some(Code::IDLE_TIMEOUT));
}

#[test]
fn handshake_deadline_cuts_off_a_trickling_peer() {
    let cfg = default_config();
    let deadline = cfg.handshake_timeout;
    let tick = cfg.tick;
    let mut w = World::new(4, 1, cfg);
    let raw = w.sim.raw_connect(w.addrs[0]);
    let start = w.sim.now();
    let hello = hello_bytes("slowpoke", 1, 0);
    // One byte every second: never a complete HELLO before the deadline.
    for &b in hello.iter().take(deadline.as_secs() as usize + 5) {
        if w.sim.raw_closed(raw) {
            break;
        }
        w.sim.raw_send(raw, &[b]);
        w.sim.run_for(SECOND);
    }
    assert!(w.sim.raw_closed(raw));
    let reason = closed_reason(&w.sim, w.servers[0]).expect("a close event");
    assert_eq!(reason.code, Code::HANDSHAKE_TIMEOUT);
    let closes: Vec<_> = w.sim.events(w.servers[0]).to_vec();
    assert_eq!(closes.len(), 1, "{closes:?}");
    let _ = (start, tick);
}

#[test]
fn frame_before_handshake_is_a_protocol_violation() {
    let mut w = World::new(5, 1, default_config());
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim
        .raw_send(raw, &[0, 0, 0, 9, 0x04, 0, 0, 0, 0, 0, 0, 0, 1]); // PING
    assert!(w.sim.run_until(SECOND, |s| s.raw_closed(raw)));
    assert_eq!(
        error_code_in(w.sim.raw_received(raw)),
        Some(Code::PROTOCOL_VIOLATION)
    );
}

#[test]
fn oversize_length_gets_an_error_and_a_close() {
    let mut w = World::new(6, 1, default_config());
    let client = w.client("ok", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, client)));
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &[0xFF, 0xFF, 0xFF, 0xF0, 0x06]);
    assert!(w.sim.run_until(SECOND, |s| s.raw_closed(raw)));
    assert_eq!(
        error_code_in(w.sim.raw_received(raw)),
        Some(Code::FRAME_TOO_LARGE)
    );
    // The well-behaved client is unaffected.
    let id = w.send(client, b"still here");
    assert!(w.sim.run_until(SECOND, |s| acked(s, client, id)));
}

#[test]
fn records_of_clients_that_left_are_forgotten_after_the_linger() {
    let cfg = default_config();
    let linger = cfg.record_linger;
    let mut w = World::new(15, 1, cfg);
    let clients: Vec<_> = (0..200)
        .map(|i| w.client(&format!("once{i}"), &[0]))
        .collect();
    assert!(w
        .sim
        .run_until(SECOND, |s| clients.iter().all(|&c| active(s, c))));
    assert_eq!(w.sim.engine(w.servers[0]).session_records(), 200);
    let now = w.sim.now();
    for &c in &clients {
        w.sim.engine(c.0).close_client(c.1, now);
    }
    w.sim.run_for(SECOND);
    // Kept for a while (a reconnect would find its state)...
    assert_eq!(w.sim.engine(w.servers[0]).session_records(), 200);
    // ...then forgotten: ever new names cannot grow the server's memory for good.
    w.sim.run_for(linger);
    assert_eq!(w.sim.engine(w.servers[0]).session_records(), 0);
    // A name that comes back later is a fresh session.
    let again = w.client("once7", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, again)));
    assert_eq!(w.sim.engine(w.servers[0]).session_records(), 1);
}

#[test]
fn client_adopts_a_shorter_ping_interval_announced_by_the_server() {
    // The server wants a ping every 2 s and drops after 6 s of silence; the client was
    // configured for 10 s. Without adopting the server's interval it would be dropped.
    let server_cfg = liveline::config::Config {
        ping_interval: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(6),
        ..default_config()
    };
    let mut w = World::with_configs(3, 1, server_cfg, default_config());
    let client = w.client("obliging", &[0]);
    let (server, node, id) = (w.servers[0], client.0, client.1);
    let mut sim = w.sim;
    assert!(sim.run_until(SECOND, |s| active(s, client)));
    sim.run_for(Duration::from_secs(60));
    let info = sim.engine(node).client_info(id).unwrap();
    assert_eq!(info.state, ClientState::Active);
    assert_eq!(info.reconnects, 0);
    assert!(closed_reason(&sim, server).is_none());
    let pongs = sim
        .events(node)
        .iter()
        .filter(|e| matches!(e, Event::Client(ClientEvent::Rtt { .. })))
        .count();
    assert!(pongs >= 25, "{pongs} pongs in 60 s at a 2 s interval");
}

#[test]
fn client_keeps_to_the_frame_limit_the_server_announces() {
    use bytes::Bytes;
    use liveline::engine::SendError;
    let server_cfg = liveline::config::Config {
        max_frame_len: 1024,
        ..default_config()
    };
    let mut w = World::with_configs(4, 1, server_cfg, default_config());
    let client = w.client("modest", &[0]);
    let (server, node, id) = (w.servers[0], client.0, client.1);
    let mut sim = w.sim;
    // Queued before the session: one fits the server's limit, one does not.
    let small = sim
        .engine(node)
        .client_send_message(id, Bytes::from(vec![1u8; 500]))
        .unwrap();
    let big = sim
        .engine(node)
        .client_send_message(id, Bytes::from(vec![2u8; 2000]))
        .unwrap();
    assert!(sim.run_until(SECOND, |s| active(s, client) && acked(s, client, small)));
    let failed = sim
        .events(node)
        .iter()
        .any(|e| matches!(e, Event::Client(ClientEvent::Failed { id: f, .. }) if *f == big));
    assert!(failed, "the oversized message is reported, not sent");
    // Once the limit is known, oversized sends are refused up front.
    let refused = sim
        .engine(node)
        .client_send_message(id, Bytes::from(vec![3u8; 2000]));
    assert_eq!(refused, Err(SendError::TooLarge));
    sim.run_for(SECOND);
    assert!(
        active(&mut sim, client),
        "never sent the server a frame it refuses"
    );
    assert!(closed_reason(&sim, server).is_none());
}
