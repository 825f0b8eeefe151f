//! The receive path: frames decoded straight from the bytes a read brought, a partial frame
//! kept in the connection's own buffer, payloads split off one shared receive buffer.

use super::conn::{ConnState, RX_CHUNK};
use super::handle::ConnId;
use super::Engine;
use crate::codec::{DecodeError, Decoder};
use crate::frame::{Frame, Reason, Text};
use bytes::Bytes;

impl Engine {
    /// Appends to the shared receive buffer. When its room runs out while payloads still
    /// point into it, a new one of at least `RX_CHUNK` is started: one allocation per
    /// chunk's worth of traffic instead of one per read.
    pub(super) fn fill_rx(&mut self, bytes: &[u8]) {
        if self.rx.capacity() - self.rx.len() < bytes.len() {
            self.rx.reserve(bytes.len().max(RX_CHUNK));
        }
        self.rx.extend_from_slice(bytes);
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
            match b.decoder.decode(&mut b.inbuf) {
                Ok(Some(frame)) => {
                    if !self.handle_frame(index, conn, frame) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
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
        self.fill_rx(p);
        self.rx.split().freeze()
    }

    /// Gives the connection's buffers back to the pool if nothing waits in them.
    pub(super) fn recycle(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let idle = c
            .bufs
            .as_ref()
            .is_some_and(|b| b.inbuf.is_empty() && b.out.is_empty() && b.decoder.is_idle());
        if !idle {
            return;
        }
        if let Some(b) = c.bufs.take() {
            self.pool.give(b);
        }
    }
}
