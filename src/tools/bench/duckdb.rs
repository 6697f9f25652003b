//! The DuckDB peer: the same job in SQL (`bench/duckdb_orders.py`) on the same files, measured
//! as a backend of its own.

use std::path::Path;

use super::{Bench, Measurement};
use crate::error::{Error, Result};

/// The same job in DuckDB SQL, run by [`Bench::duckdb_python`].
pub const DUCKDB_SCRIPT: &str = include_str!("../../../bench/duckdb_orders.py");

/// Run the DuckDB peer on the generated files in `input_dir`, after the same cold start (its
/// own empty working directory), and measure it as a `duckdb` backend: without its table when
/// the bench runs without the sink.
pub(super) fn duckdb(python: &str, dir: &Path, input_dir: &Path, bench: &Bench) -> Result<Measurement> {
    let script = dir.join("duckdb_orders.py");
    let fail = |what: String| Error::config("bench", what);
    std::fs::write(&script, DUCKDB_SCRIPT).map_err(|e| fail(format!("cannot write {}: {e}", script.display())))?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(input_dir)
        .arg(dir.join("duckdb"))
        .args((!bench.sink).then_some("--no-table"))
        .output()
        .map_err(|e| fail(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("{python} {}: {}", script.display(), err.lines().last().unwrap_or_default())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let peer: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .map_err(|e| fail(format!("unexpected output from the DuckDB script: {e}")))?;
    let num = |k: &str| peer[k].as_f64().unwrap_or(0.0);
    let seconds = num("seconds");
    let records = num("records") as u64;
    Ok(Measurement {
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        keys: bench.keys.as_str().into(),
        run: "load".into(),
        records,
        input_bytes: std::fs::metadata(input_dir.join("orders.csv")).map_or(0, |m| m.len()),
        workers: 0,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        seconds,
        records_per_s: if seconds > 0.0 { records as f64 / seconds } else { 0.0 },
        cpu_s: num("cpu_s"),
        peak_rss_mib: num("peak_rss_mib"),
        plan_ms: 0,
        work_ms: 0,
        gather_ms: 0,
        sink: bench.sink,
        written: num("written") as u64,
        rejected: num("rejected") as u64,
        backend: format!("duckdb {}", peer["duckdb"].as_str().unwrap_or_default()),
        api_calls: 0,
        api_calls_per_record: 0.0,
        api_calls_by_operation: String::new(),
        lambda_gb_s: 0.0,
        predicted_api_calls: 0,
        predicted_by_operation: String::new(),
        decoded_bytes: 0,
        ..Measurement::default()
    })
}
