//! `sluicebox bench`: synthetic orders through the orders pipeline, measured.
//!
//! The tool behind the binary's `bench` command (feature `bench`, on by default), not library
//! API: what it exports may change with the tool.
//!
//! This file runs the measured jobs ([`run`]); the orders are generated in `orders`, a
//! [`Measurement`] and the measurements file are in `measurement`, CPU time and peak memory
//! are read from /proc in `proc`, the DuckDB peer runs in `duckdb`, and the AWS and Lambda runs
//! are set up in `on_aws`. [`stream`] measures `sluicebox stream`.

mod duckdb;
mod measurement;
mod on_aws;
mod orders;
mod proc;
pub mod stream;

use std::path::Path;

use crate::backends::cloud::Cloud;
use crate::batch::job::{self, RunOptions};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::JobConfig;

use self::duckdb::duckdb;
pub use self::duckdb::DUCKDB_SCRIPT;
use self::measurement::append_csv;
pub use self::measurement::Measurement;
#[cfg(feature = "lambda")]
use self::on_aws::through_lambda;
pub use self::on_aws::LAMBDA_MEMORY_MB;
use self::on_aws::{aws_backends, predict};
pub use self::orders::{generate, generate_update, KeyOrder, REJECT_SHARE};
pub use self::proc::{cpu_seconds, peak_rss_mib, peak_rss_mib_of, reset_peak_rss};

/// The orders example's job definition, which the bench runs.
pub const ORDERS_JOB: &str = include_str!("../../../examples/orders/job.toml");

/// What `sluicebox bench` runs.
#[derive(Debug, Clone)]
pub struct Bench {
    /// Orders to generate.
    pub records: u64,
    /// Concurrent workers.
    pub workers: usize,
    /// Whether records are upserted into the sink.
    pub sink: bool,
    /// On S3, SQS and DynamoDB instead of the local backends.
    pub aws: bool,
    /// On AWS, through the Lambda handlers (`workers` functions at once, this process
    /// playing the Lambda service); implies `aws`.
    pub lambda: bool,
    /// How keys are ordered.
    pub keys: KeyOrder,
    /// After the load, a second job updating this share of the keys in the loaded table
    /// (0: none; local backends only).
    pub update_share: f64,
    /// Also run the job on the orders compressed with gzip (level 6, as `gzip` writes them),
    /// right after the plain input (local backends only).
    pub gzip: bool,
    /// On AWS: the DynamoDB sink ordered (a conditional `PutItem` per item) instead of 25
    /// items per `BatchWriteItem` (as the API-call measurements in BENCHMARKS.md are made).
    pub ordered: bool,
    /// On AWS: the sink's requests in flight (`[sink] in_flight`; `None`: the mode's default).
    pub in_flight: Option<usize>,
    /// The Python that runs the DuckDB peer (`bench/duckdb_orders.py`) on the same files
    /// after the load, when it can import `duckdb` (`None`: no comparison).
    pub duckdb_python: Option<String>,
}

/// Generate the orders in `dir` (kept for later runs of the same size and key order), run
/// the orders job on them as `bench` says, and append each measurement (the load, then the
/// update when asked for) to the CSV at `out`. With `bench.aws`, the job runs on S3, SQS and
/// DynamoDB (ledger and sink) as the AWS configuration in `cloud` names them (an emulator in
/// tests): new resources are created for each run.
pub async fn run(dir: &Path, bench: &Bench, cloud: &Cloud, out: &Path) -> Result<Vec<Measurement>> {
    let n = bench.records;
    let input_dir = dir.join(format!("input-{}", bench.keys.as_str()));
    let marker = input_dir.join(format!(".generated-{n}"));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&input_dir);
        let (d, keys) = (input_dir.clone(), bench.keys);
        tokio::task::spawn_blocking(move || generate(&d, n, keys))
            .await
            .map_err(|e| Error::internal("bench", "generator", e))??;
        let _ = std::fs::write(&marker, b"");
    }
    let mut config = JobConfig::from_toml(ORDERS_JOB, "examples/orders/job.toml")?;
    config.chunking.records = None;
    if !bench.sink {
        config.sink.kind = "none".into();
    }
    let run_dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let (engine, input) = if bench.aws {
        aws_backends(&input_dir, &run_dir, &mut config, bench, cloud).await?
    } else {
        (Engine::local(&run_dir)?, input_dir.join("orders.csv").display().to_string())
    };
    let spec = config.clone().validate(&input_dir)?;
    let (predicted, forecast_gb_s) = match bench.aws {
        true => predict(&engine, &spec, &input, bench, cloud).await?,
        false => (crate::backends::calls::ApiCalls::new(), 0.0),
    };
    let predicted_json = serde_json::to_string(&predicted).unwrap_or_default();
    let predicted: u64 = predicted.values().sum();
    #[cfg(not(feature = "lambda"))]
    let _ = forecast_gb_s;
    #[cfg(feature = "lambda")]
    if bench.lambda {
        let mut m = through_lambda(&engine, &config, &input, &run_dir, bench, cloud).await?;
        (m.predicted_api_calls, m.predicted_by_operation) = (predicted, predicted_json.clone());
        m.forecast_lambda_gb_s = forecast_gb_s;
        let measured = vec![m];
        for m in &measured {
            append_csv(out, m)?;
        }
        return Ok(measured);
    }
    let mut measured = vec![measure(&engine, &spec, &input, bench, "load").await?];
    (measured[0].predicted_api_calls, measured[0].predicted_by_operation) = (predicted, predicted_json);
    if bench.gzip && !bench.aws {
        let (plain, gz) = (input_dir.join("orders.csv"), input_dir.join("orders.csv.gz"));
        if !gz.exists() {
            let (p, g) = (plain.clone(), gz.clone());
            tokio::task::spawn_blocking(move || gzip_file(&p, &g))
                .await
                .map_err(|e| Error::internal("bench", "gzip", e))??;
        }
        let gz_dir = dir.join("run-gzip");
        let _ = std::fs::remove_dir_all(&gz_dir);
        let engine = Engine::local(&gz_dir)?;
        measured.push(measure(&engine, &spec, &gz.display().to_string(), bench, "load-gzip").await?);
    }
    if let Some(python) = bench.duckdb_python.as_deref().filter(|_| !bench.aws) {
        match duckdb(python, dir, &input_dir, bench) {
            Ok(peer) => measured.push(peer),
            Err(e) => tracing::warn!("no comparison with DuckDB: {e}"),
        }
    }
    if bench.update_share > 0.0 && !bench.aws {
        let (d, share) = (input_dir.clone(), bench.update_share);
        tokio::task::spawn_blocking(move || generate_update(&d, share))
            .await
            .map_err(|e| Error::internal("bench", "generator", e))??;
        let update = input_dir.join("orders-update.csv").display().to_string();
        measured.push(measure(&engine, &spec, &update, bench, "update").await?);
    }
    for m in &measured {
        append_csv(out, m)?;
    }
    Ok(measured)
}

/// `plain` compressed with gzip at level 6 into `gz`.
fn gzip_file(plain: &Path, gz: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::internal("bench", format!("compressing {}", plain.display()), e);
    let mut from = std::fs::File::open(plain).map_err(io)?;
    let to = std::io::BufWriter::new(std::fs::File::create(gz).map_err(io)?);
    let mut enc = flate2::write::GzEncoder::new(to, flate2::Compression::new(6));
    std::io::copy(&mut from, &mut enc).map_err(io)?;
    enc.finish().map_err(io)?.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(())
}

/// Run the job on `input` and measure it.
async fn measure(
    engine: &Engine,
    spec: &crate::engine::spec::JobSpec,
    input: &str,
    bench: &Bench,
    run: &str,
) -> Result<Measurement> {
    let args = [input.to_string()];
    let inputs = crate::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &args,
        spec.input.format,
        spec.input.compression,
    )
    .await?;
    let input_bytes = inputs.iter().map(|i| i.size).sum();
    let opts = RunOptions { workers: bench.workers, force: true, ..RunOptions::default() };
    // The peak counts from here: the generator's memory (all the keys, to shuffle them) is not
    // the job's.
    reset_peak_rss();
    let cpu = cpu_seconds();
    let summary = job::run(engine, spec, inputs, &opts).await?;
    let cpu_s = cpu_seconds() - cpu;
    let backend = if bench.aws { "aws" } else { "local" };
    let seconds = summary.timings.duration_ms as f64 / 1000.0;
    Ok(Measurement::of(
        &summary,
        bench,
        run,
        input_bytes,
        bench.workers,
        seconds,
        cpu_s,
        backend,
        summary.api_calls.clone(),
    ))
}
