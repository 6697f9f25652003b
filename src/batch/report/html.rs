//! The page: [`render`] writes the report as one self-contained HTML page, a section at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::backends::cost::{dollars, thousands};
use crate::batch::job::{ManifestChunk, Summary};

use super::chart::{seconds_ms, throughput, timeline, Axis};
use super::text::{decimal, duration, size, w, when, Dec, Esc, Num, Value};
use super::{FieldRejects, RejectDigest, Report};

/// Chunks listed as the slowest.
const SLOWEST: usize = 5;
/// The page's style: a system font, cards on a grey ground, one column on a phone.
const STYLE: &str = include_str!("report.css");

/// Render the report as one HTML page.
pub fn render(report: &Report) -> String {
    let s = report.summary;
    let mut page = String::with_capacity(32 << 10);
    w!(page, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    w!(page, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    w!(page, "<title>{} · sluicebox job report</title>\n<style>\n{STYLE}</style>\n</head>\n", Esc(&s.job_id));
    w!(page, "<body>\n<main>\n");
    header(&mut page, s);
    judged(&mut page, s);
    counts(&mut page, s, &report.manifest.chunks);
    phases(&mut page, s);
    let axis = Axis::of(s, &report.manifest.chunks);
    timeline(&mut page, &report.manifest.chunks, &axis);
    throughput(&mut page, &report.manifest.chunks, &axis);
    slowest(&mut page, &report.manifest.chunks);
    rejects(&mut page, s, report.rejects);
    api_calls(&mut page, s, report.costs, report.prices);
    sink_writes(&mut page, s);
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

/// The `[rejects]` thresholds the job was judged by and which one stopped it, and where a
/// redrive's records came from.
fn judged(page: &mut String, s: &Summary) {
    if s.thresholds.is_none() && s.stopped_by.is_none() && s.redriven_from.is_none() && s.warnings.is_empty() {
        return;
    }
    w!(page, "<section class=\"card\"><h2>Thresholds and lineage</h2>\n<dl class=\"outputs\">\n");
    if let Some(t) = &s.thresholds {
        w!(page, "<dt>thresholds</dt><dd>{}</dd>\n", Esc(&t.describe()));
    }
    match &s.stopped_by {
        Some(stop) => {
            w!(page, "<dt>stopped by</dt><dd>[rejects] {}</dd>\n", Esc(&stop.threshold));
            w!(page, "<dt>why</dt><dd>{}</dd>\n", Esc(&stop.to_string()));
            w!(page, "<dt>sink</dt><dd>{}</dd>\n", Esc(&stop.sink));
        }
        None if s.thresholds.is_some() => w!(page, "<dt>stopped by</dt><dd>none: no threshold was passed</dd>\n"),
        None => {}
    }
    if let Some(from) = &s.redriven_from {
        w!(
            page,
            "<dt>redrive of</dt><dd>job <code>{}</code>: this job took its rejected records again</dd>\n",
            Esc(from)
        );
    }
    for warning in &s.warnings {
        w!(page, "<dt>warning</dt><dd>{}</dd>\n", Esc(warning));
    }
    w!(page, "</dl></section>\n");
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

/// What the sink's writes cost: requests, items, write units, throttling (the loader's figures).
fn sink_writes(page: &mut String, s: &Summary) {
    let Some(f) = &s.sink_figures else { return };
    let table = s.sink.as_deref().map(|t| format!(" into <code>{}</code>", Esc(t))).unwrap_or_default();
    w!(page, "<section class=\"card\"><h2>Sink writes{table}</h2>\n<div class=\"scroll\"><table><tbody>\n");
    let row = |page: &mut String, label: &str, value: String| {
        w!(page, "<tr><td>{label}</td><td class=\"n\">{value}</td></tr>\n");
    };
    row(page, "Write requests", Num("sink_figures.requests", f.requests).to_string());
    row(page, "Items written", Num("sink_figures.items_written", f.items_written).to_string());
    let units = match f.write_units {
        Some(u) => Dec("sink_figures.write_units", u).to_string(),
        None => "— (the table counts no capacity units)".to_string(),
    };
    row(page, "Write units consumed", units);
    row(page, "Throttled requests", Num("sink_figures.throttled_requests", f.throttled_requests).to_string());
    row(page, "Items sent again", Num("sink_figures.retried_items", f.retried_items).to_string());
    w!(page, "</tbody></table></div>\n");
    if let (Some(units), true) = (f.write_units, f.items_written > 0) {
        w!(page, "<p class=\"note\">{} write units per item written.</p>", decimal(units / f.items_written as f64));
    }
    w!(page, "</section>\n");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::job::Manifest;
    use crate::batch::report::chart::MAX_LANES;
    use crate::batch::report::tests::{job, reject};

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
            r#"data-summary="sink_figures.write_units">1,010<"#,
            r#"data-summary="sink_figures.throttled_requests">7<"#,
            r#"data-summary="sink_figures.retried_items">20<"#,
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
}
