//! Every backend of every seam runs its seam's conformance suite.

use std::sync::Arc;
use std::time::Duration;

use sluicebox::config::ColumnType;
use sluicebox::ledger::{self, MemoryLedger, SqliteLedger, StateStore};
use sluicebox::queue::{self, MemoryQueue, Queue};
use sluicebox::sink::{self, MemorySink, SqliteSink};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_sqlite_schemaless() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteSink::open(&dir.path().join("s.db"), "items", None).unwrap();
    sink::conformance::run_all(&s).await;
}
