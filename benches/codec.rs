//! Frame codec throughput: liveline's codec against tokio-util's `LengthDelimitedCodec`
//! on the same bytes (both read a 4-byte big-endian length; ours also parses the kind byte
//! and the body).
//!
//! Run: `cargo bench --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use liveline::codec::{Decoder, Encoder};
use liveline::frame::Frame;
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

/// Frames per iteration, so per-frame costs are measured well above timer resolution.
const FRAMES: usize = 1024;

fn wire(payload: &Bytes) -> BytesMut {
    let enc = Encoder::new(1 << 20);
    let mut buf = BytesMut::new();
    for _ in 0..FRAMES {
        enc.encode(&Frame::Data(payload.clone()), &mut buf)
            .expect("bench frames fit");
    }
    buf
}

/// Times only `decode_all` over a refilled receive buffer, as a reader reuses its buffer;
/// the refill (a memcpy) is outside the measurement.
fn decode_timed(
    iters: u64,
    input: &BytesMut,
    mut decode_all: impl FnMut(&mut BytesMut) -> usize,
) -> Duration {
    let mut buf = BytesMut::with_capacity(input.len());
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        buf.clear();
        buf.extend_from_slice(input);
        let start = Instant::now();
        let n = decode_all(&mut buf);
        total += start.elapsed();
        assert_eq!(n, FRAMES);
    }
    total
}

fn bench_size(c: &mut Criterion, label: &str, size: usize, throughput: Throughput) {
    let payload = Bytes::from(vec![0x5a; size]);
    let input = wire(&payload);

    let mut g = c.benchmark_group(format!("codec/decode/{label}"));
    g.throughput(throughput.clone());
    g.bench_function("liveline", |b| {
        b.iter_custom(|iters| {
            decode_timed(iters, &input, |buf| {
                let mut dec = Decoder::new(1 << 20);
                let mut n = 0;
                while let Some(f) = dec.decode(buf).expect("valid input") {
                    black_box(&f);
                    n += 1;
                }
                n
            })
        })
    });
    g.bench_function("liveline decode_with (borrowed)", |b| {
        b.iter_custom(|iters| {
            decode_timed(iters, &input, |buf| {
                let mut dec = Decoder::new(1 << 20);
                let mut n = 0;
                while let Some(()) = dec
                    .decode_with(buf, |f| {
                        black_box(&f);
                    })
                    .expect("valid input")
                {
                    n += 1;
                }
                n
            })
        })
    });
    g.bench_function("liveline decode_slice (the engine's path)", |b| {
        b.iter_custom(|iters| {
            decode_timed(iters, &input, |buf| {
                let mut dec = Decoder::new(1 << 20);
                let (mut n, mut at) = (0, 0);
                while let Some((f, used)) = dec.decode_slice(&buf[at..]).expect("valid input") {
                    black_box(&f);
                    at += used;
                    n += 1;
                }
                n
            })
        })
    });
    g.bench_function("tokio-util LengthDelimitedCodec", |b| {
        b.iter_custom(|iters| {
            decode_timed(iters, &input, |buf| {
                let mut dec = LengthDelimitedCodec::builder()
                    .max_frame_length(1 << 20)
                    .new_codec();
                let mut n = 0;
                while let Some(f) = dec.decode(buf).expect("valid input") {
                    black_box(&f);
                    n += 1;
                }
                n
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("codec/encode/{label}"));
    g.throughput(throughput);
    let mut out = BytesMut::with_capacity(input.len());
    g.bench_function("liveline", |b| {
        let enc = Encoder::new(1 << 20);
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                enc.encode(&Frame::Data(payload.clone()), &mut out)
                    .expect("fits");
            }
            black_box(&out);
        })
    });
    g.bench_function("tokio-util LengthDelimitedCodec", |b| {
        let mut enc = LengthDelimitedCodec::builder()
            .max_frame_length(1 << 20)
            .new_codec();
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                enc.encode(payload.clone(), &mut out).expect("fits");
            }
            black_box(&out);
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    bench_size(c, "32B", 32, Throughput::Elements(FRAMES as u64));
    bench_size(
        c,
        "4KiB",
        4096,
        Throughput::Bytes((FRAMES * (4096 + 5)) as u64),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
