//! The `sluicebox` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Records are many small allocations; mimalloc handles that pattern much faster than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sluicebox::config::JobConfig;
use sluicebox::gather::Summary;
use sluicebox::job::{BackendUrls, Engine, RunOptions};
use sluicebox::{bench, bucket, job, Error};

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
    /// Take tasks of any job from a shared queue until stopped (SIGTERM or Ctrl-C: finish the
    /// tasks in hand; a second signal, or --grace-secs later: give them back to the queue).
    Worker(WorkerArgs),
    /// Start a job for every object created under PREFIX (s3://BUCKET/PREFIX), from the S3
    /// event notifications in --events; with --workers, also work the jobs here.
    Watch(WatchArgs),
    /// Generate synthetic orders, run the orders pipeline on them and report throughput.
    Bench(BenchArgs),
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
        /// The queue's visibility timeout, seconds.
        #[arg(long, default_value_t = 300)]
        visibility_secs: u64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Input files, directories (every file under it) or file:// URLs; all form one job.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Job definition (TOML). Without one: CSV with a header, every field as text.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the bucket (outputs) and the SQLite database (ledger, sink) live.
    #[arg(long, default_value = "sluicebox-data")]
    data_dir: PathBuf,
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
    /// Deliveries of a task before its job is failed (when its input changed or vanished);
    /// keep it below the queue's dead-letter receive count.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// After the first stop signal, seconds to finish the tasks in hand before giving them back.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Exit after this many seconds without a task (default: run until stopped).
    #[arg(long)]
    idle_exit_secs: Option<u64>,
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
    /// Ledger: `dynamodb://TABLE` (feature `aws`) or `sqlite://PATH` (default: DATA_DIR/sluicebox.db).
    #[arg(long)]
    ledger: Option<String>,
    /// Sink: `dynamodb://TABLE` (feature `aws`), `sqlite` or `none` (overrides the job
    /// file's `[sink]` type and table).
    #[arg(long)]
    sink: Option<String>,
    /// Seconds a task stays invisible to other workers while one works on it.
    #[arg(long, default_value_t = 300)]
    visibility_secs: u64,
}

impl Backends {
    fn urls(&self) -> BackendUrls {
        BackendUrls {
            bucket: self.bucket.clone(),
            queue: self.queue.clone(),
            ledger: self.ledger.clone(),
            visibility: std::time::Duration::from_secs(self.visibility_secs.max(1)),
        }
    }
}

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
    /// Run on S3, SQS and DynamoDB (ledger and sink) from the standard AWS configuration
    /// (feature `aws`; new resources for each run) and report API calls per record.
    #[arg(long)]
    aws: bool,
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
            Command::Worker(args) => worker(args).await,
            Command::Watch(args) => watch(args).await,
            Command::Bench(args) => bench_cmd(args).await,
            #[cfg(feature = "aws")]
            Command::Aws {
                command: AwsCommand::Setup { bucket, queue, ledger, sink, max_receives, visibility_secs },
            } => {
                let what = sluicebox::aws::Setup {
                    bucket,
                    queue,
                    ledger,
                    sink,
                    max_receives,
                    visibility: std::time::Duration::from_secs(visibility_secs),
                };
                let conf = sluicebox::aws::sdk_config().await;
                sluicebox::aws::setup(&conf, &what).await.map(|lines| emit(&(lines.join("\n") + "\n")))
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

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style =
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} records  {msg}  {rate}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} records/s", state.per_sec());
            });
    bar.set_style(style);
    bar
}

async fn run(args: RunArgs) -> sluicebox::Result<()> {
    let spec = job_spec(args.config.as_deref(), args.backends.sink.as_deref())?;
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
    let urls = args.backends.urls();
    let engine = Engine::with_backends(&args.data_dir, &urls, &args.inputs[0]).await?;
    let inputs =
        bucket::resolve_inputs(engine.inputs.as_ref(), &args.inputs, spec.format, spec.config.input.compression)
            .await?;
    let opts = RunOptions {
        workers,
        job_id: args.job_id,
        force: args.force,
        visibility: urls.visibility,
        progress: progress_bar(!args.json && std::io::stderr().is_terminal()),
        ..RunOptions::default()
    };
    if workers == 0 {
        shared_sink(&spec)?;
        let submitted = job::submit(&engine, &spec, inputs, &opts).await?;
        if let Some(summary) = &submitted.summary {
            print_summary(summary, args.json);
            return Ok(());
        }
        if !args.wait {
            if args.json {
                emit(&format!("{}\n", serde_json::to_string(&submitted).unwrap_or_default()));
            } else {
                emit(&format!(
                    "job {} submitted: {} records in {} chunks, {} tasks sent (follow it with --wait)\n",
                    submitted.job_id, submitted.records, submitted.chunks, submitted.tasks_sent
                ));
            }
            return Ok(());
        }
        let bar = chunk_bar(!args.json && std::io::stderr().is_terminal());
        let summary = job::wait(&engine, &submitted.job_id, &bar).await;
        bar.finish_and_clear();
        print_summary(&summary?, args.json);
        return Ok(());
    }
    let summary = job::run(&engine, &spec, inputs, &opts).await;
    opts.progress.finish_and_clear();
    let summary = summary?;
    print_summary(&summary, args.json);
    Ok(())
}

/// The job definition: the job file (without one: CSV with a header, every field as text),
/// with `--sink` over its `[sink]`, checked and with its paths resolved.
fn job_spec(config: Option<&Path>, sink: Option<&str>) -> sluicebox::Result<sluicebox::config::JobSpec> {
    let (mut config, base) = match config {
        Some(path) => (JobConfig::load(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => (JobConfig::default(), PathBuf::from(".")),
    };
    if let Some(url) = sink {
        apply_sink(&mut config, url)?;
    }
    config.validate(&base)
}

/// Jobs worked by other processes need a sink they all share: a SQLite table would be split
/// across every worker's own data directory.
fn shared_sink(spec: &sluicebox::config::JobSpec) -> sluicebox::Result<()> {
    if spec.config.sink.kind == sluicebox::config::SinkKind::Sqlite {
        return Err(Error::config(
            "--sink",
            "jobs on a shared queue need a shared sink: give --sink dynamodb://TABLE (or --sink none); \
             the SQLite sink lives in one machine's data directory",
        ));
    }
    Ok(())
}

/// `--sink URL` over the job file's `[sink]`.
fn apply_sink(config: &mut JobConfig, url: &str) -> sluicebox::Result<()> {
    use sluicebox::config::SinkKind;
    match url.split_once("://") {
        Some(("dynamodb", table)) if !table.is_empty() => {
            config.sink.kind = SinkKind::Dynamodb;
            config.sink.table = Some(table.to_string());
        }
        _ if url == "sqlite" || url == "sqlite://" => config.sink.kind = SinkKind::Sqlite,
        _ if url == "none" => config.sink.kind = SinkKind::None,
        _ => return Err(Error::config("--sink", format!("{url:?} is not a sink (dynamodb://TABLE, sqlite or none)"))),
    }
    Ok(())
}

fn chunk_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks  {msg}  {elapsed}") {
        bar.set_style(style);
    }
    bar
}

async fn worker(args: WorkerArgs) -> sluicebox::Result<()> {
    if args.backends.queue.is_none() || args.backends.ledger.is_none() || args.backends.bucket.is_none() {
        return Err(Error::config(
            "worker",
            "a worker needs the shared --bucket, --queue and --ledger its jobs were submitted with",
        ));
    }
    if args.backends.sink.is_some() {
        return Err(Error::config("--sink", "a worker writes to each job's own sink; give --sink to `run`"));
    }
    let urls = args.backends.urls();
    let engine = Engine::with_backends(&args.data_dir, &urls, "").await?;
    let opts = RunOptions { max_attempts: args.max_attempts.max(1), ..serve_options(&urls) };
    let pool = Pool::start(&engine, &opts, args.workers.unwrap_or_else(cores).max(1));
    let signals = pool.stop_on_signals(std::time::Duration::from_secs(args.grace_secs));
    if let Some(idle) = args.idle_exit_secs {
        let (stop, jobs) = (pool.stop.clone(), pool.jobs.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if jobs.idle_for() >= std::time::Duration::from_secs(idle) {
                    stop.cancel();
                    return;
                }
            }
        });
    }
    let result = pool.join().await;
    signals.abort();
    result
}

/// Options for workers serving any job.
fn serve_options(urls: &sluicebox::job::BackendUrls) -> RunOptions {
    RunOptions {
        visibility: urls.visibility,
        worker_name: format!("{}-{}", hostname(), std::process::id()),
        ..RunOptions::default()
    }
}

/// Work loops taking tasks of any job, and the tokens that stop them.
struct Pool {
    jobs: std::sync::Arc<sluicebox::worker::Jobs>,
    stop: tokio_util::sync::CancellationToken,
    abort: tokio_util::sync::CancellationToken,
    handles: Vec<tokio::task::JoinHandle<sluicebox::Result<()>>>,
}

impl Pool {
    fn start(engine: &Engine, opts: &RunOptions, workers: usize) -> Pool {
        use tokio_util::sync::CancellationToken;
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let jobs = std::sync::Arc::new(sluicebox::worker::Jobs::serve(engine.clone(), stop.clone(), abort.clone()));
        let handles = (0..workers)
            .map(|w| {
                let (jobs, opts) = (jobs.clone(), opts.clone());
                let name = format!("{}-{w}", opts.worker_name);
                tokio::spawn(async move { sluicebox::worker::work_loop(jobs, name, &opts).await })
            })
            .collect();
        Pool { jobs, stop, abort, handles }
    }

    /// On SIGTERM or Ctrl-C, stop taking tasks and finish the ones in hand; on a second
    /// signal, or `grace` later, give them back to the queue.
    fn stop_on_signals(&self, grace: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let (stop, abort) = (self.stop.clone(), self.abort.clone());
        tokio::spawn(async move {
            if stop_signal().await.is_err() {
                return;
            }
            tracing::warn!("stopping: finishing the tasks in hand (signal again to give them back now)");
            stop.cancel();
            tokio::select! {
                _ = stop_signal() => {}
                _ = tokio::time::sleep(grace) => {}
            }
            abort.cancel();
        })
    }

    /// Wait for every loop to end; the last error, if any.
    async fn join(self) -> sluicebox::Result<()> {
        let mut result = Ok(());
        for h in self.handles {
            if let Err(e) = h.await.map_err(|e| Error::backend("worker", "worker task panicked", e)).and_then(|r| r) {
                result = Err(e);
            }
        }
        result
    }
}

async fn watch(args: WatchArgs) -> sluicebox::Result<()> {
    use sluicebox::watch::Outcome;
    if args.backends.queue.is_none() || args.backends.ledger.is_none() || args.backends.bucket.is_none() {
        return Err(Error::config("watch", "watch needs the shared --bucket, --queue and --ledger for its jobs"));
    }
    let spec = job_spec(args.config.as_deref(), args.backends.sink.as_deref())?;
    shared_sink(&spec)?;
    let urls = args.backends.urls();
    let engine = Engine::with_backends(&args.data_dir, &urls, &args.prefix).await?;
    let events = sluicebox::queue::open(&args.events, urls.visibility).await?;
    let opts = serve_options(&urls);
    let pool = Pool::start(&engine, &opts, args.workers);
    let signals = pool.stop_on_signals(std::time::Duration::from_secs(args.grace_secs));
    let stop = pool.stop.clone();
    let mut last_event = std::time::Instant::now();
    let idle = args.idle_exit_secs.map(std::time::Duration::from_secs);
    while !stop.is_cancelled() {
        let wait = std::time::Duration::from_secs(2);
        let got = tokio::select! {
            _ = stop.cancelled() => break,
            got = sluicebox::watch::watch_once(&engine, &spec, events.as_ref(), &args.prefix, &opts, wait) => got,
        };
        match got {
            Ok(outcomes) => {
                if !outcomes.is_empty() {
                    last_event = std::time::Instant::now();
                }
                for o in outcomes {
                    emit(&match o {
                        Outcome::Started { input, job_id } => format!("started job {job_id} for {input}\n"),
                        Outcome::Repeated { input, job_id } => {
                            format!("job {job_id} for {input} exists; not started again\n")
                        }
                        Outcome::Ignored { reason } => format!("ignored: {reason}\n"),
                    });
                }
            }
            Err(e) => {
                tracing::warn!("cannot take events, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        if idle.is_some_and(|i| last_event.elapsed() >= i && pool.jobs.idle_for() >= i) {
            stop.cancel();
        }
    }
    let result = pool.join().await;
    signals.abort();
    result
}

async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
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
    if !s.rejects_by_rule.is_empty() {
        let rules: Vec<String> = s.rejects_by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!("rejects by rule: {}\n", rules.join(", "));
    }
    out += &format!("output:  {}\nrejects: {}\nsummary: {}\n", s.outputs.output, s.outputs.rejects, s.outputs.summary);
    if let Some(table) = &s.sink {
        out += &format!("sink:    table {table} in the data directory's sluicebox.db\n");
    }
    emit(&out);
}

async fn bench_cmd(args: BenchArgs) -> sluicebox::Result<()> {
    let workers = args.workers.unwrap_or_else(cores);
    let m = bench::run(&args.data_dir, args.records, workers, !args.no_sink, args.aws, &args.out).await?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string(&m).unwrap_or_default()));
    } else {
        emit(&format!("{m}\n"));
    }
    Ok(())
}
