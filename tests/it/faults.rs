//! Guarantee 2 under injected faults: a process killed at any instant and resumed, a queue
//! that delivers every task twice and drops acks, and a sink that fails writes all end with
//! exactly the outputs, counts and sink contents of a clean run.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use sluicebox::backends::queue::faults::{FaultyQueue, QueueFaults};
use sluicebox::backends::queue::{MemoryQueue, Queue};
use sluicebox::backends::sink::{Sink, SinkItem};
use sluicebox::batch::job::RunOptions;
use sluicebox::engine::Engine;

/// Everything a run leaves that must not depend on how it got there.
struct Outcome {
    summary: serde_json::Value,
    output: String,
    rejects: String,
    sink: std::collections::BTreeMap<String, sluicebox::model::record::Record>,
}

async fn outcome(data: &Path, summary: &sluicebox::batch::job::Summary) -> Outcome {
    Outcome {
        summary: stable(summary),
        output: job_file(data, &summary.job_id, "output.csv"),
        rejects: job_file(data, &summary.job_id, "rejects.jsonl"),
        sink: sink_rows(data, "orders").await,
    }
}

fn assert_same(a: &Outcome, b: &Outcome) {
    assert_eq!(a.summary, b.summary);
    assert!(a.output == b.output, "merged outputs differ");
    assert!(a.rejects == b.rejects, "rejects differ");
    assert_eq!(a.sink.len(), b.sink.len(), "sink row counts differ");
    assert!(a.sink == b.sink, "sink contents differ");
}

/// Synthetic orders with a few bad rows mixed in, and the orders job pointed at them.
fn fixture(dir: &Path, n: u64, chunk_records: u64) -> (PathBuf, String) {
    sluicebox::tools::bench::generate(dir, n, sluicebox::tools::bench::KeyOrder::Sequential).unwrap();
    let orders = dir.join("orders.csv");
    let mut text = std::fs::read_to_string(&orders).unwrap();
    text.push_str("1,X,Y,Online,M,2/31/15,R,3/1/15\n");
    text.push_str("2,\"multi\nline\",Y,Online,M,2/3/15,R\n");
    text.push_str("999999999,X,Y,Online,M,2/3/15,R,3/1/15\n");
    std::fs::write(&orders, text).unwrap();
    let job = orders_job()
        .replace("records = 1000", &format!("records = {chunk_records}"))
        .replace("source = \"financial.csv\"", &format!("source = \"{}\"", dir.join("financial.csv").display()));
    std::fs::write(dir.join("job.toml"), &job).unwrap();
    (orders, job)
}

async fn clean_run(input: &Path, job: &str) -> (tempfile::TempDir, Outcome) {
    let data = tempfile::tempdir().unwrap();
    let s = run(data.path(), &[input.to_path_buf()], job, Path::new(".")).await.unwrap();
    assert_eq!(s.records.written + s.records.rejected + s.records.filtered, s.records.total);
    let o = outcome(data.path(), &s).await;
    (data, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_to_the_same_result() {
    let work = tempfile::tempdir().unwrap();
    let (input, job) = fixture(work.path(), 60_000, 1_000);
    let (_clean_dir, clean) = clean_run(&input, &job).await;
    assert_eq!(clean.summary["records"]["rejected"], 3);

    let data = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluicebox"));
        c.args([
            "run",
            input.to_str().unwrap(),
            "--config",
            work.path().join("job.toml").to_str().unwrap(),
            "--workers",
            "2",
            "--json",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        c
    };
    // Kill the process at growing instants until one run finishes on its own.
    let mut kills = 0;
    let mut killed_mid_job = false;
    let mut delay = Duration::from_millis(30);
    let db = data.path().join("sluicebox-ledger.db");
    let id = clean.summary["job_id"].as_str().unwrap().to_string();
    let summary = loop {
        let mut child = cmd().spawn().unwrap();
        let started = Instant::now();
        let mut ledger: Option<sluicebox::backends::ledger::SqliteLedger> = None;
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() >= delay {
                break None;
            }
            // After the first kill, until one lands between commits: kill as soon as the
            // ledger shows a chunk committed and others not (a busy machine moves the instants).
            if kills >= 1 && !killed_mid_job {
                if ledger.is_none() && db.exists() {
                    ledger = sluicebox::backends::ledger::SqliteLedger::open(&db).ok();
                }
                if let Some(l) = &ledger {
                    if let Ok(Some(j)) = sluicebox::backends::ledger::StateStore::get_job(l, &id).await {
                        if j.done_chunks > 0 && Some(j.done_chunks) < j.total_chunks {
                            break None;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match finished {
            Some(status) => {
                assert!(status.success(), "a resumed run failed");
                let out = child.wait_with_output().unwrap();
                let last = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
                break serde_json::from_str::<sluicebox::batch::job::Summary>(&last).unwrap();
            }
            None => {
                child.kill().unwrap(); // SIGKILL: no chance to clean up
                child.wait().unwrap();
                kills += 1;
                let ledger =
                    sluicebox::backends::ledger::SqliteLedger::open(&data.path().join("sluicebox-ledger.db")).unwrap();
                let id = clean.summary["job_id"].as_str().unwrap();
                if let Some(j) = sluicebox::backends::ledger::StateStore::get_job(&ledger, id).await.unwrap() {
                    killed_mid_job |= j.done_chunks > 0 && Some(j.done_chunks) < j.total_chunks;
                }
                delay += Duration::from_millis(40 * kills);
            }
        }
    };
    assert!(kills >= 2, "the test must interrupt the job (killed {kills} times)");
    assert!(killed_mid_job, "at least one kill must land between chunk commits");
    let resumed = outcome(data.path(), &summary).await;
    assert_same(&resumed, &clean);
}

/// A sink that fails every third write before doing it: the worker must retry the chunk.
#[derive(Debug)]
struct FlakySink {
    inner: Arc<dyn Sink>,
    calls: AtomicU32,
}

#[async_trait]
impl Sink for FlakySink {
    async fn write(&self, items: Vec<SinkItem>) -> sluicebox::Result<()> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
            return Err(sluicebox::Error::backend(sluicebox::error::Backend::Injected, "injected", "throttled"));
        }
        self.inner.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        self.inner.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.inner.discard(job).await
    }
    async fn read_all(
        &self,
    ) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::model::record::Record>> {
        self.inner.read_all().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_tasks_dropped_acks_and_failing_writes_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (input, job) = fixture(work.path(), 20_000, 700);
    let (_clean_dir, clean) = clean_run(&input, &job).await;

    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::local(data.path()).unwrap();
    let visibility = Duration::from_millis(300);
    let inner: Arc<dyn Queue> = Arc::new(MemoryQueue::new(visibility));
    engine.queue =
        Arc::new(FaultyQueue::new(inner, QueueFaults { extra_copies: 1, drop_every_nth_ack: 2, ..Default::default() }));
    engine.sink_layer =
        Some(Arc::new(|inner| Arc::new(FlakySink { inner, calls: AtomicU32::new(0) }) as Arc<dyn Sink>));
    // Every attempt works its chunk in full, even after another attempt committed it.
    engine.ledger = Arc::new(FaultyLedger { hide_commits: true, ..FaultyLedger::over(engine.ledger.clone()) });
    let puts = Arc::new(PutLog::new(engine.bucket.clone()));
    engine.bucket = puts.clone();
    let opts = RunOptions { workers: 3, visibility, max_attempts: 10, ..RunOptions::default() };
    let s = run_with(&engine, &[input], &job, Path::new("."), &opts).await.unwrap();
    let faulty = outcome(data.path(), &s).await;
    assert_same(&faulty, &clean);
    let parts = puts.parts();
    let distinct: std::collections::BTreeSet<&String> = parts.iter().collect();
    assert!(parts.len() > s.chunks.total as usize, "chunks were worked more than once: {} part writes", parts.len());
    assert_eq!(distinct.len(), parts.len(), "a later attempt wrote over an earlier attempt's part");

    let manifest: serde_json::Value = serde_json::from_str(&job_file(data.path(), &s.job_id, "manifest.json")).unwrap();
    let indexes: Vec<u64> =
        manifest["chunks"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..indexes.len() as u64).collect::<Vec<_>>(), "each chunk is in the manifest exactly once");
}

/// A bucket that logs the part objects written to it.
#[derive(Debug)]
struct PutLog {
    inner: Arc<dyn object_store::ObjectStore>,
    parts: std::sync::Mutex<Vec<String>>,
}

impl PutLog {
    fn new(inner: Arc<dyn object_store::ObjectStore>) -> Self {
        PutLog { inner, parts: Default::default() }
    }
    fn parts(&self) -> Vec<String> {
        self.parts.lock().unwrap().clone()
    }
}

impl std::fmt::Display for PutLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PutLog({})", self.inner)
    }
}

#[async_trait]
impl object_store::ObjectStore for PutLog {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if location.as_ref().contains("/parts/") {
            self.parts.lock().unwrap().push(location.to_string());
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_chunk_stops_the_run_incomplete_and_a_rerun_finishes_it() {
    let work = tempfile::tempdir().unwrap();
    let (input, job) = fixture(work.path(), 5_000, 500);
    // Ten sink batches per chunk: a failed write must not leave the pipeline waiting to hand
    // over the next one.
    let job = job.replace("table = \"orders\"", "table = \"orders\"\nbatch = 50");
    assert!(job.contains("batch = 50"));
    let (_clean_dir, clean) = clean_run(&input, &job).await;

    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::local(data.path()).unwrap();
    engine.sink_layer = Some(Arc::new(|_| Arc::new(BrokenSink) as Arc<dyn Sink>));
    let opts = RunOptions { workers: 2, max_attempts: 2, job_id: Some("fixed".into()), ..RunOptions::default() };
    let failed = run_with(&engine, std::slice::from_ref(&input), &job, Path::new("."), &opts);
    let err = tokio::time::timeout(Duration::from_secs(60), failed).await.expect("the run must end").unwrap_err();
    assert!(err.to_string().contains("the table is gone"), "{err}");
    let ledger = sluicebox::backends::ledger::SqliteLedger::open(&data.path().join("sluicebox-ledger.db")).unwrap();
    let j = sluicebox::backends::ledger::StateStore::get_job(&ledger, "fixed").await.unwrap().unwrap();
    assert_eq!(j.status, sluicebox::backends::ledger::JobStatus::Running, "a failed run must not be complete");
    assert!(!data.path().join("bucket/jobs/fixed/summary.json").exists());

    // Another input under the same job id is refused rather than mixed in.
    let other = work.path().join("other.csv");
    std::fs::write(&other, "uuid\n1\n").unwrap();
    let err = run_with(&engine, &[other], &job, Path::new("."), &opts).await.unwrap_err();
    assert!(matches!(err, sluicebox::Error::Conflict(_)), "{err}");

    engine.sink_layer = None;
    let s = run_with(&engine, &[input], &job, Path::new("."), &opts).await.unwrap();
    let mut resumed = outcome(data.path(), &s).await;
    resumed.summary["job_id"] = clean.summary["job_id"].clone();
    assert_same(&resumed, &clean);
}

/// A sink whose first publish fails (a gather cut off after its merges): its writes go through.
#[derive(Debug)]
struct PublishFailsOnce(Arc<dyn Sink>, Arc<AtomicU32>);

#[async_trait]
impl Sink for PublishFailsOnce {
    async fn write(&self, items: Vec<SinkItem>) -> sluicebox::Result<()> {
        self.0.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        if self.1.fetch_add(1, Ordering::SeqCst) == 0 {
            // After the merges, so that they are recorded done when the gather stops.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(sluicebox::Error::backend(sluicebox::error::Backend::Injected, "injected", "out of time"));
        }
        self.0.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.0.discard(job).await
    }
    async fn read_all(
        &self,
    ) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::model::record::Record>> {
        self.0.read_all().await
    }
}

/// A gather cut off after it merged the outputs (here its publish fails; in a Lambda function
/// it runs out of time) is continued by the next gatherer from the steps recorded done, not
/// begun again: the parts it merged are not read again (one is deleted here, and the gather
/// still completes), and the result equals a clean run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gather_cut_off_after_its_merges_is_continued_not_begun_again() {
    let work = tempfile::tempdir().unwrap();
    let (input, job) = fixture(work.path(), 3_000, 500);
    let (_clean_dir, clean) = clean_run(&input, &job).await;

    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::local(data.path()).unwrap();
    let publishes = Arc::new(AtomicU32::new(0));
    let counter = publishes.clone();
    engine.sink_layer = Some(Arc::new(move |s| Arc::new(PublishFailsOnce(s, counter.clone())) as Arc<dyn Sink>));
    let opts = RunOptions { workers: 2, max_attempts: 1, job_id: Some("cut".into()), ..RunOptions::default() };
    let err = run_with(&engine, std::slice::from_ref(&input), &job, Path::new("."), &opts).await.unwrap_err();
    assert!(err.to_string().contains("out of time"), "{err}");
    let gathered: sluicebox::batch::job::Gathered =
        serde_json::from_str(&job_file(data.path(), "cut", "gathered.json")).unwrap();
    assert_eq!(gathered.steps, ["output", "rejects"], "the merges are recorded done, the publish is not");
    let parts = data.path().join("bucket/jobs/cut/parts");
    let first = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "out"))
        .unwrap();
    std::fs::remove_file(&first).unwrap();

    let s = run_with(&engine, &[input], &job, Path::new("."), &opts).await.unwrap();
    assert_eq!(publishes.load(Ordering::SeqCst), 2, "published once more, by the continuation");
    let mut resumed = outcome(data.path(), &s).await;
    resumed.summary["job_id"] = clean.summary["job_id"].clone();
    assert_same(&resumed, &clean);
}

/// Workers serving a queue (as `sluicebox worker` does) end a job whose task keeps failing
/// with a retryable error: after its last attempt the job is failed, with `failed.json` naming
/// the chunk, the input and the error, and whoever waits for it hears so at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_fails_its_job_instead_of_leaving_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name\n1,a\n2,b\n").unwrap();
    let mut engine = Engine::local(&dir.path().join("data")).unwrap();
    engine.sink_layer = Some(Arc::new(|_| Arc::new(BrokenSink) as Arc<dyn Sink>));
    let spec = spec("[key]\nfields = [\"id\"]\n", dir.path());
    let inputs = local_inputs(&engine, std::slice::from_ref(&input)).await;
    let opts = RunOptions { max_attempts: 3, retry_delay: Duration::from_millis(100), ..RunOptions::default() };
    let run = match sluicebox::batch::job::prepare::prepare(&engine, &spec, inputs, &opts).await.unwrap() {
        sluicebox::batch::job::prepare::Prepared::Ready(run) => run,
        sluicebox::batch::job::prepare::Prepared::Complete(_) => panic!("a new job cannot be complete"),
    };
    assert_eq!(sluicebox::batch::job::prepare::enqueue(&run).await.unwrap(), 1);
    let pool = sluicebox::batch::pool::Pool::serve(&engine, &opts, 2);
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        sluicebox::batch::job::wait(&engine, run.id(), &indicatif::ProgressBar::hidden()),
    )
    .await
    .expect("waiting for a job whose task keeps failing must end");
    pool.stop();
    pool.join().await.unwrap();
    let err = waited.unwrap_err().to_string();
    assert!(err.contains("chunk 0") && err.contains("items.csv") && err.contains("the table is gone"), "{err}");
    let failure: sluicebox::batch::job::Failure =
        serde_json::from_str(&job_file(&dir.path().join("data"), run.id(), "failed.json")).unwrap();
    assert_eq!((failure.chunk, failure.attempts), (0, 3), "failed on its last attempt, not before");
    let job = engine.ledger.get_job(run.id()).await.unwrap().unwrap();
    assert_eq!(job.status, sluicebox::backends::ledger::JobStatus::Failed);
}

/// A ledger with injected faults.
///
/// - `dead_gatherer: Some(lease_ms)`: the first gather lease is taken by another gatherer,
///   which dies without renewing it: the lease ends `lease_ms` after it was taken (0: at
///   once), and the caller is told someone else holds it.
/// - `hide_commits`: a worker checking whether a chunk is committed never sees it, as when
///   two attempts at one chunk run at once (a redelivery while the first is still working).
#[derive(Debug)]
struct FaultyLedger {
    inner: Arc<dyn sluicebox::backends::ledger::StateStore>,
    dead_gatherer: Option<i64>,
    hide_commits: bool,
    died: std::sync::atomic::AtomicBool,
    lease_ends: std::sync::atomic::AtomicI64,
    lease_attempts: AtomicU32,
}

impl FaultyLedger {
    /// `inner` with no faults.
    fn over(inner: Arc<dyn sluicebox::backends::ledger::StateStore>) -> Self {
        FaultyLedger {
            inner,
            dead_gatherer: None,
            hide_commits: false,
            died: Default::default(),
            lease_ends: Default::default(),
            lease_attempts: Default::default(),
        }
    }
}

#[async_trait]
impl sluicebox::backends::ledger::StateStore for FaultyLedger {
    async fn create_job(&self, job: &sluicebox::backends::ledger::JobRecord) -> sluicebox::Result<bool> {
        self.inner.create_job(job).await
    }
    async fn get_job(&self, job_id: &str) -> sluicebox::Result<Option<sluicebox::backends::ledger::JobRecord>> {
        self.inner.get_job(job_id).await
    }
    async fn set_planned(&self, job_id: &str, total: u32, planned_ms: i64) -> sluicebox::Result<bool> {
        self.inner.set_planned(job_id, total, planned_ms).await
    }
    async fn commit_chunk(
        &self,
        job_id: &str,
        chunk: &sluicebox::backends::ledger::ChunkRecord,
    ) -> sluicebox::Result<sluicebox::backends::ledger::LedgerCommit> {
        self.inner.commit_chunk(job_id, chunk).await
    }
    async fn get_chunk(
        &self,
        job_id: &str,
        index: u32,
    ) -> sluicebox::Result<Option<sluicebox::backends::ledger::ChunkRecord>> {
        if self.hide_commits {
            return Ok(None);
        }
        self.inner.get_chunk(job_id, index).await
    }
    async fn chunks(&self, job_id: &str) -> sluicebox::Result<Vec<sluicebox::backends::ledger::ChunkRecord>> {
        self.inner.chunks(job_id).await
    }
    async fn set_status(
        &self,
        job_id: &str,
        from: sluicebox::backends::ledger::JobStatus,
        to: sluicebox::backends::ledger::JobStatus,
    ) -> sluicebox::Result<bool> {
        self.inner.set_status(job_id, from, to).await
    }
    async fn take_gather_lease(&self, job_id: &str, now_ms: i64, until_ms: i64) -> sluicebox::Result<bool> {
        self.lease_attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(lease_ms) = self.dead_gatherer.filter(|_| !self.died.swap(true, Ordering::SeqCst)) {
            // The other gatherer took the lease and died: its lease ends unrenewed.
            let ends = now_ms - 1 + lease_ms;
            assert!(self.inner.take_gather_lease(job_id, now_ms - 2, ends).await?);
            self.lease_ends.store(ends, Ordering::SeqCst);
            return Ok(false);
        }
        self.inner.take_gather_lease(job_id, now_ms, until_ms).await
    }
    async fn renew_gather_lease(&self, job_id: &str, held_ms: i64, until_ms: i64) -> sluicebox::Result<bool> {
        self.inner.renew_gather_lease(job_id, held_ms, until_ms).await
    }
    async fn delete_job(&self, job_id: &str) -> sluicebox::Result<()> {
        self.inner.delete_job(job_id).await
    }
    async fn get_checkpoint(&self, name: &str) -> sluicebox::Result<Option<sluicebox::backends::ledger::Checkpoint>> {
        self.inner.get_checkpoint(name).await
    }
    async fn put_checkpoint(&self, name: &str, expected: u64, state: &str) -> sluicebox::Result<bool> {
        self.inner.put_checkpoint(name, expected, state).await
    }
    async fn delete_checkpoint(&self, name: &str) -> sluicebox::Result<()> {
        self.inner.delete_checkpoint(name).await
    }
}

/// A gatherer that dies leaves its job `gathering`; once its lease has ended (and not before),
/// an idle worker takes the gather over and the job completes with every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_over_the_gather_of_a_gatherer_that_died() {
    for lease_ms in [0, 3_000] {
        gather_taken_over_after(lease_ms).await;
    }
}

async fn gather_taken_over_after(lease_ms: i64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    let rows: String = (0..500).map(|i| format!("{i},n{i}\n")).collect();
    std::fs::write(&input, format!("id,name\n{rows}")).unwrap();
    let mut engine = Engine::local(&dir.path().join("data")).unwrap();
    let ledger = Arc::new(FaultyLedger { dead_gatherer: Some(lease_ms), ..FaultyLedger::over(engine.ledger.clone()) });
    engine.ledger = ledger.clone();
    let spec = spec("[chunking]\nrecords = 100\n[sink]\ntype = \"none\"\n", dir.path());
    let inputs = local_inputs(&engine, std::slice::from_ref(&input)).await;
    let opts = RunOptions::default();
    let id = sluicebox::batch::job::submit(&engine, &spec, inputs, &opts).await.unwrap().job_id;
    let pool = sluicebox::batch::pool::Pool::serve(&engine, &opts, 2);
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        sluicebox::batch::job::wait(&engine, &id, &indicatif::ProgressBar::hidden()),
    )
    .await
    .expect("a job whose gatherer died must still complete")
    .unwrap();
    pool.stop();
    pool.join().await.unwrap();
    assert_eq!((summary.records.total, summary.records.written), (500, 500));
    assert_eq!(job_file(&dir.path().join("data"), &id, "output.csv").lines().count(), 501);
    let finished = chrono::DateTime::parse_from_rfc3339(&summary.timings.finished_at).unwrap().timestamp_millis();
    let ends = ledger.lease_ends.load(Ordering::SeqCst);
    assert!(ends > 0, "the first gatherer took the lease");
    assert!(finished >= ends, "the live lease was respected: gathered at {finished}, the lease ended at {ends}");
    // Two idle workers poll several times a second, but only try a lease that has ended.
    let attempts = ledger.lease_attempts.load(Ordering::SeqCst);
    assert!(attempts <= 4, "{attempts} tries at the gather lease while it was held");
}

/// A sink that takes its time, so that a job is still being worked when it is made anew.
#[derive(Debug)]
struct SlowSink(Arc<dyn Sink>);

#[async_trait]
impl Sink for SlowSink {
    async fn write(&self, items: Vec<SinkItem>) -> sluicebox::Result<()> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.0.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        self.0.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.0.discard(job).await
    }
    async fn read_all(
        &self,
    ) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::model::record::Record>> {
        self.0.read_all().await
    }
}

/// A job made anew (`--force`, here with another transform) while workers hold its earlier
/// run: the earlier run's tasks are dropped and none of its work is committed into the new
/// one; every record of the result comes from the new definition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_made_anew_while_it_runs_takes_no_work_of_its_earlier_run() {
    use sluicebox::batch::job::prepare::{enqueue, prepare, Prepared};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    let rows: String = (0..2_000).map(|i| format!("{i},n{i}\n")).collect();
    std::fs::write(&input, format!("id,name\n{rows}")).unwrap();
    let mut engine = Engine::local(&dir.path().join("data")).unwrap();
    engine.sink_layer = Some(Arc::new(|inner| Arc::new(SlowSink(inner)) as Arc<dyn Sink>));
    // The new run cuts other chunks, so its tasks do not match the earlier run's plan either.
    let job = |run: u32, records: u32| {
        let toml = format!(
            "transform = ['.run = {run}']\n[key]\nfields = [\"id\"]\n[chunking]\nrecords = {records}\n\
             [output]\nfields = [\"id\", \"name\", \"run\"]\n"
        );
        spec(&toml, dir.path())
    };
    let inputs = local_inputs(&engine, std::slice::from_ref(&input)).await;
    let opts = RunOptions { job_id: Some("daily".into()), ..RunOptions::default() };
    let Prepared::Ready(first) = prepare(&engine, &job(1, 100), inputs.clone(), &opts).await.unwrap() else { panic!() };
    assert_eq!(enqueue(&first).await.unwrap(), 20);
    let pool = sluicebox::batch::pool::Pool::serve(&engine, &opts, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.ledger.get_job("daily").await.unwrap().unwrap().done_chunks < 2 {
        assert!(Instant::now() < deadline, "the first run never got under way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let anew = RunOptions { force: true, ..opts.clone() };
    let Prepared::Ready(second) = prepare(&engine, &job(2, 50), inputs, &anew).await.unwrap() else { panic!() };
    assert_ne!(second.plan.order, first.plan.order);
    enqueue(&second).await.unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        sluicebox::batch::job::wait(&engine, "daily", &indicatif::ProgressBar::hidden()),
    )
    .await
    .expect("the new run must complete")
    .unwrap();
    pool.stop();
    pool.join().await.unwrap();
    assert_eq!((summary.records.total, summary.records.written), (2_000, 2_000));
    let output = job_file(&dir.path().join("data"), "daily", "output.csv");
    let earlier: Vec<&str> = output.lines().skip(1).filter(|l| !l.ends_with(",2")).collect();
    assert!(earlier.is_empty(), "{} rows of the earlier run, e.g. {:?}", earlier.len(), earlier.first());
    let manifest: serde_json::Value =
        serde_json::from_str(&job_file(&dir.path().join("data"), "daily", "manifest.json")).unwrap();
    assert_eq!(manifest["chunks"].as_array().unwrap().len(), 40);
}

/// A worker limited to named buckets and tables (`worker --allow`) fails a job that names
/// anything else, at once, with `failed.json` naming what it may not touch; a job within the
/// limits runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_limited_to_named_resources_fails_a_job_that_names_others() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name\n1,a\n2,b\n").unwrap();
    let engine = Engine::local(&dir.path().join("data")).unwrap();
    let job = spec("[sink]\ntype = \"none\"\n", dir.path());
    let inputs = local_inputs(&engine, std::slice::from_ref(&input)).await;
    let location = inputs[0].location.clone();
    let worker_default = sluicebox::batch::job::worker_allow(Vec::new());
    for (allow, ok) in [
        (vec!["s3://elsewhere".to_string()], false),
        // `sluicebox worker` and the Lambda functions without --allow: never this host's files.
        (worker_default, false),
        (vec![format!("file://{}", dir.path().display())], true),
    ] {
        let opts = RunOptions { allow: allow.clone(), max_attempts: 5, force: true, ..RunOptions::default() };
        let id = sluicebox::batch::job::submit(&engine, &job, inputs.clone(), &opts).await.unwrap().job_id;
        let pool = sluicebox::batch::pool::Pool::serve(&engine, &opts, 1);
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            sluicebox::batch::job::wait(&engine, &id, &indicatif::ProgressBar::hidden()),
        )
        .await
        .expect("the job ends");
        pool.stop();
        pool.join().await.unwrap();
        match (waited, ok) {
            (Ok(s), true) => assert_eq!(s.records.written, 2),
            (Err(e), false) => {
                let e = e.to_string();
                assert!(e.contains(&location) && e.contains(allow[0].as_str()), "{e}");
                assert!(e.contains("attempt 1"), "refused at once, not retried: {e}");
            }
            (other, _) => panic!("allow {allow:?}: {other:?}"),
        }
    }
}
