//! `sluicebox init` as a user runs it: the job file it writes for a CSV (the orders sample, a
//! semicolon file with a byte order mark and CRLF), a JSON Lines file and compressed files is
//! accepted by `sluicebox run` as it is, and a run of it on the same file rejects nothing.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sluicebox::model::config::{ColumnConfig, ColumnType, JobConfig};

fn sluicebox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicebox")).args(args).output().unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `init FILE --out DIR/job.toml`: the job file's text and what it declares.
fn init(file: &Path, dir: &Path) -> (String, JobConfig) {
    let job = dir.join("job.toml");
    let said = stdout(&sluicebox(&["init", &s(file), "--out", &s(&job)]));
    assert!(said.starts_with(&format!("wrote {}: ", s(&job))), "{said}");
    let text = std::fs::read_to_string(&job).unwrap();
    let config = JobConfig::from_toml(&text, "job.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, config)
}

/// `run FILE --config DIR/job.toml` in a fresh data directory: its summary.
fn run(file: &Path, dir: &Path) -> Value {
    let data = dir.join(format!("data-{}", fastrand::u32(..)));
    let out = sluicebox(&["run", &s(file), "--config", &s(&dir.join("job.toml")), "--data-dir", &s(&data), "--json"]);
    let text = stdout(&out);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_all_written(summary: &Value, records: u64) {
    assert_eq!(summary["records"]["total"], records, "{summary}");
    assert_eq!(summary["records"]["rejected"], 0, "{summary}");
    assert_eq!(summary["records"]["written"], records, "{summary}");
    assert_eq!(summary["status"], "succeeded", "{summary}");
}

fn column<'a>(config: &'a JobConfig, name: &str) -> &'a ColumnConfig {
    config.columns.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no column {name}"))
}

/// The orders sample's columns: the longest value of each, and whether one is ever empty,
/// computed here without sluicebox.
fn orders_profile() -> Vec<(String, usize, bool)> {
    let mut r = csv::Reader::from_path(common::orders_dir().join("orders.csv")).unwrap();
    let names: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    let mut longest = vec![0; names.len()];
    let mut empty = vec![false; names.len()];
    for row in r.records() {
        for (i, v) in row.unwrap().iter().enumerate() {
            longest[i] = longest[i].max(v.chars().count());
            empty[i] |= v.is_empty();
        }
    }
    names.into_iter().zip(longest).zip(empty).map(|((n, l), e)| (n, l, e)).collect()
}

#[test]
fn init_on_the_orders_sample_finds_its_two_dates_lengths_and_required_columns_and_rejects_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let orders = common::orders_dir().join("orders.csv");
    let (text, config) = init(&orders, dir.path());

    assert_eq!((config.input.delimiter.as_str(), config.input.header), (",", true));
    assert!(text.contains("from the whole file (10,000 records)"), "{text}");
    assert!(text.contains("ends its lines with CRLF"), "{text}");
    let dates: Vec<(&str, Option<&str>)> = config
        .columns
        .iter()
        .filter(|c| c.kind == ColumnType::Date)
        .map(|c| (c.name.as_str(), c.format.as_deref()))
        .collect();
    assert_eq!(dates, [("Order Date", Some("%m/%d/%y")), ("Ship Date", Some("%m/%d/%y"))]);
    assert_eq!(column(&config, "uuid").kind, ColumnType::Integer);
    let profile = orders_profile();
    assert_eq!(config.columns.len(), profile.len(), "every column is declared");
    for (name, longest, ever_empty) in profile {
        let c = column(&config, &name);
        assert_eq!(c.required, !ever_empty, "{name}");
        assert!(c.rename.is_none(), "{name} keeps its name");
        assert!(text.contains(&format!("# {name:?}: never empty; longest {longest};")), "{name}:\n{text}");
        if c.kind == ColumnType::String {
            let max = c.max_length.unwrap_or_else(|| panic!("{name} has no max_length"));
            assert!(max >= longest && max <= 2 * longest.max(5), "{name}: {max} for {longest}");
            assert!(text.contains(&format!("max_length = {max}         # the longest in the sample is {longest}")));
        }
    }

    assert_all_written(&run(&orders, dir.path()), 10_000);
}

#[test]
fn a_semicolon_file_with_a_byte_order_mark_and_crlf_gets_a_job_that_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.txt");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(
        "sku;label;price;in stock;since;updated\r\n\
         A-1;\"Bolt; steel\";0.25;yes;24.12.2021;2021-12-24 08:30:00\r\n\
         A-2;Nut;1.5;no;01.02.2022;2022-02-01 17:05:09\r\n\
         A-3;\"Washer \"\"flat\"\"\";;true;;2022-03-01 00:00:00\r\n"
            .as_bytes(),
    );
    std::fs::write(&file, bytes).unwrap();
    let (text, config) = init(&file, dir.path());

    let i = &config.input;
    assert_eq!((i.delimiter.as_str(), i.quote.as_str(), i.header), (";", "\"", true));
    assert!(text.contains("# The file starts with a UTF-8 byte order mark and ends its lines with CRLF"), "{text}");
    let kinds: Vec<(&str, ColumnType, Option<&str>, bool)> =
        config.columns.iter().map(|c| (c.name.as_str(), c.kind, c.format.as_deref(), c.required)).collect();
    assert_eq!(
        kinds,
        [
            ("sku", ColumnType::String, None, true),
            ("label", ColumnType::String, None, true),
            ("price", ColumnType::Decimal, None, false),
            ("in stock", ColumnType::Boolean, None, true),
            ("since", ColumnType::Date, Some("%d.%m.%Y"), false),
            ("updated", ColumnType::Timestamp, Some("%Y-%m-%d %H:%M:%S%.f"), true),
        ]
    );
    assert_eq!(column(&config, "label").max_length, Some(20), "\"Washer \"flat\"\" is 13 characters");

    let summary = run(&file, dir.path());
    assert_all_written(&summary, 3);
    let output = common::job_file(Path::new(&summary_dir(&summary)), summary["job_id"].as_str().unwrap(), "output.csv");
    assert!(output.contains("A-1,Bolt; steel,0.25,true,2021-12-24,2021-12-24T08:30:00Z"), "{output}");
}

/// The data directory a summary's outputs are in (`run` made it under the test's directory).
fn summary_dir(summary: &Value) -> String {
    let output = summary["outputs"]["output"].as_str().unwrap();
    let path = output.trim_start_matches("file://");
    path.split("/bucket/jobs/").next().unwrap().to_string()
}

#[test]
fn a_json_lines_file_gets_its_fields_typed_and_a_job_that_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let lines = [
        r#"{"id": 1, "at": "2024-05-01T10:00:00Z", "amount": 12.5, "ok": true, "tags": ["a"], "note": null}"#,
        r#"{"id": 2, "at": "2024-05-01T10:00:01.250+02:00", "amount": 3, "ok": false, "note": "late"}"#,
        r#"{"id": 3, "at": "2024-05-02T00:00:00Z", "amount": "7.25", "ok": true, "tags": []}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (text, config) = init(&file, dir.path());

    assert_eq!(config.input.format, Some(sluicebox::model::config::Format::Jsonl));
    let kinds: Vec<(&str, ColumnType, bool)> =
        config.columns.iter().map(|c| (c.name.as_str(), c.kind, c.required)).collect();
    assert_eq!(
        kinds,
        [
            ("id", ColumnType::Integer, true),
            ("at", ColumnType::Timestamp, true),
            ("amount", ColumnType::Decimal, true),
            ("ok", ColumnType::Boolean, true),
            ("note", ColumnType::String, false),
        ]
    );
    assert!(column(&config, "at").format.is_none(), "RFC 3339, the default");
    assert!(text.contains("# \"tags\": empty in 1 record; longest 5; e.g. \"[\\\"a\\\"]\"\n# It holds objects or arrays: left undeclared"), "{text}");

    assert_all_written(&run(&file, dir.path()), 3);
}

#[test]
fn a_gzip_file_is_read_through_its_compression_and_its_job_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(common::orders_dir().join("orders.csv")).unwrap()).unwrap();
    std::fs::write(&file, gz.finish().unwrap()).unwrap();
    let (text, config) = init(&file, dir.path());

    assert!(text.contains("compression = \"auto\"    # auto | none | gzip | zstd; this file is gzip (by its name)"));
    assert_eq!(column(&config, "Ship Date").format.as_deref(), Some("%m/%d/%y"));
    assert_all_written(&run(&file, dir.path()), 10_000);
}

#[test]
fn a_zstd_file_without_an_extension_is_known_by_its_magic_bytes_and_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.data");
    let doc = r#"{"records": [{"n": 1, "day": "2024-02-29"}, {"n": 2, "day": "2024-03-01"}]}"#;
    std::fs::write(&file, zstd::encode_all(doc.as_bytes(), 3).unwrap()).unwrap();
    let (text, config) = init(&file, dir.path());

    assert_eq!(config.input.format, Some(sluicebox::model::config::Format::Json));
    assert!(text.contains("this file is zstd (by its first bytes)"), "{text}");
    assert_eq!(column(&config, "day").kind, ColumnType::Date);
    assert_all_written(&run(&file, dir.path()), 2);
}

#[test]
fn an_ambiguous_date_column_says_which_format_it_chose_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("visits.csv");
    std::fs::write(&file, "visit,on,paid\n1,03/04/21,13/04/2021\n2,11/12/20,03/04/2021\n3,01/02/19,01/02/2021\n")
        .unwrap();
    let (text, config) = init(&file, dir.path());

    assert_eq!(column(&config, "on").format.as_deref(), Some("%m/%d/%y"));
    assert!(
        text.contains(
            "type = \"date\"\n# ambiguous: every value also fits %d/%m/%y; %m/%d/%y is chosen because no value tells \
             them apart,\n# and init prefers ISO, then month first (US), then day first.\nformat = \"%m/%d/%y\"\n"
        ),
        "{text}"
    );
    // A day over 12 decides, and the comment shows the value that did.
    assert_eq!(column(&config, "paid").format.as_deref(), Some("%d/%m/%Y"));
    assert!(text.contains("# \"13/04/2021\" rules out %m/%d/%Y.\nformat = \"%d/%m/%Y\"\n"), "{text}");

    let summary = run(&file, dir.path());
    assert_all_written(&summary, 3);
    let output = common::job_file(Path::new(&summary_dir(&summary)), summary["job_id"].as_str().unwrap(), "output.csv");
    assert!(output.contains("1,2021-03-04,2021-04-13\n"), "month first, then day first: {output}");
}

#[test]
fn init_never_overwrites_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "# mine\n").unwrap();
    let orders = s(&common::orders_dir().join("orders.csv"));

    let refused = stderr(&sluicebox(&["init", &orders, "--out", &s(&job)]));
    assert_eq!(
        refused.trim(),
        format!("error: invalid config: --out: {} already exists; add --force to overwrite it", s(&job))
    );
    assert_eq!(std::fs::read_to_string(&job).unwrap(), "# mine\n");

    stdout(&sluicebox(&["init", &orders, "--out", &s(&job), "--force"]));
    let text = std::fs::read_to_string(&job).unwrap();
    assert!(text.starts_with("# A job for orders.csv"), "{text}");
    assert!(text.contains(&format!("#   sluicebox run {orders} --config {}\n", s(&job))), "{text}");

    let input = stderr(&sluicebox(&["init", &orders, "--out", &orders, "--force"]));
    assert!(input.contains("is the input; write the job file elsewhere"), "{input}");
}

#[test]
fn without_out_the_job_file_goes_to_stdout() {
    let printed = stdout(&sluicebox(&["init", &s(&common::orders_dir().join("orders.csv"))]));
    assert!(printed.starts_with("# A job for orders.csv"), "{printed}");
    assert!(printed.contains("#   sluicebox check job.toml --sample "), "{printed}");
    JobConfig::from_toml(&printed, "stdout").unwrap();
}

#[test]
fn a_file_init_cannot_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let binary = dir.path().join("image.csv");
    std::fs::write(&binary, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00").unwrap();
    let corrupt = dir.path().join("cut.csv.gz");
    std::fs::write(&corrupt, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage").unwrap();
    let missing = dir.path().join("missing.csv");
    for (file, reason) in [
        (&empty, "is empty"),
        (&binary, "is not text"),
        (&corrupt, "cannot decompress it (gzip)"),
        (&missing, "cannot read it"),
    ] {
        let err = stderr(&sluicebox(&["init", &s(file)]));
        assert!(err.starts_with(&format!("error: {}: {reason}", s(file))), "{err}");
    }
}

/// A sample whose name carries a line break and a job file's keys: `init` writes them escaped
/// into its comments and shell words, so the job file declares no `[[notify]]`, and `check`
/// names every place a job file sends to (here, the one a hand-written `[[notify]]` adds).
#[test]
fn a_crafted_file_name_cannot_write_keys_into_the_job_file_and_check_lists_every_target() {
    let dir = tempfile::tempdir().unwrap();
    // TOML's escapes stand for the slashes a file name cannot hold.
    let name = "orders\n[[notify]]\nto = \"https:\\u002F\\u002Fevil.example\\u002Fc\"\n#.csv";
    let file = dir.path().join(name);
    std::fs::write(&file, "id,name\n1,a\n2,b\n").unwrap();
    let (text, config) = init(&file, dir.path());
    assert!(config.notify.is_empty(), "init wrote a [[notify]]:\n{text}");
    assert!(text.lines().all(|l| !l.starts_with("[[notify]]") && !l.starts_with("to =")), "{text}");
    assert!(text.contains("orders\\n[[notify]]"), "the name is shown escaped:\n{text}");

    let job = dir.path().join("job.toml");
    let checked = stdout(&sluicebox(&["check", &s(&job), "--data-dir", &s(&dir.path().join("data"))]));
    assert!(!checked.contains("notify:"), "{checked}");
    std::fs::write(
        &job,
        format!("{text}\n[[notify]]\nto = \"https://hooks.example.com/services/SECRET\"\non = [\"failed\"]\n"),
    )
    .unwrap();
    let checked = stdout(&sluicebox(&["check", &s(&job), "--data-dir", &s(&dir.path().join("data"))]));
    assert!(checked.contains("notify: the webhook https://hooks.example.com/… when failed"), "{checked}");
    assert!(!checked.contains("SECRET"), "{checked}");
}
