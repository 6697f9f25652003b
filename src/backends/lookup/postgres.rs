//! Enrichment from a PostgreSQL table (feature `postgres`): `enrich.source =
//! "postgres://USER@HOST:PORT/DATABASE/TABLE"`, or `"postgres://TABLE"` with the database from
//! the `PG*` environment (see [`crate::backends::postgres`]).
//!
//! The table is looked up by its column `enrich.lookup_key` (default `enrich.key`), which
//! should be its primary key or indexed. A chunk's keys are collected in a first pass and
//! asked for in batches of [`BATCH_KEYS`] (`WHERE key = ANY($1)`, the keys cast to the
//! column's type so that its index serves), selecting only the fields the job adds
//! (`enrich.fields`, which a `postgres://` reference needs), each as JSON (`to_jsonb`), then
//! typed by `[enrich] columns` as a file's values are. Rows found and keys missing are cached
//! for the whole job (up to [`CACHE_ENTRIES`], then the cache starts over).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Reader, Source};
use crate::backends::postgres::{quoted, quoted_table, split_target, Database};
use crate::error::{Error, Result};
use crate::model::column::ColumnRule;
use crate::model::config::EnrichConfig;

/// Keys per query.
pub const BATCH_KEYS: usize = 1000;
/// Cached keys (found or missing) before the cache starts over.
pub const CACHE_ENTRIES: usize = 1 << 20;

type Row = Option<Arc<[Value]>>;

/// A PostgreSQL reference table with its cache.
#[derive(Debug)]
pub struct PostgresSource {
    db: Database,
    handle: tokio::runtime::Handle,
    table: String,
    key_column: String,
    /// The query of a batch of keys: `$1` the keys as text.
    query: tokio::sync::OnceCell<String>,
    rules: HashMap<String, ColumnRule>,
    fields: Vec<String>,
    cache: Mutex<HashMap<String, Row>>,
}

impl PostgresSource {
    /// The reference `target` names (after `postgres://`), looked up by `key_column` for
    /// `fields`. Nothing is connected yet: the first lookup checks the table's columns.
    /// Lookups block on queries, so they must run on a runtime's blocking threads (as the
    /// pipeline does).
    pub fn open(cfg: &EnrichConfig, target: &str, key_column: &str, fields: Vec<String>) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::internal("lookup", "a postgres:// reference needs the tokio runtime", e))?;
        let (url, table) = split_target(target);
        let db = Database::open(url.as_deref(), "enrich.source")?;
        let rules = cfg.columns.iter().map(|c| (c.name.clone(), ColumnRule::from(c))).collect();
        Ok(PostgresSource {
            db,
            handle,
            table,
            key_column: key_column.to_string(),
            query: tokio::sync::OnceCell::new(),
            rules,
            fields,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The query of a batch of keys, made once the table's columns are checked.
    async fn make_query(&self) -> Result<String> {
        let (db, table, key_column) = (&self.db, &self.table, &self.key_column);
        let columns: Vec<(String, String)> = {
            let client = db.client().await?;
            db.columns(&client, table).await?.into_iter().map(|c| (c.name, c.declared)).collect()
        };
        if columns.is_empty() {
            return Err(Error::config("enrich.source", format!("no table {table} on {}", db.shown())));
        }
        let type_of = |name: &str| columns.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
        let key_type = type_of(key_column).ok_or_else(|| {
            Error::config("enrich.lookup_key", format!("table {table} on {} has no column {key_column:?}", db.shown()))
        })?;
        if let Some(missing) = self.fields.iter().find(|f| type_of(f).is_none()) {
            let why = format!("table {table} on {} has no column {missing:?}", db.shown());
            return Err(Error::config("enrich.fields", why));
        }
        let t = quoted_table(table);
        let k = quoted(key_column);
        let values: Vec<String> = self.fields.iter().map(|f| format!(", to_jsonb({})", quoted(f))).collect();
        // Text keys are compared as they are; others as the column's type, so that its index
        // serves (a key that is not of that type fails the batch's cast: see `query`).
        let keys = if key_type == "text" || key_type.starts_with("character") {
            "$1::text[]".to_string()
        } else {
            format!("$1::text[]::{key_type}[]")
        };
        Ok(format!("SELECT {k}::text{} FROM {t} WHERE {k} = ANY({keys})", values.concat()))
    }

    /// The fields a row holds, in order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Row>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetch `keys` in batches; every key gets an entry (`None`: missing).
    fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Row>> {
        let mut out: HashMap<String, Row> = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(BATCH_KEYS) {
            let rows = self.handle.block_on(self.query(batch))?;
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

    async fn query(&self, keys: &[String]) -> Result<HashMap<String, Arc<[Value]>>> {
        let query = self.query.get_or_try_init(|| self.make_query()).await?;
        let client = self.db.client().await?;
        let rows = match client.query(query, &[&keys]).await {
            Ok(rows) => rows,
            // A key that cannot be of the column's type (`abc` for a bigint): no row has it.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION) => {
                return self.one_by_one(&client, query, keys).await;
            }
            Err(e) => return Err(self.db.error(format!("looking up keys in reference table {}", self.table), e)),
        };
        rows.iter().map(|r| self.row(r)).collect()
    }

    /// Keys asked for one at a time, those that cannot be of the key column's type missing.
    async fn one_by_one(
        &self,
        client: &tokio_postgres::Client,
        query: &str,
        keys: &[String],
    ) -> Result<HashMap<String, Arc<[Value]>>> {
        let mut found = HashMap::new();
        for key in keys {
            let one = vec![key.clone()];
            match client.query(query, &[&one]).await {
                Ok(rows) => {
                    for r in &rows {
                        let (k, v) = self.row(r)?;
                        found.insert(k, v);
                    }
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION) => {}
                Err(e) => return Err(self.db.error(format!("looking up a key in reference table {}", self.table), e)),
            }
        }
        Ok(found)
    }

    /// A result row: its key, and its fields typed by the job's `[enrich] columns`.
    fn row(&self, r: &tokio_postgres::Row) -> Result<(String, Arc<[Value]>)> {
        let key: String = r.get(0);
        let mut values = Vec::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            let v: Option<Value> = r.get(i + 1);
            let v = v.unwrap_or(Value::Null);
            values.push(match self.rules.get(f) {
                Some(rule) => rule.check(v).map_err(|m| Error::InvalidInput {
                    location: format!("postgres table {}", self.table),
                    line: None,
                    column: Some(f.clone()),
                    reason: format!("row {key}: {m}"),
                })?,
                None => v,
            });
        }
        Ok((key, values.into()))
    }
}

impl Source for PostgresSource {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(PostgresReader { source: self, fetched: HashMap::new() }))
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// A chunk's lookups: the rows its prefetch brought, then the job's cache, then one query per
/// key for any key it did not prefetch.
struct PostgresReader<'a> {
    source: &'a PostgresSource,
    fetched: HashMap<String, Row>,
}

impl Reader for PostgresReader<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>> {
        let known = match self.fetched.get(key) {
            Some(row) => Some(row.clone()),
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
