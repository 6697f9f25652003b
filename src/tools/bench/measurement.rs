//! One [`Measurement`]: what a run of the job took, as printed and as a row of the
//! measurements file (a CSV appended to, its columns upgraded when they change).

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::proc::peak_rss_mib;
use super::Bench;
use crate::error::{Error, Result};

/// One measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// When, RFC 3339.
    pub at: String,
    /// `random` or `sequential` keys (see [`KeyOrder`](super::KeyOrder)).
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
    /// Through Lambda: the GB-seconds `sluicebox plan` forecast before the run.
    #[serde(default)]
    pub forecast_lambda_gb_s: f64,
    /// Through Lambda: on-task invocations.
    #[serde(default)]
    pub lambda_tasks: u64,
    /// Through Lambda: an on-task invocation's mean time (a chunk's), ms.
    #[serde(default)]
    pub lambda_task_ms: f64,
    /// Through Lambda: whether the DynamoDB sink was ordered.
    #[serde(default)]
    pub ordered: bool,
    /// Through Lambda: the DynamoDB sink's requests in flight.
    #[serde(default)]
    pub in_flight: u64,
    /// With simulated latency: requests slowed, and the mean of their drawn and actual
    /// waits, ms (every service together).
    #[serde(default)]
    pub simulated_waits: u64,
    /// The mean drawn wait, ms.
    #[serde(default)]
    pub simulated_drawn_ms: f64,
    /// The mean actual wait, ms.
    #[serde(default)]
    pub simulated_waited_ms: f64,
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
            let counted: u64 = serde_json::from_str::<crate::backends::calls::ApiCalls>(&self.api_calls_by_operation)
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
                "\n  Lambda: {:.1} GB-s, {:.0} GB-s per million records; {} on-task invocations, {:.0} ms each \
                 ({} sink, {} in flight)",
                self.lambda_gb_s,
                self.lambda_gb_s * 1e6 / self.records.max(1) as f64,
                self.lambda_tasks,
                self.lambda_task_ms,
                if self.ordered { "ordered" } else { "unordered" },
                self.in_flight
            )?;
        }
        if self.simulated_waits > 0 {
            write!(
                f,
                "\n  simulated latency: {} requests slowed, {:.2} ms drawn and {:.2} ms waited on average",
                self.simulated_waits, self.simulated_drawn_ms, self.simulated_waited_ms
            )?;
        }
        if self.forecast_lambda_gb_s > 0.0 {
            write!(
                f,
                "\n  `sluicebox plan` forecast {:.1} GB-s of the {:.1} measured ({:.3}x)",
                self.forecast_lambda_gb_s,
                self.lambda_gb_s,
                self.forecast_lambda_gb_s / self.lambda_gb_s.max(1e-9)
            )?;
        }
        Ok(())
    }
}

impl Measurement {
    /// The measurement of a job that ended with `summary`, its requests `calls`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn of(
        summary: &crate::batch::job::Summary,
        bench: &Bench,
        run: &str,
        input_bytes: u64,
        workers: usize,
        seconds: f64,
        cpu_s: f64,
        backend: &str,
        calls: crate::backends::calls::ApiCalls,
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
            forecast_lambda_gb_s: 0.0,
            lambda_tasks: 0,
            lambda_task_ms: 0.0,
            ordered: false,
            in_flight: 0,
            simulated_waits: 0,
            simulated_drawn_ms: 0.0,
            simulated_waited_ms: 0.0,
            decoded_bytes: summary
                .inputs
                .iter()
                .filter(|i| i.decoding != crate::batch::job::Decoding::Range)
                .map(|i| i.decoded_bytes)
                .sum(),
        }
    }
}

pub(super) fn append_csv(out: &Path, m: &Measurement) -> Result<()> {
    let io = |e: std::io::Error| Error::config("--out", format!("cannot write {}: {e}", out.display()));
    let fail = |e: csv::Error| Error::internal("csv", format!("cannot write {}", out.display()), e);
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
        forecast_lambda_gb_s: 0.0,
        lambda_tasks: 0,
        lambda_task_ms: 0.0,
        ordered: false,
        in_flight: 0,
        simulated_waits: 0,
        simulated_drawn_ms: 0.0,
        simulated_waited_ms: 0.0,
    };
    let _ = w.serialize(&example);
    let text = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
    text.lines().next().unwrap_or_default().split(',').map(str::to_string).collect()
}

/// Rewrite a measurements file written with other columns under today's: rows from before
/// key orders and update runs were measured were sequential loads.
fn upgrade_csv(out: &Path) -> Result<()> {
    let Ok(text) = std::fs::read(out) else { return Ok(()) };
    let fail = |e: csv::Error| Error::internal("csv", format!("cannot upgrade {}", out.display()), e);
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
    let bytes = w.into_inner().map_err(|e| Error::internal("csv", "upgrade", e.into_error()))?;
    std::fs::write(out, bytes).map_err(|e| Error::config("--out", format!("cannot write {}: {e}", out.display())))
}
