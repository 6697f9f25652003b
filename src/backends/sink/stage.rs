//! A job's staged sink rows as sorted runs in files, merged in key order when the job is
//! published (the SQLite sink's stage).
//!
//! Each `write` appends one *block* to its process's file in the job's stage directory: the
//! batch's rows sorted by `(key, seq)`, in one `write` call, after an 8-byte length. A process
//! killed mid-append leaves a short last block, which readers skip: its batch's write never
//! returned, so its chunk was not committed and is done again. A chunk done twice stages its
//! rows twice; the merge keeps one row per key, the last of the key in `(key, seq)` order, so
//! copies collapse and the later record of a key wins.
//!
//! [`Stage::merge`] reads every block of a job at once (a k-way merge with a small buffer per block);
//! when there are more blocks than [`FAN_IN`], groups of them are merged into run files first,
//! so memory stays bounded whatever the job's size.
//!
//! A row: `u32` length of the rest, `u32` key length, the key, `u64` seq, `u16` cell count,
//! then each cell: a tag (0 null, 1 integer, 2 real, 3 text, 4 bytes) and its `i64`, `f64` or
//! `u32` length and bytes; all little-endian. The format is private to one version of this crate:
//! stage directories are never read by another.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Most blocks merged at once; each has a read buffer of 16 KiB.
pub const FAN_IN: usize = 512;
const READ_BUFFER: usize = 16 * 1024;
/// Rows handed from the merge thread to the caller at a time.
const HANDOVER: usize = 1024;

/// One cell of a staged row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A real.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::backend(crate::error::Backend::Filesystem, format!("cannot {what} {}", path.display()), e)
}

/// Encodes rows into a block.
#[derive(Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    row_start: usize,
}

impl BlockBuilder {
    /// Start a row. Rows must come in `(key, seq)` order.
    pub fn row(&mut self, key: &str, seq: u64, cells: usize) {
        if self.buf.is_empty() {
            self.buf.extend_from_slice(&0u64.to_le_bytes());
        }
        self.row_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&(cells as u16).to_le_bytes());
        self.end_row();
    }

    fn end_row(&mut self) {
        let len = (self.buf.len() - self.row_start - 4) as u32;
        self.buf[self.row_start..self.row_start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Append a cell to the current row.
    pub fn cell(&mut self, cell: Cell<'_>) {
        match cell {
            Cell::Null => self.buf.push(0),
            Cell::Int(i) => {
                self.buf.push(1);
                self.buf.extend_from_slice(&i.to_le_bytes());
            }
            Cell::Real(f) => {
                self.buf.push(2);
                self.buf.extend_from_slice(&f.to_le_bytes());
            }
            Cell::Text(s) => {
                self.buf.push(3);
                self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(s.as_bytes());
            }
            Cell::Blob(b) => {
                self.buf.push(4);
                self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(b);
            }
        }
        self.end_row();
    }

    /// The block's bytes (its length first), or nothing for no rows.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.buf.is_empty() {
            let len = (self.buf.len() - 8) as u64;
            self.buf[..8].copy_from_slice(&len.to_le_bytes());
        }
        self.buf
    }
}

/// A staged row, as read back: its key, seq and cells.
pub struct Row<'a> {
    /// The item key.
    pub key: &'a str,
    /// The item's seq.
    pub seq: u64,
    cells: &'a [u8],
    count: u16,
}

impl<'a> Row<'a> {
    /// Parse a row (without its length).
    fn parse(bytes: &'a [u8]) -> Option<Row<'a>> {
        let key_len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(bytes.get(4..4 + key_len)?).ok()?;
        let rest = &bytes[4 + key_len..];
        let seq = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let count = u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?);
        Some(Row { key, seq, cells: &rest[10..], count })
    }

    /// The row's cells, in order.
    pub fn cells(&self) -> impl Iterator<Item = Cell<'a>> + 'a {
        let mut at = self.cells;
        (0..self.count).map_while(move |_| {
            let (&tag, rest) = at.split_first()?;
            let (cell, rest) = match tag {
                0 => (Cell::Null, rest),
                1 => (Cell::Int(i64::from_le_bytes(rest.get(..8)?.try_into().ok()?)), &rest[8..]),
                2 => (Cell::Real(f64::from_le_bytes(rest.get(..8)?.try_into().ok()?)), &rest[8..]),
                _ => {
                    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                    let bytes = rest.get(4..4 + len)?;
                    let cell = match tag {
                        3 => Cell::Text(std::str::from_utf8(bytes).ok()?),
                        _ => Cell::Blob(bytes),
                    };
                    (cell, &rest[4 + len..])
                }
            };
            at = rest;
            Some(cell)
        })
    }
}

/// The directory of staged files of one job: appends blocks, lists them, merges them.
#[derive(Debug, Clone)]
pub struct Stage {
    dir: PathBuf,
}

/// A block: where its rows are.
#[derive(Debug, Clone)]
struct Block {
    file: Arc<File>,
    start: u64,
    end: u64,
}

impl Stage {
    /// The stage in `dir` (made when the first block is appended).
    pub fn new(dir: PathBuf) -> Self {
        Stage { dir }
    }

    /// Whether anything is staged here.
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Open a new file of this stage to append blocks to (one per writer: blocks of one
    /// file are never interleaved).
    pub fn create_file(&self) -> Result<File> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io("create", &self.dir, e))?;
        let path = self.dir.join(format!("{}-{:016x}.run", std::process::id(), fastrand::u64(..)));
        OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| io("create", &path, e))
    }

    /// Append a block (from [`BlockBuilder::finish`]) to `file`, in one write.
    pub fn append(&self, file: &mut File, block: &[u8]) -> Result<()> {
        file.write_all(block).map_err(|e| io("append to", &self.dir, e))
    }

    /// Every whole block of every file, in no particular order. A stage removed meanwhile
    /// (wholly or in part) was published by another: what is left of it is read, which
    /// stores nothing new.
    fn blocks(&self) -> Result<Vec<Block>> {
        let mut blocks = Vec::new();
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if gone(&e) => return Ok(blocks),
            entries => entries.map_err(|e| io("list", &self.dir, e))?,
        };
        for entry in entries {
            let path = match entry {
                Err(e) if gone(&e) => continue,
                entry => entry.map_err(|e| io("list", &self.dir, e))?.path(),
            };
            if path.extension().is_none_or(|x| x != "run") {
                continue;
            }
            // An open file stays readable when it is removed.
            let file = match File::open(&path) {
                Err(e) if gone(&e) => continue,
                file => Arc::new(file.map_err(|e| io("open", &path, e))?),
            };
            let size = file.metadata().map_err(|e| io("read", &path, e))?.len();
            let mut at = 0;
            let mut len = [0u8; 8];
            // A short last block is an append cut off by a kill: its write never returned.
            while at + 8 <= size {
                file.read_exact_at(&mut len, at).map_err(|e| io("read", &path, e))?;
                let end = at + 8 + u64::from_le_bytes(len);
                if end > size {
                    break;
                }
                blocks.push(Block { file: file.clone(), start: at + 8, end });
                at = end;
            }
        }
        Ok(blocks)
    }

    /// Call `each` with every staged key's last row in `(key, seq)` order, in key order.
    pub fn merge(&self, each: &mut dyn FnMut(&Row<'_>) -> Result<()>) -> Result<()> {
        let mut blocks = self.blocks()?;
        let scratch = self.dir.join(format!("merge-{}-{:016x}", std::process::id(), fastrand::u64(..)));
        let result = (|| {
            while blocks.len() > FAN_IN {
                // Merge groups into run files, each one block, until one merge can take them all.
                std::fs::create_dir_all(&scratch).map_err(|e| io("create", &scratch, e))?;
                let mut merged = Vec::new();
                for group in blocks.chunks(FAN_IN) {
                    let path = scratch.join(format!("{:08}.merged", fastrand::u64(..)));
                    let mut out = std::io::BufWriter::with_capacity(
                        1 << 20,
                        OpenOptions::new()
                            .create_new(true)
                            .read(true)
                            .write(true)
                            .open(&path)
                            .map_err(|e| io("create", &path, e))?,
                    );
                    out.write_all(&0u64.to_le_bytes()).map_err(|e| io("write", &path, e))?;
                    let mut len = 0u64;
                    merge_blocks(group, &mut |row| {
                        len += row.len() as u64;
                        out.write_all(&row).map_err(|e| io("write", &path, e))
                    })?;
                    let file = out.into_inner().map_err(|e| io("write", &path, e.into_error()))?;
                    file.write_all_at(&len.to_le_bytes(), 0).map_err(|e| io("write", &path, e))?;
                    merged.push(Block { file: Arc::new(file), start: 8, end: 8 + len });
                }
                blocks = merged;
            }
            // The merge runs on a thread of its own and hands rows over in batches, so that
            // reading and ordering overlap what the caller does with them.
            std::thread::scope(|scope| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(8);
                let merger = scope.spawn(move || {
                    let mut batch = Vec::with_capacity(HANDOVER);
                    merge_blocks(&blocks, &mut |row| {
                        batch.push(row);
                        if batch.len() == HANDOVER {
                            // The receiver is gone only when the caller stopped on an error.
                            tx.send(std::mem::replace(&mut batch, Vec::with_capacity(HANDOVER)))
                                .map_err(|_| Error::internal("stage", "the merge's reader stopped", "closed"))?;
                        }
                        Ok(())
                    })?;
                    if !batch.is_empty() {
                        let _ = tx.send(batch);
                    }
                    Ok::<_, Error>(())
                });
                let consumed = rx.iter().flatten().try_for_each(|row| {
                    let parsed = Row::parse(&row[4..]).ok_or_else(|| corrupt(&self.dir))?;
                    each(&parsed)
                });
                drop(rx);
                let merged =
                    merger.join().unwrap_or_else(|_| Err(Error::internal("stage", "merge thread", "panicked")));
                consumed.and(merged)
            })
        })();
        if scratch.exists() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        result
    }

    /// Remove the stage and everything in it.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &self.dir, e)),
            _ => Ok(()),
        }
    }
}

fn corrupt(dir: &Path) -> Error {
    Error::internal("stage", format!("a staged row in {} is corrupt", dir.display()), "bad row")
}

/// Reads one block's rows through a small buffer.
struct BlockReader {
    block: Block,
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl BlockReader {
    /// The next row, length included, or `None` at the block's end.
    fn next_row(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.pos + 4 > self.buf.len() && !self.fill(4)? {
            return Ok(None);
        }
        let len = 4 + u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap_or_default()) as usize;
        if self.pos + len > self.buf.len() && !self.fill(len)? {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a staged row is cut short"));
        }
        let row = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(Some(row))
    }

    /// Make at least `need` unread bytes buffered; false at the block's end.
    fn fill(&mut self, need: usize) -> std::io::Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let want = need.max(READ_BUFFER).min((self.block.end - self.at) as usize + self.buf.len());
        if want <= self.buf.len() {
            return Ok(self.buf.len() >= need);
        }
        let from = self.buf.len();
        self.buf.resize(want, 0);
        self.block.file.read_exact_at(&mut self.buf[from..], self.at)?;
        self.at += (want - from) as u64;
        Ok(self.buf.len() >= need)
    }
}

/// The key and seq of an encoded row (length included), for ordering.
fn order_of(row: &[u8]) -> (&[u8], u64) {
    let key_len = u32::from_le_bytes(row[4..8].try_into().unwrap_or_default()) as usize;
    let key = &row[8..8 + key_len];
    let seq = u64::from_le_bytes(row[8 + key_len..16 + key_len].try_into().unwrap_or_default());
    (key, seq)
}

/// K-way merge of `blocks`, calling `each` with the last row of every key (length included).
fn merge_blocks(blocks: &[Block], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
    let readers = blocks.iter().map(|b| BlockReader { block: b.clone(), at: b.start, buf: Vec::new(), pos: 0 });
    let rows = readers.map(|mut r| std::iter::from_fn(move || r.next_row().transpose()));
    let mut merged =
        itertools::kmerge_by(rows, |a: &std::io::Result<Vec<u8>>, b: &std::io::Result<Vec<u8>>| match (a, b) {
            (Ok(a), Ok(b)) => order_of(a) < order_of(b),
            (Err(_), _) => true,
            _ => false,
        })
        .peekable();
    let read_error =
        |e: std::io::Error| Error::backend(crate::error::Backend::Filesystem, "cannot read a staged block", e);
    while let Some(row) = merged.next() {
        let row = row.map_err(read_error)?;
        // Of one key's rows the last (the highest seq) stays.
        if let Some(Ok(next)) = merged.peek() {
            if order_of(next).0 == order_of(&row).0 {
                continue;
            }
        }
        each(row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn block(rows: &mut [(String, u64, i64)]) -> Vec<u8> {
        rows.sort();
        let mut b = BlockBuilder::default();
        for (key, seq, v) in rows.iter() {
            b.row(key, *seq, 2);
            b.cell(Cell::Int(*v));
            b.cell(Cell::Text(key));
        }
        b.finish()
    }

    fn merged(stage: &Stage) -> Vec<(String, u64, i64)> {
        let mut out = Vec::new();
        stage
            .merge(&mut |row| {
                let cells: Vec<Cell<'_>> = row.cells().collect();
                assert_eq!(cells[1], Cell::Text(row.key));
                let Cell::Int(v) = cells[0] else { panic!("not an integer") };
                out.push((row.key.to_string(), row.seq, v));
                Ok(())
            })
            .unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the blocks, files and fan-in passes, the merge yields each key once, with
        /// its highest seq, in key order; a torn last block is skipped.
        #[test]
        fn the_merge_keeps_the_last_row_of_every_key(
            batches in prop::collection::vec(prop::collection::vec((0u32..300, 0u64..50), 0..40), 1..(FAN_IN + 40)),
            files in 1usize..4,
            torn in 0usize..9,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let stage = Stage::new(dir.path().join("job"));
            let mut handles: Vec<File> = (0..files).map(|_| stage.create_file().unwrap()).collect();
            let mut expected = std::collections::BTreeMap::new();
            for (i, batch) in batches.iter().enumerate() {
                let mut rows: Vec<_> =
                    batch.iter().map(|&(k, s)| (format!("k{k:03}"), s, i64::from(k) * 1000 + s as i64)).collect();
                for (k, s, v) in &rows {
                    let e = expected.entry(k.clone()).or_insert((*s, *v));
                    if *s > e.0 { *e = (*s, *v); }
                }
                let bytes = block(&mut rows);
                stage.append(&mut handles[i % files], &bytes).unwrap();
            }
            // A kill mid-append: part of a block that must not count.
            let mut extra = vec![(String::from("zzz"), 1, 1)];
            let cut = block(&mut extra);
            stage.append(&mut handles[0], &cut[..torn.min(cut.len() - 1)]).unwrap();
            let want: Vec<_> = expected.into_iter().map(|(k, (s, v))| (k, s, v)).collect();
            prop_assert_eq!(merged(&stage), want);
            prop_assert!(std::fs::read_dir(stage.dir.clone()).unwrap().all(|e| e.unwrap().path().is_file()),
                "the merge's scratch directory is gone");
        }
    }

    #[test]
    fn cells_round_trip() {
        let mut b = BlockBuilder::default();
        b.row("k", 7, 5);
        for c in [Cell::Null, Cell::Int(-3), Cell::Real(2.5), Cell::Text("x, \"y\""), Cell::Blob(&[0, 255])] {
            b.cell(c);
        }
        let bytes = b.finish();
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::new(dir.path().join("s"));
        stage.append(&mut stage.create_file().unwrap(), &bytes).unwrap();
        let mut seen = 0;
        stage
            .merge(&mut |row| {
                seen += 1;
                assert_eq!((row.key, row.seq), ("k", 7));
                let cells: Vec<_> = row.cells().collect();
                assert_eq!(
                    cells,
                    [Cell::Null, Cell::Int(-3), Cell::Real(2.5), Cell::Text("x, \"y\""), Cell::Blob(&[0, 255])]
                );
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, 1);
        stage.remove().unwrap();
        assert!(!stage.exists());
    }
}
