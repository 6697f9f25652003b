//! A buffer's records on their way to a file, in bounded memory ([`Body`]): each record's line
//! joins a piece in memory; a full piece is compressed and appended to the buffer's scratch
//! file, so a buffer holds at most one piece of lines ([`PIECE_BYTES`]) whatever its file's
//! size, and a record's bookkeeping is a few bytes. A gzip file is then a series of gzip
//! members, a zstd file a series of frames (both read as one stream by every reader: gzip,
//! zstd, DuckDB, Athena, Spark), an uncompressed file its lines; the writer uploads the
//! scratch file as it is. A Parquet file's pieces become its row groups as they fill: its
//! records are typed rows (`engine::parquet::RowWriter`: each value a tag and its bytes, no
//! JSON to escape and parse again), and each full piece of them is appended to Arrow arrays and
//! written as one row group onto the scratch file, which the file's footer ends when it is
//! written.
//!
//! Full pieces are compressed by a thread of their own (one per stream, so a buffer's pieces
//! stay in order), beside the reader and its helpers; a file being written waits for its
//! pieces in flight. A buffer cut before its first piece fills never touches the disk. Scratch files have no
//! name (`tempfile`): the system removes them when they are closed or the process dies, so a
//! crash leaves nothing behind, and a restart reads their records again from the source.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::batch::Fill;
use super::state::Pos;
use arrow_schema::SchemaRef;

use crate::engine::parquet::ParquetEncoder;
use crate::engine::pipeline::Encoder;
use crate::error::{Error, Result};
use crate::model::config::{Compression, OutputFormat};

/// A buffered record.
#[derive(Debug)]
pub struct Item {
    /// Its shard, by index (in the order the reader met them).
    pub shard: u32,
    /// How many records of its shard the reader met before it in this run.
    pub ordinal: u64,
    /// Its position in its shard.
    pub pos: Pos,
    /// When it arrived, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// Its encoded line (JSON Lines, CSV, a Parquet file's typed row, or a reject's line).
    pub line: Vec<u8>,
    /// What acknowledges the record once it is in a file (an SQS receipt).
    pub ack: Option<String>,
}

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// The data files' format.
    pub format: OutputFormat,
    /// Their compression (error files' too).
    pub compression: Compression,
    /// The output fields, when known (CSV's header, Parquet's columns).
    pub fields: Option<Arc<Vec<String>>>,
    /// The prefix of error files, without slashes around it.
    pub errors: String,
}

impl Encoding {
    /// How buffered records are encoded: CSV rows for CSV files, typed rows for Parquet files
    /// (`engine::parquet::RowWriter`: a file's row groups are made from its pieces of them as
    /// they fill), else JSON Lines.
    pub fn line_format(&self) -> OutputFormat {
        match self.format {
            OutputFormat::Csv | OutputFormat::Parquet => self.format,
            OutputFormat::Jsonl => OutputFormat::Jsonl,
        }
    }

    /// A file's extension: of a data file, or of an error file (JSON Lines).
    pub fn extension(&self, errors: bool) -> String {
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

    /// Whether files of `partition` hold rejects: it is the errors prefix or under it.
    pub fn is_errors(&self, partition: &str) -> bool {
        partition.strip_prefix(self.errors.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// Lines (or typed rows) a buffer holds in memory before they are compressed to its scratch
/// file. Large enough that a piece compresses as well as a whole file (deflate looks back
/// 32 KiB, zstd's level 3 1 MiB), small enough that 100 open partitions hold 50 MiB of lines at
/// most.
pub const PIECE_BYTES: usize = 512 * 1024;

/// gzip's level for stream files: fast, since a stream's files are written as it runs. On the
/// bench's events, libdeflate's level 1 compresses at 177 MB/s to 51.0% of the text, where
/// zlib-rs took 84 MB/s for 51.3% (its level 2) and 120 MB/s for 65% (its level 1); libdeflate's
/// level 6 gains 3.5% of size for 70% more time.
const GZIP_LEVEL: i32 = 1;

/// zstd's level for zstd files (its default).
const ZSTD_LEVEL: i32 = 3;

/// Rows per row group of a stream's Parquet files at most: a full piece is one row group, so
/// a group holds a piece's records (about 2,700 of 190 bytes), and a file cut before its first
/// piece fills is written whole in groups of this many.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// What every buffer of a stream shares: where scratch files go, how files are encoded, and
/// the thread that compresses full pieces.
#[derive(Debug)]
pub struct Spooler {
    /// The scratch directory.
    pub dir: PathBuf,
    /// How files are encoded.
    pub encoding: Encoding,
    /// Lines held in memory per buffer before they are compressed ([`PIECE_BYTES`]).
    pub piece: usize,
    /// What the buffers hold.
    pub gauges: Arc<Gauges>,
    /// The Parquet files' schema, when the data files are Parquet.
    pub schema: Option<SchemaRef>,
    pieces: SyncSender<Job>,
    /// Emptied piece buffers, for the next pieces: a piece grown from empty in a new
    /// allocation is copied as it grows and faulted in page by page.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Emptied piece buffers kept for reuse at most.
const SPARE_PIECES: usize = PIECES_WAITING + 2;

/// Keep `lines`, emptied, for a next piece, if there is room.
fn recycle(spare: &Mutex<Vec<Vec<u8>>>, mut lines: Vec<u8>) {
    let mut spare = spare.lock().unwrap_or_else(|e| e.into_inner());
    if spare.len() < SPARE_PIECES {
        lines.clear();
        spare.push(lines);
    }
}

/// What the buffers hold, for the run's report.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Bytes of lines in memory now (pieces being compressed too).
    pub held: AtomicUsize,
    /// The most they held at once.
    pub peak: AtomicUsize,
    /// Compressed bytes written to scratch files.
    pub spooled: AtomicU64,
}

impl Gauges {
    fn hold(&self, n: usize) {
        let now = self.held.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Bytes of lines a buffer adds before it tells the gauges: their figures may be short by this
/// much per open buffer.
const GAUGE_STEP: usize = 64 * 1024;

/// Full pieces waiting for the compressor at most: the reader waits beyond them.
const PIECES_WAITING: usize = 2;

impl Spooler {
    /// What every buffer of a stream encoded as `encoding` shares, spooling into `dir`; starts
    /// the compressor thread, which ends when the last buffer and this are gone. `schema` is
    /// the Parquet files' (needed when `encoding` is Parquet).
    pub fn new(dir: PathBuf, encoding: Encoding, piece: usize, schema: Option<SchemaRef>) -> Spooler {
        let gauges = Arc::new(Gauges::default());
        let spare = Arc::new(Mutex::new(Vec::new()));
        let (pieces, jobs) = sync_channel::<Job>(PIECES_WAITING);
        let (thread_dir, thread_gauges, thread_spare) = (dir.clone(), gauges.clone(), spare.clone());
        let started = std::thread::Builder::new().name("stream-pieces".into()).spawn(move || {
            while let Ok(job) = jobs.recv() {
                recycle(&thread_spare, job.run(&thread_dir, &thread_gauges));
            }
        });
        if let Err(e) = started {
            // Without the thread, a piece is compressed by whoever fills it (see `spill`).
            tracing::warn!("starting the stream's compressor thread: {e}");
        }
        Spooler { dir, encoding, piece, gauges, schema, pieces, spare }
    }
}

/// A Parquet file being written onto its scratch file, a row group per piece.
type RowGroups = ParquetEncoder<std::io::BufWriter<File>>;

/// A buffer's scratch file, which the compressor appends to.
#[derive(Default)]
struct Scratch {
    file: Option<File>,
    /// A Parquet file's row groups so far (taken out while a piece is converted).
    groups: Option<RowGroups>,
    /// Its bytes.
    spooled: u64,
    /// It failed: the buffer's file fails when it is written, and the stream with it.
    failed: Option<Error>,
    /// Pieces sent to the compressor and not yet appended.
    pending: usize,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("spooled", &self.spooled).field("pending", &self.pending).finish()
    }
}

type Shared = Arc<(Mutex<Scratch>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, Scratch> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A full piece to compress onto a scratch file.
struct Job {
    scratch: Shared,
    piece: Piece,
    lines: Vec<u8>,
    /// A Parquet file's schema, and the partition, to name in errors.
    parquet: Option<(SchemaRef, Arc<str>)>,
}

impl Job {
    /// Compress the piece onto its scratch file; its emptied buffer.
    fn run(self, dir: &std::path::Path, gauges: &Gauges) -> Vec<u8> {
        if let Some((schema, partition)) = &self.parquet {
            self.row_group(dir, gauges, schema, partition);
        } else {
            let compressed = compress(self.piece, &self.lines);
            gauges.release(self.lines.len());
            let mut s = lock(&self.scratch);
            if s.failed.is_none() {
                match compressed.and_then(|bytes| append(&mut s, dir, &bytes).map(|()| bytes.len())) {
                    Ok(n) => _ = gauges.spooled.fetch_add(n as u64, Ordering::Relaxed),
                    Err(e) => s.failed = Some(scratch_error(dir, &e.to_string(), e)),
                }
            }
            s.pending -= 1;
        }
        self.scratch.1.notify_all();
        self.lines
    }

    /// A Parquet piece as the next row group of its file. The file's encoder is taken out of
    /// the lock while it works: the reader locks the scratch to send the next piece, and
    /// nobody else uses the encoder while a piece of its buffer is in flight.
    fn row_group(&self, dir: &std::path::Path, gauges: &Gauges, schema: &SchemaRef, partition: &str) {
        let mut s = lock(&self.scratch);
        let taken = match (s.failed.is_none(), s.groups.take()) {
            (false, _) => None,
            (true, Some(groups)) => Some(Ok(groups)),
            (true, None) => Some(
                tempfile::tempfile_in(dir)
                    .map(|f| ParquetEncoder::to_writer(std::io::BufWriter::new(f), schema.clone(), ROW_GROUP_ROWS)),
            ),
        };
        drop(s);
        let result = taken.map(|groups| {
            let mut groups = groups.map_err(|e| scratch_error(dir, partition, e))?;
            let before = groups.buffered_bytes();
            let location = format!("the scratch file of partition {partition:?}");
            groups.push_rows(&location, &self.lines)?;
            groups.flush()?;
            Ok::<_, Error>((groups.buffered_bytes().saturating_sub(before), groups))
        });
        gauges.release(self.lines.len());
        let mut s = lock(&self.scratch);
        match result {
            Some(Ok((n, groups))) => {
                gauges.spooled.fetch_add(n as u64, Ordering::Relaxed);
                s.spooled += n as u64;
                s.groups = Some(groups);
            }
            Some(Err(e)) => s.failed = Some(e),
            None => {}
        }
        s.pending -= 1;
    }
}

/// The error of a buffer's scratch file in `dir`, `what` naming the file or partition.
fn scratch_error(dir: &std::path::Path, what: &str, e: std::io::Error) -> Error {
    let what = format!("the scratch file of {what} in {}", dir.display());
    Error::backend(crate::error::Backend::Filesystem, what, e)
}

/// Append `bytes` to the scratch file, made in `dir` if this is its first piece.
fn append(s: &mut Scratch, dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = match &mut s.file {
        Some(f) => f,
        None => s.file.insert(tempfile::tempfile_in(dir)?),
    };
    file.write_all(bytes)?;
    s.spooled += bytes.len() as u64;
    Ok(())
}

/// How a buffer's pieces are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Gzip members: the file's own bytes.
    Gzip,
    /// Zstd frames: the file's own bytes.
    Zstd(i32),
    /// As they are.
    Plain,
    /// Parquet row groups, a piece's typed rows appended to each.
    Parquet,
}

/// One shard's records in a buffer: the first and last positions, and the ordinals (the
/// writer marks them accounted for) as varint deltas, a byte or two per record.
#[derive(Debug)]
pub struct Span {
    /// The first record's position.
    pub first: Pos,
    /// The last record's position.
    pub last: Pos,
    ordinals: Vec<u8>,
    previous: u64,
}

/// A partition's buffer: its records' bookkeeping, a piece of lines in memory, and the
/// compressed pieces before it in a scratch file.
#[derive(Debug)]
pub struct Body {
    spooler: Arc<Spooler>,
    /// Its partition, to name in errors.
    partition: Arc<str>,
    piece: Piece,
    /// Lines not yet compressed (a CSV file's header first).
    lines: Vec<u8>,
    /// Bytes of `lines` the gauges have not heard of yet: told [`GAUGE_STEP`] at a time rather
    /// than by an atomic add for every record, on a counter the compressor thread writes too.
    unheld: usize,
    /// The compressed pieces so far, once a piece is full.
    scratch: Option<Shared>,
    /// Per shard, by index.
    spans: BTreeMap<u32, Span>,
    /// When its first record arrived.
    pub first_arrival_ms: i64,
    /// What acknowledges its records once their file is written (SQS receipts).
    pub acks: Vec<String>,
}

/// A file's bytes, ready to be put.
#[derive(Debug)]
pub enum Output {
    /// In memory.
    Bytes(Vec<u8>),
    /// In a scratch file, from its start, this many bytes.
    Scratch(File, u64),
}

impl Output {
    /// Its size.
    pub fn len(&self) -> u64 {
        match self {
            Output::Bytes(b) => b.len() as u64,
            Output::Scratch(_, n) => *n,
        }
    }
}

impl Body {
    /// An empty buffer of `partition`.
    pub fn new(spooler: &Arc<Spooler>, partition: &str) -> Body {
        let e = &spooler.encoding;
        let errors = e.is_errors(partition);
        let parquet = !errors && e.format == OutputFormat::Parquet;
        let piece = match (parquet, e.compression) {
            (true, _) => Piece::Parquet,
            (false, Compression::None) => Piece::Plain,
            (false, Compression::Zstd) => Piece::Zstd(ZSTD_LEVEL),
            (false, _) => Piece::Gzip,
        };
        let mut lines = Vec::new();
        if !errors && e.format == OutputFormat::Csv {
            if let Some(fields) = &e.fields {
                // Fields a header can hold: checked when the encoding was fixed.
                lines = Encoder::header(fields).unwrap_or_default();
            }
        }
        spooler.gauges.hold(lines.len());
        Body {
            spooler: spooler.clone(),
            partition: partition.into(),
            piece,
            lines,
            unheld: 0,
            scratch: None,
            spans: BTreeMap::new(),
            first_arrival_ms: i64::MAX,
            acks: Vec::new(),
        }
    }

    /// The records' range per shard, by index.
    pub fn spans(&self) -> impl Iterator<Item = (u32, &Span)> {
        self.spans.iter().map(|(s, span)| (*s, span))
    }

    /// Every record, as its shard's index and ordinal.
    pub fn ordinals(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.spans.iter().flat_map(|(&shard, span)| {
            let mut bytes = span.ordinals.iter();
            let mut previous = 0u64;
            std::iter::from_fn(move || {
                let delta = read_varint(&mut bytes)?;
                previous += delta;
                Some((shard, previous))
            })
        })
    }

    /// Tell the gauges of the lines added since they last heard.
    fn tell_gauges(&mut self) {
        if self.unheld > 0 {
            self.spooler.gauges.hold(std::mem::take(&mut self.unheld));
        }
    }

    /// Send the lines in memory, a full piece, to be compressed onto the scratch file.
    fn spill(&mut self) {
        self.tell_gauges();
        if self.lines.is_empty() {
            return;
        }
        let scratch = self.scratch.get_or_insert_with(Default::default).clone();
        lock(&scratch).pending += 1;
        let parquet = (self.piece == Piece::Parquet).then(|| (self.schema(), self.partition.clone()));
        let job = Job { scratch, piece: self.piece, lines: std::mem::take(&mut self.lines), parquet };
        if let Err(e) = self.spooler.pieces.send(job) {
            recycle(&self.spooler.spare, e.0.run(&self.spooler.dir, &self.spooler.gauges));
        }
    }

    /// The Parquet files' schema.
    fn schema(&self) -> SchemaRef {
        self.spooler.schema.clone().expect("a Parquet schema before Parquet files")
    }

    /// The file's bytes (the lines and the scratch file are let go); `path` names it in errors.
    pub fn finish(&mut self, path: &str) -> Result<Output> {
        self.tell_gauges();
        let dir = self.spooler.dir.clone();
        let scratch_failed = |e: std::io::Error| scratch_error(&dir, path, e);
        let lines = std::mem::take(&mut self.lines);
        self.spooler.gauges.release(lines.len());
        let Some(shared) = self.scratch.take() else {
            if self.piece == Piece::Parquet {
                let mut enc = crate::engine::parquet::ParquetEncoder::new(self.schema(), ROW_GROUP_ROWS);
                enc.push_rows(path, &lines)?;
                return Ok(Output::Bytes(enc.finish()?));
            }
            let fail = |e: std::io::Error| Error::internal("compress", format!("compressing {path}"), e);
            return Ok(Output::Bytes(match self.piece {
                Piece::Plain => lines,
                piece => compress(piece, &lines).map_err(fail)?,
            }));
        };
        // The pieces in flight first, then the last one, here.
        let mut s = lock(&shared);
        while s.pending > 0 {
            s = shared.1.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = s.failed.take() {
            return Err(e);
        }
        if self.piece == Piece::Parquet {
            let groups = s.groups.take().expect("row groups after a piece");
            drop(s);
            return finish_row_groups(groups, path, &lines, &dir);
        }
        if !lines.is_empty() {
            compress(self.piece, &lines).and_then(|bytes| append(&mut s, &dir, &bytes)).map_err(scratch_failed)?;
        }
        drop(lines);
        let (mut file, spooled) = (s.file.take().expect("a scratch file after a piece"), s.spooled);
        drop(s);
        file.seek(SeekFrom::Start(0)).map_err(scratch_failed)?;
        Ok(Output::Scratch(file, spooled))
    }
}

/// A Parquet file's last rows (`lines`) and its footer after its row groups: the file, from its
/// start.
fn finish_row_groups(mut groups: RowGroups, path: &str, lines: &[u8], dir: &std::path::Path) -> Result<Output> {
    if !lines.is_empty() {
        groups.push_rows(path, lines)?;
    }
    let failed = |e: std::io::Error| scratch_error(dir, path, e);
    let mut file = groups.close()?.into_inner().map_err(|e| failed(e.into_error()))?;
    let len = file.stream_position().map_err(failed)?;
    file.seek(SeekFrom::Start(0)).map_err(failed)?;
    Ok(Output::Scratch(file, len))
}

impl Fill for Body {
    type Item = Item;

    fn add(&mut self, item: Item) {
        self.first_arrival_ms = self.first_arrival_ms.min(item.arrival_ms);
        let span = self.spans.entry(item.shard).or_insert_with(|| Span {
            first: item.pos.clone(),
            last: item.pos.clone(),
            ordinals: Vec::new(),
            previous: 0,
        });
        write_varint(&mut span.ordinals, item.ordinal - span.previous);
        span.previous = item.ordinal;
        span.last = item.pos;
        self.acks.extend(item.ack);
        if self.lines.capacity() == 0 {
            // A whole piece's room: pages not yet written take no memory.
            let spare = self.spooler.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            self.lines = spare.unwrap_or_default();
            self.lines.reserve(self.spooler.piece + item.line.len());
        }
        self.lines.extend_from_slice(&item.line);
        self.unheld += item.line.len();
        if self.lines.len() >= self.spooler.piece {
            self.spill();
        } else if self.unheld >= GAUGE_STEP {
            self.tell_gauges();
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.tell_gauges();
        self.spooler.gauges.release(self.lines.len());
    }
}

/// `lines` as one piece.
fn compress(piece: Piece, lines: &[u8]) -> std::io::Result<Vec<u8>> {
    match piece {
        Piece::Plain | Piece::Parquet => Ok(lines.to_vec()),
        Piece::Zstd(level) => zstd::bulk::compress(lines, level),
        Piece::Gzip => {
            let level = libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("a libdeflate level");
            let mut gz = libdeflater::Compressor::new(level);
            let mut out = vec![0; gz.gzip_compress_bound(lines.len())];
            let n = gz.gzip_compress(lines, &mut out).map_err(std::io::Error::other)?;
            out.truncate(n);
            Ok(out)
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint<'a>(bytes: &mut impl Iterator<Item = &'a u8>) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = *bytes.next()?;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn spooler(format: OutputFormat, compression: Compression, piece: usize) -> Arc<Spooler> {
        let fields = Some(Arc::new(vec!["id".to_string(), "name".to_string()]));
        let encoding = Encoding { format, compression, fields, errors: "errors".into() };
        let spec = crate::model::config::JobConfig::from_toml("[output]\nfields = [\"id\", \"name\"]\n", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let schema = crate::engine::parquet::schema(&spec, &["id".into(), "name".into()]).unwrap();
        Arc::new(Spooler::new(std::env::temp_dir(), encoding, piece, Some(schema)))
    }

    fn item(shard: u32, ordinal: u64, line: String) -> Item {
        Item {
            shard,
            ordinal,
            pos: Pos::N(ordinal + 1),
            arrival_ms: 1000 + ordinal as i64,
            line: line.into(),
            ack: None,
        }
    }

    fn read_all(out: Output) -> Vec<u8> {
        match out {
            Output::Bytes(b) => b,
            Output::Scratch(mut f, n) => {
                let mut b = Vec::new();
                f.read_to_end(&mut b).unwrap();
                assert_eq!(b.len() as u64, n);
                b
            }
        }
    }

    fn decompress(compression: Compression, bytes: &[u8]) -> String {
        let mut text = String::new();
        match compression {
            Compression::Gzip => flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap(),
            Compression::Zstd => zstd::Decoder::new(bytes).unwrap().read_to_string(&mut text).unwrap(),
            _ => std::io::Cursor::new(bytes).read_to_string(&mut text).unwrap(),
        };
        text
    }

    /// Whatever the piece size, the file reads back as its header and lines in order, with
    /// at most a piece of lines in memory, and every record's ordinal and range kept.
    #[test]
    fn pieces_read_back_as_one_file_with_at_most_a_piece_in_memory() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for piece in [10, 1000, 1 << 20] {
                let s = spooler(OutputFormat::Csv, compression, piece);
                let mut body = Body::new(&s, "k=v");
                let mut want = String::from("id,name\n");
                for n in 0..500u64 {
                    let line = format!("{n},name {n}\n");
                    want.push_str(&line);
                    body.add(item((n % 3) as u32, n * 2 + 7, line));
                }
                assert_eq!(body.ordinals().count(), 500);
                assert!(body
                    .ordinals()
                    .filter(|o| o.0 == 1)
                    .map(|o| o.1)
                    .eq((0..500u64).filter(|n| n % 3 == 1).map(|n| n * 2 + 7)));
                let spans: Vec<_> = body.spans().map(|(s, sp)| (s, sp.first.clone(), sp.last.clone())).collect();
                assert_eq!(spans[0], (0, Pos::N(8), Pos::N(1004)));
                let out = body.finish("k=v/f").unwrap();
                assert_eq!(matches!(out, Output::Scratch(..)), piece < 1 << 20, "{piece}");
                assert_eq!(decompress(compression, &read_all(out)), want, "{compression:?} {piece}");
                drop(body);
                assert_eq!(s.gauges.held.load(Ordering::Relaxed), 0, "every line let go");
                assert!(s.gauges.peak.load(Ordering::Relaxed) < (PIECES_WAITING + 2) * (piece + 20));
            }
        }
    }

    #[test]
    fn a_parquet_file_spooled_in_pieces_holds_every_row_in_order() {
        for piece in [100, 1 << 20] {
            let s = spooler(OutputFormat::Parquet, Compression::Gzip, piece);
            let mut body = Body::new(&s, "k=v");
            let mut rows = Encoder::typed_rows(vec!["id".into(), "name".into()]);
            for n in 0..3000u64 {
                let record = serde_json::json!({"id": n, "name": format!("n{n}")});
                rows.encode(&crate::model::record::Row::Map(record.as_object().unwrap().clone()));
                body.add(Item { line: rows.take(), ..item(0, n, String::new()) });
            }
            let bytes = bytes::Bytes::from(read_all(body.finish("k=v/f.parquet").unwrap()));
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            let mut ids = Vec::new();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column(0);
                let text = arrow_array::cast::AsArray::as_string_opt::<i32>(col.as_ref())
                    .map(|a| a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>());
                let ids_here: Vec<String> = match text {
                    Some(t) => t,
                    None => {
                        let a = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(col.as_ref());
                        a.iter().map(|v| v.unwrap().to_string()).collect()
                    }
                };
                ids.extend(ids_here);
            }
            assert_eq!(ids, (0..3000u64).map(|n| n.to_string()).collect::<Vec<_>>(), "{piece}");
        }
    }
}
