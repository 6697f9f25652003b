//! JSON Lines into a Parquet file: the records of a chunk's output part or a stream's text a
//! record at a time, or decoded by `arrow-json` straight into Arrow batches when the pipeline
//! wrote them.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};

use super::{parquet_error, ParquetEncoder, BATCH_ROWS, UTC};
use crate::error::{Error, Result};
use crate::model::record::{Record, Row};

impl<W: std::io::Write + Send> ParquetEncoder<W> {
    /// Append the records of JSON Lines text (a chunk's output part), one per line; an error
    /// names `location` and the line. Returns how many rows were appended.
    pub fn push_jsonl(&mut self, location: &str, text: &[u8]) -> Result<u64> {
        let mut n = 0;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line_no = i as u64 + 1;
            let rec: Record = serde_json::from_slice(line).map_err(|e| Error::InvalidInput {
                location: location.to_string(),
                line: Some(line_no),
                column: None,
                reason: format!("not a JSON object: {e}"),
            })?;
            self.push_at(&Row::Map(rec), location, Some(line_no))?;
            n += 1;
        }
        Ok(n)
    }

    /// Append the records of JSON Lines text that the pipeline wrote for this output (a
    /// chunk's output part): every typed value already fits its column ([`super::fits`],
    /// which the pipeline checks), so the text is decoded straight into Arrow arrays by
    /// `arrow-json`, several times faster than a record at a time. Text that
    /// decoder does not take whole (a string column holding an object, which this encoder
    /// writes as its JSON text) goes through [`ParquetEncoder::push_jsonl`], which gives the
    /// same rows, or the same error. Returns how many rows were appended.
    ///
    /// On text the pipeline did not check the two can differ: `arrow-json` reads `"12"` into
    /// an integer column and truncates `1.5` to 1, where `push_jsonl` refuses both.
    pub fn push_checked_jsonl(&mut self, location: &str, text: &[u8]) -> Result<u64> {
        // Rows pushed one at a time go first, in order.
        self.write_pending()?;
        let batches = match self.decode_jsonl(text) {
            Ok(batches) => batches,
            Err(e) => {
                tracing::debug!(location, "decoding JSON Lines a record at a time: {e}");
                return self.push_jsonl(location, text);
            }
        };
        let mut n = 0;
        for batch in batches {
            n += batch.num_rows() as u64;
            self.open()?.write(&batch).map_err(parquet_error)?;
        }
        self.rows += n;
        Ok(n)
    }

    /// `text`'s records as Arrow batches of this schema, or the first thing `arrow-json` could
    /// not take.
    pub(super) fn decode_jsonl(&self, text: &[u8]) -> std::result::Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
        // The decoder knows time zones by offset only (names need chrono-tz): it reads
        // timestamp columns as "+00:00" (the pipeline writes every timestamp in UTC, with its
        // "Z"), and the batches are then labelled "UTC" again, the same microseconds.
        let utc_by_offset = |f: &arrow_schema::FieldRef| match f.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Timestamp(*unit, Some("+00:00".into()))))
            }
            _ => f.clone(),
        };
        let decoding = Arc::new(Schema::new(self.schema.fields().iter().map(utc_by_offset).collect::<Vec<_>>()));
        let mut decoder = arrow_json::ReaderBuilder::new(decoding)
            .with_batch_size(BATCH_ROWS.min(self.row_group_rows))
            // A number or boolean in a string column is its JSON text, as `cell` makes it.
            .with_coerce_primitive(true)
            .build_decoder()?;
        let relabel = |batch: RecordBatch| {
            let columns = batch.columns().iter().map(|c| match c.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
                    let a = c.as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>();
                    a.map_or_else(|| c.clone(), |a| Arc::new(a.clone().with_timezone(UTC)) as ArrayRef)
                }
                _ => c.clone(),
            });
            RecordBatch::try_new(self.schema.clone(), columns.collect())
        };
        let (mut rest, mut batches) = (text, Vec::new());
        loop {
            let used = decoder.decode(rest)?;
            rest = &rest[used..];
            match decoder.flush()? {
                Some(batch) => batches.push(relabel(batch)?),
                None if rest.is_empty() => return Ok(batches),
                None if used == 0 => return Err(arrow_schema::ArrowError::JsonError("no progress".into())),
                None => {}
            }
        }
    }
}
