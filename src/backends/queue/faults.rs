//! Fault injection for queues: wrap any [`Queue`] to duplicate sends, drop acks or fail sends, so tests
//! can prove that redelivery never loses or doubles a record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, Queue};
use crate::error::Result;

/// Which faults to inject.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueFaults {
    /// Send every message this many extra times.
    pub extra_copies: u32,
    /// Drop every n-th ack (0: none), so the message is delivered again after its timeout.
    pub drop_every_nth_ack: u64,
    /// Fail every send after this many have succeeded (a sender cut off half-way).
    pub fail_sends_after: Option<u64>,
}

/// A queue that misbehaves as told, within the at-least-once contract.
#[derive(Debug)]
pub struct FaultyQueue {
    inner: Arc<dyn Queue>,
    faults: QueueFaults,
    acks: AtomicU64,
    sends: AtomicU64,
}

impl FaultyQueue {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Queue>, faults: QueueFaults) -> Self {
        FaultyQueue { inner, faults, acks: AtomicU64::new(0), sends: AtomicU64::new(0) }
    }
}

#[async_trait]
impl Queue for FaultyQueue {
    async fn send(&self, bodies: Vec<String>) -> Result<()> {
        let n = self.sends.fetch_add(1, Ordering::Relaxed);
        if self.faults.fail_sends_after.is_some_and(|after| n >= after) {
            return Err(crate::error::Error::backend(
                crate::error::Backend::Injected,
                "send",
                "injected: the sender was cut off",
            ));
        }
        let copies = 1 + self.faults.extra_copies as usize;
        let all = bodies.iter().flat_map(|b| std::iter::repeat_n(b.clone(), copies)).collect();
        self.inner.send(all).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.inner.receive(max, wait).await
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        let n = self.acks.fetch_add(1, Ordering::Relaxed) + 1;
        if self.faults.drop_every_nth_ack > 0 && n % self.faults.drop_every_nth_ack == 0 {
            return Ok(());
        }
        self.inner.ack(receipt).await
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.inner.extend(receipt, timeout).await
    }

    async fn release(&self, receipt: &str) -> Result<()> {
        self.inner.release(receipt).await
    }

    fn ack_cost(&self) -> crate::backends::calls::ApiCalls {
        self.inner.ack_cost()
    }
}
