//! The sink seam: where kept records go, in batches, as idempotent upserts (`Sink`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::pipeline::Record;

pub mod conformance;
#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod memory;
pub mod sqlite;

pub use memory::MemorySink;
pub use sqlite::SqliteSink;

/// One record to write.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkItem {
    /// Identifies the item: writes with the same key are one item.
    pub key: String,
    /// The record's position in the job's inputs (input index, record number). Of two
    /// records with one key, the later in the input wins, whatever order they are written in.
    pub seq: u64,
    /// The record.
    pub record: Record,
}

impl SinkItem {
    /// The `seq` of record `number` of input `input`.
    pub fn seq_of(input: u32, number: u64) -> u64 {
        (u64::from(input) << 40) | (number & ((1 << 40) - 1))
    }
}

/// A destination for records.
///
/// # Contract
///
/// - `write` is an upsert keyed by the item key: re-running a chunk never duplicates. Of two
///   items with one key in one `write`, the one with the higher `seq` is stored.
/// - If [`Sink::orders_by_seq`] is true (the default), writing an item whose key exists
///   replaces it only if the new item's `seq` is not lower than the stored one's, so the
///   stored item for a key is the one with the highest `seq` whatever order chunks (or their
///   redeliveries) are written in. A sink that cannot write conditionally in batches says
///   `false`, and the item written last stays.
/// - On `Ok`, every item of the batch is durably written; on `Err`, any subset may be, and
///   the caller retries the whole batch (which is safe by the first rule).
/// - `read_all` returns every stored item by key (for verification and tests; a scan).
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Upsert a batch.
    async fn write(&self, items: Vec<SinkItem>) -> Result<()>;
    /// Every stored item, by key.
    async fn read_all(&self) -> Result<BTreeMap<String, Record>>;
    /// Whether a stored item is replaced only by one with a `seq` at least as high.
    fn orders_by_seq(&self) -> bool {
        true
    }
}
