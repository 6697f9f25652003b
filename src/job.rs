//! A job's life cycle: create or resume, plan, enqueue, work, finalize once, gather.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::bucket::{self, InputObject};
use crate::calls::Tally;
use crate::config::{ColumnType, Format, JobSpec, OutputFormat};
use crate::error::{Error, Result};
use crate::gather::{self, Summary};
use crate::ledger::{JobRecord, JobStatus, StateStore};
use crate::lookup::LookupTable;
use crate::pipeline::{CsvLayout, Pipeline};
use crate::plan::{self, Chunk, ChunkTargets, CsvDialect, InputScan};
use crate::queue::Queue;
use crate::sink::Sink;
use crate::worker::{self, Task};

/// The shape of the sink a job needs: the table and, when known, typed fields.
#[derive(Debug, Clone)]
pub struct SinkShape {
    /// The backend (`sink.type`).
    pub kind: crate::config::SinkKind,
    /// Table name.
    pub table: String,
    /// Fields and their types, when the record shape is known.
    pub fields: Option<Vec<(String, Option<ColumnType>)>>,
}

/// Opens the sink for a job once its shape is known (after planning).
pub type SinkOpener = Arc<dyn Fn(&SinkShape) -> Result<Option<Arc<dyn Sink>>> + Send + Sync>;

/// The backends a job runs on.
#[derive(Clone)]
pub struct Engine {
    /// Where outputs go (`jobs/<id>/…`).
    pub bucket: Arc<dyn ObjectStore>,
    /// A URL for the bucket root, for messages (e.g. `file:///data/bucket`).
    pub bucket_url: String,
    /// The store inputs are read from.
    pub inputs: Arc<dyn ObjectStore>,
    /// Job and chunk records.
    pub ledger: Arc<dyn StateStore>,
    /// Task queue.
    pub queue: Arc<dyn Queue>,
    /// Sink factory.
    pub sink: SinkOpener,
    /// The SQLite database for `sqlite:` lookups.
    pub database: PathBuf,
}

impl Engine {
    /// The embedded engine in `data_dir`: `bucket/` for outputs, `sluicebox.db` (SQLite) for
    /// the ledger and the sink, an in-process queue, and local files as inputs.
    pub fn local(data_dir: &std::path::Path) -> Result<Engine> {
        use crate::config::SinkKind;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::config("--data-dir", format!("cannot create {}: {e}", data_dir.display())))?;
        let data_dir = std::path::absolute(data_dir).map_err(|e| Error::config("--data-dir", e.to_string()))?;
        let bucket_dir = data_dir.join("bucket");
        let database = data_dir.join("sluicebox.db");
        let db = database.clone();
        let sink: SinkOpener = Arc::new(move |shape| match shape.kind {
            SinkKind::None => Ok(None),
            SinkKind::Dynamodb => Err(Error::config(
                "sink.type",
                "dynamodb needs an engine with the AWS backends (a build with the `aws` feature)",
            )),
            SinkKind::Sqlite => {
                Ok(Some(
                    Arc::new(crate::sink::SqliteSink::open(&db, &shape.table, shape.fields.clone())?) as Arc<dyn Sink>
                ))
            }
        });
        Ok(Engine {
            bucket: bucket::open(&bucket_dir.display().to_string())?,
            bucket_url: format!("file://{}", bucket_dir.display()),
            inputs: bucket::local_inputs(),
            ledger: Arc::new(crate::ledger::SqliteLedger::open(&database)?),
            queue: Arc::new(crate::queue::MemoryQueue::new(Duration::from_secs(300))),
            sink,
            database,
        })
    }

    /// The embedded engine with any of its backends replaced by the ones these URLs name:
    /// `bucket` (`s3://BUCKET[/PREFIX]`, `file://DIR`), `queue` (`sqs://NAME`, `memory://`),
    /// `ledger` (`dynamodb://TABLE`, `sqlite://PATH`). Inputs are read from the store of
    /// `first_input` (an S3 bucket for `s3://` inputs).
    pub async fn with_backends(data_dir: &std::path::Path, urls: &BackendUrls, first_input: &str) -> Result<Engine> {
        let mut engine = Engine::local(data_dir)?;
        #[cfg(feature = "aws")]
        {
            let local = engine.sink.clone();
            let client = crate::aws::dynamodb(&crate::aws::sdk_config().await);
            engine.sink = Arc::new(move |shape| match (shape.kind, &shape.table) {
                (crate::config::SinkKind::Dynamodb, table) => {
                    Ok(Some(Arc::new(crate::sink::dynamodb::DynamoSink::new(client.clone(), table)) as Arc<dyn Sink>))
                }
                _ => local(shape),
            });
        }
        engine.inputs = bucket::input_store(first_input)?;
        if let Some(url) = &urls.bucket {
            engine.bucket = bucket::open(url)?;
            engine.bucket_url = url.trim_end_matches('/').to_string();
        }
        if let Some(url) = &urls.queue {
            engine.queue = crate::queue::open(url, urls.visibility).await?;
        }
        if let Some(url) = &urls.ledger {
            engine.ledger = crate::ledger::open(url).await?;
        }
        Ok(engine)
    }
}

/// Backends named by URL (`None`: the embedded default).
#[derive(Debug, Clone)]
pub struct BackendUrls {
    /// Where outputs go.
    pub bucket: Option<String>,
    /// The task queue.
    pub queue: Option<String>,
    /// The ledger.
    pub ledger: Option<String>,
    /// The queue's visibility timeout.
    pub visibility: Duration,
}

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 2,
            job_id: None,
            force: false,
            progress: indicatif::ProgressBar::hidden(),
            worker_name: "local".into(),
            visibility: Duration::from_secs(300),
            max_attempts: 3,
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
}

impl JobPlan {
    /// Records in all inputs.
    pub fn total_records(&self) -> u64 {
        self.inputs.iter().map(|i| i.records).sum()
    }
}

/// Everything workers share while a job runs.
pub(crate) struct JobRun {
    pub engine: Engine,
    pub spec: JobSpec,
    pub plan: JobPlan,
    pub pipeline: Pipeline,
    pub layouts: Vec<Option<CsvLayout>>,
    pub sink: Option<Arc<dyn Sink>>,
    pub sink_table: Option<String>,
    pub progress: indicatif::ProgressBar,
    pub done: CancellationToken,
}

impl JobRun {
    pub fn prefix(&self) -> String {
        format!("jobs/{}", self.plan.job_id)
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
    h.update(serde_json::to_vec(&(&spec.config, &spec.enrich, &spec.schema)).unwrap_or_default());
    if let Some(source) = spec.enrich.as_ref().filter(|e| !e.source.starts_with("sqlite:")) {
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

/// `jobs/<id>/job.json`: the job definition as any worker, on any host, needs it (paths
/// resolved, the JSON Schema inline).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredJob {
    /// The job file's settings, with paths resolved.
    pub config: crate::config::JobConfig,
    /// The JSON Schema records are validated against, if any.
    pub schema: Option<serde_json::Value>,
}

impl StoredJob {
    fn of(spec: &JobSpec) -> Self {
        let mut config = spec.config.clone();
        config.validate = None;
        if let Some(e) = &spec.enrich {
            config.enrich = Some(e.clone());
        }
        StoredJob { config, schema: spec.schema.clone() }
    }

    fn spec(self) -> Result<JobSpec> {
        let mut spec = self.config.validate(std::path::Path::new("/"))?;
        spec.schema = self.schema;
        Ok(spec)
    }
}

/// What [`submit`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    /// The job id.
    pub job_id: String,
    /// Chunks in the plan.
    pub chunks: u32,
    /// Tasks sent (chunks not yet committed).
    pub tasks_sent: u32,
    /// Records in the inputs.
    pub records: u64,
    /// The summary, when the job was already complete.
    pub summary: Option<Summary>,
}

enum Prepared {
    Complete(Box<Summary>),
    Ready(Arc<JobRun>),
}

/// Run (or resume) a job over `inputs` to completion with `opts.workers` workers in this
/// process, and return its summary.
pub async fn run(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>, opts: &RunOptions) -> Result<Summary> {
    let tally = Tally::default();
    let run = match tally.scope(prepare(engine, spec, inputs, opts, true)).await? {
        Prepared::Complete(summary) => return Ok(*summary),
        Prepared::Ready(run) => run,
    };
    let sent = tally.scope(enqueue(&run)).await?;
    record_calls(&run, &tally).await?;
    work(&run, opts, sent).await?;
    let job_id = &run.plan.job_id;
    gather::read_summary(engine.bucket.as_ref(), job_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("jobs/{job_id}/summary.json")))
}

/// Plan a job (or find its plan) and send a task for every chunk not yet committed, for
/// workers elsewhere (`sluicebox worker`) to do. Sending again is safe: a chunk is committed
/// once however often its task arrives.
pub async fn submit(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>, opts: &RunOptions) -> Result<Submitted> {
    let tally = Tally::default();
    match tally.scope(prepare(engine, spec, inputs, opts, false)).await? {
        Prepared::Complete(summary) => Ok(Submitted {
            job_id: summary.job_id.clone(),
            chunks: summary.chunks.total,
            tasks_sent: 0,
            records: summary.records.total,
            summary: Some(*summary),
        }),
        Prepared::Ready(run) => {
            let sent = tally.scope(enqueue(&run)).await?;
            record_calls(&run, &tally).await?;
            Ok(Submitted {
                job_id: run.plan.job_id.clone(),
                chunks: run.plan.chunks.len() as u32,
                tasks_sent: sent,
                records: run.plan.total_records(),
                summary: None,
            })
        }
    }
}

/// Follow a job in the ledger until it is complete (its summary) or failed (its error),
/// showing chunk progress on `progress`.
pub async fn wait(engine: &Engine, job_id: &str, progress: &indicatif::ProgressBar) -> Result<Summary> {
    loop {
        let job = engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        if let Some(total) = job.total_chunks {
            progress.set_length(u64::from(total));
            progress.set_position(u64::from(job.done_chunks));
            progress.set_message(job.status.as_str());
        }
        match job.status {
            JobStatus::Complete => {
                return gather::read_summary(engine.bucket.as_ref(), job_id)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("jobs/{job_id}/summary.json")));
            }
            JobStatus::Failed => return Err(read_failure(engine.bucket.as_ref(), job_id).await),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `jobs/<id>/failed.json`: why a job failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

async fn read_failure(store: &dyn ObjectStore, job_id: &str) -> Error {
    let path = format!("jobs/{job_id}/failed.json");
    match bucket::get_opt(store, &path).await {
        Ok(Some(b)) => match serde_json::from_slice::<Failure>(&b) {
            Ok(f) => Error::Conflict(format!(
                "job {job_id} failed: chunk {} of {} (version {}) failed {} times: {}",
                f.chunk, f.input, f.version, f.attempts, f.error
            )),
            Err(e) => Error::backend("json", format!("corrupt {path}"), e),
        },
        Ok(None) => Error::Conflict(format!("job {job_id} failed ({path} is missing)")),
        Err(e) => e,
    }
}

/// Create or resume the job, plan it if it is new, and build what its workers share.
async fn prepare(
    engine: &Engine,
    spec: &JobSpec,
    inputs: Vec<InputObject>,
    opts: &RunOptions,
    take_over_gather: bool,
) -> Result<Prepared> {
    if inputs.is_empty() {
        return Err(Error::config("INPUT", "no input objects (an empty directory?)"));
    }
    let job_id = opts.job_id.clone().unwrap_or_else(|| derive_job_id(&inputs, spec));
    let prefix = format!("jobs/{job_id}");
    if opts.force {
        engine.ledger.delete_job(&job_id).await?;
        bucket::delete_prefix(engine.bucket.as_ref(), &prefix).await?;
    }
    engine.ledger.create_job(&JobRecord::new(&job_id, now_ms())).await?;
    let job = engine.ledger.get_job(&job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    tracing::info!(job = %job_id, status = job.status.as_str(), "job");
    let stored_plan = match job.status {
        JobStatus::Planning => None,
        _ => {
            let plan = read_plan(engine.bucket.as_ref(), &job_id).await?;
            let planned: Vec<&InputObject> = plan.inputs.iter().map(|i| &i.object).collect();
            if planned != inputs.iter().collect::<Vec<_>>() {
                return Err(Error::Conflict(format!(
                    "job {job_id} was planned over other inputs (or they changed since); use --force or another --job-id"
                )));
            }
            Some(plan)
        }
    };
    if job.status == JobStatus::Complete {
        if let Some(summary) = gather::read_summary(engine.bucket.as_ref(), &job_id).await? {
            return Ok(Prepared::Complete(Box::new(Summary { already_complete: true, ..summary })));
        }
    }
    if job.status == JobStatus::Failed {
        return Err(read_failure(engine.bucket.as_ref(), &job_id).await);
    }
    if job.status == JobStatus::Gathering && take_over_gather {
        // The process that held the gather died; this run takes it over.
        engine.ledger.set_status(&job_id, JobStatus::Gathering, JobStatus::Running).await?;
    }
    // Loading the reference and scanning the inputs are independent: do both at once.
    let load_lookup = load_lookup(engine, spec);
    let scan = async {
        match job.status {
            JobStatus::Planning => scan_inputs(engine, spec, inputs).await.map(Some),
            _ => Ok(None),
        }
    };
    let (lookup, scanned) = tokio::join!(load_lookup, scan);
    let lookup: Option<Arc<LookupTable>> = lookup?;
    let plan = match scanned? {
        Some((inputs, chunks)) => {
            let output_fields = output_fields(spec, &inputs, lookup.as_deref());
            let output_format = crate::pipeline::output_format(spec, output_fields.is_some());
            JobPlan { job_id: job_id.clone(), inputs, chunks, output_fields, output_format }
        }
        None => stored_plan.ok_or_else(|| Error::NotFound(format!("{prefix}/plan.json")))?,
    };
    tracing::info!(job = %job_id, chunks = plan.chunks.len(), records = plan.total_records(), "planned");
    // Building the run checks the plan against the job (e.g. a header without a declared
    // column) before anything is stored: a job that cannot run stays `planning`.
    let run = JobRun::open(engine, spec.clone(), plan, lookup.clone(), opts.progress.clone())?;
    if job.status != JobStatus::Planning {
        return Ok(Prepared::Ready(run));
    }
    // Two planners of one job id store one plan: the first wins, the second uses it.
    let stored = StoredJob::of(spec);
    bucket::put_if_absent(engine.bucket.as_ref(), &format!("{prefix}/job.json"), json_bytes(&stored)?).await?;
    let run =
        match bucket::put_if_absent(engine.bucket.as_ref(), &format!("{prefix}/plan.json"), json_bytes(&run.plan)?)
            .await?
        {
            true => run,
            false => {
                let plan = read_plan(engine.bucket.as_ref(), &job_id).await?;
                JobRun::open(engine, spec.clone(), plan, lookup, opts.progress.clone())?
            }
        };
    engine.ledger.set_planned(&job_id, run.plan.chunks.len() as u32, now_ms()).await?;
    Ok(Prepared::Ready(run))
}

/// Load the job's reference table, fetching it first when it is in a bucket.
async fn load_lookup(engine: &Engine, spec: &JobSpec) -> Result<Option<Arc<LookupTable>>> {
    let Some(mut cfg) = spec.enrich.clone() else { return Ok(None) };
    if cfg.source.starts_with("s3://") {
        cfg.source = fetch_reference(engine, &cfg.source).await?.display().to_string();
    }
    let db = engine.database.clone();
    tokio::task::spawn_blocking(move || LookupTable::load(&cfg, &db))
        .await
        .map_err(|e| Error::backend("lookup", "load task failed", e))?
        .map(|t| Some(Arc::new(t)))
}

/// Copy a reference object from a bucket into the data directory (once per version),
/// streaming, and return the local path.
async fn fetch_reference(engine: &Engine, url: &str) -> Result<PathBuf> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncWriteExt;
    let store = bucket::input_store(url)?;
    let key = url.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(_, k)| k).unwrap_or_default();
    let path = bucket::key_path(key);
    let got = store.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => Error::config("enrich.source", format!("{url} does not exist")),
        other => Error::backend("object_store", format!("failed to read {url}"), other),
    })?;
    let version = got.meta.e_tag.clone().unwrap_or_else(|| got.meta.last_modified.timestamp_micros().to_string());
    let digest: String =
        Sha256::digest(format!("{url}\0{version}")).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = key.rsplit('/').next().unwrap_or("reference");
    let dir = engine.database.parent().map(|p| p.join("references")).unwrap_or_else(|| PathBuf::from("references"));
    let local = dir.join(format!("{digest}-{name}"));
    if local.exists() {
        return Ok(local);
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::backend("fs", format!("cannot create {}", dir.display()), e))?;
    let partial = dir.join(format!(".{digest}-{name}.{}", std::process::id()));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| Error::backend("fs", format!("cannot create {}", partial.display()), e))?;
    let mut stream = got.into_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| Error::backend("object_store", format!("failed to read {url}"), e))?;
        file.write_all(&piece)
            .await
            .map_err(|e| Error::backend("fs", format!("cannot write {}", partial.display()), e))?;
    }
    file.flush().await.map_err(|e| Error::backend("fs", format!("cannot write {}", partial.display()), e))?;
    tokio::fs::rename(&partial, &local)
        .await
        .map_err(|e| Error::backend("fs", format!("cannot rename {}", partial.display()), e))?;
    Ok(local)
}

impl JobRun {
    /// Everything workers need for a planned job.
    pub(crate) fn open(
        engine: &Engine,
        spec: JobSpec,
        plan: JobPlan,
        lookup: Option<Arc<LookupTable>>,
        progress: indicatif::ProgressBar,
    ) -> Result<Arc<JobRun>> {
        let pipeline = Pipeline::new(&spec, lookup, plan.output_fields.clone())?;
        let layouts = plan
            .inputs
            .iter()
            .map(|i| match i.object.format {
                Format::Csv => {
                    let header = i.header.as_deref().filter(|h| spec.config.input.header && !h.is_empty());
                    pipeline.csv_layout(header, &i.object.location).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let shape = sink_shape(&spec, &plan);
        let sink = (engine.sink)(&shape)?;
        let mut engine = engine.clone();
        if let Some(first) = plan.inputs.first() {
            engine.inputs = bucket::input_store(&first.object.location)?;
        }
        Ok(Arc::new(JobRun {
            engine,
            spec,
            pipeline,
            layouts,
            sink_table: sink.as_ref().map(|_| shape.table.clone()),
            sink,
            progress,
            done: CancellationToken::new(),
            plan,
        }))
    }

    /// Load a planned job from the bucket (`job.json`, `plan.json`): how a worker that did
    /// not plan the job learns it.
    pub(crate) async fn load(engine: &Engine, job_id: &str) -> Result<Arc<JobRun>> {
        let path = format!("jobs/{job_id}/job.json");
        let bytes =
            bucket::get_opt(engine.bucket.as_ref(), &path).await?.ok_or_else(|| Error::NotFound(path.clone()))?;
        let stored: StoredJob =
            serde_json::from_slice(&bytes).map_err(|e| Error::backend("json", format!("corrupt {path}"), e))?;
        let spec = stored.spec()?;
        let plan = read_plan(engine.bucket.as_ref(), job_id).await?;
        let lookup = load_lookup(engine, &spec).await?;
        JobRun::open(engine, spec, plan, lookup, indicatif::ProgressBar::hidden())
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::backend("json", "encode", e))
}

async fn read_plan(store: &dyn ObjectStore, job_id: &str) -> Result<JobPlan> {
    let path = format!("jobs/{job_id}/plan.json");
    let bytes = bucket::get_opt(store, &path).await?.ok_or_else(|| Error::NotFound(path.clone()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::backend("json", format!("corrupt {path}"), e))
}

/// Scan every input and number the chunks across them.
async fn scan_inputs(
    engine: &Engine,
    spec: &JobSpec,
    inputs: Vec<InputObject>,
) -> Result<(Vec<PlannedInput>, Vec<Chunk>)> {
    let targets = ChunkTargets {
        records: spec.chunk_records,
        bytes: spec.chunk_bytes,
        max_record_bytes: spec.config.input.max_record_bytes,
    };
    let dialect = CsvDialect { delimiter: spec.delimiter, quote: spec.quote, header: spec.config.input.header };
    let mut planned = Vec::new();
    let mut chunks = Vec::new();
    for (i, object) in inputs.into_iter().enumerate() {
        let reader = bucket::open_reader(engine.inputs.clone(), &object).await?;
        let format = object.format;
        let location = object.location.clone();
        let scan: InputScan = tokio::task::spawn_blocking(move || {
            let reader = reader.decoded()?;
            plan::scan(reader, format, dialect, targets)
                .map_err(|e| Error::input(&location, format!("cannot read input: {e}")))
        })
        .await
        .map_err(|e| Error::backend("plan", "scan task failed", e))??;
        for mut c in scan.chunks {
            c.index = chunks.len() as u32;
            c.input = i as u32;
            chunks.push(c);
        }
        planned.push(PlannedInput { object, header: scan.header, records: scan.records });
    }
    Ok((planned, chunks))
}

/// Output fields: as configured; else, without transforms, the first input's columns
/// (renamed) followed by the lookup's fields.
fn output_fields(spec: &JobSpec, inputs: &[PlannedInput], lookup: Option<&LookupTable>) -> Option<Vec<String>> {
    if let Some(f) = &spec.config.output.fields {
        return Some(f.clone());
    }
    if !spec.config.transform.is_empty() {
        return None;
    }
    let first = inputs.first()?;
    let mut fields: Vec<String> = match (&first.header, first.object.format) {
        (Some(h), Format::Csv) if spec.config.input.header && !h.is_empty() => h
            .iter()
            .map(|n| {
                spec.config
                    .columns
                    .iter()
                    .find(|c| &c.name == n)
                    .map(|c| c.out_name().to_string())
                    .unwrap_or_else(|| n.clone())
            })
            .collect(),
        // A headerless CSV has exactly the declared columns; JSON records may have any fields.
        (_, Format::Csv) if !spec.config.columns.is_empty() => {
            spec.config.columns.iter().map(|c| c.out_name().to_string()).collect()
        }
        _ => return None,
    };
    if let Some(l) = lookup {
        for f in l.fields() {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
    }
    Some(fields)
}

fn sink_shape(spec: &JobSpec, plan: &JobPlan) -> SinkShape {
    let table = spec.config.sink.table.clone().unwrap_or_else(|| {
        let name = plan.inputs.first().and_then(|i| i.object.path.rsplit('/').next()).unwrap_or("records");
        let stem = name.split('.').next().unwrap_or(name);
        let mut t: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        if t.is_empty() || t.starts_with(|c: char| c.is_ascii_digit()) {
            t.insert(0, 't');
        }
        t
    });
    let types = |name: &str| {
        spec.config
            .columns
            .iter()
            .chain(spec.enrich.iter().flat_map(|e| e.columns.iter()))
            .find(|c| c.out_name() == name)
            .map(|c| c.kind)
    };
    let fields = plan.output_fields.as_ref().map(|f| f.iter().map(|n| (n.clone(), types(n))).collect());
    SinkShape { kind: spec.config.sink.kind, table, fields }
}

/// Send a task for every chunk not yet committed; returns how many were sent.
async fn enqueue(run: &Arc<JobRun>) -> Result<u32> {
    let job_id = &run.plan.job_id;
    let committed: HashSet<u32> = run.engine.ledger.chunks(job_id).await?.iter().map(|c| c.index).collect();
    let done_records: u64 = run.plan.chunks.iter().filter(|c| committed.contains(&c.index)).map(|c| c.records).sum();
    run.progress.set_length(run.plan.total_records());
    run.progress.set_position(done_records);
    let tasks: Vec<String> = run
        .plan
        .chunks
        .iter()
        .filter(|c| !committed.contains(&c.index))
        .map(|c| serde_json::to_string(&Task { job_id: job_id.clone(), chunk: c.clone() }))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::backend("json", "encode task", e))?;
    for batch in tasks.chunks(10) {
        run.engine.queue.send(batch.to_vec()).await?;
    }
    Ok(tasks.len() as u32)
}

/// Keep the requests a planner or submitter made in `jobs/<id>/calls/`, for the summary.
async fn record_calls(run: &Arc<JobRun>, tally: &Tally) -> Result<()> {
    let mut calls = tally.take();
    if calls.is_empty() {
        return Ok(());
    }
    if run.engine.bucket_url.starts_with("s3://") {
        // This write itself.
        *calls.entry("s3.PutObject".into()).or_default() += 1;
    }
    let path = format!("{}/calls/{}-{}.json", run.prefix(), now_ms(), std::process::id());
    bucket::put(run.engine.bucket.as_ref(), &path, json_bytes(&calls)?).await
}

/// Run workers until the job is gathered (`sent` tasks were just enqueued).
async fn work(run: &Arc<JobRun>, opts: &RunOptions, sent: u32) -> Result<()> {
    if sent == 0 {
        // Every chunk was committed before (a crash during the gather): gather again; it is
        // idempotent.
        return gather::gather(run).await;
    }
    let jobs = Arc::new(worker::Jobs::one(run.clone()));
    let mut handles = Vec::new();
    for w in 0..opts.workers.max(1) {
        let jobs = jobs.clone();
        let name = format!("{}-{w}", opts.worker_name);
        let opts = opts.clone();
        handles.push(tokio::spawn(async move { worker::work_loop(jobs, name, &opts).await }));
    }
    let mut first_err = None;
    for h in handles {
        let r = h.await.map_err(|e| Error::backend("worker", "worker task panicked", e)).and_then(|r| r);
        if let Err(e) = r {
            run.done.cancel();
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
