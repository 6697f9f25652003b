//! Enrichment: a reference dataset loaded once per job and looked up by key.
//!
//! A reference no larger than `enrich.memory_limit` is held in memory as a hash map from key
//! to the typed fields it adds. A larger one is imported once into a table of
//! `sluicebox-lookups.db` beside the data directory's database (reused by later jobs while the
//! file is unchanged) and looked up there, so memory stays bounded whatever its size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use serde_json::Value;

use crate::config::{EnrichConfig, OnMissing};
use crate::error::{Error, Result};
use crate::pipeline::{ColumnRule, Record};

/// A loaded reference dataset.
#[derive(Debug)]
pub struct LookupTable {
    key_field: String,
    fields: Vec<String>,
    rows: Rows,
    on_missing: OnMissing,
    defaults: Box<[Value]>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug)]
enum Rows {
    Memory(FastMap<Box<str>, Box<[Value]>>),
    Sqlite {
        db: PathBuf,
        table: String,
        pool: Mutex<Vec<Connection>>,
    },
    #[cfg(feature = "aws")]
    Dynamo(crate::lookup_dynamodb::DynamoRows),
}

/// Where loaded rows go while the reference is read.
enum Store<'c> {
    Memory(FastMap<Box<str>, Box<[Value]>>),
    Sqlite(rusqlite::Statement<'c>),
}

/// Per-chunk lookup state: a database connection for SQLite-held references, and the first
/// backend error (which fails the chunk instead of rejecting records).
pub struct LookupSession<'a> {
    table: &'a LookupTable,
    conn: Option<Connection>,
    error: Option<Error>,
    /// Remote references: while `collecting`, keys are only noted in `wanted`; `prefetch`
    /// then fetches them in batches into `fetched`.
    collecting: bool,
    wanted: std::collections::HashSet<String>,
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    fetched: HashMap<String, Option<std::sync::Arc<[Value]>>>,
}

impl LookupSession<'_> {
    /// The first backend error met, if any.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Whether the reference is remote (see [`LookupTable::is_remote`]).
    pub fn is_remote(&self) -> bool {
        self.table.is_remote()
    }

    /// From now on `enrich` only notes the keys it is asked for (a first pass over a chunk).
    pub fn start_collecting(&mut self) {
        self.collecting = true;
    }

    /// Fetch the noted keys in batches, then enrich for real.
    pub fn prefetch(&mut self) -> Result<()> {
        self.collecting = false;
        let wanted: Vec<String> = self.wanted.drain().collect();
        match &self.table.rows {
            #[cfg(feature = "aws")]
            Rows::Dynamo(rows) => {
                self.fetched = rows.fetch(wanted, &self.table.fields)?;
                Ok(())
            }
            _ => {
                let _ = wanted;
                Ok(())
            }
        }
    }
}

impl Drop for LookupSession<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Rows::Sqlite { pool, .. }) = (self.conn.take(), &self.table.rows) {
            // Ending the read transaction cannot lose anything; a connection that fails to is
            // dropped rather than pooled.
            if conn.execute_batch("COMMIT").is_ok() {
                pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
        }
    }
}

impl LookupTable {
    /// Load the reference named by `cfg.source`: a CSV or JSON Lines file, or `sqlite:TABLE`
    /// in `db` (the data directory's database). Rows are typed as they are read.
    pub fn load(cfg: &EnrichConfig, db: &Path) -> Result<Self> {
        let lookup_key = cfg.lookup_key.clone().unwrap_or_else(|| cfg.key.clone());
        let source = &cfg.source;
        if let Some(table) = source.strip_prefix("dynamodb://") {
            return Self::load_dynamodb(cfg, table, lookup_key);
        }
        let file = source
            .strip_prefix("sqlite:")
            .is_none()
            .then(|| PathBuf::from(source.strip_prefix("file://").unwrap_or(source)));
        let meta = match &file {
            Some(f) => Some(
                std::fs::metadata(f)
                    .map_err(|e| Error::input(source, format!("cannot read the enrichment source: {e}")))?,
            ),
            None => None,
        };
        let large = meta.as_ref().is_some_and(|m| m.len() > cfg.memory_limit);
        let cache = cache_db(db);
        let mut conn = if large { Some(open_cache(&cache)?) } else { None };
        let mut imported = None;
        if let (Some(conn), Some(meta)) = (conn.as_mut(), meta.as_ref()) {
            let table = import_table_name(cfg, &lookup_key, meta);
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS sluicebox_lookups (name TEXT PRIMARY KEY, fields TEXT NOT NULL)",
            )?;
            let done: Option<String> = tx
                .query_row("SELECT fields FROM sluicebox_lookups WHERE name = ?1", [&table], |r| r.get(0))
                .optional()?;
            match done {
                Some(fields) => {
                    let fields = serde_json::from_str(&fields)
                        .map_err(|e| Error::backend("sqlite", "corrupt lookup record", e))?;
                    drop(tx);
                    imported = Some((table, fields));
                }
                None => {
                    tx.execute_batch(&format!(
                        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID"
                    ))?;
                    let fields = {
                        let stmt = tx.prepare(&format!("INSERT OR REPLACE INTO {table} (k, v) VALUES (?1, ?2)"))?;
                        let mut store = Store::Sqlite(stmt);
                        read_rows(cfg, &lookup_key, file.as_deref(), db, &mut store)?
                    };
                    tx.execute(
                        "INSERT INTO sluicebox_lookups (name, fields) VALUES (?1, ?2)",
                        rusqlite::params![table, serde_json::to_string(&fields).unwrap_or_default()],
                    )?;
                    tx.commit()?;
                    imported = Some((table, fields));
                }
            }
        }
        let (rows, fields) = match imported {
            Some((table, fields)) => (Rows::Sqlite { db: cache, table, pool: Mutex::new(Vec::new()) }, fields),
            None => {
                let mut store = Store::Memory(FastMap::default());
                let fields = read_rows(cfg, &lookup_key, file.as_deref(), db, &mut store)?;
                let Store::Memory(map) = store else { unreachable!("the store stays in memory") };
                (Rows::Memory(map), fields)
            }
        };
        let defaults = defaults(cfg, &fields);
        Ok(LookupTable { key_field: cfg.key.clone(), fields, rows, on_missing: cfg.on_missing, defaults })
    }

    #[cfg(feature = "aws")]
    fn load_dynamodb(cfg: &EnrichConfig, table: &str, lookup_key: String) -> Result<Self> {
        let fields =
            cfg.fields.clone().filter(|f| !f.is_empty()).ok_or_else(|| {
                Error::config("enrich.fields", "a dynamodb:// reference needs the list of fields to add")
            })?;
        let rows = crate::lookup_dynamodb::DynamoRows::open(cfg, table, lookup_key)?;
        Ok(LookupTable {
            key_field: cfg.key.clone(),
            defaults: defaults(cfg, &fields),
            fields,
            rows: Rows::Dynamo(rows),
            on_missing: cfg.on_missing,
        })
    }

    #[cfg(not(feature = "aws"))]
    fn load_dynamodb(_: &EnrichConfig, _: &str, _: String) -> Result<Self> {
        Err(Error::config("enrich.source", "dynamodb:// needs the `aws` feature, which this build lacks"))
    }

    /// Whether the reference is held in the database rather than in memory.
    pub fn in_database(&self) -> bool {
        matches!(self.rows, Rows::Sqlite { .. })
    }

    /// State for looking up the records of one chunk.
    pub fn session(&self) -> LookupSession<'_> {
        LookupSession {
            table: self,
            conn: None,
            error: None,
            collecting: false,
            wanted: Default::default(),
            fetched: Default::default(),
        }
    }

    /// Whether lookups go to a remote table, which a chunk's keys are fetched from in batches
    /// ([`LookupSession::start_collecting`], [`LookupSession::prefetch`]) before its records
    /// are enriched.
    pub fn is_remote(&self) -> bool {
        #[cfg(feature = "aws")]
        if matches!(self.rows, Rows::Dynamo(_)) {
            return true;
        }
        false
    }

    /// The record field looked up.
    pub fn key_field(&self) -> &str {
        &self.key_field
    }

    /// The fields this lookup adds, in order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Add the reference fields to `rec`. `Err(key)` when the key is missing and the policy
    /// is to reject. A database error is kept in `session` (see [`LookupSession::take_error`]).
    pub fn enrich(&self, rec: &mut Record, session: &mut LookupSession<'_>) -> std::result::Result<(), String> {
        let key = match rec.get(&self.key_field) {
            Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
            Some(other) => std::borrow::Cow::Owned(key_text(other)),
            None => std::borrow::Cow::Borrowed(""),
        };
        let fetched;
        let found: Option<&[Value]> = match &self.rows {
            #[cfg(feature = "aws")]
            Rows::Dynamo(rows) => {
                if session.collecting {
                    if !rows.cached(&key) {
                        session.wanted.insert(key.into_owned());
                    }
                    return Ok(());
                }
                let hit = match session.fetched.get(key.as_ref()) {
                    Some(v) => v.clone(),
                    None => match rows.get(&key, &self.fields) {
                        Ok(v) => v,
                        Err(e) => {
                            session.error.get_or_insert(e);
                            return Ok(());
                        }
                    },
                };
                fetched = hit.map(|v| v.to_vec());
                fetched.as_deref()
            }
            Rows::Memory(map) => map.get(key.as_ref()).map(|v| &v[..]),
            Rows::Sqlite { db, table, pool } => match fetch(session, db, table, pool, &key) {
                Ok(v) => {
                    fetched = v;
                    fetched.as_deref()
                }
                Err(e) => {
                    session.error.get_or_insert(e);
                    return Ok(());
                }
            },
        };
        let values = match (found, self.on_missing) {
            (Some(v), _) => v,
            (None, OnMissing::Reject) => return Err(key.into_owned()),
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

fn fetch(
    session: &mut LookupSession<'_>,
    db: &Path,
    table: &str,
    pool: &Mutex<Vec<Connection>>,
    key: &str,
) -> Result<Option<Vec<Value>>> {
    if session.conn.is_none() {
        let pooled = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_cache(db)?,
        };
        // One read transaction per chunk: each lookup then skips taking the file lock.
        conn.execute_batch("BEGIN")?;
        session.conn = Some(conn);
    }
    let Some(conn) = session.conn.as_ref() else { return Ok(None) };
    let mut stmt = conn.prepare_cached(&format!("SELECT v FROM {table} WHERE k = ?1"))?;
    let v: Option<String> = stmt.query_row([key], |r| r.get(0)).optional()?;
    v.map(|v| {
        serde_json::from_str(&v).map_err(|e| Error::backend("sqlite", format!("corrupt lookup row in {table}"), e))
    })
    .transpose()
}

/// Imported references live in their own database beside the main one: a cache that can be
/// rebuilt from the source, so it is written without a write-ahead log (half the writes of
/// the main database's WAL) and never competes with the ledger and sink for it.
fn cache_db(db: &Path) -> PathBuf {
    db.with_file_name("sluicebox-lookups.db")
}

fn open_cache(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|e| Error::backend("sqlite", format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    // Rollback journal, no fsync: a crash mid-import leaves no completion record, and the
    // import starts over (see `load`).
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -16_384)?; // 16 MiB of pages per connection
    Ok(conn)
}

/// A table name that changes when the source file or the way it is read changes.
fn import_table_name(cfg: &EnrichConfig, lookup_key: &str, meta: &std::fs::Metadata) -> String {
    let mut h = Sha256::new();
    h.update(cfg.source.as_bytes());
    h.update(meta.len().to_le_bytes());
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    h.update(mtime.to_le_bytes());
    h.update(lookup_key.as_bytes());
    h.update(serde_json::to_vec(&(&cfg.fields, &cfg.columns)).unwrap_or_default());
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sluicebox_lookup_{hex}")
}

/// Read every reference row, type it, and put it in `store`. Returns the added field names.
fn read_rows(
    cfg: &EnrichConfig,
    lookup_key: &str,
    file: Option<&Path>,
    db: &Path,
    store: &mut Store<'_>,
) -> Result<Vec<String>> {
    let rules: HashMap<&str, ColumnRule> = cfg.columns.iter().map(|c| (c.name.as_str(), ColumnRule::from(c))).collect();
    let mut fields: Option<Vec<String>> = cfg.fields.clone();
    let source = &cfg.source;
    let mut add = |line: u64, mut row: Row<'_>| -> Result<()> {
        let at = |column: &str, reason: String| Error::InvalidInput {
            location: source.clone(),
            line: Some(line),
            column: Some(column.to_string()),
            reason,
        };
        let key = match row.take(lookup_key) {
            Some(v) => key_text(&v),
            None => return Err(at(lookup_key, "the reference row lacks the lookup key".into())),
        };
        let fields = fields.get_or_insert_with(|| row.names().into_iter().filter(|k| k != lookup_key).collect());
        let mut values = Vec::with_capacity(fields.len());
        for f in fields.iter() {
            let v = row.take(f).ok_or_else(|| at(f, "the reference row lacks this field".into()))?;
            values.push(match rules.get(f.as_str()) {
                Some(rule) => rule.check(v).map_err(|m| at(f, m))?,
                None => v,
            });
        }
        match store {
            Store::Memory(map) => {
                map.insert(key.into_boxed_str(), values.into_boxed_slice());
            }
            Store::Sqlite(stmt) => {
                let v = serde_json::to_string(&values).map_err(|e| Error::backend("json", "encode lookup row", e))?;
                stmt.execute(rusqlite::params![key, v])?;
            }
        }
        Ok(())
    };
    match (source.strip_prefix("sqlite:"), file) {
        (Some(table), _) => read_sqlite(db, table, &mut add)?,
        (None, Some(path)) => read_file(path, &mut add)?,
        (None, None) => {}
    }
    Ok(fields.unwrap_or_default())
}

fn defaults(cfg: &EnrichConfig, fields: &[String]) -> Box<[Value]> {
    fields
        .iter()
        .map(|f| cfg.defaults.get(f).map(|v| serde_json::to_value(v).unwrap_or(Value::Null)).unwrap_or(Value::Null))
        .collect()
}

/// A lookup key as text.
pub(crate) fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

type AddRow<'a> = dyn FnMut(u64, Row<'_>) -> Result<()> + 'a;

/// One reference row as read: a CSV record (fields found by header position, with no map
/// built per row) or a JSON / SQLite record.
enum Row<'a> {
    Csv { columns: &'a FastMap<String, usize>, record: &'a csv::StringRecord },
    Map(Record),
}

impl Row<'_> {
    /// Take a field's value out of the row.
    fn take(&mut self, name: &str) -> Option<Value> {
        match self {
            Row::Csv { columns, record } => {
                columns.get(name).and_then(|&i| record.get(i)).map(|v| Value::String(v.into()))
            }
            Row::Map(m) => m.swap_remove(name),
        }
    }

    /// The row's field names, in order.
    fn names(&self) -> Vec<String> {
        match self {
            Row::Csv { columns, .. } => {
                let mut names: Vec<(&String, &usize)> = columns.iter().collect();
                names.sort_by_key(|(_, &i)| i);
                names.into_iter().map(|(n, _)| n.clone()).collect()
            }
            Row::Map(m) => m.keys().cloned().collect(),
        }
    }
}

fn read_file(path: &Path, add: &mut AddRow<'_>) -> Result<()> {
    let location = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| Error::input(&location, format!("cannot read the enrichment source: {e}")))?;
    let reader = std::io::BufReader::with_capacity(256 << 10, file);
    let is_jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson" | "json"));
    if is_jsonl {
        use std::io::BufRead;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| Error::input(&location, format!("cannot read the enrichment source: {e}")))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let rec: Record = serde_json::from_slice(&line).map_err(|e| Error::InvalidInput {
                location: location.clone(),
                line: Some(i as u64 + 1),
                column: None,
                reason: format!("not a JSON object: {e}"),
            })?;
            add(i as u64 + 1, Row::Map(rec))?;
        }
        return Ok(());
    }
    let mut rdr = csv::ReaderBuilder::new().from_reader(reader);
    let columns: FastMap<String, usize> = rdr
        .headers()
        .map_err(|e| Error::input(&location, e.to_string()))?
        .iter()
        .enumerate()
        .map(|(i, h)| (h.to_string(), i))
        .collect();
    let mut row = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                return Err(Error::InvalidInput {
                    location: location.clone(),
                    line: e.position().map(|p| p.line()),
                    column: None,
                    reason: e.to_string(),
                })
            }
        }
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        add(line, Row::Csv { columns: &columns, record: &row })?;
    }
}

fn read_sqlite(db: &Path, table: &str, add: &mut AddRow<'_>) -> Result<()> {
    if !crate::config::is_sql_ident(table) {
        return Err(Error::config("enrich.source", format!("{table:?} is not a plain table name")));
    }
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\""))
        .map_err(|e| Error::config("enrich.source", format!("cannot read table {table}: {e}")))?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
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
        add(n, Row::Map(rec))?;
    }
    Ok(())
}
