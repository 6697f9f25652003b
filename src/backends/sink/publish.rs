//! `[sink] publish`: every record written is also published — to an SNS topic with
//! `PublishBatch` (10 messages a request, as SNS allows) or to a webhook (each write's records
//! POSTed as one JSON document) — beside a table sink, or instead of one (`type = "none"`).
//!
//! A topic or a webhook cannot be written conditionally, so publishing is at least once: a
//! chunk worked again (a redelivered task, a retried write) publishes its records again. Each
//! message says which record it is — SNS message attributes `key`, `job` and `seq`, the same
//! fields in each webhook record — so consumers can drop repeats; on a FIFO topic the
//! deduplication id is derived from them, and SNS drops repeats within its five minutes.
//! Entries a batch did not take (throttling) are sent again after a backoff; a write fails
//! (and its chunk is retried) only when they keep failing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{Sink, SinkItem, SinkLimits};
use crate::backends::cloud::Cloud;
use crate::error::{Error, Result};
use crate::model::config::PublishTarget;
use crate::model::record::Record;

/// The largest SNS message, bytes.
pub const SNS_MAX_MESSAGE: usize = 256 * 1024;

/// Rounds of sending what a batch did not take before a write fails.
const ROUNDS: u32 = 8;

/// A sink that publishes what it writes, after writing it to `inner` (if any).
#[derive(Debug)]
pub struct PublishSink {
    inner: Option<Arc<dyn Sink>>,
    target: PublishTarget,
    #[cfg(feature = "aws")]
    sns: Option<aws_sdk_sns::Client>,
    http: reqwest::Client,
}

impl PublishSink {
    /// Publish to `target` what is written to `inner` (or only publish, without one).
    pub fn new(inner: Option<Arc<dyn Sink>>, target: PublishTarget, cloud: &Cloud) -> Result<PublishSink> {
        #[cfg(feature = "aws")]
        let sns = match &target {
            PublishTarget::Sns(_) => Some(crate::backends::aws::sns(cloud.sdk("sink.publish")?)),
            PublishTarget::Webhook(_) => None,
        };
        #[cfg(not(feature = "aws"))]
        if let PublishTarget::Sns(_) = &target {
            let _ = cloud;
            return Err(Error::config("sink.publish", "sns:// needs the `aws` feature, which this build lacks"));
        }
        let http = crate::model::web::client(Duration::from_secs(30))?;
        if let PublishTarget::Webhook(url) = &target {
            crate::model::web::check(url, "sink.publish")?;
        }
        Ok(PublishSink {
            inner,
            target,
            #[cfg(feature = "aws")]
            sns,
            http,
        })
    }

    async fn publish_items(&self, items: &[SinkItem]) -> Result<()> {
        match &self.target {
            PublishTarget::Webhook(url) => self.post(url, items).await,
            #[cfg(feature = "aws")]
            PublishTarget::Sns(topic) => {
                for batch in items.chunks(10) {
                    self.publish_batch(topic, batch).await?;
                }
                Ok(())
            }
            #[cfg(not(feature = "aws"))]
            PublishTarget::Sns(_) => unreachable!("refused by PublishSink::new"),
        }
    }

    async fn post(&self, url: &crate::model::web::SecretUrl, items: &[SinkItem]) -> Result<()> {
        let records: Vec<Value> = items
            .iter()
            .map(|i| serde_json::json!({"key": i.key, "job": i.job, "seq": i.seq, "record": i.record}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "records": records }))
            .map_err(|e| Error::internal("json", "records to publish", e))?;
        let mut delay = Duration::from_millis(200);
        for round in 1..=ROUNDS {
            let sent = crate::model::web::post_json(&self.http, url, "sink.publish", body.clone()).await;
            let answered =
                |s| Error::backend(crate::error::Backend::Webhook, format!("POST {url}"), format!("answered {s}"));
            let retry = match sent {
                Ok(s) if s.is_success() => return Ok(()),
                Ok(s) if s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS => answered(s),
                Ok(s) => return Err(answered(s)),
                Err(e @ Error::InvalidConfig { .. }) => return Err(e),
                Err(e) => e,
            };
            if round == ROUNDS {
                return Err(retry);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        Ok(())
    }

    #[cfg(feature = "aws")]
    async fn publish_batch(&self, topic: &str, items: &[SinkItem]) -> Result<()> {
        use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
        use sha2::Digest;
        let client = self.sns.as_ref().expect("an SNS target has a client");
        let fifo = topic.ends_with(".fifo");
        let attribute = |kind: &str, value: String| {
            MessageAttributeValue::builder()
                .data_type(kind)
                .string_value(value)
                .build()
                .map_err(|e| Error::backend(crate::error::Backend::Sns, "message attribute", e))
        };
        let mut pending: Vec<PublishBatchRequestEntry> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let body =
                serde_json::to_string(&item.record).map_err(|e| Error::internal("json", "record to publish", e))?;
            let mut entry = PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message(body)
                .message_attributes("key", attribute("String", item.key.clone())?)
                .message_attributes("job", attribute("Number", item.job.to_string())?)
                .message_attributes("seq", attribute("Number", item.seq.to_string())?);
            if fifo {
                let id = sha2::Sha256::digest(format!("{}\0{}\0{}", item.job, item.seq, item.key));
                let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
                entry = entry.message_group_id(&item.key).message_deduplication_id(id);
            }
            pending.push(entry.build().map_err(|e| Error::backend(crate::error::Backend::Sns, "batch entry", e))?);
        }
        let mut delay = Duration::from_millis(100);
        for round in 1..=ROUNDS {
            let sent = client
                .publish_batch()
                .topic_arn(topic)
                .set_publish_batch_request_entries(Some(pending.clone()))
                .send()
                .await;
            let failed: Vec<String> = match sent {
                Ok(out) => {
                    let failed = out.failed.unwrap_or_default();
                    if let Some(f) = failed.iter().find(|f| f.sender_fault) {
                        return Err(Error::backend(
                            crate::error::Backend::Sns,
                            format!("PublishBatch to {topic}"),
                            format!("{}: {}", f.code, f.message.clone().unwrap_or_default()),
                        ));
                    }
                    failed.into_iter().map(|f| f.id).collect()
                }
                Err(e) if round == ROUNDS => {
                    return Err(Error::backend(
                        crate::error::Backend::Sns,
                        format!("PublishBatch to {topic}"),
                        e.into_service_error(),
                    ))
                }
                Err(_) => pending.iter().map(|p| p.id.clone()).collect(),
            };
            if failed.is_empty() {
                return Ok(());
            }
            if round == ROUNDS {
                return Err(Error::backend(
                    crate::error::Backend::Sns,
                    format!("PublishBatch to {topic}"),
                    format!("{} messages not taken after {ROUNDS} rounds", failed.len()),
                ));
            }
            pending.retain(|p| failed.contains(&p.id));
            tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(..=delay.as_millis() as u64))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for PublishSink {
    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        if let Some(inner) = &self.inner {
            inner.write(items.clone()).await?;
        }
        self.publish_items(&items).await
    }

    fn figures(&self) -> Option<super::SinkFigures> {
        self.inner.as_ref().and_then(|i| i.figures())
    }

    async fn upsert(&self, items: Vec<SinkItem>) -> Result<()> {
        if let Some(inner) = &self.inner {
            inner.upsert(items.clone()).await?;
        }
        self.publish_items(&items).await
    }

    async fn publish(&self, job: u64) -> Result<()> {
        match &self.inner {
            Some(inner) => inner.publish(job).await,
            None => Ok(()),
        }
    }

    async fn discard(&self, job: u64) -> Result<()> {
        match &self.inner {
            Some(inner) => inner.discard(job).await,
            None => Ok(()),
        }
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        match &self.inner {
            Some(inner) => inner.read_all().await,
            None => Ok(BTreeMap::new()),
        }
    }

    fn orders_by_seq(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.orders_by_seq())
    }

    fn limits(&self) -> SinkLimits {
        let mut limits = self.inner.as_ref().map(|i| i.limits()).unwrap_or_default();
        if let PublishTarget::Sns(_) = self.target {
            limits.max_item_bytes = Some(limits.max_item_bytes.map_or(SNS_MAX_MESSAGE, |m| m.min(SNS_MAX_MESSAGE)));
        }
        limits
    }

    fn item_size(&self, item: &SinkItem) -> usize {
        match &self.inner {
            Some(inner) => inner.item_size(item),
            None => serde_json::to_vec(&item.record).map_or(0, |v| v.len()),
        }
    }
}
