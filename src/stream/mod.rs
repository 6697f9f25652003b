//! `sluicebox stream`: records from a stream (standard input, files, Kinesis, SQS) through a
//! job's pipeline into well-sized, partitioned, compressed files, each record in exactly one.
//!
//! A [`source`] sends deliveries into a channel. The reader (`reader.rs`, a blocking thread,
//! with block helpers: `helpers.rs`, `prep.rs`) runs each record through
//! [`Pipeline`](crate::engine::pipeline::Pipeline) (the same steps as a batch job's), names its
//! partition ([`partition`]) and buffers it ([`batch`]); it sends cut buffers to the writer
//! task (`writer.rs`), with the records it met since it last sent. The writer owns the
//! stream's state ([`state`]): it announces each file in the ledger, writes it (`file.rs`),
//! moves the checkpoints, and then has the source acknowledge what is written. Nothing is
//! shared between the two but the channel. Rejected records go to files under the errors
//! prefix with their reasons. A queue's duplicate deliveries are dropped by message id
//! (`dedup.rs`). `report.rs` sums up a run.

pub mod batch;
mod dedup;
mod file;
mod helpers;
pub mod partition;
mod place;
mod prep;
mod reader;
mod report;
pub mod source;
mod spool;
pub mod state;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use tokio::sync::mpsc;

use self::partition::Template;
use self::reader::Reader;
pub use self::report::Report;
pub use self::source::Source;
use self::writer::{Group, Writer};
use crate::backends::ledger::StateStore;
use crate::backends::lookup::LookupTable;
use crate::backends::sink::Sink;
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::model::config::{Compression, StreamConfig};

/// How to run a stream.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source.
    pub from: Source,
    /// The destination as given (`s3://BUCKET/PREFIX`, a directory), for the consumer's name.
    pub to: String,
    /// The consumer's name, under which its checkpoints are kept (default: from and to).
    pub name: Option<String>,
    /// Stop (writing what is buffered) once no record has arrived for this long.
    pub idle_exit: Option<Duration>,
    /// Shards without a checkpoint start at the newest record instead of the oldest.
    pub latest: bool,
}

impl Options {
    /// The consumer's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("{} -> {}", self.from.describe(), self.to))
    }
}

/// What a stream runs with.
pub struct Stream {
    /// The checked job.
    pub spec: JobSpec,
    /// Its reference, loaded.
    pub lookup: Option<Arc<LookupTable>>,
    /// Where checkpoints are kept.
    pub ledger: Arc<dyn StateStore>,
    /// The destination, rooted at the prefix files go under.
    pub dest: Arc<dyn ObjectStore>,
    /// Where `Source::Files` are read from.
    pub inputs: Arc<dyn ObjectStore>,
    /// The cloud configuration (Kinesis).
    pub cloud: crate::backends::cloud::Cloud,
    /// The job's sink, when its `[sink]` names a table (or publishes): kept records are
    /// upserted into it by key, a later arrival winning.
    pub sink: Option<Arc<dyn Sink>>,
    /// Whether kept records go into files in `dest` too (else only rejects do).
    pub files: bool,
    /// Where buffers compress their records to until their files are written: the engine's
    /// spool directory (on Lambda, in its scratch space).
    pub scratch: std::path::PathBuf,
}

impl Stream {
    /// A stream of `spec` on `engine`'s ledger, inputs and cloud, enriched from `lookup`,
    /// writing files into `dest`, and into the job's sink when its `[sink]` names a table or
    /// publishes (a stream has no default table: one is written only when named).
    pub fn new(
        engine: &crate::engine::Engine,
        spec: JobSpec,
        lookup: Option<Arc<LookupTable>>,
        dest: Arc<dyn ObjectStore>,
    ) -> Result<Stream> {
        let (ledger, inputs, cloud) = (engine.ledger.clone(), engine.inputs.clone(), engine.cloud.clone());
        let sink = match (spec.sink.target.table(), &spec.sink.publish) {
            (None, None) => None,
            (table, _) => {
                let table = table.unwrap_or_default().to_string();
                let shape = spec.sink_shape(table, spec.output_fields.as_deref());
                engine.open_sink(&spec.sink, &shape)?
            }
        };
        let scratch = engine.data_dir().join("spool");
        Ok(Stream { spec, lookup, ledger, dest, inputs, cloud, sink, files: true, scratch })
    }

    /// Only rejects go into files: kept records go only to the sink (there must be one).
    pub fn sink_only(mut self) -> Result<Stream> {
        if self.sink.is_none() {
            return Err(Error::config(
                "--to",
                "name where files go, or a [sink] table for the records (a stream has no default table)",
            ));
        }
        self.files = false;
        Ok(self)
    }

    /// Run until the source ends, `opts.idle_exit` passes without a record, or `stop`
    /// completes; everything buffered is written before this returns.
    pub async fn run(
        &self,
        opts: &Options,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Report> {
        let started = Instant::now();
        let config = self.spec.definition.config.stream.clone().unwrap_or_default();
        check_config(&config)?;
        let name = opts.name();
        let opening = source::Opening {
            input: &self.spec.input,
            inputs: self.inputs.clone(),
            cloud: &self.cloud,
            latest: opts.latest,
            // Messages stay invisible while they wait in a buffer, and a while after.
            hold: Duration::from_secs(u64::from(config.max_age_s) + 120),
        };
        let source = source::open(&opts.from, opening).await?;
        let (writer, saved) =
            Writer::open(self.dest.clone(), self.ledger.clone(), name.clone(), source.clone(), self.sink.clone())
                .await?;
        let (tx, rx) = mpsc::channel(8);
        let (group_tx, group_rx) = mpsc::channel::<Group>(2);
        let resume = saved.shards.clone();
        std::fs::create_dir_all(&self.scratch).map_err(|e| {
            let what = format!("cannot create {}", self.scratch.display());
            Error::backend(crate::error::Backend::Filesystem, what, e)
        })?;
        let targets = reader::Targets { source: opts.from.name(), sink: self.sink.clone(), files: self.files };
        let reader = Reader::new(
            self.scratch.clone(),
            &self.spec,
            self.lookup.clone(),
            &config,
            saved,
            group_tx,
            opts.idle_exit,
            targets,
        )?;

        // The channel closes only once the source's result is in: an error that ended the
        // source is the run's, and a source the run stopped is stopped, whatever it was doing.
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
        let delivering = tokio::spawn(async move {
            let open = tx.clone();
            let _ = ended_tx.send(source.run(&resume, tx).await);
            drop(open);
        });
        let writer = tokio::spawn(writer.run(group_rx));
        let (handle, stop) = (tokio::runtime::Handle::current(), Box::pin(stop));
        let read = tokio::task::spawn_blocking(move || reader.run(rx, stop, handle));
        // Logged until the run ends, whichever way (the guard stops it when dropped).
        let _progress = self.sink.clone().map(|s| report::sink_progress(s, report::SINK_PROGRESS_EVERY));
        let counts = read.await.map_err(|e| Error::internal("stream", "the reader thread", e))?;
        delivering.abort();
        let written = writer.await.map_err(|e| Error::internal("stream", "the writer task", e))?;
        let written = written?;
        let counts = counts?;
        if let Ok(Err(e)) = ended.try_recv() {
            return Err(e);
        }
        let sink = self.sink.as_ref().and(self.spec.sink.target.table()).map(str::to_string);
        let sink_figures = self.sink.as_ref().and_then(|s| s.figures());
        Ok(Report { name, sink, sink_figures, ..counts }.with_files(written, started.elapsed().as_secs_f64()))
    }
}

/// Check `[stream]`'s limits (as Firehose's: 1–128 MiB, 0–900 s).
pub fn check_config(c: &StreamConfig) -> Result<()> {
    if !(1..=128).contains(&c.size_mib) {
        return Err(Error::config("stream.size_mib", format!("{} is not between 1 and 128", c.size_mib)));
    }
    if c.max_age_s > 900 {
        return Err(Error::config("stream.max_age_s", format!("{} is not between 0 and 900", c.max_age_s)));
    }
    if c.records == Some(0) {
        return Err(Error::config("stream.records", "must be at least 1"));
    }
    if c.max_open_partitions == 0 {
        return Err(Error::config("stream.max_open_partitions", "must be at least 1"));
    }
    if c.max_partitions == 0 {
        return Err(Error::config("stream.max_partitions", "must be at least 1"));
    }
    if c.buffer_mib < c.size_mib {
        let why = format!("{} is less than one file's size_mib ({})", c.buffer_mib, c.size_mib);
        return Err(Error::config("stream.buffer_mib", why));
    }
    if c.compression == Compression::Auto {
        return Err(Error::config("stream.compression", "is one of gzip, zstd or none"));
    }
    if c.dedup_window_s > 86_400 {
        return Err(Error::config("stream.dedup_window_s", format!("{} is not between 0 and 86400", c.dedup_window_s)));
    }
    if c.errors.trim_matches('/').is_empty() {
        return Err(Error::config("stream.errors", "must name a prefix"));
    }
    if let Some(t) = &c.partition {
        Template::parse(t)?;
    }
    Ok(())
}
