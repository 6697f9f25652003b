//! The arguments of the commands that serve (`worker`, `watch`, `stream`) or look (`status`),
//! the backends they share, and what each becomes as a library request.

use std::path::PathBuf;
use std::time::Duration;

use sluicebox::app;

#[derive(clap::Args)]
pub struct StreamArgs {
    /// Where records come from: `-` (standard input), files, directories or s3:// objects and
    /// prefixes (replayed), `kinesis://STREAM`, or `sqs://QUEUE` (a JSON object per message).
    #[arg(long, required = true, num_args = 1..)]
    pub from: Vec<String>,
    /// Where files go: `s3://BUCKET/PREFIX` or a directory. Without it, kept records go only
    /// to the job's `[sink]` table (rejects under `streams/` of the data dir's bucket).
    #[arg(long)]
    pub to: Option<String>,
    /// Job definition (TOML): `[input]`, columns, validation, transforms, enrichment,
    /// `[output]` and `[stream]`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the local ledger (checkpoints) and fetched references live.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// The ledger keeping checkpoints: `dynamodb://TABLE` or `sqlite://PATH`.
    #[arg(long)]
    pub ledger: Option<String>,
    /// The consumer's name, under which its checkpoints are kept (default: from and to).
    #[arg(long)]
    pub name: Option<String>,
    /// Stop, writing what is buffered, when no record has come for this many seconds.
    #[arg(long)]
    pub idle_exit: Option<f64>,
    /// Kinesis shards without a checkpoint start at the newest record (default: the oldest).
    #[arg(long)]
    pub latest: bool,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The job (default: list the recent jobs).
    pub job_id: Option<String>,
    /// Where the embedded bucket and ledger live.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// The bucket the job's objects are in: `s3://BUCKET[/PREFIX]` or a directory.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The ledger: `dynamodb://TABLE` or `sqlite://PATH`.
    #[arg(long)]
    pub ledger: Option<String>,
    /// Jobs listed without JOB_ID.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON (one line).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// `s3://BUCKET/PREFIX`: objects created under it start jobs (with --events); or a local
    /// directory (a path or `file://`): an inbox, where every file that lands starts a job run
    /// here, once it is closed after writing or renamed in.
    #[arg(value_name = "PREFIX|DIR")]
    pub source: String,
    /// The queue S3 sends the bucket's event notifications to (`sqs://NAME` or a queue URL);
    /// for an s3:// prefix only.
    #[arg(long)]
    pub events: Option<String>,
    /// Job definition (TOML) for every job started.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where lookups and fetched references are kept; for an inbox, also the embedded bucket,
    /// ledger and sink tables, as for `run`.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// Work tasks here with this many workers (default: for a prefix 0, only start jobs; for
    /// an inbox the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// After the first stop signal, seconds to finish the tasks (an inbox: the job) in hand
    /// before giving them back (an inbox's job resumes at the next start).
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// Exit after this many seconds without an event or a task (default: run until stopped).
    #[arg(long)]
    pub idle_exit_secs: Option<u64>,
    /// An inbox: seconds a file must stay unchanged to be taken when no close was reported
    /// (files there at start-up or after lost events; every file where the system reports no
    /// close, as on macOS).
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub quiet_secs: Duration,
    /// Print what became of each file or object as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backends: Backends,
}

/// A number of seconds, fractions allowed.
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Where lookups imported into SQLite and fetched references are kept.
    #[arg(long, default_value = "sluicebox-data")]
    pub data_dir: PathBuf,
    /// Tasks worked at once (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Deliveries of a task before its job is failed (at once when its input changed or
    /// vanished); keep it below the queue's dead-letter receive count.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// After the first stop signal, seconds to finish the tasks in hand before giving them back.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// Exit after this many seconds without a task (default: run until stopped).
    #[arg(long)]
    pub idle_exit_secs: Option<u64>,
    /// Take only jobs whose inputs, reference and sink are under these: `s3://BUCKET[/PREFIX]`,
    /// `dynamodb://TABLE` or `file:///DIR` (a directory every worker host shares), repeatable
    /// (default: any bucket or table the credentials reach, never this machine's files). Others fail.
    #[arg(long = "allow", value_name = "URL")]
    pub allow: Vec<String>,
    #[command(flatten)]
    pub backends: Backends,
}

/// Backends other than the embedded ones, by URL.
#[derive(clap::Args)]
pub struct Backends {
    /// Where outputs go: `s3://BUCKET[/PREFIX]` (feature `aws`) or a directory (default:
    /// DATA_DIR/bucket).
    #[arg(long)]
    pub bucket: Option<String>,
    /// Task queue: `sqs://NAME` (feature `aws`) or `memory://` (default).
    #[arg(long)]
    pub queue: Option<String>,
    /// Ledger: `dynamodb://TABLE` (feature `aws`) or `sqlite://PATH` (default: DATA_DIR/sluicebox-ledger.db).
    #[arg(long)]
    pub ledger: Option<String>,
    /// Sink: `dynamodb://TABLE` (feature `aws`), `sqlite` or `none` (overrides the job
    /// file's `[sink]` type and table).
    #[arg(long)]
    pub sink: Option<String>,
    /// Seconds a task stays invisible to other workers before it is given to another; a
    /// worker extends it every half of it while it works the task, so a worker that dies
    /// holds its task back for at most this long (1 to 43200, SQS's limit).
    #[arg(long, default_value_t = DEFAULT_VISIBILITY_SECS, value_parser = visibility_secs())]
    pub visibility_secs: u64,
    /// Also tell this target how every job ends, besides the job file's `[[notify]]`:
    /// `https://…` (webhook), `sns://TOPIC_ARN`, `ses://ADDRESS` or `smtp://ADDRESS`; repeatable.
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// The sender of e-mail notifications given with --notify.
    #[arg(long, value_name = "ADDRESS")]
    pub notify_from: Option<String>,
}

pub const DEFAULT_VISIBILITY_SECS: u64 = sluicebox::backends::queue::DEFAULT_VISIBILITY.as_secs();

pub fn visibility_secs() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=sluicebox::backends::queue::MAX_VISIBILITY.as_secs())
}

impl Backends {
    /// The library's backends.
    pub fn request(self) -> app::Backends {
        app::Backends {
            bucket: self.bucket,
            queue: self.queue,
            ledger: self.ledger,
            sink: self.sink,
            visibility: Duration::from_secs(self.visibility_secs),
            notify: self.notify,
            notify_from: self.notify_from,
        }
    }
}

impl StreamArgs {
    /// The request.
    pub fn request(self) -> app::StreamRequest {
        app::StreamRequest {
            from: self.from,
            to: self.to,
            config: self.config,
            data_dir: self.data_dir,
            ledger: self.ledger,
            name: self.name,
            idle_exit: self.idle_exit.map(Duration::from_secs_f64),
            latest: self.latest,
        }
    }
}

impl StatusArgs {
    /// The request.
    pub fn request(self) -> app::Status {
        let (job_id, data_dir, bucket, ledger, limit) =
            (self.job_id, self.data_dir, self.bucket, self.ledger, self.limit);
        app::Status { job_id, data_dir, bucket, ledger, limit }
    }
}

impl WatchArgs {
    /// The request.
    pub fn request(self) -> app::Watch {
        app::Watch {
            source: self.source,
            events: self.events,
            config: self.config,
            data_dir: self.data_dir,
            backends: self.backends.request(),
            workers: self.workers,
            grace: Duration::from_secs(self.grace_secs),
            idle_exit: self.idle_exit_secs.map(Duration::from_secs),
            quiet: self.quiet_secs,
        }
    }
}

impl WorkerArgs {
    /// The request.
    pub fn request(self) -> app::Worker {
        app::Worker {
            data_dir: self.data_dir,
            backends: self.backends.request(),
            workers: self.workers,
            max_attempts: self.max_attempts,
            grace: Duration::from_secs(self.grace_secs),
            idle_exit: self.idle_exit_secs.map(Duration::from_secs),
            allow: self.allow,
        }
    }
}
