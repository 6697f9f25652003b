//! Bad records become rejects with line and reason; bad inputs and configs stop the job with
//! a message naming the file, key or column, and leave it not complete.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use sluicebox::model::config::JobConfig;
use sluicebox::Error;

const HEADER: &str = "uuid,Country,Item Type,Sales Channel,Order Priority,Order Date,Region,Ship Date";

/// Eight orders: two good (one with a quoted newline), six bad in six different ways.
fn bad_orders(eol: &str) -> Vec<u8> {
    let rows: Vec<&[u8]> = vec![
        HEADER.as_bytes(),
        b"535113847,Azerbaijan,Snacks,Online,C,10/8/14,Middle East and North Africa,10/23/14",
        b"874708545,Panama,Cosmetics,Offline,L,2/30/15,Central America and the Caribbean,2/27/15",
        b"854349935,\"Sao Tome\nand Principe\",Fruits,Offline,M,12/9/15,Sub-Saharan Africa,1/18/16",
        b"892836844,Sao Tome,Personal Care,Online,M,9/17/14,Sub-Saharan Africa",
        b"1234567890,X,Y,Online,M,9/17/14,R,9/18/14",
        b"999999999,X,Y,Online,M,9/17/14,R,9/18/14",
        b"535113847,Bad\xffName,Y,Online,M,9/17/14,R,9/18/14",
        b",X,Y,Online,M,9/17/14,R,9/18/14",
    ];
    let mut out = Vec::new();
    for r in rows {
        // A quoted newline inside a field keeps the file's line ending too.
        out.extend(String::from_utf8_lossy(r).replace('\n', eol).replace('\u{fffd}', "\u{0}").bytes().map(|b| {
            if b == 0 {
                0xff
            } else {
                b
            }
        }));
        out.extend_from_slice(eol.as_bytes());
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn job_with_small_chunks() -> String {
    orders_job().replace("records = 1000", "records = 2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_is_rejected_with_line_field_and_rule() {
    for eol in ["\n", "\r\n"] {
        let data = tempfile::tempdir().unwrap();
        let input = write(data.path(), "orders.csv", &bad_orders(eol));
        let s = run(data.path(), &[input], &job_with_small_chunks(), &orders_dir()).await.unwrap();
        assert_eq!(s.status, "completed_with_rejects");
        assert_eq!(
            serde_json::to_value(&s.records).unwrap(),
            json!({"total": 8, "written": 2, "rejected": 6, "filtered": 0})
        );
        assert_eq!(
            serde_json::to_value(&s.rejects_by_rule).unwrap(),
            json!({"fields": 1, "lookup": 1, "max_length": 1, "required": 1, "type": 1, "utf8": 1})
        );
        let got: Vec<_> = rejects(data.path(), &s.job_id)
            .into_iter()
            .map(|r| {
                (
                    r["record"].as_u64().unwrap(),
                    r["line"].as_u64().unwrap(),
                    r["field"].clone(),
                    r["rule"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = vec![
            (2, 3, json!("Order Date"), "type".to_string()),
            (4, 6, json!(null), "fields".to_string()),
            (5, 7, json!("uuid"), "max_length".to_string()),
            (6, 8, json!("uuid"), "lookup".to_string()),
            (7, 9, json!("Country"), "utf8".to_string()),
            (8, 10, json!("uuid"), "required".to_string()),
        ];
        assert_eq!(got, want, "rejects in input order with record, line, field and rule (eol {eol:?})");
        let all = rejects(data.path(), &s.job_id);
        assert_eq!(all[0]["message"], json!("expected a date like 10/23/14, got \"2/30/15\""));
        assert_eq!(all[1]["message"], json!("expected 8 fields, found 7"));
        assert!(
            all[1]["raw"].as_str().unwrap().starts_with("892836844,Sao Tome,"),
            "the raw record is kept for redrive"
        );
        let output = job_file(data.path(), &s.job_id, "output.csv");
        assert_eq!(output.lines().filter(|l| l.starts_with("535113847") || l.starts_with("854349935")).count(), 2);
        assert_eq!(sink_rows(data.path(), "orders").await.len(), 2);
    }
}

/// Every job in the data dir's ledger with its status.
fn ledger_jobs(data: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(data.join("sluicebox-ledger.db")).unwrap();
    let mut stmt = db.prepare("SELECT job_id, status FROM sluicebox_jobs ORDER BY job_id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn statuses(data: &Path, prefix: &str) -> Vec<String> {
    ledger_jobs(data).into_iter().filter(|(id, _)| id.starts_with(prefix)).map(|(_, s)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_without_a_declared_column_stops_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(orders_dir().join("orders.csv")).unwrap().replacen("Ship Date", "Shipped", 1);
    let input = write(data.path(), "renamed.csv", text.as_bytes());
    let err = run(data.path(), &[input], &orders_job(), &orders_dir()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidInput { .. }), "{msg}");
    assert!(msg.contains("renamed.csv") && msg.contains("\"Ship Date\"") && msg.contains("line 1"), "{msg}");
    assert_eq!(statuses(data.path(), "renamed"), vec!["planning"], "the job exists and is not complete");
    assert!(!data
        .path()
        .join("bucket/jobs")
        .read_dir()
        .map(|mut d| d.any(|e| e.unwrap().path().join("summary.json").exists()))
        .unwrap_or(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_bad_types_name_the_key() {
    let e = JobConfig::from_toml("[sink]\ntabel = \"orders\"\n", "job.toml").unwrap_err().to_string();
    assert!(e.contains("tabel") && e.contains("job.toml"), "{e}");
    let e = JobConfig::from_toml("[chunking]\nrecords = \"many\"\n", "job.toml").unwrap_err().to_string();
    assert!(e.contains("records") && e.contains("line 2"), "{e}");
    let bad_policy = orders_job().replace("on_missing = \"reject\"", "on_missing = \"ignore\"");
    let e = JobConfig::from_toml(&bad_policy, "job.toml").unwrap_err().to_string();
    assert!(e.contains("on_missing") || e.contains("ignore"), "{e}");
    let e = JobConfig::from_toml("transform = [\".a | \"]", "job.toml")
        .unwrap()
        .validate(Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("transform[0]"), "{e}");
    let e = JobConfig::from_toml("[input]\ndelimiter = \";;\"", "job.toml")
        .unwrap()
        .validate(Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("input.delimiter"), "{e}");
    let e = JobConfig::from_toml("[[columns]]\nname = \"d\"\ntype = \"date\"\nformat = \"%Q\"", "job.toml")
        .unwrap()
        .validate(Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("columns[0]"), "{e}");
}

/// A job's transforms run on any worker: they may not read its environment, stop it, or
/// write to its log. The job file is refused when it is checked, naming the filter, and
/// nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_that_reads_the_environment_or_halts_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.csv", b"name\na\nb\n");
    for (program, name) in [
        (".secret = env.HOME", "env"),
        (".secret = $ENV.AWS_SECRET_ACCESS_KEY", "$ENV"),
        ("if .name == \"a\" then halt else . end", "halt"),
        ("debug", "debug"),
    ] {
        let job = format!("transform = ['{program}']\n");
        let e = run(dir.path(), std::slice::from_ref(&input), &job, dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("transform[0]") && e.contains(&format!("`{name}`")), "{program}: {e}");
        // Interpolated into a string, the filter is not defined either.
        let hidden = format!("transform = ['.s = \"\\({program})\"']\n");
        assert!(run(dir.path(), std::slice::from_ref(&input), &hidden, dir.path()).await.is_err(), "{hidden}");
    }
    assert!(ledger_jobs(dir.path()).is_empty(), "no job was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_inputs_stop_with_the_file_name() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("nope.csv");
    let e = run(data.path(), &[missing], "", Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("nope.csv"), "{e}");

    let corrupt = write(data.path(), "broken.csv.gz", b"\x1f\x8b\x08\x00 this is not gzip at all");
    let e = run(data.path(), &[corrupt], "", Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("broken.csv.gz"), "{e}");
    assert_eq!(statuses(data.path(), "broken"), vec!["planning"], "the job exists and is not complete");

    // A valid gzip stream cut short is corrupt too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&std::fs::read(orders_dir().join("orders.csv")).unwrap()).unwrap();
    let full = gz.finish().unwrap();
    let cut = write(data.path(), "cut.csv.gz", &full[..full.len() / 2]);
    let e = run(data.path(), &[cut], "", Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("cut.csv.gz"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_header_only_inputs_complete_with_zero_records() {
    for (name, bytes) in
        [("empty.csv", &b""[..]), ("header.csv", HEADER.as_bytes()), ("empty.jsonl", b"\n\n"), ("empty.json", b"[]")]
    {
        let data = tempfile::tempdir().unwrap();
        let input = write(data.path(), name, bytes);
        let s = run(data.path(), &[input], "", Path::new(".")).await.unwrap();
        assert_eq!(s.records.total, 0, "{name}");
        assert_eq!((s.chunks.total, s.chunks.done), (0, 0), "{name}");
        assert_eq!(s.status, "succeeded", "{name}");
    }
    // With the orders job: a header-only file completes and the output is just the header.
    let data = tempfile::tempdir().unwrap();
    let input = write(data.path(), "orders.csv", format!("{HEADER}\n").as_bytes());
    let s = run(data.path(), &[input], &orders_job(), &orders_dir()).await.unwrap();
    assert_eq!(s.records.total, 0);
    assert_eq!(job_file(data.path(), &s.job_id, "output.csv").lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_document_that_is_not_records_stops_the_job() {
    let data = tempfile::tempdir().unwrap();
    for (name, text) in [("x.json", &br#""just text""#[..]), ("n.json", b"42\n")] {
        let input = write(data.path(), name, text);
        let e = run(data.path(), &[input], "", Path::new(".")).await.unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("records"), "{e}");
    }
    // An object without a records array is one record.
    let input = write(data.path(), "one.json", br#"{"items": 3}"#);
    let s = run(data.path(), &[input], "[output]\nformat = \"jsonl\"\n", Path::new(".")).await.unwrap();
    assert_eq!((s.records.total, s.records.written), (1, 1));
    assert_eq!(job_file(data.path(), &s.job_id, "output.jsonl"), "{\"items\":3}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_records_are_rejected_alone() {
    let data = tempfile::tempdir().unwrap();
    let input = write(data.path(), "x.jsonl", b"{\"a\":1}\n{\"a\":\n[1,2]\n{\"a\":3}\n");
    let s = run(data.path(), &[input], "[chunking]\nrecords = 1\n", Path::new(".")).await.unwrap();
    assert_eq!((s.records.written, s.records.rejected), (2, 2));
    let r = rejects(data.path(), &s.job_id);
    assert_eq!((r[0]["line"].as_u64(), r[0]["rule"].as_str()), (Some(2), Some("json")));
    assert_eq!((r[1]["line"].as_u64(), r[1]["rule"].as_str()), (Some(3), Some("json")));
    assert!(r[1]["message"].as_str().unwrap().contains("expected a JSON object, got an array"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_unbalanced_json_document_rejects_the_tail_instead_of_dropping_it() {
    for (doc, written) in [(&br#"[{"id":1},{"id":"2},{"id":3}]"#[..], 1), (br#"[{"id":1},{"id":2},{"id":3,"na"#, 2)] {
        let data = tempfile::tempdir().unwrap();
        let input = write(data.path(), "x.json", doc);
        let s = run(data.path(), &[input], "", Path::new(".")).await.unwrap();
        assert_eq!((s.records.total, s.records.written, s.records.rejected), (written + 1, written, 1));
        assert_eq!(rejects(data.path(), &s.job_id)[0]["rule"], "json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_changed_after_planning_fails_its_reads() {
    let data = tempfile::tempdir().unwrap();
    let path = write(data.path(), "in.csv", b"a,b\n1,2\n3,4\n");
    let store = sluicebox::backends::bucket::local_inputs();
    let arg = path.display().to_string();
    let inputs =
        sluicebox::backends::bucket::resolve_inputs(store.as_ref(), &[arg], None, Default::default()).await.unwrap();
    assert!(sluicebox::backends::bucket::read_range(store.clone(), &inputs[0], 4, 8).await.is_ok());
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, b"a,b\n9,9\n3,4\n5,6\n").unwrap();
    let e = sluicebox::backends::bucket::read_range(store.clone(), &inputs[0], 4, 8).await.unwrap_err().to_string();
    assert!(e.contains("in.csv") && e.contains("changed since the job was planned"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_with_a_repeated_column_stops_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let input = write(data.path(), "dup.csv", b"a,b,a\n1,2,3\n");
    let e = run(data.path(), &[input], "", Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("dup.csv") && e.contains("\"a\"") && e.contains("twice"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbalanced_quote_stops_the_plan_with_its_line_instead_of_swallowing_the_file() {
    let data = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b\n1,2\n3,\"oops\n");
    for i in 0..5000 {
        text.push_str(&format!("{i},x\n"));
    }
    for (name, bytes, cfg) in [
        ("q.csv", text.into_bytes(), "[input]\nmax_record_bytes = 1000\n"),
        ("one-line.jsonl", vec![b' '; 5000], "[input]\nmax_record_bytes = 1000\n"),
        (
            "open.json",
            format!("[{{\"a\": \"{}\"}}]", "x".repeat(5000)).into_bytes(),
            "[input]\nmax_record_bytes = 1000\n",
        ),
    ] {
        let input = write(data.path(), name, &bytes);
        let e = run(data.path(), &[input], cfg, Path::new(".")).await.unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("line") && e.contains("longer than 1000 bytes"), "{e}");
    }
    // The CSV error names the line where the runaway record starts.
    let input = data.path().join("q.csv");
    let e =
        run(data.path(), &[input], "[input]\nmax_record_bytes = 1000\n", Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
}

/// A visibility timeout beyond what SQS accepts is refused before anything runs, naming the
/// option; by default a task whose worker died is taken again within half a minute.
#[test]
fn the_visibility_timeout_is_short_by_default_and_bounded() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["run", "in.csv", "--visibility-secs", "50000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--visibility-secs"));
    assert!(sluicebox::batch::job::RunOptions::default().visibility <= std::time::Duration::from_secs(30));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox")).args(["worker", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 30]"), "{help}");
}

/// A job id names the job's objects and rows: one that could reach another job's objects, or
/// every job's, is refused before anything is deleted or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_that_is_not_a_plain_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.csv", b"id\n1\n");
    let engine = sluicebox::engine::Engine::local(&dir.path().join("data")).unwrap();
    let first = run(&dir.path().join("data"), std::slice::from_ref(&input), "", dir.path()).await.unwrap();
    for id in ["", "a/parts", "../x", ".hidden", "x y", &"a".repeat(129)] {
        let opts =
            sluicebox::batch::job::RunOptions { job_id: Some(id.to_string()), force: true, ..Default::default() };
        let e = run_with(&engine, std::slice::from_ref(&input), "", dir.path(), &opts).await.unwrap_err().to_string();
        assert!(e.contains("--job-id"), "{id:?}: {e}");
    }
    let summary = dir.path().join("data/bucket/jobs").join(&first.job_id).join("summary.json");
    assert!(summary.exists(), "the earlier job's outputs are untouched");
    let opts = sluicebox::batch::job::RunOptions { job_id: Some("daily-2026.12.01_b".into()), ..Default::default() };
    assert!(run_with(&engine, &[input], "", dir.path(), &opts).await.is_ok());
}

/// A header naming more columns than a record may have (a binary file, a wrong delimiter)
/// stops the job with the file and the count, before any record is worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_with_too_many_columns_stops_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let wide = sluicebox::engine::pipeline::MAX_COLUMNS + 1;
    let header: Vec<String> = (0..wide).map(|i| format!("c{i}")).collect();
    let input = write(dir.path(), "wide.csv", format!("{}\n", header.join(",")).as_bytes());
    let e = run(dir.path(), &[input], "", dir.path()).await.unwrap_err().to_string();
    assert!(e.contains("wide.csv") && e.contains(&wide.to_string()) && e.contains("columns"), "{e}");
}

/// A compressed input that decompresses to more than the cap (a decompression bomb) stops
/// the plan with a message naming the input and the setting; the same file under a cap it
/// fits runs. gzip and zstd alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_stops_the_plan_at_the_cap() {
    let data = tempfile::tempdir().unwrap();
    let rows: String = std::iter::repeat_n("1,a\n", 250_000).collect();
    let text = format!("id,name\n{rows}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    let gz = write(data.path(), "bomb.csv.gz", &gz.finish().unwrap());
    let zst = write(data.path(), "bomb.csv.zst", &zstd::encode_all(text.as_bytes(), 19).unwrap());
    for input in [gz, zst] {
        let capped = "[input]\nmax_decompressed_bytes = 500000\n[sink]\ntype = \"none\"\n";
        let e = run(data.path(), std::slice::from_ref(&input), capped, data.path()).await.unwrap_err().to_string();
        assert!(e.contains(&input.display().to_string()), "{e}");
        assert!(e.contains("more than 500000 bytes") && e.contains("input.max_decompressed_bytes"), "{e}");
        let fits = "[input]\nmax_decompressed_bytes = 1000008\n[sink]\ntype = \"none\"\n";
        let s = run(data.path(), std::slice::from_ref(&input), fits, data.path()).await.unwrap();
        assert_eq!(s.records.written, 250_000);
    }
}

/// A transform that never ends (`until(false; …)`) or recurses without end makes each record
/// it meets a reject over budget; the job completes instead of holding its worker forever, and
/// records the program leaves alone are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_that_never_ends_rejects_its_records_and_the_job_completes() {
    let work = tempfile::tempdir().unwrap();
    let input = write(work.path(), "loops.csv", b"id,n\n1,0\n2,1\n3,2\n4,0\n");
    let job = "transform = ['if .n == \"1\" then .k = (0|until(false;.+1)) elif .n == \"2\" then .k = (def f: 1 + f; f) else . end']\n";
    let s = run(&work.path().join("data"), &[input], job, work.path()).await.unwrap();
    assert_eq!((s.records.written, s.records.rejected), (2, 2));
    let rejects = rejects(&work.path().join("data"), &s.job_id);
    for r in &rejects {
        assert_eq!(r["rule"], "transform", "{r}");
        assert!(r["message"].as_str().unwrap().contains("over budget"), "{r}");
    }
}

/// Inputs come from one store, the first input's: an `s3://` input after a local one is
/// refused with both named, instead of its key being read from this machine's disk
/// (`s3://other-bucket/etc/hostname` once read the local `/etc/hostname`, labelled S3).
#[test]
fn inputs_in_two_places_are_refused_before_anything_is_read() {
    let work = tempfile::tempdir().unwrap();
    let input = write(work.path(), "in.csv", b"id\n1\n");
    std::fs::write(work.path().join("job.toml"), "[sink]\ntype = \"none\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["run", input.to_str().unwrap(), "s3://other-bucket/etc/hostname"])
        .args(["--config", work.path().join("job.toml").to_str().unwrap()])
        .args(["--data-dir", work.path().join("data").to_str().unwrap()])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("s3://other-bucket") && stderr.contains("all local files"), "{stderr}");
    assert!(!work.path().join("data/bucket/jobs").exists(), "a job was made");
}
