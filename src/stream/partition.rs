//! Partition templates: `vendor={vendor_id}/year=%Y/month=%m/day=%d` names the folder a
//! record's file goes in, from its output fields and its time, Hive-style (`name=value`), so
//! Athena, DuckDB and Spark see the folders as columns.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::record::{Fault, Row};

/// The value Hive gives a partition whose field is missing or null.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The longest rendered folder, in bytes: file systems refuse names over 255 bytes, and a
/// value that long is not a partition anyone queries by.
pub const MAX_FOLDER_BYTES: usize = 200;

/// The longest rendered partition (every folder), in bytes: with the stream's prefix and its
/// file name it must stay within S3's 1,024-byte keys and a local path's limit.
pub const MAX_PARTITION_BYTES: usize = 512;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// One folder of a template: its Hive column name, if it is written `name=…`, and its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: Option<String>,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
    /// A strftime format (`%Y`, `%m-%d`), its items parsed once, and whether they write only
    /// the date.
    Time(String, TimeItems, bool),
}

/// A strftime format's parsed items (parsing a format per record costs more than formatting).
#[derive(Debug, Clone)]
struct TimeItems(Vec<Item<'static>>);

impl TimeItems {
    /// Whether the items write only the date (`%Y-%m-%d`, `%b`, `%j`): then a day's text is
    /// kept and reused, formatting being most of what naming a partition costs.
    fn daily(&self) -> bool {
        use chrono::format::{Fixed, Numeric};
        self.0.iter().all(|item| match item {
            Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => true,
            Item::Numeric(n, _) => matches!(
                n,
                Numeric::Year
                    | Numeric::YearDiv100
                    | Numeric::YearMod100
                    | Numeric::IsoYear
                    | Numeric::IsoYearDiv100
                    | Numeric::IsoYearMod100
                    | Numeric::Month
                    | Numeric::Day
                    | Numeric::WeekFromSun
                    | Numeric::WeekFromMon
                    | Numeric::IsoWeek
                    | Numeric::NumDaysFromSun
                    | Numeric::WeekdayFromMon
                    | Numeric::Ordinal
            ),
            Item::Fixed(f) => {
                matches!(
                    f,
                    Fixed::ShortMonthName | Fixed::LongMonthName | Fixed::ShortWeekdayName | Fixed::LongWeekdayName
                )
            }
            _ => false,
        })
    }

    /// Write `time` with these items (of `format`) onto `out`; a daily format's text comes
    /// from this thread's last days, by the format and the day.
    fn write(&self, format: &str, time: DateTime<Utc>, daily: bool, out: &mut String) {
        use std::fmt::Write;
        if !daily {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", time.format_with_items(self.0.iter()));
            return;
        }
        // foldhash: this is asked for every record, and its keys are this thread's own.
        type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
        type Days = Map<String, Map<i32, String>>;
        thread_local! {
            static DAYS: std::cell::RefCell<Days> = Default::default();
        }
        let day = chrono::Datelike::num_days_from_ce(&time);
        DAYS.with_borrow_mut(|formats| {
            if !formats.contains_key(format) {
                if formats.len() >= 64 {
                    formats.clear();
                }
                formats.insert(format.to_string(), Default::default());
            }
            let Some(days) = formats.get_mut(format) else { return };
            if days.len() >= 4096 {
                days.clear();
            }
            out.push_str(days.entry(day).or_insert_with(|| time.format_with_items(self.0.iter()).to_string()));
        });
    }
}

impl PartialEq for TimeItems {
    fn eq(&self, _: &Self) -> bool {
        // Equal formats parse to equal items: the text beside them is compared.
        true
    }
}

impl Eq for TimeItems {}

/// A partition column, as a table declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    /// The column's name (the part before `=`).
    pub name: String,
    /// Where its value comes from.
    pub kind: PartitionKind,
}

/// Where a partition column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKind {
    /// One output field's value (`{vendor_id}`).
    Field(String),
    /// The record's time in a strftime format (`%Y`, `%Y-%m-%d`).
    Time(String),
    /// Anything else: text mixed with fields and times.
    Mixed(String),
}

impl Template {
    /// Parse `text`; errors name `stream.partition`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: String| Error::config("stream.partition", format!("{text:?}: {why}"));
        let text = text.trim_matches('/');
        if text.is_empty() {
            return Err(bad("is empty (leave it out for no partitions)".into()));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("has a control character, which no folder name may hold".into()));
        }
        let mut segments = Vec::new();
        for folder in text.split('/') {
            if folder.is_empty() {
                return Err(bad("has an empty folder (`//`)".into()));
            }
            let (name, value) = match folder.split_once('=') {
                Some((name, value)) => {
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(bad(format!("{name:?} is not a column name (letters, digits and `_`)")));
                    }
                    (Some(name.to_string()), value)
                }
                None => (None, folder),
            };
            segments.push(Segment { name, pieces: pieces(value).map_err(bad)? });
        }
        Ok(Template { segments })
    }

    /// The Hive columns, in order (folders without `name=` are not columns).
    pub fn columns(&self) -> Vec<PartitionColumn> {
        self.segments
            .iter()
            .filter_map(|s| {
                let name = s.name.clone()?;
                let kind = match s.pieces.as_slice() {
                    [Piece::Field(f)] => PartitionKind::Field(f.clone()),
                    [Piece::Time(t, ..)] => PartitionKind::Time(t.clone()),
                    _ => PartitionKind::Mixed(s.pieces.iter().map(Piece::source).collect()),
                };
                Some(PartitionColumn { name, kind })
            })
            .collect()
    }

    /// The output fields the template reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self.segments.iter().flat_map(|s| &s.pieces) {
            if let Piece::Field(f) = p {
                if !out.contains(&f.as_str()) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Why the template may make a partition for nearly every record, if it looks so: a time
    /// finer than the hour (`%M`, `%S`, …), or a field whose name says it identifies a record
    /// or an instant (`id`, `user_id`, `uuid`, `key`, `email`, `ts`, `timestamp`, …).
    pub fn looks_unbounded(&self) -> Option<String> {
        const FINE: [&str; 9] = ["%M", "%S", "%s", "%f", "%T", "%R", "%X", "%c", "%+"];
        for piece in self.segments.iter().flat_map(|s| &s.pieces) {
            match piece {
                Piece::Time(text, ..) => {
                    if let Some(f) = FINE.iter().find(|f| text.contains(**f)) {
                        return Some(format!("{f} makes a folder per minute or finer"));
                    }
                }
                Piece::Field(f) => {
                    let name = f.to_ascii_lowercase();
                    let identifying = ["id", "uuid", "guid", "key", "email", "ts", "time", "timestamp"]
                        .iter()
                        .any(|w| name == *w || name.ends_with(&format!("_{w}")) || (w.len() > 2 && name.ends_with(w)));
                    if identifying {
                        return Some(format!("{{{f}}} looks like a value that differs on every record"));
                    }
                }
                Piece::Text(_) => {}
            }
        }
        None
    }

    /// Whether the template reads the record's time.
    pub fn uses_time(&self) -> bool {
        self.segments.iter().flat_map(|s| &s.pieces).any(|p| matches!(p, Piece::Time(..)))
    }

    /// [`render`](Self::render), or why the record cannot have that folder: a folder over
    /// [`MAX_FOLDER_BYTES`], a partition over [`MAX_PARTITION_BYTES`], a folder `.` or `..`, or
    /// a partition at or under `errors` (the prefix rejected records go to). Such a record is
    /// a reject (rule `stream.partition`), never a file that cannot be written.
    pub fn render_checked(&self, row: &Row, time: DateTime<Utc>, errors: &str) -> std::result::Result<String, Fault> {
        let rendered = self.render(row, time);
        let bad = |why: String| Err(Fault::new(None, "stream.partition", why));
        if rendered.len() > MAX_PARTITION_BYTES {
            return bad(format!("the partition is {} bytes long, more than {MAX_PARTITION_BYTES}", rendered.len()));
        }
        if rendered.chars().any(char::is_control) {
            return bad(format!("the partition {rendered:?} holds a control character"));
        }
        for folder in rendered.split('/') {
            if folder.len() > MAX_FOLDER_BYTES {
                let start: String = folder.chars().take(40).collect();
                return bad(format!(
                    "the folder {start:?}… is {} bytes long, more than {MAX_FOLDER_BYTES}",
                    folder.len()
                ));
            }
            if folder == "." || folder == ".." || folder.is_empty() {
                return bad(format!("the partition {rendered:?} has a folder {folder:?}"));
            }
        }
        let errors = errors.trim_matches('/');
        let under_errors = rendered.strip_prefix(errors).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !errors.is_empty() && under_errors {
            return bad(format!("the partition {rendered:?} is under the errors prefix {errors:?}"));
        }
        Ok(rendered)
    }

    /// The folder of `row` at `time`, without a trailing `/`. Field values are escaped as Hive
    /// escapes them (`/` becomes `%2F`); a missing or null field is [`DEFAULT_PARTITION`].
    pub fn render(&self, row: &Row, time: DateTime<Utc>) -> String {
        // Room for a usual partition, so that it is not grown piece by piece.
        let mut out = String::with_capacity(64);
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            if let Some(name) = &seg.name {
                out.push_str(name);
                out.push('=');
            }
            for piece in &seg.pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Time(format, items, daily) => items.write(format, time, *daily, &mut out),
                    Piece::Field(f) => match row.get(f) {
                        None | Some(Value::Null) => out.push_str(DEFAULT_PARTITION),
                        Some(Value::String(s)) if s.is_empty() => out.push_str(DEFAULT_PARTITION),
                        Some(Value::String(s)) => escape(s, &mut out),
                        Some(other) => escape(&other.to_string(), &mut out),
                    },
                }
            }
        }
        out
    }
}

impl Piece {
    fn source(&self) -> String {
        match self {
            Piece::Text(t) => t.clone(),
            Piece::Field(f) => format!("{{{f}}}"),
            Piece::Time(t, ..) => t.clone(),
        }
    }
}

/// A folder's value: text, `{field}`s and strftime runs.
fn pieces(value: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let end = after.find('}').ok_or_else(|| format!("`{{` without `}}` in {value:?}"))?;
            let field = &after[..end];
            if field.is_empty() {
                return Err("`{}` names no field".into());
            }
            out.push(Piece::Field(field.to_string()));
            rest = &after[end + 1..];
        } else if rest.starts_with('%') {
            // A run of strftime items and the text between them, up to the next field.
            let end = rest.find('{').unwrap_or(rest.len());
            let run = &rest[..end];
            let bad = || format!("{run:?} is not a strftime format (`%Y`, `%m`, `%d`, `%H`)");
            if StrftimeItems::new(run).any(|i| matches!(i, Item::Error)) {
                return Err(bad());
            }
            let items = StrftimeItems::new(run).parse_to_owned().map_err(|_| bad())?;
            // `%n` and `%t` write a line break and a tab, which no folder name may hold; some
            // items cannot be written for a time in UTC at all.
            let mut sample = String::new();
            let time = chrono::DateTime::<Utc>::UNIX_EPOCH;
            if std::fmt::Write::write_fmt(&mut sample, format_args!("{}", time.format_with_items(items.iter())))
                .is_err()
            {
                return Err(format!("{run:?} cannot be written for a time (a strftime item chrono has no value for)"));
            }
            if sample.chars().any(char::is_control) {
                return Err(format!("{run:?} writes a control character (`%n`, `%t`) into a folder name"));
            }
            let items = TimeItems(items);
            let daily = items.daily();
            out.push(Piece::Time(run.to_string(), items, daily));
            rest = &rest[end..];
        } else {
            let end = rest.find(['{', '%']).unwrap_or(rest.len());
            out.push(Piece::Text(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    if out.is_empty() {
        return Err("a folder has no value after `=`".into());
    }
    Ok(out)
}

/// Hive's escaping of a partition value: these characters, and control characters, as `%XX`.
fn escape(value: &str, out: &mut String) {
    // Most values (names, ids, codes) have nothing to escape.
    if value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b' ' | b'+' | b'@')) {
        out.push_str(value);
        return;
    }
    escape_chars(value, out);
}

/// [`escape`], a character at a time.
fn escape_chars(value: &str, out: &mut String) {
    for c in value.chars() {
        let special = c.is_control() || "\"#%'*/:=?\\{[]^".contains(c);
        if special {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn row(v: Value) -> Row {
        Row::Map(v.as_object().unwrap().clone())
    }

    proptest::proptest! {
        /// Values with nothing to escape are copied whole: the same text as a character at a
        /// time.
        #[test]
        fn a_value_is_escaped_the_same_whether_copied_whole_or_a_character_at_a_time(
            value in "[a-zA-Z0-9 ._+@/%:=#é\u{7f}\u{85}\n-]{0,12}",
        ) {
            let (mut whole, mut each) = (String::new(), String::new());
            escape(&value, &mut whole);
            escape_chars(&value, &mut each);
            proptest::prop_assert_eq!(whole, each);
        }
    }

    #[test]
    fn renders_fields_and_time_hive_style() {
        let t = Template::parse("vendor={vendor_id}/year=%Y/month=%m/day=%d").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 7, 13, 0, 0).unwrap();
        assert_eq!(t.render(&row(json!({"vendor_id": "v/1"})), at), "vendor=v%2F1/year=2026/month=03/day=07");
        assert_eq!(t.render(&row(json!({"vendor_id": 42})), at), "vendor=42/year=2026/month=03/day=07");
        assert_eq!(t.render(&row(json!({})), at), format!("vendor={DEFAULT_PARTITION}/year=2026/month=03/day=07"));
        assert_eq!(t.fields(), vec!["vendor_id"]);
        assert!(t.uses_time());
        let cols = t.columns();
        assert_eq!(cols[0], PartitionColumn { name: "vendor".into(), kind: PartitionKind::Field("vendor_id".into()) });
        assert_eq!(cols[1], PartitionColumn { name: "year".into(), kind: PartitionKind::Time("%Y".into()) });
    }

    /// A format that writes only the date is written once a day and kept; one with the hour
    /// is written every time: both as chrono writes them, for any time of any day.
    #[test]
    fn a_daily_formats_kept_text_is_what_chrono_writes_and_an_hourly_one_is_never_kept() {
        let daily = Template::parse("dt=%Y-%m-%d/w=%a-%b-%j").unwrap();
        let hourly = Template::parse("dt=%Y-%m-%d/h=%H").unwrap();
        let is_daily = |t: &Template| {
            t.segments.iter().flat_map(|s| &s.pieces).all(|p| match p {
                Piece::Time(_, _, daily) => *daily,
                _ => true,
            })
        };
        assert!(is_daily(&daily) && !is_daily(&hourly));
        let start = Utc.with_ymd_and_hms(2025, 12, 30, 22, 0, 0).unwrap();
        for step in 0..200 {
            let at = start + chrono::Duration::minutes(37 * step);
            for (t, format) in [(&daily, "dt=%Y-%m-%d/w=%a-%b-%j"), (&hourly, "dt=%Y-%m-%d/h=%H")] {
                assert_eq!(t.render(&row(json!({})), at), at.format(format).to_string(), "{at}");
            }
        }
    }

    #[test]
    fn a_partition_too_long_dotted_or_under_the_errors_prefix_is_a_fault() {
        let t = Template::parse("d={d}/h=%H").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 7, 0, 0).unwrap();
        let check = |v: Value| t.render_checked(&row(v), at, "errors/");
        assert_eq!(check(json!({"d": "x"})).unwrap(), "d=x/h=07");
        let long = check(json!({"d": "y".repeat(300)})).unwrap_err();
        assert_eq!(long.rule, "stream.partition");
        assert!(long.message.contains("more than 200"), "{}", long.message);
        // Escaping counts: 80 slashes are 240 bytes.
        assert!(check(json!({"d": "/".repeat(80)})).is_err());
        assert!(check(json!({"d": "y".repeat(190)})).is_ok());
        let many = Template::parse("{a}/{b}/{c}").unwrap();
        let v = json!({"a": "a".repeat(190), "b": "b".repeat(190), "c": "c".repeat(190)});
        assert!(many.render_checked(&row(v), at, "errors").unwrap_err().message.contains("more than 512"));
        let bare = Template::parse("{a}/x").unwrap();
        for dots in [".", ".."] {
            assert!(bare.render_checked(&row(json!({"a": dots})), at, "errors").is_err(), "{dots}");
        }
        assert!(bare.render_checked(&row(json!({"a": "errors"})), at, "errors").is_err());
        assert!(bare.render_checked(&row(json!({"a": "errors2"})), at, "errors").is_ok());
    }

    #[test]
    fn a_template_with_a_control_character_is_refused() {
        for t in ["d={d}/h=%H\u{e}x", "x=%Y%n", "x=%t%d"] {
            let err = Template::parse(t).unwrap_err().to_string();
            assert!(err.contains("stream.partition") && err.contains("control character"), "{t}: {err}");
        }
    }

    #[test]
    fn templates_that_make_a_folder_per_record_are_spotted() {
        for t in ["t=%Y%m%d%H%M%S", "{user_id}", "k={uuid}", "s=%s", "d=%Y-%m-%d/{event_ts}"] {
            assert!(Template::parse(t).unwrap().looks_unbounded().is_some(), "{t}");
        }
        for t in ["vendor={vendor_id_group}/dt=%Y-%m-%d/h=%H", "region={region}", "{valid}"] {
            assert_eq!(Template::parse(t).unwrap().looks_unbounded(), None, "{t}");
        }
    }

    #[test]
    fn mixed_and_unnamed_folders() {
        let t = Template::parse("/dt=%Y-%m-%d/raw/{region}-x/").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap();
        assert_eq!(t.render(&row(json!({"region": "eu"})), at), "dt=2026-12-31/raw/eu-x");
        assert_eq!(
            t.columns(),
            vec![PartitionColumn { name: "dt".into(), kind: PartitionKind::Time("%Y-%m-%d".into()) }]
        );
        assert!(!Template::parse("{a}").unwrap().uses_time());
    }

    #[test]
    fn bad_templates_name_the_key() {
        for bad in ["", "a=", "a={}", "a={x", "b a={x}", "x//y", "y=%Q"] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains("stream.partition"), "{bad:?}: {e}");
        }
    }
}
