//! `sluicebox produce` against the Kinesis of the moto emulator that `scripts/test` starts on
//! loopback: the orders example put on a stream and read back from every shard. Without the
//! emulator (no `AWS_ENDPOINT_URL`) these tests fail rather than skip, as tests/it/aws.rs does.
#![cfg(feature = "aws")]

use crate::common;

use common::{emulator, unique};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};
use sluicebox::backends::calls::Tally;
use sluicebox::backends::cloud::Cloud;
use sluicebox::model::config::JobConfig;
use sluicebox::tools::produce::{self, faults::Throttled, KinesisStream, Produce, Produced, PutRecords, Retry, Source};

fn orders_csv() -> std::path::PathBuf {
    common::orders_dir().join("orders.csv")
}

/// The orders file's rows as header → text, read with the csv crate on its own.
fn orders_rows() -> Vec<Map<String, Value>> {
    let mut r = csv::Reader::from_path(orders_csv()).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|row| header.iter().cloned().zip(row.unwrap().iter().map(|v| Value::String(v.into()))).collect())
        .collect()
}

/// One record read back from a stream.
#[derive(Debug)]
struct Got {
    shard: String,
    key: String,
    data: Vec<u8>,
}

impl Got {
    fn object(&self) -> Map<String, Value> {
        assert!(self.data.ends_with(b"\n"), "each record's data ends with a newline");
        match serde_json::from_slice(&self.data).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }
}

/// Every record on every shard of `stream`, from the trim horizon, in shard order.
async fn read_back(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Got> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let shards = client.list_shards().stream_name(stream).send().await.unwrap();
    let mut got = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = client.get_records().shard_iterator(&iterator).limit(10_000).send().await.unwrap();
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                got.push(Got {
                    shard: shard.shard_id().to_string(),
                    key: r.partition_key().unwrap_or_default().to_string(),
                    data: r.data().as_ref().to_vec(),
                });
            }
            match out.next_shard_iterator {
                Some(next) => iterator = next,
                None => break,
            }
        }
    }
    got
}

/// Put `file` on `to` (the stream `stream`) as `how` says, counting the requests.
async fn produce_file(
    file: &Path,
    config: &JobConfig,
    to: &dyn PutRecords,
    stream: &str,
    how: &Produce,
) -> (sluicebox::Result<Produced>, u64) {
    let cloud = Cloud::aws(emulator().await);
    let source = Source::open(&file.display().to_string(), config, &cloud).await.unwrap();
    let tally = Tally::default();
    let bar = indicatif::ProgressBar::hidden();
    let produced = tally.scope(produce::produce(&source, to, stream, how, &bar)).await;
    let calls = tally.snapshot().get("kinesis.PutRecords").copied().unwrap_or(0);
    (produced, calls)
}

async fn new_stream(client: &aws_sdk_kinesis::Client, shards: u32) -> KinesisStream {
    KinesisStream::open(client.clone(), &unique("orders"), NonZeroU32::new(shards)).await.unwrap()
}

/// Records by uuid, failing on a uuid seen twice.
fn by_uuid(objects: impl IntoIterator<Item = Map<String, Value>>) -> BTreeMap<String, Map<String, Value>> {
    let mut out = BTreeMap::new();
    for o in objects {
        let uuid = o["uuid"].as_str().unwrap().to_string();
        assert!(out.insert(uuid.clone(), o).is_none(), "order {uuid} arrived twice");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_arrives_once_on_a_two_shard_stream_with_the_fields_of_its_row() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 2).await;
    let how = Produce::default();
    let (produced, calls) = produce_file(&orders_csv(), &JobConfig::default(), &stream, stream.name(), &how).await;
    let produced = produced.unwrap();
    let rows = orders_rows();
    let n = rows.len() as u64;
    assert_eq!(produced.records, n);
    assert_eq!(produced.entries_retried, 0);
    assert_eq!(produced.put_records_calls, n.div_ceil(500), "full requests of 500 records");
    assert_eq!(calls, produced.put_records_calls, "requests counted by the client");
    let got = read_back(&client, stream.name()).await;
    assert_eq!(got.len() as u64, n);
    assert_eq!(produced.bytes, got.iter().map(|g| g.data.len() as u64).sum::<u64>());
    let put = by_uuid(got.iter().map(Got::object));
    assert_eq!(put, by_uuid(rows), "every row once, its fields as text in the header's order");
    // Keys from the records' positions spread them over both shards.
    let mut per_shard: HashMap<&str, u64> = HashMap::new();
    for g in &got {
        *per_shard.entry(&g.shard).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 2);
    assert!(per_shard.values().all(|&c| c > n * 2 / 5), "records spread evenly: {per_shard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_one_partition_key_field_value_land_on_one_shard() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 2).await;
    let how = Produce { partition_key: Some("Region".into()), ..Produce::default() };
    let (produced, _) = produce_file(&orders_csv(), &JobConfig::default(), &stream, stream.name(), &how).await;
    assert_eq!(produced.unwrap().records, orders_rows().len() as u64);
    let got = read_back(&client, stream.name()).await;
    let mut shards: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &got {
        assert_eq!(g.object()["Region"], Value::String(g.key.clone()), "the key is the record's Region");
        shards.entry(g.key.clone()).or_default().insert(g.shard.clone());
    }
    assert!(shards.len() > 2, "{shards:?}");
    assert!(shards.values().all(|s| s.len() == 1), "each region on one shard: {shards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_refused_at_random_are_sent_again_and_every_record_arrives_once() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 2).await;
    let name = stream.name().to_string();
    // About 30% of the entries refused on each of their first two sends.
    let throttled = Throttled::new(stream, 0.3, 2);
    let retry = Retry { first: Duration::from_millis(10), max: Duration::from_millis(100), ..Retry::default() };
    let how = Produce { retry, ..Produce::default() };
    let (produced, calls) = produce_file(&orders_csv(), &JobConfig::default(), &throttled, &name, &how).await;
    let produced = produced.unwrap();
    let n = orders_rows().len() as u64;
    assert_eq!(produced.records, n);
    assert_eq!(produced.entries_retried, throttled.refusals(), "every refusal sent again, and reported");
    assert!(produced.entries_retried > n / 4, "{produced:?}");
    assert_eq!(calls, produced.put_records_calls);
    assert!(calls <= n.div_ceil(500) + produced.entries_retried, "{calls} requests");
    // Two refusals at most per entry: three rounds per batch at most.
    assert!(calls <= 3 * n.div_ceil(500), "only refused entries are sent again: {calls} requests");
    let got = read_back(&client, &name).await;
    assert_eq!(got.len() as u64, n);
    assert_eq!(by_uuid(got.iter().map(Got::object)), by_uuid(orders_rows()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_refused_every_time_fail_the_command_saying_how_many_records_were_not_put() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 1).await;
    let name = stream.name().to_string();
    let throttled = Throttled::new(stream, 1.0, u32::MAX);
    let retry =
        Retry { attempts: NonZeroU32::new(3).unwrap(), first: Duration::from_millis(1), max: Duration::from_millis(5) };
    let how = Produce { retry, ..Produce::default() };
    let (produced, calls) = produce_file(&orders_csv(), &JobConfig::default(), &throttled, &name, &how).await;
    let err = produced.unwrap_err().to_string();
    let n = orders_rows().len();
    assert!(err.contains(&format!("{n} of {n} records were not put (0 were)")), "{err}");
    assert!(err.contains("ProvisionedThroughputExceededException"), "{err}");
    assert_eq!(calls, 0, "nothing reached the stream");
    assert!(read_back(&client, &name).await.is_empty());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_1_mib_or_without_its_partition_key_stops_the_command_before_anything_is_sent() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = b"id,note\n1,a\n2,b\n".to_vec();
    csv.extend_from_slice(format!("3,{}\n4,d\n", "x".repeat(1 << 20)).as_bytes());
    let big = write(dir.path(), "big.csv", &csv);
    let (produced, calls) =
        produce_file(&big, &JobConfig::default(), &stream, stream.name(), &Produce::default()).await;
    let err = produced.unwrap_err().to_string();
    assert!(err.contains("big.csv line 4") && err.contains("Kinesis takes at most 1048576"), "{err}");
    assert_eq!(calls, 0);

    let jsonl =
        write(dir.path(), "keys.jsonl", b"{\"id\": 1, \"shop\": \"a\"}\n{\"id\": 2}\n{\"id\": 3, \"shop\": \"c\"}\n");
    let how = Produce { partition_key: Some("shop".into()), ..Produce::default() };
    let (produced, calls) = produce_file(&jsonl, &JobConfig::default(), &stream, stream.name(), &how).await;
    let err = produced.unwrap_err().to_string();
    assert!(err.contains("keys.jsonl line 2, column \"shop\"") && err.contains("no such field"), "{err}");
    assert_eq!(calls, 0);
    assert!(read_back(&client, stream.name()).await.is_empty(), "nothing was put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_json_lines_file_and_a_headerless_csv_are_put_as_their_objects() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let stream = new_stream(&client, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"id\": 1, \"tags\": [\"a\"], \"price\": 2.5}\n\n{\"id\": 2, \"tags\": [], \"price\": null}\n")
        .unwrap();
    let file = write(dir.path(), "items.jsonl.gz", &gz.finish().unwrap());
    let (produced, _) = produce_file(&file, &JobConfig::default(), &stream, stream.name(), &Produce::default()).await;
    assert_eq!(produced.unwrap().records, 2);
    let headerless = write(dir.path(), "rows.txt", b"1;x\n2;y\n");
    let job = "[input]\nformat = \"csv\"\nheader = false\ndelimiter = \";\"\n\
               [[columns]]\nname = \"id\"\ntype = \"integer\"\n[[columns]]\nname = \"name\"\n";
    let config = JobConfig::from_toml(job, "job.toml").unwrap();
    let (produced, _) = produce_file(&headerless, &config, &stream, stream.name(), &Produce::default()).await;
    assert_eq!(produced.unwrap().records, 2);
    let got: Vec<Value> = read_back(&client, stream.name()).await.iter().map(|g| Value::Object(g.object())).collect();
    let want = serde_json::json!([
        {"id": 1, "tags": ["a"], "price": 2.5},
        {"id": 2, "tags": [], "price": null},
        {"id": "1", "name": "x"},
        {"id": "2", "name": "y"},
    ]);
    assert_eq!(Value::Array(got), want, "JSON values as they were; CSV fields as text, untyped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_an_error_naming_it() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let name = unique("missing");
    let err = KinesisStream::open(client, &name, None).await.unwrap_err().to_string();
    assert!(err.contains(&format!("the Kinesis stream {name} does not exist")) && err.contains("--shards"), "{err}");
}

/// The command line end to end: the stream created with --shards, the orders put, the
/// result as one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_puts_the_orders_and_reports_them_as_json() {
    let client = sluicebox::backends::aws::kinesis(&emulator().await);
    let name = unique("cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["produce", &orders_csv().display().to_string(), "--to", &format!("kinesis://{name}")])
        .args(["--shards", "2", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["stream", "to", "records", "bytes", "seconds", "records_per_s", "put_records_calls", "entries_retried"],
        "a stable shape"
    );
    let n = orders_rows().len() as u64;
    assert_eq!(report["stream"], name.as_str());
    assert_eq!(report["records"], n);
    assert_eq!(report["put_records_calls"], n.div_ceil(500));
    assert_eq!(report["entries_retried"], 0);
    assert!(report["seconds"].as_f64().unwrap() > 0.0 && report["records_per_s"].as_f64().unwrap() > 0.0);
    let got = read_back(&client, &name).await;
    assert_eq!(got.len() as u64, n);
    assert_eq!(report["bytes"], got.iter().map(|g| g.data.len() as u64).sum::<u64>());
    let shards: BTreeSet<&str> = got.iter().map(|g| g.shard.as_str()).collect();
    assert_eq!(shards.len(), 2, "created with two shards");
}
