//! Where a stream's records come from: standard input and files (blocks of whole records,
//! decoded as a batch job's chunks are), Kinesis Data Streams (every shard, from its
//! checkpoint; a closed shard's children after it) and SQS.
//!
//! A source sends [`Delivery`]s into a channel and stops when the channel is closed.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::Sender;

use super::state::Pos;
use crate::config::{Compression, Format};
use crate::decode::CsvDialect;
use crate::error::{Error, Result};

/// The most bytes in one block of a file or of standard input.
pub const BLOCK_BYTES: usize = 1 << 20;

/// One record of a record stream (Kinesis, SQS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its position in its shard.
    pub pos: Pos,
    /// When the stream received it, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// Its data: one JSON object.
    pub data: Bytes,
    /// What acknowledges it once it is in a file (an SQS receipt handle).
    pub ack: Option<String>,
}

/// Whole records of a file or of standard input.
#[derive(Debug)]
pub struct Block {
    /// The shard: the file's location, or `stdin`.
    pub shard: String,
    /// Its format.
    pub format: Format,
    /// The CSV header, for CSV with a header.
    pub header: Option<Arc<Vec<String>>>,
    /// The line the block starts on.
    pub first_line: u64,
    /// When the records arrived (a file's modification time), ms since the Unix epoch.
    pub arrival_ms: i64,
    /// The records' bytes, cut at a record boundary.
    pub data: Vec<u8>,
    /// A record just before `data` too long to be read ([`MAX_RECORD_BYTES`]): skipped, to be
    /// a reject numbered before the block's records.
    pub skipped: Option<Skipped>,
}

/// The longest record a file or standard input stream reads; a longer one is skipped to the
/// next line break and rejected, and the stream goes on.
pub const MAX_RECORD_BYTES: usize = 64 * BLOCK_BYTES;

/// A record skipped for its length.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The line it starts on.
    pub first_line: u64,
    /// Its length, up to the line break that ended it.
    pub bytes: u64,
    /// Its first bytes, for the reject.
    pub head: String,
}

/// What a source sends.
#[derive(Debug)]
pub enum Delivery {
    /// Records of one shard, in order.
    Records {
        /// The shard.
        shard: String,
        /// The records.
        records: Vec<SourceRecord>,
    },
    /// A block of a file or of standard input.
    Block(Block),
    /// The shard has no more records.
    End {
        /// The shard.
        shard: String,
    },
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
    let mut input: Box<dyn Read + Send> = {
        use std::io::BufRead;
        let head = input.fill_buf().map_err(fail)?;
        match crate::bucket::compression_from_magic(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::Decoder::with_buffer(input).map_err(fail)?),
            _ => Box::new(input),
        }
    };
    let quote = dialect.quote;
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
                let Some(end) = record_end(&buf, 0, quote, true) else {
                    if eof {
                        break;
                    }
                    return Err(Error::input(&shard, "the CSV header is longer than 1 MiB (an unbalanced quote?)"));
                };
                let mut rdr = dialect.reader(&buf[..end]);
                let names = rdr.byte_headers().map_err(|e| Error::input(&shard, format!("CSV header: {e}")))?;
                header = Some(Arc::new(names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect()));
                line += memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
                buf.drain(..end);
            }
        }
        // Cut after the last record that ends in the buffer; the rest waits for more bytes.
        let cut = if eof { buf.len() } else { last_record_end(&buf, format, quote).unwrap_or(0) };
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

/// The end of the last whole record in `buf` (just after its newline).
fn last_record_end(buf: &[u8], format: Format, quote: u8) -> Option<usize> {
    match format {
        Format::Csv => {
            // A newline ends a record when the quotes before it are balanced (a quote inside
            // a quoted field is doubled, so parity holds).
            let mut last = None;
            let mut open = false;
            for i in memchr::memchr2_iter(b'\n', quote, buf) {
                if buf[i] == quote {
                    open = !open;
                } else if !open {
                    last = Some(i + 1);
                }
            }
            last
        }
        _ => memchr::memrchr(b'\n', buf).map(|i| i + 1),
    }
}

/// The end of the first record starting at `from` (just after its newline).
fn record_end(buf: &[u8], from: usize, quote: u8, csv: bool) -> Option<usize> {
    let mut open = false;
    for i in memchr::memchr2_iter(b'\n', quote, &buf[from..]) {
        let i = from + i;
        if csv && buf[i] == quote {
            open = !open;
        } else if buf[i] == b'\n' && !open {
            return Some(i + 1);
        }
    }
    None
}

/// Kinesis Data Streams (feature `aws`).
#[cfg(feature = "aws")]
pub mod kinesis {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
    use aws_sdk_kinesis::Client;
    use tokio::sync::mpsc::Sender;

    use super::{Delivery, SourceRecord};
    use crate::error::{Error, Result};
    use crate::stream::state::{Pos, SavedShard};

    /// Where a shard without a checkpoint starts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Start {
        /// Its oldest record.
        TrimHorizon,
        /// Records put from now on.
        Latest,
    }

    fn aws(op: &str, stream: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::backend("kinesis", format!("{op} on stream {stream}"), e)
    }

    async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = match &token {
                Some(t) => client.list_shards().next_token(t),
                None => client.list_shards().stream_name(stream),
            };
            let out = req.send().await.map_err(|e| {
                let e = aws_sdk_kinesis::Error::from(e);
                match e {
                    aws_sdk_kinesis::Error::ResourceNotFoundException(_) => {
                        Error::config("--from", format!("the Kinesis stream {stream:?} does not exist"))
                    }
                    e => aws("ListShards", stream, e),
                }
            })?;
            shards.extend(out.shards.unwrap_or_default());
            match out.next_token {
                Some(t) => token = Some(t),
                None => return Ok(shards),
            }
        }
    }

    /// Read every shard of `stream` from its saved checkpoint, children after their parents,
    /// until the channel closes.
    pub async fn run(
        client: Client,
        stream: String,
        saved: BTreeMap<String, SavedShard>,
        start: Start,
        tx: Sender<Delivery>,
    ) -> Result<()> {
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut ended: HashSet<String> = saved.iter().filter(|(_, s)| s.ended).map(|(k, _)| k.clone()).collect();
        let mut started: HashSet<String> = HashSet::new();
        let mut readers = tokio::task::JoinSet::new();
        loop {
            let shards = list_shards(&client, &stream).await?;
            let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
            for shard in &shards {
                let id = shard.shard_id.clone();
                if started.contains(&id) || ended.contains(&id) {
                    continue;
                }
                // A child starts once its parents are read to their end (or have expired).
                let parents = [shard.parent_shard_id.as_deref(), shard.adjacent_parent_shard_id.as_deref()];
                if parents.iter().flatten().any(|p| known.contains(p) && !ended.contains(*p)) {
                    continue;
                }
                started.insert(id.clone());
                let checkpoint = saved.get(&id).and_then(|s| s.checkpoint.clone());
                let (client, stream, tx, ended_tx) = (client.clone(), stream.clone(), tx.clone(), ended_tx.clone());
                readers.spawn(async move {
                    let out = read_shard(&client, &stream, &id, checkpoint, start, &tx).await;
                    if out.is_ok() {
                        let _ = ended_tx.send(id);
                    }
                    out
                });
            }
            tokio::select! {
                id = ended_rx.recv() => {
                    if let Some(id) = id {
                        ended.insert(id);
                    }
                }
                Some(done) = readers.join_next() => {
                    match done {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) => return Err(Error::backend("kinesis", "a shard reader", e)),
                    }
                }
                // New shards appear when the stream is resharded.
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    async fn iterator(
        client: &Client,
        stream: &str,
        shard: &str,
        after: Option<&str>,
        start: Start,
    ) -> Result<Option<String>> {
        let req = client.get_shard_iterator().stream_name(stream).shard_id(shard);
        let req = match after {
            Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
            None if start == Start::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = req.send().await.map_err(|e| aws("GetShardIterator", stream, aws_sdk_kinesis::Error::from(e)))?;
        Ok(out.shard_iterator)
    }

    async fn read_shard(
        client: &Client,
        stream: &str,
        shard: &str,
        checkpoint: Option<String>,
        start: Start,
        tx: &Sender<Delivery>,
    ) -> Result<()> {
        let mut last = checkpoint;
        let mut it = iterator(client, stream, shard, last.as_deref(), start).await?;
        let mut backoff = Duration::from_millis(200);
        while let Some(current) = it.take() {
            let out = match client.get_records().shard_iterator(&current).limit(10_000).send().await {
                Ok(out) => out,
                Err(e) => match aws_sdk_kinesis::Error::from(e) {
                    aws_sdk_kinesis::Error::ExpiredIteratorException(_) => {
                        it = iterator(client, stream, shard, last.as_deref(), start).await?;
                        continue;
                    }
                    aws_sdk_kinesis::Error::ProvisionedThroughputExceededException(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        it = Some(current);
                        continue;
                    }
                    e => return Err(aws("GetRecords", stream, e)),
                },
            };
            backoff = Duration::from_millis(200);
            let empty = out.records.is_empty();
            if !empty {
                let records: Vec<SourceRecord> = out
                    .records
                    .into_iter()
                    .map(|r| SourceRecord {
                        pos: Pos::parse(&r.sequence_number),
                        arrival_ms: r.approximate_arrival_timestamp.and_then(|t| t.to_millis().ok()).unwrap_or(0),
                        data: bytes::Bytes::from(r.data.into_inner()),
                        ack: None,
                    })
                    .collect();
                last = records.last().map(|r| r.pos.to_string());
                if tx.send(Delivery::Records { shard: shard.to_string(), records }).await.is_err() {
                    return Ok(());
                }
            }
            match out.next_shard_iterator {
                Some(next) => it = Some(next),
                None => {
                    let _ = tx.send(Delivery::End { shard: shard.to_string() }).await;
                    return Ok(());
                }
            }
            // At most five reads a second per shard; once caught up, one a second.
            let caught_up = empty || out.millis_behind_latest == Some(0);
            tokio::time::sleep(Duration::from_millis(if caught_up { 1000 } else { 200 })).await;
        }
        Ok(())
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
    fn gzip_jsonl_is_read_whole() {
        use std::io::Write;
        let text: String = (0..50_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let got = blocks(&gz.finish().unwrap(), Format::Jsonl);
        assert_eq!(got.iter().flat_map(|b| b.data.clone()).collect::<Vec<u8>>(), text.into_bytes());
    }
}
