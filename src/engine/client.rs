//! A client record, which outlives its connections: credentials, the server list with
//! per-server cooldowns, where it stands in the reconnect cycle, its reliable-message state
//! and round-trip figures. The engine drives it through the state diagram (see the module
//! docs of [`engine`](super)); the policy lives here: what a HELLO says, which server is
//! next, how long to wait, what a WELCOME changes.

use super::event::{ClientConfig, ClientState};
use super::handle::ConnId;
use crate::backoff::Backoff;
use crate::config::ConfigError;
use crate::frame::{Hello, Text, Welcome, MAX_IDENTITY_LEN, MIN_FRAME_LIMIT, PROTOCOL_VERSION};
use crate::reliable::{RecvState, SendQueue};
use crate::rng::Rng;
use crate::time::Tick;
use crate::wheel::TimerKey;
use bytes::Bytes;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct ClientRecord {
    pub(super) gen: NonZeroU32,
    /// The HELLO identity followed by the token, in one box (16 bytes, where a `Text` and
    /// a `Bytes` take 64): they are only read to build a HELLO, once per attempt.
    credentials: Credentials,
    pub(super) instance: u64,
    pub(super) attempt: u32,
    /// Shared by the clients created with the same list (see [`ServerLists`]).
    /// (An `Arc<Vec<_>>` is one word; an `Arc<[_]>` two.)
    pub(super) servers: Arc<Vec<SocketAddr>>,
    /// Per server, when its cooldown ends; allocated at the first failure (boxed twice so
    /// that the field is one word).
    #[allow(clippy::redundant_allocation)]
    pub(super) cooldown_until: Option<Box<Box<[Option<Tick>]>>>,
    pub(super) current: u32,
    pub(super) state: ClientState,
    pub(super) conn: Option<ConnId>,
    pub(super) failures: u32,
    pub(super) timer: Option<TimerKey>,
    pub(super) send: SendQueue,
    pub(super) recv: RecvState,
    pub(super) session: Option<NonZeroU64>,
    /// Round trips in microseconds: the last one, and the sum and count for the mean.
    /// Meaningful once `rtt_count` is not zero.
    pub(super) rtt_last_us: u32,
    pub(super) rtt_sum_us: u64,
    pub(super) rtt_count: u32,
    pub(super) active_since: Option<Tick>,
    pub(super) sessions: u32,
    /// The largest frame this client sends: its own limit, or the last server's if smaller.
    pub(super) max_frame_len: u32,
}

impl ClientRecord {
    /// Why `cfg` could never make a HELLO that a server accepts, if it could not: an empty
    /// identity or one over 255 bytes, no server, or a HELLO over `max_frame_len`.
    pub(super) fn check(cfg: &ClientConfig, max_frame_len: u32) -> Result<(), ConfigError> {
        let identity = cfg.identity.as_str().len();
        let problem = if identity == 0 {
            Some(("identity", "must not be empty".to_string()))
        } else if identity > MAX_IDENTITY_LEN {
            Some((
                "identity",
                format!("{identity} bytes, at most {MAX_IDENTITY_LEN}"),
            ))
        } else if cfg.servers.is_empty() {
            Some(("servers", "no server to connect to".to_string()))
        } else if Hello::FIXED_LEN + identity + cfg.token.len() > max_frame_len as usize {
            Some((
                "token",
                format!("the HELLO would exceed the {max_frame_len}-byte frame limit"),
            ))
        } else {
            None
        };
        match problem {
            Some((field, problem)) => Err(ConfigError { field, problem }),
            None => Ok(()),
        }
    }

    /// A client that has not tried any server yet (checked with [`check`](Self::check)).
    pub(super) fn new(
        cfg: &ClientConfig,
        gen: NonZeroU32,
        instance: u64,
        servers: Arc<Vec<SocketAddr>>,
        max_frame_len: u32,
    ) -> ClientRecord {
        ClientRecord {
            gen,
            credentials: Credentials::new(&cfg.identity, &cfg.token),
            instance,
            attempt: 0,
            servers,
            cooldown_until: None,
            current: 0,
            state: ClientState::Backoff,
            conn: None,
            failures: 0,
            timer: None,
            send: SendQueue::new(),
            recv: RecvState::default(),
            session: None,
            rtt_last_us: 0,
            rtt_sum_us: 0,
            rtt_count: 0,
            active_since: None,
            sessions: 0,
            max_frame_len,
        }
    }

    /// The server connected to, or being tried, or to be tried next.
    pub(super) fn server(&self) -> Option<SocketAddr> {
        self.servers.get(self.current as usize).copied()
    }

    /// The HELLO for a new connection (each one counts as an attempt).
    pub(super) fn hello(&mut self) -> Hello {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            instance: self.instance,
            attempt: self.attempt,
            identity: Text::from(String::from(self.credentials.identity())),
            token: Bytes::copy_from_slice(self.credentials.token()),
        };
        self.attempt = self.attempt.wrapping_add(1);
        hello
    }

    /// The current server failed: it cools down until `cooldown` ticks from `now`, and the
    /// next server in the list that is not cooling down becomes current (if all are, the one
    /// whose cooldown ends first; the backoff delay then paces the retries).
    pub(super) fn move_on(&mut self, now: Tick, cooldown: u32) {
        let n = self.servers.len().max(1);
        let until = self
            .cooldown_until
            .get_or_insert_with(|| Box::new(vec![None; n].into_boxed_slice()));
        if let Some(slot) = until.get_mut(self.current as usize) {
            *slot = Some(now.wrapping_add(cooldown));
        }
        let cooling = |i: usize| match self
            .cooldown_until
            .as_ref()
            .and_then(|c| c.get(i).copied().flatten())
        {
            Some(until) if until.is_after(now) => Some(until),
            _ => None,
        };
        let order = (1..=n).map(|step| (self.current as usize + step) % n);
        let next = match order.clone().find(|&i| cooling(i).is_none()) {
            Some(i) => i,
            None => order
                .min_by_key(|&i| cooling(i).map_or(0, |u| u.since(now)))
                .unwrap_or(0),
        };
        // Lossless in practice: a list of 2^32 addresses (128 GiB) could not be built.
        self.current = next as u32;
    }

    /// How long to wait before the next attempt: nothing when told to move (GOAWAY),
    /// otherwise a jittered delay that grows with each failure in a row.
    pub(super) fn backoff(&mut self, at_once: bool, policy: &Backoff, rng: &mut Rng) -> Duration {
        if at_once {
            return Duration::ZERO;
        }
        let delay = policy.delay(self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// A WELCOME arrived at `now`: the session scope, the counters and the server's frame
    /// limit (capped by `own_limit`) take effect, and every unacknowledged message is due
    /// again. Returns the messages that no longer fit the limit, taken out: they could
    /// never be delivered here.
    pub(super) fn welcomed(&mut self, w: &Welcome, now: Tick, own_limit: u32) -> Vec<(u64, Bytes)> {
        let session = NonZeroU64::new(w.session);
        if session.is_none() || self.session != session {
            // A different server-side record (or one that gives no id to resume by): its
            // message ids start over.
            self.recv = RecvState::default();
            self.session = session;
        }
        self.state = ClientState::Active;
        self.failures = 0;
        self.active_since = Some(now);
        self.sessions += 1;
        // The server's frame limit binds this session (PROTOCOL.md 3.2).
        self.max_frame_len = own_limit.min(w.max_frame_len.max(MIN_FRAME_LIMIT));
        let limit = self.max_frame_len;
        self.send.rewind();
        let too_large: Vec<u64> = self
            .send
            .iter()
            .filter(|(_, p)| !crate::frame::payload_fits(limit, p.len(), true))
            .map(|&(id, _)| id)
            .collect();
        too_large
            .into_iter()
            .filter_map(|id| self.send.take(id).map(|p| (id, p)))
            .collect()
    }

    /// A PONG echoed a PING sent `us` microseconds ago.
    pub(super) fn record_rtt(&mut self, us: u64) {
        let us = u32::try_from(us).unwrap_or(u32::MAX);
        self.rtt_last_us = us;
        self.rtt_sum_us = self.rtt_sum_us.saturating_add(u64::from(us));
        self.rtt_count = self.rtt_count.saturating_add(1);
    }

    /// The last round trip and the mean of all, once one was measured.
    pub(super) fn rtt(&self) -> (Option<Duration>, Option<Duration>) {
        if self.rtt_count == 0 {
            return (None, None);
        }
        let last = Duration::from_micros(u64::from(self.rtt_last_us));
        let mean = Duration::from_micros(self.rtt_sum_us / u64::from(self.rtt_count));
        (Some(last), Some(mean))
    }
}

/// Server lists shared between clients: thousands of clients of one process made with
/// the same list hold one copy.
#[derive(Default)]
pub(super) struct ServerLists {
    last: Option<Arc<Vec<SocketAddr>>>,
}

impl ServerLists {
    /// The previous client's list when equal to `servers`, else `servers` (remembered).
    pub(super) fn share(&mut self, servers: &[SocketAddr]) -> Arc<Vec<SocketAddr>> {
        match &self.last {
            Some(last) if **last == servers => last.clone(),
            _ => {
                let list = Arc::new(servers.to_vec());
                self.last = Some(list.clone());
                list
            }
        }
    }
}

/// A client's identity and token in one box: the identity's length (4 bytes, little
/// endian), the identity, the token.
struct Credentials(Box<[u8]>);

impl Credentials {
    fn new(identity: &Text, token: &[u8]) -> Credentials {
        let identity = identity.as_str().as_bytes();
        // An identity of 4 GiB could not be sent anyway (the encoder refuses anything over
        // 255 bytes); clamping only keeps the split inside the box.
        let len = u32::try_from(identity.len()).unwrap_or(u32::MAX);
        let mut bytes = Vec::with_capacity(4 + identity.len() + token.len());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(identity);
        bytes.extend_from_slice(token);
        Credentials(bytes.into_boxed_slice())
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let (len, rest) = self.0.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
        let at = (u32::from_le_bytes(*len) as usize).min(rest.len());
        rest.split_at(at)
    }

    fn identity(&self) -> &str {
        // Built from a `Text`, so valid UTF-8; the fallback cannot be reached.
        std::str::from_utf8(self.split().0).unwrap_or_default()
    }

    fn token(&self) -> &[u8] {
        self.split().1
    }
}

/// Clients closing once everything they sent is acknowledged
/// ([`Engine::close_client_when_acked`](crate::engine::Engine::close_client_when_acked)),
/// by index, with their generation and the tick by which they close regardless.
#[derive(Default)]
pub(super) struct Drains(hashbrown::HashMap<u32, (NonZeroU32, Tick)>);

impl Drains {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Client `ci` (of generation `gen`) closes once drained, or at `at`.
    pub(super) fn insert(&mut self, ci: usize, gen: NonZeroU32, at: Tick) {
        self.0.insert(ci as u32, (gen, at));
    }

    /// Whether client `ci` of generation `gen` is draining.
    pub(super) fn contains(&self, ci: usize, gen: NonZeroU32) -> bool {
        self.0.get(&(ci as u32)).is_some_and(|&(g, _)| g == gen)
    }

    /// Client `ci` is gone (closed by whatever path).
    pub(super) fn remove(&mut self, ci: usize) {
        self.0.remove(&(ci as u32));
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Tick> {
        self.0.values().map(|&(_, at)| at).reduce(Tick::earliest)
    }

    /// Takes out and returns the draining clients to close now: nothing left
    /// unacknowledged, or out of time. Entries of clients closed meanwhile are dropped.
    pub(super) fn due(&mut self, clients: &slab::Slab<ClientRecord>, now: Tick) -> Vec<usize> {
        let mut due = Vec::new();
        self.0.retain(|&ci, &mut (gen, at)| {
            match clients.get(ci as usize).filter(|k| k.gen == gen) {
                Some(k) if k.send.is_empty() || at.is_at_or_before(now) => {
                    due.push(ci as usize);
                    false
                }
                Some(_) => true,
                None => false, // closed meanwhile
            }
        });
        due
    }
}
