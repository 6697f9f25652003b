//! What the fuzz targets (`fuzz/`) check, as plain functions: `cargo fuzz` runs them on
//! generated inputs, and a test replays the committed corpus through them on every build.
//!
//! Each function takes arbitrary bytes and panics only when a guarantee is broken; an input
//! that is merely invalid must come back as an error, never as a panic, a hang or an
//! allocation that grows with what the bytes claim rather than with their size.

use std::io::Read;
use std::num::NonZeroU64;

use crate::config::{Compression, Format, JobConfig};
use crate::decode::{for_each_record, Body, ChunkStart, CsvDialect};
use crate::plan::{scan, ChunkTargets};

/// The most an input here may decompress to.
const MAX_DECOMPRESSED: u64 = 1 << 20;

/// An input's bytes, read the way the planner and the workers read them.
///
/// The first bytes choose the format, the compression, the CSV dialect and the chunk targets;
/// the rest is the input. When the scan accepts the input, its chunks must tile it exactly
/// and the worker's decoder must find in each chunk the records the planner counted, numbered
/// from the chunk's first record: a disagreement would fail a job on a worker.
pub fn input(data: &[u8]) {
    let [mode, delimiter, records, bytes, rest @ ..] = data else { return };
    let format = [Format::Csv, Format::Jsonl, Format::Json][usize::from(mode % 3)];
    let compression = [Compression::None, Compression::Gzip, Compression::Zstd][usize::from(mode / 3 % 3)];
    let dialect = CsvDialect {
        delimiter: if *delimiter == b'"' { b',' } else { *delimiter },
        quote: b'"',
        header: mode & 0x80 != 0,
    };
    let targets = ChunkTargets {
        records: NonZeroU64::new(u64::from(*records % 8)),
        bytes: NonZeroU64::new(u64::from(*bytes).max(1)).unwrap(),
        max_record_bytes: 4096,
    };
    let reader = Box::new(std::io::Cursor::new(rest.to_vec()));
    let Ok(mut decoded) =
        crate::bucket::decompress_at_most(reader, compression, "fuzz", MAX_DECOMPRESSED, "the fuzz cap")
    else {
        return;
    };
    let mut text = Vec::new();
    if decoded.read_to_end(&mut text).is_err() {
        return;
    }
    let Ok(plan) = scan(&text[..], format, dialect, targets) else { return };
    assert_eq!(plan.bytes, text.len() as u64, "the scan read the whole input");
    assert_eq!(plan.chunks.iter().map(|c| c.records).sum::<u64>(), plan.records, "chunks hold every record");
    let mut next_record = 1;
    // Bytes outside every chunk hold no record: a line break or blank line between records,
    // the one after the last record, or the separators between a JSON document's elements.
    let no_records = |from: u64, to: u64| {
        let gap = &text[from as usize..to as usize];
        if format == Format::Json {
            return gap.iter().all(|b| b.is_ascii_whitespace() || *b == b',');
        }
        let mut found = 0;
        for_each_record(format, &dialect, gap, ChunkStart { record: 1, line: 1 }, &mut |_| found += 1);
        found == 0
    };
    for (i, pair) in plan.chunks.windows(2).enumerate() {
        let (end, start) = (pair[0].end, pair[1].start);
        assert!(end <= start, "chunks {i} and {} overlap", i + 1);
        assert!(no_records(end, start), "chunks {i} and {} leave out {:?}", i + 1, &text[end as usize..start as usize]);
    }
    if let Some(last) = plan.chunks.last().filter(|_| format != Format::Json) {
        assert!(no_records(last.end, text.len() as u64), "records after the last chunk, which ends at {}", last.end);
    }
    for c in &plan.chunks {
        assert!(c.start <= c.end && c.end <= text.len() as u64, "chunk {c:?} is inside the input");
        assert_eq!(c.first_record, next_record, "chunk {} starts where the previous ended", c.index);
        let bytes = &text[c.start as usize..c.end as usize];
        let mut seen = 0u64;
        let start = ChunkStart { record: c.first_record, line: c.first_line };
        for_each_record(format, &dialect, bytes, start, &mut |r| {
            assert_eq!(r.number, c.first_record + seen, "records are numbered in order");
            assert!(!matches!(r.body, Body::Malformed(_)) || format == Format::Csv, "only CSV is malformed whole");
            seen += 1;
        });
        assert_eq!(
            seen, c.records,
            "chunk {} of {format:?}: the decoder and the planner disagree on {bytes:?}",
            c.index
        );
        next_record += c.records;
    }
}

/// A job file's text, checked as `run` checks it: a bad one is an error, never a panic.
pub fn job_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = JobConfig::from_toml(text, "fuzz.toml") {
        let _ = config.validate(std::path::Path::new("/nonexistent"));
    }
}

/// An S3 event notification (direct, or in an SNS envelope): parsed leniently, never a panic.
pub fn s3_event(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for event in crate::watch::parse_events(text) {
        let _ = crate::watch::decode_key(&event.key);
    }
}
