//! Workers: take a task, read its byte range, run the pipeline, write sink + parts, commit.
//!
//! The order makes a crash at any instant safe: every effect before the commit (sink upserts
//! by key, part objects replaced whole) is idempotent, so a redelivered task redoes them with
//! the same result, and the commit itself is one conditional write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::bucket;
use crate::calls::Tally;
use crate::error::{Error, Result};
use crate::gather;
use crate::job::{now_ms, Engine, JobRun, RunOptions};
use crate::ledger::{ChunkRecord, JobStatus, LedgerCommit};
use crate::pipeline::ChunkContext;
use crate::plan::Chunk;
use crate::queue::Delivery;

/// A queue message: a claim check naming the job and the chunk's byte range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Task {
    /// The job.
    pub job_id: String,
    /// The chunk.
    pub chunk: Chunk,
}

/// Where a chunk's output part lives.
pub fn output_part(prefix: &str, index: u32) -> String {
    format!("{prefix}/parts/{index:06}.out")
}

/// Where a chunk's rejects part lives.
pub fn rejects_part(prefix: &str, index: u32) -> String {
    format!("{prefix}/parts/{index:06}.rejects.jsonl")
}

/// The jobs a worker takes tasks for: one job (`sluicebox run`), or any job whose
/// definition and plan are in the engine's bucket (`sluicebox worker`), loaded on first use.
pub struct Jobs {
    engine: Engine,
    one: Option<Arc<JobRun>>,
    loaded: tokio::sync::Mutex<HashMap<String, Arc<JobRun>>>,
    stop: CancellationToken,
    abort: CancellationToken,
    /// Tasks in hand, and when the last one ended (ms since the Unix epoch).
    busy: std::sync::atomic::AtomicUsize,
    last_task_ms: std::sync::atomic::AtomicI64,
}

impl Jobs {
    /// Only `run`'s job; workers stop when it is gathered (or one of them fails).
    pub(crate) fn one(run: Arc<JobRun>) -> Jobs {
        Jobs {
            engine: run.engine.clone(),
            stop: run.done.clone(),
            abort: CancellationToken::new(),
            one: Some(run),
            loaded: Default::default(),
            busy: Default::default(),
            last_task_ms: now_ms().into(),
        }
    }

    /// Any job, until `stop` is cancelled: workers then finish the tasks in hand and return.
    /// When `abort` is cancelled too, they release the tasks in hand (other workers take
    /// them at once) and return.
    pub fn serve(engine: Engine, stop: CancellationToken, abort: CancellationToken) -> Jobs {
        Jobs {
            engine,
            one: None,
            loaded: Default::default(),
            stop,
            abort,
            busy: Default::default(),
            last_task_ms: now_ms().into(),
        }
    }

    /// How long no task has been in hand (zero while one is).
    pub fn idle_for(&self) -> Duration {
        use std::sync::atomic::Ordering;
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(now_ms().saturating_sub(self.last_task_ms.load(Ordering::SeqCst)).max(0) as u64)
    }

    /// The job a task names: `None` when this worker does not take its tasks.
    async fn get(&self, job_id: &str) -> Result<Option<Arc<JobRun>>> {
        if let Some(run) = &self.one {
            return Ok((run.plan.job_id == job_id).then(|| run.clone()));
        }
        let mut loaded = self.loaded.lock().await;
        if let Some(run) = loaded.get(job_id) {
            return Ok(Some(run.clone()));
        }
        let run = JobRun::load(&self.engine, job_id).await?;
        loaded.insert(job_id.to_string(), run.clone());
        Ok(Some(run))
    }

    async fn active(&self) -> Vec<Arc<JobRun>> {
        match &self.one {
            Some(run) => vec![run.clone()],
            None => {
                let mut loaded = self.loaded.lock().await;
                // A gathered job needs nothing more from this worker.
                loaded.retain(|_, run| !run.done.is_cancelled());
                loaded.values().cloned().collect()
            }
        }
    }
}

/// Take tasks until the job is gathered or a task fails for good (`Jobs::one`), or until
/// told to stop (`Jobs::serve`).
pub async fn work_loop(jobs: Arc<Jobs>, name: String, opts: &RunOptions) -> Result<()> {
    let queue = jobs.engine.queue.clone();
    let serving = jobs.one.is_none();
    // Requests made after a chunk's record was written (the ledger's finalize check, a
    // retried ack) are counted with the next chunk this loop works; the receive that brought
    // a task with its task. Receives that bring nothing are idle polls, counted nowhere.
    let carry = Tally::default();
    let poll = Tally::default();
    loop {
        let got = tokio::select! {
            _ = jobs.stop.cancelled() => return Ok(()),
            got = poll.scope(queue.receive(1, Duration::from_millis(500))) => got,
        };
        let polled = poll.take();
        let got = match got {
            Ok(got) => got,
            Err(e) if serving => {
                warn!("cannot receive tasks, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if got.is_empty() {
            // Nothing to do here: a job may have been finished by another process, or its
            // gather given back after a failure. The ledger says which.
            for run in jobs.active().await {
                match finalize_if_due(&run).await {
                    Ok(()) => {}
                    Err(e) if serving => warn!(job = %run.plan.job_id, "gather failed, will retry: {e}"),
                    Err(e) => {
                        jobs.stop.cancel();
                        return Err(e);
                    }
                }
            }
        }
        for d in got {
            use std::sync::atomic::Ordering;
            jobs.busy.fetch_add(1, Ordering::SeqCst);
            let tally = Tally::default();
            tally.absorb(&carry.take());
            tally.absorb(&polled);
            let handled = tally.scope(handle(&jobs, &name, opts, d, &tally)).await;
            carry.absorb(&tally.take());
            jobs.last_task_ms.store(now_ms(), Ordering::SeqCst);
            jobs.busy.fetch_sub(1, Ordering::SeqCst);
            match handled {
                Ok(()) => {}
                Err(e) if serving => warn!("{e}"),
                Err(e) => {
                    // Stop the other workers too: the run ends with this error, resumable.
                    jobs.stop.cancel();
                    return Err(e);
                }
            }
        }
    }
}

async fn handle(jobs: &Jobs, name: &str, opts: &RunOptions, d: Delivery, tally: &Tally) -> Result<()> {
    let queue = jobs.engine.queue.clone();
    let task: Task = match serde_json::from_str(&d.body) {
        Ok(t) => t,
        Err(e) => {
            warn!(body = %d.body, "dropping a malformed task: {e}");
            return queue.ack(&d.receipt).await;
        }
    };
    let run = match jobs.get(&task.job_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return queue.release(&d.receipt).await,
        Err(Error::NotFound(what)) => {
            // The job was deleted (`--force`) after its tasks were sent.
            warn!(job = %task.job_id, "dropping a task of a job that is gone ({what} not found)");
            return queue.ack(&d.receipt).await;
        }
        Err(e) => {
            queue.release(&d.receipt).await?;
            return Err(e);
        }
    };
    // The plan is the authority on what a chunk is: a stale task (from an earlier plan of a
    // job id) must not commit another byte range under a valid index.
    if run.plan.chunks.get(task.chunk.index as usize) != Some(&task.chunk) {
        warn!(chunk = task.chunk.index, "dropping a task that does not match the job's plan");
        return queue.ack(&d.receipt).await;
    }
    let job_failed = || async {
        jobs.one.is_none()
            && run
                .engine
                .ledger
                .get_job(&task.job_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|j| j.status == JobStatus::Failed)
    };
    if job_failed().await {
        // Not acknowledged: after its last delivery the queue moves it to the dead letters.
        debug!(job = %task.job_id, chunk = task.chunk.index, "task of a failed job left for the dead-letter queue");
        return Ok(());
    }
    // Keep the task invisible while we work on it, however long the chunk takes.
    let heartbeat = {
        let (queue, receipt, every) = (queue.clone(), d.receipt.clone(), opts.visibility / 2);
        let visibility = opts.visibility;
        tokio::spawn(tally.clone().scope_owned(async move {
            loop {
                tokio::time::sleep(every).await;
                if queue.extend(&receipt, visibility).await.is_err() {
                    return;
                }
            }
        }))
    };
    let result = tokio::select! {
        r = process(&run, name, &task.chunk, tally) => Some(r),
        _ = jobs.abort.cancelled() => None,
    };
    heartbeat.abort();
    let Some(result) = result else {
        // Told to stop now: every effect so far is idempotent, and the next worker redoes it.
        return queue.release(&d.receipt).await;
    };
    match result {
        Ok(committed) => {
            let acked = queue.ack(&d.receipt).await;
            if committed {
                let mut after = tally.take();
                crate::calls::subtract(&mut after, &prepaid(&run));
                tally.absorb(&after);
            }
            acked
        }
        Err(e) if d.receive_count >= opts.max_attempts => {
            let input = &run.plan.inputs[task.chunk.input as usize].object;
            if jobs.one.is_some() {
                return Err(Error::backend(
                    "worker",
                    format!("chunk {} failed {} times", task.chunk.index, d.receive_count),
                    e,
                ));
            }
            if matches!(e, Error::InvalidInput { .. } | Error::Conflict(_)) {
                // The input itself is wrong now (changed, gone, short): retrying cannot help.
                let failure = crate::job::Failure {
                    job_id: task.job_id.clone(),
                    chunk: task.chunk.index,
                    input: input.location.clone(),
                    version: input.version.clone(),
                    attempts: d.receive_count,
                    error: e.to_string(),
                };
                let body = serde_json::to_vec_pretty(&failure).map_err(|e| Error::backend("json", "encode", e))?;
                bucket::put(run.engine.bucket.as_ref(), &format!("{}/failed.json", run.prefix()), body).await?;
                run.engine.ledger.set_status(&task.job_id, JobStatus::Running, JobStatus::Failed).await?;
                run.done.cancel();
            }
            // Not acknowledged: the queue's redrive policy moves it to the dead letters.
            Err(Error::backend(
                "worker",
                format!(
                    "job {} chunk {} of {} (version {}) failed {} times",
                    task.job_id, task.chunk.index, input.location, input.version, d.receive_count
                ),
                e,
            ))
        }
        Err(e) => {
            warn!(chunk = task.chunk.index, attempt = d.receive_count, "chunk failed, will retry: {e}");
            queue.release(&d.receipt).await
        }
    }
}

/// Do one chunk, idempotently, and finalize the job if this commit completed it.
/// `Ok(true)` when this call committed the chunk (its record counts the commit and the ack).
async fn process(run: &Arc<JobRun>, name: &str, chunk: &Chunk, tally: &Tally) -> Result<bool> {
    let job_id = &run.plan.job_id;
    let ledger = &run.engine.ledger;
    if ledger.get_chunk(job_id, chunk.index).await?.is_some() {
        debug!(chunk = chunk.index, "already committed; skipping");
        return finalize_if_due(run).await.map(|()| false);
    }
    let started_ms = now_ms();
    let input = &run.plan.inputs[chunk.input as usize];
    let bytes = bucket::read_range(run.engine.inputs.clone(), &input.object, chunk.start, chunk.end).await?;
    // The pipeline runs on a blocking thread and hands sink batches to this task as it goes,
    // so a chunk's records are never all in memory and sink writes overlap the work.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<crate::sink::SinkItem>>(1);
    let has_sink = run.sink.is_some();
    let pipeline = {
        let run = run.clone();
        let chunk = chunk.clone();
        let tally = tally.clone();
        tokio::task::spawn_blocking(move || {
            tally.on_this_thread(|| {
                let input = &run.plan.inputs[chunk.input as usize];
                let ctx = ChunkContext {
                    chunk: &chunk,
                    input: &input.object.location,
                    format: input.object.format,
                    layout: run.layouts[chunk.input as usize].as_ref(),
                };
                // A send fails only when the writer below stopped on an error, which it returns.
                let mut send = |items| drop(tx.blocking_send(items));
                let sink = has_sink.then_some((run.spec.sink_batch, &mut send as &mut dyn FnMut(_)));
                run.pipeline.run_chunk(&ctx, &bytes, sink)
            })
        })
    };
    let writer = async {
        while let Some(items) = rx.recv().await {
            if let Some(sink) = &run.sink {
                sink.write(items).await?;
            }
        }
        Ok::<_, Error>(())
    };
    let (out, written) = tokio::join!(pipeline, writer);
    written?;
    let out = out.map_err(|e| Error::backend("worker", "pipeline task panicked", e))??;
    let prefix = run.prefix();
    let output_bytes = out.output.len() as u64;
    let rejects_bytes = out.rejects.len() as u64;
    let store = run.engine.bucket.as_ref();
    if !out.output.is_empty() {
        bucket::put(store, &output_part(&prefix, chunk.index), out.output).await?;
    }
    if !out.rejects.is_empty() {
        bucket::put(store, &rejects_part(&prefix, chunk.index), out.rejects).await?;
    }
    let seen = out.counts.written + out.counts.rejected + out.counts.filtered;
    if seen != chunk.records {
        // The bytes are not what the plan scanned: never commit a chunk whose records do not
        // add up, or the job could complete with records missing.
        return Err(Error::Conflict(format!(
            "chunk {} of {} (bytes {}-{}) held {seen} records; the plan found {}",
            chunk.index,
            input.object.location,
            chunk.start,
            chunk.end.saturating_sub(1),
            chunk.records
        )));
    }
    let record = ChunkRecord {
        index: chunk.index,
        worker: name.to_string(),
        counts: out.counts,
        output_bytes,
        rejects_bytes,
        started_ms,
        finished_ms: now_ms(),
        api_calls: {
            // The commit and the ack that follow it are counted here, before they are made.
            let mut calls = tally.take();
            crate::calls::add(&mut calls, &prepaid(run));
            calls
        },
    };
    match ledger.commit_chunk(job_id, &record).await? {
        LedgerCommit::First { finalize, done, total } => {
            run.progress.inc(chunk.records);
            run.progress.set_message(format!("chunks {done}/{total}"));
            debug!(chunk = chunk.index, done, total, "chunk committed");
            if finalize {
                gather::gather(run).await?;
            }
            Ok(true)
        }
        LedgerCommit::Duplicate => finalize_if_due(run).await.map(|()| false),
    }
}

/// The requests a chunk's record counts before they are made: its commit and its ack.
fn prepaid(run: &JobRun) -> crate::calls::ApiCalls {
    let mut calls = run.engine.ledger.commit_cost();
    crate::calls::add(&mut calls, &run.engine.queue.ack_cost());
    calls
}

/// A duplicate of the last chunk may arrive after the finalizer's gather failed and gave
/// its lease back: gather when every chunk is done but nobody has gathered.
async fn finalize_if_due(run: &Arc<JobRun>) -> Result<()> {
    let job = run.engine.ledger.get_job(&run.plan.job_id).await?;
    match job {
        Some(j) if j.status == JobStatus::Running && Some(j.done_chunks) == j.total_chunks => gather::gather(run).await,
        Some(j) if j.status == JobStatus::Complete => {
            run.done.cancel();
            Ok(())
        }
        _ => Ok(()),
    }
}
