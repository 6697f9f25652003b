//! The AWS SDK clients the AWS backends share (feature `aws`): the configuration, loaded once
//! by the caller and passed in, and clients whose every request is counted.

pub mod dynamodb;
pub mod latency;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};

use crate::error::{Error, Result};

/// Load the standard AWS configuration: region, profile, credentials and endpoint from the
/// environment and the shared config files, as every AWS tool does. The binary calls this
/// once and hands the result to every backend.
///
/// Throttling and server errors are retried by the SDK with jittered exponential backoff, up
/// to `max_attempts` per request (`None`: as the environment or profile says, e.g.
/// `AWS_MAX_ATTEMPTS`, else the SDK's default).
pub async fn sdk_config(max_attempts: Option<u32>) -> aws_config::SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let loader = match max_attempts {
        Some(n) => loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(n.max(1))),
        None => loader,
    };
    loader.load().await
}

/// Counts every request attempt in the current task's [`crate::backends::calls::Tally`].
#[derive(Debug)]
struct CountCalls;

impl aws_smithy_runtime_api::client::interceptors::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "sluicebox::backends::calls"
    }

    fn read_before_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(m) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() {
            crate::backends::calls::count(m.service(), m.name());
        }
        Ok(())
    }
}

/// A DynamoDB client whose requests are counted (see [`crate::backends::calls`]).
pub fn dynamodb(conf: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An SQS client whose requests are counted (see [`crate::backends::calls`]).
pub fn sqs(conf: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An SNS client whose requests are counted (see [`crate::backends::calls`]).
pub fn sns(conf: &aws_config::SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::from_conf(aws_sdk_sns::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// A Kinesis client whose requests are counted (see [`crate::backends::calls`]).
pub fn kinesis(conf: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(aws_sdk_kinesis::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An S3 client whose requests are counted (see [`crate::backends::calls`]).
pub fn s3(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(conf).interceptor(CountCalls).build())
}

/// An error from an AWS service, with everything the SDK knows of it: an error the SDK does
/// not model displays only as `unhandled error (ValidationException)`, and its message (what
/// a person needs) is further down the chain.
pub fn service_error(
    backend: crate::error::Backend,
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let full = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    Error::backend(backend, context, full)
}

/// An `object_store` S3 client for `bucket`, configured from the SDK configuration (region,
/// endpoint, credentials) rather than from the environment, and counted (see
/// [`crate::backends::calls`]); its requests go through `latency` when given one (tests and
/// the bench).
pub fn s3_store(
    conf: &aws_config::SdkConfig,
    bucket: &str,
    latency: Option<&latency::SimulatedLayer>,
) -> Result<crate::backends::calls::Counted<AmazonS3>> {
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    if let Some(layer) = latency {
        builder = builder.with_http_connector(layer.s3_connector());
    }
    if let Some(region) = conf.region() {
        builder = builder.with_region(region.as_ref());
    }
    if let Some(endpoint) = conf.endpoint_url() {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(provider) = conf.credentials_provider() {
        builder = builder.with_credentials(Arc::new(SdkCredentials { provider, cached: Default::default() }));
    }
    let store = builder.build().map_err(|e| Error::config("bucket", format!("s3://{bucket}: {e}")))?;
    Ok(crate::backends::calls::Counted(store))
}

/// The SDK's credentials for `object_store`, kept until a minute before they expire.
#[derive(Debug)]
struct SdkCredentials {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        use aws_credential_types::provider::ProvideCredentials;
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            if expiry.is_none_or(|e| e > SystemTime::now() + Duration::from_secs(60)) {
                return Ok(credential.clone());
            }
        }
        let got = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        let credential = Arc::new(AwsCredential {
            key_id: got.access_key_id().to_string(),
            secret_key: got.secret_access_key().to_string(),
            token: got.session_token().map(str::to_string),
        });
        *cached = Some((credential.clone(), got.expiry()));
        Ok(credential)
    }
}
