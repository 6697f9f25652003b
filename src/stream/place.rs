//! Where a record goes ([`Placer`]): skipped if a file of an earlier run holds it, dropped if
//! a transform filtered it, else into its partition's buffer, or as a reject into the errors
//! of the day it arrived. The partition budget ([`Placer::admit`]) turns a record that would
//! open one partition too many into a reject.
//!
//! The decision is made from the state the run started with: within a run a source delivers
//! a record once, so only what earlier runs wrote can hold it.

use std::collections::HashMap;

use serde::Serialize;

use super::file::ms_time;
use super::prep::Ready;
use super::state::{Pos, Saved};
use crate::model::config::StreamConfig;
use crate::model::record::{Reject, SinkItem};

/// Where a record goes.
#[derive(Debug, PartialEq)]
pub enum Placement {
    /// A file of an earlier run holds it.
    Skipped,
    /// A transform dropped it.
    Filtered,
    /// Into its partition's buffer, as this line (and into the sink, as this item).
    Row {
        /// The partition.
        partition: String,
        /// The line.
        line: Vec<u8>,
        /// Its sink item, when the stream has a sink.
        item: Option<Box<SinkItem>>,
    },
    /// Into an error file of the day it arrived, as this error line.
    Reject {
        /// The errors partition of the day.
        partition: String,
        /// The error line.
        line: Vec<u8>,
    },
}

/// Decides where records go: from what earlier runs wrote, and the partition budget.
pub struct Placer {
    /// The state the run started with.
    pub saved: Saved,
    /// Partitions that took a record lately, with the arrival of their last one: at most
    /// `max_partitions` at once ([`Placer::admit`]).
    pub active: HashMap<String, i64, foldhash::fast::RandomState>,
    /// The stream's settings: its partition budget.
    pub config: StreamConfig,
    /// The errors prefix, without slashes around it.
    pub errors: String,
    /// The fields of data files' typed rows, when they are Parquet files: a record over the
    /// partition budget is shown as the JSON of its values of them.
    pub typed_rows: Option<Vec<String>>,
}

impl Placer {
    /// Where the record of `shard` at `pos` goes, with `ready` what the pipeline made of it;
    /// `number` counts the shard's records in this run, for a reject's line.
    pub fn place(&mut self, shard: &str, pos: &Pos, number: u64, arrival_ms: i64, ready: Ready) -> Placement {
        if self.saved.before_checkpoint(shard, pos) {
            return Placement::Skipped;
        }
        // A record already in a file is skipped; one over the partition budget is a reject.
        let mut reject = match ready {
            Ready::Filtered => return Placement::Filtered,
            Ready::Row { partition, .. } if self.saved.covers(&partition, shard, pos) => return Placement::Skipped,
            Ready::Row { partition, line, item } if self.admit(&partition, arrival_ms) => {
                return Placement::Row { partition, line, item }
            }
            Ready::Row { partition, line, .. } => {
                let raw = match &self.typed_rows {
                    Some(fields) => crate::engine::parquet::row_text(fields, &line),
                    None => String::from_utf8_lossy(&line).trim_end().to_string(),
                };
                over_budget(&self.config, &partition, shard, raw)
            }
            Ready::Rejected(reject) => *reject,
        };
        let partition = format!("{}/{}", self.errors, ms_time(arrival_ms).format("dt=%Y-%m-%d"));
        if self.saved.covers(&partition, shard, pos) {
            return Placement::Skipped;
        }
        reject.record = number;
        let mut line =
            serde_json::to_vec(&ErrorLine { shard, position: pos.to_string(), reject }).expect("a reject serializes");
        line.push(b'\n');
        Placement::Reject { partition, line }
    }

    /// Whether `partition` may take a record arriving at `arrival_ms`: it is active already,
    /// or fewer than `max_partitions` partitions took a record in the last `max_age_s` (at
    /// least a minute). A template whose values change on every record (a timestamp to the
    /// second, a user id) would otherwise write a file, and a ledger write, per record.
    fn admit(&mut self, partition: &str, arrival_ms: i64) -> bool {
        let (active, config) = (&mut self.active, &self.config);
        if let Some(last) = active.get_mut(partition) {
            *last = (*last).max(arrival_ms);
            return true;
        }
        if active.len() >= config.max_partitions {
            let window_ms = i64::from(config.max_age_s.max(60)) * 1000;
            active.retain(|_, last| *last >= arrival_ms - window_ms);
        }
        if active.len() >= config.max_partitions {
            return false;
        }
        active.insert(partition.to_string(), arrival_ms);
        true
    }
}

/// The reject of a record whose partition would pass the stream's partition budget.
fn over_budget(config: &StreamConfig, partition: &str, shard: &str, raw: String) -> Reject {
    let shown: String = partition.chars().take(80).collect();
    Reject {
        input: shard.to_string(),
        record: 0,
        line: 0,
        field: None,
        rule: "stream.max_partitions".into(),
        message: format!(
            "{} partitions took records in the last {} s, the most [stream] max_partitions allows; {shown:?} would be one more: \
             partition by fields with fewer values, or raise max_partitions",
            config.max_partitions,
            config.max_age_s.max(60)
        ),
        raw,
    }
}

/// A rejected stream record, as error files hold it.
#[derive(Serialize)]
struct ErrorLine<'a> {
    shard: &'a str,
    position: String,
    #[serde(flatten)]
    reject: Reject,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::state::{Covered, SavedShard};

    fn config(max_partitions: usize) -> StreamConfig {
        StreamConfig { max_partitions, max_age_s: 60, ..StreamConfig::default() }
    }

    /// Shard `s` with its checkpoint at 2, and records 5 to 6 of partition `p` in a file.
    fn saved() -> Saved {
        let mut saved = Saved::default();
        saved.shards.insert("s".into(), SavedShard { checkpoint: Some("2".into()), ended: false });
        let covered = |partition: &str| Covered {
            partition: partition.into(),
            shard: "s".into(),
            first: "5".into(),
            last: "6".into(),
        };
        saved.covered = vec![covered("p"), covered("errors/dt=2026-11-01")];
        saved
    }

    fn placer(max_partitions: usize) -> Placer {
        Placer {
            saved: saved(),
            active: HashMap::default(),
            config: config(max_partitions),
            errors: "errors".into(),
            typed_rows: None,
        }
    }

    fn row(partition: &str) -> Ready {
        Ready::Row { partition: partition.into(), line: b"{\"id\":1}\n".to_vec(), item: None }
    }

    fn reject() -> Reject {
        Reject {
            input: "s".into(),
            record: 0,
            line: 0,
            field: Some("id".into()),
            rule: "type".into(),
            message: "not a number".into(),
            raw: "x".into(),
        }
    }

    const NOV_1: i64 = 1_793_491_200_000;

    #[test]
    fn records_in_files_of_earlier_runs_are_skipped_the_rest_placed() {
        let mut p = placer(10);
        for n in [1, 2] {
            assert_eq!(p.place("s", &Pos::N(n), n, NOV_1, row("p")), Placement::Skipped, "at or before the checkpoint");
        }
        assert_eq!(p.place("s", &Pos::N(5), 1, NOV_1, row("p")), Placement::Skipped, "covered in its partition");
        assert_eq!(
            p.place("s", &Pos::N(5), 1, NOV_1, row("q")),
            Placement::Row { partition: "q".into(), line: b"{\"id\":1}\n".to_vec(), item: None }
        );
        assert_eq!(
            p.place("t", &Pos::N(5), 1, NOV_1, row("p")),
            Placement::Row { partition: "p".into(), line: b"{\"id\":1}\n".to_vec(), item: None }
        );
        assert_eq!(p.place("s", &Pos::N(3), 1, NOV_1, Ready::Filtered), Placement::Filtered);
        let covered = p.place("s", &Pos::N(6), 1, NOV_1, Ready::Rejected(Box::new(reject())));
        assert_eq!(covered, Placement::Skipped, "a reject in an error file of an earlier run");
    }

    #[test]
    fn a_reject_goes_to_the_errors_of_its_arrival_day_naming_its_shard_position_and_number() {
        let mut p = placer(10);
        let Placement::Reject { partition, line } =
            p.place("s", &Pos::N(7), 4, NOV_1 + 3_600_000, Ready::Rejected(Box::new(reject())))
        else {
            panic!("a reject")
        };
        assert_eq!(partition, "errors/dt=2026-11-01");
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!((&line["shard"], &line["position"], &line["record"]), (&"s".into(), &"7".into(), &4.into()));
        assert_eq!((&line["rule"], &line["field"], &line["raw"]), (&"type".into(), &"id".into(), &"x".into()));
    }

    #[test]
    fn past_the_partition_budget_a_new_partition_is_a_reject_until_the_window_passes() {
        let mut p = placer(2);
        let at = |minutes: i64| NOV_1 + minutes * 60_000;
        for (k, minute) in [("a", 0), ("b", 0), ("a", 1)] {
            assert!(matches!(p.place("t", &Pos::N(1), 1, at(minute), row(k)), Placement::Row { .. }), "{k}");
        }
        let Placement::Reject { line, .. } = p.place("t", &Pos::N(1), 1, at(1), row("c")) else {
            panic!("over budget")
        };
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(line["rule"], "stream.max_partitions");
        assert_eq!(line["raw"], "{\"id\":1}");
        // `b` took its last record more than a minute (max_age_s, at least 60 s) ago.
        assert!(matches!(p.place("t", &Pos::N(1), 1, at(2) + 1, row("c")), Placement::Row { .. }));
    }

    /// A Parquet stream's buffers hold typed rows: a record over the budget is shown as the
    /// JSON of its values.
    #[test]
    fn a_typed_row_over_the_partition_budget_is_shown_as_the_json_of_its_values() {
        let fields = vec!["id".to_string(), "name".to_string()];
        let mut p = Placer { typed_rows: Some(fields.clone()), ..placer(1) };
        let mut rows = crate::engine::pipeline::Encoder::typed_rows(fields);
        rows.encode(&crate::model::record::Row::Map(
            serde_json::json!({"id": 7, "name": "x"}).as_object().unwrap().clone(),
        ));
        let typed = |partition: &str, line: Vec<u8>| Ready::Row { partition: partition.into(), line, item: None };
        let line = rows.take();
        assert!(matches!(p.place("t", &Pos::N(1), 1, NOV_1, typed("a", line.clone())), Placement::Row { .. }));
        let Placement::Reject { line, .. } = p.place("t", &Pos::N(2), 2, NOV_1, typed("b", line)) else {
            panic!("over budget")
        };
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(line["raw"], r#"{"id":7,"name":"x"}"#);
    }
}
