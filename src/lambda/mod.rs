//! AWS Lambda entry points (feature `lambda`): the handlers are plain async functions on a
//! [`Function`], which the thin mains in `src/bin/sluicebox-on-*.rs` hand to
//! `lambda_runtime`, and which tests call in-process with real event JSON.
//!
//! - [`Function::on_object`]: an S3 `ObjectCreated` event, delivered directly, through SQS or
//!   through SNS, plans the object's job and enqueues its tasks. `s3:TestEvent`, other events
//!   and repeated events for the same object version do nothing (see [`crate::batch::watch`]).
//! - [`Function::on_task`]: a batch of SQS task messages is worked, and only the tasks not
//!   done come back as partial batch failures (`ReportBatchItemFailures`). The invocation's
//!   remaining time is watched: a task that cannot finish in it is not started, and one in
//!   hand when the time is nearly up is given back, every effect so far being idempotent. The
//!   commit that completes a job runs its gather; a gather cut off by the deadline lets its
//!   lease run out, and the task given back (visible again after the lease's length) has the
//!   next invocation continue it from the steps recorded done.
//! - [`Function::on_stream`]: a batch of Kinesis records from an event source mapping is
//!   written into files under `SLUICEBOX_STREAM_TO` by [`Stream::run`](crate::stream::Stream::run) with
//!   `Source::Batch`, one consumer (one checkpoint document in the ledger) per shard, named
//!   `STREAM/SHARD`, so that invocations on different shards never contend. Before it returns,
//!   every record of the batch is in a file, or was found already in one (the consumer's
//!   checkpoint and covered ranges): a retried batch, or one overlapping an earlier one, writes
//!   nothing twice. A shard whose run fails comes back as a partial batch failure naming its
//!   batch's first sequence number, from which the mapping retries it; other shards' results
//!   stand. Lambda's buffering is the mapping's batching window: a batch is at most
//!   `BatchSize` records gathered for at most `MaximumBatchingWindowInSeconds`, and the job
//!   file's `[stream]` limits cut it into files within that. The mapping's
//!   `ParallelizationFactor` must stay 1 (one invocation per shard at a time): with more, a
//!   shard's records are split by partition key between concurrent batches, and a shard's
//!   checkpoint (every record at or before it is in a file) would pass over the records of
//!   another batch still in flight. Its retries are bounded (`StreamMaxRetries`, with bisect on
//!   an invocation's error): a batch that still fails then goes, as metadata, to the stream's
//!   dead-letter queue for a person, instead of wedging its shard. A record that cannot be
//!   written (a partition value too long for a key, say) is a reject in `errors/`, never a
//!   failed batch. A batch that outlasts the invocation ends it with a timeout, and the
//!   mapping retries the whole batch, skipping what is already in files.
//!
//! - [`Function::on_messages`]: a batch of SQS messages (one JSON object each) from an SQS
//!   event source mapping goes the same way, into files and the job's sink (seed 003 on the
//!   stack: queue → function → table). Its records are numbered in the batch, so each
//!   invocation's files are named apart, and a message delivered twice within the batch goes in
//!   once. The answer names the messages not accounted for (`ReportBatchItemFailures`), which
//!   the queue delivers again; Lambda deletes the others. [`Function::on_stream_event`] takes a
//!   Kinesis or an SQS event, as the on-stream function is given either.
//!
//! Warm invocations share what a cold start loaded: the clients, the job definition (read
//! from the bucket again only when its ETag changes), the jobs' plans and references. Nothing
//! is written outside the scratch directory (`SLUICEBOX_SCRATCH`, in the function's ephemeral
//! storage), whose use is bounded by `SLUICEBOX_SCRATCH_LIMIT_MB`.
//!
//! Settings come from the environment (the SAM template in `deploy/aws/` sets them):
//!
//! | variable | meaning |
//! |---|---|
//! | `SLUICEBOX_BUCKET` | `s3://BUCKET[/PREFIX]`: where jobs' objects go (required) |
//! | `SLUICEBOX_QUEUE` | the task queue, `sqs://NAME` or its URL (required) |
//! | `SLUICEBOX_LEDGER` | `dynamodb://TABLE` (required) |
//! | `SLUICEBOX_JOB` | `s3://BUCKET/KEY` of the job file (TOML), for on-object and on-stream (its `[stream]`) |
//! | `SLUICEBOX_STREAM_TO` | `s3://BUCKET/PREFIX`: where on-stream writes the stream's files (required for on-stream) |
//! | `SLUICEBOX_INPUT_PREFIX` | `s3://BUCKET/PREFIX`: objects created under it start jobs, for on-object |
//! | `SLUICEBOX_ARCHIVE_PREFIX` | `s3://BUCKET/PREFIX`: the only place a job file's `[archive] to` may name (the functions may write nowhere else outside the results) |
//! | `SLUICEBOX_SINK` | `dynamodb://TABLE` or `none`, over the job file's `[sink]` |
//! | `SLUICEBOX_SINK_WRITERS` | functions writing the sink table at once (the task mapping's `MaxConcurrency`), over the job file's `[sink] writers`: each paces its writes at a provisioned table's capacity divided by this |
//! | `SLUICEBOX_CHUNK_MIB` | target chunk size, over the job file's `[chunking] bytes` |
//! | `SLUICEBOX_ENRICH_TABLE` | `dynamodb://TABLE`: the only table a job file's `[enrich] source` may name (the role reads no other), or `none`; unset: any |
//! | `SLUICEBOX_NOTIFY` | targets told how every job ends, comma-separated (`sns://TOPIC_ARN`, `ses://ADDRESS`, `https://…`; empty entries skipped), besides the job file's `[[notify]]` (a target in both is told once) |
//! | `SLUICEBOX_NOTIFY_FROM` | the sender of e-mail notifications in `SLUICEBOX_NOTIFY` (required with `ses://`) |
//! | `SLUICEBOX_SCRATCH` | scratch directory (default `/tmp/sluicebox`) |
//! | `SLUICEBOX_SCRATCH_LIMIT_MB` | the most it may hold (default 512) |
//! | `SLUICEBOX_MAX_ATTEMPTS` | deliveries of a task before its job fails (default 3; keep it below the queue's `maxReceiveCount`) |
//! | `SLUICEBOX_TASK_SECONDS` | time a task needs, before one has been timed here (default 0: start any task while time is left) |
//! | `SLUICEBOX_WORKERS` | tasks of a batch worked at once (default: the function's cores) |
//! | `SLUICEBOX_VISIBILITY_SECS` | the task queue's visibility timeout (default 5400) |
//! | `SLUICEBOX_LINK_HOURS` | how long presigned links in notifications work (default 24, at most 168) |
//! | `SLUICEBOX_ALLOW_PRIVATE_ENDPOINTS` | `true`: webhooks may use `http` and internal addresses (default: refused) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use object_store::GetOptions;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backends::calls::Tally;
use crate::backends::cloud::Cloud;
use crate::backends::lookup::LookupTable;
use crate::batch::job::redrive::REDRIVE_DIR;
use crate::batch::job::RunOptions;
use crate::batch::watch::{self, Outcome};
use crate::engine::spec::JobSpec;
use crate::engine::{BackendUrls, Engine};
use crate::error::{Error, Result};
use crate::model::config::JobConfig;

mod redrive;
mod settings;
mod stream;
use crate::batch::worker::{self, Disposition, Jobs};
pub use settings::{within_reach, Settings};

/// An error as a handler reports it to Lambda: its type says whether retrying may help
/// (`sluicebox::Retryable` or `sluicebox::Permanent`), so that logs, metrics and failure
/// destinations can tell them apart.
pub fn diagnostic(e: Error) -> lambda_runtime::Diagnostic {
    let error_type = if e.is_retryable_with_same_settings() { "sluicebox::Retryable" } else { "sluicebox::Permanent" };
    lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
}

/// A job definition, and its reference loaded.
type LookupFor = (Arc<JobSpec>, Option<Arc<LookupTable>>);

/// What a function keeps between warm invocations.
pub struct Function {
    settings: Settings,
    engine: Engine,
    opts: RunOptions,
    /// Jobs loaded by earlier invocations.
    jobs: Jobs,
    /// The job file's ETag and what it defines.
    spec: tokio::sync::Mutex<Option<(String, Arc<JobSpec>)>>,
    /// The reference of the job a stream runs, loaded for that definition.
    stream_lookup: tokio::sync::Mutex<Option<LookupFor>>,
    /// The longest a task has taken here, ms.
    longest_task_ms: AtomicU64,
}

/// How long before its deadline an invocation stops working and gives tasks back.
fn margin(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(200), Duration::from_secs(10))
}

impl Function {
    /// A function with `settings`, reaching AWS with `cloud`.
    pub async fn new(settings: Settings, cloud: Cloud) -> Result<Function> {
        std::fs::create_dir_all(&settings.scratch).map_err(|e| {
            Error::config("SLUICEBOX_SCRATCH", format!("cannot create {}: {e}", settings.scratch.display()))
        })?;
        let urls = BackendUrls {
            bucket: Some(settings.bucket.clone()),
            queue: Some(settings.queue.clone()),
            ledger: Some(settings.ledger.clone()),
            visibility: settings.visibility,
        };
        let first_input = settings.input_prefix.clone().unwrap_or_else(|| settings.bucket.clone());
        let engine = Engine::with_backends(&settings.scratch, &urls, &first_input, cloud).await?;
        Ok(Function::with_engine(settings, engine))
    }

    /// A function with `settings` on `engine` (built from them, perhaps with a sink layer).
    pub fn with_engine(settings: Settings, mut engine: Engine) -> Function {
        engine.scratch_limit = Some(settings.scratch_limit);
        engine.notify = settings.notify.clone();
        let name = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .ok()
            .and_then(|s| s.rsplit(']').next().map(str::to_string))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{}-{:04x}", std::process::id(), fastrand::u16(..)));
        let opts = RunOptions {
            visibility: settings.visibility,
            max_attempts: settings.max_attempts,
            worker_name: format!("lambda-{}", &name[..name.len().min(12)]),
            ..RunOptions::default()
        };
        // Buckets and tables only: a plan naming a file would be read from the function's disk.
        let allow = crate::batch::job::worker_allow(Vec::new());
        let jobs = Jobs::serve(engine.clone(), allow, CancellationToken::new(), CancellationToken::new());
        Function {
            longest_task_ms: AtomicU64::new(settings.task_time.as_millis() as u64),
            settings,
            engine,
            opts,
            jobs,
            spec: Default::default(),
            stream_lookup: Default::default(),
        }
    }

    /// The engine the function runs jobs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The job definition in `SLUICEBOX_JOB`, read again only when its ETag has changed.
    /// What the function's settings put over a job file's (the sink, chunk size, writers).
    fn overrides(&self) -> crate::engine::spec::Overrides {
        crate::engine::spec::Overrides {
            sink: self.settings.sink.clone().map(|url| (url, "SLUICEBOX_SINK")),
            chunk_mib: self.settings.chunk_mib,
            sink_writers: self.settings.sink_writers,
        }
    }

    async fn spec(&self) -> Result<Arc<JobSpec>> {
        let url = self.settings.job.as_deref().ok_or_else(|| {
            Error::config("SLUICEBOX_JOB", "is not set: on-object and on-stream need the job file's s3://BUCKET/KEY")
        })?;
        let store = crate::backends::bucket::input_store(url, &self.engine.cloud)?;
        let key = url.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(_, k)| k).unwrap_or_default();
        let mut cached = self.spec.lock().await;
        let options =
            GetOptions { if_none_match: cached.as_ref().map(|(etag, _)| etag.clone()), ..GetOptions::default() };
        let got = match store.get_opts(&crate::backends::bucket::key_path(key), options).await {
            Err(object_store::Error::NotModified { .. }) => {
                if let Some((_, spec)) = cached.as_ref() {
                    return Ok(spec.clone());
                }
                return Err(Error::config("SLUICEBOX_JOB", format!("{url} answered 'not modified' to a first read")));
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::config("SLUICEBOX_JOB", format!("{url} does not exist")));
            }
            Err(e) => {
                return Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {url}"), e))
            }
            Ok(got) => got,
        };
        let etag = got.meta.e_tag.clone().unwrap_or_default();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {url}"), e))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::config("SLUICEBOX_JOB", format!("{url} is not UTF-8 text")))?;
        let config = JobConfig::from_toml(&text, url)?;
        within_reach(&config, &self.settings)?;
        let spec = Arc::new(self.overrides().apply(config.resolve(&self.settings.scratch)?)?.check()?);
        *cached = Some((etag, spec.clone()));
        Ok(spec)
    }

    /// Handle an S3 event (direct, or in an SQS or SNS event): start a job for every object
    /// created under `SLUICEBOX_INPUT_PREFIX`. Through SQS it answers with the messages to
    /// retry (`batchItemFailures`); otherwise with what became of each object, or an error
    /// (retried by Lambda, then sent to the function's failure destination).
    pub async fn on_object(&self, event: Value) -> Result<Value> {
        let prefix =
            self.settings.input_prefix.as_deref().ok_or_else(|| {
                Error::config("SLUICEBOX_INPUT_PREFIX", "is not set: on-object needs s3://BUCKET/PREFIX")
            })?;
        let records = event.get("Records").and_then(Value::as_array).cloned().unwrap_or_default();
        let source = |r: &Value| {
            r.get("eventSource").or_else(|| r.get("EventSource")).and_then(Value::as_str).unwrap_or("").to_string()
        };
        if !records.is_empty() && records.iter().all(|r| source(r) == "aws:sqs") {
            // A batch of queue messages: each body is an S3 notification (or an SNS envelope).
            let mut response = SqsBatchResponse::default();
            for r in &records {
                let id = r.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string();
                let body = r.get("body").and_then(Value::as_str).unwrap_or_default();
                if let Err(e) = self.start_all(body, prefix).await {
                    response.add_failure(id);
                    log_failure("cannot start a job for an event; the message will be retried", &e);
                }
            }
            return serde_json::to_value(response).map_err(|e| Error::internal("json", "batch response", e));
        }
        let mut outcomes = Vec::new();
        if !records.is_empty() && records.iter().all(|r| source(r) == "aws:sns") {
            for r in &records {
                let message = r.pointer("/Sns/Message").and_then(Value::as_str).unwrap_or_default();
                outcomes.extend(self.start_all(message, prefix).await?);
            }
        } else {
            outcomes = self.start_all(&event.to_string(), prefix).await?;
        }
        Ok(outcomes_json(&outcomes))
    }

    /// Start the jobs of every object-created event in one notification.
    async fn start_all(&self, notification: &str, prefix: &str) -> Result<Vec<Outcome>> {
        let events = watch::parse_events(notification);
        if events.is_empty() {
            info!("no object created in this notification (e.g. s3:TestEvent); nothing to do");
            return Ok(vec![Outcome::Ignored { reason: "no ObjectCreated event".into() }]);
        }
        let spec = self.spec().await?;
        // Its tasks are worked by other invocations: the sink must be one they all reach.
        crate::batch::job::run::needs_shared_sink(&spec)?;
        let (bucket, key_prefix) = watch::split_prefix(prefix, "SLUICEBOX_INPUT_PREFIX")?;
        let mut outcomes = Vec::new();
        for ev in events {
            let below = ev.key.strip_prefix(key_prefix).filter(|_| ev.bucket == bucket);
            if let Some(name) = below.and_then(|k| k.strip_prefix(REDRIVE_DIR)) {
                if ev.event.starts_with("ObjectCreated") && !name.is_empty() {
                    outcomes.push(self.redrive_upload(&format!("s3://{}/{}", ev.bucket, ev.key), name).await?);
                    continue;
                }
            }
            let outcome = watch::start(&self.engine, &spec, &ev, bucket, key_prefix, &self.opts).await?;
            info!(?outcome, "object event handled");
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Work a batch of task messages within `remaining` (the invocation's time left), and
    /// answer with the ones to come back (`batchItemFailures`).
    pub async fn on_task(&self, event: SqsEvent, remaining: Duration) -> SqsBatchResponse {
        let started = Instant::now();
        let stop_at = started + remaining.saturating_sub(margin(remaining));
        let abort = CancellationToken::new();
        let jobs = self.jobs.with_tokens(CancellationToken::new(), abort.clone());
        let timer = {
            let abort = abort.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(stop_at.into()).await;
                abort.cancel();
            })
        };
        let failures: Vec<String> = futures::stream::iter(event.records)
            .map(|m| self.one_task(&jobs, m, stop_at, &abort))
            .buffer_unordered(self.settings.workers)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        timer.abort();
        if !failures.is_empty() {
            info!(given_back = failures.len(), "tasks to come back");
        }
        let mut response = SqsBatchResponse::default();
        failures.into_iter().for_each(|id| response.add_failure(id));
        response
    }

    /// Work one task message: `None` when it is done (Lambda deletes it), else its id, to come
    /// back.
    async fn one_task(
        &self,
        jobs: &Jobs,
        m: SqsMessage,
        stop_at: Instant,
        abort: &CancellationToken,
    ) -> Option<String> {
        let id = m.message_id.clone().unwrap_or_default();
        let (Some(receipt), Some(body)) = (m.receipt_handle.as_deref(), m.body.as_deref()) else {
            warn!(message = %id, "a task message without a body or receipt handle: dropped");
            return None;
        };
        let attempt = m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let queue = self.engine.queue.clone();
        let needs = Duration::from_millis(self.longest_task_ms.load(Ordering::Relaxed));
        if abort.is_cancelled() || Instant::now() + needs > stop_at {
            // Not enough time left for it: back at once, for another invocation.
            if let Err(e) = queue.release(receipt).await {
                warn!(message = %id, "cannot give a task back (it returns after its visibility timeout): {e}");
            }
            return Some(id);
        }
        let begun = Instant::now();
        let tally = Tally::default();
        // Kept invisible while it is worked, should a task outlast the queue's visibility
        // timeout (the template makes that six times the function's timeout, so it does not).
        let heartbeat = worker::keep_invisible(queue.clone(), receipt, self.settings.visibility, &tally);
        let handled =
            tally.scope(worker::work_task(jobs, &self.opts.worker_name, body, attempt, &self.opts, &tally)).await;
        drop(heartbeat);
        if !abort.is_cancelled() {
            self.longest_task_ms.fetch_max(begun.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let disposition = match handled.disposition {
            // Cut off by the deadline, perhaps in a gather: back once the gather lease it may
            // hold has run out, so that the next invocation can take the gather over.
            Disposition::Release { delay } if abort.is_cancelled() && delay.is_zero() => {
                Disposition::Release { delay: crate::batch::gather::GATHER_LEASE + Duration::from_secs(1) }
            }
            other => other,
        };
        if let Some(e) = &handled.error {
            log_failure("task failed", e);
        }
        if disposition == Disposition::Ack {
            return None;
        }
        if let Err(e) = worker::apply(&self.engine, queue.as_ref(), receipt, &disposition).await {
            warn!(message = %id, "cannot act on a task's message ({disposition:?}): {e}");
        }
        Some(id)
    }
}

fn log_failure(what: &str, e: &Error) {
    if e.is_retryable_with_same_settings() {
        warn!(retryable = true, "{what}: {e}");
    } else {
        error!(retryable = false, "{what}: {e}");
    }
}

/// What became of each object, as a handler's answer.
fn outcomes_json(outcomes: &[Outcome]) -> Value {
    let list = |pick: &dyn Fn(&Outcome) -> Option<Value>| Value::Array(outcomes.iter().filter_map(pick).collect());
    serde_json::json!({
        "started": list(&|o| match o {
            Outcome::Started { input, job_id } => Some(serde_json::json!({"input": input, "job_id": job_id})),
            _ => None,
        }),
        "repeated": list(&|o| match o {
            Outcome::Repeated { input, job_id } => Some(serde_json::json!({"input": input, "job_id": job_id})),
            _ => None,
        }),
        "ignored": list(&|o| match o {
            Outcome::Ignored { reason } => Some(Value::String(reason.clone())),
            _ => None,
        }),
    })
}

/// Logs as Lambda wants them: no colours, no timestamps (CloudWatch adds its own), the level
/// from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).without_time().try_init();
}

/// A function from this process's environment, reaching AWS with the SDK's own configuration
/// (the function's role); with `SLUICEBOX_SIMULATED_LATENCY`'s latency when it is set (a test
/// and bench tool).
pub async fn from_env() -> Result<Function> {
    let settings = Settings::from_env()?;
    Function::new(settings, Cloud::aws_from_env(crate::backends::aws::sdk_config(None).await)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_job_file_is_reported_permanent_and_a_backend_error_retryable() {
        let kind = |e: Error| diagnostic(e).error_type;
        assert_eq!(kind(Error::config("SLUICEBOX_JOB", "does not exist")), "sluicebox::Permanent");
        assert_eq!(kind(Error::input("s3://b/k", "changed")), "sluicebox::Permanent");
        assert_eq!(kind(Error::backend(crate::error::Backend::Sqs, "send", "throttled")), "sluicebox::Retryable");
    }

    #[test]
    fn the_margin_before_the_deadline_is_a_tenth_within_bounds() {
        assert_eq!(margin(Duration::from_secs(900)), Duration::from_secs(10));
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(3));
        assert_eq!(margin(Duration::from_millis(500)), Duration::from_millis(200));
    }
}
