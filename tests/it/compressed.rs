//! Compressed inputs in linear time (issue 14): a gzip or zstd input's chunks start at resume
//! points noted while planning, each worker decodes only its own part of the stream, and the
//! outputs and rejects are byte for byte those of the plain input.

use crate::common;

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
fn orders_with_notes(n: usize, words: std::ops::Range<usize>) -> String {
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
            (0..rng.usize(words.clone())).map(|_| (0..rng.usize(2..9)).map(|_| rng.lowercase()).collect()).collect();
        let note = words.join(if rng.bool() { " " } else { "\n" });
        out.push_str(&format!("{id},customer {},{amount},\"{note}\"\n", rng.u32(0..1000)));
    }
    out
}

const NOTES_JOB: &str = r#"
[input]
format = "csv"

[chunking]
bytes = 1048576

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
    // About 14 MB: resume points are at least a chunk (1 MiB) apart.
    let plain = orders_with_notes(16_000, 50..250);
    let bytes = plain.as_bytes();
    let n = bytes.len();
    let inputs = [
        ("notes.csv", bytes.to_vec()),
        ("notes.csv.gz", gzip_members(bytes, &[], 6)),
        ("members.csv.gz", gzip_members(bytes, &[1, n / 3 + 17, n / 3 + 18, 2 * n / 3 + 5], 9)),
        ("frames.csv.zst", zstd_frames(bytes, 300_000)),
        ("one-frame.csv.zst", zstd::encode_all(bytes, 3).unwrap()),
    ];
    let mut runs = Vec::new();
    for (name, content) in &inputs {
        let data = tempfile::tempdir().unwrap();
        let input = write(work.path(), name, content);
        let s = run(data.path(), &[input], NOTES_JOB, work.path()).await.unwrap();
        assert_eq!(s.records.total, 16_000, "{name}");
        assert!(s.records.rejected > 100, "{name}: {} rejected", s.records.rejected);
        let (chunks, decoded) = decoded_bytes(data.path(), &s.job_id);
        runs.push((name, s, chunks, decoded, data));
    }
    let (_, s0, chunks0, _, data0) = &runs[0];
    assert_eq!(s0.inputs[0].decoding.as_str(), "range");
    let output = job_file(data0.path(), &s0.job_id, "output.csv");
    let rejects = job_file(data0.path(), &s0.job_id, "rejects.jsonl");
    assert!(chunks0.len() > 10, "the plain input makes {} chunks", chunks0.len());
    for (name, s, chunks, decoded, data) in &runs[1..] {
        assert!(job_file(data.path(), &s.job_id, "output.csv") == output, "{name}: the output differs");
        let r = job_file(data.path(), &s.job_id, "rejects.jsonl");
        assert!(r.replace(**name, "notes.csv") == rejects, "{name}: the rejects differ");
        // Chunks close just after a resume point: at most one chunk's worth decoded twice.
        let resumed = chunks.iter().filter(|c| c.get("resume").is_some()).count();
        let limit = n as u64 + (1 << 20);
        assert!(chunks.len() > 10, "{name}: {} chunks", chunks.len());
        if **name == "one-frame.csv.zst" {
            // Nowhere to resume: the planner stored it decompressed, and workers read ranges
            // of that copy, deleted with the parts after the gather.
            assert_eq!(s.inputs[0].decoding.as_str(), "plain-copy");
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
    // Chunks of 300 kB, while resume points are at least 1 MiB apart: chunks close at twice
    // their target, and decode at most twice the input and a point's distance in all (else the
    // planner stores the input decompressed).
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
                    assert_ne!(s.inputs[0].decoding.as_str(), "range", "{name}");
                    assert!(
                        s.inputs[0].decoded_bytes <= 2 * n as u64 + (1 << 20),
                        "{name}: {}",
                        s.inputs[0].decoded_bytes
                    );
                }
            }
        }
    }
}

// ---- hostile compressed inputs (issue 23) ----

/// Writes deflate's bit stream: fields least significant bit first, Huffman codes most
/// significant bit first (RFC 1951, 3.1.1).
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn field(&mut self, value: u64, bits: u32) {
        self.acc |= value << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn code(&mut self, code: u64, bits: u32) {
        let reversed = (0..bits).fold(0, |r, i| r | ((code >> i) & 1) << (bits - 1 - i));
        self.field(reversed, bits);
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.field(0, 8 - self.n);
        }
    }

    /// A stored block holding `data` (at most 65,535 bytes).
    fn stored(&mut self, data: &[u8], last: bool) {
        self.field(last as u64, 1);
        self.field(0, 2);
        self.align();
        let len = data.len() as u16;
        self.out.extend(len.to_le_bytes());
        self.out.extend((!len).to_le_bytes());
        self.out.extend_from_slice(data);
    }

    /// The header of a fixed-Huffman block.
    fn fixed(&mut self, last: bool) {
        self.field(last as u64, 1);
        self.field(1, 2);
    }

    /// The fixed code of end-of-block (256): seven zero bits.
    fn end_of_block(&mut self) {
        self.code(0, 7);
    }

    /// A gzip member around the deflate stream so far, whose output is `plain`.
    fn gzip(mut self, plain: &[u8]) -> Vec<u8> {
        self.align();
        let mut crc = flate2::Crc::new();
        crc.update(plain);
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.extend(self.out);
        out.extend(crc.sum().to_le_bytes());
        out.extend((plain.len() as u32).to_le_bytes());
        out
    }
}

const HOSTILE_JOB: &str = r#"
[input]
format = "csv"

[chunking]
bytes = 1048576

[[columns]]
name = "id"
type = "integer"
required = true

[sink]
type = "none"
"#;

/// A gzip of a stored block of CSV followed by 30,000 empty fixed-Huffman blocks (10 bits
/// each, no output): every block boundary is a place to resume, and each used to keep a
/// 32 KiB window (about 1 GB for this 40 KB file). The job must plan in bounded memory and
/// give every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_of_empty_deflate_blocks_plans_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let mut plain = String::from("id,name\n");
    for i in 0..2_000 {
        plain.push_str(&format!("{i},name {i}\n"));
    }
    let mut bits = Bits::default();
    bits.stored(plain.as_bytes(), false);
    for _ in 0..30_000 {
        bits.fixed(false);
        bits.end_of_block();
    }
    bits.fixed(true);
    bits.end_of_block();
    let object = bits.gzip(plain.as_bytes());
    assert!(object.len() < 70_000, "{} bytes", object.len());
    let input = write(work.path(), "empty-blocks.csv.gz", &object);
    let data = tempfile::tempdir().unwrap();
    sluicebox::tools::bench::reset_peak_rss();
    let s = run(data.path(), &[input], HOSTILE_JOB, work.path()).await.unwrap();
    let peak = sluicebox::tools::bench::peak_rss_mib();
    assert_eq!((s.records.total, s.records.written), (2_000, 2_000));
    assert!(peak < 256.0, "planning held {peak:.0} MiB");
}

/// A gzip of a short stored block and then one fixed-Huffman block of 258-byte matches,
/// 16 MiB of CSV: with 1 MiB chunks and no resume point inside the block, each chunk's worker
/// used to decode everything before it (8.5 times the plain size in all). The planner must
/// store it decompressed once instead, so that decoding stays linear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_giant_deflate_block_is_decoded_once_not_once_per_chunk() {
    const ROW: usize = 1024;
    let header = "id,pad\n";
    let row = format!("7,{}\n", "x".repeat(ROW - 3));
    assert_eq!(row.len(), ROW);
    let seed = format!("{header}{row}");
    let matches = (16 << 20) / 258;
    let mut bits = Bits::default();
    bits.stored(seed.as_bytes(), false);
    bits.fixed(true);
    for _ in 0..matches {
        // Length 258 (code 285, no extra bits), distance 1024 (code 19: base 769, 8 extra bits).
        bits.code(0b1100_0101, 8);
        bits.code(19, 5);
        bits.field((ROW - 769) as u64, 8);
    }
    bits.end_of_block();
    let mut plain = seed.clone().into_bytes();
    for _ in 0..matches * 258 {
        plain.push(plain[plain.len() - ROW]);
    }
    let object = bits.gzip(&plain);
    let n = plain.len() as u64;
    let work = tempfile::tempdir().unwrap();
    let input = write(work.path(), "giant-block.csv.gz", &object);
    let data = tempfile::tempdir().unwrap();
    sluicebox::tools::bench::reset_peak_rss();
    let s = run(data.path(), &[input], HOSTILE_JOB, work.path()).await.unwrap();
    let peak = sluicebox::tools::bench::peak_rss_mib();
    let lines = plain.iter().filter(|&&b| b == b'\n').count() - 1;
    assert_eq!(s.records.total, (lines + usize::from(plain.last() != Some(&b'\n'))) as u64);
    assert!(s.chunks.total >= 8, "{} chunks", s.chunks.total);
    assert_eq!(s.inputs[0].decoding.as_str(), "plain-copy");
    assert!(s.inputs[0].decoded_bytes <= 2 * n, "{} bytes decoded for {n}", s.inputs[0].decoded_bytes);
    assert!(peak < 256.0, "{peak:.0} MiB");
    let parts = data.path().join("bucket/jobs").join(&s.job_id).join("parts");
    assert!(!parts.join("input-000000.plain").exists(), "the plain copy outlived the gather");
    let spool: Vec<_> = std::fs::read_dir(data.path().join("spool")).unwrap().collect();
    assert!(spool.is_empty(), "the planner left {} files in its spool", spool.len());
}

/// A small single-frame zstd that decompresses to far more than the scratch space: the
/// planner refuses it, naming the setting, before writing its copy, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_copy_that_would_not_fit_the_scratch_space_is_refused_naming_the_limit() {
    let mut plain = String::from("id,name\n");
    for i in 0..20_000 {
        plain.push_str(&format!("{},{}\n", i % 10, "n".repeat(1000)));
    }
    let object = zstd::encode_all(plain.as_bytes(), 19).unwrap();
    assert!(object.len() * 100 < plain.len(), "{} bytes compressed", object.len());
    let work = tempfile::tempdir().unwrap();
    let input = write(work.path(), "one-frame.csv.zst", &object);
    let data = tempfile::tempdir().unwrap();
    let mut engine = sluicebox::engine::Engine::local(data.path()).unwrap();
    engine.scratch_limit = Some(1 << 20);
    let err = run_with(&engine, &[input], HOSTILE_JOB, work.path(), &Default::default()).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("SLUICEBOX_SCRATCH_LIMIT_MB") && message.contains("one-frame.csv.zst"), "{message}");
    let spool: Vec<_> = std::fs::read_dir(data.path().join("spool")).unwrap().collect();
    assert!(spool.is_empty(), "the planner left {} files in its spool", spool.len());
    // With room enough, the same input runs from a copy in the spool directory.
    engine.scratch_limit = Some(64 << 20);
    let s = run_with(&engine, &[work.path().join("one-frame.csv.zst")], HOSTILE_JOB, work.path(), &Default::default())
        .await
        .unwrap();
    assert_eq!((s.records.total, s.inputs[0].decoding.as_str()), (20_000, "plain-copy"));
}
