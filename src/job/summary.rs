//! What a finished job reports: `summary.json` and `manifest.json`. Field names are stable
//! (programs read them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::ChunkRecord;
use crate::plan::Chunk;

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
    /// What the sink keeps of a key written more than once: `newest` (the later job's item,
    /// and within a job the later record's) or `last written` (unordered DynamoDB writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_keeps: Option<String>,
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
    /// How workers read its chunks: `range` (not compressed: a ranged read), `gzip-index`
    /// (from deflate block resume points), `zstd-frames` (from frame starts), `plain-copy`
    /// (a compressed stream with no point to resume at, such as a single zstd frame: the
    /// planner stored it decompressed once, and workers read ranges of that), or `from-start`
    /// (plans made before resume points: each chunk decodes everything before it).
    #[serde(default)]
    pub decoding: String,
    /// Bytes the workers decode to read its chunks (for `range`, the bytes read).
    #[serde(default)]
    pub decoded_bytes: u64,
    /// The bytes of its gzip resume windows, stored beside the plan (up to 32 KiB a chunk).
    #[serde(default)]
    pub windows_bytes: u64,
}

impl InputSummary {
    /// The summary of input `index` of `plan`.
    pub fn of(plan: &super::JobPlan, index: usize) -> Self {
        use crate::config::Compression;
        let input = &plan.inputs[index];
        let chunks = plan.chunks.iter().filter(|c| c.input as usize == index);
        let from = |c: &crate::plan::Chunk| match input.object.compression {
            _ if input.plain_copy => c.start,
            Compression::None | Compression::Auto => c.start,
            _ => c.resume.as_ref().map_or(0, |r| r.point.out),
        };
        let decoded_bytes = chunks.clone().map(|c| c.end - from(c)).sum();
        let resumed = chunks.clone().any(|c| from(c) > 0);
        let decoding = match input.object.compression {
            Compression::None | Compression::Auto => "range",
            _ if input.plain_copy => "plain-copy",
            _ if !resumed && chunks.count() > 1 => "from-start",
            Compression::Zstd => "zstd-frames",
            Compression::Gzip => "gzip-index",
        };
        InputSummary {
            location: input.object.location.clone(),
            bytes: input.object.size,
            records: input.records,
            decoding: decoding.into(),
            decoded_bytes,
            windows_bytes: input.windows_bytes,
        }
    }
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
