//! How a server decides on a HELLO: the protocol's own checks, the application's hook, and,
//! when the application decides logins itself, the HELLOs that wait for its verdict. The
//! engine asks [`Logins::check`] and acts on the answer.

use super::event::HelloHook;
use super::handle::ConnId;
use crate::frame::{Code, Hello, Reason, PROTOCOL_VERSION};
use std::num::NonZeroU32;

/// What to do with a HELLO.
pub(super) enum Check {
    /// Refuse it (REJECT).
    Reject(Reason),
    /// Ask the application, which answers later; the HELLO waits here meanwhile.
    Ask(Box<Hello>),
    /// Log it in now.
    Accept(Hello),
}

#[derive(Default)]
pub(super) struct Logins {
    hook: Option<HelloHook>,
    /// Logins wait for the application's verdict (`ServerEvent::Login`).
    decide: bool,
    /// HELLOs waiting for a verdict, by connection slot (with the generation).
    waiting: hashbrown::HashMap<u32, (NonZeroU32, Box<Hello>)>,
}

impl Logins {
    pub(super) fn set_hook(&mut self, hook: HelloHook) {
        self.hook = Some(hook);
    }

    pub(super) fn decide(&mut self, on: bool) {
        self.decide = on;
    }

    /// The checks every HELLO passes (version, identity, the hook); then, if the
    /// application decides logins, the HELLO waits for its verdict on `conn`.
    pub(super) fn check(&mut self, conn: ConnId, hello: Hello) -> Check {
        if hello.version != PROTOCOL_VERSION {
            let why = "supported: 1";
            return Check::Reject(Reason::new(Code::UNSUPPORTED_VERSION, why));
        }
        if hello.identity.is_empty() {
            return Check::Reject(Reason::new(Code::INVALID_IDENTITY, "empty identity"));
        }
        if let Some(hook) = self.hook.as_mut() {
            if let Err(reason) = hook(&hello) {
                return Check::Reject(reason);
            }
        }
        if !self.decide {
            return Check::Accept(hello);
        }
        let hello = Box::new(hello);
        self.waiting.insert(conn.index, (conn.gen, hello.clone()));
        Check::Ask(hello)
    }

    /// The HELLO waiting on `conn`, taken out (the verdict has come).
    pub(super) fn take(&mut self, conn: ConnId) -> Option<Box<Hello>> {
        match self.waiting.remove(&conn.index) {
            Some((gen, hello)) if gen == conn.gen => Some(hello),
            Some(other) => {
                // Another connection's, in a reused slot: not ours to take.
                self.waiting.insert(conn.index, other);
                None
            }
            None => None,
        }
    }

    /// Slot `index` (generation `gen`) is closed: its HELLO waits no longer.
    pub(super) fn forget(&mut self, index: u32, gen: NonZeroU32) {
        if self.waiting.get(&index).is_some_and(|(g, _)| *g == gen) {
            self.waiting.remove(&index);
        }
    }

    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}
