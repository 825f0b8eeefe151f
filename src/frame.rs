//! Frames of wire protocol v1: what they carry, and how each body is laid out.
//!
//! `docs/PROTOCOL.md` is the normative description; this module is its executable form.
//! Every frame on the wire is
//!
//! ```text
//! +----------------+--------+----------------------+
//! | length: u32 BE | kind:u8| body: length-1 bytes |
//! +----------------+--------+----------------------+
//! ```
//!
//! where `length` counts the kind byte and the body. Body parsing is strict: a body that is
//! too short, too long or carries invalid UTF-8 where text is expected is rejected, so every
//! frame has exactly one encoding (the fuzz targets rely on that).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// The protocol version this crate speaks, sent in [`Hello`] and [`Welcome`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes of the length prefix in front of every frame.
pub const HEADER_LEN: usize = 4;

/// Default largest accepted value of the length prefix (kind byte + body): 64 KiB.
///
/// Large enough for any chat or push message, small enough that a hostile length prefix
/// cannot make a connection reserve more than this before it is refused.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024;

/// The smallest frame limit that works: a HELLO with a short identity, a PING or a WELCOME
/// must fit. Configurations below it are refused, and a client treats a smaller limit
/// announced in WELCOME as this one.
pub const MIN_FRAME_LIMIT: u32 = 64;

/// Whether a DATA (`with_id: false`) or MESSAGE (`with_id: true`) frame carrying `payload`
/// bytes has a length prefix of at most `limit` (the prefix counts the kind byte, the id
/// and the payload).
pub fn payload_fits(limit: u32, payload: usize, with_id: bool) -> bool {
    let fixed = 1 + if with_id { 8 } else { 0 };
    payload
        .checked_add(fixed)
        .is_some_and(|len| len <= limit as usize)
}

/// Longest identity a [`Hello`] can carry, in bytes (its length travels in one byte).
pub const MAX_IDENTITY_LEN: usize = u8::MAX as usize;

/// The kind byte that follows the length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client opens the handshake.
    Hello = 0x01,
    /// Server accepts the handshake.
    Welcome = 0x02,
    /// Server refuses the handshake, then closes.
    Reject = 0x03,
    /// Heartbeat request carrying a u64.
    Ping = 0x04,
    /// Heartbeat answer echoing the ping's u64.
    Pong = 0x05,
    /// Opaque application bytes, fire and forget.
    Data = 0x06,
    /// Application bytes with an id, acknowledged by the receiver.
    Message = 0x07,
    /// Acknowledges a [`FrameKind::Message`] by id.
    Ack = 0x08,
    /// The sender is going away; the receiver should move elsewhere.
    GoAway = 0x09,
    /// The sender saw a fatal error and closes the connection.
    Error = 0x0A,
}

impl FrameKind {
    /// Maps a kind byte to its kind; `None` for bytes this version does not define.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::Welcome,
            0x03 => FrameKind::Reject,
            0x04 => FrameKind::Ping,
            0x05 => FrameKind::Pong,
            0x06 => FrameKind::Data,
            0x07 => FrameKind::Message,
            0x08 => FrameKind::Ack,
            0x09 => FrameKind::GoAway,
            0x0A => FrameKind::Error,
            _ => return None,
        })
    }

    /// Upper-case name as used in `docs/PROTOCOL.md` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "HELLO",
            FrameKind::Welcome => "WELCOME",
            FrameKind::Reject => "REJECT",
            FrameKind::Ping => "PING",
            FrameKind::Pong => "PONG",
            FrameKind::Data => "DATA",
            FrameKind::Message => "MESSAGE",
            FrameKind::Ack => "ACK",
            FrameKind::GoAway => "GOAWAY",
            FrameKind::Error => "ERROR",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reason code carried by REJECT, GOAWAY and ERROR frames.
///
/// Kept as the raw `u16` so that codes added by later versions pass through unchanged;
/// receivers treat an unknown code like [`Code::INTERNAL_ERROR`] for policy purposes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u16);

impl Code {
    /// Orderly: graceful shutdown (GOAWAY) or a close with nothing wrong.
    pub const NO_ERROR: Code = Code(0);
    /// A frame arrived that the receiver's state does not allow.
    pub const PROTOCOL_VIOLATION: Code = Code(1);
    /// A length prefix exceeded the receiver's maximum frame length.
    pub const FRAME_TOO_LARGE: Code = Code(2);
    /// A kind byte this version does not define.
    pub const UNKNOWN_FRAME_KIND: Code = Code(3);
    /// A body of the wrong size or with invalid UTF-8 text.
    pub const MALFORMED_FRAME: Code = Code(4);
    /// The handshake did not complete before the deadline.
    pub const HANDSHAKE_TIMEOUT: Code = Code(5);
    /// Nothing was read from the peer for the read-idle period.
    pub const IDLE_TIMEOUT: Code = Code(6);
    /// The peer does not read: outbound bytes passed the per-connection cap.
    pub const SLOW_CONSUMER: Code = Code(7);
    /// The HELLO's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: Code = Code(8);
    /// The application refused the HELLO's credentials.
    pub const AUTH_FAILED: Code = Code(9);
    /// The server is at its connection limit.
    pub const SERVER_FULL: Code = Code(10);
    /// A newer login with the same identity replaced this session (do not reconnect).
    pub const REPLACED: Code = Code(11);
    /// A newer session with the same identity is live; this login is stale.
    pub const STALE_SESSION: Code = Code(12);
    /// The identity is empty or otherwise unacceptable.
    pub const INVALID_IDENTITY: Code = Code(13);
    /// The server is shutting down (GOAWAY) or refusing new sessions while it does.
    pub const SHUTTING_DOWN: Code = Code(14);
    /// Anything else, including codes unknown to the receiver.
    pub const INTERNAL_ERROR: Code = Code(15);

    /// Upper-case name of a known code, or `None`.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NO_ERROR",
            1 => "PROTOCOL_VIOLATION",
            2 => "FRAME_TOO_LARGE",
            3 => "UNKNOWN_FRAME_KIND",
            4 => "MALFORMED_FRAME",
            5 => "HANDSHAKE_TIMEOUT",
            6 => "IDLE_TIMEOUT",
            7 => "SLOW_CONSUMER",
            8 => "UNSUPPORTED_VERSION",
            9 => "AUTH_FAILED",
            10 => "SERVER_FULL",
            11 => "REPLACED",
            12 => "STALE_SESSION",
            13 => "INVALID_IDENTITY",
            14 => "SHUTTING_DOWN",
            15 => "INTERNAL_ERROR",
            _ => return None,
        })
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "CODE({})", self.0),
        }
    }
}

/// UTF-8 text held in [`Bytes`], validated once when made, so it can point into a received
/// buffer without a copy.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// Wraps bytes that must be valid UTF-8.
    pub fn new(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// Text from a static string, without allocating.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// A copy in an allocation of its own, exactly as long as the text, so that keeping it
    /// does not keep a larger buffer (such as the receive buffer it was parsed from) alive.
    pub fn compact(&self) -> Text {
        Text(Bytes::copy_from_slice(&self.0))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Validated in every constructor; the fallback is unreachable and avoids a panic path.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::from_static(s)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HELLO: the client's first frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// Chosen at random once per client process; tells a reconnect of the same client from a
    /// second client using the same identity.
    pub instance: u64,
    /// Counts the client's connection attempts, starting at 0 and growing by one per new
    /// connection, so a server can tell a stale reconnect from the live session.
    pub attempt: u32,
    /// Who the client is (a user name, device id...): UTF-8, at most 255 bytes.
    pub identity: Text,
    /// Credentials for the application's authentication hook; empty when unused.
    pub token: Bytes,
}

impl Hello {
    /// The length prefix's value for a HELLO with an empty identity and token: the kind
    /// byte and the fixed fields. Add the identity's and token's lengths for any other.
    pub const FIXED_LEN: usize = 1 + HELLO_FIXED;
}

/// WELCOME: the server accepted the handshake and tells the heartbeat contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the server will speak on this connection.
    pub version: u16,
    /// Server-assigned id of this session, for logs on both sides.
    pub session: u64,
    /// The client should send PING after this many milliseconds without writing.
    pub ping_interval_ms: u32,
    /// The server closes a connection it has read nothing from for this many milliseconds.
    pub idle_timeout_ms: u32,
    /// Largest length prefix the server accepts.
    pub max_frame_len: u32,
}

/// The body of REJECT, GOAWAY and ERROR: a reason code and human-readable text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// Machine-readable reason.
    pub code: Code,
    /// Human-readable detail for logs; may be empty.
    pub text: Text,
}

impl Reason {
    /// A reason from a code and static text.
    pub const fn new(code: Code, text: &'static str) -> Reason {
        Reason {
            code,
            text: Text::from_static(text),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.text.is_empty()) {
            (code, true) => write!(f, "{code}"),
            // Nothing went wrong: the text says all there is to say.
            (Code::NO_ERROR, false) => f.write_str(self.text.as_str()),
            (code, false) => write!(f, "{code}: {}", self.text),
        }
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`]; boxed because it is rare and large, and keeps every `Frame` small.
    Hello(Box<Hello>),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// Handshake refused.
    Reject(Reason),
    /// Heartbeat request.
    Ping(u64),
    /// Heartbeat answer; carries the ping's value.
    Pong(u64),
    /// Opaque application bytes.
    Data(Bytes),
    /// Reliable application bytes.
    Message {
        /// Sender-chosen id, unique per sender instance and direction.
        id: u64,
        /// Application bytes.
        payload: Bytes,
    },
    /// Acknowledges the message with this id.
    Ack(u64),
    /// The sender is leaving; see the code for why.
    GoAway(Reason),
    /// Fatal error; the sender closes after it.
    Error(Reason),
}

/// Why a frame body could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body is shorter than its fixed fields.
    TooShort,
    /// The body is longer than a fixed-size kind allows.
    TooLong,
    /// Text that must be UTF-8 is not.
    InvalidUtf8,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::TooShort => "body too short",
            BodyError::TooLong => "body too long",
            BodyError::InvalidUtf8 => "text is not valid UTF-8",
        })
    }
}

// Fixed body sizes, one place for the encoder and the parser.
const U64_BODY: usize = 8;
const HELLO_FIXED: usize = 2 + 8 + 4 + 1;
const WELCOME_BODY: usize = 2 + 8 + 4 + 4 + 4;
const REASON_FIXED: usize = 2;
const MESSAGE_FIXED: usize = 8;

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Reject(_) => FrameKind::Reject,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::Pong(_) => FrameKind::Pong,
            Frame::Data(_) => FrameKind::Data,
            Frame::Message { .. } => FrameKind::Message,
            Frame::Ack(_) => FrameKind::Ack,
            Frame::GoAway(_) => FrameKind::GoAway,
            Frame::Error(_) => FrameKind::Error,
        }
    }

    /// Length of the body alone (what follows the kind byte).
    pub fn body_len(&self) -> usize {
        match self {
            Frame::Hello(h) => HELLO_FIXED + h.identity.len() + h.token.len(),
            Frame::Welcome(_) => WELCOME_BODY,
            Frame::Reject(r) | Frame::GoAway(r) | Frame::Error(r) => REASON_FIXED + r.text.len(),
            Frame::Ping(_) | Frame::Pong(_) | Frame::Ack(_) => U64_BODY,
            Frame::Data(p) => p.len(),
            Frame::Message { payload, .. } => MESSAGE_FIXED + payload.len(),
        }
    }

    /// The value of the length prefix this frame encodes to: kind byte plus body.
    pub fn frame_len(&self) -> usize {
        1 + self.body_len()
    }

    /// Bytes this frame occupies on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.frame_len()
    }

    /// Appends the body (not the prefix or kind) to `dst`.
    ///
    /// A HELLO identity longer than [`MAX_IDENTITY_LEN`] cannot be represented; the
    /// [`Encoder`](crate::codec::Encoder) refuses such a frame before calling this.
    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        match self {
            Frame::Hello(h) => {
                dst.put_u16(h.version);
                dst.put_u64(h.instance);
                dst.put_u32(h.attempt);
                // Checked by the encoder; `as` cannot truncate here.
                dst.put_u8(h.identity.len() as u8);
                dst.put_slice(h.identity.as_bytes());
                dst.put_slice(&h.token);
            }
            Frame::Welcome(w) => {
                dst.put_u16(w.version);
                dst.put_u64(w.session);
                dst.put_u32(w.ping_interval_ms);
                dst.put_u32(w.idle_timeout_ms);
                dst.put_u32(w.max_frame_len);
            }
            Frame::Reject(r) | Frame::GoAway(r) | Frame::Error(r) => {
                dst.put_u16(r.code.0);
                dst.put_slice(r.text.as_bytes());
            }
            Frame::Ping(v) | Frame::Pong(v) | Frame::Ack(v) => dst.put_u64(*v),
            Frame::Data(p) => dst.put_slice(p),
            Frame::Message { id, payload } => {
                dst.put_u64(*id);
                dst.put_slice(payload);
            }
        }
    }

    /// Parses a body of a known kind. `body` is exactly the bytes after the kind byte.
    pub fn parse_body(kind: FrameKind, mut body: Bytes) -> Result<Frame, BodyError> {
        match kind {
            FrameKind::Ping => Ok(Frame::Ping(exact_u64(&body)?)),
            FrameKind::Pong => Ok(Frame::Pong(exact_u64(&body)?)),
            FrameKind::Ack => Ok(Frame::Ack(exact_u64(&body)?)),
            FrameKind::Data => Ok(Frame::Data(body)),
            FrameKind::Message => {
                let (id, _) = split_u64(&body)?;
                body.advance(MESSAGE_FIXED);
                Ok(Frame::Message { id, payload: body })
            }
            FrameKind::Reject => Ok(Frame::Reject(parse_reason(body)?)),
            FrameKind::GoAway => Ok(Frame::GoAway(parse_reason(body)?)),
            FrameKind::Error => Ok(Frame::Error(parse_reason(body)?)),
            FrameKind::Welcome => {
                need(&body, WELCOME_BODY)?;
                if body.len() > WELCOME_BODY {
                    return Err(BodyError::TooLong);
                }
                Ok(Frame::Welcome(Welcome {
                    version: body.get_u16(),
                    session: body.get_u64(),
                    ping_interval_ms: body.get_u32(),
                    idle_timeout_ms: body.get_u32(),
                    max_frame_len: body.get_u32(),
                }))
            }
            FrameKind::Hello => {
                need(&body, HELLO_FIXED)?;
                let version = body.get_u16();
                let instance = body.get_u64();
                let attempt = body.get_u32();
                let identity_len = usize::from(body.get_u8());
                need(&body, identity_len)?;
                let identity = body.split_to(identity_len);
                let identity = Text::new(identity).map_err(|_| BodyError::InvalidUtf8)?;
                Ok(Frame::Hello(Box::new(Hello {
                    version,
                    instance,
                    attempt,
                    identity,
                    token: body,
                })))
            }
        }
    }
}

fn need(body: &Bytes, len: usize) -> Result<(), BodyError> {
    if body.len() < len {
        Err(BodyError::TooShort)
    } else {
        Ok(())
    }
}

/// Reads a body that must be exactly one big-endian u64.
pub(crate) fn exact_u64(body: &[u8]) -> Result<u64, BodyError> {
    match <[u8; U64_BODY]>::try_from(body) {
        Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
        Err(_) if body.len() < U64_BODY => Err(BodyError::TooShort),
        Err(_) => Err(BodyError::TooLong),
    }
}

/// Splits a body into a leading big-endian u64 and the rest.
pub(crate) fn split_u64(body: &[u8]) -> Result<(u64, &[u8]), BodyError> {
    match body.split_first_chunk::<U64_BODY>() {
        Some((head, rest)) => Ok((u64::from_be_bytes(*head), rest)),
        None => Err(BodyError::TooShort),
    }
}

fn parse_reason(mut body: Bytes) -> Result<Reason, BodyError> {
    need(&body, REASON_FIXED)?;
    let code = Code(body.get_u16());
    let text = Text::new(body).map_err(|_| BodyError::InvalidUtf8)?;
    Ok(Reason { code, text })
}
