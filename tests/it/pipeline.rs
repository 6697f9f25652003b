//! The pipeline's steps end to end: every input encoding, JSON Schema, jq transforms and
//! filters, enrichment policies, keys and the sink.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn orders_as_json_records() -> Vec<serde_json::Value> {
    let mut rdr = csv::Reader::from_path(orders_dir().join("orders.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            serde_json::Value::Object(headers.iter().zip(r.iter()).map(|(h, v)| (h.to_string(), json!(v))).collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_gives_the_same_output() {
    let work = tempfile::tempdir().unwrap();
    let csv_bytes = std::fs::read(orders_dir().join("orders.csv")).unwrap();
    let records = orders_as_json_records();
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&csv_bytes).unwrap();
    let inputs = vec![
        write(work.path(), "orders.csv", &csv_bytes),
        write(work.path(), "orders.csv.gz", &gz.finish().unwrap()),
        write(work.path(), "orders.zst", &zstd::encode_all(&csv_bytes[..], 3).unwrap()),
        write(work.path(), "orders.jsonl", jsonl.as_bytes()),
        write(work.path(), "orders.json", serde_json::to_string_pretty(&records).unwrap().as_bytes()),
        write(work.path(), "wrapped.json", json!({"records": records}).to_string().as_bytes()),
    ];
    let mut outputs = Vec::new();
    for input in inputs {
        let data = tempfile::tempdir().unwrap();
        // JSON records may carry any fields, so the CSV output names them.
        let job = orders_job().replace("format = \"csv\"\n", "")
            + "\n[output]\nformat = \"csv\"\nfields = [\"uuid\", \"country\", \"itemType\", \"salesChannel\", \"orderPriority\", \"orderDate\", \"region\", \"shipDate\", \"unitsSold\", \"unitPrice\", \"unitCost\", \"totalRevenue\", \"totalCost\", \"totalProfit\"]\n";
        let s = run(data.path(), std::slice::from_ref(&input), &job, &orders_dir()).await.unwrap();
        assert_eq!((s.records.total, s.records.written), (10000, 10000), "{}", input.display());
        // A compressed input's chunk closes at the first record past a resume point once its
        // 1,000 records are in, and at 2,000 records at the latest.
        let compressed = input.extension().is_some_and(|e| e == "gz" || e == "zst");
        match compressed {
            false => assert_eq!(s.chunks.total, 10, "{}", input.display()),
            true => assert!((5..=10).contains(&s.chunks.total), "{}: {} chunks", input.display(), s.chunks.total),
        }
        outputs.push(job_file(data.path(), &s.job_id, "output.csv"));
    }
    for o in &outputs[1..] {
        assert!(o == &outputs[0], "outputs differ between encodings");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_transform_filter_and_key() {
    let data = tempfile::tempdir().unwrap();
    let input = write(
        data.path(),
        "events.jsonl",
        br#"{"id": 1, "qty": 2, "price": 1.5, "kind": "sale"}
{"id": 2, "qty": 500, "price": 1.0, "kind": "sale"}
{"id": 3, "qty": 1, "price": 2.0, "kind": "refund"}
{"id": 4, "qty": "x", "price": 2.0, "kind": "sale"}
{"id": 1, "qty": 3, "price": 1.5, "kind": "sale"}
"#,
    );
    let job = r#"
transform = ['select(.kind == "sale")', '.total = .qty * .price | del(.kind)']

[validate]
schema = { type = "object", required = ["id", "qty"], properties = { qty = { type = "integer", maximum = 100 } } }

[key]
fields = ["id"]

[sink]
table = "events"
"#;
    let s = run(data.path(), &[input], job, Path::new(".")).await.unwrap();
    assert_eq!(
        serde_json::to_value(&s.records).unwrap(),
        json!({"total": 5, "written": 2, "rejected": 2, "filtered": 1})
    );
    assert_eq!(serde_json::to_value(&s.rejects_by_rule).unwrap(), json!({"schema.maximum": 1, "schema.type": 1}));
    let r = rejects(data.path(), &s.job_id);
    assert_eq!((r[0]["record"].as_u64(), r[0]["field"].as_str()), (Some(2), Some("qty")));
    let out: Vec<serde_json::Value> =
        job_file(data.path(), &s.job_id, "output.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        out,
        vec![
            json!({"id": 1, "qty": 2, "price": 1.5, "total": 3.0}),
            json!({"id": 1, "qty": 3, "price": 1.5, "total": 4.5})
        ]
    );
    // Both written records have id 1: the sink holds one item, the later one in the input.
    let rows = sink_rows(data.path(), "events").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(serde_json::Value::Object(rows["1"].clone()), json!({"id": 1, "qty": 3, "price": 1.5, "total": 4.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_policies() {
    let data = tempfile::tempdir().unwrap();
    write(
        data.path(),
        "ref.jsonl",
        b"{\"code\": \"a\", \"name\": \"Alpha\", \"rank\": 1}\n{\"code\": \"b\", \"name\": \"Beta\", \"rank\": 2}\n",
    );
    let input = write(data.path(), "in.csv", b"id,code\n1,a\n2,zz\n3,b\n");
    for (policy, written, rejected, second) in [
        ("reject", 2, 1, None),
        ("keep", 3, 0, Some(json!({"id": "2", "code": "zz", "name": null, "rank": null}))),
        ("default", 3, 0, Some(json!({"id": "2", "code": "zz", "name": "unknown", "rank": 0}))),
    ] {
        let job = format!(
            "[enrich]\nsource = \"ref.jsonl\"\nkey = \"code\"\non_missing = \"{policy}\"\ndefaults = {{ name = \"unknown\", rank = 0 }}\n[output]\nformat = \"jsonl\"\n[sink]\ntype = \"none\"\n"
        );
        let run_dir = data.path().join(policy);
        let s = run(&run_dir, std::slice::from_ref(&input), &job, data.path()).await.unwrap();
        assert_eq!((s.records.written, s.records.rejected), (written, rejected), "{policy}");
        assert_eq!(s.sink, None);
        let out: Vec<serde_json::Value> =
            job_file(&run_dir, &s.job_id, "output.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(out[0], json!({"id": "1", "code": "a", "name": "Alpha", "rank": 1}), "{policy}");
        if let Some(second) = second {
            assert_eq!(out[1], second, "{policy}");
        } else {
            assert_eq!(rejects(&run_dir, &s.job_id)[0]["rule"], "lookup");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_a_prefix_job_over_every_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("in");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write(&dir, "a.csv", b"k,v\n1,x\n2,y\n");
    write(&dir.join("sub"), "b.csv", b"k,v\n3,z\n");
    write(&dir, ".hidden.csv", b"k,v\n9,no\n");
    let s = run(&data.path().join("run"), &[dir], "[chunking]\nrecords = 1\n", Path::new(".")).await.unwrap();
    assert_eq!(s.inputs.len(), 2);
    assert_eq!((s.records.total, s.chunks.total), (3, 3));
    assert_eq!(job_file(&data.path().join("run"), &s.job_id, "output.csv"), "k,v\n1,x\n2,y\n3,z\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_dialects_and_headerless_inputs() {
    let data = tempfile::tempdir().unwrap();
    let input = write(data.path(), "in.txt", "\u{feff}1;'a;b'\r\n2;'c\r\nd'\r\n".as_bytes());
    let job = r#"
[input]
format = "csv"
header = false
delimiter = ";"
quote = "'"

[[columns]]
name = "n"
type = "integer"

[[columns]]
name = "s"
"#;
    let s = run(data.path(), &[input], job, Path::new(".")).await.unwrap();
    assert_eq!((s.records.total, s.records.written), (2, 2));
    assert_eq!(job_file(data.path(), &s.job_id, "output.csv"), "n,s\n1,a;b\n2,\"c\r\nd\"\n");
}

#[test]
fn the_readme_job_file_example_is_a_valid_job() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config = sluicebox::model::config::JobConfig::from_toml(&readme[start..end], "README.md").unwrap();
    assert_eq!(config.transform.len(), 1);
    assert_eq!(config.enrich.as_ref().map(|e| e.transform.len()), Some(1), "a transform after the lookup");
    assert!(config.validate.is_some());
    config.validate(Path::new(".")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_reference_is_looked_up_in_the_database_with_the_same_result() {
    let input = orders_dir().join("orders.csv");
    let memory = tempfile::tempdir().unwrap();
    let a = run(memory.path(), std::slice::from_ref(&input), &orders_job(), &orders_dir()).await.unwrap();
    let job = orders_job().replace("on_missing = \"reject\"", "on_missing = \"reject\"\nmemory_limit = 0");
    let cfg =
        sluicebox::model::config::JobConfig::from_toml(&job, "job.toml").unwrap().validate(&orders_dir()).unwrap();
    let db = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        // The second load finds the imported table and reuses it.
        let table = sluicebox::backends::lookup::LookupTable::load(
            cfg.enrich.as_ref().unwrap(),
            &db.path().join("sluicebox.db"),
            &Default::default(),
        )
        .unwrap();
        assert!(table.in_database());
    }
    let b = run(db.path(), &[input], &job, &orders_dir()).await.unwrap();
    assert_eq!(b.records, a.records);
    assert!(job_file(db.path(), &b.job_id, "output.csv") == job_file(memory.path(), &a.job_id, "output.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_json_fields_keeps_their_order() {
    let data = tempfile::tempdir().unwrap();
    let input = write(data.path(), "in.jsonl", b"{\"a\": \"x\", \"when\": \"3/4/15\", \"n\": \"7\", \"z\": true}\n");
    let job = r#"
[[columns]]
name = "when"
type = "date"
format = "%m/%d/%y"

[[columns]]
name = "n"
as = "count"
type = "integer"

[[columns]]
name = "missing"
"#;
    let s = run(data.path(), &[input], job, Path::new(".")).await.unwrap();
    assert_eq!(s.records.written, 1);
    let line = job_file(data.path(), &s.job_id, "output.jsonl");
    assert_eq!(line, "{\"a\":\"x\",\"when\":\"2015-03-04\",\"count\":7,\"z\":true,\"missing\":null}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_repeated_keys_the_sink_keeps_the_last_record_of_the_input_whatever_the_schedule() {
    let data = tempfile::tempdir().unwrap();
    // Key k repeats in every chunk; its last occurrence is in the last chunk.
    let mut text = String::from("k,v\n");
    for i in 0..200 {
        text.push_str(&format!("{},{i}\n", i % 7));
    }
    let input = write(data.path(), "rep.csv", text.as_bytes());
    let job = "[chunking]\nrecords = 10\n[key]\nfields = [\"k\"]\n[sink]\ntable = \"rep\"\n";
    for workers in [1, 4] {
        let run_dir = data.path().join(format!("w{workers}"));
        let engine = sluicebox::engine::Engine::local(&run_dir).unwrap();
        let opts = sluicebox::batch::job::RunOptions { workers, ..Default::default() };
        run_with(&engine, std::slice::from_ref(&input), job, Path::new("."), &opts).await.unwrap();
        let rows = sink_rows(&run_dir, "rep").await;
        assert_eq!(rows.len(), 7);
        for k in 0..7 {
            let last = (0..200).filter(|i| i % 7 == k).max().unwrap();
            assert_eq!(rows[&k.to_string()]["v"], json!(last.to_string()), "key {k} with {workers} workers");
        }
    }
}

/// The same table loaded day after day: a later job's rows replace an earlier job's, whatever
/// their positions in their files (day 2's two rows are its rows 1 and 2; day 1 had them at
/// rows 5 and 9,999); re-running day 1 afterwards changes nothing it should not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_job_updates_the_rows_an_earlier_job_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut day1 = String::from("id,value\n");
    for i in 1..=10_000 {
        day1 += &format!("{i},day1-{i}\n");
    }
    let day1 = write(dir.path(), "day1.csv", day1.as_bytes());
    let day2 = write(dir.path(), "day2.csv", b"id,value\n9999,day2-9999\n5,day2-5\n");
    let job = "[key]\nfields = [\"id\"]\n[sink]\ntable = \"items\"\n[chunking]\nrecords = 1000\n";
    let data = dir.path().join("data");
    let first = run(&data, &[day1], job, dir.path()).await.unwrap();
    assert_eq!(first.records.written, 10_000);
    let second = run(&data, &[day2], job, dir.path()).await.unwrap();
    assert_eq!(second.records.written, 2);
    let rows = sink_rows(&data, "items").await;
    assert_eq!(rows.len(), 10_000);
    assert_eq!(rows["5"]["value"], json!("day2-5"), "day 2's row must replace day 1's");
    assert_eq!(rows["9999"]["value"], json!("day2-9999"));
    assert_eq!(rows["6"]["value"], json!("day1-6"));
}

/// A byte order mark inside a CSV input (files concatenated with `cat`, each with its mark)
/// is data wherever the chunks are cut: a chunk that starts on one reads it as the planner
/// did, so the output does not depend on the chunking, and a line holding only a mark is one
/// record, not a chunk whose records do not add up. Found by `scripts/fuzz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_order_mark_inside_a_csv_input_is_read_the_same_wherever_chunks_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("joined.csv");
    std::fs::write(&input, b"\xEF\xBB\xBFid,name\n1,a\n\xEF\xBB\xBF2,b\n\xEF\xBB\xBF\n3,c\n").unwrap();
    let mut outputs = Vec::new();
    for records in [1, 1000] {
        let data = tempfile::tempdir().unwrap();
        let job = format!("[chunking]\nrecords = {records}\n[sink]\ntype = \"none\"\n");
        let s = run(data.path(), std::slice::from_ref(&input), &job, dir.path()).await.unwrap();
        assert_eq!((s.records.total, s.chunks.total), (4, if records == 1 { 4 } else { 1 }));
        outputs.push(job_file(data.path(), &s.job_id, "output.csv"));
    }
    assert_eq!(outputs[0], outputs[1], "the output depends on where chunks were cut");
    assert!(outputs[0].contains("\u{feff}2,b"), "{}", outputs[0]);
}

/// CSV records without a schema or transform are kept as values in a layout shared by the
/// input's records, not as maps: the results must be the same as the map's, field for field,
/// including a reference field that replaces a column of the same name, a key taken from the
/// reference, and every missing-row policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_kept_as_shared_layouts_equal_records_kept_as_maps() {
    let data = tempfile::tempdir().unwrap();
    write(data.path(), "ref.csv", b"code,name,rank\na,Alpha,1\nb,Beta,2\nc,Gamma,3\n");
    let input = write(data.path(), "in.csv", b"id,code,name\n1,a,old\n2,zz,kept\n3,b,\n4,c,x\n5,a,again\n");
    for policy in ["reject", "keep", "default"] {
        let mut results = Vec::new();
        // A no-op transform makes every record a map.
        for transform in ["", "transform = ['.']\n"] {
            let job = format!(
                "{transform}[[columns]]\nname = \"id\"\ntype = \"integer\"\n\
                 [enrich]\nsource = \"ref.csv\"\nkey = \"code\"\non_missing = \"{policy}\"\n\
                 defaults = {{ name = \"unknown\", rank = 0 }}\n\
                 columns = [{{ name = \"rank\", type = \"integer\" }}]\n\
                 [key]\nfields = [\"rank\", \"id\"]\n[output]\nformat = \"jsonl\"\n[sink]\ntable = \"t\"\n"
            );
            let run_dir = data.path().join(format!("{policy}-{}", transform.len()));
            let s = run(&run_dir, std::slice::from_ref(&input), &job, data.path()).await.unwrap();
            let rejects: Vec<(String, u64)> = rejects(&run_dir, &s.job_id)
                .iter()
                .map(|r| (r["rule"].as_str().unwrap().to_string(), r["record"].as_u64().unwrap()))
                .collect();
            results.push((job_file(&run_dir, &s.job_id, "output.jsonl"), rejects, sink_rows(&run_dir, "t").await));
        }
        assert_eq!(results[0], results[1], "{policy}");
        let first: serde_json::Value = serde_json::from_str(results[0].0.lines().next().unwrap()).unwrap();
        assert_eq!(first, json!({"id": 1, "code": "a", "name": "Alpha", "rank": 1}), "{policy}");
        match policy {
            "keep" => assert_eq!(results[0].1, vec![("key".to_string(), 2)], "no rank: no key"),
            "default" => assert!(results[0].0.contains(r#"{"id":2,"code":"zz","name":"unknown","rank":0}"#)),
            _ => assert_eq!(results[0].1, vec![("lookup".to_string(), 2)]),
        }
    }
}

/// What is kept of a reference between jobs over one data directory (its rows in memory, or
/// its imported table) is used while the file is unchanged, and read anew once the file
/// changes, even at the same size; of a repeated key the later row wins either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_kept_between_jobs_is_read_anew_when_its_file_changes() {
    let data = tempfile::tempdir().unwrap();
    let reference = write(data.path(), "ref.csv", b"code,name\na,Alpha\nb,Beta\na,Again\n");
    let input = write(data.path(), "in.csv", b"id,code\n1,a\n2,b\n");
    for memory_limit in [1_000_000, 0] {
        let job = format!(
            "[enrich]\nsource = \"ref.csv\"\nkey = \"code\"\nmemory_limit = {memory_limit}\n\
             [output]\nformat = \"jsonl\"\n[sink]\ntype = \"none\"\n"
        );
        let run_dir = data.path().join(format!("run-{memory_limit}"));
        let engine = sluicebox::engine::Engine::local(&run_dir).unwrap();
        let opts = sluicebox::batch::job::RunOptions { force: true, ..Default::default() };
        let names = |s: &sluicebox::batch::job::Summary| -> Vec<String> {
            job_file(&run_dir, &s.job_id, "output.jsonl")
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].as_str().unwrap().to_string())
                .collect()
        };
        std::fs::write(&reference, b"code,name\na,Alpha\nb,Beta\na,Again\n").unwrap();
        let first = run_with(&engine, std::slice::from_ref(&input), &job, data.path(), &opts).await.unwrap();
        assert_eq!(names(&first), ["Again", "Beta"], "memory_limit {memory_limit}");
        if memory_limit > 0 {
            // The rows are kept on a thread of their own: wait for them.
            let kept = run_dir.join("references");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !std::fs::read_dir(&kept)
                .is_ok_and(|mut d| d.any(|e| e.unwrap().path().extension().unwrap() == "rows"))
            {
                assert!(std::time::Instant::now() < deadline, "the reference's rows were never kept");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        // Other rows of the same size, the modification time put back: the file looks
        // unchanged, and what was kept is used.
        let modified = std::fs::metadata(&reference).unwrap().modified().unwrap();
        std::fs::write(&reference, b"code,name\na,Omega\nb,Zeta\na,Twice\n").unwrap();
        std::fs::File::options().write(true).open(&reference).unwrap().set_modified(modified).unwrap();
        let kept = run_with(&engine, std::slice::from_ref(&input), &job, data.path(), &opts).await.unwrap();
        assert_eq!(names(&kept), ["Again", "Beta"], "memory_limit {memory_limit}: the kept rows");
        // A file that changed (its time says so) is read anew.
        std::fs::File::options()
            .write(true)
            .open(&reference)
            .unwrap()
            .set_modified(modified + std::time::Duration::from_secs(1))
            .unwrap();
        let anew = run_with(&engine, std::slice::from_ref(&input), &job, data.path(), &opts).await.unwrap();
        assert_eq!(names(&anew), ["Twice", "Zeta"], "memory_limit {memory_limit}: the changed file");
    }
}

/// An `[enrich] columns` entry's `as` names the field it adds, in the output and in the sink
/// table, typed as declared, and a transform after the lookup can use it by that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrichment_column_renamed_with_as_appears_under_its_new_name() {
    let data = tempfile::tempdir().unwrap();
    write(data.path(), "ref.csv", b"code,units,name\na,3,Alpha\nb,5,Beta\n");
    let input = write(data.path(), "in.csv", b"id,code\n1,a\n2,b\n");
    for memory_limit in [1_000_000, 0] {
        let job = format!(
            "[[columns]]\nname = \"id\"\ntype = \"integer\"\n\n[key]\nfields = [\"id\"]\n\n\
             [enrich]\nsource = \"ref.csv\"\nkey = \"code\"\nmemory_limit = {memory_limit}\n\
             columns = [{{ name = \"units\", as = \"Units Sold\", type = \"integer\" }}]\n\
             [output]\nfields = [\"id\", \"code\", \"Units Sold\", \"name\"]\n\
             [sink]\ntable = \"renamed\"\n"
        );
        let run_dir = data.path().join(format!("run-{memory_limit}"));
        let s = common::run(&run_dir, std::slice::from_ref(&input), &job, data.path()).await.unwrap();
        assert_eq!((s.records.written, s.records.rejected), (2, 0), "memory_limit {memory_limit}");
        let output = job_file(&run_dir, &s.job_id, "output.csv");
        assert_eq!(output, "id,code,Units Sold,name\n1,a,3,Alpha\n2,b,5,Beta\n", "memory_limit {memory_limit}");
        let rows = common::sink_rows(&run_dir, "renamed").await;
        assert_eq!(rows["1"]["Units Sold"], json!(3), "typed as declared: {:?}", rows["1"]);
        assert!(!rows["1"].contains_key("units"), "{:?}", rows["1"]);
    }
}

/// The distributed-map seed's inputs: a directory of files that each hold one pretty-printed
/// JSON object. Each object is one record of the job, as the seed's own `example1.json` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_pretty_printed_json_objects_is_one_record_each() {
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/seed-data/s3-high-throughput-distributed-map/example1.json"),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let inputs = data.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    for n in 0..40 {
        let text = seed.replace("\"id\": \"123\"", &format!("\"id\": \"{n}\""));
        assert_ne!(text, seed, "the seed's id is replaced");
        std::fs::write(inputs.join(format!("example{n:02}.json")), text).unwrap();
    }
    let job = "transform = ['.product.checked = true']\n[input]\nformat = \"json\"\n\
               [key]\nfields = [\"product\"]\n[output]\nformat = \"jsonl\"\n[sink]\ntype = \"none\"\n";
    let s = run(data.path(), &[inputs], job, data.path()).await.unwrap();
    assert_eq!((s.records.total, s.records.written, s.records.rejected), (40, 40, 0), "{:?}", s.rejects_by_rule);
    let output = job_file(data.path(), &s.job_id, "output.jsonl");
    let mut ids: Vec<u64> = output
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["product"]["checked"], json!(true), "{v}");
            assert_eq!(v["product"]["name"], json!("Product One"));
            v["product"]["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (0..40).collect::<Vec<u64>>());
}

/// Small inputs pack into chunks up to the chunk targets, a large one is cut as before, and
/// nothing else changes: the output keeps input order, rejects name their own input and line,
/// and of one key in two packed inputs the sink keeps the later input's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_inputs_pack_into_chunks_that_keep_order_lines_and_the_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let rows = |from: u32, n: u32, tag: &str| -> String {
        let body: String = (from..from + n).map(|i| format!("{i},{tag}\n")).collect();
        format!("id,tag\n{body}")
    };
    let inputs = [
        ("a.csv", rows(0, 3, "a")),
        ("b.csv", rows(100, 1000, "b")),
        ("c.csv", rows(5000, 2, "c")),
        // d's second row repeats c's first key, and its third is bad.
        ("d.csv", "id,tag\n6000,d\n5000,d-later\nnot-a-number,d\n".to_string()),
        ("e.csv", rows(7000, 250, "e")),
        ("f.csv", rows(8000, 100, "f")),
    ];
    let dir_in = dir.path().join("in");
    std::fs::create_dir_all(&dir_in).unwrap();
    for (name, text) in &inputs {
        std::fs::write(dir_in.join(name), text).unwrap();
    }
    let job = "[[columns]]\nname = \"id\"\ntype = \"integer\"\n[[columns]]\nname = \"tag\"\n\
               [key]\nfields = [\"id\"]\n[chunking]\nrecords = 300\n[sink]\ntable = \"packed\"\n";
    let s = run(dir.path(), &[dir_in], job, dir.path()).await.unwrap();
    // a | b in four | c, d and e packed | f (e's 250 would pass 300 with f's 100).
    assert_eq!(s.chunks.total, 1 + 4 + 1 + 1, "{:?}", s.chunks);
    assert_eq!((s.records.total, s.records.rejected), (1358, 1));
    let manifest: serde_json::Value = serde_json::from_str(&job_file(dir.path(), &s.job_id, "manifest.json")).unwrap();
    let packed = &manifest["chunks"][5];
    assert_eq!(packed["more"].as_array().map(Vec::len), Some(2), "{packed}");

    let output = job_file(dir.path(), &s.job_id, "output.csv");
    let expected: Vec<String> = inputs
        .iter()
        .flat_map(|(_, text)| text.lines().skip(1).filter(|l| !l.starts_with("not")).map(str::to_string))
        .collect();
    assert_eq!(output.lines().skip(1).map(str::to_string).collect::<Vec<_>>(), expected, "input order");

    let rejects = rejects(dir.path(), &s.job_id);
    assert_eq!(rejects.len(), 1);
    assert!(rejects[0]["input"].as_str().unwrap().ends_with("d.csv"), "{}", rejects[0]);
    assert_eq!((rejects[0]["record"].as_u64(), rejects[0]["line"].as_u64()), (Some(3), Some(4)), "{}", rejects[0]);

    let table = sink_rows(dir.path(), "packed").await;
    assert_eq!(table.len(), 1357 - 1, "one key twice");
    assert_eq!(table["5000"]["tag"], json!("d-later"), "the later input's record wins");
}

/// A record's metadata: `$meta` in transforms (before and after the lookup), `$meta.NAME`
/// as an output field, whatever the record's own fields are called (a field named `line`
/// or even `$meta.line` in the input is the record's, and the metadata still wins its name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_and_output_fields_read_each_records_input_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.jsonl",
        b"{\"id\": 1, \"line\": \"own\"}\n\n{\"id\": 2, \"line\": \"own\", \"$meta.line\": 99}\n",
    );
    let b = write(dir.path(), "b.csv", b"id,line\n3,own\n\"4\",\"own\n(two lines)\"\n5,own\n");
    let job = "transform = ['.from = ($meta.input | split(\"/\") | last) | .n = $meta.record']\n\
               [output]\nformat = \"csv\"\nfields = [\"id\", \"line\", \"from\", \"n\", \"$meta.line\"]\n\
               [sink]\ntype = \"none\"\n";
    let s = run(dir.path(), &[a, b], job, dir.path()).await.unwrap();
    assert_eq!((s.records.written, s.records.rejected), (5, 0), "{:?}", s.rejects_by_rule);
    let output = job_file(dir.path(), &s.job_id, "output.csv");
    assert_eq!(
        output,
        "id,line,from,n,$meta.line\n1,own,a.jsonl,1,1\n2,own,a.jsonl,2,3\n3,own,b.csv,1,2\n4,\"own\n(two lines)\",b.csv,2,3\n5,own,b.csv,3,5\n"
    );
    let bad = "[output]\nformat = \"csv\"\nfields = [\"id\", \"$meta.lines\"]\n";
    let e = run(dir.path(), &[write(dir.path(), "c.csv", b"id\n1\n")], bad, dir.path()).await.unwrap_err();
    assert!(e.to_string().contains("output.fields") && e.to_string().contains("$meta.line,"), "{e}");
}

/// Counts the writes it passes on.
#[derive(Debug)]
struct CountingSink(std::sync::Arc<dyn sluicebox::backends::sink::Sink>, std::sync::Arc<std::sync::atomic::AtomicU32>);

#[async_trait::async_trait]
impl sluicebox::backends::sink::Sink for CountingSink {
    async fn write(&self, items: Vec<sluicebox::backends::sink::SinkItem>) -> sluicebox::Result<()> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.write(items).await
    }
    async fn publish(&self, job: u64) -> sluicebox::Result<()> {
        self.0.publish(job).await
    }
    async fn discard(&self, job: u64) -> sluicebox::Result<()> {
        self.0.discard(job).await
    }
    async fn read_all(
        &self,
    ) -> sluicebox::Result<std::collections::BTreeMap<String, sluicebox::model::record::Record>> {
        self.0.read_all().await
    }
}

/// The records of a chunk's packed small inputs reach the sink in full batches, not one write
/// per input (each write is a request on DynamoDB, a `PublishBatch` on SNS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_small_inputs_reach_the_sink_in_full_batches() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    for i in 0..300 {
        std::fs::write(inputs.join(format!("{i:03}.json")), format!("{{\"id\": {i}}}\n")).unwrap();
    }
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut engine = sluicebox::engine::Engine::local(&dir.path().join("data")).unwrap();
    let counted = writes.clone();
    engine.sink_layer = Some(std::sync::Arc::new(move |inner| {
        std::sync::Arc::new(CountingSink(inner, counted.clone())) as std::sync::Arc<dyn sluicebox::backends::sink::Sink>
    }));
    let job = "[key]\nfields = [\"id\"]\n[sink]\ntable = \"small\"\nbatch = 100\n";
    let s = run_with(&engine, &[inputs], job, dir.path(), &sluicebox::batch::job::RunOptions::default()).await.unwrap();
    assert_eq!((s.records.written, s.chunks.total), (300, 2));
    let writes = writes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(writes <= 4, "{writes} sink writes for 300 records in batches of 100");
    assert_eq!(sink_rows(&dir.path().join("data"), "small").await.len(), 300);
}
