//! `sluicebox stream` from a 2-shard Kinesis stream into S3 with its checkpoints in DynamoDB, on
//! the moto emulator `scripts/test` starts: the orders file is put on the stream by `sluicebox
//! produce`, the consumer is killed with SIGKILL half-way and restarted, and every record ends
//! in exactly one object; a third run writes nothing.
#![cfg(feature = "aws")]

use crate::common;

use common::{json_lines as lines, objects, ok, sluicebox, unique};

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluicebox::backends::queue::sqs::SqsQueue;
use sluicebox::backends::queue::Queue;
use sluicebox::stream::source::kinesis::{KinesisSource, Start};
use sluicebox::stream::source::sqs::QueueSource;
use sluicebox::stream::source::{conformance, RecordSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_to_s3_killed_half_way_and_restarted_writes_every_record_once() {
    common::assert_emulator();
    let dir = tempfile::tempdir().unwrap();
    let (bucket, table, stream) = (unique("stream-out"), unique("stream-ledger"), unique("orders"));
    ok(sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--ledger", &format!("dynamodb://{table}")])
        .output()
        .unwrap());
    let orders = common::orders_dir().join("orders.csv");
    let produced: Value = serde_json::from_str(
        ok(sluicebox()
            .args([
                "produce",
                orders.to_str().unwrap(),
                "--to",
                &format!("kinesis://{stream}"),
                "--shards",
                "2",
                "--json",
            ])
            .output()
            .unwrap())
        .trim(),
    )
    .unwrap();
    assert_eq!(produced["records"], 10_000, "{produced}");

    // The orders job, its reference by absolute path, cut into files of 250 records per region
    // and year of the order.
    let job = common::orders_job().replace(
        "source = \"financial.csv\"",
        &format!("source = \"{}\"", common::orders_dir().join("financial.csv").display()),
    ) + "\n[stream]\nrecords = 250\nsize_mib = 1\npartition = \"region={region}/year=%Y\"\ntime_field = \"orderDate\"\n";
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, job).unwrap();
    let to = format!("s3://{bucket}/orders");
    let run = |idle: &str| {
        let mut c = sluicebox();
        c.args(["stream", "--from", &format!("kinesis://{stream}"), "--to", &to, "--json", "--idle-exit", idle])
            .args(["--ledger", &format!("dynamodb://{table}"), "--config", job_path.to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .env("RUST_LOG", "sluicebox::stream=info");
        c
    };

    // Kill the first consumer once it has written some files, before it has written them all.
    let mut child = run("30").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut written = 0;
    for line in stderr.lines() {
        if line.unwrap().contains("stream file written") {
            written += 1;
        }
        if written == 12 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no files written");
    }
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9), "the consumer ended before it was killed");
    let partial = objects(&to).await.len();
    assert!(partial >= 12, "{partial} objects");

    let second: Value = serde_json::from_str(ok(run("10").output().unwrap()).trim()).unwrap();
    assert!(second["skipped"].as_u64().unwrap() < 10_000, "{second}");
    let all = objects(&to).await;
    assert!(all.len() > partial, "the restart wrote nothing");

    // Every order in exactly one object: written ones under their partition, rejected ones under
    // errors/ with their reason.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut short: BTreeMap<String, usize> = BTreeMap::new();
    for (name, bytes) in &all {
        let recs = lines(bytes);
        if let Some(rest) = name.strip_prefix("errors/") {
            assert!(rest.starts_with("dt="), "{name}");
            for r in &recs {
                assert!(r["rule"].is_string() && r["message"].is_string() && r["raw"].is_string(), "{r}");
                let raw: Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
                seen.entry(raw["uuid"].as_str().unwrap().to_string()).or_default().push(name.clone());
            }
            continue;
        }
        let (partition, file) = name.rsplit_once('/').unwrap();
        assert!(file.starts_with("part-") && file.ends_with(".jsonl.gz"), "{name}");
        assert!(recs.len() <= 250, "{name}: {} records", recs.len());
        if recs.len() < 250 {
            *short.entry(partition.to_string()).or_default() += 1;
        }
        for r in recs {
            let year = &r["orderDate"].as_str().unwrap()[..4];
            assert_eq!(partition, format!("region={}/year={year}", r["region"].as_str().unwrap().replace('/', "%2F")));
            assert!(r["unitsSold"].is_number(), "enriched: {r}");
            seen.entry(r["uuid"].as_str().unwrap().to_string()).or_default().push(name.clone());
        }
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, f)| f.len() > 1).take(3).collect();
    assert!(doubled.is_empty(), "orders in two objects: {doubled:?}");
    let input_uuids: std::collections::HashSet<String> = std::fs::read_to_string(&orders)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let got: std::collections::HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(got, input_uuids, "every order once, written or rejected");
    assert!(short.values().all(|&n| n <= 1), "more than one short file in a partition: {short:?}");

    // The same counts as the batch job over the file.
    let batch_dir = tempfile::tempdir().unwrap();
    let summary =
        common::run(batch_dir.path(), std::slice::from_ref(&orders), &common::orders_job(), &common::orders_dir())
            .await
            .unwrap();
    let written_objects: usize =
        all.iter().filter(|(n, _)| !n.starts_with("errors/")).map(|(_, b)| lines(b).len()).sum();
    assert_eq!(written_objects as u64, summary.records.written);

    // A third run from the stored checkpoints reads and writes nothing new.
    let third: Value = serde_json::from_str(ok(run("3").output().unwrap()).trim()).unwrap();
    assert_eq!((third["files"].as_u64(), third["written"].as_u64()), (Some(0), Some(0)), "{third}");
    assert_eq!(objects(&to).await, all);
}

/// JSON events sent to an SQS queue land once each in files, and their messages are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_messages_land_in_files_and_are_deleted() {
    common::assert_emulator();
    let dir = tempfile::tempdir().unwrap();
    let sdk = sluicebox::backends::aws::sdk_config(Some(8)).await;
    let sqs = sluicebox::backends::aws::sqs(&sdk);
    let name = unique("events");
    sqs.create_queue().queue_name(&name).send().await.unwrap();
    let cloud = sluicebox::backends::cloud::Cloud::aws(sdk);
    let queue =
        sluicebox::backends::queue::open(&format!("sqs://{name}"), Duration::from_secs(30), &cloud).await.unwrap();
    let mut bodies: Vec<String> =
        (0..400).map(|i| format!("{{\"id\":{i},\"kind\":\"k{}\",\"note\":\"n{i}\"}}", i % 3)).collect();
    bodies.push("not json".to_string());
    queue.send(bodies).await.unwrap();

    let job = "transform = ['.from = $meta.source | .seq = $meta.sequence']\n\
               [stream]\nrecords = 200\npartition = \"kind={kind}\"\n";
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = dir.path().join("out");
    // The consumer stops 15 s after the last message: a busy emulator can take seconds to answer a receive.
    let report: Value = serde_json::from_str(
        ok(sluicebox()
            .args(["stream", "--from", &format!("sqs://{name}"), "--to", out.to_str().unwrap(), "--json"])
            .args(["--idle-exit", "15", "--config", dir.path().join("job.toml").to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .output()
            .unwrap())
        .trim(),
    )
    .unwrap();
    // SQS delivers at least once: a message may come twice (the emulator under load does it
    // too), and then it is in two files; none may be missing.
    let written = report["written"].as_u64().unwrap();
    assert!((400..=404).contains(&written) && report["rejected"] == 1, "{report}");
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (rel, text) in common::decompressed_files(&out) {
        for r in lines(&text) {
            if rel.starts_with("errors/") {
                assert_eq!(r["raw"], "not json");
                continue;
            }
            assert!(rel.starts_with(&format!("kind={}/", r["kind"].as_str().unwrap())), "{rel}");
            assert_eq!(r["from"].as_str(), Some(format!("sqs://{name}").as_str()), "{r}");
            assert!(r["seq"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()), "{r}");
            *seen.entry(r["id"].as_u64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 400);
    assert_eq!(seen.values().sum::<usize>() as u64, written, "each record written is in one file");
    // Every message was deleted: none comes back once its visibility ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = sqs
        .get_queue_attributes()
        .queue_url(sqs.get_queue_url().queue_name(&name).send().await.unwrap().queue_url().unwrap())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = left.attributes().unwrap();
    let count = |k: aws_sdk_sqs::types::QueueAttributeName| attrs.get(&k).cloned().unwrap_or_default();
    assert_eq!(count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages), "0");
    assert_eq!(count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible), "0");
}

/// Records put on a new Kinesis stream of two shards.
struct KinesisFeeder {
    client: aws_sdk_kinesis::Client,
}

#[async_trait::async_trait]
impl conformance::Feeder for KinesisFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let name = unique("conformance");
        self.client.create_stream().stream_name(&name).shard_count(2).send().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.client.describe_stream_summary().stream_name(&name).send().await.unwrap();
            let status = d.stream_description_summary.map(|s| s.stream_status);
            if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
                break;
            }
            assert!(Instant::now() < deadline, "the stream did not become active: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (i, chunk) in records.chunks(500).enumerate() {
            let entries = chunk.iter().enumerate().map(|(j, r)| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{}", i * 500 + j))
                    .data(aws_smithy_types::Blob::new(r.as_bytes()))
                    .build()
                    .unwrap()
            });
            let out = self.client.put_records().stream_name(&name).set_records(Some(entries.collect())).send().await;
            assert_eq!(out.unwrap().failed_record_count, Some(0));
        }
        let client = self.client.clone();
        Box::new(move || {
            Arc::new(KinesisSource::new(client.clone(), name.clone(), Start::TrimHorizon)) as Arc<dyn RecordSource>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_passes_the_record_source_conformance_suite() {
    let client = sluicebox::backends::aws::kinesis(&common::emulator().await);
    conformance::run_all(&KinesisFeeder { client }, 200).await;
}

/// Records as the messages of a new SQS queue.
struct SqsFeeder {
    client: aws_sdk_sqs::Client,
}

#[async_trait::async_trait]
impl conformance::Feeder for SqsFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let name = unique("conformance");
        self.client.create_queue().queue_name(&name).send().await.unwrap();
        // Long enough for a case to receive every message before the first comes again.
        let queue = SqsQueue::open(self.client.clone(), &name, Duration::from_secs(4)).await.unwrap();
        let queue: Arc<dyn Queue> = Arc::new(queue);
        queue.send(records).await.unwrap();
        Box::new(move || Arc::new(QueueSource::new(queue.clone(), format!("sqs://{name}"))) as Arc<dyn RecordSource>)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_passes_the_record_source_conformance_suite() {
    let client = sluicebox::backends::aws::sqs(&common::emulator().await);
    conformance::run_all(&SqsFeeder { client }, 100).await;
}

/// A stream into a DynamoDB table, a third of its writes throttled: every record is in the
/// table once, and the report says what the writes cost: requests, write units, the
/// throttled requests (as many as were injected) and the items sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_into_dynamodb_reports_its_write_units_and_throttling() {
    use sluicebox::backends::sink::dynamodb::{DynamoSink, ThrottleFaults};
    use sluicebox::backends::sink::Sink;
    use sluicebox::stream::source::SourceRecord;
    use sluicebox::stream::state::Pos;
    use sluicebox::stream::{Options, Source, Stream};
    common::assert_emulator();
    let sdk = sluicebox::backends::aws::sdk_config(Some(8)).await;
    let client = sluicebox::backends::aws::dynamodb(&sdk);
    let table = unique("stream-sink");
    DynamoSink::create_table(&client, &table).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::engine::Engine::local(dir.path()).unwrap();
    engine.cloud = sluicebox::backends::cloud::Cloud::aws(sdk.clone());
    let faults = Arc::new(ThrottleFaults::new(0.3, 11));
    let sink = Arc::new(DynamoSink::new(client.clone(), &table).with_faults(faults.clone()));
    let layered = sink.clone();
    engine.sink_layer = Some(Arc::new(move |_| layered.clone() as Arc<dyn Sink>));
    let job = format!("[key]\nfields = [\"id\"]\n[sink]\ntype = \"dynamodb\"\ntable = \"{table}\"\n");
    let spec = sluicebox::model::config::JobConfig::from_toml(&job, "job.toml").unwrap().validate(dir.path()).unwrap();
    let records = (0..300u64)
        .map(|i| SourceRecord {
            pos: Pos::N(i + 1),
            arrival_ms: 1_790_000_000_000 + i as i64,
            data: format!("{{\"id\": {i}, \"note\": \"n{i}\"}}").into(),
            ack: None,
            id: None,
        })
        .collect();
    let dest = sluicebox::backends::bucket::open(dir.path().join("out").to_str().unwrap(), &engine.cloud).unwrap();
    let stream = Stream::new(&engine, spec, None, dest).unwrap().sink_only().unwrap();
    let opts = Options {
        from: Source::Batch { shard: "shardId-0".into(), records },
        to: format!("table {table}"),
        name: None,
        idle_exit: None,
        latest: false,
    };
    let r = stream.run(&opts, std::future::pending()).await.unwrap();
    let f = r.sink_figures.clone().expect("a DynamoDB sink counts its writes");
    let refused = faults.refused_requests.load(std::sync::atomic::Ordering::Relaxed);
    let held = faults.held_items.load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused > 0 && held > 0, "faults were injected: {refused} requests, {held} items");
    assert_eq!(f.throttled_requests, refused, "{f:?}");
    assert_eq!(f.items_written, 300, "{f:?}");
    assert!(f.retried_items >= held, "{f:?}");
    assert!(f.requests >= 300, "one PutItem per item at least: {f:?}");
    assert!(f.write_units.is_some_and(|u| u >= 300.0), "a unit per item of under 1 KB: {f:?}");
    assert!(r.to_string().contains(&format!("{} throttled", refused)), "{r}");
    assert_eq!(sink.read_all().await.unwrap().len(), 300);
}
