//! The Kinesis data stream behind the [`PutRecords`] seam: opened (and created, if asked)
//! until active, and its requests.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{Error, Result};

use super::{Entry, PutRecords, Refused};

/// A Kinesis data stream, by name.
#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: aws_sdk_kinesis::Client,
    name: String,
}

/// How long a stream being created may take to become active.
const ACTIVE_WITHIN: Duration = Duration::from_secs(300);

impl KinesisStream {
    /// Use the stream `name`, which must exist; with `create`, create it with that many
    /// shards when it does not. Either way, wait until it is active (created, or updating).
    pub async fn open(client: aws_sdk_kinesis::Client, name: &str, create: Option<NonZeroU32>) -> Result<Self> {
        let stream = KinesisStream { client, name: name.to_string() };
        match (stream.status().await?, create) {
            (Some(_), _) => {}
            (None, None) => {
                return Err(Error::config(
                    "--to",
                    format!(
                        "the Kinesis stream {name} does not exist; create it, or give --shards N to have it created"
                    ),
                ))
            }
            (None, Some(shards)) => stream.create(shards).await?,
        }
        stream.wait_active().await?;
        Ok(stream)
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's status, `None` when it does not exist.
    async fn status(&self) -> Result<Option<aws_sdk_kinesis::types::StreamStatus>> {
        match self.client.describe_stream_summary().stream_name(&self.name).send().await {
            Ok(out) => Ok(out.stream_description_summary().map(|s| s.stream_status().clone())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(kinesis_error(format!("DescribeStreamSummary {}", self.name), e.into_service_error())),
        }
    }

    async fn create(&self, shards: NonZeroU32) -> Result<()> {
        let count = i32::try_from(shards.get()).unwrap_or(i32::MAX);
        match self.client.create_stream().stream_name(&self.name).shard_count(count).send().await {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else: use it as it is.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
            Err(e) => {
                Err(kinesis_error(format!("CreateStream {} ({shards} shards)", self.name), e.into_service_error()))
            }
        }
    }

    async fn wait_active(&self) -> Result<()> {
        use aws_sdk_kinesis::types::StreamStatus;
        let deadline = Instant::now() + ACTIVE_WITHIN;
        loop {
            match self.status().await? {
                Some(StreamStatus::Active | StreamStatus::Updating) => return Ok(()),
                Some(StreamStatus::Deleting) | None => {
                    return Err(Error::config("--to", format!("the Kinesis stream {} is being deleted", self.name)))
                }
                Some(_) if Instant::now() > deadline => {
                    return Err(Error::backend(
                        crate::error::Backend::Kinesis,
                        format!("stream {}", self.name),
                        format!("not active after {} s", ACTIVE_WITHIN.as_secs()),
                    ))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

fn kinesis_error(context: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    crate::backends::aws::service_error(crate::error::Backend::Kinesis, context, e)
}

#[async_trait]
impl PutRecords for KinesisStream {
    async fn put(&self, entries: &[Entry]) -> Result<Vec<Option<Refused>>> {
        use aws_sdk_kinesis::primitives::Blob;
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;
        let context = || format!("PutRecords to stream {}", self.name);
        let records = entries
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&e.partition_key)
                    .data(Blob::new(e.data.clone()))
                    .build()
                    .map_err(|err| Error::backend(crate::error::Backend::Kinesis, context(), err))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .client
            .put_records()
            .stream_name(&self.name)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| kinesis_error(context(), e.into_service_error()))?;
        if out.records().len() != entries.len() {
            let got = format!("{} answers for {} entries", out.records().len(), entries.len());
            return Err(Error::backend(crate::error::Backend::Kinesis, context(), got));
        }
        Ok(out
            .records()
            .iter()
            .map(|r| {
                r.error_code().map(|code| Refused {
                    code: code.to_string(),
                    message: r.error_message().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }
}

/// The stream of `kinesis://STREAM`.
pub fn stream_name(url: &str) -> Result<&str> {
    let valid =
        |n: &str| (1..=128).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    url.strip_prefix("kinesis://").filter(|n| valid(n)).ok_or_else(|| {
        Error::config("--to", format!("{url:?} is not kinesis://STREAM (a name of 1 to 128 letters, digits, _ . -)"))
    })
}
