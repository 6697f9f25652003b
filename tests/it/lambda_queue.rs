//! Seed 003 on the stack: a queue's messages through the on-stream function into a DynamoDB
//! table (and files), and a Kinesis shard replayed into the same table, with the function
//! called in-process with events as Lambda's event source mappings deliver them, against the
//! moto emulator that `scripts/test` starts on loopback. The statements are the example's
//! (`examples/queue-to-table/statements.sh`): every 100th re-issues an earlier one with a
//! corrected amount, which the table keeps whatever comes again after it.
#![cfg(feature = "lambda")]

use crate::common;

use common::{emulator, unique};

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::{json, Value};
use sluicebox::backends::cloud::Cloud;
use sluicebox::backends::sink::dynamodb::DynamoSink;
use sluicebox::backends::sink::Sink;
use sluicebox::lambda::{Function, Settings};

/// When the first statement was sent; the others follow 3 ms apart, all within one second.
const T0: i64 = 1_790_000_000_000;

/// The example's first `n` statements, as `sluicebox produce` sends them (JSON objects of the
/// CSV's strings).
fn statements(n: usize) -> Vec<Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/queue-to-table/statements.sh");
    let out = std::process::Command::new("sh").arg(script).arg(n.to_string()).output().unwrap();
    assert!(out.status.success());
    let mut rdr = csv::Reader::from_reader(&out.stdout[..]);
    let header = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|row| {
            let row = row.unwrap();
            Value::Object(header.iter().zip(row.iter()).map(|(k, v)| (k.into(), Value::String(v.into()))).collect())
        })
        .collect()
}

/// A message: its id, when it was sent, its statement.
type Message<'a> = (String, i64, &'a Value);

/// Statement `i` as the message the producer sent.
fn message(rows: &[Value], i: usize) -> Message<'_> {
    (format!("msg-{i:05}"), T0 + 3 * i as i64, &rows[i])
}

/// An SQS event as Lambda delivers it.
fn sqs_event(queue_arn: &str, messages: &[Message<'_>]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, sent, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{}", unique("rh")),
                "body": body.to_string(),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent.to_string(),
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": (sent + 20).to_string(),
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

/// A Kinesis event of one shard's records (sequence numbers from `first`), as Lambda delivers it.
fn kinesis_event(stream_arn: &str, first: usize, rows: &[Value]) -> Value {
    let records: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let seq = format!("49590338271490256608559692538361571095921575989136{:06}", first + i);
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["statement_id"],
                    "sequenceNumber": seq,
                    "data": aws_smithy_types::base64::encode(r.to_string()),
                    "approximateArrivalTimestamp": 1_790_000_000 + (first + i) as i64,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{seq}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/sluicebox-on-stream",
                "awsRegion": "us-east-1",
                "eventSourceARN": stream_arn,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Hand `event` to `f`; the failures it answers with.
async fn hand(f: &Function, event: Value) -> Vec<String> {
    failures(&f.on_stream_event(event, Duration::from_secs(300)).await.unwrap())
}

/// The failures an answer names.
fn failures(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// A deployment: the job file in a bucket, a ledger, the statements table, and files under
/// `statements/` of `dest_bucket`.
struct Loader {
    conf: aws_config::SdkConfig,
    bucket: String,
    dest_bucket: String,
    ledger: String,
    table: String,
    _scratch: tempfile::TempDir,
}

impl Loader {
    async fn new() -> Loader {
        let conf = emulator().await;
        let (bucket, dest_bucket) = (unique("loader"), unique("loader-out"));
        let (ledger, table) = (unique("loader-ledger"), unique("statements"));
        let s3 = sluicebox::backends::aws::s3(&conf);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        s3.create_bucket().bucket(&dest_bucket).send().await.unwrap();
        let ddb = sluicebox::backends::aws::dynamodb(&conf);
        sluicebox::backends::ledger::dynamodb::DynamoLedger::create_table(&ddb, &ledger).await.unwrap();
        DynamoSink::create_table(&ddb, &table).await.unwrap();
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/queue-to-table/job-aws.toml");
        let job = std::fs::read_to_string(example)
            .unwrap()
            .replace("table = \"statements\"", &format!("table = \"{table}\""))
            + "\n[stream]\nsize_mib = 1\n";
        assert!(job.contains(&table));
        s3.put_object().bucket(&bucket).key("config/job.toml").body(job.into_bytes().into()).send().await.unwrap();
        Loader { conf, bucket, dest_bucket, ledger, table, _scratch: tempfile::tempdir().unwrap() }
    }

    /// A function (a container of its own).
    async fn function(&self) -> Function {
        let scratch = self._scratch.path().join(unique("function"));
        let settings = Settings::from_vars(|v| {
            Some(match v {
                "SLUICEBOX_BUCKET" => format!("s3://{}/results", self.bucket),
                "SLUICEBOX_QUEUE" => "memory://tasks".into(),
                "SLUICEBOX_LEDGER" => format!("dynamodb://{}", self.ledger),
                "SLUICEBOX_JOB" => format!("s3://{}/config/job.toml", self.bucket),
                "SLUICEBOX_STREAM_TO" => format!("s3://{}/statements", self.dest_bucket),
                "SLUICEBOX_SCRATCH" => scratch.display().to_string(),
                _ => return None,
            })
        })
        .unwrap();
        Function::new(settings, Cloud::aws(self.conf.clone())).await.unwrap()
    }

    /// The table: each statement's amount and the row (`issued`) it came from.
    async fn table(&self) -> BTreeMap<String, (f64, String)> {
        let sink = DynamoSink::new(sluicebox::backends::aws::dynamodb(&self.conf), &self.table);
        let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap();
        sink.read_all()
            .await
            .unwrap()
            .into_values()
            .map(|r| {
                let id = r["statement_id"].as_str().unwrap().to_string();
                (id, (number(&r["amount"]), r["issued"].to_string()))
            })
            .collect()
    }

    /// The rows (`issued`) in the files (gzip CSV), in any order, each as often as it is in one.
    async fn rows_in_files(&self) -> Vec<u64> {
        let url = format!("s3://{}/statements", self.dest_bucket);
        let store = sluicebox::backends::bucket::open(&url, &Cloud::aws(self.conf.clone())).unwrap();
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut rows = Vec::new();
        for m in metas {
            assert!(!m.location.as_ref().starts_with("errors/"), "a reject: {}", m.location);
            let raw = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            // CSV, as the job lists its output fields, with a header.
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap();
            let mut rdr = csv::Reader::from_reader(text.as_bytes());
            let at = rdr.headers().unwrap().iter().position(|h| h == "issued").unwrap();
            rows.extend(rdr.records().map(|r| r.unwrap()[at].parse::<u64>().unwrap()));
        }
        rows.sort_unstable();
        rows
    }
}

/// What the table should hold after `delivered` rows: per statement, the row sent last.
fn latest(rows: &[Value], delivered: impl IntoIterator<Item = usize>) -> BTreeMap<String, (f64, String)> {
    let mut by_sent: BTreeMap<String, (usize, f64, String)> = BTreeMap::new();
    for i in delivered {
        let r = &rows[i];
        let id = r["statement_id"].as_str().unwrap().to_string();
        let amount: f64 = r["amount"].as_str().unwrap().parse().unwrap();
        let issued: u64 = r["issued"].as_str().unwrap().parse().unwrap();
        if by_sent.get(&id).is_none_or(|(at, ..)| *at < i) {
            by_sent.insert(id, (i, amount, issued.to_string()));
        }
    }
    by_sent.into_iter().map(|(id, (_, amount, issued))| (id, (amount, issued))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_batches_load_the_table_and_files_once_through_duplicates_redeliveries_and_stale_copies() {
    let loader = Loader::new().await;
    let rows = statements(300);
    let queue = format!("arn:aws:sqs:us-east-1:123456789012:{}", unique("statements"));
    let (f, g) = (loader.function().await, loader.function().await);
    let deliver = |f, messages: Vec<Message<'_>>| hand(f, sqs_event(&queue, &messages));

    // Statements 0..200, two of them delivered twice within the batch.
    let mut first: Vec<Message<'_>> = (0..200).map(|i| message(&rows, i)).collect();
    first.insert(20, message(&rows, 5));
    first.push(message(&rows, 150));
    assert_eq!(deliver(&f, first).await, Vec::<String>::new());
    // Statements 100..300 by another container: 100..200 again (the queue redelivered them),
    // again with two duplicates, numbered as the first batch was and sent in the same second.
    let mut second: Vec<Message<'_>> = (100..300).map(|i| message(&rows, i)).collect();
    second.insert(3, message(&rows, 299));
    second.insert(50, message(&rows, 101));
    assert_eq!(deliver(&g, second).await, Vec::<String>::new());
    // A stale copy of statement 50 (row 49), redelivered after its correction (row 99).
    assert_eq!(rows[99]["statement_id"], rows[49]["statement_id"], "row 99 corrects row 49");
    assert_eq!(deliver(&f, vec![message(&rows, 49)]).await, Vec::<String>::new());

    let table = loader.table().await;
    assert_eq!(table, latest(&rows, 0..300), "each statement's latest row, the corrections winning");
    assert_eq!(table.len(), 297, "300 rows, 3 of them corrections");
    // Files: a duplicate within a batch once; a redelivery in a later invocation again (only
    // the table absorbs those); no invocation's file replacing another's.
    let issued = |range: std::ops::Range<usize>| range.map(|i| i as u64 + 1);
    let mut want: Vec<u64> = issued(0..200).chain(issued(100..300)).chain(issued(49..50)).collect();
    want.sort_unstable();
    assert_eq!(loader.rows_in_files().await, want);

    // A destination that refuses the files: every message comes back, by its id.
    let broken = Loader { dest_bucket: unique("missing"), ..Loader::new().await };
    let h = broken.function().await;
    let messages: Vec<Message<'_>> = (0..30).map(|i| message(&rows, i)).collect();
    let ids: Vec<String> = messages.iter().map(|m| m.0.clone()).collect();
    let event = sqs_event(&queue, &messages);
    assert_eq!(failures(&h.on_stream_event(event, Duration::from_secs(300)).await.unwrap()), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_kinesis_shard_changes_nothing_in_the_table_and_writes_no_file_twice() {
    let loader = Loader::new().await;
    let rows = statements(250);
    let stream = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{}", unique("statements"));
    let f = loader.function().await;
    let deliver = |f, first, rows: &[Value]| hand(f, kinesis_event(&stream, first, rows));
    assert_eq!(deliver(&f, 0, &rows[..150]).await, Vec::<String>::new());
    assert_eq!(deliver(&f, 150, &rows[150..]).await, Vec::<String>::new());
    let table = loader.table().await;
    assert_eq!(table, latest(&rows, 0..250));
    let files = loader.rows_in_files().await;
    assert_eq!(files, (1..=250).collect::<Vec<u64>>());

    // The shard replayed from its start (a new mapping at TRIM_HORIZON), by a new container:
    // the stale rows that the corrections replaced come again, and change nothing.
    let g = loader.function().await;
    assert_eq!(deliver(&g, 0, &rows[..200]).await, Vec::<String>::new());
    assert_eq!(deliver(&g, 200, &rows[200..]).await, Vec::<String>::new());
    assert_eq!(loader.table().await, table);
    assert_eq!(loader.rows_in_files().await, files, "a replayed shard wrote files again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_is_neither_kinesis_nor_sqs_is_refused_as_input() {
    let loader = Loader::new().await;
    let f = loader.function().await;
    let err = f.on_stream_event(json!({"Records": [{"eventSource": "aws:sqs", "body": 7}]}), Duration::from_secs(9));
    let err = err.await.unwrap_err().to_string();
    assert!(err.contains("aws:sqs"), "{err}");
    let answer = f.on_stream_event(json!({"Records": []}), Duration::from_secs(9)).await.unwrap();
    assert!(failures(&answer).is_empty());
}
