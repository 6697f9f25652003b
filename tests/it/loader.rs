//! The loader's figures: a batch job's summary and status say what its sink writes cost
//! (requests, items, write units, throttling), carried chunk by chunk through the ledger; a
//! table's capacity mode is chosen when it is created; and the DynamoDB sink paces its writes
//! at a provisioned table's capacity instead of finding it by being throttled.

use sluicebox::batch::job::{RunOptions, Summary};
use sluicebox::engine::Engine;

/// A CSV of `n` records keyed by `id`, and a job file for it with `sink` as its `[sink]`, in
/// chunks of 100 records.
fn job(dir: &std::path::Path, n: u64, sink: &str) -> (sluicebox::engine::spec::JobSpec, String) {
    let csv: String =
        std::iter::once("id,note\n".to_string()).chain((0..n).map(|i| format!("{i},note {i}\n"))).collect();
    let input = dir.join("items.csv");
    std::fs::write(&input, csv).unwrap();
    let toml = format!("[input]\nformat = \"csv\"\n[chunking]\nrecords = 100\n[key]\nfields = [\"id\"]\n{sink}\n");
    let spec = sluicebox::model::config::JobConfig::from_toml(&toml, "job.toml").unwrap().validate(dir).unwrap();
    (spec, input.display().to_string())
}

async fn run(engine: &Engine, spec: &sluicebox::engine::spec::JobSpec, input: &str) -> Summary {
    let inputs = sluicebox::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        &[input.to_string()],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    sluicebox::batch::job::run(engine, spec, inputs, &RunOptions::default()).await.unwrap()
}

/// A local job into SQLite: the summary counts the sink's write requests (batches staged) and
/// items, with no write units (`null`: SQLite has none) and no throttling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_job_into_sqlite_reports_its_sink_writes_without_write_units() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, input) = job(dir.path(), 1000, "[sink]\ntype = \"sqlite\"\ntable = \"items\"\nbatch = 50");
    let engine = Engine::local(dir.path()).unwrap();
    let summary = run(&engine, &spec, &input).await;
    let f = summary.sink_figures.clone().expect("a SQLite sink counts its writes");
    assert_eq!(f.items_written, 1000, "{f:?}");
    assert_eq!(f.requests, 20, "10 chunks of 100 records in batches of 50: {f:?}");
    assert_eq!((f.write_units, f.throttled_requests, f.retried_items), (None, 0, 0));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["sink_figures"]["write_units"], serde_json::Value::Null);
    assert_eq!(json["sink_figures"]["items_written"], 1000);
    assert!(summary.to_string().contains("sink writes: 20 write requests, 1,000 items written, 0 throttled"));
    let status = sluicebox::batch::job::status::status(&engine, &summary.job_id).await.unwrap();
    assert_eq!(status.sink_figures.as_ref(), Some(&f), "status shows the summary's figures");
    assert!(status.to_string().contains("sink:    20 write requests"), "{status}");
}

/// `[sink] writers`: the processes sharing a provisioned table's capacity, at least one.
#[test]
fn sink_writers_are_checked_and_default_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |sink: &str| {
        let toml = format!("[input]\nformat = \"csv\"\n[sink]\ntype = \"sqlite\"\n{sink}\n");
        sluicebox::model::config::JobConfig::from_toml(&toml, "job.toml").unwrap().validate(dir.path())
    };
    assert_eq!(spec("").unwrap().sink.writers.get(), 1);
    assert_eq!(spec("writers = 20").unwrap().sink.writers.get(), 20);
    let e = spec("writers = 0").unwrap_err().to_string();
    assert!(e.contains("sink.writers") && e.contains("at least 1"), "{e}");
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use crate::common::{self, unique};
    use sluicebox::backends::sink::dynamodb::{CapacityPacing, DynamoSink, ThrottleFaults};
    use sluicebox::backends::sink::Sink;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A batch job into DynamoDB with a third of its writes throttled: the summary sums the
    /// chunks' figures (each carried in its commit through the ledger): write units consumed,
    /// one per item of under 1 KB, and exactly the throttled requests injected, with the items
    /// they sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_job_into_dynamodb_sums_its_write_units_and_throttling_in_the_summary() {
        common::assert_emulator();
        let sdk = sluicebox::backends::aws::sdk_config(Some(8)).await;
        let client = sluicebox::backends::aws::dynamodb(&sdk);
        let table = unique("loader");
        DynamoSink::create_table(&client, &table).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (spec, input) = job(dir.path(), 500, &format!("[sink]\ntype = \"dynamodb\"\ntable = \"{table}\""));
        let mut engine = Engine::local(dir.path()).unwrap();
        engine.cloud = sluicebox::backends::cloud::Cloud::aws(sdk.clone());
        let faults = Arc::new(ThrottleFaults::new(0.3, 5));
        // Injected throttles fall at random, whatever the rate: a high floor bounds the time.
        let pace = sluicebox::backends::sink::dynamodb::Pace::with_floor(2000.0);
        let sink = Arc::new(DynamoSink::new(client.clone(), &table).with_faults(faults.clone()).with_pace(pace));
        let layered = sink.clone();
        engine.sink_layer = Some(Arc::new(move |_| layered.clone() as Arc<dyn Sink>));
        let summary = run(&engine, &spec, &input).await;
        assert_eq!(summary.records.written, 500);
        let f = summary.sink_figures.clone().expect("a DynamoDB sink counts its writes");
        let refused = faults.refused_requests.load(Ordering::Relaxed);
        let held = faults.held_items.load(Ordering::Relaxed);
        assert!(refused > 0 && held > 0, "faults were injected: {refused} requests, {held} items");
        assert_eq!(f.items_written, 500, "{f:?}");
        assert_eq!(f.throttled_requests, refused, "every injected throttle, once: {f:?}");
        assert!(f.retried_items >= held, "{f:?}");
        assert!(f.requests >= 500, "one PutItem per item at least: {f:?}");
        assert_eq!(f.write_units, Some(500.0), "a unit per item of under 1 KB: {f:?}");
        assert_eq!(Some(&f), sink.figures().as_ref(), "the chunks' figures add up to the sink's own");
        let text = summary.to_string();
        assert!(text.contains(&format!("500 write units, {refused} throttled")), "{text}");
        assert_eq!(sink.read_all().await.unwrap().len(), 500);
    }

    /// `aws setup` makes a sink table provisioned (`?capacity=provisioned:R,W`) and the sink
    /// reads its write units; an on-demand table has none; `?capacity=warm:R,W` makes an
    /// on-demand table with that warm throughput.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws_setup_creates_tables_in_the_capacity_mode_asked_for() {
        use sluicebox::backends::setup::{setup, Setup};
        common::assert_emulator();
        let sdk = sluicebox::backends::aws::sdk_config(Some(8)).await;
        let client = sluicebox::backends::aws::dynamodb(&sdk);
        let (provisioned, on_demand, warm) = (unique("prov"), unique("ondemand"), unique("warm"));
        let what = Setup {
            ledger: Some(format!("dynamodb://{on_demand}")),
            sink: Some(format!("dynamodb://{provisioned}?capacity=provisioned:5,40")),
            max_receives: 5,
            ..Default::default()
        };
        let lines = setup(&sdk, &what).await.unwrap();
        assert!(lines.iter().any(|l| l.contains("provisioned: 5 read, 40 write units")), "{lines:?}");
        let units = sluicebox::backends::sink::dynamodb::write_capacity;
        assert_eq!(units(&client, &provisioned).await, Some(40));
        assert_eq!(units(&client, &on_demand).await, None, "on-demand: no capacity to pace at");
        let cloud = sluicebox::backends::cloud::Cloud::aws(sdk.clone());
        let line = sluicebox::backends::sink::dynamodb::describe(&cloud, &provisioned).await.unwrap();
        assert!(line.contains("(active, provisioned: 40 write units a second"), "`check` says so: {line}");
        let line = sluicebox::backends::sink::dynamodb::describe(&cloud, &on_demand).await.unwrap();
        assert!(line.ends_with("(active, on-demand)"), "{line}");
        let sink = DynamoSink::new(client.clone(), &provisioned).with_capacity_pacing(CapacityPacing::Shared(4));
        assert_eq!(sink.provisioned_capacity().await, Some(40));
        assert_eq!(sink.pace().rate(), Some(10.0), "40 units shared by 4 writers");
        let warm_setup = Setup { sink: Some(format!("dynamodb://{warm}?capacity=warm:12000,4000")), ..what };
        let lines = setup(&sdk, &Setup { ledger: None, ..warm_setup }).await.unwrap();
        assert!(lines.iter().any(|l| l.contains("warm throughput 12000 read, 4000 write")), "{lines:?}");
        assert_eq!(units(&client, &warm).await, None, "warm throughput is on-demand");
        // moto (5.2) keeps a table's warm throughput as DynamoDB does.
        let described = client.describe_table().table_name(&warm).send().await.unwrap().table.unwrap();
        let w = described.warm_throughput().unwrap();
        assert_eq!((w.read_units_per_second(), w.write_units_per_second()), (Some(12000), Some(4000)));
    }

    /// A table of 40 write units a second (a fault layer refusing what goes over, as
    /// DynamoDB does): a sink that starts its pace at the table's capacity is rarely
    /// throttled; one that must find the capacity by being throttled is throttled far more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_provisioned_table_is_written_at_its_capacity_with_few_throttled_requests() {
        common::assert_emulator();
        let sdk = sluicebox::backends::aws::sdk_config(Some(8)).await;
        let client = sluicebox::backends::aws::dynamodb(&sdk);
        let mut figures = Vec::new();
        for pacing in [CapacityPacing::Shared(1), CapacityPacing::Off] {
            let table = unique("paced");
            let capacity = sluicebox::backends::aws::dynamodb::Capacity::Provisioned { read: 5, write: 40 };
            DynamoSink::create_table_with(&client, &table, capacity).await.unwrap();
            let faults = Arc::new(ThrottleFaults::capacity(40.0));
            let sink =
                DynamoSink::new(client.clone(), &table).unordered().with_faults(faults).with_capacity_pacing(pacing);
            let started = std::time::Instant::now();
            for batch in 0..8u64 {
                let items = (0..25u64)
                    .map(|i| sluicebox::model::record::SinkItem {
                        key: format!("k{batch}-{i}"),
                        job: 1,
                        seq: batch * 25 + i,
                        record: serde_json::from_value::<sluicebox::model::record::Record>(serde_json::json!({"n": i}))
                            .unwrap()
                            .into(),
                    })
                    .collect();
                sink.write(items).await.unwrap();
            }
            let f = sink.figures().unwrap();
            assert_eq!(f.items_written, 200, "{pacing:?}: {f:?}");
            eprintln!("{pacing:?}: {f:?} in {:.1} s", started.elapsed().as_secs_f64());
            figures.push(f);
        }
        let (paced, unpaced) = (&figures[0], &figures[1]);
        assert!(
            paced.throttled_requests * 10 <= paced.requests,
            "paced at the capacity: under a tenth of the requests throttled: {paced:?}"
        );
        assert!(
            unpaced.throttled_requests >= 3 * paced.throttled_requests.max(1),
            "without the capacity the sink is throttled into its pace: {unpaced:?} vs {paced:?}"
        );
    }
}
