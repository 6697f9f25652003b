//! Enrichment: a reference dataset opened once per job and looked up by key.
//!
//! A [`LookupTable`] applies the job's `[enrich]` settings (which field to look up, which
//! fields to add, what to do with a missing key) over a [`Source`] of rows, one file per kind:
//!
//! - [`memory`]: a reference no larger than `enrich.memory_limit` (or a `sqlite:TABLE`), held
//!   in one byte arena with a hash table of row offsets.
//! - [`sqlite`]: a larger reference file, imported once into a table of
//!   `sluicebox-lookups.db` beside the data directory's database (reused by later jobs while
//!   the file is unchanged) and looked up there, so memory stays bounded whatever its size.
//! - `dynamodb` (feature `aws`): a DynamoDB table, asked for a chunk's keys in batches.
//! - `postgres` (feature `postgres`): a PostgreSQL table, asked for a chunk's keys in batches.
//!
//! [`rows`] reads reference rows from files and SQLite tables for the first two.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backends::cloud::Cloud;
use crate::error::{Error, Result};
use crate::model::config::{EnrichConfig, OnMissing};
use crate::model::record::{key_text, Record};

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "aws")]
pub mod dynamodb;
mod index;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod rows;
pub mod sqlite;

/// Reference rows by key.
///
/// # Contract
///
/// - Every row holds the values of the table's fields, in the table's order.
/// - `reader` gives the per-chunk state lookups go through; each reader is used from one
///   thread at a time, and many readers may be in use at once.
/// - [`Reader::get`] returns the row whose lookup key is `key`, or `None`; the same key gets
///   the same answer for the life of the source.
/// - [`Reader::prefetch`] is a hint that `get` will be asked for these keys: a remote source
///   fetches them in batches, after which `get` of any of them makes no request. Other
///   sources ignore it.
/// - A backend failure is an `Err`, never a missing row.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// State for one chunk's lookups.
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
    /// Where rows are held: `memory`, `sqlite` or `dynamodb`.
    fn kind(&self) -> &'static str;
    /// Whether lookups go over a network, so a chunk's keys are worth collecting first.
    fn is_remote(&self) -> bool {
        false
    }
}

/// One chunk's lookups in a [`Source`] (see its contract).
pub trait Reader {
    /// The row for `key`, if there is one.
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>>;
    /// Fetch these keys ahead of `get` (remote sources).
    fn prefetch(&mut self, keys: Vec<String>) -> Result<()> {
        let _ = keys;
        Ok(())
    }
    /// A hint that `keys` are about to be looked up, in this order: a reader in memory asks
    /// the processor for their rows, so that their cache misses overlap. Never required for
    /// `get` to answer right; does nothing by default.
    fn ahead(&mut self, keys: &[&str]) {
        let _ = keys;
    }
}

/// A reference opened for a job: its source and the job's `[enrich]` policy.
#[derive(Debug)]
pub struct LookupTable {
    key_field: String,
    fields: Vec<String>,
    source: Box<dyn Source>,
    on_missing: OnMissing,
    defaults: Box<[Value]>,
}

/// Per-chunk lookup state: a reader of the source, and the first backend error (which fails
/// the chunk instead of rejecting records).
pub struct LookupSession<'a> {
    reader: Option<Box<dyn Reader + 'a>>,
    table: &'a LookupTable,
    error: Option<Error>,
    /// While collecting, keys are only noted; `prefetch` then fetches them in batches.
    collecting: bool,
    wanted: HashSet<String>,
}

impl LookupSession<'_> {
    /// The first backend error met, if any.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Whether the reference is remote (see [`Source::is_remote`]).
    pub fn is_remote(&self) -> bool {
        self.table.source.is_remote()
    }

    /// Whether the reference is a table in a database file (see [`LookupTable::in_database`]):
    /// a chunk's keys are best looked up together, in key order.
    pub fn in_database(&self) -> bool {
        self.table.in_database()
    }

    /// Note a key that will be looked up (for [`LookupSession::prefetch`]).
    pub fn note_key(&mut self, key: String) {
        self.wanted.insert(key);
    }

    /// From now on `enrich` only notes the keys it is asked for (a first pass over a chunk).
    pub fn start_collecting(&mut self) {
        self.collecting = true;
    }

    /// Fetch the noted keys in batches, then enrich for real.
    pub fn prefetch(&mut self) -> Result<()> {
        self.collecting = false;
        let wanted: Vec<String> = self.wanted.drain().collect();
        self.reader()?.prefetch(wanted)
    }

    fn reader(&mut self) -> Result<&mut (dyn Reader + '_)> {
        let reader = match self.reader.take() {
            Some(r) => r,
            None => self.table.source.reader()?,
        };
        Ok(self.reader.insert(reader).as_mut())
    }
}

impl LookupTable {
    /// Open the reference named by `cfg.source`: a CSV or JSON Lines file (held in memory, or
    /// imported into SQLite beside `db` when larger than `cfg.memory_limit`), `sqlite:TABLE`
    /// in `db` (the data directory's database), or `dynamodb://TABLE` (with `cloud`).
    pub fn load(cfg: &EnrichConfig, db: &Path, cloud: &Cloud) -> Result<Self> {
        let lookup_key = cfg.lookup_key.clone().unwrap_or_else(|| cfg.key.clone());
        let source = &cfg.source;
        let (source, fields): (Box<dyn Source>, Vec<String>) = if let Some(table) = source.strip_prefix("dynamodb://") {
            load_dynamodb(cfg, table, lookup_key, cloud)?
        } else if let Some(target) = source.strip_prefix("postgres://") {
            load_postgres(cfg, target, &lookup_key)?
        } else if let Some(table) = source.strip_prefix("sqlite:") {
            let mut rows = memory::MemorySource::default();
            let fields = rows::read_sqlite(cfg, &lookup_key, db, table, &mut |k, v| rows.insert(k, v))?;
            (Box::new(rows), fields)
        } else {
            let file = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
            let meta = std::fs::metadata(&file)
                .map_err(|e| Error::input(source, format!("cannot read the enrichment source: {e}")))?;
            if meta.len() > cfg.memory_limit {
                let (rows, fields) = sqlite::SqliteSource::import(cfg, &lookup_key, &file, &meta, db)?;
                (Box::new(rows), fields)
            } else {
                // What an earlier job read of the same unchanged file is kept beside the
                // database, and read back instead of the file (a day's job over yesterday's
                // reference reads its rows, not its text).
                let kept = db
                    .with_file_name("references")
                    .join(format!("{}.rows", sqlite::source_digest(cfg, &lookup_key, &meta)));
                match memory::MemorySource::open_kept(&kept) {
                    Some((rows, fields)) => (Box::new(rows), fields),
                    None => {
                        let (rows, fields) = if rows::is_json_lines(&file) {
                            let mut rows = memory::MemorySource::default();
                            let fields = rows::read_file(cfg, &lookup_key, &file, &mut |k, v| rows.insert(k, v))?;
                            (rows, fields)
                        } else {
                            rows::read_csv_into_memory(cfg, &lookup_key, &file)?
                        };
                        // Kept on a thread of its own: the job need not wait for the write.
                        let rows = std::sync::Arc::new(rows);
                        let (writer, names) = (rows.clone(), fields.clone());
                        std::thread::spawn(move || {
                            if let Err(e) = writer.keep(&names, &kept) {
                                tracing::debug!("cannot keep the reference's rows in {}: {e}", kept.display());
                            }
                        });
                        (Box::new(rows), fields)
                    }
                }
            }
        };
        Ok(Self::new(cfg, fields, source))
    }

    /// A table over `source`, whose rows hold `fields`, with `cfg`'s policy. A field an
    /// `[enrich] columns` entry renames (`as`) is added to records under its new name.
    pub fn new(cfg: &EnrichConfig, fields: Vec<String>, source: Box<dyn Source>) -> Self {
        let defaults = fields
            .iter()
            .map(|f| cfg.defaults.get(f).map(|v| serde_json::to_value(v).unwrap_or(Value::Null)).unwrap_or(Value::Null))
            .collect();
        let fields = fields
            .into_iter()
            .map(|f| cfg.columns.iter().find(|c| c.name == f).map_or(f, |c| c.out_name().to_string()))
            .collect();
        LookupTable { key_field: cfg.key.clone(), fields, source, on_missing: cfg.on_missing, defaults }
    }

    /// Whether the reference is held in a database rather than in memory.
    pub fn in_database(&self) -> bool {
        self.source.kind() == "sqlite"
    }

    /// State for looking up the records of one chunk.
    pub fn session(&self) -> LookupSession<'_> {
        LookupSession { reader: None, table: self, error: None, collecting: false, wanted: HashSet::new() }
    }

    /// Whether lookups go to a remote table (see [`Source::is_remote`]).
    pub fn is_remote(&self) -> bool {
        self.source.is_remote()
    }

    /// The record field looked up.
    pub fn key_field(&self) -> &str {
        &self.key_field
    }

    /// The fields this lookup adds to a record, in order (renamed as `[enrich] columns` say).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// A hint that `keys` are about to be found, in this order (see [`Reader::ahead`]).
    pub fn ahead(&self, keys: &[&str], session: &mut LookupSession<'_>) {
        if session.collecting || keys.is_empty() {
            return;
        }
        match session.reader() {
            Ok(reader) => reader.ahead(keys),
            Err(e) => {
                session.error.get_or_insert(e);
            }
        }
    }

    /// What the reference holds for `key`, by the job's policy. A backend error is kept in
    /// `session` (see [`LookupSession::take_error`]) and nothing is found.
    pub fn find<'s>(&'s self, key: &str, session: &'s mut LookupSession<'_>) -> Found<'s> {
        if session.collecting {
            session.wanted.insert(key.to_string());
            return Found::Nothing;
        }
        // The reader and the error are borrowed apart: the values found may borrow the reader.
        let LookupSession { reader, table, error, .. } = session;
        if reader.is_none() {
            match table.source.reader() {
                Ok(r) => *reader = Some(r),
                Err(e) => {
                    error.get_or_insert(e);
                    return Found::Nothing;
                }
            }
        }
        let Some(reader) = reader.as_mut() else { return Found::Nothing };
        let found = match reader.get(key) {
            Ok(found) => found,
            Err(e) => {
                error.get_or_insert(e);
                return Found::Nothing;
            }
        };
        match (found, self.on_missing) {
            (Some(values), _) => Found::Values(values),
            (None, OnMissing::Reject) => Found::Reject,
            (None, OnMissing::Keep) => Found::Missing,
            (None, OnMissing::Default) => Found::Values(Cow::Borrowed(&self.defaults)),
        }
    }

    /// Add the reference fields to `rec`. `Err(key)` when the key is missing and the policy
    /// is to reject. A backend error is kept in `session` (see [`LookupSession::take_error`]).
    pub fn enrich(&self, rec: &mut Record, session: &mut LookupSession<'_>) -> std::result::Result<(), String> {
        let key = match rec.get(&self.key_field) {
            Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
            Some(other) => Cow::Owned(key_text(other)),
            None => Cow::Borrowed(""),
        };
        match self.find(&key, session) {
            // Values decoded for this lookup move into the record; shared ones are copied.
            Found::Values(Cow::Owned(values)) => {
                for (f, v) in self.fields.iter().zip(values) {
                    rec.insert(f.clone(), v);
                }
            }
            Found::Values(Cow::Borrowed(values)) => {
                for (f, v) in self.fields.iter().zip(values) {
                    rec.insert(f.clone(), v.clone());
                }
            }
            Found::Missing => {
                for f in &self.fields {
                    rec.entry(f.clone()).or_insert(Value::Null);
                }
            }
            Found::Reject => return Err(key.into_owned()),
            Found::Nothing => {}
        }
        Ok(())
    }
}

/// What a lookup found (see [`LookupTable::find`]).
pub enum Found<'s> {
    /// The values of the table's fields, in order (the row's, or the defaults).
    Values(Cow<'s, [Value]>),
    /// No row, and the policy keeps the record: fields it lacks become null.
    Missing,
    /// No row, and the policy rejects the record.
    Reject,
    /// Nothing to add: keys are being collected, or the backend failed.
    Nothing,
}

#[cfg(feature = "aws")]
fn load_dynamodb(
    cfg: &EnrichConfig,
    table: &str,
    lookup_key: String,
    cloud: &Cloud,
) -> Result<(Box<dyn Source>, Vec<String>)> {
    let fields = cfg
        .fields
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Error::config("enrich.fields", "a dynamodb:// reference needs the list of fields to add"))?;
    let client = crate::backends::aws::dynamodb(cloud.sdk("enrich.source")?);
    let rows = dynamodb::DynamoSource::open(client, cfg, table, lookup_key, fields.clone())?;
    Ok((Box::new(rows), fields))
}

#[cfg(feature = "postgres")]
fn load_postgres(cfg: &EnrichConfig, target: &str, lookup_key: &str) -> Result<(Box<dyn Source>, Vec<String>)> {
    let fields = cfg
        .fields
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Error::config("enrich.fields", "a postgres:// reference needs the list of fields to add"))?;
    let rows = postgres::PostgresSource::open(cfg, target, lookup_key, fields.clone())?;
    Ok((Box::new(rows), fields))
}

#[cfg(not(feature = "postgres"))]
fn load_postgres(_: &EnrichConfig, _: &str, _: &str) -> Result<(Box<dyn Source>, Vec<String>)> {
    Err(Error::config("enrich.source", "postgres:// needs the `postgres` feature, which this build lacks"))
}

#[cfg(not(feature = "aws"))]
fn load_dynamodb(_: &EnrichConfig, _: &str, _: String, _: &Cloud) -> Result<(Box<dyn Source>, Vec<String>)> {
    Err(Error::config("enrich.source", "dynamodb:// needs the `aws` feature, which this build lacks"))
}
