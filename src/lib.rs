//! sluicebox: a file of records lands in a bucket; sluicebox splits it into chunks, runs every
//! record through a pipeline (decode → validate → transform → enrich → key → sink) on as many
//! workers as there are, detects exactly once that every chunk is done, and gathers a merged
//! output, a rejects file, a manifest and a summary back into the bucket. It also delivers
//! streams of records into well-sized, compressed, partitioned files.
//!
//! # Layout
//!
//! The folders are the layers, bottom first; a module uses only its own layer and those below
//! it (`tests/it/architecture.rs` checks every `crate::` path against the diagram in
//! `ARCHITECTURE.md`, which follows one record and one job through them).
//!
//! - [`error`]: the one [`Error`], and whether it is worth retrying.
//! - [`model`]: the vocabulary: a [`model::record`] and what became of it, the job file
//!   ([`model::config`]), the rejects a job tolerates ([`model::rejects`]), declared columns ([`model::column`]), jq programs
//!   ([`model::transform`]), URLs that keep their secrets ([`model::web`]).
//! - [`input`]: reading inputs: where records begin and end ([`input::decode`]), the scan that
//!   cuts inputs into chunks ([`input::plan`]), whether an input has the declared shape
//!   ([`input::shape`]), and where a gzip or zstd input can be entered
//!   mid-stream ([`input::resume_points`]).
//! - [`backends`]: the seams, each a small trait with a written contract and a conformance
//!   suite every backend runs: buckets ([`backends::bucket`]), the ledger
//!   ([`backends::ledger`]), the task queue ([`backends::queue`]), sinks ([`backends::sink`],
//!   which alone knows the kinds of sink) and references ([`backends::lookup`]); with the
//!   cloud configuration, request counting, prices and request latencies
//!   ([`backends::latency`]: the forecast's, and simulated ones for tests and the bench).
//! - [`engine`]: a job's definition checked into what runs ([`engine::spec`]), one record
//!   through every step ([`engine::pipeline`]), Parquet output ([`engine::parquet`]), and the
//!   [`engine::Engine`]: the backends a job runs on.
//! - [`batch`]: the batch engine: a job's data and life cycle ([`batch::job`]), one task
//!   ([`batch::worker`]), the gather ([`batch::gather`]), work loops ([`batch::pool`]), jobs
//!   from bucket events ([`batch::watch`]) or a local inbox directory ([`batch::inbox`]),
//!   notifications and the job's report page.
//! - [`stream`]: the stream engine: records from a source (behind the
//!   [`stream::source::RecordSource`] seam) through the pipeline into partitioned files, with
//!   checkpoints in the ledger.
//! - `lambda` (feature `lambda`): the AWS Lambda handlers over the two engines.
//! - [`tools`]: for people: `check` and `test`, `plan` (the forecast), `init`, `ddl`, and
//!   `produce` and `bench` behind their features.
//! - [`app`]: what each command of the binary does: a request in, a result with a `Display`
//!   (for people) and a `Serialize` (for `--json`) out.
//! - `fuzzing` (feature `testing`): what the fuzz targets in `fuzz/` check.
//!
//! # Guarantees
//!
//! 1. Every input record ends in exactly one of written, rejected or filtered, and the
//!    summary's counts add up to the records in the inputs (the gather refuses otherwise).
//! 2. Redelivered tasks, a process killed at any instant and re-runs never lose or double a
//!    record: every effect before a chunk's commit is idempotent (keyed upserts, whole-object
//!    puts), and the commit is one conditional write.
//! 3. Exactly one commit sees `done == total`; the gather runs under a ledger lease.
//! 4. Memory is bounded by chunk size × workers (plus the enrichment reference), not by input
//!    size: inputs are scanned as streams and read by byte range.
//! 5. A bad record becomes a reject naming input, record, line, field, rule and reason; a bad
//!    input or config stops the job with a message naming the file, key or column.
//! 6. No single input takes a process down: crafted compressed streams plan in bounded memory
//!    and decode in linear time ([`input::resume_points`], `batch::job::prepare`), a transform runs within a
//!    step and stack budget ([`model::transform`]), a stream record that cannot be placed is a reject,
//!    and a task whose worker dies on it fails its job instead of killing worker after worker.
//! 7. Secrets stay secret and only named addresses are reached: URLs are shown redacted, and
//!    webhooks follow no redirect and reach no internal address ([`model::web`]).
//!
//! # Feature flags
//!
//! The embedded backends (local directory, SQLite, in-process queue) are always built.
//!
//! - `aws`: the SQS queue (`sqs://NAME`), the DynamoDB ledger, sink and reference
//!   (`dynamodb://TABLE`) and S3 buckets (`s3://`), with the official AWS SDK for Rust;
//!   `sluicebox produce` onto Kinesis streams (`kinesis://STREAM`).
//! - `lambda`: the AWS Lambda handlers and their mains (`sluicebox-on-object`,
//!   `sluicebox-on-task`, `sluicebox-on-stream`); implies `aws`. `deploy/aws/template.yaml` deploys them.
//! - `testing`: the conformance suites of the seams (`backends::ledger::conformance`,
//!   `backends::queue::conformance`, `backends::sink::conformance`,
//!   `backends::lookup::conformance`, `stream::source::conformance`), the fault-injecting
//!   layers (`backends::queue::faults`, the DynamoDB sink's throttling,
//!   `tools::produce::faults`), and what the fuzz targets check (`fuzzing`), for tests; not in
//!   a normal build.
//! - `bench` (on by default): the `sluicebox bench` tool, which the binary's `bench` command
//!   runs; not library API, and left out of a build with `default-features = false`.

#![warn(missing_docs)]

pub mod error;

pub mod model;

pub mod input;

pub mod backends;

pub mod engine;

pub mod batch;

pub mod stream;

#[cfg(feature = "lambda")]
pub mod lambda;

pub mod tools;

pub mod app;

#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;

pub use error::{Error, Result};
