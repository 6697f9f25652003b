//! The job report, `jobs/<id>/report.html`: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) showing what a finished job did, readable on a phone.
//!
//! It shows the summary's counts, a timeline of the chunks by worker (the slowest chunk
//! marked), records per second over time, rejects by rule and by field with a few examples,
//! the slowest chunks, the API calls with their cost, the inputs and outputs, and the job
//! definition.
//!
//! Every value taken from `summary.json` is in an element whose `data-summary` attribute
//! names it by its path of keys joined by `.` (`records.total`, `inputs.0.bytes`,
//! `api_calls.dynamodb.BatchWriteItem`: a key may itself hold dots), so that a program can
//! check the page against the summary. Numbers are written with `,` between thousands;
//! strings as they are, but `_` as a space.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::BufRead;

use crate::config::JobDefinition;
use crate::cost::{dollars, thousands};
use crate::job::{Manifest, ManifestChunk, Summary};
use crate::record::Reject;

/// Example rejects kept per rule and field.
pub const EXAMPLES_PER_FIELD: usize = 3;
/// Distinct (rule, field) pairs itemised; rejects beyond them are only counted, so that a
/// rejects file with a new field on every line cannot make the digest grow with it.
pub const MAX_FIELDS: usize = 100;
/// Characters of a reject's raw record kept in an example.
const RAW_CHARS: usize = 160;
/// Characters of a reject's message kept in an example.
const MESSAGE_CHARS: usize = 300;
/// Workers given a lane of their own on the timeline; the others share the last one.
const MAX_LANES: usize = 24;
/// Chunks listed as the slowest.
const SLOWEST: usize = 5;
/// Time buckets of the records-per-second chart.
const BUCKETS: i64 = 40;

/// What a report is made of: the summary and manifest the gather wrote, and what the page
/// adds to them.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The job's `summary.json`.
    pub summary: &'a Summary,
    /// The job's `manifest.json`: every chunk with its commit (worker, timings, counts).
    pub manifest: &'a Manifest,
    /// The job definition as TOML (see [`definition_toml`]).
    pub definition: &'a str,
    /// The rejects, by rule and field, with examples.
    pub rejects: &'a RejectDigest,
    /// The cost in USD of the job's API calls, by `"service.Operation"` (see
    /// [`crate::cost::request_costs`]); an operation missing here shows no cost.
    pub costs: &'a BTreeMap<String, f64>,
    /// Where the costs come from, for a person (`AWS list prices for us-east-1 as of …`).
    pub prices: &'a str,
}

/// The rejects of a job, digested from its rejects file in one pass in bounded memory:
/// counts by rule and by (rule, field), and the first few rejects of each pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectDigest {
    /// Rejects per rule.
    pub by_rule: BTreeMap<String, u64>,
    /// Rejects per (rule, field), for the first [`MAX_FIELDS`] pairs met; `None`: the
    /// rule is not about one field.
    pub by_field: BTreeMap<(String, Option<String>), FieldRejects>,
    /// Rejects of pairs past the first [`MAX_FIELDS`]: counted by rule only.
    pub not_itemised: u64,
    /// Lines that are not a reject (the file is damaged); skipped.
    pub unreadable: u64,
}

/// The rejects of one rule on one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRejects {
    /// How many.
    pub count: u64,
    /// The first [`EXAMPLES_PER_FIELD`], in file order.
    pub examples: Vec<RejectExample>,
}

/// One reject, shortened for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectExample {
    /// The input's name (the last part of its location).
    pub input: String,
    /// The line of the input on which the record starts.
    pub line: u64,
    /// What is wrong, cut to a few hundred characters.
    pub message: String,
    /// The record as it appeared, cut to 160 characters.
    pub raw: String,
}

impl RejectDigest {
    /// Digest a rejects file (JSON Lines of [`Reject`]) from a reader, one line at a time.
    pub fn read(reader: impl BufRead) -> std::io::Result<RejectDigest> {
        let mut digest = RejectDigest::default();
        for line in reader.lines() {
            digest.add_line(&line?);
        }
        Ok(digest)
    }

    /// Count one line of a rejects file (blank lines are skipped, damaged ones counted).
    pub fn add_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<Reject>(line) {
            Ok(reject) => self.add(reject),
            Err(_) => self.unreadable += 1,
        }
    }

    /// Count one reject.
    pub fn add(&mut self, reject: Reject) {
        *self.by_rule.entry(reject.rule.clone()).or_default() += 1;
        let key = (reject.rule.clone(), reject.field.clone());
        if !self.by_field.contains_key(&key) && self.by_field.len() >= MAX_FIELDS {
            self.not_itemised += 1;
            return;
        }
        let field = self.by_field.entry(key).or_default();
        field.count += 1;
        if field.examples.len() < EXAMPLES_PER_FIELD {
            field.examples.push(RejectExample::of(reject));
        }
    }

    /// Rejects counted.
    pub fn total(&self) -> u64 {
        self.by_rule.values().sum()
    }
}

impl RejectExample {
    fn of(reject: Reject) -> RejectExample {
        let input = reject.input.rsplit('/').next().unwrap_or(&reject.input).to_string();
        RejectExample {
            input,
            line: reject.line,
            message: shorten(&reject.message, MESSAGE_CHARS),
            raw: shorten(&reject.raw, RAW_CHARS),
        }
    }
}

/// `text` cut to `max` characters, with `…` when it was cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The job definition as TOML for the page: the job file's settings, with every address
/// that may hold a secret (notification targets, the sink's publish URL, the reference and
/// sink URLs) redacted as [`crate::web::redact`] does.
pub fn definition_toml(definition: &JobDefinition) -> String {
    let mut config = definition.config.clone();
    let hide = |url: &mut String| {
        if url.contains("://") {
            *url = crate::web::redact(url);
        }
    };
    for n in &mut config.notify {
        hide(&mut n.to);
    }
    if let Some(p) = config.sink.publish.as_mut() {
        hide(p);
    }
    match toml::to_string(&config) {
        Ok(text) => text,
        // Every job file came from TOML, so this is not expected; say so rather than fail.
        Err(e) => format!("# the definition cannot be shown as TOML: {e}\n"),
    }
}

/// Append formatted text to a `String` (which cannot fail, so the result is dropped).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Render the report as one HTML page.
pub fn render(report: &Report) -> String {
    let s = report.summary;
    let mut page = String::with_capacity(32 << 10);
    w!(page, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    w!(page, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    w!(page, "<title>{} · sluicebox job report</title>\n<style>{STYLE}</style>\n</head>\n", Esc(&s.job_id));
    w!(page, "<body>\n<main>\n");
    header(&mut page, s);
    counts(&mut page, s, &report.manifest.chunks);
    phases(&mut page, s);
    let axis = Axis::of(s, &report.manifest.chunks);
    timeline(&mut page, &report.manifest.chunks, &axis);
    throughput(&mut page, &report.manifest.chunks, &axis);
    slowest(&mut page, &report.manifest.chunks);
    rejects(&mut page, s, report.rejects);
    api_calls(&mut page, s, report.costs, report.prices);
    inputs_and_outputs(&mut page, s);
    w!(
        page,
        "<section class=\"card\"><h2>Job definition</h2>\n<pre class=\"code\">{}</pre></section>\n",
        Esc(report.definition)
    );
    w!(page, "<footer>Written by sluicebox {} when the job was gathered.</footer>\n", env!("CARGO_PKG_VERSION"));
    w!(page, "</main>\n</body>\n</html>\n");
    page
}

fn header(page: &mut String, s: &Summary) {
    let badge = match s.status.as_str() {
        "succeeded" => "ok",
        "completed_with_rejects" => "warn",
        _ => "other",
    };
    w!(page, "<header class=\"top\">\n<div class=\"eyebrow\">sluicebox · job report</div>\n");
    w!(page, "<div class=\"title\"><h1 {}</h1>", Value("job_id", &s.job_id));
    w!(page, "<span class=\"badge {badge}\" {}</span></div>\n", Value("status", &s.status.replace('_', " ")));
    w!(
        page,
        "<p class=\"when\">Started <time datetime=\"{}\">{}</time>, finished <time datetime=\"{}\">{}</time></p>\n</header>\n",
        Esc(&s.timings.started_at),
        Esc(&when(&s.timings.started_at)),
        Esc(&s.timings.finished_at),
        Esc(&when(&s.timings.finished_at))
    );
}

/// The headline numbers, as cards.
fn counts(page: &mut String, s: &Summary, chunks: &[ManifestChunk]) {
    let r = &s.records;
    let share = |n: u64| match r.total {
        0 => String::new(),
        total => format!("{:.1}% of records", n as f64 * 100.0 / total as f64),
    };
    w!(page, "<section class=\"cards\">\n");
    card(page, "Records", &Num("records.total", r.total).to_string(), &input_note(s), "");
    card(page, "Written", &Num("records.written", r.written).to_string(), &share(r.written), "");
    let rejected_class = if r.rejected > 0 { "warn" } else { "" };
    card(page, "Rejected", &Num("records.rejected", r.rejected).to_string(), &share(r.rejected), rejected_class);
    card(page, "Filtered", &Num("records.filtered", r.filtered).to_string(), &share(r.filtered), "");
    let done = format!("{} done", Num("chunks.done", u64::from(s.chunks.done)));
    card(page, "Chunks", &Num("chunks.total", u64::from(s.chunks.total)).to_string(), &done, "");
    let (workers, busiest) = workers(chunks);
    card(page, "Workers", &thousands(workers), &format!("the busiest did {busiest} chunks"), "");
    card(page, "Duration", &Esc(&duration(s.timings.duration_ms)).to_string(), "from start to gather", "");
    card(page, "Records/s", &Dec("records_per_s", s.records_per_s).to_string(), "over the whole job", "");
    w!(page, "</section>\n");
}

/// How many workers committed chunks, and the most chunks one committed.
fn workers(chunks: &[ManifestChunk]) -> (u64, u64) {
    let mut by_worker: BTreeMap<&str, u64> = BTreeMap::new();
    for c in chunks {
        *by_worker.entry(c.commit.worker.as_str()).or_default() += 1;
    }
    (by_worker.len() as u64, by_worker.values().copied().max().unwrap_or(0))
}

fn input_note(s: &Summary) -> String {
    let bytes: u64 = s.inputs.iter().map(|i| i.bytes).sum();
    let inputs = if s.inputs.len() == 1 { "1 input".to_string() } else { format!("{} inputs", s.inputs.len()) };
    format!("{inputs}, {}", size(bytes))
}

fn card(page: &mut String, label: &str, value: &str, note: &str, class: &str) {
    w!(
        page,
        "<div class=\"stat {class}\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div><div class=\"note\">{note}</div></div>\n"
    );
}

/// Where the time went: planning, work, gather, and the whole.
fn phases(page: &mut String, s: &Summary) {
    let phases = phases_in_order(&s.timings.phases);
    let sum: i64 = phases.iter().map(|(_, ms)| (*ms).max(0)).sum();
    w!(page, "<section class=\"card phases\"><h2>Where the time went</h2>\n");
    if sum > 0 {
        w!(page, "<div class=\"stack\">");
        for (i, (_, ms)) in phases.iter().enumerate() {
            let pct = (*ms).max(0) as f64 * 100.0 / sum as f64;
            w!(page, "<span class=\"p{}\" style=\"width:{pct:.2}%\"></span>", i % 3);
        }
        w!(page, "</div>\n");
    }
    w!(page, "<ul class=\"legend\">");
    for (i, (name, ms)) in phases.iter().enumerate() {
        let label = name.trim_end_matches("_ms");
        let value = Value(&format!("timings.phases.{name}"), &thousands((*ms).max(0) as u64)).to_string();
        w!(page, "<li><i class=\"p{}\"></i>{label} <b {value}</b> ms</li>", i % 3);
    }
    let total = Value("timings.duration_ms", &thousands(s.timings.duration_ms.max(0) as u64)).to_string();
    w!(page, "<li class=\"total\">in all <b {total}</b> ms</li></ul></section>\n");
}

/// Phases in the order they happen (plan, work, gather), then any other.
fn phases_in_order(phases: &BTreeMap<String, i64>) -> Vec<(&str, i64)> {
    let rank = |k: &str| ["plan_ms", "work_ms", "gather_ms"].iter().position(|p| *p == k).unwrap_or(3);
    let mut all: Vec<(&str, i64)> = phases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    all.sort_by_key(|(k, _)| rank(k));
    all
}

/// The time axis shared by the charts: from the job's start to the last commit.
struct Axis {
    start_ms: i64,
    span_ms: i64,
    plan_ms: i64,
}

impl Axis {
    fn of(s: &Summary, chunks: &[ManifestChunk]) -> Axis {
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

/// The smallest of 1, 2 and 5 times a power of ten that is at least `ms`.
fn round_step(ms: i64) -> i64 {
    let mut base = 1;
    loop {
        for m in [1, 2, 5] {
            if base * m >= ms {
                return base * m;
            }
        }
        base *= 10;
    }
}

/// The slowest chunk (the straggler), if any.
fn slowest_chunk(chunks: &[ManifestChunk]) -> Option<&ManifestChunk> {
    chunks.iter().max_by_key(|c| (seconds_ms(c), std::cmp::Reverse(c.chunk.index)))
}

fn seconds_ms(c: &ManifestChunk) -> i64 {
    (c.commit.finished_ms - c.commit.started_ms).max(0)
}

/// One lane per worker (sorted by name; past [`MAX_LANES`] the rest share the last), a bar
/// per chunk from the start of its work to its commit.
fn timeline(page: &mut String, chunks: &[ManifestChunk], axis: &Axis) {
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
fn throughput(page: &mut String, chunks: &[ManifestChunk], axis: &Axis) {
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

fn slowest(page: &mut String, chunks: &[ManifestChunk]) {
    if chunks.is_empty() {
        return;
    }
    let mut by_time: Vec<&ManifestChunk> = chunks.iter().collect();
    by_time.sort_by_key(|c| (std::cmp::Reverse(seconds_ms(c)), c.chunk.index));
    w!(page, "<section class=\"card\"><h2>Slowest chunks</h2>\n<div class=\"scroll\"><table>\n");
    w!(page, "<thead><tr><th>Chunk</th><th>Worker</th><th class=\"n\">Records</th><th class=\"n\">Seconds</th><th class=\"n\">Records/s</th></tr></thead><tbody>\n");
    for c in by_time.into_iter().take(SLOWEST) {
        let ms = seconds_ms(c);
        let rate = if ms > 0 { c.chunk.records as f64 * 1000.0 / ms as f64 } else { 0.0 };
        w!(
            page,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{}</td></tr>\n",
            c.chunk.index,
            Esc(&c.commit.worker),
            thousands(c.chunk.records),
            ms as f64 / 1000.0,
            decimal(rate)
        );
    }
    w!(page, "</tbody></table></div></section>\n");
}

fn rejects(page: &mut String, s: &Summary, digest: &RejectDigest) {
    w!(page, "<section class=\"card\"><h2>Rejects</h2>\n");
    if s.records.rejected == 0 {
        w!(page, "<p class=\"empty\">No record was rejected.</p></section>\n");
        return;
    }
    w!(page, "<div class=\"scroll\"><table>\n<thead><tr><th>Rule</th><th class=\"n\">Rejects</th><th class=\"share\">Share</th></tr></thead><tbody>\n");
    for (rule, n) in &s.rejects_by_rule {
        let pct = *n as f64 * 100.0 / s.records.rejected as f64;
        w!(
            page,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"share\"><span class=\"meter\"><span style=\"width:{pct:.1}%\"></span></span></td></tr>\n",
            Esc(rule),
            Num(&format!("rejects_by_rule.{rule}"), *n)
        );
    }
    w!(page, "</tbody></table></div>\n");
    for ((rule, field), group) in &digest.by_field {
        reject_group(page, rule, field.as_deref(), group);
    }
    let untold = digest.not_itemised + digest.unreadable;
    if untold > 0 {
        w!(page, "<p class=\"note\">{} more rejects are counted above but not itemised here.</p>\n", thousands(untold));
    }
    w!(page, "</section>\n");
}

fn reject_group(page: &mut String, rule: &str, field: Option<&str>, group: &FieldRejects) {
    w!(page, "<div class=\"group\"><h3><code>{}</code>", Esc(rule));
    if let Some(f) = field {
        w!(page, " <span class=\"on\">on</span> <code>{}</code>", Esc(f));
    }
    let plural = if group.count == 1 { "" } else { "s" };
    w!(page, " <span class=\"count\">{} reject{plural}</span></h3>\n<ul class=\"examples\">\n", thousands(group.count));
    for e in &group.examples {
        w!(
            page,
            "<li><div class=\"where\">{} line {}</div><div class=\"msg\">{}</div><pre class=\"raw\">{}</pre></li>\n",
            Esc(&e.input),
            thousands(e.line),
            Esc(&e.message),
            Esc(&e.raw)
        );
    }
    w!(page, "</ul></div>\n");
}

fn api_calls(page: &mut String, s: &Summary, costs: &BTreeMap<String, f64>, prices: &str) {
    w!(page, "<section class=\"card\"><h2>API calls</h2>\n");
    if s.api_calls.is_empty() {
        w!(page, "<p class=\"empty\">No cloud API calls: the job ran on the embedded engine.</p></section>\n");
        return;
    }
    w!(page, "<div class=\"scroll\"><table>\n<thead><tr><th>Operation</th><th class=\"n\">Calls</th><th class=\"n\">Cost</th></tr></thead><tbody>\n");
    for (op, n) in &s.api_calls {
        let cost = costs.get(op).map_or_else(|| "—".to_string(), |c| dollars(*c));
        w!(
            page,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{cost}</td></tr>\n",
            Esc(op),
            Num(&format!("api_calls.{op}"), *n)
        );
    }
    let calls: u64 = s.api_calls.values().sum();
    let total = if costs.is_empty() {
        "—".to_string()
    } else {
        dollars(s.api_calls.keys().filter_map(|op| costs.get(op)).sum())
    };
    w!(page, "</tbody><tfoot><tr><th>Total</th><td class=\"n\">{}</td><td class=\"n\">{total}</td></tr></tfoot></table></div>\n", thousands(calls));
    w!(page, "<p class=\"note\">{} calls per record.", Dec("api_calls_per_record", s.api_calls_per_record));
    if !prices.is_empty() {
        w!(page, " Costs at {}.", Esc(prices));
    }
    w!(page, "</p></section>\n");
}

fn inputs_and_outputs(page: &mut String, s: &Summary) {
    w!(page, "<section class=\"card\"><h2>Inputs</h2>\n<div class=\"scroll\"><table>\n");
    w!(page, "<thead><tr><th>Object</th><th class=\"n\">Bytes</th><th class=\"n\">Records</th></tr></thead><tbody>\n");
    for (i, input) in s.inputs.iter().enumerate() {
        w!(
            page,
            "<tr><td class=\"path\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            Esc(&input.location),
            Num(&format!("inputs.{i}.bytes"), input.bytes),
            Num(&format!("inputs.{i}.records"), input.records)
        );
    }
    w!(page, "</tbody></table></div></section>\n<section class=\"card\"><h2>Outputs</h2>\n<dl class=\"outputs\">\n");
    let o = &s.outputs;
    for (name, at) in
        [("output", &o.output), ("rejects", &o.rejects), ("manifest", &o.manifest), ("summary", &o.summary)]
    {
        w!(page, "<dt>{name}</dt><dd class=\"path\">{}</dd>\n", Esc(at));
    }
    if let Some(table) = &s.sink {
        w!(page, "<dt>sink</dt><dd>table <code>{}</code></dd>\n", Esc(table));
    }
    w!(page, "</dl></section>\n");
}

/// Text escaped for HTML content and attribute values.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// The attribute and content of an element showing the summary's value at a path:
/// `data-summary="PATH">TEXT`, for after an element's name.
struct Value<'a>(&'a str, &'a str);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data-summary=\"{}\">{}", Esc(self.0), Esc(self.1))
    }
}

/// A count from the summary, in a `<span data-summary>`.
struct Num<'a>(&'a str, u64);

impl fmt::Display for Num<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<span {}</span>", Value(self.0, &thousands(self.1)))
    }
}

/// A decimal from the summary, in a `<span data-summary>`.
struct Dec<'a>(&'a str, f64);

impl fmt::Display for Dec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<span {}</span>", Value(self.0, &decimal(self.1)))
    }
}

/// Digits grouped by thousands with `,`, in a number written without them (`-1234.5`).
fn group(number: &str) -> String {
    let (sign, rest) = number.strip_prefix('-').map_or(("", number), |r| ("-", r));
    let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut out = String::from(sign);
    for (i, d) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A decimal to three significant digits (all of its whole part), grouped by thousands.
fn decimal(x: f64) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let places = if x == 0.0 { 0 } else { (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize };
    group(&format!("{x:.places$}"))
}

/// A decimal in a few characters, for an axis: `950`, `12k`, `1.5M`.
fn short(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Bytes in a unit a person reads: `512 B`, `1.2 MB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An RFC 3339 time as a person reads it: `2026-12-02 12:09:49 UTC`.
fn when(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A duration in ms as a person reads it: `850 ms`, `1.25 s`, `50 s`, `4 min 05 s`, `2 h 03 min`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0 => "0 s".to_string(),
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms % 1000 == 0 && ms < 60_000 => format!("{} s", ms / 1000),
        ms if ms < 10_000 => format!("{:.2} s", ms as f64 / 1000.0),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        ms => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The page's style: a system font, cards on a grey ground, one column on a phone.
const STYLE: &str = r#"
:root{--bg:#f4f5f7;--fg:#1b2230;--muted:#5f6878;--card:#fff;--line:#e2e5eb;--accent:#3d6fd9;--bar:#6b93e6;--slow:#e0582a;--ok:#1d7f4a;--okbg:#e3f4ea;--warn:#9a5b00;--warnbg:#fdf0d8;--plan:#eceef3;--planband:#e3e6ee;--lane:#f7f8fa;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
@media (prefers-color-scheme:dark){:root{--bg:#12151a;--fg:#e5e8ee;--muted:#9aa3b3;--card:#1b2028;--line:#2b323d;--bar:#5d86d8;--okbg:#17351f;--ok:#7fd39b;--warnbg:#3a2c12;--warn:#f0b85a;--plan:#232934;--planband:#2a303b;--lane:#1f252e}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:20px 16px 32px}
h1{font-size:1.5rem;line-height:1.25;margin:0;overflow-wrap:anywhere}
h2{font-size:1.05rem;margin:0 0 10px}
h3{font-size:.95rem;margin:16px 0 6px;font-weight:600}
code,pre{font-family:var(--mono);font-size:.85em}
.top{margin-bottom:16px}
.eyebrow{color:var(--muted);font-size:.8rem;letter-spacing:.06em;text-transform:uppercase}
.title{display:flex;flex-wrap:wrap;align-items:center;gap:8px 12px;margin:4px 0}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:.8rem;font-weight:600;background:var(--plan);color:var(--fg)}
.badge.ok{background:var(--okbg);color:var(--ok)}
.badge.warn{background:var(--warnbg);color:var(--warn)}
.when{margin:0;color:var(--muted);font-size:.85rem}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px;margin-bottom:12px}
.stat,.card{background:var(--card);border:1px solid var(--line);border-radius:10px}
.stat{padding:10px 14px}
.stat .label{color:var(--muted);font-size:.8rem}
.stat .value{font-size:1.45rem;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.3}
.stat .note{color:var(--muted);font-size:.78rem;min-height:1.1em}
.stat.warn .value{color:var(--warn)}
.card{padding:14px 16px;margin-bottom:12px;min-width:0}
.note,.empty{color:var(--muted);font-size:.85rem;margin:0 0 10px}
.empty{margin:0}
.stack{display:flex;height:14px;border-radius:7px;overflow:hidden;background:var(--plan)}
.stack span{display:block;min-width:2px}
.p0{background:#9aa9c4}.p1{background:var(--bar)}.p2{background:#52b788}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 18px;padding:0;margin:8px 0 0;font-size:.85rem;color:var(--muted)}
.legend .total{margin-left:auto}
.legend b{color:var(--fg);font-weight:600;font-variant-numeric:tabular-nums}
.legend i,.key{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.key{margin-left:6px}.key.bar{background:var(--bar)}.key.slow{background:var(--slow)}.key.plan{background:var(--planband)}
.chart{display:flex;gap:8px;align-items:flex-start}
.names{flex:0 0 auto;max-width:34%;font-size:.78rem;color:var(--muted)}
.names div{height:var(--lane-h);line-height:var(--lane-h);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.yaxis{flex:0 0 auto;display:flex;flex-direction:column;justify-content:space-between;font-size:.75rem;color:var(--muted);text-align:right;min-width:2.2em}
.plot{flex:1 1 auto;min-width:0}
.plot svg{display:block;width:100%}
.axis{position:relative;height:1.4em;font-size:.72rem;color:var(--muted);margin-top:2px}
.axis span{position:absolute;top:0;transform:translateX(-50%);white-space:nowrap}
.axis span:first-child{transform:none}
.axis span:last-child:not(:first-child){transform:translateX(-100%)}
svg .plan{fill:var(--planband)}
svg .lane0{fill:var(--lane)}svg .lane1{fill:transparent}
svg .bar{fill:var(--bar)}svg .bar.slow{fill:var(--slow)}
svg .grid{stroke:var(--line);stroke-dasharray:4 4;vector-effect:non-scaling-stroke}
svg .base{stroke:var(--muted);vector-effect:non-scaling-stroke}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{padding:6px 10px 6px 0;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:.8rem;white-space:nowrap}
tfoot th,tfoot td{border-bottom:0;font-weight:650;color:var(--fg)}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.path,dd.path{font-family:var(--mono);font-size:.8rem;overflow-wrap:anywhere}
.share{width:35%}
.meter{display:block;height:8px;border-radius:4px;background:var(--plan);overflow:hidden;min-width:60px}
.meter span{display:block;height:100%;background:var(--slow)}
.group{border-top:1px solid var(--line);margin-top:12px}
.on{color:var(--muted);font-weight:400}
h3 code{font-size:.9em}
.count{color:var(--muted);font-weight:400;font-size:.85rem;margin-left:4px}
.examples{list-style:none;margin:0;padding:0}
.examples li{margin:0 0 10px;padding-left:10px;border-left:3px solid var(--line)}
.where{font-size:.78rem;color:var(--muted)}
.msg{font-size:.88rem}
pre{margin:0;overflow-x:auto}
.raw{background:var(--lane);border-radius:6px;padding:4px 8px;margin-top:3px;white-space:pre-wrap;overflow-wrap:anywhere}
.code{background:var(--lane);border:1px solid var(--line);border-radius:8px;padding:10px 12px;line-height:1.45}
.outputs{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0;font-size:.88rem}
.outputs dt{color:var(--muted)}.outputs dd{margin:0}
footer{color:var(--muted);font-size:.78rem;text-align:center;margin-top:18px}
@media (max-width:640px){.cards{grid-template-columns:1fr 1fr;gap:8px}}
@media (max-width:480px){main{padding:14px 10px 24px}.stat .value{font-size:1.25rem}.card{padding:12px}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(rule: &str, field: Option<&str>, line: u64, raw: &str) -> Reject {
        Reject {
            input: "file:///data/orders.csv".into(),
            record: line - 1,
            line,
            field: field.map(str::to_string),
            rule: rule.into(),
            message: format!("bad {rule}"),
            raw: raw.into(),
        }
    }

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            Esc(r#"<a href="x">Tom & 'Jerry'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain é").to_string(), "plain é");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(decimal(85_034.7), "85,035");
        assert_eq!(decimal(123.456), "123");
        assert_eq!(decimal(12.345), "12.3");
        assert_eq!(decimal(0.0401), "0.0401");
        assert_eq!(decimal(-1234.6), "-1,235");
        assert_eq!(duration(65_000), "1 min 05 s");
        assert_eq!(duration(50_000), "50 s");
        assert_eq!(duration(1_250), "1.25 s");
        assert_eq!(round_step(230), 500);
    }

    #[test]
    fn the_digest_counts_every_reject_and_keeps_three_shortened_examples_per_field() {
        let long = "x".repeat(1000);
        let mut lines = String::new();
        for i in 0..5 {
            lines += &serde_json::to_string(&reject("max_length", Some("Country"), i + 2, &long)).unwrap();
            lines += "\n";
        }
        lines += &serde_json::to_string(&reject("fields", None, 9, "a,b")).unwrap();
        lines += "\n\nnot json\n";
        let d = RejectDigest::read(lines.as_bytes()).unwrap();
        assert_eq!(d.by_rule, BTreeMap::from([("max_length".into(), 5), ("fields".into(), 1)]));
        assert_eq!(d.total(), 6);
        assert_eq!(d.unreadable, 1);
        let country = &d.by_field[&("max_length".to_string(), Some("Country".to_string()))];
        assert_eq!(country.count, 5);
        assert_eq!(country.examples.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(country.examples[0].raw.chars().count(), RAW_CHARS + 1, "cut, with an ellipsis");
        assert_eq!(country.examples[0].input, "orders.csv");
        assert_eq!(d.by_field[&("fields".to_string(), None)].count, 1);
    }

    #[test]
    fn fields_past_the_limit_are_counted_but_not_itemised() {
        let mut d = RejectDigest::default();
        for i in 0..MAX_FIELDS as u64 + 10 {
            d.add(reject("schema.required", Some(&format!("f{i}")), 2, "{}"));
        }
        assert_eq!(d.by_field.len(), MAX_FIELDS);
        assert_eq!(d.not_itemised, 10);
        assert_eq!(d.by_rule["schema.required"], MAX_FIELDS as u64 + 10);
    }

    /// A job of `chunks` chunks of 100 records, chunk `i` on worker `i % workers`, taking
    /// 100 ms (chunk 3: 900 ms, the straggler).
    fn job(chunks: u32, workers: u32) -> (Summary, Manifest) {
        use crate::job::{ChunkCounts, InputSummary, Outputs, RecordCounts, Timings};
        let t0 = 1_700_000_000_000;
        let manifest_chunks: Vec<ManifestChunk> = (0..chunks)
            .map(|i| {
                let started_ms = t0 + 50 + i64::from(i / workers) * 100;
                let took = if i == 3 { 900 } else { 100 };
                ManifestChunk {
                    chunk: crate::plan::Chunk {
                        index: i,
                        input: 0,
                        start: 0,
                        end: 1,
                        first_record: 1,
                        records: 100,
                        first_line: 2,
                        resume: None,
                    },
                    commit: crate::ledger::ChunkRecord {
                        index: i,
                        worker: format!("w<{}>", i % workers),
                        counts: Default::default(),
                        output_bytes: 0,
                        rejects_bytes: 0,
                        started_ms,
                        finished_ms: started_ms + took,
                        api_calls: Default::default(),
                        generation: 0,
                        attempt: String::new(),
                    },
                }
            })
            .collect();
        let summary = Summary {
            job_id: "orders-1".into(),
            status: "completed_with_rejects".into(),
            inputs: vec![InputSummary {
                location: "s3://b/in/orders.csv".into(),
                bytes: 1_234_567,
                records: 1000,
                decoding: "range".into(),
                decoded_bytes: 1_234_567,
                windows_bytes: 0,
            }],
            records: RecordCounts { total: u64::from(chunks) * 100, written: 990, rejected: 10, filtered: 0 },
            chunks: ChunkCounts { total: chunks, done: chunks },
            rejects_by_rule: BTreeMap::from([("schema.minimum".into(), 10)]),
            outputs: Outputs {
                output: "s3://b/jobs/orders-1/output.csv".into(),
                rejects: "s3://b/jobs/orders-1/rejects.jsonl".into(),
                manifest: "s3://b/jobs/orders-1/manifest.json".into(),
                summary: "s3://b/jobs/orders-1/summary.json".into(),
            },
            sink: Some("orders".into()),
            sink_keeps: None,
            timings: Timings {
                started_at: "2023-11-14T22:13:20.000Z".into(),
                finished_at: "2023-11-14T22:13:22.000Z".into(),
                duration_ms: 2000,
                phases: BTreeMap::from([("plan_ms".into(), 50), ("work_ms".into(), 1500), ("gather_ms".into(), 450)]),
            },
            records_per_s: 500.0,
            api_calls: BTreeMap::from([("dynamodb.BatchWriteItem".into(), 1234), ("s3.GetObject".into(), 10)]),
            api_calls_per_record: 1.244,
            already_complete: false,
        };
        (
            summary,
            Manifest {
                job_id: "orders-1".into(),
                inputs: vec!["s3://b/in/orders.csv".into()],
                chunks: manifest_chunks,
            },
        )
    }

    fn page(summary: &Summary, manifest: &Manifest, rejects: &RejectDigest) -> String {
        let costs = BTreeMap::from([("dynamodb.BatchWriteItem".to_string(), 0.0385625)]);
        let definition = "[input]\nformat = \"csv\"\n";
        let prices = "AWS list prices for us-east-1 as of 2026-12-01";
        render(&Report { summary, manifest, definition, rejects, costs: &costs, prices })
    }

    #[test]
    fn the_page_shows_the_summarys_numbers_and_api_calls_with_their_cost() {
        let (summary, manifest) = job(10, 2);
        let mut rejects = RejectDigest::default();
        rejects.add(reject("schema.minimum", Some("qty"), 7, "</pre><script>alert(1)</script>"));
        let html = page(&summary, &manifest, &rejects);
        for shown in [
            r#"data-summary="records.total">1,000<"#,
            r#"data-summary="status">completed with rejects<"#,
            r#"data-summary="rejects_by_rule.schema.minimum">10<"#,
            r#"data-summary="api_calls.dynamodb.BatchWriteItem">1,234<"#,
            r#"data-summary="api_calls_per_record">1.24<"#,
            r#"data-summary="inputs.0.bytes">1,234,567<"#,
            r#"data-summary="timings.duration_ms">2,000<"#,
            "<td class=\"n\">$0.0386</td>",
            "Costs at AWS list prices for us-east-1 as of 2026-12-01.",
            "<td class=\"n\">—</td>",
            "<tfoot><tr><th>Total</th><td class=\"n\">1,244</td><td class=\"n\">$0.0386</td>",
            "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
            "w&lt;1&gt;",
        ] {
            assert!(html.contains(shown), "{shown} is not on the page");
        }
        assert!(!html.contains("<script"), "no script, and no markup from the data");
        assert_eq!(html.matches("class=\"bar slow\"").count(), 1, "one straggler");
        assert!(html.contains("The slowest: chunk 3 on w&lt;1&gt;, 900 ms"));
    }

    #[test]
    fn workers_past_the_lanes_share_the_last_one() {
        let (summary, manifest) = job(40, 30);
        let html = page(&summary, &manifest, &RejectDigest::default());
        let names = html.split("<div class=\"names\">").nth(1).unwrap().split("</div></div>").next().unwrap();
        assert_eq!(names.matches("<div title=").count(), MAX_LANES);
        assert!(names.contains(&format!("{} more workers", 30 - (MAX_LANES - 1))));
    }

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

    #[test]
    fn secret_addresses_are_left_out_of_the_definition() {
        let text = r#"
[sink]
type = "none"
publish = "https://hooks.example.com/services/T0/B0/publish-secret"

[[notify]]
to = "https://u:notify-password@hooks.example.com/services/T0/B0/notify-secret?token=t"
"#;
        let config = crate::config::JobConfig::from_toml(text, "job.toml").unwrap();
        let definition = config.resolve(std::path::Path::new(".")).unwrap();
        let shown = definition_toml(&definition);
        for secret in ["publish-secret", "notify-password", "notify-secret", "token"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
    }
}
