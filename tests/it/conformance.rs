//! Every backend of every seam runs its seam's conformance suite.

use std::sync::Arc;
use std::time::Duration;

use sluicebox::backends::ledger::{self, MemoryLedger, SqliteLedger, StateStore};
use sluicebox::backends::queue::{self, MemoryQueue, Queue};
use sluicebox::backends::sink::{self, MemorySink, SqliteSink};
use sluicebox::model::config::ColumnType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_memory() {
    ledger::conformance::run_all(|| Arc::new(MemoryLedger::default()) as Arc<dyn StateStore>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    ledger::conformance::run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(SqliteLedger::open(&dir.path().join(format!("l{i}.db"))).unwrap()) as Arc<dyn StateStore>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_sqlite_concurrent_committers_on_separate_connections_finalize_once() {
    // Separate connections, each with its own lock, as separate processes would have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let committers: Vec<Arc<dyn StateStore>> =
        (0..4).map(|_| Arc::new(SqliteLedger::open(&path).unwrap()) as Arc<dyn StateStore>).collect();
    ledger::conformance::concurrent_commits_finalize_exactly_once(&committers).await;
    assert_eq!(committers[3].chunks("job-x").await.unwrap().len(), 40, "every connection sees every commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_sqlite_checkpoint_writers_on_separate_connections_lose_no_update() {
    // Separate connections, each with its own lock, as separate processes would have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let writers: Vec<Arc<dyn StateStore>> =
        (0..8).map(|_| Arc::new(SqliteLedger::open(&path).unwrap()) as Arc<dyn StateStore>).collect();
    ledger::conformance::concurrent_checkpoint_writers_exactly_one_wins(&writers).await;
    assert_eq!(
        writers[7].get_checkpoint("stream-x").await.unwrap().map(|c| c.version),
        Some(26),
        "every connection sees every write"
    );
}

const VISIBILITY: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_memory() {
    queue::conformance::run_all(|| async { Arc::new(MemoryQueue::new(VISIBILITY)) as Arc<dyn Queue> }, VISIBILITY)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_faulty_wrapper_without_faults_is_a_queue() {
    let make = || async {
        let inner: Arc<dyn Queue> = Arc::new(MemoryQueue::new(VISIBILITY));
        Arc::new(queue::faults::FaultyQueue::new(inner, Default::default())) as Arc<dyn Queue>
    };
    queue::conformance::run_all(make, VISIBILITY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_memory() {
    sink::conformance::run_all(&MemorySink::default()).await;
}

/// A sink that publishes what it writes (to a webhook on loopback that takes everything)
/// keeps its table's contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_publishing_over_memory() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/records", listener.local_addr().unwrap());
    // A hook on loopback over plain http: allowed for this test process only.
    // SAFETY of the environment: set before any client of this process reads it.
    unsafe { std::env::set_var(sluicebox::model::web::ALLOW_PRIVATE, "true") };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request to its end (headers, then the announced body), then answer.
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    let inner: std::sync::Arc<dyn sink::Sink> = std::sync::Arc::new(MemorySink::default());
    let target = sluicebox::model::config::PublishTarget::parse(&url, "sink.publish").unwrap();
    let s = sink::publish::PublishSink::new(Some(inner), target, &sluicebox::backends::cloud::Cloud::none()).unwrap();
    sink::conformance::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![
        ("id".to_string(), Some(ColumnType::Integer)),
        ("name".to_string(), Some(ColumnType::String)),
        ("price".to_string(), Some(ColumnType::Decimal)),
    ];
    let s = SqliteSink::open(&dir.path().join("s.db"), "items", Some(fields)).unwrap();
    sink::conformance::run_all(&s).await;
}

/// Two gatherers of one job (the second took over a lease while the first held the database
/// for its publish) publish at once, through two connections: one stores the job, the other
/// finds it stored; neither fails, and the stage is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_sqlite_two_publishers_of_one_job_store_it_once() {
    use sluicebox::backends::sink::Sink;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let fields = vec![("name".to_string(), Some(ColumnType::String))];
    let (a, b) = (
        SqliteSink::open(&db, "items", Some(fields.clone())).unwrap(),
        SqliteSink::open(&db, "items", Some(fields)).unwrap(),
    );
    for round in 0..20u64 {
        let items: Vec<_> = (0..2_000u64)
            .map(|i| {
                let mut record = sluicebox::model::record::Record::new();
                record.insert("name".into(), format!("round {round}").into());
                sluicebox::backends::sink::SinkItem {
                    key: format!("k{i}"),
                    job: 10 + round,
                    seq: i,
                    record: record.into(),
                }
            })
            .collect();
        a.write(items).await.unwrap();
        let (x, y) = tokio::join!(a.publish(10 + round), b.publish(10 + round));
        x.unwrap();
        y.unwrap();
        let all = a.read_all().await.unwrap();
        assert_eq!(all.len(), 2_000);
        assert!(all.values().all(|r| r["name"] == format!("round {round}")), "round {round}");
    }
    assert!(!dir.path().join("s.db.stage/items/29").exists(), "the stage is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_sqlite_schemaless() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteSink::open(&dir.path().join("s.db"), "items", None).unwrap();
    sink::conformance::run_all(&s).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_postgres() {
    use sluicebox::backends::sink::postgres::PostgresSink;
    let url = crate::common::postgres_url();
    let fields = vec![
        ("id".to_string(), Some(ColumnType::Integer)),
        ("name".to_string(), Some(ColumnType::String)),
        ("price".to_string(), Some(ColumnType::Decimal)),
    ];
    let db = sluicebox::backends::postgres::Database::open(Some(&url), "test").unwrap();
    let s = PostgresSink::new(db, &crate::common::unique_table("items"), Some(fields));
    sink::conformance::run_all(&s).await;
}

/// Two gatherers of one job publish at once: one stores the job, the other finds it stored;
/// neither fails, and the stage is gone. Workers copying at once all land, into a table whose
/// name is in mixed case.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_postgres_concurrent_writers_and_publishers_store_each_row_once() {
    use sluicebox::backends::sink::postgres::PostgresSink;
    use sluicebox::backends::sink::{Sink, SinkItem};
    let url = crate::common::postgres_url();
    // A name in mixed case: every statement, and the stage's, must find the same table.
    let table = crate::common::unique_table("Items");
    let open = || {
        let db = sluicebox::backends::postgres::Database::open(Some(&url), "test").unwrap();
        Arc::new(PostgresSink::new(db, &table, Some(vec![("n".to_string(), Some(ColumnType::Integer))])))
    };
    let (a, b) = (open(), open());
    let item = |k: u64, seq: u64| SinkItem {
        key: format!("k{k}"),
        job: 7,
        seq,
        record: serde_json::json!({"n": seq}).as_object().unwrap().clone().into(),
    };
    // Eight workers, each a chunk of 500 keys, two of them done twice (redelivered).
    let writes = (0..10u64).map(|w| {
        let sink = if w % 2 == 0 { a.clone() } else { b.clone() };
        let chunk = w % 8;
        let items: Vec<SinkItem> = (chunk * 500..chunk * 500 + 500).map(|k| item(k, k + 1)).collect();
        tokio::spawn(async move { sink.write(items).await })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    let (pa, pb) = tokio::join!(a.publish(7), b.publish(7));
    pa.unwrap();
    pb.unwrap();
    let rows = a.read_all().await.unwrap();
    assert_eq!(rows.len(), 4000);
    assert!(rows.iter().all(|(k, r)| format!("k{}", r["n"].as_u64().unwrap() - 1) == *k));
    a.publish(7).await.unwrap();
    assert_eq!(a.read_all().await.unwrap(), rows, "a third publish changes nothing");
}

#[test]
fn lookup_memory() {
    use sluicebox::backends::lookup::conformance::ROWS;
    let mut source = sluicebox::backends::lookup::memory::MemorySource::default();
    for (k, n, s) in ROWS {
        source.insert(k.to_string(), vec![serde_json::json!(n), serde_json::json!(s)]).unwrap();
    }
    sluicebox::backends::lookup::conformance::run_all(&source);
}

#[test]
fn lookup_sqlite_import() {
    use sluicebox::backends::lookup::conformance::{csv_fixture, enrich_config};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reference.csv");
    std::fs::write(&file, csv_fixture()).unwrap();
    let cfg = enrich_config(&file.display().to_string(), 0);
    let meta = std::fs::metadata(&file).unwrap();
    let db = dir.path().join("sluicebox.db");
    let (source, fields) =
        sluicebox::backends::lookup::sqlite::SqliteSource::import(&cfg, "k", &file, &meta, &db).unwrap();
    assert_eq!(fields, ["n", "s"]);
    sluicebox::backends::lookup::conformance::run_all(&source);
}

#[test]
fn lookup_tables_loaded_from_every_kind_of_file_agree() {
    // A file under the memory limit is held in memory, one over it is imported, and a
    // `sqlite:TABLE` is read from the data directory's database: the lookups are the same.
    use sluicebox::backends::lookup::conformance::{csv_fixture, enrich_config, ROWS};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reference.csv");
    std::fs::write(&file, csv_fixture()).unwrap();
    let db = dir.path().join("sluicebox.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE refs (k TEXT, n INTEGER, s TEXT)").unwrap();
    for (k, n, s) in ROWS {
        conn.execute("INSERT INTO refs VALUES (?1, ?2, ?3)", rusqlite::params![k, n, s]).unwrap();
    }
    drop(conn);
    let cloud = sluicebox::backends::cloud::Cloud::none();
    let path = file.display().to_string();
    let in_memory =
        sluicebox::backends::lookup::LookupTable::load(&enrich_config(&path, 1 << 20), &db, &cloud).unwrap();
    let imported = sluicebox::backends::lookup::LookupTable::load(&enrich_config(&path, 0), &db, &cloud).unwrap();
    let table = sluicebox::backends::lookup::LookupTable::load(&enrich_config("sqlite:refs", 0), &db, &cloud).unwrap();
    assert!(!in_memory.in_database() && imported.in_database() && !table.in_database());
    for t in [&in_memory, &imported, &table] {
        assert_eq!(t.fields(), ["n", "s"]);
        for (k, n, s) in ROWS.iter().map(|(k, n, s)| (k.to_string(), *n, *s)).chain([("gone".into(), 0, "")]) {
            let mut rec = sluicebox::model::record::Record::new();
            rec.insert("k".into(), k.clone().into());
            let mut session = t.session();
            let found = t.enrich(&mut rec, &mut session);
            assert!(session.take_error().is_none());
            if k == "gone" {
                assert_eq!(found, Err("gone".to_string()), "a missing key is rejected by default");
            } else {
                assert_eq!((rec["n"].clone(), rec["s"].clone()), (serde_json::json!(n), serde_json::json!(s)));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_table_from_before_jobs_were_ordered_is_upgraded_in_place() {
    use sluicebox::backends::sink::Sink;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (_key TEXT PRIMARY KEY, _seq INTEGER NOT NULL, name TEXT) WITHOUT ROWID;
         INSERT INTO items VALUES ('a', 500, 'old'), ('b', 7, 'kept');",
    )
    .unwrap();
    drop(conn);
    let s = SqliteSink::open(&db, "items", Some(vec![("name".to_string(), Some(ColumnType::String))])).unwrap();
    let mut record = sluicebox::model::record::Record::new();
    record.insert("name".into(), "new".into());
    s.write(vec![sluicebox::backends::sink::SinkItem { key: "a".into(), job: 1, seq: 1, record: record.into() }])
        .await
        .unwrap();
    s.publish(1).await.unwrap();
    let all = s.read_all().await.unwrap();
    assert_eq!(all["a"]["name"], "new", "rows written before count as the oldest job's");
    assert_eq!(all["b"]["name"], "kept");
    assert_eq!(all.len(), 2);
}
