//! What the `sluicebox` commands do beneath their arguments: the binary parses a command
//! line into these requests, calls one function, and prints what it returns (each result has
//! a `Display` for people and a `Serialize` for `--json`).
//!
//! Here is the one way a command builds its [`Engine`] ([`engine`]: embedded backends unless a
//! URL names another, the AWS configuration loaded only if a backend asks for it), loads its
//! job ([`crate::engine::spec::load`], shared with the Lambda functions) and decides how many workers
//! run here.

mod batch;
#[cfg(feature = "bench")]
mod bench;
mod serve;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use batch::{plan, redrive, run, test, Plan, Ran, Redrive, Run, Runner};
#[cfg(feature = "bench")]
pub use bench::{bench_job, bench_stream, has_duckdb};
pub use serve::{status, stream, watch, worker, Shown, Status, StreamRequest, Watch, Watched, Worker};
pub use tools::{check, ddl, init, Check, Ddl, Init};
#[cfg(feature = "aws")]
pub use tools::{produce, setup, ProduceRequest};

use crate::backends::cloud::Cloud;
use crate::engine::spec::Overrides;
use crate::engine::{BackendUrls, Engine};
use crate::error::{Error, Result};
use crate::model::config::Notify;

/// Backends other than the embedded ones, by URL (`None`: the embedded default).
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// Where outputs go: `s3://BUCKET[/PREFIX]` or a directory.
    pub bucket: Option<String>,
    /// The task queue: `sqs://NAME` or `memory://`.
    pub queue: Option<String>,
    /// The ledger: `dynamodb://TABLE` or `sqlite://PATH`.
    pub ledger: Option<String>,
    /// The sink, over the job file's `[sink]` (`--sink`).
    pub sink: Option<String>,
    /// The queue's visibility timeout.
    pub visibility: Duration,
    /// Told how every job ends (`--notify` URLs).
    pub notify: Vec<String>,
    /// The sender of e-mail notifications.
    pub notify_from: Option<String>,
}

impl Backends {
    /// The URLs an engine is built from.
    pub fn urls(&self) -> BackendUrls {
        BackendUrls {
            bucket: self.bucket.clone(),
            queue: self.queue.clone(),
            ledger: self.ledger.clone(),
            visibility: self.visibility,
        }
    }

    /// The engine-wide notification targets.
    pub fn notify(&self) -> Result<Vec<Notify>> {
        self.notify.iter().map(|u| Notify::url(u, self.notify_from.clone(), "--notify")).collect()
    }

    /// Whether the queue is one other processes share: then `run` only submits, by default.
    pub fn shared_queue(&self) -> bool {
        self.queue.as_deref().is_some_and(|q| !q.starts_with("memory://"))
    }

    /// The job file's settings these override (`--sink`).
    pub fn overrides(&self) -> Overrides {
        Overrides { sink: self.sink.clone().map(|url| (url, "--sink")), chunk_mib: None, sink_writers: None }
    }

    /// Refuse a serving command (`worker`, `watch`) without the shared backends its jobs use.
    fn require_shared(&self, command: &str) -> Result<()> {
        if self.queue.is_none() || self.ledger.is_none() || self.bucket.is_none() {
            return Err(Error::config(
                command,
                format!("{command} needs the shared --bucket, --queue and --ledger its jobs were submitted with"),
            ));
        }
        Ok(())
    }
}

/// A job's inputs, job file and data directory, as `run` and `plan` take them.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// Input files, directories, `file://` URLs or `s3://` objects; all form one job.
    pub inputs: Vec<String>,
    /// The job file (without one: CSV with a header, every field as text).
    pub config: Option<PathBuf>,
    /// Where the embedded bucket, ledger, sink and fetched references live.
    pub data_dir: PathBuf,
}

/// The engine a command runs on: the embedded one in `data_dir` with the backends `urls`
/// name instead, inputs read from the store of `first_input`, and the AWS configuration
/// loaded the first time an AWS backend is opened.
pub async fn engine(data_dir: &Path, urls: &BackendUrls, first_input: &str) -> Result<Engine> {
    Engine::with_backends(data_dir, urls, first_input, Cloud::lazy()).await
}

/// The cores of this machine: the default number of workers.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// This host's name, for worker names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

/// A records bar: done of total, rate and time left.
pub const RECORDS_BAR: &str = "{bar:40} {human_pos}/{human_len} records  {msg}  {rate}  ETA {eta}";
/// A chunks bar, for a job followed in the ledger.
pub const CHUNKS_BAR: &str = "{bar:40} {pos}/{len} chunks  {msg}  {elapsed}";

/// A progress bar drawn with `template` on standard error, or a hidden one.
pub fn bar(shown: bool, template: &str) -> indicatif::ProgressBar {
    if !shown {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_queue_other_than_memory_is_shared_and_serving_needs_all_three() {
        let mut b = Backends::default();
        assert!(!b.shared_queue());
        b.queue = Some("memory://".into());
        assert!(!b.shared_queue());
        b.queue = Some("sqs://tasks".into());
        assert!(b.shared_queue());
        let err = b.require_shared("worker").unwrap_err().to_string();
        assert!(err.contains("--bucket") && err.contains("worker"), "{err}");
        b.bucket = Some("s3://b".into());
        b.ledger = Some("dynamodb://l".into());
        b.require_shared("worker").unwrap();
    }

    #[tokio::test]
    async fn watch_takes_a_prefix_with_its_queue_or_a_directory_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let watch = |source: &str, events: Option<&str>| Watch {
            source: source.into(),
            events: events.map(str::to_string),
            config: None,
            data_dir: dir.path().join("data"),
            backends: Backends::default(),
            workers: None,
            grace: Duration::ZERO,
            idle_exit: Some(Duration::ZERO),
            quiet: Duration::ZERO,
        };
        let refused = |w: Watch| async move { super::watch(w, &mut |_| {}).await.unwrap_err().to_string() };
        let err = refused(watch("s3://b/in/", None)).await;
        assert!(err.contains("--events"), "{err}");
        let inbox = dir.path().display().to_string();
        let err = refused(watch(&inbox, Some("sqs://events"))).await;
        assert!(err.contains("--events"), "{err}");
        let err = refused(watch("gs://b/in/", None)).await;
        assert!(err.contains("gs://b/in/"), "{err}");
        let err = refused(watch(&format!("{inbox}/missing"), None)).await;
        assert!(err.contains("missing"), "{err}");
        let mut shared = watch(&inbox, None);
        shared.backends.queue = Some("sqs://tasks".into());
        let err = refused(shared).await;
        assert!(err.contains("--queue"), "{err}");
        // An empty inbox, watched until idle.
        super::watch(watch(&format!("file://{inbox}"), None), &mut |o| panic!("{o}")).await.unwrap();
    }

    #[test]
    fn sink_override_names_its_option() {
        let b = Backends { sink: Some("nowhere://x".into()), ..Backends::default() };
        let err = crate::engine::spec::load(None, &b.overrides()).unwrap_err().to_string();
        assert!(err.contains("--sink"), "{err}");
    }
}
