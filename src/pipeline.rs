//! The pipeline a worker runs on each record: decode → type columns → validate (JSON Schema)
//! → transform (jq) → enrich (lookup) → key, and the encoding of the chunk's output part.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ColumnConfig, ColumnType, Format, JobSpec, OutputFormat};
use crate::error::{Error, Result};
use crate::lookup::LookupTable;
use crate::plan::{Chunk, CsvDialect, JsonEvent, JsonScanner};
use crate::sink::SinkItem;

/// A record: field name → JSON value, in field order.
pub type Record = Map<String, Value>;

type Session<'a> = Option<crate::lookup::LookupSession<'a>>;

/// Receives batches of kept records (item key, record) for the sink.
pub type SendBatch<'a> = dyn FnMut(Vec<SinkItem>) + 'a;

/// A compiled jq program.
pub type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// Compile one jq program with jq's standard library, or say why it does not compile.
pub fn compile_jq(code: &str) -> std::result::Result<JqFilter, String> {
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
        format!("jq program {code:?} does not parse: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
    })?;
    Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
        format!("jq program {code:?} does not compile: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
    })
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The input object.
    pub input: String,
    /// 1-based record number within the input (header excluded).
    pub record: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// The field at fault, when there is one.
    pub field: Option<String>,
    /// The rule that failed: `fields`, `utf8`, `json`, `required`, `max_length`, `type`,
    /// `schema.<keyword>`, `transform` or `lookup`.
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The record as it appeared in the input.
    pub raw: String,
}

struct Fault {
    field: Option<String>,
    rule: String,
    message: String,
}

impl Fault {
    fn new(field: Option<&str>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Fault { field: field.map(str::to_string), rule: rule.into(), message: message.into() }
    }
}

/// A declared column, ready to check values.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// Input name.
    pub name: String,
    /// Output name.
    pub out: String,
    kind: ColumnType,
    format: Option<String>,
    /// The date format, parsed once (chrono would re-parse the format string per value).
    date_items: Option<Arc<[chrono::format::Item<'static>]>>,
    required: bool,
    max_length: Option<usize>,
}

impl From<&ColumnConfig> for ColumnRule {
    fn from(c: &ColumnConfig) -> Self {
        ColumnRule {
            name: c.name.clone(),
            out: c.out_name().to_string(),
            kind: c.kind,
            format: c.format.clone(),
            date_items: (c.kind == ColumnType::Date)
                .then(|| {
                    chrono::format::StrftimeItems::new(c.format.as_deref().unwrap_or("%Y-%m-%d")).parse_to_owned().ok()
                })
                .flatten()
                .map(Arc::from),
            required: c.required,
            max_length: c.max_length,
        }
    }
}

impl ColumnRule {
    /// The column's value type.
    pub fn kind(&self) -> ColumnType {
        self.kind
    }

    /// Check and convert one value; the error says which rule failed and why.
    pub fn check(&self, value: Value) -> std::result::Result<Value, String> {
        self.apply(value).map_err(|f| format!("{} ({})", f.message, f.rule))
    }

    /// Check and convert one value (text from CSV, any JSON value from JSON inputs).
    fn apply(&self, value: Value) -> std::result::Result<Value, Fault> {
        let text = match value {
            Value::Null => return self.empty(),
            Value::String(s) => s,
            other if self.kind == ColumnType::String => other.to_string(),
            other => return self.typed_json(other),
        };
        if text.is_empty() {
            return if self.kind == ColumnType::String && !self.required {
                Ok(Value::String(text))
            } else {
                self.empty()
            };
        }
        if let Some(max) = self.max_length {
            let n = text.chars().count();
            if n > max {
                return Err(self.fault("max_length", format!("is {n} characters long; at most {max} allowed")));
            }
        }
        self.parse(text)
    }

    fn empty(&self) -> std::result::Result<Value, Fault> {
        if self.required {
            Err(self.fault("required", "is required but empty"))
        } else {
            Ok(Value::Null)
        }
    }

    fn fault(&self, rule: &str, message: impl Into<String>) -> Fault {
        Fault::new(Some(&self.name), rule, message)
    }

    fn parse(&self, text: String) -> std::result::Result<Value, Fault> {
        let t = text.trim();
        let bad = |what: &str| self.fault("type", format!("expected {what}, got {text:?}"));
        match self.kind {
            ColumnType::String => Ok(Value::String(text)),
            ColumnType::Integer => t.parse::<i64>().map(Value::from).map_err(|_| bad("an integer")),
            ColumnType::Decimal => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a decimal number")),
            ColumnType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "y" | "t" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "n" | "f" => Ok(Value::Bool(false)),
                _ => Err(bad("true or false")),
            },
            ColumnType::Date => self.parse_date(t).map(|d| Value::String(iso_date(d))).ok_or_else(|| {
                bad(&format!("a date like {}", example_date(self.format.as_deref().unwrap_or("%Y-%m-%d"))))
            }),
            ColumnType::Timestamp => parse_timestamp(t, self.format.as_deref())
                .map(|ts| Value::String(ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
                .ok_or_else(|| {
                    bad(&format!(
                        "a timestamp like {}",
                        self.format.as_deref().map(example_date).unwrap_or("2014-10-23T08:30:00Z".into())
                    ))
                }),
        }
    }

    fn parse_date(&self, t: &str) -> Option<chrono::NaiveDate> {
        let items = self.date_items.as_deref()?;
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, t, items.iter()).ok()?;
        parsed.to_naive_date().ok()
    }

    fn typed_json(&self, v: Value) -> std::result::Result<Value, Fault> {
        let ok = match self.kind {
            ColumnType::Integer => v.as_i64().is_some(),
            ColumnType::Decimal => v.is_number(),
            ColumnType::Boolean => v.is_boolean(),
            _ => false,
        };
        if ok {
            Ok(v)
        } else {
            Err(self.fault("type", format!("expected {:?}, got {v}", self.kind).to_lowercase()))
        }
    }
}

fn iso_date(d: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    if (0..=9999).contains(&d.year()) {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        d.format("%Y-%m-%d").to_string()
    }
}

fn example_date(fmt: &str) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2014, 10, 23).and_then(|d| d.and_hms_opt(8, 30, 0));
    d.map(|d| d.format(fmt).to_string()).unwrap_or_default()
}

fn parse_timestamp(t: &str, fmt: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    match fmt {
        None => DateTime::parse_from_rfc3339(t).ok().map(|d| d.with_timezone(&Utc)),
        Some(fmt) => DateTime::parse_from_str(t, fmt)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(t, fmt).ok().map(|n| n.and_utc())),
    }
}

/// Field layout of one CSV input: header position → output name and rule.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    headers: Vec<String>,
    names: Vec<String>,
    rules: Vec<Option<usize>>,
}

/// What the pipeline did with one record.
pub enum Outcome {
    /// Kept: the sink item (key, position, record).
    Written(SinkItem),
    /// Rejected.
    Rejected(Reject),
    /// Dropped by a transform.
    Filtered,
}

/// Counts for one chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records kept and written.
    pub written: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records dropped by a transform.
    pub filtered: u64,
    /// Rejects per rule.
    pub rejects_by_rule: BTreeMap<String, u64>,
}

/// What processing a chunk produced, before anything is written.
pub struct ChunkOutput {
    /// The encoded output part (no header).
    pub output: Vec<u8>,
    /// The rejects part, JSON Lines.
    pub rejects: Vec<u8>,
    /// Counts.
    pub counts: Counts,
}

/// Everything a worker needs to run records through, built once per worker.
pub struct Pipeline {
    rules: Vec<ColumnRule>,
    by_name: HashMap<String, usize>,
    schema: Option<jsonschema::Validator>,
    transforms: Vec<JqFilter>,
    lookup: Option<Arc<LookupTable>>,
    key_fields: Vec<String>,
    output_fields: Option<Vec<String>>,
    output_format: OutputFormat,
    dialect: CsvDialect,
}

impl Pipeline {
    /// Build from a validated spec and the loaded lookup table.
    pub fn new(spec: &JobSpec, lookup: Option<Arc<LookupTable>>, output_fields: Option<Vec<String>>) -> Result<Self> {
        let rules: Vec<ColumnRule> = spec.config.columns.iter().map(ColumnRule::from).collect();
        let by_name = rules.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        let schema = match &spec.schema {
            None => None,
            Some(s) => Some(jsonschema::validator_for(s).map_err(|e| Error::config("validate.schema", e.to_string()))?),
        };
        let transforms = spec
            .config
            .transform
            .iter()
            .enumerate()
            .map(|(i, t)| compile_jq(t).map_err(|r| Error::config(format!("transform[{i}]"), r)))
            .collect::<Result<_>>()?;
        Ok(Pipeline {
            rules,
            by_name,
            schema,
            transforms,
            lookup,
            key_fields: spec.config.key.fields.clone(),
            output_format: output_format(spec, output_fields.is_some()),
            output_fields,
            dialect: CsvDialect { delimiter: spec.delimiter, quote: spec.quote, header: spec.config.input.header },
        })
    }

    /// Map a CSV header (or the declared columns, without a header) to output fields.
    /// Fails when a declared column is missing from the header.
    pub fn csv_layout(&self, header: Option<&[String]>, location: &str) -> Result<CsvLayout> {
        let names: Vec<String> = match header {
            Some(h) => h.to_vec(),
            None => self.rules.iter().map(|r| r.name.clone()).collect(),
        };
        if let Some(dup) = names.iter().enumerate().find_map(|(i, n)| names[..i].contains(n).then_some(n)) {
            return Err(Error::InvalidInput {
                location: location.to_string(),
                line: Some(1),
                column: Some(dup.clone()),
                reason: "the header names this column twice".into(),
            });
        }
        for r in &self.rules {
            if !names.contains(&r.name) {
                return Err(Error::InvalidInput {
                    location: location.to_string(),
                    line: Some(1),
                    column: Some(r.name.clone()),
                    reason: format!("the header lacks the declared column; it has {names:?}"),
                });
            }
        }
        let rules = names.iter().map(|n| self.by_name.get(n).copied()).collect();
        let headers = names.clone();
        let names = names
            .iter()
            .map(|n| self.by_name.get(n).map(|&i| self.rules[i].out.clone()).unwrap_or_else(|| n.clone()))
            .collect();
        Ok(CsvLayout { headers, names, rules })
    }

    /// Process the bytes of one chunk. Kept records go to `sink` in batches of `batch` items
    /// (`None`: there is no sink, and records are only encoded).
    pub fn run_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        bytes: &[u8],
        mut sink: Option<(usize, &mut SendBatch<'_>)>,
    ) -> Result<ChunkOutput> {
        let mut out = ChunkOutput {
            // CSV output is built by its own writer below; JSON Lines grows this buffer.
            output: Vec::new(),
            rejects: Vec::new(),
            counts: Counts::default(),
        };
        let mut csv_out = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        let mut items = Vec::new();
        let mut emit = |outcome: Outcome, out: &mut ChunkOutput| match outcome {
            Outcome::Written(item) => {
                out.counts.written += 1;
                self.encode(&item.record, &mut csv_out, &mut out.output);
                if let Some((batch, send)) = sink.as_mut() {
                    items.push(item);
                    if items.len() >= *batch {
                        send(std::mem::replace(&mut items, Vec::with_capacity(*batch)));
                    }
                }
            }
            Outcome::Rejected(r) => {
                out.counts.rejected += 1;
                *out.counts.rejects_by_rule.entry(r.rule.clone()).or_default() += 1;
                // A Reject holds only strings and numbers: serializing it cannot fail.
                let _ = serde_json::to_writer(&mut out.rejects, &r);
                out.rejects.push(b'\n');
            }
            Outcome::Filtered => out.counts.filtered += 1,
        };
        let mut session = self.lookup.as_ref().map(|l| l.session());
        if let Some(s) = session.as_mut().filter(|s| s.is_remote()) {
            // A remote reference is asked for the chunk's keys in batches: a first pass only
            // collects them.
            s.start_collecting();
            let first = &mut session;
            match ctx.format {
                Format::Csv => self.csv_records(ctx, bytes, first, |_| {}),
                Format::Jsonl => self.jsonl_records(ctx, bytes, first, |_| {}),
                Format::Json => self.json_records(ctx, bytes, first, |_| {}),
            }
            if let Some(s) = session.as_mut() {
                s.prefetch()?;
            }
        }
        let s = &mut session;
        match ctx.format {
            Format::Csv => self.csv_records(ctx, bytes, s, |o| emit(o, &mut out)),
            Format::Jsonl => self.jsonl_records(ctx, bytes, s, |o| emit(o, &mut out)),
            Format::Json => self.json_records(ctx, bytes, s, |o| emit(o, &mut out)),
        }
        if let Some(e) = session.as_mut().and_then(|s| s.take_error()) {
            return Err(e);
        }
        if let Some((_, send)) = sink {
            if !items.is_empty() {
                send(items);
            }
        }
        if self.output_format == OutputFormat::Csv {
            let _ = csv_out.flush();
            out.output = csv_out.into_inner().unwrap_or_default();
        }
        Ok(out)
    }

    fn encode(&self, rec: &Record, csv_out: &mut csv::Writer<Vec<u8>>, jsonl: &mut Vec<u8>) {
        match (self.output_format, &self.output_fields) {
            (OutputFormat::Csv, Some(fields)) => {
                // Writing to a Vec cannot fail.
                for value in values_of(rec, fields) {
                    let _ = match value {
                        None | Some(Value::Null) => csv_out.write_field(""),
                        Some(Value::String(s)) => csv_out.write_field(s),
                        Some(other) => csv_out.write_field(other.to_string()),
                    };
                }
                let _ = csv_out.write_record(None::<&[u8]>);
            }
            _ => {
                let _ = serde_json::to_writer(&mut *jsonl, rec);
                jsonl.push(b'\n');
            }
        }
    }

    fn csv_records(&self, ctx: &ChunkContext<'_>, bytes: &[u8], s: &mut Session<'_>, mut emit: impl FnMut(Outcome)) {
        let Some(layout) = ctx.layout else { return };
        let mut rdr = self.dialect.reader(bytes);
        let mut row = csv::ByteRecord::new();
        let mut number = ctx.chunk.first_record;
        let mut cursor = LineCursor { pos: 0, line: ctx.chunk.first_line };
        loop {
            let start = rdr.position().byte() as usize;
            match rdr.read_byte_record(&mut row) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Reading from a slice fails only on malformed input that csv cannot
                    // resynchronise after; everything after it in the chunk is rejected.
                    let (line, raw) = cursor.locate(bytes, start, bytes.len());
                    emit(Outcome::Rejected(ctx.reject(number, line, raw, Fault::new(None, "csv", e.to_string()))));
                    break;
                }
            }
            let end = rdr.position().byte() as usize;
            let (line, raw) = cursor.locate(bytes, start, end);
            let outcome = match self.csv_fields(layout, &row) {
                Ok(rec) => self.finish(ctx, s, number, line, raw, rec),
                Err(f) => Outcome::Rejected(ctx.reject(number, line, raw, f)),
            };
            emit(outcome);
            number += 1;
        }
    }

    fn csv_fields(&self, layout: &CsvLayout, row: &csv::ByteRecord) -> std::result::Result<Record, Fault> {
        if row.len() != layout.names.len() {
            return Err(Fault::new(
                None,
                "fields",
                format!("expected {} fields, found {}", layout.names.len(), row.len()),
            ));
        }
        let mut rec = Record::with_capacity(row.len() + 8);
        for (((field, name), rule), header) in row.iter().zip(&layout.names).zip(&layout.rules).zip(&layout.headers) {
            let text = std::str::from_utf8(field)
                .map_err(|e| Fault::new(Some(header), "utf8", format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
            let value = match rule {
                Some(i) => self.rules[*i].apply(Value::String(text.to_string()))?,
                None => Value::String(text.to_string()),
            };
            rec.insert(name.clone(), value);
        }
        Ok(rec)
    }

    fn jsonl_records(&self, ctx: &ChunkContext<'_>, bytes: &[u8], s: &mut Session<'_>, mut emit: impl FnMut(Outcome)) {
        let mut number = ctx.chunk.first_record;
        for (this_line, text) in (ctx.chunk.first_line..).zip(bytes.split_inclusive(|&b| b == b'\n')) {
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let raw = text.strip_suffix(b"\n").unwrap_or(text);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            emit(self.json_record(ctx, s, number, this_line, raw, text));
            number += 1;
        }
    }

    fn json_records(&self, ctx: &ChunkContext<'_>, bytes: &[u8], s: &mut Session<'_>, mut emit: impl FnMut(Outcome)) {
        let mut scanner = JsonScanner::elements();
        let mut number = ctx.chunk.first_record;
        let mut line = ctx.chunk.first_line;
        let (mut start, mut start_line) = (0usize, line);
        let mut one = |end: usize, start: usize, start_line: u64, number: &mut u64| {
            let text = &bytes[start..end];
            emit(self.json_record(ctx, s, *number, start_line, text, text));
            *number += 1;
        };
        for (i, &b) in bytes.iter().enumerate() {
            match scanner.push(b) {
                Some(JsonEvent::Start) => (start, start_line) = (i, line),
                Some(JsonEvent::End { inclusive }) => one(i + usize::from(inclusive), start, start_line, &mut number),
                None => {}
            }
            if b == b'\n' {
                line += 1;
            }
        }
        if scanner.finish().is_some() {
            one(bytes.len(), start, start_line, &mut number);
        }
    }

    fn json_record(
        &self,
        ctx: &ChunkContext<'_>,
        s: &mut Session<'_>,
        number: u64,
        line: u64,
        raw: &[u8],
        text: &[u8],
    ) -> Outcome {
        let rec = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                let f = Fault::new(None, "json", format!("expected a JSON object, got {}", json_kind(&other)));
                return Outcome::Rejected(ctx.reject(number, line, raw, f));
            }
            Err(e) => {
                // serde_json counts lines from the record's start; report the input's line.
                let at = line + e.line().saturating_sub(1) as u64;
                let f = Fault::new(None, "json", format!("malformed JSON at line {at}, column {}: {e}", e.column()));
                return Outcome::Rejected(ctx.reject(number, line, raw, f));
            }
        };
        match self.type_json(rec) {
            Ok(rec) => self.finish(ctx, s, number, line, raw, rec),
            Err(f) => Outcome::Rejected(ctx.reject(number, line, raw, f)),
        }
    }

    /// Type the declared fields of a JSON record, keeping the record's field order; declared
    /// fields it lacks are checked as null (and added at the end).
    fn type_json(&self, rec: Record) -> std::result::Result<Record, Fault> {
        if self.rules.is_empty() {
            return Ok(rec);
        }
        let mut seen = vec![false; self.rules.len()];
        let mut out = Record::with_capacity(rec.len() + self.rules.len());
        for (k, v) in rec {
            match self.by_name.get(&k) {
                Some(&i) => {
                    seen[i] = true;
                    out.insert(self.rules[i].out.clone(), self.rules[i].apply(v)?);
                }
                None => {
                    out.insert(k, v);
                }
            }
        }
        for (r, _) in self.rules.iter().zip(seen).filter(|(_, seen)| !seen) {
            out.insert(r.out.clone(), r.apply(Value::Null)?);
        }
        Ok(out)
    }

    /// The steps after decoding: schema, transforms, lookup, key.
    fn finish(
        &self,
        ctx: &ChunkContext<'_>,
        s: &mut Session<'_>,
        number: u64,
        line: u64,
        raw: &[u8],
        rec: Record,
    ) -> Outcome {
        match self.checked(ctx, s, number, rec) {
            Ok(Some((record, key))) => {
                Outcome::Written(SinkItem { key, seq: SinkItem::seq_of(ctx.chunk.input, number), record })
            }
            Ok(None) => Outcome::Filtered,
            Err(f) => Outcome::Rejected(ctx.reject(number, line, raw, f)),
        }
    }

    fn checked(
        &self,
        ctx: &ChunkContext<'_>,
        s: &mut Session<'_>,
        number: u64,
        rec: Record,
    ) -> std::result::Result<Option<(Record, String)>, Fault> {
        let mut value = Value::Object(rec);
        if let Some(schema) = &self.schema {
            if let Some(e) = schema.iter_errors(&value).next() {
                let path = e.instance_path().to_string();
                let field = path.strip_prefix('/').filter(|p| !p.is_empty());
                let rule = format!("schema.{}", e.kind().keyword());
                return Err(Fault::new(field, rule, e.to_string()));
            }
        }
        for t in &self.transforms {
            match run_jq(t, value)? {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        let Value::Object(mut rec) = value else {
            return Err(Fault::new(
                None,
                "transform",
                format!("the transform must yield an object, got {}", json_kind(&value)),
            ));
        };
        if let (Some(lookup), Some(session)) = (&self.lookup, s.as_mut()) {
            lookup.enrich(&mut rec, session).map_err(|key| {
                Fault::new(
                    Some(lookup.key_field()),
                    "lookup",
                    format!("no reference row for {} = {key}", lookup.key_field()),
                )
            })?;
        }
        let key = self.key(ctx, number, &rec)?;
        Ok(Some((rec, key)))
    }

    fn key(&self, ctx: &ChunkContext<'_>, number: u64, rec: &Record) -> std::result::Result<String, Fault> {
        if self.key_fields.is_empty() {
            return Ok(format!("{}#{number}", ctx.input));
        }
        let mut key = String::new();
        for (i, f) in self.key_fields.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match rec.get(f) {
                None | Some(Value::Null) => return Err(Fault::new(Some(f), "key", "key field is missing or null")),
                Some(Value::String(s)) => key.push_str(s),
                Some(v) => key.push_str(&v.to_string()),
            }
        }
        Ok(key)
    }
}

/// The values of `fields` in `rec`, in the order of `fields`. Records usually hold exactly
/// these fields in this order, and walking them side by side compares names instead of
/// hashing each one; any other record falls back to lookups.
pub fn values_of<'r>(rec: &'r Record, fields: &'r [String]) -> impl Iterator<Item = Option<&'r Value>> + 'r {
    let mut entries = rec.iter();
    fields.iter().map(move |f| match entries.next() {
        Some((k, v)) if k == f => Some(v),
        _ => rec.get(f),
    })
}

/// The default output format: CSV when the field list is known.
pub fn output_format(spec: &JobSpec, fields_known: bool) -> OutputFormat {
    spec.config.output.format.unwrap_or(if fields_known { OutputFormat::Csv } else { OutputFormat::Jsonl })
}

fn run_jq(filter: &JqFilter, value: Value) -> std::result::Result<Option<Value>, Fault> {
    use serde::Deserialize as _;
    let input = Val::deserialize(value).map_err(|e| Fault::new(None, "transform", e.to_string()))?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut outputs = filter.id.run((ctx, input)).map(unwrap_valr);
    let first = match outputs.next() {
        None => return Ok(None),
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(Fault::new(None, "transform", format!("jq error: {e}"))),
    };
    if outputs.next().is_some() {
        return Err(Fault::new(None, "transform", "the transform yielded more than one value; expected one or none"));
    }
    let text = first.to_string();
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Fault::new(None, "transform", format!("jq produced non-JSON output: {e}")))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Tracks the line number while walking a chunk's records in order.
struct LineCursor {
    pos: usize,
    line: u64,
}

impl LineCursor {
    /// The line a record starts on and its raw bytes, from its byte span in the chunk. The
    /// span may begin with the line break that ended the previous record (CRLF, blank lines).
    fn locate<'b>(&mut self, bytes: &'b [u8], start: usize, end: usize) -> (u64, &'b [u8]) {
        let start = start.clamp(self.pos, bytes.len());
        self.line += memchr::memchr_iter(b'\n', &bytes[self.pos..start]).count() as u64;
        self.pos = start;
        let span = &bytes[start..end.clamp(start, bytes.len())];
        let skip = span.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        let line = self.line + memchr::memchr_iter(b'\n', &span[..skip]).count() as u64;
        let text = &span[skip..];
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        (line, text.strip_suffix(b"\r").unwrap_or(text))
    }
}

/// Where a chunk comes from, for record numbers and rejects.
pub struct ChunkContext<'a> {
    /// The chunk.
    pub chunk: &'a Chunk,
    /// Its input's location.
    pub input: &'a str,
    /// Its input's format.
    pub format: Format,
    /// The CSV layout, for CSV inputs.
    pub layout: Option<&'a CsvLayout>,
}

impl ChunkContext<'_> {
    fn reject(&self, record: u64, line: u64, raw: &[u8], f: Fault) -> Reject {
        let raw = String::from_utf8_lossy(raw).into_owned();
        Reject { input: self.input.to_string(), record, line, field: f.field, rule: f.rule, message: f.message, raw }
    }
}
