//! The sink conformance suite: every [`Sink`] backend runs these cases unchanged.
//!
//! The sink under test must accept records with the fields `id` (integer), `name` (text)
//! and `price` (decimal).

use serde_json::json;

use super::Sink;
use crate::pipeline::Record;

fn rec(id: i64, name: &str, price: f64) -> Record {
    match json!({"id": id, "name": name, "price": price}) {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Run every case against one empty sink.
pub async fn run_all(sink: &dyn Sink) {
    let batch: Vec<_> = (0..300).map(|i| (format!("k{i}"), rec(i, &format!("n{i}"), i as f64 + 0.5))).collect();
    sink.write(batch.clone()).await.unwrap();
    sink.write(batch.clone()).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all.len(), 300, "writing the same keys twice must not duplicate");
    assert_eq!(all["k7"], rec(7, "n7", 7.5), "values must round-trip");

    sink.write(vec![("k7".into(), rec(7, "changed", 1.25)), ("k7".into(), rec(7, "last", 2.0))]).await.unwrap();
    let all = sink.read_all().await.unwrap();
    assert_eq!(all.len(), 300);
    assert_eq!(all["k7"], rec(7, "last", 2.0), "an upsert must replace, and the later item in a batch wins");
}
