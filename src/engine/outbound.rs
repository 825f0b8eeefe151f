//! The outbound path: frames into a connection's send buffer, reliable messages pumped in
//! as the socket drains, water marks, and the outbound cap (a connection past it is marked
//! doomed, never freed under its caller).

use super::conn::{Conn, ConnState, Role};
use super::event::{ClientEvent, Event, SendError, ServerEvent};
use super::handle::ClientId;
use super::Engine;
use crate::codec::{EncodeError, Encoder};
use crate::frame::Frame;
use bytes::BytesMut;
use log::{debug, warn};

impl Engine {
    /// Appends what `write` puts in the connection's send buffer (taking a buffer pair from
    /// the pool if it has none), then schedules the write and enforces the outbound bounds.
    /// `Gone` if the connection was dropped, possibly by an earlier frame of the same read.
    pub(super) fn queue(
        &mut self,
        index: usize,
        write: impl FnOnce(&Encoder, &mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), NotQueued> {
        let pool = &mut self.pool;
        let c = self
            .conns
            .get_mut(index)
            .filter(|c| c.state != ConnState::Doomed)
            .ok_or(NotQueued::Gone)?;
        let out = &mut c.bufs.get_or_insert_with(|| pool.take()).out;
        if out.is_empty() {
            // The start of a write: a stall is measured from here (see `on_conn_timer`).
            c.idle.record_write(self.tick);
        }
        write(&self.encoder, out).map_err(NotQueued::Encode)?;
        self.after_queue(index);
        Ok(())
    }

    pub(super) fn queue_frame(&mut self, index: usize, frame: &Frame) {
        if let Err(NotQueued::Encode(e)) = self.queue(index, |enc, out| enc.encode(frame, out)) {
            warn!("c{index}: frame not sent: {e}");
        }
    }

    pub(super) fn queue_data(&mut self, index: usize, payload: &[u8]) -> Result<(), SendError> {
        self.queue(index, |enc, out| enc.encode_data(payload, out))
            .map_err(NotQueued::into_send_error)
    }

    /// Frames the reliable messages waiting for an active connection's session into its
    /// send buffer while that holds less than `outbound_low_water` (at least one when it is
    /// empty): a backlog of any size flows out as the socket drains, and the payloads are
    /// kept once, in the send queue, until then.
    pub(super) fn pump(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let budget = self.cfg.outbound_low_water.max(1);
        if !c.unframed || c.state != ConnState::Active || c.queued() >= budget {
            return;
        }
        let send = match c.role {
            Role::Server { record: Some(r) } => &mut self.store.get_mut(r).send,
            Role::Client { client, .. } => &mut self.clients[client as usize].send,
            _ => return,
        };
        if c.frame_messages(send, &self.encoder, &mut self.pool, budget, self.tick) {
            // The budget is far below the cap (`Config::validate`): this never drops the
            // peer.
            self.after_queue(index);
        }
    }

    /// Bytes waiting for the connection: framed ones plus messages not framed yet.
    pub(super) fn backlog(&self, c: &Conn) -> usize {
        let framed = c.queued();
        if !c.unframed {
            return framed;
        }
        let unframed = match (c.state, c.role) {
            (ConnState::Active, Role::Server { record: Some(r) }) => {
                self.store.get(r).send.unframed_bytes()
            }
            (ConnState::Active, Role::Client { client, .. }) => {
                self.clients[client as usize].send.unframed_bytes()
            }
            _ => 0,
        };
        framed + unframed
    }

    /// Tells the application when the connection's backlog crosses the water marks.
    pub(super) fn check_water(&mut self, index: usize) {
        let Some(c) = self.conns.get(index) else {
            return;
        };
        let backlog = self.backlog(c);
        let congested = if !c.congested && backlog > self.cfg.outbound_high_water {
            true
        } else if c.congested && backlog <= self.cfg.outbound_low_water {
            false
        } else {
            return;
        };
        let conn = self.id_of(index);
        self.conns[index].congested = congested;
        let event = match self.conns[index].role {
            Role::Server { .. } => Event::Server(ServerEvent::Backpressure { conn, congested }),
            Role::Raw => Event::RawBackpressure { conn, congested },
            // A link's protocol bounds what it queues itself.
            Role::Link { .. } => return,
            Role::Client { client, .. } => match self.clients.get(client as usize) {
                Some(k) => {
                    let client = ClientId {
                        index: client,
                        gen: k.gen,
                    };
                    Event::Client(ClientEvent::Backpressure { client, congested })
                }
                // A connection left lingering by a client that is closed: nobody to tell.
                None => return,
            },
        };
        self.events.push_back(event);
    }

    /// Lists the connection for `poll_transmit` (once).
    pub(super) fn schedule_transmit(&mut self, index: usize) {
        let id = self.id_of(index);
        let c = &mut self.conns[index];
        if !c.pending_transmit {
            c.pending_transmit = true;
            self.transmit.push_back(id);
        }
    }

    /// Schedules the write and enforces the outbound bounds.
    pub(super) fn after_queue(&mut self, index: usize) {
        let id = self.id_of(index);
        let cap = self.cfg.outbound_cap;
        self.schedule_transmit(index);
        let c = &mut self.conns[index];
        let queued = c.queued();
        if queued > cap {
            // Decided here, done at the next settling point: the caller may still be
            // working on this connection.
            debug!("{id}: dropped: {queued} bytes queued for a peer that does not read");
            c.state = ConnState::Doomed;
            self.doomed.push(id);
        } else if !c.congested && (queued > self.cfg.outbound_high_water || c.unframed) {
            // Queueing only adds: it can make a connection congested, never relieve one.
            self.check_water(index);
        }
    }
}

/// Why `Engine::queue` put nothing in a send buffer.
pub(super) enum NotQueued {
    Gone,
    Encode(EncodeError),
}

impl NotQueued {
    pub(super) fn into_send_error(self) -> SendError {
        match self {
            NotQueued::Gone => SendError::Gone,
            NotQueued::Encode(_) => SendError::TooLarge,
        }
    }
}
