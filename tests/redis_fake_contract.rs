//! The simulator's fake Redis against a real `redis-server`: one script of commands, over
//! three connections, run against both, every reply compared. Kinds, integers, strings and
//! errors must match exactly; stream ids only by shape (and by which earlier id they are),
//! and the server's version and connection id by shape. If the fake drifts from Redis,
//! this test fails, which keeps the simulations built on it honest.
//!
//! The fake is fed the very bytes sent to Redis (with stream ids, which differ, put in
//! place), directly through its `Service` side. Every wait is bounded.

mod common;

use bytes::BytesMut;
use common::redis::RedisServer;
use liveline::resp::{encode_command, frame_len, parse, Kind, Limits, Value};
use liveline::sim::{FakeRedis, Service, ServiceConn, ServiceOutput};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNS: usize = 3;
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// What one step sends, on one connection.
enum Send {
    /// A command; an argument `#n` stands for the n-th stream id that server returned.
    Cmd(&'static [&'static str]),
    /// Bytes as they are.
    Raw(&'static [u8]),
}
use Send::{Cmd, Raw};

/// The script. Both servers start empty; pushes to other connections are expected where
/// the fake sends them, and must come from Redis too.
const SCRIPT: &[(usize, Send)] = &[
    (A, Cmd(&["HELLO", "3"])),
    (B, Cmd(&["HELLO", "3"])),
    (C, Cmd(&["hello", "3"])),
    (A, Cmd(&["HELLO"])),
    (A, Cmd(&["PING"])),
    (A, Cmd(&["PING", "hi"])),
    (A, Cmd(&["SET", "k", "v"])),
    (A, Cmd(&["GET", "k"])),
    (A, Cmd(&["GET", "missing"])),
    (A, Cmd(&["INCR", "n"])),
    (A, Cmd(&["incr", "n"])),
    (A, Cmd(&["INCR", "k"])),
    (A, Cmd(&["SET", "big", "9223372036854775807"])),
    (A, Cmd(&["INCR", "big"])),
    (A, Cmd(&["SET", "lead", "05"])),
    (A, Cmd(&["INCR", "lead"])),
    (A, Cmd(&["DEL", "k", "missing", "n"])),
    (A, Cmd(&["GET", "a", "b"])),
    (A, Cmd(&["SET", "k"])),
    (A, Cmd(&["FOO", "a", "b"])),
    (A, Cmd(&["nosuch"])),
    // Sharded pub/sub between A and B, pushes included.
    (A, Cmd(&["SSUBSCRIBE", "ch"])),
    (A, Cmd(&["SSUBSCRIBE", "ch2", "other"])),
    (A, Cmd(&["SSUBSCRIBE", "ch"])),
    (B, Cmd(&["SPUBLISH", "ch", "hello"])),
    (B, Cmd(&["SPUBLISH", "nobody", "x"])),
    (A, Cmd(&["SPUBLISH", "ch", "to myself"])),
    (A, Cmd(&["GET", "big"])),
    (A, Cmd(&["SUNSUBSCRIBE", "other"])),
    (A, Cmd(&["SUNSUBSCRIBE", "nope"])),
    (A, Cmd(&["SUNSUBSCRIBE", "ch"])),
    (B, Cmd(&["SPUBLISH", "ch", "unheard"])),
    (A, Cmd(&["SUNSUBSCRIBE"])),
    (A, Cmd(&["SUNSUBSCRIBE"])),
    (B, Cmd(&["SPUBLISH", "ch2", "x", "y"])),
    // Streams.
    (B, Cmd(&["XADD", "s", "*", "f", "v"])),
    (B, Cmd(&["XADD", "s", "*", "f", "v", "g", "w"])),
    (B, Cmd(&["XADD", "s", "#1", "f", "v"])),
    (B, Cmd(&["XADD", "s", "*", "f"])),
    (B, Cmd(&["XADD", "s", "*", "f", "v", "g"])),
    (B, Cmd(&["XADD", "s", "bad", "f", "v"])),
    (B, Cmd(&["XADD", "fresh", "0-0", "f", "v"])),
    (B, Cmd(&["XADD", "big", "*", "f", "v"])),
    (B, Cmd(&["XLEN", "s"])),
    (B, Cmd(&["XLEN", "missing"])),
    (B, Cmd(&["XRANGE", "s", "-", "+"])),
    (B, Cmd(&["XRANGE", "s", "-", "+", "COUNT", "1"])),
    (B, Cmd(&["XRANGE", "s", "#1", "+", "count", "5"])),
    (B, Cmd(&["XRANGE", "s", "+", "-"])),
    (B, Cmd(&["XRANGE", "s", "-", "+", "COUNT", "0"])),
    (B, Cmd(&["XRANGE", "missing", "-", "+", "COUNT", "0"])),
    (B, Cmd(&["XRANGE", "s", "-", "+", "COUNT", "x"])),
    (B, Cmd(&["XRANGE", "s", "-", "+", "LIMIT", "1"])),
    (B, Cmd(&["XRANGE", "s", "nope", "+"])),
    (B, Cmd(&["XRANGE", "big", "-", "+"])),
    (B, Cmd(&["XDEL", "s", "#0", "#0", "18446744073709551615-0"])),
    (B, Cmd(&["XDEL", "s", "bad"])),
    (B, Cmd(&["XDEL", "missing", "bad"])),
    (B, Cmd(&["XLEN", "s"])),
    (B, Cmd(&["XADD", "s", "#0", "f", "v"])),
    (B, Cmd(&["XRANGE", "s", "-", "+"])),
    (B, Cmd(&["GET", "s"])),
    (B, Cmd(&["XADD", "t", "5-1", "f", "v"])),
    (B, Cmd(&["XADD", "t", "5-*", "f", "v"])),
    (B, Cmd(&["XADD", "t", "5", "f", "v"])),
    (B, Cmd(&["XADD", "t", "6", "f", "v"])),
    (B, Cmd(&["XRANGE", "t", "5", "5"])),
    // Hashes.
    (C, Cmd(&["HSET", "h", "b", "1", "a", "2"])),
    (C, Cmd(&["HSET", "h", "b", "3", "c", "4"])),
    (C, Cmd(&["HSET", "h", "a"])),
    (C, Cmd(&["HSET", "h", "a", "1", "b"])),
    (C, Cmd(&["HKEYS", "h"])),
    (C, Cmd(&["HDEL", "h", "a", "zz", "a"])),
    (C, Cmd(&["HKEYS", "h"])),
    (C, Cmd(&["HKEYS", "missing"])),
    (C, Cmd(&["HDEL", "missing", "a"])),
    (C, Cmd(&["HSET", "s", "x", "1"])),
    (C, Cmd(&["HKEYS", "big"])),
    (C, Cmd(&["HDEL", "h", "b", "c"])),
    (C, Cmd(&["GET", "h"])),
    // Inline commands, then a request that is not RESP: an error, then the close.
    (C, Raw(b"PING\r\n  ping   a \r\n\r\n")),
    (C, Raw(b"*1\r\n$4\r\nPING\r\n*1\r\n:5\r\n")),
];

/// A reply with what differs between servers by design made comparable.
#[derive(Debug, PartialEq)]
enum Shape {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(String),
    /// A stream id: the index of its first appearance in this server's replies.
    StreamId(usize),
    /// A server version, `x.y.z`.
    Version,
    /// A connection id.
    ClientId,
    Null,
    Array(Vec<Shape>),
    Map(Vec<(Shape, Shape)>),
    Push(Vec<Shape>),
    Other(Kind),
}

/// One server's side of the script: the stream ids it returned, in order of appearance.
#[derive(Default)]
struct Ids(Vec<String>);

impl Ids {
    fn shape(&mut self, v: Value<'_>) -> Shape {
        let text =
            |v: &Value<'_>| String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned();
        match v.kind() {
            Kind::Simple => Shape::Simple(text(&v)),
            Kind::Error => {
                let e = String::from_utf8_lossy(v.error_text().unwrap_or_default()).into_owned();
                // What a protocol error says is Redis's parser's business.
                match e.strip_prefix("ERR Protocol error:") {
                    Some(_) => Shape::Error("ERR Protocol error: ...".into()),
                    None => Shape::Error(e),
                }
            }
            Kind::Int => Shape::Int(v.as_int().unwrap_or(i64::MIN)),
            Kind::Bulk => {
                let s = text(&v);
                if is_id(&s) {
                    let at = self.0.iter().position(|i| *i == s).unwrap_or_else(|| {
                        self.0.push(s);
                        self.0.len() - 1
                    });
                    Shape::StreamId(at)
                } else {
                    Shape::Bulk(s)
                }
            }
            Kind::Null => Shape::Null,
            Kind::Array => Shape::Array(v.items().map(|i| self.shape(i)).collect()),
            Kind::Push => Shape::Push(v.items().map(|i| self.shape(i)).collect()),
            Kind::Map => Shape::Map(
                v.pairs()
                    .map(|(k, val)| {
                        let key = k.as_bytes().unwrap_or_default();
                        let val = match (key, val.kind()) {
                            (b"version", Kind::Bulk) if is_version(&text(&val)) => Shape::Version,
                            (b"id", Kind::Int) => Shape::ClientId,
                            _ => self.shape(val),
                        };
                        (self.shape(k), val)
                    })
                    .collect(),
            ),
            other => Shape::Other(other),
        }
    }

    /// The bytes of `send`, with `#n` replaced by this server's n-th stream id.
    fn request(&self, send: &Send) -> Vec<u8> {
        match send {
            Raw(bytes) => bytes.to_vec(),
            Cmd(args) => {
                let args: Vec<&[u8]> = args
                    .iter()
                    .map(|a| match a.strip_prefix('#') {
                        Some(n) => self.0[n.parse::<usize>().unwrap()].as_bytes(),
                        None => a.as_bytes(),
                    })
                    .collect();
                let mut out = BytesMut::new();
                encode_command(&mut out, &args);
                out.to_vec()
            }
        }
    }
}

fn is_id(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('-')
        .is_some_and(|(ms, seq)| digits(ms) && digits(seq))
}

fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok())
}

/// The whole values at the front of `buf`, taken off it.
fn frames(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(len) = frame_len(buf, &Limits::default()).expect("valid RESP") {
        out.push(buf.drain(..len).collect());
    }
    out
}

/// A blocking connection to the real server.
struct Real {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Real {
    /// Reads until `n` values came, and the end of the stream too if `closed` (or until
    /// the time runs out); returns the values and whether the stream ended.
    fn read(&mut self, n: usize, closed: bool) -> (Vec<Vec<u8>>, bool) {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut got = frames(&mut self.buf);
        let mut eof = false;
        while !eof && (got.len() < n || closed) && Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => eof = true,
                Ok(k) => {
                    self.buf.extend_from_slice(&chunk[..k]);
                    got.extend(frames(&mut self.buf));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("reading from redis-server: {e}"),
            }
        }
        (got, eof)
    }
}

/// Feeds the fake and collects what it sends, per connection, and which it closed.
fn fake_step(fake: &mut FakeRedis, conn: usize, bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<bool>) {
    fake.handle_read(ServiceConn(conn as u64), bytes, Instant::now());
    let mut sent = vec![Vec::new(); CONNS];
    let mut closed = vec![false; CONNS];
    while let Some(out) = fake.poll_output() {
        match out {
            ServiceOutput::Send { conn, bytes } => sent[conn.0 as usize].extend_from_slice(&bytes),
            ServiceOutput::Close { conn } => closed[conn.0 as usize] = true,
        }
    }
    (sent, closed)
}

fn describe(send: &Send) -> String {
    match send {
        Cmd(args) => args.join(" "),
        Raw(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn fake_redis_answers_like_redis_server() {
    let server = RedisServer::start();
    let mut real: Vec<Real> = (0..CONNS)
        .map(|_| {
            let stream = TcpStream::connect(server.addr()).expect("connect");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            Real {
                stream,
                buf: Vec::new(),
            }
        })
        .collect();
    let mut fake = FakeRedis::new(Instant::now());
    for i in 0..CONNS {
        fake.handle_accept(ServiceConn(i as u64), Instant::now());
    }
    let (mut real_ids, mut fake_ids) = (Ids::default(), Ids::default());
    let mut closed = [false; CONNS];

    for (step, (conn, send)) in SCRIPT.iter().enumerate() {
        let what = format!("step {step} (conn {conn}: {})", describe(send));
        assert!(
            !closed[*conn],
            "{what}: the script uses a closed connection"
        );
        real[*conn]
            .stream
            .write_all(&real_ids.request(send))
            .expect("write to redis-server");
        let (mut sent, fake_closed) = fake_step(&mut fake, *conn, &fake_ids.request(send));
        // The fake says how many values to wait for; extra ones from Redis show up as a
        // mismatch at the next step (or at the final PING).
        for c in 0..CONNS {
            let fake_frames = frames(&mut sent[c]);
            assert!(
                sent[c].is_empty(),
                "{what}: conn {c}: the fake sent a partial value"
            );
            let (real_frames, real_closed) = real[c].read(fake_frames.len(), fake_closed[c]);
            let real_shapes: Vec<Shape> = real_frames
                .iter()
                .map(|f| real_ids.shape(view(f)))
                .collect();
            let fake_shapes: Vec<Shape> = fake_frames
                .iter()
                .map(|f| fake_ids.shape(view(f)))
                .collect();
            assert_eq!(
                fake_shapes, real_shapes,
                "{what}: conn {c}: the fake differs from Redis"
            );
            assert_eq!(
                fake_closed[c], real_closed,
                "{what}: conn {c}: closed by one side only"
            );
            closed[c] |= fake_closed[c];
        }
    }
    // Nothing left over on the open connections: the next reply is each one's PONG.
    for (c, conn) in real.iter_mut().enumerate().filter(|(c, _)| !closed[*c]) {
        conn.stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let (got, _) = conn.read(1, false);
        let shapes: Vec<Shape> = got.iter().map(|f| real_ids.shape(view(f))).collect();
        assert_eq!(
            shapes,
            [Shape::Simple("PONG".into())],
            "conn {c}: Redis sent more"
        );
    }
    assert!(closed[C], "the protocol error closed the connection");
    assert_eq!(fake.connections(), CONNS - 1);
}

fn view(frame: &[u8]) -> Value<'_> {
    parse(frame, &Limits::default())
        .ok()
        .flatten()
        .map(|(v, _)| v)
        .expect("a whole value")
}
