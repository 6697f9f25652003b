//! What a finished job reports: `summary.json` and `manifest.json`. Field names are stable
//! (programs read them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backends::ledger::ChunkRecord;
use crate::input::plan::Chunk;

/// `summary.json`: what a job did. Field names are stable (programs read them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The job id.
    pub job_id: String,
    /// `succeeded` (no rejects), `completed_with_rejects`, or `failed` (stopped by a
    /// `[rejects]` threshold: `stopped_by` says which).
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
    /// What the sink's writes cost, summed over the chunks' commits: write requests, items
    /// written, write units consumed (DynamoDB; `null` for a SQLite table, which has none),
    /// throttled requests and items sent again. Absent without a sink. A chunk worked more
    /// than once counts the attempt that committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_figures: Option<crate::backends::sink::SinkFigures>,
    /// When and how long.
    pub timings: Timings,
    /// Records per second over the whole job.
    pub records_per_s: f64,
    /// Cloud API requests the job made, by `"service.Operation"` (empty on the embedded
    /// engine): planning and enqueueing, every chunk's reads, writes, commit and task
    /// messages, and the gather up to writing this summary.
    #[serde(default)]
    pub api_calls: crate::backends::calls::ApiCalls,
    /// `api_calls` summed, per input record.
    #[serde(default)]
    pub api_calls_per_record: f64,
    /// True when this run found the job already complete and did nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_complete: bool,
    /// The `[rejects]` thresholds the job was judged by, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<crate::model::rejects::Thresholds>,
    /// The threshold that stopped the job, with the figures (status `failed`): its outputs
    /// were not merged and its sink rows not published (see `stopped_by.sink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<crate::model::rejects::Stop>,
    /// The job whose rejected records this job took again (`sluicebox redrive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<String>,
    /// What the job noticed but did not stop for (columns it does not declare).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    pub decoding: Decoding,
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
        use crate::model::config::Compression;
        let input = &plan.inputs[index];
        let chunks: Vec<_> =
            plan.chunks.iter().flat_map(|c| c.pieces()).filter(|p| p.input as usize == index).collect();
        let from = |c: &crate::input::plan::Piece| match input.object.compression {
            _ if input.plain_copy => c.start,
            Compression::None | Compression::Auto => c.start,
            _ => c.resume.as_ref().map_or(0, |r| r.point.out),
        };
        let decoded_bytes = chunks.iter().map(|c| c.end - from(c)).sum();
        let resumed = chunks.iter().any(|c| from(c) > 0);
        let decoding = match input.object.compression {
            Compression::None | Compression::Auto => Decoding::Range,
            _ if input.plain_copy => Decoding::PlainCopy,
            _ if !resumed && chunks.len() > 1 => Decoding::FromStart,
            Compression::Zstd => Decoding::ZstdFrames,
            Compression::Gzip => Decoding::GzipIndex,
        };
        InputSummary {
            location: input.object.location.clone(),
            bytes: input.object.size,
            records: input.records,
            decoding,
            decoded_bytes,
            windows_bytes: input.windows_bytes,
        }
    }
}

/// How workers read an input's chunks (`decoding` in `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decoding {
    /// Not compressed: each chunk is a ranged read (also what summaries without the field mean).
    #[default]
    Range,
    /// From deflate block resume points.
    GzipIndex,
    /// From zstd frame starts.
    ZstdFrames,
    /// From a copy the planner decompressed once (no resume point near enough).
    PlainCopy,
    /// Plans made before resume points: each chunk decodes everything before it.
    FromStart,
}

impl Decoding {
    /// The name `summary.json` gives it, e.g. `gzip-index`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decoding::Range => "range",
            Decoding::GzipIndex => "gzip-index",
            Decoding::ZstdFrames => "zstd-frames",
            Decoding::PlainCopy => "plain-copy",
            Decoding::FromStart => "from-start",
        }
    }
}

impl std::fmt::Display for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoding::Range => "read by byte range",
            Decoding::GzipIndex => "resumed at gzip blocks",
            Decoding::ZstdFrames => "resumed at zstd frames",
            Decoding::PlainCopy => "decompressed once into a copy (no resume point near enough), chunks read from it",
            Decoding::FromStart => "each chunk decoded from the start",
        })
    }
}

/// The summary as a person reads it at the end of `sluicebox run`: counts, how compressed
/// inputs were read, rejects by rule, where the outputs are.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.records;
        if self.already_complete {
            writeln!(f, "job {} was already complete (use --force to run it again)", self.job_id)?;
        }
        writeln!(
            f,
            "job {} {}: {} records: {} written, {} rejected, {} filtered ({} chunks, {:.1} s, {:.0} records/s)",
            self.job_id,
            self.status,
            r.total,
            r.written,
            r.rejected,
            r.filtered,
            self.chunks.total,
            self.timings.duration_ms as f64 / 1000.0,
            self.records_per_s
        )?;
        if let Some(from) = &self.redriven_from {
            writeln!(f, "redrive of job {from}: its rejected records, taken again")?;
        }
        if let Some(stop) = &self.stopped_by {
            writeln!(f, "{stop}")?;
            writeln!(f, "sink: {}", stop.sink)?;
        } else if let Some(t) = &self.thresholds {
            writeln!(f, "thresholds: {} (not passed)", t.describe())?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for i in self.inputs.iter().filter(|i| i.decoding != Decoding::Range) {
            let windows = match i.windows_bytes {
                0 => String::new(),
                n => format!(" ({n} bytes of resume windows)"),
            };
            writeln!(f, "{}: {}, {} bytes decoded{windows}", i.location, i.decoding, i.decoded_bytes)?;
        }
        if !self.rejects_by_rule.is_empty() {
            let rules: Vec<String> = self.rejects_by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "rejects by rule: {}", rules.join(", "))?;
        }
        let o = &self.outputs;
        write!(f, "output:  {}\nrejects: {}\nsummary: {}\n", o.output, o.rejects, o.summary)?;
        if let Some(table) = &self.sink {
            writeln!(f, "sink:    table {table}")?;
        }
        if let Some(figures) = &self.sink_figures {
            writeln!(f, "sink writes: {figures}")?;
        }
        if self.sink_keeps.as_deref() == Some("last written") {
            writeln!(
                f,
                "warning: unordered sink writes ([sink] ordered = false): of a key written twice, the last write stays"
            )?;
        }
        Ok(())
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
    /// In chunks never worked: a job stopped by a threshold. `total == written + rejected +
    /// filtered + not_worked`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_worked: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_names_are_the_ones_summary_json_has_and_old_summaries_read_as_range() {
        for d in [Decoding::Range, Decoding::GzipIndex, Decoding::ZstdFrames, Decoding::PlainCopy, Decoding::FromStart]
        {
            assert_eq!(serde_json::to_value(d).unwrap(), serde_json::json!(d.as_str()));
            assert_eq!(serde_json::from_value::<Decoding>(serde_json::json!(d.as_str())).unwrap(), d);
        }
        let old: InputSummary = serde_json::from_str(r#"{"location": "x", "bytes": 1, "records": 1}"#).unwrap();
        assert_eq!(old.decoding, Decoding::Range);
    }
}
