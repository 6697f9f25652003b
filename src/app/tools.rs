//! The tools around a job file: `check`, `init`, `ddl`, and on AWS `produce` and `aws setup`.

use std::path::PathBuf;

use super::engine;
use crate::backends::bucket;
use crate::engine::spec::Overrides;
use crate::engine::BackendUrls;
use crate::error::{Error, Result};

/// `sluicebox check`.
#[derive(Debug, Clone)]
pub struct Check {
    /// The job file.
    pub config: PathBuf,
    /// Run the first records of this file through the pipeline.
    pub sample: Option<String>,
    /// Records shown with `sample`.
    pub records: u64,
    /// Where a reference is imported and the SQLite sink lives.
    pub data_dir: PathBuf,
    /// The sink, over the job file's `[sink]`.
    pub sink: Option<String>,
}

/// Check a job file as `run` would, its reference and sink reached; with a sample, what its
/// first records become. The report, as text.
pub async fn check(c: Check) -> Result<String> {
    let overrides = Overrides { sink: c.sink.map(|url| (url, "--sink")), chunk_mib: None, sink_writers: None };
    let spec = crate::engine::spec::load(Some(&c.config), &overrides)?;
    let first = c.sample.clone().unwrap_or_default();
    let engine = engine(&c.data_dir, &BackendUrls::embedded(), &first).await?;
    let mut out = format!("{}: ok\n", c.config.display());
    for line in crate::tools::check::check(&engine, &spec).await? {
        out += &format!("  {line}\n");
    }
    if let Some(file) = &c.sample {
        let (format, compression) = (spec.input.format, spec.input.compression);
        let inputs =
            bucket::resolve_inputs(engine.inputs.as_ref(), std::slice::from_ref(file), format, compression).await?;
        let first = inputs.first().ok_or_else(|| Error::config("--sample", format!("{file}: no file there")))?;
        let rows = crate::tools::check::sample(&engine, &spec, first, c.records).await?;
        let table = crate::tools::check::table(&rows, 90);
        out += &format!("\nthe first {} records of {}:\n{table}", rows.len(), first.location);
    }
    Ok(out)
}

/// `sluicebox init`.
#[derive(Debug, Clone)]
pub struct Init {
    /// The file to sample.
    pub file: PathBuf,
    /// Where to write the job file (default: return it).
    pub out: Option<PathBuf>,
    /// Overwrite `out`.
    pub force: bool,
    /// Records read to detect the columns.
    pub sample_records: usize,
}

/// Draft a job file from a sample of a file: the job file's text, or (written to `out`) a
/// summary of what it found.
pub fn init(i: Init) -> Result<String> {
    use crate::tools::init;
    if let Some(out) = &i.out {
        // Before the sample is read: a refusal should not wait for it.
        init::check_out(out, &i.file, i.force)?;
    }
    let (input, job) = (i.file.display().to_string(), i.out.as_ref().map(|o| o.display().to_string()));
    let names = init::Names { input: &input, job: job.as_deref().unwrap_or("job.toml") };
    let draft = init::draft(&i.file, names, i.sample_records)?;
    match &i.out {
        Some(out) => {
            init::write_job_file(out, &draft.text, i.force)?;
            Ok(draft.summary(names.job))
        }
        None => Ok(draft.text),
    }
}

/// `sluicebox ddl`.
#[derive(Debug, Clone)]
pub struct Ddl {
    /// The job file.
    pub config: PathBuf,
    /// Where the files are.
    pub location: String,
    /// The table (default: from the job file's name).
    pub table: Option<String>,
    /// The Glue database.
    pub database: Option<String>,
    /// The stream's files (the default when the job file has a `[stream]` section).
    pub stream: bool,
    /// The merged output of this batch job.
    pub job: Option<String>,
    /// The output fields, in order, over the job file's.
    pub fields: Option<Vec<String>>,
}

/// The Athena `CREATE EXTERNAL TABLE` over a stream's files or a job's output.
pub fn ddl(d: Ddl) -> Result<String> {
    use crate::tools::ddl::{self, Layout};
    let spec = crate::engine::spec::load(Some(&d.config), &Overrides::default())?;
    let layout = match (d.job, d.stream || spec.definition.config.stream.is_some()) {
        (Some(id), _) => Layout::Job(id),
        (None, true) => Layout::Stream,
        (None, false) => {
            let what = "has no [stream] section: give --stream (files of `sluicebox stream`) or --job JOB_ID";
            return Err(Error::config(d.config.display().to_string(), what));
        }
    };
    let table = match d.table {
        Some(t) => t,
        None => ddl::table_name(&d.config)?,
    };
    let opts = ddl::Options { location: d.location, table, database: d.database, layout, fields: d.fields };
    ddl::create_table(&spec, &opts)
}

/// `sluicebox produce`.
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    /// The file: a path or `s3://BUCKET/KEY`.
    pub file: String,
    /// The job file whose `[input]` says how to read it.
    pub config: Option<PathBuf>,
    /// The stream: `kinesis://STREAM`.
    pub to: String,
    /// The field whose value is each record's partition key.
    pub partition_key: Option<String>,
    /// Create the stream with this many shards when it does not exist.
    pub shards: Option<std::num::NonZeroU32>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// Put every record of a file on a Kinesis data stream.
#[cfg(feature = "aws")]
pub async fn produce(p: ProduceRequest) -> Result<crate::tools::produce::Produced> {
    use crate::tools::produce::{self, KinesisStream, Produce, PutRecords, QueueTarget, Source};
    let config = match &p.config {
        Some(path) => crate::model::config::JobConfig::load(path)?,
        None => crate::model::config::JobConfig::default(),
    };
    let cloud = crate::backends::cloud::Cloud::lazy();
    let to: Box<dyn PutRecords> = match p.to.strip_prefix("sqs://") {
        // Seed 003's scheduler: one message per record.
        Some(_) => {
            let queue = crate::backends::queue::open(&p.to, std::time::Duration::from_secs(30), &cloud).await?;
            Box::new(QueueTarget::new(queue))
        }
        None => {
            let stream = produce::stream_name(&p.to)?;
            Box::new(KinesisStream::open(crate::backends::aws::kinesis(cloud.sdk("--to")?), stream, p.shards).await?)
        }
    };
    let source = Source::open(&p.file, &config, &cloud).await?;
    let how = Produce { partition_key: p.partition_key, ..Produce::default() };
    let progress = super::bar(p.progress, super::RECORDS_BAR);
    let produced = produce::produce(&source, to.as_ref(), &p.to, &how, &progress).await;
    progress.finish_and_clear();
    produced
}

/// Create the AWS resources a job needs; a line for each.
#[cfg(feature = "aws")]
pub async fn setup(what: &crate::backends::setup::Setup) -> Result<String> {
    let cloud = crate::backends::cloud::Cloud::lazy();
    let lines = crate::backends::setup::setup(cloud.sdk("aws setup")?, what).await?;
    Ok(lines.join("\n") + "\n")
}
