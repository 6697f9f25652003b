//! Where the table's files are: a stream's partition folders, projected (no crawler, and the
//! errors prefix kept out), or a job's output in a prefix of its own.

use super::{format_name, Column, Table};
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::model::config::{Compression, OutputFormat, StreamConfig};
use crate::stream::partition::{PartitionKind, Template};

/// The first year a projected time partition covers: event times may be old (`time_field`),
/// and a year with no data costs a query only a listing.
const FIRST_YEAR: i32 = 2000;
/// The last year an integer `%Y` partition covers (a date projection runs to `NOW`).
const LAST_YEAR: i32 = 2040;

/// A stream's files: partitions by projection, or a warning when there are none.
pub(super) fn stream_layout(spec: &JobSpec, format: OutputFormat, t: &mut Table) -> Result<()> {
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
pub(super) fn job_layout(id: &str, table: &str, format: OutputFormat, t: &mut Table) -> Result<()> {
    // The id goes into the SQL (a LOCATION and comments): only a job id's characters.
    crate::model::config::check_job_id(id, "--job")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ddl::tests::{err, opts, spec, sql, ORDERS};
    use crate::tools::ddl::{create_table, render, table, Layout};

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
}
