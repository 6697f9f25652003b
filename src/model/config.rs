//! The job definition as written (TOML), and resolved into the [`JobDefinition`] a job stores.
//!
//! Every key is documented on its field; unknown keys are rejected with their name. Only a
//! checked `JobSpec` (see `crate::engine::spec`) reaches the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A job file as written by a person. See `examples/orders/job.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// How to read the input objects.
    #[serde(default)]
    pub input: InputConfig,
    /// How to cut inputs into chunks.
    #[serde(default)]
    pub chunking: ChunkingConfig,
    /// Declared columns: names, types and checks. Undeclared input fields pass through as text.
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// JSON Schema checks applied to each record after column typing.
    #[serde(default)]
    pub validate: Option<ValidateConfig>,
    /// jq programs (jaq) applied in order; one that yields nothing drops the record.
    #[serde(default)]
    pub transform: Vec<String>,
    /// Enrichment by lookup in a reference dataset.
    #[serde(default)]
    pub enrich: Option<EnrichConfig>,
    /// The fields that identify an item, making sink writes idempotent upserts.
    #[serde(default)]
    pub key: KeyConfig,
    /// Where records go.
    #[serde(default)]
    pub sink: SinkConfig,
    /// The merged output file.
    #[serde(default)]
    pub output: OutputConfig,
    /// `[[notify]]`: who hears when a job finishes or fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyConfig>,
    /// `[archive]`: where inputs go once their job has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveConfig>,
    /// `[[tests]]`: records, and what the job must make of them (`sluicebox test`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
    /// `[stream]`: how `sluicebox stream` cuts records into files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamConfig>,
    /// `[rejects]`: how many rejected records the job tolerates before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<crate::model::rejects::RejectsConfig>,
}

/// `[stream]`: how `sluicebox stream` buffers, partitions and encodes records into files
/// (the record format is `[output] format`, as for a batch job's merged output).
///
/// A partition's buffer becomes a file when it holds `size_mib` of encoded records (before
/// compression), `records` records, or when its oldest record has waited `max_age_s` seconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The size target of a file in MiB of encoded records, 1 to 128 (default 64): of JSON
    /// Lines or CSV, or for a Parquet file its records' typed values (as its buffer holds them).
    #[serde(default = "default_stream_size_mib")]
    pub size_mib: u32,
    /// The most records in a file (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// The most seconds a record waits in a buffer, 0 to 900 (default 300).
    #[serde(default = "default_stream_age_s")]
    pub max_age_s: u32,
    /// A Hive-style partition template over output fields and the record's time:
    /// `vendor={vendor_id}/year=%Y/month=%m/day=%d` (default: no partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The output field holding the record's event time, for the template's `%` fields
    /// (default: the time the record arrived on the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_field: Option<String>,
    /// The most partitions with an open buffer; one more flushes the oldest (default 100).
    #[serde(default = "default_stream_open_partitions")]
    pub max_open_partitions: usize,
    /// The most partitions that may take records within `max_age_s` (at least a minute);
    /// a record that would open one more is a reject (`stream.max_partitions`), so that a
    /// template whose values change on every record cannot write a file per record (default
    /// 500, Firehose's limit of active partitions).
    #[serde(default = "default_stream_partitions")]
    pub max_partitions: usize,
    /// The MiB of encoded records all partitions' buffers hold together, at least `size_mib`
    /// (default 1024); one more record writes the largest buffer early. Buffers keep at most
    /// 512 KiB of records each in memory and the rest compressed in scratch files, so this
    /// bounds the scratch disk (about `buffer_mib` times the compression ratio), not memory.
    #[serde(default = "default_stream_buffer_mib")]
    pub buffer_mib: u32,
    /// `gzip` (default), `zstd` or `none` for JSON Lines and CSV files. Parquet files are
    /// compressed inside, with zstd.
    #[serde(default = "default_stream_compression")]
    pub compression: Compression,
    /// The prefix, under the destination, of rejected records' files (default `errors`).
    #[serde(default = "default_stream_errors")]
    pub errors: String,
    /// For a queue (SQS), which may deliver a message twice: a message whose id was taken in
    /// the last this many seconds is dropped as a duplicate, 0 to 86,400 (default 600; 0 keeps
    /// every copy). About 56 bytes of memory per id, for at most 500,000 ids.
    #[serde(default = "default_stream_dedup_window_s")]
    pub dedup_window_s: u32,
}

fn default_stream_size_mib() -> u32 {
    64
}
fn default_stream_age_s() -> u32 {
    300
}
fn default_stream_open_partitions() -> usize {
    100
}
fn default_stream_partitions() -> usize {
    500
}
fn default_stream_buffer_mib() -> u32 {
    1024
}
fn default_stream_compression() -> Compression {
    Compression::Gzip
}
fn default_stream_dedup_window_s() -> u32 {
    600
}
fn default_stream_errors() -> String {
    "errors".into()
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            size_mib: default_stream_size_mib(),
            records: None,
            max_age_s: default_stream_age_s(),
            partition: None,
            time_field: None,
            max_open_partitions: default_stream_open_partitions(),
            max_partitions: default_stream_partitions(),
            buffer_mib: default_stream_buffer_mib(),
            compression: default_stream_compression(),
            errors: default_stream_errors(),
            dedup_window_s: default_stream_dedup_window_s(),
        }
    }
}

/// `[[tests]]`: one record and what the job must make of it: written with these fields,
/// rejected by this rule, or filtered out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows, for a person.
    pub name: String,
    /// The record as the input holds it, field by field (a CSV input's fields as text).
    pub input: serde_json::Map<String, serde_json::Value>,
    /// The fields the written record must have, with these values (others are not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Map<String, serde_json::Value>>,
    /// The reject expected instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<ExpectedReject>,
    /// Expect the record dropped by a transform.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filtered: bool,
}

/// The reject a `[[tests]]` case expects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedReject {
    /// The rule (`required`, `max_length`, `type`, `lookup`, …).
    pub rule: String,
    /// The field, when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `[[notify]]`: one party told when a job finishes or fails.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `https://…` (a webhook: the message is POSTed as JSON), `sns://TOPIC_ARN`,
    /// `ses://ADDRESS` (e-mail through Amazon SES; needs `from`) or `smtp://ADDRESS` (e-mail
    /// through the SMTP server in `SLUICEBOX_SMTP_URL`; needs `from`).
    pub to: String,
    /// The sender of e-mail.
    pub from: Option<String>,
    /// Which outcomes: `succeeded`, `completed_with_rejects`, `failed` (default: all).
    pub on: Option<Vec<String>>,
}

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// `https://…` (or `http://…` on a private network, see [`crate::model::web`]): the message
    /// POSTed as JSON. Shown redacted.
    Webhook(crate::model::web::SecretUrl),
    /// `sns://TOPIC_ARN`: published to an SNS topic.
    Sns(String),
    /// `ses://ADDRESS`: e-mailed through Amazon SES.
    Ses(String),
    /// `smtp://ADDRESS`: e-mailed through the SMTP server in `SLUICEBOX_SMTP_URL`.
    Smtp(String),
}

/// A notification target, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Where it goes.
    pub target: NotifyTarget,
    /// The sender of e-mail.
    pub from: Option<String>,
    /// The outcomes it is sent for.
    pub on: Vec<String>,
}

/// The outcomes a notification can be sent for.
pub const OUTCOMES: [&str; 3] = ["succeeded", "completed_with_rejects", "failed"];

impl Notify {
    /// Check `c`; `key` names it in errors (`notify[0]`).
    pub fn parse(c: &NotifyConfig, key: &str) -> Result<Notify> {
        let bad = |what: String| Error::config(format!("{key}.to"), what);
        let target = match c.to.split_once("://") {
            Some(("https" | "http", _)) => {
                let url = crate::model::web::SecretUrl::new(c.to.clone());
                crate::model::web::check(&url, &format!("{key}.to"))?;
                NotifyTarget::Webhook(url)
            }
            Some(("sns", arn)) if arn.starts_with("arn:") => NotifyTarget::Sns(arn.to_string()),
            Some(("ses", to)) if to.contains('@') => NotifyTarget::Ses(to.to_string()),
            Some(("smtp", to)) if to.contains('@') => NotifyTarget::Smtp(to.to_string()),
            _ => {
                return Err(bad(format!(
                    "{} is not https://URL, sns://TOPIC_ARN, ses://ADDRESS or smtp://ADDRESS",
                    crate::model::web::redact(&c.to)
                )))
            }
        };
        if matches!(target, NotifyTarget::Ses(_) | NotifyTarget::Smtp(_))
            && c.from.as_deref().is_none_or(|f| !f.contains('@'))
        {
            return Err(Error::config(
                format!("{key}.from"),
                "e-mail needs a sender address (from = \"jobs@example.com\")",
            ));
        }
        let on = c.on.clone().unwrap_or_else(|| OUTCOMES.iter().map(|o| o.to_string()).collect());
        if let Some(o) = on.iter().find(|o| !OUTCOMES.contains(&o.as_str())) {
            return Err(Error::config(format!("{key}.on"), format!("{o:?} is not one of {OUTCOMES:?}")));
        }
        Ok(Notify { target, from: c.from.clone(), on })
    }

    /// `url` as a target for every outcome (`--notify`, `SLUICEBOX_NOTIFY`).
    pub fn url(url: &str, from: Option<String>, key: &str) -> Result<Notify> {
        Notify::parse(&NotifyConfig { to: url.to_string(), from, on: None }, key)
    }
}

/// `[archive]`: inputs are moved once their job has completed (never before, never when it
/// failed), to `to` + the job id + the input's file name, in the input's own bucket or
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// A key prefix in the input's bucket (`archive/`); for local inputs, a directory:
    /// absolute, or relative to each input's own directory.
    pub to: String,
}

/// `[input]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// `csv`, `jsonl` or `json`; default: from the file extension, else `csv`.
    pub format: Option<Format>,
    /// `auto` (extension or magic bytes), `none`, `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// CSV: whether the first row names the columns (default true). Without a header, the
    /// declared `[[columns]]` name the fields in order.
    #[serde(default = "yes")]
    pub header: bool,
    /// CSV field delimiter, one byte (default `,`).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// CSV quote character, one byte (default `"`).
    #[serde(default = "dquote")]
    pub quote: String,
    /// The longest record accepted, in bytes (default 16 MiB). A longer one stops the plan
    /// with its line: it is most often an unbalanced quote swallowing the rest of the file.
    #[serde(default = "default_max_record")]
    pub max_record_bytes: u64,
    /// The most a compressed input may decompress to, in bytes (default: 1,000 times its
    /// compressed size, and at least 1 GiB). A larger one stops the plan: it is most often a
    /// decompression bomb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decompressed_bytes: Option<u64>,
    /// `watch` and the on-object function: an upload starts no job until an object of this
    /// name (such as `_SUCCESS`) lands in its folder; then one job takes every object under
    /// that folder whose name below it starts with neither `_` nor `.` (the marker, temporary
    /// folders). Without it, every upload is a job of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_marker: Option<String>,
    /// What to do about input columns the job does not declare (CSV header columns, and the
    /// keys of a JSON input's sampled records) when it declares `[[columns]]`: `warn`
    /// (default: the job runs and says which), `fail` (the job stops before any work, naming
    /// them) or `pass` (say nothing). Undeclared columns pass through as text either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_columns: Option<UnknownColumns>,
}

/// `[input] unknown_columns`: what an input column the job does not declare does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownColumns {
    /// The job stops before any work, naming the columns.
    Fail,
    /// The job runs; the columns are named in a warning (the log, `plan`, the summary).
    #[default]
    Warn,
    /// Nothing is said.
    Pass,
}

fn default_max_record() -> u64 {
    16 << 20
}

fn yes() -> bool {
    true
}
fn comma() -> String {
    ",".into()
}
fn dquote() -> String {
    "\"".into()
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            format: None,
            compression: Compression::Auto,
            header: true,
            delimiter: comma(),
            quote: dquote(),
            max_record_bytes: default_max_record(),
            max_decompressed_bytes: None,
            ready_marker: None,
            unknown_columns: None,
        }
    }
}

/// Input record encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma (or other delimiter) separated values.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// One JSON document: an array of objects, or `{"records": [...]}`.
    Json,
}

/// Input compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Detect from the extension (`.gz`, `.zst`) or the first bytes.
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip (one or more members).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// `[chunking]`: a chunk ends at the first record boundary where either target is reached.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Target records per chunk (default: no record target).
    pub records: Option<u64>,
    /// Target bytes per chunk (default 4 MiB). Memory use is about this × workers × 3.
    #[serde(default = "default_chunk_bytes")]
    pub bytes: u64,
}

fn default_chunk_bytes() -> u64 {
    4 << 20
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig { records: None, bytes: default_chunk_bytes() }
    }
}

/// `[[columns]]`: one declared column.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column's name in the input header (or the field name, for JSON inputs).
    pub name: String,
    /// Output field name, if it differs from `name`.
    #[serde(rename = "as")]
    pub rename: Option<String>,
    /// `string` (default), `integer`, `decimal`, `boolean`, `date` or `timestamp`.
    #[serde(rename = "type", default)]
    pub kind: ColumnType,
    /// chrono format for `date` (default `%Y-%m-%d`) and `timestamp` (default RFC 3339).
    pub format: Option<String>,
    /// Reject the record when the value is missing or empty.
    #[serde(default)]
    pub required: bool,
    /// Maximum length in characters of the text value.
    pub max_length: Option<usize>,
    /// For a decimal: the most significant digits, 1 to 15 (a value is held as a 64-bit
    /// float, which keeps every decimal of up to 15 digits exactly). With it the value is
    /// exact in every output and store: Parquet `DECIMAL(p, s)`, PostgreSQL `numeric(p, s)`,
    /// SQLite text of `scale` decimals, DynamoDB's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
    /// For a decimal with `precision`: the digits after the point (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    /// For a decimal with `precision`: round a value with more decimals than `scale` (half
    /// away from zero) instead of rejecting it (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub round: bool,
}

/// The most digits a decimal column may declare: a 64-bit float holds every decimal of up to
/// 15 significant digits exactly.
pub const MAX_DECIMAL_PRECISION: u32 = 15;

impl ColumnConfig {
    /// `(precision, scale)` of an exact decimal column.
    pub fn exact(&self) -> Option<(u32, u32)> {
        (self.kind == ColumnType::Decimal).then_some(self.precision.map(|p| (p, self.scale.unwrap_or(0)))).flatten()
    }
}

/// Column value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text, kept as is.
    #[default]
    String,
    /// A 64-bit signed integer.
    Integer,
    /// A decimal number, held as a 64-bit float (about 15 significant digits); exact with a
    /// column's `precision` and `scale`.
    Decimal,
    /// `true`/`false`, `1`/`0`, `yes`/`no` (any case).
    Boolean,
    /// A calendar date, written out as `YYYY-MM-DD`.
    Date,
    /// A date and time, written out as RFC 3339 (UTC when the input has no offset).
    Timestamp,
}

/// `[validate]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// A JSON Schema written inline as a TOML table.
    pub schema: Option<toml::Value>,
    /// A JSON Schema file, relative to the job file.
    pub schema_file: Option<PathBuf>,
}

/// `[enrich]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// The reference dataset: a CSV or JSON Lines file (path relative to the job file, a
    /// `file://` URL, or an `s3://` object), `sqlite:TABLE` for a table in the data
    /// directory's database, or `dynamodb://TABLE` (feature `aws`; needs `fields`).
    pub source: String,
    /// The record field to look up.
    pub key: String,
    /// The reference field it matches (default: the same name as `key`).
    pub lookup_key: Option<String>,
    /// Reference fields to add (default: all but the lookup key), in this order.
    pub fields: Option<Vec<String>>,
    /// Types of reference fields (CSV references are text otherwise).
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// What to do when the key is not in the reference: `reject` (default), `keep` (added
    /// fields are null) or `default` (added fields take `defaults`).
    #[serde(default)]
    pub on_missing: OnMissing,
    /// Values for `on_missing = "default"`.
    #[serde(default)]
    pub defaults: BTreeMap<String, toml::Value>,
    /// jq programs run after the lookup, on the enriched record, in order (the top-level
    /// `transform` runs before it, and may compute the lookup key); one that yields nothing
    /// drops the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<String>,
    /// A reference file larger than this many bytes (default 128 MiB) is imported into the
    /// data directory's SQLite database and looked up there instead of held in memory (where
    /// it takes about as many bytes as the file).
    #[serde(default = "default_memory_limit")]
    pub memory_limit: u64,
}

fn default_memory_limit() -> u64 {
    128 << 20
}

/// Policy for a lookup key that is not in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// The record becomes a reject with rule `lookup`.
    #[default]
    Reject,
    /// The record is kept; enrichment fields are null.
    Keep,
    /// The record is kept; enrichment fields take `enrich.defaults`.
    Default,
}

/// `[key]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Output fields whose values identify an item (default: input object + record number).
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `[sink]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `sqlite` (default), `dynamodb` (feature `aws`; `table` names the DynamoDB table) or
    /// `none`: one of `crate::backends::sink::KINDS`, checked with the job.
    #[serde(rename = "type", default = "default_sink")]
    pub kind: String,
    /// Table name (default: the first input's file stem, made SQL-safe).
    pub table: Option<String>,
    /// Records per write transaction (default 2000).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Whether a write replaces a stored item only with a newer version (a later job, or a
    /// later record of the same job), default true. `false` lets DynamoDB write 25 items per
    /// request, and the item written last stays. (SQLite always writes in order.)
    #[serde(default = "yes")]
    pub ordered: bool,
    /// Also publish every written record: `sns://TOPIC_ARN` (`PublishBatch`, 10 at a time) or
    /// `https://…` (each write's records POSTed as one JSON document). With `type = "none"`,
    /// instead of a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// For `type = "postgres"`: the database, `postgres://USER@HOST:PORT/DATABASE` (no
    /// password: it comes from `PGPASSWORD` or the password file). Default: the `PG*`
    /// environment variables, as `psql` reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Processes writing a DynamoDB table with provisioned capacity at once (default 1; on
    /// Lambda, the task mapping's most invocations at once): each paces its writes at the
    /// table's write capacity divided by this, instead of finding it by being throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<u32>,
    /// Requests a DynamoDB sink's writer keeps in flight (1 to 256): ordered, that many
    /// conditional `PutItem`s at once; unordered, that many `BatchWriteItem`s of 25 items at
    /// once, each paced. Default: 64 ordered, 8 unordered (see BENCHMARKS.md for the curve
    /// they come from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
}

/// Where `[sink] publish` sends records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTarget {
    /// An SNS topic, by ARN.
    Sns(String),
    /// A webhook URL (see [`crate::model::web`]); shown redacted.
    Webhook(crate::model::web::SecretUrl),
}

impl PublishTarget {
    /// Parse `url`; `key` names it in errors.
    pub fn parse(url: &str, key: &str) -> Result<PublishTarget> {
        match url.split_once("://") {
            Some(("sns", arn)) if arn.starts_with("arn:") => Ok(PublishTarget::Sns(arn.to_string())),
            Some(("https" | "http", _)) => {
                let url = crate::model::web::SecretUrl::new(url);
                crate::model::web::check(&url, key)?;
                Ok(PublishTarget::Webhook(url))
            }
            _ => Err(Error::config(
                key,
                format!("{} is not sns://TOPIC_ARN or https://URL", crate::model::web::redact(url)),
            )),
        }
    }
}

fn default_sink() -> String {
    "sqlite".into()
}

fn default_batch() -> usize {
    2000
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: default_sink(),
            table: None,
            batch: default_batch(),
            ordered: true,
            publish: None,
            database: None,
            writers: None,
            in_flight: None,
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `csv`, `jsonl` or `parquet`; default `csv` when the fields are known (no transform, or
    /// `fields` given), else `jsonl`. Parquet needs the fields known.
    pub format: Option<OutputFormat>,
    /// Output fields in order. Default, for CSV inputs without transforms: the input columns
    /// (renamed) then the enrichment fields; for JSON inputs the fields are not known.
    pub fields: Option<Vec<String>>,
}

/// Merged output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// CSV with a header row.
    Csv,
    /// JSON Lines.
    Jsonl,
    /// Apache Parquet, typed by the declared columns (needs the output fields).
    Parquet,
}

/// A job definition with its paths resolved and its JSON Schema inline: what any worker, on
/// any host, needs to run the job. It is stored as `jobs/<id>/job.json` and hashed into the
/// job id; `crate::engine::spec` checks it into the `JobSpec` the engine runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDefinition {
    /// The job file's settings: `validate` is folded into `schema`, and `enrich.source` is an
    /// absolute path or a URL.
    pub config: JobConfig,
    /// The JSON Schema records are validated against, if any.
    pub schema: Option<serde_json::Value>,
    /// For a redrive (`sluicebox redrive`): the job whose rejected records this job takes
    /// again, and the order its sink items carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<Redrive>,
}

/// What makes a job a redrive: the job whose rejected records it takes again, and the order
/// (see [`crate::model::record::SinkItem::job`]) of the first job of the line, which its sink
/// items carry, so that a corrected record replaces what that job's records would have
/// replaced, and never a later job's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The job redriven.
    pub from: String,
    /// The order of the first job of the line (the one the records were first read by).
    pub order: u64,
}

impl JobConfig {
    /// Parse a job file. Unknown keys and bad types are reported with the key's name.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| snippet(text, s)).unwrap_or_default();
            Error::config(origin.to_string() + at.as_str(), e.message().trim().to_string())
        })
    }

    /// Read and parse a job file from disk.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(path.display().to_string(), format!("cannot read job file: {e}")))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Resolve what the job file names relative to `base_dir` (its directory): read the
    /// schema file, and make a relative enrichment source absolute.
    pub fn resolve(mut self, base_dir: &Path) -> Result<JobDefinition> {
        let schema = match self.validate.take() {
            None => None,
            Some(v) => Some(load_schema(&v, base_dir)?),
        };
        if let Some(e) = self.enrich.as_mut() {
            if !["sqlite:", "file://", "s3://", "dynamodb://", "postgres://"].iter().any(|p| e.source.starts_with(p)) {
                e.source = base_dir.join(&e.source).display().to_string();
            }
        }
        Ok(JobDefinition { config: self, schema, redrive: None })
    }
}

impl ColumnConfig {
    /// The field name this column has in output records.
    pub fn out_name(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.name)
    }
}

fn load_schema(v: &ValidateConfig, base_dir: &Path) -> Result<serde_json::Value> {
    match (&v.schema, &v.schema_file) {
        (Some(inline), None) => {
            serde_json::to_value(inline).map_err(|e| Error::config("validate.schema", e.to_string()))
        }
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::config("validate.schema_file", format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::config("validate.schema_file", format!("{}: {e}", path.display())))
        }
        _ => Err(Error::config("validate", "give exactly one of schema or schema_file")),
    }
}

/// ` line N (`the line`)`: where a TOML error is, with the line's text, which names the key.
fn snippet(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!(" line {line_no} (`{line}`)")
}

/// A job id names the job's objects (`jobs/<id>/`) and its ledger rows: 1 to 128 letters,
/// digits, `.`, `_` and `-`, not starting with `.`, so that no id reaches another job's objects
/// (`a/parts`) or all of them (an empty id).
pub fn check_job_id(id: &str, key: &str) -> Result<()> {
    let fine = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if fine {
        return Ok(());
    }
    Err(Error::config(
        key,
        format!("{id:?} is not a job id: 1 to 128 of letters, digits, '.', '_' and '-', not starting with '.'"),
    ))
}
