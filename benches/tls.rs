//! TLS handshakes on the server side of an engine, in memory: full handshakes (each client
//! with settings of its own, so nothing resumes) and resumed ones (one client's settings,
//! with its session tickets), counting only the time spent in the server engine's calls.
//! Key exchange is X25519 (first in `liveline::tls::server_config`'s order); the server's
//! certificate key is ECDSA P-256, then Ed25519 (cheaper to sign with).
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
    }
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
    }
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
