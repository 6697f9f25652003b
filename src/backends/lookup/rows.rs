//! Reading reference rows: from a CSV or JSON Lines file, or from a table of the data
//! directory's SQLite database. Each row is typed by `enrich.columns` and handed on as (lookup
//! key, values of the fields the job adds).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::memory::MemorySource;
use crate::error::{Error, Result};
use crate::model::column::ColumnRule;
use crate::model::config::EnrichConfig;
use crate::model::record::{key_text, Record};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Receives each row: its lookup key and its values, in the order of the returned fields.
pub type PutRow<'a> = dyn FnMut(String, Vec<Value>) -> Result<()> + 'a;

/// Whether a reference file is read as JSON Lines (by its extension), else as CSV.
pub fn is_json_lines(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson" | "json"))
}

/// Read every row of the CSV or JSON Lines (`.jsonl`, `.ndjson`, `.json`) file at `path`.
/// Returns the names of the fields the rows hold (`enrich.fields`, else every field but the
/// lookup key).
pub fn read_file(cfg: &EnrichConfig, lookup_key: &str, path: &Path, put: &mut PutRow<'_>) -> Result<Vec<String>> {
    let mut typer = Typer::new(cfg, lookup_key);
    let location = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| Error::input(&location, format!("cannot read the enrichment source: {e}")))?;
    let reader = std::io::BufReader::with_capacity(256 << 10, file);
    if is_json_lines(path) {
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
            typer.add(i as u64 + 1, Row::Map(rec), put)?;
        }
        return Ok(typer.into_fields());
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
            Ok(false) => return Ok(typer.into_fields()),
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
        typer.add(line, Row::Csv { columns: &columns, record: &row }, put)?;
    }
}

/// Read a CSV reference file into memory, in as many parts as there are cores (at least 8
/// MiB each), each part read and typed on its own thread; later parts' rows replace earlier
/// ones of the same key, as in one pass. Returns the rows and the field names, as
/// [`read_file`] does.
pub fn read_csv_into_memory(cfg: &EnrichConfig, lookup_key: &str, path: &Path) -> Result<(MemorySource, Vec<String>)> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    read_csv_in_parts(cfg, lookup_key, path, cores.min((size >> 23) as usize + 1))
}

/// [`read_csv_into_memory`] in about `parts` parts.
fn read_csv_in_parts(
    cfg: &EnrichConfig,
    lookup_key: &str,
    path: &Path,
    parts: usize,
) -> Result<(MemorySource, Vec<String>)> {
    let location = path.display().to_string();
    let cannot = |e: std::io::Error| Error::input(&location, format!("cannot read the enrichment source: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    let mut rdr = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let header = rdr.headers().map_err(|e| Error::input(&location, e.to_string()))?.clone();
    let (body, body_line) = (rdr.position().byte(), rdr.position().line());
    drop(rdr);
    let columns: FastMap<String, usize> = header.iter().enumerate().map(|(i, h)| (h.to_string(), i)).collect();
    let parts = split_csv(path, body, body_line, size, parts).map_err(cannot)?;
    let read_part = |&(start, end, first_line): &(u64, u64, u64)| -> Result<(MemorySource, Vec<String>)> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        file.seek(std::io::SeekFrom::Start(start)).map_err(cannot)?;
        let reader = std::io::BufReader::with_capacity(256 << 10, file.take(end - start));
        // Field counts are checked against the header here, as a single pass would.
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
        let mut typer = Typer::new(cfg, lookup_key);
        let mut rows = MemorySource::default();
        let mut row = csv::StringRecord::new();
        loop {
            match rdr.read_record(&mut row) {
                Ok(false) => return Ok((rows, typer.into_fields())),
                Ok(true) => {}
                Err(e) => {
                    return Err(Error::InvalidInput {
                        location: location.clone(),
                        line: e.position().map(|p| p.line() + first_line - 1),
                        column: None,
                        reason: e.to_string(),
                    })
                }
            }
            let line = row.position().map(|p| p.line()).unwrap_or(1) + first_line - 1;
            if row.len() != header.len() {
                return Err(Error::InvalidInput {
                    location: location.clone(),
                    line: Some(line),
                    column: None,
                    reason: format!("the row has {} fields; the header names {}", row.len(), header.len()),
                });
            }
            typer.add(line, Row::Csv { columns: &columns, record: &row }, &mut |k, v| rows.append(k, v))?;
        }
    };
    let read: Vec<Result<(MemorySource, Vec<String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts.iter().map(|part| scope.spawn(move || read_part(part))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("lookup", "reading the reference", "panicked"))))
            .collect()
    });
    let mut read = read.into_iter();
    let (mut rows, mut fields) = read.next().unwrap_or_else(|| Ok(Default::default()))?;
    for part in read {
        let (later, later_fields) = part?;
        if fields.is_empty() {
            fields = later_fields;
        }
        rows.absorb(later)?;
    }
    rows.index_appended();
    if fields.is_empty() {
        // No rows: the fields are the header's (or the job's list).
        fields = cfg
            .fields
            .clone()
            .unwrap_or_else(|| header.iter().filter(|h| *h != lookup_key).map(String::from).collect());
    }
    Ok((rows, fields))
}

/// Cut the records of a CSV file from byte `body` (on line `body_line`) to `size` into about
/// `parts` ranges of whole records: `(start, end, first line)`. A cut is made only at a
/// newline outside quotes (an even number of quote characters before it, as RFC 4180 quotes).
fn split_csv(path: &Path, body: u64, body_line: u64, size: u64, parts: usize) -> std::io::Result<Vec<(u64, u64, u64)>> {
    use std::io::{Read, Seek};
    let mut cuts = vec![(body, body_line)];
    if parts > 1 {
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(body))?;
        let step = (size - body) / parts as u64;
        let mut buf = vec![0u8; 1 << 20];
        let (mut at, mut line, mut quoted) = (body, body_line, false);
        let mut next = body + step;
        'read: loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for i in memchr::memchr2_iter(b'"', b'\n', &buf[..n]) {
                if buf[i] == b'"' {
                    quoted = !quoted;
                    continue;
                }
                line += 1;
                let pos = at + i as u64 + 1;
                if !quoted && pos >= next && pos < size {
                    cuts.push((pos, line));
                    if cuts.len() == parts {
                        break 'read;
                    }
                    next = pos + step;
                }
            }
            at += n as u64;
        }
    }
    let ends = cuts.iter().skip(1).map(|c| c.0).chain([size]);
    Ok(cuts.iter().zip(ends).map(|(&(start, line), end)| (start, end, line)).collect())
}

/// Read every row of `table` in the SQLite database at `db`. Returns the field names, as
/// [`read_file`] does.
pub fn read_sqlite(
    cfg: &EnrichConfig,
    lookup_key: &str,
    db: &Path,
    table: &str,
    put: &mut PutRow<'_>,
) -> Result<Vec<String>> {
    if !crate::backends::sink::target::is_sql_ident(table) {
        return Err(Error::config("enrich.source", format!("{table:?} is not a plain table name")));
    }
    let mut typer = Typer::new(cfg, lookup_key);
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
        typer.add(n, Row::Map(rec), put)?;
    }
    Ok(typer.into_fields())
}

/// Types rows by `enrich.columns` and learns the field list from the first row.
struct Typer<'c> {
    source: &'c str,
    lookup_key: &'c str,
    rules: HashMap<&'c str, ColumnRule>,
    fields: Option<Vec<String>>,
    /// Learnt from the first row: each field's rule, and for CSV rows its column (and the
    /// key's), so that rows are typed without a name looked up per field.
    layout: Option<Layout>,
}

struct Layout {
    rules: Vec<Option<ColumnRule>>,
    /// The key's column, then each field's, in a CSV file (`None`: rows are maps).
    columns: Option<(Option<usize>, Vec<Option<usize>>)>,
}

impl<'c> Typer<'c> {
    fn new(cfg: &'c EnrichConfig, lookup_key: &'c str) -> Self {
        Typer {
            source: &cfg.source,
            lookup_key,
            rules: cfg.columns.iter().map(|c| (c.name.as_str(), ColumnRule::from(c))).collect(),
            fields: cfg.fields.clone(),
            layout: None,
        }
    }

    fn add(&mut self, line: u64, mut row: Row<'_>, put: &mut PutRow<'_>) -> Result<()> {
        let at = |column: &str, reason: String| Error::InvalidInput {
            location: self.source.to_string(),
            line: Some(line),
            column: Some(column.to_string()),
            reason,
        };
        let lookup_key = self.lookup_key;
        let fields = self.fields.get_or_insert_with(|| row.names().into_iter().filter(|k| k != lookup_key).collect());
        let layout = self.layout.get_or_insert_with(|| Layout {
            rules: fields.iter().map(|f| self.rules.get(f.as_str()).cloned()).collect(),
            columns: match &row {
                Row::Csv { columns, .. } => Some((
                    columns.get(lookup_key).copied(),
                    fields.iter().map(|f| columns.get(f.as_str()).copied()).collect(),
                )),
                Row::Map(_) => None,
            },
        });
        let (key, mut values) = match (&mut row, &layout.columns) {
            // CSV text typed where it lies.
            (Row::Csv { record, .. }, Some((key, columns))) => {
                let text = |i: Option<usize>| i.and_then(|i| record.get(i));
                let Some(key) = text(*key) else {
                    return Err(at(lookup_key, "the reference row lacks the lookup key".into()));
                };
                let mut values = Vec::with_capacity(fields.len());
                for ((f, &i), rule) in fields.iter().zip(columns).zip(&layout.rules) {
                    let v = text(i).ok_or_else(|| at(f, "the reference row lacks this field".into()))?;
                    values.push(match rule {
                        Some(rule) => rule.check_str(v).map_err(|m| at(f, m))?,
                        None => Value::String(v.to_string()),
                    });
                }
                return put(key.to_string(), values);
            }
            (row, _) => {
                let key = match row.take(lookup_key) {
                    Some(v) => key_text(&v),
                    None => return Err(at(lookup_key, "the reference row lacks the lookup key".into())),
                };
                let mut values = Vec::with_capacity(fields.len());
                for f in fields.iter() {
                    values.push(row.take(f).ok_or_else(|| at(f, "the reference row lacks this field".into()))?);
                }
                (key, values)
            }
        };
        for ((f, rule), v) in fields.iter().zip(&layout.rules).zip(values.iter_mut()) {
            if let Some(rule) = rule {
                *v = rule.check(std::mem::take(v)).map_err(|m| at(f, m))?;
            }
        }
        put(key, values)
    }

    fn into_fields(self) -> Vec<String> {
        self.fields.unwrap_or_default()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::lookup::Source;

    fn enrich(source: &Path) -> EnrichConfig {
        toml::from_str(&format!("source = {:?}\nkey = \"id\"", source.display().to_string())).unwrap()
    }

    /// A reference with quoted newlines and quotes, a key repeated far apart, read in many
    /// parts, holds what one pass reads; a bad row in a later part is named by its line.
    #[test]
    fn a_reference_read_in_parts_equals_one_read_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.csv");
        let mut text = String::from("id,name,note\n");
        for i in 0..400 {
            let note = match i % 3 {
                0 => "\"two\nlines, \"\"quoted\"\"\"".to_string(),
                1 => "plain".to_string(),
                _ => "\"a, b\"".to_string(),
            };
            text.push_str(&format!("k{},name {i},{note}\n", i % 350));
        }
        std::fs::write(&path, &text).unwrap();
        let cfg = enrich(&path);
        let mut one = MemorySource::default();
        let fields = read_file(&cfg, "id", &path, &mut |k, v| one.insert(k, v)).unwrap();
        for parts in [1, 2, 3, 7, 50] {
            let (many, many_fields) = read_csv_in_parts(&cfg, "id", &path, parts).unwrap();
            assert_eq!(many_fields, fields);
            assert_eq!(many.len(), 350, "{parts} parts");
            let (mut a, mut b) = (one.reader().unwrap(), many.reader().unwrap());
            for i in 0..350 {
                let key = format!("k{i}");
                assert_eq!(a.get(&key).unwrap().map(|v| v.to_vec()), b.get(&key).unwrap().map(|v| v.to_vec()));
            }
            // The later row of a repeated key wins, as in one pass.
            assert_eq!(b.get("k3").unwrap().unwrap()[0], Value::from("name 353"));
        }
        // 2 lines per row whose i % 3 == 0: row 300 (i = 299) starts on line 2 + 299 + 100.
        let bad = text.replacen("k299,name 299,\"a, b\"", "k299,name 299", 1);
        std::fs::write(&path, bad).unwrap();
        for parts in [1, 4] {
            let err = read_csv_in_parts(&cfg, "id", &path, parts).err().unwrap().to_string();
            assert!(err.contains("401"), "{parts} parts: {err}");
        }
    }
}
