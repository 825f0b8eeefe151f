//! The loop over rustls's unbuffered states: what each state asks of the caller's
//! buffers, and the record bookkeeping around it.

use super::*;

/// Where a `drive` loop ended up.
pub(super) enum Step {
    Continue,
    /// rustls needs more input (or is idle in `WriteTraffic`).
    Rest {
        writable: bool,
    },
    Closed,
    Fail(TlsError),
}

/// Calls `process_tls_records` on `buf` until rustls needs more input,
/// handling each state it yields:
///
/// * `ReadTraffic` / `ReadEarlyData`: decrypted records go to `plain`;
/// * `EncodeTlsData`: the handshake or alert record is encoded into `out`;
/// * `TransmitTlsData`: the caller transmits `out`, so it is marked done;
/// * `PeerClosed`: remembered, and processing continues so that pending
///   output is still produced;
/// * `BlockedHandshake`: stop, more input is needed;
/// * `WriteTraffic`: stop; if the handshake is complete, queued data and
///   `send` are encrypted into `out` first;
/// * `Closed`: stop.
///
/// Returns how many bytes from the front of `buf` rustls released. On a
/// rustls error, any alert rustls queued is still encoded into `out`.
pub(super) fn drive<C: Side>(
    conn: &mut C,
    buf: &mut [u8],
    mut send: Send<'_>,
    sinks: &mut Sinks<'_>,
) -> Result<usize, TlsError> {
    let mut off = 0usize;
    loop {
        let established = !conn.common().is_handshaking();
        off = off.min(buf.len());
        let UnbufferedStatus { discard, state } = conn.process(&mut buf[off..]);
        let mut discard = discard;
        let step = match state {
            Err(e) => Step::Fail(TlsError::from_connection(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut step = Step::Continue;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            sinks.plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            step = Step::Fail(TlsError::from_connection(e));
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::ReadEarlyData(mut early)) => {
                match C::take_early_data(&mut early, sinks.plain) {
                    Ok(extra) => {
                        discard += extra;
                        Step::Continue
                    }
                    Err(e) => Step::Fail(TlsError::from_connection(e)),
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                match encode_into(&mut encode, sinks.out) {
                    Ok(()) => Step::Continue,
                    Err(e) => Step::Fail(e),
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // Everything encoded so far sits in `out`, which the caller
                // transmits after this call returns.
                transmit.done();
                Step::Continue
            }
            Ok(ConnectionState::PeerClosed) => {
                *sinks.peer_closed = true;
                Step::Continue
            }
            Ok(ConnectionState::Closed) => Step::Closed,
            Ok(ConnectionState::BlockedHandshake) => Step::Rest { writable: false },
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                if established {
                    match write_traffic(&mut traffic, sinks, send) {
                        Ok(()) => {
                            send = Send::Nothing;
                            Step::Rest { writable: true }
                        }
                        Err(e) => Step::Fail(e),
                    }
                } else {
                    Step::Rest { writable: true }
                }
            }
            Ok(_) => Step::Fail(TlsError::Protocol(rustls::Error::General(
                "unsupported TLS connection state".into(),
            ))),
        };
        off += discard;
        match step {
            Step::Continue => {}
            Step::Rest { writable } => {
                let work = !sinks.queued.is_empty() || !matches!(send, Send::Nothing);
                if writable && !established && work && !conn.common().is_handshaking() {
                    // The handshake completed during this call: come back
                    // to `WriteTraffic` once more to flush queued data.
                    continue;
                }
                return unsent(send).map(|()| off);
            }
            Step::Closed => return unsent(send).map(|()| off),
            Step::Fail(e) => {
                flush_alerts(conn, buf, off, sinks.out);
                return Err(e);
            }
        }
    }
}

/// Callers only ask for writes on an established connection, where rustls
/// offers `WriteTraffic`; if it did not (it closed the connection itself),
/// say so rather than silently dropping the bytes.
pub(super) fn unsent(send: Send<'_>) -> Result<(), TlsError> {
    match send {
        Send::Nothing => Ok(()),
        Send::Data(_) | Send::CloseNotify => Err(TlsError::Closed),
    }
}

/// After rustls reported an error it may have queued an alert; encode it.
///
/// rustls does not poison the connection after an error found while
/// splitting records, so calling `process_tls_records` once nothing is
/// queued would parse the same bad bytes again (and queue a second fatal
/// alert). Only call it while output is queued: rustls then yields
/// `EncodeTlsData` before looking at the input at all.
pub(super) fn flush_alerts<C: Side>(conn: &mut C, buf: &mut [u8], off: usize, out: &mut BytesMut) {
    // A fatal error queues at most a record or two; the bound keeps the
    // loop finite whatever happens.
    for _ in 0..8 {
        if !conn.common().wants_write() {
            return;
        }
        let start = off.min(buf.len());
        let UnbufferedStatus { state, .. } = conn.process(&mut buf[start..]);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if encode_into(&mut encode, out).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Encodes one pending TLS record into `out`, growing it to the exact size.
pub(super) fn encode_into<D>(
    encode: &mut EncodeTlsData<'_, D>,
    out: &mut BytesMut,
) -> Result<(), TlsError> {
    // Probe with an empty slice to learn the exact record size.
    let required = match encode.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(e)) => e.required_size,
        Err(EncodeError::AlreadyEncoded) => return Ok(()),
    };
    let start = out.len();
    out.resize(start + required, 0);
    match encode.encode(&mut out[start..]) {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(TlsError::Protocol(rustls::Error::General(format!(
                "encoding a TLS record failed: {e}"
            ))))
        }
    }
}

/// Encrypts queued bytes, then `send`, in `WriteTraffic`.
pub(super) fn write_traffic<D>(
    traffic: &mut WriteTraffic<'_, D>,
    sinks: &mut Sinks<'_>,
    send: Send<'_>,
) -> Result<(), TlsError> {
    if !sinks.queued.is_empty() {
        let queued = std::mem::take(sinks.queued);
        encrypt_into(traffic, &queued, sinks.out)?;
    }
    match send {
        Send::Nothing => Ok(()),
        Send::Data(data) => encrypt_into(traffic, data, sinks.out),
        Send::CloseNotify => with_output_space(sinks.out, RECORD_OVERHEAD_ESTIMATE, |buf| {
            traffic.queue_close_notify(buf)
        }),
    }
}

pub(super) fn encrypt_into<D>(
    traffic: &mut WriteTraffic<'_, D>,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<(), TlsError> {
    let records = data.len() / (16 * 1024) + 1;
    let estimate = data.len() + records * RECORD_OVERHEAD_ESTIMATE;
    with_output_space(out, estimate, |buf| traffic.encrypt(data, buf))
}

/// Grows `out` by `estimate` zero bytes, lets `write` fill them, and retries
/// once with the exact size if rustls asks for more.
pub(super) fn with_output_space(
    out: &mut BytesMut,
    estimate: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut size = estimate;
    for _ in 0..2 {
        out.resize(start + size, 0);
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) => size = e.required_size,
            Err(EncryptError::EncryptExhausted) => {
                out.truncate(start);
                return Err(TlsError::KeysExhausted);
            }
        }
    }
    out.truncate(start);
    Err(TlsError::Protocol(rustls::Error::General(
        "could not size the TLS output buffer".into(),
    )))
}

/// Payload length declared by a record header (`header` has >= 5 bytes).
pub(super) fn declared_len(header: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// Length of the prefix of `buf` made of complete records (by header).
pub(super) fn complete_records_len(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + HEADER_LEN) {
        let end = at + HEADER_LEN + declared_len(header);
        if end > buf.len() {
            break;
        }
        at = end;
    }
    at
}

/// Bytes still missing to complete the record that starts `partial`
/// (if the header is incomplete, only the missing header bytes count).
pub(super) fn record_missing(partial: &[u8]) -> usize {
    match partial.get(..HEADER_LEN) {
        Some(header) => {
            let total = HEADER_LEN + declared_len(header);
            if total > MAX_RECORD_LEN {
                0
            } else {
                total.saturating_sub(partial.len())
            }
        }
        None => HEADER_LEN - partial.len(),
    }
}
