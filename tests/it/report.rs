//! The job report (`jobs/<id>/report.html`) opened in a real headless Chromium: it renders
//! without errors, fetches nothing, fits a phone's width, and every number on it is the
//! summary's. Screenshots are kept in `target/test-artefacts/`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Bad values planted in the orders example, so that the report has rejects of several rules
/// and fields, one full of markup: (file line, field, value); no field: the line loses its
/// last field.
const PLANTED: &[(usize, Option<usize>, &str)] = &[
    (3, Some(1), r#""<script>alert('x')</script> & ""Co"" is a country name far too long for its column""#),
    (50, Some(5), "soon"),
    (120, Some(5), "13/45/15"),
    (130, Some(5), "2/30/15"),
    (140, Some(5), "someday"),
    (500, Some(7), "yesterday"),
    (900, Some(4), "URGENT!"),
    (1500, None, ""),
    (2000, Some(0), "999999999"),
    (2500, Some(0), ""),
];

/// The orders example with the planted bad values, written into `dir`.
fn orders_with_rejects(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(orders_dir().join("orders.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (at, field, value) in PLANTED {
        let mut fields: Vec<&str> = lines[at - 1].split(',').collect();
        match field {
            Some(i) => fields[*i] = value,
            None => drop(fields.pop()),
        }
        lines[at - 1] = fields.join(",");
    }
    let path = dir.join("orders.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The part of the page about the rejects of `rule` on `field`.
fn reject_group<'a>(dom: &'a str, rule: &str, field: &str) -> &'a str {
    let heading = format!("<code>{rule}</code> <span class=\"on\">on</span> <code>{field}</code>");
    let from = dom.find(&heading).unwrap_or_else(|| panic!("no rejects of {rule} on {field} on the page"));
    let group = &dom[from..];
    &group[..group.find("</ul>").unwrap()]
}

/// A phone's screen and a desktop browser's window, in CSS pixels.
const PHONE: (u32, u32) = (390, 1600);
const DESKTOP: (u32, u32) = (1280, 1800);

/// A page showing `report` in a frame the size of `screen`, and noting in its DOM (in
/// `data-layout`) the report's layout width, its width without a scroll bar and its content's
/// width. Headless Chromium lays a window out at least 500 px wide whatever `--window-size`
/// says (and crops the screenshot), but lays a frame out at the frame's width, media queries
/// included, as a phone's browser would.
fn phone_frame(dir: &Path, report: &Path, (w, h): (u32, u32)) -> String {
    let page = dir.join("phone.html");
    let measure = "const d=this.contentDocument.documentElement;\
                   document.body.dataset.layout=[this.contentWindow.innerWidth,d.clientWidth,d.scrollWidth].join(' ')";
    let html = format!(
        "<!DOCTYPE html><html><body style=\"margin:0\"><iframe src=\"file://{}\" \
         style=\"border:0;display:block;width:{w}px;height:{h}px\" onload=\"{measure}\"></iframe></body></html>",
        report.display()
    );
    std::fs::write(&page, html).unwrap();
    format!("file://{}", page.display())
}

/// The Chromium to use: `SLUICEBOX_CHROMIUM`, else `chromium` on the path. The test fails
/// without one: the report's check is part of the suite.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICEBOX_CHROMIUM") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "Chromium is needed to check the job report: install it (apt-get install chromium; scripts/test does) \
             or point SLUICEBOX_CHROMIUM at it"
        )
    })
}

/// Run headless Chromium on `args`, in a profile of its own; its stdout and stderr.
fn run_chromium(args: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start Chromium ({}): {e}; install it (apt-get install chromium)", chromium().display())
        });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Chromium did not finish within 180 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (std::fs::read_to_string(out.path()).unwrap(), std::fs::read_to_string(err.path()).unwrap());
    assert!(status.success(), "Chromium failed ({status}): {stderr}");
    (stdout, stderr)
}

/// Every `data-summary` element of a serialised DOM: (path, text).
fn summary_values(dom: &str) -> Vec<(String, String)> {
    const ATTR: &str = "data-summary=\"";
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(ATTR) {
        rest = &rest[at + ATTR.len()..];
        let (path, after) = rest.split_once('"').unwrap();
        let text = &after[after.find('>').unwrap() + 1..];
        let text = &text[..text.find('<').unwrap()];
        found.push((unescape(path), unescape(text)));
    }
    found
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// The value at a path of keys joined by `.` (a key may hold dots: the longest that is a key
/// wins; array items by number).
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    match v {
        Value::Object(map) => {
            (1..=path.len()).rev().find_map(|n| map.get(&path[..n].join(".")).and_then(|child| at(child, &path[n..])))
        }
        Value::Array(items) => at(items.get(path[0].parse::<usize>().ok()?)?, &path[1..]),
        _ => None,
    }
}

/// Whether `text` on the page shows `value`: a number to the precision shown (thousands
/// grouped with `,`), a string with `_` as spaces.
fn shows(text: &str, value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            let digits = text.replace(',', "");
            let Ok(shown) = digits.parse::<f64>() else { return false };
            let places = digits.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
            let want = n.as_f64().unwrap();
            let grouped_right =
                n.is_f64() || text == sluicebox::backends::cost::thousands(n.as_u64().unwrap_or(u64::MAX));
            grouped_right && (shown - want).abs() <= 0.5 * 10f64.powi(-places) + want.abs() * 1e-12
        }
        Value::String(s) => text == s.replace('_', " "),
        _ => false,
    }
}

/// Width and height of a PNG, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_in_a_browser_with_the_summarys_numbers_and_fetches_nothing() {
    let data = tempfile::tempdir().unwrap();
    let input = orders_with_rejects(data.path());
    let s = run(data.path(), &[input], &orders_job(), &orders_dir()).await.unwrap();
    assert_eq!(
        s.records.rejected,
        PLANTED.len() as u64,
        "every planted bad record is a reject: {:?}",
        s.rejects_by_rule
    );
    assert_eq!(s.status, "completed_with_rejects");
    let summary: Value = serde_json::from_str(&job_file(data.path(), &s.job_id, "summary.json")).unwrap();
    let report = data.path().join("bucket/jobs").join(&s.job_id).join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    std::fs::write(artefacts().join("report.html"), &html).unwrap();
    let url = format!("file://{}", report.display());

    // It renders, with no console message (an error, a blocked or failed load).
    let (dom, log) =
        run_chromium(&["--enable-logging=stderr".into(), "--v=0".into(), "--dump-dom".into(), url.clone()]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged to the console: {console:#?}");
    assert!(dom.len() > 5000 && dom.contains("</main>"), "a nearly empty DOM: {dom}");

    // Every number on the page is the summary's, and the key ones are there.
    let values = summary_values(&dom);
    for (path, text) in &values {
        let want = at(&summary, &path.split('.').collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("the page shows {path:?} = {text:?}, which summary.json does not have"));
        assert!(shows(text, want), "the page shows {path} = {text:?}; summary.json has {want}");
    }
    let shown: Vec<&str> = values.iter().map(|(p, _)| p.as_str()).collect();
    let mut required: Vec<String> = [
        "job_id",
        "status",
        "records.total",
        "records.written",
        "records.rejected",
        "records.filtered",
        "chunks.total",
        "chunks.done",
        "timings.duration_ms",
        "records_per_s",
        "inputs.0.records",
    ]
    .map(String::from)
    .into();
    required.extend(s.rejects_by_rule.keys().map(|r| format!("rejects_by_rule.{r}")));
    required.extend(s.api_calls.keys().map(|op| format!("api_calls.{op}")));
    for path in &required {
        assert!(shown.contains(&path.as_str()), "the page does not show {path}; it shows {shown:?}");
    }

    // Self-contained: no script, nothing remote; the planted markup shows as text.
    for page in [&html, &dom] {
        let lower = page.to_lowercase();
        for remote in
            ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "url(http", "url(//", "@import", "<script", "<link"]
        {
            assert!(!lower.contains(remote), "the report refers to something remote or a script ({remote})");
        }
    }
    assert!(
        dom.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; \"\"Co\"\""),
        "the planted record shows escaped"
    );
    for (rule, field, count) in [("max_length", "Country", 1), ("type", "Ship Date", 1), ("lookup", "uuid", 1)] {
        let group = reject_group(&dom, rule, field);
        assert!(group.contains(&format!(">{count} reject<")), "{rule} on {field}: {group}");
        assert_eq!(group.matches("<li>").count(), count, "{rule} on {field}: {group}");
    }
    let order_dates = reject_group(&dom, "type", "Order Date");
    assert!(order_dates.contains(">4 rejects<"), "{order_dates}");
    assert_eq!(order_dates.matches("<li>").count(), 3, "three examples of four: {order_dates}");
    assert!(order_dates.contains("orders.csv line 50<"), "examples name the input and line: {order_dates}");

    // On a phone the page fits the screen's width (tables scroll inside their cards).
    let phone = phone_frame(data.path(), &report, PHONE);
    let (framed, _) = run_chromium(&["--allow-file-access-from-files".into(), "--dump-dom".into(), phone.clone()]);
    let layout = framed.split("data-layout=\"").nth(1).and_then(|r| r.split('"').next()).expect("the frame loaded");
    let [inner, client, scroll]: [u32; 3] =
        layout.split(' ').map(|n| n.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
    assert_eq!(inner, PHONE.0, "the report is laid out at a phone's width");
    assert!(scroll <= client, "the page is {scroll} px wide in a {client} px wide phone screen");

    // Screenshots, kept as test artefacts.
    for (name, (w, h), page) in [("report-phone.png", PHONE, phone), ("report-desktop.png", DESKTOP, url)] {
        let png = artefacts().join(name);
        let _ = std::fs::remove_file(&png);
        run_chromium(&[format!("--screenshot={}", png.display()), format!("--window-size={w},{h}"), page]);
        assert_eq!(png_size(&png), (w, h), "{name}");
    }
}

#[test]
fn the_page_check_finds_dotted_keys_and_refuses_a_wrong_number() {
    let summary = serde_json::json!({
        "records": {"total": 10000},
        "api_calls": {"dynamodb.BatchWriteItem": 1234},
        "inputs": [{"bytes": 717406}],
        "records_per_s": 17637.42,
        "status": "completed_with_rejects",
    });
    let value = |path: &str| at(&summary, &path.split('.').collect::<Vec<_>>()).cloned();
    assert_eq!(value("api_calls.dynamodb.BatchWriteItem"), Some(serde_json::json!(1234)));
    assert_eq!(value("inputs.0.bytes"), Some(serde_json::json!(717406)));
    assert_eq!(value("records.written"), None);
    assert!(shows("10,000", &summary["records"]["total"]));
    assert!(!shows("10000", &summary["records"]["total"]), "thousands are grouped");
    assert!(!shows("10,001", &summary["records"]["total"]));
    assert!(shows("17,637", &summary["records_per_s"]));
    assert!(!shows("17,639", &summary["records_per_s"]));
    assert!(shows("completed with rejects", &summary["status"]));
    assert!(!shows("succeeded", &summary["status"]));
}
