//! End-to-end tests of the echo-im example: real child processes of the built example,
//! real loopback sockets, a real `kill -9`. Every wait is bounded.

mod common;

use common::process::{free_addr, Proc, LIMIT};
use liveline::frame::Frame;
use std::io::{Read, Write};
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

/// A message relayed to a device that never acknowledged it is not lost when the user logs
/// in from a new device (a new instance replaces the old one): the new one gets it.
#[test]
fn a_message_relayed_to_a_replaced_device_reaches_the_new_one() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &[]);
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));
    // bob's old device: logged in, reads, never acknowledges (and keeps its session alive).
    let mut old = TcpStream::connect(addr).unwrap();
    old.write_all(&common::hello_bytes("bob", 0xB0B, 0))
        .unwrap();
    server.expect(|l| l.contains("online: bob"));
    alice.send(":to bob are you there?");
    old.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let relayed = |got: &[u8]| {
        common::frames_in(got).iter().any(
            |f| matches!(f, Frame::Message { payload, .. } if payload.ends_with(b"are you there?")),
        )
    };
    while !relayed(&got) {
        let mut buf = [0; 4096];
        let n = old.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the message came");
        got.extend_from_slice(&buf[..n]);
    }
    // bob logs in from a new device: the message the old one never acknowledged arrives.
    let mut bob = Proc::client("bob", &[addr]);
    bob.expect(|l| l == "[alice -> you] are you there?");
    assert_eq!(bob.count(|l| l == "[alice -> you] are you there?"), 1);
}

/// More held for an offline user than the outbound cap (75 x 60 KB against 4 MiB) reaches
/// them when they log in, and they are listed as online only while connected.
#[test]
fn a_backlog_above_the_outbound_cap_reaches_the_user_who_logs_in() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &[]);
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));
    let line = |i: usize| format!("{i:03} {}", "y".repeat(59_900));
    for i in 0..75 {
        alice.send(&format!(":to dave {}", line(i)));
    }
    alice.send(":users");
    alice.expect(|l| l == "online: alice");
    server.expect(|l| l.contains("held a message for dave"));
    let mut dave = Proc::client("dave", &[addr]);
    let last = format!("[alice -> you] {}", line(74));
    dave.expect(|l| l == last);
    for i in 0..75 {
        let want = format!("[alice -> you] {}", line(i));
        assert_eq!(dave.count(|l| l == want), 1, "message {i}");
    }
    assert_eq!(server.count(|l| l.contains("SLOW_CONSUMER")), 0);
    alice.send(":users");
    alice.expect(|l| l == "online: alice, dave");
    assert_eq!(dave.count(|l| l.contains(" lost (")), 0);
}

/// The longest text a client may type is relayed; a longer one is refused on the spot.
#[test]
fn the_longest_text_is_echoed_and_a_longer_one_is_refused_with_a_reason() {
    let addr = free_addr();
    let _server = Proc::server(addr, &[]);
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));
    // ":echo " counts: the line as typed is what is limited.
    let longest = "z".repeat(60_000 - ":echo ".len());
    alice.send(&format!(":echo {longest}"));
    let want = format!("[echo] {longest}");
    alice.expect(|l| l == want);
    alice.send(&format!(":echo {longest}z"));
    alice.expect(|l| l == "! not sent: 60001 bytes, at most 60000");
    alice.send(":echo after");
    alice.expect(|l| l == "[echo] after");
}

/// Timings that cannot work are refused before anything starts, naming the flag and why.
#[test]
fn unworkable_timings_are_refused_with_the_flag_named() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["server", "--ping-ms", "10000", "--idle-ms", "5000"],
            "echo-im: --idle-ms: 5s must be longer than the ping interval (10s)",
        ),
        (
            &["server", "--ping-ms", "0"],
            "echo-im: --ping-ms: 0ns is shorter than one tick",
        ),
        (
            &["client", "--user", "x", "--ping-ms", "0"],
            "echo-im: --ping-ms: 0ns is shorter than one tick",
        ),
    ];
    for (args, want) in cases {
        let mut p = Proc::spawn(args);
        p.expect(|l| l.starts_with(want));
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{args:?} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
