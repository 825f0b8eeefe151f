//! liveline's RESP3 decoder against the `redis-protocol` crate (6.0, sans-IO, checked
//! against Redis 7.0) in the same run, on the replies a cluster node lives on: the push
//! that carries a published message, the integer SPUBLISH returns, and an XRANGE of ten
//! inbox entries. Each side decodes the reply and reads what a node needs from it.
//! Allocations per reply are counted first, outside the timing.
//!
//! Run: `cargo bench --bench resp`.

#[path = "support/counting.rs"]
mod counting;

use bytes::{Bytes, BytesMut};
use counting::ALLOCS;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use liveline::link::Protocol;
use liveline::redis::{Redis, RedisEvent};
use liveline::resp::{frame_len, parse, Limits, Value};
use redis_protocol::resp3::decode::complete::{decode, decode_bytes_mut};
use redis_protocol::resp3::types::{BytesFrame, OwnedFrame};
use std::sync::atomic::Ordering;
use std::time::Instant;

fn push() -> Vec<u8> {
    let payload = b"M 1796578625877-0 M cf1cf6eece2ea20a:1 alice to are you there";
    let mut v = b">3\r\n$8\r\nsmessage\r\n$10\r\n{bob}:bell\r\n".to_vec();
    v.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(b"\r\n");
    v
}

fn xrange() -> Vec<u8> {
    let mut v = b"*10\r\n".to_vec();
    for i in 0..10 {
        let id = format!("1796578625877-{i}");
        let m = format!("M cf1cf6eece2ea20a:{i} alice to message number {i}");
        v.extend_from_slice(format!("*2\r\n${}\r\n{id}\r\n*4\r\n", id.len()).as_bytes());
        for field in ["s", "alice", "m", m.as_str()] {
            v.extend_from_slice(format!("${}\r\n{field}\r\n", field.len()).as_bytes());
        }
    }
    v
}

/// liveline: the channel and payload of a push, borrowed.
fn ours_push(buf: &[u8]) -> usize {
    let limits = Limits::default();
    let Ok(Some((v, _))) = parse(buf, &limits) else {
        return 0;
    };
    let mut items = v.items();
    let _kind = items.next();
    let channel = items
        .next()
        .and_then(|c| c.as_bytes())
        .map_or(0, <[u8]>::len);
    let payload = items
        .next()
        .and_then(|p| p.as_bytes())
        .map_or(0, <[u8]>::len);
    channel + payload
}

/// liveline: every entry id and field of an XRANGE reply.
fn ours_walk(buf: &[u8]) -> usize {
    fn walk(v: Value<'_>) -> usize {
        if v.is_aggregate() {
            v.items().map(walk).sum()
        } else {
            v.as_bytes().map_or(1, <[u8]>::len)
        }
    }
    let limits = Limits::default();
    match frame_len(buf, &limits) {
        Ok(Some(_)) => parse(buf, &limits)
            .ok()
            .flatten()
            .map_or(0, |(v, _)| walk(v)),
        _ => 0,
    }
}

fn theirs_walk(frame: &OwnedFrame) -> usize {
    match frame {
        OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. } => {
            data.iter().map(theirs_walk).sum()
        }
        OwnedFrame::BlobString { data, .. } => data.len(),
        OwnedFrame::SimpleString { data, .. } => data.len(),
        _ => 1,
    }
}

fn theirs_bytes_walk(frame: &BytesFrame) -> usize {
    match frame {
        BytesFrame::Array { data, .. } | BytesFrame::Push { data, .. } => {
            data.iter().map(theirs_bytes_walk).sum()
        }
        BytesFrame::BlobString { data, .. } => data.len(),
        BytesFrame::SimpleString { data, .. } => data.len(),
        _ => 1,
    }
}

/// The whole link path: bytes read, handed to the Redis protocol, the event taken.
fn link_path(redis: &mut Redis, inbuf: &mut BytesMut, wire: &[u8]) -> usize {
    inbuf.extend_from_slice(wire);
    let _ = redis.handle_read(inbuf, Instant::now());
    let mut n = 0;
    while let Some(e) = redis.poll_event() {
        if let RedisEvent::Message { payload, .. } = e {
            n += payload.len();
        }
    }
    n
}

fn ready_redis() -> Redis {
    let mut redis = Redis::default();
    redis.handle_connected("127.0.0.1:6379".parse().unwrap(), Instant::now());
    let mut hello = BytesMut::from(&b"%1\r\n+proto\r\n:3\r\n"[..]);
    let _ = redis.handle_read(&mut hello, Instant::now());
    redis
}

/// Allocation calls per call of `f`, over many calls.
fn allocs_per(mut f: impl FnMut() -> usize) -> f64 {
    const N: usize = 10_000;
    for _ in 0..100 {
        black_box(f());
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        black_box(f());
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    let (push, xrange, int) = (push(), xrange(), b":1\r\n".to_vec());
    let mut redis = ready_redis();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    println!("heap allocations per reply:");
    for (name, wire) in [("push", &push), ("xrange", &xrange), ("integer", &int)] {
        let ours = allocs_per(|| ours_walk(wire));
        let theirs = allocs_per(|| {
            decode(wire)
                .ok()
                .flatten()
                .map_or(0, |(f, _)| theirs_walk(&f))
        });
        let shared = Bytes::copy_from_slice(wire);
        let theirs_bytes = allocs_per(|| {
            let mut b = BytesMut::from(&shared[..]);
            decode_bytes_mut(&mut b)
                .ok()
                .flatten()
                .map_or(0, |(f, _, _)| theirs_bytes_walk(&f))
        });
        println!(
            "  {name:<8} liveline {ours:.2}, redis-protocol decode {theirs:.2}, decode_bytes_mut {theirs_bytes:.2} (the last includes one copy into a BytesMut)"
        );
    }
    let link = allocs_per(|| link_path(&mut redis, &mut inbuf, &push));
    println!(
        "  push through the Redis link protocol (event with Bytes channel and payload): {link:.3}"
    );

    let mut g = c.benchmark_group("resp");
    g.bench_function("push/liveline", |b| b.iter(|| ours_push(black_box(&push))));
    g.bench_function("push/redis-protocol", |b| {
        b.iter(|| {
            decode(black_box(&push))
                .ok()
                .flatten()
                .map_or(0, |(f, _)| theirs_walk(&f))
        })
    });
    g.bench_function("push/liveline-link", |b| {
        b.iter(|| link_path(&mut redis, &mut inbuf, black_box(&push)))
    });
    g.bench_function("xrange10/liveline", |b| {
        b.iter(|| ours_walk(black_box(&xrange)))
    });
    g.bench_function("xrange10/redis-protocol", |b| {
        b.iter(|| {
            decode(black_box(&xrange))
                .ok()
                .flatten()
                .map_or(0, |(f, _)| theirs_walk(&f))
        })
    });
    g.bench_function("integer/liveline", |b| {
        b.iter(|| ours_walk(black_box(&int)))
    });
    g.bench_function("integer/redis-protocol", |b| {
        b.iter(|| {
            decode(black_box(&int))
                .ok()
                .flatten()
                .map_or(0, |(f, _)| theirs_walk(&f))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
