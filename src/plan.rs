//! The plan: a streaming, quote-aware scan that cuts an input into chunks (claim checks).
//!
//! A chunk names a byte range of the (decompressed) input, the number of its first record and
//! the line that range starts on. The scan holds one buffered block of the input at a time,
//! never the whole file, and cuts only at record boundaries found by a real CSV reader (so a
//! quoted field with newlines is never split) or, for JSON, by [`JsonScanner`].

use std::io::{BufRead, BufReader, Read};
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::config::Format;

/// One unit of work: a byte range of one input with its record numbering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Chunk number within the job, from 0, in input order.
    pub index: u32,
    /// Which input of the job (index into the job's inputs).
    pub input: u32,
    /// First byte (inclusive) in the decompressed input.
    pub start: u64,
    /// Last byte (exclusive) in the decompressed input.
    pub end: u64,
    /// 1-based number of the chunk's first record within its input (header excluded).
    pub first_record: u64,
    /// Records in the chunk.
    pub records: u64,
    /// 1-based line of the input on which `start` lies.
    pub first_line: u64,
}

/// Where to cut: a chunk closes at the first record boundary where a target is reached.
#[derive(Debug, Clone, Copy)]
pub struct ChunkTargets {
    /// Records per chunk.
    pub records: Option<NonZeroU64>,
    /// Bytes per chunk.
    pub bytes: NonZeroU64,
}

/// The result of scanning one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputScan {
    /// CSV header fields, when the input has a header row.
    pub header: Option<Vec<String>>,
    /// Chunks with `index` numbered from 0 and `input` 0; the caller renumbers.
    pub chunks: Vec<Chunk>,
    /// Records in the input.
    pub records: u64,
    /// Bytes scanned (decompressed size).
    pub bytes: u64,
}

/// CSV dialect for the scan.
#[derive(Debug, Clone, Copy)]
pub struct CsvDialect {
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
    /// Whether the first record is a header.
    pub header: bool,
}

impl CsvDialect {
    /// A `csv` reader for this dialect that yields every row (the header too) and accepts
    /// ragged rows, so that they can become rejects instead of errors.
    pub fn reader<R: Read>(&self, r: R) -> csv::Reader<R> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .buffer_capacity(256 << 10)
            .from_reader(r)
    }
}

struct Cutter {
    targets: ChunkTargets,
    chunks: Vec<Chunk>,
    start: u64,
    first_line: u64,
    records: u64,
    total: u64,
}

impl Cutter {
    fn new(targets: ChunkTargets, start: u64, first_line: u64) -> Self {
        Cutter { targets, chunks: Vec::new(), start, first_line, records: 0, total: 0 }
    }

    /// A record ended at byte `end`; the next one would begin at `end`, on line `next_line`.
    fn record(&mut self, end: u64, next_line: u64) {
        self.records += 1;
        self.total += 1;
        let full_records = self.targets.records.is_some_and(|n| self.records >= n.get());
        if full_records || end - self.start >= self.targets.bytes.get() {
            self.close(end);
            self.first_line = next_line;
        }
    }

    fn close(&mut self, end: u64) {
        if self.records > 0 {
            self.chunks.push(Chunk {
                index: self.chunks.len() as u32,
                input: 0,
                start: self.start,
                end,
                first_record: self.total - self.records + 1,
                records: self.records,
                first_line: self.first_line,
            });
        }
        self.start = end;
        self.records = 0;
    }
}

/// Scan a CSV input. Errors are I/O errors only: malformed rows are left for the worker to
/// reject, and a file with no rows (or only a header) yields no chunks.
pub fn scan_csv(input: impl Read, dialect: CsvDialect, targets: ChunkTargets) -> std::io::Result<InputScan> {
    let mut rdr = dialect.reader(input);
    let mut record = csv::ByteRecord::new();
    let mut header = None;
    if dialect.header {
        if !rdr.read_byte_record(&mut record).map_err(csv_io)? {
            return Ok(InputScan { header: Some(Vec::new()), chunks: Vec::new(), records: 0, bytes: 0 });
        }
        header = Some(record.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect());
    }
    let pos = rdr.position();
    let mut cutter = Cutter::new(targets, pos.byte(), pos.line());
    while rdr.read_byte_record(&mut record).map_err(csv_io)? {
        let pos = rdr.position();
        cutter.record(pos.byte(), pos.line());
    }
    let end = rdr.position().byte();
    cutter.close(end);
    Ok(InputScan { header, records: cutter.total, chunks: cutter.chunks, bytes: end })
}

fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Scan a JSON Lines input: one record per non-blank line.
pub fn scan_jsonl(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut line = Vec::new();
    let (mut offset, mut line_no) = (0u64, 1u64);
    let mut cutter = Cutter::new(targets, 0, 1);
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        line_no += u64::from(line.last() == Some(&b'\n'));
        if line.iter().all(u8::is_ascii_whitespace) {
            if cutter.records == 0 {
                // Leading blank lines belong to no record: start the chunk after them.
                cutter.start = offset;
                cutter.first_line = line_no;
            }
            continue;
        }
        cutter.record(offset, line_no);
    }
    cutter.close(offset);
    Ok(InputScan { header: None, records: cutter.total, chunks: cutter.chunks, bytes: offset })
}

/// Scan a JSON document that is an array of records or an object with a `records` array.
pub fn scan_json(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut scanner = JsonScanner::document();
    let mut cutter: Option<Cutter> = None;
    let (mut offset, mut line_no) = (0u64, 1u64);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for (i, &b) in buf.iter().enumerate() {
            let at = offset + i as u64;
            match scanner.push(b) {
                Some(JsonEvent::Start) => {
                    let c = cutter.get_or_insert_with(|| Cutter::new(targets, at, line_no));
                    if c.records == 0 {
                        c.start = at;
                        c.first_line = line_no;
                    }
                }
                Some(JsonEvent::End { inclusive }) => {
                    let end = at + u64::from(inclusive);
                    if let Some(c) = cutter.as_mut() {
                        c.record(end, line_no);
                    }
                }
                None => {}
            }
            if b == b'\n' {
                line_no += 1;
            }
        }
        offset += n as u64;
        r.consume(n);
    }
    if let Some(JsonEvent::End { .. }) = scanner.finish() {
        if let Some(c) = cutter.as_mut() {
            c.record(offset, line_no);
        }
    }
    if !scanner.saw_array() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "expected a JSON array of records or an object with a \"records\" array",
        ));
    }
    let mut c = cutter.unwrap_or_else(|| Cutter::new(targets, offset, line_no));
    c.close(offset);
    Ok(InputScan { header: None, records: c.total, chunks: c.chunks, bytes: offset })
}

/// Dispatch on the input format.
pub fn scan(
    input: impl Read,
    format: Format,
    dialect: CsvDialect,
    targets: ChunkTargets,
) -> std::io::Result<InputScan> {
    match format {
        Format::Csv => scan_csv(input, dialect, targets),
        Format::Jsonl => scan_jsonl(input, targets),
        Format::Json => scan_json(input, targets),
    }
}

/// What [`JsonScanner::push`] saw at a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonEvent {
    /// A record starts at this byte.
    Start,
    /// A record ended: at this byte (`inclusive`, a closing bracket or quote) or just before
    /// it (a number or literal ended by a delimiter).
    End {
        /// Whether this byte belongs to the record.
        inclusive: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// Looking for the array (document mode), tracking a top-level object's keys.
    Seek,
    /// Between records at array level.
    Between,
    /// Inside a record.
    Record,
    /// After the array's closing bracket.
    Done,
}

/// Finds record boundaries in a JSON array without parsing the records: it tracks only
/// strings, escapes and bracket depth. `serde_json` parses each record afterwards, so a
/// malformed record is rejected on its own instead of failing its neighbours.
#[derive(Debug, Clone)]
pub struct JsonScanner {
    at: Where,
    depth: u32,
    in_string: bool,
    escaped: bool,
    scalar: bool,
    bare_string: bool,
    /// Document mode: the last key seen in the top-level object.
    key: Vec<u8>,
    last_key_is_records: bool,
    saw_array: bool,
}

impl JsonScanner {
    /// Scan a whole document: records are the elements of the top-level array, or of the
    /// array under the top-level key `records`.
    pub fn document() -> Self {
        JsonScanner {
            at: Where::Seek,
            depth: 0,
            in_string: false,
            escaped: false,
            scalar: false,
            bare_string: false,
            key: Vec::new(),
            last_key_is_records: false,
            saw_array: false,
        }
    }

    /// Scan a slice cut from inside the array: records separated by commas.
    pub fn elements() -> Self {
        JsonScanner { at: Where::Between, saw_array: true, ..Self::document() }
    }

    /// Whether the records array was found.
    pub fn saw_array(&self) -> bool {
        self.saw_array
    }

    /// End of input: a trailing scalar record ends here.
    /// A record still open here (a trailing scalar, or a truncated or unbalanced record) ends
    /// at the end of input, so it is counted and then rejected, never silently dropped.
    pub fn finish(&mut self) -> Option<JsonEvent> {
        if self.at == Where::Record {
            self.at = Where::Between;
            return Some(JsonEvent::End { inclusive: false });
        }
        None
    }

    /// Feed one byte.
    pub fn push(&mut self, b: u8) -> Option<JsonEvent> {
        match self.at {
            Where::Seek => {
                self.seek(b);
                None
            }
            Where::Between => match b {
                b']' => {
                    self.at = Where::Done;
                    None
                }
                b',' => None,
                b if b.is_ascii_whitespace() => None,
                _ => {
                    self.at = Where::Record;
                    self.depth = 0;
                    self.scalar = !matches!(b, b'{' | b'[' | b'"');
                    if self.scalar {
                        return Some(JsonEvent::Start);
                    }
                    self.depth = 1;
                    self.in_string = b == b'"';
                    self.bare_string = self.in_string;
                    Some(JsonEvent::Start)
                }
            },
            Where::Record => self.in_record(b),
            Where::Done => None,
        }
    }

    fn in_record(&mut self, b: u8) -> Option<JsonEvent> {
        if self.scalar {
            if b == b',' || b == b']' || b.is_ascii_whitespace() {
                self.at = if b == b']' { Where::Done } else { Where::Between };
                return Some(JsonEvent::End { inclusive: false });
            }
            return None;
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.bare_string {
                    self.at = Where::Between;
                    self.depth = 0;
                    return Some(JsonEvent::End { inclusive: true });
                }
            }
            return None;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.at = Where::Between;
                    return Some(JsonEvent::End { inclusive: true });
                }
            }
            _ => {}
        }
        None
    }

    fn seek(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 {
                    self.last_key_is_records = self.key == b"records";
                }
            } else if self.depth == 1 {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'[' if self.depth == 0 || (self.depth == 1 && self.last_key_is_records) => {
                self.at = Where::Between;
                self.saw_array = true;
                self.depth = 0;
            }
            b'"' => {
                self.in_string = true;
                self.key.clear();
            }
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b',' if self.depth == 1 => self.last_key_is_records = false,
            _ => {}
        }
    }
}
