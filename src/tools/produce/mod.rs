//! `sluicebox produce` (feature `aws`): every record of a file put on a Kinesis data stream as
//! one JSON object, with `PutRecords` requests as full as Kinesis allows.
//!
//! The file is read three times, each time as a stream (memory holds a chunk and two requests,
//! never the file): the plan's scan finds where its records begin and end; a check decodes
//! every record and builds its Kinesis entry, so that a record Kinesis would refuse (over
//! 1 MiB, or lacking its partition key) stops the command *before anything is sent*, with its
//! line; then the same entries are built again and put, request by request. A file is either
//! put whole or (input errors) not at all; only a failure of Kinesis itself can stop it half
//! way, and then the error says how many records were put.
//!
//! Records are decoded as a job reads them (`[input]` of a job file: format, dialect,
//! compression) but not typed or checked: a CSV row becomes an object of header → text, and
//! the consumer's pipeline types it. Entries Kinesis refuses in a request (throttling) are sent
//! again, in their order, after a jittered exponential backoff, before any later request (so
//! records of one partition key keep their input order, unless one is refused while a later
//! one of its request is taken); a request that fails as a whole is retried by the SDK's
//! retry configuration.
//!
//! Putting is at least once: a run stopped half way and run again puts its first records
//! again. Consumers that must not see a record twice key it (a job's `[key]`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use crate::error::{Error, Result};

mod kinesis;
mod queue;
mod source;

pub use kinesis::{stream_name, KinesisStream};
pub use queue::QueueTarget;
pub use source::Source;
use source::{blocking, scan};

/// The most entries in one `PutRecords` request.
pub const MAX_ENTRIES: usize = 500;
/// The most bytes (data and partition keys) in one `PutRecords` request.
pub const MAX_REQUEST_BYTES: usize = 5 << 20;
/// The most bytes of one record (its data and its partition key).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The longest partition key, in characters.
pub const MAX_KEY_CHARS: usize = 256;

/// One record as Kinesis takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Decides the shard: Kinesis hashes it (MD5) into the stream's key space.
    pub partition_key: String,
    /// The record as a JSON object, newline-terminated.
    pub data: Vec<u8>,
}

impl Entry {
    /// What the entry counts for against Kinesis's size limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why Kinesis did not take one entry of a request (`ErrorCode` and `ErrorMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `ProvisionedThroughputExceededException`, `InternalFailure`, `KMSThrottlingException`, …
    pub code: String,
    /// What Kinesis said.
    pub message: String,
}

/// Where entries are put: a Kinesis stream, or a layer over one in tests.
///
/// # Contract
///
/// `put` sends `entries` (at most [`MAX_ENTRIES`], at most [`MAX_REQUEST_BYTES`]) as one
/// request and returns one answer per entry, in the same order: `None` for an entry that is
/// now on the stream, `Some` for one that is not (it may be sent again). An `Err` is a request
/// that failed as a whole after the implementation's own retries: any of its entries may or
/// may not be on the stream.
#[async_trait]
pub trait PutRecords: Send + Sync {
    /// Put `entries` in one request.
    async fn put(&self, entries: &[Entry]) -> Result<Vec<Option<Refused>>>;
}

/// How entries that Kinesis refused are sent again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Sends of one entry, the first included, before the command fails.
    pub attempts: NonZeroU32,
    /// The longest wait before the first resend (the wait doubles each round, jittered).
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The wait before resend `round` (1 for the first): up to `first` × 2^(round-1), at
    /// most `max`, and at least half of that (jitter keeps producers from resending in step).
    pub fn backoff(&self, round: u32) -> Duration {
        let cap = self.first.saturating_mul(1 << round.saturating_sub(1).min(20)).min(self.max);
        cap.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// What to put, and how.
#[derive(Debug, Clone, Default)]
pub struct Produce {
    /// The field whose value is each record's partition key (default: a hash of the record's
    /// position, which spreads records evenly over the shards).
    pub partition_key: Option<String>,
    /// Resending refused entries.
    pub retry: Retry,
}

/// What a run of [`produce`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Produced {
    /// The stream (or queue), by name.
    pub stream: String,
    /// Where the records went: `kinesis://STREAM` or `sqs://QUEUE`.
    pub to: String,
    /// Records put.
    pub records: u64,
    /// Bytes of their data (the JSON objects, newlines included; partition keys not).
    pub bytes: u64,
    /// Seconds from the start (the scan and check included) to the last record put.
    pub seconds: f64,
    /// Records put per second.
    pub records_per_s: f64,
    /// `PutRecords` requests made (the SDK's own retries of a whole request not included).
    pub put_records_calls: u64,
    /// Entries Kinesis refused and that were sent again (once per resend).
    pub entries_retried: u64,
}

impl std::fmt::Display for Produced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "put {} records ({} bytes) on {} in {:.1} s: {:.0} records/s, {} requests, {} entries retried",
            self.records,
            self.bytes,
            self.to,
            self.seconds,
            self.records_per_s,
            self.put_records_calls,
            self.entries_retried
        )
    }
}

/// Put every record of `source` on `to` (`stream` is its URL, `kinesis://…` or `sqs://…`), as
/// [`Produce`] says; `progress` counts the records put. See the module's documentation for
/// what is checked before anything is sent.
pub async fn produce(
    source: &Source,
    to: &dyn PutRecords,
    stream: &str,
    how: &Produce,
    progress: &indicatif::ProgressBar,
) -> Result<Produced> {
    let started = Instant::now();
    let scan = Arc::new(scan(source).await?);
    // The check: every entry built, none kept.
    progress.set_message("checking");
    let (records, bytes) = blocking(source, &scan, how, |_| true).await?;
    progress.set_length(records);
    progress.set_message(format!("to {stream}"));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(2);
    let decoder = {
        let mut batch = Batch::default();
        blocking(source, &scan, how, move |entry| {
            let Some(entry) = entry else { return batch.is_empty() || tx.blocking_send(batch.take()).is_ok() };
            if !batch.fits(&entry) && tx.blocking_send(batch.take()).is_err() {
                return false;
            }
            batch.push(entry);
            true
        })
    };
    let sender = async {
        let mut sent = Sent { total: records, ..Sent::default() };
        while let Some(batch) = rx.recv().await {
            if let Err(e) = put_batch(to, stream, batch, &how.retry, &mut sent, progress).await {
                // Stop the decoder: it sees the channel closed at its next batch.
                rx.close();
                return Err(e);
            }
        }
        Ok(sent)
    };
    let (decoded, sent) = tokio::join!(decoder, sender);
    let sent = sent?;
    decoded?;
    if sent.put != records {
        let reason = format!("{} of {records} records were put: the input changed while it was read", sent.put);
        return Err(Error::input(&source.input.location, reason));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Produced {
        stream: stream.split_once("://").map_or(stream, |(_, name)| name).to_string(),
        to: stream.to_string(),
        records,
        bytes,
        seconds,
        records_per_s: records as f64 / seconds.max(1e-9),
        put_records_calls: sent.calls,
        entries_retried: sent.retried,
    })
}

/// Entries for one request.
#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    bytes: usize,
}

impl Batch {
    /// Whether `entry` can join this request.
    fn fits(&self, entry: &Entry) -> bool {
        self.entries.len() < MAX_ENTRIES && self.bytes + entry.size() <= MAX_REQUEST_BYTES
    }

    fn push(&mut self, entry: Entry) {
        self.bytes += entry.size();
        self.entries.push(entry);
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn take(&mut self) -> Vec<Entry> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// What the sender has done so far.
#[derive(Debug, Default)]
struct Sent {
    total: u64,
    put: u64,
    calls: u64,
    retried: u64,
}

/// Put one batch: its refused entries again, in their order, after a backoff, until all are
/// put or one was sent [`Retry::attempts`] times.
async fn put_batch(
    to: &dyn PutRecords,
    stream: &str,
    mut pending: Vec<Entry>,
    retry: &Retry,
    sent: &mut Sent,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    for attempt in 1.. {
        sent.calls += 1;
        let answers = to.put(&pending).await.map_err(|e| {
            let context = format!("{stream}: {}", not_put(sent, sent.total - sent.put));
            Error::backend(crate::error::Backend::Kinesis, context, e)
        })?;
        let before = pending.len();
        let mut last = None;
        let mut answers = answers.into_iter();
        pending.retain(|_| match answers.next().flatten() {
            Some(refused) => {
                last = Some(refused);
                true
            }
            None => false,
        });
        let put = (before - pending.len()) as u64;
        sent.put += put;
        progress.inc(put);
        let Some(last) = last else { return Ok(()) };
        if attempt >= retry.attempts.get() {
            let why = format!(
                "{} refused {attempt} times, the last time with {}: {}",
                pending.len(),
                last.code,
                last.message
            );
            let context = format!("{stream}: {}", not_put(sent, sent.total - sent.put));
            return Err(Error::backend(crate::error::Backend::Kinesis, context, why));
        }
        sent.retried += pending.len() as u64;
        tokio::time::sleep(retry.backoff(attempt)).await;
    }
    Ok(())
}

fn not_put(sent: &Sent, missing: u64) -> String {
    format!("{missing} of {} records were not put ({} were)", sent.total, sent.put)
}

/// Fault injection for tests: a layer that refuses entries as Kinesis does when a shard is
/// over its throughput.
#[cfg(any(test, feature = "testing"))]
pub mod faults {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::{Entry, PutRecords, Refused};
    use crate::error::Result;

    /// Refuses each entry with probability `share` on each of its first `times` sends (an
    /// entry is known by its data), passing the others on to the inner stream.
    pub struct Throttled<P> {
        inner: P,
        share: f64,
        times: u32,
        refused: Mutex<HashMap<Vec<u8>, u32>>,
    }

    impl<P: PutRecords> Throttled<P> {
        /// Wrap `inner`.
        pub fn new(inner: P, share: f64, times: u32) -> Self {
            Throttled { inner, share, times, refused: Mutex::default() }
        }

        /// The stream underneath.
        pub fn inner(&self) -> &P {
            &self.inner
        }

        /// Entries refused so far.
        pub fn refusals(&self) -> u64 {
            self.refused.lock().unwrap_or_else(|p| p.into_inner()).values().map(|&n| u64::from(n)).sum()
        }
    }

    #[async_trait]
    impl<P: PutRecords> PutRecords for Throttled<P> {
        async fn put(&self, entries: &[Entry]) -> Result<Vec<Option<Refused>>> {
            let refuse: Vec<bool> = {
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                entries
                    .iter()
                    .map(|e| {
                        let n = refused.entry(e.data.clone()).or_default();
                        let no = *n < self.times && fastrand::f64() < self.share;
                        *n += u32::from(no);
                        no
                    })
                    .collect()
            };
            let passed: Vec<Entry> =
                entries.iter().zip(&refuse).filter(|(_, r)| !**r).map(|(e, _)| e.clone()).collect();
            let mut answers = match passed.is_empty() {
                true => Vec::new(),
                false => self.inner.put(&passed).await?,
            }
            .into_iter();
            Ok(refuse
                .into_iter()
                .map(|r| match r {
                    true => Some(Refused {
                        code: "ProvisionedThroughputExceededException".into(),
                        message: "Rate exceeded for shard (injected)".into(),
                    }),
                    false => answers.next().flatten(),
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::source::position_key;
    use super::*;

    /// Keeps what it is given, in order.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Vec<Entry>>>);

    #[async_trait]
    impl PutRecords for Kept {
        async fn put(&self, entries: &[Entry]) -> Result<Vec<Option<Refused>>> {
            self.0.lock().unwrap().push(entries.to_vec());
            Ok(vec![None; entries.len()])
        }
    }

    /// Resends after a millisecond or two.
    fn quick(attempts: u32) -> Retry {
        Retry {
            attempts: NonZeroU32::new(attempts).unwrap(),
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    fn entry(n: usize, bytes: usize) -> Entry {
        Entry { partition_key: n.to_string(), data: vec![b'x'; bytes] }
    }

    #[test]
    fn a_batch_closes_at_500_entries_or_5_mib() {
        let mut b = Batch::default();
        for i in 0..MAX_ENTRIES {
            assert!(b.fits(&entry(i, 10)));
            b.push(entry(i, 10));
        }
        assert!(!b.fits(&entry(0, 10)));
        let mut b = Batch::default();
        for i in 0..5 {
            b.push(entry(i, MAX_RECORD_BYTES - 2));
        }
        assert!(!b.fits(&entry(0, 100)), "5 entries of 1 MiB leave no room for more");
        assert!(b.fits(&entry(0, 1)));
    }

    #[test]
    fn position_keys_differ_and_do_not_change() {
        let keys: std::collections::HashSet<String> = (1..=10_000).map(position_key).collect();
        assert_eq!(keys.len(), 10_000);
        assert_eq!(position_key(1), position_key(1));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let r = Retry::default();
        assert!(r.backoff(1) <= Duration::from_millis(100) && r.backoff(1) >= Duration::from_millis(50));
        assert!(r.backoff(3) <= Duration::from_millis(400) && r.backoff(3) >= Duration::from_millis(200));
        assert!(r.backoff(40) <= Duration::from_secs(5) && r.backoff(40) >= Duration::from_millis(2500));
    }

    #[test]
    fn stream_urls_name_a_stream() {
        assert_eq!(stream_name("kinesis://orders-1").unwrap(), "orders-1");
        assert!(stream_name("kinesis://").is_err());
        assert!(stream_name("sqs://orders").is_err());
        assert!(stream_name("kinesis://a/b").is_err());
    }

    #[tokio::test]
    async fn refused_entries_go_again_in_order_and_only_they() {
        let kept = Kept::default();
        let throttled = faults::Throttled::new(kept, 0.5, 2);
        let entries: Vec<Entry> =
            (0..300).map(|i| Entry { partition_key: "k".into(), data: i.to_string().into_bytes() }).collect();
        let mut sent = Sent { total: 300, ..Sent::default() };
        let bar = indicatif::ProgressBar::hidden();
        put_batch(&throttled, "s", entries, &quick(10), &mut sent, &bar).await.unwrap();
        assert_eq!(sent.put, 300);
        assert_eq!(sent.retried, throttled.refusals());
        assert!(sent.retried > 0 && sent.calls <= 3, "{sent:?}");
        let rounds = throttled.inner().0.lock().unwrap().clone();
        let all: Vec<&Entry> = rounds.iter().flatten().collect();
        assert_eq!(all.len(), 300, "every entry put exactly once");
        for round in &rounds {
            let numbers: Vec<u32> =
                round.iter().map(|e| std::str::from_utf8(&e.data).unwrap().parse().unwrap()).collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "each round keeps the input order");
        }
    }

    #[tokio::test]
    async fn entries_refused_too_often_fail_the_put_saying_how_many() {
        let throttled = faults::Throttled::new(Kept::default(), 1.0, u32::MAX);
        let retry = quick(3);
        let mut sent = Sent { total: 1000, put: 500, ..Sent::default() };
        let bar = indicatif::ProgressBar::hidden();
        let err =
            put_batch(&throttled, "s", vec![entry(1, 1), entry(2, 1)], &retry, &mut sent, &bar).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("500 of 1000 records were not put"), "{text}");
        assert!(
            text.contains("2 refused 3 times") && text.contains("ProvisionedThroughputExceededException"),
            "{text}"
        );
        assert_eq!(sent.calls, 3);
    }
}
