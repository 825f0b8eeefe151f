//! Gateways' Redis links against the simulator's fake Redis, on the virtual clock over
//! fixed seeds: sharded pub/sub between two gateways (and a reset connection), a partition
//! between one gateway and Redis, a kill and restart of Redis with its data kept, and
//! hostile bytes sent to the fake. Each scenario is run twice per seed and must tell the
//! same story, to the microsecond.

mod common;

use bytes::BytesMut;
use common::{MAX_NET, SECOND, SEEDS};
use liveline::bus::Bus;
use liveline::config::Config;
use liveline::engine::{Event, LinkId};
use liveline::link::{LinkConfig, LinkEvent, LinkState};
use liveline::redis::{Redis, RedisEvent, Reply};
use liveline::resp::encode_command;
use liveline::rng::Rng;
use liveline::sim::{NetConfig, NodeId, Sim};
use liveline::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Short, so that a silent Redis is given up on quickly.
const PING: Duration = Duration::from_millis(100);

struct Gateway {
    node: NodeId,
    link: LinkId,
    /// What the Redis link reported, with when, in order.
    seen: Vec<(Duration, RedisEvent)>,
}

impl Gateway {
    fn replies(&self) -> Vec<(u64, Reply)> {
        self.seen
            .iter()
            .filter_map(|(_, e)| match e {
                RedisEvent::Reply { token, reply } => Some((*token, reply.clone())),
                _ => None,
            })
            .collect()
    }

    fn reply(&self, token: u64) -> Option<Reply> {
        self.replies()
            .into_iter()
            .find_map(|(t, r)| (t == token).then_some(r))
    }

    fn messages(&self) -> Vec<(Bytes, Bytes)> {
        self.seen
            .iter()
            .filter_map(|(_, e)| match e {
                RedisEvent::Message { channel, payload } => {
                    Some((channel.clone(), payload.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&RedisEvent) -> bool) -> usize {
        self.seen.iter().filter(|(_, e)| f(e)).count()
    }

    fn ups(&self) -> usize {
        self.count(|e| matches!(e, RedisEvent::Up { .. }))
    }

    fn downs(&self) -> usize {
        self.count(|e| matches!(e, RedisEvent::Down { .. }))
    }

    fn failed(&self) -> usize {
        self.count(|e| matches!(e, RedisEvent::Failed { .. }))
    }
}

/// Two gateways (engines without listeners) with a Redis link each to one fake Redis.
struct Cluster {
    sim: Sim,
    redis: NodeId,
    gws: Vec<Gateway>,
    start: Instant,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let start = Instant::now();
        let mut sim = Sim::new(seed, start, NetConfig::default());
        let addr = SocketAddr::from(([10, 0, 0, 1], 6379));
        let redis = sim.add_fake_redis(addr);
        let gws = (0..2)
            .map(|_| {
                let node = sim.add_node(Config::default(), None).expect("valid config");
                let mut cfg = LinkConfig::new(vec![addr]);
                cfg.ping_interval = PING;
                cfg.connect_timeout = Duration::from_millis(200);
                cfg.backoff.initial = Duration::from_millis(50);
                cfg.backoff.max = Duration::from_millis(200);
                let now = sim.now();
                let link = sim
                    .engine(node)
                    .add_link(cfg, Box::new(Redis::default()), now)
                    .expect("valid link");
                Gateway {
                    node,
                    link,
                    seen: Vec::new(),
                }
            })
            .collect();
        let mut c = Cluster {
            sim,
            redis,
            gws,
            start,
        };
        assert!(c.run_until(SECOND, |_, g| g.iter().all(|g| g.ups() == 1)));
        c
    }

    /// Uses gateway `i`'s Redis link; what `f` queued goes out at the next step.
    fn redis<R>(&mut self, i: usize, f: impl FnOnce(&mut Redis) -> R) -> R {
        let gw = &self.gws[i];
        self.sim
            .engine(gw.node)
            .with_link(gw.link, f)
            .expect("the link speaks Redis")
    }

    /// Runs until `done` holds of the fake and the gateways, taking the links' events
    /// after every step; returns whether it did within `limit` of virtual time.
    fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Sim, &[Gateway]) -> bool,
    ) -> bool {
        let (gws, start) = (&mut self.gws, self.start);
        self.sim.run_until(limit, |s| {
            drain(s, gws, start);
            done(s, gws)
        })
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        self.run_until(d, |s, _| s.now() >= end);
    }

    fn state(&self, i: usize) -> Option<LinkState> {
        self.sim
            .engine_ref(self.gws[i].node)
            .link_state(self.gws[i].link)
    }

    /// Everything the gateways saw, with when: what two runs of one seed must share.
    fn story(&self) -> Vec<String> {
        let mut story = Vec::new();
        for (i, g) in self.gws.iter().enumerate() {
            story.extend(g.seen.iter().map(|(t, e)| format!("{t:?} gw{i}: {e:?}")));
            let states = self.sim.events(g.node).iter().filter_map(|e| match e {
                Event::Link(LinkEvent::State { state, .. }) => Some(*state),
                _ => None,
            });
            story.extend(states.map(|s| format!("gw{i} link: {s:?}")));
        }
        story
    }
}

fn drain(sim: &mut Sim, gws: &mut [Gateway], start: Instant) {
    let t = sim.now() - start;
    for g in gws {
        let seen = &mut g.seen;
        sim.engine(g.node)
            .with_link(g.link, |r: &mut Redis| {
                while let Some(e) = r.poll_event() {
                    seen.push((t, e));
                }
            })
            .expect("the link speaks Redis");
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn msg(channel: &str, payload: &str) -> (Bytes, Bytes) {
    (
        Bytes::copy_from_slice(channel.as_bytes()),
        Bytes::copy_from_slice(payload.as_bytes()),
    )
}

/// Gateway 0 subscribes to `room`; returns once the fake has the subscription.
fn subscribe_room(c: &mut Cluster, subscribers: usize) {
    c.redis(0, |r| r.subscribe(b"room"));
    let redis = c.redis;
    assert!(
        c.run_until(SECOND, |s, _| s.fake_redis(redis).subscribers(b"room")
            == subscribers)
    );
}

/// Gateway 1 publishes `payload` to `room` with `token`; returns the reply, once gateway 0
/// has the message too when `delivered`.
fn publish(c: &mut Cluster, payload: &str, token: u64, delivered: bool) -> Reply {
    c.redis(1, |r| r.publish(b"room", payload.as_bytes(), token))
        .expect("Redis is up");
    let want = msg("room", payload);
    assert!(c.run_until(SECOND, |_, g| g[1].reply(token).is_some()
        && (!delivered || g[0].messages().contains(&want))));
    c.gws[1].reply(token).expect("just seen")
}

fn scenario_pubsub(seed: u64) -> Vec<String> {
    let mut c = Cluster::new(seed);
    subscribe_room(&mut c, 1);
    assert_eq!(publish(&mut c, "hello", 7, true), Reply::Int(1));
    // A channel nobody subscribed to: nobody hears.
    c.redis(1, |r| r.publish(b"elsewhere", b"x", 8)).unwrap();
    assert!(c.run_until(SECOND, |_, g| g[1].reply(8).is_some()));
    assert_eq!(c.gws[1].reply(8), Some(Reply::Int(0)));
    // The connection is reset: both ends see it at once, the fake forgets the connection
    // and its subscription, and the link reconnects and subscribes again.
    let redis = c.redis;
    let link = c.sim.links_of(c.gws[0].node)[0];
    c.sim.reset(link);
    assert_eq!(c.sim.fake_redis(redis).subscribers(b"room"), 0);
    assert!(c.run_until(SECOND, |s, g| g[0].ups() == 2
        && s.fake_redis(redis).subscribers(b"room") == 1));
    assert_eq!(c.gws[0].downs(), 1);
    assert_eq!(publish(&mut c, "again", 10, true), Reply::Int(1));
    // Unsubscribed: the fake drops it, and a publish reaches nobody.
    c.redis(0, |r| r.unsubscribe(b"room"));
    assert!(c.run_until(SECOND, |s, _| s.fake_redis(redis).subscribers(b"room") == 0));
    assert_eq!(publish(&mut c, "late", 9, false), Reply::Int(0));
    c.run_for(10 * MAX_NET);
    assert_eq!(
        c.gws[0].messages(),
        vec![msg("room", "hello"), msg("room", "again")]
    );
    assert_eq!(c.gws[1].messages(), vec![]);
    c.story()
}

#[test]
fn pubsub_between_gateways_through_fake_redis() {
    for seed in SEEDS {
        let story = scenario_pubsub(seed);
        assert_eq!(
            story,
            scenario_pubsub(seed),
            "seed {seed}: not deterministic"
        );
    }
}

fn scenario_partition(seed: u64) -> Vec<String> {
    let mut c = Cluster::new(seed);
    let tick = Config::default().tick;
    subscribe_room(&mut c, 1);
    // A reply read just now: the silence is counted from here.
    c.redis(0, |r| r.request(1, &[b"PING"])).unwrap();
    assert!(c.run_until(SECOND, |_, g| g[0].reply(1).is_some()));
    let last_read = c.sim.now();
    let redis = c.redis;
    c.sim.partition(c.gws[0].node, redis);

    assert!(c.run_until(4 * PING, |_, g| g[0].downs() == 1));
    let detected = c.sim.now() - last_read;
    assert!(
        detected >= 2 * PING,
        "seed {seed}: down early, {detected:?}"
    );
    assert!(
        detected <= 2 * PING + 2 * tick + MAX_NET,
        "seed {seed}: down late, {detected:?}"
    );
    assert_ne!(c.state(0), Some(LinkState::Connected));

    // Requests made while down are held, in order.
    c.redis(0, |r| {
        r.request(2, &[b"SET", b"k", b"v1"]).unwrap();
        r.request(3, &[b"INCR", b"n"]).unwrap();
        r.request(4, &[b"GET", b"k"]).unwrap();
    });
    assert!(c.redis(0, |r| r.held_bytes()) > 0);
    // Redis still counts gateway 0's half-open connection as a subscriber: what it
    // publishes there is lost, as pub/sub is at most once.
    assert_eq!(publish(&mut c, "lost", 10, false), Reply::Int(1));
    c.run_for(SECOND);
    assert_eq!(
        c.gws[0].replies().len(),
        1,
        "seed {seed}: answered while cut off"
    );
    assert!(c.redis(0, |r| r.held_bytes()) > 0);
    assert_eq!(c.sim.fake_redis(redis).get(b"k"), None);

    c.sim.heal();
    assert!(
        c.run_until(5 * SECOND, |_, g| g[0].replies().len() == 4),
        "seed {seed}: held requests not answered after healing"
    );
    assert_eq!(c.gws[0].ups(), 2);
    assert_eq!(
        c.gws[0].replies()[1..],
        [
            (2, Reply::Status(Bytes::from_static(b"OK"))),
            (3, Reply::Int(1)),
            (4, bulk("v1")),
        ]
    );
    assert_eq!(c.redis(0, |r| r.held_bytes()), 0);
    assert_eq!(c.gws[0].failed(), 0);
    // Renewed on the new connection; the half-open one still counts.
    assert_eq!(c.sim.fake_redis(redis).subscribers(b"room"), 2);
    assert_eq!(publish(&mut c, "after", 11, true), Reply::Int(2));
    assert_eq!(c.gws[0].messages(), vec![msg("room", "after")]);
    // The other gateway never noticed.
    assert_eq!((c.gws[1].ups(), c.gws[1].downs()), (1, 0));
    c.story()
}

#[test]
fn partition_from_redis_holds_requests_then_renews() {
    for seed in SEEDS {
        let story = scenario_partition(seed);
        assert_eq!(
            story,
            scenario_partition(seed),
            "seed {seed}: not deterministic"
        );
    }
}

fn scenario_restart(seed: u64) -> Vec<String> {
    let mut c = Cluster::new(seed);
    let redis = c.redis;
    subscribe_room(&mut c, 1);
    c.redis(0, |r| {
        r.request(1, &[b"SET", b"k", b"v"]).unwrap();
        r.request(2, &[b"XADD", b"inbox", b"*", b"m", b"hi"])
            .unwrap();
        r.request(3, &[b"HSET", b"who", b"alice", b"1"]).unwrap();
    });
    assert!(c.run_until(SECOND, |_, g| g[0].replies().len() == 3));
    // The stream id is the virtual clock's milliseconds when Redis ran the command.
    let id = match c.gws[0].reply(2) {
        Some(Reply::Bulk(id)) => String::from_utf8(id.to_vec()).unwrap(),
        other => panic!("seed {seed}: XADD answered {other:?}"),
    };
    let (ms, seq) = id.split_once('-').expect("an id");
    assert!(ms.parse::<u64>().unwrap() <= (c.sim.now() - c.start).as_millis() as u64);
    assert_eq!(seq, "0");

    c.sim.kill(redis);
    let killed = c.sim.now();
    assert!(c.run_until(SECOND, |_, g| g.iter().all(|g| g.downs() == 1)));
    assert_eq!(c.sim.now(), killed, "seed {seed}: a reset is seen at once");
    assert_eq!(c.sim.fake_redis(redis).connections(), 0);
    c.redis(0, |r| {
        r.request(4, &[b"GET", b"k"]).unwrap();
        r.request(5, &[b"XRANGE", b"inbox", b"-", b"+"]).unwrap();
        r.request(6, &[b"INCR", b"n"]).unwrap();
        r.request(7, &[b"HKEYS", b"who"]).unwrap();
    });
    assert!(c.redis(0, |r| r.held_bytes()) > 0);
    // Refused while it is dead: the links keep trying, nothing is answered.
    c.run_for(SECOND);
    assert_eq!(c.gws[0].replies().len(), 3);
    assert!(c.sim.events(c.gws[0].node).iter().any(|e| matches!(
        e,
        Event::Link(LinkEvent::State { state: LinkState::Backoff, reason: Some(r), .. })
            if r.text.as_str().contains("refused")
    )));

    c.sim.restart(redis);
    assert!(
        c.run_until(5 * SECOND, |_, g| g[0].replies().len() == 7
            && g[1].ups() == 2),
        "seed {seed}: not back after the restart"
    );
    let entry = Reply::Array(vec![bulk(&id), Reply::Array(vec![bulk("m"), bulk("hi")])]);
    assert_eq!(
        c.gws[0].replies()[3..],
        [
            (4, bulk("v")),
            (5, Reply::Array(vec![entry])),
            (6, Reply::Int(1)),
            (7, Reply::Array(vec![bulk("alice")])),
        ]
    );
    assert_eq!(c.redis(0, |r| r.held_bytes()), 0);
    // Data kept, connections not: the subscription is the renewed one alone.
    let fake = c.sim.fake_redis(redis);
    assert_eq!((fake.xlen(b"inbox"), fake.get(b"n")), (1, Some(&b"1"[..])));
    assert_eq!(fake.subscribers(b"room"), 1);
    assert_eq!(fake.connections(), 2);
    assert_eq!(publish(&mut c, "back", 7, true), Reply::Int(1));
    assert_eq!(c.gws[0].messages(), vec![msg("room", "back")]);
    c.story()
}

#[test]
fn redis_kill_and_restart_keeps_data_and_renews() {
    for seed in SEEDS {
        let story = scenario_restart(seed);
        assert_eq!(
            story,
            scenario_restart(seed),
            "seed {seed}: not deterministic"
        );
    }
}

/// Broken and hostile clients reach the fake over the simulated network (raw peers): bytes
/// that are not RESP get an error and a close, as from Redis, and no input, whole or in
/// pieces, makes it panic or stop answering others.
#[test]
fn fake_redis_survives_hostile_bytes() {
    let words: Vec<&str> = "HELLO PING SET GET DEL INCR SSUBSCRIBE SUNSUBSCRIBE SPUBLISH XADD \
        XRANGE XDEL XLEN HSET HDEL HKEYS EVAL"
        .split(' ')
        .collect();
    // Keys that collide across types, ids at the edges, counts, and an empty argument.
    let args: Vec<&str> = "k|s|h|*|-|+|0-0|1-1|5-*|COUNT|0|-1|3||9223372036854775807|\
        18446744073709551615-18446744073709551615|18446744073709551615-*"
        .split('|')
        .collect();
    for seed in SEEDS {
        let mut sim = Sim::new(seed, Instant::now(), NetConfig::default());
        let addr = SocketAddr::from(([10, 0, 0, 1], 6379));
        let redis = sim.add_fake_redis(addr);

        let raw = sim.raw_connect(addr);
        sim.raw_send(raw, b"*1\r\n$4\r\nPING\r\n*x\r\n*1\r\n$4\r\nPING\r\n");
        sim.run_for(10 * MAX_NET);
        let got = String::from_utf8_lossy(sim.raw_received(raw)).into_owned();
        assert!(got.starts_with("+PONG\r\n-ERR Protocol error"), "{got:?}");
        assert_eq!(
            got.matches("\r\n").count(),
            2,
            "nothing read after the error"
        );
        assert!(sim.raw_closed(raw));

        let mut rng = Rng::new(seed);
        let mut pick = |n: usize| rng.up_to(n as u64 - 1) as usize;
        let mut raws = Vec::new();
        for _ in 0..100 {
            let mut bytes = Vec::new();
            for _ in 0..pick(20) {
                let mut req: Vec<Vec<u8>> = vec![words[pick(words.len())].into()];
                req.extend((0..pick(8)).map(|_| args[pick(args.len())].as_bytes().to_vec()));
                match pick(4) {
                    0 => bytes.extend((0..pick(40)).map(|_| pick(256) as u8)),
                    1 => bytes.extend(req.join(&b' ').into_iter().chain(*b"\r\n")),
                    _ => {
                        let req: Vec<&[u8]> = req.iter().map(|a| &a[..]).collect();
                        let mut out = BytesMut::new();
                        encode_command(&mut out, &req);
                        bytes.extend_from_slice(&out);
                    }
                }
            }
            let raw = sim.raw_connect(addr);
            for piece in bytes.chunks(1 + pick(64)) {
                sim.raw_send(raw, piece);
            }
            raws.push(raw);
        }
        sim.run_for(SECOND);
        for raw in raws {
            sim.raw_close(raw);
        }
        sim.run_for(SECOND);
        assert_eq!(sim.fake_redis(redis).connections(), 0);
        // Most requests were refused, but not all: the commands themselves were exercised.
        assert!(sim.fake_redis(redis).commands() > 100, "seed {seed}");
        let raw = sim.raw_connect(addr);
        sim.raw_send(raw, b"*1\r\n$4\r\nPING\r\n");
        sim.run_for(10 * MAX_NET);
        assert_eq!(sim.raw_received(raw), b"+PONG\r\n");
    }
}
