//! The chat server: sessions from liveline, users and held messages here.

use crate::proto::{valid_name, Push, Request};
use bytes::Bytes;
use hashbrown::HashMap;
use liveline::config::Config;
use liveline::engine::{ConnId, Engine, Event};
use liveline::frame::{Code, Reason};
use liveline::reactor::{ListenConfig, Reactor};
use log::{info, warn};
use std::collections::VecDeque;
use std::net::SocketAddr;
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
}

struct Held {
    at: Instant,
    payload: Bytes,
}

#[derive(Default)]
struct Chat {
    online: HashMap<String, ConnId>,
    names: HashMap<ConnId, String>,
    held: HashMap<String, VecDeque<Held>>,
    max_held: usize,
    held_age: Duration,
}

impl Chat {
    fn on_event(&mut self, engine: &mut Engine, event: Event, now: Instant) {
        match event {
            Event::SessionOpened { conn, identity, .. } => {
                let name = identity.as_str().to_string();
                info!("online: {name} ({conn})");
                self.online.insert(name.clone(), conn);
                self.names.insert(conn, name.clone());
                if let Some(queue) = self.held.remove(&name) {
                    let fresh: Vec<Held> = queue
                        .into_iter()
                        .filter(|h| now.duration_since(h.at) <= self.held_age)
                        .collect();
                    if !fresh.is_empty() {
                        info!("delivering {} held message(s) to {name}", fresh.len());
                    }
                    for h in fresh {
                        self.deliver(engine, &name, h.payload, now);
                    }
                }
            }
            Event::SessionClosed {
                conn,
                identity,
                reason,
            } => {
                let name = self.names.remove(&conn);
                match (name, identity) {
                    (Some(name), _) => {
                        if self.online.get(&name) == Some(&conn) {
                            self.online.remove(&name);
                        }
                        let how = match reason.code {
                            Code::REPLACED => "kicked",
                            Code::IDLE_TIMEOUT => "dropped",
                            _ => "offline",
                        };
                        info!("{how}: {name} ({conn}): {reason}");
                    }
                    (None, _) => info!("connection {conn} closed before login: {reason}"),
                }
            }
            Event::Message {
                conn,
                instance,
                id,
                payload,
            } => {
                let Some(from) = self.names.get(&conn).cloned() else {
                    return;
                };
                let text = std::str::from_utf8(&payload).unwrap_or("");
                let origin = format!("{instance:x}:{id}");
                match Request::parse(text) {
                    Some(Request::Broadcast(t)) => {
                        let push = message(&origin, &from, "all", t);
                        let others: Vec<String> = self
                            .online
                            .keys()
                            .filter(|u| **u != from)
                            .cloned()
                            .collect();
                        for user in others {
                            self.deliver(engine, &user, push.clone(), now);
                        }
                    }
                    Some(Request::Direct { to, text }) => {
                        let push = message(&origin, &from, "to", text);
                        if !valid_name(to) {
                            self.notice(engine, &from, &format!("no such user name: {to}"), now);
                        } else {
                            self.deliver(engine, to, push, now);
                        }
                    }
                    Some(Request::Echo(t)) => {
                        let push = message(&origin, &from, "echo", t);
                        self.deliver(engine, &from, push, now);
                    }
                    Some(Request::Users) => {
                        let mut users: Vec<&str> = self.online.keys().map(|s| s.as_str()).collect();
                        users.sort_unstable();
                        let push = Bytes::from(Push::Users(users).encode());
                        self.deliver(engine, &from, push, now);
                    }
                    None => warn!("{from}: unintelligible request {text:?}"),
                }
            }
            _ => {}
        }
    }

    /// Sends to `user` if online, holds it otherwise (bounded by count and age).
    fn deliver(&mut self, engine: &mut Engine, user: &str, payload: Bytes, now: Instant) {
        if let Some(&conn) = self.online.get(user) {
            if engine.send_message(conn, payload.clone()).is_ok() {
                return;
            }
        }
        let queue = self.held.entry(user.to_string()).or_default();
        while queue
            .front()
            .is_some_and(|h| now.duration_since(h.at) > self.held_age)
        {
            queue.pop_front();
        }
        if queue.len() >= self.max_held {
            queue.pop_front();
            warn!(
                "held messages for {user} over {}: dropped the oldest",
                self.max_held
            );
        }
        queue.push_back(Held { at: now, payload });
        info!("held a message for {user} (offline)");
    }

    fn notice(&mut self, engine: &mut Engine, user: &str, text: &str, now: Instant) {
        self.deliver(engine, user, Bytes::from(Push::Notice(text).encode()), now);
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
    let mut reactor = Reactor::new(opts.engine.clone(), seed())?;
    let token = opts.token.clone();
    reactor.engine().set_hello_hook(Box::new(move |hello| {
        if !valid_name(hello.identity.as_str()) {
            return Err(Reason::new(
                Code::INVALID_IDENTITY,
                "names: 1-32 of a-z A-Z 0-9 - _ .",
            ));
        }
        match &token {
            Some(t) if hello.token.as_ref() != t.as_bytes() => {
                Err(Reason::new(Code::AUTH_FAILED, "bad token"))
            }
            _ => Ok(()),
        }
    }));
    let addr = reactor.listen(
        opts.listen,
        ListenConfig {
            max_per_ip: opts.max_per_ip,
            ..ListenConfig::default()
        },
    )?;
    // Printed on stdout so that scripts (and the demo) know the server is up.
    println!("listening on {addr}");
    let handle = reactor.handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            info!("signal {sig}: shutting down gracefully");
            let _ = handle.shutdown();
        }
    });
    let mut chat = Chat {
        max_held: opts.max_held,
        held_age: opts.held_age,
        ..Chat::default()
    };
    let mut handler =
        |engine: &mut Engine, event: Event, now: Instant| chat.on_event(engine, event, now);
    reactor.run(&mut handler)?;
    info!("stopped");
    Ok(())
}

/// Reconnect jitter only needs to differ between processes.
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}
