//! `sluicebox bench --stream`: 200-byte JSON events piped into `sluicebox stream --from -` (a
//! child process, as a user runs it), written as partitioned gzip JSON Lines or Parquet files;
//! the rate, the child's peak memory and the spread of file sizes. `bench/duckdb_stream.py` is
//! the same job as DuckDB's partitioned `COPY`, for a paired run.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};

/// The job the events go through: typed columns, a partition by vendor and event day.
pub const JOB: &str = r#"# sluicebox bench --stream: 200-byte events, typed, partitioned by vendor and day.
[input]
format = "jsonl"

[[columns]]
name = "id"
type = "integer"
required = true

[[columns]]
name = "vendor"
required = true

[[columns]]
name = "ts"
type = "timestamp"
required = true

[[columns]]
name = "amount"
type = "decimal"

[[columns]]
name = "note"

[output]
fields = ["id", "vendor", "ts", "amount", "note"]

# Every other setting at its default: 64 MiB files, 300 s, 100 open partitions.
[stream]
partition = "vendor={vendor}/dt=%Y-%m-%d"
time_field = "ts"
"#;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct StreamMeasurement {
    /// `jsonl` (gzip) or `parquet`.
    pub format: String,
    /// Events piped in.
    pub records: u64,
    /// Their bytes.
    pub input_bytes: u64,
    /// Wall time from the first byte piped to the child's exit, seconds.
    pub seconds: f64,
    /// Events per second.
    pub records_per_s: f64,
    /// The child's peak resident set size, MiB.
    pub peak_rss_mib: f64,
    /// Data files written.
    pub files: u64,
    /// Their sizes: smallest, median, largest (bytes, compressed).
    pub file_bytes: [u64; 3],
    /// Their bytes in all.
    pub output_bytes: u64,
}

impl std::fmt::Display for StreamMeasurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = crate::backends::cost::thousands;
        write!(
            f,
            "stream {}: {} events ({:.0} MB) in {:.2} s: {} events/s; peak RSS {:.0} MiB; {} files of {} / {} / {} bytes (smallest / median / largest)",
            self.format,
            t(self.records),
            self.input_bytes as f64 / 1e6,
            self.seconds,
            t(self.records_per_s as u64),
            self.peak_rss_mib,
            t(self.files),
            t(self.file_bytes[0]),
            t(self.file_bytes[1]),
            t(self.file_bytes[2]),
        )
    }
}

/// Write `n` events of about 200 bytes to `path` (kept for later runs): ids in random
/// order, 20 vendors, times over three days in no order, a note of varying length.
pub fn generate(path: &Path, n: u64) -> Result<()> {
    let io = |e: std::io::Error| Error::internal("bench", format!("writing {}", path.display()), e);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let base = 1_764_547_200i64; // 2025-12-01T00:00:00Z
    for _ in 0..n {
        let at = chrono::DateTime::from_timestamp(base + rng.i64(0..3 * 86_400), 0).unwrap_or_default();
        let note: String = (0..rng.usize(70..110)).map(|_| rng.alphanumeric()).collect();
        writeln!(
            out,
            r#"{{"id":{},"vendor":"vendor-{:02}","ts":"{}","amount":{}.{:02},"note":"{note}"}}"#,
            rng.u64(1..1 << 53),
            rng.u32(0..20),
            at.format("%Y-%m-%dT%H:%M:%SZ"),
            rng.u32(0..10_000),
            rng.u32(0..100),
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Pipe `events` into `exe stream --from -` with the bench job in `format`, in `dir`.
pub fn run(exe: &Path, dir: &Path, events: &Path, format: &str) -> Result<StreamMeasurement> {
    let io = |what: &str, e: std::io::Error| Error::internal("bench", what.to_string(), e);
    let out = dir.join(format!("out-{format}"));
    let _ = std::fs::remove_dir_all(&out);
    let data = dir.join(format!("data-{format}"));
    let _ = std::fs::remove_dir_all(&data);
    let job = match format {
        "parquet" => JOB.replace("[output]\n", "[output]\nformat = \"parquet\"\n"),
        _ => JOB.to_string(),
    };
    let job_path = dir.join(format!("stream-{format}.toml"));
    std::fs::write(&job_path, job).map_err(|e| io("writing the job", e))?;
    let input = std::fs::File::open(events).map_err(|e| io("opening the events", e))?;
    let input_bytes = input.metadata().map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["stream", "--from", "-", "--json"])
        .arg("--to")
        .arg(&out)
        .arg("--config")
        .arg(&job_path)
        .arg("--data-dir")
        .arg(&data)
        .stdin(input)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| io("starting sluicebox stream", e))?;
    let pid = child.id().to_string();
    let mut peak_mib = 0f64;
    loop {
        if let Some(mib) = super::peak_rss_mib_of(&pid) {
            peak_mib = peak_mib.max(mib);
        }
        if child.try_wait().map_err(|e| io("waiting for sluicebox stream", e))?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = child.wait_with_output().map_err(|e| io("waiting for sluicebox stream", e))?;
    if !done.status.success() {
        return Err(Error::internal("bench", "sluicebox stream", std::io::Error::other(format!("{}", done.status))));
    }
    let report: serde_json::Value = serde_json::from_slice(done.stdout.trim_ascii())
        .map_err(|e| Error::internal("bench", "the stream's report", e))?;
    let num = |k: &str| report[k].as_u64().unwrap_or(0);
    let sizes = &report["file_bytes"];
    let size = |i: usize| sizes[i].as_u64().unwrap_or(0);
    let records = num("records");
    Ok(StreamMeasurement {
        format: format.to_string(),
        records,
        input_bytes,
        seconds,
        records_per_s: records as f64 / seconds.max(1e-9),
        peak_rss_mib: peak_mib,
        files: num("files"),
        file_bytes: [size(0), size(1), size(2)],
        output_bytes: num("bytes"),
    })
}
