//! The AWS backends run their seams' conformance suites against the moto AWS emulator that
//! `scripts/test` starts on loopback. Without it (no `AWS_ENDPOINT_URL`) these tests fail
//! rather than skip: an AWS backend that was not tested must not pass as tested.
#![cfg(feature = "aws")]

use crate::common;

use common::{emulator, unique};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluicebox::backends::ledger::dynamodb::DynamoLedger;
use sluicebox::backends::ledger::{self, StateStore};
use sluicebox::backends::queue::sqs::SqsQueue;
use sluicebox::backends::queue::{self, Queue};
use sluicebox::backends::sink::dynamodb::{DynamoSink, ThrottleFaults};

const SQS_VISIBILITY: Duration = Duration::from_secs(1);

async fn new_sqs_queue(client: &aws_sdk_sqs::Client) -> Arc<dyn Queue> {
    let name = unique("q");
    client
        .create_queue()
        .queue_name(&name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();
    Arc::new(SqsQueue::open(client.clone(), &name, SQS_VISIBILITY).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_sqs_conformance() {
    let client = sluicebox::backends::aws::sqs(&emulator().await);
    queue::conformance::run_all(|| new_sqs_queue(&client), SQS_VISIBILITY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_sqs_sends_more_than_one_batch_and_by_url() {
    let client = sluicebox::backends::aws::sqs(&emulator().await);
    let q = new_sqs_queue(&client).await;
    let bodies: Vec<String> = (0..37).map(|i| format!("m{i}")).collect();
    q.send(bodies.clone()).await.unwrap();
    let mut got = Vec::new();
    loop {
        let batch = q.receive(10, Duration::from_millis(500)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 10);
        for d in batch {
            q.ack(&d.receipt).await.unwrap();
            got.push(d.body);
        }
    }
    got.sort();
    let mut want = bodies;
    want.sort();
    assert_eq!(got, want, "37 messages sent in batches of at most 10 all arrive");
    let url = format!("sqs://{}", unique("missing"));
    let err = queue::open(&url, SQS_VISIBILITY, &sluicebox::backends::cloud::Cloud::aws(emulator().await))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}

/// Concurrent acks share `DeleteMessageBatch` requests, ten entries each, and every acked
/// message is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_sqs_acks_share_delete_message_batch_requests() {
    let client = sluicebox::backends::aws::sqs(&emulator().await);
    let q = new_sqs_queue(&client).await;
    q.send((0..25).map(|i| format!("m{i}")).collect()).await.unwrap();
    let mut receipts = Vec::new();
    while receipts.len() < 25 {
        let got = q.receive(10, Duration::from_millis(500)).await.unwrap();
        assert!(!got.is_empty(), "only {} of 25 messages arrived", receipts.len());
        receipts.extend(got.into_iter().map(|d| d.receipt));
    }
    let tally = sluicebox::backends::calls::Tally::default();
    let acks = futures::future::join_all(receipts.iter().map(|r| q.ack(r)));
    for r in tally.scope(acks).await {
        r.unwrap();
    }
    assert_eq!(tally.snapshot().get("sqs.DeleteMessageBatch"), Some(&3), "{:?}", tally.snapshot());
    tokio::time::sleep(SQS_VISIBILITY + Duration::from_millis(500)).await;
    assert!(q.receive(10, Duration::from_millis(500)).await.unwrap().is_empty(), "acked messages came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_dynamodb_conformance() {
    let client = sluicebox::backends::aws::dynamodb(&emulator().await);
    let table = unique("ledger");
    DynamoLedger::create_table(&client, &table).await.unwrap();
    // The cases use distinct job ids, so they can share one table.
    let store: Arc<dyn StateStore> = Arc::new(DynamoLedger::new(client.clone(), &table));
    ledger::conformance::run_all(|| store.clone()).await;
    // Opening by URL gives the same ledger.
    let cloud = sluicebox::backends::cloud::Cloud::aws(emulator().await);
    let by_url = ledger::open(&format!("dynamodb://{table}"), &cloud).await.unwrap();
    assert_eq!(by_url.get_job("job-c").await.unwrap().unwrap().done_chunks, 2);
    assert_eq!(by_url.get_checkpoint("stream-v").await.unwrap().map(|c| c.version), Some(4));
    // A checkpoint is its own item, and the table's time to live never removes it.
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("stream#stream-v".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("checkpoint".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the checkpoint item is at stream#<name>, checkpoint");
    assert_eq!(item.get("version").and_then(|v| v.as_n().ok()).map(String::as_str), Some("4"));
    assert!(!item.contains_key("expires_at"), "checkpoints do not expire: {item:?}");
}

/// The orders example with its input and outputs in S3, tasks in SQS and the ledger in
/// DynamoDB gives the same counts and the same merged output bytes as the local run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_through_s3_sqs_and_dynamodb_match_the_local_run() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let job = std::fs::read_to_string(examples.join("job.toml")).unwrap();
    let spec = sluicebox::model::config::JobConfig::from_toml(&job, "job.toml").unwrap().validate(&examples).unwrap();

    // The local run, for comparison.
    let local_dir = tempfile::tempdir().unwrap();
    let local_engine = sluicebox::engine::Engine::local(local_dir.path()).unwrap();
    let local_input = examples.join("orders.csv").display().to_string();
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        local_engine.inputs.as_ref(),
        &[local_input],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let opts = sluicebox::batch::job::RunOptions::default();
    let local = sluicebox::batch::job::run(&local_engine, &spec, inputs, &opts).await.unwrap();
    let local_output =
        std::fs::read(local_dir.path().join("bucket/jobs").join(&local.job_id).join("output.csv")).unwrap();

    // The same job on the emulator.
    let bucket = unique("bucket");
    aws_sdk_s3::Client::new(&conf).create_bucket().bucket(&bucket).send().await.unwrap();
    let input_url = format!("s3://{bucket}/incoming/orders.csv");
    let inputs_store =
        sluicebox::backends::bucket::input_store(&input_url, &sluicebox::backends::cloud::Cloud::aws(conf.clone()))
            .unwrap();
    let bytes = std::fs::read(examples.join("orders.csv")).unwrap();
    inputs_store.put(&object_store::path::Path::from("incoming/orders.csv"), bytes.into()).await.unwrap();
    let ddb = sluicebox::backends::aws::dynamodb(&conf);
    let table = unique("ledger");
    DynamoLedger::create_table(&ddb, &table).await.unwrap();
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let queue = new_sqs_queue(&sqs).await;
    let data = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::engine::Engine::local(data.path()).unwrap();
    engine.cloud = sluicebox::backends::cloud::Cloud::aws(conf.clone());
    engine.bucket = sluicebox::backends::bucket::open(
        &format!("s3://{bucket}/results"),
        &sluicebox::backends::cloud::Cloud::aws(conf.clone()),
    )
    .unwrap();
    engine.bucket_url = format!("s3://{bucket}/results");
    engine.inputs = inputs_store.clone();
    engine.ledger = Arc::new(DynamoLedger::new(ddb.clone(), &table));
    engine.queue = queue;
    let sink_table = unique("orders");
    DynamoSink::create_table(&ddb, &sink_table).await.unwrap();
    let sink = Arc::new(DynamoSink::new(ddb.clone(), &sink_table).unordered());
    let opened = sink.clone();
    engine.sink_layer = Some(Arc::new(move |_| opened.clone() as Arc<dyn sluicebox::backends::sink::Sink>));
    let inputs =
        sluicebox::backends::bucket::resolve_inputs(engine.inputs.as_ref(), &[input_url], None, Default::default())
            .await
            .unwrap();
    assert_eq!(inputs[0].location, format!("s3://{bucket}/incoming/orders.csv"));
    let remote = sluicebox::batch::job::run(&engine, &spec, inputs, &opts).await.unwrap();

    assert_eq!(remote.records, local.records);
    assert_eq!(remote.chunks, local.chunks);
    assert_eq!(remote.rejects_by_rule, local.rejects_by_rule);
    assert_eq!(remote.outputs.output, format!("s3://{bucket}/results/jobs/{}/output.csv", remote.job_id));
    let key = format!("results/jobs/{}/output.csv", remote.job_id);
    let remote_output = inputs_store.get(&object_store::path::Path::from(key)).await.unwrap().bytes().await.unwrap();
    assert!(remote_output.as_ref() == local_output.as_slice(), "merged outputs differ");
    // The same sink items as the local SQLite table.
    let local_rows =
        sluicebox::backends::sink::SqliteSink::existing(&local_dir.path().join("sluicebox.db"), "orders").unwrap();
    let local_rows = sluicebox::backends::sink::Sink::read_all(&local_rows).await.unwrap();
    let items = sluicebox::backends::sink::Sink::read_all(sink.as_ref()).await.unwrap();
    assert_eq!(items.len(), 10000);
    assert!(items == local_rows, "the DynamoDB items differ from the local sink's rows");
    assert!(sink.stats().largest_request.load(Ordering::Relaxed) <= 25);
    // The ledger on DynamoDB says the job is complete, with every chunk committed once.
    let ledger = ledger::open(&format!("dynamodb://{table}"), &sluicebox::backends::cloud::Cloud::aws(conf.clone()))
        .await
        .unwrap();
    let job = ledger.get_job(&remote.job_id).await.unwrap().unwrap();
    assert_eq!((job.status, job.done_chunks, job.total_chunks), (ledger::JobStatus::Complete, 10, Some(10)));
    // Every request is accounted for: one commit per chunk, at least one ranged read per
    // chunk, tasks sent in batches of ten, and the gather's multipart upload.
    let calls = &remote.api_calls;
    // One commit per chunk (the ledger's count above says each committed once); a commit the
    // SDK sent again on a busy machine counts each attempt.
    assert!(calls.get("dynamodb.TransactWriteItems").is_some_and(|&n| (10..=12).contains(&n)), "{calls:?}");
    // 10,000 items in requests of 25, each sent once unless it was refused whole (a slow
    // emulator's timeout); every attempt the SDK made is among the calls.
    let stats = sink.stats();
    let sent = stats.requests.load(Ordering::Relaxed);
    let again = stats.throttled_requests.load(Ordering::Relaxed);
    assert_eq!(stats.unprocessed.load(Ordering::Relaxed), 0, "the emulator returns no unprocessed items");
    assert_eq!(sent - again, 400, "10,000 items in requests of 25: {sent} sent, {again} again");
    assert!(calls.get("dynamodb.BatchWriteItem").is_some_and(|&n| n >= sent), "{calls:?}");
    assert!(calls.get("s3.GetObject").is_some_and(|&n| n >= 10), "{calls:?}");
    assert_eq!(calls.get("sqs.SendMessageBatch"), Some(&1), "{calls:?}");
    assert!(calls.get("sqs.ReceiveMessage").is_some_and(|&n| n >= 10), "{calls:?}");
    // One ack per chunk at most; every attempt is counted, so a request the SDK retried on a
    // busy machine counts twice.
    assert!(
        calls.get("sqs.DeleteMessageBatch").is_some_and(|&n| (10..=12).contains(&n)),
        "one ack per chunk: {calls:?}"
    );
    assert!(calls.contains_key("s3.CompleteMultipartUpload"), "{calls:?}");
    let total: u64 = calls.values().sum();
    assert!((remote.api_calls_per_record - total as f64 / 10000.0).abs() < 1e-9);
    assert!(local.api_calls.is_empty(), "the embedded engine makes no cloud requests");
}

/// The orders example's job file with `records` per chunk and the reference at `source`.
fn orders_job_with(records: u64, source: Option<&str>) -> (std::path::PathBuf, tempfile::TempDir) {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let dir = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(examples.join("job.toml")).unwrap();
    let local = examples.join("financial.csv").display().to_string();
    let job = job
        .replace("records = 1000 ", &format!("records = {records} "))
        .replace("source = \"financial.csv\"", &format!("source = {:?}", source.unwrap_or(&local)));
    assert!(job.contains(&format!("records = {records} ")), "the example's chunking changed");
    let path = dir.path().join("job.toml");
    std::fs::write(&path, job).unwrap();
    (path, dir)
}

fn sluicebox() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
}

/// Every process a test starts is stopped when the test ends, pass or fail.
struct Reaper(Vec<std::process::Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// From the command line: `aws setup` creates what a job needs; `run` plans and enqueues the
/// orders example; three `sluicebox worker` processes share it; one is SIGKILLed mid-job and
/// another stopped with SIGTERM; `run --wait` follows it to the end. Counts are exact and the sink holds every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_a_job_and_one_is_killed() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let (bucket, queue, table, sink) = (unique("w"), unique("w-q"), unique("w-t"), unique("w-s"));
    let setup = sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--sink", &format!("dynamodb://{sink}")])
        .args(["--max-receives", "5"])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let said = String::from_utf8_lossy(&setup.stdout);
    assert!(said.contains(&format!("bucket s3://{bucket}")) && said.contains("after 5 receives"), "{said}");
    assert!(said.contains(&format!("sink table {sink}")), "{said}");

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let store = sluicebox::backends::bucket::open(
        &format!("s3://{bucket}"),
        &sluicebox::backends::cloud::Cloud::aws(conf.clone()),
    )
    .unwrap();
    // The first 4,000 orders: ten chunks of 400 (the README's test runs all 10,000).
    let csv = std::fs::read_to_string(examples.join("orders.csv")).unwrap();
    let csv: String = csv.lines().take(4001).map(|l| format!("{l}\n")).collect();
    store.put(&object_store::path::Path::from("in/orders.csv"), csv.into_bytes().into()).await.unwrap();
    // The reference lives in the bucket too: workers on other hosts read it from there.
    let reference = std::fs::read(examples.join("financial.csv")).unwrap();
    store.put(&object_store::path::Path::from("ref/financial.csv"), reference.into()).await.unwrap();
    let (config, _dir) = orders_job_with(400, Some(&format!("s3://{bucket}/ref/financial.csv")));

    let backends = |c: &mut std::process::Command| {
        c.args(["--bucket", &format!("s3://{bucket}/out"), "--queue", &format!("sqs://{queue}")]).args([
            "--ledger",
            &format!("dynamodb://{table}"),
            "--visibility-secs",
            "4",
        ]);
    };
    let data = tempfile::tempdir().unwrap();
    // A SQLite sink would be split across the workers' machines: refused, naming the option.
    let mut local_sink = sluicebox();
    local_sink.args(["run", &format!("s3://{bucket}/in/orders.csv"), "--config"]).arg(&config);
    local_sink.arg("--data-dir").arg(data.path());
    backends(&mut local_sink);
    let out = local_sink.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sink"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut submit = sluicebox();
    submit.args(["run", &format!("s3://{bucket}/in/orders.csv"), "--config"]).arg(&config);
    submit.arg("--data-dir").arg(data.path()).args(["--sink", &format!("dynamodb://{sink}"), "--json"]);
    backends(&mut submit);
    let out = submit.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let submitted: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    let job_id = submitted["job_id"].as_str().unwrap().to_string();
    assert_eq!((submitted["chunks"].as_u64(), submitted["tasks_sent"].as_u64()), (Some(10), Some(10)));

    let mut workers = Reaper(Vec::new());
    for i in 0..3 {
        let mut w = sluicebox();
        w.arg("worker").arg("--data-dir").arg(data.path().join(format!("w{i}")));
        w.args(["--workers", "2", "--idle-exit-secs", "20"]);
        backends(&mut w);
        workers.0.push(w.stderr(std::process::Stdio::null()).spawn().unwrap());
    }
    // Kill one worker as soon as the job is under way, with chunks left to do.
    let ledger = ledger::open(&format!("dynamodb://{table}"), &sluicebox::backends::cloud::Cloud::aws(conf.clone()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let job = ledger.get_job(&job_id).await.unwrap().unwrap();
        if job.done_chunks >= 2 {
            assert!(job.done_chunks < 10, "the job finished before a worker could be killed");
            workers.0[0].kill().unwrap();
            workers.0[0].wait().unwrap();
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no chunk was committed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop a second worker politely: it finishes (or gives back) its tasks and exits cleanly.
    let term = std::process::Command::new("kill").args(["-TERM", &workers.0[1].id().to_string()]).status().unwrap();
    assert!(term.success());
    let stopped_by = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = workers.0[1].try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < stopped_by, "a worker told to stop did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "SIGTERM ends a worker cleanly: {status}");

    let mut wait = sluicebox();
    wait.args(["run", &format!("s3://{bucket}/in/orders.csv"), "--config"]).arg(&config);
    wait.arg("--data-dir").arg(data.path()).args(["--sink", &format!("dynamodb://{sink}"), "--wait", "--json"]);
    backends(&mut wait);
    let out = wait.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(summary["job_id"], job_id);
    assert_eq!(summary["records"], serde_json::json!({"total": 4000, "written": 4000, "rejected": 0, "filtered": 0}));
    assert_eq!(summary["chunks"], serde_json::json!({"total": 10, "done": 10}));
    let output = format!("out/jobs/{job_id}/output.csv");
    let merged = store.get(&object_store::path::Path::from(output)).await.unwrap().bytes().await.unwrap();
    assert_eq!(merged.iter().filter(|&&b| b == b'\n').count(), 4001);
    // Every record is in the sink exactly once.
    let items = sluicebox::backends::sink::dynamodb::DynamoSink::new(sluicebox::backends::aws::dynamodb(&conf), &sink);
    let items = sluicebox::backends::sink::Sink::read_all(&items).await.unwrap();
    assert_eq!(items.len(), 4000);
    // More than one worker process did the work.
    let manifest = store
        .get(&object_store::path::Path::from(format!("out/jobs/{job_id}/manifest.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let hosts: std::collections::BTreeSet<String> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["commit"]["worker"].as_str().unwrap().rsplit_once('-').unwrap().0.to_string())
        .collect();
    assert!(hosts.len() >= 2, "one process did every chunk: {hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dynamodb_conformance() {
    let client = sluicebox::backends::aws::dynamodb(&emulator().await);
    let table = unique("sink");
    DynamoSink::create_table(&client, &table).await.unwrap();
    let sink = DynamoSink::new(client.clone(), &table).unordered();
    sluicebox::backends::sink::conformance::run_all(&sink).await;
    let largest = sink.stats().largest_request.load(Ordering::Relaxed);
    assert!(largest <= 25 && largest > 0, "BatchWriteItem takes at most 25 items; sent {largest}");
}

/// The default, ordered DynamoDB sink (conditional writes) keeps the newest version of every
/// item whatever order jobs and chunks write in, as the SQLite sink does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dynamodb_ordered_conformance() {
    let client = sluicebox::backends::aws::dynamodb(&emulator().await);
    let table = unique("sink-ordered");
    DynamoSink::create_table(&client, &table).await.unwrap();
    let sink = DynamoSink::new(client, &table);
    assert!(sluicebox::backends::sink::Sink::orders_by_seq(&sink));
    sluicebox::backends::sink::conformance::run_all(&sink).await;
    assert!(sink.stats().stale.load(Ordering::Relaxed) > 0, "older versions were refused by their condition");
}

/// 30% of sink writes throttled (whole requests refused, items returned unprocessed) and
/// every task delivered twice: every record is written exactly once, as in a clean run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_writes_and_duplicated_deliveries_write_every_record_once() {
    let conf = emulator().await;
    let (config, _dir) = orders_job_with(300, None);
    let spec = sluicebox::model::config::JobConfig::load(&config).unwrap().validate(config.parent().unwrap()).unwrap();
    let ddb = sluicebox::backends::aws::dynamodb(&conf);
    let table = unique("throttled");
    DynamoSink::create_table(&ddb, &table).await.unwrap();
    let faults = Arc::new(ThrottleFaults::new(0.3, 7));
    // Injected throttles fall at random, whatever the rate, so they would pace the writer down
    // to its floor (the rate's adaptation has its own test): a higher floor bounds the time.
    let pace = sluicebox::backends::sink::dynamodb::Pace::with_floor(400.0);
    let sink = Arc::new(DynamoSink::new(ddb.clone(), &table).unordered().with_faults(faults.clone()).with_pace(pace));
    let data = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::engine::Engine::local(data.path()).unwrap();
    let opened = sink.clone();
    engine.sink_layer = Some(Arc::new(move |_| opened.clone() as Arc<dyn sluicebox::backends::sink::Sink>));
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let dup = sluicebox::backends::queue::faults::QueueFaults {
        extra_copies: 1,
        drop_every_nth_ack: 3,
        ..Default::default()
    };
    engine.queue = Arc::new(sluicebox::backends::queue::faults::FaultyQueue::new(new_sqs_queue(&sqs).await, dup));
    // The first 3,000 orders: throttled writes are slow on purpose.
    let orders =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders/orders.csv"))
            .unwrap();
    let input = data.path().join("orders.csv");
    std::fs::write(&input, orders.lines().take(3001).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &[input.display().to_string()],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let opts = sluicebox::batch::job::RunOptions { visibility: Duration::from_secs(4), ..Default::default() };
    let summary = sluicebox::batch::job::run(&engine, &spec, inputs.clone(), &opts).await.unwrap();
    assert_eq!((summary.records.total, summary.records.written, summary.chunks.total), (3000, 3000, 10));

    let refused = faults.refused_requests.load(Ordering::Relaxed);
    let held = faults.held_items.load(Ordering::Relaxed);
    assert!(refused > 10 && held > 300, "the faults must have bitten: {refused} requests refused, {held} items held");
    let stats = sink.stats();
    assert!(stats.largest_request.load(Ordering::Relaxed) <= 25);
    // The pace may have climbed back by the end: that it was lowered is what counts.
    assert!(sink.pace().times_lowered() > 0, "throttling must have slowed the writer");
    // Exactly the records of a clean local run, each once.
    let items = sluicebox::backends::sink::Sink::read_all(sink.as_ref()).await.unwrap();
    let clean_dir = tempfile::tempdir().unwrap();
    let clean_engine = sluicebox::engine::Engine::local(clean_dir.path()).unwrap();
    let clean = sluicebox::batch::job::run(&clean_engine, &spec, inputs, &Default::default()).await.unwrap();
    let table_name = clean.sink.clone().unwrap();
    let local =
        sluicebox::backends::sink::SqliteSink::existing(&clean_dir.path().join("sluicebox.db"), &table_name).unwrap();
    let local = sluicebox::backends::sink::Sink::read_all(&local).await.unwrap();
    assert_eq!(items.len(), 3000);
    assert_eq!(items, local, "the DynamoDB items differ from the clean run's rows");
}

/// An input deleted after the job was planned: the worker fails the job with a message
/// naming the object and its version, `run --wait` reports it, and the task ends in the
/// dead-letter queue after its retries instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_input_fails_the_job_and_its_task_goes_to_the_dead_letter_queue() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let (bucket, queue, table) = (unique("gone"), unique("gone-q"), unique("gone-t"));
    let setup = sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--max-receives", "3", "--visibility-secs", "2"])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let store = sluicebox::backends::bucket::open(
        &format!("s3://{bucket}"),
        &sluicebox::backends::cloud::Cloud::aws(conf.clone()),
    )
    .unwrap();
    let csv = "id,name\n1,a\n2,b\n";
    store.put(&object_store::path::Path::from("in/small.csv"), csv.as_bytes().to_vec().into()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let backends = |c: &mut std::process::Command| {
        c.args(["--bucket", &format!("s3://{bucket}/out"), "--queue", &format!("sqs://{queue}")])
            .args(["--ledger", &format!("dynamodb://{table}"), "--visibility-secs", "2"])
            .arg("--data-dir")
            .arg(data.path());
    };
    // Submit and follow the job; no worker runs yet.
    let mut wait = sluicebox();
    wait.args(["run", &format!("s3://{bucket}/in/small.csv"), "--sink", "none", "--wait"]);
    backends(&mut wait);
    let waiting = wait.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut procs = Reaper(Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        use futures::TryStreamExt;
        let listed: Vec<_> = store.list(Some(&object_store::path::Path::from("out/jobs"))).try_collect().await.unwrap();
        if listed.iter().any(|m| m.location.as_ref().ends_with("plan.json")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job was never planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.delete(&object_store::path::Path::from("in/small.csv")).await.unwrap();

    let mut worker = sluicebox();
    worker.args(["worker", "--workers", "1", "--max-attempts", "2", "--idle-exit-secs", "8"]);
    backends(&mut worker);
    procs.0.push(worker.stderr(std::process::Stdio::null()).spawn().unwrap());
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success(), "a job whose input vanished must not succeed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("s3://{bucket}/in/small.csv")) && err.contains("version"), "{err}");
    assert!(err.contains("gone") || err.contains("not found") || err.contains("deleted"), "{err}");
    // The task reaches the dead-letter queue and stays out of the work queue.
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let dlq = SqsQueue::open(sqs.clone(), &format!("{queue}-dlq"), Duration::from_secs(2)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let got = dlq.receive(10, Duration::from_secs(1)).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "the task never reached the dead-letter queue");
    };
    assert!(dead[0].body.contains("\"index\":0"), "{}", dead[0].body);
    let status = procs.0[0].wait().unwrap();
    assert!(status.success(), "the worker exits cleanly when idle: {status}");
}

/// `sluicebox watch` starts one job per new object from S3's event notifications: the key
/// arrives URL-encoded and is decoded, `s3:TestEvent` is ignored, and a repeated event for
/// the same object version starts no second job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_starts_one_job_per_object_version_from_s3_events() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let (bucket, queue, table, events) = (unique("watch"), unique("watch-q"), unique("watch-t"), unique("watch-ev"));
    let setup = sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}")])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let events_url = sqs.create_queue().queue_name(&events).send().await.unwrap().queue_url.unwrap();
    let arn = common::queue_arn(&sqs, &events_url).await;
    let s3 = sluicebox::backends::aws::s3(&conf);
    let notify = aws_sdk_s3::types::QueueConfiguration::builder()
        .queue_arn(&arn)
        .events(aws_sdk_s3::types::Event::S3ObjectCreated)
        .build()
        .unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder().queue_configurations(notify).build(),
        )
        .send()
        .await
        .unwrap();
    // A test event, as S3 sends when notifications are configured.
    let test_event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket});
    sqs.send_message().queue_url(&events_url).message_body(test_event.to_string()).send().await.unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut watch = sluicebox();
    watch.args(["watch", &format!("s3://{bucket}/in/"), "--events", &format!("sqs://{events}")]);
    watch.args(["--workers", "2", "--idle-exit-secs", "6", "--sink", "none", "--visibility-secs", "10"]);
    watch.args(["--bucket", &format!("s3://{bucket}/out"), "--queue", &format!("sqs://{queue}")]);
    watch.args(["--ledger", &format!("dynamodb://{table}")]).arg("--data-dir").arg(data.path());
    let mut running = watch.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let _reaper = Reaper(Vec::new());

    let key = "in/my orders+1é.csv";
    let put = s3.put_object().bucket(&bucket).key(key).body(b"id,name\n1,a\n2,b\n3,c\n".to_vec().into());
    let e_tag = put.send().await.unwrap().e_tag.unwrap();
    // Outside the prefix: ignored.
    s3.put_object().bucket(&bucket).key("elsewhere/x.csv").body(b"id\n1\n".to_vec().into()).send().await.unwrap();
    // The same event again, as S3's at-least-once delivery may send it.
    let store = sluicebox::backends::bucket::open(
        &format!("s3://{bucket}"),
        &sluicebox::backends::cloud::Cloud::aws(conf.clone()),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let job_id = loop {
        use futures::TryStreamExt;
        let listed: Vec<_> = store.list(Some(&object_store::path::Path::from("out/jobs"))).try_collect().await.unwrap();
        if let Some(m) = listed.iter().find(|m| m.location.as_ref().ends_with("summary.json")) {
            break m.location.parts().nth(2).unwrap().as_ref().to_string();
        }
        if std::time::Instant::now() > deadline {
            running.kill().unwrap();
            let out = running.wait_with_output().unwrap();
            panic!(
                "no job completed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let repeated = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": "in/my+orders%2B1%C3%A9.csv", "eTag": e_tag}}}]});
    sqs.send_message().queue_url(&events_url).message_body(repeated.to_string()).send().await.unwrap();

    let out = running.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    let input = format!("s3://{bucket}/{key}");
    assert_eq!(said.matches("started job").count(), 1, "{said}");
    assert!(said.contains(&format!("started job {job_id} for {input}")), "{said}");
    assert!(said.contains(&format!("job {job_id} for {input} exists; not started again")), "{said}");
    assert!(said.contains("ignored: no ObjectCreated event"), "the test event: {said}");
    assert!(said.contains("elsewhere/x.csv is outside"), "{said}");
    let summary = store
        .get(&object_store::path::Path::from(format!("out/jobs/{job_id}/summary.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["records"]["total"], 3);
    assert_eq!(summary["inputs"][0]["location"], input);
}

/// Enrichment from a DynamoDB table gives the same output as from the reference file, with
/// the keys fetched 100 per `BatchGetItem`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_from_a_dynamodb_table_matches_the_reference_file() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType,
        WriteRequest,
    };
    let conf = emulator().await;
    let ddb = sluicebox::backends::aws::dynamodb(&conf);
    let table = unique("reference");
    ddb.create_table()
        .table_name(&table)
        .key_schema(KeySchemaElement::builder().attribute_name("uuid").key_type(KeyType::Hash).build().unwrap())
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("uuid")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let mut reader = csv::Reader::from_path(examples.join("financial.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // One reference row is left out: its order must be rejected, as with the file.
    for batch in rows[1..].chunks(25) {
        let requests: Vec<WriteRequest> = batch
            .iter()
            .map(|r| {
                let item = header.iter().zip(r.iter()).map(|(h, v)| (h.clone(), AttributeValue::S(v.to_string())));
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item.collect())).build().unwrap())
                    .build()
            })
            .collect();
        ddb.batch_write_item().request_items(&table, requests).send().await.unwrap();
    }
    let local_ref = tempfile::tempdir().unwrap();
    let mut w = csv::Writer::from_path(local_ref.path().join("financial.csv")).unwrap();
    w.write_record(&header).unwrap();
    for r in &rows[1..] {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();

    let orders = examples.join("orders.csv").display().to_string();
    let run = |source: String| {
        let orders = orders.clone();
        async move {
            let (config, _dir) = orders_job_with(1000, Some(&source));
            let spec =
                sluicebox::model::config::JobConfig::load(&config).unwrap().validate(config.parent().unwrap()).unwrap();
            let data = tempfile::tempdir().unwrap();
            let mut engine = sluicebox::engine::Engine::local(data.path()).unwrap();
            engine.cloud = sluicebox::backends::cloud::Cloud::aws(emulator().await);
            let inputs = sluicebox::backends::bucket::resolve_inputs(
                engine.inputs.as_ref(),
                &[orders],
                None,
                Default::default(),
            )
            .await
            .unwrap();
            let summary = sluicebox::batch::job::run(&engine, &spec, inputs, &Default::default()).await.unwrap();
            let out = std::fs::read(data.path().join("bucket/jobs").join(&summary.job_id).join("output.csv")).unwrap();
            (summary, out)
        }
    };
    let (from_file, file_out) = run(local_ref.path().join("financial.csv").display().to_string()).await;
    let (from_table, table_out) = run(format!("dynamodb://{table}")).await;
    assert_eq!(from_table.records, from_file.records);
    assert_eq!((from_table.records.rejected, from_table.rejects_by_rule.get("lookup")), (1, Some(&1)));
    assert!(table_out == file_out, "enriched outputs differ");
    // 10 chunks of 1,000 distinct keys: 10 requests of 100 each.
    assert_eq!(from_table.api_calls.get("dynamodb.BatchGetItem"), Some(&100), "{:?}", from_table.api_calls);
}

/// The DynamoDB reference passes the lookup-source conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_dynamodb() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use sluicebox::backends::lookup::conformance::{enrich_config, ROWS};
    let ddb = sluicebox::backends::aws::dynamodb(&emulator().await);
    let table = unique("lookup");
    sluicebox::backends::aws::dynamodb::create_table(&ddb, &table, &["k"]).await.unwrap();
    for (k, n, s) in ROWS {
        ddb.put_item()
            .table_name(&table)
            .item("k", AttributeValue::S(k.to_string()))
            .item("n", AttributeValue::N(n.to_string()))
            .item("s", AttributeValue::S(s.to_string()))
            .send()
            .await
            .unwrap();
    }
    let cfg = enrich_config(&format!("dynamodb://{table}"), 0);
    let fields = vec!["n".to_string(), "s".to_string()];
    // Lookups block on requests, as they do on the pipeline's blocking threads.
    tokio::task::spawn_blocking(move || {
        let source =
            sluicebox::backends::lookup::dynamodb::DynamoSource::open(ddb, &cfg, &table, "k".into(), fields).unwrap();
        sluicebox::backends::lookup::conformance::run_all(&source);
    })
    .await
    .unwrap();
}

/// A local run of a build with the AWS backends never loads the AWS configuration (which
/// probes the environment, profiles and the instance metadata service); an AWS run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_does_not_load_the_aws_configuration() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let data = tempfile::tempdir().unwrap();
    let out = sluicebox()
        .args(["run", &examples.join("orders.csv").display().to_string(), "--config"])
        .arg(examples.join("job.toml"))
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("loading the AWS configuration"), "{stderr}");
    let out = sluicebox()
        .args(["run", &examples.join("orders.csv").display().to_string(), "--config"])
        .arg(examples.join("job.toml"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--sink", &format!("dynamodb://{}", unique("absent")), "--force"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loading the AWS configuration"), "{stderr}");
}

/// The README's AWS section followed word for word, with the example job as it is in the
/// repository: its reference is a file next to the job file, on the submitter's disk. The
/// submitter uploads it with the job, and three workers on other hosts (each with its own
/// working and data directory) read it from there. One worker is SIGKILLed mid-job; then,
/// the moment the gather starts, the remaining workers (the gatherer among them) are killed
/// too, and a worker started on a new host takes the gather over once its lease has ended.
/// `run --wait` follows it all to the summary, and the sink holds every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_aws_example_completes_with_workers_and_the_gatherer_killed() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let (bucket, queue, table, sink) = (unique("readme"), unique("readme-q"), unique("readme-l"), unique("readme-s"));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--sink", &format!("dynamodb://{sink}")])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let store = sluicebox::backends::bucket::open(
        &format!("s3://{bucket}"),
        &sluicebox::backends::cloud::Cloud::aws(conf.clone()),
    )
    .unwrap();
    let orders = std::fs::read(repo.join("examples/orders/orders.csv")).unwrap();
    store.put(&object_store::path::Path::from("incoming/orders.csv"), orders.into()).await.unwrap();
    let b = [
        "--bucket".to_string(),
        format!("s3://{bucket}/results"),
        "--queue".into(),
        format!("sqs://{queue}"),
        "--ledger".into(),
        format!("dynamodb://{table}"),
    ];
    let mut workers = Reaper(Vec::new());
    let mut hosts = Vec::new();
    let mut start_worker = |workers: &mut Reaper| {
        let host = tempfile::tempdir().unwrap();
        // S3 requests take 40 ms, as they take tens of ms on AWS: on the emulator the gather
        // could start and end between two looks at the ledger, and the test would not see it.
        let w = sluicebox()
            .current_dir(host.path())
            .env(sluicebox::backends::latency::VAR, "s3=40ms")
            .arg("worker")
            .args(&b)
            .args(["--idle-exit-secs", "60"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        workers.0.push(w);
        hosts.push(host);
    };
    for _ in 0..3 {
        start_worker(&mut workers);
    }
    let submitter = tempfile::tempdir().unwrap();
    let run = sluicebox()
        .current_dir(repo)
        .args(["run", "s3://BUCKET/incoming/orders.csv".replace("BUCKET", &bucket).as_str()])
        .args(["--config", "examples/orders/job.toml"])
        .args(&b)
        .args(["--sink", &format!("dynamodb://{sink}"), "--wait", "--json", "--data-dir"])
        .arg(submitter.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(submitter.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let ledger = ledger::open(&format!("dynamodb://{table}"), &sluicebox::backends::cloud::Cloud::aws(conf.clone()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut killed_one = false;
    loop {
        assert!(std::time::Instant::now() < deadline, "the job did not reach its gather in time");
        let jobs = ledger_jobs(&store, ledger.as_ref()).await;
        match jobs.first() {
            Some(job) if job.status == ledger::JobStatus::Running && job.done_chunks >= 1 && !killed_one => {
                workers.0[0].kill().unwrap();
                workers.0[0].wait().unwrap();
                killed_one = true;
            }
            Some(job) if job.status == ledger::JobStatus::Gathering => break,
            Some(job) => assert!(job.status != ledger::JobStatus::Complete, "the gather ended before it was seen"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(killed_one, "a worker was killed mid-job");
    for w in &mut workers.0[1..] {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    start_worker(&mut workers);
    let out = run.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(submitter.path().join("stderr")).unwrap();
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(summary["records"]["written"], 10_000, "{summary}");
    let job_id = summary["job_id"].as_str().unwrap();
    let definition = store
        .get(&object_store::path::Path::from(format!("results/jobs/{job_id}/job.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let definition: serde_json::Value = serde_json::from_slice(&definition).unwrap();
    let source = definition["config"]["enrich"]["source"].as_str().unwrap();
    assert!(source.starts_with(&format!("s3://{bucket}/results/resources/")), "{source}");
    let merged = store
        .get(&object_store::path::Path::from(format!("results/jobs/{job_id}/output.csv")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(merged.iter().filter(|&&b| b == b'\n').count(), 10_001, "the merged output holds every record once");
    let items = DynamoSink::new(sluicebox::backends::aws::dynamodb(&conf), &sink);
    let items = sluicebox::backends::sink::Sink::read_all(&items).await.unwrap();
    assert_eq!(items.len(), 10_000, "every record is in the sink");
    assert!(items.values().all(|r| r.contains_key("unitsSold")), "every record was enriched");
}

/// The jobs in `store`'s `results/jobs/` as the ledger holds them.
async fn ledger_jobs(store: &Arc<dyn object_store::ObjectStore>, ledger: &dyn StateStore) -> Vec<ledger::JobRecord> {
    let listed = store.list_with_delimiter(Some(&object_store::path::Path::from("results/jobs"))).await.unwrap();
    let mut jobs = Vec::new();
    for prefix in listed.common_prefixes {
        if let Some(job) = ledger.get_job(prefix.filename().unwrap()).await.unwrap() {
            jobs.push(job);
        }
    }
    jobs
}

/// What the `watch` tests share: a bucket holding `in/x.csv` (`csv`), an engine on it with
/// the local ledger and queue, the job `toml`, and the S3 event that names the object.
struct Watched {
    engine: sluicebox::engine::Engine,
    spec: sluicebox::engine::spec::JobSpec,
    event: String,
    prefix: String,
    input: String,
    _data: tempfile::TempDir,
}

async fn watched(name: &str, csv: String, toml: &str) -> Watched {
    let conf = emulator().await;
    let bucket = unique(name);
    aws_sdk_s3::Client::new(&conf).create_bucket().bucket(&bucket).send().await.unwrap();
    let cloud = sluicebox::backends::cloud::Cloud::aws(conf.clone());
    let store = sluicebox::backends::bucket::open(&format!("s3://{bucket}"), &cloud).unwrap();
    let object = object_store::path::Path::from("in/x.csv");
    object_store::ObjectStoreExt::put(store.as_ref(), &object, csv.into_bytes().into()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::engine::Engine::local(data.path()).unwrap();
    engine.cloud = cloud;
    let spec = sluicebox::model::config::JobConfig::from_toml(toml, "j").unwrap().validate(data.path()).unwrap();
    let event = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": "in/x.csv"}}}]})
    .to_string();
    Watched {
        engine,
        spec,
        event,
        prefix: format!("s3://{bucket}/in/"),
        input: format!("s3://{bucket}/in/x.csv"),
        _data: data,
    }
}

/// A submission that failed half-way (the job created, never planned) is not counted as
/// started: the next event for the object submits it again, and a planned job is a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_submits_again_a_job_whose_submission_failed_half_way() {
    use sluicebox::backends::queue::MemoryQueue;
    let w = watched("half", "id\n1\n2\n".into(), "[sink]\ntype = \"none\"\n").await;
    let store = sluicebox::backends::bucket::input_store(&w.input, &w.engine.cloud).unwrap();
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        store.as_ref(),
        std::slice::from_ref(&w.input),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let job_id = sluicebox::batch::job::derive_job_id(&inputs, &w.spec);
    // What a submitter that died after creating the job leaves.
    w.engine.ledger.create_job(&sluicebox::backends::ledger::JobRecord::new(&job_id, 1)).await.unwrap();
    let events = MemoryQueue::new(Duration::from_secs(30));
    let opts = sluicebox::batch::job::RunOptions::default();
    let wait = Duration::from_millis(100);
    events.send(vec![w.event.clone()]).await.unwrap();
    let outcomes =
        sluicebox::batch::watch::watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    let input = w.input.clone();
    assert_eq!(outcomes, [sluicebox::batch::watch::Outcome::Started { input: input.clone(), job_id: job_id.clone() }]);
    let job = w.engine.ledger.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!((job.status, job.total_chunks), (sluicebox::backends::ledger::JobStatus::Running, Some(1)));
    events.send(vec![w.event.clone()]).await.unwrap();
    let outcomes =
        sluicebox::batch::watch::watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert_eq!(outcomes, [sluicebox::batch::watch::Outcome::Repeated { input, job_id }]);
}

/// A submitter cut off while sending a planned job's tasks: the job is `running` with tasks
/// missing. The event comes back (it was not acknowledged) and its repeat sends the tasks
/// again; only once every task was sent is a later event a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_again_the_tasks_of_a_submission_cut_off_while_sending() {
    use sluicebox::backends::queue::faults::{FaultyQueue, QueueFaults};
    use sluicebox::backends::queue::{MemoryQueue, Queue};
    let rows: String = (0..25).map(|i| format!("{i}\n")).collect();
    let mut w = watched("cut", format!("id\n{rows}"), "[chunking]\nrecords = 1\n[sink]\ntype = \"none\"\n").await;
    let tasks: Arc<dyn Queue> = Arc::new(MemoryQueue::new(Duration::from_secs(60)));
    let cut_off = QueueFaults { fail_sends_after: Some(1), ..Default::default() };
    let mut cut = w.engine.clone();
    cut.queue = Arc::new(FaultyQueue::new(tasks.clone(), cut_off));
    w.engine.queue = tasks.clone();
    let events = MemoryQueue::new(Duration::from_secs(30));
    let opts = sluicebox::batch::job::RunOptions::default();
    let wait = Duration::from_millis(100);
    events.send(vec![w.event.clone()]).await.unwrap();
    let outcomes = sluicebox::batch::watch::watch_once(&cut, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert_eq!(outcomes, [], "the submission failed");
    let taken = tasks.receive(100, Duration::from_millis(50)).await.unwrap();
    assert_eq!(taken.len(), 10, "one batch of ten tasks went out before the cut");
    // The event was given back, not acknowledged: its next delivery finishes the submission.
    let outcomes =
        sluicebox::batch::watch::watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert!(matches!(&outcomes[..], [sluicebox::batch::watch::Outcome::Started { .. }]), "{outcomes:?}");
    let taken = tasks.receive(100, Duration::from_millis(50)).await.unwrap();
    assert_eq!(taken.len(), 25, "every task was sent again");
    events.send(vec![w.event.clone()]).await.unwrap();
    let outcomes =
        sluicebox::batch::watch::watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert!(matches!(&outcomes[..], [sluicebox::batch::watch::Outcome::Repeated { .. }]), "{outcomes:?}");
}

/// `[sink] publish = "sns://…"` beside the SQLite table: every written record reaches the
/// topic's subscriber once (no fault here), as its JSON with `key`, `job` and `seq` attributes,
/// 10 per `PublishBatch`; the table holds them too, and rejected records are not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_published_to_an_sns_topic_beside_the_table() {
    let conf = emulator().await;
    let sns = sluicebox::backends::aws::sns(&conf);
    let topic = sns.create_topic().name(unique("records")).send().await.unwrap().topic_arn.unwrap();
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let queue = sqs.create_queue().queue_name(unique("subscriber")).send().await.unwrap().queue_url.unwrap();
    let arn = common::queue_arn(&sqs, &queue).await;
    let subscribed = sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn);
    subscribed.attributes("RawMessageDelivery", "true").send().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    let rows: String = (0..25).map(|i| format!("{i},n{i}\n")).collect();
    std::fs::write(&input, format!("id,name\n{rows}x,\n")).unwrap();
    let job = format!(
        "[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n[[columns]]\nname = \"name\"\nrequired = true\n\
         [key]\nfields = [\"id\"]\n[sink]\ntable = \"items\"\npublish = \"sns://{topic}\"\n"
    );
    let spec = sluicebox::model::config::JobConfig::from_toml(&job, "job.toml").unwrap().validate(dir.path()).unwrap();
    let mut engine = sluicebox::engine::Engine::local(&dir.path().join("data")).unwrap();
    engine.cloud = sluicebox::backends::cloud::Cloud::aws(conf.clone());
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &[input.display().to_string()],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let summary = sluicebox::batch::job::run(&engine, &spec, inputs, &Default::default()).await.unwrap();
    assert_eq!((summary.records.written, summary.records.rejected), (25, 1));
    assert_eq!(summary.api_calls.get("sns.PublishBatch"), Some(&3), "{:?}", summary.api_calls);

    let mut got = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() && got.len() >= 25 {
            break;
        }
        for m in messages {
            let attributes = m.message_attributes.unwrap_or_default();
            let key = attributes["key"].string_value.clone().unwrap();
            assert!(got.insert(key, serde_json::from_str::<serde_json::Value>(&m.body.unwrap()).unwrap()).is_none());
            sqs.delete_message().queue_url(&queue).receipt_handle(m.receipt_handle.unwrap()).send().await.unwrap();
        }
    }
    assert_eq!(got.len(), 25, "every written record, once");
    assert_eq!(got["7"], serde_json::json!({"id": 7, "name": "n7"}));
    let table =
        sluicebox::backends::sink::SqliteSink::existing(&dir.path().join("data/sluicebox.db"), "items").unwrap();
    assert_eq!(sluicebox::backends::sink::Sink::read_all(&table).await.unwrap().len(), 25, "the table holds them too");
}

/// With `[input] ready_marker`, uploads start nothing until the marker lands; then one job
/// takes every object of the marker's folder (not the marker, not `_temporary/` or hidden
/// objects, nothing outside the watched prefix), its small files packed into one chunk; a
/// repeated marker event is a repeat, and a folder holding only its marker starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_marker_makes_one_job_of_its_folder() {
    use sluicebox::backends::queue::{MemoryQueue, Queue};
    use sluicebox::batch::watch::{watch_once, Outcome};
    let w =
        watched("marker", "id\n1\n2\n".into(), "[input]\nready_marker = \"_SUCCESS\"\n[sink]\ntype = \"none\"\n").await;
    let bucket = w.prefix.trim_start_matches("s3://").split('/').next().unwrap().to_string();
    let store = sluicebox::backends::bucket::open(&format!("s3://{bucket}"), &w.engine.cloud).unwrap();
    let put = |key: &str, body: &str| {
        let (store, key, body) = (store.clone(), key.to_string(), body.to_string());
        async move {
            let path = object_store::path::Path::from(key.as_str());
            object_store::ObjectStoreExt::put(store.as_ref(), &path, body.into_bytes().into()).await.unwrap();
        }
    };
    for i in 0..30 {
        put(&format!("in/day1/part-{i:03}.csv"), &format!("id\n{i}\n")).await;
    }
    put("in/day1/_temporary/part-999.csv", "id\n999\n").await;
    put("in/day1/.hidden.csv", "id\n998\n").await;
    put("in/day1/_SUCCESS", "").await;
    put("in/empty/_SUCCESS", "").await;
    let event = |key: &str| {
        serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": bucket}, "object": {"key": key}}}]})
        .to_string()
    };
    let events = MemoryQueue::new(Duration::from_secs(30));
    let opts = sluicebox::batch::job::RunOptions::default();
    let wait = Duration::from_millis(100);
    events.send(vec![event("in/day1/part-000.csv"), event("in/x.csv")]).await.unwrap();
    let outcomes = watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Ignored { .. })), "{outcomes:?}");
    assert!(outcomes[0].to_string().contains("waits for its folder's _SUCCESS"), "{}", outcomes[0]);

    events.send(vec![event("in/day1/_SUCCESS")]).await.unwrap();
    let outcomes = watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    let folder = format!("s3://{bucket}/in/day1/");
    let [Outcome::Started { input, job_id }] = &outcomes[..] else { panic!("{outcomes:?}") };
    assert_eq!(input, &folder);
    let job = w.engine.ledger.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(job.total_chunks, Some(1), "30 small files, one chunk");
    let objects = sluicebox::batch::job::JobObjects::new(w.engine.bucket.clone(), job_id);
    let plan = objects.plan().await.unwrap();
    let names: Vec<&str> = plan.inputs.iter().map(|i| i.object.location.rsplit('/').next().unwrap()).collect();
    assert_eq!(names.len(), 30, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("part-") && n != &"part-999.csv"), "{names:?}");

    events.send(vec![event("in/day1/_SUCCESS"), event("in/empty/_SUCCESS")]).await.unwrap();
    let outcomes = watch_once(&w.engine, &w.spec, &events, &w.prefix, &opts, wait).await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::Repeated { job_id: j, .. } if j == job_id), "{outcomes:?}");
    assert!(outcomes[1].to_string().contains("nothing but its marker"), "{}", outcomes[1]);
}
