//! `run`, `plan` and `test`: a batch job run (or submitted), forecast, or tried on its cases.

use std::path::PathBuf;

use serde::Serialize;

use super::{bar, cores, engine, Backends, JobFiles, CHUNKS_BAR, RECORDS_BAR};
use crate::backends::bucket;
use crate::batch::job::{self, RunOptions, Submitted, Summary};
use crate::engine::spec::Overrides;
use crate::error::{Error, Result};
use crate::tools::check::TestResult;
use crate::tools::forecast::{self, Deployment, Forecast};

/// `sluicebox run`.
#[derive(Debug, Clone)]
pub struct Run {
    /// The job.
    pub job: JobFiles,
    /// The backends.
    pub backends: Backends,
    /// Workers in this process (default: the cores; with a shared queue, none: submit only).
    pub workers: Option<usize>,
    /// The job id (default: from the inputs and the job definition).
    pub job_id: Option<String>,
    /// Discard an earlier run of the job and run it anew.
    pub force: bool,
    /// With a shared queue: follow the submitted job until it completes.
    pub wait: bool,
    /// Draw progress bars on standard error.
    pub progress: bool,
}

/// What `run` did: ran the job to its summary, or submitted it for workers elsewhere.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Ran {
    /// The job ran here (or was already complete, or was followed with `--wait`).
    Done(Summary),
    /// The job was planned and its tasks sent.
    Submitted(Submitted),
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ran::Done(summary) => summary.fmt(f),
            Ran::Submitted(s) => writeln!(
                f,
                "job {} submitted: {} records in {} chunks, {} tasks sent (follow it with --wait)",
                s.job_id, s.records, s.chunks, s.tasks_sent
            ),
        }
    }
}

/// Workers to run in this process: as asked, else the cores, or none with a shared queue
/// (submit only); `--wait` only makes sense with a shared queue.
fn workers_here(asked: Option<usize>, wait: bool, shared: bool) -> Result<usize> {
    if wait && !shared {
        return Err(Error::config("--wait", "only with a shared queue (--queue sqs://…); a local run always waits"));
    }
    match (asked, shared) {
        (Some(0), false) => Err(Error::config("--workers", "must be at least 1")),
        (Some(n), _) => Ok(n),
        (None, true) => Ok(0),
        (None, false) => Ok(cores()),
    }
}

/// Run (or resume) a job here, or submit it to a shared queue.
pub async fn run(r: Run) -> Result<Ran> {
    let spec = crate::engine::spec::load(r.job.config.as_deref(), &r.backends.overrides())?;
    let workers = workers_here(r.workers, r.wait, r.backends.shared_queue())?;
    if workers == 0 {
        job::run::needs_shared_sink(&spec)?;
    }
    let urls = r.backends.urls();
    let mut engine = engine(&r.job.data_dir, &urls, &r.job.inputs[0]).await?;
    engine.notify = r.backends.notify()?;
    let (format, compression) = (spec.input.format, spec.input.compression);
    let inputs = bucket::resolve_inputs(engine.inputs.as_ref(), &r.job.inputs, format, compression).await?;
    let inputs = crate::batch::watch::without_markers(&spec, inputs);
    let opts = RunOptions {
        workers,
        job_id: r.job_id,
        force: r.force,
        visibility: urls.visibility,
        progress: bar(r.progress, RECORDS_BAR),
        ..RunOptions::default()
    };
    run_or_submit(&engine, &spec, inputs, &opts, r.wait, r.progress).await
}

/// Run the job here (`opts.workers` > 0), or submit it and, with `wait`, follow it.
async fn run_or_submit(
    engine: &crate::engine::Engine,
    spec: &crate::engine::spec::JobSpec,
    inputs: Vec<bucket::InputObject>,
    opts: &RunOptions,
    wait: bool,
    progress: bool,
) -> Result<Ran> {
    if opts.workers > 0 {
        let summary = job::run(engine, spec, inputs, opts).await;
        opts.progress.finish_and_clear();
        return summary.map(Ran::Done);
    }
    let submitted = job::submit(engine, spec, inputs, opts).await?;
    match (&submitted.summary, wait) {
        (Some(summary), _) => Ok(Ran::Done(summary.clone())),
        (None, true) => {
            let chunks = bar(progress, CHUNKS_BAR);
            let summary = job::wait(engine, &submitted.job_id, &chunks).await;
            chunks.finish_and_clear();
            summary.map(Ran::Done)
        }
        (None, false) => Ok(Ran::Submitted(submitted)),
    }
}

/// `sluicebox redrive`.
#[derive(Debug, Clone)]
pub struct Redrive {
    /// The completed job whose rejected records are taken again.
    pub job_id: String,
    /// A corrected job file (default: the job's own definition, as stored with it).
    pub config: Option<PathBuf>,
    /// Where the embedded bucket, ledger and sink live.
    pub data_dir: PathBuf,
    /// The backends the job ran on (its bucket, ledger; a queue to submit the redrive to).
    pub backends: Backends,
    /// Workers in this process (default: the cores; with a shared queue, none: submit only).
    pub workers: Option<usize>,
    /// With a shared queue: follow the redrive until it ends.
    pub wait: bool,
    /// Draw progress bars on standard error.
    pub progress: bool,
}

/// Take the rejected records of a completed job, and only those, through the corrected job
/// file (or the job's own definition) as a new job linked to it
/// ([`crate::batch::job::redrive`]), run here or submitted like any job.
pub async fn redrive(r: Redrive) -> Result<Ran> {
    let workers = workers_here(r.workers, r.wait, r.backends.shared_queue())?;
    let urls = r.backends.urls();
    let mut engine = engine(&r.data_dir, &urls, r.backends.bucket.as_deref().unwrap_or("")).await?;
    engine.notify = r.backends.notify()?;
    let redriving = job::redrive::prepare(&engine, &r.job_id).await?;
    let definition = match &r.config {
        Some(path) => {
            crate::model::config::JobConfig::load(path)?.resolve(path.parent().unwrap_or(std::path::Path::new(".")))?
        }
        None => redriving.definition.clone(),
    };
    let definition = job::redrive::definition(r.backends.overrides().apply(definition)?, redriving.redrive.clone());
    let spec = definition.check()?;
    if workers == 0 {
        job::run::needs_shared_sink(&spec)?;
    }
    engine.inputs = bucket::input_store(&redriving.inputs[0], &engine.cloud)?;
    let compression = crate::model::config::Compression::None;
    let inputs =
        bucket::resolve_inputs(engine.inputs.as_ref(), &redriving.inputs, spec.input.format, compression).await?;
    let opts = RunOptions {
        workers,
        visibility: urls.visibility,
        progress: bar(r.progress, RECORDS_BAR),
        ..RunOptions::default()
    };
    run_or_submit(&engine, &spec, inputs, &opts, r.wait, r.progress).await
}

/// Where `plan` forecasts the job to run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Worker processes: `here` in this one (default: the cores; none with a shared queue),
    /// `elsewhere` others (default: 1 when this one only submits), `each` workers in each.
    Workers {
        /// Workers in this process.
        here: Option<u32>,
        /// Worker processes elsewhere.
        elsewhere: Option<u32>,
        /// Workers in each of those.
        each: Option<u32>,
    },
    /// The Lambda functions of `deploy/aws/template.yaml` (an S3 bucket, an SQS queue and a
    /// DynamoDB ledger unless others are named).
    Lambda {
        /// The task function's memory, MB.
        memory_mb: u32,
        /// `arm64` or `x86_64`.
        architecture: String,
        /// Task functions at once.
        concurrency: u32,
    },
}

/// `sluicebox plan`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job.
    pub job: JobFiles,
    /// The backends it would run on.
    pub backends: Backends,
    /// Read only the listing (records and chunks from object sizes).
    pub estimate: bool,
    /// Where it would run.
    pub runner: Runner,
    /// A price table instead of the bundled one.
    pub prices: Option<PathBuf>,
}

/// Forecast a job: its shape from a dry run (or from sizes), its requests and their cost.
pub async fn plan(p: Plan) -> Result<Forecast> {
    let spec = crate::engine::spec::load(p.job.config.as_deref(), &p.backends.overrides())?;
    let prices = match &p.prices {
        Some(path) => crate::backends::cost::Prices::load(path)?,
        None => crate::backends::cost::Prices::bundled(),
    };
    let b = &p.backends;
    let (lambda, runner) = match p.runner {
        Runner::Lambda { memory_mb, architecture, concurrency } => {
            (true, forecast::Runner::Lambda { memory_mb, architecture, concurrency })
        }
        Runner::Workers { here, elsewhere, each } => {
            let here = here.unwrap_or(if b.shared_queue() { 0 } else { cores() as u32 });
            let elsewhere = elsewhere.unwrap_or(u32::from(here == 0));
            (false, forecast::Runner::Workers { here, elsewhere, each: each.unwrap_or(cores() as u32) })
        }
    };
    fn or_aws<'a>(url: &'a Option<String>, lambda: bool, aws: &'static str) -> Option<&'a str> {
        url.as_deref().or(lambda.then_some(aws))
    }
    let bucket = or_aws(&b.bucket, lambda, "s3://");
    let (queue, ledger) = (or_aws(&b.queue, lambda, "sqs://"), or_aws(&b.ledger, lambda, "dynamodb://"));
    let mut deployment = Deployment::of(bucket, queue, ledger, &p.job.inputs[0], runner);
    deployment.visibility_s = b.visibility.as_secs();
    // Only the inputs and the reference are read: the bucket, queue and ledger are not opened.
    let urls = crate::engine::BackendUrls { bucket: None, queue: None, ledger: None, visibility: b.visibility };
    let engine = engine(&p.job.data_dir, &urls, &p.job.inputs[0]).await?;
    let (format, compression) = (spec.input.format, spec.input.compression);
    let inputs = bucket::resolve_inputs(engine.inputs.as_ref(), &p.job.inputs, format, compression).await?;
    let inputs = crate::batch::watch::without_markers(&spec, inputs);
    let shape = match p.estimate {
        true => forecast::from_sizes(&spec, &inputs),
        false => forecast::dry_run(&engine, &spec, inputs).await?,
    };
    Ok(forecast::forecast(shape, &spec, deployment, &prices))
}

/// Run a job file's `[[tests]]`; the results, and an error naming the file when one failed
/// (or when it has none).
pub async fn test(config: PathBuf, data_dir: PathBuf) -> Result<(Vec<TestResult>, Result<()>)> {
    let spec = crate::engine::spec::load(Some(&config), &Overrides::default())?;
    let engine = engine(&data_dir, &crate::engine::BackendUrls::embedded(), "").await?;
    let results = crate::tools::check::run_tests(&engine, &spec).await?;
    if results.is_empty() {
        return Err(Error::config(config.display().to_string(), "has no [[tests]] to run"));
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let verdict = match failed {
        0 => Ok(()),
        n => Err(Error::input(config.display().to_string(), format!("{n} of {} tests failed", results.len()))),
    };
    Ok((results, verdict))
}
