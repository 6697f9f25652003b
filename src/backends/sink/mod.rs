//! The sink seam: where kept records go, in batches, as idempotent upserts (`Sink`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backends::cloud::Cloud;
use crate::error::Result;
use crate::model::config::ColumnType;
use crate::model::record::Record;
pub use crate::model::record::SinkItem;
pub use figures::SinkFigures;
pub use target::{SinkSpec, SinkTarget, DEFAULT_IN_FLIGHT_ORDERED, DEFAULT_IN_FLIGHT_UNORDERED, MAX_IN_FLIGHT};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod figures;
pub mod memory;
pub mod pace;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod publish;
pub mod sqlite;
pub mod stage;
pub mod target;

pub use memory::MemorySink;
pub use sqlite::SqliteSink;

/// What a job's sink table holds: its name and, when the record shape is known, its fields
/// with their declared types.
#[derive(Debug, Clone)]
pub struct SinkShape {
    /// Table name.
    pub table: String,
    /// Fields and their types, when the record shape is known.
    pub fields: Option<Vec<(String, Option<ColumnType>)>>,
    /// The exact decimal fields among them: name, precision, scale (see
    /// [`crate::model::config::ColumnConfig::precision`]).
    pub exact: Vec<(String, u32, u32)>,
}

impl SinkShape {
    /// The scale of exact decimal field `name`.
    pub fn scale_of(&self, name: &str) -> Option<u32> {
        self.exact.iter().find(|(n, ..)| n == name).map(|(_, _, s)| *s)
    }
}

/// Every kind of sink, one line each.
pub static KINDS: &[&dyn target::SinkKind] = &[
    &sqlite::KIND,
    #[cfg(feature = "aws")]
    &dynamodb::KIND,
    #[cfg(not(feature = "aws"))]
    &Missing { name: "dynamodb", feature: "aws" },
    #[cfg(feature = "postgres")]
    &postgres::KIND,
    #[cfg(not(feature = "postgres"))]
    &Missing { name: "postgres", feature: "postgres" },
];

/// The kind named `name`.
fn kind(name: &str) -> Option<&'static dyn target::SinkKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// The names a sink may have, for errors: the kinds' and `none`.
fn kind_names() -> String {
    let kinds: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
    format!("{} or none", kinds.join(", "))
}

/// A kind this build leaves out, named so that a job that asks for it says which feature it
/// needs.
#[cfg(not(all(feature = "aws", feature = "postgres")))]
struct Missing {
    name: &'static str,
    feature: &'static str,
}

#[cfg(not(all(feature = "aws", feature = "postgres")))]
#[async_trait]
impl target::SinkKind for Missing {
    fn name(&self) -> &'static str {
        self.name
    }

    fn refuse_table(&self, _: Option<&str>) -> Option<String> {
        None
    }

    fn shared(&self) -> bool {
        true
    }

    fn open(&self, _: &SinkSpec, _: &SinkShape, _: &Path, _: &Cloud) -> Result<Arc<dyn Sink>> {
        Err(crate::error::Error::config(
            "sink.type",
            format!("{} needs the `{}` feature, which this build lacks", self.name, self.feature),
        ))
    }

    async fn reach(&self, table: Option<&str>, _: &Path, _: &Cloud) -> Result<String> {
        let what = format!("{}://{} needs a build with the `{}` feature", self.name, table.unwrap_or(""), self.feature);
        Err(crate::error::Error::config("sink.table", what))
    }
}

/// Open the sink `spec` names for a table of `shape`: `None` for no sink, a table in the
/// SQLite database at `database`, or a DynamoDB table (feature `aws`, with the AWS
/// configuration in `cloud`; unordered when `spec.ordered` is false); with `spec.publish`,
/// wrapped to publish what it writes (or only publishing, without a table). The one place a
/// sink is chosen.
pub fn open(spec: &SinkSpec, shape: &SinkShape, database: &Path, cloud: &Cloud) -> Result<Option<Arc<dyn Sink>>> {
    let table = open_table(spec, shape, database, cloud)?;
    match &spec.publish {
        None => Ok(table),
        Some(target) => Ok(Some(Arc::new(publish::PublishSink::new(table, target.clone(), cloud)?))),
    }
}

fn open_table(spec: &SinkSpec, shape: &SinkShape, database: &Path, cloud: &Cloud) -> Result<Option<Arc<dyn Sink>>> {
    match &spec.target {
        SinkTarget::None => Ok(None),
        SinkTarget::Table { kind, .. } => kind.open(spec, shape, database, cloud).map(Some),
    }
}

/// Whether a sink can be written, in a line for `sluicebox check`: a DynamoDB table exists
/// (with its status); a SQLite database's directory exists or can be made.
pub async fn reach(target: &SinkTarget, database: &Path, cloud: &Cloud) -> Result<String> {
    match target {
        SinkTarget::None => Ok("sink: none (outputs only)".into()),
        SinkTarget::Table { kind, table } => kind.reach(table.as_deref(), database, cloud).await,
    }
}

/// What one item may be in a sink. An item over a limit is a reject of its record (rule
/// `sink`, or `key` for its key), not a failed write that would fail the whole chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkLimits {
    /// The longest key, in bytes.
    pub max_key_bytes: Option<usize>,
    /// The largest item, in bytes as the sink counts them (see [`Sink::item_size`]).
    pub max_item_bytes: Option<usize>,
    /// Whether an empty key is refused.
    pub no_empty_key: bool,
}

/// A destination for records.
///
/// # Contract
///
/// - `write` is an upsert keyed by the item key: re-running a chunk never duplicates. Of two
///   items with one key in one `write`, the one with the higher [`SinkItem::version`]
///   (`(job, seq)`) is stored.
/// - If [`Sink::orders_by_seq`] is true (the default), writing an item whose key exists
///   replaces it only if the new item's version is not lower than the stored one's, so the
///   stored item for a key is the one of the latest job, and within it the latest in its
///   inputs, whatever order jobs, chunks (or their redeliveries) are written in. A sink that
///   cannot write conditionally says `false`, and the item written last stays.
/// - On `Ok`, every item of the batch is durably written; on `Err`, any subset may be, and
///   the caller retries the whole batch (which is safe by the first rule).
/// - A sink may stage what `write` is given: a job's items are then stored (by the rules
///   above) when `publish` is called with its job, once, after its last write. `publish` of a
///   job with nothing staged, or published already, does nothing; a `publish` that fails
///   stores nothing and may be called again. A sink that writes in place publishes nothing.
/// - `discard` drops what was staged for a job that will never be published (a run of a job
///   made anew with `--force`); it does nothing to stored items, nor for a job with nothing
///   staged.
/// - `upsert` stores a batch at once, by the rules above, staged or not: on `Ok` its items
///   are stored (a stream's records, which no gather publishes).
/// - `read_all` returns every stored item by key (for verification and tests; a scan).
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Upsert a batch (or stage it, until `publish`).
    async fn write(&self, items: Vec<SinkItem>) -> Result<()>;
    /// Upsert a batch and store it now: [`Sink::write`], then [`Sink::publish`] of each of its
    /// jobs. A staging sink may store it more directly.
    async fn upsert(&self, items: Vec<SinkItem>) -> Result<()> {
        let mut jobs: Vec<u64> = items.iter().map(|i| i.job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        self.write(items).await?;
        for job in jobs {
            self.publish(job).await?;
        }
        Ok(())
    }
    /// Store what was staged for `job` (the items' [`SinkItem::job`]). Required, so that a
    /// wrapper cannot forget to pass it on.
    async fn publish(&self, job: u64) -> Result<()>;
    /// Drop what was staged for `job` without storing it. Required, like `publish`.
    async fn discard(&self, job: u64) -> Result<()>;
    /// Every stored item, by key.
    async fn read_all(&self) -> Result<BTreeMap<String, Record>>;
    /// Whether `write` stages what it is given until `publish` (so that a job that fails
    /// leaves the table unchanged), rather than writing in place.
    fn stages(&self) -> bool {
        false
    }
    /// Whether a stored item is replaced only by one with a version at least as high.
    fn orders_by_seq(&self) -> bool {
        true
    }
    /// What one item may be (none: any).
    fn limits(&self) -> SinkLimits {
        SinkLimits::default()
    }
    /// An item's size as the sink counts it against [`SinkLimits::max_item_bytes`].
    fn item_size(&self, item: &SinkItem) -> usize {
        serde_json::to_vec(&item.record).map_or(0, |v| v.len())
    }
    /// What its writes have cost so far, for a sink that counts them. A sink that counts also
    /// gives each write's figures to the task that made it ([`figures::record`]).
    fn figures(&self) -> Option<SinkFigures> {
        None
    }
}
