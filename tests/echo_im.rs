//! End-to-end tests of the echo-im example: real child processes of the built example,
//! real loopback sockets, a real `kill -9`. Every wait is bounded.

mod common;

use common::process::{free_addr, Proc, LIMIT};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn kill9_failover_keeps_messages_exactly_once_and_info_shows_the_new_server() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let mut a = Proc::server(a_addr, &[]);
    let _b = Proc::server(b_addr, &[]);
    let mut alice = Proc::client("alice", &[a_addr, b_addr]);
    let mut bob = Proc::client("bob", &[a_addr, b_addr]);
    let on_a = format!("connected to {a_addr}");
    alice.expect(|l| l == on_a);
    bob.expect(|l| l == on_a);

    alice.send(":to bob hello bob");
    bob.expect(|l| l == "[alice -> you] hello bob");

    let killed = Instant::now();
    a.kill9();
    // Sent while the server under both of them is gone.
    alice.send(":to bob sent during the failover");
    let on_b = format!("connected to {b_addr}");
    alice.expect(|l| l == on_b);
    bob.expect(|l| l == on_b);
    // Both clients saw the reset, backed off (at most 200 ms) and logged in again.
    let failover = killed.elapsed();
    eprintln!(
        "failover after kill -9: both clients on the other server {failover:?} after the kill"
    );
    assert!(failover < Duration::from_secs(2), "{failover:?}");
    bob.expect(|l| l == "[alice -> you] sent during the failover");

    // Anything still in flight has arrived once a later message has.
    alice.send(":to bob marker");
    bob.expect(|l| l == "[alice -> you] marker");
    assert_eq!(
        bob.count(|l| l == "[alice -> you] sent during the failover"),
        1
    );
    assert_eq!(bob.count(|l| l == "[alice -> you] hello bob"), 1);

    alice.send(":info");
    let server_line = alice.expect(|l| l.starts_with("server: "));
    assert_eq!(server_line, format!("server: {b_addr}"));
    alice.expect(|l| l == "reconnects: 1");
    alice.expect(|l| l == "unacked: 0");
}

#[test]
fn a_socket_that_never_logs_in_is_dropped() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &["--handshake-ms", "500"]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // An ERROR frame with HANDSHAKE_TIMEOUT (code 5) came before the close.
    assert!(got.len() >= 7, "{got:?}");
    assert_eq!(got[4], 0x0A, "ERROR kind");
    assert_eq!(&got[5..7], &[0, 5], "HANDSHAKE_TIMEOUT");
    server.expect(|l| l.contains("closed before login") && l.contains("HANDSHAKE_TIMEOUT"));
}

#[test]
fn a_second_login_kicks_the_first() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &[]);
    let mut first = Proc::client("carol", &[addr]);
    first.expect(|l| l.starts_with("connected to"));
    let mut second = Proc::client("carol", &[addr]);
    second.expect(|l| l.starts_with("connected to"));
    first.expect(|l| l.starts_with("stopped") && l.contains("REPLACED"));
    server.expect(|l| l.contains("kicked: carol"));
    // The new session works.
    second.send(":echo still me");
    second.expect(|l| l == "[echo] still me");
}

#[test]
fn the_demo_runs_by_itself_and_reports_exactly_once() {
    let mut demo = Proc::spawn(&["demo"]);
    demo.expect(|l| l.contains("exactly once: yes"));
    let status = demo.child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn messages_to_an_offline_user_are_held_until_they_log_in() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &[]);
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));
    alice.send(":to dave are you there?");
    alice.send(":users");
    alice.expect(|l| l == "online: alice");
    server.expect(|l| l.contains("held a message for dave"));
    let mut dave = Proc::client("dave", &[addr]);
    dave.expect(|l| l == "[alice -> you] are you there?");
    server.expect(|l| l.contains("delivering 1 held message(s) to dave"));
}
