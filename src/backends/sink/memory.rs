//! In-memory sink, for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Sink, SinkItem};
use crate::error::Result;
use crate::model::record::Record;

/// An item's `(job, seq)`.
type Version = (u64, u64);

/// A sink that keeps items in a map.
#[derive(Debug, Default)]
pub struct MemorySink {
    items: Mutex<BTreeMap<String, (Version, Record)>>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        let mut map = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for item in items {
            match map.get(&item.key) {
                Some((version, _)) if *version > item.version() => {}
                _ => {
                    map.insert(item.key.clone(), (item.version(), item.record.into_map()));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, _job: u64) -> Result<()> {
        // Written in place: nothing is staged.
        Ok(())
    }

    async fn discard(&self, _job: u64) -> Result<()> {
        Ok(())
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        let map = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.iter().map(|(k, (_, r))| (k.clone(), r.clone())).collect())
    }
}
