//! The page's two charts on one time axis: the chunks by worker (a lane each) and the records
//! per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::backends::cost::thousands;
use crate::batch::job::{ManifestChunk, Summary};

use super::text::{decimal, duration, round_step, short, w, Esc};

/// Workers given a lane of their own on the timeline; the others share the last one.
pub(super) const MAX_LANES: usize = 24;
/// Time buckets of the records-per-second chart.
const BUCKETS: i64 = 40;

/// The time axis shared by the charts: from the job's start to the last commit.
pub(super) struct Axis {
    start_ms: i64,
    span_ms: i64,
    plan_ms: i64,
}

impl Axis {
    pub(super) fn of(s: &Summary, chunks: &[ManifestChunk]) -> Axis {
        // The job's start, or a chunk's if earlier (hosts' clocks differ a little).
        let created = chrono::DateTime::parse_from_rfc3339(&s.timings.started_at).ok().map(|t| t.timestamp_millis());
        let first = chunks.iter().map(|c| c.commit.started_ms).min();
        let start_ms = created.into_iter().chain(first).min().unwrap_or(0);
        let end = chunks.iter().map(|c| c.commit.finished_ms).max().unwrap_or(start_ms);
        let plan_ms = s.timings.phases.get("plan_ms").copied().unwrap_or(0).max(0);
        Axis { start_ms, span_ms: (end - start_ms).max(1), plan_ms }
    }

    /// Where `ms` (since the Unix epoch) falls, from 0 to 1000.
    fn x(&self, ms: i64) -> f64 {
        ((ms - self.start_ms) as f64 * 1000.0 / self.span_ms as f64).clamp(0.0, 1000.0)
    }

    /// The labels under a chart: a few round times from the job's start.
    fn labels(&self, page: &mut String) {
        let step = round_step(self.span_ms / 4);
        w!(page, "<div class=\"axis\">");
        let mut t = 0;
        while t <= self.span_ms {
            let pct = t as f64 * 100.0 / self.span_ms as f64;
            w!(page, "<span style=\"left:{pct:.2}%\">{}</span>", Esc(&duration(t)));
            t += step;
        }
        w!(page, "</div>\n");
    }
}

/// The slowest chunk (the straggler), if any.
fn slowest_chunk(chunks: &[ManifestChunk]) -> Option<&ManifestChunk> {
    chunks.iter().max_by_key(|c| (seconds_ms(c), std::cmp::Reverse(c.chunk.index)))
}

pub(super) fn seconds_ms(c: &ManifestChunk) -> i64 {
    (c.commit.finished_ms - c.commit.started_ms).max(0)
}

/// One lane per worker (sorted by name; past [`MAX_LANES`] the rest share the last), a bar
/// per chunk from the start of its work to its commit.
pub(super) fn timeline(page: &mut String, chunks: &[ManifestChunk], axis: &Axis) {
    const LANE: usize = 22;
    if chunks.is_empty() {
        return;
    }
    let (names, lane_of) = lanes(chunks);
    let slow = slowest_chunk(chunks).map(|c| c.chunk.index);
    let height = names.len() * LANE;
    w!(page, "<section class=\"card\"><h2>Chunks by worker</h2>\n");
    if let Some(c) = slowest_chunk(chunks) {
        w!(
            page,
            "<p class=\"note\">Each bar is a chunk, from the start of its work to its commit. <i class=\"key slow\"></i>The slowest: chunk {} on {}, {} for {} records.</p>\n",
            c.chunk.index,
            Esc(&c.commit.worker),
            Esc(&duration(seconds_ms(c))),
            thousands(c.chunk.records)
        );
    }
    w!(page, "<div class=\"chart\" style=\"--lane-h:{LANE}px\"><div class=\"names\">");
    for name in &names {
        w!(page, "<div title=\"{}\">{}</div>", Esc(name), Esc(name));
    }
    w!(page, "</div><div class=\"plot\">");
    w!(
        page,
        "<svg viewBox=\"0 0 1000 {height}\" preserveAspectRatio=\"none\" width=\"100%\" height=\"{height}\" role=\"img\" aria-label=\"Chunks by worker over time\">"
    );
    for lane in 0..names.len() {
        w!(page, "<rect class=\"lane{}\" x=\"0\" y=\"{}\" width=\"1000\" height=\"{LANE}\"/>", lane % 2, lane * LANE);
    }
    w!(
        page,
        "<rect class=\"plan\" x=\"0\" y=\"0\" width=\"{:.2}\" height=\"{height}\"/>",
        axis.x(axis.start_ms + axis.plan_ms)
    );
    for c in chunks {
        let x0 = axis.x(c.commit.started_ms);
        let width = (axis.x(c.commit.finished_ms) - x0).max(2.0);
        let y = lane_of[c.commit.worker.as_str()] * LANE + 4;
        let class = if Some(c.chunk.index) == slow { "bar slow" } else { "bar" };
        w!(
            page,
            "<rect class=\"{class}\" x=\"{x0:.2}\" y=\"{y}\" width=\"{width:.2}\" height=\"{}\"><title>chunk {} · {} · {} records · {}</title></rect>",
            LANE - 8,
            c.chunk.index,
            Esc(&c.commit.worker),
            thousands(c.chunk.records),
            Esc(&duration(seconds_ms(c)))
        );
    }
    w!(page, "</svg>");
    axis.labels(page);
    w!(page, "</div></div>\n<p class=\"note\"><i class=\"key bar\"></i>chunk <i class=\"key slow\"></i>slowest chunk <i class=\"key plan\"></i>planning</p></section>\n");
}

/// The lanes' names, and each worker's lane.
fn lanes(chunks: &[ManifestChunk]) -> (Vec<String>, BTreeMap<&str, usize>) {
    let workers: std::collections::BTreeSet<&str> = chunks.iter().map(|c| c.commit.worker.as_str()).collect();
    let mut names: Vec<String> = workers.iter().take(MAX_LANES).map(|w| w.to_string()).collect();
    if workers.len() > MAX_LANES {
        names.truncate(MAX_LANES - 1);
        names.push(format!("{} more workers", workers.len() - (MAX_LANES - 1)));
    }
    let lane_of = workers.iter().enumerate().map(|(i, w)| (*w, i.min(names.len() - 1))).collect();
    (names, lane_of)
}

/// Records per second over time: each chunk's records spread evenly over its work.
pub(super) fn throughput(page: &mut String, chunks: &[ManifestChunk], axis: &Axis) {
    const HEIGHT: f64 = 120.0;
    if chunks.is_empty() {
        return;
    }
    let rates = rates(chunks, axis);
    let peak = rates.iter().copied().fold(0.0, f64::max);
    w!(page, "<section class=\"card\"><h2>Records per second</h2>\n");
    w!(page, "<p class=\"note\">Records worked per second over the job, each chunk's records spread over its work; peak {}.</p>\n", decimal(peak));
    w!(page, "<div class=\"chart\"><div class=\"yaxis\" style=\"height:{HEIGHT}px\"><span>{}</span><span>0</span></div><div class=\"plot\">", short(peak));
    w!(
        page,
        "<svg viewBox=\"0 0 1000 {HEIGHT}\" preserveAspectRatio=\"none\" width=\"100%\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"Records per second over time\">"
    );
    w!(page, "<line class=\"grid\" x1=\"0\" y1=\"{0}\" x2=\"1000\" y2=\"{0}\"/>", HEIGHT / 2.0);
    let width = 1000.0 / rates.len() as f64;
    for (i, rate) in rates.iter().enumerate() {
        let h = if peak > 0.0 { rate / peak * (HEIGHT - 4.0) } else { 0.0 };
        w!(
            page,
            "<rect class=\"bar\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{h:.2}\"><title>{} records/s</title></rect>",
            i as f64 * width + 0.5,
            HEIGHT - h,
            (width - 1.0).max(0.5),
            decimal(*rate)
        );
    }
    w!(page, "<line class=\"base\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"1000\" y2=\"{HEIGHT}\"/></svg>");
    axis.labels(page);
    w!(page, "</div></div></section>\n");
}

/// Records per second in each of [`BUCKETS`] equal spans of the axis.
fn rates(chunks: &[ManifestChunk], axis: &Axis) -> Vec<f64> {
    let buckets = BUCKETS.min(axis.span_ms).max(1);
    let bucket_ms = axis.span_ms as f64 / buckets as f64;
    let mut records = vec![0.0; buckets as usize];
    for c in chunks {
        let (from, to) = ((c.commit.started_ms - axis.start_ms) as f64, (c.commit.finished_ms - axis.start_ms) as f64);
        let n = c.chunk.records as f64;
        if to <= from {
            let b = ((from / bucket_ms) as usize).min(records.len() - 1);
            records[b] += n;
            continue;
        }
        let first = (from / bucket_ms).floor().max(0.0) as usize;
        let last = ((to / bucket_ms).ceil() as usize).min(records.len());
        for (b, slot) in records.iter_mut().enumerate().take(last).skip(first) {
            let (b0, b1) = (b as f64 * bucket_ms, (b + 1) as f64 * bucket_ms);
            let overlap = (to.min(b1) - from.max(b0)).max(0.0);
            *slot += n * overlap / (to - from);
        }
    }
    records.into_iter().map(|n| n * 1000.0 / bucket_ms).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::report::tests::job;

    #[test]
    fn the_rate_chart_accounts_for_every_record() {
        let (summary, manifest) = job(10, 3);
        let axis = Axis::of(&summary, &manifest.chunks);
        let rates = rates(&manifest.chunks, &axis);
        let bucket_s = axis.span_ms as f64 / rates.len() as f64 / 1000.0;
        let records: f64 = rates.iter().map(|r| r * bucket_s).sum();
        assert!((records - 1000.0).abs() < 1e-6, "{records}");
        assert_eq!(rates[0], 0.0, "nothing is worked while the job is planned");
    }
}
