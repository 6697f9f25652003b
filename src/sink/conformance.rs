//! The sink conformance suite: every [`Sink`] backend runs these cases unchanged.
//!
//! The sink under test must accept records with the fields `id` (integer), `name` (text)
//! and `price` (decimal).

use serde_json::json;

use super::{Sink, SinkItem};
use crate::record::Record;

fn rec(id: i64, name: &str, price: f64) -> Record {
    match json!({"id": id, "name": name, "price": price}) {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

fn item(key: &str, seq: u64, record: Record) -> SinkItem {
    of_job(key, 1, seq, record)
}

fn of_job(key: &str, job: u64, seq: u64, record: Record) -> SinkItem {
    SinkItem { key: key.into(), job, seq, record }
}

/// Run every case against one empty sink.
pub async fn run_all(sink: &dyn Sink) {
    let batch: Vec<_> =
        (0..300).map(|i| item(&format!("k{i}"), i, rec(i as i64, &format!("n{i}"), i as f64 + 0.5))).collect();
    sink.write(batch.clone()).await.unwrap();
    sink.write(batch.clone()).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all.len(), 300, "writing the same keys twice must not duplicate");
    assert_eq!(all["k7"], rec(7, "n7", 7.5), "values must round-trip");

    // In one write, the item with the higher seq wins, in whichever order the items come.
    sink.write(vec![item("k7", 900, rec(7, "later", 2.0)), item("k7", 800, rec(7, "earlier", 1.25))]).await.unwrap();
    assert_eq!(sink.read_all().await.unwrap()["k7"], rec(7, "later", 2.0), "a lower seq must not overwrite");
    if !sink.orders_by_seq() {
        // Across writes, the item written last stays.
        sink.write(vec![item("k8", 20, rec(8, "second", 2.0))]).await.unwrap();
        sink.write(vec![item("k8", 10, rec(8, "first again", 1.0))]).await.unwrap();
        let all = sink.read_all().await.unwrap();
        assert_eq!(all["k8"], rec(8, "first again", 1.0), "the last write stays");
        assert_eq!(all.len(), 300);
        return;
    }
    sink.write(vec![item("k8", 10, rec(8, "first", 1.0))]).await.unwrap();
    sink.write(vec![item("k8", 20, rec(8, "second", 2.0))]).await.unwrap();
    sink.write(vec![item("k8", 10, rec(8, "first again", 1.0))]).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all["k8"], rec(8, "second", 2.0), "a redelivered older write must not win");
    sink.write(vec![item("k8", 20, rec(8, "second, rewritten", 3.0))]).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all["k8"], rec(8, "second, rewritten", 3.0), "an equal seq (a re-run) replaces");
    assert_eq!(all.len(), 300);

    // Across jobs, the later job wins whatever the records' positions in their inputs: a
    // day's file of two updates replaces the rows a long file loaded the day before.
    sink.write(vec![of_job("k9", 2, 9_000, rec(9, "day 2, row 9000", 2.0))]).await.unwrap();
    sink.write(vec![of_job("k9", 3, 1, rec(9, "day 3, row 1", 3.0))]).await.unwrap();
    assert_eq!(sink.read_all().await.unwrap()["k9"], rec(9, "day 3, row 1", 3.0), "a later job must win");
    sink.write(vec![of_job("k9", 2, 9_000, rec(9, "day 2 again", 2.0))]).await.unwrap();
    assert_eq!(
        sink.read_all().await.unwrap()["k9"],
        rec(9, "day 3, row 1", 3.0),
        "a late write of an earlier job must not win"
    );
    sink.write(vec![of_job("k10", 5, 1, rec(10, "newer job", 5.0)), of_job("k10", 4, 99, rec(10, "older job", 4.0))])
        .await
        .unwrap();
    assert_eq!(sink.read_all().await.unwrap()["k10"], rec(10, "newer job", 5.0), "in one write too");
    assert_eq!(sink.read_all().await.unwrap().len(), 300);
}
