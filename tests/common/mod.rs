//! Helpers shared by the whole-job tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluicebox::config::{JobConfig, SinkKind};
use sluicebox::engine::Engine;
use sluicebox::job::Summary;
use sluicebox::job::{self, RunOptions};
use sluicebox::record::Record;
use sluicebox::sink::Sink;

/// The repository's orders example directory.
pub fn orders_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders")
}

/// The orders example's job file text.
pub fn orders_job() -> String {
    std::fs::read_to_string(orders_dir().join("job.toml")).unwrap()
}

/// Run a job in `data_dir` with the embedded engine (or the given one).
pub async fn run_with(
    engine: &Engine,
    inputs: &[PathBuf],
    config: &str,
    base: &Path,
    opts: &RunOptions,
) -> sluicebox::Result<Summary> {
    let spec = JobConfig::from_toml(config, "test.toml")?.validate(base)?;
    let args: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let inputs =
        sluicebox::bucket::resolve_inputs(engine.inputs.as_ref(), &args, spec.input.format, spec.input.compression)
            .await?;
    job::run(engine, &spec, inputs, opts).await
}

/// A checked job from job-file text, with paths relative to `base`.
pub fn spec(config: &str, base: &Path) -> sluicebox::spec::JobSpec {
    JobConfig::from_toml(config, "test.toml").unwrap().validate(base).unwrap()
}

/// The input objects of local files, as `run` resolves them.
pub async fn local_inputs(engine: &Engine, files: &[PathBuf]) -> Vec<sluicebox::bucket::InputObject> {
    let args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    sluicebox::bucket::resolve_inputs(engine.inputs.as_ref(), &args, None, Default::default()).await.unwrap()
}

/// Run with the embedded engine in `data_dir`.
pub async fn run(data_dir: &Path, inputs: &[PathBuf], config: &str, base: &Path) -> sluicebox::Result<Summary> {
    let engine = Engine::local(data_dir)?;
    run_with(&engine, inputs, config, base, &RunOptions::default()).await
}

/// A job's file in the bucket.
pub fn job_file(data_dir: &Path, job_id: &str, name: &str) -> String {
    std::fs::read_to_string(data_dir.join("bucket/jobs").join(job_id).join(name)).unwrap()
}

/// The rejects of a job, parsed.
pub fn rejects(data_dir: &Path, job_id: &str) -> Vec<serde_json::Value> {
    job_file(data_dir, job_id, "rejects.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every row of a sink table in the data dir's database.
pub async fn sink_rows(data_dir: &Path, table: &str) -> BTreeMap<String, Record> {
    let sink = sluicebox::sink::SqliteSink::existing(&data_dir.join("sluicebox.db"), table).unwrap();
    sink.read_all().await.unwrap()
}

/// Summary fields that do not depend on timing or on which worker did what.
pub fn stable(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "job_id": s.job_id, "status": s.status, "inputs": s.inputs, "records": s.records,
        "chunks": s.chunks, "rejects_by_rule": s.rejects_by_rule, "sink": s.sink,
    })
}

/// Unused kind marker so every helper file compiles the same.
pub const SQLITE: SinkKind = SinkKind::Sqlite;

/// A sink that always fails.
#[derive(Debug)]
pub struct BrokenSink;

#[async_trait::async_trait]
impl sluicebox::sink::Sink for BrokenSink {
    async fn write(&self, _: Vec<sluicebox::record::SinkItem>) -> sluicebox::Result<()> {
        Err(sluicebox::Error::backend("test", "injected", "the table is gone"))
    }
    async fn publish(&self, _: u64) -> sluicebox::Result<()> {
        Err(sluicebox::Error::backend("test", "injected", "the table is gone"))
    }
    async fn discard(&self, _: u64) -> sluicebox::Result<()> {
        Ok(())
    }
    async fn read_all(&self) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::record::Record>> {
        Ok(Default::default())
    }
}

/// The ARN of the queue at `url`.
#[cfg(feature = "aws")]
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone()
}
