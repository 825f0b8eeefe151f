#[path = "tls_layer_common/mod.rs"]
mod common;

use bytes::BytesMut;
use common::*;
use liveline::tls::{client_config, server_config, Progress, Tls, TlsError, MAX_RECORD_LEN};
use rustls::{AlertDescription, HandshakeKind};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn handshake_and_data_both_ways_in_many_piece_sizes() {
    let (server, _) = configs(localhost_pki());
    for piece_size in [1usize, 2, 3, 4, 5, 6, 7, 13, 100, 1000, 4096, usize::MAX] {
        // A fresh client configuration each time, so that no ticket from
        // the previous round turns this into a resumption.
        let client = client_config(localhost_pki().ca_pem.as_bytes()).unwrap();
        let (mut c, mut s) = pair_with(&server, &client, "localhost");
        assert!(c.tls.is_handshaking() && s.tls.is_handshaking());
        let mut piece = || piece_size;
        shuttle(&mut c, &mut s, &mut piece).unwrap();
        assert_eq!(c.last.clone().unwrap().unwrap(), Progress::Ready);
        assert_eq!(s.last.clone().unwrap().unwrap(), Progress::Ready);
        assert_eq!(c.tls.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(s.tls.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(c.tls.buffered_len(), 0);
        assert_eq!(s.tls.buffered_len(), 0);

        let up = pattern(70_000, 1);
        let down = pattern(50_001, 2);
        c.send(b"hello server\n").unwrap();
        c.send(&up).unwrap();
        s.send(b"hello client\n").unwrap();
        s.send(&down).unwrap();
        shuttle(&mut c, &mut s, &mut piece).unwrap();
        assert_eq!(&s.plain[..13], b"hello server\n");
        assert_eq!(&s.plain[13..], &up[..], "piece size {piece_size}");
        assert_eq!(&c.plain[..13], b"hello client\n");
        assert_eq!(&c.plain[13..], &down[..], "piece size {piece_size}");
        assert_eq!(c.tls.buffered_len(), 0);
        assert_eq!(s.tls.buffered_len(), 0);
    }
}

#[test]
fn irregular_piece_sizes() {
    let (server, client) = configs(localhost_pki());
    // A deterministic but irregular sequence of sizes.
    let mut state = 0x2545_f491_u32;
    let mut piece = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        match state % 4 {
            0 => 1 + (state as usize >> 8) % 5,
            1 => 1 + (state as usize >> 8) % 300,
            2 => 1 + (state as usize >> 8) % 20_000,
            _ => usize::MAX,
        }
    };
    let (mut c, mut s) = pair_with(&server, &client, "localhost");
    shuttle(&mut c, &mut s, &mut piece).unwrap();
    for round in 0..20u8 {
        let a = pattern(1 + round as usize * 997, round);
        let b = pattern(5 + round as usize * 1531, round ^ 0x55);
        c.send(&a).unwrap();
        s.send(&b).unwrap();
        shuttle(&mut c, &mut s, &mut piece).unwrap();
        assert_eq!(&s.plain.split()[..], &a[..]);
        assert_eq!(&c.plain.split()[..], &b[..]);
    }
}

#[test]
fn data_written_before_handshake_completes_is_queued_then_sent() {
    let (server, client) = configs(localhost_pki());
    let s = Tls::server(server.clone()).unwrap();
    let c = Tls::client(client.clone(), name("localhost")).unwrap();
    let (mut c, mut s) = (Peer::new(c), Peer::new(s));
    c.send(b"early request").unwrap();
    assert!(
        c.outbox.is_empty(),
        "nothing may be sent before the handshake"
    );
    c.tls.start(&mut c.outbox).unwrap();
    deliver(&mut c, &mut s, &mut || usize::MAX).unwrap();
    s.send(b"early response").unwrap();
    shuttle(&mut c, &mut s, &mut || usize::MAX).unwrap();
    assert_eq!(&s.plain[..], b"early request");
    assert_eq!(&c.plain[..], b"early response");
}

#[test]
fn close_notify_maps_to_closed_and_peer_closed() {
    let (server, client) = configs(localhost_pki());
    let (mut c, mut s) = handshake(&server, &client);
    c.send(b"last words").unwrap();
    assert!(c.tls.close(&mut c.outbox));
    assert!(!c.tls.close(&mut c.outbox), "close_notify is sent once");
    assert!(matches!(c.send(b"more"), Err(TlsError::Closed)));

    let progress = deliver(&mut c, &mut s, &mut || usize::MAX);
    assert!(progress.is_ok());
    assert_eq!(s.last.clone().unwrap().unwrap(), Progress::Closed);
    assert!(s.tls.peer_closed());
    assert_eq!(&s.plain[..], b"last words");
    // Bytes after close_notify are ignored.
    assert_eq!(s.feed(&[23, 3, 3, 0, 1, 0]).unwrap(), Progress::Closed);

    // Half-closed: the server may still send, then closes too.
    s.send(b"goodbye").unwrap();
    assert!(s.tls.close(&mut s.outbox));
    deliver(&mut s, &mut c, &mut || 3).unwrap();
    assert_eq!(c.last.clone().unwrap().unwrap(), Progress::Closed);
    assert!(c.tls.peer_closed());
    assert_eq!(&c.plain[..], b"goodbye");
    assert!(c.outbox.is_empty());
}

#[test]
fn close_during_handshake_writes_nothing() {
    let (server, client) = configs(localhost_pki());
    let (mut c, _s) = pair_with(&server, &client, "localhost");
    c.outbox.clear();
    assert!(!c.tls.close(&mut c.outbox));
    assert!(c.outbox.is_empty());
    assert!(matches!(c.send(b"x"), Err(TlsError::Closed)));
}

#[test]
fn certificate_for_another_name_is_refused() {
    let (server, client) = configs(localhost_pki());
    let (mut c, mut s) = pair_with(&server, &client, "db.example.net");
    let err = shuttle(&mut c, &mut s, &mut || usize::MAX).unwrap_err();
    assert!(matches!(err, TlsError::BadCertificate(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not valid for name"), "{msg}");
    assert!(msg.contains("db.example.net"), "{msg}");
    assert!(c.tls.has_failed());
    // The client told the server why.
    let alert = c.outbox.split();
    assert!(!alert.is_empty());
    let err = s.feed(&alert).unwrap_err();
    assert!(
        matches!(err, TlsError::Alert(AlertDescription::BadCertificate)),
        "{err:?}"
    );
    assert!(err.to_string().contains("BadCertificate"), "{err}");
    // Later calls repeat the failure.
    assert!(matches!(
        c.feed(b"anything"),
        Err(TlsError::BadCertificate(_))
    ));
    assert!(matches!(
        c.send(b"anything"),
        Err(TlsError::BadCertificate(_))
    ));
}

#[test]
fn certificate_from_unknown_ca_is_refused() {
    let (server, _) = configs(localhost_pki());
    let other = make_pki_with_ca_name("another CA", &["localhost"]);
    let client = client_config(other.ca_pem.as_bytes()).unwrap();
    let (mut c, mut s) = pair_with(&server, &client, "localhost");
    let err = shuttle(&mut c, &mut s, &mut || usize::MAX).unwrap_err();
    assert!(matches!(err, TlsError::BadCertificate(_)), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn garbage_instead_of_client_hello_is_refused() {
    let (server, _) = configs(localhost_pki());
    let mut s = Peer::new(Tls::server(server.clone()).unwrap());
    let err = s
        .feed(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
    assert!(s.plain.is_empty());
    // rustls answers with a plaintext fatal alert record.
    assert_eq!(s.outbox.first(), Some(&21u8), "{:?}", &s.outbox[..]);
    assert!(s.tls.has_failed());
    assert!(s.feed(b"again").is_err());

    // A well-formed handshake record carrying nonsense.
    let mut s = Peer::new(Tls::server(server.clone()).unwrap());
    let mut rec = vec![22, 3, 1, 0, 40, 1, 0, 0, 36];
    rec.extend_from_slice(&[0xAB; 36]);
    let err = s.feed(&rec).unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
    assert!(!s.outbox.is_empty());

    // Application data before any handshake.
    let mut s = Peer::new(Tls::server(server).unwrap());
    let err = s.feed(&[23, 3, 3, 0, 3, 1, 2, 3]).unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
}

#[test]
fn oversized_record_header_is_refused_without_buffering() {
    let (server, client) = configs(localhost_pki());
    let (mut c, mut s) = handshake(&server, &client);
    // Declares 65,535 bytes: refused as soon as the header is seen.
    let err = s.feed(&[23, 3, 3, 0xff, 0xff]).unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("MessageTooLarge"), "{err}");
    assert_eq!(s.tls.buffered_len(), 0);
    assert!(!s.outbox.is_empty(), "an alert is queued for the peer");
    // Same through the slow path (header split across reads).
    c.feed(&[23, 3]).unwrap();
    assert_eq!(c.tls.buffered_len(), 2);
    let err = c.feed(&[3, 0x48, 0x01]).unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
    assert_eq!(c.tls.buffered_len(), 0);
    assert!(!c.outbox.is_empty(), "an alert is queued for the peer");
}

#[test]
fn partial_record_buffer_is_bounded_and_released() {
    let (server, client) = configs(localhost_pki());
    let (mut c, mut s) = handshake(&server, &client);
    let data = pattern(16 * 1024, 7);
    c.send(&data).unwrap();
    let wire = c.outbox.split();
    assert!(wire.len() <= MAX_RECORD_LEN);
    // Half a record is held; the rest completes it and frees the buffer.
    let half = wire.len() / 2;
    assert_eq!(s.feed(&wire[..half]).unwrap(), Progress::Ready);
    assert_eq!(s.tls.buffered_len(), half);
    assert!(s.plain.is_empty());
    assert_eq!(s.feed(&wire[half..]).unwrap(), Progress::Ready);
    assert_eq!(s.tls.buffered_len(), 0);
    assert_eq!(&s.plain[..], &data[..]);

    // Two records, the second split: only its received part is held.
    c.send(b"abc").unwrap();
    c.send(&data).unwrap();
    let wire = c.outbox.split();
    s.plain.clear();
    s.feed(&wire[..wire.len() - 10]).unwrap();
    assert_eq!(&s.plain[..], b"abc");
    assert!(s.tls.buffered_len() < MAX_RECORD_LEN);
    assert!(s.tls.buffered_len() > 16 * 1024 - 10);
    s.feed(&wire[wire.len() - 10..]).unwrap();
    assert_eq!(s.tls.buffered_len(), 0);
    assert_eq!(&s.plain[3..], &data[..]);
}

#[test]
fn resumed_handshake_uses_a_ticket() {
    let (server, client) = configs(localhost_pki());
    let (c, s) = handshake(&server, &client);
    assert_eq!(c.tls.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(s.tls.handshake_kind(), Some(HandshakeKind::Full));

    for _ in 0..3 {
        let (mut c, mut s) = handshake(&server, &client);
        assert_eq!(c.tls.handshake_kind(), Some(HandshakeKind::Resumed));
        assert_eq!(s.tls.handshake_kind(), Some(HandshakeKind::Resumed));
        c.send(b"ping").unwrap();
        shuttle(&mut c, &mut s, &mut || usize::MAX).unwrap();
        assert_eq!(&s.plain[..], b"ping");
    }

    // A different client configuration has no tickets: full handshake.
    let fresh = client_config(localhost_pki().ca_pem.as_bytes()).unwrap();
    let (c, _s) = handshake(&server, &fresh);
    assert_eq!(c.tls.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn key_exchange_prefers_x25519() {
    let (server, client) = configs(localhost_pki());
    assert_eq!(
        server.crypto_provider().kx_groups[0].name(),
        rustls::NamedGroup::X25519
    );
    assert_eq!(
        client.crypto_provider().kx_groups[0].name(),
        rustls::NamedGroup::X25519
    );
    let (c, s) = handshake(&server, &client);
    assert!(c.tls.negotiated_cipher_suite().is_some());
    assert_eq!(
        c.tls.negotiated_key_exchange_group(),
        Some(rustls::NamedGroup::X25519)
    );
    assert_eq!(
        s.tls.negotiated_key_exchange_group(),
        Some(rustls::NamedGroup::X25519)
    );
}

#[test]
fn config_helpers_explain_what_is_wrong() {
    let pki = localhost_pki();
    let other = make_pki(&["localhost"]);
    let chain = pki.chain_pem.as_bytes();
    let key = pki.key_pem.as_bytes();

    let err = server_config(b"", key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no certificate found in certificate chain PEM"
    );

    // A key where the certificate should be.
    let err = server_config(key, key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

    let err = server_config(chain, b"").unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey), "{err:?}");
    assert_eq!(err.to_string(), "no private key found in key PEM");

    let err = server_config(chain, chain).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey), "{err:?}");

    let err = server_config(chain, other.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n";
    let err = server_config(broken.as_bytes(), key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate chain"), "{err}");

    let truncated = &pki.chain_pem[..pki.chain_pem.len() / 2];
    let err = server_config(truncated.as_bytes(), key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");

    let junk_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let err = server_config(chain, junk_key.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::InvalidCredential { .. }), "{err:?}");

    let err = client_config(b"no pem here").unwrap_err();
    assert!(
        matches!(err, TlsError::NoCertificate { what: "CA" }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "no certificate found in CA PEM");

    assert!(server_config(chain, key).is_ok());
    assert!(client_config(pki.ca_pem.as_bytes()).is_ok());
}

#[test]
fn server_writes_nothing_on_start_and_client_writes_hello() {
    let (server, client) = configs(localhost_pki());
    let mut s = Tls::server(server).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(s.start(&mut out).unwrap(), Progress::Handshaking);
    assert!(out.is_empty());
    let mut c = Tls::client(client, name("localhost")).unwrap();
    assert_eq!(c.start(&mut out).unwrap(), Progress::Handshaking);
    assert_eq!(out.first(), Some(&22u8));
    let len = out.len();
    // A second start writes nothing more.
    c.start(&mut out).unwrap();
    assert_eq!(out.len(), len);
}

/// Peers that cut every record (handshake messages included) to a few
/// dozen bytes: rustls must then reassemble handshake messages across
/// records, holding already-processed fragments in our buffer between
/// reads.
#[test]
fn handshake_messages_fragmented_across_tiny_records() {
    let (server, _) = configs(localhost_pki());
    for fragment in [32usize, 64, 200] {
        let mut server_cfg = (*server).clone();
        server_cfg.max_fragment_size = Some(fragment);
        let server_cfg = std::sync::Arc::new(server_cfg);
        let client = client_config(localhost_pki().ca_pem.as_bytes()).unwrap();
        let mut client_cfg = (*client).clone();
        client_cfg.max_fragment_size = Some(fragment);
        let client_cfg = std::sync::Arc::new(client_cfg);
        for piece_size in [1usize, 7, 50, 333, 5000, usize::MAX] {
            let (mut c, mut s) = pair_with(&server_cfg, &client_cfg, "localhost");
            let mut max_buffered = 0;
            let mut piece = || piece_size;
            for _ in 0..100 {
                let a = deliver(&mut c, &mut s, &mut piece).unwrap();
                max_buffered = max_buffered.max(s.tls.buffered_len());
                let b = deliver(&mut s, &mut c, &mut piece).unwrap();
                max_buffered = max_buffered.max(c.tls.buffered_len());
                if !a && !b {
                    break;
                }
            }
            assert!(!c.tls.is_handshaking() && !s.tls.is_handshaking());
            assert!(max_buffered < 8 * 1024, "{max_buffered}");
            let data = pattern(3000, 9);
            c.send(&data).unwrap();
            s.send(&data).unwrap();
            shuttle(&mut c, &mut s, &mut piece).unwrap();
            assert_eq!(&s.plain[..], &data[..]);
            assert_eq!(&c.plain[..], &data[..]);
            assert_eq!(c.tls.buffered_len(), 0);
            assert_eq!(s.tls.buffered_len(), 0);
        }
    }
}
