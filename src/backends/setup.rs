//! `sluicebox aws setup` (feature `aws`): create the bucket, the queue with its dead-letter
//! queue, and the ledger and sink tables a job needs, for development and tests.

use crate::error::{Error, Result};

/// What [`setup`] should create.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `s3://BUCKET[/PREFIX]`: the bucket is created.
    pub bucket: Option<String>,
    /// `sqs://NAME`: the queue is created, with `NAME-dlq` as its dead-letter queue.
    pub queue: Option<String>,
    /// `dynamodb://TABLE`: the ledger table is created (on-demand capacity).
    pub ledger: Option<String>,
    /// `dynamodb://TABLE`: a sink table is created (on-demand capacity, hash key `_key`).
    pub sink: Option<String>,
    /// Deliveries of a task before SQS moves it to the dead-letter queue.
    pub max_receives: u32,
    /// The queue's default visibility timeout.
    pub visibility: std::time::Duration,
}

/// Create the bucket, queues and table a job needs (for development and tests). Existing
/// ones are left as they are. Returns one line per resource for a person to read.
pub async fn setup(conf: &aws_config::SdkConfig, what: &Setup) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(url) = &what.bucket {
        let name = strip(url, "s3://", "--bucket")?.split('/').next().unwrap_or_default().to_string();
        let s3 = aws_sdk_s3::Client::new(conf);
        match s3.create_bucket().bucket(&name).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
            Err(e) => {
                return Err(crate::backends::aws::service_error(
                    crate::error::Backend::ObjectStore,
                    format!("CreateBucket {name}"),
                    e.into_service_error(),
                ))
            }
        }
        done.push(format!("bucket s3://{name}"));
    }
    if let Some(url) = &what.queue {
        let name = strip(url, "sqs://", "--queue")?;
        let sqs = aws_sdk_sqs::Client::new(conf);
        let dlq = create_queue(&sqs, &format!("{name}-dlq"), Vec::new()).await?;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| {
                crate::backends::aws::service_error(
                    crate::error::Backend::Sqs,
                    format!("GetQueueAttributes {name}-dlq"),
                    e.into_service_error(),
                )
            })?
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| Error::NotFound(format!("ARN of queue {name}-dlq")))?;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": what.max_receives.max(1)});
        let attributes = vec![
            (aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, what.visibility.as_secs().to_string()),
            (aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ];
        let url = create_queue(&sqs, name, attributes).await?;
        done.push(format!("queue {url} (dead letters to {name}-dlq after {} receives)", what.max_receives.max(1)));
    }
    if let Some(url) = &what.ledger {
        let table = strip(url, "dynamodb://", "--ledger")?;
        crate::backends::ledger::dynamodb::DynamoLedger::create_table(&aws_sdk_dynamodb::Client::new(conf), table)
            .await?;
        done.push(format!("ledger table {table}"));
    }
    if let Some(url) = &what.sink {
        let table = strip(url, "dynamodb://", "--sink")?;
        crate::backends::sink::dynamodb::DynamoSink::create_table(&aws_sdk_dynamodb::Client::new(conf), table).await?;
        done.push(format!("sink table {table}"));
    }
    Ok(done)
}

fn strip<'u>(url: &'u str, scheme: &str, key: &str) -> Result<&'u str> {
    url.strip_prefix(scheme)
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| Error::config(key, format!("{url:?} is not a {scheme}NAME URL")))
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(aws_sdk_sqs::types::QueueAttributeName, String)>,
) -> Result<String> {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k, v);
    }
    let out = req.send().await.map_err(|e| {
        crate::backends::aws::service_error(
            crate::error::Backend::Sqs,
            format!("CreateQueue {name}"),
            e.into_service_error(),
        )
    })?;
    out.queue_url().map(str::to_string).ok_or_else(|| Error::NotFound(format!("URL of queue {name}")))
}
