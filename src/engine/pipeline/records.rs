//! A chunk's records decoded and taken through the pipeline in order: CSV rows typed by their
//! columns' rules where their text lies, and rows of a shared layout looked up in batches
//! whose keys the reference is told first.

use std::borrow::Cow;

use serde_json::Value;

use super::input::{CsvLayout, SharedLayout};
use super::{lookup_fault, parse_object, From, Input, Pipeline, Session};
use crate::backends::lookup::Found;
use crate::input::decode::{Body, CsvRow, RawRecord};
use crate::model::config::Format;
use crate::model::record::{key_text, Fault, Origin, Outcome, Record, Row, SinkItem, StreamPlace};

/// How many typed rows are looked up together: enough for their memory misses to overlap, few
/// enough that their rows are still in the cache when they are read.
const AHEAD: usize = 16;

/// A row typed and waiting for its lookup: where it is, and its values or why it was rejected.
struct Typed<'b> {
    number: u64,
    line: u64,
    raw: &'b [u8],
    values: std::result::Result<Vec<Value>, Fault>,
}

/// Where record `number` of `input`, on `line`, came from.
fn origin<'o>(input: &'o Input, place: Option<StreamPlace<'o>>, number: u64, line: u64, raw: &'o [u8]) -> Origin<'o> {
    Origin {
        job: input.job,
        input: &input.location,
        input_index: input.index,
        record: number,
        line,
        raw,
        stream: place,
    }
}

impl Pipeline {
    /// Decode a chunk's records and process each one.
    pub(super) fn chunk_records<'b>(
        &self,
        input: &Input,
        from: From,
        bytes: &'b [u8],
        place: Option<StreamPlace<'_>>,
        session: &mut Session<'_>,
        emit: &mut dyn FnMut(u64, Outcome),
    ) {
        if input.format == Format::Csv && input.layout.is_none() {
            return;
        }
        // Rows of a shared layout are typed as they come and looked up in batches: the
        // reference is told a batch's keys first (see `Reader::ahead`), so that the memory
        // misses of their rows overlap.
        let batched = match &input.layout {
            Some(layout @ CsvLayout { shared: Some(shared), .. }) if self.lookup.is_some() => Some((layout, shared)),
            _ => None,
        };
        let mut typed: Vec<Typed<'b>> = Vec::with_capacity(if batched.is_some() { AHEAD } else { 0 });
        crate::input::decode::for_each_record(input.format, &self.dialect, bytes, from, &mut |r: RawRecord<'_, 'b>| {
            if let (Some((layout, shared)), Body::Csv(row)) = (batched, &r.body) {
                let values = self.csv_values(layout, shared, row);
                typed.push(Typed { number: r.number, line: r.line, raw: r.raw, values });
                if typed.len() == AHEAD {
                    self.finish_typed(input, place, shared, &mut typed, session, emit);
                }
                return;
            }
            if let Some((_, shared)) = batched {
                self.finish_typed(input, place, shared, &mut typed, session, emit);
            }
            let origin = origin(input, place, r.number, r.line, r.raw);
            let outcome = match r.body {
                Body::Csv(row) => match &input.layout {
                    Some(layout @ CsvLayout { shared: Some(shared), .. }) => {
                        match self.csv_values(layout, shared, &row) {
                            Ok(values) => self.finish_shared(&origin, session, shared, values),
                            Err(f) => Outcome::Rejected(origin.reject(f)),
                        }
                    }
                    Some(layout) => match self.csv_fields(layout, &row) {
                        Ok(rec) => self.finish(&origin, session, rec),
                        Err(f) => Outcome::Rejected(origin.reject(f)),
                    },
                    None => return,
                },
                Body::Json(text) => {
                    match input.declared.as_ref().and_then(|d| Some((d, self.declared_values(text)?))) {
                        Some((declared, Ok(values))) => self.finish_shared(&origin, session, declared, values),
                        Some((_, Err(f))) => Outcome::Rejected(origin.reject(f)),
                        None => match parse_object(text, r.line) {
                            Ok(rec) => self.process(rec, &origin, session),
                            Err(f) => Outcome::Rejected(origin.reject(f)),
                        },
                    }
                }
            };
            emit(r.line, outcome);
        });
        if let Some((_, shared)) = batched {
            self.finish_typed(input, place, shared, &mut typed, session, emit);
        }
    }

    /// Look up and key the rows typed so far, in order, after telling the reference their
    /// keys.
    fn finish_typed(
        &self,
        input: &Input,
        place: Option<StreamPlace<'_>>,
        shared: &SharedLayout,
        typed: &mut Vec<Typed<'_>>,
        session: &mut Session<'_>,
        emit: &mut dyn FnMut(u64, Outcome),
    ) {
        if typed.is_empty() {
            return;
        }
        if let (Some(lookup), Some(s), Some(at)) = (&self.lookup, session.0.as_mut(), shared.lookup_key) {
            let keys: Vec<&str> = typed
                .iter()
                .filter_map(|t| match t.values.as_ref().ok()?.get(at)? {
                    Value::String(k) => Some(k.as_str()),
                    _ => None,
                })
                .collect();
            lookup.ahead(&keys, s);
        }
        for t in typed.drain(..) {
            let origin = origin(input, place, t.number, t.line, t.raw);
            let outcome = match t.values {
                Ok(values) => self.finish_shared(&origin, session, shared, values),
                Err(f) => Outcome::Rejected(origin.reject(f)),
            };
            emit(t.line, outcome);
        }
    }

    pub(super) fn csv_fields(&self, layout: &CsvLayout, row: &CsvRow<'_>) -> std::result::Result<Record, Fault> {
        let values = self.csv_typed(layout, row, 0)?;
        Ok(layout.names.iter().cloned().zip(values).collect())
    }

    /// A CSV row's typed values in a shared layout: its columns, then nulls for the fields
    /// enrichment adds.
    fn csv_values(
        &self,
        layout: &CsvLayout,
        shared: &SharedLayout,
        row: &CsvRow<'_>,
    ) -> std::result::Result<Vec<Value>, Fault> {
        let mut values = self.csv_typed(layout, row, shared.names.len() - layout.names.len())?;
        values.resize(shared.names.len(), Value::Null);
        Ok(values)
    }

    /// A CSV row's values, in column order, typed by the columns' rules (with room for
    /// `extra` more).
    fn csv_typed(&self, layout: &CsvLayout, row: &CsvRow<'_>, extra: usize) -> std::result::Result<Vec<Value>, Fault> {
        if row.len() != layout.names.len() {
            return Err(Fault::new(
                None,
                "fields",
                format!("expected {} fields, found {}", layout.names.len(), row.len()),
            ));
        }
        let mut values = Vec::with_capacity(row.len() + extra);
        if let Some(texts) = row.texts() {
            for (text, rule) in texts.zip(&layout.rules) {
                values.push(self.typed(*rule, text)?);
            }
            return Ok(values);
        }
        for ((field, rule), header) in row.iter().zip(&layout.rules).zip(&layout.headers) {
            let text = std::str::from_utf8(field)
                .map_err(|e| Fault::new(Some(header), "utf8", format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
            values.push(self.typed(*rule, text)?);
        }
        Ok(values)
    }

    /// One CSV field's value, typed by its column's rule, if it has one.
    pub(super) fn typed(&self, rule: Option<usize>, text: &str) -> std::result::Result<Value, Fault> {
        match rule {
            Some(i) => self.rules[i].apply_str(text),
            None => Ok(Value::String(text.to_string())),
        }
    }

    /// [`Pipeline::finish`] for a record in a shared layout (which has no schema and no
    /// transform): lookup, key.
    fn finish_shared(
        &self,
        origin: &Origin<'_>,
        session: &mut Session<'_>,
        shared: &SharedLayout,
        mut values: Vec<Value>,
    ) -> Outcome {
        if let (Some(lookup), Some(session)) = (&self.lookup, session.0.as_mut()) {
            let key = match shared.lookup_key.and_then(|i| values.get(i)) {
                Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
                Some(other) => Cow::Owned(key_text(other)),
                None => Cow::Borrowed(""),
            };
            match lookup.find(&key, session) {
                Found::Reject => return Outcome::Rejected(origin.reject(lookup_fault(lookup, &key))),
                Found::Values(Cow::Owned(found)) => {
                    for (&slot, v) in shared.lookup_slots.iter().zip(found) {
                        values[slot] = v;
                    }
                }
                Found::Values(Cow::Borrowed(found)) => {
                    for (&slot, v) in shared.lookup_slots.iter().zip(found) {
                        values[slot] = v.clone();
                    }
                }
                // The added fields are null already; columns keep their values.
                Found::Missing | Found::Nothing => {}
            }
        }
        let key = match self.key_from(origin, |i, _| shared.key_slots[i].and_then(|s| values.get(s))) {
            Ok(key) => key,
            Err(f) => return Outcome::Rejected(origin.reject(f)),
        };
        let item = SinkItem {
            key,
            job: origin.job,
            seq: origin.seq(),
            record: Row::Shared { names: shared.names.clone(), values },
        };
        match self.sink_fault(&item).or_else(|| self.output_fault(&item.record)) {
            None => Outcome::Written(item),
            Some(f) => Outcome::Rejected(origin.reject(f)),
        }
    }
}
