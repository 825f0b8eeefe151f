//! TLS handshakes on the server side of an engine, in memory: full handshakes (each client
//! with settings of its own, so nothing resumes) and resumed ones (one client's settings,
//! with its session tickets), counting only the time spent in the server engine's calls.
//! Key exchange is X25519 (first in `liveline::tls::server_config`'s order); the server's
//! certificate key is ECDSA P-256, then Ed25519 (cheaper to sign with).
//!
//! In the same run, the peer: rustls's buffered `ServerConnection` (the connection
//! tokio-rustls drives under its acceptor) doing the same handshakes with the same settings;
//! and the floor: the public-key operations a full handshake cannot avoid on the server
//! (an X25519 key pair and agreement, one signature), timed alone with ring.
//!
//! Run: `cargo bench --bench tls`.

use bytes::BytesMut;
use liveline::config::Config;
use liveline::engine::Engine;
use liveline::tls::{client_config, server_config, Tls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 2_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    for (alg_name, alg) in [
        ("ECDSA P-256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("Ed25519", &rcgen::PKCS_ED25519),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let server_tls =
            server_config(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        println!("server certificate key: {alg_name}");
        run(&server_tls, &ca_pem);
        floor(alg_name, &key.serialize_der());
    }
}

/// The unavoidable public-key work of a full handshake on the server, alone: an X25519 key
/// pair and agreement with the client's share, and one signature with the certificate key.
fn floor(alg_name: &str, pkcs8: &[u8]) {
    use ring::{agreement, rand::SystemRandom, signature};
    let rng = SystemRandom::new();
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap();
    enum Signer {
        Ed(signature::Ed25519KeyPair),
        Ec(signature::EcdsaKeyPair),
    }
    let signer = if alg_name == "Ed25519" {
        Signer::Ed(signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).unwrap())
    } else {
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        Signer::Ec(signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng).unwrap())
    };
    let sign = |m: &[u8]| match &signer {
        Signer::Ed(k) => {
            std::hint::black_box(k.sign(m));
        }
        Signer::Ec(k) => {
            std::hint::black_box(k.sign(&rng, m).unwrap());
        }
    };
    let transcript = [7u8; 130];
    let t = Instant::now();
    for _ in 0..N {
        let mine = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
        std::hint::black_box(mine.compute_public_key().unwrap());
        let their = agreement::UnparsedPublicKey::new(&agreement::X25519, peer_public.as_ref());
        agreement::agree_ephemeral(mine, &their, |secret| {
            std::hint::black_box(secret.len());
        })
        .unwrap();
        sign(&transcript);
    }
    let each = t.elapsed().as_secs_f64() / N as f64;
    println!(
        "floor (X25519 key pair and agreement, one signature, with ring alone): {:.0} per second ({:.1} us each)",
        1.0 / each,
        each * 1e6
    );
}

fn run(server_tls: &Arc<rustls::ServerConfig>, ca_pem: &str) {
    let cfg = Config {
        max_connections: 4 * N,
        ..Config::default()
    };
    let mut server = Engine::with_seed(cfg, Instant::now(), 1).unwrap();
    let shared_client = client_config(ca_pem.as_bytes()).unwrap();
    for (name, resumed) in [("full", false), ("resumed", true)] {
        // One handshake to warm up (and, for resumption, to get a ticket).
        handshake(&mut server, server_tls, &shared_client);
        let mut in_server = Duration::ZERO;
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..N {
            let client = if resumed {
                Arc::clone(&shared_client)
            } else {
                client_config(ca_pem.as_bytes()).unwrap()
            };
            let (t, kind) = handshake(&mut server, server_tls, &client);
            in_server += t;
            *kinds.entry(kind).or_insert(0) += 1;
        }
        println!(
            "{name} handshakes: {:.0} per second of server CPU ({:.1} us each); kinds: {kinds:?}",
            N as f64 / in_server.as_secs_f64(),
            in_server.as_secs_f64() * 1e6 / N as f64
        );
        // The peer, same settings, same kind of client.
        let peer_client = client_config(ca_pem.as_bytes()).unwrap();
        rustls_handshake(server_tls, &peer_client);
        let mut in_peer = Duration::ZERO;
        for _ in 0..N {
            let client = if resumed {
                Arc::clone(&peer_client)
            } else {
                client_config(ca_pem.as_bytes()).unwrap()
            };
            in_peer += rustls_handshake(server_tls, &client);
        }
        println!(
            "  peer, rustls ServerConnection (as under tokio-rustls): {:.0} per second ({:.1} us each); liveline / peer: {:.2}",
            N as f64 / in_peer.as_secs_f64(),
            in_peer.as_secs_f64() * 1e6 / N as f64,
            in_peer.as_secs_f64() / in_server.as_secs_f64()
        );
    }
}

/// The same handshake against rustls's buffered server connection; the time spent in its
/// calls.
fn rustls_handshake(
    server_tls: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> Duration {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = Tls::client(Arc::clone(client_cfg), name).unwrap();
    let (mut out, mut plain) = (BytesMut::new(), BytesMut::new());
    client.start(&mut out).unwrap();
    let t = Instant::now();
    let mut server = rustls::ServerConnection::new(Arc::clone(server_tls)).unwrap();
    let mut spent = t.elapsed();
    for _ in 0..6 {
        let mut reply = Vec::new();
        if !out.is_empty() {
            let t = Instant::now();
            let mut input = &out[..];
            while !input.is_empty() {
                server.read_tls(&mut input).unwrap();
                server.process_new_packets().unwrap();
            }
            while server.wants_write() {
                server.write_tls(&mut reply).unwrap();
            }
            spent += t.elapsed();
            out.clear();
        }
        if !reply.is_empty() {
            client
                .handle_read(&mut reply, &mut plain, &mut out)
                .unwrap();
        }
        if !client.is_handshaking() && out.is_empty() {
            break;
        }
    }
    let t = Instant::now();
    drop(server);
    spent + t.elapsed()
}

/// One TLS handshake between a fresh client and the server engine; the time spent in the
/// server's calls, and how the client saw the handshake.
fn handshake(
    server: &mut Engine,
    server_tls: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> (Duration, String) {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = Tls::client(Arc::clone(client_cfg), name).unwrap();
    let (mut out, mut plain) = (BytesMut::new(), BytesMut::new());
    client.start(&mut out).unwrap();
    let mut spent = Duration::ZERO;
    let t = Instant::now();
    let conn = server.handle_accept_tls(Arc::clone(server_tls), t).unwrap();
    spent += t.elapsed();
    for _ in 0..6 {
        if !out.is_empty() {
            let t = Instant::now();
            server.handle_read(conn, &out, t);
            while server.poll_transmit().is_some() {}
            spent += t.elapsed();
            out.clear();
        }
        let mut reply = server.outbound(conn).to_vec();
        if !reply.is_empty() {
            let t = Instant::now();
            server.handle_sent(conn, reply.len(), t);
            spent += t.elapsed();
            client
                .handle_read(&mut reply, &mut plain, &mut out)
                .unwrap();
        }
        if !client.is_handshaking() && out.is_empty() {
            break;
        }
    }
    let t = Instant::now();
    server.close(
        conn,
        liveline::frame::Reason::new(liveline::frame::Code::NO_ERROR, "done"),
        t,
    );
    while server.poll_io().is_some() {}
    while server.poll_transmit().is_some() {}
    while server.poll_event().is_some() {}
    spent += t.elapsed();
    (spent, format!("{:?}", client.handshake_kind()))
}
