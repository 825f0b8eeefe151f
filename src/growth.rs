//! How tables of per-connection state grow.
//!
//! `Vec` doubles its capacity when full, so a table of n entries may hold up to 2n slots,
//! and at 100k connections it holds 131,072 (31 % unused). The engine's tables grow by a
//! quarter instead (by at least 64 slots): once past 256 slots, growth leaves at most a
//! fifth of a table unused, and since a large block is grown in place or remapped by the
//! allocator, the extra reallocations cost little. (Slots freed by departed connections
//! are reused before the table grows, and are not counted here.)

use slab::Slab;

/// The growth step for a table of `capacity` slots.
fn step(capacity: usize) -> usize {
    (capacity / 4).max(64)
}

/// Makes room for one more entry in `v`, growing it by a quarter if it is full.
pub(crate) fn room_in_vec<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(step(v.capacity()));
    }
}

/// Makes room for one more entry in `slab`, growing it by a quarter if every slot is taken.
pub(crate) fn room_in_slab<T>(slab: &mut Slab<T>) {
    if slab.len() == slab.capacity() {
        slab.reserve_exact(step(slab.capacity()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_grow_by_a_quarter() {
        let mut v: Vec<u64> = Vec::new();
        let mut slab: Slab<u64> = Slab::new();
        for i in 0..100_000 {
            room_in_vec(&mut v);
            v.push(i);
            room_in_slab(&mut slab);
            slab.insert(i);
        }
        // Doubling would have left 131,072 slots.
        assert!(v.capacity() <= 125_000, "{}", v.capacity());
        assert!(slab.capacity() <= 125_000, "{}", slab.capacity());
        // A slot freed and reused does not grow the table.
        let cap = slab.capacity();
        slab.remove(5);
        room_in_slab(&mut slab);
        slab.insert(5);
        assert_eq!(slab.capacity(), cap);
    }
}
