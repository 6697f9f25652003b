//! The record-source seam: where a stream's records come from ([`RecordSource`]), what a
//! source delivers ([`Delivery`]), and [`open`], the one place that turns a `--from` into a
//! source.
//!
//! One file per kind: standard input and files ([`files`]: blocks of whole records, decoded as
//! a batch job's chunks are), Kinesis Data Streams (`kinesis`, feature `aws`: every shard from
//! its checkpoint, a closed shard's children after it), a queue of JSON messages ([`sqs`]) and
//! the batch a Lambda function is handed ([`batch`]). Adding a kind is one file, one arm in
//! [`Source`] and [`open`], and one run of the [`conformance`] suite.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;
use tokio::sync::mpsc::Sender;

use super::state::{Pos, SavedShard};
use crate::backends::cloud::Cloud;
use crate::engine::spec::InputSpec;
use crate::error::{Error, Result};
use crate::model::config::Format;

pub mod batch;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod files;
#[cfg(feature = "aws")]
pub mod kinesis;
pub mod sqs;

/// Where a stream's records come from, as `--from` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// Files: paths, directories, `file://` or `s3://` objects and prefixes.
    Files(Vec<String>),
    /// A Kinesis data stream (`kinesis://NAME`).
    Kinesis(String),
    /// An SQS queue (`sqs://NAME` or a queue URL) of JSON objects, one per message; a message
    /// is deleted once its record is in a written file (at least once: a crash between the
    /// two delivers it again).
    Queue(String),
    /// One batch of a shard's records, as an AWS Lambda function is handed them by its event
    /// source mapping: written, with everything buffered, before the run returns.
    Batch {
        /// The shard.
        shard: String,
        /// Its records, in order.
        records: Vec<SourceRecord>,
    },
}

impl Source {
    /// Parse `--from`.
    pub fn parse(from: &[String]) -> Result<Self> {
        match from {
            [one] if one == "-" => Ok(Source::Stdin),
            [one] if one.starts_with("kinesis://") => {
                let name = one.trim_start_matches("kinesis://").trim_end_matches('/');
                if name.is_empty() {
                    return Err(Error::config("--from", "kinesis:// needs a stream name: kinesis://NAME"));
                }
                Ok(Source::Kinesis(name.to_string()))
            }
            [one] if one.starts_with("sqs://") || one.starts_with("https://sqs.") => Ok(Source::Queue(one.clone())),
            [] => Err(Error::config("--from", "name a source: -, files, kinesis://NAME or sqs://NAME")),
            many if many
                .iter()
                .any(|f| f == "-" || f.contains("://") && !f.starts_with("s3://") && !f.starts_with("file://")) =>
            {
                Err(Error::config(
                    "--from",
                    format!("{many:?}: one stream (-, kinesis://NAME), or any number of files"),
                ))
            }
            files => Ok(Source::Files(files.to_vec())),
        }
    }

    /// How the source is named in the consumer's default name.
    pub fn describe(&self) -> String {
        match self {
            Source::Stdin => "-".into(),
            Source::Files(f) => f.join(","),
            Source::Kinesis(name) => format!("kinesis://{name}"),
            Source::Queue(url) => url.clone(),
            Source::Batch { shard, .. } => shard.clone(),
        }
    }
}

/// What a source is opened with, besides its `--from`.
#[derive(Debug, Clone)]
pub struct Opening<'a> {
    /// The job's `[input]`: the format, CSV dialect and compression of files and standard input.
    pub input: &'a InputSpec,
    /// Where files are read from.
    pub inputs: Arc<dyn ObjectStore>,
    /// The AWS configuration (Kinesis, SQS).
    pub cloud: &'a Cloud,
    /// Kinesis shards without a checkpoint start at the newest record instead of the oldest.
    pub latest: bool,
    /// How long a queue's message stays invisible once received: while it waits in a buffer,
    /// and a while after.
    pub hold: Duration,
}

/// Open the source `from` names. This is the one place that knows every kind of source.
pub async fn open(from: &Source, with: Opening<'_>) -> Result<Arc<dyn RecordSource>> {
    Ok(match from {
        Source::Stdin => {
            let format = with.input.format.unwrap_or(Format::Jsonl);
            Arc::new(files::StdinSource::new(|| Box::new(std::io::stdin()), format, with.input.dialect))
        }
        Source::Files(args) => Arc::new(files::FilesSource::new(with.inputs, args.clone(), with.input)),
        Source::Queue(url) => {
            let queue = crate::backends::queue::open(url, with.hold, with.cloud).await?;
            Arc::new(sqs::QueueSource::new(queue, url.clone()))
        }
        Source::Batch { shard, records } => Arc::new(batch::BatchSource::new(shard.clone(), records.clone())),
        #[cfg(feature = "aws")]
        Source::Kinesis(stream) => {
            let client = crate::backends::aws::kinesis(with.cloud.sdk("--from")?);
            let start = if with.latest { kinesis::Start::Latest } else { kinesis::Start::TrimHorizon };
            Arc::new(kinesis::KinesisSource::new(client, stream.clone(), start))
        }
        #[cfg(not(feature = "aws"))]
        Source::Kinesis(_) => {
            return Err(Error::config("--from", "kinesis:// needs the `aws` feature, which this build lacks"));
        }
    })
}

/// Where an earlier run left each shard, by name: its checkpoint, and whether it ended.
pub type Resume = BTreeMap<String, SavedShard>;

/// Where a stream's records come from.
///
/// A source sends [`Delivery`]s into a channel, which the stream's reader drains in order;
/// the stream's writer acknowledges records once they are in files. `run` is called once per
/// instance.
///
/// # Contract
///
/// - **Positions rise per shard.** Within a shard every record comes after the one before it:
///   the positions of [`Delivery::Records`] rise, within a delivery and from one to the next.
///   The records of a shard's [`Delivery::Block`]s are numbered on from its previous block
///   (a shard's first record is 1), and a block's `first_line` follows on from the lines of
///   the one before. Shards may interleave in any way.
/// - **The end comes last.** A shard's [`Delivery::End`] follows all of its records, and
///   nothing of that shard follows it. `run` returns `Ok` once every shard is read to its end;
///   a source without an end (a queue, an open stream) runs until it is stopped.
/// - **It stops when the channel is closed.** Once the receiver is dropped, `run` returns
///   `Ok` at its next send or wait, without reading on. (A source blocked reading its input,
///   as standard input can be, stops when that read returns.)
/// - **Every record, at least once; by position if resumable.** If [`RecordSource::resumable`],
///   a record has the same shard and position in every run, and a run given `resume`
///   delivers every record after each shard's checkpoint, in order. It may deliver records at
///   or before the checkpoint again (the reader skips them), and may leave out a shard marked
///   ended. A source that is not resumable (standard input, a queue) numbers its records
///   afresh in each run; what a later run gets again is what was not acknowledged.
/// - **Acknowledged only once written.** A source never acknowledges a record on its own (an
///   SQS delete, a commit to a broker): only [`RecordSource::ack`] does, which the stream's
///   writer calls with the `ack` of records it has accounted for — in a written file, rejected
///   into one, or filtered out — after it has moved their shard's checkpoint. A record not
///   acknowledged is delivered again by a later run.
#[async_trait]
pub trait RecordSource: Send + Sync + std::fmt::Debug {
    /// Send the records into `tx`, each shard from where `resume` left it, until the source
    /// ends or `tx` is closed.
    async fn run(&self, resume: &Resume, tx: Sender<Delivery>) -> Result<()>;

    /// Whether a record has the same shard and position in every run, so that a checkpoint
    /// tells a later run what to skip.
    fn resumable(&self) -> bool;

    /// Acknowledge records that are accounted for, by the `ack` they were delivered with.
    async fn ack(&self, acks: &[String]) -> Result<()> {
        let _ = acks;
        Ok(())
    }
}

/// One record of a record stream (Kinesis, SQS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its position in its shard.
    pub pos: Pos,
    /// When the stream received it, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// Its data: one JSON object.
    pub data: Bytes,
    /// What acknowledges it once it is in a file (an SQS receipt handle).
    pub ack: Option<String>,
}

/// Whole records of a file or of standard input.
#[derive(Debug)]
pub struct Block {
    /// The shard: the file's location, or `stdin`.
    pub shard: String,
    /// Its format.
    pub format: Format,
    /// The CSV header, for CSV with a header.
    pub header: Option<Arc<Vec<String>>>,
    /// The line the block starts on.
    pub first_line: u64,
    /// When the records arrived (a file's modification time), ms since the Unix epoch.
    pub arrival_ms: i64,
    /// The records' bytes, cut at a record boundary.
    pub data: Vec<u8>,
    /// A record just before `data` too long to be read ([`files::MAX_RECORD_BYTES`]): skipped,
    /// to be a reject numbered before the block's records.
    pub skipped: Option<Skipped>,
}

/// A record skipped for its length.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The line it starts on.
    pub first_line: u64,
    /// Its length, up to the line break that ended it.
    pub bytes: u64,
    /// Its first bytes, for the reject.
    pub head: String,
}

/// What a source sends.
#[derive(Debug)]
pub enum Delivery {
    /// Records of one shard, in order.
    Records {
        /// The shard.
        shard: String,
        /// The records.
        records: Vec<SourceRecord>,
    },
    /// A block of a file or of standard input.
    Block(Block),
    /// The shard has no more records.
    End {
        /// The shard.
        shard: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Source> {
        Source::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn from_names_one_stream_or_any_number_of_files() {
        assert_eq!(parse(&["-"]).unwrap(), Source::Stdin);
        assert_eq!(parse(&["kinesis://orders/"]).unwrap(), Source::Kinesis("orders".into()));
        assert_eq!(parse(&["sqs://events"]).unwrap(), Source::Queue("sqs://events".into()));
        let files = parse(&["a.csv", "s3://b/k/"]).unwrap();
        assert_eq!(files, Source::Files(vec!["a.csv".into(), "s3://b/k/".into()]));
        assert_eq!(files.describe(), "a.csv,s3://b/k/");
        for bad in [&[][..], &["kinesis://"], &["-", "a.csv"], &["a.csv", "sqs://q"]] {
            assert!(parse(bad).unwrap_err().to_string().contains("--from"), "{bad:?}");
        }
    }
}
