//! Random numbers: a small seeded generator, and where its seed comes from.
//!
//! An engine draws two kinds of values. Protocol ids (WELCOME session ids, HELLO instances)
//! must differ between processes that never talk to each other, so they come from a
//! generator seeded by the operating system. Reconnect jitter only needs to be spread, and
//! the simulator needs it (and the ids) to replay, so a seed may be given for a
//! deterministic engine; see [`Engine::with_seed`](crate::engine::Engine::with_seed).

/// A small, fast, seeded pseudo-random generator (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..=max` (max < 2^64 - 1; the bias is below 2^-32 for the
    /// millisecond ranges used here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

impl Rng {
    /// A generator seeded by the operating system's entropy source: two processes (or two
    /// engines of one process) get unrelated sequences.
    pub fn from_entropy() -> Rng {
        Rng::new(entropy())
    }
}

/// 64 bits from the operating system's entropy source. Should that fail (it does not on
/// the systems liveline runs on), the standard library's per-process random hash keys, the
/// time and the process id are mixed instead, which still differ between processes.
pub fn entropy() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn entropy_seeded_generators_differ() {
        let draws: Vec<u64> = (0..8).map(|_| Rng::from_entropy().next_u64()).collect();
        let mut unique = draws.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), draws.len(), "{draws:x?}");
    }
}
