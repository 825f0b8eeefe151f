//! The record layer that takes over after the handshake, against rustls's own buffered
//! connections as the independent peer: data both ways, KeyUpdates started by either side,
//! alerts, and damaged records.

#[path = "tls_layer_common/mod.rs"]
mod common;

use bytes::BytesMut;
use common::*;
use liveline::tls::{Progress, Tls, TlsError};
use rustls::{ClientConnection, ServerConnection};
use std::io::{Read, Write};
use std::sync::Arc;

/// rustls's buffered connection, client or server, as one peer.
trait Stack {
    fn conn(&mut self) -> &mut rustls::ConnectionCommon<Self::Data>;
    type Data;
}

impl Stack for ClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn conn(&mut self) -> &mut rustls::ConnectionCommon<Self::Data> {
        self
    }
}

impl Stack for ServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn conn(&mut self) -> &mut rustls::ConnectionCommon<Self::Data> {
        self
    }
}

/// Moves bytes both ways between our `Tls` (in `ours`) and rustls's connection until
/// neither has anything to send; returns what rustls received as plaintext.
fn exchange<S: Stack>(ours: &mut Peer, theirs: &mut S) -> Result<Vec<u8>, TlsError> {
    let mut received = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        let mut wire = Vec::new();
        while theirs.conn().wants_write() {
            theirs.conn().write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            moved = true;
            ours.feed(&wire)?;
        }
        if !ours.outbox.is_empty() {
            moved = true;
            let bytes = ours.outbox.split();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                theirs.conn().read_tls(&mut rest).unwrap();
                theirs
                    .conn()
                    .process_new_packets()
                    .expect("rustls accepts our records");
                // rustls bounds its plaintext buffer: empty it as it fills.
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = theirs.conn().reader().read(&mut buf) {
                    received.extend_from_slice(&buf[..n]);
                }
            }
        }
        if !moved {
            return Ok(received);
        }
    }
    panic!("the exchange did not settle");
}

fn our_server() -> (Peer, ClientConnection) {
    let (server, client) = configs(localhost_pki());
    let ours = Peer::new(Tls::server(server).unwrap());
    let theirs = ClientConnection::new(client, name("localhost")).unwrap();
    (ours, theirs)
}

fn our_client() -> (Peer, ServerConnection) {
    let (server, client) = configs(localhost_pki());
    let mut ours = Peer::new(Tls::client(client, name("localhost")).unwrap());
    ours.tls.start(&mut ours.outbox).unwrap();
    let theirs = ServerConnection::new(server).unwrap();
    (ours, theirs)
}

#[test]
fn both_sides_hand_over_after_the_handshake_and_talk_to_rustls() {
    let (mut ours, mut theirs) = our_server();
    exchange(&mut ours, &mut theirs).unwrap();
    assert!(ours.tls.is_handed_over());
    theirs.writer().write_all(b"from rustls").unwrap();
    ours.send(b"from liveline").unwrap();
    let got = exchange(&mut ours, &mut theirs).unwrap();
    assert_eq!(got, b"from liveline");
    assert_eq!(&ours.plain[..], b"from rustls");

    let (mut ours, mut theirs) = our_client();
    exchange(&mut ours, &mut theirs).unwrap();
    assert!(ours.tls.is_handed_over());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ours.send(&big).unwrap();
    theirs.writer().write_all(&big[..40_000]).unwrap();
    let got = exchange(&mut ours, &mut theirs).unwrap();
    assert_eq!(got, big);
    assert_eq!(&ours.plain[..], &big[..40_000]);
}

#[test]
fn a_key_update_from_the_peer_is_followed_and_answered() {
    let (mut ours, mut theirs) = our_server();
    exchange(&mut ours, &mut theirs).unwrap();
    theirs.writer().write_all(b"old keys;").unwrap();
    // rustls asks for an update both ways (update_requested).
    theirs.refresh_traffic_keys().unwrap();
    theirs.writer().write_all(b"new keys").unwrap();
    exchange(&mut ours, &mut theirs).unwrap();
    assert_eq!(&ours.plain[..], b"old keys;new keys");
    // Our answer switched our sending keys too; rustls reads with its new ones.
    ours.send(b"answer under new keys").unwrap();
    assert_eq!(
        exchange(&mut ours, &mut theirs).unwrap(),
        b"answer under new keys"
    );
    // A second round, on our client side this time.
    let (mut ours, mut theirs) = our_client();
    exchange(&mut ours, &mut theirs).unwrap();
    for round in 0..3u8 {
        theirs.refresh_traffic_keys().unwrap();
        theirs.writer().write_all(&[round]).unwrap();
        ours.send(&[round + 10]).unwrap();
        assert_eq!(exchange(&mut ours, &mut theirs).unwrap(), [round + 10]);
    }
    assert_eq!(&ours.plain[..], &[0, 1, 2]);
}

#[test]
fn our_keys_are_replaced_at_the_limit_and_rustls_follows() {
    let (mut ours, mut theirs) = our_server();
    exchange(&mut ours, &mut theirs).unwrap();
    ours.tls.update_keys_after(3);
    let mut expected = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![i; 1 + usize::from(i) * 1000];
        ours.send(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    // 20 sends make 21 data records (one of 17 KB is split); with a KeyUpdate record
    // before every third, the wire carries at least 28 records.
    let mut records = 0;
    let mut at = 0;
    while let Some(h) = ours.outbox.get(at..at + 5) {
        at += 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
        records += 1;
    }
    assert_eq!(at, ours.outbox.len());
    assert!(records >= 28, "{records} records");
    // rustls opens them all, following each KeyUpdate.
    assert_eq!(exchange(&mut ours, &mut theirs).unwrap(), expected);
    // rustls's own data still reaches us: our receiving keys were untouched.
    theirs.writer().write_all(b"still here").unwrap();
    exchange(&mut ours, &mut theirs).unwrap();
    assert_eq!(&ours.plain[..], b"still here");
}

#[test]
fn close_notify_from_rustls_ends_the_stream() {
    let (mut ours, mut theirs) = our_server();
    exchange(&mut ours, &mut theirs).unwrap();
    theirs.writer().write_all(b"bye").unwrap();
    theirs.send_close_notify();
    exchange(&mut ours, &mut theirs).unwrap();
    assert_eq!(ours.last.clone().unwrap().unwrap(), Progress::Closed);
    assert_eq!(&ours.plain[..], b"bye");
    // We answer with our own close_notify, which rustls sees as a clean end.
    assert!(ours.tls.close(&mut ours.outbox));
    exchange(&mut ours, &mut theirs).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(theirs.reader().read(&mut buf).unwrap(), 0);
}

#[test]
fn a_damaged_record_is_refused_with_bad_record_mac() {
    let (mut ours, mut theirs) = our_server();
    exchange(&mut ours, &mut theirs).unwrap();
    theirs.writer().write_all(b"precious").unwrap();
    let mut wire = Vec::new();
    theirs.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let err = ours.feed(&wire).unwrap_err();
    assert!(
        matches!(err, TlsError::Protocol(rustls::Error::DecryptError)),
        "{err:?}"
    );
    assert!(ours.plain.is_empty());
    // The alert we sent is what rustls reports.
    let bytes = ours.outbox.split();
    theirs.read_tls(&mut &bytes[..]).unwrap();
    let alert = theirs.process_new_packets().unwrap_err();
    assert_eq!(
        alert,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
    // Dead from then on.
    assert!(ours.feed(&[23, 3, 3, 0, 1, 0]).is_err());
    assert!(ours.send(b"x").is_err());
}

#[test]
fn a_configuration_that_keeps_its_secrets_stays_on_rustls_to_the_end() {
    let (server, client) = configs(localhost_pki());
    let mut server = (*server).clone();
    server.enable_secret_extraction = false;
    let server = Arc::new(server);
    let (mut c, mut s) = handshake(&server, &client);
    assert!(c.tls.is_handed_over());
    assert!(!s.tls.is_handed_over());
    c.send(b"ping").unwrap();
    s.send(b"pong").unwrap();
    shuttle(&mut c, &mut s, &mut || 7).unwrap();
    assert_eq!(&s.plain[..], b"ping");
    assert_eq!(&c.plain[..], b"pong");
    let mut out = BytesMut::new();
    assert!(s.tls.close(&mut out));
}
