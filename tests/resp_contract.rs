//! The RESP3 codec against replies from a real `redis-server` on loopback: the contract
//! that keeps the codec (and the simulator's fake broker) honest.
//!
//! Each test starts its own server on a free port and kills it when done, even on
//! panic. Every wait is bounded.

mod common;

use bytes::BytesMut;
use common::redis::RedisServer;
use liveline::resp::{encode_command, frame_len, parse, Kind, Limits, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(server: &RedisServer) -> Conn {
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Conn {
        stream,
        buf: Vec::new(),
    }
}

/// A blocking client connection that frames replies with the codec.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn send(&mut self, commands: &[&[&[u8]]]) {
        let mut out = BytesMut::new();
        for args in commands {
            encode_command(&mut out, args);
        }
        self.stream.write_all(&out).expect("write");
    }

    /// Reads until `count` complete replies are buffered, then returns their
    /// bytes, leaving anything after them for the next call.
    fn replies(&mut self, count: usize) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let mut end = 0;
            let mut complete = 0;
            while complete < count {
                match frame_len(&self.buf[end..], &Limits::default()).expect("valid RESP") {
                    Some(len) => {
                        end += len;
                        complete += 1;
                    }
                    None => break,
                }
            }
            if complete == count {
                return self.buf.drain(..end).collect();
            }
            assert!(Instant::now() < deadline, "timed out waiting for replies");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("server closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&[args]);
        self.replies(1)
    }
}

fn view(reply: &[u8]) -> Value<'_> {
    let (value, len) = parse(reply, &Limits::default()).unwrap().unwrap();
    assert_eq!(len, reply.len());
    value
}

#[test]
fn hello_3_returns_a_map_with_proto_3() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let reply = conn.call(&[b"HELLO", b"3"]);
    let hello = view(&reply);
    assert_eq!(hello.kind(), Kind::Map);
    assert_eq!(hello.get(b"proto").and_then(|v| v.as_int()), Some(3));
    assert_eq!(hello.get(b"server").and_then(|v| v.as_str()), Some("redis"));
    assert!(hello.get(b"version").and_then(|v| v.as_str()).is_some());
    assert_eq!(hello.get(b"modules").map(|v| v.kind()), Some(Kind::Array));
    assert_eq!(hello.len() % 2, 0);
}

#[test]
fn strings_nulls_errors_and_resp3_types() {
    let server = RedisServer::start();
    let mut conn = connect(&server);

    let pong = conn.call(&[b"PING"]);
    assert_eq!(view(&pong).kind(), Kind::Simple);
    assert_eq!(view(&pong).as_bytes(), Some(&b"PONG"[..]));

    // RESP2 spells a missing key as `$-1`.
    let missing = conn.call(&[b"GET", b"nothing"]);
    assert_eq!(missing, b"$-1\r\n");
    assert!(view(&missing).is_null());

    conn.call(&[b"HELLO", b"3"]);
    let ok = conn.call(&[b"SET", b"greeting", b"hi\r\nthere\x00"]);
    assert_eq!(view(&ok).as_str(), Some("OK"));
    let got = conn.call(&[b"GET", b"greeting"]);
    assert_eq!(view(&got).kind(), Kind::Bulk);
    assert_eq!(view(&got).as_bytes(), Some(&b"hi\r\nthere\x00"[..]));
    assert_eq!(conn.call(&[b"GET", b"nothing"]), b"_\r\n");

    let wrong = conn.call(&[b"LPUSH", b"greeting", b"x"]);
    let wrong = view(&wrong);
    assert_eq!(wrong.kind(), Kind::Error);
    assert_eq!(wrong.error_code(), Some(&b"WRONGTYPE"[..]));
    assert_eq!(wrong.as_bytes(), None);

    conn.call(&[b"ZADD", b"scores", b"1.5", b"m"]);
    let score = conn.call(&[b"ZSCORE", b"scores", b"m"]);
    assert_eq!(view(&score).kind(), Kind::Double);
    assert_eq!(view(&score).as_double(), Some(1.5));

    conn.call(&[b"SADD", b"fruit", b"apple", b"pear"]);
    let members = conn.call(&[b"SMEMBERS", b"fruit"]);
    let members = view(&members);
    assert_eq!((members.kind(), members.len()), (Kind::Set, 2));
    let mut names: Vec<_> = members.items().filter_map(|v| v.as_str()).collect();
    names.sort();
    assert_eq!(names, ["apple", "pear"]);

    let info = conn.call(&[b"INFO", b"server"]);
    let info = view(&info);
    assert_eq!(info.kind(), Kind::Verbatim);
    assert_eq!(info.verbatim_format(), Some(&b"txt"[..]));
    assert!(info.as_bytes().unwrap().starts_with(b"# Server"));
}

#[test]
fn streams_nest_arrays() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    conn.call(&[b"HELLO", b"3"]);
    let id = conn.call(&[b"XADD", b"inbox:bob", b"*", b"f", b"v"]);
    let id = view(&id).as_bytes().unwrap().to_vec();
    assert!(id.contains(&b'-'));

    let range = conn.call(&[b"XRANGE", b"inbox:bob", b"-", b"+"]);
    let range = view(&range);
    assert_eq!((range.kind(), range.len()), (Kind::Array, 1));
    let entry = range.items().next().unwrap();
    assert_eq!(entry.len(), 2);
    let mut parts = entry.items();
    assert_eq!(parts.next().unwrap().as_bytes(), Some(&id[..]));
    let fields: Vec<_> = parts
        .next()
        .unwrap()
        .items()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(fields, ["f", "v"]);

    // A consumer group with a pending entry makes the deepest common reply,
    // which the default depth limit must admit.
    conn.call(&[b"XGROUP", b"CREATE", b"inbox:bob", b"g", b"0"]);
    let read = conn.call(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c",
        b"STREAMS",
        b"inbox:bob",
        b">",
    ]);
    assert_eq!(view(&read).kind(), Kind::Map);
    let full = conn.call(&[b"XINFO", b"STREAM", b"inbox:bob", b"FULL"]);
    let full = view(&full);
    let group = full.get(b"groups").unwrap().items().next().unwrap();
    let consumer = group.get(b"consumers").unwrap().items().next().unwrap();
    let pending = consumer.get(b"pending").unwrap().items().next().unwrap();
    assert_eq!(pending.items().next().unwrap().as_bytes(), Some(&id[..]));

    let trimmed = conn.call(&[b"XTRIM", b"inbox:bob", b"MAXLEN", b"0"]);
    assert_eq!(view(&trimmed).as_int(), Some(1));
    let empty = conn.call(&[b"XRANGE", b"inbox:bob", b"-", b"+"]);
    assert!(view(&empty).is_empty());
}

#[test]
fn sharded_pubsub_delivers_pushes() {
    let server = RedisServer::start();
    let mut subscriber = connect(&server);
    subscriber.call(&[b"HELLO", b"3"]);
    let confirm = subscriber.call(&[b"SSUBSCRIBE", b"chan:bob"]);
    let confirm = view(&confirm);
    assert!(confirm.is_push_of(b"ssubscribe"));
    let parts: Vec<_> = confirm.items().collect();
    assert_eq!(parts[1].as_bytes(), Some(&b"chan:bob"[..]));
    assert_eq!(parts[2].as_int(), Some(1));

    let mut publisher = connect(&server);
    let receivers = publisher.call(&[b"SPUBLISH", b"chan:bob", b"hello"]);
    assert_eq!(view(&receivers).as_int(), Some(1));

    let message = subscriber.replies(1);
    let message = view(&message);
    assert!(message.is_push_of(b"smessage"));
    assert!(!message.is_push_of(b"message"));
    let words: Vec<_> = message.items().filter_map(|v| v.as_str()).collect();
    assert_eq!(words, ["smessage", "chan:bob", "hello"]);
}

#[test]
fn pipelined_replies_parse_from_one_buffer() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    conn.send(&[
        &[b"SET", b"counter", b"41"],
        &[b"INCR", b"counter"],
        &[b"GET", b"counter"],
    ]);
    let buf = conn.replies(3);
    let limits = Limits::default();
    let (first, a) = parse(&buf, &limits).unwrap().unwrap();
    let (second, b) = parse(&buf[a..], &limits).unwrap().unwrap();
    let (third, c) = parse(&buf[a + b..], &limits).unwrap().unwrap();
    assert_eq!(a + b + c, buf.len());
    assert_eq!(first.as_str(), Some("OK"));
    assert_eq!(second.as_int(), Some(42));
    assert_eq!(third.as_bytes(), Some(&b"42"[..]));
}
