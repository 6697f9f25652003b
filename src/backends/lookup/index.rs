//! The hash table of an in-memory reference: row offsets by their key's hash, with open
//! addressing and linear probing. Each slot holds 32 bits of the hash beside the row's offset,
//! so a probe reads a row (to compare its key) only when those agree, the table grows without
//! reading a row, and a batch
//! of lookups can ask the processor for their slots, then their rows, before any of them is
//! needed ([`Index::prefetch_slot`], [`Index::candidate`]): a reference of a million rows is
//! far larger than the caches, and a key in random order otherwise waits for two or three
//! misses of memory (and of the page tables) one after another.

/// An empty slot (no row starts at `u32::MAX`: a row takes at least 8 bytes).
const EMPTY: u64 = u64::MAX;

/// Row offsets by hash. Slots are at most three quarters full.
#[derive(Default)]
pub(super) struct Index {
    slots: Vec<u64>,
    len: usize,
}

/// The bits of a hash a slot keeps, which also place it.
fn tag(hash: u64) -> u64 {
    hash & 0xffff_ffff
}

impl Index {
    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated (each 8 bytes).
    pub(super) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// The slot a hash is first looked for in: its tag scaled to the table (a multiply and a
    /// shift, for any table size).
    fn home(&self, hash: u64) -> usize {
        ((tag(hash) * self.slots.len() as u64) >> 32) as usize
    }

    /// The offset of the row of `hash` for which `same` holds, if any.
    pub(super) fn get(&self, hash: u64, same: impl Fn(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot >> 32 == tag(hash) && same(slot as u32) {
                return Some(slot as u32);
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    /// Point `hash`'s row for which `same` holds at `at`, or add it.
    pub(super) fn upsert(&mut self, hash: u64, at: u32, same: impl Fn(u32) -> bool) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow_for(self.len + 1);
        }
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                self.slots[i] = tag(hash) << 32 | u64::from(at);
                self.len += 1;
                return;
            }
            if slot >> 32 == tag(hash) && same(slot as u32) {
                self.slots[i] = tag(hash) << 32 | u64::from(at);
                return;
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    /// Make room for `rows` rows (at least), placing every row held again by its tag.
    pub(super) fn grow_for(&mut self, rows: usize) {
        let want = (rows.max(self.len) * 4 / 3 + 1).max(16);
        if want <= self.slots.len() {
            return;
        }
        // Half as large again at least, so that rows added one at a time are rehashed a bounded
        // number of times each (and a table of 8-byte slots wastes less than by doubling).
        let size = want.max(self.slots.len() * 3 / 2);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            let mut i = self.home(slot >> 32);
            while self.slots[i] != EMPTY {
                i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
            }
            self.slots[i] = slot;
        }
    }

    /// Every row offset held, in no order.
    pub(super) fn offsets(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().filter(|&&s| s != EMPTY).map(|&s| s as u32)
    }

    /// Ask the processor for the slot `hash` is first looked for in.
    pub(super) fn prefetch_slot(&self, hash: u64) {
        if let Some(slot) = self.slots.get(self.home(hash)) {
            prefetch(slot);
        }
    }

    /// The offset of the first row whose tag agrees with `hash` (most often the row itself):
    /// the one to ask the processor for ahead of [`Index::get`].
    pub(super) fn candidate(&self, hash: u64) -> Option<u32> {
        self.get(hash, |_| true)
    }
}

/// Ask the processor to bring the cache line of `value` in, without waiting for it.
pub(super) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing into the program and cannot fault;
    // the pointer comes from a reference in any case. SSE is part of every x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of plain numbers: row `n`'s "key" is `n`, its hash a poor one (many collide)
    /// so that probes run long and wrap.
    fn hash(n: u32) -> u64 {
        u64::from(n % 13) << 32 | u64::from(n % 97) << 25
    }

    #[test]
    fn rows_are_found_replaced_and_kept_through_growth() {
        let mut index = Index::default();
        for n in 0..5_000u32 {
            index.upsert(hash(n), n, |o| o == n);
        }
        assert_eq!(index.len(), 5_000);
        for n in (0..5_000u32).step_by(7) {
            assert_eq!(index.get(hash(n), |o| o == n), Some(n));
            assert!(index.candidate(hash(n)).is_some());
        }
        assert_eq!(index.get(hash(5_001), |o| o == 5_001), None);
        // Replacing keeps the count; the offset now found is the new one.
        index.upsert(hash(42), 42, |o| o == 42);
        assert_eq!(index.len(), 5_000);
        let mut all: Vec<u32> = index.offsets().collect();
        all.sort_unstable();
        assert_eq!(all, (0..5_000).collect::<Vec<_>>());
        assert!(index.capacity() * 3 >= index.len() * 4);
        // An empty table finds nothing and prefetches nothing.
        let empty = Index::default();
        assert_eq!(empty.get(1, |_| true), None);
        assert_eq!(empty.candidate(1), None);
        empty.prefetch_slot(1);
    }
}
