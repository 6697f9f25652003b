//! The checked job: a [`JobDefinition`] turned, once, into the settings the engine runs on.
//!
//! Config → definition → spec: the TOML file parses into a [`JobConfig`]; resolving its paths
//! gives the [`JobDefinition`] that is stored and hashed; checking that gives a [`JobSpec`] of
//! checked types only (compiled jq, a compiled JSON Schema, column rules, byte-sized CSV
//! settings, non-zero chunk targets). Only a `JobSpec` reaches the engine, and a stored
//! definition is checked again the same way on every host that loads it.

use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;

pub use crate::backends::sink::target::SinkSpec;
use crate::backends::sink::target::SinkTarget;
use crate::error::{Error, Result};
use crate::input::decode::CsvDialect;
use crate::input::plan::ChunkTargets;
use crate::model::column::ColumnRule;
use crate::model::config::{
    ColumnConfig, ColumnType, Compression, EnrichConfig, Format, JobConfig, JobDefinition, OnMissing, OutputFormat,
};
use crate::model::transform::Transform;

/// The checked job definition the engine runs on.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Who is told when the job finishes or fails.
    pub notify: Vec<crate::model::config::Notify>,
    /// Where inputs are moved once the job has completed.
    pub archive: Option<String>,
    /// Watched uploads wait for an object of this name (`_SUCCESS`): see
    /// [`crate::model::config::InputConfig::ready_marker`].
    pub ready_marker: Option<String>,
    /// What it was checked from: stored as `job.json` and hashed into the job id.
    pub definition: Arc<JobDefinition>,
    /// How inputs are read.
    pub input: InputSpec,
    /// Where chunks are cut.
    pub chunking: ChunkTargets,
    /// Declared columns, in declaration order.
    pub columns: Arc<[ColumnRule]>,
    /// The compiled JSON Schema, if any.
    pub schema: Option<Arc<jsonschema::Validator>>,
    /// Compiled jq programs, in order.
    pub transforms: Arc<[Transform]>,
    /// How many of `transforms` run before the lookup (the top-level `transform`); the rest
    /// (`[enrich] transform`) run after it.
    pub enrich_at: usize,
    /// Enrichment, with its source resolved.
    pub enrich: Option<EnrichConfig>,
    /// Fields whose values identify an item (empty: input location and record number).
    pub key_fields: Vec<String>,
    /// Where records go, and in batches of how many.
    pub sink: SinkSpec,
    /// Output fields, when the job file names them.
    pub output_fields: Option<Vec<String>>,
    /// Output format, when the job file names it.
    pub output_format: Option<OutputFormat>,
    /// How many rejects the job tolerates (`[rejects]`).
    pub thresholds: crate::model::rejects::Thresholds,
    /// What undeclared input columns do (`[input] unknown_columns`).
    pub unknown_columns: crate::model::config::UnknownColumns,
}

/// How inputs are read.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    /// Input encoding, when forced (else per input, from its name).
    pub format: Option<Format>,
    /// Compression, or `Auto` to detect it per input.
    pub compression: Compression,
    /// CSV delimiter, quote and header.
    pub dialect: CsvDialect,
    /// The cap on a compressed input's decompressed size, if set (see
    /// [`InputSpec::max_decompressed`]).
    pub max_decompressed_bytes: Option<u64>,
}

impl InputSpec {
    /// The most an input of `compressed` bytes may decompress to: as configured, else 1,000
    /// times its size and at least 1 GiB (deflate itself expands at most about 1,032 times).
    pub fn max_decompressed(&self, compressed: u64) -> u64 {
        self.max_decompressed_bytes.unwrap_or_else(|| compressed.saturating_mul(1000).max(1 << 30))
    }
}

impl JobConfig {
    /// Resolve paths against `base_dir` and check every setting (see [`JobDefinition::check`]).
    pub fn validate(self, base_dir: &Path) -> Result<JobSpec> {
        self.resolve(base_dir)?.check()
    }
}

impl JobDefinition {
    /// Check every setting; errors name the setting.
    pub fn check(self) -> Result<JobSpec> {
        let c = &self.config;
        let delimiter = one_byte("input.delimiter", &c.input.delimiter)?;
        let quote = one_byte("input.quote", &c.input.quote)?;
        if !c.input.header && c.columns.is_empty() && matches!(c.input.format, None | Some(Format::Csv)) {
            // Only an issue for CSV; JSON inputs name their fields.
            return Err(Error::config("input.header", "header = false needs [[columns]] to name the fields"));
        }
        let records = match c.chunking.records {
            None => None,
            Some(n) => Some(NonZeroU64::new(n).ok_or_else(|| Error::config("chunking.records", "must be at least 1"))?),
        };
        let bytes =
            NonZeroU64::new(c.chunking.bytes).ok_or_else(|| Error::config("chunking.bytes", "must be at least 1"))?;
        let mut seen = std::collections::HashSet::new();
        for (i, col) in c.columns.iter().enumerate() {
            let key = format!("columns[{i}] ({})", col.name);
            check_column(&key, col)?;
            if !seen.insert(col.out_name().to_string()) {
                return Err(Error::config(key, format!("field {:?} is declared twice", col.out_name())));
            }
        }
        let schema = match &self.schema {
            None => None,
            Some(s) => Some(Arc::new(
                jsonschema::validator_for(s).map_err(|e| Error::config("validate.schema", e.to_string()))?,
            )),
        };
        if let Some(e) = &c.enrich {
            for (i, col) in e.columns.iter().enumerate() {
                check_column(&format!("enrich.columns[{i}] ({})", col.name), col)?;
            }
            if e.on_missing == OnMissing::Default && e.defaults.is_empty() {
                return Err(Error::config("enrich.defaults", "on_missing = \"default\" needs a defaults table"));
            }
        }
        // The top-level transforms run before the lookup, `[enrich] transform` after it.
        let after_lookup = c.enrich.iter().flat_map(|e| e.transform.iter().enumerate());
        let transforms = (c.transform.iter().enumerate().map(|(i, t)| (format!("transform[{i}]"), t)))
            .chain(after_lookup.map(|(i, t)| (format!("enrich.transform[{i}]"), t)))
            .map(|(key, t)| Transform::compile(t).map_err(|reason| Error::config(key, reason)))
            .collect::<Result<Arc<[Transform]>>>()?;
        let enrich_at = c.transform.len();
        let target = check_sink(c)?;
        if c.sink.batch == 0 {
            return Err(Error::config("sink.batch", "must be at least 1"));
        }
        if c.output.format == Some(OutputFormat::Csv) && !transforms.is_empty() && c.output.fields.is_none() {
            return Err(Error::config("output.fields", "CSV output after a transform needs the output field list"));
        }
        if c.output.format == Some(OutputFormat::Parquet) && c.output.fields.is_none() {
            if !transforms.is_empty() {
                return Err(parquet_needs_fields("a job with transforms"));
            }
            if matches!(c.input.format, Some(Format::Jsonl | Format::Json)) {
                return Err(parquet_needs_fields("a job reading JSON"));
            }
        }
        let notify = c
            .notify
            .iter()
            .enumerate()
            .map(|(i, n)| crate::model::config::Notify::parse(n, &format!("notify[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        if let Some(a) = &c.archive {
            if a.to.trim_matches('/').is_empty() {
                return Err(Error::config("archive.to", "needs a prefix or directory other than the root"));
            }
        }
        check_meta_names(c)?;
        if let Some(m) = &c.input.ready_marker {
            if m.is_empty() || m.contains('/') || m.contains('\\') || m == "." || m == ".." {
                return Err(Error::config(
                    "input.ready_marker",
                    format!("{m:?} is not a file name (such as \"_SUCCESS\")"),
                ));
            }
        }
        let thresholds = c.rejects.as_ref().map(|r| r.check()).transpose()?.unwrap_or_default();
        Ok(JobSpec {
            thresholds,
            unknown_columns: c.input.unknown_columns.unwrap_or_default(),
            notify,
            archive: c.archive.as_ref().map(|a| a.to.clone()),
            ready_marker: c.input.ready_marker.clone(),
            input: InputSpec {
                format: c.input.format,
                compression: c.input.compression,
                dialect: CsvDialect { delimiter, quote, header: c.input.header },
                max_decompressed_bytes: c.input.max_decompressed_bytes,
            },
            chunking: ChunkTargets { records, bytes, max_record_bytes: c.input.max_record_bytes },
            columns: c.columns.iter().map(ColumnRule::from).collect(),
            schema,
            transforms,
            enrich_at,
            enrich: c.enrich.clone(),
            key_fields: c.key.fields.clone(),
            sink: SinkSpec {
                target,
                batch: c.sink.batch,
                ordered: c.sink.ordered,
                writers: std::num::NonZeroU32::new(c.sink.writers.unwrap_or(1))
                    .ok_or_else(|| Error::config("sink.writers", "must be at least 1"))?,
                in_flight: c
                    .sink
                    .in_flight
                    .map(|n| {
                        std::num::NonZeroUsize::new(n)
                            .filter(|n| n.get() <= crate::backends::sink::MAX_IN_FLIGHT)
                            .ok_or_else(|| {
                                Error::config(
                                    "sink.in_flight",
                                    format!(
                                        "{n} requests in flight: must be from 1 to {}",
                                        crate::backends::sink::MAX_IN_FLIGHT
                                    ),
                                )
                            })
                    })
                    .transpose()?,
                publish: c
                    .sink
                    .publish
                    .as_deref()
                    .map(|u| crate::model::config::PublishTarget::parse(u, "sink.publish"))
                    .transpose()?,
                database: c.sink.database.clone(),
            },
            output_fields: c.output.fields.clone(),
            output_format: c.output.format,
            definition: Arc::new(self),
        })
    }
}

impl JobSpec {
    /// The default output format: CSV when the field list is known.
    pub fn output_format(&self, fields_known: bool) -> OutputFormat {
        self.output_format.unwrap_or(if fields_known { OutputFormat::Csv } else { OutputFormat::Jsonl })
    }

    /// The declared type of output field `name`, from `[[columns]]` or `enrich.columns`.
    pub fn field_type(&self, name: &str) -> Option<ColumnType> {
        if let Some(rule) = self.columns.iter().find(|r| r.out == name) {
            return Some(rule.kind());
        }
        self.enrich.iter().flat_map(|e| e.columns.iter()).find(|c| c.out_name() == name).map(|c| c.kind)
    }

    /// The sink table `table` holding output `fields` (when known), typed as the job declares
    /// them, its exact decimals named.
    pub fn sink_shape(&self, table: String, fields: Option<&[String]>) -> crate::backends::sink::SinkShape {
        let exact = fields
            .into_iter()
            .flatten()
            .filter_map(|n| self.exact_decimal(n).map(|(p, s)| (n.clone(), p, s)))
            .collect();
        let fields = fields.map(|f| f.iter().map(|n| (n.clone(), self.field_type(n))).collect());
        crate::backends::sink::SinkShape { table, fields, exact }
    }

    /// `(precision, scale)` of output field `name` when it is an exact decimal (a declared
    /// or reference column with `precision`).
    pub fn exact_decimal(&self, name: &str) -> Option<(u32, u32)> {
        if let Some(rule) = self.columns.iter().find(|r| r.out == name) {
            return rule.exact();
        }
        self.enrich.iter().flat_map(|e| e.columns.iter()).find(|c| c.out_name() == name).and_then(|c| c.exact())
    }

    /// The output name of input column `name` (itself unless a declared column renames it).
    pub fn out_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.columns.iter().find(|r| r.name == name).map_or(name, |r| r.out.as_str())
    }
}

/// What a caller puts over a job file's settings: the command line's `--sink`, a Lambda
/// function's `SLUICEBOX_SINK` and `SLUICEBOX_CHUNK_MIB`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A sink URL over `[sink]`, and the option or setting that gave it, for errors.
    pub sink: Option<(String, &'static str)>,
    /// `[chunking] bytes`, in MiB.
    pub chunk_mib: Option<u64>,
    /// `[sink] writers`: processes writing the sink table at once (a Lambda deployment's
    /// task concurrency).
    pub sink_writers: Option<u32>,
}

impl Overrides {
    /// `definition` with these over it.
    pub fn apply(&self, mut definition: JobDefinition) -> Result<JobDefinition> {
        if let Some(mib) = self.chunk_mib {
            definition.config.chunking.bytes = mib << 20;
        }
        if let Some(writers) = self.sink_writers {
            definition.config.sink.writers = Some(writers);
        }
        if let Some((url, key)) = &self.sink {
            let target = crate::backends::sink::target::SinkTarget::parse(url, key)?;
            let sink = &mut definition.config.sink;
            sink.kind = target.kind_name().to_string();
            if let Some(table) = target.table() {
                sink.table = Some(table.to_string());
            }
        }
        Ok(definition)
    }
}

/// The job a command runs: the job file at `path` (without one: CSV with a header, every
/// field as text; relative paths in it are from its folder), with `overrides`, resolved and
/// checked.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<JobSpec> {
    let (config, base) = match path {
        Some(path) => (JobConfig::load(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => (JobConfig::default(), std::path::PathBuf::from(".")),
    };
    overrides.apply(config.resolve(&base)?)?.check()
}

/// The refusal of Parquet output by a job whose output fields are not known before it runs
/// (`who`: "a job with transforms"): a Parquet file declares its columns before its rows.
pub fn parquet_needs_fields(who: &str) -> Error {
    Error::config(
        "output.fields",
        format!(
            "output.format = \"parquet\" needs the output fields, and {who} cannot know them \
             before it runs: add fields = [\"…\", …] to [output], in column order"
        ),
    )
}

fn check_sink(c: &JobConfig) -> Result<SinkTarget> {
    SinkTarget::from_config(&c.sink.kind, c.sink.table.as_deref())
}

fn check_column(key: &str, c: &ColumnConfig) -> Result<()> {
    if c.precision.is_some() || c.scale.is_some() || c.round {
        if c.kind != ColumnType::Decimal {
            return Err(Error::config(key, "precision, scale and round are only for decimal columns"));
        }
        let max = crate::model::config::MAX_DECIMAL_PRECISION;
        let Some(p) = c.precision.filter(|p| (1..=max).contains(p)) else {
            let why = match c.precision {
                None => "scale and round need precision (the most significant digits)".to_string(),
                Some(p) => format!("precision {p} is not between 1 and {max} (the digits a value keeps exactly)"),
            };
            return Err(Error::config(key, why));
        };
        if c.scale.unwrap_or(0) > p {
            return Err(Error::config(key, format!("scale {} is more than precision {p}", c.scale.unwrap_or(0))));
        }
    }
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

/// Every `$meta.NAME` the output fields or the partition template name is metadata a record
/// has (a batch job's or a stream's: a batch record has null for a stream's names).
fn check_meta_names(c: &JobConfig) -> Result<()> {
    use crate::model::record::{BATCH_META, STREAM_META};
    let fields = c.output.fields.iter().flatten().map(|f| ("output.fields", f.as_str()));
    let partition = c.stream.iter().filter_map(|s| s.partition.as_deref()).map(|p| ("stream.partition", p));
    for (key, text) in fields.chain(partition) {
        for (name, meta) in crate::model::record::meta_names(text) {
            if !BATCH_META.contains(&meta.as_str()) && !STREAM_META.contains(&meta.as_str()) {
                let known: Vec<String> = BATCH_META.iter().chain(STREAM_META).map(|m| format!("$meta.{m}")).collect();
                return Err(Error::config(
                    key,
                    format!("{name} is no record metadata; there are {}", known.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn one_byte(key: &str, s: &str) -> Result<u8> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(Error::config(key, format!("must be exactly one ASCII character, got {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_input_may_grow_a_thousandfold_and_to_at_least_a_gibibyte_unless_set() {
        let spec = JobConfig::default().validate(std::path::Path::new("/")).unwrap();
        assert_eq!(spec.input.max_decompressed(1_000), 1 << 30, "small inputs get the floor");
        assert_eq!(spec.input.max_decompressed(10 << 30), 10_000 << 30, "large ones a thousand times their size");
        assert_eq!(spec.input.max_decompressed(u64::MAX), u64::MAX, "without overflow");
        let set = InputSpec { max_decompressed_bytes: Some(5), ..spec.input };
        assert_eq!(set.max_decompressed(10 << 30), 5, "a setting wins");
    }

    #[test]
    fn a_ready_marker_must_be_a_file_name() {
        for bad in ["", "in/_SUCCESS", "..", "a\\b"] {
            let toml = format!("[input]\nready_marker = {bad:?}\n");
            let e = JobConfig::from_toml(&toml, "j").unwrap().validate(Path::new(".")).unwrap_err();
            assert!(e.to_string().contains("input.ready_marker"), "{bad:?}: {e}");
        }
        let ok = JobConfig::from_toml("[input]\nready_marker = \"_SUCCESS\"\n", "j").unwrap();
        assert_eq!(ok.validate(Path::new(".")).unwrap().ready_marker.as_deref(), Some("_SUCCESS"));
    }
}
