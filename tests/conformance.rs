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
    // Several processes (here: separate connections, each with its own lock) commit every
    // chunk at the same time: each chunk counts once and exactly one commit finalizes.
    const CHUNKS: u32 = 60;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first: Arc<dyn StateStore> = Arc::new(SqliteLedger::open(&path).unwrap());
    first.create_job(&ledger::JobRecord::new("j", 1)).await.unwrap();
    first.set_planned("j", CHUNKS, 1).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let store: Arc<dyn StateStore> = Arc::new(SqliteLedger::open(&path).unwrap());
        tasks.push(tokio::spawn(async move {
            let (mut firsts, mut finals) = (0, 0);
            for i in 0..CHUNKS {
                let rec = ledger::ChunkRecord {
                    index: (i * (w + 1) + w) % CHUNKS,
                    worker: format!("w{w}"),
                    counts: Default::default(),
                    output_bytes: 0,
                    rejects_bytes: 0,
                    started_ms: 0,
                    finished_ms: 0,
                };
                if let ledger::LedgerCommit::First { finalize, .. } = store.commit_chunk("j", &rec).await.unwrap() {
                    firsts += 1;
                    finals += u32::from(finalize);
                }
            }
            (firsts, finals)
        }));
    }
    let (mut firsts, mut finals) = (0, 0);
    for t in tasks {
        let (f, z) = t.await.unwrap();
        firsts += f;
        finals += z;
    }
    let committed = first.chunks("j").await.unwrap();
    assert_eq!(committed.len() as u32, CHUNKS, "every chunk committed");
    assert_eq!((firsts, finals), (CHUNKS, 1), "each chunk counted once; one finalizer");
    assert_eq!(first.get_job("j").await.unwrap().unwrap().done_chunks, CHUNKS);
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
