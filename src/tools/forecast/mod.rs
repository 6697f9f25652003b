//! `sluicebox plan`: what a job will do and cost, before it runs.
//!
//! A dry run scans the inputs as `run` would (the same chunks), runs the pipeline on a sample
//! (the first chunk: the share of records kept and rejected, the bytes of output and rejects
//! per record), and writes nothing. [`requests`] turns that [`Shape`] into the requests the
//! job will make on a [`Deployment`], by the same rules the code follows (one ledger commit
//! per chunk, tasks sent ten at a time, sink items 25 to a `BatchWriteItem`, …), so that they
//! come within a few percent of the `api_calls` the run then reports in its summary. The
//! [`crate::backends::cost`] table prices them.
//!
//! What the summary does not count is not forecast either: requests made after the summary is
//! written (marking the job complete, deleting the parts, notifications) and idle polls of an
//! empty queue, which depend on time, not on the job. With `--estimate` the shape comes from
//! object sizes alone (a listing), with the assumptions stated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backends::bucket::{self, InputObject};
use crate::backends::calls::ApiCalls;
use crate::backends::cost::{thousands, Bill, LambdaUsage, Prices, Usage};
use crate::backends::sink::SinkItem;
use crate::batch::job::{prepare, JobPlan};
use crate::engine::pipeline::Pipeline;
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::Compression;

mod lambda;

use self::lambda::{lambda_time, lambda_usage, task_time};
pub use self::lambda::{LambdaTime, Latencies};

/// Records per DynamoDB `BatchWriteItem` (the service's limit).
const BATCH_WRITE: u64 = 25;
/// Keys per DynamoDB `BatchGetItem`.
const BATCH_GET: u64 = 100;
/// Entries per SNS `PublishBatch` and SQS `SendMessageBatch`.
const BATCH_SEND: u64 = 10;
/// The gather's multipart uploads send parts of this size (object_store's default).
const UPLOAD_PART: u64 = 5 * 1024 * 1024;
/// Chunk records a ledger `Query` page holds (1 MB pages, a chunk's item under 1 KB).
const CHUNKS_PER_PAGE: u64 = 1000;
/// Bytes per record assumed by `--estimate`, which reads no record.
pub const ASSUMED_RECORD_BYTES: u64 = 100;
/// How much larger a compressed input is decompressed, assumed by `--estimate`.
pub const ASSUMED_COMPRESSION: f64 = 3.5;
/// CPU time per record of the pipeline on one vCPU (release build, the orders job; see
/// BENCHMARKS.md), for the Lambda time estimate.
const CPU_PER_RECORD_S: f64 = 8e-6;

/// What a dry run learned of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shape {
    /// The inputs.
    pub inputs: Vec<ShapeInput>,
    /// Every chunk, in order.
    pub chunks: Vec<ShapeChunk>,
    /// What the sample showed.
    pub sample: Sample,
    /// True when the shape comes from object sizes alone (`--estimate`).
    pub estimated: bool,
    /// What the scan found wrong but not fatal (columns the job does not declare).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShapeInput {
    /// Its URL.
    pub location: String,
    /// Bytes as stored.
    pub bytes: u64,
    /// Records (estimated with `--estimate`).
    pub records: u64,
    /// Compressed (`gzip`, `zstd`) or `none`.
    pub compression: String,
}

/// One chunk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShapeChunk {
    /// Its input.
    pub input: u32,
    /// Decompressed bytes.
    pub bytes: u64,
    /// Records.
    pub records: u64,
    /// Inputs read for it: more than one when small inputs are packed into it.
    #[serde(default = "one")]
    pub reads: u64,
}

fn one() -> u64 {
    1
}

/// What the pipeline did with a sample of records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Records run through the pipeline.
    pub records: u64,
    /// Of them, written.
    pub written: u64,
    /// Rejected.
    pub rejected: u64,
    /// Filtered out by a transform.
    pub filtered: u64,
    /// Bytes of merged output they made (of a Parquet output: the sample's own Parquet file).
    pub output_bytes: u64,
    /// Rejects bytes they made.
    pub rejects_bytes: u64,
    /// Rejects by rule.
    pub rejects_by_rule: BTreeMap<String, u64>,
}

impl Sample {
    /// `n` as a share of the records sampled.
    fn share(&self, n: u64) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        n as f64 / self.records as f64
    }

    /// Records of `records` written.
    fn kept(&self, records: u64) -> u64 {
        (records as f64 * self.share(self.written)).round() as u64
    }

    /// Whether a chunk of `records` is likely to hold a reject.
    fn rejects_in(&self, records: u64) -> bool {
        1.0 - (1.0 - self.share(self.rejected)).powf(records as f64) >= 0.5
    }
}

/// Where and how a job would run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// Outputs in S3 (else a directory).
    pub bucket_s3: bool,
    /// Inputs in S3.
    pub inputs_s3: bool,
    /// Tasks in SQS (else in process).
    pub sqs: bool,
    /// The ledger in DynamoDB (else SQLite).
    pub dynamodb_ledger: bool,
    /// Who works the tasks.
    pub runner: Runner,
    /// The queue's visibility timeout, seconds: a worker extends it every half of it while it
    /// works a task.
    pub visibility_s: u64,
    /// The mean latency of a request to each service, for the Lambda time.
    #[serde(default)]
    pub latency: Latencies,
}

impl Deployment {
    /// The deployment backends named by URL make (`None`: the embedded one), with `runner`,
    /// and the queue's default visibility timeout.
    pub fn of(
        bucket: Option<&str>,
        queue: Option<&str>,
        ledger: Option<&str>,
        first_input: &str,
        runner: Runner,
    ) -> Self {
        let starts =
            |url: Option<&str>, prefixes: &[&str]| url.is_some_and(|u| prefixes.iter().any(|p| u.starts_with(p)));
        Deployment {
            bucket_s3: starts(bucket, &["s3://"]),
            inputs_s3: first_input.starts_with("s3://"),
            sqs: starts(queue, &["sqs://", "https://", "http://"]),
            dynamodb_ledger: starts(ledger, &["dynamodb://"]),
            runner,
            visibility_s: crate::backends::queue::DEFAULT_VISIBILITY.as_secs(),
            latency: Latencies::default(),
        }
    }
}

/// Who works a job's tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Runner {
    /// Worker processes (`sluicebox run`, `sluicebox worker`): the planner's process, if it
    /// works, knows the job; every other process loads it once.
    Workers {
        /// Workers in the planner's process (`run --workers N`); 0: it only submits the job.
        here: u32,
        /// Worker processes elsewhere (`sluicebox worker`) that take the job's tasks.
        elsewhere: u32,
        /// Workers in each of those.
        each: u32,
    },
    /// The Lambda functions of `deploy/aws/template.yaml`: on-object plans, on-task works
    /// one task per invocation; each warm container loads the job once.
    Lambda {
        /// Memory of the task function, MB.
        memory_mb: u32,
        /// `arm64` or `x86_64`.
        architecture: String,
        /// Task functions at once (the event source mapping's maximum concurrency).
        concurrency: u32,
    },
}

/// A job's forecast: its shape, requests, Lambda time and bill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forecast {
    /// What the dry run learned.
    pub shape: Shape,
    /// Where it runs.
    pub deployment: Deployment,
    /// Requests by `"service.Operation"`, as the summary's `api_calls` will count them.
    pub requests: ApiCalls,
    /// Requests per service.
    pub by_service: BTreeMap<String, u64>,
    /// Lambda invocations and time, when deployed on Lambda.
    pub lambda: Option<LambdaUsage>,
    /// Where that Lambda time goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_time: Option<LambdaTime>,
    /// What it costs at list prices.
    pub bill: Bill,
    /// The price table's region, date and origin.
    pub prices: String,
    /// What the forecast assumed.
    pub assumptions: Vec<String>,
    /// The load into a database table (PostgreSQL), which no price covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    /// What the dry run found wrong: a sample past a `[rejects]` threshold, columns the job
    /// does not declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Scan `inputs` as `run` would, and run the pipeline on the first chunk. Writes nothing to
/// the bucket, the ledger, the queue or the sink (a reference may be fetched into the data
/// directory, as a run does).
pub async fn dry_run(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>) -> Result<Shape> {
    if inputs.is_empty() {
        return Err(Error::config("INPUT", "no input objects (an empty directory?)"));
    }
    let (lookup, scanned) =
        tokio::join!(engine.open_lookup(spec.enrich.as_ref()), prepare::scan_inputs(engine, spec, inputs));
    let lookup = lookup?;
    let prepare::Scanned { inputs: planned, chunks, .. } = scanned?;
    let warnings = prepare::check_shapes(engine, spec, &planned, &chunks).await?;
    let output_fields = prepare::output_fields(spec, &planned, lookup.as_deref());
    let shape_inputs = planned
        .iter()
        .map(|i| ShapeInput {
            location: i.object.location.clone(),
            bytes: i.object.size,
            records: i.records,
            compression: compression_name(i.object.compression),
        })
        .collect();
    let shape_chunks = chunks
        .iter()
        .map(|c| ShapeChunk { input: c.input, bytes: c.bytes(), records: c.records, reads: 1 + c.more.len() as u64 })
        .collect();
    let plan = JobPlan {
        job_id: "plan".into(),
        output_format: spec.output_format(output_fields.is_some()),
        inputs: planned,
        chunks,
        output_fields,
        order: 1,
        warnings: Vec::new(),
    };
    let sample = match plan.chunks.first() {
        Some(first) => sample_chunk(engine, spec, &plan, first, lookup).await?,
        None => Sample::default(),
    };
    Ok(Shape { inputs: shape_inputs, chunks: shape_chunks, sample, estimated: false, warnings })
}

/// Run the pipeline on one chunk, with no sink.
async fn sample_chunk(
    engine: &Engine,
    spec: &JobSpec,
    plan: &JobPlan,
    chunk: &crate::input::plan::Chunk,
    lookup: Option<std::sync::Arc<crate::backends::lookup::LookupTable>>,
) -> Result<Sample> {
    let input = &plan.inputs[chunk.input as usize];
    let bytes = bucket::read_range(engine.inputs.clone(), &input.object, chunk.start, chunk.end).await?;
    let pipeline = Pipeline::new(spec, lookup, plan.output_fields.clone());
    let reading =
        pipeline.input(1, chunk.input, &input.object.location, input.object.format, input.header.as_deref())?;
    // The gather converts the parts (JSON Lines) of a Parquet job: the sample is converted
    // too, for the merged output's size, and a value that does not fit its column shows now.
    let parquet = match (plan.output_format, &plan.output_fields) {
        (crate::model::config::OutputFormat::Parquet, Some(fields)) => {
            Some(crate::engine::parquet::schema(spec, fields)?)
        }
        _ => None,
    };
    let (from, location) = (chunk.start(), input.object.location.clone());
    let (out, output_bytes) = tokio::task::spawn_blocking(move || {
        let mut discard = |_: Vec<SinkItem>| {};
        let out = pipeline.run_chunk(&reading, from, &bytes, Some((usize::MAX, &mut discard)))?;
        let output_bytes = match parquet {
            Some(schema) => {
                let mut encoder = crate::engine::parquet::ParquetEncoder::new(schema, usize::MAX);
                encoder.push_jsonl(&format!("the output of {location}'s first chunk"), &out.output)?;
                encoder.finish()?.len() as u64
            }
            None => out.output.len() as u64,
        };
        Ok::<_, Error>((out, output_bytes))
    })
    .await
    .map_err(|e| Error::internal("plan", "sample task failed", e))??;
    let c = out.counts;
    Ok(Sample {
        records: c.written + c.rejected + c.filtered,
        written: c.written,
        rejected: c.rejected,
        filtered: c.filtered,
        output_bytes,
        rejects_bytes: out.rejects.len() as u64,
        rejects_by_rule: c.rejects_by_rule,
    })
}

/// A shape from object sizes alone: records from an assumed record size, compressed inputs
/// from an assumed ratio, chunks from the job's chunking, every record written.
pub fn from_sizes(spec: &JobSpec, inputs: &[InputObject]) -> Shape {
    let mut chunks = Vec::new();
    let per_chunk = spec.chunking.bytes.get().div_ceil(ASSUMED_RECORD_BYTES);
    let per_chunk = spec.chunking.records.map_or(per_chunk, |r| r.get().min(per_chunk)).max(1);
    let shape_inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let compressed = matches!(o.compression, Compression::Gzip | Compression::Zstd);
            let bytes = if compressed { (o.size as f64 * ASSUMED_COMPRESSION) as u64 } else { o.size };
            let records = bytes.div_ceil(ASSUMED_RECORD_BYTES);
            let mut left = records;
            while left > 0 {
                let n = left.min(per_chunk);
                chunks.push(ShapeChunk { input: i as u32, bytes: n * ASSUMED_RECORD_BYTES, records: n, reads: 1 });
                left -= n;
            }
            ShapeInput {
                location: o.location.clone(),
                bytes: o.size,
                records,
                compression: compression_name(o.compression),
            }
        })
        .collect();
    let sample = Sample { records: 1, written: 1, output_bytes: ASSUMED_RECORD_BYTES, ..Sample::default() };
    Shape { inputs: shape_inputs, chunks, sample, estimated: true, warnings: Vec::new() }
}

fn compression_name(c: Compression) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{c:?}"))
}

/// The requests a job of `shape`, defined by `spec`, makes on `deployment`, as its summary
/// will count them.
pub fn requests(shape: &Shape, spec: &JobSpec, d: &Deployment) -> ApiCalls {
    let mut calls = Requests::default();
    let n = shape.chunks.len() as u64;
    let lambda = matches!(d.runner, Runner::Lambda { .. });
    let sample = &shape.sample;

    // Planning: the job's record, the scan (one streaming read per input), the stored
    // definition and plan, the tasks, and the planner's own tally.
    calls.ledger(d, "PutItem", 1);
    calls.ledger(d, "GetItem", 1);
    calls.ledger(d, "UpdateItem", 1);
    calls.ledger(d, "Query", 1);
    calls.inputs(d, "GetObject", shape.inputs.len() as u64);
    calls.bucket(d, "PutObject", 3);
    if d.sqs {
        calls.add("sqs.SendMessageBatch", n.div_ceil(BATCH_SEND));
    }
    if !matches!(d.runner, Runner::Workers { here: 1.., .. }) {
        // A submitter (on-object, `run` without workers) records what it sent (`sent.json`).
        calls.bucket(d, "PutObject", 1);
    }

    // Every process that did not plan the job loads it once: its definition and plan, and
    // its reference. A task's tally ends at its commit: the ledger's answer to the commit is
    // counted with the next task of the same work loop, so the last task of each loop (and
    // every task on Lambda, where a task is an invocation) does not count it.
    let (loaders, loops, serving) = match &d.runner {
        Runner::Workers { here, elsewhere, each } => {
            (u64::from(*elsewhere).min(n), u64::from(*here) + u64::from(*elsewhere) * u64::from(*each), *here == 0)
        }
        Runner::Lambda { concurrency, .. } => (u64::from(*concurrency).min(n), n, true),
    };
    calls.bucket(d, "GetObject", 2 * loaders);
    calls.reference(spec, d, loaders);

    calls.ledger(d, "GetItem", n - loops.min(n));
    // Every chunk: is it committed (and, on a worker serving any job, is its job still
    // running); its range read; its parts; its commit; its task's receive, heartbeats and
    // delete; its records into the sink.
    for c in &shape.chunks {
        calls.ledger(d, "GetItem", 1 + u64::from(serving));
        calls.ledger(d, "TransactWriteItems", 1);
        calls.inputs(d, "GetObject", c.reads);
        let kept = sample.kept(c.records);
        calls.bucket(d, "PutObject", u64::from(kept > 0) + u64::from(sample.rejects_in(c.records)));
        if d.sqs {
            if !lambda {
                calls.add("sqs.ReceiveMessage", 1);
            }
            calls.add("sqs.DeleteMessageBatch", 1);
            let seconds = task_time(spec, &d.latency, c.records, kept).seconds();
            calls.add("sqs.ChangeMessageVisibility", (seconds / (d.visibility_s as f64 / 2.0).max(1.0)) as u64);
        }
        calls.sink(spec, kept);
        calls.lookups(spec, c.records);
    }

    // The gather (its tally begins once it holds the lease): the job and its chunks, the steps
    // done, the merged output and rejects (a multipart upload each, reading every part), the
    // manifest, the planners' tallies and the summary.
    calls.ledger(d, "GetItem", 1);
    calls.ledger(d, "Query", n.div_ceil(CHUNKS_PER_PAGE).max(1));
    let records: u64 = shape.chunks.iter().map(|c| c.records).sum();
    let output_bytes = (records as f64 * sample.share(sample.output_bytes)) as u64;
    let rejects_bytes = (records as f64 * sample.share(sample.rejects_bytes)) as u64;
    let output_parts = shape.chunks.iter().filter(|c| sample.kept(c.records) > 0).count() as u64;
    let rejects_parts = shape.chunks.iter().filter(|c| sample.rejects_in(c.records)).count() as u64;
    calls.bucket(d, "GetObject", 1 + output_parts + rejects_parts + 1);
    calls.bucket(d, "ListObjectsV2", 1);
    calls.bucket(d, "CreateMultipartUpload", 2);
    calls.bucket(d, "UploadPart", output_bytes.div_ceil(UPLOAD_PART) + rejects_bytes.div_ceil(UPLOAD_PART));
    calls.bucket(d, "CompleteMultipartUpload", 2);
    let steps = 2 + u64::from(spec.sink.target.writes() || spec.sink.publish.is_some());
    calls.bucket(d, "PutObject", steps + 1 + 1);
    calls.0
}

/// Requests being added up, each only when its backend is a cloud one.
#[derive(Default)]
struct Requests(ApiCalls);

impl Requests {
    fn add(&mut self, op: &str, n: u64) {
        if n > 0 {
            *self.0.entry(op.to_string()).or_default() += n;
        }
    }

    fn ledger(&mut self, d: &Deployment, op: &str, n: u64) {
        if d.dynamodb_ledger {
            self.add(&format!("dynamodb.{op}"), n);
        }
    }

    fn bucket(&mut self, d: &Deployment, op: &str, n: u64) {
        if d.bucket_s3 {
            self.add(&format!("s3.{op}"), n);
        }
    }

    fn inputs(&mut self, d: &Deployment, op: &str, n: u64) {
        if d.inputs_s3 {
            self.add(&format!("s3.{op}"), n);
        }
    }

    /// A reference file: the planner reads one in a bucket, or ships one on its disk into an
    /// S3 bucket for the others (a `HeadObject`, and a `PutObject` the first time); every
    /// process that loads the job then reads it from the bucket.
    fn reference(&mut self, spec: &JobSpec, d: &Deployment, loaders: u64) {
        let Some(source) = spec.enrich.as_ref().map(|e| e.source.as_str()) else { return };
        if source.starts_with("dynamodb://") || source.starts_with("postgres://") {
            return;
        }
        let in_bucket = source.starts_with("s3://");
        if in_bucket {
            self.add("s3.GetObject", 1);
        } else if d.bucket_s3 && !source.starts_with("sqlite:") {
            self.add("s3.HeadObject", 1);
            self.add("s3.PutObject", 1);
        }
        if in_bucket || d.bucket_s3 {
            self.add("s3.GetObject", loaders);
        }
    }

    /// The sink's requests for `kept` records of one chunk.
    fn sink(&mut self, spec: &JobSpec, kept: u64) {
        if spec.sink.target.kind_name() == "dynamodb" {
            if spec.sink.ordered {
                // One conditional write per item, so an older job's write never replaces a newer.
                self.add("dynamodb.PutItem", kept);
            } else {
                // The pipeline hands the sink batches of `[sink] batch` items, each sent 25 at a time.
                let batch = (spec.sink.batch as u64).max(1);
                let requests = kept / batch * batch.div_ceil(BATCH_WRITE) + (kept % batch).div_ceil(BATCH_WRITE);
                self.add("dynamodb.BatchWriteItem", requests);
            }
        }
        if let Some(crate::model::config::PublishTarget::Sns(_)) = &spec.sink.publish {
            self.add("sns.PublishBatch", kept.div_ceil(BATCH_SEND));
        }
    }

    /// A DynamoDB reference's requests for a chunk of `records` (keys asked 100 at a time).
    fn lookups(&mut self, spec: &JobSpec, records: u64) {
        if spec.enrich.as_ref().is_some_and(|e| e.source.starts_with("dynamodb://")) {
            self.add("dynamodb.BatchGetItem", records.div_ceil(BATCH_GET));
        }
    }
}

/// The forecast of a job of `shape` on `deployment`, priced at `prices`.
pub fn forecast(shape: Shape, spec: &JobSpec, deployment: Deployment, prices: &Prices) -> Forecast {
    let requests = requests(&shape, spec, &deployment);
    let mut by_service = BTreeMap::new();
    for (op, n) in &requests {
        *by_service.entry(op.split('.').next().unwrap_or(op).to_string()).or_default() += n;
    }
    let (lambda, lambda_time) = match &deployment.runner {
        Runner::Lambda { memory_mb, architecture, .. } => {
            let time = lambda_time(&shape, spec, &requests, &deployment.latency);
            (Some(lambda_usage(&shape, &time, *memory_mb, architecture)), Some(time))
        }
        Runner::Workers { .. } => (None, None),
    };
    let written: u64 = shape.chunks.iter().map(|c| shape.sample.kept(c.records)).sum();
    let usage = Usage {
        requests: requests.clone(),
        batch_write_items: Some(written),
        units_per_item: 1.0,
        lambda: lambda.clone(),
    };
    let bill = crate::backends::cost::bill(&usage, prices);
    let mut assumptions = Vec::new();
    if shape.estimated {
        assumptions.push(format!(
            "from object sizes alone: {ASSUMED_RECORD_BYTES} bytes per record, compressed inputs \
             {ASSUMED_COMPRESSION}× larger decompressed, every record written"
        ));
    } else {
        assumptions.push(format!(
            "the first chunk's {} records stand for all: {:.2}% written, {:.2}% rejected",
            thousands(shape.sample.records),
            100.0 * shape.sample.share(shape.sample.written),
            100.0 * shape.sample.share(shape.sample.rejected)
        ));
    }
    assumptions.push("sink items under 1 KB (one write unit each); no free tier".into());
    if lambda.is_some() {
        let l = &deployment.latency;
        assumptions.push(format!(
            "Lambda time: {} µs of CPU per record and 30 µs per PutItem, 260 µs per BatchWriteItem, plus the sink's requests ÷ [sink] in_flight × {:.2} ms \
             (DynamoDB's mean), plus every other request one after another at its service's mean \
             (S3 {:.2} ms, SQS {:.2} ms, DynamoDB {:.2} ms)",
            CPU_PER_RECORD_S * 1e6,
            l.dynamodb_s * 1e3,
            l.s3_s * 1e3,
            l.sqs_s * 1e3,
            l.dynamodb_s * 1e3
        ));
        assumptions.push("the event source mapping's polls of the queue are AWS's, not counted here".into());
    }
    if deployment.sqs {
        assumptions.push("idle polls of an empty queue are not counted (they depend on time)".into());
    }
    let load = (spec.sink.target.kind_name() == "postgres").then(|| {
        let batch = (spec.sink.batch as u64).max(1);
        let copies: u64 = shape.chunks.iter().map(|c| shape.sample.kept(c.records).div_ceil(batch)).sum();
        // The table alone: `USER@HOST:PORT/DATABASE/TABLE?…` names it last.
        let target = spec.sink.target.table().unwrap_or_default();
        let table = target.split('?').next().unwrap_or_default().rsplit('/').next().unwrap_or_default();
        format!(
            "about {} rows into PostgreSQL table {table}: {} binary COPY statements (a chunk's rows, \
             {} at most each, from every worker at once) into the job's stage, then one publishing transaction",
            thousands(written),
            thousands(copies),
            thousands(batch)
        )
    });
    let mut warnings = shape.warnings.clone();
    let total: u64 = shape.inputs.iter().map(|i| i.records).sum();
    let sample = &shape.sample;
    if let Some((threshold, _, likely)) =
        spec.thresholds.sample_passes(sample.records, sample.rejected, total).filter(|_| !shape.estimated)
    {
        warnings.push(format!(
            "the sample already passes [rejects] {threshold} ({}): {} of its {} records rejected ({}); at that rate \
             about {} of the job's {} records would be, and the job would fail, loading nothing",
            spec.thresholds.describe(),
            thousands(sample.rejected),
            thousands(sample.records),
            crate::model::rejects::percent(sample.share(sample.rejected)),
            thousands(likely),
            thousands(total)
        ));
    }
    Forecast {
        warnings,
        lambda_time,
        load,
        prices: format!("{} prices of {} ({})", prices.region, prices.as_of, prices.from),
        shape,
        deployment,
        requests,
        by_service,
        lambda,
        bill,
        assumptions,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn spread(values: impl Iterator<Item = u64> + Clone) -> (u64, u64) {
    (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
}

impl std::fmt::Display for Forecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.shape;
        let records: u64 = s.inputs.iter().map(|i| i.records).sum();
        let bytes: u64 = s.inputs.iter().map(|i| i.bytes).sum();
        let how = if s.estimated { "estimated from object sizes" } else { "scanned" };
        writeln!(f, "inputs:   {} ({}), {} records ({how})", s.inputs.len(), mib(bytes), thousands(records))?;
        let (rmin, rmax) = spread(s.chunks.iter().map(|c| c.records));
        let (bmin, bmax) = spread(s.chunks.iter().map(|c| c.bytes));
        let range = |lo: String, hi: String| if lo == hi { lo } else { format!("{lo}–{hi}") };
        writeln!(
            f,
            "chunks:   {}, {} records and {} KiB each",
            thousands(s.chunks.len() as u64),
            range(thousands(rmin), thousands(rmax)),
            range(format!("{:.0}", bmin as f64 / 1024.0), format!("{:.0}", bmax as f64 / 1024.0))
        )?;
        if !s.estimated && s.sample.records > 0 {
            let rules: Vec<String> = s.sample.rejects_by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(
                f,
                "sample:   the first chunk's {} records: {} written, {} rejected{}, {} filtered",
                thousands(s.sample.records),
                thousands(s.sample.written),
                thousands(s.sample.rejected),
                if rules.is_empty() { String::new() } else { format!(" ({})", rules.join(", ")) },
                thousands(s.sample.filtered)
            )?;
        }
        if let Some(load) = &self.load {
            writeln!(f, "load:     {load}")?;
        }
        let total: u64 = self.requests.values().sum();
        if total == 0 {
            writeln!(f, "requests: none (every backend is embedded: nothing to pay per request)")?;
        } else {
            let per = if records > 0 { total as f64 / records as f64 } else { 0.0 };
            writeln!(f, "requests: {} ({per:.4} per record), as the job's summary will count them", thousands(total))?;
            for (service, n) in &self.by_service {
                let ops: Vec<String> = self
                    .requests
                    .iter()
                    .filter(|(op, _)| op.split('.').next() == Some(service.as_str()))
                    .map(|(op, n)| format!("{} {}", op.split_once('.').map_or(op.as_str(), |(_, o)| o), thousands(*n)))
                    .collect();
                writeln!(f, "  {service:<9}{:>12}  {}", thousands(*n), ops.join(", "))?;
            }
        }
        if let Some(l) = &self.lambda {
            writeln!(
                f,
                "lambda:   {} invocations, {:.0} GB-s ({})",
                thousands(l.invocations),
                l.gb_seconds,
                l.architecture
            )?;
        }
        if let Some(t) = &self.lambda_time {
            writeln!(
                f,
                "  time    {:.1} s = CPU {:.1} s + sink {} requests ÷ {} in flight × {:.2} ms = {:.1} s \
                 + {} other requests one after another {:.1} s",
                t.seconds(),
                t.cpu_s,
                thousands(t.sink_requests),
                t.in_flight,
                t.sink_latency_s * 1e3,
                t.sink_s(),
                thousands(t.other_requests),
                t.other_s
            )?;
        }
        writeln!(f, "cost:     {} at {}", crate::backends::cost::dollars(self.bill.total_usd), self.prices)?;
        for (item, b) in self.bill.by_item.iter().filter(|(_, b)| b.usd > 0.0) {
            writeln!(
                f,
                "  {item:<25}{:>14} units  {}",
                thousands(b.units.round() as u64),
                crate::backends::cost::dollars(b.usd)
            )?;
        }
        for a in &self.assumptions {
            writeln!(f, "assumed:  {a}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning:  {w}")?;
        }
        Ok(())
    }
}
