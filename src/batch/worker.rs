//! Workers: take a task, read its byte range, run the pipeline, write sink + parts, commit.
//!
//! Working a task and acting on its message are two steps. [`work_task`] does the chunk and
//! returns a [`Handled`]: a [`Disposition`] (ack, release, abandon to the dead-letter queue,
//! fail the job) with the error, if any, and whether it is worth retrying. It never touches
//! the queue, so a Lambda handler can turn it into a partial batch failure. [`apply`] then
//! acts on a queue; [`work_loop`] is the long-running worker that does both.
//!
//! The order makes a crash at any instant safe: every effect before the commit (sink upserts
//! by key, part objects replaced whole) is idempotent, so a redelivered task redoes them with
//! the same result, and the commit itself is one conditional write. The message is acked only
//! after the commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backends::calls::{ApiCalls, Tally};
use crate::backends::ledger::{ChunkRecord, JobStatus, LedgerCommit};
use crate::backends::queue::{Delivery, Queue};
use crate::batch::gather;
pub use crate::batch::gather::fail_job;
use crate::batch::job::{now_ms, Failure, JobRun, Part, RunOptions, Task};
use crate::batch::pieces::read_chunk;
use crate::engine::pipeline::ChunkOutput;
use crate::engine::Engine;
use crate::error::{Backend, Error, Result};
use crate::input::plan::Chunk;
use crate::model::record::SinkItem;

/// What becomes of a task's message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Done, or nothing to do: delete it.
    Ack,
    /// Not done: make it visible again after `delay` (zero: at once), for any worker.
    Release {
        /// How long it stays invisible first.
        delay: Duration,
    },
    /// Leave it in flight: it comes back after its visibility timeout, and after the queue's
    /// last allowed delivery it goes to the dead-letter queue.
    Abandon,
    /// The job cannot complete: record the failure (`failed.json`, the job `failed` in the
    /// ledger), then leave the task for the dead-letter queue.
    FailJob(Failure),
}

/// A task worked: what to do with its message, and the error if it failed.
#[derive(Debug)]
pub struct Handled {
    /// What to do with the message.
    pub disposition: Disposition,
    /// Why the task failed, if it did ([`Error::is_retryable`] says whether another attempt
    /// may succeed).
    pub error: Option<Error>,
    /// Requests that the chunk's committed record counted before they were made (its commit
    /// and its ack): not to be counted again.
    pub prepaid: ApiCalls,
}

impl Handled {
    fn just(disposition: Disposition) -> Self {
        Handled { disposition, error: None, prepaid: ApiCalls::new() }
    }
}

/// What working a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worked {
    /// This attempt committed the chunk.
    Committed,
    /// The chunk had been committed by an earlier delivery.
    AlreadyCommitted,
}

/// How a worker treats failures.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Deliveries of a task before its failure is final.
    pub max_attempts: u32,
    /// Whether a final failure fails the job (workers serving a shared queue, whose jobs
    /// must end), or only stops this run, which can be resumed (`sluicebox run`).
    pub fail_jobs: bool,
    /// The delay before the second attempt; it doubles with each attempt after that.
    pub retry_delay: Duration,
}

/// The longest a failed task waits before its next attempt.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl Policy {
    /// How long a task that failed its `attempt`-th delivery waits before the next.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.retry_delay.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_RETRY_DELAY)
    }
}

/// Decide what becomes of a task whose chunk was worked with `result` on its `attempt`-th
/// delivery. `failure` describes the failed chunk, for [`Disposition::FailJob`].
///
/// A retryable error (a backend, the network, throttling) is retried after a growing delay
/// until the attempts run out; an error that retrying cannot mend (the input changed or is
/// gone) is final at once. A final failure fails the job (`policy.fail_jobs`), so that no job
/// waits forever on a task in the dead-letter queue; in a local run it stops the run instead.
pub fn dispose(
    result: &Result<Worked>,
    attempt: u32,
    policy: Policy,
    failure: impl FnOnce() -> Failure,
) -> Disposition {
    match result {
        Ok(_) => Disposition::Ack,
        Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
            Disposition::Release { delay: policy.delay_after(attempt) }
        }
        Err(_) if policy.fail_jobs => Disposition::FailJob(failure()),
        // Not acknowledged: the run stops with the error; a later run (or the queue's redrive
        // policy) takes the task again.
        Err(_) => Disposition::Abandon,
    }
}

/// Act on a task's message as `disposition` says; a failed job is recorded in `engine`.
pub async fn apply(engine: &Engine, queue: &dyn Queue, receipt: &str, disposition: &Disposition) -> Result<()> {
    match disposition {
        Disposition::Ack => queue.ack(receipt).await,
        Disposition::Release { delay } if delay.is_zero() => queue.release(receipt).await,
        Disposition::Release { delay } => queue.extend(receipt, *delay).await,
        Disposition::Abandon => Ok(()),
        Disposition::FailJob(failure) => gather::fail_job(engine, failure).await,
    }
}

/// The jobs a worker takes tasks for: one job (`sluicebox run`), or any job whose
/// definition and plan are in the engine's bucket (`sluicebox worker`), loaded on first use.
pub struct Jobs {
    engine: Engine,
    one: Option<Arc<JobRun>>,
    loaded: Arc<tokio::sync::Mutex<HashMap<String, Arc<JobRun>>>>,
    stop: CancellationToken,
    abort: CancellationToken,
    /// What loaded jobs may touch ([`RunOptions::allow`]).
    allow: Vec<String>,
    /// Tasks in hand, and when the last one ended (ms since the Unix epoch).
    busy: AtomicUsize,
    last_task_ms: AtomicI64,
}

impl Jobs {
    /// Only `run`'s job; workers stop when it is gathered (or one of them fails).
    pub fn one(run: Arc<JobRun>) -> Jobs {
        Jobs {
            engine: run.engine.clone(),
            stop: run.done.clone(),
            abort: CancellationToken::new(),
            one: Some(run),
            loaded: Default::default(),
            allow: Vec::new(),
            busy: Default::default(),
            last_task_ms: now_ms().into(),
        }
    }

    /// Any job that touches only what `allow` names (anything, when empty), until `stop` is
    /// cancelled: workers then finish the tasks in hand and return. When `abort` is cancelled
    /// too, they release the tasks in hand (other workers take them at once) and return.
    pub fn serve(engine: Engine, allow: Vec<String>, stop: CancellationToken, abort: CancellationToken) -> Jobs {
        Jobs {
            engine,
            one: None,
            loaded: Default::default(),
            allow,
            stop,
            abort,
            busy: Default::default(),
            last_task_ms: now_ms().into(),
        }
    }

    /// The same jobs, loaded once for both (a warm Lambda function keeps them between
    /// invocations), with tokens of their own: `stop` and `abort` as for [`Jobs::serve`].
    pub fn with_tokens(&self, stop: CancellationToken, abort: CancellationToken) -> Jobs {
        Jobs {
            engine: self.engine.clone(),
            one: self.one.clone(),
            loaded: self.loaded.clone(),
            allow: self.allow.clone(),
            stop,
            abort,
            busy: Default::default(),
            last_task_ms: now_ms().into(),
        }
    }

    /// Cancelled when workers are to stop taking tasks.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Cancelled when workers are to give back the tasks in hand.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// How long no task has been in hand (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(now_ms().saturating_sub(self.last_task_ms.load(Ordering::SeqCst)).max(0) as u64)
    }

    fn policy(&self, opts: &RunOptions) -> Policy {
        Policy { max_attempts: opts.max_attempts, fail_jobs: self.one.is_none(), retry_delay: opts.retry_delay }
    }

    /// The job a task names: `None` when this worker does not take its tasks.
    async fn get(&self, job_id: &str) -> Result<Option<Arc<JobRun>>> {
        if let Some(run) = &self.one {
            return Ok((run.id() == job_id).then(|| run.clone()));
        }
        let mut loaded = self.loaded.lock().await;
        if let Some(run) = loaded.get(job_id) {
            return Ok(Some(run.clone()));
        }
        let run = JobRun::load(&self.engine, job_id).await?;
        run.check_allowed(&self.allow)?;
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

    async fn forget_failed(&self, job_id: &str) {
        if let Some(run) = self.loaded.lock().await.get(job_id) {
            run.done.cancel();
        }
    }

    /// Drop a loaded job, so that the next task of it loads it again.
    async fn forget(&self, job_id: &str) {
        if let Some(run) = self.loaded.lock().await.remove(job_id) {
            run.done.cancel();
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
                    Err(e) if serving => warn!(job = %run.id(), "gather failed, will retry: {e}"),
                    Err(e) => {
                        jobs.stop.cancel();
                        return Err(e);
                    }
                }
            }
        }
        for d in got {
            jobs.busy.fetch_add(1, Ordering::SeqCst);
            let tally = Tally::default();
            tally.absorb(&carry.take());
            tally.absorb(&polled);
            let handled = tally.scope(work_delivery(&jobs, &name, opts, &d, &tally)).await;
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

/// Work one delivery with its visibility extended meanwhile, then act on its message.
async fn work_delivery(jobs: &Jobs, name: &str, opts: &RunOptions, d: &Delivery, tally: &Tally) -> Result<()> {
    let queue = jobs.engine.queue.clone();
    // Keep the task invisible while we work on it, however long the chunk takes.
    let heartbeat = keep_invisible(queue.clone(), &d.receipt, opts.visibility, tally);
    let handled = work_task(jobs, name, &d.body, d.receive_count, opts, tally).await;
    drop(heartbeat);
    let applied = apply(&jobs.engine, queue.as_ref(), &d.receipt, &handled.disposition).await;
    if let Disposition::FailJob(f) = &handled.disposition {
        jobs.forget_failed(&f.job_id).await;
    }
    let mut after = tally.take();
    crate::backends::calls::subtract(&mut after, &handled.prepaid);
    tally.absorb(&after);
    applied?;
    match handled.error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Extends a task's visibility every half of `visibility` until dropped (its requests counted
/// in `tally`), so that a task outlasting its visibility timeout is not given to another worker.
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keep the message `receipt` of `queue` invisible until the returned [`Heartbeat`] is dropped.
pub fn keep_invisible(queue: Arc<dyn Queue>, receipt: &str, visibility: Duration, tally: &Tally) -> Heartbeat {
    let receipt = receipt.to_string();
    Heartbeat(tokio::spawn(tally.clone().scope_owned(async move {
        loop {
            tokio::time::sleep(visibility / 2).await;
            if queue.extend(&receipt, visibility).await.is_err() {
                return;
            }
        }
    })))
}

/// Work the task in a message `body` on its `attempt`-th delivery and decide what becomes of
/// the message. Touches no queue.
pub async fn work_task(jobs: &Jobs, name: &str, body: &str, attempt: u32, opts: &RunOptions, tally: &Tally) -> Handled {
    let task: Task = match serde_json::from_str(body) {
        Ok(t) => t,
        Err(e) => {
            warn!(%body, "dropping a malformed task: {e}");
            return Handled::just(Disposition::Ack);
        }
    };
    let run = match jobs.get(&task.job_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return Handled::just(Disposition::Release { delay: Duration::ZERO }),
        Err(Error::NotFound(what)) => {
            // The job was deleted (`--force`) after its tasks were sent.
            warn!(job = %task.job_id, "dropping a task of a job that is gone ({what} not found)");
            return Handled::just(Disposition::Ack);
        }
        Err(e) => {
            // The job cannot be opened here (its reference is unreachable, its definition
            // does not check): retried like a failed chunk, then the job fails.
            let policy = jobs.policy(opts);
            let failed: Result<Worked> = Err(e);
            let disposition = dispose(&failed, attempt, policy, || Failure {
                job_id: task.job_id.clone(),
                chunk: task.chunk.index,
                input: format!("the job's definition (jobs/{}/job.json)", task.job_id),
                version: String::new(),
                attempts: attempt,
                error: failed.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                stopped_by: None,
            });
            let error = failed.err();
            return Handled { disposition, error, prepaid: ApiCalls::new() };
        }
    };
    let known = |g: u64| g != 0 && run.plan.order != 0;
    if known(task.generation) && task.generation > run.plan.order {
        // A task of a later run than the one this worker holds: load the job again first.
        jobs.forget(&task.job_id).await;
        return Handled::just(Disposition::Release { delay: Duration::ZERO });
    }
    let policy = jobs.policy(opts);
    if policy.fail_jobs {
        match run.engine.ledger.get_job(run.id()).await {
            Ok(Some(j)) if j.status == JobStatus::Failed && stopped(&run).await => {
                // A job stopped by a threshold takes no more chunks: its tasks are done with.
                debug!(job = %task.job_id, chunk = task.chunk.index, "task of a stopped job dropped");
                return Handled::just(Disposition::Ack);
            }
            Ok(Some(j)) if j.status == JobStatus::Failed => {
                // Not acknowledged: after its last delivery the queue moves it to the dead letters.
                debug!(job = %task.job_id, chunk = task.chunk.index, "task of a failed job left for the dead-letter queue");
                return Handled::just(Disposition::Abandon);
            }
            Ok(j) if j.as_ref().is_none_or(|j| !same_run(j, &run)) => {
                // The job was deleted or made anew (`--force`) since this worker loaded it: load
                // it again on the next delivery, which then keeps or drops the task.
                jobs.forget(&task.job_id).await;
                return Handled::just(Disposition::Release { delay: Duration::ZERO });
            }
            _ => {}
        }
    }
    if known(task.generation) && task.generation != run.plan.order {
        warn!(job = %task.job_id, chunk = task.chunk.index, "dropping a task of an earlier run of the job");
        return Handled::just(Disposition::Ack);
    }
    // The plan is the authority on what a chunk is: a stale task (from an earlier plan of a
    // job id) must not commit another byte range under a valid index.
    if run.plan.chunks.get(task.chunk.index as usize) != Some(&task.chunk) {
        warn!(chunk = task.chunk.index, "dropping a task that does not match the job's plan");
        return Handled::just(Disposition::Ack);
    }
    if policy.fail_jobs && attempt > policy.max_attempts {
        // Every attempt so far either failed (and the last one would have failed the job) or
        // never answered: the process working it died (out of memory or time, or killed). A
        // chunk committed before its worker died is done; any other fails its job now rather
        // than killing worker after worker until the queue drops it and the job never ends.
        match run.engine.ledger.get_chunk(run.id(), task.chunk.index).await {
            Ok(Some(_)) => return Handled::just(Disposition::Ack),
            Ok(None) => return unanswered(&run, &task, attempt, policy),
            Err(e) => {
                return Handled {
                    disposition: Disposition::Release { delay: Duration::ZERO },
                    error: Some(e),
                    prepaid: ApiCalls::new(),
                }
            }
        }
    }
    let result = tokio::select! {
        r = process(&run, name, &task.chunk, tally) => r,
        // Told to stop now: every effect so far is idempotent, and the next worker redoes it.
        _ = jobs.abort.cancelled() => return Handled::just(Disposition::Release { delay: Duration::ZERO }),
    };
    let input = &run.plan.inputs[task.chunk.input as usize].object;
    let disposition = dispose(&result, attempt, policy, || Failure {
        job_id: task.job_id.clone(),
        chunk: task.chunk.index,
        input: input.location.clone(),
        version: input.version.clone(),
        attempts: attempt,
        error: result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
        stopped_by: None,
    });
    let prepaid = match result {
        Ok(Worked::Committed) => prepaid(&run),
        _ => ApiCalls::new(),
    };
    let error = match (result, &disposition) {
        (Ok(_), _) => None,
        (Err(e), Disposition::Release { .. }) => {
            warn!(chunk = task.chunk.index, attempt, "chunk failed, will retry: {e}");
            None
        }
        (Err(e), _) if !policy.fail_jobs => Some(
            e.context(format!("chunk {} failed on attempt {attempt} of {}", task.chunk.index, policy.max_attempts)),
        ),
        (Err(e), _) => Some(Error::JobFailed {
            job_id: task.job_id.clone(),
            reason: format!(
                "job {} chunk {} of {} (version {}) failed on attempt {attempt} of {}: {e}",
                task.job_id, task.chunk.index, input.location, input.version, policy.max_attempts
            ),
        }),
    };
    Handled { disposition, error, prepaid }
}

/// Whether the job of `run` was stopped by a `[rejects]` threshold (its `failed.json` says
/// so), rather than failed by a chunk.
async fn stopped(run: &JobRun) -> bool {
    matches!(run.objects.failure().await, Ok(Some(f)) if f.stopped_by.is_some())
}

/// A task delivered more times than it may be attempted, whose attempts never answered: its
/// job fails, naming the chunk, its lines and why the worker probably died.
fn unanswered(run: &JobRun, task: &Task, attempt: u32, policy: Policy) -> Handled {
    let input = &run.plan.inputs[task.chunk.input as usize].object;
    let chunk = &task.chunk;
    let error = format!(
        "chunk {} (records {}–{} from line {}) was delivered {attempt} times, more than the {} attempts allowed, \
         and no attempt answered: the worker stopped while working it (out of memory or time, or killed). \
         A record of this chunk may need more than a worker has: look at these lines, or give workers more \
         memory or time",
        chunk.index,
        chunk.first_record,
        chunk.first_record + chunk.records.saturating_sub(1),
        chunk.first_line,
        policy.max_attempts,
    );
    warn!(job = %task.job_id, chunk = chunk.index, attempt, "{error}");
    let failure = Failure {
        job_id: task.job_id.clone(),
        chunk: chunk.index,
        input: input.location.clone(),
        version: input.version.clone(),
        attempts: attempt,
        error: error.clone(),
        stopped_by: None,
    };
    let error = Some(Error::JobFailed { job_id: task.job_id.clone(), reason: failure.to_string() });
    Handled { disposition: Disposition::FailJob(failure), error, prepaid: ApiCalls::new() }
}

/// Whether the ledger's job is the run of it that `run` holds (a job made anew has a new
/// creation time, which is its plan's order).
fn same_run(job: &crate::backends::ledger::JobRecord, run: &JobRun) -> bool {
    job.created_ms == run.generation()
}

/// Do one chunk, idempotently, and finalize the job if this commit completed it.
async fn process(run: &Arc<JobRun>, name: &str, chunk: &Chunk, tally: &Tally) -> Result<Worked> {
    let job_id = run.id();
    let ledger = &run.engine.ledger;
    if ledger.get_chunk(job_id, chunk.index).await?.is_some() {
        debug!(chunk = chunk.index, "already committed; skipping");
        return finalize_if_due(run).await.map(|()| Worked::AlreadyCommitted);
    }
    let started_ms = now_ms();
    let input = &run.plan.inputs[chunk.input as usize];
    let pieces = read_chunk(run, chunk).await?;
    // The pipeline runs on a blocking thread and hands sink batches to this task as it goes,
    // so a chunk's records are never all in memory and sink writes overlap the work.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<SinkItem>>(1);
    let has_sink = run.sink.is_some();
    let pipeline = {
        let run = run.clone();
        let tally = tally.clone();
        tokio::task::spawn_blocking(move || {
            // An earlier chunk's buffers (tens of MiB) were allocated on a thread of the
            // blocking pool and freed on another; the allocator keeps them for their thread until
            // asked: give them back before taking new ones, or idle threads hold them all.
            // SAFETY: `mi_collect` takes no pointers; with mimalloc not the global allocator it
            // collects an unused heap.
            unsafe { libmimalloc_sys::mi_collect(true) };
            tally.on_this_thread(|| {
                // A send fails only when the writer below stopped on an error, which it returns.
                // The items of a packed chunk's small pieces are gathered into full batches.
                let batch = run.spec.sink.batch;
                let mut held: Vec<SinkItem> = Vec::new();
                let mut send = |items: Vec<SinkItem>| {
                    held.extend(items);
                    if held.len() >= batch {
                        drop(tx.blocking_send(std::mem::take(&mut held)));
                    }
                };
                let mut out = ChunkOutput::default();
                // The pieces of a packed chunk go into one part each of output and rejects,
                // one after another, each read as its own input.
                for (piece, bytes) in &pieces {
                    let sink = has_sink.then_some((batch, &mut send as &mut dyn FnMut(_)));
                    let input = &run.inputs[piece.input as usize];
                    let piece_out = run.pipeline.run_chunk(input, piece.start(), bytes, sink)?;
                    out.append(piece_out);
                }
                if !held.is_empty() {
                    drop(tx.blocking_send(held));
                }
                Ok::<_, Error>(out)
            })
        })
    };
    let writer = async {
        // The receiver goes with the writer: when a write fails, the pipeline's next send
        // fails and it ends, instead of waiting for a receive that never comes.
        let mut rx = rx;
        while let Some(items) = rx.recv().await {
            if let Some(sink) = &run.sink {
                sink.write(items).await?;
            }
        }
        Ok::<_, Error>(())
    };
    // The figures of this chunk's own writes (other chunks write through the same sink).
    let figures = crate::backends::sink::figures::FigureTally::default();
    let (out, written) = tokio::join!(pipeline, figures.scope(writer));
    written?;
    let out = out.map_err(|e| Error::internal("worker", "pipeline task panicked", e))??;
    let output_bytes = out.output.len() as u64;
    let rejects_bytes = out.rejects.len() as u64;
    // This attempt's own part objects: a late attempt at a chunk committed meanwhile writes
    // beside the committed parts, never over them.
    let attempt = format!("{:016x}", fastrand::u64(..));
    if !out.output.is_empty() {
        run.objects.put_part(Part::Output, chunk.index, &attempt, out.output).await?;
    }
    if !out.rejects.is_empty() {
        run.objects.put_part(Part::Rejects, chunk.index, &attempt, out.rejects).await?;
    }
    let seen = out.counts.total();
    if seen != chunk.records {
        // The bytes are not what the plan scanned: never commit a chunk whose records do not
        // add up, or the job could complete with records missing.
        let inputs = match chunk.more.len() {
            0 => String::new(),
            n => format!(" and {n} more inputs packed after it"),
        };
        return Err(Error::Conflict(format!(
            "chunk {} of {} (bytes {}-{}{inputs}) held {seen} records; the plan found {}",
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
            crate::backends::calls::add(&mut calls, &prepaid(run));
            calls
        },
        sink_figures: figures.take(),
        generation: run.generation(),
        attempt,
    };
    let committed = match ledger.commit_chunk(job_id, &record).await {
        Err(Error::Conflict(e)) if !ledger.get_job(job_id).await?.is_some_and(|j| same_run(&j, run)) => {
            // Made anew (`--force`) while this chunk was worked, so the ledger refused the
            // commit: the work belongs to no run now. The task comes back, and its next
            // delivery finds it is of an earlier run.
            return Err(Error::backend(Backend::Ledger, format!("job {job_id} was made anew"), e));
        }
        committed => committed?,
    };
    match committed {
        LedgerCommit::First { finalize, done, total, records, rejected } => {
            run.progress.inc(chunk.records);
            run.progress.set_message(format!("chunks {done}/{total}"));
            debug!(chunk = chunk.index, done, total, "chunk committed");
            // Judged before the gather: a job past a threshold is stopped, never gathered.
            if run.spec.thresholds.any() && gather::judge(run, records, rejected).await? {
                return Ok(Worked::Committed);
            }
            if finalize {
                gather::gather(run).await?;
            }
            Ok(Worked::Committed)
        }
        LedgerCommit::Duplicate => finalize_if_due(run).await.map(|()| Worked::AlreadyCommitted),
    }
}

/// The requests a chunk's record counts before they are made: its commit and its ack.
fn prepaid(run: &JobRun) -> ApiCalls {
    let mut calls = run.engine.ledger.commit_cost();
    crate::backends::calls::add(&mut calls, &run.engine.queue.ack_cost());
    calls
}

/// Gather when every chunk is done but nobody gathers: the finalizer's gather failed and gave
/// its lease back (a duplicate of the last chunk may arrive after it), or the gatherer died
/// and its lease has ended (the gather takes over only an ended lease; a live one is left to
/// its holder).
pub async fn finalize_if_due(run: &Arc<JobRun>) -> Result<()> {
    let job = run.engine.ledger.get_job(run.id()).await?;
    match job {
        Some(j) if j.status == JobStatus::Running && Some(j.done_chunks) == j.total_chunks => gather::gather(run).await,
        // A live lease is its holder's: trying to take it would be a refused write per poll.
        Some(j) if j.status == JobStatus::Gathering && j.lease_until_ms < now_ms() => gather::gather(run).await,
        Some(j) if j.status == JobStatus::Complete => {
            run.done.cancel();
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Failure {
        Failure {
            job_id: "j".into(),
            chunk: 3,
            input: "file:///in.csv".into(),
            version: "v1".into(),
            attempts: 3,
            error: "changed".into(),
            stopped_by: None,
        }
    }

    const SERVE: Policy = Policy { max_attempts: 3, fail_jobs: true, retry_delay: Duration::from_millis(500) };
    const RUN: Policy = Policy { max_attempts: 3, fail_jobs: false, retry_delay: Duration::from_millis(500) };

    #[test]
    fn a_committed_chunk_is_acked_whether_committed_now_or_before() {
        for worked in [Worked::Committed, Worked::AlreadyCommitted] {
            for policy in [SERVE, RUN] {
                assert_eq!(dispose(&Ok(worked), 1, policy, failure), Disposition::Ack);
                assert_eq!(dispose(&Ok(worked), 9, policy, failure), Disposition::Ack, "even after many deliveries");
            }
        }
    }

    #[test]
    fn a_retryable_error_is_released_after_a_growing_delay_until_the_last_attempt() {
        let retryable: Result<Worked> = Err(Error::backend(crate::error::Backend::Sqlite, "write", "disk I/O error"));
        for policy in [SERVE, RUN] {
            let delays: Vec<Disposition> = (1..3).map(|a| dispose(&retryable, a, policy, failure)).collect();
            assert_eq!(
                delays,
                [
                    Disposition::Release { delay: Duration::from_millis(500) },
                    Disposition::Release { delay: Duration::from_secs(1) }
                ]
            );
        }
        assert_eq!(SERVE.delay_after(40), MAX_RETRY_DELAY, "the delay is capped");
    }

    #[test]
    fn a_retryable_error_on_the_last_attempt_fails_the_job_so_that_it_ends() {
        let retryable: Result<Worked> =
            Err(Error::backend(crate::error::Backend::Dynamodb, "BatchWriteItem", "throttled"));
        assert!(retryable.as_ref().unwrap_err().is_retryable());
        assert_eq!(dispose(&retryable, 3, SERVE, failure), Disposition::FailJob(failure()));
        // A local run stops with the error instead, and can be resumed.
        assert_eq!(dispose(&retryable, 3, RUN, failure), Disposition::Abandon);
    }

    #[test]
    fn a_changed_or_vanished_input_fails_the_job_at_once() {
        let changed: Result<Worked> = Err(Error::Conflict("held 9 records; the plan found 10".into()));
        let gone: Result<Worked> = Err(Error::input("s3://b/in.csv", "the object changed since it was planned"));
        for permanent in [&changed, &gone] {
            assert!(!permanent.as_ref().unwrap_err().is_retryable());
            assert_eq!(dispose(permanent, 1, SERVE, failure), Disposition::FailJob(failure()));
            assert_eq!(dispose(permanent, 1, RUN, failure), Disposition::Abandon);
        }
    }

    #[tokio::test]
    async fn applying_a_disposition_acts_on_the_queue_as_it_says() {
        use crate::backends::queue::MemoryQueue;
        let q = MemoryQueue::new(Duration::from_secs(60));
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::local(dir.path()).unwrap();
        q.send(vec!["a".into(), "b".into(), "c".into()]).await.unwrap();
        let got = q.receive(3, Duration::ZERO).await.unwrap();
        apply(&engine, &q, &got[0].receipt, &Disposition::Ack).await.unwrap();
        apply(&engine, &q, &got[1].receipt, &Disposition::Release { delay: Duration::ZERO }).await.unwrap();
        apply(&engine, &q, &got[2].receipt, &Disposition::Abandon).await.unwrap();
        let again = q.receive(3, Duration::ZERO).await.unwrap();
        assert_eq!(again.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["b"], "acked gone, abandoned in flight");
        assert_eq!(again[0].receive_count, 2);
    }
}
