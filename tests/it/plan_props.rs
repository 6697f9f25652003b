//! Property tests for the splitter: whatever the data and the chunk targets, every record
//! appears in exactly one chunk, in order, with the right record number and line.

use std::num::NonZeroU64;

use proptest::prelude::*;
use sluicebox::input::decode::{CsvDialect, JsonEvent, JsonScanner};
use sluicebox::input::plan::{scan_csv, scan_json, scan_jsonl, ChunkTargets};

fn field() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("bc"), Just(","), Just("\""), Just("\n"), Just("\r\n"), Just(" "), Just("é")],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn table() -> impl Strategy<Value = Vec<Vec<String>>> {
    (1usize..5).prop_flat_map(|width| prop::collection::vec(prop::collection::vec(field(), width..=width), 0..40))
}

fn targets() -> impl Strategy<Value = ChunkTargets> {
    (prop::option::of(1u64..7), 1u64..200).prop_map(|(r, b)| ChunkTargets {
        records: r.and_then(NonZeroU64::new),
        bytes: NonZeroU64::new(b).unwrap(),
        max_record_bytes: u64::MAX,
    })
}

/// Records as the csv crate reads the whole text, with the line each starts on.
fn reference(text: &[u8]) -> Vec<(Vec<String>, u64)> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let before = rdr.position().clone();
        if !rdr.read_record(&mut rec).unwrap() {
            break;
        }
        // The record starts after any line break left from the previous one.
        let start = before.byte() as usize;
        let skipped = &text[start..];
        let lead = skipped.iter().take_while(|b| matches!(b, b'\r' | b'\n')).filter(|b| **b == b'\n').count();
        out.push((rec.iter().map(str::to_string).collect(), before.line() + lead as u64));
    }
    out
}

fn lines_before(text: &[u8], at: u64) -> u64 {
    1 + text[..at as usize].iter().filter(|&&b| b == b'\n').count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn csv_chunks_cover_every_record_once_in_order(rows in table(), targets in targets(), crlf in any::<bool>(), header in any::<bool>()) {
        let mut w = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        let width = rows.first().map_or(1, Vec::len);
        if header {
            w.write_record((0..width).map(|i| format!("h{i}"))).unwrap();
        }
        for r in &rows {
            w.write_record(r).unwrap();
        }
        let text = w.into_inner().unwrap();
        let dialect = CsvDialect { delimiter: b',', quote: b'"', header };
        let scan = scan_csv(&text[..], dialect, targets).unwrap();
        let mut expected = reference(&text);
        if header {
            let h = expected.remove(0);
            prop_assert_eq!(scan.header.clone().unwrap(), h.0.iter().map(|s| s.trim().to_string()).collect::<Vec<_>>());
        }
        prop_assert_eq!(scan.records, expected.len() as u64);

        let mut got = Vec::new();
        let mut next_record = 1;
        let mut last_end = None;
        for c in &scan.chunks {
            prop_assert!(c.records > 0, "empty chunk {:?}", c);
            prop_assert_eq!(c.first_record, next_record, "record numbering must continue across chunks");
            prop_assert_eq!(c.first_line, lines_before(&text, c.start), "first_line must be the line of the chunk start");
            if let Some(end) = last_end {
                prop_assert_eq!(c.start, end, "chunks must be contiguous");
            }
            let part = reference(&text[c.start as usize..c.end as usize]);
            prop_assert_eq!(part.len() as u64, c.records, "a chunk must hold exactly its records");
            for (fields, line) in part {
                got.push((fields, c.first_line + line - 1));
            }
            next_record += c.records;
            last_end = Some(c.end);
            if let Some(max) = targets.records {
                prop_assert!(c.records <= max.get());
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn jsonl_chunks_cover_every_line_once(lines in prop::collection::vec(prop_oneof![Just("".to_string()), "[a-z]{1,8}".prop_map(|s| format!("{{\"v\":\"{s}\"}}"))], 0..40), targets in targets()) {
        let text = lines.join("\n");
        let scan = scan_jsonl(text.as_bytes(), targets).unwrap();
        let expected: Vec<&str> = lines.iter().map(String::as_str).filter(|l| !l.is_empty()).collect();
        let mut got = Vec::new();
        for c in &scan.chunks {
            let part = &text[c.start as usize..c.end as usize];
            prop_assert_eq!(c.first_line, lines_before(text.as_bytes(), c.start));
            let recs: Vec<&str> = part.split('\n').filter(|l| !l.is_empty()).collect();
            prop_assert_eq!(recs.len() as u64, c.records);
            got.extend(recs);
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn json_array_chunks_cover_every_element_once(values in prop::collection::vec(json_value(), 0..30), targets in targets(), wrapped in any::<bool>(), pretty in any::<bool>()) {
        let arr = serde_json::Value::Array(values.clone());
        let doc = if wrapped { serde_json::json!({"meta": {"records": [1]}, "records": arr, "after": [2]}) } else { arr };
        let text = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { serde_json::to_string(&doc).unwrap() };
        let scan = scan_json(text.as_bytes(), targets).unwrap();
        prop_assert_eq!(scan.records, values.len() as u64);
        let mut got = Vec::new();
        for c in &scan.chunks {
            let part = &text.as_bytes()[c.start as usize..c.end as usize];
            let mut s = JsonScanner::elements();
            let mut start = 0;
            let mut n = 0;
            for (i, &b) in part.iter().enumerate() {
                match s.push(b) {
                    Some(JsonEvent::Start) => start = i,
                    Some(JsonEvent::End { inclusive }) => {
                        got.push(serde_json::from_slice::<serde_json::Value>(&part[start..i + usize::from(inclusive)]).unwrap());
                        n += 1;
                    }
                    None => {}
                }
            }
            if s.finish().is_some() {
                got.push(serde_json::from_slice::<serde_json::Value>(&part[start..]).unwrap());
                n += 1;
            }
            prop_assert_eq!(n, c.records);
        }
        prop_assert_eq!(got, values);
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-1000i64..1000).prop_map(serde_json::Value::from),
        "[a-z\\[\\]{},\"\\\\ ]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An input that would be cut into more chunks than a plan holds stops with a message saying
/// what to change, after keeping at most that many chunks in memory.
#[test]
fn an_input_cut_into_too_many_chunks_stops_the_plan() {
    let lines = sluicebox::input::plan::MAX_CHUNKS + 1;
    let input = "{}\n".repeat(lines);
    let one_per_chunk = ChunkTargets {
        records: NonZeroU64::new(1),
        bytes: NonZeroU64::new(1 << 20).unwrap(),
        max_record_bytes: 1 << 20,
    };
    let err = scan_jsonl(input.as_bytes(), one_per_chunk).unwrap_err().to_string();
    assert!(err.contains("chunks") && err.contains("chunking.bytes"), "{err}");
    let fewer = ChunkTargets { records: NonZeroU64::new(1000), ..one_per_chunk };
    assert_eq!(scan_jsonl(input.as_bytes(), fewer).unwrap().records, lines as u64);
}

/// A JSON document whose top-level keys are huge still finds its `records` array (the
/// scanner keeps only as much of a key as `records` needs).
#[test]
fn a_json_document_with_a_huge_key_before_its_records_is_scanned() {
    let doc =
        format!("{{\"{}\": 1, \"recordsX\": [0], \"records\": [{{\"a\": 1}}, {{\"a\": 2}}]}}", "k".repeat(1 << 20));
    let t = ChunkTargets { records: None, bytes: NonZeroU64::new(1 << 30).unwrap(), max_record_bytes: u64::MAX };
    assert_eq!(scan_json(doc.as_bytes(), t).unwrap().records, 2);
}
