//! Arbitrary bytes from a "Redis server", in arbitrary pieces, to the Redis link protocol,
//! ready or still in its handshake: it must never panic, and the RESP3 decoder's two doors
//! must agree (a value `frame_len` measures is one `parse` reads, to the same length, with
//! as many children as it says).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveline::bus::Bus;
use liveline::frame::{Code, Reason};
use liveline::link::Protocol;
use liveline::redis::Redis;
use liveline::resp::{frame_len, parse, Limits};
use std::time::Instant;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_bulk: 4096,
        max_elements: 64,
        max_depth: 4,
    };
    if let Ok(Some(n)) = frame_len(stream, &limits) {
        let (v, m) = parse(stream, &limits).unwrap().unwrap();
        assert_eq!(n, m);
        assert_eq!(
            v.items().count(),
            if v.is_aggregate() { v.len() } else { 0 }
        );
    }

    let now = Instant::now();
    let mut redis = Redis::new(1 << 16);
    redis.subscribe(b"{a}:bell");
    redis.handle_connected("127.0.0.1:6379".parse().unwrap(), now);
    let mut inbuf = BytesMut::new();
    if seed & 1 == 1 {
        // Past the handshake, with requests in flight.
        inbuf.extend_from_slice(b"%1\r\n+proto\r\n:3\r\n");
        let _ = redis.handle_read(&mut inbuf, now);
        for token in 0..4 {
            let _ = redis.request(token, &[b"GET", b"k"]);
        }
        redis.handle_write_idle(now);
    }
    let mut out = BytesMut::new();
    let mut rng = u32::from(seed) | 1;
    let mut fed = 0;
    while fed < stream.len() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let end = (fed + 1 + rng as usize % 29).min(stream.len());
        inbuf.extend_from_slice(&stream[fed..end]);
        fed = end;
        if redis.handle_read(&mut inbuf, now).is_err() {
            let reason = Reason::new(Code::PROTOCOL_VIOLATION, "fuzz");
            redis.handle_disconnected(&reason, now);
            break;
        }
        redis.poll_transmit(&mut out);
        while redis.poll_event().is_some() {}
    }
});
