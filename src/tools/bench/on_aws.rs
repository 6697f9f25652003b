//! The bench on AWS: a bucket, queue and tables made for each run, the requests `sluicebox plan`
//! predicts for it, and the run through the Lambda handlers (this process playing the service).

use std::path::Path;

#[cfg(feature = "lambda")]
use super::proc::{cpu_seconds, reset_peak_rss};
use super::Bench;
#[cfg(feature = "lambda")]
use super::Measurement;
use crate::backends::cloud::Cloud;
use crate::engine::Engine;
#[cfg(any(feature = "lambda", not(feature = "aws")))]
use crate::error::Error;
use crate::error::Result;
use crate::model::config::JobConfig;

/// The requests `sluicebox plan` predicts for the bench's AWS run (this process planning and
/// working with `bench.workers`, or the Lambda functions), and its Lambda GB-s (0 when not
/// on Lambda), at the mean latencies `cloud` simulates, if it does, else the typical ones.
pub(super) async fn predict(
    engine: &Engine,
    spec: &crate::engine::spec::JobSpec,
    input: &str,
    bench: &Bench,
    cloud: &Cloud,
) -> Result<(crate::backends::calls::ApiCalls, f64)> {
    use crate::tools::forecast::{Deployment, Runner};
    let args = [input.to_string()];
    let inputs = crate::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &args,
        spec.input.format,
        spec.input.compression,
    )
    .await?;
    let shape = crate::tools::forecast::dry_run(engine, spec, inputs).await?;
    let runner = match bench.lambda {
        true => Runner::Lambda {
            memory_mb: LAMBDA_MEMORY_MB as u32,
            architecture: "arm64".into(),
            concurrency: bench.workers.max(1) as u32,
        },
        false => Runner::Workers { here: bench.workers.max(1) as u32, elsewhere: 0, each: 0 },
    };
    let deployment = Deployment::of(Some(&engine.bucket_url), Some("sqs://"), Some("dynamodb://"), input, runner);
    #[cfg(feature = "aws")]
    let deployment = match cloud.simulated() {
        Some(layer) => Deployment { latency: crate::tools::forecast::Latencies::of(layer.setting()), ..deployment },
        None => deployment,
    };
    #[cfg(not(feature = "aws"))]
    let _ = cloud;
    let prices = crate::backends::cost::Prices::bundled();
    let forecast = crate::tools::forecast::forecast(shape, spec, deployment, &prices);
    tracing::info!("forecast:\n{forecast}");
    Ok((forecast.requests, forecast.lambda.map_or(0.0, |l| l.gb_seconds)))
}

/// Create a bucket, queue and tables for one AWS run, upload the input and the reference,
/// and point `config` at them.
#[cfg(feature = "aws")]
pub(super) async fn aws_backends(
    input_dir: &Path,
    run_dir: &Path,
    config: &mut JobConfig,
    bench: &Bench,
    cloud: &Cloud,
) -> Result<(Engine, String)> {
    let name = format!("sluicebox-bench-{}", chrono::Utc::now().timestamp_millis());
    let conf = cloud.sdk("--aws")?;
    let setup = crate::backends::setup::Setup {
        bucket: Some(format!("s3://{name}")),
        events: None,
        queue: Some(format!("sqs://{name}")),
        ledger: Some(format!("dynamodb://{name}-ledger")),
        sink: Some(format!("dynamodb://{name}-sink")),
        max_receives: 5,
        visibility: crate::backends::queue::DEFAULT_VISIBILITY,
    };
    crate::backends::setup::setup(conf, &setup).await?;
    let store = crate::backends::bucket::open(&format!("s3://{name}"), cloud)?;
    for (file, key) in [("orders.csv", "in/orders.csv"), ("financial.csv", "ref/financial.csv")] {
        crate::backends::bucket::upload_file(store.clone(), &input_dir.join(file), key).await?;
    }
    if let Some(e) = config.enrich.as_mut() {
        e.source = format!("s3://{name}/ref/financial.csv");
    }
    if config.sink.kind != "none" {
        config.sink.kind = "dynamodb".into();
        config.sink.table = Some(format!("{name}-sink"));
        // Unless asked for ordered writes: 25 items per BatchWriteItem, as the API-call
        // measurements in BENCHMARKS.md are made (ordered: a conditional PutItem per item).
        config.sink.ordered = bench.ordered;
        config.sink.in_flight = bench.in_flight;
    }
    let urls = crate::engine::BackendUrls {
        bucket: Some(format!("s3://{name}/out")),
        queue: setup.queue.clone(),
        ledger: setup.ledger.clone(),
        visibility: setup.visibility,
    };
    let input = format!("s3://{name}/in/orders.csv");
    Ok((Engine::with_backends(run_dir, &urls, &input, cloud.clone()).await?, input))
}

/// Memory of a task function, MB (the template's default: one full vCPU).
pub const LAMBDA_MEMORY_MB: f64 = 1769.0;

/// Run the job through the Lambda handlers on the resources [`aws_backends`] made: upload the
/// job file, hand on-object the S3 event of the input, then play the event source mapping for
/// `bench.workers` on-task functions at once (batches of one task, as the template sets),
/// deleting what a handler did not report failed. The API calls counted include the
/// mapping's receives and deletes; GB-seconds are the invocations' wall time × memory (on
/// this machine's shared cores: an upper bound of what one vCPU each would take).
#[cfg(feature = "lambda")]
pub(super) async fn through_lambda(
    engine: &Engine,
    config: &JobConfig,
    input: &str,
    run_dir: &Path,
    bench: &Bench,
    cloud: &Cloud,
) -> Result<Measurement> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let bucket =
        input.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(b, _)| b.to_string()).unwrap_or_default();
    let text = toml::to_string(config).map_err(|e| Error::internal("toml", "job file", e))?;
    let store = crate::backends::bucket::open(&format!("s3://{bucket}"), cloud)?;
    crate::backends::bucket::put(store.as_ref(), "config/job.toml", text.into_bytes()).await?;
    let head = crate::backends::bucket::get_opt_head(store.as_ref(), "in/orders.csv")
        .await?
        .ok_or_else(|| Error::NotFound(format!("s3://{bucket}/in/orders.csv")))?;
    let settings = |n: usize| {
        crate::lambda::Settings::from_vars(|v| {
            Some(match v {
                "SLUICEBOX_BUCKET" => format!("s3://{bucket}/out"),
                "SLUICEBOX_QUEUE" => format!("sqs://{bucket}"),
                "SLUICEBOX_LEDGER" => format!("dynamodb://{bucket}-ledger"),
                "SLUICEBOX_JOB" => format!("s3://{bucket}/config/job.toml"),
                "SLUICEBOX_INPUT_PREFIX" => format!("s3://{bucket}/in/"),
                "SLUICEBOX_SCRATCH" => run_dir.join(format!("function-{n}")).display().to_string(),
                "SLUICEBOX_WORKERS" => "1".into(),
                // The queue's, as `aws_backends` made it: tasks outlasting it are kept invisible.
                "SLUICEBOX_VISIBILITY_SECS" => crate::backends::queue::DEFAULT_VISIBILITY.as_secs().to_string(),
                _ => return None,
            })
        })
    };
    let mut functions = Vec::new();
    for n in 0..bench.workers.max(1) {
        functions.push(crate::lambda::Function::new(settings(n)?, cloud.clone()).await?);
    }
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": "in/orders.csv", "size": head.size, "eTag": head.e_tag.unwrap_or_default()}}
    }]});
    reset_peak_rss();
    let cpu = cpu_seconds();
    let started = std::time::Instant::now();
    let answer = functions[0].on_object(event).await?;
    let job_id = answer["started"][0]["job_id"]
        .as_str()
        .ok_or_else(|| Error::internal("bench", "on-object", format!("started no job: {answer}")))?
        .to_string();
    let billed_ms = AtomicU64::new(started.elapsed().as_millis() as u64);
    let esm_receives = AtomicU64::new(0);
    let esm_deletes = AtomicU64::new(0);
    let (tasks, task_ms) = (AtomicU64::new(0), AtomicU64::new(0));
    let sqs = crate::backends::aws::sqs(cloud.sdk("--lambda")?);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&bucket)
        .send()
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Sqs, "GetQueueUrl", e.into_service_error()))?
        .queue_url
        .unwrap_or_default();
    let done = || async {
        matches!(engine.ledger.get_job(&job_id).await, Ok(Some(j)) if j.status == crate::backends::ledger::JobStatus::Complete || j.status == crate::backends::ledger::JobStatus::Failed)
    };
    futures::future::join_all(functions.iter().map(|f| async {
        while !done().await {
            esm_receives.fetch_add(1, Ordering::Relaxed);
            let got = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await;
            let messages = match got {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("receive: {e}");
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let records: Vec<serde_json::Value> = messages
                .iter()
                .map(|m| {
                    let count = m
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                        .cloned()
                        .unwrap_or_else(|| "1".into());
                    serde_json::json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                        "attributes": {"ApproximateReceiveCount": count}, "eventSource": "aws:sqs"})
                })
                .collect();
            let Ok(event) = serde_json::from_value(serde_json::json!({ "Records": records })) else { continue };
            let invoked = std::time::Instant::now();
            let response = f.on_task(event, std::time::Duration::from_secs(900)).await;
            let ms = invoked.elapsed().as_millis() as u64;
            billed_ms.fetch_add(ms, Ordering::Relaxed);
            tasks.fetch_add(1, Ordering::Relaxed);
            task_ms.fetch_add(ms, Ordering::Relaxed);
            let failed: Vec<&str> = response.batch_item_failures.iter().map(|b| b.item_identifier.as_str()).collect();
            for m in messages.iter().filter(|m| !failed.contains(&m.message_id.as_deref().unwrap_or_default())) {
                esm_deletes.fetch_add(1, Ordering::Relaxed);
                let receipt = m.receipt_handle.clone().unwrap_or_default();
                let _ = sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await;
            }
        }
    }))
    .await;
    let cpu_s = cpu_seconds() - cpu;
    let objects = crate::batch::job::JobObjects::new(engine.bucket.clone(), &job_id);
    let summary =
        objects.summary().await?.ok_or_else(|| Error::internal("bench", "through Lambda", "the job failed"))?;
    let mut calls = summary.api_calls.clone();
    *calls.entry("lambda-esm.sqs.ReceiveMessage".into()).or_default() += esm_receives.load(Ordering::Relaxed);
    *calls.entry("lambda-esm.sqs.DeleteMessage".into()).or_default() += esm_deletes.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut m = Measurement::of(&summary, bench, "load", head.size, functions.len(), seconds, cpu_s, "lambda", calls);
    m.lambda_gb_s = billed_ms.load(Ordering::Relaxed) as f64 / 1000.0 * LAMBDA_MEMORY_MB / 1024.0;
    m.lambda_tasks = tasks.load(Ordering::Relaxed);
    m.lambda_task_ms = task_ms.load(Ordering::Relaxed) as f64 / m.lambda_tasks.max(1) as f64;
    if let Some(layer) = cloud.simulated() {
        let (n, drawn, waited) = layer.waits();
        (m.simulated_waits, m.simulated_drawn_ms, m.simulated_waited_ms) = (n, drawn * 1e3, waited * 1e3);
    }
    m.ordered = config.sink.ordered;
    m.in_flight = config.sink.in_flight.unwrap_or(match config.sink.ordered {
        true => crate::backends::sink::DEFAULT_IN_FLIGHT_ORDERED,
        false => crate::backends::sink::DEFAULT_IN_FLIGHT_UNORDERED,
    }) as u64;
    Ok(m)
}

#[cfg(not(feature = "aws"))]
pub(super) async fn aws_backends(
    _: &Path,
    _: &Path,
    _: &mut JobConfig,
    _: &Bench,
    _: &Cloud,
) -> Result<(Engine, String)> {
    Err(Error::config("--aws", "this build lacks the `aws` feature"))
}
