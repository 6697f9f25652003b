//! `sluicebox stream`: records from a stream (standard input, files, Kinesis) through a job's
//! pipeline into well-sized, partitioned, compressed files, each record in exactly one.
//!
//! One thread reads deliveries from the source, runs each record through
//! [`Pipeline`] (the same steps as a batch job's), names its
//! partition ([`partition`]) and buffers it ([`batch`]); a writer task encodes cut buffers,
//! announces each file in the ledger, writes it, and then moves the checkpoints ([`state`]).
//! Rejected records go to files under the errors prefix with their reasons.

pub mod batch;
pub mod partition;
pub mod source;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use self::batch::{Batch, Batcher, Cut, Limits};
use self::partition::Template;
use self::source::{Delivery, SourceRecord};
use self::state::{Covered, Pending, Pos, Saved, Track};
use crate::config::{Compression, Format, OutputFormat, StreamConfig};
use crate::error::{Error, Result};
use crate::ledger::StateStore;
use crate::lookup::LookupTable;
use crate::pipeline::{Encoder, Input, Pipeline};
use crate::record::{Fault, Origin, Outcome, Reject, Row};
use crate::spec::JobSpec;

/// Where a stream's records come from, as `--from` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// Files: paths, directories, `file://` or `s3://` objects and prefixes.
    Files(Vec<String>),
    /// A Kinesis data stream (`kinesis://NAME`).
    Kinesis(String),
    /// An SQS queue (`sqs://NAME` or a queue URL) of JSON objects, one per message; a message
    /// is deleted once its record is in a written file (at least once: a crash between the
    /// two delivers it again).
    Queue(String),
    /// One batch of a shard's records, as an AWS Lambda function is handed them by its event
    /// source mapping: written, with everything buffered, before the run returns.
    Batch {
        /// The shard.
        shard: String,
        /// Its records, in order.
        records: Vec<SourceRecord>,
    },
}

impl Source {
    /// Parse `--from`.
    pub fn parse(from: &[String]) -> Result<Self> {
        match from {
            [one] if one == "-" => Ok(Source::Stdin),
            [one] if one.starts_with("kinesis://") => {
                let name = one.trim_start_matches("kinesis://").trim_end_matches('/');
                if name.is_empty() {
                    return Err(Error::config("--from", "kinesis:// needs a stream name: kinesis://NAME"));
                }
                Ok(Source::Kinesis(name.to_string()))
            }
            [one] if one.starts_with("sqs://") || one.starts_with("https://sqs.") => Ok(Source::Queue(one.clone())),
            [] => Err(Error::config("--from", "name a source: -, files, kinesis://NAME or sqs://NAME")),
            many if many
                .iter()
                .any(|f| f == "-" || f.contains("://") && !f.starts_with("s3://") && !f.starts_with("file://")) =>
            {
                Err(Error::config(
                    "--from",
                    format!("{many:?}: one stream (-, kinesis://NAME), or any number of files"),
                ))
            }
            files => Ok(Source::Files(files.to_vec())),
        }
    }

    /// How the source is named in the consumer's default name.
    fn describe(&self) -> String {
        match self {
            Source::Stdin => "-".into(),
            Source::Files(f) => f.join(","),
            Source::Kinesis(name) => format!("kinesis://{name}"),
            Source::Queue(url) => url.clone(),
            Source::Batch { shard, .. } => shard.clone(),
        }
    }
}

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

/// What a stream run did (`--json` prints it; the names are stable).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The consumer's name.
    pub name: String,
    /// Records read.
    pub records: u64,
    /// Records written to files.
    pub written: u64,
    /// Records rejected (in files under the errors prefix).
    pub rejected: u64,
    /// Records a transform dropped.
    pub filtered: u64,
    /// Records read again that were already in files (a restart), skipped.
    pub skipped: u64,
    /// Data files written.
    pub files: u64,
    /// Error files written.
    pub error_files: u64,
    /// Bytes of the data files (compressed).
    pub bytes: u64,
    /// The data files' sizes: smallest, median, largest.
    pub file_bytes: [u64; 3],
    /// Why buffers became files, by reason.
    pub cuts: BTreeMap<String, u64>,
    /// Seconds from start to end.
    pub seconds: f64,
    /// Records read per second.
    pub records_per_s: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = crate::cost::thousands;
        writeln!(
            f,
            "{} records in {:.1} s ({}/s): {} written, {} rejected, {} filtered, {} already in files",
            t(self.records),
            self.seconds,
            t(self.records_per_s as u64),
            t(self.written),
            t(self.rejected),
            t(self.filtered),
            t(self.skipped)
        )?;
        write!(
            f,
            "{} files, {} bytes (sizes {} / {} / {} smallest / median / largest), {} error files",
            t(self.files),
            t(self.bytes),
            t(self.file_bytes[0]),
            t(self.file_bytes[1]),
            t(self.file_bytes[2]),
            t(self.error_files)
        )
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
    pub cloud: crate::cloud::Cloud,
}

/// A buffered record.
struct Item {
    shard: u32,
    ordinal: u64,
    pos: Pos,
    arrival_ms: i64,
    payload: Payload,
    /// What acknowledges the record once it is in a file (an SQS receipt).
    ack: Option<String>,
}

enum Payload {
    /// An encoded line (JSON Lines, CSV, or a reject).
    Line(Vec<u8>),
}

/// What the reader thread and the writer task share.
struct Shared {
    tracks: Vec<Track>,
    saved: Saved,
    version: u64,
    /// Records accounted for whose source waits for an acknowledgement.
    acks: Vec<String>,
}

impl Shared {
    fn shard(&mut self, name: &str) -> u32 {
        match self.tracks.iter().position(|t| t.shard == name) {
            Some(i) => i as u32,
            None => {
                let checkpoint = self.saved.shards.get(name).and_then(|s| s.checkpoint.as_deref()).map(Pos::parse);
                self.tracks.push(Track::new(name, checkpoint));
                (self.tracks.len() - 1) as u32
            }
        }
    }
}

/// How files are encoded.
#[derive(Clone)]
struct Encoding {
    format: OutputFormat,
    compression: Compression,
    fields: Option<Arc<Vec<String>>>,
    errors: String,
}

impl Encoding {
    /// How buffered lines are encoded: CSV for CSV files, else JSON Lines (Parquet files are
    /// made from JSON Lines when they are written).
    fn line_format(&self) -> OutputFormat {
        if self.format == OutputFormat::Csv {
            OutputFormat::Csv
        } else {
            OutputFormat::Jsonl
        }
    }

    fn extension(&self, errors: bool) -> String {
        let format = match (errors, self.format) {
            (true, _) | (false, OutputFormat::Jsonl) => "jsonl",
            (false, OutputFormat::Csv) => "csv",
            (false, OutputFormat::Parquet) => return "parquet".into(),
        };
        match self.compression {
            Compression::Zstd => format!("{format}.zst"),
            Compression::None => format.into(),
            _ => format!("{format}.gz"),
        }
    }
}

/// A group of cut buffers on their way to the writer.
struct Group {
    batches: Vec<Batch<Item>>,
    encoding: Encoding,
    /// The reader is done: write the state even if nothing changed.
    last: bool,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Stream {
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
        // Standard input cannot be read again, nor a queue's messages in order: their
        // positions mean nothing to a later run.
        let persist = !matches!(opts.from, Source::Stdin | Source::Queue(_));

        // The state: pending files either written (now covered) or dropped.
        let (mut saved, mut version) = match self.ledger.get_checkpoint(&name).await? {
            Some(c) => (
                serde_json::from_str::<Saved>(&c.state)
                    .map_err(|e| Error::Conflict(format!("the stored state of stream {name:?} is unreadable: {e}")))?,
                c.version,
            ),
            None => (Saved::default(), 0),
        };
        if persist && !saved.pending.is_empty() {
            for p in std::mem::take(&mut saved.pending) {
                if crate::bucket::get_opt_head(self.dest.as_ref(), &p.name).await?.is_some() {
                    saved.covered.extend(p.covered);
                }
            }
            let doc = serde_json::to_string(&saved).expect("state serializes");
            if !self.ledger.put_checkpoint(&name, version, &doc).await? {
                return Err(taken(&name));
            }
            version += 1;
        }
        let shared =
            Arc::new(Mutex::new(Shared { tracks: Vec::new(), saved: saved.clone(), version, acks: Vec::new() }));

        let (tx, rx) = mpsc::channel::<Delivery>(8);
        let queue = match &opts.from {
            // Messages stay invisible while they wait in a buffer, and a while after.
            Source::Queue(url) => {
                let visibility = Duration::from_secs(u64::from(config.max_age_s) + 120);
                Some(crate::queue::open(url, visibility, &self.cloud).await?)
            }
            _ => None,
        };
        let source = self.start_source(opts, &saved, tx, queue.clone())?;
        let (group_tx, group_rx) = mpsc::channel::<Group>(2);
        let writer = Writer {
            dest: self.dest.clone(),
            ledger: self.ledger.clone(),
            name: name.clone(),
            persist,
            shared: shared.clone(),
            schema: None,
            spec: self.spec.clone(),
            queue,
        };
        let writer = tokio::spawn(writer.run(group_rx));

        let reader = Reader::new(self, &config, shared.clone(), group_tx, opts.idle_exit)?;
        let handle = tokio::runtime::Handle::current();
        let stop = Box::pin(stop);
        let read = tokio::task::spawn_blocking(move || reader.run(rx, stop, handle));
        let counts = read.await.map_err(|e| Error::backend("stream", "the reader thread", e))?;
        source.abort();
        let written = writer.await.map_err(|e| Error::backend("stream", "the writer task", e))?;
        let written = written?;
        let counts = counts?;
        if let Ok(Err(e)) = source.await {
            return Err(e);
        }
        let mut report = Report { name, ..counts };
        report.files = written.files;
        report.error_files = written.error_files;
        let mut sizes = written.sizes;
        sizes.sort_unstable();
        report.bytes = sizes.iter().sum();
        if !sizes.is_empty() {
            report.file_bytes = [sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1]];
        }
        report.cuts = written.cuts;
        report.seconds = started.elapsed().as_secs_f64();
        report.records_per_s = report.records as f64 / report.seconds.max(1e-9);
        Ok(report)
    }

    fn start_source(
        &self,
        opts: &Options,
        saved: &Saved,
        tx: mpsc::Sender<Delivery>,
        queue: Option<Arc<dyn crate::queue::Queue>>,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let format = self.spec.input.format;
        let dialect = self.spec.input.dialect;
        Ok(match &opts.from {
            Source::Stdin => {
                let format = format.unwrap_or(Format::Jsonl);
                let shard = format!("stdin-{}", now_ms());
                tokio::task::spawn_blocking(move || {
                    source::read_blocks(shard, Box::new(std::io::stdin()), format, dialect, now_ms(), &tx)
                })
            }
            Source::Files(args) => {
                let (store, args, ended) = (self.inputs.clone(), args.clone(), saved.clone());
                let compression = self.spec.input.compression;
                tokio::spawn(async move {
                    let inputs = crate::bucket::resolve_inputs(store.as_ref(), &args, format, compression).await?;
                    for input in inputs {
                        if ended.shards.get(&input.location).is_some_and(|s| s.ended) {
                            continue;
                        }
                        let path = crate::bucket::key_path(&input.path);
                        let arrival = store.head(&path).await.map(|m| m.last_modified.timestamp_millis()).unwrap_or(0);
                        let read = crate::bucket::open_reader(store.clone(), &input).await?.decoded()?;
                        let tx = tx.clone();
                        let (shard, format) = (input.location.clone(), input.format);
                        tokio::task::spawn_blocking(move || {
                            source::read_blocks(shard, read, format, dialect, arrival, &tx)
                        })
                        .await
                        .map_err(|e| Error::backend("stream", "a file reader", e))??;
                    }
                    Ok(())
                })
            }
            Source::Queue(url) => {
                let (queue, shard) = (queue.expect("the queue is opened"), url.clone());
                let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
                // Receives run side by side: one waits on SQS for most of its time.
                let receivers: Vec<_> = (0..QUEUE_RECEIVERS)
                    .map(|_| {
                        let (queue, shard, tx, n) = (queue.clone(), shard.clone(), tx.clone(), n.clone());
                        tokio::spawn(async move { receive(queue, shard, tx, n).await })
                    })
                    .collect();
                drop(tx);
                tokio::spawn(async move {
                    for r in futures::future::join_all(receivers).await {
                        r.map_err(|e| Error::backend("stream", "a queue receiver", e))??;
                    }
                    Ok(())
                })
            }
            Source::Batch { shard, records } => {
                let delivery = Delivery::Records { shard: shard.clone(), records: records.clone() };
                tokio::spawn(async move {
                    let _ = tx.send(delivery).await;
                    Ok(())
                })
            }
            #[cfg(feature = "aws")]
            Source::Kinesis(stream) => {
                let client = crate::aws::kinesis(self.cloud.sdk("--from")?);
                let start =
                    if opts.latest { source::kinesis::Start::Latest } else { source::kinesis::Start::TrimHorizon };
                tokio::spawn(source::kinesis::run(client, stream.clone(), saved.shards.clone(), start, tx))
            }
            #[cfg(not(feature = "aws"))]
            Source::Kinesis(_) => {
                drop(tx);
                return Err(Error::config("--from", "kinesis:// needs the `aws` feature, which this build lacks"));
            }
        })
    }
}

/// Receives from a queue at once.
const QUEUE_RECEIVERS: usize = 4;

/// Receive a queue's messages as records until the reader stops.
async fn receive(
    queue: Arc<dyn crate::queue::Queue>,
    shard: String,
    tx: mpsc::Sender<Delivery>,
    n: Arc<std::sync::atomic::AtomicU64>,
) -> Result<()> {
    loop {
        let got = tokio::select! {
            got = queue.receive(10, Duration::from_secs(1)) => got?,
            _ = tx.closed() => return Ok(()),
        };
        if got.is_empty() {
            continue;
        }
        let records = got
            .into_iter()
            .map(|d| SourceRecord {
                pos: Pos::N(n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1),
                arrival_ms: now_ms(),
                data: bytes::Bytes::from(d.body),
                ack: Some(d.receipt),
            })
            .collect();
        if tx.send(Delivery::Records { shard: shard.clone(), records }).await.is_err() {
            return Ok(());
        }
    }
}

fn taken(name: &str) -> Error {
    Error::Conflict(format!(
        "the checkpoint of stream {name:?} changed under this consumer: another `sluicebox stream` with this name is running"
    ))
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
    if c.errors.trim_matches('/').is_empty() {
        return Err(Error::config("stream.errors", "must name a prefix"));
    }
    if let Some(t) = &c.partition {
        Template::parse(t)?;
    }
    Ok(())
}

/// The reader thread: deliveries in, records through the pipeline and into buffers, in order.
///
/// A file's or standard input's blocks are processed by helper threads, one per core, as they
/// arrive; the reader places their records in block order, so a shard's records reach the
/// buffers in the order they were read. A record stream's records are processed here.
struct Reader {
    prep: Arc<Prep>,
    spec: JobSpec,
    lookup: Option<Arc<LookupTable>>,
    batcher: Batcher<Item>,
    encoding: Option<Encoding>,
    config: StreamConfig,
    encoder: Option<Encoder>,
    inputs: HashMap<u32, Arc<Input>>,
    next_record: HashMap<u32, u64>,
    helpers: Helpers,
    shared: Arc<Mutex<Shared>>,
    out: mpsc::Sender<Group>,
    idle: Option<Duration>,
    counts: Report,
    /// Partitions that took a record lately, with the arrival of their last one: at most
    /// `max_partitions` at once ([`Reader::admit`]).
    active: HashMap<String, i64>,
}

/// How far ahead of the clock a record's `time_field` may be.
const MAX_DAYS_AHEAD: i64 = 1;

/// What makes a record's outcome ready for a buffer; shared by the reader and its helpers.
struct Prep {
    pipeline: Pipeline,
    template: Option<Template>,
    time_field: Option<String>,
    /// The prefix of rejected records' files: no partition may be at or under it.
    errors: String,
}

/// A record ready to be placed.
enum Ready {
    /// A kept record: its partition and encoded line.
    Row {
        partition: String,
        line: Vec<u8>,
    },
    /// A rejected record; its error line names its position, known when it is placed.
    Rejected(Reject),
    Filtered,
}

/// A block for a helper: its records are numbered from 1, the reader numbers them in the shard.
struct BlockJob {
    block: source::Block,
    shard: u32,
    input: Arc<Input>,
    format: OutputFormat,
    fields: Option<Vec<String>>,
}

/// A processed block.
struct BlockDone {
    shard: u32,
    arrival_ms: i64,
    records: Vec<Ready>,
}

/// Helper threads that process blocks, started with the first; results are taken in the
/// order blocks were given.
struct Helpers {
    prep: Arc<Prep>,
    jobs: Option<std::sync::mpsc::SyncSender<HelperJob>>,
    pending: std::collections::VecDeque<std::sync::mpsc::Receiver<Result<BlockDone>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type HelperJob = (BlockJob, std::sync::mpsc::SyncSender<Result<BlockDone>>);

impl Helpers {
    fn new(prep: Arc<Prep>) -> Self {
        Helpers { prep, jobs: None, pending: Default::default(), threads: Vec::new() }
    }

    fn start(&mut self) {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        let (tx, rx) = std::sync::mpsc::sync_channel::<HelperJob>(n);
        let rx = Arc::new(Mutex::new(rx));
        self.threads = (0..n)
            .map(|i| {
                let (rx, prep) = (rx.clone(), self.prep.clone());
                std::thread::Builder::new()
                    .name(format!("stream-block-{i}"))
                    .spawn(move || loop {
                        let Ok((job, done)) = rx.lock().expect("job lock").recv() else { return };
                        // The reader may have stopped on an error; then nobody waits for this.
                        let _ = done.send(prep.block(job));
                    })
                    .expect("a thread starts")
            })
            .collect();
        self.jobs = Some(tx);
    }

    /// Blocks given out beyond which the reader waits for the oldest: enough to keep every
    /// helper busy, few enough to bound memory by blocks, not input.
    fn full(&self) -> bool {
        !self.pending.is_empty() && self.pending.len() >= 2 * self.threads.len()
    }

    fn give(&mut self, job: BlockJob) -> Result<()> {
        if self.jobs.is_none() {
            self.start();
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stopped = || Error::backend("stream", "a block helper", std::io::Error::other("stopped"));
        self.jobs.as_ref().ok_or_else(stopped)?.send((job, tx)).map_err(|_| stopped())?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// The oldest block's result: waiting for it if `wait`, else only if it is done.
    fn next(&mut self, wait: bool) -> Option<Result<BlockDone>> {
        use std::sync::mpsc::TryRecvError;
        let front = self.pending.front()?;
        let got = match wait {
            true => front.recv().ok(),
            false => match front.try_recv() {
                Ok(done) => Some(done),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            },
        };
        self.pending.pop_front();
        Some(got.unwrap_or_else(|| {
            Err(Error::backend("stream", "a block helper", std::io::Error::other("stopped without a result")))
        }))
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Prep {
    /// Process a block's records, numbered from 1.
    fn block(&self, job: BlockJob) -> Result<BlockDone> {
        let BlockJob { block, input, format, fields, shard } = job;
        let mut encoder = Encoder::new(format, fields);
        let mut records = Vec::new();
        if let Some(s) = &block.skipped {
            records.push(Ready::Rejected(Reject {
                input: block.shard.clone(),
                record: 0,
                line: s.first_line,
                field: None,
                rule: "max_record_bytes".into(),
                message: format!(
                    "the record from line {} is {} bytes, more than a stream reads ({} MiB): skipped to its line break",
                    s.first_line,
                    s.bytes,
                    source::MAX_RECORD_BYTES >> 20
                ),
                raw: s.head.clone(),
            }));
        }
        let from = crate::decode::ChunkStart { record: 1, line: block.first_line };
        self.pipeline.each_record(&input, from, &block.data, &mut |_, outcome| {
            records.push(self.ready(outcome, &block.shard, block.arrival_ms, &mut encoder));
        })?;
        Ok(BlockDone { shard, arrival_ms: block.arrival_ms, records })
    }

    /// A record's partition and line, or why it has none.
    fn ready(&self, outcome: Outcome, shard: &str, arrival_ms: i64, encoder: &mut Encoder) -> Ready {
        let row = match outcome {
            Outcome::Written(item) => item.record,
            Outcome::Rejected(r) => return Ready::Rejected(r),
            Outcome::Filtered => return Ready::Filtered,
        };
        let reject = |fault: Fault| {
            Ready::Rejected(Reject {
                input: shard.to_string(),
                record: 0,
                line: 0,
                field: fault.field,
                rule: fault.rule,
                message: fault.message,
                raw: serde_json::to_string(&row).unwrap_or_default(),
            })
        };
        let time = match self.event_time(&row, arrival_ms) {
            Ok(time) => time,
            Err(fault) => return reject(fault),
        };
        let partition = match &self.template {
            None => String::new(),
            Some(t) => match t.render_checked(&row, time, &self.errors) {
                Ok(p) => p,
                Err(fault) => return reject(fault),
            },
        };
        // Parquet files are made from JSON Lines when they are written: a line is far smaller
        // in a buffer than the row it encodes.
        encoder.encode(&row);
        Ready::Row { partition, line: encoder.take() }
    }

    /// The record's time for the template: its `time_field`, else when it arrived.
    fn event_time(&self, row: &Row, arrival_ms: i64) -> std::result::Result<DateTime<Utc>, Fault> {
        let Some(field) =
            self.time_field.as_deref().filter(|_| self.template.as_ref().is_some_and(Template::uses_time))
        else {
            return Ok(ms_time(arrival_ms));
        };
        let bad = |why: String| Fault::new(Some(field), "stream.time_field", why);
        let time = parsed_time(row, field, bad)?;
        // A partition years ahead (9999) is a typo or a crafted record, and a folder no query
        // of this year reads.
        let latest = Utc::now() + chrono::Duration::days(MAX_DAYS_AHEAD);
        if time > latest {
            return Err(bad(format!("{time} is more than {MAX_DAYS_AHEAD} day(s) ahead of this clock")));
        }
        Ok(time)
    }
}

/// A record's `field` as a time: text (a date or time), or seconds or milliseconds since the epoch.
fn parsed_time(row: &Row, field: &str, bad: impl Fn(String) -> Fault) -> std::result::Result<DateTime<Utc>, Fault> {
    match row.get(field) {
        None | Some(Value::Null) => Err(bad(format!("{field} is missing, and names the record's partition"))),
        Some(Value::String(s)) => parse_time(s).ok_or_else(|| bad(format!("{s:?} is not a date or time"))),
        Some(Value::Number(n)) => {
            let n = n.as_f64().unwrap_or(0.0);
            // Seconds or milliseconds since the epoch, by size.
            let ms = if n.abs() < 1e11 { n * 1000.0 } else { n };
            Utc.timestamp_millis_opt(ms as i64).single().ok_or_else(|| bad(format!("{n} is not a time")))
        }
        Some(other) => Err(bad(format!("{other} is not a date or time"))),
    }
}

impl Reader {
    fn new(
        s: &Stream,
        config: &StreamConfig,
        shared: Arc<Mutex<Shared>>,
        out: mpsc::Sender<Group>,
        idle: Option<Duration>,
    ) -> Result<Self> {
        let template = config.partition.as_deref().map(Template::parse).transpose()?;
        let limits = Limits {
            bytes: (config.size_mib as usize) << 20,
            records: config.records.unwrap_or(u64::MAX),
            age_ms: i64::from(config.max_age_s) * 1000,
            open: config.max_open_partitions,
            // Beyond this, the largest buffer is written.
            total_bytes: (config.buffer_mib as usize) << 20,
        };
        if s.spec.output_format == Some(OutputFormat::Parquet)
            && s.spec.output_fields.is_none()
            && !s.spec.transforms.is_empty()
        {
            return Err(Error::config(
                "output.fields",
                "Parquet files need the output fields: list them in [output] fields",
            ));
        }
        let prep = Arc::new(Prep {
            pipeline: Pipeline::new(&s.spec, s.lookup.clone(), s.spec.output_fields.clone()),
            template,
            time_field: config.time_field.clone(),
            errors: config.errors.trim_matches('/').to_string(),
        });
        Ok(Reader {
            helpers: Helpers::new(prep.clone()),
            prep,
            spec: s.spec.clone(),
            lookup: s.lookup.clone(),
            batcher: Batcher::new(limits),
            encoding: None,
            config: config.clone(),
            encoder: None,
            inputs: HashMap::new(),
            next_record: HashMap::new(),
            shared,
            out,
            idle,
            counts: Report::default(),
            active: HashMap::new(),
        })
    }

    /// The encoding, fixed by the first records: their output fields, if known.
    fn encoding(&mut self, fields: Option<Vec<String>>) -> Result<Encoding> {
        if let Some(e) = &self.encoding {
            return Ok(e.clone());
        }
        let format = self.spec.output_format(fields.is_some());
        if format == OutputFormat::Parquet && fields.is_none() {
            return Err(Error::config(
                "output.fields",
                "Parquet files need the output fields: list them in [output] fields (JSON records may have any)",
            ));
        }
        let e = Encoding {
            format,
            compression: self.config.compression,
            fields: fields.clone().map(Arc::new),
            errors: self.config.errors.trim_matches('/').to_string(),
        };
        self.encoder = Some(Encoder::new(e.line_format(), fields));
        self.encoding = Some(e.clone());
        Ok(e)
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Delivery>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        handle: tokio::runtime::Handle,
    ) -> Result<Report> {
        enum Next {
            Got(Delivery),
            Closed,
            Tick,
            Stop,
        }
        let mut last_record = Instant::now();
        loop {
            let wait = self.batcher.next_due_ms().map(|due| Duration::from_millis((due - now_ms()).max(0) as u64));
            let idle_left = self.idle.map(|d| d.saturating_sub(last_record.elapsed()));
            // Blocks with the helpers are looked for every millisecond.
            let busy = (!self.helpers.pending.is_empty()).then_some(Duration::from_millis(1));
            let wait = [wait, idle_left, busy].into_iter().flatten().min().unwrap_or(Duration::from_secs(3600));
            let next = handle.block_on(async {
                tokio::select! {
                    d = rx.recv() => d.map_or(Next::Closed, Next::Got),
                    _ = tokio::time::sleep(wait) => Next::Tick,
                    _ = &mut stop => Next::Stop,
                }
            });
            let mut cut = Vec::new();
            match next {
                Next::Got(Delivery::Records { shard, records }) => {
                    last_record = Instant::now();
                    self.collect(true, &mut cut)?;
                    self.records(&shard, records, &mut cut)?;
                }
                Next::Got(Delivery::Block(block)) => {
                    last_record = Instant::now();
                    self.block(block)?;
                    self.collect(false, &mut cut)?;
                }
                Next::Got(Delivery::End { shard }) => {
                    self.collect(true, &mut cut)?;
                    let mut sh = self.shared.lock().expect("state lock");
                    let i = sh.shard(&shard) as usize;
                    sh.tracks[i].reader_ended = true;
                }
                Next::Closed | Next::Stop => {
                    self.collect(true, &mut cut)?;
                    if !cut.is_empty() {
                        self.send(cut, false)?;
                    }
                    break;
                }
                Next::Tick => {
                    self.collect(false, &mut cut)?;
                    if self.idle.is_some_and(|d| last_record.elapsed() >= d) && self.helpers.pending.is_empty() {
                        break;
                    }
                }
            }
            cut.extend(self.batcher.due(now_ms()));
            if !cut.is_empty() {
                self.send(cut, false)?;
            }
        }
        drop(rx);
        let rest = self.batcher.drain();
        self.send(rest, true)?;
        Ok(self.counts)
    }

    fn send(&mut self, batches: Vec<Batch<Item>>, last: bool) -> Result<()> {
        let encoding = match &self.encoding {
            Some(e) => e.clone(),
            None => self.encoding(self.spec.output_fields.clone())?,
        };
        // A send fails only when the writer stopped on an error, which it returns.
        self.out
            .blocking_send(Group { batches, encoding, last })
            .map_err(|_| Error::backend("stream", "the writer", std::io::Error::other("stopped")))
    }

    /// A file's or standard input's block, given to the helpers to process as a batch job's
    /// chunk.
    fn block(&mut self, block: source::Block) -> Result<()> {
        let shard = self.shared.lock().expect("state lock").shard(&block.shard);
        let header = block.header.as_deref().map(Vec::as_slice);
        if !self.inputs.contains_key(&shard) {
            let input = self.prep.pipeline.input(0, shard, &block.shard, block.format, header)?;
            self.inputs.insert(shard, Arc::new(input));
        }
        if self.encoding.is_none() {
            let fields = match block.format {
                Format::Csv => self.output_fields(header.map(<[String]>::to_vec), &block.shard),
                _ => self.spec.output_fields.clone(),
            };
            self.encoding(fields)?;
        }
        let encoding = self.encoding.as_ref().expect("the encoding is fixed");
        let job = BlockJob {
            input: self.inputs[&shard].clone(),
            format: encoding.line_format(),
            fields: encoding.fields.as_deref().cloned(),
            shard,
            block,
        };
        self.helpers.give(job)
    }

    /// Place the records of processed blocks, in the order the blocks came: all of them if
    /// `all`, else those done (waiting for the oldest while the helpers have too many).
    fn collect(&mut self, all: bool, cut: &mut Vec<Batch<Item>>) -> Result<()> {
        while let Some(done) = self.helpers.next(all || self.helpers.full()) {
            let BlockDone { shard, arrival_ms, records } = done?;
            let first = *self.next_record.get(&shard).unwrap_or(&1);
            self.next_record.insert(shard, first + records.len() as u64);
            let shared = self.shared.clone();
            let mut sh = shared.lock().expect("state lock");
            for (n, ready) in (first..).zip(records) {
                self.place(&mut sh, shard, n, (Pos::N(n), arrival_ms, None), ready, cut);
            }
        }
        Ok(())
    }

    /// The output fields of CSV records with this header, as a batch job's.
    fn output_fields(&self, header: Option<Vec<String>>, location: &str) -> Option<Vec<String>> {
        let object = crate::bucket::InputObject {
            location: location.to_string(),
            path: String::new(),
            size: 0,
            version: String::new(),
            e_tag: None,
            format: Format::Csv,
            compression: Compression::None,
        };
        let planned = crate::job::PlannedInput { object, header, records: 0, plain_copy: false, windows_bytes: 0 };
        crate::job::prepare::output_fields(&self.spec, &[planned], self.lookup.as_deref())
    }

    /// A record stream's records: each one JSON object.
    fn records(&mut self, shard_name: &str, records: Vec<SourceRecord>, cut: &mut Vec<Batch<Item>>) -> Result<()> {
        if self.encoding.is_none() {
            self.encoding(self.spec.output_fields.clone())?;
        }
        let shard = self.shared.lock().expect("state lock").shard(shard_name);
        let first = *self.next_record.get(&shard).unwrap_or(&1);
        self.next_record.insert(shard, first + records.len() as u64);
        let mut readies = Vec::with_capacity(records.len());
        let prep = self.prep.clone();
        let encoder = self.encoder.as_mut().expect("the encoding is fixed");
        let mut session = prep.pipeline.session();
        for (number, r) in (first..).zip(records) {
            // The record number counts this run's records of the shard; the position names it.
            let origin =
                Origin { job: 0, input: shard_name, input_index: shard, record: number, line: 1, raw: &r.data };
            let outcome = match serde_json::from_slice::<crate::record::Record>(&r.data) {
                Ok(rec) => prep.pipeline.process(rec, &origin, &mut session),
                Err(e) => Outcome::Rejected(origin.reject(Fault::new(None, "json", format!("not a JSON object: {e}")))),
            };
            let ready = prep.ready(outcome, shard_name, r.arrival_ms, encoder);
            readies.push((number, (r.pos, r.arrival_ms, r.ack), ready));
        }
        if let Some(e) = session.take_error() {
            return Err(e);
        }
        drop(session);
        let shared = self.shared.clone();
        let mut sh = shared.lock().expect("state lock");
        for (number, at, ready) in readies {
            self.place(&mut sh, shard, number, at, ready, cut);
        }
        Ok(())
    }

    /// Whether `partition` may take a record arriving at `arrival_ms`: it is active already,
    /// or fewer than `max_partitions` partitions took a record in the last `max_age_s` (at
    /// least a minute). A template whose values change on every record (a timestamp to the
    /// second, a user id) would otherwise write a file, and a ledger write, per record.
    fn admit(active: &mut HashMap<String, i64>, config: &StreamConfig, partition: &str, arrival_ms: i64) -> bool {
        if let Some(last) = active.get_mut(partition) {
            *last = (*last).max(arrival_ms);
            return true;
        }
        if active.len() >= config.max_partitions {
            let window_ms = i64::from(config.max_age_s.max(60)) * 1000;
            active.retain(|_, last| *last >= arrival_ms - window_ms);
        }
        if active.len() >= config.max_partitions {
            return false;
        }
        active.insert(partition.to_string(), arrival_ms);
        true
    }

    /// Account for one record: skip it if a file already holds it, else buffer it. `number`
    /// counts the shard's records in this run.
    fn place(
        &mut self,
        sh: &mut Shared,
        shard: u32,
        number: u64,
        (pos, arrival_ms, ack): (Pos, i64, Option<String>),
        ready: Ready,
        cut: &mut Vec<Batch<Item>>,
    ) {
        self.counts.records += 1;
        let Shared { tracks, saved, acks, .. } = sh;
        let track = &mut tracks[shard as usize];
        let ordinal = track.arrive(pos.clone());
        let skip = |track: &mut Track, acks: &mut Vec<String>, ack: Option<String>| {
            track.done(ordinal);
            acks.extend(ack);
        };
        if saved.before_checkpoint(&track.shard, &pos) {
            skip(track, acks, ack);
            self.counts.skipped += 1;
            return;
        }
        // A record already in a file is skipped; one over the partition budget is a reject.
        let ready = match ready {
            Ready::Row { partition, .. } if saved.covers(&partition, &track.shard, &pos) => {
                skip(track, acks, ack);
                self.counts.skipped += 1;
                return;
            }
            Ready::Row { partition, line } if !Self::admit(&mut self.active, &self.config, &partition, arrival_ms) => {
                Ready::Rejected(over_budget(&self.config, &partition, &track.shard, &line))
            }
            other => other,
        };
        let (partition, line) = match ready {
            Ready::Filtered => {
                skip(track, acks, ack);
                self.counts.filtered += 1;
                return;
            }
            Ready::Row { partition, line } => {
                self.counts.written += 1;
                (partition, line)
            }
            Ready::Rejected(mut reject) => {
                let errors = self.encoding.as_ref().map(|e| e.errors.as_str()).unwrap_or_default();
                let partition = format!("{errors}/{}", ms_time(arrival_ms).format("dt=%Y-%m-%d"));
                if saved.covers(&partition, &track.shard, &pos) {
                    skip(track, acks, ack);
                    self.counts.skipped += 1;
                    return;
                }
                self.counts.rejected += 1;
                reject.record = number;
                let mut line =
                    serde_json::to_vec(&ErrorLine { shard: &track.shard, position: pos.to_string(), reject })
                        .expect("a reject serializes");
                line.push(b'\n');
                (partition, line)
            }
        };
        let bytes = line.len();
        let item = Item { shard, ordinal, pos, arrival_ms, payload: Payload::Line(line), ack };
        cut.extend(self.batcher.push(&partition, item, bytes, now_ms()));
    }
}

/// The reject of a record whose partition would pass the stream's partition budget.
fn over_budget(config: &StreamConfig, partition: &str, shard: &str, line: &[u8]) -> Reject {
    let shown: String = partition.chars().take(80).collect();
    Reject {
        input: shard.to_string(),
        record: 0,
        line: 0,
        field: None,
        rule: "stream.max_partitions".into(),
        message: format!(
            "{} partitions took records in the last {} s, the most [stream] max_partitions allows; {shown:?} would be one more: \
             partition by fields with fewer values, or raise max_partitions",
            config.max_partitions,
            config.max_age_s.max(60)
        ),
        raw: String::from_utf8_lossy(line).trim_end().to_string(),
    }
}

/// A rejected stream record, as error files hold it.
#[derive(Serialize)]
struct ErrorLine<'a> {
    shard: &'a str,
    position: String,
    #[serde(flatten)]
    reject: Reject,
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS`, or a date.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// What the writer wrote.
#[derive(Default)]
struct Written {
    files: u64,
    error_files: u64,
    sizes: Vec<u64>,
    cuts: BTreeMap<String, u64>,
}

/// The writer task: cut buffers into files, announced before and checkpointed after.
struct Writer {
    dest: Arc<dyn ObjectStore>,
    ledger: Arc<dyn StateStore>,
    name: String,
    persist: bool,
    shared: Arc<Mutex<Shared>>,
    schema: Option<arrow_schema::SchemaRef>,
    spec: JobSpec,
    /// The queue whose messages are deleted once their records are in files.
    queue: Option<Arc<dyn crate::queue::Queue>>,
}

/// A file to write.
struct FilePlan {
    path: String,
    errors: bool,
    covered: Vec<Covered>,
    batch: Batch<Item>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Group>) -> Result<Written> {
        let mut written = Written::default();
        while let Some(group) = rx.recv().await {
            let last = group.last;
            let result = self.group(group, &mut written).await;
            if let Err(e) = result {
                // Stop the reader: it sees the channel closed.
                rx.close();
                return Err(e);
            }
            if last {
                break;
            }
        }
        Ok(written)
    }

    async fn group(&mut self, group: Group, written: &mut Written) -> Result<()> {
        let Group { batches, encoding, last } = group;
        let plans: Vec<FilePlan> = {
            let sh = self.shared.lock().expect("state lock");
            batches.into_iter().map(|b| plan_file(&sh, b, &encoding)).collect()
        };
        if plans.is_empty() && !last {
            return Ok(());
        }
        if self.persist && !plans.is_empty() {
            let pending = plans.iter().map(|p| Pending { name: p.path.clone(), covered: p.covered.clone() });
            self.save(|saved| saved.pending.extend(pending)).await?;
        }
        if encoding.format == OutputFormat::Parquet && self.schema.is_none() {
            let fields = encoding.fields.as_deref().cloned().unwrap_or_default();
            self.schema = Some(crate::parquet::schema(&self.spec, &fields)?);
        }
        // Encode on the blocking pool (the reader keeps the other core), then put.
        let mut encoded = Vec::new();
        for plan in plans {
            let (encoding, schema) = (encoding.clone(), self.schema.clone());
            let job = tokio::task::spawn_blocking(move || {
                let bytes = encode_file(&plan, &encoding, schema);
                (plan, bytes)
            });
            encoded.push(job);
        }
        let mut done: Vec<FilePlan> = Vec::new();
        for job in encoded {
            let (plan, bytes) = job.await.map_err(|e| Error::backend("stream", "encoding a file", e))?;
            let bytes = bytes?;
            let size = bytes.len() as u64;
            crate::bucket::put(self.dest.as_ref(), &plan.path, bytes).await?;
            tracing::info!(path = %plan.path, records = plan.batch.items.len(), bytes = size, cut = ?plan.batch.cut, "stream file written");
            match plan.errors {
                true => written.error_files += 1,
                false => {
                    written.files += 1;
                    written.sizes.push(size);
                }
            }
            *written.cuts.entry(cut_name(plan.batch.cut).to_string()).or_default() += 1;
            done.push(plan);
        }
        // Written: its records are accounted for, and the checkpoints move.
        let names: Vec<String> = done.iter().map(|p| p.path.clone()).collect();
        {
            let mut sh = self.shared.lock().expect("state lock");
            for p in &mut done {
                for item in &mut p.batch.items {
                    sh.tracks[item.shard as usize].done(item.ordinal);
                    sh.acks.extend(item.ack.take());
                }
            }
        }
        if self.persist {
            self.save(move |saved| {
                saved.pending.retain(|p| !names.contains(&p.name));
                saved.covered.extend(done.into_iter().flat_map(|p| p.covered));
            })
            .await?;
        }
        if let Some(queue) = &self.queue {
            let acks = std::mem::take(&mut self.shared.lock().expect("state lock").acks);
            let sent = futures::future::join_all(acks.iter().map(|r| queue.ack(r))).await;
            if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
                // The messages come again, and their records go into files again.
                tracing::warn!("deleting delivered messages: {e}");
            }
        }
        Ok(())
    }

    /// Change the state and store it (with the tracks' checkpoints) under the next version.
    async fn save(&self, change: impl FnOnce(&mut Saved)) -> Result<()> {
        let (doc, version) = {
            let mut sh = self.shared.lock().expect("state lock");
            let Shared { tracks, saved, version, .. } = &mut *sh;
            change(saved);
            saved.advance(tracks);
            (serde_json::to_string(saved).expect("state serializes"), *version)
        };
        if !self.ledger.put_checkpoint(&self.name, version, &doc).await? {
            return Err(taken(&self.name));
        }
        self.shared.lock().expect("state lock").version = version + 1;
        Ok(())
    }
}

fn cut_name(c: Cut) -> &'static str {
    match c {
        Cut::Size => "size",
        Cut::Records => "records",
        Cut::Age => "age",
        Cut::Open => "open_partitions",
        Cut::Memory => "memory",
        Cut::Drain => "end",
    }
}

/// A cut buffer's file: what it covers per shard, and its name from that.
fn plan_file(sh: &Shared, batch: Batch<Item>, encoding: &Encoding) -> FilePlan {
    let mut ranges: BTreeMap<u32, (Pos, Pos)> = BTreeMap::new();
    for item in &batch.items {
        ranges
            .entry(item.shard)
            .and_modify(|r| r.1 = item.pos.clone())
            .or_insert_with(|| (item.pos.clone(), item.pos.clone()));
    }
    let covered: Vec<Covered> = ranges
        .into_iter()
        .map(|(shard, (first, last))| Covered {
            partition: batch.partition.clone(),
            shard: sh.tracks[shard as usize].shard.clone(),
            first: first.to_string(),
            last: last.to_string(),
        })
        .collect();
    let errors = batch.partition == encoding.errors || batch.partition.starts_with(&format!("{}/", encoding.errors));
    let first_arrival = batch.items.iter().map(|i| i.arrival_ms).min().unwrap_or(0);
    let file = format!(
        "part-{}-{}.{}",
        ms_time(first_arrival).format("%Y%m%dT%H%M%SZ"),
        state::file_id(&covered),
        encoding.extension(errors)
    );
    let path = match batch.partition.as_str() {
        "" => file,
        p => format!("{p}/{file}"),
    };
    FilePlan { path, errors, covered, batch }
}

/// A file's bytes: its records encoded, then compressed.
fn encode_file(plan: &FilePlan, encoding: &Encoding, schema: Option<arrow_schema::SchemaRef>) -> Result<Vec<u8>> {
    if !plan.errors && encoding.format == OutputFormat::Parquet {
        let schema = schema.expect("a Parquet schema before Parquet files");
        let mut enc = crate::parquet::ParquetEncoder::new(schema, 64 * 1024);
        let mut lines = Vec::with_capacity(plan.batch.bytes);
        for item in &plan.batch.items {
            let Payload::Line(line) = &item.payload;
            lines.extend_from_slice(line);
        }
        enc.push_jsonl(&plan.path, &lines)?;
        return enc.finish();
    }
    let mut raw = Vec::with_capacity(plan.batch.bytes + 1024);
    if !plan.errors && encoding.format == OutputFormat::Csv {
        if let Some(fields) = &encoding.fields {
            raw.extend_from_slice(&Encoder::header(fields)?);
        }
    }
    for item in &plan.batch.items {
        let Payload::Line(line) = &item.payload;
        raw.extend_from_slice(line);
    }
    let fail = |e: std::io::Error| Error::backend("compress", format!("compressing {}", plan.path), e);
    match encoding.compression {
        Compression::None => Ok(raw),
        Compression::Zstd => zstd::bulk::compress(&raw, 3).map_err(fail),
        _ => {
            let level = libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("a libdeflate level");
            let mut gz = libdeflater::Compressor::new(level);
            let mut out = vec![0; gz.gzip_compress_bound(raw.len())];
            let n = gz.gzip_compress(&raw, &mut out).map_err(|e| fail(std::io::Error::other(e)))?;
            out.truncate(n);
            Ok(out)
        }
    }
}

/// gzip's level for stream files: fast, since a stream's files are written as it runs. On the
/// bench's events, libdeflate's level 1 compresses at 177 MB/s to 51.0% of the text, where
/// zlib-rs took 84 MB/s for 51.3% (its level 2) and 120 MB/s for 65% (its level 1); libdeflate's
/// level 6 gains 3.5% of size for 70% more time.
const GZIP_LEVEL: i32 = 1;
