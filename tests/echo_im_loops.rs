//! echo-im with several loops in one server process (`server --threads 2`): the kernel
//! spreads clients over the loops, and users of different loops reach each other, see each
//! other, get what was held for them on another loop, and a newer login on either loop
//! replaces the older. Real processes, real sockets; every wait is bounded.

mod common;

use common::process::{free_addr, Proc};
use std::net::SocketAddr;

/// A client named `name`, connected; the loop it landed on (from `:info`).
fn client_on_loop(name: &str, addr: SocketAddr) -> (Proc, String) {
    let mut p = Proc::client(name, &[addr]);
    p.expect(|l| l.starts_with("connected to"));
    p.send(":info");
    let node = p.expect(|l| l.starts_with("node: "));
    let which = node.rsplit('/').next().unwrap_or("").to_string();
    (p, which)
}

#[test]
fn users_on_different_loops_of_one_server_reach_each_other() {
    let addr = free_addr();
    let mut server = Proc::server(addr, &["--threads", "2"]);
    server.expect(|l| l.contains("2 loops share"));
    // Clients until two landed on different loops (all on one: odds 2^-19).
    let mut first = client_on_loop("u0", addr);
    let mut other = None;
    for i in 1..20 {
        let c = client_on_loop(&format!("u{i}"), addr);
        if c.1 != first.1 {
            other = Some((c, format!("u{i}")));
            break;
        }
    }
    let ((mut second, _), second_name) = other.expect("every client on one loop");
    first.0.send(&format!(":to {second_name} across loops"));
    second.expect(|l| l == "[u0 -> you] across loops");
    second.send(":to u0 and back");
    first
        .0
        .expect(|l| l == format!("[{second_name} -> you] and back"));
    second.send(":users");
    let users = second.expect(|l| l.starts_with("online: "));
    assert!(
        users.contains("u0") && users.contains(&second_name),
        "{users}"
    );

    // Held on u0's loop for an offline user, delivered wherever they log in.
    first.0.send(":to zed held for later");
    first.0.expect(|l| l == "* held for zed (offline)");
    let (mut zed, _) = client_on_loop("zed", addr);
    zed.expect(|l| l == "[u0 -> you] held for later");

    // A newer login of u0, on whichever loop, replaces the older.
    let (mut again, _) = client_on_loop("u0", addr);
    first
        .0
        .expect(|l| l.starts_with("stopped: logged in elsewhere"));
    second.send(":to u0 to the new one");
    again.expect(|l| l == format!("[{second_name} -> you] to the new one"));
}
