//! A short run of `sluicebox bench` (the full one is a command a person runs): the realistic
//! data it generates, the update run, and the measurements file it appends to.
#![cfg(feature = "bench")]

use std::process::Command;

fn bench(dir: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["bench", "--records", "20000", "--json", "--no-duckdb", "--data-dir"])
        .arg(dir.join("bench"))
        .arg("--out")
        .arg(dir.join("m.csv"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn bench_loads_random_keys_with_rejects_then_updates_a_share_and_records_both() {
    let dir = tempfile::tempdir().unwrap();
    // A measurements file from before key orders were measured is upgraded in place.
    std::fs::write(dir.path().join("m.csv"), "at,records,seconds\n2026-11-22T00:00:00Z,1000000,5.1\n").unwrap();
    let runs = bench(dir.path(), &["--update-share", "0.1", "--sink-only"]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (load, update) = (&runs[0], &runs[1]);
    assert_eq!((load["run"].as_str(), load["keys"].as_str()), (Some("load"), Some("random")));
    assert_eq!(load["records"], 20_000);
    assert_eq!(load["rejected"], 100, "0.5% of the orders are bad, in four ways");
    assert_eq!(load["written"], 19_900);
    let updated = update["records"].as_u64().unwrap();
    assert!((1_500..2_500).contains(&updated), "about a tenth of the keys: {updated}");
    assert_eq!(update["run"], "update");

    // The generated orders are not in key order, and the reference is in another order.
    let input = dir.path().join("bench/input-random");
    let keys = |file: &str| -> Vec<u64> {
        let text = std::fs::read_to_string(input.join(file)).unwrap();
        text.lines().skip(1).take(1000).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect()
    };
    let (orders, reference) = (keys("orders.csv"), keys("financial.csv"));
    assert!(orders.windows(2).filter(|w| w[0] < w[1]).count() < 600, "orders keys look sorted");
    assert_ne!(orders, reference, "the reference is in the orders' order");

    let sequential = bench(dir.path(), &["--keys", "sequential", "--sink-only"]);
    assert_eq!((sequential[0]["keys"].as_str(), sequential[0]["rejected"].as_u64()), (Some("sequential"), Some(0)));

    let csv = std::fs::read_to_string(dir.path().join("m.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_string).collect();
    assert!(header.contains(&"keys".to_string()) && header.contains(&"run".to_string()), "{header:?}");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4, "the old row and three new ones");
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!((&rows[0][at("keys")], &rows[0][at("run")], &rows[0][at("seconds")]), ("sequential", "load", "5.1"));
}

/// With DuckDB at hand (`scripts/test` installs it and names its Python in
/// `SLUICEBOX_PYTHON`), the bench runs the same job in SQL on the same files, after its own,
/// and both agree on what was written and rejected.
#[test]
fn bench_compares_with_duckdb_doing_the_same_job() {
    let python = std::env::var("SLUICEBOX_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = Command::new(&python).args(["-c", "import duckdb"]).status().is_ok_and(|s| s.success());
    assert!(available, "{python} cannot import duckdb: run scripts/test, which installs it");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["bench", "--records", "20000", "--json", "--python", &python, "--data-dir"])
        .arg(dir.path().join("bench"))
        .arg("--out")
        .arg(dir.path().join("m.csv"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // With the sink and DuckDB with its table, then both without.
    assert_eq!(runs.len(), 4, "{runs:?}");
    for (pair, sink) in runs.chunks(2).zip([true, false]) {
        let (ours, peer) = (&pair[0], &pair[1]);
        assert!(peer["backend"].as_str().unwrap().starts_with("duckdb"), "{peer}");
        assert_eq!((ours["sink"].as_bool(), peer["sink"].as_bool()), (Some(sink), Some(sink)), "{ours} {peer}");
        assert_eq!(
            (peer["written"].as_u64(), peer["rejected"].as_u64()),
            (ours["written"].as_u64(), ours["rejected"].as_u64())
        );
        assert!(peer["seconds"].as_f64().unwrap() > 0.0);
        // CPU time is measured on both sides (a job of 20,000 records takes some).
        assert!(ours["cpu_s"].as_f64().unwrap() > 0.0 && peer["cpu_s"].as_f64().unwrap() > 0.0, "{ours} {peer}");
        let duck = dir.path().join("bench/duckdb");
        let lines = std::fs::read_to_string(duck.join("output.csv")).unwrap().lines().count() as u64;
        assert_eq!(lines, ours["written"].as_u64().unwrap() + 1, "DuckDB's merged output");
    }
    // A person reads both comparisons, with CPU per record beside the time.
    let out = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["bench", "--records", "2000", "--python", &python, "--data-dir"])
        .arg(dir.path().join("bench"))
        .arg("--out")
        .arg(dir.path().join("m.csv"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    for sink in ["with the sink", "without the sink"] {
        let line = said.lines().find(|l| l.starts_with(sink)).unwrap_or_else(|| panic!("no {sink:?} in {said}"));
        assert!(line.contains("DuckDB's time") && line.contains("µs per record"), "{line}");
    }
}

/// `--gzip` runs the job again on the orders compressed with gzip: the same records written
/// and rejected, each byte decoded about once (at most one chunk more than the input).
#[test]
fn bench_gzip_reads_the_compressed_orders_decoding_each_byte_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let runs = bench(dir.path(), &["--gzip", "--no-sink"]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (plain, gz) = (&runs[0], &runs[1]);
    assert_eq!(gz["run"], "load-gzip");
    assert_eq!((&gz["written"], &gz["rejected"]), (&plain["written"], &plain["rejected"]));
    let (size, compressed) = (plain["input_bytes"].as_u64().unwrap(), gz["input_bytes"].as_u64().unwrap());
    assert!(compressed * 2 < size, "{compressed} bytes of gzip for {size}");
    let decoded = gz["decoded_bytes"].as_u64().unwrap();
    assert!((size - 100..=size + (4 << 20)).contains(&decoded), "{decoded} bytes decoded for {size}");
    assert_eq!(plain["decoded_bytes"], 0);
}

/// A short `bench --stream`: each run reports its rate beside the child's peak memory; the
/// file runs put every event into files, the SQLite run upserts every event by its id and
/// writes no file; with DuckDB at hand, each file run is paired with DuckDB's partitioned
/// `COPY` of the same events and the ratio of their times.
#[test]
fn bench_stream_measures_files_and_the_sqlite_sink_beside_duckdb() {
    let python = std::env::var("SLUICEBOX_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = Command::new(&python).args(["-c", "import duckdb"]).status().is_ok_and(|s| s.success());
    assert!(available, "{python} cannot import duckdb: run scripts/test, which installs it");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["bench", "--stream", "--records", "5000", "--json", "--python", &python, "--data-dir"])
        .arg(dir.path().join("bench"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let formats: Vec<&str> = runs.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["jsonl", "parquet", "sqlite"]);
    for run in &runs {
        assert_eq!(run["records"], 5000, "{run}");
        assert!(run["peak_rss_mib"].as_f64().unwrap() > 1.0 && run["records_per_s"].as_f64().unwrap() > 0.0, "{run}");
    }
    for files in &runs[..2] {
        assert!(files["files"].as_u64().unwrap() >= 20 && files["upserted"] == 0, "{files}");
        let peer = &files["duckdb"];
        assert!(peer["files"].as_u64().unwrap() >= 20 && peer["peak_rss_mib"].as_f64().unwrap() > 1.0, "{files}");
        let ratio = files["seconds"].as_f64().unwrap() / peer["seconds"].as_f64().unwrap();
        assert!((ratio - peer["ratio"].as_f64().unwrap()).abs() < 1e-9, "{files}");
    }
    let sink = &runs[2];
    assert_eq!((sink["files"].as_u64(), sink["upserted"].as_u64()), (Some(0), Some(5000)), "{sink}");
    assert!(sink["duckdb"].is_null(), "DuckDB has no run into SQLite: {sink}");
    let ids: std::collections::HashSet<u64> = std::fs::read_to_string(dir.path().join("bench/events-5000.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5000, "every event has an id of its own");
}
