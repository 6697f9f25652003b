//! The output encoder: kept records as CSV rows of the output fields, or JSON Lines; for a
//! stream's Parquet buffers, typed rows (see [`RowWriter`]).

use serde_json::Value;

use crate::engine::parquet::RowWriter;
use crate::error::{Error, Result};
use crate::model::config::OutputFormat;
use crate::model::record::{Projection, Row};

/// Encodes kept records as a job's output: CSV rows of the output fields (no header: see
/// [`Encoder::header`]), or JSON Lines when the fields are not known.
pub struct Encoder {
    fields: Option<Projection>,
    /// Per output field, the scale of an exact decimal: written with exactly that many
    /// decimals (`12.50`), as its input had them.
    scales: Vec<Option<u32>>,
    csv: Option<csv::Writer<Vec<u8>>>,
    /// Typed rows of a Parquet file's columns, when it writes those (into `jsonl`).
    rows: Option<RowWriter>,
    jsonl: Vec<u8>,
    /// A number's text, reused.
    scratch: Vec<u8>,
    /// CSV bytes already given out by [`Encoder::take`].
    taken: usize,
}

impl Encoder {
    /// An encoder for `format`; CSV needs `fields` (without them, records are JSON Lines).
    pub fn new(format: OutputFormat, fields: Option<Vec<String>>) -> Self {
        Self::with_capacity(format, fields, 0)
    }

    /// [`Encoder::new`] with room for `bytes` of output.
    pub fn with_capacity(format: OutputFormat, fields: Option<Vec<String>>, bytes: usize) -> Self {
        let csv = format == OutputFormat::Csv && fields.is_some();
        let buffer = Vec::with_capacity(bytes);
        let (csv, jsonl) = match csv {
            true => (Some(csv::WriterBuilder::new().has_headers(false).from_writer(buffer)), Vec::new()),
            false => (None, buffer),
        };
        let fields = fields.map(Projection::new);
        Encoder { fields, scales: Vec::new(), csv, rows: None, jsonl, scratch: Vec::new(), taken: 0 }
    }

    /// An encoder of typed rows of a Parquet file's `fields` (its columns, in order), which
    /// [`crate::engine::parquet::ParquetEncoder::push_rows`] appends to the file: a stream's
    /// buffers hold these, not JSON Lines to be parsed again.
    pub fn typed_rows(fields: Vec<String>) -> Self {
        let rows = Some(RowWriter::new(fields));
        Encoder { fields: None, scales: Vec::new(), csv: None, rows, jsonl: Vec::new(), scratch: Vec::new(), taken: 0 }
    }

    /// Exact decimal fields written with their scale's decimals: `scale_of` gives a field's.
    pub fn exact(mut self, scale_of: impl Fn(&str) -> Option<u32>) -> Self {
        self.scales =
            self.fields.as_ref().map(|f| f.fields().iter().map(|n| scale_of(n)).collect()).unwrap_or_default();
        if self.scales.iter().all(Option::is_none) {
            self.scales.clear();
        }
        self
    }

    /// The CSV header row for `fields`.
    pub fn header(fields: &[String]) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(fields).map_err(|e| Error::internal("csv", "encode header", e))?;
        w.into_inner().map_err(|e| Error::internal("csv", "encode header", e.into_error()))
    }

    /// Append one record.
    pub fn encode(&mut self, rec: &Row) {
        if let Some(rows) = &mut self.rows {
            return rows.write(rec, &mut self.jsonl);
        }
        match (&mut self.csv, &mut self.fields) {
            (Some(w), Some(fields)) => {
                let scratch = &mut self.scratch;
                let scales = &self.scales;
                let mut at = 0;
                // Writing to a Vec cannot fail.
                fields.each(rec, |value| {
                    let scale = scales.get(at).copied().flatten();
                    at += 1;
                    let _ = match value {
                        None | Some(Value::Null) => w.write_field(""),
                        Some(Value::String(s)) => w.write_field(s),
                        Some(Value::Number(n)) if scale.is_some() => {
                            w.write_field(crate::model::column::exact_text(n, scale.unwrap_or(0)))
                        }
                        Some(other) => {
                            scratch.clear();
                            let _ = serde_json::to_writer(&mut *scratch, other);
                            w.write_field(&scratch)
                        }
                    };
                });
                let _ = w.write_record(None::<&[u8]>);
            }
            (None, Some(fields)) if !self.scales.is_empty() => {
                // The output fields, in order, exact decimals with their scale's digits.
                let (out, scales) = (&mut self.jsonl, &self.scales);
                let names = fields.fields().to_vec();
                let mut at = 0;
                out.push(b'{');
                fields.each(rec, |value| {
                    if at > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, &names[at]);
                    out.push(b':');
                    match (value, scales.get(at).copied().flatten()) {
                        (Some(Value::Number(n)), Some(scale)) => {
                            out.extend_from_slice(crate::model::column::exact_text(n, scale).as_bytes())
                        }
                        (Some(v), _) => {
                            let _ = serde_json::to_writer(&mut *out, v);
                        }
                        (None, _) => out.extend_from_slice(b"null"),
                    }
                    at += 1;
                });
                out.extend_from_slice(b"}\n");
            }
            _ => {
                let _ = serde_json::to_writer(&mut self.jsonl, rec);
                self.jsonl.push(b'\n');
            }
        }
    }

    /// The bytes encoded since the last call, leaving the encoder empty and ready for more.
    pub fn take(&mut self) -> Vec<u8> {
        match &mut self.csv {
            Some(w) => {
                // Flushing into a Vec cannot fail. The writer keeps its buffer: what is new is
                // copied out, and a large buffer is given up for a new writer.
                let _ = w.flush();
                let out = w.get_ref()[self.taken..].to_vec();
                self.taken = w.get_ref().len();
                if self.taken > 1 << 20 {
                    *w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                    self.taken = 0;
                }
                out
            }
            None => {
                // Copied out at its size, the buffer kept: a line grown from empty would be
                // reallocated several times for every record.
                let out = self.jsonl.clone();
                self.jsonl.clear();
                out
            }
        }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        match self.csv {
            Some(w) => w.into_inner().map(|mut v| v.split_off(self.taken)).unwrap_or_default(),
            None => self.jsonl,
        }
    }
}
