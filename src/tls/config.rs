//! Settings from PEM files: the server's certificate chain and key, the client's trusted
//! authority; key exchange with X25519 first, and session resumption on both sides.

use super::TlsError;
use rustls::crypto::ring as ring_provider;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The ring provider with key exchange groups ordered X25519 first.
fn provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates the ring provider because ring has no
    // post-quantum key exchange; it is still the only way to obtain ring's
    // random source and key loader, which are private types.
    #[allow(deprecated)]
    let mut provider = ring_provider::default_provider();
    provider.kx_groups = vec![
        ring_provider::kx_group::X25519,
        ring_provider::kx_group::SECP256R1,
        ring_provider::kx_group::SECP384R1,
    ];
    Arc::new(provider)
}

fn pem_error(what: &'static str, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        detail: e.to_string(),
    }
}

fn load_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// A TLS 1.3 server configuration from a PEM certificate chain (leaf
/// first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// Key exchange prefers X25519; sessions resume from stateless tickets
/// (keys rotated every 6 hours by rustls's ring `Ticketer`). The key is
/// checked against the leaf certificate.
pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certificates(cert_chain_pem, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        other => pem_error("private key", other),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError::KeyMismatch,
            error => TlsError::InvalidCredential {
                what: "certificate or private key",
                error,
            },
        })?;
    config.ticketer = ring_provider::Ticketer::new().map_err(TlsError::Config)?;
    // The record layer takes the traffic keys over once the handshake is done.
    config.enable_secret_extraction = true;
    // One ticket per handshake: every resumption brings a fresh one, so a reconnecting
    // client always holds one, and a handshake seals one ticket instead of two.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration trusting the CA certificates in
/// `ca_pem`, with X25519 preferred and session resumption (in-memory
/// cache of 256 servers' tickets, shared by connections using this config).
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(ca_pem, "CA")? {
        roots
            .add(cert)
            .map_err(|error| TlsError::InvalidCredential {
                what: "CA certificate",
                error,
            })?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
