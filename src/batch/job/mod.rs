//! A job's data: its plan, its stored definition, its tasks, how it failed, what it reports,
//! its objects in the bucket, and [`JobRun`], everything its workers share while it runs.
//!
//! The life cycle that uses them sits above the worker and the gather: [`prepare`] (create or
//! resume, plan, enqueue) and [`run`](mod@run) (run here, submit to workers elsewhere, wait);
//! [`status`] tells where a job stands.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::backends::bucket::{self, InputObject};
use crate::backends::lookup::LookupTable;
use crate::backends::sink::{Sink, SinkShape};
use crate::engine::pipeline::{Input, Pipeline};
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::input::plan::Chunk;
use crate::model::config::OutputFormat;

mod objects;
pub mod prepare;
pub mod redrive;
pub mod run;
pub mod status;
mod summary;

pub use objects::{Gathered, JobObjects, Part, Sent};
pub use run::{run, submit, wait, Submitted};
pub use summary::{
    ChunkCounts, Decoding, InputSummary, Manifest, ManifestChunk, Outputs, RecordCounts, Summary, Timings,
};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent workers.
    pub workers: usize,
    /// Job id, instead of one derived from the inputs and config.
    pub job_id: Option<String>,
    /// Discard any earlier run of the same job and start over.
    pub force: bool,
    /// Progress bar target (hidden when not on a terminal).
    pub progress: indicatif::ProgressBar,
    /// Name prefix for workers in the manifest.
    pub worker_name: String,
    /// How long a task stays invisible before another worker may take it.
    pub visibility: Duration,
    /// Deliveries of one task before the run fails with its error.
    pub max_attempts: u32,
    /// The delay before a failed task's second attempt; it doubles with each further one.
    pub retry_delay: Duration,
    /// What the jobs a worker takes from a shared queue may read and write: `s3://BUCKET`,
    /// `s3://BUCKET/PREFIX` or `dynamodb://TABLE` (empty: anything its credentials reach). A
    /// job naming anything else (an input, its reference, its sink) fails at once.
    pub allow: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 2,
            job_id: None,
            force: false,
            progress: indicatif::ProgressBar::hidden(),
            worker_name: "local".into(),
            visibility: crate::backends::queue::DEFAULT_VISIBILITY,
            max_attempts: 3,
            retry_delay: Duration::from_millis(500),
            allow: Vec::new(),
        }
    }
}

/// The stored plan of a job (`jobs/<id>/plan.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobPlan {
    /// The job id.
    pub job_id: String,
    /// Inputs, in order.
    pub inputs: Vec<PlannedInput>,
    /// All chunks, numbered across inputs.
    pub chunks: Vec<Chunk>,
    /// Output fields, when known.
    pub output_fields: Option<Vec<String>>,
    /// Output format.
    pub output_format: OutputFormat,
    /// The job's order among jobs: when it was created, in ms since the Unix epoch. Its sink
    /// writes replace those of earlier jobs, never of later ones.
    #[serde(default)]
    pub order: u64,
    /// What planning noticed but did not stop for (columns the job does not declare), for
    /// the summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One input with what the scan found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedInput {
    /// The object.
    pub object: InputObject,
    /// CSV header, if any.
    pub header: Option<Vec<String>>,
    /// Records found.
    pub records: u64,
    /// A compressed input with nowhere to resume decoding (a single zstd frame): the planner
    /// stored it decompressed ([`JobObjects::plain_copy_path`]) and workers read ranges of
    /// that copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_copy: bool,
    /// The bytes of its resume windows ([`JobObjects::windows_path`]): up to 32 KiB a chunk.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub windows_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobPlan {
    /// A plan stored before plans carried their run (`order` 0) belongs to the ledger's `job`.
    pub fn of_run(mut self, job: &crate::backends::ledger::JobRecord) -> JobPlan {
        if self.order == 0 {
            self.order = job.created_ms.max(0) as u64;
        }
        self
    }

    /// Records in all inputs.
    pub fn total_records(&self) -> u64 {
        self.inputs.iter().map(|i| i.records).sum()
    }
}

/// A queue message: a claim check naming the job and the chunk's byte range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Task {
    /// The job.
    pub job_id: String,
    /// The chunk.
    pub chunk: Chunk,
    /// Which run of the job sent it: its plan's `order`. A job made anew (`--force`) drops the
    /// tasks of its earlier runs (0: not known, from an older sender).
    #[serde(default)]
    pub generation: u64,
}

/// `jobs/<id>/failed.json`: why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The job id.
    pub job_id: String,
    /// The chunk that failed.
    pub chunk: u32,
    /// The input object and its planned version.
    pub input: String,
    /// The planned version (ETag) of the input.
    pub version: String,
    /// Deliveries of the chunk's task.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// The threshold that stopped the job, with the figures, when `[rejects]` stopped it
    /// (then `chunk` is the chunk whose commit passed it, and `error` says the same in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<Box<crate::model::rejects::Stop>>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(stop) = &self.stopped_by {
            return write!(f, "job {} failed: {stop}; nothing was published to the sink", self.job_id);
        }
        write!(
            f,
            "job {} failed: chunk {} of {} (version {}) failed on attempt {}: {}",
            self.job_id, self.chunk, self.input, self.version, self.attempts, self.error
        )
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Derive a job id from the inputs (location, size, version), the job definition (with its
/// paths resolved and its schema) and the enrichment reference's size and modification time,
/// so a repeated upload maps to the same job and a change to any of them makes a new one.
pub fn derive_job_id(inputs: &[InputObject], spec: &JobSpec) -> String {
    let mut h = Sha256::new();
    for i in inputs {
        h.update(i.location.as_bytes());
        h.update([0]);
        h.update(i.size.to_le_bytes());
        h.update(i.version.as_bytes());
        h.update([0]);
    }
    h.update(serde_json::to_vec(&*spec.definition).unwrap_or_default());
    if let Some(source) = spec.enrich.as_ref().filter(|e| !e.source.starts_with("sqlite:") && !on_any_host(&e.source)) {
        if let Ok(meta) = std::fs::metadata(source.source.strip_prefix("file://").unwrap_or(&source.source)) {
            h.update(meta.len().to_le_bytes());
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            h.update(mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
        }
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stem = inputs
        .first()
        .and_then(|i| i.path.rsplit('/').next())
        .map(|n| n.split('.').next().unwrap_or(n))
        .unwrap_or("job");
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    format!("{stem}-{hex}")
}

/// Everything workers share while a job runs.
pub struct JobRun {
    /// The backends.
    pub engine: Engine,
    /// The checked job definition.
    pub spec: JobSpec,
    /// The plan.
    pub plan: JobPlan,
    /// The job's objects in the bucket.
    pub objects: JobObjects,
    /// The record engine, built once.
    pub pipeline: Pipeline,
    /// Each input's CSV layout (`None` for JSON inputs).
    pub inputs: Vec<Input>,
    /// Where kept records go, if anywhere.
    pub sink: Option<Arc<dyn Sink>>,
    /// The sink's table, for the summary.
    pub sink_table: Option<String>,
    /// Progress, in records.
    pub progress: indicatif::ProgressBar,
    /// Cancelled once the job is gathered (or its run stops).
    pub done: CancellationToken,
}

impl JobRun {
    /// Everything workers need for a planned job. Fails (before anything is written) when
    /// the plan does not fit the job, e.g. a header without a declared column.
    pub fn open(
        engine: &Engine,
        spec: JobSpec,
        plan: JobPlan,
        lookup: Option<Arc<LookupTable>>,
        progress: indicatif::ProgressBar,
    ) -> Result<Arc<JobRun>> {
        let pipeline = Pipeline::new(&spec, lookup, plan.output_fields.clone());
        let version = spec.definition.redrive.as_ref().map_or(plan.order, |r| r.order);
        let inputs = (plan.inputs.iter().enumerate())
            .map(|(n, i)| pipeline.input(version, n as u32, &i.object.location, i.object.format, i.header.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        if plan.output_format == OutputFormat::Parquet {
            // Inputs named .json/.jsonl are known only now; the spec refused the rest.
            let fields = plan
                .output_fields
                .as_deref()
                .ok_or_else(|| crate::engine::spec::parquet_needs_fields("a JSON input"))?;
            crate::engine::parquet::schema(&spec, fields)?;
        }
        // The sink is opened (a SQLite table created) only once the plan fits the job.
        let shape = sink_shape(&spec, &plan);
        let sink = engine.open_sink(&spec.sink, &shape)?;
        let pipeline = pipeline.with_sink_limits(sink.clone());
        let mut engine = engine.clone();
        if let Some(first) = plan.inputs.first() {
            engine.inputs = bucket::input_store(&first.object.location, &engine.cloud)?;
        }
        Ok(Arc::new(JobRun {
            objects: JobObjects::new(engine.bucket.clone(), &plan.job_id),
            engine,
            spec,
            pipeline,
            inputs,
            sink_table: sink.as_ref().map(|_| shape.table.clone()),
            sink,
            progress,
            done: CancellationToken::new(),
            plan,
        }))
    }

    /// Load a planned job from the bucket (`job.json`, `plan.json`): how a worker that did
    /// not plan the job learns it. The stored definition is checked as any job file is.
    pub async fn load(engine: &Engine, job_id: &str) -> Result<Arc<JobRun>> {
        let objects = JobObjects::new(engine.bucket.clone(), job_id);
        let spec = objects.definition().await?.check()?;
        if let Some(e) = spec.enrich.as_ref().filter(|e| !on_any_host(&e.source)) {
            // A path means the submitter's disk, which this worker may not share.
            return Err(Error::config(
                "enrich.source",
                format!(
                    "job {job_id} names the reference {:?}, which is not in a bucket or a table; a worker \
                     reads job resources only from s3:// or dynamodb://",
                    e.source
                ),
            ));
        }
        let mut plan = objects.plan().await?;
        if plan.order == 0 {
            let job = engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
            plan = plan.of_run(&job);
        }
        let lookup = engine.open_lookup(spec.enrich.as_ref()).await?;
        JobRun::open(engine, spec, plan, lookup, indicatif::ProgressBar::hidden())
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.plan.job_id
    }

    /// What the job reads and writes besides the worker's own bucket, ledger and queue: its
    /// inputs, its reference and its sink table, by URL.
    pub fn resources(&self) -> Vec<String> {
        let mut all: Vec<String> = self.plan.inputs.iter().map(|i| i.object.location.clone()).collect();
        all.extend(self.spec.enrich.as_ref().map(|e| e.source.clone()));
        all.extend(self.spec.sink.target.remote_url());
        all
    }

    /// Refuse a job that names a resource outside `allow` (see [`RunOptions::allow`]).
    pub fn check_allowed(&self, allow: &[String]) -> Result<()> {
        if allow.is_empty() {
            return Ok(());
        }
        let within = |r: &str, a: &str| {
            let a = a.trim_end_matches('/');
            r == a || r.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
        };
        match self.resources().into_iter().find(|r| !allow.iter().any(|a| within(r, a))) {
            None => Ok(()),
            Some(r) => Err(Error::input(
                r,
                format!("job {} names it, and this worker may only touch {}", self.id(), allow.join(", ")),
            )),
        }
    }

    /// The order its sink items carry: its own (`plan.order`), or for a redrive the first
    /// job's of its line ([`crate::model::config::Redrive::order`]); what the sink stages
    /// them under and publishes.
    pub fn version(&self) -> u64 {
        self.spec.definition.redrive.as_ref().map_or(self.plan.order, |r| r.order)
    }

    /// Which run of the job this is: the ledger job's `created_ms`, carried by its plan, its
    /// tasks and its commits (the ledger refuses commits of another run).
    pub fn generation(&self) -> i64 {
        self.plan.order as i64
    }
}

/// What a worker serving a shared queue may touch when it is not told ([`RunOptions::allow`]
/// empty): buckets and tables, which every host reads alike, and never its own files, which a
/// job planned on another machine would name (`file:///etc/…` read from the worker's disk).
/// `sluicebox worker --allow file:///DIR` lets it read a directory all its hosts share.
pub fn worker_allow(given: Vec<String>) -> Vec<String> {
    match given.is_empty() {
        true => vec!["s3://".to_string(), "dynamodb://".to_string()],
        false => given,
    }
}

/// Whether a job resource at `source` can be read from any host (a bucket or a table), rather
/// than from one machine's disk or database.
pub fn on_any_host(source: &str) -> bool {
    ["s3://", "dynamodb://", "postgres://"].iter().any(|scheme| source.starts_with(scheme))
}

/// The sink table a job writes: named by the job (or after its first input), with the plan's
/// output fields typed by the declared columns.
pub fn sink_shape(spec: &JobSpec, plan: &JobPlan) -> SinkShape {
    let table = spec.sink.target.table().map(str::to_string).unwrap_or_else(|| {
        default_table(plan.inputs.first().and_then(|i| i.object.path.rsplit('/').next()).unwrap_or("records"))
    });
    spec.sink_shape(table, plan.output_fields.as_deref())
}

/// The sink table of a job that names none: its first input's file name up to the first dot,
/// made SQL-safe (`orders.csv.gz` → `orders`, `2024 sales.csv` → `t2024_sales`).
pub fn default_table(file_name: &str) -> String {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    let mut t: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if t.is_empty() || t.starts_with(|c: char| c.is_ascii_digit()) {
        t.insert(0, 't');
    }
    t
}
