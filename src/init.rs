//! `sluicebox init`: a commented job file from a sample of an input: its format and CSV
//! dialect, and for each column a type (with a date format), whether it is required and how
//! long its values run.
//!
//! Reading the sample ([`read_sample`]) is the only I/O; detection ([`sniff`]) and writing
//! ([`job_file`]) are pure functions of its bytes. A column's type is the first candidate in
//! [`CANDIDATES`] whose [`ColumnRule`] — the very rule `run` applies — accepts every value of
//! the sample, so a job file written from a sample rejects none of the sample's records.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::column::ColumnRule;
use crate::config::{ColumnConfig, ColumnType, Compression, Format};
use crate::cost::thousands;
use crate::decode::{CsvDialect, JsonEvent, JsonScanner};
use crate::error::{Error, Result};

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
    let (compression, compression_by) = match crate::bucket::compression_from_name(&name) {
        Some(c) => (c, "its name"),
        None => (crate::bucket::compression_from_magic(&head), "its first bytes"),
    };
    let decoded = crate::bucket::decompress_at_most(
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

/// One column as the sample shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnGuess {
    /// Its name in the header (or the JSON field).
    pub name: String,
    /// The most specific type every value fits.
    pub kind: ColumnType,
    /// The date or timestamp format (`None` for a timestamp: RFC 3339).
    pub format: Option<String>,
    /// Why this type or format, when another was close: the formats every value also fits,
    /// the values that ruled others out.
    pub why: Vec<String>,
    /// Whether no value was empty or missing.
    pub required: bool,
    /// Values that were not empty.
    pub values: usize,
    /// The longest value, in characters.
    pub longest: usize,
    /// The first value that was not empty.
    pub example: Option<String>,
    /// Whether every value was distinct (a key, perhaps).
    pub distinct: bool,
    /// JSON: whether a value is an object or an array (such a field is left undeclared).
    pub nested: bool,
}

impl ColumnGuess {
    /// `max_length` for the job file: for text columns, the smallest of 10, 20, 50, 100, 200,
    /// 500, … that is at least 1.25 times the longest value, so that a later file's slightly
    /// longer value is not a reject. Typed columns get none: their type bounds their text.
    pub fn max_length(&self) -> Option<usize> {
        if self.kind != ColumnType::String || self.longest == 0 {
            return None;
        }
        let want = self.longest + self.longest.div_ceil(4);
        let mut step = 10;
        loop {
            for m in [1, 2, 5] {
                if step * m >= want {
                    return Some(step * m);
                }
            }
            step = step.saturating_mul(10);
        }
    }

    /// The column as a job file declares it.
    pub fn config(&self) -> ColumnConfig {
        ColumnConfig {
            name: self.name.clone(),
            rename: None,
            kind: self.kind,
            format: self.format.clone(),
            required: self.required,
            max_length: self.max_length(),
        }
    }
}

/// The types a column may have, tried in this order; the first that accepts every value
/// wins. Dates and timestamps go ISO first, then month first (US), then day first: the order
/// in which a column that fits several (`03/04/21`) is read, with a comment saying so.
pub const CANDIDATES: &[(ColumnType, Option<&str>)] = &[
    (ColumnType::Boolean, None),
    (ColumnType::Integer, None),
    (ColumnType::Decimal, None),
    (ColumnType::Date, Some("%Y-%m-%d")),
    (ColumnType::Date, Some("%Y/%m/%d")),
    (ColumnType::Date, Some("%m/%d/%Y")),
    (ColumnType::Date, Some("%m/%d/%y")),
    (ColumnType::Date, Some("%m-%d-%Y")),
    (ColumnType::Date, Some("%d/%m/%Y")),
    (ColumnType::Date, Some("%d/%m/%y")),
    (ColumnType::Date, Some("%d-%m-%Y")),
    (ColumnType::Date, Some("%d.%m.%Y")),
    (ColumnType::Date, Some("%d.%m.%y")),
    (ColumnType::Date, Some("%d %b %Y")),
    (ColumnType::Date, Some("%b %d, %Y")),
    (ColumnType::Timestamp, None),
    (ColumnType::Timestamp, Some("%Y-%m-%dT%H:%M:%S%.f")),
    (ColumnType::Timestamp, Some("%Y-%m-%d %H:%M:%S%.f")),
    (ColumnType::Timestamp, Some("%Y-%m-%d %H:%M")),
    (ColumnType::Timestamp, Some("%m/%d/%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%m/%d/%Y %H:%M")),
    (ColumnType::Timestamp, Some("%m/%d/%y %H:%M")),
    (ColumnType::Timestamp, Some("%d/%m/%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%d/%m/%Y %H:%M")),
    (ColumnType::Timestamp, Some("%d.%m.%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%d.%m.%Y %H:%M")),
];

/// A decimal keeps about 15 significant digits (a 64-bit float): a longer number stays text.
const MAX_DECIMAL_DIGITS: usize = 15;

/// How a candidate type is named in comments.
fn candidate_name(kind: ColumnType, format: Option<&str>) -> String {
    match (kind, format) {
        (_, Some(f)) => f.to_string(),
        (ColumnType::Timestamp, None) => "RFC 3339".into(),
        (kind, None) => type_name(kind),
    }
}

/// A type as the job file's `type` key names it.
fn type_name(kind: ColumnType) -> String {
    format!("{kind:?}").to_lowercase()
}

/// One candidate type's standing in a column.
struct Trial {
    kind: ColumnType,
    format: Option<&'static str>,
    rule: ColumnRule,
    fits_first: bool,
    ruled_out_by: Option<String>,
}

impl Trial {
    fn new(kind: ColumnType, format: Option<&'static str>) -> Self {
        let config = ColumnConfig {
            name: String::new(),
            rename: None,
            kind,
            format: format.map(str::to_string),
            required: false,
            max_length: None,
        };
        Trial { kind, format, rule: ColumnRule::from(&config), fits_first: false, ruled_out_by: None }
    }

    fn alive(&self) -> bool {
        self.ruled_out_by.is_none()
    }

    /// Whether the column's rule takes `value` — and, beyond it, whether the type is the
    /// right reading of it: a leading zero (`007`) is a code, not a number; a decimal with
    /// more digits than a float keeps would lose some; a four-digit year is written with four
    /// digits (chrono reads `14` as the year 14).
    fn fits(&self, value: &Value) -> bool {
        let Ok(out) = self.rule.apply(value.clone()) else { return false };
        let text = value.as_str().map(str::trim);
        match self.kind {
            ColumnType::Integer => !text.is_some_and(leading_zero),
            ColumnType::Decimal => !text.is_some_and(|t| leading_zero(t) || significant_digits(t) > MAX_DECIMAL_DIGITS),
            ColumnType::Date | ColumnType::Timestamp => out.as_str().is_some_and(four_digit_year),
            ColumnType::String | ColumnType::Boolean => true,
        }
    }
}

fn leading_zero(t: &str) -> bool {
    let digits = t.trim_start_matches(['+', '-']).as_bytes();
    matches!(digits, [b'0', b'0'..=b'9', ..])
}

fn significant_digits(t: &str) -> usize {
    let mantissa = t.split(['e', 'E']).next().unwrap_or(t);
    mantissa.chars().filter(char::is_ascii_digit).skip_while(|&c| c == '0').count()
}

/// Whether a normalised date or timestamp (`YYYY-MM-DD…`) has a year from 1000 to 9999.
fn four_digit_year(iso: &str) -> bool {
    iso.get(..4).and_then(|y| y.parse::<u32>().ok()).is_some_and(|y| y >= 1000) && iso.as_bytes().get(4) == Some(&b'-')
}

/// A column's values seen so far, and which candidate types still fit them all.
pub struct ColumnTally {
    name: String,
    trials: Vec<Trial>,
    values: usize,
    seen: usize,
    longest: usize,
    example: Option<String>,
    /// Whether a boolean value was a word (`true`, `no`, …) rather than `0` or `1`.
    boolean_word: bool,
    distinct: Option<HashSet<String>>,
    nested: bool,
}

impl ColumnTally {
    /// A column named `name`, with no values yet.
    pub fn new(name: &str) -> Self {
        ColumnTally {
            name: name.to_string(),
            trials: CANDIDATES.iter().map(|&(kind, format)| Trial::new(kind, format)).collect(),
            values: 0,
            seen: 0,
            longest: 0,
            example: None,
            boolean_word: false,
            distinct: Some(HashSet::new()),
            nested: false,
        }
    }

    /// Count one record's value (`None`: the field is missing).
    pub fn add(&mut self, value: Option<&Value>) {
        self.seen += 1;
        let value = match value {
            None | Some(Value::Null) => return,
            Some(Value::String(s)) if s.is_empty() => return,
            Some(v) => v,
        };
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.values += 1;
        self.longest = self.longest.max(text.chars().count());
        self.nested |= value.is_object() || value.is_array();
        self.boolean_word |= value.is_boolean() || value.as_str().is_some_and(|s| !matches!(s.trim(), "0" | "1"));
        if let Some(set) = &mut self.distinct {
            if !set.insert(text.clone()) {
                self.distinct = None;
            }
        }
        let first = self.example.is_none();
        for t in self.trials.iter_mut().filter(|t| t.alive()) {
            let fits = t.fits(value);
            if first {
                t.fits_first = fits;
            }
            if !fits {
                t.ruled_out_by = Some(shown(&text));
            }
        }
        if first {
            self.example = Some(text);
        }
    }

    /// The column's type: the first candidate that took every value (a boolean only when a
    /// value was a word: a column of 0 and 1 is an integer), else text.
    pub fn guess(self) -> ColumnGuess {
        let chosen = match self.nested || self.values == 0 {
            true => None,
            false => self.trials.iter().position(|t| t.alive() && (t.kind != ColumnType::Boolean || self.boolean_word)),
        };
        let why = self.why(chosen);
        let (kind, format) =
            chosen.map_or((ColumnType::String, None), |i| (self.trials[i].kind, self.trials[i].format));
        ColumnGuess {
            name: self.name,
            kind,
            format: format.map(str::to_string),
            why,
            required: self.seen > 0 && self.values == self.seen,
            values: self.values,
            longest: self.longest,
            example: self.example,
            distinct: self.values > 1 && self.distinct.is_some(),
            nested: self.nested,
        }
    }

    /// Why the chosen candidate, when others were close: for a date or timestamp, the formats
    /// every value also fits (the choice is by [`CANDIDATES`]' order), or the value that ruled
    /// out the same format with day and month swapped; for text, the value that ruled out the
    /// type the first value had.
    fn why(&self, chosen: Option<usize>) -> Vec<String> {
        let name = |t: &Trial| candidate_name(t.kind, t.format);
        let Some(i) = chosen else {
            let ruled_out = self.trials.iter().filter(|t| t.fits_first && t.kind != ColumnType::Boolean);
            return ruled_out
                .take(1)
                .filter_map(|t| t.ruled_out_by.as_ref().map(|v| format!("{v} rules out {}, so it is text.", name(t))))
                .collect();
        };
        let c = &self.trials[i];
        let mut why = Vec::new();
        if c.kind == ColumnType::Integer && self.trials[0].alive() {
            why.push("only 0 and 1 in the sample: make it a boolean if it is a flag.".to_string());
        }
        if !matches!(c.kind, ColumnType::Date | ColumnType::Timestamp) {
            return why;
        }
        let also: Vec<String> = self
            .trials
            .iter()
            .enumerate()
            .filter(|&(j, t)| j != i && t.kind == c.kind && t.alive())
            .map(|(_, t)| name(t))
            .collect();
        if !also.is_empty() {
            why.push(format!(
                "ambiguous: every value also fits {}; {} is chosen because no value tells them apart, and \
                 init prefers ISO, then month first (US), then day first.",
                also.join(", "),
                name(c)
            ));
        }
        // The confusion that matters is day and month swapped: say which value settled it.
        let swapped = c.format.map(|f| f.replace("%m", "\0").replace("%d", "%m").replace('\0', "%d"));
        let other = self.trials.iter().find(|t| t.kind == c.kind && t.format.map(str::to_string) == swapped);
        if let Some((t, v)) = other.and_then(|t| Some((t, t.ruled_out_by.as_ref()?))) {
            why.push(format!("{v} rules out {}.", name(t)));
        }
        why
    }
}

/// A value as comments show it: quoted and escaped, cut at 40 characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

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
        _ => crate::bucket::format_from_name(name),
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
    if width > crate::pipeline::MAX_COLUMNS {
        return Err(Error::input(
            &sample.location,
            format!("splits into {width} columns; at most {} are accepted", crate::pipeline::MAX_COLUMNS),
        ));
    }
    // The planner reads header names trimmed.
    let names: Vec<String> = first.iter().map(|n| n.trim().to_string()).collect();
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
        return Err(Error::input(
            &sample.location,
            "is a JSON document without records: sluicebox reads an array of objects, or {\"records\": [...]}",
        ));
    }
    Ok(out)
}

/// Where the job file will be and the input it was written for, as the user named them: its
/// comments show the commands that use it.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The input, as given to `init`.
    pub input: &'a str,
    /// The job file (`job.toml` when printed).
    pub job: &'a str,
}

/// `key = value` with a comment aligned after it, as README.md's reference writes them.
fn commented(out: &mut String, setting: &str, comment: &str) {
    let _ = match comment.is_empty() {
        true => writeln!(out, "{setting}"),
        false => writeln!(out, "{setting:<23} # {}", comment_safe(comment)),
    };
}

/// `text` as comment lines of at most 100 characters.
fn comment_wrapped(out: &mut String, text: &str) {
    let text = comment_safe(text);
    let mut line = String::from("#");
    for word in text.split(' ') {
        if line.len() > 1 && line.chars().count() + 1 + word.chars().count() > 100 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

/// `word` as a shell reads it back: as it is, or in single quotes.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c)) {
        return word.to_string();
    }
    if !word.chars().any(char::is_control) {
        return format!("'{}'", word.replace('\'', "'\\''"));
    }
    // A control character (a newline would end the comment line the word is in): ANSI-C
    // quoting, with every one escaped.
    let escaped: String = word
        .chars()
        .map(|c| match c {
            '\'' | '\\' => format!("\\{c}"),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("$'{escaped}'")
}

/// `text` for a comment line: its control characters shown escaped (`\n`), so a file name
/// cannot end the comment and write keys into the job file.
fn comment_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// `1 record`, `1,234 records`.
fn records(n: usize) -> String {
    counted(n, "record")
}

/// `n` `thing`s, thousands separated.
fn counted(n: usize, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        n => format!("{} {thing}s", thousands(n as u64)),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Auto => "auto",
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Csv => "csv",
        Format::Jsonl => "jsonl",
        Format::Json => "json",
    }
}

/// The job file for what `s` found: `[input]`, `[chunking]` and `[[columns]]` filled in,
/// every other section present but commented out, each with a line on what it does.
pub fn job_file(s: &Sniffed, names: Names<'_>) -> String {
    let mut out = String::new();
    let o = &mut out;
    let sample = match s.whole {
        true => format!("the whole file ({})", records(s.records)),
        false => format!("its first {}", records(s.records)),
    };
    let _ = writeln!(o, "# A job for {}, written by `sluicebox init` from {sample}.", comment_safe(&s.name));
    let _ =
        writeln!(o, "# Every key is explained in README.md, \"The job file\". See what records become, then run it:");
    let (job, input) = (shell_word(names.job), shell_word(names.input));
    let _ = writeln!(o, "#   sluicebox check {job} --sample {input}");
    let _ = writeln!(o, "#   sluicebox run {input} --config {job}");
    let _ = writeln!(o);
    let _ = writeln!(o, "# jq programs (jaq) applied in order to each record; one with no output drops the record.");
    let _ = writeln!(o, "# A top-level key: it goes here, before the first [table].");
    let _ = writeln!(o, "# transform = ['.total = .unitsSold * .unitPrice', 'select(.region != \"Asia\")']");
    let _ = writeln!(o);
    input_section(o, s);
    let _ = writeln!(o);
    commented(o, "[chunking]", "a chunk ends at the first record boundary where a target is reached");
    commented(o, "bytes = 4194304", "4 MiB; memory use is about this × workers × 3");
    commented(o, "# records = 50000", "and/or a number of records");
    let _ = writeln!(o);
    columns_section(o, s);
    other_sections(o, s);
    out
}

fn input_section(o: &mut String, s: &Sniffed) {
    commented(o, "[input]", "");
    commented(o, &format!("format = \"{}\"", format_name(s.format)), "csv | jsonl | json; detected");
    let (c, by) = (s.compression, s.compression_by);
    let compression = match c {
        Compression::None | Compression::Auto => "auto (.gz/.zst, else magic bytes) | none | gzip | zstd".to_string(),
        _ => format!("auto | none | gzip | zstd; this file is {} (by {by})", compression_name(c)),
    };
    commented(o, "compression = \"auto\"", &compression);
    if let Some(d) = &s.dialect {
        let header = match d.header {
            true => "the first row names the columns",
            false => "no header row: the [[columns]] below name the fields, in order",
        };
        commented(o, &format!("header = {}", d.header), header);
        let delimiter = toml_str(&char::from(d.delimiter).to_string());
        commented(o, &format!("delimiter = {delimiter}"), "detected among , ; tab |");
        commented(o, &format!("quote = {}", toml_str(&char::from(d.quote).to_string())), "");
    }
    let mut notes = Vec::new();
    if s.bom && s.dialect.is_some() {
        notes.push("starts with a UTF-8 byte order mark");
    }
    if s.crlf {
        notes.push("ends its lines with CRLF");
    }
    if !notes.is_empty() {
        comment_wrapped(o, &format!("The file {}: sluicebox reads it as it is.", notes.join(" and ")));
    }
    if s.bom && s.dialect.is_none() {
        comment_wrapped(
            o,
            "The file starts with a UTF-8 byte order mark, which sluicebox skips only in CSV: before JSON \
             it makes the first record a reject (rule json). Remove it (`sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`).",
        );
    }
    if s.malformed > 0 {
        let what = match s.format {
            Format::Csv => "Records with another number of fields than the header will be rejects (rule fields)",
            _ => "Records that are not JSON objects will be rejects (rule json)",
        };
        comment_wrapped(o, &format!("{what}: {} in the sample.", thousands(s.malformed as u64)));
    }
}

fn columns_section(o: &mut String, s: &Sniffed) {
    let preamble = format!(
        "Columns, as the sample ({}) shows them. type: the most specific type that every value \
         fits; a later value that does not fit makes its record a reject naming the column. required = \
         true: no value was empty. max_length (text only): the longest value, rounded up to 10, 20, 50, \
         100, … to leave room. `as = \"name\"` would rename a field in the output.",
        records(s.records)
    );
    comment_wrapped(o, &preamble);
    if s.records == 0 {
        comment_wrapped(o, "The sample has no records under the header: every column is text.");
    }
    for (i, c) in s.columns.iter().enumerate() {
        let _ = writeln!(o);
        let mut about = vec![match c.required {
            true => "never empty".to_string(),
            false if c.values == 0 => "always empty".to_string(),
            false => format!("empty in {}", records(s.records - c.values)),
        }];
        if c.values > 0 {
            about.push(format!("longest {}", c.longest));
        }
        if let Some(e) = &c.example {
            about.push(format!("e.g. {}", shown(e)));
        }
        let _ = writeln!(o, "# {}: {}", shown(&c.name), about.join("; "));
        if c.nested {
            let _ = writeln!(o, "# It holds objects or arrays: left undeclared, it passes through as it is.");
            continue;
        }
        let _ = writeln!(o, "[[columns]]");
        let _ = writeln!(o, "name = {}", toml_str(&c.name));
        if c.name.is_empty() {
            commented(o, &format!("as = \"column{}\"", i + 1), "the header leaves it unnamed");
        }
        let dated = matches!(c.kind, ColumnType::Date | ColumnType::Timestamp);
        if !dated {
            c.why.iter().for_each(|why| comment_wrapped(o, why));
        }
        let _ = writeln!(o, "type = \"{}\"", type_name(c.kind));
        if dated {
            c.why.iter().for_each(|why| comment_wrapped(o, why));
        }
        match (&c.format, c.kind) {
            (Some(f), _) => {
                let _ = writeln!(o, "format = {}", toml_str(f));
            }
            (None, ColumnType::Timestamp) => commented(o, "# format: RFC 3339", "e.g. 2014-10-23T08:30:00Z"),
            _ => {}
        }
        if c.required {
            let _ = writeln!(o, "required = true");
        }
        if let Some(max) = c.max_length() {
            commented(o, &format!("max_length = {max}"), &format!("the longest in the sample is {}", c.longest));
        }
    }
}

fn other_sections(o: &mut String, s: &Sniffed) {
    let key = s
        .columns
        .iter()
        .find(|c| c.required && c.distinct && !c.nested)
        .map(|c| (c.name.as_str(), format!("{} is never empty and never repeats in the sample", shown(&c.name))));
    let (key, why) = key.unwrap_or(("id", "a field whose values identify a record".into()));
    let table = crate::job::default_table(&s.name);
    let fields = s.columns.iter().take(2).map(|c| toml_str(&c.name)).collect::<Vec<_>>().join(", ");
    let sections: [(&str, &[(String, &str)]); 7] = [
        (
            "# [validate]            # a JSON Schema applied to each typed record",
            &[(format!("# schema = {{ type = \"object\", required = [{}] }}", toml_str(key)), "inline, or:"), (
                "# schema_file = \"schema.json\"".into(),
                "relative to this file",
            )],
        ),
        (
            "# [enrich]              # add fields looked up by key in a reference (file, sqlite:TABLE, dynamodb://TABLE)",
            &[
                ("# source = \"reference.csv\"".into(), "relative to this file"),
                (format!("# key = {}", toml_str(key)), "the record field to look up"),
                ("# on_missing = \"reject\"".into(), "reject | keep | default"),
            ],
        ),
        (
            "# [key]                 # the fields that identify an item: writes become upserts (default: place in the input)",
            &[(format!("# fields = [{}]", toml_str(key)), &why)],
        ),
        (
            "# [sink]                # where records go (default: a table in the data directory's SQLite database)",
            &[
                ("# type = \"sqlite\"".into(), "sqlite | dynamodb (feature aws) | none"),
                (format!("# table = {}", toml_str(&table)), "default: the input's file name, as here"),
            ],
        ),
        (
            "# [output]              # the merged output file",
            &[
                ("# format = \"csv\"".into(), "csv | jsonl | parquet; default csv when the fields are known, else jsonl"),
                (format!("# fields = [{}]", fields), "default: every field"),
            ],
        ),
        (
            "# [[notify]]            # who hears how the job ended (repeatable)",
            &[("# to = \"https://hooks.example.com/sluicebox\"".into(), "https://… | sns://… | ses://… | smtp://…")],
        ),
        (
            "# [archive]             # where inputs go once their job has completed",
            &[("# to = \"archive/\"".into(), "archive/<job id>/<name> beside the input")],
        ),
    ];
    for (head, lines) in sections {
        let _ = writeln!(o);
        let _ = writeln!(o, "{head}");
        for (setting, comment) in lines {
            commented(o, setting, comment);
        }
    }
}

/// A job file drafted for one input.
#[derive(Debug, Clone)]
pub struct Draft {
    /// What was found.
    pub sniffed: Sniffed,
    /// The job file's text.
    pub text: String,
}

impl Draft {
    /// One line for the terminal: what the job file declares, and from how much.
    pub fn summary(&self, job: &str) -> String {
        let s = &self.sniffed;
        let count = |k: ColumnType| s.columns.iter().filter(|c| c.kind == k && !c.nested).count();
        let typed: Vec<String> = [
            (ColumnType::Integer, "integer"),
            (ColumnType::Decimal, "decimal"),
            (ColumnType::Boolean, "boolean"),
            (ColumnType::Date, "date"),
            (ColumnType::Timestamp, "timestamp"),
            (ColumnType::String, "text"),
        ]
        .into_iter()
        .filter(|&(k, _)| count(k) > 0)
        .map(|(k, name)| format!("{} {name}", count(k)))
        .collect();
        let whole = if s.whole { ", the whole file" } else { "" };
        format!(
            "wrote {job}: {} {}, {} ({}) from {}{whole}\n",
            format_name(s.format),
            s.name,
            counted(s.columns.iter().filter(|c| !c.nested).count(), "column"),
            typed.join(", "),
            records(s.records)
        )
    }
}

/// Read a sample of `input` (`sample_records` records at most) and draft its job file.
pub fn draft(input: &Path, names: Names<'_>, sample_records: usize) -> Result<Draft> {
    let sample = read_sample(input, sample_bytes(sample_records))?;
    let sniffed = sniff(&sample, sample_records.max(1))?;
    let text = job_file(&sniffed, names);
    Ok(Draft { sniffed, text })
}

/// Refuse to write the job file at `out` over an existing file without `force`, or over
/// `input` at all.
pub fn check_out(out: &Path, input: &Path, force: bool) -> Result<()> {
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    if same(out, input) {
        return Err(Error::config("--out", format!("{} is the input; write the job file elsewhere", out.display())));
    }
    if out.exists() && !force {
        return Err(Error::config("--out", format!("{} already exists; add --force to overwrite it", out.display())));
    }
    Ok(())
}

/// Write `text` to `out`: a new file, or over an existing one only with `force`.
pub fn write_job_file(out: &Path, text: &str, force: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    match force {
        true => options.write(true).create(true).truncate(true),
        false => options.write(true).create_new(true),
    };
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::config("--out", format!("{} already exists; add --force to overwrite it", out.display()))
        }
        _ => Error::config("--out", format!("cannot write {}: {e}", out.display())),
    };
    let mut file = options.open(out).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobConfig;
    use proptest::prelude::*;

    fn sample(name: &str, bytes: &[u8]) -> Sample {
        Sample {
            location: format!("/data/{name}"),
            name: name.into(),
            compression: Compression::None,
            compression_by: "its first bytes",
            bytes: bytes.to_vec(),
            truncated: false,
        }
    }

    fn guess(values: &[&str]) -> ColumnGuess {
        let mut t = ColumnTally::new("c");
        values.iter().for_each(|v| t.add(Some(&Value::String(v.to_string()))));
        t.guess()
    }

    fn kind_and_format(values: &[&str]) -> (ColumnType, Option<String>) {
        let g = guess(values);
        (g.kind, g.format)
    }

    #[test]
    fn a_column_is_the_first_type_that_takes_every_value_and_else_text() {
        use ColumnType::*;
        assert_eq!(kind_and_format(&["1", "-20", "+3"]), (Integer, None));
        assert_eq!(kind_and_format(&["1", "2.5", "1e3"]), (Decimal, None));
        assert_eq!(kind_and_format(&["yes", "no", "TRUE"]), (Boolean, None));
        assert_eq!(kind_and_format(&["2014-10-23", "2015-01-02"]), (Date, Some("%Y-%m-%d".into())));
        assert_eq!(kind_and_format(&["2014-10-23T08:30:00Z", "2014-10-23T08:30:00+02:00"]), (Timestamp, None));
        assert_eq!(
            kind_and_format(&["2014-10-23 08:30:00", "2014-10-23 08:30:00.250"]),
            (Timestamp, Some("%Y-%m-%d %H:%M:%S%.f".into()))
        );
        assert_eq!(kind_and_format(&["23 Oct 2014"]), (Date, Some("%d %b %Y".into())));
        assert_eq!(kind_and_format(&["1", "two"]), (String, None));
        assert_eq!(kind_and_format(&[]), (String, None));
    }

    #[test]
    fn a_number_that_would_lose_its_zeros_or_digits_stays_text() {
        assert_eq!(guess(&["007", "12"]).kind, ColumnType::String, "a leading zero is a code");
        assert_eq!(guess(&["0", "-0.5", "0.25"]).kind, ColumnType::Decimal, "a zero before the point is fine");
        assert_eq!(guess(&["12345678901234567890"]).kind, ColumnType::String, "over i64, and 20 digits");
        assert_eq!(guess(&["3.14159265358979"]).kind, ColumnType::Decimal);
        assert_eq!(guess(&["3.141592653589793"]).kind, ColumnType::String, "16 digits");
    }

    #[test]
    fn a_column_of_0_and_1_is_an_integer_with_a_note_and_words_make_it_boolean() {
        let g = guess(&["0", "1", "1"]);
        assert_eq!(g.kind, ColumnType::Integer);
        assert!(g.why[0].contains("make it a boolean"), "{:?}", g.why);
        assert_eq!(guess(&["0", "1", "no"]).kind, ColumnType::Boolean);
    }

    #[test]
    fn dates_that_fit_month_first_and_day_first_are_read_month_first_with_a_comment_saying_so() {
        let g = guess(&["03/04/21", "11/12/20", "01/02/19"]);
        assert_eq!((g.kind, g.format.as_deref()), (ColumnType::Date, Some("%m/%d/%y")));
        assert_eq!(g.why.len(), 1, "{:?}", g.why);
        assert!(g.why[0].starts_with("ambiguous: every value also fits %d/%m/%y; %m/%d/%y is chosen"), "{:?}", g.why);
        assert!(g.why[0].contains("month first (US), then day first"), "{:?}", g.why);
    }

    #[test]
    fn a_part_over_12_decides_between_month_first_and_day_first_and_says_so() {
        let g = guess(&["03/04/2021", "13/04/2021", "01/02/2019"]);
        assert_eq!(g.format.as_deref(), Some("%d/%m/%Y"));
        assert_eq!(g.why, ["\"13/04/2021\" rules out %m/%d/%Y."]);
        let g = guess(&["10/8/14", "2/22/15"]);
        assert_eq!(g.format.as_deref(), Some("%m/%d/%y"));
        assert_eq!(g.why, ["\"2/22/15\" rules out %d/%m/%y."]);
    }

    #[test]
    fn a_two_digit_year_is_not_read_as_a_four_digit_one() {
        // chrono's %Y takes `14` as the year 14.
        assert_eq!(guess(&["10/23/14"]).format.as_deref(), Some("%m/%d/%y"));
        assert_eq!(guess(&["10/23/2014"]).format.as_deref(), Some("%m/%d/%Y"));
        assert_eq!(guess(&["10/23/14", "10/23/2014"]).kind, ColumnType::String);
    }

    #[test]
    fn text_says_which_value_ruled_out_the_type_the_first_value_had() {
        let g = guess(&["1", "2", "n/a", "4"]);
        assert_eq!(g.kind, ColumnType::String);
        assert_eq!(g.why, ["\"n/a\" rules out integer, so it is text."]);
    }

    #[test]
    fn required_longest_example_and_distinct_are_counted_over_values_that_are_not_empty() {
        let g = guess(&["ab", "", "abcé"]);
        assert!(!g.required);
        assert_eq!((g.values, g.longest, g.example.as_deref(), g.distinct), (2, 4, Some("ab"), true));
        let mut t = ColumnTally::new("j");
        for v in [Some(json!("x")), None, Some(Value::Null), Some(json!("x"))] {
            t.add(v.as_ref());
        }
        let g = t.guess();
        assert!(!g.required && !g.distinct && g.values == 2);
        assert!(guess(&["a", "b"]).required);
    }

    use serde_json::json;

    #[test]
    fn max_length_rounds_the_longest_up_to_a_round_number_with_room() {
        let text = |longest| ColumnGuess { longest, ..guess(&["x"]) };
        let rounded: Vec<_> = [1, 8, 9, 16, 32, 33, 40, 41, 81, 401].map(|n| text(n).max_length().unwrap()).into();
        assert_eq!(rounded, [10, 10, 20, 20, 50, 50, 50, 100, 200, 1000]);
        assert_eq!(guess(&["12"]).max_length(), None, "a type bounds its text");
        assert_eq!(guess(&[""]).max_length(), None, "nothing to go by");
    }

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
    fn rows_with_another_number_of_fields_are_counted_apart_and_not_typed() {
        let s = sniff(&sample("t.csv", b"a,b\n1,2\n3\n4,5,6\n7,8\n"), 100).unwrap();
        assert_eq!((s.records, s.malformed), (2, 2));
        assert_eq!(s.columns[0].kind, ColumnType::Integer);
        assert!(job_file(&s, NAMES).contains("# Records with another number of fields than the header will be rejects"));
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
    fn json_fields_are_the_union_of_the_records_keys_and_nested_ones_stay_undeclared() {
        let text = b"{\"a\": 1, \"o\": {\"x\": 1}}\n[1]\n\n{\"b\": \"2021-01-02\", \"a\": 2.5}\n";
        let s = sniff(&sample("t.jsonl", text), 100).unwrap();
        assert_eq!((s.format, s.records, s.malformed), (Format::Jsonl, 2, 1));
        let names: Vec<_> = s.columns.iter().map(|c| (c.name.as_str(), c.kind, c.required, c.nested)).collect();
        assert_eq!(
            names,
            [
                ("a", ColumnType::Decimal, true, false),
                ("o", ColumnType::String, false, true),
                ("b", ColumnType::Date, false, false)
            ]
        );
        let job = job_file(&s, NAMES);
        assert!(
            job.contains("# \"o\": empty in 1 record; longest 7; e.g. \"{\\\"x\\\":1}\"\n# It holds objects"),
            "{job}"
        );
        let doc = sniff(&sample("t.json", b"{\"records\": [{\"a\": true}, {\"a\": false}]}"), 100).unwrap();
        assert_eq!((doc.format, doc.records, doc.columns[0].kind), (Format::Json, 2, ColumnType::Boolean));
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

    const NAMES: Names<'static> = Names { input: "in.csv", job: "job.toml" };

    /// A job file is what `run` reads: it parses and checks, and declares what was guessed.
    fn checked(s: &Sniffed) -> JobConfig {
        let text = job_file(s, NAMES);
        let config = JobConfig::from_toml(&text, "job.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.clone().validate(Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config
    }

    #[test]
    fn the_job_file_declares_what_was_found_and_comments_out_the_rest() {
        let s = sniff(&sample("t.csv", "\"na\"\"me\",n,\nx\\y,1,\n".as_bytes()), 10).unwrap();
        let config = checked(&s);
        let cols: Vec<_> = config.columns.iter().map(|c| (c.name.as_str(), c.kind, c.max_length)).collect();
        assert_eq!(
            cols,
            [
                ("na\"me", ColumnType::String, Some(10)),
                ("n", ColumnType::Integer, None),
                ("", ColumnType::String, None)
            ]
        );
        assert_eq!(config.columns[2].rename.as_deref(), Some("column3"), "an unnamed column gets a name");
        assert_eq!(config.input.delimiter, ",");
        let text = job_file(&s, NAMES);
        for section in [
            "# [validate]",
            "# [enrich]",
            "# [key]",
            "# [sink]",
            "# [output]",
            "# [[notify]]",
            "# [archive]",
            "# transform = ",
        ] {
            assert!(text.contains(&format!("\n{section}")), "{section} missing:\n{text}");
        }
        assert!(text.contains("#   sluicebox run in.csv --config job.toml\n"), "{text}");
        let spaced = job_file(&s, Names { input: "my data/it's.csv", job: "job.toml" });
        assert!(spaced.contains("#   sluicebox run 'my data/it'\\''s.csv' --config job.toml\n"), "{spaced}");
        assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
    }

    fn quoted_csv(rows: &[Vec<String>], delimiter: u8, crlf: bool) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        rows.iter().for_each(|r| w.write_record(r).unwrap());
        w.into_inner().unwrap()
    }

    /// A column of values of one kind, some empty; the date formats are the candidates'.
    fn column() -> impl Strategy<Value = (Option<&'static str>, Vec<String>)> {
        let dates: Vec<&'static str> =
            CANDIDATES.iter().filter(|c| c.0 == ColumnType::Date).filter_map(|c| c.1).collect();
        let value = |kind: u8, format: Option<&'static str>| -> BoxedStrategy<String> {
            match kind {
                0 => any::<i64>().prop_map(|n| n.to_string()).boxed(),
                1 => (-99_999i32..99_999, 0u8..100).prop_map(|(a, b)| format!("{a}.{b:02}")).boxed(),
                2 => prop::sample::select(vec!["true", "false", "yes", "no"]).prop_map(str::to_string).boxed(),
                3 => (1i32..=9999, 1u32..=366)
                    .prop_map(move |(y, d)| {
                        let date = chrono::NaiveDate::from_yo_opt(y.max(1970), d.min(365)).unwrap();
                        date.format(format.unwrap_or("%Y-%m-%d")).to_string()
                    })
                    .boxed(),
                _ => "[a-zé 0-9'\"\n]{0,12}".boxed(),
            }
        };
        (0u8..5, prop::sample::select(dates)).prop_flat_map(move |(kind, format)| {
            let format = (kind == 3).then_some(format);
            let cell = prop_oneof![1 => Just(String::new()), 6 => value(kind, format)];
            (Just(format), prop::collection::vec(cell, 1..25))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the file, the job file written from it parses, checks, and rejects none of
        /// its records; the dialect is found; a date column's format is the one it was written
        /// in, or another that every value also fits, and the comment says so.
        #[test]
        fn a_job_file_written_from_a_sample_rejects_none_of_its_records(
            columns in prop::collection::vec(column(), 1..6),
            delimiter in prop::sample::select(vec![b',', b';', b'\t', b'|']),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let records = columns.iter().map(|c| c.1.len()).min().unwrap_or(0);
            let mut rows = vec![(0..columns.len()).map(|i| format!("col {i}")).collect::<Vec<_>>()];
            rows.extend((0..records).map(|r| columns.iter().map(|c| c.1[r].clone()).collect()));
            // A row of empty fields only is a blank line to a CSV reader: it is no record.
            rows.retain(|r| r.iter().any(|v| !v.is_empty()) || r.len() > 1);
            let mut bytes = if bom { BOM.to_vec() } else { Vec::new() };
            bytes.extend(quoted_csv(&rows, delimiter, crlf));
            let s = sniff(&sample("t.csv", &bytes), 1000).unwrap();
            let d = s.dialect.unwrap();
            prop_assert!(d.header);
            if columns.len() > 1 {
                prop_assert_eq!((d.delimiter, d.quote), (delimiter, b'"'));
            }
            prop_assert_eq!((s.bom, s.crlf), (bom, crlf));
            prop_assert_eq!(s.records, rows.len() - 1);
            let config = checked(&s);
            let rules: Vec<ColumnRule> = config.columns.iter().map(ColumnRule::from).collect();
            for row in &rows[1..] {
                for (rule, value) in rules.iter().zip(row) {
                    prop_assert!(rule.apply(Value::String(value.clone())).is_ok(), "{:?} rejects {:?}", rule, value);
                }
            }
            for ((written_in, _), guess) in columns.iter().zip(&s.columns) {
                let (Some(f), Some(g)) = (written_in, &guess.format) else { continue };
                if f != g {
                    prop_assert!(guess.why.iter().any(|w| w.starts_with("ambiguous") && w.contains(f)), "{:?}", guess);
                }
            }
        }
    }
}
