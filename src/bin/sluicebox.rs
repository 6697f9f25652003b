//! The `sluicebox` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

// Records are many small allocations; mimalloc handles that pattern much faster than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "bench")]
use sluicebox::bench;
use sluicebox::cloud::Cloud;
use sluicebox::config::{JobConfig, SinkTarget};
use sluicebox::engine::{BackendUrls, Engine};
use sluicebox::job::{RunOptions, Summary};
use sluicebox::pool::Pool;
use sluicebox::spec::JobSpec;
use sluicebox::{bucket, job, watch, Error};

#[derive(Parser)]
#[command(
    name = "sluicebox",
    version,
    about = "Split a file of records, process every record in parallel, gather the results."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run (or resume) a job over INPUT files, directories or s3:// objects. With a shared
    /// queue (--queue sqs://…) and no --workers, plan and enqueue it for `sluicebox worker`s.
    Run(RunArgs),
    /// Show what a job over INPUT would do and cost, without running it: a dry run that scans
    /// the inputs (or, with --estimate, only lists them) and predicts its requests and bill.
    Plan(PlanArgs),
    /// Write a commented job file for FILE (CSV, JSON Lines or JSON; gzip or zstd) from a
    /// sample of it: the CSV dialect, and each column's type, date format, required and
    /// max_length. It runs as it is; edit it to taste.
    Init(InitArgs),
    /// Where a job stands: state, chunks and records done, rejects by rule, time elapsed and
    /// left. Without JOB_ID: the recent jobs in the bucket.
    Status(StatusArgs),
    /// Check a job file as `run` would (keys, jq programs, schema, the reference and its key,
    /// the sink) without running anything; with --sample, show what the first records of a
    /// file would become.
    Check(CheckArgs),
    /// Run the job file's `[[tests]]`: each record through the pipeline, compared with what it
    /// expects; exits 1 when one fails, with a diff.
    Test(TestArgs),
    /// Take tasks of any job from a shared queue until stopped (SIGTERM or Ctrl-C: finish the
    /// tasks in hand; a second signal, or --grace-secs later: give them back to the queue).
    Worker(WorkerArgs),
    /// Start a job for every object created under PREFIX (s3://BUCKET/PREFIX), from the S3
    /// event notifications in --events; with --workers, also work the jobs here.
    Watch(WatchArgs),
    /// Generate synthetic orders, run the orders pipeline on them and report throughput.
    #[cfg(feature = "bench")]
    Bench(BenchArgs),
    /// Deliver a stream of records (standard input, files, or a Kinesis stream) through the
    /// job's pipeline into files per partition, sized by `[stream]`, each record in exactly
    /// one file; checkpoints are kept in the ledger, so a restart goes on where it stopped.
    Stream(StreamArgs),
    /// Print the Athena (Glue) CREATE EXTERNAL TABLE over a stream's files (partitions
    /// projected from `[stream] partition`) or a batch job's output, typed by the declared
    /// columns as the Parquet output is.
    Ddl(DdlArgs),
    /// Put every record of FILE (CSV, JSON Lines or JSON; gzip or zstd) on a Kinesis data
    /// stream, one JSON object each (CSV rows: header → text), in PutRecords requests of up to
    /// 500 records; nothing is sent if a record cannot be put (feature `aws`).
    #[cfg(feature = "aws")]
    Produce(ProduceArgs),
    /// AWS resources (feature `aws`).
    #[cfg(feature = "aws")]
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
}

#[cfg(feature = "aws")]
#[derive(Subcommand)]
enum AwsCommand {
    /// Create the bucket, queue (with a dead-letter queue) and ledger table a job needs.
    Setup {
        /// `s3://BUCKET` to create.
        #[arg(long)]
        bucket: Option<String>,
        /// `sqs://NAME` to create, with `NAME-dlq` as its dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
        /// `dynamodb://TABLE` to create as a ledger.
        #[arg(long)]
        ledger: Option<String>,
        /// `dynamodb://TABLE` to create as a sink table.
        #[arg(long)]
        sink: Option<String>,
        /// Deliveries of a task before it goes to the dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
        /// The queue's visibility timeout, seconds (workers extend it while they work a task).
        #[arg(long, default_value_t = DEFAULT_VISIBILITY_SECS, value_parser = visibility_secs())]
        visibility_secs: u64,
    },
}

#[cfg(feature = "aws")]
#[derive(clap::Args)]
struct ProduceArgs {
    /// The file: a path or s3://BUCKET/KEY.
    file: String,
    /// Job definition (TOML) whose `[input]` says how to read FILE (format, CSV dialect,
    /// compression; without a header, `[[columns]]` name the fields). Default: from FILE's name.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The stream: kinesis://STREAM.
    #[arg(long, value_name = "kinesis://STREAM")]
    to: String,
    /// The field whose value is each record's partition key (default: a hash of the record's
    /// position, spreading records evenly over the shards).
    #[arg(long, value_name = "FIELD")]
    partition_key: Option<String>,
    /// Create the stream with N shards when it does not exist (and wait until it is active).
    #[arg(long, value_name = "N")]
    shards: Option<std::num::NonZeroU32>,
    /// Print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

/// A job's inputs, definition and data directory, as `run` and `plan` take them.
#[derive(clap::Args)]
struct JobArgs {
    /// Input files, directories (every file under it), file:// URLs or s3:// objects; all
    /// form one job.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Job definition (TOML). Without one: CSV with a header, every field as text.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the bucket (outputs), the SQLite database (ledger, sink) and fetched references
    /// live.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Concurrent workers (default: number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Job id (default: derived from the inputs and the job definition).
    #[arg(long)]
    job_id: Option<String>,
    /// Discard an earlier run of this job and run it anew.
    #[arg(long)]
    force: bool,
    /// Print the summary as one JSON line at the end of stdout.
    #[arg(long)]
    json: bool,
    /// With a shared queue: after enqueueing, follow the job until it completes and print
    /// its summary.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    backends: Backends,
}

#[derive(clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Read nothing but the listing: records and chunks from object sizes (assumed 100 bytes
    /// a record, compressed inputs 3.5 times larger decompressed).
    #[arg(long)]
    estimate: bool,
    /// Predict for the Lambda functions of deploy/aws/template.yaml instead of workers
    /// (implies an S3 bucket, an SQS queue and a DynamoDB ledger when those are not given).
    #[arg(long)]
    lambda: bool,
    /// With --lambda: the task function's memory, MB.
    #[arg(long, default_value_t = 1769)]
    memory_mb: u32,
    /// With --lambda: `arm64` or `x86_64`.
    #[arg(long, default_value = "arm64", value_parser = ["arm64", "x86_64"])]
    architecture: String,
    /// With --lambda: task functions at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
    /// Workers in this process, as for `run` (default: the number of cores; with a shared
    /// queue, none: `run` then only submits the job, for worker processes elsewhere).
    #[arg(long)]
    workers: Option<u32>,
    /// Worker processes elsewhere (`sluicebox worker`) that take the job's tasks (default: 1
    /// when this one only submits, else 0), each with --workers-each workers.
    #[arg(long)]
    worker_processes: Option<u32>,
    /// Workers in each of the --worker-processes (default: the number of cores).
    #[arg(long)]
    workers_each: Option<u32>,
    /// A price table to use instead of the bundled one (prices/aws-us-east-1.toml's format).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Print the forecast as one JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backends: Backends,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The job file.
    config: PathBuf,
    /// Run the first records of this file through the pipeline and show what each becomes.
    #[arg(long, value_name = "FILE")]
    sample: Option<String>,
    /// Records shown with --sample.
    #[arg(long, default_value_t = 10)]
    records: u64,
    /// Where a reference is imported and the SQLite sink lives, as for `run`.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// The sink, as for `run` (overrides the job file's `[sink]`).
    #[arg(long)]
    sink: Option<String>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The job file.
    config: PathBuf,
    /// Where a reference is imported, as for `run`.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// Print the results as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InitArgs {
    /// The file to sample: CSV, JSON Lines or JSON, gzip or zstd compressed or not.
    file: PathBuf,
    /// Write the job file here (default: print it).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
    /// Records read to detect the columns (a larger sample finds rarer values).
    #[arg(long, default_value_t = sluicebox::init::DEFAULT_SAMPLE_RECORDS)]
    sample_records: usize,
}

#[derive(clap::Args)]
struct DdlArgs {
    /// The job file.
    #[arg(long, short)]
    config: PathBuf,
    /// `s3://BUCKET/PREFIX/`: where the stream writes (`stream --to`), or where `jobs/` is.
    #[arg(long)]
    location: String,
    /// The table (default: from the job file's name, lower-cased, `_` for anything else).
    #[arg(long)]
    table: Option<String>,
    /// The Glue database.
    #[arg(long)]
    database: Option<String>,
    /// The stream's files (the default when the job file has a `[stream]` section).
    #[arg(long, conflicts_with = "job")]
    stream: bool,
    /// The merged output of this batch job.
    #[arg(long, value_name = "JOB_ID")]
    job: Option<String>,
    /// The output fields, in order, over the job file's.
    #[arg(long, value_delimiter = ',')]
    fields: Option<Vec<String>>,
}

#[derive(clap::Args)]
struct StreamArgs {
    /// Where records come from: `-` (standard input), files, directories or s3:// objects and
    /// prefixes (replayed), `kinesis://STREAM`, or `sqs://QUEUE` (a JSON object per message).
    #[arg(long, required = true, num_args = 1..)]
    from: Vec<String>,
    /// Where files go: `s3://BUCKET/PREFIX` or a directory.
    #[arg(long)]
    to: String,
    /// Job definition (TOML): `[input]`, columns, validation, transforms, enrichment,
    /// `[output]` and `[stream]`.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the local ledger (checkpoints) and fetched references live.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// The ledger keeping checkpoints: `dynamodb://TABLE` or `sqlite://PATH`.
    #[arg(long)]
    ledger: Option<String>,
    /// The consumer's name, under which its checkpoints are kept (default: from and to).
    #[arg(long)]
    name: Option<String>,
    /// Stop, writing what is buffered, when no record has come for this many seconds.
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Kinesis shards without a checkpoint start at the newest record (default: the oldest).
    #[arg(long)]
    latest: bool,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The job (default: list the recent jobs).
    job_id: Option<String>,
    /// Where the embedded bucket and ledger live.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// The bucket the job's objects are in: `s3://BUCKET[/PREFIX]` or a directory.
    #[arg(long)]
    bucket: Option<String>,
    /// The ledger: `dynamodb://TABLE` or `sqlite://PATH`.
    #[arg(long)]
    ledger: Option<String>,
    /// Jobs listed without JOB_ID.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON (one line).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// `s3://BUCKET/PREFIX`: objects created under it start jobs.
    prefix: String,
    /// The queue S3 sends the bucket's event notifications to (`sqs://NAME` or a queue URL).
    #[arg(long)]
    events: String,
    /// Job definition (TOML) for every job started.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where lookups and fetched references are kept.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// Also work tasks here with this many workers (default 0: only start jobs).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// After the first stop signal, seconds to finish the tasks in hand before giving them back.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Exit after this many seconds without an event or a task (default: run until stopped).
    #[arg(long)]
    idle_exit_secs: Option<u64>,
    #[command(flatten)]
    backends: Backends,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Where lookups imported into SQLite and fetched references are kept.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
    /// Tasks worked at once (default: number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Deliveries of a task before its job is failed (at once when its input changed or
    /// vanished); keep it below the queue's dead-letter receive count.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// After the first stop signal, seconds to finish the tasks in hand before giving them back.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Exit after this many seconds without a task (default: run until stopped).
    #[arg(long)]
    idle_exit_secs: Option<u64>,
    /// Take only jobs whose inputs, reference and sink are under these: `s3://BUCKET[/PREFIX]`,
    /// `dynamodb://TABLE` or `file:///DIR` (a directory every worker host shares), repeatable
    /// (default: any bucket or table the credentials reach, never this machine's files). Others fail.
    #[arg(long = "allow", value_name = "URL")]
    allow: Vec<String>,
    #[command(flatten)]
    backends: Backends,
}

/// Backends other than the embedded ones, by URL.
#[derive(clap::Args)]
struct Backends {
    /// Where outputs go: `s3://BUCKET[/PREFIX]` (feature `aws`) or a directory (default:
    /// DATA_DIR/bucket).
    #[arg(long)]
    bucket: Option<String>,
    /// Task queue: `sqs://NAME` (feature `aws`) or `memory://` (default).
    #[arg(long)]
    queue: Option<String>,
    /// Ledger: `dynamodb://TABLE` (feature `aws`) or `sqlite://PATH` (default: DATA_DIR/sluicebox-ledger.db).
    #[arg(long)]
    ledger: Option<String>,
    /// Sink: `dynamodb://TABLE` (feature `aws`), `sqlite` or `none` (overrides the job
    /// file's `[sink]` type and table).
    #[arg(long)]
    sink: Option<String>,
    /// Seconds a task stays invisible to other workers before it is given to another; a
    /// worker extends it every half of it while it works the task, so a worker that dies
    /// holds its task back for at most this long (1 to 43200, SQS's limit).
    #[arg(long, default_value_t = DEFAULT_VISIBILITY_SECS, value_parser = visibility_secs())]
    visibility_secs: u64,
    /// Also tell this target how every job ends, besides the job file's `[[notify]]`:
    /// `https://…` (webhook), `sns://TOPIC_ARN`, `ses://ADDRESS` or `smtp://ADDRESS`; repeatable.
    #[arg(long, value_name = "URL")]
    notify: Vec<String>,
    /// The sender of e-mail notifications given with --notify.
    #[arg(long, value_name = "ADDRESS")]
    notify_from: Option<String>,
}

const DEFAULT_VISIBILITY_SECS: u64 = sluicebox::queue::DEFAULT_VISIBILITY.as_secs();

fn visibility_secs() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=sluicebox::queue::MAX_VISIBILITY.as_secs())
}

impl Backends {
    /// The engine-wide notification targets (`--notify`).
    fn notify(&self) -> sluicebox::Result<Vec<sluicebox::config::Notify>> {
        self.notify.iter().map(|u| sluicebox::config::Notify::url(u, self.notify_from.clone(), "--notify")).collect()
    }

    fn urls(&self) -> BackendUrls {
        BackendUrls {
            bucket: self.bucket.clone(),
            queue: self.queue.clone(),
            ledger: self.ledger.clone(),
            visibility: Duration::from_secs(self.visibility_secs),
        }
    }
}

#[cfg(feature = "bench")]
#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyOrderArg {
    Random,
    Sequential,
}

#[cfg(feature = "bench")]
#[derive(clap::Args)]
struct BenchArgs {
    /// Synthetic order records to generate.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Working directory for the generated data and the run.
    #[arg(long, default_value = "sluicebox-bench")]
    data_dir: PathBuf,
    /// Concurrent workers (default: number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Run without the sink (outputs only), to see the sink's share.
    #[arg(long)]
    no_sink: bool,
    /// Keys in `random` order (the reference in another; 0.5% rejects of four kinds), or
    /// `sequential` (ascending, the reference in the same order, no rejects: the best case).
    #[arg(long, default_value = "random")]
    keys: KeyOrderArg,
    /// After the load, a second job that updates this share of the loaded keys (e.g. 0.1).
    #[arg(long, default_value_t = 0.0)]
    update_share: f64,
    /// The Python that runs the DuckDB peer on the same files (skipped when it cannot import
    /// `duckdb`; `pip install duckdb`).
    #[arg(long, env = "SLUICEBOX_PYTHON", default_value = "python3")]
    python: String,
    /// Do not compare with DuckDB.
    #[arg(long)]
    no_duckdb: bool,
    /// Run on S3, SQS and DynamoDB (ledger and sink) from the standard AWS configuration
    /// (feature `aws`; new resources for each run) and report API calls per record.
    #[arg(long)]
    aws: bool,
    /// With --aws: run the job through the Lambda handlers (feature `lambda`), --workers
    /// functions at once, and report GB-seconds too.
    #[arg(long, requires = "aws")]
    lambda: bool,
    /// Measure `sluicebox stream` instead: --records 200-byte JSON events piped into it from
    /// standard input, into gzip JSON Lines files and then Parquet files.
    #[arg(long, conflicts_with = "aws")]
    stream: bool,
    /// Also run the job on the orders compressed with gzip (level 6, as `gzip` writes them),
    /// right after the plain file, and report the ratio of their times and the bytes decoded.
    #[arg(long, conflicts_with_all = ["aws", "stream"])]
    gzip: bool,
    /// Measurements CSV to append one row to.
    #[arg(long, default_value = "bench/measurements.csv")]
    out: PathBuf,
    /// Print the measurement as one JSON line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Plan(args) => plan(args).await,
            Command::Init(args) => init(args),
            Command::Status(args) => status(args).await,
            Command::Check(args) => check(args).await,
            Command::Test(args) => test(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Watch(args) => watch(args).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => bench_cmd(args).await,
            Command::Stream(args) => stream(args).await,
            Command::Ddl(args) => ddl(args),
            #[cfg(feature = "aws")]
            Command::Produce(args) => produce(args).await,
            #[cfg(feature = "aws")]
            Command::Aws {
                command: AwsCommand::Setup { bucket, queue, ledger, sink, max_receives, visibility_secs },
            } => {
                let what = sluicebox::setup::Setup {
                    bucket,
                    queue,
                    ledger,
                    sink,
                    max_receives,
                    visibility: Duration::from_secs(visibility_secs),
                };
                let cloud = cloud(true).await;
                let conf = cloud.sdk("aws setup")?;
                sluicebox::setup::setup(conf, &what).await.map(|lines| emit(&(lines.join("\n") + "\n")))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The AWS configuration from the standard chain, loaded once and only when something the
/// command names is on AWS (builds with `aws`): a local run never touches it. Requests are
/// retried up to 8 times unless `AWS_MAX_ATTEMPTS` says otherwise.
#[cfg(feature = "aws")]
async fn cloud(needed: bool) -> Cloud {
    if !needed {
        return Cloud::none();
    }
    tracing::info!("loading the AWS configuration");
    let max_attempts = std::env::var_os("AWS_MAX_ATTEMPTS").is_none().then_some(8);
    Cloud::aws(sluicebox::aws::sdk_config(max_attempts).await)
}

#[cfg(not(feature = "aws"))]
async fn cloud(_needed: bool) -> Cloud {
    Cloud::none()
}

/// Whether a URL names an AWS resource (an S3 object, an SQS queue, a DynamoDB table).
fn on_aws(url: &str) -> bool {
    ["s3://", "sqs://", "dynamodb://", "https://", "http://"].iter().any(|p| url.starts_with(p))
}

impl Backends {
    fn on_aws(&self) -> bool {
        [&self.bucket, &self.queue, &self.ledger, &self.sink].into_iter().flatten().any(|u| on_aws(u))
    }
}

/// Whether a job's definition names an AWS resource (its sink or its reference).
fn spec_on_aws(spec: &JobSpec) -> bool {
    matches!(spec.sink.target, SinkTarget::Dynamodb { .. }) || spec.enrich.as_ref().is_some_and(|e| on_aws(&e.source))
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn bar(enabled: bool, template: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} records/s", state.per_sec());
        });
    bar.set_style(style);
    bar
}

const RECORDS_BAR: &str = "{bar:40} {human_pos}/{human_len} records  {msg}  {rate}  ETA {eta}";
const CHUNKS_BAR: &str = "{bar:40} {pos}/{len} chunks  {msg}  {elapsed}";

async fn run(args: RunArgs) -> sluicebox::Result<()> {
    let spec = job_spec(args.job.config.as_deref(), args.backends.sink.as_deref())?;
    let shared = args.backends.queue.as_deref().is_some_and(|q| !q.starts_with("memory://"));
    if args.wait && !shared {
        return Err(Error::config("--wait", "only with a shared queue (--queue sqs://…); a local run always waits"));
    }
    let workers = match (args.workers, shared) {
        (Some(0), false) => return Err(Error::config("--workers", "must be at least 1")),
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => cores(),
    };
    if workers == 0 {
        job::run::needs_shared_sink(&spec)?;
    }
    let urls = args.backends.urls();
    let cloud = cloud(args.backends.on_aws() || spec_on_aws(&spec) || args.job.inputs.iter().any(|i| on_aws(i))).await;
    let mut engine = Engine::with_backends(&args.job.data_dir, &urls, &args.job.inputs[0], cloud).await?;
    engine.notify = args.backends.notify()?;
    let inputs =
        bucket::resolve_inputs(engine.inputs.as_ref(), &args.job.inputs, spec.input.format, spec.input.compression)
            .await?;
    let interactive = !args.json && std::io::stderr().is_terminal();
    let opts = RunOptions {
        workers,
        job_id: args.job_id,
        force: args.force,
        visibility: urls.visibility,
        progress: bar(interactive, RECORDS_BAR),
        ..RunOptions::default()
    };
    if workers > 0 {
        let summary = job::run(&engine, &spec, inputs, &opts).await;
        opts.progress.finish_and_clear();
        print_summary(&summary?, args.json);
        return Ok(());
    }
    let submitted = job::submit(&engine, &spec, inputs, &opts).await?;
    if let Some(summary) = &submitted.summary {
        print_summary(summary, args.json);
    } else if args.wait {
        let chunks = bar(interactive, CHUNKS_BAR);
        let summary = job::wait(&engine, &submitted.job_id, &chunks).await;
        chunks.finish_and_clear();
        print_summary(&summary?, args.json);
    } else if args.json {
        emit(&format!("{}\n", serde_json::to_string(&submitted).unwrap_or_default()));
    } else {
        emit(&format!(
            "job {} submitted: {} records in {} chunks, {} tasks sent (follow it with --wait)\n",
            submitted.job_id, submitted.records, submitted.chunks, submitted.tasks_sent
        ));
    }
    Ok(())
}

#[cfg(feature = "aws")]
async fn produce(args: ProduceArgs) -> sluicebox::Result<()> {
    use sluicebox::produce::{self, KinesisStream, Produce, Source};
    let stream = produce::stream_name(&args.to)?;
    let config = match &args.config {
        Some(path) => JobConfig::load(path)?,
        None => JobConfig::default(),
    };
    let cloud = cloud(true).await;
    let source = Source::open(&args.file, &config, &cloud).await?;
    let to = KinesisStream::open(sluicebox::aws::kinesis(cloud.sdk("--to")?), stream, args.shards).await?;
    let how = Produce { partition_key: args.partition_key, ..Produce::default() };
    let progress = bar(std::io::stderr().is_terminal(), RECORDS_BAR);
    let produced = produce::produce(&source, &to, stream, &how, &progress).await;
    progress.finish_and_clear();
    let produced = produced?;
    match args.json {
        true => emit(&format!("{}\n", serde_json::to_string(&produced).unwrap_or_default())),
        false => emit(&format!("{produced}\n")),
    }
    Ok(())
}

async fn plan(args: PlanArgs) -> sluicebox::Result<()> {
    use sluicebox::forecast::{self, Deployment, Runner};
    let spec = job_spec(args.job.config.as_deref(), args.backends.sink.as_deref())?;
    let prices = match &args.prices {
        Some(path) => sluicebox::cost::Prices::load(path)?,
        None => sluicebox::cost::Prices::bundled(),
    };
    let b = &args.backends;
    let runner = if args.lambda {
        Runner::Lambda {
            memory_mb: args.memory_mb,
            architecture: args.architecture.clone(),
            concurrency: args.concurrency,
        }
    } else {
        let shared = b.queue.as_deref().is_some_and(|q| !q.starts_with("memory://"));
        let here = args.workers.unwrap_or(if shared { 0 } else { cores() as u32 });
        let elsewhere = args.worker_processes.unwrap_or(u32::from(here == 0));
        Runner::Workers { here, elsewhere, each: args.workers_each.unwrap_or(cores() as u32) }
    };
    let (bucket, queue, ledger) = match args.lambda {
        true => (
            b.bucket.as_deref().or(Some("s3://")),
            b.queue.as_deref().or(Some("sqs://")),
            b.ledger.as_deref().or(Some("dynamodb://")),
        ),
        false => (b.bucket.as_deref(), b.queue.as_deref(), b.ledger.as_deref()),
    };
    let mut deployment = Deployment::of(bucket, queue, ledger, &args.job.inputs[0], runner);
    deployment.visibility_s = b.visibility_secs;
    // Only the inputs and the reference are read: the bucket, queue and ledger are not opened.
    let reference_on_aws = spec.enrich.as_ref().is_some_and(|e| on_aws(&e.source));
    let cloud = cloud(args.job.inputs.iter().any(|i| on_aws(i)) || reference_on_aws).await;
    let mut engine = Engine::local(&args.job.data_dir)?;
    engine.inputs = bucket::input_store(&args.job.inputs[0], &cloud)?;
    engine.cloud = cloud;
    let inputs =
        bucket::resolve_inputs(engine.inputs.as_ref(), &args.job.inputs, spec.input.format, spec.input.compression)
            .await?;
    let shape = match args.estimate {
        true => forecast::from_sizes(&spec, &inputs),
        false => forecast::dry_run(&engine, &spec, inputs).await?,
    };
    let forecast = forecast::forecast(shape, &spec, deployment, &prices);
    match args.json {
        true => emit(&format!("{}\n", serde_json::to_string(&forecast).unwrap_or_default())),
        false => emit(&forecast.to_string()),
    }
    Ok(())
}

fn init(args: InitArgs) -> sluicebox::Result<()> {
    use sluicebox::init;
    if let Some(out) = &args.out {
        // Before the sample is read: a refusal should not wait for it.
        init::check_out(out, &args.file, args.force)?;
    }
    let (input, job) = (args.file.display().to_string(), args.out.as_ref().map(|o| o.display().to_string()));
    let names = init::Names { input: &input, job: job.as_deref().unwrap_or("job.toml") };
    let draft = init::draft(&args.file, names, args.sample_records)?;
    match &args.out {
        Some(out) => {
            init::write_job_file(out, &draft.text, args.force)?;
            emit(&draft.summary(names.job));
        }
        None => emit(&draft.text),
    }
    Ok(())
}

async fn stream(args: StreamArgs) -> sluicebox::Result<()> {
    use sluicebox::stream::{Options, Source, Stream};
    let from = Source::parse(&args.from)?;
    let spec = job_spec(args.config.as_deref(), None)?;
    let urls = BackendUrls {
        bucket: Some(args.to.clone()),
        queue: None,
        ledger: args.ledger.clone(),
        visibility: sluicebox::queue::DEFAULT_VISIBILITY,
    };
    let first = match &from {
        Source::Files(files) => files[0].clone(),
        _ => String::new(),
    };
    let needed = matches!(from, Source::Kinesis(_) | Source::Queue(_))
        || [Some(&args.to), args.ledger.as_ref(), Some(&first)].into_iter().flatten().any(|u| on_aws(u))
        || spec_on_aws(&spec);
    let engine = Engine::with_backends(&args.data_dir, &urls, &first, cloud(needed).await).await?;
    let lookup = engine.open_lookup(spec.enrich.as_ref()).await?;
    let stream = Stream {
        spec,
        lookup,
        ledger: engine.ledger.clone(),
        dest: engine.bucket.clone(),
        inputs: engine.inputs.clone(),
        cloud: engine.cloud.clone(),
    };
    let opts = Options {
        from,
        to: args.to.clone(),
        name: args.name.clone(),
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        latest: args.latest,
    };
    let stop = async {
        let _ = sluicebox::pool::stop_signal().await;
        tracing::warn!("stopping: writing what is buffered");
    };
    let report = stream.run(&opts, stop).await?;
    match args.json {
        true => emit(&(serde_json::to_string(&report).unwrap_or_default() + "\n")),
        false => emit(&(report.to_string() + "\n")),
    }
    Ok(())
}

fn ddl(args: DdlArgs) -> sluicebox::Result<()> {
    use sluicebox::ddl::{self, Layout};
    let spec = job_spec(Some(&args.config), None)?;
    let layout = match (args.job, args.stream || spec.definition.config.stream.is_some()) {
        (Some(id), _) => Layout::Job(id),
        (None, true) => Layout::Stream,
        (None, false) => {
            let what = "has no [stream] section: give --stream (files of `sluicebox stream`) or --job JOB_ID";
            return Err(Error::config(args.config.display().to_string(), what));
        }
    };
    let table = match args.table {
        Some(t) => t,
        None => ddl::table_name(&args.config)?,
    };
    let opts = ddl::Options { location: args.location, table, database: args.database, layout, fields: args.fields };
    emit(&ddl::create_table(&spec, &opts)?);
    Ok(())
}

async fn status(args: StatusArgs) -> sluicebox::Result<()> {
    use sluicebox::job::status;
    let urls = BackendUrls {
        bucket: args.bucket.clone(),
        queue: None,
        ledger: args.ledger.clone(),
        visibility: sluicebox::queue::DEFAULT_VISIBILITY,
    };
    let on_aws = [&args.bucket, &args.ledger].into_iter().flatten().any(|u| on_aws(u));
    if !on_aws && !args.data_dir.exists() {
        return Err(Error::config(
            "--data-dir",
            format!("{} does not exist: no jobs ran there", args.data_dir.display()),
        ));
    }
    let engine = Engine::with_backends(&args.data_dir, &urls, "", cloud(on_aws).await).await?;
    let text = match &args.job_id {
        Some(id) => {
            let s = status::status(&engine, id).await?;
            if args.json {
                serde_json::to_string(&s).unwrap_or_default() + "\n"
            } else {
                s.to_string()
            }
        }
        None => {
            let jobs = status::recent(&engine, args.limit).await?;
            if args.json {
                serde_json::to_string(&jobs).unwrap_or_default() + "\n"
            } else {
                status::table(&jobs)
            }
        }
    };
    emit(&text);
    Ok(())
}

async fn check(args: CheckArgs) -> sluicebox::Result<()> {
    use sluicebox::check;
    let spec = job_spec(Some(&args.config), args.sink.as_deref())?;
    let on = spec_on_aws(&spec) || args.sample.as_deref().is_some_and(on_aws);
    let mut engine = Engine::local(&args.data_dir)?;
    engine.cloud = cloud(on).await;
    let found = check::check(&engine, &spec).await?;
    let mut out = format!("{}: ok\n", args.config.display());
    for line in found {
        out += &format!("  {line}\n");
    }
    if let Some(file) = &args.sample {
        engine.inputs = bucket::input_store(file, &engine.cloud)?;
        let inputs = bucket::resolve_inputs(
            engine.inputs.as_ref(),
            std::slice::from_ref(file),
            spec.input.format,
            spec.input.compression,
        )
        .await?;
        let first = inputs.first().ok_or_else(|| Error::config("--sample", format!("{file}: no file there")))?;
        let rows = check::sample(&engine, &spec, first, args.records).await?;
        out += &format!("\nthe first {} records of {}:\n{}", rows.len(), first.location, check::table(&rows, 90));
    }
    emit(&out);
    Ok(())
}

async fn test(args: TestArgs) -> sluicebox::Result<()> {
    let spec = job_spec(Some(&args.config), None)?;
    let mut engine = Engine::local(&args.data_dir)?;
    engine.cloud = cloud(spec.enrich.as_ref().is_some_and(|e| on_aws(&e.source))).await;
    let results = sluicebox::check::run_tests(&engine, &spec).await?;
    if results.is_empty() {
        return Err(Error::config(args.config.display().to_string(), "has no [[tests]] to run"));
    }
    match args.json {
        true => emit(&format!("{}\n", serde_json::to_string(&results).unwrap_or_default())),
        false => emit(&sluicebox::check::report(&results)),
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        let what = args.config.display().to_string();
        return Err(Error::input(what, format!("{failed} of {} tests failed", results.len())));
    }
    Ok(())
}

/// The job definition: the job file (without one: CSV with a header, every field as text),
/// with `--sink` over its `[sink]`, resolved and checked.
fn job_spec(config: Option<&Path>, sink: Option<&str>) -> sluicebox::Result<JobSpec> {
    let (config, base) = match config {
        Some(path) => (JobConfig::load(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => (JobConfig::default(), PathBuf::from(".")),
    };
    let mut definition = config.resolve(&base)?;
    if let Some(url) = sink {
        definition = definition.with_sink(SinkTarget::parse(url, "--sink")?);
    }
    definition.check()
}

/// Check that the shared backends a serving command needs were given.
fn shared_backends(b: &Backends, command: &str) -> sluicebox::Result<()> {
    if b.queue.is_none() || b.ledger.is_none() || b.bucket.is_none() {
        return Err(Error::config(
            command,
            format!("{command} needs the shared --bucket, --queue and --ledger its jobs were submitted with"),
        ));
    }
    Ok(())
}

async fn worker(args: WorkerArgs) -> sluicebox::Result<()> {
    shared_backends(&args.backends, "worker")?;
    if args.backends.sink.is_some() {
        return Err(Error::config("--sink", "a worker writes to each job's own sink; give --sink to `run`"));
    }
    let urls = args.backends.urls();
    let mut engine = Engine::with_backends(&args.data_dir, &urls, "", cloud(args.backends.on_aws()).await).await?;
    engine.notify = args.backends.notify()?;
    let allow = job::worker_allow(args.allow);
    let opts = RunOptions { max_attempts: args.max_attempts.max(1), allow, ..serve_options(&urls) };
    let mut pool = Pool::serve(&engine, &opts, args.workers.unwrap_or_else(cores).max(1));
    pool.stop_on_signals(Duration::from_secs(args.grace_secs));
    if let Some(idle) = args.idle_exit_secs {
        pool.stop_when_idle(Duration::from_secs(idle));
    }
    pool.join().await
}

/// Options for workers serving any job.
fn serve_options(urls: &BackendUrls) -> RunOptions {
    RunOptions {
        visibility: urls.visibility,
        worker_name: format!("{}-{}", hostname(), std::process::id()),
        ..RunOptions::default()
    }
}

async fn watch(args: WatchArgs) -> sluicebox::Result<()> {
    shared_backends(&args.backends, "watch")?;
    let spec = job_spec(args.config.as_deref(), args.backends.sink.as_deref())?;
    job::run::needs_shared_sink(&spec)?;
    let urls = args.backends.urls();
    let cloud = cloud(true).await;
    let mut engine = Engine::with_backends(&args.data_dir, &urls, &args.prefix, cloud.clone()).await?;
    engine.notify = args.backends.notify()?;
    let events = sluicebox::queue::open(&args.events, urls.visibility, &cloud).await?;
    let how = watch::Serve {
        prefix: args.prefix,
        workers: args.workers,
        grace: Duration::from_secs(args.grace_secs),
        idle_exit: args.idle_exit_secs.map(Duration::from_secs),
    };
    watch::serve(&engine, &spec, events.as_ref(), &how, &serve_options(&urls), &mut |o| {
        emit(&match o {
            watch::Outcome::Started { input, job_id } => format!("started job {job_id} for {input}\n"),
            watch::Outcome::Repeated { input, job_id } => {
                format!("job {job_id} for {input} exists; not started again\n")
            }
            watch::Outcome::Ignored { reason } => format!("ignored: {reason}\n"),
        })
    })
    .await
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

/// Print to stdout; a closed pipe (`sluicebox run … | head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        emit(&format!("{}\n", serde_json::to_string(s).unwrap_or_default()));
        return;
    }
    let r = &s.records;
    let mut out = String::new();
    if s.already_complete {
        out += &format!("job {} was already complete (use --force to run it again)\n", s.job_id);
    }
    out += &format!(
        "job {} {}: {} records: {} written, {} rejected, {} filtered ({} chunks, {:.1} s, {:.0} records/s)\n",
        s.job_id,
        s.status,
        r.total,
        r.written,
        r.rejected,
        r.filtered,
        s.chunks.total,
        s.timings.duration_ms as f64 / 1000.0,
        s.records_per_s
    );
    for i in s.inputs.iter().filter(|i| i.decoding != "range" && !i.decoding.is_empty()) {
        let how = match i.decoding.as_str() {
            "gzip-index" => "resumed at gzip blocks",
            "zstd-frames" => "resumed at zstd frames",
            "plain-copy" => "decompressed once into a copy (no resume point near enough), chunks read from it",
            _ => "each chunk decoded from the start",
        };
        let windows = match i.windows_bytes {
            0 => String::new(),
            n => format!(" ({n} bytes of resume windows)"),
        };
        out += &format!("{}: {how}, {} bytes decoded{windows}\n", i.location, i.decoded_bytes);
    }
    if !s.rejects_by_rule.is_empty() {
        let rules: Vec<String> = s.rejects_by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!("rejects by rule: {}\n", rules.join(", "));
    }
    out += &format!("output:  {}\nrejects: {}\nsummary: {}\n", s.outputs.output, s.outputs.rejects, s.outputs.summary);
    if let Some(table) = &s.sink {
        out += &format!("sink:    table {table}\n");
    }
    if s.sink_keeps.as_deref() == Some("last written") {
        out +=
            "warning: unordered sink writes ([sink] ordered = false): of a key written twice, the last write stays\n";
    }
    emit(&out);
}

/// Whether `python` can import `duckdb`.
#[cfg(feature = "bench")]
fn has_duckdb(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import duckdb"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(feature = "bench")]
async fn bench_cmd(args: BenchArgs) -> sluicebox::Result<()> {
    if args.stream {
        std::fs::create_dir_all(&args.data_dir)
            .map_err(|e| Error::config("--data-dir", format!("cannot create {}: {e}", args.data_dir.display())))?;
        let events = args.data_dir.join(format!("events-{}.jsonl", args.records));
        if !events.exists() {
            bench::stream::generate(&events, args.records)?;
        }
        let exe = std::env::current_exe().map_err(|e| Error::config("sluicebox", e.to_string()))?;
        for format in ["jsonl", "parquet"] {
            let m = bench::stream::run(&exe, &args.data_dir, &events, format)?;
            match args.json {
                true => emit(&format!("{}\n", serde_json::to_string(&m).unwrap_or_default())),
                false => emit(&format!("{m}\n")),
            }
        }
        return Ok(());
    }
    let workers = args.workers.unwrap_or_else(cores);
    let cloud = cloud(args.aws).await;
    let keys = match args.keys {
        KeyOrderArg::Random => bench::KeyOrder::Random,
        KeyOrderArg::Sequential => bench::KeyOrder::Sequential,
    };
    let what = bench::Bench {
        records: args.records,
        workers,
        sink: !args.no_sink,
        aws: args.aws,
        lambda: args.lambda,
        keys,
        update_share: args.update_share.clamp(0.0, 1.0),
        duckdb_python: (!args.no_duckdb && has_duckdb(&args.python)).then_some(args.python),
        gzip: args.gzip,
    };
    let measured = bench::run(&args.data_dir, &what, &cloud, &args.out).await?;
    for m in &measured {
        if args.json {
            emit(&format!("{}\n", serde_json::to_string(m).unwrap_or_default()));
        } else {
            emit(&format!("{m}\n"));
        }
    }
    let load = measured.iter().find(|m| m.run == "load" && !m.backend.starts_with("duckdb"));
    let peer = measured.iter().find(|m| m.backend.starts_with("duckdb"));
    if let (Some(ours), Some(peer), false) = (load, peer, args.json) {
        emit(&format!("sluicebox takes {:.2}x DuckDB's time on this load\n", ours.seconds / peer.seconds.max(1e-9)));
    }
    let gzip = measured.iter().find(|m| m.run == "load-gzip");
    if let (Some(plain), Some(gz), false) = (load, gzip, args.json) {
        emit(&format!(
            "the gzip input ({} bytes) takes {:.2}x the plain input's time; {} bytes decoded for {} plain bytes ({:.4}x)\n",
            gz.input_bytes,
            gz.seconds / plain.seconds.max(1e-9),
            gz.decoded_bytes,
            plain.input_bytes,
            gz.decoded_bytes as f64 / plain.input_bytes.max(1) as f64
        ));
    }
    Ok(())
}
