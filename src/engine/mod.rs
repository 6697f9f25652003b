//! What a job runs on: its checked definition ([`spec`]), one record through every step
//! ([`pipeline`]), Parquet output ([`parquet`]), and the [`Engine`]: the backends a job runs
//! on, built from URLs: a bucket, a ledger, a queue, a sink, and the
//! store inputs are read from. The embedded engine keeps them all in one data directory.

pub mod parquet;
pub mod pipeline;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use crate::backends::bucket;
use crate::backends::cloud::Cloud;
use crate::backends::ledger::StateStore;
use crate::backends::lookup::LookupTable;
use crate::backends::queue::Queue;
use crate::backends::sink::SinkSpec;
use crate::backends::sink::{Sink, SinkShape};
use crate::error::{Error, Result};
use crate::model::config::EnrichConfig;

/// The backends a job runs on.
#[derive(Clone)]
pub struct Engine {
    /// Where outputs go (`jobs/<id>/…`).
    pub bucket: Arc<dyn ObjectStore>,
    /// A URL for the bucket root, for messages (e.g. `file:///data/bucket`).
    pub bucket_url: String,
    /// The store inputs are read from.
    pub inputs: Arc<dyn ObjectStore>,
    /// Job and chunk records.
    pub ledger: Arc<dyn StateStore>,
    /// Task queue.
    pub queue: Arc<dyn Queue>,
    /// Wraps the sink each job opens (fault injection in tests, instrumentation); `None`:
    /// the sink as opened.
    pub sink_layer: Option<SinkLayer>,
    /// The SQLite database for the SQLite sink and `sqlite:` lookups; imported references
    /// and fetched reference files are kept beside it.
    pub database: PathBuf,
    /// The most the data directory may hold, bytes (a Lambda function's ephemeral storage):
    /// older fetched references are removed to make room for a new one, and a reference that
    /// cannot fit is refused. `None`: no bound.
    pub scratch_limit: Option<u64>,
    /// Told how every job ends, besides the job's own `[[notify]]` (`--notify`,
    /// `SLUICEBOX_NOTIFY`).
    pub notify: Vec<crate::model::config::Notify>,
    /// Cloud configuration for the backends a job's definition names (a DynamoDB sink or
    /// reference).
    pub cloud: Cloud,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("bucket_url", &self.bucket_url).field("database", &self.database).finish()
    }
}

/// A layer over a job's sink: it gets the sink [`crate::backends::sink::open`] opened and returns the one
/// the job writes to.
pub type SinkLayer = Arc<dyn Fn(Arc<dyn Sink>) -> Arc<dyn Sink> + Send + Sync>;

/// Backends named by URL (`None`: the embedded default).
#[derive(Debug, Clone)]
pub struct BackendUrls {
    /// Where outputs go.
    pub bucket: Option<String>,
    /// The task queue.
    pub queue: Option<String>,
    /// The ledger.
    pub ledger: Option<String>,
    /// The queue's visibility timeout.
    pub visibility: Duration,
}

impl BackendUrls {
    /// No URL: every backend embedded.
    pub fn embedded() -> Self {
        BackendUrls { bucket: None, queue: None, ledger: None, visibility: crate::backends::queue::DEFAULT_VISIBILITY }
    }
}

/// The embedded ledger's file in a data directory.
pub const LEDGER_FILE: &str = "sluicebox-ledger.db";

impl Engine {
    /// The embedded engine in `data_dir`: `bucket/` for outputs, `sluicebox-ledger.db` (SQLite)
    /// for the ledger, `sluicebox.db` for the sink tables, an in-process queue, and local files
    /// as inputs. The ledger has a file of its own: a sink's publish holds its database's write
    /// lock for as long as it upserts a job's rows (tens of seconds for millions), and chunk
    /// commits and gather leases must not wait for it.
    pub fn local(data_dir: &Path) -> Result<Engine> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::config("--data-dir", format!("cannot create {}: {e}", data_dir.display())))?;
        let data_dir = std::path::absolute(data_dir).map_err(|e| Error::config("--data-dir", e.to_string()))?;
        let bucket_dir = data_dir.join("bucket");
        let database = data_dir.join("sluicebox.db");
        Ok(Engine {
            bucket: bucket::open(&bucket_dir.display().to_string(), &Cloud::none())?,
            bucket_url: format!("file://{}", bucket_dir.display()),
            inputs: bucket::local_inputs(),
            ledger: Arc::new(crate::backends::ledger::SqliteLedger::open(&data_dir.join(LEDGER_FILE))?),
            queue: Arc::new(crate::backends::queue::MemoryQueue::new(crate::backends::queue::DEFAULT_VISIBILITY)),
            sink_layer: None,
            scratch_limit: None,
            notify: Vec::new(),
            database,
            cloud: Cloud::none(),
        })
    }

    /// The embedded engine with any of its backends replaced by the ones these URLs name:
    /// `bucket` (`s3://BUCKET[/PREFIX]`, `file://DIR`), `queue` (`sqs://NAME`, `memory://`),
    /// `ledger` (`dynamodb://TABLE`, `sqlite://PATH`). Inputs are read from the store of
    /// `first_input` (an S3 bucket for `s3://` inputs). Cloud backends use `cloud`.
    pub async fn with_backends(data_dir: &Path, urls: &BackendUrls, first_input: &str, cloud: Cloud) -> Result<Engine> {
        let mut engine = Engine::local(data_dir)?;
        engine.inputs = bucket::input_store(first_input, &cloud)?;
        if let Some(url) = &urls.bucket {
            engine.bucket = bucket::open(url, &cloud)?;
            engine.bucket_url = url.trim_end_matches('/').to_string();
        }
        if let Some(url) = &urls.queue {
            engine.queue = crate::backends::queue::open(url, urls.visibility, &cloud).await?;
        }
        if let Some(url) = &urls.ledger {
            engine.ledger = crate::backends::ledger::open(url, &cloud).await?;
        }
        engine.cloud = cloud;
        Ok(engine)
    }

    /// The data directory: the database's, where references are kept.
    pub fn data_dir(&self) -> &Path {
        self.database.parent().unwrap_or(Path::new("."))
    }

    /// Where the planner spools what it makes for workers (resume windows, decompressed
    /// copies) until it uploads them: `spool/` in the data directory, so that on Lambda it is
    /// in the scratch space and counts against its limit. Created if missing.
    pub fn spool_dir(&self) -> Result<PathBuf> {
        let dir = self.data_dir().join("spool");
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::backend(crate::error::Backend::Filesystem, format!("cannot create {}", dir.display()), e)
        })?;
        Ok(dir)
    }

    /// The bytes the data directory may still take under [`Engine::scratch_limit`], if set.
    pub fn scratch_room(&self) -> Option<u64> {
        self.scratch_limit.map(|limit| limit.saturating_sub(dir_size(self.data_dir())))
    }

    /// Open the sink a job's records go to (through the engine's layer, if it has one).
    pub fn open_sink(&self, spec: &SinkSpec, shape: &SinkShape) -> Result<Option<Arc<dyn Sink>>> {
        let sink = crate::backends::sink::open(spec, shape, &self.database, &self.cloud)?;
        Ok(match (sink, &self.sink_layer) {
            (Some(sink), Some(layer)) => Some(layer(sink)),
            (sink, _) => sink,
        })
    }

    /// Open a job's reference table, fetching it first when it is in a bucket.
    pub async fn open_lookup(&self, enrich: Option<&EnrichConfig>) -> Result<Option<Arc<LookupTable>>> {
        let Some(mut cfg) = enrich.cloned() else { return Ok(None) };
        if cfg.source.starts_with("s3://") {
            cfg.source = self.fetch_reference(&cfg.source).await?.display().to_string();
        }
        let (db, cloud) = (self.database.clone(), self.cloud.clone());
        tokio::task::spawn_blocking(move || LookupTable::load(&cfg, &db, &cloud))
            .await
            .map_err(|e| Error::internal("lookup", "load task failed", e))?
            .map(|t| Some(Arc::new(t)))
    }

    /// Copy a reference object from a bucket into `references/` beside the database (once per
    /// version), streaming, and return the local path.
    async fn fetch_reference(&self, url: &str) -> Result<PathBuf> {
        use futures::StreamExt;
        use object_store::ObjectStoreExt;
        use tokio::io::AsyncWriteExt;
        let store = bucket::input_store(url, &self.cloud)?;
        let key = url.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(_, k)| k).unwrap_or_default();
        let path = bucket::key_path(key);
        let got = store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::config("enrich.source", format!("{url} does not exist")),
            other => Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {url}"), other),
        })?;
        let version = got.meta.e_tag.clone().unwrap_or_else(|| got.meta.last_modified.timestamp_micros().to_string());
        let digest: String =
            Sha256::digest(format!("{url}\0{version}")).iter().take(8).map(|b| format!("{b:02x}")).collect();
        let name = key.rsplit('/').next().unwrap_or("reference");
        let dir = self.database.parent().map(|p| p.join("references")).unwrap_or_else(|| PathBuf::from("references"));
        let local = dir.join(format!("{digest}-{name}"));
        if local.exists() {
            return Ok(local);
        }
        let fs = |what: &str, p: &Path, e: std::io::Error| {
            Error::backend(crate::error::Backend::Filesystem, format!("cannot {what} {}", p.display()), e)
        };
        tokio::fs::create_dir_all(&dir).await.map_err(|e| fs("create", &dir, e))?;
        if let Some(limit) = self.scratch_limit {
            make_room(&dir, got.meta.size, limit, url)?;
        }
        let partial = dir.join(format!(".{digest}-{name}.{}", std::process::id()));
        let mut file = tokio::fs::File::create(&partial).await.map_err(|e| fs("create", &partial, e))?;
        let mut stream = got.into_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece
                .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {url}"), e))?;
            file.write_all(&piece).await.map_err(|e| fs("write", &partial, e))?;
        }
        file.flush().await.map_err(|e| fs("write", &partial, e))?;
        tokio::fs::rename(&partial, &local).await.map_err(|e| fs("rename", &partial, e))?;
        Ok(local)
    }
}

/// Bytes held in files under `dir`, every level down.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Make room for `size` more bytes in the data directory above `references` (at most `limit`
/// in all), removing the least recently written files of `references` first; refuse a
/// reference that cannot fit even then.
fn make_room(references: &Path, size: u64, limit: u64, url: &str) -> Result<()> {
    let data_dir = references.parent().unwrap_or(references);
    let mut used = dir_size(data_dir);
    if size > limit {
        return Err(Error::config(
            "SLUICEBOX_SCRATCH_LIMIT_MB",
            format!("{url} is {size} bytes, more than the scratch space ({limit} bytes): raise the limit and the function's ephemeral storage"),
        ));
    }
    if used + size <= limit {
        return Ok(());
    }
    let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(references)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    kept.sort();
    for (_, len, path) in kept {
        if used + size <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed an older reference to make room");
            used = used.saturating_sub(len);
        }
    }
    if used + size > limit {
        return Err(Error::config(
            "SLUICEBOX_SCRATCH_LIMIT_MB",
            format!(
                "{url} is {size} bytes; with {used} bytes in use, the scratch space ({limit} bytes) cannot hold it: \
                 raise the limit and the function's ephemeral storage"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_by_removing_older_references_and_one_too_big_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let references = dir.path().join("references");
        std::fs::create_dir_all(&references).unwrap();
        let (older, newer) = (references.join("a-older.csv"), references.join("b-newer.csv"));
        std::fs::write(&older, vec![b'x'; 600]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&newer, vec![b'x'; 300]).unwrap();
        make_room(&references, 50, 1000, "s3://b/small.csv").unwrap();
        assert!(older.exists() && newer.exists(), "room enough: nothing removed");
        make_room(&references, 500, 1000, "s3://b/r.csv").unwrap();
        assert!(!older.exists() && newer.exists(), "the older reference made room");
        let err = make_room(&references, 2000, 1000, "s3://b/big.csv").unwrap_err().to_string();
        assert!(err.contains("SLUICEBOX_SCRATCH_LIMIT_MB") && err.contains("s3://b/big.csv"), "{err}");
        assert!(newer.exists(), "nothing removed for a reference that cannot fit anyway");
    }
}
