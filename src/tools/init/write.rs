//! The job file's text: the sections found filled in, the others commented out, and every value
//! a comment shows escaped so that it cannot end its line.

use std::fmt::Write as _;

use super::infer::{shown, type_name};
use super::sample::{compression_name, Sniffed};
use super::Names;
use crate::backends::cost::thousands;
use crate::model::config::{ColumnType, Compression, Format};

/// `key = value` with a comment aligned after it, as README.md's reference writes them.
fn commented(out: &mut String, setting: &str, comment: &str) {
    let _ = match comment.is_empty() {
        true => writeln!(out, "{setting}"),
        false => writeln!(out, "{setting:<23} # {}", comment_safe(comment)),
    };
}

/// `text` as comment lines of at most 100 characters.
fn comment_wrapped(out: &mut String, text: &str) {
    let text = comment_safe(text);
    let mut line = String::from("#");
    for word in text.split(' ') {
        if line.len() > 1 && line.chars().count() + 1 + word.chars().count() > 100 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

/// `word` as a shell reads it back: as it is, or in single quotes.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c)) {
        return word.to_string();
    }
    if !word.chars().any(char::is_control) {
        return format!("'{}'", word.replace('\'', "'\\''"));
    }
    // A control character (a newline would end the comment line the word is in): ANSI-C
    // quoting, with every one escaped.
    let escaped: String = word
        .chars()
        .map(|c| match c {
            '\'' | '\\' => format!("\\{c}"),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("$'{escaped}'")
}

/// `text` for a comment line: its control characters shown escaped (`\n`), so a file name
/// cannot end the comment and write keys into the job file.
fn comment_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// `1 record`, `1,234 records`.
pub(super) fn records(n: usize) -> String {
    counted(n, "record")
}

/// `n` `thing`s, thousands separated.
pub(super) fn counted(n: usize, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        n => format!("{} {thing}s", thousands(n as u64)),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(super) fn format_name(f: Format) -> &'static str {
    match f {
        Format::Csv => "csv",
        Format::Jsonl => "jsonl",
        Format::Json => "json",
    }
}

/// The job file for what `s` found: `[input]`, `[chunking]` and `[[columns]]` filled in,
/// every other section present but commented out, each with a line on what it does.
pub fn job_file(s: &Sniffed, names: Names<'_>) -> String {
    let mut out = String::new();
    let o = &mut out;
    let sample = match s.whole {
        true => format!("the whole file ({})", records(s.records)),
        false => format!("its first {}", records(s.records)),
    };
    let _ = writeln!(o, "# A job for {}, written by `sluicebox init` from {sample}.", comment_safe(&s.name));
    let _ =
        writeln!(o, "# Every key is explained in README.md, \"The job file\". See what records become, then run it:");
    let (job, input) = (shell_word(names.job), shell_word(names.input));
    let _ = writeln!(o, "#   sluicebox check {job} --sample {input}");
    let _ = writeln!(o, "#   sluicebox run {input} --config {job}");
    let _ = writeln!(o);
    let _ = writeln!(o, "# jq programs (jaq) applied in order to each record; one with no output drops the record.");
    let _ = writeln!(o, "# A top-level key: it goes here, before the first [table].");
    let _ = writeln!(o, "# transform = ['.total = .unitsSold * .unitPrice', 'select(.region != \"Asia\")']");
    let _ = writeln!(o);
    input_section(o, s);
    let _ = writeln!(o);
    commented(o, "[chunking]", "a chunk ends at the first record boundary where a target is reached");
    commented(o, "bytes = 4194304", "4 MiB; memory use is about this × workers × 3");
    commented(o, "# records = 50000", "and/or a number of records");
    let _ = writeln!(o);
    columns_section(o, s);
    other_sections(o, s);
    out
}

fn input_section(o: &mut String, s: &Sniffed) {
    commented(o, "[input]", "");
    commented(o, &format!("format = \"{}\"", format_name(s.format)), "csv | jsonl | json; detected");
    let (c, by) = (s.compression, s.compression_by);
    let compression = match c {
        Compression::None | Compression::Auto => "auto (.gz/.zst, else magic bytes) | none | gzip | zstd".to_string(),
        _ => format!("auto | none | gzip | zstd; this file is {} (by {by})", compression_name(c)),
    };
    commented(o, "compression = \"auto\"", &compression);
    if let Some(d) = &s.dialect {
        let header = match d.header {
            true => "the first row names the columns",
            false => "no header row: the [[columns]] below name the fields, in order",
        };
        commented(o, &format!("header = {}", d.header), header);
        let delimiter = toml_str(&char::from(d.delimiter).to_string());
        commented(o, &format!("delimiter = {delimiter}"), "detected among , ; tab |");
        commented(o, &format!("quote = {}", toml_str(&char::from(d.quote).to_string())), "");
    }
    let mut notes = Vec::new();
    if s.bom && s.dialect.is_some() {
        notes.push("starts with a UTF-8 byte order mark");
    }
    if s.crlf {
        notes.push("ends its lines with CRLF");
    }
    if !notes.is_empty() {
        comment_wrapped(o, &format!("The file {}: sluicebox reads it as it is.", notes.join(" and ")));
    }
    if s.bom && s.dialect.is_none() {
        comment_wrapped(
            o,
            "The file starts with a UTF-8 byte order mark, which sluicebox skips only in CSV: before JSON \
             it makes the first record a reject (rule json). Remove it (`sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`).",
        );
    }
    if s.malformed > 0 {
        let what = match s.format {
            Format::Csv => "Records with another number of fields than the header will be rejects (rule fields)",
            _ => "Records that are not JSON objects will be rejects (rule json)",
        };
        comment_wrapped(o, &format!("{what}: {} in the sample.", thousands(s.malformed as u64)));
    }
}

fn columns_section(o: &mut String, s: &Sniffed) {
    let preamble = format!(
        "Columns, as the sample ({}) shows them. type: the most specific type that every value \
         fits; a later value that does not fit makes its record a reject naming the column. required = \
         true: no value was empty. max_length (text only): the longest value, rounded up to 10, 20, 50, \
         100, … to leave room. `as = \"name\"` would rename a field in the output.",
        records(s.records)
    );
    comment_wrapped(o, &preamble);
    if s.records == 0 {
        comment_wrapped(o, "The sample has no records under the header: every column is text.");
    }
    for (i, c) in s.columns.iter().enumerate() {
        let _ = writeln!(o);
        let mut about = vec![match c.required {
            true => "never empty".to_string(),
            false if c.values == 0 => "always empty".to_string(),
            false => format!("empty in {}", records(s.records - c.values)),
        }];
        if c.values > 0 {
            about.push(format!("longest {}", c.longest));
        }
        if let Some(e) = &c.example {
            about.push(format!("e.g. {}", shown(e)));
        }
        let _ = writeln!(o, "# {}: {}", shown(&c.name), about.join("; "));
        if c.nested {
            let _ = writeln!(o, "# It holds objects or arrays: left undeclared, it passes through as it is.");
            continue;
        }
        let _ = writeln!(o, "[[columns]]");
        let _ = writeln!(o, "name = {}", toml_str(&c.name));
        if c.name.is_empty() {
            commented(o, &format!("as = \"column{}\"", i + 1), "the header leaves it unnamed");
        }
        let dated = matches!(c.kind, ColumnType::Date | ColumnType::Timestamp);
        if !dated {
            c.why.iter().for_each(|why| comment_wrapped(o, why));
        }
        let _ = writeln!(o, "type = \"{}\"", type_name(c.kind));
        if dated {
            c.why.iter().for_each(|why| comment_wrapped(o, why));
        }
        match (&c.format, c.kind) {
            (Some(f), _) => {
                let _ = writeln!(o, "format = {}", toml_str(f));
            }
            (None, ColumnType::Timestamp) => commented(o, "# format: RFC 3339", "e.g. 2014-10-23T08:30:00Z"),
            _ => {}
        }
        if c.required {
            let _ = writeln!(o, "required = true");
        }
        if let Some(max) = c.max_length() {
            commented(o, &format!("max_length = {max}"), &format!("the longest in the sample is {}", c.longest));
        }
        if let Some((precision, scale)) = c.precision_scale() {
            let (whole, frac) = c.decimal_digits;
            let why = format!(
                "exact: the sample has up to {whole} digits before the point and {frac} after; two more before"
            );
            commented(o, &format!("precision = {precision}"), &why);
            if scale > 0 {
                let _ = writeln!(o, "scale = {scale}");
            }
        }
    }
}

fn other_sections(o: &mut String, s: &Sniffed) {
    let key = s
        .columns
        .iter()
        .find(|c| c.required && c.distinct && !c.nested)
        .map(|c| (c.name.as_str(), format!("{} is never empty and never repeats in the sample", shown(&c.name))));
    let (key, why) = key.unwrap_or(("id", "a field whose values identify a record".into()));
    let table = crate::batch::job::default_table(&s.name);
    let fields = s.columns.iter().take(2).map(|c| toml_str(&c.name)).collect::<Vec<_>>().join(", ");
    let sections: [(&str, &[(String, &str)]); 7] = [
        (
            "# [validate]            # a JSON Schema applied to each typed record",
            &[(format!("# schema = {{ type = \"object\", required = [{}] }}", toml_str(key)), "inline, or:"), (
                "# schema_file = \"schema.json\"".into(),
                "relative to this file",
            )],
        ),
        (
            "# [enrich]              # add fields looked up by key in a reference (file, sqlite:TABLE, dynamodb://TABLE)",
            &[
                ("# source = \"reference.csv\"".into(), "relative to this file"),
                (format!("# key = {}", toml_str(key)), "the record field to look up"),
                ("# on_missing = \"reject\"".into(), "reject | keep | default"),
            ],
        ),
        (
            "# [key]                 # the fields that identify an item: writes become upserts (default: place in the input)",
            &[(format!("# fields = [{}]", toml_str(key)), &why)],
        ),
        (
            "# [sink]                # where records go (default: a table in the data directory's SQLite database)",
            &[
                ("# type = \"sqlite\"".into(), "sqlite | dynamodb (feature aws) | none"),
                (format!("# table = {}", toml_str(&table)), "default: the input's file name, as here"),
            ],
        ),
        (
            "# [output]              # the merged output file",
            &[
                ("# format = \"csv\"".into(), "csv | jsonl | parquet; default csv when the fields are known, else jsonl"),
                (format!("# fields = [{}]", fields), "default: every field"),
            ],
        ),
        (
            "# [[notify]]            # who hears how the job ended (repeatable)",
            &[("# to = \"https://hooks.example.com/sluicebox\"".into(), "https://… | sns://… | ses://… | smtp://…")],
        ),
        (
            "# [archive]             # where inputs go once their job has completed",
            &[("# to = \"archive/\"".into(), "archive/<job id>/<name> beside the input")],
        ),
    ];
    for (head, lines) in sections {
        let _ = writeln!(o);
        let _ = writeln!(o, "{head}");
        for (setting, comment) in lines {
            commented(o, setting, comment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::init::sniff;
    use crate::tools::init::tests::{checked, sample, NAMES};

    #[test]
    fn rows_with_another_number_of_fields_are_counted_apart_and_not_typed() {
        let s = sniff(&sample("t.csv", b"a,b\n1,2\n3\n4,5,6\n7,8\n"), 100).unwrap();
        assert_eq!((s.records, s.malformed), (2, 2));
        assert_eq!(s.columns[0].kind, ColumnType::Integer);
        assert!(job_file(&s, NAMES).contains("# Records with another number of fields than the header will be rejects"));
    }

    #[test]
    fn json_fields_are_the_union_of_the_records_keys_and_nested_ones_stay_undeclared() {
        let text = b"{\"a\": 1, \"o\": {\"x\": 1}}\n[1]\n\n{\"b\": \"2021-01-02\", \"a\": 2.5}\n";
        let s = sniff(&sample("t.jsonl", text), 100).unwrap();
        assert_eq!((s.format, s.records, s.malformed), (Format::Jsonl, 2, 1));
        let names: Vec<_> = s.columns.iter().map(|c| (c.name.as_str(), c.kind, c.required, c.nested)).collect();
        assert_eq!(
            names,
            [
                ("a", ColumnType::Decimal, true, false),
                ("o", ColumnType::String, false, true),
                ("b", ColumnType::Date, false, false)
            ]
        );
        let job = job_file(&s, NAMES);
        assert!(
            job.contains("# \"o\": empty in 1 record; longest 7; e.g. \"{\\\"x\\\":1}\"\n# It holds objects"),
            "{job}"
        );
        let doc = sniff(&sample("t.json", b"{\"records\": [{\"a\": true}, {\"a\": false}]}"), 100).unwrap();
        assert_eq!((doc.format, doc.records, doc.columns[0].kind), (Format::Json, 2, ColumnType::Boolean));
    }

    #[test]
    fn the_job_file_declares_what_was_found_and_comments_out_the_rest() {
        let s = sniff(&sample("t.csv", "\"na\"\"me\",n,\nx\\y,1,\n".as_bytes()), 10).unwrap();
        let config = checked(&s);
        let cols: Vec<_> = config.columns.iter().map(|c| (c.name.as_str(), c.kind, c.max_length)).collect();
        assert_eq!(
            cols,
            [
                ("na\"me", ColumnType::String, Some(10)),
                ("n", ColumnType::Integer, None),
                ("", ColumnType::String, None)
            ]
        );
        assert_eq!(config.columns[2].rename.as_deref(), Some("column3"), "an unnamed column gets a name");
        assert_eq!(config.input.delimiter, ",");
        let text = job_file(&s, NAMES);
        for section in [
            "# [validate]",
            "# [enrich]",
            "# [key]",
            "# [sink]",
            "# [output]",
            "# [[notify]]",
            "# [archive]",
            "# transform = ",
        ] {
            assert!(text.contains(&format!("\n{section}")), "{section} missing:\n{text}");
        }
        assert!(text.contains("#   sluicebox run in.csv --config job.toml\n"), "{text}");
        let spaced = job_file(&s, Names { input: "my data/it's.csv", job: "job.toml" });
        assert!(spaced.contains("#   sluicebox run 'my data/it'\\''s.csv' --config job.toml\n"), "{spaced}");
        assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
    }
}
