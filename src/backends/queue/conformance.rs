//! The queue conformance suite: every [`Queue`] backend runs these cases unchanged.
//!
//! Cases use real time with short timeouts (`visibility` is what the backend was built
//! with), so they also run against remote queues.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Queue;

/// Run every case. Each `make()` must give an empty queue whose visibility timeout is
/// `visibility`.
pub async fn run_all<F, Fut, Q>(make: F, visibility: Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Q>,
    Q: std::ops::Deref<Target = dyn Queue>,
{
    delivers_everything_once_when_acked(&*make().await).await;
    empty_receive_waits_then_returns_nothing(&*make().await).await;
    unacked_is_redelivered_after_timeout(&*make().await, visibility).await;
    extend_keeps_it_hidden(&*make().await, visibility).await;
    release_redelivers_at_once(&*make().await).await;
    stale_receipts_are_accepted(&*make().await, visibility).await;
}

/// Receive until a receive comes back empty, acknowledging each message as it arrives (so that
/// a slow machine's pauses between receives cannot outlast a short visibility timeout).
async fn drain_acking(q: &dyn Queue, max: usize) -> Vec<super::Delivery> {
    let mut all = Vec::new();
    loop {
        let got = q.receive(max, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() {
            return all;
        }
        assert!(got.len() <= max, "receive returned {} messages, max was {max}", got.len());
        for d in &got {
            q.ack(&d.receipt).await.unwrap();
        }
        all.extend(got);
    }
}

/// Every message sent is received once; acked ones are gone.
pub async fn delivers_everything_once_when_acked(q: &dyn Queue) {
    let sent: BTreeSet<String> = (0..25).map(|i| format!("task-{i}")).collect();
    q.send(sent.iter().cloned().collect()).await.unwrap();
    let got = drain_acking(q, 10).await;
    let bodies: BTreeSet<String> = got.iter().map(|d| d.body.clone()).collect();
    assert_eq!(bodies, sent, "every message must be delivered");
    assert_eq!(got.len(), sent.len(), "no message may be delivered twice once acknowledged");
    assert!(got.iter().all(|d| d.receive_count == 1));
    let ids: BTreeSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "every message has an id of its own");
    assert!(drain_acking(q, 10).await.is_empty());
}

/// An empty queue waits, then returns an empty list.
pub async fn empty_receive_waits_then_returns_nothing(q: &dyn Queue) {
    let t = tokio::time::Instant::now();
    let got = q.receive(1, Duration::from_millis(300)).await.unwrap();
    assert!(got.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250), "receive must wait for messages");
}

/// An unacked message comes back after the visibility timeout, with a higher count.
pub async fn unacked_is_redelivered_after_timeout(q: &dyn Queue, visibility: Duration) {
    q.send(vec!["again".into()]).await.unwrap();
    let first = q.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(q.receive(1, Duration::from_millis(50)).await.unwrap().is_empty(), "in flight must be invisible");
    let second = q.receive(1, visibility * 3).await.unwrap();
    assert_eq!(second.len(), 1, "an unacked message must come back");
    assert_eq!(second[0].body, "again");
    assert_eq!(second[0].receive_count, 2);
    // A stream's record version: the same message delivered again is not newer.
    assert_eq!(second[0].sent_ms, first[0].sent_ms, "a redelivery keeps the time the message was sent");
    assert_eq!(second[0].id, first[0].id, "a redelivery keeps the message's id");
    assert_ne!(second[0].receipt, first[0].receipt, "each delivery has a receipt of its own");
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - 60_000..=now).contains(&first[0].sent_ms), "sent within the last minute: {}", first[0].sent_ms);
    q.ack(&second[0].receipt).await.unwrap();
}

/// `extend` keeps a message in hand past its first timeout.
pub async fn extend_keeps_it_hidden(q: &dyn Queue, visibility: Duration) {
    q.send(vec!["slow".into()]).await.unwrap();
    let d = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    q.extend(&d.receipt, visibility * 4).await.unwrap();
    assert!(q.receive(1, visibility * 2).await.unwrap().is_empty(), "an extended delivery must stay hidden");
    q.ack(&d.receipt).await.unwrap();
    assert!(q.receive(1, visibility * 3).await.unwrap().is_empty(), "an acked message must not come back");
}

/// `release` makes a message visible at once.
pub async fn release_redelivers_at_once(q: &dyn Queue) {
    q.send(vec!["give-back".into()]).await.unwrap();
    let d = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    q.release(&d.receipt).await.unwrap();
    let again = q.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(again.len(), 1, "a released message must be visible again");
    q.ack(&again[0].receipt).await.unwrap();
}

/// The receipt of an expired delivery is still accepted (SQS may even act on it): a slow
/// worker that finishes after its delivery expired must not fail on its ack.
pub async fn stale_receipts_are_accepted(q: &dyn Queue, visibility: Duration) {
    q.send(vec!["stale".into()]).await.unwrap();
    let old = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    let new = q.receive(1, visibility * 3).await.unwrap().remove(0);
    assert_eq!(new.body, "stale");
    assert!(new.receive_count >= 2);
    q.extend(&old.receipt, visibility).await.unwrap();
    q.ack(&old.receipt).await.unwrap();
    q.ack(&new.receipt).await.unwrap();
    assert!(q.receive(1, visibility * 3).await.unwrap().is_empty(), "an acked message must not come back");
}
