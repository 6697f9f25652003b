//! The reader's block helpers: threads, one per core, that run a file's or standard input's
//! blocks through [`Prep::block`] while the reader goes on, started with the first block. Their
//! results are taken in the order the blocks were given, so a shard's records reach the
//! buffers in the order they were read.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use super::prep::{BlockDone, BlockJob, Prep};
use crate::error::{Error, Result};

type HelperJob = (BlockJob, SyncSender<Result<BlockDone>>);

/// Helper threads and the blocks given to them, oldest first.
pub struct Helpers {
    prep: Arc<Prep>,
    jobs: Option<SyncSender<HelperJob>>,
    pending: VecDeque<Receiver<Result<BlockDone>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Helpers {
    /// No helpers yet: they start with the first block.
    pub fn new(prep: Arc<Prep>) -> Self {
        Helpers { prep, jobs: None, pending: Default::default(), threads: Vec::new() }
    }

    fn start(&mut self) {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        let (tx, rx) = sync_channel::<HelperJob>(n);
        // The helpers take jobs from one queue, each in turn.
        let rx = Arc::new(Mutex::new(rx));
        self.threads = (0..n)
            .map(|i| {
                let (rx, prep) = (rx.clone(), self.prep.clone());
                std::thread::Builder::new()
                    .name(format!("stream-block-{i}"))
                    .spawn(move || loop {
                        let next = match rx.lock() {
                            Ok(jobs) => jobs.recv(),
                            Err(_) => return,
                        };
                        let Ok((job, done)) = next else { return };
                        // The reader may have stopped on an error; then nobody waits for this.
                        let _ = done.send(prep.block(job));
                    })
                    .expect("a thread starts")
            })
            .collect();
        self.jobs = Some(tx);
    }

    /// Whether blocks are with the helpers.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Blocks given out beyond which the reader waits for the oldest: enough to keep every
    /// helper busy, few enough to bound memory by blocks, not input.
    pub fn full(&self) -> bool {
        !self.pending.is_empty() && self.pending.len() >= 2 * self.threads.len()
    }

    /// Give a block to the helpers.
    pub fn give(&mut self, job: BlockJob) -> Result<()> {
        if self.jobs.is_none() {
            self.start();
        }
        let (tx, rx) = sync_channel(1);
        let stopped = || Error::internal("stream", "a block helper", std::io::Error::other("stopped"));
        self.jobs.as_ref().ok_or_else(stopped)?.send((job, tx)).map_err(|_| stopped())?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// The oldest block's result: waiting for it if `wait`, else only if it is done.
    pub fn next(&mut self, wait: bool) -> Option<Result<BlockDone>> {
        let front = self.pending.front()?;
        let got = match wait {
            true => front.recv().ok(),
            false => match front.try_recv() {
                Ok(done) => Some(done),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            },
        };
        self.pending.pop_front();
        Some(got.unwrap_or_else(|| {
            Err(Error::internal("stream", "a block helper", std::io::Error::other("stopped without a result")))
        }))
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pipeline::Pipeline;
    use crate::model::config::{Format, OutputFormat};
    use crate::stream::prep::Ready;
    use crate::stream::source::Block;

    fn job(shard: u32, records: usize) -> BlockJob {
        // Larger blocks first, so that later ones are likely done before them.
        let data: String = (0..records).map(|i| format!("{{\"shard\":{shard},\"i\":{i}}}\n")).collect();
        let block = Block {
            shard: format!("s{shard}"),
            format: Format::Jsonl,
            header: None,
            first_line: 1,
            arrival_ms: i64::from(shard),
            data: data.into_bytes(),
            skipped: None,
        };
        let spec = crate::model::config::JobConfig::from_toml("", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let input = Pipeline::new(&spec, None, None).input(0, shard, &block.shard, Format::Jsonl, None).unwrap();
        BlockJob { block, shard, input: Arc::new(input), format: OutputFormat::Jsonl, fields: None }
    }

    #[test]
    fn blocks_come_back_in_the_order_given_whichever_finishes_first() {
        let spec = crate::model::config::JobConfig::from_toml("", "t.toml")
            .unwrap()
            .validate(std::path::Path::new("."))
            .unwrap();
        let prep = Arc::new(Prep {
            pipeline: Pipeline::new(&spec, None, None),
            template: None,
            time_field: None,
            errors: "errors".into(),
            source: None,
            sink: false,
            files: true,
        });
        let mut helpers = Helpers::new(prep);
        assert!(!helpers.busy() && helpers.next(false).is_none());
        let sizes = [20_000, 10, 5_000, 1, 300];
        for (shard, &n) in sizes.iter().enumerate() {
            helpers.give(job(shard as u32, n)).unwrap();
        }
        for (shard, &n) in sizes.iter().enumerate() {
            let done = helpers.next(true).unwrap().unwrap();
            assert_eq!((done.shard, done.arrival_ms, done.records.len()), (shard as u32, shard as i64, n));
            let Ready::Row { line, .. } = &done.records[n - 1] else { panic!("a row") };
            assert_eq!(String::from_utf8_lossy(line), format!("{{\"shard\":{shard},\"i\":{}}}\n", n - 1));
        }
        assert!(!helpers.busy());
    }
}
