//! What each frame means in each phase of a connection: the server's handshake and
//! session, the client's handshake and session.

use super::closing::Lost;
use super::conn::{ConnState, Role};
use super::event::{ClientEvent, ClientState, Event, ServerEvent};
use super::handle::ConnId;
use super::login::Check;
use super::store::Admit;
use super::Engine;
use crate::frame::{Code, Frame, Hello, Reason, Text, Welcome, PROTOCOL_VERSION};
use log::debug;
use std::num::NonZeroU32;
use std::time::Duration;

impl Engine {
    pub(super) fn on_frame(&mut self, index: usize, frame: Frame) {
        let c = &self.conns[index];
        match (c.role, c.state) {
            (Role::Server { .. }, ConnState::AwaitHello) => match frame {
                Frame::Hello(h) => self.on_hello(index, *h),
                other => self.violation(index, &other, "expected HELLO"),
            },
            (Role::Server { .. }, ConnState::AwaitVerdict) => {
                self.violation(index, &frame, "sent before WELCOME");
            }
            (Role::Server { record }, ConnState::Active) => match frame {
                Frame::Ping(v) => self.queue_frame(index, &Frame::Pong(v)),
                Frame::Pong(_) => {}
                Frame::Data(payload) => {
                    let conn = self.id_of(index);
                    self.events
                        .push_back(Event::Server(ServerEvent::Data { conn, payload }));
                }
                Frame::Message { id: 0, .. } => {
                    self.fail_with_error(index, zero_id());
                }
                Frame::Message { id, payload } => {
                    let r = record.expect("an active server connection has a record");
                    let conn = self.id_of(index);
                    let rec = self.store.get_mut(r);
                    let ack_now = if rec.recv.accept(id) {
                        let (identity, instance) = (rec.identity.clone(), rec.instance);
                        self.events.push_back(Event::Server(ServerEvent::Message {
                            conn,
                            identity,
                            instance,
                            id,
                            payload,
                        }));
                        // With confirmations on, the ACK waits for the application's.
                        !self.confirm || !self.store.await_confirmation(r, id)
                    } else {
                        debug!("{conn}: duplicate message {id} suppressed");
                        // A resend of a message still waiting for its confirmation is
                        // acknowledged by that confirmation, not before.
                        !self.store.awaits(r, id)
                    };
                    if ack_now {
                        self.queue_frame(index, &Frame::Ack(id));
                    }
                }
                Frame::Ack(id) => {
                    let r = record.expect("an active server connection has a record");
                    let rec = self.store.get_mut(r);
                    if rec.send.ack(id) {
                        let identity = rec.identity.clone();
                        let conn = self.id_of(index);
                        self.events.push_back(Event::Server(ServerEvent::Acked {
                            conn,
                            identity,
                            id,
                        }));
                    }
                }
                Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                other => self.violation(index, &other, "not allowed from a client"),
            },
            (Role::Client { client, .. }, ConnState::AwaitWelcome) => match frame {
                Frame::Welcome(w) => self.on_welcome(index, client as usize, w),
                Frame::Reject(reason) => self.on_reject(index, client as usize, reason),
                Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                Frame::GoAway(reason) => self.on_go_away(index, client as usize, reason),
                other => self.violation(index, &other, "expected WELCOME"),
            },
            (Role::Client { client, .. }, ConnState::Active) => {
                let ci = client as usize;
                let id = self.client_id(ci);
                match frame {
                    Frame::Ping(v) => self.queue_frame(index, &Frame::Pong(v)),
                    Frame::Pong(v) => {
                        // Our own stamp from the PING (see `on_conn_timer`), echoed back.
                        if let Some(us) = self.now_us().checked_sub(v) {
                            self.clients[ci].record_rtt(us);
                            let rtt = Duration::from_micros(us);
                            self.events
                                .push_back(Event::Client(ClientEvent::Rtt { client: id, rtt }));
                        }
                    }
                    Frame::Data(payload) => {
                        self.events.push_back(Event::Client(ClientEvent::Data {
                            client: id,
                            payload,
                        }))
                    }
                    Frame::Message { id: 0, .. } => {
                        self.fail_with_error(index, zero_id());
                    }
                    Frame::Message { id: mid, payload } => {
                        if self.clients[ci].recv.accept(mid) {
                            self.events.push_back(Event::Client(ClientEvent::Message {
                                client: id,
                                id: mid,
                                payload,
                            }));
                        }
                        self.queue_frame(index, &Frame::Ack(mid));
                    }
                    Frame::Ack(mid) => {
                        if self.clients[ci].send.ack(mid) {
                            self.events.push_back(Event::Client(ClientEvent::Acked {
                                client: id,
                                id: mid,
                            }));
                            if self.clients[ci].send.is_empty()
                                && self.draining.contains(ci, self.clients[ci].gen)
                            {
                                self.close_drained();
                            }
                        }
                    }
                    Frame::GoAway(reason) => self.on_go_away(index, ci, reason),
                    Frame::Error(reason) => self.finish(index, reason, Lost::Failed),
                    other => self.violation(index, &other, "not allowed from a server"),
                }
            }
            // Connecting: no bytes can arrive; Closing: filtered out in handle_read.
            _ => {}
        }
    }

    pub(super) fn violation(&mut self, index: usize, frame: &Frame, why: &str) {
        let reason = Reason {
            code: Code::PROTOCOL_VIOLATION,
            text: Text::from(format!("{} {why}", frame.kind())),
        };
        self.fail_with_error(index, reason);
    }

    pub(super) fn on_hello(&mut self, index: usize, hello: Hello) {
        let conn = self.id_of(index);
        match self.logins.check(conn, hello) {
            Check::Reject(reason) => self.reject(index, reason),
            Check::Ask(hello) => {
                // The handshake deadline keeps running while the application decides.
                self.conns[index].state = ConnState::AwaitVerdict;
                self.events
                    .push_back(Event::Server(ServerEvent::Login { conn, hello }));
            }
            Check::Accept(hello) => self.log_in(index, hello),
        }
    }

    /// Logs a checked HELLO in: admission by the session store, WELCOME, the session.
    pub(super) fn log_in(&mut self, index: usize, hello: Hello) {
        let conn = self.id_of(index);
        let live = |c: ConnId| self.live(c);
        match self.store.admit(&hello, live, self.cfg.duplicate_login) {
            Admit::Refuse(reason) => return self.reject(index, reason),
            Admit::Accept(Some((old, reason))) => {
                debug!("{old}: session of {} replaced by {conn}", hello.identity);
                self.go_away(old.index as usize, reason);
            }
            Admit::Accept(None) => {}
        }
        let record = self
            .store
            .accept(&hello, conn, &mut self.ids, &mut self.events);
        let rec = self.store.get(record);
        let (session, unframed) = (rec.session, !rec.send.is_empty());
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            session,
            ping_interval_ms: duration_ms(self.cfg.ping_interval),
            idle_timeout_ms: duration_ms(self.cfg.idle_timeout),
            max_frame_len: self.cfg.max_frame_len,
        };
        let c = &mut self.conns[index];
        c.state = ConnState::Active;
        c.unframed = unframed;
        c.role = Role::Server {
            record: Some(record),
        };
        c.deadline = None;
        self.rearm(index);
        self.queue_frame(index, &Frame::Welcome(welcome));
        debug!("{conn}: session {session} open for {}", hello.identity);
        let identity = self.store.get(record).identity.clone();
        self.events.push_back(Event::Server(ServerEvent::Opened {
            conn,
            identity,
            instance: hello.instance,
            session,
            peer: None,
        }));
        self.pump(index);
    }

    pub(super) fn reject(&mut self, index: usize, reason: Reason) {
        debug!("{}: handshake refused: {reason}", self.id_of(index));
        self.queue_frame(index, &Frame::Reject(reason.clone()));
        self.linger(index, reason);
    }

    pub(super) fn on_welcome(&mut self, index: usize, ci: usize, w: Welcome) {
        let tick = self.tick;
        let announced = Duration::from_millis(u64::from(w.ping_interval_ms));
        let ping_ticks = (!announced.is_zero() && announced < self.cfg.ping_interval)
            .then(|| self.clock.interval_ticks(announced))
            .and_then(NonZeroU32::new);
        let too_large = self.clients[ci].welcomed(&w, tick, self.cfg.max_frame_len);
        let client = self.client_id(ci);
        for (id, payload) in too_large {
            debug!("{client}: message {id} is larger than the server accepts; failed");
            self.events.push_back(Event::Client(ClientEvent::Failed {
                client,
                id,
                payload,
            }));
        }
        let unframed = !self.clients[ci].send.is_empty();
        let c = &mut self.conns[index];
        c.state = ConnState::Active;
        c.unframed = unframed;
        c.deadline = None;
        c.role = Role::Client {
            client: ci as u32,
            ping_ticks,
        };
        self.rearm(index);
        self.client_event(ci, ClientState::Active, None);
        // A first round trip right away, so that the application has an RTT (and a check
        // of the path) without waiting a ping interval.
        self.queue_frame(index, &Frame::Ping(self.now_us()));
        self.pump(index);
    }

    pub(super) fn on_reject(&mut self, index: usize, ci: usize, reason: Reason) {
        match reason.code {
            // Retrying cannot help: stop (which ends this connection) and tell the
            // application.
            Code::AUTH_FAILED | Code::INVALID_IDENTITY | Code::UNSUPPORTED_VERSION => {
                self.stop_client(ci, reason)
            }
            _ => self.finish(index, reason, Lost::Failed),
        }
    }

    pub(super) fn on_go_away(&mut self, index: usize, ci: usize, reason: Reason) {
        if reason.code == Code::REPLACED {
            self.stop_client(ci, reason);
        } else {
            self.finish(index, reason, Lost::Moved);
        }
    }
}

/// MESSAGE ids start at 1: a receiver's duplicate filter starts at 0, so an id 0 could
/// only be acknowledged and never handed over.
fn zero_id() -> Reason {
    Reason::new(Code::PROTOCOL_VIOLATION, "MESSAGE id 0 (ids start at 1)")
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
