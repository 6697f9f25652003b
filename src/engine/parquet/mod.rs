//! Parquet output: an Arrow schema typed by the declared columns, and rows encoded into a
//! zstd-compressed Parquet file, in memory or streamed to any writer a row group at a time.
//!
//! Everything Parquet is done by the `parquet` crate's [`ArrowWriter`]; this module only turns
//! the pipeline's typed values (a [`Row`] of JSON values) into Arrow arrays.
//!
//! Types, by the declared column (`[[columns]]` or `enrich.columns`):
//!
//! | declared | the pipeline's value | Arrow / Parquet |
//! |---|---|---|
//! | `integer` | an `i64` | `Int64` |
//! | `decimal` | an `f64` | `Float64` |
//! | `boolean` | `true` / `false` | `Boolean` |
//! | `date` | `"2014-10-23"` | `Date32` |
//! | `timestamp` | RFC 3339 UTC text (`"2014-10-23T08:30:00Z"`) | `Timestamp(Microsecond, "UTC")` |
//! | `string`, undeclared, added by a transform | any | `Utf8` (non-strings as their JSON text) |
//!
//! Every column is nullable: a missing field or a JSON `null` is a Parquet null.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::{Compression, ZstdLevel};
use ::parquet::file::properties::WriterProperties;
use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::model::config::ColumnType;
use crate::model::record::{Projection, Row};

mod jsonl;
mod rows;
pub use rows::{row_text, RowWriter};

/// The time zone of timestamp columns: the pipeline turns every timestamp into UTC.
const UTC: &str = "UTC";

/// Rows encoded per Arrow batch handed to the writer: small enough that the rows not yet
/// encoded stay a small part of memory, large enough that per-batch work is negligible.
const BATCH_ROWS: usize = 8192;

/// The Arrow schema of a Parquet output of `fields`, in that order: one nullable column per
/// field, typed by its declared column (see the module's table). Fails on a field named twice
/// or no field at all, which a Parquet reader could not make sense of.
pub fn schema(spec: &JobSpec, fields: &[String]) -> Result<SchemaRef> {
    if fields.is_empty() {
        return Err(Error::config("output.fields", "Parquet output needs at least one field"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut columns = Vec::with_capacity(fields.len());
    for name in fields {
        if !seen.insert(name.as_str()) {
            return Err(Error::config("output.fields", format!("field {name:?} appears twice")));
        }
        let t = match spec.exact_decimal(name) {
            Some((p, s)) => DataType::Decimal128(p as u8, s as i8),
            None => data_type(spec.field_type(name)),
        };
        columns.push(Field::new(name, t, true));
    }
    Ok(Arc::new(Schema::new(columns)))
}

/// The Arrow type of a field declared as `kind` (`None`: undeclared).
fn data_type(kind: Option<ColumnType>) -> DataType {
    match kind {
        Some(ColumnType::Integer) => DataType::Int64,
        // Float64, not Decimal128: the pipeline types a decimal as an f64 (column.rs parses
        // the text into one, and the CSV and JSON Lines outputs print that f64's shortest
        // text), so a Float64 holds exactly the value every other output holds. A Decimal128
        // needs one scale for the whole column: a column that declares its precision and
        // scale gets one (see `schema`).
        Some(ColumnType::Decimal) => DataType::Float64,
        Some(ColumnType::Boolean) => DataType::Boolean,
        Some(ColumnType::Date) => DataType::Date32,
        // Microseconds: their range (±290,000 years) holds every date chrono parses, sentinel
        // dates like 9999-12-31 included, which nanoseconds (years 1677 to 2262) would not.
        // A value with a sub-microsecond fraction does not fit, and is an error rather than
        // silently truncated.
        Some(ColumnType::Timestamp) => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        Some(ColumnType::String) | None => DataType::Utf8,
    }
}

/// Encodes rows into a Parquet file (zstd), columns in the schema's order, writing to `W`:
/// a `Vec<u8>` ([`ParquetEncoder::new`], [`ParquetEncoder::finish`]) or any writer
/// ([`ParquetEncoder::to_writer`], [`ParquetEncoder::close`]).
///
/// Memory is bounded by one row group: a row group is flushed to `W` every `row_group_rows`
/// rows (and on [`ParquetEncoder::flush`]); rows are handed to the Parquet writer in batches
/// of at most 8,192.
pub struct ParquetEncoder<W: Write + Send = Vec<u8>> {
    schema: SchemaRef,
    /// One builder per column; the error names a column of a type this encoder does not write.
    columns: std::result::Result<Vec<Column>, String>,
    projection: Projection,
    row_group_rows: usize,
    /// Rows in the builders, not yet handed to the writer.
    pending: usize,
    /// Their raw size, roughly.
    pending_bytes: usize,
    rows: u64,
    /// The writer, until the first batch opens the Parquet writer on it.
    sink: Option<W>,
    writer: Option<ArrowWriter<W>>,
}

impl ParquetEncoder<Vec<u8>> {
    /// An encoder into memory, flushing a row group every `row_group_rows` rows.
    pub fn new(schema: SchemaRef, row_group_rows: usize) -> Self {
        Self::to_writer(Vec::new(), schema, row_group_rows)
    }

    /// The whole file.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.close()
    }

    /// Take the bytes of the file written so far (whole row groups after a
    /// [`ParquetEncoder::flush`]), to send them on while the file goes on; the bytes that
    /// [`ParquetEncoder::finish`] returns then follow them.
    pub fn take_written(&mut self) -> Vec<u8> {
        match (&mut self.writer, &mut self.sink) {
            // Taking bytes out of the Vec does not move the writer's own count of the bytes
            // it wrote, so the footer's offsets stay those of the whole file.
            (Some(w), _) => std::mem::take(w.inner_mut()),
            (None, Some(v)) => std::mem::take(v),
            (None, None) => Vec::new(),
        }
    }
}

impl<W: Write + Send> ParquetEncoder<W> {
    /// An encoder writing to `writer`, flushing a row group every `row_group_rows` rows (at
    /// least 1). Nothing is written before the first rows are encoded or the file is closed.
    pub fn to_writer(writer: W, schema: SchemaRef, row_group_rows: usize) -> Self {
        let columns = schema.fields().iter().map(|f| Column::new(f.name(), f.data_type())).collect();
        let fields = schema.fields().iter().map(|f| f.name().clone()).collect();
        ParquetEncoder {
            schema,
            columns,
            projection: Projection::new(fields),
            row_group_rows: row_group_rows.max(1),
            pending: 0,
            pending_bytes: 0,
            rows: 0,
            sink: Some(writer),
            writer: None,
        }
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows pushed.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Append one row: its values of the schema's fields (a field it lacks is null). A value
    /// that does not fit its column (text in an integer column, a date that is not one) is an
    /// [`Error::InvalidInput`] naming the field and the value, and the row is not appended.
    pub fn push(&mut self, row: &Row) -> Result<()> {
        self.push_at(row, "Parquet output", None)
    }

    fn push_at(&mut self, row: &Row, location: &str, line: Option<u64>) -> Result<()> {
        let columns = self.columns.as_mut().map_err(|reason| Error::config("output.fields", reason.clone()))?;
        // Every value is converted before any is appended, so that a value that does not fit
        // leaves the columns as they were.
        let mut cells = Vec::with_capacity(columns.len());
        let mut fault = None;
        let mut at = 0;
        self.projection.each(row, |value| {
            if fault.is_none() {
                match columns.get(at).map(|c| c.cell(value)) {
                    Some(Ok(cell)) => cells.push(cell),
                    Some(Err(reason)) => fault = Some((at, reason)),
                    None => {}
                }
            }
            at += 1;
        });
        if let Some((at, reason)) = fault {
            return Err(Error::InvalidInput {
                location: location.to_string(),
                line,
                column: Some(self.schema.field(at).name().clone()),
                reason,
            });
        }
        self.append(cells)
    }

    /// Append one row of converted cells, one per column; a batch is handed to the writer
    /// when the builders hold enough rows.
    fn append<'c>(&mut self, cells: impl IntoIterator<Item = Cell<'c>>) -> Result<()> {
        let columns = self.columns.as_mut().map_err(|reason| Error::config("output.fields", reason.clone()))?;
        for (column, cell) in columns.iter_mut().zip(cells) {
            self.pending_bytes += column.append(cell);
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending >= BATCH_ROWS.min(self.row_group_rows) {
            self.write_pending()?;
        }
        Ok(())
    }

    /// The file's size if it were finished now, estimated: the bytes written, the row group
    /// in progress as the writer estimates it encoded, and the rows not yet encoded at their
    /// raw size. For cutting files at a target size.
    pub fn buffered_bytes(&self) -> usize {
        let written = self.writer.as_ref().map_or(0, |w| w.bytes_written() + w.in_progress_size());
        written + self.pending_bytes
    }

    /// End the row group in progress (if it has rows) and flush it to the writer.
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        if let Some(w) = &mut self.writer {
            w.flush().map_err(parquet_error)?;
            w.sync().map_err(|e| Error::internal("parquet", "flush the file", e))?;
        }
        Ok(())
    }

    /// Write the last row group and the footer, and give the writer back.
    pub fn close(mut self) -> Result<W> {
        self.write_pending()?;
        self.open()?;
        match self.writer {
            Some(w) => w.into_inner().map_err(parquet_error),
            None => Err(Error::internal("parquet", "close the file", "no writer")),
        }
    }

    /// Hand the rows in the builders to the Parquet writer (which flushes a row group when it
    /// holds `row_group_rows`).
    fn write_pending(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let columns = self.columns.as_mut().map_err(|reason| Error::config("output.fields", reason.clone()))?;
        let arrays: Vec<ArrayRef> = columns.iter_mut().map(Column::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::internal("parquet", "assemble a batch of rows", e))?;
        self.pending = 0;
        self.pending_bytes = 0;
        self.open()?.write(&batch).map_err(parquet_error)
    }

    /// The Parquet writer, opened on first use.
    fn open(&mut self) -> Result<&mut ArrowWriter<W>> {
        if let (None, Some(sink)) = (&self.writer, self.sink.take()) {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(self.row_group_rows))
                .build();
            self.writer = Some(ArrowWriter::try_new(sink, self.schema.clone(), Some(props)).map_err(parquet_error)?);
        }
        self.writer.as_mut().ok_or_else(|| Error::internal("parquet", "open the file", "its writer failed before"))
    }
}

fn parquet_error(e: ::parquet::errors::ParquetError) -> Error {
    Error::internal("parquet", "write the file", e)
}

/// A column being built.
enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    /// An exact decimal, and its precision and scale.
    Dec(Decimal128Builder, u8, u32),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

/// One value converted for its column.
enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Dec(i128),
    Bool(bool),
    Date(i32),
    Micros(i64),
    Text(Cow<'a, str>),
}

impl Column {
    fn new(name: &str, t: &DataType) -> std::result::Result<Column, String> {
        Ok(match t {
            DataType::Int64 => Column::Int(Int64Builder::new()),
            DataType::Float64 => Column::Float(Float64Builder::new()),
            DataType::Decimal128(p, s) if *s >= 0 => Column::Dec(
                Decimal128Builder::new().with_precision_and_scale(*p, *s).map_err(|e| e.to_string())?,
                *p,
                *s as u32,
            ),
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Date32 => Column::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Column::Micros(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Utf8 => Column::Text(StringBuilder::new()),
            other => return Err(format!("column {name:?} has type {other}, which the Parquet encoder does not write")),
        })
    }

    /// `value` as this column holds it, or why it does not fit.
    fn cell<'a>(&self, value: Option<&'a Value>) -> std::result::Result<Cell<'a>, String> {
        let kind = match self {
            Column::Dec(_, precision, scale) => {
                return scaled(value, *precision, *scale).map(|v| v.map_or(Cell::Null, Cell::Dec))
            }
            Column::Int(_) => ColumnType::Integer,
            Column::Float(_) => ColumnType::Decimal,
            Column::Bool(_) => ColumnType::Boolean,
            Column::Date(_) => ColumnType::Date,
            Column::Micros(_) => ColumnType::Timestamp,
            Column::Text(_) => ColumnType::String,
        };
        cell(kind, value)
    }

    /// Append a cell of this column's kind (as [`Column::cell`] made it); its raw size.
    fn append(&mut self, cell: Cell) -> usize {
        match (self, cell) {
            (Column::Int(b), Cell::Int(v)) => b.append_value(v),
            (Column::Float(b), Cell::Float(v)) => b.append_value(v),
            (Column::Dec(b, ..), Cell::Dec(v)) => b.append_value(v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Date(b), Cell::Date(v)) => b.append_value(v),
            (Column::Micros(b), Cell::Micros(v)) => b.append_value(v),
            (Column::Text(b), Cell::Text(v)) => {
                b.append_value(&v);
                return v.len() + 4;
            }
            (c, _) => {
                c.append_null();
                return 1;
            }
        }
        8
    }

    fn append_null(&mut self) {
        match self {
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Dec(b, ..) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Micros(b) => b.append_null(),
            Column::Text(b) => b.append_null(),
        }
    }

    /// The column's values so far, as an array; the builder starts over.
    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Dec(b, ..) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Micros(b) => Arc::new(b.finish()),
            Column::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// Whether `value` fits the Parquet column of a field declared as `kind`; if not, why.
pub fn fits(kind: ColumnType, value: &Value) -> std::result::Result<(), String> {
    cell(kind, Some(value)).map(|_| ())
}

/// `value` as the column of a field declared as `kind` holds it, or why it does not fit.
fn cell(kind: ColumnType, value: Option<&Value>) -> std::result::Result<Cell<'_>, String> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(Cell::Null) };
    let bad = |what: &str| format!("{v} does not fit a {what} column");
    match kind {
        ColumnType::Integer => integer(v).map(Cell::Int).ok_or_else(|| bad("integer (Int64)")),
        ColumnType::Decimal => float(v).map(Cell::Float).ok_or_else(|| bad("decimal (Float64)")),
        ColumnType::Boolean => v.as_bool().map(Cell::Bool).ok_or_else(|| bad("boolean")),
        ColumnType::Date => date(v).map(Cell::Date).ok_or_else(|| bad("date (Date32, like \"2014-10-23\")")),
        ColumnType::Timestamp => micros(v)
            .map(Cell::Micros)
            .ok_or_else(|| bad("timestamp (microseconds, UTC, like \"2014-10-23T08:30:00.123456Z\")")),
        ColumnType::String => Ok(Cell::Text(match v {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        })),
    }
}

/// A decimal value as the unscaled integer of a `DECIMAL(precision, scale)` column: its
/// shortest text read exactly, rounded half away from zero to `scale` decimals (a transform's
/// arithmetic may give more), or why it does not fit.
fn scaled(value: Option<&Value>, precision: u8, scale: u32) -> std::result::Result<Option<i128>, String> {
    let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let bad = || format!("{v} does not fit a decimal({precision}, {scale}) column");
    let n = v.as_number().ok_or_else(bad)?;
    let d: rust_decimal::Decimal =
        n.to_string().parse().or_else(|_| rust_decimal::Decimal::from_scientific(&n.to_string())).map_err(|_| bad())?;
    let mut d = d.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    d.rescale(scale);
    let m = d.mantissa();
    (m.unsigned_abs() < 10u128.pow(u32::from(precision))).then_some(Some(m)).ok_or_else(bad)
}

/// An integer: an i64, or a float with no fraction that an i64 holds exactly (jq arithmetic
/// may give one).
fn integer(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    let i = f as i64;
    // `as` saturates: compared wider, 2^63 is not i64::MAX.
    (f.fract() == 0.0 && i128::from(i) == f as i128).then_some(i)
}

/// A number an f64 holds exactly (a JSON integer beyond 2^53 may not be one).
fn float(v: &Value) -> Option<f64> {
    let n = v.as_number()?;
    let f = n.as_f64()?;
    let exact = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => f as i128 == i128::from(i),
        (None, Some(u)) => f as i128 == i128::from(u),
        (None, None) => true,
    };
    exact.then_some(f)
}

/// Days since 1970-01-01 of `"YYYY-MM-DD"`.
fn date(v: &Value) -> Option<i32> {
    date_text(v.as_str()?)
}

/// Days since 1970-01-01 of `"YYYY-MM-DD"` text.
fn date_text(s: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let days = d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    i32::try_from(days).ok()
}

/// Microseconds since the Unix epoch of RFC 3339 text, when it has no finer fraction.
fn micros(v: &Value) -> Option<i64> {
    micros_text(v.as_str()?)
}

/// Microseconds since the Unix epoch of RFC 3339 text, when it has no finer fraction.
fn micros_text(s: &str) -> Option<i64> {
    let t = crate::model::column::rfc3339_utc(s)?;
    (t.timestamp_subsec_nanos() % 1000 == 0).then(|| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use serde_json::json;

    use super::*;
    use crate::model::config::JobConfig;

    const JOB: &str = r#"
[[columns]]
name = "n"
type = "integer"
[[columns]]
name = "price"
type = "decimal"
[[columns]]
name = "ok"
type = "boolean"
[[columns]]
name = "Day"
as = "day"
type = "date"
format = "%m/%d/%y"
[[columns]]
name = "at"
type = "timestamp"
[[columns]]
name = "name"
"#;

    fn fields() -> Vec<String> {
        ["n", "price", "ok", "day", "at", "name", "extra"].map(String::from).to_vec()
    }

    fn spec() -> JobSpec {
        JobConfig::from_toml(JOB, "test.toml").unwrap().validate(std::path::Path::new(".")).unwrap()
    }

    fn row(v: Value) -> Row {
        match v {
            Value::Object(m) => Row::Map(m),
            other => panic!("not an object: {other}"),
        }
    }

    fn read(bytes: Vec<u8>) -> Vec<RecordBatch> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap().build().unwrap();
        reader.map(|b| b.unwrap()).collect()
    }

    #[test]
    fn each_declared_type_has_its_arrow_type_and_the_rest_are_text() {
        let schema = schema(&spec(), &fields()).unwrap();
        let types: Vec<String> = schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
        assert_eq!(
            types,
            [
                "n Int64",
                "price Float64",
                "ok Boolean",
                "day Date32",
                "at Timestamp(µs, \"UTC\")",
                "name Utf8",
                "extra Utf8"
            ]
        );
        assert!(schema.fields().iter().all(|f| f.is_nullable()));
        let twice = schema_of(&["n", "n"]).unwrap_err().to_string();
        assert!(twice.contains("output.fields") && twice.contains("\"n\""), "{twice}");
    }

    fn schema_of(fields: &[&str]) -> Result<SchemaRef> {
        schema(&spec(), &fields.iter().map(|f| f.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_type_and_null_reads_back_as_it_was_written() {
        let mut enc = ParquetEncoder::new(schema(&spec(), &fields()).unwrap(), 2);
        enc.push(&row(json!({
            "n": -9_007_199_254_740_993_i64, "price": 437.2, "ok": true, "day": "1969-12-31",
            "at": "2014-10-23T08:30:00.123456Z", "name": "Azerbaijan", "extra": {"a": [1, 2]}
        })))
        .unwrap();
        enc.push(&row(json!({"n": null, "price": null, "ok": null, "day": null, "at": null, "name": null}))).unwrap();
        // A shared layout, fields in another order, a float with no fraction for the integer.
        let names: Arc<[String]> = ["name", "day", "n", "price", "ok", "at"].map(String::from).to_vec().into();
        enc.push(&Row::Shared {
            names,
            values: vec![
                json!(""),
                json!("2014-10-23"),
                json!(3.0),
                json!(7),
                json!(false),
                json!("9999-12-31T23:59:59Z"),
            ],
        })
        .unwrap();
        assert_eq!(enc.rows(), 3);
        let file = bytes::Bytes::from(enc.finish().unwrap());
        let groups = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap().metadata().row_groups().len();
        assert_eq!(groups, 2, "a row group every 2 rows");
        let batches = read(file.to_vec());
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        let n = b.column(0).as_primitive::<Int64Type>();
        assert_eq!((n.value(0), n.is_null(1), n.value(2)), (-9_007_199_254_740_993, true, 3));
        let price = b.column(1).as_primitive::<Float64Type>();
        assert_eq!((price.value(0), price.is_null(1), price.value(2)), (437.2, true, 7.0));
        let ok = b.column(2).as_boolean();
        assert_eq!((ok.value(0), ok.is_null(1), ok.value(2)), (true, true, false));
        let day = b.column(3).as_primitive::<Date32Type>();
        assert_eq!((day.value(0), day.is_null(1), day.value(2)), (-1, true, 16366), "days since 1970-01-01");
        let at = b.column(4).as_primitive::<TimestampMicrosecondType>();
        assert_eq!((at.value(0), at.is_null(1), at.value(2)), (1_414_053_000_123_456, true, 253_402_300_799_000_000));
        let text = b.column(5).as_string::<i32>();
        assert_eq!((text.value(0), text.is_null(1), text.value(2), text.is_null(2)), ("Azerbaijan", true, "", false));
        let extra = b.column(6).as_string::<i32>();
        assert_eq!((extra.value(0), extra.is_null(1), extra.is_null(2)), ("{\"a\":[1,2]}", true, true));
    }

    #[test]
    fn a_value_that_does_not_fit_its_column_is_an_error_naming_field_and_value_and_leaves_no_row() {
        let mut enc = ParquetEncoder::new(schema(&spec(), &fields()).unwrap(), 100);
        for (field, value, says) in [
            ("n", json!("12"), "integer"),
            ("n", json!(1.5), "integer"),
            ("price", json!(9_007_199_254_740_993_u64), "decimal"),
            ("ok", json!("yes"), "boolean"),
            ("day", json!("10/23/14"), "date"),
            ("at", json!("2014-10-23T08:30:00.123456789Z"), "timestamp"),
        ] {
            let mut rec = serde_json::Map::new();
            rec.insert("name".into(), json!("before"));
            rec.insert(field.into(), value.clone());
            let e = enc.push(&Row::Map(rec)).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { column: Some(ref c), .. } if c == field), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&value.to_string()) && msg.contains(says), "{msg}");
        }
        assert_eq!(enc.rows(), 0);
        enc.push(&row(json!({"name": "after"}))).unwrap();
        let batches = read(enc.finish().unwrap());
        assert_eq!(batches[0].num_rows(), 1, "the refused rows left nothing behind");
        assert_eq!(batches[0].column(5).as_string::<i32>().value(0), "after");
    }

    #[test]
    fn json_lines_stream_out_a_row_group_at_a_time_and_an_empty_file_is_valid() {
        let schema = schema(&spec(), &fields()).unwrap();
        let mut enc = ParquetEncoder::new(schema.clone(), 1000);
        let part = b"{\"n\":1,\"name\":\"a\"}\n{\"n\":2,\"name\":\"b\"}\n";
        assert_eq!(enc.push_jsonl("parts/000000.out", part).unwrap(), 2);
        enc.flush().unwrap();
        let mut file = enc.take_written();
        assert!(file.starts_with(b"PAR1") && file.len() > 4, "the first row group is out");
        let bad = enc.push_jsonl("parts/000001.out", b"{\"n\":3}\n{\"n\":\"four\"}\n").unwrap_err().to_string();
        assert!(bad.starts_with("parts/000001.out line 2, column \"n\""), "{bad}");
        assert!(enc.buffered_bytes() > file.len());
        file.extend(enc.finish().unwrap());
        let n: Vec<i64> =
            read(file).iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(n, [1, 2, 3], "the row before the bad line was kept; the bad one was not");

        let empty = read(ParquetEncoder::new(schema, 10).finish().unwrap());
        assert!(empty.iter().all(|b| b.num_rows() == 0));
    }

    /// The fast path reads the pipeline's lines into exactly the rows the record-at-a-time
    /// path makes, escapes, extremes and nulls included; a string column holding an object
    /// (which the fast decoder does not take) falls back and still gives the same rows.
    #[test]
    fn checked_json_lines_decode_to_the_same_rows_as_one_record_at_a_time() {
        let schema = schema(&spec(), &fields()).unwrap();
        let lines = [
            r#"{"n":-9007199254740993,"price":437.2,"ok":true,"day":"1969-12-31","at":"2014-10-23T08:30:00.123456Z","name":"Azerbaijan","extra":"x"}"#,
            r#"{"n":3.0,"price":1e-30,"ok":false,"day":"0001-01-01","at":"9999-12-31T23:59:59Z","name":"a \"q\" \\ \n \u00e9 \ud83d\ude00 é","extra":7}"#,
            r#"{"n":null,"price":-0.0,"day":"2024-02-29","at":"2014-10-23T10:30:00+02:00","name":"","extra":true}"#,
            r#"{"price":1.7976931348623157e308,"ok":null,"at":"1970-01-01T00:00:00.5Z","extra":2.5e-7}"#,
            r#"{"n":9223372036854775807,"price":0.1,"name":null,"unknown":{"a":1}}"#,
        ];
        let encode = |text: &str, checked: bool| {
            let mut enc = ParquetEncoder::new(schema.clone(), 3);
            let n = match checked {
                true => enc.push_checked_jsonl("t", text.as_bytes()).unwrap(),
                false => enc.push_jsonl("t", text.as_bytes()).unwrap(),
            };
            assert_eq!(n, enc.rows());
            read(enc.finish().unwrap())
        };
        let text = lines.join("\n") + "\n\n";
        let fast_path = |text: &str| ParquetEncoder::new(schema.clone(), 3).decode_jsonl(text.as_bytes());
        assert!(fast_path(&text).is_ok(), "the pipeline's lines take the fast path: {:?}", fast_path(&text).err());
        let (fast, slow) = (encode(&text, true), encode(&text, false));
        assert_eq!(fast.iter().map(RecordBatch::num_rows).sum::<usize>(), lines.len());
        assert_eq!(
            arrow_select_concat(&fast),
            arrow_select_concat(&slow),
            "the same rows whichever way the lines are decoded"
        );
        let with_object = text.clone() + r#"{"n":1,"extra":{"a":[1,2]}}"# + "\n";
        assert!(fast_path(&with_object).is_err(), "an object in a string column is not for arrow-json");
        let (fast, slow) = (encode(&with_object, true), encode(&with_object, false));
        assert_eq!(arrow_select_concat(&fast), arrow_select_concat(&slow));
        assert_eq!(arrow_select_concat(&fast)[6].last().unwrap().as_deref(), Some("{\"a\":[1,2]}"));
        // Text that is not JSON Lines fails as it does one record at a time.
        let mut enc = ParquetEncoder::new(schema.clone(), 10);
        let bad = enc.push_checked_jsonl("parts/1.out", b"{\"n\":1}\n{\"n\":\"four\"}\n").unwrap_err().to_string();
        assert!(bad.starts_with("parts/1.out line 2, column \"n\""), "{bad}");
    }

    /// Every column of `batches` as text, row by row (`None` for null), to compare files.
    fn arrow_select_concat(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
        let columns = batches.first().map_or(0, RecordBatch::num_columns);
        (0..columns)
            .map(|c| {
                batches
                    .iter()
                    .flat_map(|b| {
                        let col = b.column(c);
                        (0..col.len())
                            .map(|i| (!col.is_null(i)).then(|| arrow_cast_value(col.as_ref(), i)))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect()
    }

    /// One value of a column as exact text (floats by their bits).
    fn arrow_cast_value(col: &dyn Array, i: usize) -> String {
        match col.data_type() {
            DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
            DataType::Float64 => format!("{:#x}", col.as_primitive::<Float64Type>().value(i).to_bits()),
            DataType::Boolean => col.as_boolean().value(i).to_string(),
            DataType::Date32 => col.as_primitive::<Date32Type>().value(i).to_string(),
            DataType::Timestamp(..) => col.as_primitive::<TimestampMicrosecondType>().value(i).to_string(),
            _ => col.as_string::<i32>().value(i).to_string(),
        }
    }
}
