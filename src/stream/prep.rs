//! What makes a record ready for a buffer ([`Prep`]): the job's pipeline, then the record's
//! time and partition, then its encoded line; or why it has none ([`Ready`]). The reader uses
//! it on a record stream's records, its block helpers on a file's blocks.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::file::ms_time;
use super::partition::Template;
use super::source::{files::MAX_RECORD_BYTES, Block};
use crate::engine::pipeline::{Encoder, Input, Pipeline};
use crate::error::Result;
use crate::model::config::OutputFormat;
use crate::model::record::{Fault, Outcome, Reject, Row, SinkItem, StreamPlace};

/// How far ahead of the clock a record's `time_field` may be.
const MAX_DAYS_AHEAD: i64 = 1;

/// What makes a record's outcome ready for a buffer; shared by the reader and its helpers.
pub struct Prep {
    /// The job's steps.
    pub pipeline: Pipeline,
    /// The partition template, if any.
    pub template: Option<Template>,
    /// The field that holds a record's time, for the template.
    pub time_field: Option<String>,
    /// The prefix of rejected records' files: no partition may be at or under it.
    pub errors: String,
    /// The source's name for record metadata (`$meta.source`), when it is not the shard's
    /// (a file's records name their file).
    pub source: Option<String>,
    /// Whether kept records go to a sink: each gets an item whose version is its arrival
    /// time, then its place in the run (a replayed record never replaces a later one).
    pub sink: bool,
    /// Whether kept records go into files (with `--to`).
    pub files: bool,
}

/// A record ready to be placed.
#[derive(Debug, PartialEq)]
pub enum Ready {
    /// A kept record: its partition and encoded line, and its sink item.
    Row {
        /// Its partition.
        partition: String,
        /// Its line (empty when the stream writes no files).
        line: Vec<u8>,
        /// Its item, when the stream has a sink: versioned by its arrival (see
        /// [`Prep::sink`]).
        item: Option<Box<SinkItem>>,
    },
    /// A rejected record; its error line names its position, known when it is placed. Boxed:
    /// rejects are rare, and a block's records are moved about several times.
    Rejected(Box<Reject>),
    /// A transform dropped it.
    Filtered,
}

/// A block for a helper: its records are numbered from 1, the reader numbers them in the shard.
pub struct BlockJob {
    /// The block.
    pub block: Block,
    /// Its shard, by index.
    pub shard: u32,
    /// How the pipeline reads its shard.
    pub input: Arc<Input>,
    /// How lines are encoded.
    pub format: OutputFormat,
    /// The output fields, when known.
    pub fields: Option<Vec<String>>,
}

/// A processed block.
pub struct BlockDone {
    /// Its shard, by index.
    pub shard: u32,
    /// When its records arrived.
    pub arrival_ms: i64,
    /// Its records, in order.
    pub records: Vec<Ready>,
}

impl Prep {
    /// Process a block's records, numbered from 1.
    pub fn block(&self, job: BlockJob) -> Result<BlockDone> {
        let BlockJob { block, shard, input, format, fields } = job;
        let mut encoder = self.encoder(format, fields);
        // Room for a block's records at about 100 bytes each, grown rarely.
        let mut records = Vec::with_capacity(block.data.len() / 100 + 1);
        if let Some(s) = &block.skipped {
            records.push(Ready::Rejected(Box::new(Reject {
                input: block.shard.clone(),
                record: 0,
                line: s.first_line,
                field: None,
                rule: "max_record_bytes".into(),
                message: format!(
                    "the record from line {} is {} bytes, more than a stream reads ({} MiB): skipped to its line break",
                    s.first_line,
                    s.bytes,
                    MAX_RECORD_BYTES >> 20
                ),
                raw: s.head.clone(),
            })));
        }
        let from = crate::input::decode::ChunkStart { record: 1, line: block.first_line };
        let place = StreamPlace {
            source: self.source.as_deref().unwrap_or(&block.shard),
            sequence: None,
            position: None,
            arrival_ms: block.arrival_ms,
        };
        // One clock read per block: its records are processed within milliseconds.
        let now = clock_ms();
        self.pipeline.each_streamed(&input, from, &block.data, Some(place), &mut |_, outcome| {
            records.push(self.ready(outcome, &block.shard, block.arrival_ms, now, &mut encoder));
        })?;
        Ok(BlockDone { shard, arrival_ms: block.arrival_ms, records })
    }

    /// How a buffer's records are encoded in `format` (a stream's line format: a Parquet
    /// file's are typed rows of its `fields`).
    pub fn encoder(&self, format: OutputFormat, fields: Option<Vec<String>>) -> Encoder {
        match (format, fields) {
            (OutputFormat::Parquet, Some(fields)) => Encoder::typed_rows(fields),
            (format, fields) => self.pipeline.encoder_for(format, fields),
        }
    }

    /// A record's partition and line, or why it has none; `now_ms` is the clock's time (see
    /// [`clock_ms`]).
    pub fn ready(&self, outcome: Outcome, shard: &str, arrival_ms: i64, now_ms: i64, encoder: &mut Encoder) -> Ready {
        let (row, item) = match outcome {
            Outcome::Written(item) => {
                let SinkItem { key, seq, record, .. } = item;
                (record, self.sink.then_some((key, seq)))
            }
            Outcome::Rejected(r) => return Ready::Rejected(Box::new(r)),
            Outcome::Filtered => return Ready::Filtered,
        };
        let item = |row: Row| {
            item.map(|(key, seq)| Box::new(SinkItem { key, job: arrival_ms.max(0) as u64, seq, record: row }))
        };
        if !self.files {
            return Ready::Row { partition: String::new(), line: Vec::new(), item: item(row) };
        }
        let reject = |fault: Fault| {
            Ready::Rejected(Box::new(Reject {
                input: shard.to_string(),
                record: 0,
                line: 0,
                field: fault.field,
                rule: fault.rule,
                message: fault.message,
                raw: serde_json::to_string(&row).unwrap_or_default(),
            }))
        };
        let time = match self.event_time(&row, arrival_ms, now_ms) {
            Ok(time) => time,
            Err(fault) => return reject(fault),
        };
        let partition = match &self.template {
            None => String::new(),
            Some(t) => match t.render_checked(&row, time, &self.errors) {
                Ok(p) => p,
                Err(fault) => return reject(fault),
            },
        };
        // A Parquet file's row groups are made from pieces of typed rows as they fill: a typed
        // row is far smaller in a buffer than the row it encodes.
        encoder.encode(&row);
        Ready::Row { partition, line: encoder.take(), item: item(row) }
    }

    /// The record's time for the template: its `time_field`, else when it arrived; a time more
    /// than a day ahead of `now_ms` is a fault.
    fn event_time(&self, row: &Row, arrival_ms: i64, now_ms: i64) -> std::result::Result<DateTime<Utc>, Fault> {
        let Some(field) =
            self.time_field.as_deref().filter(|_| self.template.as_ref().is_some_and(Template::uses_time))
        else {
            return Ok(ms_time(arrival_ms));
        };
        let bad = |why: String| Fault::new(Some(field), "stream.time_field", why);
        let time = parsed_time(row, field, bad)?;
        // A partition years ahead (9999) is a typo or a crafted record, and a folder no query
        // of this year reads.
        // The system clock alone (asked once per block), the calendar only for the message.
        if i128::from(time.timestamp_millis()) > i128::from(now_ms) + i128::from(MAX_DAYS_AHEAD) * 86_400_000 {
            return Err(bad(format!("{time} is more than {MAX_DAYS_AHEAD} day(s) ahead of this clock")));
        }
        Ok(time)
    }
}

/// The system clock's time, in ms since the Unix epoch: no calendar date is made.
pub fn clock_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

/// A record's `field` as a time: text (a date or time), or seconds or milliseconds since the epoch.
fn parsed_time(row: &Row, field: &str, bad: impl Fn(String) -> Fault) -> std::result::Result<DateTime<Utc>, Fault> {
    match row.get(field) {
        None | Some(Value::Null) => Err(bad(format!("{field} is missing, and names the record's partition"))),
        Some(Value::String(s)) => parse_time(s).ok_or_else(|| bad(format!("{s:?} is not a date or time"))),
        Some(Value::Number(n)) => {
            let n = n.as_f64().unwrap_or(0.0);
            // Seconds or milliseconds since the epoch, by size.
            let ms = if n.abs() < 1e11 { n * 1000.0 } else { n };
            Utc.timestamp_millis_opt(ms as i64).single().ok_or_else(|| bad(format!("{n} is not a time")))
        }
        Some(other) => Err(bad(format!("{other} is not a date or time"))),
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS`, or a date.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = crate::model::column::rfc3339_utc(s) {
        return Some(t);
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_are_read_as_rfc_3339_sql_timestamps_or_dates() {
        assert_eq!(parse_time("2026-11-01T10:20:30+02:00"), Some(time("2026-11-01T08:20:30Z")));
        assert_eq!(parse_time("2026-11-01 10:20:30.5"), Some(time("2026-11-01T10:20:30.5Z")));
        assert_eq!(parse_time("2026-11-01T10:20:30"), Some(time("2026-11-01T10:20:30Z")));
        assert_eq!(parse_time("2026-11-01"), Some(time("2026-11-01T00:00:00Z")));
        assert_eq!(parse_time("11/01/2026"), None);
    }

    #[test]
    fn numbers_are_seconds_or_milliseconds_by_size_and_anything_else_is_a_fault() {
        let bad = |why: String| Fault::new(Some("ts"), "stream.time_field", why);
        let row = |v: Value| -> Row {
            let mut r = crate::model::record::Record::new();
            r.insert("ts".into(), v);
            r.into()
        };
        let at = time("2026-11-01T00:00:00Z");
        assert_eq!(parsed_time(&row(at.timestamp().into()), "ts", bad).unwrap(), at);
        assert_eq!(parsed_time(&row(at.timestamp_millis().into()), "ts", bad).unwrap(), at);
        for (v, why) in [
            (Value::Null, "ts is missing"),
            (Value::Bool(true), "true is not a date or time"),
            ("soon".into(), "\"soon\" is not a date or time"),
        ] {
            let fault = parsed_time(&row(v), "ts", bad).unwrap_err();
            assert!(fault.message.starts_with(why) && fault.rule == "stream.time_field", "{fault:?}");
        }
    }
}
