//! The reader: deliveries in, records through the pipeline and into buffers, in order; cut
//! buffers out to the writer, with what it met since its last [`Group`].
//!
//! A file's or standard input's blocks are processed by [`Helpers`] as they arrive; the reader
//! places their records in block order, so a shard's records reach the buffers in the order
//! they were read. A record stream's records are processed here. The reader decides where a
//! record goes ([`Placer`]) from the state the run started with: within a run a source
//! delivers a record once, so only what earlier runs wrote can hold it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::batch::{Batch, Batcher, Limits};
use super::file::{ms_time, Encoding, Item};
use super::helpers::Helpers;
use super::partition::Template;
use super::prep::{BlockDone, BlockJob, Prep, Ready};
use super::report::Report;
use super::source::{Block, Delivery, SourceRecord};
use super::state::{Pos, Saved};
use super::writer::{Arrival, Group};
use crate::config::{Compression, Format, OutputFormat, StreamConfig};
use crate::error::{Error, Result};
use crate::lookup::LookupTable;
use crate::pipeline::{CsvLayout, Encoder, Pipeline};
use crate::record::{Fault, Origin, Outcome, Reject};
use crate::spec::JobSpec;

/// The time now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A shard the reader met.
struct ShardRead {
    name: String,
    /// The number of its next record in this run (its first is 1).
    next: u64,
    /// Its CSV layout, from its header.
    layout: Option<Arc<CsvLayout>>,
}

/// What the writer is told with the next group.
#[derive(Default)]
struct News {
    shards: Vec<String>,
    arrivals: Vec<Arrival>,
    ended: Vec<u32>,
}

/// The reader, run on a blocking thread.
pub struct Reader {
    prep: Arc<Prep>,
    spec: JobSpec,
    lookup: Option<Arc<LookupTable>>,
    batcher: Batcher<Item>,
    encoding: Option<Encoding>,
    config: StreamConfig,
    encoder: Option<Encoder>,
    placer: Placer,
    shards: Vec<ShardRead>,
    index: HashMap<String, u32>,
    helpers: Helpers,
    news: News,
    out: mpsc::Sender<Group>,
    idle: Option<Duration>,
    counts: Report,
}

impl Reader {
    /// A reader of a job's records under `config`, starting from `saved`, sending groups to
    /// `out`, and stopping once `idle` passes without a record.
    pub fn new(
        spec: &JobSpec,
        lookup: Option<Arc<LookupTable>>,
        config: &StreamConfig,
        saved: Saved,
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
        if spec.output_format == Some(OutputFormat::Parquet)
            && spec.output_fields.is_none()
            && !spec.transforms.is_empty()
        {
            return Err(Error::config(
                "output.fields",
                "Parquet files need the output fields: list them in [output] fields",
            ));
        }
        let errors = config.errors.trim_matches('/').to_string();
        let prep = Arc::new(Prep {
            pipeline: Pipeline::new(spec, lookup.clone(), spec.output_fields.clone()),
            template,
            time_field: config.time_field.clone(),
            errors: errors.clone(),
        });
        Ok(Reader {
            helpers: Helpers::new(prep.clone()),
            prep,
            spec: spec.clone(),
            lookup,
            batcher: Batcher::new(limits),
            encoding: None,
            config: config.clone(),
            encoder: None,
            placer: Placer { saved, active: HashMap::new(), config: config.clone(), errors },
            shards: Vec::new(),
            index: HashMap::new(),
            news: News::default(),
            out,
            idle,
            counts: Report::default(),
        })
    }

    /// Read until the channel closes, `stop` completes or the stream is idle for long enough;
    /// then send what is buffered, as the last group. The reader's counts.
    pub fn run(
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
            let busy = self.helpers.busy().then_some(Duration::from_millis(1));
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
                    let shard = self.shard(&shard);
                    self.news.ended.push(shard);
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
                    if self.idle.is_some_and(|d| last_record.elapsed() >= d) && !self.helpers.busy() {
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

    /// The index of shard `name`, which the writer learns with the next group if it is new.
    fn shard(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.shards.len() as u32;
        self.shards.push(ShardRead { name: name.to_string(), next: 1, layout: None });
        self.index.insert(name.to_string(), i);
        self.news.shards.push(name.to_string());
        i
    }

    /// The numbers of `n` more records of `shard`: the first, and the next after them.
    fn number(&mut self, shard: u32, n: usize) -> u64 {
        let s = &mut self.shards[shard as usize];
        let first = s.next;
        s.next += n as u64;
        first
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

    /// Send cut buffers to the writer, with what it must learn first.
    fn send(&mut self, batches: Vec<Batch<Item>>, last: bool) -> Result<()> {
        let encoding = match &self.encoding {
            Some(e) => e.clone(),
            None => self.encoding(self.spec.output_fields.clone())?,
        };
        let News { shards, arrivals, ended } = std::mem::take(&mut self.news);
        let group = Group { shards, arrivals, ended, batches, encoding, last };
        // A send fails only when the writer stopped on an error, which it returns.
        self.out
            .blocking_send(group)
            .map_err(|_| Error::backend("stream", "the writer", std::io::Error::other("stopped")))
    }

    /// A file's or standard input's block, given to the helpers to process as a batch job's
    /// chunk.
    fn block(&mut self, block: Block) -> Result<()> {
        let shard = self.shard(&block.shard);
        if block.format == Format::Csv && self.shards[shard as usize].layout.is_none() {
            let header = block.header.as_deref().map(Vec::as_slice);
            let layout = self.prep.pipeline.csv_layout(header, &block.shard)?;
            self.shards[shard as usize].layout = Some(Arc::new(layout));
            if self.encoding.is_none() {
                let fields = self.output_fields(header.map(<[String]>::to_vec), &block.shard);
                self.encoding(fields)?;
            }
        } else if self.encoding.is_none() {
            self.encoding(self.spec.output_fields.clone())?;
        }
        let encoding = self.encoding.as_ref().expect("the encoding is fixed");
        let job = BlockJob {
            layout: self.shards[shard as usize].layout.clone(),
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
            let first = self.number(shard, records.len());
            for (n, ready) in (first..).zip(records) {
                self.place(shard, n, (Pos::N(n), arrival_ms, None), ready, cut);
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
        let shard = self.shard(shard_name);
        let first = self.number(shard, records.len());
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
        for (number, at, ready) in readies {
            self.place(shard, number, at, ready, cut);
        }
        Ok(())
    }

    /// Account for one record: settled if a file already holds it or a transform dropped it,
    /// else buffered. `number` counts the shard's records in this run.
    fn place(
        &mut self,
        shard: u32,
        number: u64,
        (pos, arrival_ms, ack): (Pos, i64, Option<String>),
        ready: Ready,
        cut: &mut Vec<Batch<Item>>,
    ) {
        self.counts.records += 1;
        let placement = self.placer.place(&self.shards[shard as usize].name, &pos, number, arrival_ms, ready);
        let (partition, line) = match placement {
            Placement::Skipped | Placement::Filtered => {
                match placement {
                    Placement::Skipped => self.counts.skipped += 1,
                    _ => self.counts.filtered += 1,
                }
                self.news.arrivals.push(Arrival::Settled { shard, pos, ack });
                return;
            }
            Placement::Row { partition, line } => {
                self.counts.written += 1;
                (partition, line)
            }
            Placement::Reject { partition, line } => {
                self.counts.rejected += 1;
                (partition, line)
            }
        };
        self.news.arrivals.push(Arrival::Buffered { shard, pos: pos.clone() });
        let bytes = line.len();
        // The writer's track of the shard gives its records the same ordinals, in order.
        let item = Item { shard, ordinal: number - 1, pos, arrival_ms, line, ack };
        cut.extend(self.batcher.push(&partition, item, bytes, now_ms()));
    }
}

/// Where a record goes.
#[derive(Debug, PartialEq)]
enum Placement {
    /// A file of an earlier run holds it.
    Skipped,
    /// A transform dropped it.
    Filtered,
    /// Into its partition's buffer, as this line.
    Row { partition: String, line: Vec<u8> },
    /// Into an error file of the day it arrived, as this error line.
    Reject { partition: String, line: Vec<u8> },
}

/// Decides where records go: from what earlier runs wrote, and the partition budget.
struct Placer {
    /// The state the run started with.
    saved: Saved,
    /// Partitions that took a record lately, with the arrival of their last one: at most
    /// `max_partitions` at once ([`Placer::admit`]).
    active: HashMap<String, i64>,
    config: StreamConfig,
    /// The errors prefix, without slashes around it.
    errors: String,
}

impl Placer {
    fn place(&mut self, shard: &str, pos: &Pos, number: u64, arrival_ms: i64, ready: Ready) -> Placement {
        if self.saved.before_checkpoint(shard, pos) {
            return Placement::Skipped;
        }
        // A record already in a file is skipped; one over the partition budget is a reject.
        let mut reject = match ready {
            Ready::Filtered => return Placement::Filtered,
            Ready::Row { partition, .. } if self.saved.covers(&partition, shard, pos) => return Placement::Skipped,
            Ready::Row { partition, line } if self.admit(&partition, arrival_ms) => {
                return Placement::Row { partition, line }
            }
            Ready::Row { partition, line } => over_budget(&self.config, &partition, shard, &line),
            Ready::Rejected(reject) => reject,
        };
        let partition = format!("{}/{}", self.errors, ms_time(arrival_ms).format("dt=%Y-%m-%d"));
        if self.saved.covers(&partition, shard, pos) {
            return Placement::Skipped;
        }
        reject.record = number;
        let mut line =
            serde_json::to_vec(&ErrorLine { shard, position: pos.to_string(), reject }).expect("a reject serializes");
        line.push(b'\n');
        Placement::Reject { partition, line }
    }

    /// Whether `partition` may take a record arriving at `arrival_ms`: it is active already,
    /// or fewer than `max_partitions` partitions took a record in the last `max_age_s` (at
    /// least a minute). A template whose values change on every record (a timestamp to the
    /// second, a user id) would otherwise write a file, and a ledger write, per record.
    fn admit(&mut self, partition: &str, arrival_ms: i64) -> bool {
        let (active, config) = (&mut self.active, &self.config);
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
