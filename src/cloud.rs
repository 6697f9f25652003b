//! What backends need to reach a cloud: the AWS SDK configuration (feature `aws`), loaded once
//! by the caller (the binary, a Lambda main, a test) and passed to every backend that opens a
//! client. The library never loads it behind the caller's back.

#[cfg(feature = "aws")]
use crate::error::{Error, Result};

/// Cloud configuration for the backends; empty by default (the embedded engine needs none).
#[derive(Clone, Debug, Default)]
pub struct Cloud {
    #[cfg(feature = "aws")]
    aws: Option<aws_config::SdkConfig>,
}

impl Cloud {
    /// No cloud: only the embedded backends can be opened.
    pub fn none() -> Self {
        Cloud::default()
    }

    /// The AWS backends, with this SDK configuration.
    #[cfg(feature = "aws")]
    pub fn aws(conf: aws_config::SdkConfig) -> Self {
        Cloud { aws: Some(conf) }
    }

    /// The AWS SDK configuration; `key` names the setting that asked for an AWS backend.
    #[cfg(feature = "aws")]
    pub fn sdk(&self, key: &str) -> Result<&aws_config::SdkConfig> {
        self.aws.as_ref().ok_or_else(|| {
            Error::config(key, "an AWS backend needs the AWS configuration, which this engine was not given")
        })
    }
}
