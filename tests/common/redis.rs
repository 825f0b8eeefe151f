//! A real `redis-server` for tests: a child process on a free loopback port, in a data
//! directory of its own, killed (SIGKILL) when dropped. It fails loudly when
//! `redis-server` is not installed: `.ci/run` installs it (`apt-get install -y
//! redis-server`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    appendonly: bool,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `redis-server` binary, or a panic that says how to install it.
pub fn redis_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.expect("redis-server is not installed: apt-get install -y redis-server")
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// A server; with `appendonly`, every write is logged (fsync always), so that a
    /// restart after `kill` finds it.
    pub fn start_with(appendonly: bool) -> RedisServer {
        for _ in 0..3 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("liveline-redis-{}-{port}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                appendonly,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process id, for `kill -9` by the test itself.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory; panics if it does
    /// not come up in time.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart");
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new(redis_binary());
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--dir", &self.dir.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let Ok(child) = cmd.spawn() else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false; // exited: the port was taken meanwhile
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Whether the server answers PING (RESP2, plain socket).
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Runs one command over a fresh plain connection and returns the raw reply bytes
    /// (RESP2), for checks from outside the code under test.
    pub fn raw(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(self.addr()).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
