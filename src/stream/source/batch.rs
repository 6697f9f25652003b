//! One batch of a shard's records, as an AWS Lambda function is handed them by its event
//! source mapping: delivered at once, with no end (the shard goes on in later batches). The
//! positions are the records' sequence numbers, so a batch handed over again is skipped up to
//! its shard's checkpoint.

use async_trait::async_trait;
use tokio::sync::mpsc::Sender;

use super::{Delivery, RecordSource, Resume, SourceRecord};
use crate::error::Result;

/// A shard's records, handed over.
#[derive(Debug)]
pub struct BatchSource {
    shard: String,
    records: Vec<SourceRecord>,
}

impl BatchSource {
    /// `records` of `shard`, in order.
    pub fn new(shard: String, records: Vec<SourceRecord>) -> Self {
        BatchSource { shard, records }
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
        true
    }
}
