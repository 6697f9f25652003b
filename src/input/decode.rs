//! Decoding: where records begin and end in CSV, JSON Lines and JSON documents. The planner's
//! scan and the worker's pipeline share these, so a chunk is cut and read by the same rules.

use std::io::Read;

use crate::model::config::Format;

/// CSV dialect: delimiter, quote and whether there is a header row.
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
    /// Whether a line with no quote and no carriage return is one record, its fields between
    /// its delimiters: not when the delimiter or the quote is itself a line break.
    pub fn lines_are_rows(&self) -> bool {
        ![self.delimiter, self.quote].iter().any(|b| matches!(b, b'\n' | b'\r'))
    }

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

/// A CSV header's names, as a job and a stream both take them: each field as text (invalid
/// UTF-8 replaced), without the spaces around it, so that ` id ` names the field `id`.
pub fn header_names<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    fields.into_iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect()
}

/// The ends of the whole records at the start of `buf` (each just past its terminator), as the
/// planner cuts an input: CSV by `csv_core` with the dialect's delimiter and quote (a quote
/// inside an unquoted field is text, a line break inside quotes is not an end), JSON Lines
/// at line breaks (a CRLF record ends at its CR, as a chunk does). At most `most` ends are found; a record whose end `buf` does not hold yet
/// is not counted. The stream cuts its blocks with it.
pub fn record_ends(format: Format, dialect: &CsvDialect, buf: &[u8], most: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    match format {
        Format::Csv => {
            use csv_core::ReadRecordResult as R;
            let mut core = csv_core::ReaderBuilder::new().delimiter(dialect.delimiter).quote(dialect.quote).build();
            let (mut out, mut field_ends) = (vec![0u8; 16 << 10], vec![0usize; 256]);
            let mut pos = 0;
            while ends.len() < most && pos < buf.len() {
                let (res, nin, _, _) = core.read_record(&buf[pos..], &mut out, &mut field_ends);
                pos += nin;
                match res {
                    // A CRLF record ends at its CR, as the planner's chunks do: the LF starts
                    // the next piece, where it ends no record.
                    R::Record => ends.push(pos),
                    R::InputEmpty | R::End => break,
                    // Only where records end matters here: the fields are not kept.
                    R::OutputFull | R::OutputEndsFull => {}
                }
            }
        }
        _ => {
            for i in memchr::memchr_iter(b'\n', buf).take(most) {
                ends.push(i + 1);
            }
        }
    }
    ends
}

/// The end of the last whole record in `buf` (see [`record_ends`]), if one ends in it.
pub fn last_record_end(format: Format, dialect: &CsvDialect, buf: &[u8]) -> Option<usize> {
    match format {
        Format::Csv => record_ends(format, dialect, buf, usize::MAX).last().copied(),
        _ => memchr::memrchr(b'\n', buf).map(|i| i + 1),
    }
}

/// What a record's bytes hold, before the pipeline types them.
#[derive(Debug)]
pub enum Body<'a> {
    /// A CSV row's fields.
    Csv(CsvRow<'a>),
    /// A JSON value's text (a JSON Lines line, or an element of a JSON array).
    Json(&'a [u8]),
}

/// One record of a chunk, in input order.
#[derive(Debug)]
pub struct RawRecord<'r, 'b> {
    /// 1-based record number within the input.
    pub number: u64,
    /// 1-based line on which it starts.
    pub line: u64,
    /// Its bytes as they appear in the input (without the line break that ends it): a slice
    /// of the chunk, which outlives the call.
    pub raw: &'b [u8],
    /// Its content, valid during the call only.
    pub body: Body<'r>,
}

/// Where a chunk's bytes start within their input.
#[derive(Debug, Clone, Copy)]
pub struct ChunkStart {
    /// Number of the chunk's first record.
    pub record: u64,
    /// Line on which the chunk starts.
    pub line: u64,
}

/// Call `f` with every record in `bytes` (a chunk cut at record boundaries), in order.
pub fn for_each_record<'b>(
    format: Format,
    dialect: &CsvDialect,
    bytes: &'b [u8],
    start: ChunkStart,
    f: &mut dyn FnMut(RawRecord<'_, 'b>),
) {
    match format {
        Format::Csv => csv_records(dialect, bytes, start, f),
        Format::Jsonl => jsonl_records(bytes, start, f),
        Format::Json => json_records(bytes, start, f),
    }
}

/// A UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A CSV row's fields, quotes undone: valid during the call that is given it.
#[derive(Debug, Clone, Copy)]
pub struct CsvRow<'a> {
    /// The fields' bytes, one after another, `gap` bytes apart.
    bytes: &'a [u8],
    /// Where each field ends in `bytes`.
    ends: &'a [usize],
    /// What lies between two fields: nothing (fields `csv_core` copied out) or the delimiter
    /// (a line's own bytes).
    gap: usize,
}

impl<'a> CsvRow<'a> {
    /// How many fields the row has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the row has no fields (never, for a row the decoder gives).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`'s bytes.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] + self.gap };
        self.bytes.get(start..end)
    }

    /// The fields in order as text, when the row is a line of valid UTF-8 cut at an ASCII
    /// delimiter (checked once for the line rather than once per field); `None` otherwise.
    pub fn texts(&self) -> Option<impl Iterator<Item = &'a str> + 'a> {
        if self.gap != 1 || !self.ends.iter().all(|&e| self.bytes.get(e).is_none_or(u8::is_ascii)) {
            return None;
        }
        let line = std::str::from_utf8(self.bytes).ok()?;
        let mut start = 0;
        Some(self.ends.iter().map(move |&end| {
            // Both sides of an ASCII byte are character boundaries.
            let field = &line[start..end];
            start = end + 1;
            field
        }))
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (bytes, gap) = (self.bytes, self.gap);
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let field = &bytes[start..end];
            start = end + gap;
            field
        })
    }
}

/// A chunk's CSV rows as `csv_core` reads them (every row, the header too; rows of any
/// length). Between rows, a run of lines with no quote and no carriage return is cut by
/// `memchr` instead: each such line is a row whose fields lie between its delimiters (a blank
/// one is no row), as `csv_core` reads it, without its per-byte work or a copy.
fn csv_records<'b>(dialect: &CsvDialect, bytes: &'b [u8], start: ChunkStart, f: &mut dyn FnMut(RawRecord<'_, 'b>)) {
    use csv_core::ReadRecordResult as R;
    // csv_core drops a byte order mark at the start of what it reads. An input's own mark is
    // never in a chunk (the planner starts after it), so one at a chunk's start is a record's
    // data, as it is to the planner: a mark put before it is the one dropped.
    let marked;
    let (read, skip): (&[u8], usize) = match bytes.starts_with(BOM) {
        true => {
            marked = [BOM, bytes].concat();
            (&marked, BOM.len())
        }
        false => (bytes, 0),
    };
    let mut core = csv_core::ReaderBuilder::new().delimiter(dialect.delimiter).quote(dialect.quote).build();
    let (mut out, mut ends) = (vec![0u8; 4 << 10], vec![0usize; 64]);
    let mut line_ends: Vec<usize> = Vec::with_capacity(64);
    let mut number = start.record;
    let mut cursor = LineCursor { pos: 0, line: start.line };
    let mut pos = 0;
    // Where the next quote or carriage return lies, at or after `pos`.
    let mut plain_until = 0;
    // Whether csv_core has just ended a row (and read something, its mark behind it).
    let mut between = false;
    loop {
        if between && dialect.lines_are_rows() {
            if plain_until < pos {
                plain_until = memchr::memchr2(dialect.quote, b'\r', &read[pos..]).map_or(read.len(), |i| pos + i);
            }
            // Each line is on the next line number: the cursor is brought here once.
            cursor.advance(bytes, pos.saturating_sub(skip));
            while let Some(nl) = memchr::memchr(b'\n', &read[pos..plain_until]) {
                let (from, text) = (pos.saturating_sub(skip), &read[pos..pos + nl]);
                pos += nl + 1;
                let line = cursor.line;
                (cursor.pos, cursor.line) = (pos.saturating_sub(skip), line + 1);
                if text.is_empty() {
                    continue;
                }
                line_ends.clear();
                line_ends.extend(memchr::memchr_iter(dialect.delimiter, text));
                line_ends.push(text.len());
                let raw = &bytes[from..from + nl];
                let row = CsvRow { bytes: text, ends: &line_ends, gap: 1 };
                f(RawRecord { number, line, raw, body: Body::Csv(row) });
                number += 1;
            }
        }
        let from = pos;
        let (mut nout, mut nend) = (0, 0);
        loop {
            let (res, nin, o, e) = core.read_record(&read[pos..], &mut out[nout..], &mut ends[nend..]);
            (pos, nout, nend) = (pos + nin, nout + o, nend + e);
            match res {
                // Read again: with nothing left, csv_core ends the last row.
                R::InputEmpty => {}
                R::OutputFull => out.resize(out.len() * 2, 0),
                R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                R::Record => break,
                R::End => return,
            }
        }
        let (line, raw) = cursor.locate(bytes, from.saturating_sub(skip), pos.saturating_sub(skip));
        let row = CsvRow { bytes: &out[..nout], ends: &ends[..nend], gap: 0 };
        f(RawRecord { number, line, raw, body: Body::Csv(row) });
        number += 1;
        between = true;
    }
}

fn jsonl_records<'b>(bytes: &'b [u8], start: ChunkStart, f: &mut dyn FnMut(RawRecord<'_, 'b>)) {
    let mut number = start.record;
    // Lines as `split_inclusive` cuts them (each with its line break, the last without one
    // if it has none), found by memchr rather than a byte at a time.
    let mut from = 0;
    let ends = memchr::memchr_iter(b'\n', bytes).map(|i| i + 1).chain(std::iter::once(bytes.len()));
    let lines = ends.filter_map(|to| {
        let text = bytes.get(from..to).filter(|t| !t.is_empty());
        from = to;
        text
    });
    for (line, text) in (start.line..).zip(lines) {
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let raw = text.strip_suffix(b"\n").unwrap_or(text);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        f(RawRecord { number, line, raw, body: Body::Json(text) });
        number += 1;
    }
}

fn json_records<'b>(bytes: &'b [u8], start: ChunkStart, f: &mut dyn FnMut(RawRecord<'_, 'b>)) {
    let mut scanner = JsonScanner::elements();
    let mut number = start.record;
    let mut line = start.line;
    let (mut from, mut from_line) = (0usize, line);
    let mut one = |to: usize, from: usize, line: u64, number: &mut u64| {
        let text = &bytes[from..to];
        f(RawRecord { number: *number, line, raw: text, body: Body::Json(text) });
        *number += 1;
    };
    for (i, &b) in bytes.iter().enumerate() {
        match scanner.push(b) {
            Some(JsonEvent::Start) => (from, from_line) = (i, line),
            Some(JsonEvent::End { inclusive }) => one(i + usize::from(inclusive), from, from_line, &mut number),
            None => {}
        }
        if b == b'\n' {
            line += 1;
        }
    }
    if scanner.finish().is_some() {
        one(bytes.len(), from, from_line, &mut number);
    }
}

/// Tracks the line number while walking a chunk's records in order.
struct LineCursor {
    pos: usize,
    line: u64,
}

impl LineCursor {
    /// Count the line breaks up to byte `to` of `bytes`.
    fn advance(&mut self, bytes: &[u8], to: usize) {
        let to = to.clamp(self.pos, bytes.len());
        self.line += memchr::memchr_iter(b'\n', &bytes[self.pos..to]).count() as u64;
        self.pos = to;
    }

    /// The line a record starts on and its raw bytes, from its byte span in the chunk. The
    /// span may begin with the line break that ended the previous record (CRLF, blank lines).
    fn locate<'b>(&mut self, bytes: &'b [u8], start: usize, end: usize) -> (u64, &'b [u8]) {
        self.advance(bytes, start);
        let start = self.pos;
        let span = &bytes[start..end.clamp(start, bytes.len())];
        let skip = span.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        let line = self.line + memchr::memchr_iter(b'\n', &span[..skip]).count() as u64;
        let text = &span[skip..];
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        (line, text.strip_suffix(b"\r").unwrap_or(text))
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
            } else if self.depth == 1 && self.key.len() <= b"records".len() {
                // Only `records` matters: a longer key is kept to one byte more, so a hostile
                // document's huge key costs no memory.
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// JSON Lines records are the lines `split_inclusive` cuts, blank ones skipped, each
        /// numbered and placed on its line.
        #[test]
        fn json_lines_are_cut_at_every_line_break(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'{'), Just(b'x')], 0..40,
        )) {
            let mut seen = Vec::new();
            jsonl_records(&bytes, ChunkStart { record: 3, line: 5 }, &mut |r| {
                let Body::Json(text) = r.body else { unreachable!() };
                seen.push((r.number, r.line, r.raw.to_vec(), text.to_vec()));
            });
            let mut expected = Vec::new();
            let mut number = 3;
            for (line, text) in (5..).zip(bytes.split_inclusive(|&b| b == b'\n')) {
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let raw = text.strip_suffix(b"\n").unwrap_or(text);
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                expected.push((number, line, raw.to_vec(), text.to_vec()));
                number += 1;
            }
            prop_assert_eq!(seen, expected);
        }
    }

    /// A row's number, line, raw bytes and fields.
    type Seen = (u64, u64, Vec<u8>, Vec<Vec<u8>>);

    /// A chunk's rows as the `csv` crate's reader gives them: what [`csv_records`] must give.
    fn rows_by_the_csv_crate(d: &CsvDialect, bytes: &[u8], start: ChunkStart) -> Vec<Seen> {
        let marked = [BOM, bytes].concat();
        let (read, skip) = if bytes.starts_with(BOM) { (&marked[..], BOM.len()) } else { (bytes, 0) };
        let mut rdr = d.reader(read);
        let mut row = csv::ByteRecord::new();
        let mut cursor = LineCursor { pos: 0, line: start.line };
        let mut rows = Vec::new();
        loop {
            let from = (rdr.position().byte() as usize).saturating_sub(skip);
            if !rdr.read_byte_record(&mut row).unwrap() {
                return rows;
            }
            let to = (rdr.position().byte() as usize).saturating_sub(skip);
            let (line, raw) = cursor.locate(bytes, from, to);
            rows.push((start.record + rows.len() as u64, line, raw.to_vec(), row.iter().map(<[u8]>::to_vec).collect()));
        }
    }

    proptest! {
        /// Rows cut by memchr where lines are plain, by csv_core elsewhere, are the rows, lines
        /// and raw bytes the csv crate's reader gives.
        #[test]
        fn csv_rows_are_the_csv_crates_plain_lines_or_not(
            text in proptest::collection::vec(proptest::sample::select(b"ab,;\"\n\r \xef\xbb\xbf".to_vec()), 0..200),
            delimiter in proptest::sample::select(b",;\n\r\"\xbb".to_vec()),
        ) {
            let d = CsvDialect { delimiter, quote: b'"', header: false };
            let start = ChunkStart { record: 7, line: 3 };
            let mut seen = Vec::new();
            csv_records(&d, &text, start, &mut |r| {
                let Body::Csv(row) = r.body else { unreachable!() };
                assert_eq!(row.len(), row.iter().count());
                assert!((0..row.len()).all(|i| row.get(i) == row.iter().nth(i)));
                if let Some(texts) = row.texts() {
                    let by_field: Option<Vec<&str>> = row.iter().map(|f| std::str::from_utf8(f).ok()).collect();
                    assert_eq!(Some(texts.collect::<Vec<_>>()), by_field, "the line's text is its fields'");
                }
                seen.push((r.number, r.line, r.raw.to_vec(), row.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()));
            });
            prop_assert_eq!(seen, rows_by_the_csv_crate(&d, &text, start));
        }
    }

    #[test]
    fn records_end_where_the_planner_cuts_them_quotes_and_crlf_included() {
        let d = CsvDialect { delimiter: b',', quote: b'"', header: true };
        let text = b"id,note\n1,\"two\nlines\"\n2,5\" pipe\r\n3,cut";
        assert_eq!(record_ends(Format::Csv, &d, text, usize::MAX), [8, 22, 32]);
        assert_eq!(record_ends(Format::Csv, &d, text, 1), [8]);
        assert_eq!(last_record_end(Format::Csv, &d, text), Some(32));
        // A quote inside an unquoted field (an inch mark) is text, as the planner reads it.
        let inch = b"a,5\" x\nb,c\n";
        assert_eq!(last_record_end(Format::Csv, &d, inch), Some(inch.len()));
        assert_eq!(last_record_end(Format::Csv, &d, b"1,\"open\nstill open"), None);
        assert_eq!(last_record_end(Format::Jsonl, &d, b"{}\n{\"a\""), Some(3));
    }

    #[test]
    fn header_names_lose_the_spaces_around_them_only() {
        let fields: [&[u8]; 3] = [b" id ", b"Ship Date", b"\tamount\xFF"];
        assert_eq!(header_names(fields), ["id", "Ship Date", "amount\u{FFFD}"]);
    }
}
