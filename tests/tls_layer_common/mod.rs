//! Shared helpers for the integration tests: a throwaway PKI and an
//! in-memory "wire" between two `Tls` endpoints.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use liveline::tls::{client_config, server_config, Progress, Tls, TlsError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;

/// A CA plus one leaf certificate signed by it, as PEM.
pub struct Pki {
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

/// Makes a fresh CA and a leaf certificate for `names`.
pub fn make_pki(names: &[&str]) -> Pki {
    make_pki_with_ca_name("test CA", names)
}

/// Same, with the CA's common name chosen by the caller.
pub fn make_pki_with_ca_name(ca_name: &str, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "test server");
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("leaf cert");

    Pki {
        ca_pem: ca_cert.pem(),
        chain_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// One PKI for "localhost" shared by the tests of a binary.
pub fn localhost_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| make_pki(&["localhost"]))
}

pub fn configs(pki: &Pki) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    (
        server_config(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).expect("server config"),
        client_config(pki.ca_pem.as_bytes()).expect("client config"),
    )
}

pub fn name(s: &str) -> ServerName<'static> {
    ServerName::try_from(s.to_string()).expect("server name")
}

/// One endpoint plus its side of the wire.
pub struct Peer {
    pub tls: Tls,
    /// Ciphertext written by this endpoint and not yet delivered.
    pub outbox: BytesMut,
    /// Application bytes received so far.
    pub plain: BytesMut,
    pub last: Option<Result<Progress, TlsError>>,
}

impl Peer {
    pub fn new(tls: Tls) -> Peer {
        Peer {
            tls,
            outbox: BytesMut::new(),
            plain: BytesMut::new(),
            last: None,
        }
    }

    /// Feeds `bytes` (copied, since `handle_read` decrypts in place).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, TlsError> {
        let mut copy = bytes.to_vec();
        let r = self
            .tls
            .handle_read(&mut copy, &mut self.plain, &mut self.outbox);
        self.last = Some(r.clone());
        r
    }

    pub fn send(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.tls.encrypt(data, &mut self.outbox)
    }
}

pub fn pair_with(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    server_name: &str,
) -> (Peer, Peer) {
    let s = Peer::new(Tls::server(server.clone()).expect("server"));
    let mut c = Peer::new(Tls::client(client.clone(), name(server_name)).expect("client"));
    c.tls.start(&mut c.outbox).expect("client start");
    (c, s)
}

/// Moves everything `from` has written into `to`, in pieces whose sizes
/// come from `piece`. Stops at the first error.
pub fn deliver(
    from: &mut Peer,
    to: &mut Peer,
    piece: &mut dyn FnMut() -> usize,
) -> Result<bool, TlsError> {
    if from.outbox.is_empty() {
        return Ok(false);
    }
    let bytes = from.outbox.split();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = piece().clamp(1, rest.len());
        to.feed(&rest[..n])?;
        rest = &rest[n..];
    }
    Ok(true)
}

/// Shuttles bytes both ways until neither side has anything to send.
pub fn shuttle(
    a: &mut Peer,
    b: &mut Peer,
    piece: &mut dyn FnMut() -> usize,
) -> Result<(), TlsError> {
    for _ in 0..1000 {
        let moved_ab = deliver(a, b, piece)?;
        let moved_ba = deliver(b, a, piece)?;
        if !moved_ab && !moved_ba {
            return Ok(());
        }
    }
    panic!("shuttle did not settle");
}

/// A complete handshake (and post-handshake tickets) with whole flights.
pub fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> (Peer, Peer) {
    let (mut c, mut s) = pair_with(server, client, "localhost");
    shuttle(&mut c, &mut s, &mut || usize::MAX).expect("handshake");
    assert!(!c.tls.is_handshaking());
    assert!(!s.tls.is_handshaking());
    (c, s)
}
