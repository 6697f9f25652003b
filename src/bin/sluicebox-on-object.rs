//! Lambda function: an S3 object created under the input prefix (the event delivered
//! directly, through SQS or through SNS) starts its job. See `sluicebox::lambda`.

use lambda_runtime::{service_fn, LambdaEvent};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sluicebox::lambda::init_tracing();
    let function = std::sync::Arc::new(sluicebox::lambda::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let function = function.clone();
        async move { function.on_object(event.payload).await.map_err(sluicebox::lambda::diagnostic) }
    }))
    .await
}
