//! PostgreSQL sink (feature `postgres`): a table in a database the rest of a stack reads.
//!
//! `[sink] type = "postgres"` with `table = "orders"` (or `schema.orders`) and the database in
//! `[sink] database` or the `PG*` environment; or `--sink postgres://TABLE`, or
//! `--sink postgres://USER@HOST:PORT/DATABASE/TABLE` (see [`crate::backends::postgres`] for
//! the connection, its password and TLS).
//!
//! The table is created from the job's declared columns with real types (`bigint`,
//! `double precision` for a decimal, `boolean`, `date`, `timestamptz`, `text`; `jsonb` for a
//! record without declared fields), beside `_key` (its primary key) and the version `_job`,
//! `_seq`; an existing table is checked, and a column missing or of another type is named.
//!
//! **A job's rows are staged, then published at once.** Every worker loads its chunks' rows
//! with binary `COPY` into the job's own stage, an unlogged table `TABLE__stage_JOB`, and
//! many workers load at once. The gather publishes the job in one transaction: one row per
//! key from the stage (the latest of the job), `INSERT … ON CONFLICT (_key) DO UPDATE … WHERE`
//! the stored version is not newer, then the stage is dropped. Readers never see half a job;
//! a `COPY` cut off stores nothing, a chunk done twice stages its rows twice and the publish
//! keeps one, and a publish cut off stores nothing and is done again. A stream's rows go the
//! same way through a temporary table in one transaction ([`Sink::upsert`]).
//!
//! Text cannot hold a NUL character in PostgreSQL: one is written as U+FFFD.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, Utc};
use futures::pin_mut;
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::{Sink, SinkItem, SinkLimits, SinkShape, SinkSpec};
use crate::backends::cloud::Cloud;
use crate::backends::postgres::{quoted, quoted_table, split_target, Database};
use crate::error::{Error, Result};
use crate::model::config::ColumnType;
use crate::model::record::{Projection, Record};

/// `postgres` (`postgres://TABLE`, `postgres://USER@HOST:PORT/DATABASE/TABLE`).
pub static KIND: Kind = Kind;

/// The kind of [`KIND`].
pub struct Kind;

/// Whether `table` is `NAME` or `SCHEMA.NAME` of plain identifiers.
fn plain_table(table: &str) -> bool {
    let parts: Vec<&str> = table.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| super::target::is_sql_ident(p))
}

#[async_trait]
impl super::target::SinkKind for Kind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn refuse_table(&self, table: Option<&str>) -> Option<String> {
        let Some(target) = table else {
            return Some("name the table: postgres://TABLE, or postgres://USER@HOST:PORT/DATABASE/TABLE".into());
        };
        let (url, table) = split_target(target);
        if let Some(why) = url.as_deref().and_then(crate::backends::postgres::refuse_password) {
            return Some(why);
        }
        (!plain_table(&table))
            .then(|| format!("{table:?} is not a plain table name (NAME or SCHEMA.NAME: letters, digits, _)"))
    }

    fn shared(&self) -> bool {
        true
    }

    fn open(&self, spec: &SinkSpec, shape: &SinkShape, _: &Path, _: &Cloud) -> Result<Arc<dyn Sink>> {
        let (url, table) = split_target(&shape.table);
        let (url, key) = match url {
            Some(url) => (Some(url), "--sink"),
            None => (spec.database.clone(), "sink.database"),
        };
        let db = Database::open(url.as_deref(), key)?;
        Ok(Arc::new(PostgresSink::new(db, &table, shape.fields.clone()).exact(&shape.exact)))
    }

    async fn reach(&self, table: Option<&str>, _: &Path, _: &Cloud) -> Result<String> {
        let (url, table) = split_target(table.unwrap_or_default());
        let db = Database::open(url.as_deref(), "sink.database")?;
        let client = db.client().await?;
        let version: String =
            client.query_one("SHOW server_version", &[]).await.map_err(|e| db.error("SHOW server_version", e))?.get(0);
        let exists = !db.columns(&client, &table).await?.is_empty();
        let state = if exists { "exists" } else { "will be created" };
        Ok(format!("sink: PostgreSQL {version} table {table} on {} ({state})", db.shown()))
    }
}

/// How a column is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Int,
    Float,
    /// `numeric(precision, scale)`.
    Numeric(u32, u32),
    Bool,
    Date,
    Timestamp,
    Text,
    Json,
}

impl Col {
    fn of(t: Option<ColumnType>) -> Col {
        match t {
            Some(ColumnType::Integer) => Col::Int,
            Some(ColumnType::Decimal) => Col::Float,
            Some(ColumnType::Boolean) => Col::Bool,
            Some(ColumnType::Date) => Col::Date,
            Some(ColumnType::Timestamp) => Col::Timestamp,
            Some(ColumnType::String) | None => Col::Text,
        }
    }

    fn pg_type(self) -> Type {
        match self {
            Col::Int => Type::INT8,
            Col::Float => Type::FLOAT8,
            Col::Numeric(..) => Type::NUMERIC,
            Col::Bool => Type::BOOL,
            Col::Date => Type::DATE,
            Col::Timestamp => Type::TIMESTAMPTZ,
            Col::Text => Type::TEXT,
            Col::Json => Type::JSONB,
        }
    }

    /// Its SQL type in a `CREATE TABLE`.
    fn declared(self) -> String {
        match self {
            Col::Numeric(p, s) => format!("numeric({p}, {s})"),
            other => other.sql().to_string(),
        }
    }

    /// Its SQL type, as `information_schema.columns.data_type` names it.
    fn sql(self) -> &'static str {
        match self {
            Col::Int => "bigint",
            Col::Float => "double precision",
            Col::Numeric(..) => "numeric",
            Col::Bool => "boolean",
            Col::Date => "date",
            Col::Timestamp => "timestamp with time zone",
            Col::Text => "text",
            Col::Json => "jsonb",
        }
    }
}

/// One value as a cell of a binary `COPY`.
#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Numeric(rust_decimal::Decimal),
    Bool(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Text(String),
    Json(Value),
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Float(v) => v.to_sql(ty, out),
            Cell::Numeric(v) => v.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::Date(v) => v.to_sql(ty, out),
            Cell::Timestamp(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `value` as a cell of a `col` column, or why it cannot be one.
fn cell(col: Col, value: Option<&Value>) -> std::result::Result<Cell, String> {
    let v = match value {
        None | Some(Value::Null) => return Ok(Cell::Null),
        Some(v) => v,
    };
    let text = || match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bad = || format!("{v} is not a {}", col.sql());
    Ok(match col {
        Col::Int => Cell::Int(v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).ok_or_else(bad)?),
        Col::Float => {
            Cell::Float(v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).ok_or_else(bad)?)
        }
        Col::Numeric(_, scale) => {
            let n = v.as_number().ok_or_else(bad)?;
            Cell::Numeric(crate::model::column::exact_text(n, scale).parse().map_err(|_| bad())?)
        }
        Col::Bool => Cell::Bool(v.as_bool().ok_or_else(bad)?),
        Col::Date => {
            Cell::Date(v.as_str().and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()).ok_or_else(bad)?)
        }
        Col::Timestamp => Cell::Timestamp(
            v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).ok_or_else(bad)?.with_timezone(&Utc),
        ),
        Col::Text => Cell::Text(text().replace('\0', "\u{fffd}")),
        Col::Json => Cell::Json(v.clone()),
    })
}

/// A cell read back as the value a record holds.
fn read_cell(row: &tokio_postgres::Row, i: usize, col: Col) -> std::result::Result<Value, tokio_postgres::Error> {
    Ok(match col {
        Col::Int => row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::from),
        Col::Float => row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, Value::from),
        Col::Numeric(..) => row
            .try_get::<_, Option<rust_decimal::Decimal>>(i)?
            .and_then(|d| d.to_string().parse::<f64>().ok())
            .map_or(Value::Null, Value::from),
        Col::Bool => row.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, Value::from),
        Col::Date => row.try_get::<_, Option<NaiveDate>>(i)?.map_or(Value::Null, |d| Value::from(d.to_string())),
        Col::Timestamp => row
            .try_get::<_, Option<DateTime<Utc>>>(i)?
            .map_or(Value::Null, |t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
        Col::Text => row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::from),
        Col::Json => row.try_get::<_, Option<Value>>(i)?.unwrap_or(Value::Null),
    })
}

/// The longest key: a B-tree index entry holds about 2.7 KB.
const MAX_KEY_BYTES: usize = 2048;

/// A sink table in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresSink {
    db: Database,
    /// `NAME` or `SCHEMA.NAME`.
    table: String,
    /// The record's fields and how each is written; `None`: the record as `jsonb`.
    fields: Option<Vec<(String, Col)>>,
    /// The table was created or checked.
    ready: tokio::sync::OnceCell<()>,
}

impl PostgresSink {
    /// The table `table` in `db`, with `fields` (name, type) when the record shape is known.
    /// Nothing is connected until the first write.
    pub fn new(db: Database, table: &str, fields: Option<Vec<(String, Option<ColumnType>)>>) -> Self {
        let fields = fields.map(|f| f.into_iter().map(|(n, t)| (n, Col::of(t))).collect());
        PostgresSink { db, table: table.to_string(), fields, ready: tokio::sync::OnceCell::new() }
    }

    /// The existing table `table` in `db`, its shape read from the database.
    pub async fn existing(db: Database, table: &str) -> Result<Self> {
        let client = db.client().await?;
        let columns: Vec<(String, String)> =
            db.columns(&client, table).await?.into_iter().map(|c| (c.name, c.base_type)).collect();
        drop(client);
        if columns.is_empty() {
            return Err(Error::NotFound(format!("sink table {table} on {}", db.shown())));
        }
        let fields: Vec<(String, Col)> = columns
            .into_iter()
            .filter(|(n, _)| !["_key", "_job", "_seq"].contains(&n.as_str()))
            .map(|(n, ty)| {
                // A numeric column's scale is not needed to read it.
                let col = [Col::Int, Col::Float, Col::Numeric(0, 0), Col::Bool, Col::Date, Col::Timestamp, Col::Json]
                    .into_iter()
                    .find(|c| c.sql() == ty)
                    .unwrap_or(Col::Text);
                (n, col)
            })
            .collect();
        let schemaless = matches!(&fields[..], [(n, Col::Json)] if n == "record");
        let fields = (!schemaless).then_some(fields);
        Ok(PostgresSink { db, table: table.to_string(), fields, ready: tokio::sync::OnceCell::new() })
    }

    /// Its `exact` decimal fields (name, precision, scale) as `numeric(precision, scale)`.
    pub fn exact(mut self, exact: &[(String, u32, u32)]) -> Self {
        for (name, col) in self.fields.iter_mut().flatten() {
            if let Some((_, p, s)) = exact.iter().find(|(n, ..)| n == name) {
                *col = Col::Numeric(*p, *s);
            }
        }
        self
    }

    /// The columns after `_key, _job, _seq`.
    fn columns(&self) -> Vec<(String, Col)> {
        match &self.fields {
            Some(f) => f.clone(),
            None => vec![("record".into(), Col::Json)],
        }
    }

    /// The name of `job`'s stage, within PostgreSQL's 63 bytes.
    fn stage(&self, job: u64) -> String {
        let (schema, name) = match self.table.rsplit_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, self.table.as_str()),
        };
        let suffix = format!("__stage_{job}");
        let keep = name.len().min(63 - suffix.len());
        let mut cut = keep;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let stage = format!("{}{suffix}", &name[..cut]);
        match schema {
            Some(s) => format!("{s}.{stage}"),
            None => stage,
        }
    }

    /// Create the table, or check that it has every column with its type.
    async fn ensure(&self) -> Result<()> {
        self.ready.get_or_try_init(|| self.create_or_check()).await.map(|_| ())
    }

    async fn create_or_check(&self) -> Result<()> {
        let client = self.db.client().await?;
        let t = quoted_table(&self.table);
        let defs: Vec<String> = self.columns().iter().map(|(n, c)| format!("{} {}", quoted(n), c.declared())).collect();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (_key text PRIMARY KEY, _job bigint NOT NULL DEFAULT 0, _seq bigint NOT NULL, {})",
            defs.join(", ")
        );
        if let Err(e) = client.batch_execute(&create).await {
            // Two workers creating it at once: one wins, and the other finds it made.
            let raced = e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !raced {
                return Err(self.db.error(format!("creating sink table {}", self.table), e));
            }
        }
        let have: BTreeMap<String, String> =
            self.db.columns(&client, &self.table).await?.into_iter().map(|c| (c.name, c.base_type)).collect();
        let mut wanted = vec![("_key".to_string(), Col::Text), ("_job".into(), Col::Int), ("_seq".into(), Col::Int)];
        wanted.extend(self.columns());
        for (name, col) in wanted {
            match have.get(&name) {
                None => {
                    let why = format!(
                        "table {} has no column {name:?}; add it ({} {}) or choose another table",
                        self.table,
                        quoted(&name),
                        col.sql()
                    );
                    return Err(Error::config("sink.table", why));
                }
                Some(ty) if ty != col.sql() => {
                    let why = format!("column {name:?} of table {} is {ty}; the job writes {}", self.table, col.sql());
                    return Err(Error::config("sink.table", why));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Copy `items` into `table` (a stage) with binary `COPY`, on `client`.
    async fn copy(&self, client: &tokio_postgres::Client, table: &str, items: &[SinkItem]) -> Result<()> {
        let columns = self.columns();
        let names: Vec<String> = ["_key", "_job", "_seq"]
            .into_iter()
            .map(str::to_string)
            .chain(columns.iter().map(|(n, _)| quoted(n)))
            .collect();
        let types: Vec<Type> =
            [Type::TEXT, Type::INT8, Type::INT8].into_iter().chain(columns.iter().map(|(_, c)| c.pg_type())).collect();
        let statement = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", quoted_table(table), names.join(", "));
        let sink = client.copy_in(&statement).await.map_err(|e| self.db.error("starting a COPY", e))?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let mut projection = self.fields.as_ref().map(|f| Projection::new(f.iter().map(|(n, _)| n.clone()).collect()));
        for item in items {
            let mut row: Vec<Cell> = Vec::with_capacity(types.len());
            row.push(Cell::Text(item.key.clone()));
            row.push(Cell::Int(item.job as i64));
            row.push(Cell::Int(item.seq as i64));
            match &mut projection {
                Some(projection) => {
                    let mut at = 0;
                    let mut failed = None;
                    projection.each(&item.record, |value| {
                        match cell(columns[at].1, value) {
                            Ok(c) => row.push(c),
                            Err(why) => {
                                failed.get_or_insert_with(|| {
                                    format!("field {:?} of key {:?}: {why}", columns[at].0, item.key)
                                });
                                row.push(Cell::Null);
                            }
                        }
                        at += 1;
                    });
                    if let Some(why) = failed {
                        return Err(Error::input(format!("sink table {}", self.table), why));
                    }
                }
                None => {
                    let record: Record = item.record.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                    row.push(Cell::Json(Value::Object(record)));
                }
            }
            let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.map_err(|e| self.db.error("COPY", e))?;
        }
        writer.finish().await.map_err(|e| self.db.error("COPY", e))?;
        Ok(())
    }

    /// The statement that stores `from`'s rows, one per key (the latest), unless the stored
    /// row has a later version.
    fn merge_sql(&self, from: &str) -> String {
        let t = quoted_table(&self.table);
        let columns: Vec<String> = self.columns().iter().map(|(n, _)| quoted(n)).collect();
        let all = format!("_key, _job, _seq, {}", columns.join(", "));
        let set: Vec<String> = ["_job", "_seq"]
            .iter()
            .map(|c| c.to_string())
            .chain(columns)
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "INSERT INTO {t} AS stored ({all}) SELECT DISTINCT ON (_key) {all} FROM {from} \
             ORDER BY _key, _job DESC, _seq DESC \
             ON CONFLICT (_key) DO UPDATE SET {} \
             WHERE (stored._job, stored._seq) <= (EXCLUDED._job, EXCLUDED._seq)",
            set.join(", ")
        )
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn stages(&self) -> bool {
        true
    }

    async fn write(&self, items: Vec<SinkItem>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.ensure().await?;
        let mut by_job: BTreeMap<u64, Vec<SinkItem>> = BTreeMap::new();
        for item in items {
            by_job.entry(item.job).or_default().push(item);
        }
        let client = self.db.client().await?;
        for (job, items) in by_job {
            let stage = self.stage(job);
            let create = format!(
                "CREATE UNLOGGED TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)",
                quoted_table(&stage),
                quoted_table(&self.table)
            );
            if let Err(e) = client.batch_execute(&create).await {
                let raced = e.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                        || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
                });
                if !raced {
                    return Err(self.db.error(format!("creating the stage {stage}"), e));
                }
            }
            self.copy(&client, &stage, &items).await?;
        }
        Ok(())
    }

    async fn upsert(&self, items: Vec<SinkItem>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.ensure().await?;
        let client = self.db.client().await?;
        // A connection's own temporary table, emptied before and after: one statement then
        // stores the batch at once.
        let temp = "sluicebox_upsert";
        let make = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {} INCLUDING DEFAULTS); TRUNCATE {temp}",
            quoted_table(&self.table)
        );
        client.batch_execute(&make).await.map_err(|e| self.db.error("making a temporary table", e))?;
        self.copy(&client, temp, &items).await?;
        let merged = client.batch_execute(&self.merge_sql(temp)).await;
        merged.map_err(|e| self.db.error(format!("upserting into {}", self.table), e))?;
        client
            .batch_execute(&format!("TRUNCATE {temp}"))
            .await
            .map_err(|e| self.db.error("emptying a temporary table", e))
    }

    async fn publish(&self, job: u64) -> Result<()> {
        let stage = self.stage(job);
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db.error("BEGIN", e))?;
        let found: Option<String> = tx
            .query_one("SELECT to_regclass($1)::text", &[&quoted_table(&stage)])
            .await
            .map_err(|e| self.db.error("looking for a stage", e))?
            .get(0);
        if found.is_none() {
            return Ok(());
        }
        // A second publisher of the job waits here, then finds the stage gone.
        let q = quoted_table(&stage);
        if let Err(e) = tx.batch_execute(&format!("LOCK TABLE {q} IN ACCESS EXCLUSIVE MODE")).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                return Ok(());
            }
            return Err(self.db.error("locking a stage", e));
        }
        tx.batch_execute(&self.merge_sql(&q))
            .await
            .map_err(|e| self.db.error(format!("publishing into {}", self.table), e))?;
        tx.batch_execute(&format!("DROP TABLE {q}")).await.map_err(|e| self.db.error("dropping a stage", e))?;
        tx.commit().await.map_err(|e| self.db.error("COMMIT", e))
    }

    async fn discard(&self, job: u64) -> Result<()> {
        let client = self.db.client().await?;
        let drop = format!("DROP TABLE IF EXISTS {}", quoted_table(&self.stage(job)));
        client.batch_execute(&drop).await.map_err(|e| self.db.error("dropping a stage", e))
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Record>> {
        self.ensure().await?;
        let client = self.db.client().await?;
        let columns = self.columns();
        let names: Vec<String> = columns.iter().map(|(n, _)| quoted(n)).collect();
        let sql = format!("SELECT _key, {} FROM {}", names.join(", "), quoted_table(&self.table));
        let rows = client.query(&sql, &[]).await.map_err(|e| self.db.error(format!("reading {}", self.table), e))?;
        let mut all = BTreeMap::new();
        for row in rows {
            let key: String = row.get(0);
            let mut record = Record::new();
            for (i, (name, col)) in columns.iter().enumerate() {
                let value = read_cell(&row, i + 1, *col).map_err(|e| self.db.error(format!("reading {name}"), e))?;
                match (&self.fields, value) {
                    (None, Value::Object(m)) => record.extend(m),
                    (_, value) => {
                        record.insert(name.clone(), value);
                    }
                }
            }
            all.insert(key, record);
        }
        Ok(all)
    }

    fn limits(&self) -> SinkLimits {
        SinkLimits { max_key_bytes: Some(MAX_KEY_BYTES), max_item_bytes: None, no_empty_key: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_a_table_and_perhaps_its_database() {
        use super::super::target::SinkKind;
        assert!(KIND.refuse_table(Some("orders")).is_none());
        assert!(KIND.refuse_table(Some("db/w/sales.orders")).is_none());
        assert!(KIND.refuse_table(Some("orders; drop table x")).is_some());
        assert!(KIND.refuse_table(Some("a.b.c")).is_some());
        assert!(KIND.refuse_table(None).is_some());
        let why = KIND.refuse_table(Some("ann:s3cret@db/w/orders")).unwrap();
        assert!(why.contains("PGPASSWORD") && !why.contains("s3cret"), "{why}");
    }

    #[test]
    fn values_become_cells_of_their_columns_or_say_why_not() {
        assert!(matches!(cell(Col::Int, Some(&Value::from(7))), Ok(Cell::Int(7))));
        assert!(matches!(cell(Col::Date, Some(&Value::from("2014-10-08"))), Ok(Cell::Date(_))));
        assert!(matches!(cell(Col::Timestamp, Some(&Value::from("2014-10-08T01:02:03Z"))), Ok(Cell::Timestamp(_))));
        assert!(matches!(cell(Col::Text, Some(&Value::from("a\0b"))), Ok(Cell::Text(t)) if t == "a\u{fffd}b"));
        assert!(matches!(cell(Col::Int, None), Ok(Cell::Null)));
        assert!(cell(Col::Date, Some(&Value::from("10/8/14"))).unwrap_err().contains("date"));
    }

    #[test]
    fn a_stage_name_fits_in_63_bytes() {
        let db = Database::open(Some("postgres://u@localhost/d"), "t").unwrap();
        let long = "t".repeat(63);
        let sink = PostgresSink::new(db, &format!("s.{long}"), None);
        let stage = sink.stage(u64::MAX);
        let name = stage.strip_prefix("s.").unwrap();
        assert!(name.len() <= 63 && name.ends_with(&format!("__stage_{}", u64::MAX)), "{stage}");
    }
}
