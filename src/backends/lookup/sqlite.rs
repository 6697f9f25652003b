//! A reference imported into SQLite: a file larger than `enrich.memory_limit` is read once into
//! a table of `sluicebox-lookups.db` beside the data directory's database and looked up there,
//! so memory stays bounded whatever its size. The table's name changes with the file (its
//! path, size and modification time) and with how it is read, so a later job over the same
//! unchanged file reuses it, and a changed file is imported anew.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Reader, Source};
use crate::backends::sink::stage::{BlockBuilder, Cell, Stage};
use crate::error::{Error, Result};
use crate::model::config::EnrichConfig;

/// Rows of a reference sorted in memory at a time while it is imported.
const IMPORT_BLOCK: usize = 65_536;

/// An imported reference table, with a pool of read connections.
#[derive(Debug)]
pub struct SqliteSource {
    db: PathBuf,
    table: String,
    /// The lookup's statement.
    select: String,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteSource {
    /// Import the reference file at `file` (unless an earlier job already did) into the lookup
    /// database beside `db`. Returns the source and the field names its rows hold.
    pub fn import(
        cfg: &EnrichConfig,
        lookup_key: &str,
        file: &Path,
        meta: &std::fs::Metadata,
        db: &Path,
    ) -> Result<(SqliteSource, Vec<String>)> {
        let cache = cache_db(db);
        let mut conn = open_cache(&cache)?;
        let table = import_table_name(cfg, lookup_key, meta);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS sluicebox_lookups (name TEXT PRIMARY KEY, fields TEXT NOT NULL)")?;
        let done: Option<String> =
            tx.query_row("SELECT fields FROM sluicebox_lookups WHERE name = ?1", [&table], |r| r.get(0)).optional()?;
        let fields = match done {
            Some(fields) => serde_json::from_str(&fields)
                .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "corrupt lookup record", e))?,
            None => {
                tx.execute_batch(&format!(
                    "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
                ))?;
                // Rows are staged in sorted blocks and inserted in key order: one pass over the
                // table's B-tree, where rows in file order would dirty a page each.
                let stage = Stage::new(cache.with_file_name(format!(
                    "sluicebox-lookups.db.stage-{}-{:016x}",
                    std::process::id(),
                    fastrand::u64(..)
                )));
                let imported = (|| {
                    let mut out = None;
                    let mut pending: Vec<(String, u64, Vec<u8>)> = Vec::with_capacity(IMPORT_BLOCK);
                    let mut flush = |pending: &mut Vec<(String, u64, Vec<u8>)>| -> Result<()> {
                        pending.sort_unstable();
                        let mut block = BlockBuilder::default();
                        for (k, n, v) in pending.drain(..) {
                            block.row(&k, n, 1);
                            block.cell(Cell::Blob(&v));
                        }
                        let file = match &mut out {
                            Some(f) => f,
                            None => out.insert(stage.create_file()?),
                        };
                        stage.append(file, &block.finish())
                    };
                    let mut n = 0u64;
                    let fields = super::rows::read_file(cfg, lookup_key, file, &mut |k, values| {
                        // The values as the in-memory reference encodes them: no text to parse
                        // back on every lookup.
                        let mut v = Vec::new();
                        for value in &values {
                            super::memory::encode(value, &mut v);
                        }
                        // Of two rows with one key the later in the file wins, as the merge keeps
                        // the highest number.
                        n += 1;
                        pending.push((k, n, v));
                        if pending.len() == IMPORT_BLOCK {
                            flush(&mut pending)?;
                        }
                        Ok(())
                    })?;
                    if !pending.is_empty() {
                        flush(&mut pending)?;
                    }
                    if stage.exists() {
                        let mut stmt = tx.prepare(&format!("INSERT INTO {table} (k, v) VALUES (?1, ?2)"))?;
                        stage.merge(&mut |row| {
                            let v = match row.cells().next() {
                                Some(Cell::Blob(v)) => v,
                                _ => &[],
                            };
                            stmt.execute(rusqlite::params![row.key, v])?;
                            Ok(())
                        })?;
                    }
                    Ok::<_, Error>(fields)
                })();
                let _ = stage.remove();
                let fields = imported?;
                tx.execute(
                    "INSERT INTO sluicebox_lookups (name, fields) VALUES (?1, ?2)",
                    rusqlite::params![table, serde_json::to_string(&fields).unwrap_or_default()],
                )?;
                tx.commit()?;
                fields
            }
        };
        let select = format!("SELECT v FROM {table} WHERE k = ?1");
        Ok((SqliteSource { db: cache, table, select, pool: Mutex::new(Vec::new()) }, fields))
    }
}

impl Source for SqliteSource {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_cache(&self.db)?,
        };
        // One read transaction per chunk: each lookup then skips taking the file lock.
        conn.execute_batch("BEGIN")?;
        Ok(Box::new(SqliteReader { source: self, conn: Some(conn), fetched: HashMap::new() }))
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

struct SqliteReader<'a> {
    source: &'a SqliteSource,
    conn: Option<Connection>,
    /// Rows fetched ahead by `prefetch`, still encoded (`None`: no row), each taken by its
    /// first `get`.
    fetched: HashMap<String, Option<Box<[u8]>>>,
}

impl SqliteReader<'_> {
    /// The encoded row for `key`, from the table.
    fn query(&mut self, key: &str) -> Result<Option<Box<[u8]>>> {
        let Some(conn) = self.conn.as_ref() else { return Ok(None) };
        let mut stmt = conn.prepare_cached(&self.source.select)?;
        let mut rows = stmt.query([key])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let v = row.get_ref(0)?.as_blob().map_err(|e| {
            Error::backend(crate::error::Backend::Sqlite, format!("corrupt lookup row in {}", self.source.table), e)
        })?;
        Ok(Some(v.into()))
    }
}

/// The values of an encoded row.
fn decode_row(v: &[u8]) -> Vec<Value> {
    let mut values = Vec::new();
    let mut pos = 0;
    while pos < v.len() {
        values.push(super::memory::decode(v, &mut pos));
    }
    values
}

impl Reader for SqliteReader<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>> {
        let found = match self.fetched.remove(key) {
            Some(found) => found,
            None => self.query(key)?,
        };
        Ok(found.map(|v| Cow::Owned(decode_row(&v))))
    }

    /// Look the keys up in key order (one pass over the table's B-tree, where the chunk's
    /// order would jump across it), keeping what is found for `get`.
    fn prefetch(&mut self, mut keys: Vec<String>) -> Result<()> {
        keys.sort_unstable();
        self.fetched = HashMap::with_capacity(keys.len());
        for key in keys {
            let found = self.query(&key)?;
            self.fetched.insert(key, found);
        }
        Ok(())
    }
}

impl Drop for SqliteReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Ending the read transaction cannot lose anything; a connection that fails to is
            // dropped rather than pooled.
            if conn.execute_batch("COMMIT").is_ok() {
                self.source.pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
        }
    }
}

/// Imported references live in their own database beside the main one: a cache that can be
/// rebuilt from the source, so it is written without a write-ahead log (half the writes of
/// the main database's WAL) and never competes with the ledger and sink for it.
fn cache_db(db: &Path) -> PathBuf {
    db.with_file_name("sluicebox-lookups.db")
}

fn open_cache(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    // Rollback journal, no fsync: a crash mid-import leaves no completion record, and the
    // import starts over (see `import`).
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -16_384)?; // 16 MiB of pages per connection
    Ok(conn)
}

/// A table name that changes when the source file or the way it is read changes.
fn import_table_name(cfg: &EnrichConfig, lookup_key: &str, meta: &std::fs::Metadata) -> String {
    format!("sluicebox_lookup_{}", source_digest(cfg, lookup_key, meta))
}

/// A digest of a reference file (its name, size and modification time) and of how it is read
/// (the lookup key, fields and columns), in hex: it names what is kept of the file between
/// jobs, so that a changed file or a changed reading is read anew.
pub fn source_digest(cfg: &EnrichConfig, lookup_key: &str, meta: &std::fs::Metadata) -> String {
    let mut h = Sha256::new();
    h.update(cfg.source.as_bytes());
    h.update(meta.len().to_le_bytes());
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    h.update(mtime.to_le_bytes());
    h.update(lookup_key.as_bytes());
    // The encoding of the stored values: binary (JSON text before).
    h.update(b"values: binary");
    h.update(serde_json::to_vec(&(&cfg.fields, &cfg.columns)).unwrap_or_default());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}
