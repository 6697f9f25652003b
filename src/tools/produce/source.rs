//! The file `produce` reads: scanned as a job's planner scans it, then decoded chunk by chunk
//! into the entries Kinesis takes.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;

use crate::backends::bucket::{self, InputObject};
use crate::backends::cloud::Cloud;
use crate::engine::pipeline::Pipeline;
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::input::plan::{Chunk, InputScan};
use crate::model::config::{ColumnConfig, ColumnType, Format, JobConfig};
use crate::model::record::{Fault, Outcome, Row};

use super::{Entry, Produce, MAX_KEY_CHARS, MAX_RECORD_BYTES};

/// A file to produce from, and how to decode it.
pub struct Source {
    /// The file.
    pub input: InputObject,
    /// The store it is in (the local file system, or its S3 bucket).
    pub store: Arc<dyn ObjectStore>,
    /// The decoding settings: the job file's `[input]` (and, without a header, the names of
    /// its `[[columns]]`), without types, checks or transforms.
    pub spec: JobSpec,
}

impl Source {
    /// The file at `file` (a path or `s3://BUCKET/KEY`), decoded as `config`'s `[input]` says
    /// (format and compression from its name, unless the job file sets them).
    pub async fn open(file: &str, config: &JobConfig, cloud: &Cloud) -> Result<Source> {
        let spec = decoding(config)?;
        let store = bucket::input_store(file, cloud)?;
        let mut inputs =
            bucket::resolve_inputs(store.as_ref(), &[file.to_string()], spec.input.format, spec.input.compression)
                .await?;
        if inputs.len() != 1 {
            return Err(Error::input(file, format!("names {} files; give one file", inputs.len())));
        }
        Ok(Source { input: inputs.remove(0), store, spec })
    }
}

/// The settings that decode `config`'s inputs as a job would, and do nothing more: every
/// field is text (a CSV row's), or as the JSON record has it.
fn decoding(config: &JobConfig) -> Result<JobSpec> {
    let names_fields = !config.input.header && matches!(config.input.format, None | Some(Format::Csv));
    let columns = match names_fields {
        true => config
            .columns
            .iter()
            .map(|c| ColumnConfig {
                name: c.name.clone(),
                rename: None,
                kind: ColumnType::String,
                format: None,
                required: false,
                max_length: None,
                precision: None,
                scale: None,
                round: false,
            })
            .collect(),
        false => Vec::new(),
    };
    let bare =
        JobConfig { input: config.input.clone(), chunking: config.chunking.clone(), columns, ..JobConfig::default() };
    bare.validate(Path::new("."))
}

/// The plan's scan of the source: where its records begin and end.
pub(super) async fn scan(source: &Source) -> Result<InputScan> {
    let reader = bucket::open_reader(source.store.clone(), &source.input).await?;
    let (input, spec) = (source.input.clone(), source.spec.input);
    let targets = source.spec.chunking;
    tokio::task::spawn_blocking(move || {
        let decoded = reader.decoded_at_most(spec.max_decompressed(input.size), "input.max_decompressed_bytes")?;
        crate::input::plan::scan(decoded, input.format, spec.dialect, targets)
            .map_err(|e| Error::input(&input.location, format!("cannot read input: {e}")))
    })
    .await
    .map_err(|e| Error::internal("produce", "scan task failed", e))?
}

/// Read the source on a blocking thread and give `each` every entry in order, then `None`;
/// `each` returns false to stop. Returns the records and bytes of data read.
pub(super) async fn blocking(
    source: &Source,
    scan: &Arc<InputScan>,
    how: &Produce,
    mut each: impl FnMut(Option<Entry>) -> bool + Send + 'static,
) -> Result<(u64, u64)> {
    let reader = bucket::open_reader(source.store.clone(), &source.input).await?;
    let (input, spec, scan, key) = (source.input.clone(), source.spec.clone(), scan.clone(), how.partition_key.clone());
    tokio::task::spawn_blocking(move || {
        let decoded =
            reader.decoded_at_most(spec.input.max_decompressed(input.size), "input.max_decompressed_bytes")?;
        let mut counted = (0u64, 0u64);
        let done = each_entry(decoded, &input, &spec, &scan, key.as_deref(), &mut |entry| {
            counted = (counted.0 + 1, counted.1 + entry.data.len() as u64);
            each(Some(entry))
        })?;
        if done {
            each(None);
        }
        Ok(counted)
    })
    .await
    .map_err(|e| Error::internal("produce", "decoding task failed", e))?
}

/// Decode `decoded` chunk by chunk as `scan` cut it, and give `each` every record's entry;
/// stop when it returns false (then return false). The first record that cannot be an entry
/// is an error naming its line.
fn each_entry(
    mut decoded: Box<dyn Read + Send>,
    input: &InputObject,
    spec: &JobSpec,
    scan: &InputScan,
    key_field: Option<&str>,
    each: &mut dyn FnMut(Entry) -> bool,
) -> Result<bool> {
    let pipeline = Pipeline::new(spec, None, None);
    let reading = pipeline.input(0, 0, &input.location, input.format, scan.header.as_deref())?;
    let mut pos = 0u64;
    let mut buf = Vec::new();
    for chunk in &scan.chunks {
        read_chunk(&mut decoded, &mut pos, chunk, &mut buf)
            .map_err(|e| Error::input(&input.location, format!("cannot read input: {e}")))?;
        let mut number = chunk.first_record;
        let (mut failed, mut stopped) = (None, false);
        pipeline.each_record(&reading, chunk.start(), &buf, &mut |line, outcome| {
            if failed.is_some() || stopped {
                return;
            }
            match entry(outcome, number, key_field) {
                Ok(e) => stopped = !each(e),
                Err(f) => {
                    failed = Some(Error::InvalidInput {
                        location: input.location.clone(),
                        line: Some(line),
                        column: f.field,
                        reason: format!("{} ({})", f.message, f.rule),
                    })
                }
            }
            number += 1;
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if stopped {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Read `chunk`'s bytes into `buf`, from a stream now at byte `pos`. Chunks come in order;
/// the bytes between two (a header, blank lines, a JSON array's commas) are skipped.
fn read_chunk(r: &mut dyn Read, pos: &mut u64, chunk: &Chunk, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let skip = chunk.start.checked_sub(*pos).ok_or_else(|| std::io::Error::other("chunks out of order"))?;
    let skipped = std::io::copy(&mut r.take(skip), &mut std::io::sink())?;
    buf.clear();
    let want = chunk.end - chunk.start;
    let read = r.take(want).read_to_end(buf)? as u64;
    if skipped != skip || read != want {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the input is shorter than when scanned"));
    }
    *pos = chunk.end;
    Ok(())
}

/// A decoded record's entry (record `number` of its input), or why it cannot be one.
fn entry(outcome: Outcome, number: u64, key_field: Option<&str>) -> std::result::Result<Entry, Fault> {
    let record = match outcome {
        Outcome::Written(item) => item.record,
        Outcome::Rejected(r) => return Err(Fault { field: r.field, rule: r.rule, message: r.message }),
        // Nothing filters: the decoding spec has no transform.
        Outcome::Filtered => return Err(Fault::new(None, "transform", "dropped while decoding")),
    };
    let partition_key = match key_field {
        Some(field) => field_key(&record, field).map_err(|m| Fault::new(Some(field), "partition_key", m))?,
        None => position_key(number),
    };
    let mut data = serde_json::to_vec(&record).map_err(|e| Fault::new(None, "json", e.to_string()))?;
    data.push(b'\n');
    let entry = Entry { partition_key, data };
    if entry.size() > MAX_RECORD_BYTES {
        let message = format!(
            "the record is {} bytes as JSON with its partition key; Kinesis takes at most {MAX_RECORD_BYTES}",
            entry.size()
        );
        return Err(Fault::new(None, "size", message));
    }
    Ok(entry)
}

/// The partition key from a record's field: its text (a number or boolean as JSON).
fn field_key(record: &Row, field: &str) -> std::result::Result<String, String> {
    use serde_json::Value;
    let text = match record.get(field) {
        None => return Err("the record has no such field for the partition key".into()),
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(v) => {
            return Err(format!(
                "the partition key must be text, a number or a boolean, not {}",
                crate::model::record::json_kind(v)
            ))
        }
    };
    match text.chars().count() {
        0 => Err("the partition key is empty; Kinesis takes 1 to 256 characters".into()),
        n if n > MAX_KEY_CHARS => {
            Err(format!("the partition key is {n} characters long; Kinesis takes at most {MAX_KEY_CHARS}"))
        }
        _ => Ok(text),
    }
}

/// A partition key from record `number`'s position: the same on every run, and spread
/// evenly by Kinesis's hash, so consecutive records go to different shards.
pub(super) fn position_key(number: u64) -> String {
    // splitmix64's finalizer: consecutive numbers give unrelated keys.
    let mut z = number.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", z ^ (z >> 31))
}
