//! `sluicebox stream`: records from standard input and files into partitioned, size-targeted
//! files, each record in exactly one of them, across kills and restarts.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluicebox::backends::ledger::{SqliteLedger, StateStore};
use sluicebox::stream::{Options, Source, Stream};

pub(crate) fn sluicebox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluicebox"))
}

/// Events of about 200 bytes: ids in random order, five vendors, three days, and every
/// `bad`-th line broken (not JSON, or a negative amount the schema refuses).
fn events(n: u64, bad: u64, seed: u64) -> (String, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ids: Vec<u64> = (0..n).collect();
    rng.shuffle(&mut ids);
    let mut out = String::new();
    let mut broken = 0;
    for (i, id) in ids.into_iter().enumerate() {
        if bad > 0 && i as u64 % bad == bad - 1 {
            broken += 1;
            match i % 2 {
                0 => out.push_str(&format!("{{\"id\": {id}, \"vendor\": \"v1\", oops\n")),
                _ => out.push_str(&format!(
                    "{{\"id\":{id},\"vendor\":\"v2\",\"ts\":\"2026-11-01T00:00:00Z\",\"amount\":-1,\"note\":\"\"}}\n"
                )),
            }
            continue;
        }
        let note: String = (0..rng.usize(60..120)).map(|_| rng.alphanumeric()).collect();
        out.push_str(&format!(
            "{{\"id\":{id},\"vendor\":\"v{}\",\"ts\":\"2026-11-{:02}T{:02}:{:02}:00Z\",\"amount\":{:.2},\"note\":\"{note}\"}}\n",
            rng.u32(0..5),
            rng.u32(1..4),
            rng.u32(0..24),
            rng.u32(0..60),
            rng.f64() * 1000.0
        ));
    }
    (out, broken)
}

const EVENTS_JOB: &str = r#"
[input]
format = "jsonl"

[validate]
schema = { type = "object", properties = { amount = { type = "number", minimum = 0 } } }

[stream]
size_mib = 1
max_age_s = 600
partition = "vendor={vendor}/dt=%Y-%m-%d"
time_field = "ts"
"#;

fn lines(bytes: &[u8]) -> Vec<Value> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

/// Every output record's id, and every error record's position, each with the file it is in.
fn ids(out: &Path) -> (HashMap<u64, Vec<String>>, HashMap<String, Vec<String>>) {
    let (mut data, mut errors) = (HashMap::new(), HashMap::new());
    for (name, bytes) in common::decompressed_files(out) {
        for rec in lines(&bytes) {
            if name.starts_with("errors/") {
                let at = format!("{}#{}", rec["shard"].as_str().unwrap(), rec["position"].as_str().unwrap());
                assert!(rec["rule"].is_string() && rec["message"].is_string(), "{rec}");
                errors.entry(at).or_insert_with(Vec::new).push(name.clone());
            } else {
                data.entry(rec["id"].as_u64().unwrap()).or_insert_with(Vec::new).push(name.clone());
            }
        }
    }
    (data, errors)
}

pub(crate) fn report(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `stream --from -` with `dir/job.toml`, `input` piped in, into `out`: its `--json` report.
fn stream_stdin(dir: &Path, out: &Path, input: &str) -> Value {
    let mut child = sluicebox()
        .args(["stream", "--from", "-", "--to", out.to_str().unwrap(), "--json"])
        .args(["--config", dir.join("job.toml").to_str().unwrap()])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{done:?}");
    report(&done.stdout)
}

#[test]
fn stdin_events_land_once_each_in_partitioned_files_of_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let (input, broken) = events(30_000, 97, 1);
    std::fs::write(dir.path().join("job.toml"), EVENTS_JOB).unwrap();
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    assert_eq!(r["records"], 30_000);
    assert_eq!(r["rejected"], broken);
    assert_eq!(r["written"].as_u64().unwrap() + broken, 30_000);

    let (data, errors) = ids(&out);
    assert_eq!(data.len() as u64, 30_000 - broken);
    assert!(data.values().all(|f| f.len() == 1), "a record in two files");
    assert_eq!(errors.len() as u64, broken);
    assert!(errors.values().all(|f| f.len() == 1));

    // Each file within 1 MiB (a record is far smaller), in its record's partition; in each
    // partition every file but one is nearly full.
    let limit = 1 << 20;
    let mut by_partition: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, bytes) in common::decompressed_files(&out).into_iter().filter(|(n, _)| !n.starts_with("errors/")) {
        assert!(bytes.len() <= limit, "{name} has {} bytes", bytes.len());
        let (partition, file) = name.rsplit_once('/').unwrap();
        assert!(file.starts_with("part-") && file.ends_with(".jsonl.gz"), "{name}");
        for rec in lines(&bytes) {
            let want = format!("vendor={}/dt={}", rec["vendor"].as_str().unwrap(), &rec["ts"].as_str().unwrap()[..10]);
            assert_eq!(partition, want);
        }
        by_partition.entry(partition.to_string()).or_default().push(bytes.len());
    }
    assert_eq!(by_partition.len(), 15, "5 vendors × 3 days");
    for (p, sizes) in &by_partition {
        let small = sizes.iter().filter(|&&s| s < limit - 1024).count();
        assert!(small <= 1, "{p}: {sizes:?}");
    }
}

/// `buffer_mib` bounds the buffers together: 15 partitions of about 380 KB each do not fit in
/// 1 MiB, so buffers are written early (cut for memory), and still every record lands once.
#[test]
fn the_buffer_cap_writes_the_largest_buffer_early() {
    let dir = tempfile::tempdir().unwrap();
    let (input, broken) = events(30_000, 97, 5);
    std::fs::write(dir.path().join("job.toml"), format!("{EVENTS_JOB}buffer_mib = 1\n")).unwrap();
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    assert!(r["cuts"]["memory"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["files"].as_u64().unwrap() > 15, "{r}");
    let (data, _) = ids(&out);
    assert_eq!(data.len() as u64, 30_000 - broken);
    assert!(data.values().all(|f| f.len() == 1), "a record in two files");
}

/// A file source killed with SIGKILL at random instants and restarted each time, then run to
/// its end: every record in exactly one file, and a second run writes nothing.
#[test]
fn files_killed_and_resumed_write_every_record_exactly_once() {
    // Small files, so that kills land between many writes and commits.
    let short = killed_and_resumed("size_mib = 1\nrecords = 400", 7);
    // Per partition, every file is full (400 records) but one.
    assert!(short.values().all(|&n| n <= 1), "{short:?}");
}

/// The same with files of 1 MiB: each buffer compresses its records to a scratch file a piece
/// at a time, so kills land while buffers spill, while spilled files are uploaded, and between
/// those and their commits.
#[test]
fn files_killed_while_buffers_spill_to_scratch_write_every_record_exactly_once() {
    killed_and_resumed("size_mib = 1", 11);
}

/// Kill a file source's stream four times at random instants, run it to its end, check every
/// record is in one file and a second run writes nothing; the number of files under 400 records
/// per partition.
fn killed_and_resumed(size: &str, seed: u64) -> BTreeMap<String, usize> {
    let dir = tempfile::tempdir().unwrap();
    let (input, broken) = events(200_000, 50, 2);
    let input_path = dir.path().join("events.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let job = EVENTS_JOB.replace("size_mib = 1", size);
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = dir.path().join("out");
    let run = || {
        let mut c = sluicebox();
        c.args(["stream", "--from", input_path.to_str().unwrap(), "--to", out.to_str().unwrap(), "--json"])
            .args(["--config", dir.path().join("job.toml").to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for _ in 0..4 {
        // A kill at a random instant, but while the run is still under way whatever the
        // machine's speed: a random delay, cut short once a few more files have appeared.
        let (delay, more) = (Duration::from_millis(rng.u64(100..900)), rng.usize(1..5));
        let before = files_under(&out);
        let started = std::time::Instant::now();
        let mut child = run().spawn().unwrap();
        while started.elapsed() < delay && files_under(&out) < before + more {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(rng.u64(1..15)));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            kills += 1;
        }
    }
    assert!(kills >= 2, "the kills landed after the run ended: make the input larger");
    let partial = common::decompressed_files(&out).len();
    let done = run().output().unwrap();
    assert!(done.status.success(), "{done:?}");
    let (data, errors) = ids(&out);
    assert_eq!(data.len() as u64, 200_000 - broken);
    let doubled: Vec<_> = data.iter().filter(|(_, f)| f.len() > 1).take(3).collect();
    assert!(
        doubled.is_empty(),
        "records in two files after {kills} kills ({partial} files before the last run): {doubled:?}"
    );
    assert_eq!(errors.len() as u64, broken);
    assert!(errors.values().all(|f| f.len() == 1));
    let mut short: BTreeMap<String, usize> = BTreeMap::new();
    for (name, bytes) in common::decompressed_files(&out) {
        if !name.starts_with("errors/") && lines(&bytes).len() < 400 {
            *short.entry(name.rsplit_once('/').unwrap().0.to_string()).or_default() += 1;
        }
    }

    let before = common::decompressed_files(&out);
    let again = run().output().unwrap();
    assert!(again.status.success());
    assert_eq!(report(&again.stdout)["files"], 0);
    assert_eq!(common::decompressed_files(&out), before, "a second run changed the output");
    short
}

/// How many files are under `dir`, staged or not.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

/// 100 partitions (the open-partition cap), a tenth of them taking most records: the buffers
/// hold at most a piece (512 KiB) of records each in memory, compressing the rest to scratch
/// files, and every record lands in exactly one file.
#[test]
fn buffers_over_many_partitions_hold_a_bounded_piece_in_memory_and_every_record_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    let n = 300_000u64;
    let mut input = String::new();
    for id in 0..n {
        // Vendors 0–9 take about 80% of the records, 10–99 the rest.
        let vendor = if rng.u8(0..10) < 8 { rng.u32(0..10) } else { rng.u32(10..100) };
        let note: String = (0..rng.usize(60..120)).map(|_| rng.alphanumeric()).collect();
        input.push_str(&format!(
            "{{\"id\":{id},\"vendor\":\"v{vendor}\",\"ts\":\"2026-11-01T00:00:00Z\",\"amount\":1,\"note\":\"{note}\"}}\n"
        ));
    }
    std::fs::write(dir.path().join("job.toml"), EVENTS_JOB.replace("size_mib = 1\n", "")).unwrap();
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    let peak = r["buffered_peak_bytes"].as_u64().unwrap();
    // Each buffer under a piece, and the compressor's few pieces in flight.
    assert!(peak > 0 && peak <= 103 * (512 * 1024 + 300), "{r}");
    assert!(peak < input.len() as u64 / 3, "most records were held in memory: {r}");
    assert!(r["spooled_bytes"].as_u64().unwrap() > 1 << 20, "the busy partitions spilled: {r}");
    assert_eq!(r["files"], 100, "{r}");
    let (data, errors) = ids(&out);
    assert!(errors.is_empty());
    assert_eq!(data.len() as u64, n);
    assert!(data.values().all(|f| f.len() == 1), "a record in two files");
}

/// A file announced but not written is cut again; one announced and written is kept, and its
/// records are not written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_files_are_kept_if_written_and_redone_if_not() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (1..=10).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let path = dir.path().join("ten.jsonl");
    std::fs::write(&path, input).unwrap();
    let spec = common::spec("[stream]\nrecords = 5\ncompression = \"none\"\n", dir.path());
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
    let out = dir.path().join("out");
    let dest =
        sluicebox::backends::bucket::open(out.to_str().unwrap(), &sluicebox::backends::cloud::Cloud::none()).unwrap();
    let opts = Options {
        from: Source::Files(vec![path.display().to_string()]),
        to: out.display().to_string(),
        name: Some("ten".into()),
        idle_exit: None,
        latest: false,
    };
    let shard = format!("file://{}", path.display());
    let state = serde_json::json!({
        "shards": {},
        "covered": [],
        "pending": [
            {"name": "part-written.jsonl", "covered": [{"partition": "", "shard": shard, "first": "1", "last": "5"}]},
            {"name": "part-lost.jsonl", "covered": [{"partition": "", "shard": shard, "first": "6", "last": "10"}]},
        ]
    });
    assert!(ledger.put_checkpoint("ten", 0, &state.to_string()).await.unwrap());
    std::fs::create_dir_all(&out).unwrap();
    let written: String = (1..=5).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    std::fs::write(out.join("part-written.jsonl"), written).unwrap();

    let stream = Stream {
        spec,
        lookup: None,
        ledger: ledger.clone(),
        dest,
        inputs: sluicebox::backends::bucket::local_inputs(),
        cloud: sluicebox::backends::cloud::Cloud::none(),
        sink: None,
        files: true,
        scratch: dir.path().join("spool"),
    };
    let r = stream.run(&opts, std::future::pending()).await.unwrap();
    assert_eq!((r.records, r.skipped, r.written, r.files), (10, 5, 5, 1));
    let (data, _) = ids(&out);
    assert_eq!(data.len(), 10);
    assert_eq!(data[&1], vec!["part-written.jsonl".to_string()]);
    assert!(data[&6][0].starts_with("part-") && data[&6][0] != "part-lost.jsonl");
    assert!(data.values().all(|f| f.len() == 1));
    let saved: Value = serde_json::from_str(&ledger.get_checkpoint("ten").await.unwrap().unwrap().state).unwrap();
    assert_eq!(saved["pending"], serde_json::json!([]));
    assert_eq!(saved["shards"][&shard]["checkpoint"], "10");
    assert_eq!(saved["shards"][&shard]["ended"], true);
}

#[test]
fn bad_stream_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, key) in [
        ("size_mib = 0", "stream.size_mib"),
        ("size_mib = 129", "stream.size_mib"),
        ("max_age_s = 901", "stream.max_age_s"),
        ("buffer_mib = 8", "stream.buffer_mib"),
        ("partition = \"a={\"", "stream.partition"),
        ("colour = 1", "colour"),
    ] {
        std::fs::write(dir.path().join("job.toml"), format!("[stream]\n{setting}\n")).unwrap();
        let out = sluicebox()
            .args(["stream", "--from", "-", "--to", dir.path().join("out").to_str().unwrap()])
            .args(["--config", dir.path().join("job.toml").to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(key), "{setting}: {err}");
    }
}

/// The orders file replayed into Parquet and into JSON Lines files partitioned by region and
/// year of the order: DuckDB reads each with its partitions and gets the batch job's output
/// rows (the input minus the rejects), each partition holding only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_partitioned_files_as_the_batch_jobs_output() {
    let dir = tempfile::tempdir().unwrap();
    let orders = common::orders_dir().join("orders.csv");
    let batch = common::run(
        &dir.path().join("batch"),
        std::slice::from_ref(&orders),
        &common::orders_job(),
        &common::orders_dir(),
    )
    .await
    .unwrap();
    let csv = dir.path().join("batch.csv");
    std::fs::write(&csv, common::job_file(&dir.path().join("batch"), &batch.job_id, "output.csv")).unwrap();
    let job = common::orders_job().replace(
        "source = \"financial.csv\"",
        &format!("source = \"{}\"", common::orders_dir().join("financial.csv").display()),
    )
        + "\n[stream]\nrecords = 700\npartition = \"part_region={region}/year=%Y\"\ntime_field = \"orderDate\"\n";
    for format in ["parquet", "jsonl"] {
        let job_path = dir.path().join(format!("{format}.toml"));
        std::fs::write(&job_path, job.replace("[stream]", &format!("[output]\nformat = \"{format}\"\n\n[stream]")))
            .unwrap();
        let out = dir.path().join(format!("out-{format}"));
        let done = sluicebox()
            .args(["stream", "--from", orders.to_str().unwrap(), "--to", out.to_str().unwrap(), "--json"])
            .args(["--config", job_path.to_str().unwrap()])
            .args(["--data-dir", dir.path().join(format!("data-{format}")).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        let r = report(&done.stdout);
        assert_eq!(r["written"].as_u64(), Some(batch.records.written), "{r}");
        assert_eq!(r["rejected"].as_u64(), Some(batch.records.rejected), "{r}");

        let glob = match format {
            "parquet" => {
                format!("read_parquet({}, hive_partitioning = {{hive}})", common::sql_text(&out.join("**/*.parquet")))
            }
            _ => format!(
                "read_json_auto({}, hive_partitioning = {{hive}}, format = 'newline_delimited')",
                common::sql_text(&out.join("part_region=*/**/*.jsonl.gz"))
            ),
        };
        let files = |hive: bool| glob.replace("{hive}", if hive { "true" } else { "false" });
        let batch_rows = format!("read_csv({}, all_varchar = true, header = true)", common::sql_text(&csv));
        let got = common::duckdb(&[
            format!("SELECT count(*) FROM {}", files(true)),
            format!(
                "SELECT count(*) FROM ((SELECT COLUMNS(*)::VARCHAR FROM {}) EXCEPT ALL (SELECT * FROM {batch_rows}))",
                files(false)
            ),
            format!(
                "SELECT count(*) FROM ((SELECT * FROM {batch_rows}) EXCEPT ALL (SELECT COLUMNS(*)::VARCHAR FROM {}))",
                files(false)
            ),
            format!(
                "SELECT count(*) FROM {} WHERE part_region <> region OR year <> year(CAST(orderDate AS DATE))",
                files(true)
            ),
            format!("SELECT count(DISTINCT part_region), count(DISTINCT year) FROM {}", files(true)),
        ]);
        let one = |i: usize| got[i][0][0].clone().unwrap();
        assert_eq!(one(0), batch.records.written.to_string(), "{format}: rows");
        assert_eq!((one(1), one(2)), ("0".to_string(), "0".to_string()), "{format}: rows differ from the batch output");
        assert_eq!(one(3), "0", "{format}: a row in another partition");
        assert_eq!(got[4][0], vec![Some("7".to_string()), Some("8".to_string())], "{format}: partitions");
    }
}

/// A short run of `sluicebox bench --stream` (the benchmark a person runs with a million events)
/// into files: both encodings report every event and files of the target size or under (the
/// SQLite run and DuckDB's pairing: tests/it/bench.rs).
#[test]
fn the_stream_bench_runs_and_reports_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluicebox()
        .args(["bench", "--stream", "--records", "20000", "--into", "jsonl,parquet", "--no-duckdb", "--json"])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(runs.iter().map(|r| r["format"].as_str().unwrap()).collect::<Vec<_>>(), ["jsonl", "parquet"]);
    for r in &runs {
        assert_eq!(r["records"], 20_000, "{r}");
        assert_eq!(r["files"], 60, "20 vendors × 3 days: {r}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0 && r["records_per_s"].as_f64().unwrap() > 0.0, "{r}");
        let sizes: Vec<u64> = r["file_bytes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(sizes[0] > 0 && sizes[0] <= sizes[1] && sizes[1] <= sizes[2], "{r}");
    }
}

/// One record whose partition value is 300 characters (too long a folder for a file system),
/// one whose value is 300 KB, one that would land under the errors prefix and one dated year
/// 9999: each is a reject in `errors/` with rule and reason, the others land in their files,
/// and the stream goes on to its end.
#[test]
fn a_record_whose_partition_cannot_be_a_folder_is_a_reject_not_a_stopped_stream() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        "[input]\nformat = \"jsonl\"\n[stream]\nsize_mib = 1\npartition = \"{d}/y=%Y\"\ntime_field = \"ts\"\n",
    )
    .unwrap();
    let mut input = String::new();
    for i in 0..200 {
        let d = match i {
            50 => "x".repeat(300),
            120 => "y".repeat(300_000),
            150 => "errors".to_string(),
            170 => "..".to_string(),
            _ => format!("d{}", i % 3),
        };
        let ts = if i == 99 { "9999-01-01T00:00:00Z" } else { "2026-11-01T00:00:00Z" };
        input.push_str(&format!("{{\"id\":{i},\"d\":\"{d}\",\"ts\":\"{ts}\"}}\n"));
    }
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    assert_eq!((r["records"].as_u64(), r["rejected"].as_u64()), (Some(200), Some(5)), "{r}");
    let (data, errors) = ids(&out);
    assert_eq!(data.len(), 195);
    assert!(data.values().all(|files| files.len() == 1));
    assert_eq!(errors.len(), 5);
    let mut rules = Vec::new();
    for (name, bytes) in common::decompressed_files(&out) {
        if name.starts_with("errors/") {
            rules.extend(lines(&bytes).into_iter().map(|r| r["rule"].as_str().unwrap().to_string()));
        }
    }
    rules.sort();
    assert_eq!(rules, ["stream.partition"; 4].iter().chain(&["stream.time_field"]).copied().collect::<Vec<_>>());
}

/// A template whose value changes on every record (here the record's own id) would write a
/// file per record: past `max_partitions` active partitions the records are rejects, the files
/// stay few, and `check` warns about the template before anything runs.
#[test]
fn a_partition_per_record_stops_at_the_partition_budget_and_check_warns() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[input]\nformat = \"jsonl\"\n[stream]\nsize_mib = 1\npartition = \"k={id}\"\nmax_partitions = 50\n";
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let input: String = (0..300).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    assert_eq!((r["written"].as_u64(), r["rejected"].as_u64()), (Some(50), Some(250)), "{r}");
    let files = common::decompressed_files(&out);
    assert_eq!(files.keys().filter(|n| !n.starts_with("errors/")).count(), 50);
    let rules: Vec<String> = files
        .iter()
        .filter(|(n, _)| n.starts_with("errors/"))
        .flat_map(|(_, b)| lines(b))
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.len() == 250 && rules.iter().all(|r| r == "stream.max_partitions"), "{rules:?}");

    let checked = sluicebox()
        .args(["check", dir.path().join("job.toml").to_str().unwrap()])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{checked:?}");
    assert!(said.contains("warning: stream.partition: {id} looks like a value that differs on every record"), "{said}");
}

/// A line over 64 MiB (a record too long to read, or a CSV quote never closed) is a reject
/// skipped to its line break, and the records after it are read as usual; at the end of the
/// input too.
#[test]
fn a_line_over_64_mib_is_a_reject_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), "[input]\nformat = \"jsonl\"\n[stream]\nsize_mib = 1\n").unwrap();
    let huge = "x".repeat(65 << 20);
    let input = format!("{{\"id\":1}}\n{{\"id\":2,\"pad\":\"{huge}\"}}\n{{\"id\":3}}\n{{\"id\":4,\"pad\":\"{huge}");
    let out = dir.path().join("out");
    let r = stream_stdin(dir.path(), &out, &input);
    assert_eq!(
        (r["records"].as_u64(), r["written"].as_u64(), r["rejected"].as_u64()),
        (Some(4), Some(2), Some(2)),
        "{r}"
    );
    let (data, errors) = ids(&out);
    assert_eq!(data.keys().copied().collect::<std::collections::BTreeSet<_>>(), [1, 3].into());
    assert_eq!(errors.len(), 2);
    for (name, bytes) in common::decompressed_files(&out) {
        for e in lines(&bytes).into_iter().filter(|_| name.starts_with("errors/")) {
            assert_eq!(e["rule"], "max_record_bytes", "{e}");
            assert!(e["raw"].as_str().unwrap().len() <= 256, "the reject keeps the record's head only");
        }
    }
}

/// A CSV file's rows by column name, in file order.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header = rdr.headers().unwrap().clone();
    rdr.records().map(|r| header.iter().zip(r.unwrap().iter()).map(|(k, v)| (k.into(), v.into())).collect()).collect()
}

/// A CSV header with spaces around its names (` id , amount `) names the same columns in a job
/// and in a stream: both read it with the planner's reading, and give the same typed records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_header_with_spaces_around_its_names_gives_the_same_records_in_a_job_and_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("amounts.csv");
    std::fs::write(&input, " id , amount \n1,2.5\n2,3.75\n3,10\n").unwrap();
    let job = "[input]\nformat = \"csv\"\n\n\
               [[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n\n\
               [[columns]]\nname = \"amount\"\ntype = \"decimal\"\nrequired = true\n";
    std::fs::write(dir.path().join("job.toml"), format!("{job}\n[stream]\nsize_mib = 1\n")).unwrap();

    let batch = common::run(&dir.path().join("batch"), std::slice::from_ref(&input), job, dir.path()).await.unwrap();
    assert_eq!((batch.records.written, batch.records.rejected), (3, 0));
    let from_job = csv_rows(&common::job_file(&dir.path().join("batch"), &batch.job_id, "output.csv"));

    let out = dir.path().join("out");
    let done = sluicebox()
        .args(["stream", "--from", input.to_str().unwrap(), "--to", out.to_str().unwrap(), "--json"])
        .args(["--config", dir.path().join("job.toml").to_str().unwrap()])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let r = report(&done.stdout);
    assert_eq!((r["written"].as_u64(), r["rejected"].as_u64()), (Some(3), Some(0)), "{r}");
    let files = common::decompressed_files(&out);
    assert_eq!(files.len(), 1, "{:?}", files.keys());
    let from_stream = csv_rows(&String::from_utf8_lossy(files.values().next().unwrap()));

    let want: Vec<BTreeMap<String, String>> = [("1", "2.5"), ("2", "3.75"), ("3", "10.0")]
        .iter()
        .map(|(id, amount)| BTreeMap::from([("id".into(), id.to_string()), ("amount".into(), amount.to_string())]))
        .collect();
    assert_eq!(from_job, want);
    assert_eq!(from_stream, want);
}

/// Records are cut where the planner cuts them, in a stream as in a job: an inch mark in an
/// unquoted field is text, a quoted field may hold line breaks, lines may end in CRLF; over
/// many 1 MiB blocks, so that the cuts between blocks are tested, not only the end of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_cut_alike_in_a_job_and_a_stream_over_many_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("parts.csv");
    let mut text = String::from("id,note\r\n");
    let mut rng = fastrand::Rng::with_seed(24);
    // One inch mark first: a cutter that counted quotes would think every later line break
    // outside quotes is inside them, and the reverse, for the rest of the file.
    text += "0,a 5\" pipe\r\n";
    for id in 1..150_000u64 {
        match rng.u8(..2) {
            0 => text += &format!("{id},\"two\nlines, \"\"quoted\"\"\"\r\n"),
            _ => text += &format!("{id},plain {}\r\n", "y".repeat(rng.usize(..40))),
        }
    }
    std::fs::write(&input, &text).unwrap();
    assert!(text.len() > 3 << 20, "spans several stream blocks: {}", text.len());
    let job = "[input]\nformat = \"csv\"\n\n[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n";
    std::fs::write(dir.path().join("job.toml"), format!("{job}\n[stream]\nsize_mib = 64\n")).unwrap();

    let batch = common::run(&dir.path().join("batch"), std::slice::from_ref(&input), job, dir.path()).await.unwrap();
    assert_eq!(batch.records.written, 150_000, "{:?}", batch.rejects_by_rule);
    let mut from_job = csv_rows(&common::job_file(&dir.path().join("batch"), &batch.job_id, "output.csv"));

    let out = dir.path().join("out");
    let done = sluicebox()
        .args(["stream", "--from", input.to_str().unwrap(), "--to", out.to_str().unwrap(), "--json"])
        .args(["--config", dir.path().join("job.toml").to_str().unwrap()])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let r = report(&done.stdout);
    assert_eq!((r["written"].as_u64(), r["rejected"].as_u64()), (Some(150_000), Some(0)), "{r}");
    let mut from_stream: Vec<BTreeMap<String, String>> =
        common::decompressed_files(&out).values().flat_map(|bytes| csv_rows(&String::from_utf8_lossy(bytes))).collect();
    let id = |r: &BTreeMap<String, String>| r["id"].parse::<u64>().unwrap();
    from_job.sort_by_key(id);
    from_stream.sort_by_key(id);
    assert_eq!(from_stream.len(), from_job.len());
    assert!(from_job == from_stream, "the same records, field for field");
}

/// A stream's record metadata: `$meta.source`, `.shard`, `.sequence` and `.arrival` in a
/// transform, and `$meta.shard` in the partition template.
#[test]
fn a_streams_records_carry_their_source_shard_sequence_and_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::write(
        dir.path().join("job.toml"),
        "transform = ['.event_id = $meta.sequence | .source = $meta.source | .arrived = $meta.arrival']\n\
         [stream]\npartition = \"from={$meta.shard}\"\n",
    )
    .unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let report = stream_stdin(dir.path(), &out, "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n");
    assert_eq!(report["written"], 3, "{report}");
    let files: Vec<(String, Vec<u8>)> =
        common::decompressed_files(&out).into_iter().filter(|(name, _)| !name.starts_with("errors/")).collect();
    assert_eq!(files.len(), 1, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    // Each run of standard input is a shard of its own, named by when it began.
    assert!(files[0].0.starts_with("from=stdin-"), "{}", files[0].0);
    let records = lines(&files[0].1);
    let ids: Vec<(u64, &str, &str)> = records
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["event_id"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [(1, "1", "stdin"), (2, "2", "stdin"), (3, "3", "stdin")]);
    for r in &records {
        let arrived = chrono::DateTime::parse_from_rfc3339(r["arrived"].as_str().unwrap()).unwrap();
        assert!(arrived >= before && arrived <= chrono::Utc::now(), "{r}");
        let shard = r["$meta.shard"].as_str().unwrap_or_else(|| panic!("the partition's metadata is a field: {r}"));
        assert!(files[0].0.starts_with(&format!("from={shard}/")), "{r}");
    }
}
