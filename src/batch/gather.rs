//! The gather: merge output and rejects parts in input order, write the manifest, the
//! summary and the report, and mark the job complete. It runs under the ledger's gather lease
//! and writes only deterministic content, so running it again gives the same objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::backends::bucket;
use crate::backends::calls::Tally;
use crate::backends::ledger::{self, ChunkRecord, JobStatus};
use crate::batch::job::{
    now_ms, ChunkCounts, Failure, InputSummary, JobObjects, JobRun, Manifest, ManifestChunk, Outputs, Part,
    RecordCounts, Summary, Timings,
};
use crate::batch::report::{RejectDigest, Report};
use crate::engine::parquet::ParquetEncoder;
use crate::engine::pipeline::Encoder;
use crate::engine::spec::parquet_needs_fields;
use crate::error::{Error, Result};
use crate::model::config::{Notify, OutputFormat};
use crate::model::rejects::{Seen, Stop};

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// How long a gather lease lasts unless its holder renews it. The holder renews it every third
/// of this while it gathers, however long the merge takes; a holder that dies stops renewing,
/// and another party takes the gather over once the lease has ended.
pub const GATHER_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Gather a job whose chunks are all committed. Returns without doing anything if another
/// party holds the gather lease or the job is complete.
pub(crate) async fn gather(run: &Arc<JobRun>) -> Result<()> {
    let ledger = &run.engine.ledger;
    let job_id = &run.plan.job_id;
    if run.spec.thresholds.any() {
        // A job whose committer died before it judged the last commit is judged here: a
        // job past a threshold is never gathered, so its rows are never published.
        if let Some(job) = ledger.get_job(job_id).await? {
            if judge(run, job.records_done, job.rejected).await? {
                return Ok(());
            }
        }
    }
    let now = now_ms();
    if !ledger.take_gather_lease(job_id, now, now + GATHER_LEASE.as_millis() as i64).await? {
        if ledger.get_job(job_id).await?.is_some_and(|j| j.status == JobStatus::Complete) {
            run.done.cancel();
        }
        return Ok(());
    }
    tracing::info!(job = %job_id, "all chunks committed; gathering");
    // Renewed until this gather ends, however it ends: a gather dropped half-way (a Lambda
    // function out of time gives its task back) lets its lease run out, and the next gatherer
    // takes it over and continues from the steps recorded done.
    let renewer = Renewer(renew_lease(run, now + GATHER_LEASE.as_millis() as i64));
    let tally = Tally::default();
    let completed = async {
        // The steps a gather cut off earlier got through, read once for all of them.
        let steps = Steps::load(run).await?;
        let summary = tally.scope(write_outputs(run, &tally, &steps)).await?;
        archive_and_tell(run, &steps, &summary).await?;
        ledger.set_status(job_id, JobStatus::Gathering, JobStatus::Complete).await
    }
    .await;
    drop(renewer);
    match completed {
        Ok(true) => {
            // The merged objects hold everything now; parts are only scratch.
            let _ = run.objects.delete_parts().await;
            run.done.cancel();
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

/// The last steps of a gather, once the summary is written and before the job is marked
/// complete: the inputs move to their archive and people are told, each a recorded step, so
/// that a gather cut off anywhere is finished by the next gatherer, which does neither again
/// (a send cut off before its step was recorded is sent again: at least once, never never).
async fn archive_and_tell(run: &Arc<JobRun>, steps: &Steps, summary: &Summary) -> Result<()> {
    steps
        .run("archive", async {
            archive_inputs(run).await;
            Ok(())
        })
        .await?;
    steps
        .run("notify", async {
            let outputs = &summary.outputs;
            let objects = [
                ("output", &outputs.output),
                ("rejects", &outputs.rejects),
                ("summary", &outputs.summary),
                ("manifest", &outputs.manifest),
            ];
            let objects: Vec<(&str, &str)> = objects.iter().map(|(n, u)| (*n, u.as_str())).collect();
            let links = crate::batch::notify::links(&run.engine, &objects).await;
            let message = crate::batch::notify::Message::finished(summary, links);
            crate::batch::notify::send(&run.engine, &notify_targets(&run.engine, &run.spec.notify), &message).await;
            Ok(())
        })
        .await
}

/// Stops renewing a gather lease when dropped.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The steps of a gather done, for this run of the job, recorded in the bucket as each ends.
struct Steps {
    run: Arc<JobRun>,
    done: tokio::sync::Mutex<crate::batch::job::Gathered>,
}

impl Steps {
    async fn load(run: &Arc<JobRun>) -> Result<Steps> {
        let done = match run.objects.gathered().await? {
            Some(g) if g.generation == run.generation() => g,
            _ => crate::batch::job::Gathered { generation: run.generation(), steps: Vec::new() },
        };
        if !done.steps.is_empty() {
            tracing::info!(job = %run.id(), steps = ?done.steps, "continuing a gather cut off after these steps");
        }
        Ok(Steps { run: run.clone(), done: tokio::sync::Mutex::new(done) })
    }

    async fn done(&self, step: &str) -> bool {
        self.done.lock().await.steps.iter().any(|s| s == step)
    }

    /// Run `step` unless it is done already, and record it done.
    async fn run(&self, step: &str, work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        if self.done(step).await {
            return Ok(());
        }
        work.await?;
        let mut done = self.done.lock().await;
        done.steps.push(step.to_string());
        self.run.objects.put_gathered(&done).await
    }
}

/// Keep renewing the gather lease that ends at `held` until aborted, so that only a gatherer
/// that died loses it. A renewal refused means another party took the lease over (this
/// gatherer stalled past its end); the gather goes on, writing the same objects.
fn renew_lease(run: &Arc<JobRun>, mut held: i64) -> tokio::task::JoinHandle<()> {
    let (ledger, job_id) = (run.engine.ledger.clone(), run.id().to_string());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(GATHER_LEASE / 3).await;
            let until = now_ms() + GATHER_LEASE.as_millis() as i64;
            match ledger.renew_gather_lease(&job_id, held, until).await {
                Ok(true) => held = until,
                Ok(false) => {
                    tracing::warn!(job = %job_id, "the gather lease was taken over");
                    return;
                }
                Err(e) => tracing::warn!(job = %job_id, "cannot renew the gather lease, will retry: {e}"),
            }
        }
    })
}

/// The job's own notification targets and the engine's, each target once: a job file naming
/// a topic or recipient the deployment already tells (`SLUICEBOX_NOTIFY`, `--notify`) is told
/// once, for the outcomes of both.
pub fn notify_targets(engine: &crate::engine::Engine, job: &[Notify]) -> Vec<Notify> {
    merge_targets(job.iter().chain(&engine.notify))
}

fn merge_targets<'a>(targets: impl Iterator<Item = &'a Notify>) -> Vec<Notify> {
    let mut out: Vec<Notify> = Vec::new();
    for n in targets {
        match out.iter_mut().find(|o| o.target == n.target && o.from == n.from) {
            Some(o) => {
                let more: Vec<String> = n.on.iter().filter(|on| !o.on.contains(on)).cloned().collect();
                o.on.extend(more);
            }
            None => out.push(n.clone()),
        }
    }
    out
}

/// Move every input of a completed job to its `[archive]` prefix (`to`/JOB/NAME: in the
/// input's bucket for an object; for a local file, an absolute `to`, or one relative to the
/// file's directory): copied, then deleted. An input that is not the version the job read
/// (replaced since) is left where it is.
async fn archive_inputs(run: &Arc<JobRun>) {
    let Some(to) = &run.spec.archive else { return };
    let store = run.engine.inputs.as_ref();
    for input in &run.plan.inputs {
        let object = &input.object;
        let from = Path::from(object.path.as_str());
        let name = object.path.rsplit('/').next().unwrap_or(&object.path);
        let local_relative = object.location.starts_with("file://") && !to.starts_with('/');
        let base = match object.path.rsplit_once('/') {
            Some((dir, _)) if local_relative => format!("{dir}/"),
            _ => String::new(),
        };
        let dest = Path::from(format!("{base}{}/{}/{name}", to.trim_matches('/'), run.id()).as_str());
        let moved = async {
            let head = store.head(&from).await?;
            // The version as the plan recorded it (`bucket::resolve_inputs`): ETag, else mtime.
            let version = head.e_tag.clone().unwrap_or_else(|| head.last_modified.timestamp_micros().to_string());
            if version != object.version {
                tracing::warn!(input = %object.location, "not archived: the input was replaced after the job read it");
                return Ok(());
            }
            store.copy(&from, &dest).await?;
            store.delete(&from).await?;
            tracing::info!(input = %object.location, to = %dest, "input archived");
            Ok::<_, object_store::Error>(())
        };
        if let Err(e) = moved.await {
            tracing::warn!(input = %object.location, "cannot archive the input: {e}");
        }
    }
}

async fn write_outputs(run: &Arc<JobRun>, tally: &Tally, steps: &Steps) -> Result<Summary> {
    let gather_started = now_ms();
    let job_id = run.id();
    let job = run.engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    let chunks = run.engine.ledger.chunks(job_id).await?;
    if chunks.len() != run.plan.chunks.len() {
        return Err(Error::Conflict(format!(
            "gather of {job_id}: {} of {} chunks committed",
            chunks.len(),
            run.plan.chunks.len()
        )));
    }
    // The sink stores what it staged while the parts are merged; the summary comes after both.
    let started = std::time::Instant::now();
    let publish = async {
        let published = match &run.sink {
            Some(sink) => steps.run("sink", sink.publish(run.version())).await,
            None => Ok(()),
        };
        tracing::debug!(job = %job_id, ms = started.elapsed().as_millis() as u64, "sink published");
        published
    };
    let merge = async {
        let merged = merge_parts(run, &chunks, steps).await;
        tracing::debug!(job = %job_id, ms = started.elapsed().as_millis() as u64, "parts merged");
        merged
    };
    let (published, merged) = tokio::join!(publish, merge);
    published?;
    let manifest = merged?;
    let summary = write_summary(run, &job, &chunks, tally, gather_started).await?;
    write_report(run, &summary, &manifest).await?;
    Ok(summary)
}

/// Write `report.html` from the summary, the manifest and the merged rejects.
async fn write_report(run: &JobRun, summary: &Summary, manifest: &Manifest) -> Result<()> {
    let rejects = if summary.records.rejected > 0 { reject_digest(run).await? } else { RejectDigest::default() };
    let definition = crate::batch::report::definition_toml(&run.spec.definition);
    let prices = crate::backends::cost::Prices::bundled();
    // Sink items cost the write units the table reported per item (more than one over 1 KB).
    let per_item = match &summary.sink_figures {
        Some(f) if f.items_written > 0 => f.write_units.map_or(1.0, |u| u / f.items_written as f64),
        _ => 1.0,
    };
    let costs =
        crate::backends::cost::request_costs_per_item(&summary.api_calls, summary.records.written, per_item, &prices);
    let basis = format!("AWS list prices for {} as of {} (on demand, no free tier)", prices.region, prices.as_of);
    let report =
        Report { summary, manifest, definition: &definition, rejects: &rejects, costs: &costs, prices: &basis };
    run.objects.put_report(crate::batch::report::render(&report)).await
}

/// The merged rejects digested as they stream from the bucket, one line in memory at a time.
async fn reject_digest(run: &JobRun) -> Result<RejectDigest> {
    use futures::TryStreamExt;
    use tokio::io::AsyncBufReadExt;
    let path = run.objects.rejects_path();
    let fail =
        |e: std::io::Error| Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e);
    let got = run.engine.bucket.get(&Path::from(path.as_str())).await.map_err(|e| fail(std::io::Error::other(e)))?;
    let reader = tokio_util::io::StreamReader::new(got.into_stream().map_err(std::io::Error::other));
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut digest = RejectDigest::default();
    while let Some(line) = lines.next_line().await.map_err(fail)? {
        digest.add_line(&line);
    }
    Ok(digest)
}

/// Merge the parts into the outputs (each a step, skipped when done), and write the manifest.
async fn merge_parts(run: &Arc<JobRun>, chunks: &[ChunkRecord], steps: &Steps) -> Result<Manifest> {
    let store = run.engine.bucket.as_ref();
    let objects = &run.objects;
    let output_path = objects.output_path(run.plan.output_format);
    let header = match (run.plan.output_format, &run.plan.output_fields) {
        (OutputFormat::Csv, Some(fields)) => Encoder::header(fields)?,
        _ => Vec::new(),
    };
    let parts = |part: Part| {
        chunks
            .iter()
            .map(move |c| (c, if part == Part::Output { c.output_bytes } else { c.rejects_bytes }))
            .filter(|(_, bytes)| *bytes > 0)
            .map(move |(c, bytes)| (objects.part_path(part, c.index, &c.attempt), bytes))
    };
    match run.plan.output_format {
        OutputFormat::Parquet => {
            let fields = run.plan.output_fields.as_deref().ok_or_else(|| parquet_needs_fields("this job"))?;
            let schema = crate::engine::parquet::schema(&run.spec, fields)?;
            let written = chunks.iter().map(|c| c.counts.written).sum();
            steps.run("output", merge_parquet(store, &output_path, schema, written, parts(Part::Output))).await?;
        }
        OutputFormat::Csv | OutputFormat::Jsonl => {
            steps.run("output", merge(store, &output_path, header, parts(Part::Output))).await?
        }
    }
    steps.run("rejects", merge(store, &objects.rejects_path(), Vec::new(), parts(Part::Rejects))).await?;
    let manifest = Manifest {
        job_id: run.id().to_string(),
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
    objects.put_manifest(&manifest).await?;
    Ok(manifest)
}

/// Write the summary, once the outputs are merged and the sink holds the job.
async fn write_summary(
    run: &Arc<JobRun>,
    job: &crate::backends::ledger::JobRecord,
    chunks: &[ChunkRecord],
    tally: &Tally,
    gather_started: i64,
) -> Result<Summary> {
    let summary = summary_of(run, job, chunks, tally, gather_started).await?;
    let total = summary.records.total;
    if summary.records.written + summary.records.rejected + summary.records.filtered != total {
        return Err(Error::Conflict(format!(
            "gather of {}: counts do not add up ({} written + {} rejected + {} filtered != {total} records)",
            run.id(),
            summary.records.written,
            summary.records.rejected,
            summary.records.filtered
        )));
    }
    run.objects.put_summary(&summary).await?;
    Ok(summary)
}

/// The summary of the job's committed `chunks` (all of them, once gathered; those worked,
/// for a job stopped by a threshold).
pub(crate) async fn summary_of(
    run: &Arc<JobRun>,
    job: &crate::backends::ledger::JobRecord,
    chunks: &[ChunkRecord],
    tally: &Tally,
    gather_started: i64,
) -> Result<Summary> {
    let objects = &run.objects;
    let job_id = run.id();
    let (output_path, rejects_path) = (objects.output_path(run.plan.output_format), objects.rejects_path());
    let counts = ledger::total_counts(chunks);
    let total = run.plan.total_records();
    let api_calls = job_calls(objects, chunks, tally).await?;
    let calls: u64 = api_calls.values().sum();
    let finished = now_ms();
    let planned = job.planned_ms.unwrap_or(job.created_ms);
    let last_commit = chunks.iter().map(|c| c.finished_ms).max().unwrap_or(planned);
    let duration_ms = (finished - job.created_ms).max(0);
    let url = |p: &str| format!("{}/{p}", run.engine.bucket_url.trim_end_matches('/'));
    let summary = Summary {
        job_id: job_id.to_string(),
        status: if counts.rejected == 0 { "succeeded" } else { "completed_with_rejects" }.into(),
        inputs: (0..run.plan.inputs.len()).map(|i| InputSummary::of(&run.plan, i)).collect(),
        records: RecordCounts {
            total,
            written: counts.written,
            rejected: counts.rejected,
            filtered: counts.filtered,
            not_worked: 0,
        },
        chunks: ChunkCounts { total: run.plan.chunks.len() as u32, done: chunks.len() as u32 },
        rejects_by_rule: counts.rejects_by_rule,
        outputs: Outputs {
            output: url(&output_path),
            rejects: url(&rejects_path),
            manifest: url(&objects.manifest_path()),
            summary: url(&objects.summary_path()),
        },
        sink: run.sink_table.clone(),
        sink_keeps: run.sink.as_ref().map(|s| if s.orders_by_seq() { "newest" } else { "last written" }.to_string()),
        sink_figures: sink_figures(run, chunks),
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
        thresholds: run.spec.thresholds.any().then_some(run.spec.thresholds),
        stopped_by: None,
        redriven_from: run.spec.definition.redrive.as_ref().map(|r| r.from.clone()),
        warnings: run.plan.warnings.clone(),
    };
    Ok(summary)
}

/// What the job's sink writes cost: the chunks' figures summed (all zero for a sink that
/// counts but was never written; none without a sink).
fn sink_figures(run: &JobRun, chunks: &[ChunkRecord]) -> Option<crate::backends::sink::SinkFigures> {
    let counts = run.sink.as_ref()?.figures().is_some();
    let summed = crate::backends::sink::SinkFigures::sum(chunks.iter().filter_map(|c| c.sink_figures.as_ref()));
    summed.or_else(|| counts.then(Default::default))
}

/// Every request counted for a job: the planners' (`calls/`), the chunks', and this gather's
/// so far plus the summary's own write.
async fn job_calls(
    objects: &JobObjects,
    chunks: &[ChunkRecord],
    tally: &Tally,
) -> Result<crate::backends::calls::ApiCalls> {
    let mut all = objects.calls().await?;
    for c in chunks {
        crate::backends::calls::add(&mut all, &c.api_calls);
    }
    crate::backends::calls::add(&mut all, &tally.snapshot());
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
    let fail = |e: object_store::Error| {
        Error::backend(crate::error::Backend::ObjectStore, format!("failed to write {path}"), e)
    };
    let upload = store.put_multipart(&Path::from(path)).await.map_err(fail)?;
    let mut w = WriteMultipart::new(upload);
    w.write(&head);
    for (part, size) in parts {
        let bytes = match read_part(store, &part, size).await {
            Ok(b) => b,
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

/// A part as its chunk committed it; one whose size differs fails the gather instead of
/// being merged.
async fn read_part(store: &dyn ObjectStore, part: &str, size: u64) -> Result<bytes::Bytes> {
    match bucket::get_opt(store, part).await? {
        Some(b) if b.len() as u64 == size => Ok(b),
        Some(b) => Err(Error::Conflict(format!("part {part} holds {} bytes; its chunk committed {size}", b.len()))),
        None => Err(Error::NotFound(format!("part {part} of a committed chunk"))),
    }
}

/// Rows per row group of a gathered Parquet output at most; each part ends one anyway, so
/// this bounds the memory of converting a part larger than usual.
const GATHER_ROW_GROUP_ROWS: usize = 1 << 20;

/// Convert the JSON Lines `parts` (path, size its chunk committed) into one Parquet object of
/// `schema` with a multipart upload, in their order, one part in memory at a time, each part
/// ending a row group. The rows must number `written`, the chunks' count of kept records.
async fn merge_parquet(
    store: &dyn ObjectStore,
    path: &str,
    schema: arrow_schema::SchemaRef,
    written: u64,
    parts: impl Iterator<Item = (String, u64)>,
) -> Result<()> {
    let fail = |e: object_store::Error| {
        Error::backend(crate::error::Backend::ObjectStore, format!("failed to write {path}"), e)
    };
    let upload = store.put_multipart(&Path::from(path)).await.map_err(fail)?;
    let mut w = WriteMultipart::new(upload);
    match write_parquet(store, &mut w, schema, written, parts).await {
        Ok(()) => w.finish().await.map_err(fail).map(|_| ()),
        Err(e) => {
            w.abort().await.map_err(fail)?;
            Err(e)
        }
    }
}

async fn write_parquet(
    store: &dyn ObjectStore,
    w: &mut WriteMultipart,
    schema: arrow_schema::SchemaRef,
    written: u64,
    parts: impl Iterator<Item = (String, u64)>,
) -> Result<()> {
    // Encoding is CPU work: it runs off the async workers, the encoder moving in and out.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal("parquet", "encoding task failed", e))?
    }
    let mut encoder = ParquetEncoder::new(schema, GATHER_ROW_GROUP_ROWS);
    for (part, size) in parts {
        let bytes = read_part(store, &part, size).await?;
        let out;
        (encoder, out) = blocking(move || {
            encoder.push_checked_jsonl(&part, &bytes)?;
            encoder.flush()?;
            let out = encoder.take_written();
            Ok((encoder, out))
        })
        .await?;
        w.wait_for_capacity(4)
            .await
            .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, "upload the Parquet output", e))?;
        w.put(out.into());
    }
    if encoder.rows() != written {
        return Err(Error::Conflict(format!(
            "the output parts hold {} records; their chunks committed {written} written",
            encoder.rows()
        )));
    }
    let tail = blocking(move || encoder.finish()).await?;
    w.put(tail.into());
    Ok(())
}

/// Record that a job cannot complete: `failed.json`, then the ledger's `failed` status; the
/// party whose write failed the job tells the job's notification targets.
pub async fn fail_job(engine: &crate::engine::Engine, failure: &Failure) -> Result<()> {
    let objects = JobObjects::new(engine.bucket.clone(), &failure.job_id);
    objects.put_failure(failure).await?;
    if engine.ledger.set_status(&failure.job_id, JobStatus::Running, JobStatus::Failed).await? {
        let job = match objects.definition().await {
            Ok(d) => {
                d.config.notify.iter().filter_map(|n| crate::model::config::Notify::parse(n, "notify").ok()).collect()
            }
            Err(e) => {
                tracing::warn!(job = %failure.job_id, "cannot read the job's notification targets: {e}");
                Vec::new()
            }
        };
        let failed = format!("{}/{}", engine.bucket_url.trim_end_matches('/'), objects.failure_path());
        let links = crate::batch::notify::links(engine, &[("failure", failed.as_str())]).await;
        let message = crate::batch::notify::Message::failed(failure, links);
        crate::batch::notify::send(engine, &notify_targets(engine, &job), &message).await;
    }
    Ok(())
}

/// Judge the job's `[rejects]` thresholds on its committed counts (`records` in the chunks
/// committed, `rejected` of them); when one is certainly passed, stop the job ([`stop`]) and
/// say so. Called after every first commit of a chunk, and before a gather.
pub(crate) async fn judge(run: &Arc<JobRun>, records: u64, rejected: u64) -> Result<bool> {
    let thresholds = run.spec.thresholds;
    let seen = Seen { records, rejected, total: run.plan.total_records() };
    let Some((threshold, limit)) = thresholds.passed(seen) else { return Ok(false) };
    stop(run, threshold, limit).await?;
    Ok(true)
}

/// Stop a job that passed a threshold: it fails, no more chunks are handed out (the local
/// run's workers stop; a task of it that a worker takes later is dropped), nothing is
/// published to the sink (what was staged stays staged), and people are told why, with the
/// figures. The rejects of the chunks worked are merged, so that they can be looked at, and
/// a summary (status `failed`, `stopped_by`) and a report are written. Of the parties that
/// find the threshold passed, the one whose `Running → Failed` write succeeds does this.
async fn stop(run: &Arc<JobRun>, threshold: &str, limit: f64) -> Result<()> {
    let ledger = &run.engine.ledger;
    let job_id = run.id();
    if !ledger.set_status(job_id, JobStatus::Running, JobStatus::Failed).await? {
        // Stopped by another party (or ended otherwise): nothing more for this one to do.
        run.done.cancel();
        return Ok(());
    }
    run.done.cancel();
    let started = now_ms();
    let job = ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    let chunks = ledger.chunks(job_id).await?;
    let counts = ledger::total_counts(&chunks);
    let seen = Seen { records: counts.total(), rejected: counts.rejected, total: run.plan.total_records() };
    let mut stop = Stop::new(threshold, limit, seen, &counts.rejects_by_rule);
    stop.chunks_done = chunks.len() as u32;
    stop.chunks_total = run.plan.chunks.len() as u32;
    stop.sink = match &run.sink {
        None => "no sink".into(),
        Some(s) if s.stages() => "staged, not published: the sink table is unchanged".into(),
        Some(_) => "written in place: this sink cannot stage, so the table holds the rows of the chunks worked \
                    before the stop"
            .into(),
    };
    tracing::warn!(job = %job_id, "{stop}");
    let last = chunks.iter().max_by_key(|c| c.finished_ms);
    let chunk = last.and_then(|c| run.plan.chunks.get(c.index as usize));
    let input = &run.plan.inputs[chunk.map_or(0, |c| c.input as usize)].object;
    let failure = Failure {
        job_id: job_id.to_string(),
        chunk: last.map_or(0, |c| c.index),
        input: input.location.clone(),
        version: input.version.clone(),
        attempts: 1,
        error: stop.to_string(),
        stopped_by: Some(Box::new(stop.clone())),
    };
    run.objects.put_failure(&failure).await?;
    let tally = Tally::default();
    let objects = &run.objects;
    let rejects = chunks
        .iter()
        .filter(|c| c.rejects_bytes > 0)
        .map(|c| (objects.part_path(Part::Rejects, c.index, &c.attempt), c.rejects_bytes));
    tally.scope(merge(run.engine.bucket.as_ref(), &objects.rejects_path(), Vec::new(), rejects)).await?;
    let manifest = Manifest {
        job_id: job_id.to_string(),
        inputs: run.plan.inputs.iter().map(|i| i.object.location.clone()).collect(),
        chunks: (chunks.iter())
            .filter_map(|c| {
                Some(ManifestChunk { chunk: run.plan.chunks.get(c.index as usize)?.clone(), commit: c.clone() })
            })
            .collect(),
    };
    objects.put_manifest(&manifest).await?;
    let mut summary = tally.scope(summary_of(run, &job, &chunks, &tally, started)).await?;
    summary.status = "failed".into();
    summary.records.not_worked = seen.total.saturating_sub(seen.records);
    summary.outputs.output = String::new();
    summary.stopped_by = Some(stop);
    objects.put_summary(&summary).await?;
    write_report(run, &summary, &manifest).await?;
    let url = |p: &str| format!("{}/{p}", run.engine.bucket_url.trim_end_matches('/'));
    let (failed, report) = (url(&objects.failure_path()), url(&objects.report_path()));
    let linked = [
        ("failure", failed.as_str()),
        ("rejects", summary.outputs.rejects.as_str()),
        ("summary", summary.outputs.summary.as_str()),
        ("report", report.as_str()),
    ];
    let links = crate::batch::notify::links(&run.engine, &linked).await;
    let message = crate::batch::notify::Message::stopped(&summary, &failure, links);
    crate::batch::notify::send(&run.engine, &notify_targets(&run.engine, &run.spec.notify), &message).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_named_by_the_job_and_the_deployment_is_told_once_for_the_outcomes_of_both() {
        let target = |to: &str, on: &[&str]| {
            let on = Some(on.iter().map(|o| o.to_string()).collect());
            let from = to.starts_with("ses://").then(|| "jobs@example.com".to_string());
            Notify::parse(&crate::model::config::NotifyConfig { to: to.into(), from, on }, "notify").unwrap()
        };
        let job =
            [target("sns://arn:aws:sns:us-east-1:1:yours", &["failed"]), target("ses://a@example.com", &["failed"])];
        let deployment = [
            target("sns://arn:aws:sns:us-east-1:1:stack", &["succeeded", "failed"]),
            target("sns://arn:aws:sns:us-east-1:1:yours", &["succeeded", "failed"]),
        ];
        let merged = merge_targets(job.iter().chain(&deployment));
        let shown: Vec<(String, Vec<String>)> =
            merged.iter().map(|n| (format!("{:?}", n.target), n.on.clone())).collect();
        assert_eq!(merged.len(), 3, "{shown:?}");
        assert_eq!(merged[0].on, ["failed", "succeeded"], "{shown:?}");
        assert_eq!((&merged[1].target, &merged[1].on), (&job[1].target, &job[1].on));
        assert_eq!(merged[2], deployment[0]);
    }
}
