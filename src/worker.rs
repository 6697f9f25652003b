//! Workers: take a task, read its byte range, run the pipeline, write sink + parts, commit.
//!
//! The order makes a crash at any instant safe: every effect before the commit (sink upserts
//! by key, part objects replaced whole) is idempotent, so a redelivered task redoes them with
//! the same result, and the commit itself is one conditional write.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::bucket;
use crate::error::{Error, Result};
use crate::gather;
use crate::job::{now_ms, JobRun, RunOptions};
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

/// Take tasks until the job is gathered (or fails).
pub(crate) async fn work_loop(run: Arc<JobRun>, name: String, opts: &RunOptions) -> Result<()> {
    let queue = run.engine.queue.clone();
    loop {
        let got = tokio::select! {
            _ = run.done.cancelled() => return Ok(()),
            got = queue.receive(1, Duration::from_millis(500)) => got?,
        };
        if got.is_empty() {
            // Nothing to do here: the job may have been finished by another process, or its
            // gather given back after a failure. The ledger says which.
            if let Err(e) = finalize_if_due(&run).await {
                run.done.cancel();
                return Err(e);
            }
        }
        for d in got {
            if let Err(e) = handle(&run, &name, opts, d).await {
                // Stop the other workers too: the run ends with this error, resumable.
                run.done.cancel();
                return Err(e);
            }
            if run.done.is_cancelled() {
                return Ok(());
            }
        }
    }
}

async fn handle(run: &Arc<JobRun>, name: &str, opts: &RunOptions, d: Delivery) -> Result<()> {
    let queue = run.engine.queue.clone();
    let task: Task = match serde_json::from_str(&d.body) {
        Ok(t) => t,
        Err(e) => {
            warn!(body = %d.body, "dropping a malformed task: {e}");
            return queue.ack(&d.receipt).await;
        }
    };
    if task.job_id != run.plan.job_id {
        return queue.release(&d.receipt).await;
    }
    // The plan is the authority on what a chunk is: a stale task (from an earlier plan of a
    // job id) must not commit another byte range under a valid index.
    if run.plan.chunks.get(task.chunk.index as usize) != Some(&task.chunk) {
        warn!(chunk = task.chunk.index, "dropping a task that does not match the job's plan");
        return queue.ack(&d.receipt).await;
    }
    // Keep the task invisible while we work on it, however long the chunk takes.
    let heartbeat = {
        let (queue, receipt, every) = (queue.clone(), d.receipt.clone(), opts.visibility / 2);
        let visibility = opts.visibility;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if queue.extend(&receipt, visibility).await.is_err() {
                    return;
                }
            }
        })
    };
    let result = process(run, name, &task.chunk).await;
    heartbeat.abort();
    match result {
        Ok(()) => queue.ack(&d.receipt).await,
        Err(e) if d.receive_count >= opts.max_attempts => {
            Err(Error::backend("worker", format!("chunk {} failed {} times", task.chunk.index, d.receive_count), e))
        }
        Err(e) => {
            warn!(chunk = task.chunk.index, attempt = d.receive_count, "chunk failed, will retry: {e}");
            queue.release(&d.receipt).await
        }
    }
}

/// Do one chunk, idempotently, and finalize the job if this commit completed it.
async fn process(run: &Arc<JobRun>, name: &str, chunk: &Chunk) -> Result<()> {
    let job_id = &run.plan.job_id;
    let ledger = &run.engine.ledger;
    if ledger.get_chunk(job_id, chunk.index).await?.is_some() {
        debug!(chunk = chunk.index, "already committed; skipping");
        return finalize_if_due(run).await;
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
        tokio::task::spawn_blocking(move || {
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
    };
    match ledger.commit_chunk(job_id, &record).await? {
        LedgerCommit::First { finalize, done, total } => {
            run.progress.inc(chunk.records);
            run.progress.set_message(format!("chunks {done}/{total}"));
            debug!(chunk = chunk.index, done, total, "chunk committed");
            if finalize {
                gather::gather(run).await?;
            }
            Ok(())
        }
        LedgerCommit::Duplicate => finalize_if_due(run).await,
    }
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
