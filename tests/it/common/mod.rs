//! Helpers shared by the whole-job tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluicebox::backends::sink::Sink;
use sluicebox::batch::job::Summary;
use sluicebox::batch::job::{self, RunOptions};
use sluicebox::engine::Engine;
use sluicebox::model::config::JobConfig;
use sluicebox::model::record::Record;

/// The repository's orders example directory.
pub fn orders_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders")
}

/// The orders example's job file text.
pub fn orders_job() -> String {
    std::fs::read_to_string(orders_dir().join("job.toml")).unwrap()
}

/// The binary cargo built for the tests.
pub fn sluicebox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluicebox"))
}

/// What a command printed, once it has exited 0 (else a panic with its output).
pub fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The JSON value of each line of `bytes`.
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

/// Every object under `url` (`s3://BUCKET/PREFIX`, on the emulator), gzip decompressed, by key
/// below it.
#[cfg(feature = "aws")]
pub async fn objects(url: &str) -> BTreeMap<String, Vec<u8>> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = sluicebox::backends::bucket::open(
        url,
        &sluicebox::backends::cloud::Cloud::aws(sluicebox::backends::aws::sdk_config(Some(8)).await),
    )
    .unwrap();
    let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let raw = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        let name = m.location.to_string();
        let bytes = if name.ends_with(".gz") {
            let mut s = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut s).unwrap();
            s
        } else {
            raw.to_vec()
        };
        out.insert(name, bytes);
    }
    out
}

/// Run a job in `data_dir` with the embedded engine (or the given one).
pub async fn run_with(
    engine: &Engine,
    inputs: &[PathBuf],
    config: &str,
    base: &Path,
    opts: &RunOptions,
) -> sluicebox::Result<Summary> {
    let spec = JobConfig::from_toml(config, "test.toml")?.validate(base)?;
    let args: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &args,
        spec.input.format,
        spec.input.compression,
    )
    .await?;
    job::run(engine, &spec, inputs, opts).await
}

/// A checked job from job-file text, with paths relative to `base`.
pub fn spec(config: &str, base: &Path) -> sluicebox::engine::spec::JobSpec {
    JobConfig::from_toml(config, "test.toml").unwrap().validate(base).unwrap()
}

/// The input objects of local files, as `run` resolves them.
pub async fn local_inputs(engine: &Engine, files: &[PathBuf]) -> Vec<sluicebox::backends::bucket::InputObject> {
    let args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    sluicebox::backends::bucket::resolve_inputs(engine.inputs.as_ref(), &args, None, Default::default()).await.unwrap()
}

/// Run with the embedded engine in `data_dir`.
pub async fn run(data_dir: &Path, inputs: &[PathBuf], config: &str, base: &Path) -> sluicebox::Result<Summary> {
    let engine = Engine::local(data_dir)?;
    run_with(&engine, inputs, config, base, &RunOptions::default()).await
}

/// A job's file in the bucket.
pub fn job_file(data_dir: &Path, job_id: &str, name: &str) -> String {
    std::fs::read_to_string(data_dir.join("bucket/jobs").join(job_id).join(name)).unwrap()
}

/// The rejects of a job, parsed.
pub fn rejects(data_dir: &Path, job_id: &str) -> Vec<serde_json::Value> {
    job_file(data_dir, job_id, "rejects.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every row of a sink table in the data dir's database.
pub async fn sink_rows(data_dir: &Path, table: &str) -> BTreeMap<String, Record> {
    let sink = sluicebox::backends::sink::SqliteSink::existing(&data_dir.join("sluicebox.db"), table).unwrap();
    sink.read_all().await.unwrap()
}

/// Summary fields that do not depend on timing or on which worker did what.
pub fn stable(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "job_id": s.job_id, "status": s.status, "inputs": s.inputs, "records": s.records,
        "chunks": s.chunks, "rejects_by_rule": s.rejects_by_rule, "sink": s.sink,
    })
}

/// A sink that always fails.
#[derive(Debug)]
pub struct BrokenSink;

#[async_trait::async_trait]
impl sluicebox::backends::sink::Sink for BrokenSink {
    async fn write(&self, _: Vec<sluicebox::model::record::SinkItem>) -> sluicebox::Result<()> {
        Err(sluicebox::Error::backend(sluicebox::error::Backend::Injected, "injected", "the table is gone"))
    }
    async fn publish(&self, _: u64) -> sluicebox::Result<()> {
        Err(sluicebox::Error::backend(sluicebox::error::Backend::Injected, "injected", "the table is gone"))
    }
    async fn discard(&self, _: u64) -> sluicebox::Result<()> {
        Ok(())
    }
    async fn read_all(
        &self,
    ) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::model::record::Record>> {
        Ok(Default::default())
    }
}

/// Panics unless the moto emulator that `scripts/test` starts is on loopback: AWS tests fail
/// rather than skip without it (an AWS backend that was not tested must not pass as tested).
pub fn assert_emulator() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "AWS tests need the moto emulator on loopback: run them through scripts/test (AWS_ENDPOINT_URL={endpoint:?})"
    );
}

/// The SDK configuration for the emulator; panics when no emulator was started. What the code
/// logs shows with a failed test (`RUST_LOG` sets the level).
#[cfg(feature = "aws")]
pub async fn emulator() -> aws_config::SdkConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    assert_emulator();
    sluicebox::backends::aws::sdk_config(Some(8)).await
}

/// The test database's URL (no password: `PGPASSFILE` holds it), from the server
/// `scripts/postgres` started; panics when none was.
#[cfg(feature = "postgres")]
pub fn postgres_url() -> String {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    std::env::var("SLUICEBOX_TEST_POSTGRES")
        .expect("no PostgreSQL server: run the tests with scripts/test, which starts one (scripts/postgres)")
}

/// A table name no other test uses: letters, digits and `_`.
pub fn unique_table(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

/// A name no other test (or earlier run against the same emulator) uses.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// The ARN of the queue at `url`.
#[cfg(feature = "aws")]
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone()
}

/// A Python that imports duckdb: `SLUICEBOX_PYTHON` (scripts/test sets it), else the one of
/// `target/duckdb-venv` (or the emulator's venv), else `target/duckdb-venv` made now with
/// `pip install duckdb`. A venv is made under another name and renamed into place, so that
/// tests installing at once leave one whole venv.
pub fn duckdb_python() -> PathBuf {
    let imports = |p: &Path| {
        Command::new(p).args(["-c", "import duckdb"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if let Some(p) = std::env::var_os("SLUICEBOX_PYTHON").map(PathBuf::from).filter(|p| imports(p)) {
        return p;
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("duckdb-venv");
    for p in [venv.join("bin/python"), target.join("moto-venv/bin/python")] {
        if imports(&p) {
            return p;
        }
    }
    let scratch = target.join(format!("duckdb-venv.{}", std::process::id()));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    assert!(ok(Command::new("python3").arg("-m").arg("venv").arg(&scratch)), "python3 -m venv failed");
    assert!(
        ok(Command::new(scratch.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "duckdb>=1.1"
        ])),
        "pip install duckdb failed"
    );
    if std::fs::rename(&scratch, &venv).is_err() {
        // Another test made it first.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let python = venv.join("bin/python");
    assert!(imports(&python), "{} cannot import duckdb", python.display());
    python
}

/// Each query's rows, every value as DuckDB's text (`None`: NULL).
pub fn duckdb(queries: &[String]) -> Vec<Vec<Vec<Option<String>>>> {
    const SCRIPT: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
con.execute("SET threads TO 1")
out = []
for q in json.load(sys.stdin):
    rows = con.execute(q).fetchall()
    out.append([[None if v is None else str(v) for v in row] for row in rows])
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(duckdb_python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), queries).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn sql_text(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// Every file under `dir`, decompressed, by path relative to `dir`.
pub fn decompressed_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            // object_store's local puts stage a file as `NAME#N` and rename it: one killed
            // mid-put leaves that staging file, which is no output (its extension is not one).
            if name.starts_with('.') || name.contains("/.") || name.contains('#') {
                continue;
            }
            let raw = std::fs::read(&p).unwrap();
            let bytes = match name.rsplit('.').next() {
                Some("gz") => {
                    let mut s = Vec::new();
                    flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut s).unwrap();
                    s
                }
                Some("zst") => zstd::decode_all(&raw[..]).unwrap(),
                _ => raw,
            };
            out.insert(name, bytes);
        }
    }
    out
}
