//! A peer that stops reading: backpressure events at the watermarks, then a drop at the
//! outbound cap, with the engine's memory for it bounded throughout.

mod common;

use common::*;
use liveline::engine::{ConnId, Event, SendError, ServerEvent};
use liveline::frame::Code;
use liveline::sim::{NodeId, RawId, Sim};

fn logged_in_raw(w: &mut World, name: &str) -> (RawId, ConnId) {
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &hello_bytes(name, 7, 0));
    let server = w.servers[0];
    assert!(w
        .sim
        .run_until(SECOND, |s| opened(s, server, name).is_some()));
    (raw, opened(&w.sim, server, name).unwrap())
}

fn opened(s: &Sim, server: NodeId, name: &str) -> Option<ConnId> {
    s.events(server).iter().find_map(|e| match e {
        Event::Server(ServerEvent::Opened { conn, identity, .. }) if identity.as_str() == name => {
            Some(*conn)
        }
        _ => None,
    })
}

#[test]
fn watermarks_then_drop_at_the_cap() {
    let cfg = default_config();
    let (high, cap) = (cfg.outbound_high_water, cfg.outbound_cap);
    let mut w = World::new(11, 1, cfg);
    let good = w.client("good", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, good)));
    let (raw, conn) = logged_in_raw(&mut w, "sloth");
    w.sim.raw_set_reading(raw, false);
    let server = w.servers[0];
    let chunk = vec![b'x'; 1024];
    let mut sent = 0usize;
    let mut peak = 0usize;
    loop {
        match w.sim.engine(server).send_data(conn, &chunk) {
            Ok(()) => sent += chunk.len(),
            Err(SendError::Gone) => break,
            Err(e) => panic!("{e}"),
        }
        peak = peak.max(w.sim.engine(server).outbound(conn).len());
        if sent % (64 * 1024) == 0 {
            w.sim.run_for(std::time::Duration::from_millis(1));
        }
        assert!(sent < 64 * cap, "never dropped");
    }
    w.sim.run_for(SECOND);
    // Bounded: never more than the cap plus one frame queued for the sloth.
    assert!(peak <= cap + chunk.len() + 5, "peak {peak}");
    let events = w.sim.events(server);
    let congested = events
        .iter()
        .position(|e| matches!(e, Event::Server(ServerEvent::Backpressure { conn: c, congested: true }) if *c == conn))
        .expect("told to slow down");
    let closed = events
        .iter()
        .position(|e| {
            matches!(e, Event::Server(ServerEvent::Closed { conn: c, reason, .. })
            if *c == conn && reason.code == Code::SLOW_CONSUMER)
        })
        .expect("dropped as a slow consumer");
    assert!(congested < closed);
    assert!(sent > high);
    assert!(w.sim.raw_closed(raw));
    // The other client never noticed.
    let id = w.send(good, b"fine");
    assert!(w.sim.run_until(SECOND, |s| acked(s, good, id)));
}

#[test]
fn reader_that_catches_up_is_writable_again() {
    let mut w = World::new(12, 1, default_config());
    let high = w.sim.engine(w.servers[0]).config().outbound_high_water;
    let (raw, conn) = logged_in_raw(&mut w, "tortoise");
    w.sim.raw_set_reading(raw, false);
    let server = w.servers[0];
    let chunk = vec![b'y'; 4096];
    let mut queued = 0;
    // Fill the network window and then past the high water mark.
    while queued < 2 * high + 256 * 1024 {
        w.sim.engine(server).send_data(conn, &chunk).unwrap();
        queued += chunk.len();
        w.sim.run_for(std::time::Duration::from_micros(100));
    }
    let congested = |s: &Sim, v: bool| {
        s.events(server)
            .iter()
            .any(|e| matches!(e, Event::Server(ServerEvent::Backpressure { congested, .. }) if *congested == v))
    };
    assert!(congested(&w.sim, true));
    assert!(!congested(&w.sim, false));
    w.sim.raw_set_reading(raw, true);
    assert!(w.sim.run_until(SECOND, |s| congested(s, false)));
    assert!(w
        .sim
        .run_until(SECOND, |s| s.raw_received(raw).len() > queued));
    assert!(!w.sim.raw_closed(raw));
}
