//! Kinesis Data Streams (feature `aws`): every shard from its checkpoint (positions are
//! sequence numbers), a closed shard's children once it is read to its end, and new shards as
//! the stream is resharded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc::Sender;

use super::{Delivery, Opening, RecordSource, Resume, SourceKind, SourceRecord};
use crate::error::{Error, Result};
use crate::stream::state::Pos;

/// `kinesis://NAME`: a Kinesis data stream.
pub static KIND: Kind = Kind;

/// The kind of [`KIND`].
pub struct Kind;

#[async_trait]
impl SourceKind for Kind {
    fn takes(&self, url: &str) -> bool {
        url.starts_with("kinesis://")
    }

    fn check(&self, url: &str) -> Result<()> {
        match name(url).is_empty() {
            true => Err(Error::config("--from", "kinesis:// needs a stream name: kinesis://NAME")),
            false => Ok(()),
        }
    }

    async fn open(&self, url: &str, with: Opening<'_>) -> Result<Arc<dyn RecordSource>> {
        self.check(url)?;
        let client = crate::backends::aws::kinesis(with.cloud.sdk("--from")?);
        let start = if with.latest { Start::Latest } else { Start::TrimHorizon };
        Ok(Arc::new(KinesisSource::new(client, name(url).to_string(), start)))
    }
}

/// The stream's name in `kinesis://NAME[/]`.
fn name(url: &str) -> &str {
    url.trim_start_matches("kinesis://").trim_end_matches('/')
}

/// A Kinesis data stream: every shard, children after their parents.
#[derive(Debug)]
pub struct KinesisSource {
    client: Client,
    stream: String,
    start: Start,
}

impl KinesisSource {
    /// The stream named `stream`; shards without a checkpoint start at `start`.
    pub fn new(client: Client, stream: String, start: Start) -> Self {
        KinesisSource { client, stream, start }
    }
}

#[async_trait]
impl RecordSource for KinesisSource {
    async fn run(&self, resume: &Resume, tx: Sender<Delivery>) -> Result<()> {
        run(self.client.clone(), self.stream.clone(), resume, self.start, tx).await
    }

    /// Sequence numbers name records for as long as the stream keeps them.
    fn resumable(&self) -> bool {
        true
    }
}

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its oldest record.
    TrimHorizon,
    /// Records put from now on.
    Latest,
}

fn aws(op: &str, stream: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(crate::error::Backend::Kinesis, format!("{op} on stream {stream}"), e)
}

async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = req.send().await.map_err(|e| {
            let e = aws_sdk_kinesis::Error::from(e);
            match e {
                aws_sdk_kinesis::Error::ResourceNotFoundException(_) => {
                    Error::config("--from", format!("the Kinesis stream {stream:?} does not exist"))
                }
                e => aws("ListShards", stream, e),
            }
        })?;
        shards.extend(out.shards.unwrap_or_default());
        match out.next_token {
            Some(t) => token = Some(t),
            None => return Ok(shards),
        }
    }
}

/// Read every shard of `stream` from its saved checkpoint, children after their parents,
/// until the channel closes.
async fn run(client: Client, stream: String, saved: &Resume, start: Start, tx: Sender<Delivery>) -> Result<()> {
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut ended: HashSet<String> = saved.iter().filter(|(_, s)| s.ended).map(|(k, _)| k.clone()).collect();
    let mut started: HashSet<String> = HashSet::new();
    let mut readers = tokio::task::JoinSet::new();
    loop {
        let shards = list_shards(&client, &stream).await?;
        let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        for shard in &shards {
            let id = shard.shard_id.clone();
            if started.contains(&id) || ended.contains(&id) {
                continue;
            }
            // A child starts once its parents are read to their end (or have expired).
            let parents = [shard.parent_shard_id.as_deref(), shard.adjacent_parent_shard_id.as_deref()];
            if parents.iter().flatten().any(|p| known.contains(p) && !ended.contains(*p)) {
                continue;
            }
            started.insert(id.clone());
            let checkpoint = saved.get(&id).and_then(|s| s.checkpoint.clone());
            let (client, stream, tx, ended_tx) = (client.clone(), stream.clone(), tx.clone(), ended_tx.clone());
            readers.spawn(async move {
                let out = read_shard(&client, &stream, &id, checkpoint, start, &tx).await;
                if out.is_ok() {
                    let _ = ended_tx.send(id);
                }
                out
            });
        }
        tokio::select! {
            id = ended_rx.recv() => {
                if let Some(id) = id {
                    ended.insert(id);
                }
            }
            Some(done) = readers.join_next() => {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(Error::backend(crate::error::Backend::Kinesis, "a shard reader", e)),
                }
            }
            // New shards appear when the stream is resharded.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}

async fn iterator(
    client: &Client,
    stream: &str,
    shard: &str,
    after: Option<&str>,
    start: Start,
) -> Result<Option<String>> {
    let req = client.get_shard_iterator().stream_name(stream).shard_id(shard);
    let req = match after {
        Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
        None if start == Start::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
        None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req.send().await.map_err(|e| aws("GetShardIterator", stream, aws_sdk_kinesis::Error::from(e)))?;
    Ok(out.shard_iterator)
}

async fn read_shard(
    client: &Client,
    stream: &str,
    shard: &str,
    checkpoint: Option<String>,
    start: Start,
    tx: &Sender<Delivery>,
) -> Result<()> {
    let mut last = checkpoint;
    let mut it = iterator(client, stream, shard, last.as_deref(), start).await?;
    let mut backoff = Duration::from_millis(200);
    while let Some(current) = it.take() {
        let out = match client.get_records().shard_iterator(&current).limit(10_000).send().await {
            Ok(out) => out,
            Err(e) => match aws_sdk_kinesis::Error::from(e) {
                aws_sdk_kinesis::Error::ExpiredIteratorException(_) => {
                    it = iterator(client, stream, shard, last.as_deref(), start).await?;
                    continue;
                }
                aws_sdk_kinesis::Error::ProvisionedThroughputExceededException(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    it = Some(current);
                    continue;
                }
                e => return Err(aws("GetRecords", stream, e)),
            },
        };
        backoff = Duration::from_millis(200);
        let empty = out.records.is_empty();
        if !empty {
            let records: Vec<SourceRecord> = out
                .records
                .into_iter()
                .map(|r| SourceRecord {
                    pos: Pos::parse(&r.sequence_number),
                    arrival_ms: r.approximate_arrival_timestamp.and_then(|t| t.to_millis().ok()).unwrap_or(0),
                    data: bytes::Bytes::from(r.data.into_inner()),
                    ack: None,
                    id: None,
                })
                .collect();
            last = records.last().map(|r| r.pos.to_string());
            if tx.send(Delivery::Records { shard: shard.to_string(), records }).await.is_err() {
                return Ok(());
            }
        }
        match out.next_shard_iterator {
            Some(next) => it = Some(next),
            None => {
                let _ = tx.send(Delivery::End { shard: shard.to_string() }).await;
                return Ok(());
            }
        }
        // At most five reads a second per shard; once caught up, one a second.
        let caught_up = empty || out.millis_behind_latest == Some(0);
        tokio::time::sleep(Duration::from_millis(if caught_up { 1000 } else { 200 })).await;
    }
    Ok(())
}
