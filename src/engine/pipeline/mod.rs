//! The record engine: a record is typed by its declared columns, validated (JSON Schema),
//! transformed (jq), enriched (lookup) and keyed, one at a time ([`Pipeline::process`]); kept
//! records are encoded by an [`Encoder`]. An [`Input`] says how one input is read
//! ([`Pipeline::input`]); [`Pipeline::run_chunk`] drives a piece of it through the steps.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::backends::lookup::{LookupSession, LookupTable};
use crate::backends::sink::{Sink, SinkLimits};
use crate::engine::spec::JobSpec;
use crate::error::{Error, Result};
use crate::input::decode::{Body, CsvDialect, RawRecord};
use crate::model::column::ColumnRule;
use crate::model::config::{ColumnType, OutputFormat};
use crate::model::record::{json_kind, key_text, Counts, Fault, Origin, Outcome, Record, Row, SinkItem, StreamPlace};
use crate::model::transform::Transform;

mod declared;
mod encoder;
mod input;
mod records;

pub use encoder::Encoder;
pub use input::{From, Input};

/// The most columns a CSV header may name: a wider one is most often not a header at all (a
/// binary file, a wrong delimiter), and every record would carry them all.
pub const MAX_COLUMNS: usize = 10_000;

/// Receives batches of kept records (item key, record) for the sink.
pub type SendBatch<'a> = dyn FnMut(Vec<SinkItem>) + 'a;

/// What processing a chunk produced, before anything is written.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    /// The encoded output part (no header).
    pub output: Vec<u8>,
    /// The rejects part, JSON Lines.
    pub rejects: Vec<u8>,
    /// Counts.
    pub counts: Counts,
}

impl ChunkOutput {
    /// Add `next`'s output, rejects and counts after this one's (parts have no header, so
    /// they follow one another).
    pub fn append(&mut self, next: ChunkOutput) {
        if self.output.is_empty() {
            self.output = next.output;
        } else {
            self.output.extend_from_slice(&next.output);
        }
        self.rejects.extend_from_slice(&next.rejects);
        self.counts.merge(&next.counts);
    }
}

/// Per-run lookup state for [`Pipeline::process`]: open one per chunk (or per batch of a
/// stream) with [`Pipeline::session`]. A backend error met while looking up is kept here and
/// fails the chunk (see [`Session::take_error`]) instead of rejecting records.
pub struct Session<'a>(Option<LookupSession<'a>>);

impl Session<'_> {
    /// The first backend error met, if any.
    pub fn take_error(&mut self) -> Option<Error> {
        self.0.as_mut().and_then(|s| s.take_error())
    }
}

/// Everything a worker needs to run records through, built once per job from its spec.
pub struct Pipeline {
    rules: Arc<[ColumnRule]>,
    by_name: HashMap<String, usize>,
    schema: Option<Arc<jsonschema::Validator>>,
    transforms: Arc<[Transform]>,
    /// How many of `transforms` run before the lookup; the rest run after it.
    enrich_at: usize,
    lookup: Option<Arc<LookupTable>>,
    key_fields: Vec<String>,
    output_fields: Option<Vec<String>>,
    output_format: OutputFormat,
    dialect: CsvDialect,
    /// The sink's limits and how it sizes an item, when there is a sink.
    sink: Option<Arc<dyn Sink>>,
    /// For a Parquet output: its typed fields, whose values must fit their columns.
    parquet_columns: Vec<(String, ColumnType)>,
    /// Whether a declared column gives its field another name (JSON records are then typed
    /// into a new map; otherwise in place).
    renames: bool,
    /// The metadata the output fields or the partition template name (`$meta.line`): the
    /// name and the key of [`Origin::meta`], added to each kept record.
    meta_fields: Vec<(String, String)>,
    /// Whether a transform reads `$meta`.
    transforms_meta: bool,
    /// The scale of each exact decimal field, by output name.
    exact: Arc<HashMap<String, u32>>,
    /// Whether kept records need an item key without key fields (their place in their input):
    /// not when nothing takes their items (a stream into files only).
    place_keys: bool,
}

impl Pipeline {
    /// Build from a checked spec, the loaded lookup table and the job's output fields.
    pub fn new(spec: &JobSpec, lookup: Option<Arc<LookupTable>>, output_fields: Option<Vec<String>>) -> Self {
        let rules = spec.columns.clone();
        let by_name = rules.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        let parquet_columns = match (spec.output_format(output_fields.is_some()), &output_fields) {
            (OutputFormat::Parquet, Some(fields)) => fields
                .iter()
                .filter_map(|f| Some((f.clone(), spec.field_type(f)?)))
                .filter(|(_, kind)| *kind != ColumnType::String)
                .collect(),
            _ => Vec::new(),
        };
        Pipeline {
            rules,
            by_name,
            schema: spec.schema.clone(),
            transforms: spec.transforms.clone(),
            enrich_at: spec.enrich_at.min(spec.transforms.len()),
            lookup,
            key_fields: spec.key_fields.clone(),
            output_format: spec.output_format(output_fields.is_some()),
            output_fields: output_fields.clone(),
            dialect: spec.input.dialect,
            sink: None,
            parquet_columns,
            renames: spec.columns.iter().any(|r| r.out != r.name),
            exact: Arc::new(
                spec.columns
                    .iter()
                    .filter_map(|r| Some((r.out.clone(), r.exact()?.1)))
                    .chain(
                        spec.enrich
                            .iter()
                            .flat_map(|e| e.columns.iter())
                            .filter_map(|c| Some((c.out_name().to_string(), c.exact()?.1))),
                    )
                    .collect(),
            ),
            meta_fields: {
                let partition = spec.definition.config.stream.as_ref().and_then(|s| s.partition.clone());
                let fields = output_fields.iter().flatten().chain(partition.iter());
                let mut names: Vec<(String, String)> = Vec::new();
                for found in fields.flat_map(|f| crate::model::record::meta_names(f)) {
                    if !names.contains(&found) {
                        names.push(found);
                    }
                }
                names
            },
            transforms_meta: spec.transforms.iter().any(Transform::uses_meta),
            place_keys: true,
        }
    }

    /// Kept records without key fields get an empty item key, not their place in their input:
    /// for a stream whose items nothing takes (the key fields, when there are some, are still
    /// checked and joined).
    pub fn without_place_keys(mut self) -> Self {
        self.place_keys = false;
        self
    }

    /// Reject records whose items `sink` would refuse (an empty or over-long key, an item
    /// over its size limit) instead of failing the write of their whole batch.
    pub fn with_sink_limits(mut self, sink: Option<Arc<dyn Sink>>) -> Self {
        self.sink = sink.filter(|s| s.limits() != SinkLimits::default());
        self
    }

    /// An encoder for this job's output.
    pub fn encoder(&self) -> Encoder {
        self.encoder_for(self.output_format, self.output_fields.clone())
    }

    /// An encoder of `fields` in `format`, exact decimals written with their scale's digits.
    pub fn encoder_for(&self, format: OutputFormat, fields: Option<Vec<String>>) -> Encoder {
        let exact = self.exact.clone();
        Encoder::new(format, fields).exact(move |f| exact.get(f).copied())
    }

    /// Lookup state for a run of [`Pipeline::process`] calls.
    pub fn session(&self) -> Session<'_> {
        Session(self.lookup.as_ref().map(|l| l.session()))
    }

    /// Run one record (a JSON object from anywhere: a chunk, a stream, a test) through every
    /// step: type the declared fields, validate, transform, enrich, key.
    pub fn process(&self, rec: Record, origin: &Origin<'_>, session: &mut Session<'_>) -> Outcome {
        match self.type_json(rec) {
            Ok(rec) => self.finish(origin, session, rec),
            Err(f) => Outcome::Rejected(origin.reject(f)),
        }
    }

    /// Process the bytes of one chunk. Kept records go to `sink` in batches of `batch` items
    /// (`None`: there is no sink, and records are only encoded).
    pub fn run_chunk(
        &self,
        input: &Input,
        from: From,
        bytes: &[u8],
        mut sink: Option<(usize, &mut SendBatch<'_>)>,
    ) -> Result<ChunkOutput> {
        // The output is about as large as the chunk, or larger: room for twice the chunk
        // saves copying it as it grows (pages never written are never resident).
        let exact = self.exact.clone();
        let mut encoder = Encoder::with_capacity(self.output_format, self.output_fields.clone(), bytes.len() * 2)
            .exact(move |f| exact.get(f).copied());
        let mut rejects = Vec::new();
        let mut counts = Counts::default();
        let mut items = Vec::new();
        let mut session = self.session();
        self.prefetch(input, from, bytes, &mut session)?;
        self.chunk_records(input, from, bytes, None, &mut session, &mut |_, outcome| {
            counts.add(&outcome);
            match outcome {
                Outcome::Written(item) => {
                    encoder.encode(&item.record);
                    if let Some((batch, send)) = sink.as_mut() {
                        items.push(item);
                        if items.len() >= *batch {
                            send(std::mem::replace(&mut items, Vec::with_capacity(*batch)));
                        }
                    }
                }
                Outcome::Rejected(r) => {
                    // A Reject holds only strings and numbers: serializing it cannot fail.
                    let _ = serde_json::to_writer(&mut rejects, &r);
                    rejects.push(b'\n');
                }
                Outcome::Filtered => {}
            }
        });
        if let Some(e) = session.take_error() {
            return Err(e);
        }
        if let Some((_, send)) = sink {
            if !items.is_empty() {
                send(items);
            }
        }
        Ok(ChunkOutput { output: encoder.finish(), rejects, counts })
    }

    /// Process the records of `input` in `bytes` (whose first record is `from`) and tell
    /// `each` what became of each one, with the line it starts on.
    pub fn each_record(
        &self,
        input: &Input,
        from: From,
        bytes: &[u8],
        each: &mut dyn FnMut(u64, Outcome),
    ) -> Result<()> {
        self.each_streamed(input, from, bytes, None, each)
    }

    /// [`Pipeline::each_record`] for records a stream got at `place` (their metadata).
    pub fn each_streamed(
        &self,
        input: &Input,
        from: From,
        bytes: &[u8],
        place: Option<StreamPlace<'_>>,
        each: &mut dyn FnMut(u64, Outcome),
    ) -> Result<()> {
        let mut session = self.session();
        self.prefetch(input, from, bytes, &mut session)?;
        self.chunk_records(input, from, bytes, place, &mut session, each);
        session.take_error().map_or(Ok(()), Err)
    }

    /// Ask a reference for a chunk's keys before its records are processed: a remote one in
    /// batches, one in a database file in key order.
    fn prefetch(&self, input: &Input, from: From, bytes: &[u8], session: &mut Session<'_>) -> Result<()> {
        if let Some(s) = session.0.as_mut().filter(|s| s.is_remote()) {
            // A remote reference is asked for the chunk's keys in batches: a first pass only
            // collects them.
            s.start_collecting();
            self.chunk_records(input, from, bytes, None, session, &mut |_, _| {});
            if let Some(s) = session.0.as_mut() {
                s.prefetch()?;
            }
        } else if let Some(s) = session.0.as_mut().filter(|s| s.in_database()) {
            // A reference in a database file is read in key order: a first pass reads only the
            // key column of each row (typed as the main pass types it).
            if let Some((layout, column)) = input.layout.as_ref().and_then(|l| Some((l, l.lookup_column()?))) {
                crate::input::decode::for_each_record(
                    input.format,
                    &self.dialect,
                    bytes,
                    from,
                    &mut |r: RawRecord<'_, '_>| {
                        let Body::Csv(row) = r.body else { return };
                        let Some(text) = row.get(column).and_then(|t| std::str::from_utf8(t).ok()) else { return };
                        if let Ok(value) = self.typed(layout.rules[column], text) {
                            s.note_key(key_text(&value));
                        }
                    },
                );
                s.prefetch()?;
            }
        }
        Ok(())
    }

    /// Type the declared fields of a JSON record, keeping the record's field order; declared
    /// fields it lacks are checked as null (and added at the end).
    fn type_json(&self, rec: Record) -> std::result::Result<Record, Fault> {
        if self.rules.is_empty() {
            return Ok(rec);
        }
        let mut seen = vec![false; self.rules.len()];
        if !self.renames {
            // No column renames its field: type the values where they are, without building a
            // second map. Records usually hold the declared fields in their order: the rule
            // at the field's position is tried before the names are hashed.
            let mut rec = rec;
            for (j, (k, v)) in rec.iter_mut().enumerate() {
                let rule = match self.rules.get(j) {
                    Some(r) if r.name == *k => Some(j),
                    _ => self.by_name.get(k.as_str()).copied(),
                };
                if let Some(i) = rule {
                    seen[i] = true;
                    *v = self.rules[i].apply(std::mem::take(v))?;
                }
            }
            for (r, _) in self.rules.iter().zip(seen).filter(|(_, seen)| !seen) {
                rec.insert(r.out.clone(), r.apply(Value::Null)?);
            }
            return Ok(rec);
        }
        let mut out = Record::with_capacity(rec.len() + self.rules.len());
        for (k, v) in rec {
            match self.by_name.get(&k) {
                Some(&i) => {
                    seen[i] = true;
                    out.insert(self.rules[i].out.clone(), self.rules[i].apply(v)?);
                }
                None => {
                    out.insert(k, v);
                }
            }
        }
        for (r, _) in self.rules.iter().zip(seen).filter(|(_, seen)| !seen) {
            out.insert(r.out.clone(), r.apply(Value::Null)?);
        }
        Ok(out)
    }

    /// The steps after typing: schema, transforms, lookup, key.
    fn finish(&self, origin: &Origin<'_>, session: &mut Session<'_>, rec: Record) -> Outcome {
        match self.checked(origin, session, rec) {
            Ok(Some((mut record, key))) => {
                if !self.meta_fields.is_empty() {
                    let mut meta = origin.meta();
                    for (name, key) in &self.meta_fields {
                        record.insert(name.clone(), meta.remove(key).unwrap_or(Value::Null));
                    }
                }
                let item = SinkItem { key, job: origin.job, seq: origin.seq(), record: Row::Map(record) };
                match self.sink_fault(&item).or_else(|| self.output_fault(&item.record)) {
                    None => Outcome::Written(item),
                    Some(f) => Outcome::Rejected(origin.reject(f)),
                }
            }
            Ok(None) => Outcome::Filtered,
            Err(f) => Outcome::Rejected(origin.reject(f)),
        }
    }

    fn checked(
        &self,
        origin: &Origin<'_>,
        session: &mut Session<'_>,
        rec: Record,
    ) -> std::result::Result<Option<(Record, String)>, Fault> {
        let value = Value::Object(rec);
        if let Some(schema) = &self.schema {
            if let Some(e) = schema.iter_errors(&value).next() {
                let path = e.instance_path().to_string();
                let field = path.strip_prefix('/').filter(|p| !p.is_empty());
                let rule = format!("schema.{}", e.kind().keyword());
                return Err(Fault::new(field, rule, e.to_string()));
            }
        }
        let (before, after) = self.transforms.split_at(self.enrich_at);
        let meta = self.transforms_meta.then(|| origin.meta());
        let Some(mut rec) = transformed(before, value, meta.as_ref())? else { return Ok(None) };
        if let (Some(lookup), Some(session)) = (&self.lookup, session.0.as_mut()) {
            lookup.enrich(&mut rec, session).map_err(|key| lookup_fault(lookup, &key))?;
        }
        let rec = match after.is_empty() {
            true => rec,
            false => match transformed(after, Value::Object(rec), meta.as_ref())? {
                Some(rec) => rec,
                None => return Ok(None),
            },
        };
        let key = self.key_from(origin, |_, f| rec.get(f))?;
        Ok(Some((rec, key)))
    }

    /// Why the sink would refuse `item`, if it would.
    fn sink_fault(&self, item: &SinkItem) -> Option<Fault> {
        let sink = self.sink.as_ref()?;
        let limits = sink.limits();
        let key_field = self.key_fields.first().map(String::as_str);
        if limits.no_empty_key && item.key.is_empty() {
            return Some(Fault::new(key_field, "key", "the key is empty; the sink takes no empty keys"));
        }
        if let Some(max) = limits.max_key_bytes.filter(|max| item.key.len() > *max) {
            let message = format!("the key is {} bytes long; the sink takes at most {max}", item.key.len());
            return Some(Fault::new(key_field, "key", message));
        }
        let size = sink.item_size(item);
        if let Some(max) = limits.max_item_bytes.filter(|max| size > *max) {
            return Some(Fault::new(None, "sink", format!("the item is {size} bytes; the sink takes at most {max}")));
        }
        None
    }

    /// Why a Parquet output could not hold `row`: a typed field's value that does not fit its
    /// column (a transform changed it, or a timestamp is finer than microseconds). Such a
    /// record is a reject, not a failed gather or stream file.
    fn output_fault(&self, row: &Row) -> Option<Fault> {
        self.parquet_columns.iter().find_map(|(field, kind)| {
            let why = crate::engine::parquet::fits(*kind, row.get(field)?).err()?;
            Some(Fault::new(Some(field), "parquet", why))
        })
    }

    /// The item key: the key fields' values (`get` finds the i-th by position or name), or
    /// the record's place in its input without key fields.
    fn key_from<'v>(
        &self,
        origin: &Origin<'_>,
        get: impl Fn(usize, &str) -> Option<&'v Value>,
    ) -> std::result::Result<String, Fault> {
        if self.key_fields.is_empty() {
            return Ok(match self.place_keys {
                true => format!("{}#{}", origin.input, origin.record),
                false => String::new(),
            });
        }
        let mut key = String::new();
        for (i, f) in self.key_fields.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match get(i, f) {
                None | Some(Value::Null) => return Err(Fault::new(Some(f), "key", "key field is missing or null")),
                Some(Value::String(s)) => key.push_str(s),
                Some(v) => key.push_str(&v.to_string()),
            }
        }
        Ok(key)
    }
}

/// `value` through `transforms` in order: the object they yield, or `None` when one drops it.
fn transformed(
    transforms: &[Transform],
    mut value: Value,
    meta: Option<&Record>,
) -> std::result::Result<Option<Record>, Fault> {
    for t in transforms {
        match t.run_with_meta(value, meta)? {
            Some(v) => value = v,
            None => return Ok(None),
        }
    }
    match value {
        Value::Object(rec) => Ok(Some(rec)),
        other => {
            Err(Fault::new(None, "transform", format!("the transform must yield an object, got {}", json_kind(&other))))
        }
    }
}

/// The reject of a record whose key the reference lacks.
fn lookup_fault(lookup: &LookupTable, key: &str) -> Fault {
    Fault::new(Some(lookup.key_field()), "lookup", format!("no reference row for {} = {key}", lookup.key_field()))
}

/// Parse a JSON record's text into an object, or say what is wrong with it.
fn parse_object(text: &[u8], line: u64) -> std::result::Result<Record, Fault> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Fault::new(None, "json", format!("expected a JSON object, got {}", json_kind(&other)))),
        Err(e) => {
            // serde_json counts lines from the record's start; report the input's line.
            let at = line + e.line().saturating_sub(1) as u64;
            Err(Fault::new(None, "json", format!("malformed JSON at line {at}, column {}: {e}", e.column())))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::config::JobConfig;

    fn pipeline(job: &str) -> Pipeline {
        let spec = JobConfig::from_toml(job, "test.toml").unwrap().validate(std::path::Path::new(".")).unwrap();
        Pipeline::new(&spec, None, spec.output_fields.clone())
    }

    fn record(v: serde_json::Value) -> Record {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    const ORIGIN: Origin<'static> = Origin {
        job: 1_764_620_000_000,
        input: "stream://orders",
        input_index: 1,
        record: 7,
        line: 9,
        raw: b"{\"raw\": true}",
        stream: None,
    };

    const JOB: &str = r#"
transform = ['select(.region != "Asia") | .total = .units * .price']
[[columns]]
name = "units"
type = "integer"
required = true
[[columns]]
name = "Order Date"
as = "date"
type = "date"
format = "%m/%d/%y"
[key]
fields = ["id"]
"#;

    /// A JSON record's declared fields are typed wherever they stand, its other fields keep
    /// their place, a declared field it lacks comes last: the same with or without a column
    /// that renames its field (two ways of typing).
    #[test]
    fn json_fields_are_typed_in_any_order_with_or_without_a_rename() {
        let columns = "[[columns]]\nname = \"a\"\ntype = \"integer\"\n[[columns]]\nname = \"b\"\ntype = \"decimal\"\n[[columns]]\nname = \"c\"\n";
        let rec = || record(json!({"b": "2.5", "x": [1], "a": " 3 "}));
        for (job, last) in [(columns.to_string(), "c"), (format!("{columns}as = \"cc\"\n"), "cc")] {
            let p = pipeline(&job);
            let Outcome::Written(item) = p.process(rec(), &ORIGIN, &mut p.session()) else { panic!("not written") };
            let fields: Vec<(&str, &Value)> = item.record.iter().collect();
            assert_eq!(
                fields,
                [("b", &json!(2.5)), ("x", &json!([1])), ("a", &json!(3)), (last, &Value::Null)],
                "{job}"
            );
            let bad = record(json!({"b": "1", "a": "three"}));
            let Outcome::Rejected(r) = p.process(bad, &ORIGIN, &mut p.session()) else { panic!("not rejected") };
            assert_eq!((r.field.as_deref(), r.rule.as_str()), (Some("a"), "type"), "{job}");
        }
    }

    #[test]
    fn an_accepted_record_is_typed_transformed_and_keyed_at_its_position() {
        let p = pipeline(JOB);
        let rec = record(json!({"id": "a1", "units": "3", "price": 2.5, "region": "Europe", "Order Date": "10/23/14"}));
        let Outcome::Written(item) = p.process(rec, &ORIGIN, &mut p.session()) else { panic!("not written") };
        assert_eq!(item.key, "a1");
        assert_eq!(item.version(), (1_764_620_000_000, SinkItem::seq_of(1, 7)));
        assert_eq!(item.record["units"], json!(3), "typed by its column");
        assert_eq!(item.record["date"], json!("2014-10-23"), "renamed and normalised");
        assert_eq!(item.record["total"], json!(7.5), "transformed");
    }

    #[test]
    fn a_rejected_record_names_its_rule_field_and_origin() {
        let p = pipeline(JOB);
        let rec = record(json!({"id": "a1", "units": "three", "price": 1, "region": "Europe"}));
        let Outcome::Rejected(r) = p.process(rec, &ORIGIN, &mut p.session()) else { panic!("not rejected") };
        assert_eq!((r.rule.as_str(), r.field.as_deref()), ("type", Some("units")));
        assert_eq!((r.input.as_str(), r.record, r.line), ("stream://orders", 7, 9));
        assert_eq!(r.raw, "{\"raw\": true}");
        assert!(r.message.contains("three"), "{}", r.message);

        let missing = record(json!({"id": "a2", "price": 1, "region": "Europe"}));
        let Outcome::Rejected(r) = p.process(missing, &ORIGIN, &mut p.session()) else { panic!("not rejected") };
        assert_eq!((r.rule.as_str(), r.field.as_deref()), ("required", Some("units")));

        let no_key = record(json!({"units": "1", "price": 1, "region": "Europe"}));
        let Outcome::Rejected(r) = p.process(no_key, &ORIGIN, &mut p.session()) else { panic!("not rejected") };
        assert_eq!((r.rule.as_str(), r.field.as_deref()), ("key", Some("id")));
    }

    #[test]
    fn a_record_the_transform_drops_is_filtered() {
        let p = pipeline(JOB);
        let rec = record(json!({"id": "a1", "units": "3", "price": 2.5, "region": "Asia"}));
        assert_eq!(p.process(rec, &ORIGIN, &mut p.session()), Outcome::Filtered);
    }

    /// A sink with DynamoDB's limits, counting an item's JSON size.
    #[derive(Debug)]
    struct Limited;

    #[async_trait::async_trait]
    impl Sink for Limited {
        async fn write(&self, _: Vec<SinkItem>) -> crate::Result<()> {
            Ok(())
        }
        async fn publish(&self, _: u64) -> crate::Result<()> {
            Ok(())
        }
        async fn discard(&self, _: u64) -> crate::Result<()> {
            Ok(())
        }
        async fn read_all(&self) -> crate::Result<std::collections::BTreeMap<String, Record>> {
            Ok(Default::default())
        }
        fn limits(&self) -> SinkLimits {
            SinkLimits { max_key_bytes: Some(2048), max_item_bytes: Some(400 * 1024), no_empty_key: true }
        }
    }

    #[test]
    fn records_the_sink_would_refuse_are_rejects_not_failed_writes() {
        let p = pipeline("[key]\nfields = [\"id\"]\n").with_sink_limits(Some(Arc::new(Limited)));
        let process = |v: serde_json::Value| p.process(record(v), &ORIGIN, &mut p.session());
        let Outcome::Rejected(r) = process(json!({"id": ""})) else { panic!("an empty key was written") };
        assert_eq!((r.rule.as_str(), r.field.as_deref()), ("key", Some("id")));
        let Outcome::Rejected(r) = process(json!({"id": "k".repeat(2049)})) else { panic!("a long key was written") };
        assert_eq!(r.rule, "key");
        assert!(r.message.contains("2049"), "{}", r.message);
        let Outcome::Rejected(r) = process(json!({"id": "a", "blob": "x".repeat(400 * 1024)})) else {
            panic!("an item over the limit was written")
        };
        assert_eq!(r.rule, "sink");
        assert!(matches!(process(json!({"id": "a", "blob": "x".repeat(1000)})), Outcome::Written(_)));
        // Without a sink (or one without limits), nothing is refused.
        let free = pipeline("[key]\nfields = [\"id\"]\n");
        assert!(matches!(free.process(record(json!({"id": ""})), &ORIGIN, &mut free.session()), Outcome::Written(_)));
    }

    #[test]
    fn the_encoder_writes_csv_rows_of_the_output_fields_and_json_lines_otherwise() {
        let fields = vec!["b".to_string(), "a".to_string()];
        let mut csv = Encoder::new(OutputFormat::Csv, Some(fields.clone()));
        csv.encode(&record(json!({"a": 1, "b": "x, y", "c": "dropped"})).into());
        csv.encode(&record(json!({"a": null})).into());
        let names: Arc<[String]> = vec!["a".to_string(), "c".to_string(), "b".to_string()].into();
        csv.encode(&Row::Shared { names, values: vec![json!(2.5), json!("dropped"), json!("z")] });
        assert_eq!(String::from_utf8(csv.finish()).unwrap(), "\"x, y\",1\n,\nz,2.5\n");
        assert_eq!(Encoder::header(&fields).unwrap(), b"b,a\n");
        let mut jsonl = Encoder::new(OutputFormat::Jsonl, None);
        jsonl.encode(&record(json!({"a": 1})).into());
        assert_eq!(String::from_utf8(jsonl.finish()).unwrap(), "{\"a\":1}\n");
    }
}
