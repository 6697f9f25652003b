//! sluicebox: a file of records lands in a bucket; sluicebox splits it into chunks, runs every
//! record through a pipeline (decode → validate → transform → enrich → key → sink) on as many
//! workers as there are, detects exactly once that every chunk is done, and gathers a merged
//! output, a rejects file, a manifest and a summary back into the bucket.
//!
//! # Layout
//!
//! Modules in the order a reader meets them; each uses only modules above it in this list.
//! `ARCHITECTURE.md` follows one record and one job through them.
//!
//! The vocabulary:
//! - [`error`]: the public [`Error`], which says whether it is worth retrying.
//! - [`web`]: URLs shown without their secrets, and the one guarded way to call a webhook (no
//!   redirects, no internal addresses).
//! - [`record`]: a record (a map, or a `Row` of values in a layout its input shares), its origin,
//!   what became of it (`Outcome`), rejects, counts, sink items.
//! - [`config`]: the TOML job file as written, and the resolved [`config::JobDefinition`] stored
//!   with each job.
//! - [`column`](mod@column): declared columns that check and type values.
//! - [`transform`]: jq programs, compiled once.
//! - [`decode`]: where records begin and end in CSV, JSON Lines and JSON documents.
//! - [`plan`]: the streaming scan that cuts inputs into chunks (claim checks).
//! - [`resume_points`]: where decoding a gzip or zstd input can start mid-stream (deflate block
//!   boundaries with their 32 KiB windows, zstd frames), so a compressed input's chunks are
//!   decoded in linear time: the planner records the points, the workers resume at them.
//! - [`spec`]: a definition checked once into the [`spec::JobSpec`] the engine runs on.
//!
//! The seams and their backends:
//! - [`calls`]: counting every cloud request a job makes.
//! - [`cost`]: AWS list prices (a versioned table a user can replace) and the bill for requests.
//! - [`cloud`]: the cloud configuration, loaded once by the caller and passed in.
//! - `aws` (feature `aws`): SDK clients, and what the DynamoDB backends share.
//! - [`bucket`]: `object_store` stores by URL, input listing, ranged and decompressing reads.
//! - [`ledger`]: the `StateStore` seam (job and chunk records, conditional commits).
//! - [`queue`]: the `Queue` seam (at-least-once tasks with a visibility timeout).
//! - [`sink`]: the `Sink` seam (batched, idempotent upserts), opened by `sink::open`; its
//!   `stage` keeps sorted runs of rows in files and merges them in key order (the SQLite sink's
//!   stage, and an imported reference's).
//! - [`lookup`]: enrichment references behind the `lookup::Source` seam.
//!
//! The engines:
//! - [`pipeline`]: one record through every step (`Pipeline::process`), a chunk's records,
//!   and the output `Encoder`.
//! - [`parquet`]: Parquet output: an Arrow schema typed by the declared columns,
//!   and the `ParquetEncoder` (in memory, or streamed a row group at a time).
//! - [`engine`]: the backends a job runs on, built from URLs.
//! - `setup` (feature `aws`): creating the AWS resources a job needs.
//! - [`job`]: a job's data (plan, stored definition, tasks, failure, summary, its objects
//!   under `jobs/<id>/`) and `JobRun`, what its workers share.
//! - [`check`]: `sluicebox check` (a job file checked as `run` would, its reference and sink
//!   reached; a sample run through its pipeline) and `sluicebox test` (the job's `[[tests]]`).
//! - [`forecast`]: `sluicebox plan`: a dry run's shape of a job, and the requests and cost it
//!   will make on a deployment.
//! - [`init`]: `sluicebox init`: a commented job file from a sample of an input (its dialect,
//!   and each column's type, date format, emptiness and length).
//! - [`notify`]: telling people how a job ended (webhook, SNS, SES, SMTP), with links.
//! - [`report`]: `report.html`, a job's self-contained page (counts, chunk timeline, rejects, costs).
//! - [`gather`]: merge parts in input order, manifest, summary, completion; then the inputs
//!   archived and the job's notifications sent.
//! - [`worker`]: one task: decide what to do with it (a `Disposition`), then act.
//! - [`pool`]: work loops in this process, with signals and idle exit.
//! - [`job::prepare`] and [`job::run`](mod@job::run): a job's life cycle: create or resume, plan,
//!   enqueue; run here, submit, wait.
//! - [`watch`]: a job per object from S3 event notifications.
//! - [`stream`]: `sluicebox stream`: records from standard input, files, Kinesis or SQS through the
//!   pipeline into files per partition, sized by a target and named by the records they hold,
//!   with checkpoints in the ledger (every record in exactly one file).
//! - [`ddl`]: `sluicebox ddl`: the Athena `CREATE EXTERNAL TABLE` over a stream's files
//!   (partitions projected) or a job's output, typed as the Parquet output is.
//! - `produce` (feature `aws`): `sluicebox produce`: a file's records put on a Kinesis data
//!   stream, one JSON object each, behind the small `PutRecords` seam.
//! - `lambda` (feature `lambda`): the AWS Lambda handlers (on-object, on-task, on-stream) over
//!   the above.
//! - `bench` (feature `bench`, on by default): synthetic orders and the `sluicebox bench`
//!   measurement: the tool, not library API.
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
//!    and decode in linear time ([`resume_points`], `job::prepare`), a transform runs within a
//!    step and stack budget ([`transform`]), a stream record that cannot be placed is a reject,
//!    and a task whose worker dies on it fails its job instead of killing worker after worker.
//! 7. Secrets stay secret and only named addresses are reached: URLs are shown redacted, and
//!    webhooks follow no redirect and reach no internal address ([`web`]).
//!
//! # Feature flags
//!
//! The embedded backends (local directory, SQLite, in-process queue) are always built.
//!
//! - `aws`: the SQS queue (`sqs://NAME`), the DynamoDB ledger, sink and reference
//!   (`dynamodb://TABLE`) and S3 buckets (`s3://`), with the official AWS SDK for Rust;
//!   `sluicebox produce` onto Kinesis streams (`kinesis://STREAM`).
//! - `lambda`: the AWS Lambda handlers and their mains (`sluicebox-on-object`,
//!   `sluicebox-on-task`); implies `aws`. `deploy/aws/template.yaml` deploys them.
//! - `testing`: the conformance suites of the seams (`ledger::conformance`,
//!   `queue::conformance`, `sink::conformance`, `lookup::conformance`) and the fault-injecting
//!   layers (`queue::faults`, the DynamoDB sink's throttling, `produce::faults`), and what the fuzz targets check
//!   (`fuzzing`), for tests; not in a normal build.
//! - `bench` (on by default): the `sluicebox bench` tool, which the binary's `bench` command
//!   runs; not library API, and left out of a build with `default-features = false`.

#![warn(missing_docs)]

pub mod error;
pub mod record;
pub mod web;

pub mod column;
pub mod config;
pub mod decode;
pub mod plan;
pub mod resume_points;
pub mod spec;
pub mod transform;

pub mod app;
#[cfg(feature = "aws")]
pub mod aws;
pub mod bucket;
pub mod calls;
pub mod cloud;
pub mod cost;
pub mod ledger;
pub mod lookup;
pub mod queue;
pub mod sink;

pub mod check;
pub mod ddl;
pub mod engine;
pub mod forecast;
pub mod gather;
pub mod init;
pub mod job;
pub mod notify;
pub mod parquet;
pub mod pipeline;
pub mod pool;
#[cfg(feature = "aws")]
pub mod produce;
pub mod report;
#[cfg(feature = "aws")]
pub mod setup;
pub mod stream;
pub mod watch;
pub mod worker;

#[cfg(feature = "lambda")]
pub mod lambda;

// The `sluicebox bench` tool (feature `bench`, on by default), not library API.
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;

pub use error::{Error, Result};
