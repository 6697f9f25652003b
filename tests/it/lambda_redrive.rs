//! A redrive started on the stack by an upload (`SLUICEBOX_INPUT_PREFIX` + `_redrive/JOB_ID.toml`),
//! through the Lambda handlers against the moto emulator: the on-object function takes the
//! corrected job file's event, the task functions work the redrive like any job, and only the
//! formerly rejected records are taken again, into the same DynamoDB table. Requests that
//! cannot be met start nothing and are not retried.
#![cfg(feature = "lambda")]

use std::time::Duration;

use crate::lambda::{orders_head, sqs_event, stack, Stack};

/// on-object's answer to S3's notification of `key` created (direct, as S3 can send it; the
/// answer then says what became of each object).
async fn created(stack: &Stack, key: &str) -> serde_json::Value {
    let f = stack.function(0, None).await;
    let event = serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": stack.bucket}, "object": {"key": key.replace(' ', "+")}}}]});
    f.on_object(event).await.unwrap()
}

/// Work the task queue until job `job_id` has a summary; the summary.
async fn work_until_summary(stack: &Stack, job_id: &str) -> serde_json::Value {
    let f = stack.function(1, None).await;
    for _ in 0..30 {
        if let Some(summary) = stack.object(&format!("out/jobs/{job_id}/summary.json")).await {
            return serde_json::from_slice(&summary).unwrap();
        }
        let tasks = stack.receive(&stack.tasks_url, 1).await;
        if !tasks.is_empty() {
            let answer = f.on_task(sqs_event(&tasks), Duration::from_secs(60)).await;
            assert!(answer.batch_item_failures.is_empty());
            stack.settle(&stack.tasks_url, &tasks, &[]).await;
        }
    }
    panic!("job {job_id} has no summary after 30 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_job_file_uploaded_to_the_redrive_folder_redrives_the_rejected_records() {
    let stack = stack("redrive-up").await;
    let s3 = sluicebox::backends::aws::s3(&stack.conf);
    // Twenty orders, four of them with dates in ISO form, which the job's m/d/yy refuses.
    let text = String::from_utf8(orders_head(20)).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut iso = Vec::new();
    for line in lines.iter_mut().skip(1).step_by(5) {
        // uuid, Country, Item Type, Sales Channel, Order Priority, Order Date, Region, Ship Date
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        for at in [5, 7] {
            let date = chrono::NaiveDate::parse_from_str(&cells[at], "%m/%d/%y").unwrap();
            cells[at] = date.format("%Y-%m-%d").to_string();
        }
        iso.push((cells[0].clone(), cells[5].clone()));
        *line = cells.join(",");
    }
    assert_eq!(iso.len(), 4);
    let body = lines.join("\n") + "\n";
    s3.put_object().bucket(&stack.bucket).key("in/orders.csv").body(body.into_bytes().into()).send().await.unwrap();
    let answer = created(&stack, "in/orders.csv").await;
    let first = answer["started"][0]["job_id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string();
    let summary = work_until_summary(&stack, &first).await;
    assert_eq!(summary["records"]["rejected"], 4, "{summary}");
    assert_eq!(summary["rejects_by_rule"]["type"], 4, "{summary}");

    // Requests that cannot be met: a job that does not exist, a file that is no job file, a
    // name that is no job id. Each starts nothing, and none is an error to retry.
    let put = |key: String, body: &'static str| {
        s3.put_object().bucket(&stack.bucket).key(key).body(body.as_bytes().to_vec().into()).send()
    };
    let mut answers = Vec::new();
    for (key, body) in [
        ("in/_redrive/no-such-job.toml".to_string(), ""),
        (format!("in/_redrive/{first}.toml"), "[input\nformat = "),
        ("in/_redrive/a b.toml".to_string(), ""),
    ] {
        put(key.clone(), body).await.unwrap();
        answers.push(created(&stack, &key).await);
    }
    let said = serde_json::to_string(&answers).unwrap();
    let ignored: Vec<String> = answers
        .iter()
        .flat_map(|a| a["ignored"].as_array().cloned().unwrap_or_default())
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert!(answers.iter().all(|a| a["started"].as_array().is_none_or(Vec::is_empty)), "{said}");
    assert_eq!(ignored.len(), 3, "{said}");
    assert!(ignored.iter().all(|i| i.contains("redrive request")), "{said}");
    assert!(ignored.iter().any(|i| i.contains("no-such-job") && i.contains("not found")), "{said}");
    assert!(ignored.iter().any(|i| i.contains("line")), "the bad job file's error names its line: {said}");
    assert!(stack.receive(&stack.tasks_url, 1).await.is_empty(), "a refused request sent tasks");

    // The corrected job file: dates in ISO form.
    let corrected =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders/job.toml"))
            .unwrap()
            .replace(
                "source = \"financial.csv\"",
                &format!("source = \"s3://{}/reference/financial.csv\"", stack.bucket),
            )
            .replace("format = \"%m/%d/%y\"", "format = \"%Y-%m-%d\"");
    s3.put_object()
        .bucket(&stack.bucket)
        .key(format!("in/_redrive/{first}.toml"))
        .body(corrected.into_bytes().into())
        .send()
        .await
        .unwrap();
    let answer = created(&stack, &format!("in/_redrive/{first}.toml")).await;
    assert_eq!(answer["started"].as_array().map_or(0, Vec::len), 1, "{answer}");
    let redrive = &answer["started"][0]["job_id"].as_str().unwrap().to_string();
    let summary = work_until_summary(&stack, redrive).await;
    assert_eq!(summary["redriven_from"], first.as_str(), "{summary}");
    assert_eq!(summary["records"]["total"], 4, "only the rejected records: {summary}");
    assert_eq!(summary["records"]["written"], 4, "{summary}");

    // Every formerly rejected order is in the table now, with its date.
    let sink = sluicebox::backends::sink::dynamodb::DynamoSink::new(
        sluicebox::backends::aws::dynamodb(&stack.conf),
        &stack.sink_table,
    );
    let items = sluicebox::backends::sink::Sink::read_all(&sink).await.unwrap();
    assert_eq!(items.len(), 20, "16 from the first job, 4 from its redrive");
    for (uuid, date) in &iso {
        let item = items.values().find(|r| r["uuid"] == uuid.as_str()).unwrap_or_else(|| panic!("{uuid} missing"));
        assert_eq!(item["orderDate"], date.as_str(), "{item:?}");
    }
    // The same upload's event again starts nothing new.
    let answer = created(&stack, &format!("in/_redrive/{first}.toml")).await;
    assert_eq!(answer["repeated"][0]["job_id"], redrive.as_str(), "{answer}");
}
