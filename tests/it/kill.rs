//! Guarantee 2 at scale: a job of 200,000 orders in random key order, killed with SIGKILL at
//! twenty random instants spread across its plan, its work and its gather, and resumed after
//! each, ends with exactly the outputs, rejects, counts and sink table of a clean run; after
//! every kill, the sink table holds none of the job or all of it, never a part.
//!
//! The same into a PostgreSQL table (the server `scripts/postgres` started): after every
//! kill it holds none of the job or all of it, and at the end what the SQLite table of the
//! clean run holds.
//!
//! `SLUICEBOX_KILL_RECORDS` and `SLUICEBOX_KILLS` change the size and the number of kills
//! (defaults 200,000 and 20).

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sluicebox::backends::ledger::{JobStatus, SqliteLedger, StateStore};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Orders with keys in random order (the reference in another order) and 0.5% bad rows of
/// four kinds, as `sluicebox bench` makes them, and the orders job pointed at them.
fn fixture(dir: &Path, n: u64, gzip: bool) -> PathBuf {
    sluicebox::tools::bench::generate(dir, n, sluicebox::tools::bench::KeyOrder::Random).unwrap();
    let mut orders = dir.join("orders.csv");
    if gzip {
        // As `gzip` writes it (level 6): a deflate block every 100 KB or so to resume at.
        use std::io::Write;
        let plain = std::fs::read(&orders).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&plain).unwrap();
        orders = dir.join("orders.csv.gz");
        std::fs::write(&orders, gz.finish().unwrap()).unwrap();
    }
    let job = orders_job()
        .replace("records = 1000", "records = 5000")
        .replace("source = \"financial.csv\"", &format!("source = \"{}\"", dir.join("financial.csv").display()));
    std::fs::write(dir.join("job.toml"), job).unwrap();
    orders
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Plan,
    Work,
    Gather,
}

struct Job {
    input: PathBuf,
    config: PathBuf,
    data: PathBuf,
    id: String,
    ledger: tokio::sync::OnceCell<SqliteLedger>,
    /// `--sink` over the job file's SQLite table.
    sink: Option<String>,
}

impl Job {
    fn start(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sluicebox"))
            .args(["run", self.input.to_str().unwrap(), "--config", self.config.to_str().unwrap()])
            .args(["--workers", "2", "--json", "--data-dir", self.data.to_str().unwrap()])
            .args(self.sink.iter().flat_map(|s| ["--sink", s.as_str()]))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.data.join("stderr.log")).unwrap())
            .spawn()
            .unwrap()
    }

    async fn ledger_job(&self) -> Option<sluicebox::backends::ledger::JobRecord> {
        let db = self.data.join("sluicebox-ledger.db");
        if !db.exists() {
            return None;
        }
        // One connection for every poll: opening one sets pragmas and checks the tables, which
        // can wait on a writer; reading through an open one never does (WAL).
        let ledger = self.ledger.get_or_try_init(|| async { SqliteLedger::open(&db) }).await.ok()?;
        match self.sink {
            None => ledger.get_job(&self.id).await.ok().flatten(),
            // Another sink is another job: the one job in the data directory.
            Some(_) => {
                let conn = rusqlite::Connection::open(&db).ok()?;
                let id: String = conn.query_row("SELECT job_id FROM sluicebox_jobs", [], |r| r.get(0)).ok()?;
                ledger.get_job(&id).await.ok().flatten()
            }
        }
    }

    /// Where the job is, as the ledger says.
    async fn phase(&self) -> Phase {
        match self.ledger_job().await {
            None => Phase::Plan,
            Some(j) => match j.status {
                JobStatus::Planning => Phase::Plan,
                JobStatus::Running => Phase::Work,
                _ => Phase::Gather,
            },
        }
    }

    /// Wait until `ready` holds of the ledger's job, or the child exits (then `false`).
    async fn wait_for(
        &self,
        child: &mut Child,
        ready: impl Fn(&sluicebox::backends::ledger::JobRecord) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if self.ledger_job().await.is_some_and(|j| ready(&j)) {
                return true;
            }
            assert!(Instant::now() < deadline, "the job made no progress for five minutes");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_twenty_times_across_plan_work_and_gather_resumes_to_the_same_result() {
    let records = env_or("SLUICEBOX_KILL_RECORDS", 200_000);
    let kills = env_or("SLUICEBOX_KILLS", 20) as usize;
    killed_and_resumed(records, kills, false, None).await;
}

/// Into a PostgreSQL table, loaded by both workers with `COPY` into the job's stage and
/// published at the gather.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_into_postgres_killed_across_plan_work_and_gather_resumes_to_the_same_table() {
    let url = postgres_url();
    let table = unique_table("orders");
    let records = env_or("SLUICEBOX_KILL_RECORDS", 200_000) / 2;
    let kills = env_or("SLUICEBOX_KILLS", 20) as usize / 2;
    let sink = format!("{url}/{table}");
    killed_and_resumed(records, kills, false, Some(sink)).await;
}

/// The same on a gzip input, whose chunks resume at the points its plan noted (at least
/// 1 MiB apart, so its chunks are about that: 150,000 orders make some 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_job_killed_across_plan_work_and_gather_resumes_to_the_same_result() {
    let records = env_or("SLUICEBOX_KILL_RECORDS", 200_000) * 3 / 4;
    let kills = env_or("SLUICEBOX_KILLS", 20) as usize / 2;
    killed_and_resumed(records, kills, true, None).await;
}

/// The rows of the job's table now: the data directory's SQLite table, or the one `sink`
/// names; none before the table is made.
async fn table_now(
    data: &Path,
    sink: Option<&str>,
) -> std::collections::BTreeMap<String, sluicebox::model::record::Record> {
    use sluicebox::backends::sink::Sink;
    match sink {
        None => match sluicebox::backends::sink::SqliteSink::existing(&data.join("sluicebox.db"), "orders") {
            Ok(sink) => sink.read_all().await.unwrap(),
            Err(_) => Default::default(), // killed before the plan made the table
        },
        #[cfg(feature = "postgres")]
        Some(url) => {
            let target = url.strip_prefix("postgres://").unwrap();
            let (database, table) = sluicebox::backends::postgres::split_target(target);
            let db = sluicebox::backends::postgres::Database::open(database.as_deref(), "test").unwrap();
            match sluicebox::backends::sink::postgres::PostgresSink::existing(db, &table).await {
                Ok(sink) => sink.read_all().await.unwrap(),
                Err(sluicebox::Error::NotFound(_)) => Default::default(),
                Err(e) => panic!("{e}"),
            }
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => unreachable!("a Postgres sink needs the postgres feature"),
    }
}

async fn killed_and_resumed(records: u64, kills: usize, gzip: bool, sink: Option<String>) {
    let work = tempfile::tempdir().unwrap();
    let input = fixture(work.path(), records, gzip);
    let job_text = std::fs::read_to_string(work.path().join("job.toml")).unwrap();
    let clean_dir = tempfile::tempdir().unwrap();
    let clean_summary = run(clean_dir.path(), std::slice::from_ref(&input), &job_text, Path::new(".")).await.unwrap();
    assert_eq!(clean_summary.records.rejected, records / 200, "0.5% of the orders are bad");
    assert_eq!(clean_summary.inputs[0].decoding.as_str(), if gzip { "gzip-index" } else { "range" });
    let clean_sink = sink_rows(clean_dir.path(), "orders").await;
    let clean_output = job_file(clean_dir.path(), &clean_summary.job_id, "output.csv");
    let clean_rejects = job_file(clean_dir.path(), &clean_summary.job_id, "rejects.jsonl");
    let plan_ms = clean_summary.timings.phases.get("plan_ms").copied().unwrap_or(500).max(50) as u64;

    let data = tempfile::tempdir().unwrap();
    let job = Job {
        input: input.clone(),
        config: work.path().join("job.toml"),
        data: data.path().to_path_buf(),
        id: clean_summary.job_id.clone(),
        ledger: tokio::sync::OnceCell::new(),
        sink: sink.clone(),
    };
    // A fifth of the kills while planning, one while gathering (a resume waits for the dead
    // gatherer's lease to end, half a minute), the rest while working.
    let plans = (kills / 5).max(1);
    let gathers = 1;
    let mut schedule = vec![Phase::Plan; plans];
    schedule.extend(vec![Phase::Work; kills - plans - gathers]);
    schedule.extend(vec![Phase::Gather; gathers]);
    let mut rng = fastrand::Rng::with_seed(records ^ kills as u64);
    let (total_chunks, works) = (clean_summary.chunks.total, (kills - plans - gathers) as u32);
    assert!(total_chunks > 2 * works, "{total_chunks} chunks are too few for {works} kills while they are worked");
    let mut work_kills = 0;
    let mut killed_in = Vec::new();
    for want in schedule {
        let mut child = job.start();
        let reached = match want {
            Phase::Plan => {
                // Early in the plan: loading the reference takes most of it, and a run killed
                // there loads it again.
                tokio::time::sleep(Duration::from_millis(rng.u64(10..10 + plan_ms / 4))).await;
                child.try_wait().unwrap().is_none()
            }
            Phase::Work => {
                // The work kills spread over the chunks: the k-th of W after about k/(W+1) of
                // them, give or take half a step. (A resumed run redoes the chunks in flight, so
                // a target already passed means a kill as soon as the run is working.)
                let step = total_chunks / (works + 1);
                let target = ((work_kills + 1) * step + rng.u32(0..=step / 2)).min(total_chunks - 1);
                work_kills += 1;
                job.wait_for(&mut child, |j| j.status == JobStatus::Running && j.done_chunks >= target).await
            }
            Phase::Gather => {
                let ok = job.wait_for(&mut child, |j| j.status == JobStatus::Gathering).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(0..40))).await;
                ok
            }
        };
        let phase = job.phase().await;
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        let status = child.wait().unwrap();
        if !reached || status.success() {
            // The run ended before the instant came: nothing was killed. It must have ended
            // well, or said why.
            let said = std::fs::read_to_string(data.path().join("stderr.log")).unwrap_or_default();
            assert!(status.success() || status.signal() == Some(9), "a resumed run failed ({status}): {said}");
            continue;
        }
        killed_in.push(phase);
        // The table never shows half a job: it holds nothing of it yet, or all of it (a kill
        // after the gather merged the sink's stage).
        let now = table_now(data.path(), sink.as_deref()).await;
        assert!(
            now.is_empty() || now == clean_sink,
            "after kill {} in {phase:?}, the table holds {} rows of {}, or other rows",
            killed_in.len(),
            now.len(),
            clean_sink.len()
        );
    }
    // The last resume runs to the end.
    let out = job.start().wait_with_output().unwrap();
    assert!(out.status.success(), "the last resume failed");
    let last = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    let summary: sluicebox::batch::job::Summary = serde_json::from_str(&last).unwrap();

    let count = |p: Phase| killed_in.iter().filter(|k| **k == p).count();
    eprintln!(
        "kills: {} in plan, {} in work, {} in gather",
        count(Phase::Plan),
        count(Phase::Work),
        count(Phase::Gather)
    );
    assert!(killed_in.len() * 10 >= kills * 8, "most kills landed: {killed_in:?}");
    for p in [Phase::Plan, Phase::Work, Phase::Gather] {
        assert!(count(p) >= 1, "no kill landed in {p:?}: {killed_in:?}");
    }
    let (mut got, mut want) = (stable(&summary), stable(&clean_summary));
    if sink.is_some() {
        // Another sink is another job, named after its definition, with its own table.
        for field in ["sink", "job_id"] {
            got[field] = serde_json::Value::Null;
            want[field] = serde_json::Value::Null;
        }
    }
    assert_eq!(got, want);
    assert!(job_file(data.path(), &summary.job_id, "output.csv") == clean_output, "merged outputs differ");
    assert!(job_file(data.path(), &summary.job_id, "rejects.jsonl") == clean_rejects, "rejects differ");
    let rows = table_now(data.path(), sink.as_deref()).await;
    assert_eq!(rows.len(), clean_sink.len());
    assert!(rows == clean_sink, "sink contents differ");
}
