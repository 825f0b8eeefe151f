//! Nothing acknowledged is lost, and nothing is handed over twice, when the client instance
//! behind an identity changes, when a backlog outgrows the outbound cap, or when a server's
//! session record goes away; and a server application learns the outcome of every message it
//! sent. Raw peers stand in for clients that must not acknowledge (or must resend) on cue.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use liveline::codec::Encoder;
use liveline::engine::{
    ClientEvent, ClientState, ConnId, Event, FailCause, SendError, ServerEvent,
};
use liveline::frame::{Code, Frame};
use liveline::sim::{NodeId, Sim};
use std::collections::VecDeque;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

fn frame(f: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Encoder::default().encode(f, &mut buf).unwrap();
    buf.to_vec()
}

fn message(id: u64, payload: &[u8]) -> Vec<u8> {
    frame(&Frame::Message {
        id,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// The connection of the latest session the server opened for `name`.
fn opened(s: &Sim, server: NodeId, name: &str) -> Option<ConnId> {
    s.events(server).iter().rev().find_map(|e| match e {
        Event::Server(ServerEvent::Opened { conn, identity, .. }) if identity.as_str() == name => {
            Some(*conn)
        }
        _ => None,
    })
}

fn client_messages(s: &Sim, client: ClientRef) -> Vec<Bytes> {
    s.events(client.0)
        .iter()
        .filter_map(|e| match e {
            Event::Client(ClientEvent::Message {
                client: c, payload, ..
            }) if *c == client.1 => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

fn slow_consumers(s: &Sim, server: NodeId) -> usize {
    s.events(server)
        .iter()
        .filter(|e| {
            matches!(e, Event::Server(ServerEvent::Closed { reason, .. }) if reason.code == Code::SLOW_CONSUMER)
        })
        .count()
}

/// The client's states in order; checks the diagram's rule that a connection is made
/// (Connecting) between a Backoff and the next Active.
fn states(s: &Sim, client: ClientRef) -> Vec<ClientState> {
    let seq: Vec<ClientState> = s
        .events(client.0)
        .iter()
        .filter_map(|e| match e {
            Event::Client(ClientEvent::State {
                client: c, state, ..
            }) if *c == client.1 => Some(*state),
            _ => None,
        })
        .collect();
    for pair in seq.windows(2) {
        let legal = match pair[0] {
            ClientState::Backoff => {
                matches!(pair[1], ClientState::Connecting | ClientState::Closed)
            }
            ClientState::Connecting => pair[1] != ClientState::Active,
            ClientState::Closed => false,
            _ => true,
        };
        assert!(legal, "{:?} -> {:?} in {seq:?}", pair[0], pair[1]);
    }
    seq
}

fn payloads(n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut p = vec![b'.'; size];
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Bytes::from(p)
        })
        .collect()
}

#[test]
fn a_message_to_a_replaced_instance_is_handed_back_and_reaches_the_new_one() {
    let mut w = World::new(21, 1, default_config());
    let server = w.servers[0];
    // bob's first device logs in and reads, but never acknowledges.
    let first = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(first, &hello_bytes("bob", 0xB0B1, 0));
    assert!(w
        .sim
        .run_until(SECOND, |s| opened(s, server, "bob").is_some()));
    let conn = opened(&w.sim, server, "bob").unwrap();
    let id = w
        .sim
        .engine(server)
        .send_message(conn, Bytes::from_static(b"for bob"))
        .unwrap();
    assert!(w.sim.run_until(SECOND, |s| frames_in(s.raw_received(first))
        .iter()
        .any(|f| matches!(f, Frame::Message { id: i, .. } if *i == id))));
    // bob's new device (another instance) logs in: the old one is replaced, and the
    // message it never acknowledged comes back to the application.
    let bob = w.client("bob", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, bob)));
    let failed = w.sim.events(server).iter().find_map(|e| match e {
        Event::Server(ServerEvent::Failed {
            identity,
            instance: 0xB0B1,
            id: i,
            payload,
            cause,
        }) if identity.as_str() == "bob" && *i == id => Some((payload.clone(), *cause)),
        _ => None,
    });
    let (payload, code) = failed.expect("the unacknowledged message is handed back");
    assert_eq!(&payload[..], b"for bob");
    assert_eq!(code, FailCause::Replaced);
    w.sim.run_for(10 * MS);
    assert!(frames_in(w.sim.raw_received(first))
        .iter()
        .any(|f| matches!(f, Frame::GoAway(r) if r.code == Code::REPLACED)));
    // Sent again, to the new session, it arrives.
    let conn = opened(&w.sim, server, "bob").unwrap();
    w.sim.engine(server).send_message(conn, payload).unwrap();
    assert!(w
        .sim
        .run_until(SECOND, |s| client_messages(s, bob) == [&b"for bob"[..]]));
}

#[test]
fn a_returning_instance_keeps_its_duplicate_filter_while_another_instance_came_and_went() {
    let mut w = World::new(22, 1, default_config());
    let server = w.servers[0];
    // Instance C1 sends message 1; the server hands it over and acknowledges, but the
    // connection dies, so C1 never learns of the ACK and will resend.
    let c1 = w.sim.raw_connect(w.addrs[0]);
    let mut bytes = hello_bytes("carol", 0xC1, 0);
    bytes.extend(message(1, b"once"));
    w.sim.raw_send(c1, &bytes);
    assert!(w.sim.run_until(SECOND, |s| messages(s, server).len() == 1));
    w.sim.raw_close(c1);
    // Another instance of carol logs in, then leaves.
    let c2 = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(c2, &hello_bytes("carol", 0xC2, 0));
    assert!(w
        .sim
        .run_until(SECOND, |s| starts_with_welcome(s.raw_received(c2))));
    w.sim.raw_close(c2);
    w.sim.run_for(10 * MS);
    // C1 comes back within the record linger and resends message 1.
    let back = w.sim.raw_connect(w.addrs[0]);
    let mut bytes = hello_bytes("carol", 0xC1, 1);
    bytes.extend(message(1, b"once"));
    w.sim.raw_send(back, &bytes);
    assert!(w.sim.run_until(SECOND, |s| frames_in(s.raw_received(back))
        .iter()
        .any(|f| matches!(f, Frame::Ack(1)))));
    assert_eq!(
        messages(&w.sim, server),
        [b"once".to_vec()],
        "handed over twice"
    );
}

#[test]
fn a_backlog_larger_than_the_outbound_cap_flows_to_its_client_across_a_reconnect() {
    let cfg = default_config();
    let cap = cfg.outbound_cap;
    let mut w = World::new(23, 1, cfg);
    let server = w.servers[0];
    let dave = w.client("dave", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, dave)));
    let conn = opened(&w.sim, server, "dave").unwrap();
    // 75 x 60 KB, more than the outbound cap, sent as fast as the window takes them.
    let all = payloads(75, 60_000);
    assert!(all.iter().map(|p| p.len()).sum::<usize>() > cap);
    let mut backlog: VecDeque<Bytes> = all.iter().cloned().collect();
    let mut reset = false;
    let done = w.sim.run_until(SECOND * 60, |s| {
        let conn = opened(s, server, "dave").unwrap_or(conn);
        while let Some(p) = backlog.front() {
            match s.engine(server).send_message(conn, p.clone()) {
                Ok(_) => {
                    backlog.pop_front();
                }
                // Full, or between connections: the rest waits for an ACK or a login.
                Err(SendError::WindowFull | SendError::NotActive | SendError::Gone) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if !reset && backlog.len() < 30 {
            // The connection dies with much in flight: the same instance reconnects and
            // the server resends everything unacknowledged, again more than the cap.
            reset = true;
            if let Some(link) = s.link_of(server, conn) {
                s.reset(link);
            }
        }
        backlog.is_empty() && client_messages(s, dave).len() >= all.len()
    });
    assert!(
        done,
        "{} of {} arrived",
        client_messages(&w.sim, dave).len(),
        all.len()
    );
    assert!(reset);
    assert_eq!(client_messages(&w.sim, dave), all, "each once, in order");
    assert_eq!(slow_consumers(&w.sim, server), 0);
    let seq = states(&w.sim, dave);
    assert_eq!(
        seq.iter().filter(|&&s| s == ClientState::Active).count(),
        2,
        "{seq:?}"
    );
}

#[test]
fn a_client_backlog_larger_than_the_outbound_cap_drains_once_a_server_is_up() {
    let server_cfg = default_config();
    let mut client_cfg = default_config();
    client_cfg.max_unacked_bytes = 16 << 20;
    let cap = client_cfg.outbound_cap;
    let mut w = World::with_configs(24, 1, server_cfg, client_cfg);
    let server = w.servers[0];
    w.sim.refuse(server, true);
    let erin = w.client("erin", &[0]);
    let all = payloads(200, 60_000);
    assert!(all.iter().map(|p| p.len()).sum::<usize>() > 2 * cap);
    let ids: Vec<u64> = all.iter().map(|p| w.send(erin, p)).collect();
    w.sim.run_for(SECOND);
    w.sim.refuse(server, false);
    assert!(w
        .sim
        .run_until(SECOND * 60, |s| ids.iter().all(|&id| acked(s, erin, id))));
    let got: Vec<Bytes> = messages(&w.sim, server)
        .into_iter()
        .map(Bytes::from)
        .collect();
    assert_eq!(got, all, "each once, in order");
    assert_eq!(slow_consumers(&w.sim, server), 0);
    let seq = states(&w.sim, erin);
    assert_eq!(seq.last(), Some(&ClientState::Active), "{seq:?}");
}

#[test]
fn a_server_application_learns_every_outcome_of_its_messages() {
    let mut cfg = default_config();
    cfg.record_linger = SECOND;
    let mut w = World::new(25, 1, cfg);
    let server = w.servers[0];
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &hello_bytes("fay", 0xFA, 0));
    assert!(w
        .sim
        .run_until(SECOND, |s| opened(s, server, "fay").is_some()));
    let conn = opened(&w.sim, server, "fay").unwrap();
    let one = w
        .sim
        .engine(server)
        .send_message(conn, Bytes::from_static(b"one"))
        .unwrap();
    let two = w
        .sim
        .engine(server)
        .send_message(conn, Bytes::from_static(b"two"))
        .unwrap();
    w.sim.run_for(10 * MS);
    // Only the first is acknowledged; then the client goes away for good.
    w.sim.raw_send(raw, &frame(&Frame::Ack(one)));
    let acked_one = |s: &Sim| {
        s.events(server).iter().any(|e| {
            matches!(e, Event::Server(ServerEvent::Acked { conn: c, identity, id }) if *c == conn && identity.as_str() == "fay" && *id == one)
        })
    };
    assert!(w.sim.run_until(SECOND, |s| acked_one(s)));
    w.sim.raw_close(raw);
    // When its record is forgotten, the second comes back with its payload.
    let failed = |s: &Sim| {
        s.events(server).iter().find_map(|e| match e {
            Event::Server(ServerEvent::Failed {
                identity,
                id,
                payload,
                cause: FailCause::Expired,
                ..
            }) if identity.as_str() == "fay" && *id == two => Some(payload.clone()),
            _ => None,
        })
    };
    assert!(w.sim.run_until(SECOND * 3, |s| failed(s).is_some()));
    assert_eq!(failed(&w.sim).as_deref(), Some(&b"two"[..]));
    let acks = w
        .sim
        .events(server)
        .iter()
        .filter(|e| matches!(e, Event::Server(ServerEvent::Acked { .. })))
        .count();
    assert_eq!(acks, 1, "an ACK is reported once");

    // A server that shuts down hands back what its sessions still had to send.
    let gus = w.client("gus", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, gus)));
    let conn = opened(&w.sim, server, "gus").unwrap();
    let link = w.sim.link_of(server, conn).unwrap();
    w.sim.stall(link);
    let three = w
        .sim
        .engine(server)
        .send_message(conn, Bytes::from_static(b"three"))
        .unwrap();
    let now = w.sim.now();
    w.sim.engine(server).shutdown(now);
    w.sim.run_for(10 * MS);
    let handed_back = w.sim.events(server).iter().any(|e| {
        matches!(e, Event::Server(ServerEvent::Failed { id, cause: FailCause::ShuttingDown, .. }) if *id == three)
    });
    assert!(handed_back);
}

#[test]
fn backoff_names_the_server_lost_and_the_next_one() {
    let mut w = World::new(26, 2, default_config());
    let hal = w.client("hal", &[0, 1]);
    assert!(w.sim.run_until(SECOND, |s| active(s, hal)));
    w.sim.kill(w.servers[0]);
    assert!(w.sim.run_until(SECOND * 5, |s| w_active_on(s, hal)));
    let backoff = w.sim.events(hal.0).iter().find_map(|e| match e {
        Event::Client(ClientEvent::State {
            state: ClientState::Backoff,
            server,
            retry: Some(next),
            ..
        }) => Some((*server, Some(next.server))),
        _ => None,
    });
    assert_eq!(backoff, Some((Some(w.addrs[0]), Some(w.addrs[1]))));
}

fn w_active_on(s: &mut Sim, client: ClientRef) -> bool {
    active(s, client)
        && s.events(client.0)
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Client(ClientEvent::State {
                        state: ClientState::Active,
                        ..
                    })
                )
            })
            .count()
            == 2
}

/// Ids start at 1: a MESSAGE with id 0 could only be acknowledged and never handed over, so
/// it is refused as a protocol violation rather than lost.
#[test]
fn a_message_with_id_zero_is_a_protocol_violation() {
    let mut w = World::new(27, 1, default_config());
    let server = w.servers[0];
    let raw = w.sim.raw_connect(w.addrs[0]);
    let mut bytes = hello_bytes("zed", 0x2ED, 0);
    bytes.extend(message(0, b"zero"));
    w.sim.raw_send(raw, &bytes);
    assert!(w.sim.run_until(SECOND, |s| s.raw_closed(raw)));
    let frames = frames_in(w.sim.raw_received(raw));
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Ack(_))),
        "{frames:?}"
    );
    assert_eq!(error_code(&frames), Some(Code::PROTOCOL_VIOLATION));
    assert!(messages(&w.sim, server).is_empty());
}

#[test]
fn with_confirmations_a_message_is_acknowledged_only_once_the_application_confirms_it() {
    let mut w = World::new(41, 1, default_config());
    let server = w.servers[0];
    w.sim.engine(server).confirm_messages(true);
    let ann = w.client("ann", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, ann)));
    let id = w.send(ann, b"keep me");
    // Handed over, but not acknowledged while the application has not confirmed it.
    let handed = |s: &Sim| {
        s.events(server).iter().find_map(|e| match e {
            Event::Server(ServerEvent::Message {
                identity,
                instance,
                id: i,
                ..
            }) if *i == id => Some((identity.clone(), *instance)),
            _ => None,
        })
    };
    assert!(w.sim.run_until(SECOND, |s| handed(s).is_some()));
    let (identity, instance) = handed(&w.sim).unwrap();
    w.sim.run_for(200 * MS);
    assert!(
        !acked(&mut w.sim, ann, id),
        "acknowledged before the confirmation"
    );

    // The connection drops; the client resends on its next session, and the resend is
    // neither handed over again nor acknowledged.
    let conn = opened(&w.sim, server, "ann").unwrap();
    let link = w.sim.link_of(server, conn).unwrap();
    w.sim.reset(link);
    assert!(w.sim.run_until(5 * SECOND, |s| {
        active(s, ann)
            && s.events(server)
                .iter()
                .filter(|e| matches!(e, Event::Server(ServerEvent::Opened { .. })))
                .count()
                == 2
    }));
    w.sim.run_for(200 * MS);
    assert!(!acked(&mut w.sim, ann, id));
    let handovers = w
        .sim
        .events(server)
        .iter()
        .filter(|e| matches!(e, Event::Server(ServerEvent::Message { .. })))
        .count();
    assert_eq!(handovers, 1, "a resend is not handed over again");

    // The confirmation sends the ACK on the live session; a second one is refused.
    let now = w.sim.now();
    let _ = now;
    assert_eq!(
        w.sim
            .engine(server)
            .ack_message(identity.as_str(), instance, id),
        Ok(())
    );
    assert!(w.sim.run_until(SECOND, |s| acked(s, ann, id)));
    assert_eq!(
        w.sim
            .engine(server)
            .ack_message(identity.as_str(), instance, id),
        Err(SendError::NotActive)
    );
    assert_eq!(
        w.sim.engine(server).ack_message("nobody", 1, 1),
        Err(SendError::Gone)
    );
}
