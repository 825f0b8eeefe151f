//! The receive path: frames decoded straight from the bytes a read brought, a partial frame
//! kept in the connection's own buffer, payloads split off one shared receive buffer. One
//! decode door, `Decoder::decode_slice`, for both: a connection keeps bytes, never decoder
//! state, between reads.

use super::conn::{ConnState, RX_CHUNK};
use super::handle::ConnId;
use super::Engine;
use crate::codec::{DecodeError, Decoder};
use crate::frame::{Frame, Reason, Text};
use bytes::{Buf, Bytes, BytesMut};

impl Engine {
    /// Appends to the shared receive buffer. When its room runs out while payloads still
    /// point into it, a new one of at least `RX_CHUNK` is started: one allocation per
    /// chunk's worth of traffic instead of one per read.
    pub(super) fn fill_rx(&mut self, bytes: &[u8]) {
        fill(&mut self.rx, bytes);
    }

    /// Decodes and handles the whole frames at the front of `bytes`. Returns how many
    /// bytes they took, or `None` if the connection is no longer open for reading.
    pub(super) fn decode_slice(
        &mut self,
        index: usize,
        conn: ConnId,
        bytes: &[u8],
    ) -> Option<usize> {
        let mut used = 0;
        loop {
            match self.rx_decoder.decode_slice(&bytes[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    let frame = frame.into_frame(|p| self.payload(p));
                    if !self.handle_frame(index, conn, frame) {
                        return None;
                    }
                }
                Ok(None) => return Some(used),
                Err(e) => {
                    self.rx_decoder = Decoder::new(self.cfg.max_frame_len);
                    self.decode_failed(index, e);
                    return None;
                }
            }
        }
    }

    /// Decodes and handles the frames waiting in the connection's own buffer. Returns
    /// whether the connection is still open for reading.
    pub(super) fn decode_buffered(&mut self, index: usize, conn: ConnId) -> bool {
        loop {
            let Some(b) = self.conns[index].bufs.as_mut() else {
                return true;
            };
            // The buffer starts at a frame's first byte: only whole frames left it.
            match self.rx_decoder.decode_slice(&b.inbuf[..]) {
                Ok(Some((frame, n))) => {
                    let frame = frame.into_frame(|p| own(&mut self.rx, p));
                    b.inbuf.advance(n);
                    if !self.handle_frame(index, conn, frame) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.rx_decoder = Decoder::new(self.cfg.max_frame_len);
                    self.decode_failed(index, e);
                    return false;
                }
            }
        }
    }

    /// Handles one frame; whether the connection is still open for reading after it.
    pub(super) fn handle_frame(&mut self, index: usize, conn: ConnId, frame: Frame) -> bool {
        self.on_frame(index, frame);
        self.conn(conn)
            .is_some_and(|c| !matches!(c.state, ConnState::Closing | ConnState::Doomed))
    }

    pub(super) fn decode_failed(&mut self, index: usize, e: DecodeError) {
        let reason = Reason {
            code: e.code(),
            text: Text::from(e.to_string()),
        };
        self.fail_with_error(index, reason);
    }

    /// A payload as owned bytes: copied into the shared receive buffer and split off it,
    /// so that it points into memory used again once the application drops it, and steady
    /// traffic allocates (almost) nothing.
    pub(super) fn payload(&mut self, p: &[u8]) -> Bytes {
        own(&mut self.rx, p)
    }

    /// Gives the connection's buffers back to the pool if nothing waits in them.
    pub(super) fn recycle(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let idle = c
            .bufs
            .as_ref()
            .is_some_and(|b| b.inbuf.is_empty() && b.out.is_empty());
        if !idle {
            return;
        }
        if let Some(b) = c.bufs.take() {
            self.pool.give(b);
        }
    }
}

/// Appends to the shared receive buffer `rx`. When its room runs out while payloads still
/// point into it, a new one of at least `RX_CHUNK` is started: one allocation per chunk's
/// worth of traffic instead of one per read.
fn fill(rx: &mut BytesMut, bytes: &[u8]) {
    if rx.capacity() - rx.len() < bytes.len() {
        rx.reserve(bytes.len().max(RX_CHUNK));
    }
    rx.extend_from_slice(bytes);
}

/// `p` as owned bytes: copied into the shared receive buffer and split off it.
fn own(rx: &mut BytesMut, p: &[u8]) -> Bytes {
    fill(rx, p);
    rx.split().freeze()
}
