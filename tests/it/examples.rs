//! The examples' AWS variants on the moto emulator `scripts/test` starts, checked further than
//! their READMEs' walk-throughs (which `readme.rs` runs): seed 002's objects in an S3 folder
//! whose bucket `aws setup --events` has notify a queue, one job once its `_SUCCESS` marker
//! lands, every product published to SNS once; seed 004's
//! trips put on Kinesis by `produce` and delivered by `stream` into the same files, record for
//! record, as the local run writes from the CSV. Also: `job-notify.toml` is `job.toml` and more.
#![cfg(feature = "aws")]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{json_lines, objects, ok, sluicebox, unique};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// `job-notify.toml` adds the archive and the e-mail to the orders job without changing it.
#[test]
fn the_orders_job_with_its_archive_and_e_mail_is_the_orders_job() {
    let job = std::fs::read_to_string(example("orders/job.toml")).unwrap();
    let notify = std::fs::read_to_string(example("orders/job-notify.toml")).unwrap();
    let body = &job[job.find("[input]").unwrap()..];
    assert!(notify.contains(body), "job-notify.toml holds job.toml from [input] on, unchanged");
    assert!(notify.contains("\n[archive]\n") && notify.contains("\n[[notify]]\n"));
}

/// Seed 002 on S3 as its README runs it: `aws setup --events` has the bucket notify a queue;
/// the products are uploaded under a folder, the marker last; `watch` starts nothing until the
/// marker, then one job over the folder (one chunk for its small files, not the marker or a
/// `_temporary/` object), and every product reaches the topic's subscriber once, with the
/// seed's added field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_map_example_on_s3_waits_for_its_marker_and_publishes_every_product() {
    use object_store::ObjectStoreExt;
    let conf = common::emulator().await;
    let (bucket, events, tasks, ledger) = (unique("dmap"), unique("dmap-ev"), unique("dmap-q"), unique("dmap-l"));
    for _ in 0..2 {
        ok(sluicebox()
            .args([
                "aws",
                "setup",
                "--bucket",
                &format!("s3://{bucket}/incoming/"),
                "--events",
                &format!("sqs://{events}"),
            ])
            .args(["--queue", &format!("sqs://{tasks}"), "--ledger", &format!("dynamodb://{ledger}")])
            .output()
            .unwrap());
    }
    let told = sluicebox::backends::aws::s3(&conf).get_bucket_notification_configuration().bucket(&bucket);
    let told = told.send().await.unwrap();
    assert_eq!(told.queue_configurations().len(), 1, "a second setup adds no second notification: {told:?}");
    assert!(told.queue_configurations()[0].queue_arn().ends_with(&format!(":{events}")), "{told:?}");
    let sns = sluicebox::backends::aws::sns(&conf);
    let topic = sns.create_topic().name(unique("products")).send().await.unwrap().topic_arn.unwrap();
    let sqs = sluicebox::backends::aws::sqs(&conf);
    let subscriber = sqs.create_queue().queue_name(unique("subscriber")).send().await.unwrap().queue_url.unwrap();
    let arn = common::queue_arn(&sqs, &subscriber).await;
    let subscribed = sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn);
    subscribed.attributes("RawMessageDelivery", "true").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(example("distributed-map/job-aws.toml")).unwrap();
    let readme_topic = "sns://arn:aws:sns:us-east-1:123456789012:products";
    assert!(job.contains(readme_topic), "the example publishes to the topic its README creates");
    let job_path = dir.path().join("job-aws.toml");
    std::fs::write(&job_path, job.replace(readme_topic, &format!("sns://{topic}"))).unwrap();

    let store =
        sluicebox::backends::bucket::open(&format!("s3://{bucket}"), &sluicebox::backends::cloud::Cloud::aws(conf))
            .unwrap();
    let product = std::fs::read(example("distributed-map/example1.json")).unwrap();
    let mut keys: Vec<String> = (1..=60).map(|i| format!("incoming/day1/example{i}.json")).collect();
    keys.push("incoming/day1/_temporary/example0.json".into());
    let paths: Vec<object_store::path::Path> = keys.iter().map(|k| k.as_str().into()).collect();
    for put in futures::future::join_all(paths.iter().map(|p| store.put(p, product.clone().into()))).await {
        put.unwrap();
    }
    store.put(&object_store::path::Path::from("incoming/day1/_SUCCESS"), Vec::new().into()).await.unwrap();

    let said = ok(sluicebox()
        .args(["watch", &format!("s3://{bucket}/incoming/"), "--events", &format!("sqs://{events}")])
        .arg("--config")
        .arg(&job_path)
        .args(["--bucket", &format!("s3://{bucket}/results"), "--queue", &format!("sqs://{tasks}")])
        .args(["--ledger", &format!("dynamodb://{ledger}"), "--workers", "2", "--idle-exit-secs", "3"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap());
    let folder = format!("s3://{bucket}/incoming/day1/");
    assert_eq!(said.matches("waits for its folder's _SUCCESS").count(), 61, "{said}");
    let started: Vec<&str> = said.lines().filter(|l| l.starts_with("started job")).collect();
    assert_eq!(started.len(), 1, "{said}");
    assert!(started[0].ends_with(&format!(" for {folder}")), "{said}");
    let job_id = started[0].split_whitespace().nth(2).unwrap();

    let summary = objects(&format!("s3://{bucket}/results/jobs/{job_id}")).await;
    let summary: Value = serde_json::from_slice(&summary["summary.json"]).unwrap();
    assert_eq!(summary["records"], serde_json::json!({"total": 60, "written": 60, "rejected": 0, "filtered": 0}));
    assert_eq!(summary["chunks"]["total"], 1, "60 small files, one chunk");
    let inputs: BTreeSet<String> =
        summary["inputs"].as_array().unwrap().iter().map(|i| i["location"].as_str().unwrap().to_string()).collect();
    let uploaded: BTreeSet<String> = keys[..60].iter().map(|k| format!("s3://{bucket}/{k}")).collect();
    assert_eq!(inputs, uploaded, "the folder's products, not its marker or _temporary/");

    let mut published = BTreeMap::new();
    let mut idle = 0;
    while idle < 3 {
        let got = sqs.receive_message().queue_url(&subscriber).max_number_of_messages(10).wait_time_seconds(1);
        let messages = got.message_attribute_names("All").send().await.unwrap().messages.unwrap_or_default();
        idle = if messages.is_empty() { idle + 1 } else { 0 };
        for m in messages {
            let key = m.message_attributes.unwrap_or_default()["key"].string_value.clone().unwrap();
            let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            assert!(published.insert(key, body).is_none(), "a product published twice");
            sqs.delete_message().queue_url(&subscriber).receipt_handle(m.receipt_handle.unwrap()).send().await.unwrap();
        }
    }
    assert_eq!(published.len(), 60, "every product, once");
    for body in published.values() {
        assert_eq!(body["product"]["processed"], true, "{body}");
        assert_eq!(body["product"]["name"], "Product One", "{body}");
    }
}

/// Seed 004 on Kinesis as its README runs it: `produce` puts the CSV's trips on two shards,
/// keyed by taxi, and `stream` delivers them into S3: the same partitions and the same
/// records as the local run from the CSV, each file at most 5 MiB of records, a day over that
/// cut in two, and every trip in the folder of the day it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taxi_stream_example_on_kinesis_writes_what_the_local_run_writes() {
    common::assert_emulator();
    let dir = tempfile::tempdir().unwrap();
    let trips = dir.path().join("trips.csv");
    let generated = std::process::Command::new("sh")
        .arg(example("taxi-stream/trips.sh"))
        .arg("20000")
        .stdout(std::fs::File::create(&trips).unwrap())
        .status()
        .unwrap();
    assert!(generated.success());
    let job = example("taxi-stream/job.toml");
    let stream = |from: &str, to: &str, extra: &[&str]| {
        let out = sluicebox()
            .args(["stream", "--from", from, "--to", to, "--json", "--config"])
            .arg(&job)
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        serde_json::from_str::<Value>(ok(out).trim()).unwrap()
    };
    let local = dir.path().join("trips");
    let report = stream(trips.to_str().unwrap(), local.to_str().unwrap(), &[]);
    assert_eq!(report["written"], 20_000, "{report}");

    let (bucket, ledger, kinesis) = (unique("lake"), unique("taxi-ledger"), unique("taxi-trips"));
    ok(sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--ledger", &format!("dynamodb://{ledger}")])
        .output()
        .unwrap());
    let produced = ok(sluicebox()
        .args(["produce", trips.to_str().unwrap(), "--to", &format!("kinesis://{kinesis}"), "--shards", "2"])
        .args(["--partition-key", "TAXI_ID", "--json"])
        .output()
        .unwrap());
    let produced: Value = serde_json::from_str(produced.trim()).unwrap();
    assert_eq!(produced["records"], 20_000, "{produced}");
    let to = format!("s3://{bucket}/trips");
    let ledger_url = format!("dynamodb://{ledger}");
    let report = stream(&format!("kinesis://{kinesis}"), &to, &["--ledger", &ledger_url, "--idle-exit", "3"]);
    assert_eq!((report["written"].as_u64(), report["rejected"].as_u64()), (Some(20_000), Some(0)), "{report}");

    // Partition → its records, sorted; and every file's size.
    let by_partition = |files: BTreeMap<String, Vec<u8>>| {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, bytes) in files {
            assert!(bytes.len() <= 5 << 20, "{name}: {} bytes of records", bytes.len());
            let (partition, file) = name.rsplit_once('/').unwrap();
            assert!(file.starts_with("part-") && file.ends_with(".jsonl.gz"), "{name}");
            for trip in json_lines(&bytes) {
                let day = &trip["start_time"].as_str().unwrap()[..10];
                assert_eq!(format!("year={}/month={}/day={}", &day[..4], &day[5..7], &day[8..]), partition, "{trip}");
                out.entry(partition.to_string()).or_default().push(trip.to_string());
            }
        }
        out.values_mut().for_each(|v| v.sort());
        out
    };
    let local_files = common::decompressed_files(&local);
    let cloud_files = objects(&to).await;
    let cuts = |files: &BTreeMap<String, Vec<u8>>| files.keys().filter(|k| k.contains("day=01/")).count();
    assert_eq!(
        (cuts(&local_files), cuts(&cloud_files)),
        (2, 2),
        "the first day (about 7 MB of records) is cut in two files"
    );
    let (local, cloud) = (by_partition(local_files), by_partition(cloud_files));
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        ["year=2013/month=07/day=01", "year=2013/month=07/day=02", "year=2013/month=07/day=03"]
    );
    assert!(local == cloud, "Kinesis delivered other records than the local run from the CSV");
    assert_eq!(cloud.values().map(Vec::len).sum::<usize>(), 20_000);
}
