//! The record-source seam: where a stream's records come from ([`RecordSource`]), what a
//! source delivers ([`Delivery`]), and [`open`], the one place that turns a `--from` into a
//! source.
//!
//! One file per kind: standard input and files ([`files`]: blocks of whole records, decoded as
//! a batch job's chunks are), Kinesis Data Streams (`kinesis`, feature `aws`: every shard from
//! its checkpoint, a closed shard's children after it), a queue of JSON messages ([`sqs`]) and
//! the batch a Lambda function is handed ([`batch`]). A kind named by a URL is a
//! [`SourceKind`]: adding one is one file, one line in [`BY_URL`], and one run of the
//! [`conformance`] suite.

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
    /// A stream named by a URL whose scheme one of the [`BY_URL`] kinds takes
    /// (`kinesis://NAME`, `sqs://NAME`).
    Url(String),
    /// One batch of a shard's records, as an AWS Lambda function is handed them by its event
    /// source mapping: written, with everything buffered, before the run returns.
    Batch {
        /// The shard.
        shard: String,
        /// Its records, in order.
        records: Vec<SourceRecord>,
    },
    /// One batch of a queue's messages, as an AWS Lambda function is handed them by an SQS
    /// event source mapping: written before the run returns, each message's id going into
    /// `acked` once its record is accounted for.
    Messages {
        /// The queue (its ARN), the records' one shard.
        queue: String,
        /// The messages as records: `ack` and `id` are the message id.
        records: Vec<SourceRecord>,
        /// The ids acknowledged.
        acked: batch::Acked,
    },
}

impl Source {
    /// Its name in record metadata (`$meta.source`): `stdin`, the URL, or none when each
    /// shard is its own source (a file, a Lambda batch's shard).
    pub fn name(&self) -> Option<String> {
        match self {
            Source::Stdin => Some("stdin".into()),
            Source::Url(url) => Some(url.clone()),
            Source::Files(_) | Source::Batch { .. } | Source::Messages { .. } => None,
        }
    }

    /// Parse `--from`.
    pub fn parse(from: &[String]) -> Result<Self> {
        match from {
            [one] if one == "-" => Ok(Source::Stdin),
            [one] if kind_of(one).is_some() => {
                kind_of(one).map_or(Ok(()), |k| k.check(one))?;
                Ok(Source::Url(one.clone()))
            }
            [] => Err(Error::config("--from", "name a source: -, files, kinesis://NAME or sqs://NAME")),
            many if many
                .iter()
                .any(|f| f == "-" || f.contains("://") && !f.starts_with("s3://") && !f.starts_with("file://")) =>
            {
                Err(Error::config(
                    "--from",
                    format!("{many:?}: one stream (-, kinesis://NAME, sqs://NAME), or any number of files"),
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
            Source::Url(url) => url.clone(),
            Source::Batch { shard, .. } => shard.clone(),
            Source::Messages { queue, .. } => queue.clone(),
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
        Source::Batch { shard, records } => Arc::new(batch::BatchSource::new(shard.clone(), records.clone())),
        Source::Messages { queue, records, acked } => {
            Arc::new(batch::BatchSource::messages(queue.clone(), records.clone(), acked.clone()))
        }
        Source::Url(url) => match kind_of(url) {
            Some(kind) => kind.open(url, with).await?,
            None => return Err(Error::config("--from", format!("{url}: no source takes this scheme"))),
        },
    })
}

/// A kind of source that a URL names (`kinesis://`, `sqs://`): how `--from` is checked, and
/// how the source is opened. One per file; [`BY_URL`] lists them.
#[async_trait]
pub trait SourceKind: Sync {
    /// Whether `url` names a source of this kind (its scheme).
    fn takes(&self, url: &str) -> bool;
    /// Refuse a `url` of this kind that names nothing, naming `--from`.
    fn check(&self, url: &str) -> Result<()> {
        let _ = url;
        Ok(())
    }
    /// The source `url` names.
    async fn open(&self, url: &str, with: Opening<'_>) -> Result<Arc<dyn RecordSource>>;
}

/// The kinds of source named by a URL, one line each: adding one is a file with its
/// [`SourceKind`], a line here, and a run of the [`conformance`] suite.
pub static BY_URL: &[&dyn SourceKind] = &[
    #[cfg(feature = "aws")]
    &kinesis::KIND,
    #[cfg(not(feature = "aws"))]
    &Missing { scheme: "kinesis://", feature: "aws" },
    &sqs::KIND,
];

/// A kind this build leaves out, named so that `--from` says which feature it needs.
#[cfg(not(feature = "aws"))]
struct Missing {
    scheme: &'static str,
    feature: &'static str,
}

#[cfg(not(feature = "aws"))]
#[async_trait]
impl SourceKind for Missing {
    fn takes(&self, url: &str) -> bool {
        url.starts_with(self.scheme)
    }

    fn check(&self, _: &str) -> Result<()> {
        Err(self.refusal())
    }

    async fn open(&self, _: &str, _: Opening<'_>) -> Result<Arc<dyn RecordSource>> {
        Err(self.refusal())
    }
}

#[cfg(not(feature = "aws"))]
impl Missing {
    fn refusal(&self) -> Error {
        let (scheme, feature) = (self.scheme, self.feature);
        Error::config("--from", format!("{scheme} needs the `{feature}` feature, which this build lacks"))
    }
}

/// The kind that takes `url`, if one does.
fn kind_of(url: &str) -> Option<&'static dyn SourceKind> {
    BY_URL.iter().copied().find(|k| k.takes(url))
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
    /// The message's id, the same on every delivery of it, for a source that may deliver a
    /// record twice (a queue): a copy that comes again within `[stream] dedup_window_s` is
    /// dropped (see `dedup.rs`). `None`: records are told apart by position only.
    pub id: Option<String>,
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

    #[cfg(not(feature = "aws"))]
    #[test]
    fn a_kind_this_build_leaves_out_names_its_feature() {
        let err = parse(&["kinesis://orders"]).unwrap_err().to_string();
        assert!(err.contains("--from") && err.contains("`aws` feature"), "{err}");
    }

    #[test]
    fn from_names_one_stream_or_any_number_of_files() {
        assert_eq!(parse(&["-"]).unwrap(), Source::Stdin);
        assert_eq!(parse(&["kinesis://orders/"]).unwrap(), Source::Url("kinesis://orders/".into()));
        assert_eq!(parse(&["sqs://events"]).unwrap(), Source::Url("sqs://events".into()));
        let files = parse(&["a.csv", "s3://b/k/"]).unwrap();
        assert_eq!(files, Source::Files(vec!["a.csv".into(), "s3://b/k/".into()]));
        assert_eq!(files.describe(), "a.csv,s3://b/k/");
        for bad in [&[][..], &["kinesis://"], &["-", "a.csv"], &["a.csv", "sqs://q"]] {
            assert!(parse(bad).unwrap_err().to_string().contains("--from"), "{bad:?}");
        }
    }
}
