//! Enrichment from a DynamoDB table (feature `aws`): `enrich.source = "dynamodb://TABLE"`.
//!
//! The table's partition key is `enrich.lookup_key` (default `enrich.key`), a string. A chunk's
//! keys are collected in a first pass and fetched with `BatchGetItem`, 100 keys per request,
//! projecting only the fields the job adds; `UnprocessedKeys` are asked for again after a
//! jittered backoff. Rows found and keys missing are cached for the whole job (up to
//! [`CACHE_ENTRIES`], then the cache starts over), so a key is fetched once per job and host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde_json::Value;

use crate::config::EnrichConfig;
use crate::error::{Error, Result};
use crate::pipeline::ColumnRule;
use crate::sink::dynamodb::{backoff, from_attr, MAX_STALLED_ROUNDS};

/// Keys per `BatchGetItem` request: the service's limit.
pub const BATCH_KEYS: usize = 100;
/// Cached keys (found or missing) before the cache starts over.
pub const CACHE_ENTRIES: usize = 1 << 20;

type Row = Option<Arc<[Value]>>;

/// A DynamoDB reference table with its cache.
#[derive(Debug)]
pub struct DynamoRows {
    client: aws_sdk_dynamodb::Client,
    handle: tokio::runtime::Handle,
    table: String,
    key_attr: String,
    rules: HashMap<String, ColumnRule>,
    cache: Mutex<HashMap<String, Row>>,
}

fn ddb_error(context: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("dynamodb", context, e)
}

impl DynamoRows {
    /// Open `table`; called on a runtime's blocking thread (lookups block on requests).
    pub fn open(cfg: &EnrichConfig, table: &str, key_attr: String) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::backend("lookup", "a dynamodb:// reference needs the tokio runtime", e))?;
        let client = crate::aws::dynamodb(&handle.block_on(crate::aws::sdk_config()));
        let rules = cfg.columns.iter().map(|c| (c.name.clone(), ColumnRule::from(c))).collect();
        Ok(DynamoRows { client, handle, table: table.to_string(), key_attr, rules, cache: Mutex::new(HashMap::new()) })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Row>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is cached (found or known missing).
    pub fn cached(&self, key: &str) -> bool {
        self.cache().contains_key(key)
    }

    /// One key's row (from the cache, else fetched alone).
    pub fn get(&self, key: &str, fields: &[String]) -> Result<Row> {
        if let Some(row) = self.cache().get(key) {
            return Ok(row.clone());
        }
        Ok(self.fetch(vec![key.to_string()], fields)?.remove(key).flatten())
    }

    /// Fetch `keys` in batches of [`BATCH_KEYS`]; every key gets an entry (`None`: missing).
    pub fn fetch(&self, keys: Vec<String>, fields: &[String]) -> Result<HashMap<String, Row>> {
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
