//! In-memory sink, for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Sink, SinkItem};
use crate::error::Result;
use crate::pipeline::Record;

/// A sink that keeps items in a map, and counts write calls.
#[derive(Debug, Default)]
pub struct MemorySink {
    items: Mutex<BTreeMap<String, Record>>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        let mut map = self.items.lock().unwrap_or_else(|p| p.into_inner());
        map.extend(items);
        Ok(())
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        Ok(self.items.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
