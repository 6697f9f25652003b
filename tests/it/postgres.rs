//! PostgreSQL as a sink and a reference, against the real server `scripts/postgres` starts on
//! loopback (with a password in a password file). The orders are `sluicebox bench`'s: keys in
//! random order, the reference in another, 0.5% bad rows.
#![cfg(feature = "postgres")]

use crate::common;

use std::path::Path;

use common::*;
use sluicebox::backends::postgres::{split_target, Database};
use sluicebox::backends::sink::postgres::PostgresSink;
use sluicebox::backends::sink::Sink;

/// The password the test server takes, from the password file.
fn password() -> String {
    let file = std::env::var("SLUICEBOX_TEST_PGPASSFILE").expect("run through scripts/test");
    let line = std::fs::read_to_string(file).unwrap();
    line.trim_end().rsplit(':').next().unwrap().to_string()
}

/// A connection for the test's own statements.
async fn client() -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
    config.password(password());
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The generated reference (`financial.csv`) loaded into table `name`: the key a `bigint`, the
/// money `numeric(12,2)`, as a database would hold it.
async fn load_reference(dir: &Path, name: &str) {
    let c = client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {name} (uuid bigint PRIMARY KEY, \"unitsSold\" integer, \"unitPrice\" numeric(12,2), \
         \"unitCost\" numeric(12,2), \"totalRevenue\" numeric(14,2), \"totalCost\" numeric(14,2), \
         \"totalProfit\" numeric(14,2))"
    ))
    .await
    .unwrap();
    let csv = std::fs::read(dir.join("financial.csv")).unwrap();
    let sink = c.copy_in(&format!("COPY {name} FROM STDIN (FORMAT csv, HEADER true)")).await.unwrap();
    futures::pin_mut!(sink);
    use futures::SinkExt;
    sink.send(bytes::Bytes::from(csv)).await.unwrap();
    sink.finish().await.unwrap();
}

fn run_cli(dir: &Path, data: &str, job: &Path, extra: &[&str]) -> std::process::Output {
    let out = sluicebox()
        .args(["run", dir.join("orders.csv").to_str().unwrap(), "--config", job.to_str().unwrap()])
        .args(["--data-dir", dir.join(data).to_str().unwrap(), "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn summary(out: &std::process::Output) -> sluicebox::batch::job::Summary {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_reference_enriches_the_orders_as_the_csv_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    sluicebox::tools::bench::generate(dir.path(), 20_000, sluicebox::tools::bench::KeyOrder::Random).unwrap();
    let reference = unique_table("financial");
    load_reference(dir.path(), &reference).await;
    let by_file = orders_job()
        .replace("records = 1000", "records = 4000")
        .replace("source = \"financial.csv\"", &format!("source = \"{}\"", dir.path().join("financial.csv").display()));
    std::fs::write(dir.path().join("file.toml"), &by_file).unwrap();
    let by_table = by_file.replace(
        &format!("source = \"{}\"", dir.path().join("financial.csv").display()),
        &format!("source = \"{}/{reference}\"", postgres_url()),
    );
    assert_ne!(by_file, by_table);
    std::fs::write(dir.path().join("table.toml"), &by_table).unwrap();

    let file = summary(&run_cli(dir.path(), "d1", &dir.path().join("file.toml"), &[]));
    let table = summary(&run_cli(dir.path(), "d2", &dir.path().join("table.toml"), &[]));
    assert_eq!(table.records, file.records);
    assert_eq!(table.rejects_by_rule, file.rejects_by_rule, "the same keys are missing from both");
    assert!(file.records.rejected > 0);
    let output = |d: &str, s: &sluicebox::batch::job::Summary| job_file(&dir.path().join(d), &s.job_id, "output.csv");
    assert!(output("d1", &file) == output("d2", &table), "the outputs differ");
    assert_eq!(sink_rows(&dir.path().join("d1"), "orders").await, sink_rows(&dir.path().join("d2"), "orders").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_into_postgres_are_the_sqlite_rows_and_no_password_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    sluicebox::tools::bench::generate(dir.path(), 20_000, sluicebox::tools::bench::KeyOrder::Random).unwrap();
    let job = orders_job()
        .replace("records = 1000", "records = 4000")
        .replace("source = \"financial.csv\"", &format!("source = \"{}\"", dir.path().join("financial.csv").display()));
    std::fs::write(dir.path().join("job.toml"), &job).unwrap();
    let table = unique_table("orders");
    // The password in the URL, as a careless user might put it: refused, and not repeated.
    let secret = password();
    let with_password = postgres_url().replacen("sluicebox@", &format!("sluicebox:{secret}@"), 1);
    assert!(with_password.contains(&secret));
    let refused = sluicebox()
        .args(["run", dir.path().join("orders.csv").to_str().unwrap(), "--config"])
        .arg(dir.path().join("job.toml"))
        .args(["--data-dir", dir.path().join("d0").to_str().unwrap()])
        .args(["--sink", &format!("{with_password}/{table}")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("PGPASSWORD") && !said.contains(&secret), "{said}");
    // The password from the password file (PGPASSFILE).
    let sink = format!("{}/{table}", postgres_url());

    let check =
        sluicebox().args(["check", dir.path().join("job.toml").to_str().unwrap(), "--sink", &sink]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(said.contains("PostgreSQL") && said.contains("will be created"), "{said}");

    let plan = sluicebox()
        .args(["plan", dir.path().join("orders.csv").to_str().unwrap(), "--config"])
        .arg(dir.path().join("job.toml"))
        .args(["--data-dir", dir.path().join("dp").to_str().unwrap(), "--sink", &sink])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(
        said.contains(&format!("load:     about 19,900 rows into PostgreSQL table {table}: 10 binary COPY")),
        "{said}"
    );

    let sqlite = summary(&run_cli(dir.path(), "d1", &dir.path().join("job.toml"), &[]));
    let out = run_cli(dir.path(), "d2", &dir.path().join("job.toml"), &["--sink", &sink]);
    let pg = summary(&out);
    assert_eq!(pg.records, sqlite.records);
    for text in [String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string()] {
        assert!(!text.contains(&secret), "the run showed the password: {text}");
    }
    let summary_file = job_file(&dir.path().join("d2"), &pg.job_id, "summary.json");
    assert!(!summary_file.contains(&secret), "the summary holds the password");

    let (database, name) = split_target(sink.strip_prefix("postgres://").unwrap());
    let db = Database::open(database.as_deref(), "test").unwrap();
    let rows = PostgresSink::existing(db, &name).await.unwrap().read_all().await.unwrap();
    assert_eq!(rows, sink_rows(&dir.path().join("d1"), "orders").await, "the same rows as the SQLite sink");

    // A table that exists with a column of another type is named, not written.
    let c = client().await;
    let other = unique_table("orders");
    c.batch_execute(&format!("CREATE TABLE {other} (_key text PRIMARY KEY, _job bigint, _seq bigint, uuid integer)"))
        .await
        .unwrap();
    let bad = sluicebox()
        .args(["run", dir.path().join("orders.csv").to_str().unwrap(), "--config"])
        .arg(dir.path().join("job.toml"))
        .args(["--data-dir", dir.path().join("d3").to_str().unwrap()])
        .args(["--sink", &format!("{}/{other}", postgres_url())])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && said.contains("\"uuid\"") && said.contains("integer"), "{said}");
}

/// The server offers TLS with a certificate of a CA made for the tests: trusted through
/// `PGSSLROOTCERT`, the connection is TLS; without it, the certificate is refused, never
/// trusted blindly, and `sslmode=disable` is the only way around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_roots_and_pgsslrootcert() {
    let url = postgres_url();
    let ssl = |db: Database| async move {
        let c = db.client().await?;
        let row = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
        Ok::<bool, sluicebox::Error>(row.get(0))
    };
    assert!(std::env::var("PGSSLROOTCERT").is_ok(), "scripts/postgres names the test CA");
    let trusted = Database::open(Some(&url), "test").unwrap();
    assert!(ssl(trusted).await.unwrap(), "TLS when the server offers it");
    // SAFETY of the environment: this test's process (nextest runs each test in its own)
    // reads it only in `Database::open`, after this.
    unsafe { std::env::remove_var("PGSSLROOTCERT") };
    let untrusted = Database::open(Some(&url), "test").unwrap();
    let err = ssl(untrusted).await.unwrap_err().to_string();
    assert!(err.contains("cannot connect") && err.to_lowercase().contains("certificate"), "{err}");
    let plain = Database::open(Some(&format!("{url}?sslmode=disable")), "test").unwrap();
    assert!(!ssl(plain).await.unwrap());
}
