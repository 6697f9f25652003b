//! The queue seam: at-least-once task delivery with a visibility timeout (`Queue`).

use std::time::Duration;

use async_trait::async_trait;

use crate::backends::cloud::Cloud;
use crate::error::Result;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod faults;
pub mod memory;
#[cfg(feature = "aws")]
pub mod sqs;

pub use memory::MemoryQueue;

/// The visibility timeout tasks get unless told otherwise. Workers extend it every half of it
/// while they work a task, so it only bounds how long a task waits after its worker dies.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// The longest visibility timeout a queue accepts (SQS's limit: 12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Open the queue named by `url`: `memory://` (in this process), or `sqs://NAME` or an SQS
/// queue URL (`https://…`; feature `aws`, with the AWS configuration in `cloud`). `visibility`
/// is how long a delivery stays invisible.
pub async fn open(url: &str, visibility: Duration, cloud: &Cloud) -> Result<std::sync::Arc<dyn Queue>> {
    use crate::error::Error;
    match url.split_once("://") {
        Some(("memory", _)) => Ok(std::sync::Arc::new(MemoryQueue::new(visibility))),
        #[cfg(feature = "aws")]
        Some(("sqs", name)) => {
            let client = crate::backends::aws::sqs(cloud.sdk("--queue")?);
            Ok(std::sync::Arc::new(sqs::SqsQueue::open(client, name, visibility).await?))
        }
        #[cfg(feature = "aws")]
        Some(("https" | "http", _)) => {
            let client = crate::backends::aws::sqs(cloud.sdk("--queue")?);
            Ok(std::sync::Arc::new(sqs::SqsQueue::new(client, url, visibility)))
        }
        #[cfg(not(feature = "aws"))]
        Some(("sqs", _)) => {
            let _ = cloud;
            Err(Error::config("--queue", "sqs:// needs the `aws` feature, which this build lacks"))
        }
        _ => Err(Error::config("--queue", format!("{url:?} is not a queue URL (memory:// or sqs://NAME)"))),
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message body as sent.
    pub body: String,
    /// Handle for `ack`/`extend`/`release`; valid for this delivery only.
    pub receipt: String,
    /// How many times the message has been delivered, this time included.
    pub receive_count: u32,
    /// When the message was sent, ms since the Unix epoch: the same on every delivery.
    pub sent_ms: i64,
    /// The message's id: the same on every delivery of it, different for every message sent.
    pub id: String,
}

/// A task queue.
///
/// # Contract
///
/// - At-least-once: every sent message is delivered until it is acked. It may be delivered
///   more than once, and in any order.
/// - A delivered message is invisible to other receivers for the visibility timeout, then
///   delivered again unless it was acked. `extend` restarts that timeout for a delivery still
///   in hand; `release` makes it visible again at once.
/// - `receive` returns at most `max` messages; when none is visible it waits up to `wait`
///   for one, then returns an empty list (never an error for "empty").
/// - `ack`, `extend` and `release` with the receipt of a delivery that has since timed out
///   and been delivered again succeed; they may be no-ops, or (as on SQS) act on the
///   message. Workers therefore ack only after their work is committed, so a stale ack
///   never drops work that is not done.
/// - `send` of a batch is all-or-error: on `Ok` every message in it was accepted.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Send messages.
    async fn send(&self, bodies: Vec<String>) -> Result<()>;
    /// Receive up to `max` messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;
    /// Delete a delivered message.
    async fn ack(&self, receipt: &str) -> Result<()>;
    /// Keep a delivered message invisible for `timeout` from now.
    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<()>;
    /// Make a delivered message visible again now.
    async fn release(&self, receipt: &str) -> Result<()>;
    /// The cloud requests one `ack` makes (see [`crate::backends::calls`]).
    fn ack_cost(&self) -> crate::backends::calls::ApiCalls {
        crate::backends::calls::ApiCalls::new()
    }
}
