//! Text for the page: HTML escaping, the `data-summary` elements, and numbers, sizes, times and
//! durations as a person reads them.

use std::fmt;

use crate::backends::cost::thousands;

/// Append formatted text to a `String` (which cannot fail, so the result is dropped).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}
pub(super) use w;

/// Text escaped for HTML content and attribute values.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// The attribute and content of an element showing the summary's value at a path:
/// `data-summary="PATH">TEXT`, for after an element's name.
pub(super) struct Value<'a>(pub(super) &'a str, pub(super) &'a str);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data-summary=\"{}\">{}", Esc(self.0), Esc(self.1))
    }
}

/// A count from the summary, in a `<span data-summary>`.
pub(super) struct Num<'a>(pub(super) &'a str, pub(super) u64);

impl fmt::Display for Num<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<span {}</span>", Value(self.0, &thousands(self.1)))
    }
}

/// A decimal from the summary, in a `<span data-summary>`.
pub(super) struct Dec<'a>(pub(super) &'a str, pub(super) f64);

impl fmt::Display for Dec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<span {}</span>", Value(self.0, &decimal(self.1)))
    }
}

/// Digits grouped by thousands with `,`, in a number written without them (`-1234.5`).
fn group(number: &str) -> String {
    let (sign, rest) = number.strip_prefix('-').map_or(("", number), |r| ("-", r));
    let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut out = String::from(sign);
    for (i, d) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A decimal to three significant digits (all of its whole part), grouped by thousands.
pub(super) fn decimal(x: f64) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let places = if x == 0.0 { 0 } else { (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize };
    group(&format!("{x:.places$}"))
}

/// A decimal in a few characters, for an axis: `950`, `12k`, `1.5M`.
pub(super) fn short(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Bytes in a unit a person reads: `512 B`, `1.2 MB`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An RFC 3339 time as a person reads it: `2026-12-02 12:09:49 UTC`.
pub(super) fn when(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A duration in ms as a person reads it: `850 ms`, `1.25 s`, `50 s`, `4 min 05 s`, `2 h 03 min`.
pub(super) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0 => "0 s".to_string(),
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms % 1000 == 0 && ms < 60_000 => format!("{} s", ms / 1000),
        ms if ms < 10_000 => format!("{:.2} s", ms as f64 / 1000.0),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        ms => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `ms`.
pub(super) fn round_step(ms: i64) -> i64 {
    let mut base = 1;
    loop {
        for m in [1, 2, 5] {
            if base * m >= ms {
                return base * m;
            }
        }
        base *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            Esc(r#"<a href="x">Tom & 'Jerry'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain é").to_string(), "plain é");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(decimal(85_034.7), "85,035");
        assert_eq!(decimal(123.456), "123");
        assert_eq!(decimal(12.345), "12.3");
        assert_eq!(decimal(0.0401), "0.0401");
        assert_eq!(decimal(-1234.6), "-1,235");
        assert_eq!(duration(65_000), "1 min 05 s");
        assert_eq!(duration(50_000), "50 s");
        assert_eq!(duration(1_250), "1.25 s");
        assert_eq!(round_step(230), 500);
    }
}
