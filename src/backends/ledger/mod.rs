//! The ledger seam: job and chunk records, and stream consumers' checkpoints, with conditional
//! writes (`StateStore`).

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backends::cloud::Cloud;
use crate::error::Result;
use crate::model::record::Counts;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod memory;
pub mod sqlite;

pub use memory::MemoryLedger;
pub use sqlite::SqliteLedger;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Created; the plan is not stored yet.
    Planning,
    /// Planned; chunks are being worked.
    Running,
    /// Every chunk is committed; one party holds the gather (a lease taken by a conditional
    /// `Running → Gathering` write, so only one gather runs at a time).
    Gathering,
    /// Every chunk is committed and the gather finished.
    Complete,
    /// A chunk failed for good (its input changed or vanished); `jobs/<id>/failed.json` says
    /// why. Its task went to the dead-letter queue.
    Failed,
}

impl JobStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Planning => "planning",
            JobStatus::Running => "running",
            JobStatus::Gathering => "gathering",
            JobStatus::Complete => "complete",
            JobStatus::Failed => "failed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "planning" => JobStatus::Planning,
            "running" => JobStatus::Running,
            "gathering" => JobStatus::Gathering,
            "complete" => JobStatus::Complete,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

/// A job as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub job_id: String,
    /// Life-cycle state.
    pub status: JobStatus,
    /// Chunks in the plan, once planned.
    pub total_chunks: Option<u32>,
    /// Chunks committed (each counted once).
    pub done_chunks: u32,
    /// When the job was first created, ms since the Unix epoch.
    pub created_ms: i64,
    /// When the plan was stored, ms since the Unix epoch.
    pub planned_ms: Option<i64>,
    /// When the gather lease ends (its holder renews it while it gathers), ms since the Unix
    /// epoch; 0 when none was taken.
    #[serde(default)]
    pub lease_until_ms: i64,
    /// Records in the committed chunks, added by each chunk's first commit.
    #[serde(default)]
    pub records_done: u64,
    /// Of them rejected.
    #[serde(default)]
    pub rejected: u64,
}

impl JobRecord {
    /// A new job in [`JobStatus::Planning`].
    pub fn new(job_id: impl Into<String>, created_ms: i64) -> Self {
        JobRecord {
            job_id: job_id.into(),
            status: JobStatus::Planning,
            total_chunks: None,
            done_chunks: 0,
            created_ms,
            planned_ms: None,
            lease_until_ms: 0,
            records_done: 0,
            rejected: 0,
        }
    }
}

/// What a worker reports when it commits a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Chunk number in the plan.
    pub index: u32,
    /// Who did the work.
    pub worker: String,
    /// Record counts.
    pub counts: Counts,
    /// Output part bytes.
    pub output_bytes: u64,
    /// Rejects part bytes.
    #[serde(default)]
    pub rejects_bytes: u64,
    /// When work began, ms since the Unix epoch.
    pub started_ms: i64,
    /// When the commit was made, ms since the Unix epoch.
    pub finished_ms: i64,
    /// Cloud API requests made for this chunk (see [`crate::backends::calls`]), including its commit.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub api_calls: crate::backends::calls::ApiCalls,
    /// What the chunk's sink writes cost (requests, write units, throttling), for a sink that
    /// counts them; the gather sums them into the summary, as it does `api_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_figures: Option<crate::backends::sink::SinkFigures>,
    /// The run of the job this commit belongs to: the job's `created_ms` when the worker
    /// loaded its plan. A job made anew (`--force`) has another, and refuses the commit.
    #[serde(default)]
    pub generation: i64,
    /// The attempt that wrote the chunk's parts (their names carry it), so that a later
    /// attempt of a committed chunk never replaces what the gather reads. Empty: parts
    /// written before attempts were named.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attempt: String,
}

/// The result of [`StateStore::commit_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerCommit {
    /// This call committed the chunk. `finalize` is true for exactly one commit per job:
    /// the one that moved `done` to `total`.
    First {
        /// Chunks done after this commit.
        done: u32,
        /// Chunks in the plan.
        total: u32,
        /// Whether this committer must run the gather.
        finalize: bool,
        /// Records in the chunks committed, this one included (every first commit adds its
        /// chunk's).
        records: u64,
        /// Of them rejected.
        rejected: u64,
    },
    /// The chunk was already committed (a redelivered or repeated task); nothing changed.
    Duplicate,
}

/// A stream consumer's state (`sluicebox stream`): a JSON document and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bumped by one on every write; 1 for the first.
    pub version: u64,
    /// The document (JSON text, at most 256 KiB).
    pub state: String,
}

/// The largest [`Checkpoint::state`] a ledger stores, in bytes of UTF-8: small enough for one
/// DynamoDB item (400 KB) with room to spare.
pub const MAX_CHECKPOINT_BYTES: usize = 256 * 1024;

/// Refuse a checkpoint state over [`MAX_CHECKPOINT_BYTES`], before any backend sees it.
///
/// An [`Error::InvalidInput`](crate::error::Error::InvalidInput) naming the stream: the
/// document as given can never be stored, so trying again is pointless (an
/// `InvalidConfig` would count as retryable, and a backend error would blame the store).
pub(crate) fn check_checkpoint_size(name: &str, state: &str) -> Result<()> {
    if state.len() <= MAX_CHECKPOINT_BYTES {
        return Ok(());
    }
    Err(crate::error::Error::input(
        format!("stream {name:?} checkpoint"),
        format!(
            "its state is {} bytes, over the ledger's limit of {MAX_CHECKPOINT_BYTES} bytes (256 KiB)",
            state.len()
        ),
    ))
}

/// Job and chunk records, and stream checkpoints, with conditional writes.
///
/// # Contract
///
/// - `create_job` writes only if no job with that id exists (returns `false` otherwise), so
///   two planners racing on one upload make one job.
/// - `set_planned` moves a job from `Planning` to `Running` and stores its chunk total, once;
///   a second call (or a call in another state) returns `false` and changes nothing.
/// - `commit_chunk` is one atomic conditional write: the first commit of a chunk stores its
///   record, adds one to `done_chunks` and its counts to the job's `records_done` and
///   `rejected` (returned with the commit, this chunk's included); every later commit of the same chunk returns
///   [`LedgerCommit::Duplicate`] and changes nothing. Across any number of concurrent
///   committers, exactly one sees `finalize == true`. Committing to an unknown or
///   un-planned job, a chunk index outside the plan's count, or a `generation` other than
///   the job's `created_ms` is a [`crate::error::Error::Conflict`] (a fence against a worker
///   holding an earlier run of the job, made anew since) and changes nothing. The checks and
///   the write are one atomic step.
/// - `set_status(from, to)` changes the status only if it is `from`, and says whether it did.
/// - `take_gather_lease(now, until)` moves `Running → Gathering`, or takes over a
///   `Gathering` whose lease ended before `now` (its holder died), and sets the lease's end
///   to `until`; it says whether it did. Of concurrent callers at most one gets the lease.
/// - `renew_gather_lease(held, until)` moves the end of a lease from `held` to `until` only if
///   the job is `Gathering` and its lease still ends at `held` (its holder's own lease, not
///   one taken over since); it says whether it did.
/// - `delete_job` removes the job and its chunks; deleting an unknown job is not an error.
/// - `put_checkpoint(name, expected, state)` is one atomic conditional write: it stores
///   `state` as version `expected + 1` only if the stored version is `expected` (0: nothing is
///   stored under `name`), and otherwise returns `false` and changes nothing. Of any number of
///   concurrent writers with the same `expected`, exactly one gets `true`. A `state` over
///   [`MAX_CHECKPOINT_BYTES`] is refused, before anything is written, with an
///   [`crate::error::Error::InvalidInput`] naming the stream (not a backend error).
/// - `delete_checkpoint` removes a stream's state; its next write expects 0 again. Deleting
///   a state that does not exist is not an error.
/// - Checkpoint names and job ids are separate: a stream named like a job shares nothing with
///   it (`delete_job` leaves checkpoints alone and `delete_checkpoint` leaves jobs alone).
///   Checkpoints do not expire.
/// - Reads (`get_job`, `chunks`, `get_checkpoint`) see every write that returned before they
///   were called.
#[async_trait]
pub trait StateStore: Send + Sync + Debug {
    /// Create a job if none exists with its id. `true` if this call created it.
    async fn create_job(&self, job: &JobRecord) -> Result<bool>;
    /// The job, if it exists.
    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// Store the plan's chunk count and move `Planning` → `Running`.
    async fn set_planned(&self, job_id: &str, total_chunks: u32, planned_ms: i64) -> Result<bool>;
    /// Commit a chunk (see the contract).
    async fn commit_chunk(&self, job_id: &str, chunk: &ChunkRecord) -> Result<LedgerCommit>;
    /// One committed chunk, if it is committed.
    async fn get_chunk(&self, job_id: &str, index: u32) -> Result<Option<ChunkRecord>>;
    /// All committed chunks, ordered by index.
    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRecord>>;
    /// Conditional status change.
    async fn set_status(&self, job_id: &str, from: JobStatus, to: JobStatus) -> Result<bool>;
    /// Take the gather lease until `until_ms` (see the contract).
    async fn take_gather_lease(&self, job_id: &str, now_ms: i64, until_ms: i64) -> Result<bool>;
    /// Extend a held gather lease from `held_ms` to `until_ms` (see the contract).
    async fn renew_gather_lease(&self, job_id: &str, held_ms: i64, until_ms: i64) -> Result<bool>;
    /// Remove a job and its chunks.
    async fn delete_job(&self, job_id: &str) -> Result<()>;
    /// The state stored for the stream consumer `name`, if any.
    async fn get_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>>;
    /// Store `state` as version `expected + 1` if the stored version is `expected` (0: none is
    /// stored); `false` (and nothing changed) otherwise.
    async fn put_checkpoint(&self, name: &str, expected: u64, state: &str) -> Result<bool>;
    /// Remove the state of `name` (not an error if there is none).
    async fn delete_checkpoint(&self, name: &str) -> Result<()>;
    /// The cloud requests one successful `commit_chunk` makes (see [`crate::backends::calls`]): a
    /// chunk's record counts its own commit before it is made.
    fn commit_cost(&self) -> crate::backends::calls::ApiCalls {
        crate::backends::calls::ApiCalls::new()
    }
}

/// Open the ledger named by `url`: `sqlite://PATH`, `memory://` or `dynamodb://TABLE`
/// (feature `aws`, with the AWS configuration in `cloud`).
pub async fn open(url: &str, cloud: &Cloud) -> Result<std::sync::Arc<dyn StateStore>> {
    use crate::error::Error;
    match url.split_once("://") {
        Some(("sqlite", path)) => Ok(std::sync::Arc::new(SqliteLedger::open(std::path::Path::new(path))?)),
        Some(("memory", _)) => Ok(std::sync::Arc::new(MemoryLedger::default())),
        #[cfg(feature = "aws")]
        Some(("dynamodb", table)) => {
            let client = crate::backends::aws::dynamodb(cloud.sdk("--ledger")?);
            Ok(std::sync::Arc::new(dynamodb::DynamoLedger::new(client, table)))
        }
        #[cfg(not(feature = "aws"))]
        Some(("dynamodb", _)) => {
            let _ = cloud;
            Err(Error::config("--ledger", "dynamodb:// needs the `aws` feature, which this build lacks"))
        }
        _ => Err(Error::config(
            "--ledger",
            format!("{url:?} is not a ledger URL (sqlite://PATH, memory:// or dynamodb://TABLE)"),
        )),
    }
}

/// Sum of chunk counts, by rule too.
pub fn total_counts(chunks: &[ChunkRecord]) -> Counts {
    let mut c = Counts::default();
    for ch in chunks {
        c.merge(&ch.counts);
    }
    c
}
