//! `echo-im demo --cluster`: two gateways and one Redis, all real processes on loopback,
//! narrated: users on different gateways reach and see each other; messages for an offline
//! user wait in Redis, survive a `kill -9` of the gateway that took them, and arrive once;
//! a `kill -9` of Redis itself (appendonly) and its restart: routing resumes by itself.

use crate::demo::{free_port, Demo, ServerProc, Timeline};
use crate::proto::Request;
use liveline::config::Config;
use liveline::reactor::Reactor;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The demo's own `redis-server`: loopback, a free port, a throwaway data directory,
/// every write logged (appendonly, fsync always) so that a `kill -9` loses nothing.
struct RedisProc {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl RedisProc {
    fn start(timeline: &Timeline) -> io::Result<RedisProc> {
        let addr = free_port()?;
        let dir = std::env::temp_dir().join(format!("echo-im-demo-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut redis = RedisProc {
            child: None,
            addr,
            dir,
        };
        redis.spawn()?;
        timeline.say("redis", &format!("started, pid {}, on {addr}", redis.pid()));
        Ok(redis)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start redis-server ({e}): the cluster demo needs it on PATH \
                         (apt-get install redis-server)"
                    ),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.query("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other("redis-server did not start in 10 s"))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One inline command on a connection of its own (RESP2); the raw reply.
    fn query(&self, command: &str) -> io::Result<String> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    }

    fn inbox_len(&self, user: &str) -> String {
        self.query(&format!("XLEN {{{user}}}:inbox"))
            .map_or("?".to_string(), |r| r.trim_start_matches(':').to_string())
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gateway(
    name: &'static str,
    addr: SocketAddr,
    redis: &RedisProc,
    timeline: &Arc<Timeline>,
) -> io::Result<ServerProc> {
    let server = redis.addr.to_string();
    let proc = ServerProc::start_with(name, addr, &["--redis", &server, "--node", name], timeline)?;
    // Joined once its presence is in Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis
        .query(&format!("ZSCORE {{presence}}:nodes {name}"))
        .is_ok_and(|r| !r.starts_with("$-1") && !r.starts_with('_'))
    {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "gateway {name} did not join the cluster"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(proc)
}

pub fn run() -> io::Result<()> {
    let timeline = Arc::new(Timeline {
        start: Instant::now(),
    });
    println!(
        "echo-im cluster demo: one Redis, two gateways (A and B), clients on each. Nodes \
         never talk to each other: they meet in Redis.\n"
    );
    let mut redis = RedisProc::start(&timeline)?;
    let (a_addr, b_addr) = (free_port()?, free_port()?);
    let mut a = Some(gateway("A", a_addr, &redis, &timeline)?);
    let _b = gateway("B", b_addr, &redis, &timeline)?;
    let cfg = Config {
        ping_interval: Duration::from_millis(500),
        ..Config::default()
    };
    let mut demo = Demo::new(Reactor::new(cfg)?, timeline.clone());

    println!("\n--- 1. alice logs in to gateway A, bob to gateway B");
    let alice = demo.add("alice", &[a_addr])?;
    let bob = demo.add("bob", &[b_addr])?;
    demo.until("log in", |d| d.active(alice) && d.active(bob))?;

    println!("\n--- 2. alice (on A) messages bob (on B); bob asks who is online");
    let sent = Instant::now();
    let mut arrived = None;
    demo.send(
        demo.names[alice].0,
        Request::Direct {
            to: "bob",
            text: "hi bob, from A",
        },
    )?;
    demo.until("cross-node message", |d| {
        let got = d.got(bob, "hi bob, from A");
        if got && arrived.is_none() {
            arrived = Some(sent.elapsed());
        }
        got
    })?;
    demo.send(demo.names[bob].0, Request::Users)?;
    demo.until("users", |d| d.got(bob, "online: alice (A), bob (B)"))?;

    println!("\n--- 3. bob goes offline; alice sends him three messages: they wait in Redis");
    let bob_id = demo.names[bob].0;
    let now = Instant::now();
    demo.reactor.engine().close_client(bob_id, now);
    // Offline once gateway B has taken him off the cluster's list.
    demo.until("bob offline", |_| {
        redis
            .query("HEXISTS {presence}:B bob")
            .is_ok_and(|r| r == ":0")
    })?;
    for i in 1..=3 {
        let text = format!("while you were away {i}");
        demo.send(
            demo.names[alice].0,
            Request::Direct {
                to: "bob",
                text: &text,
            },
        )?;
    }
    demo.until("held", |d| {
        d.lines[alice]
            .iter()
            .filter(|l| l.contains("held for bob (offline)"))
            .count()
            >= 3
    })?;
    timeline.say(
        "redis",
        &format!("{{bob}}:inbox holds {} messages", redis.inbox_len("bob")),
    );

    println!("\n--- 4. gateway A, which took them, is killed (kill -9); bob logs in to B");
    if let Some(mut g) = a.take() {
        timeline.say("gateway A", &format!("kill -9 (pid {})", g.child.id()));
        let _ = g.child.kill();
        let _ = g.child.wait();
    }
    let bob2 = demo.add("bob", &[b_addr])?;
    demo.until("held messages", |d| {
        (1..=3).all(|i| d.got(bob2, &format!("while you were away {i}")))
    })?;
    // Give duplicates a moment to show up, if there were any.
    demo.turn(Duration::from_millis(300))?;
    let copies = |d: &Demo, i: u32| {
        d.lines[bob2]
            .iter()
            .filter(|l| l.ends_with(&format!("while you were away {i}")))
            .count()
    };
    let exactly_once = (1..=3).all(|i| copies(&demo, i) == 1);
    let mut emptied = String::from("?");
    demo.until("inbox emptied", |d| {
        emptied = redis.inbox_len("bob");
        let _ = d;
        emptied == "0"
    })?;
    timeline.say(
        "redis",
        &format!("{{bob}}:inbox holds {emptied} messages (bob acknowledged them)"),
    );

    println!("\n--- 5. gateway A comes back and carol logs in there; Redis is killed (kill -9)");
    let _a_again = gateway("A", a_addr, &redis, &timeline)?;
    let carol = demo.add("carol", &[a_addr])?;
    demo.until("carol", |d| d.active(carol))?;
    timeline.say("redis", &format!("kill -9 (pid {})", redis.pid()));
    redis.kill9();
    demo.turn(Duration::from_millis(300))?;
    demo.send(
        demo.names[carol].0,
        Request::Direct {
            to: "bob",
            text: "sent while Redis was down",
        },
    )?;
    demo.until("told", |d| d.got(carol, "the cluster is unreachable"))?;
    println!("\n--- 6. Redis restarts from its append-only file: routing resumes by itself");
    redis.spawn()?;
    let restarted = Instant::now();
    timeline.say("redis", &format!("restarted, pid {}", redis.pid()));
    let mut resumed = None;
    demo.until("resumed", |d| {
        let got = d.got(bob2, "sent while Redis was down");
        if got && resumed.is_none() {
            resumed = Some(restarted.elapsed());
        }
        got
    })?;
    let now = Instant::now();
    demo.reactor.engine().shutdown(now);

    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!("\n--- summary");
    println!(
        "  alice on A to bob on B: shown {} after sending",
        ms(arrived)
    );
    println!(
        "  3 messages held in Redis across a kill -9 of the gateway that took them: {}",
        if exactly_once {
            "each delivered exactly once"
        } else {
            "NOT exactly once"
        }
    );
    println!(
        "  Redis kill -9 and restart: the waiting message arrived {} after the restart",
        ms(resumed)
    );
    println!(
        "  demo took {:.1} s",
        timeline.start.elapsed().as_secs_f64()
    );
    if exactly_once {
        Ok(())
    } else {
        Err(io::Error::other("a held message was lost or shown twice"))
    }
}
