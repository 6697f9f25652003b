//! sluicebox: a file of records lands in a bucket; sluicebox splits it into chunks, runs every
//! record through a pipeline (decode → validate → transform → enrich → key → sink) on as many
//! workers as there are, detects exactly once that every chunk is done, and gathers a merged
//! output, a rejects file, a manifest and a summary back into the bucket.
//!
//! # Layout
//!
//! - [`config`]: the TOML job definition and its validation into a [`config::JobSpec`].
//! - [`plan`]: the streaming, quote-aware scan that cuts inputs into chunks (claim checks).
//! - [`pipeline`]: what a worker does to each record, and the encoding of output parts.
//! - [`lookup`]: enrichment reference data, loaded once per job.
//! - [`bucket`]: `object_store` stores by URL, input listing, ranged and decompressing reads.
//! - [`ledger`]: the `StateStore` seam (job and chunk records, conditional commits).
//! - [`queue`]: the `Queue` seam (at-least-once tasks with a visibility timeout).
//! - [`sink`]: the `Sink` seam (batched, idempotent upserts).
//! - [`job`]: a job's life cycle: create or resume, plan, enqueue, run workers.
//! - [`worker`]: one task: read a chunk, run the pipeline, write, commit.
//! - [`gather`]: merge parts in input order, manifest, summary, completion.
//! - [`bench`](mod@bench): synthetic orders and the `sluicebox bench` measurement.
//! - [`error`]: the public [`Error`].
//! - `aws` (feature `aws`): the shared AWS SDK configuration for the AWS backends.
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
//!
//! # Feature flags
//!
//! The embedded backends (local directory, SQLite, in-process queue) are always built.
//!
//! - `aws`: the SQS queue (`sqs://NAME`) and the DynamoDB ledger (`dynamodb://TABLE`), with the
//!   official AWS SDK for Rust and its standard configuration chain (`AWS_REGION`,
//!   `AWS_PROFILE`, `AWS_ENDPOINT_URL`, credentials).

#[cfg(feature = "aws")]
pub mod aws;
pub mod bench;
pub mod bucket;
pub mod calls;
pub mod config;
pub mod error;
pub mod gather;
pub mod job;
pub mod ledger;
pub mod lookup;
#[cfg(feature = "aws")]
pub mod lookup_dynamodb;
pub mod pipeline;
pub mod plan;
pub mod queue;
pub mod sink;
pub mod watch;
pub mod worker;

pub use error::{Error, Result};
