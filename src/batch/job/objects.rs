//! A job's objects in the bucket, under `jobs/<id>/`: the one place their names are spelled,
//! with typed reads and writes.
//!
//! | object | written by |
//! |---|---|
//! | `job.json` (the [`JobDefinition`]), `plan.json` (the [`JobPlan`]) | the planner, create-only |
//! | `parts/NNNNNN-ATTEMPT.out`, `parts/NNNNNN-ATTEMPT.rejects.jsonl` | an attempt at chunk N, before its commit (which names the attempt) |
//! | `calls/<ms>-<pid>.json` | a planner or submitter: the API calls it made |
//! | `sent.json` (a [`Sent`]) | the submitter, once every task of the plan is on the queue |
//! | `output.csv` / `output.jsonl` / `output.parquet`, `rejects.jsonl`, `manifest.json`, `summary.json`, `report.html` | the gather |
//! | `failed.json` (a [`Failure`]) | the worker that fails the job |

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::summary::{Manifest, Summary};
use super::{Failure, JobPlan};
use crate::backends::bucket;
use crate::backends::calls::ApiCalls;
use crate::error::{Error, Result};
use crate::model::config::{JobDefinition, OutputFormat};

/// `sent.json`: a submitter put every task of the plan on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Sent {
    /// Tasks sent (chunks not yet committed when they were sent).
    pub tasks: u32,
    /// When the last was sent, ms since the Unix epoch.
    pub at_ms: i64,
}

/// `gathered.json`: the steps of a gather already done, so that a gather cut off (a Lambda
/// function out of time) is continued by the next gatherer rather than begun again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Gathered {
    /// The run of the job the steps were done for (its creation time).
    pub generation: i64,
    /// The steps done: `sink`, `output`, `rejects`, then `archive` and `notify`.
    pub steps: Vec<String>,
}

/// The objects of one job in one bucket.
#[derive(Debug, Clone)]
pub struct JobObjects {
    store: Arc<dyn ObjectStore>,
    job_id: String,
    prefix: String,
}

/// Which part of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Its encoded output records.
    Output,
    /// Its rejects, JSON Lines.
    Rejects,
}

impl JobObjects {
    /// The objects of job `job_id` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, job_id: &str) -> Self {
        JobObjects { store, job_id: job_id.to_string(), prefix: format!("jobs/{job_id}") }
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// `jobs/<id>`: every object of the job is under it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store.
    pub fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    fn name(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }

    /// `jobs/<id>/job.json`.
    pub fn definition_path(&self) -> String {
        self.name("job.json")
    }

    /// `jobs/<id>/plan.json`.
    pub fn plan_path(&self) -> String {
        self.name("plan.json")
    }

    /// `jobs/<id>/index/000003.windows`: the resume windows of compressed input 3, which its
    /// chunks' resume points name by offset.
    pub fn windows_path(&self, input: u32) -> String {
        self.name(&format!("index/{input:06}.windows"))
    }

    /// `jobs/<id>/parts/input-000003.plain`: compressed input 3 decompressed, when it has no
    /// resume points (deleted with the parts after the gather).
    pub fn plain_copy_path(&self, input: u32) -> String {
        format!("{}/input-{input:06}.plain", self.parts_prefix())
    }

    /// Bytes `start..end` of input `input`'s plain copy.
    pub async fn plain_copy_range(&self, input: u32, start: u64, end: u64) -> Result<bytes::Bytes> {
        let path = object_store::path::Path::from(self.plain_copy_path(input));
        self.store()
            .get_range(&path, start..end)
            .await
            .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e))
    }

    /// `len` bytes at `at` of input `input`'s resume windows.
    pub async fn window(&self, input: u32, at: u64, len: u32) -> Result<bytes::Bytes> {
        let path = object_store::path::Path::from(self.windows_path(input));
        self.store()
            .get_range(&path, at..at + u64::from(len))
            .await
            .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e))
    }

    /// `jobs/<id>/summary.json`.
    pub fn summary_path(&self) -> String {
        self.name("summary.json")
    }

    /// `jobs/<id>/report.html`.
    pub fn report_path(&self) -> String {
        self.name("report.html")
    }

    /// `jobs/<id>/manifest.json`.
    pub fn manifest_path(&self) -> String {
        self.name("manifest.json")
    }

    /// `jobs/<id>/failed.json`.
    pub fn failure_path(&self) -> String {
        self.name("failed.json")
    }

    /// `jobs/<id>/sent.json`.
    pub fn sent_path(&self) -> String {
        self.name("sent.json")
    }

    /// `jobs/<id>/gathered.json`.
    pub fn gathered_path(&self) -> String {
        self.name("gathered.json")
    }

    /// `jobs/<id>/output.csv`, `output.jsonl` or `output.parquet`.
    pub fn output_path(&self, format: OutputFormat) -> String {
        self.name(match format {
            OutputFormat::Csv => "output.csv",
            OutputFormat::Jsonl => "output.jsonl",
            OutputFormat::Parquet => "output.parquet",
        })
    }

    /// `jobs/<id>/redrive/N-NAME`: the rejected records of the job's input `N` (named
    /// `NAME`), the input of a redrive of it.
    pub fn redrive_input_path(&self, input: usize, name: &str) -> String {
        self.name(&format!("redrive/{input}-{name}"))
    }

    /// `jobs/<id>/rejects.jsonl`.
    pub fn rejects_path(&self) -> String {
        self.name("rejects.jsonl")
    }

    /// `jobs/<id>/parts`: scratch, deleted once the gather has merged it.
    pub fn parts_prefix(&self) -> String {
        self.name("parts")
    }

    /// Where `attempt` at chunk `index` writes its `part`: `jobs/<id>/parts/000042-ATTEMPT.out`
    /// or `…/000042-ATTEMPT.rejects.jsonl` (an empty attempt: `000042.out`, as parts were
    /// named before attempts were). Each attempt writes its own objects, and the commit names
    /// the one the gather reads, so a late attempt never replaces a committed chunk's parts.
    pub fn part_path(&self, part: Part, index: u32, attempt: &str) -> String {
        let stem = if attempt.is_empty() { format!("{index:06}") } else { format!("{index:06}-{attempt}") };
        match part {
            Part::Output => self.name(&format!("parts/{stem}.out")),
            Part::Rejects => self.name(&format!("parts/{stem}.rejects.jsonl")),
        }
    }

    /// `jobs/<id>/calls`: the API calls of planners and submitters, one file each.
    pub fn calls_prefix(&self) -> String {
        self.name("calls")
    }

    /// The job's definition (`NotFound` when it has none).
    pub async fn definition(&self) -> Result<JobDefinition> {
        self.read(&self.definition_path()).await?.ok_or_else(|| Error::NotFound(self.definition_path()))
    }

    /// Store the job's definition unless one is stored; `false` when one was.
    pub async fn put_definition_once(&self, definition: &JobDefinition) -> Result<bool> {
        bucket::put_if_absent(self.store(), &self.definition_path(), json_bytes(definition)?).await
    }

    /// The job's plan (`NotFound` when it has none).
    pub async fn plan(&self) -> Result<JobPlan> {
        self.read(&self.plan_path()).await?.ok_or_else(|| Error::NotFound(self.plan_path()))
    }

    /// Store the job's plan unless one is stored; `false` when one was (another planner won).
    pub async fn put_plan_once(&self, plan: &JobPlan) -> Result<bool> {
        bucket::put_if_absent(self.store(), &self.plan_path(), json_bytes(plan)?).await
    }

    /// The job's summary, if it has one.
    pub async fn summary(&self) -> Result<Option<Summary>> {
        self.read(&self.summary_path()).await
    }

    /// Write the summary.
    pub async fn put_summary(&self, summary: &Summary) -> Result<()> {
        bucket::put(self.store(), &self.summary_path(), json_bytes(summary)?).await
    }

    /// Write the report (see [`crate::batch::report`]).
    pub async fn put_report(&self, html: String) -> Result<()> {
        bucket::put(self.store(), &self.report_path(), html.into_bytes()).await
    }

    /// Write the manifest.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        bucket::put(self.store(), &self.manifest_path(), json_bytes(manifest)?).await
    }

    /// Why the job failed, if it did.
    pub async fn failure(&self) -> Result<Option<Failure>> {
        self.read(&self.failure_path()).await
    }

    /// The error a failed job ends with: its `failed.json`, as a message.
    pub async fn failure_error(&self) -> Error {
        let path = self.failure_path();
        match self.failure().await {
            Ok(Some(f)) => Error::JobFailed { job_id: self.job_id().to_string(), reason: f.to_string() },
            Ok(None) => {
                let reason = format!("job {} failed ({path} is missing)", self.job_id());
                Error::JobFailed { job_id: self.job_id().to_string(), reason }
            }
            Err(e) => e,
        }
    }

    /// Write why the job failed.
    pub async fn put_failure(&self, failure: &Failure) -> Result<()> {
        bucket::put(self.store(), &self.failure_path(), json_bytes(failure)?).await
    }

    /// Whether a submitter sent every task of the plan, and when.
    pub async fn sent(&self) -> Result<Option<Sent>> {
        self.read(&self.sent_path()).await
    }

    /// Record that every task of the plan is on the queue: until then a job that is planned
    /// may be missing tasks (its submitter died half-way), and submitting it again sends them.
    pub async fn put_sent(&self, sent: &Sent) -> Result<()> {
        bucket::put(self.store(), &self.sent_path(), json_bytes(sent)?).await
    }

    /// The steps of this job's gather done so far.
    pub async fn gathered(&self) -> Result<Option<Gathered>> {
        self.read(&self.gathered_path()).await
    }

    /// Record the steps of this job's gather done so far.
    pub async fn put_gathered(&self, gathered: &Gathered) -> Result<()> {
        bucket::put(self.store(), &self.gathered_path(), json_bytes(gathered)?).await
    }

    /// Write one of a chunk's parts for one attempt.
    pub async fn put_part(&self, part: Part, index: u32, attempt: &str, bytes: Vec<u8>) -> Result<()> {
        bucket::put(self.store(), &self.part_path(part, index, attempt), bytes).await
    }

    /// Keep the API calls a planner or submitter made, in a file of its own.
    pub async fn put_calls(&self, calls: &ApiCalls, now_ms: i64) -> Result<()> {
        let path = self.name(&format!("calls/{now_ms}-{}.json", std::process::id()));
        bucket::put(self.store(), &path, json_bytes(calls)?).await
    }

    /// Every API call the planners and submitters kept, summed.
    pub async fn calls(&self) -> Result<ApiCalls> {
        use futures::TryStreamExt;
        let mut all = ApiCalls::new();
        let prefix = object_store::path::Path::from(self.calls_prefix());
        let files: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for f in files {
            if let Some(calls) = self.read::<ApiCalls>(f.location.as_ref()).await? {
                crate::backends::calls::add(&mut all, &calls);
            }
        }
        Ok(all)
    }

    /// Delete the parts (after the gather merged them).
    pub async fn delete_parts(&self) -> Result<()> {
        bucket::delete_prefix(self.store(), &self.parts_prefix()).await
    }

    /// Delete every object of the job.
    pub async fn delete_all(&self) -> Result<()> {
        bucket::delete_prefix(self.store(), &self.prefix).await
    }

    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match bucket::get_opt(self.store(), path).await? {
            None => Ok(None),
            Some(b) => {
                serde_json::from_slice(&b).map(Some).map_err(|e| Error::internal("json", format!("corrupt {path}"), e))
            }
        }
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::internal("json", "encode", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> JobObjects {
        JobObjects::new(Arc::new(object_store::memory::InMemory::new()), "orders-1a2b")
    }

    #[test]
    fn every_name_is_under_the_jobs_prefix() {
        let o = objects();
        assert_eq!(o.prefix(), "jobs/orders-1a2b");
        assert_eq!(o.definition_path(), "jobs/orders-1a2b/job.json");
        assert_eq!(o.plan_path(), "jobs/orders-1a2b/plan.json");
        assert_eq!(o.summary_path(), "jobs/orders-1a2b/summary.json");
        assert_eq!(o.manifest_path(), "jobs/orders-1a2b/manifest.json");
        assert_eq!(o.report_path(), "jobs/orders-1a2b/report.html");
        assert_eq!(o.failure_path(), "jobs/orders-1a2b/failed.json");
        assert_eq!(o.output_path(OutputFormat::Csv), "jobs/orders-1a2b/output.csv");
        assert_eq!(o.output_path(OutputFormat::Jsonl), "jobs/orders-1a2b/output.jsonl");
        assert_eq!(o.rejects_path(), "jobs/orders-1a2b/rejects.jsonl");
        assert_eq!(o.part_path(Part::Output, 42, "9f3a"), "jobs/orders-1a2b/parts/000042-9f3a.out");
        assert_eq!(o.part_path(Part::Rejects, 7, "9f3a"), "jobs/orders-1a2b/parts/000007-9f3a.rejects.jsonl");
        assert_eq!(o.part_path(Part::Output, 42, ""), "jobs/orders-1a2b/parts/000042.out", "parts of old commits");
        assert!(o.part_path(Part::Output, 3, "x").starts_with(&o.parts_prefix()));
    }

    #[tokio::test]
    async fn plans_and_definitions_are_written_once_and_read_back() {
        let o = objects();
        assert!(matches!(o.plan().await, Err(Error::NotFound(p)) if p == o.plan_path()));
        let plan = JobPlan {
            job_id: "orders-1a2b".into(),
            inputs: Vec::new(),
            chunks: Vec::new(),
            output_fields: Some(vec!["a".into()]),
            output_format: OutputFormat::Csv,
            order: 1,
            warnings: Vec::new(),
        };
        assert!(o.put_plan_once(&plan).await.unwrap());
        let other = JobPlan { output_fields: None, ..plan.clone() };
        assert!(!o.put_plan_once(&other).await.unwrap(), "a second plan loses");
        assert_eq!(o.plan().await.unwrap().output_fields, plan.output_fields, "the first plan stays");
        let def = crate::model::config::JobConfig::default().resolve(std::path::Path::new("/")).unwrap();
        assert!(o.put_definition_once(&def).await.unwrap());
        assert!(!o.put_definition_once(&def).await.unwrap());
        assert_eq!(o.definition().await.unwrap().config.sink.batch, def.config.sink.batch);
        assert!(o.summary().await.unwrap().is_none());
        assert!(o.failure().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn calls_files_add_up_and_parts_are_deleted_alone() {
        let o = objects();
        o.put_calls(&ApiCalls::from([("s3.GetObject".into(), 2)]), 1).await.unwrap();
        o.put_calls(&ApiCalls::from([("s3.GetObject".into(), 3), ("sqs.SendMessageBatch".into(), 1)]), 2)
            .await
            .unwrap();
        let all = o.calls().await.unwrap();
        assert_eq!(all.get("s3.GetObject"), Some(&5));
        assert_eq!(all.get("sqs.SendMessageBatch"), Some(&1));
        o.put_part(Part::Output, 0, "a", b"x\n".to_vec()).await.unwrap();
        o.delete_parts().await.unwrap();
        assert!(bucket::get_opt(o.store(), &o.part_path(Part::Output, 0, "a")).await.unwrap().is_none());
        assert_eq!(o.calls().await.unwrap(), all, "only the parts were deleted");
    }
}
