//! echo-im's deliver script, run by a real `redis-server` exactly as the gateways send it:
//! a message is stored once per origin, the seen set keeps only its newest members, and an
//! inbox that is full stores nothing and remembers nothing (so the sender's retry can
//! store it later).

mod common;

#[path = "../examples/echo-im/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../examples/echo-im/proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../examples/echo-im/server.rs"]
#[allow(dead_code)]
mod server;

use common::redis::RedisServer;

/// One deliver call for bob; `member` is the MESSAGE id of sender instance `i1`.
fn deliver(redis: &RedisServer, member: u64, max: usize, keep: usize) -> String {
    let (member, max, keep) = (member.to_string(), max.to_string(), keep.to_string());
    redis.raw(&[
        "EVAL",
        cluster::DELIVER,
        "2",
        "{bob}:inbox",
        "{bob}:seen:alice:i1",
        &max,
        "M i1:1 alice to hello",
        "600000",
        "{bob}:bell",
        "alice",
        "300000",
        &member,
        &member,
        &keep,
    ])
}

fn stored(reply: &str) -> bool {
    // {entry id, nodes that heard, aged}: the id is a bulk string like "$15\r\n1733...-0".
    reply.starts_with("*3\r\n$") && !reply.contains("DUP") && !reply.contains("FULL")
}

#[test]
fn a_message_is_stored_once_per_origin_and_the_seen_set_stays_bounded() {
    let redis = RedisServer::start();
    assert!(stored(&deliver(&redis, 7, 100, 5)));
    assert!(
        deliver(&redis, 7, 100, 5).contains("DUP"),
        "a resend is not stored twice"
    );
    for id in 10..=20 {
        assert!(stored(&deliver(&redis, id, 100, 5)), "id {id}");
    }
    // The newest five are kept: 16..=20.
    assert!(redis
        .raw(&["ZCARD", "{bob}:seen:alice:i1"])
        .starts_with(":5"));
    assert!(deliver(&redis, 20, 100, 5).contains("DUP"));
    assert!(deliver(&redis, 16, 100, 5).contains("DUP"));
    // Older ids are forgotten: a sender never resends that far back (see SEEN_KEEP).
    assert!(stored(&deliver(&redis, 12, 100, 5)));
    // The set is forgotten some time after its last store, not kept forever.
    let ttl = redis.raw(&["PTTL", "{bob}:seen:alice:i1"]);
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");
}

#[test]
fn a_full_inbox_stores_nothing_and_remembers_nothing() {
    let redis = RedisServer::start();
    for id in 1..=3 {
        assert!(stored(&deliver(&redis, id, 3, 4096)));
    }
    assert!(deliver(&redis, 4, 3, 4096).contains("FULL"));
    assert!(redis.raw(&["XLEN", "{bob}:inbox"]).starts_with(":3"));
    // Not remembered: once there is room, the sender's retry is stored.
    assert!(redis
        .raw(&["ZSCORE", "{bob}:seen:alice:i1", "4"])
        .starts_with("$-1"));
    redis.raw(&["XTRIM", "{bob}:inbox", "MAXLEN", "0"]);
    assert!(stored(&deliver(&redis, 4, 3, 4096)));
}
