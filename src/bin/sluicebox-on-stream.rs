//! Lambda function: a batch of one shard's Kinesis records, from the event source mapping, is
//! written into files under `SLUICEBOX_STREAM_TO` before the invocation returns; a shard whose
//! batch failed comes back from its first record (`ReportBatchItemFailures`). See
//! `sluicebox::lambda`.

use aws_lambda_events::event::kinesis::KinesisEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sluicebox::lambda::init_tracing();
    let function = std::sync::Arc::new(sluicebox::lambda::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| {
        let function = function.clone();
        async move {
            let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            let remaining = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            Ok::<_, lambda_runtime::Error>(function.on_stream(event.payload, remaining).await)
        }
    }))
    .await
}
