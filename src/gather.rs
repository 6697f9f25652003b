//! The gather: merge output and rejects parts in input order, write the manifest and the
//! summary, and mark the job complete. It runs under the ledger's gather lease and writes
//! only deterministic content, so running it again gives the same objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::bucket;
use crate::calls::Tally;
use crate::config::OutputFormat;
use crate::error::{Error, Result};
use crate::job::{now_ms, JobRun};
use crate::ledger::{self, ChunkRecord, JobStatus};
use crate::plan::Chunk;
use crate::worker::{output_part, rejects_part};

/// `summary.json`: what a job did. Field names are stable (programs read them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The job id.
    pub job_id: String,
    /// `succeeded` (no rejects) or `completed_with_rejects`.
    pub status: String,
    /// Inputs with their sizes and record counts.
    pub inputs: Vec<InputSummary>,
    /// Record counts; `total == written + rejected + filtered`.
    pub records: RecordCounts,
    /// Chunk counts.
    pub chunks: ChunkCounts,
    /// Rejects per rule.
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// Where the outputs are.
    pub outputs: Outputs,
    /// The sink table, if any.
    pub sink: Option<String>,
    /// When and how long.
    pub timings: Timings,
    /// Records per second over the whole job.
    pub records_per_s: f64,
    /// Cloud API requests the job made, by `"service.Operation"` (empty on the embedded
    /// engine): planning and enqueueing, every chunk's reads, writes, commit and task
    /// messages, and the gather up to writing this summary.
    #[serde(default)]
    pub api_calls: crate::calls::ApiCalls,
    /// `api_calls` summed, per input record.
    #[serde(default)]
    pub api_calls_per_record: f64,
    /// True when this run found the job already complete and did nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_complete: bool,
}

/// One input in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSummary {
    /// The object.
    pub location: String,
    /// Bytes as stored.
    pub bytes: u64,
    /// Records found.
    pub records: u64,
}

/// Record counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCounts {
    /// Records in the inputs.
    pub total: u64,
    /// Written to the output and the sink.
    pub written: u64,
    /// Rejected (see `rejects.jsonl`).
    pub rejected: u64,
    /// Dropped by a transform.
    pub filtered: u64,
}

/// Chunk counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCounts {
    /// Chunks planned.
    pub total: u32,
    /// Chunks committed.
    pub done: u32,
}

/// Output locations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// Merged output.
    pub output: String,
    /// Rejects, JSON Lines.
    pub rejects: String,
    /// Manifest.
    pub manifest: String,
    /// This summary.
    pub summary: String,
}

/// Timings, in ms since the Unix epoch and ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// RFC 3339 time the job was first created.
    pub started_at: String,
    /// RFC 3339 time the gather finished.
    pub finished_at: String,
    /// Total wall time (includes any time between an interruption and the resume).
    pub duration_ms: i64,
    /// Per phase: `plan_ms`, `work_ms`, `gather_ms`.
    pub phases: BTreeMap<String, i64>,
}

/// `manifest.json`: every chunk with its range, counts, worker and timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The job id.
    pub job_id: String,
    /// Input locations, indexed by `chunks[].input`.
    pub inputs: Vec<String>,
    /// Chunks in order.
    pub chunks: Vec<ManifestChunk>,
}

/// One chunk in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestChunk {
    /// The plan's chunk.
    #[serde(flatten)]
    pub chunk: Chunk,
    /// What its worker reported.
    pub commit: ChunkRecord,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Read a job's summary, if it has one.
pub async fn read_summary(store: &dyn ObjectStore, job_id: &str) -> Result<Option<Summary>> {
    let path = format!("jobs/{job_id}/summary.json");
    match bucket::get_opt(store, &path).await? {
        None => Ok(None),
        Some(b) => {
            serde_json::from_slice(&b).map(Some).map_err(|e| Error::backend("json", format!("corrupt {path}"), e))
        }
    }
}

/// How long a gather may hold its lease before another party may take it over (its holder
/// is presumed dead). A gather taking longer is not wrong, only no longer exclusive: gathers
/// write the same objects.
pub const GATHER_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// Gather a job whose chunks are all committed. Returns without doing anything if another
/// party holds the gather lease or the job is complete.
pub(crate) async fn gather(run: &Arc<JobRun>) -> Result<()> {
    let ledger = &run.engine.ledger;
    let job_id = &run.plan.job_id;
    let now = now_ms();
    if !ledger.take_gather_lease(job_id, now, now + GATHER_LEASE.as_millis() as i64).await? {
        if ledger.get_job(job_id).await?.is_some_and(|j| j.status == JobStatus::Complete) {
            run.done.cancel();
        }
        return Ok(());
    }
    tracing::info!(job = %job_id, "all chunks committed; gathering");
    let tally = Tally::default();
    let completed = match tally.scope(write_outputs(run, &tally)).await {
        Ok(()) => ledger.set_status(job_id, JobStatus::Gathering, JobStatus::Complete).await,
        Err(e) => Err(e),
    };
    match completed {
        Ok(true) => {
            run.done.cancel();
            // The merged objects hold everything now; parts are only scratch.
            let _ = bucket::delete_prefix(run.engine.bucket.as_ref(), &format!("{}/parts", run.prefix())).await;
            Ok(())
        }
        // The lease was taken over (a resumed run); the new holder finishes the job.
        Ok(false) => Ok(()),
        Err(e) => {
            // Give the lease back so a retry (or an idle worker) can gather.
            let _ = ledger.set_status(job_id, JobStatus::Gathering, JobStatus::Running).await;
            Err(e)
        }
    }
}

async fn write_outputs(run: &Arc<JobRun>, tally: &Tally) -> Result<()> {
    let gather_started = now_ms();
    let store = run.engine.bucket.as_ref();
    let prefix = run.prefix();
    let job_id = &run.plan.job_id;
    let job = run.engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    let chunks = run.engine.ledger.chunks(job_id).await?;
    if chunks.len() != run.plan.chunks.len() {
        return Err(Error::Conflict(format!(
            "gather of {job_id}: {} of {} chunks committed",
            chunks.len(),
            run.plan.chunks.len()
        )));
    }
    let ext = match run.plan.output_format {
        OutputFormat::Csv => "csv",
        OutputFormat::Jsonl => "jsonl",
    };
    let output_path = format!("{prefix}/output.{ext}");
    let mut header = Vec::new();
    if let (OutputFormat::Csv, Some(fields)) = (run.plan.output_format, &run.plan.output_fields) {
        let mut w = csv::Writer::from_writer(&mut header);
        w.write_record(fields).map_err(|e| Error::backend("csv", "encode header", e))?;
        w.flush().map_err(|e| Error::backend("csv", "encode header", e))?;
    }
    let outputs = chunks.iter().filter(|c| c.output_bytes > 0).map(|c| (output_part(&prefix, c.index), c.output_bytes));
    merge(store, &output_path, header, outputs).await?;
    let rejects =
        chunks.iter().filter(|c| c.rejects_bytes > 0).map(|c| (rejects_part(&prefix, c.index), c.rejects_bytes));
    let rejects_path = format!("{prefix}/rejects.jsonl");
    merge(store, &rejects_path, Vec::new(), rejects).await?;

    let manifest = Manifest {
        job_id: job_id.clone(),
        inputs: run.plan.inputs.iter().map(|i| i.object.location.clone()).collect(),
        chunks: run
            .plan
            .chunks
            .iter()
            .cloned()
            .zip(chunks.iter().cloned())
            .map(|(chunk, commit)| ManifestChunk { chunk, commit })
            .collect(),
    };
    let manifest_path = format!("{prefix}/manifest.json");
    bucket::put(
        store,
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).map_err(|e| Error::backend("json", "encode manifest", e))?,
    )
    .await?;

    let counts = ledger::total_counts(&chunks);
    let total = run.plan.total_records();
    let api_calls = job_calls(store, &prefix, &chunks, tally).await?;
    let calls: u64 = api_calls.values().sum();
    let finished = now_ms();
    let planned = job.planned_ms.unwrap_or(job.created_ms);
    let last_commit = chunks.iter().map(|c| c.finished_ms).max().unwrap_or(planned);
    let duration_ms = (finished - job.created_ms).max(0);
    let url = |p: &str| format!("{}/{p}", run.engine.bucket_url.trim_end_matches('/'));
    let summary = Summary {
        job_id: job_id.clone(),
        status: if counts.rejected == 0 { "succeeded" } else { "completed_with_rejects" }.into(),
        inputs: run
            .plan
            .inputs
            .iter()
            .map(|i| InputSummary { location: i.object.location.clone(), bytes: i.object.size, records: i.records })
            .collect(),
        records: RecordCounts { total, written: counts.written, rejected: counts.rejected, filtered: counts.filtered },
        chunks: ChunkCounts { total: run.plan.chunks.len() as u32, done: chunks.len() as u32 },
        rejects_by_rule: counts.rejects_by_rule,
        outputs: Outputs {
            output: url(&output_path),
            rejects: url(&rejects_path),
            manifest: url(&manifest_path),
            summary: url(&format!("{prefix}/summary.json")),
        },
        sink: run.sink_table.clone(),
        timings: Timings {
            started_at: rfc3339(job.created_ms),
            finished_at: rfc3339(finished),
            duration_ms,
            phases: BTreeMap::from([
                ("plan_ms".to_string(), (planned - job.created_ms).max(0)),
                ("work_ms".to_string(), (last_commit - planned).max(0)),
                ("gather_ms".to_string(), (finished - gather_started).max(0)),
            ]),
        },
        records_per_s: if duration_ms > 0 { total as f64 * 1000.0 / duration_ms as f64 } else { 0.0 },
        api_calls_per_record: if total > 0 { calls as f64 / total as f64 } else { 0.0 },
        api_calls,
        already_complete: false,
    };
    if summary.records.written + summary.records.rejected + summary.records.filtered != total {
        return Err(Error::Conflict(format!(
            "gather of {job_id}: counts do not add up ({} written + {} rejected + {} filtered != {total} records)",
            summary.records.written, summary.records.rejected, summary.records.filtered
        )));
    }
    let summary_bytes = serde_json::to_vec_pretty(&summary).map_err(|e| Error::backend("json", "encode summary", e))?;
    bucket::put(store, &format!("{prefix}/summary.json"), summary_bytes).await
}

/// Every request counted for a job: the planners' (`calls/`), the chunks', and this gather's
/// so far plus the summary's own write.
async fn job_calls(
    store: &dyn ObjectStore,
    prefix: &str,
    chunks: &[ChunkRecord],
    tally: &Tally,
) -> Result<crate::calls::ApiCalls> {
    use futures::TryStreamExt;
    let mut all = crate::calls::ApiCalls::new();
    let files: Vec<_> = store.list(Some(&Path::from(format!("{prefix}/calls")))).try_collect().await?;
    for f in files {
        if let Some(bytes) = bucket::get_opt(store, f.location.as_ref()).await? {
            let calls: crate::calls::ApiCalls = serde_json::from_slice(&bytes)
                .map_err(|e| Error::backend("json", format!("corrupt {}", f.location), e))?;
            crate::calls::add(&mut all, &calls);
        }
    }
    for c in chunks {
        crate::calls::add(&mut all, &c.api_calls);
    }
    crate::calls::add(&mut all, &tally.snapshot());
    if all.keys().any(|k| k.starts_with("s3.")) {
        *all.entry("s3.PutObject".into()).or_default() += 1;
    }
    Ok(all)
}

/// Concatenate `parts` (path, size its chunk committed) after `head` into one object with a
/// multipart upload, one part in memory at a time. A part whose size differs from the
/// committed one fails the gather instead of being merged.
async fn merge(
    store: &dyn ObjectStore,
    path: &str,
    head: Vec<u8>,
    parts: impl Iterator<Item = (String, u64)>,
) -> Result<()> {
    let fail = |e: object_store::Error| Error::backend("object_store", format!("failed to write {path}"), e);
    let upload = store.put_multipart(&Path::from(path)).await.map_err(fail)?;
    let mut w = WriteMultipart::new(upload);
    w.write(&head);
    for (part, size) in parts {
        let bytes = match bucket::get_opt(store, &part).await {
            Ok(Some(b)) if b.len() as u64 == size => b,
            Ok(Some(b)) => {
                w.abort().await.map_err(fail)?;
                return Err(Error::Conflict(format!(
                    "part {part} holds {} bytes; its chunk committed {size}",
                    b.len()
                )));
            }
            Ok(None) => {
                w.abort().await.map_err(fail)?;
                return Err(Error::NotFound(format!("part {part} of a committed chunk")));
            }
            Err(e) => {
                w.abort().await.map_err(fail)?;
                return Err(e);
            }
        };
        w.wait_for_capacity(4).await.map_err(fail)?;
        w.put(bytes);
    }
    w.finish().await.map_err(fail)?;
    Ok(())
}
