//! The forecast's Lambda time: the records' CPU time, the sink's requests `[sink] in_flight`
//! at a time, and every other request one after another, each at its service's mean latency.

use serde::{Deserialize, Serialize};

use super::{Requests, Shape, CPU_PER_RECORD_S};
use crate::backends::calls::ApiCalls;
use crate::backends::cost::LambdaUsage;
use crate::backends::latency::Latency;
use crate::engine::spec::JobSpec;

/// The time one sink request adds beside its latency (the SDK building, serializing and
/// signing it and reading its answer), release build: a conditional `PutItem` of one item, a
/// `BatchWriteItem` of 25. Fitted to the measured curve (BENCHMARKS.md, "Lambda time and the
/// sink's concurrency"): a `PutItem` takes about 52 µs of CPU, of which about 30 µs lengthen the
/// function (the rest overlaps other requests' waits); a `BatchWriteItem` 260 µs.
const CPU_PER_REQUEST_S: [(&str, f64); 2] = [("dynamodb.PutItem", 30e-6), ("dynamodb.BatchWriteItem", 260e-6)];

/// The mean latency of one request inside a region, per service, seconds (the means of
/// [`Latency::typical`]'s distributions unless a measurement sets them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// DynamoDB.
    pub dynamodb_s: f64,
    /// S3.
    pub s3_s: f64,
    /// SQS.
    pub sqs_s: f64,
    /// Any other service.
    pub other_s: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            dynamodb_s: Latency::DYNAMODB.mean_s(),
            s3_s: Latency::S3.mean_s(),
            sqs_s: Latency::SQS.mean_s(),
            other_s: Latency::OTHER.mean_s(),
        }
    }
}

impl Latencies {
    /// The means of a simulated latency's distributions (a service it does not slow: 0).
    pub fn of(sim: &crate::backends::latency::SimulatedLatency) -> Self {
        let mean = |service: &str| sim.of(service).map_or(0.0, |l| l.mean_s());
        Latencies { dynamodb_s: mean("dynamodb"), s3_s: mean("s3"), sqs_s: mean("sqs"), other_s: mean("other") }
    }

    /// The mean latency of `op` (`"service.Operation"`).
    fn of_op(&self, op: &str) -> f64 {
        match op.split('.').next().unwrap_or_default() {
            "dynamodb" => self.dynamodb_s,
            "s3" => self.s3_s,
            "sqs" => self.sqs_s,
            _ => self.other_s,
        }
    }
}

/// Where Lambda time goes: the records' CPU time, the sink's requests `in_flight` at a time,
/// and every other request one after another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LambdaTime {
    /// CPU time of the records, seconds.
    pub cpu_s: f64,
    /// The sink's DynamoDB write requests.
    pub sink_requests: u64,
    /// Of them in flight at once (`[sink] in_flight`).
    pub in_flight: u64,
    /// A sink request's mean latency, seconds.
    pub sink_latency_s: f64,
    /// Every other request (ledger, bucket, queue, publishing).
    pub other_requests: u64,
    /// Their latencies one after another, seconds.
    pub other_s: f64,
}

impl LambdaTime {
    /// The sink's time: its requests ÷ in flight × a request's mean latency.
    pub fn sink_s(&self) -> f64 {
        self.sink_requests as f64 / self.in_flight.max(1) as f64 * self.sink_latency_s
    }

    /// All of it, seconds.
    pub fn seconds(&self) -> f64 {
        self.cpu_s + self.sink_s() + self.other_s
    }

    fn add(&mut self, other: &LambdaTime) {
        self.cpu_s += other.cpu_s;
        self.sink_requests += other.sink_requests;
        self.other_requests += other.other_requests;
        self.other_s += other.other_s;
        (self.in_flight, self.sink_latency_s) = (other.in_flight, other.sink_latency_s);
    }
}

/// The sink's DynamoDB requests in `calls` (what `Requests::sink` counts as `dynamodb.*`).
fn dynamodb_sink_requests(calls: &ApiCalls) -> u64 {
    calls.iter().filter(|(op, _)| op.starts_with("dynamodb.")).map(|(_, n)| n).sum()
}

/// A task's time on AWS: its records' CPU time and its sink requests', its sink's requests
/// `[sink] in_flight` at a time, its publishing one request after another.
pub(super) fn task_time(spec: &JobSpec, latency: &Latencies, records: u64, kept: u64) -> LambdaTime {
    let mut sink = Requests::default();
    sink.sink(spec, kept);
    let table = dynamodb_sink_requests(&sink.0);
    let others: Vec<(&String, &u64)> = sink.0.iter().filter(|(op, _)| !op.starts_with("dynamodb.")).collect();
    let requests_cpu: f64 =
        CPU_PER_REQUEST_S.iter().map(|(op, s)| sink.0.get(*op).copied().unwrap_or(0) as f64 * s).sum();
    LambdaTime {
        cpu_s: records as f64 * CPU_PER_RECORD_S + requests_cpu,
        sink_requests: table,
        in_flight: spec.sink.in_flight() as u64,
        sink_latency_s: latency.dynamodb_s,
        other_requests: others.iter().map(|(_, n)| **n).sum(),
        other_s: others.iter().map(|(op, n)| **n as f64 * latency.of_op(op)).sum(),
    }
}

/// Lambda invocations and time: on-object once, on-task once per chunk. Each task's time is
/// [`task_time`]; the job's other requests (planning, the ledger, the bucket, the queue, the
/// gather) are made one after another, each at its service's mean latency.
pub(super) fn lambda_time(shape: &Shape, spec: &JobSpec, requests: &ApiCalls, latency: &Latencies) -> LambdaTime {
    let mut time = LambdaTime { in_flight: spec.sink.in_flight() as u64, ..LambdaTime::default() };
    let mut in_tasks = ApiCalls::new();
    for c in &shape.chunks {
        let kept = shape.sample.kept(c.records);
        time.add(&task_time(spec, latency, c.records, kept));
        let mut sink = Requests::default();
        sink.sink(spec, kept);
        for (op, n) in sink.0 {
            *in_tasks.entry(op).or_default() += n;
        }
    }
    for (op, n) in requests {
        let rest = n.saturating_sub(in_tasks.get(op).copied().unwrap_or(0));
        time.other_requests += rest;
        time.other_s += rest as f64 * latency.of_op(op);
    }
    time.sink_latency_s = latency.dynamodb_s;
    time
}

pub(super) fn lambda_usage(shape: &Shape, time: &LambdaTime, memory_mb: u32, architecture: &str) -> LambdaUsage {
    LambdaUsage {
        invocations: shape.chunks.len() as u64 + 1,
        gb_seconds: time.seconds() * f64::from(memory_mb) / 1024.0,
        architecture: architecture.to_string(),
    }
}
