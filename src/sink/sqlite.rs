//! SQLite sink: a table in the data directory's database, upserted in transactions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::Connection;
use serde_json::Value;

use super::{Sink, SinkItem};
use crate::config::ColumnType;
use crate::error::{Error, Result};
use crate::record::Record;

/// A sink table. With known fields it has one column per field plus `_key` (the primary
/// key); without, it has `_key` and `record` (the record as JSON).
#[derive(Debug, Clone)]
pub struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
    table: String,
    fields: Option<Vec<String>>,
    upsert: String,
}

/// The columns every sink table has besides the record's fields: the item key and version.
const HIDDEN: [&str; 3] = ["_key", "_job", "_seq"];

/// The statement parameter of the first record field (after key, job and seq).
const FIRST_FIELD: usize = 4;

fn sql_type(t: Option<ColumnType>) -> &'static str {
    match t {
        Some(ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        Some(ColumnType::Decimal) => "REAL",
        Some(_) => "TEXT",
        None => "",
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SqliteSink {
    /// Open the table `table` in the database at `path`, creating it if missing. `fields`
    /// (name, type) are the columns when the record shape is known.
    pub fn open(path: &Path, table: &str, fields: Option<Vec<(String, Option<ColumnType>)>>) -> Result<Self> {
        let conn = crate::ledger::sqlite::connect(path)?;
        let t = quoted(table);
        let (create, names, upsert) = match &fields {
            Some(fields) => {
                let cols: Vec<String> = fields.iter().map(|(n, ty)| format!("{} {}", quoted(n), sql_type(*ty))).collect();
                let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
                let list: Vec<String> = names.iter().map(|n| quoted(n)).collect();
                let marks: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + FIRST_FIELD)).collect();
                let set: Vec<String> = list.iter().map(|c| format!("{c} = excluded.{c}")).collect();
                (
                    format!(
                        "CREATE TABLE IF NOT EXISTS {t} (_key TEXT PRIMARY KEY, _job INTEGER NOT NULL DEFAULT 0, _seq INTEGER NOT NULL, {}) WITHOUT ROWID",
                        cols.join(", ")
                    ),
                    Some(names),
                    format!(
                        "INSERT INTO {t} (_key, _job, _seq, {}) VALUES (?1, ?2, ?3, {}) ON CONFLICT (_key) DO UPDATE SET _job = excluded._job, _seq = excluded._seq, {} WHERE (excluded._job, excluded._seq) >= ({t}._job, {t}._seq)",
                        list.join(", "),
                        marks.join(", "),
                        set.join(", ")
                    ),
                )
            }
            None => (
                format!("CREATE TABLE IF NOT EXISTS {t} (_key TEXT PRIMARY KEY, _job INTEGER NOT NULL DEFAULT 0, _seq INTEGER NOT NULL, record TEXT NOT NULL) WITHOUT ROWID"),
                None,
                format!("INSERT INTO {t} (_key, _job, _seq, record) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (_key) DO UPDATE SET _job = excluded._job, _seq = excluded._seq, record = excluded.record WHERE (excluded._job, excluded._seq) >= ({t}._job, {t}._seq)"),
            ),
        };
        conn.execute(&create, [])
            .map_err(|e| Error::backend("sqlite", format!("cannot create sink table {table}"), e))?;
        let columns = |conn: &rusqlite::Connection| -> Result<Vec<String>> {
            Ok(conn
                .prepare(&format!("PRAGMA table_info({t})"))?
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<rusqlite::Result<_>>()?)
        };
        let mut existing = columns(&conn)?;
        if !existing.iter().any(|c| c == "_job") {
            // A table written before items carried their job: its rows count as the oldest.
            conn.execute(&format!("ALTER TABLE {t} ADD COLUMN _job INTEGER NOT NULL DEFAULT 0"), [])
                .map_err(|e| Error::backend("sqlite", format!("cannot add _job to sink table {table}"), e))?;
            existing = columns(&conn)?;
        }
        let wanted: Vec<String> = match &names {
            Some(n) => n.clone(),
            None => vec!["record".into()],
        };
        let required = ["_key".to_string(), "_job".to_string(), "_seq".to_string()];
        if let Some(missing) = wanted.iter().chain(required.iter()).find(|n| !existing.contains(n)) {
            return Err(Error::config(
                "sink.table",
                format!("table {table} exists without column {missing:?}; drop it or choose another table"),
            ));
        }
        Ok(SqliteSink { conn: Arc::new(Mutex::new(conn)), table: table.to_string(), fields: names, upsert })
    }

    /// Open an existing sink table, taking its shape from the database.
    pub fn existing(path: &Path, table: &str) -> Result<Self> {
        let conn = crate::ledger::sqlite::connect(path)?;
        let columns: Vec<(String, String)> = conn
            .prepare(&format!("PRAGMA table_info({})", quoted(table)))?
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(conn);
        if columns.is_empty() {
            return Err(Error::NotFound(format!("sink table {table} in {}", path.display())));
        }
        let fields: Vec<(String, Option<ColumnType>)> =
            columns.into_iter().filter(|(n, _)| !HIDDEN.contains(&n.as_str())).map(|(n, _)| (n, None)).collect();
        let schemaless = fields.len() == 1 && fields[0].0 == "record";
        Self::open(path, table, if schemaless { None } else { Some(fields) })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn to_sql(v: Option<&Value>) -> ToSqlOutput<'_> {
    match v {
        None | Some(Value::Null) => ToSqlOutput::Owned(SqlValue::Null),
        Some(Value::Bool(b)) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => ToSqlOutput::Owned(SqlValue::Integer(i)),
            None => ToSqlOutput::Owned(SqlValue::Real(n.as_f64().unwrap_or(f64::NAN))),
        },
        Some(Value::String(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Some(other) => ToSqlOutput::Owned(SqlValue::Text(other.to_string())),
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
    }
}

#[async_trait]
impl Sink for SqliteSink {
    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(&this.upsert)?;
                for item in &items {
                    stmt.raw_bind_parameter(1, &item.key)?;
                    // SQLite integers are signed 64-bit; job (ms since 1970) and seq use at
                    // most 63 bits.
                    stmt.raw_bind_parameter(2, item.job as i64)?;
                    stmt.raw_bind_parameter(3, item.seq as i64)?;
                    match &this.fields {
                        Some(fields) => {
                            for (i, value) in crate::record::values_of(&item.record, fields).enumerate() {
                                stmt.raw_bind_parameter(i + FIRST_FIELD, to_sql(value))?;
                            }
                        }
                        None => {
                            let json = serde_json::to_string(&item.record)
                                .map_err(|e| Error::backend("sqlite", "encode record", e))?;
                            stmt.raw_bind_parameter(FIRST_FIELD, json)?;
                        }
                    }
                    stmt.raw_execute()?;
                }
            }
            tx.commit().map_err(|e| Error::backend("sqlite", format!("cannot write to sink table {}", this.table), e))
        })
        .await
        .map_err(|e| Error::backend("sqlite", "sink task failed", e))?
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn.prepare(&format!("SELECT * FROM {}", quoted(&this.table)))?;
            let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
            let mut rows = stmt.query([])?;
            let mut out = BTreeMap::new();
            while let Some(row) = rows.next()? {
                let key: String = row.get("_key")?;
                let rec = match &this.fields {
                    Some(_) => {
                        let mut rec = Record::new();
                        for (i, n) in names.iter().enumerate().filter(|(_, n)| !HIDDEN.contains(&n.as_str())) {
                            rec.insert(n.clone(), from_sql(row.get_ref(i)?));
                        }
                        rec
                    }
                    None => {
                        let text: String = row.get("record")?;
                        serde_json::from_str(&text).map_err(|e| Error::backend("sqlite", "corrupt sink record", e))?
                    }
                };
                out.insert(key, rec);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::backend("sqlite", "sink task failed", e))?
    }
}
