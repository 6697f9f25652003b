//! SQLite sink: a table in the data directory's database.
//!
//! A job's items are staged first, then merged into the table in key order when the job is
//! gathered ([`Sink::publish`]). Upserting keys in the order records arrive (random, for most
//! inputs) dirties a B-tree page per row in every transaction; staging appends rows in the
//! order of their position in the job (`_seq`), and the merge walks the table once, in key
//! order, in one transaction, so a table never shows half a job. The stage of job `J` is the
//! table `TABLE__stage_J`, rows appended without an index: a re-run of a chunk appends its
//! rows again, and the merge stores each `(key, seq)` once whatever its copies. The merge
//! drops the stage.

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
    /// The columns after `_key, _job, _seq`, quoted and typed, as the table declares them.
    columns: Vec<String>,
}

/// The columns every sink table has besides the record's fields: the item key and version.
const HIDDEN: [&str; 3] = ["_key", "_job", "_seq"];

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
        let (names, column_defs) = match &fields {
            Some(fields) => (
                Some(fields.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
                fields.iter().map(|(n, ty)| format!("{} {}", quoted(n), sql_type(*ty))).collect::<Vec<_>>(),
            ),
            None => (None, vec!["record TEXT NOT NULL".to_string()]),
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (_key TEXT PRIMARY KEY, _job INTEGER NOT NULL DEFAULT 0, _seq INTEGER NOT NULL, {}) WITHOUT ROWID",
            column_defs.join(", ")
        );
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
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
            table: table.to_string(),
            fields: names,
            columns: column_defs,
        })
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

    /// The name of the stage of `job`'s items.
    fn stage(&self, job: u64) -> String {
        format!("{}__stage_{job}", self.table)
    }

    /// The columns after `_key, _job, _seq`, by name.
    fn names(&self) -> Vec<String> {
        match &self.fields {
            Some(f) => f.iter().map(|n| quoted(n)).collect(),
            None => vec!["record".into()],
        }
    }

    /// Stage `items` (all of one job) in one transaction.
    fn stage_items(&self, conn: &mut Connection, job: u64, items: &[SinkItem]) -> Result<()> {
        let stage = quoted(&self.stage(job));
        let names = self.names();
        // Immediate: a transaction that read first (the schema) and then writes fails at once
        // if another connection wrote in between, where waiting for the lock succeeds.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {stage} (_seq INTEGER NOT NULL, _key TEXT NOT NULL, {})",
                self.columns.join(", ")
            ),
            [],
        )?;
        {
            let marks: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + 3)).collect();
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO {stage} (_seq, _key, {}) VALUES (?1, ?2, {})",
                names.join(", "),
                marks.join(", ")
            ))?;
            for item in items {
                // SQLite integers are signed 64-bit; seq uses at most 63 bits.
                stmt.raw_bind_parameter(1, item.seq as i64)?;
                stmt.raw_bind_parameter(2, &item.key)?;
                self.bind_record(&mut stmt, 3, item)?;
                stmt.raw_execute()?;
            }
        }
        tx.commit().map_err(|e| Error::backend("sqlite", format!("cannot write to sink table {}", self.table), e))
    }

    /// Bind an item's record from parameter `first` on.
    fn bind_record(&self, stmt: &mut rusqlite::CachedStatement<'_>, first: usize, item: &SinkItem) -> Result<()> {
        match &self.fields {
            Some(fields) => {
                for (i, value) in crate::record::values_of(&item.record, fields).enumerate() {
                    stmt.raw_bind_parameter(i + first, to_sql(value))?;
                }
            }
            None => {
                let json =
                    serde_json::to_string(&item.record).map_err(|e| Error::backend("sqlite", "encode record", e))?;
                stmt.raw_bind_parameter(first, json)?;
            }
        }
        Ok(())
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
            let mut from = 0;
            // A batch holds one job's items; stage each job's run of them.
            while from < items.len() {
                let job = items[from].job;
                let to = items[from..].iter().position(|i| i.job != job).map_or(items.len(), |n| from + n);
                this.stage_items(&mut conn, job, &items[from..to])?;
                from = to;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::backend("sqlite", "sink task failed", e))?
    }

    async fn publish(&self, job: u64) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let (name, t) = (this.stage(job), quoted(&this.table));
            let stage = quoted(&name);
            let columns = this.names();
            let names = columns.join(", ");
            let set: Vec<String> = columns.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let staged: bool =
                tx.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?.exists([&name])?;
            if !staged {
                // Nothing written, or published already.
                return Ok(());
            }
            // Of one key's items the later in the job comes later, and wins.
            tx.execute(
                &format!(
                    "INSERT INTO {t} (_key, _job, _seq, {names}) SELECT _key, ?1, _seq, {names} FROM {stage} WHERE true \
                     ORDER BY _key, _seq ON CONFLICT (_key) DO UPDATE SET _job = excluded._job, _seq = excluded._seq, {} \
                     WHERE (excluded._job, excluded._seq) >= ({t}._job, {t}._seq)",
                    set.join(", ")
                ),
                [job as i64],
            )?;
            tx.execute(&format!("DROP TABLE {stage}"), [])?;
            tx.commit().map_err(|e| Error::backend("sqlite", format!("cannot merge into sink table {}", this.table), e))
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
