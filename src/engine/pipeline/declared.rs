//! JSON records whose keys are exactly the declared columns, in their order: read straight
//! into the values of a shared layout (no map, no key strings), then typed by position. Any
//! other record (a key more, less, repeated or elsewhere, a line that is not an object or not
//! JSON) is read the general way, which gives the same row, reject and message for these.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::input::SharedLayout;
use super::Pipeline;
use crate::model::record::Fault;

impl Pipeline {
    /// The shared layout a JSON input's records are read into when their keys are the declared
    /// columns in order: the columns' output names. None when a step needs each record as a map
    /// (see [`Pipeline::shared_layout`]), when a reference enriches records, or when nothing is
    /// declared.
    pub(super) fn declared_layout(&self) -> Option<SharedLayout> {
        if self.rules.is_empty() || self.lookup.is_some() || self.by_name.len() != self.rules.len() {
            return None;
        }
        let names: Vec<String> = self.rules.iter().map(|r| r.out.clone()).collect();
        self.shared_layout(&names)
    }

    /// A JSON record's typed values in the declared layout, when its keys are the declared
    /// columns in order; `None` for any other text (read it the general way).
    pub(super) fn declared_values(&self, text: &[u8]) -> Option<std::result::Result<Vec<Value>, Fault>> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let values = Declared { pipeline: self }.deserialize(&mut de).ok()??;
        de.end().ok()?;
        // Typed once the whole text is known to be JSON: a malformed record is rejected as
        // malformed, not for its first value, as the general way does.
        Some(values.into_iter().zip(self.rules.iter()).map(|(v, rule)| rule.apply(v)).collect())
    }
}

/// Reads an object whose keys are the declared columns' input names, in order, into their
/// values; `None` as soon as a key is another.
struct Declared<'p> {
    pipeline: &'p Pipeline,
}

impl<'de> DeserializeSeed<'de> for Declared<'_> {
    type Value = Option<Vec<Value>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Declared<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of the declared columns")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let rules = &self.pipeline.rules;
        let mut values = Vec::with_capacity(rules.len());
        loop {
            let expected = rules.get(values.len()).map(|r| r.name.as_str());
            match map.next_key_seed(KeyIs(expected))? {
                None => break,
                Some(true) => values.push(map.next_value::<Value>()?),
                // Left for the general way, which reads it again.
                Some(false) => return Err(serde::de::Error::custom("not the declared columns")),
            }
        }
        Ok((values.len() == rules.len()).then_some(values))
    }
}

/// Reads a key and says whether it is the expected one.
struct KeyIs<'n>(Option<&'n str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(self.0 == Some(key))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::engine::pipeline::{From, Input};
    use crate::model::config::{Format, JobConfig, OutputFormat};
    use crate::model::record::Outcome;

    /// The bench's events, typed and keyed, with output fields.
    const EVENTS: &str = r#"
[input]
format = "jsonl"
[[columns]]
name = "id"
type = "integer"
required = true
[[columns]]
name = "vendor"
required = true
[[columns]]
name = "ts"
type = "timestamp"
required = true
[[columns]]
name = "amount"
type = "decimal"
[[columns]]
name = "note"
[output]
fields = ["id", "vendor", "ts", "amount", "note"]
[key]
fields = ["id"]
"#;

    /// A column renamed, no output fields, no key.
    const RENAMED: &str = r#"
[input]
format = "jsonl"
[[columns]]
name = "id"
as = "vendor"
type = "integer"
[[columns]]
name = "vendor"
as = "seller"
required = true
[[columns]]
name = "amount"
type = "boolean"
"#;

    fn pipeline(job: &str) -> Pipeline {
        let spec = JobConfig::from_toml(job, "test.toml").unwrap().validate(std::path::Path::new(".")).unwrap();
        Pipeline::new(&spec, None, spec.output_fields.clone())
    }

    /// What became of each record of `text`: its line, then its item's key, position and
    /// fields in order with every encoding of its row, or its reject.
    fn outcomes(p: &Pipeline, input: &Input, text: &str) -> Vec<(u64, String)> {
        let fields = ["id", "vendor", "ts", "amount", "note", "seller"].map(String::from).to_vec();
        let mut out = Vec::new();
        p.each_record(input, From { record: 1, line: 1 }, text.as_bytes(), &mut |line, outcome| {
            let said = match outcome {
                Outcome::Written(item) => {
                    let mut encoded = Vec::new();
                    for (format, fields) in [
                        (OutputFormat::Jsonl, None),
                        (OutputFormat::Csv, Some(fields.clone())),
                        (OutputFormat::Parquet, Some(fields.clone())),
                    ] {
                        let mut e = p.encoder_for(format, fields);
                        e.encode(&item.record);
                        encoded.push(String::from_utf8(e.finish()).unwrap());
                    }
                    format!("{} {} {} {encoded:?}", item.key, item.seq, serde_json::to_string(&item.record).unwrap())
                }
                Outcome::Rejected(r) => format!("{r:?}"),
                Outcome::Filtered => "filtered".into(),
            };
            out.push((line, said));
        })
        .unwrap();
        out
    }

    /// A record's text: its fields in the declared order (most of them), or any keys at all,
    /// or a line that is not an object.
    fn line() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            (0u64..1 << 60).prop_map(|n| n.to_string()),
            Just("-3.25".to_string()),
            Just("1e400".to_string()),
            Just("12345678901234567890123".to_string()),
            Just(r#""12""#.to_string()),
            Just(r#""vendor-07""#.to_string()),
            Just(r#""2025-12-01T10:20:30Z""#.to_string()),
            Just(r#""2025-12-01 10:20:30.5""#.to_string()),
            Just(r#""12.50""#.to_string()),
            Just(r#""""#.to_string()),
            Just(r#""caf\u00e9 \"x\"""#.to_string()),
            Just("[1,{\"a\":[]}]".to_string()),
            Just(r#"{"id":1,"note":null}"#.to_string()),
        ];
        let key = prop_oneof![
            Just("id"),
            Just("vendor"),
            Just("ts"),
            Just("amount"),
            Just("note"),
            Just("seller"),
            Just("extra"),
            Just("\\u0069d"),
        ];
        let declared = proptest::collection::vec(value.clone(), 5).prop_map(|v| {
            let names = ["id", "vendor", "ts", "amount", "note"];
            let fields: Vec<String> = names.iter().zip(&v).map(|(k, v)| format!("\"{k}\": {v}")).collect();
            format!("{{{}}}", fields.join(","))
        });
        let renamed = proptest::collection::vec(value.clone(), 3).prop_map(|v| {
            let names = ["id", "vendor", "amount"];
            let fields: Vec<String> = names.iter().zip(&v).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!(" {{{}}} ", fields.join(" , "))
        });
        let any = proptest::collection::vec((key, value), 0..8).prop_map(|kv| {
            let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(","))
        });
        let odd = prop_oneof![
            Just("[1,2]".to_string()),
            Just(r#""text""#.to_string()),
            Just("{\"id\":1,\"vendor\":\"v\"".to_string()),
            Just("{\"id\":1} {}".to_string()),
            Just("{\"id\":1,}".to_string()),
            Just("42".to_string()),
        ];
        prop_oneof![4 => declared, 2 => renamed, 3 => any, 1 => odd]
    }

    proptest! {
        /// Whatever the records' keys and values, reading them straight into the declared
        /// layout gives what the general way gives: the same rows in the same field order,
        /// the same encodings, keys and positions, the same rejects with the same messages.
        #[test]
        fn records_read_into_the_declared_layout_are_what_the_general_way_makes_of_them(
            lines in proptest::collection::vec(line(), 1..12),
        ) {
            let text = lines.join("\n");
            for job in [EVENTS, RENAMED] {
                let p = pipeline(job);
                let fast = p.input(1, 0, "events.jsonl", Format::Jsonl, None).unwrap();
                prop_assert!(fast.declared.is_some());
                let general = Input { declared: None, ..fast.clone() };
                prop_assert_eq!(outcomes(&p, &fast, &text), outcomes(&p, &general, &text));
            }
        }
    }

    #[test]
    fn records_of_the_declared_keys_in_order_take_the_declared_layout_and_others_do_not() {
        let p = pipeline(EVENTS);
        let ok = br#"{"id": 7, "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n"}"#;
        assert!(matches!(p.declared_values(ok), Some(Ok(_))));
        let bad_type = br#"{"id": "x", "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n"}"#;
        assert!(matches!(p.declared_values(bad_type), Some(Err(_))));
        for other in [
            &br#"{"vendor": "v", "id": 7, "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n"}"#[..],
            br#"{"id": 7, "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5}"#,
            br#"{"id": 7, "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n", "x": 1}"#,
            br#"{"id": 7, "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n", "id": 8}"#,
            br#"{"id": "x", "vendor": "v", "ts": "2025-12-01T00:00:00Z", "amount": 1.5, "note": "n""#,
            b"[1]",
        ] {
            assert!(p.declared_values(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        let with_transform = format!("transform = ['.']\n{EVENTS}");
        let p = pipeline(&with_transform);
        assert!(p.input(1, 0, "events.jsonl", Format::Jsonl, None).unwrap().declared.is_none());
    }
}
