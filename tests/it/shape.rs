//! A wrong file is found out before any work, whatever its format: a JSON Lines input whose
//! records all lack a required declared field stops the job naming the field and the file,
//! and `[input] unknown_columns` reports or refuses columns the job does not declare.

use crate::common;

use common::*;
use sluicebox::engine::Engine;

/// A JSON Lines file of 50,000 records that all name the key `ident` where the job requires
/// `id`: the job fails before any chunk is worked (nothing committed, no part written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_lines_file_lacking_a_required_field_fails_before_any_chunk_is_worked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let lines: String = (0..50_000).map(|i| format!("{{\"ident\": {i}, \"day\": \"2024-01-01\"}}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let job = "[chunking]\nrecords = 1000\n\n[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n\n\
               [[columns]]\nname = \"day\"\ntype = \"date\"\n";
    let data = dir.path().join("data");
    let engine = Engine::local(&data).unwrap();
    let opts = sluicebox::batch::job::RunOptions { job_id: Some("wrong".into()), ..Default::default() };
    let err = run_with(&engine, std::slice::from_ref(&input), job, dir.path(), &opts).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("required field \"id\"") && text.contains("events.jsonl"), "{text}");
    assert!(matches!(err, sluicebox::Error::InvalidInput { ref column, .. } if column.as_deref() == Some("id")));
    let job = engine.ledger.get_job("wrong").await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "planning", "never planned, so no task was sent");
    assert!(engine.ledger.chunks("wrong").await.unwrap().is_empty(), "no chunk worked");
    assert!(!data.join("bucket/jobs/wrong/plan.json").exists());

    // The same file with one record that has the field is not the wrong file: it runs, and
    // the others are rejects.
    let mixed = dir.path().join("mixed.jsonl");
    std::fs::write(&mixed, "{\"ident\": 1}\n{\"id\": 2, \"day\": \"2024-01-02\"}\n").unwrap();
    let job = "[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n";
    let summary = run(&data, &[mixed], job, dir.path()).await.unwrap();
    assert_eq!((summary.records.written, summary.records.rejected), (1, 1));
}

/// `unknown_columns = "fail"` refuses a CSV whose header has a column the job does not
/// declare, naming it; `"warn"` (the default) runs the job and says which, in the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_column_is_refused_with_fail_and_reported_with_warn() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name,colour\n1,a,red\n2,b,blue\n").unwrap();
    let declared = "[[columns]]\nname = \"id\"\ntype = \"integer\"\n\n[[columns]]\nname = \"name\"\n";
    let data = dir.path().join("data");
    let refused = run(
        &data,
        std::slice::from_ref(&input),
        &format!("[input]\nunknown_columns = \"fail\"\n\n{declared}"),
        dir.path(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("\"colour\"") && refused.contains("items.csv"), "{refused}");
    assert!(refused.contains("unknown_columns"), "{refused}");

    let summary = run(&data, std::slice::from_ref(&input), declared, dir.path()).await.unwrap();
    assert_eq!(summary.records.written, 2, "warn runs the job");
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    assert!(summary.warnings[0].contains("\"colour\""), "{:?}", summary.warnings);

    let quiet = format!("[input]\nunknown_columns = \"pass\"\n\n{declared}[sink]\ntable = \"quiet\"\n");
    let summary = run(&data, &[input], &quiet, dir.path()).await.unwrap();
    assert!(summary.warnings.is_empty());
    let bad = sluicebox::model::config::JobConfig::from_toml("[input]\nunknown_columns = \"maybe\"\n", "job.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("unknown_columns"), "{bad}");
}
