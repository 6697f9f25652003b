//! When many records fail: `[rejects] max_share` and `max_count` stop a job as soon as the
//! counts make it certain, before the whole file is worked; the job fails (exit 1) with the
//! figures, publishes nothing to the sink, and `status` and the notification say why.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// `n` rows of `id,name,day`, where the rows whose id ends in 0, 1 or 2 (30%) have a date
/// in the wrong format.
fn rows(n: u64) -> String {
    let mut s = String::from("id,name,day\n");
    for i in 0..n {
        let day = if i % 10 < 3 { "31/12/2024".to_string() } else { format!("2024-01-{:02}", i % 28 + 1) };
        s += &format!("{i},name {i},{day}\n");
    }
    s
}

fn job(rejects: &str) -> String {
    format!(
        "[chunking]\nrecords = 1000\n\n[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n\n\
         [[columns]]\nname = \"day\"\ntype = \"date\"\nformat = \"%Y-%m-%d\"\n\n[key]\nfields = [\"id\"]\n\n\
         [sink]\ntable = \"days\"\n\n[rejects]\n{rejects}\n"
    )
}

/// The acceptance case: 100,000 rows, 30% bad, `max_share = 0.05`, chunks of 1,000. The job
/// stops after about a sixth of the file (5% of the job's records rejected is certain after
/// some 17 chunks), exits 1 naming the threshold and its figures, leaves the table as it was
/// (a row loaded before is still there, none of this job's rows is), and `status` and the
/// webhook say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_too_many_bad_rows_stops_early_loads_nothing_and_says_why() {
    let (hook, mut posted) = crate::notify::webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A row already in the table, from an earlier good file.
    let before = dir.path().join("before.csv");
    std::fs::write(&before, "id,name,day\n999999,kept,2023-05-01\n").unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(&config, job("max_share = 0.05") + &format!("\n[[notify]]\nto = {hook:?}\n")).unwrap();
    let first = sluicebox()
        .args(["run", before.to_str().unwrap(), "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .env(sluicebox::model::web::ALLOW_PRIVATE, "true")
        .output()
        .unwrap();
    ok(first);
    let _ = tokio::time::timeout(Duration::from_secs(10), posted.recv()).await.expect("the first job was told");
    let table_before = sink_rows(&data, "days").await;
    assert_eq!(table_before.len(), 1);

    let input = dir.path().join("big.csv");
    std::fs::write(&input, rows(100_000)).unwrap();
    let out = sluicebox()
        .args(["run", input.to_str().unwrap(), "--config", config.to_str().unwrap(), "--workers", "2", "--data-dir"])
        .arg(&data)
        .env(sluicebox::model::web::ALLOW_PRIVATE, "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("[rejects] max_share = 0.05"), "{stderr}");
    assert!(stderr.contains("most rejected by rule type"), "{stderr}");
    assert!(stderr.contains("of the job's 100000 records"), "the figures: {stderr}");

    assert_eq!(sink_rows(&data, "days").await, table_before, "the table is unchanged: nothing published");

    let jobs = ok(sluicebox().args(["status", "--data-dir"]).arg(&data).output().unwrap());
    let job_id = jobs.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let status = ok(sluicebox().args(["status", &job_id, "--json", "--data-dir"]).arg(&data).output().unwrap());
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "failed");
    let stop = &status["stopped_by"];
    assert_eq!(stop["threshold"], "max_share");
    assert_eq!(stop["sink"], "staged, not published: the sink table is unchanged");
    let (done, total) = (stop["chunks_done"].as_u64().unwrap(), stop["chunks_total"].as_u64().unwrap());
    assert_eq!(total, 100);
    assert!(done < 30, "stopped early: {done} of {total} chunks worked");
    assert!(stop["rejected"].as_u64().unwrap() > 5_000);
    assert!(stop["records_seen"].as_u64().unwrap() < 30_000, "{stop}");
    assert!(status["error"].as_str().unwrap().contains("max_share"), "{status}");
    eprintln!("stopped after {done} of {total} chunks: {stop}");

    let summary: serde_json::Value = serde_json::from_str(&job_file(&data, &job_id, "summary.json")).unwrap();
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["stopped_by"]["threshold"], "max_share");
    assert_eq!(summary["thresholds"]["max_share"], 0.05);
    let r = &summary["records"];
    let sum = ["written", "rejected", "filtered", "not_worked"].iter().map(|k| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum, 100_000, "{r}");
    assert!(r["not_worked"].as_u64().unwrap() > 70_000, "{r}");
    let report = job_file(&data, &job_id, "report.html");
    assert!(report.contains("max_share") && report.contains("stopped"), "the report says which threshold");

    let told =
        tokio::time::timeout(Duration::from_secs(10), posted.recv()).await.expect("the webhook was called").unwrap();
    assert_eq!(told["status"], "failed");
    assert_eq!(told["job_id"], job_id.as_str());
    assert_eq!(told["stopped_by"]["threshold"], "max_share");
    assert!(told["subject"].as_str().unwrap().contains("over [rejects] max_share"), "{told}");
    assert!(told["text"].as_str().unwrap().contains("the sink table is unchanged"), "{told}");
    assert!(tokio::time::timeout(Duration::from_millis(500), posted.recv()).await.is_err(), "told once");

    // Run again: the job is failed, not worked again.
    let again = sluicebox()
        .args(["run", input.to_str().unwrap(), "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("max_share"));
}

/// `max_count`: more rejects than it allows stop the job as soon as they are committed; a job
/// under it completes as any job, its summary naming the thresholds it was judged by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_count_stops_a_job_past_it_and_lets_one_under_it_complete() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("small.csv");
    std::fs::write(&input, rows(20_000)).unwrap();
    let data = dir.path().join("data");
    let failed = run(&data, std::slice::from_ref(&input), &job("max_count = 100"), dir.path()).await.unwrap_err();
    let text = failed.to_string();
    assert!(matches!(failed, sluicebox::Error::JobFailed { .. }), "{text}");
    assert!(text.contains("[rejects] max_count = 100") && text.contains("at most 100 records rejected"), "{text}");
    // Its first chunk alone has 300 rejects: it stops there, or a chunk or two later.
    let chunks = text.split(" chunks worked").next().unwrap().rsplit("; ").next().unwrap().to_string();
    let done: u32 = chunks.split(" of ").next().unwrap().parse().unwrap();
    assert!(done <= 4, "{text}");
    assert!(sink_rows(&data, "days").await.is_empty(), "nothing published");

    let fine = dir.path().join("fine.csv");
    let good: String =
        rows(2_000).lines().filter(|l| !l.contains("31/12/2024")).take(1_001).map(|l| l.to_string() + "\n").collect();
    std::fs::write(&fine, good + "5,five,31/12/2024\n").unwrap();
    let summary = run(&data, &[fine], &job("max_count = 1\nmax_share = 0.01"), dir.path()).await.unwrap();
    assert_eq!(summary.status, "completed_with_rejects");
    assert_eq!(summary.records.rejected, 1);
    assert_eq!(summary.stopped_by, None);
    let t = summary.thresholds.expect("the thresholds are in the summary");
    assert_eq!((t.max_count, t.max_share), (Some(1), Some(0.01)));
    assert_eq!(sink_rows(&data, "days").await.len(), 1_000, "published");
}

/// `plan` warns when its sample already passes a threshold.
#[test]
fn plan_warns_when_its_sample_passes_a_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, rows(5_000)).unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(&config, job("max_share = 0.1")).unwrap();
    let out = ok(sluicebox()
        .args(["plan", input.to_str().unwrap(), "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap());
    assert!(out.contains("warning:  the sample already passes [rejects] max_share"), "{out}");
    std::fs::write(&config, job("max_share = 0.5")).unwrap();
    let out = ok(sluicebox()
        .args(["plan", input.to_str().unwrap(), "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap());
    assert!(!out.contains("passes [rejects]"), "{out}");
    assert!(out.contains("its header has columns the job does not declare: [\"name\"]"), "plan names them: {out}");
}

/// A bad threshold is refused before anything runs, naming its key.
#[test]
fn bad_thresholds_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, key) in [
        ("max_share = 1.5", "rejects.max_share"),
        ("max_share = -0.1", "rejects.max_share"),
        ("max_share = \"5%\"", "max_share"),
        ("max_count = -1", "max_count"),
        ("max_count = 2.5", "max_count"),
        ("most = 3", "most"),
    ] {
        let text = job(bad);
        let err = sluicebox::model::config::JobConfig::from_toml(&text, "job.toml")
            .and_then(|c| c.validate(Path::new(".")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
    let _ = dir;
}
