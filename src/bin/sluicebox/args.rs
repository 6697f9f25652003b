//! The arguments of the commands that run, forecast or check a job, and what each becomes
//! as a library request.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use sluicebox::app;

use crate::serve::Backends;

#[derive(Parser)]
#[command(
    name = "sluicebox",
    version,
    about = "Split a file of records, process every record in parallel, gather the results."
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run (or resume) a job over INPUT files, directories or s3:// objects. With a shared
    /// queue (--queue sqs://…) and no --workers, plan and enqueue it for `sluicebox worker`s.
    Run(RunArgs),
    /// Take the rejected records of a completed job, and only those, through a corrected job
    /// file (default: the job's own definition) as a new job linked to it, into the same
    /// table and outputs; a redrive of the redrive takes what is still rejected.
    Redrive(RedriveArgs),
    /// Show what a job over INPUT would do and cost, without running it: a dry run that scans
    /// the inputs (or, with --estimate, only lists them) and predicts its requests and bill.
    Plan(PlanArgs),
    /// Write a commented job file for FILE (CSV, JSON Lines or JSON; gzip or zstd) from a
    /// sample of it: the CSV dialect, and each column's type, date format, required and
    /// max_length. It runs as it is; edit it to taste.
    Init(InitArgs),
    /// Where a job stands: state, chunks and records done, rejects by rule, time elapsed and
    /// left. Without JOB_ID: the recent jobs in the bucket.
    Status(crate::serve::StatusArgs),
    /// Check a job file as `run` would (keys, jq programs, schema, the reference and its key,
    /// the sink) without running anything; with --sample, show what the first records of a
    /// file would become.
    Check(CheckArgs),
    /// Run the job file's `[[tests]]`: each record through the pipeline, compared with what it
    /// expects; exits 1 when one fails, with a diff.
    Test(TestArgs),
    /// Take tasks of any job from a shared queue until stopped (SIGTERM or Ctrl-C: finish the
    /// tasks in hand; a second signal, or --grace-secs later: give them back to the queue).
    Worker(crate::serve::WorkerArgs),
    /// Start a job for every object created under PREFIX (s3://BUCKET/PREFIX), from the S3
    /// event notifications in --events (with --workers, also work the jobs here); or for every
    /// file that lands in the local directory DIR once it is complete, run here, each file once
    /// across restarts.
    Watch(crate::serve::WatchArgs),
    /// Generate synthetic orders, run the orders pipeline on them and report throughput.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
    /// Deliver a stream of records (standard input, files, or a Kinesis stream) through the
    /// job's pipeline into files per partition, sized by `[stream]`, each record in exactly
    /// one file; checkpoints are kept in the ledger, so a restart goes on where it stopped.
    Stream(crate::serve::StreamArgs),
    /// Print the Athena (Glue) CREATE EXTERNAL TABLE over a stream's files (partitions
    /// projected from `[stream] partition`) or a batch job's output, typed by the declared
    /// columns as the Parquet output is.
    Ddl(DdlArgs),
    /// Put every record of FILE (CSV, JSON Lines or JSON; gzip or zstd) on a Kinesis data
    /// stream, one JSON object each (CSV rows: header → text), in PutRecords requests of up to
    /// 500 records; nothing is sent if a record cannot be put (feature `aws`).
    #[cfg(feature = "aws")]
    Produce(crate::aws::ProduceArgs),
    /// AWS resources (feature `aws`).
    #[cfg(feature = "aws")]
    Aws {
        #[command(subcommand)]
        command: crate::aws::AwsCommand,
    },
}

/// A job's inputs, definition and data directory, as `run` and `plan` take them.
#[derive(clap::Args)]
pub struct JobArgs {
    /// Input files, directories (every file under it), file:// URLs or s3:// objects; all
    /// form one job.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Job definition (TOML). Without one: CSV with a header, every field as text.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the bucket (outputs), the SQLite database (ledger, sink) and fetched references
    /// live.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Concurrent workers (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Job id (default: derived from the inputs and the job definition).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Discard an earlier run of this job and run it anew.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as one JSON line at the end of stdout.
    #[arg(long)]
    pub json: bool,
    /// With a shared queue: after enqueueing, follow the job until it completes and print
    /// its summary.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub backends: Backends,
}

#[derive(clap::Args)]
pub struct RedriveArgs {
    /// The completed job whose rejected records are taken again.
    pub job_id: String,
    /// A corrected job definition (TOML); default: the job's own, as stored with it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the bucket (outputs), the SQLite database (ledger, sink) and fetched references
    /// live.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// Concurrent workers (default: number of cores; with a shared queue, none: submit only).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the summary as one JSON line at the end of stdout.
    #[arg(long)]
    pub json: bool,
    /// With a shared queue: follow the redrive until it ends and print its summary.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub backends: Backends,
}

impl RedriveArgs {
    /// The request; `progress`: whether bars are drawn.
    pub fn request(self, progress: bool) -> app::Redrive {
        app::Redrive {
            job_id: self.job_id,
            config: self.config,
            data_dir: self.data_dir,
            backends: self.backends.request(),
            workers: self.workers,
            wait: self.wait,
            progress,
        }
    }
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Read nothing but the listing: records and chunks from object sizes (assumed 100 bytes
    /// a record, compressed inputs 3.5 times larger decompressed).
    #[arg(long)]
    pub estimate: bool,
    /// Predict for the Lambda functions of deploy/aws/template.yaml instead of workers
    /// (implies an S3 bucket, an SQS queue and a DynamoDB ledger when those are not given).
    #[arg(long)]
    pub lambda: bool,
    /// With --lambda: the task function's memory, MB.
    #[arg(long, default_value_t = 1769)]
    pub memory_mb: u32,
    /// With --lambda: `arm64` or `x86_64`.
    #[arg(long, default_value = "arm64", value_parser = ["arm64", "x86_64"])]
    pub architecture: String,
    /// With --lambda: task functions at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// Workers in this process, as for `run` (default: the number of cores; with a shared
    /// queue, none: `run` then only submits the job, for worker processes elsewhere).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Worker processes elsewhere (`sluicebox worker`) that take the job's tasks (default: 1
    /// when this one only submits, else 0), each with --workers-each workers.
    #[arg(long)]
    pub worker_processes: Option<u32>,
    /// Workers in each of the --worker-processes (default: the number of cores).
    #[arg(long)]
    pub workers_each: Option<u32>,
    /// A price table to use instead of the bundled one (prices/aws-us-east-1.toml's format).
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Print the forecast as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backends: Backends,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The job file.
    pub config: PathBuf,
    /// Run the first records of this file through the pipeline and show what each becomes.
    #[arg(long, value_name = "FILE")]
    pub sample: Option<String>,
    /// Records shown with --sample.
    #[arg(long, default_value_t = 10)]
    pub records: u64,
    /// Where a reference is imported and the SQLite sink lives, as for `run`.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// The sink, as for `run` (overrides the job file's `[sink]`).
    #[arg(long)]
    pub sink: Option<String>,
}

#[derive(clap::Args)]
pub struct TestArgs {
    /// The job file.
    pub config: PathBuf,
    /// Where a reference is imported, as for `run`.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// Print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The file to sample: CSV, JSON Lines or JSON, gzip or zstd compressed or not.
    pub file: PathBuf,
    /// Write the job file here (default: print it).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Records read to detect the columns (a larger sample finds rarer values).
    #[arg(long, default_value_t = sluicebox::tools::init::DEFAULT_SAMPLE_RECORDS)]
    pub sample_records: usize,
}

#[derive(clap::Args)]
pub struct DdlArgs {
    /// The job file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// `s3://BUCKET/PREFIX/`: where the stream writes (`stream --to`), or where `jobs/` is.
    #[arg(long)]
    pub location: String,
    /// The table (default: from the job file's name, lower-cased, `_` for anything else).
    #[arg(long)]
    pub table: Option<String>,
    /// The Glue database.
    #[arg(long)]
    pub database: Option<String>,
    /// The stream's files (the default when the job file has a `[stream]` section).
    #[arg(long, conflicts_with = "job")]
    pub stream: bool,
    /// The merged output of this batch job.
    #[arg(long, value_name = "JOB_ID")]
    pub job: Option<String>,
    /// The output fields, in order, over the job file's.
    #[arg(long, value_delimiter = ',')]
    pub fields: Option<Vec<String>>,
}

impl JobArgs {
    fn files(self) -> app::JobFiles {
        app::JobFiles { inputs: self.inputs, config: self.config, data_dir: self.data_dir }
    }
}

impl RunArgs {
    /// The request; `progress`: whether bars are drawn.
    pub fn request(self, progress: bool) -> app::Run {
        app::Run {
            job: self.job.files(),
            backends: self.backends.request(),
            workers: self.workers,
            job_id: self.job_id,
            force: self.force,
            wait: self.wait,
            progress,
        }
    }
}

impl PlanArgs {
    /// The request.
    pub fn request(self) -> app::Plan {
        let runner = match self.lambda {
            true => app::Runner::Lambda {
                memory_mb: self.memory_mb,
                architecture: self.architecture,
                concurrency: self.concurrency,
            },
            false => {
                app::Runner::Workers { here: self.workers, elsewhere: self.worker_processes, each: self.workers_each }
            }
        };
        let (job, backends) = (self.job.files(), self.backends.request());
        app::Plan { job, backends, estimate: self.estimate, runner, prices: self.prices }
    }
}

impl CheckArgs {
    /// The request.
    pub fn request(self) -> app::Check {
        let (config, sample, records, data_dir, sink) =
            (self.config, self.sample, self.records, self.data_dir, self.sink);
        app::Check { config, sample, records, data_dir, sink }
    }
}

impl InitArgs {
    /// The request.
    pub fn request(self) -> app::Init {
        app::Init { file: self.file, out: self.out, force: self.force, sample_records: self.sample_records }
    }
}

impl DdlArgs {
    /// The request.
    pub fn request(self) -> app::Ddl {
        app::Ddl {
            config: self.config,
            location: self.location,
            table: self.table,
            database: self.database,
            stream: self.stream,
            job: self.job,
            fields: self.fields,
        }
    }
}
