//! A queue's duplicate deliveries, dropped within a window by message id.
//!
//! SQS delivers at least once: a message may come twice (a visibility timeout that ran out, a
//! delete that failed, or the queue's own rare duplicates). A table absorbs a duplicate by key;
//! a file would hold it twice. So the reader remembers the ids of the messages it took in the
//! last `dedup_window_s` seconds, and where their first copy went. A copy that comes again is
//! not processed: it is acknowledged once its first copy is accounted for, never before, so a
//! crash before the first copy's file is written loses neither.
//!
//! **Cost:** about 56 bytes of memory per id remembered (a 16-byte digest of the id, the first
//! copy's partition, the time), for at most [`MAX_IDS`] ids: about 28 MiB at the most. A queue
//! delivering more than `MAX_IDS` messages within the window forgets the oldest early, and says
//! so in the report (`dedup_forgotten`). The window lives in the running process: a duplicate
//! that comes after a restart (a crash between a file's write and its messages' deletes) goes
//! into a file again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The most ids remembered at once.
pub const MAX_IDS: usize = 500_000;

/// Where a message's first copy went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// Into a buffer of this partition (a file to come, or rejects).
    Buffered(Arc<str>),
    /// Accounted for with its arrival: filtered out, skipped, or written only to the sink.
    Settled,
}

/// The ids taken within the window.
#[derive(Debug)]
pub struct Window {
    window_ms: i64,
    seen: HashMap<[u8; 16], First>,
    /// When each id was taken, oldest first.
    order: VecDeque<(i64, [u8; 16])>,
    /// Ids forgotten before their window was over, for want of room.
    pub forgotten: u64,
    /// The partition names of first copies, shared.
    names: HashMap<Arc<str>, ()>,
}

fn digest(id: &str) -> [u8; 16] {
    let d = Sha256::digest(id.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

impl Window {
    /// Remember ids for `seconds`.
    pub fn new(seconds: u32) -> Self {
        Window {
            window_ms: i64::from(seconds) * 1000,
            seen: HashMap::new(),
            order: VecDeque::new(),
            forgotten: 0,
            names: HashMap::new(),
        }
    }

    /// Where the first copy of message `id` went, if it was taken within the window before
    /// `now_ms`.
    pub fn first(&mut self, id: &str, now_ms: i64) -> Option<First> {
        self.expire(now_ms);
        self.seen.get(&digest(id)).cloned()
    }

    /// Note that message `id` was taken at `now_ms`, into `partition`'s buffer (or settled).
    pub fn note(&mut self, id: &str, partition: Option<&str>, now_ms: i64) {
        let first = match partition {
            Some(p) => First::Buffered(self.name(p)),
            None => First::Settled,
        };
        let key = digest(id);
        if self.seen.insert(key, first).is_none() {
            self.order.push_back((now_ms, key));
        }
        while self.order.len() > MAX_IDS {
            self.pop();
            self.forgotten += 1;
        }
    }

    fn name(&mut self, p: &str) -> Arc<str> {
        if let Some((name, ())) = self.names.get_key_value(p) {
            return name.clone();
        }
        // Names of partitions no id refers to any more are dropped now and then.
        if self.names.len() > 4096 {
            self.names.retain(|n, ()| Arc::strong_count(n) > 1);
        }
        let name: Arc<str> = p.into();
        self.names.insert(name.clone(), ());
        name
    }

    fn expire(&mut self, now_ms: i64) {
        while self.order.front().is_some_and(|(at, _)| now_ms - at >= self.window_ms) {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_known_within_the_window_with_where_its_first_copy_went() {
        let mut w = Window::new(10);
        assert_eq!(w.first("a", 0), None);
        w.note("a", Some("vendor=1"), 0);
        w.note("b", None, 1_000);
        assert_eq!(w.first("a", 9_999), Some(First::Buffered("vendor=1".into())));
        assert_eq!(w.first("b", 9_999), Some(First::Settled));
        assert_eq!(w.first("c", 9_999), None, "another id is new");
        assert_eq!(w.first("a", 10_000), None, "the window is over for a");
        assert_eq!(w.first("b", 10_999), Some(First::Settled));
        assert_eq!(w.first("b", 11_000), None);
        assert!(w.seen.is_empty() && w.order.is_empty());
    }

    #[test]
    fn beyond_its_room_the_oldest_ids_are_forgotten_and_counted() {
        let mut w = Window::new(3_600);
        for i in 0..MAX_IDS + 10 {
            w.note(&i.to_string(), Some("p"), 0);
        }
        assert_eq!((w.seen.len(), w.forgotten), (MAX_IDS, 10));
        assert_eq!(w.first("0", 1), None, "the oldest went first");
        assert!(w.first(&(MAX_IDS + 9).to_string(), 1).is_some());
        assert_eq!(w.names.len(), 1, "partition names are shared");
    }
}
