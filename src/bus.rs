//! Messages between loops and between machines, behind one trait: [`Bus`]. The Redis link
//! ([`crate::redis::Redis`]) carries them between processes; [`LocalBus`] between the loops
//! of one process ([`crate::reactor::Loops`]), sharing nothing but the table of who
//! subscribed to what. An application routes the same way over either.
//!
//! A message published on a [`LocalBus`] reaches every loop subscribed to its channel as
//! [`Event::Bus`](crate::engine::Event::Bus), through that loop's command queue and waker:
//! no lock is held while a loop works, and a loop that stopped is skipped.

use crate::reactor::Handle;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// Publish and subscribe, whatever carries it: the part of a broker that routing needs.
pub trait Bus {
    /// Subscribes to `channel`, now and (for a bus over a connection) after every
    /// reconnect, until unsubscribed.
    fn subscribe(&mut self, channel: &[u8]);
    /// Ends the subscription to `channel`.
    fn unsubscribe(&mut self, channel: &[u8]);
    /// Publishes `payload` to `channel`. A bus that reports an outcome reports it with
    /// `token` (Redis: a reply with the number of subscribers that received it); the
    /// in-process bus has none to report.
    fn publish(&mut self, channel: &[u8], payload: &[u8], token: u64) -> Result<(), BusError>;
    /// Whether what is published reaches the other side now.
    fn is_up(&self) -> bool;
}

/// Why a message was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The broker is unreachable and as much as may be held waits already.
    Full,
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Full => write!(f, "the broker is unreachable and the queue is full"),
        }
    }
}

impl std::error::Error for BusError {}

struct Shared {
    /// Each loop's handle, once it is running.
    loops: Mutex<Vec<Option<Handle>>>,
    /// Channel -> the loops subscribed to it.
    subs: RwLock<HashMap<Box<[u8]>, Vec<usize>>>,
}

/// The meeting point of `n` loops' [`LocalBus`]es. Make it before the loops, give each loop
/// its [`member`](Hub::member), and let each [`attach`](LocalBus::attach) its handle.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Hub {
    /// A hub for `n` loops.
    pub fn new(n: usize) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                loops: Mutex::new(vec![None; n]),
                subs: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Loop `index`'s end of the bus.
    pub fn member(&self, index: usize) -> LocalBus {
        LocalBus {
            shared: Arc::clone(&self.shared),
            me: index,
            subscribed: HashSet::new(),
        }
    }
}

/// One loop's end of an in-process bus (see the [module docs](self)).
pub struct LocalBus {
    shared: Arc<Shared>,
    me: usize,
    subscribed: HashSet<Box<[u8]>>,
}

impl LocalBus {
    /// Tells the hub how to reach this loop: its reactor's handle.
    pub fn attach(&self, handle: Handle) {
        if let Ok(mut loops) = self.shared.loops.lock() {
            if let Some(slot) = loops.get_mut(self.me) {
                *slot = Some(handle);
            }
        }
    }

    /// This loop's index.
    pub fn index(&self) -> usize {
        self.me
    }

    /// The loops subscribed to `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> Vec<usize> {
        self.shared
            .subs
            .read()
            .map(|subs| subs.get(channel).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every channel some loop subscribed to whose name starts with `prefix`, once each.
    pub fn channels(&self, prefix: &[u8]) -> Vec<Bytes> {
        self.shared
            .subs
            .read()
            .map(|subs| {
                subs.keys()
                    .filter(|c| c.starts_with(prefix))
                    .map(|c| Bytes::copy_from_slice(c))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        let mine: Vec<Box<[u8]>> = self.subscribed.drain().collect();
        for channel in mine {
            self.unsubscribe(&channel);
        }
    }
}

impl Bus for LocalBus {
    fn subscribe(&mut self, channel: &[u8]) {
        if !self.subscribed.insert(Box::from(channel)) {
            return;
        }
        if let Ok(mut subs) = self.shared.subs.write() {
            subs.entry(Box::from(channel)).or_default().push(self.me);
        }
    }

    fn unsubscribe(&mut self, channel: &[u8]) {
        if !self.subscribed.remove(channel) {
            return;
        }
        if let Ok(mut subs) = self.shared.subs.write() {
            if let Some(loops) = subs.get_mut(channel) {
                loops.retain(|&l| l != self.me);
                if loops.is_empty() {
                    subs.remove(channel);
                }
            }
        }
    }

    fn publish(&mut self, channel: &[u8], payload: &[u8], _token: u64) -> Result<(), BusError> {
        let targets = self.subscribers(channel);
        if targets.is_empty() {
            return Ok(());
        }
        let handles: Vec<Handle> = match self.shared.loops.lock() {
            Ok(loops) => targets
                .iter()
                .filter_map(|&i| loops.get(i).cloned().flatten())
                .collect(),
            Err(_) => return Ok(()),
        };
        let (channel, payload) = (
            Bytes::copy_from_slice(channel),
            Bytes::copy_from_slice(payload),
        );
        for handle in handles {
            let (c, p) = (channel.clone(), payload.clone());
            // A loop that stopped has nobody left to tell.
            let _ = handle.run(move |app| app.post_bus(c, p));
        }
        Ok(())
    }

    fn is_up(&self) -> bool {
        true
    }
}
