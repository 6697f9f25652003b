//! `sluicebox check` and `sluicebox test`: a job file checked as `run` checks it, without
//! running anything; what its pipeline makes of the first records of a file; and the job
//! file's own `[[tests]]` (records, and what the job must make of them).
//!
//! Parsing, unknown keys, jq programs and the schema are checked where every job file is
//! (`JobConfig::from_toml`, `JobDefinition::check`); this module adds what `run` meets only
//! later: the reference (reachable, its key present), the sink (reachable) and `[stream]`'s
//! limits and partition template.

use std::io::Read;

use serde::Serialize;
use serde_json::Value;

use crate::backends::bucket::{self, InputObject};
use crate::engine::pipeline::Pipeline;
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::{Compression, Format, OutputFormat, TestCase};
use crate::model::record::{Origin, Outcome, Record};

/// Bytes of an input read for a sample (a JSON document is read whole, up to [`SAMPLE_JSON`]).
const SAMPLE_BYTES: u64 = 1 << 20;
/// The largest JSON document read whole for a sample.
const SAMPLE_JSON: u64 = 16 << 20;

/// What was checked, one line each, for a person.
pub async fn check(engine: &Engine, spec: &JobSpec) -> Result<Vec<String>> {
    let c = &spec.definition.config;
    let mut found = vec![format!(
        "input: {}; {} columns declared, {} transforms, {}",
        c.input.format.map_or("format from each file's name".to_string(), |f| format!("{f:?}").to_lowercase()),
        spec.columns.len(),
        spec.transforms.len(),
        if spec.schema.is_some() { "a JSON Schema" } else { "no schema" }
    )];
    if let Some(e) = &spec.enrich {
        let lookup = engine.open_lookup(Some(e)).await.map_err(|err| {
            Error::config(
                "enrich",
                format!(
                    "the reference {} (key {:?}) cannot be used: {err}",
                    e.source,
                    e.lookup_key.as_ref().unwrap_or(&e.key)
                ),
            )
        })?;
        let fields = lookup.as_ref().map(|l| l.fields().join(", ")).unwrap_or_default();
        found.push(format!("reference: {} by {}, adds {fields}", e.source, e.key));
    }
    found.push(crate::backends::sink::reach(&spec.sink.target, &engine.database, &engine.cloud).await?);
    // Where the job sends anything: a reader of the job file must see every address.
    if let Some(target) = &spec.sink.publish {
        found.push(format!("publish: every written record to {}", publish_target(target)));
    }
    for n in spec.notify.iter().chain(&engine.notify) {
        found.push(format!("notify: {} when {}", notify_target(&n.target), n.on.join(", ")));
    }
    if let Some(to) = &spec.archive {
        found.push(format!("archive: inputs move to {to:?} once their job completed"));
    }
    if let Some(st) = &c.stream {
        crate::stream::check_config(st)?;
        let encoding = match (spec.output_format, st.compression) {
            (Some(OutputFormat::Parquet), _) => "Parquet (zstd inside)",
            (_, Compression::Zstd) => "zstd compressed",
            (_, Compression::None) => "uncompressed",
            _ => "gzip compressed",
        };
        found.push(format!(
            "stream: files of {} MiB or {} s{}, {encoding}; at most {} partitions at once",
            st.size_mib,
            st.max_age_s,
            st.partition.as_deref().map_or(String::new(), |p| format!(", partitioned by {p}")),
            st.max_partitions,
        ));
        let template = st.partition.as_deref().map(crate::stream::partition::Template::parse).transpose()?;
        if let Some(why) = template.and_then(|t| t.looks_unbounded()) {
            found.push(format!(
                "warning: stream.partition: {why}: a file per record, until [stream] max_partitions rejects the rest"
            ));
        }
    }
    if !c.tests.is_empty() {
        found.push(format!("tests: {} (run them with `sluicebox test`)", c.tests.len()));
    }
    Ok(found)
}

/// A publish target as `check` shows it: a webhook by its host only.
fn publish_target(target: &crate::model::config::PublishTarget) -> String {
    match target {
        crate::model::config::PublishTarget::Sns(arn) => format!("the SNS topic {arn}"),
        crate::model::config::PublishTarget::Webhook(url) => format!("the webhook {url}"),
    }
}

/// A notification target as `check` shows it: a webhook by its host only.
fn notify_target(target: &crate::model::config::NotifyTarget) -> String {
    use crate::model::config::NotifyTarget;
    match target {
        NotifyTarget::Webhook(url) => format!("the webhook {url}"),
        NotifyTarget::Sns(arn) => format!("the SNS topic {arn}"),
        NotifyTarget::Ses(to) => format!("{to} by Amazon SES"),
        NotifyTarget::Smtp(to) => format!("{to} by SMTP"),
    }
}

/// What became of one record of a sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sampled {
    /// The line it starts on.
    pub line: u64,
    /// `written`, `rejected` or `filtered`.
    pub outcome: String,
    /// The record written (its fields), or why it was rejected.
    pub detail: String,
}

/// Run the first `n` records of `input` through the job's pipeline, writing nothing.
pub async fn sample(engine: &Engine, spec: &JobSpec, input: &InputObject, n: u64) -> Result<Vec<Sampled>> {
    let reader = bucket::open_reader(engine.inputs.clone(), input).await?;
    let lookup = engine.open_lookup(spec.enrich.as_ref()).await?;
    let (spec, input, n) = (spec.clone(), input.clone(), n.max(1));
    tokio::task::spawn_blocking(move || {
        let limit = if input.format == Format::Json { SAMPLE_JSON } else { SAMPLE_BYTES };
        let mut bytes = Vec::new();
        let fail = |e: std::io::Error| Error::input(&input.location, format!("cannot read: {e}"));
        reader.decoded()?.take(limit + 1).read_to_end(&mut bytes).map_err(fail)?;
        if bytes.len() as u64 > limit {
            if input.format == Format::Json {
                return Err(Error::input(&input.location, "a JSON document over 16 MiB: sample a smaller file"));
            }
            // Whole lines only; the records past the first few are not looked at.
            let end = memchr::memrchr(b'\n', &bytes).map_or(bytes.len(), |i| i + 1);
            bytes.truncate(end);
        }
        let mut targets = spec.chunking;
        targets.records = std::num::NonZeroU64::new(n);
        let scan = crate::input::plan::scan(std::io::Cursor::new(&bytes), input.format, spec.input.dialect, targets)
            .map_err(|e| Error::input(&input.location, format!("cannot read input: {e}")))?;
        let Some(first) = scan.chunks.first() else { return Ok(Vec::new()) };
        let pipeline = Pipeline::new(&spec, lookup, None);
        let reading = pipeline.input(1, 0, &input.location, input.format, scan.header.as_deref())?;
        let mut out = Vec::new();
        pipeline.each_record(
            &reading,
            first.start(),
            &bytes[first.start as usize..first.end as usize],
            &mut |line, outcome| {
                out.push(sampled(line, outcome));
            },
        )?;
        Ok(out)
    })
    .await
    .map_err(|e| Error::internal("check", "sample task failed", e))?
}

fn sampled(line: u64, outcome: Outcome) -> Sampled {
    match outcome {
        Outcome::Written(item) => {
            Sampled { line, outcome: "written".into(), detail: Value::Object(item.record.into_map()).to_string() }
        }
        Outcome::Rejected(r) => Sampled {
            line: r.line,
            outcome: "rejected".into(),
            detail: match &r.field {
                Some(f) => format!("{} on {f}: {}", r.rule, r.message),
                None => format!("{}: {}", r.rule, r.message),
            },
        },
        Outcome::Filtered => Sampled { line, outcome: "filtered".into(), detail: "dropped by a transform".into() },
    }
}

/// A sample as a short table: line, outcome, detail cut to `width` characters.
pub fn table(rows: &[Sampled], width: usize) -> String {
    let mut out = format!("{:>6}  {:<9} {}\n", "LINE", "OUTCOME", "WRITTEN AS / REJECTED BECAUSE");
    for r in rows {
        let mut detail: String = r.detail.chars().take(width).collect();
        if r.detail.chars().count() > width {
            detail.push('…');
        }
        out += &format!("{:>6}  {:<9} {detail}\n", r.line, r.outcome);
    }
    out
}

/// One `[[tests]]` case's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The case's name.
    pub name: String,
    /// Whether the job made of the record what the case expects.
    pub passed: bool,
    /// Expected and actual, line by line (`-` expected, `+` actual), when it failed.
    pub diff: Vec<String>,
}

/// Run the job file's `[[tests]]`: each record through the pipeline, its outcome compared
/// with the expected one. A case must expect exactly one of `output`, `reject` or `filtered`.
pub async fn run_tests(engine: &Engine, spec: &JobSpec) -> Result<Vec<TestResult>> {
    let cases = &spec.definition.config.tests;
    for (i, case) in cases.iter().enumerate() {
        let expects = u8::from(case.output.is_some()) + u8::from(case.reject.is_some()) + u8::from(case.filtered);
        if expects != 1 {
            return Err(Error::config(
                format!("tests[{i}] ({:?})", case.name),
                "expects exactly one of `output`, `reject` or `filtered = true`",
            ));
        }
    }
    let lookup = engine.open_lookup(spec.enrich.as_ref()).await?;
    let pipeline = Pipeline::new(spec, lookup, None);
    let mut session = pipeline.session();
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let raw = Value::Object(case.input.clone()).to_string();
        let input = format!("tests[{i}]");
        let origin = Origin {
            job: 1,
            input: &input,
            input_index: 0,
            record: i as u64 + 1,
            line: 0,
            raw: raw.as_bytes(),
            stream: None,
        };
        let outcome = pipeline.process(case.input.clone(), &origin, &mut session);
        if let Some(e) = session.take_error() {
            return Err(e);
        }
        let diff = compare(case, outcome);
        results.push(TestResult { name: case.name.clone(), passed: diff.is_empty(), diff });
    }
    Ok(results)
}

/// What differs between what `case` expects and `outcome`.
fn compare(case: &TestCase, outcome: Outcome) -> Vec<String> {
    let expected = if let Some(r) = &case.reject {
        match &r.field {
            Some(f) => format!("rejected by {} on {f}", r.rule),
            None => format!("rejected by {}", r.rule),
        }
    } else if case.filtered {
        "filtered".to_string()
    } else {
        "written".to_string()
    };
    match (outcome, &case.output, &case.reject) {
        (Outcome::Written(item), Some(want), _) => {
            let got = item.record.into_map();
            let mut diff = Vec::new();
            for (field, value) in want {
                match got.get(field) {
                    Some(v) if same(value, v) => {}
                    Some(v) => {
                        diff.push(format!("- {field}: {value}"));
                        diff.push(format!("+ {field}: {v}"));
                    }
                    None => {
                        diff.push(format!("- {field}: {value}"));
                        diff.push(format!("+ {field}: (missing; the record has {})", names(&got)));
                    }
                }
            }
            diff
        }
        (Outcome::Rejected(r), None, Some(want))
            if r.rule == want.rule && (want.field.is_none() || want.field == r.field) =>
        {
            Vec::new()
        }
        (Outcome::Filtered, None, None) if case.filtered => Vec::new(),
        (actual, _, _) => vec![format!("- {expected}"), format!("+ {}", describe(&actual))],
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Written(item) => format!("written as {}", Value::Object(item.record.clone().into_map())),
        Outcome::Rejected(r) => match &r.field {
            Some(f) => format!("rejected by {} on {f}: {}", r.rule, r.message),
            None => format!("rejected by {}: {}", r.rule, r.message),
        },
        Outcome::Filtered => "filtered (dropped by a transform)".into(),
    }
}

fn names(rec: &Record) -> String {
    rec.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Whether an expected value (as TOML wrote it) is the value the record holds: equal, or the
/// same number, or the same text (a date written as a string in the job file).
fn same(want: &Value, got: &Value) -> bool {
    if want == got {
        return true;
    }
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(text), Value::Number(_) | Value::Bool(_))
        | (Value::Number(_) | Value::Bool(_), Value::String(text)) => {
            let other = if matches!(want, Value::String(_)) { got } else { want };
            serde_json::to_string(other).is_ok_and(|t| t == *text)
        }
        _ => false,
    }
}

/// The results for a person: a line per case, the diff under a failed one, and a count.
pub fn report(results: &[TestResult]) -> String {
    let mut out = String::new();
    for r in results {
        out += &format!("{} {}\n", if r.passed { "ok  " } else { "FAIL" }, r.name);
        for line in &r.diff {
            out += &format!("       {line}\n");
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out += &format!("{} tests: {} passed, {failed} failed\n", results.len(), results.len() - failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values_match_numbers_and_text_as_written() {
        assert!(same(&serde_json::json!(934), &serde_json::json!(934)));
        assert!(same(&serde_json::json!(9.33), &serde_json::json!(9.33)));
        assert!(same(&serde_json::json!("9.33"), &serde_json::json!(9.33)));
        assert!(same(&serde_json::json!(true), &serde_json::json!("true")));
        assert!(!same(&serde_json::json!(934), &serde_json::json!(935)));
        assert!(!same(&serde_json::json!("Azerbaijan"), &serde_json::json!("Albania")));
    }
}
