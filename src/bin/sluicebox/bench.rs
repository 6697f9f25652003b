//! The arguments of `sluicebox bench` (feature `bench`), and the job they measure.

use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KeyOrderArg {
    Random,
    Sequential,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DestinationArg {
    Jsonl,
    Parquet,
    Sqlite,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Synthetic order records to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Working directory for the generated data and the run.
    #[arg(long, default_value = "sluicebox-bench")]
    pub data_dir: PathBuf,
    /// Concurrent workers (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Only the run without the sink (outputs only). By default the job runs with the
    /// sink, then without it, each beside DuckDB doing the same (with and without its table).
    #[arg(long, conflicts_with = "sink_only")]
    pub no_sink: bool,
    /// Only the run with the sink.
    #[arg(long)]
    pub sink_only: bool,
    /// Keys in `random` order (the reference in another; 0.5% rejects of four kinds), or
    /// `sequential` (ascending, the reference in the same order, no rejects: the best case).
    #[arg(long, default_value = "random")]
    pub keys: KeyOrderArg,
    /// After the load, a second job that updates this share of the loaded keys (e.g. 0.1).
    #[arg(long, default_value_t = 0.0)]
    pub update_share: f64,
    /// The Python that runs the DuckDB peer on the same files (skipped when it cannot import
    /// `duckdb`; `pip install duckdb`).
    #[arg(long, env = "SLUICEBOX_PYTHON", default_value = "python3")]
    pub python: String,
    /// Do not compare with DuckDB.
    #[arg(long)]
    pub no_duckdb: bool,
    /// Run on S3, SQS and DynamoDB (ledger and sink) from the standard AWS configuration
    /// (feature `aws`; new resources for each run) and report API calls per record.
    #[arg(long)]
    pub aws: bool,
    /// With --aws: run the job through the Lambda handlers (feature `lambda`), --workers
    /// functions at once, and report GB-seconds too.
    #[arg(long, requires = "aws")]
    pub lambda: bool,
    /// With --aws: the DynamoDB sink ordered (conditional `PutItem`s) instead of 25 items per
    /// `BatchWriteItem`.
    #[arg(long, requires = "aws")]
    pub ordered: bool,
    /// With --aws: the sink's requests in flight (`[sink] in_flight`; default: the mode's).
    #[arg(long, requires = "aws")]
    pub in_flight: Option<usize>,
    /// Measure `sluicebox stream` instead: --records 200-byte JSON events piped into it from
    /// standard input, into each of --into in turn, each file run paired with DuckDB's
    /// partitioned `COPY` of the same events when DuckDB is at hand.
    #[arg(long, conflicts_with = "aws")]
    pub stream: bool,
    /// With --stream: what the events go into, in this order: gzip JSON Lines files, Parquet
    /// files, a SQLite table keyed by the event id (the sink only, no files).
    #[arg(long, value_delimiter = ',', default_value = "jsonl,parquet,sqlite", requires = "stream")]
    pub into: Vec<DestinationArg>,
    /// Also run the job on the orders compressed with gzip (level 6, as `gzip` writes them),
    /// right after the plain file, and report the ratio of their times and the bytes decoded.
    #[arg(long, conflicts_with_all = ["aws", "stream"])]
    pub gzip: bool,
    /// Measurements CSV to append one row to.
    #[arg(long, default_value = "bench/measurements.csv")]
    pub out: PathBuf,
    /// Print the measurement as one JSON line.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// What the stream bench writes into.
    pub fn destinations(&self) -> Vec<sluicebox::tools::bench::stream::Destination> {
        use sluicebox::tools::bench::stream::Destination;
        let to = |d: &DestinationArg| match d {
            DestinationArg::Jsonl => Destination::Jsonl,
            DestinationArg::Parquet => Destination::Parquet,
            DestinationArg::Sqlite => Destination::Sqlite,
        };
        self.into.iter().map(to).collect()
    }

    /// The Python that runs the DuckDB peer, when it can.
    pub fn duckdb_python(&self) -> Option<String> {
        (!self.no_duckdb && sluicebox::app::has_duckdb(&self.python)).then(|| self.python.clone())
    }

    /// The runs measured, in order: with the sink, then without it (on AWS, or with
    /// `--sink-only` or `--no-sink`, the one asked for).
    pub fn benches(&self) -> Vec<sluicebox::tools::bench::Bench> {
        let first = self.bench();
        let bare = (first.sink && !self.sink_only && !self.aws).then(|| sluicebox::tools::bench::Bench {
            sink: false,
            update_share: 0.0,
            gzip: false,
            ..first.clone()
        });
        std::iter::once(first).chain(bare).collect()
    }

    /// The job measured (with the sink unless `--no-sink`).
    pub fn bench(&self) -> sluicebox::tools::bench::Bench {
        use sluicebox::tools::bench::KeyOrder;
        let python = self.duckdb_python();
        sluicebox::tools::bench::Bench {
            records: self.records,
            workers: self.workers.unwrap_or_else(sluicebox::app::cores),
            sink: !self.no_sink,
            aws: self.aws,
            lambda: self.lambda,
            keys: match self.keys {
                KeyOrderArg::Random => KeyOrder::Random,
                KeyOrderArg::Sequential => KeyOrder::Sequential,
            },
            update_share: self.update_share.clamp(0.0, 1.0),
            duckdb_python: python,
            gzip: self.gzip,
            ordered: self.ordered,
            in_flight: self.in_flight,
        }
    }
}
