//! The sink seam: where kept records go, in batches, as idempotent upserts (`Sink`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::pipeline::Record;

pub mod conformance;
pub mod memory;
pub mod sqlite;

pub use memory::MemorySink;
pub use sqlite::SqliteSink;

/// One record to write, with the key that identifies it.
pub type SinkItem = (String, Record);

/// A destination for records.
///
/// # Contract
///
/// - `write` is an upsert keyed by the item key: writing an item whose key exists replaces
///   it, so re-running a chunk never duplicates. Within one call, a later item with the
///   same key wins.
/// - On `Ok`, every item of the batch is durably written; on `Err`, any subset may be, and
///   the caller retries the whole batch (which is safe by the first rule).
/// - `read_all` returns every stored item by key (for verification and tests; a scan).
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Upsert a batch.
    async fn write(&self, items: Vec<SinkItem>) -> Result<()>;
    /// Every stored item, by key.
    async fn read_all(&self) -> Result<BTreeMap<String, Record>>;
}
