//! DynamoDB sink (feature `aws`): items keyed by `_key`, versioned by `_job` and `_seq`.
//!
//! Two ways to write, one per [`Sink::orders_by_seq`] answer:
//!
//! - **Ordered** (the default): one conditional `PutItem` per item, which replaces a stored
//!   item only when the new one's version (`_job`, then `_seq`) is not lower, so a late or
//!   redelivered write of an older job or chunk never overwrites a newer item.
//!   DynamoDB bills writes per item either way (one write unit
//!   per KB, a refused condition included): the cost is one request per item instead of one per
//!   25, i.e. more HTTP round trips, not more write units. `[sink] in_flight` of them are in
//!   flight at once.
//! - **Unordered** (`[sink] ordered = false`): `BatchWriteItem`, 25 items per request, which
//!   cannot carry a condition: for a key written by two jobs or chunks, the item written last
//!   stays. Re-runs and redeliveries still overwrite the same items instead of duplicating them.
//!   `[sink] in_flight` requests are in flight at once.
//!
//! Either way:
//! - A request never names a key twice (a request the service rejects): of two items with one
//!   key in a write, the higher version is sent.
//! - Items throttled or returned unprocessed are sent again after a jittered exponential
//!   backoff until every item is written; they are never dropped. Throttling and 5xx answers
//!   are retried the same way. A write gives up (returns `Err`, so the task is retried later)
//!   only after [`MAX_STALLED_ROUNDS`](ddb::MAX_STALLED_ROUNDS) rounds in a row that wrote
//!   nothing.
//! - One [`Pace`] per sink paces all its writers, in write units (one per KB of an item): when
//!   the table throttles, the rate is lowered; every request that gets through raises it
//!   again, until the limit is lifted. One job fills the table's capacity without being
//!   throttled all the time.
//! - On a table with provisioned capacity, the pace starts at the table's write capacity
//!   (read once, with `DescribeTable`, before the first write), divided among `[sink] writers`
//!   processes, and never rises above that share: the capacity is not discovered by being
//!   throttled, so throttling retries stay few. An on-demand table is paced as above.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;

pub use super::pace::Pace;
use super::{Sink, SinkItem};
use crate::backends::aws::dynamodb as ddb;
use crate::error::{Error, Result};
use crate::model::record::Record;

/// `dynamodb://TABLE`: a DynamoDB table (feature `aws`), its name required.
pub static KIND: Kind = Kind;

/// The kind of [`KIND`].
pub struct Kind;

#[async_trait]
impl super::target::SinkKind for Kind {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    fn refuse_table(&self, table: Option<&str>) -> Option<String> {
        let Some(table) = table else { return Some("a dynamodb sink needs the name of its table".into()) };
        let fits =
            (3..=255).contains(&table.len()) && table.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        (!fits).then(|| format!("{table:?} is not a DynamoDB table name (3 to 255 of letters, digits, _ . -)"))
    }

    fn shared(&self) -> bool {
        true
    }

    fn remote_url(&self, table: &str) -> Option<String> {
        Some(format!("dynamodb://{table}"))
    }

    fn open(
        &self,
        spec: &super::SinkSpec,
        shape: &super::SinkShape,
        _: &std::path::Path,
        cloud: &crate::backends::cloud::Cloud,
    ) -> Result<Arc<dyn Sink>> {
        let client = crate::backends::aws::dynamodb(cloud.sdk("sink.type")?);
        let sink = DynamoSink::new(client, &shape.table)
            .with_capacity_pacing(CapacityPacing::Shared(spec.writers.get()))
            .with_in_flight(spec.in_flight());
        Ok(Arc::new(if spec.ordered { sink } else { sink.unordered() }))
    }

    async fn reach(
        &self,
        table: Option<&str>,
        _: &std::path::Path,
        cloud: &crate::backends::cloud::Cloud,
    ) -> Result<String> {
        describe(cloud, table.unwrap_or_default()).await
    }
}

/// The longest partition key DynamoDB takes, in bytes.
pub const MAX_KEY_BYTES: usize = 2048;
/// The largest item DynamoDB takes, in bytes (attribute names and values).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An attribute value's size as DynamoDB counts it (numbers at their longest, 21 bytes).
fn attr_size(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Number(_) => 21,
        Value::String(s) => s.len(),
        Value::Array(a) => 3 + a.iter().map(|v| 1 + attr_size(v)).sum::<usize>(),
        Value::Object(o) => 3 + o.iter().map(|(k, v)| 1 + k.len() + attr_size(v)).sum::<usize>(),
    }
}

/// Items per `BatchWriteItem` request (the service's limit), and items an ordered write sends
/// at once.
pub const BATCH_ITEMS: usize = 25;
type Item = HashMap<String, AttributeValue>;

/// A sink table in DynamoDB with the string hash key `_key`.
#[derive(Debug, Clone)]
pub struct DynamoSink {
    client: Client,
    table: String,
    ordered: bool,
    /// Requests kept in flight by each write (`None`: the mode's default).
    in_flight: Option<usize>,
    pace: Arc<Pace>,
    /// Whether the pace starts at a provisioned table's capacity, and how many processes
    /// share it.
    capacity: CapacityPacing,
    /// Set once the table's capacity was looked at.
    capacity_read: Arc<tokio::sync::OnceCell<Option<u64>>>,
    #[cfg(any(test, feature = "testing"))]
    faults: Option<Arc<ThrottleFaults>>,
    stats: Arc<SinkStats>,
}

/// Whether a sink's pace starts at its table's provisioned write capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityPacing {
    /// Start at the capacity divided among this many writing processes (`[sink] writers`).
    Shared(u32),
    /// Discover it by being throttled, as on an on-demand table (for comparison in tests).
    Off,
}

/// What a sink has done, for tests and reports.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Write requests sent (`BatchWriteItem`, or `PutItem` when ordered).
    pub requests: AtomicU64,
    /// Items the table accepted.
    pub items_written: AtomicU64,
    /// Items returned unprocessed (and sent again).
    pub unprocessed: AtomicU64,
    /// Requests refused whole by throttling or a server error (and sent again).
    pub throttled_requests: AtomicU64,
    /// The most items sent in one request.
    pub largest_request: AtomicU64,
    /// Ordered writes refused because the table held a newer version of the item.
    pub stale: AtomicU64,
    /// Write capacity units the table reported consuming, in thousandths.
    pub write_milli_units: AtomicU64,
    /// Items sent again after their request was refused whole.
    pub resent_items: AtomicU64,
}

impl SinkStats {
    /// Add what a response's `ConsumedCapacity` says.
    fn consumed<'a>(&self, capacity: impl IntoIterator<Item = &'a aws_sdk_dynamodb::types::ConsumedCapacity>) {
        let units: f64 = capacity.into_iter().filter_map(|c| c.capacity_units()).sum();
        self.write_milli_units.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// Add what `other` counted.
    fn absorb(&self, other: &SinkStats) {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        for (into, from) in [
            (&self.requests, &other.requests),
            (&self.items_written, &other.items_written),
            (&self.unprocessed, &other.unprocessed),
            (&self.throttled_requests, &other.throttled_requests),
            (&self.stale, &other.stale),
            (&self.write_milli_units, &other.write_milli_units),
            (&self.resent_items, &other.resent_items),
        ] {
            into.fetch_add(get(from), Ordering::Relaxed);
        }
        self.largest_request.fetch_max(get(&other.largest_request), Ordering::Relaxed);
    }

    /// The figures so far.
    pub fn figures(&self) -> super::SinkFigures {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        super::SinkFigures {
            requests: get(&self.requests),
            items_written: get(&self.items_written),
            write_units: Some(get(&self.write_milli_units) as f64 / 1000.0),
            throttled_requests: get(&self.throttled_requests),
            retried_items: get(&self.unprocessed) + get(&self.resent_items),
        }
    }
}

impl DynamoSink {
    /// Write to the existing table `table`, ordered (see the module's documentation).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoSink {
            client,
            table: table.into(),
            ordered: true,
            in_flight: None,
            pace: Arc::new(Pace::default()),
            capacity: CapacityPacing::Shared(1),
            capacity_read: Arc::default(),
            #[cfg(any(test, feature = "testing"))]
            faults: None,
            stats: Arc::default(),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Put a fault-injecting layer between this sink and the table (for tests): see
    /// [`ThrottleFaults`].
    pub fn with_faults(mut self, faults: Arc<ThrottleFaults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Write with `BatchWriteItem`, 25 items a request, the last write of a key staying.
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Keep `n` requests in flight (at least 1): ordered, `n` conditional `PutItem`s at once;
    /// unordered, `n` `BatchWriteItem`s (`[sink] in_flight`).
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(n.max(1));
        self
    }

    /// Requests kept in flight: as set, or the mode's default
    /// ([`super::DEFAULT_IN_FLIGHT_ORDERED`], [`super::DEFAULT_IN_FLIGHT_UNORDERED`]).
    pub fn in_flight(&self) -> usize {
        self.in_flight.unwrap_or(match self.ordered {
            true => super::DEFAULT_IN_FLIGHT_ORDERED,
            false => super::DEFAULT_IN_FLIGHT_UNORDERED,
        })
    }

    /// What this sink has done so far.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Pace this sink's writers with `pace` instead of the default.
    pub fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = Arc::new(pace);
        self
    }

    /// The pacing shared by this sink's writers.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// Whether (and among how many processes) the pace starts at a provisioned table's
    /// write capacity; the default is `Shared(1)`.
    pub fn with_capacity_pacing(mut self, capacity: CapacityPacing) -> Self {
        self.capacity = capacity;
        self
    }

    /// The table's provisioned write capacity, read once (`None`: on-demand, or unknown);
    /// the pace starts at this sink's share of it.
    pub async fn provisioned_capacity(&self) -> Option<u64> {
        let CapacityPacing::Shared(writers) = self.capacity else { return None };
        *self
            .capacity_read
            .get_or_init(|| async {
                let units = write_capacity(&self.client, &self.table).await;
                if let Some(units) = units {
                    let share = super::pace::share(units, writers);
                    tracing::debug!(table = %self.table, units, writers, share, "provisioned table: paced at its share");
                    self.pace.provisioned(share);
                }
                units
            })
            .await
    }

    /// Create a sink table (on-demand capacity, hash key `_key`) if it does not exist, and
    /// wait until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        Self::create_table_with(client, table, ddb::Capacity::OnDemand).await
    }

    /// [`DynamoSink::create_table`] billed as `capacity` says (on a provisioned table, the
    /// sink paces its writes at the write units).
    pub async fn create_table_with(client: &Client, table: &str, capacity: ddb::Capacity) -> Result<()> {
        ddb::create_table_with(client, table, &["_key"], capacity).await
    }

    /// Send a batch of at most [`BATCH_ITEMS`] items; returns the items to send again.
    async fn send(&self, items: Vec<SinkItem>, stats: &SinkStats) -> std::result::Result<Vec<SinkItem>, Attempt> {
        #[cfg(any(test, feature = "testing"))]
        let (items, mut held) = match &self.faults {
            Some(f) => f.split(items)?,
            None => (items, Vec::new()),
        };
        #[cfg(not(any(test, feature = "testing")))]
        let mut held = Vec::new();
        if items.is_empty() {
            return Ok(held);
        }
        let mut again = match self.ordered {
            true => self.put_each(items, stats).await?,
            false => self.batch_write(items, stats).await?,
        };
        again.append(&mut held);
        Ok(again)
    }

    /// One `BatchWriteItem`; returns the items it left unprocessed.
    async fn batch_write(
        &self,
        items: Vec<SinkItem>,
        stats: &SinkStats,
    ) -> std::result::Result<Vec<SinkItem>, Attempt> {
        let n = items.len() as u64;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.largest_request.fetch_max(n, Ordering::Relaxed);
        let mut by_key: HashMap<String, SinkItem> = HashMap::with_capacity(items.len());
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let put = PutRequest::builder()
                .set_item(Some(to_item(item.clone())))
                .build()
                .map_err(|e| Attempt::Fatal(ddb::error("building a PutRequest", e)))?;
            requests.push(WriteRequest::builder().put_request(put).build());
            by_key.insert(item.key.clone(), item);
        }
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
        match out {
            Ok(out) => {
                stats.consumed(out.consumed_capacity());
                let unprocessed = out.unprocessed_items.unwrap_or_default().remove(&self.table).unwrap_or_default();
                Ok(unprocessed
                    .into_iter()
                    .filter_map(|w| match w.put_request?.item.remove("_key") {
                        Some(AttributeValue::S(key)) => by_key.remove(&key),
                        _ => None,
                    })
                    .collect())
            }
            Err(e) => Err(attempt(&self.table, "BatchWriteItem", e)),
        }
    }

    /// One conditional `PutItem` per item, all at once; returns the items to send again.
    async fn put_each(&self, items: Vec<SinkItem>, stats: &SinkStats) -> std::result::Result<Vec<SinkItem>, Attempt> {
        stats.largest_request.fetch_max(1, Ordering::Relaxed);
        let sent = items.len();
        let puts = items.into_iter().map(|item| async move {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(item.clone())))
                // Replace only an item of an older version (one written before items had a
                // `_job` counts as the oldest).
                .condition_expression(
                    "attribute_not_exists(#k) OR attribute_not_exists(#j) OR #j < :j OR (#j = :j AND #s <= :s)",
                )
                .expression_attribute_names("#k", "_key")
                .expression_attribute_names("#j", "_job")
                .expression_attribute_names("#s", "_seq")
                .expression_attribute_values(":j", AttributeValue::N(item.job.to_string()))
                .expression_attribute_values(":s", AttributeValue::N(item.seq.to_string()))
                .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
                .send()
                .await;
            match sent {
                Ok(out) => {
                    stats.consumed(out.consumed_capacity());
                    Ok(None)
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                    // A newer version is stored: this write is done by not being made.
                    stats.stale.fetch_add(1, Ordering::Relaxed);
                    Ok(None)
                }
                Err(e) => match attempt(&self.table, "PutItem", e) {
                    Attempt::Retry(error) => Ok(Some((item, error))),
                    fatal => Err(fatal),
                },
            }
        });
        let mut again = Vec::new();
        let mut last = None;
        for result in futures::future::join_all(puts).await {
            if let Some((item, error)) = result? {
                again.push(item);
                last = Some(error);
            }
        }
        match last {
            // Every item was refused: as a request refused whole is.
            Some(error) if again.len() == sent => Err(Attempt::Retry(error)),
            _ => Ok(again),
        }
    }

    /// The write units `items` take (one per KB of each, as DynamoDB bills them).
    fn units(&self, items: &[SinkItem]) -> usize {
        items.iter().map(|i| super::pace::write_units(self.item_size(i))).sum()
    }

    /// [`Sink::write`], counting into `stats`.
    ///
    /// Rounds: each sends every pending item, [`DynamoSink::in_flight`] requests at a time (a
    /// new one as soon as one answers, so a round's time is its requests' latencies divided
    /// among the slots, not each wave's slowest); each request waits for the pace first. What
    /// comes back throttled or unprocessed is the next round's, sent at once if the round wrote
    /// something, else after a backoff.
    async fn write_counted(&self, items: Vec<SinkItem>, stats: &SinkStats) -> Result<()> {
        use futures::StreamExt;
        // One item per key, the highest seq: a request may not name a key twice.
        let mut by_key: HashMap<String, SinkItem> = HashMap::with_capacity(items.len());
        for item in items {
            match by_key.get(&item.key) {
                Some(have) if have.version() > item.version() => {}
                _ => {
                    by_key.insert(item.key.clone(), item);
                }
            }
        }
        let mut pending: Vec<SinkItem> = by_key.into_values().collect();
        // Ordered: a conditional PutItem per item; unordered: 25 to a BatchWriteItem.
        let per_request = if self.ordered { 1 } else { BATCH_ITEMS };
        let mut stalled = 0u32;
        let mut last_error = None;
        while !pending.is_empty() {
            let mut requests = Vec::with_capacity(pending.len().div_ceil(per_request));
            while !pending.is_empty() {
                let take = pending.len().min(per_request);
                requests.push(pending.drain(..take).collect::<Vec<_>>());
            }
            let mut answers = futures::stream::iter(requests)
                .map(|batch| async move {
                    let units = self.units(&batch);
                    self.pace.acquire(units).await;
                    let sent = self.send(batch.clone(), stats).await;
                    (batch, units, sent)
                })
                .buffer_unordered(self.in_flight());
            let mut wrote = false;
            while let Some((batch, units, sent)) = answers.next().await {
                let take = batch.len();
                match sent {
                    Ok(again) => {
                        let written = (take - again.len()) as u64;
                        stats.items_written.fetch_add(written, Ordering::Relaxed);
                        wrote |= written > 0;
                        if again.is_empty() {
                            self.pace.accepted(units);
                            continue;
                        }
                        stats.unprocessed.fetch_add(again.len() as u64, Ordering::Relaxed);
                        if again.len() * 2 > take {
                            self.pace.throttled();
                        } else {
                            self.pace.accepted(units.saturating_sub(self.units(&again)));
                        }
                        pending.extend(again);
                    }
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(Attempt::Retry(e)) => {
                        stats.throttled_requests.fetch_add(1, Ordering::Relaxed);
                        stats.resent_items.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.pace.throttled();
                        last_error = Some(e);
                        pending.extend(batch);
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            stalled = if wrote { 0 } else { stalled + 1 };
            if stalled >= ddb::MAX_STALLED_ROUNDS {
                let why =
                    last_error.map(|e| e.to_string()).unwrap_or_else(|| "every item came back unprocessed".into());
                return Err(Error::backend(
                    crate::error::Backend::Dynamodb,
                    format!(
                        "table {}: nothing written in {stalled} attempts in a row; {} items wait for the retry",
                        self.table,
                        pending.len()
                    ),
                    why,
                ));
            }
            if stalled > 0 {
                tokio::time::sleep(ddb::backoff(stalled)).await;
            }
        }
        Ok(())
    }
}

/// Whether a failed request is worth sending again: throttling, a server error, or no answer.
fn attempt<E>(table: &str, operation: &str, e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Attempt
where
    E: ProvideErrorMetadata
        + aws_smithy_runtime_api::client::result::CreateUnhandledError
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let retry = match &e {
        SdkError::ServiceError(s) => {
            matches!(
                s.err().code(),
                Some(
                    "ProvisionedThroughputExceededException"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                )
            ) || s.raw().status().is_server_error()
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    let error = ddb::error(format!("{operation} on table {table}"), e.into_service_error());
    if retry {
        Attempt::Retry(error)
    } else {
        Attempt::Fatal(error)
    }
}

/// How a request failed.
#[derive(Debug)]
enum Attempt {
    /// Throttled or a server-side failure: send again later.
    Retry(Error),
    /// The request is wrong (a missing table, an item over 400 KB): sending it again would
    /// fail the same way.
    Fatal(Error),
}

#[async_trait]
impl Sink for DynamoSink {
    fn figures(&self) -> Option<super::SinkFigures> {
        Some(self.stats.figures())
    }

    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        // Counted apart, then added to the sink's totals and to the writing task's figures.
        self.provisioned_capacity().await;
        let this_write = SinkStats::default();
        let written = self.write_counted(items, &this_write).await;
        self.stats.absorb(&this_write);
        super::figures::record(&this_write.figures());
        written
    }

    async fn publish(&self, _job: u64) -> Result<()> {
        // Written in place: nothing is staged.
        Ok(())
    }

    async fn discard(&self, _job: u64) -> Result<()> {
        // Written in place: nothing is staged.
        Ok(())
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        let mut all = BTreeMap::new();
        let mut pages = self.client.scan().table_name(&self.table).consistent_read(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ddb::error(format!("Scan on {}", self.table), e.into_service_error()))?;
            for mut item in page.items.unwrap_or_default() {
                let Some(AttributeValue::S(key)) = item.remove("_key") else { continue };
                item.remove("_seq");
                item.remove("_job");
                let record: Record = item.into_iter().map(|(k, v)| (k, ddb::from_attr(v))).collect();
                all.insert(key, record);
            }
        }
        Ok(all)
    }

    fn orders_by_seq(&self) -> bool {
        self.ordered
    }

    fn limits(&self) -> super::SinkLimits {
        super::SinkLimits {
            max_key_bytes: Some(MAX_KEY_BYTES),
            max_item_bytes: Some(MAX_ITEM_BYTES),
            no_empty_key: true,
        }
    }

    fn item_size(&self, item: &SinkItem) -> usize {
        // `_key`, `_job` and `_seq` with their values, then every attribute.
        let versions = "_job".len() + "_seq".len() + 2 * 21;
        "_key".len()
            + item.key.len()
            + versions
            + item.record.iter().map(|(k, v)| k.len() + attr_size(v)).sum::<usize>()
    }
}

fn to_item(item: SinkItem) -> Item {
    let mut out: Item = HashMap::with_capacity(item.record.len() + 2);
    for (k, v) in item.record.into_map() {
        out.insert(k, ddb::to_attr(v));
    }
    out.insert("_key".into(), AttributeValue::S(item.key));
    out.insert("_job".into(), AttributeValue::N(item.job.to_string()));
    out.insert("_seq".into(), AttributeValue::N(item.seq.to_string()));
    out
}

#[cfg(any(test, feature = "testing"))]
/// A fault-injecting layer for tests: it stands between the sink and the table and refuses
/// writes the way a throttled table does. Made with [`ThrottleFaults::new`], it refuses a
/// share of them at random: a whole request with probability `share`; otherwise each item is
/// held back (returned as unprocessed, never sent) with probability `share`. Made with
/// [`ThrottleFaults::capacity`], it is a table of that many write units per second (a token
/// bucket holding one second of them, an item one unit): a request above what is left is
/// refused whole.
#[derive(Debug)]
pub struct ThrottleFaults {
    share: f64,
    rng: Mutex<fastrand::Rng>,
    capacity: Option<Mutex<Bucket>>,
    /// Requests refused whole.
    pub refused_requests: AtomicU64,
    /// Items held back.
    pub held_items: AtomicU64,
}

#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
struct Bucket {
    per_s: f64,
    tokens: f64,
    at: std::time::Instant,
}

#[cfg(any(test, feature = "testing"))]
impl ThrottleFaults {
    /// Refuse `share` (0..1) of the writes, reproducibly from `seed`.
    pub fn new(share: f64, seed: u64) -> Self {
        ThrottleFaults {
            share,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            capacity: None,
            refused_requests: AtomicU64::new(0),
            held_items: AtomicU64::new(0),
        }
    }

    /// Refuse what goes over `units_per_s` write units a second, as a provisioned table does.
    pub fn capacity(units_per_s: f64) -> Self {
        let bucket = Bucket { per_s: units_per_s, tokens: units_per_s, at: std::time::Instant::now() };
        ThrottleFaults { capacity: Some(Mutex::new(bucket)), ..ThrottleFaults::new(0.0, 0) }
    }

    fn split<T>(&self, requests: Vec<T>) -> std::result::Result<(Vec<T>, Vec<T>), Attempt> {
        let refuse = || {
            self.refused_requests.fetch_add(1, Ordering::Relaxed);
            Err(Attempt::Retry(Error::Conflict(
                "ProvisionedThroughputExceededException (injected by ThrottleFaults)".into(),
            )))
        };
        if let Some(bucket) = &self.capacity {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.per_s).min(b.per_s);
            b.at = now;
            let units = requests.len() as f64;
            if b.tokens < units {
                return refuse();
            }
            b.tokens -= units;
            return Ok((requests, Vec::new()));
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.f64() < self.share {
            return refuse();
        }
        let (held, sent): (Vec<_>, Vec<_>) = requests.into_iter().partition(|_| rng.f64() < self.share);
        self.held_items.fetch_add(held.len() as u64, Ordering::Relaxed);
        Ok((sent, held))
    }
}

/// The provisioned write capacity of `table`, units/s; `None` for an on-demand table, or when
/// it cannot be read (the pace then learns it from throttling, as on an on-demand table).
pub async fn write_capacity(client: &Client, table: &str) -> Option<u64> {
    use aws_sdk_dynamodb::types::BillingMode;
    let described = match client.describe_table().table_name(table).send().await {
        Ok(d) => d.table?,
        Err(e) => {
            tracing::warn!(table, "cannot read the table's capacity (paced by throttling): {}", e.into_service_error());
            return None;
        }
    };
    let billing = described.billing_mode_summary().and_then(|b| b.billing_mode());
    if billing == Some(&BillingMode::PayPerRequest) {
        return None;
    }
    let units = described.provisioned_throughput()?.write_capacity_units()?;
    (units > 0).then_some(units as u64)
}

/// A line saying the table exists and its status, or an error naming `sink.table`.
pub async fn describe(cloud: &crate::backends::cloud::Cloud, table: &str) -> Result<String> {
    let conf = cloud.sdk("sink.table")?;
    let described =
        crate::backends::aws::dynamodb(conf).describe_table().table_name(table).send().await.map_err(|e| {
            Error::config(
                "sink.table",
                format!("the DynamoDB table {table:?} cannot be reached: {}", e.into_service_error()),
            )
        })?;
    let Some(t) = described.table else { return Ok(format!("sink: DynamoDB table {table}")) };
    let status = t.table_status().map(|s| s.as_str().to_lowercase()).unwrap_or_default();
    let units = t.provisioned_throughput().and_then(|p| p.write_capacity_units()).filter(|u| *u > 0);
    let on_demand = t.billing_mode_summary().and_then(|b| b.billing_mode())
        == Some(&aws_sdk_dynamodb::types::BillingMode::PayPerRequest);
    let capacity = match units {
        Some(u) if !on_demand => format!(", provisioned: {u} write units a second, the pace of its writers"),
        _ => ", on-demand".to_string(),
    };
    Ok(format!("sink: DynamoDB table {table} ({status}{capacity})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_sizes_count_names_and_values_as_dynamodb_does() {
        assert_eq!(attr_size(&serde_json::json!("héllo")), 6, "strings count their UTF-8 bytes");
        assert_eq!(attr_size(&serde_json::json!(12)), 21, "numbers count at their longest");
        assert_eq!(
            attr_size(&serde_json::json!({"a": "xy", "b": [1, null]})),
            3 + (1 + 1 + 2) + (1 + 1 + (3 + 22 + 2))
        );
    }
}
