//! Enrichment from a DynamoDB table (feature `aws`): `enrich.source = "dynamodb://TABLE"`.
//!
//! The table's partition key is `enrich.lookup_key` (default `enrich.key`), a string. A chunk's
//! keys are collected in a first pass and fetched with `BatchGetItem`, 100 keys per request,
//! projecting only the fields the job adds; `UnprocessedKeys` are asked for again after a
//! jittered backoff. Rows found and keys missing are cached for the whole job (up to
//! [`CACHE_ENTRIES`], then the cache starts over), so a key is fetched once per job and host.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde_json::Value;

use super::{Reader, Source};
use crate::backends::aws::dynamodb::{backoff, error as ddb_error, from_attr, MAX_STALLED_ROUNDS};
use crate::error::{Error, Result};
use crate::model::column::ColumnRule;
use crate::model::config::EnrichConfig;

/// Keys per `BatchGetItem` request: the service's limit.
pub const BATCH_KEYS: usize = 100;
/// Cached keys (found or missing) before the cache starts over.
pub const CACHE_ENTRIES: usize = 1 << 20;

type Row = Option<Arc<[Value]>>;

/// A DynamoDB reference table with its cache.
#[derive(Debug)]
pub struct DynamoSource {
    client: aws_sdk_dynamodb::Client,
    handle: tokio::runtime::Handle,
    table: String,
    key_attr: String,
    fields: Vec<String>,
    rules: HashMap<String, ColumnRule>,
    cache: Mutex<HashMap<String, Row>>,
}

impl DynamoSource {
    /// Look up `fields` in `table` by its partition key `key_attr`. Lookups block on requests,
    /// so they must run on a runtime's blocking threads (as the pipeline does).
    pub fn open(
        client: aws_sdk_dynamodb::Client,
        cfg: &EnrichConfig,
        table: &str,
        key_attr: String,
        fields: Vec<String>,
    ) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::internal("lookup", "a dynamodb:// reference needs the tokio runtime", e))?;
        let rules = cfg.columns.iter().map(|c| (c.name.clone(), ColumnRule::from(c))).collect();
        Ok(DynamoSource {
            client,
            handle,
            table: table.to_string(),
            key_attr,
            fields,
            rules,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Row>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetch `keys` in batches of [`BATCH_KEYS`]; every key gets an entry (`None`: missing).
    fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Row>> {
        let fields = &self.fields;
        let mut out: HashMap<String, Row> = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(BATCH_KEYS) {
            let rows = self.handle.block_on(self.batch_get(batch, fields))?;
            for k in batch {
                out.insert(k.clone(), rows.get(k).cloned());
            }
        }
        let mut cache = self.cache();
        if cache.len() + out.len() > CACHE_ENTRIES {
            cache.clear();
        }
        cache.extend(out.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(out)
    }

    async fn batch_get(&self, keys: &[String], fields: &[String]) -> Result<HashMap<String, Arc<[Value]>>> {
        let mut names = HashMap::from([("#k".to_string(), self.key_attr.clone())]);
        let mut projection = vec!["#k".to_string()];
        for (i, f) in fields.iter().enumerate() {
            names.insert(format!("#f{i}"), f.clone());
            projection.push(format!("#f{i}"));
        }
        let mut pending: Vec<HashMap<String, AttributeValue>> =
            keys.iter().map(|k| HashMap::from([(self.key_attr.clone(), AttributeValue::S(k.clone()))])).collect();
        let mut found = HashMap::new();
        let mut stalled = 0;
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .projection_expression(projection.join(", "))
                .set_expression_attribute_names(Some(names.clone()))
                .build()
                .map_err(|e| ddb_error("building a BatchGetItem request", e))?;
            let out = self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(|e| {
                ddb_error(format!("BatchGetItem on reference table {}", self.table), e.into_service_error())
            })?;
            let items = out.responses.unwrap_or_default().remove(&self.table).unwrap_or_default();
            let got = items.len();
            for mut item in items {
                let key = match item.remove(&self.key_attr) {
                    Some(AttributeValue::S(s)) => s,
                    Some(AttributeValue::N(n)) => n,
                    _ => continue,
                };
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    let v = item.remove(f).map(from_attr).unwrap_or(Value::Null);
                    values.push(match self.rules.get(f) {
                        Some(rule) => rule.check(v).map_err(|m| Error::InvalidInput {
                            location: format!("dynamodb://{}", self.table),
                            line: None,
                            column: Some(f.clone()),
                            reason: format!("item {key}: {m}"),
                        })?,
                        None => v,
                    });
                }
                found.insert(key, values.into());
            }
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            stalled = if got > 0 { 0 } else { stalled + 1 };
            if stalled >= MAX_STALLED_ROUNDS {
                return Err(Error::Conflict(format!(
                    "reference table {}: {} keys unprocessed in {stalled} attempts in a row",
                    self.table,
                    pending.len()
                )));
            }
            tokio::time::sleep(backoff(stalled.max(1))).await;
        }
        Ok(found)
    }
}

impl Source for DynamoSource {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(DynamoReader { source: self, fetched: HashMap::new() }))
    }

    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// A chunk's lookups: the rows its prefetch brought, then the job's cache, then one request
/// per key for any key it did not prefetch.
struct DynamoReader<'a> {
    source: &'a DynamoSource,
    fetched: HashMap<String, Row>,
}

impl Reader for DynamoReader<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>> {
        let known = match self.fetched.get(key) {
            Some(row) => Some(row.clone()),
            // The cache's lock is released at the end of this statement, before any fetch.
            None => self.source.cache().get(key).cloned(),
        };
        let row = match known {
            Some(row) => row,
            None => self.source.fetch(vec![key.to_string()])?.remove(key).flatten(),
        };
        Ok(row.map(|r| Cow::Owned(r.to_vec())))
    }

    fn prefetch(&mut self, keys: Vec<String>) -> Result<()> {
        let wanted: Vec<String> = {
            let cache = self.source.cache();
            keys.into_iter().filter(|k| !cache.contains_key(k)).collect()
        };
        self.fetched = self.source.fetch(wanted)?;
        Ok(())
    }
}
