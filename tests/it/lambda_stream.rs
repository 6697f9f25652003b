//! The on-stream handler, called in-process with Kinesis events as a Lambda event source mapping
//! delivers them (base64 data, `eventID` = `shardId-…:SEQUENCE`, arrival times in seconds),
//! against the moto emulator that `scripts/test` starts on loopback. The orders, as JSON
//! objects, come on two shards in batches that are handed over whole, again, from their
//! middle, overlapping, and after failures; every order ends in exactly one object.
#![cfg(feature = "lambda")]

use crate::common;

use common::{emulator, orders_dir, unique};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::{json, Value};
use sluicebox::backends::cloud::Cloud;
use sluicebox::lambda::{Function, Settings};

/// One record on a shard, as the stream holds it.
#[derive(Clone)]
struct Put {
    shard: usize,
    sequence: String,
    uuid: String,
    data: Vec<u8>,
}

/// The first `n` orders as JSON objects (the CSV header's names, string values, as `sluicebox
/// produce` puts them), alternating between two shards, with 56-digit sequence numbers.
fn orders(n: usize) -> [Vec<Put>; 2] {
    let mut rdr = csv::Reader::from_path(orders_dir().join("orders.csv")).unwrap();
    let header = rdr.headers().unwrap().clone();
    let mut shards: [Vec<Put>; 2] = [Vec::new(), Vec::new()];
    for (i, row) in rdr.records().take(n).enumerate() {
        let row = row.unwrap();
        let object: serde_json::Map<String, Value> =
            header.iter().zip(row.iter()).map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        let shard = i % 2;
        let sequence = format!("4959033827149025660855969253836157109592157598913{}{:06}", shard, shards[shard].len());
        shards[shard].push(Put {
            shard,
            sequence,
            uuid: row[0].to_string(),
            data: serde_json::to_vec(&Value::Object(object)).unwrap(),
        });
    }
    shards
}

/// A Kinesis event as Lambda delivers it.
fn event(stream_arn: &str, records: &[&[Put]]) -> KinesisEvent {
    let records: Vec<Value> = records
        .iter()
        .flat_map(|r| r.iter())
        .enumerate()
        .map(|(i, p)| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": p.uuid,
                    "sequenceNumber": p.sequence,
                    "data": aws_smithy_types::base64::encode(&p.data),
                    "approximateArrivalTimestamp": arrival(i),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-00000000000{}:{}", p.shard, p.sequence),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/sluicebox-on-stream",
                "awsRegion": "us-east-1",
                "eventSourceARN": stream_arn,
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// An arrival time as Kinesis gives it: seconds with three digits of milliseconds (no trailing
/// zero: aws_lambda_events 1.x reads `.25` as 25 ms).
fn arrival(i: usize) -> Value {
    serde_json::from_str(&format!("{}.{:03}", 1_718_000_000 + i / 10, (i % 10) * 100 + 7)).unwrap()
}

fn failures(r: &KinesisEventResponse) -> Vec<String> {
    r.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap_or_default()).collect()
}

/// A deployment: a bucket with the job file (its reference in the bucket too), a ledger
/// table, and a function writing under `orders/` of `dest_bucket`.
struct Stack {
    conf: aws_config::SdkConfig,
    bucket: String,
    dest_bucket: String,
    ledger: String,
    stream_arn: String,
    _scratch: tempfile::TempDir,
}

impl Stack {
    async fn new(create_dest: bool) -> Stack {
        let conf = emulator().await;
        let (bucket, ledger) = (unique("on-stream"), unique("stream-ledger"));
        let dest_bucket = unique("stream-out");
        let s3 = sluicebox::backends::aws::s3(&conf);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        if create_dest {
            s3.create_bucket().bucket(&dest_bucket).send().await.unwrap();
        }
        let ddb = sluicebox::backends::aws::dynamodb(&conf);
        sluicebox::backends::ledger::dynamodb::DynamoLedger::create_table(&ddb, &ledger).await.unwrap();
        let reference = std::fs::read(orders_dir().join("financial.csv")).unwrap();
        s3.put_object().bucket(&bucket).key("reference/financial.csv").body(reference.into()).send().await.unwrap();
        let stack = Stack {
            conf,
            bucket,
            dest_bucket,
            ledger,
            stream_arn: format!("arn:aws:kinesis:us-east-1:123456789012:stream/{}", unique("orders")),
            _scratch: tempfile::tempdir().unwrap(),
        };
        stack.put_job(&format!("s3://{}/reference/financial.csv", stack.bucket)).await;
        stack
    }

    /// The orders job enriched from `reference`, in files of at most 100 records per region.
    async fn put_job(&self, reference: &str) {
        let job = std::fs::read_to_string(orders_dir().join("job.toml"))
            .unwrap()
            .replace("source = \"financial.csv\"", &format!("source = {reference:?}"))
            + "\n[stream]\nrecords = 100\nsize_mib = 1\npartition = \"region={region}\"\n";
        let s3 = sluicebox::backends::aws::s3(&self.conf);
        s3.put_object().bucket(&self.bucket).key("config/job.toml").body(job.into_bytes().into()).send().await.unwrap();
    }

    /// A function (a container of its own, with its own scratch directory).
    async fn function(&self) -> Function {
        let scratch = self._scratch.path().join(unique("function"));
        let settings = Settings::from_vars(|v| {
            Some(match v {
                "SLUICEBOX_BUCKET" => format!("s3://{}/results", self.bucket),
                "SLUICEBOX_QUEUE" => "memory://tasks".into(),
                "SLUICEBOX_LEDGER" => format!("dynamodb://{}", self.ledger),
                "SLUICEBOX_JOB" => format!("s3://{}/config/job.toml", self.bucket),
                "SLUICEBOX_STREAM_TO" => format!("s3://{}/orders", self.dest_bucket),
                "SLUICEBOX_SCRATCH" => scratch.display().to_string(),
                _ => return None,
            })
        })
        .unwrap();
        Function::new(settings, Cloud::aws(self.conf.clone())).await.unwrap()
    }

    /// Hand `records` to `f` as one event; the failures it reports.
    async fn deliver(&self, f: &Function, records: &[&[Put]]) -> Vec<String> {
        failures(&f.on_stream(event(&self.stream_arn, records), Duration::from_secs(300)).await)
    }

    /// Every object under the destination, decompressed, by key.
    async fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let url = format!("s3://{}/orders", self.dest_bucket);
        let store = sluicebox::backends::bucket::open(&url, &Cloud::aws(self.conf.clone())).unwrap();
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for m in metas {
            let raw = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let mut bytes = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut bytes).unwrap();
            out.insert(m.location.to_string(), bytes);
        }
        out
    }

    /// Check that every order of `shards` is in exactly one object (written under its region,
    /// or rejected under errors/), and no other record is.
    async fn assert_each_order_once(&self, shards: &[Vec<Put>]) {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        for (name, bytes) in self.objects().await {
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let r: Value = serde_json::from_slice(line).unwrap();
                let uuid = if name.starts_with("errors/") {
                    assert!(r["rule"].is_string() && r["message"].is_string(), "{name}: {r}");
                    let raw: Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
                    raw["uuid"].as_str().unwrap().to_string()
                } else {
                    let region = r["region"].as_str().unwrap().replace('/', "%2F");
                    assert!(name.starts_with(&format!("region={region}/part-")), "{name}: {r}");
                    assert!(r["unitsSold"].is_number(), "not enriched: {r}");
                    r["uuid"].as_str().unwrap().to_string()
                };
                seen.entry(uuid).or_default().push(name.clone());
            }
        }
        let doubled: Vec<_> = seen.iter().filter(|(_, files)| files.len() > 1).take(3).collect();
        assert!(doubled.is_empty(), "orders in two objects: {doubled:?}");
        let want: HashSet<&str> = shards.iter().flatten().map(|p| p.uuid.as_str()).collect();
        let got: HashSet<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(got.len(), want.len(), "orders missing or unexpected");
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retried_whole_from_their_middle_and_overlapping_put_every_order_in_one_object() {
    let stack = Stack::new(true).await;
    let shards = orders(1200);
    let (a, b) = (&shards[0], &shards[1]);
    let f = stack.function().await;

    // Each shard's first batch, as two invocations.
    assert_eq!(stack.deliver(&f, &[&a[..250]]).await, Vec::<String>::new());
    assert_eq!(stack.deliver(&f, &[&b[..300]]).await, Vec::<String>::new());
    let first = stack.objects().await;
    assert!(first.len() >= 14, "{} objects", first.len());
    stack.assert_each_order_once(&[a[..250].to_vec(), b[..300].to_vec()]).await;

    // The same batch again (a retry): nothing new, nothing reported.
    assert_eq!(stack.deliver(&f, &[&a[..250]]).await, Vec::<String>::new());
    assert_eq!(stack.objects().await, first, "a retried batch wrote again");

    // A retry from the middle of a batch (after a partial failure), and by another container.
    let g = stack.function().await;
    assert_eq!(stack.deliver(&g, &[&b[150..300]]).await, Vec::<String>::new());
    assert_eq!(stack.objects().await, first, "the tail of a written batch wrote again");

    // Batches overlapping what is written, and one event holding both shards.
    assert_eq!(stack.deliver(&f, &[&a[200..450]]).await, Vec::<String>::new());
    assert_eq!(stack.deliver(&g, &[&b[250..520], &a[400..600]]).await, Vec::<String>::new());
    assert_eq!(stack.deliver(&f, &[&a[600..], &b[500..]]).await, Vec::<String>::new());
    stack.assert_each_order_once(&shards).await;
    let all = stack.objects().await;

    // Everything once more, both shards from their start: nothing new.
    assert_eq!(stack.deliver(&g, &[&a[..], &b[..]]).await, Vec::<String>::new());
    assert_eq!(stack.objects().await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shard_comes_back_from_its_first_sequence_number_and_its_retry_writes_each_order_once() {
    // The destination bucket does not exist yet: every file put fails.
    let stack = Stack::new(false).await;
    let shards = orders(400);
    let (a, b) = (&shards[0], &shards[1]);
    let f = stack.function().await;
    let failed = stack.deliver(&f, &[&a[50..200]]).await;
    assert_eq!(failed, vec![a[50].sequence.clone()]);

    // Once it exists, the mapping's retry from that record writes the batch, once.
    sluicebox::backends::aws::s3(&stack.conf).create_bucket().bucket(&stack.dest_bucket).send().await.unwrap();
    assert_eq!(stack.deliver(&f, &[&a[50..200]]).await, Vec::<String>::new());
    stack.assert_each_order_once(&[a[50..200].to_vec()]).await;

    // One shard's failure (its stored state unreadable) leaves the other's result standing.
    let ledger =
        sluicebox::backends::ledger::open(&format!("dynamodb://{}", stack.ledger), &Cloud::aws(stack.conf.clone()))
            .await
            .unwrap();
    let stream = stack.stream_arn.rsplit_once('/').unwrap().1;
    let broken = format!("{stream}/shardId-000000000001");
    assert!(ledger.put_checkpoint(&broken, 0, "not a state").await.unwrap());
    let failed = stack.deliver(&f, &[&a[200..], &b[..]]).await;
    assert_eq!(failed, vec![b[0].sequence.clone()]);
    stack.assert_each_order_once(&[a[50..].to_vec()]).await;
    ledger.delete_checkpoint(&broken).await.unwrap();
    assert_eq!(stack.deliver(&f, &[&b[..]]).await, Vec::<String>::new());
    stack.assert_each_order_once(&[a[50..].to_vec(), b.clone()]).await;

    // A job whose reference cannot be loaded fails every shard of the batch, each from its
    // first record, and writes nothing.
    stack.put_job(&format!("s3://{}/reference/missing.csv", stack.bucket)).await;
    let before = stack.objects().await;
    let fresh = orders(600);
    let g = stack.function().await;
    let failed = stack.deliver(&g, &[&fresh[0][200..], &fresh[1][200..]]).await;
    assert_eq!(failed, vec![fresh[0][200].sequence.clone(), fresh[1][200].sequence.clone()]);
    assert_eq!(stack.objects().await, before);
}
