//! The arguments of `produce` and `aws setup` (feature `aws`), and what each becomes.

use std::path::PathBuf;

use crate::serve::{visibility_secs, DEFAULT_VISIBILITY_SECS};

#[derive(clap::Subcommand)]
pub enum AwsCommand {
    /// Create the bucket, queue (with a dead-letter queue), ledger and sink tables a job needs,
    /// and the queue of the bucket's event notifications that `watch --events` reads.
    Setup {
        /// `s3://BUCKET[/PREFIX]`: the bucket to create.
        #[arg(long)]
        bucket: Option<String>,
        /// `sqs://NAME`: a queue the bucket notifies of every object created under --bucket's
        /// PREFIX (added to the bucket's notifications), for `watch --events`.
        #[arg(long)]
        events: Option<String>,
        /// `sqs://NAME` to create, with `NAME-dlq` as its dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
        /// `dynamodb://TABLE` to create as a ledger.
        #[arg(long)]
        ledger: Option<String>,
        /// `dynamodb://TABLE` to create as a sink table.
        #[arg(long)]
        sink: Option<String>,
        /// Deliveries of a task before it goes to the dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
        /// The queue's visibility timeout, seconds (workers extend it while they work a task).
        #[arg(long, default_value_t = DEFAULT_VISIBILITY_SECS, value_parser = visibility_secs())]
        visibility_secs: u64,
    },
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// The file: a path or s3://BUCKET/KEY.
    pub file: String,
    /// Job definition (TOML) whose `[input]` says how to read FILE (format, CSV dialect,
    /// compression; without a header, `[[columns]]` name the fields). Default: from FILE's name.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the records go: kinesis://STREAM, or sqs://QUEUE (one message per record, seed
    /// 003's scheduler).
    #[arg(long, value_name = "kinesis://STREAM|sqs://QUEUE")]
    pub to: String,
    /// The field whose value is each record's partition key (default: a hash of the record's
    /// position, spreading records evenly over the shards).
    #[arg(long, value_name = "FIELD")]
    pub partition_key: Option<String>,
    /// Create the stream with N shards when it does not exist (and wait until it is active).
    #[arg(long, value_name = "N")]
    pub shards: Option<std::num::NonZeroU32>,
    /// Print the result as one JSON line.
    #[arg(long)]
    pub json: bool,
}

impl ProduceArgs {
    /// The request; `progress`: whether a bar is drawn.
    pub fn request(self, progress: bool) -> sluicebox::app::ProduceRequest {
        let (file, config, to, partition_key, shards) =
            (self.file, self.config, self.to, self.partition_key, self.shards);
        sluicebox::app::ProduceRequest { file, config, to, partition_key, shards, progress }
    }
}

impl AwsCommand {
    /// What to create.
    pub fn setup(self) -> sluicebox::backends::setup::Setup {
        let AwsCommand::Setup { bucket, events, queue, ledger, sink, max_receives, visibility_secs } = self;
        let visibility = std::time::Duration::from_secs(visibility_secs);
        sluicebox::backends::setup::Setup { bucket, events, queue, ledger, sink, max_receives, visibility }
    }
}
