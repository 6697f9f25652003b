//! Streams into a job's sink table: the later record of a key wins, with or without files;
//! killed and restarted, every key ends at its latest version; a record delivered again never
//! replaces a newer one.

use crate::common;
use crate::stream::{report, sluicebox};

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sluicebox::stream::source::SourceRecord;
use sluicebox::stream::state::Pos;
use sluicebox::stream::{Options, Source, Stream};

/// `n` JSON Lines records over `keys` keys in a shuffled order, each with its `v`ersion
/// rising through the input; and each key's last `v`.
fn versioned(n: u64, keys: u64, seed: u64) -> (String, HashMap<u64, u64>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut text = String::new();
    let mut last = HashMap::new();
    for v in 0..n {
        let id = rng.u64(0..keys);
        text.push_str(&format!("{{\"id\": {id}, \"v\": {v}, \"note\": \"n{v}\"}}\n"));
        last.insert(id, v);
    }
    (text, last)
}

/// The `events` table's `id` → `v`.
async fn table_versions(data: &Path, table: &str) -> HashMap<u64, u64> {
    common::sink_rows(data, table)
        .await
        .values()
        .map(|r| (r["id"].as_u64().unwrap(), r["v"].as_u64().unwrap()))
        .collect()
}

const SINK_JOB: &str =
    "[[columns]]\nname = \"id\"\ntype = \"integer\"\n[[columns]]\nname = \"v\"\ntype = \"integer\"\n\
                        [output]\nfields = [\"id\", \"v\", \"note\"]\n[key]\nfields = [\"id\"]\n\
                        [sink]\ntable = \"events\"\n";

/// With a `[sink]` table, a stream upserts its kept records by key, the later record of a key
/// winning; with `--to` it writes files too, and without it only the table (and rejects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_upserts_into_its_sink_table_with_or_without_files() {
    let (input, last) = versioned(5_000, 300, 11);
    for with_files in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), SINK_JOB).unwrap();
        let out = dir.path().join("out");
        let mut c = sluicebox();
        c.args(["stream", "--from", "-", "--json", "--config", dir.path().join("job.toml").to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()]);
        if with_files {
            c.args(["--to", out.to_str().unwrap()]);
        }
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{input}{{\"id\": \"not a number\"}}\n").as_bytes()).unwrap();
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{done:?}");
        let r = report(&done.stdout);
        assert_eq!(
            (r["written"].as_u64(), r["upserted"].as_u64(), r["rejected"].as_u64()),
            (Some(5_000), Some(5_000), Some(1)),
            "{r}"
        );
        assert_eq!(r["sink"], "events", "{r}");
        assert_eq!(table_versions(&dir.path().join("data"), "events").await, last, "files too: {with_files}");
        let files = common::decompressed_files(&out);
        assert_eq!(
            files.iter().filter(|(n, _)| !n.starts_with("errors/")).count(),
            usize::from(with_files),
            "{:?}",
            files.keys()
        );
        let rejects = match with_files {
            true => files.iter().filter(|(n, _)| n.starts_with("errors/")).count(),
            false => common::decompressed_files(&dir.path().join("data/bucket/streams")).len(),
        };
        assert_eq!(rejects, 1, "the reject is kept in a file either way");
    }
}

/// A stream from a file into the sink table, killed at random instants and started again,
/// ends with every key once at its latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_into_its_sink_killed_and_restarted_ends_with_every_key_at_its_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    // About 20 blocks of a MiB: the reader tells the writer after each.
    let (input, last) = versioned(600_000, 50_000, 12);
    let input_path = dir.path().join("events.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    std::fs::write(dir.path().join("job.toml"), SINK_JOB.to_string() + "batch = 500\n").unwrap();
    let run = || {
        let mut c = sluicebox();
        c.args(["stream", "--from", input_path.to_str().unwrap(), "--json"])
            .args(["--config", dir.path().join("job.toml").to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .env("RUST_LOG", "sluicebox::stream=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // Each run is killed after a random number of its sink writes (at least two: the first
    // write's checkpoint is stored before the second), a random moment after the last.
    let mut rng = fastrand::Rng::with_seed(5);
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = run().spawn().unwrap();
        let writes = rng.usize(2..5);
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let upserts =
            std::io::BufRead::lines(stderr).map_while(Result::ok).filter(|l| l.contains("upserted into the sink"));
        if upserts.take(writes).count() == writes {
            std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
        }
        child.kill().unwrap();
        if child.wait().unwrap().signal() == Some(9) {
            kills += 1;
        }
    }
    assert!(kills >= 2, "the kills landed after the run ended: make the input larger");
    let done = run().output().unwrap();
    assert!(done.status.success(), "{done:?}");
    let r = report(&done.stdout);
    // A file is read again from its start; what its checkpoint covers is skipped, not written.
    assert!(r["skipped"].as_u64().unwrap() > 0, "the last run wrote everything again: {r}");
    assert_eq!(r["skipped"].as_u64().unwrap() + r["upserted"].as_u64().unwrap(), 600_000, "{r}");
    assert_eq!(table_versions(&dir.path().join("data"), "events").await, last, "after {kills} kills");
}

/// A record's version in a stream's table is when it arrived (for SQS, when its message was
/// sent: the same on every delivery), not when it was read: a message delivered again after a
/// newer one was written loses to it, wherever it lands in the stream; a later one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_delivered_again_never_replaces_a_newer_one_in_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let engine = sluicebox::engine::Engine::local(dir.path()).unwrap();
    let spec =
        sluicebox::model::config::JobConfig::from_toml(SINK_JOB, "job.toml").unwrap().validate(dir.path()).unwrap();
    let record = |pos: u64, arrival_ms: i64, v: u64| SourceRecord {
        pos: Pos::N(pos),
        arrival_ms,
        data: format!("{{\"id\": 7, \"v\": {v}, \"note\": \"n{v}\"}}").into(),
        ack: None,
        id: None,
    };
    let t = 1_790_000_000_000;
    let deliveries = [
        vec![record(1, t, 1), record(2, t + 5, 2)],
        // The first message again, in a later batch, read after the second was written.
        vec![record(3, t, 1)],
        // A message sent after both.
        vec![record(4, t + 9, 3)],
    ];
    let mut seen = Vec::new();
    for (i, records) in deliveries.into_iter().enumerate() {
        let dest = sluicebox::backends::bucket::open(dir.path().join("out").to_str().unwrap(), &engine.cloud).unwrap();
        let stream = Stream::new(&engine, spec.clone(), None, dest).unwrap().sink_only().unwrap();
        let opts = Options {
            from: Source::Batch { shard: "q".into(), records },
            to: "table events".into(),
            name: Some(format!("delivery-{i}")),
            idle_exit: None,
            latest: false,
        };
        let r = stream.run(&opts, std::future::pending()).await.unwrap();
        assert_eq!((r.upserted, r.files), (r.written, 0), "{r:?}");
        seen.push(table_versions(dir.path(), "events").await[&7]);
    }
    assert_eq!(seen, [2, 2, 3], "v after each delivery");
}
