//! In-memory ledger, for tests and single-process runs that need no resume.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{check_checkpoint_size, Checkpoint, ChunkRecord, JobRecord, JobStatus, LedgerCommit, StateStore};
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Job {
    record: Option<JobRecord>,
    chunks: BTreeMap<u32, ChunkRecord>,
}

/// A ledger held in mutex-guarded maps.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    jobs: Mutex<HashMap<String, Job>>,
    checkpoints: Mutex<HashMap<String, Checkpoint>>,
}

impl MemoryLedger {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Job>) -> T) -> T {
        // A poisoned lock means another thread panicked mid-update; the map itself is still
        // consistent because every update below is a single insert or field write.
        let mut guard = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn with_checkpoints<T>(&self, f: impl FnOnce(&mut HashMap<String, Checkpoint>) -> T) -> T {
        // As above: every update is a single insert or remove.
        let mut guard = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl StateStore for MemoryLedger {
    async fn create_job(&self, job: &JobRecord) -> Result<bool> {
        Ok(self.with(|jobs| {
            let entry = jobs.entry(job.job_id.clone()).or_default();
            if entry.record.is_some() {
                return false;
            }
            entry.record = Some(job.clone());
            true
        }))
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        Ok(self.with(|jobs| jobs.get(job_id).and_then(|j| j.record.clone())))
    }

    async fn set_planned(&self, job_id: &str, total_chunks: u32, planned_ms: i64) -> Result<bool> {
        Ok(self.with(|jobs| match jobs.get_mut(job_id).and_then(|j| j.record.as_mut()) {
            Some(r) if r.status == JobStatus::Planning => {
                r.status = JobStatus::Running;
                r.total_chunks = Some(total_chunks);
                r.planned_ms = Some(planned_ms);
                true
            }
            _ => false,
        }))
    }

    async fn commit_chunk(&self, job_id: &str, chunk: &ChunkRecord) -> Result<LedgerCommit> {
        self.with(|jobs| {
            let missing = || Error::Conflict(format!("job {job_id} does not exist"));
            let job = jobs.get_mut(job_id).ok_or_else(missing)?;
            let record = job.record.as_mut().ok_or_else(missing)?;
            if record.created_ms != chunk.generation {
                return Err(Error::Conflict(format!("job {job_id} was made anew since this chunk's run began")));
            }
            let total =
                record.total_chunks.ok_or_else(|| Error::Conflict(format!("job {job_id} is not planned yet")))?;
            if chunk.index >= total {
                return Err(Error::Conflict(format!(
                    "chunk {} is outside job {job_id}'s plan of {total} chunks",
                    chunk.index
                )));
            }
            if job.chunks.contains_key(&chunk.index) {
                return Ok(LedgerCommit::Duplicate);
            }
            job.chunks.insert(chunk.index, chunk.clone());
            record.done_chunks += 1;
            record.records_done += chunk.counts.total();
            record.rejected += chunk.counts.rejected;
            let done = record.done_chunks;
            let (records, rejected) = (record.records_done, record.rejected);
            Ok(LedgerCommit::First { done, total, finalize: done == total, records, rejected })
        })
    }

    async fn get_chunk(&self, job_id: &str, index: u32) -> Result<Option<ChunkRecord>> {
        Ok(self.with(|jobs| jobs.get(job_id).and_then(|j| j.chunks.get(&index).cloned())))
    }

    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRecord>> {
        Ok(self.with(|jobs| jobs.get(job_id).map(|j| j.chunks.values().cloned().collect()).unwrap_or_default()))
    }

    async fn set_status(&self, job_id: &str, from: JobStatus, to: JobStatus) -> Result<bool> {
        Ok(self.with(|jobs| match jobs.get_mut(job_id).and_then(|j| j.record.as_mut()) {
            Some(r) if r.status == from => {
                r.status = to;
                true
            }
            _ => false,
        }))
    }

    async fn take_gather_lease(&self, job_id: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        Ok(self.with(|jobs| match jobs.get_mut(job_id).and_then(|j| j.record.as_mut()) {
            Some(r)
                if r.status == JobStatus::Running
                    || (r.status == JobStatus::Gathering && r.lease_until_ms < now_ms) =>
            {
                r.status = JobStatus::Gathering;
                r.lease_until_ms = until_ms;
                true
            }
            _ => false,
        }))
    }

    async fn renew_gather_lease(&self, job_id: &str, held_ms: i64, until_ms: i64) -> Result<bool> {
        Ok(self.with(|jobs| match jobs.get_mut(job_id).and_then(|j| j.record.as_mut()) {
            Some(r) if r.status == JobStatus::Gathering && r.lease_until_ms == held_ms => {
                r.lease_until_ms = until_ms;
                true
            }
            _ => false,
        }))
    }

    async fn delete_job(&self, job_id: &str) -> Result<()> {
        self.with(|jobs| jobs.remove(job_id));
        Ok(())
    }

    async fn get_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        Ok(self.with_checkpoints(|c| c.get(name).cloned()))
    }

    async fn put_checkpoint(&self, name: &str, expected: u64, state: &str) -> Result<bool> {
        check_checkpoint_size(name, state)?;
        Ok(self.with_checkpoints(|c| {
            if c.get(name).map_or(0, |cp| cp.version) != expected {
                return false;
            }
            c.insert(name.to_string(), Checkpoint { version: expected + 1, state: state.to_string() });
            true
        }))
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        self.with_checkpoints(|c| c.remove(name));
        Ok(())
    }
}
