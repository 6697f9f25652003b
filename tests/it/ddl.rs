//! `sluicebox ddl` on the orders example: the Athena table over its stream files and its
//! batch output, as the binary prints it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluicebox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluicebox"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The orders job with a `[stream]` section, next to its reference (which it names relatively).
fn orders_stream_job(dir: &Path) -> PathBuf {
    let orders = root().join("examples/orders");
    let text = std::fs::read_to_string(orders.join("job.toml")).unwrap();
    let text = text.replace("source = \"financial.csv\"", &format!("source = {:?}", orders.join("financial.csv")));
    let path = dir.join("orders.toml");
    std::fs::write(&path, format!("{text}\n[stream]\npartition = \"region={{region}}/year=%Y/month=%m\"\n")).unwrap();
    path
}

fn ddl(args: &[&str]) -> Output {
    sluicebox().arg("ddl").args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn the_orders_stream_table_is_typed_partitioned_and_projected() {
    let dir = tempfile::tempdir().unwrap();
    let job = orders_stream_job(dir.path());
    let sql =
        stdout(&ddl(&["--config", job.to_str().unwrap(), "--location", "s3://lake/orders", "--database", "sales"]));

    assert!(sql.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `sales`.`orders` (\n  `uuid` string,\n  `country` string,\n  `itemType` string,"), "{sql}");
    assert!(sql.contains("`orderDate` string COMMENT 'a date (YYYY-MM-DD): CAST(`orderdate` AS date)'"), "{sql}");
    assert!(sql.contains("`unitsSold` bigint,\n  `unitPrice` double,"), "{sql}");
    assert!(sql.contains("`totalProfit` double\n)"), "{sql}");
    // `region` is also a data column: the partition column is renamed, the data column stays.
    assert!(sql.contains("  `region` string,"), "{sql}");
    assert!(sql.contains("PARTITIONED BY (\n  `region_partition` string,\n  `year` int,\n  `month` int\n)"), "{sql}");
    assert!(sql.contains("ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'"), "{sql}");
    assert!(sql.contains("LOCATION 's3://lake/orders/'"), "{sql}");
    for property in [
        "'skip.header.line.count' = '1'",
        "'projection.enabled' = 'true'",
        "'projection.region_partition.type' = 'injected'",
        "'projection.year.type' = 'integer'",
        "'projection.year.range' = '2000,2040'",
        "'projection.month.range' = '1,12'",
        "'projection.month.digits' = '2'",
        "'storage.location.template' = 's3://lake/orders/region=${region_partition}/year=${year}/month=${month}/'",
    ] {
        assert!(sql.contains(property), "{property} in {sql}");
    }
    assert!(sql.contains("reads .gz files by their extension"), "{sql}");
    assert!(sql.contains("must filter them by equality"), "{sql}");
    assert!(sql.trim_end().ends_with(");"), "{sql}");
}

#[test]
fn the_orders_job_table_gets_its_own_prefix_and_the_copy_to_fill_it() {
    let job = root().join("examples/orders/job.toml");
    let sql = stdout(&ddl(&["--config", job.to_str().unwrap(), "--location", "s3://lake/", "--job", "orders-1a2b"]));
    // The default name comes from the job file's directory when the file is job.toml.
    assert!(sql.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `orders` ("), "{sql}");
    assert!(sql.contains("LOCATION 's3://lake/tables/orders/'"), "{sql}");
    assert!(
        sql.contains("aws s3 cp s3://lake/jobs/orders-1a2b/output.csv s3://lake/tables/orders/orders-1a2b.csv"),
        "{sql}"
    );
    assert!(!sql.contains("PARTITIONED BY"), "{sql}");

    // Without [stream] and without --job, it asks which.
    let o = ddl(&["--config", job.to_str().unwrap(), "--location", "s3://lake/"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--job JOB_ID"));
}

#[test]
fn fields_and_names_can_be_given_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = orders_stream_job(dir.path());
    let job = job.to_str().unwrap();
    let sql = stdout(&ddl(&[
        "--config",
        job,
        "--location",
        "s3://lake/o/",
        "--table",
        "o2",
        "--fields",
        "uuid,region,unitsSold",
    ]));
    assert!(sql.contains("`o2` (\n  `uuid` string,\n  `region` string,\n  `unitsSold` bigint\n)"), "{sql}");

    let o = ddl(&["--config", job, "--location", "s3://lake/o/", "--table", "Orders"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--table"));
    let o = ddl(&["--config", job, "--location", "/tmp/o"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--location"));
}
