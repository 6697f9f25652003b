//! An SQS queue behind the [`PutRecords`] seam, as seed 003's scheduler fills one: each
//! record one message, sent ten to a `SendMessageBatch` (and under its byte limit), eight
//! requests at once, by the queue backend, which sends again the entries SQS refused.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backends::queue::Queue;
use crate::error::Result;

use super::{Entry, PutRecords, Refused};

/// The most bytes of one SQS message.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// A queue records are put on, one message each.
pub struct QueueTarget {
    queue: Arc<dyn Queue>,
}

impl QueueTarget {
    /// Put records on `queue`.
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        QueueTarget { queue }
    }
}

#[async_trait]
impl PutRecords for QueueTarget {
    async fn put(&self, entries: &[Entry]) -> Result<Vec<Option<Refused>>> {
        // The backend resends refused entries itself, so an answer is all or nothing: an
        // entry too large for a message is refused here, the rest sent.
        let mut answers = vec![None; entries.len()];
        let mut bodies = Vec::with_capacity(entries.len());
        for (entry, answer) in entries.iter().zip(&mut answers) {
            match entry.data.len() > MAX_MESSAGE_BYTES {
                true => {
                    *answer = Some(Refused {
                        code: "MessageTooLong".into(),
                        message: format!(
                            "{} bytes; an SQS message holds at most {MAX_MESSAGE_BYTES}",
                            entry.data.len()
                        ),
                    })
                }
                false => bodies.push(String::from_utf8_lossy(&entry.data).trim_end().to_string()),
            }
        }
        // Ten messages a request, eight requests at once (SQS answers each in tens of ms).
        use futures::{StreamExt, TryStreamExt};
        let requests: Vec<Vec<String>> = bodies.chunks(10).map(<[String]>::to_vec).collect();
        futures::stream::iter(requests).map(|r| self.queue.send(r)).buffer_unordered(8).try_collect::<()>().await?;
        Ok(answers)
    }
}
