//! The narrated demo: real server processes, real sockets, a real `kill -9` and a real
//! frozen process.

use crate::client::{describe, Dedup};
use crate::proto::{Push, Request};
use bytes::{Bytes, BytesMut};
use liveline::codec::{Decoder, Encoder};
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientId, ClientState, Event};
use liveline::frame::{Frame, Hello, Text, PROTOCOL_VERSION};
use liveline::reactor::Reactor;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PING: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_millis(1500);
/// No step of the demo may take longer than this.
const STEP_LIMIT: Duration = Duration::from_secs(10);

pub(crate) struct Timeline {
    pub(crate) start: Instant,
}

impl Timeline {
    pub(crate) fn say(&self, who: &str, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        println!("{t:7.3}s  {who:<9} {what}");
    }
}

pub(crate) struct ServerProc {
    pub(crate) child: Child,
}

impl ServerProc {
    /// A server with `extra` flags.
    pub(crate) fn start_with(
        name: &'static str,
        addr: SocketAddr,
        extra: &[&str],
        timeline: &Arc<Timeline>,
    ) -> io::Result<ServerProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["server", "--listen", &addr.to_string()])
            .args(extra)
            .args(["--ping-ms", &PING.as_millis().to_string()])
            .args(["--idle-ms", &IDLE.as_millis().to_string()])
            .args(["--handshake-ms", "2000", "--log", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            return Err(io::Error::other(format!(
                "server {name} did not start: {line}"
            )));
        }
        // Narrate the server's own log lines about sessions.
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let tl = timeline.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                // "<time> [LEVEL] message": keep the message of the session lines.
                let msg = line.split_once("] ").map_or(line.as_str(), |(_, m)| m);
                let keep = [
                    "online:",
                    "offline:",
                    "dropped:",
                    "kicked:",
                    "held",
                    "signal",
                    "delivering",
                    "cluster:",
                    "redis",
                ];
                if keep.iter().any(|k| msg.starts_with(k)) {
                    tl.say(&format!("server {name}"), msg);
                }
            }
        });
        timeline.say(
            &format!("server {name}"),
            &format!("started, pid {}, on {addr}", child.id()),
        );
        Ok(ServerProc { child })
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

pub(crate) struct Demo {
    pub(crate) reactor: Reactor,
    pub(crate) timeline: Arc<Timeline>,
    pub(crate) names: Vec<(ClientId, &'static str)>,
    pub(crate) dedup: Vec<Dedup>,
    /// Lines each client printed, by client.
    pub(crate) lines: Vec<Vec<String>>,
    /// Numbered messages bob received, duplicates included (before deduplication).
    raw_numbered: Vec<u32>,
    /// When clients reported a lost connection.
    losses: Vec<Instant>,
}

impl Demo {
    /// A demo with no client yet.
    pub(crate) fn new(reactor: Reactor, timeline: Arc<Timeline>) -> Demo {
        Demo {
            reactor,
            timeline,
            names: Vec::new(),
            dedup: Vec::new(),
            lines: Vec::new(),
            raw_numbered: Vec::new(),
            losses: Vec::new(),
        }
    }

    fn name(&self, c: ClientId) -> &'static str {
        self.names
            .iter()
            .find(|(id, _)| *id == c)
            .map_or("?", |(_, n)| n)
    }

    fn index(&self, c: ClientId) -> usize {
        self.names.iter().position(|(id, _)| *id == c).unwrap_or(0)
    }

    /// A new client `name` with `servers`; its index for `got` and `lines`.
    pub(crate) fn add(&mut self, name: &'static str, servers: &[SocketAddr]) -> io::Result<usize> {
        let now = Instant::now();
        let id = self.reactor.engine().add_client(
            ClientConfig {
                identity: Text::from(name),
                token: Bytes::new(),
                servers: servers.to_vec(),
                instance: None,
            },
            now,
        )?;
        self.names.push((id, name));
        self.dedup.push(Dedup::new(10_000));
        self.lines.push(Vec::new());
        Ok(self.names.len() - 1)
    }

    /// Whether client `i` is active.
    pub(crate) fn active(&mut self, i: usize) -> bool {
        let id = self.names[i].0;
        self.reactor
            .engine()
            .client_info(id)
            .is_some_and(|info| info.state == ClientState::Active)
    }

    /// Turns the loop until `done` holds; an error after the step limit.
    pub(crate) fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Demo) -> bool,
    ) -> io::Result<()> {
        let deadline = Instant::now() + STEP_LIMIT;
        while !done(self) {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("demo step timed out: {what}")));
            }
            self.turn(Duration::from_millis(20))?;
        }
        Ok(())
    }

    pub(crate) fn turn(&mut self, wait: Duration) -> io::Result<()> {
        let mut events = Vec::new();
        let mut handler = |_: &mut App, e: Event| events.push(e);
        self.reactor.turn(&mut handler, Some(wait))?;
        for e in events {
            let client = match &e {
                Event::Client(ClientEvent::State { client, .. })
                | Event::Client(ClientEvent::Message { client, .. })
                | Event::Client(ClientEvent::Failed { client, .. }) => *client,
                _ => continue,
            };
            let i = self.index(client);
            if let Event::Client(ClientEvent::State {
                state: ClientState::Backoff,
                ..
            }) = &e
            {
                self.losses.push(Instant::now());
            }
            if let Event::Client(ClientEvent::Message { payload, .. }) = &e {
                if let Some(Push::Message { text, .. }) =
                    std::str::from_utf8(payload).ok().and_then(Push::parse)
                {
                    if let Some(n) = text.strip_prefix("numbered ").and_then(|n| n.parse().ok()) {
                        self.raw_numbered.push(n);
                    }
                }
            }
            if let Some(line) = describe(&e, &mut self.dedup[i]) {
                let quiet = line.starts_with("[alice -> you] numbered");
                if !quiet {
                    self.timeline.say(self.name(client), &line);
                }
                self.lines[i].push(line);
            }
        }
        Ok(())
    }

    pub(crate) fn send(&mut self, c: ClientId, request: Request) -> io::Result<()> {
        self.reactor
            .engine()
            .client_send_message(c, Bytes::from(request.encode()))
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn all_on(&mut self, addr: SocketAddr) -> bool {
        let ids: Vec<ClientId> = self.names.iter().map(|(c, _)| *c).collect();
        ids.iter().all(|&c| {
            self.reactor
                .engine()
                .client_info(c)
                .is_some_and(|i| i.state == ClientState::Active && i.server == Some(addr))
        })
    }

    pub(crate) fn got(&self, who: usize, needle: &str) -> bool {
        self.lines[who].iter().any(|l| l.contains(needle))
    }
}

/// Logs in as `name` and then says nothing; returns how long until the server hung up and
/// the frames it sent.
fn silent_client(
    addr: SocketAddr,
    name: &str,
    tls: Option<liveline::engine::ClientTls>,
) -> io::Result<(Duration, Vec<Frame>)> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(STEP_LIMIT))?;
    // Over TLS, a blocking rustls stream around the socket: this client only waits.
    let mut s: Box<dyn ReadWrite> = match tls {
        Some(t) => {
            let conn = rustls::ClientConnection::new(t.config, t.server_name)
                .map_err(|e| io::Error::other(e.to_string()))?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut buf = BytesMut::new();
    let hello = Frame::Hello(Box::new(Hello {
        version: PROTOCOL_VERSION,
        instance: 1,
        attempt: 0,
        identity: Text::from(name.to_string()),
        token: Bytes::new(),
    }));
    Encoder::default()
        .encode(&hello, &mut buf)
        .map_err(|e| io::Error::other(e.to_string()))?;
    s.write_all(&buf)?;
    let start = Instant::now();
    let mut got = Vec::new();
    // A peer that closes without close_notify ends a TLS stream with an error: what came
    // before it is what counts.
    let _ = s.read_to_end(&mut got);
    let took = start.elapsed();
    let mut bytes = BytesMut::from(&got[..]);
    let mut dec = Decoder::default();
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut bytes) {
        frames.push(f);
    }
    Ok((took, frames))
}

/// A byte stream, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Sends `signal` (a `kill(1)` name such as `STOP` or `TERM`) to one of our own children.
pub(crate) fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
}

impl Demo {
    /// Numbered messages `range` from alice to bob, 50 ms apart; `at_half` runs once,
    /// halfway. Returns when all were acknowledged, every client is active on `end_on`
    /// and bob has shown them all; also returns when every client was first seen on
    /// `end_on` after `at_half`.
    fn numbered(
        &mut self,
        range: std::ops::RangeInclusive<u32>,
        end_on: SocketAddr,
        mut at_half: impl FnMut(&mut Demo),
    ) -> io::Result<Option<Instant>> {
        let (alice, half) = (self.names[0].0, (range.start() + range.end()) / 2);
        let mut next = *range.start();
        let mut next_at = Instant::now();
        let mut moved_at = None;
        let mut fired = false;
        let last = *range.end();
        self.until("numbered messages", |d| {
            let now = Instant::now();
            if next <= last && now >= next_at {
                let _ = d.send(
                    alice,
                    Request::Direct {
                        to: "bob",
                        text: &format!("numbered {next}"),
                    },
                );
                if next == half && !fired {
                    fired = true;
                    at_half(d);
                }
                next += 1;
                next_at = now + Duration::from_millis(50);
            }
            let on_end = d.all_on(end_on);
            if fired && on_end && moved_at.is_none() {
                moved_at = Some(Instant::now());
            }
            let unacked = d
                .reactor
                .engine()
                .client_info(alice)
                .map_or(1, |i| i.unacked);
            next > last && unacked == 0 && on_end && d.shown_numbered().len() >= last as usize
        })?;
        Ok(moved_at)
    }

    /// Numbered messages bob has shown, sorted.
    fn shown_numbered(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lines[1]
            .iter()
            .filter_map(|l| l.strip_prefix("[alice -> you] numbered "))
            .filter_map(|n| n.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// When a client first reported losing its connection after `since`.
    fn first_loss_after(&self, since: Instant) -> Option<Instant> {
        self.losses.iter().copied().find(|t| *t >= since)
    }
}

pub fn run(tls: bool) -> io::Result<()> {
    let timeline = Arc::new(Timeline {
        start: Instant::now(),
    });
    println!(
        "echo-im demo: two server processes, three clients{}. Heartbeat every {PING:?}; a client \
         gives up on a silent server after {:?}; a server drops a silent client after {IDLE:?}.\n",
        if tls {
            ", all over TLS (a certificate authority made for this run)"
        } else {
            ""
        },
        PING * 2
    );
    let pki = if tls {
        Some(ThrowawayPki::new()?)
    } else {
        None
    };
    let server_args = pki
        .as_ref()
        .map(ThrowawayPki::server_args)
        .unwrap_or_default();
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let start = |name, addr| ServerProc::start_with(name, addr, &server_args, &timeline);
    let (a_addr, b_addr) = (free_port()?, free_port()?);
    let mut a = Some(start("A", a_addr)?);
    let mut b = Some(start("B", b_addr)?);

    let cfg = Config {
        ping_interval: PING,
        ..Config::default()
    };
    let mut reactor = Reactor::new(cfg)?;
    let mut names = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let now = Instant::now();
        let cfg = ClientConfig {
            identity: Text::from(name),
            token: Bytes::new(),
            servers: vec![a_addr, b_addr],
            instance: None,
        };
        let id = match pki.as_ref() {
            Some(pki) => reactor
                .engine()
                .add_client_tls(cfg, pki.client_tls()?, now)?,
            None => reactor.engine().add_client(cfg, now)?,
        };
        names.push((id, name));
    }
    let mut demo = Demo {
        reactor,
        timeline: timeline.clone(),
        names,
        dedup: (0..3).map(|_| Dedup::new(10_000)).collect(),
        lines: vec![Vec::new(); 3],
        raw_numbered: Vec::new(),
        losses: Vec::new(),
    };
    let [alice, bob, carol] = [demo.names[0].0, demo.names[1].0, demo.names[2].0];

    println!("\n--- 1. everyone logs in to server A (first on their list)");
    demo.until("log in", |d| d.all_on(a_addr))?;

    println!("\n--- 2. a direct message, a broadcast, an echo");
    demo.send(
        alice,
        Request::Direct {
            to: "bob",
            text: "hi bob",
        },
    )?;
    demo.send(bob, Request::Broadcast("hello everyone"))?;
    demo.send(carol, Request::Echo("is anybody there?"))?;
    demo.until("first messages", |d| {
        d.got(1, "hi bob")
            && d.got(0, "hello everyone")
            && d.got(2, "hello everyone")
            && d.got(2, "[echo]")
    })?;

    println!(
        "\n--- 3. alice sends bob numbered messages 1-20; server A is killed (kill -9) halfway"
    );
    let mut killed_at = Instant::now();
    let moved = demo.numbered(1..=20, b_addr, |d| {
        if let Some(mut a) = a.take() {
            d.timeline
                .say("server A", &format!("kill -9 (pid {})", a.child.id()));
            let _ = a.child.kill();
            let _ = a.child.wait();
            killed_at = Instant::now();
        }
    })?;
    let kill_failover = moved.map(|t| t - killed_at);

    println!(
        "\n--- 4. server A comes back; then server B freezes (SIGSTOP) during messages 21-30:"
    );
    println!(
        "       its kernel still takes our bytes, so writes succeed, but nothing ever comes back"
    );
    let a_again = start("A", a_addr)?;
    let mut frozen_at = Instant::now();
    let moved = demo.numbered(21..=30, a_addr, |d| {
        if let Some(b) = b.as_ref() {
            d.timeline.say(
                "server B",
                &format!("frozen with SIGSTOP (pid {})", b.child.id()),
            );
            signal(&b.child, "STOP");
            frozen_at = Instant::now();
        }
    })?;
    let detected = demo.first_loss_after(frozen_at).map(|t| t - frozen_at);
    let freeze_failover = moved.map(|t| t - frozen_at);
    let shown = demo.shown_numbered();
    let exactly_once = shown == (1..=30).collect::<Vec<_>>();
    let resent_copies = demo.raw_numbered.len() - shown.len();
    timeline.say(
        "bob",
        &format!(
            "has numbered 1-30: {} ({resent_copies} resent cop{} recognised and not shown)",
            if exactly_once {
                "every one exactly once"
            } else {
                "NOT all, or some twice"
            },
            if resent_copies == 1 { "y" } else { "ies" }
        ),
    );

    println!("\n--- 5. a client logs in to server A and then says nothing");
    timeline.say("mute", "logs in to server A and goes silent");
    let mute_tls = pki.as_ref().map(ThrowawayPki::client_tls).transpose()?;
    let mute = std::thread::spawn(move || silent_client(a_addr, "mute", mute_tls));
    demo.until("silent client", |_| mute.is_finished())?;
    let (silent_for, frames) = mute
        .join()
        .map_err(|_| io::Error::other("silent client panicked"))??;
    let last = frames.last().map_or("nothing".to_string(), |f| match f {
        Frame::Error(r) => format!("ERROR {r}"),
        other => other.kind().to_string(),
    });
    timeline.say(
        "mute",
        &format!(
            "hung up on after {:.2} s; last frame {last}",
            silent_for.as_secs_f64()
        ),
    );

    println!("\n--- 6. server A shuts down gracefully (SIGTERM): a GOAWAY tells clients at once");
    timeline.say("server A", &format!("SIGTERM (pid {})", a_again.child.id()));
    signal(&a_again.child, "TERM");
    demo.until("goaway", |d| (0..3).all(|i| d.got(i, "SHUTTING_DOWN")))?;
    drop(a_again);
    drop(b.take()); // the frozen B is killed on drop
    let now = Instant::now();
    demo.reactor.engine().shutdown(now);

    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!("\n--- summary");
    println!(
        "  kill -9 of A: all clients active on B after {}",
        ms(kill_failover)
    );
    println!(
        "  frozen B: silence noticed after {}, all clients active on A after {}",
        ms(detected),
        ms(freeze_failover)
    );
    println!(
        "  numbered messages to bob across both failures: {}/30, exactly once: {}",
        shown.len(),
        if exactly_once { "yes" } else { "NO" }
    );
    println!(
        "  silent client dropped after {:.2} s ({last})",
        silent_for.as_secs_f64()
    );
    println!(
        "  demo took {:.1} s",
        timeline.start.elapsed().as_secs_f64()
    );
    if exactly_once {
        Ok(())
    } else {
        Err(io::Error::other("a message was lost or shown twice"))
    }
}

/// A certificate authority made for one run of the demo, and a certificate it signed for
/// `localhost` and 127.0.0.1, written to a directory of its own (removed on drop).
struct ThrowawayPki {
    dir: std::path::PathBuf,
    ca_pem: String,
}

impl ThrowawayPki {
    fn new() -> io::Result<ThrowawayPki> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let err = |e: rcgen::Error| io::Error::other(format!("certificate: {e}"));
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name
            .push(DnType::CommonName, "echo-im demo CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let key = KeyPair::generate().map_err(err)?;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = CertificateParams::new(names)
            .map_err(err)?
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(err)?;
        let dir = std::env::temp_dir().join(format!("echo-im-demo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), leaf.pem())?;
        std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
        Ok(ThrowawayPki {
            dir,
            ca_pem: ca_cert.pem(),
        })
    }

    fn server_args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        vec![
            "--tls-cert".to_string(),
            path("cert.pem"),
            "--tls-key".to_string(),
            path("key.pem"),
        ]
    }

    fn client_tls(&self) -> io::Result<liveline::engine::ClientTls> {
        let config = liveline::tls::client_config(self.ca_pem.as_bytes())
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(liveline::engine::ClientTls {
            config,
            server_name: rustls_pki_types::ServerName::try_from("localhost")
                .map_err(|e| io::Error::other(e.to_string()))?,
        })
    }
}

impl Drop for ThrowawayPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
