//! Sans-IO TLS for one TCP connection, built on rustls's *unbuffered* API.
//!
//! The caller owns the socket, the clock and every byte buffer. A [`Tls`]
//! value only transforms bytes:
//!
//! * [`Tls::handle_read`] takes ciphertext that arrived from the socket,
//!   appends decrypted application bytes to a caller buffer and appends TLS
//!   bytes that must be sent (handshake flights, tickets, alerts) to another
//!   caller buffer.
//! * [`Tls::encrypt`] appends encrypted records for application bytes to a
//!   caller buffer. Before the handshake has completed, the bytes are queued
//!   (bounded by [`MAX_QUEUED_PLAINTEXT`]) and are encrypted into the `out`
//!   buffer of the `handle_read` call that completes the handshake.
//! * [`Tls::close`] appends a `close_notify` alert.
//!
//! # Memory
//!
//! rustls decrypts records in place inside the buffer it is handed, so
//! `handle_read` takes the ciphertext as `&mut [u8]` and leaves it scrambled.
//! Whole records are processed directly in the caller's slice. Only bytes
//! that cannot be processed yet are copied into a buffer owned by the `Tls`:
//! the tail of a record that has not fully arrived (at most
//! [`MAX_RECORD_LEN`] bytes), plus, in the rare case of a handshake message
//! split across several records, the already received fragments of that
//! message (rustls caps handshake messages at 64 KiB; the whole buffer is
//! capped at [`MAX_PENDING_REASSEMBLY`]). The buffer is freed as soon as it
//! empties, so an idle connection holds no read or write buffer at all.
//!
//! Once the handshake is over, rustls hands the traffic keys to this crate's
//! record layer (rustls's `kernel` API, meant for handing records to the
//! kernel) and keeps only its key schedule, for KeyUpdates and a client's
//! session tickets. Records are then sealed and opened with ring's AEADs
//! directly. An idle connection holds two raw keys and that key schedule:
//! with rustls 0.23.48 and ring, a whole idle TLS connection of the engine
//! (connection, session and TLS state) measures about 1.6 KB on the server
//! side and 2.4 KB on the client side, which also keeps the server's
//! certificate, against 3.9 KB and 4.6 KB with rustls's connection kept
//! (`cargo bench --bench memory`). See [`Tls::is_handed_over`].
//!
//! # Errors and closing
//!
//! The first fatal error is returned with any alert for the peer already
//! appended to `out`; the connection is then dead and every later call
//! returns the same error. During the handshake the alert is rustls's, and
//! errors raised by this module's own limits ([`TlsError::BufferLimit`])
//! carry none: rustls offers no way to send one. After it, the record layer
//! sends its own: `record_overflow` for a record longer than TLS 1.3 allows
//! (refused from its header, before any of it is buffered), `bad_record_mac`
//! for one that fails to decrypt, `unexpected_message` or `decode_error` for
//! what may not follow a handshake. `close_notify` can only be sent once the
//! handshake is complete.
//!
//! # Protocol
//!
//! The helper configurations speak TLS 1.3 only (rustls's `tls12` feature is
//! not enabled), prefer X25519, and resume sessions from tickets.
//!
//! # Early data
//!
//! The configurations built by [`server_config`] and [`client_config`] do not
//! enable TLS 1.3 early data (0-RTT), so it is never sent or accepted. If a
//! caller supplies a `ServerConfig` that does accept early data, accepted early
//! bytes are appended to `plain` like any other application bytes, and the
//! caller must then be prepared for them to be replayed.

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, ReadEarlyData, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{AlertDescription, ClientConfig, CommonState, ServerConfig};
use rustls_pki_types::ServerName;

mod config;
mod drive;
mod record;
pub use config::{client_config, server_config};
use drive::*;
use record::{Flow, Kernel, Traffic, MAX_CIPHERTEXT};

pub use rustls::HandshakeKind;

/// Size of a TLS record header.
const HEADER_LEN: usize = 5;

/// 2^14 plus the 2048 bytes of expansion TLS allows. rustls refuses a
/// record whose payload is not shorter than this as soon as its header is
/// seen.
const MAX_RECORD_PAYLOAD: usize = 16 * 1024 + 2048;

/// Bound on the bytes of one partially received record held internally
/// (header included): 18,437 bytes.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_RECORD_PAYLOAD;

/// Bound on the internal inbound buffer while a handshake message split
/// across several records is being reassembled (rustls refuses handshake
/// messages above 64 KiB, so valid traffic never reaches this).
pub const MAX_PENDING_REASSEMBLY: usize = 64 * 1024 + 2 * MAX_RECORD_LEN;

/// Bound on application bytes queued by [`Tls::encrypt`] before the
/// handshake has completed.
pub const MAX_QUEUED_PLAINTEXT: usize = 64 * 1024;

/// Upper bound on per-record overhead when estimating encrypted sizes
/// (header, content type, AEAD tag, with room to spare).
const RECORD_OVERHEAD_ESTIMATE: usize = 64;

/// What a [`Tls::handle_read`] call left the connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The handshake has not completed yet; more bytes from the peer are
    /// needed (after sending whatever was appended to `out`).
    Handshaking,
    /// The handshake is complete (possibly during this call) and
    /// application data flows both ways.
    Ready,
    /// The peer sent `close_notify`: it will send no more application data.
    /// Bytes after the `close_notify` are ignored. The local side may still
    /// encrypt and should answer with [`Tls::close`].
    Closed,
}

/// Why a TLS operation or configuration failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer sent a fatal alert.
    Alert(AlertDescription),
    /// The peer's certificate was refused (wrong name, unknown issuer,
    /// expired, missing, ...). The inner error carries the details.
    BadCertificate(rustls::Error),
    /// The peer broke the protocol: malformed or unexpected messages,
    /// records that failed to decrypt, no common parameters, ...
    Protocol(rustls::Error),
    /// The inbound bytes held while waiting for the rest of a record or
    /// handshake message would exceed `limit` bytes.
    BufferLimit {
        /// Bytes that would have been held.
        needed: usize,
        /// The applicable limit.
        limit: usize,
    },
    /// [`Tls::encrypt`] before the handshake completed would queue more
    /// than `limit` bytes.
    QueueFull {
        /// The applicable limit ([`MAX_QUEUED_PLAINTEXT`]).
        limit: usize,
    },
    /// The traffic keys have been used up (astronomically many records);
    /// the connection must be re-established.
    KeysExhausted,
    /// [`Tls::encrypt`] after [`Tls::close`] queued `close_notify`.
    Closed,
    /// No certificate was found in the PEM given as `what`.
    NoCertificate {
        /// Which input was searched.
        what: &'static str,
    },
    /// No private key was found in the key PEM.
    NoPrivateKey,
    /// The private key does not belong to the first certificate of the chain.
    KeyMismatch,
    /// PEM input could not be parsed.
    Pem {
        /// Which input was being parsed.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A certificate or key was well-formed PEM but rustls refused it.
    InvalidCredential {
        /// Which input was refused.
        what: &'static str,
        /// The reason.
        error: rustls::Error,
    },
    /// Building a rustls configuration or connection failed.
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Alert(desc) => write!(f, "peer sent fatal TLS alert: {desc:?}"),
            TlsError::BadCertificate(e) => write!(f, "peer certificate refused: {e}"),
            TlsError::Protocol(e) => write!(f, "TLS protocol error: {e}"),
            TlsError::BufferLimit { needed, limit } => write!(
                f,
                "incomplete TLS data would need {needed} buffered bytes, over the limit of {limit}"
            ),
            TlsError::QueueFull { limit } => write!(
                f,
                "more than {limit} bytes queued for encryption before the TLS handshake completed"
            ),
            TlsError::KeysExhausted => f.write_str("TLS traffic keys exhausted"),
            TlsError::Closed => f.write_str("TLS connection already closed locally"),
            TlsError::NoCertificate { what } => write!(f, "no certificate found in {what} PEM"),
            TlsError::NoPrivateKey => f.write_str("no private key found in key PEM"),
            TlsError::KeyMismatch => f.write_str(
                "private key does not match the public key of the first certificate in the chain",
            ),
            TlsError::Pem { what, detail } => write!(f, "invalid {what} PEM: {detail}"),
            TlsError::InvalidCredential { what, error } => write!(f, "invalid {what}: {error}"),
            TlsError::Config(e) => write!(f, "TLS configuration error: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The body length a protected record's header declares, refused (with a
/// `record_overflow` alert for the peer) above what TLS 1.3 allows, before any of the
/// body is buffered.
fn check_record_len(
    traffic: &mut Traffic,
    header: &[u8],
    out: &mut BytesMut,
) -> Result<usize, TlsError> {
    let len = declared_len(header);
    if len > MAX_CIPHERTEXT {
        traffic.seal_fatal(AlertDescription::RecordOverflow, out);
        return Err(TlsError::Protocol(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::MessageTooLarge,
        )));
    }
    Ok(len)
}

impl TlsError {
    /// Sorts an error raised while processing the connection.
    fn from_connection(e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::AlertReceived(desc) => TlsError::Alert(desc),
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => TlsError::BadCertificate(e),
            other => TlsError::Protocol(other),
        }
    }
}

/// The two kinds of rustls unbuffered connection, behind one interface.
trait Side {
    type Data;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;

    fn common(&self) -> &CommonState;

    /// Moves accepted early data into `plain`.
    fn take_early_data(
        state: &mut ReadEarlyData<'_, '_, Self::Data>,
        plain: &mut BytesMut,
    ) -> Result<usize, rustls::Error>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }

    fn common(&self) -> &CommonState {
        self
    }

    fn take_early_data(
        _state: &mut ReadEarlyData<'_, '_, ClientConnectionData>,
        _plain: &mut BytesMut,
    ) -> Result<usize, rustls::Error> {
        // Only servers receive early data; rustls never yields this state
        // on a client connection.
        Ok(0)
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }

    fn common(&self) -> &CommonState {
        self
    }

    fn take_early_data(
        state: &mut ReadEarlyData<'_, '_, ServerConnectionData>,
        plain: &mut BytesMut,
    ) -> Result<usize, rustls::Error> {
        let mut extra_discard = 0;
        while let Some(record) = state.next_record() {
            let record = record?;
            extra_discard += record.discard;
            plain.extend_from_slice(record.payload);
        }
        Ok(extra_discard)
    }
}

/// The phases of a connection: rustls's connection during the handshake, then the record
/// layer of [`record`] (unless the configuration keeps secrets in rustls, in which case
/// rustls's connection stays to the end).
enum Conn {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
    Traffic(Box<Traffic>),
    /// Left behind by a handover to the record layer that failed; `failed` says why.
    Gone,
}

/// What to write once rustls offers `WriteTraffic` on an established
/// connection.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// Per-call context for [`drive`].
struct Sinks<'a> {
    plain: &'a mut BytesMut,
    out: &'a mut BytesMut,
    queued: &'a mut Vec<u8>,
    peer_closed: &'a mut bool,
}

/// One connection's TLS state, client or server side.
pub struct Tls {
    conn: Conn,
    /// Whether the configuration lets the keys leave rustls once the handshake is over.
    handover: bool,
    /// Inbound bytes rustls has not released yet: first the already
    /// processed fragments of a handshake message being reassembled (if
    /// any), then the received part of an incomplete record. Empty (and
    /// unallocated) whenever the connection is idle.
    pending: Vec<u8>,
    /// Offset in `pending` where the incomplete, unprocessed record starts.
    raw_from: usize,
    /// Application bytes handed to `encrypt` before the handshake completed.
    queued: Vec<u8>,
    peer_closed: bool,
    sent_close: bool,
    /// Set by the first fatal error; every later call returns it again.
    failed: Option<Box<TlsError>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field(
                "side",
                &match &self.conn {
                    Conn::Client(_) => "client",
                    Conn::Server(_) => "server",
                    Conn::Traffic(t) => match t.is_client() {
                        true => "client",
                        false => "server",
                    },
                    Conn::Gone => "gone",
                },
            )
            .field("handshaking", &self.is_handshaking())
            .field("pending", &self.pending.len())
            .field("queued", &self.queued.len())
            .field("peer_closed", &self.peer_closed)
            .field("sent_close", &self.sent_close)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Tls {
    /// A server-side connection waiting for a ClientHello.
    pub fn server(config: Arc<ServerConfig>) -> Result<Tls, TlsError> {
        let handover = config.enable_secret_extraction;
        let conn = UnbufferedServerConnection::new(config).map_err(TlsError::Config)?;
        Ok(Tls::with(Conn::Server(Box::new(conn)), handover))
    }

    /// A client-side connection to `server_name`. Its ClientHello is
    /// produced by the first [`Tls::start`] or [`Tls::handle_read`] call.
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<Tls, TlsError> {
        let handover = config.enable_secret_extraction;
        let conn =
            UnbufferedClientConnection::new(config, server_name).map_err(TlsError::Config)?;
        Ok(Tls::with(Conn::Client(Box::new(conn)), handover))
    }

    fn with(conn: Conn, handover: bool) -> Tls {
        Tls {
            conn,
            handover,
            pending: Vec::new(),
            raw_from: 0,
            queued: Vec::new(),
            peer_closed: false,
            sent_close: false,
            failed: None,
        }
    }

    /// Appends the bytes this side must send first to `out`: the
    /// ClientHello on a client, nothing on a server. Equivalent to
    /// `handle_read` with no ciphertext.
    pub fn start(&mut self, out: &mut BytesMut) -> Result<Progress, TlsError> {
        let mut plain = BytesMut::new();
        self.handle_read(&mut [], &mut plain, out)
    }

    /// Processes `ciphertext` that arrived from the socket.
    ///
    /// Decrypted application bytes are appended to `plain`; TLS bytes to
    /// send to the peer are appended to `out`. All of `ciphertext` is
    /// consumed: complete records are decrypted in place (so the slice is
    /// overwritten), and a trailing incomplete record is copied into an
    /// internal buffer until its remaining bytes arrive.
    ///
    /// On error, `out` may hold an alert for the peer (send it, then close
    /// the socket); the connection is dead and every later call returns the
    /// same error.
    pub fn handle_read(
        &mut self,
        ciphertext: &mut [u8],
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Progress, TlsError> {
        if let Some(e) = &self.failed {
            return Err((**e).clone());
        }
        let read = match &mut self.conn {
            Conn::Traffic(_) => self.read_traffic(ciphertext, plain, out),
            _ => self
                .read_inner(ciphertext, plain, out)
                .and_then(|()| self.hand_over()),
        };
        match read {
            Ok(()) => Ok(self.progress()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Once the handshake is over and rustls holds nothing half-done (no output queued, no
    /// handshake message half gathered, no plaintext waiting for the handshake), moves the
    /// traffic keys out of rustls into the record layer, keeping rustls's key schedule for
    /// KeyUpdates and client tickets.
    fn hand_over(&mut self) -> Result<(), TlsError> {
        let ready = self.handover
            && !self.is_handshaking()
            && self.raw_from == 0
            && self.queued.is_empty()
            && !self.peer_closed
            && self.failed.is_none()
            && !self.common().is_some_and(|c| c.wants_write());
        if !ready {
            return Ok(());
        }
        let (kind, group, alpn) = match self.common() {
            Some(c) => (
                c.handshake_kind(),
                c.negotiated_key_exchange_group().map(|g| g.name()),
                c.alpn_protocol().map(Box::from),
            ),
            None => return Ok(()),
        };
        let handed = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Client(c) => c
                .dangerous_into_kernel_connection()
                .map(|(secrets, k)| (secrets, Kernel::Client(k))),
            Conn::Server(c) => c
                .dangerous_into_kernel_connection()
                .map(|(secrets, k)| (secrets, Kernel::Server(k))),
            other => {
                self.conn = other;
                return Ok(());
            }
        };
        let (secrets, kernel) = handed.map_err(TlsError::Protocol)?;
        self.conn = Conn::Traffic(Box::new(Traffic::new(secrets, kernel, kind, group, alpn)?));
        Ok(())
    }

    /// The record layer's read path: whole records are opened in the caller's slice; only
    /// the received part of an incomplete record is copied into `pending`.
    fn read_traffic(
        &mut self,
        mut input: &mut [u8],
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        let Conn::Traffic(traffic) = &mut self.conn else {
            return Ok(());
        };
        if self.peer_closed {
            return Ok(());
        }
        if !self.pending.is_empty() {
            // Complete the partial record first (its header, then its body), then open it
            // from `pending`.
            loop {
                let missing = record_missing(&self.pending);
                if missing == 0 {
                    break;
                }
                if input.is_empty() {
                    return Ok(());
                }
                let take = missing.min(input.len());
                let (head, tail) = std::mem::take(&mut input).split_at_mut(take);
                input = tail;
                self.pending.extend_from_slice(head);
                if let Some(header) = self.pending.get(..HEADER_LEN) {
                    check_record_len(traffic, header, out)?;
                }
            }
            let mut record = std::mem::take(&mut self.pending);
            let flow = traffic.open(&mut record, plain, out)?;
            if flow == Flow::PeerClosed {
                self.peer_closed = true;
                return Ok(());
            }
        }
        while let Some(header) = input.get(..HEADER_LEN) {
            let total = HEADER_LEN + check_record_len(traffic, header, out)?;
            if input.len() < total {
                break;
            }
            let (record, rest) = std::mem::take(&mut input).split_at_mut(total);
            input = rest;
            if traffic.open(record, plain, out)? == Flow::PeerClosed {
                self.peer_closed = true;
                return Ok(());
            }
        }
        if !input.is_empty() {
            let mut pending = Vec::with_capacity(input.len() + record_missing(input));
            pending.extend_from_slice(input);
            self.pending = pending;
        }
        Ok(())
    }

    fn read_inner(
        &mut self,
        mut input: &mut [u8],
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        loop {
            if self.peer_closed {
                // Anything after close_notify is ignored.
                self.pending = Vec::new();
                self.raw_from = 0;
                return Ok(());
            }

            if self.pending.is_empty() {
                // Fast path: process whole records in the caller's slice.
                let complete = complete_records_len(input);
                let discarded = self.run(input, Send::Nothing, plain, out)?;
                if self.peer_closed {
                    continue;
                }
                let rest = &input[discarded.min(input.len())..];
                if !rest.is_empty() {
                    self.raw_from = complete.saturating_sub(discarded);
                    let needed = rest.len();
                    let limit = self.pending_limit();
                    if needed > limit {
                        return Err(TlsError::BufferLimit { needed, limit });
                    }
                    let missing = record_missing(&rest[self.raw_from.min(rest.len())..]);
                    let mut pending = Vec::with_capacity(needed + missing);
                    pending.extend_from_slice(rest);
                    self.pending = pending;
                }
                return Ok(());
            }

            if input.is_empty() {
                return Ok(());
            }

            // Slow path: complete the partial record held in `pending`,
            // taking no more than that one record from `input`, then let
            // rustls process the buffer (it must see the retained bytes at
            // the same offsets as before).
            let raw = &self.pending[self.raw_from..];
            let mut take = 0;
            if raw.len() < HEADER_LEN {
                take = (HEADER_LEN - raw.len()).min(input.len());
            }
            let mut header = [0u8; HEADER_LEN];
            let mut header_len = 0;
            for (slot, byte) in header
                .iter_mut()
                .zip(raw.iter().chain(input[..take].iter()))
            {
                *slot = *byte;
                header_len += 1;
            }
            if header_len == HEADER_LEN {
                let total = HEADER_LEN + declared_len(&header);
                if total <= MAX_RECORD_LEN {
                    let have = raw.len() + take;
                    take += total.saturating_sub(have).min(input.len() - take);
                } else if raw.len() >= HEADER_LEN {
                    // rustls refuses such a header as soon as it sees it
                    // (with a record_overflow alert), which happens below
                    // when this step completes the header. If it already
                    // saw it and let it through, refuse here: never buffer
                    // the body.
                    return Err(TlsError::BufferLimit {
                        needed: total,
                        limit: MAX_RECORD_LEN,
                    });
                }
            }
            if take == 0 {
                // Cannot happen while `pending` ends in an incomplete
                // record; refuse rather than spin.
                return Err(TlsError::Protocol(rustls::Error::General(
                    "inbound TLS buffer made no progress".into(),
                )));
            }
            let needed = self.pending.len() + take;
            let limit = self.pending_limit();
            if needed > limit {
                return Err(TlsError::BufferLimit { needed, limit });
            }
            let (head, tail) = std::mem::take(&mut input).split_at_mut(take);
            input = tail;
            self.pending.extend_from_slice(head);

            let complete = self.raw_from + complete_records_len(&self.pending[self.raw_from..]);
            let mut pending = std::mem::take(&mut self.pending);
            let result = self.run(&mut pending, Send::Nothing, plain, out);
            self.pending = pending;
            let discarded = result?;
            if self.peer_closed {
                continue;
            }
            self.consume_pending(discarded, complete);
        }
    }

    /// Drops `discarded` bytes from the front of `pending` after rustls
    /// processed everything up to `complete`.
    fn consume_pending(&mut self, discarded: usize, complete: usize) {
        let discarded = discarded.min(self.pending.len());
        self.pending.drain(..discarded);
        self.raw_from = complete.saturating_sub(discarded).min(self.pending.len());
        if self.pending.is_empty() {
            self.pending = Vec::new();
            self.raw_from = 0;
        }
    }

    fn pending_limit(&self) -> usize {
        if self.raw_from == 0 {
            MAX_RECORD_LEN
        } else {
            MAX_PENDING_REASSEMBLY
        }
    }

    /// Encrypts application bytes into `out`.
    ///
    /// Before the handshake has completed, the bytes are queued instead
    /// (up to [`MAX_QUEUED_PLAINTEXT`] in total, else
    /// [`TlsError::QueueFull`]) and are encrypted, in order, into the `out`
    /// buffer of the [`Tls::handle_read`] call that completes the handshake.
    /// After [`Tls::close`], returns [`TlsError::Closed`].
    pub fn encrypt(&mut self, plain: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        if let Some(e) = &self.failed {
            return Err((**e).clone());
        }
        if self.sent_close {
            return Err(TlsError::Closed);
        }
        if plain.is_empty() {
            return Ok(());
        }
        if let Conn::Traffic(traffic) = &mut self.conn {
            return match traffic.seal(plain, out) {
                Ok(()) => Ok(()),
                Err(e) => Err(self.fail(e)),
            };
        }
        if self.is_handshaking() || !self.queued.is_empty() {
            if self.queued.len() + plain.len() > MAX_QUEUED_PLAINTEXT {
                return Err(TlsError::QueueFull {
                    limit: MAX_QUEUED_PLAINTEXT,
                });
            }
            self.queued.extend_from_slice(plain);
            if self.is_handshaking() {
                return Ok(());
            }
            // Established with a leftover queue: flush it below, in order.
            self.write_established(Send::Nothing, out)?;
        } else {
            self.write_established(Send::Data(plain), out)?;
        }
        self.hand_over().map_err(|e| self.fail(e))
    }

    /// Appends a `close_notify` alert to `out` and refuses further
    /// [`Tls::encrypt`] calls.
    ///
    /// Returns whether the alert was written. rustls can only send
    /// `close_notify` once the handshake has completed; before that (or
    /// after a fatal error, or a second time) nothing is written and the
    /// caller should simply close the socket.
    pub fn close(&mut self, out: &mut BytesMut) -> bool {
        if self.failed.is_some() || self.sent_close {
            return false;
        }
        self.sent_close = true;
        self.queued = Vec::new();
        if self.is_handshaking() {
            return false;
        }
        let before = out.len();
        if let Conn::Traffic(traffic) = &mut self.conn {
            return traffic.seal_close_notify(out).is_ok() && out.len() > before;
        }
        self.write_established(Send::CloseNotify, out).is_ok() && out.len() > before
    }

    /// Runs rustls on the retained inbound bytes (no new input) so that it
    /// offers `WriteTraffic`, and writes `send` there.
    fn write_established(&mut self, send: Send<'_>, out: &mut BytesMut) -> Result<(), TlsError> {
        let mut plain = BytesMut::new();
        let complete = self.raw_from;
        let mut pending = std::mem::take(&mut self.pending);
        let result = self.run(&mut pending, send, &mut plain, out);
        self.pending = pending;
        match result {
            Ok(discarded) => {
                // Nothing new was received, so nothing can have been
                // decrypted (every complete record was processed by the
                // `handle_read` that delivered it). Refuse rather than drop
                // data should that ever not hold.
                if !plain.is_empty() {
                    return Err(self.fail(TlsError::Protocol(rustls::Error::General(
                        "application data decrypted while writing".into(),
                    ))));
                }
                self.consume_pending(discarded, complete);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Drives rustls over `buf` (see [`drive`]).
    fn run(
        &mut self,
        buf: &mut [u8],
        send: Send<'_>,
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<usize, TlsError> {
        let mut sinks = Sinks {
            plain,
            out,
            queued: &mut self.queued,
            peer_closed: &mut self.peer_closed,
        };
        match &mut self.conn {
            Conn::Client(c) => drive(&mut **c, buf, send, &mut sinks),
            Conn::Server(c) => drive(&mut **c, buf, send, &mut sinks),
            // The record layer has its own paths; nothing routes it here.
            Conn::Traffic(_) | Conn::Gone => Err(TlsError::Closed),
        }
    }

    fn fail(&mut self, e: TlsError) -> TlsError {
        self.failed = Some(Box::new(e.clone()));
        self.pending = Vec::new();
        self.raw_from = 0;
        self.queued = Vec::new();
        e
    }

    fn progress(&self) -> Progress {
        if self.peer_closed {
            Progress::Closed
        } else if self.is_handshaking() {
            Progress::Handshaking
        } else {
            Progress::Ready
        }
    }

    /// rustls's view of the connection, while rustls still holds it.
    fn common(&self) -> Option<&CommonState> {
        match &self.conn {
            Conn::Client(c) => Some(c.common()),
            Conn::Server(c) => Some(c.common()),
            Conn::Traffic(_) | Conn::Gone => None,
        }
    }

    /// True until both sides' Finished messages have been processed.
    pub fn is_handshaking(&self) -> bool {
        self.common().is_some_and(|c| c.is_handshaking())
    }

    /// True once the peer's `close_notify` has been received.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// True once a fatal error has been returned; the connection is dead.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Whether the completed handshake was full or resumed from a ticket
    /// (`None` while handshaking).
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        match (&self.conn, self.common()) {
            (Conn::Traffic(t), _) => t.kind(),
            (_, Some(c)) if !c.is_handshaking() => c.handshake_kind(),
            _ => None,
        }
    }

    /// The negotiated cipher suite, once known.
    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        match (&self.conn, self.common()) {
            (Conn::Traffic(t), _) => Some(t.suite()),
            (_, Some(c)) => c.negotiated_cipher_suite(),
            _ => None,
        }
    }

    /// The key exchange group of the handshake, once known.
    pub fn negotiated_key_exchange_group(&self) -> Option<rustls::NamedGroup> {
        match (&self.conn, self.common()) {
            (Conn::Traffic(t), _) => t.group(),
            (_, Some(c)) => c.negotiated_key_exchange_group().map(|group| group.name()),
            _ => None,
        }
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match (&self.conn, self.common()) {
            (Conn::Traffic(t), _) => t.alpn(),
            (_, Some(c)) => c.alpn_protocol(),
            _ => None,
        }
    }

    /// True once the handshake is over and the traffic keys have moved from rustls into
    /// this crate's record layer (with the configurations of [`server_config`] and
    /// [`client_config`], right after the handshake). A configuration without
    /// `enable_secret_extraction` keeps rustls's whole connection to the end, at about
    /// 2 KB more per connection.
    pub fn is_handed_over(&self) -> bool {
        matches!(self.conn, Conn::Traffic(_))
    }

    /// Replaces the traffic keys after `records` records sealed under one key, instead of
    /// the cipher suite's confidentiality limit (2^24 records for AES-GCM), so that tests
    /// can see key updates happen. No effect before the handover.
    #[cfg(feature = "internals")]
    pub fn update_keys_after(&mut self, records: u64) {
        if let Conn::Traffic(t) = &mut self.conn {
            t.set_limit(records);
        }
    }

    /// Seals `data` as records of inner content type `content_type` (any value, sense or
    /// not) into `out`, for tests and fuzzing of a peer's record layer: forged alerts,
    /// post-handshake handshake messages, unknown types. Fails before the handover.
    #[cfg(feature = "internals")]
    pub fn seal_raw(
        &mut self,
        content_type: u8,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        match &mut self.conn {
            Conn::Traffic(t) => t.seal_raw(content_type, data, out),
            _ => Err(TlsError::Closed),
        }
    }

    /// Number of inbound bytes held internally (an incomplete record).
    pub fn buffered_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_records_are_counted_by_header() {
        let mut buf = vec![23, 3, 3, 0, 2, 9, 9, 23, 3, 3, 0, 3, 1];
        assert_eq!(complete_records_len(&buf), 7);
        buf.extend_from_slice(&[2, 3]);
        assert_eq!(complete_records_len(&buf), 15);
        assert_eq!(complete_records_len(&buf[..4]), 0);
        assert_eq!(complete_records_len(&[]), 0);
    }

    #[test]
    fn missing_bytes_of_a_partial_record() {
        assert_eq!(record_missing(&[]), 5);
        assert_eq!(record_missing(&[23, 3]), 3);
        assert_eq!(record_missing(&[23, 3, 3, 0, 4, 1]), 3);
        assert_eq!(record_missing(&[23, 3, 3, 0xff, 0xff]), 0);
    }
}
