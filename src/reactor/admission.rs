//! Accepting: admission control for listeners (a token bucket that paces accepts, a cap on
//! handshakes in flight; what waits stays in the kernel's backlog, never refused), the
//! per-address limit, and pausing while the process is out of descriptors.

use super::{is_fd_exhaustion, Reactor, ACCEPT_PAUSE};
use crate::engine::ConnId;
use log::{debug, info, warn};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token bucket: `per_sec` tokens a second, at most a twentieth of a second's worth
/// (and at least one) saved up, so that a burst after a quiet spell stays short.
pub(super) struct Bucket {
    per_sec: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(per_sec: u32, now: Instant) -> Bucket {
        let per_sec = f64::from(per_sec.max(1));
        let burst = (per_sec / 20.0).max(1.0);
        Bucket {
            per_sec,
            tokens: burst,
            burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

impl Reactor {
    pub(super) fn accept(&mut self, listener: usize) {
        if self.stopping || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let now = self.now;
            let Some(Some(l)) = self.listeners.get_mut(listener) else {
                return;
            };
            // Admission: what waits stays in the kernel's backlog, not refused; accepting
            // resumes when a token is due or a handshake ends.
            let full = l.max_handshakes.is_some_and(|max| l.handshaking >= max);
            let wait = if full {
                Some(ACCEPT_PAUSE)
            } else {
                l.rate.as_mut().and_then(|b| b.take(now).err())
            };
            if let Some(wait) = wait {
                let until = now + wait;
                self.accept_paused_until =
                    Some(self.accept_paused_until.map_or(until, |t| t.min(until)));
                return;
            }
            let Some(Some(l)) = self.listeners.get(listener) else {
                return;
            };
            match l.inner.accept() {
                Ok((stream, peer)) => {
                    if self.out_of_fds {
                        self.out_of_fds = false;
                        info!("file descriptors available: accepting again");
                    }
                    let ip = peer.ip();
                    if let Some(max) = l.max_per_ip {
                        let open = self.per_ip.get(&ip).copied().unwrap_or(0);
                        if open >= max {
                            debug!("refused {peer}: {open} connections from {ip} already");
                            continue; // dropping the stream closes it
                        }
                    }
                    let counted = l.max_per_ip.is_some();
                    let accepted = if l.raw {
                        self.engine.handle_accept_raw(self.now)
                    } else if let Some(tls) = &l.tls {
                        self.engine.handle_accept_tls(Arc::clone(tls), self.now)
                    } else {
                        self.engine.handle_accept(self.now)
                    };
                    let conn = match accepted {
                        Ok(conn) => conn,
                        Err(reason) => {
                            debug!("refused {peer}: {reason}");
                            continue; // dropping the stream closes it
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let peer_ip = counted.then_some(ip);
                    let raw = l.raw;
                    if let Err(e) = self.add_socket(conn, stream, false, peer_ip) {
                        warn!("cannot register {peer}: {e}");
                        self.engine.handle_closed(conn, self.now);
                    } else if !raw {
                        self.handshake_started(conn, listener);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    // Accepting again at once would spin: the pending connection stays
                    // queued until a descriptor frees up (a close, or the retry timer).
                    if !self.out_of_fds {
                        self.out_of_fds = true;
                        warn!("out of file descriptors ({e}): accepting paused, retrying every {ACCEPT_PAUSE:?} and whenever a connection closes");
                    }
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => {
                    // Per-connection failures (e.g. ECONNABORTED): skip that one.
                    debug!("accept: {e}");
                }
            }
        }
    }

    pub(super) fn handshake_started(&mut self, conn: ConnId, listener: usize) {
        let counted = self
            .listeners
            .get(listener)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.max_handshakes.is_some());
        if !counted {
            return;
        }
        if let Some(Some(sock)) = self.sockets.get_mut(conn.index()) {
            sock.handshaking = Some(listener);
            if let Some(Some(l)) = self.listeners.get_mut(listener) {
                l.handshaking += 1;
            }
        }
    }

    /// A connection of `listener` left the handshake (opened, or closed): room for one
    /// more, so a pause for a full handshake cap ends now.
    pub(super) fn handshake_ended(&mut self, listener: usize) {
        if let Some(Some(l)) = self.listeners.get_mut(listener) {
            l.handshaking = l.handshaking.saturating_sub(1);
        }
        self.fd_freed();
    }

    /// A descriptor was closed: if accepting is paused for lack of them, retry now.
    pub(super) fn fd_freed(&mut self) {
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(self.now);
        }
    }
}
