//! The batcher: records buffered per partition until a buffer is big enough, full enough or old
//! enough to become a file. It owns no clock and does no I/O: every call is given the time, so
//! a test can drive it through any arrival sequence (see the property test below).
//!
//! A buffer is cut *before* a record that would take it over the size target, so a file is
//! over the target only when one record alone is. Buffers are per partition, not per shard or
//! per source, so the number of shards never shrinks the files.

use std::collections::HashMap;

/// What a buffer holds: its records, added in arrival order. A `Vec` keeps them as they are;
/// a stream's buffers compress them as they come (`spool.rs`).
pub trait Fill {
    /// A record.
    type Item;
    /// Add a record.
    fn add(&mut self, item: Self::Item);
}

impl<T> Fill for Vec<T> {
    type Item = T;
    fn add(&mut self, item: T) {
        self.push(item);
    }
}

/// When buffers become files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The size target of one file, in bytes of encoded records.
    pub bytes: usize,
    /// The most records in one file.
    pub records: u64,
    /// The most milliseconds a record waits in a buffer.
    pub age_ms: i64,
    /// The most buffers open at once; one more cuts the oldest.
    pub open: usize,
    /// The most bytes in all buffers together; more cuts the largest.
    pub total_bytes: usize,
}

/// Why a buffer became a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It reached the size target (or the next record would have taken it over).
    Size,
    /// It reached the record limit.
    Records,
    /// Its oldest record reached the age limit.
    Age,
    /// Too many partitions were open; it was the oldest.
    Open,
    /// The buffers together held too much; it was the largest.
    Memory,
    /// The batcher was drained (the stream is stopping).
    Drain,
}

/// A cut buffer: the records of one file.
#[derive(Debug)]
pub struct Batch<F> {
    /// The partition it belongs to.
    pub partition: String,
    /// The records, in arrival order.
    pub items: F,
    /// How many.
    pub records: u64,
    /// Their encoded size.
    pub bytes: usize,
    /// When its first record arrived.
    pub opened_ms: i64,
    /// Why it was cut.
    pub cut: Cut,
}

struct Buffer<F> {
    items: F,
    records: u64,
    bytes: usize,
    opened_ms: i64,
}

/// Buffers per partition.
pub struct Batcher<F> {
    limits: Limits,
    /// By partition; foldhash, since every record looks its buffer up.
    buffers: HashMap<String, Buffer<F>, foldhash::fast::RandomState>,
    total: usize,
}

impl<F: Fill> Batcher<F> {
    /// An empty batcher.
    pub fn new(limits: Limits) -> Self {
        assert!(limits.bytes > 0 && limits.records > 0 && limits.open > 0, "limits must be positive");
        Batcher { limits, buffers: HashMap::default(), total: 0 }
    }

    /// Add `item` (`bytes` encoded) to `partition` at `now_ms`, in a buffer `open` makes if
    /// the partition has none; returns the buffers this cut.
    pub fn push(
        &mut self,
        partition: &str,
        item: F::Item,
        bytes: usize,
        now_ms: i64,
        open: impl FnOnce() -> F,
    ) -> Vec<Batch<F>> {
        let mut out = Vec::new();
        if let Some(b) = self.buffers.get(partition) {
            if b.records > 0 && b.bytes + bytes > self.limits.bytes {
                out.push(self.cut(partition, Cut::Size));
            }
        } else if self.buffers.len() >= self.limits.open {
            let oldest = self.buffers.iter().min_by_key(|(_, b)| b.opened_ms).map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                out.push(self.cut(&p, Cut::Open));
            }
        }
        let b = match self.buffers.get_mut(partition) {
            Some(b) => b,
            None => {
                let b = Buffer { items: open(), records: 0, bytes: 0, opened_ms: now_ms };
                self.buffers.entry(partition.to_string()).or_insert(b)
            }
        };
        b.items.add(item);
        b.records += 1;
        b.bytes += bytes;
        self.total += bytes;
        let (full, many) = (b.bytes >= self.limits.bytes, b.records >= self.limits.records);
        if full || many {
            out.push(self.cut(partition, if full { Cut::Size } else { Cut::Records }));
        }
        while self.total > self.limits.total_bytes {
            let largest = self.buffers.iter().max_by_key(|(_, b)| b.bytes).map(|(p, _)| p.clone());
            match largest {
                Some(p) => out.push(self.cut(&p, Cut::Memory)),
                None => break,
            }
        }
        out
    }

    /// The buffers whose oldest record has waited the age limit at `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<Batch<F>> {
        let age = self.limits.age_ms;
        let mut due: Vec<(i64, String)> = self
            .buffers
            .iter()
            .filter(|(_, b)| now_ms - b.opened_ms >= age)
            .map(|(p, b)| (b.opened_ms, p.clone()))
            .collect();
        due.sort();
        due.into_iter().map(|(_, p)| self.cut(&p, Cut::Age)).collect()
    }

    /// When the next buffer comes due, if any is open.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.buffers.values().map(|b| b.opened_ms + self.limits.age_ms).min()
    }

    /// Every open buffer, oldest first.
    pub fn drain(&mut self) -> Vec<Batch<F>> {
        let mut all: Vec<(i64, String)> = self.buffers.iter().map(|(p, b)| (b.opened_ms, p.clone())).collect();
        all.sort();
        all.into_iter().map(|(_, p)| self.cut(&p, Cut::Drain)).collect()
    }

    /// The records of `partition`'s open buffer, if it has one.
    pub fn items_mut(&mut self, partition: &str) -> Option<&mut F> {
        self.buffers.get_mut(partition).map(|b| &mut b.items)
    }

    /// Bytes buffered in all partitions.
    pub fn buffered_bytes(&self) -> usize {
        self.total
    }

    /// Partitions with an open buffer.
    pub fn open(&self) -> usize {
        self.buffers.len()
    }

    fn cut(&mut self, partition: &str, cut: Cut) -> Batch<F> {
        let b = self.buffers.remove(partition).expect("cut an open buffer");
        self.total -= b.bytes;
        let (items, records) = (b.items, b.records);
        Batch { partition: partition.to_string(), items, records, bytes: b.bytes, opened_ms: b.opened_ms, cut }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Push { partition: u8, bytes: usize },
        Tick { ms: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..6, 1usize..400).prop_map(|(partition, bytes)| Step::Push { partition, bytes }),
            1 => (0i64..3_000).prop_map(|ms| Step::Tick { ms }),
        ]
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (100usize..2_000, 1u64..50, 0i64..2_000, 1usize..5, 500usize..6_000).prop_map(
            |(bytes, records, age_ms, open, total_bytes)| Limits { bytes, records, age_ms, open, total_bytes },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// For any arrival sequence and limits: no record lost or doubled, no file over the
        /// target by more than one record, none with too many records, each file's records in
        /// arrival order, and after a tick no buffer older than the age limit.
        #[test]
        fn every_record_once_in_bounded_files(limits in limits(), steps in prop::collection::vec(step(), 0..400)) {
            let mut b: Batcher<Vec<(u8, u64)>> = Batcher::new(limits);
            let mut now = 0i64;
            let mut sent = Vec::new();
            let mut files: Vec<Batch<Vec<(u8, u64)>>> = Vec::new();
            let mut sizes: HashMap<(u8, u64), usize> = HashMap::new();
            for (n, s) in steps.iter().enumerate() {
                match *s {
                    Step::Push { partition, bytes } => {
                        let id = (partition, n as u64);
                        sizes.insert(id, bytes);
                        sent.push(id);
                        files.extend(b.push(&partition.to_string(), id, bytes, now, Vec::new));
                    }
                    Step::Tick { ms } => {
                        now += ms;
                        files.extend(b.due(now));
                        if let Some(next) = b.next_due_ms() {
                            prop_assert!(next > now, "a buffer older than the age limit after a tick");
                        }
                    }
                }
                prop_assert!(b.open() <= limits.open);
                prop_assert!(b.buffered_bytes() <= limits.total_bytes);
            }
            files.extend(b.drain());
            prop_assert_eq!(b.open(), 0);
            let mut got: Vec<(u8, u64)> = Vec::new();
            for f in &files {
                prop_assert!(!f.items.is_empty());
                prop_assert_eq!(f.items.len() as u64, f.records);
                prop_assert!(f.items.len() as u64 <= limits.records);
                let total: usize = f.items.iter().map(|i| sizes[i]).sum();
                prop_assert_eq!(total, f.bytes);
                let last = sizes[f.items.last().unwrap()];
                prop_assert!(f.bytes - last < limits.bytes, "over the target by more than its last record");
                prop_assert!(f.items.iter().all(|i| i.0.to_string() == f.partition));
                prop_assert!(f.items.windows(2).all(|w| w[0].1 < w[1].1), "arrival order");
                got.extend(&f.items);
            }
            got.sort();
            let mut want = sent.clone();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn cuts_before_a_record_that_would_overflow() {
        let limits = Limits { bytes: 100, records: 1000, age_ms: 1000, open: 10, total_bytes: 10_000 };
        let mut b = Batcher::new(limits);
        assert!(b.push("p", 1, 60, 0, Vec::new).is_empty());
        let cut = b.push("p", 2, 60, 1, Vec::new);
        assert_eq!(cut.len(), 1);
        assert_eq!((cut[0].items.clone(), cut[0].cut), (vec![1], Cut::Size));
        // One record alone over the target is a file of its own.
        let cut = b.push("q", 3, 500, 2, Vec::new);
        assert_eq!((cut[0].items.clone(), cut[0].bytes), (vec![3], 500));
        assert_eq!(b.next_due_ms(), Some(1001));
        assert!(b.due(1000).is_empty());
        assert_eq!(b.due(1001)[0].cut, Cut::Age);
    }
}
