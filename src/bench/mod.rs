//! `sluicebox bench`: synthetic orders through the orders pipeline, measured.

pub mod stream;

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
pub const ORDERS_JOB: &str = include_str!("../../examples/orders/job.toml");

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
    /// The Python that runs the DuckDB peer (`bench/duckdb_orders.py`) on the same files
    /// after the load, when it can import `duckdb` (`None`: no comparison).
    pub duckdb_python: Option<String>,
}

/// The same job in DuckDB SQL, run by [`Bench::duckdb_python`].
pub const DUCKDB_SCRIPT: &str = include_str!("../../bench/duckdb_orders.py");

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// When, RFC 3339.
    pub at: String,
    /// `random` or `sequential` keys (see [`KeyOrder`]).
    pub keys: String,
    /// `load` (into an empty table) or `update` (a share of the keys of a loaded table).
    pub run: String,
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
    /// CPU time of the job (user and system, every thread), seconds.
    pub cpu_s: f64,
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
    /// Through Lambda: the functions' billed time, GB-seconds (duration × memory).
    #[serde(default)]
    pub lambda_gb_s: f64,
    /// On AWS: the requests `sluicebox plan` predicted before the run, as the job's summary
    /// counts them (the event source mapping's polls are not the job's).
    #[serde(default)]
    pub predicted_api_calls: u64,
    /// The predicted requests by service and operation, as JSON.
    #[serde(default)]
    pub predicted_by_operation: String,
    /// Bytes decoded from compressed inputs to read their chunks (0 for plain inputs); the
    /// input's size when each byte is decoded once.
    #[serde(default)]
    pub decoded_bytes: u64,
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.backend.starts_with("duckdb") {
            return write!(
                f,
                "{}, the same job in SQL on the same files: {:.0} records/s ({:.2} s; CPU {:.2} s), peak RSS {:.0} MiB; \
                 written {}, rejected {}",
                self.backend,
                self.records_per_s,
                self.seconds,
                self.cpu_s,
                self.peak_rss_mib,
                self.written,
                self.rejected
            );
        }
        let sink = match (self.sink, self.backend.as_str()) {
            (false, _) => "no sink",
            (true, "aws") => "S3 + SQS + DynamoDB ledger and sink",
            (true, "lambda") => "Lambda handlers on S3 + SQS + DynamoDB ledger and sink",
            (true, _) => "SQLite sink",
        };
        writeln!(
            f,
            "{} of {} records ({:.1} MB, {} keys) with {} workers on {} cores, {sink}",
            self.run,
            self.records,
            self.input_bytes as f64 / 1e6,
            self.keys,
            self.workers,
            self.cores
        )?;
        writeln!(
            f,
            "  {:.0} records/s end to end ({:.2} s); CPU {:.2} s, {:.2} µs per record",
            self.records_per_s,
            self.seconds,
            self.cpu_s,
            self.cpu_s * 1e6 / self.records.max(1) as f64
        )?;
        writeln!(f, "  phases: plan {} ms, work {} ms, gather {} ms", self.plan_ms, self.work_ms, self.gather_ms)?;
        write!(f, "  peak RSS {:.0} MiB; written {}, rejected {}", self.peak_rss_mib, self.written, self.rejected)?;
        if self.api_calls > 0 {
            write!(
                f,
                "\n  {} API calls, {:.4} per record: {}",
                self.api_calls, self.api_calls_per_record, self.api_calls_by_operation
            )?;
        }
        if self.predicted_api_calls > 0 {
            let counted: u64 = serde_json::from_str::<crate::calls::ApiCalls>(&self.api_calls_by_operation)
                .map(|c| c.iter().filter(|(op, _)| !op.starts_with("lambda-esm.")).map(|(_, n)| n).sum())
                .unwrap_or(self.api_calls);
            write!(
                f,
                "\n  `sluicebox plan` predicted {} requests of the {counted} the summary counts ({:.3}x)",
                self.predicted_api_calls,
                self.predicted_api_calls as f64 / counted.max(1) as f64
            )?;
        }
        if self.lambda_gb_s > 0.0 {
            write!(
                f,
                "\n  Lambda: {:.1} GB-s, {:.0} GB-s per million records",
                self.lambda_gb_s,
                self.lambda_gb_s * 1e6 / self.records.max(1) as f64
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

/// How the generated keys are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyOrder {
    /// Unique keys in a random order, the reference in another random order, and a share of
    /// rejects: what real files look like.
    #[default]
    Random,
    /// Ascending keys, the reference in the same order, no rejects: the best case.
    Sequential,
}

impl KeyOrder {
    /// Its name in the measurements.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrder::Random => "random",
            KeyOrder::Sequential => "sequential",
        }
    }
}

/// The share of generated orders that are rejected (random key order only): an impossible
/// date, a missing column, an over-long field, a key missing from the reference, in turn.
pub const REJECT_SHARE: f64 = 0.005;

/// One synthetic order's line and its reference row.
struct Order {
    line: String,
    financial: String,
}

fn order(uuid: u64, rng: &mut Rng, reject: Option<u64>) -> Order {
    let (country, region) = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
    let item = ITEMS[rng.below(ITEMS.len() as u64) as usize];
    let channel = if rng.below(2) == 0 { "Online" } else { "Offline" };
    let priority = ["C", "H", "L", "M"][rng.below(4) as usize];
    let (m, d, y) = (1 + rng.below(12), 1 + rng.below(28), 10 + rng.below(10));
    let ship_d = 1 + rng.below(28);
    let quoted = if country.contains(' ') { format!("\"{country}\"") } else { country.to_string() };
    let line = match reject {
        Some(0) => format!("{uuid},{quoted},{item},{channel},{priority},2/30/{y},{region},{m}/{ship_d}/{y}"),
        Some(1) => format!("{uuid},{quoted},{item},{channel},{priority},{m}/{d}/{y},{region}"),
        Some(2) => {
            let long = "X".repeat(60);
            format!("{uuid},{long},{item},{channel},{priority},{m}/{d}/{y},{region},{m}/{ship_d}/{y}")
        }
        _ => format!("{uuid},{quoted},{item},{channel},{priority},{m}/{d}/{y},{region},{m}/{ship_d}/{y}"),
    };
    let units = 1 + rng.below(10_000);
    let price = (1 + rng.below(60_000)) as f64 / 100.0;
    let cost = (price * 0.7 * 100.0).round() / 100.0;
    let revenue = (units as f64 * price * 100.0).round() / 100.0;
    let total_cost = (units as f64 * cost * 100.0).round() / 100.0;
    let financial = format!("{uuid},{units},{price},{cost},{revenue},{total_cost},{:.2}", revenue - total_cost);
    Order { line, financial }
}

/// Write `n` synthetic orders (`orders.csv`) and their financial reference rows
/// (`financial.csv`), keys ordered as `keys` says. Orders stream to disk; with random keys
/// the reference rows are shuffled through bucket files (a share of them in memory at a time),
/// so that the generator's memory does not grow with `n` beyond its keys.
pub fn generate(dir: &Path, n: u64, keys: KeyOrder) -> Result<()> {
    let io =
        |e: std::io::Error| Error::config("--data-dir", format!("cannot write bench data in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut orders = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("orders.csv")).map_err(io)?);
    let mut fin = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("financial.csv")).map_err(io)?);
    writeln!(orders, "uuid,Country,Item Type,Sales Channel,Order Priority,Order Date,Region,Ship Date").map_err(io)?;
    writeln!(fin, "uuid,unitsSold,unitPrice,unitCost,totalRevenue,totalCost,totalProfit").map_err(io)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Keys are 100,000,000 + a permutation of 0..n: unique, nine digits.
    let mut ids: Vec<u32> = (0..n as u32).collect();
    let mut shuffle = fastrand::Rng::with_seed(0x5eed);
    if keys == KeyOrder::Random {
        shuffle.shuffle(&mut ids);
    }
    let every = (1.0 / REJECT_SHARE) as u64;
    // Reference rows go to a random bucket file each; each bucket is then shuffled in memory.
    let buckets = (n / 100_000).clamp(1, 256) as usize;
    let bucket_path = |b: usize| dir.join(format!(".financial-{b}.tmp"));
    let mut financial: Vec<BufWriter<std::fs::File>> = match keys {
        KeyOrder::Random => (0..buckets)
            .map(|b| std::fs::File::create(bucket_path(b)).map(|f| BufWriter::with_capacity(64 << 10, f)))
            .collect::<std::io::Result<_>>()
            .map_err(io)?,
        KeyOrder::Sequential => Vec::new(),
    };
    for (i, id) in (0u64..).zip(&ids) {
        let reject = (keys == KeyOrder::Random && i % every == every / 2).then_some((i / every) % 4);
        let o = order(100_000_000 + u64::from(*id), &mut rng, reject);
        writeln!(orders, "{}", o.line).map_err(io)?;
        match keys {
            KeyOrder::Sequential => writeln!(fin, "{}", o.financial).map_err(io)?,
            // The fourth kind of reject is an order whose key the reference lacks.
            KeyOrder::Random if reject == Some(3) => {}
            KeyOrder::Random => writeln!(financial[shuffle.usize(..buckets)], "{}", o.financial).map_err(io)?,
        }
    }
    // The reference in an order of its own.
    for (b, mut bucket) in financial.into_iter().enumerate() {
        bucket.flush().map_err(io)?;
        drop(bucket);
        let text = std::fs::read_to_string(bucket_path(b)).map_err(io)?;
        let mut rows: Vec<&str> = text.lines().collect();
        shuffle.shuffle(&mut rows);
        for row in rows {
            writeln!(fin, "{row}").map_err(io)?;
        }
        std::fs::remove_file(bucket_path(b)).map_err(io)?;
    }
    orders.flush().map_err(io)?;
    fin.flush().map_err(io)?;
    Ok(())
}

/// Write `orders-update.csv`: a random `share` of the orders in `dir`'s `orders.csv`, in
/// another random order, each with another priority and ship date (a daily update of an
/// existing table). Returns how many.
pub fn generate_update(dir: &Path, share: f64) -> Result<u64> {
    let io =
        |e: std::io::Error| Error::config("--data-dir", format!("cannot write bench data in {}: {e}", dir.display()));
    let text = std::fs::read(dir.join("orders.csv")).map_err(io)?;
    let bad = |e: csv::Error| Error::backend("csv", "orders.csv", e);
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(std::io::Cursor::new(&text[..]));
    let header = rdr.byte_headers().map_err(bad)?.clone();
    let mut pick = fastrand::Rng::with_seed(0xda7);
    // Where each chosen row starts, not the rows: the share may be the whole file, and the
    // memory this holds must not count against the update job measured next.
    let mut chosen = Vec::new();
    let mut row = csv::ByteRecord::new();
    loop {
        let at = rdr.position().clone();
        if !rdr.read_byte_record(&mut row).map_err(bad)? {
            break;
        }
        if pick.f64() < share {
            chosen.push(at);
        }
    }
    pick.shuffle(&mut chosen);
    let file = std::fs::File::create(dir.join("orders-update.csv")).map_err(io)?;
    let mut out = csv::WriterBuilder::new().flexible(true).from_writer(BufWriter::with_capacity(1 << 20, file));
    let fail = |e: csv::Error| Error::backend("csv", "orders-update.csv", e);
    out.write_byte_record(&header).map_err(fail)?;
    for at in &chosen {
        rdr.seek(at.clone()).map_err(bad)?;
        rdr.read_byte_record(&mut row).map_err(bad)?;
        if row.len() == 8 {
            let mut f: Vec<&[u8]> = row.iter().collect();
            let priority = ["C", "H", "L", "M"][pick.usize(0..4)];
            let ship = format!("12/{}/19", 1 + pick.u32(0..28));
            f[4] = priority.as_bytes();
            f[7] = ship.as_bytes();
            out.write_record(&f).map_err(fail)?;
        } else {
            out.write_byte_record(&row).map_err(fail)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(chosen.len() as u64)
}

/// Start counting the peak resident set size anew (Linux; elsewhere it counts from the start),
/// after giving back to the system what the allocator keeps of memory already freed (an
/// earlier job's in the same process, or the generator's), so that the peak is this job's.
pub fn reset_peak_rss() {
    // SAFETY: `mi_collect` takes no pointers; with mimalloc not the global allocator it
    // collects an unused heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// CPU time this process has used (user and system, every thread), seconds, from /proc (0
/// where unavailable).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces): utime is the
    // 12th, stime the 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process in MiB, from /proc (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self").unwrap_or(0.0)
}

/// Peak resident set size of process `pid` (`self`: this one) in MiB, from /proc, while it
/// runs (`None` once it has exited, or where /proc is unavailable).
pub fn peak_rss_mib_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
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
            .map_err(|e| Error::backend("bench", "generator", e))??;
        let _ = std::fs::write(&marker, b"");
    }
    let mut config = JobConfig::from_toml(ORDERS_JOB, "examples/orders/job.toml")?;
    config.chunking.records = None;
    if !bench.sink {
        config.sink.kind = crate::config::SinkKind::None;
    }
    let run_dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let (engine, input) = if bench.aws {
        aws_backends(&input_dir, &run_dir, &mut config, cloud).await?
    } else {
        (Engine::local(&run_dir)?, input_dir.join("orders.csv").display().to_string())
    };
    let spec = config.clone().validate(&input_dir)?;
    let predicted = match bench.aws {
        true => predict(&engine, &spec, &input, bench).await?,
        false => crate::calls::ApiCalls::new(),
    };
    let predicted_json = serde_json::to_string(&predicted).unwrap_or_default();
    let predicted: u64 = predicted.values().sum();
    #[cfg(feature = "lambda")]
    if bench.lambda {
        let mut m = through_lambda(&engine, &config, &input, &run_dir, bench, cloud).await?;
        (m.predicted_api_calls, m.predicted_by_operation) = (predicted, predicted_json.clone());
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
                .map_err(|e| Error::backend("bench", "gzip", e))??;
        }
        let gz_dir = dir.join("run-gzip");
        let _ = std::fs::remove_dir_all(&gz_dir);
        let engine = Engine::local(&gz_dir)?;
        measured.push(measure(&engine, &spec, &gz.display().to_string(), bench, "load-gzip").await?);
    }
    if let Some(python) = bench.duckdb_python.as_deref().filter(|_| !bench.aws && bench.sink) {
        match duckdb(python, dir, &input_dir, bench) {
            Ok(peer) => measured.push(peer),
            Err(e) => tracing::warn!("no comparison with DuckDB: {e}"),
        }
    }
    if bench.update_share > 0.0 && !bench.aws {
        let (d, share) = (input_dir.clone(), bench.update_share);
        tokio::task::spawn_blocking(move || generate_update(&d, share))
            .await
            .map_err(|e| Error::backend("bench", "generator", e))??;
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
    let io = |e: std::io::Error| Error::backend("bench", format!("compressing {}", plain.display()), e);
    let mut from = std::fs::File::open(plain).map_err(io)?;
    let to = std::io::BufWriter::new(std::fs::File::create(gz).map_err(io)?);
    let mut enc = flate2::write::GzEncoder::new(to, flate2::Compression::new(6));
    std::io::copy(&mut from, &mut enc).map_err(io)?;
    enc.finish().map_err(io)?.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(())
}

/// The requests `sluicebox plan` predicts for the bench's AWS run (this process planning and
/// working with `bench.workers`, or the Lambda functions).
async fn predict(
    engine: &Engine,
    spec: &crate::spec::JobSpec,
    input: &str,
    bench: &Bench,
) -> Result<crate::calls::ApiCalls> {
    use crate::forecast::{Deployment, Runner};
    let args = [input.to_string()];
    let inputs =
        crate::bucket::resolve_inputs(engine.inputs.as_ref(), &args, spec.input.format, spec.input.compression).await?;
    let shape = crate::forecast::dry_run(engine, spec, inputs).await?;
    let runner = match bench.lambda {
        true => Runner::Lambda {
            memory_mb: LAMBDA_MEMORY_MB as u32,
            architecture: "arm64".into(),
            concurrency: bench.workers.max(1) as u32,
        },
        false => Runner::Workers { here: bench.workers.max(1) as u32, elsewhere: 0, each: 0 },
    };
    let deployment = Deployment::of(Some(&engine.bucket_url), Some("sqs://"), Some("dynamodb://"), input, runner);
    Ok(crate::forecast::requests(&shape, spec, &deployment))
}

/// Run the DuckDB peer on the generated files in `input_dir`, after the same cold start (its
/// own empty working directory), and measure it as a `duckdb` backend.
fn duckdb(python: &str, dir: &Path, input_dir: &Path, bench: &Bench) -> Result<Measurement> {
    let script = dir.join("duckdb_orders.py");
    let fail = |what: String| Error::config("bench", what);
    std::fs::write(&script, DUCKDB_SCRIPT).map_err(|e| fail(format!("cannot write {}: {e}", script.display())))?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(input_dir)
        .arg(dir.join("duckdb"))
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
        sink: true,
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
    })
}

/// Run the job on `input` and measure it.
async fn measure(
    engine: &Engine,
    spec: &crate::spec::JobSpec,
    input: &str,
    bench: &Bench,
    run: &str,
) -> Result<Measurement> {
    let args = [input.to_string()];
    let inputs =
        crate::bucket::resolve_inputs(engine.inputs.as_ref(), &args, spec.input.format, spec.input.compression).await?;
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

impl Measurement {
    /// The measurement of a job that ended with `summary`, its requests `calls`.
    #[allow(clippy::too_many_arguments)]
    fn of(
        summary: &crate::job::Summary,
        bench: &Bench,
        run: &str,
        input_bytes: u64,
        workers: usize,
        seconds: f64,
        cpu_s: f64,
        backend: &str,
        calls: crate::calls::ApiCalls,
    ) -> Measurement {
        let phase = |k: &str| summary.timings.phases.get(k).copied().unwrap_or(0);
        let total: u64 = calls.values().sum();
        Measurement {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            keys: bench.keys.as_str().into(),
            run: run.into(),
            records: summary.records.total,
            input_bytes,
            workers,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            seconds,
            records_per_s: summary.records.total as f64 / seconds.max(1e-9),
            cpu_s,
            peak_rss_mib: peak_rss_mib(),
            plan_ms: phase("plan_ms"),
            work_ms: phase("work_ms"),
            gather_ms: phase("gather_ms"),
            sink: bench.sink,
            written: summary.records.written,
            rejected: summary.records.rejected,
            backend: backend.into(),
            api_calls: total,
            api_calls_per_record: total as f64 / summary.records.total.max(1) as f64,
            api_calls_by_operation: serde_json::to_string(&calls).unwrap_or_default(),
            lambda_gb_s: 0.0,
            predicted_api_calls: 0,
            predicted_by_operation: String::new(),
            decoded_bytes: summary
                .inputs
                .iter()
                .filter(|i| i.decoding != crate::job::Decoding::Range)
                .map(|i| i.decoded_bytes)
                .sum(),
        }
    }
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
        // 25 items per BatchWriteItem, as the API-call measurements in BENCHMARKS.md are
        // made; the ordered default writes one conditional PutItem per item.
        config.sink.ordered = false;
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

/// Memory of a task function, MB (the template's default: one full vCPU).
pub const LAMBDA_MEMORY_MB: f64 = 1769.0;

/// Run the job through the Lambda handlers on the resources [`aws_backends`] made: upload the
/// job file, hand on-object the S3 event of the input, then play the event source mapping for
/// `bench.workers` on-task functions at once (batches of one task, as the template sets),
/// deleting what a handler did not report failed. The API calls counted include the
/// mapping's receives and deletes; GB-seconds are the invocations' wall time × memory (on
/// this machine's shared cores: an upper bound of what one vCPU each would take).
#[cfg(feature = "lambda")]
async fn through_lambda(
    engine: &Engine,
    config: &JobConfig,
    input: &str,
    run_dir: &Path,
    bench: &Bench,
    cloud: &Cloud,
) -> Result<Measurement> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let bucket =
        input.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(b, _)| b.to_string()).unwrap_or_default();
    let text = toml::to_string(config).map_err(|e| Error::backend("toml", "job file", e))?;
    let store = crate::bucket::open(&format!("s3://{bucket}"), cloud)?;
    crate::bucket::put(store.as_ref(), "config/job.toml", text.into_bytes()).await?;
    let head = crate::bucket::get_opt_head(store.as_ref(), "in/orders.csv")
        .await?
        .ok_or_else(|| Error::NotFound(format!("s3://{bucket}/in/orders.csv")))?;
    let settings = |n: usize| {
        crate::lambda::Settings::from_vars(|v| {
            Some(match v {
                "SLUICEBOX_BUCKET" => format!("s3://{bucket}/out"),
                "SLUICEBOX_QUEUE" => format!("sqs://{bucket}"),
                "SLUICEBOX_LEDGER" => format!("dynamodb://{bucket}-ledger"),
                "SLUICEBOX_JOB" => format!("s3://{bucket}/config/job.toml"),
                "SLUICEBOX_INPUT_PREFIX" => format!("s3://{bucket}/in/"),
                "SLUICEBOX_SCRATCH" => run_dir.join(format!("function-{n}")).display().to_string(),
                "SLUICEBOX_WORKERS" => "1".into(),
                // The queue's, as `aws_backends` made it: tasks outlasting it are kept invisible.
                "SLUICEBOX_VISIBILITY_SECS" => crate::queue::DEFAULT_VISIBILITY.as_secs().to_string(),
                _ => return None,
            })
        })
    };
    let mut functions = Vec::new();
    for n in 0..bench.workers.max(1) {
        functions.push(crate::lambda::Function::new(settings(n)?, cloud.clone()).await?);
    }
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": "in/orders.csv", "size": head.size, "eTag": head.e_tag.unwrap_or_default()}}
    }]});
    reset_peak_rss();
    let cpu = cpu_seconds();
    let started = std::time::Instant::now();
    let answer = functions[0].on_object(event).await?;
    let job_id = answer["started"][0]["job_id"]
        .as_str()
        .ok_or_else(|| Error::backend("bench", "on-object", format!("started no job: {answer}")))?
        .to_string();
    let billed_ms = AtomicU64::new(started.elapsed().as_millis() as u64);
    let esm_receives = AtomicU64::new(0);
    let esm_deletes = AtomicU64::new(0);
    let sqs = crate::aws::sqs(cloud.sdk("--lambda")?);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&bucket)
        .send()
        .await
        .map_err(|e| Error::backend("sqs", "GetQueueUrl", e.into_service_error()))?
        .queue_url
        .unwrap_or_default();
    let done = || async {
        matches!(engine.ledger.get_job(&job_id).await, Ok(Some(j)) if j.status == crate::ledger::JobStatus::Complete || j.status == crate::ledger::JobStatus::Failed)
    };
    futures::future::join_all(functions.iter().map(|f| async {
        while !done().await {
            esm_receives.fetch_add(1, Ordering::Relaxed);
            let got = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await;
            let messages = match got {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("receive: {e}");
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let records: Vec<serde_json::Value> = messages
                .iter()
                .map(|m| {
                    let count = m
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                        .cloned()
                        .unwrap_or_else(|| "1".into());
                    serde_json::json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                        "attributes": {"ApproximateReceiveCount": count}, "eventSource": "aws:sqs"})
                })
                .collect();
            let Ok(event) = serde_json::from_value(serde_json::json!({ "Records": records })) else { continue };
            let invoked = std::time::Instant::now();
            let response = f.on_task(event, std::time::Duration::from_secs(900)).await;
            billed_ms.fetch_add(invoked.elapsed().as_millis() as u64, Ordering::Relaxed);
            let failed: Vec<&str> = response.batch_item_failures.iter().map(|b| b.item_identifier.as_str()).collect();
            for m in messages.iter().filter(|m| !failed.contains(&m.message_id.as_deref().unwrap_or_default())) {
                esm_deletes.fetch_add(1, Ordering::Relaxed);
                let receipt = m.receipt_handle.clone().unwrap_or_default();
                let _ = sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await;
            }
        }
    }))
    .await;
    let cpu_s = cpu_seconds() - cpu;
    let objects = crate::job::JobObjects::new(engine.bucket.clone(), &job_id);
    let summary =
        objects.summary().await?.ok_or_else(|| Error::backend("bench", "through Lambda", "the job failed"))?;
    let mut calls = summary.api_calls.clone();
    *calls.entry("lambda-esm.sqs.ReceiveMessage".into()).or_default() += esm_receives.load(Ordering::Relaxed);
    *calls.entry("lambda-esm.sqs.DeleteMessage".into()).or_default() += esm_deletes.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut m = Measurement::of(&summary, bench, "load", head.size, functions.len(), seconds, cpu_s, "lambda", calls);
    m.lambda_gb_s = billed_ms.load(Ordering::Relaxed) as f64 / 1000.0 * LAMBDA_MEMORY_MB / 1024.0;
    Ok(m)
}

#[cfg(not(feature = "aws"))]
async fn aws_backends(_: &Path, _: &Path, _: &mut JobConfig, _: &Cloud) -> Result<(Engine, String)> {
    Err(Error::config("--aws", "this build lacks the `aws` feature"))
}

fn append_csv(out: &Path, m: &Measurement) -> Result<()> {
    let io = |e: std::io::Error| Error::config("--out", format!("cannot write {}: {e}", out.display()));
    let fail = |e: csv::Error| Error::backend("csv", format!("cannot write {}", out.display()), e);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    upgrade_csv(out)?;
    let exists = out.exists();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(io)?;
    let mut w = csv::WriterBuilder::new().has_headers(!exists).from_writer(file);
    w.serialize(m).map_err(fail)?;
    w.flush().map_err(io)?;
    Ok(())
}

/// The columns of a measurement, in order.
fn columns() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let example = Measurement {
        at: String::new(),
        keys: String::new(),
        run: String::new(),
        records: 0,
        input_bytes: 0,
        workers: 0,
        cores: 0,
        seconds: 0.0,
        records_per_s: 0.0,
        cpu_s: 0.0,
        peak_rss_mib: 0.0,
        plan_ms: 0,
        work_ms: 0,
        gather_ms: 0,
        sink: false,
        written: 0,
        rejected: 0,
        backend: String::new(),
        api_calls: 0,
        api_calls_per_record: 0.0,
        api_calls_by_operation: String::new(),
        lambda_gb_s: 0.0,
        predicted_api_calls: 0,
        predicted_by_operation: String::new(),
        decoded_bytes: 0,
    };
    let _ = w.serialize(&example);
    let text = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
    text.lines().next().unwrap_or_default().split(',').map(str::to_string).collect()
}

/// Rewrite a measurements file written with other columns under today's: rows from before
/// key orders and update runs were measured were sequential loads.
fn upgrade_csv(out: &Path) -> Result<()> {
    let Ok(text) = std::fs::read(out) else { return Ok(()) };
    let fail = |e: csv::Error| Error::backend("csv", format!("cannot upgrade {}", out.display()), e);
    let mut rdr = csv::Reader::from_reader(&text[..]);
    let old: Vec<String> = rdr.headers().map_err(fail)?.iter().map(str::to_string).collect();
    let new = columns();
    if old == new {
        return Ok(());
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&new).map_err(fail)?;
    for row in rdr.records() {
        let row = row.map_err(fail)?;
        let value = |name: &str| match old.iter().position(|c| c == name) {
            Some(i) => row.get(i).unwrap_or_default().to_string(),
            None if name == "keys" => "sequential".into(),
            None if name == "run" => "load".into(),
            None => String::new(),
        };
        w.write_record(new.iter().map(|n| value(n))).map_err(fail)?;
    }
    let bytes = w.into_inner().map_err(|e| Error::backend("csv", "upgrade", e.into_error()))?;
    std::fs::write(out, bytes).map_err(|e| Error::config("--out", format!("cannot write {}: {e}", out.display())))
}
