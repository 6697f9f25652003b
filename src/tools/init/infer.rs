//! One column's type: every candidate type tried on every value of the sample (the rule `run`
//! applies), and what the values say about emptiness and length.

use std::collections::HashSet;

use serde_json::Value;

use crate::model::column::ColumnRule;
use crate::model::config::{ColumnConfig, ColumnType};

/// One column as the sample shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnGuess {
    /// Its name in the header (or the JSON field).
    pub name: String,
    /// The most specific type every value fits.
    pub kind: ColumnType,
    /// The date or timestamp format (`None` for a timestamp: RFC 3339).
    pub format: Option<String>,
    /// Why this type or format, when another was close: the formats every value also fits,
    /// the values that ruled others out.
    pub why: Vec<String>,
    /// Whether no value was empty or missing.
    pub required: bool,
    /// Values that were not empty.
    pub values: usize,
    /// The longest value, in characters.
    pub longest: usize,
    /// The first value that was not empty.
    pub example: Option<String>,
    /// Whether every value was distinct (a key, perhaps).
    pub distinct: bool,
    /// JSON: whether a value is an object or an array (such a field is left undeclared).
    pub nested: bool,
    /// The most digits before and after the point of a decimal value.
    pub decimal_digits: (u32, u32),
}

impl ColumnGuess {
    /// `precision` and `scale` for a decimal column: the sample's decimals, and two digits
    /// more before the point than its largest value has (a later file's slightly larger value
    /// is not a reject), within the 15 digits a value keeps exactly; none when the sample's
    /// values need more.
    pub fn precision_scale(&self) -> Option<(u32, u32)> {
        let (whole, frac) = self.decimal_digits;
        let max = crate::model::config::MAX_DECIMAL_PRECISION;
        (self.kind == ColumnType::Decimal && whole + frac <= max).then(|| ((whole + frac + 2).clamp(1, max), frac))
    }

    /// `max_length` for the job file: for text columns, the smallest of 10, 20, 50, 100, 200,
    /// 500, … that is at least 1.25 times the longest value, so that a later file's slightly
    /// longer value is not a reject. Typed columns get none: their type bounds their text.
    pub fn max_length(&self) -> Option<usize> {
        if self.kind != ColumnType::String || self.longest == 0 {
            return None;
        }
        let want = self.longest + self.longest.div_ceil(4);
        let mut step = 10;
        loop {
            for m in [1, 2, 5] {
                if step * m >= want {
                    return Some(step * m);
                }
            }
            step = step.saturating_mul(10);
        }
    }

    /// The column as a job file declares it.
    pub fn config(&self) -> ColumnConfig {
        ColumnConfig {
            name: self.name.clone(),
            rename: None,
            kind: self.kind,
            format: self.format.clone(),
            required: self.required,
            max_length: self.max_length(),
            precision: self.precision_scale().map(|p| p.0),
            scale: self.precision_scale().map(|p| p.1).filter(|s| *s > 0),
            round: false,
        }
    }
}

/// The types a column may have, tried in this order; the first that accepts every value
/// wins. Dates and timestamps go ISO first, then month first (US), then day first: the order
/// in which a column that fits several (`03/04/21`) is read, with a comment saying so.
pub const CANDIDATES: &[(ColumnType, Option<&str>)] = &[
    (ColumnType::Boolean, None),
    (ColumnType::Integer, None),
    (ColumnType::Decimal, None),
    (ColumnType::Date, Some("%Y-%m-%d")),
    (ColumnType::Date, Some("%Y/%m/%d")),
    (ColumnType::Date, Some("%m/%d/%Y")),
    (ColumnType::Date, Some("%m/%d/%y")),
    (ColumnType::Date, Some("%m-%d-%Y")),
    (ColumnType::Date, Some("%d/%m/%Y")),
    (ColumnType::Date, Some("%d/%m/%y")),
    (ColumnType::Date, Some("%d-%m-%Y")),
    (ColumnType::Date, Some("%d.%m.%Y")),
    (ColumnType::Date, Some("%d.%m.%y")),
    (ColumnType::Date, Some("%d %b %Y")),
    (ColumnType::Date, Some("%b %d, %Y")),
    (ColumnType::Timestamp, None),
    (ColumnType::Timestamp, Some("%Y-%m-%dT%H:%M:%S%.f")),
    (ColumnType::Timestamp, Some("%Y-%m-%d %H:%M:%S%.f")),
    (ColumnType::Timestamp, Some("%Y-%m-%d %H:%M")),
    (ColumnType::Timestamp, Some("%m/%d/%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%m/%d/%Y %H:%M")),
    (ColumnType::Timestamp, Some("%m/%d/%y %H:%M")),
    (ColumnType::Timestamp, Some("%d/%m/%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%d/%m/%Y %H:%M")),
    (ColumnType::Timestamp, Some("%d.%m.%Y %H:%M:%S")),
    (ColumnType::Timestamp, Some("%d.%m.%Y %H:%M")),
];

/// A decimal keeps about 15 significant digits (a 64-bit float): a longer number stays text.
const MAX_DECIMAL_DIGITS: usize = 15;

/// How a candidate type is named in comments.
fn candidate_name(kind: ColumnType, format: Option<&str>) -> String {
    match (kind, format) {
        (_, Some(f)) => f.to_string(),
        (ColumnType::Timestamp, None) => "RFC 3339".into(),
        (kind, None) => type_name(kind),
    }
}

/// A type as the job file's `type` key names it.
pub(super) fn type_name(kind: ColumnType) -> String {
    format!("{kind:?}").to_lowercase()
}

/// One candidate type's standing in a column.
struct Trial {
    kind: ColumnType,
    format: Option<&'static str>,
    rule: ColumnRule,
    fits_first: bool,
    ruled_out_by: Option<String>,
}

impl Trial {
    fn new(kind: ColumnType, format: Option<&'static str>) -> Self {
        let config = ColumnConfig {
            name: String::new(),
            rename: None,
            kind,
            format: format.map(str::to_string),
            required: false,
            max_length: None,
            precision: None,
            scale: None,
            round: false,
        };
        Trial { kind, format, rule: ColumnRule::from(&config), fits_first: false, ruled_out_by: None }
    }

    fn alive(&self) -> bool {
        self.ruled_out_by.is_none()
    }

    /// Whether the column's rule takes `value` — and, beyond it, whether the type is the
    /// right reading of it: a leading zero (`007`) is a code, not a number; a decimal with
    /// more digits than a float keeps would lose some; a four-digit year is written with four
    /// digits (chrono reads `14` as the year 14).
    fn fits(&self, value: &Value) -> bool {
        let Ok(out) = self.rule.apply(value.clone()) else { return false };
        let text = value.as_str().map(str::trim);
        match self.kind {
            ColumnType::Integer => !text.is_some_and(leading_zero),
            ColumnType::Decimal => !text.is_some_and(|t| leading_zero(t) || significant_digits(t) > MAX_DECIMAL_DIGITS),
            ColumnType::Date | ColumnType::Timestamp => out.as_str().is_some_and(four_digit_year),
            ColumnType::String | ColumnType::Boolean => true,
        }
    }
}

fn leading_zero(t: &str) -> bool {
    let digits = t.trim_start_matches(['+', '-']).as_bytes();
    matches!(digits, [b'0', b'0'..=b'9', ..])
}

fn significant_digits(t: &str) -> usize {
    let mantissa = t.split(['e', 'E']).next().unwrap_or(t);
    mantissa.chars().filter(char::is_ascii_digit).skip_while(|&c| c == '0').count()
}

/// Whether a normalised date or timestamp (`YYYY-MM-DD…`) has a year from 1000 to 9999.
fn four_digit_year(iso: &str) -> bool {
    iso.get(..4).and_then(|y| y.parse::<u32>().ok()).is_some_and(|y| y >= 1000) && iso.as_bytes().get(4) == Some(&b'-')
}

/// A column's values seen so far, and which candidate types still fit them all.
/// A column's values seen so far, and which candidate types still fit them all.
pub struct ColumnTally {
    pub(super) name: String,
    trials: Vec<Trial>,
    values: usize,
    seen: usize,
    longest: usize,
    example: Option<String>,
    /// Whether a boolean value was a word (`true`, `no`, …) rather than `0` or `1`.
    boolean_word: bool,
    distinct: Option<HashSet<String>>,
    nested: bool,
    decimal_digits: (u32, u32),
}

impl ColumnTally {
    /// A column named `name`, with no values yet.
    pub fn new(name: &str) -> Self {
        ColumnTally {
            name: name.to_string(),
            trials: CANDIDATES.iter().map(|&(kind, format)| Trial::new(kind, format)).collect(),
            values: 0,
            seen: 0,
            longest: 0,
            example: None,
            boolean_word: false,
            distinct: Some(HashSet::new()),
            nested: false,
            decimal_digits: (0, 0),
        }
    }

    /// Count one record's value (`None`: the field is missing).
    pub fn add(&mut self, value: Option<&Value>) {
        self.seen += 1;
        let value = match value {
            None | Some(Value::Null) => return,
            Some(Value::String(s)) if s.is_empty() => return,
            Some(v) => v,
        };
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.values += 1;
        self.longest = self.longest.max(text.chars().count());
        if let Some((whole, frac)) = crate::model::column::decimal_digits(&text) {
            self.decimal_digits = (self.decimal_digits.0.max(whole), self.decimal_digits.1.max(frac));
        }
        self.nested |= value.is_object() || value.is_array();
        self.boolean_word |= value.is_boolean() || value.as_str().is_some_and(|s| !matches!(s.trim(), "0" | "1"));
        if let Some(set) = &mut self.distinct {
            if !set.insert(text.clone()) {
                self.distinct = None;
            }
        }
        let first = self.example.is_none();
        for t in self.trials.iter_mut().filter(|t| t.alive()) {
            let fits = t.fits(value);
            if first {
                t.fits_first = fits;
            }
            if !fits {
                t.ruled_out_by = Some(shown(&text));
            }
        }
        if first {
            self.example = Some(text);
        }
    }

    /// The column's type: the first candidate that took every value (a boolean only when a
    /// value was a word: a column of 0 and 1 is an integer), else text.
    pub fn guess(self) -> ColumnGuess {
        let chosen = match self.nested || self.values == 0 {
            true => None,
            false => self.trials.iter().position(|t| t.alive() && (t.kind != ColumnType::Boolean || self.boolean_word)),
        };
        let why = self.why(chosen);
        let (kind, format) =
            chosen.map_or((ColumnType::String, None), |i| (self.trials[i].kind, self.trials[i].format));
        ColumnGuess {
            name: self.name,
            kind,
            format: format.map(str::to_string),
            why,
            required: self.seen > 0 && self.values == self.seen,
            values: self.values,
            longest: self.longest,
            example: self.example,
            distinct: self.values > 1 && self.distinct.is_some(),
            nested: self.nested,
            decimal_digits: self.decimal_digits,
        }
    }

    /// Why the chosen candidate, when others were close: for a date or timestamp, the formats
    /// every value also fits (the choice is by [`CANDIDATES`]' order), or the value that ruled
    /// out the same format with day and month swapped; for text, the value that ruled out the
    /// type the first value had.
    fn why(&self, chosen: Option<usize>) -> Vec<String> {
        let name = |t: &Trial| candidate_name(t.kind, t.format);
        let Some(i) = chosen else {
            let ruled_out = self.trials.iter().filter(|t| t.fits_first && t.kind != ColumnType::Boolean);
            return ruled_out
                .take(1)
                .filter_map(|t| t.ruled_out_by.as_ref().map(|v| format!("{v} rules out {}, so it is text.", name(t))))
                .collect();
        };
        let c = &self.trials[i];
        let mut why = Vec::new();
        if c.kind == ColumnType::Integer && self.trials[0].alive() {
            why.push("only 0 and 1 in the sample: make it a boolean if it is a flag.".to_string());
        }
        if !matches!(c.kind, ColumnType::Date | ColumnType::Timestamp) {
            return why;
        }
        let also: Vec<String> = self
            .trials
            .iter()
            .enumerate()
            .filter(|&(j, t)| j != i && t.kind == c.kind && t.alive())
            .map(|(_, t)| name(t))
            .collect();
        if !also.is_empty() {
            why.push(format!(
                "ambiguous: every value also fits {}; {} is chosen because no value tells them apart, and \
                 init prefers ISO, then month first (US), then day first.",
                also.join(", "),
                name(c)
            ));
        }
        // The confusion that matters is day and month swapped: say which value settled it.
        let swapped = c.format.map(|f| f.replace("%m", "\0").replace("%d", "%m").replace('\0', "%d"));
        let other = self.trials.iter().find(|t| t.kind == c.kind && t.format.map(str::to_string) == swapped);
        if let Some((t, v)) = other.and_then(|t| Some((t, t.ruled_out_by.as_ref()?))) {
            why.push(format!("{v} rules out {}.", name(t)));
        }
        why
    }
}

/// A value as comments show it: quoted and escaped, cut at 40 characters.
pub(super) fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guess(values: &[&str]) -> ColumnGuess {
        let mut t = ColumnTally::new("c");
        values.iter().for_each(|v| t.add(Some(&Value::String(v.to_string()))));
        t.guess()
    }

    fn kind_and_format(values: &[&str]) -> (ColumnType, Option<String>) {
        let g = guess(values);
        (g.kind, g.format)
    }

    #[test]
    fn a_column_is_the_first_type_that_takes_every_value_and_else_text() {
        use ColumnType::*;
        assert_eq!(kind_and_format(&["1", "-20", "+3"]), (Integer, None));
        assert_eq!(kind_and_format(&["1", "2.5", "1e3"]), (Decimal, None));
        assert_eq!(kind_and_format(&["yes", "no", "TRUE"]), (Boolean, None));
        assert_eq!(kind_and_format(&["2014-10-23", "2015-01-02"]), (Date, Some("%Y-%m-%d".into())));
        assert_eq!(kind_and_format(&["2014-10-23T08:30:00Z", "2014-10-23T08:30:00+02:00"]), (Timestamp, None));
        assert_eq!(
            kind_and_format(&["2014-10-23 08:30:00", "2014-10-23 08:30:00.250"]),
            (Timestamp, Some("%Y-%m-%d %H:%M:%S%.f".into()))
        );
        assert_eq!(kind_and_format(&["23 Oct 2014"]), (Date, Some("%d %b %Y".into())));
        assert_eq!(kind_and_format(&["1", "two"]), (String, None));
        assert_eq!(kind_and_format(&[]), (String, None));
    }

    #[test]
    fn a_number_that_would_lose_its_zeros_or_digits_stays_text() {
        assert_eq!(guess(&["007", "12"]).kind, ColumnType::String, "a leading zero is a code");
        assert_eq!(guess(&["0", "-0.5", "0.25"]).kind, ColumnType::Decimal, "a zero before the point is fine");
        assert_eq!(guess(&["12345678901234567890"]).kind, ColumnType::String, "over i64, and 20 digits");
        assert_eq!(guess(&["3.14159265358979"]).kind, ColumnType::Decimal);
        assert_eq!(guess(&["3.141592653589793"]).kind, ColumnType::String, "16 digits");
    }

    #[test]
    fn a_column_of_0_and_1_is_an_integer_with_a_note_and_words_make_it_boolean() {
        let g = guess(&["0", "1", "1"]);
        assert_eq!(g.kind, ColumnType::Integer);
        assert!(g.why[0].contains("make it a boolean"), "{:?}", g.why);
        assert_eq!(guess(&["0", "1", "no"]).kind, ColumnType::Boolean);
    }

    #[test]
    fn dates_that_fit_month_first_and_day_first_are_read_month_first_with_a_comment_saying_so() {
        let g = guess(&["03/04/21", "11/12/20", "01/02/19"]);
        assert_eq!((g.kind, g.format.as_deref()), (ColumnType::Date, Some("%m/%d/%y")));
        assert_eq!(g.why.len(), 1, "{:?}", g.why);
        assert!(g.why[0].starts_with("ambiguous: every value also fits %d/%m/%y; %m/%d/%y is chosen"), "{:?}", g.why);
        assert!(g.why[0].contains("month first (US), then day first"), "{:?}", g.why);
    }

    #[test]
    fn a_part_over_12_decides_between_month_first_and_day_first_and_says_so() {
        let g = guess(&["03/04/2021", "13/04/2021", "01/02/2019"]);
        assert_eq!(g.format.as_deref(), Some("%d/%m/%Y"));
        assert_eq!(g.why, ["\"13/04/2021\" rules out %m/%d/%Y."]);
        let g = guess(&["10/8/14", "2/22/15"]);
        assert_eq!(g.format.as_deref(), Some("%m/%d/%y"));
        assert_eq!(g.why, ["\"2/22/15\" rules out %d/%m/%y."]);
    }

    #[test]
    fn a_two_digit_year_is_not_read_as_a_four_digit_one() {
        // chrono's %Y takes `14` as the year 14.
        assert_eq!(guess(&["10/23/14"]).format.as_deref(), Some("%m/%d/%y"));
        assert_eq!(guess(&["10/23/2014"]).format.as_deref(), Some("%m/%d/%Y"));
        assert_eq!(guess(&["10/23/14", "10/23/2014"]).kind, ColumnType::String);
    }

    #[test]
    fn text_says_which_value_ruled_out_the_type_the_first_value_had() {
        let g = guess(&["1", "2", "n/a", "4"]);
        assert_eq!(g.kind, ColumnType::String);
        assert_eq!(g.why, ["\"n/a\" rules out integer, so it is text."]);
    }

    #[test]
    fn required_longest_example_and_distinct_are_counted_over_values_that_are_not_empty() {
        let g = guess(&["ab", "", "abcé"]);
        assert!(!g.required);
        assert_eq!((g.values, g.longest, g.example.as_deref(), g.distinct), (2, 4, Some("ab"), true));
        let mut t = ColumnTally::new("j");
        for v in [Some(json!("x")), None, Some(Value::Null), Some(json!("x"))] {
            t.add(v.as_ref());
        }
        let g = t.guess();
        assert!(!g.required && !g.distinct && g.values == 2);
        assert!(guess(&["a", "b"]).required);
    }

    #[test]
    fn max_length_rounds_the_longest_up_to_a_round_number_with_room() {
        let text = |longest| ColumnGuess { longest, ..guess(&["x"]) };
        let rounded: Vec<_> = [1, 8, 9, 16, 32, 33, 40, 41, 81, 401].map(|n| text(n).max_length().unwrap()).into();
        assert_eq!(rounded, [10, 10, 20, 20, 50, 50, 50, 100, 200, 1000]);
        assert_eq!(guess(&["12"]).max_length(), None, "a type bounds its text");
        assert_eq!(guess(&[""]).max_length(), None, "nothing to go by");
    }

    #[test]
    fn a_decimal_column_gets_the_samples_scale_and_two_more_digits_before_the_point() {
        let g = guess(&["1.5", "142509.72", "-3"]);
        assert_eq!((g.kind, g.decimal_digits, g.precision_scale()), (ColumnType::Decimal, (6, 2), Some((10, 2))));
        assert_eq!((g.config().precision, g.config().scale), (Some(10), Some(2)));
        assert_eq!(guess(&["1", "2"]).precision_scale(), None, "an integer column");
        assert_eq!(guess(&["0.1234567890123456"]).precision_scale(), None, "more digits than a value keeps");
    }
}
