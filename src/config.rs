//! The job definition (TOML), validated into the settings the engine runs on.
//!
//! Every key is documented on its field; unknown keys are rejected with their name. Only a
//! [`JobSpec`] (the checked form) reaches the engine.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
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
    /// A decimal number, held as a 64-bit float (about 15 significant digits).
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
    /// A reference file larger than this many bytes (default 32 MiB) is imported into the
    /// data directory's SQLite database and looked up there instead of held in memory.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: u64,
}

fn default_memory_limit() -> u64 {
    32 << 20
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
    /// `none`.
    #[serde(rename = "type", default)]
    pub kind: SinkKind,
    /// Table name (default: the first input's file stem, made SQL-safe).
    pub table: Option<String>,
    /// Records per write transaction (default 2000).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    2000
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { kind: SinkKind::Sqlite, table: None, batch: default_batch() }
    }
}

/// Sink backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A table in the data directory's SQLite database.
    #[default]
    Sqlite,
    /// No sink: outputs only.
    None,
    /// A DynamoDB table named by `table` (feature `aws`), written with `BatchWriteItem`.
    Dynamodb,
}

/// `[output]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `csv` or `jsonl`; default `csv` when the fields are known (no transform, or `fields`
    /// given), else `jsonl`.
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
}

/// The validated job definition the engine runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The config as written (with paths resolved), for the job record and the job id.
    pub config: JobConfig,
    /// Input encoding, when forced (else per input, from the extension).
    pub format: Option<Format>,
    /// CSV delimiter byte.
    pub delimiter: u8,
    /// CSV quote byte.
    pub quote: u8,
    /// Chunk targets.
    pub chunk_records: Option<NonZeroU64>,
    /// Chunk byte target.
    pub chunk_bytes: NonZeroU64,
    /// JSON Schema, as JSON.
    pub schema: Option<serde_json::Value>,
    /// Enrichment, with its source resolved.
    pub enrich: Option<EnrichConfig>,
    /// Base directory for relative paths in the config.
    pub base_dir: PathBuf,
    /// Sink batch size.
    pub sink_batch: usize,
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

    /// Check every setting and resolve relative paths against `base_dir`.
    pub fn validate(self, base_dir: &Path) -> Result<JobSpec> {
        let delimiter = one_byte("input.delimiter", &self.input.delimiter)?;
        let quote = one_byte("input.quote", &self.input.quote)?;
        if !self.input.header && self.columns.is_empty() && self.input.format != Some(Format::Jsonl) {
            // Only an issue for CSV; JSON inputs name their fields.
            if matches!(self.input.format, None | Some(Format::Csv)) {
                return Err(Error::config("input.header", "header = false needs [[columns]] to name the fields"));
            }
        }
        let chunk_records = match self.chunking.records {
            None => None,
            Some(n) => Some(NonZeroU64::new(n).ok_or_else(|| Error::config("chunking.records", "must be at least 1"))?),
        };
        let chunk_bytes = NonZeroU64::new(self.chunking.bytes)
            .ok_or_else(|| Error::config("chunking.bytes", "must be at least 1"))?;
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.columns.iter().enumerate() {
            let key = format!("columns[{i}] ({})", c.name);
            check_column(&key, c)?;
            if !seen.insert(c.out_name().to_string()) {
                return Err(Error::config(key, format!("field {:?} is declared twice", c.out_name())));
            }
        }
        let schema = match &self.validate {
            None => None,
            Some(v) => Some(load_schema(v, base_dir)?),
        };
        if let Some(schema) = &schema {
            jsonschema::validator_for(schema).map_err(|e| Error::config("validate.schema", e.to_string()))?;
        }
        let enrich = match &self.enrich {
            None => None,
            Some(e) => {
                for (i, c) in e.columns.iter().enumerate() {
                    check_column(&format!("enrich.columns[{i}] ({})", c.name), c)?;
                }
                if e.on_missing == OnMissing::Default && e.defaults.is_empty() {
                    return Err(Error::config("enrich.defaults", "on_missing = \"default\" needs a defaults table"));
                }
                let mut e = e.clone();
                if !["sqlite:", "file://", "s3://", "dynamodb://"].iter().any(|p| e.source.starts_with(p)) {
                    e.source = base_dir.join(&e.source).display().to_string();
                }
                Some(e)
            }
        };
        for (i, t) in self.transform.iter().enumerate() {
            crate::pipeline::compile_jq(t).map_err(|reason| Error::config(format!("transform[{i}]"), reason))?;
        }
        if let Some(table) = &self.sink.table {
            let dynamo_name = |t: &str| {
                (3..=255).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            };
            if self.sink.kind == SinkKind::Dynamodb && !dynamo_name(table) {
                return Err(Error::config(
                    "sink.table",
                    format!("{table:?} is not a DynamoDB table name (3 to 255 of letters, digits, _ . -)"),
                ));
            }
            if self.sink.kind != SinkKind::Dynamodb && !is_sql_ident(table) {
                return Err(Error::config(
                    "sink.table",
                    format!("{table:?} is not a plain table name (letters, digits, _)"),
                ));
            }
        }
        if self.sink.batch == 0 {
            return Err(Error::config("sink.batch", "must be at least 1"));
        }
        if self.sink.kind == SinkKind::Dynamodb && self.sink.table.is_none() {
            return Err(Error::config("sink.table", "a dynamodb sink needs the name of its table"));
        }
        if self.output.format == Some(OutputFormat::Csv) && !self.transform.is_empty() && self.output.fields.is_none() {
            return Err(Error::config("output.fields", "CSV output after a transform needs the output field list"));
        }
        Ok(JobSpec {
            format: self.input.format,
            delimiter,
            quote,
            chunk_records,
            chunk_bytes,
            schema,
            enrich,
            base_dir: base_dir.to_path_buf(),
            sink_batch: self.sink.batch,
            config: self,
        })
    }
}

impl ColumnConfig {
    /// The field name this column has in output records.
    pub fn out_name(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.name)
    }
}

fn check_column(key: &str, c: &ColumnConfig) -> Result<()> {
    if let Some(fmt) = &c.format {
        if !matches!(c.kind, ColumnType::Date | ColumnType::Timestamp) {
            return Err(Error::config(key, "format is only for date and timestamp columns"));
        }
        let items: Vec<_> = chrono::format::StrftimeItems::new(fmt).collect();
        if items.iter().any(|i| matches!(i, chrono::format::Item::Error)) {
            return Err(Error::config(key, format!("bad date format {fmt:?}")));
        }
    }
    Ok(())
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

fn one_byte(key: &str, s: &str) -> Result<u8> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(Error::config(key, format!("must be exactly one ASCII character, got {s:?}"))),
    }
}

/// Whether `s` can be used unquoted-safe as an SQLite identifier.
pub fn is_sql_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// ` line N (`the line`)`: where a TOML error is, with the line's text, which names the key.
fn snippet(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!(" line {line_no} (`{line}`)")
}
