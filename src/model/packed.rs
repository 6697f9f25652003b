//! Values packed into bytes: a tag byte, then 8 bytes for a number, or a length (u32) and
//! UTF-8 for text (and, as JSON text, for an array or an object). The reference's rows in
//! memory and in a database file, a kept reference on disk, and a Parquet stream's typed rows
//! all hold their values so; a [`Packed`] reads one back where it lies.

use serde_json::{Number, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const I64: u8 = 3;
const U64: u8 = 4;
const F64: u8 = 5;
const TEXT: u8 = 6;
const JSON: u8 = 7;
/// A field the record lacks (only typed rows write it; a kept reference never holds it, so
/// its files read as they did).
const ABSENT: u8 = 8;

/// Append `v` (`None`: a field the record lacks).
pub fn write(v: Option<&Value>, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, tag: u8, s: &[u8]| {
        out.push(tag);
        // A value is far below 4 GiB (a record is at most a few MiB).
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    };
    match v {
        None => out.push(ABSENT),
        Some(Value::Null) => out.push(NULL),
        Some(Value::Bool(b)) => out.push(if *b { TRUE } else { FALSE }),
        Some(Value::Number(n)) => {
            let (tag, bits) = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (I64, i as u64),
                (None, Some(u)) => (U64, u),
                (None, None) => (F64, n.as_f64().unwrap_or(f64::NAN).to_bits()),
            };
            out.push(tag);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Some(Value::String(s)) => text(out, TEXT, s.as_bytes()),
        Some(other) => text(out, JSON, other.to_string().as_bytes()),
    }
}

/// One packed value, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Packed<'a> {
    /// A field the record lacks.
    Absent,
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number that is an `i64`.
    I64(i64),
    /// A number that is a `u64` above `i64::MAX`.
    U64(u64),
    /// Any other number.
    F64(f64),
    /// A string.
    Text(&'a str),
    /// An array or an object, as JSON text.
    Json(&'a str),
}

impl<'a> Packed<'a> {
    /// The value at the start of `bytes`, and the bytes after it; `None` if they do not start
    /// with one whole (an unknown tag, a value cut short, text that is not UTF-8).
    pub fn read(bytes: &'a [u8]) -> Option<(Packed<'a>, &'a [u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let eight = |rest: &'a [u8]| -> Option<(u64, &'a [u8])> {
            let (b, rest) = rest.split_at_checked(8)?;
            Some((u64::from_le_bytes(b.try_into().ok()?), rest))
        };
        let text = |rest: &'a [u8]| -> Option<(&'a str, &'a [u8])> {
            let (n, rest) = rest.split_at_checked(4)?;
            let (s, rest) = rest.split_at_checked(u32::from_le_bytes(n.try_into().ok()?) as usize)?;
            Some((std::str::from_utf8(s).ok()?, rest))
        };
        Some(match tag {
            ABSENT => (Packed::Absent, rest),
            NULL => (Packed::Null, rest),
            FALSE | TRUE => (Packed::Bool(tag == TRUE), rest),
            I64 => eight(rest).map(|(v, rest)| (Packed::I64(v as i64), rest))?,
            U64 => eight(rest).map(|(v, rest)| (Packed::U64(v), rest))?,
            F64 => eight(rest).map(|(v, rest)| (Packed::F64(f64::from_bits(v)), rest))?,
            TEXT => text(rest).map(|(s, rest)| (Packed::Text(s), rest))?,
            JSON => text(rest).map(|(s, rest)| (Packed::Json(s), rest))?,
            _ => return None,
        })
    }

    /// The JSON value it was packed from (`None`: absent).
    pub fn value(self) -> Option<Value> {
        Some(match self {
            Packed::Absent => return None,
            Packed::Null => Value::Null,
            Packed::Bool(b) => Value::Bool(b),
            Packed::I64(i) => Value::Number(i.into()),
            Packed::U64(u) => Value::Number(u.into()),
            Packed::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Packed::Text(s) => Value::String(s.to_string()),
            Packed::Json(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_of_every_kind_read_back_as_they_were_written_and_a_cut_one_is_none() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(-3),
            json!(u64::MAX),
            json!(2.5),
            json!("é,x"),
            json!([1, {"a": 2}]),
        ];
        let mut out = Vec::new();
        for v in &values {
            write(Some(v), &mut out);
        }
        write(None, &mut out);
        let mut rest = &out[..];
        for v in &values {
            let (p, after) = Packed::read(rest).unwrap();
            assert_eq!(p.value().as_ref(), Some(v));
            rest = after;
        }
        assert_eq!(Packed::read(rest), Some((Packed::Absent, &[][..])));
        // A value cut anywhere, or text that is not UTF-8, is not one.
        let mut one = Vec::new();
        write(Some(&json!("text")), &mut one);
        assert!((0..one.len()).all(|n| Packed::read(&one[..n]).is_none()));
        assert_eq!(Packed::read(&[TEXT, 1, 0, 0, 0, 0xff]), None);
        assert_eq!(Packed::read(&[99]), None);
    }
}
