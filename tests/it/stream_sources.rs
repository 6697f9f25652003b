//! Every kind of stream source runs the record-source conformance suite
//! (`sluicebox::stream::source::conformance`): files, standard input, a Lambda function's batch
//! and a queue.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluicebox::stream::source::batch::BatchSource;
use sluicebox::stream::source::files::{FilesSource, StdinSource};
use sluicebox::stream::source::sqs::QueueSource;
use sluicebox::stream::source::{conformance, RecordSource, SourceRecord};
use sluicebox::stream::state::Pos;

/// Records in two JSON Lines files of a new folder, each file a shard.
struct FilesFeeder {
    dir: tempfile::TempDir,
    fed: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl conformance::Feeder for FilesFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let n = self.fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let folder = self.dir.path().join(format!("fed-{n}"));
        std::fs::create_dir_all(&folder).unwrap();
        let (a, b): (Vec<_>, Vec<_>) = records.iter().enumerate().partition(|(i, _)| i % 3 != 0);
        for (name, part) in [("a.jsonl", a), ("b.jsonl", b)] {
            let text: String = part.into_iter().map(|(_, r)| format!("{r}\n")).collect();
            std::fs::write(folder.join(name), text).unwrap();
        }
        let input = common::spec("", self.dir.path()).input;
        let args = vec![folder.display().to_string()];
        Box::new(move || {
            Arc::new(FilesSource::new(sluicebox::backends::bucket::local_inputs(), args.clone(), &input))
                as Arc<dyn RecordSource>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_pass_the_record_source_conformance_suite() {
    let feeder = FilesFeeder { dir: tempfile::tempdir().unwrap(), fed: Default::default() };
    // Several blocks per file.
    conformance::run_all(&feeder, 30_000).await;
}

/// Records as standard input would give them.
struct StdinFeeder;

#[async_trait::async_trait]
impl conformance::Feeder for StdinFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let text = bytes::Bytes::from(records.iter().map(|r| format!("{r}\n")).collect::<String>());
        let dialect = common::spec("", Path::new(".")).input.dialect;
        Box::new(move || {
            let text = text.clone();
            let open = move || Box::new(std::io::Cursor::new(text.clone())) as Box<dyn std::io::Read + Send>;
            Arc::new(StdinSource::new(open, sluicebox::model::config::Format::Jsonl, dialect)) as Arc<dyn RecordSource>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_passes_the_record_source_conformance_suite() {
    conformance::run_all(&StdinFeeder, 30_000).await;
}

/// Records handed over as one shard's batch, with Kinesis-like sequence numbers.
struct BatchFeeder;

#[async_trait::async_trait]
impl conformance::Feeder for BatchFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let records: Vec<SourceRecord> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| SourceRecord {
                pos: Pos::parse(&format!("4959033827149025660855969253836157109592157598913{:07}", i * 7)),
                arrival_ms: 1_790_000_000_000,
                data: r.into(),
                ack: None,
                id: None,
            })
            .collect();
        Box::new(move || {
            Arc::new(BatchSource::new("shardId-000000000000".into(), records.clone())) as Arc<dyn RecordSource>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_batch_passes_the_record_source_conformance_suite() {
    conformance::run_all(&BatchFeeder, 500).await;
}

/// Records as messages of a new in-process queue.
struct MemoryQueueFeeder;

#[async_trait::async_trait]
impl conformance::Feeder for MemoryQueueFeeder {
    async fn feed(&self, records: Vec<String>) -> conformance::Opener {
        let queue: Arc<dyn sluicebox::backends::queue::Queue> =
            Arc::new(sluicebox::backends::queue::MemoryQueue::new(Duration::from_secs(2)));
        queue.send(records).await.unwrap();
        Box::new(move || Arc::new(QueueSource::new(queue.clone(), "memory://events".into())) as Arc<dyn RecordSource>)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_passes_the_record_source_conformance_suite() {
    conformance::run_all(&MemoryQueueFeeder, 500).await;
}
