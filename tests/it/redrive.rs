//! Redrive: the rejected records of a completed job, and only those, through a corrected job
//! file as a new job linked to the first, into the same table (a corrected record wins over
//! nothing and loses to nothing newer) and its own outputs; a redrive of the redrive takes
//! only what is still rejected. Locally here; on the emulator in `aws.rs`.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::json;

/// `n` rows of `id,name,day`: ids ending in 3 have a day/month/year date (the wrong format
/// for the first job file), ids ending in 07 the text "soon" (no date in any format).
pub fn rows(n: u64) -> String {
    let mut s = String::from("id,name,day\n");
    for i in 0..n {
        let day = match i {
            _ if i % 100 == 7 => "soon".to_string(),
            _ if i % 10 == 3 => format!("{:02}/01/2024", i % 28 + 1),
            _ => format!("2024-01-{:02}", i % 28 + 1),
        };
        s += &format!("{i},name {i},{day}\n");
    }
    s
}

/// The job file, reading dates in `format`.
pub fn job(format: &str) -> String {
    format!(
        "[chunking]\nrecords = 100\n\n[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n\n\
         [[columns]]\nname = \"day\"\ntype = \"date\"\nformat = \"{format}\"\n\n[key]\nfields = [\"id\"]\n\n\
         [sink]\ntable = \"days\"\n"
    )
}

fn cli(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(sluicebox().args(args).arg("--json").arg("--data-dir").arg(data).output().unwrap());
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_with_a_corrected_job_file_loads_exactly_the_rejected_records_and_links_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("days.csv");
    std::fs::write(&input, rows(1_000)).unwrap();
    let (wrong, fixed) = (dir.path().join("wrong.toml"), dir.path().join("fixed.toml"));
    std::fs::write(&wrong, job("%Y-%m-%d")).unwrap();
    std::fs::write(&fixed, job("%d/%m/%Y")).unwrap();

    let first = cli(&data, &["run", input.to_str().unwrap(), "--config", wrong.to_str().unwrap()]);
    let first_id = first["job_id"].as_str().unwrap().to_string();
    assert_eq!((first["records"]["written"].as_u64(), first["records"]["rejected"].as_u64()), (Some(890), Some(110)));
    // A later job writes key 13, one of the rejected ones: the redrive must not replace it.
    let later = dir.path().join("later.csv");
    std::fs::write(&later, "id,name,day\n13,newer,2024-02-02\n").unwrap();
    cli(&data, &["run", later.to_str().unwrap(), "--config", wrong.to_str().unwrap()]);

    let redrive = cli(&data, &["redrive", &first_id, "--config", fixed.to_str().unwrap()]);
    let redrive_id = redrive["job_id"].as_str().unwrap().to_string();
    assert_ne!(redrive_id, first_id);
    assert_eq!(redrive["redriven_from"], json!(first_id), "the redrive's summary links to the first job");
    let r = &redrive["records"];
    assert_eq!(r["total"], 110, "only the rejected records were taken again: {r}");
    assert_eq!((r["written"].as_u64(), r["rejected"].as_u64()), (Some(100), Some(10)), "{r}");
    assert_eq!(redrive["rejects_by_rule"], json!({"type": 10}));

    let table = sink_rows(&data, "days").await;
    assert_eq!(table.len(), 990, "890 + the 100 corrected; the 10 'soon' still out");
    for i in (0..1_000u64).filter(|i| i % 10 == 3) {
        let row = &table[&i.to_string()];
        if i == 13 {
            assert_eq!(row["name"], json!("newer"), "a later job's row is not replaced by the redrive");
        } else {
            assert_eq!(row["name"], json!(format!("name {i}")));
            assert_eq!(row["day"], json!(format!("2024-01-{:02}", i % 28 + 1)), "read with the corrected format");
        }
    }
    assert!(!table.contains_key("7"));
    let output = job_file(&data, &redrive_id, "output.csv");
    let ids: Vec<u64> = output.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (0..1_000).filter(|i| i % 10 == 3).collect::<Vec<u64>>(), "every corrected record, in order");
    let stored: serde_json::Value = serde_json::from_str(&job_file(&data, &redrive_id, "job.json")).unwrap();
    assert_eq!(stored["redrive"]["from"], json!(first_id), "the definition stored with the job names the first");
    let report = job_file(&data, &redrive_id, "report.html");
    assert!(report.contains("redrive of") && report.contains(&first_id), "the report shows the lineage");

    // Again: the same redrive, already complete, is not worked twice.
    let again = cli(&data, &["redrive", &first_id, "--config", fixed.to_str().unwrap()]);
    assert_eq!(again["job_id"], json!(redrive_id));
    assert_eq!(again["already_complete"], json!(true));

    // A redrive of the redrive takes only what is still rejected.
    let second = cli(&data, &["redrive", &redrive_id, "--config", fixed.to_str().unwrap()]);
    assert_eq!(second["redriven_from"], json!(redrive_id));
    assert_eq!(second["records"]["total"], 10);
    assert_eq!(second["records"]["rejected"], 10);
    let still: Vec<u64> = rejects(&data, second["job_id"].as_str().unwrap())
        .iter()
        .map(|r| r["raw"].as_str().unwrap().split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(still, (0..1_000).filter(|i| i % 100 == 7).collect::<Vec<u64>>());

    // A job without rejects, or one that is not complete, has nothing to redrive.
    let none = sluicebox().args(["redrive", second["job_id"].as_str().unwrap()]).arg("--data-dir").arg(&data).output();
    let none = none.unwrap();
    assert!(none.status.success(), "its 10 rejects are still there to take");
    let missing = sluicebox().args(["redrive", "no-such-job", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-job"));
}
