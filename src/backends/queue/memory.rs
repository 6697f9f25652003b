//! In-process queue: the default for `sluicebox run`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Delivery, Queue};
use crate::error::Result;

#[derive(Debug)]
struct Message {
    body: String,
    sent_ms: i64,
    visible_at: Instant,
    receipt: Option<String>,
    receive_count: u32,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    messages: BTreeMap<u64, Message>,
}

/// A queue in memory with SQS semantics (visibility timeout, receipts, receive counts).
/// Time is `tokio::time`, so tests can pause it.
#[derive(Debug)]
pub struct MemoryQueue {
    visibility: Duration,
    state: Mutex<State>,
    sent: Notify,
}

impl MemoryQueue {
    /// A queue whose deliveries stay invisible for `visibility`.
    pub fn new(visibility: Duration) -> Self {
        MemoryQueue { visibility, state: Mutex::new(State::default()), sent: Notify::new() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Messages not yet acked (visible or in flight).
    pub fn len(&self) -> usize {
        self.with(|s| s.messages.len())
    }

    /// Whether every message was acked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take visible messages, or say when the next one becomes visible.
    fn take(&self, max: usize) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        self.with(|s| {
            let mut out = Vec::new();
            let mut next: Option<Instant> = None;
            for (id, m) in s.messages.iter_mut() {
                if out.len() == max {
                    break;
                }
                if m.visible_at > now {
                    next = Some(next.map_or(m.visible_at, |n| n.min(m.visible_at)));
                    continue;
                }
                m.receive_count += 1;
                let receipt = format!("{id}:{}", m.receive_count);
                m.receipt = Some(receipt.clone());
                m.visible_at = now + self.visibility;
                let (body, receive_count, sent_ms) = (m.body.clone(), m.receive_count, m.sent_ms);
                out.push(Delivery { body, receipt, receive_count, sent_ms, id: id.to_string() });
            }
            (out, next)
        })
    }

    /// Apply `f` to the message if `receipt` is its current receipt.
    fn by_receipt(&self, receipt: &str, f: impl FnOnce(&mut State, u64)) {
        let id = receipt.split(':').next().and_then(|id| id.parse::<u64>().ok());
        self.with(|s| {
            if let Some(id) = id {
                if s.messages.get(&id).and_then(|m| m.receipt.as_deref()) == Some(receipt) {
                    f(s, id);
                }
            }
        });
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, bodies: Vec<String>) -> Result<()> {
        let now = Instant::now();
        self.with(|s| {
            for body in bodies {
                let id = s.next_id;
                s.next_id += 1;
                let sent_ms = chrono::Utc::now().timestamp_millis();
                s.messages.insert(id, Message { body, sent_ms, visible_at: now, receipt: None, receive_count: 0 });
            }
        });
        self.sent.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.sent.notified();
            let (got, next) = self.take(max.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.by_receipt(receipt, |s, id| {
            s.messages.remove(&id);
        });
        Ok(())
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.by_receipt(receipt, |s, id| {
            if let Some(m) = s.messages.get_mut(&id) {
                m.visible_at = Instant::now() + timeout;
            }
        });
        Ok(())
    }

    async fn release(&self, receipt: &str) -> Result<()> {
        self.by_receipt(receipt, |s, id| {
            if let Some(m) = s.messages.get_mut(&id) {
                m.visible_at = Instant::now();
                m.receipt = None;
            }
        });
        self.sent.notify_waiters();
        Ok(())
    }
}
