//! Where a job stands (`sluicebox status`), read from the ledger (its record and committed
//! chunks) and the bucket (its plan, summary or failure), local or on AWS; and the recent jobs
//! of a bucket.

use std::collections::BTreeMap;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use super::{now_ms, JobObjects};
use crate::backends::ledger::{self, JobStatus};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// One job's state. Field names are stable (programs read `--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The job id.
    pub job_id: String,
    /// `planning`, `running`, `gathering`, `complete` or `failed`.
    pub state: String,
    /// Chunks committed.
    pub chunks_done: u32,
    /// Chunks in the plan (0 while planning).
    pub chunks_total: u32,
    /// Records in the inputs (0 while planning).
    pub records_total: u64,
    /// Records in the committed chunks.
    pub records_done: u64,
    /// Of them written, rejected and filtered.
    pub written: u64,
    /// Rejected.
    pub rejected: u64,
    /// Filtered.
    pub filtered: u64,
    /// Rejects by rule so far.
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// When the job was created (RFC 3339).
    pub started_at: String,
    /// Seconds since it was created (to its end, once it ended).
    pub elapsed_s: f64,
    /// Seconds left at the rate of the chunks committed so far, while it runs.
    pub eta_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The summary, once complete.
    pub summary: Option<String>,
    /// What the sink's writes cost so far (the committed chunks'; the summary's once
    /// complete), for a sink that counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_figures: Option<crate::backends::sink::SinkFigures>,
    /// The `[rejects]` threshold that stopped the job, with the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<crate::model::rejects::Stop>,
}

/// The state of job `job_id`.
pub async fn status(engine: &Engine, job_id: &str) -> Result<Status> {
    let job = engine.ledger.get_job(job_id).await?.ok_or_else(|| {
        Error::NotFound(format!("job {job_id} in the ledger (`sluicebox status` without an id lists the jobs)"))
    })?;
    let objects = JobObjects::new(engine.bucket.clone(), job_id);
    let now = now_ms();
    let mut s = Status {
        job_id: job_id.to_string(),
        state: job.status.as_str().to_string(),
        chunks_done: job.done_chunks,
        chunks_total: job.total_chunks.unwrap_or(0),
        records_total: 0,
        records_done: 0,
        written: 0,
        rejected: 0,
        filtered: 0,
        rejects_by_rule: BTreeMap::new(),
        started_at: rfc3339(job.created_ms),
        elapsed_s: (now - job.created_ms).max(0) as f64 / 1000.0,
        eta_s: None,
        error: None,
        summary: None,
        sink_figures: None,
        stopped_by: None,
    };
    match job.status {
        JobStatus::Complete => {
            if let Some(summary) = objects.summary().await? {
                let r = &summary.records;
                (s.records_total, s.records_done) = (r.total, r.total);
                (s.written, s.rejected, s.filtered) = (r.written, r.rejected, r.filtered);
                s.rejects_by_rule = summary.rejects_by_rule.clone();
                s.elapsed_s = summary.timings.duration_ms as f64 / 1000.0;
                s.summary = Some(summary.outputs.summary);
                s.sink_figures = summary.sink_figures;
                return Ok(s);
            }
        }
        JobStatus::Failed => {
            let failure = objects.failure().await?;
            s.error = failure.as_ref().map(|f| f.to_string());
            s.stopped_by = failure.and_then(|f| f.stopped_by).map(|stop| *stop);
        }
        JobStatus::Planning => return Ok(s),
        JobStatus::Running | JobStatus::Gathering => {}
    }
    if let Ok(plan) = objects.plan().await {
        s.records_total = plan.total_records();
    }
    let chunks = engine.ledger.chunks(job_id).await?;
    let counts = ledger::total_counts(&chunks);
    (s.written, s.rejected, s.filtered) = (counts.written, counts.rejected, counts.filtered);
    s.records_done = counts.written + counts.rejected + counts.filtered;
    s.rejects_by_rule = counts.rejects_by_rule;
    s.chunks_done = chunks.len() as u32;
    s.sink_figures = crate::backends::sink::SinkFigures::sum(chunks.iter().filter_map(|c| c.sink_figures.as_ref()));
    if job.status == JobStatus::Running {
        s.eta_s = eta(s.records_done, s.records_total, job.planned_ms.unwrap_or(job.created_ms), now);
    }
    Ok(s)
}

/// Seconds left for `total - done` records at the rate since `since_ms`; none before the first
/// chunk is done.
fn eta(done: u64, total: u64, since_ms: i64, now_ms: i64) -> Option<f64> {
    let spent = (now_ms - since_ms).max(1) as f64 / 1000.0;
    (done > 0).then(|| total.saturating_sub(done) as f64 * spent / done as f64)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The most recent `limit` jobs with objects in the engine's bucket, newest first, as the
/// ledger knows them (a job in the bucket but not in the ledger is left out).
pub async fn recent(engine: &Engine, limit: usize) -> Result<Vec<crate::backends::ledger::JobRecord>> {
    let listed =
        engine.bucket.list_with_delimiter(Some(&object_store::path::Path::from("jobs"))).await.map_err(|e| {
            Error::backend(crate::error::Backend::ObjectStore, format!("cannot list {}/jobs/", engine.bucket_url), e)
        })?;
    let ids: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    let mut jobs = Vec::new();
    for id in ids {
        if let Some(job) = engine.ledger.get_job(&id).await? {
            jobs.push(job);
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.created_ms));
    jobs.truncate(limit);
    Ok(jobs)
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = crate::backends::cost::thousands;
        writeln!(f, "job {}: {}", self.job_id, self.state)?;
        writeln!(f, "chunks:  {} of {} done", self.chunks_done, self.chunks_total)?;
        let share =
            if self.records_total > 0 { 100.0 * self.records_done as f64 / self.records_total as f64 } else { 0.0 };
        writeln!(
            f,
            "records: {} of {} ({share:.0}%): {} written, {} rejected, {} filtered",
            n(self.records_done),
            n(self.records_total),
            n(self.written),
            n(self.rejected),
            n(self.filtered)
        )?;
        if !self.rejects_by_rule.is_empty() {
            let rules: Vec<String> = self.rejects_by_rule.iter().map(|(r, c)| format!("{r} {}", n(*c))).collect();
            writeln!(f, "rejects: {}", rules.join(", "))?;
        }
        let eta = self.eta_s.map(|s| format!(", about {} left", seconds(s))).unwrap_or_default();
        writeln!(f, "time:    started {}, {} elapsed{eta}", self.started_at, seconds(self.elapsed_s))?;
        if let Some(figures) = &self.sink_figures {
            writeln!(f, "sink:    {figures}")?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "error:   {e}")?;
        }
        if let Some(stop) = &self.stopped_by {
            writeln!(f, "sink:    {}", stop.sink)?;
        }
        if let Some(s) = &self.summary {
            writeln!(f, "summary: {s}")?;
        }
        Ok(())
    }
}

/// `42 s`, `3 min 5 s`, `2 h 4 min`.
fn seconds(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// One line per job, newest first, for a person.
pub fn table(jobs: &[crate::backends::ledger::JobRecord]) -> String {
    if jobs.is_empty() {
        return "no jobs in this bucket\n".into();
    }
    let mut out = format!("{:<40} {:<10} {:>13}  {}\n", "JOB", "STATE", "CHUNKS", "STARTED");
    for j in jobs {
        let chunks = match j.total_chunks {
            Some(t) => format!("{}/{t}", j.done_chunks),
            None => "-".into(),
        };
        out += &format!("{:<40} {:<10} {:>13}  {}\n", j.job_id, j.status.as_str(), chunks, rfc3339(j.created_ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_follows_the_rate_so_far() {
        assert_eq!(eta(0, 100, 0, 10_000), None);
        assert_eq!(eta(25, 100, 0, 10_000), Some(30.0));
        assert_eq!(eta(100, 100, 0, 10_000), Some(0.0));
        assert_eq!(seconds(3725.0), "1 h 2 min");
        assert_eq!(seconds(65.0), "1 min 5 s");
    }
}
