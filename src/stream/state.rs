//! What a stream consumer remembers between runs, and how it decides that a record it reads
//! again is already in a file.
//!
//! Every record has a position in its shard (a Kinesis sequence number, a file's record
//! number). Per shard the state keeps a **checkpoint**: every record at or before it is in a
//! written file, was rejected into one, or was filtered out. Records after it may be in
//! written files too (another partition's buffer held the checkpoint back): each written file
//! adds a **covered** range per shard, `(partition, shard, first, last)`: the records of that
//! shard in that partition from `first` to `last` are all in it, since a partition's buffer
//! takes a shard's records in order. A record read again is skipped when it is at or before
//! its shard's checkpoint or inside a covered range of its own partition, so a restart
//! rewrites nothing and loses nothing.
//!
//! A file is announced (**pending**) in the ledger before it is written, and covered after.
//! A restart finds a pending file either written (it becomes covered) or not (it is dropped,
//! and its records are read and cut again). Names are derived from the ranges, so a file is
//! written under one name however often it is retried.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A record's position in its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pos {
    /// A record number (files, standard input).
    N(u64),
    /// A sequence number as the stream gives it (Kinesis: up to 128 decimal digits).
    S(Box<str>),
}

impl Pos {
    /// Parse a stored position.
    pub fn parse(s: &str) -> Pos {
        match s.parse::<u64>() {
            Ok(n) if s.len() < 20 => Pos::N(n),
            _ => Pos::S(s.into()),
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pos::N(n) => write!(f, "{n}"),
            Pos::S(s) => f.write_str(s),
        }
    }
}

impl Ord for Pos {
    /// Numerically: decimal sequence numbers without leading zeros order by length, then text.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Pos::N(a), Pos::N(b)) => a.cmp(b),
            _ => {
                let (a, b) = (self.to_string(), other.to_string());
                (a.len(), &a).cmp(&(b.len(), &b))
            }
        }
    }
}

impl PartialOrd for Pos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Records of one shard in one partition from `first` to `last`, all in one written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covered {
    /// The partition (the errors prefix for rejects).
    pub partition: String,
    /// The shard.
    pub shard: String,
    /// The first record's position.
    pub first: String,
    /// The last record's position.
    pub last: String,
}

/// A file announced before it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its object name under the destination.
    pub name: String,
    /// What it holds.
    pub covered: Vec<Covered>,
}

/// One shard as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedShard {
    /// Every record at or before this position is accounted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The shard is closed (resharded) and every record of it is accounted for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
}

/// The state document kept in the ledger (see [`crate::backends::ledger::StateStore::put_checkpoint`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Per shard.
    #[serde(default)]
    pub shards: BTreeMap<String, SavedShard>,
    /// Written files past their shards' checkpoints.
    #[serde(default)]
    pub covered: Vec<Covered>,
    /// Files announced and perhaps written.
    #[serde(default)]
    pub pending: Vec<Pending>,
}

/// The name of a file holding `covered` (in any order): the same ranges, the same name. A
/// source whose positions mean nothing to a later run (a queue: each run, each Lambda
/// invocation numbers its records from 1) names its `run` too, so that two runs' files never
/// take one name.
pub fn file_id(covered: &[Covered], run: Option<&str>) -> String {
    let mut parts: Vec<String> =
        covered.iter().map(|c| format!("{}\u{1f}{}\u{1f}{}\u{1f}{}", c.partition, c.shard, c.first, c.last)).collect();
    parts.sort();
    parts.extend(run.map(|r| format!("run\u{1f}{r}")));
    let digest = Sha256::digest(parts.join("\u{1e}").as_bytes());
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// A shard's records in flight: which are accounted for, in order. It holds a bit per record
/// and its positions as runs (a file's records are numbered one after another, so a run holds
/// a whole block), not a position per record: a stream of millions of records waiting in
/// buffers costs megabytes, not hundreds.
#[derive(Debug)]
pub struct Track {
    /// The shard's name.
    pub shard: String,
    /// The ordinal of `done`'s first bit (a multiple of 64).
    base: u64,
    /// A bit per record from `base`: it is accounted for.
    done: VecDeque<u64>,
    /// The ordinal of the first record not accounted for.
    open: u64,
    /// The ordinal the next record gets.
    next: u64,
    /// The positions of the records from `open` on (and perhaps a few before), as runs.
    runs: VecDeque<Run>,
    /// The last accounted position with everything before it accounted.
    pub checkpoint: Option<Pos>,
    /// The shard has no more records (the reader reached its end).
    pub reader_ended: bool,
}

/// Records with consecutive ordinals: numbered one after another from `pos` (`Pos::N`), or
/// one record (`Pos::S`).
#[derive(Debug)]
struct Run {
    ordinal: u64,
    pos: Pos,
    len: u64,
}

impl Run {
    /// The position of the record at `ordinal`, inside this run.
    fn at(&self, ordinal: u64) -> Pos {
        match &self.pos {
            Pos::N(n) => Pos::N(n + (ordinal - self.ordinal)),
            s => s.clone(),
        }
    }
}

impl Track {
    /// A shard resuming after `checkpoint`.
    pub fn new(shard: impl Into<String>, checkpoint: Option<Pos>) -> Self {
        Track {
            shard: shard.into(),
            base: 0,
            done: VecDeque::new(),
            open: 0,
            next: 0,
            runs: VecDeque::new(),
            checkpoint,
            reader_ended: false,
        }
    }

    /// Note a record read; its ordinal.
    pub fn arrive(&mut self, pos: Pos) -> u64 {
        let ordinal = self.next;
        self.next += 1;
        if (ordinal - self.base) / 64 >= self.done.len() as u64 {
            self.done.push_back(0);
        }
        match (self.runs.back_mut(), &pos) {
            (Some(run), Pos::N(n)) if matches!(run.pos, Pos::N(first) if first + run.len == *n) => run.len += 1,
            _ => self.runs.push_back(Run { ordinal, pos, len: 1 }),
        }
        ordinal
    }

    /// Note `len` records read, numbered on from `pos` (one record if `pos` is not a number):
    /// as many [`Track::arrive`] calls, done at once.
    pub fn arrive_run(&mut self, pos: Pos, len: u64) {
        let (Pos::N(first), 2..) = (&pos, len) else {
            if len > 0 {
                self.arrive(pos);
            }
            return;
        };
        let (first, ordinal) = (*first, self.next);
        self.next += len;
        let words = (self.next - 1 - self.base) / 64 + 1;
        while (self.done.len() as u64) < words {
            self.done.push_back(0);
        }
        match self.runs.back_mut() {
            Some(run) if matches!(run.pos, Pos::N(n) if n + run.len == first) => run.len += len,
            _ => self.runs.push_back(Run { ordinal, pos, len }),
        }
    }

    /// Mark a record accounted for; moves the checkpoint over every leading accounted record.
    pub fn done(&mut self, ordinal: u64) {
        if ordinal < self.open || ordinal >= self.next {
            return;
        }
        let i = ordinal - self.base;
        self.done[(i / 64) as usize] |= 1 << (i % 64);
        if ordinal != self.open {
            return;
        }
        // Move `open` over the accounted records that lead, a word at a time where it can.
        while self.open < self.next {
            let i = self.open - self.base;
            let word = self.done[(i / 64) as usize] >> (i % 64);
            let ones = u64::from(word.trailing_ones()).min(64 - i % 64);
            if ones == 0 {
                break;
            }
            self.open = (self.open + ones).min(self.next);
        }
        while self.open - self.base >= 64 {
            self.done.pop_front();
            self.base += 64;
        }
        let last = self.open - 1;
        while self.runs.len() > 1 && self.runs[1].ordinal <= last {
            self.runs.pop_front();
        }
        self.checkpoint = self.runs.front().map(|r| r.at(last));
        while self.runs.front().is_some_and(|r| r.ordinal + r.len <= self.open) {
            self.runs.pop_front();
        }
    }

    /// Records read and not yet accounted for.
    pub fn in_flight(&self) -> usize {
        (self.next - self.open) as usize
    }

    /// Whether the shard is read to its end and every record is accounted for.
    pub fn finished(&self) -> bool {
        self.reader_ended && self.open == self.next
    }
}

impl Saved {
    /// Whether a record of `shard` at `pos` in `partition` is already in a written file.
    pub fn covers(&self, partition: &str, shard: &str, pos: &Pos) -> bool {
        self.covered.iter().any(|c| {
            c.shard == shard && c.partition == partition && Pos::parse(&c.first) <= *pos && *pos <= Pos::parse(&c.last)
        })
    }

    /// Whether `pos` is at or before `shard`'s checkpoint.
    pub fn before_checkpoint(&self, shard: &str, pos: &Pos) -> bool {
        self.shards.get(shard).and_then(|s| s.checkpoint.as_deref()).is_some_and(|c| *pos <= Pos::parse(c))
    }

    /// Take the tracks' checkpoints, and drop covered ranges they have passed.
    pub fn advance(&mut self, tracks: &[Track]) {
        for t in tracks {
            let s = self.shards.entry(t.shard.clone()).or_default();
            // Only forward: a batch handed over again from before the checkpoint (a replayed
            // shard) accounts for records the checkpoint has already passed.
            match (&t.checkpoint, s.checkpoint.as_deref()) {
                (Some(c), Some(stored)) if *c <= Pos::parse(stored) => {}
                (Some(c), _) => s.checkpoint = Some(c.to_string()),
                (None, _) => {}
            }
            if t.finished() {
                s.ended = true;
            }
        }
        let shards = &self.shards;
        self.covered.retain(|c| {
            let passed = shards.get(&c.shard).and_then(|s| s.checkpoint.as_deref()).map(Pos::parse);
            passed.is_none_or(|p| p < Pos::parse(&c.last))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_numerically() {
        let a = Pos::parse("49590338271490256608559692538361571095921575989136588898");
        let b = Pos::parse("49590338271490256608559692540925702759324208523137515618");
        assert!(a < b);
        assert!(Pos::parse("9") < Pos::parse("10"));
        assert!(Pos::N(99) < Pos::parse("100000000000000000000000"));
        assert_eq!(Pos::parse("42"), Pos::N(42));
    }

    #[test]
    fn checkpoint_moves_over_leading_done_records_only() {
        let mut t = Track::new("s", None);
        let o: Vec<u64> = (1..=4).map(|n| t.arrive(Pos::N(n))).collect();
        t.done(o[1]);
        assert_eq!(t.checkpoint, None);
        t.done(o[0]);
        assert_eq!(t.checkpoint, Some(Pos::N(2)));
        t.done(o[3]);
        assert_eq!((t.checkpoint.clone(), t.in_flight()), (Some(Pos::N(2)), 2));
        t.done(o[2]);
        assert_eq!((t.checkpoint.clone(), t.in_flight()), (Some(Pos::N(4)), 0));
        t.reader_ended = true;
        assert!(t.finished());
    }

    /// The bits and runs give what a position per record gave, whatever the order records
    /// are accounted in: the checkpoint is the position of the last of the leading ones.
    #[test]
    fn the_checkpoint_follows_leading_accounted_records_over_runs_and_words() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50 {
            let mut t = Track::new("s", None);
            let mut positions = Vec::new();
            let mut n = 0u64;
            for _ in 0..rng.usize(1..400) {
                // Numbers with gaps (a new run) and sequence numbers (a run each).
                let pos = match rng.u8(0..10) {
                    0 => Pos::S(format!("{}", 100_000_000_000_000_000_000u128 + u128::from(n)).into()),
                    1 => {
                        n += 7;
                        Pos::N(n)
                    }
                    _ => Pos::N(n),
                };
                n += 1;
                positions.push(pos.clone());
                assert_eq!(t.arrive(pos), positions.len() as u64 - 1);
            }
            let mut order: Vec<u64> = (0..positions.len() as u64).collect();
            rng.shuffle(&mut order);
            let mut accounted = vec![false; positions.len()];
            for o in order {
                t.done(o);
                accounted[o as usize] = true;
                let leading = accounted.iter().take_while(|a| **a).count();
                assert_eq!(t.checkpoint, leading.checked_sub(1).map(|i| positions[i].clone()));
                assert_eq!(t.in_flight(), positions.len() - leading);
            }
        }
    }

    #[test]
    fn covered_ranges_skip_replays_until_the_checkpoint_passes_them() {
        let mut saved = Saved::default();
        let c = |p: &str, f: u64, l: u64| Covered {
            partition: p.into(),
            shard: "s".into(),
            first: f.to_string(),
            last: l.to_string(),
        };
        saved.covered = vec![c("a", 3, 9), c("b", 2, 4)];
        assert!(saved.covers("a", "s", &Pos::N(5)));
        assert!(!saved.covers("b", "s", &Pos::N(5)));
        assert!(!saved.covers("a", "t", &Pos::N(5)));
        let mut t = Track::new("s", None);
        for n in 1..=4 {
            let o = t.arrive(Pos::N(n));
            t.done(o);
        }
        saved.advance(&[t]);
        assert_eq!(saved.covered, vec![c("a", 3, 9)]);
        assert!(saved.before_checkpoint("s", &Pos::N(4)) && !saved.before_checkpoint("s", &Pos::N(5)));
        assert_eq!(file_id(&[c("a", 1, 2), c("b", 1, 2)], None), file_id(&[c("b", 1, 2), c("a", 1, 2)], None));
        assert_ne!(file_id(&[c("a", 1, 2)], None), file_id(&[c("a", 1, 3)], None));
        assert_ne!(file_id(&[c("a", 1, 2)], Some("r1")), file_id(&[c("a", 1, 2)], Some("r2")), "runs apart");

        // A batch handed over again from the shard's start never moves the checkpoint back.
        let mut replay = Track::new("s", None);
        for n in 1..=2 {
            let o = replay.arrive(Pos::N(n));
            replay.done(o);
        }
        saved.advance(&[replay]);
        assert!(saved.before_checkpoint("s", &Pos::N(4)), "the checkpoint went back");
    }

    proptest::proptest! {
        /// Runs of records (a block's, or a single record with a sequence number) noted at
        /// once leave a track as noting each record does, and so do its checkpoints after.
        #[test]
        fn a_run_noted_at_once_is_every_record_noted_one_by_one(
            runs in proptest::collection::vec((0u64..3, 0u64..200, proptest::bool::ANY), 1..20),
            done in proptest::collection::vec(0u64..2000, 0..60),
        ) {
            let (mut whole, mut each) = (Track::new("s", None), Track::new("s", None));
            let mut n = 1;
            for (gap, len, sequence) in runs {
                // A gap: positions that skip (a record dropped before the track heard of it).
                n += gap;
                let pos = if sequence { Pos::S(format!("{n}").into()) } else { Pos::N(n) };
                let len = if sequence { 1 } else { len };
                whole.arrive_run(pos.clone(), len);
                for i in 0..len {
                    each.arrive(if sequence { pos.clone() } else { Pos::N(n + i) });
                }
                n += len;
            }
            proptest::prop_assert_eq!(format!("{whole:?}"), format!("{each:?}"));
            for ordinal in done {
                whole.done(ordinal);
                each.done(ordinal);
            }
            proptest::prop_assert_eq!(format!("{whole:?}"), format!("{each:?}"));
        }
    }
}
