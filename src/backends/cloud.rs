//! What backends need to reach a cloud: the AWS SDK configuration (feature `aws`), given by
//! the caller (a test, a Lambda main) or loaded on first use ([`Cloud::lazy`]: the command
//! line), and passed to every backend that opens a client. Nothing decides "is this AWS?"
//! ahead of time: a local run never opens an AWS backend, so it never loads the configuration.

#[cfg(feature = "aws")]
use crate::error::{Error, Result};

/// Cloud configuration for the backends; empty by default (the embedded engine needs none).
#[derive(Clone, Debug, Default)]
pub struct Cloud {
    #[cfg(feature = "aws")]
    aws: std::sync::Arc<std::sync::OnceLock<aws_config::SdkConfig>>,
    /// Load the AWS configuration from the standard chain when it is first asked for.
    #[cfg(feature = "aws")]
    lazy: bool,
    /// Simulated latency on every request (tests and the bench), once the configuration is
    /// known to have it.
    #[cfg(feature = "aws")]
    simulated: std::sync::Arc<std::sync::OnceLock<Option<crate::backends::aws::latency::SimulatedLayer>>>,
}

impl Cloud {
    /// No cloud: only the embedded backends can be opened.
    pub fn none() -> Self {
        Cloud::default()
    }

    /// The AWS configuration from the standard chain (environment, profile, role), loaded the
    /// first time a backend asks for it, with requests retried up to 8 times unless
    /// `AWS_MAX_ATTEMPTS` says otherwise; with the simulated latency that
    /// `SLUICEBOX_SIMULATED_LATENCY` sets, if it is set (a test and bench tool: see
    /// [`crate::backends::latency::SimulatedLatency::parse`]). Without the `aws` feature:
    /// [`Cloud::none`].
    pub fn lazy() -> Self {
        #[cfg(feature = "aws")]
        return Cloud { lazy: true, ..Cloud::default() };
        #[cfg(not(feature = "aws"))]
        Cloud::none()
    }

    /// The AWS backends, with this SDK configuration.
    #[cfg(feature = "aws")]
    pub fn aws(conf: aws_config::SdkConfig) -> Self {
        Cloud { aws: std::sync::Arc::new(conf.into()), simulated: std::sync::Arc::new(None.into()), lazy: false }
    }

    /// The AWS backends, with this SDK configuration and `latency` added to every request
    /// (S3 through `object_store` included): for tests and the bench.
    #[cfg(feature = "aws")]
    pub fn aws_simulated(conf: aws_config::SdkConfig, latency: crate::backends::latency::SimulatedLatency) -> Self {
        let layer = crate::backends::aws::latency::SimulatedLayer::new(latency);
        let conf = layer.sdk_config(&conf);
        Cloud { aws: std::sync::Arc::new(conf.into()), simulated: std::sync::Arc::new(Some(layer).into()), lazy: false }
    }

    /// [`Cloud::aws`], or [`Cloud::aws_simulated`] when `SLUICEBOX_SIMULATED_LATENCY` is set
    /// (the Lambda mains); a bad value of it is an error naming it.
    #[cfg(feature = "aws")]
    pub fn aws_from_env(conf: aws_config::SdkConfig) -> Result<Self> {
        Ok(match crate::backends::latency::SimulatedLatency::from_env()? {
            Some(latency) => Cloud::aws_simulated(conf, latency),
            None => Cloud::aws(conf),
        })
    }

    /// The simulated latency's layer, when this cloud has one.
    #[cfg(feature = "aws")]
    pub fn simulated(&self) -> Option<&crate::backends::aws::latency::SimulatedLayer> {
        self.simulated.get().and_then(Option::as_ref)
    }

    /// The AWS SDK configuration; `key` names the setting that asked for an AWS backend.
    #[cfg(feature = "aws")]
    pub fn sdk(&self, key: &str) -> Result<&aws_config::SdkConfig> {
        if let Some(conf) = self.aws.get() {
            return Ok(conf);
        }
        if !self.lazy {
            return Err(Error::config(
                key,
                "an AWS backend needs the AWS configuration, which this engine was not given",
            ));
        }
        let simulated = crate::backends::latency::SimulatedLatency::from_env()?
            .map(crate::backends::aws::latency::SimulatedLayer::new);
        let conf = self.aws.get_or_init(|| {
            let conf = load();
            match &simulated {
                Some(layer) => layer.sdk_config(&conf),
                None => conf,
            }
        });
        // Set with the configuration: a second caller's layer is the same setting.
        let _ = self.simulated.set(simulated);
        Ok(conf)
    }
}

/// Load the standard chain's configuration from synchronous code, on any runtime or none: on a
/// thread of its own with a runtime of its own (it reads the environment and profile files;
/// clients made from it run on their caller's runtime).
#[cfg(feature = "aws")]
fn load() -> aws_config::SdkConfig {
    tracing::info!("loading the AWS configuration");
    let max_attempts = std::env::var_os("AWS_MAX_ATTEMPTS").is_none().then_some(8);
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let rt = rt.expect("a runtime to load the AWS configuration on");
            rt.block_on(crate::backends::aws::sdk_config(max_attempts))
        })
        .join()
        .expect("loading the AWS configuration does not panic")
    })
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;

    #[test]
    fn none_refuses_naming_the_key_and_lazy_loads_once() {
        let err = Cloud::none().sdk("sink.table").unwrap_err().to_string();
        assert!(err.contains("sink.table"), "{err}");
        // No traffic leaves loopback: no metadata probe for a region or credentials.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_REGION", "us-east-1");
        let lazy = Cloud::lazy();
        let copy = lazy.clone();
        let first = lazy.sdk("--queue").unwrap() as *const _;
        assert_eq!(first, copy.sdk("--ledger").unwrap() as *const _, "clones share one load");
    }
}
