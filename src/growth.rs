//! How tables of per-connection state grow.
//!
//! `Vec` doubles its capacity when full, so a table of n entries may hold up to 2n slots:
//! at 100k connections, 131,072 (31 % unused). Small tables double as usual; from
//! `QUARTER_FROM` slots on, the engine's tables grow by a quarter instead, so a large table
//! leaves at most a fifth of its slots unused.
//!
//! Why not a quarter from the start: each growth copies the table and frees the old block,
//! and many small freed blocks stay resident in the allocator's heap. Measured on the real
//! socket server (`scripts/hb-bench.sh`, 19,000 sessions), growing by a quarter throughout
//! raised the resident memory per connection from 291 to 340 bytes, while doubling's slack
//! costs address space, not resident memory, until it is used. Large blocks are remapped
//! by the allocator rather than copied, and there the quarter steps pay off.
//! (Slots freed by departed connections are reused before a table grows.)

use slab::Slab;

/// The table size from which growth is by a quarter rather than by doubling.
const QUARTER_FROM: usize = 1 << 16;

/// The growth step for a full table of `capacity` slots.
fn step(capacity: usize) -> usize {
    if capacity < QUARTER_FROM {
        capacity.max(16)
    } else {
        capacity / 4
    }
}

/// Makes room for one more entry in `v`, growing it by [`step`] if it is full.
pub(crate) fn room_in_vec<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(step(v.capacity()));
    }
}

/// Makes room for one more entry in `slab`, growing it by [`step`] if every slot is taken.
pub(crate) fn room_in_slab<T>(slab: &mut Slab<T>) {
    if slab.len() == slab.capacity() {
        slab.reserve_exact(step(slab.capacity()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_grow_by_a_quarter() {
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
