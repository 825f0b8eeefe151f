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
/// Defaults follow the field's anchors (cim pings after 10 s of write idle and kicks after
/// 30 s; MobileIMSDK uses 15 s / 20 s): a 10 s ping interval keeps NAT mappings warm and
/// costs one small frame per 10 s per idle client; a 30 s server idle timeout tolerates two
/// lost pings; a client declares its server dead after 20 s without reading anything (its
/// first read-idle period sends a ping, the second one gives up), which is faster than
/// MobileIMSDK's 20 s plus detection and never mistakes a busy but silent server for a
/// dead one, since a live server always answers the ping.
#[derive(Clone, Debug)]
pub struct Config {
    /// Timer resolution. Deadlines fire at most one tick late. Default 10 ms.
    pub tick: Duration,
    /// Largest accepted frame length prefix. Default 64 KiB.
    pub max_frame_len: u32,
    /// A server drops a connection that has not completed the handshake by then, even if it
    /// keeps trickling bytes. A client gives up on a server that has not answered its HELLO
    /// by then. Default 10 s.
    pub handshake_timeout: Duration,
    /// Server: announced in WELCOME. Client: sends PING after writing nothing, or reading
    /// nothing, for this long; declares the server dead after twice this long without
    /// reading anything. Default 10 s.
    pub ping_interval: Duration,
    /// Server: drops a connection it has read nothing from for this long. Default 30 s.
    pub idle_timeout: Duration,
    /// Client: a non-blocking connect that has not completed by then fails. Default 5 s.
    pub connect_timeout: Duration,
    /// Client: reconnect pacing.
    pub backoff: Backoff,
    /// Client: a server that failed is not tried again for this long, unless every server
    /// is cooling down. Default 5 s.
    pub server_cooldown: Duration,
    /// Outbound bytes queued for one connection above which the application is told to
    /// slow down. Default 256 KiB.
    pub outbound_high_water: usize,
    /// Outbound bytes at or below which a slowed connection is writable again. Default
    /// 64 KiB.
    pub outbound_low_water: usize,
    /// Outbound bytes queued for one connection above which it is dropped as a slow
    /// consumer. Default 4 MiB.
    pub outbound_cap: usize,
    /// Unacknowledged reliable messages per sender. Default 1024.
    pub max_unacked: usize,
    /// Connections of all kinds this engine holds at most. Default 100,000.
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
            max_connections: 100_000,
            close_linger: Duration::from_secs(2),
            duplicate_login: DuplicateLogin::ReplaceOlder,
            record_linger: Duration::from_secs(300),
        }
    }
}
