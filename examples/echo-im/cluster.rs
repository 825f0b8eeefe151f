//! The chat across servers, through Redis (`server --redis ADDR`).
//!
//! Nodes never talk to each other: they meet in Redis, through one link each
//! (`liveline::redis`). Keys are tagged with the user (`{bob}:...`) so that a user's keys
//! and channel share a Redis Cluster slot; the presence keys share the `{presence}` tag.
//! Every script starts with `#!lua`, so Redis itself refuses one that touches keys of more
//! than one slot (in cluster mode), not only those of its declared keys.
//!
//! ```text
//!   {bob}:inbox          stream: the messages for bob not yet acknowledged by a device of
//!                        his. The source of truth: a message is acknowledged to its sender
//!                        once it is here, and deleted once bob's device acknowledged it.
//!   {bob}:bell           sharded channel, subscribed by the node(s) where bob is logged in:
//!                        "M <entry id> <payload>" for a new inbox entry,
//!                        "L <fence> <node>" for a new login of bob somewhere
//!   {bob}:seen:<from>:<instance>
//!                        sorted set: the MESSAGE ids of that sender instance stored for bob
//!                        (a resend is not stored twice); its newest 4,096, forgotten 10
//!                        minutes after the last store
//!   {bob}:fence          counter: every login of bob takes the next number; the highest wins
//!   {presence}:<node>    hash of the users logged in on <node>; expires unless refreshed
//!   {presence}:nodes     sorted set: node -> when its presence expires (ms)
//!   all                  sharded channel of every node: broadcasts
//! ```
//!
//! A message from alice to bob: one script stores it in bob's inbox and rings his bell
//! (atomically); the reply acknowledges alice's MESSAGE. The node where bob is logged in
//! hears the bell and sends the entry to bob; bob's ACK deletes it. A node that logs bob in
//! replays his inbox first. A node that dies takes nothing with it: what bob did not
//! acknowledge is still in his inbox, and what alice was not acknowledged she resends.

use crate::proto::Push;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use liveline::bus::Bus;
use liveline::engine::{App, ConnId, LinkId};
use liveline::frame::{Code, Reason, Text};
use liveline::redis::{Redis, RedisError, RedisEvent, Reply};
use log::{debug, info, warn};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Stores a message in an inbox unless stored already or the inbox is full, then rings
/// the bell. Entries older than the hold's age leave the inbox first (both bounds hold
/// whenever an inbox is written, not only when it is read), and are returned so that their
/// senders are told. A message is stored once per origin: its member in a seen set (one
/// set per sender instance and recipient, its newest `keep` members, forgotten `seen ttl`
/// after the last store). KEYS: inbox, seen set. ARGV: max entries, payload, seen ttl
/// (ms), bell, sender, hold age (ms), seen member, its score, keep. Returns {entry id or
/// DUP or FULL, nodes that heard the bell, entries removed for their age}.
pub const DELIVER: &str = "#!lua
if redis.call('ZADD', KEYS[2], 'NX', ARGV[8], ARGV[7]) == 0 then return {'DUP', 0, {}} end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[9])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1) end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[6])
local aged = {}
if cutoff > 0 then
  aged = redis.call('XRANGE', KEYS[1], '-', string.format('%d', cutoff))
  if #aged > 0 then redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', cutoff + 1)) end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  redis.call('ZREM', KEYS[2], ARGV[7])
  return {'FULL', 0, aged}
end
local id = redis.call('XADD', KEYS[1], '*', 's', ARGV[5], 'm', ARGV[2])
local heard = redis.call('SPUBLISH', ARGV[4], 'M ' .. id .. ' ' .. ARGV[2])
return {id, heard, aged}";

/// A login: the user's next fence number, announced on the bell. KEYS: fence. ARGV: bell,
/// node.
const LOGIN: &str = "#!lua
local f = redis.call('INCR', KEYS[1])
redis.call('SPUBLISH', ARGV[1], 'L ' .. f .. ' ' .. ARGV[2])
return f";

/// Keeps a node's presence alive for ARGV[2] ms more. KEYS: nodes, the node's presence.
/// ARGV: node, ttl.
const REFRESH: &str = "#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now";

/// The users of every node whose presence has not expired, as `<user>@<node>`. KEYS: nodes.
/// The nodes' presence keys are found in the set, not declared: they share its `{presence}`
/// tag, hence its slot, which is what Redis Cluster checks.
const USERS: &str = "#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, n in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, u in ipairs(redis.call('HKEYS', '{presence}:' .. n)) do out[#out + 1] = u .. '@' .. n end
end
return out";

/// How long a node's presence lasts without a refresh (it refreshes every second).
pub const PRESENCE_TTL: Duration = Duration::from_secs(5);
/// How long a seen set outlives its last store.
const SEEN_TTL_MS: &str = "600000";
/// MESSAGE ids a seen set keeps: the newest. A resent message was unacknowledged, and a
/// sender has at most `Config::max_unacked` (1,024 by default) of those, so fewer than that
/// were stored after it: a resend always finds its id.
const SEEN_KEEP: &str = "4096";

/// Where a store is remembered against resends: the seen set's name (after
/// `{<recipient>}:seen:`), the member and its score (older members are dropped first).
#[derive(Clone)]
struct Seen {
    set: String,
    member: String,
    score: u64,
}
/// Redis unreachable for longer than this is logged (once per episode).
const DOWN_LOG_AFTER: Duration = Duration::from_secs(5);

/// What a request in flight was for.
enum Pending {
    /// A message stored for `to`; `ack` names the sender's MESSAGE to confirm once stored.
    Store {
        to: String,
        payload: Bytes,
        from: String,
        ack: Option<(Text, u64, u64)>,
    },
    /// `user`'s inbox, read to replay it.
    Replay { user: String },
    /// `user`'s login fence.
    Fence { user: String },
    /// The cluster's users, for `asker`.
    Users { asker: String },
    /// A broadcast published; `ack` as for `Store`.
    Broadcast { from: String, ack: (Text, u64, u64) },
    /// A notice stored for `to` (a sender told that a message expired); resent like a
    /// store when Redis lost the script or the connection, and stored once per `seen`.
    Notice {
        to: String,
        payload: Bytes,
        seen: Seen,
    },
    /// The deliver script loaded: the reply is its SHA1, for EVALSHA.
    ScriptLoad,
    /// Nothing to do with the reply (errors are logged).
    Quiet(&'static str),
}

/// What is under way for a user logged in on this node. An idle user has none: who is
/// logged in here is the engine's to know (`App::session_of`), so cluster state costs an
/// idle connection nothing but its channel subscription.
#[derive(Default)]
struct Local {
    /// The login's fence is not known yet.
    fence_pending: bool,
    /// The highest fence another node announced while this login's was pending.
    rival: u64,
    /// Inbox entries on their way to the session; `None` while there are none.
    inflight: Option<Box<Inflight>>,
    /// The inbox is being read: bells are covered by that read.
    replaying: bool,
}

/// Inbox entries sent to a session and not acknowledged yet.
#[derive(Default)]
struct Inflight {
    /// By MESSAGE id.
    sent: HashMap<u64, Bytes>,
    /// Entry ids sent (so that a bell for one in flight is not sent twice).
    entries: HashSet<Bytes>,
}

impl Local {
    fn is_idle(&self) -> bool {
        !self.fence_pending && !self.replaying && self.inflight.is_none()
    }

    /// Forgets MESSAGE `id`; its entry id, if it was one of the inbox's.
    fn settle(&mut self, id: u64) -> Option<Bytes> {
        let inflight = self.inflight.as_mut()?;
        let entry = inflight.sent.remove(&id)?;
        inflight.entries.remove(&entry);
        if inflight.sent.is_empty() {
            self.inflight = None;
        }
        Some(entry)
    }
}

/// The part of a node that lives in Redis.
pub struct Cluster {
    link: LinkId,
    node: String,
    max_held: usize,
    held_age: Duration,
    /// The deliver script's SHA1 once Redis has it: stores then send EVALSHA, not the
    /// script's text (which Redis would hash again on every call). Forgotten on NOSCRIPT.
    deliver_sha: Option<Bytes>,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    /// Users of this node with something under way (see [`Local`]).
    locals: HashMap<Box<str>, Local>,
    /// Since when Redis is unreachable, and whether that was logged.
    down_since: Option<Instant>,
    down_logged: bool,
    /// Users told in this episode that messages wait for Redis.
    told_waiting: HashSet<String>,
}

/// What the chat must do about a message a user sent, as the cluster decided.
pub enum Outcome {
    /// Taken: the cluster confirms the MESSAGE once stored.
    Taken,
    /// Not taken: the caller delivers it on this node (Redis is down and the recipient is
    /// here) and confirms it.
    Local,
}

impl Cluster {
    pub fn new(link: LinkId, node: String, max_held: usize, held_age: Duration) -> Cluster {
        Cluster {
            link,
            node,
            max_held,
            held_age,
            deliver_sha: None,
            next_token: 1,
            pending: HashMap::new(),
            locals: HashMap::new(),
            down_since: Some(Instant::now()),
            down_logged: false,
            told_waiting: HashSet::new(),
        }
    }

    /// The link's settings and the Redis protocol for this node.
    pub fn redis() -> Redis {
        let mut redis = Redis::default();
        redis.subscribe(b"all");
        redis
    }

    fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// Drops `user`'s entry once nothing is under way for them.
    fn tidy(&mut self, user: &str) {
        if self.locals.get(user).is_some_and(Local::is_idle) {
            self.locals.remove(user);
        }
        if self.locals.is_empty() && self.locals.capacity() > 1024 {
            self.locals.shrink_to(64);
        }
    }

    fn request(&mut self, app: &mut App<'_>, pending: Pending, args: &[&[u8]]) -> bool {
        let token = self.next_token;
        self.next_token += 1;
        let sent = app.link(self.link, |r: &mut Redis| r.request(token, args));
        match sent {
            Ok(Ok(())) => {
                self.pending.insert(token, pending);
                true
            }
            Ok(Err(RedisError::Full)) | Err(_) => false,
        }
    }

    fn bus(&self, app: &mut App<'_>, f: impl FnOnce(&mut Redis)) {
        let _ = app.link(self.link, f);
    }

    // ------------------------------------------------------------ sessions

    /// `user` logged in here: subscribe to their bell, take a fence, show them present,
    /// and replay their inbox.
    pub fn on_login(&mut self, app: &mut App<'_>, user: &str) {
        let bell = bell(user);
        self.bus(app, |r| r.subscribe(bell.as_bytes()));
        self.locals.insert(
            Box::from(user),
            Local {
                fence_pending: true,
                ..Local::default()
            },
        );
        let fence = format!("{{{user}}}:fence");
        let node = self.node.clone();
        self.request(
            app,
            Pending::Fence {
                user: user.to_string(),
            },
            &[
                b"EVAL",
                LOGIN.as_bytes(),
                b"1",
                fence.as_bytes(),
                bell.as_bytes(),
                node.as_bytes(),
            ],
        );
        self.show_present(app, user);
        self.replay(app, user);
    }

    /// `user` has no session here any more.
    pub fn on_logout(&mut self, app: &mut App<'_>, user: &str) {
        self.locals.remove(user);
        let bell = bell(user);
        self.bus(app, |r| r.unsubscribe(bell.as_bytes()));
        let key = presence(&self.node);
        self.request(
            app,
            Pending::Quiet("presence"),
            &[b"HDEL", key.as_bytes(), user.as_bytes()],
        );
    }

    fn show_present(&mut self, app: &mut App<'_>, user: &str) {
        let key = presence(&self.node);
        self.request(
            app,
            Pending::Quiet("presence"),
            &[b"HSET", key.as_bytes(), user.as_bytes(), b"1"],
        );
    }

    /// Every second: keep this node's presence alive; log a long outage once.
    pub fn on_tick(&mut self, app: &mut App<'_>) {
        let ttl = PRESENCE_TTL.as_millis().to_string();
        if self.is_up() {
            let node = self.node.clone();
            let key = presence(&node);
            self.request(
                app,
                Pending::Quiet("refresh"),
                &[
                    b"EVAL",
                    REFRESH.as_bytes(),
                    b"2",
                    NODES.as_bytes(),
                    key.as_bytes(),
                    node.as_bytes(),
                    ttl.as_bytes(),
                ],
            );
        } else if let Some(since) = self.down_since {
            if !self.down_logged && since.elapsed() > DOWN_LOG_AFTER {
                self.down_logged = true;
                warn!(
                    "redis unreachable for {} s: messages for users of other nodes wait \
                     (unacknowledged, in their senders' clients); local delivery goes on",
                    since.elapsed().as_secs()
                );
            }
        }
    }

    /// Reads `user`'s inbox to send what waits there.
    fn replay(&mut self, app: &mut App<'_>, user: &str) {
        self.locals.entry(Box::from(user)).or_default().replaying = true;
        let inbox = inbox(user);
        let count = self.max_held.to_string();
        self.request(
            app,
            Pending::Replay {
                user: user.to_string(),
            },
            &[
                b"XRANGE",
                inbox.as_bytes(),
                b"-",
                b"+",
                b"COUNT",
                count.as_bytes(),
            ],
        );
    }

    /// A message this node sent to `user` was acknowledged: delete its inbox entry.
    /// Whether it was one of the cluster's.
    pub fn on_acked(&mut self, app: &mut App<'_>, user: &str, id: u64) -> bool {
        let Some(entry) = self.locals.get_mut(user).and_then(|l| l.settle(id)) else {
            return false;
        };
        self.tidy(user);
        let inbox = inbox(user);
        self.request(
            app,
            Pending::Quiet("XDEL"),
            &[b"XDEL", inbox.as_bytes(), &entry],
        );
        true
    }

    /// A message this node sent to `user` was not acknowledged (another device logged in,
    /// or the session is gone for good): it stays in the inbox for the next login.
    /// Whether it was one of the cluster's.
    pub fn on_failed(&mut self, user: &str, id: u64) -> bool {
        let settled = self
            .locals
            .get_mut(user)
            .and_then(|l| l.settle(id))
            .is_some();
        self.tidy(user);
        settled
    }

    // ------------------------------------------------------------ requests

    /// `from` sent `payload` (a chat push) for `to`. `ack` names the MESSAGE to confirm
    /// once it is stored.
    pub fn store(
        &mut self,
        app: &mut App<'_>,
        from: &str,
        to: &str,
        payload: Bytes,
        ack: Option<(Text, u64, u64)>,
    ) -> Outcome {
        if !self.is_up() && app.session_of(to).is_some() {
            return Outcome::Local;
        }
        let seen = seen_of(&payload, from);
        let pending = Pending::Store {
            to: to.to_string(),
            payload: payload.clone(),
            from: from.to_string(),
            ack: ack.clone(),
        };
        let taken = self.deliver(app, pending, to, &seen, &payload, from);
        if !taken {
            // More waits for Redis than the link holds: refused, and said so.
            self.confirm(app, ack.as_ref());
            let why = format!("not delivered to {to} (the cluster is unreachable)");
            crate::server::notice_to(app, from, &why);
            return Outcome::Taken;
        }
        if !self.is_up() && self.told_waiting.insert(from.to_string()) {
            let why = "the cluster is unreachable: messages for users of other servers \
                       wait until it is back";
            crate::server::notice_to(app, from, why);
        }
        Outcome::Taken
    }

    /// A broadcast from `from`: published to every node (not stored: it is for the users
    /// online now). Returns `false` if Redis is down (the caller sends it on this node).
    pub fn broadcast(
        &mut self,
        app: &mut App<'_>,
        from: &str,
        payload: &Bytes,
        ack: (Text, u64, u64),
    ) -> bool {
        if !self.is_up() {
            return false;
        }
        let mut body = Vec::with_capacity(from.len() + 1 + payload.len());
        body.extend_from_slice(from.as_bytes());
        body.push(b' ');
        body.extend_from_slice(payload);
        let pending = Pending::Broadcast {
            from: from.to_string(),
            ack,
        };
        self.request(app, pending, &[b"SPUBLISH", b"all", &body])
    }

    /// `asker` wants the cluster's users. Returns `false` if Redis is down (the caller
    /// answers with this node's).
    pub fn users(&mut self, app: &mut App<'_>, asker: &str) -> bool {
        if !self.is_up() {
            return false;
        }
        let pending = Pending::Users {
            asker: asker.to_string(),
        };
        self.request(
            app,
            pending,
            &[b"EVAL", USERS.as_bytes(), b"1", NODES.as_bytes()],
        )
    }

    fn confirm(&mut self, app: &mut App<'_>, ack: Option<&(Text, u64, u64)>) {
        if let Some((identity, instance, id)) = ack {
            if let Err(e) = app.ack_message(identity.as_str(), *instance, *id) {
                debug!("{identity}: message {id} not confirmed: {e}");
            }
        }
    }

    // ------------------------------------------------------------ from Redis

    /// Takes what the Redis link has for us.
    pub fn on_readable(&mut self, app: &mut App<'_>, chat: &mut dyn Here) {
        loop {
            let event = app.link(self.link, |r: &mut Redis| r.poll_event());
            let Ok(Some(event)) = event else { return };
            self.on_redis(app, chat, event);
        }
    }

    fn on_redis(&mut self, app: &mut App<'_>, chat: &mut dyn Here, event: RedisEvent) {
        match event {
            RedisEvent::Up { server } => {
                match self.down_since.take() {
                    Some(since) if self.down_logged => {
                        info!(
                            "redis {server} is back after {} s",
                            since.elapsed().as_secs()
                        )
                    }
                    _ => info!("cluster: connected to redis {server} as node {}", self.node),
                }
                self.down_logged = false;
                self.told_waiting.clear();
                self.load_deliver(app);
                // Redis may have restarted without our presence: show it again, and send
                // what waits for our users (what rang while we were away included).
                let users: Vec<String> = app
                    .sessions()
                    .map(|(u, _)| u.as_str().to_string())
                    .collect();
                for user in users {
                    self.show_present(app, &user);
                    self.replay(app, &user);
                }
                self.on_tick(app);
            }
            RedisEvent::Down { reason } => {
                warn!("cluster: redis connection lost: {reason}");
                self.down_since = Some(Instant::now());
            }
            RedisEvent::Failed { token, reason } => {
                let Some(pending) = self.pending.remove(&token) else {
                    return;
                };
                debug!("redis request lost with the connection ({reason}): retrying");
                match pending {
                    // Stored at most once (the seen key): safe to send again.
                    Pending::Store {
                        to,
                        payload,
                        from,
                        ack,
                    } => {
                        self.store(app, &from, &to, payload, ack);
                    }
                    // Replays run again when Redis is back (see Up). A login whose fence was
                    // lost is not announced; any later login elsewhere still replaces it.
                    Pending::Replay { user } => {
                        if let Some(l) = self.locals.get_mut(user.as_str()) {
                            l.replaying = false;
                        }
                        self.tidy(&user);
                    }
                    Pending::Fence { user } => {
                        if let Some(l) = self.locals.get_mut(user.as_str()) {
                            l.fence_pending = false;
                        }
                        self.tidy(&user);
                    }
                    Pending::Users { asker } => chat.users_here(app, &asker),
                    Pending::Broadcast { from, ack } => {
                        let why = "broadcast not sent (the cluster is unreachable)";
                        crate::server::notice_to(app, &from, why);
                        self.confirm(app, Some(&ack));
                    }
                    // Stored at most once (its seen member): safe to send again.
                    Pending::Notice { to, payload, seen } => {
                        self.store_notice(app, &to, payload, seen);
                    }
                    Pending::ScriptLoad | Pending::Quiet(_) => {}
                }
            }
            RedisEvent::Reply { token, reply } => {
                if let Some(pending) = self.pending.remove(&token) {
                    self.on_reply(app, chat, pending, reply);
                }
                // After a burst (a storm of logins), give the table's memory back.
                let (len, cap) = (self.pending.len(), self.pending.capacity());
                if cap > 1024 && len * 8 < cap {
                    self.pending.shrink_to(len.max(64));
                }
            }
            RedisEvent::Message { channel, payload } => self.on_bell(app, chat, &channel, payload),
        }
    }

    fn on_reply(&mut self, app: &mut App<'_>, chat: &mut dyn Here, pending: Pending, reply: Reply) {
        if let Reply::Error(e) = &reply {
            warn!("redis refused a request: {}", String::from_utf8_lossy(e));
        }
        match pending {
            Pending::Notice { to, payload, seen } if is_noscript(&reply) => {
                self.load_deliver(app);
                self.store_notice(app, &to, payload, seen);
            }
            Pending::Notice { to, .. } => {
                let items = reply.as_array().unwrap_or_default();
                self.on_aged(app, &to, items.get(2));
            }
            Pending::ScriptLoad => {
                self.deliver_sha = reply.as_bytes().cloned();
            }
            Pending::Store {
                to,
                from,
                ack,
                payload,
            } if is_noscript(&reply) => {
                // Redis lost the script (a restart, SCRIPT FLUSH): the retry sends its text.
                self.load_deliver(app);
                self.store(app, &from, &to, payload, ack);
            }
            Pending::Store { to, from, ack, .. } => {
                let items = reply.as_array().unwrap_or_default();
                self.on_aged(app, &to, items.get(2));
                let what = items.first().and_then(Reply::as_bytes).map(|b| &b[..]);
                let heard = items.get(1).and_then(Reply::as_int).unwrap_or(0);
                match what {
                    Some(b"FULL") => {
                        let why = format!("not delivered to {to} (too many are waiting for them)");
                        crate::server::notice_to(app, &from, &why);
                    }
                    Some(b"DUP") => {}
                    Some(_) if heard == 0 && from != to => {
                        let why = format!("held for {to} (offline)");
                        crate::server::notice_to(app, &from, &why);
                    }
                    Some(_) => {}
                    None => {
                        let why = format!("not delivered to {to} (the cluster refused it)");
                        crate::server::notice_to(app, &from, &why);
                    }
                }
                self.confirm(app, ack.as_ref());
            }
            Pending::Replay { user } => self.on_inbox(app, &user, &reply),
            Pending::Fence { user } => {
                let Some(l) = self.locals.get_mut(user.as_str()) else {
                    return;
                };
                let fence = reply.as_int().unwrap_or(0) as u64;
                l.fence_pending = false;
                // A rival announced before this reply with a higher fence logged in later.
                // Announcements after it come from later logins (Redis answers and pushes
                // on one connection in the order it ran them): they kick at once.
                if l.rival > fence {
                    kick(app, &user, "logged in on another server");
                }
                self.tidy(&user);
            }
            Pending::Users { asker } => {
                let mut users: Vec<String> = reply
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Reply::as_bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                users.sort_unstable();
                users.dedup();
                chat.send_users(app, &asker, users);
            }
            Pending::Broadcast { from, ack } => {
                let heard = reply.as_int().unwrap_or(0);
                // Every node hears it, this one included: only users elsewhere make it
                // heard by more than one node.
                if heard <= 1 && app.sessions().all(|(u, _)| u.as_str() == from) {
                    crate::server::notice_to(app, &from, "nobody else is online");
                }
                self.confirm(app, Some(&ack));
            }
            Pending::Quiet(what) => {
                if let Reply::Error(e) = reply {
                    debug!("{what}: {}", String::from_utf8_lossy(&e));
                }
            }
        }
    }

    /// `user`'s inbox as read: send each entry (oldest first) that is not on its way yet;
    /// entries past the hold's age are dropped and their senders told.
    fn on_inbox(&mut self, app: &mut App<'_>, user: &str, reply: &Reply) {
        if let Some(l) = self.locals.get_mut(user) {
            l.replaying = false;
        }
        if app.session_of(user).is_none() {
            self.tidy(user);
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut sent = 0;
        for entry in reply.as_array().unwrap_or_default() {
            let Some((id, payload, sender)) = inbox_entry(entry) else {
                continue;
            };
            let stored_ms = entry_ms(&id);
            if now_ms.saturating_sub(stored_ms) > self.held_age.as_millis() as u64 {
                self.drop_aged(app, user, id, &payload, sender);
                continue;
            }
            if self.send_entry(app, user, id, payload) {
                sent += 1;
            }
        }
        self.tidy(user);
        if sent > 0 {
            info!("delivering {sent} message(s) from {user}'s inbox");
        }
    }

    fn drop_aged(
        &mut self,
        app: &mut App<'_>,
        user: &str,
        id: Bytes,
        payload: &Bytes,
        sender: Option<Bytes>,
    ) {
        let inbox = inbox(user);
        self.request(
            app,
            Pending::Quiet("XDEL"),
            &[b"XDEL", inbox.as_bytes(), &id],
        );
        self.tell_aged(app, user, &id, payload, sender);
    }

    /// Entries the DELIVER script removed from `user`'s inbox for their age: their senders
    /// are told.
    fn on_aged(&mut self, app: &mut App<'_>, user: &str, aged: Option<&Reply>) {
        for entry in aged.and_then(Reply::as_array).unwrap_or_default() {
            if let Some((id, payload, sender)) = inbox_entry(entry) {
                self.tell_aged(app, user, &id, &payload, sender);
            }
        }
    }

    /// Tells the sender of inbox entry `id` that it was not delivered to `user`.
    fn tell_aged(
        &mut self,
        app: &mut App<'_>,
        user: &str,
        id: &Bytes,
        payload: &Bytes,
        sender: Option<Bytes>,
    ) {
        let text = std::str::from_utf8(payload).unwrap_or("");
        if let (Some(sender), Some(Push::Message { text, .. })) = (sender, Push::parse(text)) {
            let sender = String::from_utf8_lossy(&sender).into_owned();
            if sender != user {
                let why = format!("not delivered to {user} (it waited too long): {text}");
                let notice = Bytes::from(Push::Notice(&why).encode());
                let seen = Seen {
                    set: "aged".to_string(),
                    member: format!("{user}:{}", String::from_utf8_lossy(id)),
                    score: entry_ms(id),
                };
                self.store_notice(app, &sender, notice, seen);
            }
        }
    }

    /// A notice for `to`, stored like a message, once per `seen`. If the link holds too
    /// much already, it is dropped with a warning: the sender was the one to tell.
    fn store_notice(&mut self, app: &mut App<'_>, to: &str, payload: Bytes, seen: Seen) {
        let pending = Pending::Notice {
            to: to.to_string(),
            payload: payload.clone(),
            seen: seen.clone(),
        };
        if !self.deliver(app, pending, to, &seen, &payload, "") {
            warn!("a notice for {to} was not stored: the link to redis is full");
        }
    }

    /// Runs the DELIVER script: `payload` from `from` into `to`'s inbox, once per `seen`.
    fn deliver(
        &mut self,
        app: &mut App<'_>,
        pending: Pending,
        to: &str,
        seen: &Seen,
        payload: &[u8],
        from: &str,
    ) -> bool {
        let set = format!("{{{to}}}:seen:{}", seen.set);
        let score = seen.score.to_string();
        let (inbox, bell) = (inbox(to), bell(to));
        let max = self.max_held.to_string();
        let age = self.held_age.as_millis().to_string();
        // A clone of `Bytes`: a count, not a copy.
        let sha = self.deliver_sha.clone();
        let (verb, script): (&[u8], &[u8]) = match &sha {
            Some(sha) => (b"EVALSHA", sha),
            None => (b"EVAL", DELIVER.as_bytes()),
        };
        let args: [&[u8]; 14] = [
            verb,
            script,
            b"2",
            inbox.as_bytes(),
            set.as_bytes(),
            max.as_bytes(),
            payload,
            SEEN_TTL_MS.as_bytes(),
            bell.as_bytes(),
            from.as_bytes(),
            age.as_bytes(),
            seen.member.as_bytes(),
            score.as_bytes(),
            SEEN_KEEP.as_bytes(),
        ];
        self.request(app, pending, &args)
    }

    /// Asks Redis to keep the deliver script; its SHA1 comes back in the reply. Until then,
    /// and after a NOSCRIPT, stores send the script's text.
    fn load_deliver(&mut self, app: &mut App<'_>) {
        self.deliver_sha = None;
        let args: [&[u8]; 3] = [b"SCRIPT", b"LOAD", DELIVER.as_bytes()];
        self.request(app, Pending::ScriptLoad, &args);
    }

    /// Sends inbox entry `id` to `user`'s session here, unless on its way already.
    fn send_entry(&mut self, app: &mut App<'_>, user: &str, id: Bytes, payload: Bytes) -> bool {
        if app.session_of(user).is_none() {
            return false;
        }
        let l = self.locals.entry(Box::from(user)).or_default();
        if l.inflight.as_ref().is_some_and(|f| f.entries.contains(&id)) {
            return false;
        }
        match app.send_to(user, payload) {
            Ok(mid) => {
                let inflight = l.inflight.get_or_insert_with(Box::default);
                inflight.sent.insert(mid, id.clone());
                inflight.entries.insert(id);
                true
            }
            Err(e) => {
                // The window is full: it stays in the inbox, for the next login.
                debug!("{user}: inbox entry waits: {e}");
                false
            }
        }
    }

    /// A message on a channel we subscribed to.
    fn on_bell(&mut self, app: &mut App<'_>, chat: &mut dyn Here, channel: &[u8], payload: Bytes) {
        if channel == b"all" {
            // "<from> <push>": to every user here but the sender.
            let Some(space) = payload.iter().position(|&b| b == b' ') else {
                return;
            };
            let from = String::from_utf8_lossy(&payload[..space]).into_owned();
            chat.broadcast_here(app, &from, payload.slice(space + 1..));
            return;
        }
        let Some(user) = user_of_bell(channel) else {
            return;
        };
        let user = user.to_string();
        match payload.first() {
            Some(b'M') => {
                // "M <entry id> <payload>"
                let rest = payload.slice(2.min(payload.len())..);
                let Some(space) = rest.iter().position(|&b| b == b' ') else {
                    return;
                };
                let (id, body) = (rest.slice(..space), rest.slice(space + 1..));
                // While the inbox is read, that read covers it.
                if !self.locals.get(user.as_str()).is_some_and(|l| l.replaying) {
                    self.send_entry(app, &user, id, body);
                }
            }
            Some(b'L') => {
                // "L <fence> <node>"
                let text = String::from_utf8_lossy(&payload).into_owned();
                let mut parts = text.split(' ').skip(1);
                let fence: u64 = parts.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                let node = parts.next().unwrap_or("");
                if node == self.node {
                    return;
                }
                match self.locals.get_mut(user.as_str()) {
                    // Our login's fence is on its way: compare when it comes.
                    Some(l) if l.fence_pending => l.rival = l.rival.max(fence),
                    // Our fence came first: this login is later.
                    _ => kick(app, &user, "logged in on another server"),
                }
            }
            _ => {}
        }
    }
}

/// What the cluster needs from the chat on this node.
pub trait Here {
    /// Sends a broadcast heard from the cluster to the users here, but its sender.
    fn broadcast_here(&mut self, app: &mut App<'_>, from: &str, push: Bytes);
    /// Answers `asker` with this node's users (Redis is unreachable).
    fn users_here(&mut self, app: &mut App<'_>, asker: &str);
    /// Answers `asker` with the users listed.
    fn send_users(&mut self, app: &mut App<'_>, asker: &str, users: Vec<String>);
}

/// Closes `user`'s session here: a newer login elsewhere replaced it.
fn kick(app: &mut App<'_>, user: &str, why: &str) {
    if let Some(conn) = app.session_of(user) {
        info!("kicked: {user}: {why}");
        close(app, conn, why);
    }
}

fn close(app: &mut App<'_>, conn: ConnId, why: &str) {
    let reason = Reason {
        code: Code::REPLACED,
        text: Text::from(why.to_string()),
    };
    app.close(conn, reason);
}

/// The sorted set of live nodes.
const NODES: &str = "{presence}:nodes";

/// The hash of the users logged in on `node`.
pub fn presence(node: &str) -> String {
    format!("{{presence}}:{node}")
}

fn inbox(user: &str) -> String {
    format!("{{{user}}}:inbox")
}

fn bell(user: &str) -> String {
    format!("{{{user}}}:bell")
}

/// The user of a bell channel `{user}:bell`.
fn user_of_bell(channel: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(channel).ok()?;
    s.strip_prefix('{')?.strip_suffix("}:bell")
}

/// The origin of a chat message push (`M <origin> ...`), else the sender and a hash of the
/// payload (a notice has none).
/// Where a chat push from `from` is remembered: a MESSAGE's origin `<instance>:<id>` gives
/// the set `<from>:<instance>` and the member `<id>` (scored by the id, which grows).
/// Anything else is stored as if new each time: a member no resend can repeat.
fn seen_of(payload: &[u8], from: &str) -> Seen {
    let text = std::str::from_utf8(payload).unwrap_or("");
    if let Some(Push::Message { origin, .. }) = Push::parse(text) {
        if let Some((instance, id)) = origin.split_once(':') {
            if let Ok(score) = id.parse::<u64>() {
                return Seen {
                    set: format!("{from}:{instance}"),
                    member: id.to_string(),
                    score,
                };
            }
        }
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(payload);
    Seen {
        set: from.to_string(),
        member: format!("n{:x}", h.finish()),
        score: 0,
    }
}

/// Redis no longer has the script an EVALSHA named.
fn is_noscript(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(b"NOSCRIPT"))
}

/// An inbox entry as XRANGE returns it: its id, message and sender.
fn inbox_entry(entry: &Reply) -> Option<(Bytes, Bytes, Option<Bytes>)> {
    let [id, fields] = entry.as_array().map(|a| [a.first(), a.get(1)])?;
    let id = id.and_then(Reply::as_bytes)?.clone();
    let fields = fields?.as_array().unwrap_or_default();
    let field = |name: &[u8]| {
        fields
            .chunks(2)
            .find(|kv| kv[0].as_bytes().is_some_and(|k| &k[..] == name))
            .and_then(|kv| kv.get(1)?.as_bytes().cloned())
    };
    Some((id, field(b"m")?, field(b"s")))
}

/// The milliseconds of a stream entry id (`<ms>-<seq>`).
fn entry_ms(id: &[u8]) -> u64 {
    let ms = id.split(|&b| b == b'-').next().unwrap_or_default();
    std::str::from_utf8(ms)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
