//! How connections end: ERROR or GOAWAY and a linger to flush, the session's end (events,
//! the server's record, the client's next move), the slot freed, and the connection's own
//! timers (deadlines, idle periods) that lead there.

use super::conn::{ConnState, Expiry, Role};
use super::event::{Event, ServerEvent};
use super::handle::Io;
use super::Engine;
use crate::frame::{Code, Frame, Reason, Text};
use crate::wheel::TimerKey;
use log::debug;

impl Engine {
    /// Drops the connections found past the outbound cap since the last call. Runs where
    /// no caller holds on to a connection: at the start of every `poll_*` output.
    #[inline]
    pub(super) fn settle(&mut self) {
        while let Some(id) = self.doomed.pop() {
            if self.conn(id).is_some_and(|c| c.state == ConnState::Doomed) {
                let reason = Reason::new(Code::SLOW_CONSUMER, "outbound cap exceeded");
                self.finish(id.index as usize, reason, Lost::Failed);
            }
        }
    }

    /// Sends ERROR and closes after flushing (bounded by the linger time).
    pub(super) fn fail_with_error(&mut self, index: usize, reason: Reason) {
        // The application hears of it (ServerEvent::Closed, or the client's Backoff) and logs it.
        debug!("{}: closing: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::Error(reason.clone()));
        self.linger(index, reason);
    }

    pub(super) fn go_away(&mut self, index: usize, reason: Reason) {
        debug!("{}: going away: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::GoAway(reason.clone()));
        self.linger(index, reason);
    }

    /// Ends the session now and lets the connection live only to flush its last frames.
    pub(super) fn linger(&mut self, index: usize, reason: Reason) {
        if !self.conns.contains(index) {
            return; // dropped while queueing (outbound cap)
        }
        self.end_session(index, reason, Lost::Failed);
        let deadline = self.after(self.cfg.close_linger);
        let c = &mut self.conns[index];
        c.state = ConnState::Closing;
        c.deadline = Some(deadline);
        if let Some(b) = c.bufs.as_mut() {
            b.inbuf.clear();
        }
        let gen = c.gen;
        let plain_waits = c.bufs.as_ref().is_some_and(|b| !b.out.is_empty());
        let c = &mut self.conns[index];
        let wire_waits = self.secure.get_mut(index, gen).is_some_and(|s| {
            // The last frames, then close_notify behind them.
            if let Some(b) = c.bufs.as_mut() {
                let _ = super::secure::seal(s, &mut b.out);
            }
            s.tls.close(&mut s.wire);
            !s.wire.is_empty()
        });
        if !plain_waits && !wire_waits {
            self.release(index);
        } else {
            self.rearm(index);
            self.schedule_transmit(index);
        }
    }

    /// TLS failed on connection `index`: the session ends, and the connection lives only to
    /// send the alert the TLS layer queued (within the linger time).
    pub(super) fn tls_failed(&mut self, index: usize, e: crate::tls::TlsError) {
        debug!("{}: TLS failed: {e}", self.id_of(index));
        let reason = Reason {
            code: Code::PROTOCOL_VIOLATION,
            text: Text::from(format!("TLS: {e}")),
        };
        if let Some(b) = self.conns[index].bufs.as_mut() {
            // Nothing more can be sealed on a failed TLS connection.
            b.out.clear();
        }
        self.linger(index, reason);
    }

    /// Ends the session (if not yet) and forgets the connection at once.
    pub(super) fn finish(&mut self, index: usize, reason: Reason, lost: Lost) {
        if self.conns[index].state != ConnState::Closing {
            self.end_session(index, reason, lost);
        }
        self.release(index);
    }

    /// The session side of a close: events, the server's record, the client's next move.
    pub(super) fn end_session(&mut self, index: usize, reason: Reason, lost: Lost) {
        let conn = self.id_of(index);
        match self.conns[index].role {
            Role::Server { record } => {
                let identity = record.map(|r| {
                    self.store.leave(r, conn, self.tick);
                    self.store.get(r).identity.clone()
                });
                if identity.is_some() {
                    debug!(
                        "{conn}: session of {} closed: {reason}",
                        identity.as_ref().map_or("", |t| t.as_str())
                    );
                }
                self.events.push_back(Event::Server(ServerEvent::Closed {
                    conn,
                    identity,
                    reason,
                }));
            }
            Role::Raw => self.events.push_back(Event::Server(ServerEvent::Closed {
                conn,
                identity: None,
                reason,
            })),
            Role::Link { link } => self.link_lost(link as usize, conn, reason, lost),
            Role::Client { client, .. } => {
                let ci = client as usize;
                if self.clients[ci].conn == Some(conn) {
                    self.clients[ci].conn = None;
                    self.clients[ci].active_since = None;
                    if lost != Lost::Quiet {
                        let server = self.clients[ci].server();
                        self.reconnect_later(ci, reason, lost == Lost::Moved, server);
                    }
                }
            }
        }
    }

    /// Frees the connection's slot and timer and tells the driver to close the socket.
    pub(super) fn release(&mut self, index: usize) {
        let conn = self.id_of(index);
        let mut c = self.conns.remove(index);
        if !self.secure.is_empty() {
            self.secure.remove(index);
        }
        // A login still waiting for a verdict (the connection hung up, or timed out).
        if self.logins.is_waiting() {
            self.logins.forget(index as u32, c.gen);
        }
        c.idle.disarm(&mut self.wheel);
        if let Some(b) = c.bufs.take() {
            self.pool.give(b);
        }
        self.io.push_back(Io::Close { conn });
    }

    /// A connection timer fired: the connection says what it means for it, and the
    /// engine carries that out.
    pub(super) fn on_conn_timer(&mut self, index: usize, key: TimerKey) {
        if self
            .conns
            .get(index)
            .is_none_or(|c| c.idle.key() != Some(key))
        {
            return;
        }
        let idle = self.idle_cfg(index);
        let expiry = self.conns[index].on_timer(&idle, &mut self.wheel, key, self.tick, index);
        let reason = |code, text| Reason::new(code, text);
        match expiry {
            Expiry::Nothing => {}
            Expiry::ConnectTimedOut => self.finish(
                index,
                reason(Code::NO_ERROR, "connect timed out"),
                Lost::Failed,
            ),
            Expiry::HandshakeTimedOut => self.fail_with_error(
                index,
                reason(Code::HANDSHAKE_TIMEOUT, "handshake not completed in time"),
            ),
            Expiry::NoWelcome => {
                let why = reason(Code::HANDSHAKE_TIMEOUT, "no WELCOME in time");
                self.finish(index, why, Lost::Failed)
            }
            Expiry::LingerOver => {
                debug!("{}: linger over, closing unflushed", self.id_of(index));
                self.release(index)
            }
            Expiry::ReadIdle => self.fail_with_error(
                index,
                reason(Code::IDLE_TIMEOUT, "nothing read for the idle timeout"),
            ),
            Expiry::WriteStall => {
                // No ERROR could reach a peer that reads nothing.
                let id = self.id_of(index);
                debug!("{id}: dropped: nothing could be written for the idle timeout");
                let why = reason(
                    Code::SLOW_CONSUMER,
                    "peer read nothing for the idle timeout",
                );
                self.finish(index, why, Lost::Failed);
            }
            Expiry::ServerSilent => {
                let why = reason(Code::IDLE_TIMEOUT, "server silent for two ping intervals");
                debug!("{}: {why}", self.id_of(index));
                self.finish(index, why, Lost::Failed);
            }
            Expiry::Ping if matches!(self.conns[index].role, Role::Link { .. }) => {
                if let Role::Link { link } = self.conns[index].role {
                    self.link_write_idle(link as usize);
                }
            }
            Expiry::Ping => {
                // Microseconds since this engine's origin: the PONG's echo of it gives
                // the round trip.
                self.queue_frame(index, &Frame::Ping(self.now_us()));
            }
        }
    }
}

/// How a connection loss bears on its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lost {
    /// The server failed or refused: cool it down and back off.
    Failed,
    /// The server asked us to move (GOAWAY): go to the next one at once.
    Moved,
    /// The client is stopping: no reconnect.
    Quiet,
}
