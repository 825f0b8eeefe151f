//! Arbitrary frames -> encode -> decode in arbitrary pieces -> the same frames.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use liveline::codec::{Decoder, Encoder};
use liveline::frame::{Code, Frame, Hello, Reason, Text, Welcome};

#[derive(Arbitrary, Debug)]
enum Spec {
    Hello {
        version: u16,
        instance: u64,
        attempt: u32,
        identity: String,
        token: Vec<u8>,
    },
    Welcome(u16, u64, u32, u32, u32),
    Reject(u16, String),
    Ping(u64),
    Pong(u64),
    Data(Vec<u8>),
    Message(u64, Vec<u8>),
    Ack(u64),
    GoAway(u16, String),
    Error(u16, String),
}

fn reason(code: u16, text: String) -> Reason {
    Reason {
        code: Code(code),
        text: Text::from(text),
    }
}

impl Spec {
    fn frame(self) -> Frame {
        match self {
            Spec::Hello {
                version,
                instance,
                attempt,
                mut identity,
                token,
            } => {
                // Identities longer than the one-byte length cannot be encoded by design.
                while identity.len() > liveline::frame::MAX_IDENTITY_LEN {
                    identity.pop();
                }
                Frame::Hello(Box::new(Hello {
                    version,
                    instance,
                    attempt,
                    identity: Text::from(identity),
                    token: Bytes::from(token),
                }))
            }
            Spec::Welcome(version, session, ping, idle, max) => Frame::Welcome(Welcome {
                version,
                session,
                ping_interval_ms: ping,
                idle_timeout_ms: idle,
                max_frame_len: max,
            }),
            Spec::Reject(c, t) => Frame::Reject(reason(c, t)),
            Spec::Ping(v) => Frame::Ping(v),
            Spec::Pong(v) => Frame::Pong(v),
            Spec::Data(p) => Frame::Data(Bytes::from(p)),
            Spec::Message(id, p) => Frame::Message {
                id,
                payload: Bytes::from(p),
            },
            Spec::Ack(v) => Frame::Ack(v),
            Spec::GoAway(c, t) => Frame::GoAway(reason(c, t)),
            Spec::Error(c, t) => Frame::Error(reason(c, t)),
        }
    }
}

fuzz_target!(|input: (Vec<Spec>, Vec<u8>)| {
    let (specs, pieces) = input;
    let frames: Vec<Frame> = specs.into_iter().map(Spec::frame).collect();
    let enc = Encoder::default();
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for f in frames {
        // Frames over the limit are refused by the encoder and leave nothing behind.
        let before = wire.len();
        if enc.encode(&f, &mut wire).is_ok() {
            sent.push(f);
        } else {
            assert_eq!(wire.len(), before);
        }
    }
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut at = 0;
    let mut sizes = pieces.iter().map(|&p| usize::from(p) + 1).cycle();
    while at < wire.len() {
        let n = if pieces.is_empty() {
            wire.len()
        } else {
            sizes.next().unwrap_or(1)
        };
        let end = (at + n).min(wire.len());
        buf.extend_from_slice(&wire[at..end]);
        at = end;
        while let Some(f) = dec.decode(&mut buf).expect("encoded frames decode") {
            got.push(f);
        }
    }
    assert_eq!(got, sent);
});
