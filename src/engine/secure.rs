//! TLS under the framing, for the connections that carry it: each one's TLS state and the
//! ciphertext waiting for its socket, kept beside the connections (a plaintext connection
//! pays nothing for them). Frames are queued in plaintext as on any connection and sealed
//! into ciphertext when the driver asks what to write.

use super::{ConnId, Engine};
use crate::tls::{Progress, Tls, TlsError};
use bytes::BytesMut;
use hashbrown::HashMap;
use std::num::NonZeroU32;

pub(super) struct Secure {
    gen: NonZeroU32,
    pub(super) tls: Tls,
    /// Ciphertext for the socket.
    pub(super) wire: BytesMut,
}

/// What decrypting a read brought.
pub(super) enum Opened {
    /// Plaintext (possibly none yet) is in the table's `plain` buffer.
    Plain,
    /// The peer sent close_notify.
    Closed,
    /// TLS failed; an alert may wait in `wire`.
    Failed(TlsError),
}

#[derive(Default)]
pub(super) struct SecureTable {
    by_index: HashMap<u32, Box<Secure>>,
    /// rustls decrypts in place: a read is copied here first.
    scratch: Vec<u8>,
    /// Plaintext of the read being handled.
    pub(super) plain: BytesMut,
}

impl SecureTable {
    pub(super) fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    pub(super) fn insert(&mut self, index: usize, gen: NonZeroU32, tls: Tls) {
        let wire = BytesMut::new();
        self.by_index
            .insert(index as u32, Box::new(Secure { gen, tls, wire }));
    }

    pub(super) fn get_mut(&mut self, index: usize, gen: NonZeroU32) -> Option<&mut Secure> {
        self.by_index
            .get_mut(&(index as u32))
            .filter(|s| s.gen == gen)
            .map(|s| &mut **s)
    }

    pub(super) fn get(&self, index: usize, gen: NonZeroU32) -> Option<&Secure> {
        self.by_index
            .get(&(index as u32))
            .filter(|s| s.gen == gen)
            .map(|s| &**s)
    }

    pub(super) fn remove(&mut self, index: usize) {
        self.by_index.remove(&(index as u32));
    }

    /// Decrypts `bytes` read on connection `index`: plaintext into `plain`, TLS replies
    /// into the connection's `wire`.
    pub(super) fn open(&mut self, index: usize, gen: NonZeroU32, bytes: &[u8]) -> Opened {
        self.plain.clear();
        let Some(s) = self
            .by_index
            .get_mut(&(index as u32))
            .filter(|s| s.gen == gen)
        else {
            return Opened::Plain;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        match s
            .tls
            .handle_read(&mut self.scratch, &mut self.plain, &mut s.wire)
        {
            Ok(Progress::Closed) => Opened::Closed,
            Ok(_) => Opened::Plain,
            Err(e) => Opened::Failed(e),
        }
    }
}

/// Seals `plain` into `secure.wire`; what failed, if anything.
pub(super) fn seal(secure: &mut Secure, plain: &mut BytesMut) -> Result<(), TlsError> {
    if plain.is_empty() {
        return Ok(());
    }
    let sealed = secure.tls.encrypt(plain, &mut secure.wire);
    plain.clear();
    sealed
}

impl Engine {
    /// How `conn`'s TLS handshake went: `Full`, or `Resumed` from a session ticket (a
    /// reconnect after a failover should be the latter). `None` for a plaintext connection,
    /// one still in its handshake, or one that is gone.
    pub fn tls_handshake_kind(&self, conn: ConnId) -> Option<rustls::HandshakeKind> {
        self.secure
            .get(conn.index as usize, conn.gen)
            .and_then(|s| s.tls.handshake_kind())
    }
}
