//! The echo-im client as a person meets it, over pipes to real processes: every typed line
//! goes out or is answered, states are said once and plainly, stops are final and clean,
//! and bad arguments are refused up front. Every wait is bounded.

mod common;

use common::process::{free_addr, Proc};
use std::net::SocketAddr;

fn client(user: &str, servers: &[SocketAddr]) -> Proc {
    let mut c = Proc::client(user, servers);
    c.expect(|l| l.starts_with("connected to"));
    c
}

#[test]
fn every_typed_line_goes_out_or_says_why_not() {
    let addr = free_addr();
    let _server = Proc::server(addr, &[]);
    let mut alice = client("alice", &[addr]);
    let mut bob = client("bob", &[addr]);
    // Not UTF-8: reported and skipped; the client goes on.
    alice.send_bytes(b"caf\xe9 au lait\n");
    alice.expect(|l| l.starts_with("! not sent: the line is not valid UTF-8 (byte 4)"));
    // A leading space is part of the text, not a lost line.
    alice.send("  indented");
    bob.expect(|l| l == "[alice]   indented");
    // Two spaces after :to are still a direct message.
    alice.send(":to  bob  hello");
    bob.expect(|l| l == "[alice -> you] hello");
    alice.send(":frobnicate");
    alice.expect(|l| l == "unknown command :frobnicate; :help lists them");
    alice.send(":to bad/name hi");
    alice.expect(|l| l.starts_with("! not sent: invalid user name \"bad/name\""));
    alice.send(":to ghost are you there?");
    alice.expect(|l| l == "* held for ghost (offline)");
    alice.send(":echo still here");
    alice.expect(|l| l == "[echo] still here");
    assert_eq!(alice.count(|l| l.contains("stopped")), 0);
}

#[test]
fn a_broadcast_with_nobody_else_online_says_so() {
    let addr = free_addr();
    let _server = Proc::server(addr, &[]);
    let mut alice = client("alice", &[addr]);
    alice.send("anyone?");
    alice.expect(|l| l == "* nobody else is online");
}

#[test]
fn all_servers_down_is_one_line_with_the_reason_and_retry_tries_now() {
    let (a, b) = (free_addr(), free_addr());
    let mut alice = Proc::client("alice", &[a, b]);
    alice.expect(|l| l.starts_with("all servers down") && l.contains("refused"));
    // Lines typed meanwhile wait, and say so.
    alice.send("hello later");
    alice.expect(|l| l == "(queued, will send when connected)");
    let _server = Proc::server(b, &[]);
    alice.send(":retry");
    alice.expect(|l| l == "retrying now" || l.starts_with("connected to"));
    alice.expect(|l| l == format!("connected to {b}"));
    // Only one line for the whole outage, and no "lost" for connections never made.
    assert_eq!(alice.count(|l| l.starts_with("all servers down")), 1);
    assert_eq!(alice.count(|l| l.contains(" lost (")), 0);
    // The queued line went out once connected: the server has no one else, and says so.
    alice.expect(|l| l == "* nobody else is online");
    // A round trip is known as soon as the session is up.
    alice.send(":info");
    alice.expect(|l| l.starts_with("rtt: last ") && !l.starts_with("rtt: last -"));
}

#[test]
fn a_lost_connection_is_said_once_with_both_servers() {
    let (a, b) = (free_addr(), free_addr());
    let mut server_a = Proc::server(a, &[]);
    let _server_b = Proc::server(b, &[]);
    let mut alice = client("alice", &[a, b]);
    server_a.kill9();
    alice.expect(|l| l == format!("connected to {b}"));
    let lost: Vec<String> = alice
        .lines()
        .into_iter()
        .filter(|l| l.contains(" lost ("))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].starts_with(&format!("connection to {a} lost ("))
            && lost[0].ends_with(&format!("to {b}")),
        "{lost:?}"
    );
}

#[test]
fn a_final_stop_is_one_line_and_a_nonzero_exit() {
    let addr = free_addr();
    let _server = Proc::server(addr, &[]);
    let mut first = client("carol", &[addr]);
    let _second = client("carol", &[addr]);
    first.expect(|l| l.starts_with("stopped: logged in elsewhere (REPLACED"));
    assert_eq!(first.exit_code(), Some(1));
    assert_eq!(first.count(|l| l.starts_with("stopped")), 1);
}

#[test]
fn quitting_is_clean_and_the_server_can_tell_it_from_a_crash() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &[]);
    // :q
    let mut alice = client("alice", &[addr]);
    alice.send(":q");
    alice.expect(|l| l == "bye");
    assert_eq!(alice.exit_code(), Some(0));
    server.expect(|l| l.contains("offline: alice") && l.contains("client closed"));
    // Ctrl-D
    let mut bob = client("bob", &[addr]);
    bob.close_stdin();
    bob.expect(|l| l == "bye");
    assert_eq!(bob.exit_code(), Some(0));
    server.expect(|l| l.contains("offline: bob") && l.contains("client closed"));
    // Ctrl-C
    let mut dan = client("dan", &[addr]);
    dan.signal(2);
    dan.expect(|l| l == "bye");
    assert_eq!(dan.exit_code(), Some(0));
    server.expect(|l| l.contains("offline: dan") && l.contains("client closed"));
    // A crash reads differently.
    let mut eve = client("eve", &[addr]);
    eve.kill9();
    server.expect(|l| l.contains("offline: eve") && l.contains("closed by peer"));
    // One line per session end.
    assert_eq!(
        server.count(|l| l.contains("alice") && l.contains("closed")),
        1
    );
    for who in [&mut alice, &mut bob, &mut dan] {
        assert_eq!(
            who.count(|l| l.contains("SHUTTING_DOWN") || l.contains("NO_ERROR")),
            0
        );
    }
}

#[test]
fn what_could_not_be_delivered_is_named_as_typed() {
    let addr = free_addr();
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("all servers down"));
    alice.send(":to bob see you");
    alice.expect(|l| l == "(queued, will send when connected)");
    alice.close_stdin();
    alice.expect(|l| l == "! not delivered: :to bob see you");
    alice.expect(|l| l == "bye");
    assert_eq!(alice.exit_code(), Some(0));
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let busy = free_addr();
    let _server = Proc::server(busy, &[]);
    let busy_s = busy.to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["client", "--user", "two words"],
            "echo-im: --user: \"two words\" is not a valid name",
        ),
        (
            &["client", "--user", "x", "--servers", "nowhere"],
            "echo-im: --servers: \"nowhere\"",
        ),
        (
            &["server", "--listen", &busy_s],
            "echo-im: cannot listen on",
        ),
        (&["client", "--user", &"y".repeat(300)], "echo-im: --user:"),
    ];
    for (args, want) in cases {
        let mut p = Proc::spawn(args);
        p.expect(|l| l.starts_with(want));
        assert_ne!(p.exit_code(), Some(0), "{args:?}");
    }
    // Host names are fine.
    let port = busy.port().to_string();
    let mut c = Proc::spawn(&[
        "client",
        "--user",
        "hostname",
        "--servers",
        &format!("localhost:{port}"),
    ]);
    c.expect(|l| l.starts_with("connected to"));
}

/// A held message the server has to drop (beyond the hold's count) is reported to its
/// sender by its text: acknowledged never means lost in silence.
#[test]
fn a_held_message_dropped_for_room_is_reported_to_its_sender() {
    let addr = free_addr();
    let _server = Proc::server(addr, &["--max-held", "2"]);
    let mut alice = client("alice", &[addr]);
    for i in 0..3 {
        alice.send(&format!(":to dave m{i}"));
    }
    alice.expect(|l| l == "* not delivered to dave (too many are waiting for them): m0");
    let mut dave = client("dave", &[addr]);
    dave.expect(|l| l == "[alice -> you] m2");
    assert_eq!(dave.count(|l| l.contains("m0")), 0);
    assert_eq!(dave.count(|l| l == "[alice -> you] m1"), 1);
}
