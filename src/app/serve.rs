//! The commands that serve or watch: `worker`, `watch`, `stream`, and `status`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{cores, engine, hostname, Backends};
use crate::backends::ledger::JobRecord;
use crate::batch::job::{self, RunOptions};
use crate::batch::pool::Pool;
use crate::engine::BackendUrls;
use crate::error::{Error, Result};

/// Options for workers serving any job.
fn serve_options(urls: &BackendUrls) -> RunOptions {
    RunOptions {
        visibility: urls.visibility,
        worker_name: format!("{}-{}", hostname(), std::process::id()),
        ..RunOptions::default()
    }
}

/// `sluicebox worker`.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Where references are kept.
    pub data_dir: PathBuf,
    /// The shared backends (no sink: each job names its own).
    pub backends: Backends,
    /// Tasks worked at once (default: the cores).
    pub workers: Option<usize>,
    /// Deliveries of a task before its job is failed.
    pub max_attempts: u32,
    /// After the first stop signal, how long to finish the tasks in hand.
    pub grace: Duration,
    /// Stop after this long without a task.
    pub idle_exit: Option<Duration>,
    /// Take only jobs whose resources are under these URLs (default: any bucket or table).
    pub allow: Vec<String>,
}

/// Take tasks of any job from the shared queue until stopped.
pub async fn worker(w: Worker) -> Result<()> {
    w.backends.require_shared("worker")?;
    if w.backends.sink.is_some() {
        return Err(Error::config("--sink", "a worker writes to each job's own sink; give --sink to `run`"));
    }
    let urls = w.backends.urls();
    let mut engine = engine(&w.data_dir, &urls, "").await?;
    engine.notify = w.backends.notify()?;
    let allow = job::worker_allow(w.allow);
    let opts = RunOptions { max_attempts: w.max_attempts.max(1), allow, ..serve_options(&urls) };
    let mut pool = Pool::serve(&engine, &opts, w.workers.unwrap_or_else(cores).max(1));
    pool.stop_on_signals(w.grace);
    if let Some(idle) = w.idle_exit {
        pool.stop_when_idle(idle);
    }
    pool.join().await
}

/// `sluicebox watch`.
#[derive(Debug, Clone)]
pub struct Watch {
    /// `s3://BUCKET/PREFIX`: objects created under it start jobs, from the notifications in
    /// `events`; or a local directory (a path or `file://`): an inbox, whose files start jobs
    /// run here.
    pub source: String,
    /// The queue of the bucket's event notifications (for an `s3://` prefix only).
    pub events: Option<String>,
    /// The job file for every job started.
    pub config: Option<PathBuf>,
    /// Where references are kept; for an inbox, the embedded bucket, ledger and sink too.
    pub data_dir: PathBuf,
    /// The backends: shared ones for a prefix; for an inbox, the embedded ones unless named.
    pub backends: Backends,
    /// Workers here (a prefix: default 0, only start jobs; an inbox: default the cores).
    pub workers: Option<usize>,
    /// After the first stop signal, how long to finish the tasks (or the job) in hand.
    pub grace: Duration,
    /// Stop after this long without an event or a task.
    pub idle_exit: Option<Duration>,
    /// An inbox: how long a file nobody reported closed must stay unchanged to be taken.
    pub quiet: Duration,
}

/// What became of one event of `watch`: an object of a prefix, or a file of an inbox.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Watched {
    /// An object's event.
    Object(crate::batch::watch::Outcome),
    /// An inbox's file.
    File(crate::batch::inbox::Outcome),
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watched::Object(o) => o.fmt(f),
            Watched::File(o) => o.fmt(f),
        }
    }
}

/// Start a job for every object created under the prefix, or every file that lands in the
/// inbox, until stopped; `each` hears what became of every event or file.
pub async fn watch(w: Watch, each: &mut dyn FnMut(&Watched)) -> Result<()> {
    match w.source.split_once("://") {
        Some(("s3", _)) => watch_prefix(w, each).await,
        None | Some(("file", _)) => watch_inbox(w, each).await,
        Some(_) => Err(Error::config("watch", format!("{}: watch an s3:// prefix or a local directory", w.source))),
    }
}

/// `watch s3://BUCKET/PREFIX --events QUEUE`.
async fn watch_prefix(w: Watch, each: &mut dyn FnMut(&Watched)) -> Result<()> {
    let Some(events) = &w.events else {
        return Err(Error::config(
            "--events",
            "watching an s3:// prefix needs the queue its event notifications go to",
        ));
    };
    w.backends.require_shared("watch")?;
    let spec = crate::engine::spec::load(w.config.as_deref(), &w.backends.overrides())?;
    job::run::needs_shared_sink(&spec)?;
    let urls = w.backends.urls();
    let mut engine = engine(&w.data_dir, &urls, &w.source).await?;
    engine.notify = w.backends.notify()?;
    let events = crate::backends::queue::open(events, urls.visibility, &engine.cloud).await?;
    let how = crate::batch::watch::Serve {
        prefix: w.source,
        workers: w.workers.unwrap_or(0),
        grace: w.grace,
        idle_exit: w.idle_exit,
    };
    let each = &mut |o: &crate::batch::watch::Outcome| each(&Watched::Object(o.clone()));
    crate::batch::watch::serve(&engine, &spec, events.as_ref(), &how, &serve_options(&urls), each).await
}

/// `watch DIR`: the local inbox, its jobs run here on the embedded backends (or those named).
async fn watch_inbox(w: Watch, each: &mut dyn FnMut(&Watched)) -> Result<()> {
    if w.events.is_some() {
        return Err(Error::config("--events", "a local directory is watched through the file system, not a queue"));
    }
    if w.backends.shared_queue() {
        return Err(Error::config("--queue", "the jobs of a local inbox run here, on the in-process queue"));
    }
    let workers = w.workers.unwrap_or_else(cores);
    if workers == 0 {
        return Err(Error::config("--workers", "a local inbox runs its jobs here: at least 1"));
    }
    let spec = crate::engine::spec::load(w.config.as_deref(), &w.backends.overrides())?;
    let dir = crate::batch::inbox::open_dir(&w.source)?;
    let urls = w.backends.urls();
    let mut engine = engine(&w.data_dir, &urls, &dir.display().to_string()).await?;
    engine.notify = w.backends.notify()?;
    let opts = RunOptions { workers, ..serve_options(&urls) };
    let how = crate::batch::inbox::Inbox { dir: w.source, quiet: w.quiet, grace: w.grace, idle_exit: w.idle_exit };
    let each = &mut |o: &crate::batch::inbox::Outcome| each(&Watched::File(o.clone()));
    crate::batch::inbox::serve(&engine, &spec, &how, &opts, each).await
}

/// `sluicebox stream`.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Where records come from (`--from`).
    pub from: Vec<String>,
    /// Where files go: `s3://BUCKET/PREFIX` or a directory. Without it, kept records go only
    /// to the job's `[sink]` table and rejects under `streams/` of the data dir's bucket.
    pub to: Option<String>,
    /// The job file.
    pub config: Option<PathBuf>,
    /// Where the local ledger and fetched references live.
    pub data_dir: PathBuf,
    /// The ledger keeping checkpoints.
    pub ledger: Option<String>,
    /// The consumer's name.
    pub name: Option<String>,
    /// Stop when no record has come for this long.
    pub idle_exit: Option<Duration>,
    /// Kinesis shards without a checkpoint start at the newest record.
    pub latest: bool,
}

/// Deliver a stream into files until it ends or a stop signal comes (then what is buffered
/// is written).
pub async fn stream(r: StreamRequest) -> Result<crate::stream::Report> {
    use crate::stream::{Options, Source, Stream};
    let from = Source::parse(&r.from)?;
    let spec = crate::engine::spec::load(r.config.as_deref(), &crate::engine::spec::Overrides::default())?;
    let urls = BackendUrls { bucket: r.to.clone(), ledger: r.ledger, ..BackendUrls::embedded() };
    let first = match &from {
        Source::Files(files) => files[0].clone(),
        _ => String::new(),
    };
    let engine = engine(&r.data_dir, &urls, &first).await?;
    let lookup = engine.open_lookup(spec.enrich.as_ref()).await?;
    let (stream, to) = match r.to {
        Some(to) => (Stream::new(&engine, spec, lookup, engine.bucket.clone())?, to),
        None => {
            let table = spec.sink.target.table().unwrap_or_default().to_string();
            let rejects: Arc<dyn object_store::ObjectStore> =
                Arc::new(object_store::prefix::PrefixStore::new(engine.bucket.clone(), "streams"));
            (Stream::new(&engine, spec, lookup, rejects)?.sink_only()?, format!("table {table}"))
        }
    };
    let opts = Options { from, to, name: r.name, idle_exit: r.idle_exit, latest: r.latest };
    let stop = async {
        let _ = crate::batch::pool::stop_signal().await;
        tracing::warn!("stopping: writing what is buffered");
    };
    stream.run(&opts, stop).await
}

/// `sluicebox status`.
#[derive(Debug, Clone)]
pub struct Status {
    /// The job (default: the recent jobs).
    pub job_id: Option<String>,
    /// Where the embedded bucket and ledger live.
    pub data_dir: PathBuf,
    /// The bucket the job's objects are in.
    pub bucket: Option<String>,
    /// The ledger.
    pub ledger: Option<String>,
    /// Jobs listed without a job id.
    pub limit: usize,
}

/// What `status` shows: one job, or the recent ones.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Shown {
    /// One job's state.
    Job(Box<job::status::Status>),
    /// The recent jobs, newest first.
    Recent(Vec<JobRecord>),
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Job(s) => s.fmt(f),
            Shown::Recent(jobs) => f.write_str(&job::status::table(jobs)),
        }
    }
}

/// Where a job stands, or the recent jobs.
pub async fn status(s: Status) -> Result<Shown> {
    // The embedded ledger lives in the data directory: without it, no job ran there.
    if s.ledger.is_none() && !s.data_dir.exists() {
        let what = format!("{} does not exist: no jobs ran there", s.data_dir.display());
        return Err(Error::config("--data-dir", what));
    }
    let urls = BackendUrls { bucket: s.bucket, ledger: s.ledger, ..BackendUrls::embedded() };
    let engine = engine(&s.data_dir, &urls, "").await?;
    match &s.job_id {
        Some(id) => Ok(Shown::Job(Box::new(job::status::status(&engine, id).await?))),
        None => Ok(Shown::Recent(job::status::recent(&engine, s.limit).await?)),
    }
}
