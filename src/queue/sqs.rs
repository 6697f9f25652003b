//! Amazon SQS queue (feature `aws`): batched sends, long polling, visibility changes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

use super::{Delivery, Queue};
use crate::error::{Error, Result};

/// SQS accepts at most this many messages per `SendMessageBatch` and `ReceiveMessage`.
const SQS_BATCH: usize = 10;
/// The longest long poll SQS allows.
const SQS_MAX_WAIT: Duration = Duration::from_secs(20);
/// Attempts at sending the entries of a batch that SQS reported as failed.
const SEND_ATTEMPTS: u32 = 5;

/// A queue backed by one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    visibility: Duration,
}

fn sqs_error(context: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("sqs", context, e)
}

impl SqsQueue {
    /// Use the queue at `url` (a queue URL), whose deliveries stay invisible for `visibility`.
    pub fn new(client: Client, url: impl Into<String>, visibility: Duration) -> Self {
        SqsQueue { client, url: url.into(), visibility }
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
                    "sqs",
                    format!("SendMessageBatch to {}", self.url),
                    format!("{}: {}", permanent.code(), permanent.message().unwrap_or("")),
                ));
            }
            pending = failed;
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        Err(Error::backend("sqs", format!("SendMessageBatch to {}", self.url), "entries kept failing"))
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

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, bodies: Vec<String>) -> Result<()> {
        for batch in bodies.chunks(SQS_BATCH) {
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
                Some(Delivery {
                    body: m.body()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    receive_count: count,
                })
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_receipt_handle_is_invalid()) => Ok(()),
            Err(e) => Err(sqs_error(format!("DeleteMessage on {}", self.url), e.into_service_error())),
        }
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.set_visibility(receipt, timeout).await
    }

    async fn release(&self, receipt: &str) -> Result<()> {
        self.set_visibility(receipt, Duration::ZERO).await
    }

    fn ack_cost(&self) -> crate::calls::ApiCalls {
        [("sqs.DeleteMessage".to_string(), 1)].into()
    }
}
