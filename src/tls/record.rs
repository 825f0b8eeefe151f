//! The record layer once the handshake is over.
//!
//! rustls carries a connection through its handshake; then the connection hands its traffic
//! keys to this module and keeps only what TLS 1.3 still needs from it afterwards (rustls's
//! `kernel` API): deriving the next keys on a KeyUpdate, and storing the session tickets a
//! server sends a client. An idle connection thus holds two AEAD keys and two sequence
//! numbers, not rustls's whole connection with its record-layer objects (AES-GCM key
//! schedules and GHASH tables, about half a kilobyte per direction): the ring key for a
//! record is rebuilt from the raw key each time records are sealed or opened, which costs
//! far less than the system call that carries them.
//!
//! Record protection follows RFC 8446, section 5: a record is
//! `type(23) 0x0303 length` then the AEAD-sealed `content || inner type`; the nonce is the
//! IV XOR the record's sequence number; the record header is the additional data.
//!
//! ```text
//!   received record ──length check──▶ open ──inner type──┬─ application data ─▶ plaintext
//!                                                        ├─ alert: close_notify ─▶ peer closed
//!                                                        ├─ alert: other ─▶ error
//!                                                        └─ handshake ─┬─ KeyUpdate ─▶ next rx keys
//!                                                                      │   (and tx keys if asked)
//!                                                                      └─ NewSessionTicket (client)
//!                                                                          ─▶ ticket store
//! ```

use super::{TlsError, HEADER_LEN};
use bytes::BytesMut;
use ring::aead;
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, Error as RustlsError,
    ExtractedSecrets, HandshakeKind, InvalidMessage, NamedGroup, PeerMisbehaved,
    SupportedCipherSuite,
};
use zeroize::Zeroize;

/// Largest plaintext carried by one record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Largest protected record body TLS 1.3 allows: 2^14 + 256 (RFC 8446, 5.2).
pub(super) const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;

/// AEAD tag length of every TLS 1.3 cipher suite.
const TAG_LEN: usize = 16;

/// Bound on a post-handshake handshake message being gathered across records. The
/// messages that may arrive (KeyUpdate, NewSessionTicket) are far smaller.
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;

/// Record content types (RFC 8446, appendix B.1).
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// Handshake message types that may follow the handshake.
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// What remains of rustls's connection: the key schedule (and, on a client, the ticket
/// store).
pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }

    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), RustlsError> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), RustlsError> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
}

/// One direction's traffic key, IV and record sequence number.
struct Keys {
    alg: &'static aead::Algorithm,
    key: [u8; 32],
    key_len: u8,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, TlsError> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(unusable_key()),
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != alg.key_len() || iv.len() != aead::NONCE_LEN {
            return Err(unusable_key());
        }
        let mut k = Keys {
            alg,
            key: [0; 32],
            key_len: key.len() as u8,
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        k.key[..key.len()].copy_from_slice(key);
        k.iv.copy_from_slice(iv);
        Ok(k)
    }

    fn ring_key(&self) -> Result<aead::LessSafeKey, TlsError> {
        aead::UnboundKey::new(self.alg, &self.key[..usize::from(self.key_len)])
            .map(aead::LessSafeKey::new)
            .map_err(|_| unusable_key())
    }

    /// The nonce for the current record: the IV XOR the sequence number (RFC 8446, 5.3).
    fn nonce(&self) -> aead::Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        aead::Nonce::assume_unique_for_key(nonce)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// What opening records brought, beyond plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Open,
    /// The peer sent close_notify; anything after it is ignored.
    PeerClosed,
}

/// A connection after its handshake.
pub(super) struct Traffic {
    kernel: Kernel,
    tx: Keys,
    rx: Keys,
    /// Records sealed under one key before it is replaced (the suite's confidentiality
    /// limit).
    limit: u64,
    /// Post-handshake handshake bytes waiting for the rest of their message.
    handshake: Vec<u8>,
    kind: Option<HandshakeKind>,
    group: Option<NamedGroup>,
    alpn: Option<Box<[u8]>>,
}

impl Traffic {
    pub(super) fn new(
        secrets: ExtractedSecrets,
        kernel: Kernel,
        kind: Option<HandshakeKind>,
        group: Option<NamedGroup>,
        alpn: Option<Box<[u8]>>,
    ) -> Result<Traffic, TlsError> {
        // AES-GCM's limit, should a suite not be a TLS 1.3 one (it always is here).
        let limit = kernel
            .suite()
            .tls13()
            .map_or(1 << 24, |suite| suite.common.confidentiality_limit);
        Ok(Traffic {
            kernel,
            tx: Keys::new(secrets.tx)?,
            rx: Keys::new(secrets.rx)?,
            limit,
            handshake: Vec::new(),
            kind,
            group,
            alpn,
        })
    }

    pub(super) fn suite(&self) -> SupportedCipherSuite {
        self.kernel.suite()
    }

    #[cfg(feature = "internals")]
    pub(super) fn set_limit(&mut self, records: u64) {
        self.limit = records;
    }

    #[cfg(feature = "internals")]
    pub(super) fn seal_raw(
        &mut self,
        typ: u8,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        self.seal_all(typ, data, out)
    }

    pub(super) fn is_client(&self) -> bool {
        matches!(self.kernel, Kernel::Client(_))
    }

    pub(super) fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    pub(super) fn group(&self) -> Option<NamedGroup> {
        self.group
    }

    pub(super) fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Seals `data` as application-data records into `out`.
    pub(super) fn seal(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        let start = out.len();
        let result = self.seal_all(APPLICATION_DATA, data, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Seals a `close_notify` alert into `out`.
    pub(super) fn seal_close_notify(&mut self, out: &mut BytesMut) -> Result<(), TlsError> {
        self.seal_all(ALERT, &[1, AlertDescription::CloseNotify.into()], out)
    }

    /// Seals a fatal alert into `out`, best effort: the connection is failing anyway.
    pub(super) fn seal_fatal(&mut self, desc: AlertDescription, out: &mut BytesMut) {
        let start = out.len();
        if self.seal_all(ALERT, &[2, desc.into()], out).is_err() {
            out.truncate(start);
        }
    }

    fn seal_all(&mut self, typ: u8, data: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        out.reserve(data.len() + data.len().div_ceil(MAX_FRAGMENT) * 32 + 32);
        let key = self.tx.ring_key()?;
        let mut key = Some(key);
        for chunk in data.chunks(MAX_FRAGMENT) {
            if self.tx.seq >= self.limit {
                // Past the suite's confidentiality limit: announce new keys under the
                // old ones, then switch (RFC 8446, 4.6.3).
                self.seal_one(key.as_ref(), HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
                self.tx = Keys::new(self.kernel.next_tx().map_err(TlsError::Protocol)?)?;
                key = Some(self.tx.ring_key()?);
            }
            self.seal_one(key.as_ref(), typ, chunk, out)?;
        }
        Ok(())
    }

    fn seal_one(
        &mut self,
        key: Option<&aead::LessSafeKey>,
        typ: u8,
        chunk: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TlsError> {
        let key = key.ok_or(TlsError::KeysExhausted)?;
        if self.tx.seq == u64::MAX {
            return Err(TlsError::KeysExhausted);
        }
        let body_len = chunk.len() + 1 + TAG_LEN;
        let header = record_header(body_len);
        let start = out.len();
        out.extend_from_slice(&header);
        out.extend_from_slice(chunk);
        out.extend_from_slice(&[typ]);
        let tag = key
            .seal_in_place_separate_tag(
                self.tx.nonce(),
                aead::Aad::from(header),
                &mut out[start + HEADER_LEN..],
            )
            .map_err(|_| TlsError::Protocol(RustlsError::EncryptError))?;
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        Ok(())
    }

    /// Opens one whole record (`record` is its header and body, the body checked against
    /// [`MAX_CIPHERTEXT`] already), appending application bytes to `plain` and any reply
    /// (a KeyUpdate) to `out`. The record is decrypted in place.
    ///
    /// On error, a fatal alert for the peer may have been appended to `out`.
    pub(super) fn open(
        &mut self,
        record: &mut [u8],
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Flow, TlsError> {
        match self.open_inner(record, plain, out) {
            Ok(flow) => Ok(flow),
            Err((desc, e)) => {
                if let Some(desc) = desc {
                    self.seal_fatal(desc, out);
                }
                Err(e)
            }
        }
    }

    fn open_inner(
        &mut self,
        record: &mut [u8],
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Flow, (Option<AlertDescription>, TlsError)> {
        let unexpected = |got: u8| {
            (
                Some(AlertDescription::UnexpectedMessage),
                TlsError::Protocol(RustlsError::InappropriateMessage {
                    expect_types: vec![ContentType::ApplicationData],
                    got_type: ContentType::from(got),
                }),
            )
        };
        let (header, body) = record.split_at_mut(HEADER_LEN);
        if header[0] != APPLICATION_DATA {
            // After the handshake every record is protected; a plain alert, handshake or
            // change_cipher_spec record is a protocol violation.
            return Err(unexpected(header[0]));
        }
        if body.len() < TAG_LEN + 1 {
            return Err(decode_error(InvalidMessage::MessageTooShort));
        }
        if self.rx.seq == u64::MAX {
            return Err((None, TlsError::KeysExhausted));
        }
        let key = self.rx.ring_key().map_err(|e| (None, e))?;
        let aad = aead::Aad::from([header[0], header[1], header[2], header[3], header[4]]);
        let opened = key.open_in_place(self.rx.nonce(), aad, body).map_err(|_| {
            (
                Some(AlertDescription::BadRecordMac),
                TlsError::Protocol(RustlsError::DecryptError),
            )
        })?;
        self.rx.seq += 1;
        // Strip the zero padding; the last non-zero byte is the real content type.
        let Some(end) = opened.iter().rposition(|&b| b != 0) else {
            return Err(unexpected(0));
        };
        let (content, typ) = (&opened[..end], opened[end]);
        if typ != HANDSHAKE && !self.handshake.is_empty() {
            // A handshake message must not be interleaved with other records.
            return Err(unexpected(typ));
        }
        match typ {
            APPLICATION_DATA => {
                plain.extend_from_slice(content);
                Ok(Flow::Open)
            }
            ALERT => match content {
                [_, 0] => Ok(Flow::PeerClosed),
                // user_canceled is followed by close_notify (RFC 8446, 6.1).
                [_, 90] => Ok(Flow::Open),
                [_, desc] => Err((None, TlsError::Alert(AlertDescription::from(*desc)))),
                _ => Err(decode_error(InvalidMessage::TrailingData("alert"))),
            },
            HANDSHAKE => self.handshake_messages(content, out),
            CHANGE_CIPHER_SPEC => Err(unexpected(typ)),
            other => Err(unexpected(other)),
        }
    }

    /// Gathers post-handshake handshake bytes and acts on each whole message.
    fn handshake_messages(
        &mut self,
        content: &[u8],
        out: &mut BytesMut,
    ) -> Result<Flow, (Option<AlertDescription>, TlsError)> {
        if self.handshake.len() + content.len() > MAX_HANDSHAKE_MESSAGE + 4 {
            return Err(decode_error(InvalidMessage::MessageTooLarge));
        }
        let mut gathered = std::mem::take(&mut self.handshake);
        gathered.extend_from_slice(content);
        let mut at = 0;
        let result = loop {
            let Some(&[typ, a, b, c]) = gathered.get(at..at + 4) else {
                break Ok(());
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE_MESSAGE {
                break Err(decode_error(InvalidMessage::MessageTooLarge));
            }
            let Some(body) = gathered.get(at + 4..at + 4 + len) else {
                break Ok(());
            };
            at += 4 + len;
            let last = at == gathered.len();
            if let Err(e) = self.handshake_message(typ, body, last, out) {
                break Err(e);
            }
        };
        gathered.drain(..at);
        if !gathered.is_empty() {
            self.handshake = gathered;
        }
        result.map(|()| Flow::Open)
    }

    fn handshake_message(
        &mut self,
        typ: u8,
        body: &[u8],
        last_in_record: bool,
        out: &mut BytesMut,
    ) -> Result<(), (Option<AlertDescription>, TlsError)> {
        let rustls_failure =
            |e: RustlsError| (Some(AlertDescription::InternalError), TlsError::Protocol(e));
        match (typ, &mut self.kernel) {
            (KEY_UPDATE, _) => {
                let update_requested = match body {
                    [0] => false,
                    [1] => true,
                    _ => return Err(decode_error(InvalidMessage::InvalidKeyUpdate)),
                };
                if !last_in_record {
                    // New keys apply from the next record on, so nothing may follow.
                    return Err((
                        Some(AlertDescription::UnexpectedMessage),
                        TlsError::Protocol(RustlsError::PeerMisbehaved(
                            PeerMisbehaved::KeyEpochWithPendingFragment,
                        )),
                    ));
                }
                self.rx = Keys::new(self.kernel.next_rx().map_err(rustls_failure)?)
                    .map_err(|e| (None, e))?;
                if update_requested {
                    let key = self.tx.ring_key().map_err(|e| (None, e))?;
                    self.seal_one(Some(&key), HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)
                        .map_err(|e| (None, e))?;
                    self.tx = Keys::new(self.kernel.next_tx().map_err(rustls_failure)?)
                        .map_err(|e| (None, e))?;
                }
                Ok(())
            }
            (NEW_SESSION_TICKET, Kernel::Client(kernel)) => kernel
                .handle_new_session_ticket(body)
                .map_err(|e| (Some(AlertDescription::DecodeError), TlsError::Protocol(e))),
            (other, _) => Err((
                Some(AlertDescription::UnexpectedMessage),
                TlsError::Protocol(RustlsError::General(format!(
                    "unexpected handshake message of type {other} after the handshake"
                ))),
            )),
        }
    }
}

fn unusable_key() -> TlsError {
    TlsError::Protocol(RustlsError::General(
        "the negotiated cipher suite's traffic keys cannot be used by the record layer".into(),
    ))
}

fn decode_error(e: InvalidMessage) -> (Option<AlertDescription>, TlsError) {
    (
        Some(AlertDescription::DecodeError),
        TlsError::Protocol(RustlsError::InvalidMessage(e)),
    )
}

/// The header of a protected record with a body of `body_len` bytes.
fn record_header(body_len: usize) -> [u8; HEADER_LEN] {
    let len = (body_len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, len[0], len[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_iv_xor_sequence() {
        let mut keys = Keys {
            alg: &aead::AES_128_GCM,
            key: [7; 32],
            key_len: 16,
            iv: [0xff; 12],
            seq: 0x0102,
        };
        let mut expected = [0xff; 12];
        expected[10] ^= 1;
        expected[11] ^= 2;
        assert_eq!(keys.nonce().as_ref(), &expected);
        keys.seq = 0;
        assert_eq!(keys.nonce().as_ref(), &[0xff; 12]);
    }

    #[test]
    fn header_carries_outer_type_legacy_version_and_length() {
        assert_eq!(record_header(300), [23, 3, 3, 1, 44]);
    }
}
