//! `sluicebox init`: a commented job file from a sample of an input: its format and CSV
//! dialect, and for each column a type (with a date format), whether it is required and how
//! long its values run.
//!
//! Reading the sample ([`read_sample`]) is the only I/O; detection ([`sniff`]) and writing
//! ([`job_file`]) are pure functions of its bytes. A column's type is the first candidate in
//! [`CANDIDATES`] whose [`ColumnRule`](crate::model::column::ColumnRule) — the very rule `run`
//! applies — accepts every value of the sample, so a job file written from a sample rejects
//! none of the sample's records.
//!
//! This file holds what the binary calls ([`draft`], [`check_out`], [`write_job_file`]); the
//! work is in `sample` (reading the sample, its format, dialect and columns), `infer` (one
//! column's type, date format, emptiness and length) and `write` (the job file's text).

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::config::ColumnType;

mod infer;
mod sample;
mod write;

pub use self::infer::{ColumnGuess, ColumnTally, CANDIDATES};
pub use self::sample::{
    detect_delimiter, detect_format, has_header, read_sample, sample_bytes, sniff, Sample, Sniffed,
    DEFAULT_SAMPLE_RECORDS,
};
pub use self::write::job_file;
use self::write::{counted, format_name, records};

/// Where the job file will be and the input it was written for, as the user named them: its
/// comments show the commands that use it.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The input, as given to `init`.
    pub input: &'a str,
    /// The job file (`job.toml` when printed).
    pub job: &'a str,
}

/// A job file drafted for one input.
#[derive(Debug, Clone)]
pub struct Draft {
    /// What was found.
    pub sniffed: Sniffed,
    /// The job file's text.
    pub text: String,
}

impl Draft {
    /// One line for the terminal: what the job file declares, and from how much.
    pub fn summary(&self, job: &str) -> String {
        let s = &self.sniffed;
        let count = |k: ColumnType| s.columns.iter().filter(|c| c.kind == k && !c.nested).count();
        let typed: Vec<String> = [
            (ColumnType::Integer, "integer"),
            (ColumnType::Decimal, "decimal"),
            (ColumnType::Boolean, "boolean"),
            (ColumnType::Date, "date"),
            (ColumnType::Timestamp, "timestamp"),
            (ColumnType::String, "text"),
        ]
        .into_iter()
        .filter(|&(k, _)| count(k) > 0)
        .map(|(k, name)| format!("{} {name}", count(k)))
        .collect();
        let whole = if s.whole { ", the whole file" } else { "" };
        format!(
            "wrote {job}: {} {}, {} ({}) from {}{whole}\n",
            format_name(s.format),
            s.name,
            counted(s.columns.iter().filter(|c| !c.nested).count(), "column"),
            typed.join(", "),
            records(s.records)
        )
    }
}

/// Read a sample of `input` (`sample_records` records at most) and draft its job file.
pub fn draft(input: &Path, names: Names<'_>, sample_records: usize) -> Result<Draft> {
    let sample = read_sample(input, sample_bytes(sample_records))?;
    let sniffed = sniff(&sample, sample_records.max(1))?;
    let text = job_file(&sniffed, names);
    Ok(Draft { sniffed, text })
}

/// Refuse to write the job file at `out` over an existing file without `force`, or over
/// `input` at all.
pub fn check_out(out: &Path, input: &Path, force: bool) -> Result<()> {
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    if same(out, input) {
        return Err(Error::config("--out", format!("{} is the input; write the job file elsewhere", out.display())));
    }
    if out.exists() && !force {
        return Err(Error::config("--out", format!("{} already exists; add --force to overwrite it", out.display())));
    }
    Ok(())
}

/// Write `text` to `out`: a new file, or over an existing one only with `force`.
pub fn write_job_file(out: &Path, text: &str, force: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    match force {
        true => options.write(true).create(true).truncate(true),
        false => options.write(true).create_new(true),
    };
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::config("--out", format!("{} already exists; add --force to overwrite it", out.display()))
        }
        _ => Error::config("--out", format!("cannot write {}: {e}", out.display())),
    };
    let mut file = options.open(out).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    //! The guarantee of the whole: a job file written from a sample rejects none of its
    //! records; and the sample, names and check the other files' tests share.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::sample::BOM;
    use super::*;
    use crate::model::column::ColumnRule;
    use crate::model::config::{Compression, JobConfig};

    pub(super) fn sample(name: &str, bytes: &[u8]) -> Sample {
        Sample {
            location: format!("/data/{name}"),
            name: name.into(),
            compression: Compression::None,
            compression_by: "its first bytes",
            bytes: bytes.to_vec(),
            truncated: false,
        }
    }

    pub(super) const NAMES: Names<'static> = Names { input: "in.csv", job: "job.toml" };

    /// A job file is what `run` reads: it parses and checks, and declares what was guessed.
    pub(super) fn checked(s: &Sniffed) -> JobConfig {
        let text = job_file(s, NAMES);
        let config = JobConfig::from_toml(&text, "job.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.clone().validate(Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config
    }

    fn quoted_csv(rows: &[Vec<String>], delimiter: u8, crlf: bool) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        rows.iter().for_each(|r| w.write_record(r).unwrap());
        w.into_inner().unwrap()
    }

    /// A column of values of one kind, some empty; the date formats are the candidates'.
    fn column() -> impl Strategy<Value = (Option<&'static str>, Vec<String>)> {
        let dates: Vec<&'static str> =
            CANDIDATES.iter().filter(|c| c.0 == ColumnType::Date).filter_map(|c| c.1).collect();
        let value = |kind: u8, format: Option<&'static str>| -> BoxedStrategy<String> {
            match kind {
                0 => any::<i64>().prop_map(|n| n.to_string()).boxed(),
                1 => (-99_999i32..99_999, 0u8..100).prop_map(|(a, b)| format!("{a}.{b:02}")).boxed(),
                2 => prop::sample::select(vec!["true", "false", "yes", "no"]).prop_map(str::to_string).boxed(),
                3 => (1i32..=9999, 1u32..=366)
                    .prop_map(move |(y, d)| {
                        let date = chrono::NaiveDate::from_yo_opt(y.max(1970), d.min(365)).unwrap();
                        date.format(format.unwrap_or("%Y-%m-%d")).to_string()
                    })
                    .boxed(),
                _ => "[a-zé 0-9'\"\n]{0,12}".boxed(),
            }
        };
        (0u8..5, prop::sample::select(dates)).prop_flat_map(move |(kind, format)| {
            let format = (kind == 3).then_some(format);
            let cell = prop_oneof![1 => Just(String::new()), 6 => value(kind, format)];
            (Just(format), prop::collection::vec(cell, 1..25))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the file, the job file written from it parses, checks, and rejects none of
        /// its records; the dialect is found; a date column's format is the one it was written
        /// in, or another that every value also fits, and the comment says so.
        #[test]
        fn a_job_file_written_from_a_sample_rejects_none_of_its_records(
            columns in prop::collection::vec(column(), 1..6),
            delimiter in prop::sample::select(vec![b',', b';', b'\t', b'|']),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let records = columns.iter().map(|c| c.1.len()).min().unwrap_or(0);
            let mut rows = vec![(0..columns.len()).map(|i| format!("col {i}")).collect::<Vec<_>>()];
            rows.extend((0..records).map(|r| columns.iter().map(|c| c.1[r].clone()).collect()));
            // A row of empty fields only is a blank line to a CSV reader: it is no record.
            rows.retain(|r| r.iter().any(|v| !v.is_empty()) || r.len() > 1);
            let mut bytes = if bom { BOM.to_vec() } else { Vec::new() };
            bytes.extend(quoted_csv(&rows, delimiter, crlf));
            let s = sniff(&sample("t.csv", &bytes), 1000).unwrap();
            let d = s.dialect.unwrap();
            prop_assert!(d.header);
            if columns.len() > 1 {
                prop_assert_eq!((d.delimiter, d.quote), (delimiter, b'"'));
            }
            prop_assert_eq!((s.bom, s.crlf), (bom, crlf));
            prop_assert_eq!(s.records, rows.len() - 1);
            let config = checked(&s);
            let rules: Vec<ColumnRule> = config.columns.iter().map(ColumnRule::from).collect();
            for row in &rows[1..] {
                for (rule, value) in rules.iter().zip(row) {
                    prop_assert!(rule.apply(Value::String(value.clone())).is_ok(), "{:?} rejects {:?}", rule, value);
                }
            }
            for ((written_in, _), guess) in columns.iter().zip(&s.columns) {
                let (Some(f), Some(g)) = (written_in, &guess.format) else { continue };
                if f != g {
                    prop_assert!(guess.why.iter().any(|w| w.starts_with("ambiguous") && w.contains(f)), "{:?}", guess);
                }
            }
        }
    }
}
