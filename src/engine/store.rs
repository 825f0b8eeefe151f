//! The server's session records: one per client instance (identity and HELLO instance),
//! kept across that instance's reconnects and for a linger after it left, so that a
//! returning instance finds its duplicate filter and what was still to be sent to it.
//!
//! ```text
//!   HELLO ──admit──> refused (stale reconnect, or the identity is taken)
//!            │
//!            └─────> accept: the instance's record (found or new) becomes the identity's
//!                    current one; the previous current record's unsent messages are
//!                    handed back (another instance took over)
//!   connection ends ──leave──> left (stamped, oldest first) ──expire──> forgotten,
//!                                     │                         its unsent messages
//!                              same instance returns            handed back
//! ```
//!
//! Of an identity's records only the current one (its latest login) may hold a live
//! session or messages to send. The store decides; the engine acts on what it returns
//! (closing a superseded connection, queueing frames). Events it raises go to the sink
//! the engine passes in.

use super::event::{Event, FailCause, ServerEvent};
use super::handle::ConnId;
use crate::config::DuplicateLogin;
use crate::frame::{Code, Hello, Reason, Text};
use crate::reliable::{RecvState, SendQueue};
use crate::rng::Rng;
use crate::time::Tick;
use hashbrown::{DefaultHashBuilder, HashTable};
use log::{debug, info};
use slab::Slab;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// A server's memory of one client instance: who holds it and what was exchanged.
pub(super) struct Record {
    pub(super) identity: Text,
    pub(super) instance: u64,
    pub(super) attempt: u32,
    pub(super) session: u64,
    pub(super) conn: Option<ConnId>,
    pub(super) recv: RecvState,
    pub(super) send: SendQueue,
    /// 0 while a connection holds the record; otherwise the stamp of its entry in
    /// `SessionStore::left`.
    left_stamp: u64,
}

/// Messages of one client instance waiting for the application's confirmation at most.
const MAX_AWAITING: usize = 65_536;

/// What a HELLO may do, as [`SessionStore::admit`] decides it.
pub(super) enum Admit {
    /// Refuse it with this reason (REJECT).
    Refuse(Reason),
    /// Accept it; first close this live connection of the identity with this reason
    /// (GOAWAY), if any.
    Accept(Option<(ConnId, Reason)>),
}

pub(super) struct SessionStore {
    records: Slab<Record>,
    /// Records no connection holds, oldest first: (record, stamp, when it was left). They
    /// are kept for `linger` so that a reconnecting client finds its duplicate and resend
    /// state, and then forgotten, so that logins under ever new names cannot grow memory
    /// without bound.
    left: VecDeque<(u32, u64, Tick)>,
    next_stamp: u64,
    /// Record indices by (identity, instance); the identity itself is kept once, in the
    /// record.
    by_instance: HashTable<u32>,
    /// Per identity, the record of its latest login.
    current: HashTable<u32>,
    /// With confirmations on ([`Engine::confirm_messages`](super::Engine::confirm_messages)):
    /// per record, the ids handed to the application and not confirmed yet, oldest first.
    /// Apart from the records, so that an idle record stays small.
    awaiting: hashbrown::HashMap<u32, Vec<u64>>,
    hasher: DefaultHashBuilder,
    /// How long a left record is kept, in ticks.
    linger: u32,
    /// Left records beyond this many records in all are forgotten at once.
    max_records: usize,
}

impl SessionStore {
    pub(super) fn new(linger: u32, max_records: usize) -> SessionStore {
        SessionStore {
            records: Slab::new(),
            left: VecDeque::new(),
            next_stamp: 1,
            by_instance: HashTable::new(),
            current: HashTable::new(),
            awaiting: hashbrown::HashMap::new(),
            hasher: DefaultHashBuilder::default(),
            linger,
            max_records,
        }
    }

    /// Notes that message `id` of record `r` waits for the application's confirmation;
    /// `false` if too many do already (it is then acknowledged at once, as without
    /// confirmations, so that a client is never stuck on a window the application forgot).
    pub(super) fn await_confirmation(&mut self, r: u32, id: u64) -> bool {
        let list = self.awaiting.entry(r).or_default();
        if list.len() >= MAX_AWAITING {
            return false;
        }
        list.push(id);
        true
    }

    /// Whether message `id` of record `r` waits for the application's confirmation.
    pub(super) fn awaits(&self, r: u32, id: u64) -> bool {
        self.awaiting.get(&r).is_some_and(|l| l.contains(&id))
    }

    /// Takes message `id` of record `r` off the list of those waiting for a confirmation;
    /// whether it was on it.
    pub(super) fn confirm(&mut self, r: u32, id: u64) -> bool {
        let Some(list) = self.awaiting.get_mut(&r) else {
            return false;
        };
        let Some(at) = list.iter().position(|&x| x == id) else {
            return false;
        };
        list.remove(at);
        if list.is_empty() {
            self.awaiting.remove(&r);
        }
        true
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn get(&self, r: u32) -> &Record {
        &self.records[r as usize]
    }

    pub(super) fn get_mut(&mut self, r: u32) -> &mut Record {
        &mut self.records[r as usize]
    }

    fn current_of(&self, identity: &Text) -> Option<u32> {
        self.current_by_str(identity.as_str())
    }

    fn current_by_str(&self, identity: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(identity);
        let records = &self.records;
        self.current
            .find(hash, |&r| records[r as usize].identity.as_str() == identity)
            .copied()
    }

    /// The record of `identity`'s `instance`, if kept.
    pub(super) fn find(&self, identity: &str, instance: u64) -> Option<u32> {
        let hash = self.hasher.hash_one((identity, instance));
        let records = &self.records;
        self.by_instance
            .find(hash, |&r| {
                let rec = &records[r as usize];
                rec.instance == instance && rec.identity.as_str() == identity
            })
            .copied()
    }

    /// The connection holding `identity`'s current record, if any (it may be closing).
    pub(super) fn session_of(&self, identity: &str) -> Option<ConnId> {
        self.current_by_str(identity).and_then(|r| self.get(r).conn)
    }

    /// Every record held by a connection, with its identity.
    pub(super) fn live(&self) -> impl Iterator<Item = (&Text, ConnId)> + '_ {
        self.records
            .iter()
            .filter_map(|(_, rec)| rec.conn.map(|c| (&rec.identity, c)))
    }

    /// Whether `hello` may log in, given which connections are live. One live session per
    /// identity: a newer login replaces the older one (or is refused, by policy), but a
    /// stale reconnect of the same instance never evicts its own newer session.
    pub(super) fn admit(
        &self,
        hello: &Hello,
        live: impl Fn(ConnId) -> bool,
        policy: DuplicateLogin,
    ) -> Admit {
        let Some(cur) = self.current_of(&hello.identity) else {
            return Admit::Accept(None);
        };
        let rec = self.get(cur);
        let Some(old) = rec.conn.filter(|&c| live(c)) else {
            return Admit::Accept(None);
        };
        let same_client = rec.instance == hello.instance;
        if same_client && hello.attempt <= rec.attempt {
            let why = "a newer session of this client is live";
            return Admit::Refuse(Reason::new(Code::STALE_SESSION, why));
        }
        if !same_client && policy == DuplicateLogin::RefuseNewer {
            let why = "this identity is logged in";
            return Admit::Refuse(Reason::new(Code::STALE_SESSION, why));
        }
        let reason = if same_client {
            // The same client: its old connection is a leftover it has given up on, and
            // REPLACED would tell it never to come back.
            Reason::new(Code::STALE_SESSION, "superseded by a newer connection")
        } else {
            Reason::new(Code::REPLACED, "logged in elsewhere")
        };
        Admit::Accept(Some((old, reason)))
    }

    /// Logs `hello` in on `conn` (after [`admit`](Self::admit) and the closing of whatever it
    /// superseded): the instance's record, found or made (with a session id from `ids`),
    /// becomes the identity's current one, and everything it has not had acknowledged is due
    /// again. Returns the record.
    pub(super) fn accept(
        &mut self,
        hello: &Hello,
        conn: ConnId,
        ids: &mut Rng,
        events: &mut VecDeque<Event>,
    ) -> u32 {
        let current = self.current_of(&hello.identity);
        if let Some(cur) = current.filter(|&cur| self.get(cur).instance != hello.instance) {
            // Another instance takes the identity over: what was still to be sent to the
            // previous one goes back to the application, which may send it to this one.
            self.hand_back(cur, FailCause::Replaced, events);
        }
        let key_hash = self
            .hasher
            .hash_one((hello.identity.as_str(), hello.instance));
        let records = &self.records;
        let own = self
            .by_instance
            .find(key_hash, |&r| {
                let rec = &records[r as usize];
                rec.instance == hello.instance && rec.identity == hello.identity
            })
            .copied();
        let record = match own {
            Some(r) => r,
            None => {
                // Never 0: a client takes 0 for "no session to resume".
                let session = ids.next_u64().max(1);
                crate::growth::room_in_slab(&mut self.records);
                let r = self.records.insert(Record {
                    // Its own small allocation: a slice of the receive buffer would keep
                    // that whole buffer alive for as long as the record lives.
                    identity: hello.identity.compact(),
                    instance: hello.instance,
                    attempt: hello.attempt,
                    session,
                    conn: None,
                    recv: RecvState::default(),
                    send: SendQueue::new(),
                    left_stamp: 0,
                }) as u32;
                let (records, hasher) = (&self.records, &self.hasher);
                self.by_instance.insert_unique(key_hash, r, |&r| {
                    let rec = &records[r as usize];
                    hasher.hash_one((rec.identity.as_str(), rec.instance))
                });
                r
            }
        };
        let id_hash = self.hasher.hash_one(hello.identity.as_str());
        match current {
            Some(cur) if cur == record => {}
            Some(cur) => {
                let entry = self.current.find_mut(id_hash, |&r| r == cur);
                *entry.expect("the current record was just found") = record;
            }
            None => {
                let (records, hasher) = (&self.records, &self.hasher);
                self.current.insert_unique(id_hash, record, |&r| {
                    hasher.hash_one(records[r as usize].identity.as_str())
                });
            }
        }
        let rec = self.get_mut(record);
        rec.attempt = hello.attempt;
        rec.conn = Some(conn);
        rec.left_stamp = 0;
        // Everything not acknowledged goes out again on this connection, in id order.
        rec.send.rewind();
        record
    }

    /// `conn`, which held record `r`, has ended; the record lingers from `now`.
    pub(super) fn leave(&mut self, r: u32, conn: ConnId, now: Tick) {
        let stamp = self.next_stamp;
        let rec = self.get_mut(r);
        if rec.conn == Some(conn) {
            rec.conn = None;
            rec.left_stamp = stamp;
            self.left.push_back((r, stamp, now));
            self.next_stamp += 1;
        }
    }

    /// When the oldest left record is due to be forgotten, if any.
    pub(super) fn next_expiry(&self, now: Tick) -> Option<Tick> {
        self.left.front().map(|&(_, _, at)| self.forget_at(at, now))
    }

    /// When a record whose client left at `at` is to be forgotten: after the linger, or at
    /// once while records outnumber the limit.
    fn forget_at(&self, at: Tick, now: Tick) -> Tick {
        if self.records.len() > self.max_records {
            now
        } else {
            at.wrapping_add(self.linger)
        }
    }

    /// Forgets records left longer than the linger ago, and the oldest left ones beyond
    /// the limit; what they still had to send is handed back.
    pub(super) fn expire(&mut self, now: Tick, events: &mut VecDeque<Event>) {
        while let Some(&(r, stamp, at)) = self.left.front() {
            let current = self
                .records
                .get(r as usize)
                .is_some_and(|rec| rec.left_stamp == stamp);
            let expired = self.forget_at(at, now).is_at_or_before(now);
            if current && !expired {
                break;
            }
            self.left.pop_front();
            if current {
                self.forget(r, events);
            }
        }
    }

    fn forget(&mut self, r: u32, events: &mut VecDeque<Event>) {
        self.hand_back(r, FailCause::Expired, events);
        self.awaiting.remove(&r);
        let rec = self.records.remove(r as usize);
        let hash = self.hasher.hash_one((rec.identity.as_str(), rec.instance));
        if let Ok(entry) = self.by_instance.find_entry(hash, |&x| x == r) {
            entry.remove();
        }
        let hash = self.hasher.hash_one(rec.identity.as_str());
        if let Ok(entry) = self.current.find_entry(hash, |&x| x == r) {
            entry.remove();
        }
        debug!(
            "forgot the session record of {} instance {:x}",
            rec.identity, rec.instance
        );
    }

    /// Hands every message record `r` still has to send back to the application.
    pub(super) fn hand_back(&mut self, r: u32, cause: FailCause, events: &mut VecDeque<Event>) {
        let rec = self.get_mut(r);
        if rec.send.is_empty() {
            return;
        }
        let (identity, instance) = (rec.identity.clone(), rec.instance);
        let n = rec.send.len();
        info!("{n} message(s) to {identity} instance {instance:x} handed back: {cause}");
        for (id, payload) in rec.send.drain() {
            events.push_back(Event::Server(ServerEvent::Failed {
                identity: identity.clone(),
                instance,
                id,
                payload,
                cause,
            }));
        }
    }

    /// Hands back what `identity`'s current record still has to send; how many.
    pub(super) fn hand_back_identity(
        &mut self,
        identity: &str,
        cause: FailCause,
        events: &mut VecDeque<Event>,
    ) -> usize {
        let Some(r) = self.current_by_str(identity) else {
            return 0;
        };
        let n = self.get(r).send.len();
        self.hand_back(r, cause, events);
        n
    }

    /// Hands back what every record still has to send (the server is going away).
    pub(super) fn hand_back_all(&mut self, cause: FailCause, events: &mut VecDeque<Event>) {
        let all: Vec<u32> = self.records.iter().map(|(r, _)| r as u32).collect();
        for r in all {
            self.hand_back(r, cause, events);
        }
    }
}
