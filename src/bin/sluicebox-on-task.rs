//! Lambda function: a batch of task messages from the task queue is worked within the
//! invocation's time; the tasks not done come back (`ReportBatchItemFailures`). See
//! `sluicebox::lambda`.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sluicebox::lambda::init_tracing();
    let function = std::sync::Arc::new(sluicebox::lambda::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let function = function.clone();
        async move {
            let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            let remaining = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            Ok::<_, lambda_runtime::Error>(function.on_task(event.payload, remaining).await)
        }
    }))
    .await
}
