//! `sluicebox ddl`: the Athena (AWS Glue) `CREATE EXTERNAL TABLE` over a stream's or a batch
//! job's output files, typed as the Parquet output is typed.
//!
//! Pure: a checked [`JobSpec`] and [`Options`] in, SQL text out. What the table is (its
//! columns, storage, partitions and properties) is decided first, as a [`Table`]; rendering
//! it is a separate step.
//!
//! Choices, and why (checked against the Athena documentation):
//!
//! - Types are those of [`crate::parquet::schema`], so a table agrees with Parquet files.
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

use std::path::Path;

use arrow_schema::{DataType, TimeUnit};

use crate::config::{Compression, Format, OutputFormat, StreamConfig};
use crate::error::{Error, Result};
use crate::spec::JobSpec;
use crate::stream::partition::{PartitionKind, Template};

/// The first year a projected time partition covers: event times may be old (`time_field`),
/// and a year with no data costs a query only a listing.
const FIRST_YEAR: i32 = 2000;
/// The last year an integer `%Y` partition covers (a date projection runs to `NOW`).
const LAST_YEAR: i32 = 2040;

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
    let schema = crate::parquet::schema(spec, &fields)?;
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

/// A data column: the Athena type of its Arrow type, as `format` can hold it.
fn column(name: &str, arrow: &DataType, format: OutputFormat) -> Result<Column> {
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
    // OpenCSVSerde reads dates and timestamps only as numbers since 1970 (see the module).
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
fn storage(
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

/// A stream's files: partitions by projection, or a warning when there are none.
fn stream_layout(spec: &JobSpec, format: OutputFormat, t: &mut Table) -> Result<()> {
    let config = spec.definition.config.stream.clone().unwrap_or_default();
    crate::stream::check_config(&config)?;
    let errors = config.errors.trim_matches('/').to_string();
    t.notes
        .insert(0, format!("The files `sluicebox stream` writes under {}: {}.", t.location, describe(format, &config)));
    if format != OutputFormat::Parquet && config.compression != Compression::None {
        t.notes.push(format!(
            "No compression clause: Athena reads .{} files by their extension.",
            if config.compression == Compression::Zstd { "zst" } else { "gz" }
        ));
    }
    let Some(text) = config.partition.as_deref() else {
        t.notes.push(format!(
            "WARNING: no [stream] partition, so the files are at LOCATION and so are the rejected records' \
             files, under {errors}/: Athena reads every file under LOCATION, subfolders included, and would \
             read them as rows{}. Add a template, e.g. partition = \"year=%Y/month=%m/day=%d\".",
            if format == OutputFormat::Parquet { " (a query fails on them: they are not Parquet)" } else { "" }
        ));
        return Ok(());
    };
    let template = Template::parse(text)?;
    let folders: Vec<&str> = text.trim_matches('/').split('/').collect();
    check_errors_outside(&folders, &errors)?;
    let data: Vec<String> = t.columns.iter().map(|c| c.name.to_lowercase()).collect();
    let mut named = template.columns().into_iter();
    let mut path = Vec::with_capacity(folders.len());
    let mut properties = vec![("projection.enabled".to_string(), "true".to_string())];
    let mut injected = Vec::new();
    let mut renamed = Vec::new();
    for folder in &folders {
        let Some((folder_name, _)) = folder.split_once('=') else {
            if folder.contains(['{', '%']) {
                return Err(Error::config(
                    "stream.partition",
                    format!(
                        "{text:?}: folder {folder:?} varies but is not name=…; Athena projects only named \
                         folders: write it as NAME={folder}"
                    ),
                ));
            }
            path.push(folder.to_string());
            continue;
        };
        let col = named.next().ok_or_else(|| Error::config("stream.partition", format!("{text:?} cannot be read")))?;
        let mut name = col.name.to_lowercase();
        if data.contains(&name) {
            while data.contains(&name) {
                name.push_str("_partition");
            }
            renamed.push(format!("{} (folder {}=)", name, col.name));
        }
        path.push(format!("{folder_name}=${{{name}}}"));
        let projection = projection(&col.kind);
        let key = |k: &str| format!("projection.{name}.{k}");
        match &projection {
            Projection::Integer { range, digits } => {
                properties.push((key("type"), "integer".into()));
                properties.push((key("range"), range.clone()));
                if let Some(d) = digits {
                    properties.push((key("digits"), d.to_string()));
                }
            }
            Projection::Date { format, range, unit } => {
                properties.push((key("type"), "date".into()));
                properties.push((key("format"), format.clone()));
                properties.push((key("range"), range.clone()));
                properties.push((key("interval"), "1".into()));
                properties.push((key("interval.unit"), unit.to_string()));
            }
            Projection::Injected => {
                properties.push((key("type"), "injected".into()));
                injected.push(name.clone());
            }
        }
        let kind = if matches!(projection, Projection::Integer { .. }) { "int" } else { "string" };
        t.partitions.push(Column { name, kind: kind.into(), comment: None });
    }
    properties.push(("storage.location.template".into(), format!("{}{}/", t.location, path.join("/"))));
    t.properties.extend(properties);
    t.notes.push(format!(
        "Partitions are projected: no MSCK REPAIR TABLE or crawler is needed, and only partition folders are \
         read (not {errors}/, where rejected records go)."
    ));
    if !renamed.is_empty() {
        t.notes.push(format!(
            "Renamed partition columns, since a data column has the name: {}. The data column keeps the typed value.",
            renamed.join(", ")
        ));
    }
    if !injected.is_empty() {
        t.notes.push(format!(
            "Injected partition columns ({}): every query must filter them by equality (col = 'x' or \
             col IN ('x', 'y')), with the values as the folders hold them (Hive-escaped: / as %2F; \
             a missing value as __HIVE_DEFAULT_PARTITION__).",
            injected.join(", ")
        ));
    }
    if t.properties.iter().any(|(k, v)| k.ends_with(".range") && v.starts_with(&FIRST_YEAR.to_string())) {
        t.notes.push(format!(
            "Time partitions are projected from {FIRST_YEAR}: narrow the ranges to your data, since a query \
             that does not filter time lists every partition in range."
        ));
    }
    Ok(())
}

fn describe(format: OutputFormat, c: &StreamConfig) -> String {
    let compression = match (format, c.compression) {
        (OutputFormat::Parquet, _) => "zstd inside",
        (_, Compression::Zstd) => "zstd",
        (_, Compression::None) => "not compressed",
        _ => "gzip",
    };
    let partition = c.partition.as_deref().map_or("no partitions".to_string(), |p| format!("partitioned by {p}"));
    format!("{}, {compression}, {partition}", format_name(format))
}

/// How Athena projects a partition column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Projection {
    /// A number (`%Y`, `%m`): a range, zero-padded to `digits`.
    Integer { range: String, digits: Option<u8> },
    /// A time in one folder (`%Y-%m-%d`): its Java pattern, a range and a step.
    Date { format: String, range: String, unit: &'static str },
    /// Any value, given by each query.
    Injected,
}

fn projection(kind: &PartitionKind) -> Projection {
    let integer = |lo: u32, hi: u32| Projection::Integer { range: format!("{lo},{hi}"), digits: Some(2) };
    let PartitionKind::Time(f) = kind else {
        return Projection::Injected;
    };
    match f.as_str() {
        "%Y" => Projection::Integer { range: format!("{FIRST_YEAR},{LAST_YEAR}"), digits: None },
        "%m" => integer(1, 12),
        "%d" => integer(1, 31),
        "%H" => integer(0, 23),
        "%M" => integer(0, 59),
        _ => match java_pattern(f) {
            Some((format, unit)) => {
                let first = chrono::NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)
                    .unwrap_or_default()
                    .and_time(chrono::NaiveTime::MIN);
                Projection::Date { format, range: format!("{},NOW", first.format(f)), unit }
            }
            None => Projection::Injected,
        },
    }
}

/// A strftime format as a Java `DateTimeFormatter` pattern, and its finest unit; `None` when it
/// has an item Athena's date projection cannot parse back.
pub fn java_pattern(strftime: &str) -> Option<(String, &'static str)> {
    let mut out = String::new();
    let mut literal = String::new();
    let mut unit = None;
    let mut chars = strftime.chars();
    let flush = |literal: &mut String, out: &mut String| {
        if literal.is_empty() {
            return;
        }
        if literal.chars().any(|c| c.is_ascii_alphabetic() || c == '\'') {
            out.push('\'');
            out.push_str(&literal.replace('\'', "''"));
            out.push('\'');
        } else {
            out.push_str(literal);
        }
        literal.clear();
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        flush(&mut literal, &mut out);
        let (java, rank, name) = match chars.next()? {
            'Y' => ("yyyy", 0, "YEARS"),
            'y' => ("yy", 0, "YEARS"),
            'm' => ("MM", 1, "MONTHS"),
            'd' => ("dd", 2, "DAYS"),
            'j' => ("DDD", 2, "DAYS"),
            'H' => ("HH", 3, "HOURS"),
            'M' => ("mm", 4, "MINUTES"),
            'S' => ("ss", 5, "SECONDS"),
            '%' => {
                literal.push('%');
                continue;
            }
            _ => return None,
        };
        out.push_str(java);
        if unit.is_none_or(|(r, _)| rank > r) {
            unit = Some((rank, name));
        }
    }
    flush(&mut literal, &mut out);
    Some((out, unit?.1))
}

/// Refuse an errors prefix whose files could sit in a partition folder: error files are at
/// `ERRORS/dt=YYYY-MM-DD/`, and a partition folder reads the files under it.
fn check_errors_outside(template: &[&str], errors: &str) -> Result<()> {
    let mut path: Vec<&str> = errors.split('/').filter(|s| !s.is_empty()).collect();
    path.push("dt=2000-01-01");
    if template.len() > path.len() {
        return Ok(());
    }
    let could_be = |t: &str, folder: &str| match t.split_once('=') {
        Some((name, _)) => folder.starts_with(&format!("{name}=")),
        None => !t.contains(['{', '%']) && t == folder,
    };
    if template.iter().zip(&path).all(|(t, f)| could_be(t, f)) {
        return Err(Error::config(
            "stream.errors",
            format!(
                "{errors:?}: rejected records' files (under {errors}/dt=…/) would fall inside the partition \
                 folders of {:?}, and Athena would read them as rows: choose a prefix outside them",
                template.join("/")
            ),
        ));
    }
    Ok(())
}

/// A job's output: a prefix of its own, since `jobs/<id>/` holds other files Athena would read.
fn job_layout(id: &str, table: &str, format: OutputFormat, t: &mut Table) -> Result<()> {
    // The id goes into the SQL (a LOCATION and comments): only a job id's characters.
    crate::config::check_job_id(id, "--job")?;
    let ext = match format {
        OutputFormat::Csv => "csv",
        OutputFormat::Jsonl => "jsonl",
        OutputFormat::Parquet => "parquet",
    };
    let jobs = t.location.clone();
    let own = format!("{jobs}tables/{table}/");
    t.notes.insert(0, format!("The merged output of job {id}: {}.", format_name(format)));
    t.notes.push(format!(
        "LOCATION is not {jobs}jobs/{id}/: Athena reads every file under LOCATION (it skips only names \
         starting with _ or .), and that folder also holds job.json, plan.json, sent.json, rejects.jsonl, \
         manifest.json, summary.json, report.html, gathered.json and the parts/ and calls/ folders."
    ));
    t.notes.push("Copy the output to the table's own prefix first (more jobs' outputs may join it):".into());
    t.notes.push(format!("  aws s3 cp {jobs}jobs/{id}/output.{ext} {own}{id}.{ext}"));
    t.location = own;
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

/// A string literal in Hive DDL (backslash escapes).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn property_lines(props: &[(String, String)]) -> String {
    props.iter().map(|(k, v)| format!("  {} = {}", quote(k), quote(v))).collect::<Vec<_>>().join(",\n")
}

fn column_lines(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| match &c.comment {
            Some(note) => format!("  `{}` {} COMMENT {}", c.name, c.kind, quote(note)),
            None => format!("  `{}` {}", c.name, c.kind),
        })
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The SQL of `t`: its notes as `--` comments, then the statement.
pub fn render(t: &Table) -> String {
    let mut out = String::new();
    for note in &t.notes {
        out.push_str(&format!("-- {note}\n"));
    }
    out.push_str(&format!("CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n{}\n)\n", t.name, column_lines(&t.columns)));
    if !t.partitions.is_empty() {
        out.push_str(&format!("PARTITIONED BY (\n{}\n)\n", column_lines(&t.partitions)));
    }
    out.push_str(&t.storage);
    out.push('\n');
    out.push_str(&format!("LOCATION {}", quote(&t.location)));
    if !t.properties.is_empty() {
        out.push_str(&format!("\nTBLPROPERTIES (\n{}\n)", property_lines(&t.properties)));
    }
    out.push_str(";\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobConfig;

    const ORDERS: &str = r#"
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

    fn spec(toml: &str) -> JobSpec {
        JobConfig::from_toml(toml, "test.toml").unwrap().validate(Path::new(".")).unwrap()
    }

    fn opts(layout: Layout) -> Options {
        Options { location: "s3://bucket/out".into(), table: "orders".into(), database: None, layout, fields: None }
    }

    fn sql(toml: &str, layout: Layout) -> String {
        create_table(&spec(toml), &opts(layout)).unwrap()
    }

    fn err(toml: &str, o: Options) -> String {
        create_table(&spec(toml), &o).unwrap_err().to_string()
    }

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

    #[test]
    fn a_stream_partition_template_is_projected() {
        let toml = format!("{ORDERS}\n[stream]\npartition = \"vendor={{uuid}}/year=%Y/month=%m/day=%d/hour=%H\"\n");
        let t = table(&spec(&toml), &opts(Layout::Stream)).unwrap();
        let parts: Vec<(&str, &str)> = t.partitions.iter().map(|c| (c.name.as_str(), c.kind.as_str())).collect();
        assert_eq!(parts, [("vendor", "string"), ("year", "int"), ("month", "int"), ("day", "int"), ("hour", "int")]);
        let p = |k: &str| t.properties.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(p("projection.enabled"), Some("true"));
        assert_eq!(p("projection.vendor.type"), Some("injected"));
        assert_eq!(p("projection.year.type"), Some("integer"));
        assert_eq!(p("projection.year.range"), Some("2000,2040"));
        assert_eq!(p("projection.year.digits"), None);
        assert_eq!(p("projection.month.range"), Some("1,12"));
        assert_eq!(p("projection.month.digits"), Some("2"));
        assert_eq!(p("projection.day.range"), Some("1,31"));
        assert_eq!(p("projection.hour.range"), Some("0,23"));
        assert_eq!(
            p("storage.location.template"),
            Some("s3://bucket/out/vendor=${vendor}/year=${year}/month=${month}/day=${day}/hour=${hour}/")
        );
        let s = render(&t);
        assert!(s.contains("PARTITIONED BY (\n  `vendor` string,\n  `year` int,"), "{s}");
        assert!(s.contains("must filter them by equality"), "{s}");
    }

    #[test]
    fn a_partition_named_like_a_data_column_is_renamed() {
        let toml = format!("{ORDERS}\n[stream]\npartition = \"region={{region}}/raw/Units=%Y\"\n");
        let t = table(&spec(&toml), &opts(Layout::Stream)).unwrap();
        let names: Vec<&str> = t.partitions.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["region_partition", "units_partition"]);
        assert!(t.columns.iter().any(|c| c.name == "region"));
        let template = t.properties.iter().find(|(k, _)| k == "storage.location.template").unwrap();
        assert_eq!(template.1, "s3://bucket/out/region=${region_partition}/raw/Units=${units_partition}/");
        assert!(render(&t).contains("Renamed partition columns"));
    }

    #[test]
    fn a_date_folder_is_a_date_projection_in_its_java_pattern() {
        let toml = format!("{ORDERS}\n[stream]\npartition = \"dt=%Y-%m-%d\"\n");
        let t = table(&spec(&toml), &opts(Layout::Stream)).unwrap();
        let p = |k: &str| t.properties.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(t.partitions[0].kind, "string");
        assert_eq!(p("projection.dt.type"), Some("date"));
        assert_eq!(p("projection.dt.format"), Some("yyyy-MM-dd"));
        assert_eq!(p("projection.dt.range"), Some("2000-01-01,NOW"));
        assert_eq!(p("projection.dt.interval.unit"), Some("DAYS"));

        assert_eq!(java_pattern("%Y-%m-%d"), Some(("yyyy-MM-dd".into(), "DAYS")));
        assert_eq!(java_pattern("%Y%m%d%H"), Some(("yyyyMMddHH".into(), "HOURS")));
        assert_eq!(java_pattern("%Y-%m-%dT%H:%M"), Some(("yyyy-MM-dd'T'HH:mm".into(), "MINUTES")));
        assert_eq!(java_pattern("%Y-%m"), Some(("yyyy-MM".into(), "MONTHS")));
        assert_eq!(java_pattern("%Hh"), Some(("HH'h'".into(), "HOURS")));
        assert_eq!(java_pattern("%a"), None);
        assert_eq!(java_pattern("plain"), None);

        let hourly = format!("{ORDERS}\n[stream]\npartition = \"hour=%Y-%m-%d-%H\"\n");
        let t = table(&spec(&hourly), &opts(Layout::Stream)).unwrap();
        let range = t.properties.iter().find(|(k, _)| k == "projection.hour.range").unwrap();
        assert_eq!(range.1, "2000-01-01-00,NOW");
    }

    #[test]
    fn without_partitions_the_errors_prefix_is_under_location_and_said_so() {
        let s = sql(&format!("{ORDERS}\n[stream]\nerrors = \"bad\"\n"), Layout::Stream);
        assert!(s.contains("WARNING: no [stream] partition"), "{s}");
        assert!(s.contains("under bad/"), "{s}");
        assert!(!s.contains("PARTITIONED BY"), "{s}");
        assert!(!s.contains("projection"), "{s}");
    }

    #[test]
    fn an_errors_prefix_inside_the_partition_tree_is_refused() {
        for (partition, errors) in
            [("errors/dt=%Y-%m-%d", "errors"), ("kind={region}", "kind=bad"), ("a/b=%Y", "a/b=x/c")]
        {
            let toml = format!("{ORDERS}\n[stream]\npartition = \"{partition}\"\nerrors = \"{errors}\"\n");
            let e = err(&toml, opts(Layout::Stream));
            assert!(e.contains("stream.errors"), "{partition} {errors}: {e}");
        }
        for (partition, errors) in [("year=%Y", "errors"), ("errors/year=%Y", "errors"), ("a/b=%Y/c=%m/d=%d", "a/b=x")]
        {
            let toml = format!("{ORDERS}\n[stream]\npartition = \"{partition}\"\nerrors = \"{errors}\"\n");
            create_table(&spec(&toml), &opts(Layout::Stream)).unwrap();
        }
    }

    #[test]
    fn an_unnamed_folder_that_varies_is_refused() {
        let e = err(&format!("{ORDERS}\n[stream]\npartition = \"{{region}}/y=%Y\"\n"), opts(Layout::Stream));
        assert!(e.contains("stream.partition") && e.contains("NAME={region}"), "{e}");
    }

    #[test]
    fn a_job_table_has_a_prefix_of_its_own_and_says_why() {
        let s = sql(ORDERS, Layout::Job("orders-1a2b".into()));
        assert!(s.contains("LOCATION 's3://bucket/out/tables/orders/'"), "{s}");
        assert!(
            s.contains(
                "aws s3 cp s3://bucket/out/jobs/orders-1a2b/output.csv s3://bucket/out/tables/orders/orders-1a2b.csv"
            ),
            "{s}"
        );
        assert!(s.contains("rejects.jsonl"), "{s}");
        assert!(!s.contains("projection"), "{s}");
        assert!(err(ORDERS, opts(Layout::Job("a/b".into()))).contains("--job"));
        // A newline would end the SQL comment the id is in, and what follows would be SQL.
        for crafted in ["x\nDROP TABLE y;", "x'; DROP TABLE y; --", "..", ""] {
            assert!(err(ORDERS, opts(Layout::Job(crafted.into()))).contains("is not a job id"), "{crafted:?}");
        }
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
