//! The stream functions' handlers: a Kinesis batch ([`Function::on_stream`]) or an SQS batch
//! ([`Function::on_messages`]) through the job of `SLUICEBOX_JOB`, into files under
//! `SLUICEBOX_STREAM_TO` and into the job's sink; [`Function::on_stream_event`] takes either,
//! as the on-stream function is given them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::streams::KinesisEventResponse;
use serde_json::Value;
use tracing::{info, warn};

use super::{log_failure, Function};
use crate::backends::lookup::LookupTable;
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::stream::source::batch::Acked;
use crate::stream::source::SourceRecord;
use crate::stream::state::Pos;
use crate::stream::{Options as StreamOptions, Source, Stream};

impl Function {
    /// A stream function's event, Kinesis or SQS (told apart by its records' `eventSource`),
    /// answered with the `batchItemFailures` of either: sequence numbers or message ids.
    pub async fn on_stream_event(&self, event: Value, remaining: Duration) -> Result<Value> {
        let source = event.pointer("/Records/0/eventSource").and_then(Value::as_str).unwrap_or_default().to_string();
        let unreadable = |e: serde_json::Error| Error::input("the event", format!("not a {source} event: {e}"));
        let answer = if source == "aws:sqs" {
            let event: SqsEvent = serde_json::from_value(event).map_err(unreadable)?;
            serde_json::to_value(self.on_messages(event, remaining).await)
        } else {
            let event: KinesisEvent = serde_json::from_value(event).map_err(unreadable)?;
            serde_json::to_value(self.on_stream(event, remaining).await)
        };
        answer.map_err(|e| Error::internal("on-stream", "the answer", e))
    }

    /// Write a batch of Kinesis records into files, one consumer per shard, and answer with
    /// the first sequence number of every shard whose batch is to come back
    /// (`batchItemFailures`). `remaining` (the invocation's time left) only measures: a batch
    /// that takes most of it is logged, since the next larger one would time out.
    pub async fn on_stream(&self, event: KinesisEvent, remaining: Duration) -> KinesisEventResponse {
        let started = Instant::now();
        let batches = shard_batches(event);
        let mut response = KinesisEventResponse::default();
        if batches.is_empty() {
            return response;
        }
        let (stream, to) = match self.stream().await {
            Ok(ready) => ready,
            Err(e) => {
                log_failure("cannot prepare the stream; every shard's batch will be retried", &e);
                batches.into_iter().for_each(|b| response.add_failure(b.first));
                return response;
            }
        };
        let runs = batches.into_iter().map(|b| self.stream_batch(&stream, &to, b));
        for first in futures::future::join_all(runs).await.into_iter().flatten() {
            response.add_failure(first);
        }
        warn_if_slow(started, remaining);
        response
    }

    /// What every shard's run shares: the job (from `SLUICEBOX_JOB`), its reference, the
    /// destination and the ledger; and the destination's URL.
    async fn stream(&self) -> Result<(Stream, String)> {
        let to = self.settings.stream_to.clone().ok_or_else(|| {
            Error::config("SLUICEBOX_STREAM_TO", "is not set: on-stream needs s3://BUCKET/PREFIX for the files")
        })?;
        let spec = self.spec().await?;
        let lookup = self.stream_lookup(&spec).await?;
        let dest = crate::backends::bucket::open(&to, &self.engine.cloud)?;
        let stream = Stream::new(&self.engine, (*spec).clone(), lookup, dest)?;
        Ok((stream, to))
    }

    /// The reference of `spec`, loaded again only when the job file has changed.
    async fn stream_lookup(&self, spec: &Arc<JobSpec>) -> Result<Option<Arc<LookupTable>>> {
        let mut cached = self.stream_lookup.lock().await;
        if let Some((loaded_for, table)) = cached.as_ref() {
            if Arc::ptr_eq(loaded_for, spec) {
                return Ok(table.clone());
            }
        }
        let table = self.engine.open_lookup(spec.enrich.as_ref()).await?;
        *cached = Some((spec.clone(), table.clone()));
        Ok(table)
    }

    /// Run one shard's batch: `None` when every record is in a file, else the batch's first
    /// sequence number, for the mapping to retry from.
    async fn stream_batch(&self, stream: &Stream, to: &str, batch: ShardBatch) -> Option<String> {
        let ShardBatch { consumer, shard, first, records } = batch;
        let opts = StreamOptions {
            from: Source::Batch { shard, records },
            to: to.to_string(),
            name: Some(consumer),
            idle_exit: None,
            latest: false,
        };
        match stream.run(&opts, std::future::pending()).await {
            Ok(r) => {
                info!(
                    consumer = %r.name, records = r.records, written = r.written, rejected = r.rejected,
                    filtered = r.filtered, skipped = r.skipped, files = r.files, "stream batch in files"
                );
                None
            }
            Err(e) => {
                log_failure(&format!("stream {}: the batch from {first} comes back", opts.name()), &e);
                Some(first)
            }
        }
    }
    /// Write a batch of SQS messages (one JSON object each) into files and the job's sink, and
    /// answer with the ids of the messages not accounted for (`batchItemFailures`), which the
    /// queue delivers again; Lambda deletes the others. A message is accounted for once its
    /// record is in a written file, in the sink, rejected into a file, or filtered out. A
    /// message delivered twice within the batch goes in once (`[stream] dedup_window_s`); one
    /// delivered again in a later invocation goes into the table harmlessly (the same key and
    /// version) and into files again. The version of a record is the message's
    /// `SentTimestamp`, so a redelivered message never replaces a newer one in the table.
    pub async fn on_messages(&self, event: SqsEvent, remaining: Duration) -> SqsBatchResponse {
        let started = Instant::now();
        let mut response = SqsBatchResponse::default();
        let Some(queue) = event.records.first().map(|m| m.event_source_arn.clone().unwrap_or_default()) else {
            return response;
        };
        let ids: Vec<String> = event.records.iter().map(|m| m.message_id.clone().unwrap_or_default()).collect();
        let (stream, to) = match self.stream().await {
            Ok(ready) => ready,
            Err(e) => {
                log_failure("cannot prepare the stream; every message comes back", &e);
                ids.iter().for_each(|id| response.add_failure(id));
                return response;
            }
        };
        let records: Vec<SourceRecord> = event
            .records
            .into_iter()
            .zip(1..)
            .map(|(m, n)| {
                let id = m.message_id.unwrap_or_default();
                // When it was sent, the same on every delivery; received now if it is missing.
                let arrival_ms = m
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                let data = bytes::Bytes::from(m.body.unwrap_or_default());
                SourceRecord { pos: Pos::N(n), arrival_ms, data, ack: Some(id.clone()), id: Some(id) }
            })
            .collect();
        let consumer = queue.rsplit(':').next().unwrap_or(queue.as_str()).to_string();
        let acked = Acked::default();
        let opts = StreamOptions {
            from: Source::Messages { queue, records, acked: acked.clone() },
            to,
            name: Some(consumer),
            idle_exit: None,
            latest: false,
        };
        match stream.run(&opts, std::future::pending()).await {
            Ok(r) => info!(
                consumer = %r.name, records = r.records, written = r.written, rejected = r.rejected,
                filtered = r.filtered, duplicates = r.duplicates, upserted = r.upserted, files = r.files,
                "queue batch accounted for"
            ),
            Err(e) => log_failure(&format!("stream {}: messages not accounted for come back", opts.name()), &e),
        }
        let acked = acked.ids();
        let mut told = std::collections::BTreeSet::new();
        for id in ids.iter().filter(|id| !acked.contains(*id)) {
            if told.insert(id) {
                response.add_failure(id);
            }
        }
        warn_if_slow(started, remaining);
        response
    }
}

/// A batch that took most of the invocation's time is logged: the next larger one would time
/// out.
fn warn_if_slow(started: Instant, remaining: Duration) {
    let took = started.elapsed();
    if took > remaining / 2 {
        warn!(
            seconds = took.as_secs_f64(),
            remaining = remaining.as_secs_f64(),
            "a stream batch took over half the invocation's time: lower the mapping's BatchSize or raise the timeout"
        );
    }
}

/// One shard's records in a Kinesis event.
#[derive(Debug, Clone, PartialEq)]
struct ShardBatch {
    /// The consumer's name, under which the shard's checkpoint is kept: `STREAM/SHARD`.
    consumer: String,
    /// The shard's id.
    shard: String,
    /// The first record's sequence number: where a retry starts.
    first: String,
    /// Its records, in the order given.
    records: Vec<SourceRecord>,
}

/// The event's records by shard (the stream's ARN and the shard id that starts each record's
/// `eventID`, `shardId-…:SEQUENCE`), each shard's in the order given.
fn shard_batches(event: KinesisEvent) -> Vec<ShardBatch> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut batches: Vec<ShardBatch> = Vec::new();
    for r in event.records {
        let arn = r.event_source_arn.unwrap_or_default();
        let id = r.event_id.unwrap_or_default();
        let shard = id.split_once(':').map_or(id.as_str(), |(shard, _)| shard).to_string();
        let key = (arn, shard);
        let i = match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                let stream = key.0.rsplit_once(":stream/").map_or(key.0.as_str(), |(_, name)| name);
                batches.push(ShardBatch {
                    consumer: format!("{stream}/{}", key.1),
                    shard: key.1.clone(),
                    first: r.kinesis.sequence_number.clone(),
                    records: Vec::new(),
                });
                keys.push(key);
                batches.len() - 1
            }
        };
        batches[i].records.push(SourceRecord {
            pos: Pos::parse(&r.kinesis.sequence_number),
            arrival_ms: r.kinesis.approximate_arrival_timestamp.0.timestamp_millis(),
            data: bytes::Bytes::from(r.kinesis.data.0),
            ack: None,
            id: None,
        });
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinesis_event_is_grouped_by_shard_in_order_with_each_shards_first_sequence_number() {
        let record = |shard: &str, seq: &str, data: &str| {
            serde_json::json!({
                "eventID": format!("{shard}:{seq}"),
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                "kinesis": {
                    "sequenceNumber": seq,
                    "partitionKey": "k",
                    "data": aws_smithy_types::base64::encode(data),
                    // Milliseconds, as Kinesis gives them: aws_lambda_events 1.x reads the digits
                    // after the point as milliseconds whatever their number (`.25` as 25 ms).
                    "approximateArrivalTimestamp": 1718000000.123,
                },
            })
        };
        let event: KinesisEvent = serde_json::from_value(serde_json::json!({"Records": [
            record("shardId-000000000001", "20", "{\"a\":1}"),
            record("shardId-000000000000", "7", "{\"a\":2}"),
            record("shardId-000000000001", "21", "{\"a\":3}"),
        ]}))
        .unwrap();
        let batches = shard_batches(event);
        let got: Vec<(&str, &str, &str, usize)> = batches
            .iter()
            .map(|b| (b.consumer.as_str(), b.shard.as_str(), b.first.as_str(), b.records.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("orders/shardId-000000000001", "shardId-000000000001", "20", 2),
                ("orders/shardId-000000000000", "shardId-000000000000", "7", 1)
            ]
        );
        let r = &batches[0].records[1];
        assert_eq!((r.pos.clone(), r.arrival_ms, &r.data[..]), (Pos::N(21), 1_718_000_000_123, &b"{\"a\":3}"[..]));
    }
}
