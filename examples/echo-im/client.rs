//! The interactive line client: stdin is read on its own thread and handed to the loop
//! through the reactor's `Handle`; everything is printed from the loop thread.

use crate::proto::{Push, Request, MAX_TEXT};
use bytes::Bytes;
use hashbrown::HashSet;
use liveline::config::Config;
use liveline::engine::{ClientConfig, ClientId, ClientInfo, ClientState, Engine, Event};
use liveline::frame::Text;
use liveline::reactor::{Handle, Reactor};
use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Prints a line to stdout; a closed stdout (the reader went away) is not worth a crash.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Client settings (flags of `echo-im client`).
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub user: String,
    pub servers: Vec<SocketAddr>,
    pub engine: Config,
    pub token: Option<String>,
}

pub const HELP: &str = "\
commands:
  TEXT             send TEXT to everyone online
  :to NAME TEXT    send TEXT to NAME (held by the server while NAME is offline)
  :echo TEXT       have the server send TEXT back
  :users           who is online
  :info            connection details
  :help            this list
  :q               quit";

/// Remembers recently seen message origins so that a message resent to a second server
/// during a failover is shown once.
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Dedup {
    pub fn new(cap: usize) -> Dedup {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Whether `origin` is new (and from now on known).
    pub fn first(&mut self, origin: &str) -> bool {
        if self.seen.contains(origin) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(origin.to_string());
        self.order.push_back(origin.to_string());
        true
    }
}

/// One printable line for a client event, or `None` for events not worth a line.
pub fn describe(event: &Event, dedup: &mut Dedup) -> Option<String> {
    match event {
        Event::ClientState {
            state,
            server,
            reason,
            retry,
            ..
        } => {
            let name = |s: &Option<SocketAddr>| s.map_or("?".to_string(), |s| s.to_string());
            let why = reason.as_ref().map_or("-".to_string(), |r| r.to_string());
            match state {
                ClientState::Active => Some(format!("connected to {}", name(server))),
                ClientState::Backoff => Some(format!(
                    "connection to {} lost ({why}); reconnecting in {} ms to {}",
                    name(server),
                    retry.as_ref().map_or(0, |r| r.after.as_millis()),
                    name(&retry.as_ref().map(|r| r.server))
                )),
                ClientState::Closed => Some(format!("stopped ({why})")),
                ClientState::Connecting | ClientState::Handshaking => None,
            }
        }
        Event::ClientMessage { payload, .. } => {
            let text = std::str::from_utf8(payload).ok()?;
            match Push::parse(text)? {
                Push::Message {
                    origin,
                    from,
                    kind,
                    text,
                } => {
                    if !dedup.first(origin) {
                        return None;
                    }
                    Some(match kind {
                        "to" => format!("[{from} -> you] {text}"),
                        "echo" => format!("[echo] {text}"),
                        _ => format!("[{from}] {text}"),
                    })
                }
                Push::Users(users) => Some(format!("online: {}", users.join(", "))),
                Push::Notice(t) => Some(format!("* {t}")),
            }
        }
        Event::Failed { payload, .. } => Some(format!(
            "not delivered: {}",
            String::from_utf8_lossy(payload)
        )),
        _ => None,
    }
}

pub fn format_info(info: &ClientInfo) -> String {
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    format!(
        "server: {}\nstate: {:?}\nuptime: {}\nrtt: last {}, mean {}\nlast read: {} ago, last write: {} ago\nreconnects: {}\nunacked: {}",
        info.server.map_or("-".to_string(), |s| s.to_string()),
        info.state,
        secs(info.uptime),
        ms(info.rtt_last),
        ms(info.rtt_mean),
        secs(info.since_read),
        secs(info.since_write),
        info.reconnects,
        info.unacked,
    )
}

fn send(handle: &Handle, client: ClientId, request: String) {
    let _ = handle.run(move |engine, _now| {
        if let Err(e) = engine.client_send_message(client, Bytes::from(request)) {
            say!("! not sent: {e}");
        }
    });
}

/// Reads commands until `:q` or end of input; at end of input, waits (at most 5 s) for
/// everything sent to be acknowledged before quitting.
fn read_stdin(handle: Handle, client: ClientId) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end();
        if line.len() > MAX_TEXT {
            say!("! not sent: {} bytes, at most {MAX_TEXT}", line.len());
            continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "" => {}
            ":q" | ":quit" => {
                let _ = handle.shutdown();
                return;
            }
            ":help" => say!("{HELP}"),
            ":info" => {
                let _ = handle.run(move |engine, _| {
                    if let Some(info) = engine.client_info(client) {
                        say!("{}", format_info(&info));
                    }
                });
            }
            ":users" => send(&handle, client, Request::Users.encode()),
            ":echo" => send(&handle, client, Request::Echo(rest).encode()),
            ":to" => match rest.split_once(' ') {
                Some((to, text)) => send(&handle, client, Request::Direct { to, text }.encode()),
                None => say!("usage: :to NAME TEXT"),
            },
            c if c.starts_with(':') => say!("unknown command {c}; :help lists them"),
            _ => send(&handle, client, Request::Broadcast(line).encode()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (tx, rx) = mpsc::channel();
        let asked = handle.run(move |engine, _| {
            let _ = tx.send(engine.client_info(client).map_or(0, |i| i.unacked));
        });
        if asked.is_err() || rx.recv_timeout(Duration::from_secs(1)) != Ok(0) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        break;
    }
    let _ = handle.shutdown();
}

pub fn run(opts: ClientOptions) -> std::io::Result<()> {
    let mut reactor = Reactor::new(opts.engine.clone())?;
    let now = Instant::now();
    let client = reactor.engine().add_client(
        ClientConfig {
            identity: Text::from(opts.user.clone()),
            token: Bytes::from(opts.token.clone().unwrap_or_default()),
            servers: opts.servers.clone(),
            instance: None,
        },
        now,
    )?;
    say!("{} here; :help lists the commands", opts.user);
    let handle = reactor.handle();
    std::thread::spawn(move || read_stdin(handle, client));
    let mut dedup = Dedup::new(10_000);
    let mut handler = |_: &mut Engine, event: Event, _: Instant| {
        if let Some(line) = describe(&event, &mut dedup) {
            say!("{line}");
        }
    };
    reactor.run(&mut handler)
}
