//! Engine settings and their defaults.

use crate::backoff::Backoff;
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use std::time::Duration;

/// Server policy for a second login of an identity that has a live session.
///
/// Whatever the policy, a reconnect of the *same* client instance with a newer attempt
/// number replaces its old session (which is most likely a half-open leftover), and one
/// with an older attempt number is refused as stale: a late reconnect never evicts the
/// session that superseded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateLogin {
    /// The newer login wins; the older session gets GOAWAY `REPLACED` (and its client stops
    /// instead of fighting back). What chat users expect when they log in on a new device.
    ReplaceOlder,
    /// The live session wins; the newer login gets REJECT `STALE_SESSION`.
    RefuseNewer,
}

/// Settings of one [`Engine`](crate::engine::Engine), shared by all its connections.
///
/// Defaults, and why (cim, a Netty chat server, pings after 10 s of write idle and kicks
/// after 30 s; MobileIMSDK uses 15 s / 20 s): a 10 s ping interval keeps NAT mappings warm and
/// costs one small frame per 10 s per idle client; a 30 s server idle timeout tolerates two
/// lost pings; a client declares its server dead after 20 s without reading anything (its
/// first read-idle period sends a ping, the second one gives up), which is faster than
/// MobileIMSDK's 20 s plus detection and never mistakes a busy but silent server for a
/// dead one, since a live server always answers the ping.
///
/// An engine refuses a configuration that cannot work ([`Config::validate`] says why), for
/// instance an idle timeout that is not longer than the ping interval: every conforming
/// client would be dropped before its first ping.
#[derive(Clone, Debug)]
pub struct Config {
    /// Timer resolution. Deadlines fire at most one tick late. Default 10 ms; at least
    /// 100 µs and at most 1 s.
    pub tick: Duration,
    /// Largest accepted frame length prefix. Default 64 KiB; at least 64 bytes.
    pub max_frame_len: u32,
    /// A server drops a connection that has not completed the handshake by then, even if it
    /// keeps trickling bytes. A client gives up on a server that has not answered its HELLO
    /// by then. Default 10 s.
    pub handshake_timeout: Duration,
    /// Server: announced in WELCOME. Client: sends PING after writing nothing, or reading
    /// nothing, for this long; declares the server dead after twice this long without
    /// reading anything. Default 10 s.
    pub ping_interval: Duration,
    /// Server: drops a connection it has read nothing from for this long. Default 30 s. Must
    /// be longer than `ping_interval` (PROTOCOL.md 4.2), and is checked even on engines
    /// that only run clients, since one engine may serve both sides.
    pub idle_timeout: Duration,
    /// Client: a non-blocking connect that has not completed by then fails. Default 5 s.
    pub connect_timeout: Duration,
    /// Client: reconnect pacing.
    pub backoff: Backoff,
    /// Client: a server that failed is not tried again for this long, unless every server
    /// is cooling down. Default 5 s.
    pub server_cooldown: Duration,
    /// Outbound bytes waiting for one connection (framed, plus reliable messages not yet
    /// framed) above which the application is told to slow down. Default 256 KiB.
    pub outbound_high_water: usize,
    /// Outbound bytes at or below which a slowed connection is writable again. Default
    /// 64 KiB. Reliable messages are also framed into a connection's send buffer only
    /// while it holds less than this, so that a backlog flows out as the socket drains.
    pub outbound_low_water: usize,
    /// Framed outbound bytes queued for one connection above which it is dropped as a slow
    /// consumer. Default 4 MiB. Reliable messages never trip it (they wait unframed, bounded
    /// by `max_unacked`); DATA and control frames to a peer that does not read do. Must
    /// leave room for `outbound_low_water` plus two frames of `max_frame_len`.
    pub outbound_cap: usize,
    /// Unacknowledged reliable messages per sender. Default 1024; at least 1.
    pub max_unacked: usize,
    /// Payload bytes of unacknowledged reliable messages per sender. Default 4 MiB; at least
    /// one payload of the largest size (`max_frame_len`). With `max_unacked`, it bounds what
    /// a session holds for a peer that reads slowly or not at all: beyond it, sends are
    /// refused with `SendError::WindowFull` until acknowledgements make room.
    pub max_unacked_bytes: usize,
    /// Connections of all kinds this engine holds at most. Default 100,000; at least 1.
    pub max_connections: usize,
    /// Server: how long the session record of a client that went away is kept (its
    /// duplicate-suppression state and unacknowledged messages to it, for when it
    /// reconnects). Default 5 minutes. Left records beyond `max_connections` are forgotten
    /// oldest first, sooner.
    pub record_linger: Duration,
    /// Server: what a login does to a live session of the same identity from another
    /// client instance. Default [`DuplicateLogin::ReplaceOlder`].
    pub duplicate_login: DuplicateLogin,
    /// How long a closing connection may take to flush its last frames. Default 2 s.
    pub close_linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick: Duration::from_millis(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            server_cooldown: Duration::from_secs(5),
            outbound_high_water: 256 * 1024,
            outbound_low_water: 64 * 1024,
            outbound_cap: 4 * 1024 * 1024,
            max_unacked: 1024,
            max_unacked_bytes: 4 * 1024 * 1024,
            max_connections: 100_000,
            close_linger: Duration::from_secs(2),
            duplicate_login: DuplicateLogin::ReplaceOlder,
            record_linger: Duration::from_secs(300),
        }
    }
}

/// Why a [`Config`] (or a client's settings) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting at fault, by its field name.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid setting {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

fn bad(field: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        field,
        problem: problem.into(),
    })
}

impl Config {
    /// Checks that these settings can work; the engine calls it when it is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
        ];
        if !(Duration::from_micros(100)..=Duration::from_secs(1)).contains(&self.tick) {
            bad("tick", format!("{:?} is outside 100µs..=1s", self.tick))?;
        }
        for (field, d) in positive {
            if d < self.tick {
                bad(
                    field,
                    format!("{d:?} is shorter than one tick ({:?})", self.tick),
                )?;
            }
        }
        if self.idle_timeout <= self.ping_interval {
            bad(
                "idle_timeout",
                format!(
                    "{:?} must be longer than the ping interval ({:?}), or clients are dropped before they ping",
                    self.idle_timeout, self.ping_interval
                ),
            )?;
        }
        if self.max_frame_len < crate::frame::MIN_FRAME_LIMIT {
            bad(
                "max_frame_len",
                format!(
                    "{} is below {} bytes",
                    self.max_frame_len,
                    crate::frame::MIN_FRAME_LIMIT
                ),
            )?;
        }
        if self.backoff.initial > self.backoff.max {
            bad("backoff", "initial window is longer than max")?;
        }
        if self.outbound_low_water > self.outbound_high_water {
            bad(
                "outbound_low_water",
                "must not be above outbound_high_water",
            )?;
        }
        let frame = self.max_frame_len as usize + 4;
        let need = self.outbound_low_water.saturating_add(2 * frame);
        if self.outbound_cap < need.max(self.outbound_high_water) {
            bad(
                "outbound_cap",
                format!(
                    "{} must be at least outbound_high_water and outbound_low_water plus two frames of max_frame_len ({need})",
                    self.outbound_cap
                ),
            )?;
        }
        if self.max_unacked == 0 {
            bad("max_unacked", "must be at least 1")?;
        }
        if self.max_unacked_bytes < self.max_frame_len as usize {
            bad(
                "max_unacked_bytes",
                "must hold at least one payload of max_frame_len bytes",
            )?;
        }
        if !(1..1 << 30).contains(&self.max_connections) {
            bad("max_connections", "must be at least 1 and below 2^30")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn unworkable_settings_are_named() {
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 7] = [
            ("idle_timeout", |c| c.idle_timeout = c.ping_interval),
            ("ping_interval", |c| c.ping_interval = Duration::ZERO),
            ("idle_timeout", |c| c.idle_timeout = Duration::ZERO),
            ("tick", |c| c.tick = Duration::ZERO),
            ("max_frame_len", |c| c.max_frame_len = 10),
            ("outbound_cap", |c| c.outbound_cap = c.outbound_low_water),
            ("max_unacked", |c| c.max_unacked = 0),
        ];
        for (field, break_it) in cases {
            let mut c = Config::default();
            break_it(&mut c);
            let e = c.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }
}
