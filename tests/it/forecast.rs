//! `sluicebox plan` predicts the requests a job makes, and `sluicebox status` tells where a job
//! stands: both as a user runs them, on the embedded engine and on the moto emulator that
//! `scripts/test` starts (S3, SQS and DynamoDB), compared with what the run then reports.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn sluicebox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicebox")).args(args).output().unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// On the embedded engine `plan` scans what `run` will (the same chunks and records), shows
/// the rejects it will meet in a sample, predicts no request, and writes nothing.
#[test]
fn plan_on_the_embedded_engine_predicts_the_run_and_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let orders = s(&common::orders_dir().join("orders.csv"));
    let job = s(&common::orders_dir().join("job.toml"));
    let plan_dir = data.path().join("plan");
    let forecast = ok_json(sluicebox(&["plan", &orders, "--config", &job, "--data-dir", &s(&plan_dir), "--json"]));
    assert!(!plan_dir.join("bucket/jobs").exists(), "plan wrote a job");
    let summary =
        ok_json(sluicebox(&["run", &orders, "--config", &job, "--data-dir", &s(&data.path().join("run")), "--json"]));
    let shape = &forecast["shape"];
    assert_eq!(shape["chunks"].as_array().unwrap().len() as u64, summary["chunks"]["total"].as_u64().unwrap());
    let records: u64 = shape["inputs"].as_array().unwrap().iter().map(|i| i["records"].as_u64().unwrap()).sum();
    assert_eq!(records, summary["records"]["total"].as_u64().unwrap());
    // The sample is the first chunk, as the run did it.
    let id = summary["job_id"].as_str().unwrap();
    let manifest = std::fs::read_to_string(data.path().join("run/bucket/jobs").join(id).join("manifest.json")).unwrap();
    let first = &serde_json::from_str::<Value>(&manifest).unwrap()["chunks"][0]["commit"]["counts"];
    let sample = &shape["sample"];
    assert_eq!((&sample["written"], &sample["rejected"]), (&first["written"], &first["rejected"]), "{sample}");
    assert_eq!(sample["records"].as_u64(), Some(1000));
    assert!(forecast["requests"].as_object().unwrap().is_empty(), "{forecast}");
    assert_eq!(forecast["bill"]["total_usd"].as_f64(), Some(0.0));

    // For people: the same figures, short.
    let out = sluicebox(&["plan", &orders, "--config", &job, "--data-dir", &s(&plan_dir)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("10,000 records") && text.contains("chunks:   10,"), "{text}");

    // From the listing alone: sizes, assumed record size, no record read.
    let estimate =
        ok_json(sluicebox(&["plan", &orders, "--config", &job, "--data-dir", &s(&plan_dir), "--estimate", "--json"]));
    assert_eq!(estimate["shape"]["estimated"], true);
    let bytes = std::fs::metadata(&orders).unwrap().len();
    assert_eq!(estimate["shape"]["inputs"][0]["records"].as_u64(), Some(bytes.div_ceil(100)));
}

/// A price table of one's own replaces the bundled one; one missing an item is refused,
/// naming the file and the item.
#[test]
fn plan_prices_with_a_users_table_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let orders = s(&common::orders_dir().join("orders.csv"));
    let job = s(&common::orders_dir().join("job.toml"));
    let bundled =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("prices/aws-us-east-1.toml")).unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, bundled.replace("[sqs_request]", "[sqs_requests]")).unwrap();
    let out = sluicebox(&["plan", &orders, "--config", &job, "--estimate", "--prices", &s(&broken)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("broken.toml") && err.contains("sqs_request"), "{err}");
    // Doubled S3 prices double the S3 lines of the bill (on a deployment with an S3 bucket).
    let doubled = dir.path().join("doubled.toml");
    std::fs::write(&doubled, bundled.replace("usd = 0.000005\n", "usd = 0.00001\n")).unwrap();
    let args = ["plan", &orders, "--config", &job, "--estimate", "--lambda", "--json"];
    let base = ok_json(sluicebox(&args));
    let mine = ok_json(sluicebox(&[&args[..], &["--prices", &s(&doubled)]].concat()));
    let item = |f: &Value| f["bill"]["by_item"]["s3_write_request"]["usd"].as_f64().unwrap();
    assert!((item(&mine) - 2.0 * item(&base)).abs() < 1e-12 && item(&base) > 0.0);
    assert!(mine["prices"].as_str().unwrap().contains("doubled.toml"));
}

/// `plan --lambda` on the ordered DynamoDB sink: the sink's time is its requests divided by
/// `[sink] in_flight` at DynamoDB's mean latency, and the printed line says so.
#[test]
fn plan_lambda_time_follows_the_sinks_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let orders = s(&common::orders_dir().join("orders.csv"));
    let text = std::fs::read_to_string(common::orders_dir().join("job.toml")).unwrap();
    let plan = |in_flight: usize| {
        let job = dir.path().join(format!("job-{in_flight}.toml"));
        let sink = format!("[sink]\ntype = \"dynamodb\"\ntable = \"orders\"\nin_flight = {in_flight}\n");
        let reference = format!("source = {:?}", s(&common::orders_dir().join("financial.csv")));
        let with_sink = text
            .replace("[sink]\ntype = \"sqlite\"\ntable = \"orders\"\n", &sink)
            .replace("source = \"financial.csv\"", &reference);
        assert_ne!(with_sink, text, "the example's [sink] moved");
        std::fs::write(&job, with_sink).unwrap();
        let args = ["plan", &orders, "--config", &s(&job), "--lambda"];
        (ok_json(sluicebox(&[&args[..], &["--json"]].concat())), sluicebox(&args))
    };
    let ((eight, _), (sixty_four, printed)) = (plan(8), plan(64));
    let sink_s = |f: &Value| {
        let t = &f["lambda_time"];
        t["sink_requests"].as_f64().unwrap() / t["in_flight"].as_f64().unwrap() * t["sink_latency_s"].as_f64().unwrap()
    };
    let requests = eight["lambda_time"]["sink_requests"].as_u64().unwrap();
    assert!(requests > 9_000 && requests <= 10_000, "a conditional PutItem per kept order: {requests}");
    assert!((sink_s(&eight) / sink_s(&sixty_four) - 8.0).abs() < 1e-9);
    let mean = eight["lambda_time"]["sink_latency_s"].as_f64().unwrap();
    assert!((mean - 0.00635).abs() < 1e-4, "DynamoDB's mean latency, 5 ms median and 25 ms p99: {mean}");
    let gb_s = |f: &Value| f["lambda"]["gb_seconds"].as_f64().unwrap();
    assert!(gb_s(&eight) > 2.0 * gb_s(&sixty_four), "{} against {}", gb_s(&eight), gb_s(&sixty_four));
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(printed.contains("÷ 64 in flight × 6.35 ms"), "{printed}");
}

#[cfg(feature = "aws")]
mod on_aws {
    use std::collections::BTreeMap;

    use super::*;

    fn calls(v: &Value) -> BTreeMap<String, u64> {
        v.as_object().unwrap().iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect()
    }

    fn by_service(calls: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (op, n) in calls {
            *out.entry(op.split('.').next().unwrap().to_string()).or_default() += n;
        }
        out
    }

    /// Every service's requests, and their total, within `share` of what the run counted.
    fn assert_within(predicted: &BTreeMap<String, u64>, actual: &BTreeMap<String, u64>, share: f64) {
        let (p, a) = (by_service(predicted), by_service(actual));
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            a.keys().collect::<Vec<_>>(),
            "services\npredicted {predicted:?}\nactual {actual:?}"
        );
        let close = |p: u64, a: u64| (p as f64 - a as f64).abs() <= share * a as f64;
        for (service, n) in &a {
            assert!(
                close(p[service], *n),
                "{service}: predicted {} of {n}\npredicted {predicted:?}\nactual {actual:?}",
                p[service]
            );
        }
        let (pt, at) = (p.values().sum::<u64>(), a.values().sum::<u64>());
        assert!(close(pt, at), "total: predicted {pt} of {at}");
    }

    /// The orders example's job file, its reference beside it.
    fn job_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let examples = common::orders_dir();
        std::fs::copy(examples.join("financial.csv"), dir.path().join("financial.csv")).unwrap();
        std::fs::write(dir.path().join("job.toml"), common::orders_job()).unwrap();
        dir
    }

    fn emulator() {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "these tests need the moto emulator on loopback: run them through scripts/test ({endpoint:?})"
        );
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
    }

    /// A bucket, a queue, a ledger and a sink table made with `sluicebox aws setup`, and the
    /// orders uploaded to `s3://BUCKET/in/orders.csv`.
    struct Stack {
        bucket: String,
        queue: String,
        ledger: String,
        sink: String,
        input: String,
    }

    fn stack() -> Stack {
        emulator();
        let name = unique("fc");
        let st = Stack {
            bucket: format!("s3://{name}"),
            queue: format!("sqs://{name}"),
            ledger: format!("dynamodb://{name}-ledger"),
            sink: format!("dynamodb://{name}-orders"),
            input: format!("s3://{name}/in/orders.csv"),
        };
        let out = sluicebox(&[
            "aws", "setup", "--bucket", &st.bucket, "--queue", &st.queue, "--ledger", &st.ledger, "--sink", &st.sink,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let conf = sluicebox::backends::aws::sdk_config(Some(8)).await;
            let body = std::fs::read(common::orders_dir().join("orders.csv")).unwrap();
            sluicebox::backends::aws::s3(&conf)
                .put_object()
                .bucket(&name)
                .key("in/orders.csv")
                .body(body.into())
                .send()
                .await
                .unwrap();
        });
        st
    }

    impl Stack {
        fn backends(&self) -> Vec<String> {
            [
                "--bucket",
                &format!("{}/out", self.bucket),
                "--queue",
                &self.queue,
                "--ledger",
                &self.ledger,
                "--sink",
                &self.sink,
            ]
            .map(String::from)
            .to_vec()
        }
    }

    /// The orders example on S3, SQS and DynamoDB (ledger, and the sink in order: a write per
    /// item), worked by this process: `plan` comes within 10% of the summary's requests, per
    /// service and in all, and finds the chunks and records the run does.
    #[test]
    fn plan_predicts_the_requests_of_the_orders_example_on_the_emulator() {
        let st = stack();
        let dir = job_dir();
        let job = s(&dir.path().join("job.toml"));
        let data = s(&dir.path().join("data"));
        // Chunks outlasting half the visibility timeout would be kept invisible (requests that
        // depend on the emulator's speed, forecast for AWS's): not here.
        let common = [st.input.as_str(), "--config", &job, "--data-dir", &data, "--visibility-secs", "600"];
        let backends = st.backends();
        let b: Vec<&str> = backends.iter().map(String::as_str).collect();
        let forecast = ok_json(sluicebox(&[&["plan"], &common[..], &b, &["--workers", "2", "--json"]].concat()));
        let summary = ok_json(sluicebox(&[&["run"], &common[..], &b, &["--workers", "2", "--json"]].concat()));
        assert_eq!(
            forecast["shape"]["chunks"].as_array().unwrap().len() as u64,
            summary["chunks"]["total"].as_u64().unwrap()
        );
        assert_within(&calls(&forecast["requests"]), &calls(&summary["api_calls"]), 0.10);
        assert!(forecast["bill"]["total_usd"].as_f64().unwrap() > 0.0);
    }

    /// Submitted to a shared queue and worked by a worker process elsewhere (which loads the
    /// job and its shipped reference), 40 chunks, unordered sink writes of 25 items: within
    /// 10% again. `status` follows it: partial progress while it runs, the summary's counts
    /// once it is complete.
    #[test]
    fn plan_predicts_a_job_worked_elsewhere_and_status_follows_it() {
        let st = stack();
        let dir = job_dir();
        let text = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
        let text = text.replace("records = 1000", "records = 250").replace("[sink]\n", "[sink]\nordered = false\n");
        std::fs::write(dir.path().join("job.toml"), text).unwrap();
        let job = s(&dir.path().join("job.toml"));
        let data = s(&dir.path().join("data"));
        let common = [st.input.as_str(), "--config", &job, "--data-dir", &data, "--visibility-secs", "600"];
        let backends = st.backends();
        let b: Vec<&str> = backends.iter().map(String::as_str).collect();
        let plan_args = ["--worker-processes", "1", "--workers-each", "1", "--json"];
        let forecast = ok_json(sluicebox(&[&["plan"], &common[..], &b, &plan_args].concat()));
        let submitted = ok_json(sluicebox(&[&["run"], &common[..], &b, &["--json"]].concat()));
        let job_id = submitted["job_id"].as_str().unwrap().to_string();
        let status_args = ["status", &job_id, "--bucket", b[1], "--ledger", &st.ledger, "--data-dir", &data, "--json"];
        let before = ok_json(sluicebox(&status_args));
        assert_eq!(
            (before["state"].as_str(), before["chunks_done"].as_u64(), before["chunks_total"].as_u64()),
            (Some("running"), Some(0), Some(40))
        );
        // One worker, slowed by a sink that takes its time on the emulator: status sees it part way.
        let mut worker = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
            .args(["worker", "--workers", "1", "--idle-exit-secs", "3", "--visibility-secs", "600"])
            .args(["--data-dir", &s(&dir.path().join("worker"))])
            .args(["--bucket", b[1], "--queue", &st.queue, "--ledger", &st.ledger])
            .spawn()
            .unwrap();
        let mut partial = None;
        for _ in 0..600 {
            let now = ok_json(sluicebox(&status_args));
            let done = now["chunks_done"].as_u64().unwrap();
            if (1..40).contains(&done) && partial.is_none() {
                partial = Some(now.clone());
            }
            if now["state"] == "complete" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(worker.wait().unwrap().success());
        let partial = partial.expect("status never saw the job part way");
        assert!(
            partial["records_done"].as_u64().unwrap() < 10_000 && partial["records_done"].as_u64().unwrap() >= 250,
            "{partial}"
        );
        assert_eq!(partial["records_total"].as_u64(), Some(10_000));
        assert!(partial["eta_s"].as_f64().is_some(), "{partial}");
        let after = ok_json(sluicebox(&status_args));
        let summary_url = after["summary"].as_str().unwrap().to_string();
        assert_eq!(after["state"], "complete");
        assert_eq!(after["records_done"].as_u64(), Some(10_000));
        // The summary, as the run reports it.
        let summary = ok_json(sluicebox(&[&["run"], &common[..], &b, &["--json"]].concat()));
        assert_eq!(summary["outputs"]["summary"].as_str(), Some(summary_url.as_str()));
        assert_eq!(after["rejected"], summary["records"]["rejected"]);
        assert_eq!(after["rejects_by_rule"], summary["rejects_by_rule"]);
        assert_within(&calls(&forecast["requests"]), &calls(&summary["api_calls"]), 0.10);
        // The listing shows the job.
        let list = sluicebox(&["status", "--bucket", b[1], "--ledger", &st.ledger, "--data-dir", &data]);
        let text = String::from_utf8(list.stdout).unwrap();
        assert!(text.contains(&job_id) && text.contains("complete") && text.contains("40/40"), "{text}");
    }
}

/// `status` from another process follows a local run through the shared ledger file: partial
/// progress with time left while it runs, the summary's counts once complete, and the list.
#[test]
fn status_follows_a_local_job_and_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    sluicebox::tools::bench::generate(dir.path(), 200_000, sluicebox::tools::bench::KeyOrder::Random).unwrap();
    let job = common::orders_job().replace("records = 1000", "records = 2000");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let data = s(&dir.path().join("data"));
    let (orders, job) = (s(&dir.path().join("orders.csv")), s(&dir.path().join("job.toml")));
    let run = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["run", &orders, "--config", &job, "--data-dir", &data, "--workers", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut partial = None;
    let mut listed = String::new();
    for _ in 0..3000 {
        let list = sluicebox(&["status", "--data-dir", &data, "--json"]);
        let jobs: Value = serde_json::from_slice(&list.stdout).unwrap_or(Value::Null);
        if let Some(id) = jobs.get(0).and_then(|j| j["job_id"].as_str()) {
            let now = ok_json(sluicebox(&["status", id, "--data-dir", &data, "--json"]));
            if now["state"] == "running" && (1..100).contains(&now["chunks_done"].as_u64().unwrap()) {
                partial = Some(now);
                listed = String::from_utf8(sluicebox(&["status", "--data-dir", &data]).stdout).unwrap();
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let partial = partial.expect("status never saw the job part way");
    let done = partial["records_done"].as_u64().unwrap();
    assert!((2000..200_000).contains(&done) && done % 2000 == 0, "{partial}");
    assert_eq!(partial["records_total"].as_u64(), Some(200_000));
    assert!(partial["eta_s"].as_f64().unwrap() > 0.0, "{partial}");
    assert!(listed.contains(summary["job_id"].as_str().unwrap()) && listed.contains("running"), "{listed}");
    let id = summary["job_id"].as_str().unwrap();
    let after = ok_json(sluicebox(&["status", id, "--data-dir", &data, "--json"]));
    assert_eq!(after["state"], "complete");
    assert_eq!(after["records_done"], summary["records"]["total"]);
    assert_eq!(after["written"], summary["records"]["written"]);
    assert_eq!(after["rejects_by_rule"], summary["rejects_by_rule"]);
    let text = String::from_utf8(sluicebox(&["status", id, "--data-dir", &data]).stdout).unwrap();
    assert!(text.contains("complete") && text.contains("100 of 100 done"), "{text}");
    // A job that is not there: an error naming it.
    let out = sluicebox(&["status", "nope", "--data-dir", &data]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nope"));
}
