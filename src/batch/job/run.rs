//! Running a job: here, to completion ([`run`]); on workers elsewhere ([`submit`]); and
//! following it until it ends ([`wait`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::prepare::{enqueue, prepare, record_calls, Prepared};
use super::{now_ms, JobObjects, JobRun, RunOptions, Sent, Summary};
use crate::backends::bucket::InputObject;
use crate::backends::calls::Tally;
use crate::backends::ledger::JobStatus;
use crate::batch::gather;
use crate::batch::pool::Pool;
use crate::batch::worker::Jobs;
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};

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

/// Run (or resume) a job over `inputs` to completion with `opts.workers` workers in this
/// process, and return its summary.
pub async fn run(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>, opts: &RunOptions) -> Result<Summary> {
    let tally = Tally::default();
    let run = match tally.scope(prepare(engine, spec, inputs, opts)).await? {
        Prepared::Complete(summary) => return Ok(*summary),
        Prepared::Ready(run) => run,
    };
    let sent = tally.scope(enqueue(&run)).await?;
    record_calls(&run, &tally).await?;
    work(&run, opts, sent).await?;
    if run.engine.ledger.get_job(run.id()).await?.is_some_and(|j| j.status == JobStatus::Failed) {
        // Stopped by a `[rejects]` threshold: the workers stopped, and the job failed.
        return Err(run.objects.failure_error().await);
    }
    run.objects.summary().await?.ok_or_else(|| Error::NotFound(run.objects.summary_path()))
}

/// Plan a job (or find its plan) and send a task for every chunk not yet committed, for
/// workers elsewhere (`sluicebox worker`) to do. Sending again is safe: a chunk is committed
/// once however often its task arrives.
pub async fn submit(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>, opts: &RunOptions) -> Result<Submitted> {
    needs_shared_sink(spec)?;
    let tally = Tally::default();
    match tally.scope(prepare(engine, spec, inputs, opts)).await? {
        Prepared::Complete(summary) => Ok(Submitted {
            job_id: summary.job_id.clone(),
            chunks: summary.chunks.total,
            tasks_sent: 0,
            records: summary.records.total,
            summary: Some(*summary),
        }),
        Prepared::Ready(run) => {
            let sent = tally.scope(enqueue(&run)).await?;
            tally.scope(run.objects.put_sent(&Sent { tasks: sent, at_ms: now_ms() })).await?;
            record_calls(&run, &tally).await?;
            Ok(Submitted {
                job_id: run.id().to_string(),
                chunks: run.plan.chunks.len() as u32,
                tasks_sent: sent,
                records: run.plan.total_records(),
                summary: None,
            })
        }
    }
}

/// Jobs worked by other processes need a sink they all share: a SQLite table would be split
/// across every worker's own data directory.
pub fn needs_shared_sink(spec: &JobSpec) -> Result<()> {
    if !spec.sink.target.shared() {
        return Err(Error::config(
            "--sink",
            "jobs on a shared queue need a shared sink: give --sink dynamodb://TABLE (or --sink none); \
             the SQLite sink lives in one machine's data directory",
        ));
    }
    Ok(())
}

/// Follow a job in the ledger until it is complete (its summary) or failed (its error),
/// showing chunk progress on `progress`.
pub async fn wait(engine: &Engine, job_id: &str, progress: &indicatif::ProgressBar) -> Result<Summary> {
    let objects = JobObjects::new(engine.bucket.clone(), job_id);
    loop {
        let job = engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        if let Some(total) = job.total_chunks {
            progress.set_length(u64::from(total));
            progress.set_position(u64::from(job.done_chunks));
            progress.set_message(job.status.as_str());
        }
        match job.status {
            JobStatus::Complete => {
                return objects.summary().await?.ok_or_else(|| Error::NotFound(objects.summary_path()));
            }
            JobStatus::Failed => return Err(objects.failure_error().await),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Run workers until the job is gathered (`sent` tasks were just enqueued).
async fn work(run: &Arc<JobRun>, opts: &RunOptions, sent: u32) -> Result<()> {
    if sent == 0 {
        // Every chunk was committed before (a crash during the gather): gather again; it is
        // idempotent. A gather another party holds (its lease renewed) is left to it, and
        // taken over if its holder dies and the lease ends.
        loop {
            gather::gather(run).await?;
            let job = run.engine.ledger.get_job(run.id()).await?;
            match job.map(|j| j.status) {
                Some(JobStatus::Complete) => return Ok(()),
                Some(JobStatus::Failed) => return Err(run.objects.failure_error().await),
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    let pool = Pool::start(Arc::new(Jobs::one(run.clone())), opts, opts.workers.max(1));
    let result = pool.join().await;
    if result.is_err() {
        run.done.cancel();
    }
    result
}
