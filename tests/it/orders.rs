//! Golden end-to-end test of the orders example: summary, merged output, sink, re-runs.

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use serde_json::json;
use sluicebox::batch::job::RunOptions;
use sluicebox::engine::Engine;

/// The expected merged output, computed here from the two seed files without sluicebox.
fn expected_output() -> String {
    let dir = orders_dir();
    let mut fin = csv::Reader::from_path(dir.join("financial.csv")).unwrap();
    let fin: HashMap<String, Vec<String>> = fin
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r[0].to_string(), r.iter().skip(1).map(str::to_string).collect()))
        .collect();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "uuid",
        "country",
        "itemType",
        "salesChannel",
        "orderPriority",
        "orderDate",
        "region",
        "shipDate",
        "unitsSold",
        "unitPrice",
        "unitCost",
        "totalRevenue",
        "totalCost",
        "totalProfit",
    ])
    .unwrap();
    let iso = |s: &str| chrono::NaiveDate::parse_from_str(s, "%m/%d/%y").unwrap().format("%Y-%m-%d").to_string();
    let mut orders = csv::Reader::from_path(dir.join("orders.csv")).unwrap();
    for r in orders.records() {
        let r = r.unwrap();
        let mut row: Vec<String> = r.iter().map(str::to_string).collect();
        row[5] = iso(&row[5]);
        row[7] = iso(&row[7]);
        // Decimals are written as the shortest text that reads back as the same number.
        let f = &fin[&row[0]];
        row.push(f[0].parse::<i64>().unwrap().to_string());
        row.extend(f[1..].iter().map(|v| serde_json::Number::from_f64(v.parse::<f64>().unwrap()).unwrap().to_string()));
        out.write_record(&row).unwrap();
    }
    String::from_utf8(out.into_inner().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_example_golden() {
    let data = tempfile::tempdir().unwrap();
    let input = orders_dir().join("orders.csv");
    let s = run(data.path(), std::slice::from_ref(&input), &orders_job(), &orders_dir()).await.unwrap();

    assert_eq!(s.status, "succeeded");
    assert_eq!(
        serde_json::to_value(&s.records).unwrap(),
        json!({"total": 10000, "written": 10000, "rejected": 0, "filtered": 0})
    );
    assert_eq!((s.chunks.total, s.chunks.done), (10, 10));
    assert_eq!(s.inputs[0].records, 10000);
    assert!(s.rejects_by_rule.is_empty());
    assert_eq!(s.sink.as_deref(), Some("orders"));

    let output = job_file(data.path(), &s.job_id, "output.csv");
    assert_eq!(output.lines().count(), 10001);
    assert!(output == expected_output(), "merged output differs from the independently computed join");
    assert_eq!(job_file(data.path(), &s.job_id, "rejects.jsonl"), "");

    let rows = sink_rows(data.path(), "orders").await;
    assert_eq!(rows.len(), 10000);
    let row = &rows["535113847"];
    assert_eq!(row["country"], json!("Azerbaijan"));
    assert_eq!(row["orderDate"], json!("2014-10-08"));
    assert_eq!(row["unitsSold"], json!(934));
    assert_eq!(row["unitPrice"], json!(152.58));

    let manifest: serde_json::Value = serde_json::from_str(&job_file(data.path(), &s.job_id, "manifest.json")).unwrap();
    let chunks = manifest["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 10);
    for pair in chunks.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"], "chunk byte ranges must be contiguous");
    }
    assert_eq!(chunks.iter().map(|c| c["commit"]["counts"]["written"].as_u64().unwrap()).sum::<u64>(), 10000);
    let on_disk: sluicebox::batch::job::Summary =
        serde_json::from_str(&job_file(data.path(), &s.job_id, "summary.json")).unwrap();
    assert_eq!(on_disk, s);
    assert!(
        !data.path().join("bucket/jobs").join(&s.job_id).join("parts").exists(),
        "parts are scratch, removed after the gather"
    );

    // Running the completed job again reports it without redoing anything.
    let again = run(data.path(), std::slice::from_ref(&input), &orders_job(), &orders_dir()).await.unwrap();
    assert!(again.already_complete);
    assert_eq!(stable(&again), stable(&s));
    assert_eq!(again.timings, s.timings, "a completed job must not be re-run");

    // --force runs it anew with the same results.
    let engine = Engine::local(data.path()).unwrap();
    let forced =
        run_with(&engine, &[input], &orders_job(), &orders_dir(), &RunOptions { force: true, ..RunOptions::default() })
            .await
            .unwrap();
    assert!(!forced.already_complete);
    assert_eq!(stable(&forced), stable(&s));
    assert!(job_file(data.path(), &s.job_id, "output.csv") == output);
    assert_eq!(sink_rows(data.path(), "orders").await.len(), 10000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_id_follows_the_input_and_the_config() {
    let data = tempfile::tempdir().unwrap();
    let input = orders_dir().join("orders.csv");
    let a = run(data.path(), std::slice::from_ref(&input), &orders_job(), &orders_dir()).await.unwrap();
    let changed = orders_job().replace("records = 1000", "records = 2500");
    let b = run(data.path(), &[input], &changed, &orders_dir()).await.unwrap();
    assert_ne!(a.job_id, b.job_id, "a changed job definition is a new job");
    assert!(!b.already_complete);
    assert_eq!(b.chunks.total, 4);
    assert_eq!(b.records, a.records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_reference_makes_a_new_job() {
    let example = tempfile::tempdir().unwrap();
    for f in ["orders.csv", "financial.csv", "job.toml"] {
        std::fs::copy(orders_dir().join(f), example.path().join(f)).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let input = example.path().join("orders.csv");
    let a = run(data.path(), std::slice::from_ref(&input), &orders_job(), example.path()).await.unwrap();
    let fin = std::fs::read_to_string(example.path().join("financial.csv")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(example.path().join("financial.csv"), fin.replacen("152.58", "999.99", 1)).unwrap();
    let b = run(data.path(), &[input], &orders_job(), example.path()).await.unwrap();
    assert_ne!(a.job_id, b.job_id);
    assert!(!b.already_complete, "a job enriched from changed reference data must run again");
    assert!(job_file(data.path(), &b.job_id, "output.csv").contains(",999.99,"));
}

/// The README's job-file block, as written (its `[[notify]]` left out: no traffic leaves this
/// machine), runs on the orders example: the top-level transform filters before the lookup,
/// `[enrich] transform` computes from what the lookup added, and no record is rejected for a
/// field the lookup had not added yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_job_file_block_runs_on_the_orders_example() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## The job file").unwrap()..];
    let block = &section[section.find("```toml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let mut job: toml::Table = block.parse().unwrap_or_else(|e| panic!("the README's block is not TOML: {e}"));
    assert!(job.remove("notify").is_some(), "the block shows [[notify]]");
    let example = tempfile::tempdir().unwrap();
    for f in ["orders.csv", "financial.csv"] {
        std::fs::copy(orders_dir().join(f), example.path().join(f)).unwrap();
    }
    let data = example.path().join("data");
    let s = common::run(&data, &[example.path().join("orders.csv")], &job.to_string(), example.path()).await.unwrap();
    assert_eq!(s.records.total, 10_000);
    assert!(s.records.filtered > 500, "Asia's orders are filtered before the lookup: {:?}", s.records);
    assert!(s.records.written > 8_000, "{:?} {:?}", s.records, s.rejects_by_rule);
    assert!(!s.rejects_by_rule.contains_key("transform"), "{:?}", s.rejects_by_rule);
    let output = common::job_file(&data, &s.job_id, "output.csv");
    let mut rows = csv::Reader::from_reader(output.as_bytes());
    assert_eq!(rows.headers().unwrap(), vec!["uuid", "Country", "orderDate", "unitsSold", "total"]);
    let first = rows.records().next().unwrap().unwrap();
    // 535113847: 934 units at 152.58 (financial.csv).
    assert_eq!((&first[0], &first[3]), ("535113847", "934"));
    assert!((first[4].parse::<f64>().unwrap() - 934.0 * 152.58).abs() < 1e-6, "{first:?}");
    assert!(example.path().join("archive").join(&s.job_id).join("orders.csv").exists(), "[archive] moved the input");
}
