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
    /// The longest record accepted; a longer one fails the scan (it would otherwise make a
    /// chunk, and the worker's memory, as large as the rest of the input).
    pub max_record_bytes: u64,
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

/// Scan a CSV input with `csv_core`, which finds record boundaries without keeping the
/// records: memory stays at one buffer, however long a record is. Errors are I/O errors and
/// a record over `targets.max_record_bytes` (most often an unbalanced quote); malformed rows
/// are left for the worker to reject. A file with no rows (or only a header) has no chunks.
pub fn scan_csv(input: impl Read, dialect: CsvDialect, targets: ChunkTargets) -> std::io::Result<InputScan> {
    use csv_core::ReadRecordResult as R;
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut core = csv_core::ReaderBuilder::new().delimiter(dialect.delimiter).quote(dialect.quote).build();
    let mut pos = 0u64;
    // A UTF-8 byte order mark is not part of the first record (the csv reader skips it too).
    if r.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
        pos = 3;
    }
    let (mut out, mut ends) = (vec![0u8; 16 << 10], vec![0usize; 64]);
    let (mut nout, mut nend) = (0, 0);
    let mut header: Option<Vec<String>> = None;
    let mut in_header = dialect.header;
    let mut cutter = Cutter::new(targets, pos, 1);
    let (mut record_start, mut record_line) = (pos, 1);
    loop {
        let buf = r.fill_buf()?;
        let (res, nin, o, e) = core.read_record(buf, &mut out[nout..], &mut ends[nend..]);
        r.consume(nin);
        pos += nin as u64;
        (nout, nend) = (nout + o, nend + e);
        match res {
            R::InputEmpty => {}
            // Only the header's fields are kept; for data records the buffers are reused.
            R::OutputFull if in_header => out.resize(out.len() * 2, 0),
            R::OutputEndsFull if in_header => ends.resize(ends.len() * 2, 0),
            R::OutputFull => nout = 0,
            R::OutputEndsFull => nend = 0,
            R::Record if in_header => {
                let mut start = 0;
                let fields = ends[..nend].iter().map(|&end| {
                    let f = String::from_utf8_lossy(&out[start..end]).trim().to_string();
                    start = end;
                    f
                });
                header = Some(fields.collect());
                in_header = false;
                cutter = Cutter::new(targets, pos, core.line());
            }
            R::Record => cutter.record(pos, core.line()),
            R::End => break,
        }
        if pos - record_start > targets.max_record_bytes {
            return Err(too_long(record_line, targets.max_record_bytes, "an unbalanced quote?"));
        }
        if matches!(res, R::Record) {
            (nout, nend, record_start, record_line) = (0, 0, pos, core.line());
        }
    }
    if dialect.header && header.is_none() {
        header = Some(Vec::new());
    }
    cutter.close(pos);
    Ok(InputScan { header, records: cutter.total, chunks: cutter.chunks, bytes: pos })
}

fn too_long(line: u64, max: u64, hint: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the record starting at line {line} is longer than {max} bytes ({hint}); see input.max_record_bytes"),
    )
}

/// Scan a JSON Lines input: one record per non-blank line.
pub fn scan_jsonl(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let (mut offset, mut line_no) = (0u64, 1u64);
    let (mut line_start, mut blank) = (0u64, true);
    let mut cutter = Cutter::new(targets, 0, 1);
    let end_line = |cutter: &mut Cutter, blank: bool, offset: u64, next_line: u64| {
        if !blank {
            cutter.record(offset, next_line);
        } else if cutter.records == 0 {
            // Blank lines before a chunk's first record belong to no record: start after them.
            cutter.start = offset;
            cutter.first_line = next_line;
        }
    };
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                blank &= buf[..i].iter().all(u8::is_ascii_whitespace);
                r.consume(i + 1);
                offset += i as u64 + 1;
                if offset - line_start > targets.max_record_bytes {
                    return Err(too_long(line_no, targets.max_record_bytes, "no line breaks?"));
                }
                line_no += 1;
                end_line(&mut cutter, blank, offset, line_no);
                (line_start, blank) = (offset, true);
            }
            None => {
                let n = buf.len();
                blank &= buf.iter().all(u8::is_ascii_whitespace);
                r.consume(n);
                offset += n as u64;
                if offset - line_start > targets.max_record_bytes {
                    return Err(too_long(line_no, targets.max_record_bytes, "no line breaks?"));
                }
            }
        }
    }
    if offset > line_start {
        end_line(&mut cutter, blank, offset, line_no);
    }
    cutter.close(offset);
    Ok(InputScan { header: None, records: cutter.total, chunks: cutter.chunks, bytes: offset })
}

/// Scan a JSON document that is an array of records or an object with a `records` array.
pub fn scan_json(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut scanner = JsonScanner::document();
    let mut cutter: Option<Cutter> = None;
    let mut record_start: Option<(u64, u64)> = None;
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
                    record_start = Some((at, line_no));
                    let c = cutter.get_or_insert_with(|| Cutter::new(targets, at, line_no));
                    if c.records == 0 {
                        c.start = at;
                        c.first_line = line_no;
                    }
                }
                Some(JsonEvent::End { inclusive }) => {
                    let end = at + u64::from(inclusive);
                    if let Some((start, line)) = record_start.take() {
                        if end - start > targets.max_record_bytes {
                            return Err(too_long(line, targets.max_record_bytes, "an unbalanced bracket or quote?"));
                        }
                    }
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
        if let Some((start, line)) = record_start {
            if offset + n as u64 - start > targets.max_record_bytes {
                return Err(too_long(line, targets.max_record_bytes, "an unbalanced bracket or quote?"));
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
            if self.string_byte(b) && self.bare_string {
                self.at = Where::Between;
                self.depth = 0;
                return Some(JsonEvent::End { inclusive: true });
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

    /// Feed a byte inside a string; true when it closes the string.
    fn string_byte(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            return true;
        }
        false
    }

    fn seek(&mut self, b: u8) {
        if self.in_string {
            if self.string_byte(b) {
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
