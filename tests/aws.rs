//! The AWS backends run their seams' conformance suites against the moto AWS emulator that
//! `scripts/test` starts on loopback. Without it (no `AWS_ENDPOINT_URL`) these tests fail
//! rather than skip: an AWS backend that was not tested must not pass as tested.
#![cfg(feature = "aws")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluicebox::ledger::dynamodb::DynamoLedger;
use sluicebox::ledger::{self, StateStore};
use sluicebox::queue::sqs::SqsQueue;
use sluicebox::queue::{self, Queue};

/// The SDK configuration for the emulator; panics when no emulator was started.
async fn emulator() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "AWS tests need the moto emulator on loopback: run them through scripts/test (AWS_ENDPOINT_URL={endpoint:?})"
    );
    sluicebox::aws::sdk_config().await
}

/// A name no other test (or earlier run against the same emulator) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

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
    let client = aws_sdk_sqs::Client::new(&emulator().await);
    queue::conformance::run_all(|| new_sqs_queue(&client), SQS_VISIBILITY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_sqs_sends_more_than_one_batch_and_by_url() {
    let client = aws_sdk_sqs::Client::new(&emulator().await);
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
    let err = queue::open(&url, SQS_VISIBILITY).await.unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_dynamodb_conformance() {
    let client = aws_sdk_dynamodb::Client::new(&emulator().await);
    let table = unique("ledger");
    DynamoLedger::create_table(&client, &table).await.unwrap();
    // The cases use distinct job ids, so they can share one table.
    let store: Arc<dyn StateStore> = Arc::new(DynamoLedger::new(client, &table));
    ledger::conformance::run_all(|| store.clone()).await;
    // Opening by URL gives the same ledger.
    let by_url = ledger::open(&format!("dynamodb://{table}")).await.unwrap();
    assert_eq!(by_url.get_job("job-c").await.unwrap().unwrap().done_chunks, 2);
}

/// The orders example with its input and outputs in S3, tasks in SQS and the ledger in
/// DynamoDB gives the same counts and the same merged output bytes as the local run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_through_s3_sqs_and_dynamodb_match_the_local_run() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let job = std::fs::read_to_string(examples.join("job.toml")).unwrap();
    let spec = sluicebox::config::JobConfig::from_toml(&job, "job.toml").unwrap().validate(&examples).unwrap();

    // The local run, for comparison.
    let local_dir = tempfile::tempdir().unwrap();
    let local_engine = sluicebox::job::Engine::local(local_dir.path()).unwrap();
    let local_input = examples.join("orders.csv").display().to_string();
    let inputs =
        sluicebox::bucket::resolve_inputs(local_engine.inputs.as_ref(), &[local_input], None, Default::default())
            .await
            .unwrap();
    let opts = sluicebox::job::RunOptions::default();
    let local = sluicebox::job::run(&local_engine, &spec, inputs, &opts).await.unwrap();
    let local_output =
        std::fs::read(local_dir.path().join("bucket/jobs").join(&local.job_id).join("output.csv")).unwrap();

    // The same job on the emulator.
    let bucket = unique("bucket");
    aws_sdk_s3::Client::new(&conf).create_bucket().bucket(&bucket).send().await.unwrap();
    let input_url = format!("s3://{bucket}/incoming/orders.csv");
    let inputs_store = sluicebox::bucket::input_store(&input_url).unwrap();
    let bytes = std::fs::read(examples.join("orders.csv")).unwrap();
    inputs_store.put(&object_store::path::Path::from("incoming/orders.csv"), bytes.into()).await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    let table = unique("ledger");
    DynamoLedger::create_table(&ddb, &table).await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let queue = new_sqs_queue(&sqs).await;
    let data = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::job::Engine::local(data.path()).unwrap();
    engine.bucket = sluicebox::bucket::open(&format!("s3://{bucket}/results")).unwrap();
    engine.bucket_url = format!("s3://{bucket}/results");
    engine.inputs = inputs_store.clone();
    engine.ledger = Arc::new(DynamoLedger::new(ddb, &table));
    engine.queue = queue;
    let inputs = sluicebox::bucket::resolve_inputs(engine.inputs.as_ref(), &[input_url], None, Default::default())
        .await
        .unwrap();
    assert_eq!(inputs[0].location, format!("s3://{bucket}/incoming/orders.csv"));
    let remote = sluicebox::job::run(&engine, &spec, inputs, &opts).await.unwrap();

    assert_eq!(remote.records, local.records);
    assert_eq!(remote.chunks, local.chunks);
    assert_eq!(remote.rejects_by_rule, local.rejects_by_rule);
    assert_eq!(remote.outputs.output, format!("s3://{bucket}/results/jobs/{}/output.csv", remote.job_id));
    let key = format!("results/jobs/{}/output.csv", remote.job_id);
    let remote_output = inputs_store.get(&object_store::path::Path::from(key)).await.unwrap().bytes().await.unwrap();
    assert!(remote_output.as_ref() == local_output.as_slice(), "merged outputs differ");
    // The ledger on DynamoDB says the job is complete, with every chunk committed once.
    let ledger = ledger::open(&format!("dynamodb://{table}")).await.unwrap();
    let job = ledger.get_job(&remote.job_id).await.unwrap().unwrap();
    assert_eq!((job.status, job.done_chunks, job.total_chunks), (ledger::JobStatus::Complete, 10, Some(10)));
}

/// From the command line: `aws setup` creates what a job needs, and `run` with `--bucket`,
/// `--queue` and `--ledger` runs the orders example on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_up_and_runs_a_job_on_aws() {
    use object_store::ObjectStoreExt;
    emulator().await;
    let (bucket, queue, table) = (unique("cli"), unique("cli-q"), unique("cli-t"));
    let bin = env!("CARGO_BIN_EXE_sluicebox");
    let setup = std::process::Command::new(bin)
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--max-receives", "3"])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let said = String::from_utf8_lossy(&setup.stdout);
    assert!(said.contains(&format!("bucket s3://{bucket}")) && said.contains("after 3 receives"), "{said}");

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let store = sluicebox::bucket::open(&format!("s3://{bucket}")).unwrap();
    let csv = std::fs::read(examples.join("orders.csv")).unwrap();
    store.put(&object_store::path::Path::from("in/orders.csv"), csv.into()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(bin)
        .args(["run", &format!("s3://{bucket}/in/orders.csv"), "--config"])
        .arg(examples.join("job.toml"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--bucket", &format!("s3://{bucket}/out"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--visibility-secs", "30", "--json"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8(run.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["records"], serde_json::json!({"total": 10000, "written": 10000, "rejected": 0, "filtered": 0}));
    let output = format!("out/jobs/{}/output.csv", summary["job_id"].as_str().unwrap());
    let merged = store.get(&object_store::path::Path::from(output)).await.unwrap().bytes().await.unwrap();
    assert_eq!(merged.iter().filter(|&&b| b == b'\n').count(), 10001);
}
