//! Preparing a job: create it (or find it), plan it once (scan the inputs, fix the output
//! fields, store the definition and plan create-only), and send a task for every chunk not
//! yet committed.

use std::collections::HashSet;
use std::sync::Arc;

use super::{now_ms, JobObjects, JobPlan, JobRun, PlannedInput, RunOptions, Summary, Task};
use crate::backends::bucket::{self, InputObject};
use crate::backends::calls::Tally;
use crate::backends::ledger::{JobRecord, JobStatus};
use crate::backends::lookup::LookupTable;
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::input::plan::{self, Chunk, ChunkTargets, InputScan, MAX_PIECES};
use crate::input::resume_points::ResumeLog;
use crate::model::config::{Compression, Format, JobDefinition};

/// What [`prepare`] found.
pub enum Prepared {
    /// The job was complete already: its summary.
    Complete(Box<Summary>),
    /// The job is planned and ready for workers.
    Ready(Arc<JobRun>),
}

/// Create or resume the job, plan it if it is new, and build what its workers share.
pub async fn prepare(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>, opts: &RunOptions) -> Result<Prepared> {
    if inputs.is_empty() {
        return Err(Error::config("INPUT", "no input objects (an empty directory?)"));
    }
    if let Some(id) = &opts.job_id {
        crate::model::config::check_job_id(id, "--job-id")?;
    }
    let job_id = opts.job_id.clone().unwrap_or_else(|| super::derive_job_id(&inputs, spec));
    let objects = JobObjects::new(engine.bucket.clone(), &job_id);
    // The run a `--force` replaces: what its workers staged in the sink is dropped below.
    let mut replaced = None;
    if opts.force {
        replaced = engine.ledger.get_job(&job_id).await?.map(|j| j.created_ms.max(0) as u64);
        engine.ledger.delete_job(&job_id).await?;
        objects.delete_all().await?;
    }
    engine.ledger.create_job(&JobRecord::new(&job_id, now_ms())).await?;
    let job = engine.ledger.get_job(&job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    tracing::info!(job = %job_id, status = job.status.as_str(), "job");
    let stored_plan = match job.status {
        JobStatus::Planning => None,
        _ => {
            let plan = objects.plan().await?;
            let planned: Vec<&InputObject> = plan.inputs.iter().map(|i| &i.object).collect();
            if planned != inputs.iter().collect::<Vec<_>>() {
                return Err(Error::Conflict(format!(
                    "job {job_id} was planned over other inputs (or they changed since); use --force or another --job-id"
                )));
            }
            Some(plan.of_run(&job))
        }
    };
    if job.status == JobStatus::Complete {
        if let Some(summary) = objects.summary().await? {
            return Ok(Prepared::Complete(Box::new(Summary { already_complete: true, ..summary })));
        }
    }
    if job.status == JobStatus::Failed {
        return Err(objects.failure_error().await);
    }
    // Loading the reference and scanning the inputs are independent: do both at once.
    let started = std::time::Instant::now();
    let load_lookup = async {
        let loaded = engine.open_lookup(spec.enrich.as_ref()).await;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "reference loaded");
        loaded
    };
    let scan = async {
        let scanned = match job.status {
            JobStatus::Planning => scan_inputs(engine, spec, inputs).await.map(Some),
            _ => Ok(None),
        };
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "inputs scanned");
        scanned
    };
    let (lookup, scanned) = tokio::join!(load_lookup, scan);
    let lookup: Option<Arc<LookupTable>> = lookup?;
    let mut windows = Vec::new();
    let plan = match scanned? {
        Some(Scanned { inputs, chunks, windows: w }) => {
            windows = w;
            // A wrong file stops here, before anything is stored or worked.
            let warnings = check_shapes(engine, spec, &inputs, &chunks).await?;
            for w in &warnings {
                tracing::warn!(job = %job_id, "{w}");
            }
            let output_fields = output_fields(spec, &inputs, lookup.as_deref());
            let output_format = spec.output_format(output_fields.is_some());
            let order = job.created_ms.max(0) as u64;
            JobPlan { job_id: job_id.clone(), inputs, chunks, output_fields, output_format, order, warnings }
        }
        None => stored_plan.ok_or_else(|| Error::NotFound(objects.plan_path()))?,
    };
    tracing::info!(job = %job_id, chunks = plan.chunks.len(), records = plan.total_records(), "planned");
    // Building the run checks the plan against the job (e.g. a header without a declared
    // column) before anything is stored: a job that cannot run stays `planning`.
    let run = JobRun::open(engine, spec.clone(), plan, lookup.clone(), opts.progress.clone())?;
    if let (Some(sink), Some(replaced)) = (&run.sink, replaced) {
        sink.discard(replaced).await?;
    }
    if job.status != JobStatus::Planning {
        return Ok(Prepared::Ready(run));
    }
    // Two planners of one job id store one plan: the first wins, the second uses it. Both
    // write the same resume windows first, so a stored plan always has its windows.
    objects.put_definition_once(&ship_resources(engine, &spec.definition).await?).await?;
    for (i, spooled) in windows.iter().enumerate() {
        let (file, key) = match spooled {
            None => continue,
            Some(Spooled::Windows(f)) => (f, objects.windows_path(i as u32)),
            Some(Spooled::PlainCopy(f)) => (f, objects.plain_copy_path(i as u32)),
        };
        bucket::upload_file(engine.bucket.clone(), file.path(), &key).await?;
    }
    let run = match objects.put_plan_once(&run.plan).await? {
        true => run,
        false => JobRun::open(engine, spec.clone(), objects.plan().await?, lookup, opts.progress.clone())?,
    };
    engine.ledger.set_planned(&job_id, run.plan.chunks.len() as u32, now_ms()).await?;
    Ok(Prepared::Ready(run))
}

/// The definition workers on other hosts get: when outputs go to a cloud bucket, a reference
/// file on this machine's disk is uploaded next to the jobs (`resources/<sha256>-<name>`, so
/// the same file is uploaded once) and named by its bucket URL. Workers read job resources
/// only from buckets and tables, never from their own disks.
async fn ship_resources(engine: &Engine, definition: &JobDefinition) -> Result<JobDefinition> {
    let mut shipped = definition.clone();
    let Some(e) = shipped.config.enrich.as_mut() else { return Ok(shipped) };
    if !engine.bucket_url.starts_with("s3://") || super::on_any_host(&e.source) {
        return Ok(shipped);
    }
    if e.source.starts_with("sqlite:") {
        return Err(Error::config(
            "enrich.source",
            "a sqlite: reference lives in one machine's data directory; a job worked on other hosts \
             needs its reference in a bucket (s3://…), in DynamoDB, or in a file this machine uploads",
        ));
    }
    let path = std::path::PathBuf::from(e.source.strip_prefix("file://").unwrap_or(&e.source));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "reference".into());
    let hashed = path.clone();
    let digest = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(&hashed)?, &mut h)?;
        Ok(h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect())
    })
    .await
    .map_err(|e| Error::internal("fs", "hash task failed", e))?
    .map_err(|err| Error::input(&e.source, format!("cannot read the enrichment source: {err}")))?;
    let key = format!("resources/{digest}-{name}");
    let store = engine.bucket.clone();
    if bucket::get_opt_head(store.as_ref(), &key).await?.is_none() {
        bucket::upload_file(store, &path, &key).await?;
    }
    e.source = format!("{}/{key}", engine.bucket_url.trim_end_matches('/'));
    Ok(shipped)
}

/// The scanned inputs.
pub struct Scanned {
    /// Each input, planned.
    pub inputs: Vec<PlannedInput>,
    /// The chunks of all of them, numbered across them.
    pub chunks: Vec<Chunk>,
    /// What each compressed input's chunks are read with, spooled for the bucket; none when
    /// they need nothing.
    pub windows: Vec<Option<Spooled>>,
}

/// A file the planner made for an input's workers, in the engine's spool directory
/// ([`Engine::spool_dir`]).
pub enum Spooled {
    /// Resume windows, for [`JobObjects::windows_path`].
    Windows(tempfile::NamedTempFile),
    /// The input decompressed, for [`JobObjects::plain_copy_path`].
    PlainCopy(tempfile::NamedTempFile),
}

/// The most a compressed input's chunks may decode in all, as a multiple of its plain size
/// (plus one resume gap): past it the planner stores the input decompressed once instead.
/// Streams whose resume points are far apart or absent (one zstd frame, one giant deflate
/// block) would otherwise make each chunk decode everything since the last point, which is
/// quadratic in the chunks.
pub const MAX_DECODED_PER_BYTE: u64 = 2;

/// The decompressed bytes the workers of `scan`'s chunks decode, each from its resume point
/// (or the input's start) to its end.
fn planned_decoding(scan: &InputScan) -> u64 {
    scan.chunks.iter().map(|c| c.end - c.resume.as_ref().map_or(0, |r| r.point.out)).sum()
}

/// Scan every input and number the chunks across them. A compressed input's resume points
/// are noted as it is decoded, so that each chunk's worker decodes only its own range; one
/// whose points are too far apart for that is stored decompressed ([`MAX_DECODED_PER_BYTE`]),
/// within the scratch space.
pub async fn scan_inputs(engine: &Engine, spec: &JobSpec, inputs: Vec<InputObject>) -> Result<Scanned> {
    let (targets, dialect) = (spec.chunking, spec.input.dialect);
    // About a chunk's worth between points: a chunk closes just after one. Chunks cut by a
    // record count have no size known ahead, so their points are the least gap apart.
    let gap = match targets.records {
        Some(_) => crate::input::resume_points::MIN_GAP,
        None => crate::input::resume_points::MIN_GAP.max(targets.bytes.get()),
    };
    let mut room = engine.scratch_room();
    let mut scanned = Scanned { inputs: Vec::new(), chunks: Vec::new(), windows: Vec::new() };
    // Whether the last chunk is a whole input (or a pack of them) that may take the next.
    let mut packs = false;
    for (i, object) in inputs.into_iter().enumerate() {
        let reader = bucket::open_reader(engine.inputs.clone(), &object).await?;
        let (format, compression, size) = (object.format, object.compression, object.size);
        let location = object.location.clone();
        let max = spec.input.max_decompressed(object.size);
        let spool_dir = engine.spool_dir()?;
        let (mut scan, mut windows) = tokio::task::spawn_blocking(move || -> Result<(InputScan, Option<_>)> {
            let setting = "input.max_decompressed_bytes";
            let spool_error =
                |e: std::io::Error| Error::backend(crate::error::Backend::Filesystem, "spooling resume windows", e);
            if matches!(compression, Compression::None | Compression::Auto) {
                let reader = reader.decoded_at_most(max, setting)?;
                let scan = plan::scan(reader, format, dialect, targets)
                    .map_err(|e| Error::input(&location, format!("cannot read input: {e}")))?;
                return Ok((scan, None));
            }
            let spool = tempfile::NamedTempFile::new_in(&spool_dir).map_err(spool_error)?;
            let points: plan::Points =
                Arc::new(std::sync::Mutex::new(ResumeLog::new(spool.reopen().map_err(spool_error)?)));
            let reader = reader.indexed_at_most(max, setting, gap, &points)?;
            let mut scan = plan::scan_resumable(reader, format, dialect, targets, Some(&points))
                .map_err(|e| Error::input(&location, format!("cannot read input: {e}")))?;
            let log = points.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for c in &mut scan.chunks {
                if let Some(r) = c.resume.as_mut() {
                    r.input_end = log.input_end(c.end, size);
                }
            }
            let written = log.windows_written();
            drop(log);
            let points = Arc::try_unwrap(points)
                .map_err(|_| Error::internal("plan", "resume points", std::io::Error::other("still shared")))?;
            points
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .into_windows()
                .map_err(spool_error)?;
            Ok((scan, (written > 0).then_some(Spooled::Windows(spool))))
        })
        .await
        .map_err(|e| Error::internal("plan", "scan task failed", e))??;
        let compressed = !matches!(compression, Compression::None | Compression::Auto);
        if compressed && scan.chunks.len() > 1 && planned_decoding(&scan) > MAX_DECODED_PER_BYTE * scan.bytes + gap {
            // Nowhere to resume near enough: workers read ranges of a decompressed copy.
            if let Some(left) = room {
                room = Some(left.checked_sub(scan.bytes).ok_or_else(|| too_big_to_copy(&object, scan.bytes, left))?);
            }
            let (copy, rescanned) = plain_copy(engine, spec, &object, scan.bytes).await?;
            (scan, windows) = (rescanned, Some(Spooled::PlainCopy(copy)));
        }
        let plain_copy = matches!(windows, Some(Spooled::PlainCopy(_)));
        let whole = scan.chunks.len() == 1 && !plain_copy;
        for mut c in scan.chunks {
            c.input = i as u32;
            match scanned.chunks.last_mut() {
                Some(last) if whole && packs && fits(targets, last, &c) => last.pack(c),
                _ => {
                    c.index = scanned.chunks.len() as u32;
                    scanned.chunks.push(c);
                }
            }
        }
        // Only a chunk that is a whole input (or already a pack of them) takes more inputs.
        packs = whole;
        let windows_bytes = match &windows {
            Some(Spooled::Windows(f)) => f.as_file().metadata().map_or(0, |m| m.len()),
            _ => 0,
        };
        scanned.inputs.push(PlannedInput {
            object,
            header: scan.header,
            records: scan.records,
            plain_copy,
            windows_bytes,
        });
        scanned.windows.push(windows);
    }
    Ok(scanned)
}

/// Whether `next` (a whole input) packs into `last` (a whole input or a pack of them) within
/// the chunk targets and [`MAX_PIECES`]: many small inputs make few chunks, each of about
/// the size a chunk of one large input has.
fn fits(targets: ChunkTargets, last: &Chunk, next: &Chunk) -> bool {
    last.more.len() + 1 < MAX_PIECES
        && last.bytes() + next.bytes() <= targets.bytes.get()
        && targets.records.is_none_or(|n| last.records + next.records <= n.get())
}

/// The refusal of a plain copy the scratch space cannot hold.
fn too_big_to_copy(object: &InputObject, bytes: u64, left: u64) -> Error {
    Error::config(
        "SLUICEBOX_SCRATCH_LIMIT_MB",
        format!(
            "{} has no resume points near enough to read its chunks apart (a single zstd frame or \
             one huge deflate block), and its {bytes} decompressed bytes would not fit in the {left} bytes \
             left of the scratch space: raise the limit (and the function's ephemeral storage), or \
             recompress it in independent pieces (pzstd, zstd --block-size, or gzip -6)",
            object.location
        ),
    )
}

/// `object` decompressed into a spool file, read a second time (exactly `bytes` long, as the
/// first scan found it: an object that changed since fails), and the copy scanned for chunks
/// of the target size, which need no resume points.
async fn plain_copy(
    engine: &Engine,
    spec: &JobSpec,
    object: &InputObject,
    bytes: u64,
) -> Result<(tempfile::NamedTempFile, InputScan)> {
    let reader = bucket::open_reader(engine.inputs.clone(), object).await?;
    let spool_dir = engine.spool_dir()?;
    let (location, format, dialect, targets) =
        (object.location.clone(), object.format, spec.input.dialect, spec.chunking);
    tokio::task::spawn_blocking(move || {
        let spool_error =
            |e: std::io::Error| Error::backend(crate::error::Backend::Filesystem, "spooling a decompressed copy", e);
        let file = tempfile::NamedTempFile::new_in(&spool_dir).map_err(spool_error)?;
        let mut decoded = reader.decoded_at_most(bytes, "input.max_decompressed_bytes")?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file.reopen().map_err(spool_error)?);
        let copied = std::io::copy(&mut decoded, &mut writer)
            .map_err(|e| Error::input(&location, format!("cannot read input a second time: {e}")))?;
        std::io::Write::flush(&mut writer).map_err(spool_error)?;
        if copied != bytes {
            return Err(Error::input(
                &location,
                format!("changed while it was planned: {copied} decompressed bytes, {bytes} before"),
            ));
        }
        let copy = std::io::BufReader::with_capacity(1 << 20, file.reopen().map_err(spool_error)?);
        let scan = plan::scan(copy, format, dialect, targets)
            .map_err(|e| Error::input(&location, format!("cannot read input: {e}")))?;
        Ok((file, scan))
    })
    .await
    .map_err(|e| Error::internal("plan", "copy task failed", e))?
}

/// Judge every input's shape against the declared columns ([`crate::input::shape`]): its
/// CSV header, or the keys of the first records of a JSON input (read from its first chunk,
/// at most [`SAMPLE_BYTES`](crate::input::shape::SAMPLE_BYTES)). Fails naming the file and
/// the field when one is the wrong shape; else the warnings to give.
pub async fn check_shapes(
    engine: &Engine,
    spec: &JobSpec,
    inputs: &[PlannedInput],
    chunks: &[Chunk],
) -> Result<Vec<String>> {
    use crate::input::shape;
    let columns = &spec.definition.config.columns;
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let object = &input.object;
        let sampled = match object.format {
            Format::Csv => Vec::new(),
            format => {
                let first = chunks.iter().flat_map(|c| c.pieces()).find(|p| p.input as usize == i && p.records > 0);
                match first {
                    None => Vec::new(),
                    Some(p) => {
                        let end = p.end.min(p.start + shape::SAMPLE_BYTES);
                        let bytes = bucket::read_range(engine.inputs.clone(), object, p.start, end).await?;
                        let whole = match (end < p.end, format) {
                            (true, Format::Jsonl) => {
                                let cut = crate::input::decode::last_record_end(format, &spec.input.dialect, &bytes);
                                bytes.slice(..cut.unwrap_or(0))
                            }
                            _ => bytes,
                        };
                        tokio::task::spawn_blocking(move || shape::sample_keys(format, &whole))
                            .await
                            .map_err(|e| Error::internal("plan", "sampling task failed", e))?
                    }
                }
            }
        };
        let header = input.header.as_deref().filter(|_| object.format == Format::Csv && spec.input.dialect.header);
        warnings.extend(shape::judge(&object.location, header, &sampled, columns, spec.unknown_columns)?);
    }
    Ok(warnings)
}

/// Output fields: as configured; else, without transforms, the first input's columns
/// (renamed) followed by the lookup's fields.
pub fn output_fields(spec: &JobSpec, inputs: &[PlannedInput], lookup: Option<&LookupTable>) -> Option<Vec<String>> {
    if let Some(f) = &spec.output_fields {
        return Some(f.clone());
    }
    if !spec.transforms.is_empty() {
        return None;
    }
    let first = inputs.first()?;
    let mut fields: Vec<String> = match (&first.header, first.object.format) {
        (Some(h), Format::Csv) if spec.input.dialect.header && !h.is_empty() => {
            h.iter().map(|n| spec.out_name(n).to_string()).collect()
        }
        // A headerless CSV has exactly the declared columns; JSON records may have any fields.
        (_, Format::Csv) if !spec.columns.is_empty() => spec.columns.iter().map(|c| c.out.clone()).collect(),
        _ => return None,
    };
    if let Some(l) = lookup {
        for f in l.fields() {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
    }
    Some(fields)
}

/// Send a task for every chunk not yet committed; returns how many were sent.
pub async fn enqueue(run: &JobRun) -> Result<u32> {
    let job_id = run.id();
    let committed: HashSet<u32> = run.engine.ledger.chunks(job_id).await?.iter().map(|c| c.index).collect();
    let done_records: u64 = run.plan.chunks.iter().filter(|c| committed.contains(&c.index)).map(|c| c.records).sum();
    run.progress.set_length(run.plan.total_records());
    run.progress.set_position(done_records);
    let tasks: Vec<String> = run
        .plan
        .chunks
        .iter()
        .filter(|c| !committed.contains(&c.index))
        .map(|c| {
            serde_json::to_string(&Task { job_id: job_id.to_string(), chunk: c.clone(), generation: run.plan.order })
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::internal("json", "encode task", e))?;
    for batch in tasks.chunks(10) {
        run.engine.queue.send(batch.to_vec()).await?;
    }
    Ok(tasks.len() as u32)
}

/// Keep the requests a planner or submitter made in `jobs/<id>/calls/`, for the summary.
pub async fn record_calls(run: &JobRun, tally: &Tally) -> Result<()> {
    let mut calls = tally.take();
    if calls.is_empty() {
        return Ok(());
    }
    if run.engine.bucket_url.starts_with("s3://") {
        // This write itself.
        *calls.entry("s3.PutObject".into()).or_default() += 1;
    }
    run.objects.put_calls(&calls, now_ms()).await
}
