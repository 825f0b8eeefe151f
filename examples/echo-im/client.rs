//! The interactive line client: stdin is read on its own thread and handed to the loop
//! through the reactor's `Handle`; everything is printed from the loop thread.

use crate::proto::{valid_name, Push, Request, MAX_TEXT, NAME_RULE};
use bytes::Bytes;
use hashbrown::HashSet;
use liveline::config::Config;
use liveline::engine::{App, ClientConfig, ClientEvent, ClientId, ClientInfo, ClientState, Event};
use liveline::frame::{Code, Text};
use liveline::reactor::{Handle, Reactor};
use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
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
    /// TLS to the servers, if asked for.
    pub tls: Option<liveline::engine::ClientTls>,
}

pub const HELP: &str = "\
commands:
  TEXT             send TEXT to everyone online
  :to NAME TEXT    send TEXT to NAME (held by the server while NAME is offline)
  :echo TEXT       have the server send TEXT back
  :users           who is online
  :info            connection details
  :retry           reconnect now instead of waiting (an empty line does too)
  :help            this list
  :q               quit (Ctrl-D and Ctrl-C too): waits up to 5 s for what was sent";

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
        Event::Client(ClientEvent::State {
            state,
            server,
            reason,
            retry,
            ..
        }) => {
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
        Event::Client(ClientEvent::Message { payload, .. }) => {
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
                Push::Users(users) => Some(format!("online: {}", users_line(&users))),
                Push::Notice(t) => Some(format!("* {t}")),
                // Kept for :info, not a line of its own.
                Push::Server(_) => None,
            }
        }
        Event::Client(ClientEvent::Failed { payload, .. }) => {
            Some(format!("! not delivered: {}", as_typed(payload)))
        }
        _ => None,
    }
}

/// `alice, bob` from a standalone server; `alice (A), bob (B)` from a cluster, whose
/// entries are `<user>@<node>`.
pub fn users_line(users: &[&str]) -> String {
    let shown: Vec<String> = users
        .iter()
        .map(|u| match u.split_once('@') {
            Some((user, node)) => format!("{user} ({node})"),
            None => u.to_string(),
        })
        .collect();
    shown.join(", ")
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

/// What a request looked like when the user typed it, for messages reported undelivered.
pub fn as_typed(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    match Request::parse(&text) {
        Some(Request::Broadcast(t)) => t.to_string(),
        Some(Request::Direct { to, text }) => format!(":to {to} {text}"),
        Some(Request::Echo(t)) => format!(":echo {t}"),
        Some(Request::Users) => ":users".to_string(),
        None => text.into_owned(),
    }
}

/// Sends a request, saying so when it has to wait for a connection.
fn send(handle: &Handle, client: ClientId, request: String) {
    let _ = handle.run(move |app| {
        let active = app
            .client_info(client)
            .is_some_and(|i| i.state == ClientState::Active);
        match app.client_send_message(client, Bytes::from(request)) {
            Ok(_) if !active => say!("(queued, will send when connected)"),
            Ok(_) => {}
            Err(e) => say!("! not sent: {e}"),
        }
    });
}

/// What one typed line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Send this request.
    Send(Request<'a>),
    /// Print this and send nothing.
    Refuse(String),
    Help,
    Info,
    Retry,
    Quit,
    /// An empty line: try to connect now if waiting to, else nothing.
    Empty,
}

/// Reads one typed line (without its line end). Every line either sends something, or
/// is answered with why not.
pub fn parse_input(line: &str) -> Input<'_> {
    if line.len() > MAX_TEXT {
        return Input::Refuse(format!(
            "! not sent: {} bytes, at most {MAX_TEXT}",
            line.len()
        ));
    }
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Input::Empty;
    }
    let Some(command) = trimmed.strip_prefix(':') else {
        // Plain text goes to everyone, as typed (leading spaces included).
        return Input::Send(Request::Broadcast(line.trim_end()));
    };
    let (cmd, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(c, r)| (c, r.trim_start()));
    match cmd {
        "q" | "quit" => Input::Quit,
        "help" => Input::Help,
        "info" => Input::Info,
        "retry" => Input::Retry,
        "users" => Input::Send(Request::Users),
        "echo" => Input::Send(Request::Echo(rest)),
        "to" => {
            let (to, text) = rest
                .split_once(char::is_whitespace)
                .map_or((rest, ""), |(to, text)| (to, text.trim_start()));
            if to.is_empty() || text.is_empty() {
                Input::Refuse("usage: :to NAME TEXT".to_string())
            } else if !valid_name(to) {
                Input::Refuse(format!(
                    "! not sent: invalid user name {to:?} ({NAME_RULE})"
                ))
            } else {
                Input::Send(Request::Direct { to, text })
            }
        }
        other => Input::Refuse(format!("unknown command :{other}; :help lists them")),
    }
}

/// Reads commands until `:q`, the end of input (Ctrl-D) or a signal, then quits gracefully.
/// Reads typed lines and runs them; `node` is the server's name, for :info.
fn read_stdin(handle: Handle, client: ClientId, quit: mpsc::Sender<()>, node: Arc<Mutex<String>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            let at = std::str::from_utf8(&buf).map_or_else(|e| e.valid_up_to(), |_| 0);
            say!("! not sent: the line is not valid UTF-8 (byte {})", at + 1);
            continue;
        };
        match parse_input(line) {
            Input::Send(request) => send(&handle, client, request.encode()),
            Input::Refuse(why) => say!("{why}"),
            Input::Help => say!("{HELP}"),
            Input::Info => {
                let node = Arc::clone(&node);
                let _ = handle.run(move |app| {
                    if let Some(info) = app.client_info(client) {
                        let node = node.lock().map_or(String::new(), |n| n.clone());
                        let node = if node.is_empty() {
                            "-".to_string()
                        } else {
                            node
                        };
                        say!("{}\nnode: {node}", format_info(&info));
                    }
                });
            }
            Input::Retry | Input::Empty => {
                let typed = matches!(parse_input(line), Input::Retry);
                let _ = handle.run(move |app| match app.retry_now(client) {
                    Ok(true) => say!("retrying now"),
                    Ok(false) if typed => say!("not waiting to reconnect"),
                    _ => {}
                });
            }
            Input::Quit => break,
        }
    }
    let _ = quit.send(());
}

/// Quits gracefully: the client closes once what was sent is acknowledged (at most 5 s),
/// reporting anything still undelivered, and tells the server it is a quit.
fn quit_gracefully(handle: &Handle, client: ClientId) {
    let _ = handle.run(move |app| {
        let _ = app.close_client_when_acked(client, Duration::from_secs(5));
    });
}

/// Turns client events into lines, with what a person needs: a lost connection only for
/// a connection that existed, one line when every server is down, final stops said once.
struct Screen {
    dedup: Dedup,
    /// The server's name, from its `S` push (shown by :info).
    node: Arc<Mutex<String>>,
    servers: usize,
    connected: bool,
    failed: usize,
    all_down_said: bool,
    exit: i32,
}

impl Screen {
    fn on_event(&mut self, app: &mut App<'_>, event: &Event) {
        if let Event::Client(ClientEvent::Message { payload, .. }) = event {
            if let Some(Push::Server(node)) =
                std::str::from_utf8(payload).ok().and_then(Push::parse)
            {
                if let Ok(mut n) = self.node.lock() {
                    *n = node.to_string();
                }
            }
        }
        match event {
            Event::Client(ClientEvent::State {
                state: ClientState::Active,
                server,
                ..
            }) => {
                self.connected = true;
                self.failed = 0;
                self.all_down_said = false;
                say!("connected to {}", addr(server));
            }
            Event::Client(ClientEvent::State {
                state: ClientState::Backoff,
                server,
                reason,
                retry,
                ..
            }) => {
                let why = reason
                    .as_ref()
                    .map_or(String::new(), |r| r.text.to_string());
                let (wait, next) = retry
                    .as_ref()
                    .map_or((Duration::ZERO, None), |r| (r.after, Some(r.server)));
                if std::mem::take(&mut self.connected) {
                    say!(
                        "connection to {} lost ({why}); reconnecting in {} ms to {}",
                        addr(server),
                        wait.as_millis(),
                        addr(&next)
                    );
                } else {
                    self.failed += 1;
                    if self.failed >= self.servers && !self.all_down_said {
                        self.all_down_said = true;
                        say!(
                            "all servers down (last: {} {why}); retrying in {:.1} s, :retry to try now",
                            addr(server),
                            wait.as_secs_f64()
                        );
                    }
                }
            }
            Event::Client(ClientEvent::State {
                state: ClientState::Closed,
                reason,
                ..
            }) => {
                let code = reason.as_ref().map_or(Code::NO_ERROR, |r| r.code);
                if code == Code::NO_ERROR {
                    say!("bye");
                } else {
                    let text = reason.as_ref().map_or("", |r| r.text.as_str());
                    let what = match code {
                        Code::REPLACED => "logged in elsewhere",
                        Code::AUTH_FAILED => "login refused",
                        Code::INVALID_IDENTITY => "login refused",
                        Code::UNSUPPORTED_VERSION => "the server speaks another protocol version",
                        _ => "stopped by the server",
                    };
                    let name = code.name().unwrap_or("error");
                    // The server's own words when they add something, and the code to quote.
                    if text.is_empty() || text == what {
                        say!("stopped: {what} ({name})");
                    } else {
                        say!("stopped: {what}: {text} ({name})");
                    }
                    self.exit = 1;
                }
                // Nothing more will happen: end the loop (after the last frames flush).
                app.shutdown();
            }
            Event::Client(ClientEvent::Failed { payload, .. }) => {
                say!("! not delivered: {}", as_typed(payload));
            }
            other => {
                if let Some(line) = describe(other, &mut self.dedup) {
                    say!("{line}");
                }
            }
        }
    }
}

fn addr(a: &Option<SocketAddr>) -> String {
    a.map_or("?".to_string(), |a| a.to_string())
}

/// Runs the interactive client; returns the process's exit code (0 after a quit, 1 after
/// a final stop by a server).
pub fn run(opts: ClientOptions) -> std::io::Result<i32> {
    let mut reactor = Reactor::new(opts.engine.clone())?;
    let now = Instant::now();
    let cfg = ClientConfig {
        identity: Text::from(opts.user.clone()),
        token: Bytes::from(opts.token.clone().unwrap_or_default()),
        servers: opts.servers.clone(),
        instance: None,
    };
    let client = match opts.tls.clone() {
        Some(tls) => reactor.engine().add_client_tls(cfg, tls, now)?,
        None => reactor.engine().add_client(cfg, now)?,
    };
    say!("{} here; :help lists the commands", opts.user);
    let handle = reactor.handle();
    let (quit_tx, quit_rx) = mpsc::channel();
    let stdin_handle = handle.clone();
    let stdin_quit = quit_tx.clone();
    let node = Arc::new(Mutex::new(String::new()));
    let stdin_node = Arc::clone(&node);
    std::thread::spawn(move || read_stdin(stdin_handle, client, stdin_quit, stdin_node));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = quit_tx.send(());
        }
    });
    // Ctrl-C, Ctrl-D and :q all end here: one graceful quit.
    let quit_handle = handle.clone();
    std::thread::spawn(move || {
        if quit_rx.recv().is_ok() {
            quit_gracefully(&quit_handle, client);
        }
    });
    let mut screen = Screen {
        dedup: Dedup::new(10_000),
        node: Arc::clone(&node),
        servers: opts.servers.len(),
        connected: false,
        failed: 0,
        all_down_said: false,
        exit: 0,
    };
    let mut handler = |app: &mut App, event: Event| {
        screen.on_event(app, &event);
    };
    reactor.run(&mut handler)?;
    Ok(screen.exit)
}
