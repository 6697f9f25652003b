//! One batch of records, as an AWS Lambda function is handed them by its event source mapping:
//! delivered at once, with no end (the stream goes on in later batches).
//!
//! - A Kinesis shard's batch ([`BatchSource::new`]) is resumable: the positions are the
//!   records' sequence numbers, so a batch handed over again is skipped up to its shard's
//!   checkpoint.
//! - A queue's batch ([`BatchSource::messages`]) is not: its records are numbered in the batch,
//!   and each is acknowledged by its message id once accounted for, into an [`Acked`] set that
//!   the function reads to answer which messages failed (the others Lambda deletes).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc::Sender;

use super::{Delivery, RecordSource, Resume, SourceRecord};
use crate::error::Result;

/// The acknowledgements of a queue's batch: the message ids accounted for. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Acked(Arc<Mutex<BTreeSet<String>>>);

impl Acked {
    /// The ids acknowledged so far.
    pub fn ids(&self) -> BTreeSet<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn add(&self, acks: &[String]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(acks.iter().cloned());
    }
}

impl PartialEq for Acked {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Acked {}

/// A shard's records, handed over.
#[derive(Debug)]
pub struct BatchSource {
    shard: String,
    records: Vec<SourceRecord>,
    /// For a queue's batch: where acknowledgements go.
    acked: Option<Acked>,
}

impl BatchSource {
    /// `records` of `shard`, in order, positioned by their sequence numbers.
    pub fn new(shard: String, records: Vec<SourceRecord>) -> Self {
        BatchSource { shard, records, acked: None }
    }

    /// A queue's messages as `records` of the shard `queue`, numbered in the batch, each
    /// acknowledged (its `ack`, the message id) into `acked` once accounted for.
    pub fn messages(queue: String, records: Vec<SourceRecord>, acked: Acked) -> Self {
        BatchSource { shard: queue, records, acked: Some(acked) }
    }
}

#[async_trait]
impl RecordSource for BatchSource {
    async fn run(&self, _: &Resume, tx: Sender<Delivery>) -> Result<()> {
        // A closed channel means the run stopped: the batch comes again, as a retry.
        let _ = tx.send(Delivery::Records { shard: self.shard.clone(), records: self.records.clone() }).await;
        Ok(())
    }

    fn resumable(&self) -> bool {
        self.acked.is_none()
    }

    async fn ack(&self, acks: &[String]) -> Result<()> {
        if let Some(acked) = &self.acked {
            acked.add(acks);
        }
        Ok(())
    }
}
