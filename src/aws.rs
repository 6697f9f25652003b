//! The AWS SDK configuration shared by the AWS backends (feature `aws`).

/// Load the standard AWS configuration: region, profile, credentials and endpoint from the
/// environment and the shared config files, as every AWS tool does.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
