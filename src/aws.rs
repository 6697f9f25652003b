//! The AWS SDK configuration shared by the AWS backends (feature `aws`).

/// Load the standard AWS configuration: region, profile, credentials and endpoint from the
/// environment and the shared config files, as every AWS tool does.
///
/// Throttling and server errors are retried by the SDK with jittered exponential backoff, up
/// to 8 attempts per request unless `AWS_MAX_ATTEMPTS` says otherwise.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let configured = std::env::var_os("AWS_MAX_ATTEMPTS").is_some();
    let loader = if configured {
        loader
    } else {
        loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(8))
    };
    loader.load().await
}

use crate::error::{Error, Result};

/// Counts every request attempt in the current task's [`crate::calls::Tally`].
#[derive(Debug)]
struct CountCalls;

impl aws_smithy_runtime_api::client::interceptors::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "sluicebox::calls"
    }

    fn read_before_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(m) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() {
            crate::calls::count(m.service(), m.name());
        }
        Ok(())
    }
}

/// Create a DynamoDB table (on-demand capacity) with string key attributes `keys` (partition
/// key first, then an optional sort key) if it does not exist, and wait until it is active.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str, keys: &[&str]) -> Result<()> {
    use aws_sdk_dynamodb::client::Waiters;
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let fail = |e: crate::error::BoxError| Error::backend("dynamodb", format!("CreateTable {table}"), e);
    let mut req = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest);
    for (i, name) in keys.iter().enumerate() {
        let kind = if i == 0 { KeyType::Hash } else { KeyType::Range };
        let key =
            KeySchemaElement::builder().attribute_name(*name).key_type(kind).build().map_err(|e| fail(e.into()))?;
        let attr = AttributeDefinition::builder()
            .attribute_name(*name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| fail(e.into()))?;
        req = req.key_schema(key).attribute_definitions(attr);
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(fail(e.into_service_error().into())),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(std::time::Duration::from_secs(60))
        .await
        .map_err(|e| Error::backend("dynamodb", format!("waiting for table {table}"), e))?;
    Ok(())
}

/// A DynamoDB client whose requests are counted (see [`crate::calls`]).
pub fn dynamodb(conf: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An SQS client whose requests are counted (see [`crate::calls`]).
pub fn sqs(conf: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An S3 client whose requests are counted (see [`crate::calls`]).
pub fn s3(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(conf).interceptor(CountCalls).build())
}

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
            Err(e) => return Err(Error::backend("s3", format!("CreateBucket {name}"), e.into_service_error())),
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
            .map_err(|e| Error::backend("sqs", format!("GetQueueAttributes {name}-dlq"), e.into_service_error()))?
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
        crate::ledger::dynamodb::DynamoLedger::create_table(&aws_sdk_dynamodb::Client::new(conf), table).await?;
        done.push(format!("ledger table {table}"));
    }
    if let Some(url) = &what.sink {
        let table = strip(url, "dynamodb://", "--sink")?;
        crate::sink::dynamodb::DynamoSink::create_table(&aws_sdk_dynamodb::Client::new(conf), table).await?;
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
    let out =
        req.send().await.map_err(|e| Error::backend("sqs", format!("CreateQueue {name}"), e.into_service_error()))?;
    out.queue_url().map(str::to_string).ok_or_else(|| Error::NotFound(format!("URL of queue {name}")))
}
