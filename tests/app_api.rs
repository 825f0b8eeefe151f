//! What an application gets from the engine beyond frames: timers on the engine's own
//! wheel (on the simulator's virtual clock, so their timing is checked exactly), sessions
//! looked up and messages sent by identity, and a result back from commands sent through a
//! `Handle` from another thread.

mod common;

use bytes::Bytes;
use common::*;
use liveline::config::Config;
use liveline::engine::{App, ClientEvent, Event, ServerEvent};
use liveline::reactor::{ListenConfig, Reactor};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

#[test]
fn timers_fire_on_time_repeat_and_stop_when_cancelled() {
    let mut w = World::new(31, 1, default_config());
    let node = w.servers[0];
    let tick = default_config().tick;
    let start = w.sim.now();
    let once = w.sim.engine(node).set_timer(100 * MS, None, 1);
    let every = w.sim.engine(node).set_timer(100 * MS, Some(50 * MS), 2);
    let mut fired: Vec<(u64, Duration)> = Vec::new();
    let end = start + 260 * MS;
    while w.sim.now() < end {
        w.sim.run_for(MS);
        let now = w.sim.now();
        for e in w.sim.take_events(node) {
            if let Event::Timer { id, token } = e {
                assert_eq!(id, if token == 1 { once } else { every });
                fired.push((token, now - start));
            }
        }
    }
    let at = |token: u64| -> Vec<Duration> {
        fired
            .iter()
            .filter(|(t, _)| *t == token)
            .map(|(_, d)| *d)
            .collect()
    };
    assert_eq!(at(1).len(), 1, "{fired:?}");
    // Never early, at most a tick (plus this loop's 1 ms step) late.
    let within = |d: Duration, due: Duration| d >= due && d <= due + tick + MS;
    assert!(within(at(1)[0], 100 * MS), "{fired:?}");
    let repeats = at(2);
    assert_eq!(repeats.len(), 4, "{fired:?}");
    for (n, d) in repeats.iter().enumerate() {
        // Each period runs from the firing before it, so lateness may add up by a tick.
        let due = 100 * MS + 50 * MS * n as u32;
        assert!(
            d >= &due && *d <= due + tick * (n as u32 + 1) + MS,
            "{fired:?}"
        );
    }
    assert!(
        !w.sim.engine(node).cancel_timer(once),
        "a one-shot is gone once fired"
    );
    assert!(w.sim.engine(node).cancel_timer(every));
    w.sim.run_for(200 * MS);
    let late = w
        .sim
        .take_events(node)
        .into_iter()
        .filter(|e| matches!(e, Event::Timer { .. }))
        .count();
    assert_eq!(late, 0, "fired after being cancelled");
}

#[test]
fn sessions_are_found_and_sent_to_by_identity() {
    let mut w = World::new(32, 1, default_config());
    let server = w.servers[0];
    let ann = w.client("ann", &[0]);
    let ben = w.client("ben", &[0]);
    assert!(w
        .sim
        .run_until(SECOND, |s| active(s, ann) && active(s, ben)));
    let mut online: Vec<String> = w
        .sim
        .engine_ref(server)
        .sessions()
        .map(|(who, _)| who.as_str().to_string())
        .collect();
    online.sort();
    assert_eq!(online, ["ann", "ben"]);
    let id = w
        .sim
        .engine(server)
        .send_to("ann", Bytes::from_static(b"by name"))
        .unwrap();
    let got = |s: &mut liveline::sim::Sim| {
        s.events(ann.0).iter().any(|e| {
            matches!(e, Event::Client(ClientEvent::Message { client, payload, .. }) if *client == ann.1 && payload == &b"by name"[..])
        })
    };
    assert!(w.sim.run_until(SECOND, got));
    assert!(w.sim.run_until(SECOND, |s| s.events(server).iter().any(
        |e| matches!(e, Event::Server(ServerEvent::Acked { id: i, .. }) if *i == id)
    )));
    // A message from ben names him.
    w.send(ben, b"hello");
    assert!(w.sim.run_until(SECOND, |s| s.events(server).iter().any(|e| {
        matches!(e, Event::Server(ServerEvent::Message { identity, payload, .. }) if identity.as_str() == "ben" && payload == &b"hello"[..])
    })));
    // Nobody by that name: refused, not queued somewhere.
    assert_eq!(
        w.sim
            .engine(server)
            .send_to("nobody", Bytes::from_static(b"x")),
        Err(liveline::engine::SendError::Gone)
    );
    let now = w.sim.now();
    w.sim.engine(ann.0).close_client(ann.1, now);
    assert!(w
        .sim
        .run_until(SECOND, |s| s.engine_ref(server).session_of("ann").is_none()));
    assert!(w.sim.engine_ref(server).session_of("ben").is_some());
}

#[test]
fn a_handle_call_returns_what_the_loop_computed() {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let addr = reactor
            .listen("127.0.0.1:0".parse().unwrap(), ListenConfig::default())
            .unwrap();
        tx.send((reactor.handle(), addr)).unwrap();
        let mut handler = |_: &mut App, _: Event| {};
        reactor.run(&mut handler).unwrap();
    });
    let (handle, addr) = rx.recv().unwrap();
    let (connections, listening) = handle.call(move |app| (app.connections(), addr)).unwrap();
    assert_eq!((connections, listening), (0, addr));
    handle.shutdown().unwrap();
    thread.join().unwrap();
    assert!(handle.call(|app| app.connections()).is_err());
}

#[test]
fn a_session_opened_over_a_real_socket_names_the_peer() {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let addr = reactor
            .listen("127.0.0.1:0".parse().unwrap(), ListenConfig::default())
            .unwrap();
        addr_tx.send((reactor.handle(), addr)).unwrap();
        let mut handler = |_: &mut App, e: Event| {
            if let Event::Server(ServerEvent::Opened { peer, .. }) = e {
                let _ = tx.send(peer);
            }
        };
        reactor.run(&mut handler).unwrap();
    });
    let (handle, addr) = addr_rx.recv().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&hello_bytes("pia", 0x91A, 0)).unwrap();
    let peer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(peer, Some(s.local_addr().unwrap()));
    handle.shutdown().unwrap();
    thread.join().unwrap();
}

/// Logins decided by the application: the verdict may come later (after a database call),
/// while the handshake deadline runs; unanswered logins are timed out.
#[test]
fn logins_wait_for_the_applications_verdict() {
    use liveline::frame::{Code, Frame, Reason};
    let mut cfg = default_config();
    cfg.handshake_timeout = SECOND;
    let mut w = World::new(33, 1, cfg);
    let server = w.servers[0];
    w.sim.engine(server).decide_logins(true);
    let login = |s: &liveline::sim::Sim, name: &str| {
        s.events(server).iter().find_map(|e| match e {
            Event::Server(ServerEvent::Login { conn, hello })
                if hello.identity.as_str() == name =>
            {
                Some(*conn)
            }
            _ => None,
        })
    };
    // Accepted after a while: the client becomes active only then.
    let ok = w.client("ok", &[0]);
    assert!(w.sim.run_until(SECOND, |s| login(s, "ok").is_some()));
    w.sim.run_for(200 * MS);
    assert!(!active(&mut w.sim, ok), "active before the verdict");
    let conn = login(&w.sim, "ok").unwrap();
    let now = w.sim.now();
    w.sim.engine(server).accept_login(conn, now).unwrap();
    assert!(w.sim.run_until(SECOND, |s| active(s, ok)));
    assert_eq!(
        w.sim.engine(server).accept_login(conn, now),
        Err(liveline::engine::SendError::NotActive),
        "a verdict is given once"
    );
    // Rejected: REJECT with the application's reason reaches the peer.
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &hello_bytes("bad", 0xBAD, 0));
    assert!(w.sim.run_until(SECOND, |s| login(s, "bad").is_some()));
    let conn = login(&w.sim, "bad").unwrap();
    let now = w.sim.now();
    let reason = Reason::new(Code::AUTH_FAILED, "token expired");
    w.sim
        .engine(server)
        .reject_login(conn, reason, now)
        .unwrap();
    assert!(w.sim.run_until(SECOND, |s| s.raw_closed(raw)));
    assert!(matches!(
        frames_in(w.sim.raw_received(raw)).first(),
        Some(Frame::Reject(r)) if r.code == Code::AUTH_FAILED && r.text.as_str() == "token expired"
    ));
    // Never answered: timed out at the handshake deadline, and a late verdict is refused.
    let slow = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(slow, &hello_bytes("slow", 0x510, 0));
    assert!(w.sim.run_until(SECOND, |s| login(s, "slow").is_some()));
    let conn = login(&w.sim, "slow").unwrap();
    assert!(w.sim.run_until(SECOND * 2, |s| s.raw_closed(slow)));
    assert_eq!(
        error_code_in(w.sim.raw_received(slow)),
        Some(Code::HANDSHAKE_TIMEOUT)
    );
    let now = w.sim.now();
    assert_eq!(
        w.sim.engine(server).accept_login(conn, now),
        Err(liveline::engine::SendError::Gone)
    );
}

#[test]
fn typed_handles_exist_only_for_what_is_there() {
    let mut w = World::new(34, 1, default_config());
    let server = w.servers[0];
    let cy = w.client("cy", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, cy)));
    let conn = w.sim.engine_ref(server).session_of("cy").unwrap();
    {
        let engine = w.sim.engine(server);
        let mut session = engine.session(conn).expect("active");
        assert_eq!(session.identity().as_str(), "cy");
        assert_eq!(session.id(), conn);
        session
            .send_message(Bytes::from_static(b"via handle"))
            .unwrap();
        assert_eq!(session.unacked(), 1);
    }
    assert!(w.sim.run_until(SECOND, |s| s.events(cy.0).iter().any(|e| {
        matches!(e, Event::Client(ClientEvent::Message { payload, .. }) if payload == &b"via handle"[..])
    })));
    let engine = w.sim.engine(cy.0);
    let mut client = engine.client(cy.1).expect("not closed");
    assert_eq!(client.info().state, liveline::engine::ClientState::Active);
    client.send_message(Bytes::from_static(b"up")).unwrap();
    client.close();
    assert!(
        w.sim.engine(cy.0).client(cy.1).is_none(),
        "closed: no handle"
    );
    assert!(w
        .sim
        .run_until(SECOND, |s| s.engine_ref(server).session_of("cy").is_none()));
    assert!(
        w.sim.engine(server).session(conn).is_none(),
        "gone: no handle"
    );
    assert!(w.sim.engine(server).session_by_identity("cy").is_none());
}

/// A client closing once everything is acknowledged: it delivers what it queued (even
/// across a server that comes up late), refuses new messages meanwhile, then closes; past
/// its deadline, what is left is reported failed.
#[test]
fn a_client_closes_once_everything_is_acknowledged() {
    use liveline::engine::{ClientState, SendError};
    let mut w = World::new(35, 1, default_config());
    let server = w.servers[0];
    w.sim.refuse(server, true);
    let dee = w.client("dee", &[0]);
    let ids: Vec<u64> = (0..3)
        .map(|i| w.send(dee, format!("m{i}").as_bytes()))
        .collect();
    let now = w.sim.now();
    w.sim
        .engine(dee.0)
        .close_client_when_acked(dee.1, SECOND * 10, now)
        .unwrap();
    assert_eq!(
        w.sim
            .engine(dee.0)
            .client_send_message(dee.1, Bytes::from_static(b"late")),
        Err(SendError::Closing)
    );
    w.sim.run_for(SECOND);
    w.sim.refuse(server, false);
    let closed = |s: &mut liveline::sim::Sim, c: ClientRef| {
        s.events(c.0).iter().any(|e| {
            matches!(e, Event::Client(ClientEvent::State { client, state: ClientState::Closed, .. }) if *client == c.1)
        })
    };
    assert!(w.sim.run_until(SECOND * 9, |s| closed(s, dee)));
    assert!(ids.iter().all(|&id| acked(&mut w.sim, dee, id)));
    assert_eq!(messages(&w.sim, server).len(), 3);
    let failed = w
        .sim
        .events(dee.0)
        .iter()
        .filter(|e| matches!(e, Event::Client(ClientEvent::Failed { .. })))
        .count();
    assert_eq!(failed, 0);

    // No server at all: the deadline closes it, and what was left is handed back.
    w.sim.refuse(server, true);
    let eli = w.client("eli", &[0]);
    w.send(eli, b"never");
    let now = w.sim.now();
    w.sim
        .engine(eli.0)
        .close_client_when_acked(eli.1, SECOND, now)
        .unwrap();
    w.sim.run_for(SECOND - 20 * MS);
    assert!(!closed(&mut w.sim, eli), "closed before its deadline");
    assert!(w.sim.run_until(SECOND, |s| closed(s, eli)));
    assert!(w.sim.events(eli.0).iter().any(|e| {
        matches!(e, Event::Client(ClientEvent::Failed { client, payload, .. }) if *client == eli.1 && payload == &b"never"[..])
    }));
}

/// A handler that waits on its own loop through `Handle::call` is told so at once instead
/// of hanging.
#[test]
fn a_handle_call_from_the_loop_itself_fails_instead_of_hanging() {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let handle = reactor.handle();
        let mut answered = false;
        let mut handler = |app: &mut App, e: Event| {
            if let Event::Timer { .. } = e {
                if !answered {
                    answered = true;
                    let _ = tx.send(handle.call(|app| app.connections()).is_err());
                    app.shutdown();
                }
            }
        };
        reactor.engine().set_timer(MS, None, 0);
        reactor.run(&mut handler).unwrap();
    });
    let refused = rx.recv_timeout(Duration::from_secs(10)).expect("no hang");
    assert!(refused);
    thread.join().unwrap();
}
