//! Lambda function: a batch of one shard's Kinesis records, or of an SQS queue's messages, from
//! an event source mapping, is written into files under `SLUICEBOX_STREAM_TO` and into the
//! job's sink before the invocation returns; what failed comes back as `batchItemFailures` (a
//! shard's first sequence number, or message ids). See `sluicebox::lambda`.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sluicebox::lambda::init_tracing();
    let function = std::sync::Arc::new(sluicebox::lambda::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move {
            let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            let remaining = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            function.on_stream_event(event.payload, remaining).await.map_err(sluicebox::lambda::diagnostic)
        }
    }))
    .await
}
