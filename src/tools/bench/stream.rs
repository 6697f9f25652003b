//! `sluicebox bench --stream`: 200-byte JSON events piped into `sluicebox stream --from -` (a
//! child process, as a user runs it), written as partitioned gzip JSON Lines or Parquet files,
//! or upserted into a SQLite table keyed by the event id; the rate, the child's peak memory and
//! the spread of file sizes. `bench/duckdb_stream.py` is the same job as DuckDB's partitioned
//! `COPY`, run right after each file run and measured the same way, for a paired ratio.

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

/// What a run writes the events into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// Partitioned gzip JSON Lines files (the bench job as it is).
    Jsonl,
    /// Partitioned Parquet files (zstd).
    Parquet,
    /// Only the SQLite sink: a table keyed by the event id, no files (the bench job with a
    /// `[sink]` and no `--to`).
    Sqlite,
}

impl Destination {
    /// Its name in figures and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Jsonl => "jsonl",
            Destination::Parquet => "parquet",
            Destination::Sqlite => "sqlite",
        }
    }

    /// The bench job for this run.
    pub fn job(self) -> String {
        match self {
            Destination::Jsonl => JOB.to_string(),
            Destination::Parquet => JOB.replace("[output]\n", "[output]\nformat = \"parquet\"\n"),
            Destination::Sqlite => {
                format!("{JOB}\n[key]\nfields = [\"id\"]\n\n[sink]\ntype = \"sqlite\"\ntable = \"{SQLITE_TABLE}\"\n")
            }
        }
    }
}

/// The table the SQLite run upserts the events into.
pub const SQLITE_TABLE: &str = "events";

/// DuckDB doing the same run (`bench/duckdb_stream.py`), measured the same way.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// Wall time of its whole process (the interpreter's start included), seconds.
    pub seconds: f64,
    /// Its peak resident set size, MiB.
    pub peak_rss_mib: f64,
    /// Files it wrote.
    pub files: u64,
    /// sluicebox's wall time over DuckDB's, in this pair of runs.
    pub ratio: f64,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct StreamMeasurement {
    /// `jsonl` (gzip), `parquet` or `sqlite` (the sink only).
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
    /// Records upserted into the sink.
    pub upserted: u64,
    /// DuckDB's partitioned `COPY` of the same events, right after (files only).
    pub duckdb: Option<Peer>,
}

impl std::fmt::Display for StreamMeasurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = crate::backends::cost::thousands;
        write!(
            f,
            "stream {}: {} events ({:.0} MB) in {:.2} s: {} events/s; peak RSS {:.0} MiB; ",
            self.format,
            t(self.records),
            self.input_bytes as f64 / 1e6,
            self.seconds,
            t(self.records_per_s as u64),
            self.peak_rss_mib,
        )?;
        match self.files {
            0 => write!(f, "{} upserted into the SQLite table {SQLITE_TABLE}", t(self.upserted))?,
            n => write!(
                f,
                "{} files of {} / {} / {} bytes (smallest / median / largest)",
                t(n),
                t(self.file_bytes[0]),
                t(self.file_bytes[1]),
                t(self.file_bytes[2]),
            )?,
        }
        if let Some(p) = &self.duckdb {
            write!(
                f,
                "; DuckDB {:.2} s, peak RSS {:.0} MiB: sluicebox takes {:.2}x DuckDB's time",
                p.seconds, p.peak_rss_mib, p.ratio
            )?;
        }
        Ok(())
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

/// Pipe `events` into `exe stream --from -` with the bench job for `into`, in `dir`.
pub fn run(exe: &Path, dir: &Path, events: &Path, into: Destination) -> Result<StreamMeasurement> {
    let io = |what: &str, e: std::io::Error| Error::internal("bench", what.to_string(), e);
    let name = into.as_str();
    let out = dir.join(format!("out-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let data = dir.join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&data);
    let job_path = dir.join(format!("stream-{name}.toml"));
    std::fs::write(&job_path, into.job()).map_err(|e| io("writing the job", e))?;
    let input = std::fs::File::open(events).map_err(|e| io("opening the events", e))?;
    let input_bytes = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(exe);
    command.args(["stream", "--from", "-", "--json", "--config"]).arg(&job_path).arg("--data-dir").arg(&data);
    if into != Destination::Sqlite {
        command.arg("--to").arg(&out);
    }
    let done = measure(command.stdin(input), "sluicebox stream");
    // What a run wrote is let go once measured: at 10 million events the files, the SQLite
    // table and DuckDB's files of the runs together would take several GB of disk.
    let _ = (std::fs::remove_dir_all(&out), std::fs::remove_dir_all(&data));
    let done = done?;
    let report: serde_json::Value = serde_json::from_slice(done.stdout.trim_ascii())
        .map_err(|e| Error::internal("bench", "the stream's report", e))?;
    let num = |k: &str| report[k].as_u64().unwrap_or(0);
    let sizes = &report["file_bytes"];
    let size = |i: usize| sizes[i].as_u64().unwrap_or(0);
    let records = num("records");
    Ok(StreamMeasurement {
        format: name.to_string(),
        records,
        input_bytes,
        seconds: done.seconds,
        records_per_s: records as f64 / done.seconds.max(1e-9),
        peak_rss_mib: done.peak_rss_mib,
        files: num("files"),
        file_bytes: [size(0), size(1), size(2)],
        output_bytes: num("bytes"),
        upserted: num("upserted"),
        duckdb: None,
    })
}

/// The same events into the same partitioned files by DuckDB (`python` runs
/// [`DUCKDB_STREAM_SCRIPT`]), measured as [`run`] measures sluicebox: `None` for a run DuckDB
/// has no counterpart of (the SQLite sink).
pub fn duckdb(python: &str, dir: &Path, events: &Path, ours: &StreamMeasurement) -> Result<Option<Peer>> {
    let format = match ours.format.as_str() {
        f @ ("jsonl" | "parquet") => f,
        _ => return Ok(None),
    };
    let script = dir.join("duckdb_stream.py");
    std::fs::write(&script, DUCKDB_STREAM_SCRIPT)
        .map_err(|e| Error::internal("bench", format!("writing {}", script.display()), e))?;
    let mut command = Command::new(python);
    let peer_out = dir.join(format!("duckdb-{format}"));
    command.arg(&script).arg(events).arg(&peer_out).arg(format);
    let done = measure(&mut command, "the DuckDB peer");
    let _ = std::fs::remove_dir_all(&peer_out);
    let done = done?;
    let peer: serde_json::Value = serde_json::from_slice(done.stdout.trim_ascii())
        .map_err(|e| Error::internal("bench", "the DuckDB peer's output", e))?;
    Ok(Some(Peer {
        seconds: done.seconds,
        peak_rss_mib: done.peak_rss_mib,
        files: peer["files"].as_u64().unwrap_or(0),
        ratio: ours.seconds / done.seconds.max(1e-9),
    }))
}

/// The DuckDB peer of the stream bench.
pub const DUCKDB_STREAM_SCRIPT: &str = include_str!("../../../bench/duckdb_stream.py");

/// A child process run to its end: wall time, peak memory, what it printed.
struct Done {
    seconds: f64,
    peak_rss_mib: f64,
    stdout: Vec<u8>,
}

/// Run `command` to its end, polling its peak resident set size (VmHWM) as it runs.
fn measure(command: &mut Command, what: &str) -> Result<Done> {
    let io = |e: std::io::Error| Error::internal("bench", what.to_string(), e);
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(io)?;
    // Read what it prints as it runs, so that a full pipe never stops it.
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let out = std::thread::spawn(move || read_all(stdout.as_mut()));
    let err = std::thread::spawn(move || read_all(stderr.as_mut()));
    let pid = child.id().to_string();
    let mut peak_rss_mib = 0f64;
    let status = loop {
        if let Some(mib) = super::peak_rss_mib_of(&pid) {
            peak_rss_mib = peak_rss_mib.max(mib);
        }
        if let Some(status) = child.try_wait().map_err(io)? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        let said = String::from_utf8_lossy(&stderr);
        let last = said.lines().last().unwrap_or_default().to_string();
        return Err(Error::internal("bench", what.to_string(), std::io::Error::other(format!("{status}: {last}"))));
    }
    Ok(Done { seconds, peak_rss_mib, stdout })
}

fn read_all(from: Option<&mut impl std::io::Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(r) = from {
        let _ = r.read_to_end(&mut bytes);
    }
    bytes
}
