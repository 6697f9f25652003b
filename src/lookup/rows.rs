//! Reading reference rows: from a CSV or JSON Lines file, or from a table of the data
//! directory's SQLite database. Each row is typed by `enrich.columns` and handed on as (lookup
//! key, values of the fields the job adds).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::column::ColumnRule;
use crate::config::EnrichConfig;
use crate::error::{Error, Result};
use crate::record::{key_text, Record};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Receives each row: its lookup key and its values, in the order of the returned fields.
pub type PutRow<'a> = dyn FnMut(String, Vec<Value>) -> Result<()> + 'a;

/// Read every row of the CSV or JSON Lines (`.jsonl`, `.ndjson`, `.json`) file at `path`.
/// Returns the names of the fields the rows hold (`enrich.fields`, else every field but the
/// lookup key).
pub fn read_file(cfg: &EnrichConfig, lookup_key: &str, path: &Path, put: &mut PutRow<'_>) -> Result<Vec<String>> {
    let mut typer = Typer::new(cfg, lookup_key);
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

/// Read every row of `table` in the SQLite database at `db`. Returns the field names, as
/// [`read_file`] does.
pub fn read_sqlite(
    cfg: &EnrichConfig,
    lookup_key: &str,
    db: &Path,
    table: &str,
    put: &mut PutRow<'_>,
) -> Result<Vec<String>> {
    if !crate::config::is_sql_ident(table) {
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
}

impl<'c> Typer<'c> {
    fn new(cfg: &'c EnrichConfig, lookup_key: &'c str) -> Self {
        Typer {
            source: &cfg.source,
            lookup_key,
            rules: cfg.columns.iter().map(|c| (c.name.as_str(), ColumnRule::from(c))).collect(),
            fields: cfg.fields.clone(),
        }
    }

    fn add(&mut self, line: u64, mut row: Row<'_>, put: &mut PutRow<'_>) -> Result<()> {
        let at = |column: &str, reason: String| Error::InvalidInput {
            location: self.source.to_string(),
            line: Some(line),
            column: Some(column.to_string()),
            reason,
        };
        let key = match row.take(self.lookup_key) {
            Some(v) => key_text(&v),
            None => return Err(at(self.lookup_key, "the reference row lacks the lookup key".into())),
        };
        let lookup_key = self.lookup_key;
        let fields = self.fields.get_or_insert_with(|| row.names().into_iter().filter(|k| k != lookup_key).collect());
        let mut values = Vec::with_capacity(fields.len());
        for f in fields.iter() {
            let v = row.take(f).ok_or_else(|| at(f, "the reference row lacks this field".into()))?;
            values.push(match self.rules.get(f.as_str()) {
                Some(rule) => rule.check(v).map_err(|m| at(f, m))?,
                None => v,
            });
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
