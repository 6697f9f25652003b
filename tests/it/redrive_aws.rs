//! Redrive on the AWS backends (the moto emulator): the first job and its redrive run through
//! S3, SQS and DynamoDB like any job, the redrive's tasks taken by a `sluicebox worker`
//! process that loads it from the bucket; the corrected records land in the DynamoDB table.
#![cfg(feature = "aws")]

use crate::common;
use crate::redrive::{job, rows};

use common::{emulator, unique};
use serde_json::json;

struct Reaper(Vec<std::process::Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn last_json(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_on_the_emulator_runs_on_workers_and_loads_the_corrected_records_into_dynamodb() {
    use object_store::ObjectStoreExt;
    let conf = emulator().await;
    let (bucket, queue, table, sink) = (unique("rd"), unique("rd-q"), unique("rd-t"), unique("rd-s"));
    let setup = common::sluicebox()
        .args(["aws", "setup", "--bucket", &format!("s3://{bucket}"), "--queue", &format!("sqs://{queue}")])
        .args(["--ledger", &format!("dynamodb://{table}"), "--sink", &format!("dynamodb://{sink}")])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let cloud = sluicebox::backends::cloud::Cloud::aws(conf.clone());
    let store = sluicebox::backends::bucket::open(&format!("s3://{bucket}"), &cloud).unwrap();
    store.put(&object_store::path::Path::from("in/days.csv"), rows(500).into_bytes().into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wrong, fixed) = (dir.path().join("wrong.toml"), dir.path().join("fixed.toml"));
    std::fs::write(&wrong, job("%Y-%m-%d")).unwrap();
    std::fs::write(&fixed, job("%d/%m/%Y")).unwrap();
    let backends = |c: &mut std::process::Command| {
        c.args(["--bucket", &format!("s3://{bucket}/out"), "--queue", &format!("sqs://{queue}")])
            .args(["--ledger", &format!("dynamodb://{table}")]);
    };
    let data = dir.path().join("data");

    let mut first = common::sluicebox();
    first.args(["run", &format!("s3://{bucket}/in/days.csv"), "--config"]).arg(&wrong).args(["--workers", "2"]);
    backends(&mut first);
    first.args(["--sink", &format!("dynamodb://{sink}")]).arg("--data-dir").arg(&data);
    let first = last_json(first.arg("--json").output().unwrap());
    let first_id = first["job_id"].as_str().unwrap().to_string();
    assert_eq!((first["records"]["written"].as_u64(), first["records"]["rejected"].as_u64()), (Some(445), Some(55)));

    // A worker elsewhere takes the redrive's tasks: it loads the job from the bucket.
    let mut workers = Reaper(Vec::new());
    let mut w = common::sluicebox();
    w.args(["worker", "--workers", "2", "--idle-exit-secs", "60"]);
    backends(&mut w);
    w.arg("--data-dir").arg(dir.path().join("worker"));
    workers.0.push(w.stderr(std::process::Stdio::null()).spawn().unwrap());

    let mut redrive = common::sluicebox();
    redrive.args(["redrive", &first_id, "--config"]).arg(&fixed).args(["--wait", "--json"]);
    backends(&mut redrive);
    redrive.args(["--sink", &format!("dynamodb://{sink}")]).arg("--data-dir").arg(&data);
    let redrive = last_json(redrive.output().unwrap());
    let redrive_id = redrive["job_id"].as_str().unwrap().to_string();
    assert_eq!(redrive["redriven_from"], json!(first_id));
    assert_eq!(redrive["records"]["total"], 55, "only the rejected records: {redrive}");
    assert_eq!((redrive["records"]["written"].as_u64(), redrive["records"]["rejected"].as_u64()), (Some(50), Some(5)));
    assert!(redrive["outputs"]["output"]
        .as_str()
        .unwrap()
        .starts_with(&format!("s3://{bucket}/out/jobs/{redrive_id}/")));

    let ddb = sluicebox::backends::aws::dynamodb(&conf);
    let items =
        sluicebox::backends::sink::Sink::read_all(&sluicebox::backends::sink::dynamodb::DynamoSink::new(ddb, &sink))
            .await
            .unwrap();
    assert_eq!(items.len(), 495, "445 + the 50 corrected");
    for i in (0..500u64).filter(|i| i % 10 == 3) {
        assert_eq!(items[&i.to_string()]["day"], json!(format!("2024-01-{:02}", i % 28 + 1)));
    }

    // The redrive of the redrive: only the five still rejected, on the worker too.
    let mut second = common::sluicebox();
    second.args(["redrive", &redrive_id, "--wait", "--json"]);
    backends(&mut second);
    second.args(["--sink", &format!("dynamodb://{sink}")]).arg("--data-dir").arg(&data);
    let second = last_json(second.output().unwrap());
    assert_eq!(second["redriven_from"], json!(redrive_id));
    assert_eq!((second["records"]["total"].as_u64(), second["records"]["rejected"].as_u64()), (Some(5), Some(5)));
}
