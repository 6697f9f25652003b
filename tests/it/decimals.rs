//! Exact decimals: the orders example's money declared `decimal(p, s)` stays exact from the
//! reference's text to the Parquet output (read by DuckDB as `DECIMAL(p, s)`), the SQLite
//! table (text of `s` decimals) and a PostgreSQL table (`numeric(p, s)`), whose sums equal
//! the exact sums of the input text.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use rust_decimal::Decimal;

/// The orders job with its money columns exact: `decimal(8, 2)` prices, `decimal(12, 2)` totals.
fn money_job() -> String {
    let job = orders_job();
    let mut out = job.clone();
    for (name, p) in [("unitPrice", 8), ("unitCost", 8), ("totalRevenue", 12), ("totalCost", 12), ("totalProfit", 12)] {
        let plain = format!("{{ name = \"{name}\", type = \"decimal\" }}");
        assert!(out.contains(&plain), "{plain}");
        out = out.replace(&plain, &format!("{{ name = \"{name}\", type = \"decimal\", precision = {p}, scale = 2 }}"));
    }
    out
}

/// The reference's exact `totalRevenue` by uuid, as its text reads.
fn revenue_by_uuid() -> BTreeMap<String, Decimal> {
    let mut rdr = csv::Reader::from_path(orders_dir().join("financial.csv")).unwrap();
    let at = rdr.headers().unwrap().iter().position(|h| h == "totalRevenue").unwrap();
    rdr.records().map(|r| r.unwrap()).map(|r| (r[0].to_string(), r[at].parse().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_money_reaches_parquet_and_sqlite_with_the_inputs_digits() {
    let data = tempfile::tempdir().unwrap();
    let job = format!("{}\n[output]\nformat = \"parquet\"\n", money_job());
    let s = run(data.path(), &[orders_dir().join("orders.csv")], &job, &orders_dir()).await.unwrap();
    assert_eq!(s.records.written, 10_000);
    let parquet = data.path().join("bucket/jobs").join(&s.job_id).join("output.parquet");
    let (p, f) = (sql_text(&parquet), sql_text(&orders_dir().join("financial.csv")));
    let got = duckdb(&[
        format!("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({p})) WHERE column_name IN ('unitsSold', 'unitPrice', 'totalRevenue') ORDER BY column_name"),
        format!("SELECT CAST(sum(totalRevenue) AS VARCHAR) FROM read_parquet({p})"),
        format!(
            "SELECT count(*) FROM read_parquet({p}) o JOIN read_csv({f}, all_varchar = true) r ON o.uuid = r.uuid \
             WHERE CAST(o.totalRevenue AS VARCHAR) <> CAST(CAST(r.totalRevenue AS DECIMAL(12, 2)) AS VARCHAR)"
        ),
    ]);
    let types: Vec<(String, String)> = got[0].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect();
    let want = [("totalRevenue", "DECIMAL(12,2)"), ("unitPrice", "DECIMAL(8,2)"), ("unitsSold", "BIGINT")];
    assert_eq!(types, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let exact: Decimal = revenue_by_uuid().values().sum();
    let sum: Decimal = got[1][0][0].clone().unwrap().parse().unwrap();
    assert_eq!(sum, exact, "DuckDB's sum of the Parquet column is the exact sum of the reference's text");
    assert_eq!(got[2][0][0].as_deref(), Some("0"), "every value as the reference wrote it");

    // The SQLite table holds the text of two decimals.
    let rows = sink_rows(data.path(), "orders").await;
    let sqlite: Decimal = rows.values().map(|r| r["totalRevenue"].as_str().unwrap().parse::<Decimal>().unwrap()).sum();
    assert_eq!(sqlite, exact);
    assert!(rows.values().all(|r| r["unitPrice"].as_str().unwrap().split('.').nth(1).map(str::len) == Some(2)));
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_money_into_postgres_is_numeric_and_sums_exactly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        money_job()
            .replace("source = \"financial.csv\"", &format!("source = {:?}", orders_dir().join("financial.csv"))),
    )
    .unwrap();
    let table = unique_table("orders");
    let out = sluicebox()
        .args(["run", orders_dir().join("orders.csv").to_str().unwrap(), "--config"])
        .arg(dir.path().join("job.toml"))
        .args(["--data-dir", dir.path().join("d").to_str().unwrap()])
        .args(["--sink", &format!("{}/{table}", postgres_url())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
    let passfile = std::fs::read_to_string(std::env::var("SLUICEBOX_TEST_PGPASSFILE").unwrap()).unwrap();
    config.password(passfile.trim_end().rsplit(':').next().unwrap());
    let (c, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = c
        .query_one(
            &format!(
                "SELECT sum(\"totalRevenue\")::text, count(*), \
                 (SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                  WHERE attrelid = '{table}'::regclass AND attname = 'totalRevenue') FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    let (sum, count, ty): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((count, ty.as_str()), (10_000, "numeric(12,2)"));
    let exact: Decimal = revenue_by_uuid().values().sum();
    assert_eq!(sum.parse::<Decimal>().unwrap(), exact, "the table's sum is the exact sum of the reference's text");
}

/// Into DynamoDB (the emulator), an exact decimal is the table's number type holding the
/// reference's value: every item's `totalRevenue` reads back, from the number's own text, as
/// the exact decimal the reference wrote, and their sum is the exact sum.
#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_money_into_dynamodb_is_its_number_type_with_the_inputs_value() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = sluicebox::backends::aws::dynamodb(&emulator().await);
    let table = unique("money");
    sluicebox::backends::sink::dynamodb::DynamoSink::create_table(&client, &table).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The first 600 orders: moto answers a conditional write in a few milliseconds.
    let csv = std::fs::read_to_string(orders_dir().join("orders.csv")).unwrap();
    let head: String = csv.lines().take(601).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("orders.csv"), head).unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        money_job()
            .replace("source = \"financial.csv\"", &format!("source = {:?}", orders_dir().join("financial.csv"))),
    )
    .unwrap();
    let out = sluicebox()
        .arg("run")
        .arg(dir.path().join("orders.csv"))
        .arg("--config")
        .arg(dir.path().join("job.toml"))
        .args(["--data-dir", dir.path().join("d").to_str().unwrap()])
        .args(["--sink", &format!("dynamodb://{table}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let reference = revenue_by_uuid();
    let mut items = client.scan().table_name(&table).into_paginator().items().send();
    let (mut n, mut sum, mut exact) = (0, Decimal::ZERO, Decimal::ZERO);
    while let Some(item) = items.next().await {
        let item = item.unwrap();
        let Some(AttributeValue::S(uuid)) = item.get("uuid") else { panic!("no uuid in {item:?}") };
        let Some(AttributeValue::N(text)) = item.get("totalRevenue") else { panic!("no number in {item:?}") };
        let value: Decimal = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(value, reference[uuid], "{uuid}: the table's {text} is the reference's value");
        (n, sum, exact) = (n + 1, sum + value, exact + reference[uuid]);
    }
    assert_eq!(n, 600);
    assert_eq!(sum, exact);
}

/// CSV and JSON Lines write an exact decimal with its scale's digits (`437.2` at scale 2 as
/// `437.20`, as `DECIMAL(8, 2)` prints it), each the reference's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_json_lines_write_exact_decimals_with_their_scale() {
    let reference = revenue_by_uuid();
    for format in ["csv", "jsonl"] {
        let data = tempfile::tempdir().unwrap();
        let job = format!("{}\n[output]\nformat = \"{format}\"\n", money_job());
        let s = run(data.path(), &[orders_dir().join("orders.csv")], &job, &orders_dir()).await.unwrap();
        let text = job_file(data.path(), &s.job_id, &format!("output.{format}"));
        let revenue: Vec<(String, String)> = match format {
            "csv" => {
                let mut rdr = csv::Reader::from_reader(text.as_bytes());
                let h = rdr.headers().unwrap().clone();
                let (u, r) =
                    (h.iter().position(|c| c == "uuid").unwrap(), h.iter().position(|c| c == "totalRevenue").unwrap());
                rdr.records().map(|row| row.unwrap()).map(|row| (row[u].to_string(), row[r].to_string())).collect()
            }
            _ => text
                .lines()
                .map(|l| {
                    let at = l.find("\"totalRevenue\":").unwrap() + "\"totalRevenue\":".len();
                    let digits: String =
                        l[at..].chars().take_while(|c| *c == '.' || *c == '-' || c.is_ascii_digit()).collect();
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    (v["uuid"].as_str().unwrap().to_string(), digits)
                })
                .collect(),
        };
        assert_eq!(revenue.len(), 10_000, "{format}");
        for (uuid, written) in &revenue {
            let mut want = reference[uuid];
            want.rescale(2);
            assert_eq!(written, &want.to_string(), "{format}: uuid {uuid}");
        }
        assert!(revenue.iter().any(|(_, r)| r.ends_with('0')), "{format}: a value with a trailing zero");
    }
}
