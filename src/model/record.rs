//! The vocabulary every layer shares: a record, what became of it, and why it was rejected.
//!
//! This module imports nothing else of the crate: seams (the sink), sources (lookups) and
//! engines (the pipeline, the worker, the gather) all speak in these types.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A record: field name → JSON value, in field order.
pub type Record = Map<String, Value>;

/// A kept record's fields, as sinks and encoders read them: a [`Record`] (a map), or values in
/// the order of field names shared by every record of one layout (a CSV input's columns and
/// the fields enrichment adds), with no name stored per record. Either way the fields come in
/// the same order, and a name appears once.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// Field name → value.
    Map(Record),
    /// `values[i]` is the value of `names[i]`.
    Shared {
        /// The layout's field names.
        names: Arc<[String]>,
        /// The values, one per name.
        values: Vec<Value>,
    },
}

impl From<Record> for Row {
    fn from(rec: Record) -> Self {
        Row::Map(rec)
    }
}

impl Row {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Row::Map(m) => m.get(name),
            Row::Shared { names, values } => names.iter().position(|n| n == name).and_then(|i| values.get(i)),
        }
    }

    /// The fields and their values, in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Value)> + '_> {
        match self {
            Row::Map(m) => Box::new(m.iter().map(|(k, v)| (k.as_str(), v))),
            Row::Shared { names, values } => Box::new(names.iter().map(String::as_str).zip(values)),
        }
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        match self {
            Row::Map(m) => m.len(),
            Row::Shared { values, .. } => values.len(),
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fields as a map.
    pub fn into_map(self) -> Record {
        match self {
            Row::Map(m) => m,
            Row::Shared { names, values } => names.iter().cloned().zip(values).collect(),
        }
    }
}

impl std::ops::Index<&str> for Row {
    type Output = Value;

    /// The field's value, or null.
    fn index(&self, name: &str) -> &Value {
        const NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl Serialize for Row {
    /// As a JSON object, fields in order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Reads the values of some fields (an output's columns, a table's) from rows, in the
/// fields' order: a shared layout's positions are found once, not per row.
#[derive(Debug, Clone)]
pub struct Projection {
    fields: Vec<String>,
    layout: Option<Positions>,
}

/// Where the fields of a [`Projection`] are in one shared layout.
#[derive(Debug, Clone)]
struct Positions {
    names: Arc<[String]>,
    at: Vec<Option<usize>>,
}

impl Projection {
    /// The values of `fields`.
    pub fn new(fields: Vec<String>) -> Self {
        Projection { fields, layout: None }
    }

    /// The fields.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Call `each` with the value of every field in `row` (`None`: the row lacks it).
    pub fn each<'r>(&mut self, row: &'r Row, mut each: impl FnMut(Option<&'r Value>)) {
        match row {
            Row::Map(m) => {
                // Maps usually hold exactly these fields in this order: walking them side by
                // side compares names instead of hashing each one; any other falls back to get.
                let mut entries = m.iter();
                for f in &self.fields {
                    each(match entries.next() {
                        Some((k, v)) if k == f => Some(v),
                        _ => m.get(f),
                    });
                }
            }
            Row::Shared { names, values } => {
                if !self.layout.as_ref().is_some_and(|known| Arc::ptr_eq(&known.names, names)) {
                    let at = self.fields.iter().map(|f| names.iter().position(|n| n == f)).collect();
                    self.layout = Some(Positions { names: names.clone(), at });
                }
                if let Some(Positions { at, .. }) = &self.layout {
                    for i in at {
                        each(i.and_then(|i| values.get(i)));
                    }
                }
            }
        }
    }
}

/// Where a record came from, for its reject line and its position among the job's records.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The job's order among jobs (see [`SinkItem::job`]).
    pub job: u64,
    /// The input object (or stream) the record was read from.
    pub input: &'a str,
    /// Which input of the job (its index), for the record's position.
    pub input_index: u32,
    /// 1-based record number within the input (header excluded).
    pub record: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// The record as it appeared in the input.
    pub raw: &'a [u8],
    /// Where a stream got it (none in a batch job).
    pub stream: Option<StreamPlace<'a>>,
}

/// Where a stream got a record: its source, its position in its shard and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct StreamPlace<'a> {
    /// The source as named (`kinesis://orders`, `sqs://q`, a file, `stdin`).
    pub source: &'a str,
    /// Its position in its shard as the stream gives it (a Kinesis sequence number), or
    /// none when it is a number ([`StreamPlace::position`]).
    pub sequence: Option<&'a str>,
    /// Its position in its shard when that is a number (a queue's count of its messages),
    /// or none for a file's records, whose record number is their position.
    pub position: Option<u64>,
    /// When the stream received it, ms since the Unix epoch.
    pub arrival_ms: i64,
}

/// The prefix of metadata names in output fields and partition templates
/// (`$meta.line`); in transforms the metadata is the object `$meta`.
pub const META_PREFIX: &str = "$meta.";

/// The metadata of a batch job's records: the input's location, the record's number in it
/// (header excluded) and the line it starts on.
pub const BATCH_META: &[&str] = &["input", "record", "line"];

/// The metadata of a stream's records: the source, the shard, the sequence number (a file's
/// record number), the arrival time (RFC 3339, UTC, milliseconds) and the record's number
/// in this run of its shard.
pub const STREAM_META: &[&str] = &["source", "shard", "sequence", "arrival", "record"];

/// The metadata names (`$meta.KEY`) in `text`, with their keys.
pub fn meta_names(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (at, _) in text.match_indices(META_PREFIX) {
        let rest = &text[at + META_PREFIX.len()..];
        let key: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = format!("{META_PREFIX}{key}");
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, key));
        }
    }
    out
}

impl Origin<'_> {
    /// The record's metadata: `$meta` in transforms (see [`BATCH_META`], [`STREAM_META`]).
    pub fn meta(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match &self.stream {
            None => {
                m.insert("input".into(), Value::from(self.input));
                m.insert("record".into(), Value::from(self.record));
                m.insert("line".into(), Value::from(self.line));
            }
            Some(place) => {
                let arrival = chrono::DateTime::from_timestamp_millis(place.arrival_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                m.insert("source".into(), Value::from(place.source));
                m.insert("shard".into(), Value::from(self.input));
                let sequence = match (place.sequence, place.position) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(n)) => n.to_string(),
                    (None, None) => self.record.to_string(),
                };
                m.insert("sequence".into(), Value::from(sequence));
                m.insert("arrival".into(), arrival.map_or(Value::Null, Value::from));
                m.insert("record".into(), Value::from(self.record));
            }
        }
        m
    }

    /// The record's position among the job's records (see [`SinkItem::seq`]).
    pub fn seq(&self) -> u64 {
        SinkItem::seq_of(self.input_index, self.record)
    }

    /// The reject for a record from here that broke a rule.
    pub fn reject(&self, f: Fault) -> Reject {
        let raw = String::from_utf8_lossy(self.raw).into_owned();
        Reject {
            input: self.input.to_string(),
            record: self.record,
            line: self.line,
            field: f.field,
            rule: f.rule,
            message: f.message,
            raw,
        }
    }
}

/// What the pipeline did with one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kept: the sink item (key, position, record).
    Written(SinkItem),
    /// Rejected.
    Rejected(Reject),
    /// Dropped by a transform.
    Filtered,
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
    /// `schema.<keyword>`, `transform`, `lookup`, `key`, `sink` or `parquet` (a value the
    /// Parquet output's column cannot hold).
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The record as it appeared in the input.
    pub raw: String,
}

/// A broken rule, before it is placed (see [`Origin::reject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The field at fault, when there is one.
    pub field: Option<String>,
    /// The rule that failed.
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Fault {
    /// A fault of `rule` on `field`.
    pub fn new(field: Option<&str>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Fault { field: field.map(str::to_string), rule: rule.into(), message: message.into() }
    }
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

impl Counts {
    /// Count one outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Written(_) => self.written += 1,
            Outcome::Rejected(r) => {
                self.rejected += 1;
                *self.rejects_by_rule.entry(r.rule.clone()).or_default() += 1;
            }
            Outcome::Filtered => self.filtered += 1,
        }
    }

    /// Add another chunk's counts.
    pub fn merge(&mut self, other: &Counts) {
        self.written += other.written;
        self.rejected += other.rejected;
        self.filtered += other.filtered;
        for (rule, n) in &other.rejects_by_rule {
            *self.rejects_by_rule.entry(rule.clone()).or_default() += n;
        }
    }

    /// Every record counted.
    pub fn total(&self) -> u64 {
        self.written + self.rejected + self.filtered
    }
}

/// One record to write to a sink.
///
/// Items are ordered by `(job, seq)`: of two items with one key, the one from the later job
/// wins, and within one job the later record of the inputs, whatever order they are written
/// in (see [`SinkItem::version`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkItem {
    /// Identifies the item: writes with the same key are one item.
    pub key: String,
    /// The job's order among jobs: when it was created, in ms since the Unix epoch. A job run
    /// again from scratch (`--force`) is a new, later job.
    pub job: u64,
    /// The record's position in the job's inputs (input index, record number).
    pub seq: u64,
    /// The record.
    pub record: Row,
}

impl SinkItem {
    /// The item's version: a write replaces a stored item only with an equal or higher one.
    pub fn version(&self) -> (u64, u64) {
        (self.job, self.seq)
    }

    /// The `seq` of record `number` of input `input`.
    pub fn seq_of(input: u32, number: u64) -> u64 {
        (u64::from(input) << 40) | (number & ((1 << 40) - 1))
    }
}

/// A value as key text: strings as they are, anything else as JSON.
pub fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "a string", "an object", …: a value's kind, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
