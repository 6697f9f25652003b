//! The reader: deliveries in, records through the pipeline and into buffers, in order; cut
//! buffers out to the writer, with what it met since its last [`Group`].
//!
//! A file's or standard input's blocks are processed by [`Helpers`] as they arrive; the reader
//! places their records in block order, so a shard's records reach the buffers in the order
//! they were read. A record stream's records are processed here. Where a record goes is the
//! [`Placer`]'s decision; the reader carries it out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::batch::{Batch, Batcher, Limits};
use super::dedup::{First, Window};
use super::file::{Encoding, Item};
use super::helpers::Helpers;
use super::partition::Template;
use super::place::{Placement, Placer};
use super::prep::{BlockDone, BlockJob, Prep, Ready};
use super::report::Report;
use super::source::{Block, Delivery, SourceRecord};
use super::spool::{Body, Spooler, PIECE_BYTES};
use super::state::{Pos, Saved};
use super::writer::{Arrival, Group};
use crate::backends::lookup::LookupTable;
use crate::engine::pipeline::{Encoder, Input, Pipeline};
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::model::config::{Compression, Format, OutputFormat, StreamConfig};
use crate::model::record::{Fault, Origin, Outcome, SinkItem, StreamPlace};

/// The time now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    super::prep::clock_ms()
}

/// The most entries (a record each, or a run of buffered ones) the reader notes for the
/// writer before it tells it, cut buffers or not:
/// records skipped on a restart (a file's every record, up to its checkpoint) cut nothing, and
/// the writer's checkpoints move over them as they are told, in memory bounded by this.
const MAX_NEWS: usize = 1 << 16;

/// A shard the reader met.
struct ShardRead {
    name: String,
    /// The number of its next record in this run (its first is 1).
    next: u64,
    /// How the pipeline reads it (for CSV, the layout its header gives), from its first block.
    input: Option<Arc<Input>>,
}

/// What the writer is told with the next group.
#[derive(Default)]
struct News {
    shards: Vec<String>,
    arrivals: Vec<Arrival>,
    ended: Vec<u32>,
    /// Kept records' sink items, in order.
    items: Vec<SinkItem>,
}

/// Where a stream's records go besides its reader, and its source's name.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The source's name for `$meta.source` (see [`Prep::source`]).
    pub source: Option<String>,
    /// The job's sink, when kept records go there: a record it would refuse (too large, an
    /// empty key) is a reject.
    pub sink: Option<Arc<dyn crate::backends::sink::Sink>>,
    /// Kept records go into files (else only rejects do).
    pub files: bool,
}

impl Default for Targets {
    fn default() -> Self {
        Targets { source: None, sink: None, files: true }
    }
}

/// The longest a kept record waits for its sink write when no file is due sooner.
const SINK_DELAY: Duration = Duration::from_secs(1);

/// The reader, run on a blocking thread.
pub struct Reader {
    prep: Arc<Prep>,
    spec: JobSpec,
    lookup: Option<Arc<LookupTable>>,
    batcher: Batcher<Body>,
    encoding: Option<Encoding>,
    /// Where buffers compress their records to, once the encoding is fixed.
    scratch: std::path::PathBuf,
    spooler: Option<Arc<Spooler>>,
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
    /// A queue's message ids taken lately, to drop its duplicates (`[stream] dedup_window_s`).
    dedup: Option<Window>,
}

impl Reader {
    /// A reader of a job's records under `config`, starting from `saved`, sending groups to
    /// `out`, and stopping once `idle` passes without a record; buffers spool to `scratch`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scratch: std::path::PathBuf,
        spec: &JobSpec,
        lookup: Option<Arc<LookupTable>>,
        config: &StreamConfig,
        saved: Saved,
        out: mpsc::Sender<Group>,
        idle: Option<Duration>,
        targets: Targets,
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
        let pipeline = Pipeline::new(spec, lookup.clone(), spec.output_fields.clone());
        let pipeline = match &targets.sink {
            Some(_) => pipeline,
            None => pipeline.without_place_keys(),
        };
        let prep = Arc::new(Prep {
            pipeline: pipeline.with_sink_limits(targets.sink.clone()),
            template,
            time_field: config.time_field.clone(),
            errors: errors.clone(),
            source: targets.source,
            sink: targets.sink.is_some(),
            files: targets.files,
        });
        Ok(Reader {
            helpers: Helpers::new(prep.clone()),
            prep,
            spec: spec.clone(),
            lookup,
            batcher: Batcher::new(limits),
            encoding: None,
            scratch,
            spooler: None,
            config: config.clone(),
            encoder: None,
            placer: Placer { saved, active: HashMap::default(), config: config.clone(), errors, typed_rows: None },
            shards: Vec::new(),
            index: HashMap::new(),
            news: News::default(),
            out,
            idle,
            counts: Report::default(),
            dedup: (config.dedup_window_s > 0).then(|| Window::new(config.dedup_window_s)),
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
            // Records met but not yet told (sink writes, checkpoints without files) go soon.
            let told = (!self.news.items.is_empty() || !self.prep.files && !self.news.arrivals.is_empty())
                .then_some(SINK_DELAY);
            let wait = [wait, idle_left, busy, told].into_iter().flatten().min().unwrap_or(Duration::from_secs(3600));
            let next = handle.block_on(async {
                tokio::select! {
                    d = rx.recv() => d.map_or(Next::Closed, Next::Got),
                    _ = tokio::time::sleep(wait) => Next::Tick,
                    _ = &mut stop => Next::Stop,
                }
            });
            let mut cut = Vec::new();
            let tick = matches!(next, Next::Tick);
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
            let sink_due = self.news.items.len() >= self.spec.sink.batch.max(1) * 4
                || tick && (!self.news.items.is_empty() || !self.prep.files && !self.news.arrivals.is_empty());
            if !cut.is_empty() || self.news.arrivals.len() >= MAX_NEWS || sink_due {
                self.send(cut, false)?;
            }
        }
        drop(rx);
        let rest = self.batcher.drain();
        self.send(rest, true)?;
        if let Some(s) = &self.spooler {
            self.counts.buffered_peak_bytes = s.gauges.peak.load(std::sync::atomic::Ordering::Relaxed) as u64;
            self.counts.spooled_bytes = s.gauges.spooled.load(std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.counts)
    }

    /// The index of shard `name`, which the writer learns with the next group if it is new.
    fn shard(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.shards.len() as u32;
        self.shards.push(ShardRead { name: name.to_string(), next: 1, input: None });
        self.index.insert(name.to_string(), i);
        self.news.shards.push(name.to_string());
        i
    }

    /// Number `n` more records of `shard`: the first one's number.
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
        let schema = match format {
            OutputFormat::Parquet => {
                Some(crate::engine::parquet::schema(&self.spec, fields.as_deref().unwrap_or_default())?)
            }
            _ => None,
        };
        if format == OutputFormat::Parquet {
            self.placer.typed_rows = fields.clone();
        }
        self.encoder = Some(self.prep.encoder(e.line_format(), fields));
        let spooler = Spooler::new(self.scratch.clone(), e.clone(), PIECE_BYTES, schema);
        self.spooler = Some(Arc::new(spooler));
        self.encoding = Some(e.clone());
        Ok(e)
    }

    /// Send cut buffers to the writer, with what it must learn first.
    fn send(&mut self, batches: Vec<Batch<Body>>, last: bool) -> Result<()> {
        let encoding = match &self.encoding {
            Some(e) => e.clone(),
            None => self.encoding(self.spec.output_fields.clone())?,
        };
        let News { shards, arrivals, ended, items } = std::mem::take(&mut self.news);
        let group = Group { shards, arrivals, ended, batches, encoding, items, last };
        // A send fails only when the writer stopped on an error, which it returns.
        self.out
            .blocking_send(group)
            .map_err(|_| Error::internal("stream", "the writer", std::io::Error::other("stopped")))
    }

    /// A file's or standard input's block, given to the helpers to process as a batch job's
    /// chunk.
    fn block(&mut self, block: Block) -> Result<()> {
        let shard = self.shard(&block.shard);
        let header = block.header.as_deref().map(Vec::as_slice);
        let input = match &self.shards[shard as usize].input {
            Some(input) => input.clone(),
            None => {
                let input = Arc::new(self.prep.pipeline.input(0, shard, &block.shard, block.format, header)?);
                self.shards[shard as usize].input = Some(input.clone());
                input
            }
        };
        if self.encoding.is_none() {
            let fields = match block.format {
                Format::Csv => self.output_fields(header.map(<[String]>::to_vec), &block.shard),
                _ => self.spec.output_fields.clone(),
            };
            self.encoding(fields)?;
        }
        let encoding = self.encoding.as_ref().expect("the encoding is fixed");
        let job = BlockJob {
            input,
            format: encoding.line_format(),
            fields: encoding.fields.as_deref().cloned(),
            shard,
            block,
        };
        self.helpers.give(job)
    }

    /// Place the records of processed blocks, in the order the blocks came: all of them if
    /// `all`, else those done (waiting for the oldest while the helpers have too many).
    fn collect(&mut self, all: bool, cut: &mut Vec<Batch<Body>>) -> Result<()> {
        while let Some(done) = self.helpers.next(all || self.helpers.full()) {
            let BlockDone { shard, arrival_ms, records } = done?;
            let first = self.number(shard, records.len());
            // One clock read per block: its records are placed within microseconds.
            let now = now_ms();
            for (n, ready) in (first..).zip(records) {
                self.place(shard, n, (Pos::N(n), arrival_ms, None), ready, now, cut);
            }
        }
        Ok(())
    }

    /// The output fields of CSV records with this header, as a batch job's.
    fn output_fields(&self, header: Option<Vec<String>>, location: &str) -> Option<Vec<String>> {
        let object = crate::backends::bucket::InputObject {
            location: location.to_string(),
            path: String::new(),
            size: 0,
            version: String::new(),
            e_tag: None,
            format: Format::Csv,
            compression: Compression::None,
        };
        let planned =
            crate::batch::job::PlannedInput { object, header, records: 0, plain_copy: false, windows_bytes: 0 };
        crate::batch::job::prepare::output_fields(&self.spec, &[planned], self.lookup.as_deref())
    }

    /// A record stream's records: each one JSON object.
    fn records(&mut self, shard_name: &str, records: Vec<SourceRecord>, cut: &mut Vec<Batch<Body>>) -> Result<()> {
        if self.encoding.is_none() {
            self.encoding(self.spec.output_fields.clone())?;
        }
        let shard = self.shard(shard_name);
        let first = self.number(shard, records.len());
        let mut readies = Vec::with_capacity(records.len());
        let prep = self.prep.clone();
        let encoder = self.encoder.as_mut().expect("the encoding is fixed");
        let mut session = prep.pipeline.session();
        let now = now_ms();
        for (number, r) in (first..).zip(records) {
            // The record number counts this run's records of the shard; the position names it.
            let (sequence, position) = match &r.pos {
                Pos::S(s) => (Some(&**s), None),
                Pos::N(n) => (None, Some(*n)),
            };
            let place = StreamPlace {
                source: prep.source.as_deref().unwrap_or(shard_name),
                sequence,
                position,
                arrival_ms: r.arrival_ms,
            };
            let origin = Origin {
                job: 0,
                input: shard_name,
                input_index: shard,
                record: number,
                line: 1,
                raw: &r.data,
                stream: Some(place),
            };
            let outcome = match serde_json::from_slice::<crate::model::record::Record>(&r.data) {
                Ok(rec) => prep.pipeline.process(rec, &origin, &mut session),
                Err(e) => Outcome::Rejected(origin.reject(Fault::new(None, "json", format!("not a JSON object: {e}")))),
            };
            let ready = prep.ready(outcome, shard_name, r.arrival_ms, now, encoder);
            readies.push((number, (r.pos, r.arrival_ms, r.ack), r.id, ready));
        }
        if let Some(e) = session.take_error() {
            return Err(e);
        }
        drop(session);
        for (number, at, id, ready) in readies {
            let Some((id, mut window)) = id.zip(self.dedup.take()) else {
                self.place(shard, number, at, ready, now_ms(), cut);
                continue;
            };
            let now = now_ms();
            match window.first(&id, now) {
                Some(first) => self.duplicate(shard, at, first),
                None => {
                    let placed = self.place(shard, number, at, ready, now, cut);
                    window.note(&id, placed.as_deref(), now);
                }
            }
            self.counts.dedup_forgotten = window.forgotten;
            self.dedup = Some(window);
        }
        Ok(())
    }

    /// A queue's message delivered again, whose first copy went to `first`: not processed, and
    /// acknowledged only once the first copy is accounted for. If the first copy waits in its
    /// partition's open buffer, the duplicate's acknowledgement goes with that buffer's file;
    /// else the first copy is settled or in a file already cut, which the writer writes before
    /// the next group, and the duplicate is settled with that group.
    fn duplicate(&mut self, shard: u32, (pos, _, ack): (Pos, i64, Option<String>), first: First) {
        self.counts.records += 1;
        self.counts.duplicates += 1;
        let ack = match (&first, ack) {
            (First::Buffered(partition), Some(ack)) => match self.batcher.items_mut(partition) {
                Some(body) => {
                    body.acks.push(ack);
                    None
                }
                None => Some(ack),
            },
            (_, ack) => ack,
        };
        self.news.arrivals.push(Arrival::Settled { shard, pos, ack });
    }

    /// Note a buffered record for the writer: the run of the last one noted grows when this one
    /// comes next in its shard (a block's records do).
    fn buffered(&mut self, shard: u32, pos: &Pos) {
        if let (Some(Arrival::Buffered { shard: s, pos: Pos::N(first), len }), Pos::N(n)) =
            (self.news.arrivals.last_mut(), pos)
        {
            if *s == shard && *first + *len == *n {
                *len += 1;
                return;
            }
        }
        self.news.arrivals.push(Arrival::Buffered { shard, pos: pos.clone(), len: 1 });
    }

    /// Account for one record: settled if a file already holds it or a transform dropped it,
    /// else buffered. `number` counts the shard's records in this run; `now_ms` is when it is
    /// placed, for the batcher (read once per block). The partition whose buffer took it, if
    /// one did.
    fn place(
        &mut self,
        shard: u32,
        number: u64,
        (pos, arrival_ms, ack): (Pos, i64, Option<String>),
        ready: Ready,
        now_ms: i64,
        cut: &mut Vec<Batch<Body>>,
    ) -> Option<String> {
        self.counts.records += 1;
        let placement = self.placer.place(&self.shards[shard as usize].name, &pos, number, arrival_ms, ready);
        let count = match &placement {
            Placement::Skipped => &mut self.counts.skipped,
            Placement::Filtered => &mut self.counts.filtered,
            Placement::Row { .. } => &mut self.counts.written,
            Placement::Reject { .. } => &mut self.counts.rejected,
        };
        *count += 1;
        let mut placement = placement;
        if let Placement::Row { item: Some(item), .. } = &mut placement {
            // A block's records are numbered from 1 by its helper: the version is the
            // record's arrival, then its place among the shard's records in this run.
            item.job = arrival_ms.max(0) as u64;
            item.seq = SinkItem::seq_of(shard, number);
        }
        let (partition, line) = match placement {
            Placement::Row { item, .. } if !self.prep.files => {
                // No files: the record is accounted for once its sink write is done, which
                // comes before the group's checkpoints and acknowledgements.
                self.news.items.extend(item.map(|i| *i));
                self.news.arrivals.push(Arrival::Settled { shard, pos, ack });
                return None;
            }
            Placement::Row { partition, line, item } => {
                self.news.items.extend(item.map(|i| *i));
                (partition, line)
            }
            Placement::Reject { partition, line } => (partition, line),
            Placement::Skipped | Placement::Filtered => {
                self.news.arrivals.push(Arrival::Settled { shard, pos, ack });
                return None;
            }
        };
        self.buffered(shard, &pos);
        let bytes = line.len();
        // The writer's track of the shard gives its records the same ordinals, in order.
        let item = Item { shard, ordinal: number - 1, pos, arrival_ms, line, ack };
        let spooler = self.spooler.as_ref().expect("the encoding is fixed before records are placed");
        cut.extend(self.batcher.push(&partition, item, bytes, now_ms, || Body::new(spooler, &partition)));
        Some(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::state::SavedShard;

    /// A record stream's records through the reader: what the writer learns, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_learns_every_record_met_in_order_and_buffered_ones_carry_their_ordinals() {
        let spec = crate::model::config::JobConfig::from_toml("", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let config = StreamConfig { records: Some(2), ..StreamConfig::default() };
        let mut saved = Saved::default();
        saved.shards.insert("s".into(), SavedShard { checkpoint: Some("2".into()), ended: false });
        let (group_tx, mut group_rx) = mpsc::channel(16);
        let reader =
            Reader::new(std::env::temp_dir(), &spec, None, &config, saved, group_tx, None, Targets::default()).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let records = (1..=5)
            .map(|n| SourceRecord {
                pos: Pos::N(n),
                arrival_ms: 0,
                data: format!("{{\"n\":{n}}}").into(),
                ack: Some(format!("m{n}")),
                id: None,
            })
            .collect();
        tx.send(Delivery::Records { shard: "s".into(), records }).await.unwrap();
        tx.send(Delivery::End { shard: "s".into() }).await.unwrap();
        drop(tx);
        let handle = tokio::runtime::Handle::current();
        let counts = tokio::task::spawn_blocking(move || reader.run(rx, Box::pin(std::future::pending()), handle));
        let counts = counts.await.unwrap().unwrap();
        assert_eq!((counts.records, counts.skipped, counts.written), (5, 2, 3));

        let (mut shards, mut arrivals, mut ended, mut items) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while let Some(g) = group_rx.recv().await {
            shards.extend(g.shards);
            ended.extend(g.ended);
            for a in g.arrivals {
                match a {
                    Arrival::Settled { shard, pos, ack } => arrivals.push((shard, pos.to_string(), ack)),
                    // Records numbered one after another come as one run.
                    Arrival::Buffered { shard, pos: Pos::N(first), len } => {
                        arrivals.extend((first..first + len).map(|n| (shard, n.to_string(), None)))
                    }
                    Arrival::Buffered { .. } => panic!("numbered records"),
                }
            }
            for b in g.batches {
                let spans: Vec<_> = b.items.spans().map(|(_, s)| (s.first.to_string(), s.last.to_string())).collect();
                assert!(spans.iter().all(|(first, last)| first.parse::<u64>().unwrap() <= last.parse().unwrap()));
                let acks = b.items.acks.clone();
                items.extend(b.items.ordinals().zip(acks).map(|((_, o), a)| (o, (o + 1).to_string(), Some(a))));
            }
        }
        assert_eq!((shards, ended), (vec!["s".to_string()], vec![0]));
        let at = |n: u64, ack: Option<&str>| (0, n.to_string(), ack.map(String::from));
        assert_eq!(arrivals, [at(1, Some("m1")), at(2, Some("m2")), at(3, None), at(4, None), at(5, None)]);
        let ordinal = |n: u64| (n - 1, n.to_string(), Some(format!("m{n}")));
        assert_eq!(items, [ordinal(3), ordinal(4), ordinal(5)]);
    }

    /// A queue's message delivered again is dropped, and acknowledged with its first copy's
    /// file while that waits in a buffer, or with the next group once it is cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_delivered_again_is_dropped_and_acknowledged_only_after_its_first_copy() {
        let spec = crate::model::config::JobConfig::from_toml("", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let config = StreamConfig { records: Some(3), ..StreamConfig::default() };
        let (group_tx, mut group_rx) = mpsc::channel(16);
        let scratch = tempfile::tempdir().unwrap();
        let reader = Reader::new(
            scratch.path().to_path_buf(),
            &spec,
            None,
            &config,
            Saved::default(),
            group_tx,
            None,
            Targets::default(),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::runtime::Handle::current();
        let read = tokio::task::spawn_blocking(move || reader.run(rx, Box::pin(std::future::pending()), handle));
        // (message id, receipt): m1 twice while buffered, m2 again once its file is cut.
        let deliveries = [("m1", "r1"), ("m1", "r2"), ("m2", "r3"), ("m3", "r4"), ("m2", "r5")];
        let records = deliveries
            .iter()
            .zip(1..)
            .map(|((id, receipt), n)| SourceRecord {
                pos: Pos::N(n),
                arrival_ms: 0,
                data: format!("{{\"id\":\"{id}\"}}").into(),
                ack: Some(receipt.to_string()),
                id: Some(id.to_string()),
            })
            .collect();
        tx.send(Delivery::Records { shard: "q".into(), records }).await.unwrap();
        drop(tx);
        let (mut files, mut settled) = (Vec::new(), Vec::new());
        while let Some(g) = group_rx.recv().await {
            for b in g.batches {
                files.push((b.records, b.items.acks.clone()));
            }
            for a in g.arrivals {
                if let Arrival::Settled { pos, ack, .. } = a {
                    // Acknowledged after this group's files: the one cut before it is among them.
                    settled.push((pos.to_string(), ack, files.len()));
                }
            }
        }
        let counts = read.await.unwrap().unwrap();
        assert_eq!((counts.records, counts.written, counts.duplicates), (5, 3, 2));
        assert_eq!(files, [(3, vec!["r1".to_string(), "r2".into(), "r3".into(), "r4".into()])]);
        assert_eq!(settled, [("2".to_string(), None, 1), ("5".to_string(), Some("r5".to_string()), 1)]);
    }

    /// Records skipped on a restart cut no buffer, but the writer still hears of them, in
    /// bounded groups, and not only at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_that_cut_nothing_reach_the_writer_in_bounded_groups() {
        let spec = crate::model::config::JobConfig::from_toml("", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let mut saved = Saved::default();
        saved.shards.insert("s".into(), SavedShard { checkpoint: Some("1000000".into()), ended: false });
        let (group_tx, mut group_rx) = mpsc::channel(16);
        let reader = Reader::new(
            std::env::temp_dir(),
            &spec,
            None,
            &StreamConfig::default(),
            saved,
            group_tx,
            None,
            Targets::default(),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::runtime::Handle::current();
        let read = tokio::task::spawn_blocking(move || reader.run(rx, Box::pin(std::future::pending()), handle));
        let batch = 10_000;
        for from in (1..=150_000).step_by(batch) {
            let records = (from..from + batch as u64)
                .map(|n| SourceRecord { pos: Pos::N(n), arrival_ms: 0, data: "{}".into(), ack: None, id: None })
                .collect();
            tx.send(Delivery::Records { shard: "s".into(), records }).await.unwrap();
        }
        drop(tx);
        let mut sizes = Vec::new();
        while let Some(g) = group_rx.recv().await {
            assert!(g.batches.is_empty());
            sizes.push((g.arrivals.len(), g.last));
        }
        assert_eq!(read.await.unwrap().unwrap().skipped, 150_000);
        assert_eq!(sizes.iter().map(|s| s.0).sum::<usize>(), 150_000);
        assert!(sizes.len() >= 3 && sizes.iter().all(|s| s.0 < MAX_NEWS + batch), "{sizes:?}");
    }
}
