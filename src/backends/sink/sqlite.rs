//! SQLite sink: a table in the data directory's database.
//!
//! A job's items are staged first, then merged into the table in key order when the job is
//! gathered ([`Sink::publish`]). Upserting keys in the order records arrive (random, for most
//! inputs) dirties a B-tree page per row in every transaction; instead each write appends its
//! batch, sorted by key, as a block to a file of the job's [`Stage`] (beside the database, in
//! `DATABASE.stage/TABLE/JOB/`), and the publish merges every block in key order and upserts
//! the rows in one transaction: one ordered pass over the B-tree, and a table that never shows
//! half a job. A re-run of a chunk stages its rows again; the merge keeps one row per key (the
//! latest of the job), and the upsert keeps a stored row of a later job. The publish removes
//! the stage after its transaction commits; a publish cut off before that finds the stage
//! again and upserts the same rows, which changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::Connection;
use serde_json::Value;

use super::stage::{BlockBuilder, Cell, Stage};
use super::{Sink, SinkItem};
use crate::error::{Error, Result};
use crate::model::config::ColumnType;
use crate::model::record::{Projection, Record};

/// `sqlite` (`sqlite://TABLE`): a table in the data directory's SQLite database.
pub static KIND: Kind = Kind;

/// The kind of [`KIND`].
pub struct Kind;

#[async_trait]
impl super::target::SinkKind for Kind {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn refuse_table(&self, table: Option<&str>) -> Option<String> {
        let table = table.filter(|t| !super::target::is_sql_ident(t))?;
        Some(format!("{table:?} is not a plain table name (letters, digits, _)"))
    }

    /// The database is a file on one machine.
    fn shared(&self) -> bool {
        false
    }

    fn open(
        &self,
        _: &super::SinkSpec,
        shape: &super::SinkShape,
        database: &Path,
        _: &crate::backends::cloud::Cloud,
    ) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(SqliteSink::open_exact(database, &shape.table, shape.fields.clone(), &shape.exact)?))
    }

    async fn reach(&self, table: Option<&str>, database: &Path, _: &crate::backends::cloud::Cloud) -> Result<String> {
        let dir = database.parent().unwrap_or(Path::new("."));
        let table = table.unwrap_or("named after the first input");
        match dir.is_dir() || std::fs::create_dir_all(dir).is_ok() {
            true => Ok(format!("sink: SQLite table {table} in {}", database.display())),
            false => Err(crate::error::Error::config("--data-dir", format!("cannot create {}", dir.display()))),
        }
    }
}

/// A sink table. With known fields it has one column per field plus `_key` (the primary
/// key); without, it has `_key` and `record` (the record as JSON).
#[derive(Debug, Clone)]
pub struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
    table: String,
    fields: Option<Vec<String>>,
    /// Where jobs' items are staged: one directory per job in here.
    stage_root: PathBuf,
    /// This process's open stage file per job.
    files: Arc<Mutex<HashMap<u64, File>>>,
    /// What its writes did (no write units: SQLite has none).
    figures: Arc<Mutex<super::SinkFigures>>,
    /// Per field, the scale of an exact decimal, stored as text of that many decimals.
    scales: Vec<Option<u32>>,
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
        Self::open_exact(path, table, fields, &[])
    }

    /// [`SqliteSink::open`], the `exact` decimal fields (name, precision, scale) stored as
    /// `TEXT` of exactly `scale` decimals (`142509.70`): no float rounds them, and they sort and
    /// compare as their numbers do once cast (`CAST(x AS REAL)`, or the decimal extension).
    pub fn open_exact(
        path: &Path,
        table: &str,
        fields: Option<Vec<(String, Option<ColumnType>)>>,
        exact: &[(String, u32, u32)],
    ) -> Result<Self> {
        let conn = crate::backends::ledger::sqlite::connect(path)?;
        let t = quoted(table);
        let scale = |n: &str| exact.iter().find(|(e, ..)| e == n).map(|(_, _, s)| *s);
        let scales: Vec<Option<u32>> = fields.iter().flatten().map(|(n, _)| scale(n)).collect();
        let (names, column_defs) = match &fields {
            Some(fields) => (
                Some(fields.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
                fields
                    .iter()
                    .map(|(n, ty)| {
                        let ty = if scale(n).is_some() { "TEXT" } else { sql_type(*ty) };
                        format!("{} {ty}", quoted(n))
                    })
                    .collect::<Vec<_>>(),
            ),
            None => (None, vec!["record TEXT NOT NULL".to_string()]),
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (_key TEXT PRIMARY KEY, _job INTEGER NOT NULL DEFAULT 0, _seq INTEGER NOT NULL, {}) WITHOUT ROWID",
            column_defs.join(", ")
        );
        conn.execute(&create, []).map_err(|e| {
            Error::backend(crate::error::Backend::Sqlite, format!("cannot create sink table {table}"), e)
        })?;
        let columns = |conn: &rusqlite::Connection| -> Result<Vec<String>> {
            Ok(conn
                .prepare(&format!("PRAGMA table_info({t})"))?
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<rusqlite::Result<_>>()?)
        };
        let mut existing = columns(&conn)?;
        if !existing.iter().any(|c| c == "_job") {
            // A table written before items carried their job: its rows count as the oldest.
            conn.execute(&format!("ALTER TABLE {t} ADD COLUMN _job INTEGER NOT NULL DEFAULT 0"), []).map_err(|e| {
                Error::backend(crate::error::Backend::Sqlite, format!("cannot add _job to sink table {table}"), e)
            })?;
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
        // A directory name for the table: its letters and digits, any other byte in hex.
        let dir: String =
            table
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'_' {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect();
        let mut stage_root = path.as_os_str().to_owned();
        stage_root.push(".stage");
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
            table: table.to_string(),
            fields: names,
            stage_root: PathBuf::from(stage_root).join(dir),
            files: Arc::default(),
            figures: Arc::default(),
            scales,
        })
    }

    /// Open an existing sink table, taking its shape from the database.
    pub fn existing(path: &Path, table: &str) -> Result<Self> {
        let conn = crate::backends::ledger::sqlite::connect(path)?;
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

    /// The stage of `job`'s items.
    fn stage(&self, job: u64) -> Stage {
        Stage::new(self.stage_root.join(job.to_string()))
    }

    /// The columns after `_key, _job, _seq`, by name.
    fn names(&self) -> Vec<String> {
        match &self.fields {
            Some(f) => f.iter().map(|n| quoted(n)).collect(),
            None => vec!["record".into()],
        }
    }

    /// Stage `items` (all of one job) as one block, sorted by key.
    fn stage_items(&self, job: u64, items: &[SinkItem]) -> Result<()> {
        let mut order: Vec<&SinkItem> = items.iter().collect();
        order.sort_unstable_by(|a, b| (&a.key, a.seq).cmp(&(&b.key, b.seq)));
        let mut block = BlockBuilder::default();
        let mut columns = self.fields.clone().map(Projection::new);
        for item in order {
            match &mut columns {
                Some(columns) => {
                    block.row(&item.key, item.seq, columns.fields().len());
                    let mut at = 0;
                    columns.each(&item.record, |value| {
                        match (value, self.scales.get(at).copied().flatten()) {
                            (Some(Value::Number(n)), Some(scale)) => {
                                block.cell(Cell::Text(&crate::model::column::exact_text(n, scale)))
                            }
                            // Objects and arrays as their JSON text.
                            (Some(v @ (Value::Object(_) | Value::Array(_))), _) => {
                                block.cell(Cell::Text(&v.to_string()))
                            }
                            (other, _) => block.cell(to_cell(other)),
                        }
                        at += 1;
                    });
                }
                None => {
                    let json = serde_json::to_string(&item.record)
                        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "encode record", e))?;
                    block.row(&item.key, item.seq, 1);
                    block.cell(Cell::Text(&json));
                }
            }
        }
        let block = block.finish();
        let stage = self.stage(job);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let file = match files.entry(job) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(stage.create_file()?),
        };
        let appended = stage.append(file, &block);
        if appended.is_err() {
            // The file may end in part of this block: later blocks go to a new file.
            files.remove(&job);
        }
        appended
    }

    /// Upsert `items` into the table now, in key order, in one transaction: a stream's
    /// batch, which no gather publishes (and which is far smaller than a job's stage).
    fn upsert_blocking(&self, items: &[SinkItem]) -> Result<()> {
        let mut order: Vec<&SinkItem> = items.iter().collect();
        order.sort_unstable_by(|a, b| (&a.key, a.job, a.seq).cmp(&(&b.key, b.job, b.seq)));
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare(&self.upsert_sql())?;
            let mut columns = self.fields.clone().map(Projection::new);
            for item in order {
                upsert.raw_bind_parameter(1, item.key.as_str())?;
                upsert.raw_bind_parameter(2, item.job as i64)?;
                upsert.raw_bind_parameter(3, item.seq as i64)?;
                match &mut columns {
                    Some(columns) => {
                        let mut i = 4;
                        let mut bound = Ok(());
                        columns.each(&item.record, |value| {
                            let text;
                            let cell = match (value, self.scales.get(i - 4).copied().flatten()) {
                                (Some(Value::Number(n)), Some(scale)) => {
                                    text = crate::model::column::exact_text(n, scale);
                                    Cell::Text(&text)
                                }
                                (Some(v @ (Value::Object(_) | Value::Array(_))), _) => {
                                    text = v.to_string();
                                    Cell::Text(&text)
                                }
                                (other, _) => to_cell(other),
                            };
                            if bound.is_ok() {
                                bound = upsert.raw_bind_parameter(i, cell_sql(cell));
                            }
                            i += 1;
                        });
                        bound?;
                    }
                    None => {
                        let json = serde_json::to_string(&item.record)
                            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "encode record", e))?;
                        upsert.raw_bind_parameter(4, json)?;
                    }
                }
                upsert.raw_execute()?;
            }
        }
        tx.commit().map_err(|e| {
            Error::backend(crate::error::Backend::Sqlite, format!("cannot upsert into sink table {}", self.table), e)
        })
    }

    /// The statement that upserts one row (`_key`, `_job`, `_seq`, then the columns) unless
    /// the stored row has a later version.
    fn upsert_sql(&self) -> String {
        let t = quoted(&self.table);
        let columns = self.names();
        let set: Vec<String> = columns.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        let marks: Vec<String> = (0..columns.len()).map(|i| format!("?{}", i + 4)).collect();
        // A stored row of a later job, or a later record of this one, stays.
        format!(
            "INSERT INTO {t} (_key, _job, _seq, {}) VALUES (?1, ?2, ?3, {}) \
             ON CONFLICT (_key) DO UPDATE SET _job = excluded._job, _seq = excluded._seq, {} \
             WHERE (excluded._job, excluded._seq) >= ({t}._job, {t}._seq)",
            columns.join(", "),
            marks.join(", "),
            set.join(", ")
        )
    }

    /// Upsert every staged row of `job` in key order, in one transaction, then drop the stage.
    fn publish_blocking(&self, job: u64) -> Result<()> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
        let stage = self.stage(job);
        if !stage.exists() {
            // Nothing written, or published already.
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare(&self.upsert_sql())?;
            stage.merge(&mut |row| {
                upsert.raw_bind_parameter(1, row.key)?;
                // SQLite integers are signed 64-bit; job and seq use at most 63 bits.
                upsert.raw_bind_parameter(2, job as i64)?;
                upsert.raw_bind_parameter(3, row.seq as i64)?;
                for (i, cell) in row.cells().enumerate() {
                    upsert.raw_bind_parameter(i + 4, cell_sql(cell))?;
                }
                upsert.raw_execute()?;
                Ok(())
            })?;
        }
        let upserted = started.elapsed();
        tx.commit().map_err(|e| {
            Error::backend(crate::error::Backend::Sqlite, format!("cannot merge into sink table {}", self.table), e)
        })?;
        tracing::debug!(
            table = %self.table,
            upsert_ms = upserted.as_millis() as u64,
            commit_ms = (started.elapsed() - upserted).as_millis() as u64,
            "staged rows upserted"
        );
        // The rows are stored: a stage left behind is merged again, which changes nothing.
        if let Err(e) = stage.remove() {
            tracing::warn!(table = %self.table, "cannot remove a published stage: {e}");
        }
        Ok(())
    }
}

fn to_cell(v: Option<&Value>) -> Cell<'_> {
    match v {
        None | Some(Value::Null) => Cell::Null,
        Some(Value::Bool(b)) => Cell::Int(i64::from(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Some(Value::String(s)) => Cell::Text(s),
        // Objects and arrays are staged as their JSON text by the caller (see `stage_items`).
        Some(Value::Object(_) | Value::Array(_)) => Cell::Null,
    }
}

fn cell_sql(c: Cell<'_>) -> ToSqlOutput<'_> {
    match c {
        Cell::Null => ToSqlOutput::Owned(SqlValue::Null),
        Cell::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(i)),
        Cell::Real(f) => ToSqlOutput::Owned(SqlValue::Real(f)),
        Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Cell::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
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

impl SqliteSink {
    /// Count a batch of `items` written in one request, here and for the writing task.
    fn count(&self, items: usize) {
        let batch = super::SinkFigures { requests: 1, items_written: items as u64, ..Default::default() };
        self.figures.lock().unwrap_or_else(|p| p.into_inner()).add(&batch);
        super::figures::record(&batch);
    }
}

#[async_trait]
impl Sink for SqliteSink {
    fn stages(&self) -> bool {
        true
    }

    fn figures(&self) -> Option<super::SinkFigures> {
        Some(self.figures.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        let this = self.clone();
        let n = items.len();
        let staged = tokio::task::spawn_blocking(move || {
            let mut from = 0;
            // A batch holds one job's items; stage each job's run of them.
            while from < items.len() {
                let job = items[from].job;
                let to = items[from..].iter().position(|i| i.job != job).map_or(items.len(), |n| from + n);
                this.stage_items(job, &items[from..to])?;
                from = to;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "sink task failed", e))?;
        staged.inspect(|()| self.count(n))
    }

    async fn upsert(&self, items: Vec<SinkItem>) -> Result<()> {
        let this = self.clone();
        let n = items.len();
        let stored = tokio::task::spawn_blocking(move || this.upsert_blocking(&items))
            .await
            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "sink task failed", e))?;
        stored.inspect(|()| self.count(n))
    }

    async fn publish(&self, job: u64) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.publish_blocking(job))
            .await
            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "sink task failed", e))?
    }

    async fn discard(&self, job: u64) -> Result<()> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
        let stage = self.stage(job);
        tokio::task::spawn_blocking(move || stage.remove())
            .await
            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "sink task failed", e))?
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
                        serde_json::from_str(&text)
                            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "corrupt sink record", e))?
                    }
                };
                out.insert(key, rec);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "sink task failed", e))?
    }
}
