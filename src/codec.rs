//! Incremental, bounded frame decoder and encoder for the [`crate::frame`] layout.
//!
//! The decoder is a push parser over a [`BytesMut`] the caller appends socket bytes to:
//!
//! ```text
//!   Head ──(4 bytes; 1 <= len <= max)──> Data(len) ──(len bytes)──> frame, back to Head
//!     │                                      │
//!     └──(len == 0 or len > max)──> Failed <─┴──(unknown kind / malformed body)
//! ```
//!
//! * The length is checked against the configured maximum before anything is reserved, so a
//!   hostile prefix such as `0xFFFF_FFF0` costs nothing but an error.
//! * While a frame is partial, the buffer is grown to hold exactly the rest of that frame
//!   (bounded by the maximum), so the reader can fill it in one go.
//! * With [`Decoder::decode`], bodies leave the buffer by `split_to` + `freeze`: payloads
//!   point into the receive buffer, no copy. (The engine decodes from each read's slice
//!   instead and copies a payload once, into a shared chunk that outlives the read buffer:
//!   one copy, and no receive buffer kept per connection.)
//! * After an error the decoder stays failed and returns the same error: the connection must
//!   be closed (after an ERROR frame with [`DecodeError::code`]), since the stream can no
//!   longer be framed.

use crate::frame::{self, BodyError, Code, Frame, FrameKind, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Why the byte stream could not be decoded. Each maps to the [`Code`] the ERROR frame
/// carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix exceeds the maximum frame length.
    FrameTooLarge {
        /// The length prefix received.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A length prefix of zero: there is not even a kind byte.
    EmptyFrame,
    /// A kind byte this version does not define.
    UnknownKind(u8),
    /// A known kind whose body does not parse.
    Malformed {
        /// The frame's kind.
        kind: FrameKind,
        /// What is wrong with the body.
        error: BodyError,
    },
}

impl DecodeError {
    /// The error code to send in the ERROR frame before closing.
    pub fn code(&self) -> Code {
        match self {
            DecodeError::FrameTooLarge { .. } => Code::FRAME_TOO_LARGE,
            DecodeError::EmptyFrame | DecodeError::Malformed { .. } => Code::MALFORMED_FRAME,
            DecodeError::UnknownKind(_) => Code::UNKNOWN_FRAME_KIND,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame length {len} exceeds the maximum {max}")
            }
            DecodeError::EmptyFrame => f.write_str("frame length 0 (no kind byte)"),
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            DecodeError::Malformed { kind, error } => write!(f, "malformed {kind} frame: {error}"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Waiting for a length prefix.
    Head,
    /// Prefix consumed; waiting for this many bytes (kind + body).
    Data(usize),
    /// A previous call failed; the stream is unusable.
    Failed(DecodeError),
}

/// A decoded frame lent by [`Decoder::decode_with`]: data-path frames borrow the receive
/// buffer; handshake and close frames arrive owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    /// PING with its value.
    Ping(u64),
    /// PONG with its value.
    Pong(u64),
    /// ACK of a message id.
    Ack(u64),
    /// DATA payload.
    Data(&'a [u8]),
    /// MESSAGE with its id and payload.
    Message {
        /// Sender-chosen id.
        id: u64,
        /// Application bytes.
        payload: &'a [u8],
    },
    /// HELLO, WELCOME, REJECT, GOAWAY or ERROR (copied out; these are rare).
    Control(Frame),
}

impl FrameRef<'_> {
    /// The owned equivalent (copies a borrowed payload).
    pub fn to_frame(&self) -> Frame {
        self.clone().into_frame(Bytes::copy_from_slice)
    }

    /// The owned equivalent, with each borrowed payload turned into `Bytes` by `own`: a
    /// copy, or a slice of a buffer the caller reuses.
    pub fn into_frame(self, mut own: impl FnMut(&[u8]) -> Bytes) -> Frame {
        match self {
            FrameRef::Ping(v) => Frame::Ping(v),
            FrameRef::Pong(v) => Frame::Pong(v),
            FrameRef::Ack(v) => Frame::Ack(v),
            FrameRef::Data(p) => Frame::Data(own(p)),
            FrameRef::Message { id, payload } => Frame::Message {
                id,
                payload: own(payload),
            },
            FrameRef::Control(f) => f,
        }
    }
}

/// Incremental frame decoder: the state of one byte stream between reads (a stream in the
/// middle of a frame needs its own; between frames, any decoder with the same limit will
/// do). It holds no buffer of its own.
#[derive(Clone, Debug)]
pub struct Decoder {
    max_frame_len: u32,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    /// A decoder accepting length prefixes from 1 up to `max_frame_len`.
    pub fn new(max_frame_len: u32) -> Decoder {
        Decoder {
            max_frame_len,
            state: State::Head,
        }
    }

    /// The largest accepted length prefix.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Whether the decoder sits between frames (no partial frame consumed from the buffer).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Takes the next complete frame from the front of `buf`, as an owned [`Frame`] whose
    /// payload shares `buf`'s allocation.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (append more bytes and call
    /// again), `Ok(Some(frame))` for each complete frame (call again until `None`), and an
    /// error when the stream is invalid; after an error every later call returns it again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((kind, len)) = self.next_frame(buf)? else {
            return Ok(None);
        };
        let parsed = match kind {
            // Fixed-size bodies are read in place: no reference-counted split needed.
            FrameKind::Ping | FrameKind::Pong | FrameKind::Ack => {
                let value = frame::exact_u64(&buf[1..len]);
                buf.advance(len);
                value.map(|v| match kind {
                    FrameKind::Ping => Frame::Ping(v),
                    FrameKind::Pong => Frame::Pong(v),
                    _ => Frame::Ack(v),
                })
            }
            _ => {
                let mut body = buf.split_to(len).freeze();
                body.advance(1);
                Frame::parse_body(kind, body)
            }
        };
        parsed
            .map(Some)
            .map_err(|error| self.fail(DecodeError::Malformed { kind, error }))
    }

    /// Like [`decode`](Self::decode), but lends the frame to `f` as a [`FrameRef`] borrowing
    /// `buf`, then removes it from `buf`.
    ///
    /// Data-path frames (PING, PONG, ACK, DATA, MESSAGE) cost no allocation and no reference
    /// count, so a reader can reuse one receive buffer for every connection; the rare
    /// handshake and close frames are copied out as an owned [`Frame`].
    pub fn decode_with<R>(
        &mut self,
        buf: &mut BytesMut,
        f: impl FnOnce(FrameRef<'_>) -> R,
    ) -> Result<Option<R>, DecodeError> {
        let Some((kind, len)) = self.next_frame(buf)? else {
            return Ok(None);
        };
        match parse_ref(kind, &buf[1..len]) {
            Ok(frame) => {
                let out = f(frame);
                buf.advance(len);
                Ok(Some(out))
            }
            Err(error) => Err(self.fail(DecodeError::Malformed { kind, error })),
        }
    }

    /// Decodes the complete frame at the front of `input`, a plain slice, and says how many
    /// bytes it took: for a reader that decodes straight from where the bytes were read,
    /// with no copy into a buffer and no buffer bookkeeping per frame.
    ///
    /// For use between frames ([`is_idle`](Self::is_idle)). `Ok(None)` means `input` does
    /// not hold a whole frame: nothing was consumed, and the rest goes to a buffer for
    /// [`decode`](Self::decode) (which is also all a decoder in the middle of a frame
    /// returns here). Errors are those of `decode`, and leave the decoder failed as well.
    pub fn decode_slice<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<Option<(FrameRef<'a>, usize)>, DecodeError> {
        match self.state {
            State::Failed(e) => return Err(e),
            State::Data(_) => return Ok(None),
            State::Head => {}
        }
        let Some((head, rest)) = input.split_first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = self.check_len(u32::from_be_bytes(*head))?;
        let Some(frame) = rest.get(..len) else {
            return Ok(None);
        };
        let kind = self.kind_of(frame[0])?;
        match parse_ref(kind, &frame[1..]) {
            Ok(parsed) => Ok(Some((parsed, HEADER_LEN + len))),
            Err(error) => Err(self.fail(DecodeError::Malformed { kind, error })),
        }
    }

    /// Checks a length prefix: at least the kind byte, at most the configured maximum.
    #[inline]
    fn check_len(&mut self, len: u32) -> Result<usize, DecodeError> {
        if len == 0 {
            return Err(self.fail(DecodeError::EmptyFrame));
        }
        if len > self.max_frame_len {
            return Err(self.fail(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            }));
        }
        // Lossless: `len` is a u32 and usize is at least 32 bits on supported targets.
        Ok(len as usize)
    }

    #[inline]
    fn kind_of(&mut self, byte: u8) -> Result<FrameKind, DecodeError> {
        FrameKind::from_byte(byte).ok_or_else(|| self.fail(DecodeError::UnknownKind(byte)))
    }

    /// Advances the Head/Data state machine. On `Some((kind, len))` the first `len` bytes of
    /// `buf` are the kind byte and the body of a complete frame (the prefix is consumed).
    fn next_frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(FrameKind, usize)>, DecodeError> {
        let len = match self.state {
            State::Failed(e) => return Err(e),
            State::Data(len) => len,
            State::Head => {
                let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let len = self.check_len(u32::from_be_bytes(*head))?;
                buf.advance(HEADER_LEN);
                self.state = State::Data(len);
                len
            }
        };
        if buf.len() < len {
            // Bounded by `max_frame_len`, checked above before anything was reserved.
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        self.state = State::Head;
        self.kind_of(buf[0]).map(|kind| Some((kind, len)))
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.state = State::Failed(e);
        e
    }
}

/// Parses the body of a frame of `kind` as borrowed where the kind allows it.
#[inline]
fn parse_ref(kind: FrameKind, body: &[u8]) -> Result<FrameRef<'_>, BodyError> {
    match kind {
        FrameKind::Ping => frame::exact_u64(body).map(FrameRef::Ping),
        FrameKind::Pong => frame::exact_u64(body).map(FrameRef::Pong),
        FrameKind::Ack => frame::exact_u64(body).map(FrameRef::Ack),
        FrameKind::Data => Ok(FrameRef::Data(body)),
        FrameKind::Message => {
            frame::split_u64(body).map(|(id, payload)| FrameRef::Message { id, payload })
        }
        _ => Frame::parse_body(kind, Bytes::copy_from_slice(body)).map(FrameRef::Control),
    }
}

/// Why a frame could not be encoded. Nothing is written to the buffer in that case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The frame's length prefix would exceed the maximum frame length.
    FrameTooLarge {
        /// The length prefix the frame would need.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A HELLO identity longer than [`frame::MAX_IDENTITY_LEN`] bytes.
    IdentityTooLong(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::FrameTooLarge { len, max } => {
                write!(f, "frame length {len} exceeds the maximum {max}")
            }
            EncodeError::IdentityTooLong(n) => write!(
                f,
                "identity of {n} bytes exceeds {} bytes",
                frame::MAX_IDENTITY_LEN
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Frame encoder writing straight into the caller's outbound [`BytesMut`].
#[derive(Clone, Copy, Debug)]
pub struct Encoder {
    max_frame_len: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Encoder {
    /// An encoder refusing frames whose length prefix would exceed `max_frame_len` (use the
    /// peer's limit, so a frame is refused here rather than by the peer).
    pub fn new(max_frame_len: u32) -> Encoder {
        Encoder { max_frame_len }
    }

    /// The largest length prefix this encoder writes.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends `frame` to `dst`, reserving once for the whole frame.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        // The data path first, each kind written directly.
        match frame {
            Frame::Ping(v) | Frame::Pong(v) | Frame::Ack(v) => {
                // Thirteen bytes built on the stack, one append.
                let len = self.check(1 + 8)?;
                let mut bytes = [0; HEADER_LEN + 1 + 8];
                bytes[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
                bytes[HEADER_LEN] = frame.kind() as u8;
                bytes[HEADER_LEN + 1..].copy_from_slice(&v.to_be_bytes());
                dst.extend_from_slice(&bytes);
                return Ok(());
            }
            Frame::Data(payload) => return self.encode_data(payload, dst),
            Frame::Message { id, payload } => return self.encode_message(*id, payload, dst),
            _ => {}
        }
        if let Frame::Hello(h) = frame {
            if h.identity.len() > frame::MAX_IDENTITY_LEN {
                return Err(EncodeError::IdentityTooLong(h.identity.len()));
            }
        }
        let len = self.check(frame.frame_len())?;
        dst.reserve(HEADER_LEN + len as usize);
        dst.put_u32(len);
        dst.put_u8(frame.kind() as u8);
        frame.put_body(dst);
        Ok(())
    }

    /// Appends a MESSAGE frame from a borrowed payload, without building a [`Frame`].
    #[inline]
    pub fn encode_message(
        &self,
        id: u64,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let len = self.check(1 + 8 + payload.len())?;
        dst.reserve(HEADER_LEN + len as usize);
        dst.put_u32(len);
        dst.put_u8(FrameKind::Message as u8);
        dst.put_u64(id);
        dst.put_slice(payload);
        Ok(())
    }

    /// Appends a DATA frame from a borrowed payload, without building a [`Frame`].
    #[inline]
    pub fn encode_data(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.check(1 + payload.len())?;
        dst.reserve(HEADER_LEN + len as usize);
        dst.put_u32(len);
        dst.put_u8(FrameKind::Data as u8);
        dst.put_slice(payload);
        Ok(())
    }

    #[inline]
    fn check(&self, len: usize) -> Result<u32, EncodeError> {
        match u32::try_from(len) {
            Ok(l) if l <= self.max_frame_len => Ok(l),
            _ => Err(EncodeError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Hello, Reason, Text, Welcome, PROTOCOL_VERSION};
    use proptest::prelude::*;

    fn one_of_each() -> Vec<Frame> {
        vec![
            Frame::Hello(Box::new(Hello {
                version: PROTOCOL_VERSION,
                instance: 0x0102_0304_0506_0708,
                attempt: 3,
                identity: Text::from("alice"),
                token: Bytes::from_static(b"secret"),
            })),
            Frame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                session: 42,
                ping_interval_ms: 10_000,
                idle_timeout_ms: 30_000,
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
            }),
            Frame::Reject(Reason::new(Code::UNSUPPORTED_VERSION, "want 1")),
            Frame::Ping(u64::MAX),
            Frame::Pong(0),
            Frame::Data(Bytes::from_static(b"hello world")),
            Frame::Data(Bytes::new()),
            Frame::Message {
                id: 7,
                payload: Bytes::from_static(b"payload"),
            },
            Frame::Ack(7),
            Frame::GoAway(Reason::new(Code::SHUTTING_DOWN, "")),
            Frame::Error(Reason::new(Code(999), "unknown codes pass through")),
        ]
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let enc = Encoder::default();
        let mut buf = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut buf).expect("test frames fit");
        }
        buf
    }

    fn decode_all(dec: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Frame>, DecodeError> {
        let mut out = Vec::new();
        while let Some(f) = dec.decode(buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_every_kind() {
        let frames = one_of_each();
        let kinds: std::collections::HashSet<_> = frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds.len(), 10, "every frame kind is covered");
        for f in &frames {
            let mut buf = encode_all(std::slice::from_ref(f));
            assert_eq!(buf.len(), f.encoded_len());
            let mut dec = Decoder::default();
            assert_eq!(dec.decode(&mut buf), Ok(Some(f.clone())));
            assert!(buf.is_empty());
            assert!(dec.is_idle());
        }
    }

    #[test]
    fn exact_bytes_of_a_ping() {
        let buf = encode_all(&[Frame::Ping(0x0102_0304_0506_0708)]);
        assert_eq!(&buf[..], &[0, 0, 0, 9, 0x04, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn hello_example_from_protocol_doc() {
        // docs/PROTOCOL.md, section 3.1, byte for byte.
        let wire = [
            0x00, 0x00, 0x00, 0x13, 0x01, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
            0x08, 0x00, 0x00, 0x00, 0x00, 0x03, 0x62, 0x6f, 0x62,
        ];
        let hello = Frame::Hello(Box::new(Hello {
            version: 1,
            instance: 0x0102_0304_0506_0708,
            attempt: 0,
            identity: Text::from("bob"),
            token: Bytes::new(),
        }));
        assert_eq!(&encode_all(std::slice::from_ref(&hello))[..], &wire[..]);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(Decoder::default().decode(&mut buf), Ok(Some(hello)));
    }

    #[test]
    fn borrowed_encoders_match_frame_encoding() {
        let enc = Encoder::default();
        let mut a = BytesMut::new();
        enc.encode_message(9, b"xyz", &mut a).unwrap();
        enc.encode_data(b"abc", &mut a).unwrap();
        let b = encode_all(&[
            Frame::Message {
                id: 9,
                payload: Bytes::from_static(b"xyz"),
            },
            Frame::Data(Bytes::from_static(b"abc")),
        ]);
        assert_eq!(a, b);
    }

    #[test]
    fn partial_input_needs_more() {
        let full = encode_all(&one_of_each());
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in full.iter() {
            buf.put_u8(b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, one_of_each());
    }

    #[test]
    fn oversize_length_rejected_before_reserving() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32(0xFFFF_FFF0);
        buf.put_u8(FrameKind::Data as u8);
        let cap = buf.capacity();
        let mut dec = Decoder::new(1024);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                len: 0xFFFF_FFF0,
                max: 1024
            }
        );
        assert_eq!(err.code(), Code::FRAME_TOO_LARGE);
        assert_eq!(buf.capacity(), cap, "no reservation for a refused frame");
        // The decoder stays failed.
        assert_eq!(dec.decode(&mut buf), Err(err));
    }

    #[test]
    fn max_len_is_inclusive() {
        let enc = Encoder::new(1 + 100);
        let mut buf = BytesMut::new();
        enc.encode_data(&[7u8; 100], &mut buf).unwrap();
        assert_eq!(
            enc.encode_data(&[7u8; 101], &mut buf),
            Err(EncodeError::FrameTooLarge { len: 102, max: 101 })
        );
        let mut dec = Decoder::new(101);
        assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Data(p))) if p.len() == 100));
    }

    #[test]
    fn typed_errors() {
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![0, 0, 0, 0], DecodeError::EmptyFrame),
            (vec![0, 0, 0, 1, 0x7F], DecodeError::UnknownKind(0x7F)),
            (vec![0, 0, 0, 1, 0x00], DecodeError::UnknownKind(0x00)),
            (
                vec![0, 0, 0, 2, 0x04, 1],
                DecodeError::Malformed {
                    kind: FrameKind::Ping,
                    error: BodyError::TooShort,
                },
            ),
            (
                vec![0, 0, 0, 10, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                DecodeError::Malformed {
                    kind: FrameKind::Ack,
                    error: BodyError::TooLong,
                },
            ),
            (
                vec![0, 0, 0, 5, 0x0A, 0, 1, 0xFF, 0xFE],
                DecodeError::Malformed {
                    kind: FrameKind::Error,
                    error: BodyError::InvalidUtf8,
                },
            ),
            (
                // HELLO whose identity length points past the body.
                vec![
                    0, 0, 0, 16, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
                ],
                DecodeError::Malformed {
                    kind: FrameKind::Hello,
                    error: BodyError::TooShort,
                },
            ),
        ];
        for (bytes, want) in cases {
            let mut dec = Decoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(dec.decode(&mut buf), Err(want), "input {bytes:?}");
        }
    }

    #[test]
    fn identity_too_long_is_refused_by_encoder() {
        let hello = Frame::Hello(Box::new(Hello {
            version: 1,
            instance: 0,
            attempt: 0,
            identity: Text::from("x".repeat(256)),
            token: Bytes::new(),
        }));
        let mut buf = BytesMut::new();
        assert_eq!(
            Encoder::default().encode(&hello, &mut buf),
            Err(EncodeError::IdentityTooLong(256))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn payloads_are_not_copied() {
        let mut buf = encode_all(&[Frame::Data(Bytes::from_static(b"0123456789"))]);
        let start = buf.as_ptr() as usize;
        let Some(Frame::Data(p)) = Decoder::default().decode(&mut buf).unwrap() else {
            panic!("expected DATA");
        };
        assert_eq!(p.as_ptr() as usize, start + HEADER_LEN + 1);
    }

    fn text() -> impl Strategy<Value = Text> {
        ".{0,20}".prop_map(Text::from)
    }

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn reason() -> impl Strategy<Value = Reason> {
        (any::<u16>(), text()).prop_map(|(c, text)| Reason {
            code: Code(c),
            text,
        })
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u16>(),
                any::<u64>(),
                any::<u32>(),
                "[a-z0-9]{0,40}",
                bytes(32)
            )
                .prop_map(|(version, instance, attempt, id, token)| {
                    Frame::Hello(Box::new(Hello {
                        version,
                        instance,
                        attempt,
                        identity: Text::from(id),
                        token,
                    }))
                }),
            any::<(u16, u64, u32, u32, u32)>().prop_map(|(v, s, p, i, m)| {
                Frame::Welcome(Welcome {
                    version: v,
                    session: s,
                    ping_interval_ms: p,
                    idle_timeout_ms: i,
                    max_frame_len: m,
                })
            }),
            reason().prop_map(Frame::Reject),
            any::<u64>().prop_map(Frame::Ping),
            any::<u64>().prop_map(Frame::Pong),
            bytes(300).prop_map(Frame::Data),
            (any::<u64>(), bytes(300)).prop_map(|(id, payload)| Frame::Message { id, payload }),
            any::<u64>().prop_map(Frame::Ack),
            reason().prop_map(Frame::GoAway),
            reason().prop_map(Frame::Error),
        ]
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let wire = encode_all(&frames);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut dec = Decoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                buf.extend_from_slice(&wire[w[0]..w[1]]);
                got.extend(decode_all(&mut dec, &mut buf).unwrap());
            }
            prop_assert_eq!(got, frames);
            prop_assert!(buf.is_empty());
            prop_assert!(dec.is_idle());
        }

        #[test]
        fn borrowed_and_owned_paths_agree(
            frames in proptest::collection::vec(arb_frame(), 0..12),
            garbage in proptest::collection::vec(any::<u8>(), 0..40),
            chunk in 1usize..50,
        ) {
            // Valid frames followed by garbage: both paths see the same frames, then the
            // same error (or the same need for more bytes).
            let mut wire = encode_all(&frames);
            wire.extend_from_slice(&garbage);
            let (mut owned_dec, mut lent_dec) = (Decoder::new(300), Decoder::new(300));
            let (mut owned_buf, mut lent_buf) = (BytesMut::new(), BytesMut::new());
            let (mut owned, mut lent) = (Vec::new(), Vec::new());
            let (mut owned_err, mut lent_err) = (None, None);
            // The engine's way: frames straight from each read while between frames, a
            // buffer only for what a read leaves partial.
            let (mut mixed_dec, mut mixed_buf) = (Decoder::new(300), BytesMut::new());
            let (mut mixed, mut mixed_err) = (Vec::new(), None);
            for piece in wire.chunks(chunk) {
                if mixed_err.is_none() {
                    let mut at = 0;
                    if mixed_buf.is_empty() && mixed_dec.is_idle() {
                        loop {
                            match mixed_dec.decode_slice(&piece[at..]) {
                                Ok(Some((f, used))) => {
                                    mixed.push(f.to_frame());
                                    at += used;
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    mixed_err = Some(e);
                                    break;
                                }
                            }
                        }
                    }
                    mixed_buf.extend_from_slice(&piece[at..]);
                    while mixed_err.is_none() && !mixed_buf.is_empty() {
                        match mixed_dec.decode(&mut mixed_buf) {
                            Ok(Some(f)) => mixed.push(f),
                            Ok(None) => break,
                            Err(e) => mixed_err = Some(e),
                        }
                    }
                }
                owned_buf.extend_from_slice(piece);
                lent_buf.extend_from_slice(piece);
                while owned_err.is_none() {
                    match owned_dec.decode(&mut owned_buf) {
                        Ok(Some(f)) => owned.push(f),
                        Ok(None) => break,
                        Err(e) => owned_err = Some(e),
                    }
                }
                while lent_err.is_none() {
                    match lent_dec.decode_with(&mut lent_buf, |f| f.to_frame()) {
                        Ok(Some(f)) => lent.push(f),
                        Ok(None) => break,
                        Err(e) => lent_err = Some(e),
                    }
                }
            }
            prop_assert_eq!(&owned, &lent);
            prop_assert_eq!(owned_err, lent_err);
            prop_assert_eq!(&owned, &mixed);
            prop_assert_eq!(owned_err, mixed_err);
            if owned_err.is_none() {
                prop_assert_eq!(owned_buf, lent_buf);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
        ) {
            let max = 256;
            let mut dec = Decoder::new(max);
            let mut buf = BytesMut::new();
            let mut reencoded = BytesMut::new();
            let enc = Encoder::new(max);
            let mut failed = false;
            for piece in data.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(f)) => enc.encode(&f, &mut reencoded).unwrap(),
                        Ok(None) => break,
                        Err(_) => { failed = true; break; }
                    }
                }
                // Growth follows the bytes fed in, never a length prefix (which may claim GiBs).
                prop_assert!(buf.capacity() <= 2 * (512 + max as usize + HEADER_LEN));
                if failed { break; }
            }
            // Whatever decoded re-encodes to exactly the bytes it came from.
            prop_assert_eq!(&reencoded[..], &data[..reencoded.len()]);
        }
    }
}
