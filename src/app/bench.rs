//! `sluicebox bench`: the measured job and its peer, or the stream measured; with the ratios
//! a person reads after the measurements.

use std::path::Path;

use crate::backends::cloud::Cloud;
use crate::error::{Error, Result};
use crate::tools::bench::stream::{Destination, StreamMeasurement};
use crate::tools::bench::{self, Bench, Measurement};

/// Whether `python` can import `duckdb` (the peer runs only then).
pub fn has_duckdb(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import duckdb"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `sluicebox bench --stream`: `records` events generated once in `data_dir`, then piped
/// through `sluicebox stream` into each of `into` (gzip JSON Lines files, Parquet files, the
/// SQLite sink); each file run is followed by DuckDB's `COPY` of the same events when
/// `duckdb_python` can run it.
pub fn bench_stream(
    data_dir: &Path,
    records: u64,
    into: &[Destination],
    duckdb_python: Option<&str>,
) -> Result<Vec<StreamMeasurement>> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::config("--data-dir", format!("cannot create {}: {e}", data_dir.display())))?;
    let events = data_dir.join(format!("events-{records}.jsonl"));
    if !events.exists() {
        let partial = data_dir.join(format!("events-{records}.jsonl.partial"));
        bench::stream::generate(&partial, records)?;
        std::fs::rename(&partial, &events)
            .map_err(|e| Error::internal("bench", format!("naming {}", events.display()), e))?;
    }
    let exe = std::env::current_exe().map_err(|e| Error::config("sluicebox", e.to_string()))?;
    let mut measured = Vec::new();
    for &to in into {
        let mut m = bench::stream::run(&exe, data_dir, &events, to)?;
        if let Some(python) = duckdb_python {
            match bench::stream::duckdb(python, data_dir, &events, &m) {
                Ok(peer) => m.duckdb = peer,
                Err(e) => tracing::warn!("no comparison with DuckDB: {e}"),
            }
        }
        measured.push(m);
    }
    Ok(measured)
}

/// `sluicebox bench`: each of `runs` measured in turn (each measurement also appended to
/// `out`), and lines comparing them: sluicebox's time and CPU per record against DuckDB's, with
/// the sink and without it; the gzip input's time against the plain one's.
pub async fn bench_job(data_dir: &Path, runs: &[Bench], out: &Path) -> Result<(Vec<Measurement>, Vec<String>)> {
    let mut measured = Vec::new();
    for what in runs {
        measured.extend(bench::run(data_dir, what, &Cloud::lazy(), out).await?);
    }
    let mut notes = Vec::new();
    let per_record = |m: &Measurement| m.cpu_s * 1e6 / m.records.max(1) as f64;
    for sink in [true, false] {
        let ours = measured.iter().find(|m| m.run == "load" && m.sink == sink && !m.backend.starts_with("duckdb"));
        let peer = measured.iter().find(|m| m.sink == sink && m.backend.starts_with("duckdb"));
        if let (Some(ours), Some(peer)) = (ours, peer) {
            notes.push(format!(
                "{}: sluicebox takes {:.2}x DuckDB's time ({:.2} s against {:.2} s), CPU {:.2} µs per record against {:.2}",
                if sink { "with the sink" } else { "without the sink" },
                ours.seconds / peer.seconds.max(1e-9),
                ours.seconds,
                peer.seconds,
                per_record(ours),
                per_record(peer)
            ));
        }
    }
    let load = measured.iter().find(|m| m.run == "load" && !m.backend.starts_with("duckdb"));
    let gzip = measured.iter().find(|m| m.run == "load-gzip");
    if let (Some(plain), Some(gz)) = (load, gzip) {
        notes.push(format!(
            "the gzip input ({} bytes) takes {:.2}x the plain input's time; {} bytes decoded for {} plain bytes ({:.4}x)",
            gz.input_bytes,
            gz.seconds / plain.seconds.max(1e-9),
            gz.decoded_bytes,
            plain.input_bytes,
            gz.decoded_bytes as f64 / plain.input_bytes.max(1) as f64
        ));
    }
    Ok((measured, notes))
}
