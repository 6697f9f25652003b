//! `sluicebox aws setup` (feature `aws`): create the bucket, the queue with its dead-letter
//! queue, the ledger and sink tables a job needs, and the queue of the bucket's event
//! notifications that `watch` reads, for development and tests.

pub use crate::backends::aws::dynamodb::Capacity;
use crate::error::{Error, Result};

/// What [`setup`] should create.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `s3://BUCKET[/PREFIX]`: the bucket is created.
    pub bucket: Option<String>,
    /// `sqs://NAME`: a queue that the bucket notifies of every object created under
    /// `bucket`'s prefix (the queue `sluicebox watch --events` reads).
    pub events: Option<String>,
    /// `sqs://NAME`: the queue is created, with `NAME-dlq` as its dead-letter queue.
    pub queue: Option<String>,
    /// `dynamodb://TABLE[?capacity=MODE]`: the ledger table is created, billed as MODE says
    /// (see [`table_capacity`]; default on-demand).
    pub ledger: Option<String>,
    /// `dynamodb://TABLE[?capacity=MODE]`: a sink table is created (hash key `_key`), billed
    /// as MODE says (see [`table_capacity`]): on a provisioned table the sink paces its writes
    /// at the table's write units.
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
    if let Some(url) = &what.events {
        done.push(events_queue(conf, url, what.bucket.as_deref()).await?);
    }
    if let Some(url) = &what.ledger {
        let (table, capacity) = table_capacity(url, "--ledger")?;
        let client = aws_sdk_dynamodb::Client::new(conf);
        crate::backends::ledger::dynamodb::DynamoLedger::create_table_with(&client, table, capacity).await?;
        done.push(format!("ledger table {table} ({capacity})"));
    }
    if let Some(url) = &what.sink {
        let (table, capacity) = table_capacity(url, "--sink")?;
        let client = aws_sdk_dynamodb::Client::new(conf);
        crate::backends::sink::dynamodb::DynamoSink::create_table_with(&client, table, capacity).await?;
        done.push(format!("sink table {table} ({capacity})"));
    }
    Ok(done)
}

/// The queue `url` names, allowed to take messages from the bucket only, and the bucket's
/// notification of every object created under its prefix into it, added to the ones it has
/// (unless there).
async fn events_queue(conf: &aws_config::SdkConfig, url: &str, bucket: Option<&str>) -> Result<String> {
    use crate::backends::aws::service_error;
    use crate::error::Backend;
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
        QueueConfiguration, S3KeyFilter,
    };
    use aws_sdk_sqs::types::QueueAttributeName;
    let name = strip(url, "sqs://", "--events")?;
    let bucket =
        bucket.ok_or_else(|| Error::config("--events", "needs --bucket: the bucket whose objects it hears of"))?;
    let rest = strip(bucket, "s3://", "--bucket")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let sqs = aws_sdk_sqs::Client::new(conf);
    let queue = create_queue(&sqs, name, Vec::new()).await?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| service_error(Backend::Sqs, format!("GetQueueAttributes {name}"), e.into_service_error()))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| Error::NotFound(format!("ARN of queue {name}")))?;
    // S3 checks that it may send to the queue when the notification is configured.
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": arn, "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}}}]});
    sqs.set_queue_attributes()
        .queue_url(&queue)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| service_error(Backend::Sqs, format!("SetQueueAttributes {name}"), e.into_service_error()))?;

    let s3 = aws_sdk_s3::Client::new(conf);
    let current = s3.get_bucket_notification_configuration().bucket(bucket).send().await.map_err(|e| {
        service_error(
            Backend::ObjectStore,
            format!("GetBucketNotificationConfiguration {bucket}"),
            e.into_service_error(),
        )
    })?;
    let prefix_of = |q: &QueueConfiguration| {
        let rules = q.filter().and_then(|f| f.key()).map(|k| k.filter_rules()).unwrap_or_default();
        let rule = rules.iter().find(|r| r.name() == Some(&FilterRuleName::Prefix));
        rule.and_then(|r| r.value()).unwrap_or_default().to_string()
    };
    let mut queues = current.queue_configurations().to_vec();
    if !queues.iter().any(|q| q.queue_arn() == arn && prefix_of(q) == prefix) {
        let mut new = QueueConfiguration::builder().queue_arn(&arn).events(Event::S3ObjectCreated);
        if !prefix.is_empty() {
            let rule = FilterRule::builder().name(FilterRuleName::Prefix).value(prefix).build();
            let key = S3KeyFilter::builder().filter_rules(rule).build();
            new = new.filter(NotificationConfigurationFilter::builder().key(key).build());
        }
        queues.push(new.build().map_err(|e| service_error(Backend::ObjectStore, "QueueConfiguration", e))?);
        let all = NotificationConfiguration::builder()
            .set_queue_configurations(Some(queues))
            .set_topic_configurations(current.topic_configurations)
            .set_lambda_function_configurations(current.lambda_function_configurations)
            .set_event_bridge_configuration(current.event_bridge_configuration)
            .build();
        s3.put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(all)
            .send()
            .await
            .map_err(|e| {
                let op = format!("PutBucketNotificationConfiguration {bucket}");
                service_error(Backend::ObjectStore, op, e.into_service_error())
            })?;
    }
    Ok(format!("events queue {queue}: told of every object created under s3://{bucket}/{prefix}"))
}

/// The table a `dynamodb://TABLE[?capacity=MODE]` URL names, and how it is to be billed:
/// `on-demand` (the default), `provisioned:READ,WRITE` (capacity units) or `warm:READ,WRITE`
/// (on-demand with warm throughput, units/s). `key` names the flag in errors.
pub fn table_capacity<'u>(url: &'u str, key: &str) -> Result<(&'u str, Capacity)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let table = strip(base, "dynamodb://", key)?;
    let mut capacity = Capacity::OnDemand;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("capacity", mode)) => capacity = Capacity::parse(mode, key)?,
            _ => return Err(Error::config(key, format!("{pair:?} in {url:?} is not capacity=MODE"))),
        }
    }
    Ok((table, capacity))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_url_may_say_how_the_table_is_billed() {
        assert_eq!(table_capacity("dynamodb://orders", "--sink").unwrap(), ("orders", Capacity::OnDemand));
        assert_eq!(
            table_capacity("dynamodb://orders?capacity=provisioned:5,100", "--sink").unwrap(),
            ("orders", Capacity::Provisioned { read: 5, write: 100 })
        );
        assert_eq!(
            table_capacity("dynamodb://l?capacity=warm:12000,4000", "--ledger").unwrap(),
            ("l", Capacity::Warm { read: 12000, write: 4000 })
        );
        for bad in ["dynamodb://orders?units=5", "dynamodb://orders?capacity=provisioned:5", "s3://orders"] {
            let e = table_capacity(bad, "--sink").unwrap_err().to_string();
            assert!(e.contains("--sink"), "{bad}: {e}");
        }
    }
}
