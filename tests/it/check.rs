//! `sluicebox check` and `sluicebox test`, run as a user runs them: each mistake in a job file
//! gets a message naming the key or line, `--sample` shows what records become, and the
//! example job's own `[[tests]]` pass (and fail, with a diff, when an expectation is wrong).

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn sluicebox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicebox")).args(args).output().unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The orders job in `dir` with `edit` applied, its reference beside it; returns its path.
fn job(dir: &Path, edit: impl Fn(String) -> String) -> String {
    std::fs::copy(common::orders_dir().join("financial.csv"), dir.join("financial.csv")).unwrap();
    let path = dir.join("job.toml");
    std::fs::write(&path, edit(common::orders_job())).unwrap();
    s(&path)
}

/// `check` on `job`: (succeeded, stdout, stderr).
fn check(dir: &Path, job: &str, extra: &[&str]) -> (bool, String, String) {
    let data = s(&dir.join("data"));
    let out = sluicebox(&[&["check", job, "--data-dir", &data], extra].concat());
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn check_passes_the_example_and_names_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = check(dir.path(), &s(&common::orders_dir().join("job.toml")), &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("reference:") && out.contains("by uuid") && out.contains("sink: SQLite table orders"),
        "{out}"
    );
    assert!(out.contains("tests: 4"), "{out}");
}

#[test]
fn check_names_a_misspelled_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), |t| t.replace("header = true", "headr = true"));
    let (ok, _, err) = check(dir.path(), &job, &[]);
    assert!(!ok);
    assert!(err.contains("headr") && err.contains("line 9"), "{err}");
}

#[test]
fn check_names_a_bad_stream_setting_and_describes_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = job(dir.path(), |t| format!("{t}\n[stream]\nsize_mib = 8\npartition = \"region={{region}}/%Y\"\n"));
    let (ok, out, err) = check(dir.path(), &good, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("stream: files of 8 MiB") && out.contains("partitioned by region={region}/%Y"), "{out}");
    for (setting, key) in [("size_mib = 200", "stream.size_mib"), ("partition = \"a={\"", "stream.partition")] {
        let bad = job(dir.path(), |t| format!("{t}\n[stream]\n{setting}\n"));
        let (ok, _, err) = check(dir.path(), &bad, &[]);
        assert!(!ok && err.contains(key), "{setting}: {err}");
    }
}

#[test]
fn check_names_a_jq_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), |t| t.replace("[key]", "transform = [\".country |\"]\n\n[key]"));
    let (ok, _, err) = check(dir.path(), &job, &[]);
    assert!(!ok);
    assert!(err.contains("transform") && err.contains(".country |"), "{err}");
}

#[test]
fn check_names_an_enrichment_key_the_reference_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), |t| {
        t.replace("key = \"uuid\"\non_missing", "key = \"uuid\"\nlookup_key = \"order_id\"\non_missing")
    });
    let (ok, _, err) = check(dir.path(), &job, &[]);
    assert!(!ok);
    assert!(err.contains("enrich") && err.contains("order_id") && err.contains("financial.csv"), "{err}");
}

#[test]
fn check_sample_shows_what_records_become_with_the_rule_of_a_reject() {
    let dir = tempfile::tempdir().unwrap();
    let orders = std::fs::read_to_string(common::orders_dir().join("orders.csv")).unwrap();
    let mut lines: Vec<&str> = orders.lines().take(6).collect();
    let bad = "535113847,A Country Whose Name Is Far Longer Than Fifty Characters Allow,Snacks,Online,C,10/8/14,Europe,10/23/14";
    lines.insert(3, bad);
    let sample = dir.path().join("sample.csv");
    std::fs::write(&sample, lines.join("\n") + "\n").unwrap();
    let (ok, out, err) = check(dir.path(), &s(&common::orders_dir().join("job.toml")), &["--sample", &s(&sample)]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip_while(|l| !l.contains("OUTCOME")).skip(1).collect();
    assert_eq!(rows.len(), 6, "{out}");
    let rejected: Vec<&&str> = rows.iter().filter(|l| l.contains("rejected")).collect();
    assert_eq!(rejected.len(), 1, "{out}");
    assert!(rejected[0].trim_start().starts_with('4') && rejected[0].contains("max_length on Country"), "{out}");
    assert!(rows[0].contains("written") && rows[0].contains("{\"uuid\":\"535113847\""), "{out}");
    // Nothing was run: no job in the data directory.
    assert!(!dir.path().join("data/bucket/jobs").exists());
}

#[test]
fn the_example_jobs_tests_pass_and_a_wrong_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let data = s(&dir.path().join("data"));
    let out = sluicebox(&["test", &s(&common::orders_dir().join("job.toml")), "--data-dir", &data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("4 tests: 4 passed, 0 failed"), "{text}");

    let wrong = job(dir.path(), |t| {
        t.replace("unitsSold = 934", "unitsSold = 935").replace("rule = \"lookup\"", "rule = \"required\"")
    });
    let out = sluicebox(&["test", &wrong, "--data-dir", &data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL an order is typed and enriched")
            && text.contains("- unitsSold: 935")
            && text.contains("+ unitsSold: 934"),
        "{text}"
    );
    assert!(text.contains("- rejected by required on uuid") && text.contains("+ rejected by lookup on uuid"), "{text}");
    assert!(text.contains("4 tests: 2 passed, 2 failed"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 4 tests failed"));

    // A case that expects two outcomes is refused, naming it.
    let both = job(dir.path(), |t| {
        t.replace(
            "reject = { rule = \"type\", field = \"Order Date\" }",
            "reject = { rule = \"type\" }\nfiltered = true",
        )
    });
    let out = sluicebox(&["test", &both, "--data-dir", &data]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tests[2]") && err.contains("exactly one"), "{err}");
}

/// A sink table that does not exist is found before anything runs.
#[cfg(feature = "aws")]
#[test]
fn check_names_an_unreachable_sink_table() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "needs the moto emulator: run through scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) =
        check(dir.path(), &s(&common::orders_dir().join("job.toml")), &["--sink", "dynamodb://no-such-table"]);
    assert!(!ok);
    assert!(err.contains("sink.table") && err.contains("no-such-table"), "{err}");
}
