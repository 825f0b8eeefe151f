//! The client supervisor: connect, back off with jitter, fail over along the server list,
//! stop for good; and the application's timers.

use super::closing::Lost;
use super::conn::{ConnState, Role};
use super::event::{ClientEvent, ClientState, Event, Retry};
use super::handle::Io;
use super::{Engine, CLIENT_TIMER};
use crate::frame::{Code, Frame, Reason};
use crate::wheel::TimerKey;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

impl Engine {
    pub(super) fn on_app_timer(&mut self, i: usize, key: TimerKey) {
        let (clock, now) = (self.clock, self.now);
        let after = |d: Duration| clock.deadline_after(now, d);
        if let Some(event) = self.timers.fire(&mut self.wheel, i, key, after) {
            self.events.push_back(event);
        }
    }

    pub(super) fn on_client_timer(&mut self, ci: usize, key: TimerKey) {
        let Some(k) = self.clients.get_mut(ci) else {
            return;
        };
        if k.timer != Some(key) {
            return;
        }
        k.timer = None;
        self.start_connect(ci);
    }

    pub(super) fn start_connect(&mut self, ci: usize) {
        let k = &self.clients[ci];
        let Some(addr) = k.server() else {
            return self.stop_client(ci, Reason::new(Code::INTERNAL_ERROR, "no servers"));
        };
        if self.conns.len() >= self.cfg.max_connections {
            let reason = Reason::new(Code::SERVER_FULL, "local connection limit");
            return self.reconnect_later(ci, reason, false, None);
        }
        let deadline = self.after(self.cfg.connect_timeout);
        let index = self.new_conn(
            ConnState::Connecting,
            Role::Client {
                client: ci as u32,
                ping_ticks: None,
            },
            Some(deadline),
        );
        let conn = self.id_of(index);
        if let Some(t) = self.client_tls.get(&(ci as u32)) {
            match crate::tls::Tls::client(t.config.clone(), t.server_name.clone()) {
                Ok(tls) => self.secure.insert(index, conn.gen, tls),
                Err(e) => {
                    let reason = Reason {
                        code: Code::INTERNAL_ERROR,
                        text: crate::frame::Text::from(format!("TLS settings refused: {e}")),
                    };
                    self.release(index);
                    return self.stop_client(ci, reason);
                }
            }
        }
        let k = &mut self.clients[ci];
        k.conn = Some(conn);
        k.state = ClientState::Connecting;
        self.io.push_back(Io::Connect { conn, addr });
        self.client_event(ci, ClientState::Connecting, None);
    }

    /// Cools the lost server down, picks the next server and schedules the attempt: at
    /// once after a GOAWAY, otherwise after a jittered, growing delay. `lost` is the server
    /// of the connection that ended (`None` if no connection was made).
    pub(super) fn reconnect_later(
        &mut self,
        ci: usize,
        reason: Reason,
        at_once: bool,
        lost: Option<SocketAddr>,
    ) {
        let cooldown = self.clock.ticks_for(self.cfg.server_cooldown);
        let k = &mut self.clients[ci];
        k.move_on(self.tick, cooldown);
        let delay = k.backoff(at_once, &self.cfg.backoff, &mut self.rng);
        k.state = ClientState::Backoff;
        if let Some(old) = k.timer.take() {
            self.wheel.cancel(old);
        }
        let retry = k.server().map(|server| {
            Box::new(Retry {
                after: delay,
                server,
            })
        });
        self.events.push_back(Event::Client(ClientEvent::State {
            client: self.client_id(ci),
            state: ClientState::Backoff,
            server: lost,
            reason: Some(reason),
            retry,
        }));
        if at_once {
            // Moved by GOAWAY: not even a tick of delay.
            self.start_connect(ci);
        } else {
            // Even a jittered delay of zero waits for the wheel, so that this call never
            // opens a connection under a caller that is closing one.
            let at = self.after(delay);
            self.clients[ci].timer = Some(self.wheel.insert(at, ci as u32 | CLIENT_TIMER));
        }
    }

    /// Stops the client for good: its connection is closed, its unacknowledged messages
    /// are handed back, and its slot is freed (the id goes stale).
    pub(super) fn stop_client(&mut self, ci: usize, reason: Reason) {
        if !self.clients.contains(ci) {
            return; // stopped already: no second Closed event
        }
        let id = self.client_id(ci);
        if let Some(conn) = self.clients[ci].conn.take() {
            let index = conn.index as usize;
            match self.conn(conn).map(|c| c.state) {
                // Tell the server it is a close, not a crash: ERROR with the reason (code
                // NO_ERROR when the application closed), flushed within the linger time.
                Some(ConnState::Active) => {
                    self.queue_frame(index, &Frame::Error(reason.clone()));
                    self.linger(index, reason.clone());
                }
                Some(_) => self.finish(index, reason.clone(), Lost::Quiet),
                None => {}
            }
        }
        let k = &mut self.clients[ci];
        if let Some(t) = k.timer.take() {
            self.wheel.cancel(t);
        }
        k.state = ClientState::Closed;
        let failed: Vec<(u64, Bytes)> = k.send.drain().collect();
        for (mid, payload) in failed {
            self.events.push_back(Event::Client(ClientEvent::Failed {
                client: id,
                id: mid,
                payload,
            }));
        }
        self.client_event(ci, ClientState::Closed, Some(reason));
        self.clients.remove(ci);
        self.client_tls.remove(&(ci as u32));
        self.draining.remove(ci);
    }

    /// Reports a state of the client with the server it concerns (the current one).
    pub(super) fn client_event(&mut self, ci: usize, state: ClientState, reason: Option<Reason>) {
        let k = &self.clients[ci];
        let server = k.server();
        self.events.push_back(Event::Client(ClientEvent::State {
            client: self.client_id(ci),
            state,
            server,
            reason,
            retry: None,
        }));
    }
}
