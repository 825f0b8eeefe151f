//! A small version of `scripts/scale-bench.sh`, as real processes on loopback: two server
//! processes share one port (`SO_REUSEPORT`), one load process holds 2,000 sessions with
//! heartbeats from two loopback source addresses, and one server is killed with `kill -9`:
//! its sessions come back on the other, none is lost for good, none of the others drops.

mod common;

use common::process::{example_named, free_addr, Proc};
use std::process::Command;
use std::time::Duration;

#[test]
fn sessions_spread_over_two_processes_on_one_port_survive_a_kill_9_of_one() {
    let addr = free_addr().to_string();
    let server = |_: usize| {
        let mut cmd = Command::new(example_named("hb_server"));
        cmd.args([addr.as_str(), "reuse"]);
        let mut p = Proc::spawn_cmd(cmd);
        p.expect(|l| l.starts_with("listening on"));
        p
    };
    let mut first = server(0);
    let _second = server(1);
    let held = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Descriptors the first server holds before any session: its listener, poller, ...
    let base = held(first.child.id());
    let mut load = {
        let mut cmd = Command::new(example_named("hb_load"));
        cmd.args([addr.as_str(), "2000", "500", "8", "127.0.0.2,127.0.0.3"]);
        Proc::spawn_cmd(cmd)
    };
    load.expect(|l| l.starts_with("all 2000 sessions up"));
    // Both processes hold some (all 2,000 on one: odds 2^-1999).
    std::thread::sleep(Duration::from_millis(300));
    let killed = held(first.child.id()) - base;
    assert!(
        killed > 100 && killed < 1900,
        "{killed} of 2000 on the first server"
    );
    first.kill9();
    let back = load.expect(|l| l.starts_with("all 2000 sessions back"));
    let end = load.expect(|l| l.starts_with("clients="));
    assert!(end.contains("up=2000"), "{end}\n(back: {back})");
    // Exactly the killed server's sessions were lost, each once.
    let losses: usize = end
        .split_whitespace()
        .find_map(|f| f.strip_prefix("losses="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(losses, killed, "{end}");
}
