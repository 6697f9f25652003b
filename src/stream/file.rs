//! A stream's files: how buffered records are encoded ([`Encoding`]), what a cut buffer's file
//! covers and is named ([`plan_file`]: the same records, the same name); its bytes are the
//! buffer's (`spool.rs`).

use chrono::{DateTime, TimeZone, Utc};

use super::batch::{Batch, Cut};
use super::spool::Body;
pub use super::spool::{Encoding, Item};
use super::state::{self, Covered, Track};

/// A file to write.
#[derive(Debug)]
pub struct FilePlan {
    /// Its name under the destination.
    pub path: String,
    /// It holds rejects.
    pub errors: bool,
    /// Its records' ranges, per shard.
    pub covered: Vec<Covered>,
    /// Its records.
    pub batch: Batch<Body>,
}

/// A time in ms since the Unix epoch (the epoch itself if out of range).
pub fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Why a buffer became a file, as the report names it.
pub fn cut_name(c: Cut) -> &'static str {
    match c {
        Cut::Size => "size",
        Cut::Records => "records",
        Cut::Age => "age",
        Cut::Open => "open_partitions",
        Cut::Memory => "memory",
        Cut::Drain => "end",
    }
}

/// A cut buffer's file: what it covers per shard (`tracks` name them), and its name from that
/// (and from `run`, for a source that numbers its records afresh in each run).
pub fn plan_file(tracks: &[Track], batch: Batch<Body>, encoding: &Encoding, run: Option<&str>) -> FilePlan {
    let covered: Vec<Covered> = batch
        .items
        .spans()
        .map(|(shard, span)| Covered {
            partition: batch.partition.clone(),
            shard: tracks[shard as usize].shard.clone(),
            first: span.first.to_string(),
            last: span.last.to_string(),
        })
        .collect();
    let errors = encoding.is_errors(&batch.partition);
    let first_arrival = match batch.items.first_arrival_ms {
        i64::MAX => 0,
        ms => ms,
    };
    let file = format!(
        "part-{}-{}.{}",
        ms_time(first_arrival).format("%Y%m%dT%H%M%SZ"),
        state::file_id(&covered, run),
        encoding.extension(errors)
    );
    let path = match batch.partition.as_str() {
        "" => file,
        p => format!("{p}/{file}"),
    };
    FilePlan { path, errors, covered, batch }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::config::{Compression, OutputFormat};
    use crate::stream::batch::Fill;
    use crate::stream::spool::{Spooler, PIECE_BYTES};
    use crate::stream::state::Pos;

    fn encoding(format: OutputFormat, compression: Compression) -> Encoding {
        let fields = Some(Arc::new(vec!["id".to_string(), "name".to_string()]));
        Encoding { format, compression, fields, errors: "errors".into() }
    }

    fn item(shard: u32, n: u64, line: &str) -> Item {
        let arrival_ms = 1_790_000_000_000 + n as i64;
        Item { shard, ordinal: n - 1, pos: Pos::N(n), arrival_ms, line: line.as_bytes().to_vec(), ack: None }
    }

    fn batch(partition: &str, items: Vec<Item>) -> Batch<Body> {
        let e = encoding(OutputFormat::Jsonl, Compression::Gzip);
        let spooler = Arc::new(Spooler::new(std::env::temp_dir(), e, PIECE_BYTES, None));
        let (bytes, records) = (items.iter().map(|i| i.line.len()).sum(), items.len() as u64);
        let mut body = Body::new(&spooler, partition);
        for i in items {
            body.add(i);
        }
        Batch { partition: partition.into(), items: body, records, bytes, opened_ms: 0, cut: Cut::Records }
    }

    fn tracks() -> Vec<Track> {
        vec![Track::new("a", None), Track::new("b", None)]
    }

    #[test]
    fn extensions_follow_the_format_and_compression_and_error_files_are_json_lines() {
        assert_eq!(encoding(OutputFormat::Csv, Compression::Gzip).extension(false), "csv.gz");
        assert_eq!(encoding(OutputFormat::Csv, Compression::Zstd).extension(true), "jsonl.zst");
        assert_eq!(encoding(OutputFormat::Jsonl, Compression::None).extension(false), "jsonl");
        assert_eq!(encoding(OutputFormat::Parquet, Compression::Gzip).extension(false), "parquet");
        assert_eq!(encoding(OutputFormat::Parquet, Compression::Gzip).extension(true), "jsonl.gz");
    }

    #[test]
    fn only_the_errors_prefix_and_what_is_under_it_hold_rejects() {
        let e = encoding(OutputFormat::Jsonl, Compression::Gzip);
        assert!(e.is_errors("errors") && e.is_errors("errors/dt=2026-11-01"));
        assert!(!e.is_errors("errors2/dt=2026-11-01") && !e.is_errors("") && !e.is_errors("x/errors"));
    }

    #[test]
    fn a_file_covers_each_shards_range_and_is_named_by_it() {
        let e = encoding(OutputFormat::Jsonl, Compression::Gzip);
        let items = || vec![item(0, 3, "{}\n"), item(1, 7, "{}\n"), item(0, 5, "{}\n")];
        let plan = plan_file(&tracks(), batch("k=v", items()), &e, None);
        let covered: Vec<_> =
            plan.covered.iter().map(|c| (c.shard.as_str(), c.first.as_str(), c.last.as_str())).collect();
        assert_eq!(covered, [("a", "3", "5"), ("b", "7", "7")]);
        assert!(!plan.errors);
        let (folder, name) = plan.path.split_once('/').unwrap();
        assert_eq!(folder, "k=v");
        assert!(name.starts_with("part-20260921T") && name.ends_with(".jsonl.gz"), "{name}");
        assert_eq!(
            plan_file(&tracks(), batch("k=v", items()), &e, None).path,
            plan.path,
            "the same records, the same name"
        );
        let other = plan_file(&tracks(), batch("k=v", vec![item(0, 3, "{}\n")]), &e, None);
        assert_ne!(other.path, plan.path);
        let rejects = plan_file(&tracks(), batch("errors/dt=2026-09-21", items()), &e, None);
        assert!(rejects.errors && rejects.path.starts_with("errors/dt=2026-09-21/part-"));
    }
}
