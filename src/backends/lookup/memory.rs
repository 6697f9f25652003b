//! A reference held in memory, compactly: every row (its key and the values of the fields it
//! adds) encoded one after another in one byte arena, and a hash table of row offsets.
//!
//! A row of a nine-digit key and six numbers takes 71 bytes in the arena and about 5 in the
//! table, where a map of boxed keys to `serde_json` values took over 250; a lookup decodes
//! its row's few values.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::path::Path;

use serde_json::Value;

use super::index::{prefetch, Index};
use super::{Reader, Source};
use crate::error::{Error, Result};
use crate::model::packed::{self, Packed};

/// Rows by key, in memory.
#[derive(Default)]
pub struct MemorySource {
    /// Rows, each `key length (u32) | key | value count (u32) | values` (values as [`encode`]
    /// writes them), in blocks of [`BLOCK`] bytes (a row never straddles two), so that the
    /// arena never holds twice its size while it grows.
    arena: Arena,
    /// Offsets of rows in the arena (block × [`BLOCK`] + position), hashed by their key.
    index: Index,
    hasher: foldhash::fast::FixedState,
    /// Where the rows appended but not yet in `index` start (block, position): every row
    /// from there to the arena's end, in order.
    unindexed: Option<(usize, usize)>,
    /// A row being encoded.
    scratch: Vec<u8>,
}

/// The size of an arena block; also the largest row held in memory.
pub const BLOCK: usize = 4 << 20;

#[derive(Default)]
struct Arena {
    blocks: Vec<Vec<u8>>,
}

impl Arena {
    /// The row at `at`.
    fn row(&self, at: u32) -> &[u8] {
        let (block, pos) = (at as usize / BLOCK, at as usize % BLOCK);
        &self.blocks[block][pos..]
    }

    /// Append `row`; its offset.
    fn push(&mut self, row: &[u8]) -> Option<u32> {
        if row.len() > BLOCK {
            return None;
        }
        if self.blocks.last().is_none_or(|b| b.len() + row.len() > BLOCK) {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        let block = self.blocks.len() - 1;
        let last = &mut self.blocks[block];
        let at = u32::try_from(block * BLOCK + last.len()).ok()?;
        last.extend_from_slice(row);
        Some(at)
    }

    fn bytes(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum()
    }
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemorySource({} rows, {} bytes)", self.index.len(), self.bytes())
    }
}

/// How many kept references [`MemorySource::keep`] leaves in a directory.
pub const KEPT: usize = 4;
const KEPT_MAGIC: &[u8] = b"sluicebox reference rows v1\n";

/// The length of the row at the start of `row` (as [`MemorySource::insert`] encodes it).
fn row_len(row: &[u8]) -> usize {
    row_len_checked(row).unwrap_or(row.len())
}

/// The length of the row at the start of `row`, or `None` if it is cut short.
fn row_len_checked(row: &[u8]) -> Option<usize> {
    let key_len = u32::from_le_bytes(row.get(..4)?.try_into().ok()?) as usize;
    let mut pos = 4 + key_len;
    let count = u32::from_le_bytes(row.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    let mut rest = row.get(pos..)?;
    for _ in 0..count {
        rest = Packed::read(rest)?.1;
    }
    Some(row.len() - rest.len())
}

/// The key of `row`, and where its values start.
fn key_of(row: &[u8]) -> (&[u8], usize) {
    let len = u32::from_le_bytes(row[..4].try_into().unwrap_or_default()) as usize;
    (&row[4..4 + len], 4 + len)
}

impl MemorySource {
    /// Add (or replace) the row for `key`. Fails for a row over [`BLOCK`] bytes, or when the
    /// rows outgrow 4 GiB.
    pub fn insert(&mut self, key: String, values: Vec<Value>) -> Result<()> {
        self.append(key, values)?;
        self.index_appended();
        Ok(())
    }

    /// [`MemorySource::insert`], but the row is found only after
    /// [`MemorySource::index_appended`]: a reference read whole is indexed once, in batches
    /// whose slots are fetched ahead (a million keys in random order otherwise each wait for
    /// a miss of memory).
    pub fn append(&mut self, key: String, values: Vec<Value>) -> Result<()> {
        let mut row = std::mem::take(&mut self.scratch);
        row.clear();
        row.extend_from_slice(&(key.len() as u32).to_le_bytes());
        row.extend_from_slice(key.as_bytes());
        row.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for v in &values {
            encode(v, &mut row);
        }
        let at = self.arena.push(&row).ok_or_else(|| {
            Error::config(
                "enrich.memory_limit",
                format!(
                    "the reference row of key {key:?} takes {} bytes, or the reference over 4 GiB, in memory; \
                     lower enrich.memory_limit to look it up in SQLite",
                    row.len()
                ),
            )
        })?;
        self.scratch = row;
        self.unindexed.get_or_insert((at as usize / BLOCK, at as usize % BLOCK));
        Ok(())
    }

    /// Index every row appended, in the order appended: a later row of a key replaces the
    /// earlier (whose bytes stay, unreferenced). The rows are read in arena order, their
    /// slots fetched ahead in batches.
    pub fn index_appended(&mut self) {
        let Some((first, mut pos)) = self.unindexed.take() else { return };
        let (arena, hasher) = (&self.arena, &self.hasher);
        let (mut rows, mut n) = ([(0u64, 0u32); 16], 0);
        let index_rows = |index: &mut Index, rows: &[(u64, u32)]| {
            for &(hash, _) in rows {
                index.prefetch_slot(hash);
            }
            for &(hash, at) in rows {
                let key = key_of(arena.row(at)).0;
                index.upsert(hash, at, |o| key_of(arena.row(o)).0 == key);
            }
        };
        for (b, block) in arena.blocks.iter().enumerate().skip(first) {
            while pos < block.len() {
                let row = &block[pos..];
                rows[n] = (hasher.hash_one(key_of(row).0), (b * BLOCK + pos) as u32);
                n += 1;
                pos += row_len(row);
                if n == rows.len() {
                    index_rows(&mut self.index, &rows);
                    n = 0;
                }
            }
            pos = 0;
        }
        index_rows(&mut self.index, &rows[..n]);
    }

    /// Add every row of `later` (rows read after this one's), replacing rows of the same key.
    /// Its arena's blocks move over as they are; its rows are appended, to be indexed with
    /// [`MemorySource::index_appended`].
    pub fn absorb(&mut self, later: MemorySource) -> Result<()> {
        let shift = self.arena.blocks.len();
        if (shift + later.arena.blocks.len()) * BLOCK > u32::MAX as usize {
            return Err(Error::config(
                "enrich.memory_limit",
                "the reference is over 4 GiB in memory; lower enrich.memory_limit to look it up in SQLite",
            ));
        }
        // Every row of `later` (replaced ones too: their replacements come after them).
        self.unindexed.get_or_insert((shift, 0));
        self.arena.blocks.extend(later.arena.blocks);
        Ok(())
    }

    /// Write the rows and their `fields` to `path` (replacing it whole), so that a later job
    /// reads them back with [`MemorySource::open_kept`] instead of the reference file. Older
    /// kept references in the same directory beyond the newest [`KEPT`] are removed.
    pub fn keep(&self, fields: &[String], path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let partial = path.with_extension(format!("rows-{}.partial", std::process::id()));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
        out.write_all(KEPT_MAGIC)?;
        let fields = serde_json::to_vec(fields).map_err(std::io::Error::other)?;
        out.write_all(&(fields.len() as u32).to_le_bytes())?;
        out.write_all(&fields)?;
        // Only rows the table points to: a replaced row is left behind.
        let mut live: Vec<u32> = self.index.offsets().collect();
        live.sort_unstable();
        out.write_all(&(live.len() as u64).to_le_bytes())?;
        for at in live {
            let row = self.arena.row(at);
            let row = &row[..row_len(row)];
            out.write_all(&(row.len() as u32).to_le_bytes())?;
            out.write_all(row)?;
        }
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&partial, path)?;
        // Keep the newest few.
        let files: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        // A write cut off by a kill leaves its partial file: gone after an hour.
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (_, old) in files.iter().filter(|(t, p)| *t < stale && p.extension().is_some_and(|x| x == "partial")) {
            let _ = std::fs::remove_file(old);
        }
        let mut kept: Vec<_> = files.into_iter().filter(|(_, p)| p.extension().is_some_and(|x| x == "rows")).collect();
        kept.sort();
        for (_, old) in kept.iter().rev().skip(KEPT) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// Rows and fields [`MemorySource::keep`] wrote to `path`, or `None` (no such file, or
    /// not one this version wrote whole).
    pub fn open_kept(path: &Path) -> Option<(MemorySource, Vec<String>)> {
        use std::io::Read;
        // Read as a stream: only the arena grows.
        let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).ok()?);
        let mut magic = vec![0u8; KEPT_MAGIC.len()];
        file.read_exact(&mut magic).ok()?;
        if magic != KEPT_MAGIC {
            return None;
        }
        let mut n4 = [0u8; 4];
        let mut n8 = [0u8; 8];
        file.read_exact(&mut n4).ok()?;
        let mut fields = vec![0u8; u32::from_le_bytes(n4) as usize];
        file.read_exact(&mut fields).ok()?;
        let fields: Vec<String> = serde_json::from_slice(&fields).ok()?;
        file.read_exact(&mut n8).ok()?;
        let count = u64::from_le_bytes(n8);
        let mut source = MemorySource::default();
        let mut row = Vec::new();
        for _ in 0..count {
            file.read_exact(&mut n4).ok()?;
            row.resize(u32::from_le_bytes(n4) as usize, 0);
            file.read_exact(&mut row).ok()?;
            if row_len_checked(&row)? != row.len() {
                return None;
            }
            // A kept file holds each key once: a repeated one (a damaged file) replaces.
            let at = source.arena.push(&row)?;
            source.unindexed.get_or_insert((at as usize / BLOCK, at as usize % BLOCK));
        }
        source.index_appended();
        // Nothing after the last row.
        matches!(file.read(&mut n4), Ok(0)).then_some((source, fields))
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes held: the arena and the table.
    pub fn bytes(&self) -> usize {
        self.arena.bytes() + self.index.capacity() * std::mem::size_of::<u64>()
    }

    /// Ask the processor for the rows of `keys` (about to be looked up, in this order) before
    /// they are needed: first every key's slot, then every slot's row, so that the misses of
    /// the batch overlap instead of following one another.
    pub fn prefetch(&self, keys: &[&str]) {
        for keys in keys.chunks(32) {
            let mut hashes = [0u64; 32];
            for (h, k) in hashes.iter_mut().zip(keys) {
                *h = self.hasher.hash_one(k.as_bytes());
                self.index.prefetch_slot(*h);
            }
            for &hash in &hashes[..keys.len()] {
                if let Some(first) = self.index.candidate(hash).and_then(|at| self.arena.row(at).first()) {
                    prefetch(first);
                }
            }
        }
    }

    fn get(&self, key: &str) -> Option<Vec<Value>> {
        debug_assert!(self.unindexed.is_none(), "rows appended but not indexed");
        let hash = self.hasher.hash_one(key.as_bytes());
        let at = self.index.get(hash, |o| key_of(self.arena.row(o)).0 == key.as_bytes())?;
        let row = self.arena.row(at);
        let (_, at) = key_of(row);
        let n = u32::from_le_bytes(row.get(at..at + 4)?.try_into().ok()?) as usize;
        let mut pos = at + 4;
        Some((0..n).map(|_| decode(row, &mut pos)).collect())
    }
}

/// Append `v` to a row (see [`crate::model::packed`]).
pub(super) fn encode(v: &Value, out: &mut Vec<u8>) {
    packed::write(Some(v), out);
}

/// Read back a value [`encode`] wrote at `pos`, moving past it (`null` for bytes that are
/// not one: a row is checked whole when it is read from a file).
pub(super) fn decode(arena: &[u8], pos: &mut usize) -> Value {
    match arena.get(*pos..).and_then(Packed::read) {
        Some((value, rest)) => {
            *pos = arena.len() - rest.len();
            value.value().unwrap_or(Value::Null)
        }
        None => {
            *pos = arena.len();
            Value::Null
        }
    }
}

impl Source for MemorySource {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(MemoryReader(self)))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Shared with the thread that keeps the rows (see [`MemorySource::keep`]).
impl Source for std::sync::Arc<MemorySource> {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(MemoryReader(self)))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

struct MemoryReader<'a>(&'a MemorySource);

impl Reader for MemoryReader<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, [Value]>>> {
        Ok(self.0.get(key).map(Cow::Owned))
    }

    fn ahead(&mut self, keys: &[&str]) {
        self.0.prefetch(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_every_kind_come_back_as_they_went_in_and_later_rows_replace_earlier() {
        let row = vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::from(-7),
            Value::from(u64::MAX),
            Value::from(128.75),
            Value::from("Sao Tome"),
            serde_json::json!({"a": [1, "b"]}),
        ];
        let mut m = MemorySource::default();
        m.insert("k1".into(), row.clone()).unwrap();
        m.insert("k2".into(), vec![Value::from(1)]).unwrap();
        m.insert("k1".into(), vec![Value::from("replaced")]).unwrap();
        m.insert("".into(), row.clone()).unwrap();
        assert_eq!(m.get("k1"), Some(vec![Value::from("replaced")]));
        assert_eq!(m.get("k2"), Some(vec![Value::from(1)]));
        assert_eq!(m.get(""), Some(row.clone()));
        assert_eq!(m.get("k3"), None);

        // Rows read later (another part of the file) replace these, and keep the rest.
        let mut later = MemorySource::default();
        later.insert("k2".into(), vec![Value::from("later"), Value::Null]).unwrap();
        later.insert("k4".into(), row.clone()).unwrap();
        m.absorb(later).unwrap();
        m.index_appended();
        assert_eq!(m.len(), 4);
        assert_eq!(m.get("k1"), Some(vec![Value::from("replaced")]));
        assert_eq!(m.get("k2"), Some(vec![Value::from("later"), Value::Null]));
        assert_eq!(m.get("k4"), Some(row));
    }

    #[test]
    fn kept_rows_read_back_equal_and_a_damaged_file_is_not_read() {
        let mut m = MemorySource::default();
        for i in 0..5_000u64 {
            m.insert(format!("k{i}"), vec![Value::from(i), Value::from(format!("name {i}")), Value::Null]).unwrap();
        }
        m.insert("k7".into(), vec![Value::from("replaced")]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs").join("a.rows");
        let fields = vec!["n".to_string(), "name".to_string(), "none".to_string()];
        m.keep(&fields, &path).unwrap();
        let (back, back_fields) = MemorySource::open_kept(&path).unwrap();
        assert_eq!(back_fields, fields);
        assert_eq!(back.len(), 5_000);
        for key in ["k0", "k7", "k4999"] {
            assert_eq!(back.get(key), m.get(key), "{key}");
        }
        // A file cut short (a writer killed before its rename cannot leave one, but a disk can)
        // is not read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(MemorySource::open_kept(&path).is_none());
        // Only the newest few are kept.
        for i in 0..KEPT + 2 {
            m.keep(&fields, &dir.path().join("refs").join(format!("{i}.rows"))).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path().join("refs")).unwrap().count(), KEPT);
    }

    #[test]
    fn a_million_rows_of_six_numbers_take_tens_of_mebibytes() {
        let mut m = MemorySource::default();
        for i in 0..1_000_000u64 {
            let row = vec![
                Value::from(i % 10_000),
                Value::from(128.75),
                Value::from(90.13),
                Value::from(1e6),
                Value::from(7e5),
                Value::from(3e5),
            ];
            m.insert(format!("{}", 100_000_000 + i), row).unwrap();
        }
        assert_eq!(m.get("100000042").unwrap()[0], Value::from(42));
        let mib = m.bytes() as f64 / (1 << 20) as f64;
        assert!(mib < 80.0, "{mib:.0} MiB");
    }
}
