//! The chat server: sessions from liveline, users and held messages here.

use crate::cluster::{Cluster, Here, Outcome};
use crate::proto::{valid_name, Push, Request, MAX_TEXT, NAME_RULE};
use bytes::Bytes;
use hashbrown::HashMap;
use liveline::bus::{Bus, Hub, LocalBus};
use liveline::config::Config;
use liveline::engine::{App, Event, SendError, ServerEvent};
use liveline::frame::{Code, Reason, Text};
use liveline::link::{LinkConfig, LinkEvent, LinkState};
use liveline::reactor::{ListenConfig, Loops, Reactor};
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Server settings (flags of `echo-im server`).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub engine: Config,
    /// Messages held per offline user; the oldest are dropped beyond it.
    pub max_held: usize,
    /// Held messages older than this are dropped.
    pub held_age: Duration,
    /// If set, a HELLO must carry this token.
    pub token: Option<String>,
    /// Connections one IP address may hold at once.
    pub max_per_ip: Option<u32>,
    /// Redis servers of the cluster (tried in order); none: this server stands alone.
    pub redis: Vec<SocketAddr>,
    /// This node's name in the cluster.
    pub node: String,
    /// Loops (threads), each with its own listener on the address.
    pub threads: usize,
    /// TLS under the protocol, if given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Share the address with other processes started with it too (`SO_REUSEPORT`);
    /// without it, an address in use is an error even though the loops share it.
    pub reuse_port: bool,
}

/// In-process bus channels between the loops of one server: broadcasts, logins (so that
/// a loop holding messages for a user who logged in elsewhere forwards them), and one
/// channel per user logged in (`user:<name>`).
const ALL: &[u8] = b"all";
const LOGINS: &[u8] = b"logins";
const USER: &str = "user:";

/// The application timer of the cluster's once-a-second work.
const CLUSTER_TICK: u64 = 1;

struct Held {
    at: Instant,
    payload: Bytes,
}

/// Who is online is the engine's to know (`App::session_of`, `App::sessions`); the
/// chat keeps only what it holds for users who are not.
#[derive(Default)]
struct Chat {
    held: HashMap<String, VecDeque<Held>>,
    max_held: usize,
    held_age: Duration,
    /// With `--redis`: the part of the chat that lives in Redis.
    cluster: Option<Cluster>,
    /// This server's name (`--node`, else its listen address).
    node: String,
    /// With several loops and no cluster: this loop's end of the in-process bus.
    bus: Option<LocalBus>,
    /// With a bus: the login number of each user logged in on this loop; a later login on
    /// another loop (a higher number) replaces the session here.
    logins: HashMap<String, u64>,
    /// The server's login counter, shared by its loops.
    login_seq: Arc<AtomicU64>,
}

impl Chat {
    fn on_event(&mut self, app: &mut App<'_>, event: Event) {
        let now = app.now();
        match event {
            Event::Server(ServerEvent::Opened {
                conn,
                identity,
                peer,
                ..
            }) => {
                let from = peer.map_or(String::new(), |p| format!(" from {p}"));
                info!("online: {identity} ({conn}){from}");
                // The server's name first, for the client's :info.
                let _ = app.send_message(conn, Bytes::from(Push::Server(&self.node).encode()));
                self.flush_held(app, identity.as_str(), now);
                if let Some(c) = self.cluster.as_mut() {
                    c.on_login(app, identity.as_str());
                }
                if let Some(bus) = self.bus.as_mut() {
                    let seq = self.login_seq.fetch_add(1, Ordering::Relaxed) + 1;
                    self.logins.insert(identity.to_string(), seq);
                    bus.subscribe(format!("{USER}{identity}").as_bytes());
                    let _ = bus.publish(LOGINS, format!("{identity} {seq}").as_bytes(), 0);
                }
            }
            Event::Server(ServerEvent::Acked { identity, id, .. }) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.on_acked(app, identity.as_str(), id);
                }
                // Room in the window: what waits for this user may go now.
                self.flush_held(app, identity.as_str(), now);
            }
            Event::Server(ServerEvent::Failed {
                identity,
                payload,
                cause,
                id,
                ..
            }) => {
                if let Some(c) = self.cluster.as_mut() {
                    if c.on_failed(identity.as_str(), id) {
                        // Still in the user's inbox: their next login gets it.
                        return;
                    }
                }
                // Never acknowledged by the instance it went to (another one logged in, or
                // the record expired): the user gets it on their current session, or later.
                info!("re-sending a message {identity} did not acknowledge ({cause})");
                self.deliver(app, identity.as_str(), payload, now);
            }
            Event::Server(ServerEvent::Closed {
                conn,
                identity,
                reason,
            }) => match identity {
                Some(name) => {
                    let how = match reason.code {
                        Code::REPLACED => "kicked",
                        Code::IDLE_TIMEOUT => "dropped",
                        _ => "offline",
                    };
                    info!("{how}: {name} ({conn}): {reason}");
                    if app.session_of(name.as_str()).is_none() {
                        if let Some(c) = self.cluster.as_mut() {
                            c.on_logout(app, name.as_str());
                        }
                        if let Some(bus) = self.bus.as_mut() {
                            bus.unsubscribe(format!("{USER}{name}").as_bytes());
                            self.logins.remove(name.as_str());
                        }
                    }
                }
                None => info!("connection {conn} closed before login: {reason}"),
            },
            Event::Server(ServerEvent::Message {
                identity,
                instance,
                id,
                payload,
                ..
            }) => {
                let ack = (identity.clone(), instance, id);
                let taken = self.on_request(app, &identity, instance, id, &payload, now);
                // With a cluster, MESSAGEs are confirmed by the application: at once, unless
                // the cluster took it (it confirms once the message is stored).
                if self.cluster.is_some() && !taken {
                    let _ = app.ack_message(ack.0.as_str(), ack.1, ack.2);
                }
            }
            Event::Bus { channel, payload } => self.on_bus(app, &channel, payload, now),
            Event::Timer {
                token: CLUSTER_TICK,
                ..
            } => {
                if let Some(c) = self.cluster.as_mut() {
                    c.on_tick(app);
                }
            }
            Event::Link(LinkEvent::Readable { .. }) => {
                if let Some(mut c) = self.cluster.take() {
                    c.on_readable(app, self);
                    self.cluster = Some(c);
                }
            }
            Event::Link(LinkEvent::State {
                state: LinkState::Backoff,
                server,
                reason,
                ..
            }) => {
                let server = server.map_or(String::new(), |s| s.to_string());
                let reason = reason.map_or(String::new(), |r| r.to_string());
                debug!("redis {server}: {reason}");
            }
            _ => {}
        }
    }

    /// A request from `from`. Returns whether the cluster took the MESSAGE over (it then
    /// confirms it once stored).
    fn on_request(
        &mut self,
        app: &mut App<'_>,
        identity: &Text,
        instance: u64,
        id: u64,
        payload: &Bytes,
        now: Instant,
    ) -> bool {
        let from = identity.as_str();
        let text = std::str::from_utf8(payload).unwrap_or("");
        let origin = format!("{instance:x}:{id}");
        let ack = (identity.clone(), instance, id);
        if let Some(Request::Broadcast(t) | Request::Echo(t) | Request::Direct { text: t, .. }) =
            Request::parse(text)
        {
            if t.len() > MAX_TEXT {
                let why = format!("not sent: {} bytes of text, at most {MAX_TEXT}", t.len());
                self.notice(app, from, &why, now);
                return false;
            }
        }
        match Request::parse(text) {
            Some(Request::Broadcast(t)) => {
                let push = message(&origin, from, "all", t);
                if let Some(c) = self.cluster.as_mut() {
                    if c.broadcast(app, from, &push, ack) {
                        return true;
                    }
                }
                if let Some(bus) = self.bus.as_mut() {
                    // Every loop, this one included, hears it on the bus.
                    let others = bus
                        .channels(USER.as_bytes())
                        .iter()
                        .any(|c| &c[USER.len()..] != from.as_bytes());
                    let mut body = Vec::with_capacity(from.len() + 1 + push.len());
                    body.extend_from_slice(from.as_bytes());
                    body.push(b' ');
                    body.extend_from_slice(&push);
                    let _ = bus.publish(ALL, &body, 0);
                    if !others {
                        self.notice(app, from, "nobody else is online", now);
                    }
                    return false;
                }
                self.broadcast_here(app, from, push);
                if app.sessions().all(|(user, _)| user.as_str() == from) {
                    self.notice(app, from, "nobody else is online", now);
                }
            }
            Some(Request::Direct { to, text }) => {
                let push = message(&origin, from, "to", text);
                if !valid_name(to) {
                    let why = format!("invalid user name: {to} ({NAME_RULE})");
                    self.notice(app, from, &why, now);
                    return false;
                }
                if let Some(c) = self.cluster.as_mut() {
                    if let Outcome::Taken = c.store(app, from, to, push.clone(), Some(ack)) {
                        return true;
                    }
                }
                let elsewhere = self.bus.as_ref().is_some_and(|bus| {
                    !bus.subscribers(format!("{USER}{to}").as_bytes()).is_empty()
                });
                if elsewhere && app.session_of(to).is_none() {
                    // Logged in on another loop of this server.
                    self.deliver(app, to, push, now);
                    return false;
                }
                let online = app.session_of(to).is_some();
                self.deliver(app, to, push, now);
                if !online {
                    let why = format!("held for {to} (offline)");
                    self.notice(app, from, &why, now);
                }
            }
            Some(Request::Echo(t)) => {
                let push = message(&origin, from, "echo", t);
                self.deliver(app, from, push, now);
            }
            Some(Request::Users) => {
                let asked = self.cluster.as_mut().is_some_and(|c| c.users(app, from));
                if let (false, Some(bus)) = (asked, self.bus.as_ref()) {
                    let users = bus
                        .channels(USER.as_bytes())
                        .iter()
                        .map(|c| String::from_utf8_lossy(&c[USER.len()..]).into_owned())
                        .collect();
                    self.send_users(app, from, users);
                } else if !asked {
                    self.users_here(app, from);
                }
            }
            None => {
                warn!("{from}: unintelligible request {text:?}");
                let why = "unintelligible request (see docs/ECHO-IM.md)";
                self.notice(app, from, why, now);
            }
        }
        false
    }

    /// A message from another loop of this server.
    fn on_bus(&mut self, app: &mut App<'_>, channel: &[u8], payload: Bytes, now: Instant) {
        if channel == ALL {
            // "<from> <push>"
            let Some(space) = payload.iter().position(|&b| b == b' ') else {
                return;
            };
            let from = String::from_utf8_lossy(&payload[..space]).into_owned();
            self.broadcast_here(app, &from, payload.slice(space + 1..));
        } else if channel == LOGINS {
            // "<user> <login number>": a user logged in on some loop.
            let text = String::from_utf8_lossy(&payload).into_owned();
            let (user, seq) = text.split_once(' ').unwrap_or((&text, "0"));
            let seq: u64 = seq.parse().unwrap_or(0);
            if let Some(conn) = app.session_of(user) {
                if self.logins.get(user).is_some_and(|&mine| mine < seq) {
                    // A later login on another loop replaces this one; what this session
                    // still had to deliver follows the user there.
                    info!("kicked: {user}: logged in on another loop");
                    let reason = Reason::new(Code::REPLACED, "logged in elsewhere");
                    app.close(conn, reason);
                    self.logins.remove(user);
                    app.hand_back(user);
                }
            } else {
                // What this loop holds for them goes there.
                self.forward_held(app, user, now);
            }
        } else if let Some(user) = channel.strip_prefix(USER.as_bytes()) {
            // Sent here for a user of this loop; held here if they left meanwhile.
            let user = String::from_utf8_lossy(user).into_owned();
            self.deliver_here(app, &user, payload, now);
        }
    }

    /// Sends what this loop holds for `user` to the loop where they logged in.
    fn forward_held(&mut self, app: &mut App<'_>, user: &str, now: Instant) {
        let Some(bus) = self.bus.as_mut() else {
            return;
        };
        let channel = format!("{USER}{user}");
        if bus.subscribers(channel.as_bytes()).is_empty() {
            return;
        }
        let Some(queue) = self.held.remove(user) else {
            return;
        };
        let mut sent = 0;
        for h in queue {
            if now.duration_since(h.at) > self.held_age {
                tell_sender(app, user, &h.payload, "it waited too long");
                continue;
            }
            let _ = bus.publish(channel.as_bytes(), &h.payload, 0);
            sent += 1;
        }
        if sent > 0 {
            info!("delivering {sent} held message(s) to {user}");
        }
    }

    /// Sends what is held for `user` while the session takes it, oldest first.
    fn flush_held(&mut self, app: &mut App<'_>, user: &str, now: Instant) {
        let Some(conn) = app.session_of(user) else {
            return;
        };
        let Some(queue) = self.held.get_mut(user) else {
            return;
        };
        let mut sent = 0;
        while let Some(h) = queue.pop_front() {
            if now.duration_since(h.at) > self.held_age {
                tell_sender(app, user, &h.payload, "it waited too long");
                continue;
            }
            if let Err(e) = app.send_message(conn, h.payload.clone()) {
                // The window is full (or the session just ended): the rest waits for the
                // next acknowledgement or login.
                debug!("{user}: held messages wait: {e}");
                queue.push_front(h);
                break;
            }
            sent += 1;
        }
        if queue.is_empty() {
            self.held.remove(user);
        }
        if sent > 0 {
            info!("delivering {sent} held message(s) to {user}");
        }
    }

    /// Sends to `user` if online and nothing older waits for them; holds it otherwise
    /// (bounded by count and age), so that the user sees messages in order.
    fn deliver(&mut self, app: &mut App<'_>, user: &str, payload: Bytes, now: Instant) {
        if let Some(bus) = self.bus.as_mut() {
            let channel = format!("{USER}{user}");
            if app.session_of(user).is_none() && !bus.subscribers(channel.as_bytes()).is_empty() {
                // Logged in on another loop of this server.
                let _ = bus.publish(channel.as_bytes(), &payload, 0);
                return;
            }
        }
        self.deliver_here(app, user, payload, now);
    }

    /// As [`deliver`](Self::deliver), on this loop only: sent, or held.
    fn deliver_here(&mut self, app: &mut App<'_>, user: &str, payload: Bytes, now: Instant) {
        let waiting = self.held.get(user).is_some_and(|q| !q.is_empty());
        let session = app.session_of(user);
        if let (Some(conn), false) = (session, waiting) {
            match app.send_message(conn, payload.clone()) {
                Ok(_) => return,
                Err(SendError::TooLarge) => {
                    // Only a request near the frame limit grows past it when relayed.
                    warn!("a message for {user} is too large to relay; dropped");
                    return;
                }
                Err(_) => {}
            }
        }
        let online = session.is_some();
        let queue = self.held.entry(user.to_string()).or_default();
        while let Some(h) = queue.pop_front() {
            if now.duration_since(h.at) <= self.held_age {
                queue.push_front(h);
                break;
            }
            tell_sender(app, user, &h.payload, "it waited too long");
        }
        if queue.len() >= self.max_held {
            if let Some(h) = queue.pop_front() {
                warn!(
                    "held messages for {user} over {}: dropped the oldest",
                    self.max_held
                );
                let why = if online {
                    "they are not reading"
                } else {
                    "too many are waiting for them"
                };
                tell_sender(app, user, &h.payload, why);
            }
        }
        queue.push_back(Held { at: now, payload });
        if online {
            debug!("held a message for {user} (window full)");
        } else {
            info!("held a message for {user} (offline)");
        }
    }

    fn notice(&mut self, app: &mut App<'_>, user: &str, text: &str, now: Instant) {
        self.deliver(app, user, Bytes::from(Push::Notice(text).encode()), now);
    }
}

impl Here for Chat {
    fn broadcast_here(&mut self, app: &mut App<'_>, from: &str, push: Bytes) {
        let now = app.now();
        let others: Vec<String> = app
            .sessions()
            .map(|(user, _)| user.as_str())
            .filter(|&user| user != from)
            .map(String::from)
            .collect();
        for user in others {
            self.deliver(app, &user, push.clone(), now);
        }
    }

    fn users_here(&mut self, app: &mut App<'_>, asker: &str) {
        let users: Vec<String> = app
            .sessions()
            .map(|(user, _)| user.as_str().to_string())
            .collect();
        self.send_users(app, asker, users);
    }

    fn send_users(&mut self, app: &mut App<'_>, asker: &str, mut users: Vec<String>) {
        let now = app.now();
        users.sort_unstable();
        // One frame holds about 1,800 names: the rest are counted, not lost.
        let mut room = MAX_TEXT;
        let fit = users
            .iter()
            .take_while(|u| match room.checked_sub(u.len() + 1) {
                Some(left) => {
                    room = left;
                    true
                }
                None => false,
            })
            .count();
        let listed: Vec<&str> = users[..fit].iter().map(String::as_str).collect();
        let push = Bytes::from(Push::Users(listed).encode());
        self.deliver(app, asker, push, now);
        if fit < users.len() {
            let more = format!("{} more online, not listed", users.len() - fit);
            self.notice(app, asker, &more, now);
        }
    }
}

/// A notice for `user`'s session on this node, if it has one (a notice is never held).
pub fn notice_to(app: &mut App<'_>, user: &str, text: &str) {
    let notice = Bytes::from(Push::Notice(text).encode());
    if let Err(e) = app.send_to(user, notice) {
        info!("{user} not told {text:?}: {e}");
    }
}

/// A held message for `user` is dropped: its sender (if it was a user's message and they are
/// online) is told, so that nothing acknowledged to them vanishes in silence.
fn tell_sender(app: &mut App<'_>, user: &str, payload: &Bytes, why: &str) {
    let text = std::str::from_utf8(payload).unwrap_or("");
    if let Some(Push::Message { from, text, .. }) = Push::parse(text) {
        if from != user {
            let notice = Push::Notice(&format!("not delivered to {user} ({why}): {text}")).encode();
            if let Err(e) = app.send_to(from, Bytes::from(notice)) {
                info!("{from} not told of a message to {user} not delivered: {e}");
            }
        }
    }
}

fn message(origin: &str, from: &str, kind: &str, text: &str) -> Bytes {
    Bytes::from(
        Push::Message {
            origin,
            from,
            kind,
            text,
        }
        .encode(),
    )
}

pub fn run(opts: ServerOptions) -> std::io::Result<()> {
    let threads = opts.threads.max(1);
    // The loops of one standalone server meet on an in-process bus; with a cluster, each
    // loop is a node of its own and they meet in Redis.
    let hub = (threads > 1 && opts.redis.is_empty()).then(|| Hub::new(threads));
    let bound: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let login_seq: Arc<AtomicU64> = Arc::default();
    let setup_bound = Arc::clone(&bound);
    let listen = opts.listen;
    let loops = Loops::spawn(threads, move |i| {
        let node = if threads > 1 {
            format!("{}/{i}", opts.node)
        } else {
            opts.node.clone()
        };
        // The first loop binds (port 0 picks one); the others share its address.
        let addr = setup_bound
            .lock()
            .map_err(|_| std::io::Error::other("a loop panicked"))?
            .unwrap_or(opts.listen);
        let (reactor, mut chat, bound_addr) =
            start_loop(&opts, i, addr, node, hub.as_ref(), threads > 1)?;
        chat.login_seq = Arc::clone(&login_seq);
        if let Ok(mut b) = setup_bound.lock() {
            *b = Some(bound_addr);
        }
        Ok((reactor, move |app: &mut App, event: Event| {
            chat.on_event(app, event)
        }))
    })?;
    let addr = bound.lock().ok().and_then(|b| *b).unwrap_or(listen);
    // Printed on stdout so that scripts (and the demo) know the server is up.
    println!("listening on {addr}");
    if threads > 1 {
        info!("{threads} loops share {addr}");
    }
    let handles: Vec<_> = loops.handles().to_vec();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            info!("signal {sig}: shutting down gracefully");
            for h in &handles {
                let _ = h.shutdown();
            }
        }
    });
    loops.join()?;
    info!("stopped");
    Ok(())
}

/// Loop `i`: its reactor, listening on `addr`, its chat, and the address it is bound to.
fn start_loop(
    opts: &ServerOptions,
    i: usize,
    addr: SocketAddr,
    node: String,
    hub: Option<&Hub>,
    shared_port: bool,
) -> std::io::Result<(Reactor, Chat, SocketAddr)> {
    let mut reactor = Reactor::new(opts.engine.clone())?;
    let token = opts.token.clone();
    reactor.engine().set_hello_hook(Box::new(move |hello| {
        if !valid_name(hello.identity.as_str()) {
            return Err(Reason::new(Code::INVALID_IDENTITY, NAME_RULE));
        }
        match &token {
            Some(t) if hello.token.as_ref() != t.as_bytes() => {
                Err(Reason::new(Code::AUTH_FAILED, "bad token"))
            }
            _ => Ok(()),
        }
    }));
    let listen = ListenConfig {
        max_per_ip: opts.max_per_ip,
        reuse_port: shared_port || opts.reuse_port,
        tls: opts.tls.clone(),
        ..ListenConfig::default()
    };
    // The loops share the port through SO_REUSEPORT, which would also let this process
    // join another's listener: the first loop checks that the address is free for a socket
    // that does not share, unless sharing with other processes was asked for.
    let addr = if i == 0 && shared_port && !opts.reuse_port {
        let probe = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        probe.local_addr()?
    } else {
        addr
    };
    let bound = reactor
        .listen(addr, listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let cluster = if opts.redis.is_empty() {
        None
    } else {
        // Acknowledge a MESSAGE only once it is stored in Redis.
        reactor.engine().confirm_messages(true);
        let mut cfg = LinkConfig::new(opts.redis.clone());
        cfg.ping_interval = Duration::from_secs(1);
        let now = reactor.now();
        let link = reactor
            .engine()
            .add_link(cfg, Box::new(Cluster::redis()), now)
            .map_err(|e| std::io::Error::other(format!("--redis: {e}")))?;
        reactor.engine().set_timer(
            Duration::from_secs(1),
            Some(Duration::from_secs(1)),
            CLUSTER_TICK,
        );
        info!("node {node} joins the cluster on redis {:?}", opts.redis);
        Some(Cluster::new(
            link,
            node.clone(),
            opts.max_held,
            opts.held_age,
        ))
    };
    let bus = hub.map(|hub| {
        let mut bus = hub.member(i);
        bus.attach(reactor.handle());
        bus.subscribe(ALL);
        bus.subscribe(LOGINS);
        bus
    });
    let chat = Chat {
        max_held: opts.max_held,
        held_age: opts.held_age,
        cluster,
        node,
        bus,
        ..Chat::default()
    };
    Ok((reactor, chat, bound))
}
