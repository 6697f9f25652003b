//! Standard input and files (paths, directories, `file://` and `s3://` objects and prefixes):
//! blocks of whole records, each about [`BLOCK_BYTES`], decoded later as a batch job's chunks
//! are. A file is one shard, named by its location; its records' positions are their numbers
//! in it, the same in every run, so a restart reads a file from its start and skips what its
//! checkpoint covers. Standard input is read once: its shard is new in every run.

use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc::Sender;

use super::{Block, Delivery, RecordSource, Resume, Skipped};
use crate::engine::spec::InputSpec;
use crate::error::{Error, Result};
use crate::input::decode::CsvDialect;
use crate::model::config::{Compression, Format};

/// The most bytes in one block of a file or of standard input.
pub const BLOCK_BYTES: usize = 1 << 20;

/// The longest record a file or standard input stream reads; a longer one is skipped to the
/// next line break and rejected, and the stream goes on.
pub const MAX_RECORD_BYTES: usize = 64 * BLOCK_BYTES;

/// Opens the input of a [`StdinSource`].
type OpenInput = Box<dyn Fn() -> Box<dyn Read + Send> + Send + Sync>;

/// Standard input, or any reader (a test hands it bytes): one shard, `stdin-<start ms>`.
pub struct StdinSource {
    open: OpenInput,
    format: Format,
    dialect: CsvDialect,
}

impl StdinSource {
    /// Records in `format` from what `open` gives (called once per run).
    pub fn new(
        open: impl Fn() -> Box<dyn Read + Send> + Send + Sync + 'static,
        format: Format,
        dialect: CsvDialect,
    ) -> Self {
        StdinSource { open: Box::new(open), format, dialect }
    }
}

impl std::fmt::Debug for StdinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinSource").field("format", &self.format).finish_non_exhaustive()
    }
}

#[async_trait]
impl RecordSource for StdinSource {
    async fn run(&self, _: &Resume, tx: Sender<Delivery>) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let (input, format, dialect) = ((self.open)(), self.format, self.dialect);
        tokio::task::spawn_blocking(move || read_blocks(format!("stdin-{now}"), input, format, dialect, now, &tx))
            .await
            .map_err(|e| Error::internal("stream", "reading standard input", e))?
    }

    /// What was read before is gone.
    fn resumable(&self) -> bool {
        false
    }
}

/// Files and objects, one after the other, each one shard; a file an earlier run read to its
/// end is not read again.
#[derive(Debug)]
pub struct FilesSource {
    store: Arc<dyn ObjectStore>,
    args: Vec<String>,
    format: Option<Format>,
    compression: Compression,
    dialect: CsvDialect,
}

impl FilesSource {
    /// The files `args` name in `store` (see [`crate::backends::bucket::resolve_inputs`]), read as
    /// `input` says.
    pub fn new(store: Arc<dyn ObjectStore>, args: Vec<String>, input: &InputSpec) -> Self {
        FilesSource { store, args, format: input.format, compression: input.compression, dialect: input.dialect }
    }
}

#[async_trait]
impl RecordSource for FilesSource {
    async fn run(&self, resume: &Resume, tx: Sender<Delivery>) -> Result<()> {
        let store = &self.store;
        let inputs =
            crate::backends::bucket::resolve_inputs(store.as_ref(), &self.args, self.format, self.compression).await?;
        for input in inputs {
            if tx.is_closed() {
                return Ok(());
            }
            if resume.get(&input.location).is_some_and(|s| s.ended) {
                continue;
            }
            let path = crate::backends::bucket::key_path(&input.path);
            let arrival = store.head(&path).await.map(|m| m.last_modified.timestamp_millis()).unwrap_or(0);
            let read = crate::backends::bucket::open_reader(store.clone(), &input).await?.decoded()?;
            let (tx, shard, format, dialect) = (tx.clone(), input.location.clone(), input.format, self.dialect);
            tokio::task::spawn_blocking(move || read_blocks(shard, read, format, dialect, arrival, &tx))
                .await
                .map_err(|e| Error::internal("stream", "a file reader", e))??;
        }
        Ok(())
    }

    fn resumable(&self) -> bool {
        true
    }
}

/// Read `input` (decompressing gzip or zstd found by their first bytes) and send it in blocks
/// of whole records. Runs on a blocking thread.
pub fn read_blocks(
    shard: String,
    input: Box<dyn Read + Send>,
    format: Format,
    dialect: CsvDialect,
    arrival_ms: i64,
    tx: &Sender<Delivery>,
) -> Result<()> {
    let fail = |e: std::io::Error| Error::input(&shard, format!("cannot read: {e}"));
    if format == Format::Json {
        return Err(Error::config(
            "input.format",
            format!("{shard}: a stream reads JSON Lines or CSV records, not one JSON document"),
        ));
    }
    let mut input = std::io::BufReader::with_capacity(1 << 16, input);
    let compression =
        crate::backends::bucket::compression_from_magic(std::io::BufRead::fill_buf(&mut input).map_err(fail)?);
    let mut input = crate::backends::bucket::decompress(Box::new(input), compression, &shard)?;
    let mut carry: Vec<u8> = Vec::new();
    let mut header: Option<Arc<Vec<String>>> = None;
    let mut line = 1u64;
    let mut at_start = true;
    let mut eof = false;
    let mut skipped: Option<Skipped> = None;
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        let have = buf.len();
        buf.resize(have.max(BLOCK_BYTES / 2) + BLOCK_BYTES, 0);
        let mut filled = have;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        buf.truncate(filled);
        if at_start {
            at_start = false;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            if format == Format::Csv && dialect.header {
                let Some(&end) = crate::input::decode::record_ends(format, &dialect, &buf, 1).first() else {
                    if eof {
                        break;
                    }
                    return Err(Error::input(&shard, "the CSV header is longer than 1 MiB (an unbalanced quote?)"));
                };
                let mut rdr = dialect.reader(&buf[..end]);
                let names = rdr.byte_headers().map_err(|e| Error::input(&shard, format!("CSV header: {e}")))?;
                header = Some(Arc::new(crate::input::decode::header_names(names)));
                line += memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
                buf.drain(..end);
            }
        }
        // Cut after the last record that ends in the buffer; the rest waits for more bytes.
        let cut =
            if eof { buf.len() } else { crate::input::decode::last_record_end(format, &dialect, &buf).unwrap_or(0) };
        if cut == 0 && !eof {
            if buf.len() > MAX_RECORD_BYTES {
                // Too long to be a record (or a CSV quote never closed): skip it to the next
                // line break; it becomes a reject and the stream goes on from there.
                // The next pass reads on (or finds the end) and sends what follows, with it.
                let (rest, skipped_lines, bytes) = skip_line(buf, &mut input).map_err(fail)?;
                let head = String::from_utf8_lossy(&rest.head).into_owned();
                skipped = Some(Skipped { first_line: line, bytes, head });
                line += skipped_lines;
                carry = rest.tail;
                continue;
            }
            carry = buf;
            continue;
        }
        carry = buf.split_off(cut);
        if buf.is_empty() && skipped.is_none() {
            continue;
        }
        let lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
        let block = Block {
            shard: shard.clone(),
            format,
            header: header.clone(),
            first_line: line,
            arrival_ms,
            data: buf,
            skipped: skipped.take(),
        };
        line += lines;
        if tx.blocking_send(Delivery::Block(block)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.blocking_send(Delivery::End { shard });
    Ok(())
}

/// What [`skip_line`] kept of a skipped record and of what followed it.
struct SkippedBytes {
    /// The record's first bytes.
    head: Vec<u8>,
    /// The bytes after its line break, already read.
    tail: Vec<u8>,
}

/// Reads past the record at the start of `buf` to its first line break, dropping its bytes as
/// they come (memory stays at one buffer): what was kept, the lines it spans (its line break
/// included) and its length.
fn skip_line(mut buf: Vec<u8>, input: &mut dyn Read) -> std::io::Result<(SkippedBytes, u64, u64)> {
    let head = buf[..buf.len().min(256)].to_vec();
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        if let Some(i) = memchr::memchr(b'\n', &buf) {
            lines += memchr::memchr_iter(b'\n', &buf[..=i]).count() as u64;
            bytes += i as u64 + 1;
            let tail = buf.split_off(i + 1);
            return Ok((SkippedBytes { head, tail }, lines, bytes));
        }
        bytes += buf.len() as u64;
        buf.clear();
        buf.resize(BLOCK_BYTES, 0);
        let n = loop {
            match input.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Ok((SkippedBytes { head, tail: Vec::new() }, lines, bytes));
        }
        buf.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(input: &[u8], format: Format) -> Vec<Block> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let dialect = CsvDialect { delimiter: b',', quote: b'"', header: true };
        read_blocks("t".into(), Box::new(std::io::Cursor::new(input.to_vec())), format, dialect, 0, &tx).unwrap();
        drop(tx);
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            if let Delivery::Block(b) = d {
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn csv_blocks_end_on_record_boundaries_with_quoted_newlines() {
        let mut input = b"\xEF\xBB\xBFa,b\n".to_vec();
        let mut want = Vec::new();
        for i in 0..200_000 {
            let row = format!("{i},\"x\ny \"\"{i}\"\"\"\n");
            want.extend_from_slice(row.as_bytes());
        }
        input.extend_from_slice(&want);
        let got = blocks(&input, Format::Csv);
        assert!(got.len() > 1, "several blocks");
        assert_eq!(got[0].header.as_deref(), Some(&vec!["a".to_string(), "b".to_string()]));
        assert_eq!(got[0].first_line, 2);
        let mut line = 2;
        for b in &got {
            assert_eq!(b.first_line, line);
            line += memchr::memchr_iter(b'\n', &b.data).count() as u64;
            assert!(b.data.ends_with(b"\"\n"), "cut inside a record");
        }
        assert_eq!(got.iter().flat_map(|b| b.data.clone()).collect::<Vec<u8>>(), want);
    }

    #[test]
    fn a_csv_header_is_read_as_the_planner_reads_it() {
        let input = b" id ,\"Ship Date \", amount\n1,x,2\n";
        let targets = crate::input::plan::ChunkTargets {
            records: None,
            bytes: std::num::NonZeroU64::new(1 << 20).unwrap(),
            max_record_bytes: 1 << 20,
        };
        let dialect = CsvDialect { delimiter: b',', quote: b'"', header: true };
        let planned = crate::input::plan::scan_csv(&input[..], dialect, targets).unwrap().header.unwrap();
        assert_eq!(planned, ["id", "Ship Date", "amount"]);
        assert_eq!(blocks(input, Format::Csv)[0].header.as_deref(), Some(&planned));
    }

    #[test]
    fn gzip_jsonl_is_read_whole() {
        use std::io::Write;
        let text: String = (0..50_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let got = blocks(&gz.finish().unwrap(), Format::Jsonl);
        assert_eq!(got.iter().flat_map(|b| b.data.clone()).collect::<Vec<u8>>(), text.into_bytes());
    }
}
