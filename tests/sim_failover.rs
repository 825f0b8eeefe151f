//! Dead servers, half-open links, graceful shutdown and reconnect storms, on a virtual
//! clock over fixed seeds.

mod common;

use common::*;
use liveline::engine::{ClientEvent, ClientState, Event, ServerEvent};
use liveline::frame::{Code, Reason};
use liveline::sim::Sim;
use std::time::Duration;

#[test]
fn half_open_link_is_detected_by_reads_and_client_fails_over() {
    let cfg = default_config();
    let (ping, tick) = (cfg.ping_interval, cfg.tick);
    for seed in SEEDS {
        let mut w = World::new(seed, 2, cfg.clone());
        let client = w.client("alice", &[0, 1]);
        assert!(w.sim.run_until(SECOND, |s| active(s, client)));
        assert_eq!(w.server_of(client), Some(0));
        // Some traffic, then the server's machine vanishes from the network: no FIN, no
        // RST, the client's writes still "succeed".
        let id = w.send(client, b"before");
        assert!(w.sim.run_until(SECOND, |s| acked(s, client, id)));
        let last_read = w.sim.now();
        w.sim.stall_node(w.servers[0]);
        // Messages sent into the void are not lost.
        let during = w.send(client, b"during");
        let failover = w.sim.run_until(ping * 4, |s| {
            s.events(client.0).iter().any(|e| {
                matches!(e, Event::Client(ClientEvent::State { state: ClientState::Backoff, reason: Some(r), .. })
                    if r.code == Code::IDLE_TIMEOUT)
            })
        });
        assert!(failover, "seed {seed}: dead server never detected");
        let detected = w.sim.now() - last_read;
        // Dead after two read-idle periods without a byte: the first sends a PING.
        assert!(detected >= ping * 2, "seed {seed}: early {detected:?}");
        assert!(
            detected <= ping * 2 + 2 * tick + MAX_NET,
            "seed {seed}: late {detected:?}"
        );
        eprintln!("seed {seed}: silent server detected {detected:?} after the last read");
        assert!(
            w.sim.run_until(SECOND, |s| active(s, client)),
            "seed {seed}"
        );
        assert_eq!(w.server_of(client), Some(1), "seed {seed}");
        assert!(w.sim.run_until(SECOND, |s| acked(s, client, during)));
        assert_eq!(messages(&w.sim, w.servers[1]), vec![b"during".to_vec()]);
    }
}

#[test]
fn goaway_moves_clients_at_once() {
    for seed in SEEDS {
        let mut w = World::new(seed, 2, default_config());
        let clients: Vec<_> = (0..20)
            .map(|i| w.client(&format!("u{i}"), &[0, 1]))
            .collect();
        assert!(w
            .sim
            .run_until(SECOND, |s| clients.iter().all(|&c| active(s, c))));
        let now = w.sim.now();
        w.sim.engine(w.servers[0]).shutdown(now);
        let start = w.sim.now();
        let moved = w.sim.run_until(SECOND * 5, |s| {
            clients.iter().all(|&c| {
                s.engine(c.0)
                    .client_info(c.1)
                    .is_some_and(|i| i.state == ClientState::Active && i.reconnects == 1)
            })
        });
        assert!(moved, "seed {seed}");
        // No timeout, no backoff: a few network trips.
        let took = w.sim.now() - start;
        assert!(took < Duration::from_millis(10), "seed {seed}: {took:?}");
        eprintln!("seed {seed}: 20 clients moved on GOAWAY in {took:?} (virtual)");
        for &c in &clients {
            assert_eq!(w.server_of(c), Some(1));
        }
        let replaced = w.sim.events(w.servers[0]).iter().all(|e| match e {
            Event::Server(ServerEvent::Closed { reason, .. }) => reason.code == Code::SHUTTING_DOWN,
            _ => true,
        });
        assert!(replaced);
    }
}

#[test]
fn killed_server_clients_reconnect_to_survivors_spread_by_jitter() {
    const CLIENTS: usize = 10_000;
    let cfg = default_config();
    let (initial, tick) = (cfg.backoff.initial, cfg.tick);
    let mut w = World::new(42, 3, cfg);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| w.client(&format!("user{i}"), &[0, 1, 2]))
        .collect();
    assert!(w
        .sim
        .run_until(SECOND * 5, |s| clients.iter().all(|&c| active(s, c))));
    let on_zero = clients
        .iter()
        .filter(|&&c| w.server_of(c) == Some(0))
        .count();
    assert_eq!(on_zero, CLIENTS, "all start on the first server");
    let killed_at = w.sim.now();
    let before = w.sim.accepts().len();
    w.sim.kill(w.servers[0]);
    let back = w
        .sim
        .run_until(SECOND * 10, |s| clients.iter().all(|&c| active(s, c)));
    assert!(back, "not everyone reconnected");
    let took = w.sim.now() - killed_at;
    eprintln!("{CLIENTS} clients back on the survivors {took:?} (virtual) after the kill");
    // Reset seen at once, one jittered backoff (rounded up to a tick), one connect.
    assert!(
        took <= initial + tick + Duration::from_millis(5),
        "{took:?}"
    );
    // Jitter spreads the storm over the backoff window: no 10 ms tick sees more than a
    // few times its fair share (10k over 200 ms = 500 per 10 ms).
    let storm = &w.sim.accepts()[before..];
    assert_eq!(storm.len(), CLIENTS);
    let mut per_tick = std::collections::HashMap::new();
    for (t, node) in storm {
        assert_ne!(*node, 0, "nobody connects to the dead server");
        *per_tick
            .entry((*t - killed_at).as_millis() / 10)
            .or_insert(0usize) += 1;
    }
    let worst = per_tick.values().copied().max().unwrap();
    assert!(worst <= 1000, "{worst} connects in one tick");
    let survivors: Vec<usize> = (1..3)
        .map(|s| {
            clients
                .iter()
                .filter(|&&c| w.server_of(c) == Some(s))
                .count()
        })
        .collect();
    assert_eq!(survivors.iter().sum::<usize>(), CLIENTS);
}

#[test]
fn duplicate_login_replaces_older_session_but_stale_reconnect_cannot() {
    let mut w = World::new(9, 1, default_config());
    let first = w.client("carol", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, first)));
    // Another process logs in as carol: the older session is told it was replaced and
    // does not fight back.
    let second = w.client("carol", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, second)));
    w.sim.run_for(SECOND * 5);
    // Stopped for good, and its memory freed: the id no longer names anything.
    assert!(w.sim.engine(first.0).client_info(first.1).is_none());
    let why = w.sim.events(first.0).iter().find_map(|e| match e {
        Event::Client(ClientEvent::State {
            client,
            state: ClientState::Closed,
            reason: Some(r),
            ..
        }) if *client == first.1 => Some(r.clone()),
        _ => None,
    });
    assert_eq!(why.map(|r: Reason| r.code), Some(Code::REPLACED));
    assert!(active(&mut w.sim, second));

    // A stale HELLO (same instance as the live session, older attempt) is refused.
    let live_instance = w
        .sim
        .events(w.servers[0])
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Server(ServerEvent::Opened { instance, .. }) => Some(*instance),
            _ => None,
        })
        .unwrap();
    let raw = w.sim.raw_connect(w.addrs[0]);
    w.sim.raw_send(raw, &hello_bytes("carol", live_instance, 0));
    assert!(w.sim.run_until(SECOND, |s| s.raw_closed(raw)));
    let frames = frames_in(w.sim.raw_received(raw));
    assert!(
        matches!(frames.first(), Some(liveline::frame::Frame::Reject(r)) if r.code == Code::STALE_SESSION),
        "{frames:?}"
    );
    assert!(active(&mut w.sim, second), "the live session survives");
}

#[test]
fn same_seed_same_run() {
    let run = |seed: u64| {
        let mut w = World::new(seed, 3, default_config());
        let start = w.sim.now();
        let clients: Vec<_> = (0..50)
            .map(|i| w.client(&format!("d{i}"), &[0, 1, 2]))
            .collect();
        w.sim.run_for(SECOND);
        for (i, &c) in clients.iter().enumerate() {
            w.send(c, format!("m{i}").as_bytes());
        }
        w.sim.kill(w.servers[0]);
        w.sim.run_for(SECOND * 2);
        // Instants differ between runs (the start is the real clock); offsets must not.
        let mut log = format!("{:?}", w.sim.now() - start);
        for node in w.servers.iter().chain([&w.clients]) {
            log += &format!("{:?}", w.sim.events(*node));
        }
        let accepts: Vec<_> = w
            .sim
            .accepts()
            .iter()
            .map(|(t, n)| (*t - start, *n))
            .collect();
        log += &format!("{accepts:?}");
        log
    };
    assert!(run(77) == run(77), "same seed, different runs");
    assert!(run(77) != run(78), "the seed has no effect");
}

#[test]
fn server_messages_still_arrive_after_failing_over_to_another_server() {
    for seed in SEEDS {
        let mut w = World::new(seed, 2, default_config());
        let client = w.client("dora", &[0, 1]);
        assert!(w.sim.run_until(SECOND, |s| active(s, client)));
        let push = |w: &mut World, server: usize, text: &'static str| {
            let conn = w
                .sim
                .events(w.servers[server])
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Server(ServerEvent::Opened { conn, .. }) => Some(*conn),
                    _ => None,
                })
                .unwrap();
            w.sim
                .engine(w.servers[server])
                .send_message(conn, bytes::Bytes::from_static(text.as_bytes()))
                .unwrap();
        };
        let received = |s: &Sim| -> Vec<Vec<u8>> {
            s.events(client.0)
                .iter()
                .filter_map(|e| match e {
                    Event::Client(ClientEvent::Message { payload, .. }) => Some(payload.to_vec()),
                    _ => None,
                })
                .collect()
        };
        for text in ["a1", "a2", "a3"] {
            push(&mut w, 0, text);
        }
        assert!(w.sim.run_until(SECOND, |s| received(s).len() == 3));
        w.sim.kill(w.servers[0]);
        assert!(w.sim.run_until(SECOND, |s| active(s, client)));
        assert_eq!(w.server_of(client), Some(1));
        // The second server numbers its messages from 1 again: they are new all the same.
        push(&mut w, 1, "b1");
        assert!(
            w.sim.run_until(SECOND, |s| received(s).len() == 4),
            "seed {seed}: the new server's message was taken for a duplicate"
        );
        assert_eq!(received(&w.sim)[3], b"b1");
    }
}

#[test]
fn refuse_newer_policy_keeps_the_live_session() {
    let cfg = liveline::config::Config {
        duplicate_login: liveline::config::DuplicateLogin::RefuseNewer,
        ..default_config()
    };
    let mut w = World::new(10, 1, cfg);
    let first = w.client("erin", &[0]);
    assert!(w.sim.run_until(SECOND, |s| active(s, first)));
    let second = w.client("erin", &[0]);
    w.sim.run_for(SECOND);
    assert!(active(&mut w.sim, first), "the live session stays");
    assert!(!active(&mut w.sim, second));
    let refused = w.sim.events(second.0).iter().any(|e| {
        matches!(e, Event::Client(ClientEvent::State { client, state: ClientState::Backoff, reason: Some(r), .. })
            if *client == second.1 && r.code == Code::STALE_SESSION)
    });
    assert!(refused);
}

#[test]
fn a_fin_from_the_server_side_moves_the_client() {
    let mut w = World::new(14, 2, default_config());
    let client = w.client("fay", &[0, 1]);
    assert!(w.sim.run_until(SECOND, |s| active(s, client)));
    let conn = w
        .sim
        .events(w.servers[0])
        .iter()
        .find_map(|e| match e {
            Event::Server(ServerEvent::Opened { conn, .. }) => Some(*conn),
            _ => None,
        })
        .unwrap();
    let id = w.send(client, b"in flight before the FIN");
    w.sim.fin(w.servers[0], conn);
    assert!(w.sim.run_until(SECOND * 2, |s| acked(s, client, id)));
    assert!(active(&mut w.sim, client));
}

#[test]
fn moving_sessions_at_a_bounded_rate_rebalances_them_onto_another_server() {
    let mut w = World::new(77, 2, default_config());
    let clients: Vec<ClientRef> = (0..50)
        .map(|i| w.client(&format!("m{i}"), &[0, 1]))
        .collect();
    assert!(w
        .sim
        .run_until(5 * SECOND, |s| clients.iter().all(|&c| active(s, c))));
    let on = |w: &mut World, server: usize| {
        clients
            .iter()
            .filter(|&&c| w.server_of(c) == Some(server))
            .count()
    };
    assert_eq!(on(&mut w, 0), 50);
    let a = w.servers[0];
    for step in 1..=3 {
        let now = w.sim.now();
        assert_eq!(w.sim.engine(a).move_sessions(10, now), 10);
        // Each moved client goes at once to the next server on its list.
        w.sim.run_for(Duration::from_millis(100));
        assert_eq!(on(&mut w, 1), 10 * step, "after step {step}");
        assert_eq!(on(&mut w, 0), 50 - 10 * step, "after step {step}");
    }
    // Never more than asked, even when fewer are left than asked for.
    let now = w.sim.now();
    assert_eq!(w.sim.engine(a).move_sessions(100, now), 20);
}
