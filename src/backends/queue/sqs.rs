//! Amazon SQS queue (feature `aws`): batched sends, long polling, visibility changes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

use super::{Delivery, Queue};
use crate::error::{Error, Result};

/// SQS accepts at most this many messages per `SendMessageBatch` and `ReceiveMessage`.
const SQS_BATCH: usize = 10;
/// The most bytes of message bodies one `SendMessageBatch` carries (SQS's limit for a batch
/// is 256 KiB; the rest is room for the request's own fields).
const SQS_BATCH_BYTES: usize = 240 * 1024;
/// The longest long poll SQS allows.
const SQS_MAX_WAIT: Duration = Duration::from_secs(20);
/// Attempts at sending the entries of a batch that SQS reported as failed.
const SEND_ATTEMPTS: u32 = 5;

/// Acks arriving within this time of each other share one `DeleteMessageBatch`.
const ACK_WINDOW: Duration = Duration::from_millis(20);

/// A queue backed by one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    visibility: Duration,
    acks: std::sync::Arc<std::sync::Mutex<Vec<PendingAck>>>,
}

type PendingAck = (String, tokio::sync::oneshot::Sender<Result<()>>);

fn sqs_error(context: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    crate::backends::aws::service_error(crate::error::Backend::Sqs, context, e)
}

impl SqsQueue {
    /// Use the queue at `url` (a queue URL), whose deliveries stay invisible for `visibility`.
    pub fn new(client: Client, url: impl Into<String>, visibility: Duration) -> Self {
        SqsQueue { client, url: url.into(), visibility, acks: Default::default() }
    }

    /// Find a queue by name (`sqs://NAME`) or take a queue URL as it is.
    pub async fn open(client: Client, name_or_url: &str, visibility: Duration) -> Result<Self> {
        if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
            return Ok(Self::new(client, name_or_url, visibility));
        }
        let out = client
            .get_queue_url()
            .queue_name(name_or_url)
            .send()
            .await
            .map_err(|e| sqs_error(format!("cannot find queue {name_or_url}"), e.into_service_error()))?;
        let url = out.queue_url().ok_or_else(|| Error::NotFound(format!("queue {name_or_url}")))?;
        Ok(Self::new(client, url, visibility))
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Delete every pending ack's message, ten per request, and tell each ack its result. A
    /// receipt SQS no longer knows (the message was deleted, or delivered again) is not an
    /// error: the queue contract lets a stale ack act or not.
    async fn flush_acks(&self) {
        loop {
            let batch: Vec<PendingAck> = {
                let mut pending = self.acks.lock().unwrap_or_else(|p| p.into_inner());
                let n = pending.len().min(SQS_BATCH);
                pending.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let entries: Vec<_> = batch
                .iter()
                .enumerate()
                .filter_map(|(i, (receipt, _))| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .ok()
                })
                .collect();
            let sent = self.client.delete_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await;
            let mut failed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
            let error = match sent {
                Ok(out) => {
                    for f in out.failed {
                        if f.code != "ReceiptHandleIsInvalid" {
                            failed.insert(f.id, format!("{}: {}", f.code, f.message.unwrap_or_default()));
                        }
                    }
                    None
                }
                Err(e) => Some(e.into_service_error().to_string()),
            };
            for (i, (_, tx)) in batch.into_iter().enumerate() {
                let result = match error.clone().or_else(|| failed.remove(&i.to_string())) {
                    Some(e) => Err(Error::backend(
                        crate::error::Backend::Sqs,
                        format!("DeleteMessageBatch on {}", self.url),
                        e,
                    )),
                    None => Ok(()),
                };
                let _ = tx.send(result);
            }
        }
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<()> {
        // Entry ids are positions in `bodies`, so failed entries can be resent.
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        for attempt in 1..=SEND_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(&bodies[i]).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| sqs_error("bad batch entry", e))?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error(format!("SendMessageBatch to {}", self.url), e.into_service_error()))?;
            let failed: Vec<_> = out.failed().iter().filter_map(|f| f.id().parse::<usize>().ok()).collect();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(permanent) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(Error::backend(
                    crate::error::Backend::Sqs,
                    format!("SendMessageBatch to {}", self.url),
                    format!("{}: {}", permanent.code(), permanent.message().unwrap_or("")),
                ));
            }
            pending = failed;
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        Err(Error::backend(
            crate::error::Backend::Sqs,
            format!("SendMessageBatch to {}", self.url),
            "entries kept failing",
        ))
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX).min(43_200);
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // A receipt of a delivery that has since timed out: by contract, a no-op.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()) =>
            {
                Ok(())
            }
            Err(e) => Err(sqs_error(format!("ChangeMessageVisibility on {}", self.url), e.into_service_error())),
        }
    }
}

/// `bodies` cut into runs that one `SendMessageBatch` takes: at most [`SQS_BATCH`] messages
/// and [`SQS_BATCH_BYTES`] (a body larger than that goes alone, and SQS judges it).
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == SQS_BATCH || bytes + body.len() > SQS_BATCH_BYTES) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, bodies: Vec<String>) -> Result<()> {
        for batch in batches(&bodies) {
            self.send_batch(batch).await?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = i32::try_from(max.clamp(1, SQS_BATCH)).unwrap_or(1);
        // Long polls are in whole seconds: round up, so a short wait still waits.
        let wait = i32::try_from(wait.min(SQS_MAX_WAIT).as_millis().div_ceil(1000)).unwrap_or(0);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .visibility_timeout(i32::try_from(self.visibility.as_secs()).unwrap_or(i32::MAX))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| sqs_error(format!("ReceiveMessage from {}", self.url), e.into_service_error()))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                // When it was sent, the same on every delivery (a stream's record version);
                // the time received if SQS leaves it out.
                let sent_ms = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                Some(Delivery {
                    body: m.body()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    receive_count: count,
                    sent_ms,
                    id: m.message_id()?.to_string(),
                })
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        // Acks from concurrent workers share `DeleteMessageBatch` requests: the first ack of a
        // window starts a flush (a task of its own, so a caller that gives up cannot strand
        // the others), and every ack waits for its own entry's result.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let first = {
            let mut pending = self.acks.lock().unwrap_or_else(|p| p.into_inner());
            pending.push((receipt.to_string(), tx));
            pending.len() == 1
        };
        if first {
            let queue = self.clone();
            let flush = async move {
                tokio::time::sleep(ACK_WINDOW).await;
                queue.flush_acks().await;
            };
            // The requests count in the tally of the ack that started the flush.
            match crate::backends::calls::Tally::current() {
                Some(tally) => drop(tokio::spawn(tally.scope_owned(flush))),
                None => drop(tokio::spawn(flush)),
            }
        }
        rx.await.map_err(|e| sqs_error(format!("DeleteMessageBatch on {}", self.url), e))?
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.set_visibility(receipt, timeout).await
    }

    async fn release(&self, receipt: &str) -> Result<()> {
        self.set_visibility(receipt, Duration::ZERO).await
    }

    /// One request per ack: an upper bound, as concurrent acks share requests.
    fn ack_cost(&self) -> crate::backends::calls::ApiCalls {
        [("sqs.DeleteMessageBatch".to_string(), 1)].into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_is_cut_into_batches_of_ten_messages_and_at_most_240_kib() {
        let small: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        let lens: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(lens, [10, 10, 3]);

        let big: Vec<String> = (0..10).map(|_| "x".repeat(50 * 1024)).collect();
        let cut = batches(&big);
        assert!(cut.iter().all(|b| b.iter().map(String::len).sum::<usize>() <= SQS_BATCH_BYTES));
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), 10, "every message once");
        assert_eq!(cut.iter().map(|b| b.len()).collect::<Vec<_>>(), [4, 4, 2]);

        let huge = vec!["y".repeat(300 * 1024), "z".into()];
        assert_eq!(batches(&huge).iter().map(|b| b.len()).collect::<Vec<_>>(), [1, 1], "alone, for SQS to judge");
        assert!(batches(&[]).is_empty());
    }
}
