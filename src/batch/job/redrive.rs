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
use crate::model::config::{Format, JobDefinition, Redrive};
use crate::model::record::Reject;

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
    let text = bucket::get_opt(engine.bucket.as_ref(), &path).await?.unwrap_or_default();
    let mut by_input: BTreeMap<usize, Vec<(u64, String)>> = BTreeMap::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let reject: Reject = serde_json::from_slice(line)
            .map_err(|e| Error::input(format!("{}/{path}", engine.bucket_url), format!("line {}: {e}", n + 1)))?;
        let input = plan.inputs.iter().position(|i| i.object.location == reject.input).ok_or_else(|| {
            Error::input(
                format!("{}/{path}", engine.bucket_url),
                format!("line {}: {} is not an input of job {job_id}", n + 1, reject.input),
            )
        })?;
        by_input.entry(input).or_default().push((reject.record, reject.raw));
    }
    let records = by_input.values().map(|r| r.len() as u64).sum();
    if records == 0 {
        return Err(Error::config("JOB_ID", format!("job {job_id} has no rejected records to redrive")));
    }
    let dialect = definition.clone().check()?.input.dialect;
    let mut inputs = Vec::new();
    for (i, mut rejects) in by_input {
        rejects.sort_by_key(|(record, _)| *record);
        let planned = &plan.inputs[i];
        let name = planned.object.path.rsplit('/').next().unwrap_or("input");
        // Written plain: a compressed input's records are text by now.
        let name = name.trim_end_matches(".gz").trim_end_matches(".zst");
        let header = planned.header.as_deref().filter(|h| dialect.header && !h.is_empty());
        let body = match planned.object.format {
            Format::Csv => csv_body(header, dialect.delimiter, dialect.quote, &rejects)?,
            Format::Jsonl => rejects.iter().flat_map(|(_, raw)| [raw.as_bytes(), b"\n"]).flatten().copied().collect(),
            Format::Json => {
                let items: Vec<&str> = rejects.iter().map(|(_, raw)| raw.as_str()).collect();
                format!("[\n{}\n]\n", items.join(",\n")).into_bytes()
            }
        };
        let key = objects.redrive_input_path(i, name);
        // Written once: the rejects of a completed job do not change, and an input written
        // again would have another version, and so make another job of the same redrive.
        bucket::put_if_absent(engine.bucket.as_ref(), &key, body).await?;
        inputs.push(format!("{}/{key}", engine.bucket_url.trim_end_matches('/')));
    }
    // The line's first job: a redrive of a redrive stores its records as the first job would.
    let order = definition.redrive.as_ref().map_or(plan.order, |r| r.order);
    Ok(Redriving { definition, inputs, redrive: Redrive { from: job_id.to_string(), order }, records })
}

/// A CSV input of `rows` (their raw text) after `header`, in the job's dialect.
fn csv_body(header: Option<&[String]>, delimiter: u8, quote: u8, rows: &[(u64, String)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(h) = header {
        let mut w = csv::WriterBuilder::new().delimiter(delimiter).quote(quote).from_writer(Vec::new());
        w.write_record(h).map_err(|e| Error::internal("redrive", "write the CSV header", e))?;
        out = w.into_inner().map_err(|e| Error::internal("redrive", "write the CSV header", e.into_error()))?;
    }
    for (_, raw) in rows {
        out.extend_from_slice(raw.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// `definition` as the definition of the redrive `redrive`.
pub fn definition(mut definition: JobDefinition, redrive: Redrive) -> JobDefinition {
    definition.redrive = Some(redrive);
    definition
}
