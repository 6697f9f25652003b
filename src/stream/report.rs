//! What a stream run did: the reader's counts and the writer's files, in one [`Report`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backends::sink::{Sink, SinkFigures};

/// How often a running stream logs what its sink's writes cost.
pub(crate) const SINK_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The stream's progress line for its sink: logged (`info`) every `every` while the sink's
/// figures move (write requests, write units, throttled requests, items sent again), so that
/// a throttled table shows while the stream runs, not only in the report at its end. It stops
/// when the returned guard is dropped.
pub(crate) fn sink_progress(sink: Arc<dyn Sink>, every: Duration) -> SinkProgress {
    SinkProgress(tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = sink.figures();
            if let Some(line) = progress_line(last.as_ref(), now.as_ref()) {
                let f = now.clone().unwrap_or_default();
                tracing::info!(
                    requests = f.requests,
                    write_units = f.write_units,
                    throttled = f.throttled_requests,
                    retried = f.retried_items,
                    "{line}"
                );
            }
            last = now;
        }
    }))
}

/// The task logging a sink's progress, stopped when this is dropped.
pub(crate) struct SinkProgress(tokio::task::JoinHandle<()>);

impl Drop for SinkProgress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The line to log for the sink's figures `now`, unless they are the `last` ones logged or
/// nothing was sent yet.
fn progress_line(last: Option<&SinkFigures>, now: Option<&SinkFigures>) -> Option<String> {
    let now = now?;
    let sent = now.requests > 0 || now.throttled_requests > 0;
    (sent && Some(now) != last).then(|| format!("stream sink writes: {now}"))
}

/// What a stream run did (`--json` prints it; the names are stable).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The consumer's name.
    pub name: String,
    /// Records read.
    pub records: u64,
    /// Records kept: written to files, the sink, or both.
    pub written: u64,
    /// Records rejected (in files under the errors prefix).
    pub rejected: u64,
    /// Records a transform dropped.
    pub filtered: u64,
    /// Records read again that were already in files (a restart), skipped.
    pub skipped: u64,
    /// A queue's messages delivered again within `dedup_window_s` of their first copy: dropped,
    /// and deleted once the first copy was accounted for.
    pub duplicates: u64,
    /// Message ids the duplicate window forgot before their time, for want of room (more than
    /// 500,000 messages within the window).
    pub dedup_forgotten: u64,
    /// Data files written.
    pub files: u64,
    /// Error files written.
    pub error_files: u64,
    /// Bytes of the data files (compressed).
    pub bytes: u64,
    /// The data files' sizes: smallest, median, largest.
    pub file_bytes: [u64; 3],
    /// Why buffers became files, by reason.
    pub cuts: BTreeMap<String, u64>,
    /// Seconds from start to end.
    pub seconds: f64,
    /// Records read per second.
    pub records_per_s: f64,
    /// The most bytes of records the buffers held in memory at once (uncompressed): at most a
    /// piece (512 KiB) per open partition, the rest being compressed in scratch files.
    pub buffered_peak_bytes: u64,
    /// Compressed bytes the buffers wrote to scratch files.
    pub spooled_bytes: u64,
    /// The sink table kept records were upserted into, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// Records upserted into the sink (a record read again after a restart counts again; its
    /// write changes nothing).
    pub upserted: u64,
    /// What the sink's writes cost (requests, write units, throttling), for a sink that
    /// counts them (DynamoDB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_figures: Option<crate::backends::sink::SinkFigures>,
}

/// What the writer wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Data files.
    pub files: u64,
    /// Error files.
    pub error_files: u64,
    /// The data files' sizes, in the order written.
    pub sizes: Vec<u64>,
    /// Files by why their buffer was cut.
    pub cuts: BTreeMap<String, u64>,
    /// Records upserted into the sink.
    pub upserted: u64,
}

impl Report {
    /// The report of a run `seconds` long: the reader's counts (in `self`) and what the writer
    /// wrote.
    pub fn with_files(mut self, written: Written, seconds: f64) -> Self {
        let Written { files, error_files, mut sizes, cuts, upserted } = written;
        self.upserted = upserted;
        self.files = files;
        self.error_files = error_files;
        sizes.sort_unstable();
        self.bytes = sizes.iter().sum();
        if let (Some(first), Some(last)) = (sizes.first(), sizes.last()) {
            self.file_bytes = [*first, sizes[sizes.len() / 2], *last];
        }
        self.cuts = cuts;
        self.seconds = seconds;
        self.records_per_s = self.records as f64 / seconds.max(1e-9);
        self
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = crate::backends::cost::thousands;
        writeln!(
            f,
            "{} records in {:.1} s ({}/s): {} written, {} rejected, {} filtered, {} already in files",
            t(self.records),
            self.seconds,
            t(self.records_per_s as u64),
            t(self.written),
            t(self.rejected),
            t(self.filtered),
            t(self.skipped)
        )?;
        if self.duplicates > 0 {
            writeln!(f, "{} duplicate deliveries dropped", t(self.duplicates))?;
        }
        write!(
            f,
            "{} files, {} bytes (sizes {} / {} / {} smallest / median / largest), {} error files",
            t(self.files),
            t(self.bytes),
            t(self.file_bytes[0]),
            t(self.file_bytes[1]),
            t(self.file_bytes[2]),
            t(self.error_files)
        )?;
        if let Some(table) = &self.sink {
            write!(f, "\n{} records upserted into {table}", t(self.upserted))?;
        }
        match &self.sink_figures {
            Some(s) => write!(f, ": {s}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_progress_line_shows_write_units_and_throttling_when_they_move() {
        let f = SinkFigures {
            requests: 40,
            items_written: 1000,
            write_units: Some(1000.0),
            throttled_requests: 3,
            retried_items: 75,
        };
        assert_eq!(progress_line(None, None), None, "a sink that counts nothing logs nothing");
        let nothing_yet = SinkFigures { write_units: Some(0.0), ..SinkFigures::default() };
        assert_eq!(progress_line(None, Some(&nothing_yet)), None, "nothing sent yet: nothing to say");
        assert_eq!(
            progress_line(None, Some(&f)).as_deref(),
            Some("stream sink writes: 40 write requests, 1,000 items written, 1,000 write units, 3 throttled, 75 items sent again")
        );
        assert_eq!(progress_line(Some(&f), Some(&f)), None, "unchanged: not logged again");
        let more = SinkFigures { throttled_requests: 4, ..f.clone() };
        assert!(progress_line(Some(&f), Some(&more)).unwrap().contains("4 throttled"));
    }

    #[test]
    fn the_report_sums_the_files_and_names_their_smallest_median_and_largest() {
        let counts = Report { name: "s".into(), records: 3000, written: 2990, rejected: 10, ..Report::default() };
        let cuts = BTreeMap::from([("size".to_string(), 2), ("end".to_string(), 2)]);
        let written =
            Written { files: 3, error_files: 1, sizes: vec![900, 100, 5000], cuts: cuts.clone(), upserted: 0 };
        let r = counts.with_files(written, 2.0);
        assert_eq!((r.files, r.error_files, r.bytes, r.file_bytes), (3, 1, 6000, [100, 900, 5000]));
        assert_eq!((&r.cuts, r.records_per_s), (&cuts, 1500.0));
        assert_eq!(
            r.to_string(),
            "3,000 records in 2.0 s (1,500/s): 2,990 written, 10 rejected, 0 filtered, 0 already in files\n\
             3 files, 6,000 bytes (sizes 100 / 900 / 5,000 smallest / median / largest), 1 error files"
        );
        let none = Report::default().with_files(Written::default(), 0.0);
        assert_eq!((none.bytes, none.file_bytes, none.records_per_s), (0, [0; 3], 0.0));
    }
}
