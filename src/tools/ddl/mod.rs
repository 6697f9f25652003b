//! `sluicebox ddl`: the Athena (AWS Glue) `CREATE EXTERNAL TABLE` over a stream's or a batch
//! job's output files, typed as the Parquet output is typed.
//!
//! Pure: a checked [`JobSpec`] and [`Options`] in, SQL text out. What the table is (its
//! columns, storage, partitions and properties) is decided first, as a [`Table`]; rendering
//! it is a separate step.
//!
//! Choices, and why (checked against the Athena documentation):
//!
//! - Types are those of [`crate::engine::parquet::schema`], so a table agrees with Parquet files.
//!   JSON Lines (OpenX JSON SerDe) keeps them all. CSV is read with `OpenCSVSerde`, the only
//!   CSV SerDe that understands the quotes the CSV writer puts around a value holding a comma
//!   (`LazySimpleSerDe` would split it, shifting every later column); it reads `bigint`,
//!   `double` and `boolean`, but a date or a timestamp only as a number (days or milliseconds
//!   since 1970), so those columns are declared `string`, with a comment saying how to cast.
//! - Athena lower-cases column names, so two fields that differ only in case are refused; the
//!   JSON SerDe is told the original key of every field that is not lower-case.
//! - A stream's partitions are projected (`projection.enabled`), so no `MSCK REPAIR` or crawler
//!   is needed and only partition folders are read: the errors prefix stays out of the table
//!   (this is checked). A partition column named like a data column is renamed
//!   `NAME_partition`; the data column keeps the typed value.
//! - Athena reads every file under `LOCATION` and ignores none but those named `_…` or `.…`,
//!   and a batch job's `jobs/<id>/` also holds its plan, rejects, manifest, summary, report and
//!   parts. A job's table therefore gets a prefix of its own, `tables/<table>/`, with the
//!   command that copies the output there.
//!
//! This file holds the API, its options and the [`Table`] decided; `types` gives each column
//! its Athena type and the files their SerDe, `layout` says where the files are (a stream's
//! projected partitions, a job's own prefix), and `render` writes the SQL.

use std::path::Path;

use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::model::config::{Format, OutputFormat};

mod layout;
mod render;
mod types;

pub use self::layout::java_pattern;
use self::layout::{job_layout, stream_layout};
pub use self::render::render;
pub use self::types::athena_type;
use self::types::{column, storage};

/// Which files the table is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `sluicebox stream`'s files under the location, partitioned by `[stream] partition`.
    Stream,
    /// The merged output of one batch job (`jobs/<id>/output.*` under the location).
    Job(String),
}

/// What to print a table for.
#[derive(Debug, Clone)]
pub struct Options {
    /// `s3://BUCKET/PREFIX/`: the stream's destination, or the bucket (and prefix) holding
    /// `jobs/`.
    pub location: String,
    /// The table's name (see [`table_name`]).
    pub table: String,
    /// The Glue database, if any.
    pub database: Option<String>,
    /// Stream files or a job's output.
    pub layout: Layout,
    /// The output fields, over the job file's (`--fields`).
    pub fields: Option<Vec<String>>,
}

/// A table, decided: what [`render`] prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `` `db`.`name` `` or `` `name` ``.
    pub name: String,
    /// Data columns, in the files' order.
    pub columns: Vec<Column>,
    /// Partition columns, in the folders' order.
    pub partitions: Vec<Column>,
    /// `ROW FORMAT …` / `STORED AS …`.
    pub storage: String,
    /// `s3://…/`, with a trailing slash.
    pub location: String,
    /// `TBLPROPERTIES`, in order.
    pub properties: Vec<(String, String)>,
    /// Lines of the comment printed above the statement.
    pub notes: Vec<String>,
}

/// A column of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name as the files hold it (Athena lower-cases it).
    pub name: String,
    /// Its Athena type (`bigint`, `string`, `decimal(10,2)`).
    pub kind: String,
    /// Its `COMMENT`, if any.
    pub comment: Option<String>,
}

/// The default table name for a job file: its stem (`orders.toml` → `orders`; a file named
/// `job.toml` takes its directory's name), lower-cased, anything but letters, digits and `_`
/// made `_`.
pub fn table_name(job_file: &Path) -> Result<String> {
    let stem = job_file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let stem = match stem {
        "job" => job_file
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned()))
            .unwrap_or_else(|| stem.to_string()),
        s => s.to_string(),
    };
    let name = sanitize(&stem);
    if name.trim_matches('_').is_empty() {
        return Err(Error::config("--table", format!("{stem:?} makes no table name: give --table NAME")));
    }
    Ok(name)
}

/// `name` as Athena names tables: lower-case letters, digits and `_`.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The `CREATE EXTERNAL TABLE` statement, with its comments.
pub fn create_table(spec: &JobSpec, opts: &Options) -> Result<String> {
    Ok(render(&table(spec, opts)?))
}

/// Decide the table.
pub fn table(spec: &JobSpec, opts: &Options) -> Result<Table> {
    let location = check_location(&opts.location)?;
    let name = match &opts.database {
        Some(db) => format!("`{}`.`{}`", check_name("--database", db)?, check_name("--table", &opts.table)?),
        None => format!("`{}`", check_name("--table", &opts.table)?),
    };
    let (fields, derived) = output_fields(spec, opts.fields.as_deref())?;
    check_field_names(&fields)?;
    let (format, assumed) = output_format(spec);
    let schema = crate::engine::parquet::schema(spec, &fields)?;
    let mut notes = Vec::new();
    let mut columns = Vec::with_capacity(fields.len());
    for f in schema.fields() {
        columns.push(column(f.name(), f.data_type(), format)?);
    }
    if derived {
        notes.push(
            "Columns: the declared [[columns]] (renamed) and the [enrich] fields. An undeclared input \
             column is in the files too, in the input's order: list [output] fields to be exact."
                .into(),
        );
    }
    if assumed {
        notes.push(format!(
            "[output] format is not set: this assumes {} files, what a run over {} input writes; set it to be sure.",
            format_name(format),
            if format == OutputFormat::Csv { "CSV" } else { "JSON" }
        ));
    }
    let mut properties = Vec::new();
    let storage = storage(format, &fields, &mut properties, &mut notes);
    let mut t = Table { name, columns, partitions: Vec::new(), storage, location, properties, notes };
    match &opts.layout {
        Layout::Stream => stream_layout(spec, format, &mut t)?,
        Layout::Job(id) => job_layout(id, &opts.table, format, &mut t)?,
    }
    Ok(t)
}

/// The fields, and whether they were derived from the declared columns rather than listed.
fn output_fields(spec: &JobSpec, given: Option<&[String]>) -> Result<(Vec<String>, bool)> {
    if let Some(f) = given.or(spec.output_fields.as_deref()) {
        return Ok((f.to_vec(), false));
    }
    let unknown = |why: &str| {
        Error::config(
            "output.fields",
            format!("the table's columns are not known: {why}; add fields = [\"…\", …] to [output] (or give --fields)"),
        )
    };
    if !spec.transforms.is_empty() {
        return Err(unknown("a transform may add or drop fields"));
    }
    if spec.columns.is_empty() {
        return Err(unknown("the job declares no [[columns]]"));
    }
    let mut fields: Vec<String> = spec.columns.iter().map(|c| c.out.clone()).collect();
    if let Some(e) = &spec.enrich {
        let added = e
            .fields
            .as_ref()
            .ok_or_else(|| unknown("[enrich] adds every reference field, and fields does not list them"))?;
        for f in added {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
    }
    Ok((fields, true))
}

/// The format the run writes: `[output] format`, else what a run picks (CSV when the fields
/// are known before it runs), and whether that was assumed.
fn output_format(spec: &JobSpec) -> (OutputFormat, bool) {
    if let Some(f) = spec.output_format {
        return (f, false);
    }
    let csv_input = matches!(spec.input.format, None | Some(Format::Csv));
    let known = spec.output_fields.is_some() || (spec.transforms.is_empty() && csv_input);
    (spec.output_format(known), spec.input.format.is_none())
}

fn format_name(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Csv => "CSV",
        OutputFormat::Jsonl => "JSON Lines",
        OutputFormat::Parquet => "Parquet",
    }
}

/// Athena lower-cases names, and a name is quoted in backticks.
fn check_field_names(fields: &[String]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for f in fields {
        if f.is_empty() || f.contains('`') {
            return Err(Error::config("output.fields", format!("{f:?} cannot be an Athena column name")));
        }
        if let Some(other) = seen.insert(f.to_lowercase(), f) {
            return Err(Error::config(
                "output.fields",
                format!("{other:?} and {f:?} are one column to Athena, which lower-cases names: rename one (`as`)"),
            ));
        }
    }
    Ok(())
}

fn check_location(location: &str) -> Result<String> {
    let Some(rest) = location.strip_prefix("s3://") else {
        return Err(Error::config("--location", format!("{location:?} is not s3://BUCKET/PREFIX/")));
    };
    if rest.split('/').next().unwrap_or_default().is_empty() || rest.contains("//") || location.contains(['\'', '\\']) {
        return Err(Error::config("--location", format!("{location:?} is not s3://BUCKET/PREFIX/")));
    }
    Ok(if location.ends_with('/') { location.to_string() } else { format!("{location}/") })
}

fn check_name(key: &str, name: &str) -> Result<String> {
    if name.is_empty() || name.len() > 255 || sanitize(name) != name {
        return Err(Error::config(
            key,
            format!("{name:?} is not an Athena name (lower-case letters, digits and _): {:?} would be", sanitize(name)),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    //! The tests of the options and names, and the job file and options the other files' tests
    //! share.

    use super::*;
    use crate::model::config::JobConfig;

    pub(super) const ORDERS: &str = r#"
[input]
format = "csv"
[[columns]]
name = "uuid"
[[columns]]
name = "Item Type"
[[columns]]
name = "Region"
as = "region"
[[columns]]
name = "Order Date"
as = "orderDate"
type = "date"
[[columns]]
name = "units"
type = "integer"
[[columns]]
name = "price"
type = "decimal"
[[columns]]
name = "paid"
type = "boolean"
[[columns]]
name = "at"
type = "timestamp"
"#;

    pub(super) fn spec(toml: &str) -> JobSpec {
        JobConfig::from_toml(toml, "test.toml").unwrap().validate(Path::new(".")).unwrap()
    }

    pub(super) fn opts(layout: Layout) -> Options {
        Options { location: "s3://bucket/out".into(), table: "orders".into(), database: None, layout, fields: None }
    }

    pub(super) fn sql(toml: &str, layout: Layout) -> String {
        create_table(&spec(toml), &opts(layout)).unwrap()
    }

    pub(super) fn err(toml: &str, o: Options) -> String {
        create_table(&spec(toml), &o).unwrap_err().to_string()
    }

    #[test]
    fn names_with_spaces_and_capitals_are_quoted_and_tables_sanitized() {
        let o = Options {
            database: Some("analytics".into()),
            fields: Some(vec!["Item Type".into(), "uuid".into()]),
            ..opts(Layout::Stream)
        };
        let s = create_table(&spec(ORDERS), &o).unwrap();
        assert!(s.contains("`analytics`.`orders` (\n  `Item Type` string,\n  `uuid` string\n)"), "{s}");
        assert_eq!(sanitize("Orders 2024-v1"), "orders_2024_v1");
        assert_eq!(table_name(Path::new("conf/My Orders.toml")).unwrap(), "my_orders");
        assert!(table_name(Path::new("---.toml")).is_err());
        let bad = Options { table: "Orders".into(), ..opts(Layout::Stream) };
        assert!(err(ORDERS, bad).contains("\"orders\" would be"));
    }

    #[test]
    fn unknown_or_clashing_fields_are_errors_naming_output_fields() {
        let e =
            err("transform = [\".\"]\n[[columns]]\nname = \"a\"\n[input]\nformat = \"csv\"\n", opts(Layout::Stream));
        assert!(e.contains("output.fields") && e.contains("add fields"), "{e}");
        let e = err("[input]\nformat = \"jsonl\"\n", opts(Layout::Stream));
        assert!(e.contains("output.fields"), "{e}");
        let e = err("[[columns]]\nname = \"a\"\n[enrich]\nsource = \"ref.csv\"\nkey = \"a\"\n", opts(Layout::Stream));
        assert!(e.contains("output.fields") && e.contains("[enrich]"), "{e}");
        let clash = Options { fields: Some(vec!["URL".into(), "url".into()]), ..opts(Layout::Stream) };
        assert!(err(ORDERS, clash).contains("lower-cases"));
        let e = err(ORDERS, Options { location: "bucket/x".into(), ..opts(Layout::Stream) });
        assert!(e.contains("--location"), "{e}");
    }
}
