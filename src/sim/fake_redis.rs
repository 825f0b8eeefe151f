//! A fake Redis for the simulator: an in-memory, sans-IO server for the part of Redis that
//! this crate's [`Redis`](crate::redis::Redis) link and its applications use, so that
//! partitions, kills and restarts between engines and their broker run on the virtual
//! clock, deterministically.
//!
//! It answers as Redis 7.0 does over RESP3, error replies included:
//!
//! - `HELLO [3]`, `PING [message]`;
//! - `SET key value` (no options), `GET`, `DEL`, `INCR`;
//! - `SSUBSCRIBE`, `SUNSUBSCRIBE`, `SPUBLISH`, with their pushes;
//! - `XADD key <*|ms|ms-*|ms-seq> field value ...` (no trimming options; `*` takes the
//!   milliseconds of virtual time since the epoch given to [`FakeRedis::new`]),
//!   `XRANGE key start end [COUNT n]` (no exclusive bounds), `XDEL`, `XLEN`;
//! - `HSET`, `HDEL`, `HKEYS` (fields in insertion order, as Redis keeps small hashes).
//!
//! Anything else is an unknown command. It speaks RESP3 only: it answers in RESP3 before
//! `HELLO 3` too, and refuses `HELLO 2`, where Redis would speak RESP2. Requests are RESP
//! arrays of bulk strings, read with [`crate::resp`], or inline lines split on whitespace
//! (without Redis's quoting). Bytes that are neither get an error reply and the connection
//! is closed after it, as Redis does (the wording of that error may differ).
//!
//! Data survives [`Service::handle_killed`] (a server with `appendfsync always`);
//! connections and subscriptions do not. `tests/redis_fake_contract.rs` runs one script
//! against a real `redis-server` and this fake, and fails where they differ.

use super::{Service, ServiceConn, ServiceOutput};
use crate::resp::{self, Kind, Limits};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A stream entry id: milliseconds, sequence.
type Id = (u64, u64);

/// Bounds on requests: Redis's own are larger, but a fake needs none of that room.
const LIMITS: Limits = Limits {
    max_bulk: 64 << 20,
    max_elements: 1 << 20,
    // A request is a flat array: anything nested is a protocol error.
    max_depth: 1,
};

/// A connection holding more than this of one unfinished request is closed, as Redis
/// closes one past its query buffer limit.
const QUERY_MAX: usize = 128 << 20;

/// Longest inline request line, as in Redis.
const INLINE_MAX: usize = 64 << 10;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const BAD_ID: &str = "ERR Invalid stream ID specified as stream command argument";
const SMALLER: &str =
    "ERR The ID specified in XADD is equal or smaller than the target stream top item";
const EXHAUSTED: &str =
    "ERR The stream has exhausted the last possible ID, unable to add more items";

enum Entry {
    Str(Vec<u8>),
    /// Field, value: in insertion order, as Redis answers for small hashes.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream {
        entries: BTreeMap<Id, Vec<Bytes>>,
        /// The highest id ever added: deleting entries does not lower it.
        last: Id,
    },
}

struct Client {
    id: i64,
    inbuf: BytesMut,
    out: BytesMut,
    /// Sharded channels, ordered so that `SUNSUBSCRIBE` without arguments is reproducible.
    channels: BTreeSet<Vec<u8>>,
    /// A protocol error was answered: nothing more is read, and it closes once flushed.
    closing: bool,
}

/// Encodes RESP3 replies.
struct Out<'a>(&'a mut BytesMut);

impl Out<'_> {
    fn line(&mut self, marker: u8, text: &[u8]) {
        self.0.extend_from_slice(&[marker]);
        // A CR or LF inside would end the line early: Redis makes them spaces too.
        let clean = |&b: &u8| if b == b'\r' || b == b'\n' { b' ' } else { b };
        self.0.extend(text.iter().map(clean));
        self.0.extend_from_slice(b"\r\n");
    }
    fn error(&mut self, e: impl AsRef<[u8]>) {
        self.line(b'-', e.as_ref());
    }
    fn int(&mut self, n: impl Into<i64>) {
        self.line(b':', n.into().to_string().as_bytes());
    }
    /// The header of an aggregate of `n` items (`*`, `%`, `>`) or of an `n`-byte string.
    fn head(&mut self, marker: u8, n: usize) {
        self.line(marker, n.to_string().as_bytes());
    }
    fn bulk(&mut self, b: &[u8]) {
        self.head(b'$', b.len());
        self.0.extend_from_slice(b);
        self.0.extend_from_slice(b"\r\n");
    }
    fn count(&mut self, n: usize) {
        self.int(i64::try_from(n).unwrap_or(i64::MAX));
    }
    /// A `(s)subscribe`-style push: its kind, a channel (or null) and a count.
    fn sub_push(&mut self, kind: &[u8], channel: Option<&[u8]>, count: usize) {
        self.head(b'>', 3);
        self.bulk(kind);
        match channel {
            Some(ch) => self.bulk(ch),
            None => self.0.extend_from_slice(b"_\r\n"),
        }
        self.count(count);
    }
}

/// The fake Redis server; place it with [`Sim::add_fake_redis`](super::Sim::add_fake_redis)
/// or drive it directly through [`Service`].
pub struct FakeRedis {
    epoch: Instant,
    keys: BTreeMap<Vec<u8>, Entry>,
    clients: BTreeMap<ServiceConn, Client>,
    /// Subscribers of each sharded channel.
    channels: BTreeMap<Vec<u8>, BTreeSet<ServiceConn>>,
    next_id: i64,
    commands: u64,
}

impl FakeRedis {
    /// An empty server whose `XADD *` ids count milliseconds from `epoch`.
    pub fn new(epoch: Instant) -> FakeRedis {
        FakeRedis {
            epoch,
            keys: BTreeMap::new(),
            clients: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_id: 1,
            commands: 0,
        }
    }

    /// The string stored at `key`, if it holds one.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.keys.get(key) {
            Some(Entry::Str(v)) => Some(v),
            _ => None,
        }
    }

    /// The number of entries of the stream at `key` (0 if there is none).
    pub fn xlen(&self, key: &[u8]) -> usize {
        match self.keys.get(key) {
            Some(Entry::Stream { entries, .. }) => entries.len(),
            _ => 0,
        }
    }

    /// The number of connections subscribed to the sharded `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, BTreeSet::len)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Commands run so far (not counting unknown ones and those refused for their number
    /// of arguments): each request a client repeats after a reconnect counts again.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    fn forget(&mut self, conn: ServiceConn) {
        if let Some(c) = self.clients.remove(&conn) {
            for ch in c.channels {
                self.unsubscribe(&ch, conn);
            }
        }
    }

    fn unsubscribe(&mut self, channel: &[u8], conn: ServiceConn) {
        if let Some(subs) = self.channels.get_mut(channel) {
            subs.remove(&conn);
            if subs.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Runs one request from `conn` and queues its reply (and pushes to subscribers).
    fn run(&mut self, conn: ServiceConn, args: &[Bytes], now: Instant) {
        let mut buf = BytesMut::new();
        let mut out = Out(&mut buf);
        let name = args[0].to_ascii_uppercase();
        match arity(&name) {
            None => out.error(unknown(args)),
            Some(a)
                if args.len() < a.unsigned_abs() as usize
                    || (a > 0 && args.len() != a as usize) =>
            {
                out.error(wrong_args(&name));
            }
            Some(_) => {
                self.commands += 1;
                self.command(conn, &name, args, &mut out, now);
            }
        }
        if let Some(c) = self.clients.get_mut(&conn) {
            c.out.extend_from_slice(&buf);
        }
    }

    fn command(
        &mut self,
        conn: ServiceConn,
        name: &[u8],
        args: &[Bytes],
        out: &mut Out,
        now: Instant,
    ) {
        let key: &[u8] = args.get(1).map_or(&[], |k| k);
        match name {
            b"HELLO" => hello(self.clients.get(&conn).map_or(0, |c| c.id), args, out),
            b"PING" => match args.get(1) {
                Some(m) => out.bulk(m),
                None => out.line(b'+', b"PONG"),
            },
            b"SET" if args.len() > 3 => out.error("ERR syntax error"),
            b"SET" => {
                self.keys.insert(key.to_vec(), Entry::Str(args[2].to_vec()));
                out.line(b'+', b"OK");
            }
            b"GET" => match self.keys.get(key) {
                None => out.0.extend_from_slice(b"_\r\n"),
                Some(Entry::Str(v)) => out.bulk(v),
                Some(_) => out.error(WRONGTYPE),
            },
            b"DEL" => {
                let gone = args[1..]
                    .iter()
                    .filter(|k| self.keys.remove(&k[..]).is_some());
                out.count(gone.count());
            }
            b"INCR" => {
                let n = match self.keys.get(key) {
                    None => Ok(0),
                    Some(Entry::Str(v)) => int_of(v).ok_or(NOT_INT),
                    Some(_) => Err(WRONGTYPE),
                };
                let overflow = "ERR increment or decrement would overflow";
                match n.and_then(|n| n.checked_add(1).ok_or(overflow)) {
                    Ok(n) => {
                        let text = n.to_string().into_bytes();
                        self.keys.insert(key.to_vec(), Entry::Str(text));
                        out.int(n);
                    }
                    Err(e) => out.error(e),
                }
            }
            b"SSUBSCRIBE" | b"SUNSUBSCRIBE" => self.subscription(conn, name, args, out),
            b"SPUBLISH" => {
                let subs = self.channels.get(key).cloned().unwrap_or_default();
                for sub in &subs {
                    if let Some(c) = self.clients.get_mut(sub) {
                        let mut push = Out(&mut c.out);
                        push.head(b'>', 3);
                        push.bulk(b"smessage");
                        push.bulk(key);
                        push.bulk(&args[2]);
                    }
                }
                out.count(subs.len());
            }
            b"XADD" => match self.xadd(args, now) {
                Ok(id) => out.bulk(id_text(id).as_bytes()),
                Err(e) => out.error(e),
            },
            b"XRANGE" => self.xrange(args, out),
            // Redis looks the key up before it reads the ids.
            b"XDEL" => match self.keys.get_mut(key) {
                None => out.int(0),
                Some(Entry::Stream { entries, .. }) => {
                    let ids: Option<BTreeSet<Id>> =
                        args[2..].iter().map(|a| parse_id(a, 0)).collect();
                    match ids {
                        Some(ids) => {
                            out.count(ids.iter().filter(|id| entries.remove(id).is_some()).count())
                        }
                        None => out.error(BAD_ID),
                    }
                }
                Some(_) => out.error(WRONGTYPE),
            },
            b"XLEN" => match self.keys.get(key) {
                None => out.int(0),
                Some(Entry::Stream { entries, .. }) => out.count(entries.len()),
                Some(_) => out.error(WRONGTYPE),
            },
            b"HSET" if args.len() % 2 == 1 => out.error(wrong_args(name)),
            b"HSET" => {
                let entry = self
                    .keys
                    .entry(key.to_vec())
                    .or_insert(Entry::Hash(Vec::new()));
                let Entry::Hash(h) = entry else {
                    return out.error(WRONGTYPE);
                };
                let mut added = 0;
                for pair in args[2..].chunks_exact(2) {
                    match h.iter_mut().find(|(f, _)| f[..] == pair[0][..]) {
                        Some((_, v)) => *v = pair[1].to_vec(),
                        None => {
                            h.push((pair[0].to_vec(), pair[1].to_vec()));
                            added += 1;
                        }
                    }
                }
                out.int(added);
            }
            b"HDEL" => match self.keys.get_mut(key) {
                None => out.int(0),
                Some(Entry::Hash(h)) => {
                    let before = h.len();
                    h.retain(|(f, _)| !args[2..].iter().any(|a| a[..] == f[..]));
                    out.count(before - h.len());
                    // Redis deletes a hash with its last field.
                    if h.is_empty() {
                        self.keys.remove(key);
                    }
                }
                Some(_) => out.error(WRONGTYPE),
            },
            b"HKEYS" => match self.keys.get(key) {
                None => out.head(b'*', 0),
                Some(Entry::Hash(h)) => {
                    out.head(b'*', h.len());
                    h.iter().for_each(|(f, _)| out.bulk(f));
                }
                Some(_) => out.error(WRONGTYPE),
            },
            // `arity` knows no other names.
            _ => out.error(unknown(args)),
        }
    }

    /// `SSUBSCRIBE` and `SUNSUBSCRIBE`: one push per channel, with the connection's count
    /// of sharded subscriptions after it.
    fn subscription(&mut self, conn: ServiceConn, name: &[u8], args: &[Bytes], out: &mut Out) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let subscribe = name == b"SSUBSCRIBE";
        let chosen: Vec<Vec<u8>> = match args.get(1..) {
            Some(named) if !named.is_empty() => named.iter().map(|c| c.to_vec()).collect(),
            _ => c.channels.iter().cloned().collect(),
        };
        if chosen.is_empty() {
            out.sub_push(b"sunsubscribe", None, 0);
        }
        let kind: &[u8] = if subscribe {
            b"ssubscribe"
        } else {
            b"sunsubscribe"
        };
        for ch in chosen {
            let Some(c) = self.clients.get_mut(&conn) else {
                return;
            };
            if subscribe {
                c.channels.insert(ch.clone());
            } else {
                c.channels.remove(&ch);
            }
            let count = c.channels.len();
            if subscribe {
                self.channels.entry(ch.clone()).or_default().insert(conn);
            } else {
                self.unsubscribe(&ch, conn);
            }
            out.sub_push(kind, Some(&ch), count);
        }
    }

    fn xadd(&mut self, args: &[Bytes], now: Instant) -> Result<Id, &'static str> {
        // Checked in Redis's order: the id's syntax, the field-value pairs, then the key.
        // `None` stands for a part to generate.
        let (ms, seq) = match &args[2][..] {
            b"*" => (None, None),
            spec if spec.ends_with(b"-*") => {
                (Some(num(&spec[..spec.len() - 2]).ok_or(BAD_ID)?), None)
            }
            spec => parse_id(spec, 0)
                .map(|(ms, seq)| (Some(ms), Some(seq)))
                .ok_or(BAD_ID)?,
        };
        if args.len() % 2 == 0 {
            return Err("ERR wrong number of arguments for 'xadd' command");
        }
        if (ms, seq) == (Some(0), Some(0)) {
            return Err("ERR The ID specified in XADD must be greater than 0-0");
        }
        let clock = now.saturating_duration_since(self.epoch).as_millis();
        let clock = u64::try_from(clock).unwrap_or(u64::MAX);
        let entry = self.keys.entry(args[1].to_vec()).or_insert(Entry::Stream {
            entries: BTreeMap::new(),
            last: (0, 0),
        });
        let Entry::Stream { entries, last } = entry else {
            return Err(WRONGTYPE);
        };
        let id = match (ms, seq) {
            // The clock, or the next id after the last if the clock is not past it.
            (None, _) if clock > last.0 => (clock, 0),
            (None, _) => match last.1.checked_add(1) {
                Some(s) => (last.0, s),
                None => (last.0.checked_add(1).ok_or(EXHAUSTED)?, 0),
            },
            (Some(ms), None) if ms > last.0 => (ms, 0),
            (Some(ms), None) if ms == last.0 => (ms, last.1.checked_add(1).ok_or(SMALLER)?),
            (Some(ms), Some(seq)) if (ms, seq) > *last => (ms, seq),
            _ => return Err(SMALLER),
        };
        entries.insert(id, args[3..].to_vec());
        *last = id;
        Ok(id)
    }

    fn xrange(&mut self, args: &[Bytes], out: &mut Out) {
        let (Some(start), Some(end)) = (range_id(&args[2], 0), range_id(&args[3], u64::MAX)) else {
            return out.error(BAD_ID);
        };
        let mut count = None;
        for opt in args[4..].chunks(2) {
            match opt {
                [word, n] if word.eq_ignore_ascii_case(b"COUNT") => match int_of(n) {
                    // A negative count counts as 0.
                    Some(n) => count = Some(usize::try_from(n).unwrap_or(0)),
                    None => return out.error(NOT_INT),
                },
                _ => return out.error("ERR syntax error"),
            }
        }
        let entries = match self.keys.get(&args[1][..]) {
            None => return out.head(b'*', 0),
            Some(Entry::Stream { entries, .. }) => entries,
            Some(_) => return out.error(WRONGTYPE),
        };
        // Redis answers a zero count with a null, once it knows the stream exists.
        if count == Some(0) {
            return out.0.extend_from_slice(b"_\r\n");
        }
        let found: Vec<_> = if start <= end {
            entries
                .range(start..=end)
                .take(count.unwrap_or(usize::MAX))
                .collect()
        } else {
            Vec::new()
        };
        out.head(b'*', found.len());
        for (&id, fields) in found {
            out.head(b'*', 2);
            out.bulk(id_text(id).as_bytes());
            out.head(b'*', fields.len());
            fields.iter().for_each(|f| out.bulk(f));
        }
    }
}

/// `HELLO [3]`: the server's description. Only RESP3 is spoken.
fn hello(id: i64, args: &[Bytes], out: &mut Out) {
    if let Some(v) = args.get(1) {
        let Some(v) = int_of(v) else {
            return out.error("ERR Protocol version is not an integer or out of range");
        };
        if let Some(opt) = args.get(2) {
            let mut e = b"ERR Syntax error in HELLO option '".to_vec();
            e.extend_from_slice(opt);
            e.push(b'\'');
            return out.error(e);
        }
        if v != 3 {
            return out.error("NOPROTO unsupported protocol version");
        }
    }
    // Redis 7.0.15's fields, in its order.
    out.head(b'%', 7);
    for (k, v) in [("server", "redis"), ("version", "7.0.15")] {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
    for (k, v) in [("proto", 3), ("id", id)] {
        out.bulk(k.as_bytes());
        out.int(v);
    }
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
    out.bulk(b"modules");
    out.head(b'*', 0);
}

/// Redis's arity of each command modelled: `n`, exactly `n` arguments (the name
/// included); `-n`, at least `n`.
fn arity(name: &[u8]) -> Option<i32> {
    Some(match name {
        b"HELLO" | b"PING" | b"SUNSUBSCRIBE" => -1,
        b"GET" | b"INCR" | b"XLEN" | b"HKEYS" => 2,
        b"SPUBLISH" => 3,
        b"DEL" | b"SSUBSCRIBE" => -2,
        b"SET" | b"XDEL" | b"HDEL" => -3,
        b"XRANGE" | b"HSET" => -4,
        b"XADD" => -5,
        _ => return None,
    })
}

fn wrong_args(name: &[u8]) -> Vec<u8> {
    let mut e = b"ERR wrong number of arguments for '".to_vec();
    e.extend(name.to_ascii_lowercase());
    e.extend_from_slice(b"' command");
    e
}

/// Redis's message for an unknown command, with its first 128 bytes of arguments.
fn unknown(args: &[Bytes]) -> Vec<u8> {
    let mut e = b"ERR unknown command '".to_vec();
    e.extend(args[0].iter().take(128));
    e.extend_from_slice(b"', with args beginning with: ");
    let shown_from = e.len();
    for a in &args[1..] {
        let Some(room) = 128usize
            .checked_sub(e.len() - shown_from)
            .filter(|&r| r > 0)
        else {
            break;
        };
        e.push(b'\'');
        e.extend(a.iter().take(room));
        e.extend_from_slice(b"' ");
    }
    e
}

/// An integer as Redis reads one: canonical decimal only (no `+`, no leading zeros, no
/// spaces), which is exactly what prints back the same.
fn int_of(b: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == b).then_some(n)
}

fn num(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A stream id `ms-seq`, or `ms` with `seq` as given.
fn parse_id(b: &[u8], seq: u64) -> Option<Id> {
    if b.len() > 127 {
        return None;
    }
    match b.iter().position(|&c| c == b'-') {
        Some(dash) => Some((num(&b[..dash])?, num(&b[dash + 1..])?)),
        None => Some((num(b)?, seq)),
    }
}

/// A bound of `XRANGE`: `-`, `+`, or an id whose missing sequence is `seq`.
fn range_id(b: &[u8], seq: u64) -> Option<Id> {
    match b {
        b"-" => Some((0, 0)),
        b"+" => Some((u64::MAX, u64::MAX)),
        _ => parse_id(b, seq),
    }
}

fn id_text((ms, seq): Id) -> String {
    format!("{ms}-{seq}")
}

/// Takes the next whole request from the front of `inbuf`: its arguments (none for an empty
/// one), `None` if it is not all there yet, or why the bytes are not a request.
fn take_request(inbuf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, String> {
    if inbuf.first() != Some(&b'*') {
        // An inline request: one line.
        let Some(nl) = inbuf.iter().position(|&b| b == b'\n') else {
            let too_big = inbuf.len() > INLINE_MAX;
            return if too_big {
                Err("too big inline request".into())
            } else {
                Ok(None)
            };
        };
        let line = inbuf.split_to(nl + 1).freeze();
        let words = line
            .split(u8::is_ascii_whitespace)
            .filter(|a| !a.is_empty());
        return Ok(Some(words.map(|a| line.slice_ref(a)).collect()));
    }
    let len = match resp::frame_len(inbuf, &LIMITS) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let frame = inbuf.split_to(len).freeze();
    let Ok(Some((v, _))) = resp::parse(&frame, &LIMITS) else {
        return Err("unreadable request".into());
    };
    // A null array (`*-1`) has no items: an empty request, which Redis skips too.
    let mut args = Vec::with_capacity(v.len());
    for item in v.items() {
        match (item.kind(), item.as_bytes()) {
            (Kind::Bulk, Some(b)) => args.push(frame.slice_ref(b)),
            (kind, _) => return Err(format!("expected '$', got {kind:?}")),
        }
    }
    Ok(Some(args))
}

impl Service for FakeRedis {
    fn handle_accept(&mut self, conn: ServiceConn, _now: Instant) {
        let client = Client {
            id: self.next_id,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            channels: BTreeSet::new(),
            closing: false,
        };
        self.next_id += 1;
        self.clients.insert(conn, client);
    }

    fn handle_read(&mut self, conn: ServiceConn, bytes: &[u8], now: Instant) {
        match self.clients.get_mut(&conn) {
            Some(c) if !c.closing => c.inbuf.extend_from_slice(bytes),
            _ => return,
        }
        while let Some(c) = self.clients.get_mut(&conn) {
            match take_request(&mut c.inbuf) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => self.run(conn, &args, now),
                Ok(None) => {
                    // Redis drops a client whose query buffer overflows, without a reply.
                    if c.inbuf.len() > QUERY_MAX {
                        c.closing = true;
                    }
                    return;
                }
                Err(why) => {
                    Out(&mut c.out).error(format!("ERR Protocol error: {why}"));
                    c.closing = true;
                    c.inbuf.clear();
                    return;
                }
            }
        }
    }

    fn handle_closed(&mut self, conn: ServiceConn, _now: Instant) {
        self.forget(conn);
    }

    fn handle_killed(&mut self, _now: Instant) {
        self.clients.clear();
        self.channels.clear();
    }

    fn poll_output(&mut self) -> Option<ServiceOutput> {
        // Every connection's bytes first, in connection order, then the closes.
        if let Some((&conn, c)) = self.clients.iter_mut().find(|(_, c)| !c.out.is_empty()) {
            let bytes = c.out.split();
            return Some(ServiceOutput::Send { conn, bytes });
        }
        let conn = *self.clients.iter().find(|(_, c)| c.closing)?.0;
        self.forget(conn);
        Some(ServiceOutput::Close { conn })
    }
}
