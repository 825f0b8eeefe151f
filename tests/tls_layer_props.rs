//! Random and corrupted input must never panic: every call returns
//! `Ok` or `Err`, no plaintext is ever produced from forged records, and
//! a failed connection keeps failing.

#[path = "tls_layer_common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use liveline::tls::{Tls, MAX_PENDING_REASSEMBLY};
use proptest::prelude::*;
use rustls::{ClientConfig, ServerConfig};

fn shared_configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| configs(localhost_pki()))
}

/// A fresh client config per case, so that cases do not depend on
/// tickets left by earlier ones.
fn fresh_client() -> Arc<ClientConfig> {
    liveline::tls::client_config(localhost_pki().ca_pem.as_bytes()).unwrap()
}

/// Feeds `bytes` to `peer` cut at `cuts` (positions modulo the length),
/// checking the invariants after every call.
fn feed_in_pieces(peer: &mut Peer, bytes: &[u8], cuts: &[usize]) {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    for w in points.windows(2) {
        let was_failed = peer.tls.has_failed();
        let result = peer.feed(&bytes[w[0]..w[1]]);
        if was_failed {
            assert!(result.is_err(), "a failed connection must keep failing");
        }
        assert!(peer.tls.buffered_len() <= MAX_PENDING_REASSEMBLY);
    }
}

/// Byte strings that look like TLS records (plausible headers, random
/// bodies), so the input gets past the header checks.
fn record_like() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop_oneof![Just(20u8), Just(21), Just(22), Just(23), any::<u8>()],
        prop_oneof![Just([3u8, 3]), Just([3, 1]), any::<[u8; 2]>()],
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(typ, version, body)| {
            let mut r = vec![typ, version[0], version[1]];
            r.extend_from_slice(&(body.len() as u16).to_be_bytes());
            r.extend_from_slice(&body);
            r
        });
    prop::collection::vec(record, 1..6).prop_map(|rs| rs.concat())
}

fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..3000), record_like()]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn junk_to_a_fresh_server(bytes in junk(), cuts in cuts()) {
        let (server, _) = shared_configs();
        let mut s = Peer::new(Tls::server(server.clone()).unwrap());
        feed_in_pieces(&mut s, &bytes, &cuts);
        prop_assert!(s.plain.is_empty());
    }

    #[test]
    fn junk_to_a_client_waiting_for_server_hello(bytes in junk(), cuts in cuts()) {
        let (server, _) = shared_configs();
        let (mut c, _s) = pair_with(server, &fresh_client(), "localhost");
        feed_in_pieces(&mut c, &bytes, &cuts);
        prop_assert!(c.plain.is_empty());
    }

    #[test]
    fn junk_in_the_middle_of_a_handshake(
        bytes in junk(),
        cuts in cuts(),
        keep in any::<usize>(),
        to_client in any::<bool>(),
    ) {
        let (server, _) = shared_configs();
        let (mut c, mut s) = pair_with(server, &fresh_client(), "localhost");
        // ClientHello reaches the server, which answers with its flight.
        deliver(&mut c, &mut s, &mut || usize::MAX).unwrap();
        if to_client {
            // Part of the real server flight, then junk.
            let flight = s.outbox.split();
            let keep = keep % (flight.len() + 1);
            let mut input = flight[..keep].to_vec();
            input.extend_from_slice(&bytes);
            feed_in_pieces(&mut c, &input, &cuts);
            prop_assert!(c.plain.is_empty());
        } else {
            // The server gets junk where the client's Finished should be.
            feed_in_pieces(&mut s, &bytes, &cuts);
            prop_assert!(s.plain.is_empty());
        }
    }

    #[test]
    fn junk_after_the_handshake(bytes in junk(), cuts in cuts(), to_client in any::<bool>()) {
        let (server, _) = shared_configs();
        let (mut c, mut s) = handshake(server, &fresh_client());
        let target = if to_client { &mut c } else { &mut s };
        feed_in_pieces(target, &bytes, &cuts);
        // Forged records never authenticate.
        prop_assert!(target.plain.is_empty());
        // Whatever happened, the calls stay well-behaved.
        let _ = target.send(b"after junk");
        let _ = target.tls.close(&mut target.outbox);
    }

    #[test]
    fn corrupted_byte_in_a_real_session(
        flip_at in any::<usize>(),
        flip_with in 1u8..=255,
        piece in 1usize..2000,
        corrupt_client_bound in any::<bool>(),
    ) {
        let (server, _) = shared_configs();
        let (mut c, mut s) = pair_with(server, &fresh_client(), "localhost");
        c.send(b"request").unwrap();
        s.send(b"response").unwrap();
        let mut corrupted = false;
        let mut failed = false;
        'outer: for _ in 0..20 {
            let mut moved = false;
            for to_client in [false, true] {
                let (from, to) = if to_client { (&mut s, &mut c) } else { (&mut c, &mut s) };
                if from.outbox.is_empty() {
                    continue;
                }
                moved = true;
                let mut bytes = from.outbox.split().to_vec();
                if !corrupted && to_client == corrupt_client_bound {
                    let i = flip_at % bytes.len();
                    bytes[i] ^= flip_with;
                    corrupted = true;
                }
                for chunk in bytes.chunks(piece) {
                    if to.feed(chunk).is_err() {
                        failed = true;
                        break 'outer;
                    }
                }
            }
            if !moved {
                break;
            }
        }
        // Either the corruption was detected, or it hit a byte with no
        // effect and the data arrived intact; never wrong plaintext.
        if !failed {
            prop_assert!(s.plain.is_empty() || &s.plain[..] == b"request");
            prop_assert!(c.plain.is_empty() || &c.plain[..] == b"response");
        }
    }

    #[test]
    fn arbitrary_piece_sizes_complete_the_session(
        sizes in prop::collection::vec(1usize..3000, 1..16),
        len_up in 0usize..40_000,
        len_down in 0usize..40_000,
    ) {
        let (server, _) = shared_configs();
        let (mut c, mut s) = pair_with(server, &fresh_client(), "localhost");
        let mut i = 0;
        let mut piece = move || {
            i += 1;
            sizes[i % sizes.len()]
        };
        let up: Vec<u8> = (0..len_up).map(|i| i as u8).collect();
        let down: Vec<u8> = (0..len_down).map(|i| (i * 7) as u8).collect();
        c.send(&up).unwrap();
        shuttle(&mut c, &mut s, &mut piece).unwrap();
        s.send(&down).unwrap();
        shuttle(&mut c, &mut s, &mut piece).unwrap();
        prop_assert_eq!(&s.plain[..], &up[..]);
        prop_assert_eq!(&c.plain[..], &down[..]);
        prop_assert_eq!(c.tls.buffered_len(), 0);
        prop_assert_eq!(s.tls.buffered_len(), 0);
    }
}
