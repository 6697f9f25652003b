//! The record-source conformance suite: every [`RecordSource`] runs these cases unchanged,
//! each checking a clause of the trait's contract on records the test put in a new place
//! (files, a stream, a queue) through its [`Feeder`].
//!
//! Cases use real time with generous deadlines, so they also run against remote sources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};

use super::{Delivery, RecordSource, Resume};
use crate::stream::state::{Pos, SavedShard};

/// Opens a source over what a [`Feeder`] put; called again for every run of a case.
pub type Opener = Box<dyn Fn() -> Arc<dyn RecordSource> + Send + Sync>;

/// How a test puts records where the source under test reads them.
#[async_trait]
pub trait Feeder: Send + Sync {
    /// Put `records` (JSON objects without line breaks) in a new, empty place that a source
    /// reads (files, a stream, a queue), spread over its shards as the place likes, and
    /// return a way to open a source over them.
    async fn feed(&self, records: Vec<String>) -> Opener;
}

/// How long a case waits for the records it expects.
const WITHIN: Duration = Duration::from_secs(90);
/// How long a source may take to stop once its channel is closed.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// How long a case reads on, once it has what it expects, for what should not come.
const LINGER: Duration = Duration::from_millis(1500);

/// Run every case, each with `n` records (at least 4) in a place of its own.
pub async fn run_all(feeder: &dyn Feeder, n: usize) {
    assert!(n >= 4, "the cases need a few records");
    delivers_every_record_with_rising_positions_and_the_end_last(feeder, n).await;
    stops_when_its_channel_is_closed(feeder, n).await;
    acknowledges_only_what_it_is_told_to(feeder, n).await;
    resumes_after_its_checkpoints(feeder, n).await;
}

/// `n` distinct records, of different lengths, tagged with the case's name.
pub fn records(case: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"case\":\"{case}\",\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97))).collect()
}

/// A record as a case sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its shard.
    pub shard: String,
    /// Its position: as delivered, or its number in its shard's blocks.
    pub pos: Pos,
    /// Its data.
    pub data: String,
    /// What acknowledges it.
    pub ack: Option<String>,
}

/// What a run of a source delivered, in order.
#[derive(Debug, Default)]
pub struct Reading {
    /// Records, in the order delivered.
    pub records: Vec<Seen>,
    /// Shards whose end was delivered, each with how many records had come before it.
    pub ends: Vec<(String, usize)>,
    /// Per shard, the number of its next block record and the line its next block starts on.
    blocks: HashMap<String, (u64, Option<u64>)>,
}

impl Reading {
    fn take(&mut self, d: Delivery) {
        match d {
            Delivery::Records { shard, records } => self.records.extend(records.into_iter().map(|r| Seen {
                shard: shard.clone(),
                pos: r.pos,
                data: String::from_utf8_lossy(&r.data).into_owned(),
                ack: r.ack,
            })),
            Delivery::Block(b) => {
                let (next, line) = self.blocks.entry(b.shard.clone()).or_insert((1, None));
                if let Some(line) = line {
                    assert_eq!(b.first_line, *line, "{}: a block must start where the one before ended", b.shard);
                }
                *line = Some(b.first_line + memchr::memchr_iter(b'\n', &b.data).count() as u64);
                if b.skipped.is_some() {
                    *next += 1;
                    *line = None;
                }
                for data in b.data.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                    let pos = Pos::N(*next);
                    *next += 1;
                    let data = String::from_utf8_lossy(data).into_owned();
                    self.records.push(Seen { shard: b.shard.clone(), pos, data, ack: None });
                }
            }
            Delivery::End { shard } => self.ends.push((shard, self.records.len())),
        }
    }

    /// The data delivered, each once.
    pub fn data(&self) -> BTreeSet<String> {
        self.records.iter().map(|r| r.data.clone()).collect()
    }

    fn has_all<'a>(&self, want: impl IntoIterator<Item = &'a String>) -> bool {
        let got = self.data();
        want.into_iter().all(|w| got.contains(w))
    }

    /// Each shard's records in the order delivered.
    pub fn by_shard(&self) -> BTreeMap<String, Vec<&Seen>> {
        let mut out: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
        for r in &self.records {
            out.entry(r.shard.clone()).or_default().push(r);
        }
        out
    }

    /// Positions rise within each shard, and a shard's end comes once, after all its records.
    fn assert_ordered(&self) {
        for (shard, seen) in self.by_shard() {
            for w in seen.windows(2) {
                assert!(w[0].pos < w[1].pos, "{shard}: position {} came after {}", w[1].pos, w[0].pos);
            }
        }
        let mut ended = BTreeSet::new();
        for (shard, before) in &self.ends {
            assert!(ended.insert(shard.clone()), "{shard}: its end came twice");
            let after = self.records[*before..].iter().find(|r| &r.shard == shard);
            assert!(after.is_none(), "{shard}: a record came after its end: {after:?}");
        }
    }
}

/// Run `source` from `resume` until `enough` holds (then on for `linger`, for anything that
/// should not come) or the source ends; then close the channel: the source must stop, `Ok`.
pub async fn read(
    source: Arc<dyn RecordSource>,
    resume: Resume,
    linger: Duration,
    enough: impl Fn(&Reading) -> bool,
) -> Reading {
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(async move { source.run(&resume, tx).await });
    let mut reading = Reading::default();
    let deadline = Instant::now() + WITHIN;
    loop {
        let until = match enough(&reading) {
            true if linger.is_zero() => break,
            true => deadline.min(Instant::now() + linger),
            false => deadline,
        };
        match timeout_at(until, rx.recv()).await {
            Ok(Some(d)) => reading.take(d),
            Ok(None) | Err(_) => break,
        }
    }
    drop(rx);
    let stopped = timeout(STOP_WITHIN, task).await;
    let result =
        stopped.unwrap_or_else(|_| panic!("the source did not stop within {STOP_WITHIN:?} of its channel closing"));
    result.expect("the source's task panicked").expect("the source failed");
    reading
}

/// Every record comes; a shard's positions rise; its end comes last. A resumable source
/// delivers each record once.
pub async fn delivers_every_record_with_rising_positions_and_the_end_last(feeder: &dyn Feeder, n: usize) {
    let put = records("every", n);
    let open = feeder.feed(put.clone()).await;
    let source = open();
    let got = read(source.clone(), Resume::new(), LINGER, |r| r.has_all(&put)).await;
    assert!(got.has_all(&put), "{} of {n} records delivered", got.data().len());
    assert_eq!(got.data(), put.iter().cloned().collect(), "records that were not put");
    got.assert_ordered();
    if source.resumable() {
        assert_eq!(got.records.len(), n, "a record delivered twice in one run");
    }
}

/// With its channel closed after the first delivery, the source stops, without an error.
pub async fn stops_when_its_channel_is_closed(feeder: &dyn Feeder, n: usize) {
    let open = feeder.feed(records("stop", n)).await;
    let got = read(open(), Resume::new(), Duration::ZERO, |r| !r.records.is_empty()).await;
    assert!(!got.records.is_empty(), "nothing was delivered");
}

/// A record acknowledged (after its run stopped, as a stream's writer may do) does not come
/// again; every other one does, so the source acknowledged nothing on its own.
pub async fn acknowledges_only_what_it_is_told_to(feeder: &dyn Feeder, n: usize) {
    let put = records("ack", n);
    let open = feeder.feed(put.clone()).await;
    let first = open();
    let got = read(first.clone(), Resume::new(), Duration::ZERO, |r| r.has_all(&put)).await;
    let told: BTreeSet<&String> = put[..n / 2].iter().collect();
    let acks: Vec<String> =
        got.records.iter().filter(|r| told.contains(&r.data)).filter_map(|r| r.ack.clone()).collect();
    first.ack(&acks).await.expect("acknowledging delivered records");
    let acked: BTreeSet<String> = got
        .records
        .iter()
        .filter(|r| r.ack.as_ref().is_some_and(|a| acks.contains(a)))
        .map(|r| r.data.clone())
        .collect();
    let left: Vec<String> = put.iter().filter(|p| !acked.contains(*p)).cloned().collect();

    let again = read(open(), Resume::new(), LINGER, |r| r.has_all(&left)).await;
    assert!(again.has_all(&left), "{} of {} records not acknowledged came again", again.data().len(), left.len());
    let back: Vec<_> = again.data().intersection(&acked).take(3).cloned().collect();
    assert!(back.is_empty(), "acknowledged records came again: {back:?}");
}

/// A resumable source restarted from checkpoints delivers every record after them, each at
/// the position it had before, and may leave out a shard marked ended.
pub async fn resumes_after_its_checkpoints(feeder: &dyn Feeder, n: usize) {
    let put = records("resume", n);
    let open = feeder.feed(put.clone()).await;
    let source = open();
    if !source.resumable() {
        return;
    }
    let first = read(source, Resume::new(), LINGER, |r| r.has_all(&put)).await;
    let at: HashMap<&str, (&str, &Pos)> =
        first.records.iter().map(|r| (r.data.as_str(), (r.shard.as_str(), &r.pos))).collect();
    let shards = first.by_shard();
    let mut resume = Resume::new();
    let mut want = Vec::new();
    let last_shard = shards.keys().last().cloned();
    for (shard, seen) in &shards {
        let ended = shards.len() > 1 && Some(shard) == last_shard.as_ref();
        let cut = if ended { seen.len() - 1 } else { seen.len() / 2 };
        let checkpoint = Some(seen[cut].pos.to_string());
        resume.insert(shard.clone(), SavedShard { checkpoint, ended });
        want.extend(seen[cut + 1..].iter().map(|r| r.data.clone()));
    }
    let again = read(open(), resume, LINGER, |r| r.has_all(&want)).await;
    assert!(again.has_all(&want), "{} records after the checkpoints, not all came again", want.len());
    again.assert_ordered();
    for r in &again.records {
        assert_eq!(
            at.get(r.data.as_str()),
            Some(&(r.shard.as_str(), &r.pos)),
            "{}: a record must keep its shard and position from run to run",
            r.data
        );
    }
}

#[cfg(test)]
mod tests {
    //! The suite fails sources that break the contract.

    use std::sync::Mutex;

    use super::*;
    use crate::error::Result;
    use crate::stream::source::SourceRecord;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// Positions fall.
        Reversed,
        /// The end before the last record.
        EarlyEnd,
        /// Messages deleted as they are delivered.
        AcksItself,
        /// A restart skips the first record after a checkpoint.
        SkipsOnResume,
    }

    /// A queue-like place: records by id, until acknowledged.
    #[derive(Debug)]
    struct Listed {
        place: Arc<Mutex<Vec<(u64, String)>>>,
        fault: Fault,
    }

    #[async_trait]
    impl RecordSource for Listed {
        async fn run(&self, resume: &Resume, tx: mpsc::Sender<Delivery>) -> Result<()> {
            let mut records: Vec<(u64, String)> = self.place.lock().unwrap().clone();
            if self.fault == Fault::AcksItself {
                self.place.lock().unwrap().clear();
            }
            if self.fault == Fault::Reversed {
                records.reverse();
            }
            let after = resume.get("s").and_then(|s| s.checkpoint.as_deref()).map(Pos::parse);
            let mut skip = self.fault == Fault::SkipsOnResume && after.is_some();
            for (i, (id, data)) in records.into_iter().enumerate() {
                if after.as_ref().is_some_and(|a| Pos::N(id) <= *a) || std::mem::take(&mut skip) {
                    continue;
                }
                if self.fault == Fault::EarlyEnd && i == 1 {
                    let _ = tx.send(Delivery::End { shard: "s".into() }).await;
                }
                let record = SourceRecord {
                    pos: Pos::N(id),
                    arrival_ms: 0,
                    data: data.into(),
                    ack: Some(id.to_string()),
                    id: None,
                };
                if tx.send(Delivery::Records { shard: "s".into(), records: vec![record] }).await.is_err() {
                    return Ok(());
                }
            }
            let _ = tx.send(Delivery::End { shard: "s".into() }).await;
            Ok(())
        }

        fn resumable(&self) -> bool {
            true
        }

        async fn ack(&self, acks: &[String]) -> Result<()> {
            self.place.lock().unwrap().retain(|(id, _)| !acks.contains(&id.to_string()));
            Ok(())
        }
    }

    struct Feed(Fault);

    #[async_trait]
    impl Feeder for Feed {
        async fn feed(&self, records: Vec<String>) -> Opener {
            let place = Arc::new(Mutex::new((1..).zip(records).collect()));
            let fault = self.0;
            Box::new(move || Arc::new(Listed { place: place.clone(), fault }) as Arc<dyn RecordSource>)
        }
    }

    #[tokio::test]
    async fn a_source_that_keeps_the_contract_passes() {
        run_all(&Feed(Fault::None), 20).await;
    }

    #[tokio::test]
    #[should_panic(expected = "came after")]
    async fn falling_positions_fail() {
        run_all(&Feed(Fault::Reversed), 20).await;
    }

    #[tokio::test]
    #[should_panic(expected = "a record came after its end")]
    async fn an_end_before_the_last_record_fails() {
        run_all(&Feed(Fault::EarlyEnd), 20).await;
    }

    #[tokio::test]
    #[should_panic(expected = "not acknowledged came again")]
    async fn a_source_that_acknowledges_on_its_own_fails() {
        acknowledges_only_what_it_is_told_to(&Feed(Fault::AcksItself), 20).await;
    }

    #[tokio::test]
    #[should_panic(expected = "not all came again")]
    async fn a_restart_that_loses_a_record_after_the_checkpoint_fails() {
        resumes_after_its_checkpoints(&Feed(Fault::SkipsOnResume), 20).await;
    }
}
