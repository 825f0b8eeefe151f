//! Arbitrary bytes, fed to the decoder in arbitrary pieces: it must never panic, never grow
//! the buffer past what was fed plus one bounded frame, and whatever decodes must re-encode
//! to exactly the bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveline::codec::{Decoder, Encoder};

/// Small enough that the fuzzer reaches the limit often.
const MAX: u32 = 512;

fuzz_target!(|input: &[u8]| {
    // The first byte seeds the piece sizes; the rest is the stream.
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let mut rng = u32::from(seed) | 1;
    let mut dec = Decoder::new(MAX);
    let enc = Encoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut reencoded = BytesMut::new();
    let mut fed = 0;
    'feed: while fed < stream.len() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let piece = 1 + (rng as usize % 37);
        let end = (fed + piece).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => enc
                    .encode(&frame, &mut reencoded)
                    .expect("a frame that decoded under MAX re-encodes under MAX"),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(buf.capacity() <= 2 * (stream.len() + MAX as usize + 4));
    }
    assert_eq!(&reencoded[..], &stream[..reencoded.len()]);
});
