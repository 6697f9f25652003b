//! What the fuzz targets (`fuzz/`) check, as plain functions: `cargo fuzz` runs them on
//! generated inputs, and a test replays the committed corpus through them on every build.
//!
//! Each function takes arbitrary bytes and panics only when a guarantee is broken; an input
//! that is merely invalid must come back as an error, never as a panic, a hang or an
//! allocation that grows with what the bytes claim rather than with their size.

use std::io::Read;
use std::num::NonZeroU64;

use crate::input::decode::{for_each_record, ChunkStart, CsvDialect};
use crate::input::plan::{scan, ChunkTargets};
use crate::model::config::{Compression, Format, JobConfig};

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
        crate::backends::bucket::decompress_at_most(reader, compression, "fuzz", MAX_DECOMPRESSED, "the fuzz cap")
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
    for event in crate::batch::watch::parse_events(text) {
        let _ = crate::batch::watch::decode_key(&event.key);
    }
}

/// The most a resume-points input may decompress to.
const MAX_RESUMED: usize = 1 << 20;

/// A gzip or zstd object indexed as the planner indexes it, then read chunk by chunk from the
/// resume points as workers read it: every chunk must be exactly the plain bytes of its range,
/// and the log must never hold more than [`crate::input::resume_points::MAX_WINDOWS_HELD`] windows.
///
/// The first bytes choose zstd or gzip, whether the rest is the object itself (crafted
/// streams: empty blocks, members and frames, giant blocks) or plain text compressed here in
/// pieces, the least gap between points and the chunk size.
pub fn resume_points(data: &[u8]) {
    resume_points_checked(data);
}

/// [`resume_points`], returning how many chunks it read back (0 when the input was refused).
pub fn resume_points_checked(data: &[u8]) -> usize {
    use std::sync::{Arc, Mutex};

    use crate::input::resume_points::{
        resume_gzip, resume_zstd, GzipIndexer, ResumeLog, ZstdIndexer, MAX_WINDOWS_HELD,
    };
    let [mode, gap, chunk, rest @ ..] = data else { return 0 };
    let zstd = mode & 1 == 1;
    let object: Vec<u8> = match mode & 2 {
        0 => rest.to_vec(),
        _ => {
            let pieces = usize::from(mode >> 2).max(1);
            let size = rest.len().div_ceil(pieces).max(1);
            let mut out = Vec::new();
            for piece in rest.chunks(size) {
                if zstd {
                    out.extend(zstd::encode_all(piece, 1).expect("zstd compresses"));
                } else {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                    std::io::Write::write_all(&mut gz, piece).expect("gzip compresses");
                    out.extend(gz.finish().expect("gzip compresses"));
                }
            }
            out
        }
    };
    let log = Arc::new(Mutex::new(ResumeLog::new(Vec::new())));
    let min_gap = u64::from(*gap) * 256;
    let mut plain = Vec::new();
    {
        let reader: Box<dyn Read> = match zstd {
            true => Box::new(ZstdIndexer::new(&object[..], log.clone()).with_min_gap(min_gap)),
            false => match GzipIndexer::new(&object[..], log.clone()) {
                Ok(r) => Box::new(r.with_min_gap(min_gap)),
                Err(_) => return 0,
            },
        };
        let mut capped = reader.take(MAX_RESUMED as u64 + 1);
        let mut buf = vec![0; 64 << 10];
        loop {
            match capped.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(_) => return 0,
            }
            let held = log.lock().expect("the log").windows_held();
            assert!(held <= MAX_WINDOWS_HELD, "{held} windows held");
            if plain.len() > MAX_RESUMED {
                return 0;
            }
        }
    }
    let step = (usize::from(*chunk).max(1) * 97).max(1);
    let starts: Vec<u64> = (0..plain.len()).step_by(step).map(|s| s as u64).collect();
    let mut log = Arc::try_unwrap(log).unwrap_or_else(|_| panic!("the reader is gone")).into_inner().expect("the log");
    let mut chunks = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(plain.len() as u64);
        let point = log.cut(start).expect("cuts in order").expect("a point at or before every cut");
        assert!(point.out <= start, "a point past its cut");
        chunks.push((start, end, point.clone(), log.input_end(end, object.len() as u64)));
    }
    let windows = log.into_windows().expect("windows");
    let checked = chunks.len();
    for (start, end, point, input_end) in chunks {
        let from = &object[point.input_start() as usize..input_end as usize];
        let window = &windows[point.window_at as usize..(point.window_at + u64::from(point.window_len)) as usize];
        let mut got = Vec::new();
        let read = match zstd {
            true => resume_zstd(from).and_then(|mut r| r.read_to_end(&mut got)),
            false => resume_gzip(&point, window, from).and_then(|mut r| r.read_to_end(&mut got)),
        };
        read.expect("a chunk resumes where the planner noted");
        let skip = (start - point.out) as usize;
        let want = &plain[start as usize..end as usize];
        assert!(got.len() >= skip + want.len(), "chunk {start}..{end} is short from {point:?}");
        assert!(&got[skip..skip + want.len()] == want, "chunk {start}..{end} differs from {point:?}");
    }
    checked
}

/// A stream's partition template and a record: the template parses or is an error; a
/// rendered partition the checks accept is a safe relative path of bounded length outside
/// the errors prefix.
pub fn partition(data: &[u8]) {
    use crate::stream::partition::{Template, MAX_FOLDER_BYTES, MAX_PARTITION_BYTES};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, record) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(template) = Template::parse(template) else { return };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(record) else { return };
    let row = crate::model::record::Row::from(fields);
    let time = chrono::DateTime::from_timestamp(i64::from(data.len() as u32) * 86_400, 0).unwrap_or_default();
    let Ok(rendered) = template.render_checked(&row, time, "errors") else { return };
    assert!(rendered.len() <= MAX_PARTITION_BYTES, "{rendered:?}");
    assert!(rendered != "errors" && !rendered.starts_with("errors/"), "{rendered:?}");
    for folder in rendered.split('/') {
        assert!(!folder.is_empty() && folder != "." && folder != "..", "{rendered:?}");
        assert!(folder.len() <= MAX_FOLDER_BYTES, "{rendered:?}");
        assert!(!folder.chars().any(char::is_control), "{rendered:?}");
    }
}

/// A URL shown redacted ([`crate::model::web::redact`], [`crate::model::web::SecretUrl`]): its password,
/// query and (for web addresses) path never appear in what is shown.
pub fn redaction(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let shown = crate::model::web::redact(text);
    let secret = crate::model::web::SecretUrl::new(text);
    assert_eq!(secret.to_string(), shown);
    let debug = format!("{secret:?}");
    let debug = debug.strip_prefix("SecretUrl(").and_then(|d| d.strip_suffix(')')).expect("SecretUrl(…)").to_string();
    let Ok(url) = url::Url::parse(text) else {
        assert_eq!(shown, "…", "text that is not a URL is not shown");
        return;
    };
    // What may be shown: the scheme, host and port, and outside the web the path (a secret
    // equal to a piece of those, or spanning them, is no leak).
    let web = matches!(url.scheme(), "http" | "https");
    let visible = format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map_or(String::new(), |p| format!(":{p}")),
        if web { "/" } else { url.path() }
    );
    let mut secrets: Vec<String> = vec![url.password().unwrap_or("").to_string(), url.username().to_string()];
    secrets.extend(url.query().map(str::to_string));
    secrets.extend(url.fragment().map(str::to_string));
    if web {
        secrets.extend(url.path_segments().into_iter().flatten().map(str::to_string));
    }
    // The markers of what was left out (`/…`, `?…`) carry nothing of the URL.
    let unmarked = |t: &str| t.replace("?…", "").replace("/…", "/");
    let (shown, debug) = (unmarked(&shown), unmarked(&debug));
    for s in secrets.iter().filter(|s| s.len() >= 4 && !visible.contains(s.as_str())) {
        assert!(!shown.contains(s.as_str()) && !debug.contains(s.as_str()), "{s:?} shown in {shown:?}");
    }
}
