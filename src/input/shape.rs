//! Whether an input has the shape the job declares, judged before any chunk is worked: a JSON
//! input whose sampled records all lack a required declared field is the wrong file (as a
//! CSV header that lacks a declared column is, which `crate::engine::pipeline` refuses), and
//! columns the job does not declare are reported or refused (`[input] unknown_columns`).

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::input::decode::{self, Body, ChunkStart, CsvDialect};
use crate::model::config::{ColumnConfig, Format, UnknownColumns};

/// Records of a JSON input sampled from its start to judge its shape.
pub const SAMPLE_RECORDS: usize = 100;
/// Bytes of a JSON input read from its start to sample its records.
pub const SAMPLE_BYTES: u64 = 1 << 20;

/// The top-level keys of each JSON object among the first [`SAMPLE_RECORDS`] records of
/// `bytes` (an input's start, possibly cut mid-record at [`SAMPLE_BYTES`]: a record that does
/// not parse is left out, as is one that is not an object).
pub fn sample_keys(format: Format, bytes: &[u8]) -> Vec<BTreeSet<String>> {
    let mut sampled = Vec::new();
    let dialect = CsvDialect { delimiter: b',', quote: b'"', header: false };
    decode::for_each_record(format, &dialect, bytes, ChunkStart { record: 1, line: 1 }, &mut |r| {
        if sampled.len() >= SAMPLE_RECORDS {
            return;
        }
        if let Body::Json(text) = r.body {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(text) {
                sampled.push(map.keys().cloned().collect());
            }
        }
    });
    sampled
}

/// Judge input `location`: its CSV `header`, or the keys of its `sampled` JSON records,
/// against the declared `columns`. An error names the file and the field when the input is
/// the wrong shape (every sampled record lacks a required column; or, with `unknown` =
/// `fail`, a column is not declared); otherwise the warnings to give (undeclared columns,
/// with `warn`).
pub fn judge(
    location: &str,
    header: Option<&[String]>,
    sampled: &[BTreeSet<String>],
    columns: &[ColumnConfig],
    unknown: UnknownColumns,
) -> Result<Vec<String>> {
    if columns.is_empty() {
        // Nothing declared: every column is the job's.
        return Ok(Vec::new());
    }
    if !sampled.is_empty() {
        if let Some(c) = columns.iter().find(|c| c.required && sampled.iter().all(|keys| !keys.contains(&c.name))) {
            let mut seen: Vec<&String> = sampled.iter().flatten().collect::<BTreeSet<_>>().into_iter().collect();
            seen.truncate(20);
            return Err(Error::InvalidInput {
                location: location.to_string(),
                line: None,
                column: Some(c.name.clone()),
                reason: format!(
                    "none of its first {} records has the required field {:?}: the wrong file? (they have {seen:?})",
                    sampled.len(),
                    c.name
                ),
            });
        }
    }
    let declared: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let present: BTreeSet<&str> = match header {
        Some(h) => h.iter().map(String::as_str).collect(),
        None => sampled.iter().flatten().map(String::as_str).collect(),
    };
    let unknown_names: Vec<&str> = present.into_iter().filter(|n| !declared.contains(n)).collect();
    if unknown_names.is_empty() || unknown == UnknownColumns::Pass {
        return Ok(Vec::new());
    }
    let what = if header.is_some() { "its header has" } else { "its records have" };
    let said = format!("{what} columns the job does not declare: {unknown_names:?}");
    match unknown {
        UnknownColumns::Fail => Err(Error::InvalidInput {
            location: location.to_string(),
            line: header.map(|_| 1),
            column: unknown_names.first().map(|n| n.to_string()),
            reason: format!("{said} ([input] unknown_columns = \"fail\")"),
        }),
        _ => Ok(vec![format!("{location}: {said}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(toml: &str) -> Vec<ColumnConfig> {
        crate::model::config::JobConfig::from_toml(toml, "t").unwrap().columns
    }

    #[test]
    fn a_json_sample_lacking_a_required_field_in_every_record_is_the_wrong_file() {
        let cols = columns("[[columns]]\nname = \"id\"\nrequired = true\n[[columns]]\nname = \"day\"\n");
        let keys = sample_keys(Format::Jsonl, b"{\"ident\": 1}\n{\"ident\": 2, \"day\": 3}\nnot json\n{\"ide");
        assert_eq!(keys.len(), 2, "what does not parse is left out");
        let e = judge("file:///x.jsonl", None, &keys, &cols, UnknownColumns::Pass).unwrap_err();
        assert!(e.to_string().contains("\"id\"") && e.to_string().contains("x.jsonl"), "{e}");
        let one_has_it = sample_keys(Format::Jsonl, b"{\"ident\": 1}\n{\"id\": 2}\n");
        assert!(judge("x", None, &one_has_it, &cols, UnknownColumns::Pass).is_ok(), "one record has it: rejects");
    }

    #[test]
    fn undeclared_columns_warn_fail_or_pass_as_set() {
        let cols = columns("[[columns]]\nname = \"id\"\n");
        let header = ["id".to_string(), "extra".to_string()];
        let warned = judge("x.csv", Some(&header), &[], &cols, UnknownColumns::Warn).unwrap();
        assert!(warned[0].contains("\"extra\""), "{warned:?}");
        let e = judge("x.csv", Some(&header), &[], &cols, UnknownColumns::Fail).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        assert!(judge("x.csv", Some(&header), &[], &cols, UnknownColumns::Pass).unwrap().is_empty());
        assert!(judge("x.csv", Some(&header), &[], &[], UnknownColumns::Fail).unwrap().is_empty(), "none declared");
    }
}
