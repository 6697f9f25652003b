//! Compressed inputs in linear time (issue 14): a gzip or zstd input's chunks start at resume
//! points noted while planning, each worker decodes only its own part of the stream, and the
//! outputs and rejects are byte for byte those of the plain input.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `plain` as gzip members cut at `cuts` (byte offsets in no relation to records), at `level`.
fn gzip_members(plain: &[u8], cuts: &[usize], level: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(plain.len());
    for w in bounds.windows(2) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(&plain[w[0]..w[1]]).unwrap();
        out.extend(gz.finish().unwrap());
    }
    out
}

/// `plain` as zstd frames of `piece` bytes each.
fn zstd_frames(plain: &[u8], piece: usize) -> Vec<u8> {
    plain.chunks(piece).flat_map(|p| zstd::encode_all(p, 3).unwrap()).collect()
}

/// Orders with a note whose quoted text has line breaks, so records cross lines (and chunk
/// boundaries fall between lines of one record), and some broken ones.
fn orders_with_notes(n: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(14);
    let mut out = String::from("id,name,amount,note\n");
    for i in 0..n {
        let id = rng.u64(1..1 << 40);
        let amount = if i % 97 == 0 {
            "not-a-number".to_string()
        } else {
            format!("{}.{:02}", rng.u32(0..5000), rng.u32(0..100))
        };
        let words: Vec<String> =
            (0..rng.usize(3..30)).map(|_| (0..rng.usize(2..9)).map(|_| rng.lowercase()).collect()).collect();
        let note = words.join(if rng.bool() { " " } else { "\n" });
        out.push_str(&format!("{id},customer {},{amount},\"{note}\"\n", rng.u32(0..1000)));
    }
    out
}

const NOTES_JOB: &str = r#"
[input]
format = "csv"

[chunking]
bytes = 65536

[[columns]]
name = "id"
type = "integer"
required = true

[[columns]]
name = "amount"
type = "decimal"

[output]
format = "csv"
"#;

/// The chunks of a job's plan, and the decompressed bytes its workers decode: from each
/// chunk's resume point (or the input's start) to its end.
fn decoded_bytes(data: &Path, job_id: &str) -> (Vec<serde_json::Value>, u64) {
    let plan: serde_json::Value = serde_json::from_str(&job_file(data, job_id, "plan.json")).unwrap();
    let chunks = plan["chunks"].as_array().unwrap().clone();
    let decoded = chunks
        .iter()
        .map(|c| c["end"].as_u64().unwrap() - c.get("resume").map_or(0, |r| r["out"].as_u64().unwrap()))
        .sum();
    (chunks, decoded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_inputs_give_the_plain_outputs_decoding_each_byte_about_once() {
    let work = tempfile::tempdir().unwrap();
    let plain = orders_with_notes(12_000);
    let bytes = plain.as_bytes();
    let n = bytes.len();
    let inputs = [
        ("notes.csv", bytes.to_vec()),
        ("notes.csv.gz", gzip_members(bytes, &[], 6)),
        ("members.csv.gz", gzip_members(bytes, &[1, n / 3 + 17, n / 3 + 18, 2 * n / 3 + 5], 9)),
        ("frames.csv.zst", zstd_frames(bytes, 40_000)),
        ("one-frame.csv.zst", zstd::encode_all(bytes, 3).unwrap()),
    ];
    let mut runs = Vec::new();
    for (name, content) in &inputs {
        let data = tempfile::tempdir().unwrap();
        let input = write(work.path(), name, content);
        let s = run(data.path(), &[input], NOTES_JOB, work.path()).await.unwrap();
        assert_eq!(s.records.total, 12_000, "{name}");
        assert!(s.records.rejected > 100, "{name}: {} rejected", s.records.rejected);
        let (chunks, decoded) = decoded_bytes(data.path(), &s.job_id);
        runs.push((name, s, chunks, decoded, data));
    }
    let (_, s0, chunks0, _, data0) = &runs[0];
    assert_eq!(s0.inputs[0].decoding, "range");
    let output = job_file(data0.path(), &s0.job_id, "output.csv");
    let rejects = job_file(data0.path(), &s0.job_id, "rejects.jsonl");
    assert!(chunks0.len() > 10, "the plain input makes {} chunks", chunks0.len());
    for (name, s, chunks, decoded, data) in &runs[1..] {
        assert!(job_file(data.path(), &s.job_id, "output.csv") == output, "{name}: the output differs");
        let r = job_file(data.path(), &s.job_id, "rejects.jsonl");
        assert!(r.replace(**name, "notes.csv") == rejects, "{name}: the rejects differ");
        // Chunks close just after a resume point: at most one chunk's worth decoded twice.
        let resumed = chunks.iter().filter(|c| c.get("resume").is_some()).count();
        let limit = n as u64 + 65_536;
        assert!(chunks.len() > 10, "{name}: {} chunks", chunks.len());
        if **name == "one-frame.csv.zst" {
            // Nowhere to resume: the planner stored it decompressed, and workers read ranges
            // of that copy, deleted with the parts after the gather.
            assert_eq!(s.inputs[0].decoding, "plain-copy");
            assert_eq!(resumed, 0);
            assert!(s.inputs[0].decoded_bytes <= n as u64);
            let parts = data.path().join("bucket/jobs").join(&s.job_id).join("parts");
            assert!(!parts.join("input-000000.plain").exists(), "the plain copy outlived the gather");
            continue;
        }
        let want = if name.ends_with(".zst") { "zstd-frames" } else { "gzip-index" };
        assert_eq!((s.inputs[0].decoding.as_str(), s.inputs[0].decoded_bytes), (want, *decoded), "{name}");
        assert_eq!(resumed, chunks.len(), "{name}: every chunk resumes");
        assert!(*decoded <= limit, "{name}: {decoded} bytes decoded for {n}");
    }
    // gzip windows are stored next to the plan; zstd frames need none.
    let (_, s, _, _, data) = &runs[1];
    let windows = data.path().join("bucket/jobs").join(&s.job_id).join("index/000000.windows");
    let stored = std::fs::metadata(&windows).map_or(0, |m| m.len());
    assert!(stored > 0, "{}", windows.display());
    assert_eq!(s.inputs[0].windows_bytes, stored);
    assert!(stored <= s.chunks.total as u64 * 32 * 1024, "{stored} bytes of windows");
}

/// The seed orders as JSON Lines and as a JSON document, each plain and as two gzip members
/// and zstd frames: the same output, rejects and sink rows from each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_json_documents_compressed_give_the_plain_outputs_and_sink_rows() {
    let work = tempfile::tempdir().unwrap();
    let mut rdr = csv::Reader::from_path(orders_dir().join("orders.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let records: Vec<serde_json::Value> = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            let fields = headers.iter().zip(r.iter()).map(|(h, v)| (h.to_string(), serde_json::json!(v)));
            serde_json::Value::Object(fields.collect())
        })
        .collect();
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    let document = serde_json::to_string_pretty(&records).unwrap();
    // Chunks of 300 kB: gzip -6 closes a block of this repetitive JSON every 280 kB or so, and
    // a chunk closes once one has passed (at twice its target at the latest).
    let job = orders_job().replace("format = \"csv\"\n", "").replace("records = 1000", "bytes = 300000")
        + "\n[output]\nformat = \"csv\"\nfields = [\"uuid\", \"country\", \"itemType\", \"orderDate\", \"region\", \"unitsSold\", \"totalProfit\"]\n";
    for (ext, plain) in [("jsonl", jsonl.as_bytes()), ("json", document.as_bytes())] {
        let n = plain.len();
        let variants = [
            (format!("orders.{ext}"), plain.to_vec()),
            (format!("orders.{ext}.gz"), gzip_members(plain, &[n / 2 + 3], 6)),
            (format!("orders.{ext}.zst"), zstd_frames(plain, 50_000)),
        ];
        let mut seen: Option<(String, String, _)> = None;
        for (name, bytes) in variants {
            let data = tempfile::tempdir().unwrap();
            let input = write(work.path(), &name, &bytes);
            let s = run(data.path(), &[input], &job, &orders_dir()).await.unwrap();
            assert_eq!(s.records.total, 10_000, "{name}");
            assert!(s.chunks.total > 3, "{name}: {} chunks", s.chunks.total);
            let output = job_file(data.path(), &s.job_id, "output.csv");
            let rejects = job_file(data.path(), &s.job_id, "rejects.jsonl").replace(&name, "orders");
            let rows = sink_rows(data.path(), "orders").await;
            assert_eq!(rows.len() as u64, s.records.written, "{name}");
            match &seen {
                None => seen = Some((output, rejects, rows)),
                Some((o, r, w)) => {
                    assert!(&output == o, "{name}: the output differs");
                    assert!(&rejects == r, "{name}: the rejects differ");
                    assert!(&rows == w, "{name}: the sink rows differ");
                    assert_ne!(s.inputs[0].decoding, "range", "{name}");
                    assert!(s.inputs[0].decoded_bytes <= n as u64 + 300_000, "{name}: {}", s.inputs[0].decoded_bytes);
                }
            }
        }
    }
}
