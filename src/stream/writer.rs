//! The writer task: it owns the stream's state ([`state`](super::state)) from the ledger to
//! the end of the run. The reader tells it, in [`Group`]s, which records it met and which
//! buffers it cut; the writer announces each cut buffer's file in the ledger, writes it,
//! marks its records accounted for, stores the checkpoints they moved, and then has the
//! source acknowledge them.

use std::sync::Arc;

use object_store::ObjectStore;
use tokio::sync::mpsc;

use futures::StreamExt;

use super::batch::Batch;
use super::file::{self, Encoding, FilePlan};
use super::report::Written;
use super::source::RecordSource;
use super::spool::{Body, Output};
use super::state::{Pending, Pos, Saved, Track};
use crate::backends::ledger::StateStore;
use crate::backends::sink::{Sink, SinkItem};
use crate::error::{Error, Result};

/// What the reader tells the writer, in the order it happened.
#[derive(Debug)]
pub struct Group {
    /// Shards the reader met since its last group, by name: their indexes follow on from the
    /// shards before.
    pub shards: Vec<String>,
    /// Records it met since its last group, in order.
    pub arrivals: Vec<Arrival>,
    /// Shards it read to their end.
    pub ended: Vec<u32>,
    /// Cut buffers, each a file to write.
    pub batches: Vec<Batch<Body>>,
    /// Kept records' sink items: upserted before anything else of the group, so that every
    /// checkpoint, acknowledgement or file that covers a record comes after its write.
    pub items: Vec<SinkItem>,
    /// How files are encoded.
    pub encoding: Encoding,
    /// The reader is done: write the state even if nothing changed.
    pub last: bool,
}

/// A record the reader met.
#[derive(Debug)]
pub enum Arrival {
    /// Buffered: accounted for once its file is written. A block's records come numbered
    /// one after another, so the reader notes them as one run, not an entry each.
    Buffered {
        /// Their shard, by index.
        shard: u32,
        /// The first one's position.
        pos: Pos,
        /// How many, numbered on from `pos` (1 for a position that is not a number).
        len: u64,
    },
    /// Accounted for as it came: a file holds it already, or a transform dropped it.
    Settled {
        /// Its shard, by index.
        shard: u32,
        /// Its position.
        pos: Pos,
        /// What acknowledges it.
        ack: Option<String>,
    },
}

/// The writer: cut buffers into files, announced before and checkpointed after.
pub struct Writer {
    dest: Arc<dyn ObjectStore>,
    ledger: Arc<dyn StateStore>,
    /// The consumer, whose state this is.
    name: String,
    /// The state is stored: the source's positions mean something to a later run.
    persist: bool,
    /// This run's name in its files' names, when the state is not stored: each run of a queue
    /// numbers its records from 1, and its files must not take an earlier run's names.
    run: Option<String>,
    /// Per shard, in the reader's order: which records are accounted for.
    tracks: Vec<Track>,
    saved: Saved,
    /// The version of the stored state `saved` replaces next.
    version: u64,
    /// Records accounted for whose source waits for their acknowledgement.
    acks: Vec<String>,
    source: Arc<dyn RecordSource>,
    /// The job's sink, when kept records go there too.
    sink: Option<Arc<dyn Sink>>,
}

impl Writer {
    /// The writer of consumer `name`, with its stored state. A file that a stopped run
    /// announced is kept if it was written (its records are covered) and dropped if not (they
    /// are read and cut again). Returns the state the reader starts from, too.
    pub async fn open(
        dest: Arc<dyn ObjectStore>,
        ledger: Arc<dyn StateStore>,
        name: String,
        source: Arc<dyn RecordSource>,
        sink: Option<Arc<dyn Sink>>,
    ) -> Result<(Self, Saved)> {
        let (mut saved, mut version) = match ledger.get_checkpoint(&name).await? {
            Some(c) => (
                serde_json::from_str::<Saved>(&c.state)
                    .map_err(|e| Error::Conflict(format!("the stored state of stream {name:?} is unreadable: {e}")))?,
                c.version,
            ),
            None => (Saved::default(), 0),
        };
        // Standard input cannot be read again, nor a queue's messages in order: their
        // positions mean nothing to a later run.
        let persist = source.resumable();
        if persist && !saved.pending.is_empty() {
            for p in std::mem::take(&mut saved.pending) {
                if crate::backends::bucket::get_opt_head(dest.as_ref(), &p.name).await?.is_some() {
                    saved.covered.extend(p.covered);
                }
            }
            let doc = serde_json::to_string(&saved).expect("state serializes");
            if !ledger.put_checkpoint(&name, version, &doc).await? {
                return Err(taken(&name));
            }
            version += 1;
        }
        let writer = Writer {
            dest,
            ledger,
            name,
            persist,
            run: (!persist).then(|| format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))),
            tracks: Vec::new(),
            saved: saved.clone(),
            version,
            acks: Vec::new(),
            source,
            sink,
        };
        Ok((writer, saved))
    }

    /// Write every group until the reader's last; on an error, close the channel (the reader
    /// sees it closed and stops) and return it.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Group>) -> Result<Written> {
        let mut written = Written::default();
        while let Some(group) = rx.recv().await {
            let last = group.last;
            if let Err(e) = self.group(group, &mut written).await {
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
        let Group { shards, arrivals, ended, batches, encoding, items, last } = group;
        self.arrive(shards, arrivals, &ended);
        let upserted = items.len() as u64;
        if let (Some(sink), false) = (&self.sink, items.is_empty()) {
            upsert(sink.as_ref(), items).await?;
            written.upserted += upserted;
            tracing::info!(records = upserted, "stream records upserted into the sink");
        }
        let plans: Vec<FilePlan> =
            batches.into_iter().map(|b| file::plan_file(&self.tracks, b, &encoding, self.run.as_deref())).collect();
        if plans.is_empty() && !last && upserted == 0 && self.acks.is_empty() {
            return Ok(());
        }
        if self.persist && !plans.is_empty() {
            let pending = plans.iter().map(|p| Pending { name: p.path.clone(), covered: p.covered.clone() });
            self.save(|saved| saved.pending.extend(pending)).await?;
        }
        let mut done = self.write(plans, written).await?;
        // Written: their records are accounted for, and the checkpoints move.
        for p in &mut done {
            for (shard, ordinal) in p.batch.items.ordinals() {
                self.tracks[shard as usize].done(ordinal);
            }
            self.acks.append(&mut p.batch.items.acks);
        }
        if self.persist {
            let names: Vec<String> = done.iter().map(|p| p.path.clone()).collect();
            self.save(move |saved| {
                saved.pending.retain(|p| !names.contains(&p.name));
                saved.covered.extend(done.into_iter().flat_map(|p| p.covered));
            })
            .await?;
        }
        if !self.acks.is_empty() {
            if let Err(e) = self.source.ack(&std::mem::take(&mut self.acks)).await {
                // Their records come again, and go into files again.
                tracing::warn!("acknowledging delivered records: {e}");
            }
        }
        Ok(())
    }

    /// Note what the reader met: new shards (resuming after their checkpoints), records in
    /// order (those already accounted for marked so, the checkpoint moving over them), and
    /// shards read to their end.
    fn arrive(&mut self, shards: Vec<String>, arrivals: Vec<Arrival>, ended: &[u32]) {
        for name in shards {
            let checkpoint = self.saved.shards.get(&name).and_then(|s| s.checkpoint.as_deref()).map(Pos::parse);
            self.tracks.push(Track::new(name, checkpoint));
        }
        for a in arrivals {
            match a {
                Arrival::Buffered { shard, pos, len } => {
                    self.tracks[shard as usize].arrive_run(pos, len);
                }
                Arrival::Settled { shard, pos, ack } => {
                    let track = &mut self.tracks[shard as usize];
                    let ordinal = track.arrive(pos);
                    track.done(ordinal);
                    self.acks.extend(ack);
                }
            }
        }
        for &shard in ended {
            self.tracks[shard as usize].reader_ended = true;
        }
    }

    /// Finish the files on the blocking pool (the reader keeps the other core) and put them,
    /// [`WRITING`] at a time, so that the memory of files being finished is bounded however
    /// many are cut at once; the plans written, in order.
    async fn write(&self, plans: Vec<FilePlan>, written: &mut Written) -> Result<Vec<FilePlan>> {
        let jobs = plans.into_iter().map(|mut plan| {
            let dest = self.dest.clone();
            async move {
                let finished = tokio::task::spawn_blocking(move || {
                    let out = plan.batch.items.finish(&plan.path);
                    // The blocking pool's threads take turns at files, and the allocator keeps
                    // what a thread freed (a Parquet file's row groups, tens of MiB) for that
                    // thread: without giving it back, idle threads held 300 MiB more at the
                    // end of a 60-file Parquet run.
                    // SAFETY: `mi_collect` takes no pointers.
                    unsafe { libmimalloc_sys::mi_collect(true) };
                    (plan, out)
                });
                let (plan, out) = finished.await.map_err(|e| Error::internal("stream", "finishing a file", e))?;
                let out = out?;
                let size = out.len();
                match out {
                    Output::Bytes(bytes) => crate::backends::bucket::put(dest.as_ref(), &plan.path, bytes).await?,
                    Output::Scratch(file, _) => {
                        // Read a MiB at a time: each read of a file is a task on the blocking pool.
                        let file = tokio::io::BufReader::with_capacity(1 << 20, tokio::fs::File::from_std(file));
                        crate::backends::bucket::upload_from(dest, file, &plan.path, &plan.path).await?
                    }
                }
                Ok::<_, Error>((plan, size))
            }
        });
        let mut finished = futures::stream::iter(jobs).buffered(WRITING);
        let mut done = Vec::new();
        while let Some(next) = finished.next().await {
            let (plan, size) = next?;
            tracing::info!(path = %plan.path, records = plan.batch.records, bytes = size, cut = ?plan.batch.cut, "stream file written");
            match plan.errors {
                true => written.error_files += 1,
                false => {
                    written.files += 1;
                    written.sizes.push(size);
                }
            }
            *written.cuts.entry(file::cut_name(plan.batch.cut).to_string()).or_default() += 1;
            done.push(plan);
        }
        Ok(done)
    }

    /// Change the state and store it, with the tracks' checkpoints, under the next version.
    async fn save(&mut self, change: impl FnOnce(&mut Saved)) -> Result<()> {
        change(&mut self.saved);
        self.saved.advance(&self.tracks);
        let doc = serde_json::to_string(&self.saved).expect("state serializes");
        if !self.ledger.put_checkpoint(&self.name, self.version, &doc).await? {
            return Err(taken(&self.name));
        }
        self.version += 1;
        Ok(())
    }
}

/// Attempts at one group's sink write before the stream stops (and, restarted, reads the
/// records again: their checkpoints have not moved).
const SINK_ATTEMPTS: u32 = 5;

/// Upsert `items`, retrying a retryable failure after a growing pause.
async fn upsert(sink: &dyn Sink, items: Vec<SinkItem>) -> Result<()> {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1.. {
        match sink.upsert(items.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < SINK_ATTEMPTS => {
                tracing::warn!(attempt, "sink write failed, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.context("writing the stream's records into its sink")),
        }
    }
    unreachable!("the loop returns")
}

/// Files finished and put at once: two keep both cores busy; each holds a piece of its file
/// (an upload's part, a Parquet row group) in memory.
const WRITING: usize = 2;

fn taken(name: &str) -> Error {
    Error::Conflict(format!(
        "the checkpoint of stream {name:?} changed under this consumer: another `sluicebox stream` with this name is running"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::backends::ledger::MemoryLedger;
    use crate::model::config::Compression;
    use crate::stream::batch::{Cut, Fill};
    use crate::stream::file::Item;
    use crate::stream::source::{Delivery, Resume};
    use crate::stream::spool::{Spooler, PIECE_BYTES};

    /// A source that notes each acknowledgement with the stored state at that moment.
    #[derive(Debug)]
    struct Noting {
        resumable: bool,
        ledger: Arc<dyn StateStore>,
        acks: Mutex<Vec<(Vec<String>, Option<Saved>)>>,
    }

    #[async_trait]
    impl RecordSource for Noting {
        async fn run(&self, _: &Resume, _: mpsc::Sender<Delivery>) -> Result<()> {
            Ok(())
        }

        fn resumable(&self) -> bool {
            self.resumable
        }

        async fn ack(&self, acks: &[String]) -> Result<()> {
            let stored = self.ledger.get_checkpoint("s").await?.map(|c| serde_json::from_str(&c.state).unwrap());
            self.acks.lock().unwrap().push((acks.to_vec(), stored));
            Ok(())
        }
    }

    fn encoding() -> Encoding {
        Encoding {
            format: crate::model::config::OutputFormat::Jsonl,
            compression: Compression::None,
            fields: None,
            errors: "errors".into(),
        }
    }

    fn item(n: u64, ack: &str) -> Item {
        let line = format!("{{\"n\":{n}}}\n").into_bytes();
        Item { shard: 0, ordinal: n - 1, pos: Pos::N(n), arrival_ms: 0, line, ack: Some(ack.into()) }
    }

    fn group(arrivals: Vec<Arrival>, items: Vec<Item>, last: bool) -> Group {
        let (bytes, records) = (items.iter().map(|i| i.line.len()).sum(), items.len() as u64);
        let spooler = Arc::new(Spooler::new(std::env::temp_dir(), encoding(), PIECE_BYTES, None));
        let mut body = Body::new(&spooler, "k=v");
        for i in items {
            body.add(i);
        }
        let batches = match records {
            0 => Vec::new(),
            _ => vec![Batch { partition: "k=v".into(), items: body, records, bytes, opened_ms: 0, cut: Cut::Records }],
        };
        let shards = if last { Vec::new() } else { vec!["q".to_string()] };
        Group { shards, arrivals, ended: Vec::new(), batches, encoding: encoding(), items: Vec::new(), last }
    }

    /// Records 1 and 3 of shard `q` buffered into one file, record 2 settled on arrival (a
    /// file of an earlier run holds it), then the last group.
    fn groups() -> Vec<Group> {
        let arrivals = vec![
            Arrival::Buffered { shard: 0, pos: Pos::N(1), len: 1 },
            Arrival::Settled { shard: 0, pos: Pos::N(2), ack: Some("b".into()) },
            Arrival::Buffered { shard: 0, pos: Pos::N(3), len: 1 },
        ];
        vec![group(arrivals, vec![item(1, "a"), item(3, "c")], false), group(Vec::new(), Vec::new(), true)]
    }

    type InMemory = object_store::memory::InMemory;

    /// A writer of consumer `s` over a new ledger and destination.
    async fn writer(resumable: bool) -> (Writer, Arc<Noting>, Arc<InMemory>, Arc<dyn StateStore>) {
        let ledger: Arc<dyn StateStore> = Arc::new(MemoryLedger::default());
        let source = Arc::new(Noting { resumable, ledger: ledger.clone(), acks: Mutex::new(Vec::new()) });
        let dest = Arc::new(InMemory::new());
        let (writer, saved) =
            Writer::open(dest.clone(), ledger.clone(), "s".into(), source.clone(), None).await.unwrap();
        assert_eq!(saved, Saved::default());
        (writer, source, dest, ledger)
    }

    async fn run(writer: Writer, groups: Vec<Group>) -> (Result<Written>, mpsc::Sender<Group>) {
        let (tx, rx) = mpsc::channel(4);
        for g in groups {
            tx.send(g).await.unwrap();
        }
        (writer.run(rx).await, tx)
    }

    async fn files(dest: &InMemory) -> Vec<String> {
        use futures::TryStreamExt;
        let metas: Vec<_> = dest.list(None).try_collect().await.unwrap();
        metas.into_iter().map(|m| m.location.to_string()).collect()
    }

    #[tokio::test]
    async fn records_are_acknowledged_once_their_file_is_written_and_the_checkpoint_stored() {
        let (writer, source, dest, _) = writer(true).await;
        let written = run(writer, groups()).await.0.unwrap();
        assert_eq!((written.files, written.error_files), (1, 0));
        let acks = source.acks.lock().unwrap().clone();
        assert_eq!(acks.len(), 1, "one acknowledgement per written group: {acks:?}");
        let (acked, stored) = &acks[0];
        assert_eq!(acked, &["b", "a", "c"]);
        let stored = stored.as_ref().expect("the state is stored before the acknowledgement");
        assert_eq!(stored.shards["q"].checkpoint.as_deref(), Some("3"));
        assert!(stored.pending.is_empty() && stored.covered.is_empty(), "{stored:?}");
        let files = files(&dest).await;
        assert!(files.len() == 1 && files[0].starts_with("k=v/part-"), "{files:?}");
    }

    #[tokio::test]
    async fn a_source_that_cannot_be_resumed_stores_no_state_and_is_still_acknowledged() {
        let (writer, source, _, ledger) = writer(false).await;
        assert_eq!(run(writer, groups()).await.0.unwrap().files, 1);
        assert!(ledger.get_checkpoint("s").await.unwrap().is_none());
        let acks = source.acks.lock().unwrap();
        assert_eq!(acks.iter().map(|(a, s)| (a.len(), s.is_none())).collect::<Vec<_>>(), [(3, true)]);
    }

    #[tokio::test]
    async fn a_checkpoint_moved_by_another_consumer_stops_the_writer_before_it_writes() {
        let (writer, source, dest, ledger) = writer(true).await;
        assert!(ledger.put_checkpoint("s", 0, "{}").await.unwrap(), "another consumer of the same name");
        let (written, tx) = run(writer, groups()).await;
        let err = written.unwrap_err().to_string();
        assert!(err.contains("another `sluicebox stream` with this name is running"), "{err}");
        assert!(tx.is_closed(), "the reader sees the writer stopped");
        assert!(files(&dest).await.is_empty(), "nothing written");
        assert!(source.acks.lock().unwrap().is_empty(), "nothing acknowledged");
    }
}
