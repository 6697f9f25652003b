//! The sink conformance suite: every [`Sink`] backend runs these cases unchanged.
//!
//! The sink under test must accept records with the fields `id` (integer), `name` (text)
//! and `price` (decimal).

use serde_json::json;

use super::{Sink, SinkItem};
use crate::model::record::Record;

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
    SinkItem { key: key.into(), job, seq, record: record.into() }
}

/// Write `items` and publish their jobs, as a gather would after the jobs' last writes.
async fn put(sink: &dyn Sink, items: Vec<SinkItem>) {
    let mut jobs: Vec<u64> = items.iter().map(|i| i.job).collect();
    jobs.dedup();
    sink.write(items).await.unwrap();
    for job in jobs {
        sink.publish(job).await.unwrap();
    }
}

/// Run every case against one empty sink.
pub async fn run_all(sink: &dyn Sink) {
    versions_decide_what_is_stored(sink).await;
    staged_items_are_stored_when_their_job_is_published(sink).await;
    a_discarded_stage_is_never_stored(sink).await;
    an_upsert_is_stored_at_once_by_version(sink).await;
}

/// `upsert` (a stream's writes, with no gather to publish them) stores its items when it
/// returns, each job's by version: a replayed older item never replaces a newer one.
async fn an_upsert_is_stored_at_once_by_version(sink: &dyn Sink) {
    // Many jobs (a stream's arrival times) in one batch, keys in any order.
    let items: Vec<SinkItem> =
        (0..50u64).map(|i| of_job(&format!("u{}", (i * 7) % 50), 5_000 + i, i, rec(i as i64, "first", 1.0))).collect();
    sink.upsert(items).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!((0..50).filter(|i| all.contains_key(&format!("u{i}"))).count(), 50, "stored without a publish");
    sink.upsert(vec![of_job("u0", 9_000, 1, rec(0, "newer", 2.0))]).await.unwrap();
    sink.upsert(vec![of_job("u0", 5_000, 0, rec(0, "replayed", 3.0))]).await.unwrap();
    let expected = if sink.orders_by_seq() { "newer" } else { "replayed" };
    assert_eq!(sink.read_all().await.unwrap()["u0"]["name"], json!(expected));
}

/// Rewrites never duplicate; of one key's items the newest version is stored (or, for a sink
/// that cannot write conditionally, the last written).
async fn versions_decide_what_is_stored(sink: &dyn Sink) {
    let batch: Vec<_> =
        (0..300).map(|i| item(&format!("k{i}"), i, rec(i as i64, &format!("n{i}"), i as f64 + 0.5))).collect();
    put(sink, batch.clone()).await;
    put(sink, batch.clone()).await;
    let all = sink.read_all().await.unwrap();
    assert_eq!(all.len(), 300, "writing the same keys twice must not duplicate");
    assert_eq!(all["k7"], rec(7, "n7", 7.5), "values must round-trip");

    // In one write, the item with the higher seq wins, in whichever order the items come.
    put(sink, vec![item("k7", 900, rec(7, "later", 2.0)), item("k7", 800, rec(7, "earlier", 1.25))]).await;
    assert_eq!(sink.read_all().await.unwrap()["k7"], rec(7, "later", 2.0), "a lower seq must not overwrite");
    if !sink.orders_by_seq() {
        // Across writes, the item written last stays.
        put(sink, vec![item("k8", 20, rec(8, "second", 2.0))]).await;
        put(sink, vec![item("k8", 10, rec(8, "first again", 1.0))]).await;
        let all = sink.read_all().await.unwrap();
        assert_eq!(all["k8"], rec(8, "first again", 1.0), "the last write stays");
        assert_eq!(all.len(), 300);
        return;
    }
    put(sink, vec![item("k8", 10, rec(8, "first", 1.0))]).await;
    put(sink, vec![item("k8", 20, rec(8, "second", 2.0))]).await;
    put(sink, vec![item("k8", 10, rec(8, "first again", 1.0))]).await;
    let all = sink.read_all().await.unwrap();
    assert_eq!(all["k8"], rec(8, "second", 2.0), "a redelivered older write must not win");
    put(sink, vec![item("k8", 20, rec(8, "second, rewritten", 3.0))]).await;
    let all = sink.read_all().await.unwrap();
    assert_eq!(all["k8"], rec(8, "second, rewritten", 3.0), "an equal seq (a re-run) replaces");
    assert_eq!(all.len(), 300);

    // Across jobs, the later job wins whatever the records' positions in their inputs: a
    // day's file of two updates replaces the rows a long file loaded the day before.
    put(sink, vec![of_job("k9", 2, 9_000, rec(9, "day 2, row 9000", 2.0))]).await;
    put(sink, vec![of_job("k9", 3, 1, rec(9, "day 3, row 1", 3.0))]).await;
    assert_eq!(sink.read_all().await.unwrap()["k9"], rec(9, "day 3, row 1", 3.0), "a later job must win");
    put(sink, vec![of_job("k9", 2, 9_000, rec(9, "day 2 again", 2.0))]).await;
    assert_eq!(
        sink.read_all().await.unwrap()["k9"],
        rec(9, "day 3, row 1", 3.0),
        "a late write of an earlier job must not win"
    );
    put(sink, vec![of_job("k10", 5, 1, rec(10, "newer job", 5.0)), of_job("k10", 4, 99, rec(10, "older job", 4.0))])
        .await;
    assert_eq!(sink.read_all().await.unwrap()["k10"], rec(10, "newer job", 5.0), "in one write too");
    assert_eq!(sink.read_all().await.unwrap().len(), 300);
}

/// Items written and not yet published are either stored already (a sink that writes in
/// place) or not at all; publishing stores them; publishing again, or a job with nothing
/// staged, changes nothing.
async fn staged_items_are_stored_when_their_job_is_published(sink: &dyn Sink) {
    let before = sink.read_all().await.unwrap();
    sink.write(vec![of_job("s1", 7, 2, rec(1, "staged", 1.0)), of_job("s2", 7, 1, rec(2, "staged", 2.0))])
        .await
        .unwrap();
    sink.write(vec![of_job("s1", 7, 3, rec(1, "staged later", 1.5))]).await.unwrap();
    let unpublished = sink.read_all().await.unwrap();
    assert!(unpublished.len() == before.len() || unpublished.len() == before.len() + 2, "all or none of a job");
    sink.publish(7).await.unwrap();
    sink.publish(7).await.unwrap();
    sink.publish(8).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all["s1"], rec(1, "staged later", 1.5), "the later item of a key in a job wins");
    assert_eq!(all["s2"], rec(2, "staged", 2.0));
}

/// A job's staged items that are discarded (its run was replaced) are never stored, even if
/// the job is published after; a sink that writes in place keeps what it wrote.
async fn a_discarded_stage_is_never_stored(sink: &dyn Sink) {
    let before = sink.read_all().await.unwrap();
    sink.write(vec![of_job("d1", 9, 1, rec(1, "discarded", 1.0))]).await.unwrap();
    let staged = sink.read_all().await.unwrap().len() == before.len();
    sink.discard(9).await.unwrap();
    sink.discard(10).await.unwrap();
    sink.publish(9).await.unwrap();
    let after = sink.read_all().await.unwrap();
    if staged {
        assert!(!after.contains_key("d1"), "a discarded stage must not be stored");
        assert_eq!(after.len(), before.len());
    } else {
        assert_eq!(after["d1"], rec(1, "discarded", 1.0), "a sink that writes in place keeps what it wrote");
    }
}
