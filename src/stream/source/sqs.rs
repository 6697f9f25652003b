//! A queue of JSON objects, one per message (SQS, or any backend of the queue seam): one
//! shard, named by the queue's URL. Positions count this run's deliveries, so they mean
//! nothing to a later run; a message is deleted once its record is accounted for, and one not
//! deleted comes again after its visibility timeout (at least once: a crash between a file's
//! write and the delete delivers its records again).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::Sender;

use super::{Delivery, Opening, RecordSource, Resume, SourceKind, SourceRecord};
use crate::backends::queue::Queue;
use crate::error::{Error, Result};
use crate::stream::state::Pos;

/// Receives from the queue at once: one waits on SQS for most of its time.
const RECEIVERS: usize = 4;

/// `sqs://NAME` (or an SQS queue URL): a queue of JSON objects.
pub static KIND: Kind = Kind;

/// The kind of [`KIND`].
pub struct Kind;

#[async_trait]
impl SourceKind for Kind {
    fn takes(&self, url: &str) -> bool {
        url.starts_with("sqs://") || url.starts_with("https://sqs.")
    }

    async fn open(&self, url: &str, with: Opening<'_>) -> Result<Arc<dyn RecordSource>> {
        let queue = crate::backends::queue::open(url, with.hold, with.cloud).await?;
        Ok(Arc::new(QueueSource::new(queue, url.to_string())))
    }
}

/// A queue's messages as records.
#[derive(Debug)]
pub struct QueueSource {
    queue: Arc<dyn Queue>,
    shard: String,
}

impl QueueSource {
    /// The messages of `queue`, as the shard `shard` (its URL).
    pub fn new(queue: Arc<dyn Queue>, shard: String) -> Self {
        QueueSource { queue, shard }
    }
}

#[async_trait]
impl RecordSource for QueueSource {
    async fn run(&self, _: &Resume, tx: Sender<Delivery>) -> Result<()> {
        let next = Arc::new(tokio::sync::Mutex::new(0u64));
        let receivers: Vec<_> = (0..RECEIVERS)
            .map(|_| tokio::spawn(receive(self.queue.clone(), self.shard.clone(), tx.clone(), next.clone())))
            .collect();
        drop(tx);
        for r in futures::future::join_all(receivers).await {
            r.map_err(|e| Error::internal("stream", "a queue receiver", e))??;
        }
        Ok(())
    }

    fn resumable(&self) -> bool {
        false
    }

    /// Delete the messages. One that fails to go comes again, and its record goes into a file
    /// again: the first such error is returned once every delete was tried.
    async fn ack(&self, acks: &[String]) -> Result<()> {
        let sent = futures::future::join_all(acks.iter().map(|r| self.queue.ack(r))).await;
        sent.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }
}

/// Receive messages as records until the channel closes. `next` is the last position given:
/// receivers take it in turn as they send, so positions rise in the order records are sent.
async fn receive(
    queue: Arc<dyn Queue>,
    shard: String,
    tx: Sender<Delivery>,
    next: Arc<tokio::sync::Mutex<u64>>,
) -> Result<()> {
    loop {
        let got = tokio::select! {
            got = queue.receive(10, Duration::from_secs(1)) => got?,
            _ = tx.closed() => return Ok(()),
        };
        if got.is_empty() {
            continue;
        }
        let mut next = next.lock().await;
        // A message's arrival is when it was sent: the same on every delivery, so that a
        // message delivered again never counts as newer than one sent after it.
        let records = got
            .into_iter()
            .map(|d| {
                *next += 1;
                let (arrival_ms, data) = (d.sent_ms, bytes::Bytes::from(d.body));
                SourceRecord { pos: Pos::N(*next), arrival_ms, data, ack: Some(d.receipt), id: Some(d.id) }
            })
            .collect();
        if tx.send(Delivery::Records { shard: shard.clone(), records }).await.is_err() {
            return Ok(());
        }
    }
}
