//! Declared columns: a value checked and typed by its column's rules (required, length,
//! integer, decimal, boolean, date, timestamp), with dates parsed by a format read once.

use std::sync::Arc;

use serde_json::Value;

use crate::model::config::{ColumnConfig, ColumnType};
use crate::model::record::Fault;

/// A declared column, ready to check values.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// Input name.
    pub name: String,
    /// Output name.
    pub out: String,
    kind: ColumnType,
    format: Option<String>,
    /// The date format, parsed once (chrono would re-parse the format string per value).
    date_items: Option<Arc<[chrono::format::Item<'static>]>>,
    required: bool,
    max_length: Option<usize>,
    /// An exact decimal's precision and scale, and whether a value with more decimals is
    /// rounded (else rejected).
    exact: Option<(u32, u32, bool)>,
}

impl From<&ColumnConfig> for ColumnRule {
    fn from(c: &ColumnConfig) -> Self {
        ColumnRule {
            name: c.name.clone(),
            out: c.out_name().to_string(),
            kind: c.kind,
            format: c.format.clone(),
            date_items: (c.kind == ColumnType::Date)
                .then(|| {
                    chrono::format::StrftimeItems::new(c.format.as_deref().unwrap_or("%Y-%m-%d")).parse_to_owned().ok()
                })
                .flatten()
                .map(Arc::from),
            required: c.required,
            max_length: c.max_length,
            exact: c.exact().map(|(p, s)| (p, s, c.round)),
        }
    }
}

/// An exact decimal's text with exactly `scale` decimals (`142509.7` at scale 2: `142509.70`),
/// rounded half away from zero as its shortest text reads.
pub fn exact_text(n: &serde_json::Number, scale: u32) -> String {
    let text = n.to_string();
    match text.parse::<rust_decimal::Decimal>().or_else(|_| rust_decimal::Decimal::from_scientific(&text)) {
        Ok(d) => {
            let mut d = d.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
            d.rescale(scale);
            d.to_string()
        }
        Err(_) => text,
    }
}

/// A decimal's text as an exact decimal (plain or with an exponent).
fn exact_decimal(text: &str) -> Option<rust_decimal::Decimal> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse::<rust_decimal::Decimal>().ok().or_else(|| rust_decimal::Decimal::from_scientific(t).ok())
}

/// The digits of a decimal's text before and after its point, as an exact decimal reads it
/// (`0120.50` has 3 and 1); `None` when it is no decimal.
pub fn decimal_digits(text: &str) -> Option<(u32, u32)> {
    let d = exact_decimal(text)?.normalize();
    Some((whole_digits(d), d.scale()))
}

/// The digits of `d` before its point (none for a value under 1).
fn whole_digits(d: rust_decimal::Decimal) -> u32 {
    let whole = d.trunc().abs();
    if whole.is_zero() {
        0
    } else {
        whole.normalize().to_string().len() as u32
    }
}

impl ColumnRule {
    /// The column's value type.
    pub fn kind(&self) -> ColumnType {
        self.kind
    }

    /// `(precision, scale)` of an exact decimal column.
    pub fn exact(&self) -> Option<(u32, u32)> {
        self.exact.map(|(p, s, _)| (p, s))
    }

    /// Check and convert one value; the error says which rule failed and why.
    pub fn check(&self, value: Value) -> std::result::Result<Value, String> {
        self.apply(value).map_err(|f| format!("{} ({})", f.message, f.rule))
    }

    /// Check and convert one value (text from CSV, any JSON value from JSON inputs).
    pub fn apply(&self, value: Value) -> std::result::Result<Value, Fault> {
        let text = match value {
            Value::Null => return self.empty(),
            Value::String(s) => s,
            other if self.kind == ColumnType::String => other.to_string(),
            other => return self.typed_json(other),
        };
        match self.kind {
            // The text is the value: kept, not copied.
            ColumnType::String if !text.is_empty() => {
                self.within_max_length(&text)?;
                Ok(Value::String(text))
            }
            _ => self.apply_str(&text),
        }
    }

    /// [`ColumnRule::apply`] for text (a CSV field), which is copied only into a value that
    /// is text.
    pub fn apply_str(&self, text: &str) -> std::result::Result<Value, Fault> {
        if text.is_empty() {
            return if self.kind == ColumnType::String && !self.required {
                Ok(Value::String(String::new()))
            } else {
                self.empty()
            };
        }
        self.within_max_length(text)?;
        self.parse(text)
    }

    /// [`ColumnRule::check`] for text.
    pub fn check_str(&self, text: &str) -> std::result::Result<Value, String> {
        self.apply_str(text).map_err(|f| format!("{} ({})", f.message, f.rule))
    }

    fn within_max_length(&self, text: &str) -> std::result::Result<(), Fault> {
        // No more characters than bytes: only a long text is counted.
        if let Some(max) = self.max_length.filter(|&max| text.len() > max) {
            let n = text.chars().count();
            if n > max {
                return Err(self.fault("max_length", format!("is {n} characters long; at most {max} allowed")));
            }
        }
        Ok(())
    }

    fn empty(&self) -> std::result::Result<Value, Fault> {
        if self.required {
            Err(self.fault("required", "is required but empty"))
        } else {
            Ok(Value::Null)
        }
    }

    fn fault(&self, rule: &str, message: impl Into<String>) -> Fault {
        Fault::new(Some(&self.name), rule, message)
    }

    fn parse(&self, text: &str) -> std::result::Result<Value, Fault> {
        let t = text.trim();
        let bad = |what: &str| self.fault("type", format!("expected {what}, got {text:?}"));
        match self.kind {
            ColumnType::String => Ok(Value::String(text.to_string())),
            ColumnType::Integer => t.parse::<i64>().map(Value::from).map_err(|_| bad("an integer")),
            ColumnType::Decimal => {
                let n = t.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(|| bad("a decimal number"))?;
                self.exactly(n, t)
            }
            ColumnType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "y" | "t" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "n" | "f" => Ok(Value::Bool(false)),
                _ => Err(bad("true or false")),
            },
            ColumnType::Date => self.parse_date(t).map(|d| Value::String(iso_date(d))).ok_or_else(|| {
                bad(&format!("a date like {}", example_date(self.format.as_deref().unwrap_or("%Y-%m-%d"))))
            }),
            ColumnType::Timestamp => timestamp_text(t, self.format.as_deref()).map(Value::String).ok_or_else(|| {
                bad(&format!(
                    "a timestamp like {}",
                    self.format.as_deref().map(example_date).unwrap_or("2014-10-23T08:30:00Z".into())
                ))
            }),
        }
    }

    fn parse_date(&self, t: &str) -> Option<chrono::NaiveDate> {
        let items = self.date_items.as_deref()?;
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, t, items.iter()).ok()?;
        parsed.to_naive_date().ok()
    }

    /// A decimal `n` read from `text`, within the column's precision and scale (rounded to
    /// its scale, half away from zero as the text reads, if the column says so), or why not.
    fn exactly(&self, n: f64, text: &str) -> std::result::Result<Value, Fault> {
        let number = |f: f64| serde_json::Number::from_f64(f).map(Value::Number);
        let not_a_number = || self.fault("type", format!("expected a decimal number, got {text:?}"));
        let Some((precision, scale, round)) = self.exact else {
            return number(n).ok_or_else(not_a_number);
        };
        let d = exact_decimal(text).ok_or_else(not_a_number)?.normalize();
        let d = if d.scale() > scale {
            if !round {
                let why = format!("{text} has {} decimals; decimal({precision}, {scale}) keeps {scale}", d.scale());
                return Err(self.fault("scale", why));
            }
            d.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        } else {
            d
        };
        let (whole, most) = (whole_digits(d), precision - scale);
        if whole > most {
            let why = format!("{text} has {whole} digits before the point; decimal({precision}, {scale}) keeps {most}");
            return Err(self.fault("precision", why));
        }
        // At most 15 significant digits: the float is the nearest to `d`, and reads back as it.
        let f: f64 = d.to_string().parse().map_err(|_| not_a_number())?;
        number(f).ok_or_else(not_a_number)
    }

    fn typed_json(&self, v: Value) -> std::result::Result<Value, Fault> {
        if let (ColumnType::Decimal, Value::Number(n)) = (self.kind, &v) {
            if self.exact.is_some() {
                let text = n.to_string();
                return self.exactly(n.as_f64().unwrap_or(f64::NAN), &text);
            }
        }
        let ok = match self.kind {
            ColumnType::Integer => v.as_i64().is_some(),
            ColumnType::Decimal => v.is_number(),
            ColumnType::Boolean => v.is_boolean(),
            _ => false,
        };
        if ok {
            Ok(v)
        } else {
            Err(self.fault("type", format!("expected {:?}, got {v}", self.kind).to_lowercase()))
        }
    }
}

fn iso_date(d: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    if let Ok(y @ 0..=9999) = u32::try_from(d.year()) {
        // Written digit by digit: `format!` took a tenth of a CSV job's typing time.
        let (m, day) = (d.month(), d.day());
        let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
        let mut out = String::with_capacity(10);
        out.extend([digit(y / 1000), digit(y / 100), digit(y / 10), digit(y), '-']);
        out.extend([digit(m / 10), digit(m), '-', digit(day / 10), digit(day)]);
        out
    } else {
        d.format("%Y-%m-%d").to_string()
    }
}

/// The example date in `fmt`, for messages. A UTC time, so that an offset (`%z`) can be
/// written; a format chrono cannot write is shown as it is rather than panicking.
fn example_date(fmt: &str) -> String {
    use std::fmt::Write;
    let Some(d) = chrono::NaiveDate::from_ymd_opt(2014, 10, 23).and_then(|d| d.and_hms_opt(8, 30, 0)) else {
        return fmt.to_string();
    };
    let mut out = String::new();
    match write!(out, "{}", d.and_utc().format(fmt)) {
        Ok(()) => out,
        Err(_) => fmt.to_string(),
    }
}

/// RFC 3339 text as a UTC time: what chrono's `DateTime::parse_from_rfc3339` makes of it.
/// Text of the form `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (how this crate writes a timestamp, and
/// how most events carry one) is read digit by digit; any other text goes to chrono. A stream
/// reads a record's time three times (typed by its column, its partition, its Parquet cell),
/// and chrono's general parser was most of each.
pub fn rfc3339_utc(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    utc_z(s).or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&chrono::Utc)))
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (one to nine digits of fraction) as a UTC time, or `None` for
/// any other text, a leap second or a day the calendar lacks: chrono then reads or refuses it.
fn utc_z(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let b = s.as_bytes();
    let shaped = b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    if !shaped || b[b.len() - 1] != b'Z' {
        return None;
    }
    let number =
        |digits: &[u8]| digits.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')));
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => number(digits)? * 10u32.pow(9 - digits.len() as u32),
        _ => return None,
    };
    let (second, minute, hour) = (number(&b[17..19])?, number(&b[14..16])?, number(&b[11..13])?);
    if second >= 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(number(&b[0..4])? as i32, number(&b[5..7])?, number(&b[8..10])?)?;
    date.and_hms_nano_opt(hour, minute, second, nanos).map(|t| t.and_utc())
}

/// A timestamp column's text for `t`: RFC 3339 in UTC, with as many fraction digits as it
/// needs (chrono's `SecondsFormat::AutoSi`). Text already so written is kept as it is.
fn timestamp_text(t: &str, fmt: Option<&str>) -> Option<String> {
    if fmt.is_none() && t.len() == 20 && utc_z(t).is_some() {
        // No fraction, in UTC: what AutoSi writes for a whole second.
        return Some(t.to_string());
    }
    parse_timestamp(t, fmt).map(|ts| ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn parse_timestamp(t: &str, fmt: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    match fmt {
        None => rfc3339_utc(t),
        Some(fmt) => DateTime::parse_from_str(t, fmt)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(t, fmt).ok().map(|n| n.and_utc())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_chrono_writes_them() {
        let mut days = vec![(0, 1, 1), (9, 2, 3), (99, 12, 31), (999, 6, 15), (2014, 10, 8), (9999, 12, 31)];
        days.extend((1900..2100).step_by(7).map(|y| (y, (y % 12 + 1) as u32, (y % 28 + 1) as u32)));
        days.extend([(-1, 1, 1), (10000, 1, 1), (-44, 3, 15)]);
        for (y, m, d) in days {
            let date = chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(iso_date(date), date.format("%Y-%m-%d").to_string(), "{date:?}");
        }
    }

    fn rule(kind: ColumnType, format: &str) -> ColumnRule {
        ColumnRule::from(&ColumnConfig {
            name: "t".into(),
            rename: None,
            kind,
            format: Some(format.into()),
            required: false,
            max_length: None,
            precision: None,
            scale: None,
            round: false,
        })
    }

    #[test]
    fn a_timestamp_without_the_offset_its_format_asks_for_is_a_reject_not_a_panic() {
        let r = rule(ColumnType::Timestamp, "%Y-%m-%d %H:%M:%S %z");
        let fault = r.apply(Value::String("2014-10-23 08:30:00".into())).unwrap_err();
        assert_eq!(fault.rule, "type");
        assert!(fault.message.contains("2014-10-23 08:30:00 +0000"), "{}", fault.message);
        let ok = r.apply(Value::String("2014-10-23 08:30:00 +0200".into())).unwrap();
        assert_eq!(ok, Value::String("2014-10-23T06:30:00Z".into()));
        let date = rule(ColumnType::Date, "%d.%m.%Y %z");
        assert_eq!(date.apply(Value::String("soon".into())).unwrap_err().rule, "type");
    }

    fn money(round: bool) -> ColumnRule {
        ColumnRule::from(&ColumnConfig {
            name: "amount".into(),
            rename: None,
            kind: ColumnType::Decimal,
            format: None,
            required: false,
            max_length: None,
            precision: Some(8),
            scale: Some(2),
            round,
        })
    }

    #[test]
    fn an_exact_decimal_keeps_its_digits_or_names_the_rule_it_breaks() {
        let m = money(false);
        let text = |s: &str| m.apply(Value::String(s.into()));
        assert_eq!(text("142509.72").unwrap(), serde_json::json!(142509.72));
        assert_eq!(text("-000012.50").unwrap(), serde_json::json!(-12.5));
        assert_eq!(text("1.2e2").unwrap(), serde_json::json!(120.0));
        assert_eq!(text("1.234").unwrap_err().rule, "scale");
        assert_eq!(text("1234567.1").unwrap_err().rule, "precision", "7 digits before the point; 6 kept");
        assert!(text("1.234").unwrap_err().message.contains("decimal(8, 2)"));
        assert_eq!(m.apply(serde_json::json!(99.999)).unwrap_err().rule, "scale", "a JSON number too");
        // Rounded half away from zero as the text reads: 2.675 is 2.67499… as a float.
        let r = money(true);
        assert_eq!(r.apply(Value::String("2.675".into())).unwrap(), serde_json::json!(2.68));
        assert_eq!(r.apply(Value::String("-2.675".into())).unwrap(), serde_json::json!(-2.68));
        assert_eq!(r.apply(Value::String("999999.995".into())).unwrap_err().rule, "precision", "rounds to 7 digits");
        assert_eq!(decimal_digits("0120.50"), Some((3, 1)));
        assert_eq!(decimal_digits("abc"), None);
    }

    fn chrono_utc(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&chrono::Utc))
    }

    #[test]
    fn timestamps_read_digit_by_digit_are_chronos_and_odd_ones_go_to_chrono() {
        for s in [
            "2025-12-03T08:56:15Z",
            "2025-12-03T08:56:15.5Z",
            "2025-12-03T08:56:15.123456789Z",
            "0000-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2025-02-29T00:00:00Z",
            "2025-12-03T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "2025-12-03T08:56:15.1234567891Z",
            "2025-12-03t08:56:15z",
            "2025-12-03 08:56:15Z",
            "2025-12-03T08:56:15+02:00",
            "2025-12-03T08:56:15.Z",
            "+025-12-03T08:56:15Z",
        ] {
            assert_eq!(rfc3339_utc(s), chrono_utc(s), "{s}");
            let text = chrono_utc(s).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            assert_eq!(timestamp_text(s, None), text, "{s}");
        }
    }

    proptest::proptest! {
        /// Text shaped like a UTC timestamp, with digits anywhere, any fraction, and the
        /// separators, zone and signs chrono also takes: the same time (or none) and the
        /// same column text as chrono gives.
        #[test]
        fn a_timestamp_is_read_and_written_as_chrono_reads_and_writes_it(
            digits in proptest::collection::vec(0u32..10, 14),
            fraction in proptest::collection::vec(0u32..10, 0..12),
            dot in proptest::bool::weighted(0.8),
            t in proptest::sample::select(vec!["T", "t", " ", "x"]),
            zone in proptest::sample::select(vec!["Z", "z", "+00:00", "-03:30", ""]),
            sign in proptest::sample::select(vec!["", "+", "-"]),
        ) {
            let d: String = digits.iter().map(|n| char::from(b'0' + *n as u8)).collect();
            let f: String = fraction.iter().map(|n| char::from(b'0' + *n as u8)).collect();
            let s = format!(
                "{sign}{}-{}-{}{t}{}:{}:{}{}{f}{zone}",
                &d[0..4], &d[4..6], &d[6..8], &d[8..10], &d[10..12], &d[12..14], if dot { "." } else { "" }
            );
            proptest::prop_assert_eq!(rfc3339_utc(&s), chrono_utc(&s), "{}", s);
            let text = chrono_utc(&s).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            proptest::prop_assert_eq!(timestamp_text(&s, None), text, "{}", s);
        }

        /// Valid times of every day, hour and fraction width, as the generator above rarely
        /// makes them (a random month and day are seldom a date).
        #[test]
        fn a_valid_timestamp_is_read_as_chrono_reads_it(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            width in 0usize..10,
        ) {
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let whole = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            let f = format!("{nanos:09}");
            let s = if width == 0 { format!("{whole}Z") } else { format!("{whole}.{}Z", &f[..width]) };
            proptest::prop_assert_eq!(rfc3339_utc(&s), chrono_utc(&s), "{}", s);
            let text = chrono_utc(&s).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            proptest::prop_assert_eq!(timestamp_text(&s, None), text, "{}", s);
        }
    }
}
