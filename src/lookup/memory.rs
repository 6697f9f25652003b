//! A reference held in memory: a hash map from key to the values of the fields it adds.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use super::{Reader, Source};
use crate::error::Result;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Rows by key, in memory.
#[derive(Debug, Default)]
pub struct MemorySource {
    rows: FastMap<Box<str>, Box<[Value]>>,
}

impl MemorySource {
    /// Add (or replace) the row for `key`.
    pub fn insert(&mut self, key: String, values: Vec<Value>) {
        self.rows.insert(key.into_boxed_str(), values.into_boxed_slice());
    }
}

impl Source for MemorySource {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(MemoryReader(&self.rows)))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

struct MemoryReader<'a>(&'a FastMap<Box<str>, Box<[Value]>>);

impl Reader for MemoryReader<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>> {
        Ok(self.0.get(key).map(|v| Cow::Borrowed(&v[..])))
    }
}
