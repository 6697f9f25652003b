//! Lambda time under simulated latency (`SLUICEBOX_SIMULATED_LATENCY`'s layer, on the
//! emulator): the DynamoDB sink keeps `[sink] in_flight` requests in flight, so a write is no
//! longer the sum of its requests' latencies; throttled writes are all retried; and `plan`'s
//! forecast of the Lambda GB-s comes within 15% of what the Lambda handlers measure, for both
//! sink modes.
#![cfg(feature = "aws")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluicebox::backends::cloud::Cloud;
use sluicebox::backends::latency::{Latency, SimulatedLatency};
use sluicebox::backends::sink::dynamodb::DynamoSink;
use sluicebox::backends::sink::{Sink, SinkItem};

use crate::common::{emulator, unique};

fn items(n: usize, job: u64) -> Vec<SinkItem> {
    (0..n)
        .map(|i| {
            let mut record = sluicebox::model::record::Record::new();
            record.insert("n".into(), serde_json::json!(i));
            SinkItem { key: format!("k{i:05}"), record: record.into(), seq: i as u64, job }
        })
        .collect()
}

fn fixed(ms: u64) -> SimulatedLatency {
    let mut sim = SimulatedLatency::parse(&format!("dynamodb={ms}ms")).unwrap();
    sim.stand_in = Some("stand-in-*".into());
    sim
}

/// 160 items, 10 ms a request: one request in flight takes at least 160 × 10 ms; twenty save
/// most of those latencies, in both modes. The savings are what is asserted, not ratios of the
/// times: a debug build's own time per request, on a busy machine, is a large share of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dynamodb_keeps_in_flight_requests_at_once_under_latency() {
    let cloud = Cloud::aws_simulated(emulator().await, fixed(10));
    let client = sluicebox::backends::aws::dynamodb(cloud.sdk("test").unwrap());
    let time = |sink: DynamoSink| async move {
        // The table's capacity is read (from the emulator, at its own pace) before the clock starts.
        sink.provisioned_capacity().await;
        let started = Instant::now();
        sink.write(items(160, 1)).await.unwrap();
        let requests = sink.stats().requests.load(Ordering::Relaxed);
        (started.elapsed(), requests)
    };
    let table = unique("stand-in");
    let (one, requests) = time(DynamoSink::new(client.clone(), &table).with_in_flight(1)).await;
    assert_eq!(requests, 160, "ordered: a PutItem per item");
    assert!(one >= Duration::from_millis(1600), "one at a time: the sum of the latencies, {one:?}");
    let (twenty, _) = time(DynamoSink::new(client.clone(), &table).with_in_flight(20)).await;
    // Twenty at once wait 8 latencies where one at a time waits 160: at least 100 saved.
    assert!(one.saturating_sub(twenty) >= Duration::from_millis(1000), "20 in flight: {twenty:?} against {one:?}");
    // Unordered: 7 BatchWriteItems of up to 25, 100 ms each here; one at a time they wait 7
    // latencies, four at once 2: at least 3 saved.
    let cloud = Cloud::aws_simulated(emulator().await, fixed(100));
    let client = sluicebox::backends::aws::dynamodb(cloud.sdk("test").unwrap());
    let (one, requests) = time(DynamoSink::new(client.clone(), &table).unordered().with_in_flight(1)).await;
    assert_eq!(requests, 7);
    assert!(one >= Duration::from_millis(700), "{one:?}");
    let (four, _) = time(DynamoSink::new(client, &table).unordered().with_in_flight(4)).await;
    assert!(one.saturating_sub(four) >= Duration::from_millis(300), "4 in flight: {four:?} against {one:?}");
}

/// A table that takes 40 write units a second (the layer refuses the rest as DynamoDB does,
/// and the SDK does not retry them itself): 16 conditional writes in flight lose nothing,
/// double nothing, and the newest version of each item stays. The capacity is below what the
/// emulator answers even on a busy machine, so the writes are throttled whatever its speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dynamodb_throttled_in_flight_writes_lose_and_double_nothing() {
    crate::common::assert_emulator();
    let conf = sluicebox::backends::aws::sdk_config(Some(1)).await;
    let sim = SimulatedLatency::parse("dynamodb=2ms/10ms,dynamodb_wcu=40").unwrap();
    let cloud = Cloud::aws_simulated(conf, sim);
    let client = sluicebox::backends::aws::dynamodb(cloud.sdk("test").unwrap());
    let table = unique("throttled-in-flight");
    DynamoSink::create_table(&client, &table).await.unwrap();
    let sink = DynamoSink::new(client, &table).with_in_flight(16);
    // A newer job first, then an older one: the older one's writes are refused by condition.
    sink.write(items(200, 2)).await.unwrap();
    let older = items(200, 1).into_iter().map(|mut item| {
        let mut record = sluicebox::model::record::Record::new();
        record.insert("n".into(), serde_json::json!(-1));
        item.record = record.into();
        item
    });
    sink.write(older.collect()).await.unwrap();
    let stats = sink.stats();
    assert!(stats.throttled_requests.load(Ordering::Relaxed) > 0, "the capacity must have throttled");
    let stored = sink.read_all().await.unwrap();
    assert_eq!(stored.len(), 200, "every item once");
    assert!(stored.values().all(|r| r["n"].as_i64().unwrap() >= 0), "the newer version of every item stays");
}

#[test]
fn sink_in_flight_is_validated_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "257"] {
        let text = format!("[sink]\ntype = \"dynamodb\"\ntable = \"orders\"\nin_flight = {bad}\n");
        let err = sluicebox::model::config::JobConfig::from_toml(&text, "job.toml")
            .and_then(|c| c.validate(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sink.in_flight"), "{bad}: {err}");
    }
    let text = "[sink]\ntype = \"dynamodb\"\ntable = \"orders\"\nin_flight = 8\n";
    let spec = sluicebox::model::config::JobConfig::from_toml(text, "job.toml").unwrap().validate(dir.path()).unwrap();
    assert_eq!(spec.sink.in_flight(), 8);
}

/// A small orders job through the Lambda handlers on the emulator, S3 and SQS at their typical
/// latencies, DynamoDB at 50 ms median and 250 ms p99 (the sink table's writes answered by the
/// layer: the emulator serves DynamoDB one request at a time, a few ms each, which would hide
/// the latency measured): its GB-s within 15% of `plan`'s forecast at those latencies. The
/// latency is ten times the typical one so that a debug build's own time per request (the
/// SDK's service crates are built unoptimized for tests) stays small beside it, as a release
/// build's does beside the typical latency (BENCHMARKS.md has those figures). A timing test:
/// `.config/nextest.toml` runs it alone, and again if a busy machine slowed it.
#[cfg(all(feature = "lambda", feature = "bench"))]
async fn forecast_against_measured(records: u64, ordered: bool, in_flight: usize) {
    let mut sim = SimulatedLatency::parse("typical, dynamodb=50ms/250ms").unwrap();
    sim.stand_in = Some("*-sink".into());
    assert_eq!(sim.of("s3"), Some(Latency::S3));
    let cloud = Cloud::aws_simulated(emulator().await, sim);
    let dir = tempfile::tempdir().unwrap();
    let bench = sluicebox::tools::bench::Bench {
        records,
        workers: 1,
        sink: true,
        aws: true,
        lambda: true,
        keys: sluicebox::tools::bench::KeyOrder::Random,
        update_share: 0.0,
        gzip: false,
        duckdb_python: None,
        ordered,
        in_flight: Some(in_flight),
    };
    let measured = sluicebox::tools::bench::run(dir.path(), &bench, &cloud, &dir.path().join("m.csv")).await.unwrap();
    let m = &measured[0];
    let ratio = m.forecast_lambda_gb_s / m.lambda_gb_s;
    println!("{m}");
    assert!(m.written > 0 && m.written + m.rejected == records);
    assert!(
        (0.85..=1.15).contains(&ratio),
        "forecast {} GB-s, measured {} GB-s\n{m}",
        m.forecast_lambda_gb_s,
        m.lambda_gb_s
    );
}

#[cfg(all(feature = "lambda", feature = "bench"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_forecast_within_15_percent_of_measured_with_the_ordered_sink() {
    forecast_against_measured(1_500, true, 8).await;
}

#[cfg(all(feature = "lambda", feature = "bench"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_forecast_within_15_percent_of_measured_with_the_unordered_sink() {
    forecast_against_measured(5_000, false, 1).await;
}
