//! Parquet output, read back by DuckDB: the orders example as Parquet and as CSV hold the same
//! rows in the same order, each column typed as declared; every type and null; the jobs that
//! cannot have Parquet output are refused with what to add.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

/// What DuckDB makes of a job's Parquet output next to its CSV output.
struct Read {
    /// `DESCRIBE`: (column, type).
    columns: Vec<(String, String)>,
    /// The Parquet rows, every value cast to text ('' for NULL).
    parquet: Vec<Vec<String>>,
    /// The CSV rows as written ('' for empty).
    csv: Vec<Vec<String>>,
    /// The CSV rows, each value cast to its column's type in the Parquet file, then to text.
    csv_typed: Vec<Vec<String>>,
}

fn read(parquet: &Path, csv: &Path, types: &[(&str, &str)]) -> Read {
    let (p, c) = (sql_text(parquet), sql_text(csv));
    let csv_from = format!("read_csv({c}, all_varchar = true, header = true, delim = ',', quote = '\"')");
    let typed = types
        .iter()
        .map(|(name, t)| format!("coalesce(CAST(CAST(\"{name}\" AS {t}) AS VARCHAR), '')"))
        .collect::<Vec<_>>()
        .join(", ");
    let got = duckdb(&[
        format!("DESCRIBE SELECT * FROM read_parquet({p})"),
        format!("SELECT coalesce(CAST(COLUMNS(*) AS VARCHAR), '') FROM read_parquet({p})"),
        format!("SELECT coalesce(COLUMNS(*), '') FROM {csv_from}"),
        format!("SELECT {typed} FROM {csv_from}"),
    ]);
    let texts = |rows: &Vec<Vec<Option<String>>>| -> Vec<Vec<String>> {
        rows.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect()).collect()
    };
    Read {
        columns: got[0].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect(),
        parquet: texts(&got[1]),
        csv: texts(&got[2]),
        csv_typed: texts(&got[3]),
    }
}

/// The orders example's columns and the DuckDB types their declarations give.
const ORDERS_TYPES: [(&str, &str); 14] = [
    ("uuid", "VARCHAR"),
    ("country", "VARCHAR"),
    ("itemType", "VARCHAR"),
    ("salesChannel", "VARCHAR"),
    ("orderPriority", "VARCHAR"),
    ("orderDate", "DATE"),
    ("region", "VARCHAR"),
    ("shipDate", "DATE"),
    ("unitsSold", "BIGINT"),
    ("unitPrice", "DOUBLE"),
    ("unitCost", "DOUBLE"),
    ("totalRevenue", "DOUBLE"),
    ("totalCost", "DOUBLE"),
    ("totalProfit", "DOUBLE"),
];

fn with_output(job: &str, format: &str) -> String {
    format!("{job}\n[output]\nformat = \"{format}\"\n")
}

/// Run `job` on `inputs` as Parquet and as CSV; the two summaries and output paths.
async fn run_both(
    inputs: &[PathBuf],
    job: &str,
    base: &Path,
) -> (tempfile::TempDir, sluicebox::batch::job::Summary, PathBuf, sluicebox::batch::job::Summary, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let (pq_dir, csv_dir) = (data.path().join("parquet"), data.path().join("csv"));
    let started = std::time::Instant::now();
    let pq = run(&pq_dir, inputs, &with_output(job, "parquet"), base).await.unwrap();
    let pq_ms = started.elapsed().as_millis();
    let started = std::time::Instant::now();
    let csv = run(&csv_dir, inputs, &with_output(job, "csv"), base).await.unwrap();
    let csv_ms = started.elapsed().as_millis();
    let pq_path = pq_dir.join("bucket/jobs").join(&pq.job_id).join("output.parquet");
    let csv_path = csv_dir.join("bucket/jobs").join(&csv.job_id).join("output.csv");
    assert!(pq.outputs.output.ends_with("/output.parquet"), "{}", pq.outputs.output);
    eprintln!(
        "parquet: {} bytes, job {pq_ms} ms, gather {} ms; csv: {} bytes, job {csv_ms} ms, gather {} ms",
        std::fs::metadata(&pq_path).unwrap().len(),
        pq.timings.phases["gather_ms"],
        std::fs::metadata(&csv_path).unwrap().len(),
        csv.timings.phases["gather_ms"],
    );
    (data, pq, pq_path, csv, csv_path)
}

/// Row groups in a Parquet file, by the parquet crate's own reader.
fn row_groups(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().metadata().num_row_groups()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_orders_as_parquet_typed_as_declared_with_the_csv_outputs_rows() {
    let input = orders_dir().join("orders.csv");
    let (_data, pq, pq_path, csv, csv_path) = run_both(&[input], &orders_job(), &orders_dir()).await;
    assert_eq!(pq.records, csv.records);
    assert_eq!(pq.records.written, 10_000);
    let got = read(&pq_path, &csv_path, &ORDERS_TYPES);
    let expected: Vec<(String, String)> = ORDERS_TYPES.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(got.columns, expected, "columns in the output fields' order, typed as declared");
    assert_eq!(got.parquet.len(), 10_000);
    // Row by row, column by column, so that a failure names the first value that differs.
    for (i, (p, c)) in got.parquet.iter().zip(&got.csv).enumerate() {
        for ((name, _), (pv, cv)) in ORDERS_TYPES.iter().zip(p.iter().zip(c)) {
            assert_eq!(pv, cv, "row {i}, column {name}: Parquet has {pv:?}, CSV {cv:?}");
        }
    }
    assert_eq!(got.parquet, got.csv_typed, "and equal once the CSV's text is typed");
    assert_eq!(got.parquet[0][..6], ["535113847", "Azerbaijan", "Snacks", "Online", "C", "2014-10-08"]);
    assert_eq!(row_groups(&pq_path), 10, "a row group per chunk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_output_of_many_small_chunks_keeps_input_order() {
    let job = orders_job().replace("records = 1000", "bytes = 16384");
    assert_ne!(job, orders_job());
    let input = orders_dir().join("orders.csv");
    let (_data, pq, pq_path, _csv, csv_path) = run_both(std::slice::from_ref(&input), &job, &orders_dir()).await;
    assert!(pq.chunks.total > 40, "{} chunks", pq.chunks.total);
    assert_eq!(row_groups(&pq_path), pq.chunks.total as usize);
    let got = read(&pq_path, &csv_path, &ORDERS_TYPES);
    let mut orders = csv::Reader::from_path(&input).unwrap();
    let uuids: Vec<String> = orders.records().map(|r| r.unwrap()[0].to_string()).collect();
    let in_parquet: Vec<String> = got.parquet.iter().map(|r| r[0].clone()).collect();
    assert_eq!(in_parquet, uuids, "the input's order");
    assert_eq!(got.parquet, got.csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_null_reaches_duckdb_and_transformed_fields_are_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id":"a","n":"3","price":"2.50","ok":"yes","day":"10/23/14","at":"2014-10-23T08:30:00.5+02:00"}"#,
            "\n",
            r#"{"id":"b","n":null,"price":null,"ok":null,"day":null,"at":null}"#,
            "\n",
            r#"{"id":"c","n":-7,"price":1e-7,"ok":false,"day":"2/29/00","at":"1969-12-31T23:59:59.999999Z"}"#,
            "\n",
            r#"{"id":"d","n":"9007199254740993","price":"-0","ok":"n","day":"1/1/70","at":"9999-12-31T23:59:59Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let job = r#"
transform = ['.total = ((.n // 0) * (.price // 0)) | .tags = [.id, 1]']
[[columns]]
name = "n"
type = "integer"
[[columns]]
name = "price"
type = "decimal"
[[columns]]
name = "ok"
type = "boolean"
[[columns]]
name = "day"
type = "date"
format = "%m/%d/%y"
[[columns]]
name = "at"
type = "timestamp"
[key]
fields = ["id"]
[sink]
type = "none"
"#;
    let fields = "fields = [\"id\", \"n\", \"price\", \"ok\", \"day\", \"at\", \"total\", \"tags\", \"absent\"]\n";
    let with_fields = |format: &str| format!("{}{fields}", with_output(job, format));
    let data = dir.path().join("data");
    let pq = run(&data.join("p"), std::slice::from_ref(&input), &with_fields("parquet"), dir.path()).await.unwrap();
    let csv = run(&data.join("c"), std::slice::from_ref(&input), &with_fields("csv"), dir.path()).await.unwrap();
    assert_eq!((pq.records.written, pq.records.rejected), (4, 0), "{:?}", pq.rejects_by_rule);
    let types = [
        ("id", "VARCHAR"),
        ("n", "BIGINT"),
        ("price", "DOUBLE"),
        ("ok", "BOOLEAN"),
        ("day", "DATE"),
        ("at", "TIMESTAMP WITH TIME ZONE"),
        ("total", "VARCHAR"),
        ("tags", "VARCHAR"),
        ("absent", "VARCHAR"),
    ];
    let pq_path = data.join("p/bucket/jobs").join(&pq.job_id).join("output.parquet");
    let csv_path = data.join("c/bucket/jobs").join(&csv.job_id).join("output.csv");
    let got = read(&pq_path, &csv_path, &types);
    let expected: Vec<(String, String)> = types.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(got.columns, expected);
    assert_eq!(got.parquet, got.csv_typed, "each CSV value, typed as its Parquet column, equals the Parquet one");
    // The values themselves, from the Parquet file: what a wrong conversion could not give.
    let p = sql_text(&pq_path);
    let exact = duckdb(&[format!(
        "SELECT n, price, ok, day, epoch_us(\"at\"), total, tags, absent IS NULL FROM read_parquet({p})"
    )]);
    let row = |r: &[&str]| r.iter().map(|v| (*v != "NULL").then(|| v.to_string())).collect::<Vec<_>>();
    assert_eq!(
        exact[0],
        [
            row(&["3", "2.5", "True", "2014-10-23", "1414045800500000", "7.5", "[\"a\",1]", "True"]),
            row(&["NULL", "NULL", "NULL", "NULL", "NULL", "0", "[\"b\",1]", "True"]),
            row(&["-7", "1e-07", "False", "2000-02-29", "-1", "-7e-7", "[\"c\",1]", "True"]),
            row(&[
                "9007199254740993",
                "-0.0",
                "False",
                "1970-01-01",
                "253402300799000000",
                "-0.0",
                "[\"d\",1]",
                "True"
            ]),
        ]
    );
}

#[test]
fn parquet_output_without_known_fields_is_refused_naming_what_to_add() {
    let base = Path::new("/");
    let check = |job: &str| sluicebox::model::config::JobConfig::from_toml(job, "job.toml").unwrap().validate(base);
    let transformed = "transform = ['.a = 1']\n[output]\nformat = \"parquet\"\n";
    let json = "[input]\nformat = \"jsonl\"\n[output]\nformat = \"parquet\"\n";
    for job in [transformed, json] {
        let e = check(job).unwrap_err().to_string();
        assert!(
            e.contains("output.fields") && e.contains("output.format = \"parquet\"") && e.contains("add fields = ["),
            "{e}"
        );
    }
    assert!(check(&format!("{transformed}fields = [\"a\"]\n")).is_ok(), "the fields make it runnable");
    assert!(check("[output]\nformat = \"parquet\"\n").is_ok(), "CSV inputs without transforms know their fields");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_input_found_by_its_name_without_output_fields_stops_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "{\"a\":1}\n").unwrap();
    let job = "[sink]\ntype = \"none\"\n[output]\nformat = \"parquet\"\n";
    let e = run(&dir.path().join("data"), &[input], job, dir.path()).await.unwrap_err().to_string();
    assert!(e.contains("output.fields") && e.contains("add fields = ["), "{e}");
}

/// A value a Parquet column cannot hold (a transform put text in a decimal field, a timestamp
/// finer than microseconds) makes its record a reject with the field and the reason; the job
/// completes and its file holds the other records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_its_parquet_column_cannot_hold_rejects_the_record_not_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"id\":\"a\",\"price\":\"2.50\",\"at\":\"2014-10-23T08:30:00Z\"}\n",
            "{\"id\":\"b\",\"price\":\"3.00\",\"at\":\"2014-10-23T08:30:00Z\"}\n",
            "{\"id\":\"c\",\"price\":\"4.00\",\"at\":\"2014-10-23T08:30:00.123456789Z\"}\n",
            "{\"id\":\"d\",\"price\":\"5.00\",\"at\":null}\n",
        ),
    )
    .unwrap();
    let job = r#"
transform = ['if .id == "b" then .price = "n/a" else . end']
[[columns]]
name = "price"
type = "decimal"
[[columns]]
name = "at"
type = "timestamp"
[key]
fields = ["id"]
[sink]
type = "none"
[output]
format = "parquet"
fields = ["id", "price", "at"]
"#;
    let data = dir.path().join("data");
    let s = run(&data, std::slice::from_ref(&input), job, dir.path()).await.unwrap();
    assert_eq!((s.records.written, s.records.rejected), (2, 2), "{:?}", s.rejects_by_rule);
    assert_eq!(s.rejects_by_rule.get("parquet"), Some(&2), "{:?}", s.rejects_by_rule);
    let job_dir = data.join("bucket/jobs").join(&s.job_id);
    let rejects = std::fs::read_to_string(job_dir.join("rejects.jsonl")).unwrap();
    let rejects: Vec<serde_json::Value> = rejects.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejects[0]["field"], "price", "{rejects:?}");
    assert!(rejects[0]["message"].as_str().unwrap().contains("\"n/a\" does not fit a decimal"), "{rejects:?}");
    assert_eq!((rejects[1]["field"].as_str(), rejects[1]["record"].as_u64()), (Some("at"), Some(3)), "{rejects:?}");
    let file = std::fs::File::open(job_dir.join("output.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
}
