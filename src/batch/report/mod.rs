//! The job report, `jobs/<id>/report.html`: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) showing what a finished job did, readable on a phone.
//!
//! It shows the summary's counts, a timeline of the chunks by worker (the slowest chunk
//! marked), records per second over time, rejects by rule and by field with a few examples,
//! the slowest chunks, the API calls with their cost, the inputs and outputs, and the job
//! definition.
//!
//! Every value taken from `summary.json` is in an element whose `data-summary` attribute
//! names it by its path of keys joined by `.` (`records.total`, `inputs.0.bytes`,
//! `api_calls.dynamodb.BatchWriteItem`: a key may itself hold dots), so that a program can
//! check the page against the summary. Numbers are written with `,` between thousands;
//! strings as they are, but `_` as a space.
//!
//! This file holds what the page is made of ([`Report`], the [`RejectDigest`] of the rejects,
//! the definition as shown); `html` writes the page, with its two charts in `chart` and its
//! escaping and number formats in `text`.

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::batch::job::{Manifest, Summary};
use crate::model::config::JobDefinition;
use crate::model::record::Reject;

mod chart;
mod html;
mod text;

pub use self::html::render;

/// Example rejects kept per rule and field.
pub const EXAMPLES_PER_FIELD: usize = 3;
/// Distinct (rule, field) pairs itemised; rejects beyond them are only counted, so that a
/// rejects file with a new field on every line cannot make the digest grow with it.
pub const MAX_FIELDS: usize = 100;
/// Characters of a reject's raw record kept in an example.
const RAW_CHARS: usize = 160;
/// Characters of a reject's message kept in an example.
const MESSAGE_CHARS: usize = 300;

/// What a report is made of: the summary and manifest the gather wrote, and what the page
/// adds to them.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The job's `summary.json`.
    pub summary: &'a Summary,
    /// The job's `manifest.json`: every chunk with its commit (worker, timings, counts).
    pub manifest: &'a Manifest,
    /// The job definition as TOML (see [`definition_toml`]).
    pub definition: &'a str,
    /// The rejects, by rule and field, with examples.
    pub rejects: &'a RejectDigest,
    /// The cost in USD of the job's API calls, by `"service.Operation"` (see
    /// [`crate::backends::cost::request_costs`]); an operation missing here shows no cost.
    pub costs: &'a BTreeMap<String, f64>,
    /// Where the costs come from, for a person (`AWS list prices for us-east-1 as of …`).
    pub prices: &'a str,
}

/// The rejects of a job, digested from its rejects file in one pass in bounded memory:
/// counts by rule and by (rule, field), and the first few rejects of each pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectDigest {
    /// Rejects per rule.
    pub by_rule: BTreeMap<String, u64>,
    /// Rejects per (rule, field), for the first [`MAX_FIELDS`] pairs met; `None`: the
    /// rule is not about one field.
    pub by_field: BTreeMap<(String, Option<String>), FieldRejects>,
    /// Rejects of pairs past the first [`MAX_FIELDS`]: counted by rule only.
    pub not_itemised: u64,
    /// Lines that are not a reject (the file is damaged); skipped.
    pub unreadable: u64,
}

/// The rejects of one rule on one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRejects {
    /// How many.
    pub count: u64,
    /// The first [`EXAMPLES_PER_FIELD`], in file order.
    pub examples: Vec<RejectExample>,
}

/// One reject, shortened for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectExample {
    /// The input's name (the last part of its location).
    pub input: String,
    /// The line of the input on which the record starts.
    pub line: u64,
    /// What is wrong, cut to a few hundred characters.
    pub message: String,
    /// The record as it appeared, cut to 160 characters.
    pub raw: String,
}

impl RejectDigest {
    /// Digest a rejects file (JSON Lines of [`Reject`]) from a reader, one line at a time.
    pub fn read(reader: impl BufRead) -> std::io::Result<RejectDigest> {
        let mut digest = RejectDigest::default();
        for line in reader.lines() {
            digest.add_line(&line?);
        }
        Ok(digest)
    }

    /// Count one line of a rejects file (blank lines are skipped, damaged ones counted).
    pub fn add_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<Reject>(line) {
            Ok(reject) => self.add(reject),
            Err(_) => self.unreadable += 1,
        }
    }

    /// Count one reject.
    pub fn add(&mut self, reject: Reject) {
        *self.by_rule.entry(reject.rule.clone()).or_default() += 1;
        let key = (reject.rule.clone(), reject.field.clone());
        if !self.by_field.contains_key(&key) && self.by_field.len() >= MAX_FIELDS {
            self.not_itemised += 1;
            return;
        }
        let field = self.by_field.entry(key).or_default();
        field.count += 1;
        if field.examples.len() < EXAMPLES_PER_FIELD {
            field.examples.push(RejectExample::of(reject));
        }
    }

    /// Rejects counted.
    pub fn total(&self) -> u64 {
        self.by_rule.values().sum()
    }
}

impl RejectExample {
    fn of(reject: Reject) -> RejectExample {
        let input = reject.input.rsplit('/').next().unwrap_or(&reject.input).to_string();
        RejectExample {
            input,
            line: reject.line,
            message: shorten(&reject.message, MESSAGE_CHARS),
            raw: shorten(&reject.raw, RAW_CHARS),
        }
    }
}

/// `text` cut to `max` characters, with `…` when it was cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The job definition as TOML for the page: the job file's settings, with every address
/// that may hold a secret (notification targets, the sink's publish URL, the reference and
/// sink URLs) redacted as [`crate::model::web::redact`] does.
pub fn definition_toml(definition: &JobDefinition) -> String {
    let mut config = definition.config.clone();
    let hide = |url: &mut String| {
        if url.contains("://") {
            *url = crate::model::web::redact(url);
        }
    };
    for n in &mut config.notify {
        hide(&mut n.to);
    }
    if let Some(p) = config.sink.publish.as_mut() {
        hide(p);
    }
    match toml::to_string(&config) {
        Ok(text) => text,
        // Every job file came from TOML, so this is not expected; say so rather than fail.
        Err(e) => format!("# the definition cannot be shown as TOML: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    //! The tests of the digest and the definition, and the reject and job the page's tests share.

    use super::*;
    use crate::batch::job::ManifestChunk;

    pub(super) fn reject(rule: &str, field: Option<&str>, line: u64, raw: &str) -> Reject {
        Reject {
            input: "file:///data/orders.csv".into(),
            record: line - 1,
            line,
            field: field.map(str::to_string),
            rule: rule.into(),
            message: format!("bad {rule}"),
            raw: raw.into(),
        }
    }

    #[test]
    fn the_digest_counts_every_reject_and_keeps_three_shortened_examples_per_field() {
        let long = "x".repeat(1000);
        let mut lines = String::new();
        for i in 0..5 {
            lines += &serde_json::to_string(&reject("max_length", Some("Country"), i + 2, &long)).unwrap();
            lines += "\n";
        }
        lines += &serde_json::to_string(&reject("fields", None, 9, "a,b")).unwrap();
        lines += "\n\nnot json\n";
        let d = RejectDigest::read(lines.as_bytes()).unwrap();
        assert_eq!(d.by_rule, BTreeMap::from([("max_length".into(), 5), ("fields".into(), 1)]));
        assert_eq!(d.total(), 6);
        assert_eq!(d.unreadable, 1);
        let country = &d.by_field[&("max_length".to_string(), Some("Country".to_string()))];
        assert_eq!(country.count, 5);
        assert_eq!(country.examples.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(country.examples[0].raw.chars().count(), RAW_CHARS + 1, "cut, with an ellipsis");
        assert_eq!(country.examples[0].input, "orders.csv");
        assert_eq!(d.by_field[&("fields".to_string(), None)].count, 1);
    }

    #[test]
    fn fields_past_the_limit_are_counted_but_not_itemised() {
        let mut d = RejectDigest::default();
        for i in 0..MAX_FIELDS as u64 + 10 {
            d.add(reject("schema.required", Some(&format!("f{i}")), 2, "{}"));
        }
        assert_eq!(d.by_field.len(), MAX_FIELDS);
        assert_eq!(d.not_itemised, 10);
        assert_eq!(d.by_rule["schema.required"], MAX_FIELDS as u64 + 10);
    }

    /// A job of `chunks` chunks of 100 records, chunk `i` on worker `i % workers`, taking
    /// 100 ms (chunk 3: 900 ms, the straggler).
    pub(super) fn job(chunks: u32, workers: u32) -> (Summary, Manifest) {
        use crate::batch::job::{ChunkCounts, InputSummary, Outputs, RecordCounts, Timings};
        let t0 = 1_700_000_000_000;
        let manifest_chunks: Vec<ManifestChunk> = (0..chunks)
            .map(|i| {
                let started_ms = t0 + 50 + i64::from(i / workers) * 100;
                let took = if i == 3 { 900 } else { 100 };
                ManifestChunk {
                    chunk: crate::input::plan::Chunk {
                        index: i,
                        input: 0,
                        start: 0,
                        end: 1,
                        first_record: 1,
                        records: 100,
                        first_line: 2,
                        resume: None,
                        more: Vec::new(),
                    },
                    commit: crate::backends::ledger::ChunkRecord {
                        index: i,
                        worker: format!("w<{}>", i % workers),
                        counts: Default::default(),
                        output_bytes: 0,
                        rejects_bytes: 0,
                        started_ms,
                        finished_ms: started_ms + took,
                        api_calls: Default::default(),
                        sink_figures: None,
                        generation: 0,
                        attempt: String::new(),
                    },
                }
            })
            .collect();
        let summary = Summary {
            job_id: "orders-1".into(),
            status: "completed_with_rejects".into(),
            inputs: vec![InputSummary {
                location: "s3://b/in/orders.csv".into(),
                bytes: 1_234_567,
                records: 1000,
                decoding: crate::batch::job::Decoding::Range,
                decoded_bytes: 1_234_567,
                windows_bytes: 0,
            }],
            records: RecordCounts {
                total: u64::from(chunks) * 100,
                written: 990,
                rejected: 10,
                filtered: 0,
                not_worked: 0,
            },
            chunks: ChunkCounts { total: chunks, done: chunks },
            rejects_by_rule: BTreeMap::from([("schema.minimum".into(), 10)]),
            outputs: Outputs {
                output: "s3://b/jobs/orders-1/output.csv".into(),
                rejects: "s3://b/jobs/orders-1/rejects.jsonl".into(),
                manifest: "s3://b/jobs/orders-1/manifest.json".into(),
                summary: "s3://b/jobs/orders-1/summary.json".into(),
            },
            sink: Some("orders".into()),
            sink_keeps: None,
            sink_figures: Some(crate::backends::sink::SinkFigures {
                requests: 1234,
                items_written: 990,
                write_units: Some(1010.0),
                throttled_requests: 7,
                retried_items: 20,
            }),
            timings: Timings {
                started_at: "2023-11-14T22:13:20.000Z".into(),
                finished_at: "2023-11-14T22:13:22.000Z".into(),
                duration_ms: 2000,
                phases: BTreeMap::from([("plan_ms".into(), 50), ("work_ms".into(), 1500), ("gather_ms".into(), 450)]),
            },
            records_per_s: 500.0,
            api_calls: BTreeMap::from([("dynamodb.BatchWriteItem".into(), 1234), ("s3.GetObject".into(), 10)]),
            api_calls_per_record: 1.244,
            already_complete: false,
            thresholds: None,
            stopped_by: None,
            redriven_from: None,
            warnings: Vec::new(),
        };
        (
            summary,
            Manifest {
                job_id: "orders-1".into(),
                inputs: vec!["s3://b/in/orders.csv".into()],
                chunks: manifest_chunks,
            },
        )
    }

    #[test]
    fn secret_addresses_are_left_out_of_the_definition() {
        let text = r#"
[sink]
type = "none"
publish = "https://hooks.example.com/services/T0/B0/publish-secret"

[[notify]]
to = "https://u:notify-password@hooks.example.com/services/T0/B0/notify-secret?token=t"
"#;
        let config = crate::model::config::JobConfig::from_toml(text, "job.toml").unwrap();
        let definition = config.resolve(std::path::Path::new(".")).unwrap();
        let shown = definition_toml(&definition);
        for secret in ["publish-secret", "notify-password", "notify-secret", "token"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
    }
}
