//! Raw peers: a test's own bytes on a connection to a node, for hostile inputs.

use super::{End, Link, LinkId, Raw, RawId, Sim};
use bytes::Buf;
use bytes::BytesMut;
use std::net::SocketAddr;

impl Sim {
    // ------------------------------------------------------------- raw peers
    /// Opens a raw connection to `addr`: the test writes bytes with [`Sim::raw_send`] and
    /// reads what arrived with [`Sim::raw_received`]. It reads only while
    /// [`Sim::raw_set_reading`] says so (default: reading).
    pub fn raw_connect(&mut self, addr: SocketAddr) -> RawId {
        let raw = self.raws.len();
        self.raws.push(Raw {
            link: None,
            unread: BytesMut::new(),
            received: Vec::new(),
            reading: true,
            closed: false,
        });
        let target = self
            .nodes
            .iter()
            .position(|n| n.alive && !n.refusing && n.listen == Some(addr));
        match target.and_then(|t| self.accept(t)) {
            Some(server) => {
                let link = self.links.insert(Link {
                    ends: [End::Raw { raw }, server],
                    used: [0, 0],
                    last_arrival: [self.now_us; 2],
                    stalled: false,
                });
                self.bind(server, LinkId(link), 1);
                self.raws[raw].link = Some(LinkId(link));
            }
            None => self.raws[raw].closed = true,
        }
        self.pump();
        RawId(raw)
    }

    /// Writes bytes from a raw peer (dropped if its connection is closed).
    pub fn raw_send(&mut self, raw: RawId, bytes: &[u8]) {
        if let Some(link) = self.raws[raw.0].link {
            if self.links.contains(link.0) {
                self.send_on(link.0, 0, BytesMut::from(bytes));
            }
        }
    }

    /// Closes a raw peer's connection (FIN).
    pub fn raw_close(&mut self, raw: RawId) {
        if let Some(link) = self.raws[raw.0].link.take() {
            if self.links.contains(link.0) {
                self.schedule_fin(link.0, 0);
            }
        }
        self.raws[raw.0].closed = true;
    }

    /// Whether the raw peer reads what arrives.
    pub fn raw_set_reading(&mut self, raw: RawId, reading: bool) {
        self.raws[raw.0].reading = reading;
        if reading {
            self.raw_read(raw.0);
        }
    }

    /// Bytes the raw peer has read so far.
    pub fn raw_received(&self, raw: RawId) -> &[u8] {
        &self.raws[raw.0].received
    }

    /// Whether the raw peer's connection was closed (by either side).
    pub fn raw_closed(&self, raw: RawId) -> bool {
        self.raws[raw.0].closed
    }

    pub(super) fn raw_read(&mut self, raw: usize) {
        let r = &mut self.raws[raw];
        if !r.reading || r.unread.is_empty() {
            return;
        }
        let n = r.unread.len();
        r.received.extend_from_slice(&r.unread);
        r.unread.advance(n);
        if let Some(link) = r.link {
            if let Some(l) = self.links.get_mut(link.0) {
                l.used[1] = l.used[1].saturating_sub(n);
            }
        }
    }
}
