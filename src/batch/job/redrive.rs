//! A redrive (`sluicebox redrive JOB_ID`): the rejected records of a completed job, and only
//! those, as the inputs of a new job linked to it, through a corrected job file or the job's
//! own definition.
//!
//! The rejects file keeps each record's input, number, line and raw text. The records of each
//! input are written back, in their order, into an input of the same format beside the job's
//! other objects (`jobs/<id>/redrive/N-NAME`, with the CSV header the job read), and a new job
//! runs over them like any job (planned, chunked, worked by workers or Lambda functions,
//! gathered). Its definition names the job it redrives and the order of the first job of the
//! line, which its sink items carry: a corrected record is stored as that job's record would
//! have been, so it replaces what that job replaced, and a later job's item is never replaced
//! by it. A redrive of the redrive takes what is still rejected.

use std::collections::BTreeMap;

use super::{JobObjects, JobPlan};
use crate::backends::bucket;
use crate::backends::ledger::JobStatus;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::input::decode::CsvDialect;
use crate::model::config::{Format, JobDefinition, Redrive};
use crate::model::record::Reject;

/// Where, below a watched prefix, a job file uploaded as `JOB_ID.toml` asks the stack to
/// redrive job `JOB_ID` through it (the on-object function takes it; no job reads it as input).
pub const REDRIVE_DIR: &str = "_redrive/";

/// The inputs and lineage of a redrive.
#[derive(Debug, Clone)]
pub struct Redriving {
    /// The redriven job's stored definition (the redrive's, unless a corrected one is given).
    pub definition: JobDefinition,
    /// The redrive's inputs, by URL, in the engine's bucket.
    pub inputs: Vec<String>,
    /// What the redrive's definition carries.
    pub redrive: Redrive,
    /// Rejected records taken.
    pub records: u64,
}

/// Write the rejected records of job `job_id` as the inputs of its redrive. Fails when the job
/// is not complete (a failed or running job's rejects are not all known) or has no rejects.
pub async fn prepare(engine: &Engine, job_id: &str) -> Result<Redriving> {
    crate::model::config::check_job_id(job_id, "JOB_ID")?;
    let job = engine.ledger.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
    if job.status != JobStatus::Complete {
        return Err(Error::config(
            "JOB_ID",
            format!(
                "job {job_id} is {}: a redrive takes the rejected records of a completed job (the rejects of a \
                 failed or running one are not all known)",
                job.status.as_str()
            ),
        ));
    }
    let objects = JobObjects::new(engine.bucket.clone(), job_id);
    let definition = objects.definition().await?;
    let plan: JobPlan = objects.plan().await?.of_run(&job);
    let path = objects.rejects_path();
    let located =
        |n: u64, what: String| Error::input(format!("{}/{path}", engine.bucket_url), format!("line {n}: {what}"));
    let dialect = definition.clone().check()?.input.dialect;
    // The rejects are read as a stream, a line at a time, and each input's records spooled to
    // a file of its own in their order (the merged rejects are in input order): memory holds
    // one record, whatever the number of rejects.
    let by_location: std::collections::HashMap<&str, usize> =
        plan.inputs.iter().enumerate().map(|(i, p)| (p.object.location.as_str(), i)).collect();
    let spool = tempfile::tempdir_in(engine.spool_dir()?)
        .map_err(|e| Error::backend(crate::error::Backend::Filesystem, "cannot make a redrive's spool", e))?;
    let mut bodies: BTreeMap<usize, Body> = BTreeMap::new();
    let mut lines = bucket::get_stream(engine.bucket.as_ref(), &path).await?.map(tokio::io::AsyncBufReadExt::lines);
    let mut n = 0u64;
    while let Some(line) = match lines.as_mut() {
        Some(l) => l.next_line().await.map_err(|e| located(n + 1, e.to_string()))?,
        None => None,
    } {
        n += 1;
        if line.is_empty() {
            continue;
        }
        let reject: Reject = serde_json::from_str(&line).map_err(|e| located(n, e.to_string()))?;
        let input = *by_location
            .get(reject.input.as_str())
            .ok_or_else(|| located(n, format!("{} is not an input of job {job_id}", reject.input)))?;
        let body = match bodies.entry(input) {
            std::collections::btree_map::Entry::Occupied(b) => b.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let planned = &plan.inputs[input];
                let header = planned.header.as_deref().filter(|h| dialect.header && !h.is_empty());
                v.insert(Body::start(&spool.path().join(input.to_string()), planned.object.format, header, &dialect)?)
            }
        };
        body.add(&reject.raw)?;
    }
    let records = bodies.values().map(|b| b.records).sum();
    if records == 0 {
        return Err(Error::config("JOB_ID", format!("job {job_id} has no rejected records to redrive")));
    }
    let mut inputs = Vec::new();
    for (i, body) in bodies {
        let planned = &plan.inputs[i];
        let name = planned.object.path.rsplit('/').next().unwrap_or("input");
        // Written plain: a compressed input's records are text by now.
        let name = name.trim_end_matches(".gz").trim_end_matches(".zst");
        let key = objects.redrive_input_path(i, name);
        let file = body.finish()?;
        // Written once: the rejects of a completed job do not change, and an input written
        // again would have another version, and so make another job of the same redrive.
        if bucket::get_opt_head(engine.bucket.as_ref(), &key).await?.is_none() {
            bucket::upload_file(engine.bucket.clone(), &file, &key).await?;
        }
        inputs.push(format!("{}/{key}", engine.bucket_url.trim_end_matches('/')));
    }
    // The line's first job: a redrive of a redrive stores its records as the first job would.
    let order = definition.redrive.as_ref().map_or(plan.order, |r| r.order);
    Ok(Redriving { definition, inputs, redrive: Redrive { from: job_id.to_string(), order }, records })
}

/// A redrive input being written to a spool file: the records' raw text in the input's
/// format (after the CSV header the job read, in its dialect; a JSON input as an array).
struct Body {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    format: Format,
    records: u64,
}

impl Body {
    fn start(path: &std::path::Path, format: Format, header: Option<&[String]>, dialect: &CsvDialect) -> Result<Body> {
        let file = std::fs::File::create(path).map_err(|e| spool_error(path, e))?;
        let mut body = Body { path: path.to_path_buf(), out: std::io::BufWriter::new(file), format, records: 0 };
        match (format, header) {
            (Format::Csv, Some(h)) => {
                let mut w = csv::WriterBuilder::new()
                    .delimiter(dialect.delimiter)
                    .quote(dialect.quote)
                    .from_writer(&mut body.out);
                w.write_record(h).map_err(|e| Error::internal("redrive", "write the CSV header", e))?;
                w.flush().map_err(|e| spool_error(path, e))?;
            }
            (Format::Json, _) => body.write(b"[\n")?,
            _ => {}
        }
        Ok(body)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.out, bytes).map_err(|e| spool_error(&self.path, e))
    }

    fn add(&mut self, raw: &str) -> Result<()> {
        if self.format == Format::Json && self.records > 0 {
            self.write(b",\n")?;
        }
        self.write(raw.as_bytes())?;
        if self.format != Format::Json {
            self.write(b"\n")?;
        }
        self.records += 1;
        Ok(())
    }

    /// Close the body; its file.
    fn finish(mut self) -> Result<std::path::PathBuf> {
        if self.format == Format::Json {
            self.write(b"\n]\n")?;
        }
        std::io::Write::flush(&mut self.out).map_err(|e| spool_error(&self.path, e))?;
        Ok(self.path)
    }
}

fn spool_error(path: &std::path::Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(crate::error::Backend::Filesystem, format!("cannot write {}", path.display()), e)
}

/// `definition` as the definition of the redrive `redrive`.
pub fn definition(mut definition: JobDefinition, redrive: Redrive) -> JobDefinition {
    definition.redrive = Some(redrive);
    definition
}
