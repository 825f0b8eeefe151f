//! End-to-end tests of the echo-im example: real child processes of the built example,
//! real loopback sockets, a real `kill -9`. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(15);

/// The example binary cargo built next to this test (target/<profile>/examples/).
fn example() -> PathBuf {
    let mut p = std::env::current_exe().expect("test path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join("echo-im")
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut cmd = Command::new(example());
        cmd.args(args);
        Proc::spawn_cmd(cmd)
    }

    fn spawn_cmd(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the echo-im example is built by cargo test");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn server(addr: SocketAddr, extra: &[&str]) -> Proc {
        let a = addr.to_string();
        let mut args = vec![
            "server",
            "--listen",
            &a,
            "--ping-ms",
            "300",
            "--idle-ms",
            "1500",
        ];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(&args);
        p.expect(|l| l.starts_with("listening on"));
        p
    }

    fn client(user: &str, servers: &[SocketAddr]) -> Proc {
        let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let list = list.join(",");
        Proc::spawn(&[
            "client",
            "--user",
            user,
            "--servers",
            &list,
            "--ping-ms",
            "300",
        ])
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a line (new or already seen) matching `f`.
    fn expect(&mut self, f: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {LIMIT:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn count(&mut self, f: impl Fn(&str) -> bool) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter(|l| f(l)).count()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s here).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_pauses_accepting_serves_existing_clients_and_recovers() {
    let addr = free_addr();
    // A server process allowed 32 file descriptors.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "ulimit -n 32 && exec '{}' server --listen {addr} --log info",
        example().display()
    ));
    let mut server = Proc::spawn_cmd(cmd);
    server.expect(|l| l.starts_with("listening on"));
    let mut alice = Proc::client("alice", &[addr]);
    alice.expect(|l| l.starts_with("connected to"));

    // More idle connections than the server has descriptors left.
    let hogs: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    server.expect(|l| l.contains("out of file descriptors"));

    // It still serves the client it has.
    alice.send(":echo still served");
    alice.expect(|l| l == "[echo] still served");

    // And does not spin while the backlog waits: measure its CPU time over one second.
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 20,
        "{used} ticks of CPU in one second while out of descriptors"
    );
    assert_eq!(
        server.count(|l| l.contains("out of file descriptors")),
        1,
        "logged once per episode"
    );

    // Descriptors come back: a new client gets in.
    drop(hogs);
    let mut bob = Proc::client("bob", &[addr]);
    bob.expect(|l| l.starts_with("connected to"));
    server.expect(|l| l.contains("accepting again"));
    bob.send(":echo in");
    bob.expect(|l| l == "[echo] in");
}
