//! How the pipeline reads one input: [`Input`], made once per input by [`Pipeline::input`]
//! (its place, location and format, and for CSV how its header's columns map to the job's
//! fields), from which any piece of the input is read, starting at any record.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::input::decode::ChunkStart;
use crate::model::config::Format;

use super::{Pipeline, MAX_COLUMNS};

/// One input as a job reads it. Made once per input by [`Pipeline::input`] and shared by
/// every piece of it ([`Pipeline::run_chunk`], [`Pipeline::each_record`]).
#[derive(Debug, Clone)]
pub struct Input {
    /// The job's order among jobs (see [`crate::model::record::SinkItem::job`]).
    pub job: u64,
    /// Its place among the job's inputs.
    pub index: u32,
    /// Where it is, for rejects and messages.
    pub location: String,
    /// Its format.
    pub format: Format,
    /// For CSV: how its columns map to the job's fields.
    pub(super) layout: Option<CsvLayout>,
    /// For JSON: the layout its records are read into when their keys are the declared
    /// columns in order (see [`Pipeline::declared_layout`]).
    pub(super) declared: Option<SharedLayout>,
}

/// Where a piece of an input starts: the record number and line of its first record.
pub type From = ChunkStart;

impl Pipeline {
    /// How this job reads an input: `header` is the one its planner read (ignored when the
    /// dialect says the input has none). Fails when a CSV header lacks a declared column,
    /// names one twice, or names too many.
    pub fn input(
        &self,
        job: u64,
        index: u32,
        location: &str,
        format: Format,
        header: Option<&[String]>,
    ) -> Result<Input> {
        let (layout, declared) = match format {
            Format::Csv => {
                let header = header.filter(|h| self.dialect.header && !h.is_empty());
                (Some(self.csv_layout(header, location)?), None)
            }
            _ => (None, self.declared_layout()),
        };
        Ok(Input { job, index, location: location.to_string(), format, layout, declared })
    }

    /// Map a CSV header (or the declared columns, without a header) to output fields.
    /// Fails when a declared column is missing from the header.
    fn csv_layout(&self, header: Option<&[String]>, location: &str) -> Result<CsvLayout> {
        let names: Vec<String> = match header {
            Some(h) => h.to_vec(),
            None => self.rules.iter().map(|r| r.name.clone()).collect(),
        };
        if names.len() > MAX_COLUMNS {
            return Err(Error::InvalidInput {
                location: location.to_string(),
                line: Some(1),
                column: None,
                reason: format!("the header names {} columns; at most {MAX_COLUMNS} are accepted", names.len()),
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(Error::InvalidInput {
                location: location.to_string(),
                line: Some(1),
                column: Some(dup.clone()),
                reason: "the header names this column twice".into(),
            });
        }
        for r in self.rules.iter() {
            if !names.contains(&r.name) {
                return Err(Error::InvalidInput {
                    location: location.to_string(),
                    line: Some(1),
                    column: Some(r.name.clone()),
                    reason: format!("the header lacks the declared column; it has {names:?}"),
                });
            }
        }
        let rules = names.iter().map(|n| self.by_name.get(n).copied()).collect();
        let headers = names.clone();
        let names: Vec<String> = names
            .iter()
            .map(|n| self.by_name.get(n).map(|&i| self.rules[i].out.clone()).unwrap_or_else(|| n.clone()))
            .collect();
        let shared = self.shared_layout(&names);
        Ok(CsvLayout { headers, names, rules, shared })
    }

    /// The shared layout of records with these columns, unless a schema, a transform or
    /// metadata fields need each record as a map, or two columns have one name.
    pub(super) fn shared_layout(&self, columns: &[String]) -> Option<SharedLayout> {
        if self.schema.is_some() || !self.transforms.is_empty() || !self.meta_fields.is_empty() {
            return None;
        }
        let mut seen = std::collections::HashSet::with_capacity(columns.len());
        if !columns.iter().all(|c| seen.insert(c.as_str())) {
            return None;
        }
        let mut names = columns.to_vec();
        let mut lookup_slots = Vec::new();
        if let Some(lookup) = &self.lookup {
            for f in lookup.fields() {
                // A field the columns have is replaced in place, as in a map.
                let slot = names.iter().position(|n| n == f).unwrap_or_else(|| {
                    names.push(f.clone());
                    names.len() - 1
                });
                lookup_slots.push(slot);
            }
        }
        let position = |f: &str| names.iter().position(|n| n == f);
        Some(SharedLayout {
            lookup_key: self.lookup.as_ref().and_then(|l| position(l.key_field())),
            key_slots: self.key_fields.iter().map(|f| position(f)).collect(),
            lookup_slots,
            names: names.into(),
        })
    }
}

/// Field layout of one CSV input: header position → output name and rule.
#[derive(Debug, Clone)]
pub(super) struct CsvLayout {
    pub(super) headers: Vec<String>,
    pub(super) names: Vec<String>,
    pub(super) rules: Vec<Option<usize>>,
    /// Where records of this input keep their values, when no schema or transform needs
    /// them as maps: no name is stored per record.
    pub(super) shared: Option<SharedLayout>,
}

impl CsvLayout {
    /// The column the lookup key is read from, when records keep a shared layout and the key
    /// is one of the input's columns.
    pub(super) fn lookup_column(&self) -> Option<usize> {
        self.shared.as_ref()?.lookup_key.filter(|&i| i < self.names.len())
    }
}

/// The shared field names of a CSV input's records (see [`Row::Shared`]): its columns, then
/// the fields enrichment adds that the columns lack; and where each step finds its fields.
#[derive(Debug, Clone)]
pub(super) struct SharedLayout {
    pub(super) names: Arc<[String]>,
    /// The lookup key's position.
    pub(super) lookup_key: Option<usize>,
    /// The position of each field enrichment adds.
    pub(super) lookup_slots: Vec<usize>,
    /// The position of each key field.
    pub(super) key_slots: Vec<Option<usize>>,
}
