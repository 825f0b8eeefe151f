//! echo-im as a cluster on a real `redis-server`: real gateway processes, real clients
//! through pipes, `kill -9` of a gateway and of Redis. Users on different servers reach
//! each other and see each other; a message held for an offline user outlives the gateway
//! that took it and arrives once; a newer login anywhere replaces the older one; with Redis
//! down, local delivery goes on and cross-node messages wait, then arrive once it is back.
//! Every wait is bounded.

mod common;

use common::process::{free_addr, Proc};
use common::redis::RedisServer;
use std::net::SocketAddr;

fn gateway(addr: SocketAddr, redis: &RedisServer, node: &str) -> Proc {
    let mut p = Proc::server(
        addr,
        &["--redis", &redis.addr().to_string(), "--node", node],
    );
    p.expect(|l| l.contains("cluster: connected to redis"));
    p
}

fn connected(p: &mut Proc) {
    p.expect(|l| l.starts_with("connected to"));
}

/// Sends an echo and waits for it: everything sent to `p` before it has been shown.
fn settle(p: &mut Proc, marker: &str) {
    p.send(&format!(":echo {marker}"));
    p.expect(|l| l == format!("[echo] {marker}"));
}

#[test]
fn users_on_two_servers_reach_and_see_each_other() {
    let redis = RedisServer::start();
    let (a, b) = (free_addr(), free_addr());
    let mut ga = gateway(a, &redis, "A");
    let mut gb = gateway(b, &redis, "B");
    let mut alice = Proc::client("alice", &[a]);
    let mut bob = Proc::client("bob", &[b]);
    connected(&mut alice);
    connected(&mut bob);
    ga.expect(|l| l.contains("online: alice"));
    gb.expect(|l| l.contains("online: bob"));

    alice.send(":to bob hello from A");
    bob.expect(|l| l == "[alice -> you] hello from A");
    bob.send(":to alice hello from B");
    alice.expect(|l| l == "[bob -> you] hello from B");
    // Neither was told the other is offline.
    assert_eq!(alice.count(|l| l.contains("offline")), 0);

    bob.send(":users");
    bob.expect(|l| l == "online: alice (A), bob (B)");
    bob.send(":info");
    bob.expect(|l| l == "node: B");
    bob.send("hi all");
    alice.expect(|l| l == "[bob] hi all");
    settle(&mut bob, "b1");
    assert_eq!(bob.count(|l| l.contains("nobody else")), 0);
}

#[test]
fn a_message_held_for_an_offline_user_outlives_the_gateway_that_took_it() {
    let redis = RedisServer::start();
    let (a, b) = (free_addr(), free_addr());
    let mut ga = gateway(a, &redis, "A");
    let _gb = gateway(b, &redis, "B");
    let mut alice = Proc::client("alice", &[a]);
    connected(&mut alice);
    alice.send(":to bob are you there");
    alice.expect(|l| l == "* held for bob (offline)");
    alice.send(":to bob second");
    assert!(alice.count(|l| l == "* held for bob (offline)") >= 1);
    settle(&mut alice, "a1");
    // The gateway that took them dies; nothing of them was on it alone.
    ga.kill9();

    let mut bob = Proc::client("bob", &[b]);
    bob.expect(|l| l == "[alice -> you] are you there");
    bob.expect(|l| l == "[alice -> you] second");
    settle(&mut bob, "b1");
    assert_eq!(bob.count(|l| l == "[alice -> you] are you there"), 1);
    assert_eq!(bob.count(|l| l == "[alice -> you] second"), 1);
    // Acknowledged by bob: gone from his inbox.
    let mut left = String::new();
    for _ in 0..100 {
        left = redis.raw(&["XLEN", "{bob}:inbox"]);
        if left.starts_with(":0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(left.starts_with(":0"), "inbox not emptied: {left:?}");
}

#[test]
fn a_message_past_the_hold_leaves_the_inbox_when_it_is_next_written_and_its_sender_is_told() {
    let redis = RedisServer::start();
    let a = free_addr();
    let redis_addr = redis.addr().to_string();
    let mut ga = Proc::server(
        a,
        &["--redis", &redis_addr, "--node", "A", "--held-secs", "1"],
    );
    ga.expect(|l| l.contains("cluster: connected to redis"));
    let mut alice = Proc::client("alice", &[a]);
    connected(&mut alice);
    alice.send(":to bob first");
    alice.expect(|l| l == "* held for bob (offline)");
    // The age is Redis's to judge (its clock): wait until the first is past the hold.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // Nobody reads bob's inbox; writing to it is enough to enforce the age.
    alice.send(":to bob second");
    alice.expect(|l| l == "* not delivered to bob (it waited too long): first");
    let left = redis.raw(&["XLEN", "{bob}:inbox"]);
    assert!(left.starts_with(":1"), "only the second waits: {left:?}");
    drop(ga);
}

#[test]
fn messages_are_stored_after_redis_forgets_the_deliver_script() {
    let redis = RedisServer::start();
    let a = free_addr();
    let mut ga = gateway(a, &redis, "A");
    let mut alice = Proc::client("alice", &[a]);
    connected(&mut alice);
    alice.send(":to bob one");
    alice.expect(|l| l == "* held for bob (offline)");
    // Stores name the script by its SHA1...
    let stats = redis.raw(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_evalsha:calls="), "{stats}");
    // ... and Redis forgets it.
    let flushed = redis.raw(&["SCRIPT", "FLUSH"]);
    assert!(flushed.starts_with("+OK"), "{flushed:?}");
    alice.send(":to bob two");
    alice.send(":to bob three");
    settle(&mut alice, "a1");
    assert_eq!(alice.count(|l| l.starts_with("* not delivered")), 0);
    let mut bob = Proc::client("bob", &[a]);
    for text in ["one", "two", "three"] {
        bob.expect(|l| l == format!("[alice -> you] {text}"));
    }
    ga.kill9();
}

#[test]
fn a_newer_login_on_another_server_replaces_the_older_one() {
    let redis = RedisServer::start();
    let (a, b) = (free_addr(), free_addr());
    let _ga = gateway(a, &redis, "A");
    let _gb = gateway(b, &redis, "B");
    let mut old = Proc::client("bob", &[a]);
    connected(&mut old);
    let mut new = Proc::client("bob", &[b]);
    connected(&mut new);
    old.expect(|l| l.starts_with("stopped: logged in elsewhere"));
    assert_eq!(old.exit_code(), Some(1));
    // The newer one stays, and is the one messages reach.
    let mut alice = Proc::client("alice", &[a]);
    connected(&mut alice);
    alice.send(":to bob still there?");
    new.expect(|l| l == "[alice -> you] still there?");
}

#[test]
fn with_redis_down_local_delivery_goes_on_and_remote_messages_wait_for_it() {
    let mut redis = RedisServer::start_with(true);
    let (a, b) = (free_addr(), free_addr());
    let mut ga = gateway(a, &redis, "A");
    let mut gb = gateway(b, &redis, "B");
    let mut alice = Proc::client("alice", &[a]);
    let mut carol = Proc::client("carol", &[a]);
    let mut bob = Proc::client("bob", &[b]);
    connected(&mut alice);
    connected(&mut carol);
    connected(&mut bob);
    alice.send(":to bob before");
    bob.expect(|l| l == "[alice -> you] before");

    redis.kill();
    ga.expect(|l| l.contains("redis connection lost"));
    gb.expect(|l| l.contains("redis connection lost"));
    // Same server: delivered at once.
    alice.send(":to carol while redis is down");
    carol.expect(|l| l == "[alice -> you] while redis is down");
    // Another server: waits, and the sender is told why.
    alice.send(":to bob during the outage");
    alice.expect(|l| l.starts_with("* the cluster is unreachable"));

    redis.restart();
    bob.expect(|l| l == "[alice -> you] during the outage");
    settle(&mut bob, "b1");
    assert_eq!(bob.count(|l| l == "[alice -> you] during the outage"), 1);
    assert_eq!(bob.count(|l| l == "[alice -> you] before"), 1);
}

#[test]
fn the_cluster_demo_runs_by_itself_and_reports_exactly_once() {
    // It starts its own redis-server from PATH, as a new user's would.
    common::redis::redis_binary();
    let mut demo = Proc::spawn(&["demo", "--cluster"]);
    demo.expect(|l| l.contains("each delivered exactly once"));
    demo.expect(|l| l.contains("the waiting message arrived"));
    let status = demo.child.wait().unwrap();
    assert!(status.success());
}
