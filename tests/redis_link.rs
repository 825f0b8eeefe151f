//! The Redis link against a real `redis-server` on loopback, through the reactor: the
//! RESP3 handshake, pipelined requests answered in order, sharded pub/sub between two
//! links, failover past an address where nothing listens, and a `kill -9` of Redis:
//! requests made while it is down are held and answered once it is back, and
//! subscriptions are renewed by themselves. Every wait is bounded.

mod common;

use common::redis::RedisServer;
use liveline::bus::Bus;
use liveline::config::Config;
use liveline::engine::{App, Event, LinkId};
use liveline::link::{LinkConfig, LinkEvent, LinkState};
use liveline::reactor::{Handle, Reactor};
use liveline::redis::{Redis, RedisEvent, Reply};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// What a node's handler saw.
#[derive(Debug)]
enum Seen {
    State(LinkState, Option<SocketAddr>),
    Redis(RedisEvent),
}

struct Node {
    handle: Handle,
    link: LinkId,
    seen: mpsc::Receiver<Seen>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Node {
    fn start(servers: Vec<SocketAddr>) -> Node {
        let (tx, seen) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let cfg = Config {
                tick: Duration::from_millis(5),
                ..Config::default()
            };
            let mut reactor = Reactor::new(cfg).unwrap();
            let mut link_cfg = LinkConfig::new(servers);
            link_cfg.ping_interval = Duration::from_millis(200);
            link_cfg.backoff.initial = Duration::from_millis(50);
            link_cfg.backoff.max = Duration::from_millis(200);
            let now = reactor.now();
            let link = reactor
                .engine()
                .add_link(link_cfg, Box::new(Redis::default()), now)
                .unwrap();
            ready_tx.send((reactor.handle(), link)).unwrap();
            let mut handler = |app: &mut App, event: Event| match event {
                Event::Link(LinkEvent::State { state, server, .. }) => {
                    let _ = tx.send(Seen::State(state, server));
                }
                Event::Link(LinkEvent::Readable { link }) => {
                    let _ = app.link(link, |r: &mut Redis| {
                        while let Some(e) = r.poll_event() {
                            let _ = tx.send(Seen::Redis(e));
                        }
                    });
                }
                _ => {}
            };
            reactor.run(&mut handler).unwrap();
        });
        let (handle, link) = ready_rx.recv().unwrap();
        Node {
            handle,
            link,
            seen,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for what `f` picks out.
    fn wait_for<T>(&self, mut f: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(s) => {
                    if let Some(t) = f(&s) {
                        return t;
                    }
                }
                Err(_) => panic!("nothing of the kind within {LIMIT:?}"),
            }
        }
    }

    fn wait_up(&self) -> SocketAddr {
        self.wait_for(|s| match s {
            Seen::Redis(RedisEvent::Up { server }) => Some(*server),
            _ => None,
        })
    }

    fn reply(&self, token: u64) -> Reply {
        self.wait_for(|s| match s {
            Seen::Redis(RedisEvent::Reply { token: t, reply }) if *t == token => {
                Some(reply.clone())
            }
            _ => None,
        })
    }

    fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Redis) -> R + Send + 'static) -> R {
        let link = self.link;
        self.handle
            .call(move |app| app.link(link, f))
            .expect("loop running")
            .expect("link open")
    }

    fn request(&self, token: u64, args: &[&str]) {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.with(move |r| {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            r.request(token, &refs).unwrap();
        });
    }

    /// Publishes until one subscriber receives it (a subscription takes effect a round
    /// trip after it is made); returns the attempts it took.
    fn publish_until_heard(&self, channel: &'static str, payload: &'static str) -> u64 {
        for token in 1_000_000.. {
            self.with(move |r| r.publish(channel.as_bytes(), payload.as_bytes(), token))
                .unwrap();
            if self.reply(token) == Reply::Int(1) {
                return token - 999_999;
            }
            assert!(token < 1_000_200, "never heard");
            thread::sleep(Duration::from_millis(10));
        }
        unreachable!()
    }

    fn stop(mut self) {
        self.handle.shutdown().unwrap();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn message(s: &Seen) -> Option<(String, String)> {
    match s {
        Seen::Redis(RedisEvent::Message { channel, payload }) => Some((
            String::from_utf8_lossy(channel).into_owned(),
            String::from_utf8_lossy(payload).into_owned(),
        )),
        _ => None,
    }
}

#[test]
fn requests_are_pipelined_and_answered_in_order_and_pubsub_crosses_between_links() {
    let redis = RedisServer::start();
    let a = Node::start(vec![redis.addr()]);
    let b = Node::start(vec![redis.addr()]);
    assert_eq!(a.wait_up(), redis.addr());
    assert_eq!(b.wait_up(), redis.addr());

    // 500 SETs and 500 GETs in one batch: every reply comes back with its own token.
    a.with(|r| {
        for i in 0..500u64 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            r.request(i, &[b"SET", k.as_bytes(), v.as_bytes()]).unwrap();
            r.request(1000 + i, &[b"GET", k.as_bytes()]).unwrap();
        }
    });
    for i in 0..500u64 {
        assert_eq!(a.reply(i), Reply::Status("OK".into()));
        assert_eq!(a.reply(1000 + i), Reply::Bulk(format!("v{i}").into()));
    }
    // An error reply is a reply, not a broken connection.
    a.request(2000, &["INCR", "k1"]);
    assert!(matches!(a.reply(2000), Reply::Error(_)));
    a.request(2001, &["GET", "nothing-here"]);
    assert_eq!(a.reply(2001), Reply::Null);

    a.with(|r| r.subscribe(b"{bob}:bell"));
    b.publish_until_heard("{bob}:bell", "ding");
    let got = a.wait_for(message);
    assert_eq!(got, ("{bob}:bell".to_string(), "ding".to_string()));
    a.stop();
    b.stop();
}

#[test]
fn a_link_fails_over_past_an_address_where_nothing_listens() {
    let redis = RedisServer::start();
    // A port with nothing behind it: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = Node::start(vec![dead, redis.addr()]);
    let lost = a.wait_for(|s| match s {
        Seen::State(LinkState::Backoff, server) => Some(*server),
        _ => None,
    });
    assert_eq!(lost, Some(dead));
    assert_eq!(a.wait_up(), redis.addr());
    a.stop();
}

#[test]
fn after_a_kill_9_of_redis_held_requests_are_answered_and_subscriptions_renewed() {
    let mut redis = RedisServer::start_with(true);
    let a = Node::start(vec![redis.addr()]);
    let b = Node::start(vec![redis.addr()]);
    a.wait_up();
    b.wait_up();
    a.with(|r| r.subscribe(b"{ann}:bell"));
    b.publish_until_heard("{ann}:bell", "before");
    a.wait_for(message);

    redis.kill();
    a.wait_for(|s| matches!(s, Seen::Redis(RedisEvent::Down { .. })).then_some(()));
    // Made while Redis is down: held, not lost, not refused.
    a.request(1, &["SET", "during", "outage"]);
    assert!(a.with(|r| r.held_bytes()) > 0);

    redis.restart();
    a.wait_up();
    assert_eq!(a.reply(1), Reply::Status("OK".into()));
    assert!(redis.raw(&["GET", "during"]).contains("outage"));
    // The subscription was renewed by the link itself.
    b.wait_up();
    b.publish_until_heard("{ann}:bell", "after");
    assert_eq!(
        a.wait_for(message),
        ("{ann}:bell".to_string(), "after".to_string())
    );
    a.stop();
    b.stop();
}
