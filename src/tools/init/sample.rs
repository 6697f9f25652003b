//! The sample: the first bytes of an input read and decompressed (the only I/O of `init`), then
//! its format, CSV dialect and columns detected.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::infer::{ColumnGuess, ColumnTally};
use crate::error::{Error, Result};
use crate::input::decode::{CsvDialect, JsonEvent, JsonScanner};
use crate::model::column::ColumnRule;
use crate::model::config::{ColumnConfig, ColumnType, Compression, Format};

/// Records read by default to detect the columns' types.
pub const DEFAULT_SAMPLE_RECORDS: usize = 20_000;

/// The decompressed bytes read for a sample of `records` records: 1 KiB a record, at least
/// 16 MiB (the records cap the sample first unless they are long).
pub fn sample_bytes(records: usize) -> u64 {
    (records as u64).saturating_mul(1024).max(16 << 20)
}

/// The first bytes of an input, decompressed.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The input as the user named it, for messages.
    pub location: String,
    /// Its file name, for the extension and the job file's comments.
    pub name: String,
    /// How it is compressed.
    pub compression: Compression,
    /// What showed the compression: `"its name"` or `"its first bytes"`.
    pub compression_by: &'static str,
    /// The decompressed bytes read.
    pub bytes: Vec<u8>,
    /// Whether the input goes on past `bytes`.
    pub truncated: bool,
}

/// Read up to `max_bytes` decompressed bytes of the file at `path` (compression from its
/// name, else its magic bytes). Errors name the file.
pub fn read_sample(path: &Path, max_bytes: u64) -> Result<Sample> {
    let location = path.display().to_string();
    let cannot = |e: std::io::Error| Error::input(&location, format!("cannot read it: {e}"));
    if path.is_dir() {
        return Err(Error::input(&location, "is a directory; init reads one file"));
    }
    let mut file = std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(path).map_err(cannot)?);
    let head = file.fill_buf().map_err(cannot)?.to_vec();
    let name = path.file_name().map_or_else(|| location.clone(), |n| n.to_string_lossy().into_owned());
    let (compression, compression_by) = match crate::backends::bucket::compression_from_name(&name) {
        Some(c) => (c, "its name"),
        None => (crate::backends::bucket::compression_from_magic(&head), "its first bytes"),
    };
    let decoded = crate::backends::bucket::decompress_at_most(
        Box::new(file),
        compression,
        &location,
        u64::MAX,
        "input.max_decompressed_bytes",
    )?;
    let mut bytes = Vec::new();
    decoded.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| match compression {
        Compression::Gzip | Compression::Zstd => {
            Error::input(&location, format!("cannot decompress it ({}): {e}", compression_name(compression)))
        }
        _ => cannot(e),
    })?;
    let truncated = bytes.len() as u64 > max_bytes;
    bytes.truncate(max_bytes.min(bytes.len() as u64) as usize);
    Ok(Sample { location, name, compression, compression_by, bytes, truncated })
}

/// What `init` found in a sample.
#[derive(Debug, Clone)]
pub struct Sniffed {
    /// The input's file name.
    pub name: String,
    /// Its compression.
    pub compression: Compression,
    /// What showed the compression: `"its name"` or `"its first bytes"`.
    pub compression_by: &'static str,
    /// Its record encoding.
    pub format: Format,
    /// CSV: delimiter, quote and whether the first row is a header.
    pub dialect: Option<CsvDialect>,
    /// Whether it starts with a UTF-8 byte order mark.
    pub bom: bool,
    /// Whether its lines end with CRLF.
    pub crlf: bool,
    /// The columns (CSV) or fields (JSON), in order.
    pub columns: Vec<ColumnGuess>,
    /// Records looked at (the header excluded).
    pub records: usize,
    /// Whether they are the whole input.
    pub whole: bool,
    /// Records `run` will reject whatever the columns say: CSV rows with another number of
    /// fields than the header, JSON values that are not objects.
    pub malformed: usize,
}

pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Detect the format, dialect and columns of `sample`, from at most `max_records` records.
/// Fails, naming the input, when it is empty, not UTF-8 text, or a JSON document without
/// records.
pub fn sniff(sample: &Sample, max_records: usize) -> Result<Sniffed> {
    let bom = sample.bytes.starts_with(BOM);
    let text = text_of(sample, &sample.bytes[if bom { BOM.len() } else { 0 }..])?;
    let crlf = memchr::memchr(b'\n', text).is_some_and(|i| i > 0 && text[i - 1] == b'\r');
    let format = detect_format(&sample.name, text);
    let mut sniffed = Sniffed {
        name: sample.name.clone(),
        compression: sample.compression,
        compression_by: sample.compression_by,
        format,
        dialect: None,
        bom,
        crlf,
        columns: Vec::new(),
        records: 0,
        whole: false,
        malformed: 0,
    };
    match format {
        Format::Csv => sniff_csv(&mut sniffed, text, sample, max_records)?,
        Format::Jsonl | Format::Json => sniff_json(&mut sniffed, text, sample, max_records)?,
    }
    Ok(sniffed)
}

/// The sample as text: not empty, no NUL bytes, UTF-8 (a character cut by the end of a
/// truncated sample is dropped).
fn text_of<'a>(sample: &Sample, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::input(&sample.location, "is empty: init needs records to look at"));
    }
    if memchr::memchr(0, &bytes[..bytes.len().min(64 << 10)]).is_some() {
        return Err(Error::input(
            &sample.location,
            "is not text (it holds NUL bytes: binary, or UTF-16); init reads CSV, JSON Lines or JSON in UTF-8, \
             gzip or zstd compressed or not",
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes),
        Err(e) if e.error_len().is_none() && sample.truncated => Ok(&bytes[..e.valid_up_to()]),
        Err(e) => Err(Error::InvalidInput {
            location: sample.location.clone(),
            line: Some(memchr::memchr_iter(b'\n', &bytes[..e.valid_up_to()]).count() as u64 + 1),
            column: None,
            reason: format!(
                "is not UTF-8 text (byte {:#04x} at offset {}); sluicebox reads UTF-8 only",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        }),
    }
}

/// The record format: a `.csv` or `.tsv` name says CSV; otherwise the content decides (`[`
/// opens a JSON document, a first line that is a whole JSON object opens JSON Lines, another
/// `{` a JSON document), then the name (`.jsonl`, `.json`), else CSV.
pub fn detect_format(name: &str, text: &[u8]) -> Format {
    let plain =
        name.trim_end_matches(".gz").trim_end_matches(".gzip").trim_end_matches(".zst").trim_end_matches(".zstd");
    if plain.ends_with(".csv") || plain.ends_with(".tsv") {
        return Format::Csv;
    }
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let text = &text[start..];
    match text.first() {
        Some(b'[') => Format::Json,
        Some(b'{') => {
            let line = text.split(|&b| b == b'\n').next().unwrap_or(text);
            match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(o)) if !(o.len() == 1 && o.get("records").is_some_and(Value::is_array)) => {
                    Format::Jsonl
                }
                _ => Format::Json,
            }
        }
        _ => crate::backends::bucket::format_from_name(name),
    }
}

/// The delimiter (of `, ; \t |`) and quote (of `" '`) that split the first 100 records most
/// consistently: the first row (header or not) with the commonest field count, above one
/// field; then the largest share of records with that count; then the most fields. Ties go
/// to the earlier in those lists.
pub fn detect_delimiter(text: &[u8]) -> (u8, u8) {
    let mut best = ((b',', b'"'), (false, 0u64, 0usize));
    for quote in [b'"', b'\''] {
        for delimiter in [b',', b';', b'\t', b'|'] {
            let dialect = CsvDialect { delimiter, quote, header: false };
            let mut counts = std::collections::BTreeMap::<usize, u64>::new();
            let (mut rows, mut first) = (0u64, None);
            for row in dialect.reader(text).byte_records().take(100) {
                let Ok(row) = row else { break };
                *counts.entry(row.len()).or_default() += 1;
                first.get_or_insert(row.len());
                rows += 1;
            }
            let Some((&fields, &n)) = counts.iter().max_by_key(|&(&fields, &n)| (n, fields)) else { continue };
            let score = (fields > 1 && first == Some(fields), n * 1000 / rows.max(1), fields);
            if score > best.1 {
                best = ((delimiter, quote), score);
            }
        }
    }
    best.0
}

fn sniff_csv(s: &mut Sniffed, text: &[u8], sample: &Sample, max_records: usize) -> Result<()> {
    let (delimiter, quote) = detect_delimiter(text);
    let mut dialect = CsvDialect { delimiter, quote, header: true };
    let mut reader = dialect.reader(text);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut more = false;
    for row in reader.records() {
        let row = row.map_err(|e| Error::input(&sample.location, format!("cannot read it as CSV: {e}")))?;
        if rows.len() > max_records {
            more = true;
            break;
        }
        rows.push(row.iter().map(str::to_string).collect());
    }
    if sample.truncated && !more {
        // The sample's last row may be cut short.
        rows.pop();
    }
    s.whole = !sample.truncated && !more;
    let Some(first) = rows.first() else {
        return Err(Error::input(&sample.location, "holds no complete record in its first bytes"));
    };
    let width = first.len();
    if width > crate::engine::pipeline::MAX_COLUMNS {
        return Err(Error::input(
            &sample.location,
            format!("splits into {width} columns; at most {} are accepted", crate::engine::pipeline::MAX_COLUMNS),
        ));
    }
    // Header names as the planner and the stream read them.
    let names = crate::input::decode::header_names(first.iter().map(|n| n.as_bytes()));
    let mut under: &[Vec<String>] = &rows[1..];
    let mut columns = csv_columns(&names, under);
    dialect.header = has_header(first, &columns);
    if !dialect.header {
        under = &rows[..rows.len().min(max_records)];
        let names: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
        columns = csv_columns(&names, under);
    }
    let mut seen = HashSet::new();
    if let Some(dup) = columns.iter().map(|c| &c.name).find(|n| !seen.insert(n.as_str())) {
        return Err(Error::InvalidInput {
            location: sample.location.clone(),
            line: Some(1),
            column: Some(dup.clone()),
            reason: "the header names this column twice; sluicebox needs distinct names".into(),
        });
    }
    s.records = under.iter().filter(|r| r.len() == width).count();
    s.malformed = under.len() - s.records;
    s.columns = columns;
    s.dialect = Some(dialect);
    Ok(())
}

/// The columns' guesses from the rows that have as many fields as there are `names` (the
/// others will be rejects).
fn csv_columns(names: &[String], rows: &[Vec<String>]) -> Vec<ColumnGuess> {
    let mut tallies: Vec<ColumnTally> = names.iter().map(|n| ColumnTally::new(n)).collect();
    for row in rows.iter().filter(|r| r.len() == names.len()) {
        for (tally, value) in tallies.iter_mut().zip(row) {
            tally.add(Some(&Value::String(value.clone())));
        }
    }
    tallies.into_iter().map(ColumnTally::guess).collect()
}

/// Whether the row `first` is a header, given the guesses from the rows `under` it: yes when
/// its values do not fit those types in at least half of the typed columns (a header's names seldom read as numbers or
/// dates; a data row's values fit); with only text columns, yes unless a value is empty or
/// repeated (a header names every column, once).
pub fn has_header(first: &[String], under: &[ColumnGuess]) -> bool {
    let typed: Vec<(&ColumnGuess, &String)> =
        under.iter().zip(first).filter(|(g, _)| g.kind != ColumnType::String).collect();
    if typed.is_empty() {
        let mut seen = HashSet::new();
        return first.iter().all(|v| !v.trim().is_empty() && seen.insert(v.trim()));
    }
    let misfit = |&(g, value): &(&ColumnGuess, &String)| {
        let rule = ColumnRule::from(&ColumnConfig { required: false, ..g.config() });
        rule.apply(Value::String(value.clone())).is_err()
    };
    let misfits = typed.iter().filter(|c| misfit(c)).count();
    misfits * 2 >= typed.len()
}

fn sniff_json(s: &mut Sniffed, text: &[u8], sample: &Sample, max_records: usize) -> Result<()> {
    let mut values: Vec<&[u8]> = match s.format {
        Format::Jsonl => jsonl_lines(text, sample.truncated),
        _ => json_elements(text, sample)?,
    };
    let more = values.len() > max_records;
    values.truncate(max_records);
    s.whole = !sample.truncated && !more;
    let mut records: Vec<Map<String, Value>> = Vec::with_capacity(values.len());
    for v in values {
        match serde_json::from_slice::<Value>(v) {
            Ok(Value::Object(o)) => records.push(o),
            _ => s.malformed += 1,
        }
    }
    if records.is_empty() {
        return Err(Error::input(&sample.location, "holds no JSON object records in its first bytes"));
    }
    let mut names: Vec<String> = Vec::new();
    let mut known = HashSet::new();
    for r in &records {
        names.extend(r.keys().filter(|k| known.insert(k.to_string())).cloned());
    }
    let mut tallies: Vec<ColumnTally> = names.iter().map(|n| ColumnTally::new(n)).collect();
    for r in &records {
        for t in &mut tallies {
            let value = r.get(&t.name);
            t.add(value);
        }
    }
    s.records = records.len();
    s.columns = tallies.into_iter().map(ColumnTally::guess).collect();
    Ok(())
}

/// The non-blank lines of a JSON Lines sample; the last one only if the sample is whole or
/// it ended with a line break.
fn jsonl_lines(text: &[u8], truncated: bool) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    if truncated && lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
        lines.pop();
    }
    lines.into_iter().filter(|l| !l.iter().all(u8::is_ascii_whitespace)).collect()
}

/// The records of a JSON document sample (elements of its array), as the planner finds them;
/// a record still open at the end of a truncated sample is dropped.
fn json_elements<'a>(text: &'a [u8], sample: &Sample) -> Result<Vec<&'a [u8]>> {
    let mut scanner = JsonScanner::document();
    let mut out = Vec::new();
    let mut from = 0;
    for (i, &b) in text.iter().enumerate() {
        match scanner.push(b) {
            Some(JsonEvent::Start) => from = i,
            Some(JsonEvent::End { inclusive }) => out.push(&text[from..i + usize::from(inclusive)]),
            None => {}
        }
    }
    if !sample.truncated && scanner.finish().is_some() {
        out.push(&text[from..]);
    }
    if !scanner.saw_array() {
        // A document that is one object is one record, as the planner reads it.
        let object = text.trim_ascii();
        if object.starts_with(b"{") && !sample.truncated {
            return Ok(vec![object]);
        }
        return Err(Error::input(
            &sample.location,
            "is a JSON document without records: sluicebox reads one object (one record), an array of objects, \
             or {\"records\": [...]}",
        ));
    }
    Ok(out)
}

pub(super) fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Auto => "auto",
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_document_of_one_object_is_one_record_and_a_scalar_is_refused() {
        let sample = |text: &str| Sample {
            location: "x.json".into(),
            name: "x.json".into(),
            compression: Compression::None,
            compression_by: "its name",
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        };
        let one = "{\n  \"product\": {\"id\": \"1\"}\n}\n";
        let s = sample(one);
        assert_eq!(json_elements(&s.bytes, &s).unwrap(), [one.trim().as_bytes()]);
        let s = sample("42");
        assert!(json_elements(&s.bytes, &s).unwrap_err().to_string().contains("one object (one record)"), "scalar");
    }
    use crate::tools::init::tests::sample;

    #[test]
    fn delimiters_and_quotes_are_the_ones_that_split_the_records_evenly() {
        assert_eq!(detect_delimiter(b"a,b;c\n1,2;3\n4,5;6\n"), (b',', b'"'), "tie: the earlier");
        assert_eq!(detect_delimiter(b"a;b;c\n\"1;x\";2,5;3\n4;5,1;6\n"), (b';', b'"'));
        assert_eq!(detect_delimiter(b"a\tb\n1,5\t2\n"), (b'\t', b'"'));
        assert_eq!(detect_delimiter(b"a|b|c\n1|2|3\n"), (b'|', b'"'));
        assert_eq!(detect_delimiter(b"a,b\n'x,y',2\n'z,w',3\n"), (b',', b'\''));
        assert_eq!(detect_delimiter(b"one\ntwo\n"), (b',', b'"'), "one column: the default");
        assert_eq!(detect_delimiter(b"day\nJan 01, 1970\n"), (b';', b'"'), "the first row has the commonest count");
    }

    fn header_of(text: &str) -> bool {
        let s = sniff(&sample("t.csv", text.as_bytes()), 100).unwrap();
        s.dialect.unwrap().header
    }

    #[test]
    fn a_first_row_is_a_header_unless_it_fits_the_types_of_the_rows_under_it() {
        assert!(header_of("id,day\n1,2021-01-01\n2,2021-01-02\n"));
        assert!(!header_of("1,2021-01-01,x\n2,2021-01-02,y\n"), "two of three typed columns fit");
        assert!(header_of("name,city\nann,paris\nbob,rome\n"), "text only: distinct names");
        assert!(!header_of("ann,ann\nbob,rome\n"), "a header names a column once");
        assert!(!header_of("ann,\nbob,rome\n"), "and names every column");
        let s = sniff(&sample("t.csv", b"1,2021-01-01\n2,2021-01-02\n"), 100).unwrap();
        assert_eq!(s.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["column1", "column2"]);
        assert_eq!(s.records, 2, "the first row is a record");
    }

    #[test]
    fn dialect_bom_and_line_endings_are_detected_and_header_names_trimmed() {
        let s = sniff(&sample("t.txt", b"\xEF\xBB\xBF id ;n\r\n1;2.5\r\n2;3\r\n"), 100).unwrap();
        assert_eq!(s.format, Format::Csv);
        let d = s.dialect.unwrap();
        assert_eq!((d.delimiter, d.quote, d.header), (b';', b'"', true));
        assert!(s.bom && s.crlf);
        assert_eq!(s.columns[0].name, "id");
        assert_eq!((s.columns[0].kind, s.columns[1].kind), (ColumnType::Integer, ColumnType::Decimal));
        assert!(!sniff(&sample("t.csv", b"a\n1\n"), 10).unwrap().crlf);
    }

    #[test]
    fn the_format_is_the_content_s_unless_the_name_says_csv() {
        assert_eq!(detect_format("x.json", b"{\"a\":1}\n{\"a\":2}\n"), Format::Jsonl, "JSON Lines named .json");
        assert_eq!(detect_format("x", b"  [{\"a\":1}]"), Format::Json);
        assert_eq!(detect_format("x.jsonl", b"{\n \"a\": 1\n}"), Format::Json, "a pretty document");
        assert_eq!(detect_format("x.data", b"{\"records\": [{\"a\": 1}]}"), Format::Json);
        assert_eq!(detect_format("x.csv.gz", b"{\"a\":1}"), Format::Csv);
        assert_eq!(detect_format("x.data", b"a,b\n"), Format::Csv);
    }

    #[test]
    fn a_truncated_sample_drops_the_record_it_cuts() {
        let mut cut = sample("t.csv", b"a,b\n1,2\n3,4\n5,xyz");
        cut.truncated = true;
        let s = sniff(&cut, 100).unwrap();
        assert_eq!((s.records, s.whole, s.columns[1].kind), (2, false, ColumnType::Integer));
        let mut cut = sample("t.jsonl", b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": \"x");
        cut.truncated = true;
        assert_eq!(sniff(&cut, 100).unwrap().records, 2);
        let mut cut = sample("t.json", b"[{\"a\": 1}, {\"a\": 2}, {\"a\": \"x");
        cut.truncated = true;
        assert_eq!(sniff(&cut, 100).unwrap().records, 2);
        // A character cut in two by the end of the sample is not an encoding error.
        let mut cut = sample("t.csv", "a\nb\nc\né".as_bytes());
        cut.bytes.pop();
        cut.truncated = true;
        assert_eq!(sniff(&cut, 100).unwrap().records, 1);
    }

    #[test]
    fn the_record_cap_limits_the_sample_and_says_it_is_not_whole() {
        let s = sniff(&sample("t.csv", b"a\n1\n2\nx\n"), 2).unwrap();
        assert_eq!((s.records, s.whole, s.columns[0].kind), (2, false, ColumnType::Integer));
        assert!(sniff(&sample("t.csv", b"a\n1\n2\n"), 2).unwrap().whole);
    }

    #[test]
    fn empty_binary_and_other_encodings_are_errors_naming_the_file() {
        let err = |bytes: &[u8]| sniff(&sample("t.csv", bytes), 10).unwrap_err().to_string();
        assert_eq!(err(b""), "/data/t.csv: is empty: init needs records to look at");
        assert_eq!(err(b"\xEF\xBB\xBF \n"), "/data/t.csv: is empty: init needs records to look at");
        assert!(err(b"PK\x03\x04\x00\x00binary").starts_with("/data/t.csv: is not text (it holds NUL bytes"));
        assert_eq!(
            err(b"a\nb\n\xe9t\xe9\n"),
            "/data/t.csv line 3: is not UTF-8 text (byte 0xe9 at offset 4); sluicebox reads UTF-8 only"
        );
        assert!(err(b"a,a\n1,2\n").contains("column \"a\": the header names this column twice"));
        let json = sniff(&sample("t.json", b"{\"a\": 1, \"b\": 2"), 10).unwrap_err().to_string();
        assert!(json.starts_with("/data/t.json: "), "{json}");
    }
}
