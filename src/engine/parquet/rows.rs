//! Typed rows: a record's values of a Parquet file's columns, written by [`RowWriter`] in a
//! compact binary form and appended to a [`ParquetEncoder`]'s columns by
//! [`ParquetEncoder::push_rows`], for a stream's buffers. Nothing is escaped or parsed again:
//! a value is a tag and its bytes, so a piece of a buffer turns into Arrow arrays by copying.
//!
//! A row is one value per field, in the fields' order, with no separator (the fields are
//! known), each packed as `model::packed` packs a reference's (a tag byte and its bytes, or
//! the tag of a field the record lacks). The values are the pipeline's JSON values as they are, not
//! yet converted for their columns: [`ParquetEncoder::push_rows`] converts them as
//! [`ParquetEncoder::push`] converts a row, so a typed row and the row it was written from
//! give the same cells, the same errors (a proptest compares them).

use std::borrow::Cow;

use serde_json::Value;

use super::{cell, scaled, Cell, Column, ParquetEncoder};
use crate::error::{Error, Result};
use crate::model::config::ColumnType;
use crate::model::packed::{self, Packed};
use crate::model::record::{Projection, Row};

/// Writes rows' values of some fields (a Parquet file's columns, in order) as typed rows.
#[derive(Debug, Clone)]
pub struct RowWriter {
    fields: Projection,
}

impl RowWriter {
    /// A writer of the values of `fields`, in that order.
    pub fn new(fields: Vec<String>) -> Self {
        RowWriter { fields: Projection::new(fields) }
    }

    /// Append `row`'s values of the fields to `out`.
    pub fn write(&mut self, row: &Row, out: &mut Vec<u8>) {
        self.fields.each(row, |value| packed::write(value, out));
    }
}

impl Column {
    /// A typed row's value as this column holds it, or why it does not fit: what
    /// [`Column::cell`] makes of the value it was written from. Text is read where it lies.
    fn cell_of<'a>(&self, v: Packed<'a>) -> std::result::Result<Cell<'a>, String> {
        let kind = match self {
            Column::Dec(_, precision, scale) => {
                return scaled(v.value().as_ref(), *precision, *scale).map(|v| v.map_or(Cell::Null, Cell::Dec))
            }
            Column::Int(_) => ColumnType::Integer,
            Column::Float(_) => ColumnType::Decimal,
            Column::Bool(_) => ColumnType::Boolean,
            Column::Date(_) => ColumnType::Date,
            Column::Micros(_) => ColumnType::Timestamp,
            Column::Text(_) => ColumnType::String,
        };
        let parsed = match (kind, v) {
            (_, Packed::Absent | Packed::Null) => return Ok(Cell::Null),
            (ColumnType::String, Packed::Text(s) | Packed::Json(s)) => return Ok(Cell::Text(Cow::Borrowed(s))),
            (ColumnType::Date, Packed::Text(s)) => super::date_text(s).map(Cell::Date),
            (ColumnType::Timestamp, Packed::Text(s)) => super::micros_text(s).map(Cell::Micros),
            _ => None,
        };
        if let Some(cell) = parsed {
            return Ok(cell);
        }
        // Numbers and booleans, and anything that does not fit (with its message), as a row's.
        let value = v.value();
        cell(kind, value.as_ref()).map(|c| match c {
            Cell::Text(t) => Cell::Text(Cow::Owned(t.into_owned())),
            Cell::Null => Cell::Null,
            Cell::Int(i) => Cell::Int(i),
            Cell::Float(f) => Cell::Float(f),
            Cell::Dec(d) => Cell::Dec(d),
            Cell::Bool(b) => Cell::Bool(b),
            Cell::Date(d) => Cell::Date(d),
            Cell::Micros(m) => Cell::Micros(m),
        })
    }
}

impl<W: std::io::Write + Send> ParquetEncoder<W> {
    /// Append the typed rows in `rows` (a [`RowWriter`] of this schema's fields wrote them);
    /// an error names `location`, the row's number among them and the column. Returns how many
    /// rows were appended.
    pub fn push_rows(&mut self, location: &str, rows: &[u8]) -> Result<u64> {
        let columns = self.columns.as_ref().map_err(|reason| Error::config("output.fields", reason.clone()))?.len();
        let (mut rest, mut n) = (rows, 0u64);
        let mut cells = Vec::with_capacity(columns);
        while !rest.is_empty() {
            let bad = |column: Option<String>, reason: String| Error::InvalidInput {
                location: location.to_string(),
                line: Some(n + 1),
                column,
                reason,
            };
            cells.clear();
            for at in 0..columns {
                let (value, after) =
                    Packed::read(rest).ok_or_else(|| bad(None, "not a typed row of this file's columns".into()))?;
                rest = after;
                let column = &self.columns.as_ref().map_err(|r| Error::config("output.fields", r.clone()))?[at];
                match column.cell_of(value) {
                    Ok(cell) => cells.push(cell),
                    Err(reason) => return Err(bad(Some(self.schema.field(at).name().clone()), reason)),
                }
            }
            self.append(cells.drain(..))?;
            n += 1;
        }
        Ok(n)
    }
}

/// A typed row of `fields` as a JSON object of the values it holds (absent ones left out), to
/// show a record in a message; the bytes as text if they are not a typed row.
pub fn row_text(fields: &[String], row: &[u8]) -> String {
    let mut object = serde_json::Map::new();
    let mut rest = row;
    for name in fields {
        let Some((value, after)) = Packed::read(rest) else { return String::from_utf8_lossy(row).into_owned() };
        rest = after;
        if let Some(v) = value.value() {
            object.insert(name.clone(), v);
        }
    }
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::engine::parquet::{schema, ParquetEncoder};
    use crate::model::config::JobConfig;

    const JOB: &str = r#"
[[columns]]
name = "n"
type = "integer"
[[columns]]
name = "price"
type = "decimal"
[[columns]]
name = "exact"
type = "decimal"
precision = 6
scale = 2
[[columns]]
name = "ok"
type = "boolean"
[[columns]]
name = "day"
type = "date"
[[columns]]
name = "at"
type = "timestamp"
[[columns]]
name = "name"
"#;

    fn fields() -> Vec<String> {
        ["n", "price", "exact", "ok", "day", "at", "name", "extra"].map(String::from).to_vec()
    }

    fn encoder() -> ParquetEncoder {
        let spec = JobConfig::from_toml(JOB, "t.toml").unwrap().validate(std::path::Path::new(".")).unwrap();
        ParquetEncoder::new(schema(&spec, &fields()).unwrap(), 4)
    }

    /// The file's cells, each as exact text.
    fn cells(file: Vec<u8>) -> Vec<Vec<Option<String>>> {
        use arrow_array::Array;
        let reader = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))
            .unwrap()
            .build()
            .unwrap();
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                let row = batch.columns().iter().map(|c| (!c.is_null(i)).then(|| exact(c.as_ref(), i)));
                rows.push(row.collect());
            }
        }
        rows
    }

    /// One value of a column as exact text (floats by their bits).
    fn exact(col: &dyn arrow_array::Array, i: usize) -> String {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
        use arrow_schema::DataType;
        match col.data_type() {
            DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
            DataType::Float64 => format!("{:#x}", col.as_primitive::<Float64Type>().value(i).to_bits()),
            DataType::Decimal128(..) => col.as_primitive::<Decimal128Type>().value(i).to_string(),
            DataType::Boolean => col.as_boolean().value(i).to_string(),
            DataType::Date32 => col.as_primitive::<Date32Type>().value(i).to_string(),
            DataType::Timestamp(..) => col.as_primitive::<TimestampMicrosecondType>().value(i).to_string(),
            _ => col.as_string::<i32>().value(i).to_string(),
        }
    }

    /// A value of any kind a pipeline's row may hold in any column: fitting or not.
    fn value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<bool>().prop_map(|b| Some(json!(b))),
            any::<i64>().prop_map(|i| Some(json!(i))),
            any::<u64>().prop_map(|u| Some(json!(u))),
            prop_oneof![Just(3.0), Just(-0.0), Just(1e300), Just(437.25), Just(12.505), any::<f64>()]
                .prop_map(|f| Some(json!(f))),
            prop_oneof![
                Just("2014-10-23"),
                Just("2014-10-23T08:30:00.123456Z"),
                Just("2014-10-23T08:30:00.123456789Z"),
                Just("9999-12-31T23:59:59Z"),
                Just("12"),
                Just(""),
                Just("caf\u{e9} \"q\" \\ \n"),
            ]
            .prop_map(|s| Some(json!(s))),
            Just(Some(json!({"a": [1, 2.5, "x"]}))),
            Just(Some(json!([null, true]))),
        ]
    }

    proptest! {
        /// Rows written as typed rows and appended by `push_rows` make the same file cells
        /// as the same rows pushed one at a time, and a value that does not fit fails with
        /// the same column and reason.
        #[test]
        fn typed_rows_give_the_cells_and_errors_that_rows_pushed_one_at_a_time_give(
            rows in proptest::collection::vec(proptest::collection::vec(value(), 8), 1..10),
            shuffled in any::<bool>(),
        ) {
            let names = fields();
            let mut writer = RowWriter::new(names.clone());
            let (mut typed, mut direct) = (encoder(), encoder());
            for values in &rows {
                // A map whose fields are in another order, or a shared layout.
                let row = match shuffled {
                    true => Row::Map(names.iter().zip(values).rev()
                        .filter_map(|(n, v)| Some((n.clone(), v.clone()?))).collect()),
                    false => Row::Shared {
                        names: names.clone().into(),
                        values: values.iter().map(|v| v.clone().unwrap_or(Value::Null)).collect(),
                    },
                };
                let mut bytes = Vec::new();
                writer.write(&row, &mut bytes);
                let got = typed.push_rows("t", &bytes).map_err(|e| e.to_string());
                let want = direct.push_at(&row, "t", Some(1)).map(|()| 1).map_err(|e| e.to_string());
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(typed.rows(), direct.rows());
            prop_assert_eq!(cells(typed.finish().unwrap()), cells(direct.finish().unwrap()));
        }
    }

    #[test]
    fn a_typed_row_reads_back_as_the_json_of_its_values_and_anything_else_as_text() {
        let names = fields();
        let mut writer = RowWriter::new(names.clone());
        let row = Row::Map(
            json!({"name": "v\"x", "n": 7, "price": 1.5, "ok": false, "extra": [1], "day": null})
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut bytes = Vec::new();
        writer.write(&row, &mut bytes);
        assert_eq!(row_text(&names, &bytes), r#"{"n":7,"price":1.5,"ok":false,"day":null,"name":"v\"x","extra":[1]}"#);
        assert_eq!(row_text(&names, b"{\"id\":1}"), "{\"id\":1}");
        let mut enc = encoder();
        let e = enc.push_rows("piece", &bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(e.starts_with("piece line 1"), "{e}");
    }
}
