//! `sluicebox bench`: synthetic orders through the orders pipeline, measured.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::cloud::Cloud;
use crate::config::JobConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::job::{self, RunOptions};

/// The orders example's job definition, which the bench runs.
pub const ORDERS_JOB: &str = include_str!("../examples/orders/job.toml");

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// When, RFC 3339.
    pub at: String,
    /// Records processed.
    pub records: u64,
    /// Input size in bytes.
    pub input_bytes: u64,
    /// Workers.
    pub workers: usize,
    /// Cores on this machine.
    pub cores: usize,
    /// Wall time of the job, seconds.
    pub seconds: f64,
    /// Records per second, end to end (plan + work + gather).
    pub records_per_s: f64,
    /// Peak resident set size of this process, MiB (VmHWM).
    pub peak_rss_mib: f64,
    /// Phase times, ms.
    pub plan_ms: i64,
    /// Phase times, ms.
    pub work_ms: i64,
    /// Phase times, ms.
    pub gather_ms: i64,
    /// Whether records were upserted into the SQLite sink.
    pub sink: bool,
    /// Records written and rejected (a check that the run was whole).
    pub written: u64,
    /// Rejected records.
    pub rejected: u64,
    /// `local` (directory, SQLite, in-process queue) or `aws` (S3, SQS, DynamoDB).
    pub backend: String,
    /// Cloud API requests the job made (0 on the local backend).
    pub api_calls: u64,
    /// API requests per record.
    pub api_calls_per_record: f64,
    /// The requests by service and operation, as JSON.
    pub api_calls_by_operation: String,
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sink = match (self.sink, self.backend.as_str()) {
            (false, _) => "no sink",
            (true, "aws") => "S3 + SQS + DynamoDB ledger and sink",
            (true, _) => "SQLite sink",
        };
        writeln!(
            f,
            "{} records ({:.1} MB) with {} workers on {} cores, {sink}",
            self.records,
            self.input_bytes as f64 / 1e6,
            self.workers,
            self.cores
        )?;
        writeln!(f, "  {:.0} records/s end to end ({:.2} s)", self.records_per_s, self.seconds)?;
        writeln!(f, "  phases: plan {} ms, work {} ms, gather {} ms", self.plan_ms, self.work_ms, self.gather_ms)?;
        write!(f, "  peak RSS {:.0} MiB; written {}, rejected {}", self.peak_rss_mib, self.written, self.rejected)?;
        if self.api_calls > 0 {
            write!(
                f,
                "\n  {} API calls, {:.4} per record: {}",
                self.api_calls, self.api_calls_per_record, self.api_calls_by_operation
            )?;
        }
        Ok(())
    }
}

const COUNTRIES: &[(&str, &str)] = &[
    ("Azerbaijan", "Middle East and North Africa"),
    ("Panama", "Central America and the Caribbean"),
    ("Sao Tome and Principe", "Sub-Saharan Africa"),
    ("Norway", "Europe"),
    ("Japan", "Asia"),
    ("Australia", "Australia and Oceania"),
    ("Canada", "North America"),
];
const ITEMS: &[&str] = &["Snacks", "Cosmetics", "Fruits", "Personal Care", "Household", "Office Supplies", "Baby Food"];

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Write `n` synthetic orders and their financial reference rows, streaming.
pub fn generate(dir: &Path, n: u64) -> Result<()> {
    let io =
        |e: std::io::Error| Error::config("--data-dir", format!("cannot write bench data in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut orders = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("orders.csv")).map_err(io)?);
    let mut fin = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("financial.csv")).map_err(io)?);
    writeln!(orders, "uuid,Country,Item Type,Sales Channel,Order Priority,Order Date,Region,Ship Date").map_err(io)?;
    writeln!(fin, "uuid,unitsSold,unitPrice,unitCost,totalRevenue,totalCost,totalProfit").map_err(io)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let uuid = 100_000_000 + i;
        let (country, region) = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
        let item = ITEMS[rng.below(ITEMS.len() as u64) as usize];
        let channel = if rng.below(2) == 0 { "Online" } else { "Offline" };
        let priority = ["C", "H", "L", "M"][rng.below(4) as usize];
        let (m, d, y) = (1 + rng.below(12), 1 + rng.below(28), 10 + rng.below(10));
        let ship_d = 1 + rng.below(28);
        let quoted = if country.contains(' ') { format!("\"{country}\"") } else { country.to_string() };
        writeln!(orders, "{uuid},{quoted},{item},{channel},{priority},{m}/{d}/{y},{region},{m}/{ship_d}/{y}")
            .map_err(io)?;
        let units = 1 + rng.below(10_000);
        let price = (1 + rng.below(60_000)) as f64 / 100.0;
        let cost = (price * 0.7 * 100.0).round() / 100.0;
        let revenue = (units as f64 * price * 100.0).round() / 100.0;
        let total_cost = (units as f64 * cost * 100.0).round() / 100.0;
        writeln!(fin, "{uuid},{units},{price},{cost},{revenue},{total_cost},{:.2}", revenue - total_cost)
            .map_err(io)?;
    }
    orders.flush().map_err(io)?;
    fin.flush().map_err(io)?;
    Ok(())
}

/// Peak resident set size of this process in MiB, from /proc (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Generate `n` orders in `dir`, run the orders job on them with `workers`, and append the
/// measurement to the CSV at `out`.
/// With `aws`, the job runs on S3, SQS and DynamoDB (ledger and sink) as the AWS
/// configuration in `cloud` names them (an emulator in tests): new resources are created for
/// each run.
pub async fn run(
    dir: &Path,
    n: u64,
    workers: usize,
    sink: bool,
    aws: bool,
    cloud: &Cloud,
    out: &Path,
) -> Result<Measurement> {
    let input_dir = dir.join("input");
    let marker = input_dir.join(format!(".generated-{n}"));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&input_dir);
        let d = input_dir.clone();
        tokio::task::spawn_blocking(move || generate(&d, n))
            .await
            .map_err(|e| Error::backend("bench", "generator", e))??;
        let _ = std::fs::write(&marker, b"");
    }
    let spec = JobConfig::from_toml(ORDERS_JOB, "examples/orders/job.toml")?;
    let mut config = spec;
    config.chunking.records = None;
    if !sink {
        config.sink.kind = crate::config::SinkKind::None;
    }
    let run_dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let (engine, input) = if aws {
        aws_backends(&input_dir, &run_dir, &mut config, cloud).await?
    } else {
        (Engine::local(&run_dir)?, input_dir.join("orders.csv").display().to_string())
    };
    let spec = config.validate(&input_dir)?;
    let inputs =
        crate::bucket::resolve_inputs(engine.inputs.as_ref(), &[input], spec.input.format, spec.input.compression)
            .await?;
    let input_bytes = inputs.iter().map(|i| i.size).sum();
    let opts = RunOptions { workers, force: true, ..RunOptions::default() };
    let summary = job::run(&engine, &spec, inputs, &opts).await?;
    let seconds = summary.timings.duration_ms as f64 / 1000.0;
    let phase = |k: &str| summary.timings.phases.get(k).copied().unwrap_or(0);
    let m = Measurement {
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        records: summary.records.total,
        input_bytes,
        workers,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        seconds,
        records_per_s: summary.records_per_s,
        peak_rss_mib: peak_rss_mib(),
        plan_ms: phase("plan_ms"),
        work_ms: phase("work_ms"),
        gather_ms: phase("gather_ms"),
        sink,
        written: summary.records.written,
        rejected: summary.records.rejected,
        backend: if aws { "aws" } else { "local" }.into(),
        api_calls: summary.api_calls.values().sum(),
        api_calls_per_record: summary.api_calls_per_record,
        api_calls_by_operation: serde_json::to_string(&summary.api_calls).unwrap_or_default(),
    };
    append_csv(out, &m)?;
    Ok(m)
}

/// Create a bucket, queue and tables for one AWS run, upload the input and the reference,
/// and point `config` at them.
#[cfg(feature = "aws")]
async fn aws_backends(
    input_dir: &Path,
    run_dir: &Path,
    config: &mut JobConfig,
    cloud: &Cloud,
) -> Result<(Engine, String)> {
    let name = format!("sluicebox-bench-{}", chrono::Utc::now().timestamp_millis());
    let conf = cloud.sdk("--aws")?;
    let setup = crate::setup::Setup {
        bucket: Some(format!("s3://{name}")),
        queue: Some(format!("sqs://{name}")),
        ledger: Some(format!("dynamodb://{name}-ledger")),
        sink: Some(format!("dynamodb://{name}-sink")),
        max_receives: 5,
        visibility: crate::queue::DEFAULT_VISIBILITY,
    };
    crate::setup::setup(conf, &setup).await?;
    let store = crate::bucket::open(&format!("s3://{name}"), cloud)?;
    for (file, key) in [("orders.csv", "in/orders.csv"), ("financial.csv", "ref/financial.csv")] {
        crate::bucket::upload_file(store.clone(), &input_dir.join(file), key).await?;
    }
    if let Some(e) = config.enrich.as_mut() {
        e.source = format!("s3://{name}/ref/financial.csv");
    }
    if config.sink.kind != crate::config::SinkKind::None {
        config.sink.kind = crate::config::SinkKind::Dynamodb;
        config.sink.table = Some(format!("{name}-sink"));
    }
    let urls = crate::engine::BackendUrls {
        bucket: Some(format!("s3://{name}/out")),
        queue: setup.queue.clone(),
        ledger: setup.ledger.clone(),
        visibility: setup.visibility,
    };
    let input = format!("s3://{name}/in/orders.csv");
    Ok((Engine::with_backends(run_dir, &urls, &input, cloud.clone()).await?, input))
}

#[cfg(not(feature = "aws"))]
async fn aws_backends(_: &Path, _: &Path, _: &mut JobConfig, _: &Cloud) -> Result<(Engine, String)> {
    Err(Error::config("--aws", "this build lacks the `aws` feature"))
}

fn append_csv(out: &Path, m: &Measurement) -> Result<()> {
    let io = |e: std::io::Error| Error::config("--out", format!("cannot write {}: {e}", out.display()));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let exists = out.exists();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(io)?;
    let mut w = csv::WriterBuilder::new().has_headers(!exists).from_writer(file);
    w.serialize(m).map_err(|e| Error::backend("csv", format!("cannot write {}", out.display()), e))?;
    w.flush().map_err(io)?;
    Ok(())
}
