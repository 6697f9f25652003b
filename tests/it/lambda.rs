//! The Lambda handlers, called in-process with event JSON as AWS delivers it, against the moto
//! emulator that `scripts/test` starts on loopback (these tests fail without it). The test
//! plays the Lambda service: it takes S3's notifications from the events queue to on-object,
//! and the task queue's messages to several on-task functions at once, deleting the messages a
//! handler did not report as failed, as an event source mapping with `ReportBatchItemFailures`
//! does.
#![cfg(feature = "lambda")]

use crate::common;

use common::{emulator, unique};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use object_store::ObjectStoreExt;
use sluicebox::backends::cloud::Cloud;
use sluicebox::backends::sink::{Sink, SinkItem};
use sluicebox::engine::{BackendUrls, Engine};
use sluicebox::lambda::{Function, Settings};

/// What a deployment holds: a bucket whose `in/` prefix notifies an events queue, a task
/// queue, a ledger table and a sink table, with the orders job and its reference in the bucket.
pub(crate) struct Stack {
    pub(crate) conf: aws_config::SdkConfig,
    pub(crate) bucket: String,
    pub(crate) events_url: String,
    pub(crate) tasks_url: String,
    /// Where the notification topic delivers.
    pub(crate) notes_url: String,
    pub(crate) settings: Settings,
    pub(crate) sink_table: String,
    _scratch: tempfile::TempDir,
}

pub(crate) async fn stack(name: &str) -> Stack {
    stack_telling(name, false).await
}

/// A stack whose functions tell how jobs end through SNS and, with `email`, through SES.
async fn stack_telling(name: &str, email: bool) -> Stack {
    let conf = emulator().await;
    let (bucket, events, tasks, ledger, sink) =
        (unique(name), unique("events"), unique("tasks"), unique("ledger"), unique("orders"));
    let s3 = sluicebox::backends::aws::s3(&conf);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let events_url = sqs.create_queue().queue_name(&events).send().await.unwrap().queue_url.unwrap();
    let tasks_url = sqs
        .create_queue()
        .queue_name(&tasks)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = common::queue_arn(&sqs, &events_url).await;
    let ddb = sluicebox::backends::aws::dynamodb(&conf);
    sluicebox::backends::ledger::dynamodb::DynamoLedger::create_table(&ddb, &ledger).await.unwrap();
    sluicebox::backends::sink::dynamodb::DynamoSink::create_table(&ddb, &sink).await.unwrap();

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let reference = format!("s3://{bucket}/reference/financial.csv");
    let job = std::fs::read_to_string(examples.join("job.toml"))
        .unwrap()
        .replace("source = \"financial.csv\"", &format!("source = {reference:?}"));
    assert!(job.contains(&reference));
    let put = |key: &str, body: Vec<u8>| s3.put_object().bucket(&bucket).key(key).body(body.into()).send();
    put("reference/financial.csv", std::fs::read(examples.join("financial.csv")).unwrap()).await.unwrap();
    put("config/job.toml", job.into_bytes()).await.unwrap();
    // Notifications from now on: the job file and the reference start nothing.
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

    // Job outcomes go to an SNS topic (delivering to a queue the test reads) and by SES.
    let sns = aws_sdk_sns::Client::new(&conf);
    let topic = sns.create_topic().name(unique("outcomes")).send().await.unwrap().topic_arn.unwrap();
    let notes_url = sqs.create_queue().queue_name(unique("notes")).send().await.unwrap().queue_url.unwrap();
    let notes_arn = common::queue_arn(&sqs, &notes_url).await;
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(notes_arn).send().await.unwrap();
    aws_sdk_sesv2::Client::new(&conf).create_email_identity().email_identity("jobs@example.com").send().await.unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let settings = Settings::from_vars(|v| {
        Some(match v {
            "SLUICEBOX_BUCKET" => format!("s3://{bucket}/out"),
            "SLUICEBOX_QUEUE" => tasks_url.clone(),
            "SLUICEBOX_LEDGER" => format!("dynamodb://{ledger}"),
            "SLUICEBOX_JOB" => format!("s3://{bucket}/config/job.toml"),
            "SLUICEBOX_INPUT_PREFIX" => format!("s3://{bucket}/in/"),
            "SLUICEBOX_SINK" => format!("dynamodb://{sink}"),
            "SLUICEBOX_SCRATCH" => scratch.path().join("function").display().to_string(),
            "SLUICEBOX_WORKERS" => "2".into(),
            "SLUICEBOX_VISIBILITY_SECS" => "30".into(),
            "SLUICEBOX_NOTIFY" if email => format!("sns://{topic}, ses://ops@example.com"),
            "SLUICEBOX_NOTIFY" => format!("sns://{topic}"),
            "SLUICEBOX_NOTIFY_FROM" => "jobs@example.com".into(),
            _ => return None,
        })
    })
    .unwrap();
    Stack { conf, bucket, events_url, tasks_url, notes_url, settings, sink_table: sink, _scratch: scratch }
}

impl Stack {
    /// A function (a container of its own: its own scratch directory) with `layer` over the
    /// sink its jobs open.
    pub(crate) async fn function(&self, n: u32, layer: Option<sluicebox::engine::SinkLayer>) -> Function {
        let mut settings = self.settings.clone();
        settings.scratch = settings.scratch.join(n.to_string());
        std::fs::create_dir_all(&settings.scratch).unwrap();
        let urls = BackendUrls {
            bucket: Some(settings.bucket.clone()),
            queue: Some(settings.queue.clone()),
            ledger: Some(settings.ledger.clone()),
            visibility: settings.visibility,
        };
        let mut engine = Engine::with_backends(
            &settings.scratch,
            &urls,
            settings.input_prefix.as_deref().unwrap(),
            Cloud::aws(self.conf.clone()),
        )
        .await
        .unwrap();
        engine.sink_layer = layer;
        Function::with_engine(settings, engine)
    }

    /// Up to ten messages of `queue_url`, as Lambda's event source mapping hands them over.
    pub(crate) async fn receive(&self, queue_url: &str, wait_s: i32) -> Vec<SqsMessage> {
        self.receive_at_most(queue_url, wait_s, 10).await
    }

    /// Up to `n` messages of `queue_url`.
    async fn receive_at_most(&self, queue_url: &str, wait_s: i32, n: i32) -> Vec<SqsMessage> {
        let sqs = sluicebox::backends::aws::sqs(&self.conf);
        let got = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(n)
            .wait_time_seconds(wait_s)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        got.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attributes = m.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_string(), v));
                serde_json::from_value(serde_json::json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": attributes.collect::<BTreeMap<_, _>>(),
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:tasks",
                    "awsRegion": "us-east-1",
                }))
                .unwrap()
            })
            .collect()
    }

    /// Delete the messages of `batch` not named in `failed`, as Lambda does after a handler
    /// that reports batch item failures returns.
    pub(crate) async fn settle(&self, queue_url: &str, batch: &[SqsMessage], failed: &[String]) {
        let sqs = sluicebox::backends::aws::sqs(&self.conf);
        for m in batch {
            if !failed.contains(m.message_id.as_ref().unwrap()) {
                let receipt = m.receipt_handle.clone().unwrap();
                sqs.delete_message().queue_url(queue_url).receipt_handle(receipt).send().await.unwrap();
            }
        }
    }

    pub(crate) async fn object(&self, key: &str) -> Option<bytes::Bytes> {
        let store = sluicebox::backends::bucket::open(&format!("s3://{}", self.bucket), &Cloud::aws(self.conf.clone()))
            .unwrap();
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(got) => Some(got.bytes().await.unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The example's header and first `n` orders.
pub(crate) fn orders_head(n: usize) -> Vec<u8> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");
    let orders = std::fs::read_to_string(examples.join("orders.csv")).unwrap();
    orders.lines().take(n + 1).map(|l| format!("{l}\n")).collect::<String>().into_bytes()
}

pub(crate) fn sqs_event(batch: &[SqsMessage]) -> SqsEvent {
    serde_json::from_value(serde_json::json!({ "Records": batch })).unwrap()
}

fn failed_ids(response: &serde_json::Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// A sink whose first write of the chosen calls fails, as a throttled table might: those
/// tasks fail once and come back.
#[derive(Debug)]
struct FailSomeWrites(Arc<dyn Sink>, Arc<AtomicU32>);

#[async_trait]
impl Sink for FailSomeWrites {
    async fn write(&self, items: Vec<SinkItem>) -> sluicebox::Result<()> {
        let n = self.1.fetch_add(1, Ordering::SeqCst);
        if n == 1 || n == 4 {
            return Err(sluicebox::Error::backend(sluicebox::error::Backend::Injected, "injected", "throttled once"));
        }
        self.0.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        self.0.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.0.discard(job).await
    }
    async fn read_all(&self) -> sluicebox::Result<BTreeMap<String, sluicebox::model::record::Record>> {
        self.0.read_all().await
    }
}

/// The orders example end to end through the handlers: S3's own notification, through the
/// events queue, starts the job in on-object; three on-task functions work its task batches at
/// once, one of them with too little time left (it gives every task back), some tasks fail once
/// (a sink write fails) and one task is delivered twice. The summary, the merged output, the
/// rejects and the sink equal a local run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_orders_example_through_the_handlers_matches_the_local_run() {
    let stack = stack_telling("lambda", true).await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders");

    // The local run, for comparison.
    let local_dir = tempfile::tempdir().unwrap();
    let local_engine = Engine::local(local_dir.path()).unwrap();
    let spec = sluicebox::model::config::JobConfig::from_toml(
        &std::fs::read_to_string(examples.join("job.toml")).unwrap(),
        "job.toml",
    )
    .unwrap()
    .validate(&examples)
    .unwrap();
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        local_engine.inputs.as_ref(),
        &[examples.join("orders.csv").display().to_string()],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let local = sluicebox::batch::job::run(&local_engine, &spec, inputs, &Default::default()).await.unwrap();
    let local_job = local_dir.path().join("bucket/jobs").join(&local.job_id);

    // The file lands; S3 tells the events queue; on-object starts the job.
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    let orders = std::fs::read(examples.join("orders.csv")).unwrap();
    s3.put_object().bucket(&stack.bucket).key("in/orders.csv").body(orders.into()).send().await.unwrap();
    let starter = stack.function(0, None).await;
    // S3's test event, sent when the notification was configured, and the object's.
    let mut notes = Vec::new();
    for _ in 0..10 {
        if notes.iter().any(|m: &SqsMessage| m.body.as_ref().unwrap().contains("orders.csv")) {
            break;
        }
        notes.extend(stack.receive(&stack.events_url, 1).await);
    }
    let bodies: Vec<_> = notes.iter().map(|m| m.body.clone().unwrap()).collect();
    assert!(bodies.iter().any(|b| b.contains("orders.csv")), "no notification of the object: {bodies:?}");
    let event = serde_json::json!({ "Records": notes });
    let answer = starter.on_object(event).await.unwrap();
    assert_eq!(failed_ids(&answer), Vec::<String>::new());
    stack.settle(&stack.events_url, &notes, &[]).await;

    // Three containers work the task batches at once.
    let writes = Arc::new(AtomicU32::new(0));
    let layer: sluicebox::engine::SinkLayer = {
        let writes = writes.clone();
        Arc::new(move |s| Arc::new(FailSomeWrites(s, writes.clone())) as Arc<dyn Sink>)
    };
    let functions = [
        stack.function(1, Some(layer.clone())).await,
        stack.function(2, Some(layer)).await,
        stack.function(3, None).await,
    ];
    let (mut given_back, mut rounds, mut duplicated) = (0, 0, false);
    let mut job_id = None;
    let summary_key = loop {
        rounds += 1;
        assert!(rounds < 60, "the job did not complete");
        let mut batches = Vec::new();
        for _ in 0..3 {
            batches.push(stack.receive_at_most(&stack.tasks_url, 1, 4).await);
        }
        if let Some(m) = batches.iter().flatten().next() {
            let task: serde_json::Value = serde_json::from_str(m.body.as_ref().unwrap()).unwrap();
            job_id = Some(task["job_id"].as_str().unwrap().to_string());
        }
        if let Some(m) = batches.iter().flatten().next().filter(|_| !duplicated && rounds > 1) {
            // At-least-once delivery: the same task twice.
            let body = m.body.clone().unwrap();
            let sqs = sluicebox::backends::aws::sqs(&stack.conf);
            sqs.send_message().queue_url(&stack.tasks_url).message_body(body).send().await.unwrap();
            duplicated = true;
        }
        let remaining =
            |i: usize| if rounds == 1 && i == 0 { Duration::from_millis(50) } else { Duration::from_secs(120) };
        let answers = futures::future::join_all(
            batches.iter().enumerate().map(|(i, b)| functions[i].on_task(sqs_event(b), remaining(i))),
        )
        .await;
        for (i, (batch, answer)) in batches.iter().zip(&answers).enumerate() {
            let failed: Vec<String> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
            if rounds == 1 && i == 0 {
                assert_eq!(failed.len(), batch.len(), "with no time left every task is given back");
                given_back += failed.len();
            }
            stack.settle(&stack.tasks_url, batch, &failed).await;
        }
        let Some(job_id) = &job_id else { continue };
        if stack.object(&format!("out/jobs/{job_id}/summary.json")).await.is_some() {
            break format!("out/jobs/{job_id}");
        }
        if batches.iter().all(Vec::is_empty) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    assert!(given_back > 0, "the short invocation had tasks to give back");
    assert!(duplicated);
    assert!(writes.load(Ordering::SeqCst) >= 5, "the failing writes were reached");

    let summary: serde_json::Value =
        serde_json::from_slice(&stack.object(&format!("{summary_key}/summary.json")).await.unwrap()).unwrap();
    assert_eq!(summary["records"], serde_json::to_value(&local.records).unwrap());
    assert_eq!(summary["rejects_by_rule"], serde_json::to_value(&local.rejects_by_rule).unwrap());
    // The sink's figures came from three functions through the chunks' commits: each chunk's
    // committing attempt wrote its records once.
    let figures = &summary["sink_figures"];
    assert_eq!(figures["items_written"], summary["records"]["written"], "{figures}");
    assert!(figures["write_units"].as_f64().is_some_and(|u| u > 0.0), "{figures}");
    assert!(figures["requests"].as_u64() >= figures["items_written"].as_u64(), "a PutItem per item: {figures}");
    let output = stack.object(&format!("{summary_key}/output.csv")).await.unwrap();
    assert!(
        output.as_ref() == std::fs::read(local_job.join("output.csv")).unwrap().as_slice(),
        "merged outputs differ"
    );
    let rejects = stack.object(&format!("{summary_key}/rejects.jsonl")).await.unwrap();
    assert!(rejects.as_ref() == std::fs::read(local_job.join("rejects.jsonl")).unwrap().as_slice(), "rejects differ");
    let local_rows =
        sluicebox::backends::sink::SqliteSink::existing(&local_dir.path().join("sluicebox.db"), "orders").unwrap();
    let local_rows = local_rows.read_all().await.unwrap();
    let sink = sluicebox::backends::sink::dynamodb::DynamoSink::new(
        sluicebox::backends::aws::dynamodb(&stack.conf),
        &stack.sink_table,
    );
    let items = sink.read_all().await.unwrap();
    assert_eq!(items.len(), local_rows.len());
    assert!(items == local_rows, "the DynamoDB items differ from the local sink's rows");
    let ledger = sluicebox::backends::ledger::dynamodb::DynamoLedger::new(
        sluicebox::backends::aws::dynamodb(&stack.conf),
        stack.settings.ledger.trim_start_matches("dynamodb://"),
    );
    let job =
        sluicebox::backends::ledger::StateStore::get_job(&ledger, job_id.as_ref().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.status, sluicebox::backends::ledger::JobStatus::Complete);
    // The table's time to live removes a finished job: its item in 30 days, its chunks' after.
    let ddb = sluicebox::backends::aws::dynamodb(&stack.conf);
    let ledger_table = stack.settings.ledger.trim_start_matches("dynamodb://");
    let expires = |sk: &'static str| {
        let (ddb, pk) = (ddb.clone(), format!("job#{}", job_id.as_ref().unwrap()));
        async move {
            let item = ddb
                .get_item()
                .table_name(ledger_table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.into()))
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            let at: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            (at - now) / 86_400
        }
    };
    assert_eq!(expires("job").await, 29, "a finished job's item expires in 30 days");
    assert!(expires("chunk#0000000000").await >= 59, "its chunks after it");

    // Told once through SNS, with the real status, the counts and a presigned link that opens.
    let notes = stack.receive(&stack.notes_url, 2).await;
    assert_eq!(notes.len(), 1, "one notification");
    let envelope: serde_json::Value = serde_json::from_str(notes[0].body.as_ref().unwrap()).unwrap();
    let told: serde_json::Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(told["status"], local.status.as_str());
    assert_eq!(told["records"], summary["records"]);
    let link = told["links"]["output"].as_str().unwrap();
    assert!(link.contains("X-Amz-Signature"), "{link}");
    // A bearer link to the whole output: it works a day (not seven), and the message says until when.
    assert!(link.contains("X-Amz-Expires=86400"), "{link}");
    let until = chrono::DateTime::parse_from_rfc3339(told["links_expire_at"].as_str().unwrap()).unwrap();
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left <= chrono::Duration::hours(24) && left > chrono::Duration::hours(23), "{until}");
    assert!(told["text"].as_str().unwrap().contains("The links work until "), "{told}");
    let fetched = reqwest::get(link).await.unwrap().bytes().await.unwrap();
    assert!(fetched == output, "the presigned link gives the merged output");
    // And by e-mail: SES counts it (the only test that sends e-mail through SES).
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let quota = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261202/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=GetSendQuota&Version=2010-12-01")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(quota.contains("<SentLast24Hours>1.0</SentLast24Hours>"), "one e-mail sent: {quota}");
}

/// An S3 event as AWS delivers it straight to a function (every field AWS sends), then the same
/// event again (a repeat: nothing started), then inside an SNS event, then `s3:TestEvent`; an
/// object outside the prefix is ignored. Each answer says what became of the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_object_takes_s3_events_directly_and_through_sns_and_ignores_repeats() {
    let stack = stack("direct").await;
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    let put = s3.put_object().bucket(&stack.bucket).key("in/day one.csv").body(orders_head(2).into());
    let e_tag = put.send().await.unwrap().e_tag.unwrap();
    let f = stack.function(0, None).await;
    // What S3 sends (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-02T06:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "sluicebox",
               "bucket": {"name": stack.bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": format!("arn:aws:s3:::{}", stack.bucket)},
               "object": {"key": "in/day+one.csv", "size": orders_head(2).len(), "eTag": e_tag.trim_matches('"'), "sequencer": "0055AED6DCD90281E5"}}
    }]});
    let first = f.on_object(event.clone()).await.unwrap();
    assert_eq!(first["started"].as_array().unwrap().len(), 1, "{first}");
    let job_id = first["started"][0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(first["started"][0]["input"], format!("s3://{}/in/day one.csv", stack.bucket));
    let again = f.on_object(event.clone()).await.unwrap();
    assert_eq!(again["repeated"][0]["job_id"], job_id.as_str(), "{again}");
    assert_eq!(again["started"].as_array().unwrap().len(), 0);

    let sns = serde_json::json!({"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:uploads:1",
        "Sns": {"Type": "Notification", "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads", "Subject": "Amazon S3 Notification",
                "Message": event.to_string(), "Timestamp": "2026-12-02T06:00:01.000Z"}
    }]});
    let through_sns = f.on_object(sns).await.unwrap();
    assert_eq!(through_sns["repeated"][0]["job_id"], job_id.as_str(), "{through_sns}");

    let test_event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-02T06:00:00.000Z",
        "Bucket": stack.bucket, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"});
    let ignored = f.on_object(test_event).await.unwrap();
    assert_eq!(ignored["started"].as_array().unwrap().len(), 0);
    assert_eq!(ignored["ignored"].as_array().unwrap().len(), 1, "{ignored}");

    let mut outside = event.clone();
    outside["Records"][0]["s3"]["object"]["key"] = "elsewhere/x.csv".into();
    let answer = f.on_object(outside).await.unwrap();
    assert!(answer["ignored"][0].as_str().unwrap().contains("outside"), "{answer}");

    // The job's tasks are on the queue: one chunk for two records.
    let tasks = stack.receive(&stack.tasks_url, 2).await;
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].body.as_ref().unwrap().contains(&job_id));
}

/// A batch of task messages with one that is not a task and one of a job that is gone (both
/// dropped: retrying cannot mend them) and one whose sink write fails: only that one comes
/// back, and a function with the sink up then completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_task_reports_only_the_tasks_to_retry() {
    let stack = stack("partial").await;
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    s3.put_object().bucket(&stack.bucket).key("in/x.csv").body(orders_head(2).into()).send().await.unwrap();
    let starter = stack.function(0, None).await;
    let notes = stack.receive(&stack.events_url, 5).await;
    let started = starter.on_object(serde_json::json!({ "Records": notes })).await.unwrap();
    assert_eq!(failed_ids(&started), Vec::<String>::new());
    let job_id = {
        let tasks = stack.receive(&stack.tasks_url, 2).await;
        assert_eq!(tasks.len(), 1);
        let body: serde_json::Value = serde_json::from_str(tasks[0].body.as_ref().unwrap()).unwrap();
        stack.settle(&stack.tasks_url, &tasks, &[]).await;
        body["job_id"].as_str().unwrap().to_string()
    };
    // The task again, as a fresh delivery.
    let resend = |body: String| async {
        let sqs = sluicebox::backends::aws::sqs(&stack.conf);
        sqs.send_message().queue_url(&stack.tasks_url).message_body(body).send().await.unwrap();
    };
    let store =
        sluicebox::backends::bucket::open(&format!("s3://{}/out", stack.bucket), &Cloud::aws(stack.conf.clone()))
            .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(
        &store
            .get(&object_store::path::Path::from(format!("jobs/{job_id}/plan.json")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let chunk = plan["chunks"][0].clone();
    let good = serde_json::json!({"job_id": job_id, "chunk": chunk, "generation": plan["order"]});
    resend(good.to_string()).await;
    let mut gone = good.clone();
    gone["job_id"] = "no-such-job".into();
    resend(gone.to_string()).await;
    resend("not a task".into()).await;
    let mut batch = Vec::new();
    while batch.len() < 3 {
        batch.extend(stack.receive(&stack.tasks_url, 2).await);
    }
    let good_id =
        batch.iter().find(|m| m.body.as_deref() == Some(good.to_string().as_str())).unwrap().message_id.clone();

    let down = stack.function(1, Some(Arc::new(|_| Arc::new(common::BrokenSink) as Arc<dyn Sink>))).await;
    let answer = down.on_task(sqs_event(&batch), Duration::from_secs(60)).await;
    let failed: Vec<String> = answer.batch_item_failures.iter().map(|b| b.item_identifier.clone()).collect();
    assert_eq!(failed, [good_id.unwrap()], "only the task whose write failed comes back");
    stack.settle(&stack.tasks_url, &batch, &failed).await;

    let up = stack.function(2, None).await;
    let mut done = false;
    for _ in 0..20 {
        let again = stack.receive(&stack.tasks_url, 2).await;
        if again.is_empty() {
            continue;
        }
        let answer = up.on_task(sqs_event(&again), Duration::from_secs(60)).await;
        assert!(answer.batch_item_failures.is_empty());
        stack.settle(&stack.tasks_url, &again, &[]).await;
        done = true;
        break;
    }
    assert!(done, "the failed task came back");
    let summary: serde_json::Value =
        serde_json::from_slice(&stack.object(&format!("out/jobs/{job_id}/summary.json")).await.unwrap()).unwrap();
    assert_eq!(summary["records"]["total"], 2);
}

/// A task whose earlier deliveries never answered (each killed its worker: a record that
/// runs a function out of memory or time) comes back with a receive count past the attempts
/// allowed: on-task fails its job with the chunk and its lines named, instead of working it
/// again until the queue drops it and the job stays running for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_attempts_never_answered_fails_its_job() {
    let stack = stack("unanswered").await;
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    s3.put_object().bucket(&stack.bucket).key("in/x.csv").body(orders_head(3).into()).send().await.unwrap();
    let starter = stack.function(0, None).await;
    let notes = stack.receive(&stack.events_url, 5).await;
    starter.on_object(serde_json::json!({ "Records": notes })).await.unwrap();
    let mut tasks = stack.receive(&stack.tasks_url, 2).await;
    assert_eq!(tasks.len(), 1);
    let body: serde_json::Value = serde_json::from_str(tasks[0].body.as_ref().unwrap()).unwrap();
    let job_id = body["job_id"].as_str().unwrap().to_string();
    // As the queue hands it over after three deliveries whose workers died.
    let attempts = stack.settings.max_attempts;
    tasks[0].attributes.insert("ApproximateReceiveCount".into(), (attempts + 1).to_string());
    let worker = stack.function(1, None).await;
    worker.on_task(sqs_event(&tasks), Duration::from_secs(60)).await;
    let failed = stack.object(&format!("out/jobs/{job_id}/failed.json")).await.expect("failed.json");
    let failed: serde_json::Value = serde_json::from_slice(&failed).unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("no attempt answered") && error.contains("from line 2"), "{failed}");
    let ledger = sluicebox::backends::ledger::dynamodb::DynamoLedger::new(
        sluicebox::backends::aws::dynamodb(&stack.conf),
        stack.settings.ledger.trim_start_matches("dynamodb://"),
    );
    let job = sluicebox::backends::ledger::StateStore::get_job(&ledger, &job_id).await.unwrap().unwrap();
    assert_eq!(job.status, sluicebox::backends::ledger::JobStatus::Failed);
    assert!(stack.object(&format!("out/jobs/{job_id}/summary.json")).await.is_none());
}

/// `sluicebox bench --aws --lambda` runs the orders job through the handlers (this process
/// playing the Lambda service) and reports API calls per record, the event source mapping's
/// included, and the functions' GB-seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_through_the_handlers_and_reports_gb_seconds() {
    let _ = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let m = bench_json(dir.path(), &["--lambda", "--records", "5000", "--workers", "2"]);
    assert_eq!(m["backend"], "lambda");
    assert_eq!(m["written"].as_u64().unwrap() + m["rejected"].as_u64().unwrap(), 5000);
    assert!(m["lambda_gb_s"].as_f64().unwrap() > 0.0, "{m}");
    let calls: serde_json::Value = serde_json::from_str(m["api_calls_by_operation"].as_str().unwrap()).unwrap();
    assert!(calls["lambda-esm.sqs.ReceiveMessage"].as_u64().unwrap() >= 1, "{calls}");
    let written = m["written"].as_u64().unwrap();
    let writes = calls["dynamodb.BatchWriteItem"].as_u64().unwrap();
    assert!((written.div_ceil(25)..written.div_ceil(25) + 5).contains(&writes), "25 items a request: {calls}");
    assert_predicted(&m);
    let csv = std::fs::read_to_string(dir.path().join("m.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("simulated_waited_ms") && csv.lines().count() == 2, "{csv}");
}

/// `sluicebox bench --aws … --json` with `args`, data and measurements in `dir`: its first
/// measurement.
fn bench_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["bench", "--aws", "--no-duckdb", "--json"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("bench"))
        .arg("--out")
        .arg(dir.join("m.csv"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap()
}

/// The requests `sluicebox plan` predicted for a bench run (`predicted_by_operation`) within
/// 10% of the job's own (the summary's: the event source mapping's polls are AWS's), per
/// service and in all, heartbeats aside.
fn assert_predicted(m: &serde_json::Value) {
    let predicted: BTreeMap<String, u64> = serde_json::from_str(m["predicted_by_operation"].as_str().unwrap()).unwrap();
    let counted: BTreeMap<String, u64> =
        serde_json::from_str::<BTreeMap<String, u64>>(m["api_calls_by_operation"].as_str().unwrap())
            .unwrap()
            .into_iter()
            .filter(|(op, _)| !op.starts_with("lambda-esm."))
            .collect();
    // Heartbeats follow a task's time: the forecast takes AWS's, and a debug build on the
    // emulator is many times slower. Every other request follows the job's shape.
    let timeless = |c: BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        c.into_iter().filter(|(op, _)| op != "sqs.ChangeMessageVisibility").collect()
    };
    let (predicted, counted) = (timeless(predicted), timeless(counted));
    let service = |c: &BTreeMap<String, u64>| {
        let mut by = BTreeMap::<String, u64>::new();
        c.iter().for_each(|(op, n)| *by.entry(op.split('.').next().unwrap().to_string()).or_default() += n);
        by.insert("all".into(), c.values().sum());
        by
    };
    let (p, a) = (service(&predicted), service(&counted));
    assert_eq!(p.keys().collect::<Vec<_>>(), a.keys().collect::<Vec<_>>(), "{predicted:?}\n{counted:?}");
    for (s, n) in &a {
        assert!((p[s] as f64 - *n as f64).abs() <= 0.1 * *n as f64, "{s}: {} of {n}\n{predicted:?}\n{counted:?}", p[s]);
    }
}

/// A million orders on the emulator, planned and run by workers and through the Lambda
/// handlers (no sink: a million items would take moto's DynamoDB half an hour): `plan`'s
/// requests within 10% of the summary's, per service and in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_a_million_orders_on_workers_and_through_the_handlers() {
    let _ = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    for how in [&["--workers", "2"][..], &["--lambda", "--workers", "2"][..]] {
        let m = bench_json(dir.path(), &[&["--no-sink", "--records", "1000000"], how].concat());
        assert_eq!(m["records"].as_u64(), Some(1_000_000), "{m}");
        assert_predicted(&m);
    }
}

/// A sink whose publish (in the gather) takes twelve seconds.
#[derive(Debug)]
struct SlowPublish(Arc<dyn Sink>);

#[async_trait]
impl Sink for SlowPublish {
    async fn write(&self, items: Vec<SinkItem>) -> sluicebox::Result<()> {
        self.0.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        tokio::time::sleep(Duration::from_secs(12)).await;
        self.0.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.0.discard(job).await
    }
    async fn read_all(&self) -> sluicebox::Result<BTreeMap<String, sluicebox::model::record::Record>> {
        self.0.read_all().await
    }
}

/// An invocation whose time runs out in the middle of the gather its task started gives the
/// task back; the gather's finished steps are recorded, its lease runs out, and the next
/// invocation that gets the task continues the gather and completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gather_cut_off_by_the_deadline_is_finished_by_the_next_invocation() {
    let stack = stack("deadline").await;
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    s3.put_object().bucket(&stack.bucket).key("in/x.csv").body(orders_head(20).into()).send().await.unwrap();
    let slow: sluicebox::engine::SinkLayer = Arc::new(|s| Arc::new(SlowPublish(s)) as Arc<dyn Sink>);
    let f = stack.function(0, Some(slow)).await;
    let mut notes = Vec::new();
    while !notes.iter().any(|m: &SqsMessage| m.body.as_ref().unwrap().contains("x.csv")) {
        notes.extend(stack.receive(&stack.events_url, 1).await);
    }
    let started = f.on_object(serde_json::json!({ "Records": notes })).await.unwrap();
    assert_eq!(failed_ids(&started), Vec::<String>::new());
    let task = stack.receive(&stack.tasks_url, 2).await;
    assert_eq!(task.len(), 1);
    let job_id = serde_json::from_str::<serde_json::Value>(task[0].body.as_ref().unwrap()).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Six seconds: enough for the chunk and the merges on a busy machine, not for the
    // gather's twelve-second publish.
    let cut = f.on_task(sqs_event(&task), Duration::from_secs(6)).await;
    assert_eq!(cut.batch_item_failures.len(), 1, "the task comes back");
    stack.settle(&stack.tasks_url, &task, &[task[0].message_id.clone().unwrap()]).await;
    let gathered = stack.object(&format!("out/jobs/{job_id}/gathered.json")).await.expect("steps recorded");
    let gathered: serde_json::Value = serde_json::from_slice(&gathered).unwrap();
    assert_eq!(gathered["steps"], serde_json::json!(["output", "rejects"]), "the merges were done");
    assert!(stack.object(&format!("out/jobs/{job_id}/summary.json")).await.is_none(), "not complete yet");

    // The task is back once the gather lease has run out; the next invocation finishes.
    let mut back = Vec::new();
    let waited = std::time::Instant::now();
    while back.is_empty() {
        assert!(waited.elapsed() < Duration::from_secs(60), "the task did not come back");
        back = stack.receive(&stack.tasks_url, 5).await;
    }
    assert!(waited.elapsed() >= Duration::from_secs(20), "not before the lease could end");
    let done = f.on_task(sqs_event(&back), Duration::from_secs(120)).await;
    assert!(done.batch_item_failures.is_empty());
    let summary = stack.object(&format!("out/jobs/{job_id}/summary.json")).await.expect("the job completed");
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["records"]["total"], 20);
}
