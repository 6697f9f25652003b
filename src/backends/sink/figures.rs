//! The loader's figures: what a sink's writes cost ([`SinkFigures`]), and the [`FigureTally`]
//! that gives them to the task that made the writes (a chunk), as `calls::Tally` does requests.
//!
//! A batch job's workers run in other processes (or Lambda invocations), so a sink's running
//! totals ([`super::Sink::figures`]) cannot reach the gather: instead each chunk's worker
//! collects the figures of its own writes in a tally scoped to them, records them with the
//! chunk's commit in the ledger, and the gather sums the committed chunks' figures into the
//! summary, the way it sums their `api_calls`.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What a sink's writes cost (field names are stable: `summary.json`, `--json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkFigures {
    /// Write requests sent: DynamoDB `PutItem` or `BatchWriteItem` requests, retries included;
    /// for a SQLite table, the batches staged or upserted.
    pub requests: u64,
    /// Items the table took (a SQLite table: the items staged, stored when the job is
    /// gathered).
    pub items_written: u64,
    /// Write capacity units the table reported consuming (DynamoDB's `ConsumedCapacity`);
    /// `null` for a sink without capacity units (SQLite).
    #[serde(default)]
    pub write_units: Option<f64>,
    /// Requests refused whole by throttling or a server error, and sent again.
    pub throttled_requests: u64,
    /// Items sent again: a batch's unprocessed items, and those of refused requests.
    pub retried_items: u64,
}

impl SinkFigures {
    /// Add `more` to these figures (write units stay `None` only if both are).
    pub fn add(&mut self, more: &SinkFigures) {
        self.requests += more.requests;
        self.items_written += more.items_written;
        self.write_units = match (self.write_units, more.write_units) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        self.throttled_requests += more.throttled_requests;
        self.retried_items += more.retried_items;
    }

    /// The sum of some figures; `None` if there are none.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a SinkFigures>) -> Option<SinkFigures> {
        all.into_iter().fold(None, |acc, f| {
            let mut acc = acc.unwrap_or_default();
            acc.add(f);
            Some(acc)
        })
    }
}

/// `1,234 write requests, 25,000 items written, 25,000 write units, 12 throttled, 300 items
/// sent again` (no write units for a sink without them).
impl std::fmt::Display for SinkFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = crate::backends::cost::thousands;
        write!(f, "{} write requests, {} items written", t(self.requests), t(self.items_written))?;
        if let Some(units) = self.write_units {
            write!(f, ", {} write units", t(units.round() as u64))?;
        }
        write!(f, ", {} throttled, {} items sent again", t(self.throttled_requests), t(self.retried_items))
    }
}

/// Figures collected for the task that runs in [`FigureTally::scope`]: a sink adds the
/// figures of each of its writes with [`record`].
#[derive(Debug, Clone, Default)]
pub struct FigureTally(Arc<Mutex<Option<SinkFigures>>>);

tokio::task_local! {
    static CURRENT: FigureTally;
}

impl FigureTally {
    /// Run `f` with this tally collecting the figures of the sink writes it makes.
    pub async fn scope<F: std::future::Future>(&self, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// What was collected (`None`: no sink wrote), leaving the tally empty.
    pub fn take(&self) -> Option<SinkFigures> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Add the figures of one write to the current task's tally, if it has one. Called by a sink
/// once per write, from the task that awaits the write.
pub fn record(figures: &SinkFigures) {
    let _ = CURRENT.try_with(|t| {
        let mut held = t.0.lock().unwrap_or_else(|p| p.into_inner());
        held.get_or_insert_with(SinkFigures::default).add(figures);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(requests: u64, units: Option<f64>) -> SinkFigures {
        SinkFigures {
            requests,
            items_written: 2 * requests,
            write_units: units,
            throttled_requests: 1,
            retried_items: 3,
        }
    }

    #[test]
    fn figures_add_up_and_write_units_stay_null_only_without_any() {
        assert_eq!(SinkFigures::sum(&[]), None);
        let local = SinkFigures::sum(&[f(1, None), f(2, None)]).unwrap();
        assert_eq!(local, SinkFigures { write_units: None, ..f(3, None) }.with_counts(2, 6));
        let mixed = SinkFigures::sum(&[f(1, None), f(2, Some(2.5))]).unwrap();
        assert_eq!(mixed.write_units, Some(2.5));
        assert!(!local.to_string().contains("write units"), "{local}");
        assert_eq!(
            mixed.to_string(),
            "3 write requests, 6 items written, 3 write units, 2 throttled, 6 items sent again"
        );
        let json = serde_json::to_value(&local).unwrap();
        assert_eq!(json["write_units"], serde_json::Value::Null, "SQLite's figures say null, not 0");
    }

    impl SinkFigures {
        fn with_counts(mut self, throttled: u64, retried: u64) -> Self {
            (self.throttled_requests, self.retried_items) = (throttled, retried);
            self
        }
    }

    #[tokio::test]
    async fn a_tally_collects_the_writes_of_its_own_task_only() {
        let (mine, other) = (FigureTally::default(), FigureTally::default());
        record(&f(5, Some(5.0)));
        mine.scope(async { record(&f(1, Some(1.0))) }).await;
        other.scope(async { record(&f(2, Some(2.0))) }).await;
        mine.scope(async { record(&f(3, None)) }).await;
        assert_eq!(mine.take().map(|f| (f.requests, f.write_units)), Some((4, Some(1.0))));
        assert_eq!(mine.take(), None, "taken");
        assert_eq!(other.take().map(|f| f.requests), Some(2));
    }
}
