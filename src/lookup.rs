//! Enrichment: a reference dataset loaded once per job and looked up by key.
//!
//! The whole reference is held in memory (a hash map from key to the added fields), so its
//! size, not the input's, bounds the memory it takes.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::config::{EnrichConfig, OnMissing};
use crate::error::{Error, Result};
use crate::pipeline::{ColumnRule, Record};

/// A loaded reference dataset.
#[derive(Debug)]
pub struct LookupTable {
    key_field: String,
    fields: Vec<String>,
    rows: HashMap<String, Box<[Value]>>,
    on_missing: OnMissing,
    defaults: Box<[Value]>,
}

impl LookupTable {
    /// Load the reference named by `cfg.source`: a CSV or JSON Lines file, or `sqlite:TABLE`
    /// in `db` (the data directory's database).
    pub fn load(cfg: &EnrichConfig, db: &Path) -> Result<Self> {
        let lookup_key = cfg.lookup_key.clone().unwrap_or_else(|| cfg.key.clone());
        let rows = if let Some(table) = cfg.source.strip_prefix("sqlite:") {
            read_sqlite(db, table)?
        } else {
            let path = cfg.source.strip_prefix("file://").unwrap_or(&cfg.source);
            read_file(Path::new(path))?
        };
        Self::from_rows(cfg, &lookup_key, rows)
    }

    fn from_rows(cfg: &EnrichConfig, lookup_key: &str, rows: Vec<(u64, Record)>) -> Result<Self> {
        let source = &cfg.source;
        let fields: Vec<String> = match &cfg.fields {
            Some(f) => f.clone(),
            None => {
                rows.first().map(|(_, r)| r.keys().filter(|k| *k != lookup_key).cloned().collect()).unwrap_or_default()
            }
        };
        let rules: HashMap<&str, ColumnRule> =
            cfg.columns.iter().map(|c| (c.name.as_str(), ColumnRule::from(c))).collect();
        let mut map = HashMap::with_capacity(rows.len());
        for (line, mut row) in rows {
            let at = |column: &str, reason: String| Error::InvalidInput {
                location: source.clone(),
                line: Some(line),
                column: Some(column.to_string()),
                reason,
            };
            let key = match row.get(lookup_key) {
                Some(v) => key_text(v),
                None => return Err(at(lookup_key, "the reference row lacks the lookup key".into())),
            };
            let mut values = Vec::with_capacity(fields.len());
            for f in &fields {
                let v = row.shift_remove(f).ok_or_else(|| at(f, "the reference row lacks this field".into()))?;
                let v = match rules.get(f.as_str()) {
                    Some(rule) => rule.check(v).map_err(|m| at(f, m))?,
                    None => v,
                };
                values.push(v);
            }
            map.insert(key, values.into_boxed_slice());
        }
        let defaults = fields
            .iter()
            .map(|f| cfg.defaults.get(f).map(|v| serde_json::to_value(v).unwrap_or(Value::Null)).unwrap_or(Value::Null))
            .collect();
        Ok(LookupTable { key_field: cfg.key.clone(), fields, rows: map, on_missing: cfg.on_missing, defaults })
    }

    /// The record field looked up.
    pub fn key_field(&self) -> &str {
        &self.key_field
    }

    /// The fields this lookup adds, in order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Reference rows loaded.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no rows were loaded.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Add the reference fields to `rec`. `Err(key)` when the key is missing and the policy
    /// is to reject.
    pub fn enrich(&self, rec: &mut Record) -> std::result::Result<(), String> {
        let key = rec.get(&self.key_field).map(key_text).unwrap_or_default();
        let values = match (self.rows.get(&key), self.on_missing) {
            (Some(v), _) => v,
            (None, OnMissing::Reject) => return Err(key),
            (None, OnMissing::Keep) => {
                for f in &self.fields {
                    rec.entry(f.clone()).or_insert(Value::Null);
                }
                return Ok(());
            }
            (None, OnMissing::Default) => &self.defaults,
        };
        for (f, v) in self.fields.iter().zip(values.iter()) {
            rec.insert(f.clone(), v.clone());
        }
        Ok(())
    }
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Vec<(u64, Record)>> {
    let location = path.display().to_string();
    let text =
        std::fs::read(path).map_err(|e| Error::input(&location, format!("cannot read the enrichment source: {e}")))?;
    let is_jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson" | "json"));
    let mut rows = Vec::new();
    if is_jsonl {
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let rec: Record = serde_json::from_slice(line).map_err(|e| Error::InvalidInput {
                location: location.clone(),
                line: Some(i as u64 + 1),
                column: None,
                reason: format!("not a JSON object: {e}"),
            })?;
            rows.push((i as u64 + 1, rec));
        }
        return Ok(rows);
    }
    let mut rdr = csv::ReaderBuilder::new().from_reader(&text[..]);
    let header = rdr.headers().map_err(|e| Error::input(&location, e.to_string()))?.clone();
    for row in rdr.records() {
        let row = row.map_err(|e| Error::InvalidInput {
            location: location.clone(),
            line: e.position().map(|p| p.line()),
            column: None,
            reason: e.to_string(),
        })?;
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        let rec = header.iter().zip(row.iter()).map(|(h, v)| (h.to_string(), Value::String(v.to_string()))).collect();
        rows.push((line, rec));
    }
    Ok(rows)
}

fn read_sqlite(db: &Path, table: &str) -> Result<Vec<(u64, Record)>> {
    if !crate::config::is_sql_ident(table) {
        return Err(Error::config("enrich.source", format!("{table:?} is not a plain table name")));
    }
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\""))
        .map_err(|e| Error::config("enrich.source", format!("cannot read table {table}: {e}")))?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = Vec::new();
    let mut q = stmt.query([])?;
    let mut n = 0;
    while let Some(row) = q.next()? {
        n += 1;
        let mut rec = Record::new();
        for (i, name) in names.iter().enumerate() {
            use rusqlite::types::ValueRef;
            let v = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::from(i),
                ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            };
            rec.insert(name.clone(), v);
        }
        rows.push((n, rec));
    }
    Ok(rows)
}
