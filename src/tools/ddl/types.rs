//! Athena types: each column's, as the Parquet output types it and as the files' format can
//! hold it, and the storage clause (the SerDe) that reads those files.

use arrow_schema::{DataType, TimeUnit};

use super::render::property_lines;
use super::Column;
use crate::error::{Error, Result};
use crate::model::config::OutputFormat;

/// A data column: the Athena type of its Arrow type, as `format` can hold it.
pub(super) fn column(name: &str, arrow: &DataType, format: OutputFormat) -> Result<Column> {
    let kind = athena_type(arrow).ok_or_else(|| {
        Error::config("output.fields", format!("field {name:?} is {arrow}, which has no Athena type here"))
    })?;
    let comment = match (format, kind.as_str()) {
        (OutputFormat::Csv, "date") => Some(format!("a date (YYYY-MM-DD): CAST(`{}` AS date)", name.to_lowercase())),
        (OutputFormat::Csv, "timestamp") => {
            Some(format!("an RFC 3339 time: from_iso8601_timestamp(`{}`)", name.to_lowercase()))
        }
        _ => None,
    };
    // OpenCSVSerde reads dates and timestamps only as numbers since 1970 (see `ddl`'s module doc).
    let kind = if comment.is_some() { "string".into() } else { kind };
    Ok(Column { name: name.to_string(), kind, comment })
}

/// The Athena type of an Arrow type that Parquet output writes.
pub fn athena_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "int".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, _) => "timestamp".into(),
        DataType::Utf8 | DataType::LargeUtf8 => "string".into(),
        _ => return None,
    })
}

/// The storage clause, its table properties and notes.
pub(super) fn storage(
    format: OutputFormat,
    fields: &[String],
    properties: &mut Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> String {
    match format {
        OutputFormat::Parquet => "STORED AS PARQUET".into(),
        OutputFormat::Jsonl => {
            let mixed: Vec<&String> = fields.iter().filter(|f| f.to_lowercase() != **f).collect();
            if mixed.is_empty() {
                return "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'".into();
            }
            // As the OpenX SerDe's documentation has it: case-sensitive keys, and a mapping
            // from the (lower-case) column to the key for every key that is not lower-case.
            let mut props = vec![("case.insensitive".to_string(), "FALSE".to_string())];
            props.extend(mixed.iter().map(|f| (format!("mapping.{}", f.to_lowercase()), f.to_string())));
            format!(
                "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\nWITH SERDEPROPERTIES (\n{}\n)",
                property_lines(&props)
            )
        }
        OutputFormat::Csv => {
            properties.push(("skip.header.line.count".into(), "1".into()));
            // An empty cell is a null; OpenCSVSerde fails a query on one in a bigint, double
            // or boolean column unless told to read it as NULL. Every other value in these
            // files was typed by sluicebox, so nothing else is "invalid".
            properties.push(("use.null.for.invalid.data".into(), "true".into()));
            notes.push(
                "CSV is read with OpenCSVSerde, which understands quoted values (LazySimpleSerDe would split \
                 one holding a comma) but reads dates and timestamps only as numbers: those columns are \
                 strings here (see their comments), and a backslash in a value is taken as an escape. \
                 [output] format = \"parquet\" or \"jsonl\" gives every column its type."
                    .into(),
            );
            "ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'\nWITH SERDEPROPERTIES (\n  \
             'separatorChar' = ',',\n  'quoteChar' = '\"'\n)"
                .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ddl::tests::{sql, ORDERS};
    use crate::tools::ddl::Layout;

    #[test]
    fn csv_keeps_numbers_and_booleans_and_reads_dates_as_text_with_a_cast() {
        let s = sql(ORDERS, Layout::Stream);
        assert!(
            s.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `orders` (\n  `uuid` string,\n  `Item Type` string,"),
            "{s}"
        );
        assert!(s.contains("`units` bigint"), "{s}");
        assert!(s.contains("`price` double"), "{s}");
        assert!(s.contains("`paid` boolean"), "{s}");
        assert!(s.contains("`orderDate` string COMMENT 'a date (YYYY-MM-DD): CAST(`orderdate` AS date)'"), "{s}");
        assert!(s.contains("`at` string COMMENT 'an RFC 3339 time: from_iso8601_timestamp(`at`)'"), "{s}");
        assert!(s.contains("ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'"), "{s}");
        assert!(s.contains("'quoteChar' = '\"'"), "{s}");
        assert!(s.contains("'skip.header.line.count' = '1'"), "{s}");
        assert!(s.contains("LOCATION 's3://bucket/out/'"), "{s}");
        assert!(s.contains("Athena reads .gz files by their extension"), "{s}");
        assert!(s.trim_end().ends_with(';'));
    }

    #[test]
    fn json_lines_keep_every_type_and_map_keys_that_are_not_lower_case() {
        let s = sql(&format!("{ORDERS}\n[output]\nformat = \"jsonl\"\n"), Layout::Stream);
        assert!(s.contains("`orderDate` date,"), "{s}");
        assert!(s.contains("`at` timestamp\n)"), "{s}");
        assert!(s.contains("ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'"), "{s}");
        assert!(s.contains("'case.insensitive' = 'FALSE'"), "{s}");
        assert!(s.contains("'mapping.item type' = 'Item Type'"), "{s}");
        assert!(s.contains("'mapping.orderdate' = 'orderDate'"), "{s}");
        assert!(!s.contains("'mapping.uuid'"), "{s}");
        assert!(!s.contains("skip.header"), "{s}");

        let lower = sql("[output]\nformat = \"jsonl\"\nfields = [\"a\", \"b\"]\n", Layout::Stream);
        assert!(!lower.contains("SERDEPROPERTIES"), "{lower}");
    }

    #[test]
    fn parquet_is_stored_as_parquet_with_the_parquet_types() {
        let s = sql(&format!("{ORDERS}\n[output]\nformat = \"parquet\"\n"), Layout::Stream);
        assert!(s.contains("`orderDate` date,"), "{s}");
        assert!(s.contains("`at` timestamp"), "{s}");
        assert!(s.contains("`units` bigint"), "{s}");
        assert!(s.contains("\nSTORED AS PARQUET\n"), "{s}");
        assert!(!s.contains("SERDE"), "{s}");
        assert!(!s.contains("by their extension"), "{s}");
    }

    #[test]
    fn arrow_types_map_to_athena_types() {
        assert_eq!(athena_type(&DataType::Decimal128(10, 2)).as_deref(), Some("decimal(10,2)"));
        assert_eq!(
            athena_type(&DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).as_deref(),
            Some("timestamp")
        );
        assert_eq!(athena_type(&DataType::Utf8).as_deref(), Some("string"));
        assert_eq!(athena_type(&DataType::Binary), None);
    }
}
