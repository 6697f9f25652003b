//! The plan: a streaming, quote-aware scan that cuts an input into chunks (claim checks).
//!
//! A chunk names a byte range of the (decompressed) input, the number of its first record and
//! the line that range starts on. The scan holds one buffered block of the input at a time,
//! never the whole file, and cuts only at record boundaries found by a real CSV reader (so a
//! quoted field with newlines is never split) or, for JSON, by [`JsonScanner`].

use std::io::{BufRead, BufReader, Read};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::input::decode::{CsvDialect, JsonEvent, JsonScanner};
use crate::input::resume_points::{ResumeLog, ResumePoint};
use crate::model::config::Format;

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
    /// Records in the chunk, its packed pieces' ([`Chunk::more`]) included.
    pub records: u64,
    /// 1-based line of the input on which `start` lies.
    pub first_line: u64,
    /// Where decoding a compressed input starts for this chunk; without it a compressed
    /// input is decoded from its first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Whole small inputs packed after the chunk's own range, in input order (see
    /// [`MAX_PIECES`]): a job over many small files has few chunks, not one per file. Empty
    /// for most chunks, and absent from plans made before packing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Piece>,
}

/// The most pieces (inputs) one chunk holds: its task names each, in a queue message of
/// about 20 KiB at most (SQS takes 256 KiB).
pub const MAX_PIECES: usize = 256;

/// One input's range within a chunk: the chunk's own range, or one of the whole small inputs
/// packed after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Which input of the job.
    pub input: u32,
    /// First byte (inclusive) in the decompressed input.
    pub start: u64,
    /// Last byte (exclusive) in the decompressed input.
    pub end: u64,
    /// 1-based number of the piece's first record within its input.
    pub first_record: u64,
    /// Records in the piece.
    pub records: u64,
    /// 1-based line of the input on which `start` lies.
    pub first_line: u64,
    /// Where decoding a compressed input starts for this piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

impl Piece {
    /// Where the piece's first record is: its number and line in its input.
    pub fn start(&self) -> crate::input::decode::ChunkStart {
        crate::input::decode::ChunkStart { record: self.first_record, line: self.first_line }
    }
}

impl Chunk {
    /// Where the chunk's first record is: its number and line in its input.
    pub fn start(&self) -> crate::input::decode::ChunkStart {
        crate::input::decode::ChunkStart { record: self.first_record, line: self.first_line }
    }

    /// The chunk's pieces in order: its own range, then the inputs packed after it.
    pub fn pieces(&self) -> impl Iterator<Item = Piece> + '_ {
        let packed: u64 = self.more.iter().map(|p| p.records).sum();
        let own = Piece {
            input: self.input,
            start: self.start,
            end: self.end,
            first_record: self.first_record,
            records: self.records.saturating_sub(packed),
            first_line: self.first_line,
            resume: self.resume.clone(),
        };
        std::iter::once(own).chain(self.more.iter().cloned())
    }

    /// The decompressed bytes of all its pieces.
    pub fn bytes(&self) -> u64 {
        (self.end - self.start) + self.more.iter().map(|p| p.end - p.start).sum::<u64>()
    }

    /// Append `other`, a chunk that is the whole of a later input, as a packed piece.
    pub fn pack(&mut self, other: Chunk) {
        self.records += other.records;
        let Chunk { input, start, end, first_record, records, first_line, resume, .. } = other;
        self.more.push(Piece { input, start, end, first_record, records, first_line, resume });
    }
}

/// Where a worker starts decoding a compressed input's chunk ([`crate::input::resume_points`]): it
/// reads the compressed bytes from `point.in_bit / 8` to `input_end`, primes the decoder with
/// the point's window, and drops the output before the chunk's `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The resume point.
    #[serde(flatten)]
    pub point: ResumePoint,
    /// The compressed byte (exclusive) past which the chunk needs nothing.
    pub input_end: u64,
}

/// The resume points of a compressed input as it is decoded, shared by its decoder (which
/// notes them) and the scan (which cuts chunks just after them); windows spool to a file.
pub type Points = Arc<Mutex<ResumeLog<std::fs::File>>>;

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

/// The most chunks one input may be cut into: an input that needs more wants bigger chunks,
/// and a plan (and the ledger) grows with its chunks. Beyond it the scan goes on counting but
/// keeps no more chunks, then fails.
pub const MAX_CHUNKS: usize = 1_000_000;

struct Cutter {
    targets: ChunkTargets,
    /// A compressed input's resume points: a due chunk closes only once one has passed.
    points: Option<Points>,
    /// Where the last record ended.
    prev_end: u64,
    /// A resume point could not be written.
    error: Option<std::io::Error>,
    chunks: Vec<Chunk>,
    /// More than [`MAX_CHUNKS`] were cut.
    overflow: bool,
    start: u64,
    first_line: u64,
    records: u64,
    total: u64,
}

impl Cutter {
    fn new(targets: ChunkTargets, points: Option<&Points>, start: u64, first_line: u64) -> Self {
        Cutter {
            targets,
            points: points.cloned(),
            prev_end: start,
            error: None,
            chunks: Vec::new(),
            overflow: false,
            start,
            first_line,
            records: 0,
            total: 0,
        }
    }

    /// The scan's result, or the error for an input cut into too many chunks.
    fn finish(self, header: Option<Vec<String>>, bytes: u64) -> std::io::Result<InputScan> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.overflow {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the input makes more than {MAX_CHUNKS} chunks ({} records); raise chunking.bytes or chunking.records",
                    self.total
                ),
            ));
        }
        Ok(InputScan { header, records: self.total, chunks: self.chunks, bytes })
    }

    /// A record ended at byte `end`; the next one would begin at `end`, on line `next_line`.
    fn record(&mut self, end: u64, next_line: u64) {
        self.records += 1;
        self.total += 1;
        let full_records = self.targets.records.is_some_and(|n| self.records >= n.get());
        let due = full_records || end - self.start >= self.targets.bytes.get();
        let cut = due
            && match &self.points {
                None => true,
                // The next chunk starts here: cut once a resume point lies within the record
                // that just ended, so its worker decodes less than a record it does not keep; a
                // chunk twice its target closes anyway (blocks or frames far apart).
                Some(points) => {
                    let last = points.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last_at_or_before(end);
                    last.is_some_and(|b| b > self.prev_end)
                        || end - self.start >= 2 * self.targets.bytes.get()
                        || self.targets.records.is_some_and(|n| self.records >= 2 * n.get())
                }
            };
        self.prev_end = end;
        if cut {
            self.close(end);
            self.first_line = next_line;
        }
    }

    fn close(&mut self, end: u64) {
        if self.records > 0 && self.chunks.len() >= MAX_CHUNKS {
            self.overflow = true;
        } else if self.records > 0 {
            let resume = match &self.points {
                None => None,
                Some(points) => {
                    let cut = points.lock().unwrap_or_else(std::sync::PoisonError::into_inner).cut(self.start);
                    match cut {
                        Ok(point) => point.map(|point| Resume { point, input_end: 0 }),
                        Err(e) => {
                            self.error.get_or_insert(e);
                            None
                        }
                    }
                }
            };
            self.chunks.push(Chunk {
                more: Vec::new(),
                index: self.chunks.len() as u32,
                input: 0,
                start: self.start,
                end,
                first_record: self.total - self.records + 1,
                records: self.records,
                first_line: self.first_line,
                resume,
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
    csv(input, dialect, targets, None, true)
}

/// The CSV scan. Between records, a run of lines with no quote and no carriage return is
/// taken by `memchr` (when `lines_free` allows it): each such line is a record, ended by its
/// newline (a blank one is no record), exactly as `csv_core` would find them, at a fraction of
/// its cost per byte. Anything else goes byte by byte through `csv_core`.
fn csv(
    input: impl Read,
    dialect: CsvDialect,
    targets: ChunkTargets,
    points: Option<&Points>,
    lines_free: bool,
) -> std::io::Result<InputScan> {
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
    let mut cutter = Cutter::new(targets, points, pos, 1);
    let (mut record_start, mut record_line) = (pos, 1);
    // Whether `csv_core` has just ended a record (and read something: its byte order mark
    // is behind it), so that plain lines may be taken without it.
    let mut between = false;
    loop {
        if between && lines_free && dialect.lines_are_rows() {
            let buf = r.fill_buf()?;
            let plain = memchr::memchr2(dialect.quote, b'\r', buf).unwrap_or(buf.len());
            let mut taken = 0;
            for nl in memchr::memchr_iter(b'\n', &buf[..plain]) {
                let end = pos + nl as u64 + 1;
                if end - record_start > targets.max_record_bytes {
                    return Err(too_long(record_line, targets.max_record_bytes, "an unbalanced quote?"));
                }
                let line = core.line() + 1;
                core.set_line(line);
                if nl > taken {
                    cutter.record(end, line);
                    (record_start, record_line) = (end, line);
                }
                taken = nl + 1;
            }
            r.consume(taken);
            pos += taken as u64;
            between = false;
        }
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
                let starts = std::iter::once(0).chain(ends[..nend].iter().copied());
                header = Some(crate::input::decode::header_names(starts.zip(&ends[..nend]).map(|(s, &e)| &out[s..e])));
                in_header = false;
                cutter = Cutter::new(targets, points, pos, core.line());
            }
            R::Record => cutter.record(pos, core.line()),
            R::End => break,
        }
        if pos - record_start > targets.max_record_bytes {
            return Err(too_long(record_line, targets.max_record_bytes, "an unbalanced quote?"));
        }
        if matches!(res, R::Record) {
            (nout, nend, record_start, record_line) = (0, 0, pos, core.line());
            between = !in_header;
        }
    }
    if dialect.header && header.is_none() {
        header = Some(Vec::new());
    }
    cutter.close(pos);
    cutter.finish(header, pos)
}

fn too_long(line: u64, max: u64, hint: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the record starting at line {line} is longer than {max} bytes ({hint}); see input.max_record_bytes"),
    )
}

/// Scan a JSON Lines input: one record per non-blank line.
pub fn scan_jsonl(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    jsonl(input, targets, None)
}

fn jsonl(input: impl Read, targets: ChunkTargets, points: Option<&Points>) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let (mut offset, mut line_no) = (0u64, 1u64);
    let (mut line_start, mut blank) = (0u64, true);
    let mut cutter = Cutter::new(targets, points, 0, 1);
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
    cutter.finish(None, offset)
}

/// Scan a JSON document that is an array of records or an object with a `records` array.
pub fn scan_json(input: impl Read, targets: ChunkTargets) -> std::io::Result<InputScan> {
    json(input, targets, None)
}

fn json(input: impl Read, targets: ChunkTargets, points: Option<&Points>) -> std::io::Result<InputScan> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut scanner = JsonScanner::document();
    let mut cutter: Option<Cutter> = None;
    let mut record_start: Option<(u64, u64)> = None;
    let (mut offset, mut line_no) = (0u64, 1u64);
    // The document's first byte other than white space, with its offset and line: a document
    // that is one object (no records array in it) is one record.
    let mut first: Option<(u64, u64, u8)> = None;
    // From that byte on, the values as a worker's decoder will find them in a one-object
    // document's chunk: it must find exactly one.
    let mut values = JsonScanner::elements();
    let mut values_ended = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for (i, &b) in buf.iter().enumerate() {
            let at = offset + i as u64;
            if first.is_none() && !b.is_ascii_whitespace() {
                first = Some((at, line_no, b));
            }
            // Only while the document can still be one object: not for an array, a records
            // array, or a second value (the scan's hot path stays one scanner for those).
            let one_object = matches!(first, Some((_, _, b'{'))) && !scanner.saw_array() && values_ended <= 1;
            if one_object && matches!(values.push(b), Some(JsonEvent::End { .. })) {
                values_ended += 1;
            }
            match scanner.push(b) {
                Some(JsonEvent::Start) => {
                    record_start = Some((at, line_no));
                    let c = cutter.get_or_insert_with(|| Cutter::new(targets, points, at, line_no));
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
        return match first {
            Some((at, line, b'{')) if values_ended + u64::from(values.finish().is_some()) == 1 => {
                if offset - at > targets.max_record_bytes {
                    return Err(too_long(line, targets.max_record_bytes, "an unbalanced bracket or quote?"));
                }
                let mut c = Cutter::new(targets, points, at, line);
                c.record(offset, line_no);
                c.close(offset);
                c.finish(None, offset)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected one JSON object (one record), an array of records or an object with a \"records\" array",
            )),
        };
    }
    let mut c = cutter.unwrap_or_else(|| Cutter::new(targets, points, offset, line_no));
    c.close(offset);
    c.finish(None, offset)
}

/// Dispatch on the input format.
pub fn scan(
    input: impl Read,
    format: Format,
    dialect: CsvDialect,
    targets: ChunkTargets,
) -> std::io::Result<InputScan> {
    scan_resumable(input, format, dialect, targets, None)
}

/// [`scan`] a compressed input whose decoder notes resume `points`: chunks close just after
/// one and carry theirs ([`Chunk::resume`], its `input_end` left for the caller, who knows
/// the object's size: [`Points`]' `input_end`).
pub fn scan_resumable(
    input: impl Read,
    format: Format,
    dialect: CsvDialect,
    targets: ChunkTargets,
    points: Option<&Points>,
) -> std::io::Result<InputScan> {
    match format {
        Format::Csv => csv(input, dialect, targets, points, true),
        Format::Jsonl => jsonl(input, targets, points),
        Format::Json => json(input, targets, points),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_document_that_is_one_object_is_one_record_pretty_printed_or_not() {
        let targets = ChunkTargets { records: None, bytes: NonZeroU64::MIN, max_record_bytes: 1 << 20 };
        for text in [&b"\n  {\n  \"product\": {\"id\": \"1\", \"tags\": [1, 2]}\n}\n"[..], b"{\"a\":1}"] {
            let scan = scan_json(text, targets).unwrap();
            assert_eq!(scan.chunks.len(), 1, "{}", String::from_utf8_lossy(text));
            let c = &scan.chunks[0];
            assert_eq!((c.records, c.end), (1, text.len() as u64));
            assert_eq!(text[c.start as usize], b'{');
        }
        let scan = scan_json(&b"{\"records\": [{\"a\": 1}, {\"a\": 2}]}"[..], targets).unwrap();
        assert_eq!(scan.chunks.iter().map(|c| c.records).sum::<u64>(), 2, "a records array is still the records");
        for not_one in [&b"\"text\""[..], b"{\"a\": 1} {\"b\": 2}", b"{o\x8b`\x0fc\x96\x93n}\xa9}"] {
            let err = scan_json(not_one, targets).unwrap_err().to_string();
            assert!(err.contains("one JSON object (one record)"), "{err}");
        }
    }

    /// Gives its bytes at most `step` at a time, so that records straddle reads.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.bytes.len().min(self.step).min(buf.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_lines_taken_by_memchr_cut_as_csv_core_alone_does(
            text in proptest::collection::vec(proptest::sample::select(b"ab,\"\n\r \xc3\xa9;".to_vec()), 0..300),
            step in 1usize..40,
            header: bool,
            delimiter in proptest::sample::select(b",;\n\r".to_vec()),
            records in 0u64..5,
            bytes in 1u64..60,
            max_record_bytes in 4u64..80,
        ) {
            let d = CsvDialect { delimiter, quote: b'"', header };
            let targets = ChunkTargets { records: NonZeroU64::new(records), bytes: NonZeroU64::new(bytes).unwrap(), max_record_bytes };
            let scan = |fast| csv(Trickle { bytes: &text, step }, d, targets, None, fast).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(scan(true), scan(false));
        }
    }

    #[test]
    fn chunks_end_where_decode_finds_record_ends_so_a_stream_cuts_as_a_job_does() {
        let d = CsvDialect { delimiter: b',', quote: b'"', header: true };
        let text = b"id,note\n1,\"two\nlines\"\n2,5\" pipe\r\n3,x\n";
        let one = ChunkTargets { records: NonZeroU64::new(1), bytes: NonZeroU64::MIN, max_record_bytes: 1 << 20 };
        let scanned = scan_csv(&text[..], d, one).unwrap();
        let ends: Vec<u64> = scanned.chunks.iter().map(|c| c.end).collect();
        let found = crate::input::decode::record_ends(Format::Csv, &d, text, usize::MAX);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(ends, found[1..].iter().map(|&e| e as u64).collect::<Vec<_>>(), "the header's end is not a chunk's");
    }
}
